//! The speaker's tokio layer against scripted peers over real TCP on loopback: what a faulty or
//! unexpected peer does to one session must not touch the others (RFC 4271 section 6), and the
//! OPEN we send carries what the caller configured (RFC 4724 section 3).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use underroute_bgp::fsm::State;
use underroute_bgp::policy::{ImportPolicy, PrefixRule};
use underroute_bgp::speaker::{GracefulRestartConfig, PeerConfig, Speaker, SpeakerConfig};
use underroute_bgp::wire::{self, Capability, Message, NotificationError, Open, SessionContext};
use underroute_bgp::{Asn, Family, RouterId};

const OUR_AS: u32 = 64512;
const PEER_AS: u32 = 65010;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

async fn speaker(port: u16, gr: Option<GracefulRestartConfig>, peers: &[Ipv4Addr]) -> Speaker {
    let s = Speaker::start(SpeakerConfig {
        asn: Asn(OUR_AS),
        router_id: RouterId(Ipv4Addr::new(10, 255, 255, 1)),
        listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)],
        cluster_id: None,
        graceful_restart: gr,
        hostname: None,
    })
    .await
    .expect("speaker starts");
    for p in peers {
        let mut pc = PeerConfig::new(IpAddr::V4(*p), Asn(PEER_AS));
        // Passive: the scripted peers connect to us; nothing listens on their side.
        pc.passive = true;
        pc.families = vec![Family::Ipv4Unicast];
        s.add_peer(pc).await.expect("add peer");
    }
    s
}

/// A scripted peer: real TCP from `from`, hand-fed messages.
struct Scripted {
    stream: TcpStream,
    buf: BytesMut,
}

impl Scripted {
    async fn connect(from: Ipv4Addr, port: u16) -> Scripted {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.bind(SocketAddr::new(IpAddr::V4(from), 0))
            .expect("bind loopback alias");
        let stream = sock
            .connect(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
            .await
            .expect("connect");
        Scripted {
            stream,
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, msg: &Message) {
        let mut out = BytesMut::new();
        wire::encode_message(msg, &SessionContext::default(), &mut out).expect("encode");
        self.stream.write_all(&out).await.expect("write");
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next message, or None on EOF; bounded by 5 s.
    async fn recv(&mut self) -> Option<Message> {
        let ctx = SessionContext {
            four_octet_as: true,
            ..SessionContext::default()
        };
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Ok(Some(len)) = wire::frame_len(&self.buf) {
                    if self.buf.len() >= len {
                        let frame = self.buf.split_to(len);
                        return Some(
                            wire::decode_message(&frame, &ctx)
                                .expect("our speaker sends valid messages"),
                        );
                    }
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("peer answered within 5 s")
    }

    /// The next NOTIFICATION, skipping other messages; None if the connection ends first.
    async fn notification(&mut self) -> Option<NotificationError> {
        while let Some(m) = self.recv().await {
            if let Message::Notification(n) = m {
                return Some(n);
            }
        }
        None
    }

    /// OPEN, then KEEPALIVE: returns our speaker's OPEN.
    async fn establish(&mut self, id: Ipv4Addr) -> Open {
        self.establish_with(id, Vec::new()).await
    }

    /// OPEN with extra capabilities, then KEEPALIVE: returns our speaker's OPEN.
    async fn establish_with(&mut self, id: Ipv4Addr, extra: Vec<Capability>) -> Open {
        let mut open = Open {
            version: 4,
            my_as: PEER_AS as u16,
            hold_time: 90,
            router_id: RouterId(id),
            capabilities: vec![
                Capability::Multiprotocol { afi: 1, safi: 1 },
                Capability::FourOctetAs(Asn(PEER_AS)),
            ],
        };
        open.capabilities.extend(extra);
        self.send(&Message::Open(open)).await;
        let Some(Message::Open(theirs)) = self.recv().await else {
            panic!("expected our OPEN")
        };
        assert_eq!(self.recv().await, Some(Message::Keepalive));
        self.send(&Message::Keepalive).await;
        theirs
    }
}

async fn state_of(s: &Speaker, peer: Ipv4Addr) -> (State, Option<String>) {
    let p = s.peers().await.expect("peers");
    let p = p
        .iter()
        .find(|p| p.config.address == IpAddr::V4(peer))
        .expect("configured peer");
    (p.state, p.last_error.clone())
}

async fn wait_state(s: &Speaker, peer: Ipv4Addr, want: State) {
    for _ in 0..100 {
        if state_of(s, peer).await.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{peer} never reached {want:?}: {:?}",
        state_of(s, peer).await
    );
}

#[tokio::test]
async fn malformed_update_closes_only_its_own_session_with_invalid_network_field() {
    let a = Ipv4Addr::new(127, 0, 0, 2);
    let b = Ipv4Addr::new(127, 0, 0, 3);
    let port = free_port();
    let s = speaker(port, None, &[a, b]).await;
    let mut pa = Scripted::connect(a, port).await;
    pa.establish(Ipv4Addr::new(1, 1, 1, 2)).await;
    let mut pb = Scripted::connect(b, port).await;
    pb.establish(Ipv4Addr::new(1, 1, 1, 3)).await;
    wait_state(&s, a, State::Established).await;
    wait_state(&s, b, State::Established).await;

    // UPDATE whose NLRI says /33: the field cannot be parsed, so the session is reset with
    // UPDATE Message Error / Invalid Network Field (RFC 4271 6.3, RFC 7606 5.3).
    let mut bad = vec![0xff; 16];
    let body = [0u8, 0, 0, 0, 33, 10, 0, 0, 0, 1];
    bad.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    bad.push(2);
    bad.extend_from_slice(&body);
    pb.send_raw(&bad).await;
    let n = pb
        .notification()
        .await
        .expect("a NOTIFICATION before the close");
    assert_eq!((n.code, n.subcode), (3, 10), "Invalid Network Field: {n}");
    assert_eq!(
        pb.recv().await,
        None,
        "connection closed after the NOTIFICATION"
    );

    // The other session is untouched and keeps working.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&s, a).await.0, State::Established);
    let (state_b, err_b) = state_of(&s, b).await;
    assert_ne!(state_b, State::Established);
    assert!(err_b.unwrap_or_default().contains("sent NOTIFICATION"));
    pa.send(&Message::Keepalive).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state_of(&s, a).await.0, State::Established);
}

#[tokio::test]
async fn connection_from_an_unknown_address_is_refused_with_cease_connection_rejected() {
    let port = free_port();
    let _s = speaker(port, None, &[Ipv4Addr::new(127, 0, 0, 2)]).await;
    let mut stranger = Scripted::connect(Ipv4Addr::new(127, 0, 0, 9), port).await;
    // RFC 4486 section 4: Cease / Connection Rejected, then the connection is closed.
    match stranger.recv().await {
        Some(Message::Notification(n)) => assert_eq!((n.code, n.subcode), (6, 5), "{n}"),
        other => panic!("expected Cease 6/5, got {other:?}"),
    }
    assert_eq!(stranger.recv().await, None);
}

#[tokio::test]
async fn restarting_speaker_advertises_restart_state_and_forwarding_bits_it_is_given() {
    let a = Ipv4Addr::new(127, 0, 0, 4);
    let port = free_port();
    let gr = GracefulRestartConfig {
        restart_time: 77,
        restarting: true,
        forwarding_preserved: true,
        ..Default::default()
    };
    let _s = speaker(port, Some(gr), &[a]).await;
    let mut p = Scripted::connect(a, port).await;
    let ours = p.establish(Ipv4Addr::new(1, 1, 1, 4)).await;
    let cap = ours
        .capabilities
        .iter()
        .find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        })
        .expect("graceful restart capability in our OPEN");
    assert!(cap.restart_state, "R bit");
    assert_eq!(cap.restart_time, 77);
    assert_eq!(cap.families.len(), 1);
    assert!(cap.families[0].forwarding, "F bit for ipv4-unicast");
    // And End-of-RIB follows the (empty) initial table: RFC 4724 section 2.
    let mut saw_eor = false;
    for _ in 0..3 {
        match p.recv().await {
            Some(Message::Update(u))
                if u.withdrawn.is_empty() && u.nlri.is_empty() && u.attributes.is_empty() =>
            {
                saw_eor = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    assert!(
        saw_eor,
        "End-of-RIB for ipv4-unicast after the initial table"
    );
}

#[tokio::test]
async fn removing_a_peer_sends_cease_deconfigured_and_withdraws_its_routes_from_others() {
    let a = Ipv4Addr::new(127, 0, 0, 5);
    let b = Ipv4Addr::new(127, 0, 0, 6);
    let port = free_port();
    let s = speaker(port, None, &[a, b]).await;
    let mut pa = Scripted::connect(a, port).await;
    pa.establish(Ipv4Addr::new(1, 1, 1, 5)).await;
    let mut pb = Scripted::connect(b, port).await;
    pb.establish(Ipv4Addr::new(1, 1, 1, 6)).await;
    wait_state(&s, a, State::Established).await;
    wait_state(&s, b, State::Established).await;

    // A announces a prefix; B (another eBGP peer) must learn it from us.
    let ctx = SessionContext {
        four_octet_as: true,
        local_asn: Asn(PEER_AS),
        peer_asn: Asn(OUR_AS),
        ..SessionContext::default()
    };
    let attrs = wire::PathAttrs {
        as_path: wire::AsPath {
            segments: vec![wire::AsSegment::Sequence(vec![Asn(PEER_AS)])],
        },
        next_hop: Some(IpAddr::V4(a)),
        ..Default::default()
    };
    let prefix: ipnet::IpNet = "10.77.0.0/24".parse().expect("literal");
    let mut out = BytesMut::new();
    wire::encode_announce(&ctx, &attrs, &[prefix], &mut out).expect("encode");
    pa.send_raw(&out).await;
    let learned = wait_for_update(&mut pb, |r| {
        r.announced.iter().any(|x| x.prefixes.contains(&prefix))
    })
    .await;
    assert!(learned, "B learned A's prefix");

    // Deconfigure A: RFC 4486 Cease / Peer De-configured to A, and A's routes withdrawn from B.
    s.remove_peer(IpAddr::V4(a)).await.expect("remove peer");
    let n = pa.notification().await.expect("Cease before the close");
    assert_eq!((n.code, n.subcode), (6, 3), "{n}");
    let withdrawn = wait_for_update(&mut pb, |r| r.withdrawn.contains(&prefix)).await;
    assert!(withdrawn, "B got the withdrawal");
    assert!(s
        .peers()
        .await
        .expect("peers")
        .iter()
        .all(|p| p.config.address != IpAddr::V4(a)));
}

/// Read UPDATEs until one matches (true) or the connection ends or goes quiet (false).
async fn wait_for_update(p: &mut Scripted, mut f: impl FnMut(&wire::RouteUpdate) -> bool) -> bool {
    let ctx = SessionContext {
        four_octet_as: true,
        local_asn: Asn(PEER_AS),
        peer_asn: Asn(OUR_AS),
        ..SessionContext::default()
    };
    for _ in 0..20 {
        match p.recv().await {
            Some(Message::Update(u)) if f(&u.routes(&ctx)) => return true,
            Some(_) => continue,
            None => return false,
        }
    }
    false
}

fn gr_cap(restarting: bool) -> Capability {
    Capability::GracefulRestart(wire::GracefulRestartCap {
        restart_state: restarting,
        notification: false,
        restart_time: 60,
        families: vec![wire::GracefulRestartFamily {
            afi: 1,
            safi: 1,
            forwarding: true,
        }],
    })
}

fn peer_ctx() -> SessionContext {
    SessionContext {
        four_octet_as: true,
        local_asn: Asn(PEER_AS),
        peer_asn: Asn(OUR_AS),
        ..SessionContext::default()
    }
}

async fn announce(p: &mut Scripted, from: Ipv4Addr, prefixes: &[ipnet::IpNet]) {
    let attrs = wire::PathAttrs {
        as_path: wire::AsPath {
            segments: vec![wire::AsSegment::Sequence(vec![Asn(PEER_AS)])],
        },
        next_hop: Some(IpAddr::V4(from)),
        ..Default::default()
    };
    let mut out = BytesMut::new();
    wire::encode_announce(&peer_ctx(), &attrs, prefixes, &mut out).expect("encode");
    p.send_raw(&out).await;
}

/// (prefix, stale) of our Loc-RIB.
async fn table(s: &Speaker) -> Vec<(ipnet::IpNet, bool)> {
    let rib = s.loc_rib(None).await.expect("loc rib");
    rib.iter()
        .filter_map(|e| Some((e.prefix, e.paths.first()?.stale)))
        .collect()
}

async fn wait_table(s: &Speaker, want: &[(ipnet::IpNet, bool)]) {
    for _ in 0..100 {
        if table(s).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("table never became {want:?}: {:?}", table(s).await);
}

#[tokio::test]
async fn gr_peer_reconnecting_while_established_keeps_routes_stale_until_end_of_rib() {
    let a = Ipv4Addr::new(127, 0, 0, 7);
    let port = free_port();
    let s = speaker(port, Some(GracefulRestartConfig::default()), &[a]).await;
    let keep: ipnet::IpNet = "10.88.0.0/24".parse().expect("literal");
    let gone: ipnet::IpNet = "10.88.1.0/24".parse().expect("literal");

    let mut old = Scripted::connect(a, port).await;
    old.establish_with(Ipv4Addr::new(1, 1, 1, 7), vec![gr_cap(false)])
        .await;
    wait_state(&s, a, State::Established).await;
    announce(&mut old, a, &[keep, gone]).await;
    wait_table(&s, &[(keep, false), (gone, false)]).await;

    // The peer restarts and connects again before its old session is seen to die: RFC 4724
    // section 4.2 says to treat the old session as terminated, keeping its routes stale.
    let mut new = Scripted::connect(a, port).await;
    new.establish_with(Ipv4Addr::new(1, 1, 1, 7), vec![gr_cap(true)])
        .await;
    let mut old_got_notification = false;
    while let Some(m) = old.recv().await {
        old_got_notification |= matches!(m, Message::Notification(_));
    }
    assert!(
        !old_got_notification,
        "the old session is closed without a NOTIFICATION"
    );
    wait_state(&s, a, State::Established).await;
    wait_table(&s, &[(keep, true), (gone, true)]).await;

    // The restarted peer re-announces one route, then End-of-RIB: the other is swept.
    announce(&mut new, a, &[keep]).await;
    new.send(&Message::Update(wire::Update::end_of_rib(
        Family::Ipv4Unicast,
    )))
    .await;
    wait_table(&s, &[(keep, false)]).await;
}

#[tokio::test]
async fn a_changed_import_policy_judges_announced_routes_again_without_a_session_reset() {
    let a = Ipv4Addr::new(127, 0, 0, 9);
    let port = free_port();
    let s = speaker(port, None, &[a]).await;
    let mut pa = Scripted::connect(a, port).await;
    pa.establish(Ipv4Addr::new(1, 1, 1, 9)).await;
    wait_state(&s, a, State::Established).await;
    let net = |t: &str| t.parse::<ipnet::IpNet>().expect("literal");
    announce(&mut pa, a, &[net("10.1.0.0/24"), net("10.2.0.0/24")]).await;
    wait_table(
        &s,
        &[(net("10.1.0.0/24"), false), (net("10.2.0.0/24"), false)],
    )
    .await;

    // Tighter: 10.2.0.0/24 leaves the Loc-RIB, the session stays up.
    let only_first = ImportPolicy::Prefixes(vec![PrefixRule::exact(net("10.1.0.0/24"))]);
    s.set_import_policy(IpAddr::V4(a), only_first)
        .await
        .expect("known peer");
    wait_table(&s, &[(net("10.1.0.0/24"), false)]).await;
    // Looser again: the rejected route was kept, so it comes back without a ROUTE-REFRESH.
    s.set_import_policy(IpAddr::V4(a), ImportPolicy::AcceptAll)
        .await
        .expect("known peer");
    wait_table(
        &s,
        &[(net("10.1.0.0/24"), false), (net("10.2.0.0/24"), false)],
    )
    .await;
    assert_eq!(state_of(&s, a).await.0, State::Established);
    assert!(s
        .set_import_policy(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 99)), ImportPolicy::Deny)
        .await
        .is_err());
}

#[tokio::test]
async fn a_new_local_as_closes_every_session_with_cease_other_configuration_change() {
    let a = Ipv4Addr::new(127, 0, 0, 10);
    let port = free_port();
    let s = speaker(port, None, &[a]).await;
    let mut pa = Scripted::connect(a, port).await;
    pa.establish(Ipv4Addr::new(1, 1, 1, 10)).await;
    wait_state(&s, a, State::Established).await;

    s.set_local_asn(Asn(64999)).await.expect("speaker runs");
    let n = pa.notification().await.expect("Cease before the close");
    assert_eq!((n.code, n.subcode), (6, 6), "{n}");
    assert!(
        s.peers().await.expect("peers").is_empty(),
        "the caller adds peers back"
    );
    assert_eq!(s.config().asn, Asn(64999));

    // Added back, the peer sees the new AS in our OPEN.
    let mut pc = PeerConfig::new(IpAddr::V4(a), Asn(PEER_AS));
    pc.passive = true;
    pc.families = vec![Family::Ipv4Unicast];
    s.add_peer(pc).await.expect("add peer");
    let mut again = Scripted::connect(a, port).await;
    let open = again.establish(Ipv4Addr::new(1, 1, 1, 10)).await;
    assert!(
        open.capabilities
            .contains(&Capability::FourOctetAs(Asn(64999))),
        "{open:?}"
    );
}
