//! Our speaker against gobgpd 3.10 in network namespaces: sessions, routes both ways with their
//! attributes, withdrawals, OPEN errors, hold timer expiry, TCP MD5 and graceful restart.
//!
//! Topology: namespace `us` (10.0.0.2, fd00::2) runs our speaker in-process; namespace `peer`
//! (10.0.0.1, fd00::1) runs gobgpd. One session per family, each over its own transport.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use underroute::testbed::{
    link_pair, require_root, wait_until, Addrs, Family, GobgpConfig, GobgpNeighbor, Gobgpd, Netns,
    NsSpeaker, RouteAttrs,
};
use underroute_bgp::speaker::{GracefulRestartConfig, PeerConfig, SpeakerConfig};
use underroute_bgp::wire::{LargeCommunity, PathAttrs};
use underroute_bgp::{Asn, RouterId};

const OUR_AS: u32 = 64512;
const GOBGP_AS: u32 = 65001;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

struct Lab {
    // Field order is drop order: daemons and our runtime before their namespaces.
    us: NsSpeaker,
    gobgp: Gobgpd,
    _ns_us: Netns,
    ns_peer: Netns,
}

struct Options {
    peer_asn: u32,
    /// The AS we expect the peer to have (differs from `peer_asn` to provoke Bad Peer AS).
    expected_asn: u32,
    our_password: Option<&'static str>,
    peer_password: Option<&'static str>,
    hold: u16,
    graceful_restart: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            peer_asn: GOBGP_AS,
            expected_asn: GOBGP_AS,
            our_password: None,
            peer_password: None,
            hold: 9,
            graceful_restart: false,
        }
    }
}

fn lab(tag: &str, o: Options) -> Lab {
    let ns_us = Netns::new(&format!("{tag}u")).expect("our namespace");
    let ns_peer = Netns::new(&format!("{tag}p")).expect("gobgpd namespace");
    link_pair(
        &ns_us,
        &ns_peer,
        Addrs::new("10.0.0.2", "fd00::2"),
        Addrs::new("10.0.0.1", "fd00::1"),
    )
    .expect("veth between the namespaces");
    let gr = o.graceful_restart.then_some(30);
    let gobgp = Gobgpd::start(
        &ns_peer,
        GobgpConfig {
            router_id: "10.0.0.1".parse().expect("literal"),
            asn: o.peer_asn,
            neighbors: vec![
                GobgpNeighbor {
                    address: ip("10.0.0.2"),
                    asn: OUR_AS,
                    password: o.peer_password.map(str::to_string),
                    families: vec![Family::Ipv4],
                    graceful_restart: gr,
                    hold_time: o.hold,
                    ..Default::default()
                },
                GobgpNeighbor {
                    address: ip("fd00::2"),
                    asn: OUR_AS,
                    password: o.peer_password.map(str::to_string),
                    families: vec![Family::Ipv6],
                    graceful_restart: gr,
                    hold_time: o.hold,
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    )
    .expect("start gobgpd");
    let us = NsSpeaker::start(
        &ns_us,
        SpeakerConfig {
            asn: Asn(OUR_AS),
            router_id: RouterId("10.0.0.2".parse().expect("literal")),
            listen: vec![
                SocketAddr::new(ip("0.0.0.0"), 179),
                SocketAddr::new(ip("::"), 179),
            ],
            cluster_id: None,
            graceful_restart: o.graceful_restart.then(GracefulRestartConfig::default),
            hostname: Some("underroute-test".into()),
        },
    )
    .expect("start our speaker");
    for (addr, family) in [
        ("10.0.0.1", underroute_bgp::Family::Ipv4Unicast),
        ("fd00::1", underroute_bgp::Family::Ipv6Unicast),
    ] {
        let mut pc = PeerConfig::new(ip(addr), Asn(o.expected_asn));
        pc.families = vec![family];
        pc.hold_time = o.hold;
        pc.password = o.our_password.map(str::to_string);
        pc.connect_retry = Duration::from_secs(1);
        let s = us.handle();
        us.run(async move { s.add_peer(pc).await })
            .expect("add peer");
    }
    Lab {
        us,
        gobgp,
        _ns_us: ns_us,
        ns_peer,
    }
}

fn established(l: &Lab) {
    for (ours, theirs) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        l.us.wait_established(ip(ours), Duration::from_secs(15))
            .expect("our session up");
        l.gobgp
            .wait_established(ip(theirs), Duration::from_secs(15))
            .expect("gobgpd session up");
    }
}

fn originate(l: &Lab, routes: Vec<(IpNet, PathAttrs)>) {
    let s = l.us.handle();
    l.us.run(async move { s.originate(routes).await })
        .expect("originate");
}

fn withdraw(l: &Lab, prefixes: Vec<IpNet>) {
    let s = l.us.handle();
    l.us.run(async move { s.withdraw(prefixes).await })
        .expect("withdraw");
}

fn wait_ours<T>(what: &str, l: &Lab, mut f: impl FnMut(&Lab) -> Option<T>) -> T {
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || f(l))
        .unwrap_or_else(|e| panic!("{what}: {e}; our table: {:?}", l.us.best_routes()))
}

#[test]
fn ebgp_routes_flow_both_ways_with_attributes_and_withdrawals_propagate() {
    if !require_root("ebgp_routes_flow_both_ways_with_attributes_and_withdrawals_propagate") {
        return;
    }
    let l = lab("gflow", Options::default());
    established(&l);

    // gobgpd -> us, both families, with the attributes an operator would tag routes with.
    let attrs = RouteAttrs {
        communities: vec![(65001, 100)],
        large_communities: vec![(65001, 1, 2)],
        med: Some(50),
        ..Default::default()
    };
    l.gobgp
        .add_route(net("10.1.0.0/24"), None, &attrs)
        .expect("gobgp add v4");
    l.gobgp
        .add_route(net("2001:db8:1::/48"), None, &attrs)
        .expect("gobgp add v6");
    for (prefix, nh) in [("10.1.0.0/24", "10.0.0.1"), ("2001:db8:1::/48", "fd00::1")] {
        let (r, stale) = wait_ours(prefix, &l, |l| l.us.best_route(net(prefix)));
        assert_eq!(
            r.nexthop,
            Some(ip(nh)),
            "{prefix}: next hop is the gobgpd session address"
        );
        assert_eq!(
            r.as_path,
            vec![GOBGP_AS],
            "{prefix}: AS path is gobgpd's AS"
        );
        assert_eq!(
            r.communities,
            vec![(65001, 100)],
            "{prefix}: community kept"
        );
        assert_eq!(
            r.large_communities,
            vec![(65001, 1, 2)],
            "{prefix}: large community kept"
        );
        assert_eq!(r.med, Some(50), "{prefix}: MED kept");
        assert!(!stale);
    }

    // us -> gobgpd: next-hop-self and our AS prepended toward eBGP.
    let ours = PathAttrs {
        communities: vec![(64512 << 16) | 7],
        large_communities: vec![LargeCommunity {
            global: 64512,
            local1: 3,
            local2: 4,
        }],
        ..Default::default()
    };
    originate(
        &l,
        vec![
            (net("10.233.64.0/24"), ours.clone()),
            (net("2001:db8:64::/64"), ours),
        ],
    );
    for (prefix, family, nh) in [
        ("10.233.64.0/24", Family::Ipv4, "10.0.0.2"),
        ("2001:db8:64::/64", Family::Ipv6, "fd00::2"),
    ] {
        let r = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            l.gobgp
                .rib(family)
                .ok()?
                .into_iter()
                .find(|r| r.prefix == net(prefix))
        })
        .unwrap_or_else(|e| panic!("{prefix} never reached gobgpd: {e}"));
        assert_eq!(
            r.nexthop,
            Some(ip(nh)),
            "{prefix}: next-hop-self toward eBGP"
        );
        assert_eq!(r.as_path, vec![OUR_AS], "{prefix}: our AS prepended");
        assert_eq!(r.communities, vec![(64512, 7)]);
        assert_eq!(r.large_communities, vec![(64512, 3, 4)]);
    }

    // Withdrawals, both directions.
    l.gobgp.del_route(net("10.1.0.0/24")).expect("gobgp del v4");
    l.gobgp
        .del_route(net("2001:db8:1::/48"))
        .expect("gobgp del v6");
    wait_ours("withdrawals from gobgpd", &l, |l| {
        let t = l.us.best_routes();
        (!t.iter()
            .any(|(r, _)| r.prefix == net("10.1.0.0/24") || r.prefix == net("2001:db8:1::/48")))
        .then_some(())
    });
    withdraw(&l, vec![net("10.233.64.0/24"), net("2001:db8:64::/64")]);
    for family in [Family::Ipv4, Family::Ipv6] {
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            let rib = l.gobgp.rib(family).ok()?;
            (!rib.iter().any(|r| r.as_path == vec![OUR_AS])).then_some(())
        })
        .expect("our withdrawals reach gobgpd");
    }
}

#[test]
fn wrong_peer_as_is_refused_with_bad_peer_as_notification() {
    if !require_root("wrong_peer_as_is_refused_with_bad_peer_as_notification") {
        return;
    }
    // We expect AS 65099 but gobgpd is 65001: RFC 4271 6.2 says NOTIFICATION 2/2.
    let l = lab(
        "gbadas",
        Options {
            expected_asn: 65099,
            ..Options::default()
        },
    );
    let peer = ip("10.0.0.1");
    let err = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        l.us.peer(peer)?
            .last_error
            .filter(|e| e.contains("bad peer AS"))
    })
    .unwrap_or_else(|e| panic!("no Bad Peer AS: {e}; {:?}", l.us.peer_summary()));
    assert!(err.contains("sent NOTIFICATION"), "we sent it: {err}");
    // gobgpd received our NOTIFICATION(s) and never came up.
    let received = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let v: serde_json::Value =
            serde_json::from_str(&l.gobgp.cli(&["neighbor", "10.0.0.2", "-j"]).ok()?).ok()?;
        let n = v["state"]["messages"]["received"]["notification"].as_u64()?;
        (n > 0).then_some(n)
    })
    .expect("gobgpd counted our NOTIFICATION");
    assert!(received > 0);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert_ne!(
            l.gobgp.neighbor_state(ip("10.0.0.2")).expect("state"),
            "established"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hold_timer_expires_when_the_peer_freezes() {
    if !require_root("hold_timer_expires_when_the_peer_freezes") {
        return;
    }
    let l = lab(
        "ghold",
        Options {
            hold: 3,
            ..Options::default()
        },
    );
    established(&l);
    let peer = ip("10.0.0.1");
    assert_eq!(
        l.us.peer(peer)
            .expect("peer")
            .negotiated
            .expect("negotiated")
            .hold_time,
        3
    );
    l.gobgp
        .proc()
        .signal(libc::SIGSTOP)
        .expect("SIGSTOP gobgpd");
    let stopped = Instant::now();
    // RFC 4271 8.2.2: hold timer expiry in Established -> NOTIFICATION 4/0, session down.
    let err = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let p = l.us.peer(peer)?;
        (p.state != underroute_bgp::fsm::State::Established)
            .then_some(p.last_error.unwrap_or_default())
    });
    let waited = stopped.elapsed();
    l.gobgp
        .proc()
        .signal(libc::SIGCONT)
        .expect("SIGCONT gobgpd");
    let err = err.expect("session went down while the peer was frozen");
    assert!(err.contains("hold timer expired"), "reason: {err}");
    assert!(
        waited >= Duration::from_secs(2),
        "went down too early ({waited:?}): not the hold timer"
    );
}

#[test]
fn md5_password_match_establishes_and_mismatch_never_does() {
    if !require_root("md5_password_match_establishes_and_mismatch_never_does") {
        return;
    }
    {
        let l = lab(
            "gmd5ok",
            Options {
                our_password: Some("s3cret"),
                peer_password: Some("s3cret"),
                ..Options::default()
            },
        );
        established(&l);
    }
    let l = lab(
        "gmd5bad",
        Options {
            our_password: Some("s3cret"),
            peer_password: Some("other"),
            ..Options::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        for p in l.us.peer_summary() {
            assert!(
                !p.contains("Established"),
                "session came up with mismatched MD5: {p}"
            );
        }
        assert_ne!(
            l.gobgp.neighbor_state(ip("10.0.0.2")).expect("state"),
            "established"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn restarting_gobgpd_routes_stay_stale_then_are_swept_after_end_of_rib() {
    if !require_root("restarting_gobgpd_routes_stay_stale_then_are_swept_after_end_of_rib") {
        return;
    }
    let mut l = lab(
        "ggr",
        Options {
            graceful_restart: true,
            ..Options::default()
        },
    );
    established(&l);
    let a = net("10.1.1.0/24");
    let b = net("10.1.2.0/24");
    l.gobgp
        .add_route(a, None, &RouteAttrs::default())
        .expect("add a");
    l.gobgp
        .add_route(b, None, &RouteAttrs::default())
        .expect("add b");
    wait_ours("both routes", &l, |l| {
        (l.us.best_route(a).is_some() && l.us.best_route(b).is_some()).then_some(())
    });

    // SIGKILL and restart with the Restart State bit (gobgpd -r): it comes back without the
    // routes added through its CLI, so after its End-of-RIB both must be swept.
    l.gobgp.proc().signal(libc::SIGKILL).expect("kill gobgpd");
    let killed = Instant::now();
    let stale = wait_ours("routes marked stale", &l, |l| {
        let (ra, sa) = l.us.best_route(a)?;
        let (_, sb) = l.us.best_route(b)?;
        (sa && sb).then_some(ra)
    });
    assert_eq!(stale.prefix, a);
    l.gobgp
        .restart_gracefully(&l.ns_peer)
        .expect("restart gobgpd with -r");
    established(&l);
    wait_ours("stale routes swept after End-of-RIB", &l, |l| {
        (l.us.best_route(a).is_none() && l.us.best_route(b).is_none()).then_some(())
    });
    // Swept by End-of-RIB, long before gobgpd's 30 s restart time would have expired.
    assert!(
        killed.elapsed() < Duration::from_secs(25),
        "sweep came from the timer, not End-of-RIB"
    );
}
