//! Connection collision resolution (RFC 4271 section 6.8).
//!
//! Owns only the decision of which of two connections to the same peer survives; it never closes
//! anything itself. The caller, which sees both connections, compares the identifiers once the
//! peer's OPEN has arrived on one of them ([`super::Fsm::peer_router_id`]) and feeds
//! [`super::Event::CollisionLost`] to the FSM of the loser.

use crate::types::RouterId;

/// Which of two simultaneous connections with the same peer is kept (RFC 4271 section 6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keep {
    /// Keep the connection the peer initiated (the one we accepted); close the one we initiated.
    Incoming,
    /// Keep the connection we initiated; close the one the peer initiated.
    Outgoing,
}

/// Decides which connection survives a collision, from the two BGP identifiers.
///
/// The speaker with the higher identifier keeps the connection it initiated: when our
/// identifier is lower we give up ours and keep the peer's ([`Keep::Incoming`]), otherwise we
/// keep ours ([`Keep::Outgoing`]). Identifiers are compared as 4-octet unsigned integers in
/// host byte order, which is what comparing the addresses does.
///
/// Equal identifiers only happen on eBGP (RFC 6286 forbids them on iBGP, and the FSM rejects
/// such an OPEN); RFC 6286 section 2.3 then compares AS numbers, which this function does not
/// see, so it keeps [`Keep::Outgoing`] and the caller may refine the tie.
pub fn resolve_collision(local: RouterId, remote: RouterId) -> Keep {
    if local < remote {
        Keep::Incoming
    } else {
        Keep::Outgoing
    }
}
