//! The BGP-4 wire format: messages, capabilities, path attributes and NLRI.
//!
//! Decoding uses `nom` over byte slices and never trusts a length field for an allocation;
//! encoding writes into `bytes::BytesMut`. Both take a [`SessionContext`] that carries what the
//! session negotiated (4-octet AS, extended next hop, families), because the same bytes mean
//! different things on different sessions.
//!
//! This module owns the mapping from malformed input to RFC 4271 section 6 NOTIFICATIONs and the
//! RFC 7606 treat-as-withdraw / attribute-discard outcomes. It never does I/O.

pub mod attribute;
pub mod capability;
pub mod context;
pub mod error;
pub mod message;

pub use attribute::*;
pub use capability::*;
pub use context::SessionContext;
pub use error::NotificationError;
pub use message::*;
