//! The `underroute` node agent as a library: what the binary is made of.
//!
//! - [`testbed`]: throw-away network namespaces with real gobgpd and BIRD peers, used by the
//!   interop tests and by `underroute demo`.

pub mod testbed;
