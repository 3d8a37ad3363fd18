//! The service's process lifecycle as a library call, so the `gpu-workload` binary and the
//! scaler's `demo` (which runs each replica as its own process) serve and drain the same way.

use std::future::Future;

use crate::{Config, Server, StartError};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("starting gpu-workload: {0}")]
    Start(#[from] StartError),
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds, serves until `shutdown` resolves (or SIGTERM/SIGINT when `shutdown` is
/// [`signal`]), drains in-flight requests, and returns. Gives up waiting for in-flight requests
/// after `shutdown_delay + shutdown_timeout`.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let grace = config.shutdown_delay() + config.shutdown_timeout();
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr()?, "listening");
    let state = server.state();
    let run = server.run(shutdown);
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r?,
        _ = async { state.drained().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "shutdown timeout reached with requests still in flight; exiting");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
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
