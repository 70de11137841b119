//! One L2 segment of several nodes, and agent nodes with pods on it, for the multi-node tests
//! and `underroute demo`.
//!
//! ```text
//!   pod ns (10.233.64.2) ─veth─ node ns (eth0 192.168.50.50, agent) ─veth─┐
//!   pod ns (10.233.66.2) ─veth─ node ns (eth0 192.168.50.51, agent) ─veth─┤ fabric ns: bridge br0
//!   ...                                                                    ┘
//! ```
//!
//! Owns: a fabric namespace holding one Linux bridge, the veths it plugs into it, and for a
//! [`MeshNode`] the node and pod namespaces and the agent process. Like the rest of the testbed
//! it never touches the host namespace: the bridge connects only namespaces made here, so no
//! packet can leave the lab.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::netns::{Netns, Proc};
use super::wait::{run_bounded, wait_until};

static IFCOUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace with a Linux bridge `br0`; [`Fabric::attach`] plugs a node into it.
pub struct Fabric {
    ns: Netns,
}

impl Fabric {
    /// Creates the fabric namespace and its bridge (no STP, no forward delay: ports forward at
    /// once, so sessions can start as soon as a node is attached).
    pub fn new(tag: &str) -> Result<Fabric, String> {
        let ns = Netns::new(tag)?;
        ns.exec_ok(&[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ])?;
        ns.exec_ok(&["ip", "link", "set", "br0", "up"])?;
        Ok(Fabric { ns })
    }

    /// The fabric namespace itself.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// A TCP listener on `addr` inside the fabric, for a service every node reaches over the
    /// segment (the fake Kubernetes API server). The bridge gets `addr` with `prefix_len`; the
    /// socket is made by a thread that entered the fabric namespace, so it lives there while
    /// the test process serves it.
    pub fn listen_tcp(&self, addr: SocketAddrV4, prefix_len: u8) -> Result<TcpListener, String> {
        let cidr = format!("{}/{prefix_len}", addr.ip());
        let have = self
            .ns
            .exec_stdout(&["ip", "-4", "addr", "show", "dev", "br0"])?;
        if !have.contains(&format!("inet {cidr} ")) {
            self.ns
                .exec_ok(&["ip", "addr", "add", &cidr, "dev", "br0"])?;
        }
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.ns.enter_thread()?;
                    TcpListener::bind(addr).map_err(|e| format!("bind {addr} in the fabric: {e}"))
                })
                .join()
                .map_err(|_| "listener thread panicked".to_string())?
        })
    }

    /// Plugs `node` into the bridge as `eth0` with `addr` (e.g. 192.168.50.50/24).
    pub fn attach(&self, node: &Netns, addr: Ipv4Net) -> Result<(), String> {
        let port = format!("p{}", IFCOUNTER.fetch_add(1, Ordering::Relaxed));
        // Created inside the fabric, the node's end moved straight into the node namespace: the
        // pair never exists in the host namespace.
        self.ns.exec_ok(&[
            "ip",
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node.name(),
        ])?;
        self.ns
            .exec_ok(&["ip", "link", "set", &port, "master", "br0", "up"])?;
        node.exec_ok(&["ip", "addr", "add", &addr.to_string(), "dev", "eth0"])?;
        node.exec_ok(&["ip", "link", "set", "eth0", "up"])?;
        Ok(())
    }
}

/// Connects `pod` to `node` by a veth: the pod's `eth0` and a node-side interface, whose name is
/// returned. With `pod_addr` inside `node_addr`'s subnet (a pod CIDR pod) the node side gets
/// `node_addr` and the pod a default route via it. With a /32 `pod_addr` (an underlay pod) the
/// node gets a host route to the pod on the veth, and the pod reaches the node by a link-local
/// gateway, the way routed CNI plugins attach pods.
pub fn attach_pod(
    node: &Netns,
    pod: &Netns,
    node_addr: Ipv4Net,
    pod_addr: Ipv4Net,
) -> Result<String, String> {
    let host_if = format!("pv{}", IFCOUNTER.fetch_add(1, Ordering::Relaxed));
    node.exec_ok(&[
        "ip",
        "link",
        "add",
        &host_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ])?;
    node.exec_ok(&["ip", "addr", "add", &node_addr.to_string(), "dev", &host_if])?;
    node.exec_ok(&["ip", "link", "set", &host_if, "up"])?;
    pod.exec_ok(&["ip", "addr", "add", &pod_addr.to_string(), "dev", "eth0"])?;
    pod.exec_ok(&["ip", "link", "set", "eth0", "up"])?;
    let gw = node_addr.addr().to_string();
    if pod_addr.prefix_len() == 32 {
        node.exec_ok(&["ip", "route", "add", &pod_addr.to_string(), "dev", &host_if])?;
        pod.exec_ok(&["ip", "route", "add", &gw, "dev", "eth0"])?;
    }
    pod.exec_ok(&["ip", "route", "add", "default", "via", &gw, "dev", "eth0"])?;
    Ok(host_if)
}

/// What one agent node of a mesh looks like.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// Address on the fabric; also the router id and the BGP listen address.
    pub address: Ipv4Addr,
    /// The node's pod CIDR; the node takes `.1`, its pod `.2`.
    pub pod_cidr: Ipv4Net,
}

/// The settings shared by every node of a mesh.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    pub asn: u32,
    /// Prefix length of the fabric subnet.
    pub fabric_len: u8,
    pub cluster_pod_cidrs: Vec<Ipv4Net>,
    pub underlay_ranges: Vec<Ipv4Net>,
    /// Peer addresses of every node (the agent skips its own).
    pub peers: Vec<Ipv4Addr>,
    /// Kubernetes mode with this kubeconfig: the agents take their router id, pod CIDRs and
    /// peers from the API server (Node objects), not from the file.
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes mode the in-cluster way instead (`--kube`, no kubeconfig): the service
    /// account mounted where kube-rs looks, the API server at this address over TLS.
    pub in_cluster: Option<InCluster>,
}

/// A service account and the API server address, for agents started in-cluster style.
#[derive(Clone)]
pub struct InCluster {
    pub service_account: std::sync::Arc<super::incluster::ServiceAccount>,
    pub server: std::net::SocketAddr,
}

impl std::fmt::Debug for InCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "InCluster({}, {})",
            self.service_account.dir().display(),
            self.server
        )
    }
}

/// The agent config of `node` in `mesh`: a full iBGP mesh from static peers (or in Kubernetes
/// mode from the Node objects), quick timers (hold 9 s, keepalive 3 s, connect retry 1 s) so
/// tests converge in seconds.
pub fn agent_config(node: &NodeSpec, mesh: &MeshSpec, registry: &Path, socket: &Path) -> String {
    let list = |v: &[Ipv4Net]| {
        v.iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = String::new();
    let kube = mesh.kubeconfig.is_some() || mesh.in_cluster.is_some();
    let _ = writeln!(s, "[node]");
    let _ = writeln!(s, "asn = {}", mesh.asn);
    if !kube {
        let _ = writeln!(s, "name = \"{}\"", node.name);
        let _ = writeln!(s, "router_id = \"{}\"", node.address);
        let _ = writeln!(s, "pod_cidrs = [\"{}\"]", node.pod_cidr);
    }
    let _ = writeln!(s, "[cluster]");
    let _ = writeln!(s, "pod_cidrs = [{}]", list(&mesh.cluster_pod_cidrs));
    let _ = writeln!(s, "underlay_ranges = [{}]", list(&mesh.underlay_ranges));
    let _ = writeln!(s, "[bgp]");
    let _ = writeln!(s, "listen = [\"{}\"]", node.address);
    let _ = writeln!(s, "hold_time = 9");
    let _ = writeln!(s, "connect_retry = 1");
    for p in mesh.peers.iter().filter(|p| **p != node.address && !kube) {
        let _ = writeln!(s, "[[peer]]");
        let _ = writeln!(s, "address = \"{p}\"");
        let _ = writeln!(s, "asn = {}", mesh.asn);
    }
    let _ = writeln!(s, "[registry]");
    let _ = writeln!(s, "dir = \"{}\"", registry.display());
    let _ = writeln!(s, "[api]");
    let _ = writeln!(s, "socket = \"{}\"", socket.display());
    s
}

/// One node of a mesh: its namespace on the fabric, a pod namespace behind a veth, and the
/// agent (the real binary) running in the node namespace.
pub struct MeshNode {
    // Declared first so it drops (SIGKILL + reap) before the namespaces.
    agent: Option<Proc>,
    pub spec: NodeSpec,
    bin: PathBuf,
    config: PathBuf,
    kubeconfig: Option<PathBuf>,
    in_cluster: Option<InCluster>,
    pub registry_dir: PathBuf,
    pub api_socket: PathBuf,
    pub pod: Netns,
    pub ns: Netns,
}

impl MeshNode {
    /// Creates the node and pod namespaces, attaches the node to `fabric` and the pod to the
    /// node, writes the agent config. The agent is not started yet ([`MeshNode::start`]).
    /// Namespaces are named `ur-<tag><node>n-…` and `…p-…`, so one run's are easy to spot.
    pub fn new(
        fabric: &Fabric,
        tag: &str,
        spec: NodeSpec,
        mesh: &MeshSpec,
        bin: &Path,
    ) -> Result<MeshNode, String> {
        let ns = Netns::new(&format!("{tag}{}n", short(&spec.name)))?;
        let pod = Netns::new(&format!("{tag}{}p", short(&spec.name)))?;
        // A node routes for its pods; both are per-namespace sysctls.
        ns.sysctl("net.ipv4.ip_forward", "1")?;
        fabric.attach(
            &ns,
            Ipv4Net::new(spec.address, mesh.fabric_len).map_err(|e| e.to_string())?,
        )?;
        let gw = host(&spec.pod_cidr, 1)?;
        let pod_ip = host(&spec.pod_cidr, 2)?;
        attach_pod(
            &ns,
            &pod,
            Ipv4Net::new(gw, spec.pod_cidr.prefix_len()).map_err(|e| e.to_string())?,
            Ipv4Net::new(pod_ip, spec.pod_cidr.prefix_len()).map_err(|e| e.to_string())?,
        )?;
        let config = ns.dir().join("underroute.toml");
        let registry_dir = ns.dir().join("pods");
        let api_socket = ns.dir().join("api.sock");
        std::fs::write(
            &config,
            agent_config(&spec, mesh, &registry_dir, &api_socket),
        )
        .map_err(|e| format!("write {}: {e}", config.display()))?;
        Ok(MeshNode {
            agent: None,
            spec,
            bin: bin.to_path_buf(),
            config,
            kubeconfig: mesh.kubeconfig.clone(),
            in_cluster: mesh.in_cluster.clone(),
            registry_dir,
            api_socket,
            pod,
            ns,
        })
    }

    /// The pod's address (`.2` of the pod CIDR).
    pub fn pod_ip(&self) -> Ipv4Addr {
        host(&self.spec.pod_cidr, 2).unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Starts the agent (again), its output appended to `agent.log` in the node's dir.
    pub fn start(&mut self) -> Result<(), String> {
        let log = self.ns.dir().join("agent.log");
        let cfg = self.config.to_string_lossy().into_owned();
        let bin = self.bin.to_string_lossy().into_owned();
        let mut args = vec!["agent", "--config", &cfg];
        let kubeconfig = self
            .kubeconfig
            .as_ref()
            .map(|k| k.to_string_lossy().into_owned());
        if let Some(k) = &kubeconfig {
            args.extend(["--kubeconfig", k, "--node-name", &self.spec.name]);
        }
        if let Some(ic) = &self.in_cluster {
            args.extend(["--kube", "--node-name", &self.spec.name]);
            let (program, argv) = ic.service_account.command(ic.server, &bin, &args);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            self.agent = Some(self.ns.spawn(&program, &argv, &log)?);
            return Ok(());
        }
        self.agent = Some(self.ns.spawn(&bin, &args, &log)?);
        Ok(())
    }

    /// Sends `sig` to the agent and waits (bounded) for it to exit.
    pub fn stop(&mut self, sig: i32) -> Result<(), String> {
        if let Some(mut a) = self.agent.take() {
            a.signal(sig)?;
            a.wait_exit(Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// Whether the agent is still running (`Err` with its exit status if it died).
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.agent.as_mut().and_then(|a| a.exited()) {
            Some(st) => Err(format!("agent of {} exited: {st}", self.spec.name)),
            None => Ok(()),
        }
    }

    /// Runs `underroute ARGS --socket <this node's API socket>` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new(&self.bin);
        c.args(args).arg("--socket").arg(&self.api_socket);
        let out = run_bounded(&mut c, Duration::from_secs(10))?;
        if !out.status.success() {
            return Err(format!(
                "underroute {args:?} on {}: {}",
                self.spec.name,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// How many sessions `underroute neighbor` shows as established.
    pub fn established(&self) -> usize {
        self.cli(&["neighbor"])
            .map(|t| t.lines().filter(|l| l.contains("Establ")).count())
            .unwrap_or(0)
    }

    /// The node's IPv4 main-table routes installed by the agent (`proto 201`), one per line.
    pub fn kernel_routes(&self) -> String {
        self.ns
            .exec_stdout(&["ip", "-4", "route", "show", "proto", "201"])
            .unwrap_or_default()
    }
}

/// Builds `specs` as agent nodes on a fresh fabric and starts every agent.
pub fn start_mesh(
    tag: &str,
    specs: &[NodeSpec],
    mesh: &MeshSpec,
    bin: &Path,
) -> Result<(Fabric, Vec<MeshNode>), String> {
    let fabric = Fabric::new(tag)?;
    let mut nodes = Vec::with_capacity(specs.len());
    for s in specs {
        nodes.push(MeshNode::new(&fabric, tag, s.clone(), mesh, bin)?);
    }
    for n in &mut nodes {
        n.start()?;
    }
    Ok((fabric, nodes))
}

/// The usual cluster: nodes 192.168.50.50.. on 192.168.50.0/24, pod CIDRs 10.233.64.0/24,
/// 10.233.66.0/24, ... inside 10.233.64.0/18, AS 64512.
pub fn standard_mesh(n: u8) -> (Vec<NodeSpec>, MeshSpec) {
    let specs: Vec<NodeSpec> = (0..n)
        .map(|i| NodeSpec {
            name: format!("node{}", i + 1),
            address: Ipv4Addr::new(192, 168, 50, 50 + i),
            pod_cidr: Ipv4Net::new(Ipv4Addr::new(10, 233, 64 + 2 * i, 0), 24).unwrap_or_default(),
        })
        .collect();
    let mesh = MeshSpec {
        asn: 64512,
        fabric_len: 24,
        cluster_pod_cidrs: vec![Ipv4Net::new(Ipv4Addr::new(10, 233, 64, 0), 18).unwrap_or_default()],
        underlay_ranges: vec![Ipv4Net::new(Ipv4Addr::new(192, 168, 50, 0), 24).unwrap_or_default()],
        peers: specs.iter().map(|s| s.address).collect(),
        kubeconfig: None,
        in_cluster: None,
    };
    (specs, mesh)
}

/// Waits until every node has every other node's pod CIDR in its kernel via that node, and
/// returns how long it took.
pub fn wait_converged(nodes: &[MeshNode], timeout: Duration) -> Result<Duration, String> {
    let t0 = Instant::now();
    wait_until(timeout, Duration::from_millis(100), || {
        nodes
            .iter()
            .all(|n| {
                let routes = n.kernel_routes();
                nodes
                    .iter()
                    .filter(|o| o.spec.address != n.spec.address)
                    .all(|o| {
                        routes.contains(&format!("{} via {}", o.spec.pod_cidr, o.spec.address))
                    })
            })
            .then_some(())
    })
    .map_err(|e| {
        let tables: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}:\n{}", n.spec.name, n.kernel_routes()))
            .collect();
        format!("mesh not converged: {e}\n{}", tables.join("\n"))
    })?;
    Ok(t0.elapsed())
}

/// Result of a continuous ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
}

impl PingStats {
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.received)
    }
}

/// A `ping -i 0.05` running in a namespace; [`ContinuousPing::finish`] collects its counts.
pub struct ContinuousPing {
    proc: Proc,
    log: PathBuf,
    count: u32,
}

/// Interval of a continuous ping: 20 probes a second, so "lost" × 50 ms is the outage.
pub const PING_INTERVAL: Duration = Duration::from_millis(50);

impl ContinuousPing {
    /// Starts `count` probes from `ns` to `dst`; the log goes to `ns`'s dir.
    pub fn start(ns: &Netns, dst: Ipv4Addr, count: u32) -> Result<ContinuousPing, String> {
        let n = IFCOUNTER.fetch_add(1, Ordering::Relaxed);
        let log = ns.dir().join(format!("ping-{dst}-{n}.out"));
        let c = count.to_string();
        // -w bounds the whole run even if replies stop; -W 1 so a late reply counts as lost.
        let deadline = (u64::from(count) * PING_INTERVAL.as_millis() as u64 / 1000 + 5).to_string();
        let d = dst.to_string();
        let proc = ns.spawn(
            "ping",
            &[
                "-n", "-q", "-i", "0.05", "-W", "1", "-c", &c, "-w", &deadline, &d,
            ],
            &log,
        )?;
        Ok(ContinuousPing { proc, log, count })
    }

    /// Waits (bounded) for ping to end and returns sent/received.
    pub fn finish(mut self) -> Result<PingStats, String> {
        let limit = Duration::from_millis(u64::from(self.count) * 50) + Duration::from_secs(15);
        self.proc.wait_exit(limit)?;
        let text = std::fs::read_to_string(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        parse_ping(&text).ok_or_else(|| format!("no ping summary in:\n{text}"))
    }
}

/// Parses ping's "N packets transmitted, M received" line.
pub fn parse_ping(text: &str) -> Option<PingStats> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line.split(',').map(|part| {
        part.split_whitespace()
            .next()
            .and_then(|w| w.parse::<u32>().ok())
    });
    let sent = nums.next()??;
    let received = nums.next()??;
    Some(PingStats { sent, received })
}

/// A single ping (3 probes) from `ns` to `dst`: whether any reply came.
pub fn ping_once(ns: &Netns, dst: Ipv4Addr) -> bool {
    ns.exec(&[
        "ping",
        "-n",
        "-q",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        &dst.to_string(),
    ])
    .is_ok_and(|o| o.status.success())
}

fn host(net: &Ipv4Net, n: u32) -> Result<Ipv4Addr, String> {
    let a = Ipv4Addr::from(u32::from(net.network()) + n);
    if net.contains(&a) {
        Ok(a)
    } else {
        Err(format!("{net} has no host .{n}"))
    }
}

/// A node name reduced to what a namespace name may hold, short enough to read in `ip netns`.
fn short(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_is_parsed() {
        let t = "--- 10.0.0.1 ping statistics ---\n100 packets transmitted, 97 received, 3% packet loss, time 5000ms\n";
        assert_eq!(
            parse_ping(t),
            Some(PingStats {
                sent: 100,
                received: 97
            })
        );
        let t = "200 packets transmitted, 180 received, +5 errors, 10% packet loss";
        assert_eq!(parse_ping(t).map(|s| s.lost()), Some(20));
    }

    #[test]
    fn standard_mesh_matches_the_lab_plan() {
        let (specs, mesh) = standard_mesh(3);
        assert_eq!(specs[2].address, Ipv4Addr::new(192, 168, 50, 52));
        assert_eq!(specs[2].pod_cidr.to_string(), "10.233.68.0/24");
        let cfg = agent_config(&specs[0], &mesh, Path::new("/r"), Path::new("/s"));
        assert!(cfg.contains("address = \"192.168.50.51\""));
        assert!(!cfg.contains("address = \"192.168.50.50\""));
    }
}
