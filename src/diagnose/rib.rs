//! `underroute diagnose rib`: the speaker's best routes against the kernel's main and
//! per-address tables, one line per difference with its reason.
//!
//! Owns: the comparison ([`diff`], pure) and reading both sides (the API's `ListPath` on the
//! global table; a netlink dump of routes and rules).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::kernel::MAIN_TABLE;

/// One best path as the speaker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestRoute {
    /// The prefix.
    pub prefix: IpNet,
    /// BGP NEXT_HOP.
    pub next_hop: Option<IpAddr>,
    /// Originated by this node (never installed: the CNI plugin and pod interfaces carry it).
    pub local: bool,
    /// Refused by an import policy.
    pub filtered: bool,
    /// The speaker itself found the next hop unusable.
    pub nexthop_invalid: bool,
}

/// One unicast route in a kernel table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRoute {
    /// Table id.
    pub table: u32,
    /// Destination.
    pub prefix: IpNet,
    /// `rtm_protocol`.
    pub protocol: u8,
    /// Gateways (empty for a device route).
    pub gateways: Vec<IpAddr>,
}

/// Why a route differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Ours in the kernel, but every path a peer sent for it was refused by an import policy
    /// (or the best path itself is marked filtered).
    Filtered,
    /// Not installed: no connected route covers the next hop.
    NextHopUnreachable(IpAddr),
    /// Not installed, with no better explanation.
    Missing,
    /// Another protocol's route holds the prefix in that table.
    ForeignRoute(u8),
    /// Installed via other gateways than the speaker's next hop.
    WrongNextHop {
        /// What the kernel has.
        kernel: Vec<IpAddr>,
        /// What the speaker chose.
        speaker: IpAddr,
    },
    /// Ours in the kernel, but the speaker has no best path for it.
    Stale,
}

/// One difference between the speaker and a kernel table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Kernel table id.
    pub table: u32,
    /// The prefix.
    pub prefix: IpNet,
    /// Why.
    pub reason: Reason,
}

fn table_name(t: u32) -> String {
    if t == MAIN_TABLE {
        "main".into()
    } else {
        t.to_string()
    }
}

fn addrs(v: &[IpAddr]) -> String {
    v.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {} {}: ", table_name(self.table), self.prefix)?;
        match &self.reason {
            Reason::Filtered => write!(f, "filtered by import policy, yet ours is installed"),
            Reason::NextHopUnreachable(nh) => {
                write!(f, "missing: next hop {nh} unreachable (no connected route)")
            }
            Reason::Missing => write!(f, "missing"),
            Reason::ForeignRoute(p) => write!(f, "foreign route in the way (proto {p})"),
            Reason::WrongNextHop { kernel, speaker } => write!(
                f,
                "next hop differs: kernel via {}, speaker via {speaker}",
                addrs(kernel)
            ),
            Reason::Stale => write!(f, "stale: ours in the kernel, no best path in the speaker"),
        }
    }
}

/// Compares. `per_address` are the tables our rules point to, with the family of their `from`
/// address (true = IPv6): each holds a copy of every installed route of its family.
/// `filtered` are prefixes peers sent that import policies refused (from the Adj-RIB-In): a
/// route of ours for one of them is reported as filtered rather than stale.
/// Device routes (no gateway) and, in per-address tables, the default route are the
/// programmer's own table content, not the speaker's, and are never reported as stale.
pub fn diff(
    best: &[BestRoute],
    kernel: &[KernelRoute],
    protocol: u8,
    per_address: &[(u32, bool)],
    filtered: &[IpNet],
) -> Vec<Difference> {
    let mut by_key: BTreeMap<(u32, IpNet), Vec<&KernelRoute>> = BTreeMap::new();
    for r in kernel {
        by_key.entry((r.table, r.prefix)).or_default().push(r);
    }
    let connected: Vec<IpNet> = kernel
        .iter()
        .filter(|r| r.table == MAIN_TABLE && r.gateways.is_empty())
        .map(|r| r.prefix)
        .collect();
    let mut out = Vec::new();
    let mut wanted: BTreeMap<(u32, IpNet), ()> = BTreeMap::new();
    for b in best {
        let Some(nh) = b.next_hop else { continue };
        if b.local || nh.is_unspecified() {
            continue;
        }
        let v6 = matches!(b.prefix, IpNet::V6(_));
        let mut tables = vec![MAIN_TABLE];
        tables.extend(
            per_address
                .iter()
                .filter(|(_, f)| *f == v6)
                .map(|(t, _)| *t),
        );
        for table in tables {
            let key = (table, b.prefix);
            let found = by_key.get(&key).map(Vec::as_slice).unwrap_or(&[]);
            let ours = found.iter().find(|r| r.protocol == protocol);
            if b.filtered {
                if ours.is_some() {
                    out.push(Difference {
                        table,
                        prefix: b.prefix,
                        reason: Reason::Filtered,
                    });
                }
                wanted.insert(key, ());
                continue;
            }
            wanted.insert(key, ());
            let reason = match (ours, found.first()) {
                (Some(r), _) if r.gateways == [nh] => continue,
                (Some(r), _) => Reason::WrongNextHop {
                    kernel: r.gateways.clone(),
                    speaker: nh,
                },
                (None, Some(foreign)) => Reason::ForeignRoute(foreign.protocol),
                (None, None) if b.nexthop_invalid || !connected.iter().any(|c| c.contains(&nh)) => {
                    Reason::NextHopUnreachable(nh)
                }
                (None, None) => Reason::Missing,
            };
            out.push(Difference {
                table,
                prefix: b.prefix,
                reason,
            });
        }
    }
    let ours_tables: Vec<u32> = std::iter::once(MAIN_TABLE)
        .chain(per_address.iter().map(|(t, _)| *t))
        .collect();
    for r in kernel {
        if r.protocol != protocol || r.gateways.is_empty() || !ours_tables.contains(&r.table) {
            continue;
        }
        if r.table != MAIN_TABLE && r.prefix.prefix_len() == 0 {
            continue;
        }
        if !wanted.contains_key(&(r.table, r.prefix)) {
            out.push(Difference {
                table: r.table,
                prefix: r.prefix,
                reason: if filtered.contains(&r.prefix) {
                    Reason::Filtered
                } else {
                    Reason::Stale
                },
            });
        }
    }
    out.sort_by(|a, b| {
        (a.table != MAIN_TABLE, a.table, a.prefix).cmp(&(b.table != MAIN_TABLE, b.table, b.prefix))
    });
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn best(p: &str, nh: &str) -> BestRoute {
        BestRoute {
            prefix: p.parse().unwrap(),
            next_hop: Some(nh.parse().unwrap()),
            local: false,
            filtered: false,
            nexthop_invalid: false,
        }
    }

    fn kr(table: u32, p: &str, proto: u8, gws: &[&str]) -> KernelRoute {
        KernelRoute {
            table,
            prefix: p.parse().unwrap(),
            protocol: proto,
            gateways: gws.iter().map(|g| g.parse().unwrap()).collect(),
        }
    }

    fn connected() -> KernelRoute {
        kr(254, "10.0.0.0/24", 2, &[])
    }

    #[test]
    fn a_healthy_node_has_no_differences() {
        let b = vec![best("10.1.0.0/24", "10.0.0.1")];
        let k = vec![
            connected(),
            kr(254, "10.1.0.0/24", 201, &["10.0.0.1"]),
            kr(1000, "10.1.0.0/24", 201, &["10.0.0.1"]),
            kr(1000, "0.0.0.0/0", 201, &["10.0.0.1"]),
            kr(1000, "10.0.0.0/24", 201, &[]),
        ];
        assert!(diff(&b, &k, 201, &[(1000, false), (1001, true)], &[]).is_empty());
    }

    #[test]
    fn every_kind_of_difference_gets_its_reason() {
        let mut filtered = best("10.9.0.0/24", "10.0.0.1");
        filtered.filtered = true;
        let mut local = best("10.233.64.0/24", "0.0.0.0");
        local.local = true;
        let b = vec![
            best("10.1.0.0/24", "10.0.0.1"),
            best("10.2.0.0/24", "10.0.0.1"),
            best("10.3.0.0/24", "192.0.2.1"),
            best("10.4.0.0/24", "10.0.0.1"),
            filtered,
            local,
        ];
        let k = vec![
            connected(),
            kr(254, "10.1.0.0/24", 4, &["10.0.0.7"]),
            kr(254, "10.4.0.0/24", 201, &["10.0.0.9"]),
            kr(254, "10.8.0.0/24", 201, &["10.0.0.1"]),
            kr(254, "10.9.0.0/24", 201, &["10.0.0.1"]),
            kr(254, "10.10.0.0/24", 201, &["10.0.0.1"]),
        ];
        let d = diff(&b, &k, 201, &[], &["10.10.0.0/24".parse().unwrap()]);
        let lines: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "table main 10.1.0.0/24: foreign route in the way (proto 4)",
                "table main 10.2.0.0/24: missing",
                "table main 10.3.0.0/24: missing: next hop 192.0.2.1 unreachable (no connected route)",
                "table main 10.4.0.0/24: next hop differs: kernel via 10.0.0.9, speaker via 10.0.0.1",
                "table main 10.8.0.0/24: stale: ours in the kernel, no best path in the speaker",
                "table main 10.9.0.0/24: filtered by import policy, yet ours is installed",
                "table main 10.10.0.0/24: filtered by import policy, yet ours is installed",
            ]
        );
    }

    #[test]
    fn per_address_tables_must_hold_a_copy_of_their_family() {
        let b = vec![best("10.1.0.0/24", "10.0.0.1")];
        let k = vec![connected(), kr(254, "10.1.0.0/24", 201, &["10.0.0.1"])];
        let d = diff(&b, &k, 201, &[(1000, false), (1001, true)], &[]);
        assert_eq!(
            d,
            vec![Difference {
                table: 1000,
                prefix: "10.1.0.0/24".parse().unwrap(),
                reason: Reason::Missing
            }]
        );
    }
}
