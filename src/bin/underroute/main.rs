//! The `underroute` binary: the node agent's entry points.
//!
//! Until the agent exists this offers the standalone speaker (also the benchmark lab's subject)
//! and a three-node demo. Errors are reported with `anyhow` here, at the edge.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use underroute_bgp::speaker::{
    GracefulRestartConfig, PeerConfig, Shutdown, Speaker, SpeakerConfig,
};
use underroute_bgp::wire::PathAttrs;
use underroute_bgp::{Asn, RouterId};

#[cfg(feature = "demo")]
mod demo;

#[derive(Parser)]
#[command(
    name = "underroute",
    version,
    about = "Underlay routing agent for Kubernetes nodes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent (standalone from a config file).
    Agent(AgentArgs),
    /// Run the BGP speaker alone, from flags (no kernel programming yet).
    Speaker(SpeakerArgs),
    /// A three-node cluster of agents in throw-away network namespaces: sessions, routes, pings.
    Demo,
    /// gobgp's `global`: `global`, `global rib [-a ipv4|ipv6] [PREFIX [longer-prefixes|shorter-prefixes]]`,
    /// `global rib summary`.
    Global(CliArgs),
    /// gobgp's `neighbor`: `neighbor`, `neighbor ADDR`, `neighbor ADDR adj-in|adj-out|local`,
    /// `neighbor ADDR reset|softreset|softresetin|softresetout|enable|disable`.
    Neighbor(CliArgs),
    /// Explain the kernel's routing: `diagnose route SRC DST [--iif IF]`, `diagnose rib`.
    #[command(subcommand)]
    Diagnose(DiagnoseCommand),
}

#[derive(Subcommand)]
enum DiagnoseCommand {
    /// Which rule, table, route and next hop the kernel picks for SRC -> DST and for the reply;
    /// exits 1 when the reply leaves by another interface than the request came in on.
    Route {
        /// Source address of the request.
        src: IpAddr,
        /// Destination address of the request.
        dst: IpAddr,
        /// The interface the request comes in on (without it: sent by this host).
        #[arg(long)]
        iif: Option<String>,
    },
    /// Compare the speaker's best routes with the kernel's main and per-address tables; one
    /// line per difference, exit 1 if there is any.
    Rib {
        #[command(flatten)]
        opts: underroute::cli::Options,
        /// Our route protocol number (`[kernel] route_protocol`).
        #[arg(long, default_value_t = underroute::DEFAULT_ROUTE_PROTOCOL)]
        protocol: u8,
    },
}

#[derive(clap::Args)]
struct CliArgs {
    #[command(flatten)]
    opts: underroute::cli::Options,
    /// The command words, as gobgp's.
    args: Vec<String>,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// TOML configuration file (default: the embedded single-node configuration).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Kubernetes mode: peer with every Node, follow Nodes and this node's Pods (in-cluster
    /// service account, or KUBECONFIG).
    #[arg(long)]
    kube: bool,
    /// Kubernetes mode with this kubeconfig file.
    #[arg(long, value_name = "PATH")]
    kubeconfig: Option<PathBuf>,
    /// This node's Node name in Kubernetes mode (default: node.name of the file).
    #[arg(long, env = "NODE_NAME", default_value = "")]
    node_name: String,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

#[derive(clap::Args)]
struct SpeakerArgs {
    /// Our BGP identifier.
    #[arg(long)]
    router_id: Ipv4Addr,
    /// Our AS number.
    #[arg(long)]
    asn: u32,
    /// Address to listen on (port 179 unless given as ADDR:PORT).
    #[arg(long, default_value = "0.0.0.0")]
    listen: String,
    /// Comma-separated peer addresses (iBGP unless --peer-asn says otherwise).
    #[arg(long, value_delimiter = ',')]
    peers: Vec<IpAddr>,
    /// Peer AS number (default: ours).
    #[arg(long)]
    peer_asn: Option<u32>,
    /// Comma-separated prefixes to originate.
    #[arg(long, value_delimiter = ',', default_value = "")]
    announce: Vec<String>,
    /// Hold time proposed to peers, in seconds.
    #[arg(long, default_value_t = 90)]
    hold: u16,
    /// Negotiate graceful restart (1) or not (0).
    #[arg(long, default_value_t = 1)]
    graceful_restart: u8,
    /// This start is a restart after a crash (sets the Restart State bit).
    #[arg(long, default_value_t = 0)]
    restarting: u8,
    /// Write the number of Loc-RIB prefixes to this file whenever it changes.
    #[arg(long)]
    count_file: Option<PathBuf>,
    /// Install learned routes into this kernel table (only `main` for now), with our route
    /// protocol number; without it the speaker is RIB-only.
    #[arg(long)]
    table: Option<String>,
    /// Serve the GoBGP-compatible API on this address (`--api` alone: 127.0.0.1:50051).
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:50051")]
    api: Option<SocketAddr>,
    /// Serve the API on this unix socket too.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Let API clients enable, disable and reset peers (read-only otherwise).
    #[arg(long)]
    api_allow_mutations: bool,
    /// Allow a non-loopback --api address (the API has no authentication).
    #[arg(long)]
    api_allow_remote: bool,
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with the whole cause chain: what an operator reads in `kubectl logs`.
            eprintln!("underroute: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    // The demo prints its own story; the daemon logs at info.
    let default_level = if matches!(
        cli.command,
        Command::Demo | Command::Global(_) | Command::Neighbor(_) | Command::Diagnose(_)
    ) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Agent(args) => {
            use underroute::config::{Config, Mode, EMBEDDED_DEFAULT};
            let kube = args.kube || args.kubeconfig.is_some();
            let mode = if kube {
                Mode::Kubernetes
            } else {
                Mode::Standalone
            };
            let (config, file) = match &args.config {
                Some(path) => (Config::load_as(path, mode)?, path.display().to_string()),
                None => (
                    Config::parse_as(EMBEDDED_DEFAULT, "embedded default", mode)?,
                    "embedded default".to_string(),
                ),
            };
            if args.check {
                println!("configuration is valid");
                return Ok(());
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            if kube {
                rt.block_on(underroute::agent::run_kube(
                    config,
                    underroute::agent::KubeOptions {
                        kubeconfig: args.kubeconfig,
                        node_name: args.node_name,
                        file,
                    },
                ))
            } else {
                rt.block_on(underroute::agent::run(config))
            }
        }
        Command::Speaker(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run_speaker(args))
        }
        #[cfg(feature = "demo")]
        Command::Demo => demo::run(),
        #[cfg(not(feature = "demo"))]
        Command::Demo => bail!(
            "this build has no demo (it needs the test harness): cargo run --release --features demo -- demo"
        ),
        Command::Global(args) => run_cli(underroute::cli::Top::Global, args),
        Command::Neighbor(args) => run_cli(underroute::cli::Top::Neighbor, args),
        Command::Diagnose(cmd) => run_diagnose(cmd),
    }
}

/// `diagnose`: prints its findings; exit status 1 when something is wrong, 2 when it could not
/// look (no API, netlink refused), so a script can tell a finding from a failure.
fn run_diagnose(cmd: DiagnoseCommand) -> Result<()> {
    match diagnose(cmd) {
        Ok(false) => Ok(()),
        Ok(true) => std::process::exit(1),
        Err(e) => {
            eprintln!("underroute: {e:#}");
            std::process::exit(2);
        }
    }
}

fn diagnose(cmd: DiagnoseCommand) -> Result<bool> {
    Ok(match cmd {
        DiagnoseCommand::Route { src, dst, iif } => {
            let e = underroute::diagnose::route::explain(src, dst, iif.as_deref())?;
            print!("{e}");
            e.asymmetric || e.reply.is_err()
        }
        DiagnoseCommand::Rib { opts, protocol } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let lines = rt.block_on(underroute::diagnose::rib_report(&opts.target(), protocol))?;
            for l in &lines {
                println!("{l}");
            }
            !lines.is_empty()
        }
    })
}

/// Run a gobgp-style command; like gobgp, errors go to stdout and the exit status is 1.
fn run_cli(top: underroute::cli::Top, args: CliArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(underroute::cli::run(top, &args.opts, &args.args)) {
        Ok(text) => {
            print!("{text}");
            Ok(())
        }
        Err(e) => {
            print!("{}", underroute::cli::error_text(&e, args.opts.json));
            std::process::exit(1);
        }
    }
}

fn listen_addr(s: &str) -> Result<SocketAddr> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let ip: IpAddr = s
        .parse()
        .with_context(|| format!("--listen: {s:?} is not an address"))?;
    Ok(SocketAddr::new(ip, 179))
}

async fn run_speaker(args: SpeakerArgs) -> Result<()> {
    let announce: Vec<IpNet> = args
        .announce
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .with_context(|| format!("--announce: {s:?} is not a prefix"))
        })
        .collect::<Result<_>>()?;
    if args.hold != 0 && args.hold < 3 {
        bail!(
            "--hold: {} is not a valid hold time (0 or at least 3 seconds)",
            args.hold
        );
    }
    let kernel = match args.table.as_deref() {
        None => None,
        Some("main" | "254") => Some(underroute::kernel::Programmer::start(
            underroute::kernel::KernelConfig {
                per_address_tables: false,
                ..underroute::kernel::KernelConfig::default()
            },
        )?),
        Some(other) => bail!("--table: {other:?}: only the main table is supported"),
    };
    // Forwarding survived only if our kernel routes did.
    let adopted = match &kernel {
        Some(k) => underroute::agent::install::adopted_routes(k).await,
        None => Default::default(),
    };
    let config = SpeakerConfig {
        asn: Asn(args.asn),
        router_id: RouterId(args.router_id),
        listen: vec![listen_addr(&args.listen)?],
        cluster_id: None,
        graceful_restart: (args.graceful_restart == 1).then(|| GracefulRestartConfig {
            restarting: args.restarting == 1,
            forwarding_preserved: args.restarting == 1 && !adopted.is_empty(),
            ..GracefulRestartConfig::default()
        }),
        hostname: None,
    };
    let speaker = Speaker::start(config).await?;
    if let Some(kernel) = kernel {
        let (snapshot, changes) = speaker.subscribe().await?;
        tokio::spawn(underroute::agent::install::run(
            speaker.clone(),
            kernel,
            adopted,
            snapshot,
            changes,
            // The standalone speaker serves no health endpoint; the flag is simply unused.
            underroute::metrics::Health::new(),
        ));
    }
    for peer in &args.peers {
        let mut pc = PeerConfig::new(*peer, Asn(args.peer_asn.unwrap_or(args.asn)));
        pc.hold_time = args.hold;
        speaker.add_peer(pc).await?;
    }
    speaker
        .originate(
            announce
                .into_iter()
                .map(|p| (p, PathAttrs::default()))
                .collect(),
        )
        .await?;
    if args.api.is_some() || args.api_socket.is_some() {
        underroute::api::server::spawn(
            speaker.clone(),
            underroute::api::server::ApiConfig {
                listen: args.api.into_iter().collect(),
                socket: args.api_socket.clone(),
                allow_mutations: args.api_allow_mutations,
                allow_remote: args.api_allow_remote,
            },
        )
        .await?;
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Polling the size is cheaper than following every change when all we report is a count.
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut written = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(path) = &args.count_file {
                    let count = speaker.loc_rib_len().await?;
                    if written != Some(count) {
                        write_atomically(path, &format!("{count}\n"))?;
                        written = Some(count);
                    }
                }
            }
            _ = sigterm.recv() => {
                speaker.shutdown(Shutdown::Withdraw).await?;
                return Ok(());
            }
            _ = tokio::signal::ctrl_c() => {
                speaker.shutdown(Shutdown::Withdraw).await?;
                return Ok(());
            }
        }
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
