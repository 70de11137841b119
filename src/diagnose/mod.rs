//! `underroute diagnose`: why the kernel forwards (or answers) the way it does.
//!
//! - [`route`]: `diagnose route SRC DST [--iif IF]`: the rule, table, route and next hop the
//!   kernel picks, and whether the reply leaves by another interface (the asymmetric path).
//! - [`rib`]: `diagnose rib`: the speaker's best routes against the kernel's main and
//!   per-address tables, one line per difference with its reason; exit 1 when they differ.
//!
//! Both only read: netlink dumps and lookups (`RTM_GETROUTE`, like `ip route get`) and the
//! agent's API. They never change a route or rule.

pub mod rib;
pub mod route;

use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::RouteNetlinkMessage as M;

use crate::api::apipb;
use crate::cli::client::{self, Target};
use crate::cli::format::Attr;
use crate::kernel::batch::Netlink;
use crate::kernel::{routes, KernelError};
use rib::{BestRoute, KernelRoute};

/// One policy rule, as far as diagnose needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `pref`.
    pub priority: u32,
    /// `from` prefix (`None` = all).
    pub from: Option<ipnet::IpNet>,
    /// `iif` name.
    pub iif: Option<String>,
    /// `lookup` table (`None` for non-lookup actions).
    pub table: Option<u32>,
    /// `FRA_PROTOCOL`.
    pub protocol: u8,
    /// IPv6 rule.
    pub v6: bool,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: from ", self.priority)?;
        match &self.from {
            Some(p) => write!(f, "{p}")?,
            None => write!(f, "all")?,
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        match self.table {
            Some(254) => write!(f, " lookup main")?,
            Some(255) => write!(f, " lookup local")?,
            Some(253) => write!(f, " lookup default")?,
            Some(t) => write!(f, " lookup {t}")?,
            None => write!(f, " (no lookup)")?,
        }
        write!(f, " proto {}", self.protocol)
    }
}

/// Every unicast route of every table except `local`.
pub fn kernel_routes() -> Result<Vec<KernelRoute>, KernelError> {
    let mut nl = Netlink::open()?;
    let mut out = Vec::new();
    for m in nl.dump("routes", M::GetRoute(RouteMessage::default()))? {
        if let M::NewRoute(r) = m {
            if let Some(o) = routes::decode(&r) {
                out.push(KernelRoute {
                    table: o.key.table,
                    prefix: o.key.prefix,
                    protocol: o.protocol,
                    gateways: o.spec.hops.iter().filter_map(|h| h.gateway).collect(),
                });
            }
        }
    }
    Ok(out)
}

/// Every policy rule, ordered by priority.
pub fn kernel_rules() -> Result<Vec<Rule>, KernelError> {
    let mut nl = Netlink::open()?;
    let mut out = Vec::new();
    for m in nl.dump("rules", M::GetRule(RuleMessage::default()))? {
        let M::NewRule(r) = m else { continue };
        let v6 = r.header.family == netlink_packet_route::AddressFamily::Inet6;
        let mut rule = Rule {
            priority: 0,
            from: None,
            iif: None,
            table: (r.header.action == RuleAction::ToTable && r.header.table != 0)
                .then_some(u32::from(r.header.table)),
            protocol: 0,
            v6,
        };
        for a in &r.attributes {
            match a {
                RuleAttribute::Priority(p) => rule.priority = *p,
                RuleAttribute::Source(s) => {
                    rule.from = ipnet::IpNet::new(*s, r.header.src_len).ok();
                }
                RuleAttribute::Iifname(n) => rule.iif = Some(n.clone()),
                RuleAttribute::Table(t) if r.header.action == RuleAction::ToTable => {
                    rule.table = Some(*t)
                }
                RuleAttribute::Protocol(p) => rule.protocol = u8::from(*p),
                _ => {}
            }
        }
        out.push(rule);
    }
    out.sort_by_key(|r| (r.v6, r.priority));
    Ok(out)
}

/// The speaker's best paths (IPv4 and IPv6 unicast) over its API.
pub async fn best_routes(target: &Target) -> anyhow::Result<Vec<BestRoute>> {
    let mut c = client::connect(target, Duration::from_secs(5)).await?;
    let mut out = Vec::new();
    for afi in [1, 2] {
        let mut stream = c
            .list_path(apipb::ListPathRequest {
                table_type: apipb::TableType::Global as i32,
                family: Some(apipb::Family { afi, safi: 1 }),
                ..Default::default()
            })
            .await?
            .into_inner();
        while let Some(r) = stream.message().await? {
            let Some(d) = r.destination else { continue };
            let Ok(prefix) = d.prefix.parse::<ipnet::IpNet>() else {
                continue;
            };
            for p in d.paths.iter().filter(|p| p.best) {
                let next_hop = p
                    .pattrs
                    .iter()
                    .filter_map(Attr::from_any)
                    .find_map(|a| match a {
                        Attr::NextHop(n) => n.parse::<IpAddr>().ok(),
                        Attr::MpReach(_, nh, _) => nh.first().and_then(|n| n.parse().ok()),
                        _ => None,
                    });
                out.push(BestRoute {
                    prefix,
                    next_hop,
                    local: p.neighbor_ip.is_empty(),
                    filtered: p.filtered,
                    nexthop_invalid: p.is_nexthop_invalid,
                });
            }
        }
    }
    Ok(out)
}

/// Prefixes some peer sent that its import policy refused (every path of the prefix in that
/// peer's Adj-RIB-In is marked filtered).
pub async fn filtered_prefixes(target: &Target) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let mut c = client::connect(target, Duration::from_secs(5)).await?;
    let mut peers = Vec::new();
    let mut stream = c
        .list_peer(apipb::ListPeerRequest::default())
        .await?
        .into_inner();
    while let Some(r) = stream.message().await? {
        if let Some(state) = r.peer.and_then(|p| p.state) {
            peers.push(state.neighbor_address);
        }
    }
    let mut out = Vec::new();
    for peer in peers {
        for afi in [1, 2] {
            let mut stream = c
                .list_path(apipb::ListPathRequest {
                    table_type: apipb::TableType::AdjIn as i32,
                    name: peer.clone(),
                    family: Some(apipb::Family { afi, safi: 1 }),
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(r) = stream.message().await? {
                let Some(d) = r.destination else { continue };
                if !d.paths.is_empty() && d.paths.iter().all(|p| p.filtered) {
                    if let Ok(p) = d.prefix.parse() {
                        out.push(p);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// `diagnose rib`: the report's lines (empty when the kernel agrees with the speaker).
pub async fn rib_report(target: &Target, protocol: u8) -> anyhow::Result<Vec<String>> {
    let best = best_routes(target).await?;
    let filtered = filtered_prefixes(target).await?;
    let (kernel, rules) = tokio::task::spawn_blocking(|| -> Result<_, KernelError> {
        Ok((kernel_routes()?, kernel_rules()?))
    })
    .await??;
    let per_address: Vec<(u32, bool)> = rules
        .iter()
        .filter(|r| r.protocol == protocol)
        .filter_map(|r| Some((r.table?, r.v6)))
        .collect();
    Ok(rib::diff(&best, &kernel, protocol, &per_address, &filtered)
        .iter()
        .map(|d| d.to_string())
        .collect())
}
