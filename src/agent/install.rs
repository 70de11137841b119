//! From the speaker's best routes to the kernel: which routes the node installs, and when the
//! first full state may sweep what an earlier run left behind.
//!
//! Only routes learned from peers are installed; our own pod CIDRs and pod host routes are
//! local (the CNI plugin and the pod interfaces carry them). Learned routes go to the kernel as
//! soon as they arrive (gathered for 20 ms). What an earlier run left in the kernel is kept
//! until the sessions are back and have settled: a route that survived a restart keeps
//! forwarding until the peers had their chance to re-announce it, and only then is what is
//! stale swept (RFC 4724's forwarding promise, kept in the kernel).

use std::collections::HashMap;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::time::Instant;
use underroute_bgp::fsm::State;
use underroute_bgp::rib::{BestChange, PathSource};
use underroute_bgp::speaker::Speaker;

use crate::kernel::{DesiredRoutes, Handle, NextHop};
use crate::metrics::Health;

/// The main routing table's id.
const MAIN_TABLE: u32 = 254;

/// How long changes are gathered before one kernel update: many UPDATEs arrive back to back.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// Quiet time after every configured peer is Established before the first full state (public
/// so tests can check that routes adopted at a restart stay at least this long).
pub const SETTLE: Duration = Duration::from_secs(2);
/// Upper bound on waiting for peers before the first full state.
const MAX_INITIAL_WAIT: Duration = Duration::from_secs(30);

/// The main-table route for a best path, or `None` when the node must not install one.
pub fn kernel_route(change: &BestChange) -> Option<Vec<NextHop>> {
    let best = change.best.as_ref()?;
    if best.source == PathSource::Local {
        return None;
    }
    let next_hop = best.attrs.next_hop?;
    // A next hop that is the route's own destination would make the kernel recurse; never
    // install it (the import filters should already have refused such a route).
    if change.prefix.contains(&next_hop)
        && change.prefix.prefix_len() == change.prefix.max_prefix_len()
    {
        return None;
    }
    Some(vec![NextHop::via(next_hop)])
}

/// Follow the speaker's Loc-RIB and keep the kernel in step until `changes` closes.
///
/// `adopted` are the routes an earlier run left (from [`adopted_routes`]): kept until the
/// sessions have settled, unless the RIB speaks for the prefix first. `health` gets a heartbeat
/// every tick and turns ready once the first full state after settling reached the kernel.
pub async fn run(
    speaker: Speaker,
    kernel: Handle,
    mut adopted: HashMap<IpNet, Vec<NextHop>>,
    snapshot: Vec<BestChange>,
    mut changes: mpsc::UnboundedReceiver<Vec<BestChange>>,
    health: Health,
) {
    let mut desired: HashMap<IpNet, Vec<NextHop>> = HashMap::new();
    apply(&mut desired, &mut adopted, &snapshot);
    let started = Instant::now();
    let mut synced = false;
    let mut last_change = Instant::now();
    let mut dirty = !desired.is_empty();
    let mut tick = tokio::time::interval(DEBOUNCE);
    let mut pending_since: Option<Instant> = None;
    loop {
        tokio::select! {
            batch = changes.recv() => match batch {
                Some(batch) => {
                    apply(&mut desired, &mut adopted, &batch);
                    // The oldest change not yet in the kernel: what the lag metric measures.
                    pending_since.get_or_insert_with(Instant::now);
                    dirty = true;
                    last_change = Instant::now();
                }
                None => return,
            },
            _ = tick.tick() => {
                health.beat();
                if !synced && settled(&speaker, started, last_change).await {
                    synced = true;
                    if !adopted.is_empty() {
                        tracing::info!(stale = adopted.len(), "converged: sweeping routes left from an earlier run");
                        adopted.clear();
                    }
                    // The first full state after settling is what readiness waits for.
                    dirty = true;
                }
                if dirty {
                    push(&kernel, &desired, &adopted).await;
                    dirty = false;
                    if let Some(since) = pending_since.take() {
                        health.record_install_lag(since.elapsed());
                    }
                    // Even if the kernel refused some routes: the state was handed over, and
                    // the programmer's periodic resync retries what failed.
                    if synced {
                        health.set_ready();
                    }
                }
            }
        }
    }
}

/// Our gateway routes in the main table that an earlier run left: after a restart, the
/// evidence that forwarding state survived (the F bit of graceful restart may only be set then).
pub async fn adopted_routes(kernel: &Handle) -> HashMap<IpNet, Vec<NextHop>> {
    // The programmer reads the kernel on its own first tick; a resync makes sure that happened
    // before we ask what it owns.
    if kernel.resync().await.is_err() {
        return HashMap::new();
    }
    let Ok(owned) = kernel.routes().await else {
        return HashMap::new();
    };
    owned
        .into_iter()
        .filter(|(key, _)| key.table == MAIN_TABLE)
        .filter_map(|(key, spec)| {
            let hops: Vec<NextHop> = spec
                .hops
                .iter()
                .filter_map(|h| h.gateway)
                .map(NextHop::via)
                .collect();
            // Device routes are the CNI plugin's; the programmer keeps those itself.
            (hops.len() == spec.hops.len()).then_some((key.prefix, hops))
        })
        .collect()
}

fn apply(
    desired: &mut HashMap<IpNet, Vec<NextHop>>,
    adopted: &mut HashMap<IpNet, Vec<NextHop>>,
    batch: &[BestChange],
) {
    for change in batch {
        adopted.remove(&change.prefix);
        match kernel_route(change) {
            Some(hops) => desired.insert(change.prefix, hops),
            None => desired.remove(&change.prefix),
        };
    }
}

/// Every configured peer is Established and nothing changed for `SETTLE`, or we waited long
/// enough.
async fn settled(speaker: &Speaker, started: Instant, last_change: Instant) -> bool {
    if started.elapsed() >= MAX_INITIAL_WAIT {
        return true;
    }
    let Ok(peers) = speaker.peers().await else {
        return false;
    };
    peers.iter().all(|p| p.state == State::Established) && last_change.elapsed() >= SETTLE
}

async fn push(
    kernel: &Handle,
    desired: &HashMap<IpNet, Vec<NextHop>>,
    adopted: &HashMap<IpNet, Vec<NextHop>>,
) {
    let mut routes = DesiredRoutes::new();
    for (prefix, hops) in adopted.iter().chain(desired) {
        routes.insert(*prefix, hops.clone());
    }
    match kernel.set_routes(routes).await {
        Ok(_) => {
            if let Ok(snap) = kernel.snapshot().await {
                for f in &snap.failures {
                    tracing::warn!(failure = ?f, "route not installed: the next hop is not directly reachable or the kernel refused it");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "kernel update failed; the periodic resync retries"),
    }
}
