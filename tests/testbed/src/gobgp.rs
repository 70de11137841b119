//! gobgpd as an interop peer: TOML config from a struct, the daemon inside a [`Netns`], and the
//! `gobgp` CLI (JSON output, parsed with serde_json) to drive and observe it.
//!
//! JSON shapes are those of gobgp 3.10 (`gobgp neighbor ADDR -j`, `gobgp global rib -j`).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::netns::{Netns, Proc};
use super::wait::wait_until;
use super::{Family, RibEntry, RouteAttrs};

/// gRPC API ports, unique per process so several gobgpd may share one namespace.
static NEXT_PORT: AtomicU16 = AtomicU16::new(50100);

/// One neighbor in gobgpd's config.
#[derive(Debug, Clone)]
pub struct GobgpNeighbor {
    pub address: IpAddr,
    pub asn: u32,
    /// TCP MD5 (RFC 2385) password.
    pub password: Option<String>,
    pub families: Vec<Family>,
    /// `Some(restart_time)` enables graceful restart (RFC 4724) for all its families.
    pub graceful_restart: Option<u16>,
    /// Hold time in seconds; keepalive is a third of it.
    pub hold_time: u16,
    /// Only accept connections, never connect.
    pub passive: bool,
    /// Seconds between connection attempts (gobgp's default, 120 s, is far too slow for tests).
    pub connect_retry: u16,
}

impl Default for GobgpNeighbor {
    fn default() -> Self {
        GobgpNeighbor {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            asn: 0,
            password: None,
            families: vec![Family::Ipv4],
            graceful_restart: None,
            hold_time: 9,
            passive: false,
            connect_retry: 1,
        }
    }
}

/// gobgpd's global config and neighbors.
#[derive(Debug, Clone)]
pub struct GobgpConfig {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// Addresses to listen on for BGP; empty means all.
    pub listen_addrs: Vec<IpAddr>,
    /// BGP port (179 unless two speakers share a namespace).
    pub listen_port: u16,
    pub neighbors: Vec<GobgpNeighbor>,
}

impl Default for GobgpConfig {
    fn default() -> Self {
        GobgpConfig {
            router_id: Ipv4Addr::UNSPECIFIED,
            asn: 0,
            listen_addrs: Vec::new(),
            listen_port: 179,
            neighbors: Vec::new(),
        }
    }
}

impl GobgpConfig {
    /// The TOML gobgpd reads.
    pub fn to_toml(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[global.config]");
        let _ = writeln!(s, "  as = {}", self.asn);
        let _ = writeln!(s, "  router-id = \"{}\"", self.router_id);
        let _ = writeln!(s, "  port = {}", self.listen_port);
        if !self.listen_addrs.is_empty() {
            let list: Vec<String> = self
                .listen_addrs
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect();
            let _ = writeln!(s, "  local-address-list = [{}]", list.join(", "));
        }
        for n in &self.neighbors {
            let _ = writeln!(s, "\n[[neighbors]]");
            let _ = writeln!(s, "  [neighbors.config]");
            let _ = writeln!(s, "    neighbor-address = \"{}\"", n.address);
            let _ = writeln!(s, "    peer-as = {}", n.asn);
            if let Some(p) = &n.password {
                let _ = writeln!(s, "    auth-password = \"{p}\"");
            }
            let _ = writeln!(s, "  [neighbors.timers.config]");
            let _ = writeln!(s, "    hold-time = {}", n.hold_time);
            let _ = writeln!(s, "    keepalive-interval = {}", (n.hold_time / 3).max(1));
            let _ = writeln!(s, "    connect-retry = {}", n.connect_retry);
            // After a reset gobgp otherwise idles 30 s before reconnecting; tests reset sessions.
            let _ = writeln!(s, "    idle-hold-time-after-reset = 1");
            if n.passive {
                let _ = writeln!(s, "  [neighbors.transport.config]");
                let _ = writeln!(s, "    passive-mode = true");
            }
            if let Some(t) = n.graceful_restart {
                let _ = writeln!(s, "  [neighbors.graceful-restart.config]");
                let _ = writeln!(s, "    enabled = true");
                let _ = writeln!(s, "    restart-time = {t}");
            }
            for f in &n.families {
                let _ = writeln!(s, "  [[neighbors.afi-safis]]");
                let _ = writeln!(s, "    [neighbors.afi-safis.config]");
                let _ = writeln!(s, "      afi-safi-name = \"{}-unicast\"", f.name());
                if n.graceful_restart.is_some() {
                    let _ = writeln!(s, "    [neighbors.afi-safis.mp-graceful-restart.config]");
                    let _ = writeln!(s, "      enabled = true");
                }
            }
        }
        s
    }
}

/// A running gobgpd. Dropping it kills the daemon.
pub struct Gobgpd {
    /// The namespace by name rather than by borrow, so a test can hold both side by side.
    ns_name: String,
    config_path: PathBuf,
    log_path: PathBuf,
    port: u16,
    proc: Option<Proc>,
}

impl Gobgpd {
    /// Writes the config into the namespace's dir and starts gobgpd with its gRPC API on
    /// 127.0.0.1:PORT inside the namespace. Returns once the API answers (bounded).
    pub fn start(ns: &Netns, cfg: GobgpConfig) -> Result<Gobgpd, String> {
        let port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let config_path = ns.dir().join(format!("gobgpd-{port}.toml"));
        std::fs::write(&config_path, cfg.to_toml())
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        let log_path = ns.dir().join(format!("gobgpd-{port}.log"));
        let mut g = Gobgpd {
            ns_name: ns.name().to_string(),
            config_path,
            log_path,
            port,
            proc: None,
        };
        g.launch(ns, false)?;
        Ok(g)
    }

    fn launch(&mut self, ns: &Netns, restarting: bool) -> Result<(), String> {
        let api = format!("127.0.0.1:{}", self.port);
        let cfg = self.config_path.to_string_lossy().into_owned();
        let mut args = vec![
            "-f",
            &cfg,
            "--api-hosts",
            &api,
            "--pprof-disable",
            "-l",
            "debug",
        ];
        if restarting {
            // Sets the R bit in the GR capability: "I restarted, keep my routes".
            args.push("-r");
        }
        self.proc = Some(ns.spawn("gobgpd", &args, &self.log_path)?);
        let proc = self.proc.as_mut().expect("just set");
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            if proc.exited().is_some() {
                return Some(Err("gobgpd exited during startup".to_string()));
            }
            let ok = ns
                .exec(&[
                    "gobgp",
                    "-u",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "global",
                ])
                .map(|o| o.status.success())
                .unwrap_or(false);
            ok.then_some(Ok(()))
        })
        .and_then(|r| r)
        .map_err(|e| {
            format!(
                "gobgpd in {}: {e} (log {})",
                ns.name(),
                self.log_path.display()
            )
        })
    }

    /// The daemon process (for `signal(SIGSTOP)` and friends).
    pub fn proc(&self) -> &Proc {
        self.proc
            .as_ref()
            .expect("gobgpd is running between start and drop")
    }

    pub fn log_path(&self) -> &std::path::Path {
        &self.log_path
    }

    /// Runs `gobgp -u 127.0.0.1 -p PORT args...` inside the namespace; returns stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let port = self.port.to_string();
        let mut full = vec!["gobgp", "-u", "127.0.0.1", "-p", &port];
        full.extend_from_slice(args);
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &self.ns_name]).args(&full);
        let out = super::wait::run_ok(&mut c)?;
        String::from_utf8(out.stdout).map_err(|e| format!("gobgp {args:?}: non-UTF-8: {e}"))
    }

    fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let text = self.cli(args)?;
        serde_json::from_str(&text).map_err(|e| format!("gobgp {args:?}: bad JSON ({e}): {text}"))
    }

    /// Session state of a neighbor: "idle", "connect", "active", "opensent", "openconfirm",
    /// "established" (or "unknown").
    pub fn neighbor_state(&self, addr: IpAddr) -> Result<String, String> {
        let v = self.cli_json(&["neighbor", &addr.to_string(), "-j"])?;
        // gobgp 3.10 prints the api enum number; 0 (unknown) is omitted from the JSON.
        let n = v["state"]["session_state"].as_u64().unwrap_or(0);
        let s = match n {
            1 => "idle",
            2 => "connect",
            3 => "active",
            4 => "opensent",
            5 => "openconfirm",
            6 => "established",
            _ => "unknown",
        };
        Ok(s.to_string())
    }

    /// Waits until the session with `addr` is Established.
    pub fn wait_established(&self, addr: IpAddr, timeout: Duration) -> Result<(), String> {
        let mut last = String::new();
        wait_until(timeout, Duration::from_millis(100), || {
            last = self
                .neighbor_state(addr)
                .unwrap_or_else(|e| format!("error: {e}"));
            (last == "established").then_some(())
        })
        .map_err(|e| format!("gobgpd session to {addr}: {e}, last state {last}"))
    }

    /// Originates `prefix` with `nexthop` and attributes (`gobgp global rib add`).
    pub fn add_route(
        &self,
        prefix: IpNet,
        nexthop: Option<IpAddr>,
        attrs: &RouteAttrs,
    ) -> Result<(), String> {
        let mut args: Vec<String> = vec!["global".into(), "rib".into(), "add".into()];
        args.push(prefix.to_string());
        if let Some(nh) = nexthop {
            args.extend(["nexthop".into(), nh.to_string()]);
        }
        if !attrs.as_path.is_empty() {
            let p: Vec<String> = attrs.as_path.iter().map(|a| a.to_string()).collect();
            args.extend(["aspath".into(), p.join(",")]);
        }
        if let Some(m) = attrs.med {
            args.extend(["med".into(), m.to_string()]);
        }
        if let Some(lp) = attrs.local_pref {
            args.extend(["local-pref".into(), lp.to_string()]);
        }
        if !attrs.communities.is_empty() {
            let c: Vec<String> = attrs
                .communities
                .iter()
                .map(|(a, b)| format!("{a}:{b}"))
                .collect();
            args.extend(["community".into(), c.join(",")]);
        }
        if !attrs.large_communities.is_empty() {
            let c: Vec<String> = attrs
                .large_communities
                .iter()
                .map(|(a, b, c)| format!("{a}:{b}:{c}"))
                .collect();
            args.extend(["large-community".into(), c.join(",")]);
        }
        args.extend(["-a".into(), family_of(&prefix).name().into()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&refs).map(|_| ())
    }

    /// Withdraws a prefix originated with [`add_route`](Self::add_route).
    pub fn del_route(&self, prefix: IpNet) -> Result<(), String> {
        let p = prefix.to_string();
        self.cli(&["global", "rib", "del", &p, "-a", family_of(&prefix).name()])
            .map(|_| ())
    }

    /// The Loc-RIB (`gobgp global rib -a FAMILY -j`), every path.
    pub fn rib(&self, family: Family) -> Result<Vec<RibEntry>, String> {
        parse_rib(&self.cli_json(&["global", "rib", "-a", family.name(), "-j"])?)
    }

    /// Paths received from `addr` (`gobgp neighbor ADDR adj-in -a FAMILY -j`).
    pub fn adj_in(&self, addr: IpAddr, family: Family) -> Result<Vec<RibEntry>, String> {
        let a = addr.to_string();
        parse_rib(&self.cli_json(&["neighbor", &a, "adj-in", "-a", family.name(), "-j"])?)
    }

    /// Paths sent to `addr` (`gobgp neighbor ADDR adj-out -a FAMILY -j`).
    pub fn adj_out(&self, addr: IpAddr, family: Family) -> Result<Vec<RibEntry>, String> {
        let a = addr.to_string();
        parse_rib(&self.cli_json(&["neighbor", &a, "adj-out", "-a", family.name(), "-j"])?)
    }

    /// `gobgp neighbor ADDR softresetin`: re-applies import policy to the stored Adj-RIB-In.
    /// Note: gobgp 3.10 never sends ROUTE-REFRESH, not even here (see `handleRouteRefresh` and
    /// `softResetIn` in its server.go); use BIRD's [`reload_in`](super::Bird::reload_in) to get one.
    pub fn soft_reset_in(&self, addr: IpAddr) -> Result<(), String> {
        self.cli(&["neighbor", &addr.to_string(), "softresetin"])
            .map(|_| ())
    }

    /// Kills gobgpd with SIGKILL (no NOTIFICATION sent) and starts it again with `-r`, so peers
    /// that negotiated graceful restart keep its routes as stale meanwhile. The config is the same;
    /// routes added through the CLI are gone and must be re-added.
    pub fn restart_gracefully(&mut self, ns: &Netns) -> Result<(), String> {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGKILL)?;
            p.wait_exit(Duration::from_secs(5))?;
        }
        self.launch(ns, true)
    }
}

fn family_of(p: &IpNet) -> Family {
    match p {
        IpNet::V4(_) => Family::Ipv4,
        IpNet::V6(_) => Family::Ipv6,
    }
}

/// Parses gobgp's `{ "PREFIX": [ {nlri, best, attrs: [{type, ...}]} ] }`.
pub fn parse_rib(v: &Value) -> Result<Vec<RibEntry>, String> {
    let mut out = Vec::new();
    let Some(map) = v.as_object() else {
        // An empty table is printed as `null` by some gobgp versions.
        return if v.is_null() {
            Ok(out)
        } else {
            Err(format!("gobgp rib: expected an object, got {v}"))
        };
    };
    for (prefix, paths) in map {
        let prefix: IpNet = prefix
            .parse()
            .map_err(|e| format!("gobgp rib: prefix {prefix:?}: {e}"))?;
        for path in paths.as_array().into_iter().flatten() {
            out.push(parse_path(prefix, path)?);
        }
    }
    out.sort_by_key(|e| e.prefix);
    Ok(out)
}

fn parse_path(prefix: IpNet, path: &Value) -> Result<RibEntry, String> {
    let mut e = RibEntry {
        prefix,
        nexthop: None,
        as_path: Vec::new(),
        communities: Vec::new(),
        large_communities: Vec::new(),
        med: None,
        local_pref: None,
        best: path["best"].as_bool().unwrap_or(false),
    };
    let num = |a: &Value, k: &str| a[k].as_u64().map(|n| n as u32);
    for a in path["attrs"].as_array().into_iter().flatten() {
        match a["type"].as_u64() {
            Some(2) => {
                for seg in a["as_paths"].as_array().into_iter().flatten() {
                    for asn in seg["asns"].as_array().into_iter().flatten() {
                        e.as_path.extend(asn.as_u64().map(|n| n as u32));
                    }
                }
            }
            // NEXT_HOP (v4) or MP_REACH_NLRI (v6); "::" means "none set" for local routes.
            Some(3) | Some(14) => {
                if let Some(nh) = a["nexthop"].as_str() {
                    let nh: IpAddr = nh
                        .parse()
                        .map_err(|err| format!("gobgp rib {prefix}: nexthop {nh:?}: {err}"))?;
                    if !nh.is_unspecified() {
                        e.nexthop = Some(nh);
                    }
                }
            }
            Some(4) => e.med = num(a, "metric"),
            Some(5) => e.local_pref = num(a, "value"),
            Some(8) => {
                for c in a["communities"].as_array().into_iter().flatten() {
                    if let Some(c) = c.as_u64() {
                        e.communities.push(((c >> 16) as u16, c as u16));
                    }
                }
            }
            Some(32) => {
                for c in a["value"].as_array().into_iter().flatten() {
                    e.large_communities.push((
                        num(c, "ASN").unwrap_or(0),
                        num(c, "LocalData1").unwrap_or(0),
                        num(c, "LocalData2").unwrap_or(0),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(e)
}
