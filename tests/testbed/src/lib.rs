//! `underroute-testbed`: a throw-away lab of network namespaces with real BGP daemons (gobgpd,
//! BIRD) in them, for the interop tests and the `underroute demo` command. It is test harness,
//! not product: the agent crate depends on it only for its tests and behind the `demo` feature.
//!
//! Owns: namespaces named `ur-*` that it creates, the processes it starts in them, and a temp
//! directory per namespace (configs, logs, control sockets). It must never touch the host's own
//! links, routes or rules: everything runs inside namespaces made here, and every wait is bounded.
//!

pub mod apiserver;
pub mod bird;
pub mod cni;
pub mod fabric;
pub mod frr;
pub mod gobgp;
pub mod incluster;
pub mod iproute;
pub mod netns;
pub mod routemon;
pub mod speaker;
pub mod tor;
pub mod wait;

pub use bird::{Bird, BirdConfig, BirdNeighbor, StaticRoute};
pub use frr::Frr;
pub use gobgp::{GobgpConfig, GobgpNeighbor, Gobgpd};
pub use netns::{link_pair, Addrs, Netns, Proc, VethPair};
pub use routemon::{RouteEvent, RouteMonitor};
pub use speaker::{runtime_in, NsSpeaker};
pub use wait::{run_bounded, run_ok, wait_until};

use std::net::IpAddr;

use ipnet::IpNet;

/// Address family of a BGP session / table (unicast only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The name both gobgp (`-a ipv4`) and the harness use.
    pub fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// BGP path attributes a test route may carry. Empty/None means "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteAttrs {
    /// AS numbers to put in the AS_PATH (the daemon prepends its own AS on eBGP export).
    pub as_path: Vec<u32>,
    /// RFC 1997 communities as (asn, value).
    pub communities: Vec<(u16, u16)>,
    /// RFC 8092 large communities as (global admin, local 1, local 2).
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
}

/// One path as seen in a daemon's table, normalised so gobgp and BIRD output compare directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RibEntry {
    pub prefix: IpNet,
    /// The BGP NEXT_HOP (first address if the daemon shows global + link-local).
    pub nexthop: Option<IpAddr>,
    /// AS_PATH flattened in order (AS_SET members included as they appear).
    pub as_path: Vec<u32>,
    pub communities: Vec<(u16, u16)>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// Whether the daemon selected this path as best.
    pub best: bool,
}

/// Whether the test process may create namespaces. Outside CI a test returns early with a
/// message when this is false, so `cargo test` as a normal user still runs the rest; under CI
/// (`CI` set) a missing root is a failure, so a green CI always means the namespace tests ran.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI must run as root (euid {euid})"
        );
        eprintln!("SKIPPED {test}: needs root for network namespaces (euid {euid})");
        return false;
    }
    true
}
