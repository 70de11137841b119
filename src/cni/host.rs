//! The host side of an attachment: which host interface and addresses the pod uses, the
//! host-side veth and its /32 routes, and finding our veths again (DEL, GC).
//!
//! Never touches a link that does not carry our alias (or, for a veth that ADD created but had
//! no time to label, our deterministic name).

use std::net::IpAddr;

use ipnet::IpNet;

use super::config::NetConf;
use super::error::CniError;
use super::netlink::{Link, Netlink};
use super::plan::{parse_alias, HostAddr, HOST_VETH_PREFIX};

/// What ADD needs to know about the host.
#[derive(Debug, Clone)]
pub struct HostView {
    pub addrs: Vec<HostAddr>,
    pub host_if: Link,
}

/// Finds the host interface (configured, or the default route's) and all host addresses.
pub fn discover(nl: &Netlink, conf: &NetConf) -> Result<HostView, CniError> {
    let host_if = match &conf.host_interface {
        Some(name) => nl.link(name)?.ok_or_else(|| {
            // The interface may not be there yet early in boot: let the runtime retry.
            CniError::TryAgain(format!("hostInterface {name} does not exist"))
        })?,
        None => {
            let idx = nl.default_route_ifindex()?.ok_or_else(|| {
                CniError::TryAgain(
                    "the host has no default route; set hostInterface or wait for the network"
                        .into(),
                )
            })?;
            nl.links()?
                .into_iter()
                .find(|l| l.index == idx)
                .ok_or_else(|| {
                    CniError::TryAgain(format!("default route interface {idx} vanished"))
                })?
        }
    };
    Ok(HostView {
        addrs: nl.addresses()?,
        host_if,
    })
}

/// Whether a host link is an attachment's veth that we may delete.
pub fn is_ours(link: &Link, expected_alias: &str) -> bool {
    match &link.alias {
        Some(a) => a == expected_alias,
        // ADD died between creating the veth and labelling it.
        None => link.name.starts_with(HOST_VETH_PREFIX),
    }
}

/// Host links that carry our alias, with the attachment each belongs to.
pub fn our_links(nl: &Netlink) -> Result<Vec<(Link, String, String)>, CniError> {
    Ok(nl
        .links()?
        .into_iter()
        .filter_map(|l| {
            let (c, i) = parse_alias(l.alias.as_deref()?)?;
            let (c, i) = (c.to_string(), i.to_string());
            Some((l, c, i))
        })
        .collect())
}

/// Adds the /32 (/128) routes to the pod through the host veth, tagged with underroute's route
/// protocol so the agent picks them up, plus permanent neighbour entries for the pod's
/// addresses (no ARP needed from the host to the pod).
pub fn add_pod_routes(
    nl: &Netlink,
    host_veth: &Link,
    routes: &[IpNet],
    pod_mac: &[u8],
    protocol: u8,
) -> Result<(), CniError> {
    for r in routes {
        nl.add_neighbour(host_veth.index, r.addr(), pod_mac)?;
        nl.add_route(*r, None, host_veth.index, protocol)?;
    }
    Ok(())
}

/// The routes of `want` that the host lacks (through `oif`, with `protocol`).
pub fn missing_routes(
    nl: &Netlink,
    want: &[IpNet],
    via: Option<IpAddr>,
    oif: u32,
    protocol: Option<u8>,
) -> Result<Vec<IpNet>, CniError> {
    let have = nl.routes()?;
    Ok(want
        .iter()
        .filter(|w| {
            !have.iter().any(|r| {
                r.dst == **w
                    && r.oif == Some(oif)
                    && r.via == via
                    && protocol.is_none_or(|p| p == r.protocol)
            })
        })
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, alias: Option<&str>) -> Link {
        Link {
            index: 7,
            name: name.into(),
            mac: vec![],
            mtu: 1500,
            alias: alias.map(str::to_string),
            up: true,
        }
    }

    #[test]
    fn only_our_labelled_or_unlabelled_ur_links_may_be_deleted() {
        let al = "underroute-cni:c1/eth0";
        assert!(is_ours(&link("ur0123456789abc", Some(al)), al));
        assert!(is_ours(&link("ur0123456789abc", None), al));
        assert!(!is_ours(&link("ur0123456789abc", Some("someone else")), al));
        assert!(!is_ours(&link("eth0", None), al));
    }
}
