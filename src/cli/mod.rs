//! `underroute global ...` and `underroute neighbor ...`: gobgp's inspection commands, with
//! gobgp's words and output, over the same gRPC API (so they work against gobgpd too).
//!
//! Owns: argument parsing for those commands ([`Request::parse`]), the API calls, and the choice
//! of formatter. The formatting itself is in [`format`] (text) and [`json`] (`-j`), pure.

pub mod client;
pub mod format;
pub mod json;

use std::time::{Duration, SystemTime};

use tonic::transport::Channel;

use crate::api::apipb::{self, gobgp_api_client::GobgpApiClient, TableType};
use client::Target;
use format::RibKind;

/// Connection and output options shared by the commands (gobgp's global flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// API server host.
    #[arg(short = 'u', long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// API server port.
    #[arg(short = 'p', long = "port", default_value_t = crate::api::server::DEFAULT_PORT)]
    pub port: u16,
    /// Connect to the API's unix socket instead of TCP.
    #[arg(long = "socket")]
    pub socket: Option<std::path::PathBuf>,
    /// Print JSON, as `gobgp -j`.
    #[arg(short = 'j', long = "json")]
    pub json: bool,
    /// Address family: ipv4 (v4, 4) or ipv6 (v6, 6).
    #[arg(short = 'a', long = "address-family")]
    pub family: Option<String>,
}

impl Options {
    /// Where to connect.
    pub fn target(&self) -> Target {
        match &self.socket {
            Some(p) => Target::Unix(p.clone()),
            None => Target::Tcp {
                host: self.host.clone(),
                port: self.port,
            },
        }
    }
}

/// Errors of a CLI command. Their text is what gobgp prints for the same failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// Could not reach the server.
    #[error(transparent)]
    Connect(#[from] client::ConnectError),
    /// The server answered with an error.
    #[error("rpc error: code = {code:?} desc = {message}")]
    Rpc {
        /// gRPC status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// Producing JSON failed.
    #[error(transparent)]
    Json(#[from] json::JsonError),
    /// A failure gobgp reports in its own words.
    #[error("{0}")]
    Message(String),
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Rpc {
            code: s.code(),
            message: s.message().to_string(),
        }
    }
}

/// The top-level command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Top {
    /// `global`.
    Global,
    /// `neighbor`.
    Neighbor,
}

/// A prefix filter as typed: the prefix (or address) and the lookup kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The prefix or address.
    pub prefix: String,
    /// 0 exact, 1 longer-prefixes, 2 shorter-prefixes (`TableLookupPrefix.Type`).
    pub kind: i32,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `global`.
    Global,
    /// `global rib [PREFIX ...]` or `neighbor ADDR adj-in|adj-out|local [PREFIX ...]`.
    Rib {
        /// Which table.
        table: TableType,
        /// The neighbor for per-peer tables.
        neighbor: String,
        /// Prefix filter.
        lookup: Option<Lookup>,
    },
    /// `global rib summary`.
    Summary,
    /// `neighbor`.
    Neighbors,
    /// `neighbor ADDR`.
    Neighbor(String),
    /// `neighbor ADDR reset|softreset|softresetin|softresetout`.
    Reset {
        /// The neighbor.
        neighbor: String,
        /// Soft reset.
        soft: bool,
        /// `ResetPeerRequest.SoftResetDirection`.
        direction: i32,
    },
    /// `neighbor ADDR enable|disable`.
    Enable(String, bool),
}

fn parse_lookup(args: &[String]) -> Result<Option<Lookup>, CliError> {
    let Some((target, rest)) = args.split_first() else {
        return Ok(None);
    };
    if target.parse::<ipnet::IpNet>().is_err() && target.parse::<std::net::IpAddr>().is_err() {
        return Err(CliError::Usage("invalid CIDR/IP".into()));
    }
    let mut kind = 0;
    for a in rest {
        kind = match a.as_str() {
            "longer-prefixes" => 1,
            "shorter-prefixes" => 2,
            _ => return Err(CliError::Usage("invalid format for route filtering".into())),
        };
    }
    Ok(Some(Lookup {
        prefix: target.clone(),
        kind,
    }))
}

impl Request {
    /// Parse the words after `global` or `neighbor`.
    pub fn parse(top: Top, args: &[String]) -> Result<Request, CliError> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        match (top, words.as_slice()) {
            (Top::Global, []) => Ok(Request::Global),
            (Top::Global, ["rib", "summary"]) => Ok(Request::Summary),
            (Top::Global, ["rib", ..]) => Ok(Request::Rib {
                table: TableType::Global,
                neighbor: String::new(),
                lookup: parse_lookup(&args[1..])?,
            }),
            (Top::Neighbor, []) => Ok(Request::Neighbors),
            (Top::Neighbor, [addr]) => Ok(Request::Neighbor(addr.to_string())),
            (Top::Neighbor, [addr, cmd, ..]) => {
                let neighbor = addr.to_string();
                let table = match *cmd {
                    "adj-in" => Some(TableType::AdjIn),
                    "adj-out" => Some(TableType::AdjOut),
                    "local" => Some(TableType::Local),
                    _ => None,
                };
                if let Some(table) = table {
                    return Ok(Request::Rib {
                        table,
                        neighbor,
                        lookup: parse_lookup(&args[2..])?,
                    });
                }
                if args.len() > 2 {
                    return Err(CliError::Usage(format!("too many arguments for {cmd}")));
                }
                use apipb::reset_peer_request::SoftResetDirection as D;
                let reset = |soft, d: D| Request::Reset {
                    neighbor: neighbor.clone(),
                    soft,
                    direction: d as i32,
                };
                match *cmd {
                    "reset" => Ok(reset(false, D::Both)),
                    "softreset" => Ok(reset(true, D::Both)),
                    "softresetin" => Ok(reset(true, D::In)),
                    "softresetout" => Ok(reset(true, D::Out)),
                    "enable" => Ok(Request::Enable(neighbor, true)),
                    "disable" => Ok(Request::Enable(neighbor, false)),
                    other => Err(CliError::Usage(format!("unknown command {other:?}"))),
                }
            }
            (Top::Global, [other, ..]) => {
                Err(CliError::Usage(format!("unknown command {other:?}")))
            }
        }
    }
}

fn family_arg(name: Option<&str>, default: apipb::Family) -> Result<apipb::Family, CliError> {
    let v4 = apipb::Family { afi: 1, safi: 1 };
    let v6 = apipb::Family { afi: 2, safi: 1 };
    match name {
        None | Some("") => Ok(default),
        Some("ipv4" | "v4" | "4") => Ok(v4),
        Some("ipv6" | "v6" | "6") => Ok(v6),
        Some(other) => Err(CliError::Usage(format!(
            "unsupported address family: {other}"
        ))),
    }
}

fn default_family(neighbor: &str) -> apipb::Family {
    match neighbor.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => apipb::Family { afi: 2, safi: 1 },
        _ => apipb::Family { afi: 1, safi: 1 },
    }
}

async fn list_peers(
    c: &mut GobgpApiClient<Channel>,
    address: &str,
    advertised: bool,
) -> Result<Vec<apipb::Peer>, CliError> {
    let mut stream = c
        .list_peer(apipb::ListPeerRequest {
            address: address.to_string(),
            enable_advertised: advertised,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await? {
        out.extend(r.peer);
    }
    if !address.is_empty() && out.is_empty() {
        return Err(CliError::Message(format!("not found neighbor {address}")));
    }
    Ok(out)
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Run one command and return what gobgp would print on success.
pub async fn run(top: Top, opts: &Options, args: &[String]) -> Result<String, CliError> {
    let req = Request::parse(top, args)?;
    let mut c = client::connect(&opts.target(), Duration::from_secs(10)).await?;
    let fam = opts.family.as_deref();
    let now = now_secs();
    match req {
        Request::Global => {
            let g = c
                .get_bgp(apipb::GetBgpRequest {})
                .await?
                .into_inner()
                .global
                .unwrap_or_default();
            if opts.json {
                Ok(json::message("Global", &g)? + "\n")
            } else {
                Ok(format::global(&g))
            }
        }
        Request::Summary => {
            let family = family_arg(fam, apipb::Family { afi: 1, safi: 1 })?;
            let t = c
                .get_table(apipb::GetTableRequest {
                    table_type: TableType::Global as i32,
                    family: Some(family),
                    name: String::new(),
                })
                .await?
                .into_inner();
            if opts.json {
                Ok(json::message("GetTableResponse", &t)? + "\n")
            } else {
                Ok(format::table_summary(&family, &t))
            }
        }
        Request::Neighbors => {
            let mut peers = list_peers(&mut c, "", false).await?;
            let family = fam
                .map(|f| family_arg(Some(f), default_family("")))
                .transpose()?;
            if opts.json {
                return Ok(json::messages("Peer", &peers)? + "\n");
            }
            format::sort_peers(&mut peers);
            Ok(format::neighbors(&peers, family.as_ref(), now))
        }
        Request::Neighbor(addr) => {
            let peers = list_peers(&mut c, &addr, true).await?;
            let family = fam
                .map(|f| family_arg(Some(f), default_family("")))
                .transpose()?;
            let Some(p) = peers.first() else {
                return Err(CliError::Message(format!("not found neighbor {addr}")));
            };
            if opts.json {
                return Ok(json::message("Peer", p)? + "\n");
            }
            Ok(format::neighbor(p, family.as_ref(), now))
        }
        Request::Rib {
            table,
            neighbor,
            lookup,
        } => {
            let def = if table == TableType::Global {
                apipb::Family { afi: 1, safi: 1 }
            } else {
                default_family(&neighbor)
            };
            let family = family_arg(fam, def)?;
            let mut stream = c
                .list_path(apipb::ListPathRequest {
                    table_type: table as i32,
                    name: neighbor.clone(),
                    family: Some(family),
                    prefixes: lookup
                        .iter()
                        .map(|l| apipb::TableLookupPrefix {
                            prefix: l.prefix.clone(),
                            r#type: l.kind,
                        })
                        .collect(),
                    sort_type: apipb::list_path_request::SortType::Prefix as i32,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut dsts = Vec::new();
            while let Some(r) = stream.message().await? {
                dsts.extend(r.destination);
            }
            if table != TableType::Global && dsts.is_empty() {
                let peers = list_peers(&mut c, &neighbor, false).await?;
                let established = peers
                    .first()
                    .and_then(|p| p.state.as_ref())
                    .is_some_and(|s| s.session_state == 6);
                if !established {
                    return Err(CliError::Message(format!(
                        "neighbor {neighbor}'s BGP session is not established"
                    )));
                }
            }
            if opts.json {
                return Ok(json::rib(&dsts) + "\n");
            }
            let kind = match table {
                TableType::AdjIn => RibKind::AdjIn,
                TableType::AdjOut => RibKind::AdjOut,
                _ => RibKind::Best,
            };
            Ok(format::rib(&dsts, kind, now))
        }
        Request::Reset {
            neighbor,
            soft,
            direction,
        } => {
            c.reset_peer(apipb::ResetPeerRequest {
                address: neighbor,
                communication: String::new(),
                soft,
                direction,
            })
            .await?;
            Ok(String::new())
        }
        Request::Enable(neighbor, true) => {
            c.enable_peer(apipb::EnablePeerRequest { address: neighbor })
                .await?;
            Ok(String::new())
        }
        Request::Enable(neighbor, false) => {
            c.disable_peer(apipb::DisablePeerRequest {
                address: neighbor,
                communication: String::new(),
            })
            .await?;
            Ok(String::new())
        }
    }
}

/// What gobgp prints for an error: the message, or `{"error": ...}` with `-j`.
pub fn error_text(e: &CliError, json_output: bool) -> String {
    if json_output {
        json::error(&e.to_string()) + "\n"
    } else {
        format!("{e}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn gobgp_words_parse_to_requests() {
        assert_eq!(
            Request::parse(Top::Global, &words("rib summary")).expect("parse"),
            Request::Summary
        );
        assert_eq!(
            Request::parse(Top::Global, &words("rib 10.0.0.0/8 longer-prefixes")).expect("parse"),
            Request::Rib {
                table: TableType::Global,
                neighbor: String::new(),
                lookup: Some(Lookup {
                    prefix: "10.0.0.0/8".into(),
                    kind: 1
                }),
            }
        );
        assert!(matches!(
            Request::parse(Top::Neighbor, &words("10.0.0.2 softresetin")).expect("parse"),
            Request::Reset {
                soft: true,
                direction: 0,
                ..
            }
        ));
        assert!(Request::parse(Top::Global, &words("rib nonsense")).is_err());
    }
}
