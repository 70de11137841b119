//! `underroute agent --config FILE` as an operator runs it: the real binary, in a namespace,
//! with a gobgpd top-of-rack router as its peer.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use underroute_testbed::tor::{self, NodeConfigExtras};
use underroute_testbed::{require_root, wait_until, Family, RouteAttrs, RouteMonitor};

const BIN: &str = env!("CARGO_BIN_EXE_underroute");

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

#[test]
fn bad_configuration_is_refused_with_file_key_and_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        ("[node]\nname = \"n\"\nrouter_id = \"1.2.3.4\"\nasn = 0\n", "key `node.asn`"),
        ("[node]\nname = \"n\"\nrouter_id = \"1.2.3.4\"\nasn = 64512\nbogus = 1\n", "unknown field `bogus`"),
        (
            "[node]\nname = \"n\"\nrouter_id = \"1.2.3.4\"\nasn = 64512\n[[peer]]\naddress = \"10.0.0.1\"\nasn = 65000\nimport = [\"10.0.0.0/8 le 99\"]\n",
            "key `peer[0].import[0]`",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        let out = Command::new(BIN)
            .args(["agent", "--check", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} must fail");
        assert!(
            err.contains(&path.display().to_string()) && err.contains(want),
            "case {i}: {err}"
        );
    }
    let out = Command::new(BIN)
        .args(["agent", "--check"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "the embedded default is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn agent_peers_with_a_top_of_rack_router_installs_routes_survives_sigkill_and_withdraws_on_sigterm()
{
    if !require_root("agent_peers_with_a_top_of_rack_router_installs_routes_survives_sigkill_and_withdraws_on_sigterm")
    {
        return;
    }
    let (ns_node, _ns_tor, tor) = tor::node_with_tor("agent", None);
    let files = tor::write_node_config(
        &ns_node,
        NodeConfigExtras {
            peer: "accept_default_route = true\nimport = [\"198.51.100.0/24\"]",
            ..Default::default()
        },
    );
    let (registry_dir, api_socket) = (&files.registry, &files.api_socket);
    let mut agent = tor::start_agent(&ns_node, BIN, &files.config);
    tor.wait_established(ip("10.0.0.2"), Duration::from_secs(15))
        .expect("session up");
    tor.add_route(
        "0.0.0.0/0".parse().expect("literal"),
        None,
        &RouteAttrs::default(),
    )
    .expect("default route");
    // Not in this peer's import list: must never reach the node's kernel.
    tor.add_route(
        "10.233.65.0/24".parse().expect("literal"),
        None,
        &RouteAttrs::default(),
    )
    .expect("hijack");
    let r = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        tor.rib(Family::Ipv4)
            .ok()?
            .into_iter()
            .find(|r| r.prefix == "10.233.64.0/24".parse().expect("literal"))
    })
    .expect("the ToR learned the pod CIDR");
    assert_eq!(r.nexthop, Some(ip("10.0.0.2")));
    assert_eq!(r.as_path, vec![64512]);

    // The operator's view, through the agent's API on its unix socket (gobgp's layout).
    let out = Command::new(BIN)
        .args(["neighbor", "--socket"])
        .arg(api_socket)
        .output()
        .expect("underroute neighbor");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("10.0.0.1") && text.contains("Establ"),
        "{text}"
    );

    // An underlay pod recorded by the CNI plugin: its /32 is advertised, and withdrawn when the
    // record goes.
    let registry = underroute::podregistry::PodRegistry::new(registry_dir);
    let pod = underroute::podregistry::PodRecord {
        container_id: "c0ffee".into(),
        ifname: "eth0".into(),
        netns: "/var/run/netns/pod".into(),
        ips: vec!["10.10.20.5/24".parse().expect("literal")],
        mode: underroute::cni::config::Mode::Veth,
        host_veth: None,
        created_unix: 0,
    };
    registry.record(&pod).expect("record the pod");
    let pod_route: ipnet::IpNet = "10.10.20.5/32".parse().expect("literal");
    let has_pod = || {
        tor.rib(Family::Ipv4)
            .map(|r| r.iter().any(|e| e.prefix == pod_route))
            .unwrap_or(false)
    };
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        has_pod().then_some(())
    })
    .expect("the ToR learned the underlay pod's /32");
    registry.remove("c0ffee", "eth0").expect("remove the pod");
    wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        (!has_pod()).then_some(())
    })
    .expect("the pod's /32 withdrawn when it goes");

    // The accepted route reaches the kernel with our protocol number, the refused one does not.
    let kernel_default = || {
        ns_node
            .exec_stdout(&["ip", "-4", "route", "show", "default", "proto", "201"])
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        kernel_default().contains("via 10.0.0.1").then_some(())
    })
    .expect("default route via the ToR installed with proto 201");
    let all = ns_node
        .exec_stdout(&["ip", "-4", "route", "show", "table", "all"])
        .expect("routes");
    assert!(
        !all.contains("10.233.65.0/24"),
        "a prefix outside the import list was installed:\n{all}"
    );

    // SIGKILL leaves the kernel routes in place; the restarted agent adopts them, keeps what the
    // ToR still announces and sweeps what it withdrew meanwhile, once the session has settled
    // (watched with the kernel's own notifications).
    tor.add_route(
        "198.51.100.0/24".parse().expect("literal"),
        None,
        &RouteAttrs::default(),
    )
    .expect("second route");
    let kernel_has = |prefix: &str| {
        ns_node
            .exec_stdout(&["ip", "-4", "route", "show", prefix, "proto", "201"])
            .unwrap_or_default()
            .contains("via 10.0.0.1")
    };
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        kernel_has("198.51.100.0/24").then_some(())
    })
    .expect("second route installed");
    // Watch the kernel from before the kill until the restarted agent has settled: polling
    // would miss a route deleted and put back in between.
    let mon = RouteMonitor::start(&ns_node).expect("route monitor");
    agent.signal(libc::SIGKILL).expect("SIGKILL");
    agent.wait_exit(Duration::from_secs(5)).expect("agent gone");
    tor.del_route("198.51.100.0/24".parse().expect("literal"))
        .expect("withdrawn while the agent is down");
    // The ToR has seen the old session go, so "established" below is the new one.
    wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        tor.neighbor_state(ip("10.0.0.2"))
            .is_ok_and(|s| s != "established")
            .then_some(())
    })
    .expect("the ToR saw the killed agent's session close");
    assert!(
        kernel_default().contains("via 10.0.0.1") && kernel_has("198.51.100.0/24"),
        "both routes still in the kernel while no agent runs"
    );
    let restarted = Instant::now();
    let agent = tor::start_agent(&ns_node, BIN, &files.config);
    // The new session cannot be Established before the last look that saw it was not: that
    // moment is a lower bound of its start, from which the settle period runs.
    let mut last_not_up = restarted;
    wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
        let looked = Instant::now();
        let up = tor
            .neighbor_state(ip("10.0.0.2"))
            .is_ok_and(|s| s == "established");
        if !up {
            last_not_up = looked;
        }
        up.then_some(())
    })
    .expect("session back");
    wait_until(Duration::from_secs(40), Duration::from_millis(100), || {
        (!kernel_has("198.51.100.0/24")).then_some(())
    })
    .expect("the route withdrawn during the restart is swept after convergence");
    let events = mon.dump(restarted);
    // Adopted, not flushed: the route the ToR still announces was never deleted, neither at
    // start nor when the stale one went.
    assert!(
        mon.deletions("default").is_empty(),
        "the default route left the kernel during the restart:\n{events}"
    );
    // The stale route went once from main (and from the per-address table that copies it), and
    // only after the session had been up for the whole settle period.
    let swept = mon.deletions("198.51.100.0/24");
    assert_eq!(
        swept.iter().filter(|e| e.table() == "main").count(),
        1,
        "{events}"
    );
    for e in &swept {
        assert!(
            e.at >= last_not_up + underroute::agent::install::SETTLE,
            "the stale route went {:?} after the session could have come up (settle is {:?}):\n{events}",
            e.at.saturating_duration_since(last_not_up),
            underroute::agent::install::SETTLE
        );
    }
    assert!(
        kernel_default().contains("via 10.0.0.1"),
        "the re-learned route stays"
    );
    drop(mon);
    // After convergence, a withdrawal removes the route from the kernel at once.
    tor.del_route("0.0.0.0/0".parse().expect("literal"))
        .expect("withdraw default");
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        (!kernel_default().contains("via")).then_some(())
    })
    .expect("withdrawn route removed from the kernel");

    // SIGTERM without restart intent: Cease / Administrative Shutdown, routes withdrawn at once
    // (not after a hold time or a graceful-restart timer).
    agent.signal(libc::SIGTERM).expect("SIGTERM");
    wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        let gone = !tor
            .rib(Family::Ipv4)
            .ok()?
            .iter()
            .any(|r| r.as_path == vec![64512]);
        gone.then_some(())
    })
    .expect("pod CIDR withdrawn right after SIGTERM");
    let v: serde_json::Value = serde_json::from_str(
        &tor.cli(&["neighbor", "10.0.0.2", "-j"])
            .expect("gobgp neighbor"),
    )
    .expect("json");
    assert!(
        v["state"]["messages"]["received"]["notification"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "Cease received: {v}"
    );
}
