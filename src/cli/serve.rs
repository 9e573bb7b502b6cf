//! `phigate serve`: run the proxy until SIGINT or SIGTERM; SIGHUP reloads the policies.

use std::path::PathBuf;

use anyhow::{Context, Result};
use phigate::config::Config;
use phigate::server::Server;

/// Run the proxy.
#[derive(clap::Args)]
pub struct Args {
    /// the configuration file
    #[arg(long, short, default_value = "phigate.toml")]
    config: PathBuf,
}

/// Serves until interrupted, then signs what the audit log holds.
pub fn run(args: Args) -> Result<()> {
    serve(args.config)
}

fn serve(path: PathBuf) -> Result<()> {
    let config = Config::load(&path)?;
    // This thread accepts connections and serves the admin endpoint; sessions run on
    // `listen.threads` threads of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let threads = config.threads();
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        tracing::info!(address = %server.local_addr()?, admin = ?server.admin_addr(), threads, "phigate listening");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloader = server.reloader();
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                if let Err(e) = reloader.reload().await {
                    tracing::error!(error = %e, "policy reload refused; the policies in force stay");
                }
            }
        });
        let auditor = server.auditor();
        tokio::select! {
            r = server.run_threaded(threads) => r.context("starting session threads")?,
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
            _ = term.recv() => tracing::info!("terminated; shutting down"),
        }
        if let Some(a) = auditor {
            // Sign what the log holds, so verifiers need no secret for any of it.
            a.close().context("closing the audit log")?;
        }
        Ok(())
    })
}
