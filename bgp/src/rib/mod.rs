//! The routing information bases: Adj-RIB-In per peer, the Loc-RIB with best-path selection,
//! Adj-RIB-Out per peer (RFC 4271 section 3.2), plus graceful-restart stale marking
//! (RFC 4724 section 4.2).
//!
//! Owns every route the speaker knows and every route it has told a peer about. It is pure and
//! synchronous: no sockets, timers, channels or clocks other than stamping a path's age. It
//! must never send anything itself; callers feed it decoded updates and session events, and
//! turn the [`BestChange`]s and [`OutChange`]s it returns into kernel routes and UPDATEs.
//!
//! Layout of the state, chosen so that applying an UPDATE is one hash lookup per prefix and a
//! route costs as little memory as we can manage (a node may carry every pod route of a large
//! cluster; the lab target is less memory than BIRD):
//! - `table`: prefix -> candidate paths that passed import, best first (the Loc-RIB and the
//!   accepted part of every Adj-RIB-In, stored once), one map per family with the prefix
//!   packed into an integer key; a stored path (`Route`) is 16 bytes: the attributes, an index
//!   into the peer table, its age in seconds and the stale flag;
//! - the peer table (`origins`, `peers`): what a path needs from its peer (address, AS, router
//!   id, iBGP) once per peer; public [`Path`]s are built from both on the way out;
//! - per peer `rejected`: prefixes that failed import (kept so operators can see what was
//!   filtered and why a route is missing); the accepted part of an Adj-RIB-In is found by
//!   scanning the Loc-RIB for the peer's index, which only rare operations do;
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
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

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

/// Index of a path's origin in the RIB's peer table. [`LOCAL`] is this speaker.
type PeerIdx = u32;

/// The peer-table index of locally originated paths.
const LOCAL: PeerIdx = 0;

/// What the decision process and [`Path`] need to know about where a path came from, kept
/// once per peer instead of once per path.
#[derive(Debug, Clone, Copy)]
struct Origin {
    source: PathSource,
    asn: Asn,
    router_id: RouterId,
    ibgp: bool,
}

impl Origin {
    fn local(cfg: &RibConfig) -> Origin {
        Origin {
            source: PathSource::Local,
            asn: cfg.local_asn,
            router_id: cfg.router_id,
            ibgp: false,
        }
    }

    fn peer(cfg: &RibConfig, info: &PeerInfo) -> Origin {
        Origin {
            source: PathSource::Peer(info.address),
            asn: info.asn,
            router_id: info.router_id,
            ibgp: info.asn == cfg.local_asn,
        }
    }
}

/// When a path arrived (whole seconds since the RIB was created) and whether it is stale, in
/// one word: 2^31 seconds is 68 years of uptime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp(u32);

impl Stamp {
    fn fresh(epoch: Instant, now: Instant) -> Stamp {
        let secs = now
            .duration_since(epoch)
            .as_secs()
            .min(u64::from(u32::MAX >> 1));
        Stamp((secs as u32) << 1)
    }

    fn stale(self) -> bool {
        self.0 & 1 == 1
    }

    fn set_stale(&mut self) {
        self.0 |= 1;
    }

    fn at(self, epoch: Instant) -> Instant {
        epoch + Duration::from_secs(u64::from(self.0 >> 1))
    }
}

/// A path as the RIB stores it: 16 bytes. The peer-dependent parts of [`Path`] live in the
/// peer table (`Rib::origins`), and a [`Path`] is built from both when someone asks.
#[derive(Debug, Clone)]
struct Route {
    attrs: Arc<PathAttrs>,
    peer: PeerIdx,
    stamp: Stamp,
}

/// Read-only context to turn [`Route`]s into [`Path`]s and to compare them.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    origins: &'a [Origin],
    epoch: Instant,
}

impl<'a> Ctx<'a> {
    fn origin(&self, peer: PeerIdx) -> &'a Origin {
        // Indices are handed out by the RIB together with their origin and never dangle while
        // a route holds them (see `Rib::free`).
        &self.origins[peer as usize]
    }

    fn path(&self, r: &Route) -> Path {
        let o = self.origin(r.peer);
        Path {
            source: o.source,
            attrs: Arc::clone(&r.attrs),
            stale: r.stamp.stale(),
            peer_asn: o.asn,
            peer_router_id: o.router_id,
            ibgp: o.ibgp,
            age: r.stamp.at(self.epoch),
        }
    }

    /// Moves the best of `routes` to the front.
    fn reselect(&self, routes: &mut [Route]) {
        if routes.len() > 1 {
            let best = decision::best_index(routes.len(), |i| View {
                route: &routes[i],
                origin: self.origin(routes[i].peer),
            });
            routes.swap(0, best);
        }
    }
}

/// A stored route with its origin, as the decision process sees it.
struct View<'a> {
    route: &'a Route,
    origin: &'a Origin,
}

impl decision::Candidate for View<'_> {
    fn attrs(&self) -> &PathAttrs {
        &self.route.attrs
    }
    fn source(&self) -> PathSource {
        self.origin.source
    }
    fn ibgp(&self) -> bool {
        self.origin.ibgp
    }
    fn peer_router_id(&self) -> RouterId {
        self.origin.router_id
    }
}

fn same_attrs(a: &Arc<PathAttrs>, b: &Arc<PathAttrs>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// Candidate paths for one prefix; never empty, best first.
///
/// Most prefixes have exactly one path (a pod route from the node that hosts it), so that case
/// is stored inline; the rare multi-path case is boxed so that a map slot stays 16 bytes.
#[derive(Debug)]
enum Dest {
    One(Route),
    /// Always at least two paths. Boxed on purpose: a thin pointer keeps `Dest` at 16 bytes
    /// in every slot, and the second allocation is only paid by the rare multi-path prefix.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Route>>),
}

impl Dest {
    fn routes(&self) -> &[Route] {
        match self {
            Dest::One(r) => std::slice::from_ref(r),
            Dest::Many(v) => v,
        }
    }

    fn routes_mut(&mut self) -> &mut [Route] {
        match self {
            Dest::One(r) => std::slice::from_mut(r),
            Dest::Many(v) => v,
        }
    }

    fn best(&self) -> &Route {
        &self.routes()[0]
    }

    fn position(&self, peer: PeerIdx) -> Option<usize> {
        self.routes().iter().position(|r| r.peer == peer)
    }

    fn push(&mut self, route: Route) {
        match self {
            Dest::Many(v) => v.push(route),
            Dest::One(_) => {
                if let Dest::One(first) = std::mem::replace(self, Dest::Many(Box::default())) {
                    *self = Dest::Many(Box::new(vec![first, route]));
                }
            }
        }
    }

    /// Removes the route at `pos` of a `Many` (at least two routes), reselects and records a
    /// change when the best one went; collapses to `One` when one route is left.
    fn remove_from_many(
        &mut self,
        pos: usize,
        prefix: IpNet,
        ctx: &Ctx,
        changes: &mut Vec<BestChange>,
    ) -> Option<Route> {
        let Dest::Many(v) = self else {
            return None;
        };
        let removed = v.swap_remove(pos);
        if v.len() == 1 {
            if let Some(last) = v.pop() {
                *self = Dest::One(last);
            }
        }
        if pos == 0 {
            ctx.reselect(self.routes_mut());
            changes.push(BestChange {
                prefix,
                best: Some(ctx.path(self.best())),
            });
        }
        Some(removed)
    }
}

/// A prefix packed into a map key: the Loc-RIB is two maps, one per family, so that an IPv4
/// slot is an 8-byte key plus a 16-byte [`Dest`] instead of an 18-byte `IpNet` padded to 24.
trait PrefixKey: std::hash::Hash + Eq + Copy {
    fn net(self) -> IpNet;
    /// Which of a [`Sharded`] map's shards holds this key.
    fn shard(&self) -> usize;
}

/// IPv4 prefixes as `address << 8 | length`.
type V4Key = u64;

fn v4_key(n: &Ipv4Net) -> V4Key {
    u64::from(u32::from(n.addr())) << 8 | u64::from(n.prefix_len())
}

impl PrefixKey for V4Key {
    fn net(self) -> IpNet {
        // Keys are only made by `v4_key` from a valid prefix: the length is at most 32.
        IpNet::V4(Ipv4Net::new_assert(
            Ipv4Addr::from((self >> 8) as u32),
            self as u8,
        ))
    }

    fn shard(&self) -> usize {
        hash::shard_of(*self, SHARDS)
    }
}

impl PrefixKey for Ipv6Net {
    fn net(self) -> IpNet {
        IpNet::V6(self)
    }

    fn shard(&self) -> usize {
        let a = u128::from(self.addr());
        let folded = (a as u64) ^ ((a >> 64) as u64) ^ u64::from(self.prefix_len());
        hash::shard_of(folded, SHARDS)
    }
}

/// Shards per family map (a power of two).
const SHARDS: usize = 64;

/// A prefix map split into [`SHARDS`] maps. A hash map grows by allocating a table twice the
/// size and moving everything over, so a single map of 500k routes briefly needs one and a
/// half times its final size; shards grow one at a time, so the peak is the final size plus
/// one shard's growth.
#[derive(Debug)]
struct Sharded<K> {
    shards: Box<[FastMap<K, Dest>]>,
}

impl<K: PrefixKey> Default for Sharded<K> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| FastMap::default()).collect(),
        }
    }
}

impl<K: PrefixKey> Sharded<K> {
    fn get(&self, key: &K) -> Option<&Dest> {
        self.shards[key.shard()].get(key)
    }

    fn shard_mut(&mut self, key: &K) -> &mut FastMap<K, Dest> {
        &mut self.shards[key.shard()]
    }

    fn iter(&self) -> impl Iterator<Item = (IpNet, &Dest)> {
        self.shards
            .iter()
            .flat_map(|m| m.iter().map(|(k, d)| (k.net(), d)))
    }

    fn len(&self) -> usize {
        self.shards.iter().map(FastMap::len).sum()
    }

    /// [`scan`] over every shard.
    fn scan(
        &mut self,
        peer: PeerIdx,
        ctx: &Ctx,
        changes: &mut Vec<BestChange>,
        remove: &mut impl FnMut(IpNet, &mut Route) -> bool,
    ) -> usize {
        self.shards
            .iter_mut()
            .map(|m| scan(m, peer, ctx, changes, remove))
            .sum()
    }
}

/// Inserts `route` as a candidate for `prefix`, replacing the one from the same peer; records
/// a change when the best path changes. Returns the replaced route.
fn install<K: PrefixKey>(
    map: &mut FastMap<K, Dest>,
    key: K,
    prefix: IpNet,
    route: Route,
    ctx: &Ctx,
    changes: &mut Vec<BestChange>,
) -> Option<Route> {
    match map.entry(key) {
        Entry::Vacant(v) => {
            changes.push(BestChange {
                prefix,
                best: Some(ctx.path(&route)),
            });
            v.insert(Dest::One(route));
            None
        }
        Entry::Occupied(o) => {
            let d = o.into_mut();
            if let Dest::One(only) = d {
                if only.peer == route.peer {
                    // The common refresh or implicit withdraw: no decision to run.
                    let changed = !same_attrs(&only.attrs, &route.attrs);
                    let old = std::mem::replace(only, route);
                    if changed {
                        changes.push(BestChange {
                            prefix,
                            best: Some(ctx.path(only)),
                        });
                    }
                    return Some(old);
                }
            }
            // Holding the old best's attributes (one refcount) keeps the comparison below
            // honest even when they are replaced.
            let old_peer = d.best().peer;
            let old_attrs = Arc::clone(&d.best().attrs);
            let replaced = match d.routes_mut().iter_mut().find(|r| r.peer == route.peer) {
                Some(slot) => Some(std::mem::replace(slot, route)),
                None => {
                    d.push(route);
                    None
                }
            };
            ctx.reselect(d.routes_mut());
            let best = d.best();
            if best.peer != old_peer || !same_attrs(&best.attrs, &old_attrs) {
                changes.push(BestChange {
                    prefix,
                    best: Some(ctx.path(best)),
                });
            }
            replaced
        }
    }
}

/// Removes the candidate from `peer` for `prefix`; records a change when the best changes.
fn uninstall<K: PrefixKey>(
    map: &mut FastMap<K, Dest>,
    key: K,
    prefix: IpNet,
    peer: PeerIdx,
    ctx: &Ctx,
    changes: &mut Vec<BestChange>,
) -> Option<Route> {
    let Entry::Occupied(mut o) = map.entry(key) else {
        return None;
    };
    let pos = o.get().position(peer)?;
    if let Dest::One(_) = o.get() {
        changes.push(BestChange { prefix, best: None });
        return match o.remove() {
            Dest::One(r) => Some(r),
            Dest::Many(_) => None,
        };
    }
    o.get_mut().remove_from_many(pos, prefix, ctx, changes)
}

/// Visits `peer`'s route for every prefix of `map`; `remove` says whether it goes (it may also
/// modify the route). Returns how many went.
fn scan<K: PrefixKey>(
    map: &mut FastMap<K, Dest>,
    peer: PeerIdx,
    ctx: &Ctx,
    changes: &mut Vec<BestChange>,
    remove: &mut impl FnMut(IpNet, &mut Route) -> bool,
) -> usize {
    let mut removed = 0;
    map.retain(|key, d| {
        let Some(pos) = d.position(peer) else {
            return true;
        };
        let prefix = key.net();
        if !remove(prefix, &mut d.routes_mut()[pos]) {
            return true;
        }
        removed += 1;
        if let Dest::One(_) = d {
            changes.push(BestChange { prefix, best: None });
            return false;
        }
        d.remove_from_many(pos, prefix, ctx, changes);
        true
    });
    shrink_if_sparse(map);
    removed
}

/// Gives memory back after a mass removal (a peer going down): a map never shrinks by itself.
fn shrink_if_sparse<K: PrefixKey, V>(map: &mut FastMap<K, V>) {
    if map.len() < map.capacity() / 4 {
        map.shrink_to_fit();
    }
}

/// The Loc-RIB: candidate paths per prefix, one sharded map per family.
#[derive(Debug, Default)]
struct Table {
    v4: Sharded<V4Key>,
    v6: Sharded<Ipv6Net>,
}

impl Table {
    fn get(&self, prefix: &IpNet) -> Option<&Dest> {
        match prefix {
            IpNet::V4(n) => self.v4.get(&v4_key(n)),
            IpNet::V6(n) => self.v6.get(n),
        }
    }

    fn install(
        &mut self,
        prefix: IpNet,
        route: Route,
        ctx: &Ctx,
        changes: &mut Vec<BestChange>,
    ) -> Option<Route> {
        match prefix {
            IpNet::V4(n) => {
                let key = v4_key(&n);
                install(self.v4.shard_mut(&key), key, prefix, route, ctx, changes)
            }
            IpNet::V6(n) => install(self.v6.shard_mut(&n), n, prefix, route, ctx, changes),
        }
    }

    fn uninstall(
        &mut self,
        prefix: IpNet,
        peer: PeerIdx,
        ctx: &Ctx,
        changes: &mut Vec<BestChange>,
    ) -> Option<Route> {
        match prefix {
            IpNet::V4(n) => {
                let key = v4_key(&n);
                uninstall(self.v4.shard_mut(&key), key, prefix, peer, ctx, changes)
            }
            IpNet::V6(n) => uninstall(self.v6.shard_mut(&n), n, prefix, peer, ctx, changes),
        }
    }

    /// [`scan`] over the maps of `families`.
    fn scan(
        &mut self,
        families: &[Family],
        peer: PeerIdx,
        ctx: &Ctx,
        changes: &mut Vec<BestChange>,
        mut remove: impl FnMut(IpNet, &mut Route) -> bool,
    ) -> [usize; 2] {
        let mut removed = [0; 2];
        if families.contains(&Family::Ipv4Unicast) {
            removed[0] = self.v4.scan(peer, ctx, changes, &mut remove);
        }
        if families.contains(&Family::Ipv6Unicast) {
            removed[1] = self.v6.scan(peer, ctx, changes, &mut remove);
        }
        removed
    }

    fn iter(&self) -> impl Iterator<Item = (IpNet, &Dest)> {
        self.v4.iter().chain(self.v6.iter())
    }

    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

/// Index of a family in per-family counters.
fn fam_idx(prefix: &IpNet) -> usize {
    match prefix {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => 1,
    }
}

#[derive(Debug)]
struct PeerState {
    info: PeerInfo,
    up: bool,
    /// Announced prefixes that failed import, kept for inspection and for re-evaluation when
    /// the policy changes. Accepted ones are not listed anywhere but the Loc-RIB: they are its
    /// candidates from this peer, and keeping a second entry for each would double the memory.
    rejected: FastMap<IpNet, Route>,
    /// Accepted prefixes per family (IPv4, IPv6): the peer's candidates in the Loc-RIB.
    accepted: [usize; 2],
    /// Families marked stale by the last `peer_down` and not swept since.
    stale_families: Vec<Family>,
    adj_out: FastMap<IpNet, Arc<PathAttrs>>,
}

impl PeerState {
    /// Families this peer has candidates in the Loc-RIB for, among `families`.
    fn accepted_in(&self, families: &[Family]) -> Vec<Family> {
        families
            .iter()
            .copied()
            .filter(|f| match f {
                Family::Ipv4Unicast => self.accepted[0] > 0,
                Family::Ipv6Unicast => self.accepted[1] > 0,
            })
            .collect()
    }

    fn forget_accepted(&mut self, removed: [usize; 2]) {
        self.accepted[0] -= removed[0];
        self.accepted[1] -= removed[1];
    }
}

/// Adj-RIBs-In, Loc-RIB and Adj-RIBs-Out of one speaker.
#[derive(Debug)]
pub struct Rib {
    cfg: RibConfig,
    /// Peer address -> index into `origins` and `peers`.
    by_addr: FastMap<IpAddr, PeerIdx>,
    /// Per index: where its paths come from. Entry [`LOCAL`] is this speaker.
    origins: Vec<Origin>,
    /// Per index: the peer's state; `None` for [`LOCAL`] and for removed peers.
    peers: Vec<Option<PeerState>>,
    /// Indices of removed peers, reusable: `remove_peer` took all their routes with them.
    free: Vec<PeerIdx>,
    table: Table,
    interner: Interner,
    /// Origin of the route timestamps.
    epoch: Instant,
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
            origins: vec![Origin::local(&cfg)],
            peers: vec![None],
            cfg,
            by_addr: FastMap::default(),
            free: Vec::new(),
            table: Table::default(),
            interner: Interner::default(),
            epoch: Instant::now(),
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        }
    }

    fn index(&self, peer: IpAddr) -> Option<PeerIdx> {
        self.by_addr.get(&peer).copied()
    }

    fn state(&self, peer: IpAddr) -> Option<&PeerState> {
        self.peers.get(self.index(peer)? as usize)?.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &RibConfig {
        &self.cfg
    }

    /// What we know about a configured peer.
    pub fn peer(&self, peer: IpAddr) -> Option<&PeerInfo> {
        self.state(peer).map(|p| &p.info)
    }

    /// A session with `peer` reached Established (or its settings changed): register it and
    /// accept updates from it. Routes kept stale from an earlier session stay until refreshed
    /// or swept. A changed import policy here applies to routes received from now on; use
    /// [`Rib::set_import_policy`] to re-evaluate what the peer already sent. A changed
    /// route-reflector-client flag or local address affects export from the next
    /// [`Rib::advertise`]; call [`Rib::full_table`] to resynchronise the peer at once. A
    /// changed AS or router id applies to the routes kept from before too (they are the same
    /// peer's) from their next comparison on.
    pub fn peer_up(&mut self, peer: PeerInfo) {
        let origin = Origin::peer(&self.cfg, &peer);
        let address = peer.address;
        if let Some(idx) = self.index(peer.address) {
            self.origins[idx as usize] = origin;
            if let Some(st) = self.peers[idx as usize].as_mut() {
                st.info = peer;
                st.up = true;
            }
            return;
        }
        let state = PeerState {
            up: true,
            rejected: FastMap::default(),
            accepted: [0; 2],
            stale_families: Vec::new(),
            adj_out: FastMap::default(),
            info: peer,
        };
        let idx = match self.free.pop() {
            Some(idx) => {
                self.origins[idx as usize] = origin;
                self.peers[idx as usize] = Some(state);
                idx
            }
            None => {
                self.origins.push(origin);
                self.peers.push(Some(state));
                // Fewer than 2^32 peers: each one is a TCP session.
                (self.peers.len() - 1) as PeerIdx
            }
        };
        self.by_addr.insert(address, idx);
    }

    /// Changes our AS. Meant for a RIB without peers (the speaker removes them first): paths
    /// already learned were judged iBGP or eBGP against the old AS.
    pub fn set_local_asn(&mut self, asn: Asn) {
        self.cfg.local_asn = asn;
        self.origins[LOCAL as usize] = Origin::local(&self.cfg);
    }

    /// Replaces `peer`'s import policy and re-evaluates everything it has announced, without
    /// asking it to resend (the Adj-RIB-In keeps rejected routes for exactly this: soft
    /// reconfiguration inbound, RFC 4271 section 9.1.1 re-run on a policy change). Use this
    /// rather than [`Rib::peer_up`] when only the policy changed.
    pub fn set_import_policy(&mut self, peer: IpAddr, policy: ImportPolicy) -> Vec<BestChange> {
        let mut changes = Vec::new();
        let Some(idx) = self.index(peer) else {
            return changes;
        };
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        let Some(ps) = self.peers[idx as usize].as_mut() else {
            return changes;
        };
        ps.info.import = policy;
        // Accepted routes the new policy denies move to the rejected ones. The attribute
        // checks passed on receipt and do not depend on the policy.
        let mut demoted = Vec::new();
        let families = ps.accepted_in(&Family::ALL);
        let import = &ps.info.import;
        let removed = self
            .table
            .scan(&families, idx, &ctx, &mut changes, |prefix, route| {
                let deny = !import.accepts(&prefix);
                if deny {
                    demoted.push((prefix, route.clone()));
                }
                deny
            });
        ps.accepted[0] -= removed[0];
        ps.accepted[1] -= removed[1];
        // Rejected routes that now pass go to the Loc-RIB.
        let cfg = &self.cfg;
        let table = &mut self.table;
        let accepted = &mut ps.accepted;
        ps.rejected.retain(|prefix, route| {
            let ok = import_acceptable(cfg, &route.attrs) && import.accepts(prefix);
            if ok {
                table.install(*prefix, route.clone(), &ctx, &mut changes);
                accepted[fam_idx(prefix)] += 1;
            }
            !ok
        });
        ps.rejected.extend(demoted);
        changes
    }

    /// The session with `peer` went down. Routes of the families in `keep_stale` are kept and
    /// marked stale (graceful restart helper, RFC 4724 section 4.2); all others are removed.
    /// The Adj-RIB-Out is forgotten: the next session starts from [`Rib::full_table`].
    pub fn peer_down(&mut self, peer: IpAddr, keep_stale: &[Family]) -> Vec<BestChange> {
        let mut changes = Vec::new();
        let Some(idx) = self.index(peer) else {
            return changes;
        };
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        let Some(ps) = self.peers[idx as usize].as_mut() else {
            return changes;
        };
        ps.up = false;
        ps.adj_out = FastMap::default();
        let families = ps.accepted_in(&Family::ALL);
        let removed = self
            .table
            .scan(&families, idx, &ctx, &mut changes, |prefix, route| {
                let keep = keep_stale.contains(&Family::of(&prefix));
                if keep {
                    route.stamp.set_stale();
                }
                !keep
            });
        ps.forget_accepted(removed);
        ps.rejected.retain(|prefix, route| {
            let keep = keep_stale.contains(&Family::of(prefix));
            route.stamp.set_stale();
            keep
        });
        ps.stale_families = keep_stale.to_vec();
        self.interner.purge();
        changes
    }

    /// `peer` was deconfigured: drop its routes and its Adj-RIB-Out.
    pub fn remove_peer(&mut self, peer: IpAddr) -> Vec<BestChange> {
        let mut changes = Vec::new();
        let Some(idx) = self.by_addr.remove(&peer) else {
            return changes;
        };
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        if let Some(ps) = self.peers[idx as usize].take() {
            let families = ps.accepted_in(&Family::ALL);
            self.table
                .scan(&families, idx, &ctx, &mut changes, |_, _| true);
        }
        // No route refers to the index any more: it may serve the next new peer.
        self.free.push(idx);
        self.interner.purge();
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
        let idx = self.index(peer);
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        let found = idx.and_then(|i| Some((i, self.peers[i as usize].as_mut()?)));
        let (idx, ps) = match found {
            Some((idx, ps)) if ps.up => (idx, ps),
            _ => {
                out.rejected = update.announced.iter().map(|a| a.prefixes.len()).sum();
                tracing::warn!(%peer, "update from a peer that is not up ignored");
                return out;
            }
        };
        let table = &mut self.table;

        // Most announced prefixes are new or change their best path; size the result once.
        let announced: usize = update.announced.iter().map(|a| a.prefixes.len()).sum();
        out.changes.reserve(announced + update.withdrawn.len());

        for prefix in update.withdrawn {
            let prefix = prefix.trunc();
            // A prefix is either rejected or a candidate, never both.
            if !ps.rejected.is_empty() && ps.rejected.remove(&prefix).is_some() {
                out.withdrawn += 1;
            } else if table
                .uninstall(prefix, idx, &ctx, &mut out.changes)
                .is_some()
            {
                out.withdrawn += 1;
                ps.accepted[fam_idx(&prefix)] -= 1;
            }
        }

        let stamp = Stamp::fresh(self.epoch, Instant::now());
        for ann in update.announced {
            let acceptable = import_acceptable(&self.cfg, &ann.attrs);
            let attrs = self.interner.intern(ann.attrs);
            for prefix in ann.prefixes {
                let prefix = prefix.trunc();
                let route = Route {
                    attrs: Arc::clone(&attrs),
                    peer: idx,
                    stamp,
                };
                if acceptable && ps.info.import.accepts(&prefix) {
                    out.accepted += 1;
                    if !ps.rejected.is_empty() {
                        ps.rejected.remove(&prefix);
                    }
                    if table
                        .install(prefix, route, &ctx, &mut out.changes)
                        .is_none()
                    {
                        ps.accepted[fam_idx(&prefix)] += 1;
                    }
                } else {
                    out.rejected += 1;
                    ps.rejected.insert(prefix, route);
                    if table
                        .uninstall(prefix, idx, &ctx, &mut out.changes)
                        .is_some()
                    {
                        ps.accepted[fam_idx(&prefix)] -= 1;
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
        let Some(idx) = self.index(peer) else {
            return changes;
        };
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        let Some(ps) = self.peers[idx as usize].as_mut() else {
            return changes;
        };
        // Only families marked at peer_down can hold stale routes; this keeps the common
        // End-of-RIB after a fresh session from scanning the whole Loc-RIB.
        let families: Vec<Family> = match family {
            Some(f) if ps.stale_families.contains(&f) => vec![f],
            Some(_) => return changes,
            None => std::mem::take(&mut ps.stale_families),
        };
        if families.is_empty() {
            return changes;
        }
        ps.stale_families.retain(|f| !families.contains(f));
        let scanned = ps.accepted_in(&families);
        let removed = self
            .table
            .scan(&scanned, idx, &ctx, &mut changes, |_, route| {
                route.stamp.stale()
            });
        ps.forget_accepted(removed);
        ps.rejected.retain(|prefix, route| {
            !(families.contains(&Family::of(prefix)) && route.stamp.stale())
        });
        self.interner.purge();
        changes
    }

    /// Originates `prefix` from this speaker. A `None` (or unspecified) next hop means "us":
    /// it becomes each session's local address on export.
    pub fn originate(&mut self, prefix: IpNet, attrs: PathAttrs) -> Vec<BestChange> {
        let route = Route {
            attrs: self.interner.intern(attrs),
            peer: LOCAL,
            stamp: Stamp::fresh(self.epoch, Instant::now()),
        };
        let mut changes = Vec::new();
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        self.table
            .install(prefix.trunc(), route, &ctx, &mut changes);
        changes
    }

    /// Stops originating `prefix`.
    pub fn withdraw_local(&mut self, prefix: IpNet) -> Vec<BestChange> {
        let mut changes = Vec::new();
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        self.table
            .uninstall(prefix.trunc(), LOCAL, &ctx, &mut changes);
        changes
    }

    /// The best path for `prefix`.
    pub fn best(&self, prefix: &IpNet) -> Option<Path> {
        let ctx = self.ctx();
        self.table.get(prefix).map(|d| ctx.path(d.best()))
    }

    /// Every prefix in the Loc-RIB with its best path (in no particular order).
    pub fn loc_rib(&self) -> impl Iterator<Item = (IpNet, Path)> + '_ {
        let ctx = self.ctx();
        self.table.iter().map(move |(p, d)| (p, ctx.path(d.best())))
    }

    /// All accepted candidate paths for `prefix`, best first (empty when unknown).
    pub fn paths(&self, prefix: &IpNet) -> Vec<Path> {
        let ctx = self.ctx();
        self.table.get(prefix).map_or_else(Vec::new, |d| {
            d.routes().iter().map(|r| ctx.path(r)).collect()
        })
    }

    /// `peer`'s Adj-RIB-In: every prefix it announced, with the path and whether import
    /// accepted it. The accepted part is found by a scan of the Loc-RIB.
    pub fn adj_rib_in(&self, peer: IpAddr) -> impl Iterator<Item = (IpNet, Path, bool)> + '_ {
        let ctx = self.ctx();
        let found = self
            .index(peer)
            .and_then(|idx| Some((idx, self.peers.get(idx as usize)?.as_ref()?)));
        found.into_iter().flat_map(move |(idx, ps)| {
            let accepted = self.table.iter().filter_map(move |(prefix, d)| {
                let r = d.routes().iter().find(|r| r.peer == idx)?;
                Some((prefix, ctx.path(r), true))
            });
            let rejected = ps
                .rejected
                .iter()
                .map(move |(p, r)| (*p, ctx.path(r), false));
            accepted.chain(rejected)
        })
    }

    /// `peer`'s Adj-RIB-Out: what we last advertised to it.
    pub fn adj_rib_out(&self, peer: IpAddr) -> impl Iterator<Item = (&IpNet, &Arc<PathAttrs>)> {
        self.state(peer)
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
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        let mut exporter = Exporter::new(
            &self.cfg,
            &self.peers,
            &self.by_addr,
            ctx,
            &mut self.interner,
            peer,
        );
        for ch in changes {
            let new = ch
                .best
                .as_ref()
                .and_then(|best| exporter.export(best, Family::of(&ch.prefix)));
            match new {
                Some(attrs) => match adj_out.entry(ch.prefix) {
                    Entry::Occupied(mut o) => {
                        if !same_attrs(o.get(), &attrs) {
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
        let ctx = Ctx {
            origins: &self.origins,
            epoch: self.epoch,
        };
        let mut exporter = Exporter::new(
            &self.cfg,
            &self.peers,
            &self.by_addr,
            ctx,
            &mut self.interner,
            peer,
        );
        for (prefix, dest) in self.table.iter() {
            if let Some(attrs) = exporter.export_route(dest.best(), Family::of(&prefix)) {
                adj_out.insert(prefix, Arc::clone(&attrs));
                out.push(OutChange {
                    prefix,
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
        let idx = self.index(peer)?;
        let ps = self.peers[idx as usize].as_mut().filter(|ps| ps.up)?;
        Some(std::mem::take(&mut ps.adj_out))
    }

    fn put_adj_out(&mut self, peer: IpAddr, adj_out: FastMap<IpNet, Arc<PathAttrs>>) {
        let Some(idx) = self.index(peer) else {
            return;
        };
        if let Some(ps) = self.peers[idx as usize].as_mut() {
            ps.adj_out = adj_out;
        }
    }

    /// Route counters for `peer` (zero when unknown).
    pub fn counts(&self, peer: IpAddr) -> PeerCounts {
        self.state(peer)
            .map(|ps| {
                let accepted = ps.accepted[0] + ps.accepted[1];
                PeerCounts {
                    received: accepted + ps.rejected.len(),
                    accepted,
                    advertised: ps.adj_out.len(),
                }
            })
            .unwrap_or_default()
    }

    /// Number of prefixes in the Loc-RIB.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the Loc-RIB is empty.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
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
    rib_peers: &'a [Option<PeerState>],
    by_addr: &'a FastMap<IpAddr, PeerIdx>,
    ctx: Ctx<'a>,
    interner: &'a mut Interner,
    target: Option<&'a PeerInfo>,
    memo: FastMap<(*const PathAttrs, PathSource, Family), Option<Arc<PathAttrs>>>,
}

impl<'a> Exporter<'a> {
    /// Borrows the parts of `rib` it needs, leaving the Loc-RIB free to iterate.
    fn new(
        cfg: &'a RibConfig,
        rib_peers: &'a [Option<PeerState>],
        by_addr: &'a FastMap<IpAddr, PeerIdx>,
        ctx: Ctx<'a>,
        interner: &'a mut Interner,
        peer: IpAddr,
    ) -> Self {
        let target = by_addr
            .get(&peer)
            .and_then(|&i| rib_peers.get(i as usize)?.as_ref())
            .map(|p| &p.info);
        Exporter {
            cfg,
            rib_peers,
            by_addr,
            ctx,
            interner,
            target,
            memo: FastMap::default(),
        }
    }

    /// Export of a stored route: the public [`Path`] is only built when the memo misses.
    fn export_route(&mut self, route: &Route, family: Family) -> Option<Arc<PathAttrs>> {
        let source = self.ctx.origin(route.peer).source;
        let key = (Arc::as_ptr(&route.attrs), source, family);
        if let Some(hit) = self.memo.get(&key) {
            return hit.clone();
        }
        let path = self.ctx.path(route);
        self.export(&path, family)
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
            PathSource::Peer(a) => self
                .by_addr
                .get(&a)
                .and_then(|&i| self.rib_peers.get(i as usize)?.as_ref())
                .map(|p| &p.info),
            PathSource::Local => None,
        };
        let result = export::export(self.cfg, target, source, path, family)
            .map(|attrs| self.interner.intern(attrs));
        self.memo.insert(key, result.clone());
        result
    }
}
