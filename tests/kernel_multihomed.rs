//! The multi-homed host problem (docs/kernel.md), end to end in namespaces.
//!
//! ```text
//!   client 10.0.0.100 ──┐            (LAN bridge in `sw`)
//!   gw     10.0.0.254 ──┼── host 10.0.0.1 (h1)
//!   gw 192.168.1.254 ────── host 192.168.1.1 (h0, default route)     host vethpod0 ── pod 10.254.0.5
//! ```
//!
//! The client talks to 192.168.1.1 through the gateway, whose nftables firewall is stateful
//! (established/related accepted, invalid dropped). Without per-address tables the host answers
//! straight onto the LAN, the gateway never sees the SYN-ACK and drops the rest as invalid. With
//! them, the answer goes back through the gateway. A pod on the host talking to 192.168.1.1 gets
//! its replies locally because the per-address table also holds the pod routes.

mod support;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::programmer::NsProgrammer;
use underroute::kernel::{DesiredRoutes, KernelConfig};
use underroute_testbed::Netns;

const PORT: u16 = 18080;

fn sh(ns: &Netns, cmd: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    ns.exec_ok(&args)
        .unwrap_or_else(|e| panic!("{} in {}: {e}", cmd, ns.name()));
}

/// A veth with one end in `a` (named `a_if`) and the other in `b` (named `b_if`), both up.
fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    sh(
        a,
        &format!(
            "ip link add {a_if} type veth peer name {b_if} netns {}",
            b.name()
        ),
    );
    sh(a, &format!("ip link set {a_if} up"));
    sh(b, &format!("ip link set {b_if} up"));
}

struct Topo {
    // Drop order: namespaces last is fine, nothing else runs in them but our threads.
    host: Netns,
    client: Netns,
    pod: Netns,
    _gw: Netns,
    _sw: Netns,
}

fn topology() -> Topo {
    let sw = Netns::new("kmsw").expect("sw");
    let gw = Netns::new("kmgw").expect("gw");
    let host = Netns::new("kmh").expect("host");
    let client = Netns::new("kmc").expect("client");
    let pod = Netns::new("kmp").expect("pod");
    // The LAN: a bridge with the client, the gateway's LAN leg and the host's second interface.
    sh(&sw, "ip link add br0 type bridge");
    sh(&sw, "ip link set br0 up");
    for (port, ns, ifname) in [
        ("sc", &client, "c0"),
        ("sg", &gw, "g0"),
        ("sh", &host, "h1"),
    ] {
        veth(&sw, port, ns, ifname);
        sh(&sw, &format!("ip link set {port} master br0"));
    }
    sh(&client, "ip addr add 10.0.0.100/24 dev c0");
    sh(&client, "ip route add default via 10.0.0.254");
    sh(&gw, "ip addr add 10.0.0.254/24 dev g0");
    sh(&host, "ip addr add 10.0.0.1/24 dev h1");
    // The host's primary network, behind the gateway.
    veth(&gw, "g1", &host, "h0");
    sh(&gw, "ip addr add 192.168.1.254/24 dev g1");
    sh(&host, "ip addr add 192.168.1.1/24 dev h0");
    sh(&host, "ip route add default via 192.168.1.254 dev h0");
    gw.sysctl("net.ipv4.ip_forward", "1").expect("forwarding");
    for ns in [&host, &gw, &client] {
        // The reverse-path filter would hide the routing asymmetry we are testing.
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0")
            .expect("rp_filter");
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0")
            .expect("rp_filter");
    }
    let rules = gw.dir().join("fw.nft");
    std::fs::write(
        &rules,
        "table inet fw {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  \
         ct state established,related accept\n  ct state invalid drop\n }\n}\n",
    )
    .expect("nft file");
    gw.exec_ok(&["nft", "-f", &rules.to_string_lossy()])
        .expect("nft ruleset");
    // A pod: veth into the host, the CNI-style /32 host route tagged with our protocol.
    veth(&host, "vethpod0", &pod, "eth0");
    sh(&host, "ip addr add 169.254.1.1/32 dev vethpod0 scope link");
    sh(
        &host,
        "ip route add 10.254.0.5/32 dev vethpod0 scope link proto 201",
    );
    sh(&pod, "ip addr add 10.254.0.5/32 dev eth0");
    sh(&pod, "ip route add 169.254.1.1 dev eth0 scope link");
    sh(&pod, "ip route add default via 169.254.1.1 dev eth0");
    Topo {
        host,
        client,
        pod,
        _gw: gw,
        _sw: sw,
    }
}

/// An echo-with-prefix server on 192.168.1.1 inside the host namespace, stopped on drop.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(host: &Netns) -> Server {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let name = host.name().to_string();
        let ns_path = format!("/run/netns/{name}");
        let thread = std::thread::spawn(move || {
            if let Err(e) = enter(&ns_path) {
                let _ = ready_tx.send(Err(e));
                return;
            }
            let l = match TcpListener::bind(("192.168.1.1", PORT)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = l.set_nonblocking(true);
            let _ = ready_tx.send(Ok(()));
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 4];
                        if s.read_exact(&mut buf).is_ok() {
                            let _ = s.write_all(b"pong");
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("server thread")
            .expect("server bind");
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn enter(ns_path: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
    // SAFETY: setns on an open namespace fd, for this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// From inside `ns`: connect to 192.168.1.1, send "ping", expect "pong", all within ~2 s.
fn exchange(ns: &Netns) -> Result<(), String> {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || -> Result<(), String> {
        enter(&path)?;
        let to: SocketAddr = ([192, 168, 1, 1], PORT).into();
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"ping").map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
        (&buf == b"pong")
            .then_some(())
            .ok_or_else(|| "wrong reply".into())
    })
    .join()
    .map_err(|_| "client thread panicked".to_string())?
}

#[test]
fn replies_leave_through_the_interface_the_request_came_in_on() {
    if !underroute_testbed::require_root(
        "replies_leave_through_the_interface_the_request_came_in_on",
    ) {
        return;
    }
    let t = topology();
    let _server = Server::start(&t.host);

    let without = exchange(&t.client);
    assert!(
        without.is_err(),
        "without per-address tables the stateful gateway must break the connection"
    );
    // Without the tables the pod still works (main table), as the baseline.
    exchange(&t.pod).expect("pod baseline");

    let p = NsProgrammer::start(&t.host, KernelConfig::default()).expect("programmer");
    p.set_routes(DesiredRoutes::new()).expect("set_routes");
    let snap = p.snapshot().expect("snapshot");
    assert_eq!(
        snap.tables.len(),
        2,
        "tables for 192.168.1.1 and 10.0.0.1: {:?}",
        snap.tables
    );

    exchange(&t.client).expect("with per-address tables the connection works");

    // The pod's replies stay local: the table of 192.168.1.1 holds the CNI route.
    exchange(&t.pod).expect("pod talks to 192.168.1.1 with the tables in place");
    let get = t
        .host
        .exec_stdout(&["ip", "route", "get", "10.254.0.5", "from", "192.168.1.1"])
        .expect("ip route get");
    assert!(
        get.contains("dev vethpod0"),
        "reply route to the pod: {get}"
    );
    assert!(
        !get.contains("via 192.168.1.254"),
        "not via the gateway: {get}"
    );
    p.shutdown().expect("shutdown");
}
