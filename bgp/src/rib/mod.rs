//! The routing information bases: Adj-RIB-In per peer, the Loc-RIB with best-path selection,
//! Adj-RIB-Out per peer (RFC 4271 section 3.2), plus graceful-restart stale marking
//! (RFC 4724 section 4.2).
//!
//! Owns every route the speaker knows and every route it has told a peer about. It is pure and
//! synchronous: no sockets, timers, channels or clocks other than stamping a path's age. It
//! must never send anything itself; callers feed it decoded updates and session events, and
//! turn the [`BestChange`]s and [`OutChange`]s it returns into kernel routes and UPDATEs.
//!
//! Layout of the state, chosen so that applying an UPDATE is two hash lookups per prefix:
//! - `dests`: prefix -> candidate paths that passed import, best first (the Loc-RIB and the
//!   accepted part of every Adj-RIB-In, stored once);
//! - per peer `adj_in`: prefix -> accepted (the path lives in `dests`) or rejected (kept here
//!   so operators can see what was filtered and why a route is missing);
//! - per peer `adj_out`: prefix -> the attributes last advertised;
//! - attributes are interned (see `intern`), so equal attribute sets are one allocation.

mod decision;
mod export;
mod hash;
mod intern;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;

use crate::policy::ImportPolicy;
use crate::types::{Asn, Family, RouterId};
use crate::wire::attribute::{AsSegment, PathAttrs};
use crate::wire::message::RouteUpdate;

pub use decision::{as_path_len, local_pref, DEFAULT_LOCAL_PREF};
pub use export::{NO_ADVERTISE, NO_EXPORT, NO_EXPORT_SUBCONFED};
use hash::FastMap;
use intern::Interner;

/// Speaker-wide settings the RIB needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibConfig {
    /// Our AS number.
    pub local_asn: Asn,
    /// Our BGP identifier.
    pub router_id: RouterId,
    /// Route-reflection cluster id (RFC 4456 section 7); `None` means our router id.
    pub cluster_id: Option<Ipv4Addr>,
}

impl RibConfig {
    /// The cluster id in force.
    pub fn cluster_id(&self) -> Ipv4Addr {
        self.cluster_id.unwrap_or(self.router_id.0)
    }
}

/// What the RIB needs to know about one configured peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address (its identity in the RIB).
    pub address: IpAddr,
    /// The peer's AS; equal to ours means iBGP.
    pub asn: Asn,
    /// The peer's BGP identifier.
    pub router_id: RouterId,
    /// Our address on this session: the next hop we put on routes when next-hop-self applies.
    pub local_address: Option<IpAddr>,
    /// The peer is a route-reflector client of ours (RFC 4456).
    pub route_reflector_client: bool,
    /// Prefix filter applied to what the peer announces.
    pub import: ImportPolicy,
}

/// Where a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathSource {
    /// Originated by this speaker.
    Local,
    /// Learned from the peer with this address.
    Peer(IpAddr),
}

/// One route to a prefix: attributes plus where it came from.
#[derive(Debug, Clone)]
pub struct Path {
    /// Origin of the path.
    pub source: PathSource,
    /// Attributes as received (or as originated); shared with every path that has equal ones.
    pub attrs: Arc<PathAttrs>,
    /// Kept across a peer's restart and not yet refreshed (RFC 4724 section 4.2).
    pub stale: bool,
    /// The peer's AS (our AS for local paths).
    pub peer_asn: Asn,
    /// The peer's BGP identifier (ours for local paths).
    pub peer_router_id: RouterId,
    /// Learned over iBGP (false for local paths).
    pub ibgp: bool,
    /// When this path was received or originated (for display; not a decision step).
    pub age: Instant,
}

impl Path {
    /// True when both are the same route: same source and equal attributes. Staleness and age
    /// do not count: a refresh of an identical route is not a change.
    pub fn same_route(&self, other: &Path) -> bool {
        self.source == other.source
            && (Arc::ptr_eq(&self.attrs, &other.attrs) || self.attrs == other.attrs)
    }
}

/// A change of the best path for one prefix.
#[derive(Debug, Clone)]
pub struct BestChange {
    /// The prefix.
    pub prefix: IpNet,
    /// The new best path; `None` when the prefix left the Loc-RIB.
    pub best: Option<Path>,
}

/// The result of [`Rib::apply`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOutcome {
    /// Best-path changes, in the order they happened. A prefix touched twice by one UPDATE
    /// (withdrawn and announced) appears twice; consumers apply them in order.
    pub changes: Vec<BestChange>,
    /// Announced prefixes that passed import.
    pub accepted: usize,
    /// Announced prefixes rejected by import policy, loop detection or a missing next hop.
    pub rejected: usize,
    /// Withdrawn prefixes the peer had actually announced before.
    pub withdrawn: usize,
}

/// A change to one peer's Adj-RIB-Out: what to put in the next UPDATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutChange {
    /// The prefix.
    pub prefix: IpNet,
    /// The attributes to announce it with; `None` means withdraw.
    pub attrs: Option<Arc<PathAttrs>>,
}

/// Route counters for one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Prefixes in the Adj-RIB-In (accepted or not).
    pub received: usize,
    /// Prefixes that passed import.
    pub accepted: usize,
    /// Prefixes in the Adj-RIB-Out.
    pub advertised: usize,
}

/// Candidate paths for one prefix; never empty, best first.
///
/// Most prefixes have exactly one path (a pod route from the node that hosts it), so that case
/// is stored inline: no allocation and one cache miss less per prefix.
#[derive(Debug)]
enum Dest {
    One(Path),
    /// Always at least two paths.
    Many(Vec<Path>),
}

impl Dest {
    fn paths(&self) -> &[Path] {
        match self {
            Dest::One(p) => std::slice::from_ref(p),
            Dest::Many(v) => v,
        }
    }

    fn paths_mut(&mut self) -> &mut [Path] {
        match self {
            Dest::One(p) => std::slice::from_mut(p),
            Dest::Many(v) => v,
        }
    }

    fn best(&self) -> &Path {
        &self.paths()[0]
    }

    fn push(&mut self, path: Path) {
        *self = match std::mem::replace(self, Dest::Many(Vec::new())) {
            Dest::One(first) => Dest::Many(vec![first, path]),
            Dest::Many(mut v) => {
                v.push(path);
                Dest::Many(v)
            }
        };
    }

    /// Removes the path at `pos` of a `Many` (moving the last one there), collapsing to `One`.
    fn swap_remove_many(&mut self, pos: usize) -> Option<Path> {
        let Dest::Many(v) = self else {
            return None;
        };
        let removed = v.swap_remove(pos);
        if v.len() == 1 {
            if let Some(last) = v.pop() {
                *self = Dest::One(last);
            }
        }
        Some(removed)
    }
}

/// What the Adj-RIB-In remembers of one prefix.
#[derive(Debug)]
enum InState {
    /// Passed import; the path is in the Loc-RIB candidates.
    Accepted,
    /// Failed import; kept for inspection only. Boxed: rare, and keeps the map small.
    Rejected(Box<Path>),
}

#[derive(Debug)]
struct PeerState {
    info: PeerInfo,
    up: bool,
    adj_in: FastMap<IpNet, InState>,
    accepted: usize,
    /// Families marked stale by the last `peer_down` and not swept since.
    stale_families: Vec<Family>,
    adj_out: FastMap<IpNet, Arc<PathAttrs>>,
}

/// Adj-RIBs-In, Loc-RIB and Adj-RIBs-Out of one speaker.
#[derive(Debug)]
pub struct Rib {
    cfg: RibConfig,
    peers: FastMap<IpAddr, PeerState>,
    dests: FastMap<IpNet, Dest>,
    interner: Interner,
}

/// Inserts `path` as a candidate for `prefix`, replacing the one from the same source; records
/// a change when the best path changes. Returns the replaced path.
fn install(
    dests: &mut FastMap<IpNet, Dest>,
    prefix: IpNet,
    path: Path,
    changes: &mut Vec<BestChange>,
) -> Option<Path> {
    match dests.entry(prefix) {
        Entry::Vacant(v) => {
            changes.push(BestChange {
                prefix,
                best: Some(path.clone()),
            });
            v.insert(Dest::One(path));
            None
        }
        Entry::Occupied(mut o) => {
            let d = o.get_mut();
            // Holding the old best (one refcount) keeps the comparison below honest even when
            // its attributes are replaced.
            let old_best = d.best().clone();
            let replaced = match d.paths_mut().iter_mut().find(|p| p.source == path.source) {
                Some(slot) => Some(std::mem::replace(slot, path)),
                None => {
                    d.push(path);
                    None
                }
            };
            reselect(d.paths_mut());
            if !d.best().same_route(&old_best) {
                changes.push(BestChange {
                    prefix,
                    best: Some(d.best().clone()),
                });
            }
            replaced
        }
    }
}

/// Removes the candidate from `source` for `prefix`; records a change when the best changes.
fn uninstall(
    dests: &mut FastMap<IpNet, Dest>,
    prefix: IpNet,
    source: PathSource,
    changes: &mut Vec<BestChange>,
) -> Option<Path> {
    let Entry::Occupied(mut o) = dests.entry(prefix) else {
        return None;
    };
    let d = o.get_mut();
    let pos = d.paths().iter().position(|p| p.source == source)?;
    if let Dest::One(_) = d {
        changes.push(BestChange { prefix, best: None });
        return match o.remove() {
            Dest::One(p) => Some(p),
            Dest::Many(_) => None,
        };
    }
    let removed = d.swap_remove_many(pos);
    if pos == 0 {
        reselect(d.paths_mut());
        changes.push(BestChange {
            prefix,
            best: Some(d.best().clone()),
        });
    }
    removed
}

fn reselect(paths: &mut [Path]) {
    if paths.len() > 1 {
        let best = decision::best_index(paths);
        paths.swap(0, best);
    }
}

fn loc_path_mut<'a>(
    dests: &'a mut FastMap<IpNet, Dest>,
    prefix: &IpNet,
    source: PathSource,
) -> Option<&'a mut Path> {
    dests
        .get_mut(prefix)?
        .paths_mut()
        .iter_mut()
        .find(|p| p.source == source)
}

/// Import checks that depend only on the attributes, not the prefix: true when acceptable.
fn import_acceptable(cfg: &RibConfig, attrs: &PathAttrs) -> bool {
    // A route without a next hop cannot be forwarded on (the codec only leaves it `None` for
    // our own routes).
    if attrs.next_hop.is_none() {
        return false;
    }
    // RFC 4271 section 9.1.2: our AS in the path is a loop.
    let looped = attrs.as_path.segments.iter().any(|s| match s {
        AsSegment::Sequence(a)
        | AsSegment::Set(a)
        | AsSegment::ConfedSequence(a)
        | AsSegment::ConfedSet(a) => a.contains(&cfg.local_asn),
    });
    if looped {
        return false;
    }
    // RFC 4456 section 8: our own route reflected back, or a reflection loop in our cluster.
    if attrs.originator_id == Some(cfg.router_id.0) {
        return false;
    }
    !attrs.cluster_list.contains(&cfg.cluster_id())
}

impl Rib {
    /// An empty RIB.
    pub fn new(cfg: RibConfig) -> Rib {
        Rib {
            cfg,
            peers: FastMap::default(),
            dests: FastMap::default(),
            interner: Interner::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RibConfig {
        &self.cfg
    }

    /// What we know about a configured peer.
    pub fn peer(&self, peer: IpAddr) -> Option<&PeerInfo> {
        self.peers.get(&peer).map(|p| &p.info)
    }

    /// A session with `peer` reached Established (or its settings changed): register it and
    /// accept updates from it. Routes kept stale from an earlier session stay until refreshed
    /// or swept. A changed import policy here applies to routes received from now on; use
    /// [`Rib::set_import_policy`] to re-evaluate what the peer already sent. A changed
    /// route-reflector-client flag or local address affects export from the next
    /// [`Rib::advertise`]; call [`Rib::full_table`] to resynchronise the peer at once.
    pub fn peer_up(&mut self, peer: PeerInfo) {
        match self.peers.entry(peer.address) {
            Entry::Occupied(mut o) => {
                let st = o.get_mut();
                st.info = peer;
                st.up = true;
            }
            Entry::Vacant(v) => {
                v.insert(PeerState {
                    info: peer,
                    up: true,
                    adj_in: FastMap::default(),
                    accepted: 0,
                    stale_families: Vec::new(),
                    adj_out: FastMap::default(),
                });
            }
        }
    }

    /// Replaces `peer`'s import policy and re-evaluates everything it has announced, without
    /// asking it to resend (the Adj-RIB-In keeps rejected routes for exactly this: soft
    /// reconfiguration inbound, RFC 4271 section 9.1.1 re-run on a policy change). Use this
    /// rather than [`Rib::peer_up`] when only the policy changed.
    pub fn set_import_policy(&mut self, peer: IpAddr, policy: ImportPolicy) -> Vec<BestChange> {
        let mut changes = Vec::new();
        let Some(ps) = self.peers.get_mut(&peer) else {
            return changes;
        };
        ps.info.import = policy;
        let source = PathSource::Peer(peer);
        for (prefix, st) in ps.adj_in.iter_mut() {
            match st {
                InState::Accepted => {
                    // The attribute checks passed on receipt and do not depend on the policy.
                    if !ps.info.import.accepts(prefix) {
                        if let Some(path) =
                            uninstall(&mut self.dests, *prefix, source, &mut changes)
                        {
                            *st = InState::Rejected(Box::new(path));
                            ps.accepted -= 1;
                        }
                    }
                }
                InState::Rejected(path) => {
                    if import_acceptable(&self.cfg, &path.attrs) && ps.info.import.accepts(prefix) {
                        install(&mut self.dests, *prefix, (**path).clone(), &mut changes);
                        *st = InState::Accepted;
                        ps.accepted += 1;
                    }
                }
            }
        }
        changes
    }

    /// The session with `peer` went down. Routes of the families in `keep_stale` are kept and
    /// marked stale (graceful restart helper, RFC 4724 section 4.2); all others are removed.
    /// The Adj-RIB-Out is forgotten: the next session starts from [`Rib::full_table`].
    pub fn peer_down(&mut self, peer: IpAddr, keep_stale: &[Family]) -> Vec<BestChange> {
        let mut changes = Vec::new();
        let Some(ps) = self.peers.get_mut(&peer) else {
            return changes;
        };
        ps.up = false;
        ps.adj_out = FastMap::default();
        let dests = &mut self.dests;
        let accepted = &mut ps.accepted;
        let source = PathSource::Peer(peer);
        ps.adj_in.retain(|prefix, st| {
            let keep = keep_stale.contains(&Family::of(prefix));
            match st {
                InState::Accepted if keep => {
                    if let Some(p) = loc_path_mut(dests, prefix, source) {
                        p.stale = true;
                    }
                }
                InState::Accepted => {
                    uninstall(dests, *prefix, source, &mut changes);
                    *accepted -= 1;
                }
                InState::Rejected(p) => p.stale = true,
            }
            keep
        });
        ps.stale_families = keep_stale.to_vec();
        self.interner.purge();
        changes
    }

    /// `peer` was deconfigured: drop its routes and its Adj-RIB-Out.
    pub fn remove_peer(&mut self, peer: IpAddr) -> Vec<BestChange> {
        let mut changes = Vec::new();
        if let Some(ps) = self.peers.remove(&peer) {
            for (prefix, st) in ps.adj_in {
                if let InState::Accepted = st {
                    uninstall(
                        &mut self.dests,
                        prefix,
                        PathSource::Peer(peer),
                        &mut changes,
                    );
                }
            }
            self.interner.purge();
        }
        changes
    }

    /// Applies one received UPDATE from `peer` to its Adj-RIB-In and the Loc-RIB.
    ///
    /// Withdrawals are processed before announcements. An announcement replaces the peer's
    /// previous path for the prefix (implicit withdraw) and clears its stale flag. Rejected
    /// routes stay in the Adj-RIB-In marked not accepted. An End-of-RIB marker sweeps the
    /// peer's still-stale routes of that family, as [`Rib::end_of_rib`] does. Updates from a
    /// peer that is not up are ignored and counted as rejected.
    pub fn apply(&mut self, peer: IpAddr, update: RouteUpdate) -> ApplyOutcome {
        let mut out = ApplyOutcome::default();
        let ps = match self.peers.get_mut(&peer) {
            Some(ps) if ps.up => ps,
            _ => {
                out.rejected = update.announced.iter().map(|a| a.prefixes.len()).sum();
                tracing::warn!(%peer, "update from a peer that is not up ignored");
                return out;
            }
        };
        let source = PathSource::Peer(peer);
        let dests = &mut self.dests;

        // Most announced prefixes are new or change their best path; size the result once.
        let announced: usize = update.announced.iter().map(|a| a.prefixes.len()).sum();
        out.changes.reserve(announced + update.withdrawn.len());

        for prefix in update.withdrawn {
            let prefix = prefix.trunc();
            match ps.adj_in.remove(&prefix) {
                None => {}
                Some(InState::Accepted) => {
                    out.withdrawn += 1;
                    ps.accepted -= 1;
                    uninstall(dests, prefix, source, &mut out.changes);
                }
                Some(InState::Rejected(_)) => out.withdrawn += 1,
            }
        }

        let now = Instant::now();
        let ibgp = ps.info.asn == self.cfg.local_asn;
        for ann in update.announced {
            let acceptable = import_acceptable(&self.cfg, &ann.attrs);
            let template = Path {
                source,
                attrs: self.interner.intern(ann.attrs),
                stale: false,
                peer_asn: ps.info.asn,
                peer_router_id: ps.info.router_id,
                ibgp,
                age: now,
            };
            for prefix in ann.prefixes {
                let prefix = prefix.trunc();
                let ok = acceptable && ps.info.import.accepts(&prefix);
                if ok {
                    out.accepted += 1;
                    match ps.adj_in.insert(prefix, InState::Accepted) {
                        Some(InState::Accepted) => {}
                        None | Some(InState::Rejected(_)) => ps.accepted += 1,
                    }
                    install(dests, prefix, template.clone(), &mut out.changes);
                } else {
                    out.rejected += 1;
                    let old = ps
                        .adj_in
                        .insert(prefix, InState::Rejected(Box::new(template.clone())));
                    if let Some(InState::Accepted) = old {
                        ps.accepted -= 1;
                        uninstall(dests, prefix, source, &mut out.changes);
                    }
                }
            }
        }

        if let Some(family) = update.end_of_rib {
            let swept = self.sweep(peer, Some(family));
            out.changes.extend(swept);
        }
        out
    }

    /// End-of-RIB from `peer` for `family`: its routes of that family not refreshed since the
    /// restart are gone (RFC 4724 section 4.2).
    pub fn end_of_rib(&mut self, peer: IpAddr, family: Family) -> Vec<BestChange> {
        self.sweep(peer, Some(family))
    }

    /// The restart or stale timer for `peer` expired: drop all its still-stale routes.
    pub fn sweep_stale(&mut self, peer: IpAddr) -> Vec<BestChange> {
        self.sweep(peer, None)
    }

    fn sweep(&mut self, peer: IpAddr, family: Option<Family>) -> Vec<BestChange> {
        let mut changes = Vec::new();
        let Some(ps) = self.peers.get_mut(&peer) else {
            return changes;
        };
        // Only families marked at peer_down can hold stale routes; this keeps the common
        // End-of-RIB after a fresh session from scanning the whole Adj-RIB-In.
        let families: Vec<Family> = match family {
            Some(f) if ps.stale_families.contains(&f) => vec![f],
            Some(_) => return changes,
            None => std::mem::take(&mut ps.stale_families),
        };
        if families.is_empty() {
            return changes;
        }
        ps.stale_families.retain(|f| !families.contains(f));
        let dests = &mut self.dests;
        let accepted = &mut ps.accepted;
        let source = PathSource::Peer(peer);
        ps.adj_in.retain(|prefix, st| {
            if !families.contains(&Family::of(prefix)) {
                return true;
            }
            match st {
                InState::Accepted => {
                    let stale = loc_path_mut(dests, prefix, source).is_some_and(|p| p.stale);
                    if stale {
                        uninstall(dests, *prefix, source, &mut changes);
                        *accepted -= 1;
                    }
                    !stale
                }
                InState::Rejected(p) => !p.stale,
            }
        });
        self.interner.purge();
        changes
    }

    /// Originates `prefix` from this speaker. A `None` (or unspecified) next hop means "us":
    /// it becomes each session's local address on export.
    pub fn originate(&mut self, prefix: IpNet, attrs: PathAttrs) -> Vec<BestChange> {
        let path = Path {
            source: PathSource::Local,
            attrs: self.interner.intern(attrs),
            stale: false,
            peer_asn: self.cfg.local_asn,
            peer_router_id: self.cfg.router_id,
            ibgp: false,
            age: Instant::now(),
        };
        let mut changes = Vec::new();
        install(&mut self.dests, prefix.trunc(), path, &mut changes);
        changes
    }

    /// Stops originating `prefix`.
    pub fn withdraw_local(&mut self, prefix: IpNet) -> Vec<BestChange> {
        let mut changes = Vec::new();
        uninstall(
            &mut self.dests,
            prefix.trunc(),
            PathSource::Local,
            &mut changes,
        );
        changes
    }

    /// The best path for `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<&Path> {
        self.dests.get(prefix).map(Dest::best)
    }

    /// Every prefix in the Loc-RIB with its best path (in no particular order).
    pub fn loc_rib(&self) -> impl Iterator<Item = (&IpNet, &Path)> {
        self.dests.iter().map(|(p, d)| (p, d.best()))
    }

    /// All accepted candidate paths for `prefix`, best first (empty when unknown).
    pub fn paths(&self, prefix: &IpNet) -> &[Path] {
        self.dests.get(prefix).map_or(&[], Dest::paths)
    }

    /// `peer`'s Adj-RIB-In: every prefix it announced, with the path and whether import
    /// accepted it.
    pub fn adj_rib_in(&self, peer: IpAddr) -> impl Iterator<Item = (&IpNet, &Path, bool)> {
        let source = PathSource::Peer(peer);
        self.peers.get(&peer).into_iter().flat_map(move |ps| {
            ps.adj_in.iter().filter_map(move |(prefix, st)| match st {
                InState::Accepted => self
                    .paths(prefix)
                    .iter()
                    .find(|p| p.source == source)
                    .map(|p| (prefix, p, true)),
                InState::Rejected(p) => Some((prefix, &**p, false)),
            })
        })
    }

    /// `peer`'s Adj-RIB-Out: what we last advertised to it.
    pub fn adj_rib_out(&self, peer: IpAddr) -> impl Iterator<Item = (&IpNet, &Arc<PathAttrs>)> {
        self.peers
            .get(&peer)
            .into_iter()
            .flat_map(|ps| ps.adj_out.iter())
    }

    /// Given Loc-RIB `changes`, computes what `peer` must be told and records it in its
    /// Adj-RIB-Out. Only differences are returned: a change that leaves what the peer should
    /// have as it is produces nothing. Nothing is produced for a peer that is not up.
    pub fn advertise(&mut self, peer: IpAddr, changes: &[BestChange]) -> Vec<OutChange> {
        let mut out = Vec::new();
        let Some(mut adj_out) = self.take_adj_out(peer) else {
            return out;
        };
        let mut exporter = Exporter::new(&self.cfg, &self.peers, &mut self.interner, peer);
        for ch in changes {
            let new = ch
                .best
                .as_ref()
                .and_then(|best| exporter.export(best, Family::of(&ch.prefix)));
            match new {
                Some(attrs) => match adj_out.entry(ch.prefix) {
                    Entry::Occupied(mut o) => {
                        if !Arc::ptr_eq(o.get(), &attrs) && **o.get() != *attrs {
                            o.insert(Arc::clone(&attrs));
                            out.push(OutChange {
                                prefix: ch.prefix,
                                attrs: Some(attrs),
                            });
                        }
                    }
                    Entry::Vacant(v) => {
                        v.insert(Arc::clone(&attrs));
                        out.push(OutChange {
                            prefix: ch.prefix,
                            attrs: Some(attrs),
                        });
                    }
                },
                None => {
                    if adj_out.remove(&ch.prefix).is_some() {
                        out.push(OutChange {
                            prefix: ch.prefix,
                            attrs: None,
                        });
                    }
                }
            }
        }
        self.put_adj_out(peer, adj_out);
        out
    }

    /// Everything `peer` should have, for a freshly Established session or a route refresh:
    /// every exportable best path is returned (even if already advertised), and withdrawals
    /// for anything advertised before that should no longer be there. Replaces the Adj-RIB-Out.
    pub fn full_table(&mut self, peer: IpAddr) -> Vec<OutChange> {
        let mut out = Vec::new();
        let Some(old) = self.take_adj_out(peer) else {
            return out;
        };
        let mut adj_out = FastMap::with_capacity_and_hasher(old.len(), Default::default());
        let mut exporter = Exporter::new(&self.cfg, &self.peers, &mut self.interner, peer);
        for (prefix, dest) in &self.dests {
            if let Some(attrs) = exporter.export(dest.best(), Family::of(prefix)) {
                adj_out.insert(*prefix, Arc::clone(&attrs));
                out.push(OutChange {
                    prefix: *prefix,
                    attrs: Some(attrs),
                });
            }
        }
        for prefix in old.into_keys() {
            if !adj_out.contains_key(&prefix) {
                out.push(OutChange {
                    prefix,
                    attrs: None,
                });
            }
        }
        self.put_adj_out(peer, adj_out);
        out
    }

    fn take_adj_out(&mut self, peer: IpAddr) -> Option<FastMap<IpNet, Arc<PathAttrs>>> {
        let ps = self.peers.get_mut(&peer).filter(|ps| ps.up)?;
        Some(std::mem::take(&mut ps.adj_out))
    }

    fn put_adj_out(&mut self, peer: IpAddr, adj_out: FastMap<IpNet, Arc<PathAttrs>>) {
        if let Some(ps) = self.peers.get_mut(&peer) {
            ps.adj_out = adj_out;
        }
    }

    /// Route counters for `peer` (zero when unknown).
    pub fn counts(&self, peer: IpAddr) -> PeerCounts {
        self.peers
            .get(&peer)
            .map(|ps| PeerCounts {
                received: ps.adj_in.len(),
                accepted: ps.accepted,
                advertised: ps.adj_out.len(),
            })
            .unwrap_or_default()
    }

    /// Number of prefixes in the Loc-RIB.
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    /// True when the Loc-RIB is empty.
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// Number of distinct attribute sets currently interned (a memory metric).
    pub fn interned_attributes(&self) -> usize {
        self.interner.len()
    }
}

/// Export towards one peer for the duration of one call, memoising per (source attributes,
/// source, family): a table of a million routes usually has a handful of attribute sets, so
/// the clone-modify-intern work is done a handful of times.
struct Exporter<'a> {
    cfg: &'a RibConfig,
    peers: &'a FastMap<IpAddr, PeerState>,
    interner: &'a mut Interner,
    target: Option<&'a PeerInfo>,
    memo: FastMap<(*const PathAttrs, PathSource, Family), Option<Arc<PathAttrs>>>,
}

impl<'a> Exporter<'a> {
    fn new(
        cfg: &'a RibConfig,
        peers: &'a FastMap<IpAddr, PeerState>,
        interner: &'a mut Interner,
        peer: IpAddr,
    ) -> Self {
        Exporter {
            cfg,
            peers,
            interner,
            target: peers.get(&peer).map(|p| &p.info),
            memo: FastMap::default(),
        }
    }

    fn export(&mut self, path: &Path, family: Family) -> Option<Arc<PathAttrs>> {
        let target = self.target?;
        // The pointer is a valid key for this call: `path` (and so its attributes) outlives
        // the exporter, so no other attribute set can reuse the address meanwhile.
        let key = (Arc::as_ptr(&path.attrs), path.source, family);
        if let Some(hit) = self.memo.get(&key) {
            return hit.clone();
        }
        let source = match path.source {
            PathSource::Peer(a) => self.peers.get(&a).map(|p| &p.info),
            PathSource::Local => None,
        };
        let result = export::export(self.cfg, target, source, path, family)
            .map(|attrs| self.interner.intern(attrs));
        self.memo.insert(key, result.clone());
        result
    }
}
