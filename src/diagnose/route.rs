//! `underroute diagnose route SRC DST [--iif IF]`: the kernel's decision for a packet, and for
//! its reply.
//!
//! Owns: one `RTM_GETROUTE` lookup per direction with `RTM_F_FIB_MATCH` (as `ip route get
//! fibmatch`), which names the table and the route that matched; the rule is the first one, by
//! priority, whose selectors match the packet and whose table is that one.

use std::ffi::CString;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as M};

use super::Rule;
use crate::kernel::batch::Netlink;
use crate::kernel::KernelError;

/// What one lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Source and destination looked up.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Incoming interface (`None`: sent by this host).
    pub iif: Option<String>,
    /// The table whose route matched.
    pub table: u32,
    /// The rule that led to that table, if one can be named.
    pub rule: Option<Rule>,
    /// The matching route's prefix.
    pub prefix: IpNet,
    /// `local`, `unicast`, `blackhole`, ...
    pub kind: String,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Outgoing interface.
    pub oif: Option<String>,
    /// `rtm_protocol` of the route.
    pub protocol: u8,
}

fn table_name(t: u32) -> String {
    match t {
        254 => "main".into(),
        255 => "local".into(),
        253 => "default".into(),
        t => t.to_string(),
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)?;
        match &self.iif {
            Some(i) => writeln!(f, " (in on {i})")?,
            None => writeln!(f, " (sent by this host)")?,
        }
        match &self.rule {
            Some(r) => writeln!(f, "  rule   {r}")?,
            None => writeln!(f, "  rule   (none named)")?,
        }
        write!(
            f,
            "  route  table {}: {} {}",
            table_name(self.table),
            self.kind,
            self.prefix
        )?;
        if let Some(g) = self.gateway {
            write!(f, " via {g}")?;
        }
        if let Some(o) = &self.oif {
            write!(f, " dev {o}")?;
        }
        writeln!(f, " proto {}", self.protocol)
    }
}

/// The interface index of `name`.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid NUL-terminated string.
    let ix = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (ix != 0).then_some(ix)
}

/// The name of interface `ix`.
pub fn ifname(ix: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ix, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

fn addr_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Whether `rule` selects a packet from `src` that came in on `iif` (`None`: sent locally,
/// which iif rules never match except `iif lo`).
pub fn rule_matches(rule: &Rule, src: IpAddr, iif: Option<&str>) -> bool {
    if rule.v6 != src.is_ipv6() {
        return false;
    }
    if let Some(from) = &rule.from {
        if !from.contains(&src) {
            return false;
        }
    }
    match (&rule.iif, iif) {
        (None, _) => true,
        (Some(r), Some(i)) => r == i,
        (Some(r), None) => r == "lo",
    }
}

/// Looks up `dst` from `src` (arriving on `iif`, or sent by this host) with FIB match.
pub fn lookup(
    src: IpAddr,
    dst: IpAddr,
    iif: Option<&str>,
    rules: &[Rule],
) -> Result<Decision, KernelError> {
    let full = if dst.is_ipv6() { 128 } else { 32 };
    let mut m = RouteMessage::default();
    m.header.address_family = if dst.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.destination_prefix_length = full;
    m.header.source_prefix_length = full;
    // LOOKUP_TABLE: the reply names the table the lookup used (else the kernel says main).
    m.header.flags = RouteFlags::FibMatch | RouteFlags::LookupTable;
    m.attributes.push(RouteAttribute::Destination(dst.into()));
    m.attributes.push(RouteAttribute::Source(src.into()));
    if let Some(name) = iif {
        let ix = ifindex(name).ok_or_else(|| KernelError::Refused {
            what: format!("interface {name}"),
            errno: libc::ENODEV,
        })?;
        m.attributes.push(RouteAttribute::Iif(ix));
    }
    let mut nl = Netlink::open()?;
    let what = match iif {
        Some(i) => format!("route lookup {src} -> {dst} in on {i}"),
        None => format!("route lookup {src} -> {dst}"),
    };
    let M::NewRoute(r) = nl
        .get("route lookup", M::GetRoute(m))
        .map_err(|e| match e {
            KernelError::Refused { errno, .. } => KernelError::Refused {
                what: what.clone(),
                errno,
            },
            e => e,
        })?
    else {
        return Err(KernelError::Refused {
            what,
            errno: libc::EPROTO,
        });
    };
    let mut table = u32::from(r.header.table);
    let mut rdst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => rdst = addr_of(d),
            RouteAttribute::Gateway(g) => gateway = addr_of(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::MultiPath(hops) if oif.is_none() => {
                if let Some(h) = hops.first() {
                    oif = Some(h.interface_index);
                    gateway = h.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(g) => addr_of(g),
                        _ => None,
                    });
                }
            }
            _ => {}
        }
    }
    let unspec = if dst.is_ipv6() {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let prefix = IpNet::new(rdst.unwrap_or(unspec), r.header.destination_prefix_length)
        .map(|p| p.trunc())
        .unwrap_or_else(|_| IpNet::from(dst));
    let kind = match r.header.kind {
        RouteType::Unicast => "unicast".to_string(),
        RouteType::Local => "local".to_string(),
        other => format!("{other:?}").to_lowercase(),
    };
    // Without custom rules the kernel merges table local into main and names main; a local
    // route only ever lives in table local.
    if r.header.kind == RouteType::Local && table == 254 {
        table = 255;
    }
    let rule = rules
        .iter()
        .find(|ru| ru.table == Some(table) && rule_matches(ru, src, iif))
        .cloned();
    Ok(Decision {
        src,
        dst,
        iif: iif.map(str::to_string),
        table,
        rule,
        prefix,
        kind,
        gateway,
        oif: oif.and_then(ifname),
        protocol: r.header.protocol.into(),
    })
}

/// The request and reply decisions and the verdict.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// SRC -> DST.
    pub request: Decision,
    /// DST -> SRC, or why the kernel has no route for the reply.
    pub reply: Result<Decision, String>,
    /// The reply leaves by another interface than the request came in on.
    pub asymmetric: bool,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request {}", self.request)?;
        let reply = match &self.reply {
            Ok(r) => r,
            Err(e) => {
                writeln!(f, "reply   {} -> {}", self.request.dst, self.request.src)?;
                return writeln!(f, "  no route: {e}");
            }
        };
        write!(f, "reply   {reply}")?;
        let came = self.request.iif.as_deref();
        let leaves = reply.oif.as_deref().unwrap_or("?");
        match came {
            None => writeln!(
                f,
                "symmetry: unknown (give --iif, the interface the request comes in on)"
            ),
            Some(i) if self.asymmetric => writeln!(
                f,
                "asymmetric: the request comes in on {i}, the reply leaves by {leaves}"
            ),
            Some(i) => writeln!(f, "symmetric: in on {i}, the reply leaves by {leaves}"),
        }
    }
}

/// `diagnose route`: looks up SRC -> DST (in on `iif`) and the reply DST -> SRC. The reply of a
/// packet for this host is sent by this host; the reply of a forwarded one comes back in on the
/// interface the request left by.
pub fn explain(src: IpAddr, dst: IpAddr, iif: Option<&str>) -> Result<Explanation, KernelError> {
    let rules = super::kernel_rules()?;
    let request = lookup(src, dst, iif, &rules)?;
    let reply_iif = if request.kind == "local" {
        None
    } else {
        request.oif.clone()
    };
    let reply = match lookup(dst, src, reply_iif.as_deref(), &rules) {
        Ok(r) => Ok(r),
        Err(KernelError::Refused { errno, .. }) => {
            Err(std::io::Error::from_raw_os_error(errno).to_string())
        }
        Err(e) => return Err(e),
    };
    let asymmetric = match (&request.iif, &reply) {
        (Some(i), Ok(r)) => r.oif.as_ref().is_some_and(|o| o != i),
        _ => false,
    };
    Ok(Explanation {
        request,
        reply,
        asymmetric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(from: Option<&str>, iif: Option<&str>, table: u32) -> Rule {
        Rule {
            priority: 1,
            from: from.map(|f| f.parse().unwrap()),
            iif: iif.map(str::to_string),
            table: Some(table),
            protocol: 201,
            v6: false,
        }
    }

    #[test]
    fn rules_match_on_source_prefix_interface_and_family() {
        let src: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(rule_matches(&rule(None, None, 254), src, None));
        assert!(rule_matches(
            &rule(Some("10.0.0.2/32"), None, 7),
            src,
            Some("eth0")
        ));
        assert!(!rule_matches(
            &rule(Some("10.0.0.3/32"), None, 7),
            src,
            None
        ));
        assert!(rule_matches(
            &rule(None, Some("eth0"), 7),
            src,
            Some("eth0")
        ));
        assert!(!rule_matches(
            &rule(None, Some("eth0"), 7),
            src,
            Some("eth1")
        ));
        assert!(!rule_matches(&rule(None, Some("eth0"), 7), src, None));
        assert!(!rule_matches(
            &rule(None, None, 7),
            "fd00::1".parse().unwrap(),
            None
        ));
    }
}
