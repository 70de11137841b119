//! The configuration examples in docs/peering.md, checked so the page cannot rot: every
//! ```` ```toml config ```` block through `underroute agent --check`, every ```` ```bird ````
//! block through `bird -p -c` (with a router id and `protocol device` added when the block has
//! none), and every ```` ```frr ```` block through FRR's `bgpd --dryrun`. Those need no root and
//! touch no network. The FRR examples also run: each ToR config in a real bgpd peering with
//! agents started from the page's node configs, in network namespaces (root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use underroute_testbed::fabric::Fabric;
use underroute_testbed::{require_root, wait_until, Family, Frr, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_underroute");
const PEERING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/peering.md");
const BGPD: &str = underroute_testbed::frr::BGPD;

/// One fenced block: its info string, first line number (1-based) and body.
struct Block {
    info: String,
    line: usize,
    body: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        info: info.trim().to_string(),
                        line: i + 1,
                        body: String::new(),
                    });
                }
            }
            Some(mut b) => {
                if trimmed.starts_with("```") {
                    out.push(b);
                } else {
                    b.body.push_str(line);
                    b.body.push('\n');
                    open = Some(b);
                }
            }
        }
    }
    assert!(open.is_none(), "an unclosed code block in {PEERING}");
    out
}

fn doc_blocks(info: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(PEERING).expect("reading docs/peering.md");
    blocks(&text)
        .into_iter()
        .filter(|b| b.info == info)
        .collect()
}

/// A private directory for the temp files of one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ur-docs-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a temp file");
    path
}

/// Missing tools are a failure under CI (`CI` set), a SKIPPED line otherwise.
fn tool_missing(test: &str, tool: &str) -> bool {
    let present = Command::new(tool).arg("--version").output().is_ok();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: {tool} is not installed (.ci/deps installs it)"
        );
        println!("SKIPPED {test}: {tool} is not installed");
    }
    !present
}

#[test]
fn block_parser_finds_info_strings_and_bodies() {
    let md = "text\n```toml config\na = 1\n```\n```sh\nls\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].info.as_str(), b[0].line), ("toml config", 2));
    assert_eq!(b[0].body, "a = 1\n");
    assert_eq!(b[1].info, "sh");
}

#[test]
fn peering_toml_configs_pass_agent_check() {
    let configs = doc_blocks("toml config");
    assert!(configs.len() >= 3, "expected the three node configs");
    let dir = scratch("toml");
    for b in &configs {
        let path = write(&dir, &format!("line{}.toml", b.line), &b.body);
        let out = Command::new(BIN)
            .args(["agent", "--check", "--config"])
            .arg(&path)
            .output()
            .expect("running underroute agent --check");
        assert!(
            out.status.success(),
            "docs/peering.md line {}: underroute agent --check failed:\n{}{}",
            b.line,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn agent_check_refuses_a_broken_example() {
    // The checker must be able to fail, or the test above proves nothing.
    let b = doc_blocks("toml config").remove(0);
    let broken = b.body.replace("asn = 65001", "asn = 0");
    let dir = scratch("toml-broken");
    let path = write(&dir, "broken.toml", &broken);
    let out = Command::new(BIN)
        .args(["agent", "--check", "--config"])
        .arg(&path)
        .output()
        .expect("running underroute agent --check");
    assert!(!out.status.success(), "asn = 0 passed the check");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn peering_bird_examples_parse() {
    if tool_missing("peering_bird_examples_parse", "bird") {
        return;
    }
    let examples = doc_blocks("bird");
    assert!(
        examples.len() >= 2,
        "expected the eBGP and reflector examples"
    );
    let dir = scratch("bird");
    for b in &examples {
        let mut text = String::new();
        if !b.body.contains("router id") {
            text.push_str("router id 192.0.2.1;\n");
        }
        if !b.body.contains("protocol device") {
            text.push_str("protocol device {}\n");
        }
        text.push_str(&b.body);
        let path = write(&dir, &format!("line{}.conf", b.line), &text);
        let out = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&path)
            .output()
            .expect("running bird -p");
        assert!(
            out.status.success(),
            "docs/peering.md line {}: bird -p -c failed:\n{}{}",
            b.line,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn peering_frr_examples_parse() {
    if tool_missing("peering_frr_examples_parse", BGPD) {
        return;
    }
    let examples = doc_blocks("frr");
    assert!(
        examples.len() >= 2,
        "expected the eBGP and reflector examples"
    );
    let dir = scratch("frr");
    for b in &examples {
        let path = write(&dir, &format!("line{}.conf", b.line), &b.body);
        let out = Command::new(BGPD)
            .arg("--dryrun")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("running bgpd --dryrun");
        // bgpd exits 0 even for unknown commands; it reports them with an error code.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains("[EC ") && !text.contains("No such command"),
            "docs/peering.md line {}: bgpd --dryrun reported:\n{text}",
            b.line
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The page's node1 config with the file paths a test may write (its own dir), as an operator
/// would add them.
fn runnable_node_config(example: &str, dir: &Path) -> String {
    format!(
        "{example}\n[registry]\ndir = \"{}\"\n\n[api]\nsocket = \"{}\"\n",
        dir.join("pods").display(),
        dir.join("api.sock").display()
    )
}

/// Starts `underroute agent` in `ns` from `config`; the log goes to the namespace's dir.
fn start_agent(ns: &Netns, config: &str) -> underroute_testbed::Proc {
    let path = write(ns.dir(), "underroute.toml", config);
    ns.spawn(
        BIN,
        &["agent", "--config", &path.to_string_lossy()],
        &ns.dir().join("agent.log"),
    )
    .expect("start the agent")
}

fn kernel_has(ns: &Netns, route: &str) -> bool {
    ns.exec_stdout(&["ip", "-4", "route", "show", "proto", "201"])
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(route))
}

fn wait(what: &str, frr: &Frr, f: impl FnMut() -> Option<()>) {
    wait_until(Duration::from_secs(30), Duration::from_millis(200), f).unwrap_or_else(|e| {
        panic!(
            "{what}: {e}\n{}",
            frr.vtysh("show bgp ipv4 unicast").unwrap_or_else(|e| e)
        )
    });
}

#[test]
fn peering_frr_tor_example_peers_with_the_node_example() {
    // Design 1: the FRR ToR (listen range, TCP MD5, prefix list, default-originate) and node1's
    // file, both as printed, on the page's addresses. Routes go both ways: the pod CIDR and an
    // underlay pod's /32 to the ToR, the ToR's default route into the node's kernel.
    if !require_root("peering_frr_tor_example_peers_with_the_node_example")
        || tool_missing("peering_frr_tor_example_peers_with_the_node_example", BGPD)
    {
        return;
    }
    let fabric = Fabric::new("dfr1").expect("fabric");
    let ns_tor = Netns::new("dfr1t").expect("ToR namespace");
    let ns_node = Netns::new("dfr1n").expect("node namespace");
    fabric
        .attach(&ns_tor, "192.168.50.1/24".parse().expect("literal"))
        .expect("attach the ToR");
    fabric
        .attach(&ns_node, "192.168.50.50/24".parse().expect("literal"))
        .expect("attach node1");
    let frr = Frr::start(&ns_tor, &doc_blocks("frr")[0].body).expect("bgpd on the example");
    let node_config = runnable_node_config(&doc_blocks("toml config")[0].body, ns_node.dir());
    let mut agent = start_agent(&ns_node, &node_config);
    let node1: std::net::IpAddr = "192.168.50.50".parse().expect("literal");
    frr.wait_established(node1, Duration::from_secs(30))
        .expect("FRR accepts node1 from its listen range, with the password");
    let registry = underroute::podregistry::PodRegistry::new(ns_node.dir().join("pods"));
    registry
        .record(&underroute::podregistry::PodRecord {
            container_id: "docs1".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/pod".into(),
            ips: vec!["10.10.20.5/24".parse().expect("literal")],
            mode: underroute::cni::config::Mode::Veth,
            host_veth: None,
            created_unix: 0,
        })
        .expect("record an underlay pod");
    wait(
        "the ToR learns the pod CIDR and the pod's /32 from node1",
        &frr,
        || {
            let rib = frr.rib(Family::Ipv4).ok()?;
            let from_node = |p: &str| {
                rib.iter().any(|e| {
                    e.prefix.to_string() == p && e.nexthop == Some(node1) && e.as_path == [64512]
                })
            };
            (from_node("10.233.64.0/24") && from_node("10.10.20.5/32")).then_some(())
        },
    );
    wait("node1 installs the ToR's default route", &frr, || {
        kernel_has(&ns_node, "default via 192.168.50.1").then_some(())
    });
    assert!(agent.exited().is_none(), "the agent died");
}

#[test]
fn peering_frr_reflector_example_reflects_between_two_nodes() {
    // Design 2: the FRR route reflector as printed, node1's file as printed and node2's made
    // from it (name, router id, pod CIDR). Each node's pod CIDR reaches the other's kernel
    // through the reflector with the next hop unchanged.
    if !require_root("peering_frr_reflector_example_reflects_between_two_nodes")
        || tool_missing(
            "peering_frr_reflector_example_reflects_between_two_nodes",
            BGPD,
        )
    {
        return;
    }
    let fabric = Fabric::new("dfr2").expect("fabric");
    let ns_tor = Netns::new("dfr2t").expect("ToR namespace");
    let ns_1 = Netns::new("dfr2a").expect("node1 namespace");
    let ns_2 = Netns::new("dfr2b").expect("node2 namespace");
    for (ns, addr) in [
        (&ns_tor, "192.168.50.1/24"),
        (&ns_1, "192.168.50.50/24"),
        (&ns_2, "192.168.50.51/24"),
    ] {
        fabric
            .attach(ns, addr.parse().expect("literal"))
            .expect("attach");
    }
    let frr = Frr::start(&ns_tor, &doc_blocks("frr")[1].body).expect("bgpd on the example");
    let node1 = doc_blocks("toml config")[1].body.clone();
    assert!(
        node1.contains("mesh = false"),
        "the reflector design's node file"
    );
    let node2 = node1
        .replace("name = \"node1\"", "name = \"node2\"")
        .replace(
            "router_id = \"192.168.50.50\"",
            "router_id = \"192.168.50.51\"",
        )
        .replace("10.233.64.0/24\"]", "10.233.66.0/24\"]");
    assert_ne!(node1, node2);
    let mut a1 = start_agent(&ns_1, &runnable_node_config(&node1, ns_1.dir()));
    let mut a2 = start_agent(&ns_2, &runnable_node_config(&node2, ns_2.dir()));
    for n in ["192.168.50.50", "192.168.50.51"] {
        frr.wait_established(n.parse().expect("literal"), Duration::from_secs(30))
            .expect("the reflector accepts the node");
    }
    wait("node1 has node2's pod CIDR via node2", &frr, || {
        kernel_has(&ns_1, "10.233.66.0/24 via 192.168.50.51").then_some(())
    });
    wait("node2 has node1's pod CIDR via node1", &frr, || {
        kernel_has(&ns_2, "10.233.64.0/24 via 192.168.50.50").then_some(())
    });
    wait("both have the reflector's default route", &frr, || {
        (kernel_has(&ns_1, "default via 192.168.50.1")
            && kernel_has(&ns_2, "default via 192.168.50.1"))
        .then_some(())
    });
    assert!(
        a1.exited().is_none() && a2.exited().is_none(),
        "an agent died"
    );
}
