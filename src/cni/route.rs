//! Route mode: for pods bridged onto the underlay (bridge+dhcp), which can reach the host's
//! address on their own interface. The pod gets `CIDR via HOST_IP dev IFNAME` for every via-host
//! range; the `via` matters: an on-link route would make the pod ARP for the ClusterIP itself,
//! which nobody answers for ports (kube-proxy's DNAT needs the packet to be routed to the host).
//! Nothing is created on the host.

use ipnet::IpNet;

use super::config::NetConf;
use super::error::CniError;
use super::host;
use super::netlink::Netlink;
use super::plan::Plan;

/// Adds the pod routes; on error, removes the ones this call added.
pub fn add(pod_nl: &Netlink, plan: &Plan) -> Result<(), CniError> {
    let dev = pod_nl.link(&plan.pod_dev)?.ok_or_else(|| {
        CniError::ContainerUnknown(format!("{} missing in the pod", plan.pod_dev))
    })?;
    let mut added = Vec::new();
    for r in &plan.pod_routes {
        if let Err(e) = pod_nl.add_route(r.dst, r.via, dev.index, 0) {
            for (dst, via) in added.into_iter().rev() {
                let _ = pod_nl.del_route(dst, via, dev.index);
            }
            return Err(e);
        }
        added.push((r.dst, r.via));
    }
    Ok(())
}

/// Removes the plan's pod routes (rollback of a later failure in ADD); absent ones are fine.
pub fn remove_planned(pod_nl: &Netlink, plan: &Plan) -> Result<(), CniError> {
    let Some(dev) = pod_nl.link(&plan.pod_dev)? else {
        return Ok(());
    };
    for r in plan.pod_routes.iter().rev() {
        pod_nl.del_route(r.dst, r.via, dev.index)?;
    }
    Ok(())
}

/// Removes, from the pod, the routes through `dev` to any via-host range of the config. Needs
/// neither `prevResult` nor the host: the ranges come from the config, the next hop from the
/// kernel.
pub fn del(pod_nl: &Netlink, dev: &str, conf: &NetConf) -> Result<(), CniError> {
    let Some(link) = pod_nl.link(dev)? else {
        return Ok(());
    };
    let want: Vec<IpNet> = conf.via_host_cidrs();
    for r in pod_nl.routes()? {
        if r.oif == Some(link.index) && want.contains(&r.dst) && r.via.is_some() {
            pod_nl.del_route(r.dst, r.via, link.index)?;
        }
    }
    Ok(())
}

/// What CHECK finds missing in route mode.
pub fn check(pod_nl: &Netlink, plan: &Plan) -> Result<Vec<String>, CniError> {
    let Some(dev) = pod_nl.link(&plan.pod_dev)? else {
        return Ok(vec![format!("pod interface {}", plan.pod_dev)]);
    };
    let mut missing = Vec::new();
    for r in &plan.pod_routes {
        if !host::missing_routes(pod_nl, &[r.dst], r.via, dev.index, None)?.is_empty() {
            missing.push(format!("pod route {} dev {}", r.dst, dev.name));
        }
    }
    Ok(missing)
}
