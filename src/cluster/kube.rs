//! Kubernetes as the cluster source: kube-rs watchers with reflectors for every Node and for
//! the Pods on this node, turned into [`Snapshot`]s of [`ClusterState`].
//!
//! The watchers list, then watch from the list's resourceVersion; on 410 Gone or a dropped
//! connection they list again, with exponential backoff while the API server is away. The
//! reflector stores swap a re-list in whole, so a snapshot is never half old and half new. While
//! the API server is down the stores keep the last state, and so does routing: nothing is
//! withdrawn because the control plane is unreachable.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::{watch, Notify};

use super::{ClusterState, NodeInfo, NodeSettings, PodInfo};

/// The API server ends each watch after this long and the watcher starts a new one from where
/// it was. kube-rs also gives up on a watch that stays silent for this plus 5 s: that bounds how
/// long a hung API server (connections open, nothing sent) goes unnoticed, which the default
/// (290 s) would stretch to five minutes of stale routing state.
const WATCH_TIMEOUT_S: u32 = 60;
/// Read timeout on every API connection, so a request whose answer never comes (a hung API
/// server that still accepts connections) fails and is retried instead of waiting forever.
/// Longer than a watch may be silent ([`WATCH_TIMEOUT_S`]).
const READ_TIMEOUT: Duration = Duration::from_secs(75);

/// Errors reaching the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig file could not be read.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No usable configuration (not in a pod, no KUBECONFIG).
    #[error("no Kubernetes configuration: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// What the agent sees of the cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// This node. When its Node object is deleted the last known one stays: the agent keeps
    /// its own settings, and the other nodes drop it as a peer.
    pub me: NodeInfo,
    /// Every node (this one included while its Node exists) and this node's pods.
    pub cluster: ClusterState,
}

/// How the watchers are doing, for the metrics: shared with the tasks that update it.
#[derive(Debug, Clone, Default)]
pub struct WatchStatus {
    inner: Arc<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    nodes: AtomicU64,
    pods: AtomicU64,
    nodes_up: AtomicBool,
    pods_up: AtomicBool,
    annotation_errors: AtomicU64,
}

/// One reading of [`WatchStatus`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCounts {
    /// Nodes in the last snapshot.
    pub nodes: u64,
    /// This node's pods in the last snapshot.
    pub pods: u64,
    /// The Node watch is connected (false from a failure until the next event).
    pub nodes_up: bool,
    /// The Pod watch is connected.
    pub pods_up: bool,
    /// Node annotations currently refused (their previous values in force).
    pub annotation_errors: u64,
}

impl WatchStatus {
    /// The current values.
    pub fn counts(&self) -> WatchCounts {
        let i = &self.inner;
        WatchCounts {
            nodes: i.nodes.load(Ordering::Relaxed),
            pods: i.pods.load(Ordering::Relaxed),
            nodes_up: i.nodes_up.load(Ordering::Relaxed),
            pods_up: i.pods_up.load(Ordering::Relaxed),
            annotation_errors: i.annotation_errors.load(Ordering::Relaxed),
        }
    }
}

/// A client from `kubeconfig`, or from the environment (in-cluster service account, or
/// `KUBECONFIG`) when there is none.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| KubeError::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    let mut config = config;
    config.read_timeout = Some(READ_TIMEOUT);
    Ok(Client::try_from(config)?)
}

/// Starts watching Nodes and this node's Pods. The receiver's first value arrives once both
/// lists are in and the Node `node_name` has been seen; `None` until then.
pub fn watch(
    client: Client,
    node_name: String,
) -> (watch::Receiver<Option<Snapshot>>, WatchStatus) {
    let status = WatchStatus::default();
    let (nodes, nodes_writer) = reflector::store();
    let (pods, pods_writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let node_stream = reflector::reflector(
        nodes_writer,
        watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().timeout(WATCH_TIMEOUT_S),
        ),
    )
    .default_backoff();
    let pod_stream = reflector::reflector(
        pods_writer,
        watcher(
            Api::<Pod>::all(client),
            watcher::Config::default()
                .timeout(WATCH_TIMEOUT_S)
                .fields(&format!("spec.nodeName={node_name}")),
        ),
    )
    .default_backoff();
    tokio::spawn(drive("nodes", node_stream, changed.clone(), status.clone()));
    tokio::spawn(drive("pods", pod_stream, changed.clone(), status.clone()));
    let (tx, rx) = watch::channel(None);
    tokio::spawn(combine(node_name, nodes, pods, changed, tx, status.clone()));
    (rx, status)
}

/// Runs one reflector stream, waking the combiner when its store changed.
async fn drive<K: std::fmt::Debug>(
    resource: &'static str,
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    changed: Arc<Notify>,
    status: WatchStatus,
) {
    futures::pin_mut!(stream);
    let up = if resource == "nodes" {
        &status.inner.nodes_up
    } else {
        &status.inner.pods_up
    };
    let mut failing = false;
    while let Some(item) = stream.next().await {
        up.store(item.is_ok(), Ordering::Relaxed);
        match item {
            // A re-list lands in the store in one piece at InitDone; the pieces before it change
            // nothing the combiner could see.
            Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => {}
            Ok(_) => {
                if failing {
                    tracing::info!(resource, "Kubernetes watch back");
                    failing = false;
                }
                changed.notify_one();
            }
            Err(e) => {
                // The backoff spaces the retries; one line per outage, the rest at debug.
                if failing {
                    tracing::debug!(resource, error = %e, "Kubernetes watch still failing");
                } else {
                    tracing::warn!(resource, error = %e, "Kubernetes watch failed; keeping the last known state and retrying");
                    failing = true;
                }
            }
        }
    }
}

/// Builds snapshots from the two stores whenever either changes.
async fn combine(
    node_name: String,
    nodes: Store<Node>,
    pods: Store<Pod>,
    changed: Arc<Notify>,
    tx: watch::Sender<Option<Snapshot>>,
    status: WatchStatus,
) {
    let ready = async {
        let _ = nodes.wait_until_ready().await;
        let _ = pods.wait_until_ready().await;
    };
    tokio::pin!(ready);
    let mut waited = 0u64;
    loop {
        tokio::select! {
            _ = &mut ready => break,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {
                waited += 10;
                tracing::warn!(waited_s = waited, "waiting for the first list of Nodes and Pods from the API server");
            }
        }
    }
    let mut me: Option<NodeInfo> = None;
    let mut known: BTreeMap<String, NodeInfo> = BTreeMap::new();
    let mut reported: BTreeMap<String, Vec<super::AnnotationError>> = BTreeMap::new();
    loop {
        let mut state = ClusterState::default();
        for node in nodes.state() {
            let Some(name) = node.metadata.name.clone() else {
                continue;
            };
            let (info, errors) = node_info(&node, known.get(&name).map(|n| &n.settings));
            if reported.get(&name) != Some(&errors) {
                for e in &errors {
                    tracing::warn!(node = %name, error = %e, "ignoring a Node annotation; its previous value stays");
                }
                reported.insert(name.clone(), errors);
            }
            state.nodes.insert(name, info);
        }
        known = state.nodes.clone();
        reported.retain(|name, _| known.contains_key(name));
        let refused: usize = reported.values().map(Vec::len).sum();
        status
            .inner
            .annotation_errors
            .store(refused as u64, Ordering::Relaxed);
        status
            .inner
            .nodes
            .store(state.nodes.len() as u64, Ordering::Relaxed);
        for pod in pods.state() {
            let key = format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            );
            state.pods.insert(key, pod_info(&pod));
        }
        status
            .inner
            .pods
            .store(state.pods.len() as u64, Ordering::Relaxed);
        match state.nodes.get(&node_name) {
            Some(info) => me = Some(info.clone()),
            None if me.is_some() => {
                tracing::warn!(node = %node_name, "our Node object is gone; keeping its last known settings")
            }
            None => tracing::warn!(node = %node_name, "waiting for our Node object to appear"),
        }
        if let Some(me) = &me {
            let snapshot = Snapshot {
                me: me.clone(),
                cluster: state,
            };
            tx.send_if_modified(|old| {
                if old.as_ref() == Some(&snapshot) {
                    false
                } else {
                    *old = Some(snapshot);
                    true
                }
            });
        }
        if tx.is_closed() {
            return;
        }
        changed.notified().await;
        // Node churn comes in bursts (a rack rebooting): one snapshot for the burst.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The routing view of a Node; annotation errors keep `previous` settings.
pub fn node_info(
    node: &Node,
    previous: Option<&NodeSettings>,
) -> (NodeInfo, Vec<super::AnnotationError>) {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .map(|addrs| {
            addrs
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse::<IpAddr>().ok())
                .collect()
        })
        .unwrap_or_default();
    let spec = node.spec.as_ref();
    let cidrs: Vec<String> = spec
        .and_then(|s| s.pod_cidrs.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
        .unwrap_or_default();
    let pod_cidrs = cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .map(|c| c.trunc())
        .collect();
    let empty = BTreeMap::new();
    let annotations = node.metadata.annotations.as_ref().unwrap_or(&empty);
    let (settings, errors) = NodeSettings::from_annotations(annotations, previous);
    (
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            addresses,
            pod_cidrs,
            settings,
        },
        errors,
    )
}

/// The routing view of a Pod.
pub fn pod_info(pod: &Pod) -> PodInfo {
    let status = pod.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|v| v.iter().filter_map(|p| p.ip.parse().ok()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(
            status
                .and_then(|s| s.pod_ip.as_ref())
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    PodInfo {
        ips,
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        terminated: matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded") | Some("Failed")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A public self-signed CA certificate (no key is kept): enough for the client to build its
    /// TLS configuration, which is where a missing rustls crypto provider would panic.
    const CA: &str = "-----BEGIN CERTIFICATE-----
MIIBkjCCATegAwIBAgIURNa7NDXqVo8RQPCxXb9ng128deAwCgYIKoZIzj0EAwIw
HTEbMBkGA1UEAwwSdW5kZXJyb3V0ZS10ZXN0LWNhMCAXDTI2MTEyMTEzMTYzMVoY
DzIxMjYxMDI4MTMxNjMxWjAdMRswGQYDVQQDDBJ1bmRlcnJvdXRlLXRlc3QtY2Ew
WTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASxGu9GjWlJ8uxFgXQDZxXMUHTPdVMe
K9AJc7az9d7FhJNQvynd+y3TZ6tNfuhg0ppQyGPi1XgazTHyQV8TjCiYo1MwUTAd
BgNVHQ4EFgQUA3aFhQQssrYddWdL9vHE5W3wzB0wHwYDVR0jBBgwFoAUA3aFhQQs
srYddWdL9vHE5W3wzB0wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG
AiEA7YCgPjhwAWCJg6DA7lXuvzpyV0cvZOA4gFIf0Rr/OI8CIQD+RgEEebR3y4iq
UpcP5XSdvGWd1cL/MQComz/jfeKBUw==
-----END CERTIFICATE-----
";

    #[tokio::test]
    async fn an_https_kubeconfig_with_a_ca_builds_a_tls_client() {
        // What the in-cluster configuration amounts to: https, a CA, a bearer token. Nothing is
        // dialled; building the client is the part that needs the TLS stack.
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, CA).expect("write CA");
        let kubeconfig = dir.path().join("kubeconfig");
        let text = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": "https://192.0.2.1:6443", "certificate-authority": ca}}],
            "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        });
        std::fs::write(&kubeconfig, text.to_string()).expect("write kubeconfig");
        client(Some(&kubeconfig)).await.expect("TLS client");

        let missing = dir.path().join("nope");
        let Err(err) = client(Some(&missing)).await else {
            panic!("a missing kubeconfig must be an error")
        };
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn node_and_pod_objects_become_routing_views() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "annotations": {"underroute.io/asn": "64600"}},
            "spec": {"podCIDR": "10.233.64.0/24"},
            "status": {"addresses": [
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "192.168.50.50"},
                {"type": "InternalIP", "address": "fd00::50"},
                {"type": "ExternalIP", "address": "203.0.113.5"}
            ]}
        }))
        .expect("a Node");
        let (info, errors) = node_info(&node, None);
        assert!(errors.is_empty());
        assert_eq!(
            info.addresses,
            vec![
                "192.168.50.50".parse::<IpAddr>().expect("ip"),
                "fd00::50".parse().expect("ip")
            ]
        );
        assert_eq!(
            info.pod_cidrs,
            vec!["10.233.64.0/24".parse::<IpNet>().expect("net")]
        );
        assert_eq!(info.settings.asn, Some(64600));

        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [], "nodeName": "n1"},
            "status": {"phase": "Failed", "podIP": "192.168.50.80"}
        }))
        .expect("a Pod");
        let info = pod_info(&pod);
        assert_eq!(
            info.ips,
            vec!["192.168.50.80".parse::<IpAddr>().expect("ip")]
        );
        assert!(info.terminated && !info.host_network);
    }
}
