//! The HTTP side: the REST API under `/api/v1`, the web UI, webhooks and live
//! output streams, all on warp. Handlers ask the authorization chain, then
//! start, stop, approve and follow builds through the engine and read and
//! write objects through the store; they never load plugins. The API and the
//! UI share the object operations in `objects` and name neither each other
//! (`server/tests/layers.rs`). The one place that opens files is the UI's
//! build-root browser (`ui::files`), confined to the build's root.

pub mod api;
pub mod audit;
pub mod auth;
pub mod authn;
pub mod error;
pub mod limits;
mod live;
mod log;
pub(crate) mod objects;
pub mod observe;
pub mod openapi;
pub mod request;
pub mod routes;
pub mod ui;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warp::Filter;

use crate::engine::{Engine, WorkerConfig};
use crate::plugins::Registry;
use crate::settings::{Limits, Settings};
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
    /// Failed logins per account and per address.
    pub login_throttle: limits::LoginThrottle,
    /// Live output streams open now.
    pub live_streams: Arc<limits::LiveStreams>,
}

impl AppState {
    /// The web tier's state.
    pub fn new(settings: Settings, registry: Arc<Registry>, store: Store, engine: Engine) -> Self {
        let login_throttle = limits::LoginThrottle::new(&settings.limits);
        let live_streams = limits::LiveStreams::new(&settings.limits);
        AppState { settings, registry, store, engine, login_throttle, live_streams }
    }

    /// How long a request body may send nothing.
    pub fn body_idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings.limits.body_idle_timeout_seconds)
    }
}

/// The routes, separate from the listener so tests can drive them directly.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let ui = ui::routes(state.clone());
    let observe = observe_routes(state.clone());
    let api = warp::method()
        .and(warp::path::full())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(warp::header::headers_cloned())
        .and(limits::client_addr())
        .and(limits::body(api::MAX_BODY, state.body_idle()))
        .and_then(
            move |method, path: warp::path::FullPath, query, headers, client, body: Result<_, limits::BodyError>| {
                let state = state.clone();
                async move {
                    let path = path.as_str().to_string();
                    if !(path.starts_with("/api/") || path.starts_with("/webhooks")) {
                        return Err(warp::reject::not_found());
                    }
                    let body = match body {
                        Ok(body) => body,
                        Err(e) => return Ok(closing(e.api_error().into_response())),
                    };
                    let request = request::ApiRequest { method, path, query, headers, body, client };
                    Ok::<_, warp::Rejection>(api::handle(state, request).await)
                }
            },
        );
    observe.or(ui).unify().or(api).recover(recover)
}

/// `/healthz`, `/readyz` and `/metrics`, outside the API's prefix where
/// probes and scrapers expect them.
fn observe_routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let health = warp::path!("healthz").and(warp::get()).map(observe::healthz);
    let ready = {
        let state = state.clone();
        warp::path!("readyz").and(warp::get()).then(move || {
            let state = state.clone();
            async move { observe::readyz(&state).await }
        })
    };
    let metrics = warp::path!("metrics").and(warp::get()).and(warp::method()).and(warp::header::headers_cloned()).then(
        move |method, headers| {
            let state = state.clone();
            async move { observe::metrics(&state, &method, &headers).await.unwrap_or_else(|e| e.into_response()) }
        },
    );
    health.or(ready).unify().or(metrics).unify()
}

/// A response whose body is sent as `rx` yields it, ending when `rx` closes
/// (an `Err` cuts the connection short).
pub(crate) fn streamed(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> warp::reply::Response {
    warp::Reply::into_response(warp::reply::stream(Chunks(rx)))
}

/// The receiving end of a body channel as a stream (`Sync`: it holds no future).
struct Chunks(tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>);

impl futures_util::Stream for Chunks {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The response with `Connection: close`: the rest of a refused body is not read.
pub(crate) fn closing(mut response: warp::reply::Response) -> warp::reply::Response {
    response.headers_mut().insert("connection", warp::http::HeaderValue::from_static("close"));
    response
}

/// Turns warp's own rejections (bad query string, ...) into JSON errors.
async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, std::convert::Infallible> {
    use warp::http::StatusCode;
    let error = if rejection.is_not_found() {
        error::ApiError::not_found("page")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
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
        // One record of what this start loaded, for whoever asks later what ran when.
        let loaded: Vec<_> = registry.summaries();
        let object = crate::store::AuditObject::new("plugins", None, format!("{} plugin(s)", loaded.len()));
        store
            .record_audit(
                &crate::store::AuditActor::system(),
                "plugins.loaded",
                &object,
                serde_json::json!({ "plugins": loaded }),
            )
            .await?;
        let registry = Arc::new(registry);
        let engine = Engine::new(store.clone(), registry.clone(), Arc::new(settings.clone()));
        let (stop_workers, workers_stop) = tokio::sync::watch::channel(false);
        let workers = if settings.workers.embedded {
            let config = WorkerConfig::named(settings.workers.pools.clone(), settings.workers.per_pool as usize);
            let engine = engine.clone();
            Some(tokio::spawn(async move { engine.run_worker(config, workers_stop).await }))
        } else {
            None
        };
        crate::store::set_hash_concurrency(Limits::or_cores(settings.limits.password_hash_concurrency));
        let header_timeout = Duration::from_secs(settings.limits.header_read_timeout_seconds);
        let state = Arc::new(AppState::new(settings, registry, store, engine));
        let bound = listener.local_addr()?;
        tracing::info!(plugins = plugin_count, "loaded plugins");
        println!("Vespene is listening on http://{bound}/");
        serve_connections(listener, routes(state), header_timeout, shutdown_signal()).await;
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

/// Serves HTTP/1 connections until `shutdown`, then waits for those open to
/// finish. Served through hyper's own builder, not `warp::serve`, for the
/// header-read timeout: a connection that has not sent a whole request head
/// within `header_timeout` (a new one, or a keep-alive one between requests)
/// is closed, so half-sent requests cannot pile up. Each request carries its
/// peer address ([`limits::ClientAddr`]).
async fn serve_connections<F, R>(
    listener: tokio::net::TcpListener,
    routes: F,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: Filter<Extract = (R,), Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
    R: warp::Reply,
{
    let service = warp::service(routes);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    use std::io::ErrorKind::*;
                    if !matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset) {
                        // Out of descriptors, say: wait for some to be closed.
                        tracing::error!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let service = service.clone();
        let per_request = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(limits::ClientAddr(peer));
            let mut service = service.clone();
            let method = request.method().clone();
            let started = std::time::Instant::now();
            let answer = tower_service::Service::call(&mut service, request);
            async move {
                let answer = answer.await;
                if let Ok(response) = &answer {
                    let status = response.status().as_u16();
                    crate::metrics::http_request(method.as_str(), status, started.elapsed().as_secs_f64());
                }
                answer
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), per_request);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves a standalone worker's `/healthz` and `/metrics` on `listener`
/// until `shutdown` ([`observe::worker_routes`]).
pub async fn serve_worker_metrics(
    listener: tokio::net::TcpListener,
    store: Store,
    token: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_connections(listener, observe::worker_routes(store, token), Duration::from_secs(10), shutdown).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
