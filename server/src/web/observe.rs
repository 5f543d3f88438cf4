//! What operators and dashboards read: `/healthz` (the process answers),
//! `/readyz` (the database answers), `/metrics` (Prometheus), and project
//! status badges (docs/operations.md).

use std::sync::Arc;

use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::auth;
use super::error::ApiError;
use super::AppState;
use crate::service::model::{BuildStatus, Id};
use crate::service::observe::GaugeSource;
use crate::service::Principal;

/// `GET /healthz`: liveness; answers as long as the process serves HTTP.
pub fn healthz() -> Response {
    warp::reply::json(&json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })).into_response()
}

/// `GET /readyz`: 200 when the database answers a query, else 503 naming it.
pub async fn readyz(state: &Arc<AppState>) -> Response {
    let ready = state.service.readiness().await;
    let database = ready.database;
    let Some(error) = ready.error else {
        return warp::reply::json(&json!({ "status": "ready", "database": database })).into_response();
    };
    tracing::warn!("readyz: {error}");
    warp::reply::with_status(
        warp::reply::json(&json!({ "status": "unavailable", "database": database, "error": error })),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .into_response()
}

/// `GET /metrics`: superusers, or the `[metrics] token` as a bearer token.
pub async fn metrics(state: &Arc<AppState>, method: &Method, headers: &HeaderMap) -> Result<Response, ApiError> {
    let configured = &state.settings().metrics.token;
    let sent = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let by_token = !configured.is_empty() && sent.is_some_and(|s| constant_time_eq(s.trim(), configured));
    if !by_token {
        let principal = auth::authenticate(state, method, headers).await?;
        match principal.user() {
            None => return Err(ApiError::unauthenticated()),
            Some(u) if !u.is_superuser => {
                return Err(ApiError::forbidden("only superusers (or the [metrics] token) may read the metrics"))
            }
            Some(_) => {}
        }
    }
    exposition(&state.service.gauges()).await
}

/// The metrics as an OpenMetrics response, the database gauges read now.
async fn exposition(gauges: &GaugeSource) -> Result<Response, ApiError> {
    let body = gauges.exposition().await?;
    let mut r = Response::new(body.into());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    Ok(r)
}

/// What a standalone worker serves with `--metrics-listen`: `/healthz`, and
/// `/metrics` for the `[metrics] token` alone (a worker keeps no sessions).
/// Its counters are the builds this worker ran, which no `serve` counts.
pub fn worker_routes(
    gauges: GaugeSource,
    token: String,
) -> impl warp::Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    use warp::Filter;
    let health = warp::path!("healthz").and(warp::get()).map(healthz);
    let metrics = warp::path!("metrics").and(warp::get()).and(warp::header::optional::<String>("authorization")).then(
        move |sent: Option<String>| {
            let (gauges, token) = (gauges.clone(), token.clone());
            async move {
                let sent = sent.as_deref().and_then(|v| v.strip_prefix("Bearer "));
                if !sent.is_some_and(|s| constant_time_eq(s.trim(), &token)) {
                    return ApiError::unauthenticated().into_response();
                }
                exposition(&gauges).await.unwrap_or_else(|e| e.into_response())
            }
        },
    );
    health
        .or(metrics)
        .unify()
        .recover(|_| async {
            Ok::<_, std::convert::Infallible>(
                ApiError::not_found("this path (a worker serves /healthz and /metrics)").into_response(),
            )
        })
        .unify()
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `GET /api/v1/projects/{id}/badge.svg`: the last finished build's status.
/// Public when the project says so; otherwise for those who may view the
/// project, and 404 for everyone else (the project's existence does not leak).
pub async fn badge(state: &Arc<AppState>, principal: &Principal, id: Id) -> Result<Response, ApiError> {
    let status = state.service.badge_status(principal, id).await?;
    let mut r = Response::new(badge_svg(status).into());
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static("image/svg+xml; charset=utf-8"));
    // Forges and READMEs proxy badges: ask them not to keep a stale one.
    h.insert("cache-control", HeaderValue::from_static("no-cache, max-age=0"));
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(r)
}

/// The badge's message and colour for a last finished status.
pub fn badge_message(status: Option<BuildStatus>) -> (&'static str, &'static str) {
    match status {
        Some(BuildStatus::Success) => ("passing", "#4c1"),
        Some(BuildStatus::Failure) => ("failing", "#e05d44"),
        Some(BuildStatus::Aborted) => ("aborted", "#9f9f9f"),
        Some(BuildStatus::Orphaned) => ("orphaned", "#fe7d37"),
        _ => ("unknown", "#9f9f9f"),
    }
}

/// A flat two-part badge ("build | passing"), drawn here: no external assets.
pub fn badge_svg(status: Option<BuildStatus>) -> String {
    let label = "build";
    let (message, colour) = badge_message(status);
    // Verdana 11px averages about 7 px a character; 10 px padding a side.
    let width = |s: &str| 10 + 7 * s.len() as u32 + 10;
    let (lw, mw) = (width(label), width(message));
    let total = lw + mw;
    let (lx, mx) = (lw * 10 / 2, (lw + mw / 2) * 10);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" aria-label="{label}: {message}"><title>{label}: {message}</title><linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient><clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath><g clip-path="url(#r)"><rect width="{lw}" height="20" fill="#555"/><rect x="{lw}" width="{mw}" height="20" fill="{colour}"/><rect width="{total}" height="20" fill="url(#s)"/></g><g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="110"><text x="{lx}" y="140" transform="scale(.1)">{label}</text><text x="{mx}" y="140" transform="scale(.1)">{message}</text></g></svg>"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_name_the_status_and_are_well_formed() {
        for (status, word) in [
            (Some(BuildStatus::Success), "passing"),
            (Some(BuildStatus::Failure), "failing"),
            (Some(BuildStatus::Aborted), "aborted"),
            (None, "unknown"),
        ] {
            let svg = badge_svg(status);
            assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>"), "{svg}");
            assert!(svg.contains(&format!(">{word}</text>")), "{svg}");
            assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
            assert!(!svg.contains("href"), "no external assets: {svg}");
        }
    }
}
