//! `vespene worker`, `vespene start`, `vespene stop`, `vespene build`: the
//! engine from the command line, for standalone workers and for scripts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use serde_json::Value;

use crate::engine::{Engine, LaunchAnswers, StartRequest, WorkerConfig};
use crate::settings::Settings;
use crate::store::{BuildStatus, Id, Store};

/// `vespene build ...`
#[derive(Debug, Subcommand)]
pub enum BuildCommand {
    /// Print a build's status (and, with --output, its log).
    Show {
        /// The build id.
        id: Id,
        /// Print the log too.
        #[arg(long)]
        output: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

async fn engine(settings: &Settings) -> anyhow::Result<Engine> {
    let registry = super::load_plugins(settings)?;
    let store = Store::open_from_settings(settings, Arc::new(registry.secrets_chain())).await?;
    Ok(Engine::new(store, Arc::new(registry), Arc::new(settings.clone())))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs a standalone worker.
pub fn worker(settings: &Settings, config: WorkerConfig, metrics_listen: Option<&str>) -> anyhow::Result<ExitCode> {
    let metrics_addr = match metrics_listen {
        None => None,
        Some(_) if settings.metrics.token.is_empty() => anyhow::bail!(
            "--metrics-listen needs the setting [metrics] token: a worker has no accounts, so only that token \
             may read its metrics"
        ),
        Some(addr) => Some(
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| anyhow::anyhow!("--metrics-listen '{addr}' is not an address like 127.0.0.1:9101: {e}"))?,
        ),
    };
    runtime()?.block_on(async {
        let engine = engine(settings).await?;
        // Held while working: a key rotation must not run under us.
        let _running = engine.store().claim_running().await?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        if let Some(addr) = metrics_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--metrics-listen: cannot listen on {addr}: {e}"))?;
            println!("worker metrics on http://{}/metrics", listener.local_addr()?);
            let (gauges, token) =
                (crate::service::observe::GaugeSource::new(engine.store().clone()), settings.metrics.token.clone());
            let mut stopped = stop_rx.clone();
            tokio::spawn(crate::web::serve_worker_metrics(listener, gauges, token, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }));
        }
        println!(
            "worker {} serving {}",
            config.name,
            if config.pools.is_empty() { "every pool".to_string() } else { config.pools.join(", ") }
        );
        let summary = engine.run_worker(config, stop_rx).await?;
        println!("worker ran {} build(s)", summary.builds);
        Ok(ExitCode::SUCCESS)
    })
}

/// Starts a project by name or id; with `wait`, follows it to the end and
/// answers success only if the build succeeded.
pub fn start(settings: &Settings, project: &str, answers: Option<&str>, wait: bool) -> anyhow::Result<ExitCode> {
    let answers: LaunchAnswers = match answers {
        Some(json) => match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(map)) => map,
            Ok(_) => anyhow::bail!("--answers must be a JSON object of variable names to answers"),
            Err(e) => anyhow::bail!("--answers is not valid JSON: {e}"),
        },
        None => LaunchAnswers::new(),
    };
    runtime()?.block_on(async {
        let engine = engine(settings).await?;
        let store = engine.store();
        let found = match project.parse::<Id>() {
            Ok(id) => store.get_project(id).await?,
            Err(_) => store.find_project(project).await?,
        };
        let Some(found) = found else { anyhow::bail!("no project '{project}'") };
        let build = engine.start_project(StartRequest { project_id: found.id, answers, ..Default::default() }).await?;
        println!("build {} of {}: {}", build.id, found.name, build.status);
        if !wait || !build.status.is_active() {
            return Ok(if build.status == BuildStatus::Failure { ExitCode::FAILURE } else { ExitCode::SUCCESS });
        }
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = store.get_build(build.id).await?.expect("build exists");
            if !now.status.is_active() {
                println!("build {}: {}", now.id, now.status);
                return Ok(if now.status == BuildStatus::Success { ExitCode::SUCCESS } else { ExitCode::FAILURE });
            }
        }
    })
}

/// Imports an organization (by name or id) now, if due or with `force`;
/// answers success only if the import succeeded (or was not due).
pub fn import(settings: &Settings, organization: &str, force: bool) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let engine = engine(settings).await?;
        let store = engine.store();
        let found = match organization.parse::<Id>() {
            Ok(id) => store.get_organization(id).await?,
            Err(_) => store.find_organization(organization).await?,
        };
        let Some(found) = found else { anyhow::bail!("no organization '{organization}'") };
        let worker = crate::engine::WorkerConfig::named(Vec::new(), 1);
        match engine.import_organization(found.id, force, &worker).await? {
            Some(build) => {
                println!(
                    "import {} of {}: {} (return code {:?})",
                    build.id, found.name, build.status, build.return_code
                );
                Ok(if build.status == BuildStatus::Success { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            None => {
                println!("organization {}: not due, or an import is already running (use --force)", found.name);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Asks a build to stop.
pub fn stop(settings: &Settings, id: Id) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = Store::open_from_settings(settings, super::load_secrets(settings)?).await?;
        if store.request_stop(id).await? {
            println!("build {id}: stop requested");
            Ok(ExitCode::SUCCESS)
        } else {
            let status = store.build_status(id).await?;
            match status {
                Some(s) => anyhow::bail!("build {id} is {s}: only queued or running builds can be stopped"),
                None => anyhow::bail!("no build {id}"),
            }
        }
    })
}

/// Shows a build.
pub fn build(settings: &Settings, cmd: BuildCommand) -> anyhow::Result<ExitCode> {
    let BuildCommand::Show { id, output, json } = cmd;
    runtime()?.block_on(async {
        let store = Store::open_from_settings(settings, super::load_secrets(settings)?).await?;
        let Some(build) = store.get_build(id).await? else { anyhow::bail!("no build {id}") };
        let lines = if output { store.output_since(id, 0, i64::MAX).await? } else { Vec::new() };
        if json {
            println!("{}", serde_json::json!({ "build": build, "output": lines }));
        } else {
            println!("build {}: {} (return code {:?})", build.id, build.status, build.return_code);
            for line in lines {
                println!("[{}] {}", line.stream.as_str(), line.text);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
