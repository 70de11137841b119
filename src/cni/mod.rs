//! `underroute-cni`: a chained CNI plugin that lets underlay pods (macvlan, ipvlan, bridge+dhcp)
//! reach Service ClusterIPs, which only exist in the host's kube-proxy rules.
//!
//! Owns, per attachment: in veth mode, the host veth `urXXXXXXXXXXXXX` (and with it the pod
//! veth, the routes and neighbour entries through them) and its element in the masquerade set;
//! in route mode, the via-host routes in the pod; in both, the attachment's pod registry file.
//! It never changes the main plugin's interface beyond its rp_filter, nor any host route it did
//! not create.
//!
//! ```text
//!  runtime ─ env CNI_* + stdin config ─▶ run() ─▶ protocol (env, versions, result)
//!                                           ├──▶ config (decode, validate)      pure
//!                                           ├──▶ plan (names, next hops, routes) pure
//!                                           └──▶ veth | route, host, masq, registry   I/O
//! ```
//! Every command's reply is built here: a result or the spec's error JSON on stdout, and the
//! exit code. Logs go to stderr (or `logFile`), never stdout.

pub mod config;
pub mod error;
pub mod host;
pub mod install;
pub mod masq;
pub mod netlink;
pub mod plan;
pub mod protocol;
pub mod route;
pub mod veth;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::podregistry::{PodRecord, PodRegistry};
use config::{Mode, Need, NetConf};
use error::CniError;
use netlink::Netlink;
use protocol::{Command, Env};

/// The route protocol number of the host routes to pods.
pub const ROUTE_PROTOCOL: u8 = crate::DEFAULT_ROUTE_PROTOCOL;

/// What the binary prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// JSON for stdout, if any (STATUS and DEL print nothing on success).
    pub stdout: Option<String>,
    pub exit_code: i32,
}

/// Runs one invocation: `vars` is the environment, `stdin` the network configuration.
pub fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Reply {
    let version = config::sniff_version(stdin).unwrap_or_else(|| "1.1.0".to_string());
    match dispatch(vars, stdin) {
        Ok(out) => Reply {
            stdout: out.map(|v| v.to_string()),
            exit_code: 0,
        },
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "underroute-cni failed");
            Reply {
                stdout: Some(e.to_json(&version).to_string()),
                exit_code: 1,
            }
        }
    }
}

fn dispatch(vars: &HashMap<String, String>, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let env = Env::from_vars(vars)?;
    if env.command == Command::Version {
        // VERSION may come with just {"cniVersion": ...} or nothing at all.
        let requested = config::sniff_version(stdin);
        return Ok(Some(protocol::version_reply(requested.as_deref())));
    }
    let need = match env.command {
        Command::Add | Command::Check => Need::Routes,
        _ => Need::Minimal,
    };
    let conf = NetConf::parse(stdin, need)?;
    protocol::check_version(&conf.cni_version)?;
    if !protocol::version_has(&conf.cni_version, env.command) {
        return Err(CniError::IncompatibleVersion(format!(
            "{:?} needs cniVersion 1.1.0, config has {}",
            env.command, conf.cni_version
        )));
    }
    let reg = PodRegistry::new(&conf.registry_dir);
    match env.command {
        Command::Add => cmd_add(&env, &conf, &reg).map(Some),
        Command::Del => cmd_del(&env, &conf, &reg).map(|()| None),
        Command::Check => cmd_check(&env, &conf, &reg).map(|()| None),
        Command::Gc => cmd_gc(&conf, &reg).map(|()| None),
        Command::Status => cmd_status(&conf, &reg).map(|()| None),
        Command::Version => Ok(None),
    }
}

fn reg_err(e: crate::podregistry::RegistryError) -> CniError {
    CniError::Io(e.to_string())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn build_plan(
    env: &Env,
    conf: &NetConf,
    host_nl: &Netlink,
) -> Result<(plan::Plan, host::HostView, Vec<protocol::PodAddr>), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::config(
            "prevResult",
            "missing: underroute-cni must be chained after the plugin that gives the pod its address",
        )
    })?;
    let pod = protocol::prev_ips(prev)?;
    let view = host::discover(host_nl, conf)?;
    let p = plan::plan(
        conf,
        &env.container_id,
        &env.ifname,
        &pod,
        &view.addrs,
        &view.host_if.name,
    )?;
    Ok((p, view, pod))
}

fn netns_of(env: &Env) -> Result<&str, CniError> {
    env.netns.as_deref().ok_or(CniError::InvalidEnv {
        var: "CNI_NETNS",
        why: "required".into(),
    })
}

fn cmd_add(env: &Env, conf: &NetConf, reg: &PodRegistry) -> Result<Value, CniError> {
    let netns = netns_of(env)?;
    let host_nl = Netlink::current()?;
    let (p, view, pod) = build_plan(env, conf, &host_nl)?;
    let pod_nl = Netlink::in_netns(Path::new(netns))?;
    let mut created_veth = false;
    let mut masq_added = false;
    let mut routes_added = false;
    let res = (|| -> Result<Value, CniError> {
        let ours = match p.mode {
            Mode::Veth => {
                let mtu = conf.mtu.unwrap_or(view.host_if.mtu);
                let made = veth::add(
                    &host_nl,
                    &pod_nl,
                    Path::new(netns),
                    &env.ifname,
                    &p,
                    mtu,
                    &mut created_veth,
                )?;
                if conf.ip_masq {
                    masq_added = true;
                    masq::add(&p.host_veth)?;
                }
                veth::interfaces(&made, netns)
            }
            Mode::Route => {
                route::add(&pod_nl, &p)?;
                routes_added = true;
                Vec::new()
            }
        };
        reg.record(&PodRecord {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
            netns: netns.to_string(),
            ips: pod.iter().map(|a| a.addr).collect(),
            mode: p.mode,
            host_veth: (p.mode == Mode::Veth).then(|| p.host_veth.clone()),
            created_unix: now_unix(),
        })
        .map_err(reg_err)?;
        Ok(protocol::build_result(
            &conf.cni_version,
            conf.prev_result.as_ref(),
            &ours,
        ))
    })();
    if let Err(e) = &res {
        // Leave nothing behind, whether or not the runtime follows up with a DEL.
        tracing::warn!(error = %e, container = %env.container_id, "ADD failed, rolling back");
        if masq_added {
            let _ = masq::remove(&p.host_veth);
        }
        if created_veth {
            if let Ok(Some(l)) = host_nl.link(&p.host_veth) {
                let _ = host_nl.del_link(l.index);
            }
        }
        if routes_added {
            // route::add undoes its own partial work; this is for a failure after it.
            let _ = route::remove_planned(&pod_nl, &p);
        }
        // The registry write is the last step and atomic: if it failed there is no file of ours,
        // and a file that exists belongs to an earlier, successful ADD of this attachment.
    }
    res
}

fn cmd_del(env: &Env, conf: &NetConf, reg: &PodRegistry) -> Result<(), CniError> {
    let name = plan::host_veth_name(&env.container_id, &env.ifname);
    let alias = plan::host_veth_alias(&env.container_id, &env.ifname);
    let record = reg.get(&env.container_id, &env.ifname).unwrap_or(None);
    let mode = record.as_ref().map(|r| r.mode).unwrap_or(conf.mode);
    let masq = if conf.ip_masq {
        Some(masq::remove_start(&name)?)
    } else {
        None
    };
    let host_nl = Netlink::current()?;
    if let Some(l) = host_nl.link(&name)? {
        if host::is_ours(&l, &alias) {
            host_nl.del_link(l.index)?;
        }
    }
    if let Some(m) = masq {
        m.wait_removed()?;
    }
    if mode == Mode::Route {
        // The pod may already be gone: then so are its routes.
        if let Some(ns) = env.netns.as_deref().filter(|n| Path::new(n).exists()) {
            match Netlink::in_netns(Path::new(ns)) {
                Ok(pod_nl) => {
                    let dev = conf
                        .prev_result
                        .as_ref()
                        .and_then(|p| protocol::prev_ips(p).ok())
                        .and_then(|ips| ips.into_iter().find_map(|a| a.ifname))
                        .unwrap_or_else(|| env.ifname.clone());
                    route::del(&pod_nl, &dev, conf)?;
                }
                Err(CniError::ContainerUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    reg.remove(&env.container_id, &env.ifname).map_err(reg_err)
}

fn cmd_check(env: &Env, conf: &NetConf, reg: &PodRegistry) -> Result<(), CniError> {
    let netns = netns_of(env)?;
    let host_nl = Netlink::current()?;
    let (p, _, _) = build_plan(env, conf, &host_nl)?;
    let pod_nl = Netlink::in_netns(Path::new(netns))?;
    let mut missing = match p.mode {
        Mode::Veth => veth::check(&host_nl, Some(&pod_nl), &p, ROUTE_PROTOCOL)?,
        Mode::Route => route::check(&pod_nl, &p)?,
    };
    if reg
        .get(&env.container_id, &env.ifname)
        .map_err(reg_err)?
        .is_none()
    {
        missing.push(format!(
            "pod registry file {}",
            reg.path_of(&env.container_id, &env.ifname)
                .map_err(reg_err)?
                .display()
        ));
    }
    if p.mode == Mode::Veth && conf.ip_masq && !masq::list()?.contains(&p.host_veth) {
        missing.push(format!("masquerade set element {}", p.host_veth));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CniError::CheckFailed(format!(
            "missing: {}",
            missing.join("; ")
        )))
    }
}

fn cmd_gc(conf: &NetConf, reg: &PodRegistry) -> Result<(), CniError> {
    let valid: HashSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let valid_veths: HashSet<String> = valid
        .iter()
        .map(|(c, i)| plan::host_veth_name(c, i))
        .collect();
    let host_nl = Netlink::current()?;
    for (l, c, i) in host::our_links(&host_nl)? {
        if !valid.contains(&(c.clone(), i.clone())) {
            tracing::info!(link = %l.name, container = %c, ifname = %i, "GC: deleting stale veth");
            host_nl.del_link(l.index)?;
        }
    }
    for r in reg.list().map_err(reg_err)? {
        if !valid.contains(&(r.container_id.clone(), r.ifname.clone())) {
            if let Some(v) = &r.host_veth {
                if let Some(l) = host_nl.link(v)? {
                    if l.alias.is_none() && l.name.starts_with(plan::HOST_VETH_PREFIX) {
                        host_nl.del_link(l.index)?;
                    }
                }
            }
            reg.remove(&r.container_id, &r.ifname).map_err(reg_err)?;
        }
    }
    for el in masq::list()? {
        if !valid_veths.contains(&el) {
            masq::remove(&el)?;
        }
    }
    Ok(())
}

fn cmd_status(_conf: &NetConf, reg: &PodRegistry) -> Result<(), CniError> {
    std::fs::create_dir_all(reg.dir()).map_err(|e| {
        CniError::NotAvailable(format!("pod registry {}: {e}", reg.dir().display()))
    })?;
    let probe = reg.dir().join(format!(".status.{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| {
        CniError::NotAvailable(format!(
            "pod registry {} not writable: {e}",
            reg.dir().display()
        ))
    })?;
    let _ = std::fs::remove_file(&probe);
    Netlink::current().map_err(|e| CniError::NotAvailable(format!("netlink: {e}")))?;
    Ok(())
}
