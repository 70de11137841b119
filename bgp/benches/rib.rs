//! RIB throughput: how fast received UPDATEs become Loc-RIB routes, and how fast a table is
//! exported to a new peer.
//!
//! `cargo bench -p underroute-bgp --bench rib`; criterion reports routes/s as "elem/s".

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net};
use underroute_bgp::policy::ImportPolicy;
use underroute_bgp::rib::{PeerInfo, Rib, RibConfig};
use underroute_bgp::wire::attribute::{AsPath, AsSegment, PathAttrs};
use underroute_bgp::wire::message::{Announcement, RouteUpdate};
use underroute_bgp::{Asn, RouterId};

/// Prefixes per UPDATE: about what fits in 4096 octets of /32 NLRI.
const PER_UPDATE: usize = 800;

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const EBGP_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3));

fn rib() -> Rib {
    let mut rib = Rib::new(RibConfig {
        local_asn: Asn(65000),
        router_id: RouterId(Ipv4Addr::new(192, 0, 2, 1)),
        cluster_id: None,
    });
    for (address, asn) in [(PEER, 65000), (EBGP_PEER, 64512)] {
        rib.peer_up(PeerInfo {
            address,
            asn: Asn(asn),
            router_id: RouterId(Ipv4Addr::new(192, 0, 2, asn as u8)),
            local_address: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            route_reflector_client: false,
            import: ImportPolicy::AcceptAll,
        });
    }
    rib
}

/// `n` host routes from one iBGP peer, in UPDATE-sized batches with one attribute set.
fn updates(n: u32) -> Vec<RouteUpdate> {
    let attrs = PathAttrs {
        as_path: AsPath {
            segments: vec![AsSegment::Sequence(vec![Asn(64600), Asn(64601)])],
        },
        next_hop: Some(PEER),
        local_pref: Some(100),
        communities: vec![0xFDE8_0001],
        ..PathAttrs::default()
    };
    let prefixes: Vec<IpNet> = (0..n)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0A00_0000 + i), 32).unwrap()))
        .collect();
    prefixes
        .chunks(PER_UPDATE)
        .map(|chunk| RouteUpdate {
            announced: vec![Announcement {
                attrs: attrs.clone(),
                prefixes: chunk.to_vec(),
            }],
            ..RouteUpdate::default()
        })
        .collect()
}

fn apply_all(rib: &mut Rib, updates: Vec<RouteUpdate>) -> usize {
    let mut changes = 0;
    for u in updates {
        changes += rib.apply(PEER, u).changes.len();
    }
    changes
}

fn bench_apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("rib");
    for n in [100_000u32, 500_000] {
        let batch = updates(n);
        group.throughput(Throughput::Elements(u64::from(n)));
        group.sample_size(10);
        group.bench_function(format!("apply_{n}_host_routes"), |b| {
            b.iter_batched(
                || (rib(), batch.clone()),
                |(mut rib, batch)| {
                    black_box(apply_all(&mut rib, batch));
                    rib
                },
                BatchSize::LargeInput,
            )
        });
    }
    let n = 100_000u32;
    let batch = updates(n);
    group.throughput(Throughput::Elements(u64::from(n)));
    group.bench_function("full_table_100000_to_ebgp_peer", |b| {
        b.iter_batched(
            || {
                let mut rib = rib();
                apply_all(&mut rib, batch.clone());
                rib
            },
            |mut rib| {
                black_box(rib.full_table(EBGP_PEER).len());
                rib
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
