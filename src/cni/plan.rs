//! What an attachment consists of, computed without touching the system: names, the pod's next
//! hops, and the routes on each side. ADD applies a plan, CHECK compares one with the kernel, and
//! DEL/GC only need the names, so they work without `prevResult`.

use std::net::IpAddr;

use ipnet::IpNet;

use super::config::{Mode, NetConf};
use super::error::CniError;
use super::protocol::PodAddr;

/// Prefix of every host-side veth this plugin creates.
pub const HOST_VETH_PREFIX: &str = "ur";
/// Prefix of the `ifalias` that marks a host veth as ours (GC finds its attachment there).
pub const ALIAS_PREFIX: &str = "underroute-cni:";

/// The host-side veth name of an attachment: `ur` + 13 hex digits of a 64-bit FNV-1a hash of
/// `containerID/ifname`. Deterministic, so DEL and GC find it without any saved state; 52 bits
/// keep collisions between the pods of one node out of reach. Fits IFNAMSIZ (15).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(ifname.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let hex = format!("{h:016x}");
    format!("{HOST_VETH_PREFIX}{}", &hex[..13])
}

/// The `ifalias` put on the host veth: which attachment it belongs to.
pub fn host_veth_alias(container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{container_id}/{ifname}")
}

/// The attachment named by an alias, if it is one of ours.
pub fn parse_alias(alias: &str) -> Option<(&str, &str)> {
    alias.strip_prefix(ALIAS_PREFIX)?.rsplit_once('/')
}

/// An address of the host, and the interface holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddr {
    pub addr: IpNet,
    pub ifname: String,
}

/// A route to create in the pod: through the host (`via` the next hop) or on-link (`via: None`,
/// the next hop itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRoute {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
}

/// Everything ADD creates for one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mode: Mode,
    /// Host-side veth (veth mode).
    pub host_veth: String,
    pub alias: String,
    /// The interface in the pod the routes use: our veth (veth mode) or `CNI_IFNAME` (route).
    pub pod_dev: String,
    /// The host's addresses the pod uses as next hops (at most one per family).
    pub next_hops: Vec<IpAddr>,
    /// Pod-side routes, in creation order (on-link next hops first).
    pub pod_routes: Vec<PodRoute>,
    /// Host-side /32 and /128 routes to the pod, via the host veth (veth mode only).
    pub host_routes: Vec<IpNet>,
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn host_prefix(a: IpAddr) -> IpNet {
    IpNet::from(a)
}

/// Whether an address may serve as (or be routed to as) a host address for pods: not loopback,
/// link-local, multicast or unspecified.
fn is_usable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_loopback() || v.is_link_local() || v.is_unspecified()),
        IpAddr::V6(v) => {
            !(v.is_loopback() || v.is_unspecified() || (v.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Picks the next hop of one family among the host interface's addresses: the one whose subnet
/// holds a pod address (the pod and the host share the underlay subnet), else the first one.
fn pick_next_hop(host_if_addrs: &[&HostAddr], pod: &[PodAddr], v4: bool) -> Option<IpAddr> {
    let fam: Vec<&&HostAddr> = host_if_addrs
        .iter()
        .filter(|h| h.addr.addr().is_ipv4() == v4 && is_usable(h.addr.addr()))
        .collect();
    fam.iter()
        .find(|h| pod.iter().any(|p| h.addr.contains(&p.addr.addr())))
        .or_else(|| fam.first())
        .map(|h| h.addr.addr())
}

/// Builds the plan. `host_addrs` are all of the host's addresses; `host_if` is the interface
/// whose address becomes the pod's next hop.
pub fn plan(
    conf: &NetConf,
    container_id: &str,
    ifname: &str,
    pod: &[PodAddr],
    host_addrs: &[HostAddr],
    host_if: &str,
) -> Result<Plan, CniError> {
    if pod.is_empty() {
        return Err(CniError::config(
            "prevResult",
            "no addresses: chain underroute-cni after the plugin that gives the pod its address",
        ));
    }
    if conf.mode == Mode::Veth && conf.container_interface == ifname {
        return Err(CniError::config(
            "containerInterface",
            format!("{ifname:?} is CNI_IFNAME; the veth needs another name"),
        ));
    }
    let on_if: Vec<&HostAddr> = host_addrs.iter().filter(|h| h.ifname == host_if).collect();
    let mut next_hops = Vec::new();
    for v4 in [true, false] {
        let pod_has = pod.iter().any(|p| p.addr.addr().is_ipv4() == v4);
        if pod_has {
            if let Some(nh) = pick_next_hop(&on_if, pod, v4) {
                next_hops.push(nh);
            }
        }
    }
    if next_hops.is_empty() {
        return Err(CniError::NoHostAddress(format!(
            "{host_if} has no address of the pod's address family"
        )));
    }
    let pod_ips: Vec<IpAddr> = pod.iter().map(|p| p.addr.addr()).collect();
    let mut pod_routes = Vec::new();
    let nh_for = |a: IpAddr| next_hops.iter().copied().find(|n| same_family(*n, a));
    if conf.mode == Mode::Veth {
        for nh in &next_hops {
            pod_routes.push(PodRoute {
                dst: host_prefix(*nh),
                via: None,
            });
        }
        // The host's other addresses: macvlan/ipvlan children cannot reach any of them directly.
        for h in host_addrs {
            let a = h.addr.addr();
            let dst = host_prefix(a);
            if !is_usable(a)
                || next_hops.contains(&a)
                || pod_ips.contains(&a)
                || pod_routes.iter().any(|r: &PodRoute| r.dst == dst)
            {
                continue;
            }
            if let Some(nh) = nh_for(a) {
                pod_routes.push(PodRoute { dst, via: Some(nh) });
            }
        }
    }
    for c in conf.via_host_cidrs() {
        if let Some(nh) = nh_for(c.addr()) {
            if !pod_routes.iter().any(|r| r.dst == c) {
                pod_routes.push(PodRoute {
                    dst: c,
                    via: Some(nh),
                });
            }
        }
    }
    let host_routes = match conf.mode {
        Mode::Veth => {
            let mut v: Vec<IpNet> = Vec::new();
            for a in pod_ips {
                if !v.contains(&host_prefix(a)) {
                    v.push(host_prefix(a));
                }
            }
            v
        }
        Mode::Route => Vec::new(),
    };
    let pod_dev = match conf.mode {
        Mode::Veth => conf.container_interface.clone(),
        Mode::Route => pod
            .iter()
            .find_map(|p| p.ifname.clone())
            .unwrap_or_else(|| ifname.to_string()),
    };
    Ok(Plan {
        mode: conf.mode,
        host_veth: host_veth_name(container_id, ifname),
        alias: host_veth_alias(container_id, ifname),
        pod_dev,
        next_hops,
        pod_routes,
        host_routes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::Need;

    fn conf(extra: &str) -> NetConf {
        let s = format!(
            r#"{{"cniVersion":"1.0.0","name":"u","serviceCIDRs":["10.96.0.0/12"]{extra}}}"#
        );
        NetConf::parse(s.as_bytes(), Need::Routes).unwrap()
    }

    fn pod(a: &str) -> PodAddr {
        PodAddr {
            addr: a.parse().unwrap(),
            ifname: Some("eth0".into()),
        }
    }

    fn host(a: &str, i: &str) -> HostAddr {
        HostAddr {
            addr: a.parse().unwrap(),
            ifname: i.into(),
        }
    }

    #[test]
    fn host_veth_name_is_deterministic_short_and_per_attachment() {
        let a = host_veth_name("abc123", "eth0");
        assert_eq!(a, host_veth_name("abc123", "eth0"));
        assert_ne!(a, host_veth_name("abc123", "eth1"));
        assert_ne!(a, host_veth_name("abc124", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("ur"));
    }

    #[test]
    fn alias_round_trips_to_the_attachment() {
        let al = host_veth_alias("c-1", "eth0");
        assert_eq!(parse_alias(&al), Some(("c-1", "eth0")));
        assert_eq!(parse_alias("something else"), None);
    }

    #[test]
    fn veth_plan_routes_host_addresses_and_services_via_the_subnet_address() {
        let hosts = [
            host("192.168.9.1/24", "eth0"),
            host("10.10.20.1/24", "eth0"),
            host("10.244.0.1/24", "cni0"),
            host("127.0.0.1/8", "lo"),
        ];
        let p = plan(
            &conf(r#","extraCIDRs":["10.244.0.0/16"]"#),
            "c1",
            "eth0",
            &[pod("10.10.20.50/24")],
            &hosts,
            "eth0",
        )
        .unwrap();
        let nh: IpAddr = "10.10.20.1".parse().unwrap();
        assert_eq!(p.next_hops, vec![nh]);
        assert_eq!(
            p.pod_routes[0],
            PodRoute {
                dst: "10.10.20.1/32".parse().unwrap(),
                via: None
            }
        );
        let dsts: Vec<String> = p.pod_routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(
            dsts,
            [
                "10.10.20.1/32",
                "192.168.9.1/32",
                "10.244.0.1/32",
                "10.96.0.0/12",
                "10.244.0.0/16"
            ]
        );
        assert!(p.pod_routes[1..].iter().all(|r| r.via == Some(nh)));
        assert_eq!(
            p.host_routes,
            vec!["10.10.20.50/32".parse::<IpNet>().unwrap()]
        );
        assert_eq!(p.pod_dev, "ur0");
    }

    #[test]
    fn route_plan_uses_the_pod_interface_and_creates_nothing_on_the_host() {
        let p = plan(
            &conf(r#","mode":"route""#),
            "c1",
            "eth0",
            &[pod("10.10.30.50/24")],
            &[host("10.10.30.1/24", "br0")],
            "br0",
        )
        .unwrap();
        assert_eq!(p.pod_dev, "eth0");
        assert_eq!(p.pod_routes.len(), 1);
        assert_eq!(p.pod_routes[0].via, Some("10.10.30.1".parse().unwrap()));
        assert!(p.host_routes.is_empty());
    }

    #[test]
    fn ipv6_pods_get_ipv6_next_hops_and_routes() {
        let p = plan(
            &conf(r#","extraCIDRs":["fd96::/108"]"#),
            "c1",
            "eth0",
            &[pod("10.10.20.50/24"), pod("fd00:20::50/64")],
            &[
                host("10.10.20.1/24", "eth0"),
                host("fd00:20::1/64", "eth0"),
                host("fe80::1/64", "eth0"),
            ],
            "eth0",
        )
        .unwrap();
        assert_eq!(p.next_hops.len(), 2);
        assert!(p
            .pod_routes
            .iter()
            .any(|r| r.dst == "fd96::/108".parse::<IpNet>().unwrap()
                && r.via == Some("fd00:20::1".parse().unwrap())));
        assert_eq!(p.host_routes.len(), 2);
    }

    #[test]
    fn container_veth_named_like_cni_ifname_is_refused() {
        let e = plan(
            &conf(r#","containerInterface":"eth0""#),
            "c1",
            "eth0",
            &[pod("10.10.20.50/24")],
            &[host("10.10.20.1/24", "eth0")],
            "eth0",
        )
        .unwrap_err();
        assert_eq!(e.code(), 7);
    }

    #[test]
    fn no_prev_addresses_or_no_host_address_are_errors() {
        let c = conf("");
        assert_eq!(
            plan(&c, "c", "eth0", &[], &[], "eth0").unwrap_err().code(),
            7
        );
        assert_eq!(
            plan(
                &c,
                "c",
                "eth0",
                &[pod("10.1.1.5/24")],
                &[host("fd00::1/64", "eth0")],
                "eth0"
            )
            .unwrap_err()
            .code(),
            103
        );
    }
}
