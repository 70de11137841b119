//! Our speaker against the reference implementations, gobgpd 3.10 and BIRD 2, in network
//! namespaces: sessions in both families, routes both ways with their attributes, withdrawals,
//! Bad Peer AS, hold timer expiry, TCP MD5 and graceful restart. Every scenario runs against
//! both daemons; FRR's bgpd (8.4) is a third peer for routes both ways in both families.
//!
//! Topology: namespace `u` (10.0.0.2, fd00::2) runs our speaker in-process; namespace `p`
//! (10.0.0.1, fd00::1) runs the reference daemon. One session per family, each over its own
//! transport (IPv4 over IPv4, IPv6 over IPv6).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use underroute_bgp::fsm::State;
use underroute_bgp::speaker::{GracefulRestartConfig, PeerConfig, SpeakerConfig};
use underroute_bgp::wire::{LargeCommunity, PathAttrs};
use underroute_bgp::{Asn, RouterId};
use underroute_testbed::{
    link_pair, require_root, wait_until, Addrs, Bird, BirdConfig, BirdNeighbor, Family, Frr,
    GobgpConfig, GobgpNeighbor, Gobgpd, Netns, NsSpeaker, Proc, RibEntry, RouteAttrs, StaticRoute,
};

const OUR_AS: u32 = 64512;
const EBGP_AS: u32 = 65001;
/// (our address, their address) per session.
const SESSIONS: [(&str, &str, Family); 2] = [
    ("10.0.0.2", "10.0.0.1", Family::Ipv4),
    ("fd00::2", "fd00::1", Family::Ipv6),
];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Gobgp,
    Bird,
}

/// The reference daemon, whichever it is.
enum Reference {
    Gobgp(Gobgpd),
    Bird(Bird),
}

impl Reference {
    fn announce(&mut self, prefix: IpNet, attrs: &RouteAttrs) {
        match self {
            Reference::Gobgp(g) => g
                .add_route(prefix, None, attrs)
                .expect("gobgp global rib add"),
            Reference::Bird(b) => b
                .add_static(StaticRoute {
                    prefix,
                    via: None,
                    attrs: attrs.clone(),
                })
                .expect("bird static"),
        }
    }

    fn withdraw(&mut self, prefix: IpNet) {
        match self {
            Reference::Gobgp(g) => g.del_route(prefix).expect("gobgp global rib del"),
            Reference::Bird(b) => b.remove_static(prefix).expect("bird remove static"),
        }
    }

    fn rib(&self, family: Family) -> Vec<RibEntry> {
        match self {
            Reference::Gobgp(g) => g.rib(family),
            Reference::Bird(b) => b.routes_of(family),
        }
        .unwrap_or_default()
    }

    fn is_established(&self, addr: IpAddr) -> bool {
        match self {
            Reference::Gobgp(g) => g.neighbor_state(addr).is_ok_and(|s| s == "established"),
            Reference::Bird(b) => b.neighbor_state(addr).is_ok_and(|s| s == "Established"),
        }
    }

    fn wait_established(&self, addr: IpAddr) {
        match self {
            Reference::Gobgp(g) => g.wait_established(addr, Duration::from_secs(15)),
            Reference::Bird(b) => b.wait_established(addr, Duration::from_secs(15)),
        }
        .expect("reference session Established")
    }

    fn proc(&self) -> &Proc {
        match self {
            Reference::Gobgp(g) => g.proc(),
            Reference::Bird(b) => b.proc(),
        }
    }

    fn restart_gracefully(&mut self, ns: &Netns) {
        match self {
            Reference::Gobgp(g) => g.restart_gracefully(ns),
            Reference::Bird(b) => b.restart_gracefully(ns),
        }
        .expect("restart with the Restart State bit")
    }
}

struct Options {
    peer_asn: u32,
    /// The AS we expect the peer to have (differs from `peer_asn` to provoke Bad Peer AS).
    expected_asn: u32,
    our_password: Option<&'static str>,
    peer_password: Option<&'static str>,
    hold: u16,
    graceful_restart: bool,
    /// Our AS number (a 4-octet one to exercise RFC 6793).
    our_asn: u32,
    /// The reference daemon speaks 2-octet AS numbers only (BIRD `enable as4 off`).
    two_octet_peer: bool,
}

impl Options {
    fn ebgp() -> Self {
        Options {
            peer_asn: EBGP_AS,
            expected_asn: EBGP_AS,
            our_password: None,
            peer_password: None,
            hold: 9,
            graceful_restart: false,
            our_asn: OUR_AS,
            two_octet_peer: false,
        }
    }

    fn ibgp() -> Self {
        Options {
            peer_asn: OUR_AS,
            expected_asn: OUR_AS,
            ..Options::ebgp()
        }
    }
}

struct Lab {
    // Field order is drop order: daemons and our runtime before their namespaces.
    us: NsSpeaker,
    peer: Reference,
    _ns_us: Netns,
    ns_peer: Netns,
}

fn lab(kind: Kind, tag: &str, o: Options) -> Lab {
    let ns_us = Netns::new(&format!("{tag}u")).expect("our namespace");
    let ns_peer = Netns::new(&format!("{tag}p")).expect("reference namespace");
    link_pair(
        &ns_us,
        &ns_peer,
        Addrs::new("10.0.0.2", "fd00::2"),
        Addrs::new("10.0.0.1", "fd00::1"),
    )
    .expect("veth between the namespaces");
    let gr = o.graceful_restart.then_some(30);
    let password = o.peer_password.map(str::to_string);
    let peer = match kind {
        Kind::Gobgp => Reference::Gobgp(
            Gobgpd::start(
                &ns_peer,
                GobgpConfig {
                    router_id: "10.0.0.1".parse().expect("literal"),
                    asn: o.peer_asn,
                    neighbors: SESSIONS
                        .iter()
                        .map(|(ours, _, family)| GobgpNeighbor {
                            address: ip(ours),
                            asn: o.our_asn,
                            password: password.clone(),
                            families: vec![*family],
                            graceful_restart: gr,
                            hold_time: o.hold,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )
            .expect("start gobgpd"),
        ),
        Kind::Bird => Reference::Bird(
            Bird::start(
                &ns_peer,
                BirdConfig {
                    router_id: "10.0.0.1".parse().expect("literal"),
                    asn: o.peer_asn,
                    neighbors: SESSIONS
                        .iter()
                        .map(|(ours, _, family)| BirdNeighbor {
                            address: ip(ours),
                            asn: o.our_asn,
                            two_octet_only: o.two_octet_peer,
                            password: password.clone(),
                            families: vec![*family],
                            graceful_restart: gr,
                            hold_time: o.hold,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )
            .expect("start bird"),
        ),
    };
    let us = NsSpeaker::start(
        &ns_us,
        SpeakerConfig {
            asn: Asn(o.our_asn),
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
    for (_, theirs, family) in SESSIONS {
        let mut pc = PeerConfig::new(ip(theirs), Asn(o.expected_asn));
        pc.families = vec![match family {
            Family::Ipv4 => underroute_bgp::Family::Ipv4Unicast,
            Family::Ipv6 => underroute_bgp::Family::Ipv6Unicast,
        }];
        pc.hold_time = o.hold;
        pc.password = o.our_password.map(str::to_string);
        pc.connect_retry = Duration::from_secs(1);
        let s = us.handle();
        us.run(async move { s.add_peer(pc).await })
            .expect("add peer");
    }
    Lab {
        us,
        peer,
        _ns_us: ns_us,
        ns_peer,
    }
}

impl Lab {
    fn established(&self) {
        for (ours, theirs, _) in SESSIONS {
            self.us
                .wait_established(ip(theirs), Duration::from_secs(15))
                .expect("our session up");
            self.peer.wait_established(ip(ours));
        }
    }

    fn originate(&self, routes: Vec<(IpNet, PathAttrs)>) {
        let s = self.us.handle();
        self.us
            .run(async move { s.originate(routes).await })
            .expect("originate");
    }

    fn withdraw(&self, prefixes: Vec<IpNet>) {
        let s = self.us.handle();
        self.us
            .run(async move { s.withdraw(prefixes).await })
            .expect("withdraw");
    }

    /// Wait (10 s at most) for a condition on our side.
    fn wait_ours<T>(&self, what: &str, mut f: impl FnMut(&Lab) -> Option<T>) -> T {
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            f(self)
        })
        .unwrap_or_else(|e| panic!("{what}: {e}; our table: {:?}", self.us.best_routes()))
    }

    /// Wait (10 s at most) for the reference daemon to hold `prefix`.
    fn wait_theirs(&self, prefix: IpNet, family: Family) -> RibEntry {
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            self.peer
                .rib(family)
                .into_iter()
                .find(|r| r.prefix == prefix)
        })
        .unwrap_or_else(|e| panic!("{prefix} never reached the reference daemon: {e}"))
    }
}

// ---- routes both ways ---------------------------------------------------------------------------

fn routes_flow_both_ways(kind: Kind, tag: &str, ibgp: bool) {
    let mut l = lab(
        kind,
        tag,
        if ibgp {
            Options::ibgp()
        } else {
            Options::ebgp()
        },
    );
    l.established();

    // Theirs -> ours, both families, with the attributes an operator tags routes with.
    // (BIRD strips MED toward eBGP peers, so MED is only checked where it must arrive.)
    let med_arrives = ibgp || kind == Kind::Gobgp;
    let attrs = RouteAttrs {
        communities: vec![(65001, 100)],
        large_communities: vec![(65001, 1, 2)],
        med: Some(50),
        local_pref: ibgp.then_some(300),
        ..Default::default()
    };
    let theirs = [("10.1.0.0/24", "10.0.0.1"), ("2001:db8:1::/48", "fd00::1")];
    for (prefix, _) in theirs {
        l.peer.announce(net(prefix), &attrs);
    }
    for (prefix, nh) in theirs {
        let (r, stale) = l.wait_ours(prefix, |l| l.us.best_route(net(prefix)));
        assert_eq!(
            r.nexthop,
            Some(ip(nh)),
            "{prefix}: next hop is the peer's session address"
        );
        let want_path: Vec<u32> = if ibgp { vec![] } else { vec![EBGP_AS] };
        assert_eq!(r.as_path, want_path, "{prefix}: AS path");
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
        if med_arrives {
            assert_eq!(r.med, Some(50), "{prefix}: MED kept");
        }
        if ibgp {
            assert_eq!(r.local_pref, Some(300), "{prefix}: LOCAL_PREF kept on iBGP");
        }
        assert!(!stale);
    }

    // Ours -> theirs: next-hop-self, and our AS prepended toward eBGP only.
    let ours = PathAttrs {
        communities: vec![(64512 << 16) | 7],
        large_communities: vec![LargeCommunity {
            global: 64512,
            local1: 3,
            local2: 4,
        }],
        ..Default::default()
    };
    let mine = [
        ("10.233.64.0/24", Family::Ipv4, "10.0.0.2"),
        ("2001:db8:64::/64", Family::Ipv6, "fd00::2"),
    ];
    l.originate(
        mine.iter()
            .map(|(p, _, _)| (net(p), ours.clone()))
            .collect(),
    );
    for (prefix, family, nh) in mine {
        let r = l.wait_theirs(net(prefix), family);
        assert_eq!(
            r.nexthop,
            Some(ip(nh)),
            "{prefix}: next hop is our session address"
        );
        let want_path: Vec<u32> = if ibgp { vec![] } else { vec![OUR_AS] };
        assert_eq!(
            r.as_path, want_path,
            "{prefix}: AS path as the peer sees it"
        );
        assert_eq!(r.communities, vec![(64512, 7)]);
        assert_eq!(r.large_communities, vec![(64512, 3, 4)]);
        if ibgp {
            assert_eq!(
                r.local_pref,
                Some(100),
                "{prefix}: default LOCAL_PREF toward iBGP"
            );
        }
    }

    // Withdrawals, both directions.
    for (prefix, _) in theirs {
        l.peer.withdraw(net(prefix));
    }
    l.wait_ours("withdrawals from the peer", |l| {
        let t = l.us.best_routes();
        (!t.iter()
            .any(|(r, _)| theirs.iter().any(|(p, _)| r.prefix == net(p))))
        .then_some(())
    });
    l.withdraw(mine.iter().map(|(p, _, _)| net(p)).collect());
    for (prefix, family, _) in mine {
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            (!l.peer.rib(family).iter().any(|r| r.prefix == net(prefix))).then_some(())
        })
        .unwrap_or_else(|e| panic!("our withdrawal of {prefix} never reached the peer: {e}"));
    }
}

#[test]
fn gobgpd_ebgp_routes_flow_both_ways_and_withdrawals_propagate() {
    if require_root("gobgpd_ebgp_routes_flow_both_ways_and_withdrawals_propagate") {
        routes_flow_both_ways(Kind::Gobgp, "gfe", false);
    }
}

#[test]
fn gobgpd_ibgp_routes_flow_both_ways_and_withdrawals_propagate() {
    if require_root("gobgpd_ibgp_routes_flow_both_ways_and_withdrawals_propagate") {
        routes_flow_both_ways(Kind::Gobgp, "gfi", true);
    }
}

#[test]
fn bird_ebgp_routes_flow_both_ways_and_withdrawals_propagate() {
    if require_root("bird_ebgp_routes_flow_both_ways_and_withdrawals_propagate") {
        routes_flow_both_ways(Kind::Bird, "bfe", false);
    }
}

#[test]
fn bird_ibgp_routes_flow_both_ways_and_withdrawals_propagate() {
    if require_root("bird_ibgp_routes_flow_both_ways_and_withdrawals_propagate") {
        routes_flow_both_ways(Kind::Bird, "bfi", true);
    }
}

// ---- OPEN errors --------------------------------------------------------------------------------

/// RFC 4271 6.2: an OPEN from an unexpected AS gets NOTIFICATION 2/2 and the session stays down.
fn wrong_peer_as_is_refused(kind: Kind, tag: &str) {
    let l = lab(
        kind,
        tag,
        Options {
            expected_asn: 65099,
            ..Options::ebgp()
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
    let snapshot = l.us.peer(peer).expect("peer");
    assert!(
        snapshot.sent_messages.notification > 0,
        "NOTIFICATION counted as sent"
    );
    if let Reference::Gobgp(g) = &l.peer {
        // gobgpd counts what it received: our NOTIFICATION must be there.
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let v: serde_json::Value =
                serde_json::from_str(&g.cli(&["neighbor", "10.0.0.2", "-j"]).ok()?).ok()?;
            (v["state"]["messages"]["received"]["notification"].as_u64()? > 0).then_some(())
        })
        .expect("gobgpd counted our NOTIFICATION");
    }
    if let Reference::Bird(b) = &l.peer {
        // BIRD reports the received error in its protocol status.
        wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            let out = b
                .birdc(&[
                    "show",
                    "protocols",
                    "all",
                    &Bird::protocol_name(ip("10.0.0.2")),
                ])
                .ok()?;
            out.contains("Bad peer AS").then_some(())
        })
        .expect("BIRD shows our Bad peer AS NOTIFICATION");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            !l.peer.is_established(ip("10.0.0.2")),
            "session must not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn gobgpd_with_wrong_peer_as_gets_bad_peer_as() {
    if require_root("gobgpd_with_wrong_peer_as_gets_bad_peer_as") {
        wrong_peer_as_is_refused(Kind::Gobgp, "gas");
    }
}

#[test]
fn bird_with_wrong_peer_as_gets_bad_peer_as() {
    if require_root("bird_with_wrong_peer_as_gets_bad_peer_as") {
        wrong_peer_as_is_refused(Kind::Bird, "bas");
    }
}

// ---- hold timer ---------------------------------------------------------------------------------

/// RFC 4271 8.2.2: a peer that stops talking (SIGSTOP) is dropped when the hold timer expires.
fn hold_timer_expires_when_peer_freezes(kind: Kind, tag: &str) {
    let l = lab(
        kind,
        tag,
        Options {
            hold: 3,
            ..Options::ebgp()
        },
    );
    l.established();
    let peer = ip("10.0.0.1");
    assert_eq!(
        l.us.peer(peer)
            .expect("peer")
            .negotiated
            .expect("negotiated")
            .hold_time,
        3
    );
    l.peer
        .proc()
        .signal(libc::SIGSTOP)
        .expect("SIGSTOP the peer");
    let stopped = Instant::now();
    let err = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        let p = l.us.peer(peer)?;
        (p.state != State::Established).then_some(p.last_error.unwrap_or_default())
    });
    let waited = stopped.elapsed();
    l.peer
        .proc()
        .signal(libc::SIGCONT)
        .expect("SIGCONT the peer");
    let err = err.expect("session went down while the peer was frozen");
    assert!(err.contains("hold timer expired"), "reason: {err}");
    assert!(
        waited >= Duration::from_secs(2),
        "down after {waited:?}: too early for the hold timer"
    );
}

#[test]
fn gobgpd_frozen_hits_our_hold_timer() {
    if require_root("gobgpd_frozen_hits_our_hold_timer") {
        hold_timer_expires_when_peer_freezes(Kind::Gobgp, "ght");
    }
}

#[test]
fn bird_frozen_hits_our_hold_timer() {
    if require_root("bird_frozen_hits_our_hold_timer") {
        hold_timer_expires_when_peer_freezes(Kind::Bird, "bht");
    }
}

// ---- TCP MD5 ------------------------------------------------------------------------------------

/// RFC 2385: matching keys establish; a mismatch never does (the kernel drops the segments).
fn md5_match_and_mismatch(kind: Kind, tag: &str) {
    {
        let good = Options {
            our_password: Some("s3cret"),
            peer_password: Some("s3cret"),
            ..Options::ebgp()
        };
        lab(kind, &format!("{tag}ok"), good).established();
    }
    let bad = Options {
        our_password: Some("s3cret"),
        peer_password: Some("other"),
        ..Options::ebgp()
    };
    let l = lab(kind, &format!("{tag}no"), bad);
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        for p in l.us.peer_summary() {
            assert!(
                !p.contains("Established"),
                "session came up with mismatched MD5 keys: {p}"
            );
        }
        assert!(!l.peer.is_established(ip("10.0.0.2")));
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn gobgpd_md5_match_establishes_and_mismatch_never_does() {
    if require_root("gobgpd_md5_match_establishes_and_mismatch_never_does") {
        md5_match_and_mismatch(Kind::Gobgp, "gm");
    }
}

#[test]
fn bird_md5_match_establishes_and_mismatch_never_does() {
    if require_root("bird_md5_match_establishes_and_mismatch_never_does") {
        md5_match_and_mismatch(Kind::Bird, "bm");
    }
}

// ---- graceful restart ---------------------------------------------------------------------------

/// RFC 4724 4.2: when a GR-capable peer's session drops without a NOTIFICATION, its routes are
/// kept (stale) and still forwarded; after it comes back, the ones it does not re-announce
/// before its End-of-RIB are swept, long before the restart time would have.
fn restarting_peer_routes_stay_stale_then_are_swept(kind: Kind, tag: &str) {
    let mut l = lab(
        kind,
        tag,
        Options {
            graceful_restart: true,
            ..Options::ibgp()
        },
    );
    l.established();
    let keep = net("10.1.1.0/24");
    let gone = net("10.1.2.0/24");
    l.peer.announce(keep, &RouteAttrs::default());
    l.peer.announce(gone, &RouteAttrs::default());
    l.wait_ours("both routes", |l| {
        (l.us.best_route(keep).is_some() && l.us.best_route(gone).is_some()).then_some(())
    });

    l.peer
        .proc()
        .signal(libc::SIGKILL)
        .expect("SIGKILL the peer");
    let killed = Instant::now();
    l.wait_ours("routes kept as stale", |l| {
        let (_, a) = l.us.best_route(keep)?;
        let (_, b) = l.us.best_route(gone)?;
        (a && b).then_some(())
    });
    // What comes back: gobgpd loses routes added through its CLI, so both go; BIRD rereads its
    // config, from which `gone` is removed while it is down, so `keep` stays.
    let keep_survives = match &mut l.peer {
        Reference::Gobgp(_) => false,
        Reference::Bird(b) => {
            // BIRD is dead, so the reconfigure half of this fails; the file is what matters.
            let _ = b.remove_static(gone);
            true
        }
    };
    l.peer.restart_gracefully(&l.ns_peer);
    l.established();
    l.wait_ours("stale routes swept after End-of-RIB", |l| {
        let kept = l.us.best_route(keep);
        let ok = l.us.best_route(gone).is_none()
            && match (&kept, keep_survives) {
                (Some((_, stale)), true) => !stale,
                (None, false) => true,
                _ => false,
            };
        ok.then_some(())
    });
    assert!(
        killed.elapsed() < Duration::from_secs(25),
        "swept by the 30 s restart timer, not by End-of-RIB"
    );
}

#[test]
fn gobgpd_restart_keeps_routes_stale_until_end_of_rib() {
    if require_root("gobgpd_restart_keeps_routes_stale_until_end_of_rib") {
        restarting_peer_routes_stay_stale_then_are_swept(Kind::Gobgp, "ggr");
    }
}

#[test]
fn bird_restart_keeps_routes_stale_until_end_of_rib() {
    if require_root("bird_restart_keeps_routes_stale_until_end_of_rib") {
        restarting_peer_routes_stay_stale_then_are_swept(Kind::Bird, "bgr");
    }
}

// ---- 4-octet AS toward a 2-octet speaker ------------------------------------------------------------

/// RFC 6793 section 4.2.2: on a session with an old (2-octet) speaker, a 4-octet AS number in
/// a path travels as AS_TRANS in AS_PATH with the real numbers in AS4_PATH, which the old
/// speaker merges back (4.2.3); its own 2-octet path reaches us intact.
#[test]
fn bird_two_octet_only_session_carries_four_octet_as_numbers_in_as4_path() {
    if !require_root("bird_two_octet_only_session_carries_four_octet_as_numbers_in_as4_path") {
        return;
    }
    let mut l = lab(
        Kind::Bird,
        "b4o",
        Options {
            two_octet_peer: true,
            ..Options::ebgp()
        },
    );
    l.established();
    let negotiated =
        l.us.peer(ip("10.0.0.1"))
            .expect("peer")
            .negotiated
            .expect("negotiated");
    assert!(
        !negotiated.four_octet_as,
        "BIRD with `enable as4 off` makes this a 2-octet session"
    );

    l.peer.announce(net("10.1.0.0/24"), &RouteAttrs::default());
    let (r, _) = l.wait_ours("BIRD's route", |l| l.us.best_route(net("10.1.0.0/24")));
    assert_eq!(
        r.as_path,
        vec![EBGP_AS],
        "2-octet AS_PATH read with the right width"
    );

    // A route whose path already holds a 4-octet AS (as if learned from a 4-octet neighbour).
    let big = underroute_bgp::Asn(4_200_000_001);
    let attrs = PathAttrs {
        as_path: underroute_bgp::wire::AsPath {
            segments: vec![underroute_bgp::wire::AsSegment::Sequence(vec![big])],
        },
        ..Default::default()
    };
    l.originate(vec![(net("10.233.64.0/24"), attrs)]);
    let theirs = l.wait_theirs(net("10.233.64.0/24"), Family::Ipv4);
    assert_eq!(
        theirs.as_path,
        vec![OUR_AS, big.0],
        "BIRD rebuilt the 4-octet path from AS4_PATH"
    );
}

/// FRR's bgpd (eBGP, AS 65001) in the reference namespace: one session per family, announcing
/// 192.0.2.0/24 and 2001:db8:f::/48 (MED 50, community 65001:100 by route map).
const FRR_CONF: &str = "frr defaults datacenter
hostname frr-peer
!
route-map TAG permit 10
 set metric 50
 set community 65001:100
!
router bgp 65001
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 no bgp network import-check
 neighbor 10.0.0.2 remote-as 64512
 neighbor 10.0.0.2 timers 3 9
 neighbor fd00::2 remote-as 64512
 neighbor fd00::2 timers 3 9
 address-family ipv4 unicast
  network 192.0.2.0/24 route-map TAG
  neighbor 10.0.0.2 activate
 exit-address-family
 address-family ipv6 unicast
  network 2001:db8:f::/48 route-map TAG
  neighbor fd00::2 activate
 exit-address-family
!
";

#[test]
fn frr_ebgp_routes_flow_both_ways_and_withdrawals_propagate() {
    if !require_root("frr_ebgp_routes_flow_both_ways_and_withdrawals_propagate") {
        return;
    }
    let ns_us = Netns::new("ifru").expect("our namespace");
    let ns_peer = Netns::new("ifrp").expect("FRR namespace");
    link_pair(
        &ns_us,
        &ns_peer,
        Addrs::new("10.0.0.2", "fd00::2"),
        Addrs::new("10.0.0.1", "fd00::1"),
    )
    .expect("veth between the namespaces");
    let frr = Frr::start(&ns_peer, FRR_CONF).expect("start bgpd");
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
            graceful_restart: None,
            hostname: Some("underroute-test".into()),
        },
    )
    .expect("start our speaker");
    for (_, theirs, family) in SESSIONS {
        let mut pc = PeerConfig::new(ip(theirs), Asn(EBGP_AS));
        pc.families = vec![match family {
            Family::Ipv4 => underroute_bgp::Family::Ipv4Unicast,
            Family::Ipv6 => underroute_bgp::Family::Ipv6Unicast,
        }];
        pc.hold_time = 9;
        pc.connect_retry = Duration::from_secs(1);
        let s = us.handle();
        us.run(async move { s.add_peer(pc).await })
            .expect("add peer");
    }
    for (ours, theirs, _) in SESSIONS {
        us.wait_established(ip(theirs), Duration::from_secs(30))
            .expect("our session up");
        frr.wait_established(ip(ours), Duration::from_secs(10))
            .expect("FRR's session up");
    }

    // Theirs -> ours, with FRR's route-map attributes.
    for (prefix, nh) in [("192.0.2.0/24", "10.0.0.1"), ("2001:db8:f::/48", "fd00::1")] {
        let (r, _) = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            us.best_route(net(prefix))
        })
        .unwrap_or_else(|e| panic!("{prefix} from FRR: {e}"));
        assert_eq!(r.nexthop, Some(ip(nh)), "{prefix}: next hop");
        assert_eq!(r.as_path, vec![EBGP_AS], "{prefix}: AS path");
        assert_eq!(r.med, Some(50), "{prefix}: MED");
        assert_eq!(r.communities, vec![(65001, 100)], "{prefix}: community");
    }

    // Ours -> theirs: next-hop-self and our AS prepended.
    let mine = [
        ("10.233.64.0/24", Family::Ipv4, "10.0.0.2"),
        ("2001:db8:64::/64", Family::Ipv6, "fd00::2"),
    ];
    let routes: Vec<(IpNet, PathAttrs)> = mine
        .iter()
        .map(|(p, _, _)| (net(p), PathAttrs::default()))
        .collect();
    let s = us.handle();
    us.run(async move { s.originate(routes).await })
        .expect("originate");
    for (prefix, family, nh) in mine {
        let r = wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            frr.rib(family)
                .ok()?
                .into_iter()
                .find(|r| r.prefix == net(prefix))
        })
        .unwrap_or_else(|e| panic!("FRR never learned {prefix}: {e}"));
        assert_eq!(r.nexthop, Some(ip(nh)), "{prefix}: next hop at FRR");
        // (Not FRR's best path: bgpd runs without zebra here, so it cannot resolve the next
        // hops it learns; the table entry with our attributes is what the session carried.)
        assert_eq!(r.as_path, vec![OUR_AS], "{prefix}: AS path at FRR");
    }

    // Withdrawals, both directions.
    frr.configure(&[
        "router bgp 65001",
        "address-family ipv4 unicast",
        "no network 192.0.2.0/24 route-map TAG",
    ])
    .expect("FRR withdraws");
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        us.best_route(net("192.0.2.0/24")).is_none().then_some(())
    })
    .expect("FRR's withdrawal reached us");
    let gone: Vec<IpNet> = mine.iter().map(|(p, _, _)| net(p)).collect();
    let s = us.handle();
    us.run(async move { s.withdraw(gone).await })
        .expect("withdraw");
    for (prefix, _, _) in mine {
        wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
            (!frr.has_route(net(prefix))).then_some(())
        })
        .unwrap_or_else(|e| panic!("our withdrawal of {prefix} never reached FRR: {e}"));
    }
}
