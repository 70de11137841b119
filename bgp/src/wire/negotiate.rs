//! Building the [`SessionContext`] from the two OPENs (RFC 4760 section 8, RFC 6793,
//! RFC 8950 section 4).

use crate::types::{Asn, Family, AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use crate::wire::capability::Capability;
use crate::wire::context::SessionContext;
use crate::wire::message::Open;

/// The families an OPEN offers; IPv4 unicast alone when it sent no multiprotocol capability.
fn families(open: &Open) -> Vec<Family> {
    let mut mp = open.capabilities.iter().filter_map(|c| match c {
        Capability::Multiprotocol { afi, safi } => Some(Family::from_afi_safi(*afi, *safi)),
        _ => None,
    });
    let Some(first) = mp.next() else {
        // RFC 4760 section 8: a speaker without the capability carries IPv4 unicast only.
        return vec![Family::Ipv4Unicast];
    };
    let mut out: Vec<Family> = std::iter::once(first).chain(mp).flatten().collect();
    out.sort();
    out.dedup();
    out
}

fn four_octet(open: &Open) -> bool {
    open.capabilities
        .iter()
        .any(|c| matches!(c, Capability::FourOctetAs(_)))
}

/// RFC 8950: IPv4 unicast NLRI with an IPv6 next hop.
fn ipv4_over_ipv6(open: &Open) -> bool {
    open.capabilities.iter().any(|c| match c {
        Capability::ExtendedNextHop(entries) => entries.iter().any(|e| {
            e.nlri_afi == AFI_IPV4
                && e.nlri_safi == u16::from(SAFI_UNICAST)
                && e.next_hop_afi == AFI_IPV6
        }),
        _ => false,
    })
}

impl SessionContext {
    /// Build a negotiated context from our OPEN and the peer's: families are the intersection
    /// of what both offer, 4-octet AS numbers when both sent capability 65, the RFC 8950 IPv6
    /// next hop for IPv4 unicast when both announced (1, 1, 2). The AS numbers come from the
    /// caller, which has already checked the peer's against its configuration.
    pub fn negotiate(local: &Open, remote: &Open, local_asn: Asn, peer_asn: Asn) -> SessionContext {
        let theirs = families(remote);
        let families = families(local)
            .into_iter()
            .filter(|f| theirs.contains(f))
            .collect();
        SessionContext {
            four_octet_as: four_octet(local) && four_octet(remote),
            families,
            extended_next_hop: ipv4_over_ipv6(local) && ipv4_over_ipv6(remote),
            local_asn,
            peer_asn,
        }
    }
}
