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
/// cannot send the scaler to a host or port the policy would refuse. The process's proxy
/// variables are not followed either, unless `egress.use_proxy_env` (see `proxies`).
pub fn build(
    timeout: Duration,
    egress: &Arc<EgressPolicy>,
) -> Result<reqwest::Client, ClientError> {
    install_provider();
    let tls = tls_config(egress.ca_file.as_deref())?;
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(PolicyResolver::new(egress.clone())))
        .tls_backend_preconfigured(tls);
    proxies(builder, egress)?
        .build()
        .map_err(|e| ClientError::Build(describe(&e)))
}

/// reqwest sends requests through the proxy that `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` name
/// by default; the proxy then resolves the tenant's host itself, out of the policy's sight. So
/// the variables are ignored, unless the operator opted in: then the proxies read with the
/// settings (`EgressPolicy::proxy`) are used, never the environment as it is at request time.
fn proxies(
    builder: reqwest::ClientBuilder,
    egress: &EgressPolicy,
) -> Result<reqwest::ClientBuilder, ClientError> {
    // `no_proxy()` also turns off reqwest's own reading of the variables.
    let mut builder = builder.no_proxy();
    if !egress.use_proxy_env {
        return Ok(builder);
    }
    let except = egress
        .proxy
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    let build = |e: reqwest::Error| ClientError::Build(format!("proxy: {}", describe(&e)));
    if let Some(url) = &egress.proxy.http {
        builder = builder.proxy(
            reqwest::Proxy::http(url.as_str())
                .map_err(build)?
                .no_proxy(except.clone()),
        );
    }
    if let Some(url) = &egress.proxy.https {
        builder = builder.proxy(
            reqwest::Proxy::https(url.as_str())
                .map_err(build)?
                .no_proxy(except),
        );
    }
    Ok(builder)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::ProxyEnv;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    type Log = Arc<Mutex<Vec<String>>>;

    /// A proxy on loopback that records the first line of every request it gets and answers
    /// `proxied` without going anywhere.
    async fn logging_proxy() -> (String, Log) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Log::default();
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let line = head.lines().next().unwrap_or_default().to_string();
                    seen.lock().unwrap().push(line);
                    let reply =
                        "HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\nproxied";
                    let _ = conn.write_all(reply.as_bytes()).await;
                });
            }
        });
        (format!("http://localhost:{port}"), log)
    }

    /// An endpoint on loopback answering `direct`.
    async fn target() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/metrics", axum::routing::get(|| async { "direct" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/metrics")
    }

    async fn fetch(policy: EgressPolicy, url: &str) -> Result<String, String> {
        let client = build(Duration::from_secs(5), &Arc::new(policy)).unwrap();
        let response = client.get(url).send().await.map_err(|e| describe(&e))?;
        response.text().await.map_err(|e| describe(&e))
    }

    /// The policy with proxy variables read (as `Settings::load` reads them when opted in).
    fn with_proxy(
        base: EgressPolicy,
        proxy: &str,
        no_proxy: Option<&str>,
        on: bool,
    ) -> EgressPolicy {
        EgressPolicy {
            use_proxy_env: on,
            proxy: ProxyEnv {
                http: Some(proxy.into()),
                https: Some(proxy.into()),
                no_proxy: no_proxy.map(Into::into),
            },
            ..base
        }
    }

    #[tokio::test]
    async fn tenant_fetches_bypass_proxies_unless_the_operator_opts_in() {
        let (proxy, log) = logging_proxy().await;
        let url = target().await;

        // Off (the default), even with proxies known: straight to the endpoint.
        let off = with_proxy(EgressPolicy::loopback(), &proxy, None, false);
        assert_eq!(fetch(off, &url).await.unwrap(), "direct");
        assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());

        // Opted in: through the proxy, which is asked for the tenant's URL.
        let on = with_proxy(EgressPolicy::loopback(), &proxy, None, true);
        assert_eq!(fetch(on, &url).await.unwrap(), "proxied");
        assert_eq!(
            log.lock().unwrap().as_slice(),
            [format!("GET {url} HTTP/1.1")]
        );

        // NO_PROXY hosts are fetched directly.
        let except = with_proxy(EgressPolicy::loopback(), &proxy, Some("127.0.0.1"), true);
        assert_eq!(fetch(except, &url).await.unwrap(), "direct");
        assert_eq!(log.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn through_a_proxy_only_the_urls_own_host_is_checked() {
        let (proxy, log) = logging_proxy().await;
        // Directly, a name resolving to loopback is refused when it is resolved...
        let e = fetch(EgressPolicy::default(), "http://localhost:9/metrics")
            .await
            .unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        // ...through a proxy the scaler never resolves it: what opting in gives up. The proxy's
        // own name (loopback here) is the operator's and is resolved without the policy.
        let on = with_proxy(EgressPolicy::default(), &proxy, None, true);
        assert_eq!(
            fetch(on, "http://localhost:9/metrics").await.unwrap(),
            "proxied"
        );
        assert_eq!(
            log.lock().unwrap().as_slice(),
            ["GET http://localhost:9/metrics HTTP/1.1"]
        );
    }
}
