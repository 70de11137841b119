//! Export: what a Loc-RIB best path looks like when sent to one peer, or whether it is sent
//! at all (RFC 4271 section 9.1.3 and 5.1, RFC 4456 sections 6 and 8, RFC 1997).
//!
//! Pure: given our config, the target peer, the source peer and the path, it returns the
//! attributes to advertise or `None`. It never records anything; the Adj-RIB-Out diff lives in
//! the parent module.
//!
//! Next-hop choices, written down because operators ask:
//! - towards eBGP peers the next hop is always ourselves (`local_address` of the session);
//! - towards iBGP peers, locally originated routes without a next hop get ourselves;
//!   eBGP-learned routes also get ourselves ("next-hop-self"), because underroute runs no IGP,
//!   so the external peer's address is usually not reachable from other nodes (what kube-router
//!   and Calico do too); reflected iBGP routes keep their next hop (RFC 4456 section 10);
//! - if the resulting next hop is not of the prefix's family we use the session's local
//!   address when it is of that family, otherwise the route is not sent to that peer.

use std::net::IpAddr;

use crate::types::{Asn, Family};
use crate::wire::attribute::{AsPath, AsSegment, PathAttrs};

use super::decision::local_pref;
use super::{Path, PathSource, PeerInfo, RibConfig};

/// Well-known community NO_EXPORT (RFC 1997): not beyond this AS.
pub const NO_EXPORT: u32 = 0xFFFF_FF01;
/// Well-known community NO_ADVERTISE (RFC 1997): to no peer at all.
pub const NO_ADVERTISE: u32 = 0xFFFF_FF02;
/// Well-known community NO_EXPORT_SUBCONFED (RFC 1997): not to eBGP peers, confederation or
/// not (we run no confederations, so it is NO_EXPORT here).
pub const NO_EXPORT_SUBCONFED: u32 = 0xFFFF_FF03;

/// An AS_SEQUENCE segment holds at most 255 ASes on the wire.
const MAX_SEGMENT_LEN: usize = 255;

fn addr_family(a: &IpAddr) -> Family {
    match a {
        IpAddr::V4(_) => Family::Ipv4Unicast,
        IpAddr::V6(_) => Family::Ipv6Unicast,
    }
}

/// `path` with `asn` prepended, confederation segments removed (they must not leave the
/// confederation, RFC 5065 section 5.3; we are never inside one).
fn prepend(asn: Asn, path: &AsPath) -> AsPath {
    let mut segments: Vec<AsSegment> = path
        .segments
        .iter()
        .filter(|s| matches!(s, AsSegment::Sequence(_) | AsSegment::Set(_)))
        .cloned()
        .collect();
    match segments.first_mut() {
        Some(AsSegment::Sequence(asns)) if asns.len() < MAX_SEGMENT_LEN => asns.insert(0, asn),
        _ => segments.insert(0, AsSegment::Sequence(vec![asn])),
    }
    AsPath { segments }
}

/// The attributes to send `path` (a best path for a prefix of `family`) to `target` with, or
/// `None` when it must not be sent there. `source` is the peer the path was learned from, if
/// it is still configured.
pub fn export(
    cfg: &RibConfig,
    target: &PeerInfo,
    source: Option<&PeerInfo>,
    path: &Path,
    family: Family,
) -> Option<PathAttrs> {
    // Never back to where it came from (split horizon).
    if path.source == PathSource::Peer(target.address) {
        return None;
    }
    let target_ibgp = target.asn == cfg.local_asn;
    let communities = &path.attrs.communities;
    if communities.contains(&NO_ADVERTISE) {
        return None;
    }
    if !target_ibgp
        && (communities.contains(&NO_EXPORT) || communities.contains(&NO_EXPORT_SUBCONFED))
    {
        return None;
    }

    let self_hop = target.local_address.filter(|a| addr_family(a) == family);
    let learned_via_ebgp = !path.ibgp && path.source != PathSource::Local;
    let mut attrs = (*path.attrs).clone();
    if target_ibgp {
        if path.ibgp {
            // RFC 4456 section 6: a route from a client goes to every iBGP peer, one from a
            // non-client only to clients. Without clients we are a plain full-mesh member and
            // reflect nothing.
            let source_is_client = source.is_some_and(|s| s.route_reflector_client);
            if !source_is_client && !target.route_reflector_client {
                return None;
            }
            let originator = *attrs.originator_id.get_or_insert(path.peer_router_id.0);
            // The target would discard it as its own route (RFC 4456 section 8); save the
            // bandwidth.
            if originator == target.router_id.0 {
                return None;
            }
            attrs.cluster_list.insert(0, cfg.cluster_id());
        }
        attrs.local_pref = Some(local_pref(path));
        let needs_self = learned_via_ebgp
            || (path.source == PathSource::Local
                && !matches!(attrs.next_hop, Some(nh) if !nh.is_unspecified()));
        if needs_self {
            attrs.next_hop = Some(self_hop?);
            attrs.link_local_next_hop = None;
        }
    } else {
        // An eBGP-learned MED belongs to the neighbouring AS and must not travel to another
        // one (RFC 4271 5.1.4); our own and iBGP-learned MEDs are our operators' choice.
        if learned_via_ebgp {
            attrs.med = None;
        }
        attrs.as_path = prepend(cfg.local_asn, &attrs.as_path);
        attrs.next_hop = Some(self_hop?);
        // We do not know our own link-local address here; better none than the source's.
        attrs.link_local_next_hop = None;
        attrs.local_pref = None;
        attrs.originator_id = None;
        attrs.cluster_list.clear();
    }

    match attrs.next_hop {
        Some(nh) if addr_family(&nh) == family => {}
        _ => {
            attrs.next_hop = Some(self_hop?);
            attrs.link_local_next_hop = None;
        }
    }
    Some(attrs)
}
