//! Helpers shared by the kernel tests that need the product's own types (the testbed crate
//! knows nothing of the agent crate).

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod programmer;
