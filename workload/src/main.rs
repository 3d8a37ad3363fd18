//! `gpu-workload`: serves the compute endpoints until SIGTERM/SIGINT, then drains.

use anyhow::Context;
use clap::Parser;
use gpu_workload::{Config, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_tracing(config.log_json);
    let grace = config.shutdown_delay() + config.shutdown_timeout();
    let server = Server::bind(config)
        .await
        .context("starting gpu-workload")?;
    tracing::info!(addr = %server.local_addr()?, "listening");
    let state = server.state();
    let run = server.run(shutdown_signal());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r.context("serving HTTP")?,
        _ = async { state.drained().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "shutdown timeout reached with requests still in flight; exiting");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
