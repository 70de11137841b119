//! The state machine as a specification: event lists in, action lists out.

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::wire::capability::{ExtendedNextHopEntry, GracefulRestartFamily};
use crate::wire::error::open as open_err;
use crate::wire::message::{RouteRefresh, Update};

const LOCAL_AS: Asn = Asn(64512);
const LOCAL_ID: RouterId = RouterId(Ipv4Addr::new(10, 0, 0, 1));
const PEER_ID: RouterId = RouterId(Ipv4Addr::new(10, 0, 0, 2));
const RETRY: Duration = Duration::from_secs(5);

fn mp(afi: u16) -> Capability {
    Capability::Multiprotocol {
        afi,
        safi: SAFI_UNICAST,
    }
}

/// An iBGP session, like the node full mesh.
fn cfg() -> FsmConfig {
    let mut cfg = FsmConfig::new(LOCAL_AS, LOCAL_ID, LOCAL_AS);
    cfg.connect_retry = RETRY;
    cfg
}

fn ebgp_cfg(peer: Asn) -> FsmConfig {
    let mut cfg = cfg();
    cfg.peer_asn = peer;
    cfg
}

/// The OPEN a well-behaved iBGP peer sends.
fn peer_open() -> Open {
    Open {
        version: 4,
        my_as: LOCAL_AS.0 as u16,
        hold_time: 90,
        router_id: PEER_ID,
        capabilities: vec![
            mp(AFI_IPV4),
            mp(AFI_IPV6),
            Capability::RouteRefresh,
            Capability::FourOctetAs(LOCAL_AS),
        ],
    }
}

fn open_msg(open: Open) -> Event {
    Event::Message(Message::Open(open))
}

fn notification(code: u8, subcode: u8) -> NotificationError {
    NotificationError::new(code, subcode)
}

fn send_notification(code: u8, subcode: u8) -> Action {
    Action::Send(Message::Notification(notification(code, subcode)))
}

fn update() -> Message {
    Message::Update(Update::default())
}

fn route_refresh() -> Message {
    Message::RouteRefresh(RouteRefresh {
        afi: AFI_IPV4,
        subtype: 0,
        safi: SAFI_UNICAST,
    })
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Feeds every event and returns the actions of the last one.
fn run(fsm: &mut Fsm, events: impl IntoIterator<Item = Event>) -> Vec<Action> {
    let mut last = Vec::new();
    for event in events {
        last = fsm.handle(event);
    }
    last
}

fn open_sent_with(cfg: FsmConfig) -> Fsm {
    let mut fsm = Fsm::new(cfg);
    run(&mut fsm, [Event::ManualStart, Event::TcpConnected]);
    assert_eq!(fsm.state(), State::OpenSent);
    fsm
}

fn open_confirm_with(cfg: FsmConfig, peer: Open) -> Fsm {
    let mut fsm = open_sent_with(cfg);
    run(&mut fsm, [open_msg(peer)]);
    assert_eq!(fsm.state(), State::OpenConfirm);
    fsm
}

fn established_with(cfg: FsmConfig, peer: Open) -> Fsm {
    let mut fsm = open_confirm_with(cfg, peer);
    run(&mut fsm, [Event::Message(Message::Keepalive)]);
    assert_eq!(fsm.state(), State::Established);
    fsm
}

fn established() -> Fsm {
    established_with(cfg(), peer_open())
}

/// Drives a session to Established and returns what it reported.
fn negotiate(cfg: FsmConfig, peer: Open) -> Negotiated {
    let mut fsm = open_confirm_with(cfg, peer);
    let actions = fsm.handle(Event::Message(Message::Keepalive));
    match actions.last() {
        Some(Action::Established(n)) => (**n).clone(),
        other => panic!("expected Established, got {other:?}"),
    }
}

// ---- Idle ----------------------------------------------------------------------------------

#[test]
fn manual_start_dials_and_arms_connect_retry() {
    // RFC 4271 8.2.2 Idle, event 1: start ConnectRetryTimer, initiate TCP, go to Connect.
    let mut fsm = Fsm::new(cfg());
    let actions = fsm.handle(Event::ManualStart);
    assert_eq!(
        actions,
        [
            Action::StartTimer(Timer::ConnectRetry, RETRY),
            Action::Connect
        ]
    );
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn passive_peer_never_connects() {
    // RFC 4271 8.2.2 Idle, event 5 (passive start): listen in Active, never initiate.
    let mut c = cfg();
    c.passive = true;
    let mut fsm = Fsm::new(c);
    assert_eq!(
        fsm.handle(Event::ManualStart),
        [Action::StartTimer(Timer::ConnectRetry, RETRY)]
    );
    assert_eq!(fsm.state(), State::Active);
    for _ in 0..3 {
        let actions = fsm.handle(Event::ConnectRetryTimerExpires);
        assert!(!actions.contains(&Action::Connect), "{actions:?}");
        assert_eq!(fsm.state(), State::Active);
    }
    let actions = fsm.handle(Event::TcpFailed);
    assert!(!actions.contains(&Action::Connect));
    assert_eq!(fsm.state(), State::Active);
}

#[test]
fn events_other_than_start_are_ignored_in_idle() {
    // RFC 4271 8.2.2 Idle: all other events are ignored (a fresh FSM's TcpConnected aside).
    let ignored = [
        Event::ManualStop,
        Event::ConnectRetryTimerExpires,
        Event::HoldTimerExpires,
        Event::KeepaliveTimerExpires,
        Event::TcpFailed,
        Event::Message(Message::Keepalive),
        open_msg(peer_open()),
        Event::DecodeError(notification(1, 1)),
        Event::CollisionLost,
    ];
    for event in ignored {
        let mut fsm = Fsm::new(cfg());
        assert_eq!(fsm.handle(event.clone()), [], "{event:?}");
        assert_eq!(fsm.state(), State::Idle, "{event:?}");
    }
}

#[test]
fn idle_after_error_stays_idle_until_manual_start() {
    // RFC 4271 8.1.1: automatic restart is optional; the caller owns the back-off.
    let mut fsm = established();
    run(&mut fsm, [Event::HoldTimerExpires]);
    assert_eq!(fsm.state(), State::Idle);
    for event in [
        Event::TcpConnected,
        Event::ConnectRetryTimerExpires,
        Event::TcpFailed,
    ] {
        assert_eq!(fsm.handle(event), []);
        assert_eq!(fsm.state(), State::Idle);
    }
    assert_eq!(
        fsm.handle(Event::ManualStart),
        [
            Action::StartTimer(Timer::ConnectRetry, RETRY),
            Action::Connect
        ]
    );
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn accepted_connection_on_fresh_fsm_sends_open() {
    // RFC 4271 8.2.2 Active, event 17: an incoming connection gets our OPEN and the 4 min timer.
    let mut fsm = Fsm::new(cfg());
    let actions = fsm.handle(Event::TcpConnected);
    assert_eq!(
        actions,
        [
            Action::Send(Message::Open(fsm.local_open().clone())),
            Action::StartTimer(Timer::Hold, OPEN_SENT_HOLD_TIME),
        ]
    );
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn accepted_connection_fsm_never_dials_after_failure() {
    // One FSM per connection: the FSM of an accepted socket must not start its own connects.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::TcpConnected]);
    let actions = fsm.handle(Event::TcpFailed);
    assert_eq!(fsm.state(), State::Active);
    assert!(actions.contains(&Action::Down(DownReason::ConnectionClosed)));
    let actions = fsm.handle(Event::ConnectRetryTimerExpires);
    assert!(!actions.contains(&Action::Connect), "{actions:?}");
    assert_eq!(fsm.state(), State::Active);
}

// ---- Connect / Active ----------------------------------------------------------------------

#[test]
fn tcp_connected_in_connect_sends_open_with_large_hold_timer() {
    // RFC 4271 8.2.2 Connect, event 16/17: stop ConnectRetry, send OPEN, hold timer 4 minutes.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::ManualStart]);
    let actions = fsm.handle(Event::TcpConnected);
    assert_eq!(
        actions,
        [
            Action::StopTimer(Timer::ConnectRetry),
            Action::Send(Message::Open(fsm.local_open().clone())),
            Action::StartTimer(Timer::Hold, secs(240)),
        ]
    );
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn tcp_connected_in_active_sends_open() {
    // RFC 4271 8.2.2 Active, event 17: same as in Connect.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::ManualStart, Event::TcpFailed]);
    assert_eq!(fsm.state(), State::Active);
    let actions = fsm.handle(Event::TcpConnected);
    assert_eq!(actions[0], Action::StopTimer(Timer::ConnectRetry));
    assert!(matches!(actions[1], Action::Send(Message::Open(_))));
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn local_open_carries_our_identity_and_capabilities() {
    // RFC 4271 4.2 and RFC 6793 4.1: version 4, AS_TRANS when our AS needs 4 octets.
    let mut c = cfg();
    c.local_asn = Asn(4_200_000_000);
    c.capabilities = vec![Capability::FourOctetAs(c.local_asn)];
    let fsm = Fsm::new(c.clone());
    let open = fsm.local_open();
    assert_eq!(open.version, 4);
    assert_eq!(open.my_as, 23456);
    assert_eq!(open.hold_time, 90);
    assert_eq!(open.router_id, LOCAL_ID);
    assert_eq!(open.capabilities, c.capabilities);
    assert_eq!(Fsm::new(cfg()).local_open().my_as, 64512);
}

#[test]
fn connect_retry_expiry_in_connect_dials_again() {
    // RFC 4271 8.2.2 Connect, event 9: restart the timer, initiate a new connection.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::ManualStart]);
    assert_eq!(
        fsm.handle(Event::ConnectRetryTimerExpires),
        [
            Action::StartTimer(Timer::ConnectRetry, RETRY),
            Action::Connect
        ]
    );
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn connect_retry_expiry_in_active_dials_and_moves_to_connect() {
    // RFC 4271 8.2.2 Active, event 9: restart the timer, initiate a connection, go to Connect.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::ManualStart, Event::TcpFailed]);
    assert_eq!(
        fsm.handle(Event::ConnectRetryTimerExpires),
        [
            Action::StartTimer(Timer::ConnectRetry, RETRY),
            Action::Connect
        ]
    );
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn tcp_failure_in_connect_moves_to_active() {
    // RFC 4271 8.2.2 Connect, event 18: restart ConnectRetry, go to Active.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::ManualStart]);
    assert_eq!(
        fsm.handle(Event::TcpFailed),
        [Action::StartTimer(Timer::ConnectRetry, RETRY)]
    );
    assert_eq!(fsm.state(), State::Active);
}

#[test]
fn manual_stop_before_connection_abandons_attempt_without_notification() {
    // RFC 4271 8.2.2 Connect/Active, event 2: drop the connection, stop ConnectRetry, Idle.
    for events in [
        vec![Event::ManualStart],
        vec![Event::ManualStart, Event::TcpFailed],
    ] {
        let mut fsm = Fsm::new(cfg());
        run(&mut fsm, events);
        assert_eq!(
            fsm.handle(Event::ManualStop),
            [Action::Disconnect, Action::StopTimer(Timer::ConnectRetry)]
        );
        assert_eq!(fsm.state(), State::Idle);
    }
}

#[test]
fn messages_and_decode_errors_are_ignored_before_connection() {
    // One FSM per connection: nothing can be read before TcpConnected.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::ManualStart]);
    assert_eq!(fsm.handle(open_msg(peer_open())), []);
    assert_eq!(fsm.handle(Event::DecodeError(notification(1, 2))), []);
    assert_eq!(fsm.handle(Event::CollisionLost), []);
    assert_eq!(fsm.state(), State::Connect);
}

// ---- OpenSent: checking the peer's OPEN ------------------------------------------------------

/// The actions of a rejected OPEN in OpenSent: the NOTIFICATION, close, stop the hold timer.
fn rejected(err: NotificationError) -> Vec<Action> {
    vec![
        Action::Send(Message::Notification(err.clone())),
        Action::Disconnect,
        Action::StopTimer(Timer::Hold),
        Action::Down(DownReason::NotificationSent(err)),
    ]
}

fn assert_open_rejected(cfg: FsmConfig, open: Open, err: NotificationError) {
    let mut fsm = open_sent_with(cfg);
    assert_eq!(fsm.handle(open_msg(open)), rejected(err));
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.peer_router_id(), None);
}

#[test]
fn open_with_wrong_version_sends_unsupported_version_with_version_4() {
    // RFC 4271 6.2: subcode 1, data = 2-octet largest supported version below the bid (4).
    for version in [3, 5] {
        let open = Open {
            version,
            ..peer_open()
        };
        assert_open_rejected(
            cfg(),
            open,
            NotificationError::with_data(2, open_err::UNSUPPORTED_VERSION, vec![0, 4]),
        );
    }
}

#[test]
fn open_with_wrong_peer_as_sends_bad_peer_as() {
    // RFC 4271 6.2: an unexpected My Autonomous System is Bad Peer AS (2/2).
    let open = Open {
        my_as: 65000,
        capabilities: vec![Capability::FourOctetAs(Asn(65000))],
        ..peer_open()
    };
    assert_open_rejected(cfg(), open, notification(2, open_err::BAD_PEER_AS));
}

#[test]
fn open_with_wrong_four_octet_as_sends_bad_peer_as() {
    // RFC 6793 4.1: the 4-octet capability carries the real AS; it is what must match.
    let open = Open {
        capabilities: vec![Capability::FourOctetAs(Asn(4_200_000_000))],
        ..peer_open()
    };
    assert_open_rejected(cfg(), open, notification(2, open_err::BAD_PEER_AS));
}

#[test]
fn open_with_as_trans_without_four_octet_cap_is_bad_peer_as_for_4_octet_peer() {
    // RFC 6793 4.1: a 2-octet-only speaker sending AS_TRANS is AS 23456, not our 4-octet peer.
    let c = ebgp_cfg(Asn(4_200_000_000));
    let open = Open {
        my_as: 23456,
        capabilities: vec![mp(AFI_IPV4)],
        ..peer_open()
    };
    assert_open_rejected(c, open, notification(2, open_err::BAD_PEER_AS));
}

#[test]
fn open_with_as_trans_and_four_octet_cap_matches_4_octet_peer() {
    // RFC 6793 4.1: My AS is AS_TRANS and the capability carries the real 4-octet AS.
    let peer = Asn(4_200_000_000);
    let open = Open {
        my_as: 23456,
        capabilities: vec![Capability::FourOctetAs(peer)],
        ..peer_open()
    };
    let n = negotiate(ebgp_cfg(peer), open);
    assert_eq!(n.peer_asn, peer);
    assert!(n.four_octet_as);
}

#[test]
fn open_from_two_octet_only_peer_matches_its_two_octet_as() {
    // RFC 6793 4.2: without the capability, My Autonomous System is the peer's AS.
    let open = Open {
        my_as: 65010,
        capabilities: vec![],
        ..peer_open()
    };
    let n = negotiate(ebgp_cfg(Asn(65010)), open);
    assert_eq!(n.peer_asn, Asn(65010));
    assert!(!n.four_octet_as);
}

#[test]
fn open_with_peer_as_zero_is_bad_peer_as() {
    // RFC 7607 section 2: AS 0 in an OPEN is Bad Peer AS.
    let open = Open {
        my_as: 0,
        capabilities: vec![Capability::FourOctetAs(Asn(0))],
        ..peer_open()
    };
    let mut c = cfg();
    // Even a (misconfigured) expectation of AS 0 does not make it acceptable.
    c.peer_asn = Asn(0);
    assert_open_rejected(c, open, notification(2, open_err::BAD_PEER_AS));
}

#[test]
fn open_with_zero_router_id_is_bad_bgp_identifier() {
    // RFC 6286 2.2: the BGP Identifier is a non-zero 4-octet value; else 2/3.
    let open = Open {
        router_id: RouterId(Ipv4Addr::UNSPECIFIED),
        ..peer_open()
    };
    assert_open_rejected(cfg(), open, notification(2, open_err::BAD_BGP_IDENTIFIER));
}

#[test]
fn ibgp_open_with_our_router_id_is_bad_bgp_identifier() {
    // RFC 6286 2.2: identifiers are unique within an AS, so an iBGP peer may not use ours.
    let open = Open {
        router_id: LOCAL_ID,
        ..peer_open()
    };
    assert_open_rejected(cfg(), open, notification(2, open_err::BAD_BGP_IDENTIFIER));
}

#[test]
fn ebgp_open_with_our_router_id_is_accepted() {
    // RFC 6286 2.2: uniqueness is only required within an AS.
    let peer = Asn(65020);
    let open = Open {
        my_as: 65020,
        router_id: LOCAL_ID,
        capabilities: vec![Capability::FourOctetAs(peer)],
        ..peer_open()
    };
    let n = negotiate(ebgp_cfg(peer), open);
    assert_eq!(n.peer_router_id, LOCAL_ID);
}

#[test]
fn open_with_hold_time_1_or_2_is_unacceptable_hold_time() {
    // RFC 4271 6.2: a hold time of one or two seconds MUST be rejected with 2/6.
    for hold_time in [1, 2] {
        let open = Open {
            hold_time,
            ..peer_open()
        };
        assert_open_rejected(
            cfg(),
            open,
            notification(2, open_err::UNACCEPTABLE_HOLD_TIME),
        );
    }
}

#[test]
fn version_is_checked_before_peer_as() {
    // RFC 4271 6.2 lists the checks in order; a version-5 OPEN may have any other layout.
    let open = Open {
        version: 5,
        my_as: 1,
        hold_time: 1,
        router_id: RouterId(Ipv4Addr::UNSPECIFIED),
        capabilities: vec![],
    };
    let mut fsm = open_sent_with(cfg());
    let actions = fsm.handle(open_msg(open));
    assert_eq!(
        actions[0],
        Action::Send(Message::Notification(NotificationError::with_data(
            2,
            1,
            vec![0, 4]
        )))
    );
}

// ---- OpenSent: accepting the OPEN and the other events -----------------------------------------

#[test]
fn acceptable_open_sends_keepalive_and_arms_negotiated_timers() {
    // RFC 4271 8.2.2 OpenSent, event 19: send KEEPALIVE, set hold and keepalive timers, OpenConfirm.
    let mut fsm = open_sent_with(cfg());
    assert_eq!(fsm.peer_router_id(), None);
    assert_eq!(
        fsm.handle(open_msg(peer_open())),
        [
            Action::Send(Message::Keepalive),
            Action::StartTimer(Timer::Hold, secs(90)),
            Action::StartTimer(Timer::Keepalive, secs(30)),
        ]
    );
    assert_eq!(fsm.state(), State::OpenConfirm);
    assert_eq!(fsm.peer_router_id(), Some(PEER_ID));
    assert_eq!(fsm.negotiated(), None, "only reported once Established");
}

#[test]
fn hold_time_is_the_smaller_proposal_and_keepalive_a_third() {
    // RFC 4271 4.2: hold time is the smaller of the two; section 10: keepalive a third of it.
    let cases = [
        // (ours, theirs, hold, keepalive)
        (90, 30, 30, 10),
        (30, 90, 30, 10),
        (90, 180, 90, 30),
        (3, 90, 3, 1),
        (10, 90, 10, 3),
        (0, 90, 0, 0),
        (90, 0, 0, 0),
    ];
    for (ours, theirs, hold, keepalive) in cases {
        let mut c = cfg();
        c.hold_time = ours;
        let open = Open {
            hold_time: theirs,
            ..peer_open()
        };
        let n = negotiate(c, open);
        assert_eq!(
            (n.hold_time, n.keepalive),
            (hold, keepalive),
            "{ours}/{theirs}"
        );
    }
}

#[test]
fn hold_time_zero_disables_hold_and_keepalive_timers() {
    // RFC 4271 4.2: with a zero hold time no timers run and no KEEPALIVEs are sent.
    let open = Open {
        hold_time: 0,
        ..peer_open()
    };
    let mut fsm = open_sent_with(cfg());
    assert_eq!(
        fsm.handle(open_msg(open)),
        [
            Action::Send(Message::Keepalive),
            Action::StopTimer(Timer::Hold)
        ]
    );
    let actions = fsm.handle(Event::Message(Message::Keepalive));
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert!(matches!(actions[0], Action::Established(_)));
    // Established: traffic never arms a timer, and stray expiries are ignored.
    for event in [
        Event::Message(Message::Keepalive),
        Event::HoldTimerExpires,
        Event::KeepaliveTimerExpires,
    ] {
        assert_eq!(fsm.handle(event.clone()), [], "{event:?}");
    }
    assert_eq!(
        fsm.handle(Event::Message(update())),
        [Action::Deliver(update())]
    );
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn hold_timer_expiry_in_opensent_sends_4_0() {
    // RFC 4271 8.2.2 OpenSent, event 10: NOTIFICATION Hold Timer Expired, close, Idle.
    let mut fsm = open_sent_with(cfg());
    assert_eq!(
        fsm.handle(Event::HoldTimerExpires),
        [
            send_notification(4, 0),
            Action::Disconnect,
            Action::Down(DownReason::HoldTimerExpired)
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn tcp_failure_in_opensent_falls_back_to_active() {
    // RFC 4271 8.2.2 OpenSent, event 18: close, restart ConnectRetry, go to Active.
    let mut fsm = open_sent_with(cfg());
    assert_eq!(
        fsm.handle(Event::TcpFailed),
        [
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StartTimer(Timer::ConnectRetry, RETRY),
            Action::Down(DownReason::ConnectionClosed),
        ]
    );
    assert_eq!(fsm.state(), State::Active);
    // And from Active it dials again when the timer fires.
    let actions = fsm.handle(Event::ConnectRetryTimerExpires);
    assert!(actions.contains(&Action::Connect));
}

#[test]
fn notification_in_opensent_goes_idle() {
    // RFC 4271 8.2.2 OpenSent, event 25: close the connection, go to Idle, no reply.
    let mut fsm = open_sent_with(cfg());
    let err = notification(6, 2);
    assert_eq!(
        fsm.handle(Event::Message(Message::Notification(err.clone()))),
        [
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::Down(DownReason::NotificationReceived(err)),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn unexpected_update_in_opensent_is_fsm_error_5_1() {
    // RFC 6608 section 4: anything but OPEN/NOTIFICATION in OpenSent is FSM error subcode 1.
    for msg in [update(), Message::Keepalive, route_refresh()] {
        let mut fsm = open_sent_with(cfg());
        assert_eq!(
            fsm.handle(Event::Message(msg.clone())),
            rejected(notification(5, 1)),
            "{msg:?}"
        );
        assert_eq!(fsm.state(), State::Idle);
    }
}

#[test]
fn decode_error_in_opensent_is_sent_as_notification() {
    // RFC 4271 6.1/6.2: a malformed message is answered with the NOTIFICATION the codec chose.
    let err = NotificationError::with_data(2, open_err::UNSUPPORTED_OPTIONAL_PARAMETER, vec![9]);
    let mut fsm = open_sent_with(cfg());
    assert_eq!(fsm.handle(Event::DecodeError(err.clone())), rejected(err));
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn manual_stop_in_opensent_sends_cease_administrative_shutdown() {
    // RFC 4271 8.2.2 OpenSent, event 2; RFC 4486: Cease subcode 2.
    let mut fsm = open_sent_with(cfg());
    assert_eq!(
        fsm.handle(Event::ManualStop),
        [
            send_notification(6, 2),
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::Down(DownReason::Stopped),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

// ---- OpenConfirm ---------------------------------------------------------------------------

#[test]
fn keepalive_in_openconfirm_establishes() {
    // RFC 4271 8.2.2 OpenConfirm, event 26: restart the hold timer, go to Established.
    let mut fsm = open_confirm_with(cfg(), peer_open());
    let actions = fsm.handle(Event::Message(Message::Keepalive));
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0], Action::StartTimer(Timer::Hold, secs(90)));
    let Action::Established(n) = &actions[1] else {
        panic!("expected Established, got {actions:?}");
    };
    assert_eq!(n.peer_open, peer_open());
    assert_eq!(&n.local_open, fsm.local_open());
    assert_eq!(n.peer_router_id, PEER_ID);
    assert_eq!(fsm.state(), State::Established);
    assert_eq!(fsm.negotiated(), Some(&**n));
}

#[test]
fn keepalive_timer_in_openconfirm_sends_keepalive() {
    // RFC 4271 8.2.2 OpenConfirm, event 11: send KEEPALIVE, restart the keepalive timer.
    let mut fsm = open_confirm_with(cfg(), peer_open());
    assert_eq!(
        fsm.handle(Event::KeepaliveTimerExpires),
        [
            Action::Send(Message::Keepalive),
            Action::StartTimer(Timer::Keepalive, secs(30))
        ]
    );
    assert_eq!(fsm.state(), State::OpenConfirm);
}

#[test]
fn hold_timer_expiry_in_openconfirm_sends_4_0() {
    // RFC 4271 8.2.2 OpenConfirm, event 10.
    let mut fsm = open_confirm_with(cfg(), peer_open());
    assert_eq!(
        fsm.handle(Event::HoldTimerExpires),
        [
            send_notification(4, 0),
            Action::Disconnect,
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::HoldTimerExpired),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.peer_router_id(), None);
}

#[test]
fn notification_in_openconfirm_goes_idle() {
    // RFC 4271 8.2.2 OpenConfirm, event 25.
    let mut fsm = open_confirm_with(cfg(), peer_open());
    let err = notification(2, 7);
    assert_eq!(
        fsm.handle(Event::Message(Message::Notification(err.clone()))),
        [
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::NotificationReceived(err)),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn unexpected_message_in_openconfirm_is_fsm_error_5_2() {
    // RFC 6608 section 4: OPEN, UPDATE or ROUTE-REFRESH in OpenConfirm is FSM error subcode 2.
    for msg in [Message::Open(peer_open()), update(), route_refresh()] {
        let mut fsm = open_confirm_with(cfg(), peer_open());
        let actions = fsm.handle(Event::Message(msg.clone()));
        assert_eq!(actions[0], send_notification(5, 2), "{msg:?}");
        assert_eq!(
            actions.last(),
            Some(&Action::Down(DownReason::NotificationSent(notification(
                5, 2
            ))))
        );
        assert_eq!(fsm.state(), State::Idle);
    }
}

#[test]
fn tcp_failure_in_openconfirm_goes_idle() {
    // RFC 4271 8.2.2 OpenConfirm, event 18: stop timers, go to Idle.
    let mut fsm = open_confirm_with(cfg(), peer_open());
    assert_eq!(
        fsm.handle(Event::TcpFailed),
        [
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::ConnectionClosed),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

// ---- Established ---------------------------------------------------------------------------

#[test]
fn keepalive_in_established_restarts_hold_timer() {
    // RFC 4271 8.2.2 Established, event 26: restart the hold timer.
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Event::Message(Message::Keepalive)),
        [Action::StartTimer(Timer::Hold, secs(90))]
    );
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn update_in_established_is_delivered_and_restarts_hold() {
    // RFC 4271 8.2.2 Established, event 27: process the UPDATE, restart the hold timer.
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Event::Message(update())),
        [
            Action::StartTimer(Timer::Hold, secs(90)),
            Action::Deliver(update())
        ]
    );
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn route_refresh_in_established_is_delivered() {
    // RFC 2918 section 4: a ROUTE-REFRESH asks us to re-advertise Adj-RIB-Out.
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Event::Message(route_refresh())),
        [
            Action::StartTimer(Timer::Hold, secs(90)),
            Action::Deliver(route_refresh())
        ]
    );
}

#[test]
fn keepalive_timer_in_established_sends_keepalive_and_rearms() {
    // RFC 4271 8.2.2 Established, event 11: send KEEPALIVE, restart the keepalive timer.
    let mut fsm = established();
    for _ in 0..2 {
        assert_eq!(
            fsm.handle(Event::KeepaliveTimerExpires),
            [
                Action::Send(Message::Keepalive),
                Action::StartTimer(Timer::Keepalive, secs(30))
            ]
        );
    }
}

#[test]
fn hold_timer_expiry_in_established_sends_4_0() {
    // RFC 4271 8.2.2 Established, event 10: NOTIFICATION Hold Timer Expired, close, Idle.
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Event::HoldTimerExpires),
        [
            send_notification(4, 0),
            Action::Disconnect,
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::HoldTimerExpired),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
    assert_eq!(fsm.negotiated(), None);
}

#[test]
fn notification_in_established_reports_down() {
    // RFC 4271 8.2.2 Established, event 25: delete routes (the caller), close, Idle.
    let mut fsm = established();
    let err = notification(6, 4);
    assert_eq!(
        fsm.handle(Event::Message(Message::Notification(err.clone()))),
        [
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::NotificationReceived(err)),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn open_in_established_is_fsm_error_5_3() {
    // RFC 6608 section 4: an OPEN in Established is FSM error subcode 3.
    let mut fsm = established();
    assert_eq!(
        fsm.handle(open_msg(peer_open())),
        [
            send_notification(5, 3),
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::NotificationSent(notification(5, 3))),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn tcp_failure_in_established_reports_connection_closed() {
    // RFC 4271 8.2.2 Established, event 18: close, stop timers, Idle.
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Event::TcpFailed),
        [
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::ConnectionClosed),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn decode_error_in_established_sends_it_and_reports_down() {
    // RFC 4271 6.3: an UPDATE error that is not treat-as-withdraw ends the session.
    let err = NotificationError::with_data(3, 1, Bytes::from_static(&[1, 2]));
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Event::DecodeError(err.clone())),
        [
            Action::Send(Message::Notification(err.clone())),
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::NotificationSent(err)),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn manual_stop_in_established_sends_cease_administrative_shutdown() {
    // RFC 4271 8.2.2 Established, event 2; RFC 4486: Cease subcode 2.
    let mut fsm = established();
    assert_eq!(
        fsm.handle(Event::ManualStop),
        [
            send_notification(6, 2),
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::Stopped),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn manual_start_and_tcp_events_are_ignored_in_established() {
    // One FSM per connection: a second connection belongs to another FSM.
    let mut fsm = established();
    for event in [
        Event::ManualStart,
        Event::TcpConnected,
        Event::ConnectRetryTimerExpires,
    ] {
        assert_eq!(fsm.handle(event.clone()), [], "{event:?}");
    }
    assert_eq!(fsm.state(), State::Established);
}

// ---- Timers --------------------------------------------------------------------------------

#[test]
fn stale_timer_expiry_is_ignored() {
    // A timer the FSM stopped may still fire in the caller; it must not tear the session down.
    let mut fsm = Fsm::new(cfg());
    run(&mut fsm, [Event::ManualStart, Event::TcpConnected]);
    assert_eq!(fsm.handle(Event::ConnectRetryTimerExpires), []);
    assert_eq!(fsm.handle(Event::KeepaliveTimerExpires), []);
    assert_eq!(fsm.state(), State::OpenSent);
}

/// The caller's view of the timers, maintained only from the actions.
#[derive(Default)]
struct TimerMirror(Vec<Timer>);

impl TimerMirror {
    fn apply(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::StartTimer(t, _) if !self.0.contains(t) => self.0.push(*t),
                Action::StopTimer(t) => {
                    assert!(
                        self.0.contains(t),
                        "StopTimer({t:?}) for a timer not running"
                    );
                    self.0.retain(|x| x != t);
                }
                _ => {}
            }
        }
    }

    fn fire(&mut self, t: Timer) {
        self.0.retain(|x| *x != t);
    }
}

#[test]
fn leaving_a_state_stops_every_timer_it_armed() {
    // Every path back to Idle leaves no timer running in the caller.
    let endings = [
        Event::HoldTimerExpires,
        Event::TcpFailed,
        Event::ManualStop,
        Event::CollisionLost,
        Event::DecodeError(notification(1, 3)),
        Event::Message(Message::Notification(notification(6, 3))),
        open_msg(peer_open()),
    ];
    let prefixes: [&[Event]; 3] = [
        &[Event::ManualStart, Event::TcpConnected],
        &[
            Event::ManualStart,
            Event::TcpConnected,
            Event::Message(Message::Open(peer_open())),
        ],
        &[
            Event::ManualStart,
            Event::TcpConnected,
            Event::Message(Message::Open(peer_open())),
            Event::Message(Message::Keepalive),
        ],
    ];
    for prefix in prefixes {
        for end in &endings {
            let mut fsm = Fsm::new(cfg());
            let mut mirror = TimerMirror::default();
            for event in prefix.iter().chain([end]) {
                if event == &Event::HoldTimerExpires {
                    mirror.fire(Timer::Hold);
                }
                mirror.apply(&fsm.handle(event.clone()));
            }
            if fsm.state() == State::Idle {
                assert_eq!(mirror.0, [], "{prefix:?} then {end:?}");
            }
        }
    }
}

// ---- Negotiation ---------------------------------------------------------------------------

#[test]
fn negotiated_families_are_the_intersection_of_multiprotocol_caps() {
    // RFC 4760 section 8: a family is usable only when both sides announced it.
    let mut c = cfg();
    c.capabilities = vec![mp(AFI_IPV4), mp(AFI_IPV6)];
    let open = Open {
        capabilities: vec![
            mp(AFI_IPV6),
            // A family we do not carry is ignored.
            Capability::Multiprotocol { afi: 25, safi: 65 },
            Capability::FourOctetAs(LOCAL_AS),
        ],
        ..peer_open()
    };
    assert_eq!(negotiate(c, open).families, [Family::Ipv6Unicast]);
    assert_eq!(
        negotiate(cfg(), peer_open()).families,
        [Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
}

#[test]
fn peer_without_multiprotocol_cap_speaks_ipv4_unicast_only() {
    // RFC 4760 section 8: no multiprotocol capability means IPv4 unicast only.
    let open = Open {
        capabilities: vec![Capability::FourOctetAs(LOCAL_AS)],
        ..peer_open()
    };
    assert_eq!(negotiate(cfg(), open).families, [Family::Ipv4Unicast]);
    let mut c = cfg();
    c.capabilities = vec![Capability::FourOctetAs(LOCAL_AS)];
    assert_eq!(negotiate(c, peer_open()).families, [Family::Ipv4Unicast]);
}

#[test]
fn four_octet_as_needs_both_sides() {
    // RFC 6793 section 4: 4-octet AS_PATHs only when both sides sent the capability.
    assert!(negotiate(cfg(), peer_open()).four_octet_as);
    let mut c = cfg();
    c.capabilities
        .retain(|cap| !matches!(cap, Capability::FourOctetAs(_)));
    assert!(!negotiate(c, peer_open()).four_octet_as);
    let open = Open {
        capabilities: vec![mp(AFI_IPV4)],
        ..peer_open()
    };
    assert!(!negotiate(cfg(), open).four_octet_as);
}

#[test]
fn route_refresh_and_extended_next_hop_need_both_sides() {
    // RFC 2918 section 3 and RFC 8950 section 3: usable only when both advertised.
    let enh = Capability::ExtendedNextHop(vec![ExtendedNextHopEntry {
        nlri_afi: AFI_IPV4,
        nlri_safi: 1,
        next_hop_afi: AFI_IPV6,
    }]);
    let mut c = cfg();
    c.capabilities.push(enh.clone());
    let mut open = peer_open();
    open.capabilities.push(enh);
    let n = negotiate(c.clone(), open.clone());
    assert!(n.route_refresh);
    assert!(n.extended_next_hop);

    open.capabilities
        .retain(|cap| matches!(cap, Capability::Multiprotocol { .. }));
    let n = negotiate(c, open);
    assert!(!n.route_refresh);
    assert!(!n.extended_next_hop);

    // An extended next hop entry for another family does not enable IPv4-over-IPv6.
    let mut c = cfg();
    c.capabilities
        .push(Capability::ExtendedNextHop(vec![ExtendedNextHopEntry {
            nlri_afi: AFI_IPV6,
            nlri_safi: 1,
            next_hop_afi: AFI_IPV4,
        }]));
    let mut open = peer_open();
    open.capabilities = c.capabilities.clone();
    assert!(!negotiate(c, open).extended_next_hop);
}

fn gr_cap(restart_time: u16) -> GracefulRestartCap {
    GracefulRestartCap {
        restart_state: true,
        notification: false,
        restart_time,
        families: vec![GracefulRestartFamily {
            afi: AFI_IPV4,
            safi: SAFI_UNICAST,
            forwarding: true,
        }],
    }
}

#[test]
fn peer_graceful_restart_is_reported_when_both_advertise() {
    // RFC 4724 section 3: the capability (even without families) enables receiver procedures.
    let mut c = cfg();
    c.capabilities
        .push(Capability::GracefulRestart(GracefulRestartCap::default()));
    let mut open = peer_open();
    open.capabilities
        .push(Capability::GracefulRestart(gr_cap(120)));
    assert_eq!(
        negotiate(c.clone(), open).peer_graceful_restart,
        Some(gr_cap(120))
    );
    assert_eq!(negotiate(c, peer_open()).peer_graceful_restart, None);
}

#[test]
fn peer_graceful_restart_ignored_when_we_do_not_advertise() {
    // RFC 4724 section 3: we did not agree to the procedures, so the peer's routes are not kept.
    let mut open = peer_open();
    open.capabilities
        .push(Capability::GracefulRestart(gr_cap(120)));
    assert_eq!(negotiate(cfg(), open).peer_graceful_restart, None);
}

// ---- Collisions ----------------------------------------------------------------------------

#[test]
fn collision_keeps_connection_of_higher_router_id() {
    // RFC 4271 6.8: the speaker with the higher BGP Identifier keeps the connection it opened.
    let low = RouterId(Ipv4Addr::new(10, 0, 0, 1));
    let high = RouterId(Ipv4Addr::new(10, 0, 0, 200));
    assert_eq!(resolve_collision(low, high), Keep::Incoming);
    assert_eq!(resolve_collision(high, low), Keep::Outgoing);
    // Compared as 32-bit integers, not as text.
    let nine = RouterId(Ipv4Addr::new(9, 255, 255, 255));
    let ten = RouterId(Ipv4Addr::new(10, 0, 0, 0));
    assert_eq!(resolve_collision(nine, ten), Keep::Incoming);
}

#[test]
fn collision_lost_sends_cease_connection_collision_resolution() {
    // RFC 4271 6.8 and RFC 4486: the losing connection is closed with Cease subcode 7.
    let mut fsm = open_confirm_with(cfg(), peer_open());
    assert_eq!(fsm.peer_router_id(), Some(PEER_ID));
    assert_eq!(
        fsm.handle(Event::CollisionLost),
        [
            send_notification(6, 7),
            Action::Disconnect,
            Action::StopTimer(Timer::Hold),
            Action::StopTimer(Timer::Keepalive),
            Action::Down(DownReason::NotificationSent(notification(6, 7))),
        ]
    );
    assert_eq!(fsm.state(), State::Idle);
}

// ---- Configuration -------------------------------------------------------------------------

#[test]
fn config_defaults_follow_rfc_4271_section_10() {
    // RFC 4271 section 10: hold time 90 s, ConnectRetry 120 s.
    let c = FsmConfig::new(LOCAL_AS, LOCAL_ID, Asn(65001));
    assert_eq!(c.hold_time, 90);
    assert_eq!(c.connect_retry, secs(120));
    assert!(!c.passive);
    assert!(c.capabilities.contains(&Capability::FourOctetAs(LOCAL_AS)));
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn config_with_hold_time_1_or_2_is_rejected_and_proposed_as_3() {
    // RFC 4271 4.2: the hold time MUST be either zero or at least three seconds.
    let mut c = cfg();
    c.hold_time = 2;
    assert_eq!(c.validate(), Err(ConfigError::HoldTime(2)));
    assert_eq!(Fsm::new(c).local_open().hold_time, 3);
    let mut c = cfg();
    c.hold_time = 0;
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn config_with_reserved_values_is_rejected() {
    // RFC 7607 (AS 0) and RFC 6286 (identifier 0) values cannot start a session.
    let mut c = cfg();
    c.local_asn = Asn(0);
    assert_eq!(c.validate(), Err(ConfigError::LocalAsn));
    let mut c = cfg();
    c.peer_asn = Asn(0);
    assert_eq!(c.validate(), Err(ConfigError::PeerAsn));
    let mut c = cfg();
    c.router_id = RouterId(Ipv4Addr::UNSPECIFIED);
    assert_eq!(c.validate(), Err(ConfigError::RouterId));
    let mut c = cfg();
    c.connect_retry = Duration::ZERO;
    assert_eq!(c.validate(), Err(ConfigError::ConnectRetry));
}

// ---- Invariants over arbitrary event sequences ---------------------------------------------

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn any_event() -> impl Strategy<Value = Event> {
        let messages = prop_oneof![
            Just(Message::Keepalive),
            Just(update()),
            Just(route_refresh()),
            Just(Message::Notification(notification(6, 2))),
            Just(Message::Open(peer_open())),
            // An OPEN that fails a check.
            Just(Message::Open(Open {
                hold_time: 1,
                ..peer_open()
            })),
            // An OPEN that negotiates a zero hold time.
            Just(Message::Open(Open {
                hold_time: 0,
                ..peer_open()
            })),
        ];
        prop_oneof![
            Just(Event::ManualStart),
            Just(Event::ManualStop),
            Just(Event::ConnectRetryTimerExpires),
            Just(Event::HoldTimerExpires),
            Just(Event::KeepaliveTimerExpires),
            Just(Event::TcpConnected),
            Just(Event::TcpFailed),
            Just(Event::DecodeError(notification(1, 2))),
            Just(Event::CollisionLost),
            messages.prop_map(Event::Message),
        ]
    }

    proptest! {
        // The caller mirrors the FSM's timers and session from the actions alone; any event
        // sequence must keep that mirror truthful (RFC 4271 8.2.2: leaving a state stops
        // the timers that belong to it).
        #[test]
        fn actions_keep_the_callers_view_consistent(
            passive in any::<bool>(),
            events in proptest::collection::vec(any_event(), 0..40),
        ) {
            let mut c = cfg();
            c.passive = passive;
            let mut fsm = Fsm::new(c);
            let mut mirror = TimerMirror::default();
            let mut up = false;
            for event in events {
                if let Some(t) = super::super::timer_of(&event) {
                    mirror.fire(t);
                }
                let before = fsm.state();
                let actions = fsm.handle(event);
                mirror.apply(&actions);
                let after = fsm.state();
                for action in &actions {
                    match action {
                        Action::Connect => prop_assert!(!passive),
                        Action::Established(_) => {
                            prop_assert_eq!(before, State::OpenConfirm);
                            prop_assert_eq!(after, State::Established);
                            up = true;
                        }
                        Action::Deliver(_) => prop_assert_eq!(after, State::Established),
                        Action::Send(Message::Open(_)) => prop_assert_eq!(after, State::OpenSent),
                        Action::Down(_) => up = false,
                        _ => {}
                    }
                }
                prop_assert_eq!(up, after == State::Established);
                prop_assert_eq!(fsm.negotiated().is_some(), after == State::Established);
                // Liveness: every state but Idle has a timer that will move it on, so a silent
                // peer or a lost connect can never leave the session stuck.
                let running = |t: Timer| mirror.0.contains(&t);
                let hold = fsm.session.as_ref().map_or(0, |s| s.hold_time);
                match after {
                    State::Idle => {
                        prop_assert!(mirror.0.is_empty(), "timers left running: {:?}", mirror.0)
                    }
                    State::Connect | State::Active => prop_assert!(running(Timer::ConnectRetry)),
                    State::OpenSent => prop_assert!(running(Timer::Hold)),
                    State::OpenConfirm | State::Established => {
                        prop_assert_eq!(running(Timer::Hold), hold != 0);
                        prop_assert_eq!(running(Timer::Keepalive), hold != 0);
                    }
                }
            }
        }
    }
}
