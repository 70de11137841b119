//! The agent's Prometheus metrics and health probes, read over HTTP the way Prometheus and the
//! kubelet read them: the real binary in a namespace with a gobgpd top-of-rack router as peer.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use underroute_testbed::tor::{self, NodeConfigExtras};
use underroute_testbed::{require_root, wait_until, Family, Netns, RouteAttrs};

const BIN: &str = env!("CARGO_BIN_EXE_underroute");
const URL: &str = "http://10.0.0.2:9479";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal")
}

/// GET `path` inside `ns`: (status, body), or None when nothing answers yet.
fn get(ns: &Netns, path: &str) -> Option<(u16, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name(), "curl", "-s", "-m", "5"])
        .args(["-w", "\n%{http_code}"])
        .arg(format!("{URL}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_string()))
}

/// The value of the sample whose line starts with `series` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[test]
fn metrics_healthz_and_readyz_report_sessions_prefixes_and_kernel_state() {
    if !require_root("metrics_healthz_and_readyz_report_sessions_prefixes_and_kernel_state") {
        return;
    }
    let (ns_node, _ns_tor, tor) = tor::node_with_tor("metr", Some(60));
    // Announced before the session comes up, so the first full state already holds them.
    tor.add_route(
        "0.0.0.0/0".parse().expect("literal"),
        None,
        &RouteAttrs::default(),
    )
    .expect("default route");
    // Outside the peer's import list: received but rejected.
    tor.add_route(
        "10.233.65.0/24".parse().expect("literal"),
        None,
        &RouteAttrs::default(),
    )
    .expect("refused route");
    let files = tor::write_node_config(
        &ns_node,
        NodeConfigExtras {
            bgp: "sigterm = \"graceful_restart\"",
            peer: "accept_default_route = true",
            api: "listen = \"127.0.0.1:50061\"",
            tail: "[metrics]\nlisten = \"10.0.0.2:9479\"",
        },
    );
    let log = ns_node.dir().join("agent.log");
    // The ToR is frozen while the agent starts: its socket accepts the connection but nobody
    // answers the OPEN, so the session cannot be up when /readyz is first asked.
    tor.proc().signal(libc::SIGSTOP).expect("SIGSTOP gobgpd");
    let mut agent = tor::start_agent(&ns_node, BIN, &files.config);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Alive as soon as it serves; not ready before the session is up and the kernel synced.
    let (code, body) = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        get(&ns_node, "/healthz")
    })
    .unwrap_or_else(|e| panic!("/healthz never answered: {e}\n{}", show_log()));
    assert_eq!((code, body.trim()), (200, "ok"));
    let early = get(&ns_node, "/readyz").expect("/readyz answers");
    assert_eq!(early.0, 503, "ready before the peer is up: {early:?}");
    tor.proc().signal(libc::SIGCONT).expect("SIGCONT gobgpd");

    tor.wait_established(ip("10.0.0.2"), Duration::from_secs(15))
        .expect("session up");
    // One peer Established, then the settle time, then the first kernel sync.
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        (get(&ns_node, "/readyz")?.0 == 200).then_some(())
    })
    .unwrap_or_else(|e| panic!("/readyz never 200: {e}\n{}", show_log()));

    let peer = r#"{peer="10.0.0.1",peer_asn="65001"}"#;
    let series = |name: &str| format!("underroute_{name}{peer}");
    let text = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let (code, text) = get(&ns_node, "/metrics")?;
        let owned = sample(&text, "underroute_kernel_routes_owned")?;
        (code == 200 && owned > 0.0).then_some(text)
    })
    .unwrap_or_else(|e| panic!("no kernel routes in /metrics: {e}\n{}", show_log()));
    let value =
        |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} missing from /metrics:\n{text}"));

    assert_eq!(value(&series("bgp_peer_up")), 1.0);
    assert_eq!(
        value(r#"underroute_bgp_peer_state{peer="10.0.0.1",peer_asn="65001",state="established"}"#),
        1.0
    );
    assert_eq!(
        value(r#"underroute_bgp_peer_state{peer="10.0.0.1",peer_asn="65001",state="idle"}"#),
        0.0
    );
    assert!(value(&series("bgp_peer_uptime_seconds")) > 0.0);
    assert_eq!(value(&series("bgp_peer_prefixes_received")), 2.0);
    assert_eq!(value(&series("bgp_peer_prefixes_accepted")), 1.0);
    assert_eq!(value(&series("bgp_peer_prefixes_rejected")), 1.0);
    assert!(value(&series("bgp_peer_prefixes_advertised")) >= 1.0);
    assert_eq!(value(&series("bgp_peer_graceful_restart_stale")), 0.0);
    assert_eq!(value(&series("bgp_peer_sessions_established_total")), 1.0);
    let msg = |dir: &str, kind: &str| {
        value(&format!(
            r#"underroute_bgp_peer_messages_{dir}_total{{peer="10.0.0.1",peer_asn="65001",type="{kind}"}}"#
        ))
    };
    assert_eq!(msg("received", "open"), 1.0);
    assert!(msg("received", "update") >= 1.0);
    assert!(msg("sent", "update") >= 1.0);
    assert_eq!(msg("received", "notification"), 0.0);
    assert_eq!(msg("sent", "notification"), 0.0);
    assert!(value("underroute_bgp_loc_rib_prefixes") >= 2.0);
    assert!(value("underroute_kernel_routes_owned") >= 1.0);
    // per_address_tables is on by default: one rule per host address.
    assert!(value("underroute_kernel_rules_owned") >= 1.0);
    assert!(value("underroute_kernel_reconciles_total") >= 1.0);
    assert!(value("underroute_kernel_routes_installed_total") >= 1.0);
    assert_eq!(value("underroute_kernel_repaired_total"), 0.0);
    assert!(value("underroute_kernel_last_reconcile_duration_seconds") >= 0.0);
    assert_eq!(value("underroute_ready"), 1.0);
    // The learned route reached the kernel: its change-to-kernel delay is measured and small
    // (the install loop gathers changes for 20 ms).
    let lag = value("underroute_kernel_install_lag_seconds");
    assert!(lag > 0.0 && lag < 2.0, "install lag {lag}");

    // Someone deletes our default route: the agent puts it back and counts the repair.
    ns_node
        .exec_stdout(&["ip", "-4", "route", "del", "default", "proto", "201"])
        .expect("delete our route");
    wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        let (_, text) = get(&ns_node, "/metrics")?;
        (sample(&text, "underroute_kernel_repaired_total")? >= 1.0).then_some(())
    })
    .unwrap_or_else(|e| panic!("repair not counted: {e}\n{}", show_log()));

    assert_eq!(get(&ns_node, "/nope").map(|r| r.0), Some(404));

    // bgp.sigterm = "graceful_restart" (what the DaemonSet uses for rolling updates): SIGTERM
    // closes the session without a NOTIFICATION and the ToR keeps our pod CIDR as stale.
    agent.signal(libc::SIGTERM).expect("SIGTERM");
    agent
        .wait_exit(Duration::from_secs(10))
        .expect("agent stops on SIGTERM");
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let state = tor.neighbor_state(ip("10.0.0.2")).ok()?;
        (!state.contains("stablished")).then_some(())
    })
    .expect("the ToR sees the session go down");
    let pod_cidr: ipnet::IpNet = "10.233.64.0/24".parse().expect("literal");
    assert!(
        tor.rib(Family::Ipv4)
            .expect("ToR RIB")
            .iter()
            .any(|r| r.prefix == pod_cidr),
        "graceful restart: the ToR keeps our pod CIDR while we are away"
    );
    let v: serde_json::Value = serde_json::from_str(
        &tor.cli(&["neighbor", "10.0.0.2", "-j"])
            .expect("gobgp neighbor"),
    )
    .expect("json");
    // gobgp leaves zero counters out of its JSON.
    assert_eq!(
        v["state"]["messages"]["received"]["notification"]
            .as_u64()
            .unwrap_or(0),
        0,
        "no Cease on a restart: {v}"
    );
}
