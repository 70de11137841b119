//! Decoding of one path attribute value, and the RFC 7606 verdict on it.
//!
//! Every known attribute has exactly one way of failing (RFC 7606 section 7 and the RFCs that
//! define each attribute): the verdict says whether the UPDATE goes on with the attribute,
//! without it (attribute discard), as a withdrawal (treat-as-withdraw) or ends the session.
//! This file decides per attribute; the UPDATE-level rules (duplicates, missing attributes,
//! field lengths) live in `update_codec`.

use std::net::Ipv4Addr;

use bytes::Bytes;
use nom::number::complete::{be_u16, be_u8};

use crate::types::{Asn, Family};
use crate::wire::attribute::{
    flags, type_code as tc, Aggregator, AsPath, AsSegment, LargeCommunity, MpNextHop, MpReach,
    MpUnreach, Origin, PathAttribute, RawAttribute,
};
use crate::wire::context::SessionContext;
use crate::wire::error::{code, update, NotificationError};
use crate::wire::nlri;

/// What RFC 7606 says to do with one received attribute.
#[derive(Debug)]
pub enum Verdict {
    /// Well-formed: keep it.
    Keep(PathAttribute),
    /// Drop the attribute quietly and go on (attribute discard, or an attribute we may ignore).
    Discard,
    /// Treat every NLRI of the UPDATE as withdrawn; the error is for logging.
    TreatAsWithdraw(NotificationError),
    /// End the session with this NOTIFICATION.
    Reset(NotificationError),
}

/// One attribute as framed in the Path Attributes field.
#[derive(Debug, Clone, Copy)]
pub struct RawAttr<'a> {
    /// Flags octet as received.
    pub flags: u8,
    /// Type code.
    pub type_code: u8,
    /// The value.
    pub value: &'a [u8],
    /// The whole attribute (flags, type, length, value): the data of most UPDATE NOTIFICATIONs.
    pub whole: &'a [u8],
}

impl RawAttr<'_> {
    fn error(&self, subcode: u8) -> NotificationError {
        NotificationError::with_data(
            code::UPDATE_MESSAGE,
            subcode,
            Bytes::copy_from_slice(self.whole),
        )
    }
}

/// How a malformed instance of an attribute is handled (RFC 7606 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnMalformed {
    Withdraw,
    Discard,
    Reset,
}

/// The (optional, transitive) flags and the malformation rule of the attributes we know.
fn known(type_code: u8) -> Option<(bool, bool, OnMalformed)> {
    use OnMalformed::*;
    Some(match type_code {
        tc::ORIGIN | tc::AS_PATH | tc::NEXT_HOP | tc::LOCAL_PREF => (false, true, Withdraw),
        tc::ATOMIC_AGGREGATE => (false, true, Discard),
        tc::MULTI_EXIT_DISC | tc::ORIGINATOR_ID | tc::CLUSTER_LIST => (true, false, Withdraw),
        tc::MP_REACH_NLRI | tc::MP_UNREACH_NLRI => (true, false, Reset),
        tc::COMMUNITIES | tc::LARGE_COMMUNITY => (true, true, Withdraw),
        tc::AGGREGATOR | tc::AS4_PATH | tc::AS4_AGGREGATOR => (true, true, Discard),
        _ => return None,
    })
}

/// Decode one attribute and judge it.
pub fn decode_attribute(attr: RawAttr<'_>, ctx: &SessionContext) -> Verdict {
    let optional = attr.flags & flags::OPTIONAL != 0;
    let transitive = attr.flags & flags::TRANSITIVE != 0;
    let Some((want_optional, want_transitive, rule)) = known(attr.type_code) else {
        return unknown(attr, optional, transitive);
    };
    let malformed = |e: NotificationError| match rule {
        OnMalformed::Withdraw => Verdict::TreatAsWithdraw(e),
        OnMalformed::Discard => Verdict::Discard,
        OnMalformed::Reset => Verdict::Reset(e),
    };
    // RFC 7606 section 3 (c): flags in conflict make the attribute malformed.
    if optional != want_optional || transitive != want_transitive {
        return malformed(attr.error(update::ATTRIBUTE_FLAGS_ERROR));
    }
    match decode_known(attr, ctx) {
        Ok(Some(value)) => Verdict::Keep(value),
        Ok(None) => Verdict::Discard,
        Err(e) => malformed(e),
    }
}

fn unknown(attr: RawAttr<'_>, optional: bool, transitive: bool) -> Verdict {
    if !optional {
        // RFC 4271 section 6.3: an unrecognised well-known attribute ends the session.
        return Verdict::Reset(attr.error(update::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE));
    }
    if !transitive {
        // RFC 4271 section 5: unrecognised optional non-transitive attributes are ignored.
        return Verdict::Discard;
    }
    Verdict::Keep(PathAttribute::Unknown(RawAttribute {
        // The length form is an encoding detail, re-chosen when the attribute is sent on.
        flags: attr.flags & !flags::EXTENDED_LENGTH,
        type_code: attr.type_code,
        data: Bytes::copy_from_slice(attr.value),
    }))
}

fn fixed<const N: usize>(attr: &RawAttr<'_>) -> Result<[u8; N], NotificationError> {
    attr.value
        .try_into()
        .map_err(|_| attr.error(update::ATTRIBUTE_LENGTH_ERROR))
}

fn u32_list(attr: &RawAttr<'_>) -> Result<Vec<u32>, NotificationError> {
    // RFC 7606 sections 7.8 and 7.10: the length must be a non-zero multiple of 4.
    if attr.value.is_empty() || !attr.value.len().is_multiple_of(4) {
        return Err(attr.error(update::OPTIONAL_ATTRIBUTE_ERROR));
    }
    Ok(attr
        .value
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// `Ok(None)`: well-formed but to be ignored on this session.
fn decode_known(
    attr: RawAttr<'_>,
    ctx: &SessionContext,
) -> Result<Option<PathAttribute>, NotificationError> {
    let ebgp = !ctx.is_ibgp();
    let value = match attr.type_code {
        tc::ORIGIN => {
            let [v] = fixed::<1>(&attr)?;
            PathAttribute::Origin(match v {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                _ => return Err(attr.error(update::INVALID_ORIGIN_ATTRIBUTE)),
            })
        }
        tc::AS_PATH => {
            let width = if ctx.four_octet_as { 4 } else { 2 };
            let path = as_path(attr.value, width).ok_or_else(malformed_as_path)?;
            // RFC 7606 section 7.2 / RFC 5065: confederation segments never come from outside.
            if ebgp && has_confed(&path) {
                return Err(malformed_as_path());
            }
            PathAttribute::AsPath(path)
        }
        tc::NEXT_HOP => {
            let addr = Ipv4Addr::from(fixed::<4>(&attr)?);
            // RFC 4271 section 6.3: a next hop that cannot be a host address is semantically
            // incorrect (checks needing the local addresses are the speaker's job).
            if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
                return Err(attr.error(update::INVALID_NEXT_HOP_ATTRIBUTE));
            }
            PathAttribute::NextHop(addr)
        }
        tc::MULTI_EXIT_DISC => PathAttribute::MultiExitDisc(u32::from_be_bytes(fixed(&attr)?)),
        tc::LOCAL_PREF => {
            let v = u32::from_be_bytes(fixed(&attr)?);
            // RFC 7606 section 7.5: LOCAL_PREF from an external peer is discarded.
            if ebgp {
                return Ok(None);
            }
            PathAttribute::LocalPref(v)
        }
        tc::ATOMIC_AGGREGATE => {
            fixed::<0>(&attr)?;
            PathAttribute::AtomicAggregate
        }
        tc::AGGREGATOR => PathAttribute::Aggregator(if ctx.four_octet_as {
            aggregator4(&attr)?
        } else {
            let v = fixed::<6>(&attr)?;
            Aggregator {
                asn: Asn(u32::from(u16::from_be_bytes([v[0], v[1]]))),
                address: Ipv4Addr::new(v[2], v[3], v[4], v[5]),
            }
        }),
        tc::COMMUNITIES => PathAttribute::Communities(u32_list(&attr)?),
        tc::ORIGINATOR_ID => {
            let id = Ipv4Addr::from(fixed::<4>(&attr)?);
            // RFC 4456 section 8: route reflection attributes mean nothing across AS borders.
            if ebgp {
                return Ok(None);
            }
            PathAttribute::OriginatorId(id)
        }
        tc::CLUSTER_LIST => {
            let ids = u32_list(&attr)?;
            if ebgp {
                return Ok(None);
            }
            PathAttribute::ClusterList(ids.into_iter().map(Ipv4Addr::from).collect())
        }
        tc::MP_REACH_NLRI => return mp_reach(&attr, ctx).map(|r| r.map(PathAttribute::MpReach)),
        tc::MP_UNREACH_NLRI => return mp_unreach(&attr).map(|r| r.map(PathAttribute::MpUnreach)),
        tc::AS4_PATH => {
            // RFC 6793 section 4.1: between two 4-octet speakers AS4_PATH has no business.
            if ctx.four_octet_as {
                return Ok(None);
            }
            let path = as_path(attr.value, 4)
                .ok_or_else(|| attr.error(update::OPTIONAL_ATTRIBUTE_ERROR))?;
            // RFC 6793 section 6: confederation segments are not allowed in AS4_PATH.
            if has_confed(&path) {
                return Err(attr.error(update::OPTIONAL_ATTRIBUTE_ERROR));
            }
            PathAttribute::As4Path(path)
        }
        tc::AS4_AGGREGATOR => {
            if ctx.four_octet_as {
                return Ok(None);
            }
            PathAttribute::As4Aggregator(aggregator4(&attr)?)
        }
        tc::LARGE_COMMUNITY => {
            // RFC 8092 section 6: the length must be a non-zero multiple of 12.
            if attr.value.is_empty() || !attr.value.len().is_multiple_of(12) {
                return Err(attr.error(update::OPTIONAL_ATTRIBUTE_ERROR));
            }
            PathAttribute::LargeCommunities(
                attr.value
                    .chunks_exact(12)
                    .map(|c| {
                        let word =
                            |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                        LargeCommunity {
                            global: word(0),
                            local1: word(4),
                            local2: word(8),
                        }
                    })
                    .collect(),
            )
        }
        // `known()` lists exactly the codes above.
        _ => return Ok(None),
    };
    Ok(Some(value))
}

fn malformed_as_path() -> NotificationError {
    NotificationError::new(code::UPDATE_MESSAGE, update::MALFORMED_AS_PATH)
}

fn aggregator4(attr: &RawAttr<'_>) -> Result<Aggregator, NotificationError> {
    let v = fixed::<8>(attr)?;
    Ok(Aggregator {
        asn: Asn(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
        address: Ipv4Addr::new(v[4], v[5], v[6], v[7]),
    })
}

fn has_confed(path: &AsPath) -> bool {
    path.segments
        .iter()
        .any(|s| matches!(s, AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_)))
}

/// Parse AS_PATH segments with `width`-octet AS numbers. `None` when malformed per RFC 7606
/// section 7.2: unknown segment type, zero-length segment, overrun, or a stray trailing octet.
pub fn as_path(mut buf: &[u8], width: usize) -> Option<AsPath> {
    let mut segments = Vec::new();
    while !buf.is_empty() {
        let (rest, seg_type) = be_u8::<_, ()>(buf).ok()?;
        let (rest, count) = be_u8::<_, ()>(rest).ok()?;
        if count == 0 {
            return None;
        }
        let (asns, rest) = rest.split_at_checked(usize::from(count) * width)?;
        let asns: Vec<Asn> = if width == 4 {
            asns.chunks_exact(4)
                .map(|c| Asn(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        } else {
            asns.chunks_exact(2)
                .map(|c| Asn(u32::from(u16::from_be_bytes([c[0], c[1]]))))
                .collect()
        };
        segments.push(match seg_type {
            1 => AsSegment::Set(asns),
            2 => AsSegment::Sequence(asns),
            3 => AsSegment::ConfedSequence(asns),
            4 => AsSegment::ConfedSet(asns),
            _ => return None,
        });
        buf = rest;
    }
    Some(AsPath { segments })
}

/// RFC 4760 section 3, with the RFC 8950 IPv6 next hop for IPv4 NLRI.
fn mp_reach(
    attr: &RawAttr<'_>,
    ctx: &SessionContext,
) -> Result<Option<MpReach>, NotificationError> {
    // RFC 4760 section 7: an incorrect MP_REACH_NLRI is an Optional Attribute Error.
    let bad = || attr.error(update::OPTIONAL_ATTRIBUTE_ERROR);
    let (rest, afi) = be_u16::<_, ()>(attr.value).map_err(|_| bad())?;
    let (rest, safi) = be_u8::<_, ()>(rest).map_err(|_| bad())?;
    let (rest, nh_len) = be_u8::<_, ()>(rest).map_err(|_| bad())?;
    let (nh, rest) = rest.split_at_checked(usize::from(nh_len)).ok_or_else(bad)?;
    // The octet that once counted SNPAs (RFC 4760 section 3: reserved, ignored on receipt).
    let (_reserved, nlri_bytes) = rest.split_first().ok_or_else(bad)?;
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        // A family we do not carry: it was not negotiated, so ignore it (RFC 4760 section 6).
        return Ok(None);
    };
    let v6 = |b: &[u8]| -> Option<std::net::Ipv6Addr> {
        <[u8; 16]>::try_from(b).ok().map(std::net::Ipv6Addr::from)
    };
    let next_hop = match (family, nh.len()) {
        (Family::Ipv4Unicast, 4) => MpNextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        (Family::Ipv4Unicast, 16) if ctx.extended_next_hop => {
            MpNextHop::V6(v6(nh).ok_or_else(bad)?)
        }
        (Family::Ipv6Unicast, 16) => MpNextHop::V6(v6(nh).ok_or_else(bad)?),
        (Family::Ipv4Unicast, 32) if ctx.extended_next_hop => mp_v6_pair(nh).ok_or_else(bad)?,
        (Family::Ipv6Unicast, 32) => mp_v6_pair(nh).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let mut prefixes = Vec::new();
    match family {
        Family::Ipv4Unicast => nlri::decode_v4_any(nlri_bytes, &mut prefixes),
        Family::Ipv6Unicast => nlri::decode_v6_any(nlri_bytes, &mut prefixes),
    }
    .map_err(|_| bad())?;
    Ok(Some(MpReach {
        afi,
        safi,
        next_hop,
        nlri: prefixes,
    }))
}

fn mp_v6_pair(nh: &[u8]) -> Option<MpNextHop> {
    let (global, link_local) = nh.split_at_checked(16)?;
    Some(MpNextHop::V6WithLinkLocal(
        <[u8; 16]>::try_from(global).ok()?.into(),
        <[u8; 16]>::try_from(link_local).ok()?.into(),
    ))
}

/// RFC 4760 section 4.
fn mp_unreach(attr: &RawAttr<'_>) -> Result<Option<MpUnreach>, NotificationError> {
    let bad = || attr.error(update::OPTIONAL_ATTRIBUTE_ERROR);
    let (rest, afi) = be_u16::<_, ()>(attr.value).map_err(|_| bad())?;
    let (rest, safi) = be_u8::<_, ()>(rest).map_err(|_| bad())?;
    let Some(family) = Family::from_afi_safi(afi, safi) else {
        return Ok(None);
    };
    let mut withdrawn = Vec::new();
    match family {
        Family::Ipv4Unicast => nlri::decode_v4_any(rest, &mut withdrawn),
        Family::Ipv6Unicast => nlri::decode_v6_any(rest, &mut withdrawn),
    }
    .map_err(|_| bad())?;
    Ok(Some(MpUnreach {
        afi,
        safi,
        withdrawn,
    }))
}
