//! Robustness: a million random and mutated-valid inputs through `frame_len` and
//! `decode_message` on several session kinds must never panic (RFC 4271 section 6 expects a
//! NOTIFICATION, never a crash). Successful decodes are also pushed through `routes()` and
//! re-encoded, since those run on peer-controlled data too.

mod wire_common;

use bytes::BytesMut;
use ipnet::IpNet;
use underroute_bgp::wire::*;
use wire_common::*;

/// xorshift64*: deterministic, dependency-free, good enough to shake a parser.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid messages to mutate: a mix of every type and attribute.
fn seeds() -> Vec<Vec<u8>> {
    let mut s = vec![
        update_msg(
            "10 0a09",
            "40 01 01 00 40 02 0a 02 02 0000fde9 0000fdea 40 03 04 0a000001 80 04 04 00000064
             40 05 04 000000c8 40 06 00 c0 07 08 0000fde9 0a000001 c0 08 08 fde90001 ffffff01
             80 09 04 0a000002 80 0a 08 0a000003 0a000004 c0 20 0c 0000fde9 00000001 00000002
             c0 63 02 abcd",
            "18 0a0100 20 0a000005 00",
        ),
        update_msg(
            "",
            "40010100 4002 06 0201 0000fdea 80 0e 2e 0002 01 20 20010db8000000000000000000000001
             fe800000000000000000000000000001 00 40 20010db800010000 80 0f 08 0002 01 20 20010db8",
            "",
        ),
        update_msg(
            "",
            "40 01 01 01 40 02 06 02 02 fdea 5ba0 40 03 04 0a000001 c0 07 06 5ba0 0a000009
             c0 11 0a 02 02 0000fdea 00030d41 c0 12 08 00030d41 0a000009",
            "18 0a0200",
        ),
        msg(
            1,
            &h("04 fde9 005a 0a000001 30 022e 01040001 0001 01040002 0001 0200 41040000fde9
                400a 8078 0001 0180 0002 0100 0506 0001 0001 0002 4504 0001 0103 4907 05 6e6f646531 00"),
        ),
        msg(3, &h("0602 0462796521")),
        msg(4, &[]),
        msg(5, &h("0002 00 01")),
    ];
    // A full UPDATE of /32s, the shape the receive path sees most.
    let prefixes: Vec<IpNet> = (0..900u32)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new((0x0a00_0000 + i).into(), 32).unwrap()))
        .collect();
    let attrs = PathAttrs {
        next_hop: Some("10.0.0.1".parse().unwrap()),
        communities: vec![1, 2, 3],
        ..PathAttrs::default()
    };
    let mut out = BytesMut::new();
    encode_announce(&ebgp4(), &attrs, &prefixes, &mut out).unwrap();
    let first = frame_len(&out).unwrap().unwrap();
    s.push(out[..first].to_vec());
    s
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 | 1 => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            3 => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
            4 => {
                if m.len() > 19 {
                    let i = 19 + rng.below(m.len() - 19);
                    m.truncate(i);
                }
            }
            _ => {
                // Length-like fields are what parsers get wrong: hit one with an extreme value.
                let i = rng.below(m.len());
                m[i] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)];
            }
        }
    }
    // Usually keep the header consistent so the body decoders are reached.
    if rng.below(8) != 0 && m.len() >= 19 && m.len() <= 4096 {
        m[..16].fill(0xff);
        let len = (m.len() as u16).to_be_bytes();
        m[16..18].copy_from_slice(&len);
    }
    m
}

fn exercise(input: &[u8], ctx: &SessionContext) {
    let Ok(Some(len)) = frame_len(input) else {
        return;
    };
    let Some(whole) = input.get(..len) else {
        return;
    };
    if let Ok(m) = decode_message(whole, ctx) {
        if let Message::Update(u) = &m {
            let _ = u.routes(ctx);
        }
        let mut out = BytesMut::new();
        if encode_message(&m, ctx, &mut out).is_ok() {
            // What we send must itself decode: a re-advertised message never trips the peer.
            let again = decode_message(&out, ctx);
            assert!(
                again.is_ok(),
                "re-encoded message fails: {again:?}\n{}",
                hex::encode(&out)
            );
        }
    }
}

#[test]
fn a_million_random_and_mutated_inputs_never_panic() {
    // RFC 4271 6 / RFC 7606: every malformed input maps to an outcome, never a crash.
    let contexts = [
        SessionContext::default(),
        ibgp4(),
        ebgp4(),
        ebgp2(),
        SessionContext {
            extended_next_hop: true,
            ..ibgp4()
        },
    ];
    let seeds = seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let total = 1_000_000;
    for i in 0..total {
        let input = if i % 4 == 0 {
            // Raw noise, sometimes behind a valid marker so the header check passes.
            let len = rng.below(64);
            let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if rng.below(2) == 0 && v.len() >= 19 {
                v[..16].fill(0xff);
                let len = (v.len() as u16).to_be_bytes();
                v[16..18].copy_from_slice(&len);
                v[18] = 1 + rng.below(5) as u8;
            }
            v
        } else {
            let seed = &seeds[rng.below(seeds.len())];
            mutate(&mut rng, seed)
        };
        exercise(&input, &contexts[i % contexts.len()]);
    }
}
