//! The tokio layer of one peer: a supervisor task that owns the peer's connections, and a task
//! per TCP connection that runs the sans-IO [`Fsm`] over the socket.
//!
//! ```text
//!            core (speaker.rs, owns the RIB)
//!              ▲ Established/Down      │ PeerCmd (Incoming socket, Advertise, Stop)
//!              │ (ordered before the   ▼
//!              │  session's updates) supervisor ── connect / retry / collision (RFC 4271 6.8)
//!              │                       │ ConnCmd           ▲ ConnEvent (state, OPEN seen, up, down)
//!  RouteUpdate │                       ▼                   │
//!              └──────────────── connection task ── Fsm, timers, encode
//!                                  ▲ frames              │ bytes
//!                               reader task          writer task
//! ```
//! Reading and writing run in their own tasks so that two speakers sending each other full
//! tables at once cannot deadlock on full TCP buffers. A panic anywhere in a connection's tasks
//! ends that connection only: the supervisor sees the task end and treats it as a TCP failure.
//! This module never touches the RIB.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tracing::{debug, info, warn, Instrument};

use crate::fsm::{Action, DownReason, Event, Fsm, FsmConfig, Keep, Negotiated, State, Timer};
use crate::rib::OutChange;
use crate::socket::{self, ConnectOptions};
use crate::types::{Family, RouterId};
use crate::wire::{
    self, error::cease, Message, NotificationError, RouteUpdate, SessionContext, Update,
};

/// Message counters of one peer, shared with snapshots (gobgp's "Message statistics").
#[derive(Debug, Default)]
pub struct MessageCounters {
    /// OPEN, UPDATE, NOTIFICATION, KEEPALIVE, ROUTE-REFRESH, indexed by type code - 1.
    by_type: [AtomicU64; 5],
    /// UPDATEs that carried withdrawals.
    withdraw_updates: AtomicU64,
    /// Withdrawn prefixes.
    withdraw_prefixes: AtomicU64,
}

/// A copy of [`MessageCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCount {
    /// OPEN messages.
    pub open: u64,
    /// UPDATE messages.
    pub update: u64,
    /// NOTIFICATION messages.
    pub notification: u64,
    /// KEEPALIVE messages.
    pub keepalive: u64,
    /// ROUTE-REFRESH messages.
    pub route_refresh: u64,
    /// UPDATEs that carried withdrawals.
    pub withdraw_update: u64,
    /// Withdrawn prefixes.
    pub withdraw_prefix: u64,
}

impl MessageCount {
    /// All messages.
    pub fn total(&self) -> u64 {
        self.open + self.update + self.notification + self.keepalive + self.route_refresh
    }
}

impl MessageCounters {
    fn count(&self, kind: u8) {
        if let Some(c) = self.by_type.get(usize::from(kind).wrapping_sub(1)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_withdraws(&self, prefixes: usize) {
        if prefixes > 0 {
            self.withdraw_updates.fetch_add(1, Ordering::Relaxed);
            self.withdraw_prefixes
                .fetch_add(prefixes as u64, Ordering::Relaxed);
        }
    }

    /// Read the counters.
    pub fn snapshot(&self) -> MessageCount {
        let get = |i: usize| self.by_type[i].load(Ordering::Relaxed);
        MessageCount {
            open: get(0),
            update: get(1),
            notification: get(2),
            keepalive: get(3),
            route_refresh: get(4),
            withdraw_update: self.withdraw_updates.load(Ordering::Relaxed),
            withdraw_prefix: self.withdraw_prefixes.load(Ordering::Relaxed),
        }
    }
}

/// What the rest of the speaker can see of a peer's sessions without asking its tasks.
#[derive(Debug)]
pub struct PeerStatus {
    /// Messages received.
    pub received: MessageCounters,
    /// Messages sent.
    pub sent: MessageCounters,
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Clone)]
struct StatusInner {
    state: State,
    admin_down: bool,
    established_at: Option<(Instant, SystemTime)>,
    down_at: Option<SystemTime>,
    established_count: u64,
    last_error: Option<String>,
}

/// A copy of [`PeerStatus`]'s mutable part.
#[derive(Debug, Clone)]
pub struct StatusSnapshot {
    /// The most advanced state among the peer's connections.
    pub state: State,
    /// Disabled by the operator.
    pub admin_down: bool,
    /// When the current session came up (monotonic, wall clock).
    pub established_at: Option<(Instant, SystemTime)>,
    /// When the last session went down.
    pub down_at: Option<SystemTime>,
    /// How many times a session reached Established.
    pub established_count: u64,
    /// Why the last session ended or the last attempt failed.
    pub last_error: Option<String>,
}

impl PeerStatus {
    pub(crate) fn new() -> Self {
        PeerStatus {
            received: MessageCounters::default(),
            sent: MessageCounters::default(),
            inner: Mutex::new(StatusInner {
                state: State::Idle,
                admin_down: false,
                established_at: None,
                down_at: None,
                established_count: 0,
                last_error: None,
            }),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut StatusInner) -> R) -> R {
        // A poisoned lock only means another task panicked mid-update of plain data.
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Read the status.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.with(|s| StatusSnapshot {
            state: s.state,
            admin_down: s.admin_down,
            established_at: s.established_at,
            down_at: s.down_at,
            established_count: s.established_count,
            last_error: s.last_error.clone(),
        })
    }
}

/// Per-session settings the supervisor needs (built by the core from the peer's config).
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    pub address: IpAddr,
    pub port: u16,
    pub fsm: FsmConfig,
    pub connect: ConnectOptions,
    pub connect_retry: Duration,
}

/// Commands from the core to a peer's supervisor.
#[derive(Debug)]
pub(crate) enum PeerCmd {
    /// The listener accepted a connection from this peer.
    Incoming(TcpStream),
    /// Changes for the peer's Adj-RIB-Out; `end_of_rib` follows them when set.
    Advertise {
        changes: Vec<OutChange>,
        end_of_rib: Vec<Family>,
    },
    /// Stop all sessions. With a notification, send it first (Cease); without, just close
    /// the TCP connections (what a crash looks like, so peers keep our routes under GR).
    Stop {
        notification: Option<NotificationError>,
        disable: bool,
    },
    /// Start (again) after a Stop with `disable`.
    Enable,
    /// Ask the peer to resend everything (ROUTE-REFRESH, RFC 2918).
    RefreshIn,
}

/// Events from a peer's tasks to the core, in session order.
#[derive(Debug)]
pub(crate) enum CoreEvent {
    Established {
        peer: IpAddr,
        epoch: u64,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
    },
    Update {
        peer: IpAddr,
        epoch: u64,
        update: RouteUpdate,
    },
    RouteRefresh {
        peer: IpAddr,
        epoch: u64,
        family: Option<Family>,
    },
    Down {
        peer: IpAddr,
        epoch: u64,
        reason: DownReason,
    },
}

/// Spawn a peer's supervisor. It runs until its command channel closes.
pub(crate) fn spawn_peer(
    settings: SessionSettings,
    status: Arc<PeerStatus>,
    core: mpsc::Sender<CoreEvent>,
    epochs: Arc<AtomicU64>,
) -> mpsc::Sender<PeerCmd> {
    let (tx, rx) = mpsc::channel(1024);
    let span = tracing::info_span!("peer", peer = %settings.address);
    let sup = Supervisor {
        settings,
        status,
        core,
        epochs,
        conns: HashMap::new(),
        next_conn: 0,
        active: None,
        active_peer_gr: false,
        connecting: None,
        next_connect: Some(Instant::now()),
        enabled: true,
        failures: 0,
    };
    tokio::spawn(sup.run(rx).instrument(span));
    tx
}

/// The connections a supervisor tracks.
struct ConnHandle {
    outgoing: bool,
    state: State,
    remote_id: Option<RouterId>,
    tx: mpsc::UnboundedSender<ConnCmd>,
    epoch: u64,
}

enum ConnCmd {
    Advertise {
        changes: Vec<OutChange>,
        end_of_rib: Vec<Family>,
    },
    Close(Option<NotificationError>),
    RefreshIn,
}

enum ConnEvent {
    State(u64, State),
    OpenReceived(u64, RouterId),
    /// The connection wants to become the session; the reply says whether it may.
    Established(u64, Box<Negotiated>, SocketAddr, oneshot::Sender<bool>),
    Down(u64, DownReason),
    /// The connection's tasks ended (normally or by panic).
    Ended(u64),
    Connected(std::io::Result<TcpStream>),
}

struct Supervisor {
    settings: SessionSettings,
    status: Arc<PeerStatus>,
    core: mpsc::Sender<CoreEvent>,
    epochs: Arc<AtomicU64>,
    conns: HashMap<u64, ConnHandle>,
    next_conn: u64,
    /// The connection that is the peer's session (Established).
    active: Option<u64>,
    /// The peer of the active session advertised graceful restart.
    active_peer_gr: bool,
    connecting: Option<tokio::task::JoinHandle<()>>,
    next_connect: Option<Instant>,
    enabled: bool,
    failures: u32,
}

impl Supervisor {
    async fn run(mut self, mut cmds: mpsc::Receiver<PeerCmd>) {
        let (ev_tx, mut events) = mpsc::unbounded_channel();
        loop {
            self.publish_state();
            let wake = self
                .next_connect
                .filter(|_| self.wants_to_connect())
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.command(cmd, &ev_tx),
                    None => break,
                },
                Some(ev) = events.recv() => self.event(ev, &ev_tx).await,
                _ = sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {
                    self.next_connect = None;
                    self.start_connect(&ev_tx);
                }
            }
        }
        for conn in self.conns.values() {
            let _ = conn.tx.send(ConnCmd::Close(Some(NotificationError::new(
                wire::error::code::CEASE,
                cease::PEER_DECONFIGURED,
            ))));
        }
        if let Some(c) = self.connecting.take() {
            c.abort();
        }
    }

    fn wants_to_connect(&self) -> bool {
        self.enabled
            && !self.settings.fsm.passive
            && self.connecting.is_none()
            && !self.conns.values().any(|c| c.outgoing)
            && self.active.is_none()
    }

    fn command(&mut self, cmd: PeerCmd, ev_tx: &mpsc::UnboundedSender<ConnEvent>) {
        match cmd {
            PeerCmd::Incoming(stream) => {
                if !self.enabled {
                    debug!("disabled: refusing incoming connection");
                    return;
                }
                if let Some(active) = self.active.and_then(|id| self.conns.get(&id)) {
                    // RFC 4271 6.8: a connection colliding with an Established session loses...
                    // unless the peer is restarting gracefully: RFC 4724 4.2 says a new
                    // connection from a GR-capable peer means the old session is gone.
                    if !self.active_peer_gr {
                        debug!("incoming connection while established: rejected");
                        reject_with_cease(stream);
                        return;
                    }
                    info!("peer reconnected while established: treating as a graceful restart");
                    let _ = active.tx.send(ConnCmd::Close(None));
                }
                self.spawn_conn(stream, false, ev_tx);
            }
            PeerCmd::Advertise {
                changes,
                end_of_rib,
            } => {
                if let Some(conn) = self.active.and_then(|id| self.conns.get(&id)) {
                    let _ = conn.tx.send(ConnCmd::Advertise {
                        changes,
                        end_of_rib,
                    });
                }
            }
            PeerCmd::Stop {
                notification,
                disable,
            } => {
                if disable {
                    self.enabled = false;
                    self.status.with(|s| s.admin_down = true);
                }
                if let Some(c) = self.connecting.take() {
                    c.abort();
                }
                for conn in self.conns.values() {
                    let _ = conn.tx.send(ConnCmd::Close(notification.clone()));
                }
                self.next_connect = Some(Instant::now() + Duration::from_millis(500));
            }
            PeerCmd::Enable => {
                self.enabled = true;
                self.failures = 0;
                self.status.with(|s| s.admin_down = false);
                self.next_connect = Some(Instant::now());
            }
            PeerCmd::RefreshIn => {
                if let Some(conn) = self.active.and_then(|id| self.conns.get(&id)) {
                    let _ = conn.tx.send(ConnCmd::RefreshIn);
                }
            }
        }
    }

    async fn event(&mut self, ev: ConnEvent, ev_tx: &mpsc::UnboundedSender<ConnEvent>) {
        match ev {
            ConnEvent::Connected(result) => {
                self.connecting = None;
                match result {
                    Ok(stream) => self.spawn_conn(stream, true, ev_tx),
                    Err(e) => {
                        debug!(error = %e, "connect failed");
                        self.status
                            .with(|s| s.last_error = Some(format!("connect: {e}")));
                        self.schedule_reconnect();
                    }
                }
            }
            ConnEvent::State(id, state) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.state = state;
                }
            }
            ConnEvent::OpenReceived(id, remote) => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.remote_id = Some(remote);
                }
                self.resolve_collision(id);
            }
            ConnEvent::Established(id, negotiated, local, reply) => {
                let accept = self.enabled && self.active.is_none() && self.conns.contains_key(&id);
                if accept {
                    // Close any other connection still negotiating: this one won.
                    for (other, conn) in &self.conns {
                        if *other != id {
                            let _ = conn.tx.send(ConnCmd::Close(Some(collision_cease())));
                        }
                    }
                    self.active = Some(id);
                    self.active_peer_gr = negotiated.peer_graceful_restart.is_some();
                    self.failures = 0;
                    let epoch = self.conns.get(&id).map(|c| c.epoch).unwrap_or_default();
                    self.status.with(|s| {
                        s.established_at = Some((Instant::now(), SystemTime::now()));
                        s.established_count += 1;
                    });
                    info!(
                        peer_as = negotiated.peer_asn.0,
                        hold = negotiated.hold_time,
                        "session established"
                    );
                    // The core must see Established before any UPDATE of this session, so
                    // answer the connection only after the event is queued.
                    let ev = CoreEvent::Established {
                        peer: self.settings.address,
                        epoch,
                        negotiated,
                        local,
                    };
                    if self.core.send(ev).await.is_err() {
                        return;
                    }
                }
                let _ = reply.send(accept);
                if !accept {
                    if let Some(c) = self.conns.get(&id) {
                        let _ = c.tx.send(ConnCmd::Close(Some(collision_cease())));
                    }
                }
            }
            ConnEvent::Down(id, reason) => {
                self.status
                    .with(|s| s.last_error = Some(reason.to_string()));
                if self.active == Some(id) {
                    self.active = None;
                    self.status.with(|s| {
                        s.established_at = None;
                        s.down_at = Some(SystemTime::now());
                    });
                    info!(%reason, "session down");
                    let epoch = self.conns.get(&id).map(|c| c.epoch).unwrap_or_default();
                    let _ = self
                        .core
                        .send(CoreEvent::Down {
                            peer: self.settings.address,
                            epoch,
                            reason,
                        })
                        .await;
                } else {
                    debug!(%reason, "connection closed before it became the session");
                }
            }
            ConnEvent::Ended(id) => {
                let was_active = self.active == Some(id);
                if let Some(conn) = self.conns.remove(&id) {
                    if was_active {
                        // The tasks ended without a Down (a panic): tell the core all the same.
                        self.active = None;
                        self.status.with(|s| s.established_at = None);
                        let _ = self
                            .core
                            .send(CoreEvent::Down {
                                peer: self.settings.address,
                                epoch: conn.epoch,
                                reason: DownReason::ConnectionClosed,
                            })
                            .await;
                    }
                }
                if self.conns.is_empty() {
                    self.schedule_reconnect();
                }
            }
        }
    }

    /// RFC 4271 6.8: when two connections to the same peer both know the peer's BGP
    /// identifier, keep the one the higher identifier opened and close the other.
    fn resolve_collision(&mut self, id: u64) {
        let Some(this) = self.conns.get(&id) else {
            return;
        };
        let Some(remote) = this.remote_id else { return };
        let local = self.settings.fsm.router_id;
        for (other_id, other) in &self.conns {
            if *other_id == id {
                continue;
            }
            let loser = if other.state == State::Established {
                id
            } else if other.remote_id.is_some() {
                let keep_outgoing =
                    matches!(crate::fsm::resolve_collision(local, remote), Keep::Outgoing);
                if this.outgoing == keep_outgoing {
                    *other_id
                } else {
                    id
                }
            } else {
                continue;
            };
            debug!(loser, "connection collision resolved");
            if let Some(c) = self.conns.get(&loser) {
                let _ = c.tx.send(ConnCmd::Close(Some(collision_cease())));
            }
            return;
        }
    }

    fn schedule_reconnect(&mut self) {
        if self.next_connect.is_some() || !self.enabled {
            return;
        }
        self.failures = self.failures.saturating_add(1);
        // The first retry is quick so a restarting peer or a collision loser comes back fast;
        // later ones back off to the configured connect-retry time.
        let delay = match self.failures {
            0 | 1 => Duration::from_millis(200),
            2 => Duration::from_secs(1),
            _ => self.settings.connect_retry,
        };
        self.next_connect = Some(Instant::now() + delay);
    }

    fn start_connect(&mut self, ev_tx: &mpsc::UnboundedSender<ConnEvent>) {
        if !self.wants_to_connect() {
            return;
        }
        let addr = SocketAddr::new(self.settings.address, self.settings.port);
        let opts = self.settings.connect.clone();
        let ev_tx = ev_tx.clone();
        self.status.with(|s| {
            if s.state == State::Idle || s.state == State::Active {
                s.state = State::Connect;
            }
        });
        let timeout = self.settings.connect_retry.max(Duration::from_secs(1));
        self.connecting = Some(tokio::spawn(async move {
            let result = match socket::outgoing_socket(addr, &opts) {
                Ok(sock) => {
                    let sock = tokio::net::TcpSocket::from_std_stream(sock.into());
                    match tokio::time::timeout(timeout, sock.connect(addr)).await {
                        Ok(r) => r,
                        Err(_) => Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "connect timed out",
                        )),
                    }
                }
                Err(e) => Err(e),
            };
            let _ = ev_tx.send(ConnEvent::Connected(result));
        }));
    }

    fn spawn_conn(
        &mut self,
        stream: TcpStream,
        outgoing: bool,
        ev_tx: &mpsc::UnboundedSender<ConnEvent>,
    ) {
        let id = self.next_conn;
        self.next_conn += 1;
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.conns.insert(
            id,
            ConnHandle {
                outgoing,
                state: State::Idle,
                remote_id: None,
                tx,
                epoch,
            },
        );
        let conn = Connection {
            id,
            outgoing,
            epoch,
            peer: self.settings.address,
            fsm: Fsm::new(self.settings.fsm.clone()),
            status: self.status.clone(),
            events: ev_tx.clone(),
            core: self.core.clone(),
            ctx: None,
            timers: [None; 3],
        };
        let ev_tx = ev_tx.clone();
        let span = tracing::debug_span!("conn", id, outgoing);
        tokio::spawn(async move {
            let task = tokio::spawn(conn.run(stream, rx).instrument(span));
            if let Err(e) = task.await {
                if e.is_panic() {
                    warn!(
                        conn = id,
                        "connection task panicked; closing this session only"
                    );
                }
            }
            let _ = ev_tx.send(ConnEvent::Ended(id));
        });
    }

    fn publish_state(&self) {
        let best = self
            .active
            .map(|_| State::Established)
            .or_else(|| {
                self.conns
                    .values()
                    .map(|c| c.state)
                    .max_by_key(|s| state_rank(*s))
            })
            .unwrap_or(if self.connecting.is_some() {
                State::Connect
            } else if self.enabled {
                State::Active
            } else {
                State::Idle
            });
        self.status.with(|s| s.state = best);
    }
}

fn state_rank(s: State) -> u8 {
    match s {
        State::Idle => 0,
        State::Connect => 1,
        State::Active => 2,
        State::OpenSent => 3,
        State::OpenConfirm => 4,
        State::Established => 5,
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

fn collision_cease() -> NotificationError {
    NotificationError::new(
        wire::error::code::CEASE,
        cease::CONNECTION_COLLISION_RESOLUTION,
    )
}

/// Refuse a connection politely: NOTIFICATION Cease / Connection Rejected (RFC 4486), then close.
pub(crate) fn reject_with_cease(mut stream: TcpStream) {
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        let n = NotificationError::new(wire::error::code::CEASE, cease::CONNECTION_REJECTED);
        if wire::encode_message(
            &Message::Notification(n),
            &SessionContext::default(),
            &mut buf,
        )
        .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&buf)).await;
        }
        let _ = stream.shutdown().await;
    });
}

/// One TCP connection with its state machine.
struct Connection {
    id: u64,
    outgoing: bool,
    epoch: u64,
    peer: IpAddr,
    fsm: Fsm,
    status: Arc<PeerStatus>,
    events: mpsc::UnboundedSender<ConnEvent>,
    core: mpsc::Sender<CoreEvent>,
    /// Set once the session is Established.
    ctx: Option<SessionContext>,
    timers: [Option<tokio::time::Instant>; 3],
}

enum ReadEvent {
    Message(Message),
    Error(NotificationError),
    Closed(String),
}

impl Connection {
    async fn run(mut self, stream: TcpStream, mut cmds: mpsc::UnboundedReceiver<ConnCmd>) {
        let local = stream.local_addr().ok();
        let (read_half, write_half) = stream.into_split();
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Bytes>();
        let (in_tx, mut inbound) = mpsc::channel::<ReadEvent>(64);
        let writer = tokio::spawn(write_loop(write_half, out_rx));
        let local_open = self.fsm.local_open().clone();
        let reader = tokio::spawn(read_loop(
            read_half,
            in_tx,
            local_open,
            self.fsm_config_asns(),
            self.status.clone(),
        ));
        let mut out = Outbox {
            tx: out_tx,
            status: self.status.clone(),
        };

        // An accepted connection goes straight to TcpConnected on a fresh FSM, which then
        // behaves passively; our own connection is a started FSM whose connect succeeded.
        let mut actions = if self.outgoing {
            self.fsm.handle(Event::ManualStart)
        } else {
            Vec::new()
        };
        actions.extend(self.fsm.handle(Event::TcpConnected));
        let mut done = self.apply(actions, &mut out, local).await;
        while !done {
            let next_timer = self.next_timer();
            tokio::select! {
                ev = inbound.recv() => {
                    let event = match ev {
                        Some(ReadEvent::Message(m)) => Event::Message(m),
                        Some(ReadEvent::Error(n)) => Event::DecodeError(n),
                        Some(ReadEvent::Closed(why)) => {
                            debug!(%why, "connection closed");
                            Event::TcpFailed
                        }
                        None => Event::TcpFailed,
                    };
                    let actions = self.fsm.handle(event);
                    done = self.apply(actions, &mut out, local).await;
                }
                cmd = cmds.recv() => match cmd {
                    Some(ConnCmd::Advertise { changes, end_of_rib }) => {
                        if let Some(ctx) = &self.ctx {
                            out.send_changes(ctx, &changes, &end_of_rib);
                        }
                    }
                    Some(ConnCmd::RefreshIn) => {
                        if let Some(ctx) = &self.ctx {
                            for family in &ctx.families {
                                let (afi, safi) = family.afi_safi();
                                out.send(ctx, &Message::RouteRefresh(wire::RouteRefresh { afi, safi, subtype: 0 }));
                            }
                        }
                    }
                    Some(ConnCmd::Close(notification)) => {
                        if let Some(n) = &notification {
                            out.send(&SessionContext::default(), &Message::Notification(n.clone()));
                        }
                        // Without a NOTIFICATION the peer sees what a crash looks like, and so
                        // do we: a peer that reconnected while Established (RFC 4724 4.2) keeps
                        // its routes as stale, exactly as after a TCP reset.
                        let reason = match notification {
                            Some(n) => DownReason::NotificationSent(n),
                            None => DownReason::ConnectionClosed,
                        };
                        let _ = self.events.send(ConnEvent::Down(self.id, reason));
                        done = true;
                    }
                    None => done = true,
                },
                (timer, _) = wait_timer(next_timer), if next_timer.is_some() => {
                    self.timers[timer_index(timer)] = None;
                    let event = match timer {
                        Timer::ConnectRetry => continue,
                        Timer::Hold => Event::HoldTimerExpires,
                        Timer::Keepalive => Event::KeepaliveTimerExpires,
                    };
                    let actions = self.fsm.handle(event);
                    done = self.apply(actions, &mut out, local).await;
                }
            }
        }
        // Let the writer flush what is queued (a NOTIFICATION, typically), then close.
        drop(out);
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        reader.abort();
    }

    fn fsm_config_asns(&self) -> (crate::types::Asn, crate::types::Asn) {
        let c = self.fsm.config();
        (c.local_asn, c.peer_asn)
    }

    fn next_timer(&self) -> Option<(Timer, tokio::time::Instant)> {
        [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive]
            .into_iter()
            .filter_map(|t| self.timers[timer_index(t)].map(|d| (t, d)))
            .min_by_key(|(_, d)| *d)
    }

    /// Carry out the FSM's actions. Returns true when the connection is finished.
    async fn apply(
        &mut self,
        actions: Vec<Action>,
        out: &mut Outbox,
        local: Option<SocketAddr>,
    ) -> bool {
        let mut done = false;
        let before = self.fsm.state();
        for action in actions {
            match action {
                // One FSM per connection: the supervisor makes connections, not the FSM.
                Action::Connect => {}
                Action::Disconnect => done = true,
                Action::Send(msg) => out.send(
                    self.ctx.as_ref().unwrap_or(&SessionContext::default()),
                    &msg,
                ),
                Action::StartTimer(timer, after) => {
                    if timer != Timer::ConnectRetry {
                        self.timers[timer_index(timer)] = Some(tokio::time::Instant::now() + after);
                    }
                }
                Action::StopTimer(timer) => self.timers[timer_index(timer)] = None,
                Action::Established(negotiated) => {
                    let ctx = context_of(&negotiated, self.fsm.config());
                    let (reply_tx, reply_rx) = oneshot::channel();
                    let Some(local) = local else { return true };
                    let _ = self
                        .events
                        .send(ConnEvent::Established(self.id, negotiated, local, reply_tx));
                    if !matches!(reply_rx.await, Ok(true)) {
                        // Lost a collision or the peer was disabled meanwhile; the
                        // supervisor sends the Close with the reason.
                        continue;
                    }
                    self.ctx = Some(ctx);
                }
                Action::Deliver(msg) => self.deliver(msg).await,
                Action::Down(reason) => {
                    let _ = self.events.send(ConnEvent::Down(self.id, reason));
                }
            }
        }
        let after = self.fsm.state();
        if after != before {
            let _ = self.events.send(ConnEvent::State(self.id, after));
            if after == State::OpenConfirm {
                if let Some(remote) = self.fsm.peer_router_id() {
                    let _ = self.events.send(ConnEvent::OpenReceived(self.id, remote));
                }
            }
        }
        done || after == State::Idle
    }

    async fn deliver(&mut self, msg: Message) {
        let Some(ctx) = &self.ctx else { return };
        let event = match msg {
            Message::Update(update) => {
                let update = update.routes(ctx);
                self.status.received.count_withdraws(update.withdrawn.len());
                CoreEvent::Update {
                    peer: self.peer,
                    epoch: self.epoch,
                    update,
                }
            }
            Message::RouteRefresh(rr) => CoreEvent::RouteRefresh {
                peer: self.peer,
                epoch: self.epoch,
                family: Family::from_afi_safi(rr.afi, rr.safi),
            },
            _ => return,
        };
        let _ = self.core.send(event).await;
    }
}

fn context_of(n: &Negotiated, cfg: &FsmConfig) -> SessionContext {
    SessionContext {
        four_octet_as: n.four_octet_as,
        families: n.families.clone(),
        extended_next_hop: n.extended_next_hop,
        local_asn: cfg.local_asn,
        peer_asn: n.peer_asn,
    }
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
    }
}

async fn wait_timer(t: Option<(Timer, tokio::time::Instant)>) -> (Timer, ()) {
    match t {
        Some((timer, at)) => {
            sleep_until(at).await;
            (timer, ())
        }
        None => std::future::pending().await,
    }
}

/// Encodes messages for the writer task and counts them.
struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    status: Arc<PeerStatus>,
}

impl Outbox {
    fn send(&mut self, ctx: &SessionContext, msg: &Message) {
        let mut buf = BytesMut::with_capacity(64);
        match wire::encode_message(msg, ctx, &mut buf) {
            Ok(()) => {
                self.status.sent.count(kind_of(msg));
                let _ = self.tx.send(buf.freeze());
            }
            Err(e) => warn!(error = %e, "could not encode a message"),
        }
    }

    /// Encode Adj-RIB-Out changes: withdrawals first, then announcements grouped by their
    /// (interned) attributes so each group packs into as few UPDATEs as possible.
    fn send_changes(&mut self, ctx: &SessionContext, changes: &[OutChange], end_of_rib: &[Family]) {
        let mut withdrawn: Vec<IpNet> = Vec::new();
        let mut groups: Vec<(&Arc<wire::PathAttrs>, Family, Vec<IpNet>)> = Vec::new();
        let mut index: HashMap<(*const wire::PathAttrs, Family), usize> = HashMap::new();
        for change in changes {
            let family = Family::of(&change.prefix);
            if !ctx.families.contains(&family) {
                continue;
            }
            match &change.attrs {
                None => withdrawn.push(change.prefix),
                Some(attrs) => {
                    let key = (Arc::as_ptr(attrs), family);
                    let i = *index.entry(key).or_insert_with(|| {
                        groups.push((attrs, family, Vec::new()));
                        groups.len() - 1
                    });
                    groups[i].2.push(change.prefix);
                }
            }
        }
        let mut buf = BytesMut::new();
        if !withdrawn.is_empty() {
            match wire::encode_withdraw(ctx, &withdrawn, &mut buf) {
                Ok(n) => self.count_updates(n),
                Err(e) => warn!(error = %e, "could not encode withdrawals"),
            }
        }
        for (attrs, _, prefixes) in &groups {
            match wire::encode_announce(ctx, attrs, prefixes, &mut buf) {
                Ok(n) => self.count_updates(n),
                Err(e) => warn!(error = %e, "could not encode an announcement"),
            }
        }
        for family in end_of_rib {
            if ctx.families.contains(family) {
                let eor = Message::Update(Update::end_of_rib(*family));
                match wire::encode_message(&eor, ctx, &mut buf) {
                    Ok(()) => self.count_updates(1),
                    Err(e) => warn!(error = %e, "could not encode End-of-RIB"),
                }
            }
        }
        if !buf.is_empty() {
            let _ = self.tx.send(buf.freeze());
        }
    }

    fn count_updates(&self, n: usize) {
        for _ in 0..n {
            self.status.sent.count(wire::kind::UPDATE);
        }
    }
}

fn kind_of(msg: &Message) -> u8 {
    match msg {
        Message::Open(_) => wire::kind::OPEN,
        Message::Update(_) => wire::kind::UPDATE,
        Message::Notification(_) => wire::kind::NOTIFICATION,
        Message::Keepalive => wire::kind::KEEPALIVE,
        Message::RouteRefresh(_) => wire::kind::ROUTE_REFRESH,
    }
}

async fn write_loop(
    mut w: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
) {
    while let Some(first) = rx.recv().await {
        if w.write_all(&first).await.is_err() {
            return;
        }
        // Drain whatever else is queued before the next wakeup.
        while let Ok(more) = rx.try_recv() {
            if w.write_all(&more).await.is_err() {
                return;
            }
        }
    }
    let _ = w.shutdown().await;
}

/// Frame, decode and forward messages. The session context is derived here, from the two OPENs,
/// because UPDATEs can follow the peer's KEEPALIVE in the same segment: waiting for the
/// connection task to say "Established" would decode them with the wrong AS width.
async fn read_loop(
    mut r: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::Sender<ReadEvent>,
    local_open: wire::Open,
    (local_asn, peer_asn): (crate::types::Asn, crate::types::Asn),
    status: Arc<PeerStatus>,
) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut ctx = SessionContext {
        local_asn,
        peer_asn,
        ..SessionContext::default()
    };
    loop {
        loop {
            let len = match wire::frame_len(&buf) {
                Ok(Some(len)) if buf.len() >= len => len,
                Ok(_) => break,
                Err(n) => {
                    let _ = tx.send(ReadEvent::Error(n)).await;
                    return;
                }
            };
            let frame = buf.split_to(len);
            status.received.count(frame[18]);
            let ev = match wire::decode_message(&frame, &ctx) {
                Ok(msg) => {
                    if let Message::Open(open) = &msg {
                        ctx = SessionContext::negotiate(&local_open, open, local_asn, peer_asn);
                    }
                    ReadEvent::Message(msg)
                }
                Err(n) => ReadEvent::Error(n),
            };
            let fatal = matches!(ev, ReadEvent::Error(_));
            if tx.send(ev).await.is_err() || fatal {
                return;
            }
        }
        buf.reserve(64 * 1024);
        match r.read_buf(&mut buf).await {
            Ok(0) => {
                let _ = tx
                    .send(ReadEvent::Closed("peer closed the connection".into()))
                    .await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = tx.send(ReadEvent::Closed(e.to_string())).await;
                return;
            }
        }
    }
}
