//! What a pod's service account gives a Kubernetes client, made up for one test: a CA and a
//! server certificate for the fake API server's address (rcgen), a bearer token, and the
//! directory kubelet would mount at /var/run/secrets/kubernetes.io/serviceaccount (`ca.crt`,
//! `token`, `namespace`), plus the command line that runs a program with that directory in
//! place.
//!
//! kube-rs (like client-go) reads those paths as constants, so the program runs in its own
//! mount namespace (`unshare --mount --propagation private`, inside the test's network
//! namespace) where a tmpfs over /run holds the directory: nothing is mounted or written on the
//! host's real paths.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;

/// Where kube-rs and client-go look for the service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// A CA, a server certificate signed by it, and a service account directory holding the CA,
/// a token and a namespace.
pub struct ServiceAccount {
    dir: tempfile::TempDir,
    token: String,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
}

impl ServiceAccount {
    /// Makes the CA and a certificate for `server` (an IP address SAN, as the in-cluster URL
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` names it), and writes the
    /// service account files.
    pub fn new(server: IpAddr) -> Result<ServiceAccount, String> {
        let err = |e: rcgen::Error| format!("certificates: {e}");
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "underroute-test-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).map_err(err)?;
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(vec![server.to_string()]).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(err)?;
        let dir = tempfile::Builder::new()
            .prefix("ur-serviceaccount.")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        // Random enough to be told apart from any other test's: the process id and the time.
        let token = format!(
            "ur-test-token-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let sa = ServiceAccount {
            dir,
            token,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: ca.pem(),
        };
        for (name, text) in [
            ("ca.crt", sa.ca_pem.as_str()),
            ("token", sa.token.as_str()),
            ("namespace", "kube-system"),
        ] {
            let path = sa.dir.path().join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(sa)
    }

    /// The directory to mount at [`SERVICE_ACCOUNT_DIR`].
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bearer token the server must see.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The server side: certificate chain and key for the fake API server.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("server certificate: {e}"))?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("server key: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("server certificate: {e}"))?;
        Ok(Arc::new(config))
    }

    /// `program args...` as a command line that runs it in-cluster style: a private mount
    /// namespace with this service account at [`SERVICE_ACCOUNT_DIR`], the API server's
    /// address in `KUBERNETES_SERVICE_HOST`/`_PORT`, and no kubeconfig to find (`KUBECONFIG`
    /// unset, `HOME` in the service account's temp dir). Hand it to `Netns::spawn`.
    pub fn command(
        &self,
        server: std::net::SocketAddr,
        program: &str,
        args: &[&str],
    ) -> (String, Vec<String>) {
        // /var/run is /run on Debian: a tmpfs over /run in the private mount namespace holds
        // the mount point; the network namespace is entered already, so /run/netns is not
        // needed any more.
        let script = "set -e; mount -t tmpfs tmpfs /run; mkdir -p \"$1\"; \
                      mount --bind \"$2\" \"$1\"; shift 2; exec \"$@\"";
        let mut argv: Vec<String> = [
            "--mount",
            "--propagation",
            "private",
            "env",
            "-u",
            "KUBECONFIG",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(format!("HOME={}", self.home().display()));
        argv.push(format!("KUBERNETES_SERVICE_HOST={}", server.ip()));
        argv.push(format!("KUBERNETES_SERVICE_PORT={}", server.port()));
        argv.extend(["sh", "-c", script, "sh"].iter().map(|s| s.to_string()));
        argv.push(SERVICE_ACCOUNT_DIR.to_string());
        argv.push(self.dir().display().to_string());
        argv.push(program.to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        ("unshare".to_string(), argv)
    }

    fn home(&self) -> PathBuf {
        self.dir().join("home")
    }
}
