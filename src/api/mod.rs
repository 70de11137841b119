//! The GoBGP v3 gRPC API, served from the speaker's snapshots.
//!
//! Owns: the generated `apipb` types, the conversion from speaker snapshots to them
//! ([`convert`]) and the server ([`server`]). It never changes the speaker except through the
//! three mutations (enable, disable, reset), and those only when the operator allowed them.

pub mod convert;
pub mod server;

/// The generated GoBGP API types and gRPC stubs (package `apipb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod apipb {
    tonic::include_proto!("apipb");
}

/// The compiled descriptor set of `apipb`, for reflection (the CLI's JSON output).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/apipb_descriptor.bin"));
