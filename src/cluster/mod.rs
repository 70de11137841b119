//! The cluster as the agent needs it, and what follows from it: which peers to have, which pod
//! CIDRs and underlay pod host routes to advertise.
//!
//! This module is pure: [`ClusterState`] (the nodes and this node's pods, however they were
//! learned) and the configuration go in, [`Desired`] comes out. `kube` fills a `ClusterState`
//! from Kubernetes watchers; the agent diffs successive `Desired` values against what it
//! applied. Keeping the rules here means the mesh, route-reflector and annotation logic is tested
//! with plain values, without an API server.
//!
//! Node annotations (all optional) tune one node:
//! - `underroute.io/asn`: the node's AS number (default `node.asn` of the file). Nodes mesh
//!   with the nodes of their own AS only; other ASes are reached through the routers.
//! - `underroute.io/peers`: a JSON list of peers with the keys of a `[[peer]]` table, except
//!   `password` (every node can read Node objects; passwords belong in the file).
//! - `underroute.io/route-reflector`: `"true"` makes the node a reflector for the mesh.
//! - `underroute.io/route-reflector-client`: `"true"` makes the node peer only with the
//!   reflectors (a full mesh of N nodes is N*(N-1)/2 sessions; with reflectors it is N*R).

pub mod kube;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use underroute_bgp::speaker::PeerConfig;

use crate::config::{Config, PeerEntry};

/// The node's AS number.
pub const ANNOTATION_ASN: &str = "underroute.io/asn";
/// The node's own peers (JSON list of `[[peer]]` tables).
pub const ANNOTATION_PEERS: &str = "underroute.io/peers";
/// The node reflects routes for the mesh.
pub const ANNOTATION_ROUTE_REFLECTOR: &str = "underroute.io/route-reflector";
/// The node peers only with the mesh's reflectors.
pub const ANNOTATION_ROUTE_REFLECTOR_CLIENT: &str = "underroute.io/route-reflector-client";

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Node name.
    pub name: String,
    /// Its InternalIP addresses, in the Node's order.
    pub addresses: Vec<IpAddr>,
    /// Its pod CIDRs (`spec.podCIDRs`).
    pub pod_cidrs: Vec<IpNet>,
    /// What its annotations say.
    pub settings: NodeSettings,
}

/// The per-node settings carried by annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSettings {
    /// `underroute.io/asn`.
    pub asn: Option<u32>,
    /// `underroute.io/peers`.
    pub peers: Vec<PeerEntry>,
    /// `underroute.io/route-reflector`.
    pub route_reflector: bool,
    /// `underroute.io/route-reflector-client`.
    pub route_reflector_client: bool,
}

/// An annotation that could not be used; the node keeps its previous value for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {annotation}: {reason}")]
pub struct AnnotationError {
    /// The annotation key.
    pub annotation: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl NodeSettings {
    /// Reads the annotations. A bad value is reported and the previous value of that setting is
    /// kept (`previous`, or the default for a node seen for the first time): a typo in an
    /// annotation must not drop a node's peers.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        previous: Option<&NodeSettings>,
    ) -> (NodeSettings, Vec<AnnotationError>) {
        let fallback = previous.cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let get = |key: &str| annotations.get(key).map(|v| v.trim());

        let asn = match get(ANNOTATION_ASN).map(parse_asn) {
            None => None,
            Some(Ok(asn)) => Some(asn),
            Some(Err(reason)) => {
                errors.push(AnnotationError {
                    annotation: ANNOTATION_ASN,
                    reason,
                });
                fallback.asn
            }
        };
        let peers = match get(ANNOTATION_PEERS).map(parse_peers) {
            None => Vec::new(),
            Some(Ok(peers)) => peers,
            Some(Err(reason)) => {
                errors.push(AnnotationError {
                    annotation: ANNOTATION_PEERS,
                    reason,
                });
                fallback.peers.clone()
            }
        };
        let mut flag = |key: &'static str, raw: Option<&str>, old: bool| match raw.map(parse_flag) {
            None => false,
            Some(Ok(v)) => v,
            Some(Err(reason)) => {
                errors.push(AnnotationError {
                    annotation: key,
                    reason,
                });
                old
            }
        };
        let route_reflector = flag(
            ANNOTATION_ROUTE_REFLECTOR,
            get(ANNOTATION_ROUTE_REFLECTOR),
            fallback.route_reflector,
        );
        let route_reflector_client = flag(
            ANNOTATION_ROUTE_REFLECTOR_CLIENT,
            get(ANNOTATION_ROUTE_REFLECTOR_CLIENT),
            fallback.route_reflector_client,
        );
        (
            NodeSettings {
                asn,
                peers,
                route_reflector,
                route_reflector_client,
            },
            errors,
        )
    }
}

fn parse_asn(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) | Ok(23456) => Err(format!("{s} is a reserved AS number")),
        Ok(asn) => Ok(asn),
        Err(_) => Err(format!("{s:?} is not an AS number (1-4294967295)")),
    }
}

fn parse_flag(s: &str) -> Result<bool, String> {
    match s {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("{other:?} is neither \"true\" nor \"false\"")),
    }
}

fn parse_peers(s: &str) -> Result<Vec<PeerEntry>, String> {
    let peers: Vec<PeerEntry> =
        serde_json::from_str(s).map_err(|e| format!("not a JSON list of peer tables: {e}"))?;
    let mut seen = BTreeSet::new();
    for (i, p) in peers.iter().enumerate() {
        if p.password.is_some() {
            return Err(format!(
                "[{i}].password: not accepted in an annotation (every node can read Node objects); put the peer in the config file"
            ));
        }
        if !seen.insert(p.address) {
            return Err(format!("[{i}].address: {} is listed twice", p.address));
        }
        p.validate()
            .map_err(|(key, reason)| format!("[{i}].{key}: {reason}"))?;
    }
    Ok(peers)
}

/// One pod on this node, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Its addresses (`status.podIPs`).
    pub ips: Vec<IpAddr>,
    /// It shares the node's network namespace (its IP is the node's).
    pub host_network: bool,
    /// It has finished (Succeeded or Failed): its addresses are released.
    pub terminated: bool,
}

/// What the agent knows of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Every node, by name.
    pub nodes: BTreeMap<String, NodeInfo>,
    /// The pods on this node, by `namespace/name`.
    pub pods: BTreeMap<String, PodInfo>,
}

/// What the agent should have, given the configuration and the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// This node's AS number.
    pub asn: u32,
    /// Pod CIDRs to advertise: the Node's and the file's.
    pub pod_cidrs: BTreeSet<IpNet>,
    /// Every peer: the file's, the node's annotation's and the mesh.
    pub peers: BTreeMap<IpAddr, PeerConfig>,
    /// Host routes for this node's underlay pods known from the cluster (the pod registry adds
    /// its own).
    pub pod_hosts: BTreeSet<IpNet>,
}

impl NodeInfo {
    /// The address other nodes peer with: the first InternalIP of `family_of`'s family, else
    /// the first at all.
    pub fn peer_address(&self, family_of: IpAddr) -> Option<IpAddr> {
        self.addresses
            .iter()
            .find(|a| a.is_ipv4() == family_of.is_ipv4())
            .or(self.addresses.first())
            .copied()
    }
}

/// The desired state of node `me` (with the file `config`, whose `node.name` and
/// `node.router_id` are filled in) in `state`.
pub fn desired(config: &Config, me: &NodeInfo, state: &ClusterState) -> Desired {
    let default_asn = config.node.asn;
    let asn = me.settings.asn.unwrap_or(default_asn);
    // Everything below speaks in our effective AS: mesh peers and "same AS means mesh member"
    // import rules follow the annotation, not the file's default.
    let mut config = config.clone();
    config.node.asn = asn;
    let config = &config;

    let mut nodes: Vec<IpAddr> = config.node_addresses();
    nodes.extend(
        state
            .nodes
            .values()
            .flat_map(|n| n.addresses.iter().copied()),
    );
    nodes.extend(me.addresses.iter().copied());
    nodes.sort();
    nodes.dedup();

    let mut peers = BTreeMap::new();
    // The file's peers first, then the annotation's: an explicit peer wins over the mesh entry
    // for the same address, and the file wins over an annotation.
    for p in config.peers.iter().chain(me.settings.peers.iter()) {
        peers
            .entry(p.address)
            .or_insert_with(|| config.peer_config(p, &nodes));
    }
    if config.cluster.mesh {
        // One filter for every mesh peer: computed once, shared.
        let mesh = Arc::new(config.mesh_filter(&nodes));
        let own = IpAddr::V4(config.node.router_id);
        let same_as = |n: &&NodeInfo| n.settings.asn.unwrap_or(default_asn) == asn;
        let others: Vec<&NodeInfo> = state
            .nodes
            .values()
            .filter(|n| n.name != me.name && !n.addresses.contains(&own))
            .filter(same_as)
            .collect();
        let reflectors = others.iter().any(|n| n.settings.route_reflector);
        // Clients talk only to reflectors; without any reflector the flag would isolate them,
        // so it is ignored (and everyone meshes) until a reflector appears.
        let client =
            |n: &NodeInfo| n.settings.route_reflector_client && !n.settings.route_reflector;
        let i_am_client = client(me) && reflectors;
        let i_reflect = me.settings.route_reflector;
        let any_reflector = reflectors || i_reflect;
        for n in others {
            let they_are_client = client(n) && any_reflector;
            let wanted = if i_am_client {
                n.settings.route_reflector
            } else if they_are_client {
                i_reflect
            } else {
                true
            };
            if !wanted {
                continue;
            }
            let Some(address) = n.peer_address(own) else {
                continue;
            };
            peers
                .entry(address)
                .or_insert_with(|| config.mesh_peer(address, &mesh, i_reflect && they_are_client));
        }
    }

    let mut pod_cidrs: BTreeSet<IpNet> = config.node.pod_cidrs.iter().copied().collect();
    pod_cidrs.extend(me.pod_cidrs.iter().copied());

    let pod_hosts = state
        .pods
        .values()
        .filter(|p| !p.host_network && !p.terminated)
        .flat_map(|p| p.ips.iter())
        .map(|ip| IpNet::from(*ip))
        .filter(|host| !config.cluster.pod_cidrs.iter().any(|c| c.contains(host)))
        .collect();

    Desired {
        asn,
        pod_cidrs,
        peers,
        pod_hosts,
    }
}

#[cfg(test)]
mod tests;
