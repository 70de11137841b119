//! The `underroute-cni` binary: called by the container runtime with `CNI_*` variables and the
//! network configuration on stdin (see `underroute::cni`), or as `underroute-cni install ...` by
//! the DaemonSet to put itself and the conflist in place.

use std::collections::HashMap;
use std::io::{Read, Write};

use underroute::cni;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("install") {
        std::process::exit(install(&args[1..]));
    }
    let mut stdin = Vec::new();
    let vars: HashMap<String, String> = std::env::vars().collect();
    // VERSION may come without stdin; a read error is then the same as empty input.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    init_logging(&stdin);
    let reply = cni::run(&vars, &stdin);
    if let Some(out) = reply.stdout {
        let mut so = std::io::stdout().lock();
        let _ = so.write_all(out.as_bytes());
        let _ = so.write_all(b"\n");
        let _ = so.flush();
    }
    std::process::exit(reply.exit_code);
}

/// Logs go to `logFile` from the config if set, else stderr; never stdout, which is the
/// protocol's. Level from `UNDERROUTE_CNI_LOG` (default warn).
fn init_logging(stdin: &[u8]) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("UNDERROUTE_CNI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let log_file = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("logFile")?.as_str().map(str::to_string))
        .and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match log_file {
        Some(f) => b.with_writer(std::sync::Mutex::new(f)).init(),
        None => b.with_writer(std::io::stderr).init(),
    }
}

fn install(args: &[String]) -> i32 {
    let parsed = match cni::install::parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("underroute-cni install: {e}");
            eprintln!(
                "usage: underroute-cni install [--bin-dir DIR] [--conf-dir DIR] [--conflist FILE]"
            );
            return 2;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("underroute-cni install: cannot find own executable: {e}");
            return 1;
        }
    };
    match cni::install::install(&exe, &parsed) {
        Ok(paths) => {
            for p in paths {
                eprintln!("installed {}", p.display());
            }
            0
        }
        Err(e) => {
            eprintln!("underroute-cni install: {e}");
            1
        }
    }
}
