//! Underlay pods to host routes: the node advertises a /32 (/128) for every pod it hosts whose
//! address is outside the cluster pod CIDRs (macvlan, ipvlan, bridge+dhcp pods), and withdraws
//! it when the pod goes.
//!
//! Two sources, advertised together: the pod registry, a directory the CNI plugin writes
//! (works without Kubernetes and survives agent restarts), and in Kubernetes mode the Pods with
//! `spec.nodeName` = this node (host routes computed by `cluster::desired`). The registry is
//! polled: a pod that comes or goes is advertised or withdrawn within one interval; the
//! cluster's pods come as they change. A registry that cannot be read keeps the last known pods
//! advertised, because withdrawing every pod on a transient error would cut their traffic.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::watch;
use underroute_bgp::speaker::Speaker;
use underroute_bgp::wire::PathAttrs;

use crate::podregistry::{PodRecord, PodRegistry};

/// How often the registry is read.
pub const POLL: Duration = Duration::from_millis(500);

/// The host routes for `records`: each pod address outside `cluster_pod_cidrs`, as /32 or /128.
pub fn underlay_host_routes(records: &[PodRecord], cluster_pod_cidrs: &[IpNet]) -> BTreeSet<IpNet> {
    records
        .iter()
        .flat_map(|r| r.ips.iter())
        .map(|ip| IpNet::from(ip.addr()))
        .filter(|host| !cluster_pod_cidrs.iter().any(|c| c.contains(host)))
        .collect()
}

/// Keep the speaker's originated host routes equal to the registry's underlay pods plus
/// `cluster_pods` (the cluster's view; the last value stays when its sender is gone).
pub async fn run(
    speaker: Speaker,
    registry: PodRegistry,
    cluster_pod_cidrs: Vec<IpNet>,
    mut cluster_pods: watch::Receiver<BTreeSet<IpNet>>,
) {
    let mut advertised: BTreeSet<IpNet> = BTreeSet::new();
    let mut from_registry: BTreeSet<IpNet> = BTreeSet::new();
    let mut tick = tokio::time::interval(POLL);
    let mut cluster_open = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                match registry.list() {
                    Ok(records) => from_registry = underlay_host_routes(&records, &cluster_pod_cidrs),
                    Err(e) => {
                        tracing::warn!(dir = %registry.dir().display(), error = %e, "pod registry unreadable; keeping the pods advertised as they are");
                    }
                }
            }
            changed = cluster_pods.changed(), if cluster_open => {
                cluster_open = changed.is_ok();
            }
        }
        let mut wanted = from_registry.clone();
        wanted.extend(cluster_pods.borrow().iter().copied());
        let added: Vec<(IpNet, PathAttrs)> = wanted
            .difference(&advertised)
            .map(|p| (*p, PathAttrs::default()))
            .collect();
        let gone: Vec<IpNet> = advertised.difference(&wanted).copied().collect();
        for (prefix, _) in &added {
            tracing::info!(%prefix, "underlay pod: advertising its host route");
        }
        for prefix in &gone {
            tracing::info!(%prefix, "underlay pod gone: withdrawing its host route");
        }
        if !added.is_empty() && speaker.originate(added).await.is_err() {
            return;
        }
        if !gone.is_empty() && speaker.withdraw(gone).await.is_err() {
            return;
        }
        advertised = wanted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::config::Mode;

    fn record(ips: &[&str]) -> PodRecord {
        PodRecord {
            container_id: "c".into(),
            ifname: "eth0".into(),
            netns: "/var/run/netns/x".into(),
            ips: ips.iter().map(|s| s.parse().expect("literal")).collect(),
            mode: Mode::Veth,
            host_veth: None,
            created_unix: 0,
        }
    }

    #[test]
    fn only_addresses_outside_the_cluster_pod_cidrs_become_host_routes() {
        let cluster = vec!["10.233.64.0/18".parse().expect("literal")];
        let routes = underlay_host_routes(
            &[
                record(&["192.168.50.77/24", "2001:db8::7/64"]),
                record(&["10.233.64.5/24"]),
            ],
            &cluster,
        );
        let want: BTreeSet<IpNet> = ["192.168.50.77/32", "2001:db8::7/128"]
            .iter()
            .map(|s| s.parse().expect("literal"))
            .collect();
        assert_eq!(routes, want);
    }
}
