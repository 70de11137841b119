//! Errors of the plugin, each mapped to a CNI error code.
//!
//! Codes 1-99 are the spec's reserved ones (SPEC.md "Error"); ours start at 100. The mapping is the
//! contract with the runtime: 11 ("try again later") makes it retry, the others are final.

use serde_json::json;

/// Everything that can make a plugin invocation fail.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The configuration asks for a CNI version this plugin does not speak (code 1).
    #[error("incompatible CNI version {0}")]
    IncompatibleVersion(String),
    /// A field this plugin cannot honour (code 2).
    #[error("unsupported field {field}: {why}")]
    UnsupportedField { field: String, why: String },
    /// The container or its network namespace does not exist (code 3).
    #[error("container unknown: {0}")]
    ContainerUnknown(String),
    /// A required CNI_* environment variable is missing or malformed (code 4).
    #[error("invalid environment variable {var}: {why}")]
    InvalidEnv { var: &'static str, why: String },
    /// Reading stdin, a file or the registry failed (code 5).
    #[error("I/O failure: {0}")]
    Io(String),
    /// stdin is not the JSON the spec describes (code 6).
    #[error("failed to decode the network configuration: {0}")]
    Decode(String),
    /// The configuration decodes but a field is invalid (code 7).
    #[error("invalid network configuration: field {field}: {why}")]
    InvalidConfig { field: String, why: String },
    /// A transient condition, e.g. the host interface is not up yet (code 11).
    #[error("try again later: {0}")]
    TryAgain(String),
    /// STATUS: the plugin cannot serve ADDs now (code 50).
    #[error("plugin not available: {0}")]
    NotAvailable(String),
    /// A netlink request failed while changing the pod or the host (code 100).
    #[error("netlink: {0}")]
    Netlink(String),
    /// Something this plugin wants to create already exists, e.g. a pod route that the main
    /// plugin made for the same destination (code 101).
    #[error("already exists: {0}")]
    Exists(String),
    /// Running or talking to `nft` failed (code 102).
    #[error("nftables: {0}")]
    Nftables(String),
    /// The host side has no address to use as the pod's next hop (code 103).
    #[error("no usable host address: {0}")]
    NoHostAddress(String),
    /// CHECK found the attachment differs from what ADD made (code 104).
    #[error("check failed: {0}")]
    CheckFailed(String),
}

impl CniError {
    /// The CNI error code (SPEC.md "Error": 1-99 reserved, 100+ plugin-specific).
    pub fn code(&self) -> u32 {
        match self {
            CniError::IncompatibleVersion(_) => 1,
            CniError::UnsupportedField { .. } => 2,
            CniError::ContainerUnknown(_) => 3,
            CniError::InvalidEnv { .. } => 4,
            CniError::Io(_) => 5,
            CniError::Decode(_) => 6,
            CniError::InvalidConfig { .. } => 7,
            CniError::TryAgain(_) => 11,
            CniError::NotAvailable(_) => 50,
            CniError::Netlink(_) => 100,
            CniError::Exists(_) => 101,
            CniError::Nftables(_) => 102,
            CniError::NoHostAddress(_) => 103,
            CniError::CheckFailed(_) => 104,
        }
    }

    /// A short fixed message per kind (the spec's `msg`); the details go to `details`.
    fn msg(&self) -> &'static str {
        match self {
            CniError::IncompatibleVersion(_) => "incompatible CNI version",
            CniError::UnsupportedField { .. } => "unsupported field in network configuration",
            CniError::ContainerUnknown(_) => "container unknown or does not exist",
            CniError::InvalidEnv { .. } => "invalid necessary environment variables",
            CniError::Io(_) => "I/O failure",
            CniError::Decode(_) => "failed to decode content",
            CniError::InvalidConfig { .. } => "invalid network config",
            CniError::TryAgain(_) => "try again later",
            CniError::NotAvailable(_) => "plugin not available",
            CniError::Netlink(_) => "netlink request failed",
            CniError::Exists(_) => "object already exists",
            CniError::Nftables(_) => "nftables update failed",
            CniError::NoHostAddress(_) => "no usable host address",
            CniError::CheckFailed(_) => "attachment check failed",
        }
    }

    /// The error object the spec wants on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.msg(),
            "details": self.to_string(),
        })
    }

    /// Shorthand for [`CniError::InvalidConfig`].
    pub fn config(field: impl Into<String>, why: impl Into<String>) -> CniError {
        CniError::InvalidConfig {
            field: field.into(),
            why: why.into(),
        }
    }
}

impl From<rtnetlink::Error> for CniError {
    fn from(e: rtnetlink::Error) -> CniError {
        CniError::Netlink(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_codes_follow_the_spec_table() {
        assert_eq!(CniError::IncompatibleVersion("9".into()).code(), 1);
        assert_eq!(
            CniError::InvalidEnv {
                var: "CNI_IFNAME",
                why: "unset".into()
            }
            .code(),
            4
        );
        assert_eq!(CniError::Decode("x".into()).code(), 6);
        assert_eq!(CniError::config("mode", "bad").code(), 7);
        assert_eq!(CniError::TryAgain("x".into()).code(), 11);
        assert!(CniError::Netlink("x".into()).code() >= 100);
    }

    #[test]
    fn error_json_carries_version_code_msg_and_details() {
        let v = CniError::config("serviceCIDRs", "missing").to_json("1.1.0");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "invalid network config");
        assert!(v["details"]
            .as_str()
            .is_some_and(|d| d.contains("serviceCIDRs")));
    }
}
