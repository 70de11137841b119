//! Capability values on the wire (RFC 5492 and the RFCs of each capability).
//!
//! A capability whose value does not parse is kept as [`Capability::Unknown`] with its bytes:
//! RFC 5492 section 5 lets a speaker ignore what it does not understand, and the FSM, not the
//! codec, decides whether a missing capability is fatal. Only broken framing (a length running
//! past its optional parameter) is a decode error.

use bytes::{BufMut, Bytes, BytesMut};
use nom::bytes::complete::take;
use nom::multi::many0;
use nom::number::complete::{be_u16, be_u32, be_u8};
use nom::sequence::tuple;
use nom::IResult;

use crate::types::Asn;
use crate::wire::capability::{
    code, AddPathEntry, Capability, ExtendedNextHopEntry, GracefulRestartCap, GracefulRestartFamily,
};

type Parsed<'a, T> = IResult<&'a [u8], T, ()>;

/// Split a Capabilities optional parameter value into capabilities, appending to `out`.
/// `Err(())` means a capability length ran past the parameter.
pub fn decode_capabilities(mut buf: &[u8], out: &mut Vec<Capability>) -> Result<(), ()> {
    while !buf.is_empty() {
        let (rest, (cap_code, len)) = tuple((be_u8, be_u8))(buf).map_err(|_: nom::Err<()>| ())?;
        let (rest, value) = take(len)(rest).map_err(|_: nom::Err<()>| ())?;
        out.push(decode_one(cap_code, value));
        buf = rest;
    }
    Ok(())
}

/// Decode one capability value; malformed values of known codes come back as `Unknown`.
pub fn decode_one(cap_code: u8, value: &[u8]) -> Capability {
    let parsed = match cap_code {
        code::MULTIPROTOCOL => whole(value, multiprotocol),
        code::ROUTE_REFRESH if value.is_empty() => Some(Capability::RouteRefresh),
        code::FOUR_OCTET_AS => whole(value, |i| {
            be_u32(i).map(|(r, a)| (r, Capability::FourOctetAs(Asn(a))))
        }),
        code::GRACEFUL_RESTART => whole(value, graceful_restart),
        code::EXTENDED_NEXT_HOP => whole(value, |i| {
            many0(extended_next_hop_entry)(i).map(|(r, v)| (r, Capability::ExtendedNextHop(v)))
        }),
        code::ADD_PATH => whole(value, |i| {
            many0(add_path_entry)(i).map(|(r, v)| (r, Capability::AddPath(v)))
        }),
        code::FQDN => whole(value, fqdn),
        _ => None,
    };
    parsed.unwrap_or_else(|| Capability::Unknown {
        code: cap_code,
        data: Bytes::copy_from_slice(value),
    })
}

/// Run a parser that must consume all of `value`.
fn whole<'a>(
    value: &'a [u8],
    mut parser: impl FnMut(&'a [u8]) -> Parsed<'a, Capability>,
) -> Option<Capability> {
    match parser(value) {
        Ok(([], cap)) => Some(cap),
        _ => None,
    }
}

fn multiprotocol(i: &[u8]) -> Parsed<'_, Capability> {
    let (i, (afi, _reserved, safi)) = tuple((be_u16, be_u8, be_u8))(i)?;
    Ok((i, Capability::Multiprotocol { afi, safi }))
}

fn graceful_restart(i: &[u8]) -> Parsed<'_, Capability> {
    let (i, head) = be_u16(i)?;
    let (i, families) = many0(|i| {
        let (i, (afi, safi, flags)) = tuple((be_u16, be_u8, be_u8))(i)?;
        let forwarding = flags & 0x80 != 0;
        Ok((
            i,
            GracefulRestartFamily {
                afi,
                safi,
                forwarding,
            },
        ))
    })(i)?;
    Ok((
        i,
        Capability::GracefulRestart(GracefulRestartCap {
            restart_state: head & 0x8000 != 0,
            notification: head & 0x4000 != 0,
            restart_time: head & 0x0fff,
            families,
        }),
    ))
}

fn extended_next_hop_entry(i: &[u8]) -> Parsed<'_, ExtendedNextHopEntry> {
    let (i, (nlri_afi, nlri_safi, next_hop_afi)) = tuple((be_u16, be_u16, be_u16))(i)?;
    Ok((
        i,
        ExtendedNextHopEntry {
            nlri_afi,
            nlri_safi,
            next_hop_afi,
        },
    ))
}

fn add_path_entry(i: &[u8]) -> Parsed<'_, AddPathEntry> {
    let (i, (afi, safi, send_receive)) = tuple((be_u16, be_u8, be_u8))(i)?;
    Ok((
        i,
        AddPathEntry {
            afi,
            safi,
            send_receive,
        },
    ))
}

fn fqdn(i: &[u8]) -> Parsed<'_, Capability> {
    let (i, host_len) = be_u8(i)?;
    let (i, host) = take(host_len)(i)?;
    let (i, domain_len) = be_u8(i)?;
    let (i, domain) = take(domain_len)(i)?;
    // Names are for display only; a stray non-UTF-8 byte is not worth a session.
    let hostname = std::str::from_utf8(host).map_err(|_| nom::Err::Error(()))?;
    let domain = std::str::from_utf8(domain).map_err(|_| nom::Err::Error(()))?;
    Ok((
        i,
        Capability::Fqdn {
            hostname: hostname.to_owned(),
            domain: domain.to_owned(),
        },
    ))
}

/// Append one capability (code, length, value). Values longer than 255 octets are truncated
/// at an entry boundary by the caller's choice of content; here an over-long value is an error.
pub fn encode_capability(cap: &Capability, out: &mut BytesMut) -> Result<(), CapabilityTooLong> {
    let mut value = BytesMut::new();
    let cap_code = match cap {
        Capability::Multiprotocol { afi, safi } => {
            value.put_u16(*afi);
            value.put_u8(0);
            value.put_u8(*safi);
            code::MULTIPROTOCOL
        }
        Capability::RouteRefresh => code::ROUTE_REFRESH,
        Capability::FourOctetAs(asn) => {
            value.put_u32(asn.0);
            code::FOUR_OCTET_AS
        }
        Capability::GracefulRestart(gr) => {
            let mut head = gr.restart_time & 0x0fff;
            if gr.restart_state {
                head |= 0x8000;
            }
            if gr.notification {
                head |= 0x4000;
            }
            value.put_u16(head);
            for f in &gr.families {
                value.put_u16(f.afi);
                value.put_u8(f.safi);
                value.put_u8(if f.forwarding { 0x80 } else { 0 });
            }
            code::GRACEFUL_RESTART
        }
        Capability::ExtendedNextHop(entries) => {
            for e in entries {
                value.put_u16(e.nlri_afi);
                value.put_u16(e.nlri_safi);
                value.put_u16(e.next_hop_afi);
            }
            code::EXTENDED_NEXT_HOP
        }
        Capability::AddPath(entries) => {
            for e in entries {
                value.put_u16(e.afi);
                value.put_u8(e.safi);
                value.put_u8(e.send_receive);
            }
            code::ADD_PATH
        }
        Capability::Fqdn { hostname, domain } => {
            for name in [hostname, domain] {
                let len = u8::try_from(name.len()).map_err(|_| CapabilityTooLong(code::FQDN))?;
                value.put_u8(len);
                value.put_slice(name.as_bytes());
            }
            code::FQDN
        }
        Capability::Unknown { code, data } => {
            value.put_slice(data);
            *code
        }
    };
    let len = u8::try_from(value.len()).map_err(|_| CapabilityTooLong(cap_code))?;
    out.put_u8(cap_code);
    out.put_u8(len);
    out.put_slice(&value);
    Ok(())
}

/// A capability value does not fit in its one-octet length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("capability {0} value longer than 255 octets")]
pub struct CapabilityTooLong(pub u8);
