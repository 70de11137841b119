//! `ip` helpers to look at a testbed namespace's routes and rules from the outside.

use super::netns::Netns;

/// `ip [-6] route show table T [proto P]` lines in `ns`, each trimmed.
pub fn ip_routes(
    ns: &Netns,
    v6: bool,
    table: &str,
    proto: Option<u8>,
) -> Result<Vec<String>, String> {
    let mut args = vec!["ip"];
    if v6 {
        args.push("-6");
    }
    args.extend(["route", "show", "table", table]);
    let p;
    if let Some(n) = proto {
        p = n.to_string();
        args.extend(["proto", p.as_str()]);
    }
    let out = ns.exec_stdout(&args)?;
    Ok(out
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// `ip [-6] rule show` lines in `ns`.
pub fn ip_rules(ns: &Netns, v6: bool) -> Result<Vec<String>, String> {
    let args: &[&str] = if v6 {
        &["ip", "-6", "rule", "show"]
    } else {
        &["ip", "rule", "show"]
    };
    let out = ns.exec_stdout(args)?;
    Ok(out.lines().map(|l| l.trim().to_string()).collect())
}

/// Number of routes of protocol `proto` in `table` (both families), counted by `ip`.
pub fn count_routes(ns: &Netns, table: &str, proto: u8) -> Result<usize, String> {
    Ok(ip_routes(ns, false, table, Some(proto))?.len()
        + ip_routes(ns, true, table, Some(proto))?.len())
}
