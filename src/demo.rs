//! `underroute demo`: our speaker as a node between a top-of-rack router (gobgpd, eBGP) and a
//! neighbour node (BIRD, iBGP), in throw-away network namespaces.
//!
//! ```text
//!   ur-*-tor: gobgpd AS 65001         ur-*-node: underroute AS 64512       ur-*-peer: BIRD AS 64512
//!   10.0.0.1 / fd00::1  ── eBGP ──  10.0.0.2 / fd00::2 | 10.0.1.2 / fd00:1::2  ── iBGP ──  10.0.1.1 / fd00:1::1
//! ```
//! Everything lives in namespaces made here and is removed at the end, even on error.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use ipnet::IpNet;
use underroute::testbed::{
    link_pair, wait_until, Addrs, Bird, BirdConfig, BirdNeighbor, Family, GobgpConfig,
    GobgpNeighbor, Gobgpd, Netns, NsSpeaker, RouteAttrs, StaticRoute,
};
use underroute_bgp::speaker::{GracefulRestartConfig, PeerConfig, SpeakerConfig};
use underroute_bgp::wire::PathAttrs;
use underroute_bgp::{Asn, RouterId};

const NODE_AS: u32 = 64512;
const TOR_AS: u32 = 65001;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

/// Run the demo.
pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces: run it as root");
    }
    for tool in ["gobgpd", "gobgp", "bird", "birdc", "ip"] {
        if !std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            bail!(
                "{tool} is not installed: run .ci/deps first (it installs gobgpd, bird2, iproute2)"
            );
        }
    }
    let err = |e: String| anyhow!(e);

    println!("== building the lab: three network namespaces, two veth links");
    let ns_tor = Netns::new("demotor").map_err(err)?;
    let ns_node = Netns::new("demonode").map_err(err)?;
    let ns_peer = Netns::new("demopeer").map_err(err)?;
    link_pair(
        &ns_tor,
        &ns_node,
        Addrs::new("10.0.0.1", "fd00::1"),
        Addrs::new("10.0.0.2", "fd00::2"),
    )
    .map_err(err)?;
    link_pair(
        &ns_peer,
        &ns_node,
        Addrs::new("10.0.1.1", "fd00:1::1"),
        Addrs::new("10.0.1.2", "fd00:1::2"),
    )
    .map_err(err)?;

    let tor = Gobgpd::start(
        &ns_tor,
        GobgpConfig {
            router_id: "10.0.0.1".parse()?,
            asn: TOR_AS,
            neighbors: vec![
                GobgpNeighbor {
                    address: ip("10.0.0.2"),
                    asn: NODE_AS,
                    families: vec![Family::Ipv4],
                    ..Default::default()
                },
                GobgpNeighbor {
                    address: ip("fd00::2"),
                    asn: NODE_AS,
                    families: vec![Family::Ipv6],
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    )
    .map_err(err)?;
    let peer = Bird::start(
        &ns_peer,
        BirdConfig {
            router_id: "10.0.1.1".parse()?,
            asn: NODE_AS,
            neighbors: vec![
                BirdNeighbor {
                    address: ip("10.0.1.2"),
                    asn: NODE_AS,
                    families: vec![Family::Ipv4],
                    ..Default::default()
                },
                BirdNeighbor {
                    address: ip("fd00:1::2"),
                    asn: NODE_AS,
                    families: vec![Family::Ipv6],
                    ..Default::default()
                },
            ],
            // The neighbour node's pod CIDRs and one underlay pod it hosts.
            static_v4: vec![
                StaticRoute {
                    prefix: net("10.233.65.0/24"),
                    via: None,
                    attrs: RouteAttrs::default(),
                },
                StaticRoute {
                    prefix: net("10.10.20.7/32"),
                    via: None,
                    attrs: RouteAttrs::default(),
                },
            ],
            static_v6: vec![StaticRoute {
                prefix: net("2001:db8:65::/64"),
                via: None,
                attrs: RouteAttrs::default(),
            }],
            ..Default::default()
        },
    )
    .map_err(err)?;
    let node = NsSpeaker::start(
        &ns_node,
        SpeakerConfig {
            asn: Asn(NODE_AS),
            router_id: RouterId("10.0.0.2".parse()?),
            listen: vec![
                SocketAddr::new(ip("0.0.0.0"), 179),
                SocketAddr::new(ip("::"), 179),
            ],
            cluster_id: None,
            graceful_restart: Some(GracefulRestartConfig::default()),
            hostname: Some("node1".into()),
        },
    )
    .map_err(err)?;
    for (addr, asn, family) in [
        ("10.0.0.1", TOR_AS, underroute_bgp::Family::Ipv4Unicast),
        ("fd00::1", TOR_AS, underroute_bgp::Family::Ipv6Unicast),
        ("10.0.1.1", NODE_AS, underroute_bgp::Family::Ipv4Unicast),
        ("fd00:1::1", NODE_AS, underroute_bgp::Family::Ipv6Unicast),
    ] {
        let mut pc = PeerConfig::new(ip(addr), Asn(asn));
        pc.families = vec![family];
        pc.hold_time = 9;
        pc.connect_retry = Duration::from_secs(1);
        let s = node.handle();
        node.run(async move { s.add_peer(pc).await })?;
    }
    // The top-of-rack router offers a default route.
    tor.add_route(net("0.0.0.0/0"), None, &RouteAttrs::default())
        .map_err(err)?;
    tor.add_route(net("::/0"), None, &RouteAttrs::default())
        .map_err(err)?;

    println!("== node1 (underroute) originates its pod CIDRs and an underlay pod /32");
    let ours = [
        net("10.233.64.0/24"),
        net("2001:db8:64::/64"),
        net("10.10.20.5/32"),
    ];
    {
        let s = node.handle();
        let routes = ours.iter().map(|p| (*p, PathAttrs::default())).collect();
        node.run(async move { s.originate(routes).await })?;
    }
    for addr in ["10.0.0.1", "fd00::1", "10.0.1.1", "fd00:1::1"] {
        node.wait_established(ip(addr), Duration::from_secs(20))
            .map_err(err)?;
    }
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (node.best_routes().len() >= 8).then_some(())
    })
    .map_err(|e| anyhow!("routes did not arrive: {e}"))?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        tor.rib(Family::Ipv4)
            .ok()
            .filter(|r| r.iter().any(|e| e.prefix == ours[2]))
            .map(|_| ())
    })
    .map_err(|e| anyhow!("the ToR never learned the pod /32: {e}"))?;

    println!("\n== node1: sessions");
    let s = node.handle();
    for p in node.run(async move { s.peers().await })? {
        println!(
            "  {:<12} AS {:<6} {:<12} received {:>2}  accepted {:>2}  advertised {:>2}",
            p.config.address.to_string(),
            p.config.asn,
            format!("{:?}", p.state),
            p.received,
            p.accepted,
            p.advertised
        );
    }
    println!("\n== node1: best routes (Loc-RIB)");
    for (r, _) in node.best_routes() {
        let nh = r
            .nexthop
            .map(|n| n.to_string())
            .unwrap_or_else(|| "local".into());
        println!(
            "  {:<20} via {:<12} AS path {:?}",
            r.prefix.to_string(),
            nh,
            r.as_path
        );
    }
    println!("\n== top-of-rack (gobgpd): gobgp global rib");
    print!("{}", indent(&tor.cli(&["global", "rib"]).map_err(err)?));
    println!("\n== neighbour node (BIRD): birdc show route");
    print!("{}", indent(&peer.birdc(&["show", "route"]).map_err(err)?));

    println!("\n== the underlay pod 10.10.20.5 goes away: node1 withdraws its /32");
    let s = node.handle();
    node.run(async move { s.withdraw(vec![net("10.10.20.5/32")]).await })?;
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let tor_has = tor
            .rib(Family::Ipv4)
            .ok()?
            .iter()
            .any(|e| e.prefix == ours[2]);
        let bird_has = peer
            .routes_of(Family::Ipv4)
            .ok()?
            .iter()
            .any(|e| e.prefix == ours[2]);
        (!tor_has && !bird_has).then_some(())
    })
    .map_err(|e| anyhow!("withdrawal did not propagate: {e}"))?;
    println!("  gone from gobgpd and BIRD");
    print!(
        "{}",
        indent(&tor.cli(&["global", "rib", "-a", "ipv4"]).map_err(err)?)
    );
    println!("\n== done: namespaces and daemons are removed");
    drop(node);
    drop(tor);
    drop(peer);
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}
