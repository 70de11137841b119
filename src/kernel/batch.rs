//! The request socket: batched writes and interrupt-safe dumps over one rtnetlink socket.
//!
//! Owns: the socket the programmer writes through. Writes are packed many to a `sendmsg`; only
//! the last message of each packet asks for an ACK, so a batch costs one syscall plus one read of
//! its errors, not one awaited round trip per route. The kernel handles every message of a
//! `sendmsg` in order inside the call and answers failed ones with an `NLMSG_ERROR` carrying the
//! message's sequence number, which maps the error back to its request. It must never be used
//! from an async context directly: calls block (the programmer runs them on a blocking thread).

use std::io;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::KernelError;

/// Bytes per `sendmsg`: well under the default socket send buffer (~208 KiB), and few enough
/// messages (~1000 routes) that their error replies always fit the receive buffer.
const PACKET_BYTES: usize = 64 * 1024;
/// Receive buffer requested for the socket (dumps of big tables arrive fast).
const RCVBUF: usize = 8 << 20;
/// An interrupted dump (the table changed under it) is retried this many times.
const DUMP_TRIES: u32 = 8;
/// No kernel answer within this time means something is badly wrong; never wait forever.
const RECV_TIMEOUT_SECS: i64 = 10;

/// A blocking rtnetlink socket for requests.
pub(crate) struct Netlink {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    port: u32,
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> KernelError {
    move |source| KernelError::Io { what, source }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, KernelError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(io_err("socket"))?;
        let addr = sock.bind_auto().map_err(io_err("bind"))?;
        // Smaller error replies: the kernel does not echo the whole request back.
        sock.set_cap_ack(true).map_err(io_err("NETLINK_CAP_ACK"))?;
        sock.set_rx_buf_sz(RCVBUF).map_err(io_err("SO_RCVBUF"))?;
        set_recv_timeout(&sock)?;
        Ok(Netlink {
            sock,
            seq: 1,
            rx: Vec::with_capacity(1 << 20),
            tx: Vec::with_capacity(PACKET_BYTES + 4096),
            port: addr.port_number(),
        })
    }

    /// Our netlink port id: notifications caused by our own requests carry it.
    pub fn port_id(&self) -> u32 {
        self.port
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends `n` requests, packed, and returns the outcome of each: 0 or a positive errno.
    /// `write(i, buf)` appends the body of request `i` (everything after the netlink header) to
    /// `buf` and returns its message type and `NLM_F_*` flags besides `NLM_F_REQUEST`: bodies go
    /// straight into the send buffer, with no message value or allocation per request.
    pub fn execute(
        &mut self,
        n: usize,
        mut write: impl FnMut(usize, &mut Vec<u8>) -> (u16, u16),
    ) -> Result<Vec<i32>, KernelError> {
        let mut results = vec![0i32; n];
        let mut next = 0;
        while next < n {
            self.tx.clear();
            let first = next;
            let first_seq = self.seq.wrapping_add(1);
            let mut last_at = 0;
            while next < n && self.tx.len() < PACKET_BYTES {
                last_at = self.tx.len();
                self.tx.extend_from_slice(&[0u8; 16]);
                let (kind, flags) = write(next, &mut self.tx);
                let seq = self.next_seq();
                let len = (self.tx.len() - last_at) as u32;
                let h = &mut self.tx[last_at..last_at + 16];
                h[0..4].copy_from_slice(&len.to_ne_bytes());
                h[4..6].copy_from_slice(&kind.to_ne_bytes());
                h[6..8].copy_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
                h[8..12].copy_from_slice(&seq.to_ne_bytes());
                // Bodies are 4-byte aligned already; keep the next header aligned regardless.
                self.tx.resize((self.tx.len() + 3) & !3, 0);
                next += 1;
            }
            // Only the packet's last message asks for an ACK: its arrival means the kernel has
            // handled the whole packet, and failures of the others were reported before it.
            let flags =
                u16::from_ne_bytes([self.tx[last_at + 6], self.tx[last_at + 7]]) | NLM_F_ACK;
            self.tx[last_at + 6..last_at + 8].copy_from_slice(&flags.to_ne_bytes());
            let last_seq = self.seq;
            self.sock.send(&self.tx, 0).map_err(io_err("sendmsg"))?;
            self.read_acks(first_seq, last_seq, &mut results[first..next])?;
        }
        Ok(results)
    }

    /// Reads replies until the ACK (or error) of `last_seq`; errors of `first..=last` land in
    /// `out` by sequence number.
    fn read_acks(&mut self, first: u32, last: u32, out: &mut [i32]) -> Result<(), KernelError> {
        loop {
            self.recv()?;
            let mut done = false;
            for_each_message(&self.rx, |hdr, payload| {
                if hdr.message_type != netlink_packet_core::NLMSG_ERROR {
                    return;
                }
                let seq = hdr.sequence_number;
                let code = payload
                    .get(0..4)
                    .and_then(|b| b.try_into().ok())
                    .map(i32::from_ne_bytes)
                    .unwrap_or(0);
                let idx = seq.wrapping_sub(first) as usize;
                if idx < out.len() {
                    out[idx] = -code;
                }
                if seq == last {
                    done = true;
                }
            });
            if done {
                return Ok(());
            }
        }
    }

    fn recv(&mut self) -> Result<(), KernelError> {
        self.rx.clear();
        self.sock.recv(&mut self.rx, 0).map_err(io_err("recv"))?;
        Ok(())
    }

    /// Sends one request that is answered by one message (`RTM_GETROUTE` for a lookup) and
    /// returns that answer, or the kernel's errno as [`KernelError::Refused`].
    pub fn get(
        &mut self,
        what: &'static str,
        req: RouteNetlinkMessage,
    ) -> Result<RouteNetlinkMessage, KernelError> {
        let mut m =
            NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(req));
        m.header.flags = NLM_F_REQUEST;
        m.header.sequence_number = self.next_seq();
        let seq = m.header.sequence_number;
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(io_err("send request"))?;
        loop {
            self.recv()?;
            let mut answer = None;
            for_each_slice(&self.rx, |slice| {
                if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(slice) {
                    if msg.header.sequence_number != seq {
                        return;
                    }
                    match msg.payload {
                        NetlinkPayload::InnerMessage(inner) => answer = Some(Ok(inner)),
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            answer = Some(Err(KernelError::Refused {
                                what: what.to_string(),
                                errno: e.raw_code().abs(),
                            }))
                        }
                        _ => {}
                    }
                }
            });
            if let Some(a) = answer {
                return a;
            }
        }
    }

    /// Dumps with `req` (sent with `NLM_F_DUMP`), retrying while the kernel marks the dump
    /// `NLM_F_DUMP_INTR` (the table changed during it, so it may be inconsistent).
    pub fn dump(
        &mut self,
        what: &'static str,
        req: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, KernelError> {
        for _ in 0..DUMP_TRIES {
            let mut m = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::InnerMessage(req.clone()),
            );
            m.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            m.header.sequence_number = self.next_seq();
            let seq = m.header.sequence_number;
            m.finalize();
            let mut buf = vec![0u8; m.buffer_len()];
            m.serialize(&mut buf);
            self.sock.send(&buf, 0).map_err(io_err("send dump"))?;
            let mut out = Vec::new();
            let mut interrupted = false;
            let mut finished = false;
            let mut failed = None;
            while !finished {
                self.recv()?;
                for_each_message(&self.rx, |hdr, _| {
                    if hdr.sequence_number != seq {
                        return;
                    }
                    if hdr.flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match hdr.message_type {
                        netlink_packet_core::NLMSG_DONE => finished = true,
                        netlink_packet_core::NLMSG_ERROR => {
                            finished = true;
                        }
                        _ => {}
                    }
                });
                for_each_slice(&self.rx, |slice| {
                    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(slice) {
                        Ok(msg) if msg.header.sequence_number == seq => match msg.payload {
                            NetlinkPayload::InnerMessage(inner) => out.push(inner),
                            NetlinkPayload::Error(e) if e.code.is_some() => {
                                failed = Some(e.raw_code().abs());
                            }
                            _ => {}
                        },
                        Ok(_) => {}
                        Err(e) => {
                            // One unparsable object (a newer kernel attribute layout) must not
                            // stop the programmer; it simply is not ours.
                            tracing::debug!(what, error = %e, "skipping undecodable netlink message");
                        }
                    }
                });
            }
            if let Some(errno) = failed {
                return Err(KernelError::DumpFailed { what, errno });
            }
            if !interrupted {
                return Ok(out);
            }
            tracing::debug!(what, "dump interrupted by a concurrent change, retrying");
        }
        Err(KernelError::DumpInterrupted {
            what,
            tries: DUMP_TRIES,
        })
    }
}

fn set_recv_timeout(sock: &Socket) -> Result<(), KernelError> {
    let tv = libc::timeval {
        tv_sec: RECV_TIMEOUT_SECS,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a valid fd and a pointer to a live timeval of the given size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(KernelError::Io {
            what: "SO_RCVTIMEO",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Calls `f` with each complete netlink message in `buf`; stops at the first malformed length.
pub(crate) fn for_each_slice(buf: &[u8], mut f: impl FnMut(&[u8])) {
    let mut off = 0;
    while off + 16 <= buf.len() {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            return;
        }
        f(&buf[off..off + len]);
        off += (len + 3) & !3;
    }
}

/// Like [`for_each_slice`], with the header decoded and the payload after it.
pub(crate) fn for_each_message(buf: &[u8], mut f: impl FnMut(&NetlinkHeader, &[u8])) {
    for_each_slice(buf, |s| {
        let mut h = NetlinkHeader::default();
        h.length = u32::from_ne_bytes([s[0], s[1], s[2], s[3]]);
        h.message_type = u16::from_ne_bytes([s[4], s[5]]);
        h.flags = u16::from_ne_bytes([s[6], s[7]]);
        h.sequence_number = u32::from_ne_bytes([s[8], s[9], s[10], s[11]]);
        h.port_number = u32::from_ne_bytes([s[12], s[13], s[14], s[15]]);
        f(&h, &s[16..]);
    });
}
