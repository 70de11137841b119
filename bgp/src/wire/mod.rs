//! The BGP-4 wire format: messages, capabilities, path attributes and NLRI.
//!
//! Decoding uses `nom` over byte slices and never trusts a length field for an allocation;
//! encoding writes into `bytes::BytesMut`. Both take a [`SessionContext`] that carries what the
//! session negotiated (4-octet AS, extended next hop, families), because the same bytes mean
//! different things on different sessions.
//!
//! This module owns the mapping from malformed input to RFC 4271 section 6 NOTIFICATIONs and the
//! RFC 7606 treat-as-withdraw / attribute-discard outcomes. It never does I/O.
//!
//! Entry points: [`frame_len`] to cut a byte stream into messages, [`decode_message`] and
//! [`encode_message`] for one message, [`Update::routes`] for the RIB's view of an UPDATE,
//! [`encode_announce`] / [`encode_withdraw`] to build UPDATEs from the RIB's form, and
//! [`SessionContext::negotiate`] to derive the context from two OPENs.

mod announce;
pub mod attribute;
mod attribute_decode;
mod attribute_encode;
pub mod capability;
mod capability_codec;
mod codec;
pub mod context;
pub mod error;
mod header;
pub mod message;
mod negotiate;
pub mod nlri;
mod open_codec;
mod routes;
mod update_codec;

pub use announce::{encode_announce, encode_withdraw};
pub use attribute::*;
pub use capability::*;
pub use codec::{decode_message, encode_message, EncodeError, ROUTE_REFRESH_INVALID_LENGTH};
pub use context::SessionContext;
pub use error::NotificationError;
pub use header::{frame_len, parse_header, Header};
pub use message::*;
