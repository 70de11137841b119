//! Path attributes (RFC 4271 section 4.3 and 5, RFC 1997, 4456, 4760, 6793, 8092).
//!
//! [`PathAttribute`] is the wire form, one variant per attribute type. [`PathAttrs`] is the
//! normalised set a route carries in the RIB: AS4_PATH already merged, one next hop, no NLRI.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use ipnet::IpNet;

use crate::types::Asn;

/// Attribute flag bits.
pub mod flags {
    /// Optional (1) or well-known (0).
    pub const OPTIONAL: u8 = 0x80;
    /// Transitive.
    pub const TRANSITIVE: u8 = 0x40;
    /// Partial: some AS on the path did not recognise this optional transitive attribute.
    pub const PARTIAL: u8 = 0x20;
    /// Extended Length: the length field is two octets.
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Attribute type codes.
pub mod type_code {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR.
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES.
    pub const COMMUNITIES: u8 = 8;
    /// ORIGINATOR_ID.
    pub const ORIGINATOR_ID: u8 = 9;
    /// CLUSTER_LIST.
    pub const CLUSTER_LIST: u8 = 10;
    /// MP_REACH_NLRI.
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI.
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// AS4_PATH.
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR.
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY.
    pub const LARGE_COMMUNITY: u8 = 32;
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Origin {
    /// Learned from an interior protocol.
    #[default]
    Igp = 0,
    /// Learned from EGP.
    Egp = 1,
    /// Learned some other way.
    Incomplete = 2,
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AsSegment {
    /// AS_SET (unordered).
    Set(Vec<Asn>),
    /// AS_SEQUENCE (ordered, nearest AS first).
    Sequence(Vec<Asn>),
    /// AS_CONFED_SEQUENCE (RFC 5065).
    ConfedSequence(Vec<Asn>),
    /// AS_CONFED_SET (RFC 5065).
    ConfedSet(Vec<Asn>),
}

/// An AS path: segments in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    /// The segments.
    pub segments: Vec<AsSegment>,
}

/// AGGREGATOR / AS4_AGGREGATOR value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    /// The AS that formed the aggregate.
    pub asn: Asn,
    /// Its BGP identifier.
    pub address: Ipv4Addr,
}

/// A large community (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    /// Global administrator.
    pub global: u32,
    /// Local data part 1.
    pub local1: u32,
    /// Local data part 2.
    pub local2: u32,
}

/// The next hop inside MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    /// A 4-octet IPv4 next hop.
    V4(Ipv4Addr),
    /// A 16-octet IPv6 global next hop.
    V6(Ipv6Addr),
    /// A 32-octet IPv6 global plus link-local next hop.
    V6WithLinkLocal(Ipv6Addr, Ipv6Addr),
}

/// MP_REACH_NLRI (RFC 4760 section 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// Address family identifier.
    pub afi: u16,
    /// Subsequent address family identifier.
    pub safi: u8,
    /// Next hop.
    pub next_hop: MpNextHop,
    /// Reachable prefixes.
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 section 4). An empty `withdrawn` list is End-of-RIB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    /// Address family identifier.
    pub afi: u16,
    /// Subsequent address family identifier.
    pub safi: u8,
    /// Withdrawn prefixes.
    pub withdrawn: Vec<IpNet>,
}

/// An attribute kept as bytes: unknown optional attributes we pass on (or drop).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    /// Flags as received (the partial bit is set on re-advertisement).
    pub flags: u8,
    /// Type code.
    pub type_code: u8,
    /// Value.
    pub data: Bytes,
}

/// One path attribute, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    /// ORIGIN.
    Origin(Origin),
    /// AS_PATH (2- or 4-octet numbers depending on the session; always `Asn` here).
    AsPath(AsPath),
    /// NEXT_HOP.
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC.
    MultiExitDisc(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR.
    Aggregator(Aggregator),
    /// COMMUNITIES.
    Communities(Vec<u32>),
    /// ORIGINATOR_ID.
    OriginatorId(Ipv4Addr),
    /// CLUSTER_LIST.
    ClusterList(Vec<Ipv4Addr>),
    /// MP_REACH_NLRI.
    MpReach(MpReach),
    /// MP_UNREACH_NLRI.
    MpUnreach(MpUnreach),
    /// AS4_PATH (only between a 4-octet and a 2-octet speaker).
    As4Path(AsPath),
    /// AS4_AGGREGATOR.
    As4Aggregator(Aggregator),
    /// LARGE_COMMUNITY.
    LargeCommunities(Vec<LargeCommunity>),
    /// Any other attribute.
    Unknown(RawAttribute),
}

/// The attributes a route carries in the RIB, independent of how they were encoded.
///
/// Routes share these through `Arc` interning in the RIB, so keep it `Eq + Hash`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PathAttrs {
    /// ORIGIN.
    pub origin: Origin,
    /// AS path with 4-octet numbers (AS4_PATH merged in, RFC 6793 section 4.2.3).
    pub as_path: AsPath,
    /// The next hop: NEXT_HOP for IPv4 NLRI, the MP_REACH next hop otherwise.
    /// `None` only for locally originated routes before next-hop-self is applied.
    pub next_hop: Option<IpAddr>,
    /// IPv6 link-local next hop, when MP_REACH carried one.
    pub link_local_next_hop: Option<Ipv6Addr>,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// LOCAL_PREF (only meaningful on iBGP).
    pub local_pref: Option<u32>,
    /// ATOMIC_AGGREGATE present.
    pub atomic_aggregate: bool,
    /// AGGREGATOR (AS4_AGGREGATOR merged in).
    pub aggregator: Option<Aggregator>,
    /// COMMUNITIES.
    pub communities: Vec<u32>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<LargeCommunity>,
    /// ORIGINATOR_ID.
    pub originator_id: Option<Ipv4Addr>,
    /// CLUSTER_LIST.
    pub cluster_list: Vec<Ipv4Addr>,
    /// Unknown optional transitive attributes, passed on with the partial bit set.
    pub unknown: Vec<RawAttribute>,
}
