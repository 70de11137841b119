//! OPEN capabilities (RFC 5492) and the ones this speaker understands.

use bytes::Bytes;

use crate::types::Asn;

/// Capability codes (IANA "Capability Codes" registry).
pub mod code {
    /// Multiprotocol Extensions (RFC 4760).
    pub const MULTIPROTOCOL: u8 = 1;
    /// Route Refresh (RFC 2918).
    pub const ROUTE_REFRESH: u8 = 2;
    /// Extended Next Hop Encoding (RFC 8950).
    pub const EXTENDED_NEXT_HOP: u8 = 5;
    /// Graceful Restart (RFC 4724).
    pub const GRACEFUL_RESTART: u8 = 64;
    /// Support for 4-octet AS number (RFC 6793).
    pub const FOUR_OCTET_AS: u8 = 65;
    /// ADD-PATH (RFC 7911).
    pub const ADD_PATH: u8 = 69;
    /// FQDN (draft-walton-bgp-hostname-capability).
    pub const FQDN: u8 = 73;
}

/// One capability from an OPEN's Capabilities optional parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// Multiprotocol extensions for one (AFI, SAFI).
    Multiprotocol {
        /// Address family identifier.
        afi: u16,
        /// Subsequent address family identifier.
        safi: u8,
    },
    /// Route refresh.
    RouteRefresh,
    /// 4-octet AS numbers, carrying the speaker's real AS.
    FourOctetAs(Asn),
    /// Graceful restart.
    GracefulRestart(GracefulRestartCap),
    /// Extended next hop encoding: which NLRI families may use which next-hop AFI.
    ExtendedNextHop(Vec<ExtendedNextHopEntry>),
    /// ADD-PATH: per family, whether the speaker can send and/or receive multiple paths.
    AddPath(Vec<AddPathEntry>),
    /// The speaker's host and domain name.
    Fqdn {
        /// Host name.
        hostname: String,
        /// Domain name.
        domain: String,
    },
    /// A capability we do not understand, kept as raw bytes.
    Unknown {
        /// Capability code.
        code: u8,
        /// Capability value.
        data: Bytes,
    },
}

/// The graceful restart capability value (RFC 4724 section 3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GracefulRestartCap {
    /// Restart State bit: the sender has restarted.
    pub restart_state: bool,
    /// Graceful Notification bit (RFC 8538).
    pub notification: bool,
    /// Restart Time in seconds (12 bits).
    pub restart_time: u16,
    /// Families whose state the sender preserves, with their Forwarding State bit.
    pub families: Vec<GracefulRestartFamily>,
}

/// One family entry of the graceful restart capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    /// Address family identifier.
    pub afi: u16,
    /// Subsequent address family identifier.
    pub safi: u8,
    /// Forwarding State bit: forwarding state was preserved across the restart.
    pub forwarding: bool,
}

/// One entry of the extended next hop capability (RFC 8950 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtendedNextHopEntry {
    /// NLRI AFI.
    pub nlri_afi: u16,
    /// NLRI SAFI (16 bits on the wire for this capability).
    pub nlri_safi: u16,
    /// AFI of the next hop.
    pub next_hop_afi: u16,
}

/// One entry of the ADD-PATH capability (RFC 7911 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddPathEntry {
    /// Address family identifier.
    pub afi: u16,
    /// Subsequent address family identifier.
    pub safi: u8,
    /// 1 = receive, 2 = send, 3 = both.
    pub send_receive: u8,
}
