//! Speaker snapshots -> GoBGP API messages.
//!
//! Pure functions: a snapshot and the clock in, `apipb` messages out. They fill every field the
//! gobgp 3.10 client dereferences (it crashes on a missing `timers.state` or `state.queues`) and
//! pack capabilities, NLRI and path attributes as the `Any` messages its decoder knows.

use std::net::IpAddr;
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use prost::Message;
use prost_types::{Any, Timestamp};
use underroute_bgp::fsm::State;
use underroute_bgp::rib::{Path as RibPath, PathSource};
use underroute_bgp::speaker::{PeerSnapshot, SpeakerConfig};
use underroute_bgp::wire::{AsSegment, Capability, Origin, PathAttrs};
use underroute_bgp::Family;

use super::apipb;

/// The `type_url` prefix every packed message carries.
const TYPE_URL_PREFIX: &str = "type.googleapis.com/apipb.";

/// Pack a message as `google.protobuf.Any` under its `apipb` name.
pub fn pack<M: Message>(name: &str, msg: &M) -> Any {
    Any {
        type_url: format!("{TYPE_URL_PREFIX}{name}"),
        value: msg.encode_to_vec(),
    }
}

/// The API family of one of our families.
pub fn family(f: Family) -> apipb::Family {
    let (afi, safi) = f.afi_safi();
    apipb::Family {
        afi: i32::from(afi),
        safi: i32::from(safi),
    }
}

/// Our family for an API family, if we carry it.
pub fn family_from_api(f: &apipb::Family) -> Option<Family> {
    let afi = u16::try_from(f.afi).ok()?;
    let safi = u8::try_from(f.safi).ok()?;
    Family::from_afi_safi(afi, safi)
}

/// A wall-clock time as a protobuf timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The wall-clock moment of a monotonic instant, given "now" on both clocks.
pub fn wall_clock(at: Instant, now: Instant, now_wall: SystemTime) -> SystemTime {
    now_wall
        .checked_sub(now.saturating_duration_since(at))
        .unwrap_or(now_wall)
}

/// `GetBgp`: the global configuration.
pub fn global(config: &SpeakerConfig) -> apipb::Global {
    let port = config.listen.first().map(|a| a.port()).unwrap_or(179);
    apipb::Global {
        asn: config.asn.0,
        router_id: config.router_id.0.to_string(),
        listen_port: i32::from(port),
        listen_addresses: config.listen.iter().map(|a| a.ip().to_string()).collect(),
        families: Family::ALL
            .iter()
            .map(|f| {
                let (afi, safi) = f.afi_safi();
                // gobgp's RouteFamily number: AFI << 16 | SAFI.
                (u32::from(afi) << 16) | u32::from(safi)
            })
            .collect(),
        use_multiple_paths: false,
        route_selection_options: Some(Default::default()),
        default_route_distance: Some(Default::default()),
        confederation: Some(Default::default()),
        graceful_restart: Some(apipb::GracefulRestart {
            enabled: config.graceful_restart.is_some(),
            restart_time: config
                .graceful_restart
                .as_ref()
                .map_or(0, |g| u32::from(g.restart_time)),
            local_restarting: config
                .graceful_restart
                .as_ref()
                .is_some_and(|g| g.restarting),
            ..Default::default()
        }),
        bind_to_device: String::new(),
    }
}

fn session_state(s: State) -> apipb::peer_state::SessionState {
    use apipb::peer_state::SessionState as S;
    match s {
        State::Idle => S::Idle,
        State::Connect => S::Connect,
        State::Active => S::Active,
        State::OpenSent => S::Opensent,
        State::OpenConfirm => S::Openconfirm,
        State::Established => S::Established,
    }
}

// The counters' type lives in a private module of the speaker crate; a macro reads the fields
// without naming it.
macro_rules! message_counts {
    ($m:expr) => {{
        let m = &$m;
        apipb::Message {
            notification: m.notification,
            update: m.update,
            open: m.open,
            keepalive: m.keepalive,
            refresh: m.route_refresh,
            discarded: 0,
            total: m.total(),
            withdraw_update: m.withdraw_update,
            withdraw_prefix: m.withdraw_prefix,
        }
    }};
}

/// One capability as the `Any` message gobgp's `UnmarshalCapabilities` decodes.
pub fn capability(c: &Capability) -> Any {
    let fam = |afi: u16, safi: u8| apipb::Family {
        afi: i32::from(afi),
        safi: i32::from(safi),
    };
    match c {
        Capability::Multiprotocol { afi, safi } => pack(
            "MultiProtocolCapability",
            &apipb::MultiProtocolCapability {
                family: Some(fam(*afi, *safi)),
            },
        ),
        Capability::RouteRefresh => {
            pack("RouteRefreshCapability", &apipb::RouteRefreshCapability {})
        }
        Capability::FourOctetAs(asn) => pack(
            "FourOctetASNCapability",
            &apipb::FourOctetAsnCapability { asn: asn.0 },
        ),
        Capability::GracefulRestart(g) => {
            let mut flags = 0;
            if g.restart_state {
                flags |= 0x08;
            }
            if g.notification {
                flags |= 0x04;
            }
            pack(
                "GracefulRestartCapability",
                &apipb::GracefulRestartCapability {
                    flags,
                    time: u32::from(g.restart_time),
                    tuples: g
                        .families
                        .iter()
                        .map(|t| apipb::GracefulRestartCapabilityTuple {
                            family: Some(fam(t.afi, t.safi)),
                            flags: if t.forwarding { 0x80 } else { 0 },
                        })
                        .collect(),
                },
            )
        }
        Capability::ExtendedNextHop(entries) => pack(
            "ExtendedNexthopCapability",
            &apipb::ExtendedNexthopCapability {
                tuples: entries
                    .iter()
                    .map(|e| apipb::ExtendedNexthopCapabilityTuple {
                        nlri_family: Some(apipb::Family {
                            afi: i32::from(e.nlri_afi),
                            safi: i32::from(e.nlri_safi),
                        }),
                        nexthop_family: Some(fam(e.next_hop_afi, 1)),
                    })
                    .collect(),
            },
        ),
        Capability::AddPath(entries) => pack(
            "AddPathCapability",
            &apipb::AddPathCapability {
                tuples: entries
                    .iter()
                    .map(|e| apipb::AddPathCapabilityTuple {
                        family: Some(fam(e.afi, e.safi)),
                        mode: i32::from(e.send_receive),
                    })
                    .collect(),
            },
        ),
        Capability::Fqdn { hostname, domain } => pack(
            "FqdnCapability",
            &apipb::FqdnCapability {
                host_name: hostname.clone(),
                domain_name: domain.clone(),
            },
        ),
        // Enhanced route refresh has no value; gobgp has a message of its own for it.
        Capability::Unknown { code: 70, data } if data.is_empty() => pack(
            "EnhancedRouteRefreshCapability",
            &apipb::EnhancedRouteRefreshCapability {},
        ),
        Capability::Unknown { code, data } => pack(
            "UnknownCapability",
            &apipb::UnknownCapability {
                code: u32::from(*code),
                value: data.to_vec(),
            },
        ),
    }
}

/// Per-family prefix counts of one peer, for `afi_safis[].state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FamilyCounts {
    /// Prefixes in the Adj-RIB-In.
    pub received: u64,
    /// Of those, accepted by import.
    pub accepted: u64,
    /// Prefixes in the Adj-RIB-Out.
    pub advertised: u64,
}

/// `ListPeer`: one peer. `counts` gives the per-family prefix counts (families not listed
/// count zero); `now` is the wall clock, for nothing but the timestamps' consistency.
pub fn peer(
    s: &PeerSnapshot,
    local_asn: u32,
    counts: &[(Family, FamilyCounts)],
    cluster_id: Option<std::net::Ipv4Addr>,
) -> apipb::Peer {
    let cfg = &s.config;
    let peer_type = if cfg.asn.0 == local_asn {
        apipb::PeerType::Internal
    } else {
        apipb::PeerType::External
    } as i32;
    let address = cfg.address.to_string();
    let (local_cap, remote_cap, router_id, negotiated_hold, keepalive) = match &s.negotiated {
        Some(n) => (
            n.local_open.capabilities.iter().map(capability).collect(),
            n.peer_open.capabilities.iter().map(capability).collect(),
            n.peer_router_id.0.to_string(),
            u64::from(n.hold_time),
            u64::from(n.keepalive),
        ),
        None => (Vec::new(), Vec::new(), String::new(), 0, 0),
    };
    // We keep when the current session came up and when the last one went down. gobgp shows
    // the down time only for a peer that has been up before (uptime set), so a peer that was
    // up once gets its down moment as the uptime stand-in.
    let uptime = s.established_since.or(if s.established_count > 0 {
        s.down_since
    } else {
        None
    });
    let established = s.state == State::Established;
    let flops = s.established_count.saturating_sub(u64::from(established));
    let families = if cfg.families.is_empty() {
        Family::ALL.to_vec()
    } else {
        cfg.families.clone()
    };
    let afi_safis = families
        .iter()
        .map(|f| {
            let c = counts
                .iter()
                .find(|(cf, _)| cf == f)
                .map(|(_, c)| *c)
                .unwrap_or_default();
            apipb::AfiSafi {
                mp_graceful_restart: Some(apipb::MpGracefulRestart {
                    config: Some(apipb::MpGracefulRestartConfig { enabled: false }),
                    state: Some(Default::default()),
                }),
                config: Some(apipb::AfiSafiConfig {
                    family: Some(family(*f)),
                    enabled: true,
                }),
                state: Some(apipb::AfiSafiState {
                    family: Some(family(*f)),
                    enabled: true,
                    received: c.received,
                    accepted: c.accepted,
                    advertised: c.advertised,
                }),
                prefix_limits: None,
                add_paths: Some(apipb::AddPaths {
                    config: Some(Default::default()),
                    state: Some(Default::default()),
                }),
            }
        })
        .collect();
    apipb::Peer {
        conf: Some(apipb::PeerConf {
            local_asn,
            neighbor_address: address.clone(),
            peer_asn: cfg.asn.0,
            r#type: peer_type,
            admin_down: s.admin_down,
            ..Default::default()
        }),
        ebgp_multihop: Some(apipb::EbgpMultihop {
            enabled: cfg.multihop_ttl.is_some(),
            multihop_ttl: cfg.multihop_ttl.map_or(0, u32::from),
        }),
        route_reflector: Some(apipb::RouteReflector {
            route_reflector_client: cfg.route_reflector_client,
            route_reflector_cluster_id: if cfg.route_reflector_client {
                cluster_id.map(|c| c.to_string()).unwrap_or_default()
            } else {
                String::new()
            },
        }),
        state: Some(apipb::PeerState {
            local_asn,
            messages: Some(apipb::Messages {
                received: Some(message_counts!(s.received_messages)),
                sent: Some(message_counts!(s.sent_messages)),
            }),
            neighbor_address: address.clone(),
            peer_asn: cfg.asn.0,
            r#type: peer_type,
            queues: Some(apipb::Queues::default()),
            session_state: session_state(s.state) as i32,
            admin_state: if s.admin_down {
                apipb::peer_state::AdminState::Down
            } else {
                apipb::peer_state::AdminState::Up
            } as i32,
            flops: u32::try_from(flops).unwrap_or(u32::MAX),
            remote_cap,
            local_cap,
            router_id,
            ..Default::default()
        }),
        timers: Some(apipb::Timers {
            config: Some(apipb::TimersConfig {
                connect_retry: cfg.connect_retry.as_secs(),
                hold_time: u64::from(cfg.hold_time),
                keepalive_interval: u64::from(cfg.hold_time / 3),
                ..Default::default()
            }),
            state: Some(apipb::TimersState {
                connect_retry: cfg.connect_retry.as_secs(),
                hold_time: u64::from(cfg.hold_time),
                keepalive_interval: keepalive,
                negotiated_hold_time: negotiated_hold,
                uptime: uptime.map(timestamp),
                downtime: s.down_since.map(timestamp),
                ..Default::default()
            }),
        }),
        transport: Some(apipb::Transport {
            local_address: s.local.map(|a| a.ip().to_string()).unwrap_or_default(),
            local_port: s.local.map_or(0, |a| u32::from(a.port())),
            passive_mode: cfg.passive,
            remote_address: address,
            remote_port: u32::from(cfg.port),
            ..Default::default()
        }),
        route_server: Some(apipb::RouteServer::default()),
        graceful_restart: Some(apipb::GracefulRestart {
            enabled: s
                .negotiated
                .as_ref()
                .is_some_and(|n| n.peer_graceful_restart.is_some()),
            peer_restart_time: s
                .negotiated
                .as_ref()
                .and_then(|n| n.peer_graceful_restart.as_ref())
                .map_or(0, |g| u32::from(g.restart_time)),
            ..Default::default()
        }),
        afi_safis,
        ttl_security: Some(apipb::TtlSecurity::default()),
    }
}

/// The NLRI of a prefix as gobgp's `IPAddressPrefix`.
pub fn nlri(prefix: &IpNet) -> Any {
    pack(
        "IPAddressPrefix",
        &apipb::IpAddressPrefix {
            prefix_len: u32::from(prefix.prefix_len()),
            prefix: prefix.network().to_string(),
        },
    )
}

/// Path attributes as gobgp's attribute messages, in type-code order. IPv4 routes with an IPv4
/// next hop carry NEXT_HOP; everything else carries the next hop in MP_REACH_NLRI, as on the
/// wire.
pub fn path_attributes(prefix: &IpNet, a: &PathAttrs) -> Vec<Any> {
    let mut out = Vec::new();
    out.push(pack(
        "OriginAttribute",
        &apipb::OriginAttribute {
            origin: match a.origin {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            },
        },
    ));
    out.push(pack(
        "AsPathAttribute",
        &apipb::AsPathAttribute {
            segments: a
                .as_path
                .segments
                .iter()
                .map(|s| {
                    use apipb::as_segment::Type as T;
                    let (t, asns) = match s {
                        AsSegment::Set(v) => (T::AsSet, v),
                        AsSegment::Sequence(v) => (T::AsSequence, v),
                        AsSegment::ConfedSequence(v) => (T::AsConfedSequence, v),
                        AsSegment::ConfedSet(v) => (T::AsConfedSet, v),
                    };
                    apipb::AsSegment {
                        r#type: t as i32,
                        numbers: asns.iter().map(|a| a.0).collect(),
                    }
                })
                .collect(),
        },
    ));
    let v4_next_hop = match (prefix, a.next_hop) {
        (IpNet::V4(_), Some(IpAddr::V4(nh))) => Some(nh),
        // A local route before next-hop-self: gobgpd shows 0.0.0.0 for its own routes too.
        (IpNet::V4(_), None) => Some(std::net::Ipv4Addr::UNSPECIFIED),
        _ => None,
    };
    if let Some(nh) = v4_next_hop {
        out.push(pack(
            "NextHopAttribute",
            &apipb::NextHopAttribute {
                next_hop: nh.to_string(),
            },
        ));
    }
    if let Some(med) = a.med {
        out.push(pack(
            "MultiExitDiscAttribute",
            &apipb::MultiExitDiscAttribute { med },
        ));
    }
    if let Some(local_pref) = a.local_pref {
        out.push(pack(
            "LocalPrefAttribute",
            &apipb::LocalPrefAttribute { local_pref },
        ));
    }
    if a.atomic_aggregate {
        out.push(pack(
            "AtomicAggregateAttribute",
            &apipb::AtomicAggregateAttribute {},
        ));
    }
    if let Some(ag) = &a.aggregator {
        out.push(pack(
            "AggregatorAttribute",
            &apipb::AggregatorAttribute {
                asn: ag.asn.0,
                address: ag.address.to_string(),
            },
        ));
    }
    if !a.communities.is_empty() {
        out.push(pack(
            "CommunitiesAttribute",
            &apipb::CommunitiesAttribute {
                communities: a.communities.clone(),
            },
        ));
    }
    if let Some(id) = a.originator_id {
        out.push(pack(
            "OriginatorIdAttribute",
            &apipb::OriginatorIdAttribute { id: id.to_string() },
        ));
    }
    if !a.cluster_list.is_empty() {
        out.push(pack(
            "ClusterListAttribute",
            &apipb::ClusterListAttribute {
                ids: a.cluster_list.iter().map(|i| i.to_string()).collect(),
            },
        ));
    }
    if v4_next_hop.is_none() {
        let mut next_hops = Vec::new();
        match a.next_hop {
            Some(nh) => next_hops.push(nh.to_string()),
            // A local route before next-hop-self: gobgp shows the unspecified address.
            None => next_hops.push(match prefix {
                IpNet::V4(_) => "0.0.0.0".to_string(),
                IpNet::V6(_) => "::".to_string(),
            }),
        }
        if let Some(ll) = a.link_local_next_hop {
            next_hops.push(ll.to_string());
        }
        out.push(pack(
            "MpReachNLRIAttribute",
            &apipb::MpReachNlriAttribute {
                family: Some(family(Family::of(prefix))),
                next_hops,
                nlris: vec![nlri(prefix)],
            },
        ));
    }
    if !a.large_communities.is_empty() {
        out.push(pack(
            "LargeCommunitiesAttribute",
            &apipb::LargeCommunitiesAttribute {
                communities: a
                    .large_communities
                    .iter()
                    .map(|c| apipb::LargeCommunity {
                        global_admin: c.global,
                        local_data1: c.local1,
                        local_data2: c.local2,
                    })
                    .collect(),
            },
        ));
    }
    for u in &a.unknown {
        out.push(pack(
            "UnknownAttribute",
            &apipb::UnknownAttribute {
                flags: u32::from(u.flags),
                r#type: u32::from(u.type_code),
                value: u.data.to_vec(),
            },
        ));
    }
    out
}

/// Where a path came from, for the API's source fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathOrigin {
    /// The peer it was learned from (`None`: originated here, or our own advertisement).
    pub neighbor: Option<IpAddr>,
    /// That peer's BGP identifier.
    pub source_id: Option<std::net::Ipv4Addr>,
    /// That peer's AS.
    pub source_asn: u32,
    /// Learned over eBGP.
    pub external: bool,
}

impl PathOrigin {
    /// The origin of a RIB path.
    pub fn of(p: &RibPath) -> PathOrigin {
        match p.source {
            PathSource::Local => PathOrigin::default(),
            PathSource::Peer(addr) => PathOrigin {
                neighbor: Some(addr),
                source_id: Some(p.peer_router_id.0),
                source_asn: p.peer_asn.0,
                external: !p.ibgp,
            },
        }
    }
}

/// One API path.
pub fn path(
    prefix: &IpNet,
    attrs: &PathAttrs,
    origin: PathOrigin,
    age: SystemTime,
    best: bool,
    stale: bool,
    filtered: bool,
) -> apipb::Path {
    apipb::Path {
        nlri: Some(nlri(prefix)),
        pattrs: path_attributes(prefix, attrs),
        age: Some(timestamp(age)),
        best,
        family: Some(family(Family::of(prefix))),
        source_asn: origin.source_asn,
        source_id: origin.source_id.map(|i| i.to_string()).unwrap_or_default(),
        filtered,
        stale,
        is_from_external: origin.external,
        neighbor_ip: origin.neighbor.map(|i| i.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

/// A prefix filter of `ListPath` (`gobgp ... rib PREFIX [longer-prefixes|shorter-prefixes]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixFilter {
    /// The exact prefix.
    Exact(IpNet),
    /// The most specific prefix that covers this address (a bare address was given).
    Lookup(IpAddr),
    /// The prefix and every more specific one.
    Longer(IpNet),
    /// The prefix and every less specific one.
    Shorter(IpNet),
}

/// Errors of a `ListPath` request's prefix filter.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// Neither a prefix nor an address.
    #[error("invalid prefix: {0}")]
    BadPrefix(String),
}

impl PrefixFilter {
    /// Parse one `TableLookupPrefix`.
    pub fn from_api(p: &apipb::TableLookupPrefix) -> Result<PrefixFilter, FilterError> {
        use apipb::table_lookup_prefix::Type;
        let kind = Type::try_from(p.r#type).unwrap_or(Type::Exact);
        let net: IpNet = match p.prefix.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => match p.prefix.parse::<IpAddr>() {
                Ok(a) if kind == Type::Exact => return Ok(PrefixFilter::Lookup(a)),
                Ok(a) => IpNet::from(a),
                Err(_) => return Err(FilterError::BadPrefix(p.prefix.clone())),
            },
        };
        Ok(match kind {
            Type::Exact => PrefixFilter::Exact(net),
            Type::Longer => PrefixFilter::Longer(net),
            Type::Shorter => PrefixFilter::Shorter(net),
        })
    }

    /// Keep only the prefixes this filter selects, from a list of the table's prefixes.
    pub fn select(&self, prefixes: &[IpNet]) -> Vec<IpNet> {
        match self {
            PrefixFilter::Exact(n) => prefixes.iter().filter(|p| *p == n).copied().collect(),
            PrefixFilter::Lookup(a) => prefixes
                .iter()
                .filter(|p| p.contains(a))
                .max_by_key(|p| p.prefix_len())
                .into_iter()
                .copied()
                .collect(),
            PrefixFilter::Longer(n) => prefixes
                .iter()
                .filter(|p| n.contains(*p))
                .copied()
                .collect(),
            PrefixFilter::Shorter(n) => {
                prefixes.iter().filter(|p| p.contains(n)).copied().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().expect("test prefix")).collect()
    }

    #[test]
    fn longer_prefixes_include_the_prefix_itself_and_more_specifics() {
        let t = nets(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "11.0.0.0/8"]);
        let f = PrefixFilter::Longer("10.1.0.0/16".parse().expect("p"));
        assert_eq!(f.select(&t), nets(&["10.1.0.0/16", "10.1.2.0/24"]));
    }

    #[test]
    fn shorter_prefixes_include_the_prefix_itself_and_covering_ones() {
        let t = nets(&["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "11.0.0.0/8"]);
        let f = PrefixFilter::Shorter("10.1.0.0/16".parse().expect("p"));
        assert_eq!(f.select(&t), nets(&["10.0.0.0/8", "10.1.0.0/16"]));
    }

    #[test]
    fn a_bare_address_finds_the_most_specific_covering_prefix() {
        let t = nets(&["10.0.0.0/8", "10.1.0.0/16", "11.0.0.0/8"]);
        let f = PrefixFilter::from_api(&apipb::TableLookupPrefix {
            prefix: "10.1.2.3".into(),
            r#type: 0,
        })
        .expect("filter");
        assert_eq!(f.select(&t), nets(&["10.1.0.0/16"]));
    }

    #[test]
    fn ipv6_routes_carry_the_next_hop_in_mp_reach() {
        let p: IpNet = "2001:db8::/64".parse().expect("p");
        let a = PathAttrs {
            next_hop: Some("2001:db8::1".parse().expect("nh")),
            ..Default::default()
        };
        let urls: Vec<String> = path_attributes(&p, &a)
            .into_iter()
            .map(|a| a.type_url)
            .collect();
        assert_eq!(
            urls,
            [
                "type.googleapis.com/apipb.OriginAttribute",
                "type.googleapis.com/apipb.AsPathAttribute",
                "type.googleapis.com/apipb.MpReachNLRIAttribute"
            ]
        );
    }
}
