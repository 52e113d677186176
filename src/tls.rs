//! The server's TLS identity: a certificate chain and its private key
//! (PEM files), loaded once at start for every door that speaks TLS.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A loaded identity.
pub struct Tls {
    /// TLS 1.2 and 1.3 with this certificate, on the ring provider.
    pub config: Arc<ServerConfig>,
    /// The certificate chain as read (PEM), for SCRAM channel binding.
    pub certificate_pem: Vec<u8>,
}

/// Reads `cert` and `key`; says which file is wrong and why.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
    let certificate_pem = std::fs::read(cert)
        .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("bad PEM in TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!("TLS certificate {} holds no certificate", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a private key from {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "TLS certificate {} and key {} do not make an identity",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Tls {
        config: Arc::new(config),
        certificate_pem,
    })
}
