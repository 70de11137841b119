//! Connecting to a GoBGP API server over TCP (`-u HOST -p PORT`) or a unix socket.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::api::apipb::gobgp_api_client::GobgpApiClient;

/// Where the API server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP host and port.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A unix socket path.
    Unix(PathBuf),
}

/// Errors connecting.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The target does not form a valid URI.
    #[error("invalid API address {0}: {1}")]
    Address(String, tonic::transport::Error),
    /// The connection failed.
    #[error("failed to connect to {0}: {1}")]
    Connect(String, tonic::transport::Error),
}

/// Connect, giving up after `timeout` (gobgp's client waits for the connection too).
pub async fn connect(
    target: &Target,
    timeout: Duration,
) -> Result<GobgpApiClient<Channel>, ConnectError> {
    match target {
        Target::Tcp { host, port } => {
            // An IPv6 literal needs brackets in a URI.
            let authority = if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let endpoint = Endpoint::from_shared(format!("http://{authority}"))
                .map_err(|e| ConnectError::Address(authority.clone(), e))?
                .connect_timeout(timeout);
            let channel = endpoint
                .connect()
                .await
                .map_err(|e| ConnectError::Connect(authority, e))?;
            Ok(GobgpApiClient::new(channel))
        }
        Target::Unix(path) => {
            let path = path.clone();
            let shown = path.display().to_string();
            // The URI is required by the API but unused: the connector dials the socket.
            let endpoint = Endpoint::from_static("http://localhost").connect_timeout(timeout);
            let channel = endpoint
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(|e| ConnectError::Connect(shown, e))?;
            Ok(GobgpApiClient::new(channel))
        }
    }
}
