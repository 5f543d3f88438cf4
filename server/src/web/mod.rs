//! The HTTP side: the REST API under `/api/v1`, the web UI, webhooks and live
//! output streams, all on warp. Handlers call into the engine; they never load
//! plugins or open files of their own.

pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;

use warp::Filter;

use crate::engine::{Engine, WorkerConfig};
use crate::plugins::Registry;
use crate::settings::Settings;
use crate::store::Store;

/// Shared state of the web tier.
pub struct AppState {
    /// The effective settings.
    pub settings: Settings,
    /// The loaded plugins.
    pub registry: Arc<Registry>,
    /// The database.
    pub store: Store,
    /// The build engine.
    pub engine: Engine,
}

/// The routes, separate from the listener so tests can drive them directly.
pub fn routes(state: Arc<AppState>) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    let health = warp::path!("api" / "v1" / "health")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })));
    let api_state = state.clone();
    let plugins = warp::path!("api" / "v1" / "plugins")
        .and(warp::get())
        .map(move || warp::reply::json(&serde_json::json!({ "results": api_state.registry.summaries() })));
    let plugins_page = warp::path!("ui" / "plugins").and(warp::get()).map(move || {
        let context = serde_json::json!({
            "plugins": state.registry.summaries(),
            "interface_version": vespene_plugin_api::INTERFACE_VERSION,
        });
        match ui::render("plugins.html", context) {
            Ok(html) => warp::reply::with_status(warp::reply::html(html), warp::http::StatusCode::OK),
            Err(e) => warp::reply::with_status(
                warp::reply::html(format!("template error: {e}")),
                warp::http::StatusCode::INTERNAL_SERVER_ERROR,
            ),
        }
    });
    health.or(plugins).or(plugins_page)
}

/// Runs the web server until interrupted.
pub fn serve(settings: Settings, registry: Registry) -> anyhow::Result<()> {
    let addr: SocketAddr = settings
        .server
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid setting 'server.listen' ({}): {e}", settings.server.listen))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let plugin_count = registry.all().len();
        let store = Store::open_from_settings(&settings).await?;
        if let Some(password) = crate::store::ensure_admin(&store).await? {
            // Shown once: the first start of a fresh database.
            println!("Created the administrator account: username 'admin', password '{password}'");
            println!("(change it after logging in; it is not shown again)");
        }
        if store.list_worker_pools().await?.is_empty() {
            // A fresh install gets one pool that runs builds as this user.
            let default = crate::store::WorkerPool {
                name: "default".into(),
                description: "Runs builds as the server's own user (shell isolation)".into(),
                isolation_method: "shell".into(),
                ..Default::default()
            };
            store.create_worker_pool(&default).await?;
            println!("Created the worker pool 'default' (shell isolation)");
        }
        let registry = Arc::new(registry);
        let engine = Engine::new(store.clone(), registry.clone(), Arc::new(settings.clone()));
        let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
        let workers = if settings.workers.embedded {
            let config = WorkerConfig::named(Vec::new(), settings.workers.per_pool as usize);
            let engine = engine.clone();
            Some(tokio::spawn(async move { engine.run_worker(config, workers_stop).await }))
        } else {
            None
        };
        let state = Arc::new(AppState { settings, registry, store, engine });
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(plugins = plugin_count, "loaded plugins");
        println!("Vespene is listening on http://{bound}/");
        warp::serve(routes(state)).incoming(listener).graceful(shutdown_signal()).run().await;
        let _ = stop_workers.send(true);
        if let Some(workers) = workers {
            // Builds in progress finish; no new ones are claimed.
            let _ = workers.await;
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
