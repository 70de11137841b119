//! `underroute demo` as a user runs it: exit 0, sessions up on every node, packets across nodes,
//! and nothing left behind.

use std::process::Command;
use std::time::Duration;

use underroute_testbed::{require_root, run_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_underroute");

#[test]
fn demo_builds_a_three_node_mesh_pings_across_it_and_cleans_up() {
    if !require_root("demo_builds_a_three_node_mesh_pings_across_it_and_cleans_up") {
        return;
    }
    let out = run_bounded(Command::new(BIN).arg("demo"), Duration::from_secs(120)).expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every node shows two established sessions (gobgp's neighbor layout).
    assert_eq!(
        text.lines().filter(|l| l.contains("Establ")).count(),
        6,
        "{text}"
    );
    for want in [
        "ping from pod on node1 to pod on node2 (10.233.66.2): ok",
        "ping from pod on node3 to underlay pod on node2 (192.168.50.100): ok",
        "10.233.68.0/24 via 192.168.50.52",
        "192.168.50.100 via 192.168.50.51",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The demo's namespaces are gone (the process that made them has exited).
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let clean = no_demo_namespaces(&String::from_utf8_lossy(&list.stdout));
    assert!(clean, "demo namespaces left behind");
}

/// No `ur-demo*` namespace remains. Names carry the creator's pid, and only the demo process
/// (now gone) makes `demo` ones, so any left is a leak.
fn no_demo_namespaces(list: &str) -> bool {
    !list.lines().any(|l| l.starts_with("ur-demo"))
}
