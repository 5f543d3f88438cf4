//! The HTTP side: the REST API under `/api/v1`, the web UI, webhooks and live
//! output streams, all on warp. Each handler reads its request, calls one
//! operation of the service layer (`crate::service`), which authorizes,
//! checks and writes, and turns the result into an answer; the web tier
//! itself reaches neither the store nor the engine. The API and the UI name
//! neither each other (`server/tests/layers.rs`).

pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod limits;
mod live;
mod log;
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

use crate::service::model::Registry;
use crate::service::observe::GaugeSource;
use crate::service::Service;
use crate::settings::Settings;

/// Shared state of the web tier.
pub struct AppState {
    /// The operations.
    pub service: Service,
    /// Failed logins per account and per address.
    pub login_throttle: limits::LoginThrottle,
    /// Live output streams open now.
    pub live_streams: Arc<limits::LiveStreams>,
}

impl AppState {
    /// The web tier's state.
    pub fn new(service: Service) -> Self {
        let login_throttle = limits::LoginThrottle::new(&service.settings().limits);
        let live_streams = limits::LiveStreams::new(&service.settings().limits);
        AppState { service, login_throttle, live_streams }
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        self.service.settings()
    }

    /// How long a request body may send nothing.
    pub fn body_idle(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.settings().limits.body_idle_timeout_seconds)
    }
}

/// The routes, separate from the listener so tests can drive them directly.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let ui = ui::routes(state.clone());
    let observe = observe_routes(state.clone());
    let routed = routes::filter()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(limits::client_addr())
        .and(limits::body(api::MAX_BODY, state.body_idle()))
        .then(
            move |matched,
                  method,
                  path: warp::path::FullPath,
                  raw_query: String,
                  headers,
                  client,
                  body: Result<_, limits::BodyError>| {
                let state = state.clone();
                async move {
                    let body = match body {
                        Ok(body) => body,
                        Err(e) => return closing(e.api_error().into_response()),
                    };
                    let path = path.as_str().to_string();
                    let query = form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect();
                    let req = request::ApiRequest { method, path, raw_query, query, headers, body, client };
                    api::handle(state, matched, req).await
                }
            },
        );
    // An API path no route takes gets the API's JSON error, not the UI's page.
    let unrouted = warp::method().and(warp::path::full()).and_then(
        |method: warp::http::Method, path: warp::path::FullPath| async move {
            let path = path.as_str();
            if !(path.starts_with("/api/") || path.starts_with("/webhooks")) {
                return Err(warp::reject::not_found());
            }
            Ok(api::unrouted(&method, path))
        },
    );
    observe.or(ui).unify().or(routed).unify().or(unrouted).unify().recover(recover)
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

/// Turns warp's own rejections (a body too large, ...) into JSON errors.
async fn recover(rejection: warp::Rejection) -> Result<warp::reply::Response, std::convert::Infallible> {
    use warp::http::StatusCode;
    let error = if rejection.is_not_found() {
        error::ApiError::not_found("page")
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        error::ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {} bytes", api::MAX_BODY),
        )
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
    let addr: SocketAddr = settings
        .server
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid setting 'server.listen' ({}): {e}", settings.server.listen))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let (service, _running) = Service::open(settings, registry).await?;
        // The port first: a start that cannot listen must not spend the
        // one-time administrator password on a server nobody can reach.
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        service.announce_start().await?;
        let workers = service.start_workers();
        let header_timeout = Duration::from_secs(service.settings().limits.header_read_timeout_seconds);
        let state = Arc::new(AppState::new(service));
        let bound = listener.local_addr()?;
        println!("Vespene is listening on http://{bound}/");
        serve_connections(listener, routes(state), header_timeout, shutdown_signal()).await;
        // Builds in progress finish; no new ones are claimed.
        workers.stop().await;
        Ok(())
    })
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
    gauges: GaugeSource,
    token: String,
    shutdown: impl std::future::Future<Output = ()>,
) {
    serve_connections(listener, observe::worker_routes(gauges, token), Duration::from_secs(10), shutdown).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
