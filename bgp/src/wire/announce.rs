//! Building UPDATEs from the RIB's form: many prefixes sharing one [`PathAttrs`], packed into
//! as few 4096-octet messages as possible (the send-side counterpart of `routes`).
//!
//! The attributes are encoded once per call; each message only copies them and appends its
//! share of prefixes, so the per-prefix cost is a few octets of copying.

use std::net::{IpAddr, Ipv6Addr};

use bytes::{BufMut, BytesMut};
use ipnet::IpNet;

use crate::types::Family;
use crate::wire::attribute::{
    flags, type_code as tc, AsPath, AsSegment, MpNextHop, PathAttribute, PathAttrs,
};
use crate::wire::attribute_encode::{encode_attribute, put_attribute, put_mp_reach_head};
use crate::wire::codec::EncodeError;
use crate::wire::context::SessionContext;
use crate::wire::header::{finish_header, start_header};
use crate::wire::message::{kind, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::wire::nlri;
use crate::wire::update_codec::patch_len;

/// Octets of an UPDATE before any attribute: header, withdrawn length, attributes length.
const UPDATE_OVERHEAD: usize = HEADER_LEN + 2 + 2;
/// The largest attribute header (Extended Length form).
const ATTR_HEADER_MAX: usize = 4;

fn type_code(a: &PathAttribute) -> u8 {
    match a {
        PathAttribute::Origin(_) => tc::ORIGIN,
        PathAttribute::AsPath(_) => tc::AS_PATH,
        PathAttribute::NextHop(_) => tc::NEXT_HOP,
        PathAttribute::MultiExitDisc(_) => tc::MULTI_EXIT_DISC,
        PathAttribute::LocalPref(_) => tc::LOCAL_PREF,
        PathAttribute::AtomicAggregate => tc::ATOMIC_AGGREGATE,
        PathAttribute::Aggregator(_) => tc::AGGREGATOR,
        PathAttribute::Communities(_) => tc::COMMUNITIES,
        PathAttribute::OriginatorId(_) => tc::ORIGINATOR_ID,
        PathAttribute::ClusterList(_) => tc::CLUSTER_LIST,
        PathAttribute::MpReach(_) => tc::MP_REACH_NLRI,
        PathAttribute::MpUnreach(_) => tc::MP_UNREACH_NLRI,
        PathAttribute::As4Path(_) => tc::AS4_PATH,
        PathAttribute::As4Aggregator(_) => tc::AS4_AGGREGATOR,
        PathAttribute::LargeCommunities(_) => tc::LARGE_COMMUNITY,
        PathAttribute::Unknown(raw) => raw.type_code,
    }
}

/// The wire attributes for `attrs` toward the peer of `ctx`, without any next hop or
/// MP_REACH_NLRI, sorted by type code (RFC 4271 section 5: senders SHOULD order them).
fn wire_attributes(ctx: &SessionContext, attrs: &PathAttrs) -> Vec<PathAttribute> {
    let ibgp = ctx.is_ibgp();
    let mut out = vec![
        PathAttribute::Origin(attrs.origin),
        PathAttribute::AsPath(attrs.as_path.clone()),
    ];
    if let Some(med) = attrs.med {
        out.push(PathAttribute::MultiExitDisc(med));
    }
    // RFC 4271 section 5.1.5: LOCAL_PREF never goes to an external peer.
    if let (Some(lp), true) = (attrs.local_pref, ibgp) {
        out.push(PathAttribute::LocalPref(lp));
    }
    if attrs.atomic_aggregate {
        out.push(PathAttribute::AtomicAggregate);
    }
    if let Some(agg) = attrs.aggregator {
        out.push(PathAttribute::Aggregator(agg));
    }
    if !attrs.communities.is_empty() {
        out.push(PathAttribute::Communities(attrs.communities.clone()));
    }
    // RFC 4456: route reflection attributes stay inside the AS.
    if ibgp {
        if let Some(id) = attrs.originator_id {
            out.push(PathAttribute::OriginatorId(id));
        }
        if !attrs.cluster_list.is_empty() {
            out.push(PathAttribute::ClusterList(attrs.cluster_list.clone()));
        }
    }
    if !ctx.four_octet_as {
        // RFC 6793 section 4.2.2: the 2-octet AS_PATH says AS_TRANS where a number does not
        // fit; AS4_PATH (without confederation segments) carries the real ones.
        let needs_as4 = attrs.as_path.segments.iter().any(|s| {
            let (AsSegment::Set(a) | AsSegment::Sequence(a)) = s else {
                return false;
            };
            a.iter().any(|asn| asn.is_four_octet())
        });
        if needs_as4 {
            let segments = attrs
                .as_path
                .segments
                .iter()
                .filter(|s| matches!(s, AsSegment::Set(_) | AsSegment::Sequence(_)))
                .cloned()
                .collect();
            out.push(PathAttribute::As4Path(AsPath { segments }));
        }
        if let Some(agg) = attrs.aggregator.filter(|a| a.asn.is_four_octet()) {
            out.push(PathAttribute::As4Aggregator(agg));
        }
    }
    if !attrs.large_communities.is_empty() {
        out.push(PathAttribute::LargeCommunities(
            attrs.large_communities.clone(),
        ));
    }
    for raw in &attrs.unknown {
        // RFC 4271 section 5: an unrecognised optional transitive attribute passed on gets
        // the Partial bit.
        let mut raw = raw.clone();
        raw.flags |= flags::PARTIAL;
        out.push(PathAttribute::Unknown(raw));
    }
    out.sort_by_key(type_code);
    out
}

/// How the prefixes of one call travel.
enum Carrier {
    /// NEXT_HOP attribute and the classic NLRI field.
    Classic,
    /// MP_REACH_NLRI with this AFI/SAFI and next hop.
    MpReach(u16, u8, MpNextHop),
}

fn carrier(
    ctx: &SessionContext,
    attrs: &PathAttrs,
    family: Family,
) -> Result<Carrier, EncodeError> {
    let (afi, safi) = family.afi_safi();
    let v6_hop = |global: Ipv6Addr| match attrs.link_local_next_hop {
        Some(ll) => MpNextHop::V6WithLinkLocal(global, ll),
        None => MpNextHop::V6(global),
    };
    match (family, attrs.next_hop) {
        (Family::Ipv4Unicast, Some(IpAddr::V4(_))) => Ok(Carrier::Classic),
        (Family::Ipv4Unicast, Some(IpAddr::V6(a))) if ctx.extended_next_hop => {
            Ok(Carrier::MpReach(afi, safi, v6_hop(a)))
        }
        (Family::Ipv6Unicast, Some(IpAddr::V6(a))) => Ok(Carrier::MpReach(afi, safi, v6_hop(a))),
        // RFC 4798 section 2: an IPv4 next hop for IPv6 routes as an IPv4-mapped address.
        (Family::Ipv6Unicast, Some(IpAddr::V4(a))) => Ok(Carrier::MpReach(
            afi,
            safi,
            MpNextHop::V6(a.to_ipv6_mapped()),
        )),
        _ => Err(EncodeError::NextHop(family)),
    }
}

/// Encode announcements of `prefixes` (all one family) with `attrs` as as few UPDATE messages
/// as fit in 4096 octets each, appended to `out`. Returns the number of messages.
///
/// IPv4 prefixes use NEXT_HOP and the NLRI field, or MP_REACH_NLRI with an IPv6 next hop when
/// `attrs.next_hop` is IPv6 and the session negotiated RFC 8950; IPv6 prefixes use
/// MP_REACH_NLRI. Toward a 2-octet peer AS_PATH carries AS_TRANS and AS4_PATH/AS4_AGGREGATOR
/// are added when needed. Unknown optional transitive attributes get the Partial bit.
/// On error nothing is appended.
pub fn encode_announce(
    ctx: &SessionContext,
    attrs: &PathAttrs,
    prefixes: &[IpNet],
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let Some(first) = prefixes.first() else {
        return Ok(0);
    };
    let family = Family::of(first);
    if prefixes.iter().any(|p| Family::of(p) != family) {
        return Err(EncodeError::MixedFamilies);
    }
    let carrier = carrier(ctx, attrs, family)?;

    let mut wire = wire_attributes(ctx, attrs);
    if let (Carrier::Classic, Some(IpAddr::V4(nh))) = (&carrier, attrs.next_hop) {
        wire.push(PathAttribute::NextHop(nh));
        wire.sort_by_key(type_code);
    }
    // Attributes before and after MP_REACH_NLRI (type 14), to keep type-code order.
    let mut before = BytesMut::new();
    let mut after = BytesMut::new();
    let mut scratch = BytesMut::new();
    for a in &wire {
        let dst = if type_code(a) < tc::MP_REACH_NLRI {
            &mut before
        } else {
            &mut after
        };
        encode_attribute(a, ctx, &mut scratch, dst);
    }
    let mut mp_head = BytesMut::new();
    if let Carrier::MpReach(afi, safi, nh) = &carrier {
        put_mp_reach_head(*afi, *safi, nh, &mut mp_head);
    }
    let mp_overhead = match carrier {
        Carrier::Classic => 0,
        Carrier::MpReach(..) => ATTR_HEADER_MAX + mp_head.len(),
    };
    let fixed = UPDATE_OVERHEAD + before.len() + after.len() + mp_overhead;
    let room = MAX_MESSAGE_LEN.saturating_sub(fixed);
    let biggest = if family == Family::Ipv4Unicast { 5 } else { 17 };
    if room < biggest {
        return Err(EncodeError::AttributesTooLong);
    }

    let mut count = 0;
    let mut rest = prefixes;
    while !rest.is_empty() {
        let take = fitting(rest, room);
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        let start = start_header(out, kind::UPDATE);
        out.put_u16(0);
        let attrs_at = out.len();
        out.put_u16(0);
        out.put_slice(&before);
        if let Carrier::MpReach(..) = carrier {
            scratch.clear();
            scratch.put_slice(&mp_head);
            for p in chunk {
                nlri::encode(p, &mut scratch);
            }
            put_attribute(out, flags::OPTIONAL, tc::MP_REACH_NLRI, &scratch);
        }
        out.put_slice(&after);
        patch_len(out, attrs_at);
        if let Carrier::Classic = carrier {
            for p in chunk {
                nlri::encode(p, out);
            }
        }
        finish_header(out, start);
        count += 1;
    }
    Ok(count)
}

/// How many prefixes from the front of `prefixes` fit in `room` octets (at least one, since
/// the caller checked `room` against the largest prefix).
fn fitting(prefixes: &[IpNet], room: usize) -> usize {
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        used += nlri::wire_len(p);
        if used > room {
            return i.max(1);
        }
    }
    prefixes.len()
}

/// Encode withdrawals (mixed families allowed) packed into as few UPDATEs as possible,
/// appended to `out`: IPv4 in the Withdrawn Routes field, IPv6 in MP_UNREACH_NLRI, both in
/// one message where they fit. Returns the number of messages.
pub fn encode_withdraw(
    _ctx: &SessionContext,
    prefixes: &[IpNet],
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    let v4: Vec<IpNet> = prefixes
        .iter()
        .filter(|p| p.addr().is_ipv4())
        .copied()
        .collect();
    let v6: Vec<IpNet> = prefixes
        .iter()
        .filter(|p| p.addr().is_ipv6())
        .copied()
        .collect();
    let (mut v4, mut v6) = (v4.as_slice(), v6.as_slice());
    let mut count = 0;
    let mut scratch = BytesMut::new();
    // MP_UNREACH_NLRI header and AFI/SAFI.
    let mp_overhead = ATTR_HEADER_MAX + 3;
    while !v4.is_empty() || !v6.is_empty() {
        let start = start_header(out, kind::UPDATE);
        let mut room = MAX_MESSAGE_LEN - UPDATE_OVERHEAD;
        let withdrawn_at = out.len();
        out.put_u16(0);
        let take = fitting(v4, room);
        let (chunk, tail) = v4.split_at(take.min(v4.len()));
        v4 = tail;
        for p in chunk {
            room -= nlri::wire_len(p);
            nlri::encode(p, out);
        }
        patch_len(out, withdrawn_at);
        let attrs_at = out.len();
        out.put_u16(0);
        if v4.is_empty() && !v6.is_empty() && room >= mp_overhead + 17 {
            let take = fitting(v6, room - mp_overhead);
            let (chunk, tail) = v6.split_at(take.min(v6.len()));
            v6 = tail;
            scratch.clear();
            let (afi, safi) = Family::Ipv6Unicast.afi_safi();
            scratch.put_u16(afi);
            scratch.put_u8(safi);
            for p in chunk {
                nlri::encode(p, &mut scratch);
            }
            put_attribute(out, flags::OPTIONAL, tc::MP_UNREACH_NLRI, &scratch);
        }
        patch_len(out, attrs_at);
        finish_header(out, start);
        count += 1;
    }
    Ok(count)
}
