//! The node agent: joins the configuration, the cluster and the pod registry to the speaker, and
//! the speaker's best routes to the kernel.
//!
//! Standalone it runs from a config file alone; in Kubernetes mode (`run_kube`) it also
//! watches Nodes and this node's Pods (`cluster::kube`): every other node becomes a mesh peer,
//! annotations add peers and settings, and changes apply live (`apply`). Either way it
//! advertises the node's pod CIDRs and a host route for every underlay pod (`pods`), installs
//! learned routes into the kernel (main and per-address tables, `install`), and stops on
//! SIGTERM with Cease / Administrative Shutdown so peers withdraw at once (or, with
//! `bgp.sigterm = "graceful_restart"`, without a NOTIFICATION so graceful-restart peers keep our
//! routes across a restart). SIGKILL leaves the kernel routes in place for graceful restart.

pub mod apply;
pub mod install;
pub mod pods;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use underroute_bgp::speaker::{Shutdown, Speaker};

use crate::cluster::kube::{Snapshot, WatchStatus};
use crate::cluster::{self, ClusterState, NodeInfo};
use crate::config::{Config, SigtermAction};

/// How Kubernetes mode finds its cluster and itself.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// A kubeconfig file; without one, the in-cluster service account (or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (`node.name` of the file is used when this is empty).
    pub node_name: String,
    /// The config file's name, for errors found once the cluster filled in the node's values.
    pub file: String,
}

/// Run the agent standalone until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
    let me = NodeInfo {
        name: config.node.name.clone(),
        addresses: Vec::new(),
        pod_cidrs: Vec::new(),
        settings: cluster::NodeSettings::default(),
    };
    let desired = cluster::desired(&config, &me, &ClusterState::default());
    run_with(config, desired, None).await
}

/// Run the agent in Kubernetes mode until SIGTERM or SIGINT: wait for this node's Node object,
/// take the node's name, router id, pod CIDRs and annotations from it, then follow the
/// cluster.
pub async fn run_kube(mut config: Config, opts: KubeOptions) -> Result<()> {
    if !opts.node_name.is_empty() {
        config.node.name = opts.node_name.clone();
    }
    if config.node.name.is_empty() {
        bail!("Kubernetes mode needs this node's name: --node-name, NODE_NAME, or node.name in the file");
    }
    let client = cluster::kube::client(opts.kubeconfig.as_deref()).await?;
    let (mut snapshots, status) = cluster::kube::watch(client, config.node.name.clone());
    let first = loop {
        if let Some(s) = snapshots.borrow_and_update().clone() {
            break s;
        }
        snapshots
            .changed()
            .await
            .context("the Kubernetes watchers stopped")?;
    };
    if config.node.router_id.is_unspecified() {
        config.node.router_id = first
            .me
            .addresses
            .iter()
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .with_context(|| {
                format!(
                    "Node {} has no IPv4 InternalIP to use as BGP identifier; set node.router_id",
                    config.node.name
                )
            })?;
    }
    config.validate(&opts.file)?;
    tracing::info!(node = %config.node.name, router_id = %config.node.router_id, nodes = first.cluster.nodes.len(), pods = first.cluster.pods.len(), "Kubernetes: our Node and the cluster are known");
    let desired = cluster::desired(&config, &first.me, &first.cluster);
    run_with(config, desired, Some((snapshots, status))).await
}

async fn run_with(
    mut config: Config,
    desired: cluster::Desired,
    cluster: Option<(watch::Receiver<Option<Snapshot>>, WatchStatus)>,
) -> Result<()> {
    // Changes are judged against the file as written: `node.asn` is the default AS of every
    // node without an annotation, even when ours has one.
    let file_config = config.clone();
    // The speaker starts in the AS the cluster says (a Node annotation may override the file).
    config.node.asn = desired.asn;
    let kernel = crate::kernel::Programmer::start(crate::kernel::KernelConfig {
        route_protocol: config.kernel.route_protocol,
        per_address_tables: config.kernel.per_address_tables,
        ..crate::kernel::KernelConfig::default()
    })
    .context("starting the kernel programmer")?;
    // Routes of ours that outlived the previous run are the proof of a restart with forwarding
    // preserved: only then may the OPEN carry the Restart State and Forwarding State bits.
    let adopted = install::adopted_routes(&kernel).await;
    let mut speaker_config = config.speaker();
    if let Some(gr) = speaker_config.graceful_restart.as_mut() {
        gr.restarting = !adopted.is_empty();
        gr.forwarding_preserved = !adopted.is_empty();
    }
    if !adopted.is_empty() {
        tracing::info!(
            routes = adopted.len(),
            "restart: our kernel routes survived; graceful restart with forwarding preserved"
        );
    }
    let speaker = Speaker::start(speaker_config)
        .await
        .context("starting the BGP speaker")?;
    let mut applied = apply::Applied::default();
    applied.apply(&speaker, &desired).await?;
    let (pod_hosts_tx, pod_hosts) = watch::channel(desired.pod_hosts.clone());
    // The agent owns the registry directory; the CNI plugin only writes files into it.
    std::fs::create_dir_all(&config.registry.dir).with_context(|| {
        format!(
            "creating the pod registry {}",
            config.registry.dir.display()
        )
    })?;
    tokio::spawn(pods::run(
        speaker.clone(),
        crate::podregistry::PodRegistry::new(config.registry.dir.clone()),
        config.cluster.pod_cidrs.clone(),
        pod_hosts,
    ));
    let watch_status = cluster.as_ref().map(|(_, status)| status.clone());
    if let Some((snapshots, _)) = cluster {
        tokio::spawn(follow_cluster(
            speaker.clone(),
            file_config,
            applied,
            snapshots,
            pod_hosts_tx,
        ));
    }
    if let Some(dir) = config.api.socket.as_ref().and_then(|p| p.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::api::server::spawn(
        speaker.clone(),
        crate::api::server::ApiConfig {
            listen: vec![config.api.listen],
            socket: config.api.socket.clone(),
            allow_mutations: config.api.allow_mutations,
            allow_remote: config.api.allow_remote,
        },
    )
    .await
    .context("starting the API")?;
    let health = crate::metrics::Health::new();
    crate::metrics::spawn(
        config.metrics.listen,
        crate::metrics::Sources {
            speaker: speaker.clone(),
            kernel: kernel.clone(),
            health: health.clone(),
            cluster: watch_status,
        },
    )
    .await
    .context("starting the metrics server")?;
    let (snapshot, changes) = speaker.subscribe().await?;
    tokio::spawn(install::run(
        speaker.clone(),
        kernel.clone(),
        adopted,
        snapshot,
        changes,
        health,
    ));
    tracing::info!(node = %config.node.name, asn = config.node.asn, peers = desired.peers.len(), "agent running");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = sigterm.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let how = match config.bgp.sigterm {
        SigtermAction::Withdraw => {
            tracing::info!("stopping: withdrawing our routes (Cease / administrative shutdown)");
            Shutdown::Withdraw
        }
        SigtermAction::GracefulRestart => {
            tracing::info!("stopping for a restart: closing the sessions without NOTIFICATION so graceful-restart peers keep our routes");
            Shutdown::ForRestart
        }
    };
    tokio::time::timeout(Duration::from_secs(5), speaker.shutdown(how))
        .await
        .context("shutdown timed out")??;
    // Our routes stay in the kernel: with the sessions closed by Cease the peers' routes are
    // gone from the RIB, and the next start (or the operator) decides what the kernel keeps.
    let _ = kernel.shutdown().await;
    Ok(())
}

/// Applies every cluster change to the speaker. A periodic pass retries what failed to apply
/// (a peer whose MD5 key could not be set, say) without waiting for the next change.
async fn follow_cluster(
    speaker: Speaker,
    config: Config,
    mut applied: apply::Applied,
    mut snapshots: watch::Receiver<Option<Snapshot>>,
    pod_hosts: watch::Sender<BTreeSet<ipnet::IpNet>>,
) {
    let mut retry = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    tracing::error!("the Kubernetes watchers stopped; keeping the last state");
                    return;
                }
            }
            _ = retry.tick() => {}
        }
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let want = cluster::desired(&config, &snapshot.me, &snapshot.cluster);
        if applied.apply(&speaker, &want).await.is_err() {
            return;
        }
        pod_hosts.send_if_modified(|old| {
            if *old == want.pod_hosts {
                false
            } else {
                *old = want.pod_hosts.clone();
                true
            }
        });
    }
}
