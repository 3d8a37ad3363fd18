//! Settings: built-in defaults < optional TOML file < environment (`KEDA_GPU_SCALER_*`, `__` for
//! nesting) < command-line flags. Parsed and validated once at start; every problem names the
//! setting and what it accepts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::egress::EgressPolicy;
use crate::engine::EngineSettings;

pub const ENV_PREFIX: &str = "KEDA_GPU_SCALER";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The effective settings of a scaler process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Settings {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    #[serde(with = "duration_text")]
    pub sample_interval: Duration,
    #[serde(with = "duration_text")]
    pub scrape_timeout: Duration,
    #[serde(with = "duration_text")]
    pub max_staleness: Duration,
    #[serde(with = "duration_text")]
    pub entry_ttl: Duration,
    pub max_entries: usize,
    pub log_format: LogFormat,
    pub log_level: String,
    pub tls: TlsSettings,
    pub prometheus: PrometheusConfig,
    pub kubernetes: KubernetesConfig,
    /// `[egress]`: where tenants' URLs may point (see `crate::egress`).
    pub egress: EgressPolicy,
    /// `[memory]`: response body limits.
    pub memory: MemoryLimits,
    /// Where each ScaledObject's last decision is kept across restarts; None: nowhere.
    pub state_file: Option<PathBuf>,
    /// Serve `/debug/scaledobjects` (every tenant's endpoints, queries and notes) on the HTTP
    /// listener. Off by default: that listener is also where Prometheus scrapes.
    pub debug_page: bool,
}

/// `[memory]`: the cap on one response body and the budget for all bodies held at once. The
/// chart derives max_entries from these and its memory limit (docs/deploy.md).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryLimits {
    pub max_body_bytes: usize,
    pub body_budget_bytes: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        let engine = EngineSettings::default();
        MemoryLimits {
            max_body_bytes: engine.max_body_bytes,
            body_budget_bytes: engine.body_budget_bytes,
        }
    }
}

/// The `[kubernetes]` section: where `service` triggers discover their pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KubernetesConfig {
    /// Namespaces whose EndpointSlices may be watched; empty: any namespace.
    #[serde(serialize_with = "file_text::comma_list")]
    pub namespaces: Vec<String>,
    /// A kubeconfig file; None: the in-cluster service account (else `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
}

impl KubernetesConfig {
    pub fn discovery(&self) -> crate::signals::discovery::DiscoverySettings {
        crate::signals::discovery::DiscoverySettings {
            namespaces: (!self.namespaces.is_empty())
                .then(|| self.namespaces.iter().cloned().collect()),
            kubeconfig: self.kubeconfig.clone(),
        }
    }
}

/// `[tls]`: gRPC over TLS when `cert_file` and `key_file` are set, and client certificates
/// required when `client_ca_file` is set too. Only the paths are checked here; `crate::tls` reads
/// and checks the files themselves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TlsSettings {
    /// `None`: plaintext gRPC. Flattened: the file spells these keys in `[tls]` itself.
    #[serde(flatten)]
    pub files: Option<TlsFiles>,
    /// How often the files are re-read for rotation.
    #[serde(with = "duration_text")]
    pub reload_interval: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            files: None,
            reload_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TlsFiles {
    /// PEM certificate chain, server certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the server certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of them.
    pub client_ca_file: Option<PathBuf>,
}

/// The `[prometheus]` section: defaults for `source=prometheus` triggers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrometheusConfig {
    /// Used by triggers without `prometheusAddress`; None: such triggers are rejected.
    #[serde(
        serialize_with = "file_text::redacted_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub address: Option<String>,
    /// Timeout of each query (connect included).
    #[serde(with = "duration_text")]
    pub timeout: Duration,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            address: None,
            timeout: EngineSettings::default().prometheus_timeout,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        let engine = EngineSettings::default();
        Settings {
            grpc_addr: "0.0.0.0:6000".parse().expect("valid literal"),
            http_addr: "0.0.0.0:8080".parse().expect("valid literal"),
            sample_interval: engine.sample_interval,
            scrape_timeout: engine.scrape_timeout,
            max_staleness: engine.max_staleness,
            entry_ttl: engine.entry_ttl,
            max_entries: engine.max_entries,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            tls: TlsSettings::default(),
            prometheus: PrometheusConfig::default(),
            kubernetes: KubernetesConfig::default(),
            egress: EgressPolicy::default(),
            memory: MemoryLimits::default(),
            state_file: None,
            debug_page: false,
        }
    }
}

impl Settings {
    pub fn engine(&self) -> EngineSettings {
        EngineSettings {
            sample_interval: self.sample_interval,
            scrape_timeout: self.scrape_timeout,
            max_staleness: self.max_staleness,
            entry_ttl: self.entry_ttl,
            max_entries: self.max_entries,
            prometheus_address: self.prometheus.address.clone(),
            prometheus_timeout: self.prometheus.timeout,
            discovery: self.kubernetes.discovery(),
            egress: self.egress.clone().from_environment(),
            max_body_bytes: self.memory.max_body_bytes,
            body_budget_bytes: self.memory.body_budget_bytes,
            state_file: self.state_file.clone(),
        }
    }

    /// Loads settings from the layers, the environment layer from this process's variables.
    /// `overrides` are flag values as (setting, value).
    pub fn load(
        file: Option<&Path>,
        overrides: &[(&str, String)],
    ) -> Result<Settings, ConfigError> {
        Settings::load_from(file, process_env()?, overrides)
    }

    /// As `load`, with the environment given as (variable, value) pairs, so that callers (tests
    /// above all) never touch the process-wide environment. Variables without the
    /// `KEDA_GPU_SCALER_` prefix are ignored.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Settings, ConfigError> {
        // The standard proxy variables are not settings; `egress.use_proxy_env` decides whether
        // they are read.
        let (proxy_vars, env): (Vec<_>, Vec<_>) = env
            .into_iter()
            .partition(|(k, _)| crate::egress::PROXY_VARS.contains(&k.as_str()));
        let defaults = Settings::default();
        let mut builder = config::Config::builder();
        for (key, value) in defaults.as_strings() {
            builder = builder.set_default(key, value)?;
        }
        builder = builder.set_default(
            "tls.reload_interval",
            format_duration(defaults.tls.reload_interval),
        )?;
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File(format!(
                    "{}: no such file",
                    path.display()
                )));
            }
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .source(Some(env.into_iter().collect())),
        );
        for (key, value) in overrides {
            builder = builder.set_override(*key, value.clone())?;
        }
        let raw: RawSettings = builder.build()?.try_deserialize()?;
        let mut settings = raw.validate()?;
        if settings.egress.use_proxy_env {
            settings.egress.proxy = crate::egress::ProxyEnv::from_vars(&proxy_vars).map_err(
                |(key, value)| ConfigError::Invalid {
                    key,
                    value,
                    accepted: "an http(s) proxy URL such as http://proxy.example:3128 (egress.use_proxy_env is on)",
                },
            )?;
        }
        Ok(settings)
    }

    fn as_strings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("grpc_addr", self.grpc_addr.to_string()),
            ("http_addr", self.http_addr.to_string()),
            ("sample_interval", format_duration(self.sample_interval)),
            ("scrape_timeout", format_duration(self.scrape_timeout)),
            ("max_staleness", format_duration(self.max_staleness)),
            ("entry_ttl", format_duration(self.entry_ttl)),
            ("max_entries", self.max_entries.to_string()),
            ("log_format", "text".into()),
            ("log_level", self.log_level.clone()),
            ("debug_page", self.debug_page.to_string()),
            (
                "state_file",
                self.state_file
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            (
                "prometheus.address",
                self.prometheus.address.clone().unwrap_or_default(),
            ),
            (
                "prometheus.timeout",
                format_duration(self.prometheus.timeout),
            ),
            (
                "kubernetes.namespaces",
                self.kubernetes.namespaces.join(","),
            ),
            (
                "kubernetes.kubeconfig",
                self.kubernetes
                    .kubeconfig
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        ]
    }

    /// The effective settings as TOML, for `check-config`: a file `Settings::load` reads back to
    /// the same settings, except that a password inside a URL is replaced by `REDACTED`. A
    /// comment first says how tenant fetches leave the pod (directly or through a proxy).
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, bool or table of them, so serializing cannot fail.
        let toml = toml::to_string(self).expect("settings serialize to TOML");
        format!("# tenant fetches: {}\n{toml}", self.egress.proxy_mode())
    }
}

/// Serializers for the shapes the settings file uses where they differ from the typed settings.
pub(crate) mod file_text {
    use serde::Serializer;

    /// A list as one comma-separated string: how the file and the environment spell lists.
    pub fn comma_list<S: Serializer>(items: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&items.join(","))
    }

    /// As `comma_list`, each URL without its password.
    pub fn redacted_url_list<S: Serializer>(urls: &[String], s: S) -> Result<S::Ok, S::Error> {
        let urls: Vec<String> = urls.iter().map(|u| redact_password(u)).collect();
        s.serialize_str(&urls.join(","))
    }

    /// A URL without its password (used as basic auth by the HTTP client, so a secret).
    pub fn redacted_url<S: Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
        match url {
            Some(u) => s.serialize_str(&redact_password(u)),
            None => s.serialize_none(),
        }
    }

    /// `text` with the password of a URL in it replaced by `REDACTED`.
    pub(crate) fn redact_password(text: &str) -> String {
        match url::Url::parse(text) {
            Ok(mut u) if u.password().is_some() => {
                // Only fails for URLs that cannot have credentials, which then hold no password.
                let _ = u.set_password(Some("REDACTED"));
                u.as_str().trim_end_matches('/').to_string()
            }
            _ => text.to_string(),
        }
    }
}

/// This process's `KEDA_GPU_SCALER_*` variables (any case, as the `config` crate matches them)
/// and the standard proxy variables (`crate::egress::PROXY_VARS`).
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let prefix = format!("{}_", ENV_PREFIX.to_lowercase());
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        // A name that is not Unicode cannot be one of ours.
        let Ok(key) = key.into_string() else { continue };
        let proxy = crate::egress::PROXY_VARS.contains(&key.as_str());
        if !key.to_lowercase().starts_with(&prefix) && !proxy {
            continue;
        }
        match value.into_string() {
            Ok(value) => env.push((key, value)),
            // A proxy variable is only read when egress.use_proxy_env is on; then as unset.
            Err(_) if proxy => {}
            Err(_) => return Err(ConfigError::NotUnicode(key)),
        }
    }
    Ok(env)
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not valid Unicode")]
    NotUnicode(String),
    #[error("settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("settings file {0}")]
    File(String),
    #[error("setting '{key}' = '{value}' is not accepted: expected {accepted}")]
    Invalid {
        key: &'static str,
        value: String,
        accepted: &'static str,
    },
    #[error("setting '{key}' is required {because}")]
    Missing {
        key: &'static str,
        because: &'static str,
    },
}

/// Every setting as text, exactly as the layers give it; validated into `Settings`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    grpc_addr: String,
    http_addr: String,
    sample_interval: String,
    scrape_timeout: String,
    max_staleness: String,
    entry_ttl: String,
    max_entries: String,
    log_format: String,
    log_level: String,
    state_file: String,
    debug_page: String,
    #[serde(default)]
    tls: RawTls,
    prometheus: RawPrometheus,
    kubernetes: RawKubernetes,
    #[serde(default)]
    egress: RawEgress,
    #[serde(default)]
    memory: RawMemory,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    allow_loopback: Option<String>,
    allow_link_local: Option<String>,
    allow_api_server: Option<String>,
    allow_cross_namespace: Option<String>,
    allow_custom_queries: Option<String>,
    /// Comma-separated.
    prometheus_addresses: Option<String>,
    ca_file: Option<String>,
    use_proxy_env: Option<String>,
}

impl RawEgress {
    fn validate(self) -> Result<EgressPolicy, ConfigError> {
        let flag = |key: &'static str, v: Option<String>| match v.as_deref().map(str::trim) {
            None | Some("") | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ConfigError::Invalid {
                key,
                value: v.unwrap_or_default(),
                accepted: "true or false",
            }),
        };
        let mut prometheus_addresses = Vec::new();
        for a in self
            .prometheus_addresses
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match reqwest::Url::parse(a) {
                _ if a == "*" => prometheus_addresses.push(a.to_string()),
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    prometheus_addresses.push(u.to_string().trim_end_matches('/').to_string())
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "egress.prometheus_addresses",
                        value: a.to_string(),
                        accepted: "comma-separated http(s) URLs of Prometheus servers tenants may name, or * for any",
                    })
                }
            }
        }
        Ok(EgressPolicy {
            allow_loopback: flag("egress.allow_loopback", self.allow_loopback)?,
            allow_link_local: flag("egress.allow_link_local", self.allow_link_local)?,
            allow_api_server: flag("egress.allow_api_server", self.allow_api_server)?,
            allow_cross_namespace: flag(
                "egress.allow_cross_namespace",
                self.allow_cross_namespace,
            )?,
            allow_custom_queries: flag("egress.allow_custom_queries", self.allow_custom_queries)?,
            api_server: None,
            prometheus_addresses,
            ca_file: self
                .ca_file
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            use_proxy_env: flag("egress.use_proxy_env", self.use_proxy_env)?,
            // Read by `Settings::load_from` when `use_proxy_env` is on.
            proxy: Default::default(),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    max_body_bytes: Option<String>,
    body_budget_bytes: Option<String>,
}

impl RawMemory {
    fn validate(self) -> Result<MemoryLimits, ConfigError> {
        let d = MemoryLimits::default();
        let bytes = |key: &'static str, v: Option<String>, default: usize| match v {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if (1024..=(1usize << 32)).contains(&n) => Ok(n),
                _ => Err(ConfigError::Invalid {
                    key,
                    value: v,
                    accepted: "a number of bytes from 1024 to 4294967296",
                }),
            },
        };
        let max_body_bytes = bytes(
            "memory.max_body_bytes",
            self.max_body_bytes,
            d.max_body_bytes,
        )?;
        let body_budget_bytes = bytes(
            "memory.body_budget_bytes",
            self.body_budget_bytes,
            d.body_budget_bytes,
        )?;
        if body_budget_bytes < max_body_bytes {
            return Err(ConfigError::Invalid {
                key: "memory.body_budget_bytes",
                value: body_budget_bytes.to_string(),
                accepted: "at least memory.max_body_bytes",
            });
        }
        Ok(MemoryLimits {
            max_body_bytes,
            body_budget_bytes,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    namespaces: String,
    kubeconfig: String,
}

impl RawKubernetes {
    fn validate(self) -> Result<KubernetesConfig, ConfigError> {
        let mut namespaces = Vec::new();
        for ns in self
            .namespaces
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let ok = ns.len() <= 63
                && ns
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && ns.starts_with(|c: char| c.is_ascii_alphanumeric())
                && ns.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return Err(ConfigError::Invalid {
                    key: "kubernetes.namespaces",
                    value: self.namespaces,
                    accepted: "comma-separated namespace names (a-z, 0-9, '-'), or empty for any namespace",
                });
            }
            namespaces.push(ns.to_string());
        }
        namespaces.sort();
        namespaces.dedup();
        let kubeconfig = Some(self.kubeconfig.trim())
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        Ok(KubernetesConfig {
            namespaces,
            kubeconfig,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_ca_file: Option<String>,
    reload_interval: Option<String>,
}

impl RawTls {
    fn validate(self) -> Result<TlsSettings, ConfigError> {
        // A blank value counts as unset, so a chart can template an empty variable.
        let path = |v: Option<String>| {
            v.map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        };
        let (cert, key, ca) = (
            path(self.cert_file),
            path(self.key_file),
            path(self.client_ca_file),
        );
        let files = match (cert, key, ca) {
            (None, None, None) => None,
            (Some(cert_file), Some(key_file), client_ca_file) => Some(TlsFiles {
                cert_file,
                key_file,
                client_ca_file,
            }),
            (Some(_), None, _) => {
                return Err(ConfigError::Missing {
                    key: "tls.key_file",
                    because:
                        "when tls.cert_file is set (the private key of the server certificate)",
                })
            }
            (None, _, ca) => {
                return Err(ConfigError::Missing {
                    key: "tls.cert_file",
                    because: if ca.is_some() {
                        "when tls.client_ca_file is set (client certificates are only checked over TLS)"
                    } else {
                        "when tls.key_file is set"
                    },
                })
            }
        };
        let default = TlsSettings::default().reload_interval;
        let reload_interval = match self.reload_interval {
            None => default,
            Some(v) => match parse_duration(&v) {
                Some(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => d,
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "tls.reload_interval",
                        value: v,
                        accepted: "a duration from 100ms to 1h, such as 5s",
                    })
                }
            },
        };
        Ok(TlsSettings {
            files,
            reload_interval,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    address: String,
    timeout: String,
}

impl RawSettings {
    fn validate(self) -> Result<Settings, ConfigError> {
        let addr = |key: &'static str, v: &str| {
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| ConfigError::Invalid {
                    key,
                    value: v.into(),
                    accepted: "an IP:port such as 0.0.0.0:6000 or 127.0.0.1:0",
                })
        };
        let dur =
            |key: &'static str, v: &str, min: Duration, max: Duration, accepted: &'static str| {
                match parse_duration(v) {
                    Some(d) if d >= min && d <= max => Ok(d),
                    _ => Err(ConfigError::Invalid {
                        key,
                        value: v.into(),
                        accepted,
                    }),
                }
            };
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let sample_interval = dur(
            "sample_interval",
            &self.sample_interval,
            ms(50),
            s(300),
            "a duration from 50ms to 300s, such as 2s or 500ms",
        )?;
        let scrape_timeout = dur(
            "scrape_timeout",
            &self.scrape_timeout,
            ms(10),
            s(60),
            "a duration from 10ms to 60s, such as 1s",
        )?;
        let max_staleness = dur(
            "max_staleness",
            &self.max_staleness,
            ms(100),
            s(86_400),
            "a duration from 100ms to 24h that is at least sample_interval, such as 60s",
        )?;
        if max_staleness < sample_interval {
            return Err(ConfigError::Invalid {
                key: "max_staleness",
                value: self.max_staleness,
                accepted: "a duration at least as long as sample_interval",
            });
        }
        let entry_ttl = dur(
            "entry_ttl",
            &self.entry_ttl,
            s(1),
            s(7 * 86_400),
            "a duration from 1s to 7d, such as 10m",
        )?;
        let max_entries = match self.max_entries.trim().parse::<usize>() {
            Ok(n) if (1..=10_000_000).contains(&n) => n,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "max_entries",
                    value: self.max_entries,
                    accepted: "a whole number from 1 to 10000000",
                })
            }
        };
        let log_format = match self.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    value: self.log_format,
                    accepted: "text or json",
                })
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log_level",
                value: self.log_level,
                accepted: "a level (error, warn, info, debug, trace) or a filter such as info,keda_gpu_scaler=debug",
            });
        }
        let tls = self.tls.validate()?;
        let egress = self.egress.validate()?;
        let memory = self.memory.validate()?;
        let address = self.prometheus.address.trim();
        let address = if address.is_empty() {
            None
        } else {
            match reqwest::Url::parse(address) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(address.trim_end_matches('/').to_string())
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "prometheus.address",
                        value: self.prometheus.address,
                        accepted: "an http(s) URL such as http://prometheus-operated.monitoring.svc:9090, or empty for none",
                    })
                }
            }
        };
        let prometheus = PrometheusConfig {
            address,
            timeout: dur(
                "prometheus.timeout",
                &self.prometheus.timeout,
                ms(10),
                s(60),
                "a duration from 10ms to 60s, such as 2s",
            )?,
        };
        Ok(Settings {
            prometheus,
            kubernetes: self.kubernetes.validate()?,
            grpc_addr: addr("grpc_addr", &self.grpc_addr)?,
            http_addr: addr("http_addr", &self.http_addr)?,
            sample_interval,
            scrape_timeout,
            max_staleness,
            entry_ttl,
            max_entries,
            log_format,
            log_level: self.log_level,
            tls,
            egress,
            memory,
            debug_page: match self.debug_page.trim() {
                "true" => true,
                "false" | "" => false,
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "debug_page",
                        value: self.debug_page,
                        accepted: "true or false",
                    })
                }
            },
            state_file: Some(self.state_file.trim())
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `10m`, `1h`, `7d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.trim().parse().ok()?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return None,
    };
    let secs = n * scale;
    (0.0..1e9)
        .contains(&secs)
        .then(|| Duration::from_secs_f64(secs))
}

pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration(" 3 "), Some(Duration::from_secs(3)));
        for bad in ["", "s", "-1s", "1w", "fast", "NaNs", "1e99d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    /// Loads with the given environment (never the process's, which other tests share) and flags.
    fn load(
        file: Option<&Path>,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let flags: Vec<(&str, String)> = flags.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Settings::load_from(file, env, &flags)
    }

    #[test]
    fn defaults_load_as_the_default_settings() {
        let defaults = load(None, &[], &[]).unwrap();
        assert_eq!(defaults, Settings::default());
        assert_eq!(defaults.grpc_addr.port(), 6000);
        assert_eq!(defaults.http_addr.port(), 8080);
        assert_eq!(defaults.sample_interval, Duration::from_secs(2));
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults_for_the_same_key() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "sample_interval = \"5s\"\nmax_staleness = \"2m\"\nlog_format = \"json\""
        )
        .unwrap();
        let file = Some(file.path());
        let env = [("KEDA_GPU_SCALER_SAMPLE_INTERVAL", "750ms")];
        let flag = [("sample_interval", "300ms")];
        let interval = |s: Settings| s.sample_interval.as_millis();

        assert_eq!(interval(load(None, &[], &[]).unwrap()), 2000, "the default");
        assert_eq!(
            interval(load(file, &[], &[]).unwrap()),
            5000,
            "file beats default"
        );
        assert_eq!(
            interval(load(None, &env, &[]).unwrap()),
            750,
            "env beats default"
        );
        assert_eq!(
            interval(load(file, &env, &[]).unwrap()),
            750,
            "env beats file"
        );
        assert_eq!(
            interval(load(None, &[], &flag).unwrap()),
            300,
            "flag beats default"
        );
        assert_eq!(
            interval(load(file, &[], &flag).unwrap()),
            300,
            "flag beats file"
        );
        assert_eq!(
            interval(load(file, &env, &flag).unwrap()),
            300,
            "flags beat everything"
        );

        // Keys one layer sets keep their value when another layer sets a different key.
        let all = load(file, &env, &flag).unwrap();
        assert_eq!(all.max_staleness, Duration::from_secs(120));
        assert_eq!(all.log_format, LogFormat::Json);
        // Only the scaler's prefix is read; the key is matched whatever its case.
        let other = [("OTHER_SAMPLE_INTERVAL", "9s"), ("SAMPLE_INTERVAL", "9s")];
        assert_eq!(interval(load(None, &other, &[]).unwrap()), 2000);
        let lower = [("keda_gpu_scaler_sample_interval", "9s")];
        assert_eq!(interval(load(None, &lower, &[]).unwrap()), 9000);
    }

    #[test]
    fn nested_settings_come_from_double_underscore_variables() {
        let prom = load(
            None,
            &[
                ("KEDA_GPU_SCALER_PROMETHEUS__ADDRESS", "http://prom:9090/"),
                ("KEDA_GPU_SCALER_PROMETHEUS__TIMEOUT", "750ms"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(prom.prometheus.address.as_deref(), Some("http://prom:9090"));
        assert_eq!(prom.prometheus.timeout, Duration::from_millis(750));
        assert_eq!(
            prom.engine().prometheus_address.as_deref(),
            Some("http://prom:9090")
        );
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |flags: &[(&str, &str)]| load(None, &[], flags).unwrap_err().to_string();
        assert!(err(&[("grpc_addr", "localhost")]).contains("'grpc_addr'"));
        assert!(err(&[("sample_interval", "0s")]).contains("'sample_interval'"));
        assert!(
            err(&[("max_staleness", "1s"), ("sample_interval", "5s")]).contains("at least as long")
        );
        assert!(err(&[("log_format", "xml")]).contains("text or json"));
        assert!(err(&[("log_level", "[")]).contains("'log_level'"));
        assert!(err(&[("max_entries", "0")]).contains("'max_entries'"));
        assert!(err(&[("prometheus.address", "prom:9090")]).contains("'prometheus.address'"));
        assert!(err(&[("prometheus.timeout", "0s")]).contains("'prometheus.timeout'"));
        let e = load(None, &[("KEDA_GPU_SCALER_SCRAPE_TIMEOUT", "soon")], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'scrape_timeout' = 'soon'"), "{e}");

        let mut unknown = tempfile::NamedTempFile::new().unwrap();
        writeln!(unknown, "sample_intervall = \"5s\"").unwrap();
        let e = load(Some(unknown.path()), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample_intervall"), "{e}");
        let e = load(Some(Path::new("/nonexistent/x.toml")), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }

    fn load_text(text: &str) -> Settings {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, "{text}").unwrap();
        load(Some(file.path()), &[], &[]).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn check_config_output_round_trips() {
        let mut s = Settings::default();
        assert_eq!(load_text(&s.to_toml()), s);

        // Every field away from its default, with text that needs escaping in TOML.
        s = Settings {
            grpc_addr: "127.0.0.1:7000".parse().unwrap(),
            http_addr: "[::1]:0".parse().unwrap(),
            sample_interval: Duration::from_millis(750),
            scrape_timeout: Duration::from_secs(3),
            max_staleness: Duration::from_secs(120),
            entry_ttl: Duration::from_secs(3600),
            max_entries: 42,
            log_format: LogFormat::Json,
            log_level: "info,keda_gpu_scaler=debug".into(),
            tls: TlsSettings {
                files: Some(TlsFiles {
                    cert_file: "/etc/tls/odd \"name\\.crt".into(),
                    key_file: "/etc/tls/tls.key".into(),
                    client_ca_file: Some("/etc/tls/ca.crt".into()),
                }),
                reload_interval: Duration::from_millis(250),
            },
            prometheus: PrometheusConfig {
                address: Some("http://prometheus.monitoring:9090".into()),
                timeout: Duration::from_millis(1500),
            },
            kubernetes: KubernetesConfig {
                namespaces: vec!["serving".into(), "team-a".into()],
                kubeconfig: Some("/root/.kube/config".into()),
            },
            egress: EgressPolicy {
                allow_loopback: true,
                allow_link_local: true,
                allow_api_server: true,
                allow_cross_namespace: true,
                allow_custom_queries: true,
                api_server: None,
                prometheus_addresses: vec!["http://a:9090".into(), "https://b".into()],
                ca_file: Some("/etc/ca.pem".into()),
                use_proxy_env: true,
                proxy: Default::default(),
            },
            memory: MemoryLimits {
                max_body_bytes: 4096,
                body_budget_bytes: 1 << 20,
            },
            state_file: Some("/var/lib/scaler/state.json".into()),
            debug_page: true,
        };
        let text = s.to_toml();
        assert!(
            text.contains("[tls]\ncert_file = ")
                && text.contains("namespaces = \"serving,team-a\""),
            "{text}"
        );
        assert_eq!(load_text(&text), s);
        // Without client certificates, and the other optional paths unset.
        s.tls.files.as_mut().unwrap().client_ca_file = None;
        (s.state_file, s.kubernetes.kubeconfig, s.egress.ca_file) = (None, None, None);
        s.prometheus.address = None;
        assert_eq!(load_text(&s.to_toml()), s);
    }

    #[test]
    fn check_config_output_hides_passwords_in_urls() {
        let mut s = Settings::default();
        s.prometheus.address = Some("https://scaler:s3cret@prometheus.example:9090".into());
        s.egress.prometheus_addresses = vec!["http://team:hunter2@prom-b:9090".into()];
        let text = s.to_toml();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        let read = load_text(&text);
        assert_eq!(
            read.prometheus.address.as_deref(),
            Some("https://scaler:REDACTED@prometheus.example:9090")
        );
        assert_eq!(
            read.egress.prometheus_addresses,
            ["http://team:REDACTED@prom-b:9090"]
        );
    }

    #[test]
    fn proxy_variables_are_read_only_when_the_operator_opts_in() {
        let proxy = [
            ("HTTP_PROXY", "http://proxy.example:3128"),
            ("NO_PROXY", ".svc"),
        ];
        let off = load(None, &proxy, &[]).unwrap();
        assert!(!off.egress.use_proxy_env);
        assert!(off.egress.proxy.is_empty(), "{:?}", off.egress.proxy);
        let text = off.to_toml();
        assert!(
            text.starts_with(
                "# tenant fetches: direct: HTTP_PROXY, HTTPS_PROXY and ALL_PROXY are ignored"
            ),
            "{text}"
        );
        assert!(text.contains("use_proxy_env = false"), "{text}");

        let opt_in = [("KEDA_GPU_SCALER_EGRESS__USE_PROXY_ENV", "true")];
        let on = load(None, &[opt_in[0], proxy[0], proxy[1]], &[]).unwrap();
        assert!(on.egress.use_proxy_env);
        assert_eq!(
            on.egress.proxy.http.as_deref(),
            Some("http://proxy.example:3128")
        );
        assert_eq!(on.egress.proxy.https, None);
        assert_eq!(on.egress.proxy.no_proxy.as_deref(), Some(".svc"));
        let text = on.to_toml();
        assert!(
            text.starts_with("# tenant fetches: through a proxy (http: http://proxy.example:3128")
                && text.contains("checks only each URL's literal host"),
            "{text}"
        );
        // The comment is TOML too: the output still loads (the variables are not in it).
        assert!(load_text(&text).egress.use_proxy_env);

        let e = load(
            None,
            &[opt_in[0], ("ALL_PROXY", "socks5://proxy:1080")],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'ALL_PROXY'") && e.contains("http(s) proxy URL"),
            "{e}"
        );
        let e = load(
            None,
            &[("KEDA_GPU_SCALER_EGRESS__USE_PROXY_ENV", "yes")],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("'egress.use_proxy_env'"), "{e}");
    }

    #[test]
    fn tls_paths_come_in_pairs_and_errors_name_the_setting() {
        let with = |flags: &[(&str, &str)]| load(None, &[], flags);
        assert_eq!(with(&[]).unwrap().tls.files, None);
        let on = with(&[("tls.cert_file", "/c"), ("tls.key_file", "/k")]).unwrap();
        assert_eq!(
            on.tls.files,
            Some(TlsFiles {
                cert_file: "/c".into(),
                key_file: "/k".into(),
                client_ca_file: None
            })
        );
        // Blank counts as unset.
        let blank = with(&[("tls.cert_file", " "), ("tls.key_file", "")]).unwrap();
        assert_eq!(blank.tls.files, None);

        let err = |pairs: &[(&str, &str)]| with(pairs).unwrap_err().to_string();
        let e = err(&[("tls.cert_file", "/c")]);
        assert!(e.contains("'tls.key_file' is required"), "{e}");
        let e = err(&[("tls.key_file", "/k")]);
        assert!(e.contains("'tls.cert_file' is required"), "{e}");
        let e = err(&[("tls.client_ca_file", "/ca")]);
        assert!(
            e.contains("'tls.cert_file' is required when tls.client_ca_file is set"),
            "{e}"
        );
        let e = err(&[("tls.reload_interval", "10ms")]);
        assert!(e.contains("'tls.reload_interval' = '10ms'"), "{e}");

        let mut typo = tempfile::NamedTempFile::new().unwrap();
        writeln!(typo, "[tls]\ncert_flie = \"/c\"").unwrap();
        let e = load(Some(typo.path()), &[], &[]).unwrap_err().to_string();
        assert!(e.contains("cert_flie"), "{e}");
    }
}
