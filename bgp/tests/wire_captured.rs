//! Golden tests from real sessions: every message gobgpd 3.10 and BIRD 2.0.12 exchanged in
//! `tests/tools/capture_vectors.sh` (files in `tests/vectors/captured/`, see the README there).
//!
//! Each capture line has an `# expect:` line written by hand from the capture scenario (what
//! the script configured and announced, read off the hex where the scenario leaves a choice,
//! e.g. BIRD's link-local next hop): the decoded message must show exactly those fields, no
//! more. Each message is decoded with the context its own session negotiated (the two OPENs of
//! that session label), and re-encoding it must give back the captured bytes, byte for byte;
//! where the sender used the Extended Length form for a short attribute (BIRD does for
//! MP_REACH_NLRI / MP_UNREACH_NLRI), the line says `reencode=short-lengths` and the bytes are
//! compared with the capture rewritten to the 1-octet length form our encoder uses.

mod wire_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use underroute_bgp::wire::*;
use underroute_bgp::Family;
use wire_common::*;

/// The files the capture script writes; all must be there (a missing directory is a failure).
const FILES: &[&str] = &[
    "bird_eor.hex",
    "bird_keepalive.hex",
    "bird_notification.hex",
    "bird_open.hex",
    "bird_route_refresh.hex",
    "bird_update_v4.hex",
    "bird_update_v6.hex",
    "bird_withdraw_v4.hex",
    "bird_withdraw_v6.hex",
    "gobgp_eor.hex",
    "gobgp_keepalive.hex",
    "gobgp_notification.hex",
    "gobgp_open.hex",
    "gobgp_update_v4.hex",
    "gobgp_update_v6.hex",
    "gobgp_withdraw_v4.hex",
    "gobgp_withdraw_v6.hex",
];

/// Sessions of the capture; `wrong-peer-as` never negotiates (OPEN errors only).
const SESSIONS: &[&str] = &["ebgp-v4", "ebgp-v6", "ibgp"];

/// One captured message.
struct Capture {
    file: String,
    line: usize,
    sender: String,
    session: String,
    bytes: Vec<u8>,
    expect: BTreeMap<String, String>,
}

impl Capture {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/captured")
}

/// Reads every file: label line, `# expect:` line, hex line.
fn captures() -> Vec<Capture> {
    let dir = dir();
    let mut out = Vec::new();
    for file in FILES {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the captures are part of the repository)",
                path.display()
            )
        });
        let mut label: Option<&str> = None;
        let mut expect: Option<&str> = None;
        let mut count = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if let Some(e) = line.strip_prefix("# expect:") {
                assert!(expect.is_none(), "{file}:{}: two expect lines", n + 1);
                expect = Some(e.trim());
            } else if line.starts_with('#') {
                label = Some(line);
                expect = None;
            } else if !line.is_empty() {
                let label = label
                    .take()
                    .unwrap_or_else(|| panic!("{file}:{}: no label", n + 1));
                let expect = expect
                    .take()
                    .unwrap_or_else(|| panic!("{file}:{}: no `# expect:` line", n + 1));
                let session = label
                    .rsplit_once('[')
                    .and_then(|(_, s)| s.strip_suffix(']'))
                    .unwrap_or_else(|| panic!("{file}:{}: no [session] in the label", n + 1));
                out.push(Capture {
                    file: file.to_string(),
                    line: n + 1,
                    sender: file.split('_').next().unwrap_or_default().to_string(),
                    session: session.to_string(),
                    bytes: h(line),
                    expect: expect
                        .split_whitespace()
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (k.to_string(), v.to_string())
                        })
                        .collect(),
                });
                count += 1;
            }
        }
        assert!(count > 0, "{file}: no messages");
    }
    out
}

/// The context each session negotiated, from the first OPEN of each side (the receiver's view
/// of the AS numbers does not matter here: only iBGP versus eBGP does, and it is symmetric).
fn contexts(all: &[Capture]) -> BTreeMap<String, SessionContext> {
    let mut opens: BTreeMap<(String, String), Open> = BTreeMap::new();
    for c in all {
        if let Ok(Message::Open(o)) = decode_message(&c.bytes, &SessionContext::default()) {
            opens
                .entry((c.session.clone(), c.sender.clone()))
                .or_insert(o);
        }
    }
    SESSIONS
        .iter()
        .map(|s| {
            let side = |sender: &str| {
                opens
                    .get(&(s.to_string(), sender.to_string()))
                    .unwrap_or_else(|| panic!("no {sender} OPEN for session {s}"))
            };
            let (g, b) = (side("gobgp"), side("bird"));
            (
                s.to_string(),
                SessionContext::negotiate(g, b, g.asn(), b.asn()),
            )
        })
        .collect()
}

fn family(afi: u16, safi: u8) -> String {
    match Family::from_afi_safi(afi, safi) {
        Some(Family::Ipv4Unicast) => "ipv4/unicast".into(),
        Some(Family::Ipv6Unicast) => "ipv6/unicast".into(),
        None => format!("{afi}/{safi}"),
    }
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn community(c: u32) -> String {
    format!("{}:{}", c >> 16, c & 0xffff)
}

fn as_path(p: &AsPath) -> String {
    p.segments
        .iter()
        .map(|s| match s {
            AsSegment::Sequence(a) => join(a.iter().map(|x| x.0)),
            AsSegment::Set(a) => format!("{{{}}}", join(a.iter().map(|x| x.0))),
            AsSegment::ConfedSequence(a) => format!("({})", join(a.iter().map(|x| x.0))),
            AsSegment::ConfedSet(a) => format!("[{}]", join(a.iter().map(|x| x.0))),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn capability(c: &Capability) -> String {
    match c {
        Capability::Multiprotocol { afi, safi } => format!("mp:{}", family(*afi, *safi)),
        Capability::RouteRefresh => "route-refresh".into(),
        Capability::FourOctetAs(a) => format!("as4:{}", a.0),
        Capability::GracefulRestart(gr) => {
            let mut parts = vec![gr.restart_time.to_string()];
            if gr.restart_state {
                parts.push("restarting".into());
            }
            if gr.notification {
                parts.push("notification".into());
            }
            for f in &gr.families {
                let fwd = if f.forwarding { "+F" } else { "" };
                parts.push(format!("{}{fwd}", family(f.afi, f.safi)));
            }
            format!("gr({})", parts.join(","))
        }
        Capability::ExtendedNextHop(entries) => format!(
            "ext-nh({})",
            join(entries.iter().map(|e| format!(
                "{}>{}",
                family(e.nlri_afi, e.nlri_safi as u8),
                if e.next_hop_afi == 2 { "ipv6" } else { "ipv4" }
            )))
        ),
        Capability::AddPath(entries) => format!(
            "add-path({})",
            join(
                entries
                    .iter()
                    .map(|e| format!("{}:{}", family(e.afi, e.safi), e.send_receive))
            )
        ),
        Capability::Fqdn { hostname, domain } if domain.is_empty() => format!("fqdn({hostname})"),
        Capability::Fqdn { hostname, domain } => format!("fqdn({hostname}.{domain})"),
        Capability::Unknown { code, data } => format!("cap{code}({})", hex::encode(data)),
    }
}

fn attribute_name(a: &PathAttribute) -> String {
    match a {
        PathAttribute::Origin(_) => "ORIGIN".into(),
        PathAttribute::AsPath(_) => "AS_PATH".into(),
        PathAttribute::NextHop(_) => "NEXT_HOP".into(),
        PathAttribute::MultiExitDisc(_) => "MED".into(),
        PathAttribute::LocalPref(_) => "LOCAL_PREF".into(),
        PathAttribute::AtomicAggregate => "ATOMIC_AGGREGATE".into(),
        PathAttribute::Aggregator(_) => "AGGREGATOR".into(),
        PathAttribute::Communities(_) => "COMMUNITIES".into(),
        PathAttribute::OriginatorId(_) => "ORIGINATOR_ID".into(),
        PathAttribute::ClusterList(_) => "CLUSTER_LIST".into(),
        PathAttribute::MpReach(_) => "MP_REACH_NLRI".into(),
        PathAttribute::MpUnreach(_) => "MP_UNREACH_NLRI".into(),
        PathAttribute::As4Path(_) => "AS4_PATH".into(),
        PathAttribute::As4Aggregator(_) => "AS4_AGGREGATOR".into(),
        PathAttribute::LargeCommunities(_) => "LARGE_COMMUNITIES".into(),
        PathAttribute::Unknown(raw) => format!("ATTR{}", raw.type_code),
    }
}

/// The decoded message as the same `key=value` fields the expect lines use.
fn fields(m: &Message, ctx: &SessionContext) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        assert!(f.insert(k.to_string(), v).is_none(), "field {k} twice");
    };
    match m {
        Message::Keepalive => put("type", "keepalive".into()),
        Message::Notification(n) => {
            put("type", "notification".into());
            put("code", n.code.to_string());
            put("subcode", n.subcode.to_string());
            put("data", hex::encode(&n.data));
        }
        Message::RouteRefresh(r) => {
            put("type", "route-refresh".into());
            put("family", family(r.afi, r.safi));
            put("subtype", r.subtype.to_string());
        }
        Message::Open(o) => {
            put("type", "open".into());
            put("version", o.version.to_string());
            put("as", o.my_as.to_string());
            put("hold", o.hold_time.to_string());
            put("id", o.router_id.to_string());
            put(
                "caps",
                o.capabilities
                    .iter()
                    .map(capability)
                    .collect::<Vec<_>>()
                    .join(";"),
            );
        }
        Message::Update(u) => {
            put("type", "update".into());
            assert!(u.treat_as_withdraw.is_none(), "treat-as-withdraw: {u:?}");
            if !u.withdrawn.is_empty() {
                put("withdrawn", join(&u.withdrawn));
            }
            if !u.nlri.is_empty() {
                put("nlri", join(&u.nlri));
            }
            if !u.attributes.is_empty() {
                put("attrs", join(u.attributes.iter().map(attribute_name)));
            }
            for a in &u.attributes {
                match a {
                    PathAttribute::Origin(o) => put(
                        "origin",
                        match o {
                            Origin::Igp => "igp",
                            Origin::Egp => "egp",
                            Origin::Incomplete => "incomplete",
                        }
                        .into(),
                    ),
                    PathAttribute::AsPath(p) => put("as_path", as_path(p)),
                    PathAttribute::NextHop(n) => put("next_hop", n.to_string()),
                    PathAttribute::MultiExitDisc(v) => put("med", v.to_string()),
                    PathAttribute::LocalPref(v) => put("local_pref", v.to_string()),
                    PathAttribute::Communities(c) => {
                        put("communities", join(c.iter().map(|&c| community(c))))
                    }
                    PathAttribute::LargeCommunities(c) => put(
                        "large",
                        join(
                            c.iter()
                                .map(|l| format!("{}:{}:{}", l.global, l.local1, l.local2)),
                        ),
                    ),
                    PathAttribute::MpReach(r) => {
                        put("mp_reach", family(r.afi, r.safi));
                        put(
                            "mp_nh",
                            match r.next_hop {
                                MpNextHop::V4(a) => a.to_string(),
                                MpNextHop::V6(a) => a.to_string(),
                                MpNextHop::V6WithLinkLocal(g, l) => format!("{g},{l}"),
                            },
                        );
                        put("mp_nlri", join(&r.nlri));
                    }
                    PathAttribute::MpUnreach(r) => {
                        put("mp_unreach", family(r.afi, r.safi));
                        put("mp_withdrawn", join(&r.withdrawn));
                    }
                    other => put(&attribute_name(other), format!("{other:?}")),
                }
            }
            if let Some(eor) = u.routes(ctx).end_of_rib {
                let (afi, safi) = eor.afi_safi();
                put("eor", family(afi, safi));
            }
        }
    }
    f
}

/// The captured message with every Extended Length attribute whose value fits one octet
/// rewritten to the short form (flags without 0x10, 1-octet length), lengths fixed up. Walks
/// the raw bytes on its own, so it does not depend on our decoder.
fn short_lengths(msg: &[u8]) -> Vec<u8> {
    assert_eq!(msg[18], 2, "only UPDATEs carry attributes");
    let wlen = usize::from(u16::from_be_bytes([msg[19], msg[20]]));
    let attrs_at = 21 + wlen;
    let alen = usize::from(u16::from_be_bytes([msg[attrs_at], msg[attrs_at + 1]]));
    let (attrs, nlri) = msg[attrs_at + 2..].split_at(alen);
    let mut out_attrs = Vec::new();
    let mut i = 0;
    while i < attrs.len() {
        let (flags, code) = (attrs[i], attrs[i + 1]);
        let (len, head) = if flags & 0x10 != 0 {
            (
                usize::from(u16::from_be_bytes([attrs[i + 2], attrs[i + 3]])),
                4,
            )
        } else {
            (usize::from(attrs[i + 2]), 3)
        };
        let value = &attrs[i + head..i + head + len];
        if flags & 0x10 != 0 && len < 256 {
            out_attrs.extend_from_slice(&[flags & !0x10, code, len as u8]);
        } else {
            out_attrs.extend_from_slice(&attrs[i..i + head]);
        }
        out_attrs.extend_from_slice(value);
        i += head + len;
    }
    let mut body = msg[19..attrs_at].to_vec();
    body.extend_from_slice(&(out_attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(&out_attrs);
    body.extend_from_slice(nlri);
    wire_common::msg(2, &body)
}

#[test]
fn captured_messages_decode_to_what_the_capture_says_and_encode_back_byte_for_byte() {
    let all = captures();
    let ctxs = contexts(&all);
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut short_form = 0;
    for c in &all {
        let at = c.at();
        // OPEN and NOTIFICATION come before (or instead of) a negotiated session.
        let ctx = match ctxs.get(&c.session) {
            Some(ctx) if c.bytes[18] != 1 && c.bytes[18] != 3 => {
                used.insert(c.session.clone());
                ctx.clone()
            }
            None if c.session != "wrong-peer-as" => panic!("{at}: unknown session {}", c.session),
            _ => SessionContext::default(),
        };
        let decoded = decode_message(&c.bytes, &ctx).unwrap_or_else(|e| panic!("{at}: {e}"));
        let mut expect = c.expect.clone();
        let reencode = expect.remove("reencode");
        assert_eq!(
            fields(&decoded, &ctx),
            expect,
            "{at}: decoded fields differ from the expect line\n{decoded:?}"
        );
        let again = encode(&decoded, &ctx);
        let want = match reencode.as_deref() {
            None | Some("same") => c.bytes.clone(),
            Some("short-lengths") => {
                short_form += 1;
                let short = short_lengths(&c.bytes);
                assert_ne!(
                    short, c.bytes,
                    "{at}: no Extended Length attribute to shorten"
                );
                short
            }
            Some(other) => panic!("{at}: unknown reencode={other}"),
        };
        assert_eq!(hex::encode(&again), hex::encode(&want), "{at}: re-encoded");
    }
    // Every negotiated session decoded some of its own messages, and the BIRD captures kept
    // their Extended Length attributes (the short-form comparison ran).
    assert_eq!(
        used,
        SESSIONS
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    assert!(short_form >= 7, "{short_form} short-form comparisons");
}

#[test]
fn sessions_negotiate_what_their_opens_offer() {
    // RFC 4760 8 / RFC 6793 / RFC 8950 4, checked against the capture scenario: gobgpd offers
    // the IPv4-over-IPv6 next hop, BIRD does not, so no session has it.
    let ctxs = contexts(&captures());
    let families = |s: &str| ctxs[s].families.clone();
    assert_eq!(families("ebgp-v4"), vec![Family::Ipv4Unicast]);
    assert_eq!(families("ebgp-v6"), vec![Family::Ipv6Unicast]);
    assert_eq!(
        families("ibgp"),
        vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
    );
    for (s, ctx) in &ctxs {
        assert!(ctx.four_octet_as && !ctx.extended_next_hop, "{s}: {ctx:?}");
        assert_eq!(ctx.is_ibgp(), s == "ibgp", "{s}: {ctx:?}");
    }
}

#[test]
fn the_expect_lines_can_fail() {
    // The comparison above must be able to fail: a changed field is caught.
    let c = captures()
        .into_iter()
        .find(|c| c.file == "gobgp_update_v4.hex")
        .expect("a gobgp UPDATE");
    let ctx = contexts(&captures())["ibgp"].clone();
    let mut bytes = c.bytes.clone();
    // MED 100 -> 101 (the MED value's last octet).
    let at = hex::encode(&bytes).find("80040400000064").expect("MED") / 2 + 6;
    bytes[at] += 1;
    let decoded = decode_message(&bytes, &ctx).expect("still decodes");
    assert_ne!(fields(&decoded, &ctx), c.expect);
}
