//! The agent's configuration file (TOML): what it means, its defaults, and its validation.
//!
//! Parsing is strict: unknown keys are errors (a typo must not silently fall back to a
//! default), and every error names the file, the key and the reason. Nothing here touches the
//! network or the kernel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use underroute_bgp::policy::{ImportPolicy, PrefixFilter, PrefixRule};
use underroute_bgp::speaker::{GracefulRestartConfig, PeerConfig, SpeakerConfig};
use underroute_bgp::{Asn, Family, RouterId};

/// The configuration used when no file is given: one node, no peers. The demo and tests start
/// from it and override what they need.
pub const EMBEDDED_DEFAULT: &str = include_str!("config/default.toml");

/// A configuration error, naming where and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, unknown key, wrong type).
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message, with the key and line.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// The key, as a TOML path (`peer[2].hold_time`).
        key: String,
        /// Why it is rejected.
        reason: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node.
    pub node: NodeConfig,
    /// The cluster around it.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// BGP speaker settings.
    #[serde(default)]
    pub bgp: BgpConfig,
    /// Static peers: top-of-rack routers, route reflectors, or other nodes without Kubernetes.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerEntry>,
    /// Kernel route programming.
    #[serde(default)]
    pub kernel: KernelConfig,
    /// The inspection API.
    #[serde(default)]
    pub api: ApiConfig,
    /// Where the CNI plugin records underlay pods.
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Prometheus metrics and health probes.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// `[node]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name. Required standalone; in Kubernetes mode it defaults to `--node-name` (the
    /// `NODE_NAME` environment variable, from the downward API).
    #[serde(default)]
    pub name: String,
    /// BGP identifier. Required standalone; in Kubernetes mode it defaults to the Node's IPv4
    /// InternalIP.
    #[serde(default = "unset_router_id")]
    pub router_id: Ipv4Addr,
    /// AS number (in Kubernetes mode, the default for every node; a Node annotation overrides
    /// it per node).
    pub asn: u32,
    /// This node's pod CIDRs, advertised to every peer.
    #[serde(default)]
    pub pod_cidrs: Vec<IpNet>,
}

/// `[cluster]`
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster-wide pod CIDRs; a mesh peer may announce prefixes inside them.
    #[serde(default)]
    pub pod_cidrs: Vec<IpNet>,
    /// Underlay ranges where underlay pods get addresses; mesh peers may announce host routes
    /// (/32, /128) inside them.
    #[serde(default)]
    pub underlay_ranges: Vec<IpNet>,
    /// Peer with every other node (kube mode). Off when top-of-rack reflectors carry the routes.
    #[serde(default = "yes")]
    pub mesh: bool,
}

/// `[bgp]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BgpConfig {
    /// Listen addresses (`ADDR` for port 179 or `ADDR:PORT`).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Graceful restart (RFC 4724): on by default.
    #[serde(default = "yes")]
    pub graceful_restart: bool,
    /// Restart time we advertise, in seconds (at most 4095).
    #[serde(default = "default_restart_time")]
    pub restart_time: u16,
    /// Default hold time for peers, in seconds.
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// Default connect-retry time for peers, in seconds.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u64,
    /// How SIGTERM ends the sessions.
    #[serde(default)]
    pub sigterm: SigtermAction,
}

/// `bgp.sigterm`: what the agent tells its peers when it is stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SigtermAction {
    /// Cease / Administrative Shutdown: peers withdraw our routes at once (a node going away).
    #[default]
    Withdraw,
    /// Close without a NOTIFICATION: peers that negotiated graceful restart keep our routes
    /// (stale) until we are back (a restart: DaemonSet rolling update).
    GracefulRestart,
}

impl Default for BgpConfig {
    fn default() -> Self {
        BgpConfig {
            listen: default_listen(),
            graceful_restart: true,
            restart_time: default_restart_time(),
            hold_time: default_hold(),
            connect_retry: default_connect_retry(),
            sigterm: SigtermAction::default(),
        }
    }
}

/// One `[[peer]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// Peer address.
    pub address: IpAddr,
    /// Peer AS: the node's AS means iBGP, another means eBGP.
    pub asn: u32,
    /// TCP MD5 password.
    pub password: Option<String>,
    /// TTL for multihop eBGP.
    pub multihop_ttl: Option<u8>,
    /// Only accept the peer's connection.
    #[serde(default)]
    pub passive: bool,
    /// Hold time in seconds (default `[bgp] hold_time`).
    pub hold_time: Option<u16>,
    /// The peer is our route-reflector client.
    #[serde(default)]
    pub route_reflector_client: bool,
    /// Source address for the session.
    pub local_address: Option<IpAddr>,
    /// TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// What we accept from this peer: prefixes in router prefix-list style
    /// (`"10.0.0.0/8"` exact, `"10.0.0.0/8 le 32"`, `"10.0.0.0/8 ge 24 le 28"`).
    /// Default: nothing, except a default route when `accept_default_route` is set.
    #[serde(default)]
    pub import: Vec<String>,
    /// Accept 0.0.0.0/0 and ::/0 from this peer.
    #[serde(default)]
    pub accept_default_route: bool,
}

/// `[kernel]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// Keep one routing table per host address (`ip rule from ADDR lookup T`).
    #[serde(default = "yes")]
    pub per_address_tables: bool,
    /// Route protocol number marking our routes and rules.
    #[serde(default = "default_route_protocol")]
    pub route_protocol: u8,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            per_address_tables: true,
            route_protocol: default_route_protocol(),
        }
    }
}

/// `[api]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// gRPC listen address.
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// The API on a unix socket too (for `underroute global|neighbor --socket`).
    #[serde(default = "default_api_socket")]
    pub socket: Option<PathBuf>,
    /// Allow enable/disable/reset through the API.
    #[serde(default)]
    pub allow_mutations: bool,
    /// Allow a listen address other than loopback.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_api_listen(),
            socket: default_api_socket(),
            allow_mutations: false,
            allow_remote: false,
        }
    }
}

/// `[registry]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory the CNI plugin writes pod records to.
    #[serde(default = "default_registry_dir")]
    pub dir: PathBuf,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            dir: default_registry_dir(),
        }
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// HTTP address for `/metrics`, `/healthz` and `/readyz`.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: default_metrics_listen(),
        }
    }
}

/// How the configuration file is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything comes from the file.
    Standalone,
    /// The node's name, router id and pod CIDRs may come from the cluster (the Node object);
    /// the file is checked again once they are filled in.
    Kubernetes,
}

fn unset_router_id() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}
fn yes() -> bool {
    true
}
fn default_listen() -> Vec<String> {
    vec!["0.0.0.0".into(), "::".into()]
}
fn default_restart_time() -> u16 {
    120
}
fn default_hold() -> u16 {
    90
}
fn default_connect_retry() -> u64 {
    5
}
fn default_port() -> u16 {
    179
}
fn default_route_protocol() -> u8 {
    crate::DEFAULT_ROUTE_PROTOCOL
}
fn default_api_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}
fn default_api_socket() -> Option<PathBuf> {
    Some(PathBuf::from("/run/underroute/api.sock"))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9479))
}
fn default_registry_dir() -> PathBuf {
    PathBuf::from("/run/underroute/pods")
}

impl Config {
    /// Read and validate a standalone file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_as(path, Mode::Standalone)
    }

    /// Read and validate a file for `mode`.
    pub fn load_as(path: &Path, mode: Mode) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Config::parse_as(&text, &file, mode)
    }

    /// Parse and validate standalone text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        Config::parse_as(text, file, Mode::Standalone)
    }

    /// Parse and validate text for `mode`; `file` names it in errors.
    pub fn parse_as(text: &str, file: &str, mode: Mode) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        config.validate_as(file, mode)?;
        Ok(config)
    }

    /// Check every value as for a standalone file (in Kubernetes mode: once the node's name and
    /// router id are filled in from the cluster).
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        self.validate_as(file, Mode::Standalone)
    }

    fn validate_as(&self, file: &str, mode: Mode) -> Result<(), ConfigError> {
        let bad = |key: String, reason: String| ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason,
        };
        let standalone = mode == Mode::Standalone;
        if standalone && self.node.name.trim().is_empty() {
            return Err(bad(
                "node.name".into(),
                "required (only Kubernetes mode takes it from the cluster)".into(),
            ));
        }
        if self.node.asn == 0 || self.node.asn == Asn::TRANS.0 {
            return Err(bad(
                "node.asn".into(),
                format!("{} is reserved (RFC 7607, RFC 6793)", self.node.asn),
            ));
        }
        if standalone && self.node.router_id.is_unspecified() {
            return Err(bad(
                "node.router_id".into(),
                "required (only Kubernetes mode takes it from the Node's InternalIP)".into(),
            ));
        }
        if self.node.router_id.is_multicast() || self.node.router_id.is_broadcast() {
            return Err(bad(
                "node.router_id".into(),
                format!("{} is not a usable BGP identifier", self.node.router_id),
            ));
        }
        for (key, list) in [
            ("node.pod_cidrs", &self.node.pod_cidrs),
            ("cluster.pod_cidrs", &self.cluster.pod_cidrs),
            ("cluster.underlay_ranges", &self.cluster.underlay_ranges),
        ] {
            for (i, net) in list.iter().enumerate() {
                if net.trunc() != *net {
                    return Err(bad(
                        format!("{key}[{i}]"),
                        format!("{net} has host bits set (did you mean {}?)", net.trunc()),
                    ));
                }
            }
        }
        for (i, cidr) in self.node.pod_cidrs.iter().enumerate() {
            if !self.cluster.pod_cidrs.is_empty()
                && !self.cluster.pod_cidrs.iter().any(|c| c.contains(cidr))
            {
                return Err(bad(
                    format!("node.pod_cidrs[{i}]"),
                    format!("{cidr} is outside every cluster.pod_cidrs"),
                ));
            }
        }
        if self.bgp.hold_time != 0 && self.bgp.hold_time < 3 {
            return Err(bad(
                "bgp.hold_time".into(),
                "must be 0 or at least 3 seconds (RFC 4271 4.2)".into(),
            ));
        }
        if self.bgp.restart_time > 4095 {
            return Err(bad(
                "bgp.restart_time".into(),
                "at most 4095 seconds (12 bits, RFC 4724)".into(),
            ));
        }
        if self.bgp.connect_retry == 0 {
            return Err(bad(
                "bgp.connect_retry".into(),
                "must be at least 1 second".into(),
            ));
        }
        for (i, l) in self.bgp.listen.iter().enumerate() {
            listen_addr(l).map_err(|reason| bad(format!("bgp.listen[{i}]"), reason))?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, p) in self.peers.iter().enumerate() {
            if !seen.insert(p.address) {
                return Err(bad(
                    format!("peer[{i}].address"),
                    format!("{} is configured twice", p.address),
                ));
            }
            p.validate()
                .map_err(|(key, reason)| bad(format!("peer[{i}].{key}"), reason))?;
        }
        if !self.api.allow_remote && !self.api.listen.ip().is_loopback() {
            return Err(bad(
                "api.listen".into(),
                format!(
                    "{} is not a loopback address; set api.allow_remote = true to expose the API",
                    self.api.listen
                ),
            ));
        }
        Ok(())
    }

    /// The speaker settings this file describes.
    pub fn speaker(&self) -> SpeakerConfig {
        SpeakerConfig {
            asn: Asn(self.node.asn),
            router_id: RouterId(self.node.router_id),
            // Validated in `validate`.
            listen: self
                .bgp
                .listen
                .iter()
                .filter_map(|l| listen_addr(l).ok())
                .collect(),
            cluster_id: None,
            graceful_restart: self.bgp.graceful_restart.then(|| GracefulRestartConfig {
                restart_time: self.bgp.restart_time,
                ..GracefulRestartConfig::default()
            }),
            hostname: Some(self.node.name.clone()),
        }
    }

    /// The static peers as speaker peer settings, with their import policies (standalone: the
    /// nodes this file knows of are the router id, the listen addresses and the peers).
    pub fn peer_configs(&self) -> Vec<PeerConfig> {
        let nodes = self.node_addresses();
        self.peers
            .iter()
            .map(|p| self.peer_config(p, &nodes))
            .collect()
    }

    /// One `[[peer]]` (or a peer from a Node annotation) as speaker settings. `nodes` are the
    /// cluster's node addresses, which a mesh member may never announce host routes for.
    pub fn peer_config(&self, p: &PeerEntry, nodes: &[IpAddr]) -> PeerConfig {
        let mut pc = self.session_defaults(p.address, p.asn);
        pc.port = p.port;
        pc.local_address = p.local_address;
        pc.password = p.password.clone();
        pc.multihop_ttl = p.multihop_ttl;
        pc.hold_time = p.hold_time.unwrap_or(self.bgp.hold_time);
        pc.passive = p.passive;
        pc.route_reflector_client = p.route_reflector_client;
        pc.import = self.import_policy(p, nodes);
        pc
    }

    /// Another node of the cluster mesh (Kubernetes mode): iBGP with `[bgp]` defaults and the
    /// mesh import filter (`mesh_filter`, shared by every mesh peer).
    pub fn mesh_peer(
        &self,
        address: IpAddr,
        mesh: &Arc<PrefixFilter>,
        rr_client: bool,
    ) -> PeerConfig {
        let mut pc = self.session_defaults(address, self.node.asn);
        pc.route_reflector_client = rr_client;
        pc.import = ImportPolicy::Filter(mesh.clone());
        pc
    }

    fn session_defaults(&self, address: IpAddr, asn: u32) -> PeerConfig {
        let mut pc = PeerConfig::new(address, Asn(asn));
        pc.hold_time = self.bgp.hold_time;
        pc.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
        pc.connect_retry = Duration::from_secs(self.bgp.connect_retry);
        pc
    }

    /// What a peer may announce to us. A peer in our own AS is a mesh member unless it has an
    /// explicit import list: it may announce pod-network prefixes only.
    fn import_policy(&self, p: &PeerEntry, nodes: &[IpAddr]) -> ImportPolicy {
        let mut filter = if p.import.is_empty() && p.asn == self.node.asn {
            self.mesh_filter(nodes)
        } else {
            PrefixFilter::default()
        };
        filter
            .allow
            .extend(p.import.iter().filter_map(|r| parse_rule(r).ok()));
        if p.accept_default_route {
            filter
                .allow
                .push(PrefixRule::exact("0.0.0.0/0".parse().expect("literal")));
            filter
                .allow
                .push(PrefixRule::exact("::/0".parse().expect("literal")));
        }
        if filter.allow.is_empty() {
            ImportPolicy::Deny
        } else if filter.except.is_empty() {
            ImportPolicy::Prefixes(filter.allow)
        } else {
            ImportPolicy::Filter(Arc::new(filter))
        }
    }

    /// Mesh import: anything inside the cluster pod CIDRs, and host routes inside the underlay
    /// ranges except the nodes' own addresses (`nodes`). Nothing else, so a mesh peer cannot
    /// steer the node's own traffic: nodes usually sit in the underlay range, and a /32 for one
    /// of them would pull the BGP sessions and kubelet traffic to that node through the
    /// announcer.
    pub fn mesh_filter(&self, nodes: &[IpAddr]) -> PrefixFilter {
        let mut allow: Vec<PrefixRule> = self
            .cluster
            .pod_cidrs
            .iter()
            .map(|c| PrefixRule::or_longer(*c))
            .collect();
        for r in &self.cluster.underlay_ranges {
            let host = r.max_prefix_len();
            if let Ok(rule) = PrefixRule::new(*r, Some(host), Some(host)) {
                allow.push(rule);
            }
        }
        PrefixFilter {
            allow,
            except: nodes.iter().map(|a| IpNet::from(*a)).collect(),
        }
    }

    /// The node addresses this config knows: the router id, the listen addresses and every
    /// peer (in standalone mode the peers are the other nodes).
    pub fn node_addresses(&self) -> Vec<IpAddr> {
        let mut v = vec![IpAddr::V4(self.node.router_id)];
        v.extend(
            self.bgp
                .listen
                .iter()
                .filter_map(|l| listen_addr(l).ok())
                .map(|sa| sa.ip())
                .filter(|ip| !ip.is_unspecified()),
        );
        v.extend(self.peers.iter().map(|p| p.address));
        v
    }
}

impl PeerEntry {
    /// Checks one peer's values; the error is (key within the peer, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((key.to_string(), reason.to_string()));
        if self.asn == 0 {
            return bad("asn", "0 is reserved (RFC 7607)");
        }
        if self.hold_time.is_some_and(|h| h != 0 && h < 3) {
            return bad("hold_time", "must be 0 or at least 3 seconds");
        }
        if self
            .password
            .as_ref()
            .is_some_and(|pw| pw.is_empty() || pw.len() > 80)
        {
            return bad("password", "must be 1 to 80 bytes (TCP MD5 key)");
        }
        if self.multihop_ttl == Some(0) {
            return bad("multihop_ttl", "must be at least 1");
        }
        for (j, rule) in self.import.iter().enumerate() {
            parse_rule(rule).map_err(|reason| (format!("import[{j}]"), reason))?;
        }
        Ok(())
    }
}

/// `ADDR` (port 179) or `ADDR:PORT` / `[ADDR]:PORT`.
pub fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 179))
        .map_err(|_| format!("{s:?} is neither ADDR nor ADDR:PORT"))
}

/// `PREFIX [ge N] [le M]`.
pub fn parse_rule(s: &str) -> Result<PrefixRule, String> {
    let mut words = s.split_whitespace();
    let prefix: IpNet = words
        .next()
        .ok_or_else(|| "empty rule".to_string())?
        .parse()
        .map_err(|_| format!("{s:?}: the first word must be a prefix"))?;
    let (mut ge, mut le) = (None, None);
    while let Some(word) = words.next() {
        let n: u8 = words
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{s:?}: `{word}` needs a prefix length"))?;
        match word {
            "ge" => ge = Some(n),
            "le" => le = Some(n),
            other => return Err(format!("{s:?}: unknown word `{other}` (expected ge or le)")),
        }
    }
    PrefixRule::new(prefix, ge, le).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_import_refuses_node_host_routes_inside_the_underlay_range() {
        let cfg = Config::parse(
            "[node]\nname = \"n1\"\nrouter_id = \"192.168.50.50\"\nasn = 64512\n[cluster]\nunderlay_ranges = [\"192.168.50.0/24\"]\n[[peer]]\naddress = \"192.168.50.51\"\nasn = 64512\n",
            "test",
        )
        .expect("valid");
        let policy = ImportPolicy::Filter(Arc::new(cfg.mesh_filter(&cfg.node_addresses())));
        let net = |s: &str| s.parse::<IpNet>().expect("literal");
        assert!(policy.accepts(&net("192.168.50.100/32")));
        assert!(policy.accepts(&net("192.168.50.255/32")));
        assert!(!policy.accepts(&net("192.168.50.50/32")), "own address");
        assert!(!policy.accepts(&net("192.168.50.51/32")), "a peer node");
        assert!(!policy.accepts(&net("192.168.50.0/24")));
    }

    const ISSUE_EXAMPLE: &str = r#"
[node]
name = "node1"
router_id = "192.168.50.50"
asn = 64512
pod_cidrs = ["10.233.64.0/24"]
[[peer]]
address = "192.168.50.51"
asn = 64512            # same ASN: iBGP; other: eBGP
[kernel]
per_address_tables = true
[api]
listen = "127.0.0.1:50051"
"#;

    fn err(text: &str) -> String {
        Config::parse(text, "test.toml")
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn the_example_from_the_issue_parses_with_defaults() {
        let c = Config::parse(ISSUE_EXAMPLE, "test.toml").expect("valid");
        assert_eq!(c.node.asn, 64512);
        assert!(c.bgp.graceful_restart, "graceful restart is on by default");
        assert_eq!(c.kernel.route_protocol, crate::DEFAULT_ROUTE_PROTOCOL);
        let peers = c.peer_configs();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].hold_time, 90);
    }

    #[test]
    fn every_key_is_documented() {
        // Every key the type has, with every optional field filled, must be in the reference.
        let full = format!(
            "{EMBEDDED_DEFAULT}\n[[peer]]\naddress = \"10.0.0.1\"\nasn = 65000\npassword = \"x\"\nmultihop_ttl = 2\npassive = true\nhold_time = 9\nroute_reflector_client = true\nlocal_address = \"10.0.0.2\"\nport = 179\nimport = [\"10.0.0.0/8\"]\naccept_default_route = true\n"
        );
        let config = Config::parse(&full, "full").expect("valid");
        let value = toml::Value::try_from(&config).expect("serialisable");
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/configuration.md"
        ))
        .expect("doc");
        let toml::Value::Table(sections) = value else {
            panic!("a table")
        };
        let mut missing = Vec::new();
        for (section, body) in &sections {
            let header = if section == "peer" {
                "## `[[peer]]`".to_string()
            } else {
                format!("## `[{section}]`")
            };
            if !doc.contains(&header) {
                missing.push(header.clone());
            }
            let tables: Vec<&toml::Table> = match body {
                toml::Value::Table(t) => vec![t],
                toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
                _ => continue,
            };
            for table in tables {
                for key in table.keys() {
                    if !doc.contains(&format!("| `{key}` |")) {
                        missing.push(format!("{section}.{key}"));
                    }
                }
            }
        }
        assert!(
            missing.is_empty(),
            "docs/configuration.md lacks: {missing:?}"
        );
    }

    #[test]
    fn the_embedded_default_is_valid() {
        Config::parse(EMBEDDED_DEFAULT, "embedded").expect("embedded default parses");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let e = err(&ISSUE_EXAMPLE.replace("per_address_tables", "per_adress_tables"));
        assert!(
            e.contains("test.toml") && e.contains("per_adress_tables"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = err(&ISSUE_EXAMPLE.replace("asn = 64512            #", "asn = \"x\" #"));
        assert!(e.contains("test.toml") && e.contains("asn"), "{e}");
    }

    #[test]
    fn invalid_values_name_file_key_and_reason() {
        let e = err(&ISSUE_EXAMPLE.replace("[kernel]", "hold_time = 2\n[kernel]"));
        assert_eq!(
            e,
            "test.toml: key `peer[0].hold_time`: must be 0 or at least 3 seconds"
        );
        let e = err(&ISSUE_EXAMPLE.replace("10.233.64.0/24", "10.233.64.1/24"));
        assert!(
            e.contains("`node.pod_cidrs[0]`") && e.contains("host bits"),
            "{e}"
        );
        let e = err(&ISSUE_EXAMPLE.replace("127.0.0.1:50051", "0.0.0.0:50051"));
        assert!(
            e.contains("`api.listen`") && e.contains("allow_remote"),
            "{e}"
        );
        let e = err(&ISSUE_EXAMPLE.replace("[kernel]", "import = [\"10.0.0.0/8 lt 9\"]\n[kernel]"));
        assert!(e.contains("`peer[0].import[0]`") && e.contains("lt"), "{e}");
    }

    #[test]
    fn duplicate_peers_are_rejected() {
        let text = format!("{ISSUE_EXAMPLE}\n[[peer]]\naddress = \"192.168.50.51\"\nasn = 65000\n");
        assert!(err(&text).contains("configured twice"));
    }

    #[test]
    fn mesh_peers_accept_only_pod_network_prefixes_and_external_peers_nothing_by_default() {
        let text = ISSUE_EXAMPLE.replace(
            "[kernel]",
            "[[peer]]\naddress = \"192.168.50.1\"\nasn = 65000\n[cluster]\npod_cidrs = [\"10.233.64.0/18\"]\nunderlay_ranges = [\"192.168.50.0/24\"]\n[kernel]",
        );
        let c = Config::parse(&text, "test.toml").expect("valid");
        let peers = c.peer_configs();
        let mesh = &peers[0].import;
        let p = |s: &str| s.parse::<IpNet>().expect("literal");
        assert!(
            mesh.accepts(&p("10.233.66.0/24")),
            "another node's pod CIDR"
        );
        assert!(mesh.accepts(&p("192.168.50.77/32")), "an underlay pod");
        assert!(
            !mesh.accepts(&p("0.0.0.0/0")),
            "a default route from a mesh peer is a hijack"
        );
        assert!(
            !mesh.accepts(&p("192.168.50.0/24")),
            "only host routes in underlay ranges"
        );
        assert!(!mesh.accepts(&p("8.8.8.0/24")));
        assert_eq!(
            peers[1].import,
            ImportPolicy::Deny,
            "external peer: nothing unless configured"
        );
    }
}
