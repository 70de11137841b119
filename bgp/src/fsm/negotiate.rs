//! Checking the peer's OPEN (RFC 4271 section 6.2) and deriving what the session negotiated.
//!
//! Owns the OPEN acceptance rules and the capability intersection the FSM reports in
//! [`Negotiated`]. It never touches state or timers: both functions are pure.
//!
//! The codec has its own `SessionContext::negotiate`; this module deliberately does not depend
//! on it so that the state machine can be built and tested alone. Both follow the same rules.

use bytes::Bytes;

use crate::types::{Asn, Family, AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use crate::wire::capability::{Capability, GracefulRestartCap};
use crate::wire::error::{code, open, NotificationError};
use crate::wire::message::Open;

use super::{FsmConfig, Negotiated};

/// The only BGP version this speaker implements.
pub(super) const BGP_VERSION: u8 = 4;

/// Checks the peer's OPEN against our configuration, in the order RFC 4271 section 6.2 lists
/// the checks, and returns the NOTIFICATION to send when it is unacceptable.
pub(super) fn check_open(cfg: &FsmConfig, peer: &Open) -> Result<(), NotificationError> {
    if peer.version != BGP_VERSION {
        // The data is the version we would accept: the largest we support below the one
        // bid, or our smallest when the bid is below it; with only version 4 both are 4.
        return Err(NotificationError::with_data(
            code::OPEN_MESSAGE,
            open::UNSUPPORTED_VERSION,
            Bytes::copy_from_slice(&u16::from(BGP_VERSION).to_be_bytes()),
        ));
    }

    // Open::asn() prefers the 4-octet capability; without it a peer sending AS_TRANS really is
    // AS 23456 and so only matches a configuration that says exactly that (RFC 6793 section 4).
    let peer_asn = peer.asn();
    if peer_asn == Asn(0) || peer_asn != cfg.peer_asn {
        return Err(NotificationError::new(
            code::OPEN_MESSAGE,
            open::BAD_PEER_AS,
        ));
    }

    if peer.hold_time == 1 || peer.hold_time == 2 {
        return Err(NotificationError::new(
            code::OPEN_MESSAGE,
            open::UNACCEPTABLE_HOLD_TIME,
        ));
    }

    // RFC 6286 section 2.2: any non-zero value is a valid identifier, but within one AS it
    // must be unique, so an iBGP peer using ours is misconfigured (or is ourselves).
    let ibgp = cfg.local_asn == cfg.peer_asn;
    if peer.router_id.0.is_unspecified() || (ibgp && peer.router_id == cfg.router_id) {
        return Err(NotificationError::new(
            code::OPEN_MESSAGE,
            open::BAD_BGP_IDENTIFIER,
        ));
    }

    Ok(())
}

/// Derives the session parameters from the two OPENs. `peer` must have passed [`check_open`].
pub(super) fn negotiate(local: &Open, peer: &Open) -> Negotiated {
    let hold_time = local.hold_time.min(peer.hold_time);
    let local_families = families(local);
    let peer_families = families(peer);
    let families = Family::ALL
        .into_iter()
        .filter(|f| local_families.contains(f) && peer_families.contains(f))
        .collect();

    Negotiated {
        peer_open: peer.clone(),
        local_open: local.clone(),
        hold_time,
        // RFC 4271 section 10 suggests one third of the hold time; with hold time 0 no
        // keepalives are sent at all (section 4.4).
        keepalive: hold_time / 3,
        peer_asn: peer.asn(),
        peer_router_id: peer.router_id,
        families,
        four_octet_as: has(local, |c| matches!(c, Capability::FourOctetAs(_)))
            && has(peer, |c| matches!(c, Capability::FourOctetAs(_))),
        route_refresh: has(local, |c| matches!(c, Capability::RouteRefresh))
            && has(peer, |c| matches!(c, Capability::RouteRefresh)),
        extended_next_hop: ipv4_over_ipv6_next_hop(local) && ipv4_over_ipv6_next_hop(peer),
        // Advertising the capability, even with no families, is how a speaker agrees to the
        // receiving-speaker procedures (RFC 4724 section 3). Retaining the peer's routes when
        // it restarts is such a procedure, so it needs our capability as well as the peer's.
        peer_graceful_restart: if has(local, |c| matches!(c, Capability::GracefulRestart(_))) {
            graceful_restart(peer).cloned()
        } else {
            None
        },
    }
}

/// The families an OPEN announces. A speaker that sends no multiprotocol capability at all
/// speaks IPv4 unicast only (RFC 4760 section 8).
fn families(open: &Open) -> Vec<Family> {
    let mut out = Vec::new();
    let mut any_mp = false;
    for cap in &open.capabilities {
        if let Capability::Multiprotocol { afi, safi } = cap {
            any_mp = true;
            if let Some(f) = Family::from_afi_safi(*afi, *safi) {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
    }
    if !any_mp {
        out.push(Family::Ipv4Unicast);
    }
    out
}

fn has(open: &Open, pred: impl Fn(&Capability) -> bool) -> bool {
    open.capabilities.iter().any(pred)
}

/// True when the OPEN offers IPv4 unicast NLRI with an IPv6 next hop (RFC 8950 section 3),
/// the only extended next hop combination this speaker uses.
fn ipv4_over_ipv6_next_hop(open: &Open) -> bool {
    open.capabilities.iter().any(|c| match c {
        Capability::ExtendedNextHop(entries) => entries.iter().any(|e| {
            e.nlri_afi == AFI_IPV4
                && e.nlri_safi == u16::from(SAFI_UNICAST)
                && e.next_hop_afi == AFI_IPV6
        }),
        _ => false,
    })
}

fn graceful_restart(open: &Open) -> Option<&GracefulRestartCap> {
    open.capabilities.iter().find_map(|c| match c {
        Capability::GracefulRestart(gr) => Some(gr),
        _ => None,
    })
}

/// The 2-octet "My Autonomous System" value for our OPEN (RFC 6793 section 4.1).
pub(super) fn two_octet_as(asn: Asn) -> u16 {
    u16::try_from(asn.0).unwrap_or(Asn::TRANS.0 as u16)
}

/// Our OPEN, built once from the configuration.
pub(super) fn local_open(cfg: &FsmConfig, hold_time: u16) -> Open {
    Open {
        version: BGP_VERSION,
        my_as: two_octet_as(cfg.local_asn),
        hold_time,
        router_id: cfg.router_id,
        capabilities: cfg.capabilities.clone(),
    }
}
