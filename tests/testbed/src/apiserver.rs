//! A fake Kubernetes API server for Nodes and Pods, speaking the real list/watch wire format.
//!
//! Why: the agent's Kubernetes mode runs kube-rs reflectors (list, then watch, re-list on 410
//! Gone, reconnect with backoff). Testing that against a real cluster is slow and hard to break on
//! purpose; a mock at the Rust level would skip the very code (HTTP, JSON framing, resource
//! versions) that fails in production. This server is small but answers like kube-apiserver, so an
//! unmodified `kube::Client` works against it over plain HTTP, and a test can kill it, compact its
//! history and restart it on the same address to drive the watcher's recovery paths.
//!
//! Plain HTTP for a kubeconfig ([`FakeApiServer::serve`]), or TLS with a bearer token for the
//! in-cluster configuration ([`FakeApiServer::serve_tls`], [`FakeApiServer::require_token`],
//! certificates and service account from [`crate::incluster`]).
//!
//! What it implements (GET only):
//! - `/api/v1/nodes`, `/api/v1/pods`, `/api/v1/namespaces/{ns}/pods` and single objects below them.
//! - List: all matching items at the current resource version, in pages of `limit` items with a
//!   `continue` token when asked (later pages show the list's resource version, as etcd's
//!   snapshot does; a token from before a compaction gets 410 Expired).
//!   `resourceVersionMatch=Exact` rebuilds the state at that version from history, or answers
//!   410 Expired once it is compacted.
//! - Watch (`watch=true|1`): replay of history after `resourceVersion` (or synthetic ADDED events of
//!   the current state when it is absent or "0"), then live events, BOOKMARKs every second when
//!   `allowWatchBookmarks=true`, end after `timeoutSeconds` (default 300 s, at most 3600 s). A
//!   compacted resource version gets a single ERROR 410 line, as the real watch cache sends.
//! - `sendInitialEvents` is refused with 422 Invalid, like an apiserver without the WatchList
//!   feature gate: kube-rs's default `watcher::Config` never sends it (it lists, then watches).
//! - `fieldSelector`: `metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`
//!   with `=`, `==`, `!=`, comma-joined. `labelSelector`: the equality-based forms only
//!   (`k=v`, `k==v`, `k!=v`, `k`, `!k`); set-based (`in`, `notin`) answer 400.
//!
//! - Graceful deletion ([`FakeApiServer::begin_delete`]): `metadata.deletionTimestamp` and
//!   `deletionGracePeriodSeconds` are set (a MODIFIED event) and the object stays until
//!   [`FakeApiServer::delete`] removes it, as the kubelet confirms a pod's end.
//! - A hung server ([`FakeApiServer::hang`]): connections are still accepted, but no request is
//!   answered and open watch streams go silent (no events, no bookmarks), as when the apiserver
//!   or its etcd stalls behind a load balancer that keeps accepting; [`FakeApiServer::unhang`]
//!   answers new requests again (the silent streams stay silent: the client must give up on them).
//!
//! Resource versions come from one global counter, like etcd's revision. The server runs on its own
//! thread with its own tokio runtime, so plain synchronous test code can drive it, and `stop()`
//! drops that runtime, closing the listener and every connection and watch at once.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

/// Events kept for watch resumption; beyond it the oldest half is dropped, as a real (bounded)
/// watch cache does, and watches from before that get 410.
const HISTORY_LIMIT: usize = 10_000;
const DEFAULT_WATCH_TIMEOUT_S: u64 = 300;
const MAX_WATCH_TIMEOUT_S: u64 = 3600;
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

type Body = BoxBody<Bytes, Infallible>;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Node,
    Pod,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Pod => "Pod",
        }
    }

    fn parse(kind: &str) -> Result<Kind, String> {
        match kind {
            "Node" | "node" | "nodes" => Ok(Kind::Node),
            "Pod" | "pod" | "pods" => Ok(Kind::Pod),
            other => Err(format!(
                "fake apiserver only stores Node and Pod, not {other:?}"
            )),
        }
    }
}

/// (kind, namespace ("" for nodes), name).
type Key = (Kind, String, String);

/// One stored change. `before` is the state it replaced, which lets a watch with a selector turn
/// a change into ADDED/DELETED for objects entering or leaving its selection, and lets an Exact
/// list undo newer changes.
struct Change {
    rv: u64,
    key: Key,
    before: Option<Value>,
    /// The new state, or for a delete the final state carrying the delete's resource version.
    object: Value,
    deleted: bool,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Change>,
    /// Every change after this resource version is in `history`; watches from older ones get 410.
    compacted: u64,
    requests: Vec<String>,
}

struct Shared {
    store: Mutex<Store>,
    /// Wakes watch streams: carries the newest resource version.
    rv_tx: watch::Sender<u64>,
    /// True while the server is hung (see [`FakeApiServer::hang`]).
    hung: watch::Sender<bool>,
    /// The bearer token every request must carry, if any (401 otherwise).
    token: Mutex<Option<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Store> {
        // A test that panicked while holding the lock must not hide its own failure behind ours.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The fake API server: an object store with history, and at most one serving thread.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FakeApiServer {
    /// An empty store at resource version 0, not serving.
    pub fn new() -> FakeApiServer {
        FakeApiServer {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::default()),
                rv_tx: watch::channel(0).0,
                hung: watch::channel(false).0,
                token: Mutex::new(None),
            }),
            running: Mutex::new(None),
        }
    }

    /// Serves on an already-bound listener (it may belong to another network namespace) from a new
    /// thread. Returns the listener's address. Fails if already serving.
    ///
    /// A restart is `stop()`, optionally `compact()`, then `serve(TcpListener::bind(addr)?)` on the
    /// same address: std sets SO_REUSEADDR on Unix, so the old connections in TIME_WAIT don't block
    /// the bind.
    pub fn serve(&self, listener: TcpListener) -> Result<SocketAddr, String> {
        self.serve_with(listener, None)
    }

    /// Like [`FakeApiServer::serve`], over TLS with `config` (a certificate the client's CA
    /// signed, e.g. [`crate::incluster::ServiceAccount::server_config`]), as a real apiserver
    /// always is.
    pub fn serve_tls(
        &self,
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> Result<SocketAddr, String> {
        self.serve_with(listener, Some(tokio_rustls::TlsAcceptor::from(config)))
    }

    /// From now on every request must carry `Authorization: Bearer TOKEN` (401 otherwise), as
    /// a service account's token is checked.
    pub fn require_token(&self, token: &str) {
        *self.shared.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.to_string());
    }

    fn serve_with(
        &self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<SocketAddr, String> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.is_some() {
            return Err("fake apiserver: already serving".into());
        }
        let addr = listener
            .local_addr()
            .map_err(|e| format!("fake apiserver: local_addr: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("fake apiserver: set_nonblocking: {e}"))?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let shared = self.shared.clone();
        let thread = std::thread::Builder::new()
            .name("fake-apiserver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("fake apiserver: runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(accept_loop(shared, listener, tls, stop_rx, ready_tx));
                // Dropping the runtime drops every connection and watch task: clients see all of
                // them close at once, as when a real apiserver dies.
                drop(rt);
            })
            .map_err(|e| format!("fake apiserver: spawn: {e}"))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {
                *running = Some(Running {
                    stop: stop_tx,
                    thread,
                });
                Ok(addr)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err("fake apiserver: serving thread died".into()),
        }
    }

    /// "API server down": closes the listener and every open connection and watch stream, and
    /// returns once they are closed. Objects and history are kept. No-op when not serving.
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(running) = running {
            let _ = running.stop.send(());
            let _ = running.thread.join();
        }
    }

    /// Drops the event history, as a restarted apiserver's watch cache has none: every watch from
    /// an older resource version now gets 410 Gone and the client must re-list.
    pub fn compact(&self) {
        let mut store = self.shared.lock();
        store.compacted = store.rv;
        store.history.clear();
    }

    /// Creates (ADDED) or replaces (MODIFIED) a Node or Pod and returns its new resource version.
    /// Sets `kind`/`apiVersion`, `metadata.resourceVersion`, and on create `metadata.uid` and
    /// `metadata.creationTimestamp` (kept on replace); pods without a namespace go to "default".
    /// A `resourceVersion` in the input is overwritten: there is no optimistic concurrency here.
    pub fn apply(&self, mut object: Value) -> Result<u64, String> {
        let kind = Kind::parse(
            object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        )?;
        if !object.get("metadata").is_some_and(Value::is_object) {
            return Err("fake apiserver: object has no metadata".into());
        }
        let meta = &mut object["metadata"];
        let name = meta["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or("fake apiserver: no metadata.name")?;
        let name = name.to_string();
        let namespace = match kind {
            Kind::Node => String::new(),
            Kind::Pod => meta["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string(),
        };
        if kind == Kind::Pod {
            meta["namespace"] = json!(namespace);
        } else if let Some(m) = meta.as_object_mut() {
            m.remove("namespace");
        }
        let key = (kind, namespace, name);
        let mut store = self.shared.lock();
        let rv = store.rv + 1;
        let before = store.objects.get(&key).cloned();
        match &before {
            // The apiserver keeps identity across updates.
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => {
                meta["uid"] = json!(format!("00000000-0000-4000-8000-{rv:012x}"));
                meta["creationTimestamp"] = json!(now_rfc3339());
            }
        }
        meta["resourceVersion"] = json!(rv.to_string());
        object["kind"] = json!(kind.name());
        object["apiVersion"] = json!("v1");
        store.objects.insert(key.clone(), object.clone());
        store.record(Change {
            rv,
            key,
            before,
            object,
            deleted: false,
        });
        drop(store);
        self.shared.rv_tx.send_replace(rv);
        Ok(rv)
    }

    /// Deletes a Node (`namespace` ignored) or Pod (`None` means "default"); watchers get DELETED
    /// with the final state at the new resource version, which is returned.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) -> Result<u64, String> {
        let kind = Kind::parse(kind)?;
        let namespace = match kind {
            Kind::Node => "",
            Kind::Pod => namespace.unwrap_or("default"),
        };
        let key = (kind, namespace.to_string(), name.to_string());
        let mut store = self.shared.lock();
        let before = store
            .objects
            .remove(&key)
            .ok_or_else(|| format!("fake apiserver: {key:?} not found"))?;
        let rv = store.rv + 1;
        let mut object = before.clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        store.record(Change {
            rv,
            key,
            before: Some(before),
            object,
            deleted: true,
        });
        drop(store);
        self.shared.rv_tx.send_replace(rv);
        Ok(rv)
    }

    /// Starts a graceful deletion: sets `metadata.deletionTimestamp` (now plus `grace_seconds`)
    /// and `metadata.deletionGracePeriodSeconds`; watchers get MODIFIED. The object stays until
    /// [`FakeApiServer::delete`]. Returns the new resource version.
    pub fn begin_delete(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        grace_seconds: u64,
    ) -> Result<u64, String> {
        let kind = Kind::parse(kind)?;
        let namespace = match kind {
            Kind::Node => "",
            Kind::Pod => namespace.unwrap_or("default"),
        };
        let key = (kind, namespace.to_string(), name.to_string());
        let mut store = self.shared.lock();
        let before = store
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("fake apiserver: {key:?} not found"))?;
        let rv = store.rv + 1;
        let mut object = before.clone();
        let meta = &mut object["metadata"];
        meta["deletionTimestamp"] = json!(rfc3339_in(grace_seconds));
        meta["deletionGracePeriodSeconds"] = json!(grace_seconds);
        meta["resourceVersion"] = json!(rv.to_string());
        store.objects.insert(key.clone(), object.clone());
        store.record(Change {
            rv,
            key,
            before: Some(before),
            object,
            deleted: false,
        });
        drop(store);
        self.shared.rv_tx.send_replace(rv);
        Ok(rv)
    }

    /// "API server hung": from now on requests are accepted and never answered, and open watch
    /// streams send nothing more. The store keeps changing with `apply`/`delete`.
    pub fn hang(&self) {
        self.shared.hung.send_replace(true);
    }

    /// Answers new requests again. Streams silenced by [`FakeApiServer::hang`] stay silent.
    pub fn unhang(&self) {
        self.shared.hung.send_replace(false);
    }

    /// Every request seen, as `METHOD path?query` (query exactly as sent, still percent-encoded).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// The current (newest) resource version.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Writes a kubeconfig for plain HTTP to `addr` with no credentials, current context set; JSON,
    /// which `kube::config::Kubeconfig::read_from` accepts as YAML.
    pub fn write_kubeconfig(&self, path: &Path, addr: SocketAddr) -> Result<(), String> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": format!("http://{addr}")}}],
            "users": [{"name": "fake", "user": {}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
            "preferences": {},
        });
        std::fs::write(path, config.to_string())
            .map_err(|e| format!("write {}: {e}", path.display()))
    }
}

impl Store {
    fn record(&mut self, change: Change) {
        self.rv = change.rv;
        self.history.push(change);
        if self.history.len() > HISTORY_LIMIT {
            let cut = self.history.len() / 2;
            self.compacted = self.history[cut - 1].rv;
            self.history.drain(..cut);
        }
    }
}

/// A Node with an InternalIP address and pod CIDRs (`spec.podCIDR` is the first).
pub fn node(
    name: &str,
    internal_ip: &str,
    pod_cidrs: &[&str],
    annotations: &[(&str, &str)],
) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut spec = json!({ "podCIDRs": pod_cidrs });
    if let Some(first) = pod_cidrs.first() {
        spec["podCIDR"] = json!(first);
    }
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": { "name": name, "annotations": annotations },
        "spec": spec,
        "status": { "addresses": [{ "type": "InternalIP", "address": internal_ip }] },
    })
}

/// A Running Pod scheduled on `node_name` with the given IPs (`status.podIP` is the first).
pub fn pod(
    namespace: &str,
    name: &str,
    node_name: &str,
    pod_ips: &[&str],
    host_network: bool,
) -> Value {
    let mut status = json!({
        "phase": "Running",
        "podIPs": pod_ips.iter().map(|ip| json!({ "ip": ip })).collect::<Vec<_>>(),
    });
    if let Some(first) = pod_ips.first() {
        status["podIP"] = json!(first);
    }
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "nodeName": node_name,
            "hostNetwork": host_network,
            "containers": [{ "name": "main", "image": "registry.invalid/fake" }],
        },
        "status": status,
    })
}

fn now_rfc3339() -> String {
    rfc3339_in(0)
}

/// Now plus `seconds`, at seconds precision, as the apiserver writes its timestamps.
fn rfc3339_in(seconds: u64) -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    let later = now
        .as_second()
        .saturating_add(i64::try_from(seconds).unwrap_or(0));
    k8s_openapi::jiff::Timestamp::from_second(later)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("fake apiserver: listener: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    loop {
        tokio::select! {
            // A dropped sender (server dropped) stops too.
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                        let conn = hyper::server::conn::http1::Builder::new();
                        match tls {
                            // A failed handshake (a client that does not trust the CA) just
                            // ends the connection, as a real server's does.
                            Some(tls) => {
                                if let Ok(stream) = tls.accept(stream).await {
                                    let _ = conn.serve_connection(TokioIo::new(stream), service).await;
                                }
                            }
                            None => {
                                let _ = conn.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                    });
                }
                // E.g. EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    shared
        .lock()
        .requests
        .push(format!("{} {target}", req.method()));
    // Hung: never answer. The connection stays open until the client gives up or the server
    // stops.
    if *shared.hung.borrow() {
        std::future::pending::<()>().await;
    }
    let token = shared
        .token
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(token) = token {
        let sent = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {token}").as_str()) {
            let code = StatusCode::UNAUTHORIZED;
            return Ok(json_response(
                code,
                status_json(code.as_u16(), "Unauthorized", "Unauthorized").to_string(),
            ));
        }
    }
    Ok(
        respond(&shared, &req).unwrap_or_else(|Failure(code, reason, message)| {
            json_response(
                code,
                status_json(code.as_u16(), reason, &message).to_string(),
            )
        }),
    )
}

fn respond(shared: &Arc<Shared>, req: &Request<Incoming>) -> Result<Response<Body>, Failure> {
    if req.method() != Method::GET {
        return Err(fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "fake apiserver only serves GET",
        ));
    }
    let not_found = || {
        fail(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (kind, namespace, name) = route(req.uri().path()).ok_or_else(not_found)?;
    let query = parse_query(req.uri().query().unwrap_or(""));
    let q = |k: &str| query.get(k).map(String::as_str);
    let bad = |m: String| fail(StatusCode::BAD_REQUEST, "BadRequest", m);
    let mut selector = Selector::parse(
        q("fieldSelector").unwrap_or(""),
        q("labelSelector").unwrap_or(""),
    )
    .map_err(bad)?;
    if let Some(ns) = &namespace {
        selector
            .fields
            .push(("metadata.namespace".into(), true, ns.clone()));
    }
    let rv = match q("resourceVersion").unwrap_or("") {
        "" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| bad(format!("invalid resource version {s:?}")))?,
        ),
    };
    if let Some(name) = name {
        let key = (kind, namespace.unwrap_or_default(), name.clone());
        let store = shared.lock();
        let object = store.objects.get(&key).ok_or_else(|| {
            let plural = if kind == Kind::Node { "nodes" } else { "pods" };
            fail(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{plural} {name:?} not found"),
            )
        })?;
        return Ok(json_response(StatusCode::OK, object.to_string()));
    }
    if matches!(q("watch"), Some("true" | "1")) {
        if q("sendInitialEvents").is_some() {
            let message = "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: \
                           sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled";
            return Err(fail(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message));
        }
        let timeout = q("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|&t| t > 0);
        let timeout = Duration::from_secs(
            timeout
                .unwrap_or(DEFAULT_WATCH_TIMEOUT_S)
                .min(MAX_WATCH_TIMEOUT_S),
        );
        let bookmarks = q("allowWatchBookmarks") == Some("true");
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch_stream(
            shared.clone(),
            kind,
            selector,
            rv,
            timeout,
            bookmarks,
            tx,
        ));
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
        let mut response = Response::new(body);
        response.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    }
    let limit = match q("limit").unwrap_or("") {
        "" | "0" => None,
        l => Some(
            l.parse::<usize>()
                .map_err(|_| bad(format!("invalid limit {l:?}")))?,
        ),
    };
    let page = match q("continue").unwrap_or("") {
        "" => None,
        token => Some(
            Continue::parse(token)
                .ok_or_else(|| bad(format!("continue key is not valid: {token:?}")))?,
        ),
    };
    list(
        shared,
        kind,
        &selector,
        rv,
        q("resourceVersionMatch") == Some("Exact"),
        limit,
        page,
    )
}

/// Where the next page of a list starts: the list's resource version and the last key sent.
/// Encoded as `rv/namespace/name` (the kind is the request's).
struct Continue {
    rv: u64,
    namespace: String,
    name: String,
}

impl Continue {
    fn encode(&self) -> String {
        format!("{}/{}/{}", self.rv, self.namespace, self.name)
    }

    fn parse(token: &str) -> Option<Continue> {
        let mut parts = token.splitn(3, '/');
        let rv = parts.next()?.parse().ok()?;
        Some(Continue {
            rv,
            namespace: parts.next()?.to_string(),
            name: parts.next()?.to_string(),
        })
    }
}

fn list(
    shared: &Shared,
    kind: Kind,
    selector: &Selector,
    rv: Option<u64>,
    exact: bool,
    limit: Option<usize>,
    page: Option<Continue>,
) -> Result<Response<Body>, Failure> {
    let store = shared.lock();
    // A later page is served from the first page's snapshot, like etcd's.
    let (rv, exact) = match &page {
        Some(c) if c.rv < store.compacted => {
            let message = "The provided continue parameter is too old to display a consistent \
                           list result. You can start a new list without the continue parameter."
                .to_string();
            return Err(fail(StatusCode::GONE, "Expired", message));
        }
        Some(c) => (Some(c.rv), c.rv < store.rv),
        None => (rv, exact),
    };
    let undone;
    let (objects, list_rv) = match rv {
        Some(x) if x > store.rv => {
            let message = format!("Too large resource version: {x}, current: {}", store.rv);
            return Err(fail(StatusCode::GATEWAY_TIMEOUT, "Timeout", message));
        }
        Some(x) if exact && x < store.compacted => {
            let message = "The resourceVersion for the provided list is too old.".to_string();
            return Err(fail(StatusCode::GONE, "Expired", message));
        }
        Some(x) if exact => {
            // The state at `x`: the current one with every newer change undone.
            let mut state = store.objects.clone();
            for change in store.history.iter().rev().take_while(|c| c.rv > x) {
                match &change.before {
                    Some(before) => state.insert(change.key.clone(), before.clone()),
                    None => state.remove(&change.key),
                };
            }
            undone = state;
            (&undone, x)
        }
        _ => (&store.objects, store.rv),
    };
    let matching = objects
        .iter()
        .filter(|(key, object)| key.0 == kind && selector.matches(object))
        .filter(|(key, _)| match &page {
            Some(c) => (key.1.as_str(), key.2.as_str()) > (c.namespace.as_str(), c.name.as_str()),
            None => true,
        });
    let mut items: Vec<(&Key, &Value)> = Vec::new();
    let mut more = false;
    for (key, object) in matching {
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            break;
        }
        items.push((key, object));
    }
    let mut metadata = json!({ "resourceVersion": list_rv.to_string() });
    if let (true, Some((last, _))) = (more, items.last()) {
        let token = Continue {
            rv: list_rv,
            namespace: last.1.clone(),
            name: last.2.clone(),
        };
        metadata["continue"] = json!(token.encode());
    }
    let list = json!({
        "kind": format!("{}List", kind.name()),
        "apiVersion": "v1",
        "metadata": metadata,
        "items": items.iter().map(|(_, o)| o).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, list.to_string()))
}

async fn watch_stream(
    shared: Arc<Shared>,
    kind: Kind,
    selector: Selector,
    from: Option<u64>,
    timeout: Duration,
    bookmarks: bool,
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmark_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    bookmark_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rv_rx = shared.rv_tx.subscribe();
    let mut hung = shared.hung.subscribe();
    let mut lines = Vec::new();
    let mut cursor = match from {
        // "Any" or "most recent": the current state as synthetic ADDED events, then changes.
        None | Some(0) => {
            let store = shared.lock();
            for (_, object) in store
                .objects
                .iter()
                .filter(|(key, o)| key.0 == kind && selector.matches(o))
            {
                lines.push(event_line("ADDED", object));
            }
            store.rv
        }
        Some(x) => x,
    };
    loop {
        if *hung.borrow_and_update() {
            // Silent for good: the stream neither ends nor sends, until the client gives up
            // (or the server stops).
            tokio::select! {
                _ = tx.closed() => return,
                _ = std::future::pending::<()>() => {}
            }
        }
        // Mark the newest version seen before reading the store, so no wake-up is lost.
        rv_rx.borrow_and_update();
        let mut expired = false;
        {
            let store = shared.lock();
            if cursor < store.compacted {
                let message = format!("too old resource version: {cursor} ({})", store.compacted);
                lines.push(event_line("ERROR", &status_json(410, "Expired", &message)));
                expired = true;
            } else {
                let start = store.history.partition_point(|c| c.rv <= cursor);
                for change in store.history[start..].iter().filter(|c| c.key.0 == kind) {
                    let was = change.before.as_ref().is_some_and(|b| selector.matches(b));
                    let is = !change.deleted && selector.matches(&change.object);
                    let kind = match (was, is) {
                        (false, true) => "ADDED",
                        (true, true) => "MODIFIED",
                        (true, false) => "DELETED",
                        (false, false) => continue,
                    };
                    lines.push(event_line(kind, &change.object));
                }
                cursor = cursor.max(store.rv);
            }
        }
        for line in lines.drain(..) {
            if tx.send(Ok(Frame::data(line))).await.is_err() {
                return;
            }
        }
        if expired {
            return;
        }
        tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            _ = hung.changed() => {}
            changed = rv_rx.changed() => if changed.is_err() { return },
            _ = bookmark_tick.tick(), if bookmarks => {
                let mark = json!({ "kind": kind.name(), "apiVersion": "v1", "metadata": { "resourceVersion": cursor.to_string() } });
                lines.push(event_line("BOOKMARK", &mark));
            }
        }
    }
}

/// One watch line. Written by hand so `type` comes before `object`, as the apiserver sends it,
/// whatever key order serde_json's map uses.
fn event_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{kind}\",\"object\":{object}}}\n"))
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// An error answer: rendered as a `Status` body with this HTTP code.
struct Failure(StatusCode, &'static str, String);

fn fail(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Failure {
    Failure(code, reason, message.into())
}

fn json_response(code: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = code;
    response.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `(kind, namespace, name)` for the paths served, `None` for anything else (404).
fn route(path: &str) -> Option<(Kind, Option<String>, Option<String>)> {
    let segments: Vec<&str> = path
        .strip_prefix("/api/v1/")?
        .trim_end_matches('/')
        .split('/')
        .collect();
    let own = |s: &&str| Some(s.to_string());
    match segments.as_slice() {
        ["nodes"] => Some((Kind::Node, None, None)),
        ["nodes", name] => Some((Kind::Node, None, own(name))),
        ["pods"] => Some((Kind::Pod, None, None)),
        ["namespaces", ns, "pods"] => Some((Kind::Pod, own(ns), None)),
        ["namespaces", ns, "pods", name] => Some((Kind::Pod, own(ns), own(name))),
        _ => None,
    }
}

fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Field and label selectors; an empty one matches everything.
#[derive(Default)]
struct Selector {
    /// (field path, equal (true) or not equal, value).
    fields: Vec<(String, bool, String)>,
    /// (label key, requirement).
    labels: Vec<(String, LabelReq)>,
}

enum LabelReq {
    Eq(String),
    Ne(String),
    Exists,
    NotExists,
}

/// Splits `a=b`, `a==b` or `a!=b` into (a, equal?, b).
fn split_requirement(term: &str) -> Option<(String, bool, String)> {
    let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
        (k, false, v)
    } else if let Some((k, v)) = term.split_once("==") {
        (k, true, v)
    } else {
        let (k, v) = term.split_once('=')?;
        (k, true, v)
    };
    Some((key.trim().to_string(), equal, value.trim().to_string()))
}

impl Selector {
    fn parse(fields: &str, labels: &str) -> Result<Selector, String> {
        let mut selector = Selector::default();
        for term in fields.split(',').filter(|t| !t.trim().is_empty()) {
            let (path, equal, value) = split_requirement(term)
                .ok_or_else(|| format!("invalid field selector {term:?}"))?;
            if field_value(&json!({}), &path).is_none() {
                return Err(format!("field label not supported: {path}"));
            }
            selector.fields.push((path, equal, value));
        }
        if labels.contains('(') {
            return Err(format!(
                "fake apiserver: set-based label selectors are not supported: {labels:?}"
            ));
        }
        for term in labels.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let requirement = match split_requirement(term) {
                Some((key, true, value)) => (key, LabelReq::Eq(value)),
                Some((key, false, value)) => (key, LabelReq::Ne(value)),
                None => match term.strip_prefix('!') {
                    Some(key) => (key.trim().to_string(), LabelReq::NotExists),
                    None => (term.to_string(), LabelReq::Exists),
                },
            };
            selector.labels.push(requirement);
        }
        Ok(selector)
    }

    fn matches(&self, object: &Value) -> bool {
        let fields_ok = self.fields.iter().all(|(path, equal, value)| {
            (field_value(object, path).as_deref() == Some(value.as_str())) == *equal
        });
        let labels = &object["metadata"]["labels"];
        fields_ok
            && self
                .labels
                .iter()
                .all(|(key, req)| match (req, labels[key].as_str()) {
                    (LabelReq::Eq(v), Some(have)) => have == v,
                    (LabelReq::Eq(_), None) => false,
                    // As in Kubernetes, `k!=v` also selects objects without the label.
                    (LabelReq::Ne(v), have) => have != Some(v.as_str()),
                    (LabelReq::Exists, have) => have.is_some(),
                    (LabelReq::NotExists, have) => have.is_none(),
                })
    }
}

/// The value a supported field selector path compares against (an unset field is ""), or `None`
/// for unsupported paths.
fn field_value(object: &Value, path: &str) -> Option<String> {
    let pointer = match path {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "spec.nodeName" => "/spec/nodeName",
        "status.phase" => "/status/phase",
        _ => return None,
    };
    Some(
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::runtime::reflector::{self, ObjectRef};
    use kube::runtime::{watcher, WatchStreamExt};
    use kube::Api;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const WAIT: Duration = Duration::from_secs(20);

    async fn client(server: &FakeApiServer, addr: SocketAddr) -> kube::Client {
        client_with(server, addr, None).await
    }

    async fn client_with(
        server: &FakeApiServer,
        addr: SocketAddr,
        read_timeout: Option<Duration>,
    ) -> kube::Client {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        server.write_kubeconfig(&path, addr).unwrap();
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        config.read_timeout = read_timeout;
        kube::Client::try_from(config).unwrap()
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let polled = tokio::time::timeout(WAIT, async {
            while !cond() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        polled
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }

    fn names<K: kube::Resource + Clone>(store: &reflector::Store<K>) -> Vec<String>
    where
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|o| o.meta().name.clone().unwrap_or_default())
            .collect();
        names.sort();
        names
    }

    /// Runs a reflector over `api` with backoff on a task; returns its store and the task.
    fn reflect<K>(
        api: Api<K>,
        config: watcher::Config,
    ) -> (reflector::Store<K>, tokio::task::JoinHandle<()>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let (reader, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
        let task = tokio::spawn(stream.for_each(|_| async {}));
        (reader, task)
    }

    fn serve_local(server: &FakeApiServer) -> SocketAddr {
        server
            .serve(TcpListener::bind("127.0.0.1:0").unwrap())
            .unwrap()
    }

    #[tokio::test]
    async fn nodes_list_watch_update_delete() {
        let server = FakeApiServer::new();
        let addr = serve_local(&server);
        server
            .apply(node("n1", "10.0.0.1", &["10.1.1.0/24"], &[]))
            .unwrap();
        server
            .apply(node(
                "n2",
                "10.0.0.2",
                &["10.1.2.0/24", "fd00:1:2::/64"],
                &[],
            ))
            .unwrap();
        let (store, task) = reflect(
            Api::<Node>::all(client(&server, addr).await),
            watcher::Config::default(),
        );
        wait_for("2 nodes", || store.state().len() == 2).await;
        let n2 = store.get(&ObjectRef::new("n2")).unwrap();
        let spec = n2.spec.clone().unwrap();
        assert_eq!(spec.pod_cidrs.unwrap(), ["10.1.2.0/24", "fd00:1:2::/64"]);
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.1.2.0/24"));
        assert!(n2.metadata.uid.is_some() && n2.metadata.creation_timestamp.is_some());

        server
            .apply(node(
                "n1",
                "10.0.0.1",
                &["10.1.1.0/24"],
                &[("underroute.io/asn", "65001")],
            ))
            .unwrap();
        let annotated = || {
            store.get(&ObjectRef::new("n1")).is_some_and(|n| {
                n.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("underroute.io/asn"))
                    .map(String::as_str)
                    == Some("65001")
            })
        };
        wait_for("n1 annotated", annotated).await;

        server.delete("Node", None, "n2").unwrap();
        wait_for("n2 gone", || names(&store) == ["n1"]).await;
        let requests = server.requests();
        assert!(
            requests
                .iter()
                .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
            "{requests:?}"
        );
        task.abort();
    }

    #[tokio::test]
    async fn pods_field_selector() {
        let server = FakeApiServer::new();
        let addr = serve_local(&server);
        server
            .apply(pod("default", "a", "node1", &["10.1.1.5"], false))
            .unwrap();
        server
            .apply(pod(
                "kube-system",
                "b",
                "node1",
                &["10.1.1.6", "fd00::6"],
                false,
            ))
            .unwrap();
        server
            .apply(pod("default", "c", "node2", &["10.1.2.5"], false))
            .unwrap();
        let config = watcher::Config::default().fields("spec.nodeName=node1");
        let (store, task) = reflect(Api::<Pod>::all(client(&server, addr).await), config);
        wait_for("node1's pods", || names(&store) == ["a", "b"]).await;
        let b = store
            .get(&ObjectRef::new("b").within("kube-system"))
            .unwrap();
        let status = b.status.clone().unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.1.1.6"));
        assert_eq!(status.pod_ips.unwrap().len(), 2);

        // A pod on another node and a new pod on node1: only the latter shows up.
        server
            .apply(pod("default", "d", "node2", &["10.1.2.6"], false))
            .unwrap();
        server
            .apply(pod("default", "e", "node1", &["10.1.1.7"], true))
            .unwrap();
        wait_for("pod e", || names(&store) == ["a", "b", "e"]).await;
        server.delete("Pod", Some("kube-system"), "b").unwrap();
        server.delete("Pod", None, "c").unwrap();
        wait_for("pod b gone", || names(&store) == ["a", "e"]).await;
        task.abort();
    }

    #[tokio::test]
    async fn restart_with_compaction_relists() {
        let server = FakeApiServer::new();
        let addr = serve_local(&server);
        server.apply(node("n1", "10.0.0.1", &[], &[])).unwrap();
        server.apply(node("n2", "10.0.0.2", &[], &[])).unwrap();
        let (store, task) = reflect(
            Api::<Node>::all(client(&server, addr).await),
            watcher::Config::default(),
        );
        wait_for("2 nodes", || store.state().len() == 2).await;
        wait_for("a watch", || {
            server.requests().iter().any(|r| r.contains("watch=true"))
        })
        .await;

        server.stop();
        let seen_before = server.requests().len();
        server.apply(node("n3", "10.0.0.3", &[], &[])).unwrap();
        server.delete("Node", None, "n1").unwrap();
        server.compact();
        let compacted = server.resource_version();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            server.serve(TcpListener::bind(addr).unwrap()).unwrap(),
            addr
        );

        wait_for("store equal to server after restart", || {
            names(&store) == ["n2", "n3"]
        })
        .await;
        // After the restart: a watch from a version before the compaction (answered 410), then a
        // fresh list, which is what put n3 in the store.
        let after = server.requests().split_off(seen_before);
        let stale_watch = after.iter().position(|r| {
            let query = parse_query(r.split_once('?').map_or("", |(_, q)| q));
            query.contains_key("watch")
                && query["resourceVersion"].parse::<u64>().unwrap() < compacted
        });
        let stale_watch = stale_watch.unwrap_or_else(|| panic!("no stale watch in {after:?}"));
        assert!(
            after[stale_watch..].iter().any(|r| !r.contains("watch=")),
            "no re-list after 410: {after:?}"
        );
        let lists = server
            .requests()
            .iter()
            .filter(|r| r.starts_with("GET /api/v1/nodes?") && !r.contains("watch="))
            .count();
        assert!(lists >= 2, "{:?}", server.requests());
        task.abort();
    }

    #[tokio::test]
    async fn lists_come_in_pages_with_continue_tokens() {
        let server = FakeApiServer::new();
        let addr = serve_local(&server);
        for i in 0..5 {
            server
                .apply(node(&format!("n{i}"), "10.0.0.1", &[], &[]))
                .unwrap();
        }
        let (code, body) = raw_get(addr, "/api/v1/nodes?limit=2").await;
        let first: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, 200);
        assert_eq!(first["items"].as_array().unwrap().len(), 2);
        let token = first["metadata"]["continue"].as_str().unwrap().to_string();
        // A change between pages does not show in the later pages (one snapshot).
        server.apply(node("n9", "10.0.0.9", &[], &[])).unwrap();
        let mut names: Vec<String> = Vec::new();
        let mut next = Some(token);
        while let Some(t) = next {
            let (_, body) = raw_get(addr, &format!("/api/v1/nodes?limit=2&continue={t}")).await;
            let page: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                page["metadata"]["resourceVersion"],
                first["metadata"]["resourceVersion"]
            );
            for item in page["items"].as_array().unwrap() {
                names.push(item["metadata"]["name"].as_str().unwrap().to_string());
            }
            next = page["metadata"]["continue"].as_str().map(str::to_string);
        }
        assert_eq!(names, ["n2", "n3", "n4"]);
        // A token from before a compaction is too old.
        server.compact();
        let token = first["metadata"]["continue"].as_str().unwrap();
        let (code, _) = raw_get(addr, &format!("/api/v1/nodes?limit=2&continue={token}")).await;
        assert_eq!(code, 410);

        // kube-rs follows the tokens.
        let (store, task) = reflect(
            Api::<Node>::all(client(&server, addr).await),
            watcher::Config::default().page_size(2),
        );
        wait_for("6 nodes in pages of 2", || store.state().len() == 6).await;
        let paged = server
            .requests()
            .iter()
            .filter(|r| r.contains("limit=2") && r.contains("continue="))
            .count();
        assert!(paged >= 2, "{:?}", server.requests());
        task.abort();
    }

    #[tokio::test]
    async fn graceful_deletion_marks_then_removes() {
        let server = FakeApiServer::new();
        let addr = serve_local(&server);
        server
            .apply(pod("default", "a", "n1", &["10.1.1.5"], false))
            .unwrap();
        let (store, task) = reflect(
            Api::<Pod>::all(client(&server, addr).await),
            watcher::Config::default(),
        );
        wait_for("pod a", || names(&store) == ["a"]).await;
        server.begin_delete("Pod", None, "a", 30).unwrap();
        let terminating = || {
            store
                .get(&ObjectRef::new("a").within("default"))
                .is_some_and(|p| {
                    p.metadata.deletion_timestamp.is_some()
                        && p.metadata.deletion_grace_period_seconds == Some(30)
                })
        };
        wait_for("pod a terminating", terminating).await;
        assert_eq!(names(&store), ["a"]);
        server.delete("Pod", None, "a").unwrap();
        wait_for("pod a gone", || names(&store).is_empty()).await;
        task.abort();
    }

    #[tokio::test]
    async fn a_hung_server_silences_watches_until_the_client_gives_up() {
        let server = FakeApiServer::new();
        let addr = serve_local(&server);
        server.apply(node("n1", "10.0.0.1", &[], &[])).unwrap();
        // timeoutSeconds=1: kube-rs gives up on a watch stream that is silent for 1 + 5 s; a
        // request whose answer never starts needs the client's read timeout.
        let (store, task) = reflect(
            Api::<Node>::all(client_with(&server, addr, Some(Duration::from_secs(3))).await),
            watcher::Config::default().timeout(1),
        );
        wait_for("n1", || names(&store) == ["n1"]).await;
        wait_for("a watch", || {
            server.requests().iter().any(|r| r.contains("watch=true"))
        })
        .await;
        server.hang();
        server.apply(node("n2", "10.0.0.2", &[], &[])).unwrap();
        // Accepted, never answered.
        let unanswered =
            tokio::time::timeout(Duration::from_secs(1), raw_get(addr, "/api/v1/nodes")).await;
        assert!(unanswered.is_err(), "a hung server answered");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(names(&store), ["n1"], "a silent watch delivered a change");
        // Answering again does not revive the silent requests: only the client giving up on
        // them (idle or read timeout, then a new list and watch) brings n2.
        server.unhang();
        wait_for("n2 after the idle timeout", || {
            names(&store) == ["n1", "n2"]
        })
        .await;
        task.abort();
    }

    /// Sends one GET and returns (status code, body), de-chunking if needed.
    async fn raw_get(addr: SocketAddr, target: &str) -> (u16, String) {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        let response = tokio::time::timeout(WAIT, exchange).await.unwrap();
        let (head, mut rest) = response.split_once("\r\n\r\n").unwrap();
        let code = head.split(' ').nth(1).unwrap().parse().unwrap();
        if !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return (code, rest.to_string());
        }
        let mut body = String::new();
        loop {
            let (size, tail) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                return (code, body);
            }
            body.push_str(&tail[..size]);
            rest = &tail[size + 2..];
        }
    }

    #[tokio::test]
    async fn raw_wire_format() {
        let server = FakeApiServer::new();
        let addr = serve_local(&server);
        server.apply(node("n1", "10.0.0.1", &[], &[])).unwrap();
        server
            .apply(pod("other", "p", "n1", &["10.1.1.5"], false))
            .unwrap();
        let newest = server.apply(node("n2", "10.0.0.2", &[], &[])).unwrap();

        let (code, body) = raw_get(addr, "/api/v1/nodes?limit=500").await;
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((code, list["kind"].as_str()), (200, Some("NodeList")));
        assert_eq!(
            list["metadata"]["resourceVersion"],
            json!(newest.to_string())
        );
        assert_eq!(
            list["items"][1]["metadata"]["resourceVersion"],
            json!(newest.to_string())
        );

        // Exact list at an old version: the state then (n1 only).
        let (code, body) = raw_get(
            addr,
            "/api/v1/nodes?resourceVersion=1&resourceVersionMatch=Exact",
        )
        .await;
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((code, list["items"].as_array().unwrap().len()), (200, 1));

        // Namespaced path and `!=`.
        let (_, body) = raw_get(
            addr,
            "/api/v1/namespaces/other/pods?fieldSelector=spec.nodeName%21%3Dn2",
        )
        .await;
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["items"][0]["metadata"]["name"], json!("p"));
        let (_, body) = raw_get(addr, "/api/v1/namespaces/default/pods").await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["items"],
            json!([])
        );

        // A watch from 1 replays the two later changes, then ends at its timeout.
        let (code, body) = raw_get(
            addr,
            "/api/v1/nodes?watch=1&resourceVersion=1&timeoutSeconds=1",
        )
        .await;
        assert_eq!(code, 200);
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{body}");
        assert!(
            body.starts_with("{\"type\":\"ADDED\",\"object\":{"),
            "{body}"
        );
        assert_eq!(lines[0]["object"]["metadata"]["name"], json!("n2"));

        server.compact();
        let (code, body) = raw_get(addr, "/api/v1/nodes?watch=true&resourceVersion=1").await;
        let expected = "{\"type\":\"ERROR\",\"object\":".to_string()
            + &status_json(
                410,
                "Expired",
                &format!("too old resource version: 1 ({newest})"),
            )
            .to_string()
            + "}\n";
        assert_eq!((code, body.as_str()), (200, expected.as_str()));
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["object"]["code"], json!(410));

        let (code, body) = raw_get(
            addr,
            "/api/v1/nodes?resourceVersion=1&resourceVersionMatch=Exact",
        )
        .await;
        assert_eq!(
            (
                code,
                serde_json::from_str::<Value>(&body).unwrap()["reason"].as_str()
            ),
            (410, Some("Expired"))
        );
        let (code, body) = raw_get(addr, "/api/v1/services").await;
        assert_eq!(
            (
                code,
                serde_json::from_str::<Value>(&body).unwrap()["reason"].as_str()
            ),
            (404, Some("NotFound"))
        );
        let (code, _) = raw_get(addr, "/api/v1/nodes?watch=true&sendInitialEvents=true").await;
        assert_eq!(code, 422);
        let (code, body) = raw_get(addr, "/api/v1/nodes/n1").await;
        assert_eq!(
            (
                code,
                serde_json::from_str::<Value>(&body).unwrap()["kind"].as_str()
            ),
            (200, Some("Node"))
        );
    }
}
