//! The plugin's network configuration (stdin), decoded and validated without touching the
//! system. A config error names the field and the bad value (CNI code 7).

use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use super::error::CniError;
use super::protocol::check_ifname;

/// Where the pod registry lives unless the config says otherwise.
pub const DEFAULT_REGISTRY_DIR: &str = "/run/underroute/pods";
/// The container-side veth name unless the config says otherwise.
pub const DEFAULT_CONTAINER_INTERFACE: &str = "ur0";

/// How the pod reaches the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A veth pair to the host (macvlan/ipvlan pods, whose parent cannot talk to them).
    Veth,
    /// Routes via the host's address on the pod's own interface (bridge pods).
    Route,
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The JSON as written by the user and the runtime, before validation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(default, rename = "serviceCIDRs")]
    service_cidrs: Option<Vec<String>>,
    #[serde(default, rename = "extraCIDRs")]
    extra_cidrs: Vec<String>,
    #[serde(default)]
    host_interface: Option<String>,
    #[serde(default)]
    container_interface: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    registry_dir: Option<PathBuf>,
    #[serde(default)]
    log_file: Option<PathBuf>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub mode: Mode,
    /// Service (ClusterIP) ranges, sent via the host. Never empty.
    pub service_cidrs: Vec<IpNet>,
    /// More ranges sent via the host: cluster pod CIDRs, node-local DNS.
    pub extra_cidrs: Vec<IpNet>,
    /// The host interface whose address is the pod's next hop; `None`: the default route's.
    pub host_interface: Option<String>,
    pub container_interface: String,
    /// veth MTU; `None`: the host interface's.
    pub mtu: Option<u32>,
    pub ip_masq: bool,
    pub registry_dir: PathBuf,
    pub log_file: Option<PathBuf>,
    /// What the earlier plugins of the chain returned, untouched.
    pub prev_result: Option<Value>,
    /// GC only: the attachments the runtime still has.
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Just the version, for error replies when the rest of the config does not decode.
pub fn sniff_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// Whether `serviceCIDRs` must be present: only ADD/CHECK use it (DEL, GC and STATUS must work
/// with whatever config the runtime still has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Routes,
    Minimal,
}

impl NetConf {
    /// Decodes (code 6 on bad JSON) and validates (code 7 on bad values).
    pub fn parse(stdin: &[u8], need: Need) -> Result<NetConf, CniError> {
        let raw: RawConf =
            serde_json::from_slice(stdin).map_err(|e| CniError::Decode(e.to_string()))?;
        let service_cidrs = match (raw.service_cidrs, need) {
            (Some(v), _) => parse_cidrs("serviceCIDRs", &v)?,
            (None, Need::Minimal) => Vec::new(),
            (None, Need::Routes) => return Err(CniError::config("serviceCIDRs", "required")),
        };
        if service_cidrs.is_empty() && need == Need::Routes {
            return Err(CniError::config("serviceCIDRs", "must not be empty"));
        }
        let extra_cidrs = parse_cidrs("extraCIDRs", &raw.extra_cidrs)?;
        let container_interface = raw
            .container_interface
            .unwrap_or_else(|| DEFAULT_CONTAINER_INTERFACE.to_string());
        check_ifname(&container_interface)
            .map_err(|why| CniError::config("containerInterface", why))?;
        if let Some(h) = &raw.host_interface {
            check_ifname(h).map_err(|why| CniError::config("hostInterface", why))?;
        }
        if let Some(m) = raw.mtu {
            if !(68..=65535).contains(&m) {
                return Err(CniError::config("mtu", format!("{m} is outside 68-65535")));
            }
        }
        if raw.prev_result.as_ref().is_some_and(|p| !p.is_object()) {
            return Err(CniError::Decode("prevResult is not an object".into()));
        }
        Ok(NetConf {
            cni_version: raw.cni_version,
            name: raw.name,
            mode: raw.mode.unwrap_or(Mode::Veth),
            service_cidrs,
            extra_cidrs,
            host_interface: raw.host_interface,
            container_interface,
            mtu: raw.mtu,
            ip_masq: raw.ip_masq,
            registry_dir: raw
                .registry_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTRY_DIR)),
            log_file: raw.log_file,
            prev_result: raw.prev_result,
            valid_attachments: raw.valid_attachments,
        })
    }

    /// Every range sent via the host (service ranges first), without duplicates.
    pub fn via_host_cidrs(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = Vec::new();
        for c in self.service_cidrs.iter().chain(&self.extra_cidrs) {
            if !out.contains(c) {
                out.push(*c);
            }
        }
        out
    }
}

/// Parses CIDRs, refusing host bits: `10.96.0.1/12` is almost always a typo for a range.
fn parse_cidrs(field: &str, v: &[String]) -> Result<Vec<IpNet>, CniError> {
    v.iter()
        .enumerate()
        .map(|(i, s)| {
            let f = format!("{field}[{i}]");
            let n: IpNet = s
                .parse()
                .map_err(|e| CniError::config(&f, format!("{s:?}: {e}")))?;
            if n.trunc() != n {
                return Err(CniError::config(
                    &f,
                    format!("{s:?} has host bits set (the range is {})", n.trunc()),
                ));
            }
            Ok(n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes(), Need::Routes)
    }

    #[test]
    fn minimal_config_defaults_to_veth_mode() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"u","type":"underroute-cni","serviceCIDRs":["10.96.0.0/12"]}"#).unwrap();
        assert_eq!(c.mode, Mode::Veth);
        assert_eq!(c.container_interface, "ur0");
        assert_eq!(c.registry_dir, PathBuf::from(DEFAULT_REGISTRY_DIR));
        assert!(!c.ip_masq);
    }

    #[test]
    fn service_cidrs_are_required_for_add_but_not_for_del() {
        let s = r#"{"cniVersion":"1.0.0","name":"u"}"#;
        assert_eq!(parse(s).unwrap_err().code(), 7);
        assert!(NetConf::parse(s.as_bytes(), Need::Minimal).is_ok());
    }

    #[test]
    fn cidr_with_host_bits_names_the_field_and_the_range() {
        let e = parse(r#"{"cniVersion":"1.0.0","serviceCIDRs":["10.96.0.1/12"]}"#).unwrap_err();
        assert_eq!(e.code(), 7);
        let s = e.to_string();
        assert!(
            s.contains("serviceCIDRs[0]") && s.contains("10.96.0.0/12"),
            "{s}"
        );
    }

    #[test]
    fn garbage_is_a_decode_error_and_bad_values_are_config_errors() {
        assert_eq!(parse("{not json").unwrap_err().code(), 6);
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","serviceCIDRs":["x"]}"#)
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","serviceCIDRs":["10.96.0.0/12"],"mode":"tunnel"}"#)
                .unwrap_err()
                .code(),
            6
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","serviceCIDRs":["10.96.0.0/12"],"mtu":20}"#)
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            parse(r#"{"cniVersion":"1.0.0","serviceCIDRs":["10.96.0.0/12"],"containerInterface":"a/b"}"#)
                .unwrap_err()
                .code(),
            7
        );
    }

    #[test]
    fn via_host_cidrs_merge_service_and_extra_ranges_once() {
        let c = parse(r#"{"cniVersion":"1.0.0","serviceCIDRs":["10.96.0.0/12"],"extraCIDRs":["10.244.0.0/16","10.96.0.0/12"]}"#).unwrap();
        assert_eq!(c.via_host_cidrs().len(), 2);
    }

    #[test]
    fn gc_config_lists_valid_attachments() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
            Need::Minimal,
        )
        .unwrap();
        assert_eq!(c.valid_attachments.map(|v| v.len()), Some(1));
    }
}
