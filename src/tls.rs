//! TLS for the gRPC listener: a rustls server config built from the `[tls]` files, rebuilt when
//! the files change (cert-manager renews certificates in place, and a Secret volume swaps the
//! files atomically), and an accept loop that runs handshakes concurrently so one slow or silent
//! client cannot hold up the others.
//!
//! The whole `ServerConfig` is rebuilt on a change rather than only the certificate: that way a
//! rotated client CA takes effect the same way as a rotated server certificate. Each new
//! connection takes the config current at accept time; established connections keep the session
//! they negotiated (certificates are only checked during the handshake).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::sign::{CertifiedKey, SingleCertAndKey};
use tokio_rustls::rustls::{self, InconsistentKeys, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsFiles;

/// A client that has not finished its handshake by then is dropped. KEDA completes it in
/// milliseconds; anything slower is broken or hostile.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; past this, accepting waits and new connections queue in the
/// kernel's backlog, so a flood of silent connections costs bounded memory.
const MAX_PENDING_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("setting '{setting}': cannot read {}: {source}", path.display())]
    Read {
        setting: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("setting '{setting}': {} is not valid PEM: {detail}", path.display())]
    NotPem {
        setting: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("setting '{setting}': {} holds no {what}", path.display())]
    Empty {
        setting: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("setting 'tls.key_file': {} holds no usable private key: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("setting 'tls.cert_file': {} holds no usable certificate: {source}", path.display())]
    Cert {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error(
        "settings 'tls.cert_file' and 'tls.key_file': the private key in {} does not belong to \
         the certificate in {}",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("setting 'tls.client_ca_file': {}: {detail}", path.display())]
    ClientCa { path: PathBuf, detail: String },
}

/// The bytes of the `[tls]` files, compared to detect a change.
#[derive(Clone, PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// What one look at the files found.
#[derive(Debug)]
pub enum Reload {
    /// The files are the ones being served (or the ones already rejected).
    Unchanged,
    /// New files were valid and new connections now use them.
    Reloaded,
    /// New files are invalid; the previous config is still served.
    Rejected(TlsError),
}

#[derive(Default)]
struct WatchState {
    /// Files that failed, so the same bad files are reported once, not on every look.
    rejected: Option<Material>,
    last_read_error: Option<String>,
}

/// The server's TLS config, replaced whole when the files change.
pub struct ReloadingConfig {
    files: TlsFiles,
    current: RwLock<(Material, Arc<ServerConfig>)>,
    state: Mutex<WatchState>,
}

impl ReloadingConfig {
    /// Reads and checks the files; every problem names the setting.
    pub fn load(files: &TlsFiles) -> Result<ReloadingConfig, TlsError> {
        let material = read(files)?;
        let config = build(files, &material)?;
        Ok(ReloadingConfig {
            files: files.clone(),
            current: RwLock::new((material, config)),
            state: Mutex::new(WatchState::default()),
        })
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca_file.is_some()
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// Re-reads the files and swaps the config in when they changed and are valid. Blocking IO:
    /// call from a blocking context.
    pub fn reload(&self) -> Reload {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let material = match read(&self.files) {
            Ok(m) => m,
            Err(e) => {
                // A Secret update can briefly leave a file missing; report each distinct
                // problem once.
                let text = e.to_string();
                if state.last_read_error.as_deref() == Some(text.as_str()) {
                    return Reload::Unchanged;
                }
                state.last_read_error = Some(text);
                return Reload::Rejected(e);
            }
        };
        state.last_read_error = None;
        let serving = self.current.read().unwrap_or_else(|e| e.into_inner());
        if serving.0 == material {
            // Back to the served files after a rejected change: report the next one again.
            state.rejected = None;
            return Reload::Unchanged;
        }
        if state.rejected.as_ref() == Some(&material) {
            return Reload::Unchanged;
        }
        drop(serving);
        match build(&self.files, &material) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (material, config);
                state.rejected = None;
                Reload::Reloaded
            }
            Err(e) => {
                state.rejected = Some(material);
                Reload::Rejected(e)
            }
        }
    }

    /// Looks at the files every `interval` until `stop`, logging each reload or rejection.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; the files were just loaded
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stopped(&mut stop) => return,
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Reloaded) => tracing::info!(
                    cert_file = %self.files.cert_file.display(),
                    "TLS files changed; new connections use the new certificate"
                ),
                Ok(Reload::Rejected(e)) => tracing::warn!(
                    error = %e,
                    "TLS files changed but cannot be used; still serving the previous certificate"
                ),
                Err(e) => tracing::error!(error = %e, "TLS reload task failed"),
            }
        }
    }
}

/// TLS connections accepted on `listener`, for `Server::serve_with_incoming_shutdown`, and the
/// accept loop that feeds them, to be spawned; it ends on `stop`. Failed handshakes are logged
/// and dropped; they never end the stream.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ReloadingConfig>,
    stop: watch::Receiver<bool>,
) -> (
    ReceiverStream<Result<TlsStream<TcpStream>, io::Error>>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(64);
    (
        ReceiverStream::new(rx),
        accept_loop(listener, tls, tx, stop),
    )
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ReloadingConfig>,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, io::Error>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        if handshakes.len() >= MAX_PENDING_HANDSHAKES {
            tokio::select! {
                _ = handshakes.join_next() => continue,
                _ = stopped(&mut stop) => break,
            }
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // gRPC sends small frames; Nagle would delay them.
                    let _ = tcp.set_nodelay(true);
                    let acceptor = TlsAcceptor::from(tls.current());
                    let tx = tx.clone();
                    handshakes.spawn(async move {
                        if let Some(stream) = handshake(acceptor, tcp, peer).await {
                            // Err: the server is shutting down and no longer takes connections.
                            let _ = tx.send(Ok(stream)).await;
                        }
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: pause instead of spinning on the error.
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    // Dropping `handshakes` aborts those still in progress.
}

/// Resolves once `stop` is set (or its sender is gone). Holds no borrow of the value, so the
/// future stays `Send` across the other `select!` arms.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            // A TLS-level failure (no or untrusted client certificate, a plaintext client,
            // no common protocol) is a misconfiguration worth seeing; a bare disconnect is
            // usually a TCP probe.
            let tls_error = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            match tls_error {
                Some(tls) => tracing::warn!(%peer, error = %tls, "TLS handshake refused"),
                None => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            }
            None
        }
        Err(_) => {
            tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out");
            None
        }
    }
}

fn read(files: &TlsFiles) -> Result<Material, TlsError> {
    let read = |setting: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            setting,
            path: path.to_path_buf(),
            source,
        })
    };
    Ok(Material {
        cert: read("tls.cert_file", &files.cert_file)?,
        key: read("tls.key_file", &files.key_file)?,
        client_ca: files
            .client_ca_file
            .as_deref()
            .map(|p| read("tls.client_ca_file", p))
            .transpose()?,
    })
}

fn certificates(
    setting: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::NotPem {
            setting,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            setting,
            path: path.to_path_buf(),
            what: "PEM certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

fn build(files: &TlsFiles, material: &Material) -> Result<Arc<ServerConfig>, TlsError> {
    // ring, chosen explicitly: the process-wide default provider is ambiguous when another
    // dependency enables a second one.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certified = certified_key(files, material, &provider)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = match (&files.client_ca_file, &material.client_ca) {
        (Some(path), Some(bytes)) => {
            let client_ca_error = |detail: String| TlsError::ClientCa {
                path: path.clone(),
                detail,
            };
            let mut roots = RootCertStore::empty();
            for ca in certificates("tls.client_ca_file", path, bytes)? {
                roots
                    .add(ca)
                    .map_err(|e| client_ca_error(format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| client_ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // gRPC is HTTP/2 only, and gRPC clients (grpc-go in KEDA and grpcurl) refuse a TLS server
    // that does not select h2 by ALPN.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn certified_key(
    files: &TlsFiles,
    material: &Material,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = certificates("tls.cert_file", &files.cert_file, &material.cert)?;
    let key_path = || files.key_file.clone();
    let key = PrivateKeyDer::from_pem_slice(&material.key).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Empty {
            setting: "tls.key_file",
            path: key_path(),
            what: "PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY)",
        },
        e => TlsError::NotPem {
            setting: "tls.key_file",
            path: key_path(),
            detail: e.to_string(),
        },
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Key {
            path: key_path(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot tell its public key; the handshake will show.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: files.cert_file.clone(),
                key: key_path(),
            })
        }
        Err(source) => Err(TlsError::Cert {
            path: files.cert_file.clone(),
            source,
        }),
    }
}
