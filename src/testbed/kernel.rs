//! The kernel programmer running inside a testbed namespace, and `ip` helpers to look at and
//! disturb that namespace's routes and rules from the outside.
//!
//! The programmer's sockets are opened on a runtime whose threads entered the namespace, so it
//! can only ever see and change that namespace's tables, never the host's.

use std::future::Future;
use std::time::Duration;

use crate::kernel::{DesiredRoutes, Handle, KernelConfig, Programmer, Report, Snapshot};

use super::netns::Netns;
use super::speaker::runtime_in;

/// A kernel [`Programmer`] whose netlink sockets live in a testbed namespace.
pub struct NsProgrammer {
    /// The handle.
    pub handle: Handle,
    rt: tokio::runtime::Runtime,
}

impl NsProgrammer {
    /// Starts a programmer in `ns`.
    pub fn start(ns: &Netns, config: KernelConfig) -> Result<NsProgrammer, String> {
        let rt = runtime_in(ns)?;
        let handle = rt
            .block_on(rt.spawn(async move { Programmer::start(config) }))
            .map_err(|e| format!("programmer task: {e}"))?
            .map_err(|e| format!("programmer start: {e}"))?;
        Ok(NsProgrammer { handle, rt })
    }

    /// Runs a future on the programmer's runtime (inside the namespace) and waits for it.
    pub fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt
            .block_on(self.rt.spawn(fut))
            .expect("task on the programmer runtime panicked")
    }

    /// `set_routes`, waited for.
    pub fn set_routes(&self, routes: DesiredRoutes) -> Result<Report, String> {
        let h = self.handle.clone();
        self.run(async move { h.set_routes(routes).await })
            .map_err(|e| e.to_string())
    }

    /// `snapshot`, waited for.
    pub fn snapshot(&self) -> Result<Snapshot, String> {
        let h = self.handle.clone();
        self.run(async move { h.snapshot().await })
            .map_err(|e| e.to_string())
    }

    /// `resync`, waited for.
    pub fn resync(&self) -> Result<Report, String> {
        let h = self.handle.clone();
        self.run(async move { h.resync().await })
            .map_err(|e| e.to_string())
    }

    /// Stops the programmer (routes stay) and its runtime.
    pub fn shutdown(self) -> Result<(), String> {
        let h = self.handle.clone();
        let r = self.run(async move { h.shutdown().await });
        self.rt.shutdown_timeout(Duration::from_secs(2));
        r.map_err(|e| e.to_string())
    }
}

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
