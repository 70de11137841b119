//! Network namespaces and the processes inside them, as RAII values.
//!
//! A [`Netns`] deletes its namespace on drop after killing whatever still runs in it; a [`Proc`]
//! SIGKILLs and reaps its process on drop. Declare the `Netns` before the daemons that run in it
//! so the daemons drop first. Nothing here ever runs a command in the host namespace other than
//! `ip netns add/del/pids`.

use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::Duration;

use super::wait::{run_ok, wait_until};

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Prefix of every namespace the harness creates; used to find leftovers of crashed runs.
const PREFIX: &str = "ur-";

/// A network namespace made for one test, with a temp dir for the files of what runs in it.
pub struct Netns {
    name: String,
    dir: Option<tempfile::TempDir>,
}

impl Netns {
    /// Creates `ur-<tag>-<pid>-<n>` with loopback up and IPv6 DAD off (addresses usable at once).
    pub fn new(tag: &str) -> Result<Netns, String> {
        SWEEP.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{tag}-{}-{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir()
            .map_err(|e| format!("temp dir for {name}: {e}"))?;
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on Drop cleans up, including when the setup below fails.
        let ns = Netns {
            name,
            dir: Some(dir),
        };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        // Per-namespace sysctls: they do not affect the host.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Temp dir for this namespace's configs, logs and sockets.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir is only taken in Drop").path()
    }

    /// Runs a command inside the namespace (bounded), whatever its exit status.
    pub fn exec(&self, args: &[&str]) -> Result<Output, String> {
        super::wait::run_bounded(&mut self.command(args), super::wait::CMD_TIMEOUT)
    }

    /// Runs a command inside the namespace; a non-zero exit is an error.
    pub fn exec_ok(&self, args: &[&str]) -> Result<Output, String> {
        run_ok(&mut self.command(args))
    }

    /// Runs a command inside the namespace and returns its stdout as text.
    pub fn exec_stdout(&self, args: &[&str]) -> Result<String, String> {
        let out = self.exec_ok(args)?;
        String::from_utf8(out.stdout).map_err(|e| format!("{args:?}: non-UTF-8 output: {e}"))
    }

    /// A `Command` for `ip netns exec NAME args...`, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Sets a (per-namespace) sysctl by writing /proc/sys inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), String> {
        self.exec_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Starts `cmd args...` in the namespace, stdout and stderr appended to `log`.
    /// The process is SIGKILLed if the spawning thread dies, so a crashed test leaves no daemons.
    pub fn spawn(&self, cmd: &str, args: &[&str], log: &Path) -> Result<Proc, String> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("log {}: {e}", log.display()))?;
        let f2 = f.try_clone().map_err(|e| format!("log dup: {e}"))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd])
            .args(args)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2);
        // SAFETY: prctl is async-signal-safe and touches only this (forked) process.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = c
            .spawn()
            .map_err(|e| format!("spawn {cmd} in {}: {e}", self.name))?;
        Ok(Proc {
            child,
            what: format!("{cmd} in {}", self.name),
            log: log.to_path_buf(),
        })
    }

    /// Moves the *calling thread* into this namespace (setns CLONE_NEWNET). Sockets it opens
    /// afterwards live in the namespace. Use a dedicated thread: it cannot come back, and the
    /// thread must not outlive the test. The namespace keeps existing while the thread is in it.
    pub fn enter_thread(&self) -> Result<(), String> {
        let path = format!("/run/netns/{}", self.name);
        let f = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
        // SAFETY: f is an open namespace fd for the duration of the call.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(format!(
                "setns({path}): {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// Pids of processes whose main thread is in this namespace (never our own).
    pub fn pids(&self) -> Vec<i32> {
        ns_pids(&self.name)
    }

    /// Prints every `*.log` file in this namespace's dir to stderr.
    pub fn dump_logs(&self) {
        if let Some(d) = &self.dir {
            dump_dir(d.path());
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
        }
        kill_all_in(&self.name);
        if let Err(e) = run_ok(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("harness: cannot delete namespace {}: {e}", self.name);
        }
        if let Some(d) = self.dir.take() {
            if std::env::var_os("UR_KEEP_LOGS").is_some() {
                eprintln!("harness: kept {}", d.keep().display());
            }
        }
    }
}

fn ns_pids(name: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    match run_ok(Command::new("ip").args(["netns", "pids", name])) {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|&p| p != me)
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn kill_all_in(name: &str) {
    for pid in ns_pids(name) {
        // SAFETY: plain kill(2); the pid was just reported as living in our namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // Dead processes vanish from `ip netns pids` once reaped; our own children are reaped by
    // their Proc (dropped earlier), others by init. Bounded: we delete the name regardless.
    let _ = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        ns_pids(name).is_empty().then_some(())
    });
}

/// Deletes `ur-*-<pid>-<n>` namespaces whose creating process no longer exists (a test run that
/// was SIGKILLed cannot run Drop). Namespaces of live processes, other test binaries included,
/// are left alone.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.rsplitn(3, '-').collect();
        let (Some(n), Some(pid)) = (parts.first(), parts.get(1)) else {
            continue;
        };
        if parts.len() < 3 || n.parse::<u32>().is_err() {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("harness: removing stale namespace {name} (pid {pid} is gone)");
        kill_all_in(&name);
        let _ = run_ok(Command::new("ip").args(["netns", "del", &name]));
    }
}

fn dump_dir(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_else(|e| format!("<unreadable: {e}>"));
        // The tail is what matters for a failure; whole logs of a long test drown the output.
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(200);
        eprintln!(
            "===== {} (last {} lines) =====",
            f.display(),
            lines.len() - start
        );
        for l in &lines[start..] {
            eprintln!("{l}");
        }
    }
}

/// A process started with [`Netns::spawn`]. Dropping it SIGKILLs and reaps it.
pub struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Where its stdout/stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Sends a signal, e.g. `libc::SIGSTOP`, `libc::SIGCONT`, `libc::SIGTERM`.
    pub fn signal(&self, sig: i32) -> Result<(), String> {
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        if rc != 0 {
            return Err(format!(
                "kill({}, {sig}) for {}: {}",
                self.pid(),
                self.what,
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    /// `Some(exit description)` once the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<String, String> {
        let what = self.what.clone();
        wait_until(timeout, Duration::from_millis(20), || self.exited())
            .map_err(|e| format!("{what} still running: {e}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGKILL also ends a SIGSTOPped process; then reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// IPv4 (/24) and IPv6 (/64) address of one end of a veth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Addrs {
    /// From literals in test code, e.g. `Addrs::new("10.0.0.1", "fd00::1")`. Panics on a typo.
    pub fn new(v4: &str, v6: &str) -> Addrs {
        Addrs {
            v4: v4.parse().expect("IPv4 literal in test"),
            v6: v6.parse().expect("IPv6 literal in test"),
        }
    }
}

/// Interface names of a veth made by [`link_pair`]: `a_if` in namespace a, `b_if` in b.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    pub a_if: String,
    pub b_if: String,
}

/// Connects two namespaces with a veth pair, both ends up, with `addr_x.v4/24` and
/// `addr_x.v6/64 nodad`. The pair is created from inside `a`, so it never exists in the host
/// namespace; it disappears with the namespaces.
pub fn link_pair(a: &Netns, b: &Netns, addr_a: Addrs, addr_b: Addrs) -> Result<VethPair, String> {
    // Interface names are per namespace, so a process-wide counter keeps them unique and short
    // (IFNAMSIZ is 16).
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pair = VethPair {
        a_if: format!("ur{n}a"),
        b_if: format!("ur{n}b"),
    };
    a.exec_ok(&[
        "ip",
        "link",
        "add",
        &pair.a_if,
        "type",
        "veth",
        "peer",
        "name",
        &pair.b_if,
        "netns",
        b.name(),
    ])?;
    for (ns, ifname, addrs) in [(a, &pair.a_if, addr_a), (b, &pair.b_if, addr_b)] {
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", addrs.v4),
            "dev",
            ifname,
        ])?;
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/64", addrs.v6),
            "dev",
            ifname,
            "nodad",
        ])?;
        ns.exec_ok(&["ip", "link", "set", ifname, "up"])?;
    }
    Ok(pair)
}
