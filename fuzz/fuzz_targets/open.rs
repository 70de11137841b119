//! OPEN bodies: fixed fields, optional parameters (classic and RFC 9072), capabilities.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(msg) = common::wrap(1, data) {
        common::check(&msg, &common::context(0));
    }
});
