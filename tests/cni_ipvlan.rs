//! underroute-cni after macvlan and after ipvlan (L2) with a dual-stack pod: IPv4 and IPv6 ClusterIPs (nftables
//! DNAT to a host-network process) are reachable through the veth, and the host gets a /32 and
//! a /128 route to the pod with underroute's protocol number.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use underroute_testbed::cni::{dump, tcp_probe, udp_probe, Attachment, EchoServer, UnderlayLab};
use underroute_testbed::{require_root, Netns};

const OUR_BIN: &str = env!("CARGO_BIN_EXE_underroute-cni");

#[test]
fn dual_stack_macvlan_pod_reaches_v4_and_v6_cluster_ips() {
    if !require_root("dual_stack_macvlan_pod_reaches_v4_and_v6_cluster_ips") {
        return;
    }
    dual_stack("macvlan", json!({"mode": "bridge"}));
}

#[test]
#[ignore = "this kernel has no ipvlan (CONFIG_IPVLAN is not set and it has no module support); run with --ignored where it has"]
fn dual_stack_ipvlan_pod_reaches_v4_and_v6_cluster_ips() {
    if !require_root("dual_stack_ipvlan_pod_reaches_v4_and_v6_cluster_ips") {
        return;
    }
    // Run only on request; then a kernel without ipvlan is a failure with the reason, never a
    // pass. The probe's master is a veth (always there); each step must succeed.
    let probe = Netns::new("civk").expect("probe ns");
    probe
        .exec_ok(&[
            "ip", "link", "add", "pv0", "type", "veth", "peer", "name", "pv1",
        ])
        .expect("probe veth");
    let ipvlan = probe
        .exec(&[
            "ip", "link", "add", "link", "pv0", "iv0", "type", "ipvlan", "mode", "l2",
        ])
        .expect("ip link add runs");
    assert!(
        ipvlan.status.success(),
        "this kernel cannot make an ipvlan link: {}",
        String::from_utf8_lossy(&ipvlan.stderr).trim()
    );
    drop(probe);
    dual_stack("ipvlan", json!({"mode": "l2"}));
}

fn dual_stack(kind: &str, extra: Value) {
    let lab = UnderlayLab::new(&format!("c{}", &kind[..2]), Path::new(OUR_BIN)).expect("lab");
    let _srv = EchoServer::start(&lab.host, 8081, "hostproc").expect("server");
    let _srv6 = EchoServer::start_v6(&lab.host, 8083, "hostproc6").expect("v6 server");
    lab.services(&[("10.96.0.11", "10.10.20.1".parse().expect("ip"), 8081)])
        .expect("v4 service");
    let f = lab.host.dir().join("kube6.nft");
    let rules = "ip6 daddr fd96::11 tcp dport 80 dnat to [fd00:20::1]:8083\n\
                 ip6 daddr fd96::11 udp dport 80 dnat to [fd00:20::1]:8083\n";
    std::fs::write(
        &f,
        format!("table ip6 kube {{\nchain pre {{ type nat hook prerouting priority dstnat; policy accept;\n{rules}\n}}\n}}\n"),
    )
    .expect("nft file");
    lab.host
        .exec_ok(&["nft", "-f", &f.display().to_string()])
        .expect("v6 service");

    let mut main = json!({"type": kind, "master": lab.uplink,
         "ipam": {"type": "host-local", "dataDir": lab.runner.ipam_dir(),
                  "ranges": [[{"subnet": "10.10.20.0/24", "rangeStart": "10.10.20.100", "rangeEnd": "10.10.20.120"}],
                             [{"subnet": "fd00:20::/64", "rangeStart": "fd00:20::100", "rangeEnd": "fd00:20::120"}]]}});
    if let (Some(m), Some(e)) = (main.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    let chain = json!({"cniVersion": "1.0.0", "name": "underlay6", "plugins": [
        main,
        {"type": "underroute-cni", "serviceCIDRs": ["10.96.0.0/12", "fd96::/108"],
         "registryDir": lab.runner.registry_dir()}
    ]});
    let pod = Netns::new(&format!("c{}p", &kind[..2])).expect("pod");
    let att = Attachment::eth0("dual", &pod);
    let res = lab.runner.add(&chain, &att).expect("ADD");
    let ips: Vec<String> = res["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|i| i["address"].as_str())
        .filter_map(|a| a.split('/').next().map(str::to_string))
        .collect();
    assert_eq!(ips.len(), 2, "{res}");
    for ip in &ips {
        let r = lab
            .host
            .exec_stdout(&[
                "ip",
                if ip.contains(':') { "-6" } else { "-4" },
                "-j",
                "route",
                "show",
                "proto",
                "201",
                ip,
            ])
            .expect("host route");
        let v: Value = serde_json::from_str(&r).expect("ip -j");
        assert_eq!(v.as_array().map(Vec::len), Some(1), "route to {ip}: {r}");
    }
    let v4 = SocketAddr::new("10.96.0.11".parse().expect("vip"), 80);
    let v6 = SocketAddr::new("fd96::11".parse().expect("vip6"), 80);
    let t = tcp_probe(&pod, v6, "hi", Duration::from_secs(3));
    if t.is_err() {
        dump(&[&pod, &lab.host]);
    }
    assert_eq!(t.expect("TCP v6"), "hostproc6:hi");
    assert_eq!(
        udp_probe(&pod, v6, "hu", Duration::from_secs(3)).expect("UDP v6"),
        "hostproc6:hu"
    );
    assert_eq!(
        tcp_probe(&pod, v4, "hi", Duration::from_secs(3)).expect("TCP v4"),
        "hostproc:hi"
    );
    lab.runner.del(&chain, &att, Some(&res)).expect("DEL");
}
