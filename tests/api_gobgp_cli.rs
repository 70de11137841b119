//! The GoBGP-compatible API against the real `gobgp` client, and our CLI against both.
//!
//! Lab: our agent *process* (`underroute agent --config`) in one namespace, two gobgpd peers in
//! two more, routes both ways, plus a configured peer that never answers. In our namespace the
//! stock `gobgp` client and `underroute global|neighbor` run the same commands against the same
//! daemon; their outputs must be equal apart from time fields.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use underroute_testbed::{
    link_pair, require_root, run_bounded, wait_until, Addrs, Family, GobgpConfig, GobgpNeighbor,
    Gobgpd, Netns, RouteAttrs,
};

const API_PORT: &str = "50051";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("literal prefix")
}

struct Run {
    code: Option<i32>,
    out: String,
    err: String,
}

fn run_in(ns: &Netns, program: &str, args: &[&str]) -> Run {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns.name(), program]).args(args);
    let o = run_bounded(&mut c, Duration::from_secs(20)).expect("command runs");
    Run {
        code: o.status.code(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The real client: `gobgp -p PORT ARGS`.
fn gobgp(ns: &Netns, args: &[&str]) -> Run {
    let mut a = vec!["-p", API_PORT];
    a.extend_from_slice(args);
    run_in(ns, "gobgp", &a)
}

/// Ours: `underroute ARGS -p PORT`.
fn ours(ns: &Netns, args: &[&str]) -> Run {
    let mut a = args.to_vec();
    a.extend_from_slice(&["-p", API_PORT]);
    run_in(ns, env!("CARGO_BIN_EXE_underroute"), &a)
}

/// Blank out what differs between two runs a moment apart: `HH:MM:SS` durations and the
/// seconds / nanos / age numbers of timestamps in JSON.
fn mask_times(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let is_hms = i + 8 <= b.len()
            && b[i..i + 8].iter().enumerate().all(|(k, c)| {
                if k == 2 || k == 5 {
                    *c == b':'
                } else {
                    c.is_ascii_digit()
                }
            });
        if is_hms {
            out.push_str("hh:mm:ss");
            i += 8;
            continue;
        }
        let mut matched = false;
        for key in ["\"age\":", "\"seconds\":", "\"nanos\":"] {
            if s[i..].starts_with(key) {
                out.push_str(key);
                out.push('0');
                i += key.len();
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                matched = true;
                break;
            }
        }
        if !matched {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Run a command with both clients until their masked outputs agree (counters such as
/// KEEPALIVEs may tick between the two runs); panics with both outputs if they never do.
/// Both must exit with `code`, and gobgp's answer must not be empty: two clients failing the
/// same way, or answering nothing alike, is not agreement.
fn same_output(ns: &Netns, args: &[&str], code: i32) -> Run {
    let mut last = (String::new(), String::new());
    for _ in 0..5 {
        let g = gobgp(ns, args);
        let o = ours(ns, args);
        let (gm, om) = (mask_times(&g.out), mask_times(&o.out));
        assert_eq!(
            g.code,
            Some(code),
            "gobgp {args:?} exit status:\n{}{}",
            g.out,
            g.err
        );
        assert!(
            !g.out.trim().is_empty(),
            "gobgp {args:?} printed nothing: {}",
            g.err
        );
        if gm == om && g.code == o.code {
            return g;
        }
        last = (
            format!("gobgp (exit {:?}):\n{}{}", g.code, g.out, g.err),
            format!("underroute (exit {:?}):\n{}{}", o.code, o.out, o.err),
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!(
        "outputs differ for {args:?}\n--- {}\n--- {}",
        last.0, last.1
    );
}

fn gobgpd_peer(ns: &Netns, router_id: &str, ours: &str) -> Gobgpd {
    Gobgpd::start(
        ns,
        GobgpConfig {
            router_id: router_id.parse().expect("literal"),
            asn: 65002,
            neighbors: vec![GobgpNeighbor {
                address: ip(ours),
                asn: 65001,
                families: vec![Family::Ipv4, Family::Ipv6],
                ..Default::default()
            }],
            ..Default::default()
        },
    )
    .expect("start gobgpd")
}

#[test]
fn gobgp_client_and_our_cli_agree_on_an_agent_with_two_peers() {
    if !require_root("gobgp_client_and_our_cli_agree_on_an_agent_with_two_peers") {
        return;
    }
    let ns_us = Netns::new("apiu").expect("our namespace");
    let ns_a = Netns::new("apia").expect("peer a namespace");
    let ns_b = Netns::new("apib").expect("peer b namespace");
    link_pair(
        &ns_us,
        &ns_a,
        Addrs::new("10.0.1.2", "fd00:1::2"),
        Addrs::new("10.0.1.1", "fd00:1::1"),
    )
    .expect("veth to a");
    link_pair(
        &ns_us,
        &ns_b,
        Addrs::new("10.0.2.2", "fd00:2::2"),
        Addrs::new("10.0.2.1", "fd00:2::1"),
    )
    .expect("veth to b");
    let a = gobgpd_peer(&ns_a, "10.0.1.1", "10.0.1.2");
    let b = gobgpd_peer(&ns_b, "10.0.2.1", "10.0.2.2");
    let log = ns_us.dir().join("underroute.log");
    // The agent as an operator runs it, from a config file. 10.0.3.1 is configured but nobody
    // is there: a peer that never comes up. The import lists accept everything the peers send.
    let config = ns_us.dir().join("underroute.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[node]
name = "node9"
router_id = "10.0.0.9"
asn = 65001
pod_cidrs = ["10.9.0.0/16", "2001:db8:9::/48"]
[bgp]
hold_time = 9
connect_retry = 1
[api]
listen = "127.0.0.1:{API_PORT}"
socket = "{socket}"
{peers}"#,
            socket = ns_us.dir().join("api.sock").display(),
            peers = ["10.0.1.1", "10.0.2.1", "10.0.3.1"]
                .iter()
                .map(|a| format!(
                    "[[peer]]\naddress = \"{a}\"\nasn = 65002\nimport = [\"0.0.0.0/0 le 32\", \"::/0 le 128\"]\n"
                ))
                .collect::<String>()
        ),
    )
    .expect("write the agent's config");
    let _agent = ns_us
        .spawn(
            env!("CARGO_BIN_EXE_underroute"),
            &["agent", "--config", &config.to_string_lossy()],
            &log,
        )
        .expect("start our agent");
    a.add_route(
        net("10.1.0.0/24"),
        None,
        &RouteAttrs {
            med: Some(10),
            communities: vec![(65002, 7)],
            ..Default::default()
        },
    )
    .expect("route at a");
    a.add_route(
        net("10.1.1.0/24"),
        None,
        &RouteAttrs {
            large_communities: vec![(65002, 1, 2)],
            ..Default::default()
        },
    )
    .expect("route at a");
    b.add_route(net("10.2.0.0/24"), None, &RouteAttrs::default())
        .expect("route at b");
    a.wait_established(ip("10.0.1.2"), Duration::from_secs(30))
        .expect("a established");
    b.wait_established(ip("10.0.2.2"), Duration::from_secs(30))
        .expect("b established");
    // Our Loc-RIB has both peers' routes and the API answers.
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let r = gobgp(&ns_us, &["global", "rib"]);
        (r.code == Some(0) && r.out.contains("10.1.0.0/24") && r.out.contains("10.2.0.0/24"))
            .then_some(())
    })
    .expect("routes learned");
    // The peers see our routes.
    wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let ra = a.cli(&["global", "rib"]).ok()?;
        let rb = b.cli(&["global", "rib"]).ok()?;
        // Both peers are AS 65002: each drops the other's routes (AS loop), so only ours.
        (ra.contains("10.9.0.0/16") && rb.contains("10.9.0.0/16")).then_some(())
    })
    .expect("routes advertised");

    // The real client accepts every answer and shows the right state.
    let g = same_output(&ns_us, &["global"], 0);
    assert_eq!(g.code, Some(0));
    assert!(
        g.out.contains("AS:        65001") && g.out.contains("10.0.0.9"),
        "{}",
        g.out
    );

    let n = same_output(&ns_us, &["neighbor"], 0);
    assert_eq!(n.code, Some(0));
    let lines: Vec<&str> = n.out.lines().collect();
    assert!(lines[0].starts_with("Peer"), "{}", n.out);
    assert!(
        lines[1].starts_with("10.0.1.1") && lines[1].contains("Establ"),
        "{}",
        n.out
    );
    assert!(lines[1].ends_with("|        2         2"), "{}", n.out);
    assert!(
        lines[2].starts_with("10.0.2.1") && lines[2].contains("Establ"),
        "{}",
        n.out
    );
    assert!(
        lines[3].starts_with("10.0.3.1") && lines[3].contains("never"),
        "{}",
        n.out
    );

    let d = same_output(&ns_us, &["neighbor", "10.0.1.1"], 0);
    assert_eq!(d.code, Some(0));
    assert!(
        d.out.contains("BGP state = ESTABLISHED, up for"),
        "{}",
        d.out
    );
    assert!(d.out.contains("remote router ID 10.0.1.1"), "{}", d.out);
    assert!(
        d.out
            .contains("    multiprotocol:\n        ipv4-unicast:\tadvertised and received"),
        "{}",
        d.out
    );
    assert!(
        d.out.contains("    4-octet-as:\tadvertised and received"),
        "{}",
        d.out
    );

    let rib = same_output(&ns_us, &["global", "rib"], 0);
    assert_eq!(rib.code, Some(0));
    let row = rib
        .out
        .lines()
        .find(|l| l.contains("10.1.0.0/24"))
        .expect("row for 10.1.0.0/24");
    assert!(row.starts_with("*> "), "{row}");
    assert!(row.contains("10.0.1.1") && row.contains("65002"), "{row}");
    assert!(
        row.contains("{Med: 10}") && row.contains("{Communities: 65002:7}"),
        "{row}"
    );
    assert!(rib.out.contains("10.9.0.0/16"), "{}", rib.out);

    let rib6 = same_output(&ns_us, &["global", "rib", "-a", "ipv6"], 0);
    assert_eq!(rib6.code, Some(0));
    assert!(rib6.out.contains("2001:db8:9::/48"), "{}", rib6.out);

    let adj_in = same_output(&ns_us, &["neighbor", "10.0.1.1", "adj-in"], 0);
    assert_eq!(adj_in.code, Some(0));
    assert!(adj_in.out.contains("10.1.0.0/24") && adj_in.out.contains("10.1.1.0/24"));
    assert!(!adj_in.out.contains("10.2.0.0/24"), "{}", adj_in.out);
    assert!(adj_in.out.starts_with("   ID  Network"), "{}", adj_in.out);

    let adj_out = same_output(&ns_us, &["neighbor", "10.0.1.1", "adj-out"], 0);
    assert_eq!(adj_out.code, Some(0));
    assert!(adj_out.out.contains("10.9.0.0/16") && adj_out.out.contains("10.2.0.0/24"));

    let summary = same_output(&ns_us, &["global", "rib", "summary"], 0);
    assert!(summary.out.contains("Destination: "), "{}", summary.out);
    let longer = same_output(
        &ns_us,
        &["global", "rib", "10.1.0.0/16", "longer-prefixes"],
        0,
    );
    assert!(
        longer.out.contains("10.1.0.0/24")
            && longer.out.contains("10.1.1.0/24")
            && !longer.out.contains("10.2.0.0/24"),
        "{}",
        longer.out
    );
    let shorter = same_output(
        &ns_us,
        &["global", "rib", "10.1.0.0/24", "shorter-prefixes"],
        0,
    );
    assert!(
        shorter.out.contains("10.1.0.0/24") && !shorter.out.contains("10.1.1.0/24"),
        "{}",
        shorter.out
    );
    let lookup = same_output(&ns_us, &["global", "rib", "10.1.0.77"], 0);
    assert!(
        lookup.out.contains("10.1.0.0/24") && !lookup.out.contains("10.1.1.0/24"),
        "{}",
        lookup.out
    );
    let never = same_output(&ns_us, &["neighbor", "10.0.3.1"], 0);
    assert!(
        never.out.contains("BGP neighbor is 10.0.3.1") && !never.out.contains("ESTABLISHED"),
        "{}",
        never.out
    );
    let empty = same_output(&ns_us, &["global", "rib", "192.0.2.0/24"], 0);
    assert_eq!(empty.out, "Network not in table\n");
    let down = same_output(&ns_us, &["neighbor", "10.0.3.1", "adj-in"], 1);
    assert_eq!(down.code, Some(1));
    assert!(down.out.contains("not established"), "{}", down.out);

    // -j: the same JSON from both, and it parses.
    for args in [
        &["global"][..],
        &["neighbor"],
        &["neighbor", "10.0.1.1"],
        &["neighbor", "10.0.3.1"],
        &["global", "rib"],
        &["global", "rib", "-a", "ipv6"],
        &["neighbor", "10.0.1.1", "adj-in"],
        &["neighbor", "10.0.1.1", "adj-out"],
        &["global", "rib", "summary"],
        &["global", "rib", "192.0.2.0/24"],
    ] {
        let mut j = args.to_vec();
        j.push("-j");
        let r = same_output(&ns_us, &j, 0);
        assert_eq!(r.code, Some(0), "{j:?}: {}", r.out);
        let v: serde_json::Value = serde_json::from_str(&r.out).expect("JSON output");
        if args == ["global", "rib"] {
            let paths = v["10.1.0.0/24"].as_array().expect("paths of 10.1.0.0/24");
            assert_eq!(paths[0]["best"], true);
            assert_eq!(paths[0]["neighbor-ip"], "10.0.1.1");
        }
    }

    // Mutations are refused by default, to both clients alike.
    for cmd in ["softresetin", "reset", "disable", "enable"] {
        let r = same_output(&ns_us, &["neighbor", "10.0.1.1", cmd], 1);
        assert_eq!(r.code, Some(1));
        assert!(r.out.contains("PermissionDenied"), "{cmd}: {}", r.out);
    }
    // ... and the session is still up.
    let n = gobgp(&ns_us, &["neighbor"]);
    assert!(
        n.out.lines().nth(1).is_some_and(|l| l.contains("Establ")),
        "{}",
        n.out
    );
}

#[test]
fn time_masking_blanks_durations_and_timestamps() {
    assert_eq!(
        mask_times("10.0.0.1 65002 1d 00:03:49 Establ {\"age\":123,\"x\":1}"),
        "10.0.0.1 65002 1d hh:mm:ss Establ {\"age\":0,\"x\":1}"
    );
}
