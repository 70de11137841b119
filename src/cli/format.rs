//! gobgp 3.10's text layout, as pure functions: API messages and "now" in, text out.
//!
//! Every column width, header, state name and time format here is the one the stock `gobgp`
//! client prints, so that operators (and scripts) see the same thing from either client.

use std::net::IpAddr;

use prost::Message;
use prost_types::Any;

use crate::api::apipb;

/// gobgp's `formatTimedelta`: `HH:MM:SS`, with `Nd ` in front past a day.
pub fn timedelta(now_secs: i64, then_secs: i64) -> String {
    let u = (now_secs - then_secs).unsigned_abs();
    let (secs, mins, hours, days) = (u % 60, (u / 60) % 60, (u / 3600) % 24, u / 86400);
    if days == 0 {
        format!("{hours:02}:{mins:02}:{secs:02}")
    } else {
        format!("{days}d {hours:02}:{mins:02}:{secs:02}")
    }
}

/// The address family's name (`ipv4-unicast`), or gobgp's numeric fallback.
pub fn family_name(f: Option<&apipb::Family>) -> String {
    match f.map(|f| (f.afi, f.safi)) {
        Some((1, 1)) => "ipv4-unicast".into(),
        Some((2, 1)) => "ipv6-unicast".into(),
        Some((afi, safi)) => format!("UnknownFamily({afi},{safi})"),
        None => "UnknownFamily(0,0)".into(),
    }
}

/// `gobgp global`.
pub fn global(g: &apipb::Global) -> String {
    let mut s = format!("AS:        {}\nRouter-ID: {}\n", g.asn, g.router_id);
    if !g.listen_addresses.is_empty() {
        s += &format!(
            "Listening Port: {}, Addresses: {}\n",
            g.listen_port,
            g.listen_addresses.join(", ")
        );
    }
    if g.use_multiple_paths {
        s += "Multipath: enabled";
    }
    s
}

fn peer_asn(p: &apipb::Peer) -> String {
    match p.state.as_ref().map_or(0, |s| s.peer_asn) {
        0 => "*".into(),
        n => n.to_string(),
    }
}

fn fsm_short(p: &apipb::Peer) -> &'static str {
    let st = p.state.clone().unwrap_or_default();
    match st.admin_state {
        1 => return "Idle(Admin)",
        2 => return "Idle(PfxCt)",
        _ => {}
    }
    match st.session_state {
        1 => "Idle",
        2 => "Connect",
        3 => "Active",
        4 => "Sent",
        5 => "Confirm",
        6 => "Establ",
        _ => "Unknown",
    }
}

fn session_state_name(v: i32) -> String {
    apipb::peer_state::SessionState::try_from(v)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| v.to_string())
}

/// Received, accepted and advertised prefixes summed over the peer's families (only `family`
/// when given, as `gobgp -a`).
pub fn counters(p: &apipb::Peer, family: Option<&apipb::Family>) -> (u64, u64, u64) {
    let mut c = (0, 0, 0);
    for a in &p.afi_safis {
        let st = a.state.unwrap_or_default();
        if let Some(f) = family {
            if st.family.as_ref() != Some(f) {
                continue;
            }
        }
        c.0 += st.received;
        c.1 += st.accepted;
        c.2 += st.advertised;
    }
    c
}

fn neighbor_address(p: &apipb::Peer) -> String {
    p.state
        .as_ref()
        .map(|s| s.neighbor_address.clone())
        .unwrap_or_default()
}

/// gobgp's neighbor order: IPv4 first, then by address bits.
pub fn sort_peers(peers: &mut [apipb::Peer]) {
    let key = |p: &apipb::Peer| {
        let a = p
            .conf
            .as_ref()
            .map(|c| c.neighbor_address.clone())
            .unwrap_or_default();
        match a.parse::<IpAddr>() {
            Ok(IpAddr::V4(v)) => (0, u128::from(u32::from(v))),
            Ok(IpAddr::V6(v)) => (1, u128::from(v)),
            Err(_) => (2, 0),
        }
    };
    peers.sort_by_key(key);
}

/// `gobgp neighbor`: the summary table. `peers` must already be in gobgp's order.
pub fn neighbors(peers: &[apipb::Peer], family: Option<&apipb::Family>, now: i64) -> String {
    let mut addr_w = 0;
    let mut as_w = 2;
    let mut time_w = "Up/Down".len();
    let mut times = Vec::new();
    for p in peers {
        let iface = p.conf.as_ref().map_or(0, |c| c.neighbor_interface.len());
        // gobgp's own quirk: the address length counts only when the interface name is shorter.
        if iface > addr_w {
            addr_w = iface;
        } else if neighbor_address(p).len() > addr_w {
            addr_w = neighbor_address(p).len();
        }
        as_w = as_w.max(peer_asn(p).len());
        let ts = p.timers.as_ref().and_then(|t| t.state.as_ref());
        let t = match ts.and_then(|s| s.uptime.as_ref()) {
            None => "never".to_string(),
            Some(up) => {
                let established = p.state.as_ref().is_some_and(|s| s.session_state == 6);
                let at = if established {
                    up.seconds
                } else {
                    ts.and_then(|s| s.downtime.as_ref())
                        .map_or(0, |d| d.seconds)
                };
                timedelta(now, at)
            }
        };
        time_w = time_w.max(t.len());
        times.push(t);
    }
    let line = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str| {
        format!("{a:<addr_w$} {b:>as_w$} {c:>time_w$} {d:<11} |{e:>9} {f:>9}\n")
    };
    let mut s = line("Peer", "AS", "Up/Down", "State", "#Received", "Accepted");
    for (p, t) in peers.iter().zip(&times) {
        let iface = p
            .conf
            .as_ref()
            .map(|c| c.neighbor_interface.clone())
            .unwrap_or_default();
        let name = if iface.is_empty() {
            neighbor_address(p)
        } else {
            iface
        };
        let (rx, acc, _) = counters(p, family);
        s += &line(
            &name,
            &peer_asn(p),
            t,
            fsm_short(p),
            &rx.to_string(),
            &acc.to_string(),
        );
    }
    s
}

/// A decoded capability, with gobgp's code for sorting and lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Cap {
    /// Multiprotocol (1).
    Mp(apipb::Family),
    /// Graceful restart (64).
    Gr(apipb::GracefulRestartCapability),
    /// Extended next hop (5).
    Enh(apipb::ExtendedNexthopCapability),
    /// ADD-PATH (69).
    AddPath(apipb::AddPathCapability),
    /// FQDN (73).
    Fqdn(apipb::FqdnCapability),
    /// Any other, by code.
    Other(u8),
}

impl Cap {
    fn code(&self) -> u8 {
        match self {
            Cap::Mp(_) => 1,
            Cap::Enh(_) => 5,
            Cap::Gr(_) => 64,
            Cap::AddPath(_) => 69,
            Cap::Fqdn(_) => 73,
            Cap::Other(c) => *c,
        }
    }

    /// Decode one packed capability; `None` for a type we do not know (gobgp fails the same).
    pub fn from_any(a: &Any) -> Option<Cap> {
        let name = a.type_url.rsplit('/').next().unwrap_or_default();
        let v = a.value.as_slice();
        Some(match name {
            "apipb.MultiProtocolCapability" => Cap::Mp(
                apipb::MultiProtocolCapability::decode(v)
                    .ok()?
                    .family
                    .unwrap_or_default(),
            ),
            "apipb.RouteRefreshCapability" => Cap::Other(2),
            "apipb.CarryingLabelInfoCapability" => Cap::Other(4),
            "apipb.ExtendedNexthopCapability" => {
                Cap::Enh(apipb::ExtendedNexthopCapability::decode(v).ok()?)
            }
            "apipb.GracefulRestartCapability" => {
                Cap::Gr(apipb::GracefulRestartCapability::decode(v).ok()?)
            }
            "apipb.FourOctetASNCapability" => Cap::Other(65),
            "apipb.AddPathCapability" => Cap::AddPath(apipb::AddPathCapability::decode(v).ok()?),
            "apipb.EnhancedRouteRefreshCapability" => Cap::Other(70),
            "apipb.LongLivedGracefulRestartCapability" => Cap::Other(71),
            "apipb.FqdnCapability" => Cap::Fqdn(apipb::FqdnCapability::decode(v).ok()?),
            "apipb.RouteRefreshCiscoCapability" => Cap::Other(128),
            "apipb.UnknownCapability" => {
                Cap::Other(u8::try_from(apipb::UnknownCapability::decode(v).ok()?.code).ok()?)
            }
            _ => return None,
        })
    }
}

fn cap_name(code: u8) -> String {
    match code {
        1 => "multiprotocol".into(),
        2 => "route-refresh".into(),
        4 => "carrying-label-info".into(),
        64 => "graceful-restart".into(),
        5 => "extended-nexthop".into(),
        65 => "4-octet-as".into(),
        69 => "add-path".into(),
        70 => "enhanced-route-refresh".into(),
        128 => "cisco-route-refresh".into(),
        71 => "long-lived-graceful-restart".into(),
        73 => "fqdn".into(),
        c => format!("UnknownCapability({c})"),
    }
}

fn lookup<'a>(c: &Cap, list: &'a [Cap]) -> Option<&'a Cap> {
    list.iter().find(|v| match (v, c) {
        (Cap::Mp(a), Cap::Mp(b)) => a == b,
        _ => v.code() == c.code(),
    })
}

fn gr_text(g: &apipb::GracefulRestartCapability) -> String {
    let mut parts = Vec::new();
    if !g.tuples.is_empty() {
        parts.push(format!("restart time {} sec", g.time));
    }
    if g.flags & 0x08 > 0 {
        parts.push("restart flag set".to_string());
    }
    if g.flags & 0x04 > 0 {
        parts.push("notification flag set".to_string());
    }
    let mut s = parts.join(", ");
    if !s.is_empty() {
        s.push('\n');
    }
    for t in &g.tuples {
        s += &format!("\t    {}", family_name(t.family.as_ref()));
        if t.flags == 0x80 {
            s += ", forward flag set";
        }
        s.push('\n');
    }
    s
}

fn enh_text(e: &apipb::ExtendedNexthopCapability) -> String {
    e.tuples
        .iter()
        .map(|t| {
            let nh = match t.nexthop_family.as_ref().map_or(0, |f| f.afi) {
                1 => "ipv4".to_string(),
                2 => "ipv6".to_string(),
                n => n.to_string(),
            };
            format!(
                "nlri: {}, nexthop: {nh}",
                family_name(t.nlri_family.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn add_path_mode(m: i32) -> String {
    match m {
        0 => "none".into(),
        1 => "receive".into(),
        2 => "send".into(),
        3 => "receive/send".into(),
        n => format!("unknown({n})"),
    }
}

fn capabilities(st: &apipb::PeerState) -> String {
    let lcaps: Vec<Cap> = st.local_cap.iter().filter_map(Cap::from_any).collect();
    let rcaps: Vec<Cap> = st.remote_cap.iter().filter_map(Cap::from_any).collect();
    let mut caps = lcaps.clone();
    for c in &rcaps {
        if lookup(c, &caps).is_none() {
            caps.push(c.clone());
        }
    }
    caps.sort_by_key(Cap::code);
    let mut s = String::new();
    let mut first_mp = true;
    for c in &caps {
        let local = lookup(c, &lcaps);
        let remote = lookup(c, &rcaps);
        let support = match (local.is_some(), remote.is_some()) {
            (true, true) => "advertised and received",
            (true, false) => "advertised",
            (false, true) => "received",
            (false, false) => "",
        };
        let name = cap_name(c.code());
        match c {
            Cap::Mp(f) => {
                if first_mp {
                    s += &format!("    {name}:\n");
                    first_mp = false;
                }
                s += &format!("        {}:\t{support}\n", family_name(Some(f)));
            }
            Cap::Gr(_) => {
                s += &format!("    {name}:\t{support}\n");
                for (label, m) in [("Local", local), ("Remote", remote)] {
                    if let Some(Cap::Gr(g)) = m {
                        let t = gr_text(g);
                        if !t.is_empty() {
                            s += &format!("        {label}: {t}");
                        }
                    }
                }
            }
            Cap::Enh(_) => {
                s += &format!("    {name}:\t{support}\n");
                for (label, m) in [("Local:  ", local), ("Remote: ", remote)] {
                    if let Some(Cap::Enh(e)) = m {
                        let t = enh_text(e);
                        if !t.is_empty() {
                            s += &format!("        {label}{t}\n");
                        }
                    }
                }
            }
            Cap::AddPath(_) => {
                s += &format!("    {name}:\t{support}\n");
                for (label, m) in [("Local", local), ("Remote", remote)] {
                    if let Some(Cap::AddPath(a)) = m {
                        s += &format!("      {label}:\n");
                        for t in &a.tuples {
                            s += &format!(
                                "         {}:\t{}\n",
                                family_name(t.family.as_ref()),
                                add_path_mode(t.mode)
                            );
                        }
                    }
                }
            }
            Cap::Fqdn(_) => {
                s += &format!("    {name}:\t{support}\n");
                for (label, m) in [("Local", local), ("Remote", remote)] {
                    if let Some(Cap::Fqdn(f)) = m {
                        s += &format!(
                            "      {label}:\n         name: {}, domain: {}\n",
                            f.host_name, f.domain_name
                        );
                    }
                }
            }
            Cap::Other(_) => s += &format!("    {name}:\t{support}\n"),
        }
    }
    s
}

/// `gobgp neighbor ADDR`: the detail block.
pub fn neighbor(p: &apipb::Peer, family: Option<&apipb::Family>, now: i64) -> String {
    let st = p.state.clone().unwrap_or_default();
    let conf = p.conf.clone().unwrap_or_default();
    let timers = p.timers.unwrap_or_default();
    let tstate = timers.state.unwrap_or_default();
    let tconf = timers.config.unwrap_or_default();
    let mut s = format!(
        "BGP neighbor is {}, remote AS {}",
        st.neighbor_address,
        peer_asn(p)
    );
    if p.route_reflector
        .as_ref()
        .is_some_and(|r| r.route_reflector_client)
    {
        s += ", route-reflector-client\n";
    } else if p
        .route_server
        .as_ref()
        .is_some_and(|r| r.route_server_client)
    {
        s += ", route-server-client\n";
    } else {
        s += "\n";
    }
    let id = if st.router_id.is_empty() {
        "unknown"
    } else {
        &st.router_id
    };
    s += &format!("  BGP version 4, remote router ID {id}\n");
    s += &format!("  BGP state = {}", session_state_name(st.session_state));
    match &tstate.uptime {
        Some(up) => s += &format!(", up for {}\n", timedelta(now, up.seconds)),
        None => s += "\n",
    }
    s += &format!(
        "  BGP OutQ = {}, Flops = {}\n",
        st.queues.unwrap_or_default().output,
        st.flops
    );
    s += &format!(
        "  Hold time is {}, keepalive interval is {} seconds\n",
        tstate.negotiated_hold_time, tstate.keepalive_interval
    );
    s += &format!(
        "  Configured hold time is {}, keepalive interval is {} seconds\n",
        tconf.hold_time, tconf.keepalive_interval
    );
    let mut elems = Vec::new();
    if conf.allow_own_asn > 0 {
        elems.push(format!("Allow Own AS: {}", conf.allow_own_asn));
    }
    match conf.remove_private {
        1 => elems.push("Remove private AS: all".to_string()),
        2 => elems.push("Remove private AS: replace".to_string()),
        _ => {}
    }
    if conf.replace_peer_asn {
        elems.push("Replace peer AS: enabled".to_string());
    }
    s += &format!("  {}\n", elems.join(", "));
    s += "  Neighbor capabilities:\n";
    s += &capabilities(&st);
    let (rx, acc, adv) = counters(p, family);
    let msgs = st.messages.unwrap_or_default();
    let (sent, rcvd) = (
        msgs.sent.unwrap_or_default(),
        msgs.received.unwrap_or_default(),
    );
    s += "  Message statistics:\n";
    s += "                         Sent       Rcvd\n";
    for (label, a, b) in [
        ("Opens:        ", sent.open, rcvd.open),
        ("Notifications:", sent.notification, rcvd.notification),
        ("Updates:      ", sent.update, rcvd.update),
        ("Keepalives:   ", sent.keepalive, rcvd.keepalive),
        ("Route Refresh:", sent.refresh, rcvd.refresh),
        ("Discarded:    ", sent.discarded, rcvd.discarded),
        ("Total:        ", sent.total, rcvd.total),
    ] {
        s += &format!("    {label} {a:>10} {b:>10}\n");
    }
    s += "  Route statistics:\n";
    s += &format!("    Advertised:    {adv:>10}\n");
    s += &format!("    Received:      {rx:>10}\n");
    s += &format!("    Accepted:      {acc:>10}\n");
    let mut first = true;
    for a in &p.afi_safis {
        if let Some(l) = a.prefix_limits.as_ref().filter(|l| l.max_prefixes > 0) {
            if first {
                s += "  Prefix Limits:\n";
                first = false;
            }
            s += &format!(
                "    {}:\tMaximum prefixes allowed {}",
                family_name(l.family.as_ref()),
                l.max_prefixes
            );
            if l.shutdown_threshold_pct > 0 {
                s += &format!(
                    ", Threshold for warning message {}%\n",
                    l.shutdown_threshold_pct
                );
            } else {
                s += "\n";
            }
        }
    }
    s
}

/// One path attribute, decoded from its packed message.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    /// ORIGIN.
    Origin(u32),
    /// AS_PATH: (segment type, numbers).
    AsPath(Vec<(i32, Vec<u32>)>),
    /// NEXT_HOP.
    NextHop(String),
    /// MULTI_EXIT_DISC.
    Med(u32),
    /// LOCAL_PREF.
    LocalPref(u32),
    /// ATOMIC_AGGREGATE.
    AtomicAggregate,
    /// AGGREGATOR.
    Aggregator(u32, String),
    /// COMMUNITIES.
    Communities(Vec<u32>),
    /// ORIGINATOR_ID.
    OriginatorId(String),
    /// CLUSTER_LIST.
    ClusterList(Vec<String>),
    /// MP_REACH_NLRI: family, next hops, NLRI prefixes.
    MpReach(apipb::Family, Vec<String>, Vec<String>),
    /// LARGE_COMMUNITY.
    LargeCommunities(Vec<(u32, u32, u32)>),
    /// Anything else: flags, type, value.
    Unknown(u32, u32, Vec<u8>),
}

/// The NLRI prefix of a packed `IPAddressPrefix` (`10.0.0.0/8`).
pub fn nlri_text(a: &Any) -> Option<String> {
    if !a.type_url.ends_with("/apipb.IPAddressPrefix") {
        return None;
    }
    let p = apipb::IpAddressPrefix::decode(a.value.as_slice()).ok()?;
    Some(format!("{}/{}", p.prefix, p.prefix_len))
}

impl Attr {
    /// Decode a packed attribute; `None` for a type we do not know.
    pub fn from_any(a: &Any) -> Option<Attr> {
        let name = a.type_url.rsplit('/').next().unwrap_or_default();
        let v = a.value.as_slice();
        Some(match name {
            "apipb.OriginAttribute" => Attr::Origin(apipb::OriginAttribute::decode(v).ok()?.origin),
            "apipb.AsPathAttribute" => Attr::AsPath(
                apipb::AsPathAttribute::decode(v)
                    .ok()?
                    .segments
                    .into_iter()
                    .map(|s| (s.r#type, s.numbers))
                    .collect(),
            ),
            "apipb.NextHopAttribute" => {
                Attr::NextHop(apipb::NextHopAttribute::decode(v).ok()?.next_hop)
            }
            "apipb.MultiExitDiscAttribute" => {
                Attr::Med(apipb::MultiExitDiscAttribute::decode(v).ok()?.med)
            }
            "apipb.LocalPrefAttribute" => {
                Attr::LocalPref(apipb::LocalPrefAttribute::decode(v).ok()?.local_pref)
            }
            "apipb.AtomicAggregateAttribute" => Attr::AtomicAggregate,
            "apipb.AggregatorAttribute" => {
                let a = apipb::AggregatorAttribute::decode(v).ok()?;
                Attr::Aggregator(a.asn, a.address)
            }
            "apipb.CommunitiesAttribute" => {
                Attr::Communities(apipb::CommunitiesAttribute::decode(v).ok()?.communities)
            }
            "apipb.OriginatorIdAttribute" => {
                Attr::OriginatorId(apipb::OriginatorIdAttribute::decode(v).ok()?.id)
            }
            "apipb.ClusterListAttribute" => {
                Attr::ClusterList(apipb::ClusterListAttribute::decode(v).ok()?.ids)
            }
            "apipb.MpReachNLRIAttribute" => {
                let m = apipb::MpReachNlriAttribute::decode(v).ok()?;
                Attr::MpReach(
                    m.family.unwrap_or_default(),
                    m.next_hops,
                    m.nlris.iter().filter_map(nlri_text).collect(),
                )
            }
            "apipb.LargeCommunitiesAttribute" => Attr::LargeCommunities(
                apipb::LargeCommunitiesAttribute::decode(v)
                    .ok()?
                    .communities
                    .into_iter()
                    .map(|c| (c.global_admin, c.local_data1, c.local_data2))
                    .collect(),
            ),
            "apipb.UnknownAttribute" => {
                let u = apipb::UnknownAttribute::decode(v).ok()?;
                Attr::Unknown(u.flags, u.r#type, u.value)
            }
            _ => return None,
        })
    }

    /// gobgp's attribute type code.
    pub fn type_code(&self) -> u32 {
        match self {
            Attr::Origin(_) => 1,
            Attr::AsPath(_) => 2,
            Attr::NextHop(_) => 3,
            Attr::Med(_) => 4,
            Attr::LocalPref(_) => 5,
            Attr::AtomicAggregate => 6,
            Attr::Aggregator(..) => 7,
            Attr::Communities(_) => 8,
            Attr::OriginatorId(_) => 9,
            Attr::ClusterList(_) => 10,
            Attr::MpReach(..) => 14,
            Attr::LargeCommunities(_) => 32,
            Attr::Unknown(_, t, _) => *t,
        }
    }

    /// The attribute as gobgp's `String()` shows it in the Attrs column.
    pub fn text(&self) -> String {
        match self {
            Attr::Origin(o) => format!(
                "{{Origin: {}}}",
                match o {
                    0 => "i",
                    1 => "e",
                    2 => "?",
                    _ => "-",
                }
            ),
            Attr::AsPath(_) => as_path_text(self),
            Attr::NextHop(n) => format!("{{Nexthop: {n}}}"),
            Attr::Med(m) => format!("{{Med: {m}}}"),
            Attr::LocalPref(l) => format!("{{LocalPref: {l}}}"),
            Attr::AtomicAggregate => "{AtomicAggregate}".into(),
            Attr::Aggregator(asn, a) => format!("{{Aggregate: {{AS: {asn}, Address: {a}}}}}"),
            Attr::Communities(c) => format!(
                "{{Communities: {}}}",
                c.iter()
                    .map(|v| community(*v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Attr::OriginatorId(i) => format!("{{Originator: {i}}}"),
            Attr::ClusterList(l) => format!("{{ClusterList: [{}]}}", l.join(" ")),
            Attr::MpReach(f, nh, nlris) => format!(
                "{{MpReach({}): {{Nexthop: {}, NLRIs: [{}]}}}}",
                family_name(Some(f)),
                nh.first().map_or("<nil>", |s| s.as_str()),
                nlris.join(" ")
            ),
            Attr::LargeCommunities(l) => format!(
                "{{LargeCommunity: [ {}]}}",
                l.iter()
                    .map(|(a, b, c)| format!("{a}:{b}:{c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Attr::Unknown(flags, t, v) => format!(
                "{{Flags: {flags}, Type: {t}, Value: [{}]}}",
                v.iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }
}

/// A community as gobgp names it: well-known names, else `high:low`.
pub fn community(v: u32) -> String {
    let name = match v {
        0xffff0000 => "planned-shut",
        0xffff0001 => "accept-own",
        0xffff0002 => "route-filter-translated-v4",
        0xffff0003 => "route-filter-v4",
        0xffff0004 => "route-filter-translated-v6",
        0xffff0005 => "route-filter-v6",
        0xffff0006 => "llgr-stale",
        0xffff0007 => "no-llgr",
        0xffff029a => "blackhole",
        0xffffff01 => "no-export",
        0xffffff02 => "no-advertise",
        0xffffff03 => "no-export-subconfed",
        0xffffff04 => "no-peer",
        0 => "internet",
        _ => return format!("{}:{}", v >> 16, v & 0xffff),
    };
    name.to_string()
}

/// gobgp's `AsPathString`: sequences space-separated, `{a,b}` sets, `(a b)` confederation
/// sequences, `[a,b]` confederation sets.
pub fn as_path_text(a: &Attr) -> String {
    let Attr::AsPath(segs) = a else {
        return String::new();
    };
    segs.iter()
        .map(|(t, asns)| {
            let (open, sep, close) = match t {
                1 => ("{", ",", "}"),
                3 => ("(", " ", ")"),
                4 => ("[", ",", "]"),
                _ => ("", " ", ""),
            };
            let body = asns
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(sep);
            format!("{open}{body}{close}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which table a listing comes from: it decides the columns, as in gobgp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RibKind {
    /// `global rib` and `neighbor ADDR local`: best markers and age.
    Best,
    /// `neighbor ADDR adj-in`: path identifier and age.
    AdjIn,
    /// `neighbor ADDR adj-out`: path identifier, no age.
    AdjOut,
}

/// `gobgp global rib` / `neighbor ADDR adj-in|adj-out|local`: the route table. Destinations are
/// shown sorted by prefix address, as gobgp does; an empty list gives `Network not in table`.
pub fn rib(dsts: &[apipb::Destination], kind: RibKind, now: i64) -> String {
    if dsts.is_empty() {
        return "Network not in table\n".into();
    }
    let mut sorted: Vec<&apipb::Destination> = dsts.iter().collect();
    sorted.sort_by_key(|d| {
        let ip = d
            .prefix
            .split('/')
            .next()
            .and_then(|a| a.parse::<IpAddr>().ok());
        match ip {
            Some(IpAddr::V4(v)) => v.octets().to_vec(),
            Some(IpAddr::V6(v)) => v.octets().to_vec(),
            None => Vec::new(),
        }
    });
    let (show_best, show_age, id) = match kind {
        RibKind::Best => (true, true, false),
        RibKind::AdjIn => (false, true, true),
        RibKind::AdjOut => (false, false, true),
    };
    let mut rows = Vec::new();
    let (mut wp, mut wn, mut wa) = (20, 20, 20);
    for d in sorted {
        for p in &d.paths {
            let attrs: Vec<Attr> = p.pattrs.iter().filter_map(Attr::from_any).collect();
            let mut sym = String::new();
            if p.stale {
                sym.push('S');
            }
            if show_best {
                sym += if p.best && !p.is_nexthop_invalid {
                    "*>"
                } else {
                    "* "
                };
            }
            let ident = match kind {
                RibKind::AdjIn => p.identifier.to_string(),
                _ => p.local_identifier.to_string(),
            };
            let network = p.nlri.as_ref().and_then(nlri_text).unwrap_or_default();
            let nexthop = attrs
                .iter()
                .find_map(|a| match a {
                    Attr::NextHop(n) => Some(n.clone()),
                    Attr::MpReach(_, nh, _) => nh.first().cloned(),
                    _ => None,
                })
                .unwrap_or_else(|| "fictitious".into());
            let aspath = attrs
                .iter()
                .find(|a| matches!(a, Attr::AsPath(_)))
                .map(as_path_text)
                .unwrap_or_default();
            let age = timedelta(now, p.age.as_ref().map_or(0, |a| a.seconds));
            let others: Vec<String> = attrs
                .iter()
                .filter(|a| !matches!(a.type_code(), 2 | 3 | 14 | 17))
                .map(Attr::text)
                .collect();
            wp = wp.max(network.len());
            wn = wn.max(nexthop.len());
            wa = wa.max(aspath.len());
            rows.push((
                sym,
                ident,
                network,
                nexthop,
                aspath,
                age,
                format!("[{}]", others.join(" ")),
            ));
        }
    }
    let line = |r: (&str, &str, &str, &str, &str, &str, &str)| {
        let mut s = format!("{:<3}", r.0);
        if id {
            s += &format!("{:<3} ", r.1);
        }
        s += &format!("{:<wp$} {:<wn$} {:<wa$} ", r.2, r.3, r.4);
        if show_age {
            s += &format!("{:<10} ", r.5);
        }
        s += r.6;
        s.push('\n');
        s
    };
    let mut out = line(("", "ID", "Network", "Next Hop", "AS_PATH", "Age", "Attrs"));
    for r in &rows {
        out += &line((&r.0, &r.1, &r.2, &r.3, &r.4, &r.5, &r.6));
    }
    out
}

/// `gobgp global rib summary`.
pub fn table_summary(family: &apipb::Family, t: &apipb::GetTableResponse) -> String {
    let afi = apipb::family::Afi::try_from(family.afi)
        .map(|a| a.as_str_name().to_string())
        .unwrap_or_else(|_| family.afi.to_string());
    let safi = apipb::family::Safi::try_from(family.safi)
        .map(|a| a.as_str_name().to_string())
        .unwrap_or_else(|_| family.safi.to_string());
    format!(
        "Table afi:{afi} safi:{safi}\nDestination: {}, Path: {}\n",
        t.num_destination, t.num_path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timedelta_is_hh_mm_ss_then_days() {
        assert_eq!(timedelta(100, 87), "00:00:13");
        assert_eq!(timedelta(93784 + 10, 10), "1d 02:03:04");
    }

    #[test]
    fn neighbor_summary_widths_follow_the_longest_value() {
        let p = apipb::Peer {
            conf: Some(apipb::PeerConf {
                neighbor_address: "192.168.50.51".into(),
                ..Default::default()
            }),
            state: Some(apipb::PeerState {
                neighbor_address: "192.168.50.51".into(),
                peer_asn: 64512,
                session_state: 6,
                ..Default::default()
            }),
            timers: Some(apipb::Timers {
                config: None,
                state: Some(apipb::TimersState {
                    uptime: Some(prost_types::Timestamp {
                        seconds: 1000 - 229,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            }),
            afi_safis: vec![apipb::AfiSafi {
                state: Some(apipb::AfiSafiState {
                    received: 1,
                    accepted: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            neighbors(&[p], None, 1000),
            "Peer             AS  Up/Down State       |#Received  Accepted\n\
             192.168.50.51 64512 00:03:49 Establ      |        1         1\n"
        );
    }

    #[test]
    fn an_admin_down_peer_is_idle_admin_and_never_up() {
        let p = apipb::Peer {
            state: Some(apipb::PeerState {
                neighbor_address: "10.0.0.2".into(),
                admin_state: 1,
                session_state: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let out = neighbors(&[p], None, 0);
        assert!(
            out.ends_with("10.0.0.2  *   never Idle(Admin) |        0         0\n"),
            "{out}"
        );
    }

    #[test]
    fn an_empty_table_is_network_not_in_table() {
        assert_eq!(rib(&[], RibKind::Best, 0), "Network not in table\n");
    }

    #[test]
    fn as_paths_mark_sets_and_confederations() {
        let a = Attr::AsPath(vec![
            (2, vec![65001, 65002]),
            (1, vec![1, 2]),
            (3, vec![3, 4]),
        ]);
        assert_eq!(as_path_text(&a), "65001 65002 {1,2} (3 4)");
    }

    #[test]
    fn well_known_communities_have_names() {
        assert_eq!(community(0xffffff01), "no-export");
        assert_eq!(community((65001 << 16) | 7), "65001:7");
    }
}
