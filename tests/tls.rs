//! TLS and mTLS on the gRPC port, over loopback with certificates generated per test: who is
//! let in, certificate rotation without a restart, grpcurl through the binary, and bad files
//! refused at start with the setting named; and the https client that reads endpoints, trusting
//! a configured CA bundle.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keda_gpu_scaler::config::{Settings, TlsSettings};
use keda_gpu_scaler::server::{self, Running};
use keda_gpu_scaler::tls::{Reload, ReloadingConfig};
use support::pki::{client_tls, write_atomically, Ca, TlsDir};
use support::*;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const RELOAD: Duration = Duration::from_millis(100);

fn tls_settings(dir: &TlsDir, client_auth: bool) -> Settings {
    Settings {
        tls: TlsSettings::on(dir.files(client_auth), RELOAD),
        ..settings(Duration::from_millis(200), Duration::from_secs(5))
    }
}

/// The error and its sources on one line: tonic's transport errors keep the TLS reason inside.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Connects on a new connection and makes one real RPC (grpc.health.v1 Check).
async fn health(addr: SocketAddr, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(|e| chain(&e))?;
    }
    let channel = endpoint.connect().await.map_err(|e| chain(&e))?;
    check(channel).await
}

async fn check(channel: tonic::transport::Channel) -> Result<(), String> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|s| chain(&s))
}

/// Retries `health` until it succeeds, for changes the server picks up on its next file check.
async fn eventually_ok(addr: SocketAddr, tls: impl Fn() -> ClientTlsConfig) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let last = match health(addr, Some(tls())).await {
            Ok(()) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "not accepted within 5s (reload interval {RELOAD:?}): {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(settings: &Settings) -> Running {
    server::start(settings).await.expect("scaler starts")
}

#[tokio::test]
async fn tls_lets_in_clients_that_trust_the_ca_and_check_the_name() {
    let ca = Ca::new("scaler CA");
    let dir = TlsDir::new(&ca.server(), None);
    let running = start(&tls_settings(&dir, false)).await;
    let addr = running.grpc_addr;

    health(addr, Some(client_tls(&ca, None)))
        .await
        .expect("a client trusting the CA gets an answer");

    let stranger = Ca::new("another CA");
    let e = health(addr, Some(client_tls(&stranger, None)))
        .await
        .unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // KEDA checks the certificate against the host in scalerAddress.
    let wrong_name = client_tls(&ca, None).domain_name("scaler.other.example");
    let e = health(addr, Some(wrong_name)).await.unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");

    // A client without TLS (a trigger missing enableTLS) gets no answer.
    assert!(health(addr, None).await.is_err());

    running.stop().await;
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_client_ca() {
    let server_ca = Ca::new("scaler CA");
    let client_ca = Ca::new("KEDA client CA");
    let dir = TlsDir::new(&server_ca.server(), Some(&client_ca));
    let running = start(&tls_settings(&dir, true)).await;
    let addr = running.grpc_addr;

    let e = health(addr, Some(client_tls(&server_ca, None)))
        .await
        .unwrap_err();
    assert!(
        e.contains("CertificateRequired"),
        "no client certificate: {e}"
    );

    let outsider = Ca::new("another CA").client();
    let e = health(addr, Some(client_tls(&server_ca, Some(&outsider))))
        .await
        .unwrap_err();
    assert!(e.contains("UnknownCA"), "certificate from another CA: {e}");

    let keda = client_ca.client();
    health(addr, Some(client_tls(&server_ca, Some(&keda))))
        .await
        .expect("KEDA's client certificate is accepted");

    running.stop().await;
}

#[tokio::test]
async fn rotated_files_are_served_without_a_restart() {
    let old_ca = Ca::new("old scaler CA");
    let client_ca = Ca::new("old client CA");
    let keda = client_ca.client();
    let dir = TlsDir::new(&old_ca.server(), Some(&client_ca));
    let running = start(&tls_settings(&dir, true)).await;
    let addr = running.grpc_addr;

    // An established connection, as KEDA keeps one per scaler address.
    let open = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(client_tls(&old_ca, Some(&keda)))
        .unwrap()
        .connect()
        .await
        .unwrap();
    check(open.clone()).await.unwrap();

    // A broken write during rotation: the old certificate stays in service.
    write_atomically(&dir.cert_file, "not a certificate\n");
    tokio::time::sleep(RELOAD * 4).await;
    health(addr, Some(client_tls(&old_ca, Some(&keda))))
        .await
        .expect("still serving the previous certificate");

    // cert-manager renews with a new CA.
    let new_ca = Ca::new("new scaler CA");
    dir.write_server(&new_ca.server());
    eventually_ok(addr, || client_tls(&new_ca, Some(&keda))).await;
    let e = health(addr, Some(client_tls(&old_ca, Some(&keda))))
        .await
        .unwrap_err();
    assert!(
        e.contains("UnknownIssuer"),
        "old CA on a new connection: {e}"
    );

    // The client CA rotates too.
    let new_client_ca = Ca::new("new client CA");
    dir.write_client_ca(&new_client_ca);
    let renewed_keda = new_client_ca.client();
    eventually_ok(addr, || client_tls(&new_ca, Some(&renewed_keda))).await;
    assert!(health(addr, Some(client_tls(&new_ca, Some(&keda))))
        .await
        .is_err());

    // The connection from before the rotation was never dropped.
    check(open)
        .await
        .expect("established connection still served");
    running.stop().await;
}

#[tokio::test]
async fn reload_reports_each_bad_change_once_and_keeps_serving_the_last_good_files() {
    let ca = Ca::new("scaler CA");
    let first = ca.server();
    let dir = TlsDir::new(&first, None);
    let tls = Arc::new(ReloadingConfig::load(&dir.files(false)).unwrap());
    let served = tls.current();
    assert!(matches!(tls.reload(), Reload::Unchanged));
    assert_eq!(served.alpn_protocols, vec![b"h2".to_vec()]);

    // Certificate written, key not yet: a non-atomic rotation half-way.
    let second = ca.server();
    write_atomically(&dir.cert_file, &second.cert);
    match tls.reload() {
        Reload::Rejected(e) => assert!(
            e.to_string().contains("'tls.cert_file' and 'tls.key_file'")
                && e.to_string().contains("does not belong"),
            "{e}"
        ),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(matches!(tls.reload(), Reload::Unchanged), "reported once");
    assert!(Arc::ptr_eq(&served, &tls.current()), "old config kept");

    write_atomically(&dir.key_file, &second.key);
    assert!(matches!(tls.reload(), Reload::Reloaded));
    assert!(!Arc::ptr_eq(&served, &tls.current()));

    // A file that disappears (mid-swap) is reported, then picked up again when it returns.
    std::fs::remove_file(&dir.key_file).unwrap();
    match tls.reload() {
        Reload::Rejected(e) => assert!(e.to_string().contains("'tls.key_file'"), "{e}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(matches!(tls.reload(), Reload::Unchanged), "reported once");
    write_atomically(&dir.key_file, &second.key);
    assert!(
        matches!(tls.reload(), Reload::Unchanged),
        "same files as served"
    );
}

#[tokio::test]
async fn bad_tls_files_stop_the_start_naming_the_setting() {
    let ca = Ca::new("scaler CA");
    let good = ca.server();
    let other = ca.server();
    let dir = TlsDir::new(&good, Some(&ca));

    let start_error = |settings: Settings| async move {
        match server::start(&settings).await {
            Ok(running) => {
                running.stop().await;
                panic!("started with bad TLS files")
            }
            Err(e) => e.to_string(),
        }
    };
    let with = |change: &dyn Fn(&mut keda_gpu_scaler::config::TlsFiles)| {
        let mut files = dir.files(true);
        change(&mut files);
        Settings {
            tls: TlsSettings::on(files, RELOAD),
            ..tls_settings(&dir, true)
        }
    };
    let missing = dir.cert_file.with_file_name("absent.crt");
    let not_pem = dir.cert_file.with_file_name("notes.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let broken_pem = dir.cert_file.with_file_name("broken.pem");
    std::fs::write(&broken_pem, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
    let other_key = dir.cert_file.with_file_name("other.key");
    std::fs::write(&other_key, &other.key).unwrap();
    let a_directory = dir.cert_file.parent().unwrap().to_path_buf();

    let cases: Vec<(Settings, &[&str])> = vec![
        (
            with(&|f| f.cert_file = missing.clone()),
            &["'tls.cert_file'", "cannot read", "absent.crt"],
        ),
        (
            with(&|f| f.key_file = a_directory.clone()),
            &["'tls.key_file'", "cannot read"],
        ),
        (
            with(&|f| f.cert_file = not_pem.clone()),
            &["'tls.cert_file'", "holds no PEM certificate"],
        ),
        (
            with(&|f| f.cert_file = broken_pem.clone()),
            &["'tls.cert_file'", "not valid PEM"],
        ),
        (
            // The certificate where the key belongs.
            with(&|f| f.key_file = f.cert_file.clone()),
            &["'tls.key_file'", "holds no PEM private key"],
        ),
        (
            with(&|f| f.key_file = other_key.clone()),
            &["'tls.cert_file' and 'tls.key_file'", "does not belong"],
        ),
        (
            with(&|f| f.client_ca_file = Some(not_pem.clone())),
            &["'tls.client_ca_file'", "holds no PEM certificate"],
        ),
    ];
    for (settings, expected) in cases {
        let e = start_error(settings).await;
        for part in expected {
            assert!(e.contains(part), "expected {part:?} in: {e}");
        }
    }
}

// Multi-threaded: the test blocks on grpcurl while nothing else needs this runtime, but the
// server is a child process anyway; the runtime only drives the timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_mtls_to_grpcurl_and_check_config_shows_tls() {
    let server_ca = Ca::new("scaler CA");
    let client_ca = Ca::new("KEDA client CA");
    let dir = TlsDir::new(&server_ca.server(), Some(&client_ca));
    let keda = client_ca.client();
    let client_cert = dir.cert_file.with_file_name("client.crt");
    let client_key = dir.cert_file.with_file_name("client.key");
    let server_ca_file = dir.cert_file.with_file_name("server-ca.crt");
    std::fs::write(&client_cert, &keda.cert).unwrap();
    std::fs::write(&client_key, &keda.key).unwrap();
    std::fs::write(&server_ca_file, &server_ca.pem).unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (cert, key, ca) = (
        path(&dir.cert_file),
        path(&dir.key_file),
        path(&dir.client_ca_file),
    );
    // The variables the Helm chart sets.
    let env = [
        ("KEDA_GPU_SCALER_TLS__CERT_FILE", cert.as_str()),
        ("KEDA_GPU_SCALER_TLS__KEY_FILE", key.as_str()),
        ("KEDA_GPU_SCALER_TLS__CLIENT_CA_FILE", ca.as_str()),
    ];

    let (ok, out, err) = run(&["check-config"], &env);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("[tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{ca}\"\nreload_interval = \"5s\"\n")),
        "{out}"
    );
    let (ok, _, err) = run(
        &["check-config"],
        &[
            env[0],
            ("KEDA_GPU_SCALER_TLS__KEY_FILE", ca.as_str()),
            env[2],
        ],
    );
    assert!(!ok);
    assert!(err.contains("'tls.key_file'"), "{err}");

    let (_server, grpc_addr) = spawn_serve(&env);
    let port = grpc_addr.rsplit(':').next().unwrap();
    let target = format!("localhost:{port}");
    let (client_cert, client_key, server_ca_file) =
        (path(&client_cert), path(&client_key), path(&server_ca_file));
    let mtls = [
        "-cacert",
        server_ca_file.as_str(),
        "-cert",
        client_cert.as_str(),
        "-key",
        client_key.as_str(),
    ];

    let listed = grpcurl(&[&mtls[..], &[target.as_str(), "list"]].concat());
    assert!(
        listed.contains("externalscaler.ExternalScaler")
            && listed.contains("grpc.health.v1.Health"),
        "{listed}"
    );
    // As the chart's NOTES and docs/deploy.md show it, through a port-forward: the name to
    // check comes from -authority, not from the address dialled.
    let forwarded = grpcurl(
        &[
            &mtls[..],
            &["-authority", "localhost", grpc_addr.as_str(), "list"],
        ]
        .concat(),
    );
    assert!(
        forwarded.contains("externalscaler.ExternalScaler"),
        "{forwarded}"
    );
    let health = grpcurl(&[&mtls[..], &[target.as_str(), "grpc.health.v1.Health/Check"]].concat());
    assert!(health.contains("\"status\""), "{health}");

    let (ok, _, err) =
        grpcurl_output(&["-cacert", server_ca_file.as_str(), target.as_str(), "list"]);
    assert!(
        !ok,
        "grpcurl without a client certificate was let in: {err}"
    );
    let (ok, _, _) = grpcurl_output(&[
        "-plaintext",
        "-connect-timeout",
        "2",
        target.as_str(),
        "list",
    ]);
    assert!(!ok, "plaintext grpcurl was let in");
    // Refusals cost nothing but the connection: the server still answers.
    grpcurl(&[&mtls[..], &[target.as_str(), "list"]].concat());
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_other_handshakes() {
    let ca = Ca::new("scaler CA");
    let dir = TlsDir::new(&ca.server(), None);
    let running = start(&tls_settings(&dir, false)).await;

    // Connections that never send a ClientHello; the server waits up to its handshake timeout
    // (10s) on each, but on the side.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            tokio::net::TcpStream::connect(running.grpc_addr)
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    health(running.grpc_addr, Some(client_tls(&ca, None)))
        .await
        .expect("served while others stall");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    drop(silent);
    running.stop().await;
}

/// A `/metrics` endpoint over https with a certificate from `ca`: answers every request with
/// `body` over HTTP/1.1.
async fn https_metrics(ca: &Ca, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let leaf = ca.server();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    format!("https://localhost:{}/metrics", addr.port())
}

#[tokio::test]
async fn https_endpoints_are_read_with_the_configured_ca_bundle_and_refused_without_it() {
    let ca = Ca::new("metrics-ca");
    let url = https_metrics(&ca, "workload_queue_length 30\n").await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ca.pem");
    std::fs::write(&bundle, &ca.pem).unwrap();
    let so = object("secure", &[("endpoints", &url), ("queueTarget", "10")]);

    let mut s = quick_settings();
    s.sources.egress.ca_file = Some(bundle);
    let running = start(&s).await;
    let mut c = client(&running).await;
    c.get_metric_spec(so.clone()).await.unwrap();
    let v = wait_for_value(&mut c, &so, Duration::from_secs(5), |v| v > 0.0).await;
    assert_eq!(v, 3.0);
    running.stop().await;

    // The same endpoint without the bundle: the certificate is not trusted, and the error says so.
    let s = quick_settings();
    let running = start(&s).await;
    let mut c = client(&running).await;
    c.get_metric_spec(so.clone()).await.unwrap();
    let e = c.get_metrics(metrics_request(&so)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("certificate"), "{}", e.message());
    running.stop().await;

    // A bundle that is not PEM stops the start, naming the setting.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut s = quick_settings();
    s.sources.egress.ca_file = Some(bad);
    let e = keda_gpu_scaler::server::start(&s).await.err().unwrap();
    assert!(e.to_string().contains("egress.ca_file"), "{e}");
}
