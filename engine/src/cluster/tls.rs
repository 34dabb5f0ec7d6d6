//! TLS for the node-to-node API (rustls with the ring provider): each node serves with its
//! certificate and dials the others trusting only the configured CA bundle. Without
//! certificates the API is h2c on the private network, authenticated by the cluster key alone.

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// A TLS handshake that takes longer is abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a node's certificate, key and trusted CA bundle are.
#[derive(Clone, Debug)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA certificates peers must chain to; `None`: the node's own certificate (one
    /// self-signed certificate shared by every node).
    pub ca: Option<PathBuf>,
}

/// Both sides of TLS, loaded once at start.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// The CA certificates a dialling node trusts, as PEM.
    pub roots: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
    Ok(certs)
}

impl Tls {
    pub fn load(files: &Files) -> anyhow::Result<Self> {
        let certs = certificates(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key)
            .with_context(|| format!("reading the private key from {}", files.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the internal TLS certificate and key do not match")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let ca = files.ca.as_deref().unwrap_or(&files.cert);
        let roots = certificates(ca)?
            .into_iter()
            .map(|der| reqwest::Certificate::from_der(der.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("using {} as trusted CAs", ca.display()))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            roots,
        })
    }
}

/// Resolves once `stopped` turns true (or its sender is gone); holds no borrow of it after.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Serves `app` over TLS on `listener` until `stopped` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    acceptor: TlsAcceptor,
    mut stopped: watch::Receiver<bool>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (stream, peer) = tokio::select! {
            () = until_stopped(&mut stopped) => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an internal connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, builder) = (acceptor.clone(), app.clone(), Arc::clone(&builder));
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, %peer, "internal TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "internal TLS handshake timed out");
                        return;
                    }
                };
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            let mut connection = pin!(connection);
            let stopping = tokio::select! {
                _ = connection.as_mut() => false,
                () = until_stopped(&mut stopped) => true,
            };
            if stopping {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        });
    }
}
