//! The kernel programmer against a real kernel, inside throw-away namespaces: install, replace,
//! withdraw in the main and per-address tables, ECMP, other protocols untouched, self-healing,
//! and adoption across a restart. The programmer's sockets live in the test's namespace only.

mod support;
use std::net::IpAddr;
use std::time::Duration;

use support::programmer::NsProgrammer;
use underroute::kernel::{DesiredRoutes, KernelConfig, NextHop, MAIN_TABLE};
use underroute_testbed::iproute::{ip_routes, ip_rules};
use underroute_testbed::{link_pair, wait_until, Addrs, Netns, VethPair};

const PROTO: u8 = underroute::DEFAULT_ROUTE_PROTOCOL;
/// The bound for repairs and for following address changes.
const HEAL: Duration = Duration::from_secs(1);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP literal in test")
}

/// `host` (programmer) and `peer`, one veth: host 10.10.0.1/24 fd10::1/64, peer .2/::2 and .3.
/// The host has a static default route via the peer and two routes of other protocols.
struct Lab {
    host: Netns,
    _peer: Netns,
    veth: VethPair,
}

fn lab(tag: &str) -> Lab {
    let host = Netns::new(&format!("{tag}h")).expect("host namespace");
    let peer = Netns::new(&format!("{tag}p")).expect("peer namespace");
    let veth = link_pair(
        &host,
        &peer,
        Addrs::new("10.10.0.1", "fd10::1"),
        Addrs::new("10.10.0.2", "fd10::2"),
    )
    .expect("veth");
    peer.exec_ok(&["ip", "addr", "add", "10.10.0.3/24", "dev", &veth.b_if])
        .expect("second peer address");
    for cmd in [
        "ip route add default via 10.10.0.2 proto static",
        "ip -6 route add default via fd10::2 proto static",
        "ip route add 10.99.0.0/24 via 10.10.0.2 proto bird",
        "ip route add 10.98.0.0/24 via 10.10.0.3 proto 186",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        host.exec_ok(&args).expect(cmd);
    }
    Lab {
        host,
        _peer: peer,
        veth,
    }
}

fn desired(list: &[(&str, &[&str])]) -> DesiredRoutes {
    let mut d = DesiredRoutes::new();
    for (p, gws) in list {
        d.insert(
            p.parse().expect("prefix literal"),
            gws.iter().map(|g| NextHop::via(ip(g))).collect(),
        );
    }
    d
}

fn main_ours(ns: &Netns, v6: bool) -> Vec<String> {
    ip_routes(ns, v6, "main", Some(PROTO)).expect("ip route")
}

fn table_of(p: &NsProgrammer, addr: &str) -> u32 {
    let snap = p.snapshot().expect("snapshot");
    snap.tables
        .iter()
        .find(|t| t.addr == ip(addr))
        .unwrap_or_else(|| panic!("no table for {addr}: {:?}", snap.tables))
        .table
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

fn others(ns: &Netns) -> Vec<String> {
    let mut v = ip_routes(ns, false, "main", None).expect("ip route");
    v.retain(|l| !l.contains(&format!("proto {PROTO}")) && !l.starts_with("nexthop"));
    v
}

#[test]
fn install_replace_withdraw_in_main_and_per_address_tables() {
    if !underroute_testbed::require_root("install_replace_withdraw_in_main_and_per_address_tables")
    {
        return;
    }
    let lab = lab("kri");
    let before_others = others(&lab.host);
    let p = NsProgrammer::start(&lab.host, KernelConfig::default()).expect("programmer");

    let r = p
        .set_routes(desired(&[
            ("10.1.0.0/24", &["10.10.0.2"]),
            ("10.2.0.0/24", &["10.10.0.2", "10.10.0.3"]),
            ("fd01::/64", &["fd10::2"]),
            ("10.3.0.0/24", &["10.77.0.1"]),
        ]))
        .expect("set_routes");
    assert_eq!(
        r.failed, 2,
        "unreachable next hop refused in main and the v4 table: {r:?}"
    );

    let main = main_ours(&lab.host, false);
    assert!(has(&main, "10.1.0.0/24 via 10.10.0.2"), "{main:?}");
    assert!(has(&main, "10.2.0.0/24"), "{main:?}");
    assert!(
        has(&main, "nexthop via 10.10.0.2") && has(&main, "nexthop via 10.10.0.3"),
        "ECMP: {main:?}"
    );
    assert!(!has(&main, "10.3.0.0/24"), "never installed: {main:?}");
    assert!(has(&main_ours(&lab.host, true), "fd01::/64 via fd10::2"));
    let snap = p.snapshot().expect("snapshot");
    assert!(
        snap.failures.iter().any(|f| f.key.table == MAIN_TABLE
            && f.key.prefix.to_string() == "10.3.0.0/24"
            && f.reason.contains("unreachable")),
        "unreachable next hop is reported: {:?}",
        snap.failures
    );

    // Per-address tables: subnet, default via the same interface's gateway, pod routes; rule.
    let t4 = table_of(&p, "10.10.0.1");
    let t6 = table_of(&p, "fd10::1");
    let tbl = ip_routes(&lab.host, false, &t4.to_string(), None).expect("table");
    assert!(
        has(&tbl, &format!("10.10.0.0/24 dev {}", lab.veth.a_if)) && has(&tbl, "src 10.10.0.1"),
        "{tbl:?}"
    );
    assert!(has(&tbl, "default via 10.10.0.2"), "{tbl:?}");
    assert!(has(&tbl, "10.1.0.0/24 via 10.10.0.2"), "{tbl:?}");
    assert!(has(&tbl, "nexthop via 10.10.0.3"), "{tbl:?}");
    let tbl6 = ip_routes(&lab.host, true, &t6.to_string(), None).expect("table");
    assert!(
        has(&tbl6, "fd01::/64 via fd10::2") && has(&tbl6, "default via fd10::2"),
        "{tbl6:?}"
    );
    assert!(has(
        &ip_rules(&lab.host, false).expect("rules"),
        &format!("from 10.10.0.1 lookup {t4}")
    ));
    assert!(has(
        &ip_rules(&lab.host, true).expect("rules"),
        &format!("from fd10::1 lookup {t6}")
    ));

    // Replace a next hop, withdraw a route.
    p.set_routes(desired(&[
        ("10.1.0.0/24", &["10.10.0.3"]),
        ("fd01::/64", &["fd10::2"]),
    ]))
    .expect("set_routes");
    let main = main_ours(&lab.host, false);
    assert!(has(&main, "10.1.0.0/24 via 10.10.0.3"), "{main:?}");
    assert!(!has(&main, "10.2.0.0/24"), "{main:?}");
    let tbl = ip_routes(&lab.host, false, &t4.to_string(), None).expect("table");
    assert!(
        has(&tbl, "10.1.0.0/24 via 10.10.0.3") && !has(&tbl, "10.2.0.0/24"),
        "{tbl:?}"
    );

    // Nothing of anyone else changed.
    assert_eq!(others(&lab.host), before_others);
    // An empty desired state sweeps the pod routes but keeps the per-address tables.
    p.set_routes(DesiredRoutes::new()).expect("set_routes");
    assert!(main_ours(&lab.host, false).is_empty() && main_ours(&lab.host, true).is_empty());
    assert_eq!(others(&lab.host), before_others);
    p.shutdown().expect("shutdown");
}

#[test]
fn routes_and_rules_removed_by_others_come_back_within_a_second() {
    if !underroute_testbed::require_root(
        "routes_and_rules_removed_by_others_come_back_within_a_second",
    ) {
        return;
    }
    let lab = lab("krh");
    let p = NsProgrammer::start(&lab.host, KernelConfig::default()).expect("programmer");
    p.set_routes(desired(&[
        ("10.1.0.0/24", &["10.10.0.2"]),
        ("fd01::/64", &["fd10::2"]),
    ]))
    .expect("set_routes");
    let t4 = table_of(&p, "10.10.0.1").to_string();

    let back = |what: &str, check: &dyn Fn() -> bool| {
        wait_until(HEAL, Duration::from_millis(20), || check().then_some(()))
            .unwrap_or_else(|e| panic!("{what} not repaired: {e}"));
    };
    lab.host
        .exec_ok(&["ip", "route", "del", "10.1.0.0/24", "proto", "201"])
        .expect("ip route del");
    back("main route", &|| {
        has(&main_ours(&lab.host, false), "10.1.0.0/24 via 10.10.0.2")
    });
    lab.host
        .exec_ok(&["ip", "-6", "route", "del", "fd01::/64"])
        .expect("ip route del");
    back("v6 route", &|| {
        has(&main_ours(&lab.host, true), "fd01::/64")
    });
    lab.host
        .exec_ok(&["ip", "route", "del", "default", "table", &t4])
        .expect("ip route del table");
    back("table default", &|| {
        has(
            &ip_routes(&lab.host, false, &t4, None).unwrap_or_default(),
            "default via 10.10.0.2",
        )
    });
    lab.host
        .exec_ok(&["ip", "rule", "del", "from", "10.10.0.1", "lookup", &t4])
        .expect("ip rule del");
    back("rule", &|| {
        has(
            &ip_rules(&lab.host, false).unwrap_or_default(),
            &format!("from 10.10.0.1 lookup {t4}"),
        )
    });
    let repaired = p.snapshot().expect("snapshot").repaired;
    assert!(repaired >= 4, "repairs counted: {repaired}");

    // Link down flushes routes through it; up brings ours back.
    lab.host
        .exec_ok(&["ip", "link", "set", &lab.veth.a_if, "down"])
        .expect("link down");
    wait_until(HEAL, Duration::from_millis(20), || {
        (!has(&main_ours(&lab.host, false), "10.1.0.0/24")).then_some(())
    })
    .expect("kernel flushed the route on link down");
    lab.host
        .exec_ok(&["ip", "link", "set", &lab.veth.a_if, "up"])
        .expect("link up");
    back("route after link up", &|| {
        has(&main_ours(&lab.host, false), "10.1.0.0/24 via 10.10.0.2")
    });
    back("table after link up", &|| {
        has(
            &ip_routes(&lab.host, false, &t4, None).unwrap_or_default(),
            "10.1.0.0/24 via 10.10.0.2",
        )
    });

    // An address that appears gets a table and a rule; one that goes loses them.
    lab.host
        .exec_ok(&["ip", "addr", "add", "10.20.0.1/24", "dev", &lab.veth.a_if])
        .expect("addr add");
    back("new address rule", &|| {
        has(
            &ip_rules(&lab.host, false).unwrap_or_default(),
            "from 10.20.0.1 lookup",
        )
    });
    let t20 = table_of(&p, "10.20.0.1").to_string();
    let tbl = ip_routes(&lab.host, false, &t20, None).expect("table");
    assert!(
        has(&tbl, "10.20.0.0/24") && has(&tbl, "10.1.0.0/24"),
        "{tbl:?}"
    );
    lab.host
        .exec_ok(&["ip", "addr", "del", "10.20.0.1/24", "dev", &lab.veth.a_if])
        .expect("addr del");
    back("rule of removed address gone", &|| {
        !has(
            &ip_rules(&lab.host, false).unwrap_or_default(),
            "from 10.20.0.1 lookup",
        )
    });
    back("table of removed address empty", &|| {
        ip_routes(&lab.host, false, &t20, None).is_ok_and(|v| v.is_empty())
    });
    p.shutdown().expect("shutdown");
}

#[test]
fn restart_adopts_routes_untouched_and_sweeps_only_stale_ones() {
    if !underroute_testbed::require_root(
        "restart_adopts_routes_untouched_and_sweeps_only_stale_ones",
    ) {
        return;
    }
    let lab = lab("krr");
    let p = NsProgrammer::start(&lab.host, KernelConfig::default()).expect("programmer");
    p.set_routes(desired(&[
        ("10.1.0.0/24", &["10.10.0.2"]),
        ("10.2.0.0/24", &["10.10.0.2", "10.10.0.3"]),
    ]))
    .expect("set_routes");
    let t4 = table_of(&p, "10.10.0.1").to_string();
    p.shutdown().expect("shutdown");
    let main_before = main_ours(&lab.host, false);
    let tbl_before = ip_routes(&lab.host, false, &t4, None).expect("table");
    assert!(
        has(&main_before, "10.2.0.0/24"),
        "routes survive shutdown: {main_before:?}"
    );

    // A new programmer adopts: the kernel state is exactly as before (no flush, no re-add).
    let p = NsProgrammer::start(&lab.host, KernelConfig::default()).expect("programmer again");
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        p.snapshot().ok().filter(|s| s.reconciles >= 1)
    })
    .expect("start-up reconcile");
    let snap = p.snapshot().expect("snapshot");
    assert_eq!(
        snap.installed, 0,
        "nothing re-installed on adoption: {snap:?}"
    );
    assert_eq!(snap.removed, 0);
    assert_eq!(main_ours(&lab.host, false), main_before);
    assert_eq!(
        ip_routes(&lab.host, false, &t4, None).expect("table"),
        tbl_before
    );

    // The new desired state lacks 10.2.0.0/24: swept from main and the table, 10.1 kept.
    let r = p
        .set_routes(desired(&[("10.1.0.0/24", &["10.10.0.2"])]))
        .expect("set_routes");
    assert_eq!((r.added, r.replaced), (0, 0), "{r:?}");
    assert_eq!(r.removed, 2, "{r:?}");
    let main = main_ours(&lab.host, false);
    assert!(
        has(&main, "10.1.0.0/24") && !has(&main, "10.2.0.0/24"),
        "{main:?}"
    );
    p.shutdown().expect("shutdown");
}

#[test]
fn device_and_onlink_next_hops_and_a_custom_protocol_number() {
    if !underroute_testbed::require_root("device_and_onlink_next_hops_and_a_custom_protocol_number")
    {
        return;
    }
    let lab = lab("krd");
    let cfg = KernelConfig {
        route_protocol: 222,
        per_address_tables: false,
        ..KernelConfig::default()
    };
    let p = NsProgrammer::start(&lab.host, cfg).expect("programmer");
    let mut d = DesiredRoutes::new();
    d.insert(
        "10.5.0.0/24".parse().expect("prefix"),
        vec![NextHop::dev(&lab.veth.a_if)],
    );
    d.insert(
        "10.6.0.0/24".parse().expect("prefix"),
        vec![NextHop::onlink(ip("172.16.0.1"), &lab.veth.a_if)],
    );
    let r = p.set_routes(d).expect("set_routes");
    assert_eq!(r.failed, 0, "{r:?}");
    let main = ip_routes(&lab.host, false, "main", Some(222)).expect("ip route");
    assert!(
        has(
            &main,
            &format!("10.5.0.0/24 dev {} scope link", lab.veth.a_if)
        ),
        "{main:?}"
    );
    assert!(
        has(&main, "10.6.0.0/24 via 172.16.0.1") && has(&main, "onlink"),
        "{main:?}"
    );
    assert!(
        main_ours(&lab.host, false).is_empty(),
        "nothing with the default number"
    );
    assert!(!has(
        &ip_rules(&lab.host, false).expect("rules"),
        "proto 222"
    ));
    p.shutdown().expect("shutdown");
}
