//! Property: for every message in canonical form, decode(encode(m)) == m, on every kind of
//! session. "Canonical" excludes what the decoder normalises or judges (host bits in prefixes,
//! attributes RFC 7606 discards on that session, capability values it cannot parse).

mod wire_common;

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Bytes, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use underroute_bgp::wire::*;
use underroute_bgp::{Asn, RouterId};

fn contexts() -> impl Strategy<Value = SessionContext> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(four, ibgp, enh)| SessionContext {
        four_octet_as: four,
        extended_next_hop: enh,
        peer_asn: if ibgp { Asn(65001) } else { Asn(65002) },
        ..wire_common::ibgp4()
    })
}

fn v4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, l)| Ipv4Net::new(Ipv4Addr::from(a), l).unwrap().trunc())
}

fn v6net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, l)| Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
}

fn host_v4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>()
        .prop_map(Ipv4Addr::from)
        .prop_filter("usable next hop", |a| {
            !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())
        })
}

fn asn(four: bool) -> BoxedStrategy<Asn> {
    if four {
        any::<u32>().prop_map(Asn).boxed()
    } else {
        any::<u16>().prop_map(|a| Asn(a.into())).boxed()
    }
}

fn as_path(four: bool, confed: bool) -> impl Strategy<Value = AsPath> {
    let seg = (0u8..if confed { 4 } else { 2 }, vec(asn(four), 1..8)).prop_map(|(t, a)| match t {
        0 => AsSegment::Sequence(a),
        1 => AsSegment::Set(a),
        2 => AsSegment::ConfedSequence(a),
        _ => AsSegment::ConfedSet(a),
    });
    vec(seg, 0..4).prop_map(|segments| AsPath { segments })
}

fn aggregator(four: bool) -> impl Strategy<Value = Aggregator> {
    (asn(four), any::<u32>()).prop_map(|(asn, a)| Aggregator {
        asn,
        address: a.into(),
    })
}

/// `Some` values only when `enabled`.
fn maybe<T: std::fmt::Debug + Clone + 'static>(
    enabled: bool,
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<T>> {
    if enabled {
        option::of(s).boxed()
    } else {
        Just(None).boxed()
    }
}

const KNOWN_ATTRS: [u8; 15] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 17, 18, 32];

fn mp_reach(ctx: &SessionContext) -> BoxedStrategy<MpReach> {
    let v6hop = prop_oneof![
        any::<u128>().prop_map(|a| MpNextHop::V6(a.into())),
        (any::<u128>(), any::<u128>())
            .prop_map(|(a, b)| MpNextHop::V6WithLinkLocal(a.into(), b.into())),
    ];
    let v4hop = if ctx.extended_next_hop {
        prop_oneof![
            any::<u32>().prop_map(|a| MpNextHop::V4(a.into())),
            v6hop.clone()
        ]
        .boxed()
    } else {
        any::<u32>().prop_map(|a| MpNextHop::V4(a.into())).boxed()
    };
    prop_oneof![
        (v4hop, vec(v4net().prop_map(IpNet::V4), 0..20)).prop_map(|(next_hop, nlri)| MpReach {
            afi: 1,
            safi: 1,
            next_hop,
            nlri
        }),
        (v6hop, vec(v6net().prop_map(IpNet::V6), 0..20)).prop_map(|(next_hop, nlri)| MpReach {
            afi: 2,
            safi: 1,
            next_hop,
            nlri
        }),
    ]
    .boxed()
}

fn mp_unreach() -> impl Strategy<Value = MpUnreach> {
    prop_oneof![
        vec(v4net().prop_map(IpNet::V4), 0..20).prop_map(|withdrawn| MpUnreach {
            afi: 1,
            safi: 1,
            withdrawn
        }),
        vec(v6net().prop_map(IpNet::V6), 0..20).prop_map(|withdrawn| MpUnreach {
            afi: 2,
            safi: 1,
            withdrawn
        }),
    ]
}

fn unknown_attr() -> impl Strategy<Value = RawAttribute> {
    (
        any::<u8>().prop_filter("not a known type", |t| !KNOWN_ATTRS.contains(t)),
        any::<bool>(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(type_code, partial, data)| RawAttribute {
            flags: 0xc0 | if partial { 0x20 } else { 0 },
            type_code,
            data: Bytes::from(data),
        })
}

/// An UPDATE that the decoder accepts unchanged on `ctx`.
fn update(ctx: SessionContext) -> BoxedStrategy<(SessionContext, Update)> {
    let four = ctx.four_octet_as;
    let ibgp = ctx.is_ibgp();
    let optional_parts = (
        option::of(any::<u32>()),
        maybe(ibgp, any::<u32>()),
        any::<bool>(),
        option::of(aggregator(four)),
        option::of(vec(any::<u32>(), 1..80)),
        maybe(ibgp, any::<u32>()),
        maybe(ibgp, vec(any::<u32>(), 1..5)),
        maybe(!four, as_path(true, false)),
        maybe(!four, aggregator(true)),
        option::of(vec((any::<u32>(), any::<u32>(), any::<u32>()), 1..5)),
    );
    let core = (
        vec(v4net(), 0..50),
        vec(v4net(), 0..50),
        any::<u8>(),
        as_path(four, ibgp),
        host_v4(),
        option::of(mp_reach(&ctx)),
        option::of(mp_unreach()),
        vec(unknown_attr(), 0..3),
    );
    (core, optional_parts)
        .prop_map(move |(core, opt)| {
            let (withdrawn, nlri, origin, path, nh, reach, unreach, unknown) = core;
            let (med, lp, atomic, agg, comms, orig_id, clusters, as4, as4agg, large) = opt;
            let mut a = vec![
                PathAttribute::Origin(match origin % 3 {
                    0 => Origin::Igp,
                    1 => Origin::Egp,
                    _ => Origin::Incomplete,
                }),
                PathAttribute::AsPath(path),
            ];
            if !nlri.is_empty() {
                a.push(PathAttribute::NextHop(nh));
            }
            a.extend(med.map(PathAttribute::MultiExitDisc));
            a.extend(lp.map(PathAttribute::LocalPref));
            if atomic {
                a.push(PathAttribute::AtomicAggregate);
            }
            a.extend(agg.map(PathAttribute::Aggregator));
            a.extend(comms.map(PathAttribute::Communities));
            a.extend(orig_id.map(|i| PathAttribute::OriginatorId(i.into())));
            a.extend(
                clusters
                    .map(|c| PathAttribute::ClusterList(c.into_iter().map(Into::into).collect())),
            );
            a.extend(reach.map(PathAttribute::MpReach));
            a.extend(unreach.map(PathAttribute::MpUnreach));
            a.extend(as4.map(PathAttribute::As4Path));
            a.extend(as4agg.map(PathAttribute::As4Aggregator));
            a.extend(large.map(|l| {
                PathAttribute::LargeCommunities(
                    l.into_iter()
                        .map(|(global, local1, local2)| LargeCommunity {
                            global,
                            local1,
                            local2,
                        })
                        .collect(),
                )
            }));
            let mut seen = std::collections::HashSet::new();
            for u in unknown {
                if seen.insert(u.type_code) {
                    a.push(PathAttribute::Unknown(u));
                }
            }
            Update {
                withdrawn,
                attributes: a,
                nlri,
                treat_as_withdraw: None,
            }
        })
        .prop_map(move |u| (ctx.clone(), u))
        .boxed()
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Capability::Multiprotocol { afi, safi }),
        Just(Capability::RouteRefresh),
        any::<u32>().prop_map(|a| Capability::FourOctetAs(Asn(a))),
        (
            any::<bool>(),
            any::<bool>(),
            0u16..0x1000,
            vec((any::<u16>(), any::<u8>(), any::<bool>()), 0..4)
        )
            .prop_map(
                |(r, n, t, f)| Capability::GracefulRestart(GracefulRestartCap {
                    restart_state: r,
                    notification: n,
                    restart_time: t,
                    families: f
                        .into_iter()
                        .map(|(afi, safi, forwarding)| GracefulRestartFamily {
                            afi,
                            safi,
                            forwarding
                        })
                        .collect(),
                })
            ),
        vec((any::<u16>(), any::<u16>(), any::<u16>()), 0..4).prop_map(|e| {
            Capability::ExtendedNextHop(
                e.into_iter()
                    .map(|(nlri_afi, nlri_safi, next_hop_afi)| ExtendedNextHopEntry {
                        nlri_afi,
                        nlri_safi,
                        next_hop_afi,
                    })
                    .collect(),
            )
        }),
        vec((any::<u16>(), any::<u8>(), any::<u8>()), 0..4).prop_map(|e| Capability::AddPath(
            e.into_iter()
                .map(|(afi, safi, send_receive)| AddPathEntry {
                    afi,
                    safi,
                    send_receive
                })
                .collect()
        )),
        ("[a-z0-9-]{0,20}", "[a-z0-9.]{0,20}")
            .prop_map(|(hostname, domain)| Capability::Fqdn { hostname, domain }),
        (
            any::<u8>().prop_filter("unknown code", |c| ![1, 2, 5, 64, 65, 69, 73].contains(c)),
            vec(any::<u8>(), 0..40)
        )
            .prop_map(|(code, data)| Capability::Unknown {
                code,
                data: Bytes::from(data)
            }),
    ]
}

fn message() -> impl Strategy<Value = (SessionContext, Message)> {
    prop_oneof![
        Just((SessionContext::default(), Message::Keepalive)),
        (any::<u8>(), any::<u8>(), vec(any::<u8>(), 0..100)).prop_map(|(c, s, d)| (
            SessionContext::default(),
            Message::Notification(NotificationError::with_data(c, s, d))
        )),
        (any::<u16>(), any::<u8>(), any::<u8>()).prop_map(|(afi, subtype, safi)| (
            SessionContext::default(),
            Message::RouteRefresh(RouteRefresh { afi, subtype, safi })
        )),
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            vec(capability(), 0..30)
        )
            .prop_map(|(version, my_as, hold_time, id, capabilities)| (
                SessionContext::default(),
                Message::Open(Open {
                    version,
                    my_as,
                    hold_time,
                    router_id: RouterId(id.into()),
                    capabilities,
                })
            )),
        contexts()
            .prop_flat_map(update)
            .prop_map(|(ctx, u)| (ctx, Message::Update(u))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn canonical_messages_round_trip((ctx, m) in message()) {
        let mut out = BytesMut::new();
        match encode_message(&m, &ctx, &mut out) {
            Ok(()) => {
                prop_assert_eq!(frame_len(&out), Ok(Some(out.len())));
                let back = decode_message(&out, &ctx);
                prop_assert_eq!(back, Ok(m));
            }
            Err(EncodeError::TooLong(_)) => prop_assert!(out.is_empty()),
            Err(e) => prop_assert!(false, "unexpected encode error {e}"),
        }
    }
}
