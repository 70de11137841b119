//! Masquerade (`ipMasq`): SNAT of traffic that enters the host from a pod's veth and leaves it
//! again, so that replies come back through the host (where kube-proxy undoes its DNAT) instead
//! of straight over the underlay to the pod's macvlan address.
//!
//! Owns the nftables table `inet underroute_cni`: one postrouting NAT rule that masquerades
//! packets whose input interface is in the set `masq_ifs`, and that set, one host veth name per
//! attachment with `ipMasq`. Rules never change per pod, only set elements do, so concurrent
//! ADDs and DELs are single nft transactions that cannot interleave badly. Uses the `nft` binary
//! (script on stdin): nftables has no maintained Rust netlink binding, and nft's transaction is
//! exactly the atomicity we want.

use std::io::Write;
use std::process::{Command, Stdio};

use super::error::CniError;

pub const TABLE: &str = "underroute_cni";
pub const SET: &str = "masq_ifs";

/// An `nft -f -` run that has been started and not yet waited for.
pub struct Pending {
    /// `None`: nft is not installed, so there is nothing it could have added.
    child: Option<std::process::Child>,
}

impl Pending {
    /// Waits for nft: (stdout, stderr, success).
    fn finish(self) -> Result<(String, String, bool), CniError> {
        let Some(child) = self.child else {
            return Err(CniError::Nftables("nft is not installed".into()));
        };
        let out = child
            .wait_with_output()
            .map_err(|e| CniError::Nftables(format!("wait for nft: {e}")))?;
        Ok((
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        ))
    }

    /// Waits for a removal started with [`remove_start`]; absent elements are fine.
    pub fn wait_removed(self) -> Result<(), CniError> {
        if self.child.is_none() {
            return Ok(());
        }
        let (_, err, ok) = self.finish()?;
        if ok || err.contains("No such file or directory") {
            Ok(())
        } else {
            Err(CniError::Nftables(err.trim().to_string()))
        }
    }
}

fn nft_start(script: &str) -> Result<Pending, CniError> {
    let spawned = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pending { child: None }),
        Err(e) => return Err(CniError::Nftables(format!("run nft: {e}"))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| CniError::Nftables(format!("write to nft: {e}")))?;
    }
    Ok(Pending { child: Some(child) })
}

fn nft(script: &str) -> Result<(String, String, bool), CniError> {
    nft_start(script)?.finish()
}

/// The script that makes sure the table, set and rule exist and adds `ifname` to the set.
/// The chain is flushed and its one rule re-added in the same transaction, which keeps it
/// idempotent however many ADDs ran before.
pub fn add_script(ifname: &str) -> String {
    format!(
        "add table inet {TABLE}\n\
         add set inet {TABLE} {SET} {{ type ifname; }}\n\
         add chain inet {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain inet {TABLE} postrouting\n\
         add rule inet {TABLE} postrouting iifname @{SET} masquerade\n\
         add element inet {TABLE} {SET} {{ \"{ifname}\" }}\n"
    )
}

/// `add` or `delete` of one set element.
fn element_script(verb: &str, ifname: &str) -> String {
    format!("{verb} element inet {TABLE} {SET} {{ \"{ifname}\" }}\n")
}

/// Adds the attachment's host veth to the masquerade set.
pub fn add(ifname: &str) -> Result<(), CniError> {
    // Fast path: the set exists, so its rule does too (both are made in one transaction).
    // Rewriting the NAT chain on every ADD costs about three times as much as adding an element.
    let (_, _, ok) = nft(&element_script("add", ifname))?;
    if ok {
        return Ok(());
    }
    let (_, err, ok) = nft(&add_script(ifname))?;
    if ok {
        Ok(())
    } else {
        Err(CniError::Nftables(err.trim().to_string()))
    }
}

/// Removes the host veth from the set; absent (or no table at all) is fine.
pub fn remove(ifname: &str) -> Result<(), CniError> {
    remove_start(ifname)?.wait_removed()
}

/// Starts removing the host veth from the set, so DEL can delete the veth meanwhile (both take
/// milliseconds in the kernel, independently).
pub fn remove_start(ifname: &str) -> Result<Pending, CniError> {
    nft_start(&element_script("delete", ifname))
}

/// The interface names in the set (empty when the table does not exist).
pub fn list() -> Result<Vec<String>, CniError> {
    let out = Command::new("nft")
        .args(["-j", "list", "set", "inet", TABLE, SET])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CniError::Nftables(format!("run nft: {e}")))?;
    if !out.status.success() {
        return Ok(Vec::new());
    }
    Ok(parse_set_json(&String::from_utf8_lossy(&out.stdout)))
}

/// The element names of `nft -j list set` output.
pub fn parse_set_json(s: &str) -> Vec<String> {
    let v: serde_json::Value = match serde_json::from_str(s) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    v.get("nftables")
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("set")?.get("elem")?.as_array())
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_script_is_one_idempotent_transaction() {
        let s = add_script("ur0123456789abc");
        assert!(s.contains("flush chain inet underroute_cni postrouting"));
        assert_eq!(s.matches("add rule").count(), 1);
        assert!(s.ends_with("masq_ifs { \"ur0123456789abc\" }\n"));
    }

    #[test]
    fn set_elements_are_read_from_nft_json() {
        let j = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "masq_ifs", "table": "underroute_cni", "type": "ifname", "handle": 1, "elem": ["ur1", "ur2"]}}]}"#;
        assert_eq!(parse_set_json(j), ["ur1", "ur2"]);
        assert!(parse_set_json("garbage").is_empty());
    }
}
