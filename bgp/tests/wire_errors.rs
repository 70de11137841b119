//! One test per error rule: RFC 4271 section 6 NOTIFICATIONs and RFC 7606 outcomes.

mod wire_common;

use underroute_bgp::wire::*;
use wire_common::*;

fn notification(code: u8, subcode: u8, data: &[u8]) -> NotificationError {
    NotificationError::with_data(code, subcode, data.to_vec())
}

/// Decode an UPDATE with NLRI 10.1.0.0/24 and these attributes on `ctx`.
fn with_attrs(attrs: &str, ctx: &SessionContext) -> Result<Update, NotificationError> {
    decode_update(&update_msg("", attrs, "18 0a0100"), ctx)
}

fn assert_treat_as_withdraw(attrs: &str, ctx: &SessionContext, code: u8, subcode: u8) {
    let u = with_attrs(attrs, ctx).expect("no session reset");
    let e = u.treat_as_withdraw.clone().expect("treat-as-withdraw");
    assert_eq!((e.code, e.subcode), (code, subcode), "{e}");
    let r = u.routes(ctx);
    assert!(r.announced.is_empty());
    assert_eq!(r.withdrawn, vec!["10.1.0.0/24".parse().unwrap()]);
}

fn assert_discarded(attrs: &str, ctx: &SessionContext, type_code: u8) {
    let u = with_attrs(attrs, ctx).expect("no session reset");
    assert_eq!(u.treat_as_withdraw, None);
    assert!(
        !u.attributes.iter().any(|a| match (a, type_code) {
            (PathAttribute::AtomicAggregate, 6) => true,
            (PathAttribute::Aggregator(_), 7) => true,
            (PathAttribute::LocalPref(_), 5) => true,
            (PathAttribute::OriginatorId(_), 9) => true,
            (PathAttribute::ClusterList(_), 10) => true,
            (PathAttribute::As4Path(_), 17) => true,
            (PathAttribute::As4Aggregator(_), 18) => true,
            (PathAttribute::Unknown(r), t) => r.type_code == t,
            _ => false,
        }),
        "attribute {type_code} should be gone: {:?}",
        u.attributes
    );
    assert_eq!(u.routes(ctx).announced.len(), 1);
}

// ---- RFC 4271 section 6.1: message header ----

#[test]
fn frame_len_waits_for_a_whole_header() {
    // RFC 4271 6.1: nothing can be checked before the 19 header octets are in.
    assert_eq!(frame_len(&[0xff; 18]), Ok(None));
    assert_eq!(
        frame_len(&h("ffffffffffffffffffffffffffffffff 0017 02 00")),
        Ok(Some(23))
    );
}

#[test]
fn marker_not_all_ones_is_connection_not_synchronized() {
    // RFC 4271 6.1: marker mismatch -> 1/1.
    let m = h("fffffffffffffffffffffffffffffffe 0013 04");
    assert_eq!(frame_len(&m), Err(notification(1, 1, &[])));
}

#[test]
fn length_out_of_range_is_bad_message_length_with_the_length_as_data() {
    // RFC 4271 6.1: length < 19 or > 4096 -> 1/2 with the erroneous Length field.
    for len in [0u16, 18, 4097, 0xffff] {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&len.to_be_bytes());
        m.push(2);
        assert_eq!(frame_len(&m), Err(notification(1, 2, &len.to_be_bytes())));
    }
}

#[test]
fn length_below_the_type_minimum_is_bad_message_length() {
    // RFC 4271 6.1: OPEN < 29, UPDATE < 23, KEEPALIVE != 19, NOTIFICATION < 21 -> 1/2.
    for (len, t) in [(28u16, 1u8), (22, 2), (20, 3), (20, 4), (22, 5)] {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&len.to_be_bytes());
        m.push(t);
        assert_eq!(
            frame_len(&m),
            Err(notification(1, 2, &len.to_be_bytes())),
            "type {t}"
        );
    }
}

#[test]
fn unknown_message_type_is_bad_message_type_with_the_type_as_data() {
    // RFC 4271 6.1: type not recognised -> 1/3 with the Type field.
    for t in [0u8, 6, 255] {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&[0, 19, t]);
        assert_eq!(frame_len(&m), Err(notification(1, 3, &[t])));
    }
}

#[test]
fn route_refresh_of_wrong_length_is_invalid_message_length() {
    // RFC 7313 5: a ROUTE-REFRESH whose body is not 4 octets -> 7/1 with the whole message.
    let m = msg(5, &h("0001 00 01 00"));
    assert_eq!(
        decode_message(&m, &SessionContext::default()),
        Err(notification(7, 1, &m))
    );
}

// ---- RFC 4271 section 6.2: OPEN ----

#[test]
fn unsupported_optional_parameter_is_open_error_4() {
    // RFC 4271 6.2: an optional parameter we do not recognise -> 2/4.
    let m = msg(1, &h("04 fde9 005a 0a000001 04 0102 abcd"));
    let e = decode_message(&m, &SessionContext::default()).unwrap_err();
    assert_eq!((e.code, e.subcode), (2, 4));
}

#[test]
fn optional_parameters_length_mismatch_is_open_error() {
    // RFC 4271 6.2: a parameters length that disagrees with the message is malformed.
    for body in [
        "04 fde9 005a 0a000001 05 0204 0104",
        "04 fde9 005a 0a000001 02 0206 01040001",
        "04 fde9 005a 0a000001 06 0204 01040001 00",
    ] {
        let e = decode_message(&msg(1, &h(body)), &SessionContext::default()).unwrap_err();
        assert_eq!((e.code, e.subcode), (2, 0), "{body}");
    }
}

#[test]
fn malformed_known_capability_is_kept_raw() {
    // RFC 5492 5: a capability we cannot use is ignored rather than fatal.
    let m = msg(1, &h("04 fde9 005a 0a000001 07 0205 0103000100"));
    let Message::Open(open) = decode_message(&m, &SessionContext::default()).unwrap() else {
        panic!()
    };
    assert!(matches!(
        open.capabilities[..],
        [Capability::Unknown { code: 1, .. }]
    ));
}

// ---- RFC 4271 section 6.3 / RFC 7606: UPDATE ----

#[test]
fn field_lengths_overrunning_the_message_are_malformed_attribute_list() {
    // RFC 4271 6.3: Withdrawn Routes Length + Total Attribute Length + 23 > Length -> 3/1.
    for body in ["0005 00 0000", "0000 0009 40010100"] {
        let e = decode_message(&msg(2, &h(body)), &ebgp4()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 1), "{body}");
    }
}

#[test]
fn unparsable_nlri_is_session_reset() {
    // RFC 7606 5.3: prefix length > 32 or a truncated prefix -> session reset (3/10).
    for nlri in ["21 0a000001 00", "18 0a01"] {
        let m = update_msg("", &format!("{ORIGIN_ASPATH4} {NEXT_HOP}"), nlri);
        let e = decode_message(&m, &ebgp4()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 10), "{nlri}");
    }
    let e = decode_message(&update_msg("21 0a000001 00", "", ""), &ebgp4()).unwrap_err();
    assert_eq!((e.code, e.subcode), (3, 10));
}

#[test]
fn ipv6_prefix_longer_than_128_is_session_reset() {
    // RFC 7606 5.3 / RFC 4760 7: unparsable MP_UNREACH NLRI -> session reset.
    let e = decode_message(&update_msg("", "80 0f 04 0002 01 81", ""), &ebgp4()).unwrap_err();
    assert_eq!((e.code, e.subcode), (3, 9));
}

#[test]
fn attribute_overrunning_total_attribute_length_is_treat_as_withdraw() {
    // RFC 7606 4: the last attribute's length exceeds the field -> treat-as-withdraw.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 80 04 08 0000"),
        &ebgp4(),
        3,
        5,
    );
}

#[test]
fn fewer_than_three_octets_left_is_treat_as_withdraw() {
    // RFC 7606 4: leftover octets too few for an attribute header -> treat-as-withdraw.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 80 04"),
        &ebgp4(),
        3,
        5,
    );
}

#[test]
fn truncated_mp_reach_is_session_reset() {
    // RFC 7606 5.3: MP_REACH_NLRI cannot be parsed, its prefixes cannot be withdrawn.
    let e = with_attrs(&format!("{ORIGIN_ASPATH4} 80 0e 20 0002 01 10"), &ebgp4()).unwrap_err();
    assert_eq!((e.code, e.subcode), (3, 1));
}

#[test]
fn malformed_origin_is_treat_as_withdraw() {
    // RFC 7606 7.1: bad length or undefined value.
    for origin in ["40 01 01 03", "40 01 02 0000"] {
        let attrs = format!("{origin} 4002 06 0201 0000fdea {NEXT_HOP}");
        let u = with_attrs(&attrs, &ebgp4()).unwrap();
        assert!(u.treat_as_withdraw.is_some(), "{origin}");
    }
    assert_treat_as_withdraw(
        &format!("40 01 01 03 4002 06 0201 0000fdea {NEXT_HOP}"),
        &ebgp4(),
        3,
        6,
    );
}

#[test]
fn malformed_as_path_is_treat_as_withdraw() {
    // RFC 7606 7.2: unknown segment type, zero-length segment, overrun, stray octet.
    for as_path in [
        "4002 06 0501 0000fdea",
        "4002 02 0200",
        "4002 06 0202 0000fdea",
        "4002 07 0201 0000fdea 02",
    ] {
        let attrs = format!("40010100 {as_path} {NEXT_HOP}");
        assert_treat_as_withdraw(&attrs, &ebgp4(), 3, 11);
    }
}

#[test]
fn as_path_with_confed_segment_from_ebgp_is_treat_as_withdraw() {
    // RFC 7606 7.2 / RFC 5065 5: confederation segments from an external peer.
    let attrs = format!("40010100 4002 0c 0301 0000fdf0 0201 0000fdea {NEXT_HOP}");
    assert_treat_as_withdraw(&attrs, &ebgp4(), 3, 11);
    assert!(with_attrs(&attrs, &ibgp4())
        .unwrap()
        .treat_as_withdraw
        .is_none());
}

#[test]
fn two_octet_as_path_is_read_on_a_two_octet_session() {
    // RFC 6793 4.2: between an old and a new speaker AS_PATH carries 2-octet numbers.
    let attrs = format!("{ORIGIN_ASPATH2} {NEXT_HOP}");
    let u = with_attrs(&attrs, &ebgp2()).unwrap();
    assert_eq!(u.treat_as_withdraw, None);
    // The same bytes are malformed when 4-octet numbers are expected.
    assert!(with_attrs(&attrs, &ebgp4())
        .unwrap()
        .treat_as_withdraw
        .is_some());
}

#[test]
fn malformed_next_hop_is_treat_as_withdraw() {
    // RFC 7606 7.3: length other than 4.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} 400305 0a00000100"),
        &ebgp4(),
        3,
        5,
    );
}

#[test]
fn semantically_invalid_next_hop_is_treat_as_withdraw() {
    // RFC 4271 6.3 / RFC 7606 7.3: 0.0.0.0, multicast or broadcast cannot be a next hop.
    for nh in ["00000000", "e0000001", "ffffffff"] {
        assert_treat_as_withdraw(&format!("{ORIGIN_ASPATH4} 400304 {nh}"), &ebgp4(), 3, 8);
    }
}

#[test]
fn malformed_med_is_treat_as_withdraw() {
    // RFC 7606 7.4: length other than 4.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 800403 000001"),
        &ebgp4(),
        3,
        5,
    );
}

#[test]
fn malformed_local_pref_is_treat_as_withdraw() {
    // RFC 7606 7.5: length other than 4 (iBGP).
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 400502 0064"),
        &ibgp4(),
        3,
        5,
    );
}

#[test]
fn local_pref_from_ebgp_is_discarded() {
    // RFC 7606 7.5: LOCAL_PREF received from an external neighbour is discarded.
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 400504 00000064"),
        &ebgp4(),
        5,
    );
}

#[test]
fn malformed_atomic_aggregate_is_discarded() {
    // RFC 7606 7.6: length other than 0 -> attribute discard.
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 400601 00"),
        &ebgp4(),
        6,
    );
}

#[test]
fn malformed_aggregator_is_discarded() {
    // RFC 7606 7.7: length other than 6 (2-octet session) or 8 (4-octet session).
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} c00706 fdea0a000001"),
        &ebgp4(),
        7,
    );
    assert_discarded(
        &format!("{ORIGIN_ASPATH2} {NEXT_HOP} c00708 0000fdea0a000001"),
        &ebgp2(),
        7,
    );
}

#[test]
fn malformed_communities_is_treat_as_withdraw() {
    // RFC 7606 7.8: length not a non-zero multiple of 4.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} c00806 000000010000"),
        &ebgp4(),
        3,
        9,
    );
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} c00800"),
        &ebgp4(),
        3,
        9,
    );
}

#[test]
fn malformed_originator_id_is_treat_as_withdraw() {
    // RFC 7606 7.9: length other than 4.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 800903 0a0000"),
        &ibgp4(),
        3,
        5,
    );
}

#[test]
fn malformed_cluster_list_is_treat_as_withdraw() {
    // RFC 7606 7.10: length not a non-zero multiple of 4.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 800a05 0a00000100"),
        &ibgp4(),
        3,
        9,
    );
}

#[test]
fn route_reflection_attributes_from_ebgp_are_discarded() {
    // RFC 4456 8: ORIGINATOR_ID and CLUSTER_LIST have no meaning outside the AS.
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 800904 0a000002"),
        &ebgp4(),
        9,
    );
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 800a04 0a000002"),
        &ebgp4(),
        10,
    );
}

#[test]
fn malformed_large_community_is_treat_as_withdraw() {
    // RFC 8092 6: length not a non-zero multiple of 12.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} c02008 0000fde900000001"),
        &ebgp4(),
        3,
        9,
    );
}

#[test]
fn malformed_mp_reach_is_session_reset_with_optional_attribute_error() {
    // RFC 4760 7 / RFC 7606 7.11: next hop length wrong for the family, or bad NLRI.
    for mp in [
        "800e 0a 0002 01 04 0a000001 00 00",
        "800e 0c 0001 01 05 0a00000101 00 2000",
        "800e 08 0001 01 10 0a000001",
    ] {
        let m = update_msg("", &format!("{ORIGIN_ASPATH4} {mp}"), "");
        let e = decode_message(&m, &ebgp4()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 9), "{mp}");
        assert_eq!(e.data, h(mp));
    }
}

#[test]
fn ipv6_next_hop_for_ipv4_needs_extended_next_hop() {
    // RFC 8950 4: without the capability a 16-octet next hop for AFI 1 is malformed.
    let mp = "80 0e 1a 0001 01 10 20010db8000000000000000000000001 00 20 0a000007";
    let m = update_msg("", &format!("{ORIGIN_ASPATH4} {mp}"), "");
    assert_eq!(decode_message(&m, &ebgp4()).unwrap_err().subcode, 9);
}

#[test]
fn mp_reach_of_an_unknown_family_is_ignored() {
    // RFC 4760 6: a family that was not negotiated is not ours to interpret.
    let mp = "800e 0d 0001 80 04 0a000001 00 58 000001";
    let u = with_attrs(&format!("{ORIGIN_ASPATH4} {NEXT_HOP} {mp}"), &ebgp4()).unwrap();
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.attributes.len(), 3);
}

#[test]
fn duplicate_attribute_keeps_the_first() {
    // RFC 7606 3 (g): repeats other than MP_(UN)REACH are discarded.
    let attrs = format!("{ORIGIN_ASPATH4} {NEXT_HOP} 80040400000001 80040400000002");
    let u = with_attrs(&attrs, &ebgp4()).unwrap();
    assert_eq!(u.treat_as_withdraw, None);
    assert_eq!(u.routes(&ebgp4()).announced[0].attrs.med, Some(1));
}

#[test]
fn duplicate_mp_reach_is_malformed_attribute_list() {
    // RFC 7606 3 (g): MP_REACH_NLRI or MP_UNREACH_NLRI more than once -> 3/1.
    let un = "800f 03 000201";
    let e = with_attrs(&format!("{ORIGIN_ASPATH4} {NEXT_HOP} {un} {un}"), &ebgp4()).unwrap_err();
    assert_eq!((e.code, e.subcode), (3, 1));
}

#[test]
fn wrong_flags_on_well_known_attribute_is_treat_as_withdraw() {
    // RFC 7606 3 (c): Optional/Transitive bits in conflict -> malformed -> attribute's rule.
    assert_treat_as_withdraw(
        &format!("c0010100 4002 06 0201 0000fdea {NEXT_HOP}"),
        &ebgp4(),
        3,
        4,
    );
    // MED sent as transitive.
    assert_treat_as_withdraw(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} c0040400000001"),
        &ebgp4(),
        3,
        4,
    );
}

#[test]
fn wrong_flags_on_aggregator_is_discarded() {
    // RFC 7606 3 (c) with 7.7: AGGREGATOR's malformation rule is attribute discard.
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 40070800 00fdea0a000001"),
        &ebgp4(),
        7,
    );
}

#[test]
fn wrong_flags_on_mp_unreach_is_session_reset() {
    // RFC 7606 3 (c) with 7.11: MP_(UN)REACH_NLRI malformations reset the session.
    let e = with_attrs(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 400f03000201"),
        &ebgp4(),
    )
    .unwrap_err();
    assert_eq!((e.code, e.subcode), (3, 4));
}

#[test]
fn missing_well_known_attribute_is_treat_as_withdraw() {
    // RFC 7606 3 (d): ORIGIN, AS_PATH or (with classic NLRI) NEXT_HOP absent.
    let u = with_attrs(&format!("4002 06 0201 0000fdea {NEXT_HOP}"), &ebgp4()).unwrap();
    assert_eq!(u.treat_as_withdraw, Some(notification(3, 3, &[1])));
    let u = with_attrs(&format!("40010100 {NEXT_HOP}"), &ebgp4()).unwrap();
    assert_eq!(u.treat_as_withdraw, Some(notification(3, 3, &[2])));
    let u = with_attrs(ORIGIN_ASPATH4, &ebgp4()).unwrap();
    assert_eq!(u.treat_as_withdraw, Some(notification(3, 3, &[3])));
}

#[test]
fn next_hop_is_not_required_with_mp_reach_only() {
    // RFC 4760 3: an UPDATE carrying only MP_REACH_NLRI needs no NEXT_HOP.
    let mp = "80 0e 1e 0002 01 10 20010db8000000000000000000000001 00 40 20010db800010000";
    let u = decode_update(
        &update_msg("", &format!("{ORIGIN_ASPATH4} {mp}"), ""),
        &ebgp4(),
    )
    .unwrap();
    assert_eq!(u.treat_as_withdraw, None);
}

#[test]
fn withdraw_only_update_needs_no_attributes() {
    // RFC 4271 6.3: mandatory attributes are checked only when NLRI are present.
    let u = decode_update(&update_msg("18 0a0100", "", ""), &ebgp4()).unwrap();
    assert_eq!(u.treat_as_withdraw, None);
}

#[test]
fn unrecognized_well_known_attribute_is_session_reset_with_the_attribute() {
    // RFC 4271 6.3: -> 3/2 with the unrecognised attribute as data.
    let e = with_attrs(&format!("{ORIGIN_ASPATH4} {NEXT_HOP} 40630100"), &ebgp4()).unwrap_err();
    assert_eq!(e, notification(3, 2, &h("40630100")));
}

#[test]
fn unknown_optional_non_transitive_attribute_is_dropped_quietly() {
    // RFC 4271 5: unrecognised optional non-transitive attributes are ignored.
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} 806302abcd"),
        &ebgp4(),
        99,
    );
}

#[test]
fn unknown_optional_transitive_attribute_is_kept() {
    // RFC 4271 5: passed on (the Partial bit is added when it is re-advertised).
    let u = with_attrs(&format!("{ORIGIN_ASPATH4} {NEXT_HOP} c06302abcd"), &ebgp4()).unwrap();
    let a = &u.routes(&ebgp4()).announced[0].attrs;
    assert_eq!(a.unknown.len(), 1);
    assert_eq!(a.unknown[0].type_code, 99);
}

#[test]
fn malformed_as4_path_is_discarded() {
    // RFC 6793 6: a malformed AS4_PATH is discarded, the route kept.
    assert_discarded(
        &format!("{ORIGIN_ASPATH2} {NEXT_HOP} c01106 0202 00030d41"),
        &ebgp2(),
        17,
    );
    // Confederation segments in AS4_PATH.
    assert_discarded(
        &format!("{ORIGIN_ASPATH2} {NEXT_HOP} c01106 0301 00030d41"),
        &ebgp2(),
        17,
    );
}

#[test]
fn malformed_as4_aggregator_is_discarded() {
    // RFC 6793 6: AS4_AGGREGATOR of the wrong length is discarded.
    assert_discarded(
        &format!("{ORIGIN_ASPATH2} {NEXT_HOP} c01206 fdea0a000001"),
        &ebgp2(),
        18,
    );
}

#[test]
fn as4_attributes_between_four_octet_speakers_are_discarded() {
    // RFC 6793 4.1: a NEW speaker ignores AS4_PATH/AS4_AGGREGATOR from a NEW speaker.
    assert_discarded(
        &format!("{ORIGIN_ASPATH4} {NEXT_HOP} c01106 0201 00030d41"),
        &ebgp4(),
        17,
    );
}

#[test]
fn treat_as_withdraw_also_withdraws_mp_reach_nlri() {
    // RFC 7606 2: every NLRI, including those in MP_REACH_NLRI, is handled as withdrawn.
    let mp = "80 0e 1e 0002 01 10 20010db8000000000000000000000001 00 40 20010db800010000";
    let u = decode_update(
        &update_msg("", &format!("40010103 4002 06 0201 0000fdea {mp}"), ""),
        &ebgp4(),
    )
    .unwrap();
    let r = u.routes(&ebgp4());
    assert!(r.announced.is_empty());
    assert_eq!(r.withdrawn, vec!["2001:db8:1::/64".parse().unwrap()]);
}
