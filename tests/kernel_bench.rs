//! Install/remove of K routes by the kernel programmer, as the lab's kernel_floor.sh does it: K
//! /32s from 100.64.0.0 via 10.255.0.2 in a fresh namespace, then the same K in main plus two
//! per-address tables (3K routes). The work is checked by count, in CI: every route written
//! once, none refused, all gone after the delete, and one changed or removed route in the
//! full table costs one route write per table. The times are printed, never asserted: they
//! are figures for benches/kernel_bench.sh and docs/kernel.md (`UR_BENCH_K` sets K).

mod support;
use std::time::{Duration, Instant};

use support::programmer::NsProgrammer;
use underroute::kernel::{DesiredRoutes, KernelConfig, NextHop};
use underroute_testbed::{wait_until, Netns};

fn k() -> usize {
    std::env::var("UR_BENCH_K")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn routes(k: usize) -> DesiredRoutes {
    let mut d = DesiredRoutes::new();
    let gw = "10.255.0.2".parse().expect("literal");
    for i in 0..k as u32 {
        let a = std::net::Ipv4Addr::from(0x6440_0000 + i);
        d.insert(
            ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, 32).expect("/32")),
            vec![NextHop::via(gw)],
        );
    }
    d
}

/// Waits until the follow-up reconcile (the monitor overflowed on our own burst) has run.
fn settle(p: &NsProgrammer) {
    let mut last = p.snapshot().map(|s| s.reconciles).unwrap_or(0);
    let _ = wait_until(Duration::from_secs(30), Duration::from_millis(300), || {
        let now = p.snapshot().map(|s| s.reconciles).unwrap_or(0);
        let stable = now == last;
        last = now;
        stable.then_some(())
    });
}

fn run(label: &str, tables: bool) {
    // UR_LOG=underroute=debug shows where a reconcile spends its time.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("UR_LOG"))
        .with_test_writer()
        .try_init();
    let k = k();
    let ns = Netns::new("kbench").expect("namespace");
    let peer = Netns::new("kbenchp").expect("peer namespace");
    let v1 = underroute_testbed::link_pair(
        &ns,
        &peer,
        underroute_testbed::Addrs::new("10.255.0.1", "fd55::1"),
        underroute_testbed::Addrs::new("10.255.0.2", "fd55::2"),
    )
    .expect("veth");
    let mut names = vec![v1.a_if.clone()];
    if tables {
        // A second host address on its own interface: two per-address tables (IPv4 only).
        let v2 = underroute_testbed::link_pair(
            &ns,
            &peer,
            underroute_testbed::Addrs::new("10.254.0.1", "fd54::1"),
            underroute_testbed::Addrs::new("10.254.0.2", "fd54::2"),
        )
        .expect("veth");
        names.push(v2.a_if.clone());
        for n in &names {
            ns.exec_ok(&["ip", "-6", "addr", "flush", "dev", n, "scope", "global"])
                .expect("flush v6");
        }
    }
    let cfg = KernelConfig {
        per_address_tables: tables,
        // Only the IPv4 addresses, to get exactly two tables.
        interfaces: tables.then_some(names),
        ..KernelConfig::default()
    };
    let p = NsProgrammer::start(&ns, cfg).expect("programmer");
    p.set_routes(DesiredRoutes::new()).expect("empty");
    let d = routes(k);
    let t0 = Instant::now();
    let add = p.set_routes(d).expect("add");
    let t_add = t0.elapsed();
    let owned = p.snapshot().expect("snapshot").owned_routes;
    settle(&p);
    // Tables holding each pod route: main, and each per-address table.
    let copies = if tables { 3 } else { 1 };
    assert_eq!(add.failed, 0, "{add:?}");
    assert!(
        add.added >= copies * k && owned >= copies * k,
        "{k} routes in {copies} tables: {add:?}, owned {owned}"
    );
    // Cost follows change: one route with a new next hop, then one route less, in the full
    // table: one write per table holding it, nothing else.
    let mut changed = routes(k);
    let one = ipnet::IpNet::V4(ipnet::Ipv4Net::new(0x6440_0000u32.into(), 32).expect("/32"));
    changed.insert(
        one,
        vec![NextHop::via("10.255.0.3".parse().expect("literal"))],
    );
    let replace = p.set_routes(changed).expect("one changed");
    assert_eq!(
        (
            replace.added,
            replace.replaced,
            replace.removed,
            replace.failed
        ),
        (0, copies, 0, 0),
        "one changed route: {replace:?}"
    );
    let mut fewer = routes(k);
    fewer.routes.remove(&one);
    let remove = p.set_routes(fewer).expect("one removed");
    assert_eq!(
        (remove.added, remove.replaced, remove.removed, remove.failed),
        (0, 0, copies, 0),
        "one removed route: {remove:?}"
    );
    settle(&p);
    let t0 = Instant::now();
    let del = p.set_routes(DesiredRoutes::new()).expect("del");
    let t_del = t0.elapsed();
    settle(&p);
    let left = p.snapshot().expect("snapshot").owned_routes;
    p.shutdown().expect("shutdown");
    assert_eq!(del.failed, 0, "{del:?}");
    assert_eq!(
        (del.removed, left),
        (copies * (k - 1), owned - copies * k),
        "every pod route deleted, the tables' own routes kept"
    );
    println!(
        "kernel_bench {label} K={k} routes={} add {:.3}s ({:.0}/s) del {:.3}s ({:.0}/s) failed={} owned_after_add={owned} owned_after_del={left}",
        add.added,
        t_add.as_secs_f64(),
        add.added as f64 / t_add.as_secs_f64(),
        t_del.as_secs_f64(),
        del.removed as f64 / t_del.as_secs_f64(),
        add.failed + del.failed,
    );
}

#[test]
fn kernel_bench_main_table() {
    if !underroute_testbed::require_root("kernel_bench_main_table") {
        return;
    }
    run("main", false);
}

#[test]
fn kernel_bench_main_plus_two_address_tables() {
    if !underroute_testbed::require_root("kernel_bench_main_plus_two_address_tables") {
        return;
    }
    run("main+2tables", true);
}
