//! `underroute-bgp`: the BGP-4 speaker embedded in every underroute node.
//!
//! Layers, from the bytes up:
//! - [`wire`]: messages, capabilities and path attributes; decode with `nom`, encode with
//!   `bytes`; RFC 4271 section 6 and RFC 7606 error handling. Pure.
//! - [`fsm`]: the RFC 4271 section 8 session state machine, sans-IO: events in, actions out.
//! - [`rib`]: Adj-RIB-In, Loc-RIB with the section 9.1 decision process, Adj-RIB-Out, graceful
//!   restart stale marking. Pure.
//! - [`speaker`]: the thin tokio layer (sockets, timers, channels) and the public handle.
#![warn(missing_docs)]

pub mod fsm;
mod peer;
pub mod policy;
pub mod rib;
pub mod socket;
pub mod speaker;
pub mod types;
pub mod wire;

pub use speaker::{PeerConfig, Speaker, SpeakerConfig};
pub use types::{Asn, Family, RouterId};
