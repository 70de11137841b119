//! The pod registry: one JSON file per underlay pod attachment, written by `underroute-cni` on
//! ADD and removed on DEL/GC, read by the agent (which advertises each pod's /32).
//!
//! Owns: the files `<containerID>-<ifname>.json` in one directory. Writes are atomic (temp file in
//! the same directory, fsync, rename), so a reader never sees half a record. It never interprets
//! other files in the directory, and a broken file is reported, not fatal to [`PodRegistry::list`].

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cni::config::Mode;

/// One attachment as recorded for the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRecord {
    pub container_id: String,
    pub ifname: String,
    /// The netns path the runtime gave on ADD.
    pub netns: String,
    /// The pod's addresses, from `prevResult`.
    pub ips: Vec<IpNet>,
    pub mode: Mode,
    /// The host-side veth (veth mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_veth: Option<String>,
    /// Seconds since the Unix epoch when ADD wrote the record.
    pub created_unix: u64,
}

/// Errors of the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid attachment name {0:?}")]
    BadName(String),
    #[error("{path}: {why}")]
    Encode { path: PathBuf, why: String },
}

/// A file that [`PodRegistry::list`] skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRecord {
    pub path: PathBuf,
    pub why: String,
}

/// The registry directory.
#[derive(Debug, Clone)]
pub struct PodRegistry {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A name part must not be able to leave the directory or hide as a temp file. Interface names
/// may hold almost any byte, so only what matters for a path is refused.
fn check_part(s: &str) -> Result<(), RegistryError> {
    let ok = !s.is_empty()
        && !s.starts_with('.')
        && !s.chars().any(|c| c == '/' || c == '\0' || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadName(s.to_string()))
    }
}

impl PodRegistry {
    /// A registry in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> PodRegistry {
        PodRegistry { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of one attachment.
    pub fn path_of(&self, container_id: &str, ifname: &str) -> Result<PathBuf, RegistryError> {
        check_part(container_id)?;
        check_part(ifname)?;
        Ok(self.dir.join(format!("{container_id}-{ifname}.json")))
    }

    /// Writes (or replaces) the record atomically.
    pub fn record(&self, rec: &PodRecord) -> Result<(), RegistryError> {
        let path = self.path_of(&rec.container_id, &rec.ifname)?;
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let body = serde_json::to_vec_pretty(rec).map_err(|e| RegistryError::Encode {
            path: path.clone(),
            why: e.to_string(),
        })?;
        // Unique per writer, and dot-prefixed so list() never reads it.
        let tmp = self.dir.join(format!(
            ".{}-{}.{}.tmp",
            rec.container_id,
            rec.ifname,
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename itself is durable only once the directory is synced.
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(&path)(e)
        })
    }

    /// Removes an attachment's record; absent is fine (DEL may run twice).
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), RegistryError> {
        let path = self.path_of(container_id, ifname)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Reads one attachment's record, if present.
    pub fn get(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<PodRecord>, RegistryError> {
        let path = self.path_of(container_id, ifname)?;
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| RegistryError::Encode {
                    path,
                    why: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// All records, sorted by file name. A missing directory is an empty registry; unreadable
    /// or undecodable files are skipped and returned in the second list.
    pub fn list_with_broken(&self) -> Result<(Vec<PodRecord>, Vec<BrokenRecord>), RegistryError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Vec::new(), Vec::new()))
            }
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        paths.sort();
        let mut ok = Vec::new();
        let mut broken = Vec::new();
        for p in paths {
            match fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<PodRecord>(&b).map_err(|e| e.to_string()))
            {
                Ok(r) => ok.push(r),
                Err(why) => broken.push(BrokenRecord { path: p, why }),
            }
        }
        Ok((ok, broken))
    }

    /// All readable records; broken files are logged (with what to do) and skipped.
    pub fn list(&self) -> Result<Vec<PodRecord>, RegistryError> {
        let (ok, broken) = self.list_with_broken()?;
        for b in broken {
            tracing::warn!(path = %b.path.display(), why = %b.why,
                "skipping unreadable pod record; remove it if its pod is gone");
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> PodRecord {
        PodRecord {
            container_id: id.into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            ips: vec!["10.10.20.50/24".parse().unwrap()],
            mode: Mode::Veth,
            host_veth: Some("ur0123456789abc".into()),
            created_unix: 1,
        }
    }

    #[test]
    fn record_list_remove_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let r = PodRegistry::new(d.path().join("pods"));
        assert!(
            r.list().unwrap().is_empty(),
            "a missing dir is an empty registry"
        );
        r.record(&rec("b")).unwrap();
        r.record(&rec("a")).unwrap();
        let l = r.list().unwrap();
        assert_eq!(
            l.iter()
                .map(|x| x.container_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(r.get("a", "eth0").unwrap(), Some(rec("a")));
        assert!(r.dir().join("a-eth0.json").exists());
        r.remove("a", "eth0").unwrap();
        r.remove("a", "eth0").unwrap();
        assert_eq!(r.list().unwrap().len(), 1);
    }

    #[test]
    fn record_replaces_atomically_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let r = PodRegistry::new(d.path());
        r.record(&rec("a")).unwrap();
        let mut again = rec("a");
        again.created_unix = 2;
        r.record(&again).unwrap();
        assert_eq!(r.get("a", "eth0").unwrap().map(|x| x.created_unix), Some(2));
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn broken_files_are_reported_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let r = PodRegistry::new(d.path());
        r.record(&rec("a")).unwrap();
        fs::write(d.path().join("junk-eth0.json"), b"{").unwrap();
        fs::write(d.path().join("notes.txt"), b"x").unwrap();
        let (ok, broken) = r.list_with_broken().unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(broken.len(), 1);
        assert!(broken[0].path.ends_with("junk-eth0.json"));
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        let r = PodRegistry::new("/nonexistent");
        assert!(r.path_of("../x", "eth0").is_err());
        assert!(r.path_of("a", "x/y").is_err());
        assert!(r.remove(".hidden", "eth0").is_err());
    }
}
