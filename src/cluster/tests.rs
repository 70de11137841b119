use std::collections::BTreeMap;
use std::net::IpAddr;

use underroute_bgp::policy::ImportPolicy;

use super::*;

const FILE: &str = r#"
[node]
name = "n1"
router_id = "192.168.50.50"
asn = 64512
[cluster]
pod_cidrs = ["10.233.64.0/18"]
underlay_ranges = ["192.168.50.0/24"]
[[peer]]
address = "192.168.50.1"
asn = 65001
import = ["10.10.0.0/16 le 32"]
"#;

fn config() -> Config {
    Config::parse(FILE, "test").expect("valid")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("literal")
}

fn node(name: &str, addr: &str, cidr: &str, annotations: &[(&str, &str)]) -> NodeInfo {
    let map: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (settings, errors) = NodeSettings::from_annotations(&map, None);
    assert!(errors.is_empty(), "{errors:?}");
    NodeInfo {
        name: name.into(),
        addresses: vec![ip(addr)],
        pod_cidrs: vec![net(cidr)],
        settings,
    }
}

fn cluster(nodes: &[NodeInfo]) -> ClusterState {
    ClusterState {
        nodes: nodes.iter().map(|n| (n.name.clone(), n.clone())).collect(),
        pods: BTreeMap::new(),
    }
}

fn peer_addrs(d: &Desired) -> Vec<IpAddr> {
    d.peers.keys().copied().collect()
}

#[test]
fn every_other_node_is_a_mesh_peer_and_its_address_is_never_importable() {
    let me = node("n1", "192.168.50.50", "10.233.64.0/24", &[]);
    let state = cluster(&[
        me.clone(),
        node("n2", "192.168.50.51", "10.233.66.0/24", &[]),
        node("n3", "192.168.50.52", "10.233.68.0/24", &[]),
    ]);
    let d = desired(&config(), &me, &state);
    assert_eq!(
        peer_addrs(&d),
        vec![ip("192.168.50.1"), ip("192.168.50.51"), ip("192.168.50.52")]
    );
    assert_eq!(
        d.pod_cidrs.iter().copied().collect::<Vec<_>>(),
        vec![net("10.233.64.0/24")]
    );
    let mesh = &d.peers[&ip("192.168.50.51")];
    assert_eq!(mesh.asn.0, 64512);
    assert!(mesh.import.accepts(&net("10.233.68.0/24")));
    assert!(
        mesh.import.accepts(&net("192.168.50.77/32")),
        "an underlay pod"
    );
    for hijack in [
        "0.0.0.0/0",
        "192.168.50.52/32",
        "192.168.50.50/32",
        "192.168.50.1/32",
    ] {
        assert!(!mesh.import.accepts(&net(hijack)), "{hijack}");
    }
    // The top-of-rack peer keeps its own import list.
    let tor = &d.peers[&ip("192.168.50.1")];
    assert!(tor.import.accepts(&net("10.10.3.4/32")));
    assert!(!tor.import.accepts(&net("10.233.64.0/24")));
}

#[test]
fn a_node_that_joins_later_is_excluded_from_underlay_host_routes_from_then_on() {
    let me = node("n1", "192.168.50.50", "10.233.64.0/24", &[]);
    let n2 = node("n2", "192.168.50.51", "10.233.66.0/24", &[]);
    let before = desired(&config(), &me, &cluster(&[me.clone(), n2.clone()]));
    assert!(before.peers[&ip("192.168.50.51")]
        .import
        .accepts(&net("192.168.50.60/32")));
    let n3 = node("n3", "192.168.50.60", "10.233.68.0/24", &[]);
    let after = desired(&config(), &me, &cluster(&[me.clone(), n2, n3]));
    assert!(!after.peers[&ip("192.168.50.51")]
        .import
        .accepts(&net("192.168.50.60/32")));
    // Only the import policy of n2 changed: the agent updates it without a session reset.
    let (a, b) = (
        &before.peers[&ip("192.168.50.51")],
        &after.peers[&ip("192.168.50.51")],
    );
    assert_eq!(
        PeerConfig {
            import: ImportPolicy::Deny,
            ..a.clone()
        },
        PeerConfig {
            import: ImportPolicy::Deny,
            ..b.clone()
        }
    );
}

#[test]
fn mesh_off_leaves_only_configured_and_annotated_peers() {
    let mut cfg = config();
    cfg.cluster.mesh = false;
    let me = node(
        "n1",
        "192.168.50.50",
        "10.233.64.0/24",
        &[(
            ANNOTATION_PEERS,
            r#"[{"address": "192.168.50.2", "asn": 65001, "accept_default_route": true}]"#,
        )],
    );
    let d = desired(
        &cfg,
        &me,
        &cluster(&[
            me.clone(),
            node("n2", "192.168.50.51", "10.233.66.0/24", &[]),
        ]),
    );
    assert_eq!(peer_addrs(&d), vec![ip("192.168.50.1"), ip("192.168.50.2")]);
    let annotated = &d.peers[&ip("192.168.50.2")];
    assert!(annotated.import.accepts(&net("0.0.0.0/0")));
    assert!(!annotated.import.accepts(&net("10.233.66.0/24")));
}

#[test]
fn nodes_mesh_only_within_their_own_as() {
    let me = node(
        "n1",
        "192.168.50.50",
        "10.233.64.0/24",
        &[(ANNOTATION_ASN, "64601")],
    );
    let state = cluster(&[
        me.clone(),
        node(
            "n2",
            "192.168.50.51",
            "10.233.66.0/24",
            &[(ANNOTATION_ASN, "64601")],
        ),
        node("n3", "192.168.50.52", "10.233.68.0/24", &[]),
    ]);
    let d = desired(&config(), &me, &state);
    assert_eq!(d.asn, 64601);
    assert_eq!(
        peer_addrs(&d),
        vec![ip("192.168.50.1"), ip("192.168.50.51")]
    );
    assert_eq!(d.peers[&ip("192.168.50.51")].asn.0, 64601);
    // n3 (file default AS) meshes with the other default-AS nodes, not with n1 and n2.
    let n3 = state.nodes["n3"].clone();
    let d3 = desired(&config(), &n3, &state);
    assert_eq!(peer_addrs(&d3), vec![ip("192.168.50.1")]);
}

#[test]
fn route_reflector_clients_peer_only_with_reflectors() {
    let rr = (ANNOTATION_ROUTE_REFLECTOR, "true");
    let client = (ANNOTATION_ROUTE_REFLECTOR_CLIENT, "true");
    let nodes = [
        node("r1", "192.168.50.50", "10.233.64.0/24", &[rr]),
        node("r2", "192.168.50.51", "10.233.65.0/24", &[rr]),
        node("c1", "192.168.50.52", "10.233.66.0/24", &[client]),
        node("c2", "192.168.50.53", "10.233.67.0/24", &[client]),
        node("p1", "192.168.50.54", "10.233.68.0/24", &[]),
    ];
    let state = cluster(&nodes);
    let mut cfg = config();
    cfg.peers.clear();
    let of = |i: usize| {
        let mut c = cfg.clone();
        c.node.name = nodes[i].name.clone();
        c.node.router_id = match nodes[i].addresses[0] {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => unreachable!(),
        };
        desired(&c, &nodes[i], &state)
    };
    let r1 = of(0);
    assert_eq!(r1.peers.len(), 4, "a reflector peers with everyone");
    assert!(r1.peers[&ip("192.168.50.52")].route_reflector_client);
    assert!(
        !r1.peers[&ip("192.168.50.51")].route_reflector_client,
        "reflectors are non-clients to each other"
    );
    assert!(!r1.peers[&ip("192.168.50.54")].route_reflector_client);
    let c1 = of(2);
    assert_eq!(
        peer_addrs(&c1),
        vec![ip("192.168.50.50"), ip("192.168.50.51")]
    );
    let p1 = of(4);
    assert_eq!(
        peer_addrs(&p1),
        vec![ip("192.168.50.50"), ip("192.168.50.51")],
        "plain nodes reach the clients through the reflectors"
    );

    // Without any reflector the client flag would isolate the node: full mesh instead.
    let lonely = [nodes[2].clone(), nodes[3].clone(), nodes[4].clone()];
    let state = cluster(&lonely);
    let d = desired(&cfg, &lonely[0], &state);
    assert_eq!(
        peer_addrs(&d),
        vec![ip("192.168.50.53"), ip("192.168.50.54")]
    );
}

#[test]
fn a_bad_annotation_keeps_the_previous_value_and_names_itself() {
    let good: BTreeMap<String, String> = [
        (ANNOTATION_ASN.to_string(), "64700".to_string()),
        (
            ANNOTATION_PEERS.to_string(),
            r#"[{"address":"10.0.0.1","asn":65000}]"#.to_string(),
        ),
    ]
    .into();
    let (first, errors) = NodeSettings::from_annotations(&good, None);
    assert!(errors.is_empty());
    assert_eq!(first.asn, Some(64700));
    assert_eq!(first.peers.len(), 1);

    let bad: BTreeMap<String, String> = [
        (ANNOTATION_ASN.to_string(), "sixty".to_string()),
        (
            ANNOTATION_PEERS.to_string(),
            r#"[{"address":"10.0.0.1","asn":65000,"password":"x"}]"#.to_string(),
        ),
        (ANNOTATION_ROUTE_REFLECTOR.to_string(), "yes".to_string()),
    ]
    .into();
    let (kept, errors) = NodeSettings::from_annotations(&bad, Some(&first));
    assert_eq!(kept.asn, Some(64700));
    assert_eq!(kept.peers, first.peers);
    assert!(!kept.route_reflector);
    let named: Vec<&str> = errors.iter().map(|e| e.annotation).collect();
    assert_eq!(
        named,
        vec![ANNOTATION_ASN, ANNOTATION_PEERS, ANNOTATION_ROUTE_REFLECTOR]
    );
    assert!(errors[1].reason.contains("password"), "{}", errors[1]);

    let typo: BTreeMap<String, String> = [(
        ANNOTATION_PEERS.to_string(),
        r#"[{"adress":"10.0.0.1","asn":65000}]"#.to_string(),
    )]
    .into();
    let (_, errors) = NodeSettings::from_annotations(&typo, None);
    assert!(errors[0].reason.contains("adress"), "{}", errors[0]);
    let (_, errors) = NodeSettings::from_annotations(
        &[(
            ANNOTATION_PEERS.to_string(),
            r#"[{"address":"10.0.0.1","asn":65000,"hold_time":1}]"#.to_string(),
        )]
        .into(),
        None,
    );
    assert!(errors[0].reason.contains("[0].hold_time"), "{}", errors[0]);
}

#[test]
fn underlay_pods_become_host_routes_but_host_network_and_finished_pods_do_not() {
    let me = node("n1", "192.168.50.50", "10.233.64.0/24", &[]);
    let mut state = cluster(std::slice::from_ref(&me));
    let pod = |ips: &[&str], host_network: bool, terminated: bool| PodInfo {
        ips: ips.iter().map(|s| ip(s)).collect(),
        host_network,
        terminated,
    };
    state.pods.insert(
        "a/macvlan".into(),
        pod(&["192.168.50.77", "2001:db8::77"], false, false),
    );
    state
        .pods
        .insert("a/overlay".into(), pod(&["10.233.64.9"], false, false));
    state
        .pods
        .insert("a/host".into(), pod(&["192.168.50.50"], true, false));
    state
        .pods
        .insert("a/done".into(), pod(&["192.168.50.78"], false, true));
    let d = desired(&config(), &me, &state);
    assert_eq!(
        d.pod_hosts.iter().copied().collect::<Vec<_>>(),
        vec![net("192.168.50.77/32"), net("2001:db8::77/128")]
    );
}
