//! The speaker's tokio layer against scripted peers over real TCP on loopback: what a faulty or
//! unexpected peer does to one session must not touch the others (RFC 4271 section 6), and the
//! OPEN we send carries what the caller configured (RFC 4724 section 3).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use underroute_bgp::fsm::State;
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

    /// OPEN, then KEEPALIVE: returns our speaker's OPEN.
    async fn establish(&mut self, id: Ipv4Addr) -> Open {
        let open = Open {
            version: 4,
            my_as: PEER_AS as u16,
            hold_time: 90,
            router_id: RouterId(id),
            capabilities: vec![
                Capability::Multiprotocol { afi: 1, safi: 1 },
                Capability::FourOctetAs(Asn(PEER_AS)),
            ],
        };
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
    let mut got = None;
    while let Some(m) = pb.recv().await {
        if let Message::Notification(n) = m {
            got = Some(n);
            break;
        }
    }
    let n: NotificationError = got.expect("a NOTIFICATION before the close");
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
