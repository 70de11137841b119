//! Hex vectors for every message, capability and attribute: each is decoded to the expected
//! value and that value is encoded back to the same bytes.
//! The captures of real sessions are checked in `wire_captured.rs`.

mod wire_common;

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::Bytes;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use underroute_bgp::wire::*;
use underroute_bgp::{Asn, RouterId};
use wire_common::*;

fn v4(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}
fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// Decode `bytes` to `expected` and encode `expected` back to `bytes`.
fn both_ways(bytes: &[u8], expected: &Message, ctx: &SessionContext) {
    let decoded = decode_message(bytes, ctx).expect("vector decodes");
    assert_eq!(&decoded, expected, "decode");
    assert_eq!(
        hex::encode(encode(expected, ctx)),
        hex::encode(bytes),
        "encode"
    );
}

fn seq(asns: &[u32]) -> AsSegment {
    AsSegment::Sequence(asns.iter().map(|&a| Asn(a)).collect())
}

fn path(segments: Vec<AsSegment>) -> AsPath {
    AsPath { segments }
}

fn base_attrs4() -> Vec<PathAttribute> {
    vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(path(vec![seq(&[65002])])),
    ]
}

#[test]
fn keepalive_vector() {
    // RFC 4271 4.4: a KEEPALIVE is the 19-octet header alone.
    let bytes = h("ffffffffffffffffffffffffffffffff 0013 04");
    both_ways(&bytes, &Message::Keepalive, &SessionContext::default());
}

#[test]
fn notification_vector() {
    // RFC 4271 4.5 / RFC 8203: Cease, Administrative Shutdown, with a shutdown message.
    let bytes = h("ffffffffffffffffffffffffffffffff 001a 03 0602 04 62796521");
    let expected = Message::Notification(NotificationError::with_data(6, 2, h("0462796521")));
    both_ways(&bytes, &expected, &SessionContext::default());
}

#[test]
fn route_refresh_vector() {
    // RFC 2918 3: AFI, reserved (RFC 7313 subtype), SAFI.
    let bytes = h("ffffffffffffffffffffffffffffffff 0017 05 0002 00 01");
    let expected = Message::RouteRefresh(RouteRefresh {
        afi: 2,
        subtype: 0,
        safi: 1,
    });
    both_ways(&bytes, &expected, &SessionContext::default());
}

fn open_with(capabilities: Vec<Capability>) -> Message {
    Message::Open(Open {
        version: 4,
        my_as: 65001,
        hold_time: 90,
        router_id: RouterId(ip("10.0.0.1")),
        capabilities,
    })
}

#[test]
fn open_with_every_capability_vector() {
    // RFC 4271 4.2 with one Capabilities parameter (RFC 5492) holding each capability we know.
    let caps = h("
        01 04 0001 00 01
        01 04 0002 00 01
        02 00
        41 04 0000fde9
        40 0a 8078 0001 01 80 0002 01 00
        05 06 0001 0001 0002
        45 04 0001 01 03
        49 07 05 6e6f646531 00
        46 00");
    let mut body = h("04 fde9 005a 0a000001");
    body.push((caps.len() + 2) as u8);
    body.extend_from_slice(&[2, caps.len() as u8]);
    body.extend_from_slice(&caps);
    let expected = open_with(vec![
        Capability::Multiprotocol { afi: 1, safi: 1 },
        Capability::Multiprotocol { afi: 2, safi: 1 },
        Capability::RouteRefresh,
        Capability::FourOctetAs(Asn(65001)),
        Capability::GracefulRestart(GracefulRestartCap {
            restart_state: true,
            notification: false,
            restart_time: 120,
            families: vec![
                GracefulRestartFamily {
                    afi: 1,
                    safi: 1,
                    forwarding: true,
                },
                GracefulRestartFamily {
                    afi: 2,
                    safi: 1,
                    forwarding: false,
                },
            ],
        }),
        Capability::ExtendedNextHop(vec![ExtendedNextHopEntry {
            nlri_afi: 1,
            nlri_safi: 1,
            next_hop_afi: 2,
        }]),
        Capability::AddPath(vec![AddPathEntry {
            afi: 1,
            safi: 1,
            send_receive: 3,
        }]),
        Capability::Fqdn {
            hostname: "node1".into(),
            domain: String::new(),
        },
        Capability::Unknown {
            code: 70,
            data: Bytes::new(),
        },
    ]);
    both_ways(&msg(1, &body), &expected, &SessionContext::default());
}

#[test]
fn open_without_parameters_vector() {
    both_ways(
        &msg(1, &h("04 fde9 00b4 0a000001 00")),
        &Message::Open(Open {
            version: 4,
            my_as: 65001,
            hold_time: 180,
            router_id: RouterId(ip("10.0.0.1")),
            capabilities: vec![],
        }),
        &SessionContext::default(),
    );
}

#[test]
fn open_with_one_parameter_per_capability_decodes() {
    // RFC 5492 4: capabilities may be spread over several parameters; all are collected.
    let body = h("04 fde9 005a 0a000001 10 0206 01040001 0001 0206 41040000fde9");
    let Message::Open(open) = decode_message(&msg(1, &body), &SessionContext::default()).unwrap()
    else {
        panic!("not an OPEN")
    };
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Multiprotocol { afi: 1, safi: 1 },
            Capability::FourOctetAs(Asn(65001))
        ]
    );
}

#[test]
fn open_with_rfc9072_extended_parameters_vector() {
    // RFC 9072 2: Non-Ext OP Len 255, Non-Ext OP Type 255, then 2-octet lengths. Encoding
    // picks this form only when the capabilities exceed 255 octets.
    let caps: Vec<Capability> = (0..70u16)
        .map(|i| Capability::Multiprotocol {
            afi: 100 + i,
            safi: 1,
        })
        .collect();
    let mut cap_bytes = Vec::new();
    for i in 0..70u16 {
        cap_bytes.extend_from_slice(&[1, 4]);
        cap_bytes.extend_from_slice(&(100 + i).to_be_bytes());
        cap_bytes.extend_from_slice(&[0, 1]);
    }
    // 420 octets of capabilities: 252 (42 caps) in one parameter, 168 in a second.
    let (first, second) = cap_bytes.split_at(252);
    let mut params = Vec::new();
    for part in [first, second] {
        params.push(2);
        params.extend_from_slice(&(part.len() as u16).to_be_bytes());
        params.extend_from_slice(part);
    }
    let mut body = h("04 fde9 005a 0a000001 ff ff");
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    body.extend_from_slice(&params);
    both_ways(&msg(1, &body), &open_with(caps), &SessionContext::default());
}

#[test]
fn update_with_every_ipv4_attribute_vector() {
    // RFC 4271 4.3 and 5 on an iBGP session between 4-octet speakers.
    let bytes = update_msg(
        "10 0a09",
        "40 01 01 00
         40 02 0a 02 02 0000fde9 0000fdea
         40 03 04 0a000001
         80 04 04 00000064
         40 05 04 000000c8
         40 06 00
         c0 07 08 0000fde9 0a000001
         c0 08 08 fde90001 ffffff01
         80 09 04 0a000002
         80 0a 08 0a000003 0a000004
         c0 20 0c 0000fde9 00000001 00000002
         c0 63 02 abcd",
        "18 0a0100 20 0a000005 00",
    );
    let expected = Message::Update(Update {
        withdrawn: vec![v4("10.9.0.0/16")],
        attributes: vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(path(vec![seq(&[65001, 65002])])),
            PathAttribute::NextHop(ip("10.0.0.1")),
            PathAttribute::MultiExitDisc(100),
            PathAttribute::LocalPref(200),
            PathAttribute::AtomicAggregate,
            PathAttribute::Aggregator(Aggregator {
                asn: Asn(65001),
                address: ip("10.0.0.1"),
            }),
            PathAttribute::Communities(vec![0xfde9_0001, 0xffff_ff01]),
            PathAttribute::OriginatorId(ip("10.0.0.2")),
            PathAttribute::ClusterList(vec![ip("10.0.0.3"), ip("10.0.0.4")]),
            PathAttribute::LargeCommunities(vec![LargeCommunity {
                global: 65001,
                local1: 1,
                local2: 2,
            }]),
            PathAttribute::Unknown(RawAttribute {
                flags: 0xc0,
                type_code: 99,
                data: Bytes::from_static(&[0xab, 0xcd]),
            }),
        ],
        nlri: vec![v4("10.1.0.0/24"), v4("10.0.0.5/32"), v4("0.0.0.0/0")],
        treat_as_withdraw: None,
    });
    both_ways(&bytes, &expected, &ibgp4());
}

#[test]
fn update_with_as_set_and_confed_segments_vector() {
    // RFC 4271 4.3 segment types 1 and 2, RFC 5065 types 3 and 4 (iBGP only).
    let bytes = update_msg(
        "",
        "40 01 01 02
         40 02 1c 03 01 0000fdf0 04 01 0000fdf1 02 01 0000fdea 01 02 0000fdeb 0000fdec",
        "",
    );
    let expected = Message::Update(Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Incomplete),
            PathAttribute::AsPath(path(vec![
                AsSegment::ConfedSequence(vec![Asn(65008)]),
                AsSegment::ConfedSet(vec![Asn(65009)]),
                seq(&[65002]),
                AsSegment::Set(vec![Asn(65003), Asn(65004)]),
            ])),
        ],
        ..Update::default()
    });
    both_ways(&bytes, &expected, &ibgp4());
}

#[test]
fn update_two_octet_session_with_as4_attributes_vector() {
    // RFC 6793 4.2.2: AS_TRANS in the 2-octet fields, real numbers in AS4_PATH/AS4_AGGREGATOR.
    let bytes = update_msg(
        "",
        "40 01 01 01
         40 02 06 02 02 fdea 5ba0
         40 03 04 0a000001
         c0 07 06 5ba0 0a000009
         c0 11 0a 02 02 0000fdea 00030d41
         c0 12 08 00030d41 0a000009",
        "18 0a0200",
    );
    let expected = Message::Update(Update {
        attributes: vec![
            PathAttribute::Origin(Origin::Egp),
            PathAttribute::AsPath(path(vec![seq(&[65002, 23456])])),
            PathAttribute::NextHop(ip("10.0.0.1")),
            PathAttribute::Aggregator(Aggregator {
                asn: Asn(23456),
                address: ip("10.0.0.9"),
            }),
            PathAttribute::As4Path(path(vec![seq(&[65002, 200001])])),
            PathAttribute::As4Aggregator(Aggregator {
                asn: Asn(200001),
                address: ip("10.0.0.9"),
            }),
        ],
        nlri: vec![v4("10.2.0.0/24")],
        ..Update::default()
    });
    both_ways(&bytes, &expected, &ebgp2());
}

#[test]
fn update_ipv6_mp_reach_vector() {
    // RFC 4760 3 / RFC 2545 3: one global IPv6 next hop.
    let attrs = format!(
        "{ORIGIN_ASPATH4} 80 0e 1e 0002 01 10 20010db8000000000000000000000001 00 40 20010db800010000"
    );
    let bytes = update_msg("", &attrs, "");
    let mut attributes = base_attrs4();
    attributes.push(PathAttribute::MpReach(MpReach {
        afi: 2,
        safi: 1,
        next_hop: MpNextHop::V6(ip6("2001:db8::1")),
        nlri: vec![IpNet::V6(v6("2001:db8:1::/64"))],
    }));
    let expected = Message::Update(Update {
        attributes,
        ..Update::default()
    });
    both_ways(&bytes, &expected, &ebgp4());
}

#[test]
fn update_ipv6_mp_reach_with_link_local_vector() {
    // RFC 2545 3: global plus link-local next hop (32 octets).
    let attrs = format!(
        "{ORIGIN_ASPATH4} 80 0e 2e 0002 01 20 20010db8000000000000000000000001 fe800000000000000000000000000001 00 40 20010db800010000"
    );
    let mut attributes = base_attrs4();
    attributes.push(PathAttribute::MpReach(MpReach {
        afi: 2,
        safi: 1,
        next_hop: MpNextHop::V6WithLinkLocal(ip6("2001:db8::1"), ip6("fe80::1")),
        nlri: vec![IpNet::V6(v6("2001:db8:1::/64"))],
    }));
    let expected = Message::Update(Update {
        attributes,
        ..Update::default()
    });
    both_ways(&update_msg("", &attrs, ""), &expected, &ebgp4());
}

#[test]
fn update_ipv4_with_ipv6_next_hop_vector() {
    // RFC 8950 3: IPv4 unicast NLRI in MP_REACH with a 16-octet next hop.
    let ctx = SessionContext {
        extended_next_hop: true,
        ..ebgp4()
    };
    let attrs = format!(
        "{ORIGIN_ASPATH4} 80 0e 1a 0001 01 10 20010db8000000000000000000000001 00 20 0a000007"
    );
    let mut attributes = base_attrs4();
    attributes.push(PathAttribute::MpReach(MpReach {
        afi: 1,
        safi: 1,
        next_hop: MpNextHop::V6(ip6("2001:db8::1")),
        nlri: vec![IpNet::V4(v4("10.0.0.7/32"))],
    }));
    let expected = Message::Update(Update {
        attributes,
        ..Update::default()
    });
    both_ways(&update_msg("", &attrs, ""), &expected, &ctx);
}

#[test]
fn update_ipv6_mp_unreach_vector() {
    // RFC 4760 4.
    let bytes = update_msg("", "80 0f 08 0002 01 20 20010db8", "");
    let expected = Message::Update(Update {
        attributes: vec![PathAttribute::MpUnreach(MpUnreach {
            afi: 2,
            safi: 1,
            withdrawn: vec![IpNet::V6(v6("2001:db8::/32"))],
        })],
        ..Update::default()
    });
    both_ways(&bytes, &expected, &ebgp4());
}

#[test]
fn end_of_rib_vectors() {
    // RFC 4724 2: IPv4 unicast is an empty UPDATE, others an empty MP_UNREACH_NLRI.
    let v4_eor = h("ffffffffffffffffffffffffffffffff 0017 02 0000 0000");
    both_ways(
        &v4_eor,
        &Message::Update(Update::end_of_rib(underroute_bgp::Family::Ipv4Unicast)),
        &ebgp4(),
    );
    let v6_eor = update_msg("", "80 0f 03 0002 01", "");
    both_ways(
        &v6_eor,
        &Message::Update(Update::end_of_rib(underroute_bgp::Family::Ipv6Unicast)),
        &ebgp4(),
    );
}

#[test]
fn extended_length_attribute_vector() {
    // RFC 4271 4.3: values over 255 octets use the Extended Length bit and 2-octet length.
    let communities: Vec<u32> = (0..70).map(|i| 0xfde9_0000 + i).collect();
    let mut attrs = format!("{ORIGIN_ASPATH4} d0 08 0118");
    for c in &communities {
        attrs.push_str(&format!("{c:08x}"));
    }
    let mut attributes = base_attrs4();
    attributes.push(PathAttribute::Communities(communities));
    let expected = Message::Update(Update {
        attributes,
        ..Update::default()
    });
    both_ways(&update_msg("", &attrs, ""), &expected, &ebgp4());
}

#[test]
fn extended_length_bit_on_short_attribute_is_accepted() {
    // RFC 4271 4.3 allows the 2-octet length form for any value length.
    let bytes = update_msg("", "50 01 0001 00", "");
    let u = decode_update(&bytes, &ebgp4()).unwrap();
    assert_eq!(u.attributes, vec![PathAttribute::Origin(Origin::Igp)]);
}
