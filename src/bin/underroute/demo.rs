//! `underroute demo`: a three-node cluster in throw-away network namespaces, one agent (this
//! binary, `agent --config`) per node, a full iBGP mesh on one L2 segment.
//!
//! ```text
//!   pod 10.233.64.2 ─ node1 192.168.50.50 ─┐
//!   pod 10.233.66.2 ─ node2 192.168.50.51 ─┼─ bridge (its own namespace)
//!   underlay pod 192.168.50.100 ─┘         │
//!   pod 10.233.68.2 ─ node3 192.168.50.52 ─┘
//! ```
//! Everything lives in namespaces made here and is removed at the end, even on error.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use underroute_testbed::fabric::{
    attach_pod, ping_once, standard_mesh, start_mesh, wait_converged,
};
use underroute_testbed::{wait_until, Netns};

/// The underlay pod on node2: an address on the nodes' own segment, reached by its /32.
const UNDERLAY_POD: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);

/// Run the demo.
pub fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces: run it as root");
    }
    for tool in ["ip", "ping", "sysctl"] {
        if !std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            bail!("{tool} is not installed: run .ci/deps first (it installs iproute2 and ping)");
        }
    }
    let err = |e: String| anyhow!(e);
    let bin = std::env::current_exe().context("finding this binary to run the agents")?;

    println!("== building the cluster: a bridge, three nodes on 192.168.50.0/24, one pod per node");
    let (specs, mesh) = standard_mesh(3);
    let (_fabric, nodes) = start_mesh("demo", &specs, &mesh, &bin).map_err(err)?;
    for n in &nodes {
        println!(
            "   {}: {} pod CIDR {} (pod {}), agent `underroute agent --config {}/underroute.toml`",
            n.spec.name,
            n.spec.address,
            n.spec.pod_cidr,
            n.pod_ip(),
            n.ns.dir().display()
        );
    }
    let node2 = &nodes[1];
    let upod = Netns::new("demoupod").map_err(err)?;
    attach_pod(
        &node2.ns,
        &upod,
        "169.254.1.1/32".parse()?,
        format!("{UNDERLAY_POD}/32").parse()?,
    )
    .map_err(err)?;
    // What the CNI plugin records when it attaches an underlay pod; the agent advertises its /32.
    underroute::podregistry::PodRegistry::new(&node2.registry_dir)
        .record(&underroute::podregistry::PodRecord {
            container_id: "demo-underlay".into(),
            ifname: "eth0".into(),
            netns: format!("/var/run/netns/{}", upod.name()),
            ips: vec![format!("{UNDERLAY_POD}/32").parse()?],
            mode: underroute::cni::config::Mode::Veth,
            host_veth: None,
            created_unix: 0,
        })
        .context("recording the underlay pod")?;
    println!("   underlay pod {UNDERLAY_POD} on node2 (recorded in its pod registry)");

    println!("\n== waiting for the mesh: every pod CIDR in every node's kernel");
    let took = wait_converged(&nodes, Duration::from_secs(40)).map_err(err)?;
    let want = format!("{UNDERLAY_POD} via {}", node2.spec.address);
    wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        [&nodes[0], &nodes[2]]
            .iter()
            .all(|n| n.kernel_routes().contains(&want))
            .then_some(())
    })
    .map_err(|e| anyhow!("the underlay pod's /32 did not reach node1 and node3: {e}"))?;
    println!("   converged in {:.1} s", took.as_secs_f64());

    for n in &nodes {
        println!("\n== {}: underroute neighbor", n.spec.name);
        print!("{}", n.cli(&["neighbor"]).map_err(err)?);
        println!("== {}: underroute global rib", n.spec.name);
        print!("{}", n.cli(&["global", "rib"]).map_err(err)?);
        println!(
            "== {}: ip route show proto 201 (installed by the agent)",
            n.spec.name
        );
        print!("{}", n.kernel_routes());
    }

    println!("\n== real packets across nodes");
    let mut failed = Vec::new();
    for a in &nodes {
        let mut targets: Vec<(String, Ipv4Addr)> = nodes
            .iter()
            .filter(|b| b.spec.address != a.spec.address)
            .map(|b| (format!("pod on {}", b.spec.name), b.pod_ip()))
            .collect();
        if a.spec.address != node2.spec.address {
            targets.push(("underlay pod on node2".into(), UNDERLAY_POD));
        }
        for (what, dst) in targets {
            let ok = ping_once(&a.pod, dst);
            println!(
                "   ping from pod on {} to {what} ({dst}): {}",
                a.spec.name,
                if ok { "ok" } else { "FAILED" }
            );
            if !ok {
                failed.push(format!("{} -> {dst}", a.spec.name));
            }
        }
    }
    if !failed.is_empty() {
        bail!("no reply for: {}", failed.join(", "));
    }
    println!("\n== removing the namespaces");
    Ok(())
}
