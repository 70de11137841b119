//! The decision process (RFC 4271 section 9.1.2.2, RFC 4456 section 9): which of a prefix's
//! candidate paths is best.
//!
//! Pure: it reads candidates and returns an index. It never filters for loops or policy (import
//! did that) and never looks at the `stale` flag: a stale path stays fully eligible until swept
//! (RFC 4724 section 4.2 keeps forwarding on it).
//!
//! The steps are *eliminations* over the whole candidate set, not a pairwise comparison: MED is
//! only compared within one neighbouring AS, which makes a pairwise order non-transitive (the
//! classic MED oscillation), so sorting with a comparator would depend on input order.

use std::net::{IpAddr, Ipv4Addr};

use crate::types::{Asn, RouterId};
use crate::wire::attribute::{AsPath, AsSegment, PathAttrs};

use super::{Path, PathSource};

/// What the decision process reads of a candidate. The RIB stores paths compactly and looks up
/// the peer-dependent parts in its peer table; the public [`Path`] carries them itself.
pub(crate) trait Candidate {
    /// The path's attributes.
    fn attrs(&self) -> &PathAttrs;
    /// Where it came from.
    fn source(&self) -> PathSource;
    /// Learned over iBGP.
    fn ibgp(&self) -> bool;
    /// BGP identifier of the peer it was learned from (ours for local paths).
    fn peer_router_id(&self) -> RouterId;
}

impl Candidate for Path {
    fn attrs(&self) -> &PathAttrs {
        &self.attrs
    }
    fn source(&self) -> PathSource {
        self.source
    }
    fn ibgp(&self) -> bool {
        self.ibgp
    }
    fn peer_router_id(&self) -> RouterId {
        self.peer_router_id
    }
}

/// LOCAL_PREF assumed when a path has none (RFC 4271 section 5.1.5 leaves it to us; 100 is what
/// every implementation uses).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// The degree of preference of a path: its LOCAL_PREF for local and iBGP-learned paths, the
/// default for eBGP-learned ones (a LOCAL_PREF received over eBGP is ignored, RFC 4271 5.1.5).
pub fn local_pref(path: &Path) -> u32 {
    degree_of_preference(path)
}

fn degree_of_preference(c: &impl Candidate) -> u32 {
    if c.ibgp() || c.source() == PathSource::Local {
        c.attrs().local_pref.unwrap_or(DEFAULT_LOCAL_PREF)
    } else {
        DEFAULT_LOCAL_PREF
    }
}

/// AS_PATH length for route selection: an AS_SET counts as one AS (RFC 4271 9.1.2.2 a),
/// confederation segments count zero (RFC 5065 section 5.3).
pub fn as_path_len(path: &AsPath) -> usize {
    path.segments
        .iter()
        .map(|s| match s {
            AsSegment::Sequence(asns) => asns.len(),
            AsSegment::Set(_) => 1,
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => 0,
        })
        .sum()
}

/// The neighbouring AS a path was learned from, for MED comparison: the leftmost AS of the
/// path outside confederation segments. `None` means "our own AS" (empty path: locally
/// originated or originated inside the AS), and such paths compare MED with each other.
pub fn neighbour_as(path: &AsPath) -> Option<Asn> {
    path.segments.iter().find_map(|s| match s {
        AsSegment::Sequence(asns) => asns.first().copied(),
        // A leading AS_SET has no defined neighbour; treat it as unique to itself by the first
        // member so aggregates from different places are not compared by accident.
        AsSegment::Set(asns) => asns.first().copied(),
        AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => None,
    })
}

/// The "router id" tie-breaker: ORIGINATOR_ID when a reflector set one (RFC 4456 section 9),
/// otherwise the BGP identifier of the peer we learned the path from.
pub fn tie_break_router_id(path: &impl Candidate) -> Ipv4Addr {
    path.attrs()
        .originator_id
        .unwrap_or(path.peer_router_id().0)
}

fn peer_address(path: &impl Candidate) -> IpAddr {
    match path.source() {
        PathSource::Peer(a) => a,
        // Local paths won at step (b) long before this; any fixed value will do.
        PathSource::Local => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

/// Keeps only the candidates whose key is minimal.
fn keep_min<C: Candidate, K: Ord>(
    path: &impl Fn(usize) -> C,
    cands: &mut Vec<usize>,
    key: impl Fn(&C) -> K,
) {
    if cands.len() < 2 {
        return;
    }
    let Some(min) = cands.iter().map(|&i| key(&path(i))).min() else {
        return;
    };
    cands.retain(|&i| key(&path(i)) == min);
}

/// Index of the best of `len` candidates (at least one), `path(i)` giving candidate `i`.
pub(crate) fn best_index<C: Candidate>(len: usize, path: impl Fn(usize) -> C) -> usize {
    if len < 2 {
        return 0;
    }
    let paths = &path;
    let mut c: Vec<usize> = (0..len).collect();
    // (a, RFC 4271 9.1.1) highest degree of preference.
    keep_min(paths, &mut c, |p| {
        std::cmp::Reverse(degree_of_preference(p))
    });
    // Locally originated beats learned (the "weight"/"local route" step most speakers place
    // here; RFC 4271 leaves it to local policy).
    keep_min(paths, &mut c, |p| p.source() != PathSource::Local);
    // (a) shortest AS_PATH.
    keep_min(paths, &mut c, |p| as_path_len(&p.attrs().as_path));
    // (b) lowest ORIGIN.
    keep_min(paths, &mut c, |p| p.attrs().origin);
    // (c) MED, only among paths from the same neighbouring AS; a missing MED is 0.
    if c.len() > 1 {
        let med = |i: usize| paths(i).attrs().med.unwrap_or(0);
        let nas = |i: usize| neighbour_as(&paths(i).attrs().as_path);
        let snapshot = c.clone();
        c.retain(|&i| {
            !snapshot
                .iter()
                .any(|&j| j != i && nas(j) == nas(i) && med(j) < med(i))
        });
    }
    // (d) eBGP-learned over iBGP-learned.
    keep_min(paths, &mut c, |p| p.ibgp());
    // (e) is IGP cost to the next hop: we run no IGP, so every next hop costs the same.
    // (f) lowest BGP identifier / ORIGINATOR_ID.
    keep_min(paths, &mut c, |p| tie_break_router_id(p));
    // RFC 4456 section 9: shorter CLUSTER_LIST.
    keep_min(paths, &mut c, |p| p.attrs().cluster_list.len());
    // (g) lowest peer address.
    keep_min(paths, &mut c, |p| peer_address(p));
    c[0]
}
