//! `underroute-cni install`: the DaemonSet's init step. Copies the plugin binary into the CNI
//! bin dir and the conflist into the CNI config dir, each atomically (temp name in the target
//! dir, fsync, rename), so the runtime never executes or parses a half-written file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Copies `src` to `dir/name` atomically with `mode`; returns the final path.
pub fn install_file(src: &Path, dir: &Path, name: &str, mode: u32) -> std::io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let body = fs::read(src)?;
    let dst = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, &dst)?;
        fs::File::open(dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map(|()| dst)
}

/// Parsed `install` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallArgs {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    /// The conflist to install (its file name is kept); `None`: binary only.
    pub conflist: Option<PathBuf>,
}

/// Parses `--bin-dir DIR --conf-dir DIR [--conflist FILE]` (defaults /opt/cni/bin, /etc/cni/net.d).
pub fn parse_args(args: &[String]) -> Result<InstallArgs, String> {
    let mut a = InstallArgs {
        bin_dir: PathBuf::from("/opt/cni/bin"),
        conf_dir: PathBuf::from("/etc/cni/net.d"),
        conflist: None,
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{k} needs a value"))
            .map(PathBuf::from)?;
        match k.as_str() {
            "--bin-dir" => a.bin_dir = v,
            "--conf-dir" => a.conf_dir = v,
            "--conflist" => a.conflist = Some(v),
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// Installs `self_exe` as `underroute-cni` and the conflist, binary first (a config naming a
/// plugin that is not there yet would fail every pod).
pub fn install(self_exe: &Path, a: &InstallArgs) -> std::io::Result<Vec<PathBuf>> {
    let mut out = vec![install_file(self_exe, &a.bin_dir, "underroute-cni", 0o755)?];
    if let Some(c) = &a.conflist {
        let name = c
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::other(format!("{}: no file name", c.display())))?;
        out.push(install_file(c, &a.conf_dir, name, 0o644)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_copies_binary_and_conflist_atomically() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("exe");
        fs::write(&exe, b"#!/bin/sh\n").unwrap();
        let cl = d.path().join("10-underlay.conflist");
        fs::write(&cl, b"{}").unwrap();
        let a = parse_args(&[
            "--bin-dir".into(),
            d.path().join("bin").display().to_string(),
            "--conf-dir".into(),
            d.path().join("net.d").display().to_string(),
            "--conflist".into(),
            cl.display().to_string(),
        ])
        .unwrap();
        let out = install(&exe, &a).unwrap();
        assert_eq!(out.len(), 2);
        let bin = d.path().join("bin/underroute-cni");
        assert_eq!(fs::read(&bin).unwrap(), b"#!/bin/sh\n");
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read(d.path().join("net.d/10-underlay.conflist")).unwrap(),
            b"{}"
        );
        // No temp files left behind in either target dir.
        for sub in ["bin", "net.d"] {
            assert_eq!(fs::read_dir(d.path().join(sub)).unwrap().count(), 1);
        }
        // Reinstalling replaces in place.
        install(&exe, &a).unwrap();
    }

    #[test]
    fn bad_install_args_are_refused() {
        assert!(parse_args(&["--bin-dir".into()]).is_err());
        assert!(parse_args(&["--frob".into(), "x".into()]).is_err());
    }
}
