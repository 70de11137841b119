//! `underroute diagnose` in namespaces: `diagnose rib` on an agent peering with a gobgpd
//! top-of-rack router (quiet when healthy, names a foreign route in the way), and `diagnose
//! route` on a two-homed host (finds the asymmetric reply, and its fix by a per-address table).

use std::net::IpAddr;
use std::time::Duration;

use underroute_testbed::tor::{self, NodeConfigExtras};
use underroute_testbed::{link_pair, require_root, wait_until, Addrs, Netns, RouteAttrs};

const BIN: &str = env!("CARGO_BIN_EXE_underroute");

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

/// Runs `underroute ARGS` in `ns`: (exit code, stdout).
fn run(ns: &Netns, args: &[&str]) -> (i32, String) {
    let mut full = vec![BIN];
    full.extend_from_slice(args);
    let out = ns.exec(&full).expect("run underroute");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{text}{err}"))
}

#[test]
fn diagnose_rib_is_quiet_when_healthy_and_names_a_foreign_route_in_the_way() {
    if !require_root("diagnose_rib_is_quiet_when_healthy_and_names_a_foreign_route_in_the_way") {
        return;
    }
    let (ns_node, _ns_tor, tor) = tor::node_with_tor("diag", None);
    let files = tor::write_node_config(
        &ns_node,
        NodeConfigExtras {
            peer: "import = [\"198.51.100.0/24\", \"203.0.113.0/24\"]",
            ..Default::default()
        },
    );
    let api_socket = &files.api_socket;
    let _agent = tor::start_agent(&ns_node, BIN, &files.config);
    tor.wait_established(ip("10.0.0.2"), Duration::from_secs(15))
        .expect("session up");
    // 10.233.65.0/24 is outside the import list: refused, not installed, and no difference.
    for p in ["198.51.100.0/24", "203.0.113.0/24", "10.233.65.0/24"] {
        tor.add_route(p.parse().expect("literal"), None, &RouteAttrs::default())
            .expect("announce");
    }
    let sock = api_socket.to_string_lossy().into_owned();
    let kernel_has = |prefix: &str| {
        ns_node
            .exec_stdout(&["ip", "-4", "route", "show", prefix, "proto", "201"])
            .unwrap_or_default()
            .contains("via 10.0.0.1")
    };
    wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        (kernel_has("198.51.100.0/24") && kernel_has("203.0.113.0/24")).then_some(())
    })
    .expect("both routes installed");

    // Healthy: main and the per-address tables hold every best route; nothing to say.
    let healthy = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let (code, text) = run(&ns_node, &["diagnose", "rib", "--socket", &sock]);
        (code == 0).then_some(text)
    });
    assert_eq!(
        healthy.as_deref().map(str::trim),
        Ok(""),
        "a healthy node reports nothing: {:?}",
        run(&ns_node, &["diagnose", "rib", "--socket", &sock])
    );

    // A static route takes our route's place: the programmer leaves it alone (not ours), and
    // diagnose names it.
    ns_node
        .exec_ok(&[
            "ip",
            "route",
            "replace",
            "203.0.113.0/24",
            "via",
            "10.0.0.1",
            "proto",
            "static",
        ])
        .expect("foreign route");
    let (code, text) = run(&ns_node, &["diagnose", "rib", "--socket", &sock]);
    eprintln!("diagnose rib:\n{text}");
    assert_eq!(code, 1, "differences exit 1: {text}");
    assert!(
        text.contains("table main 203.0.113.0/24: foreign route in the way (proto 4)"),
        "{text}"
    );
    assert!(!text.contains("198.51.100.0/24"), "{text}");

    // The same in 10.0.0.2's per-address table (found through our `from 10.0.0.2` rule).
    let rules = ns_node
        .exec_stdout(&["ip", "-4", "rule", "show", "from", "10.0.0.2"])
        .expect("rules");
    let table = rules
        .split_whitespace()
        .skip_while(|w| *w != "lookup")
        .nth(1)
        .expect("a per-address table for 10.0.0.2")
        .to_string();
    ns_node
        .exec_ok(&[
            "ip",
            "route",
            "replace",
            "198.51.100.0/24",
            "via",
            "10.0.0.1",
            "table",
            &table,
            "proto",
            "static",
        ])
        .expect("foreign route in the per-address table");
    let (code, text) = run(&ns_node, &["diagnose", "rib", "--socket", &sock]);
    assert_eq!(code, 1, "differences exit 1: {text}");
    assert_eq!(
        text.trim().lines().collect::<Vec<_>>(),
        vec![
            "table main 203.0.113.0/24: foreign route in the way (proto 4)".to_string(),
            format!("table {table} 198.51.100.0/24: foreign route in the way (proto 4)"),
        ],
        "{text}"
    );
}

#[test]
fn diagnose_route_finds_the_asymmetric_reply_and_its_fix() {
    if !require_root("diagnose_route_finds_the_asymmetric_reply_and_its_fix") {
        return;
    }
    let host = Netns::new("diagh").expect("host namespace");
    let lan = Netns::new("diagl").expect("lan namespace");
    let gw = Netns::new("diagg").expect("gateway namespace");
    let to_lan = link_pair(
        &host,
        &lan,
        Addrs::new("192.168.1.2", "fd01::2"),
        Addrs::new("192.168.1.1", "fd01::1"),
    )
    .expect("lan veth");
    let to_gw = link_pair(
        &host,
        &gw,
        Addrs::new("10.0.0.2", "fd02::2"),
        Addrs::new("10.0.0.1", "fd02::1"),
    )
    .expect("gateway veth");
    let args = [
        "diagnose",
        "route",
        "172.16.0.5",
        "192.168.1.2",
        "--iif",
        &to_lan.a_if,
    ];
    // No route back at all yet: the reply is named unroutable.
    let (code, text) = run(&host, &args);
    assert_eq!(code, 1, "an unroutable reply exits 1: {text}");
    assert!(text.contains("no route: Network is unreachable"), "{text}");

    // A client behind the LAN router reaches 192.168.1.2; the answer follows main's default.
    host.exec_ok(&["ip", "route", "add", "default", "via", "10.0.0.1"])
        .expect("default route");
    let (code, text) = run(&host, &args);
    assert_eq!(code, 1, "asymmetric exits 1: {text}");
    assert!(text.contains("table local: local 192.168.1.2/32"), "{text}");
    assert!(
        text.contains("rule   32766: from all lookup main")
            && text.contains("table main: unicast 0.0.0.0/0 via 10.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "asymmetric: the request comes in on {}, the reply leaves by {}",
            to_lan.a_if, to_gw.a_if
        )),
        "{text}"
    );

    // A per-address table for 192.168.1.2 (what the kernel programmer makes) fixes it.
    host.exec_ok(&[
        "ip",
        "route",
        "add",
        "default",
        "via",
        "192.168.1.1",
        "table",
        "100",
    ])
    .expect("table route");
    host.exec_ok(&[
        "ip",
        "rule",
        "add",
        "from",
        "192.168.1.2",
        "lookup",
        "100",
        "pref",
        "32000",
    ])
    .expect("rule");
    let (code, text) = run(&host, &args);
    assert_eq!(code, 0, "symmetric exits 0: {text}");
    assert!(
        text.contains("rule   32000: from 192.168.1.2/32 lookup 100")
            && text.contains("table 100: unicast 0.0.0.0/0 via 192.168.1.1"),
        "{text}"
    );
    assert!(text.contains("symmetric: in on"), "{text}");

    // IPv6: the same asymmetry through main's IPv6 default.
    host.exec_ok(&["ip", "-6", "route", "add", "default", "via", "fd02::1"])
        .expect("IPv6 default route");
    let (code, text) = run(
        &host,
        &[
            "diagnose",
            "route",
            "fd03::5",
            "fd01::2",
            "--iif",
            &to_lan.a_if,
        ],
    );
    assert_eq!(code, 1, "IPv6 asymmetric exits 1: {text}");
    assert!(
        text.contains("table main: unicast ::/0 via fd02::1")
            && text.contains(&format!("the reply leaves by {}", to_gw.a_if)),
        "{text}"
    );
}

#[test]
fn diagnose_failing_to_look_exits_2_not_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(BIN)
        .args(["diagnose", "rib", "--socket"])
        .arg(dir.path().join("no.sock"))
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
