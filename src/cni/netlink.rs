//! A small synchronous rtnetlink client bound to one network namespace: the plugin's only way to
//! change links, routes and neighbours.
//!
//! A CNI plugin lives for milliseconds and does a dozen requests, so each call blocks on a
//! current-thread tokio runtime. A socket belongs to the namespace of the thread that opened it:
//! for the pod we open it on a short-lived thread that has entered the pod's netns, then use it
//! from here; the calling thread never changes namespace.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::error::CniError;
use super::plan::HostAddr;

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// What the kernel said, reduced to what the plugin decides on.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// True for "already exists".
pub fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(EEXIST)
}

/// True for the errors that mean "nothing to delete".
pub fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(ENOENT | ESRCH | ENODEV))
}

/// A link as the plugin needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub alias: Option<String>,
    pub up: bool,
}

/// A route as the plugin needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    pub table: u32,
}

/// One netlink connection in one namespace.
pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> CniError + '_ {
    move |e| CniError::Io(format!("{what}: {e}"))
}

/// Runs `f` on a fresh thread that has entered the network namespace at `netns`; the caller's
/// thread keeps its own namespace.
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> Result<T, CniError> + Send + 'static,
) -> Result<T, CniError> {
    let ns = File::open(netns).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            CniError::ContainerUnknown(format!("netns {} does not exist", netns.display()))
        } else {
            CniError::Io(format!("open netns {}: {e}", netns.display()))
        }
    })?;
    let shown = netns.display().to_string();
    std::thread::spawn(move || {
        // SAFETY: `ns` is an open namespace fd for the duration of the call; setns only affects
        // this thread, which ends after `f`.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(CniError::ContainerUnknown(format!(
                "setns({shown}): {}",
                std::io::Error::last_os_error()
            )));
        }
        f()
    })
    .join()
    .map_err(|_| CniError::Io("namespace worker thread panicked".into()))?
}

/// Writes a sysctl under /proc/sys/net for the calling thread's namespace.
pub fn write_sysctl(key: &str, value: &str) -> Result<(), CniError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(io(&path))
}

impl Netlink {
    /// A connection in the caller's namespace (the host's).
    pub fn current() -> Result<Netlink, CniError> {
        let rt = runtime()?;
        let (conn, handle, _) = {
            let _g = rt.enter();
            rtnetlink::new_connection().map_err(io("netlink socket"))?
        };
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// A connection inside the network namespace at `netns` (the pod's).
    pub fn in_netns(netns: &Path) -> Result<Netlink, CniError> {
        let rt = runtime()?;
        let rth = rt.handle().clone();
        let (conn, handle) = in_netns(netns, move || {
            let _g = rth.enter();
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(io("netlink socket in pod netns"))?;
            Ok((conn, handle))
        })?;
        rt.spawn(conn);
        Ok(Netlink { rt, handle })
    }

    /// All links.
    pub fn links(&self) -> Result<Vec<Link>, CniError> {
        let msgs: Vec<LinkMessage> = self
            .rt
            .block_on(self.handle.link().get().execute().try_collect())?;
        Ok(msgs.iter().map(to_link).collect())
    }

    /// One link by name; `None` if absent.
    pub fn link(&self, name: &str) -> Result<Option<Link>, CniError> {
        let r: Result<Vec<LinkMessage>, _> = self.rt.block_on(
            self.handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute()
                .try_collect(),
        );
        match r {
            Ok(v) => Ok(v.first().map(to_link)),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a veth pair: `name` here, `peer` directly in the namespace `peer_ns`, both with
    /// `mtu`. Fails with [`CniError::Exists`] if either name is taken.
    pub fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: RawFd,
        mtu: u32,
    ) -> Result<(), CniError> {
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .mtu(mtu)
            .setns_by_fd(peer_ns)
            .build();
        let msg = LinkVeth::new(name, peer)
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        match self.rt.block_on(self.handle.link().add(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Err(CniError::Exists(format!(
                "interface {name} on the host or {peer} in the pod"
            ))),
            Err(e) => Err(CniError::Netlink(format!("create veth {name}/{peer}: {e}"))),
        }
    }

    /// Sets the link's alias and brings it up.
    pub fn set_up(&self, index: u32, alias: Option<&str>) -> Result<(), CniError> {
        let mut b = LinkUnspec::new_with_index(index).up();
        if let Some(a) = alias {
            b = b.append_extra_attribute(LinkAttribute::IfAlias(a.to_string()));
        }
        self.rt
            .block_on(self.handle.link().set(b.build()).execute())
            .map_err(|e| CniError::Netlink(format!("set link {index} up: {e}")))
    }

    /// Deletes a link; absent is fine. Deleting one end of a veth deletes both, with every
    /// route and neighbour entry through it.
    pub fn del_link(&self, index: u32) -> Result<(), CniError> {
        match self.rt.block_on(self.handle.link().del(index).execute()) {
            Ok(()) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(CniError::Netlink(format!("delete link {index}: {e}"))),
        }
    }

    /// All addresses, with the name of the interface holding each.
    pub fn addresses(&self) -> Result<Vec<HostAddr>, CniError> {
        let links = self.links()?;
        let msgs: Vec<AddressMessage> = self
            .rt
            .block_on(self.handle.address().get().execute().try_collect())?;
        let mut out = Vec::new();
        for m in msgs {
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = addr.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            let (Some(ip), Some(link)) = (addr, links.iter().find(|l| l.index == m.header.index))
            else {
                continue;
            };
            if let Ok(net) = IpNet::new(ip, m.header.prefix_len) {
                out.push(HostAddr {
                    addr: net,
                    ifname: link.name.clone(),
                });
            }
        }
        Ok(out)
    }

    /// Routes of the main table, both families.
    pub fn routes(&self) -> Result<Vec<Route>, CniError> {
        let mut out = Vec::new();
        for q in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let msgs: Vec<RouteMessage> = self
                .rt
                .block_on(self.handle.route().get(q).execute().try_collect())?;
            out.extend(msgs.iter().filter_map(to_route));
        }
        Ok(out.into_iter().filter(|r| r.table == 254).collect())
    }

    /// The interface of the main table's default route (IPv4 first, then IPv6).
    pub fn default_route_ifindex(&self) -> Result<Option<u32>, CniError> {
        let routes = self.routes()?;
        for v4 in [true, false] {
            if let Some(r) = routes.iter().find(|r| {
                r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4 && r.oif.is_some()
            }) {
                return Ok(r.oif);
            }
        }
        Ok(None)
    }

    /// Adds a main-table route through `oif`, `via` a gateway or on-link (scope link). Fails
    /// with [`CniError::Exists`] if the destination is already routed with the same metric.
    pub fn add_route(
        &self,
        dst: IpNet,
        via: Option<IpAddr>,
        oif: u32,
        protocol: u8,
    ) -> Result<(), CniError> {
        let msg = route_msg(dst, via, oif, protocol)?;
        match self.rt.block_on(self.handle.route().add(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Err(CniError::Exists(format!("route to {dst}"))),
            Err(e) => Err(CniError::Netlink(format!("add route {dst}: {e}"))),
        }
    }

    /// Deletes a route; absent is fine.
    pub fn del_route(&self, dst: IpNet, via: Option<IpAddr>, oif: u32) -> Result<(), CniError> {
        let msg = route_msg(dst, via, oif, 0)?;
        match self.rt.block_on(self.handle.route().del(msg).execute()) {
            Ok(()) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(CniError::Netlink(format!("delete route {dst}: {e}"))),
        }
    }

    /// A permanent neighbour entry, so that neither side depends on ARP/ND across the veth
    /// (hosts with `arp_ignore=1` would not answer for an address the veth does not carry).
    pub fn add_neighbour(&self, index: u32, ip: IpAddr, mac: &[u8]) -> Result<(), CniError> {
        self.rt
            .block_on(
                self.handle
                    .neighbours()
                    .add(index, ip)
                    .link_layer_address(mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute(),
            )
            .map_err(|e| CniError::Netlink(format!("neighbour {ip}: {e}")))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(io("tokio runtime"))
}

fn route_msg(
    dst: IpNet,
    via: Option<IpAddr>,
    oif: u32,
    protocol: u8,
) -> Result<RouteMessage, CniError> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst.addr(), dst.prefix_len())
        .map_err(|e| CniError::Netlink(format!("route {dst}: {e}")))?
        .output_interface(oif);
    if protocol != 0 {
        b = b.protocol(RouteProtocol::from(protocol));
    }
    b = match via {
        Some(gw) => b
            .gateway(gw)
            .map_err(|e| CniError::Netlink(format!("route {dst}: {e}")))?,
        None => b.scope(RouteScope::Link),
    };
    Ok(b.build())
}

fn to_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 0,
        alias: None,
        up: m.header.flags.contains(LinkFlags::Up),
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) => l.mac = b.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::IfAlias(s) => l.alias = Some(s.clone()),
            _ => {}
        }
    }
    l
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn to_route(m: &RouteMessage) -> Option<Route> {
    let v4 = m.header.address_family == netlink_packet_route::AddressFamily::Inet;
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    let mut table = u32::from(m.header.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Gateway(g) => via = route_addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let dst = dst.unwrap_or(if v4 {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    });
    Some(Route {
        dst: IpNet::new(dst, m.header.destination_prefix_length).ok()?,
        via,
        oif,
        protocol: u8::from(m.header.protocol),
        table,
    })
}
