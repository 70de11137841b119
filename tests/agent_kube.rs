//! Kubernetes mode: agents (the real binary) in network namespaces, watching a fake API server
//! that speaks the real list/watch wire format (tests/testbed/src/apiserver.rs) from inside the
//! fabric. Nodes join, change annotations, leave and come back, pods come and go, and the API
//! server dies and returns with its history compacted (410 Gone) - all without restarting an
//! agent, and without losing routes while the API server is away.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use underroute_testbed::apiserver::{self, FakeApiServer};
use underroute_testbed::fabric::InCluster;
use underroute_testbed::fabric::{
    ping_once, standard_mesh, wait_converged, Fabric, MeshNode, NodeSpec,
};
use underroute_testbed::incluster::ServiceAccount;
use underroute_testbed::{require_root, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_underroute");
const API: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 250), 6443);

/// A fabric with the fake API server on it and `n` node namespaces (agents not started).
struct KubeLab {
    // Agents first: they must die before the API server and the namespaces go.
    nodes: Vec<MeshNode>,
    spares: Vec<NodeSpec>,
    api: FakeApiServer,
    fabric: Fabric,
    mesh: underroute_testbed::fabric::MeshSpec,
    tag: String,
}

impl KubeLab {
    /// `n` nodes registered and started, `spare` more specs kept for nodes that join later.
    fn new(tag: &str, n: usize, spare: usize) -> KubeLab {
        KubeLab::build(tag, n, spare, false, |_| {})
    }

    /// The same, with `before` run on the API server before any agent starts, and with
    /// `in_cluster` the agents configured the way a pod is (service account, TLS, no
    /// kubeconfig) instead of by a kubeconfig over plain HTTP.
    fn build(
        tag: &str,
        n: usize,
        spare: usize,
        in_cluster: bool,
        before: impl FnOnce(&FakeApiServer),
    ) -> KubeLab {
        let (specs, mut mesh) = standard_mesh((n + spare) as u8);
        let fabric = Fabric::new(tag).expect("fabric");
        let api = FakeApiServer::new();
        let listener = fabric
            .listen_tcp(API, 24)
            .expect("API listener in the fabric");
        if in_cluster {
            let sa = ServiceAccount::new(std::net::IpAddr::V4(*API.ip())).expect("service account");
            api.require_token(sa.token());
            let addr = api
                .serve_tls(listener, sa.server_config().expect("TLS config"))
                .expect("serve over TLS");
            mesh.in_cluster = Some(InCluster {
                service_account: std::sync::Arc::new(sa),
                server: addr,
            });
        } else {
            let addr = api.serve(listener).expect("serve");
            let kubeconfig = fabric.netns().dir().join("kubeconfig");
            api.write_kubeconfig(&kubeconfig, addr).expect("kubeconfig");
            mesh.kubeconfig = Some(kubeconfig);
        }
        before(&api);
        let mut lab = KubeLab {
            nodes: Vec::new(),
            spares: specs[n..].to_vec(),
            api,
            fabric,
            mesh,
            tag: tag.to_string(),
        };
        for s in &specs[..n] {
            lab.join(s.clone(), &[]);
        }
        lab
    }

    /// Registers `spec` as a Node (with `annotations`) and starts its agent.
    fn join(&mut self, spec: NodeSpec, annotations: &[(&str, &str)]) {
        self.register(&spec, annotations);
        let mut node = MeshNode::new(&self.fabric, &self.tag, spec, &self.mesh, Path::new(BIN))
            .expect("node namespace");
        node.start().expect("agent starts");
        self.nodes.push(node);
    }

    fn register(&self, spec: &NodeSpec, annotations: &[(&str, &str)]) {
        self.api
            .apply(apiserver::node(
                &spec.name,
                &spec.address.to_string(),
                &[&spec.pod_cidr.to_string()],
                annotations,
            ))
            .expect("apply node");
    }

    fn node(&self, name: &str) -> &MeshNode {
        self.nodes
            .iter()
            .find(|n| n.spec.name == name)
            .expect("known node")
    }

    fn alive(&mut self) {
        for n in &mut self.nodes {
            n.check_alive().expect("agent alive");
        }
    }

    /// Waits until every node in `on` has (or, with `present` false, lacks) `route` in its
    /// kernel.
    fn wait_route(&self, on: &[&str], route: &str, present: bool) {
        let res = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            on.iter()
                .all(|n| self.node(n).kernel_routes().contains(route) == present)
                .then_some(())
        });
        if let Err(e) = res {
            let tables: Vec<String> = on
                .iter()
                .map(|n| format!("{n}:\n{}", self.node(n).kernel_routes()))
                .collect();
            for n in &self.nodes {
                n.ns.dump_logs();
            }
            panic!(
                "{route:?} {} on {on:?}: {e}\n{}",
                if present { "missing" } else { "still there" },
                tables.join("\n")
            );
        }
    }

    fn wait_established(&self, name: &str, want: usize) {
        let node = self.node(name);
        wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
            (node.established() == want).then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{name}: not {want} sessions: {e}\n{}",
                node.cli(&["neighbor"]).unwrap_or_default()
            )
        });
    }

    /// Waits until `name`'s /metrics has a line equal to `line`.
    fn wait_metric(&self, name: &str, line: &str) {
        let node = self.node(name);
        let scrape = || {
            node.ns
                .exec_stdout(&["curl", "-sf", "http://127.0.0.1:9479/metrics"])
                .unwrap_or_default()
        };
        wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            scrape().lines().any(|l| l == line).then_some(())
        })
        .unwrap_or_else(|e| panic!("{name}: no {line:?} in /metrics: {e}\n{}", scrape()));
    }

    fn converge(&self) -> Duration {
        let t = wait_converged(&self.nodes, Duration::from_secs(40)).unwrap_or_else(|e| {
            for n in &self.nodes {
                n.ns.dump_logs();
            }
            panic!("{e}")
        });
        eprintln!("{} nodes converged in {t:?}", self.nodes.len());
        t
    }
}

#[test]
fn kube_mode_follows_nodes_annotations_and_pods_live() {
    if !require_root("kube_mode_follows_nodes_annotations_and_pods_live") {
        return;
    }
    let mut lab = KubeLab::new("k1", 3, 1);
    lab.converge();

    // A node added to the cluster: every agent peers with it, no restart.
    let spare = lab.spares.remove(0);
    lab.join(spare, &[]);
    lab.converge();
    for n in ["node1", "node2", "node3", "node4"] {
        lab.wait_established(n, 3);
    }

    // Node updates: node1 becomes a route reflector, node2 and node3 its clients. The clients
    // drop every session but the one to node1, and routes still reach everyone (reflected,
    // next hop unchanged).
    let rr = [("underroute.io/route-reflector", "true")];
    let client = [("underroute.io/route-reflector-client", "true")];
    lab.register(&lab.node("node1").spec.clone(), &rr);
    lab.register(&lab.node("node2").spec.clone(), &client);
    lab.register(&lab.node("node3").spec.clone(), &client);
    lab.wait_established("node2", 1);
    lab.wait_established("node3", 1);
    lab.wait_established("node4", 1);
    lab.wait_established("node1", 3);
    lab.converge();

    // Node removal: node4 leaves the cluster; its pod CIDR goes from every kernel.
    let node4_cidr = format!("{} via 192.168.50.53", lab.node("node4").spec.pod_cidr);
    lab.api.delete("Node", None, "node4").expect("delete node4");
    lab.wait_route(&["node1", "node2", "node3"], &node4_cidr, false);
    lab.wait_established("node1", 2);
    // ... and re-added: restored without restarting anything.
    lab.register(&lab.node("node4").spec.clone(), &[]);
    lab.wait_route(&["node1", "node2", "node3"], &node4_cidr, true);
    lab.converge();
    // Real packets: a pod on a client reaches the re-added node's pod (through routes the
    // reflector carried).
    let (from, to) = (lab.node("node2"), lab.node("node4"));
    assert!(
        ping_once(&from.pod, to.pod_ip()),
        "pod on node2 cannot reach the pod on node4 ({})",
        to.pod_ip()
    );

    // Pods on node2: an underlay pod's /32 reaches every other kernel; a host-network pod (the
    // node's own address) and a pod-CIDR pod add nothing; deleting the pod withdraws it.
    lab.api
        .apply(apiserver::pod(
            "default",
            "macvlan-web",
            "node2",
            &["192.168.50.120"],
            false,
        ))
        .expect("apply pod");
    lab.api
        .apply(apiserver::pod(
            "kube-system",
            "host-agent",
            "node2",
            &["192.168.50.51"],
            true,
        ))
        .expect("apply pod");
    lab.api
        .apply(apiserver::pod(
            "default",
            "plain",
            "node2",
            &["10.233.66.7"],
            false,
        ))
        .expect("apply pod");
    lab.wait_route(
        &["node1", "node3", "node4"],
        "192.168.50.120 via 192.168.50.51",
        true,
    );
    for n in ["node1", "node3", "node4"] {
        let routes = lab.node(n).kernel_routes();
        assert!(!routes.contains("192.168.50.51 via"), "{n}: {routes}");
        assert!(!routes.contains("10.233.66.7"), "{n}: {routes}");
    }
    // The receivers' mesh filter would refuse a node address anyway, so look at the source:
    // node2 advertises the underlay pod's /32 to its reflector, and neither the host-network
    // pod's address nor the pod-CIDR pod's.
    let adj_out = lab
        .node("node2")
        .cli(&["neighbor", "192.168.50.50", "adj-out"])
        .expect("node2's adj-out to node1");
    assert!(adj_out.contains("192.168.50.120/32"), "{adj_out}");
    assert!(!adj_out.contains("192.168.50.51/32"), "{adj_out}");
    assert!(!adj_out.contains("10.233.66.7/32"), "{adj_out}");
    lab.api
        .delete("Pod", Some("default"), "macvlan-web")
        .expect("delete pod");
    lab.wait_route(&["node1", "node3", "node4"], "192.168.50.120", false);

    // A per-node AS and annotation peers, live: node4 moves to AS 64513 and so leaves the mesh
    // (its sessions close, its pod CIDR goes everywhere). Then node1 and node4 name each other
    // in underroute.io/peers: an eBGP session brings node4's pod CIDR back, to node1 directly
    // and to the others through node1 (next-hop-self for an eBGP-learned route).
    let node4 = lab.node("node4").spec.clone();
    lab.register(
        &node4,
        &[
            ("underroute.io/asn", "64513"),
            (
                "underroute.io/peers",
                r#"[{"address": "192.168.50.50", "asn": 64512, "import": ["10.233.64.0/18 le 24"]}]"#,
            ),
        ],
    );
    lab.wait_route(
        &["node1", "node2", "node3"],
        &node4.pod_cidr.to_string(),
        false,
    );
    lab.wait_established("node4", 0);
    lab.register(
        &lab.node("node1").spec.clone(),
        &[
            rr[0],
            (
                "underroute.io/peers",
                r#"[{"address": "192.168.50.53", "asn": 64513, "import": ["10.233.64.0/18 le 24"]}]"#,
            ),
        ],
    );
    lab.wait_route(&["node1"], &node4_cidr, true);
    let via_node1 = format!("{} via 192.168.50.50", node4.pod_cidr);
    lab.wait_route(&["node2", "node3"], &via_node1, true);
    lab.wait_route(&["node4"], "10.233.66.0/24 via 192.168.50.50", true);
    lab.wait_established("node4", 1);
    lab.alive();
}

#[test]
fn api_server_outage_keeps_routes_and_a_restart_with_410_gone_catches_up() {
    if !require_root("api_server_outage_keeps_routes_and_a_restart_with_410_gone_catches_up") {
        return;
    }
    let mut lab = KubeLab::new("k2", 3, 0);
    lab.converge();
    let lists_before = node_lists(&lab.api);

    lab.wait_metric("node1", "underroute_kubernetes_nodes 3");
    lab.wait_metric(
        "node1",
        "underroute_kubernetes_watch_up{resource=\"nodes\"} 1",
    );
    for n in ["node1", "node2", "node3"] {
        lab.wait_established(n, 2);
    }
    // Every session's flap counter and up-since time: unchanged later means no session went
    // down in between, however briefly.
    let sessions_before: Vec<_> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| sessions(lab.node(n)))
        .collect();

    // The API server dies: nothing is withdrawn, sessions stay up, the metrics say so.
    lab.api.stop();
    lab.wait_metric(
        "node1",
        "underroute_kubernetes_watch_up{resource=\"nodes\"} 0",
    );
    std::thread::sleep(Duration::from_secs(2));
    lab.alive();
    lab.converge();
    for (n, before) in ["node1", "node2", "node3"].iter().zip(&sessions_before) {
        assert_eq!(
            &sessions(lab.node(n)),
            before,
            "{n}: a session flapped while the API server was down"
        );
    }

    // While it is down the cluster changes; it comes back with its watch history compacted, so
    // every agent's watch from its old resourceVersion is answered 410 Gone and re-lists.
    let node3_cidr = format!("{} via 192.168.50.52", lab.node("node3").spec.pod_cidr);
    lab.api.delete("Node", None, "node3").expect("delete node3");
    lab.api
        .apply(apiserver::pod(
            "default",
            "dhcp-db",
            "node1",
            &["192.168.50.130"],
            false,
        ))
        .expect("apply pod");
    lab.api.compact();
    let compacted = lab.api.resource_version();
    let requests_at_restart = lab.api.requests().len();
    let listener = lab.fabric.listen_tcp(API, 24).expect("API listener again");
    let addr = lab.api.serve(listener).expect("serve again");
    assert_eq!(addr, SocketAddr::V4(API));

    lab.wait_route(&["node1", "node2"], &node3_cidr, false);
    lab.wait_route(&["node2"], "192.168.50.130 via 192.168.50.50", true);
    lab.wait_metric(
        "node1",
        "underroute_kubernetes_watch_up{resource=\"nodes\"} 1",
    );
    lab.wait_metric("node1", "underroute_kubernetes_nodes 2");
    lab.wait_metric("node1", "underroute_kubernetes_pods 1");
    let (from, to) = (lab.node("node1"), lab.node("node2"));
    assert!(ping_once(&from.pod, to.pod_ip()), "pods lost each other");
    // Since the restart: every agent (node3's still runs, its Node is gone) resumed its Node
    // watch from a version the server no longer has, got 410 Gone, and listed again. Each
    // agent does so at its own pace (node3's is waited for by nothing above), so the count is
    // waited for, bounded.
    let count = || {
        let after = lab.api.requests().split_off(requests_at_restart);
        let stale_watches = after
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/nodes?"))
            .filter(|r| {
                let q = query(r);
                q.contains_key("watch")
                    && q.get("resourceVersion")
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|v| v < compacted)
            })
            .count();
        let relists = after
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/nodes") && !r.contains("watch="))
            .count();
        (stale_watches, relists, after)
    };
    let caught_up = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        let (stale, relists, _) = count();
        (stale >= 3 && relists >= 3).then_some(())
    });
    let (stale_watches, relists, after) = count();
    assert!(
        caught_up.is_ok(),
        "{stale_watches} stale Node watches (410) and {relists} Node lists since the restart: {after:?}"
    );
    assert!(node_lists(&lab.api) >= lists_before + 3);
    for (n, before) in ["node1", "node2"].iter().zip(&sessions_before) {
        let now = sessions(lab.node(n));
        for (peer, state) in before {
            // node3 left the cluster, so its sessions went; the others never dropped.
            if peer != "192.168.50.52" {
                assert_eq!(
                    now.get(peer),
                    Some(state),
                    "{n}: session with {peer} flapped"
                );
            }
        }
    }
    lab.alive();
}

#[test]
fn kube_mode_in_cluster_reads_the_service_account_and_talks_tls_with_its_token() {
    // The agent as a DaemonSet pod runs it: `--kube`, no kubeconfig, KUBERNETES_SERVICE_HOST
    // and _PORT set, the service account's ca.crt, token and namespace at
    // /var/run/secrets/kubernetes.io/serviceaccount (a private mount of the test's own), an
    // API server with a certificate of that CA that refuses requests without the token.
    if !require_root("kube_mode_in_cluster_reads_the_service_account_and_talks_tls_with_its_token")
    {
        return;
    }
    let mut lab = KubeLab::build("k3", 2, 0, true, |_| {});
    lab.converge();
    lab.wait_metric(
        "node1",
        "underroute_kubernetes_watch_up{resource=\"nodes\"} 1",
    );
    let (from, to) = (lab.node("node1"), lab.node("node2"));
    assert!(
        ping_once(&from.pod, to.pod_ip()),
        "pods cannot reach each other"
    );
    let requests = lab.api.requests();
    assert!(
        requests.iter().any(|r| r.starts_with("GET /api/v1/nodes")),
        "{requests:?}"
    );
    lab.alive();
}

#[test]
fn kube_mode_reads_paged_lists_keeps_terminating_pods_and_survives_a_hung_api_server() {
    if !require_root(
        "kube_mode_reads_paged_lists_keeps_terminating_pods_and_survives_a_hung_api_server",
    ) {
        return;
    }
    // More pods on node1 than kube-rs asks for in one page (500), the underlay pod last in
    // list order: its route can only come from the second page.
    let mut lab = KubeLab::build("k4", 2, 0, false, |api| {
        for i in 0..600 {
            let ip = format!("10.233.64.{}", 10 + i % 200);
            api.apply(apiserver::pod(
                "default",
                &format!("filler-{i:03}"),
                "node1",
                &[&ip],
                false,
            ))
            .expect("apply pod");
        }
        api.apply(apiserver::pod(
            "default",
            "zz-underlay",
            "node1",
            &["192.168.50.121"],
            false,
        ))
        .expect("apply pod");
    });
    lab.converge();
    lab.wait_route(&["node2"], "192.168.50.121 via 192.168.50.50", true);
    let requests = lab.api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/pods?") && r.contains("continue=")),
        "node1 never asked for a second page of pods: {requests:?}"
    );

    // Graceful deletion: the pod is terminating (deletionTimestamp set) but still runs, so its
    // route stays until the object is gone.
    lab.api
        .begin_delete("Pod", Some("default"), "zz-underlay", 30)
        .expect("begin delete");
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            lab.node("node2")
                .kernel_routes()
                .contains("192.168.50.121 via 192.168.50.50"),
            "a terminating pod's route went before the pod"
        );
    }
    lab.api
        .delete("Pod", Some("default"), "zz-underlay")
        .expect("delete");
    lab.wait_route(&["node2"], "192.168.50.121", false);

    // A hung API server: connections accepted, nothing answered, open watches silent. Routing
    // stays as it was; once the server answers again the agents give up on the silent watch
    // (bounded by the watch timeout) and catch up with what changed meanwhile.
    let sessions_before = sessions(lab.node("node2"));
    lab.api.hang();
    lab.api
        .apply(apiserver::pod(
            "default",
            "while-hung",
            "node1",
            &["192.168.50.122"],
            false,
        ))
        .expect("apply pod");
    std::thread::sleep(Duration::from_secs(3));
    lab.converge();
    assert!(!lab.node("node2").kernel_routes().contains("192.168.50.122"));
    lab.api.unhang();
    let res = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        lab.node("node2")
            .kernel_routes()
            .contains("192.168.50.122 via 192.168.50.50")
            .then_some(())
    });
    if let Err(e) = res {
        for n in &lab.nodes {
            n.ns.dump_logs();
        }
        panic!("the agents never caught up after the hung API server: {e}");
    }
    assert_eq!(
        sessions(lab.node("node2")),
        sessions_before,
        "a session flapped"
    );
    lab.alive();
}

/// The query parameters of a logged request (`GET /path?query`), percent-decoding left out:
/// the keys and values compared here are plain.
fn query(request: &str) -> std::collections::HashMap<String, String> {
    request
        .split_once('?')
        .map_or("", |(_, q)| q)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A node's sessions as `neighbor -j` shows them: peer address -> (flaps, up since).
fn sessions(node: &MeshNode) -> std::collections::BTreeMap<String, (u64, i64)> {
    let text = node.cli(&["neighbor", "-j"]).expect("neighbor -j");
    let peers: serde_json::Value = serde_json::from_str(&text).expect("neighbor JSON");
    peers
        .as_array()
        .expect("a list of peers")
        .iter()
        .map(|p| {
            let addr = p["conf"]["neighbor_address"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let flops = p["state"]["flops"].as_u64().unwrap_or(0);
            let up = p["timers"]["state"]["uptime"]["seconds"]
                .as_i64()
                .unwrap_or(0);
            assert!(
                up > 0,
                "{}: session with {addr} not up: {p}",
                node.spec.name
            );
            (addr, (flops, up))
        })
        .collect()
}

/// How many Node lists (not watches) the server has answered.
fn node_lists(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| r.starts_with("GET /api/v1/nodes") && !r.contains("watch="))
        .count()
}
