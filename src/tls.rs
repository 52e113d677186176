//! The server's TLS identity: a certificate chain and its private key
//! (PEM files), loaded once at start for every door, with the CA client
//! certificates must be signed by when one is given; and the HTTP admin's
//! TLS accept loop.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// A loaded identity.
pub struct Tls {
    /// TLS 1.2 and 1.3 with this certificate, on the ring provider.
    pub config: Arc<ServerConfig>,
    /// The certificate chain as read (PEM), for SCRAM channel binding.
    pub certificate_pem: Vec<u8>,
    /// The private key as read (PEM), for the Flight door's own TLS.
    pub key_pem: Vec<u8>,
    /// The CA clients' certificates must be signed by (PEM), if any.
    pub client_ca_pem: Option<Vec<u8>>,
}

/// Reads `cert` and `key`, and `client_ca` (clients must then present a
/// certificate it signed); says which file is wrong and why.
pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<Tls> {
    let certificate_pem = std::fs::read(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM in TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("TLS certificate {} holds no certificate", cert.display());
    }
    let key_pem =
        std::fs::read(key).with_context(|| format!("cannot read TLS key {}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("no private key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let (builder, client_ca_pem) = match client_ca {
        None => (builder.with_no_client_auth(), None),
        Some(ca) => {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read client CA {}", ca.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.with_context(|| format!("bad PEM in client CA {}", ca.display()))?;
                roots.add(c).with_context(|| {
                    format!("client CA {} is not a CA certificate", ca.display())
                })?;
            }
            if roots.is_empty() {
                bail!("client CA {} holds no certificate", ca.display());
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .with_context(|| format!("client CA {}", ca.display()))?;
            (builder.with_client_cert_verifier(verifier), Some(pem))
        }
    };
    let config = builder.with_single_cert(chain, key_der).with_context(|| {
        format!(
            "TLS certificate {} and key {} do not make an identity",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Tls {
        config: Arc::new(config),
        certificate_pem,
        key_pem,
        client_ca_pem,
    })
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves (the
/// HTTP admin with a certificate: HTTP/1.1 and HTTP/2). A connection whose
/// handshake fails is dropped; the others are served to their end.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    config: Arc<ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTP admin TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| {
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let served =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP admin connection ended with an error");
            }
        });
    }
}
