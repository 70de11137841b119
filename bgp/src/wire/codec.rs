//! Whole messages: [`decode_message`] and [`encode_message`], header included.
//!
//! This is the entry point the session layer calls after [`frame_len`](super::frame_len) has
//! said a message is complete. It never reads beyond the slice it is given.

use bytes::{BufMut, Bytes, BytesMut};
use nom::number::complete::{be_u16, be_u8};
use nom::sequence::tuple;

use crate::wire::context::SessionContext;
use crate::wire::error::{code, header, NotificationError};
use crate::wire::header::{finish_header, parse_header, start_header};
use crate::wire::message::{kind, Message, RouteRefresh, HEADER_LEN, MAX_MESSAGE_LEN};
use crate::wire::open_codec::{decode_open, encode_open};
use crate::wire::update_codec::{decode_update, encode_update};

/// ROUTE-REFRESH Message Error subcode "Invalid Message Length" (RFC 7313 section 5).
pub const ROUTE_REFRESH_INVALID_LENGTH: u8 = 1;

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message would be longer than the 4096 octets RFC 4271 allows.
    #[error("message of {0} octets exceeds the 4096-octet maximum")]
    TooLong(usize),
    /// A capability value does not fit its one-octet length.
    #[error("capability {0} value longer than 255 octets")]
    CapabilityTooLong(u8),
    /// `encode_announce` got prefixes of more than one family.
    #[error("announced prefixes mix address families")]
    MixedFamilies,
    /// The attributes leave no room for even one prefix.
    #[error("path attributes too long to leave room for NLRI")]
    AttributesTooLong,
    /// No next hop, or one this session cannot carry for the family.
    #[error("next hop missing or not encodable for {0} on this session")]
    NextHop(crate::types::Family),
}

/// Decode exactly one whole message (header included).
///
/// Errors are the NOTIFICATION to send. RFC 7606 outcomes that do not end the session come
/// back inside the message (`Update::treat_as_withdraw`, discarded attributes left out).
pub fn decode_message(msg: &[u8], ctx: &SessionContext) -> Result<Message, NotificationError> {
    let hdr = parse_header(msg)?.ok_or_else(|| short(msg))?;
    if hdr.length != msg.len() {
        // The caller framed the slice with `frame_len`; a mismatch means it did not.
        return Err(short(msg));
    }
    let body = msg.get(HEADER_LEN..).unwrap_or_default();
    match hdr.msg_type {
        kind::OPEN => decode_open(body).map(Message::Open),
        kind::UPDATE => decode_update(body, ctx).map(Message::Update),
        kind::NOTIFICATION => {
            let (data, (error_code, subcode)) =
                tuple((be_u8::<_, ()>, be_u8))(body).map_err(|_| short(msg))?;
            Ok(Message::Notification(NotificationError {
                code: error_code,
                subcode,
                data: Bytes::copy_from_slice(data),
            }))
        }
        kind::KEEPALIVE => Ok(Message::Keepalive),
        kind::ROUTE_REFRESH => {
            if body.len() != 4 {
                return Err(NotificationError::with_data(
                    code::ROUTE_REFRESH,
                    ROUTE_REFRESH_INVALID_LENGTH,
                    Bytes::copy_from_slice(msg),
                ));
            }
            let (_, (afi, subtype, safi)) =
                tuple((be_u16::<_, ()>, be_u8, be_u8))(body).map_err(|_| short(msg))?;
            Ok(Message::RouteRefresh(RouteRefresh { afi, subtype, safi }))
        }
        // `parse_header` admits only the five types above.
        other => Err(NotificationError::with_data(
            code::MESSAGE_HEADER,
            header::BAD_MESSAGE_TYPE,
            vec![other],
        )),
    }
}

/// Bad Message Length carrying the length the slice really has.
fn short(msg: &[u8]) -> NotificationError {
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    NotificationError::with_data(
        code::MESSAGE_HEADER,
        header::BAD_MESSAGE_LENGTH,
        len.to_be_bytes().to_vec(),
    )
}

/// Encode one message (header included) onto `out`. Errors, leaving `out` as it was, if the
/// message would exceed 4096 octets.
pub fn encode_message(
    msg: &Message,
    ctx: &SessionContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    let result = encode_body(msg, ctx, start, out);
    let len = out.len() - start;
    if let Err(e) = result {
        out.truncate(start);
        return Err(e);
    }
    if len > MAX_MESSAGE_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLong(len));
    }
    finish_header(out, start);
    Ok(())
}

fn encode_body(
    msg: &Message,
    ctx: &SessionContext,
    start: usize,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let msg_type = match msg {
        Message::Open(_) => kind::OPEN,
        Message::Update(_) => kind::UPDATE,
        Message::Notification(_) => kind::NOTIFICATION,
        Message::Keepalive => kind::KEEPALIVE,
        Message::RouteRefresh(_) => kind::ROUTE_REFRESH,
    };
    let at = start_header(out, msg_type);
    debug_assert_eq!(at, start);
    match msg {
        Message::Open(open) => encode_open(open, out)?,
        Message::Update(update) => encode_update(update, ctx, out),
        Message::Notification(n) => {
            out.put_u8(n.code);
            out.put_u8(n.subcode);
            out.put_slice(&n.data);
        }
        Message::Keepalive => {}
        Message::RouteRefresh(rr) => {
            out.put_u16(rr.afi);
            out.put_u8(rr.subtype);
            out.put_u8(rr.safi);
        }
    }
    Ok(())
}
