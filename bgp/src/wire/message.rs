//! The five BGP message types (RFC 4271 section 4, RFC 2918) and End-of-RIB (RFC 4724 section 2).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::types::{Asn, RouterId};
use crate::wire::attribute::PathAttribute;
use crate::wire::capability::Capability;
use crate::wire::error::NotificationError;

/// Length of the fixed header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// Largest message RFC 4271 allows (without RFC 8654 extended messages).
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Message type codes.
pub mod kind {
    /// OPEN.
    pub const OPEN: u8 = 1;
    /// UPDATE.
    pub const UPDATE: u8 = 2;
    /// NOTIFICATION.
    pub const NOTIFICATION: u8 = 3;
    /// KEEPALIVE.
    pub const KEEPALIVE: u8 = 4;
    /// ROUTE-REFRESH.
    pub const ROUTE_REFRESH: u8 = 5;
}

/// A decoded BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE.
    Update(Update),
    /// NOTIFICATION.
    Notification(NotificationError),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH.
    RouteRefresh(RouteRefresh),
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Protocol version (4).
    pub version: u8,
    /// The 2-octet "My Autonomous System" field (AS_TRANS when the real AS needs 4 octets).
    pub my_as: u16,
    /// Proposed hold time in seconds (0 or at least 3).
    pub hold_time: u16,
    /// BGP identifier.
    pub router_id: RouterId,
    /// Capabilities from every Capabilities optional parameter, in order.
    pub capabilities: Vec<Capability>,
}

/// A ROUTE-REFRESH message (RFC 2918; subtype from RFC 7313, 0 = normal request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    /// Address family identifier.
    pub afi: u16,
    /// Message subtype (the "reserved" octet of RFC 2918).
    pub subtype: u8,
    /// Subsequent address family identifier.
    pub safi: u8,
}

/// An UPDATE message as it is on the wire (after RFC 7606 attribute discards).
///
/// IPv6 routes and withdrawals travel inside `MP_REACH_NLRI` / `MP_UNREACH_NLRI` attributes;
/// the normalised, family-independent view the RIB consumes comes from
/// `Update::routes` in the codec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 unicast routes.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes, in the order they were received or are to be sent.
    pub attributes: Vec<PathAttribute>,
    /// Reachable IPv4 unicast NLRI.
    pub nlri: Vec<Ipv4Net>,
    /// Set by the decoder when RFC 7606 requires treat-as-withdraw: every NLRI in this
    /// message must be handled as withdrawn. Never set on messages we build.
    pub treat_as_withdraw: Option<NotificationError>,
}

/// Convenience: the speaker's real AS number from an OPEN (the 4-octet capability wins).
impl Open {
    /// The AS number the peer really has.
    pub fn asn(&self) -> Asn {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(Asn(u32::from(self.my_as)))
    }

    /// The BGP identifier as an address.
    pub fn identifier(&self) -> Ipv4Addr {
        self.router_id.0
    }
}

/// The family-independent meaning of one UPDATE, as the RIB consumes it.
///
/// Produced by the codec from an [`Update`] and a session context (AS4_PATH merged, the right
/// next hop per family, treat-as-withdraw applied).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteUpdate {
    /// Prefixes no longer reachable (including NLRI turned into withdrawals by RFC 7606).
    pub withdrawn: Vec<ipnet::IpNet>,
    /// Reachable prefixes, grouped by the attributes they share.
    pub announced: Vec<Announcement>,
    /// Set when the message was an End-of-RIB marker for this family.
    pub end_of_rib: Option<crate::types::Family>,
}

/// Prefixes announced with one set of attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The attributes, including the next hop for these prefixes.
    pub attrs: crate::wire::attribute::PathAttrs,
    /// The prefixes.
    pub prefixes: Vec<ipnet::IpNet>,
}
