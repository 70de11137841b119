//! Checks the namespace harness itself against two independent implementations: gobgpd and BIRD
//! peer over a veth, and a route originated on gobgpd reaches BIRD with its attributes.
//! If these fail, interop failures of our own speaker mean nothing.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use underroute_testbed::{
    link_pair, wait_until, Addrs, Bird, BirdConfig, BirdNeighbor, Family, GobgpConfig,
    GobgpNeighbor, Gobgpd, Netns, RouteAttrs,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP literal in test")
}

/// gobgpd (AS 65001) in one namespace, BIRD (AS 65002) in another, one eBGP session per
/// family over the veth (IPv4 session for ipv4-unicast, IPv6 session for ipv6-unicast).
struct Pair {
    // Field order is drop order: daemons first, then the namespaces they run in.
    gobgp: Gobgpd,
    bird: Bird,
    _ns_g: Netns,
    _ns_b: Netns,
}

fn ebgp_pair(tag: &str, password: Option<&str>) -> Pair {
    let ns_g = Netns::new(&format!("{tag}g")).expect("namespace for gobgpd");
    let ns_b = Netns::new(&format!("{tag}b")).expect("namespace for bird");
    link_pair(
        &ns_g,
        &ns_b,
        Addrs::new("10.0.0.1", "fd00::1"),
        Addrs::new("10.0.0.2", "fd00::2"),
    )
    .expect("veth between the namespaces");
    let password = password.map(str::to_string);
    let gobgp = Gobgpd::start(
        &ns_g,
        GobgpConfig {
            router_id: "10.0.0.1".parse().expect("literal"),
            asn: 65001,
            neighbors: vec![
                GobgpNeighbor {
                    address: ip("10.0.0.2"),
                    asn: 65002,
                    password: password.clone(),
                    families: vec![Family::Ipv4],
                    ..Default::default()
                },
                GobgpNeighbor {
                    address: ip("fd00::2"),
                    asn: 65002,
                    password: password.clone(),
                    families: vec![Family::Ipv6],
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    )
    .expect("start gobgpd");
    let bird = Bird::start(
        &ns_b,
        BirdConfig {
            router_id: "10.0.0.2".parse().expect("literal"),
            asn: 65002,
            neighbors: vec![
                BirdNeighbor {
                    address: ip("10.0.0.1"),
                    asn: 65001,
                    password: password.clone(),
                    families: vec![Family::Ipv4],
                    ..Default::default()
                },
                BirdNeighbor {
                    address: ip("fd00::1"),
                    asn: 65001,
                    password,
                    families: vec![Family::Ipv6],
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    )
    .expect("start bird");
    Pair {
        gobgp,
        bird,
        _ns_g: ns_g,
        _ns_b: ns_b,
    }
}

fn establish(p: &Pair) {
    for (g_peer, b_peer) in [("10.0.0.2", "10.0.0.1"), ("fd00::2", "fd00::1")] {
        p.gobgp
            .wait_established(ip(g_peer), Duration::from_secs(10))
            .expect("gobgpd session Established within 10 s");
        p.bird
            .wait_established(ip(b_peer), Duration::from_secs(10))
            .expect("bird session Established within 10 s");
    }
}

#[test]
fn gobgpd_route_reaches_bird_with_its_attributes() {
    if !underroute_testbed::require_root("gobgpd_route_reaches_bird_with_its_attributes") {
        return;
    }
    let t0 = Instant::now();
    let p = ebgp_pair("self", None);
    establish(&p);
    eprintln!("sessions established after {:?}", t0.elapsed());

    let attrs = RouteAttrs {
        as_path: vec![65010, 65011],
        communities: vec![(65001, 100), (65001, 200)],
        large_communities: vec![(65001, 1, 2)],
        med: Some(50),
        local_pref: None,
    };
    let cases = [
        ("192.0.2.0/24", Some("10.0.0.1"), Family::Ipv4),
        ("2001:db8:1::/48", Some("fd00::1"), Family::Ipv6),
    ];
    for (prefix, nh, fam) in cases {
        let prefix = prefix.parse().expect("prefix literal");
        p.gobgp
            .add_route(prefix, nh.map(ip), &attrs)
            .expect("add route on gobgpd");
        let got = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            p.bird
                .routes_of(fam)
                .expect("bird routes")
                .into_iter()
                .find(|r| r.prefix == prefix)
        })
        .unwrap_or_else(|e| panic!("{prefix} not in BIRD: {e}"));
        // eBGP export prepends the sender's AS (RFC 4271 5.1.2).
        assert_eq!(got.as_path, vec![65001, 65010, 65011], "{prefix}");
        assert_eq!(got.nexthop, nh.map(ip), "{prefix}");
        assert_eq!(got.communities, attrs.communities, "{prefix}");
        assert_eq!(got.large_communities, attrs.large_communities, "{prefix}");
        assert_eq!(got.med, attrs.med, "{prefix}");
        assert!(got.best, "{prefix} is BIRD's only path, so best");

        // And the withdraw reaches BIRD too.
        p.gobgp.del_route(prefix).expect("del route on gobgpd");
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let routes = p.bird.routes_of(fam).expect("bird routes");
            (!routes.iter().any(|r| r.prefix == prefix)).then_some(())
        })
        .unwrap_or_else(|e| panic!("{prefix} still in BIRD after withdraw: {e}"));
    }

    // The other direction, through gobgp's JSON parsing: BIRD's static route shows up in
    // gobgpd's Adj-RIB-In and Loc-RIB.
    let mut bird = p.bird;
    bird.add_static(underroute_testbed::StaticRoute {
        prefix: "198.51.100.0/24".parse().expect("literal"),
        via: None,
        attrs: RouteAttrs {
            communities: vec![(65002, 7)],
            large_communities: vec![(65002, 3, 4)],
            ..Default::default()
        },
    })
    .expect("bird static route");
    let got = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        p.gobgp
            .adj_in(ip("10.0.0.2"), Family::Ipv4)
            .expect("gobgp adj-in")
            .into_iter()
            .find(|r| r.prefix.to_string() == "198.51.100.0/24")
    })
    .expect("BIRD's static route in gobgpd adj-in");
    assert_eq!(got.as_path, vec![65002]);
    assert_eq!(got.nexthop, Some(ip("10.0.0.2")));
    assert_eq!(got.communities, vec![(65002, 7)]);
    assert_eq!(got.large_communities, vec![(65002, 3, 4)]);
    let rib = p.gobgp.rib(Family::Ipv4).expect("gobgp rib");
    assert!(rib.iter().any(|r| r.prefix == got.prefix && r.best));
    eprintln!("selftest done after {:?}", t0.elapsed());
}

#[test]
fn md5_password_on_both_sides_establishes() {
    if !underroute_testbed::require_root("md5_password_on_both_sides_establishes") {
        return;
    }
    let p = ebgp_pair("md5", Some("s3cret-md5"));
    establish(&p);
}

/// The harness's own guarantees: a thread moved with `enter_thread` binds inside the namespace,
/// `Proc::signal` works, and dropping a `Netns` kills even processes it did not start itself.
#[test]
fn netns_enter_thread_signals_and_cleanup() {
    if !underroute_testbed::require_root("netns_enter_thread_signals_and_cleanup") {
        return;
    }
    let a = Netns::new("hsa").expect("namespace a");
    let b = Netns::new("hsb").expect("namespace b");
    link_pair(
        &a,
        &b,
        Addrs::new("10.9.0.1", "fd09::1"),
        Addrs::new("10.9.0.2", "fd09::2"),
    )
    .expect("veth");

    // 10.9.0.1 exists only in `a`, so binding it proves the thread is inside.
    let accepted = std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<(), String> {
            a.enter_thread()?;
            let l = std::net::TcpListener::bind("10.9.0.1:1790").map_err(|e| e.to_string())?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                l.accept().ok().map(|_| ())
            })
        });
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let out = b
                .exec(&["bash", "-c", "exec 3<>/dev/tcp/10.9.0.1/1790"])
                .ok()?;
            out.status.success().then_some(())
        })
        .expect("connect from b to the listener in a");
        server.join().expect("server thread")
    });
    accepted.expect("listener thread inside namespace a accepted");

    let log = a.dir().join("sleep.log");
    let p = a.spawn("sleep", &["30"], &log).expect("spawn sleep");
    p.signal(libc::SIGSTOP).expect("SIGSTOP");
    p.signal(libc::SIGCONT).expect("SIGCONT");
    drop(p);

    // A process the harness did not start (reparented to init) must die with the namespace.
    a.exec_ok(&["sh", "-c", "sleep 60 >/dev/null 2>&1 &"])
        .expect("background sleep");
    let orphans = a.pids();
    assert!(!orphans.is_empty(), "the background sleep runs inside a");
    let name = a.name().to_string();
    drop(a);
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    for pid in orphans {
        // Once killed and reaped by init, /proc/PID disappears.
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        })
        .unwrap_or_else(|e| panic!("pid {pid} from the dropped namespace still alive: {e}"));
    }
}

/// `Bird::restart_gracefully`: with graceful restart negotiated (RFC 4724), gobgpd keeps BIRD's
/// route while BIRD is down and the session comes back.
#[test]
fn bird_graceful_restart_keeps_routes_on_gobgpd() {
    if !underroute_testbed::require_root("bird_graceful_restart_keeps_routes_on_gobgpd") {
        return;
    }
    let ns_g = Netns::new("grg").expect("namespace for gobgpd");
    let ns_b = Netns::new("grb").expect("namespace for bird");
    link_pair(
        &ns_g,
        &ns_b,
        Addrs::new("10.0.0.1", "fd00::1"),
        Addrs::new("10.0.0.2", "fd00::2"),
    )
    .expect("veth");
    let gobgp = Gobgpd::start(
        &ns_g,
        GobgpConfig {
            router_id: "10.0.0.1".parse().expect("literal"),
            asn: 65001,
            neighbors: vec![GobgpNeighbor {
                address: ip("10.0.0.2"),
                asn: 65002,
                graceful_restart: Some(60),
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .expect("start gobgpd");
    let mut bird = Bird::start(
        &ns_b,
        BirdConfig {
            router_id: "10.0.0.2".parse().expect("literal"),
            asn: 65002,
            neighbors: vec![BirdNeighbor {
                address: ip("10.0.0.1"),
                asn: 65001,
                graceful_restart: Some(60),
                ..Default::default()
            }],
            static_v4: vec![underroute_testbed::StaticRoute {
                prefix: "198.51.100.0/24".parse().expect("literal"),
                via: None,
                attrs: RouteAttrs::default(),
            }],
            ..Default::default()
        },
    )
    .expect("start bird");
    gobgp
        .wait_established(ip("10.0.0.2"), Duration::from_secs(10))
        .expect("Established");
    let has_route = || {
        gobgp
            .rib(Family::Ipv4)
            .expect("gobgp rib")
            .iter()
            .any(|r| r.prefix.to_string() == "198.51.100.0/24")
    };
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        has_route().then_some(())
    })
    .expect("BIRD's route in gobgpd");

    let t = Instant::now();
    bird.restart_gracefully(&ns_b)
        .expect("restart bird with -R");
    assert!(has_route(), "route kept as stale during the restart");
    gobgp
        .wait_established(ip("10.0.0.2"), Duration::from_secs(20))
        .expect("Established again after BIRD's restart");
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        has_route().then_some(())
    })
    .expect("route still there after the restart");
    eprintln!("graceful restart round trip {:?}", t.elapsed());
}
