//! The `underroute` node agent as a library: what the binary is made of.
//!
//! - [`agent`]: the node agent (standalone from a config file).
//! - [`api`]: the GoBGP-compatible gRPC API the agent serves.
//! - [`cli`]: `underroute global|neighbor`, gobgp's commands and output over that API.
//! - [`cni`]: `underroute-cni`, the chained CNI plugin (service routes for underlay pods).
//! - [`config`]: the agent's TOML configuration, strict and with errors that name the key.
//! - [`kernel`]: the kernel route programmer (main and per-address tables, rules, self-heal).
//! - [`podregistry`]: the pod records the CNI plugin writes and the agent advertises.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod cni;
pub mod config;
pub mod diagnose;
pub mod kernel;
pub mod metrics;
pub mod podregistry;

/// The route protocol number (`rtm_protocol`, `ip route ... proto N`) that marks kernel routes
/// and policy rules as underroute's. The kernel programmer owns exactly what carries it and never
/// touches anything else; the CNI plugin tags the host routes it makes with it so the agent
/// copies them into the per-address tables.
///
/// 201 is unused by the daemons a node is likely to run: the kernel, boot and static use 2-4,
/// zebra 11, BIRD 12, kube-router 17, keepalived 18, babel 42, Calico 80, Open/R 99, FRR 186-192.
/// It is configurable (`[kernel] route_protocol`) for sites where 201 is taken.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 201;
