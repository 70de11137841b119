//! Regression guards for what docs/benchmarks.md publishes about the RIB, as counted
//! assertions (never timings): bytes per route, counted by this binary's own global allocator,
//! and the work one route change costs in a full table (best-path changes, Adj-RIB-Out changes,
//! UPDATE messages encoded, bytes allocated), which must not grow with the table.
//!
//! One `#[test]` only: the allocator counts the whole process, so nothing may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net};
use underroute_bgp::policy::ImportPolicy;
use underroute_bgp::rib::{PeerInfo, Rib, RibConfig};
use underroute_bgp::wire::{
    encode_announce, encode_withdraw, Announcement, PathAttrs, RouteUpdate, SessionContext,
};
use underroute_bgp::{Asn, Family, RouterId};

/// Counts live heap bytes, their peak, and bytes ever allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static TOTAL: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            added(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            added(new_size);
        }
        p
    }
}

fn added(n: usize) {
    TOTAL.fetch_add(n, Ordering::Relaxed);
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const LOCAL_AS: u32 = 64512;
const SOURCE: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 2);
const EBGP_PEER: Ipv4Addr = Ipv4Addr::new(10, 255, 1, 2);

fn rib() -> Rib {
    Rib::new(RibConfig {
        local_asn: Asn(LOCAL_AS),
        router_id: RouterId(Ipv4Addr::new(10, 255, 0, 1)),
        cluster_id: None,
    })
}

fn peer(addr: Ipv4Addr, asn: u32) -> PeerInfo {
    PeerInfo {
        address: IpAddr::V4(addr),
        asn: Asn(asn),
        router_id: RouterId(addr),
        local_address: Some(IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1))),
        route_reflector_client: false,
        import: ImportPolicy::AcceptAll,
    }
}

fn host(i: u32) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).expect("/32"))
}

fn attrs(med: Option<u32>) -> PathAttrs {
    PathAttrs {
        next_hop: Some(IpAddr::V4(SOURCE)),
        med,
        ..PathAttrs::default()
    }
}

fn announce(prefixes: Vec<IpNet>, med: Option<u32>) -> RouteUpdate {
    RouteUpdate {
        announced: vec![Announcement {
            attrs: attrs(med),
            prefixes,
        }],
        ..RouteUpdate::default()
    }
}

/// `n` host routes from one iBGP peer in 800-prefix UPDATEs, one attribute set: the lab's
/// shape. Each UPDATE is made just before it is applied, so the input does not count.
fn fill(r: &mut Rib, n: u32) {
    for first in (0..n).step_by(800) {
        let o = r.apply(
            IpAddr::V4(SOURCE),
            announce((first..n.min(first + 800)).map(host).collect(), None),
        );
        assert_eq!(o.accepted, o.changes.len());
    }
    assert_eq!(r.len(), n as usize);
}

/// Heap bytes a RIB of `n` routes holds, per route, and the peak per route while it grew.
fn bytes_per_route(n: u32) -> (f64, f64) {
    let live0 = LIVE.load(Ordering::Relaxed);
    PEAK.store(live0, Ordering::Relaxed);
    let mut r = rib();
    r.peer_up(peer(SOURCE, LOCAL_AS));
    fill(&mut r, n);
    let live = LIVE.load(Ordering::Relaxed).saturating_sub(live0);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(live0);
    drop(r);
    (live as f64 / f64::from(n), peak as f64 / f64::from(n))
}

/// What one changed route costs in a table of `n`: (best-path changes, Adj-RIB-Out changes
/// toward an eBGP peer, UPDATEs encoded, bytes allocated), for a changed MED and then a
/// withdrawal.
fn one_change(n: u32) -> [(usize, usize, usize, usize); 2] {
    let mut r = rib();
    r.peer_up(peer(SOURCE, LOCAL_AS));
    r.peer_up(peer(EBGP_PEER, 65010));
    fill(&mut r, n);
    assert_eq!(r.full_table(IpAddr::V4(EBGP_PEER)).len(), n as usize);
    let ctx = SessionContext {
        four_octet_as: true,
        families: vec![Family::Ipv4Unicast],
        extended_next_hop: false,
        local_asn: Asn(LOCAL_AS),
        peer_asn: Asn(65010),
    };
    let changed = host(n / 2);
    let mut out = [(0, 0, 0, 0); 2];
    for (i, update) in [
        announce(vec![changed], Some(7)),
        RouteUpdate {
            withdrawn: vec![changed],
            ..RouteUpdate::default()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let total0 = TOTAL.load(Ordering::Relaxed);
        let applied = r.apply(IpAddr::V4(SOURCE), update);
        let to_peer = r.advertise(IpAddr::V4(EBGP_PEER), &applied.changes);
        let mut wire = BytesMut::new();
        let mut messages = 0;
        for c in &to_peer {
            messages += match &c.attrs {
                Some(a) => encode_announce(&ctx, a, &[c.prefix], &mut wire),
                None => encode_withdraw(&ctx, &[c.prefix], &mut wire),
            }
            .expect("encodes");
        }
        let allocated = TOTAL.load(Ordering::Relaxed) - total0;
        out[i] = (applied.changes.len(), to_peer.len(), messages, allocated);
    }
    out
}

#[test]
fn rib_memory_per_route_and_work_per_change_stay_within_the_published_figures() {
    // docs/benchmarks.md: 39 bytes per route at 100k, 55 at 500k (RSS of the RIB alone), which
    // is what puts the whole speaker under BIRD's memory. The heap bytes (32.8 and 52.4 when
    // this guard was written) must stay within those figures; the peak while the tables grow
    // (the old storage's doubling spike was 325 bytes a route, now 34 and 53) is bounded too.
    for (n, live_max, peak_max) in [(100_000, 39.0, 45.0), (500_000, 55.0, 65.0)] {
        let (live, peak) = bytes_per_route(n);
        eprintln!("rib_regression: {n} routes: {live:.1} B/route live, {peak:.1} B/route peak");
        assert!(
            live <= live_max && peak <= peak_max,
            "{n} routes: {live:.1} B/route (at most {live_max}), peak {peak:.1} (at most {peak_max})"
        );
    }

    // Cost follows change: one route of 1k or of 100k changes the same: one best path, one
    // Adj-RIB-Out entry, one UPDATE, and the same few allocations.
    let small = one_change(1_000);
    let big = one_change(100_000);
    eprintln!("rib_regression: one change in 1k: {small:?}, in 100k: {big:?}");
    for (what, s, b) in [
        ("changed MED", small[0], big[0]),
        ("withdrawal", small[1], big[1]),
    ] {
        assert_eq!((b.0, b.1, b.2), (1, 1, 1), "{what} in 100k: {b:?}");
        assert_eq!((s.0, s.1, s.2), (1, 1, 1), "{what} in 1k: {s:?}");
        assert!(
            b.3 <= 2 * s.3 + 4096,
            "{what}: {} bytes allocated in 100k routes against {} in 1k",
            b.3,
            s.3
        );
    }
}
