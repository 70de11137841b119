//! The BGP-4 session state machine (RFC 4271 section 8), sans-IO.
//!
//! Owns the state of one session attempt on one TCP connection: which state it is in, which
//! timers should be running, whether the peer's OPEN is acceptable and what the two OPENs
//! negotiated. It must never do I/O, read a clock or spawn anything: the caller feeds
//! [`Event`]s (socket outcomes, decoded messages, timer expiries) into [`Fsm::handle`] and
//! performs the [`Action`]s it returns, in order.
//!
//! ```text
//!  ManualStart ──► Connect ◄──► Active          (passive: Active only, never dials)
//!                     │ TcpConnected │
//!                     └──────┬───────┘  send OPEN, hold timer 4 min
//!                            ▼
//!                        OpenSent ── OPEN ok: send KEEPALIVE ──► OpenConfirm
//!                                                                    │ KEEPALIVE
//!                                                                    ▼
//!   any error: NOTIFICATION, Disconnect, Down ──► Idle          Established
//! ```
//!
//! Simplifications of the RFC's optional parts, deliberate:
//! - One FSM per TCP connection. An accepted connection gets a fresh FSM that is fed
//!   [`Event::TcpConnected`] straight away; collision detection (RFC 4271 section 6.8) is done
//!   by the caller, which sees both connections, with [`resolve_collision`] and
//!   [`Event::CollisionLost`].
//! - No automatic restart: once an error brings the FSM back to [`State::Idle`] it stays there.
//!   The caller decides when to feed [`Event::ManualStart`] again, after its own idle-hold /
//!   back-off delay, so that a flapping peer cannot make us reconnect in a tight loop
//!   (the role of the RFC's optional DampPeerOscillations).
//! - No DelayOpen, no per-peer collision bookkeeping inside the FSM.

mod collision;
mod negotiate;
#[cfg(test)]
mod tests;

use std::time::Duration;

use crate::types::{Asn, Family, RouterId, AFI_IPV4, AFI_IPV6, SAFI_UNICAST};
use crate::wire::capability::{Capability, GracefulRestartCap};
use crate::wire::error::{cease, code, fsm as fsm_err, NotificationError};
use crate::wire::message::{Message, Open};

pub use collision::{resolve_collision, Keep};

/// Hold time we propose when the configuration does not say otherwise (RFC 4271 section 10).
pub const DEFAULT_HOLD_TIME: u16 = 90;
/// ConnectRetry time when the configuration does not say otherwise (RFC 4271 section 10).
pub const DEFAULT_CONNECT_RETRY: Duration = Duration::from_secs(120);
/// The hold timer while waiting for the peer's OPEN: "a large value", 4 minutes suggested by
/// RFC 4271 section 8.2.2, because the hold time is not negotiated yet.
pub const OPEN_SENT_HOLD_TIME: Duration = Duration::from_secs(240);

/// What one session is configured to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    /// Our AS number.
    pub local_asn: Asn,
    /// Our BGP identifier.
    pub router_id: RouterId,
    /// The AS the peer must announce; any other gets NOTIFICATION 2/2 Bad Peer AS.
    pub peer_asn: Asn,
    /// The hold time we propose in seconds: 0 (no keepalives) or at least 3.
    /// Default [`DEFAULT_HOLD_TIME`].
    pub hold_time: u16,
    /// How long to wait between connection attempts. Default [`DEFAULT_CONNECT_RETRY`].
    pub connect_retry: Duration,
    /// Never initiate the TCP connection; only wait for the peer's.
    pub passive: bool,
    /// The capabilities we put in our OPEN, in order. The caller builds them, including
    /// `FourOctetAs(local_asn)`; the FSM only reads them to work out what was negotiated.
    pub capabilities: Vec<Capability>,
}

impl FsmConfig {
    /// A configuration with the RFC defaults and the capabilities this speaker normally
    /// offers: IPv4 and IPv6 unicast, route refresh and 4-octet AS numbers.
    pub fn new(local_asn: Asn, router_id: RouterId, peer_asn: Asn) -> FsmConfig {
        FsmConfig {
            local_asn,
            router_id,
            peer_asn,
            hold_time: DEFAULT_HOLD_TIME,
            connect_retry: DEFAULT_CONNECT_RETRY,
            passive: false,
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                },
                Capability::Multiprotocol {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                },
                Capability::RouteRefresh,
                Capability::FourOctetAs(local_asn),
            ],
        }
    }

    /// Checks the values the FSM cannot work with. [`Fsm::new`] does not fail, so call this
    /// when the configuration is loaded and report the error to the operator.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(ConfigError::HoldTime(self.hold_time));
        }
        if self.connect_retry.is_zero() {
            return Err(ConfigError::ConnectRetry);
        }
        if self.local_asn == Asn(0) {
            return Err(ConfigError::LocalAsn);
        }
        if self.peer_asn == Asn(0) {
            return Err(ConfigError::PeerAsn);
        }
        if self.router_id.0.is_unspecified() {
            return Err(ConfigError::RouterId);
        }
        Ok(())
    }
}

/// A configuration value the FSM cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// RFC 4271 section 4.2: the hold time is 0 or at least 3 seconds.
    #[error("hold_time {0} is invalid: use 0 (no keepalives) or at least 3 seconds")]
    HoldTime(u16),
    /// A zero ConnectRetry time would make the FSM reconnect in a tight loop.
    #[error("connect_retry must be greater than zero")]
    ConnectRetry,
    /// RFC 7607: AS 0 is reserved.
    #[error("local_asn 0 is reserved (RFC 7607): configure the node's real AS number")]
    LocalAsn,
    /// RFC 7607: AS 0 is reserved.
    #[error("peer_asn 0 is reserved (RFC 7607): configure the peer's real AS number")]
    PeerAsn,
    /// RFC 6286: the BGP identifier is a non-zero 32-bit value.
    #[error("router_id 0.0.0.0 is invalid: configure a non-zero router id")]
    RouterId,
}

/// The session states of RFC 4271 section 8.2.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying to do anything; waiting for [`Event::ManualStart`].
    Idle,
    /// Trying to open a TCP connection to the peer.
    Connect,
    /// Waiting for a TCP connection (from the peer, or until it is time to try again).
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged and our KEEPALIVE sent; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// The session is up: routes may be exchanged.
    Established,
}

/// The three timers the FSM asks the caller to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Time to wait before the next connection attempt.
    ConnectRetry,
    /// Time the peer may stay silent before the session is declared dead.
    Hold,
    /// Time between our KEEPALIVEs.
    Keepalive,
}

impl Timer {
    const ALL: [Timer; 3] = [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive];

    fn bit(self) -> u8 {
        match self {
            Timer::ConnectRetry => 1,
            Timer::Hold => 2,
            Timer::Keepalive => 4,
        }
    }
}

/// Something that happened, fed to [`Fsm::handle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start the session (RFC 4271 event 1). Ignored unless Idle.
    ManualStart,
    /// Stop the session (event 2): Cease / Administrative Shutdown if connected.
    ManualStop,
    /// The ConnectRetry timer fired (event 9).
    ConnectRetryTimerExpires,
    /// The Hold timer fired (event 10).
    HoldTimerExpires,
    /// The Keepalive timer fired (event 11).
    KeepaliveTimerExpires,
    /// The TCP connection is up: our connect succeeded, or we accepted the peer's connection
    /// (events 16/17). For an accepted connection, feed this to a fresh FSM (never started);
    /// it then behaves as a passive session and never dials.
    TcpConnected,
    /// The connection attempt failed, or the connection closed or could not be read (event 18).
    TcpFailed,
    /// A decoded message from the peer.
    Message(Message),
    /// The codec rejected a message; the error says which NOTIFICATION to send.
    DecodeError(NotificationError),
    /// The caller resolved a connection collision against this connection (event 23,
    /// RFC 4271 section 6.8): send Cease / Connection Collision Resolution and close.
    CollisionLost,
}

/// Something the caller must do, returned by [`Fsm::handle`] in the order to do it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a TCP connection to the peer, abandoning any attempt still in flight.
    Connect,
    /// Close the TCP connection, or abandon the attempt in flight. Harmless when there is none.
    Disconnect,
    /// Send an OPEN, KEEPALIVE or NOTIFICATION. UPDATEs are sent by the caller directly once
    /// Established; the FSM does not restart its keepalive timer for them, which only costs
    /// an occasional redundant KEEPALIVE.
    Send(Message),
    /// (Re)arm a timer with this duration, replacing any previous deadline.
    StartTimer(Timer, Duration),
    /// Disarm a timer. Emitted only for timers the FSM had started.
    StopTimer(Timer),
    /// The session entered Established with these parameters.
    Established(Box<Negotiated>),
    /// An UPDATE or ROUTE-REFRESH received in Established: hand it to the RIB.
    Deliver(Message),
    /// A connection that had reached OpenSent or later was torn down (from Established or
    /// during setup), and why. The caller knows whether it had seen [`Action::Established`].
    Down(DownReason),
}

/// What two OPENs negotiated, reported when the session becomes Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's OPEN as received.
    pub peer_open: Open,
    /// Our OPEN as sent.
    pub local_open: Open,
    /// The hold time in seconds: the smaller of the two proposals; 0 means no hold timer.
    pub hold_time: u16,
    /// The keepalive interval in seconds: a third of the hold time, 0 when it is 0.
    pub keepalive: u16,
    /// The peer's real AS number (the 4-octet capability wins over "My AS").
    pub peer_asn: Asn,
    /// The peer's BGP identifier.
    pub peer_router_id: RouterId,
    /// Families both sides announced (IPv4 unicast for a side that sent no multiprotocol
    /// capability at all, RFC 4760 section 8), in [`Family::ALL`] order.
    pub families: Vec<Family>,
    /// Both sides sent the 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// Both sides sent the route refresh capability (RFC 2918).
    pub route_refresh: bool,
    /// Both sides offered IPv4 unicast NLRI with IPv6 next hops (RFC 8950).
    pub extended_next_hop: bool,
    /// The peer's graceful restart capability, when both sides advertised one (RFC 4724).
    pub peer_graceful_restart: Option<GracefulRestartCap>,
}

/// Why a connection that had reached OpenSent or later went down.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownReason {
    /// We sent this NOTIFICATION (bad OPEN, FSM error, decode error, collision).
    #[error("sent NOTIFICATION: {0}")]
    NotificationSent(NotificationError),
    /// The peer sent this NOTIFICATION.
    #[error("received NOTIFICATION: {0}")]
    NotificationReceived(NotificationError),
    /// The peer was silent for the hold time; we sent NOTIFICATION 4/0.
    #[error("hold timer expired")]
    HoldTimerExpired,
    /// The TCP connection closed or failed.
    #[error("connection closed")]
    ConnectionClosed,
    /// [`Event::ManualStop`]; we sent Cease / Administrative Shutdown.
    #[error("stopped by configuration")]
    Stopped,
}

/// One BGP session attempt on one TCP connection. See the module documentation.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: FsmConfig,
    local_open: Open,
    state: State,
    /// Bit set of [`Timer::bit`]s the caller is running on our behalf.
    armed: u8,
    /// ManualStart or TcpConnected was seen at least once; distinguishes a fresh FSM (which
    /// accepts an incoming connection in Idle) from one that went Idle after an error.
    started: bool,
    /// This FSM runs an accepted connection: like a passive session, it never dials.
    accepted: bool,
    /// What the OPENs negotiated, from the peer's acceptable OPEN until teardown.
    session: Option<Negotiated>,
}

impl Fsm {
    /// A new FSM in [`State::Idle`].
    ///
    /// An invalid hold time of 1 or 2 seconds (see [`FsmConfig::validate`]) is proposed as 3,
    /// the smallest legal value, rather than making construction fail.
    pub fn new(cfg: FsmConfig) -> Fsm {
        let hold_time = if cfg.hold_time == 1 || cfg.hold_time == 2 {
            3
        } else {
            cfg.hold_time
        };
        Fsm {
            local_open: negotiate::local_open(&cfg, hold_time),
            cfg,
            state: State::Idle,
            armed: 0,
            started: false,
            accepted: false,
            session: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration this FSM runs with.
    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// The OPEN this FSM sends.
    pub fn local_open(&self) -> &Open {
        &self.local_open
    }

    /// What the session negotiated; `Some` only while Established.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        match self.state {
            State::Established => self.session.as_ref(),
            _ => None,
        }
    }

    /// The peer's BGP identifier, known once an acceptable OPEN was received (OpenConfirm and
    /// Established), for collision detection. `None` again once the connection is torn down.
    pub fn peer_router_id(&self) -> Option<RouterId> {
        self.session.as_ref().map(|s| s.peer_router_id)
    }

    /// Feeds one event and returns the actions to perform, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();

        // A timer event for a timer we no longer run is a race between the caller's StopTimer
        // and an expiry already queued; acting on it would, e.g., kill a healthy session.
        if let Some(timer) = timer_of(&event) {
            if !self.is_armed(timer) {
                return out;
            }
            self.armed &= !timer.bit();
        }

        match event {
            Event::ManualStart => self.on_manual_start(&mut out),
            Event::ManualStop => self.on_manual_stop(&mut out),
            Event::ConnectRetryTimerExpires => self.on_connect_retry(&mut out),
            Event::HoldTimerExpires => self.on_hold_expired(&mut out),
            Event::KeepaliveTimerExpires => self.on_keepalive_timer(&mut out),
            Event::TcpConnected => self.on_tcp_connected(&mut out),
            Event::TcpFailed => self.on_tcp_failed(&mut out),
            Event::Message(msg) => self.on_message(msg, &mut out),
            Event::DecodeError(err) => {
                if self.is_connected() {
                    self.teardown(
                        &mut out,
                        Some(err.clone()),
                        DownReason::NotificationSent(err),
                    );
                }
            }
            Event::CollisionLost => {
                if self.is_connected() {
                    let err =
                        NotificationError::new(code::CEASE, cease::CONNECTION_COLLISION_RESOLUTION);
                    self.teardown(
                        &mut out,
                        Some(err.clone()),
                        DownReason::NotificationSent(err),
                    );
                }
            }
        }
        out
    }

    fn on_manual_start(&mut self, out: &mut Vec<Action>) {
        if self.state != State::Idle {
            return;
        }
        self.started = true;
        self.accepted = false;
        self.start_timer(out, Timer::ConnectRetry, self.cfg.connect_retry);
        if self.never_dials() {
            self.state = State::Active;
        } else {
            out.push(Action::Connect);
            self.state = State::Connect;
        }
    }

    fn on_manual_stop(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Idle => {}
            State::Connect | State::Active => {
                // No connection yet, so nobody to tell; just abandon any attempt in flight.
                out.push(Action::Disconnect);
                self.stop_all_timers(out);
                self.state = State::Idle;
            }
            State::OpenSent | State::OpenConfirm | State::Established => {
                let err = NotificationError::new(code::CEASE, cease::ADMINISTRATIVE_SHUTDOWN);
                self.teardown(out, Some(err), DownReason::Stopped);
            }
        }
    }

    fn on_connect_retry(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Connect | State::Active => {
                self.start_timer(out, Timer::ConnectRetry, self.cfg.connect_retry);
                if !self.never_dials() {
                    out.push(Action::Connect);
                    self.state = State::Connect;
                }
            }
            // The timer is stopped on leaving Connect/Active, so this is unreachable in
            // practice; ignoring it is the safe reading.
            _ => {}
        }
    }

    fn on_hold_expired(&mut self, out: &mut Vec<Action>) {
        if self.is_connected() {
            let err = NotificationError::new(code::HOLD_TIMER_EXPIRED, 0);
            self.teardown(out, Some(err), DownReason::HoldTimerExpired);
        }
    }

    fn on_keepalive_timer(&mut self, out: &mut Vec<Action>) {
        if matches!(self.state, State::OpenConfirm | State::Established) {
            out.push(Action::Send(Message::Keepalive));
            let keepalive = self.keepalive_interval();
            if keepalive != 0 {
                self.start_timer(out, Timer::Keepalive, secs(keepalive));
            }
        }
    }

    fn on_tcp_connected(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Idle if !self.started => {
                // A fresh FSM for a connection the peer opened to us.
                self.started = true;
                self.accepted = true;
                self.send_open(out);
            }
            State::Connect | State::Active => {
                self.stop_timer(out, Timer::ConnectRetry);
                self.send_open(out);
            }
            // Idle after an error stays Idle until ManualStart; a second connection on a
            // connected FSM cannot happen with one FSM per connection.
            _ => {}
        }
    }

    fn send_open(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Send(Message::Open(self.local_open.clone())));
        self.start_timer(out, Timer::Hold, OPEN_SENT_HOLD_TIME);
        self.state = State::OpenSent;
    }

    fn on_tcp_failed(&mut self, out: &mut Vec<Action>) {
        match self.state {
            State::Idle => {}
            State::Connect | State::Active => {
                // The attempt failed: wait for the retry timer (or the peer) in Active.
                self.start_timer(out, Timer::ConnectRetry, self.cfg.connect_retry);
                self.state = State::Active;
            }
            State::OpenSent => {
                // RFC 4271 8.2.2: the peer may still connect to us, so keep trying from Active.
                out.push(Action::Disconnect);
                self.stop_timer(out, Timer::Hold);
                self.start_timer(out, Timer::ConnectRetry, self.cfg.connect_retry);
                out.push(Action::Down(DownReason::ConnectionClosed));
                self.session = None;
                self.state = State::Active;
            }
            State::OpenConfirm | State::Established => {
                self.teardown(out, None, DownReason::ConnectionClosed);
            }
        }
    }

    fn on_message(&mut self, msg: Message, out: &mut Vec<Action>) {
        match self.state {
            // Not connected: the caller has no socket to read from, so nothing to act on.
            State::Idle | State::Connect | State::Active => {}
            State::OpenSent => match msg {
                Message::Open(open) => self.on_open(open, out),
                Message::Notification(err) => {
                    self.teardown(out, None, DownReason::NotificationReceived(err));
                }
                _ => self.fsm_error(out, fsm_err::UNEXPECTED_IN_OPENSENT),
            },
            State::OpenConfirm => match msg {
                Message::Keepalive => {
                    self.restart_hold(out);
                    self.state = State::Established;
                    if let Some(session) = &self.session {
                        out.push(Action::Established(Box::new(session.clone())));
                    }
                }
                Message::Notification(err) => {
                    self.teardown(out, None, DownReason::NotificationReceived(err));
                }
                _ => self.fsm_error(out, fsm_err::UNEXPECTED_IN_OPENCONFIRM),
            },
            State::Established => match msg {
                Message::Keepalive => self.restart_hold(out),
                // Any UPDATE or ROUTE-REFRESH is as good a sign of life as a KEEPALIVE; RFC
                // 4271 names only UPDATE because ROUTE-REFRESH came later (RFC 2918).
                Message::Update(_) | Message::RouteRefresh(_) => {
                    self.restart_hold(out);
                    out.push(Action::Deliver(msg));
                }
                Message::Notification(err) => {
                    self.teardown(out, None, DownReason::NotificationReceived(err));
                }
                Message::Open(_) => self.fsm_error(out, fsm_err::UNEXPECTED_IN_ESTABLISHED),
            },
        }
    }

    fn on_open(&mut self, open: Open, out: &mut Vec<Action>) {
        if let Err(err) = negotiate::check_open(&self.cfg, &open) {
            self.teardown(out, Some(err.clone()), DownReason::NotificationSent(err));
            return;
        }
        let session = negotiate::negotiate(&self.local_open, &open);
        let (hold, keepalive) = (session.hold_time, session.keepalive);
        self.session = Some(session);
        out.push(Action::Send(Message::Keepalive));
        if hold == 0 {
            // RFC 4271 4.2: a zero hold time means neither timer runs for this session.
            self.stop_timer(out, Timer::Hold);
        } else {
            self.start_timer(out, Timer::Hold, secs(hold));
            self.start_timer(out, Timer::Keepalive, secs(keepalive));
        }
        self.state = State::OpenConfirm;
    }

    fn fsm_error(&mut self, out: &mut Vec<Action>, subcode: u8) {
        let err = NotificationError::new(code::FSM, subcode);
        self.teardown(out, Some(err.clone()), DownReason::NotificationSent(err));
    }

    /// Leaves a connected state for Idle: optional NOTIFICATION, close, stop every timer,
    /// report why. The one exit path, so the caller's view stays consistent.
    fn teardown(
        &mut self,
        out: &mut Vec<Action>,
        notification: Option<NotificationError>,
        reason: DownReason,
    ) {
        if let Some(err) = notification {
            out.push(Action::Send(Message::Notification(err)));
        }
        out.push(Action::Disconnect);
        self.stop_all_timers(out);
        out.push(Action::Down(reason));
        self.session = None;
        self.state = State::Idle;
    }

    fn restart_hold(&mut self, out: &mut Vec<Action>) {
        let hold = self.negotiated_hold();
        if hold != 0 {
            self.start_timer(out, Timer::Hold, secs(hold));
        }
    }

    fn negotiated_hold(&self) -> u16 {
        self.session.as_ref().map_or(0, |s| s.hold_time)
    }

    fn keepalive_interval(&self) -> u16 {
        self.session.as_ref().map_or(0, |s| s.keepalive)
    }

    fn never_dials(&self) -> bool {
        self.cfg.passive || self.accepted
    }

    fn is_connected(&self) -> bool {
        matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }

    fn is_armed(&self, timer: Timer) -> bool {
        self.armed & timer.bit() != 0
    }

    fn start_timer(&mut self, out: &mut Vec<Action>, timer: Timer, after: Duration) {
        self.armed |= timer.bit();
        out.push(Action::StartTimer(timer, after));
    }

    fn stop_timer(&mut self, out: &mut Vec<Action>, timer: Timer) {
        if self.is_armed(timer) {
            self.armed &= !timer.bit();
            out.push(Action::StopTimer(timer));
        }
    }

    fn stop_all_timers(&mut self, out: &mut Vec<Action>) {
        for timer in Timer::ALL {
            self.stop_timer(out, timer);
        }
    }
}

fn timer_of(event: &Event) -> Option<Timer> {
    match event {
        Event::ConnectRetryTimerExpires => Some(Timer::ConnectRetry),
        Event::HoldTimerExpires => Some(Timer::Hold),
        Event::KeepaliveTimerExpires => Some(Timer::Keepalive),
        _ => None,
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}
