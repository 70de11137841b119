//! The UPDATE message body (RFC 4271 section 4.3) and its message-level error rules
//! (RFC 4271 section 6.3, RFC 7606 sections 3 to 5).
//!
//! Per-attribute verdicts come from `attribute_decode`; this file frames the three fields,
//! handles duplicates and missing mandatory attributes, and turns verdicts into either a
//! session-ending error or `Update::treat_as_withdraw`.

use bytes::{BufMut, BytesMut};
use nom::number::complete::be_u16;

use crate::wire::attribute::{flags, type_code as tc, PathAttribute};
use crate::wire::attribute_decode::{decode_attribute, RawAttr, Verdict};
use crate::wire::attribute_encode::encode_attribute;
use crate::wire::context::SessionContext;
use crate::wire::error::{code, update, NotificationError};
use crate::wire::message::Update;
use crate::wire::nlri;

fn malformed_list() -> NotificationError {
    NotificationError::new(code::UPDATE_MESSAGE, update::MALFORMED_ATTRIBUTE_LIST)
}

fn invalid_network() -> NotificationError {
    NotificationError::new(code::UPDATE_MESSAGE, update::INVALID_NETWORK_FIELD)
}

/// Split a length-prefixed field off the front of `buf`.
fn field(buf: &[u8]) -> Result<(&[u8], &[u8]), NotificationError> {
    let (rest, len) = be_u16::<_, ()>(buf).map_err(|_| malformed_list())?;
    // RFC 4271 section 6.3: lengths that overrun the message are a Malformed Attribute List.
    let (value, rest) = rest
        .split_at_checked(usize::from(len))
        .ok_or_else(malformed_list)?;
    Ok((value, rest))
}

/// Decode an UPDATE body (the bytes after the header).
pub fn decode_update(body: &[u8], ctx: &SessionContext) -> Result<Update, NotificationError> {
    let (withdrawn_bytes, rest) = field(body)?;
    let (attr_bytes, nlri_bytes) = field(rest)?;

    let mut msg = Update::default();
    // RFC 7606 section 5.3: NLRI that cannot be parsed leave no safe way to go on.
    nlri::decode_v4(withdrawn_bytes, &mut msg.withdrawn).map_err(|_| invalid_network())?;
    nlri::decode_v4(nlri_bytes, &mut msg.nlri).map_err(|_| invalid_network())?;

    let mut withdraw: Option<NotificationError> = None;
    let mut seen = [false; 256];
    let mut buf = attr_bytes;
    while !buf.is_empty() {
        let Some((attr, rest)) = frame_attribute(buf) else {
            // RFC 7606 section 4: an attribute overrunning the Total Path Attribute Length, or
            // fewer octets left than an attribute header. The NLRI field is still located by
            // the total length, so treat-as-withdraw applies, unless the broken attribute is
            // MP_(UN)REACH_NLRI, whose prefixes we then cannot know (section 5.3).
            let type_code = buf.get(1).copied().unwrap_or(0);
            if type_code == tc::MP_REACH_NLRI || type_code == tc::MP_UNREACH_NLRI {
                return Err(malformed_list());
            }
            withdraw.get_or_insert_with(|| {
                NotificationError::new(code::UPDATE_MESSAGE, update::ATTRIBUTE_LENGTH_ERROR)
            });
            break;
        };
        buf = rest;
        let slot = &mut seen[usize::from(attr.type_code)];
        if *slot {
            // RFC 7606 section 3 (g): repeated MP attributes end the session; any other
            // repeat is dropped and the first occurrence wins.
            if attr.type_code == tc::MP_REACH_NLRI || attr.type_code == tc::MP_UNREACH_NLRI {
                return Err(malformed_list());
            }
            continue;
        }
        *slot = true;
        match decode_attribute(attr, ctx) {
            Verdict::Keep(a) => msg.attributes.push(a),
            Verdict::Discard => {
                tracing::debug!(type_code = attr.type_code, "path attribute discarded");
            }
            Verdict::TreatAsWithdraw(e) => {
                withdraw.get_or_insert(e);
            }
            Verdict::Reset(e) => return Err(e),
        }
    }

    if withdraw.is_none() {
        withdraw = missing_mandatory(&msg, &seen);
    }
    msg.treat_as_withdraw = withdraw;
    Ok(msg)
}

/// Split one attribute off the front; `None` if its header or value overruns `buf`.
fn frame_attribute(buf: &[u8]) -> Option<(RawAttr<'_>, &[u8])> {
    let (&attr_flags, rest) = buf.split_first()?;
    let (&type_code, rest) = rest.split_first()?;
    let (len, rest) = if attr_flags & flags::EXTENDED_LENGTH != 0 {
        let (rest, len) = be_u16::<_, ()>(rest).ok()?;
        (usize::from(len), rest)
    } else {
        let (&len, rest) = rest.split_first()?;
        (usize::from(len), rest)
    };
    let (value, rest) = rest.split_at_checked(len)?;
    let whole = buf.get(..buf.len() - rest.len())?;
    Some((
        RawAttr {
            flags: attr_flags,
            type_code,
            value,
            whole,
        },
        rest,
    ))
}

/// RFC 4271 section 6.3 with RFC 7606 section 3 (d): ORIGIN and AS_PATH whenever routes are
/// announced, NEXT_HOP when the classic NLRI field is not empty (RFC 4760 made it optional for
/// MP_REACH-only UPDATEs). The data is the missing type code.
///
/// LOCAL_PREF is not demanded on iBGP: RFC 4271 obliges senders but defines no error for its
/// absence, and the decision process already substitutes a default.
fn missing_mandatory(msg: &Update, seen: &[bool; 256]) -> Option<NotificationError> {
    let mp_nlri = msg
        .attributes
        .iter()
        .any(|a| matches!(a, PathAttribute::MpReach(r) if !r.nlri.is_empty()));
    if msg.nlri.is_empty() && !mp_nlri {
        return None;
    }
    let present = |t: u8| seen.get(usize::from(t)).copied().unwrap_or(false);
    let mut required = vec![tc::ORIGIN, tc::AS_PATH];
    if !msg.nlri.is_empty() {
        required.push(tc::NEXT_HOP);
    }
    required.into_iter().find(|&t| !present(t)).map(|t| {
        NotificationError::with_data(
            code::UPDATE_MESSAGE,
            update::MISSING_WELL_KNOWN_ATTRIBUTE,
            vec![t],
        )
    })
}

/// Append an UPDATE body. The caller checks the total size.
pub fn encode_update(msg: &Update, ctx: &SessionContext, out: &mut BytesMut) {
    let withdrawn_at = out.len();
    out.put_u16(0);
    for p in &msg.withdrawn {
        nlri::encode_v4(p, out);
    }
    patch_len(out, withdrawn_at);

    let attrs_at = out.len();
    out.put_u16(0);
    let mut scratch = BytesMut::new();
    for a in &msg.attributes {
        encode_attribute(a, ctx, &mut scratch, out);
    }
    patch_len(out, attrs_at);

    for p in &msg.nlri {
        nlri::encode_v4(p, out);
    }
}

/// Write the length of the field that follows the two-octet slot at `at`.
pub(crate) fn patch_len(out: &mut BytesMut, at: usize) {
    let len = out.len().saturating_sub(at + 2);
    let bytes = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(slot) = out.get_mut(at..at + 2) {
        slot.copy_from_slice(&bytes);
    }
}
