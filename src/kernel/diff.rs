//! The pure core: from desired routes and an observation of the kernel, the complete target
//! state ([`target`]) and the changes that reach it ([`plan`]).
//!
//! Owns no I/O. It must never plan a change to a route or rule whose protocol is not ours: the
//! only things it deletes are observed objects carrying our protocol number.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::{FastMap, FastSet};

use ipnet::IpNet;

use super::routes::{DesiredRoutes, Hop, ObservedRoute, RouteKey, RouteSpec, MAIN_TABLE};
use super::rules::{ObservedRule, RuleSpec};
use super::tables::{self, AddressTable, HostAddr, Link};
use super::KernelConfig;

/// What the programmer read from the kernel (or, between full reads, what it believes is there).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Interfaces.
    pub links: Vec<Link>,
    /// Addresses.
    pub addrs: Vec<HostAddr>,
    /// Unicast routes of every protocol outside the local table.
    pub routes: Vec<ObservedRoute>,
    /// Rules of the plain `from HOST lookup T` form, every protocol.
    pub rules: Vec<ObservedRule>,
}

/// The whole state the programmer wants: main-table pod routes, per-address tables, rules.
#[derive(Debug, Default)]
pub struct Target {
    /// Every route we want, by key.
    pub routes: FastMap<RouteKey, RouteSpec>,
    /// Every rule we want.
    pub rules: BTreeSet<RuleSpec>,
    /// The per-address tables.
    pub tables: Vec<AddressTable>,
    /// Desired prefixes that cannot be installed now, with why (unknown or down interface).
    pub unresolved: Vec<(IpNet, String)>,
}

/// Changes, in the order they are applied: rules leave before their tables empty, and arrive
/// after their tables are filled; device routes come before gateway routes that resolve via them.
/// Route specs are borrowed from the [`Target`]: copying 300k of them cost an allocation each.
#[derive(Debug, Default)]
pub struct Plan<'a> {
    /// Rules of ours that are no longer wanted.
    pub rule_dels: Vec<RuleSpec>,
    /// Routes to create (`NLM_F_CREATE | NLM_F_EXCL`).
    pub route_adds: Vec<(RouteKey, &'a RouteSpec)>,
    /// Routes of ours whose next hops change (`NLM_F_REPLACE`).
    pub route_replaces: Vec<(RouteKey, &'a RouteSpec)>,
    /// Rules to create.
    pub rule_adds: Vec<RuleSpec>,
    /// Routes of ours that are no longer wanted.
    pub route_dels: Vec<RouteKey>,
    /// Wanted keys occupied by another protocol's route: left alone, reported.
    pub conflicts: Vec<RouteKey>,
}

impl Plan<'_> {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.rule_dels.is_empty()
            && self.route_adds.is_empty()
            && self.route_replaces.is_empty()
            && self.rule_adds.is_empty()
            && self.route_dels.is_empty()
    }
}

/// Resolves a caller's next hops against the interfaces: names become indexes, hops on a down
/// interface are left out (the kernel refuses them and would flush them anyway).
/// `out` is scratch space; `last` the hop list of the previous route: pod routes mostly share
/// their next hops, so equal lists share one allocation (`Arc<[Hop]>`).
fn resolve(
    prefix: &IpNet,
    hops: &[super::routes::NextHop],
    links: &HashMap<&str, &Link>,
    out: &mut Vec<Hop>,
    last: &mut Option<Arc<[Hop]>>,
) -> Result<RouteSpec, String> {
    out.clear();
    let mut why = None;
    for h in hops {
        if h.gateway
            .is_some_and(|g| g.is_ipv4() != prefix.addr().is_ipv4())
        {
            why = Some("gateway of the other address family".to_string());
            continue;
        }
        let ifindex = match &h.dev {
            None => None,
            Some(name) => match links.get(name.as_str()) {
                None => {
                    why = Some(format!("no interface {name}"));
                    continue;
                }
                Some(l) if !l.up => {
                    why = Some(format!("interface {name} is down"));
                    continue;
                }
                Some(l) => Some(l.index),
            },
        };
        if h.gateway.is_none() && ifindex.is_none() {
            why = Some("next hop with neither gateway nor device".to_string());
            continue;
        }
        out.push(Hop {
            gateway: h.gateway,
            ifindex,
            onlink: h.onlink && ifindex.is_some(),
        });
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(why.unwrap_or_else(|| "no next hops".to_string()));
    }
    let hops = match last {
        Some(l) if **l == **out => l.clone(),
        _ => {
            let h: Arc<[Hop]> = Arc::from(out.as_slice());
            *last = Some(h.clone());
            h
        }
    };
    Ok(RouteSpec {
        hops,
        prefsrc: None,
    })
}

/// A route of our protocol in the main table that the CNI plugin made: a device route onto a
/// pod interface. We keep it (the plugin deletes it) and copy it into the per-address tables.
fn is_cni_route(cfg: &KernelConfig, r: &ObservedRoute, by_index: &HashMap<u32, &Link>) -> bool {
    r.key.table == MAIN_TABLE
        && r.protocol == cfg.route_protocol
        && r.spec.hops.iter().all(|h| {
            h.gateway.is_none()
                && h.ifindex
                    .and_then(|i| by_index.get(&i))
                    .is_some_and(|l| tables::is_pod_interface(cfg, &l.name))
        })
}

/// The complete target. `desired == None` means no desired state has been given yet (just
/// started): then our routes in the main table are adopted as they are, so a restart never
/// removes forwarding state before the new desired state is known.
pub fn target(cfg: &KernelConfig, desired: Option<&DesiredRoutes>, obs: &Observed) -> Target {
    let by_name: HashMap<&str, &Link> = obs.links.iter().map(|l| (l.name.as_str(), l)).collect();
    let by_index: HashMap<u32, &Link> = obs.links.iter().map(|l| (l.index, l)).collect();
    let mut t = Target::default();
    let mut pod: Vec<(IpNet, RouteSpec)> = Vec::new();
    match desired {
        Some(d) => {
            pod.reserve(d.routes.len());
            let mut scratch = Vec::new();
            let mut last = None;
            for (prefix, hops) in &d.routes {
                if hops.is_empty() {
                    continue;
                }
                match resolve(prefix, hops, &by_name, &mut scratch, &mut last) {
                    Ok(spec) => pod.push((*prefix, spec)),
                    Err(why) => t.unresolved.push((*prefix, why)),
                }
            }
            // The CNI plugin's routes stay and are copied, unless the desired state has its own
            // route for the prefix. They are few: the set of wanted prefixes is only built when
            // there are some.
            let cni: Vec<&ObservedRoute> = obs
                .routes
                .iter()
                .filter(|r| is_cni_route(cfg, r, &by_index))
                .collect();
            if !cni.is_empty() {
                let wanted: HashSet<IpNet> = pod.iter().map(|(p, _)| *p).collect();
                for r in cni {
                    if !wanted.contains(&r.key.prefix) {
                        pod.push((r.key.prefix, r.spec.clone()));
                    }
                }
            }
        }
        None => {
            for r in &obs.routes {
                if r.key.table == MAIN_TABLE && r.protocol == cfg.route_protocol {
                    pod.push((r.key.prefix, r.spec.clone()));
                }
            }
        }
    }
    if cfg.per_address_tables {
        let main: Vec<&ObservedRoute> = obs
            .routes
            .iter()
            .filter(|r| r.key.table == MAIN_TABLE && r.key.prefix.prefix_len() == 0)
            .collect();
        let plan = tables::plan_tables(cfg, &obs.links, &obs.addrs, &main, &pod);
        t.routes.reserve(plan.routes.len() + pod.len());
        t.routes.extend(plan.routes);
        t.rules.extend(plan.rules);
        t.tables = plan.tables;
    }
    t.routes.extend(pod.into_iter().map(|(prefix, spec)| {
        (
            RouteKey {
                table: MAIN_TABLE,
                prefix,
            },
            spec,
        )
    }));
    t
}

/// The changes from `obs` to `target`.
pub fn plan<'a>(cfg: &KernelConfig, target: &'a Target, obs: &Observed) -> Plan<'a> {
    let mut ours: FastMap<RouteKey, &ObservedRoute> = FastMap::default();
    ours.reserve(obs.routes.len());
    let mut foreign: FastSet<RouteKey> = FastSet::default();
    for r in &obs.routes {
        if r.protocol == cfg.route_protocol {
            ours.insert(r.key, r);
        } else if target.routes.contains_key(&r.key) {
            foreign.insert(r.key);
        }
    }
    let mut p = Plan::default();
    // Device routes go first (gateways in the same batch resolve through them). They are few
    // (subnet routes of the tables, the CNI plugin's), so they are collected apart and put in
    // front instead of sorting 300k planned routes; the rest keep the map's order, which is
    // deterministic (Fx hash, no random seed).
    let mut dev_adds = Vec::new();
    let mut dev_replaces = Vec::new();
    p.route_adds
        .reserve(target.routes.len().saturating_sub(ours.len()));
    for (key, spec) in &target.routes {
        match ours.get(key) {
            Some(seen) if spec.accepts(&seen.spec) => {}
            Some(_) if spec.is_device_route() => dev_replaces.push((*key, spec)),
            Some(_) => p.route_replaces.push((*key, spec)),
            None if foreign.contains(key) => p.conflicts.push(*key),
            None if spec.is_device_route() => dev_adds.push((*key, spec)),
            None => p.route_adds.push((*key, spec)),
        }
    }
    dev_adds.sort_unstable_by_key(|a| a.0);
    dev_replaces.sort_unstable_by_key(|a| a.0);
    p.route_adds.splice(0..0, dev_adds);
    p.route_replaces.splice(0..0, dev_replaces);
    for key in ours.keys() {
        if !target.routes.contains_key(key) {
            p.route_dels.push(*key);
        }
    }
    let seen_rules: BTreeSet<RuleSpec> = obs
        .rules
        .iter()
        .filter(|r| r.protocol == cfg.route_protocol)
        .map(|r| r.spec)
        .collect();
    p.rule_adds = target.rules.difference(&seen_rules).copied().collect();
    p.rule_dels = seen_rules.difference(&target.rules).copied().collect();
    // Route deletes stay in the map's order, which follows the order they were added in:
    // deleting 100k routes in sorted order after adding them in hash order took twice as long
    // in the kernel (measured, docs/kernel.md).
    p.conflicts.sort_unstable();
    p
}

#[cfg(test)]
mod tests {
    use super::super::routes::NextHop;
    use super::*;

    const OURS: u8 = 201;

    fn cfg() -> KernelConfig {
        KernelConfig {
            per_address_tables: false,
            ..KernelConfig::default()
        }
    }

    fn obs_route(table: u32, prefix: &str, protocol: u8, gw: &str) -> ObservedRoute {
        ObservedRoute {
            key: RouteKey {
                table,
                prefix: prefix.parse().unwrap(),
            },
            protocol,
            spec: RouteSpec {
                hops: vec![Hop {
                    gateway: Some(gw.parse().unwrap()),
                    ifindex: Some(2),
                    onlink: false,
                }]
                .into(),
                prefsrc: None,
            },
        }
    }

    fn desired(list: &[(&str, &[&str])]) -> DesiredRoutes {
        let mut d = DesiredRoutes::new();
        for (p, gws) in list {
            d.insert(
                p.parse().unwrap(),
                gws.iter()
                    .map(|g| NextHop::via(g.parse().unwrap()))
                    .collect(),
            );
        }
        d
    }

    fn links() -> Vec<Link> {
        vec![
            Link {
                index: 2,
                name: "eth0".into(),
                up: true,
            },
            Link {
                index: 7,
                name: "veth7".into(),
                up: true,
            },
        ]
    }

    #[test]
    fn new_route_is_added_changed_one_replaced_stale_one_deleted() {
        let obs = Observed {
            links: links(),
            routes: vec![
                obs_route(MAIN_TABLE, "10.1.0.0/24", OURS, "10.0.0.1"),
                obs_route(MAIN_TABLE, "10.2.0.0/24", OURS, "10.0.0.1"),
            ],
            ..Observed::default()
        };
        let d = desired(&[
            ("10.1.0.0/24", &["10.0.0.2"]),
            ("10.3.0.0/24", &["10.0.0.1", "10.0.0.2"]),
        ]);
        let t = target(&cfg(), Some(&d), &obs);
        let p = plan(&cfg(), &t, &obs);
        assert_eq!(p.route_adds.len(), 1);
        assert_eq!(p.route_adds[0].1.hops.len(), 2, "ECMP route");
        assert_eq!(p.route_replaces.len(), 1);
        assert_eq!(
            p.route_dels,
            vec![RouteKey {
                table: MAIN_TABLE,
                prefix: "10.2.0.0/24".parse().unwrap()
            }]
        );
    }

    #[test]
    fn routes_of_other_protocols_are_never_planned_for_deletion() {
        let obs = Observed {
            links: links(),
            routes: vec![
                obs_route(MAIN_TABLE, "10.9.0.0/24", 12, "10.0.0.1"),
                obs_route(MAIN_TABLE, "10.8.0.0/24", 186, "10.0.0.1"),
            ],
            ..Observed::default()
        };
        let t = target(&cfg(), Some(&DesiredRoutes::new()), &obs);
        assert!(plan(&cfg(), &t, &obs).is_empty());
    }

    #[test]
    fn wanted_prefix_held_by_another_protocol_is_a_conflict_not_a_replace() {
        let obs = Observed {
            links: links(),
            routes: vec![obs_route(MAIN_TABLE, "10.9.0.0/24", 12, "10.0.0.1")],
            ..Observed::default()
        };
        let d = desired(&[("10.9.0.0/24", &["10.0.0.2"])]);
        let t = target(&cfg(), Some(&d), &obs);
        let p = plan(&cfg(), &t, &obs);
        assert_eq!(p.conflicts.len(), 1);
        assert!(p.route_adds.is_empty() && p.route_replaces.is_empty());
    }

    #[test]
    fn before_any_desired_state_our_routes_are_adopted_not_swept() {
        let obs = Observed {
            links: links(),
            routes: vec![obs_route(MAIN_TABLE, "10.1.0.0/24", OURS, "10.0.0.1")],
            ..Observed::default()
        };
        let t = target(&cfg(), None, &obs);
        let p = plan(&cfg(), &t, &obs);
        assert!(p.is_empty());
        // Once a desired state exists, what it lacks is swept.
        let d = DesiredRoutes::new();
        let t = target(&cfg(), Some(&d), &obs);
        let p = plan(&cfg(), &t, &obs);
        assert_eq!(p.route_dels.len(), 1);
    }

    #[test]
    fn cni_device_routes_on_pod_interfaces_are_kept() {
        let cni = ObservedRoute {
            key: RouteKey {
                table: MAIN_TABLE,
                prefix: "10.254.0.5/32".parse().unwrap(),
            },
            protocol: OURS,
            spec: RouteSpec {
                hops: vec![Hop {
                    gateway: None,
                    ifindex: Some(7),
                    onlink: false,
                }]
                .into(),
                prefsrc: None,
            },
        };
        let obs = Observed {
            links: links(),
            routes: vec![cni],
            ..Observed::default()
        };
        let t = target(&cfg(), Some(&DesiredRoutes::new()), &obs);
        let p = plan(&cfg(), &t, &obs);
        assert!(p.is_empty());
    }

    #[test]
    fn next_hop_on_unknown_or_down_interface_is_reported_not_installed() {
        let mut l = links();
        l[0].up = false;
        let obs = Observed {
            links: l,
            ..Observed::default()
        };
        let mut d = DesiredRoutes::new();
        d.insert("10.5.0.0/24".parse().unwrap(), vec![NextHop::dev("eth0")]);
        d.insert("10.6.0.0/24".parse().unwrap(), vec![NextHop::dev("nope0")]);
        let t = target(&cfg(), Some(&d), &obs);
        assert_eq!(t.unresolved.len(), 2);
        assert!(plan(&cfg(), &t, &obs).is_empty());
    }

    #[test]
    fn rules_follow_addresses() {
        let cfg = KernelConfig::default();
        let obs = Observed {
            links: links(),
            addrs: vec![HostAddr {
                ifindex: 2,
                addr: "192.168.1.1".parse().unwrap(),
                prefix_len: 24,
                global: true,
            }],
            rules: vec![ObservedRule {
                spec: RuleSpec {
                    priority: cfg.rule_priority,
                    from: "192.168.9.9".parse().unwrap(),
                    table: cfg.table_base + 1,
                },
                protocol: OURS,
            }],
            ..Observed::default()
        };
        let t = target(&cfg, Some(&DesiredRoutes::new()), &obs);
        let p = plan(&cfg, &t, &obs);
        assert_eq!(p.rule_adds.len(), 1);
        assert_eq!(
            p.rule_adds[0].from,
            "192.168.1.1".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(p.rule_dels.len(), 1);
        assert_eq!(p.route_adds.len(), 1, "the subnet route of the new table");
    }
}
