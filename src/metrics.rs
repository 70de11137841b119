//! Prometheus metrics and the health probes: `/metrics`, `/healthz`, `/readyz` over plain HTTP.
//!
//! Every scrape asks the speaker and the kernel programmer for a fresh snapshot and renders it,
//! rather than mirroring counters into long-lived metric objects: the snapshots are already the
//! source of truth (the API reads the same ones), so the two views can never disagree, and a
//! peer removed from the configuration disappears from the output instead of lingering.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use underroute_bgp::fsm::State;
use underroute_bgp::speaker::{PeerSnapshot, Speaker};

use crate::cluster::kube::{WatchCounts, WatchStatus};
use crate::kernel::{Handle, Snapshot};

/// How long a probe or scrape waits for the speaker or the kernel programmer: an actor that
/// does not answer within this is stuck, and `/healthz` must say so rather than hang.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// The install loop ticks every few milliseconds; silence this long means it is wedged.
const HEARTBEAT_STALE: Duration = Duration::from_secs(15);

/// Errors starting the metrics server.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("binding the metrics listener on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Shared between the install loop (which knows when the first full state reached the kernel)
/// and the probes. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<HealthInner>,
}

struct HealthInner {
    epoch: Instant,
    ready: AtomicBool,
    /// Milliseconds since `epoch` at the install loop's last tick.
    heartbeat_ms: AtomicU64,
    /// Microseconds from the first best-route change of the last kernel update to its end.
    install_lag_us: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    /// Not ready, heartbeat now.
    pub fn new() -> Self {
        Health {
            inner: Arc::new(HealthInner {
                epoch: Instant::now(),
                ready: AtomicBool::new(false),
                heartbeat_ms: AtomicU64::new(0),
                install_lag_us: AtomicU64::new(0),
            }),
        }
    }

    /// The initial convergence is done: the first full state was pushed to the kernel.
    pub fn set_ready(&self) {
        self.inner.ready.store(true, Ordering::Relaxed);
    }

    /// Whether [`Health::set_ready`] was called.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Relaxed)
    }

    /// Called by the install loop on every tick.
    pub fn beat(&self) {
        let ms = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Called by the install loop after each kernel update: how long the oldest best-route
    /// change it carried waited to reach the kernel.
    pub fn record_install_lag(&self, lag: Duration) {
        let us = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
        self.inner.install_lag_us.store(us, Ordering::Relaxed);
    }

    fn install_lag(&self) -> Duration {
        Duration::from_micros(self.inner.install_lag_us.load(Ordering::Relaxed))
    }

    fn since_beat(&self) -> Duration {
        let last = Duration::from_millis(self.inner.heartbeat_ms.load(Ordering::Relaxed));
        self.inner.epoch.elapsed().saturating_sub(last)
    }
}

/// What the server reads from.
#[derive(Clone)]
pub struct Sources {
    /// The BGP speaker.
    pub speaker: Speaker,
    /// The kernel programmer.
    pub kernel: Handle,
    /// Readiness and the install loop's heartbeat.
    pub health: Health,
    /// The Kubernetes watchers (Kubernetes mode only).
    pub cluster: Option<WatchStatus>,
}

/// Bind `addr` and serve the endpoints in the background.
pub async fn spawn(addr: SocketAddr, sources: Sources) -> Result<SocketAddr, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let sources = sources.clone();
                    async move { Ok::<_, Infallible>(route(&sources, req.uri().path()).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics: connection ended with an error");
                }
            });
        }
    });
    tracing::info!(listen = %local, "metrics and health probes listening");
    Ok(local)
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn route(sources: &Sources, path: &str) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path {
        "/metrics" => match gather(sources).await {
            Ok(body) => reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
            ),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        "/healthz" => match alive(sources).await {
            Ok(()) => reply(StatusCode::OK, TEXT, "ok\n".into()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        "/readyz" => {
            if sources.health.is_ready() {
                reply(StatusCode::OK, TEXT, "ready\n".into())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    "initial convergence not done: waiting for the peers and the first kernel sync\n"
                        .into(),
                )
            }
        }
        _ => reply(StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
    }
}

/// Alive: the speaker and the kernel programmer answer, and the install loop ticks.
async fn alive(sources: &Sources) -> Result<(), String> {
    peers(&sources.speaker).await?;
    kernel(&sources.kernel).await?;
    let quiet = sources.health.since_beat();
    if quiet > HEARTBEAT_STALE {
        return Err(format!("the install loop has not ticked for {quiet:?}"));
    }
    Ok(())
}

async fn peers(speaker: &Speaker) -> Result<Vec<PeerSnapshot>, String> {
    match tokio::time::timeout(ANSWER_TIMEOUT, speaker.peers()).await {
        Ok(Ok(peers)) => Ok(peers),
        Ok(Err(e)) => Err(format!("the speaker: {e}")),
        Err(_) => Err("the speaker does not answer".into()),
    }
}

async fn kernel(kernel: &Handle) -> Result<Snapshot, String> {
    match tokio::time::timeout(ANSWER_TIMEOUT, kernel.snapshot()).await {
        Ok(Ok(snapshot)) => Ok(snapshot),
        Ok(Err(e)) => Err(format!("the kernel programmer: {e}")),
        Err(_) => Err("the kernel programmer does not answer".into()),
    }
}

async fn gather(sources: &Sources) -> Result<String, String> {
    let peers = peers(&sources.speaker).await?;
    let kernel = kernel(&sources.kernel).await?;
    let loc_rib = match tokio::time::timeout(ANSWER_TIMEOUT, sources.speaker.loc_rib_len()).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(format!("the speaker: {e}")),
        Err(_) => return Err("the speaker does not answer".into()),
    };
    render(
        &peers,
        loc_rib,
        &kernel,
        sources.health.is_ready(),
        sources.health.install_lag(),
        sources.cluster.as_ref().map(WatchStatus::counts),
    )
}

type Labels = Vec<(String, String)>;

fn state_name(state: State) -> &'static str {
    match state {
        State::Idle => "idle",
        State::Connect => "connect",
        State::Active => "active",
        State::OpenSent => "opensent",
        State::OpenConfirm => "openconfirm",
        State::Established => "established",
    }
}

const STATES: [State; 6] = [
    State::Idle,
    State::Connect,
    State::Active,
    State::OpenSent,
    State::OpenConfirm,
    State::Established,
];

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g = Gauge::<i64>::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The Prometheus text for one set of snapshots.
fn render(
    peers: &[PeerSnapshot],
    loc_rib: usize,
    kernel: &Snapshot,
    ready: bool,
    install_lag: Duration,
    cluster: Option<WatchCounts>,
) -> Result<String, String> {
    let mut registry = Registry::with_prefix("underroute");

    let up = Family::<Labels, Gauge>::default();
    let state = Family::<Labels, Gauge>::default();
    let uptime = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    let received = Family::<Labels, Gauge>::default();
    let accepted = Family::<Labels, Gauge>::default();
    let rejected = Family::<Labels, Gauge>::default();
    let advertised = Family::<Labels, Gauge>::default();
    let stale = Family::<Labels, Gauge>::default();
    let sessions = Family::<Labels, Counter>::default();
    let msg_in = Family::<Labels, Counter>::default();
    let msg_out = Family::<Labels, Counter>::default();
    for p in peers {
        let peer = vec![
            ("peer".to_string(), p.config.address.to_string()),
            ("peer_asn".to_string(), p.config.asn.to_string()),
        ];
        up.get_or_create(&peer)
            .set(i64::from(p.state == State::Established));
        for s in STATES {
            let mut l = peer.clone();
            l.push(("state".into(), state_name(s).into()));
            state.get_or_create(&l).set(i64::from(p.state == s));
        }
        uptime
            .get_or_create(&peer)
            .set(p.uptime.unwrap_or_default().as_secs_f64());
        received.get_or_create(&peer).set(count(p.received));
        accepted.get_or_create(&peer).set(count(p.accepted));
        // Adj-RIB-In minus what passed import policy and loop checks: what policy refused.
        rejected
            .get_or_create(&peer)
            .set(count(p.received.saturating_sub(p.accepted)));
        advertised.get_or_create(&peer).set(count(p.advertised));
        stale.get_or_create(&peer).set(i64::from(p.stale));
        sessions.get_or_create(&peer).inc_by(p.established_count);
        for (family, counts) in [
            (&msg_in, &p.received_messages),
            (&msg_out, &p.sent_messages),
        ] {
            for (kind, n) in [
                ("open", counts.open),
                ("update", counts.update),
                ("notification", counts.notification),
                ("keepalive", counts.keepalive),
                ("route_refresh", counts.route_refresh),
            ] {
                let mut l = peer.clone();
                l.push(("type".into(), kind.into()));
                family.get_or_create(&l).inc_by(n);
            }
        }
    }
    registry.register(
        "bgp_peer_up",
        "1 when the session with the peer is Established",
        up,
    );
    registry.register(
        "bgp_peer_state",
        "BGP FSM state of the session: 1 for the current state",
        state,
    );
    registry.register(
        "bgp_peer_uptime_seconds",
        "How long the session has been Established (0 when down)",
        uptime,
    );
    registry.register(
        "bgp_peer_prefixes_received",
        "Prefixes received from the peer (Adj-RIB-In)",
        received,
    );
    registry.register(
        "bgp_peer_prefixes_accepted",
        "Prefixes from the peer that passed import policy and loop checks",
        accepted,
    );
    registry.register(
        "bgp_peer_prefixes_rejected",
        "Prefixes from the peer refused by import policy or loop checks (received - accepted)",
        rejected,
    );
    registry.register(
        "bgp_peer_prefixes_advertised",
        "Prefixes advertised to the peer (Adj-RIB-Out)",
        advertised,
    );
    registry.register(
        "bgp_peer_graceful_restart_stale",
        "1 while the peer's routes are held stale for graceful restart",
        stale,
    );
    registry.register(
        "bgp_peer_sessions_established",
        "Sessions with the peer established since the agent started",
        sessions,
    );
    registry.register(
        "bgp_peer_messages_received",
        "BGP messages received from the peer, by type",
        msg_in,
    );
    registry.register(
        "bgp_peer_messages_sent",
        "BGP messages sent to the peer, by type",
        msg_out,
    );
    gauge(
        &mut registry,
        "bgp_loc_rib_prefixes",
        "Prefixes in the Loc-RIB (best paths)",
        count(loc_rib),
    );

    gauge(
        &mut registry,
        "kernel_routes_owned",
        "Routes of ours in the kernel, all tables",
        count(kernel.owned_routes),
    );
    gauge(
        &mut registry,
        "kernel_rules_owned",
        "Policy rules of ours in the kernel",
        count(kernel.rules.len()),
    );
    gauge(
        &mut registry,
        "kernel_route_failures",
        "Routes the kernel refused in the last reconcile",
        count(kernel.failures.len()),
    );
    gauge(
        &mut registry,
        "kernel_route_conflicts",
        "Wanted routes held by another protocol's route (left alone)",
        count(kernel.conflicts.len()),
    );
    counter(
        &mut registry,
        "kernel_routes_installed",
        "Routes created or replaced",
        kernel.installed,
    );
    counter(
        &mut registry,
        "kernel_routes_removed",
        "Routes deleted",
        kernel.removed,
    );
    counter(
        &mut registry,
        "kernel_repaired",
        "Routes and rules of ours someone else removed and we put back",
        kernel.repaired,
    );
    counter(
        &mut registry,
        "kernel_reconciles",
        "Kernel reconciles run",
        kernel.reconciles,
    );
    let duration = Gauge::<f64, AtomicU64>::default();
    duration.set(kernel.last_reconcile.as_secs_f64());
    registry.register(
        "kernel_last_reconcile_duration_seconds",
        "Duration of the last kernel reconcile",
        duration,
    );
    let lag = Gauge::<f64, AtomicU64>::default();
    lag.set(install_lag.as_secs_f64());
    registry.register(
        "kernel_install_lag_seconds",
        "From a best-route change to the end of the kernel update that carried it (the last update)",
        lag,
    );
    gauge(
        &mut registry,
        "ready",
        "1 once the initial convergence is done (what /readyz reports)",
        i64::from(ready),
    );
    if let Some(c) = cluster {
        let up = Family::<Labels, Gauge>::default();
        for (resource, v) in [("nodes", c.nodes_up), ("pods", c.pods_up)] {
            up.get_or_create(&vec![("resource".to_string(), resource.to_string())])
                .set(i64::from(v));
        }
        registry.register(
            "kubernetes_watch_up",
            "1 while the watch is connected; 0 from a failure until it is back (routing keeps the last state)",
            up,
        );
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut registry,
            "kubernetes_nodes",
            "Nodes the agent knows",
            n(c.nodes),
        );
        gauge(
            &mut registry,
            "kubernetes_pods",
            "Pods on this node the agent knows",
            n(c.pods),
        );
        gauge(
            &mut registry,
            "kubernetes_annotation_errors",
            "Node annotations refused (their previous values stay in force)",
            n(c.annotation_errors),
        );
    }

    let mut out = String::new();
    encode(&mut out, &registry).map_err(|e| format!("encoding the metrics: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_agent_renders_every_node_wide_family() {
        let text =
            render(&[], 0, &Snapshot::default(), false, Duration::ZERO, None).expect("renders");
        for name in [
            "underroute_bgp_loc_rib_prefixes 0",
            "underroute_kernel_routes_owned 0",
            "underroute_kernel_rules_owned 0",
            "underroute_kernel_repaired_total 0",
            "underroute_kernel_last_reconcile_duration_seconds 0.0",
            "underroute_ready 0",
            "underroute_kernel_install_lag_seconds 0.0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics terminator");
        assert!(
            !text.contains("kubernetes"),
            "standalone: no watcher metrics"
        );
    }

    #[test]
    fn kubernetes_mode_adds_the_watchers_state() {
        let counts = WatchCounts {
            nodes: 5,
            pods: 2,
            nodes_up: true,
            pods_up: false,
            annotation_errors: 1,
        };
        let text = render(
            &[],
            0,
            &Snapshot::default(),
            true,
            Duration::ZERO,
            Some(counts),
        )
        .expect("renders");
        for line in [
            "underroute_kubernetes_watch_up{resource=\"nodes\"} 1",
            "underroute_kubernetes_watch_up{resource=\"pods\"} 0",
            "underroute_kubernetes_nodes 5",
            "underroute_kubernetes_pods 2",
            "underroute_kubernetes_annotation_errors 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
