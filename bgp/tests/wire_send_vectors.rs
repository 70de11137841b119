//! The send path byte for byte: what `encode_announce` and `encode_withdraw` put on the wire
//! (what peers really receive) compared with hex written from the RFCs, never with our own
//! decoder. Attribute order is by type code (RFC 4271 section 5: senders SHOULD order them).

mod wire_common;

use std::net::Ipv4Addr;

use bytes::{Bytes, BytesMut};
use ipnet::IpNet;
use underroute_bgp::wire::*;
use underroute_bgp::Asn;
use wire_common::*;

fn p(s: &str) -> IpNet {
    s.parse().expect("prefix literal")
}

fn path(asns: &[u32]) -> AsPath {
    AsPath {
        segments: if asns.is_empty() {
            vec![]
        } else {
            vec![AsSegment::Sequence(asns.iter().map(|&a| Asn(a)).collect())]
        },
    }
}

fn attrs(next_hop: &str, asns: &[u32]) -> PathAttrs {
    PathAttrs {
        as_path: path(asns),
        next_hop: Some(next_hop.parse().expect("next hop literal")),
        ..PathAttrs::default()
    }
}

/// `encode_announce`'s output as hex, and the number of messages it reported.
fn announce(ctx: &SessionContext, a: &PathAttrs, prefixes: &[IpNet]) -> (usize, String) {
    let mut out = BytesMut::new();
    let n = encode_announce(ctx, a, prefixes, &mut out).expect("encodes");
    (n, hex::encode(out))
}

fn withdraw(prefixes: &[IpNet]) -> (usize, String) {
    let mut out = BytesMut::new();
    let n = encode_withdraw(&ebgp4(), prefixes, &mut out).expect("encodes");
    (n, hex::encode(out))
}

fn want(withdrawn: &str, attributes: &str, nlri: &str) -> String {
    hex::encode(update_msg(withdrawn, attributes, nlri))
}

#[test]
fn ebgp_ipv4_announcement_carries_next_hop_and_nlri_but_no_local_pref_or_reflection_attributes() {
    // RFC 4271 4.3 and 5.1.3 (NEXT_HOP), 5.1.4 (MED, optional non-transitive), 5.1.5 (no
    // LOCAL_PREF to external peers), RFC 1997 (COMMUNITIES), RFC 8092 (LARGE_COMMUNITY),
    // RFC 4456 8 (ORIGINATOR_ID and CLUSTER_LIST stay inside the AS).
    let mut a = attrs("10.0.0.1", &[65001]);
    a.med = Some(100);
    a.local_pref = Some(200);
    a.communities = vec![0xfde9_0007];
    a.large_communities = vec![LargeCommunity {
        global: 65001,
        local1: 1,
        local2: 2,
    }];
    a.originator_id = Some(Ipv4Addr::new(10, 0, 0, 2));
    a.cluster_list = vec![Ipv4Addr::new(10, 0, 0, 3)];
    let got = announce(
        &ebgp4(),
        &a,
        &[p("10.1.0.0/24"), p("10.0.0.5/32"), p("0.0.0.0/0")],
    );
    let expected = want(
        "",
        "40 01 01 00
         40 02 06 02 01 0000fde9
         40 03 04 0a000001
         80 04 04 00000064
         c0 08 04 fde90007
         c0 20 0c 0000fde9 00000001 00000002",
        "18 0a0100 20 0a000005 00",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn ibgp_ipv4_announcement_carries_every_attribute_in_type_code_order() {
    // RFC 4271 4.3 / 5: LOCAL_PREF (well-known, mandatory on iBGP), ATOMIC_AGGREGATE,
    // AGGREGATOR with a 4-octet AS (RFC 6793), ORIGINATOR_ID and CLUSTER_LIST (RFC 4456 8),
    // an empty AS_PATH for a route of our own AS.
    let mut a = attrs("10.0.0.1", &[]);
    a.origin = Origin::Incomplete;
    a.med = Some(100);
    a.local_pref = Some(200);
    a.atomic_aggregate = true;
    a.aggregator = Some(Aggregator {
        asn: Asn(65001),
        address: Ipv4Addr::new(10, 0, 0, 9),
    });
    a.communities = vec![0xfde9_0007, 0xffff_ff01];
    a.originator_id = Some(Ipv4Addr::new(10, 0, 0, 2));
    a.cluster_list = vec![Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 4)];
    let got = announce(&ibgp4(), &a, &[p("10.2.0.0/16")]);
    let expected = want(
        "",
        "40 01 01 02
         40 02 00
         40 03 04 0a000001
         80 04 04 00000064
         40 05 04 000000c8
         40 06 00
         c0 07 08 0000fde9 0a000009
         c0 08 08 fde90007 ffffff01
         80 09 04 0a000002
         80 0a 08 0a000003 0a000004",
        "10 0a02",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn two_octet_peer_gets_as_trans_with_as4_path_and_as4_aggregator() {
    // RFC 6793 4.2.2: AS_TRANS (23456 = 0x5ba0) where a number needs 4 octets, the real path
    // in AS4_PATH (optional transitive, type 17) and the real aggregator in AS4_AGGREGATOR
    // (type 18); the 2-octet AGGREGATOR is 6 octets.
    let mut a = attrs("10.0.0.1", &[200001, 65001]);
    a.aggregator = Some(Aggregator {
        asn: Asn(200001),
        address: Ipv4Addr::new(10, 0, 0, 9),
    });
    let got = announce(&ebgp2(), &a, &[p("10.0.0.0/24")]);
    let expected = want(
        "",
        "40 01 01 00
         40 02 06 02 02 5ba0 fde9
         40 03 04 0a000001
         c0 07 06 5ba0 0a000009
         c0 11 0a 02 02 00030d41 0000fde9
         c0 12 08 00030d41 0a000009",
        "18 0a0000",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn two_octet_peer_gets_no_as4_path_when_every_number_fits() {
    // RFC 6793 4.2.2: AS4_PATH is only needed when the path holds a 4-octet number.
    let got = announce(
        &ebgp2(),
        &attrs("10.0.0.1", &[65001, 65002]),
        &[p("10.0.0.0/24")],
    );
    let expected = want(
        "",
        "40 01 01 00 40 02 06 02 02 fde9 fdea 40 03 04 0a000001",
        "18 0a0000",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn ipv6_announcement_is_mp_reach_with_global_and_link_local_next_hop() {
    // RFC 4760 3 (MP_REACH_NLRI, optional non-transitive, type 14), RFC 2545 3 (32-octet next
    // hop: global then link-local), no NEXT_HOP attribute and no classic NLRI.
    let mut a = attrs("2001:db8::1", &[65001]);
    a.link_local_next_hop = Some("fe80::1".parse().expect("literal"));
    a.med = Some(5);
    let got = announce(&ebgp4(), &a, &[p("2001:db8:1::/64"), p("2001:db8:2::/48")]);
    let expected = want(
        "",
        "40 01 01 00
         40 02 06 02 01 0000fde9
         80 04 04 00000005
         80 0e 35 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00
                  40 20010db800010000 30 20010db80002",
        "",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn ipv6_announcement_with_an_ipv4_next_hop_uses_the_mapped_address() {
    // RFC 4798 2 / RFC 4291 2.5.5.2: an IPv4 next hop for IPv6 NLRI as ::ffff:a.b.c.d.
    let got = announce(&ibgp4(), &attrs("10.0.0.1", &[]), &[p("2001:db8:1::/64")]);
    let expected = want(
        "",
        "40 01 01 00
         40 02 00
         80 0e 1e 0002 01 10 00000000000000000000ffff0a000001 00 40 20010db800010000",
        "",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn ipv4_with_an_ipv6_next_hop_goes_in_mp_reach_when_rfc8950_was_negotiated() {
    // RFC 8950 3: AFI 1 / SAFI 1 in MP_REACH_NLRI with a 16-octet next hop.
    let ctx = SessionContext {
        extended_next_hop: true,
        ..ebgp4()
    };
    let got = announce(&ctx, &attrs("2001:db8::1", &[65001]), &[p("10.1.0.0/24")]);
    let expected = want(
        "",
        "40 01 01 00
         40 02 06 02 01 0000fde9
         80 0e 19 0001 01 10 20010db8000000000000000000000001 00 18 0a0100",
        "",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn passed_on_unknown_transitive_attribute_gets_the_partial_bit() {
    // RFC 4271 5 / 9: an unrecognised optional transitive attribute is passed on with the
    // Partial bit (0x20) set; type 99 sorts after LARGE_COMMUNITY (32).
    let mut a = attrs("10.0.0.1", &[65001]);
    a.unknown = vec![RawAttribute {
        flags: 0xc0,
        type_code: 99,
        data: Bytes::from_static(b"x"),
    }];
    a.large_communities = vec![LargeCommunity {
        global: 1,
        local1: 2,
        local2: 3,
    }];
    let got = announce(&ebgp4(), &a, &[p("10.1.0.0/24")]);
    let expected = want(
        "",
        "40 01 01 00
         40 02 06 02 01 0000fde9
         40 03 04 0a000001
         c0 20 0c 00000001 00000002 00000003
         e0 63 01 78",
        "18 0a0100",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn long_attribute_uses_the_extended_length_form() {
    // RFC 4271 4.3: a value over 255 octets sets Extended Length (0x10) and a 2-octet length.
    let mut a = attrs("10.0.0.1", &[65001]);
    a.communities = (0..70).map(|i| 0xfde9_0000 + i).collect();
    let mut communities = String::from("d0 08 0118");
    for c in &a.communities {
        communities.push_str(&format!(" {c:08x}"));
    }
    let got = announce(&ebgp4(), &a, &[p("10.1.0.0/24")]);
    let expected = want(
        "",
        &format!("40 01 01 00 40 02 06 02 01 0000fde9 40 03 04 0a000001 {communities}"),
        "18 0a0100",
    );
    assert_eq!(got, (1, expected));
}

#[test]
fn a_large_announcement_is_split_into_full_4096_octet_messages() {
    // RFC 4271 4: at most 4096 octets. 23 octets of header and lengths plus 20 of attributes
    // leave 4053 for NLRI: 810 /32s of 5 octets each per message, so 2000 /32s take 810 + 810
    // + 380, in order.
    let prefixes: Vec<IpNet> = (0..2000u32)
        .map(|i| p(&format!("{}/32", Ipv4Addr::from(0x0a00_0000 + i))))
        .collect();
    let head = "40 01 01 00 40 02 06 02 01 0000fde9 40 03 04 0a000001";
    let nlri = |range: std::ops::Range<u32>| {
        range
            .map(|i| format!("20 {:08x} ", 0x0a00_0000 + i))
            .collect::<String>()
    };
    let expected = [
        want("", head, &nlri(0..810)),
        want("", head, &nlri(810..1620)),
        want("", head, &nlri(1620..2000)),
    ];
    assert_eq!(expected[0].len() / 2, 4093);
    let got = announce(&ebgp4(), &attrs("10.0.0.1", &[65001]), &prefixes);
    assert_eq!(got, (3, expected.concat()));
}

#[test]
fn ipv4_withdrawals_use_the_withdrawn_routes_field() {
    // RFC 4271 4.3: Withdrawn Routes Length, the prefixes, Total Path Attribute Length 0.
    let got = withdraw(&[p("10.1.0.0/24"), p("10.0.0.5/32")]);
    assert_eq!(got, (1, want("18 0a0100 20 0a000005", "", "")));
}

#[test]
fn ipv6_withdrawals_use_mp_unreach() {
    // RFC 4760 4: MP_UNREACH_NLRI (optional non-transitive, type 15): AFI, SAFI, prefixes.
    let got = withdraw(&[p("2001:db8:a::/48")]);
    assert_eq!(got, (1, want("", "80 0f 0a 0002 01 30 20010db8000a", "")));
}

#[test]
fn withdrawals_of_both_families_share_one_message() {
    // RFC 4271 4.3 plus RFC 4760 4: both fields in one UPDATE.
    let got = withdraw(&[p("2001:db8:a::/48"), p("10.1.0.0/24")]);
    assert_eq!(
        got,
        (1, want("18 0a0100", "80 0f 0a 0002 01 30 20010db8000a", ""))
    );
}

#[test]
fn end_of_rib_markers_are_the_rfc4724_forms() {
    // RFC 4724 2: an empty UPDATE for IPv4 unicast, an MP_UNREACH_NLRI without prefixes for
    // the others.
    let eor = |f| hex::encode(encode(&Message::Update(Update::end_of_rib(f)), &ibgp4()));
    assert_eq!(eor(underroute_bgp::Family::Ipv4Unicast), want("", "", ""));
    assert_eq!(
        eor(underroute_bgp::Family::Ipv6Unicast),
        want("", "80 0f 03 0002 01", "")
    );
}
