//! The configuration examples in docs/peering.md, checked so the page cannot rot: every
//! ```` ```toml config ```` block through `underroute agent --check`, every ```` ```bird ````
//! block through `bird -p -c` (with a router id and `protocol device` added when the block has
//! none), and every ```` ```frr ```` block through FRR's `bgpd --dryrun` when FRR is installed.
//! Needs no root and touches no network.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_underroute");
const PEERING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/peering.md");
const BGPD: &str = "/usr/lib/frr/bgpd";

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
    if !Path::new(BGPD).exists() {
        // FRR is not a CI dependency; the examples are checked where it is installed.
        println!("SKIPPED peering_frr_examples_parse: {BGPD} is not installed");
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
