//! Bounded waiting: polling with a deadline and running external commands with a timeout.
//! Nothing in the harness may wait without a deadline; a hung daemon must fail a test, not hang CI.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Calls `f` every `poll` until it returns `Some`, or fails once `timeout` has passed.
/// `f` is always called at least once, and once more right at the deadline.
pub fn wait_until<T>(
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("condition not met within {timeout:?}"));
        }
        thread::sleep(poll.min(deadline - now));
    }
}

/// Default timeout for one external helper command (ip, gobgp, birdc).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `cmd` to completion, killing it after `timeout`. stdout/stderr are captured.
/// Returns the output whatever the exit status; use [`run_ok`] to require success.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let desc = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start `{desc}`: {e}"))?;
    // Drain the pipes on threads so a chatty command cannot block on a full pipe while we poll.
    let mut out = child.stdout.take().expect("stdout was piped");
    let mut err = child.stderr.take().expect("stderr was piped");
    let out_t = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{desc}` did not finish within {timeout:?}"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for `{desc}`: {e}")),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run_bounded`] with [`CMD_TIMEOUT`], but a non-zero exit is an error carrying stderr.
pub fn run_ok(cmd: &mut Command) -> Result<Output, String> {
    let desc = describe(cmd);
    let out = run_bounded(cmd, CMD_TIMEOUT)?;
    if !out.status.success() {
        return Err(format!(
            "`{desc}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(out)
}

/// The command line as one string, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
