//! The OPEN message body (RFC 4271 section 4.2) with Capabilities optional parameters
//! (RFC 5492) and the RFC 9072 extended optional parameters length.
//!
//! Only pure decoding errors are raised here; version, hold time, AS and identifier checks
//! belong to the FSM, which knows the configuration.

use bytes::{BufMut, BytesMut};
use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u32, be_u8};
use nom::sequence::tuple;

use crate::types::RouterId;
use crate::wire::capability::Capability;
use crate::wire::capability_codec::{decode_capabilities, encode_capability};
use crate::wire::codec::EncodeError;
use crate::wire::error::{code, open, NotificationError};
use crate::wire::message::Open;

/// Optional parameter type of Capabilities (RFC 5492).
const PARAM_CAPABILITIES: u8 = 2;
/// Marks the RFC 9072 extended optional parameters length form.
const PARAM_EXTENDED: u8 = 255;

type Parsed<'a, T> = nom::IResult<&'a [u8], T, ()>;

fn unspecific() -> NotificationError {
    NotificationError::new(code::OPEN_MESSAGE, 0)
}

fn fixed_fields(i: &[u8]) -> Parsed<'_, (u8, u16, u16, u32, u8)> {
    tuple((be_u8, be_u16, be_u16, be_u32, be_u8))(i)
}

/// Decode an OPEN body (the bytes after the header).
pub fn decode_open(body: &[u8]) -> Result<Open, NotificationError> {
    let (rest, (version, my_as, hold_time, id, opt_len)) =
        fixed_fields(body).map_err(|_| unspecific())?;
    let mut open = Open {
        version,
        my_as,
        hold_time,
        router_id: RouterId(id.into()),
        capabilities: Vec::new(),
    };
    // RFC 9072 section 2: a length of 255 followed by a parameter type of 255 announces the
    // two-octet form. A classic OPEN cannot start its parameters with type 255 (reserved).
    let extended = opt_len == 255 && rest.first() == Some(&PARAM_EXTENDED);
    let (params, long_lengths) = if extended {
        let (after, ext_len) = tuple((be_u8, be_u16))(rest)
            .map(|(r, (_, len))| (r, len))
            .map_err(|_: nom::Err<()>| unspecific())?;
        (exact(after, usize::from(ext_len))?, true)
    } else {
        (exact(rest, usize::from(opt_len))?, false)
    };
    decode_params(params, long_lengths, &mut open.capabilities)?;
    Ok(open)
}

/// The declared parameters length must match the bytes the message really has.
fn exact(rest: &[u8], declared: usize) -> Result<&[u8], NotificationError> {
    if rest.len() == declared {
        Ok(rest)
    } else {
        Err(unspecific())
    }
}

fn decode_params(
    mut buf: &[u8],
    long_lengths: bool,
    caps: &mut Vec<Capability>,
) -> Result<(), NotificationError> {
    while !buf.is_empty() {
        let header: Parsed<'_, (u8, u16)> = if long_lengths {
            tuple((be_u8, be_u16))(buf)
        } else {
            tuple((be_u8, be_u8))(buf).map(|(r, (t, l))| (r, (t, u16::from(l))))
        };
        let (rest, (param_type, len)) = header.map_err(|_| unspecific())?;
        let (rest, value) = take::<_, _, ()>(usize::from(len))(rest).map_err(|_| unspecific())?;
        if param_type != PARAM_CAPABILITIES {
            // RFC 4271 section 6.2: an optional parameter we do not recognise. No data is
            // prescribed; sending the type lets the peer's operator see which one.
            return Err(NotificationError::with_data(
                code::OPEN_MESSAGE,
                open::UNSUPPORTED_OPTIONAL_PARAMETER,
                vec![param_type],
            ));
        }
        decode_capabilities(value, caps).map_err(|()| unspecific())?;
        buf = rest;
    }
    Ok(())
}

/// Append an OPEN body. Capabilities go into as few Capabilities parameters as fit in 255
/// octets each; if those exceed 255 octets together, the RFC 9072 form is used.
pub fn encode_open(open: &Open, out: &mut BytesMut) -> Result<(), EncodeError> {
    out.put_u8(open.version);
    out.put_u16(open.my_as);
    out.put_u16(open.hold_time);
    out.put_slice(&open.router_id.0.octets());

    // Each parameter's capabilities, already encoded.
    let mut params: Vec<BytesMut> = Vec::new();
    let mut current = BytesMut::new();
    for cap in &open.capabilities {
        let mut one = BytesMut::new();
        encode_capability(cap, &mut one).map_err(|e| EncodeError::CapabilityTooLong(e.0))?;
        if current.len() + one.len() > 255 {
            params.push(std::mem::take(&mut current));
        }
        current.extend_from_slice(&one);
    }
    if !current.is_empty() {
        params.push(current);
    }
    let classic_len: usize = params.iter().map(|p| 2 + p.len()).sum();
    if let Ok(len) = u8::try_from(classic_len) {
        // 255 exactly would be read back as the RFC 9072 form if the first type were 255; it
        // never is, since we only write type 2.
        out.put_u8(len);
        for p in &params {
            out.put_u8(PARAM_CAPABILITIES);
            out.put_u8(p.len() as u8);
            out.put_slice(p);
        }
    } else {
        let ext_len: usize = params.iter().map(|p| 3 + p.len()).sum();
        let ext_len = u16::try_from(ext_len).map_err(|_| EncodeError::TooLong(ext_len))?;
        out.put_u8(255);
        out.put_u8(PARAM_EXTENDED);
        out.put_u16(ext_len);
        for p in &params {
            out.put_u8(PARAM_CAPABILITIES);
            out.put_u16(p.len() as u16);
            out.put_slice(p);
        }
    }
    Ok(())
}
