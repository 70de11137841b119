//! TCP socket options a BGP session needs and the standard library does not expose:
//! TCP MD5 signatures (RFC 2385) and the TTL for (multi-hop) eBGP.
//!
//! This module only configures sockets; it never reads or writes BGP data.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Longest key the kernel accepts (TCP_MD5SIG_MAXKEYLEN in linux/tcp.h).
const MD5_MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` from linux/tcp.h; libc does not define it.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; MD5_MAX_KEY_LEN],
}

/// Install (or with `None`, remove) the MD5 key for `peer` on `socket`.
///
/// On a listening socket this must be done before the peer connects: the kernel drops
/// unsigned or wrongly signed segments before `accept` ever sees them, which is exactly why a
/// mismatched password shows up as a session that never comes up rather than an error.
pub fn set_md5_key(socket: &impl AsRawFd, peer: IpAddr, key: Option<&str>) -> io::Result<()> {
    let key = key.unwrap_or("").as_bytes();
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 password longer than {MD5_MAX_KEY_LEN} bytes"),
        ));
    }
    // SAFETY: an all-zero tcp_md5sig is a valid value (empty key, unspecified address).
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let sa = SockAddr::from(SocketAddr::new(peer, 0));
    // SAFETY: `sa` is at most sizeof(sockaddr_storage) bytes and `sig.addr` is that big.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr() as *const u8,
            &mut sig.addr as *mut libc::sockaddr_storage as *mut u8,
            sa.len() as usize,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: plain setsockopt with a correctly sized, initialised struct.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            &sig as *const TcpMd5Sig as *const libc::c_void,
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        // Removing a key that was never set is not an error worth reporting.
        if key.is_empty() && err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// Options for an outgoing session socket.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Source address to bind before connecting.
    pub local_address: Option<IpAddr>,
    /// MD5 password.
    pub password: Option<String>,
    /// IP TTL / hop limit for our packets.
    pub ttl: Option<u8>,
}

/// A non-blocking TCP socket for `peer`, configured but not yet connected.
pub fn outgoing_socket(peer: SocketAddr, opts: &ConnectOptions) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if let Some(local) = opts.local_address {
        socket.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
    }
    if let Some(password) = &opts.password {
        set_md5_key(&socket, peer.ip(), Some(password))?;
    }
    if let Some(ttl) = opts.ttl {
        set_ttl(&socket, peer.ip(), ttl)?;
    }
    Ok(socket)
}

/// Set the TTL (IPv4) or unicast hop limit (IPv6) of a session socket.
pub fn set_ttl(socket: &Socket, peer: IpAddr, ttl: u8) -> io::Result<()> {
    match peer {
        IpAddr::V4(_) => socket.set_ttl(u32::from(ttl)),
        IpAddr::V6(_) => socket.set_unicast_hops_v6(u32::from(ttl)),
    }
}

/// A listening socket on `addr` (IPv6 sockets accept IPv6 only; IPv4 gets its own).
pub fn listener(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(128)?;
    Ok(socket)
}
