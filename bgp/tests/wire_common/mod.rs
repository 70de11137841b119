//! Helpers shared by the wire tests: building messages and contexts by hand.
#![allow(dead_code)]

use underroute_bgp::wire::{self, Message, NotificationError, SessionContext, Update};
use underroute_bgp::{Asn, Family};

/// Parse hex, ignoring whitespace.
pub fn h(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).expect("test hex")
}

/// A whole message of `msg_type` around `body`.
pub fn msg(msg_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(msg_type);
    m.extend_from_slice(body);
    m
}

/// An UPDATE from its three fields (hex).
pub fn update_msg(withdrawn: &str, attrs: &str, nlri: &str) -> Vec<u8> {
    let (w, a, n) = (h(withdrawn), h(attrs), h(nlri));
    let mut body = Vec::new();
    body.extend_from_slice(&(w.len() as u16).to_be_bytes());
    body.extend_from_slice(&w);
    body.extend_from_slice(&(a.len() as u16).to_be_bytes());
    body.extend_from_slice(&a);
    body.extend_from_slice(&n);
    msg(2, &body)
}

/// An iBGP session between 4-octet speakers in AS 65001, IPv4 and IPv6.
pub fn ibgp4() -> SessionContext {
    SessionContext {
        four_octet_as: true,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        extended_next_hop: false,
        local_asn: Asn(65001),
        peer_asn: Asn(65001),
    }
}

/// An eBGP session between 4-octet speakers (65001 -> 65002).
pub fn ebgp4() -> SessionContext {
    SessionContext {
        peer_asn: Asn(65002),
        ..ibgp4()
    }
}

/// An eBGP session with a 2-octet peer.
pub fn ebgp2() -> SessionContext {
    SessionContext {
        four_octet_as: false,
        ..ebgp4()
    }
}

/// Decode an UPDATE, failing the test if it is not one.
pub fn decode_update(bytes: &[u8], ctx: &SessionContext) -> Result<Update, NotificationError> {
    match wire::decode_message(bytes, ctx)? {
        Message::Update(u) => Ok(u),
        other => panic!("expected an UPDATE, got {other:?}"),
    }
}

/// Encode one message to a Vec.
pub fn encode(m: &Message, ctx: &SessionContext) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    wire::encode_message(m, ctx, &mut out).expect("encodes");
    out.to_vec()
}

/// ORIGIN IGP and AS_PATH [65002] (4-octet) as attribute hex.
pub const ORIGIN_ASPATH4: &str = "40010100 4002 06 0201 0000fdea";
/// ORIGIN IGP and AS_PATH [65002] (2-octet) as attribute hex.
pub const ORIGIN_ASPATH2: &str = "40010100 4002 04 0201 fdea";
/// NEXT_HOP 10.0.0.1.
pub const NEXT_HOP: &str = "400304 0a000001";
