//! Encoding of path attributes (RFC 4271 section 4.3) for a given session.
//!
//! The flags of known attributes are always the ones their RFC prescribes; the Extended Length
//! bit is set exactly when the value is longer than 255 octets, so encoding is canonical.

use bytes::{BufMut, BytesMut};

use crate::types::Asn;
use crate::wire::attribute::{
    flags, type_code as tc, Aggregator, AsPath, AsSegment, MpNextHop, MpReach, MpUnreach,
    PathAttribute,
};
use crate::wire::context::SessionContext;
use crate::wire::nlri;

/// The flags (without Extended Length) RFC 4271 and friends give each known attribute.
pub fn standard_flags(type_code: u8) -> u8 {
    match type_code {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF | tc::ATOMIC_AGGREGATE => {
            flags::TRANSITIVE
        }
        tc::MULTI_EXIT_DISC
        | tc::ORIGINATOR_ID
        | tc::CLUSTER_LIST
        | tc::MP_REACH_NLRI
        | tc::MP_UNREACH_NLRI => flags::OPTIONAL,
        _ => flags::OPTIONAL | flags::TRANSITIVE,
    }
}

/// Append an attribute header and value.
pub fn put_attribute(out: &mut BytesMut, flag_bits: u8, type_code: u8, value: &[u8]) {
    if let Ok(len) = u8::try_from(value.len()) {
        out.put_u8(flag_bits & !flags::EXTENDED_LENGTH);
        out.put_u8(type_code);
        out.put_u8(len);
    } else {
        out.put_u8(flag_bits | flags::EXTENDED_LENGTH);
        out.put_u8(type_code);
        // Values longer than 65535 octets cannot occur in a 4096-octet message; the caller's
        // size check rejects the message anyway, so saturating keeps this total.
        out.put_u16(u16::try_from(value.len()).unwrap_or(u16::MAX));
    }
    out.put_slice(value);
}

/// The AS number to write in a 2-octet field (RFC 6793 section 4.2.2).
pub fn two_octet(asn: Asn) -> u16 {
    u16::try_from(asn.0).unwrap_or(Asn::TRANS.0 as u16)
}

/// Append AS_PATH segments with `four`-octet or 2-octet numbers, splitting segments of more
/// than 255 numbers.
pub fn put_as_path(path: &AsPath, four: bool, out: &mut BytesMut) {
    for seg in &path.segments {
        let (seg_type, asns) = match seg {
            AsSegment::Set(a) => (1u8, a),
            AsSegment::Sequence(a) => (2, a),
            AsSegment::ConfedSequence(a) => (3, a),
            AsSegment::ConfedSet(a) => (4, a),
        };
        for chunk in asns.chunks(255) {
            out.put_u8(seg_type);
            out.put_u8(chunk.len() as u8);
            for asn in chunk {
                if four {
                    out.put_u32(asn.0);
                } else {
                    out.put_u16(two_octet(*asn));
                }
            }
        }
    }
}

fn put_aggregator(agg: &Aggregator, four: bool, out: &mut BytesMut) {
    if four {
        out.put_u32(agg.asn.0);
    } else {
        out.put_u16(two_octet(agg.asn));
    }
    out.put_slice(&agg.address.octets());
}

/// Append the MP_REACH_NLRI value header (everything before the NLRI).
pub fn put_mp_reach_head(afi: u16, safi: u8, next_hop: &MpNextHop, out: &mut BytesMut) {
    out.put_u16(afi);
    out.put_u8(safi);
    match next_hop {
        MpNextHop::V4(a) => {
            out.put_u8(4);
            out.put_slice(&a.octets());
        }
        MpNextHop::V6(a) => {
            out.put_u8(16);
            out.put_slice(&a.octets());
        }
        MpNextHop::V6WithLinkLocal(a, ll) => {
            out.put_u8(32);
            out.put_slice(&a.octets());
            out.put_slice(&ll.octets());
        }
    }
    // Reserved (formerly the SNPA count).
    out.put_u8(0);
}

fn put_mp_reach(r: &MpReach, out: &mut BytesMut) {
    put_mp_reach_head(r.afi, r.safi, &r.next_hop, out);
    for p in &r.nlri {
        nlri::encode(p, out);
    }
}

fn put_mp_unreach(u: &MpUnreach, out: &mut BytesMut) {
    out.put_u16(u.afi);
    out.put_u8(u.safi);
    for p in &u.withdrawn {
        nlri::encode(p, out);
    }
}

/// Append one attribute as it goes to the peer of `ctx`.
///
/// `scratch` is reused between calls to avoid an allocation per attribute.
pub fn encode_attribute(
    attr: &PathAttribute,
    ctx: &SessionContext,
    scratch: &mut BytesMut,
    out: &mut BytesMut,
) {
    scratch.clear();
    let v = &mut *scratch;
    let type_code = match attr {
        PathAttribute::Origin(o) => {
            v.put_u8(*o as u8);
            tc::ORIGIN
        }
        PathAttribute::AsPath(p) => {
            put_as_path(p, ctx.four_octet_as, v);
            tc::AS_PATH
        }
        PathAttribute::NextHop(a) => {
            v.put_slice(&a.octets());
            tc::NEXT_HOP
        }
        PathAttribute::MultiExitDisc(m) => {
            v.put_u32(*m);
            tc::MULTI_EXIT_DISC
        }
        PathAttribute::LocalPref(l) => {
            v.put_u32(*l);
            tc::LOCAL_PREF
        }
        PathAttribute::AtomicAggregate => tc::ATOMIC_AGGREGATE,
        PathAttribute::Aggregator(a) => {
            put_aggregator(a, ctx.four_octet_as, v);
            tc::AGGREGATOR
        }
        PathAttribute::Communities(c) => {
            c.iter().for_each(|x| v.put_u32(*x));
            tc::COMMUNITIES
        }
        PathAttribute::OriginatorId(a) => {
            v.put_slice(&a.octets());
            tc::ORIGINATOR_ID
        }
        PathAttribute::ClusterList(ids) => {
            ids.iter().for_each(|x| v.put_slice(&x.octets()));
            tc::CLUSTER_LIST
        }
        PathAttribute::MpReach(r) => {
            put_mp_reach(r, v);
            tc::MP_REACH_NLRI
        }
        PathAttribute::MpUnreach(u) => {
            put_mp_unreach(u, v);
            tc::MP_UNREACH_NLRI
        }
        PathAttribute::As4Path(p) => {
            put_as_path(p, true, v);
            tc::AS4_PATH
        }
        PathAttribute::As4Aggregator(a) => {
            put_aggregator(a, true, v);
            tc::AS4_AGGREGATOR
        }
        PathAttribute::LargeCommunities(lc) => {
            for c in lc {
                v.put_u32(c.global);
                v.put_u32(c.local1);
                v.put_u32(c.local2);
            }
            tc::LARGE_COMMUNITY
        }
        PathAttribute::Unknown(raw) => {
            put_attribute(out, raw.flags, raw.type_code, &raw.data);
            return;
        }
    };
    put_attribute(out, standard_flags(type_code), type_code, scratch);
}
