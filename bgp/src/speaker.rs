//! The public handle of the speaker and the core task that owns the RIB.
//!
//! One task (the core) owns the [`Rib`] and the table of peers; everything else talks to it
//! through channels, so no lock ever guards routing state. Peers' tasks (see `peer.rs`) decode
//! UPDATEs in parallel and hand the core ready-made [`RouteUpdate`]s; the core applies them,
//! computes each peer's Adj-RIB-Out changes and tells subscribers what changed in the Loc-RIB.
//!
//! Graceful restart (RFC 4724) lives here too, because it is about routes: as the receiving
//! speaker the core keeps a restarting peer's routes stale until its End-of-RIB or the restart
//! timer; as the restarting speaker it advertises the restart state and forwarding bit it is
//! given, and always sends End-of-RIB after the initial table.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::fsm::{DownReason, FsmConfig, Negotiated, State};
use crate::peer::{self, CoreEvent, MessageCount, PeerCmd, PeerStatus, SessionSettings};
use crate::policy::ImportPolicy;
use crate::rib::{BestChange, Path, PeerInfo, Rib, RibConfig};
use crate::socket::{self, ConnectOptions};
use crate::types::{Asn, Family, RouterId};
use crate::wire::{
    error, Capability, GracefulRestartCap, GracefulRestartFamily, NotificationError, PathAttrs,
};

/// Graceful restart settings (RFC 4724).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Restart Time we advertise: how long peers keep our routes after our session drops.
    pub restart_time: u16,
    /// This start is a restart: set the Restart State bit.
    pub restarting: bool,
    /// Our forwarding state survived the restart (kernel routes are still in place): set the
    /// Forwarding State bit. The caller must only say so when it is true.
    pub forwarding_preserved: bool,
    /// Upper bound on keeping a restarted peer's stale routes while waiting for its End-of-RIB.
    pub stale_routes_time: Duration,
}

impl Default for GracefulRestartConfig {
    fn default() -> Self {
        GracefulRestartConfig {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: false,
            stale_routes_time: Duration::from_secs(360),
        }
    }
}

/// Speaker-wide settings.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Our AS number.
    pub asn: Asn,
    /// Our BGP identifier.
    pub router_id: RouterId,
    /// Addresses to accept sessions on (empty: passive-only peers cannot connect to us).
    pub listen: Vec<SocketAddr>,
    /// Route-reflector cluster id (default: the router id).
    pub cluster_id: Option<std::net::Ipv4Addr>,
    /// Graceful restart; `None` turns it off.
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Host name advertised in the FQDN capability, if any.
    pub hostname: Option<String>,
}

/// One peer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Peer address.
    pub address: IpAddr,
    /// Peer AS: equal to ours for iBGP.
    pub asn: Asn,
    /// TCP port to connect to.
    pub port: u16,
    /// Source address for the session (and next-hop-self value).
    pub local_address: Option<IpAddr>,
    /// TCP MD5 password (RFC 2385).
    pub password: Option<String>,
    /// IP TTL of the session's packets (eBGP multihop). Unset: 1 toward eBGP peers (directly
    /// connected, as routers expect), the kernel's default toward iBGP peers.
    pub multihop_ttl: Option<u8>,
    /// Proposed hold time (seconds).
    pub hold_time: u16,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// The peer is our route-reflector client.
    pub route_reflector_client: bool,
    /// Families to negotiate.
    pub families: Vec<Family>,
    /// What we accept from this peer.
    pub import: ImportPolicy,
    /// Delay between connection attempts once quick retries are used up.
    pub connect_retry: Duration,
}

impl PeerConfig {
    /// A peer with the usual defaults: port 179, hold 90 s, IPv4 and IPv6 unicast, accept all.
    pub fn new(address: IpAddr, asn: Asn) -> Self {
        PeerConfig {
            address,
            asn,
            port: 179,
            local_address: None,
            password: None,
            multihop_ttl: None,
            hold_time: 90,
            passive: false,
            route_reflector_client: false,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            import: ImportPolicy::AcceptAll,
            connect_retry: Duration::from_secs(5),
        }
    }
}

/// Errors of the speaker's handle.
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The peer is already configured.
    #[error("peer {0} already exists")]
    PeerExists(IpAddr),
    /// No such peer.
    #[error("no peer {0}")]
    NoPeer(IpAddr),
    /// A socket option (MD5 key) could not be set.
    #[error("peer {peer}: {source}")]
    Socket {
        /// The peer.
        peer: IpAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The speaker has stopped.
    #[error("the speaker has stopped")]
    Stopped,
}

/// What an operator sees of one peer (gobgp `neighbor`).
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    /// The peer's configuration.
    pub config: PeerConfig,
    /// Session state.
    pub state: State,
    /// Disabled by the operator.
    pub admin_down: bool,
    /// When the session came up (wall clock), if it is up.
    pub established_since: Option<SystemTime>,
    /// How long it has been up.
    pub uptime: Option<Duration>,
    /// When the last session went down.
    pub down_since: Option<SystemTime>,
    /// Sessions established so far.
    pub established_count: u64,
    /// What was negotiated, while Established.
    pub negotiated: Option<Negotiated>,
    /// Our address on the session.
    pub local: Option<SocketAddr>,
    /// Messages received.
    pub received_messages: MessageCount,
    /// Messages sent.
    pub sent_messages: MessageCount,
    /// Prefixes received (Adj-RIB-In).
    pub received: usize,
    /// Prefixes accepted (passed import policy and loop checks).
    pub accepted: usize,
    /// Prefixes advertised (Adj-RIB-Out).
    pub advertised: usize,
    /// Routes from this peer held stale for graceful restart.
    pub stale: bool,
    /// Why the last session ended, if it did.
    pub last_error: Option<String>,
}

/// One route in a table listing.
#[derive(Debug, Clone)]
pub struct RouteEntry {
    /// The prefix.
    pub prefix: IpNet,
    /// Candidate paths, best first.
    pub paths: Vec<Path>,
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Send Cease / Administrative Shutdown: peers withdraw our routes at once.
    Withdraw,
    /// Close the sessions without a NOTIFICATION, as a crash would: GR-capable peers keep our
    /// routes (stale) until we come back.
    ForRestart,
}

/// One Adj-RIB-In entry: prefix, path, and whether import accepted it.
pub type AdjInEntry = (IpNet, Path, bool);
/// One Adj-RIB-Out entry: prefix and the attributes we sent.
pub type AdjOutEntry = (IpNet, Arc<PathAttrs>);
type Reply<T> = oneshot::Sender<Result<T, SpeakerError>>;

enum Command {
    AddPeer(PeerConfig, oneshot::Sender<Result<(), SpeakerError>>),
    RemovePeer(IpAddr, oneshot::Sender<Result<(), SpeakerError>>),
    Enable(IpAddr, bool, oneshot::Sender<Result<(), SpeakerError>>),
    SetImport(IpAddr, ImportPolicy, Reply<()>),
    SetAsn(Asn, oneshot::Sender<()>),
    Reset(IpAddr, ResetKind, oneshot::Sender<Result<(), SpeakerError>>),
    Originate(Vec<(IpNet, PathAttrs)>, oneshot::Sender<()>),
    Withdraw(Vec<IpNet>, oneshot::Sender<()>),
    Peers(oneshot::Sender<Vec<PeerSnapshot>>),
    LocRib(Option<Family>, oneshot::Sender<Vec<RouteEntry>>),
    LocRibLen(oneshot::Sender<usize>),
    AdjIn(IpAddr, Option<Family>, Reply<Vec<AdjInEntry>>),
    AdjOut(IpAddr, Option<Family>, Reply<Vec<AdjOutEntry>>),
    Subscribe(oneshot::Sender<(Vec<BestChange>, mpsc::UnboundedReceiver<Vec<BestChange>>)>),
    Shutdown(Shutdown, oneshot::Sender<()>),
}

/// Soft or hard session reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// Close and reconnect (Cease / Administrative Reset).
    Hard,
    /// Ask the peer to resend its routes (ROUTE-REFRESH).
    SoftIn,
    /// Resend our routes to the peer.
    SoftOut,
}

/// The handle to a running speaker. Cheap to clone; the speaker stops on [`Speaker::shutdown`]
/// or when every handle is dropped.
#[derive(Clone)]
pub struct Speaker {
    tx: mpsc::Sender<Command>,
    // Shared with every handle so that a changed AS shows in all of them.
    config: Arc<std::sync::RwLock<SpeakerConfig>>,
}

impl Speaker {
    /// Bind the listen addresses and start the core task.
    pub async fn start(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let (event_tx, event_rx) = mpsc::channel(4096);
        let (accept_tx, accept_rx) = mpsc::channel(64);
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let sock = socket::listener(*addr).map_err(|source| SpeakerError::Listen {
                addr: *addr,
                source,
            })?;
            let std_listener: std::net::TcpListener = sock.into();
            let listener =
                TcpListener::from_std(std_listener).map_err(|source| SpeakerError::Listen {
                    addr: *addr,
                    source,
                })?;
            let listener = Arc::new(listener);
            listeners.push(listener.clone());
            let accept_tx = accept_tx.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, from)) => {
                            if accept_tx.send((stream, from)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel(256);
        let core = Core {
            rib: Rib::new(RibConfig {
                local_asn: config.asn,
                router_id: config.router_id,
                cluster_id: config.cluster_id,
            }),
            config: config.clone(),
            peers: HashMap::new(),
            listeners,
            events: event_tx,
            epochs: Arc::new(AtomicU64::new(1)),
            subscribers: Vec::new(),
        };
        tokio::spawn(core.run(rx, event_rx, accept_rx));
        Ok(Speaker {
            tx,
            config: Arc::new(std::sync::RwLock::new(config)),
        })
    }

    /// The configuration the speaker runs with (as started, with the AS as last set).
    pub fn config(&self) -> SpeakerConfig {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Change our AS number. Every peer is removed first with Cease / Other Configuration
    /// Change (RFC 4486) and its routes withdrawn, because the AS is part of every session's
    /// OPEN and of every path's iBGP/eBGP standing; the caller adds the peers back, with peer
    /// settings that fit the new AS.
    pub async fn set_local_asn(&self, asn: Asn) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::SetAsn(asn, tx)).await?;
        match self.config.write() {
            Ok(mut c) => c.asn = asn,
            Err(poisoned) => poisoned.into_inner().asn = asn,
        }
        Ok(())
    }

    async fn ask<R>(
        &self,
        make: impl FnOnce(oneshot::Sender<R>) -> Command,
    ) -> Result<R, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Add a peer and start connecting to it (unless passive).
    pub async fn add_peer(&self, peer: PeerConfig) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::AddPeer(peer, tx)).await?
    }

    /// Remove a peer: Cease / Peer De-configured, and its routes are withdrawn.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::RemovePeer(address, tx)).await?
    }

    /// Administratively enable or disable a peer.
    pub async fn set_enabled(&self, address: IpAddr, enabled: bool) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Enable(address, enabled, tx)).await?
    }

    /// Replace a peer's import policy without touching its session: what it already announced
    /// is judged again at once (the Adj-RIB-In keeps rejected routes for this), so a tighter
    /// policy withdraws routes and a looser one installs them without a ROUTE-REFRESH.
    pub async fn set_import_policy(
        &self,
        address: IpAddr,
        policy: ImportPolicy,
    ) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::SetImport(address, policy, tx))
            .await?
    }

    /// Reset a peer's session (hard) or refresh routes (soft).
    pub async fn reset(&self, address: IpAddr, kind: ResetKind) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Reset(address, kind, tx)).await?
    }

    /// Originate prefixes (a prefix already originated gets the new attributes).
    pub async fn originate(&self, routes: Vec<(IpNet, PathAttrs)>) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Originate(routes, tx)).await
    }

    /// Stop originating prefixes.
    pub async fn withdraw(&self, prefixes: Vec<IpNet>) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Withdraw(prefixes, tx)).await
    }

    /// Every peer's state and counters.
    pub async fn peers(&self) -> Result<Vec<PeerSnapshot>, SpeakerError> {
        self.ask(Command::Peers).await
    }

    /// The Loc-RIB (all candidate paths per prefix, best first), optionally one family.
    pub async fn loc_rib(&self, family: Option<Family>) -> Result<Vec<RouteEntry>, SpeakerError> {
        self.ask(|tx| Command::LocRib(family, tx)).await
    }

    /// How many prefixes the Loc-RIB holds (cheap: no copy of the table).
    pub async fn loc_rib_len(&self) -> Result<usize, SpeakerError> {
        self.ask(Command::LocRibLen).await
    }

    /// A peer's Adj-RIB-In: (prefix, path, accepted).
    pub async fn adj_rib_in(
        &self,
        peer: IpAddr,
        family: Option<Family>,
    ) -> Result<Vec<AdjInEntry>, SpeakerError> {
        self.ask(|tx| Command::AdjIn(peer, family, tx)).await?
    }

    /// A peer's Adj-RIB-Out: what we advertised to it.
    pub async fn adj_rib_out(
        &self,
        peer: IpAddr,
        family: Option<Family>,
    ) -> Result<Vec<AdjOutEntry>, SpeakerError> {
        self.ask(|tx| Command::AdjOut(peer, family, tx)).await?
    }

    /// The current best routes, then every change to them, in order.
    pub async fn subscribe(
        &self,
    ) -> Result<(Vec<BestChange>, mpsc::UnboundedReceiver<Vec<BestChange>>), SpeakerError> {
        self.ask(Command::Subscribe).await
    }

    /// Stop every session and the speaker.
    pub async fn shutdown(&self, how: Shutdown) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::Shutdown(how, tx)).await
    }
}

struct PeerEntry {
    config: PeerConfig,
    tx: mpsc::Sender<PeerCmd>,
    status: Arc<PeerStatus>,
    /// The current session: its epoch, what it negotiated, our address on it.
    session: Option<(u64, Box<Negotiated>, SocketAddr)>,
    /// Graceful restart as the receiving speaker: routes kept stale since this moment.
    stale_since: Option<Instant>,
    /// The deadline for the stale routes (restart time while down, stale-routes time after).
    stale_deadline: Option<Instant>,
    /// Families whose End-of-RIB we still wait for.
    awaiting_eor: HashSet<Family>,
}

struct Core {
    config: SpeakerConfig,
    rib: Rib,
    peers: HashMap<IpAddr, PeerEntry>,
    listeners: Vec<Arc<TcpListener>>,
    events: mpsc::Sender<CoreEvent>,
    epochs: Arc<AtomicU64>,
    subscribers: Vec<mpsc::UnboundedSender<Vec<BestChange>>>,
}

impl Core {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<CoreEvent>,
        mut accepted: mpsc::Receiver<(tokio::net::TcpStream, SocketAddr)>,
    ) {
        loop {
            let deadline = self.peers.values().filter_map(|p| p.stale_deadline).min();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown(how, done)) => {
                        self.shutdown(how).await;
                        let _ = done.send(());
                        return;
                    }
                    Some(cmd) => self.command(cmd).await,
                    None => {
                        self.shutdown(Shutdown::Withdraw).await;
                        return;
                    }
                },
                Some(ev) = events.recv() => self.event(ev).await,
                Some((stream, from)) = accepted.recv() => self.incoming(stream, from).await,
                _ = sleep_until_opt(deadline) => self.stale_timers().await,
            }
        }
    }

    async fn shutdown(&mut self, how: Shutdown) {
        let notification = match how {
            Shutdown::Withdraw => Some(NotificationError::new(
                error::code::CEASE,
                error::cease::ADMINISTRATIVE_SHUTDOWN,
            )),
            Shutdown::ForRestart => None,
        };
        for peer in self.peers.values() {
            let _ = peer
                .tx
                .send(PeerCmd::Stop {
                    notification: notification.clone(),
                    disable: true,
                })
                .await;
        }
        // Give the connection tasks a moment to put the NOTIFICATIONs on the wire.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn incoming(&mut self, stream: tokio::net::TcpStream, from: SocketAddr) {
        let ip = canonical(from.ip());
        match self.peers.get(&ip) {
            Some(peer) => {
                let _ = peer.tx.send(PeerCmd::Incoming(stream)).await;
            }
            None => {
                info!(from = %from, "connection from an address that is not a configured peer: rejected");
                peer::reject_with_cease(stream);
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::AddPeer(config, reply) => {
                let _ = reply.send(self.add_peer(config));
            }
            Command::RemovePeer(address, reply) => {
                let result = match self.peers.remove(&address) {
                    Some(peer) => {
                        for l in &self.listeners {
                            let _ = socket::set_md5_key(l.as_ref(), address, None);
                        }
                        drop(peer.tx); // the supervisor sends Cease / Peer De-configured
                        let changes = self.rib.remove_peer(address);
                        self.publish(changes).await;
                        Ok(())
                    }
                    None => Err(SpeakerError::NoPeer(address)),
                };
                let _ = reply.send(result);
            }
            Command::SetAsn(asn, reply) => {
                if asn != self.config.asn {
                    let n = NotificationError::new(
                        error::code::CEASE,
                        error::cease::OTHER_CONFIGURATION_CHANGE,
                    );
                    let addresses: Vec<IpAddr> = self.peers.keys().copied().collect();
                    for address in addresses {
                        let Some(peer) = self.peers.remove(&address) else {
                            continue;
                        };
                        let _ = peer
                            .tx
                            .send(PeerCmd::Stop {
                                notification: Some(n.clone()),
                                disable: true,
                            })
                            .await;
                        for l in &self.listeners {
                            let _ = socket::set_md5_key(l.as_ref(), address, None);
                        }
                        let changes = self.rib.remove_peer(address);
                        self.publish(changes).await;
                    }
                    info!(from = self.config.asn.0, to = asn.0, "local AS changed");
                    self.config.asn = asn;
                    self.rib.set_local_asn(asn);
                }
                let _ = reply.send(());
            }
            Command::SetImport(address, policy, reply) => {
                let result = match self.peers.get_mut(&address) {
                    Some(peer) => {
                        peer.config.import = policy.clone();
                        let changes = self.rib.set_import_policy(address, policy);
                        self.publish(changes).await;
                        Ok(())
                    }
                    None => Err(SpeakerError::NoPeer(address)),
                };
                let _ = reply.send(result);
            }
            Command::Enable(address, enabled, reply) => {
                let result = match self.peers.get(&address) {
                    Some(peer) => {
                        let cmd = if enabled {
                            PeerCmd::Enable
                        } else {
                            PeerCmd::Stop {
                                notification: Some(NotificationError::new(
                                    error::code::CEASE,
                                    error::cease::ADMINISTRATIVE_SHUTDOWN,
                                )),
                                disable: true,
                            }
                        };
                        let _ = peer.tx.send(cmd).await;
                        Ok(())
                    }
                    None => Err(SpeakerError::NoPeer(address)),
                };
                let _ = reply.send(result);
            }
            Command::Reset(address, kind, reply) => {
                let result = self.reset(address, kind).await;
                let _ = reply.send(result);
            }
            Command::Originate(routes, reply) => {
                let mut changes = Vec::new();
                for (prefix, attrs) in routes {
                    changes.extend(self.rib.originate(prefix, attrs));
                }
                self.publish(changes).await;
                let _ = reply.send(());
            }
            Command::Withdraw(prefixes, reply) => {
                let mut changes = Vec::new();
                for prefix in prefixes {
                    changes.extend(self.rib.withdraw_local(prefix));
                }
                self.publish(changes).await;
                let _ = reply.send(());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.snapshots());
            }
            Command::LocRib(family, reply) => {
                let mut out: Vec<RouteEntry> = self
                    .rib
                    .loc_rib()
                    .filter(|(p, _)| family.is_none_or(|f| Family::of(p) == f))
                    .map(|(prefix, _)| RouteEntry {
                        prefix,
                        paths: self.rib.paths(&prefix),
                    })
                    .collect();
                out.sort_by_key(|e| e.prefix);
                let _ = reply.send(out);
            }
            Command::LocRibLen(reply) => {
                let _ = reply.send(self.rib.len());
            }
            Command::AdjIn(peer, family, reply) => {
                let result = if self.peers.contains_key(&peer) {
                    let mut v: Vec<_> = self
                        .rib
                        .adj_rib_in(peer)
                        .filter(|(p, _, _)| family.is_none_or(|f| Family::of(p) == f))
                        .collect();
                    v.sort_by_key(|e| e.0);
                    Ok(v)
                } else {
                    Err(SpeakerError::NoPeer(peer))
                };
                let _ = reply.send(result);
            }
            Command::AdjOut(peer, family, reply) => {
                let result = if self.peers.contains_key(&peer) {
                    let mut v: Vec<_> = self
                        .rib
                        .adj_rib_out(peer)
                        .filter(|(p, _)| family.is_none_or(|f| Family::of(p) == f))
                        .map(|(p, a)| (*p, a.clone()))
                        .collect();
                    v.sort_by_key(|e| e.0);
                    Ok(v)
                } else {
                    Err(SpeakerError::NoPeer(peer))
                };
                let _ = reply.send(result);
            }
            Command::Subscribe(reply) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let snapshot = self
                    .rib
                    .loc_rib()
                    .map(|(prefix, path)| BestChange {
                        prefix,
                        best: Some(path),
                    })
                    .collect();
                self.subscribers.push(tx);
                let _ = reply.send((snapshot, rx));
            }
            Command::Shutdown(..) => {}
        }
    }

    fn add_peer(&mut self, config: PeerConfig) -> Result<(), SpeakerError> {
        let address = config.address;
        if self.peers.contains_key(&address) {
            return Err(SpeakerError::PeerExists(address));
        }
        if let Some(password) = &config.password {
            for l in &self.listeners {
                let listen_v4 = l.local_addr().map(|a| a.is_ipv4()).unwrap_or(false);
                if listen_v4 == address.is_ipv4() {
                    socket::set_md5_key(l.as_ref(), address, Some(password)).map_err(|source| {
                        SpeakerError::Socket {
                            peer: address,
                            source,
                        }
                    })?;
                }
            }
        }
        let status = Arc::new(PeerStatus::new());
        let settings = self.session_settings(&config);
        let tx = peer::spawn_peer(
            settings,
            status.clone(),
            self.events.clone(),
            self.epochs.clone(),
        );
        info!(peer = %address, asn = config.asn.0, "peer added");
        self.peers.insert(
            address,
            PeerEntry {
                config,
                tx,
                status,
                session: None,
                stale_since: None,
                stale_deadline: None,
                awaiting_eor: HashSet::new(),
            },
        );
        Ok(())
    }

    fn session_settings(&self, config: &PeerConfig) -> SessionSettings {
        let mut caps: Vec<Capability> = config
            .families
            .iter()
            .map(|f| {
                let (afi, safi) = f.afi_safi();
                Capability::Multiprotocol { afi, safi }
            })
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::FourOctetAs(self.config.asn));
        if let Some(gr) = &self.config.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestartCap {
                restart_state: gr.restarting,
                notification: false,
                restart_time: gr.restart_time.min(4095),
                families: config
                    .families
                    .iter()
                    .map(|f| {
                        let (afi, safi) = f.afi_safi();
                        GracefulRestartFamily {
                            afi,
                            safi,
                            forwarding: gr.forwarding_preserved,
                        }
                    })
                    .collect(),
            }));
        }
        if let Some(hostname) = &self.config.hostname {
            caps.push(Capability::Fqdn {
                hostname: hostname.clone(),
                domain: String::new(),
            });
        }
        let ebgp = config.asn != self.config.asn;
        SessionSettings {
            address: config.address,
            port: config.port,
            fsm: FsmConfig {
                local_asn: self.config.asn,
                router_id: self.config.router_id,
                peer_asn: config.asn,
                hold_time: config.hold_time,
                connect_retry: config.connect_retry,
                passive: config.passive,
                capabilities: caps,
            },
            connect: ConnectOptions {
                local_address: config.local_address,
                password: config.password.clone(),
                // Directly connected eBGP uses TTL 1 like routers do (the peer may enforce it);
                // iBGP and multihop sessions leave it to the configured or kernel default.
                ttl: config.multihop_ttl.or(if ebgp { Some(1) } else { None }),
            },
            connect_retry: config.connect_retry,
        }
    }

    async fn reset(&mut self, address: IpAddr, kind: ResetKind) -> Result<(), SpeakerError> {
        let peer = self
            .peers
            .get(&address)
            .ok_or(SpeakerError::NoPeer(address))?;
        match kind {
            ResetKind::Hard => {
                let n =
                    NotificationError::new(error::code::CEASE, error::cease::ADMINISTRATIVE_RESET);
                let _ = peer
                    .tx
                    .send(PeerCmd::Stop {
                        notification: Some(n),
                        disable: false,
                    })
                    .await;
            }
            ResetKind::SoftIn => {
                let _ = peer.tx.send(PeerCmd::RefreshIn).await;
            }
            ResetKind::SoftOut => self.send_full_table(address, false).await,
        }
        Ok(())
    }

    async fn event(&mut self, ev: CoreEvent) {
        match ev {
            CoreEvent::Established {
                peer,
                epoch,
                negotiated,
                local,
            } => self.established(peer, epoch, negotiated, local).await,
            CoreEvent::Update {
                peer,
                epoch,
                update,
            } => {
                if !self.current(peer, epoch) {
                    return;
                }
                let eor = update.end_of_rib;
                let outcome = self.rib.apply(peer, update);
                if outcome.rejected > 0 {
                    debug!(%peer, rejected = outcome.rejected, "routes rejected by import policy or loop checks");
                }
                self.publish(outcome.changes).await;
                if let Some(family) = eor {
                    self.end_of_rib(peer, family).await;
                }
            }
            CoreEvent::RouteRefresh {
                peer,
                epoch,
                family,
            } => {
                if self.current(peer, epoch) {
                    debug!(%peer, ?family, "route refresh requested");
                    self.send_full_table(peer, false).await;
                }
            }
            CoreEvent::Down {
                peer,
                epoch,
                reason,
            } => self.down(peer, epoch, reason).await,
        }
    }

    fn current(&self, peer: IpAddr, epoch: u64) -> bool {
        self.peers
            .get(&peer)
            .and_then(|p| p.session.as_ref())
            .is_some_and(|s| s.0 == epoch)
    }

    async fn established(
        &mut self,
        address: IpAddr,
        epoch: u64,
        negotiated: Box<Negotiated>,
        local: SocketAddr,
    ) {
        let Some(peer) = self.peers.get_mut(&address) else {
            return;
        };
        let local_ip = peer.config.local_address.unwrap_or(canonical(local.ip()));
        self.rib.peer_up(PeerInfo {
            address,
            asn: negotiated.peer_asn,
            router_id: negotiated.peer_router_id,
            local_address: Some(local_ip),
            route_reflector_client: peer.config.route_reflector_client,
            import: peer.config.import.clone(),
        });
        // RFC 4724 4.2: stale routes of families the restarted peer did not keep forwarding
        // state for (or no longer negotiates GR for) go at once; the others wait for End-of-RIB.
        let mut changes = Vec::new();
        if peer.stale_since.is_some() {
            let kept: Vec<Family> = negotiated
                .peer_graceful_restart
                .as_ref()
                .map(|gr| {
                    gr.families
                        .iter()
                        .filter(|f| f.forwarding)
                        .filter_map(|f| Family::from_afi_safi(f.afi, f.safi))
                        .filter(|f| negotiated.families.contains(f))
                        .collect()
                })
                .unwrap_or_default();
            if kept.is_empty() {
                changes.extend(self.rib.sweep_stale(address));
                peer.stale_since = None;
                peer.stale_deadline = None;
            } else {
                for family in Family::ALL {
                    if !kept.contains(&family) {
                        changes.extend(self.rib.end_of_rib(address, family));
                    }
                }
                peer.awaiting_eor = kept.into_iter().collect();
                let stale_time = self
                    .config
                    .graceful_restart
                    .as_ref()
                    .map(|g| g.stale_routes_time)
                    .unwrap_or(Duration::from_secs(360));
                peer.stale_deadline = Some(Instant::now() + stale_time);
            }
        }
        peer.session = Some((epoch, negotiated, local));
        self.publish(changes).await;
        self.send_full_table(address, true).await;
    }

    async fn end_of_rib(&mut self, address: IpAddr, family: Family) {
        let Some(peer) = self.peers.get_mut(&address) else {
            return;
        };
        debug!(peer = %address, %family, "End-of-RIB received");
        if peer.stale_since.is_some() {
            let changes = self.rib.end_of_rib(address, family);
            peer.awaiting_eor.remove(&family);
            if peer.awaiting_eor.is_empty() {
                info!(peer = %address, "graceful restart complete: stale routes swept");
                peer.stale_since = None;
                peer.stale_deadline = None;
            }
            self.publish(changes).await;
        }
    }

    async fn down(&mut self, address: IpAddr, epoch: u64, reason: DownReason) {
        let Some(peer) = self.peers.get_mut(&address) else {
            return;
        };
        if peer.session.as_ref().is_none_or(|s| s.0 != epoch) {
            return;
        }
        let (_, negotiated, _) = peer.session.take().expect("checked above");
        // RFC 4724 4.2: keep the routes only when the TCP session ended without a NOTIFICATION
        // (a hold timer expiry sends one, so it does not count) and the peer said it can
        // restart gracefully; we also need GR on our side.
        let keep: Vec<Family> = match (
            &negotiated.peer_graceful_restart,
            &self.config.graceful_restart,
            &reason,
        ) {
            (Some(gr), Some(_), DownReason::ConnectionClosed) if gr.restart_time > 0 => gr
                .families
                .iter()
                .filter_map(|f| Family::from_afi_safi(f.afi, f.safi))
                .filter(|f| negotiated.families.contains(f))
                .collect(),
            _ => Vec::new(),
        };
        if !keep.is_empty() {
            let restart_time = negotiated
                .peer_graceful_restart
                .as_ref()
                .map(|g| g.restart_time)
                .unwrap_or(0);
            info!(peer = %address, restart_time, "peer went down: keeping its routes as stale (graceful restart)");
            peer.stale_since = Some(Instant::now());
            peer.stale_deadline =
                Some(Instant::now() + Duration::from_secs(u64::from(restart_time)));
        } else {
            peer.stale_since = None;
            peer.stale_deadline = None;
        }
        let changes = self.rib.peer_down(address, &keep);
        self.publish(changes).await;
    }

    async fn stale_timers(&mut self) {
        let now = Instant::now();
        let expired: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.stale_deadline.is_some_and(|d| d <= now))
            .map(|(a, _)| *a)
            .collect();
        let mut changes = Vec::new();
        for address in expired {
            warn!(peer = %address, "graceful restart timer expired: sweeping stale routes");
            changes.extend(self.rib.sweep_stale(address));
            if let Some(p) = self.peers.get_mut(&address) {
                p.stale_since = None;
                p.stale_deadline = None;
                p.awaiting_eor.clear();
            }
        }
        self.publish(changes).await;
    }

    async fn send_full_table(&mut self, address: IpAddr, with_eor: bool) {
        let Some(peer) = self.peers.get(&address) else {
            return;
        };
        let Some((_, negotiated, _)) = &peer.session else {
            return;
        };
        let changes = self.rib.full_table(address);
        let end_of_rib = if with_eor {
            negotiated.families.clone()
        } else {
            Vec::new()
        };
        let _ = peer
            .tx
            .send(PeerCmd::Advertise {
                changes,
                end_of_rib,
            })
            .await;
    }

    /// Tell subscribers and every established peer about Loc-RIB changes.
    async fn publish(&mut self, changes: Vec<BestChange>) {
        if changes.is_empty() {
            return;
        }
        self.subscribers.retain(|s| s.send(changes.clone()).is_ok());
        for (address, peer) in &self.peers {
            if peer.session.is_some() {
                let out = self.rib.advertise(*address, &changes);
                if !out.is_empty() {
                    let _ = peer
                        .tx
                        .send(PeerCmd::Advertise {
                            changes: out,
                            end_of_rib: Vec::new(),
                        })
                        .await;
                }
            }
        }
    }

    fn snapshots(&self) -> Vec<PeerSnapshot> {
        let mut out: Vec<PeerSnapshot> = self
            .peers
            .iter()
            .map(|(address, peer)| {
                let s = peer.status.snapshot();
                let counts = self.rib.counts(*address);
                PeerSnapshot {
                    config: peer.config.clone(),
                    state: s.state,
                    admin_down: s.admin_down,
                    established_since: s.established_at.map(|(_, wall)| wall),
                    uptime: s.established_at.map(|(mono, _)| mono.elapsed()),
                    down_since: s.down_at,
                    established_count: s.established_count,
                    negotiated: peer.session.as_ref().map(|(_, n, _)| (**n).clone()),
                    local: peer.session.as_ref().map(|(_, _, l)| *l),
                    received_messages: peer.status.received.snapshot(),
                    sent_messages: peer.status.sent.snapshot(),
                    received: counts.received,
                    accepted: counts.accepted,
                    advertised: counts.advertised,
                    stale: peer.stale_since.is_some(),
                    last_error: s.last_error,
                }
            })
            .collect();
        out.sort_by_key(|p| p.config.address);
        out
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) name the IPv4 peer.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
