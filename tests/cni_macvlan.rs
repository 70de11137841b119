//! underroute-cni chained after macvlan (veth mode): an underlay pod reaches Service ClusterIPs
//! emulated the way kube-proxy does it (nftables DNAT in the host namespace), over TCP and UDP,
//! for a backend that is a bridge pod, a host-network process, or another macvlan pod; and the
//! same pod without our plugin cannot. Everything runs in namespaces made here: "lan" plays the
//! physical network and its router, "host" the node.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use underroute::testbed::cni::{tcp_probe, udp_probe, Attachment, CniRunner, EchoServer};
use underroute::testbed::{link_pair, require_root, Addrs, Netns};

const OUR_BIN: &str = env!("CARGO_BIN_EXE_underroute-cni");
const PROBE: Duration = Duration::from_secs(3);
const SHORT: Duration = Duration::from_millis(1200);

/// The node and its underlay: `host` with uplink 10.10.20.1/24 to `lan` (10.10.20.254, the
/// router), default route via the router, forwarding on (as on any Kubernetes node).
struct Lab {
    runner: CniRunner,
    uplink: String,
    host: Netns,
    _lan: Netns,
}

fn lab(tag: &str) -> Lab {
    let lan = Netns::new(&format!("{tag}l")).expect("lan namespace");
    let host = Netns::new(&format!("{tag}h")).expect("host namespace");
    let pair = link_pair(
        &lan,
        &host,
        Addrs::new("10.10.20.254", "fd00:20::254"),
        Addrs::new("10.10.20.1", "fd00:20::1"),
    )
    .expect("uplink");
    host.exec_ok(&["ip", "route", "add", "default", "via", "10.10.20.254"])
        .expect("default route");
    host.sysctl("net.ipv4.ip_forward", "1").expect("forwarding");
    let runner = CniRunner::new(&host, Path::new(OUR_BIN)).expect("runner");
    Lab {
        runner,
        uplink: pair.b_if,
        host,
        _lan: lan,
    }
}

impl Lab {
    fn macvlan_chain(&self, ours: Option<Value>) -> Value {
        let mut plugins = vec![json!({
            "type": "macvlan", "master": self.uplink, "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.10.20.0/24",
                     "rangeStart": "10.10.20.50", "rangeEnd": "10.10.20.99",
                     "gateway": "10.10.20.254", "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": self.runner.ipam_dir()}
        })];
        if let Some(mut o) = ours {
            o["type"] = json!("underroute-cni");
            o["registryDir"] = json!(self.runner.registry_dir());
            plugins.push(o);
        }
        json!({"cniVersion": "1.0.0", "name": "underlay", "plugins": plugins})
    }

    fn bridge_chain(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.244.0.0/24",
                     "dataDir": self.runner.ipam_dir()}
        }]})
    }

    /// kube-proxy's nftables mode in miniature: DNAT ClusterIP:80 to the backend, for
    /// traffic arriving (prerouting) and from host processes (output), TCP and UDP.
    fn services(&self, svcs: &[(&str, IpAddr, u16)]) {
        let mut rules = String::new();
        for (vip, be, port) in svcs {
            for proto in ["tcp", "udp"] {
                rules.push_str(&format!(
                    "ip daddr {vip} {proto} dport 80 dnat to {be}:{port}\n"
                ));
            }
        }
        let script = format!(
            "table ip kube {{\n chain pre {{ type nat hook prerouting priority dstnat; policy accept;\n{rules} }}\n \
             chain out {{ type nat hook output priority -100; policy accept;\n{rules} }}\n}}\n"
        );
        let f = self.host.dir().join("kube.nft");
        std::fs::write(&f, script).expect("nft script");
        self.host
            .exec_ok(&["nft", "-f", &f.display().to_string()])
            .expect("kube-proxy rules");
    }
}

/// On failure: what each namespace looks like.
fn dump(nss: &[&Netns]) {
    for ns in nss {
        for cmd in [
            &["ip", "addr"][..],
            &["ip", "route"],
            &["ip", "neigh"],
            &["nft", "list", "ruleset"],
            &[
                "sysctl",
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.ip_forward",
            ],
        ] {
            if let Ok(o) = ns.exec(cmd) {
                eprintln!(
                    "== {} {cmd:?}\n{}{}",
                    ns.name(),
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

fn first_ip(result: &Value) -> IpAddr {
    let s = result["ips"][0]["address"]
        .as_str()
        .expect("result has an address");
    s.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("address")
}

fn svc(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("vip"), 80)
}

#[test]
fn macvlan_pod_reaches_cluster_ips_of_every_backend_kind_through_the_veth() {
    if !require_root("macvlan_pod_reaches_cluster_ips_of_every_backend_kind_through_the_veth") {
        return;
    }
    let lab = lab("cmv");
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
    ]);

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

    // (c): the backend answers over its own macvlan unless the host masquerades; with ipMasq
    // the reply comes back through the host, where the DNAT is undone.
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
    let lab = lab("cmn");
    let _srv = EchoServer::start(&lab.host, 8081, "hostproc").expect("server");
    lab.services(&[("10.96.0.11", "10.10.20.1".parse().expect("ip"), 8081)]);
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
