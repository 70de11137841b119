//! A node namespace (10.0.0.2, fd00::2) wired to a top-of-rack router namespace (10.0.0.1,
//! fd00::1) running gobgpd in AS 65001 with the node (AS 64512) as its neighbour: the lab the
//! single-agent tests share.

use super::{link_pair, Addrs, GobgpConfig, GobgpNeighbor, Gobgpd, Netns};

/// Build the pair. Bind the result as `let (ns_node, ns_tor, tor) = ...` so the daemon is
/// dropped before the namespaces. `graceful_restart` is the ToR's restart time, if any.
pub fn node_with_tor(tag: &str, graceful_restart: Option<u16>) -> (Netns, Netns, Gobgpd) {
    let ns_node = Netns::new(&format!("{tag}n")).expect("node namespace");
    let ns_tor = Netns::new(&format!("{tag}t")).expect("tor namespace");
    link_pair(
        &ns_node,
        &ns_tor,
        Addrs::new("10.0.0.2", "fd00::2"),
        Addrs::new("10.0.0.1", "fd00::1"),
    )
    .expect("veth");
    let tor = Gobgpd::start(
        &ns_tor,
        GobgpConfig {
            router_id: "10.0.0.1".parse().expect("literal"),
            asn: 65001,
            neighbors: vec![GobgpNeighbor {
                address: "10.0.0.2".parse().expect("literal"),
                asn: 64512,
                graceful_restart,
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .expect("gobgpd");
    (ns_node, ns_tor, tor)
}
