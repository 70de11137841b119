//! Any byte stream: frame it with `frame_len` and decode each message on four session kinds.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use underroute_bgp::wire::frame_len;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut stream)) = data.split_first() else {
        return;
    };
    let ctx = common::context(selector);
    while let Ok(Some(len)) = frame_len(stream) {
        let Some((msg, rest)) = stream.split_at_checked(len) else {
            return;
        };
        common::check(msg, &ctx);
        stream = rest;
    }
});
