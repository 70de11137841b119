//! The node agent: joins the configuration (and, next, the cluster and the pod registry) to the
//! speaker, and the speaker's best routes to the kernel.
//!
//! Today it runs standalone from a config file: it starts the speaker, peers with the
//! configured peers (mesh members accept only pod-network prefixes), advertises the node's pod
//! CIDRs and a host route for every underlay pod in the pod registry (`pods`), installs learned routes into the kernel (main and per-address tables, `install`), and
//! stops on SIGTERM with Cease / Administrative Shutdown so peers withdraw at once (or, with
//! `bgp.sigterm = "graceful_restart"`, without a NOTIFICATION so graceful-restart peers keep our
//! routes across a restart). SIGKILL leaves the kernel routes in place for graceful restart.

pub mod install;
pub mod pods;

use std::time::Duration;

use anyhow::{Context, Result};
use underroute_bgp::speaker::{Shutdown, Speaker};
use underroute_bgp::wire::PathAttrs;

use crate::config::{Config, SigtermAction};

/// Run the agent until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<()> {
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
    for peer in config.peer_configs() {
        let address = peer.address;
        speaker
            .add_peer(peer)
            .await
            .with_context(|| format!("adding peer {address}"))?;
    }
    let pod_cidrs = config
        .node
        .pod_cidrs
        .iter()
        .map(|p| (*p, PathAttrs::default()))
        .collect();
    speaker.originate(pod_cidrs).await?;
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
    ));
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
    tracing::info!(node = %config.node.name, asn = config.node.asn, peers = config.peers.len(), "agent running");

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
