//! A node namespace (10.0.0.2, fd00::2) wired to a top-of-rack router namespace (10.0.0.1,
//! fd00::1) running gobgpd in AS 65001 with the node (AS 64512) as its neighbour: the lab the
//! single-agent tests share.

use std::path::{Path, PathBuf};

use super::{link_pair, Addrs, GobgpConfig, GobgpNeighbor, Gobgpd, Netns, Proc};

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

/// What a test adds to the node agent's config of this lab ([`write_node_config`]): lines
/// appended to the `[bgp]` table, to the ToR's `[[peer]]` table and to `[api]`, and whole tables
/// at the end.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeConfigExtras<'a> {
    pub bgp: &'a str,
    pub peer: &'a str,
    pub api: &'a str,
    pub tail: &'a str,
}

/// The agent's paths in the node's dir.
pub struct NodeFiles {
    pub config: PathBuf,
    pub registry: PathBuf,
    pub api_socket: PathBuf,
}

/// Writes the node agent's config for this lab: node1 (10.0.0.2, AS 64512, pod CIDR
/// 10.233.64.0/24 in 10.233.64.0/18), quick timers (hold 9 s, connect retry 1 s), the ToR as
/// its only peer, and the pod registry and API socket in the node's dir.
pub fn write_node_config(ns_node: &Netns, extras: NodeConfigExtras) -> NodeFiles {
    let dir = ns_node.dir();
    let files = NodeFiles {
        config: dir.join("underroute.toml"),
        registry: dir.join("pods"),
        api_socket: dir.join("api.sock"),
    };
    let text = format!(
        "[node]\nname = \"node1\"\nrouter_id = \"10.0.0.2\"\nasn = 64512\npod_cidrs = [\"10.233.64.0/24\"]\n\
         [cluster]\npod_cidrs = [\"10.233.64.0/18\"]\n\
         [bgp]\nlisten = [\"10.0.0.2\"]\nhold_time = 9\nconnect_retry = 1\n{}\n\
         [[peer]]\naddress = \"10.0.0.1\"\nasn = 65001\n{}\n\
         [registry]\ndir = \"{}\"\n\
         [api]\nsocket = \"{}\"\n{}\n{}\n",
        extras.bgp,
        extras.peer,
        files.registry.display(),
        files.api_socket.display(),
        extras.api,
        extras.tail,
    );
    std::fs::write(&files.config, text).expect("write the agent config");
    files
}

/// Starts `bin agent --config CONFIG` in the node namespace, its output in `agent.log` there.
pub fn start_agent(ns_node: &Netns, bin: &str, config: &Path) -> Proc {
    let cfg = config.to_string_lossy().into_owned();
    ns_node
        .spawn(
            bin,
            &["agent", "--config", &cfg],
            &ns_node.dir().join("agent.log"),
        )
        .expect("start the agent")
}
