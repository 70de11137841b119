//! Driving CNI plugin chains the way a container runtime does, inside namespaces: the runner
//! executes each plugin of a conflist in order with the previous result (DEL in reverse), with
//! the plugin process itself inside a "host" namespace made by the test, never the machine's.
//! Also the small TCP/UDP echo servers and probes the Service tests use.
//!
//! Owns: a temp dir per runner (plugin symlinks, host-local's IPAM state). Every plugin run and
//! every probe is bounded in time.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::net::IpAddr;

use super::netns::{link_pair, Addrs, Netns};

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// Upper bound for one plugin invocation.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one plugin invocation returned.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl PluginOutput {
    /// stdout as JSON (results and errors are both JSON).
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(self.stdout.trim())
            .map_err(|e| format!("stdout is not JSON ({e}): {:?}", self.stdout))
    }
}

/// One attachment: what the runtime passes in `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
}

impl Attachment {
    /// The attachment of `eth0` in `pod`.
    pub fn eth0(container_id: &str, pod: &Netns) -> Attachment {
        Attachment {
            container_id: container_id.to_string(),
            netns: Some(netns_path(pod)),
            ifname: "eth0".into(),
        }
    }
}

/// The path a runtime would pass as `CNI_NETNS` for a namespace.
pub fn netns_path(ns: &Netns) -> String {
    format!("/run/netns/{}", ns.name())
}

/// Runs plugins inside a host namespace.
pub struct CniRunner {
    host_ns: PathBuf,
    cni_path: String,
    dir: tempfile::TempDir,
}

impl CniRunner {
    /// A runner whose plugins run in `host`; `underroute-cni` is `our_bin`, everything else
    /// comes from [`REFERENCE_PLUGINS`].
    pub fn new(host: &Netns, our_bin: &Path) -> Result<CniRunner, String> {
        let dir = tempfile::Builder::new()
            .prefix("ur-cni.")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
        std::os::unix::fs::symlink(our_bin, bin.join("underroute-cni"))
            .map_err(|e| format!("symlink: {e}"))?;
        Ok(CniRunner {
            host_ns: PathBuf::from(netns_path(host)),
            cni_path: format!("{}:{REFERENCE_PLUGINS}", bin.display()),
            dir,
        })
    }

    /// A directory for host-local's state (`ipam.dataDir`), so tests never touch /var/lib/cni.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// A directory for the pod registry (`registryDir`).
    pub fn registry_dir(&self) -> PathBuf {
        self.dir.path().join("pods")
    }

    fn find(&self, plugin: &str) -> Result<PathBuf, String> {
        self.cni_path
            .split(':')
            .map(|d| Path::new(d).join(plugin))
            .find(|p| p.exists())
            .ok_or_else(|| format!("plugin {plugin} not found in {}", self.cni_path))
    }

    /// Runs `plugin` with exactly these `CNI_*` variables (others unset) and `stdin`. This is the
    /// low-level call the error-case tests use.
    pub fn exec_raw(
        &self,
        plugin: &str,
        vars: &[(&str, &str)],
        stdin: &[u8],
    ) -> Result<PluginOutput, String> {
        let path = self.find(plugin)?;
        let ns =
            File::open(&self.host_ns).map_err(|e| format!("{}: {e}", self.host_ns.display()))?;
        let fd = ns.as_raw_fd();
        let mut cmd = Command::new(&path);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(vars.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; it moves only the forked child into the host
        // namespace before exec, and `ns` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", path.display()))?;
        if let Some(mut si) = child.stdin.take() {
            let _ = si.write_all(stdin);
        }
        let mut so = child.stdout.take().ok_or("stdout not piped")?;
        let mut se = child.stderr.take().ok_or("stderr not piped")?;
        let t_out = thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if start.elapsed() > PLUGIN_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{plugin} did not finish within {PLUGIN_TIMEOUT:?}"));
                }
                Ok(None) => thread::sleep(Duration::from_micros(200)),
                Err(e) => return Err(format!("wait {plugin}: {e}")),
            }
        };
        let elapsed = start.elapsed();
        Ok(PluginOutput {
            exit_code: status.code().unwrap_or(-1),
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
            elapsed,
        })
    }

    /// Runs one plugin of a conflist for `command`, as the spec says: the plugin's object plus
    /// the list's `cniVersion` and `name`, and `prevResult` when given.
    pub fn exec(
        &self,
        conflist: &Value,
        index: usize,
        command: &str,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<PluginOutput, String> {
        let conf = plugin_conf(conflist, index, prev)?;
        let plugin = conf
            .get("type")
            .and_then(Value::as_str)
            .ok_or("plugin without type")?
            .to_string();
        let mut vars = vec![
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", att.container_id.clone()),
            ("CNI_IFNAME", att.ifname.clone()),
            ("CNI_PATH", self.cni_path.clone()),
        ];
        if let Some(n) = &att.netns {
            vars.push(("CNI_NETNS", n.clone()));
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.exec_raw(&plugin, &vars, conf.to_string().as_bytes())
    }

    /// ADD through the whole chain; the final result, or the first failure (after which, like a
    /// runtime, it runs DEL on the whole chain).
    pub fn add(&self, conflist: &Value, att: &Attachment) -> Result<Value, String> {
        let n = plugins(conflist)?.len();
        let mut prev: Option<Value> = None;
        for i in 0..n {
            let out = self.exec(conflist, i, "ADD", att, prev.as_ref())?;
            if out.exit_code != 0 {
                let _ = self.del(conflist, att, prev.as_ref());
                return Err(format!(
                    "ADD plugin {i} exit {}: {} {}",
                    out.exit_code, out.stdout, out.stderr
                ));
            }
            prev = Some(out.json()?);
        }
        prev.ok_or_else(|| "empty chain".into())
    }

    /// ADD, returning the outputs of each plugin (for error-case tests and timings).
    pub fn add_outputs(
        &self,
        conflist: &Value,
        att: &Attachment,
    ) -> Result<Vec<PluginOutput>, String> {
        let n = plugins(conflist)?.len();
        let mut prev: Option<Value> = None;
        let mut outs = Vec::new();
        for i in 0..n {
            let out = self.exec(conflist, i, "ADD", att, prev.as_ref())?;
            let ok = out.exit_code == 0;
            if ok {
                prev = Some(out.json()?);
            }
            outs.push(out);
            if !ok {
                break;
            }
        }
        Ok(outs)
    }

    /// DEL through the chain in reverse, each plugin with the cached ADD result (if any).
    pub fn del(
        &self,
        conflist: &Value,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<(), String> {
        let n = plugins(conflist)?.len();
        let mut errs = Vec::new();
        for i in (0..n).rev() {
            let out = self.exec(conflist, i, "DEL", att, prev)?;
            if out.exit_code != 0 {
                errs.push(format!(
                    "DEL plugin {i} exit {}: {} {}",
                    out.exit_code, out.stdout, out.stderr
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// CHECK of one plugin with the cached result.
    pub fn check(
        &self,
        conflist: &Value,
        index: usize,
        att: &Attachment,
        prev: &Value,
    ) -> Result<PluginOutput, String> {
        self.exec(conflist, index, "CHECK", att, Some(prev))
    }

    /// GC (spec 1.1) of one plugin with the attachments that are still valid.
    pub fn gc(
        &self,
        conflist: &Value,
        index: usize,
        valid: &[(&str, &str)],
    ) -> Result<PluginOutput, String> {
        let mut list = conflist.clone();
        list["cni.dev/valid-attachments"] = json!(valid
            .iter()
            .map(|(c, i)| json!({"containerID": c, "ifname": i}))
            .collect::<Vec<_>>());
        let conf = plugin_conf(&list, index, None)?;
        let plugin = conf
            .get("type")
            .and_then(Value::as_str)
            .ok_or("no type")?
            .to_string();
        self.exec_raw(
            &plugin,
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", &self.cni_path)],
            conf.to_string().as_bytes(),
        )
    }
}

fn plugins(conflist: &Value) -> Result<&Vec<Value>, String> {
    conflist
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| "conflist without plugins".into())
}

/// The per-plugin config the spec derives from a conflist.
pub fn plugin_conf(conflist: &Value, index: usize, prev: Option<&Value>) -> Result<Value, String> {
    let mut conf = plugins(conflist)?
        .get(index)
        .cloned()
        .ok_or_else(|| format!("no plugin {index}"))?;
    conf["cniVersion"] = conflist["cniVersion"].clone();
    conf["name"] = conflist["name"].clone();
    if let Some(v) = conflist.get("cni.dev/valid-attachments") {
        conf["cni.dev/valid-attachments"] = v.clone();
    }
    if let Some(p) = prev {
        conf["prevResult"] = p.clone();
    }
    Ok(conf)
}

/// A TCP and UDP echo server on `port` in a namespace, answering `"<tag>:<request>"`.
/// Stops (and its thread ends) on drop.
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    /// IPv4 (0.0.0.0) server.
    pub fn start(ns: &Netns, port: u16, tag: &str) -> Result<EchoServer, String> {
        EchoServer::start_on(ns, "0.0.0.0", port, tag)
    }

    /// IPv6-only ([::]) server.
    pub fn start_v6(ns: &Netns, port: u16, tag: &str) -> Result<EchoServer, String> {
        EchoServer::start_on(ns, "::", port, tag)
    }

    fn start_on(
        ns: &Netns,
        bind: &'static str,
        port: u16,
        tag: &str,
    ) -> Result<EchoServer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let mut threads = Vec::new();
        for udp in [false, true] {
            let ns_path = netns_path(ns);
            let stop = stop.clone();
            let tx = tx.clone();
            let tag = tag.to_string();
            threads.push(thread::spawn(move || {
                let entered = File::open(&ns_path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| {
                        // SAFETY: f is an open netns fd; only this thread changes namespace.
                        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                            Err(std::io::Error::last_os_error().to_string())
                        } else {
                            Ok(())
                        }
                    });
                if let Err(e) = entered {
                    let _ = tx.send(Err(e));
                    return;
                }
                if udp {
                    serve_udp(bind, port, &tag, &stop, &tx);
                } else {
                    serve_tcp(bind, port, &tag, &stop, &tx);
                }
            }));
        }
        for _ in 0..2 {
            rx.recv_timeout(Duration::from_secs(5))
                .map_err(|e| format!("echo server start: {e}"))??;
        }
        Ok(EchoServer { stop, threads })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(
    bind: &str,
    port: u16,
    tag: &str,
    stop: &AtomicBool,
    tx: &std::sync::mpsc::Sender<Result<(), String>>,
) {
    let l = match TcpListener::bind((bind, port)).and_then(|l| l.set_nonblocking(true).map(|()| l))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = tx.send(Err(format!("tcp bind {port}: {e}")));
            return;
        }
    };
    let _ = tx.send(Ok(()));
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 256];
                if let Ok(n) = s.read(&mut buf) {
                    let _ = s.write_all(
                        format!("{tag}:{}", String::from_utf8_lossy(&buf[..n])).as_bytes(),
                    );
                }
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn serve_udp(
    bind: &str,
    port: u16,
    tag: &str,
    stop: &AtomicBool,
    tx: &std::sync::mpsc::Sender<Result<(), String>>,
) {
    let s = match UdpSocket::bind((bind, port)).and_then(|s| {
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .map(|()| s)
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(format!("udp bind {port}: {e}")));
            return;
        }
    };
    let _ = tx.send(Ok(()));
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(
                format!("{tag}:{}", String::from_utf8_lossy(&buf[..n])).as_bytes(),
                from,
            );
        }
    }
}

/// Runs `f` on a thread inside `ns` and returns its result.
fn in_ns<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let path = netns_path(ns);
    thread::spawn(move || {
        let f_ns = File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: as in EchoServer::start.
        if unsafe { libc::setns(f_ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        f()
    })
    .join()
    .map_err(|_| "probe thread panicked".to_string())?
}

/// A TCP request from inside `ns` to `dst`; the reply text, or why not (bounded by `timeout`).
pub fn tcp_probe(
    ns: &Netns,
    dst: SocketAddr,
    msg: &str,
    timeout: Duration,
) -> Result<String, String> {
    let msg = msg.to_string();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&dst, timeout)
            .map_err(|e| format!("tcp connect {dst}: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(|e| format!("tcp read {dst}: {e}"))?;
        Ok(out)
    })
}

/// A UDP request from inside `ns` to `dst`, retried a few times within `timeout`.
pub fn udp_probe(
    ns: &Netns,
    dst: SocketAddr,
    msg: &str,
    timeout: Duration,
) -> Result<String, String> {
    let msg = msg.to_string();
    in_ns(ns, move || {
        let local = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(local).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            let _ = s.send_to(msg.as_bytes(), dst);
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err(format!("no UDP reply from {dst} within {timeout:?}"))
    })
}

/// A node and its underlay, all namespaces: `host` with uplink 10.10.20.1/24 to `lan` (10.10.20.254, the
/// router), default route via the router, forwarding on (as on any Kubernetes node).
pub struct UnderlayLab {
    pub runner: CniRunner,
    /// The host's uplink (the macvlan master).
    pub uplink: String,
    pub host: Netns,
    pub lan: Netns,
}

impl UnderlayLab {
    /// Builds the lab; `our_bin` is the underroute-cni binary under test.
    pub fn new(tag: &str, our_bin: &Path) -> Result<UnderlayLab, String> {
        let lan = Netns::new(&format!("{tag}l"))?;
        let host = Netns::new(&format!("{tag}h"))?;
        let pair = link_pair(
            &lan,
            &host,
            Addrs::new("10.10.20.254", "fd00:20::254"),
            Addrs::new("10.10.20.1", "fd00:20::1"),
        )?;
        host.exec_ok(&["ip", "route", "add", "default", "via", "10.10.20.254"])?;
        host.sysctl("net.ipv4.ip_forward", "1")?;
        let runner = CniRunner::new(&host, our_bin)?;
        Ok(UnderlayLab {
            runner,
            uplink: pair.b_if,
            host,
            lan,
        })
    }

    /// macvlan on the uplink with host-local in 10.10.20.50-99, then `ours` (if any) as
    /// underroute-cni with the lab's registry dir.
    pub fn macvlan_chain(&self, ours: Option<Value>) -> Value {
        let mut plugins = vec![json!({
            "type": "macvlan", "master": self.uplink, "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.10.20.0/24",
                     "rangeStart": "10.10.20.50", "rangeEnd": "10.10.20.99",
                     "gateway": "10.10.20.254", "routes": [{"dst": "0.0.0.0/0"}],
                     "dataDir": self.runner.ipam_dir()}
        })];
        if let Some(mut o) = ours {
            o["type"] = json!("underroute-cni");
            o["registryDir"] = json!(self.runner.registry_dir());
            plugins.push(o);
        }
        json!({"cniVersion": "1.0.0", "name": "underlay", "plugins": plugins})
    }

    /// A bridge pod network 10.244.0.0/24 on `cni0` with the host as gateway.
    pub fn bridge_chain(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "podnet", "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": true, "isDefaultGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.244.0.0/24",
                     "dataDir": self.runner.ipam_dir()}
        }]})
    }

    /// kube-proxy's nftables mode in miniature: DNAT ClusterIP:80 to the backend, for
    /// traffic arriving (prerouting) and from host processes (output), TCP and UDP.
    pub fn services(&self, svcs: &[(&str, IpAddr, u16)]) -> Result<(), String> {
        let mut rules = String::new();
        for (vip, be, port) in svcs {
            for proto in ["tcp", "udp"] {
                rules.push_str(&format!(
                    "ip daddr {vip} {proto} dport 80 dnat to {be}:{port}\n"
                ));
            }
        }
        let script = format!(
            "table ip kube {{\n chain pre {{ type nat hook prerouting priority dstnat; policy accept;\n{rules} }}\n \
             chain out {{ type nat hook output priority -100; policy accept;\n{rules} }}\n}}\n"
        );
        let f = self.host.dir().join("kube.nft");
        std::fs::write(&f, script).map_err(|e| format!("{}: {e}", f.display()))?;
        self.host
            .exec_ok(&["nft", "-f", &f.display().to_string()])?;
        Ok(())
    }
}

/// On failure: what each namespace looks like.
pub fn dump(nss: &[&Netns]) {
    for ns in nss {
        for cmd in [
            &["ip", "addr"][..],
            &["ip", "route"],
            &["ip", "neigh"],
            &["nft", "list", "ruleset"],
            &[
                "sysctl",
                "net.ipv4.conf.all.rp_filter",
                "net.ipv4.ip_forward",
            ],
        ] {
            if let Ok(o) = ns.exec(cmd) {
                eprintln!(
                    "== {} {cmd:?}\n{}{}",
                    ns.name(),
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

/// The first address of a CNI result.
/// The first address of a CNI result. Panics if there is none (test helper).
pub fn first_ip(result: &Value) -> IpAddr {
    let s = result["ips"][0]["address"]
        .as_str()
        .expect("result has an address");
    s.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("address")
}
