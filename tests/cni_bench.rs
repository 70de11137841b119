//! ADD and DEL latency of underroute-cni against the reference ptp plugin (a veth-to-host
//! plugin too), measured in the same run on the same machine: each plugin process as the
//! runtime would start it, in a host namespace made here. Prints p50/p99 per command.
//!
//! Reproduce: `cargo test --release --test cni_bench -- --nocapture`
//! (`UR_CNI_BENCH_CYCLES`, default 200, sets the number of ADD+DEL cycles).

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use underroute_testbed::cni::{plugin_conf, Attachment, CniRunner, UnderlayLab};
use underroute_testbed::{require_root, Netns};

const OUR_BIN: &str = env!("CARGO_BIN_EXE_underroute-cni");

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Timing {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

/// `cycles` ADD+DEL of plugin `index` of `chain`, with `prev` as prevResult (or none).
fn cycle(
    runner: &CniRunner,
    chain: &Value,
    index: usize,
    att: &Attachment,
    prev: Option<&Value>,
    cycles: usize,
) -> Timing {
    let mut t = Timing {
        add: Vec::new(),
        del: Vec::new(),
    };
    for _ in 0..cycles {
        let a = runner
            .exec(chain, index, "ADD", att, prev)
            .expect("ADD ran");
        assert_eq!(a.exit_code, 0, "{a:?}");
        let res = a.json().expect("result");
        let d = runner
            .exec(chain, index, "DEL", att, Some(&res))
            .expect("DEL ran");
        assert_eq!(d.exit_code, 0, "{d:?}");
        t.add.push(a.elapsed);
        t.del.push(d.elapsed);
    }
    t
}

fn report(name: &str, t: &mut Timing) -> (Duration, Duration) {
    let (a50, a99) = (pct(&mut t.add, 0.5), pct(&mut t.add, 0.99));
    let (d50, d99) = (pct(&mut t.del, 0.5), pct(&mut t.del, 0.99));
    eprintln!(
        "cni_bench {name:<28} ADD p50 {:>7.2} ms p99 {:>7.2} ms | DEL p50 {:>7.2} ms p99 {:>7.2} ms",
        a50.as_secs_f64() * 1e3,
        a99.as_secs_f64() * 1e3,
        d50.as_secs_f64() * 1e3,
        d99.as_secs_f64() * 1e3
    );
    (a50, d50)
}

#[test]
fn add_and_del_latency_is_no_worse_than_ptp() {
    if !require_root("add_and_del_latency_is_no_worse_than_ptp") {
        return;
    }
    let cycles: usize = std::env::var("UR_CNI_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
        .max(1);
    let lab = UnderlayLab::new("cbn", Path::new(OUR_BIN)).expect("lab");

    // ptp: its own veth + host-local, the nearest reference plugin to ours.
    let ptp = json!({"cniVersion": "1.0.0", "name": "ptpnet", "plugins": [{
        "type": "ptp", "ipMasq": false,
        "ipam": {"type": "host-local", "subnet": "10.250.0.0/24",
                 "dataDir": lab.runner.ipam_dir()}}]});
    let pp = Netns::new("cbnp").expect("pod");
    let ap = Attachment::eth0("benchptp", &pp);

    // Ours after macvlan: the macvlan attachment is made once, our plugin cycles on top.
    let chain = lab.macvlan_chain(Some(
        json!({"mode": "veth", "serviceCIDRs": ["10.96.0.0/12"], "extraCIDRs": ["10.244.0.0/16"]}),
    ));
    let mut chain_masq = chain.clone();
    chain_masq["plugins"][1]["ipMasq"] = json!(true);
    let po = Netns::new("cbno").expect("pod");
    let ao = Attachment::eth0("benchours", &po);
    let mac = lab
        .runner
        .exec(&chain, 0, "ADD", &ao, None)
        .expect("macvlan ADD");
    assert_eq!(mac.exit_code, 0, "{mac:?}");
    let prev = mac.json().expect("macvlan result");
    // Sanity: the conf we cycle is what a runtime would send.
    assert!(plugin_conf(&chain, 1, Some(&prev)).is_ok());

    // Interleave in rounds so that machine noise hits all three alike.
    let rounds = 4;
    let per = cycles.div_ceil(rounds);
    let mut tp = Timing {
        add: vec![],
        del: vec![],
    };
    let mut to = Timing {
        add: vec![],
        del: vec![],
    };
    let mut tm = Timing {
        add: vec![],
        del: vec![],
    };
    for _ in 0..rounds {
        let t = cycle(&lab.runner, &ptp, 0, &ap, None, per);
        tp.add.extend(t.add);
        tp.del.extend(t.del);
        let t = cycle(&lab.runner, &chain, 1, &ao, Some(&prev), per);
        to.add.extend(t.add);
        to.del.extend(t.del);
        let t = cycle(&lab.runner, &chain_masq, 1, &ao, Some(&prev), per);
        tm.add.extend(t.add);
        tm.del.extend(t.del);
    }
    eprintln!("cni_bench: {} cycles each", tp.add.len());
    let (pa, pd) = report("ptp (+host-local)", &mut tp);
    let (oa, od) = report("underroute-cni veth", &mut to);
    report("underroute-cni veth+ipMasq", &mut tm);
    let del = lab
        .runner
        .exec(&chain, 0, "DEL", &ao, Some(&prev))
        .expect("macvlan DEL");
    assert_eq!(del.exit_code, 0);
    // The goal is parity with ptp; the bound leaves room for a noisy shared CI machine.
    assert!(oa <= pa * 2, "ADD p50 {oa:?} vs ptp {pa:?}");
    assert!(od <= pd * 2, "DEL p50 {od:?} vs ptp {pd:?}");
}
