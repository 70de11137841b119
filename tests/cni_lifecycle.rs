//! underroute-cni's contract with the runtime beyond the happy path: DEL is idempotent and
//! complete (twice, after the netns is gone, without prevResult), a failed ADD leaves nothing
//! behind, CHECK names what is missing, GC removes what the runtime no longer knows, concurrent
//! ADDs do not interfere, and VERSION/STATUS and every input error answer with the spec's JSON.

use std::path::Path;

use serde_json::{json, Value};
use underroute_testbed::cni::{Attachment, PluginOutput, UnderlayLab};
use underroute_testbed::{require_root, Netns};

const OUR_BIN: &str = env!("CARGO_BIN_EXE_underroute-cni");

fn ours(extra: Value) -> Value {
    let mut o = json!({"mode": "veth", "serviceCIDRs": ["10.96.0.0/12"], "ipMasq": true});
    if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    o
}

/// The host-side state of one attachment: (veth exists, registry file exists, in masq set).
fn host_state(lab: &UnderlayLab, container_id: &str) -> (bool, bool, bool) {
    let veth = underroute::cni::plan::host_veth_name(container_id, "eth0");
    let link = lab
        .host
        .exec(&["ip", "link", "show", &veth])
        .map(|o| o.status.success())
        .unwrap_or(true);
    let file = lab
        .runner
        .registry_dir()
        .join(format!("{container_id}-eth0.json"))
        .exists();
    let set = lab
        .host
        .exec_stdout(&["nft", "list", "set", "inet", "underroute_cni", "masq_ifs"])
        .map(|s| s.contains(&veth))
        .unwrap_or(false);
    (link, file, set)
}

fn assert_error(out: &PluginOutput, code: u64) -> Value {
    assert_ne!(out.exit_code, 0, "{out:?}");
    let v = out.json().expect("error JSON on stdout");
    assert_eq!(v["code"], code, "{v}");
    assert!(v["msg"].is_string() && v["cniVersion"].is_string(), "{v}");
    v
}

#[test]
fn del_is_complete_twice_after_netns_deletion_and_without_prev_result() {
    if !require_root("del_is_complete_twice_after_netns_deletion_and_without_prev_result") {
        return;
    }
    let lab = UnderlayLab::new("cdl", Path::new(OUR_BIN)).expect("lab");
    let chain = lab.macvlan_chain(Some(ours(json!({}))));

    // Twice.
    let p1 = Netns::new("cdl1").expect("pod");
    let a1 = Attachment::eth0("twice", &p1);
    let r1 = lab.runner.add(&chain, &a1).expect("ADD");
    assert_eq!(host_state(&lab, "twice"), (true, true, true));
    lab.runner.del(&chain, &a1, Some(&r1)).expect("DEL 1");
    lab.runner.del(&chain, &a1, Some(&r1)).expect("DEL 2");
    assert_eq!(host_state(&lab, "twice"), (false, false, false));

    // After the netns is gone (the runtime lost it): no CNI_NETNS, and the path is gone too.
    let p2 = Netns::new("cdl2").expect("pod");
    let a2 = Attachment::eth0("gone", &p2);
    let r2 = lab.runner.add(&chain, &a2).expect("ADD");
    let gone_path = a2.netns.clone();
    drop(p2);
    let mut a2_gone = a2.clone();
    a2_gone.netns = None;
    lab.runner
        .del(&chain, &a2_gone, Some(&r2))
        .expect("DEL without netns");
    assert_eq!(host_state(&lab, "gone"), (false, false, false));
    a2_gone.netns = gone_path;
    lab.runner
        .del(&chain, &a2_gone, Some(&r2))
        .expect("DEL with a dead netns path");

    // Without prevResult: everything ADD made on the host still goes.
    let p3 = Netns::new("cdl3").expect("pod");
    let a3 = Attachment::eth0("noprev", &p3);
    let r3 = lab.runner.add(&chain, &a3).expect("ADD");
    let out = lab
        .runner
        .exec(&chain, 1, "DEL", &a3, None)
        .expect("DEL ours");
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(host_state(&lab, "noprev"), (false, false, false));
    let links = p3.exec_stdout(&["ip", "link"]).expect("pod links");
    assert!(!links.contains("ur0"), "{links}");
    lab.runner
        .del(&chain, &a3, Some(&r3))
        .expect("rest of the chain");
}

#[test]
fn failed_add_leaves_nothing_behind() {
    if !require_root("failed_add_leaves_nothing_behind") {
        return;
    }
    let lab = UnderlayLab::new("cfa", Path::new(OUR_BIN)).expect("lab");
    // A via-host range equal to the pod's own subnet collides with the pod's connected route:
    // found only after the veth exists.
    let chain = lab.macvlan_chain(Some(ours(json!({"extraCIDRs": ["10.10.20.0/24"]}))));
    let p = Netns::new("cfap").expect("pod");
    let a = Attachment::eth0("clash", &p);
    let outs = lab.runner.add_outputs(&chain, &a).expect("ADD ran");
    let last = outs.last().expect("outputs");
    let v = assert_error(last, 101);
    assert!(
        v["details"]
            .as_str()
            .is_some_and(|d| d.contains("10.10.20.0/24")),
        "{v}"
    );
    assert_eq!(host_state(&lab, "clash"), (false, false, false));
    let links = p.exec_stdout(&["ip", "link"]).expect("pod links");
    assert!(!links.contains("ur0"), "{links}");
    let prev = outs[0].json().expect("macvlan result");
    lab.runner
        .del(&chain, &a, Some(&prev))
        .expect("runtime's DEL");

    // A failure after the masquerade element is in (the registry cannot be written) takes the
    // element back out as well.
    let chain = lab.macvlan_chain(Some(ours(json!({}))));
    let mut chain_bad = chain.clone();
    chain_bad["plugins"][1]["registryDir"] = json!("/proc/version/pods");
    let p2 = Netns::new("cfaq").expect("pod");
    let a2 = Attachment::eth0("noreg", &p2);
    let outs = lab.runner.add_outputs(&chain_bad, &a2).expect("ADD ran");
    assert_error(outs.last().expect("outputs"), 5);
    assert_eq!(host_state(&lab, "noreg"), (false, false, false));
    let prev = outs[0].json().expect("macvlan result");
    lab.runner
        .del(&chain, &a2, Some(&prev))
        .expect("runtime's DEL");
}

#[test]
fn check_reports_what_is_missing() {
    if !require_root("check_reports_what_is_missing") {
        return;
    }
    let lab = UnderlayLab::new("cck", Path::new(OUR_BIN)).expect("lab");
    let chain = lab.macvlan_chain(Some(ours(
        json!({"mtu": 1400, "containerInterface": "svc0"}),
    )));
    let p = Netns::new("cckp").expect("pod");
    let a = Attachment::eth0("checked", &p);
    let r = lab.runner.add(&chain, &a).expect("ADD");
    let link = p
        .exec_stdout(&["ip", "-j", "link", "show", "svc0"])
        .expect("pod veth");
    let link: Value = serde_json::from_str(&link).expect("ip -j");
    assert_eq!(link[0]["mtu"], 1400, "{link}");
    let ok = lab.runner.check(&chain, 1, &a, &r).expect("CHECK");
    assert_eq!(ok.exit_code, 0, "{ok:?}");

    p.exec_ok(&["ip", "route", "del", "10.96.0.0/12"])
        .expect("break the pod");
    let pod_ip = r["ips"][0]["address"]
        .as_str()
        .and_then(|s| s.split('/').next())
        .expect("pod ip")
        .to_string();
    lab.host
        .exec_ok(&["ip", "route", "del", &format!("{pod_ip}/32")])
        .expect("break the host");
    let bad = lab.runner.check(&chain, 1, &a, &r).expect("CHECK");
    let v = assert_error(&bad, 104);
    let d = v["details"].as_str().unwrap_or_default();
    assert!(d.contains("pod route 10.96.0.0/12"), "{d}");
    assert!(d.contains(&format!("host route {pod_ip}/32")), "{d}");
    lab.runner.del(&chain, &a, Some(&r)).expect("DEL");
}

#[test]
fn gc_removes_attachments_missing_from_the_valid_list() {
    if !require_root("gc_removes_attachments_missing_from_the_valid_list") {
        return;
    }
    let lab = UnderlayLab::new("cgc", Path::new(OUR_BIN)).expect("lab");
    let chain = lab.macvlan_chain(Some(ours(json!({}))));
    let pk = Netns::new("cgck").expect("pod");
    let pg = Netns::new("cgcg").expect("pod");
    let ak = Attachment::eth0("keep", &pk);
    let ag = Attachment::eth0("stale", &pg);
    let rk = lab.runner.add(&chain, &ak).expect("ADD keep");
    let _rg = lab.runner.add(&chain, &ag).expect("ADD stale");
    // The reference plugins stop at 1.0.0; GC is a 1.1.0 command, sent to our plugin only.
    let mut chain11 = chain.clone();
    chain11["cniVersion"] = json!("1.1.0");
    let out = lab.runner.gc(&chain11, 1, &[("keep", "eth0")]).expect("GC");
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(host_state(&lab, "stale"), (false, false, false));
    assert_eq!(host_state(&lab, "keep"), (true, true, true));
    // GC with a 1.0.0 config is refused: the command does not exist there.
    let old = lab.runner.gc(&chain, 1, &[]).expect("GC 1.0.0");
    assert_error(&old, 1);
    lab.runner.del(&chain, &ak, Some(&rk)).expect("DEL");
}

#[test]
fn concurrent_adds_for_different_containers_do_not_interfere() {
    if !require_root("concurrent_adds_for_different_containers_do_not_interfere") {
        return;
    }
    let lab = UnderlayLab::new("ccc", Path::new(OUR_BIN)).expect("lab");
    let chain = lab.macvlan_chain(Some(ours(json!({}))));
    let pods: Vec<Netns> = (0..4)
        .map(|i| Netns::new(&format!("ccc{i}")).expect("pod"))
        .collect();
    let atts: Vec<Attachment> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| Attachment::eth0(&format!("conc{i}"), p))
        .collect();
    let results: Vec<Result<Value, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = atts
            .iter()
            .map(|a| {
                let (lab, chain) = (&lab, &chain);
                s.spawn(move || lab.runner.add(chain, a))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    for (i, r) in results.iter().enumerate() {
        assert!(r.is_ok(), "ADD {i}: {r:?}");
        assert_eq!(host_state(&lab, &format!("conc{i}")), (true, true, true));
    }
    for (a, r) in atts.iter().zip(&results) {
        lab.runner.del(&chain, a, r.as_ref().ok()).expect("DEL");
    }
    for i in 0..4 {
        assert_eq!(host_state(&lab, &format!("conc{i}")), (false, false, false));
    }
}

#[test]
fn version_status_and_input_errors_answer_with_spec_json() {
    if !require_root("version_status_and_input_errors_answer_with_spec_json") {
        return;
    }
    let lab = UnderlayLab::new("cve", Path::new(OUR_BIN)).expect("lab");
    let r = &lab.runner;
    let p = Netns::new("cvep").expect("pod");
    let netns = underroute_testbed::cni::netns_path(&p);
    let reg = r.registry_dir().display().to_string();
    let good = format!(
        r#"{{"cniVersion":"1.1.0","name":"u","type":"underroute-cni","serviceCIDRs":["10.96.0.0/12"],"registryDir":"{reg}"}}"#
    );
    let add_env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "errs"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/nonexistent"),
    ];

    let v = r
        .exec_raw(
            "underroute-cni",
            &[("CNI_COMMAND", "VERSION")],
            br#"{"cniVersion":"1.0.0"}"#,
        )
        .expect("VERSION");
    assert_eq!(v.exit_code, 0);
    let j = v.json().expect("json");
    assert_eq!(j["cniVersion"], "1.0.0");
    let versions: Vec<&str> = j["supportedVersions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        versions.contains(&"1.0.0") && versions.contains(&"1.1.0"),
        "{j}"
    );

    let st = r
        .exec_raw(
            "underroute-cni",
            &[("CNI_COMMAND", "STATUS")],
            good.as_bytes(),
        )
        .expect("STATUS");
    assert_eq!((st.exit_code, st.stdout.trim()), (0, ""), "{st:?}");
    let bad_reg = good.replace(&reg, "/proc/version/pods");
    let st = r
        .exec_raw(
            "underroute-cni",
            &[("CNI_COMMAND", "STATUS")],
            bad_reg.as_bytes(),
        )
        .expect("STATUS");
    assert_error(&st, 50);

    let out = r
        .exec_raw("underroute-cni", &add_env, b"{\"cniVersion\": \"1.0.0\", ")
        .expect("ADD");
    assert_error(&out, 6);
    let out = r
        .exec_raw("underroute-cni", &add_env[1..], good.as_bytes())
        .expect("no command");
    assert_error(&out, 4);
    let no_id: Vec<(&str, &str)> = add_env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CNI_CONTAINERID")
        .collect();
    assert_error(
        &r.exec_raw("underroute-cni", &no_id, good.as_bytes())
            .expect("ADD"),
        4,
    );
    let no_ns: Vec<(&str, &str)> = add_env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .collect();
    assert_error(
        &r.exec_raw("underroute-cni", &no_ns, good.as_bytes())
            .expect("ADD"),
        4,
    );
    let no_svc = good.replace(r#""serviceCIDRs":["10.96.0.0/12"],"#, "");
    assert_error(
        &r.exec_raw("underroute-cni", &add_env, no_svc.as_bytes())
            .expect("ADD"),
        7,
    );
    let old = good.replace("1.1.0", "0.2.0");
    assert_error(
        &r.exec_raw("underroute-cni", &add_env, old.as_bytes())
            .expect("ADD"),
        1,
    );
    // Chained without a main plugin before it: no prevResult, no address to route.
    assert_error(
        &r.exec_raw("underroute-cni", &add_env, good.as_bytes())
            .expect("ADD"),
        7,
    );
    assert!(!lab.runner.registry_dir().join("errs-eth0.json").exists());
}
