//! Small value types shared by the codec, the state machine and the RIB.
//!
//! They exist so that an AS number is never confused with a hold time and a router id is never
//! confused with a next hop: illegal states should not type-check.

use std::fmt;
use std::net::Ipv4Addr;

/// An autonomous system number (always carried as 4 octets internally, RFC 6793).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Asn(pub u32);

impl Asn {
    /// AS_TRANS (RFC 6793): what a 4-octet speaker puts in 2-octet fields it cannot fill.
    pub const TRANS: Asn = Asn(23456);

    /// True when the number does not fit in the 2-octet OPEN "My Autonomous System" field.
    pub fn is_four_octet(self) -> bool {
        self.0 > u32::from(u16::MAX)
    }
}

impl fmt::Display for Asn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The BGP identifier of a speaker (RFC 4271 section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouterId(pub Ipv4Addr);

impl fmt::Display for RouterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Address family identifier (RFC 4760, IANA registry).
pub const AFI_IPV4: u16 = 1;
/// Address family identifier for IPv6.
pub const AFI_IPV6: u16 = 2;
/// Subsequent address family identifier for unicast.
pub const SAFI_UNICAST: u8 = 1;

/// The address families this speaker carries routes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// AFI 1 / SAFI 1.
    Ipv4Unicast,
    /// AFI 2 / SAFI 1.
    Ipv6Unicast,
}

impl Family {
    /// Every family, in a fixed order.
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    /// The (AFI, SAFI) pair on the wire.
    pub fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (AFI_IPV4, SAFI_UNICAST),
            Family::Ipv6Unicast => (AFI_IPV6, SAFI_UNICAST),
        }
    }

    /// The family for an (AFI, SAFI) pair, if we carry it.
    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (AFI_IPV4, SAFI_UNICAST) => Some(Family::Ipv4Unicast),
            (AFI_IPV6, SAFI_UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    /// The family a prefix belongs to.
    pub fn of(prefix: &ipnet::IpNet) -> Family {
        match prefix {
            ipnet::IpNet::V4(_) => Family::Ipv4Unicast,
            ipnet::IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The names gobgp uses, so operators see the same words everywhere.
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}
