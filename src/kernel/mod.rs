//! The kernel route programmer: puts the pod-network routes into the main table and keeps one
//! routing table plus one `from ADDR` rule per host address, over rtnetlink.
//!
//! Owns: exactly the routes and policy rules that carry our route protocol number
//! ([`KernelConfig::route_protocol`], default [`crate::DEFAULT_ROUTE_PROTOCOL`]). It must never
//! change, replace or delete anything else: deletes carry our protocol (the kernel matches it),
//! creates use `NLM_F_EXCL`, and a wanted prefix already held by another protocol is reported as
//! a conflict and left alone.
//!
//! ```text
//!  Handle ──Command──▶ programmer task ──spawn_blocking──▶ Engine (sans-IO diff + batched netlink)
//!                          ▲  kick (debounced)              ├─ diff::target / diff::plan (pure)
//!                          │                                └─ batch::Netlink (one socket)
//!                     monitor task (multicast: link, addr, route, rule)
//!                          + resync timer
//! ```
//!
//! - [`routes`]: route types and codec; [`rules`]: rule types and codec; [`tables`]: which
//!   addresses get a table, its id and its content; [`diff`]: target state and plan (pure);
//!   `batch`: the request socket; `monitor`: the multicast listener; `programmer`: the task
//!   and its [`Handle`].
//!
//! See docs/kernel.md for the operator's view.

pub mod diff;
pub mod routes;
pub mod rules;
pub mod tables;

pub(crate) mod batch;
mod monitor;
mod programmer;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::time::Duration;

pub use programmer::{Failure, Handle, Programmer, Report, Snapshot};
pub use routes::{DesiredRoutes, Hop, NextHop, RouteChange, RouteKey, RouteSpec, MAIN_TABLE};
pub use rules::RuleSpec;
pub use tables::{AddressTable, TABLE_SPAN};

/// The Fx hash (as in rustc): a multiply and a rotate per word. Route keys are hashed several
/// hundred thousand times per big reconcile, where SipHash alone cost tens of milliseconds. The
/// keys come from the local kernel and our own desired state, not from the network, so
/// SipHash's flood resistance buys nothing here.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_ne_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_ne_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // The last multiply only carries upwards, so the low bits (hashbrown's bucket index)
        // would depend only on the low bits of the input: for 100.64.x.y/32 keys those are the
        // constant first octets. Rotating brings the well-mixed middle bits down (as rustc-hash
        // 2 does).
        self.0.rotate_left(26)
    }
}

/// A `HashMap` with [`FxHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
/// A `HashSet` with [`FxHasher`].
pub type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// Configuration of the kernel programmer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// The `rtm_protocol` / `FRA_PROTOCOL` that marks our routes and rules. Must be unused by
    /// other software on the node (2-4 kernel/boot/static, 12 BIRD, 17 kube-router, 186-192
    /// FRR are refused).
    pub route_protocol: u8,
    /// First per-address table id; ids are `table_base + (hash(addr) mod 65536)`.
    pub table_base: u32,
    /// Priority of the `from ADDR lookup T` rules (must be below main's 32766).
    pub rule_priority: u32,
    /// Whether to keep per-address tables and rules at all.
    pub per_address_tables: bool,
    /// Interfaces whose addresses get a table; `None`: every interface except loopback and pod
    /// interfaces.
    pub interfaces: Option<Vec<String>>,
    /// Name prefixes of pod interfaces (veth ends, CNI bridges): their addresses get no table,
    /// and our-protocol device routes onto them are the CNI plugin's (kept and copied).
    pub pod_interface_prefixes: Vec<String>,
    /// Per-interface default gateways for the per-address tables, overriding what the main
    /// table says (interface name, gateway).
    pub gateways: Vec<(String, IpAddr)>,
    /// Full re-read and converge at least this often, even without notifications.
    pub resync: Duration,
}

/// `0x00C9_0000`: 201 in the upper half, far above ids people write by hand.
pub const DEFAULT_TABLE_BASE: u32 = 201 << 16;
/// Below main (32766) and default (32767), above anything an administrator usually adds.
pub const DEFAULT_RULE_PRIORITY: u32 = 32000;

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            route_protocol: crate::DEFAULT_ROUTE_PROTOCOL,
            table_base: DEFAULT_TABLE_BASE,
            rule_priority: DEFAULT_RULE_PRIORITY,
            per_address_tables: true,
            interfaces: None,
            pod_interface_prefixes: ["veth", "cni", "cali", "lxc", "flannel", "kube-bridge"]
                .map(String::from)
                .to_vec(),
            gateways: Vec::new(),
            resync: Duration::from_secs(60),
        }
    }
}

/// Protocol numbers that belong to someone else (linux/rtnetlink.h, iproute2 rt_protos).
const TAKEN_PROTOCOLS: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (11, "zebra"),
    (12, "bird"),
    (16, "dhcp"),
    (17, "kube-router"),
    (186, "FRR bgp"),
    (187, "FRR isis"),
    (188, "FRR ospf"),
    (189, "FRR rip"),
    (192, "FRR eigrp"),
];

impl KernelConfig {
    /// Checks the values; the error names the field and the bad value.
    pub fn validate(&self) -> Result<(), KernelError> {
        let bad = |field: &'static str, value: String, why: &str| {
            Err(KernelError::Config {
                field,
                value,
                why: why.to_string(),
            })
        };
        if let Some((_, who)) = TAKEN_PROTOCOLS
            .iter()
            .find(|(p, _)| *p == self.route_protocol)
        {
            return bad(
                "route_protocol",
                self.route_protocol.to_string(),
                &format!("used by {who}"),
            );
        }
        if self.table_base < 256 || self.table_base.checked_add(TABLE_SPAN).is_none() {
            return bad(
                "table_base",
                self.table_base.to_string(),
                "must be at least 256 and leave 65536 ids above it",
            );
        }
        if self.rule_priority == 0 || self.rule_priority >= 32766 {
            return bad(
                "rule_priority",
                self.rule_priority.to_string(),
                "must be between 1 and 32765 (before the main table's rule)",
            );
        }
        if self.resync.is_zero() {
            return bad("resync", format!("{:?}", self.resync), "must be positive");
        }
        Ok(())
    }
}

/// Errors of the kernel programmer.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A configuration value is unusable.
    #[error("kernel config: {field} = {value}: {why}")]
    Config {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// A netlink socket operation failed.
    #[error("netlink {what}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a dump.
    #[error("netlink dump of {what} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    DumpFailed {
        /// What was dumped.
        what: &'static str,
        /// The errno.
        errno: i32,
    },
    /// The kernel refused a single request (a route lookup: no route, no such device).
    #[error("{what}: {}", std::io::Error::from_raw_os_error(*errno))]
    Refused {
        /// What was asked.
        what: String,
        /// The errno.
        errno: i32,
    },
    /// Every attempt at a dump was interrupted by concurrent changes.
    #[error("netlink dump of {what} interrupted {tries} times in a row")]
    DumpInterrupted {
        /// What was dumped.
        what: &'static str,
        /// Attempts made.
        tries: u32,
    },
    /// The programmer task is gone (shut down, or it failed; see the log).
    #[error("kernel programmer has stopped")]
    Stopped,
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn fx_hash_spreads_consecutive_route_keys_over_buckets() {
        let b = BuildHasherDefault::<FxHasher>::default();
        let n = 1 << 16;
        let buckets: HashSet<u64> = (0..n as u32)
            .map(|i| {
                let prefix = ipnet::IpNet::V4(
                    ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(0x6440_0000 + i), 32)
                        .expect("/32"),
                );
                b.hash_one(RouteKey {
                    table: MAIN_TABLE,
                    prefix,
                }) & (n - 1)
            })
            .collect();
        // A uniform hash fills about 63% of n buckets with n keys.
        assert!(buckets.len() > n as usize / 2, "{} buckets", buckets.len());
    }
}
