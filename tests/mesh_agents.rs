//! Several agents (the real binary) as a full iBGP mesh on one L2 segment, with a pod namespace
//! per node: convergence into the kernel, underlay pod host routes, the mesh import filter, and
//! restarts under continuous traffic (graceful restart, RFC 4724).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use underroute_testbed::fabric::{
    attach_pod, ping_once, standard_mesh, start_mesh, wait_converged, ContinuousPing, Fabric,
    MeshNode, PING_INTERVAL,
};
use underroute_testbed::{
    require_root, GobgpConfig, GobgpNeighbor, Gobgpd, Netns, RouteAttrs, RouteMonitor,
};

const BIN: &str = env!("CARGO_BIN_EXE_underroute");

/// One second of continuous ping at [`PING_INTERVAL`].
const ONE_SECOND_OF_PROBES: u32 = 20;

fn mesh(tag: &str, n: u8) -> (Fabric, Vec<MeshNode>) {
    let (specs, spec) = standard_mesh(n);
    start_mesh(tag, &specs, &spec, Path::new(BIN)).expect("build the mesh")
}

fn converge(nodes: &[MeshNode]) -> Duration {
    let t = wait_converged(nodes, Duration::from_secs(40)).expect("mesh converges");
    eprintln!("{} nodes converged in {t:?}", nodes.len());
    t
}

/// Waits until `node` has all its sessions established again.
fn wait_sessions(node: &MeshNode, want: usize) {
    underroute_testbed::wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        (node.established() >= want).then_some(())
    })
    .unwrap_or_else(|e| panic!("{}: sessions not back: {e}", node.spec.name));
}

/// Route monitors on every node, started before a restart: the kernel's own notifications show
/// a pod route deleted and put back, which a look at the table afterwards cannot.
fn watch_kernels(nodes: &[MeshNode]) -> Vec<RouteMonitor> {
    nodes
        .iter()
        .map(|n| RouteMonitor::start(&n.ns).expect("route monitor"))
        .collect()
}

/// No node's kernel lost a pod CIDR route while `monitors` watched.
fn assert_no_pod_route_deleted(nodes: &[MeshNode], monitors: &[RouteMonitor], since: Instant) {
    for (n, mon) in nodes.iter().zip(monitors) {
        for o in nodes {
            let cidr = o.spec.pod_cidr.to_string();
            assert!(
                mon.deletions(&cidr).is_empty(),
                "{}: the route to {}'s pods left the kernel:\n{}",
                n.spec.name,
                o.spec.name,
                mon.dump(since)
            );
        }
    }
}

/// A node's rules and routes, for failure messages.
fn routing_state(n: &MeshNode) -> String {
    let show = |args: &[&str]| n.ns.exec_stdout(args).unwrap_or_else(|e| e);
    format!(
        "== {}\n{}{}{}",
        n.spec.name,
        show(&["ip", "-4", "rule"]),
        show(&["ip", "-4", "route", "show", "table", "all"]),
        show(&["ip", "-4", "addr"])
    )
}

#[test]
fn five_node_mesh_installs_every_pod_cidr_via_its_node_and_pods_reach_each_other() {
    if !require_root(
        "five_node_mesh_installs_every_pod_cidr_via_its_node_and_pods_reach_each_other",
    ) {
        return;
    }
    let (_fabric, mut nodes) = mesh("m5", 5);
    converge(&nodes);
    for n in &nodes {
        assert_eq!(n.established(), 4, "{}: full mesh", n.spec.name);
    }
    for (i, a) in nodes.iter().enumerate() {
        for b in &nodes[i + 1..] {
            assert!(
                ping_once(&a.pod, b.pod_ip()),
                "pod of {} cannot reach pod of {}\n{}\n{}",
                a.spec.name,
                b.spec.name,
                routing_state(a),
                routing_state(b)
            );
        }
    }
    for n in &mut nodes {
        n.check_alive().expect("agents still running");
    }
}

#[test]
fn underlay_pod_host_route_reaches_every_peer_and_goes_with_its_record() {
    if !require_root("underlay_pod_host_route_reaches_every_peer_and_goes_with_its_record") {
        return;
    }
    let (_fabric, nodes) = mesh("mu", 3);
    converge(&nodes);
    let node2 = &nodes[1];
    // A routed underlay pod on node2: its /32 on a veth, reached by a host route on the node.
    let upod = Netns::new("mupod").expect("underlay pod namespace");
    let addr = Ipv4Addr::new(192, 168, 50, 100);
    attach_pod(
        &node2.ns,
        &upod,
        "169.254.1.1/32".parse().expect("literal"),
        "192.168.50.100/32".parse().expect("literal"),
    )
    .expect("attach the underlay pod");
    let registry = underroute::podregistry::PodRegistry::new(&node2.registry_dir);
    registry
        .record(&underroute::podregistry::PodRecord {
            container_id: "underlay1".into(),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/{}", upod.name()),
            ips: vec!["192.168.50.100/32".parse().expect("literal")],
            mode: underroute::cni::config::Mode::Veth,
            host_veth: None,
            created_unix: 0,
        })
        .expect("record the pod");
    let want = format!("{addr} via {}", node2.spec.address);
    let peers = [&nodes[0], &nodes[2]];
    underroute_testbed::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        peers
            .iter()
            .all(|n| n.kernel_routes().contains(&want))
            .then_some(())
    })
    .expect("every peer installs the underlay pod's /32 via node2");
    for n in peers {
        assert!(
            ping_once(&n.pod, addr),
            "pod of {} cannot reach the underlay pod",
            n.spec.name
        );
    }
    registry
        .remove("underlay1", "eth0")
        .expect("remove the record");
    underroute_testbed::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        peers
            .iter()
            .all(|n| !n.kernel_routes().contains(&addr.to_string()))
            .then_some(())
    })
    .expect("the /32 leaves every peer's kernel with the record");
}

#[test]
fn mesh_import_filter_keeps_a_default_route_and_a_node_host_route_out_of_every_kernel() {
    if !require_root(
        "mesh_import_filter_keeps_a_default_route_and_a_node_host_route_out_of_every_kernel",
    ) {
        return;
    }
    // Four mesh members: three agents and a gobgpd playing node4, which hijacks.
    let (specs, spec) = standard_mesh(4);
    let (fabric, nodes) = start_mesh("mh", &specs[..3], &spec, Path::new(BIN)).expect("mesh");
    let rogue_ns = Netns::new("mhrogue").expect("rogue namespace");
    let rogue_addr = specs[3].address;
    fabric
        .attach(
            &rogue_ns,
            ipnet::Ipv4Net::new(rogue_addr, 24).expect("prefix"),
        )
        .expect("attach the rogue node");
    let rogue = Gobgpd::start(
        &rogue_ns,
        GobgpConfig {
            router_id: rogue_addr,
            asn: spec.asn,
            neighbors: specs[..3]
                .iter()
                .map(|s| GobgpNeighbor {
                    address: IpAddr::V4(s.address),
                    asn: spec.asn,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    )
    .expect("gobgpd");
    for s in &specs[..3] {
        rogue
            .wait_established(IpAddr::V4(s.address), Duration::from_secs(30))
            .expect("rogue sessions up");
    }
    let legit = specs[3].pod_cidr;
    let node1_host = format!("{}/32", specs[0].address);
    for p in [
        legit.to_string().as_str(),
        "0.0.0.0/0",
        node1_host.as_str(),
        "8.8.8.0/24",
    ] {
        rogue
            .add_route(p.parse().expect("prefix"), None, &RouteAttrs::default())
            .expect("announce");
    }
    let want = format!("{legit} via {rogue_addr}");
    underroute_testbed::wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        nodes
            .iter()
            .all(|n| n.kernel_routes().contains(&want))
            .then_some(())
    })
    .expect("the rogue node's legitimate pod CIDR is installed everywhere");
    // The refused routes arrived in the same UPDATE stream as the accepted one; give a slow
    // install a moment anyway before looking.
    std::thread::sleep(Duration::from_secs(1));
    for n in &nodes {
        // Refused, not dropped: the operator sees them received but not accepted.
        let table = n.cli(&["neighbor"]).expect("neighbor table");
        let counts: Vec<u32> = table
            .lines()
            .find(|l| l.starts_with(&rogue_addr.to_string()))
            .map(|l| {
                l.rsplit('|')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|w| w.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            counts,
            vec![4, 1],
            "{}: received/accepted from the rogue:\n{table}",
            n.spec.name
        );
        let all =
            n.ns.exec_stdout(&["ip", "-4", "route", "show", "table", "all", "proto", "201"])
                .expect("routes");
        for line in all.lines() {
            assert!(
                !line.starts_with("default")
                    && !line.starts_with(&format!("{} ", specs[0].address))
                    && !line.starts_with("8.8.8.0/24"),
                "{}: hijacked route installed: {line}\n{all}",
                n.spec.name
            );
        }
    }
}

#[test]
fn sigkill_and_restart_of_one_agent_loses_no_more_than_a_second_of_pod_traffic() {
    if !require_root("sigkill_and_restart_of_one_agent_loses_no_more_than_a_second_of_pod_traffic")
    {
        return;
    }
    let (_fabric, mut nodes) = mesh("mk", 3);
    converge(&nodes);
    for n in &nodes {
        wait_sessions(n, 2);
    }
    let probes = 300;
    let pings = [
        ContinuousPing::start(&nodes[0].pod, nodes[1].pod_ip(), probes).expect("ping 1->2"),
        ContinuousPing::start(&nodes[1].pod, nodes[0].pod_ip(), probes).expect("ping 2->1"),
        ContinuousPing::start(&nodes[2].pod, nodes[1].pod_ip(), probes).expect("ping 3->2"),
    ];
    std::thread::sleep(Duration::from_secs(2));
    let monitors = watch_kernels(&nodes);
    nodes[1].stop(libc::SIGKILL).expect("SIGKILL node2's agent");
    let killed = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    // Without its agent, node2 still forwards: SIGKILL leaves its kernel routes in place.
    let own = nodes[1].kernel_routes();
    for o in [&nodes[0], &nodes[2]] {
        assert!(
            own.contains(&format!("{} via {}", o.spec.pod_cidr, o.spec.address)),
            "node2's kernel lost the route to {}'s pods when its agent died:\n{own}",
            o.spec.name
        );
    }
    for n in [&nodes[0], &nodes[2]] {
        assert!(
            n.kernel_routes().contains(&format!(
                "{} via {}",
                nodes[1].spec.pod_cidr, nodes[1].spec.address
            )),
            "{} dropped node2's pod CIDR while node2 restarts",
            n.spec.name
        );
    }
    nodes[1].start().expect("restart node2's agent");
    wait_sessions(&nodes[1], 2);
    eprintln!(
        "node2 back in the mesh {:?} after SIGKILL",
        killed.elapsed()
    );
    for p in pings {
        let s = p.finish().expect("ping result");
        eprintln!("continuous ping across the restart: {s:?}");
        assert!(
            s.lost() <= ONE_SECOND_OF_PROBES,
            "lost {} probes ({:?}) across a restart",
            s.lost(),
            PING_INTERVAL * s.lost()
        );
    }
    converge(&nodes);
    // Through the kill, the restart and the settle after it: node2 adopted its routes and the
    // others kept node2's (graceful restart); nobody deleted a pod route even for a moment.
    std::thread::sleep(underroute::agent::install::SETTLE * 2);
    assert_no_pod_route_deleted(&nodes, &monitors, killed);
    for n in &mut nodes {
        n.check_alive().expect("agents running");
    }
}

#[test]
fn rolling_restart_of_every_agent_loses_no_more_than_a_second_per_restart() {
    if !require_root("rolling_restart_of_every_agent_loses_no_more_than_a_second_per_restart") {
        return;
    }
    let (_fabric, mut nodes) = mesh("mr", 3);
    converge(&nodes);
    for n in &nodes {
        wait_sessions(n, 2);
    }
    // ~20 s: three restarts of a few seconds each, with margin.
    let probes = 400;
    let pings: Vec<ContinuousPing> = (0..nodes.len())
        .map(|i| {
            let dst = nodes[(i + 1) % nodes.len()].pod_ip();
            ContinuousPing::start(&nodes[i].pod, dst, probes).expect("ping")
        })
        .collect();
    let t0 = Instant::now();
    let monitors = watch_kernels(&nodes);
    std::thread::sleep(Duration::from_secs(1));
    for node in nodes.iter_mut() {
        // A rolling upgrade: the old agent dies without withdrawing (restart intent), the new
        // one adopts the kernel routes and resyncs with the peers that kept its routes.
        node.stop(libc::SIGKILL).expect("SIGKILL");
        node.start().expect("restart");
        wait_sessions(node, 2);
        // Let the peers see End-of-RIB and refresh before the next node goes.
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "rolling restart of {} agents took {:?}",
        nodes.len(),
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < PING_INTERVAL * probes,
        "the restarts must finish while the pings still run"
    );
    for p in pings {
        let s = p.finish().expect("ping result");
        eprintln!("continuous ping across the rolling restart: {s:?}");
        // Each ping crosses two nodes, each restarted once.
        assert!(
            s.lost() <= 2 * ONE_SECOND_OF_PROBES,
            "lost {} probes ({:?})",
            s.lost(),
            PING_INTERVAL * s.lost()
        );
    }
    converge(&nodes);
    std::thread::sleep(underroute::agent::install::SETTLE * 2);
    assert_no_pod_route_deleted(&nodes, &monitors, t0);
}
