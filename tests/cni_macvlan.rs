//! underroute-cni chained after macvlan (veth mode): an underlay pod reaches Service ClusterIPs
//! emulated the way kube-proxy does it (nftables DNAT in the host namespace), over TCP and UDP,
//! for a backend that is a bridge pod, a host-network process, or another macvlan pod; and the
//! same pod without our plugin cannot. Everything runs in namespaces made here: "lan" plays the
//! physical network and its router, "host" the node.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use underroute_testbed::cni::{
    dump, first_ip, tcp_probe, udp_probe, Attachment, EchoServer, UnderlayLab,
};
use underroute_testbed::{require_root, Netns};

const OUR_BIN: &str = env!("CARGO_BIN_EXE_underroute-cni");
const PROBE: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(1200);

fn svc(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("vip"), 80)
}

#[test]
fn macvlan_pod_reaches_cluster_ips_of_every_backend_kind_through_the_veth() {
    if !require_root("macvlan_pod_reaches_cluster_ips_of_every_backend_kind_through_the_veth") {
        return;
    }
    let lab = UnderlayLab::new("cmv", Path::new(OUR_BIN)).expect("lab");
    let ours =
        json!({"mode": "veth", "serviceCIDRs": ["10.96.0.0/12"], "extraCIDRs": ["10.244.0.0/16"]});
    let ours_masq = json!({"mode": "veth", "serviceCIDRs": ["10.96.0.0/12"], "ipMasq": true});

    // (a) a pod on a bridge pod CIDR, (b) a host-network process, (c) another macvlan pod.
    let bpod = Netns::new("cmvb").expect("bridge pod");
    let bridge = lab.bridge_chain();
    let b_att = Attachment::eth0("bpod", &bpod);
    let b_res = lab.runner.add(&bridge, &b_att).expect("bridge pod ADD");
    let b_ip = first_ip(&b_res);
    let _srv_a = EchoServer::start(&bpod, 8080, "bridgepod").expect("server a");
    let _srv_b = EchoServer::start(&lab.host, 8081, "hostproc").expect("server b");
    let mpod = Netns::new("cmvm").expect("macvlan backend pod");
    let chain_plain = lab.macvlan_chain(Some(ours.clone()));
    let m_att = Attachment::eth0("mbackend", &mpod);
    let m_res = lab
        .runner
        .add(&chain_plain, &m_att)
        .expect("macvlan backend ADD");
    let m_ip = first_ip(&m_res);
    let _srv_c = EchoServer::start(&mpod, 8082, "macvlanpod").expect("server c");
    lab.services(&[
        ("10.96.0.10", b_ip, 8080),
        ("10.96.0.11", "10.10.20.1".parse().expect("ip"), 8081),
        ("10.96.0.12", m_ip, 8082),
    ])
    .expect("kube-proxy rules");

    // The client pod: macvlan, then underroute-cni.
    let client = Netns::new("cmvc").expect("client pod");
    let c_att = Attachment::eth0("client", &client);
    let c_res = lab.runner.add(&chain_plain, &c_att).expect("client ADD");
    let c_ip = first_ip(&c_res);
    let ifaces = c_res["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifaces.len(), 3, "eth0 + host veth + pod veth: {c_res}");
    assert_eq!(ifaces[2]["name"], "ur0");
    assert_eq!(ifaces[2]["sandbox"], c_att.netns.clone().expect("netns"));

    // The host route to the pod carries underroute's protocol number.
    let host_veth = ifaces[1]["name"]
        .as_str()
        .expect("host veth name")
        .to_string();
    let r = lab
        .host
        .exec_stdout(&["ip", "-j", "route", "show", &format!("{c_ip}/32")])
        .expect("host route");
    let routes: Value = serde_json::from_str(&r).expect("ip -j");
    assert_eq!(routes[0]["dev"], host_veth.as_str(), "{r}");
    assert_eq!(
        routes[0]["protocol"]
            .as_str()
            .map(str::to_string)
            .or_else(|| routes[0]["protocol"].as_u64().map(|n| n.to_string())),
        Some("201".to_string()),
        "{r}"
    );
    let rec = lab.runner.registry_dir().join("client-eth0.json");
    let rec: Value =
        serde_json::from_slice(&std::fs::read(&rec).expect("registry file")).expect("record");
    assert_eq!(rec["hostVeth"], host_veth.as_str());
    assert_eq!(rec["ips"][0], format!("{c_ip}/24"));

    for (vip, tag) in [("10.96.0.10", "bridgepod"), ("10.96.0.11", "hostproc")] {
        let t = tcp_probe(&client, svc(vip), "hi", PROBE);
        if t.is_err() {
            dump(&[&client, &lab.host, &bpod]);
        }
        assert_eq!(t.expect("TCP to ClusterIP"), format!("{tag}:hi"));
        assert_eq!(
            udp_probe(&client, svc(vip), "hu", PROBE).expect("UDP to ClusterIP"),
            format!("{tag}:hu")
        );
    }

    // (c): the backend answers over its own macvlan unless the host masquerades, so without
    // ipMasq the client sees a reply from the wrong address; with ipMasq the reply comes back
    // through the host, where the DNAT is undone.
    assert!(tcp_probe(&client, svc("10.96.0.12"), "hi", SHORT).is_err());
    let mclient = Netns::new("cmvq").expect("masq client pod");
    let chain_masq = lab.macvlan_chain(Some(ours_masq));
    let q_att = Attachment::eth0("mclient", &mclient);
    let q_res = lab
        .runner
        .add(&chain_masq, &q_att)
        .expect("masq client ADD");
    assert_eq!(
        tcp_probe(&mclient, svc("10.96.0.12"), "hi", PROBE).expect("TCP to macvlan backend"),
        "macvlanpod:hi"
    );
    assert_eq!(
        udp_probe(&mclient, svc("10.96.0.12"), "hu", PROBE).expect("UDP to macvlan backend"),
        "macvlanpod:hu"
    );

    // DEL removes everything on the host: veth (and its routes), registry file, set element.
    let q_veth = q_res["interfaces"][1]["name"]
        .as_str()
        .expect("veth")
        .to_string();
    lab.runner
        .del(&chain_masq, &q_att, Some(&q_res))
        .expect("DEL");
    assert!(lab
        .host
        .exec(&["ip", "link", "show", &q_veth])
        .map(|o| !o.status.success())
        .unwrap_or(false));
    assert!(!lab.runner.registry_dir().join("mclient-eth0.json").exists());
    let set = lab
        .host
        .exec_stdout(&["nft", "list", "set", "inet", "underroute_cni", "masq_ifs"])
        .expect("set");
    assert!(!set.contains(&q_veth), "{set}");

    lab.runner
        .del(&chain_plain, &c_att, Some(&c_res))
        .expect("client DEL");
    lab.runner
        .del(&chain_plain, &m_att, Some(&m_res))
        .expect("backend DEL");
    lab.runner
        .del(&bridge, &b_att, Some(&b_res))
        .expect("bridge DEL");
}

#[test]
fn macvlan_pod_without_the_plugin_cannot_reach_a_cluster_ip() {
    if !require_root("macvlan_pod_without_the_plugin_cannot_reach_a_cluster_ip") {
        return;
    }
    let lab = UnderlayLab::new("cmn", Path::new(OUR_BIN)).expect("lab");
    let _srv = EchoServer::start(&lab.host, 8081, "hostproc").expect("server");
    lab.services(&[("10.96.0.11", "10.10.20.1".parse().expect("ip"), 8081)])
        .expect("kube-proxy rules");
    let pod = Netns::new("cmnp").expect("pod");
    let chain = lab.macvlan_chain(None);
    let att = Attachment::eth0("plain", &pod);
    let res = lab.runner.add(&chain, &att).expect("ADD");
    assert!(tcp_probe(&pod, svc("10.96.0.11"), "hi", SHORT).is_err());
    assert!(udp_probe(&pod, svc("10.96.0.11"), "hu", SHORT).is_err());
    // Not even the host's own address: a macvlan child cannot talk to its parent.
    let direct = SocketAddr::new("10.10.20.1".parse().expect("ip"), 8081);
    assert!(tcp_probe(&pod, direct, "hi", SHORT).is_err());
    lab.runner.del(&chain, &att, Some(&res)).expect("DEL");
}
