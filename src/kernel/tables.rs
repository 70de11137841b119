//! Per-address tables: which host addresses get one, the table id each gets, and what goes in it.
//!
//! A host with addresses in several subnets answers a connection with the source address the
//! connection was made to, but the main table picks the outgoing interface by destination only;
//! the reply can leave through another interface and a stateful firewall on the path drops it.
//! The fix (docs/kernel.md) is one table per address, looked up `from ADDR`, holding the
//! address's subnet, a default route via its own interface's gateway, and the pod-network routes
//! so pods on this host still get their replies locally.
//!
//! Everything here is pure: it computes, the programmer applies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::routes::{Hop, ObservedRoute, RouteKey, RouteSpec, MAIN_TABLE};
use super::rules::RuleSpec;
use super::KernelConfig;

/// How many table ids the per-address scheme may use above `table_base`.
pub const TABLE_SPAN: u32 = 1 << 16;

/// A network interface as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Administratively up and with carrier (`IFF_UP` and `IFF_LOWER_UP`).
    pub up: bool,
}

/// An address on an interface as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    /// Interface index.
    pub ifindex: u32,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of its connected subnet.
    pub prefix_len: u8,
    /// Scope global (`RT_SCOPE_UNIVERSE`).
    pub global: bool,
}

/// One host address with its own table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressTable {
    /// The host address (rule `from ADDR`).
    pub addr: IpAddr,
    /// The interface it is on.
    pub interface: String,
    /// The table id.
    pub table: u32,
    /// The gateway of its default route, if one was found.
    pub gateway: Option<IpAddr>,
}

/// Whether `name` is a pod interface (starts with one of the configured prefixes).
pub fn is_pod_interface(cfg: &KernelConfig, name: &str) -> bool {
    cfg.pod_interface_prefixes
        .iter()
        .any(|p| !p.is_empty() && name.starts_with(p.as_str()))
}

/// The host addresses that get a table: global scope, on a named interface (or, by default,
/// on any interface except loopback and pod interfaces).
pub fn select_addresses<'a>(
    cfg: &KernelConfig,
    links: &'a [Link],
    addrs: &'a [HostAddr],
) -> Vec<(&'a HostAddr, &'a Link)> {
    let mut out: Vec<(&HostAddr, &Link)> = addrs
        .iter()
        .filter(|a| a.global)
        .filter_map(|a| Some((a, links.iter().find(|l| l.index == a.ifindex)?)))
        .filter(|(_, l)| match &cfg.interfaces {
            Some(names) => names.iter().any(|n| n == &l.name),
            None => l.name != "lo" && !is_pod_interface(cfg, &l.name),
        })
        .collect();
    out.sort_by_key(|(a, _)| a.addr);
    out.dedup_by_key(|(a, _)| a.addr);
    out
}

/// FNV-1a over the address octets: stable across restarts, releases and architectures.
fn slot_hash(addr: &IpAddr) -> u32 {
    let octets: Vec<u8> = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut h: u32 = 0x811c_9dc5;
    for b in octets {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % TABLE_SPAN
}

/// Table id per address: `base + hash(addr) mod 65536`. The id of an address depends only on
/// the address, unless two addresses of the set collide; then the one that sorts later (by hash,
/// then address) takes the next free slot, which is still a pure function of the set.
pub fn table_ids(base: u32, addrs: &[IpAddr]) -> BTreeMap<IpAddr, u32> {
    let mut order: Vec<(u32, IpAddr)> = addrs.iter().map(|a| (slot_hash(a), *a)).collect();
    order.sort();
    order.dedup();
    let mut taken = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for (slot, addr) in order {
        let mut s = slot;
        while !taken.insert(s) {
            s = (s + 1) % TABLE_SPAN;
        }
        out.insert(addr, base + s);
    }
    out
}

/// Whether a table id belongs to the per-address range of this configuration.
pub fn in_range(cfg: &KernelConfig, table: u32) -> bool {
    table >= cfg.table_base && table - cfg.table_base < TABLE_SPAN
}

/// What the per-address scheme wants in the kernel.
#[derive(Debug, Default)]
pub struct AddressPlan {
    /// Routes in per-address tables.
    pub routes: Vec<(RouteKey, RouteSpec)>,
    /// One rule per table.
    pub rules: Vec<RuleSpec>,
    /// The tables, for the snapshot.
    pub tables: Vec<AddressTable>,
}

/// Builds the per-address tables. `pod_routes` are the resolved pod-network routes of the main
/// table (ours and the CNI plugin's); `main_routes` is the observed main table, where each
/// interface's default gateway is found unless the configuration names one.
pub fn plan_tables(
    cfg: &KernelConfig,
    links: &[Link],
    addrs: &[HostAddr],
    main_routes: &[&ObservedRoute],
    pod_routes: &[(IpNet, RouteSpec)],
) -> AddressPlan {
    let mut plan = AddressPlan::default();
    let selected = select_addresses(cfg, links, addrs);
    let ids = table_ids(
        cfg.table_base,
        &selected.iter().map(|(a, _)| a.addr).collect::<Vec<_>>(),
    );
    for (a, link) in selected {
        let Some(&table) = ids.get(&a.addr) else {
            continue;
        };
        let v4 = a.addr.is_ipv4();
        let Ok(subnet) = IpNet::new(a.addr, a.prefix_len) else {
            continue;
        };
        let subnet = subnet.trunc();
        plan.routes.push((
            RouteKey {
                table,
                prefix: subnet,
            },
            RouteSpec {
                hops: vec![Hop {
                    gateway: None,
                    ifindex: Some(a.ifindex),
                    onlink: false,
                }]
                .into(),
                prefsrc: Some(a.addr),
            },
        ));
        let mut gw_hops: Vec<Hop> = cfg
            .gateways
            .iter()
            .filter(|(ifname, gw)| ifname == &link.name && gw.is_ipv4() == v4)
            .map(|(_, gw)| Hop {
                gateway: Some(*gw),
                ifindex: Some(a.ifindex),
                onlink: false,
            })
            .collect();
        if gw_hops.is_empty() {
            gw_hops = main_routes
                .iter()
                .filter(|r| r.key.table == MAIN_TABLE && r.key.prefix.prefix_len() == 0)
                .filter(|r| r.key.prefix.addr().is_ipv4() == v4)
                .flat_map(|r| r.spec.hops.iter())
                .filter(|h| h.gateway.is_some() && h.ifindex == Some(a.ifindex))
                .copied()
                .collect();
            gw_hops.sort();
            gw_hops.dedup();
        }
        let gateway = gw_hops.first().and_then(|h| h.gateway);
        if !gw_hops.is_empty() {
            let default = IpNet::new(
                if v4 {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                },
                0,
            );
            if let Ok(prefix) = default {
                plan.routes.push((
                    RouteKey { table, prefix },
                    RouteSpec {
                        hops: gw_hops.into(),
                        prefsrc: None,
                    },
                ));
            }
        }
        for (prefix, spec) in pod_routes {
            if prefix.addr().is_ipv4() != v4 || *prefix == subnet || prefix.prefix_len() == 0 {
                continue;
            }
            plan.routes.push((
                RouteKey {
                    table,
                    prefix: *prefix,
                },
                spec.clone(),
            ));
        }
        plan.rules.push(RuleSpec {
            priority: cfg.rule_priority,
            from: a.addr,
            table,
        });
        plan.tables.push(AddressTable {
            addr: a.addr,
            interface: link.name.clone(),
            table,
            gateway,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KernelConfig {
        KernelConfig::default()
    }

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            up: true,
        }
    }

    fn addr(ifindex: u32, a: &str, len: u8) -> HostAddr {
        HostAddr {
            ifindex,
            addr: a.parse().unwrap(),
            prefix_len: len,
            global: true,
        }
    }

    #[test]
    fn table_id_of_an_address_does_not_depend_on_the_others() {
        let a: IpAddr = "192.168.1.1".parse().unwrap();
        let b: IpAddr = "10.0.0.1".parse().unwrap();
        let alone = table_ids(1000, &[a]);
        let both = table_ids(1000, &[b, a]);
        assert_eq!(alone[&a], both[&a]);
        assert!(both.values().all(|t| (1000..1000 + TABLE_SPAN).contains(t)));
        assert_ne!(both[&a], both[&b]);
    }

    #[test]
    fn colliding_addresses_get_distinct_tables() {
        // 70k addresses cannot fit 65536 slots without collisions.
        let addrs: Vec<IpAddr> = (0..1000u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let ids = table_ids(0, &addrs);
        let distinct: std::collections::BTreeSet<_> = ids.values().collect();
        assert_eq!(distinct.len(), addrs.len());
    }

    #[test]
    fn pod_and_loopback_interfaces_get_no_table_by_default() {
        let links = [link(1, "lo"), link(2, "eth0"), link(3, "veth12")];
        let addrs = [
            addr(1, "10.9.9.9", 32),
            addr(2, "192.168.1.1", 24),
            addr(3, "10.254.0.1", 32),
        ];
        let sel = select_addresses(&cfg(), &links, &addrs);
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[0].1.name, "eth0");
    }

    #[test]
    fn table_holds_subnet_default_via_own_interface_and_pod_routes() {
        let links = [link(2, "eth0"), link(3, "eth1")];
        let addrs = [addr(2, "192.168.1.1", 24), addr(3, "10.0.0.1", 24)];
        let main_default = ObservedRoute {
            key: RouteKey {
                table: MAIN_TABLE,
                prefix: "0.0.0.0/0".parse().unwrap(),
            },
            protocol: 3,
            spec: RouteSpec {
                hops: vec![Hop {
                    gateway: Some("192.168.1.254".parse().unwrap()),
                    ifindex: Some(2),
                    onlink: false,
                }]
                .into(),
                prefsrc: None,
            },
        };
        let pod = (
            "10.254.0.5/32".parse().unwrap(),
            RouteSpec {
                hops: vec![Hop {
                    gateway: None,
                    ifindex: Some(9),
                    onlink: false,
                }]
                .into(),
                prefsrc: None,
            },
        );
        let plan = plan_tables(&cfg(), &links, &addrs, &[&main_default], &[pod]);
        assert_eq!(plan.rules.len(), 2);
        let t_eth0 = plan.tables.iter().find(|t| t.interface == "eth0").unwrap();
        assert_eq!(t_eth0.gateway, "192.168.1.254".parse().ok());
        let in_eth0: Vec<String> = plan
            .routes
            .iter()
            .filter(|(k, _)| k.table == t_eth0.table)
            .map(|(k, _)| k.prefix.to_string())
            .collect();
        assert_eq!(
            in_eth0,
            ["192.168.1.0/24", "0.0.0.0/0", "10.254.0.5/32"].map(String::from)
        );
        // eth1 has no gateway in main: subnet and pod routes only.
        let t_eth1 = plan.tables.iter().find(|t| t.interface == "eth1").unwrap();
        assert_eq!(t_eth1.gateway, None);
        assert_eq!(
            plan.routes
                .iter()
                .filter(|(k, _)| k.table == t_eth1.table)
                .count(),
            2
        );
    }
}
