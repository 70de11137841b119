//! Shared by the fuzz targets: session kinds and the check that whatever decodes re-encodes.
#![allow(dead_code)]

use bytes::BytesMut;
use underroute_bgp::wire::{decode_message, encode_message, Message, SessionContext};
use underroute_bgp::{Asn, Family};

/// A session kind chosen by one input octet: 4-octet or not, iBGP or not, RFC 8950 or not.
pub fn context(selector: u8) -> SessionContext {
    SessionContext {
        four_octet_as: selector & 1 != 0,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        extended_next_hop: selector & 2 != 0,
        local_asn: Asn(65001),
        peer_asn: if selector & 4 != 0 {
            Asn(65001)
        } else {
            Asn(65002)
        },
    }
}

/// A whole message of `msg_type` around `body` (None if too long for the header).
pub fn wrap(msg_type: u8, body: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(19 + body.len()).ok()?;
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&len.to_be_bytes());
    m.push(msg_type);
    m.extend_from_slice(body);
    Some(m)
}

/// Decode; if that worked, routes() and re-encoding must work and re-decode too.
pub fn check(bytes: &[u8], ctx: &SessionContext) {
    let Ok(m) = decode_message(bytes, ctx) else {
        return;
    };
    if let Message::Update(u) = &m {
        let _ = u.routes(ctx);
    }
    let mut out = BytesMut::new();
    if encode_message(&m, ctx, &mut out).is_ok() {
        assert!(
            decode_message(&out, ctx).is_ok(),
            "re-encoded message must decode"
        );
    }
}
