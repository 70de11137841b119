//! The DaemonSet's CNI install step (deploy/cni/install.sh -> `underroute-cni install`) and the
//! example conflists in deploy/cni. Needs no root: everything goes to temp dirs.

use std::path::Path;
use std::process::Command;

use underroute::cni::config::{Need, NetConf};
use underroute_testbed::cni::plugin_conf;

const OUR_BIN: &str = env!("CARGO_BIN_EXE_underroute-cni");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/cni");

#[test]
fn install_script_puts_binary_and_conflist_in_place_atomically() {
    let d = tempfile::tempdir().expect("temp dir");
    let (bin, conf) = (d.path().join("bin"), d.path().join("net.d"));
    let conflist = Path::new(DEPLOY).join("underlay-macvlan.conflist");
    for _ in 0..2 {
        // Twice: an upgrade replaces the files in place.
        let out = Command::new("sh")
            .arg(Path::new(DEPLOY).join("install.sh"))
            .env("UNDERROUTE_CNI", OUR_BIN)
            .env("CNI_BIN_DIR", &bin)
            .env("CNI_CONF_DIR", &conf)
            .env("CNI_CONFLIST", &conflist)
            .output()
            .expect("install.sh runs");
        assert!(out.status.success(), "{out:?}");
    }
    let installed = bin.join("underroute-cni");
    assert_eq!(
        std::fs::read(&installed).expect("binary"),
        std::fs::read(OUR_BIN).expect("built binary")
    );
    assert_eq!(
        std::fs::read(conf.join("underlay-macvlan.conflist")).expect("conflist"),
        std::fs::read(&conflist).expect("example")
    );
    for dir in [&bin, &conf] {
        let names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names.len(), 1, "no temp files left: {names:?}");
    }
    // The installed copy is a working plugin.
    let v = Command::new(&installed)
        .env("CNI_COMMAND", "VERSION")
        .output()
        .expect("VERSION");
    assert!(String::from_utf8_lossy(&v.stdout).contains("supportedVersions"));
}

#[test]
fn example_conflists_are_valid_underroute_configs() {
    for f in ["underlay-macvlan.conflist", "underlay-bridge.conflist"] {
        let p = Path::new(DEPLOY).join(f);
        let list: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).expect("example")).expect("JSON");
        let n = list["plugins"].as_array().map(Vec::len).unwrap_or(0);
        let ours = plugin_conf(&list, n - 1, None).expect("plugin conf");
        assert_eq!(ours["type"], "underroute-cni", "{f}: ours comes last");
        NetConf::parse(ours.to_string().as_bytes(), Need::Routes)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}
