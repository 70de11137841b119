//! Veth mode: a veth pair from the pod to the host, for pods whose main interface is a
//! macvlan/ipvlan child (a parent never exchanges packets with its children, so the host, and
//! with it kube-proxy's rules, is unreachable over the pod's own interface).
//!
//! In the pod: the host's next-hop address on-link through the veth, the host's other
//! addresses and every via-host range through it. On the host: the pod's /32 through the host
//! veth. Both sides get permanent neighbour entries, and reverse-path filtering on the pod side
//! is set to loose (see docs/cni.md for why).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::error::CniError;
use super::host;
use super::netlink::{in_netns, write_sysctl, Link, Netlink};
use super::plan::Plan;
use super::protocol::{format_mac, Interface};

/// What ADD made in veth mode, for the result.
pub struct Made {
    pub host: Link,
    pub pod: Link,
}

/// Creates the veth pair and everything through it. On error the caller deletes the host veth
/// (which takes the pod end, its routes and neighbours with it).
pub fn add(
    host_nl: &Netlink,
    pod_nl: &Netlink,
    netns: &Path,
    cni_ifname: &str,
    plan: &Plan,
    mtu: u32,
    created: &mut bool,
) -> Result<Made, CniError> {
    let protocol = super::ROUTE_PROTOCOL;
    let ns = File::open(netns)
        .map_err(|e| CniError::ContainerUnknown(format!("netns {}: {e}", netns.display())))?;
    host_nl.add_veth(&plan.host_veth, &plan.pod_dev, ns.as_raw_fd(), mtu)?;
    *created = true;
    let host = host_nl
        .link(&plan.host_veth)?
        .ok_or_else(|| CniError::Netlink(format!("{} vanished after creation", plan.host_veth)))?;
    let pod = pod_nl
        .link(&plan.pod_dev)?
        .ok_or_else(|| CniError::Netlink(format!("{} missing in the pod", plan.pod_dev)))?;
    host_nl.set_up(host.index, Some(&plan.alias))?;
    pod_nl.set_up(pod.index, None)?;

    // Loose reverse-path filtering in the pod: packets from addresses the pod routes over the
    // other interface (e.g. an underlay peer whose traffic the host forwarded) must not be
    // dropped by a strict check on either interface.
    let (pod_dev, cni_if) = (plan.pod_dev.clone(), cni_ifname.to_string());
    in_netns(netns, move || {
        write_sysctl(&format!("net.ipv4.conf.{pod_dev}.rp_filter"), "2")?;
        // The main plugin's interface may be IPv6-only or gone; a failure there is not ours.
        let _ = write_sysctl(&format!("net.ipv4.conf.{cni_if}.rp_filter"), "2");
        Ok(())
    })?;

    for nh in &plan.next_hops {
        pod_nl.add_neighbour(pod.index, *nh, &host.mac)?;
    }
    for r in &plan.pod_routes {
        pod_nl
            .add_route(r.dst, r.via, pod.index, 0)
            .map_err(|e| match e {
                CniError::Exists(what) => CniError::Exists(format!(
                "{what} in the pod (configured via-host range overlaps a route the pod already has)"
            )),
                e => e,
            })?;
    }
    host::add_pod_routes(host_nl, &host, &plan.host_routes, &pod.mac, protocol)?;
    Ok(Made { host, pod })
}

/// The interfaces to report: the host end (no sandbox) and the pod end.
pub fn interfaces(made: &Made, netns: &str) -> Vec<Interface> {
    vec![
        Interface {
            name: made.host.name.clone(),
            mac: format_mac(&made.host.mac),
            sandbox: None,
        },
        Interface {
            name: made.pod.name.clone(),
            mac: format_mac(&made.pod.mac),
            sandbox: Some(netns.to_string()),
        },
    ]
}

/// What CHECK finds missing in veth mode.
pub fn check(
    host_nl: &Netlink,
    pod_nl: Option<&Netlink>,
    plan: &Plan,
    protocol: u8,
) -> Result<Vec<String>, CniError> {
    let mut missing = Vec::new();
    match host_nl.link(&plan.host_veth)? {
        None => missing.push(format!("host veth {}", plan.host_veth)),
        Some(h) => {
            if !h.up {
                missing.push(format!("host veth {} is down", h.name));
            }
            for r in
                host::missing_routes(host_nl, &plan.host_routes, None, h.index, Some(protocol))?
            {
                missing.push(format!("host route {r} dev {} proto {protocol}", h.name));
            }
        }
    }
    let Some(pod_nl) = pod_nl else {
        return Ok(missing);
    };
    match pod_nl.link(&plan.pod_dev)? {
        None => missing.push(format!("pod veth {}", plan.pod_dev)),
        Some(p) => {
            for r in &plan.pod_routes {
                if !host::missing_routes(pod_nl, &[r.dst], r.via, p.index, None)?.is_empty() {
                    missing.push(format!("pod route {} dev {}", r.dst, p.name));
                }
            }
        }
    }
    Ok(missing)
}
