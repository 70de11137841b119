//! underroute-cni in route mode, chained after bridge+host-local on a bridge that holds the
//! host's underlay address (the bridge+dhcp setup of the field notes): the pod's default gateway
//! is the physical router, so ClusterIP traffic only reaches kube-proxy's rules with
//! `SERVICE_CIDR via HOST_IP dev eth0` in the pod.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use underroute_testbed::cni::{dump, tcp_probe, udp_probe, Attachment, CniRunner, EchoServer};
use underroute_testbed::{link_pair, require_root, Addrs, Netns};

const OUR_BIN: &str = env!("CARGO_BIN_EXE_underroute-cni");

#[test]
fn bridge_pod_reaches_a_cluster_ip_via_the_host_address_in_route_mode() {
    if !require_root("bridge_pod_reaches_a_cluster_ip_via_the_host_address_in_route_mode") {
        return;
    }
    let lan = Netns::new("crtl").expect("lan");
    let host = Netns::new("crth").expect("host");
    let pair = link_pair(
        &lan,
        &host,
        Addrs::new("10.10.30.254", "fd00:30::254"),
        Addrs::new("10.10.30.2", "fd00:30::2"),
    )
    .expect("uplink");
    // The uplink becomes a bridge port; the host's address lives on the bridge.
    for cmd in [
        vec!["ip", "link", "add", "brul", "type", "bridge"],
        vec!["ip", "addr", "flush", "dev", &pair.b_if],
        vec!["ip", "link", "set", &pair.b_if, "master", "brul"],
        vec!["ip", "addr", "add", "10.10.30.1/24", "dev", "brul"],
        vec!["ip", "link", "set", "brul", "up"],
        vec!["ip", "route", "add", "default", "via", "10.10.30.254"],
    ] {
        host.exec_ok(&cmd).expect("host bridge setup");
    }
    // With br_netfilter, bridged packets to the router pass the host's nat hooks and get
    // DNATed on the way through, hiding the problem; a node without it (or whose pods sit
    // behind a bridge in another box) is the case route mode exists for. Per-namespace sysctl.
    if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        host.sysctl("net.bridge.bridge-nf-call-iptables", "0")
            .expect("br_netfilter off in the host namespace");
    }
    let runner = CniRunner::new(&host, Path::new(OUR_BIN)).expect("runner");
    let _srv = EchoServer::start(&host, 8081, "hostproc").expect("server");
    let rules = "ip daddr 10.96.0.11 tcp dport 80 dnat to 10.10.30.1:8081\n\
                 ip daddr 10.96.0.11 udp dport 80 dnat to 10.10.30.1:8081\n";
    let f = host.dir().join("kube.nft");
    std::fs::write(
        &f,
        format!("table ip kube {{ chain pre {{ type nat hook prerouting priority dstnat; policy accept;\n{rules}\n}}\n}}\n"),
    )
    .expect("nft file");
    host.exec_ok(&["nft", "-f", &f.display().to_string()])
        .expect("kube-proxy rules");

    let bridge = json!({
        "type": "bridge", "bridge": "brul", "isGateway": false,
        "ipam": {"type": "host-local", "subnet": "10.10.30.0/24",
                 "rangeStart": "10.10.30.50", "rangeEnd": "10.10.30.99",
                 "gateway": "10.10.30.254", "routes": [{"dst": "0.0.0.0/0"}],
                 "dataDir": runner.ipam_dir()}
    });
    let ours = json!({"type": "underroute-cni", "mode": "route",
                      "serviceCIDRs": ["10.96.0.0/12"], "registryDir": runner.registry_dir()});
    let plain = json!({"cniVersion": "1.0.0", "name": "brnet", "plugins": [bridge.clone()]});
    let chained = json!({"cniVersion": "1.0.0", "name": "brnet", "plugins": [bridge, ours]});
    let vip = SocketAddr::new("10.96.0.11".parse().expect("vip"), 80);
    let probe = Duration::from_secs(3);

    // Without our plugin the ClusterIP goes to the router, which drops it.
    let p0 = Netns::new("crtp").expect("pod");
    let a0 = Attachment::eth0("plainpod", &p0);
    let r0 = runner.add(&plain, &a0).expect("plain ADD");
    assert!(tcp_probe(&p0, vip, "hi", Duration::from_millis(1200)).is_err());
    runner.del(&plain, &a0, Some(&r0)).expect("plain DEL");

    let p1 = Netns::new("crtq").expect("pod");
    let a1 = Attachment::eth0("routepod", &p1);
    let r1 = runner.add(&chained, &a1).expect("chained ADD");
    let routes = p1.exec_stdout(&["ip", "route"]).expect("pod routes");
    assert!(
        routes.contains("10.96.0.0/12 via 10.10.30.1 dev eth0"),
        "{routes}"
    );
    assert_eq!(
        r1["interfaces"].as_array().map(Vec::len),
        Some(3),
        "route mode adds no interface to bridge's three: {r1}"
    );
    let t = tcp_probe(&p1, vip, "hi", probe);
    if t.is_err() {
        dump(&[&p1, &host]);
    }
    assert_eq!(t.expect("TCP via host"), "hostproc:hi");
    assert_eq!(
        udp_probe(&p1, vip, "hu", probe).expect("UDP via host"),
        "hostproc:hu"
    );
    assert!(runner.registry_dir().join("routepod-eth0.json").exists());

    // DEL of our plugin alone takes its routes out of the pod again.
    let out = runner
        .exec(&chained, 1, "DEL", &a1, Some(&r1))
        .expect("DEL ours");
    assert_eq!(out.exit_code, 0, "{out:?}");
    let routes = p1.exec_stdout(&["ip", "route"]).expect("pod routes");
    assert!(!routes.contains("10.96.0.0/12"), "{routes}");
    assert!(!runner.registry_dir().join("routepod-eth0.json").exists());
    runner.del(&chained, &a1, Some(&r1)).expect("chained DEL");

    // A failure after the routes are in (registry not writable) takes them out again.
    let mut bad = chained.clone();
    bad["plugins"][1]["registryDir"] = json!("/proc/version/pods");
    let p2 = Netns::new("crtr").expect("pod");
    let a2 = Attachment::eth0("rollback", &p2);
    let outs = runner.add_outputs(&bad, &a2).expect("ADD ran");
    let last = outs.last().expect("outputs");
    assert_ne!(last.exit_code, 0, "{last:?}");
    assert_eq!(last.json().expect("error JSON")["code"], 5);
    let routes = p2.exec_stdout(&["ip", "route"]).expect("pod routes");
    assert!(!routes.contains("10.96.0.0/12"), "{routes}");
    let prev = outs[0].json().expect("bridge result");
    runner
        .del(&chained, &a2, Some(&prev))
        .expect("runtime's DEL");
}
