//! What a session negotiated, passed to every encode and decode call.

use crate::types::{Asn, Family};

/// The negotiated-session context. Build it from the two OPENs with
/// [`SessionContext::negotiate`]; before OPENs are exchanged use [`SessionContext::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionContext {
    /// Both sides sent the 4-octet AS capability (RFC 6793): AS_PATH carries 4-octet numbers.
    pub four_octet_as: bool,
    /// Families both sides announced with the multiprotocol capability (or IPv4 unicast when
    /// the peer sent no multiprotocol capability at all, RFC 4760 section 8).
    pub families: Vec<Family>,
    /// IPv4 unicast NLRI may carry an IPv6 next hop in MP_REACH (RFC 8950).
    pub extended_next_hop: bool,
    /// Our AS number.
    pub local_asn: Asn,
    /// The peer's AS number. Equal to `local_asn` on an iBGP session.
    pub peer_asn: Asn,
}

impl Default for SessionContext {
    fn default() -> Self {
        SessionContext {
            four_octet_as: false,
            families: vec![Family::Ipv4Unicast],
            extended_next_hop: false,
            local_asn: Asn(0),
            peer_asn: Asn(0),
        }
    }
}

impl SessionContext {
    /// True when the session is internal BGP.
    pub fn is_ibgp(&self) -> bool {
        self.local_asn == self.peer_asn
    }
}
