//! Behaviour of the RIB, one test per rule, each citing where the rule comes from.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

use super::*;
use crate::policy::{ImportPolicy, PrefixRule};
use crate::wire::attribute::{AsPath, AsSegment, Origin, PathAttrs};
use crate::wire::message::{Announcement, RouteUpdate};

const LOCAL_AS: u32 = 65000;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn rib() -> Rib {
    Rib::new(RibConfig {
        local_asn: Asn(LOCAL_AS),
        router_id: RouterId(ROUTER_ID),
        cluster_id: None,
    })
}

/// A peer at `addr` in `asn` whose router id is its (IPv4) address.
fn peer(addr: &str, asn: u32) -> PeerInfo {
    let router_id = match ip(addr) {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => v4("192.0.2.254"),
    };
    PeerInfo {
        address: ip(addr),
        asn: Asn(asn),
        router_id: RouterId(router_id),
        local_address: Some(ip("10.0.0.1")),
        route_reflector_client: false,
        import: ImportPolicy::AcceptAll,
    }
}

fn attrs(as_path: &[u32], next_hop: &str) -> PathAttrs {
    PathAttrs {
        as_path: seq(as_path),
        next_hop: Some(ip(next_hop)),
        ..PathAttrs::default()
    }
}

fn seq(asns: &[u32]) -> AsPath {
    if asns.is_empty() {
        return AsPath::default();
    }
    AsPath {
        segments: vec![AsSegment::Sequence(asns.iter().map(|&a| Asn(a)).collect())],
    }
}

fn announce(prefixes: &[&str], attrs: PathAttrs) -> RouteUpdate {
    RouteUpdate {
        announced: vec![Announcement {
            attrs,
            prefixes: prefixes.iter().map(|p| net(p)).collect(),
        }],
        ..RouteUpdate::default()
    }
}

fn withdraw(prefixes: &[&str]) -> RouteUpdate {
    RouteUpdate {
        withdrawn: prefixes.iter().map(|p| net(p)).collect(),
        ..RouteUpdate::default()
    }
}

fn best_source(rib: &Rib, prefix: &str) -> Option<PathSource> {
    rib.best(&net(prefix)).map(|p| p.source)
}

/// Two peers announce `P` with the given attributes; returns the RIB.
fn contest(a: (PeerInfo, PathAttrs), b: (PeerInfo, PathAttrs)) -> Rib {
    let mut r = rib();
    for (info, at) in [a, b] {
        let addr = info.address;
        r.peer_up(info);
        let o = r.apply(addr, announce(&[P], at));
        assert_eq!(o.accepted, 1);
    }
    r
}

const P: &str = "203.0.113.0/24";

fn peer_src(addr: &str) -> Option<PathSource> {
    Some(PathSource::Peer(ip(addr)))
}

// ---------------------------------------------------------------------------------------------
// Decision process.

#[test]
fn highest_local_pref_wins() {
    // RFC 4271 9.1.1: the degree of preference is LOCAL_PREF for iBGP-learned routes.
    let mut lo = attrs(&[], "10.0.0.2");
    lo.local_pref = Some(50);
    let mut hi = attrs(&[1, 2, 3], "10.0.0.3");
    hi.local_pref = Some(200);
    let r = contest(
        (peer("10.0.0.2", LOCAL_AS), lo),
        (peer("10.0.0.3", LOCAL_AS), hi),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn missing_local_pref_counts_as_default_100() {
    // RFC 4271 5.1.5: a missing LOCAL_PREF is the locally configured default (100).
    let mut low = attrs(&[], "10.0.0.2");
    low.local_pref = Some(99);
    let none = attrs(&[1, 2, 3], "10.0.0.3");
    let r = contest(
        (peer("10.0.0.2", LOCAL_AS), low),
        (peer("10.0.0.3", LOCAL_AS), none),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn local_pref_received_over_ebgp_is_ignored() {
    // RFC 4271 5.1.5: LOCAL_PREF from an external peer is not used; it gets the default.
    let mut high = attrs(&[64512, 1, 2], "10.0.0.2");
    high.local_pref = Some(1000);
    let r = contest(
        (peer("10.0.0.2", 64512), high),
        (peer("10.0.0.3", 64513), attrs(&[64513], "10.0.0.3")),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn locally_originated_beats_learned() {
    // RFC 4271 9.1.2.2 leaves local routes to policy; we prefer our own after LOCAL_PREF.
    let mut r = rib();
    r.peer_up(peer("10.0.0.2", 64512));
    r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64512], "10.0.0.2")));
    let mut own = attrs(&[1, 2, 3, 4], "10.0.0.1");
    own.origin = Origin::Incomplete;
    r.originate(net(P), own);
    assert_eq!(best_source(&r, P), Some(PathSource::Local));
}

#[test]
fn shortest_as_path_wins() {
    // RFC 4271 9.1.2.2 (a).
    let r = contest(
        (peer("10.0.0.2", 64512), attrs(&[64512, 1], "10.0.0.2")),
        (peer("10.0.0.3", 64513), attrs(&[64513], "10.0.0.3")),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn as_set_counts_as_one_and_confed_segments_as_zero() {
    // RFC 4271 9.1.2.2 (a): an AS_SET counts 1; RFC 5065 5.3: confederation segments count 0.
    let mut set = attrs(&[64512], "10.0.0.2");
    set.as_path
        .segments
        .push(AsSegment::Set(vec![Asn(1), Asn(2), Asn(3)]));
    let mut confed = attrs(&[64513, 9], "10.0.0.3");
    confed
        .as_path
        .segments
        .insert(0, AsSegment::ConfedSequence(vec![Asn(7), Asn(8), Asn(9)]));
    assert_eq!(as_path_len(&set.as_path), 2);
    assert_eq!(as_path_len(&confed.as_path), 2);
    // Equal lengths: the lower router id decides, proving neither was counted longer.
    let r = contest(
        (peer("10.0.0.3", 64513), confed),
        (peer("10.0.0.2", 64512), set),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.2"));
}

#[test]
fn lowest_origin_wins() {
    // RFC 4271 9.1.2.2 (b).
    let mut egp = attrs(&[64512], "10.0.0.2");
    egp.origin = Origin::Egp;
    let igp = attrs(&[64513], "10.0.0.3");
    let r = contest(
        (peer("10.0.0.2", 64512), egp),
        (peer("10.0.0.3", 64513), igp),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn lowest_med_wins_between_paths_from_the_same_neighbour_as() {
    // RFC 4271 9.1.2.2 (c).
    let mut a = attrs(&[64512], "10.0.0.2");
    a.med = Some(20);
    let mut b = attrs(&[64512], "10.0.0.3");
    b.med = Some(10);
    let r = contest((peer("10.0.0.2", 64512), a), (peer("10.0.0.3", 64512), b));
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn med_is_not_compared_between_different_neighbour_ases() {
    // RFC 4271 9.1.2.2 (c): MED only between routes from the same neighbouring AS.
    let mut a = attrs(&[64512], "10.0.0.2");
    a.med = Some(500);
    let mut b = attrs(&[64513], "10.0.0.3");
    b.med = Some(1);
    let r = contest((peer("10.0.0.2", 64512), a), (peer("10.0.0.3", 64513), b));
    // Falls through to the router id, which favours the higher MED.
    assert_eq!(best_source(&r, P), peer_src("10.0.0.2"));
}

#[test]
fn missing_med_is_zero() {
    // RFC 4271 9.1.2.2 (c): a missing MED is the lowest possible value.
    let mut a = attrs(&[64512], "10.0.0.2");
    a.med = Some(1);
    let b = attrs(&[64512], "10.0.0.3");
    let r = contest((peer("10.0.0.2", 64512), a), (peer("10.0.0.3", 64512), b));
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn med_elimination_does_not_depend_on_arrival_order() {
    // RFC 4271 9.1.2.2 (c) is an elimination, not a pairwise order: A(AS1, MED 10) loses to
    // B(AS1, MED 5); B and C(AS2) then go to the router id, whatever order they arrived in.
    let mk = |asn: u32, med: u32, nh: &str| {
        let mut a = attrs(&[asn], nh);
        a.med = Some(med);
        a
    };
    let routes = [
        (peer("10.0.0.2", 64512), mk(64512, 10, "10.0.0.2")),
        (peer("10.0.0.4", 64512), mk(64512, 5, "10.0.0.4")),
        (peer("10.0.0.3", 64513), mk(64513, 50, "10.0.0.3")),
    ];
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [0, 2, 1]] {
        let mut r = rib();
        for i in order {
            let (info, at) = routes[i].clone();
            let addr = info.address;
            r.peer_up(info);
            r.apply(addr, announce(&[P], at));
        }
        assert_eq!(best_source(&r, P), peer_src("10.0.0.3"), "order {order:?}");
    }
}

#[test]
fn ebgp_learned_beats_ibgp_learned() {
    // RFC 4271 9.1.2.2 (d).
    let r = contest(
        (peer("10.0.0.2", LOCAL_AS), attrs(&[64512], "10.0.0.2")),
        (peer("10.0.0.3", 64513), attrs(&[64513], "10.0.0.3")),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn lowest_router_id_wins() {
    // RFC 4271 9.1.2.2 (f).
    let mut a = peer("10.0.0.2", 64512);
    a.router_id = RouterId(v4("9.9.9.9"));
    let mut b = peer("10.0.0.3", 64513);
    b.router_id = RouterId(v4("1.1.1.1"));
    let r = contest(
        (a, attrs(&[64512], "10.0.0.2")),
        (b, attrs(&[64513], "10.0.0.3")),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn originator_id_replaces_router_id_in_tie_break() {
    // RFC 4456 section 9: ORIGINATOR_ID is used as the BGP identifier when present.
    let mut a = attrs(&[], "10.0.0.2");
    a.originator_id = Some(v4("10.0.0.200"));
    let b = attrs(&[], "10.0.0.3");
    let r = contest(
        (peer("10.0.0.2", LOCAL_AS), a),
        (peer("10.0.0.3", LOCAL_AS), b),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn shorter_cluster_list_wins() {
    // RFC 4456 section 9: after the router id, prefer the shorter CLUSTER_LIST.
    let mut a = attrs(&[], "10.0.0.2");
    a.originator_id = Some(v4("10.9.9.9"));
    a.cluster_list = vec![v4("1.1.1.1"), v4("2.2.2.2")];
    let mut b = attrs(&[], "10.0.0.3");
    b.originator_id = Some(v4("10.9.9.9"));
    b.cluster_list = vec![v4("3.3.3.3")];
    let r = contest(
        (peer("10.0.0.2", LOCAL_AS), a),
        (peer("10.0.0.3", LOCAL_AS), b),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.3"));
}

#[test]
fn lowest_peer_address_wins_last() {
    // RFC 4271 9.1.2.2 (g).
    let mut a = peer("10.0.0.3", 64512);
    a.router_id = RouterId(v4("7.7.7.7"));
    let mut b = peer("10.0.0.2", 64512);
    b.router_id = RouterId(v4("7.7.7.7"));
    let r = contest(
        (a, attrs(&[64512], "10.0.0.3")),
        (b, attrs(&[64512], "10.0.0.2")),
    );
    assert_eq!(best_source(&r, P), peer_src("10.0.0.2"));
}

#[test]
fn losing_the_best_path_promotes_the_next_one() {
    // RFC 4271 9.1.2: the decision is re-run when a candidate goes away.
    let mut r = contest(
        (peer("10.0.0.2", 64512), attrs(&[64512], "10.0.0.2")),
        (peer("10.0.0.3", 64513), attrs(&[64513, 1], "10.0.0.3")),
    );
    let o = r.apply(ip("10.0.0.2"), withdraw(&[P]));
    assert_eq!(o.withdrawn, 1);
    assert_eq!(o.changes.len(), 1);
    assert_eq!(
        o.changes[0].best.as_ref().unwrap().source,
        PathSource::Peer(ip("10.0.0.3"))
    );
    assert_eq!(r.paths(&net(P)).len(), 1);
    let o = r.apply(ip("10.0.0.3"), withdraw(&[P]));
    assert!(o.changes[0].best.is_none());
    assert!(r.is_empty());
}

#[test]
fn non_best_changes_produce_no_best_change() {
    // RFC 4271 9.1.3: only changes of the selected route need to be propagated.
    let mut r = contest(
        (peer("10.0.0.2", 64512), attrs(&[64512], "10.0.0.2")),
        (peer("10.0.0.3", 64513), attrs(&[64513, 1], "10.0.0.3")),
    );
    let o = r.apply(
        ip("10.0.0.3"),
        announce(&[P], attrs(&[64513, 2], "10.0.0.3")),
    );
    assert!(o.changes.is_empty());
    let o = r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64512], "10.0.0.2")));
    assert!(
        o.changes.is_empty(),
        "identical re-announcement is not a change"
    );
}

// ---------------------------------------------------------------------------------------------
// Import.

fn rejected_single(at: PathAttrs, info: PeerInfo) -> Rib {
    let mut r = rib();
    let addr = info.address;
    r.peer_up(info);
    let o = r.apply(addr, announce(&[P], at));
    assert_eq!((o.accepted, o.rejected), (0, 1));
    assert!(o.changes.is_empty());
    assert!(r.best(&net(P)).is_none());
    let adj: Vec<_> = r.adj_rib_in(addr).collect();
    assert_eq!(adj.len(), 1);
    assert!(!adj[0].2, "kept in Adj-RIB-In as not accepted");
    let c = r.counts(addr);
    assert_eq!((c.received, c.accepted), (1, 0));
    r
}

#[test]
fn as_path_containing_our_asn_is_rejected_but_kept_in_adj_rib_in() {
    // RFC 4271 9.1.2: a route whose AS_PATH contains our AS is excluded.
    rejected_single(
        attrs(&[64512, LOCAL_AS, 1], "10.0.0.2"),
        peer("10.0.0.2", 64512),
    );
}

#[test]
fn originator_id_equal_to_our_router_id_is_rejected() {
    // RFC 4456 section 8: a route carrying our ORIGINATOR_ID is ignored.
    let mut a = attrs(&[], "10.0.0.2");
    a.originator_id = Some(ROUTER_ID);
    rejected_single(a, peer("10.0.0.2", LOCAL_AS));
}

#[test]
fn cluster_list_containing_our_cluster_id_is_rejected() {
    // RFC 4456 section 8: our CLUSTER_ID in the CLUSTER_LIST is a reflection loop.
    let mut a = attrs(&[], "10.0.0.2");
    a.cluster_list = vec![v4("10.1.1.1"), ROUTER_ID];
    rejected_single(a, peer("10.0.0.2", LOCAL_AS));
}

#[test]
fn route_without_next_hop_is_rejected() {
    // RFC 4271 5.1.3: NEXT_HOP is mandatory for announced routes.
    let mut a = attrs(&[64512], "10.0.0.2");
    a.next_hop = None;
    rejected_single(a, peer("10.0.0.2", 64512));
}

#[test]
fn import_policy_filters_prefixes() {
    // ARCHITECTURE.md "fail safe": routes from a peer are filtered to what it may announce.
    let mut info = peer("10.0.0.2", 64512);
    info.import = ImportPolicy::Prefixes(vec![PrefixRule::or_longer(net("10.244.0.0/16"))]);
    let mut r = rib();
    r.peer_up(info);
    let o = r.apply(
        ip("10.0.0.2"),
        announce(&["10.244.1.0/24", "0.0.0.0/0"], attrs(&[64512], "10.0.0.2")),
    );
    assert_eq!((o.accepted, o.rejected), (1, 1));
    assert!(r.best(&net("10.244.1.0/24")).is_some());
    assert!(r.best(&net("0.0.0.0/0")).is_none());
    assert_eq!(r.adj_rib_in(ip("10.0.0.2")).count(), 2);
}

#[test]
fn deny_policy_rejects_everything() {
    // ARCHITECTURE.md "fail safe": a peer can be told to contribute nothing.
    let mut info = peer("10.0.0.2", 64512);
    info.import = ImportPolicy::Deny;
    rejected_single(attrs(&[64512], "10.0.0.2"), info);
}

#[test]
fn reannouncement_of_rejected_route_with_good_attributes_is_accepted() {
    // RFC 4271 3.1: a new advertisement replaces the previous one (implicit withdraw).
    let mut r = rejected_single(
        attrs(&[64512, LOCAL_AS], "10.0.0.2"),
        peer("10.0.0.2", 64512),
    );
    let o = r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64512], "10.0.0.2")));
    assert_eq!(o.accepted, 1);
    assert_eq!(o.changes.len(), 1);
    assert_eq!(r.counts(ip("10.0.0.2")).accepted, 1);
    // And back: a looped replacement removes the installed route.
    let o = r.apply(
        ip("10.0.0.2"),
        announce(&[P], attrs(&[64512, LOCAL_AS], "10.0.0.2")),
    );
    assert_eq!(o.rejected, 1);
    assert!(o.changes[0].best.is_none());
    assert_eq!(
        r.counts(ip("10.0.0.2")),
        PeerCounts {
            received: 1,
            accepted: 0,
            advertised: 0
        }
    );
}

#[test]
fn withdrawal_of_unknown_prefix_is_not_counted() {
    // RFC 4271 9.1.4 (withdrawals of routes never announced are harmless).
    let mut r = rib();
    r.peer_up(peer("10.0.0.2", 64512));
    let o = r.apply(ip("10.0.0.2"), withdraw(&[P]));
    assert_eq!(o.withdrawn, 0);
    assert!(o.changes.is_empty());
}

#[test]
fn update_from_peer_that_is_not_up_is_ignored() {
    // RFC 4271 8: UPDATEs only count in Established.
    let mut r = rib();
    let o = r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64512], "10.0.0.2")));
    assert_eq!(o.rejected, 1);
    assert!(r.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Export.

fn client(addr: &str) -> PeerInfo {
    PeerInfo {
        route_reflector_client: true,
        ..peer(addr, LOCAL_AS)
    }
}

/// A RIB with the given peers up; returns the changes of `from` announcing `P` with `at`.
fn setup(peers: &[PeerInfo], from: &str, at: PathAttrs) -> (Rib, Vec<BestChange>) {
    let mut r = rib();
    for p in peers {
        r.peer_up(p.clone());
    }
    let o = r.apply(ip(from), announce(&[P], at));
    (r, o.changes)
}

fn sent(r: &mut Rib, to: &str, changes: &[BestChange]) -> Option<Arc<PathAttrs>> {
    let out = r.advertise(ip(to), changes);
    assert!(out.len() <= 1);
    out.into_iter().next().and_then(|c| c.attrs)
}

#[test]
fn route_is_never_sent_back_to_its_source_peer() {
    // RFC 4271 9.1.3 (split horizon is common practice; also what every speaker does).
    let (mut r, ch) = setup(
        &[peer("10.0.0.2", 64512)],
        "10.0.0.2",
        attrs(&[64512], "10.0.0.2"),
    );
    assert!(r.advertise(ip("10.0.0.2"), &ch).is_empty());
}

#[test]
fn ibgp_learned_route_is_not_sent_to_ibgp_peers_without_reflection() {
    // RFC 4271 9.2: routes learned from an internal peer are not sent to internal peers.
    let (mut r, ch) = setup(
        &[peer("10.0.0.2", LOCAL_AS), peer("10.0.0.3", LOCAL_AS)],
        "10.0.0.2",
        attrs(&[], "10.0.0.2"),
    );
    assert!(sent(&mut r, "10.0.0.3", &ch).is_none());
}

#[test]
fn route_from_client_is_reflected_to_all_ibgp_peers() {
    // RFC 4456 section 6: a client's route goes to clients and non-clients.
    let (mut r, ch) = setup(
        &[
            client("10.0.0.2"),
            client("10.0.0.3"),
            peer("10.0.0.4", LOCAL_AS),
        ],
        "10.0.0.2",
        attrs(&[], "10.0.0.2"),
    );
    for to in ["10.0.0.3", "10.0.0.4"] {
        let a = sent(&mut r, to, &ch).expect("reflected");
        assert_eq!(a.originator_id, Some(v4("10.0.0.2")), "ORIGINATOR_ID added");
        assert_eq!(a.cluster_list, vec![ROUTER_ID], "our cluster id prepended");
        assert_eq!(a.next_hop, Some(ip("10.0.0.2")), "next hop unchanged");
        assert_eq!(a.local_pref, Some(100));
    }
}

#[test]
fn route_from_non_client_is_reflected_only_to_clients() {
    // RFC 4456 section 6: a non-client's route goes to clients only.
    let mut at = attrs(&[], "10.0.0.4");
    at.originator_id = Some(v4("10.9.9.9"));
    at.cluster_list = vec![v4("10.8.8.8")];
    let (mut r, ch) = setup(
        &[
            client("10.0.0.2"),
            peer("10.0.0.3", LOCAL_AS),
            peer("10.0.0.4", LOCAL_AS),
        ],
        "10.0.0.4",
        at,
    );
    assert!(sent(&mut r, "10.0.0.3", &ch).is_none());
    let a = sent(&mut r, "10.0.0.2", &ch).expect("reflected to client");
    assert_eq!(
        a.originator_id,
        Some(v4("10.9.9.9")),
        "existing ORIGINATOR_ID kept"
    );
    assert_eq!(a.cluster_list, vec![ROUTER_ID, v4("10.8.8.8")]);
}

#[test]
fn ebgp_export_prepends_our_asn_sets_next_hop_self_and_strips_ibgp_attributes() {
    // RFC 4271 5.1.2, 5.1.3, 5.1.5; RFC 4456 section 8 (RR attributes are AS-local).
    let mut at = attrs(&[], "10.0.0.2");
    at.local_pref = Some(300);
    at.med = Some(7);
    at.originator_id = Some(v4("10.9.9.9"));
    at.cluster_list = vec![v4("10.8.8.8")];
    let (mut r, ch) = setup(
        &[peer("10.0.0.2", LOCAL_AS), peer("10.0.0.5", 64512)],
        "10.0.0.2",
        at,
    );
    let a = sent(&mut r, "10.0.0.5", &ch).expect("sent to eBGP");
    assert_eq!(a.as_path, seq(&[LOCAL_AS]));
    assert_eq!(a.next_hop, Some(ip("10.0.0.1")));
    assert_eq!(a.local_pref, None);
    assert_eq!(a.originator_id, None);
    assert!(a.cluster_list.is_empty());
    assert_eq!(a.med, Some(7), "a MED set inside our AS may be sent");
}

#[test]
fn med_learned_from_another_as_is_not_sent_to_an_external_peer() {
    // RFC 4271 5.1.4: MED received from a neighbouring AS must not go to other ASes.
    let mut at = attrs(&[64512], "10.0.0.2");
    at.med = Some(7);
    let (mut r, ch) = setup(
        &[peer("10.0.0.2", 64512), peer("10.0.0.5", 64513)],
        "10.0.0.2",
        at,
    );
    let a = sent(&mut r, "10.0.0.5", &ch).unwrap();
    assert_eq!(a.med, None);
    assert_eq!(a.as_path, seq(&[LOCAL_AS, 64512]));
}

#[test]
fn ebgp_learned_route_to_ibgp_gets_default_local_pref_and_next_hop_self() {
    // RFC 4271 5.1.5 (LOCAL_PREF on iBGP); next-hop-self because we run no IGP (export.rs).
    let mut at = attrs(&[64512], "192.0.2.1");
    at.local_pref = Some(999);
    at.med = Some(3);
    let (mut r, ch) = setup(
        &[peer("10.0.0.2", 64512), peer("10.0.0.3", LOCAL_AS)],
        "10.0.0.2",
        at,
    );
    let a = sent(&mut r, "10.0.0.3", &ch).unwrap();
    assert_eq!(a.local_pref, Some(100));
    assert_eq!(a.next_hop, Some(ip("10.0.0.1")));
    assert_eq!(a.as_path, seq(&[64512]), "no prepend inside the AS");
    assert_eq!(a.med, Some(3), "MED may be passed to internal peers");
}

#[test]
fn local_route_gets_next_hop_self_and_local_pref_towards_ibgp() {
    // RFC 4271 5.1.3 (a): we are the next hop for routes we originate.
    let mut r = rib();
    r.peer_up(peer("10.0.0.3", LOCAL_AS));
    let ch = r.originate(net("10.244.1.0/24"), PathAttrs::default());
    let a = sent(&mut r, "10.0.0.3", &ch).unwrap();
    assert_eq!(a.next_hop, Some(ip("10.0.0.1")));
    assert_eq!(a.local_pref, Some(100));
    assert!(a.as_path.segments.is_empty());
    // An explicit next hop on a local route is kept for iBGP.
    let explicit = PathAttrs {
        next_hop: Some(ip("10.0.0.77")),
        ..PathAttrs::default()
    };
    let ch = r.originate(net("10.244.2.0/24"), explicit);
    assert_eq!(
        sent(&mut r, "10.0.0.3", &ch).unwrap().next_hop,
        Some(ip("10.0.0.77"))
    );
}

#[test]
fn next_hop_of_wrong_family_uses_session_address_of_that_family_or_skips() {
    // RFC 4760 section 3: the next hop must be of the family of the NLRI's AFI.
    let mut r = rib();
    let mut v6_session = peer("2001:db8::2", LOCAL_AS);
    v6_session.local_address = Some(ip("2001:db8::1"));
    r.peer_up(v6_session);
    r.peer_up(peer("10.0.0.3", LOCAL_AS));
    let ch = r.originate(net("2001:db8:1::/64"), PathAttrs::default());
    let a = sent(&mut r, "2001:db8::2", &ch).unwrap();
    assert_eq!(a.next_hop, Some(ip("2001:db8::1")));
    // IPv4 session without an IPv6 local address: nothing sensible to send.
    assert!(r.advertise(ip("10.0.0.3"), &ch).is_empty());
    // An IPv4 next hop on an IPv6 route is replaced by the session's IPv6 address.
    let odd = PathAttrs {
        next_hop: Some(ip("10.0.0.9")),
        ..PathAttrs::default()
    };
    let ch = r.originate(net("2001:db8:2::/64"), odd);
    assert_eq!(
        sent(&mut r, "2001:db8::2", &ch).unwrap().next_hop,
        Some(ip("2001:db8::1"))
    );
}

#[test]
fn no_advertise_and_no_export_communities_are_honoured() {
    // RFC 1997: NO_ADVERTISE to nobody, NO_EXPORT not outside the AS.
    let mut r = rib();
    r.peer_up(peer("10.0.0.3", LOCAL_AS));
    r.peer_up(peer("10.0.0.5", 64512));
    let no_export = PathAttrs {
        communities: vec![NO_EXPORT],
        ..PathAttrs::default()
    };
    let ch = r.originate(net("10.244.1.0/24"), no_export);
    assert!(sent(&mut r, "10.0.0.3", &ch).is_some());
    assert!(sent(&mut r, "10.0.0.5", &ch).is_none());
    let no_adv = PathAttrs {
        communities: vec![NO_ADVERTISE],
        ..PathAttrs::default()
    };
    let ch = r.originate(net("10.244.2.0/24"), no_adv);
    assert!(sent(&mut r, "10.0.0.3", &ch).is_none());
    assert!(sent(&mut r, "10.0.0.5", &ch).is_none());
}

#[test]
fn advertise_sends_only_differences_from_adj_rib_out() {
    // RFC 4271 9.2: only changes to the Adj-RIB-Out are advertised.
    let mut r = rib();
    r.peer_up(peer("10.0.0.5", 64512));
    r.peer_up(peer("10.0.0.2", 64513));
    r.peer_up(peer("10.0.0.3", 64514));
    let ch = r.originate(net("10.244.1.0/24"), PathAttrs::default());
    assert_eq!(r.advertise(ip("10.0.0.5"), &ch).len(), 1);
    assert!(
        r.advertise(ip("10.0.0.5"), &ch).is_empty(),
        "same again: nothing"
    );
    assert_eq!(r.counts(ip("10.0.0.5")).advertised, 1);
    assert_eq!(r.adj_rib_out(ip("10.0.0.5")).count(), 1);
    // A best change whose exported form is identical is not re-sent: two eBGP paths that
    // both become "AS 65000 + their path" differ, but two equal ones after export don't.
    let o = r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64513], "10.0.0.2")));
    let first = r.advertise(ip("10.0.0.5"), &o.changes);
    assert_eq!(first.len(), 1);
    let o = r.apply(ip("10.0.0.3"), announce(&[P], attrs(&[64514], "10.0.0.3")));
    assert!(
        o.changes.is_empty(),
        "10.0.0.2 still best (lower router id)"
    );
    let o = r.apply(ip("10.0.0.2"), withdraw(&[P]));
    let next = r.advertise(ip("10.0.0.5"), &o.changes);
    assert_eq!(next.len(), 1);
    assert_eq!(
        next[0].attrs.as_ref().unwrap().as_path,
        seq(&[LOCAL_AS, 64514])
    );
    let o = r.apply(ip("10.0.0.3"), withdraw(&[P]));
    assert_eq!(
        r.advertise(ip("10.0.0.5"), &o.changes),
        vec![OutChange {
            prefix: net(P),
            attrs: None
        }]
    );
    assert_eq!(r.counts(ip("10.0.0.5")).advertised, 1);
}

#[test]
fn best_path_from_the_peer_itself_withdraws_what_it_was_sent() {
    // RFC 4271 9.1.3: when the new best may not be sent to a peer, the old one is withdrawn.
    let mut r = rib();
    r.peer_up(peer("10.0.0.2", 64512));
    let ch = r.originate(net(P), attrs(&[], "10.0.0.1"));
    assert_eq!(r.advertise(ip("10.0.0.2"), &ch).len(), 1);
    let better = attrs(&[64512], "10.0.0.2");
    r.withdraw_local(net(P));
    let o = r.apply(ip("10.0.0.2"), announce(&[P], better));
    let out = r.advertise(ip("10.0.0.2"), &o.changes);
    assert_eq!(
        out,
        vec![OutChange {
            prefix: net(P),
            attrs: None
        }]
    );
}

#[test]
fn full_table_sends_every_exportable_best_path() {
    // RFC 4271 9.1.3 / RFC 2918: a new session or a route refresh gets the whole table.
    let mut r = rib();
    r.peer_up(peer("10.0.0.2", 64512));
    r.peer_up(peer("10.0.0.5", 64513));
    r.apply(
        ip("10.0.0.2"),
        announce(&["10.1.0.0/16", "10.2.0.0/16"], attrs(&[64512], "10.0.0.2")),
    );
    r.originate(net("10.244.1.0/24"), PathAttrs::default());
    let to5 = r.full_table(ip("10.0.0.5"));
    assert_eq!(to5.len(), 3);
    assert!(to5.iter().all(|c| c.attrs.is_some()));
    assert_eq!(
        r.full_table(ip("10.0.0.5")).len(),
        3,
        "refresh resends everything"
    );
    // Back to the source only our own route.
    let to2 = r.full_table(ip("10.0.0.2"));
    assert_eq!(to2.len(), 1);
    assert_eq!(to2[0].prefix, net("10.244.1.0/24"));
    // Routes with equal source attributes share one exported attribute set.
    let a = r
        .adj_rib_out(ip("10.0.0.5"))
        .find(|(p, _)| **p == net("10.1.0.0/16"))
        .unwrap()
        .1
        .clone();
    let b = r
        .adj_rib_out(ip("10.0.0.5"))
        .find(|(p, _)| **p == net("10.2.0.0/16"))
        .unwrap()
        .1
        .clone();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn nothing_is_advertised_to_a_peer_that_is_down() {
    // RFC 4271 8: UPDATEs are only sent in Established.
    let mut r = rib();
    r.peer_up(peer("10.0.0.5", 64513));
    let ch = r.originate(net("10.244.1.0/24"), PathAttrs::default());
    r.peer_down(ip("10.0.0.5"), &[]);
    assert!(r.advertise(ip("10.0.0.5"), &ch).is_empty());
    assert!(r.full_table(ip("10.0.0.5")).is_empty());
    assert_eq!(r.counts(ip("10.0.0.5")).advertised, 0);
}

// ---------------------------------------------------------------------------------------------
// Session loss and graceful restart.

fn two_family_peer() -> Rib {
    let mut r = rib();
    r.peer_up(peer("10.0.0.2", 64512));
    r.apply(
        ip("10.0.0.2"),
        announce(&[P, "198.51.100.0/24"], attrs(&[64512], "10.0.0.2")),
    );
    r.apply(
        ip("10.0.0.2"),
        announce(&["2001:db8:1::/48"], attrs(&[64512], "2001:db8::2")),
    );
    r
}

#[test]
fn peer_down_without_graceful_restart_removes_its_routes() {
    // RFC 4271 8.2.2 / 9: routes from a closed session are removed.
    let mut r = two_family_peer();
    let ch = r.peer_down(ip("10.0.0.2"), &[]);
    assert_eq!(ch.len(), 3);
    assert!(ch.iter().all(|c| c.best.is_none()));
    assert!(r.is_empty());
    assert_eq!(r.counts(ip("10.0.0.2")), PeerCounts::default());
}

#[test]
fn peer_down_with_graceful_restart_keeps_routes_stale_and_best() {
    // RFC 4724 4.2: the receiving speaker retains the routes, marks them stale, keeps using them.
    let mut r = two_family_peer();
    let ch = r.peer_down(ip("10.0.0.2"), &[Family::Ipv4Unicast]);
    assert_eq!(ch.len(), 1, "only the IPv6 route goes");
    assert!(r.best(&net("2001:db8:1::/48")).is_none());
    let best = r.best(&net(P)).unwrap();
    assert!(best.stale);
    assert_eq!(r.len(), 2);
}

#[test]
fn reannouncement_clears_the_stale_flag() {
    // RFC 4724 4.2: a re-advertised route replaces the stale one.
    let mut r = two_family_peer();
    r.peer_down(ip("10.0.0.2"), &[Family::Ipv4Unicast, Family::Ipv6Unicast]);
    r.peer_up(peer("10.0.0.2", 64512));
    let o = r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64512], "10.0.0.2")));
    assert!(o.changes.is_empty(), "same route: no best change");
    assert!(!r.best(&net(P)).unwrap().stale);
    assert!(r.best(&net("198.51.100.0/24")).unwrap().stale);
}

#[test]
fn end_of_rib_sweeps_the_remaining_stale_routes_of_that_family() {
    // RFC 4724 4.2: on End-of-RIB, stale routes not refreshed are deleted.
    let mut r = two_family_peer();
    r.peer_down(ip("10.0.0.2"), &[Family::Ipv4Unicast, Family::Ipv6Unicast]);
    r.peer_up(peer("10.0.0.2", 64512));
    r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64512], "10.0.0.2")));
    let ch = r.end_of_rib(ip("10.0.0.2"), Family::Ipv4Unicast);
    assert_eq!(ch.len(), 1);
    assert_eq!(ch[0].prefix, net("198.51.100.0/24"));
    assert!(ch[0].best.is_none());
    assert!(r.best(&net(P)).is_some());
    assert!(
        r.best(&net("2001:db8:1::/48")).unwrap().stale,
        "other family untouched"
    );
    // The End-of-RIB marker inside an UPDATE does the same.
    let o = r.apply(
        ip("10.0.0.2"),
        RouteUpdate {
            end_of_rib: Some(Family::Ipv6Unicast),
            ..RouteUpdate::default()
        },
    );
    assert_eq!(o.changes.len(), 1);
    assert_eq!(r.len(), 1);
    assert_eq!(r.counts(ip("10.0.0.2")).accepted, 1);
}

#[test]
fn stale_timer_expiry_sweeps_every_stale_route() {
    // RFC 4724 4.2: when the restart or stale timer expires, stale routes are deleted.
    let mut r = two_family_peer();
    r.peer_down(ip("10.0.0.2"), &[Family::Ipv4Unicast, Family::Ipv6Unicast]);
    let ch = r.sweep_stale(ip("10.0.0.2"));
    assert_eq!(ch.len(), 3);
    assert!(r.is_empty());
    assert!(r.sweep_stale(ip("10.0.0.2")).is_empty());
}

#[test]
fn remove_peer_drops_routes_and_adj_rib_out() {
    // Deconfiguration: nothing of the peer may remain.
    let mut r = two_family_peer();
    r.peer_up(peer("10.0.0.5", 64513));
    let ch: Vec<_> = r
        .loc_rib()
        .map(|(p, b)| BestChange {
            prefix: p,
            best: Some(b),
        })
        .collect();
    r.advertise(ip("10.0.0.5"), &ch);
    assert_eq!(r.remove_peer(ip("10.0.0.2")).len(), 3);
    assert_eq!(r.remove_peer(ip("10.0.0.5")).len(), 0);
    assert!(r.is_empty());
    assert_eq!(r.adj_rib_out(ip("10.0.0.5")).count(), 0);
    assert!(r.peer(ip("10.0.0.2")).is_none());
}

#[test]
fn a_removed_peers_table_slot_serves_a_new_peer_without_its_routes() {
    // Paths name their peer by an index into the peer table; deconfiguring a peer frees its
    // index only once its routes are gone, so a new peer never inherits them.
    let mut r = rib();
    r.peer_up(peer("10.0.0.2", 64512));
    r.apply(ip("10.0.0.2"), announce(&[P], attrs(&[64512], "10.0.0.2")));
    r.remove_peer(ip("10.0.0.2"));
    r.peer_up(peer("10.0.0.3", 64513));
    r.apply(
        ip("10.0.0.3"),
        announce(&["198.51.100.0/24"], attrs(&[64513], "10.0.0.3")),
    );
    assert!(r.best(&net(P)).is_none());
    assert_eq!(best_source(&r, "198.51.100.0/24"), peer_src("10.0.0.3"));
    assert_eq!(r.counts(ip("10.0.0.3")).accepted, 1);
    assert_eq!(r.adj_rib_in(ip("10.0.0.3")).count(), 1);
    assert_eq!(r.adj_rib_in(ip("10.0.0.2")).count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Interning and scale.

fn host_routes(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0A00_0000 + i), 32).unwrap()))
        .collect()
}

#[test]
fn many_prefixes_with_equal_attributes_share_one_allocation() {
    // Memory: 100k routes with one attribute set hold one PathAttrs, not 100k.
    let mut r = rib();
    r.peer_up(peer("10.255.0.2", 64512));
    for chunk in host_routes(100_000).chunks(800) {
        let u = RouteUpdate {
            announced: vec![Announcement {
                attrs: attrs(&[64512], "10.255.0.2"),
                prefixes: chunk.to_vec(),
            }],
            ..RouteUpdate::default()
        };
        r.apply(ip("10.255.0.2"), u);
    }
    assert_eq!(r.len(), 100_000);
    let first = r.best(&net("10.0.0.0/32")).unwrap().attrs.clone();
    assert!(r.loc_rib().all(|(_, p)| Arc::ptr_eq(&p.attrs, &first)));
    // 100k paths + our clone + the interner's copy.
    assert_eq!(Arc::strong_count(&first), 100_002);
    assert_eq!(r.interned_attributes(), 1);
}

#[test]
fn stored_paths_stay_compact() {
    // Memory: a Loc-RIB slot is what a route costs; 16 bytes of path plus an 8-byte IPv4 key.
    assert_eq!(std::mem::size_of::<Route>(), 16);
    assert_eq!(std::mem::size_of::<Dest>(), 16);
    assert_eq!(std::mem::size_of::<(V4Key, Dest)>(), 24);
}

#[test]
fn interned_attributes_are_released_when_routes_go() {
    // Memory: attribute sets of removed routes do not accumulate.
    let mut r = rib();
    r.peer_up(peer("10.0.0.2", 64512));
    for med in 0..50 {
        let mut a = attrs(&[64512], "10.0.0.2");
        a.med = Some(med);
        r.apply(ip("10.0.0.2"), announce(&[P], a));
    }
    r.peer_down(ip("10.0.0.2"), &[]);
    assert_eq!(r.interned_attributes(), 0);
}

#[test]
fn import_policy_change_reevaluates_received_routes_without_refresh() {
    // RFC 4271 9.1.1: policy changes re-run import over the Adj-RIB-In (soft reconfiguration).
    let mut info = peer("10.0.0.2", 64512);
    info.import = ImportPolicy::Deny;
    let mut r = rib();
    r.peer_up(info);
    r.apply(
        ip("10.0.0.2"),
        announce(
            &["10.244.1.0/24", "10.9.0.0/16"],
            attrs(&[64512], "10.0.0.2"),
        ),
    );
    r.apply(
        ip("10.0.0.2"),
        announce(&["10.244.2.0/24"], attrs(&[64512, LOCAL_AS], "10.0.0.2")),
    );
    assert!(r.is_empty());
    let allow = ImportPolicy::Prefixes(vec![PrefixRule::or_longer(net("10.244.0.0/16"))]);
    let ch = r.set_import_policy(ip("10.0.0.2"), allow);
    assert_eq!(ch.len(), 1, "the looped route stays rejected");
    assert_eq!(ch[0].prefix, net("10.244.1.0/24"));
    assert_eq!(r.counts(ip("10.0.0.2")).accepted, 1);
    let ch = r.set_import_policy(ip("10.0.0.2"), ImportPolicy::Deny);
    assert_eq!(ch.len(), 1);
    assert!(ch[0].best.is_none());
    assert_eq!(
        r.counts(ip("10.0.0.2")),
        PeerCounts {
            received: 3,
            accepted: 0,
            advertised: 0
        }
    );
}

#[test]
fn rib_can_move_between_tasks() {
    // The tokio layer owns the RIB in one task and hands out best paths to others.
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Rib>();
    send_sync::<BestChange>();
    send_sync::<OutChange>();
}

// ---------------------------------------------------------------------------------------------
// Invariants under random update sequences.

mod prop {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const PEERS: [(&str, u32); 4] = [
        ("10.0.0.2", 64512),
        ("10.0.0.3", 64512),
        ("10.0.0.4", LOCAL_AS),
        ("10.0.0.5", 64513),
    ];
    const PREFIXES: [&str; 3] = ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"];
    /// Receives everything, announces nothing: its Adj-RIB-Out is checked.
    const WATCHER: &str = "10.0.0.9";

    #[derive(Debug, Clone)]
    enum Op {
        Announce {
            peer: usize,
            prefix: usize,
            len: usize,
            med: u32,
            lp: u32,
        },
        Withdraw {
            peer: usize,
            prefix: usize,
        },
        Down {
            peer: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..4usize, 0..3usize, 0..3usize, 0..3u32, 99..102u32)
                .prop_map(|(peer, prefix, len, med, lp)| Op::Announce { peer, prefix, len, med, lp }),
            3 => (0..4usize, 0..3usize).prop_map(|(peer, prefix)| Op::Withdraw { peer, prefix }),
            1 => (0..4usize).prop_map(|peer| Op::Down { peer }),
        ]
    }

    fn path_attrs(peer: usize, len: usize, med: u32, lp: u32) -> PathAttrs {
        let (addr, asn) = PEERS[peer];
        let mut path = vec![asn; len];
        if asn == LOCAL_AS {
            path = vec![64999; len];
        }
        PathAttrs {
            med: Some(med),
            local_pref: Some(lp),
            ..attrs(&path, addr)
        }
    }

    fn fresh() -> Rib {
        let mut r = rib();
        for (addr, asn) in PEERS {
            r.peer_up(peer(addr, asn));
        }
        r.peer_up(peer(WATCHER, 64600));
        r
    }

    proptest! {
        #[test]
        fn change_streams_reproduce_the_tables(ops in proptest::collection::vec(op(), 1..40)) {
            // RFC 4271 9.1: the Loc-RIB is a function of the Adj-RIBs-In, whatever the order,
            // and the changes we report are exactly what a consumer needs to follow it.
            let mut r = fresh();
            let mut kernel: HashMap<IpNet, PathSource> = HashMap::new();
            let mut wire: HashMap<IpNet, Arc<PathAttrs>> = HashMap::new();
            let mut model: HashMap<(usize, usize), PathAttrs> = HashMap::new();
            for op in ops {
                let changes = match op {
                    Op::Announce { peer: p, prefix, len, med, lp } => {
                        let a = path_attrs(p, len, med, lp);
                        model.insert((p, prefix), a.clone());
                        r.apply(ip(PEERS[p].0), announce(&[PREFIXES[prefix]], a)).changes
                    }
                    Op::Withdraw { peer: p, prefix } => {
                        model.remove(&(p, prefix));
                        r.apply(ip(PEERS[p].0), withdraw(&[PREFIXES[prefix]])).changes
                    }
                    Op::Down { peer: p } => {
                        model.retain(|(mp, _), _| *mp != p);
                        let ch = r.peer_down(ip(PEERS[p].0), &[]);
                        r.peer_up(peer(PEERS[p].0, PEERS[p].1));
                        ch
                    }
                };
                for c in &changes {
                    match &c.best {
                        Some(b) => kernel.insert(c.prefix, b.source),
                        None => kernel.remove(&c.prefix),
                    };
                }
                for o in r.advertise(ip(WATCHER), &changes) {
                    match o.attrs {
                        Some(a) => wire.insert(o.prefix, a),
                        None => wire.remove(&o.prefix),
                    };
                }
            }
            let loc: HashMap<IpNet, PathSource> = r.loc_rib().map(|(p, b)| (p, b.source)).collect();
            prop_assert_eq!(&kernel, &loc);
            let out: HashMap<IpNet, Arc<PathAttrs>> =
                r.adj_rib_out(ip(WATCHER)).map(|(p, a)| (*p, a.clone())).collect();
            prop_assert_eq!(&wire, &out);

            // The same final routes, announced in reverse order into a fresh RIB, select the
            // same best paths and export the same table.
            let mut again = fresh();
            let mut entries: Vec<_> = model.into_iter().collect();
            entries.sort_by_key(|((p, x), _)| std::cmp::Reverse((*p, *x)));
            for ((p, prefix), a) in entries {
                again.apply(ip(PEERS[p].0), announce(&[PREFIXES[prefix]], a));
            }
            let loc2: HashMap<IpNet, PathSource> =
                again.loc_rib().map(|(p, b)| (p, b.source)).collect();
            prop_assert_eq!(&loc, &loc2);
            let full: HashMap<IpNet, Arc<PathAttrs>> = again
                .full_table(ip(WATCHER))
                .into_iter()
                .filter_map(|o| Some((o.prefix, o.attrs?)))
                .collect();
            prop_assert_eq!(&wire, &full);
        }
    }
}
