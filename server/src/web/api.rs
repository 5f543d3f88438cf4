//! The JSON REST API under `/api/v1`: every object kind (list with
//! pagination and filters, get, create, update, delete), starting projects,
//! stopping builds, build output and its live SSE stream, login and tokens.
//! Every action goes through the authorization chain; errors are JSON naming
//! the field or the reason; nothing is half-saved (the store's transactions).

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::auth;
use super::error::ApiError;
use super::request::{body_as, body_object, ApiRequest};
use super::routes::{
    self, BuildQuery, LoginBody, Matched, OutputQuery, Paging, RerunBody, RunsQuery, StageChoice, StartBody,
    StreamQuery, TokenBody,
};
use super::AppState;
use crate::service::accounts::LoginOutcome;
use crate::service::builds::StageRef;
use crate::service::model::{Build, BuildFilter, BuildStatus, Id, LaunchAnswers, ObjectKind};
use crate::service::objects::{reject_unknown, JSON_TEXT_FIELDS};
use crate::service::Principal;

/// A page of a listing, as every `*.list` operation answers.
#[derive(Serialize)]
struct Page<T> {
    /// How many objects match, on every page.
    count: usize,
    limit: usize,
    offset: usize,
    results: Vec<T>,
}

/// Largest request body accepted.
pub const MAX_BODY: u64 = 1024 * 1024;
/// Page size when none is asked for, and the largest allowed.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// Handles one API request, matched to its route.
pub async fn handle(state: Arc<AppState>, matched: Matched, req: ApiRequest) -> Response {
    match dispatch(state, matched, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The answer to an API request no route takes: 405 when the path has
/// routes for other methods, else 404.
pub fn unrouted(method: &Method, path: &str) -> Response {
    if routes::path_exists(path) {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}")).into_response()
    } else {
        ApiError::not_found(&format!("route {path}")).into_response()
    }
}

async fn dispatch(state: Arc<AppState>, matched: Matched, req: ApiRequest) -> Result<Response, ApiError> {
    let Matched { route, id, run } = matched;
    if route.id == "webhook" {
        return super::webhooks::handle(&state, &req).await;
    }
    let principal = auth::authenticate(&state, &req.method, &req.headers).await?;
    let id = id.unwrap_or(0);
    let svc = &state.service;
    match route.id {
        "health" => Ok(json_response(StatusCode::OK, &json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))),
        "openapi" => Ok(json_response(StatusCode::OK, super::openapi::document())),
        "login" => login(&state, &req).await,
        "logout" => logout(&state, &principal).await,
        "me" => me(&principal),
        "plugins" => {
            principal.require()?;
            Ok(json_response(StatusCode::OK, &json!({ "results": svc.plugin_summaries() })))
        }
        "project.start" => start_project(&state, &principal, id, &req).await,
        "project.badge" => super::observe::badge(&state, &principal, id).await,
        "audit.list" => super::audit::list(&state, &principal, &req.query).await,
        "pipeline.runs" => {
            let limit = req.query_as::<RunsQuery>()?.limit.unwrap_or(10).clamp(1, 100);
            let runs = svc.pipeline_runs(&principal, id, limit).await?;
            Ok(json_response(StatusCode::OK, &json!({ "pipeline": id, "results": runs })))
        }
        "pipeline.approve" => {
            empty_body(&req, "an approval")?;
            let (approval, started) = svc.approve_stage(&principal, req.client, id, run.unwrap_or(0)).await?;
            Ok(json_response(StatusCode::OK, &json!({ "approval": approval, "started": started })))
        }
        "pipeline.rerun" => rerun_stage(&state, &principal, id, run.unwrap_or(0), &req).await,
        "worker.list" => {
            let results = svc.list_workers(&principal).await?;
            Ok(json_response(StatusCode::OK, &json!({ "count": results.len(), "results": results })))
        }
        "worker_pool.autoscale" => {
            empty_body(&req, "an autoscaling request")?;
            let (decision, after) = svc.autoscale_now(&principal, req.client, id).await?;
            Ok(json_response(StatusCode::OK, &json!({ "decision": decision, "worker_pool": after })))
        }
        "build.list" => list_builds(&state, &principal, &req).await,
        "build.get" => Ok(json_response(StatusCode::OK, &svc.build_for(&principal, id, "view").await?)),
        "build.delete" => {
            svc.delete_build(&principal, req.client, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "build.pin" | "build.unpin" => {
            let build = svc.pin_build(&principal, req.client, id, route.id == "build.pin").await?;
            Ok(json_response(StatusCode::OK, &build))
        }
        "build.stop" => {
            svc.stop_build(&principal, req.client, id).await?;
            Ok(json_response(StatusCode::ACCEPTED, &json!({ "id": id, "status": "ABORTING" })))
        }
        "build.output" => {
            let build = svc.build_for(&principal, id, "view").await?;
            let query: OutputQuery = req.query_as()?;
            let (after, limit) = (query.after.unwrap_or(0), query.limit.unwrap_or(1000).clamp(1, 10_000));
            let lines = svc.output(id, after, limit).await?;
            Ok(json_response(
                StatusCode::OK,
                &routes::OutputPage { build: id, status: build.status, lines, log_removed_at: build.log_removed_at },
            ))
        }
        "build.log" => {
            svc.build_for(&principal, id, "view").await?;
            Ok(super::log::download(state.clone(), id, &req.headers))
        }
        "build.stream" => {
            svc.build_for(&principal, id, "view").await?;
            let after = match req.headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
                Some(v) => v.parse().map_err(|_| ApiError::bad("Last-Event-ID must be a line number"))?,
                None => req.query_as::<StreamQuery>()?.after.unwrap_or(0),
            };
            let slot = state.live_streams.acquire(principal.user().map(|u| u.id))?;
            Ok(super::live::stream(state.clone(), id, after, slot))
        }
        "token.list" => Ok(json_response(StatusCode::OK, &json!({ "results": svc.list_tokens(&principal).await? }))),
        "token.create" => {
            principal.require()?;
            let body: TokenBody = body_as(&req.body)?;
            let name = body.name.unwrap_or_else(|| "api".to_string());
            let (token, secret) = svc.create_token(&principal, req.client, &name, body.expires_in_days).await?;
            Ok(json_response(StatusCode::CREATED, &json!({ "token": secret, "details": token })))
        }
        "token.delete" => {
            svc.revoke_token(&principal, req.client, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        other => {
            let (kind, action) = other.split_once('.').expect("route ids are kind.action");
            let kind = ObjectKind::parse(kind).expect("the CRUD routes are named after the object kinds");
            crud(&state, &principal, kind, action, id, &req).await
        }
    }
}

/// A body that must be empty or an empty JSON object.
fn empty_body(req: &ApiRequest, what: &str) -> Result<(), ApiError> {
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        reject_unknown(&body_object(&req.body)?, &[], what)?;
    }
    Ok(())
}

// ------------------------------------------------------------ request helpers

/// The JSON-document fields a body sent in the old form, as a JSON string.
fn deprecated_forms(body: &serde_json::Map<String, Value>) -> Vec<String> {
    JSON_TEXT_FIELDS.iter().filter(|f| body.get(**f).is_some_and(Value::is_string)).map(|f| f.to_string()).collect()
}

/// Marks an answer to a request that used a deprecated form: a
/// `Deprecation` header (RFC 9745) and a `Warning` naming the fields.
fn with_deprecations(mut response: Response, fields: &[String]) -> Response {
    if fields.is_empty() {
        return response;
    }
    let note = format!(
        "299 vespene \"{} sent as a JSON string: send the JSON document itself; the string form is deprecated and \
         will be refused in a later release\"",
        fields.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ")
    );
    let headers = response.headers_mut();
    headers.insert("deprecation", warp::http::HeaderValue::from_static("true"));
    if let Ok(value) = warp::http::HeaderValue::from_str(&note) {
        headers.insert("warning", value);
    }
    response
}

// ------------------------------------------------------------ accounts

async fn login(state: &Arc<AppState>, req: &ApiRequest) -> Result<Response, ApiError> {
    // A page elsewhere can post a form (text/plain can carry JSON) but not
    // set this content type without the browser asking first: no login CSRF.
    let json = req
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "log in with Content-Type: application/json"));
    }
    let body: LoginBody = body_as(&req.body)?;
    let required = |name: &str| ApiError::field(name, format!("'{name}' (a string) is required"));
    let username = body.username.ok_or_else(|| required("username"))?;
    let password = body.password.ok_or_else(|| required("password"))?;
    let attempt = match state.login_throttle.begin(&username, req.client) {
        Ok(attempt) => attempt,
        Err(throttled) => {
            state.service.audit_failed_login(&username, req.client, "throttled").await;
            let response = throttled.api_error().into_response();
            return Ok(
                warp::reply::with_header(response, "retry-after", throttled.retry_after.to_string()).into_response()
            );
        }
    };
    let (user, source) = match state.service.check_login(&username, &password, req.client).await? {
        LoginOutcome::Accepted { user, source } => (user, source),
        refused => {
            state.service.audit_failed_login(&username, req.client, &refused.audit_reason()).await;
            let status = if matches!(refused, LoginOutcome::Unavailable { .. }) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            return Err(ApiError::new(status, refused.message()));
        }
    };
    attempt.succeeded();
    let sid = state.service.start_session(&user, &source, "api", req.client).await?;
    let csrf = auth::csrf_token(&sid);
    let cookie = auth::session_cookie(state, &sid);
    let reply = warp::reply::json(&json!({ "user": user, "csrf_token": csrf }));
    Ok(warp::reply::with_header(reply, "set-cookie", cookie).into_response())
}

async fn logout(state: &Arc<AppState>, principal: &Principal) -> Result<Response, ApiError> {
    state.service.end_session(principal).await?;
    let cookie = auth::session_cookie_cleared(state);
    Ok(warp::reply::with_header(StatusCode::NO_CONTENT, "set-cookie", cookie).into_response())
}

fn me(principal: &Principal) -> Result<Response, ApiError> {
    let user = principal.require()?;
    let csrf = match principal {
        Principal::Session { sid, .. } => Some(auth::csrf_token(sid)),
        _ => None,
    };
    Ok(json_response(StatusCode::OK, &json!({ "user": user, "csrf_token": csrf })))
}

// ------------------------------------------------------------ builds

async fn list_builds(state: &Arc<AppState>, principal: &Principal, req: &ApiRequest) -> Result<Response, ApiError> {
    if let Some(key) = req.query.keys().find(|k| !BuildQuery::NAMES.contains(&k.as_str())) {
        let names = BuildQuery::NAMES.join(", ");
        return Err(ApiError::field(key, format!("unknown filter '{key}' for builds ({names})")));
    }
    let query: BuildQuery = req.query_as()?;
    let status = match &query.status {
        Some(s) => {
            Some(BuildStatus::parse(s).ok_or_else(|| ApiError::field("status", format!("unknown status '{s}'")))?)
        }
        None => None,
    };
    let limit = query.limit.unwrap_or(PAGE as i64).clamp(1, MAX_PAGE as i64);
    let offset = query.offset.unwrap_or(0).max(0);
    let filter =
        BuildFilter { project_id: query.project_id, worker_pool_id: query.worker_pool_id, status, limit, offset };
    let builds = state.service.list_builds(principal, &filter).await?;
    let results: Vec<&Build> = builds.iter().map(|(b, _)| b).collect();
    Ok(json_response(StatusCode::OK, &json!({ "limit": limit, "offset": offset, "results": results })))
}

async fn start_project(
    state: &Arc<AppState>,
    principal: &Principal,
    id: Id,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let body = if req.body.iter().all(u8::is_ascii_whitespace) { StartBody::default() } else { body_as(&req.body)? };
    let answers: LaunchAnswers = body.answers.unwrap_or_default();
    let build = state.service.start_project(principal, id, answers).await?;
    Ok(json_response(StatusCode::CREATED, &build))
}

/// Re-runs a pipeline run from a stage: needs `view` of the pipeline and
/// `start` of every project of the stage (re-running starts them).
async fn rerun_stage(
    state: &Arc<AppState>,
    principal: &Principal,
    id: Id,
    run: Id,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    let body: RerunBody = body_as(&req.body)?;
    let stage = match body.stage {
        Some(StageChoice::Id(id)) => StageRef::Id(id),
        Some(StageChoice::Name(name)) => StageRef::Name(name),
        None => {
            return Err(ApiError::field("stage", "'stage' is required: the id or name of the stage to re-run from"))
        }
    };
    let (stage_id, started) = state.service.rerun_stage(principal, id, run, stage).await?;
    Ok(json_response(StatusCode::OK, &json!({ "run": run, "stage": stage_id, "started": started })))
}

async fn crud(
    state: &Arc<AppState>,
    principal: &Principal,
    kind: ObjectKind,
    action: &str,
    id: Id,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    match action {
        "list" => {
            let paging: Paging = req.query_as()?;
            let limit = paging.limit.unwrap_or(PAGE as i64).clamp(1, MAX_PAGE as i64) as usize;
            let offset = paging.offset.unwrap_or(0).max(0) as usize;
            // Filtered after visibility: a query must not probe hidden fields.
            let listing = state.service.list_page(principal, kind, &req.query, offset, limit).await?;
            Ok(json_response(StatusCode::OK, &Page { count: listing.count, limit, offset, results: listing.results }))
        }
        "get" => {
            let value = state.service.view_object(principal, kind, id).await?;
            Ok(json_response(StatusCode::OK, &value))
        }
        "create" => {
            let body = body_object(&req.body)?;
            let deprecated = deprecated_forms(&body);
            let created = state.service.create_object(principal, req.client, kind, body).await?;
            Ok(with_deprecations(json_response(StatusCode::CREATED, &created), &deprecated))
        }
        "update" => {
            let body = body_object(&req.body)?;
            let deprecated = deprecated_forms(&body);
            let updated = state.service.update_object(principal, req.client, kind, id, body).await?;
            Ok(with_deprecations(json_response(StatusCode::OK, &updated), &deprecated))
        }
        "delete" => {
            state.service.delete_object(principal, req.client, kind, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::not_found("route")),
    }
}
