//! The HTTP side: the REST API under `/api/v1`, the web UI, webhooks and live
//! output streams, all on warp. Handlers call into the engine; they never load
//! plugins or open files of their own.

pub mod api;
pub mod auth;
pub mod error;
mod live;
pub mod routes;
pub mod ui;
mod webhooks;

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
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let ui = ui::routes(state.clone());
    let api = warp::method()
        .and(warp::path::full())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(
            warp::header::optional::<u64>("content-length")
                .and_then(|length: Option<u64>| async move {
                    // GETs come without a length; a declared body too large is refused before it is read.
                    match length {
                        Some(n) if n > api::MAX_BODY => Err(warp::reject::custom(BodyTooLarge)),
                        _ => Ok(()),
                    }
                })
                .untuple_one(),
        )
        .and(warp::body::bytes())
        .and_then(move |method, path: warp::path::FullPath, query, headers, body| {
            let state = state.clone();
            async move {
                let path = path.as_str().to_string();
                if !(path.starts_with("/api/") || path.starts_with("/webhooks")) {
                    return Err(warp::reject::not_found());
                }
                let request = api::ApiRequest { method, path, query, headers, body };
                Ok::<_, warp::Rejection>(api::handle(state, request).await)
            }
        });
    ui.or(api).recover(recover)
}

/// A declared request body above [`api::MAX_BODY`].
#[derive(Debug)]
struct BodyTooLarge;

impl warp::reject::Reject for BodyTooLarge {}

/// Turns warp's own rejections (body too large, bad query string) into JSON errors.
async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, std::convert::Infallible> {
    use warp::http::StatusCode;
    let error = if rejection.is_not_found() {
        error::ApiError::not_found("page")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() || rejection.find::<BodyTooLarge>().is_some()
    {
        error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} bytes", api::MAX_BODY),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        error::ApiError::bad(format!("invalid query string: {e}"))
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        error::ApiError::new(StatusCode::LENGTH_REQUIRED, "send a Content-Length header")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error::ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else {
        error::ApiError::new(StatusCode::BAD_REQUEST, format!("bad request: {rejection:?}"))
    };
    Ok(error.into_response())
}

/// Runs the web server until interrupted.
pub fn serve(settings: Settings, registry: Registry) -> anyhow::Result<()> {
    if let Some(refusal) = authorization_refusal(&settings, &registry) {
        anyhow::bail!(refusal);
    }
    if settings.authorization.allow_everything && !has_authorization(&registry) {
        println!(
            "warning: no authorization plugin is configured and 'authorization.allow_everything' is true: \
             every request is allowed to everyone, anonymous ones included"
        );
    }
    let addr: SocketAddr = settings
        .server
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid setting 'server.listen' ({}): {e}", settings.server.listen))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let plugin_count = registry.all().len();
        let store = Store::open_from_settings(&settings, Arc::new(registry.secrets_chain())).await?;
        // Held while serving: a key rotation must not run under us.
        let _running = store.claim_running().await?;
        // The port first: a start that cannot listen must not spend the
        // one-time administrator password on a server nobody can reach.
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        if let Some(password) = crate::store::ensure_admin(&store).await? {
            // Shown once: the first start of a fresh database.
            println!("Created the administrator account: username 'admin', password '{password}'");
            println!("(change it after logging in; it is not shown again)");
        }
        if store.list_worker_pools().await?.is_empty() {
            // A fresh install gets one pool whose builds cannot see the server.
            let default = crate::store::WorkerPool {
                name: "default".into(),
                description: "Runs each build in a sandbox of its own (sandbox isolation)".into(),
                isolation_method: "sandbox".into(),
                // Every user's first project goes here.
                shared: true,
                ..Default::default()
            };
            store.create_worker_pool(&default).await?;
            println!("Created the worker pool 'default' (sandbox isolation)");
        }
        for warning in unisolated_pool_warnings(&store, &registry).await? {
            println!("warning: {warning}");
        }
        if registry.secrets_chain().names().is_empty() {
            println!(
                "warning: no secrets plugin is configured ([plugins.secrets]): passwords, SSH keys and secret \
                 variables can be neither stored nor read"
            );
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

fn has_authorization(registry: &Registry) -> bool {
    registry.all().iter().any(|p| p.section == crate::settings::PluginSection::Authorization)
}

/// Why the server must not start without an authorization plugin: with none,
/// every request would be allowed to everyone. `None` when one is configured,
/// or when `[authorization] allow_everything = true` says so explicitly.
pub fn authorization_refusal(settings: &Settings, registry: &Registry) -> Option<String> {
    if has_authorization(registry) || settings.authorization.allow_everything {
        return None;
    }
    Some(
        "no authorization plugin is configured (every entry of [plugins.authorization] is missing or disabled), \
         so every request would be allowed to everyone, anonymous ones included: refusing to start. Enable one \
         (e.g. [plugins.authorization.ownership] library = \"ownership\"), or set \
         [authorization] allow_everything = true to run without any"
            .to_string(),
    )
}

/// One line per pool whose builds run unisolated, as the server's own user
/// (an isolation entry of the `shell` library), that ordinary users may use:
/// a shared pool, or one an ordinary user owns. Whoever may start a build
/// there can read the server's key and database.
async fn unisolated_pool_warnings(store: &Store, registry: &Registry) -> anyhow::Result<Vec<String>> {
    let shell_entries: Vec<String> = registry
        .summaries()
        .into_iter()
        .filter(|p| p.section == "isolation" && p.plugin == "shell")
        .map(|p| p.name)
        .collect();
    let superusers: Vec<crate::store::Id> =
        store.list_users().await?.into_iter().filter(|u| u.is_superuser).map(|u| u.id).collect();
    Ok(store
        .list_worker_pools()
        .await?
        .into_iter()
        .filter(|pool| shell_entries.contains(&pool.isolation_method))
        .filter(|pool| pool.shared || pool.created_by.is_some_and(|owner| !superusers.contains(&owner)))
        .map(|pool| {
            format!(
                "worker pool '{}' runs builds with '{}' isolation, as the server's own user, and ordinary users may \
                 use it: whoever starts a build there can read the server's key and database (use 'sandbox')",
                pool.name, pool.isolation_method
            )
        })
        .collect())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
