//! From the wire form of an UPDATE to what the RIB consumes ([`RouteUpdate`]), and the
//! End-of-RIB marker (RFC 4724 section 2).
//!
//! This is where the session-dependent meaning is resolved: AS4_PATH merged into AS_PATH on a
//! 2-octet session (RFC 6793 section 4.2.3), each NLRI paired with the right next hop, RFC 7606
//! treat-as-withdraw applied. Pure and allocation-light: prefixes are moved, not re-parsed.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::types::{Asn, Family};
use crate::wire::attribute::{
    Aggregator, AsPath, AsSegment, MpNextHop, MpUnreach, PathAttribute, PathAttrs,
};
use crate::wire::context::SessionContext;
use crate::wire::message::{Announcement, RouteUpdate, Update};

impl Update {
    /// The RIB's view of this UPDATE on the session described by `ctx`.
    ///
    /// AS4_PATH/AS4_AGGREGATOR are merged (RFC 6793 section 4.2.3) when the session is 2-octet;
    /// IPv4 NLRI are paired with NEXT_HOP, MP_REACH NLRI with the MP next hop (including an
    /// RFC 8950 IPv6 next hop for IPv4 NLRI); with `treat_as_withdraw` set every NLRI becomes a
    /// withdrawal; End-of-RIB markers are recognised.
    pub fn routes(&self, ctx: &SessionContext) -> RouteUpdate {
        let mut out = RouteUpdate {
            end_of_rib: self.end_of_rib_family(),
            ..RouteUpdate::default()
        };
        out.withdrawn
            .extend(self.withdrawn.iter().copied().map(IpNet::V4));
        for a in &self.attributes {
            if let PathAttribute::MpUnreach(u) = a {
                out.withdrawn.extend(u.withdrawn.iter().copied());
            }
        }
        let mp_reach = self.attributes.iter().find_map(|a| match a {
            PathAttribute::MpReach(r) => Some(r),
            _ => None,
        });

        if self.treat_as_withdraw.is_some() {
            // RFC 7606 section 2: every NLRI, wherever it was carried, counts as withdrawn.
            out.withdrawn
                .extend(self.nlri.iter().copied().map(IpNet::V4));
            if let Some(r) = mp_reach {
                out.withdrawn.extend(r.nlri.iter().copied());
            }
            return out;
        }

        let base = self.path_attrs(ctx);
        if !self.nlri.is_empty() {
            let next_hop = self.attributes.iter().find_map(|a| match a {
                PathAttribute::NextHop(nh) => Some(IpAddr::V4(*nh)),
                _ => None,
            });
            out.announced.push(Announcement {
                attrs: PathAttrs {
                    next_hop,
                    ..base.clone()
                },
                prefixes: self.nlri.iter().copied().map(IpNet::V4).collect(),
            });
        }
        if let Some(r) = mp_reach.filter(|r| !r.nlri.is_empty()) {
            let (next_hop, link_local) = match r.next_hop {
                MpNextHop::V4(a) => (IpAddr::V4(a), None),
                MpNextHop::V6(a) => (IpAddr::V6(a), None),
                MpNextHop::V6WithLinkLocal(a, ll) => (IpAddr::V6(a), Some(ll)),
            };
            out.announced.push(Announcement {
                attrs: PathAttrs {
                    next_hop: Some(next_hop),
                    link_local_next_hop: link_local,
                    ..base
                },
                prefixes: r.nlri.clone(),
            });
        }
        out
    }

    /// The End-of-RIB marker for a family (IPv4: an empty UPDATE; others: an UPDATE holding
    /// only an empty MP_UNREACH_NLRI), RFC 4724 section 2.
    pub fn end_of_rib(family: Family) -> Update {
        match family {
            Family::Ipv4Unicast => Update::default(),
            _ => {
                let (afi, safi) = family.afi_safi();
                Update {
                    attributes: vec![PathAttribute::MpUnreach(MpUnreach {
                        afi,
                        safi,
                        withdrawn: Vec::new(),
                    })],
                    ..Update::default()
                }
            }
        }
    }

    /// The family this UPDATE is the End-of-RIB marker of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::Ipv4Unicast),
            [PathAttribute::MpUnreach(u)] if u.withdrawn.is_empty() => {
                Family::from_afi_safi(u.afi, u.safi)
            }
            _ => None,
        }
    }

    /// The attributes without a next hop, AS4_* merged on a 2-octet session.
    fn path_attrs(&self, ctx: &SessionContext) -> PathAttrs {
        let mut attrs = PathAttrs::default();
        let mut as4_path = None;
        let mut as4_aggregator = None;
        for a in &self.attributes {
            match a {
                PathAttribute::Origin(o) => attrs.origin = *o,
                PathAttribute::AsPath(p) => attrs.as_path = p.clone(),
                PathAttribute::MultiExitDisc(m) => attrs.med = Some(*m),
                PathAttribute::LocalPref(l) => attrs.local_pref = Some(*l),
                PathAttribute::AtomicAggregate => attrs.atomic_aggregate = true,
                PathAttribute::Aggregator(g) => attrs.aggregator = Some(*g),
                PathAttribute::Communities(c) => attrs.communities = c.clone(),
                PathAttribute::OriginatorId(o) => attrs.originator_id = Some(*o),
                PathAttribute::ClusterList(c) => attrs.cluster_list = c.clone(),
                PathAttribute::As4Path(p) => as4_path = Some(p),
                PathAttribute::As4Aggregator(g) => as4_aggregator = Some(*g),
                PathAttribute::LargeCommunities(l) => attrs.large_communities = l.clone(),
                PathAttribute::Unknown(raw) => attrs.unknown.push(raw.clone()),
                PathAttribute::NextHop(_)
                | PathAttribute::MpReach(_)
                | PathAttribute::MpUnreach(_) => {}
            }
        }
        if !ctx.four_octet_as {
            merge_as4(&mut attrs, as4_path, as4_aggregator);
        }
        attrs
    }
}

/// RFC 6793 section 4.2.3.
fn merge_as4(attrs: &mut PathAttrs, as4_path: Option<&AsPath>, as4_aggregator: Option<Aggregator>) {
    // An AGGREGATOR with a real 2-octet AS means whoever aggregated was an old speaker, so
    // the AS4_* attributes predate the aggregation and are stale: ignore both.
    if let Some(agg) = attrs.aggregator {
        if agg.asn != Asn::TRANS {
            return;
        }
        if let Some(agg4) = as4_aggregator {
            attrs.aggregator = Some(agg4);
        }
    }
    let Some(as4) = as4_path else {
        return;
    };
    let n2 = path_len(&attrs.as_path);
    let n4 = path_len(as4);
    if n2 < n4 {
        // Inconsistent: keep AS_PATH as it is.
        return;
    }
    let mut keep = n2 - n4;
    let mut merged = Vec::with_capacity(attrs.as_path.segments.len() + as4.segments.len());
    for seg in &attrs.as_path.segments {
        if keep == 0 {
            break;
        }
        match seg {
            AsSegment::Sequence(asns) => {
                let take = keep.min(asns.len());
                merged.push(AsSegment::Sequence(
                    asns.iter().take(take).copied().collect(),
                ));
                keep -= take;
            }
            AsSegment::Set(_) => {
                merged.push(seg.clone());
                keep -= 1;
            }
            // Confederation segments do not count toward the path length (RFC 5065).
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => merged.push(seg.clone()),
        }
    }
    merged.extend(as4.segments.iter().cloned());
    attrs.as_path = AsPath { segments: merged };
}

/// Path length as RFC 4271 section 9.1.2.2 counts it: a set counts once, confederation
/// segments not at all.
fn path_len(path: &AsPath) -> usize {
    path.segments
        .iter()
        .map(|s| match s {
            AsSegment::Sequence(a) => a.len(),
            AsSegment::Set(_) => 1,
            AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_) => 0,
        })
        .sum()
}
