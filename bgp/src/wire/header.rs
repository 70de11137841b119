//! The 19-octet message header (RFC 4271 section 4.1) and the stream framing built on it.
//!
//! This file owns the section 6.1 checks (marker, length, type). It never looks past the header,
//! so a caller can size its read buffer before the body has arrived.

use nom::bytes::complete::take;
use nom::number::complete::{be_u16, be_u8};

use crate::wire::error::{code, header, NotificationError};
use crate::wire::message::{kind, HEADER_LEN, MAX_MESSAGE_LEN};

/// The smallest legal length of each message type (RFC 4271 section 4, RFC 2918 section 3).
fn min_len(msg_type: u8) -> usize {
    match msg_type {
        // Version, AS, hold time, identifier, optional parameters length.
        kind::OPEN => HEADER_LEN + 10,
        // Withdrawn routes length and total path attribute length.
        kind::UPDATE => HEADER_LEN + 4,
        // Error code and subcode.
        kind::NOTIFICATION => HEADER_LEN + 2,
        // AFI, reserved/subtype, SAFI.
        kind::ROUTE_REFRESH => HEADER_LEN + 4,
        _ => HEADER_LEN,
    }
}

/// A header whose marker, length and type passed RFC 4271 section 6.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total message length, header included.
    pub length: usize,
    /// Message type code.
    pub msg_type: u8,
}

type Parsed<'a, T> = nom::IResult<&'a [u8], T, ()>;

fn raw_header(buf: &[u8]) -> Parsed<'_, (&[u8], u16, u8)> {
    let (rest, marker) = take(16usize)(buf)?;
    let (rest, length) = be_u16(rest)?;
    let (rest, msg_type) = be_u8(rest)?;
    Ok((rest, (marker, length, msg_type)))
}

/// Parse and validate the header at the start of `buf`; `None` if fewer than 19 octets are in.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, NotificationError> {
    let Ok((_, (marker, length, msg_type))) = raw_header(buf) else {
        return Ok(None);
    };
    if marker.iter().any(|&b| b != 0xff) {
        return Err(NotificationError::new(
            code::MESSAGE_HEADER,
            header::CONNECTION_NOT_SYNCHRONIZED,
        ));
    }
    let len = usize::from(length);
    // Section 6.1 wants the type checked too, but a bad length makes the type octet untrustworthy
    // framing-wise, so length comes first, as most implementations do.
    let bad_length = || {
        NotificationError::with_data(
            code::MESSAGE_HEADER,
            header::BAD_MESSAGE_LENGTH,
            length.to_be_bytes().to_vec(),
        )
    };
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_length());
    }
    if !(kind::OPEN..=kind::ROUTE_REFRESH).contains(&msg_type) {
        return Err(NotificationError::with_data(
            code::MESSAGE_HEADER,
            header::BAD_MESSAGE_TYPE,
            vec![msg_type],
        ));
    }
    if len < min_len(msg_type) || (msg_type == kind::KEEPALIVE && len != HEADER_LEN) {
        return Err(bad_length());
    }
    Ok(Some(Header {
        length: len,
        msg_type,
    }))
}

/// Length of the next complete message in `buf` once its header is in and valid; `None` if
/// fewer than 19 bytes.
///
/// Validates the marker (all ones, else 1/1 Connection Not Synchronized), the length (19..=4096
/// and the per-type minimums of RFC 4271 section 6.1, else 1/2 Bad Message Length with the
/// length field as data) and the type (1..=5, else 1/3 Bad Message Type with the type octet as
/// data). The returned length may exceed `buf.len()`: read until that many bytes are in.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, NotificationError> {
    Ok(parse_header(buf)?.map(|h| h.length))
}

/// Write a header with a zero length placeholder; [`finish_header`] fills it in.
pub(crate) fn start_header(out: &mut bytes::BytesMut, msg_type: u8) -> usize {
    use bytes::BufMut;
    let start = out.len();
    out.put_slice(&[0xff; 16]);
    out.put_u16(0);
    out.put_u8(msg_type);
    start
}

/// Fill in the length of the message that starts at `start`; the caller checked the size.
pub(crate) fn finish_header(out: &mut bytes::BytesMut, start: usize) {
    let len = out.len() - start;
    // Callers bound `len` by MAX_MESSAGE_LEN before calling, so the cast cannot truncate.
    let bytes = (len as u16).to_be_bytes();
    if let Some(field) = out.get_mut(start + 16..start + 18) {
        field.copy_from_slice(&bytes);
    }
}
