//! The RIB-facing side of the codec: `Update::routes`, `encode_announce`, `encode_withdraw`,
//! End-of-RIB and `SessionContext::negotiate`.

mod wire_common;

use std::net::{IpAddr, Ipv4Addr};

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use underroute_bgp::wire::*;
use underroute_bgp::{Asn, Family, RouterId};
use wire_common::*;

fn p(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn split(mut buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let Some(len) = frame_len(buf).unwrap() {
        let (m, rest) = buf.split_at(len);
        out.push(m);
        buf = rest;
    }
    assert!(buf.is_empty());
    out
}

fn attrs_with(next_hop: &str, as_path: &[u32]) -> PathAttrs {
    PathAttrs {
        as_path: AsPath {
            segments: vec![AsSegment::Sequence(
                as_path.iter().map(|&a| Asn(a)).collect(),
            )],
        },
        next_hop: Some(next_hop.parse().unwrap()),
        ..PathAttrs::default()
    }
}

/// Decode every message of `buf` and collect the announcements the RIB would see.
fn announced(buf: &[u8], ctx: &SessionContext) -> Vec<Announcement> {
    split(buf)
        .into_iter()
        .flat_map(|m| decode_update(m, ctx).unwrap().routes(ctx).announced)
        .collect()
}

#[test]
fn as4_path_is_merged_on_a_two_octet_session() {
    // RFC 6793 4.2.3: leading AS_PATH numbers beyond AS4_PATH's length, then AS4_PATH.
    let attrs = "40010100 4002 08 0203 fdea fdeb 5ba0 400304 0a000001 c01106 0201 00030d41";
    let u = decode_update(&update_msg("", attrs, "18 0a0100"), &ebgp2()).unwrap();
    let a = &u.routes(&ebgp2()).announced[0].attrs;
    assert_eq!(
        a.as_path.segments,
        vec![
            AsSegment::Sequence(vec![Asn(65002), Asn(65003)]),
            AsSegment::Sequence(vec![Asn(200001)])
        ]
    );
}

#[test]
fn as4_path_longer_than_as_path_is_ignored() {
    // RFC 6793 4.2.3: if AS_PATH is shorter than AS4_PATH, AS4_PATH is ignored.
    let attrs = "40010100 4002 04 0201 5ba0 400304 0a000001 c0110a 0202 0000fdea 00030d41";
    let u = decode_update(&update_msg("", attrs, "18 0a0100"), &ebgp2()).unwrap();
    let a = &u.routes(&ebgp2()).announced[0].attrs;
    assert_eq!(
        a.as_path.segments,
        vec![AsSegment::Sequence(vec![Asn(23456)])]
    );
}

#[test]
fn as4_aggregator_replaces_as_trans_aggregator() {
    // RFC 6793 4.2.3: AGGREGATOR with AS_TRANS takes AS4_AGGREGATOR's values.
    let attrs =
        "40010100 4002 04 0201 fdea 400304 0a000001 c00706 5ba0 0a000009 c01208 00030d41 0a000009";
    let u = decode_update(&update_msg("", attrs, "18 0a0100"), &ebgp2()).unwrap();
    let a = &u.routes(&ebgp2()).announced[0].attrs;
    assert_eq!(a.aggregator.unwrap().asn, Asn(200001));
}

#[test]
fn aggregator_with_real_asn_makes_as4_attributes_ignored() {
    // RFC 6793 4.2.3: AGGREGATOR other than AS_TRANS -> AS4_AGGREGATOR and AS4_PATH ignored.
    let attrs = "40010100 4002 04 0201 5ba0 400304 0a000001 c00706 fdea 0a000009 c01106 0201 00030d41 c01208 00030d41 0a000009";
    let u = decode_update(&update_msg("", attrs, "18 0a0100"), &ebgp2()).unwrap();
    let a = &u.routes(&ebgp2()).announced[0].attrs;
    assert_eq!(a.aggregator.unwrap().asn, Asn(65002));
    assert_eq!(
        a.as_path.segments,
        vec![AsSegment::Sequence(vec![Asn(23456)])]
    );
}

#[test]
fn end_of_rib_is_detected() {
    // RFC 4724 2.
    for f in Family::ALL {
        assert_eq!(Update::end_of_rib(f).routes(&ebgp4()).end_of_rib, Some(f));
    }
    let u = decode_update(&update_msg("18 0a0100", "", ""), &ebgp4()).unwrap();
    assert_eq!(u.routes(&ebgp4()).end_of_rib, None);
}

#[test]
fn full_table_of_slash_32s_packs_into_full_messages() {
    // RFC 4271 4: at most 4096 octets per message; ~800 /32 fit alongside the attributes.
    let prefixes: Vec<IpNet> = (0..2000u32)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()))
        .collect();
    let attrs = attrs_with("10.0.0.1", &[65001]);
    let ctx = ebgp4();
    let mut out = BytesMut::new();
    let n = encode_announce(&ctx, &attrs, &prefixes, &mut out).unwrap();
    assert_eq!(n, 3);
    let msgs = split(&out);
    assert!(msgs.iter().all(|m| m.len() <= 4096));
    assert!(
        msgs[0].len() > 4090,
        "first message is full: {}",
        msgs[0].len()
    );
    let got = announced(&out, &ctx);
    let all: Vec<IpNet> = got.iter().flat_map(|a| a.prefixes.clone()).collect();
    assert_eq!(all, prefixes);
    assert_eq!(got[0].attrs, attrs);
}

#[test]
fn ipv6_announce_uses_mp_reach() {
    // RFC 4760 3 / RFC 2545 3.
    let prefixes: Vec<IpNet> = (0..500u128)
        .map(|i| {
            IpNet::V6(ipnet::Ipv6Net::new((0x2001_0db8u128 << 96 | i << 64).into(), 64).unwrap())
        })
        .collect();
    let mut attrs = attrs_with("2001:db8::1", &[65001]);
    attrs.link_local_next_hop = Some("fe80::1".parse().unwrap());
    let mut out = BytesMut::new();
    let n = encode_announce(&ebgp4(), &attrs, &prefixes, &mut out).unwrap();
    assert_eq!(n, 2);
    let got = announced(&out, &ebgp4());
    assert_eq!(got.iter().map(|a| a.prefixes.len()).sum::<usize>(), 500);
    assert_eq!(got[1].attrs, attrs);
}

#[test]
fn ipv4_with_ipv6_next_hop_uses_mp_reach_when_negotiated() {
    // RFC 8950 3: IPv4 NLRI with an IPv6 next hop go in MP_REACH_NLRI.
    let attrs = attrs_with("2001:db8::1", &[65001]);
    let mut out = BytesMut::new();
    assert_eq!(
        encode_announce(&ebgp4(), &attrs, &[p("10.0.0.0/24")], &mut out),
        Err(EncodeError::NextHop(Family::Ipv4Unicast))
    );
    let ctx = SessionContext {
        extended_next_hop: true,
        ..ebgp4()
    };
    encode_announce(&ctx, &attrs, &[p("10.0.0.0/24")], &mut out).unwrap();
    let got = announced(&out, &ctx);
    assert_eq!(got[0].prefixes, vec![p("10.0.0.0/24")]);
    assert_eq!(
        got[0].attrs.next_hop,
        Some("2001:db8::1".parse::<IpAddr>().unwrap())
    );
}

#[test]
fn two_octet_peer_gets_as_trans_and_as4_path() {
    // RFC 6793 4.2.2: AS_TRANS in AS_PATH/AGGREGATOR plus AS4_PATH/AS4_AGGREGATOR.
    let mut attrs = attrs_with("10.0.0.1", &[200001, 65001]);
    attrs.aggregator = Some(Aggregator {
        asn: Asn(200001),
        address: Ipv4Addr::new(10, 0, 0, 9),
    });
    let mut out = BytesMut::new();
    encode_announce(&ebgp2(), &attrs, &[p("10.0.0.0/24")], &mut out).unwrap();
    let u = decode_update(&out, &ebgp2()).unwrap();
    assert!(u.attributes.contains(&PathAttribute::AsPath(AsPath {
        segments: vec![AsSegment::Sequence(vec![Asn(23456), Asn(65001)])]
    })));
    assert!(u
        .attributes
        .iter()
        .any(|a| matches!(a, PathAttribute::As4Path(_))));
    // And the receiving side reconstructs the real path and aggregator.
    let got = &u.routes(&ebgp2()).announced[0].attrs;
    assert_eq!(got, &attrs);
}

#[test]
fn unknown_transitive_attribute_is_sent_with_partial_bit() {
    // RFC 4271 5: a passed-on unrecognised optional transitive attribute gets Partial.
    let mut attrs = attrs_with("10.0.0.1", &[65001]);
    attrs.unknown.push(RawAttribute {
        flags: 0xc0,
        type_code: 99,
        data: Bytes::from_static(b"x"),
    });
    let mut out = BytesMut::new();
    encode_announce(&ebgp4(), &attrs, &[p("10.0.0.0/24")], &mut out).unwrap();
    let u = decode_update(&out, &ebgp4()).unwrap();
    let raw = u
        .attributes
        .iter()
        .find_map(|a| match a {
            PathAttribute::Unknown(r) => Some(r),
            _ => None,
        })
        .unwrap();
    assert_eq!(raw.flags, 0xe0);
}

#[test]
fn local_pref_and_reflection_attributes_are_not_sent_to_ebgp() {
    // RFC 4271 5.1.5 and RFC 4456 8.
    let mut attrs = attrs_with("10.0.0.1", &[65001]);
    attrs.local_pref = Some(200);
    attrs.originator_id = Some(Ipv4Addr::new(1, 1, 1, 1));
    attrs.cluster_list = vec![Ipv4Addr::new(2, 2, 2, 2)];
    let mut out = BytesMut::new();
    encode_announce(&ebgp4(), &attrs, &[p("10.0.0.0/24")], &mut out).unwrap();
    let got = &announced(&out, &ebgp4())[0].attrs;
    assert_eq!((got.local_pref, got.originator_id), (None, None));
    let mut out = BytesMut::new();
    encode_announce(&ibgp4(), &attrs, &[p("10.0.0.0/24")], &mut out).unwrap();
    assert_eq!(&announced(&out, &ibgp4())[0].attrs, &attrs);
}

#[test]
fn mixed_families_are_refused_for_announce() {
    let attrs = attrs_with("10.0.0.1", &[65001]);
    let mut out = BytesMut::new();
    let r = encode_announce(
        &ebgp4(),
        &attrs,
        &[p("10.0.0.0/24"), p("2001:db8::/32")],
        &mut out,
    );
    assert_eq!(r, Err(EncodeError::MixedFamilies));
    assert!(out.is_empty());
}

#[test]
fn withdrawals_of_both_families_share_messages() {
    // RFC 4271 4.3 Withdrawn Routes plus RFC 4760 4 MP_UNREACH_NLRI in one UPDATE.
    let mut prefixes: Vec<IpNet> = (0..1000u32)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + i), 32).unwrap()))
        .collect();
    prefixes.push(p("2001:db8::/32"));
    let mut out = BytesMut::new();
    let n = encode_withdraw(&ebgp4(), &prefixes, &mut out).unwrap();
    assert_eq!(n, 2);
    let mut withdrawn: Vec<IpNet> = split(&out)
        .into_iter()
        .flat_map(|m| {
            decode_update(m, &ebgp4())
                .unwrap()
                .routes(&ebgp4())
                .withdrawn
        })
        .collect();
    withdrawn.sort();
    prefixes.sort();
    assert_eq!(withdrawn, prefixes);
}

fn open(caps: Vec<Capability>) -> Open {
    Open {
        version: 4,
        my_as: 23456,
        hold_time: 90,
        router_id: RouterId(Ipv4Addr::new(1, 1, 1, 1)),
        capabilities: caps,
    }
}

#[test]
fn negotiation_intersects_families_and_needs_both_sides() {
    // RFC 4760 8, RFC 6793 3, RFC 8950 4.
    let enh = Capability::ExtendedNextHop(vec![ExtendedNextHopEntry {
        nlri_afi: 1,
        nlri_safi: 1,
        next_hop_afi: 2,
    }]);
    let local = open(vec![
        Capability::Multiprotocol { afi: 1, safi: 1 },
        Capability::Multiprotocol { afi: 2, safi: 1 },
        Capability::FourOctetAs(Asn(200001)),
        enh.clone(),
    ]);
    let remote = open(vec![
        Capability::Multiprotocol { afi: 2, safi: 1 },
        Capability::FourOctetAs(Asn(65002)),
        enh,
    ]);
    let ctx = SessionContext::negotiate(&local, &remote, Asn(200001), Asn(65002));
    assert_eq!(ctx.families, vec![Family::Ipv6Unicast]);
    assert!(ctx.four_octet_as && ctx.extended_next_hop);

    // A peer with no capabilities at all: IPv4 unicast, 2-octet AS.
    let ctx = SessionContext::negotiate(&local, &open(vec![]), Asn(200001), Asn(65002));
    assert_eq!(ctx.families, vec![Family::Ipv4Unicast]);
    assert!(!ctx.four_octet_as && !ctx.extended_next_hop);
}
