//! Certificates generated at test time: CAs, server certificates for localhost / 127.0.0.1 and
//! client certificates, written where the scaler's `[tls]` settings point.

use std::path::{Path, PathBuf};

use keda_gpu_scaler::config::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1, as the chart's would be for the
    /// Service's DNS names.
    pub fn server(&self) -> Leaf {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate, as KEDA's `tlsClientCert`.
    pub fn client(&self) -> Leaf {
        self.leaf(&["keda-operator"], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        Leaf {
            cert: params.signed_by(&key, &self.issuer).unwrap().pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The three `[tls]` files in a temporary directory.
pub struct TlsDir {
    _dir: tempfile::TempDir,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

impl TlsDir {
    pub fn new(server: &Leaf, client_ca: Option<&Ca>) -> TlsDir {
        let dir = tempfile::tempdir().unwrap();
        let d = TlsDir {
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
            client_ca_file: dir.path().join("ca.crt"),
            _dir: dir,
        };
        d.write_server(server);
        if let Some(ca) = client_ca {
            write_atomically(&d.client_ca_file, &ca.pem);
        }
        d
    }

    pub fn write_server(&self, server: &Leaf) {
        write_atomically(&self.cert_file, &server.cert);
        write_atomically(&self.key_file, &server.key);
    }

    pub fn write_client_ca(&self, ca: &Ca) {
        write_atomically(&self.client_ca_file, &ca.pem);
    }

    pub fn files(&self, client_auth: bool) -> TlsFiles {
        TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            client_ca_file: client_auth.then(|| self.client_ca_file.clone()),
        }
    }
}

/// Replaces a file by rename, as kubelet swaps a Secret volume's files: a reader never sees a
/// half-written file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Client TLS as KEDA configures it: trust `ca`, check the name `localhost`, and present
/// `identity` when given.
pub fn client_tls(ca: &Ca, identity: Option<&Leaf>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    match identity {
        Some(leaf) => tls.identity(Identity::from_pem(&leaf.cert, &leaf.key)),
        None => tls,
    }
}
