//! Settings: built-in defaults < optional TOML file < environment (`KEDA_GPU_SCALER_*`, `__` for
//! nesting) < command-line flags. Parsed and validated once at start; every problem names the
//! setting and what it accepts.
//!
//! Each subsystem owns its settings struct, its defaults and how each value is read
//! (`crate::setting`): the engine (`EngineSettings`), the sources (`SourceSettings`: scrape
//! timeout, `[prometheus]`, `[kubernetes]`, `[egress]`, `[memory]`) and the server here (listen
//! addresses, logs, `[tls]`). `Settings` embeds them; only the checks between settings are
//! written out here (`Settings::check`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::EngineSettings;
use crate::setting;
use crate::sources::SourceSettings;

pub const ENV_PREFIX: &str = "KEDA_GPU_SCALER";

/// The variable naming the Kubernetes API server's address in every pod; read with the settings
/// so that the egress policy refuses it (`EgressPolicy::api_server`).
pub const API_SERVER_VAR: &str = "KUBERNETES_SERVICE_HOST";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The effective settings of a scaler process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    #[serde(deserialize_with = "listen_addr")]
    pub grpc_addr: SocketAddr,
    #[serde(deserialize_with = "listen_addr")]
    pub http_addr: SocketAddr,
    /// Top-level keys: sample_interval, max_staleness, entry_ttl, max_entries, state_file.
    #[serde(flatten)]
    pub engine: EngineSettings,
    /// The top-level scrape_timeout and the `[prometheus]`, `[kubernetes]`, `[egress]` and
    /// `[memory]` sections.
    #[serde(flatten)]
    pub sources: SourceSettings,
    #[serde(deserialize_with = "log_format")]
    pub log_format: LogFormat,
    #[serde(deserialize_with = "log_level")]
    pub log_level: String,
    pub tls: TlsSettings,
    /// Serve `/debug/scaledobjects` (every tenant's endpoints, queries and notes) on the HTTP
    /// listener. Off by default: that listener is also where Prometheus scrapes.
    #[serde(deserialize_with = "setting::flag")]
    pub debug_page: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            grpc_addr: "0.0.0.0:6000".parse().expect("valid literal"),
            http_addr: "0.0.0.0:8080".parse().expect("valid literal"),
            engine: EngineSettings::default(),
            sources: SourceSettings::default(),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            tls: TlsSettings::default(),
            debug_page: false,
        }
    }
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    setting::parsed(d, "an IP:port such as 0.0.0.0:6000 or 127.0.0.1:0", |t| {
        t.trim().parse().ok()
    })
}

fn log_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
    setting::parsed(d, "text or json", |t| match t.trim() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => None,
    })
}

fn log_level<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    setting::parsed(
        d,
        "a level (error, warn, info, debug, trace) or a filter such as info,keda_gpu_scaler=debug",
        |t| {
            tracing_subscriber::EnvFilter::try_new(t)
                .is_ok()
                .then(|| t.to_string())
        },
    )
}

/// `[tls]`: gRPC over TLS when `cert_file` and `key_file` are set, and client certificates
/// required when `client_ca_file` is set too. Only the paths are checked here; `crate::tls` reads
/// and checks the files themselves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, server certificate first.
    #[serde(
        deserialize_with = "setting::path",
        skip_serializing_if = "Option::is_none"
    )]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the server certificate.
    #[serde(
        deserialize_with = "setting::path",
        skip_serializing_if = "Option::is_none"
    )]
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of them.
    #[serde(
        deserialize_with = "setting::path",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_ca_file: Option<PathBuf>,
    /// How often the files are re-read for rotation.
    #[serde(
        serialize_with = "setting::duration_text",
        deserialize_with = "reload_interval"
    )]
    pub reload_interval: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval: Duration::from_secs(5),
        }
    }
}

fn reload_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    setting::duration(
        d,
        Duration::from_millis(100)..=Duration::from_secs(3600),
        "a duration from 100ms to 1h, such as 5s",
    )
}

/// The `[tls]` files of a server that serves TLS.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
}

impl TlsSettings {
    /// TLS on `files`, re-read every `reload_interval`.
    pub fn on(files: TlsFiles, reload_interval: Duration) -> Self {
        TlsSettings {
            cert_file: Some(files.cert_file),
            key_file: Some(files.key_file),
            client_ca_file: files.client_ca_file,
            reload_interval,
        }
    }

    /// The files when TLS is on, None for plaintext gRPC; refused when the paths do not come in
    /// pairs.
    pub fn files(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.cert_file, &self.key_file, &self.client_ca_file) {
            (None, None, None) => Ok(None),
            (Some(cert_file), Some(key_file), client_ca_file) => Ok(Some(TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
                client_ca_file: client_ca_file.clone(),
            })),
            (Some(_), None, _) => Err(ConfigError::Missing {
                key: "tls.key_file",
                because: "when tls.cert_file is set (the private key of the server certificate)",
            }),
            (None, _, ca) => Err(ConfigError::Missing {
                key: "tls.cert_file",
                because: if ca.is_some() {
                    "when tls.client_ca_file is set (client certificates are only checked over TLS)"
                } else {
                    "when tls.key_file is set"
                },
            }),
        }
    }
}

impl Settings {
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
    /// `KEDA_GPU_SCALER_` prefix are ignored, but for the proxy variables and
    /// `KUBERNETES_SERVICE_HOST`.
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
        let (api_server, env): (Vec<_>, Vec<_>) =
            env.into_iter().partition(|(k, _)| k == API_SERVER_VAR);
        let mut builder = config::Config::builder();
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
        let layers = builder.build()?;
        // serde's flatten hands the embedded structs their values without their keys, so a
        // refusal there could not name its setting: each is read on its own first, keys and all.
        layers.clone().try_deserialize::<EngineSettings>()?;
        layers.clone().try_deserialize::<SourceSettings>()?;
        let mut settings: Settings = layers.try_deserialize()?;
        settings.check()?;

        let egress = &mut settings.sources.egress;
        egress.api_server = api_server.iter().find_map(|(_, h)| h.trim().parse().ok());
        if egress.use_proxy_env {
            egress.proxy = crate::egress::ProxyEnv::from_vars(&proxy_vars).map_err(
                |(key, value)| ConfigError::invalid(
                    key,
                    &value,
                    "an http(s) proxy URL such as http://proxy.example:3128 (egress.use_proxy_env is on)",
                ),
            )?;
        }
        Ok(settings)
    }

    /// The checks between settings; each value on its own was checked as it was read.
    fn check(&self) -> Result<(), ConfigError> {
        let engine = &self.engine;
        if engine.max_staleness < engine.sample_interval {
            return Err(ConfigError::invalid(
                "max_staleness",
                &setting::format_duration(engine.max_staleness),
                "a duration at least as long as sample_interval",
            ));
        }
        let memory = &self.sources.memory;
        if memory.body_budget_bytes < memory.max_body_bytes {
            return Err(ConfigError::invalid(
                "memory.body_budget_bytes",
                &memory.body_budget_bytes.to_string(),
                "at least memory.max_body_bytes",
            ));
        }
        self.tls.files()?;
        Ok(())
    }

    /// The effective settings as TOML, for `check-config`: a file `Settings::load` reads back to
    /// the same settings, except that the secret in a URL's credentials is replaced by
    /// `REDACTED`. A comment first says how tenant fetches leave the pod (directly or through a
    /// proxy).
    pub fn to_toml(&self) -> String {
        // Every field is a string, number, bool or table of them, so serializing cannot fail.
        let toml = toml::to_string(self).expect("settings serialize to TOML");
        format!(
            "# tenant fetches: {}\n{toml}",
            self.sources.egress.proxy_mode()
        )
    }
}

/// This process's `KEDA_GPU_SCALER_*` variables (any case, as the `config` crate matches them),
/// the standard proxy variables (`crate::egress::PROXY_VARS`) and `KUBERNETES_SERVICE_HOST`.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let prefix = format!("{}_", ENV_PREFIX.to_lowercase());
    let mut env = Vec::new();
    for (key, value) in std::env::vars_os() {
        // A name that is not Unicode cannot be one of ours.
        let Ok(key) = key.into_string() else { continue };
        let proxy = crate::egress::PROXY_VARS.contains(&key.as_str());
        let ours = key.to_lowercase().starts_with(&prefix);
        if !ours && !proxy && key != API_SERVER_VAR {
            continue;
        }
        match value.into_string() {
            Ok(value) => env.push((key, value)),
            // Ours must be readable; the others are then as if unset.
            Err(_) if !ours => {}
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
    Load(config::ConfigError),
    #[error("settings file {0}")]
    File(String),
    /// `refusal` is `crate::setting::refusal`'s text: the value and what is accepted.
    #[error("setting '{key}' {refusal}")]
    Invalid { key: String, refusal: String },
    #[error("setting '{key}' is required {because}")]
    Missing {
        key: &'static str,
        because: &'static str,
    },
}

impl ConfigError {
    fn invalid(key: &str, value: &str, accepted: &str) -> Self {
        ConfigError::Invalid {
            key: key.to_string(),
            refusal: setting::refusal(value, accepted),
        }
    }
}

/// A value refused as it was read (`crate::setting`) comes back from the `config` crate as its
/// message under the setting's key; the key goes in front. Anything else (an unknown key, a
/// file that is not TOML) is the crate's own message.
impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        if let config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } = &e
        {
            if let config::ConfigError::Message(m) = error.as_ref() {
                if m.starts_with(setting::REFUSAL_START) {
                    return ConfigError::Invalid {
                        key: key.clone(),
                        refusal: m.clone(),
                    };
                }
            }
        }
        ConfigError::Load(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::EgressPolicy;
    use crate::sources::budget::MemoryLimits;
    use crate::sources::prometheus::PrometheusConfig;
    use crate::sources::scrape::discovery::DiscoverySettings;
    use std::io::Write;

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
        assert_eq!(defaults.engine.sample_interval, Duration::from_secs(2));
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
        let interval = |s: Settings| s.engine.sample_interval.as_millis();

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
        assert_eq!(all.engine.max_staleness, Duration::from_secs(120));
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
        let prometheus = &prom.sources.prometheus;
        assert_eq!(prometheus.address.as_deref(), Some("http://prom:9090"));
        assert_eq!(prometheus.timeout, Duration::from_millis(750));
        let sources = crate::sources::Sources::real(&prom.sources, Duration::from_secs(2)).unwrap();
        assert_eq!(sources.prometheus_address(), Some("http://prom:9090"));
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
            engine: EngineSettings {
                sample_interval: Duration::from_millis(750),
                max_staleness: Duration::from_secs(120),
                entry_ttl: Duration::from_secs(3600),
                max_entries: 42,
                state_file: Some("/var/lib/scaler/state.json".into()),
            },
            sources: SourceSettings {
                scrape_timeout: Duration::from_secs(3),
                prometheus: PrometheusConfig {
                    address: Some("http://prometheus.monitoring:9090".into()),
                    timeout: Duration::from_millis(1500),
                },
                kubernetes: DiscoverySettings {
                    namespaces: Some(["serving".into(), "team-a".into()].into()),
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
            },
            log_format: LogFormat::Json,
            log_level: "info,keda_gpu_scaler=debug".into(),
            tls: TlsSettings::on(
                TlsFiles {
                    cert_file: "/etc/tls/odd \"name\\.crt".into(),
                    key_file: "/etc/tls/tls.key".into(),
                    client_ca_file: Some("/etc/tls/ca.crt".into()),
                },
                Duration::from_millis(250),
            ),
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
        s.tls.client_ca_file = None;
        s.engine.state_file = None;
        let sources = &mut s.sources;
        (sources.kubernetes.kubeconfig, sources.egress.ca_file) = (None, None);
        sources.prometheus.address = None;
        assert_eq!(load_text(&s.to_toml()), s);
    }

    #[test]
    fn check_config_output_hides_passwords_in_urls() {
        let mut s = Settings::default();
        s.sources.prometheus.address = Some("https://scaler:s3cret@prometheus.example:9090".into());
        s.sources.egress.prometheus_addresses = vec!["http://team:hunter2@prom-b:9090".into()];
        let text = s.to_toml();
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        let read = load_text(&text);
        assert_eq!(
            read.sources.prometheus.address.as_deref(),
            Some("https://scaler:REDACTED@prometheus.example:9090")
        );
        assert_eq!(
            read.sources.egress.prometheus_addresses,
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
        assert!(!off.sources.egress.use_proxy_env);
        assert!(
            off.sources.egress.proxy.is_empty(),
            "{:?}",
            off.sources.egress.proxy
        );
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
        assert!(on.sources.egress.use_proxy_env);
        assert_eq!(
            on.sources.egress.proxy.http.as_deref(),
            Some("http://proxy.example:3128")
        );
        assert_eq!(on.sources.egress.proxy.https, None);
        assert_eq!(on.sources.egress.proxy.no_proxy.as_deref(), Some(".svc"));
        let text = on.to_toml();
        assert!(
            text.starts_with("# tenant fetches: through a proxy (http: http://proxy.example:3128")
                && text.contains("checks only each URL's literal host"),
            "{text}"
        );
        // The comment is TOML too: the output still loads (the variables are not in it).
        assert!(load_text(&text).sources.egress.use_proxy_env);

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
        let files = |s: Settings| s.tls.files().unwrap();
        assert_eq!(files(with(&[]).unwrap()), None);
        let on = with(&[("tls.cert_file", "/c"), ("tls.key_file", "/k")]).unwrap();
        assert_eq!(
            files(on),
            Some(TlsFiles {
                cert_file: "/c".into(),
                key_file: "/k".into(),
                client_ca_file: None
            })
        );
        // Blank counts as unset.
        let blank = with(&[("tls.cert_file", " "), ("tls.key_file", "")]).unwrap();
        assert_eq!(files(blank), None);

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

    #[test]
    fn a_bad_value_reads_the_same_from_every_layer() {
        let expected = "setting 'scrape_timeout' = 'soon' is not accepted: expected a duration \
                        from 10ms to 60s, such as 1s";
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "scrape_timeout = \"soon\"").unwrap();
        let layers = [
            load(Some(file.path()), &[], &[]),
            load(None, &[("KEDA_GPU_SCALER_SCRAPE_TIMEOUT", "soon")], &[]),
            load(None, &[], &[("scrape_timeout", "soon")]),
        ];
        for (layer, loaded) in ["file", "env", "flag"].into_iter().zip(layers) {
            assert_eq!(loaded.unwrap_err().to_string(), expected, "{layer}");
        }

        // In a section, and a file's number or boolean where another type belongs.
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[memory]\nmax_body_bytes = 12").unwrap();
        let e = load(Some(file.path()), &[], &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "setting 'memory.max_body_bytes' = '12' is not accepted: expected a number of bytes \
             from 1024 to 4294967296"
        );
        let e = load(
            None,
            &[("KEDA_GPU_SCALER_EGRESS__ALLOW_LOOPBACK", "yes")],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "setting 'egress.allow_loopback' = 'yes' is not accepted: expected true or false"
        );
        let e = load(None, &[], &[("kubernetes.namespaces", "a,B")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("setting 'kubernetes.namespaces' = 'a,B'"),
            "{e}"
        );
        // A file may type values as TOML does; each reads as its text.
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "sample_interval = 5\nmax_entries = 7\ndebug_page = true\n[memory]\nmax_body_bytes = 2048"
        )
        .unwrap();
        let typed = load(Some(file.path()), &[], &[]).unwrap();
        assert_eq!(typed.engine.sample_interval, Duration::from_secs(5));
        assert_eq!(typed.engine.max_entries, 7);
        assert!(typed.debug_page);
        assert_eq!(typed.sources.memory.max_body_bytes, 2048);
    }

    #[test]
    fn the_api_server_address_comes_with_the_environment_layer() {
        let host = [("KUBERNETES_SERVICE_HOST", "10.96.0.1")];
        let loaded = load(None, &host, &[]).unwrap();
        assert_eq!(
            loaded.sources.egress.api_server,
            Some("10.96.0.1".parse().unwrap())
        );
        assert_eq!(
            load(None, &[], &[]).unwrap().sources.egress.api_server,
            None
        );
        // Not a setting: check-config does not print it.
        assert!(!loaded.to_toml().contains("10.96.0.1"));
    }
}
