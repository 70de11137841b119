//! The manifests in deploy/ against the Kubernetes OpenAPI schemas, offline (deploy/validate.py
//! with the schemas the kubernetes-validate package ships; .ci/deps installs it), and the
//! ConfigMap's agent configuration through `underroute agent --check` and its conflist through
//! the plugin's own parser. Needs no root.

use std::path::{Path, PathBuf};
use std::process::Command;

use underroute::cni::config::{Need, NetConf};
use underroute_testbed::cni::plugin_conf;

const BIN: &str = env!("CARGO_BIN_EXE_underroute");
const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
/// Where .ci/deps puts the validator on machines whose system Python refuses pip installs.
const CI_VENV_PYTHON: &str = "/opt/underroute-ci/venv/bin/python3";

/// A Python that can import kubernetes_validate: $UNDERROUTE_PYTHON, the CI venv, or python3.
fn python() -> PathBuf {
    let candidates: Vec<PathBuf> = std::env::var_os("UNDERROUTE_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(CI_VENV_PYTHON), PathBuf::from("python3")])
        .collect();
    for p in &candidates {
        let ok = Command::new(p)
            .args(["-c", "import kubernetes_validate, yaml"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return p.clone();
        }
    }
    panic!(
        "no Python with kubernetes-validate among {candidates:?}: run .ci/deps (or pip install \
         kubernetes-validate and set UNDERROUTE_PYTHON)"
    );
}

fn validate(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(python())
        .arg(Path::new(DEPLOY).join("validate.py"))
        .args(args)
        .output()
        .expect("run validate.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn manifests_match_the_kubernetes_schemas_and_the_configmap_config_is_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, text) = validate(&["--out".as_ref(), dir.path().as_os_str()]);
    assert!(ok, "deploy/ does not validate:\n{text}");

    let config = dir.path().join("underroute.toml");
    let out = Command::new(BIN)
        .args(["agent", "--kube", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("underroute agent --check");
    assert!(
        out.status.success(),
        "the ConfigMap's underroute.toml is refused in Kubernetes mode: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let conflist = dir.path().join("10-underlay.conflist");
    let list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conflist).expect("conflist")).expect("JSON");
    let n = list["plugins"].as_array().map(Vec::len).unwrap_or(0);
    assert!(n > 0, "no plugins in the conflist");
    let ours = plugin_conf(&list, n - 1, None).expect("plugin conf");
    assert_eq!(ours["type"], "underroute-cni", "ours comes last");
    let conf = NetConf::parse(ours.to_string().as_bytes(), Need::Routes).expect("our plugin conf");
    assert_eq!(
        conf.registry_dir,
        Path::new("/run/underroute/pods"),
        "the plugin writes where the agent's [registry] dir (a hostPath) reads"
    );
}

#[test]
fn the_validator_rejects_what_the_api_server_would() {
    // It must check the schemas, not merely parse YAML: a misspelt field, a wrong type and a
    // missing required field each fail.
    let ds = std::fs::read_to_string(Path::new(DEPLOY).join("daemonset.yaml")).expect("daemonset");
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "typo",
            ds.replace("hostNetwork: true", "hostNetwrok: true"),
            "hostNetwrok",
        ),
        (
            "type",
            ds.replace("containerPort: 9479", "containerPort: \"metrics\""),
            "containerPort",
        ),
        (
            "required",
            ds.replace("        - name: agent\n", "        - nom: agent\n"),
            "name",
        ),
    ];
    for (name, text, want) in cases {
        assert_ne!(text, ds, "case {name} changed nothing");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write");
        let (ok, out) = validate(&["--files".as_ref(), path.as_os_str()]);
        assert!(
            !ok && out.contains(want),
            "case {name} not rejected:\n{out}"
        );
    }
}
