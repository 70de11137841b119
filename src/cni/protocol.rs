//! The CNI protocol (spec 0.4.0 to 1.1.0) as pure functions: the environment, the versions, the
//! pieces of `prevResult` this plugin reads, and the result it writes.
//!
//! `prevResult` stays raw JSON: a chained plugin must pass on what earlier plugins reported,
//! including fields it does not know, and only append its own interfaces.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{json, Value};

use super::error::CniError;

/// The versions this plugin accepts in `cniVersion` (VERSION reports them).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

/// What the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }
}

/// The `CNI_*` environment of one invocation, validated for the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Absent for DEL when the runtime no longer has the namespace, and for VERSION/STATUS/GC.
    pub netns: Option<String>,
    pub ifname: String,
}

impl Env {
    /// Reads the variables the spec defines from `vars` (the process environment, or a map in
    /// tests). ADD and CHECK need a container id, a netns and an interface name; DEL may lack the
    /// netns; VERSION, STATUS and GC need only the command.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Env, CniError> {
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let cmd_s = get("CNI_COMMAND").ok_or(CniError::InvalidEnv {
            var: "CNI_COMMAND",
            why: "not set".into(),
        })?;
        let command = Command::parse(cmd_s).ok_or_else(|| CniError::InvalidEnv {
            var: "CNI_COMMAND",
            why: format!("unknown command {cmd_s:?}"),
        })?;
        let needs_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |var: &'static str| -> Result<String, CniError> {
            match get(var) {
                Some(v) => Ok(v.to_string()),
                None if needs_attachment => Err(CniError::InvalidEnv {
                    var,
                    why: format!("required for {cmd_s}"),
                }),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID")?;
        let ifname = required("CNI_IFNAME")?;
        if needs_attachment {
            check_container_id(&container_id)?;
            check_ifname(&ifname).map_err(|why| CniError::InvalidEnv {
                var: "CNI_IFNAME",
                why,
            })?;
        }
        let netns = get("CNI_NETNS").map(str::to_string);
        if netns.is_none() && matches!(command, Command::Add | Command::Check) {
            return Err(CniError::InvalidEnv {
                var: "CNI_NETNS",
                why: format!("required for {cmd_s}"),
            });
        }
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
        })
    }
}

/// The spec's container id rule: alphanumerics plus `_ . -`, starting with an alphanumeric.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::InvalidEnv {
            var: "CNI_CONTAINERID",
            why: format!("{id:?} is not [A-Za-z0-9][A-Za-z0-9_.-]*"),
        })
    }
}

/// A Linux interface name: 1-15 bytes, no `/`, whitespace or `:`, not `.` or `..`.
pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} must be 1-15 bytes long"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid interface name"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{name:?} contains '/', ':' or whitespace"));
    }
    Ok(())
}

/// Whether `v` is a version we speak; the error is the spec's code 1.
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::IncompatibleVersion(format!(
            "{v} (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        )))
    }
}

/// Whether `v` has a given command at all (CHECK from 0.4.0, STATUS and GC from 1.1.0).
pub fn version_has(v: &str, cmd: Command) -> bool {
    match cmd {
        Command::Status | Command::Gc => v == "1.1.0",
        _ => true,
    }
}

/// The answer to VERSION.
pub fn version_reply(requested: Option<&str>) -> Value {
    json!({
        "cniVersion": requested.unwrap_or("1.1.0"),
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

/// One address the earlier plugins gave the container, with the interface it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddr {
    /// Address and prefix as reported (`10.10.20.50/24`).
    pub addr: IpNet,
    /// Name of the container interface holding it, when the result says.
    pub ifname: Option<String>,
}

/// The addresses in a `prevResult` (the `ips` array; `interface` indexes `interfaces`).
pub fn prev_ips(prev: &Value) -> Result<Vec<PodAddr>, CniError> {
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(CniError::Decode("prevResult.ips is not an array".into())),
    };
    let ifaces = prev.get("interfaces").and_then(Value::as_array);
    let mut out = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let s = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| CniError::Decode(format!("prevResult.ips[{i}].address missing")))?;
        let addr: IpNet = s
            .parse()
            .map_err(|e| CniError::Decode(format!("prevResult.ips[{i}].address {s:?}: {e}")))?;
        let ifname = ip
            .get("interface")
            .and_then(Value::as_u64)
            .and_then(|idx| ifaces?.get(usize::try_from(idx).ok()?))
            .and_then(|iface| iface.get("name"))
            .and_then(Value::as_str)
            .map(str::to_string);
        out.push(PodAddr { addr, ifname });
    }
    Ok(out)
}

/// One interface this plugin reports: `sandbox` is the netns path for container-side ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: Option<String>,
}

/// The result of ADD: `prevResult` (or an empty result) with `interfaces` appended and
/// `cniVersion` set to the configuration's. Addresses, routes and DNS pass through unchanged:
/// the veth carries no address of its own.
pub fn build_result(cni_version: &str, prev: Option<&Value>, ours: &[Interface]) -> Value {
    let mut out = match prev {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => json!({}),
    };
    if let Value::Object(m) = &mut out {
        m.insert("cniVersion".into(), json!(cni_version));
        let list = m.entry("interfaces").or_insert_with(|| json!([]));
        if !list.is_array() {
            *list = json!([]);
        }
        if let Value::Array(a) = list {
            for i in ours {
                let mut v = json!({ "name": i.name, "mac": i.mac });
                if let Some(s) = &i.sandbox {
                    v["sandbox"] = json!(s);
                }
                a.push(v);
            }
        }
    }
    out
}

/// Formats a MAC the way CNI results do (`aa:bb:cc:dd:ee:ff`).
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The pod addresses as host addresses (prefix dropped), deduplicated, in order.
pub fn host_routes_for(addrs: &[PodAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for a in addrs {
        if !out.contains(&a.addr.addr()) {
            out.push(a.addr.addr());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn add_requires_container_id_netns_and_ifname() {
        let e =
            Env::from_vars(&vars(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(e.code(), 4);
        let e = Env::from_vars(&vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("CNI_NETNS"));
    }

    #[test]
    fn del_may_lack_the_netns() {
        let env = Env::from_vars(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(env.netns, None);
    }

    #[test]
    fn version_needs_nothing_but_the_command() {
        let env = Env::from_vars(&vars(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(env.command, Command::Version);
        assert_eq!(
            Env::from_vars(&vars(&[("CNI_COMMAND", "FROB")]))
                .unwrap_err()
                .code(),
            4
        );
        assert_eq!(Env::from_vars(&vars(&[])).unwrap_err().code(), 4);
    }

    #[test]
    fn container_ids_and_ifnames_follow_the_spec_rules() {
        let bad_id = Env::from_vars(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "../etc"),
            ("CNI_IFNAME", "eth0"),
        ]));
        assert_eq!(bad_id.unwrap_err().code(), 4);
        assert!(check_ifname("eth0").is_ok());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("0123456789abcdef").is_err());
    }

    #[test]
    fn status_and_gc_exist_from_1_1_0() {
        assert!(version_has("1.1.0", Command::Gc));
        assert!(!version_has("1.0.0", Command::Status));
        assert!(version_has("0.4.0", Command::Check));
        assert_eq!(check_version("0.2.0").unwrap_err().code(), 1);
    }

    #[test]
    fn prev_ips_resolve_their_interface_names() {
        let prev = json!({
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.10.20.50/24", "interface": 0},
                    {"address": "fd00::5/64"}]
        });
        let ips = prev_ips(&prev).unwrap();
        assert_eq!(ips[0].addr, "10.10.20.50/24".parse::<IpNet>().unwrap());
        assert_eq!(ips[0].ifname.as_deref(), Some("eth0"));
        assert_eq!(ips[1].ifname, None);
        assert_eq!(
            prev_ips(&json!({"ips": [{"address": "nope"}]}))
                .unwrap_err()
                .code(),
            6
        );
    }

    #[test]
    fn result_keeps_prev_fields_and_appends_our_interfaces() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0"}],
            "ips": [{"address": "10.10.20.50/24", "interface": 0}],
            "dns": {"nameservers": ["10.96.0.10"]},
            "x-unknown": 1
        });
        let r = build_result(
            "1.1.0",
            Some(&prev),
            &[Interface {
                name: "ur0".into(),
                mac: "02:00:00:00:00:01".into(),
                sandbox: Some("/run/netns/p".into()),
            }],
        );
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["interfaces"].as_array().map(Vec::len), Some(2));
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/p");
        assert_eq!(r["ips"], prev["ips"]);
        assert_eq!(r["x-unknown"], 1);
    }
}
