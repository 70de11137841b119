//! FRR's bgpd as an interop peer: the daemon of the Debian `frr` package (8.4), started by hand
//! inside a [`Netns`] with its own config file, vty socket directory, pid file and log, and
//! `vtysh` against that socket to observe it.
//!
//! Never the packaged service: nothing here reads or writes /etc/frr or /var/run/frr. bgpd runs
//! without zebra (`-Z`, so nothing reaches the namespace's kernel either and BGP treats next hops
//! as reachable), without dropping privileges (`-S`: the temp dir stays root's) and without a vty
//! TCP port (`-P 0`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::netns::{Netns, Proc};
use super::wait::{run_ok, wait_until};
use super::{Family, RibEntry};

/// The packaged daemon.
pub const BGPD: &str = "/usr/lib/frr/bgpd";

/// bgpd running in a namespace.
pub struct Frr {
    ns_name: String,
    dir: PathBuf,
    log_path: PathBuf,
    proc: Proc,
}

impl Frr {
    /// Writes `config` (an FRR configuration, as `frr.conf`/`bgpd.conf` would hold it) to
    /// `bgpd.conf` in the namespace's dir and starts bgpd on it. Returns once vtysh answers and
    /// the log shows no configuration error (bounded).
    pub fn start(ns: &Netns, config: &str) -> Result<Frr, String> {
        let dir = ns.dir().join("frr");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let conf = dir.join("bgpd.conf");
        std::fs::write(&conf, config).map_err(|e| format!("{}: {e}", conf.display()))?;
        let log_path = ns.dir().join("bgpd.log");
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let (conf_s, pid, vty, zsock, log) = (
            s(&conf),
            s(&dir.join("bgpd.pid")),
            s(&dir),
            s(&dir.join("zserv.api")),
            format!("file:{}", s(&log_path)),
        );
        let args = [
            "-f",
            conf_s.as_str(),
            "-i",
            pid.as_str(),
            "--vty_socket",
            vty.as_str(),
            "-z",
            zsock.as_str(),
            "-Z",
            "-S",
            "-P",
            "0",
            "--log",
            log.as_str(),
            "--log-level",
            "debug",
        ];
        let mut proc = ns.spawn(BGPD, &args, &ns.dir().join("bgpd.out.log"))?;
        let frr_dir = dir.clone();
        let ns_name = ns.name().to_string();
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            if let Some(st) = proc.exited() {
                return Some(Err(format!("bgpd exited during startup: {st}")));
            }
            vtysh_in(&ns_name, &frr_dir, "show version")
                .ok()
                .map(|_| Ok(()))
        })
        .and_then(|r| r)
        .map_err(|e| format!("bgpd in {}: {e} (log {})", ns.name(), log_path.display()))?;
        let frr = Frr {
            ns_name,
            dir,
            log_path,
            proc,
        };
        // bgpd carries on past a line it does not understand; the log says so.
        let log = std::fs::read_to_string(&frr.log_path).unwrap_or_default();
        if let Some(bad) = log
            .lines()
            .find(|l| l.contains("[EC ") || l.contains("Unknown command"))
        {
            return Err(format!("bgpd refused part of its configuration: {bad}"));
        }
        Ok(frr)
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Runs one vtysh command against this bgpd; returns its output.
    pub fn vtysh(&self, command: &str) -> Result<String, String> {
        vtysh_in(&self.ns_name, &self.dir, command)
    }

    /// Runs `configure terminal` and then `commands` in one vtysh session (e.g. `router bgp
    /// 65001`, `address-family ipv4 unicast`, `no network 192.0.2.0/24`).
    pub fn configure(&self, commands: &[&str]) -> Result<String, String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-d", "bgpd", "-c", "configure terminal"]);
        for cmd in commands {
            c.args(["-c", cmd]);
        }
        let out = run_ok(&mut c)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // vtysh exits 0 on a refused line too; it prints the complaint.
        if text.contains("% ") {
            return Err(format!("vtysh refused {commands:?}: {text}"));
        }
        Ok(text)
    }

    fn json(&self, command: &str) -> Result<Value, String> {
        let text = self.vtysh(command)?;
        serde_json::from_str(&text).map_err(|e| format!("vtysh {command:?}: {e}: {text}"))
    }

    /// The BGP state of the session with `addr` as FRR names it (`Established`, `Active`,
    /// `Idle`, ...), `None` while FRR has no such neighbor (a listen-range peer not connected).
    pub fn neighbor_state(&self, addr: IpAddr) -> Result<Option<String>, String> {
        let v = self.json(&format!("show bgp neighbors {addr} json"))?;
        Ok(v[addr.to_string()]["bgpState"].as_str().map(str::to_string))
    }

    /// Waits until the session with `addr` is Established.
    pub fn wait_established(&self, addr: IpAddr, timeout: Duration) -> Result<(), String> {
        wait_until(timeout, Duration::from_millis(200), || {
            let state = self.neighbor_state(addr).ok().flatten();
            (state.as_deref() == Some("Established")).then_some(())
        })
        .map_err(|e| {
            format!(
                "FRR session with {addr} not Established: {e}; now {:?}",
                self.neighbor_state(addr)
            )
        })
    }

    /// FRR's BGP table of `family`, normalised (communities are not in FRR's table JSON and
    /// stay empty; look at one prefix with [`Frr::vtysh`] for those).
    pub fn rib(&self, family: Family) -> Result<Vec<RibEntry>, String> {
        let v = self.json(&format!("show bgp {} unicast json", family.name()))?;
        parse_rib(&v)
    }

    /// Whether `prefix` is in FRR's table.
    pub fn has_route(&self, prefix: IpNet) -> bool {
        let family = match prefix {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        };
        self.rib(family)
            .map(|r| r.iter().any(|e| e.prefix == prefix))
            .unwrap_or(false)
    }
}

fn vtysh_in(ns_name: &str, dir: &Path, command: &str) -> Result<String, String> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns_name, "vtysh", "--vty_socket"])
        .arg(dir)
        .args(["-d", "bgpd", "-c", command]);
    let out = run_ok(&mut c)?;
    String::from_utf8(out.stdout).map_err(|e| format!("vtysh {command:?}: non-UTF-8: {e}"))
}

/// `show bgp ... json` -> entries (one per path).
pub fn parse_rib(v: &Value) -> Result<Vec<RibEntry>, String> {
    let routes = v["routes"]
        .as_object()
        .ok_or_else(|| format!("no routes in FRR's table: {v}"))?;
    let mut out = Vec::new();
    for (prefix, paths) in routes {
        let prefix: IpNet = prefix
            .parse()
            .map_err(|e| format!("FRR prefix {prefix:?}: {e}"))?;
        for p in paths.as_array().into_iter().flatten() {
            let as_path = p["path"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|a| a.parse().ok())
                .collect();
            let nexthop = p["nexthops"]
                .as_array()
                .and_then(|n| n.first())
                .and_then(|n| n["ip"].as_str())
                .and_then(|ip| ip.parse().ok());
            out.push(RibEntry {
                prefix,
                nexthop,
                as_path,
                communities: vec![],
                large_communities: vec![],
                med: p["metric"].as_u64().and_then(|m| u32::try_from(m).ok()),
                local_pref: p["locPrf"].as_u64().and_then(|m| u32::try_from(m).ok()),
                best: p["bestpath"].as_bool().unwrap_or(false),
            });
        }
    }
    Ok(out)
}
