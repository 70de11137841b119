//! The kernel programmer running inside a testbed namespace, for the kernel tests.
//!
//! The programmer's sockets are opened on a runtime whose threads entered the namespace, so it
//! can only ever see and change that namespace's tables, never the host's.

use std::future::Future;
use std::time::Duration;

use underroute::kernel::{DesiredRoutes, Handle, KernelConfig, Programmer, Report, Snapshot};

use underroute_testbed::{runtime_in, Netns};

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
