//! Routes as the programmer sees them: what callers ask for ([`NextHop`], [`DesiredRoutes`]),
//! the resolved form that is compared with the kernel ([`Route`], [`Hop`]), and the codec
//! between that form and rtnetlink `RTM_*ROUTE` messages.
//!
//! Owns: the mapping of our routes to and from netlink. It must never build a message that
//! could touch a route of another protocol: every message carries our protocol number, and the
//! kernel matches it on delete.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteNextHopFlags, RouteType,
};
#[cfg(test)]
use netlink_packet_route::route::{RouteHeader, RouteNextHop, RouteProtocol, RouteScope};
use netlink_packet_route::AddressFamily;

/// The kernel's main routing table (`RT_TABLE_MAIN`).
pub const MAIN_TABLE: u32 = 254;
/// The kernel's local table: never ours, never read.
pub(crate) const LOCAL_TABLE: u32 = 255;

/// One next hop of a desired route, as callers state it.
///
/// `gateway` alone lets the kernel resolve the device; `dev` alone is a directly connected
/// route (`dev X scope link`); both pin the device; `onlink` tells the kernel not to check that
/// the gateway is on a connected subnet of `dev` (needs `dev`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// The gateway address, `None` for a device route.
    pub gateway: Option<IpAddr>,
    /// The outgoing interface name, `None` to let the kernel pick it from the gateway.
    pub dev: Option<String>,
    /// `onlink`: the gateway is reachable on `dev` even without a connected subnet.
    pub onlink: bool,
}

impl NextHop {
    /// `via GW`: the kernel resolves the interface.
    pub fn via(gateway: IpAddr) -> NextHop {
        NextHop {
            gateway: Some(gateway),
            dev: None,
            onlink: false,
        }
    }

    /// `via GW dev DEV`.
    pub fn via_dev(gateway: IpAddr, dev: &str) -> NextHop {
        NextHop {
            gateway: Some(gateway),
            dev: Some(dev.to_string()),
            onlink: false,
        }
    }

    /// `via GW dev DEV onlink`.
    pub fn onlink(gateway: IpAddr, dev: &str) -> NextHop {
        NextHop {
            gateway: Some(gateway),
            dev: Some(dev.to_string()),
            onlink: true,
        }
    }

    /// `dev DEV` (scope link).
    pub fn dev(dev: &str) -> NextHop {
        NextHop {
            gateway: None,
            dev: Some(dev.to_string()),
            onlink: false,
        }
    }
}

/// The pod-network routes wanted in the main table: prefix -> next hops. Several next hops make
/// an ECMP route; an empty list is the same as no entry. The programmer copies these into every
/// per-address table too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredRoutes {
    /// prefix -> equal-cost next hops.
    pub routes: BTreeMap<IpNet, Vec<NextHop>>,
}

impl DesiredRoutes {
    /// An empty set.
    pub fn new() -> DesiredRoutes {
        DesiredRoutes::default()
    }

    /// Adds or replaces one route (the prefix is normalised to its network address).
    pub fn insert(&mut self, prefix: IpNet, hops: Vec<NextHop>) {
        self.routes.insert(prefix.trunc(), hops);
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// One change for [`crate::kernel::Handle::update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// Install or replace the route for a prefix.
    Set(IpNet, Vec<NextHop>),
    /// Withdraw the route for a prefix.
    Remove(IpNet),
}

/// A next hop with the device resolved to an interface index: the form compared with the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hop {
    /// Gateway, `None` for a device route.
    pub gateway: Option<IpAddr>,
    /// Interface index; `None` only in desired hops that let the kernel choose.
    pub ifindex: Option<u32>,
    /// The `onlink` flag.
    pub onlink: bool,
}

impl Hop {
    /// Whether an observed hop is what this desired hop asks for. A desired hop without an
    /// interface accepts whatever interface the kernel resolved.
    pub fn accepts(&self, observed: &Hop) -> bool {
        self.gateway == observed.gateway
            && self.onlink == observed.onlink
            && (self.ifindex.is_none() || self.ifindex == observed.ifindex)
    }
}

/// Where a route lives: one prefix in one table (we keep at most one route per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey {
    /// Kernel table id.
    pub table: u32,
    /// Destination prefix (network address).
    pub prefix: IpNet,
}

/// A resolved route: next hops (sorted) and an optional preferred source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteSpec {
    /// Equal-cost next hops, sorted; never empty.
    pub hops: std::sync::Arc<[Hop]>,
    /// `src ADDR` (used for the connected route of a per-address table).
    pub prefsrc: Option<IpAddr>,
}

impl RouteSpec {
    /// Whether every desired hop is matched by a distinct observed hop (and nothing is extra).
    pub fn accepts(&self, observed: &RouteSpec) -> bool {
        if self.hops.len() != observed.hops.len() || self.prefsrc != observed.prefsrc {
            return false;
        }
        // The common case, without the bookkeeping allocation of the general one.
        if let ([want], [seen]) = (&*self.hops, &*observed.hops) {
            return want.accepts(seen);
        }
        let mut used = vec![false; observed.hops.len()];
        self.hops.iter().all(|want| {
            let found = observed
                .hops
                .iter()
                .enumerate()
                .find(|(i, o)| !used[*i] && want.accepts(o));
            match found {
                Some((i, _)) => {
                    used[i] = true;
                    true
                }
                None => false,
            }
        })
    }

    /// Device-only routes are installed first so gateways in the same batch resolve.
    pub fn is_device_route(&self) -> bool {
        self.hops.iter().all(|h| h.gateway.is_none())
    }
}

/// A unicast route read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedRoute {
    /// Table and prefix.
    pub key: RouteKey,
    /// `rtm_protocol`.
    pub protocol: u8,
    /// Hops and source.
    pub spec: RouteSpec,
}

#[cfg(test)]
fn family_of(prefix: &IpNet) -> AddressFamily {
    match prefix {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    }
}

#[cfg(test)]
fn header(key: &RouteKey, protocol: u8) -> RouteHeader {
    RouteHeader {
        address_family: family_of(&key.prefix),
        destination_prefix_length: key.prefix.prefix_len(),
        // Tables above 255 only fit in RTA_TABLE; the header then says RT_TABLE_COMPAT (252)
        // as iproute2 does. We always send RTA_TABLE.
        table: if key.table < 256 {
            key.table as u8
        } else {
            252
        },
        protocol: RouteProtocol::from(protocol),
        kind: RouteType::Unicast,
        ..RouteHeader::default()
    }
}

#[cfg(test)]
fn dst_attr(key: &RouteKey) -> Option<RouteAttribute> {
    // A default route has no RTA_DST.
    (key.prefix.prefix_len() > 0).then(|| RouteAttribute::Destination(key.prefix.addr().into()))
}

/// `RTM_NEWROUTE` body for one of our routes, as a message value: the reference that
/// `write_new` is tested against.
#[cfg(test)]
pub(crate) fn encode_new(key: &RouteKey, spec: &RouteSpec, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = header(key, protocol);
    m.header.scope = if spec.is_device_route() {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    m.attributes.push(RouteAttribute::Table(key.table));
    if let Some(d) = dst_attr(key) {
        m.attributes.push(d);
    }
    if let Some(src) = spec.prefsrc {
        m.attributes.push(RouteAttribute::PrefSource(src.into()));
    }
    match &*spec.hops {
        [one] => {
            if let Some(gw) = one.gateway {
                m.attributes.push(RouteAttribute::Gateway(gw.into()));
            }
            if let Some(ix) = one.ifindex {
                m.attributes.push(RouteAttribute::Oif(ix));
            }
            if one.onlink {
                m.header.flags |= RouteFlags::Onlink;
            }
        }
        many => {
            let hops = many
                .iter()
                .map(|h| {
                    let mut nh = RouteNextHop::default();
                    nh.interface_index = h.ifindex.unwrap_or(0);
                    if h.onlink {
                        nh.flags |= RouteNextHopFlags::Onlink;
                    }
                    if let Some(gw) = h.gateway {
                        nh.attributes.push(RouteAttribute::Gateway(gw.into()));
                    }
                    nh
                })
                .collect();
            m.attributes.push(RouteAttribute::MultiPath(hops));
        }
    }
    m
}

/// `RTM_DELROUTE` body: table, prefix and our protocol (the kernel only deletes a route whose
/// protocol matches, so this can never remove someone else's route). Test reference of
/// `write_del`.
#[cfg(test)]
pub(crate) fn encode_del(key: &RouteKey, protocol: u8) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header = header(key, protocol);
    m.header.scope = RouteScope::NoWhere;
    m.attributes.push(RouteAttribute::Table(key.table));
    if let Some(d) = dst_attr(key) {
        m.attributes.push(d);
    }
    m
}

/// `RTM_NEWROUTE`.
pub(crate) const RTM_NEWROUTE: u16 = 24;
/// `RTM_DELROUTE`.
pub(crate) const RTM_DELROUTE: u16 = 25;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTNH_F_ONLINK: u8 = 4;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;

fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    // Every payload we write is a multiple of 4 bytes long, so no padding is needed.
    buf.extend_from_slice(&(4 + payload.len() as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
}

fn put_addr(buf: &mut Vec<u8>, kind: u16, a: IpAddr) {
    match a {
        IpAddr::V4(v4) => put_attr(buf, kind, &v4.octets()),
        IpAddr::V6(v6) => put_attr(buf, kind, &v6.octets()),
    }
}

fn put_header(buf: &mut Vec<u8>, key: &RouteKey, protocol: u8, scope: u8, flags: u32) {
    let family = match key.prefix {
        IpNet::V4(_) => libc::AF_INET as u8,
        IpNet::V6(_) => libc::AF_INET6 as u8,
    };
    // Same layout as `header()`: tables above 255 say RT_TABLE_COMPAT and go in RTA_TABLE.
    let table = if key.table < 256 {
        key.table as u8
    } else {
        252
    };
    buf.extend_from_slice(&[
        family,
        key.prefix.prefix_len(),
        0,
        0,
        table,
        protocol,
        scope,
        RTN_UNICAST,
    ]);
    buf.extend_from_slice(&flags.to_ne_bytes());
    put_attr(buf, RTA_TABLE, &key.table.to_ne_bytes());
    if key.prefix.prefix_len() > 0 {
        put_addr(buf, RTA_DST, key.prefix.addr());
    }
}

/// Appends the `RTM_NEWROUTE` body of `encode_new` straight to a send buffer: at 100k routes
/// building a `RouteMessage` (attribute vector, sizing pass, serialisation) per route cost more
/// than the kernel's own work. Byte-for-byte the same as `encode_new` (tested).
pub(crate) fn write_new(buf: &mut Vec<u8>, key: &RouteKey, spec: &RouteSpec, protocol: u8) {
    let scope = if spec.is_device_route() {
        RT_SCOPE_LINK
    } else {
        RT_SCOPE_UNIVERSE
    };
    let onlink = matches!(&*spec.hops, [one] if one.onlink);
    let flags = if onlink { u32::from(RTNH_F_ONLINK) } else { 0 };
    put_header(buf, key, protocol, scope, flags);
    if let Some(src) = spec.prefsrc {
        put_addr(buf, RTA_PREFSRC, src);
    }
    match &*spec.hops {
        [one] => {
            if let Some(gw) = one.gateway {
                put_addr(buf, RTA_GATEWAY, gw);
            }
            if let Some(ix) = one.ifindex {
                put_attr(buf, RTA_OIF, &ix.to_ne_bytes());
            }
        }
        many => {
            let at = buf.len();
            put_attr(buf, RTA_MULTIPATH, &[]);
            for h in many {
                let nh = buf.len();
                // struct rtnexthop: len, flags, hops, ifindex; its attributes follow.
                buf.extend_from_slice(&[0, 0]);
                buf.push(if h.onlink { RTNH_F_ONLINK } else { 0 });
                buf.push(0);
                buf.extend_from_slice(&h.ifindex.unwrap_or(0).to_ne_bytes());
                if let Some(gw) = h.gateway {
                    put_addr(buf, RTA_GATEWAY, gw);
                }
                let len = (buf.len() - nh) as u16;
                buf[nh..nh + 2].copy_from_slice(&len.to_ne_bytes());
            }
            let len = (buf.len() - at) as u16;
            buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
    }
}

/// Appends the `RTM_DELROUTE` body of `encode_del` to a send buffer (table, prefix, our
/// protocol: the kernel only deletes a route whose protocol matches).
pub(crate) fn write_del(buf: &mut Vec<u8>, key: &RouteKey, protocol: u8) {
    put_header(buf, key, protocol, RT_SCOPE_NOWHERE, 0);
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Reads a dumped or notified route. `None` for what we never manage: non-unicast types, the
/// local table, cached clones, source-specific routes, and anything malformed.
pub(crate) fn decode(m: &RouteMessage) -> Option<ObservedRoute> {
    let h = &m.header;
    if h.kind != RouteType::Unicast || h.source_prefix_length != 0 || h.tos != 0 {
        return None;
    }
    if h.flags.contains(RouteFlags::Cloned) {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut prefsrc = None;
    let mut multipath = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = addr_of(d),
            RouteAttribute::Gateway(g) => gateway = addr_of(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::PrefSource(s) => prefsrc = addr_of(s),
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    if table == LOCAL_TABLE {
        return None;
    }
    let len = h.destination_prefix_length;
    let dst = match (dst, h.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let prefix = IpNet::new(dst, len).ok()?.trunc();
    let mut hops: Vec<Hop> = match multipath {
        Some(list) => list
            .iter()
            .map(|nh| Hop {
                gateway: nh.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => addr_of(g),
                    _ => None,
                }),
                ifindex: (nh.interface_index != 0).then_some(nh.interface_index),
                onlink: nh.flags.contains(RouteNextHopFlags::Onlink),
            })
            .collect(),
        None => vec![Hop {
            gateway,
            ifindex: oif,
            onlink: h.flags.contains(RouteFlags::Onlink),
        }],
    };
    hops.sort();
    Some(ObservedRoute {
        key: RouteKey { table, prefix },
        protocol: h.protocol.into(),
        spec: RouteSpec {
            hops: hops.into(),
            prefsrc,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(gw: &str, ix: Option<u32>) -> Hop {
        Hop {
            gateway: Some(gw.parse().unwrap()),
            ifindex: ix,
            onlink: false,
        }
    }

    #[test]
    fn desired_hop_without_device_accepts_any_resolved_device() {
        assert!(hop("10.0.0.1", None).accepts(&hop("10.0.0.1", Some(3))));
        assert!(!hop("10.0.0.1", Some(2)).accepts(&hop("10.0.0.1", Some(3))));
        assert!(!hop("10.0.0.1", None).accepts(&hop("10.0.0.2", Some(3))));
    }

    #[test]
    fn ecmp_sets_compare_as_multisets() {
        let want = RouteSpec {
            hops: vec![hop("10.0.0.1", None), hop("10.0.0.2", None)].into(),
            prefsrc: None,
        };
        let seen = RouteSpec {
            hops: vec![hop("10.0.0.2", Some(4)), hop("10.0.0.1", Some(4))].into(),
            prefsrc: None,
        };
        assert!(want.accepts(&seen));
        let fewer = RouteSpec {
            hops: vec![hop("10.0.0.1", Some(4))].into(),
            prefsrc: None,
        };
        assert!(!want.accepts(&fewer));
    }

    #[test]
    fn encode_then_decode_round_trips_a_multipath_route() {
        let key = RouteKey {
            table: 300_000,
            prefix: "10.1.0.0/16".parse().unwrap(),
        };
        let spec = RouteSpec {
            hops: vec![hop("10.0.0.1", Some(2)), hop("10.0.0.2", Some(3))].into(),
            prefsrc: None,
        };
        let m = encode_new(&key, &spec, 201);
        let back = decode(&m).expect("decodes");
        assert_eq!(back.key, key);
        assert_eq!(back.protocol, 201);
        assert!(spec.accepts(&back.spec));
    }

    fn emitted(m: &RouteMessage) -> Vec<u8> {
        use netlink_packet_core::Emitable;
        let mut v = vec![0u8; m.buffer_len()];
        m.emit(&mut v);
        v
    }

    #[test]
    fn direct_encoding_matches_the_message_structs() {
        let specs = [
            RouteSpec {
                hops: vec![hop("10.0.0.1", None)].into(),
                prefsrc: None,
            },
            RouteSpec {
                hops: vec![Hop {
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    ifindex: Some(3),
                    onlink: true,
                }]
                .into(),
                prefsrc: None,
            },
            RouteSpec {
                hops: vec![Hop {
                    gateway: None,
                    ifindex: Some(3),
                    onlink: false,
                }]
                .into(),
                prefsrc: Some("192.168.1.1".parse().unwrap()),
            },
            RouteSpec {
                hops: vec![
                    hop("10.0.0.1", Some(2)),
                    Hop {
                        gateway: Some("10.0.0.2".parse().unwrap()),
                        ifindex: Some(3),
                        onlink: true,
                    },
                ]
                .into(),
                prefsrc: None,
            },
        ];
        let keys = [
            RouteKey {
                table: MAIN_TABLE,
                prefix: "100.64.0.1/32".parse().unwrap(),
            },
            RouteKey {
                table: 300_000,
                prefix: "0.0.0.0/0".parse().unwrap(),
            },
        ];
        for key in &keys {
            for spec in &specs {
                let mut buf = Vec::new();
                write_new(&mut buf, key, spec, 201);
                assert_eq!(
                    buf,
                    emitted(&encode_new(key, spec, 201)),
                    "{key:?} {spec:?}"
                );
            }
            let mut buf = Vec::new();
            write_del(&mut buf, key, 201);
            assert_eq!(buf, emitted(&encode_del(key, 201)));
        }
        let v6 = RouteKey {
            table: MAIN_TABLE,
            prefix: "fd00:1::/64".parse().unwrap(),
        };
        let spec = RouteSpec {
            hops: vec![hop("fd55::2", Some(4))].into(),
            prefsrc: None,
        };
        let mut buf = Vec::new();
        write_new(&mut buf, &v6, &spec, 201);
        assert_eq!(buf, emitted(&encode_new(&v6, &spec, 201)));
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let key = RouteKey {
            table: MAIN_TABLE,
            prefix: "0.0.0.0/0".parse().unwrap(),
        };
        let m = encode_del(&key, 201);
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Destination(_))));
        assert_eq!(decode(&m).map(|r| r.key), Some(key));
    }
}
