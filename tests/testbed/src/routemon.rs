//! Watching a namespace's routing tables while something happens (a restart, a withdrawal):
//! `ip monitor route` inside the namespace, every line stamped with the moment it arrived.
//!
//! Why: a route that is deleted and put back between two looks at `ip route` is invisible to
//! a test that polls; the kernel's own notifications are not. Owns the monitor process and its
//! reader thread; it only ever adds and removes one marker route in a private table of the
//! namespace it watches (to know that the monitor is listening).

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::Netns;
use super::wait::wait_until;

/// A table no test uses, for the marker route.
const MARKER_TABLE: &str = "252";
const MARKER: &str = "192.0.2.254/32";

/// One notification: a route added or changed (`deleted` false) or deleted.
#[derive(Debug, Clone)]
pub struct RouteEvent {
    /// When the line arrived.
    pub at: Instant,
    /// `Deleted ...`.
    pub deleted: bool,
    /// The route as `ip` prints it, without the `Deleted ` prefix.
    pub route: String,
}

impl RouteEvent {
    /// The destination (`default`, `10.0.0.0/24`, `192.0.2.1`): the first word after the
    /// route type, if `ip` printed one.
    pub fn destination(&self) -> &str {
        const TYPES: &[&str] = &[
            "unicast",
            "unreachable",
            "blackhole",
            "prohibit",
            "local",
            "broadcast",
            "multicast",
            "throw",
            "anycast",
        ];
        self.route
            .split_whitespace()
            .find(|w| !TYPES.contains(w))
            .unwrap_or("")
    }

    /// The table: the word after `table`, or `main` when `ip` printed none.
    pub fn table(&self) -> &str {
        let mut words = self.route.split_whitespace();
        words
            .by_ref()
            .find(|w| *w == "table")
            .and_then(|_| words.next())
            .unwrap_or("main")
    }
}

/// `ip monitor route` running in a namespace. Dropping it ends the monitor.
pub struct RouteMonitor {
    child: Child,
    events: Arc<Mutex<Vec<RouteEvent>>>,
    reader: Option<JoinHandle<()>>,
}

impl RouteMonitor {
    /// Starts the monitor in `ns` and returns once it is listening (its marker route was seen).
    pub fn start(ns: &Netns) -> Result<RouteMonitor, String> {
        let mut child = ns
            .command(&["ip", "monitor", "route"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ip monitor route in {}: {e}", ns.name()))?;
        let stdout = child.stdout.take().ok_or("ip monitor: no stdout")?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let at = Instant::now();
                let (deleted, route) = match line.strip_prefix("Deleted ") {
                    Some(rest) => (true, rest.trim().to_string()),
                    None => (false, line.trim().to_string()),
                };
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(RouteEvent { at, deleted, route });
            }
        });
        let mon = RouteMonitor {
            child,
            events,
            reader: Some(reader),
        };
        // Listening once a change made after the spawn shows up; bounded.
        let marker = ["unreachable", MARKER, "table", MARKER_TABLE];
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
            let mut add = vec!["ip", "route", "replace"];
            add.extend_from_slice(&marker);
            let _ = ns.exec(&add);
            let seen = mon
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|e| e.route.contains(MARKER.trim_end_matches("/32")));
            let mut del = vec!["ip", "route", "del"];
            del.extend_from_slice(&marker);
            let _ = ns.exec(&del);
            seen.then_some(())
        })
        .map_err(|e| format!("ip monitor in {} not listening: {e}", ns.name()))?;
        Ok(mon)
    }

    /// Every notification so far, the marker's excluded.
    pub fn events(&self) -> Vec<RouteEvent> {
        let marker = MARKER.trim_end_matches("/32");
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|e| e.destination() != marker)
            .cloned()
            .collect()
    }

    /// Deletions of routes to `destination` (as `ip` prints it: `default`,
    /// `198.51.100.0/24`), in every table.
    pub fn deletions(&self, destination: &str) -> Vec<RouteEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.deleted && e.destination() == destination)
            .collect()
    }

    /// All events as text, for failure messages.
    pub fn dump(&self, since: Instant) -> String {
        self.events()
            .iter()
            .map(|e| {
                format!(
                    "{:>8.3}s {}{}\n",
                    e.at.saturating_duration_since(since).as_secs_f64(),
                    if e.deleted { "Deleted " } else { "" },
                    e.route
                )
            })
            .collect()
    }
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
