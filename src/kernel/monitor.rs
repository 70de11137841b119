//! The netlink monitor: listens to the route, rule, address and link multicast groups and tells
//! the programmer when the kernel changed in a way that concerns it.
//!
//! Owns: one read-only multicast socket. It never writes to the kernel and never decides what to
//! change; it only says "look again". Notifications caused by our own requests (they carry our
//! request socket's port id) are ignored. A receive-buffer overflow (`ENOBUFS`) means events were
//! lost, so it asks for a full look as well.

use std::io;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::{routes, rules, tables, KernelConfig, KernelError, MAIN_TABLE};

// rtnetlink multicast groups (linux/rtnetlink.h, enum rtnetlink_groups).
const RTNLGRP_LINK: u32 = 1;
const RTNLGRP_IPV4_IFADDR: u32 = 5;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV4_RULE: u32 = 8;
const RTNLGRP_IPV6_IFADDR: u32 = 9;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_IPV6_RULE: u32 = 19;

/// Opens the subscribed socket (in the calling thread's namespace).
pub(crate) fn open() -> Result<AsyncFd<Socket>, KernelError> {
    let io_err = |what| move |source| KernelError::Io { what, source };
    let mut sock = Socket::new(NETLINK_ROUTE).map_err(io_err("monitor socket"))?;
    sock.bind_auto().map_err(io_err("monitor bind"))?;
    for g in [
        RTNLGRP_LINK,
        RTNLGRP_IPV4_IFADDR,
        RTNLGRP_IPV4_ROUTE,
        RTNLGRP_IPV4_RULE,
        RTNLGRP_IPV6_IFADDR,
        RTNLGRP_IPV6_ROUTE,
        RTNLGRP_IPV6_RULE,
    ] {
        sock.add_membership(g)
            .map_err(io_err("monitor group membership"))?;
    }
    sock.set_rx_buf_sz(4 << 20)
        .map_err(io_err("monitor SO_RCVBUF"))?;
    sock.set_non_blocking(true)
        .map_err(io_err("monitor O_NONBLOCK"))?;
    // SAFETY: the socket owns its fd and keeps it open, unchanged, until the AsyncFd drops it.
    unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(|e| io_err("monitor registration")(e.into()))
}

/// Whether a notification concerns us.
fn relevant(cfg: &KernelConfig, msg: &RouteNetlinkMessage) -> bool {
    use RouteNetlinkMessage as M;
    match msg {
        M::NewLink(_) | M::DelLink(_) | M::NewAddress(_) | M::DelAddress(_) => true,
        M::NewRoute(r) | M::DelRoute(r) => match routes::decode(r) {
            Some(r) => {
                r.protocol == cfg.route_protocol
                    || (r.key.table == MAIN_TABLE && r.key.prefix.prefix_len() == 0)
                    || tables::in_range(cfg, r.key.table)
            }
            None => false,
        },
        M::NewRule(r) | M::DelRule(r) => {
            rules::decode(r).is_some_and(|r| r.protocol == cfg.route_protocol)
        }
        _ => false,
    }
}

/// Reads notifications until the programmer goes away; sends a kick for each relevant batch.
pub(crate) async fn run(
    sock: AsyncFd<Socket>,
    cfg: KernelConfig,
    own_port: u32,
    kick: mpsc::Sender<()>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        let mut guard = match sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "netlink monitor failed; relying on periodic resync");
                return;
            }
        };
        buf.clear();
        let res = guard.try_io(|s| s.get_ref().recv(&mut buf, 0));
        let want = match res {
            Err(_would_block) => continue,
            Ok(Ok(_)) => {
                let mut want = false;
                super::batch::for_each_slice(&buf, |slice| {
                    // Our own writes echo back by the hundred thousand: skip them on the raw
                    // header (port id at bytes 12..16) before paying for a full decode.
                    let port = u32::from_ne_bytes([slice[12], slice[13], slice[14], slice[15]]);
                    if want || (port == own_port && own_port != 0) {
                        return;
                    }
                    let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(slice) else {
                        return;
                    };
                    if let NetlinkPayload::InnerMessage(inner) = &m.payload {
                        want = relevant(&cfg, inner);
                    }
                });
                want
            }
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::debug!("netlink monitor overflowed; asking for a full reconcile");
                true
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => false,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "netlink monitor read failed; relying on periodic resync");
                return;
            }
        };
        if want {
            match kick.try_send(()) {
                Ok(()) | Err(mpsc::error::TrySendError::Full(())) => {}
                Err(mpsc::error::TrySendError::Closed(())) => return,
            }
        }
    }
}
