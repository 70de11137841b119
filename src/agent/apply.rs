//! Desired state into the speaker: peers added, removed or changed and pod CIDRs originated or
//! withdrawn, touching only what differs from what was applied before.
//!
//! A peer whose import policy alone changed (a node joined, so its address left the importable
//! host routes) keeps its session: the policy is swapped and its routes judged again. Any other
//! change to a peer re-creates it, which is what a router does when a neighbor's AS, address
//! or timers are edited.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use underroute_bgp::policy::ImportPolicy;
use underroute_bgp::speaker::{PeerConfig, Speaker, SpeakerError};
use underroute_bgp::wire::PathAttrs;
use underroute_bgp::Asn;

use crate::cluster::Desired;

/// What has been applied to the speaker.
#[derive(Debug, Default)]
pub struct Applied {
    asn: Option<u32>,
    peers: BTreeMap<IpAddr, PeerConfig>,
    pod_cidrs: BTreeSet<IpNet>,
}

impl Applied {
    /// The AS the speaker runs with now (None before the first apply).
    pub fn asn(&self) -> Option<u32> {
        self.asn
    }

    /// Brings the speaker from the applied state to `want`. Failures are logged and left
    /// unapplied, so the next call retries them; only a stopped speaker is an error.
    pub async fn apply(&mut self, speaker: &Speaker, want: &Desired) -> Result<(), SpeakerError> {
        if self.asn.is_some_and(|asn| asn != want.asn) {
            tracing::info!(
                from = self.asn,
                to = want.asn,
                "our AS number changed: every session restarts with the new one"
            );
            speaker.set_local_asn(Asn(want.asn)).await?;
            // The speaker dropped every peer; they are added back below with the new AS.
            self.peers.clear();
        }
        self.asn = Some(want.asn);

        let gone: Vec<IpAddr> = self
            .peers
            .keys()
            .filter(|a| !want.peers.contains_key(a))
            .copied()
            .collect();
        for address in gone {
            tracing::info!(peer = %address, "peer no longer wanted: removing it and its routes");
            forget(speaker.remove_peer(address).await)?;
            self.peers.remove(&address);
        }
        for (address, peer) in &want.peers {
            match self.peers.get(address) {
                Some(old) if old == peer => {}
                Some(old) if same_session(old, peer) => {
                    tracing::info!(peer = %address, "import policy changed: judging its routes again");
                    match speaker
                        .set_import_policy(*address, peer.import.clone())
                        .await
                    {
                        Ok(()) => {
                            self.peers.insert(*address, peer.clone());
                        }
                        Err(SpeakerError::Stopped) => return Err(SpeakerError::Stopped),
                        Err(e) => {
                            tracing::warn!(peer = %address, error = %e, "import policy not applied")
                        }
                    }
                }
                old => {
                    if old.is_some() {
                        tracing::info!(peer = %address, asn = peer.asn.0, "peer settings changed: re-creating the session");
                        forget(speaker.remove_peer(*address).await)?;
                        self.peers.remove(address);
                    } else {
                        tracing::info!(peer = %address, asn = peer.asn.0, "adding peer");
                    }
                    match speaker.add_peer(peer.clone()).await {
                        Ok(()) => {
                            self.peers.insert(*address, peer.clone());
                        }
                        Err(SpeakerError::Stopped) => return Err(SpeakerError::Stopped),
                        Err(e) => {
                            tracing::warn!(peer = %address, error = %e, "peer not added; retrying on the next change")
                        }
                    }
                }
            }
        }

        let added: Vec<(IpNet, PathAttrs)> = want
            .pod_cidrs
            .difference(&self.pod_cidrs)
            .map(|p| (*p, PathAttrs::default()))
            .collect();
        let removed: Vec<IpNet> = self
            .pod_cidrs
            .difference(&want.pod_cidrs)
            .copied()
            .collect();
        for (prefix, _) in &added {
            tracing::info!(%prefix, "advertising pod CIDR");
        }
        for prefix in &removed {
            tracing::info!(%prefix, "withdrawing pod CIDR");
        }
        if !added.is_empty() {
            speaker.originate(added).await?;
        }
        if !removed.is_empty() {
            speaker.withdraw(removed).await?;
        }
        self.pod_cidrs = want.pod_cidrs.clone();
        Ok(())
    }
}

/// Everything but the import policy is equal.
fn same_session(a: &PeerConfig, b: &PeerConfig) -> bool {
    let strip = |p: &PeerConfig| PeerConfig {
        import: ImportPolicy::Deny,
        ..p.clone()
    };
    strip(a) == strip(b)
}

/// A peer that is already gone is as good as removed.
fn forget(result: Result<(), SpeakerError>) -> Result<(), SpeakerError> {
    match result {
        Err(SpeakerError::NoPeer(_)) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}
