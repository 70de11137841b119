//! Our own speaker, running inside a namespace of the testbed.
//!
//! Network namespaces belong to threads: the runtime is built on a thread that first entered
//! the namespace, so its worker threads (created from that thread) and every socket they open
//! live there. Work is always spawned onto the runtime, never run on the caller's thread,
//! which stays in the host namespace.

use std::future::Future;

use underroute_bgp::speaker::{Speaker, SpeakerConfig};

use super::netns::Netns;

/// A [`Speaker`] whose sockets live in a testbed namespace.
pub struct NsSpeaker {
    /// The handle.
    pub speaker: Speaker,
    rt: tokio::runtime::Runtime,
}

impl NsSpeaker {
    /// Start a speaker in `ns`.
    pub fn start(ns: &Netns, config: SpeakerConfig) -> Result<NsSpeaker, String> {
        let rt = runtime_in(ns)?;
        let speaker = rt
            .block_on(rt.spawn(Speaker::start(config)))
            .map_err(|e| format!("speaker task: {e}"))?
            .map_err(|e| format!("speaker start: {e}"))?;
        Ok(NsSpeaker { speaker, rt })
    }

    /// Run a future on the speaker's runtime (inside the namespace) and wait for it.
    pub fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt
            .block_on(self.rt.spawn(fut))
            .expect("task on the speaker runtime panicked")
    }

    /// A clone of the handle, for futures passed to [`NsSpeaker::run`].
    pub fn handle(&self) -> Speaker {
        self.speaker.clone()
    }
}

/// A multi-threaded tokio runtime whose threads all live in `ns`.
pub fn runtime_in(ns: &Netns) -> Result<tokio::runtime::Runtime, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                ns.enter_thread()?;
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("runtime: {e}"))
            })
            .join()
            .map_err(|_| "runtime thread panicked".to_string())?
    })
}

impl NsSpeaker {
    /// Wait until the session with `peer` is Established.
    pub fn wait_established(
        &self,
        peer: std::net::IpAddr,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        super::wait_until(timeout, std::time::Duration::from_millis(50), || {
            let peers = self.run({
                let s = self.handle();
                async move { s.peers().await }
            });
            peers
                .ok()?
                .iter()
                .find(|p| {
                    p.config.address == peer && p.state == underroute_bgp::fsm::State::Established
                })
                .map(|_| ())
        })
        .map_err(|e| {
            format!(
                "our session with {peer} not Established: {e}; peers: {:?}",
                self.peer_summary()
            )
        })
    }

    /// One line per peer: address, state, last error.
    pub fn peer_summary(&self) -> Vec<String> {
        let s = self.handle();
        match self.run(async move { s.peers().await }) {
            Ok(peers) => peers
                .iter()
                .map(|p| {
                    format!(
                        "{} {:?} {}",
                        p.config.address,
                        p.state,
                        p.last_error.clone().unwrap_or_default()
                    )
                })
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    /// A peer's snapshot.
    pub fn peer(&self, peer: std::net::IpAddr) -> Option<underroute_bgp::speaker::PeerSnapshot> {
        let s = self.handle();
        self.run(async move { s.peers().await })
            .ok()?
            .into_iter()
            .find(|p| p.config.address == peer)
    }

    /// Our best routes, in the testbed's daemon-neutral form (plus the stale flag).
    pub fn best_routes(&self) -> Vec<(super::RibEntry, bool)> {
        let s = self.handle();
        let table = self
            .run(async move { s.loc_rib(None).await })
            .unwrap_or_default();
        table
            .into_iter()
            .filter_map(|e| {
                let best = e.paths.first()?;
                Some((rib_entry(e.prefix, &best.attrs), best.stale))
            })
            .collect()
    }

    /// Our best route for `prefix`, if any.
    pub fn best_route(&self, prefix: ipnet::IpNet) -> Option<(super::RibEntry, bool)> {
        self.best_routes()
            .into_iter()
            .find(|(r, _)| r.prefix == prefix)
    }
}

/// Convert our attributes to the testbed's comparison form.
pub fn rib_entry(prefix: ipnet::IpNet, a: &underroute_bgp::wire::PathAttrs) -> super::RibEntry {
    use underroute_bgp::wire::AsSegment;
    super::RibEntry {
        prefix,
        nexthop: a.next_hop,
        as_path: a
            .as_path
            .segments
            .iter()
            .flat_map(|s| match s {
                AsSegment::Sequence(v)
                | AsSegment::Set(v)
                | AsSegment::ConfedSequence(v)
                | AsSegment::ConfedSet(v) => v.iter().map(|a| a.0).collect::<Vec<_>>(),
            })
            .collect(),
        communities: a
            .communities
            .iter()
            .map(|c| ((c >> 16) as u16, (c & 0xffff) as u16))
            .collect(),
        large_communities: a
            .large_communities
            .iter()
            .map(|l| (l.global, l.local1, l.local2))
            .collect(),
        med: a.med,
        local_pref: a.local_pref,
        best: true,
    }
}
