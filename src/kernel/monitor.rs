//! The netlink monitor: listens to the route, rule, address and link multicast groups and tells
//! the programmer when the kernel changed in a way that concerns it.
//!
//! Owns: one read-only multicast socket. It never writes to the kernel and never decides what to
//! change; it only says "look again". Notifications caused by our own requests (they carry our
//! request socket's port id) are ignored. A receive-buffer overflow (`ENOBUFS`) means events were
//! lost, so it asks for a full look as well.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// A second descriptor of the monitor socket, with which the programmer leaves the route groups
/// around its own big writes: with a listener subscribed, the kernel builds and queues one
/// notification per route inside our `sendmsg` (about a quarter of the cost of a 100k add), and
/// the burst overflows the monitor anyway, which then asks for a full re-read. Leaving the groups
/// keeps that outcome (the programmer asks for the full re-read itself) without the cost.
pub(crate) struct RouteGroups(OwnedFd);

impl RouteGroups {
    fn set(&self, join: bool) -> io::Result<()> {
        let opt = if join {
            libc::NETLINK_ADD_MEMBERSHIP
        } else {
            libc::NETLINK_DROP_MEMBERSHIP
        };
        for g in [RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE] {
            // SAFETY: setsockopt on an open fd with a pointer to a live u32 of the given size.
            let rc = unsafe {
                libc::setsockopt(
                    self.0.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    &g as *const u32 as *const libc::c_void,
                    std::mem::size_of::<u32>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Stops route notifications to the monitor.
    pub fn leave(&self) -> io::Result<()> {
        self.set(false)
    }

    /// Resumes route notifications to the monitor.
    pub fn join(&self) -> io::Result<()> {
        self.set(true)
    }
}

/// Opens the subscribed socket (in the calling thread's namespace), and a handle on its route
/// group membership.
pub(crate) fn open() -> Result<(AsyncFd<Socket>, RouteGroups), KernelError> {
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
    // SAFETY: the fd is open (the socket owns it); dup returns a new fd or -1.
    let dup = unsafe { libc::dup(sock.as_raw_fd()) };
    if dup < 0 {
        return Err(io_err("monitor dup")(io::Error::last_os_error()));
    }
    // SAFETY: dup just returned this fd and nothing else owns it.
    let groups = RouteGroups(unsafe { OwnedFd::from_raw_fd(dup) });
    // SAFETY: the socket owns its fd and keeps it open, unchanged, until the AsyncFd drops it.
    let fd = unsafe { AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE) }
        .map_err(|e| io_err("monitor registration")(e.into()))?;
    Ok((fd, groups))
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
