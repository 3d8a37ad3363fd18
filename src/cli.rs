//! Command line: `serve`, `check-config`, `explain`, `check`. Each subcommand is a few lines that call into
//! the library; `anyhow` turns library errors into messages here and nowhere else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::engine::{Engine, EntryKey};
use crate::telemetry;

#[derive(Parser, Debug)]
#[command(
    name = "keda-gpu-scaler",
    version,
    about = "KEDA external scaler for GPU inference: one smoothed composite of GPU, queue and latency signals"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the scaler: gRPC for KEDA (default :6000), HTTP /metrics and /debug (default :8080).
    Serve(ServeArgs),
    /// Print the effective settings (defaults < file < environment < flags) after checking them and
    /// the TLS files, or the exact problem.
    CheckConfig(ServeArgs),
    /// Sample a trigger's metadata once and print why it would scale the way it does.
    Explain(ExplainArgs),
    /// Check ScaledObject manifests offline: every trigger pointing at this scaler is parsed by
    /// the server's own metadata parser; exits 1 on any problem.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML settings file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// gRPC listen address (KEDA's scalerAddress points here).
    #[arg(long)]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address for /metrics, /debug/scaledobjects, /healthz, /readyz.
    #[arg(long)]
    pub http_addr: Option<SocketAddr>,
}

impl ServeArgs {
    fn settings(&self) -> Result<Settings> {
        let mut overrides = Vec::new();
        if let Some(a) = self.grpc_addr {
            overrides.push(("grpc_addr", a.to_string()));
        }
        if let Some(a) = self.http_addr {
            overrides.push(("http_addr", a.to_string()));
        }
        Ok(Settings::load(self.config.as_deref(), &overrides)?)
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    /// Trigger metadata as key=value pairs, exactly as in the ScaledObject.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Print the decision as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// TOML settings file (scrape timeout, sample interval, [kubernetes] for `service`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The ScaledObject's namespace: where `service` is looked up.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// YAML files, each holding one or more documents (`-` reads standard input).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A trigger is this scaler's when its scalerAddress contains this text.
    #[arg(long, default_value = "keda-gpu-scaler")]
    pub scaler_address: String,
    /// TOML settings file of the scaler: its prometheus.address is the default that
    /// source=prometheus triggers without prometheusAddress use. Without it (or
    /// --prometheus-address) such triggers are checked as if the scaler had one.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The scaler's default Prometheus address (setting prometheus.address).
    #[arg(long)]
    pub prometheus_address: Option<String>,
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    crate::sources::client::install_provider();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::CheckConfig(args) => {
            let settings = args.settings()?;
            // The files too, so a bad certificate shows here rather than at the next start.
            if let Some(files) = &settings.tls.files()? {
                crate::tls::ReloadingConfig::load(files)?;
            }
            print!("{}", settings.to_toml());
            Ok(())
        }
        Command::Explain(args) => explain(&args),
        Command::Check(args) => check(&args),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(args: &ServeArgs) -> Result<()> {
    let settings = args.settings()?;
    telemetry::init_logging(settings.log_format, &settings.log_level);
    runtime()?.block_on(async {
        let running = crate::server::start(&settings).await?;
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Parses `key=value` pairs; a value may itself contain '='.
pub fn parse_pairs(pairs: &[String]) -> Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("'{pair}' is not KEY=VALUE (for example queueTarget=10)");
        };
        if map.insert(k.trim().to_string(), v.to_string()).is_some() {
            bail!("key '{}' is given twice", k.trim());
        }
    }
    Ok(map)
}

fn check(args: &CheckArgs) -> Result<()> {
    // The server's own settings decide what tenants may use (custom queries, other namespaces):
    // the file given, else the defaults a stock server runs with.
    let settings = Settings::load(args.config.as_deref(), &[])?;
    let configured = settings.sources.prometheus.address.clone();
    let options =
        crate::check::CheckOptions {
            address_contains: args.scaler_address.clone(),
            prometheus_address: args.prometheus_address.clone().or(configured).or_else(|| {
                (args.config.is_none()).then(|| "http://prometheus.assumed:9090".into())
            }),
            egress: settings.sources.egress.clone(),
        };
    let (mut triggers, mut problems, mut notes) = (0, 0, 0);
    for file in &args.files {
        let text = if file.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin()).context("reading standard input")?
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
        };
        let report = crate::check::check_text(&text, &options);
        for p in &report.problems {
            println!("{}: {p}", file.display());
        }
        for n in &report.notes {
            println!("{}: note: {n}", file.display());
        }
        triggers += report.triggers.len();
        problems += report.problems.len();
        notes += report.notes.len();
    }
    println!(
        "checked {triggers} keda-gpu-scaler triggers in {} files: {problems} problems{}",
        args.files.len(),
        if notes > 0 {
            format!(", {notes} notes (not problems)")
        } else {
            String::new()
        }
    );
    if problems > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn explain(args: &ExplainArgs) -> Result<()> {
    let metadata = parse_pairs(&args.metadata)?;
    let settings = Settings::load(args.config.as_deref(), &[])?;
    telemetry::init_logging(settings.log_format, "warn");
    runtime()?.block_on(async {
        let engine = Engine::new(settings.engine.clone(), &settings.sources);
        let entry = engine.entry(EntryKey::new(
            args.namespace.clone(),
            "explain".into(),
            metadata,
        ))?;
        engine.sample(false).await;
        if let crate::spec::SourceSpec::Service(_) = &entry.spec.source {
            // The first round starts the namespace's EndpointSlice watch; read again once it
            // has listed (bounded: 5 s at most). Until then the entry's state says `syncing`.
            for _ in 0..50 {
                let state = entry.state();
                if state.starting.is_some() || !state.syncing {
                    break; // Listed, or failed for a reason waiting will not fix.
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                engine.sample(false).await;
            }
        }
        if entry
            .spec
            .signals
            .iter()
            .any(|s| matches!(s.metrics, crate::spec::MetricSource::Histogram(_)))
        {
            // A quantile or a rate from a histogram needs two snapshots.
            tokio::time::sleep(settings.engine.sample_interval).await;
            engine.sample(false).await;
        }
        let state = entry.state();
        if args.json {
            let doc = telemetry::debug_entries(&engine);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else {
            print!(
                "{}",
                telemetry::explain_text(
                    &entry.spec,
                    state.decision.as_deref(),
                    &state.notes,
                    state.starting,
                    state.terminating
                )
            );
        }
        Ok(())
    })
}
