//! Path attributes: the input is the Path Attributes field of an UPDATE that announces one
//! prefix, so every byte lands in the attribute decoders and RFC 7606 verdicts.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, attrs)) = data.split_first() else {
        return;
    };
    let Ok(attr_len) = u16::try_from(attrs.len()) else {
        return;
    };
    let mut body = vec![0, 0];
    body.extend_from_slice(&attr_len.to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(&[24, 10, 1, 0]);
    if let Some(msg) = common::wrap(2, &body) {
        common::check(&msg, &common::context(selector));
    }
});
