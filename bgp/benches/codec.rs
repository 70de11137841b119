//! Codec throughput on the receive path's common case: an UPDATE full of IPv4 /32 NLRI.
//!
//! Run: `cargo bench -p underroute-bgp --bench codec`. Throughput is in prefixes (elements).

use std::hint::black_box;
use std::net::Ipv4Addr;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net};
use underroute_bgp::wire::{
    decode_message, encode_announce, frame_len, AsPath, AsSegment, Message, PathAttrs,
    SessionContext,
};
use underroute_bgp::{Asn, Family};

fn ctx() -> SessionContext {
    SessionContext {
        four_octet_as: true,
        families: vec![Family::Ipv4Unicast],
        extended_next_hop: false,
        local_asn: Asn(65001),
        peer_asn: Asn(65001),
    }
}

fn attrs() -> PathAttrs {
    PathAttrs {
        as_path: AsPath {
            segments: vec![AsSegment::Sequence(vec![Asn(65002), Asn(65003)])],
        },
        next_hop: Some("10.0.0.1".parse().unwrap()),
        local_pref: Some(100),
        communities: vec![0xfde9_0001],
        ..PathAttrs::default()
    }
}

fn codec(c: &mut Criterion) {
    let ctx = ctx();
    let attrs = attrs();
    let all: Vec<IpNet> = (0..2000u32)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()))
        .collect();
    // One message's worth: as many /32 as fit in 4096 octets with these attributes.
    let mut buf = BytesMut::new();
    encode_announce(&ctx, &attrs, &all, &mut buf).unwrap();
    let len = frame_len(&buf).unwrap().unwrap();
    let one = buf[..len].to_vec();
    let Ok(Message::Update(u)) = decode_message(&one, &ctx) else {
        panic!("bench message does not decode")
    };
    let n = u.nlri.len();
    let prefixes = &all[..n];
    eprintln!("UPDATE of {len} octets carrying {n} /32 prefixes");

    let mut g = c.benchmark_group("update_ipv4_slash32");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("decode", |b| {
        b.iter(|| decode_message(black_box(&one), &ctx).unwrap())
    });
    g.bench_function("decode_and_routes", |b| {
        b.iter(|| match decode_message(black_box(&one), &ctx).unwrap() {
            Message::Update(u) => u.routes(&ctx),
            _ => unreachable!(),
        })
    });
    let mut out = BytesMut::with_capacity(8192);
    g.bench_function("encode_announce", |b| {
        b.iter(|| {
            out.clear();
            encode_announce(&ctx, &attrs, black_box(prefixes), &mut out).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
