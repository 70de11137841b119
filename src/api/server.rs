//! The gRPC server: GoBGP's `GobgpApi` service over the speaker handle.
//!
//! Read-only by default: `EnablePeer`, `DisablePeer` and `ResetPeer` answer PERMISSION_DENIED
//! unless the operator allowed mutations. It listens on loopback unless the operator asked for
//! another address explicitly (and then says so in the log), and on a unix socket. Methods of
//! GoBGP's service that we do not declare answer UNIMPLEMENTED (tonic's default route).

// tonic's handlers must return `Status`; boxing it would only add conversions at every call.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Instant, SystemTime};

use ipnet::IpNet;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};
use underroute_bgp::speaker::{ResetKind, Speaker, SpeakerError};
use underroute_bgp::Family;

use super::apipb::gobgp_api_server::{GobgpApi, GobgpApiServer};
use super::apipb::{self, TableType};
use super::convert::{self, FamilyCounts, PathOrigin, PrefixFilter};

/// GoBGP's default API port.
pub const DEFAULT_PORT: u16 = 50051;

/// Where and how the API is served.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Unix socket path.
    pub socket: Option<PathBuf>,
    /// Serve EnablePeer / DisablePeer / ResetPeer.
    pub allow_mutations: bool,
    /// Allow non-loopback listen addresses.
    pub allow_remote: bool,
}

/// Errors starting the API server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A non-loopback address without the operator's explicit permission.
    #[error("API listen address {0} is not a loopback address; pass --api-allow-remote to serve it (the API has no authentication)")]
    RemoteNotAllowed(SocketAddr),
    /// A TCP listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The unix socket could not be bound.
    #[error("cannot listen on unix socket {path}: {source}")]
    Socket {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The service: a speaker handle and the mutation switch.
#[derive(Clone)]
pub struct GobgpService {
    speaker: Speaker,
    allow_mutations: bool,
}

impl GobgpService {
    /// A service over `speaker`.
    pub fn new(speaker: Speaker, allow_mutations: bool) -> GobgpService {
        GobgpService {
            speaker,
            allow_mutations,
        }
    }

    fn check_mutations(&self, what: &str) -> Result<(), Status> {
        if self.allow_mutations {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{what}: the API is read-only (start the speaker with --api-allow-mutations)"
            )))
        }
    }

    async fn counts(&self, peer: IpAddr, advertised: bool) -> Vec<(Family, FamilyCounts)> {
        let mut out: BTreeMap<Family, FamilyCounts> = BTreeMap::new();
        if let Ok(entries) = self.speaker.adj_rib_in(peer, None).await {
            for (prefix, _, accepted) in entries {
                let c = out.entry(Family::of(&prefix)).or_default();
                c.received += 1;
                c.accepted += u64::from(accepted);
            }
        }
        // gobgpd computes the advertised count only when asked (it walks the Adj-RIB-Out).
        if advertised {
            if let Ok(entries) = self.speaker.adj_rib_out(peer, None).await {
                for (prefix, _) in entries {
                    out.entry(Family::of(&prefix)).or_default().advertised += 1;
                }
            }
        }
        out.into_iter().collect()
    }

    /// The destinations of one table, sorted by prefix, filtered.
    async fn table(
        &self,
        table: TableType,
        name: &str,
        family: Family,
        filters: &[PrefixFilter],
    ) -> Result<Vec<apipb::Destination>, Status> {
        let now = Instant::now();
        let now_wall = SystemTime::now();
        let mut dsts: BTreeMap<IpNet, Vec<apipb::Path>> = BTreeMap::new();
        match table {
            TableType::Global | TableType::Local => {
                if table == TableType::Local {
                    self.peer_address(name).await?;
                }
                let rib = self
                    .speaker
                    .loc_rib(Some(family))
                    .await
                    .map_err(speaker_status)?;
                for e in rib {
                    let paths = e
                        .paths
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            convert::path(
                                &e.prefix,
                                &p.attrs,
                                PathOrigin::of(p),
                                convert::wall_clock(p.age, now, now_wall),
                                i == 0,
                                p.stale,
                                false,
                            )
                        })
                        .collect();
                    dsts.insert(e.prefix, paths);
                }
            }
            TableType::AdjIn => {
                let peer = self.peer_address(name).await?;
                let entries = self
                    .speaker
                    .adj_rib_in(peer, Some(family))
                    .await
                    .map_err(speaker_status)?;
                for (prefix, p, accepted) in entries {
                    dsts.entry(prefix).or_default().push(convert::path(
                        &prefix,
                        &p.attrs,
                        PathOrigin::of(&p),
                        convert::wall_clock(p.age, now, now_wall),
                        false,
                        p.stale,
                        !accepted,
                    ));
                }
            }
            TableType::AdjOut => {
                let peer = self.peer_address(name).await?;
                let entries = self
                    .speaker
                    .adj_rib_out(peer, Some(family))
                    .await
                    .map_err(speaker_status)?;
                for (prefix, attrs) in entries {
                    // The Adj-RIB-Out keeps no time of sending; gobgp does not show an age there.
                    dsts.entry(prefix).or_default().push(convert::path(
                        &prefix,
                        &attrs,
                        PathOrigin::default(),
                        now_wall,
                        false,
                        false,
                        false,
                    ));
                }
            }
            TableType::Vrf => return Err(Status::unimplemented("VRF tables are not supported")),
        }
        if !filters.is_empty() {
            let all: Vec<IpNet> = dsts.keys().copied().collect();
            let keep: std::collections::HashSet<IpNet> =
                filters.iter().flat_map(|f| f.select(&all)).collect();
            dsts.retain(|p, _| keep.contains(p));
        }
        Ok(dsts
            .into_iter()
            .map(|(prefix, paths)| apipb::Destination {
                prefix: prefix.to_string(),
                paths,
            })
            .collect())
    }

    async fn peer_address(&self, name: &str) -> Result<IpAddr, Status> {
        let addr: IpAddr = name
            .parse()
            .map_err(|_| Status::invalid_argument(format!("invalid neighbor address {name:?}")))?;
        let peers = self.speaker.peers().await.map_err(speaker_status)?;
        if peers.iter().any(|p| p.config.address == addr) {
            Ok(addr)
        } else {
            Err(Status::not_found(format!("Neighbor {addr} not found")))
        }
    }
}

fn speaker_status(e: SpeakerError) -> Status {
    match e {
        SpeakerError::NoPeer(a) => Status::not_found(format!("Neighbor {a} not found")),
        SpeakerError::Stopped => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

fn request_family(f: Option<&apipb::Family>) -> Result<Family, Status> {
    match f {
        None => Ok(Family::Ipv4Unicast),
        Some(f) => convert::family_from_api(f).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unsupported address family afi {} safi {}",
                f.afi, f.safi
            ))
        }),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl GobgpApi for GobgpService {
    async fn get_bgp(
        &self,
        _request: Request<apipb::GetBgpRequest>,
    ) -> Result<Response<apipb::GetBgpResponse>, Status> {
        Ok(Response::new(apipb::GetBgpResponse {
            global: Some(convert::global(&self.speaker.config())),
        }))
    }

    type ListPeerStream = BoxStream<apipb::ListPeerResponse>;

    async fn list_peer(
        &self,
        request: Request<apipb::ListPeerRequest>,
    ) -> Result<Response<Self::ListPeerStream>, Status> {
        let req = request.into_inner();
        let want: Option<IpAddr> = if req.address.is_empty() {
            None
        } else {
            Some(req.address.parse().map_err(|_| {
                Status::invalid_argument(format!("invalid neighbor address {:?}", req.address))
            })?)
        };
        let config = self.speaker.config();
        let mut out = Vec::new();
        let mut peers = self.speaker.peers().await.map_err(speaker_status)?;
        // A stable order, so that two listings of the same state are equal.
        peers.sort_by_key(|p| (p.config.address.is_ipv6(), p.config.address));
        for s in peers {
            if want.is_some_and(|w| w != s.config.address) {
                continue;
            }
            let counts = self.counts(s.config.address, req.enable_advertised).await;
            let peer = convert::peer(&s, config.asn.0, &counts, config.cluster_id);
            out.push(Ok(apipb::ListPeerResponse { peer: Some(peer) }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }

    async fn reset_peer(
        &self,
        request: Request<apipb::ResetPeerRequest>,
    ) -> Result<Response<()>, Status> {
        self.check_mutations("ResetPeer")?;
        let req = request.into_inner();
        let addr = self.peer_address(&req.address).await?;
        use apipb::reset_peer_request::SoftResetDirection as D;
        let kinds: &[ResetKind] = if !req.soft {
            &[ResetKind::Hard]
        } else {
            match D::try_from(req.direction).unwrap_or(D::Both) {
                D::In => &[ResetKind::SoftIn],
                D::Out => &[ResetKind::SoftOut],
                D::Both => &[ResetKind::SoftIn, ResetKind::SoftOut],
            }
        };
        for kind in kinds {
            info!(peer = %addr, ?kind, "API: reset");
            self.speaker
                .reset(addr, *kind)
                .await
                .map_err(speaker_status)?;
        }
        Ok(Response::new(()))
    }

    async fn enable_peer(
        &self,
        request: Request<apipb::EnablePeerRequest>,
    ) -> Result<Response<()>, Status> {
        self.check_mutations("EnablePeer")?;
        let addr = self.peer_address(&request.into_inner().address).await?;
        info!(peer = %addr, "API: enable");
        self.speaker
            .set_enabled(addr, true)
            .await
            .map_err(speaker_status)?;
        Ok(Response::new(()))
    }

    async fn disable_peer(
        &self,
        request: Request<apipb::DisablePeerRequest>,
    ) -> Result<Response<()>, Status> {
        self.check_mutations("DisablePeer")?;
        let addr = self.peer_address(&request.into_inner().address).await?;
        info!(peer = %addr, "API: disable");
        self.speaker
            .set_enabled(addr, false)
            .await
            .map_err(speaker_status)?;
        Ok(Response::new(()))
    }

    type ListPathStream = BoxStream<apipb::ListPathResponse>;

    async fn list_path(
        &self,
        request: Request<apipb::ListPathRequest>,
    ) -> Result<Response<Self::ListPathStream>, Status> {
        let req = request.into_inner();
        let table = TableType::try_from(req.table_type)
            .map_err(|_| Status::invalid_argument("unknown table type"))?;
        let family = request_family(req.family.as_ref())?;
        let filters = req
            .prefixes
            .iter()
            .map(PrefixFilter::from_api)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dsts = self.table(table, &req.name, family, &filters).await?;
        let out: Vec<_> = dsts
            .into_iter()
            .map(|d| {
                Ok(apipb::ListPathResponse {
                    destination: Some(d),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }

    async fn get_table(
        &self,
        request: Request<apipb::GetTableRequest>,
    ) -> Result<Response<apipb::GetTableResponse>, Status> {
        let req = request.into_inner();
        let table = TableType::try_from(req.table_type)
            .map_err(|_| Status::invalid_argument("unknown table type"))?;
        let family = request_family(req.family.as_ref())?;
        let dsts = self.table(table, &req.name, family, &[]).await?;
        let num_path: usize = dsts.iter().map(|d| d.paths.len()).sum();
        let num_accepted: usize = dsts
            .iter()
            .flat_map(|d| &d.paths)
            .filter(|p| !p.filtered)
            .count();
        Ok(Response::new(apipb::GetTableResponse {
            num_destination: dsts.len() as u64,
            num_path: num_path as u64,
            num_accepted: if table == TableType::AdjIn {
                num_accepted as u64
            } else {
                0
            },
        }))
    }
}

/// Check the listen addresses against the remote-access switch. Pure, so it is unit-tested.
pub fn check_listen(config: &ApiConfig) -> Result<(), ApiError> {
    for addr in &config.listen {
        if !addr.ip().is_loopback() && !config.allow_remote {
            return Err(ApiError::RemoteNotAllowed(*addr));
        }
    }
    Ok(())
}

/// Bind every listener and serve until the process ends. Binding happens before this returns,
/// so a taken port is an error here rather than a log line later.
pub async fn spawn(speaker: Speaker, config: ApiConfig) -> Result<(), ApiError> {
    check_listen(&config)?;
    let service = GobgpService::new(speaker, config.allow_mutations);
    for addr in &config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Listen {
                addr: *addr,
                source,
            })?;
        if addr.ip().is_loopback() {
            info!(listen = %addr, mutations = config.allow_mutations, "API serving");
        } else {
            warn!(listen = %addr, mutations = config.allow_mutations,
                "API serving on a non-loopback address: anyone who reaches it can read the routing state");
        }
        let svc = GobgpApiServer::new(service.clone());
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
            {
                warn!(error = %e, "API server stopped");
            }
        });
    }
    if let Some(path) = &config.socket {
        // A socket file left by an earlier run would make bind fail.
        if path.exists() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let listener = tokio::net::UnixListener::bind(path).map_err(|source| ApiError::Socket {
            path: path.clone(),
            source,
        })?;
        info!(socket = %path.display(), mutations = config.allow_mutations, "API serving");
        let svc = GobgpApiServer::new(service);
        tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(incoming)
                .await
            {
                warn!(error = %e, "API server stopped");
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_loopback_address_needs_the_remote_flag() {
        let mut c = ApiConfig {
            listen: vec!["0.0.0.0:50051".parse().expect("addr")],
            ..Default::default()
        };
        assert!(matches!(
            check_listen(&c),
            Err(ApiError::RemoteNotAllowed(_))
        ));
        c.allow_remote = true;
        assert!(check_listen(&c).is_ok());
    }

    #[test]
    fn loopback_is_allowed_by_default() {
        let c = ApiConfig {
            listen: vec![
                "127.0.0.1:50051".parse().expect("addr"),
                "[::1]:50051".parse().expect("addr"),
            ],
            ..Default::default()
        };
        assert!(check_listen(&c).is_ok());
    }
}
