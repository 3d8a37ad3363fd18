//! The outgoing HTTP client every source uses: timeouts, no redirects, the egress policy at
//! name resolution, and rustls (ring) for https with the system roots plus an optional CA bundle.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{self, RootCertStore};

use crate::egress::{EgressPolicy, PolicyResolver};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("egress.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("HTTP client: {0}")]
    Build(String),
}

/// Builds the client. Redirects are not followed: a 3xx is an error, so an allowed endpoint
/// cannot send the scaler to a host or port the policy would refuse.
pub fn build(
    timeout: Duration,
    egress: &Arc<EgressPolicy>,
) -> Result<reqwest::Client, ClientError> {
    install_provider();
    let tls = tls_config(egress.ca_file.as_deref())?;
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver::new(egress.clone())))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| ClientError::Build(describe(&e)))
}

/// Makes ring the process's rustls provider (once): reqwest, built here without a bundled
/// provider (aws-lc would add a long C build), wants one before it builds any client, including
/// plain-http clients elsewhere in the process (the demo's, the tests').
pub fn install_provider() {
    // Err means a provider is installed already (ours, or the embedding program's): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// rustls with the ring provider (the one the gRPC listener uses), trusting the system's roots
/// and the CA bundle, if any.
pub fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    // A missing or unreadable system store leaves only the bundle: in-cluster endpoints are
    // usually signed by a private CA anyway.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let err = |reason: String| ClientError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| err(format!("not PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| err(format!("not a CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(err("holds no PEM certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A reqwest error for notes and logs: its kind and cause, never the URL (which the caller
/// names when it should) and never a body.
pub fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    crate::text::bounded(&text, 300)
}
