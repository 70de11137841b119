//! BIRD 2 as an interop peer: bird.conf from a struct, `bird -f` inside a [`Netns`] with its own
//! control socket, and `birdc` to drive and observe it.
//!
//! Static routes live in included files (`static4.conf`, `static6.conf`) so tests can change them
//! at runtime with `birdc configure`. BIRD never writes the namespace's kernel table unless
//! `kernel_export` is set.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;

use super::netns::{Netns, Proc};
use super::wait::{run_ok, wait_until};
use super::{Family, RibEntry, RouteAttrs};

/// One BGP protocol in bird.conf. Its protocol name is [`Bird::protocol_name`] of the address.
#[derive(Debug, Clone)]
pub struct BirdNeighbor {
    pub address: IpAddr,
    pub asn: u32,
    /// TCP MD5 (RFC 2385) password.
    pub password: Option<String>,
    pub families: Vec<Family>,
    /// `Some(restart_time)` enables graceful restart (RFC 4724).
    pub graceful_restart: Option<u16>,
    pub hold_time: u16,
    /// Only accept connections, never connect.
    pub passive: bool,
    /// `next hop self` on export (useful on iBGP for routes learned elsewhere).
    pub next_hop_self: bool,
    /// `enable as4 off`: behave as a 2-octet-only speaker (RFC 6793 "OLD" speaker).
    pub two_octet_only: bool,
}

impl Default for BirdNeighbor {
    fn default() -> Self {
        BirdNeighbor {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            asn: 0,
            password: None,
            families: vec![Family::Ipv4],
            graceful_restart: None,
            hold_time: 9,
            passive: false,
            next_hop_self: false,
            two_octet_only: false,
        }
    }
}

/// A static route BIRD originates, exported to all BGP neighbors of its family.
/// Note: BIRD 2.0.12 strips MED (and, per RFC 4271, LOCAL_PREF) when exporting to eBGP peers,
/// even for its own static routes; both only reach iBGP peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub prefix: IpNet,
    /// Gateway; `None` makes a blackhole route (BGP then announces BIRD's own address).
    pub via: Option<IpAddr>,
    pub attrs: RouteAttrs,
}

impl StaticRoute {
    fn to_conf(&self) -> String {
        let mut s = format!("route {} ", self.prefix);
        match self.via {
            Some(gw) => {
                let _ = write!(s, "via {gw}");
            }
            None => s.push_str("blackhole"),
        }
        let a = &self.attrs;
        let mut body = String::new();
        // prepend() adds to the front, so walk the path backwards to get it in order.
        for asn in a.as_path.iter().rev() {
            let _ = write!(body, " bgp_path.prepend({asn});");
        }
        for (x, y) in &a.communities {
            let _ = write!(body, " bgp_community.add(({x},{y}));");
        }
        for (x, y, z) in &a.large_communities {
            let _ = write!(body, " bgp_large_community.add(({x},{y},{z}));");
        }
        if let Some(m) = a.med {
            let _ = write!(body, " bgp_med = {m};");
        }
        if let Some(lp) = a.local_pref {
            let _ = write!(body, " bgp_local_pref = {lp};");
        }
        if !body.is_empty() {
            let _ = write!(s, " {{{body} }}");
        }
        s.push_str(";\n");
        s
    }
}

#[derive(Debug, Clone)]
pub struct BirdConfig {
    pub router_id: Ipv4Addr,
    pub asn: u32,
    pub neighbors: Vec<BirdNeighbor>,
    pub static_v4: Vec<StaticRoute>,
    pub static_v6: Vec<StaticRoute>,
    /// Export best routes into the namespace's kernel main table.
    pub kernel_export: bool,
}

impl Default for BirdConfig {
    fn default() -> Self {
        BirdConfig {
            router_id: Ipv4Addr::UNSPECIFIED,
            asn: 0,
            neighbors: Vec::new(),
            static_v4: Vec::new(),
            static_v6: Vec::new(),
            kernel_export: false,
        }
    }
}

impl BirdConfig {
    /// The main bird.conf; static routes are included from `dir`.
    pub fn to_conf(&self, dir: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "router id {};", self.router_id);
        let _ = writeln!(s, "log stderr all;");
        let _ = writeln!(s, "debug protocols {{ states, events }};");
        let _ = writeln!(s, "protocol device {{ scan time 10; }}");
        if self.kernel_export {
            for ch in ["ipv4", "ipv6"] {
                let _ = writeln!(
                    s,
                    "protocol kernel {{ {ch} {{ import none; export all; }}; }}"
                );
            }
        }
        for (fam, file) in [("ipv4", "static4.conf"), ("ipv6", "static6.conf")] {
            let _ = writeln!(
                s,
                "protocol static static_{fam} {{\n  {fam};\n  include \"{}\";\n}}",
                dir.join(file).display()
            );
        }
        for n in &self.neighbors {
            let _ = writeln!(s, "protocol bgp {} {{", Bird::protocol_name(n.address));
            let _ = writeln!(s, "  local as {};", self.asn);
            let _ = writeln!(s, "  neighbor {} as {};", n.address, n.asn);
            // BIRD treats iBGP as multihop by default; our peers are always on the link.
            let _ = writeln!(s, "  direct;");
            let _ = writeln!(s, "  hold time {};", n.hold_time);
            let _ = writeln!(s, "  keepalive time {};", (n.hold_time / 3).max(1));
            // Defaults (5 s, 120 s, 60 s) would make reconnects in tests far too slow.
            let _ = writeln!(s, "  connect delay time 1;");
            let _ = writeln!(s, "  connect retry time 1;");
            let _ = writeln!(s, "  error wait time 1, 5;");
            if n.passive {
                let _ = writeln!(s, "  passive on;");
            }
            if n.two_octet_only {
                let _ = writeln!(s, "  enable as4 off;");
            }
            if let Some(p) = &n.password {
                let _ = writeln!(s, "  password \"{p}\";");
            }
            match n.graceful_restart {
                Some(t) => {
                    let _ = writeln!(s, "  graceful restart on;");
                    let _ = writeln!(s, "  graceful restart time {t};");
                }
                None => {
                    let _ = writeln!(s, "  graceful restart off;");
                }
            }
            for f in &n.families {
                let nhs = if n.next_hop_self {
                    " next hop self;"
                } else {
                    ""
                };
                let _ = writeln!(s, "  {} {{ import all; export all;{nhs} }};", f.name());
            }
            let _ = writeln!(s, "}}");
        }
        s
    }
}

/// A running BIRD. Dropping it kills the daemon.
pub struct Bird {
    ns_name: String,
    dir: PathBuf,
    config_path: PathBuf,
    sock: PathBuf,
    log_path: PathBuf,
    static_v4: Vec<StaticRoute>,
    static_v6: Vec<StaticRoute>,
    proc: Option<Proc>,
}

impl Bird {
    /// Writes bird.conf (+ static route includes) into the namespace's dir and starts
    /// `bird -f -c CFG -s SOCK`. Returns once birdc answers (bounded).
    pub fn start(ns: &Netns, cfg: BirdConfig) -> Result<Bird, String> {
        let dir = ns.dir().to_path_buf();
        let config_path = dir.join("bird.conf");
        std::fs::write(&config_path, cfg.to_conf(&dir))
            .map_err(|e| format!("write {}: {e}", config_path.display()))?;
        let mut b = Bird {
            ns_name: ns.name().to_string(),
            sock: dir.join("bird.ctl"),
            log_path: dir.join("bird.log"),
            config_path,
            static_v4: cfg.static_v4,
            static_v6: cfg.static_v6,
            dir,
            proc: None,
        };
        b.write_statics()?;
        b.launch(ns, false)?;
        Ok(b)
    }

    /// The protocol name used for the neighbor at `addr`, e.g. `peer_10_0_0_1`, `peer_fd00__1`.
    pub fn protocol_name(addr: IpAddr) -> String {
        let s: String = addr
            .to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("peer_{s}")
    }

    fn launch(&mut self, ns: &Netns, recovering: bool) -> Result<(), String> {
        let cfg = self.config_path.to_string_lossy().into_owned();
        let sock = self.sock.to_string_lossy().into_owned();
        let mut args = vec!["-f", "-c", &cfg, "-s", &sock];
        if recovering {
            // Graceful restart recovery: BIRD tells peers it restarted and waits for their EoR.
            args.push("-R");
        }
        self.proc = Some(ns.spawn("bird", &args, &self.log_path)?);
        let proc = self.proc.as_mut().expect("just set");
        let (ns_name, sock_c) = (self.ns_name.clone(), sock.clone());
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            if let Some(st) = proc.exited() {
                return Some(Err(format!("bird exited during startup: {st}")));
            }
            let ok = run_ok(Command::new("ip").args([
                "netns", "exec", &ns_name, "birdc", "-s", &sock_c, "show", "status",
            ]))
            .is_ok();
            ok.then_some(Ok(()))
        })
        .and_then(|r| r)
        .map_err(|e| {
            format!(
                "bird in {}: {e} (log {})",
                ns.name(),
                self.log_path.display()
            )
        })
    }

    pub fn proc(&self) -> &Proc {
        self.proc
            .as_ref()
            .expect("bird is running between start and drop")
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Runs `birdc -s SOCK args...` in the namespace; returns stdout without the banner line.
    pub fn birdc(&self, args: &[&str]) -> Result<String, String> {
        let sock = self.sock.to_string_lossy().into_owned();
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns_name, "birdc", "-s", &sock])
            .args(args);
        let out = run_ok(&mut c)?;
        let text =
            String::from_utf8(out.stdout).map_err(|e| format!("birdc {args:?}: non-UTF-8: {e}"))?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with("BIRD ") || !l.ends_with(" ready."))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// The BGP state of protocol `name` ("Established", "Active", "Connect", "OpenSent", ...),
    /// or the protocol state ("down", "start") when BIRD shows no BGP state.
    pub fn protocol_state(&self, name: &str) -> Result<String, String> {
        let text = self.birdc(&["show", "protocols", "all", name])?;
        if let Some(l) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("BGP state:"))
        {
            return Ok(l.trim().to_string());
        }
        // Header line: "NAME  BGP  ---  STATE  SINCE  INFO".
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(3))
            .map(str::to_string)
            .ok_or_else(|| format!("birdc: no protocol {name}: {text}"))
    }

    /// [`protocol_state`](Self::protocol_state) of the neighbor at `addr`.
    pub fn neighbor_state(&self, addr: IpAddr) -> Result<String, String> {
        self.protocol_state(&Self::protocol_name(addr))
    }

    /// Waits until the session with `addr` is Established.
    pub fn wait_established(&self, addr: IpAddr, timeout: Duration) -> Result<(), String> {
        let mut last = String::new();
        wait_until(timeout, Duration::from_millis(100), || {
            last = self
                .neighbor_state(addr)
                .unwrap_or_else(|e| format!("error: {e}"));
            (last == "Established").then_some(())
        })
        .map_err(|e| format!("bird session to {addr}: {e}, last state {last}"))
    }

    /// Every path in `table` ("master4", "master6"), from `show route all table T`.
    pub fn routes(&self, table: &str) -> Result<Vec<RibEntry>, String> {
        let text = self.birdc(&["show", "route", "all", "table", table])?;
        parse_routes(&text)
    }

    /// Every path of a family's main table.
    pub fn routes_of(&self, family: Family) -> Result<Vec<RibEntry>, String> {
        self.routes(match family {
            Family::Ipv4 => "master4",
            Family::Ipv6 => "master6",
        })
    }

    /// Adds (or replaces, by prefix) a static route and reconfigures BIRD.
    pub fn add_static(&mut self, route: StaticRoute) -> Result<(), String> {
        let list = match route.prefix {
            IpNet::V4(_) => &mut self.static_v4,
            IpNet::V6(_) => &mut self.static_v6,
        };
        list.retain(|r| r.prefix != route.prefix);
        list.push(route);
        self.write_statics()?;
        self.reconfigure()
    }

    /// Removes a static route (BIRD then withdraws it) and reconfigures BIRD.
    pub fn remove_static(&mut self, prefix: IpNet) -> Result<(), String> {
        self.static_v4.retain(|r| r.prefix != prefix);
        self.static_v6.retain(|r| r.prefix != prefix);
        self.write_statics()?;
        self.reconfigure()
    }

    fn write_statics(&self) -> Result<(), String> {
        for (file, list) in [
            ("static4.conf", &self.static_v4),
            ("static6.conf", &self.static_v6),
        ] {
            let text: String = list.iter().map(StaticRoute::to_conf).collect();
            let p = self.dir.join(file);
            std::fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
        }
        Ok(())
    }

    /// `birdc configure`; fails unless BIRD reports the new config as accepted.
    pub fn reconfigure(&self) -> Result<(), String> {
        let out = self.birdc(&["configure"])?;
        if out.contains("Reconfigured") || out.contains("Reconfiguration in progress") {
            Ok(())
        } else {
            Err(format!("birdc configure: {out}"))
        }
    }

    /// Asks the peer at `addr` to resend its routes (ROUTE-REFRESH, `birdc reload in P`).
    pub fn reload_in(&self, addr: IpAddr) -> Result<(), String> {
        self.birdc(&["reload", "in", &Self::protocol_name(addr)])
            .map(|_| ())
    }

    /// SIGKILLs BIRD (no NOTIFICATION) and starts it again with `-R` (graceful restart
    /// recovery). Peers with graceful restart negotiated keep its routes as stale meanwhile.
    pub fn restart_gracefully(&mut self, ns: &Netns) -> Result<(), String> {
        if let Some(mut p) = self.proc.take() {
            p.signal(libc::SIGKILL)?;
            p.wait_exit(Duration::from_secs(5))?;
        }
        // The killed BIRD leaves its control socket behind; the startup probe must only
        // succeed once the new process has bound a fresh one.
        let _ = std::fs::remove_file(&self.sock);
        self.launch(ns, true)
    }
}

/// Parses `birdc show route all` output.
///
/// ```text
/// Table master4:
/// 192.0.2.0/24         unicast [peer_10_0_0_1 10:03:38.919] * (100) [AS65011?]
///         via 10.0.0.1 on vb
///         BGP.as_path: 65001 65010 65011
///         BGP.next_hop: 10.0.0.1
///                      unicast [peer_fd00__1 10:03:39.001] (100) [AS65011?]
/// ```
/// A path line without a prefix belongs to the last prefix seen.
pub fn parse_routes(text: &str) -> Result<Vec<RibEntry>, String> {
    let mut out: Vec<RibEntry> = Vec::new();
    let mut prefix: Option<IpNet> = None;
    // `via` from the route line, used when no BGP.next_hop attribute is present.
    let mut via: Option<IpAddr> = None;
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with("Table ") {
            continue;
        }
        let is_attr = line.starts_with('\t') || line.starts_with("        ");
        let trimmed = line.trim();
        if line.contains(" [") && !is_attr {
            // A path line: prefix at column 0, or continuation indented by spaces.
            if !line.starts_with(' ') {
                let p = trimmed.split_whitespace().next().unwrap_or("");
                prefix = Some(
                    p.parse()
                        .map_err(|e| format!("bird route line {line:?}: prefix: {e}"))?,
                );
            }
            let prefix =
                prefix.ok_or_else(|| format!("bird route line without prefix: {line:?}"))?;
            via = None;
            out.push(RibEntry {
                prefix,
                nexthop: None,
                as_path: Vec::new(),
                communities: Vec::new(),
                large_communities: Vec::new(),
                med: None,
                local_pref: None,
                best: line.contains("] * ("),
            });
            continue;
        }
        let Some(e) = out.last_mut() else { continue };
        if let Some(rest) = trimmed.strip_prefix("via ") {
            via = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            if e.nexthop.is_none() {
                e.nexthop = via;
            }
        } else if let Some(rest) = trimmed.strip_prefix("BGP.next_hop:") {
            e.nexthop = rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .or(via);
        } else if let Some(rest) = trimmed.strip_prefix("BGP.as_path:") {
            // AS_SETs show as "{1 2}"; flatten them like gobgp's parse does.
            e.as_path = rest
                .split(|c: char| c.is_whitespace() || c == '{' || c == '}')
                .filter_map(|a| a.parse().ok())
                .collect();
        } else if let Some(rest) = trimmed.strip_prefix("BGP.med:") {
            e.med = rest.trim().parse().ok();
        } else if let Some(rest) = trimmed.strip_prefix("BGP.local_pref:") {
            e.local_pref = rest.trim().parse().ok();
        } else if let Some(rest) = trimmed.strip_prefix("BGP.community:") {
            e.communities = tuples(rest)
                .into_iter()
                .filter_map(|t| match t[..] {
                    [a, b] => Some((a as u16, b as u16)),
                    _ => None,
                })
                .collect();
        } else if let Some(rest) = trimmed.strip_prefix("BGP.large_community:") {
            e.large_communities = tuples(rest)
                .into_iter()
                .filter_map(|t| match t[..] {
                    [a, b, c] => Some((a, b, c)),
                    _ => None,
                })
                .collect();
        }
    }
    Ok(out)
}

/// "(1,2) (3,4)" or "(1, 2, 3)" -> [[1,2],[3,4]] / [[1,2,3]].
fn tuples(s: &str) -> Vec<Vec<u32>> {
    s.split('(')
        .skip(1)
        .map(|t| {
            t.split(')')
                .next()
                .unwrap_or("")
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .collect()
}
