//! The JSON REST API under `/api/v1`: every object kind (list with
//! pagination and filters, get, create, update, delete), starting projects,
//! stopping builds, build output and its live SSE stream, login and tokens.
//! Every action goes through the authorization chain; errors are JSON naming
//! the field or the reason; nothing is half-saved (the store's transactions).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::auth::{self, Principal};
use super::error::ApiError;
use super::objects::*;
use super::request::{body_object, ApiRequest};
use super::routes;
use super::AppState;
use crate::engine::{LaunchAnswers, StartRequest};
use crate::store::{AuditObject, BuildFilter, BuildStatus, Id, ObjectKind};

/// Largest request body accepted.
pub const MAX_BODY: u64 = 1024 * 1024;
/// Page size when none is asked for, and the largest allowed.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;

fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

/// Handles one API request.
pub async fn handle(state: Arc<AppState>, req: ApiRequest) -> Response {
    match dispatch(state, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(state: Arc<AppState>, req: ApiRequest) -> Result<Response, ApiError> {
    let Some((route, id, run)) = routes::find(req.method.as_str(), &req.path) else {
        return Err(if routes::path_exists(&req.path) {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {}", req.method, req.path))
        } else {
            ApiError::not_found(&format!("route {}", req.path))
        });
    };
    if route.id == "webhook" {
        return super::webhooks::handle(&state, &req).await;
    }
    let principal = auth::authenticate(&state, &req.method, &req.headers).await?;
    let id = id.unwrap_or(0);
    match route.id {
        "health" => Ok(json_response(StatusCode::OK, &json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))),
        "openapi" => Ok(json_response(StatusCode::OK, super::openapi::document())),
        "login" => login(&state, &req).await,
        "logout" => logout(&state, &principal).await,
        "me" => me(&state, &principal).await,
        "plugins" => {
            principal.require()?;
            Ok(json_response(StatusCode::OK, &json!({ "results": state.registry.summaries() })))
        }
        "project.start" => start_project(&state, &principal, id, &req).await,
        "project.badge" => super::observe::badge(&state, &principal, id).await,
        "audit.list" => super::audit::list(&state, &principal, &req.query).await,
        "pipeline.runs" => {
            let pipeline = pipeline_for(&state, &principal, id, "view").await?;
            let limit = query_i64(&req.query, "limit", 10)?.clamp(1, 100);
            let runs = state.engine.pipeline_runs(&pipeline, limit).await?;
            Ok(json_response(StatusCode::OK, &json!({ "pipeline": id, "results": runs })))
        }
        "pipeline.approve" => {
            // Its own action, so a policy can leave approvals to some of those who edit the pipeline.
            let pipeline = pipeline_for(&state, &principal, id, "approve").await?;
            if !req.body.iter().all(u8::is_ascii_whitespace) {
                reject_unknown(&body_object(&req.body)?, &[], "an approval")?;
            }
            principal.require()?;
            let approver = super::audit::actor(&principal, req.client);
            let (approval, started) = state.engine.approve_stage(&pipeline, run.unwrap_or(0), &approver).await?;
            Ok(json_response(StatusCode::OK, &json!({ "approval": approval, "started": started })))
        }
        "pipeline.rerun" => rerun_stage(&state, &principal, id, run.unwrap_or(0), &req).await,
        "worker.list" => {
            // Host names and build-root paths of the build machines: for administrators.
            if !principal.require()?.is_superuser {
                return Err(ApiError::forbidden("only a superuser may list the workers"));
            }
            let timeout = state.engine.settings().workers.heartbeat_timeout_seconds;
            let workers = state.store.list_workers().await?;
            let now = crate::store::now();
            let results: Vec<Value> = workers
                .into_iter()
                .map(|w| {
                    let alive = w.last_checkin.is_some_and(|t| (now - t).num_seconds() <= timeout as i64);
                    let mut v = serde_json::to_value(&w).unwrap_or_default();
                    v["alive"] = json!(alive);
                    v
                })
                .collect();
            Ok(json_response(StatusCode::OK, &json!({ "count": results.len(), "results": results })))
        }
        "worker_pool.autoscale" => {
            // Deciding now is changing the pool: the pool's `edit` permission
            // (superusers only, with the shipped authorization plugins).
            let current = get_value(&state, ObjectKind::WorkerPool, id).await?;
            let object = authz_object(&state, "worker_pool", current).await?;
            state.authorize(&principal, "edit", "worker_pool", Some(object)).await?;
            if !req.body.iter().all(u8::is_ascii_whitespace) {
                reject_unknown(&body_object(&req.body)?, &[], "an autoscaling request")?;
            }
            let Some(decision) = state.engine.autoscale_now(id).await? else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("worker pool {id}: another autoscaling decision is running; try again when it ends"),
                ));
            };
            let actor = super::audit::actor(&principal, req.client);
            let after = get_value(&state, ObjectKind::WorkerPool, id).await?;
            let object = AuditObject::new("worker_pool", Some(id), object_name(ObjectKind::WorkerPool, &after));
            state.audit(&actor, "worker_pool.autoscale", &object, json!({ "decision": decision })).await;
            Ok(json_response(StatusCode::OK, &json!({ "decision": decision, "worker_pool": after })))
        }
        "build.list" => list_builds(&state, &principal, &req).await,
        "build.get" => {
            let (build, object) = build_object(&state, id).await?;
            state.authorize(&principal, "view", "build", Some(object)).await?;
            Ok(json_response(StatusCode::OK, &build))
        }
        "build.delete" => {
            let (build, object) = build_object(&state, id).await?;
            state.authorize(&principal, "delete", "build", Some(object)).await?;
            if build.status.is_active() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("build {id} is {}: stop it first", build.status),
                ));
            }
            if build.pinned {
                return Err(ApiError::new(StatusCode::CONFLICT, format!("build {id} is pinned: unpin it first")));
            }
            state.store.delete_build(id).await?;
            let actor = super::audit::actor(&principal, req.client);
            state.audit(&actor, "delete", &build_audit_object(&state, &build).await, json!({})).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "build.pin" | "build.unpin" => {
            // Who may stop a build may pin it: its project's owners and launchers, and its starter.
            let (_, object) = build_object(&state, id).await?;
            state.authorize(&principal, "stop", "build", Some(object)).await?;
            let pinned = route.id == "build.pin";
            let build = state
                .store
                .set_build_pinned(id, pinned)
                .await?
                .ok_or_else(|| ApiError::not_found(&format!("build {id}")))?;
            let actor = super::audit::actor(&principal, req.client);
            let action = if pinned { "build.pin" } else { "build.unpin" };
            state.audit(&actor, action, &build_audit_object(&state, &build).await, json!({})).await;
            Ok(json_response(StatusCode::OK, &build))
        }
        "build.stop" => {
            let (build, object) = build_object(&state, id).await?;
            state.authorize(&principal, "stop", "build", Some(object)).await?;
            if !state.store.request_stop(id).await? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("build {id} is {}: only queued or running builds can be stopped", build.status),
                ));
            }
            let actor = super::audit::actor(&principal, req.client);
            state.audit(&actor, "build.stop", &build_audit_object(&state, &build).await, json!({})).await;
            Ok(json_response(StatusCode::ACCEPTED, &json!({ "id": id, "status": "ABORTING" })))
        }
        "build.output" => {
            let (build, object) = build_object(&state, id).await?;
            state.authorize(&principal, "view", "build", Some(object)).await?;
            let after = query_i64(&req.query, "after", 0)?;
            let limit = query_i64(&req.query, "limit", 1000)?.clamp(1, 10_000);
            let lines = state.store.output_since(id, after, limit).await?;
            let status = state.store.build_status(id).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "build": id, "status": status, "lines": lines, "log_removed_at": build.log_removed_at }),
            ))
        }
        "build.log" => {
            let (_, object) = build_object(&state, id).await?;
            state.authorize(&principal, "view", "build", Some(object)).await?;
            Ok(super::log::download(state.clone(), id, &req.headers))
        }
        "build.stream" => {
            let (_, object) = build_object(&state, id).await?;
            state.authorize(&principal, "view", "build", Some(object)).await?;
            let after = match req.headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
                Some(v) => v.parse().map_err(|_| ApiError::bad("Last-Event-ID must be a line number"))?,
                None => query_i64(&req.query, "after", 0)?,
            };
            let slot = state.live_streams.acquire(principal.user().map(|u| u.id))?;
            Ok(super::live::stream(state.clone(), id, after, slot))
        }
        "token.list" => {
            let user = principal.require()?;
            Ok(json_response(StatusCode::OK, &json!({ "results": state.store.list_api_tokens(user.id).await? })))
        }
        "token.create" => {
            let user = principal.require()?.clone();
            let body = body_object(&req.body)?;
            reject_unknown(&body, &["name", "expires_in_days"], "token")?;
            let name = body.get("name").and_then(Value::as_str).unwrap_or("api").to_string();
            let days = match body.get("expires_in_days") {
                None | Some(Value::Null) => state.settings.server.token_expiry_days as i64,
                Some(v) => match v.as_i64() {
                    Some(d) if (1..=36_500).contains(&d) => d,
                    _ => {
                        return Err(ApiError::field(
                            "expires_in_days",
                            format!("'expires_in_days' must be a whole number of days from 1 to 36500, got {v}"),
                        ))
                    }
                },
            };
            let ttl = (days > 0).then(|| chrono::Duration::days(days));
            let (token, secret) = state.store.create_api_token(user.id, &name, ttl).await?;
            let object = AuditObject::new("token", Some(token.id), name.clone());
            let details = json!({ "expires_in_days": (days > 0).then_some(days) });
            state.audit(&super::audit::actor(&principal, req.client), "token.create", &object, details).await;
            Ok(json_response(StatusCode::CREATED, &json!({ "token": secret, "details": token })))
        }
        "token.delete" => {
            let user = principal.require()?;
            let Some(token) = state.store.list_api_tokens(user.id).await?.into_iter().find(|t| t.id == id) else {
                return Err(ApiError::not_found(&format!("token {id}")));
            };
            state.store.delete_api_token(id).await?;
            let object = AuditObject::new("token", Some(id), token.name);
            state.audit(&super::audit::actor(&principal, req.client), "token.revoke", &object, json!({})).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        other => {
            let (kind, action) = other.split_once('.').expect("route ids are kind.action");
            let kind = ObjectKind::parse(kind).expect("the CRUD routes are named after the object kinds");
            crud(&state, &principal, kind, action, id, &req).await
        }
    }
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

fn query_i64(query: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, ApiError> {
    match query.get(name) {
        Some(v) => v.parse().map_err(|_| ApiError::field(name, format!("query parameter '{name}' must be a number"))),
        None => Ok(default),
    }
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
    let body = body_object(&req.body)?;
    reject_unknown(&body, &["username", "password"], "login")?;
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::field(name, format!("'{name}' (a string) is required")))
    };
    let (username, password) = (field("username")?, field("password")?);
    let attempt = match state.login_throttle.begin(&username, req.client) {
        Ok(attempt) => attempt,
        Err(throttled) => {
            audit_failed_login(state, &username, req.client, "throttled").await;
            let response = throttled.api_error().into_response();
            return Ok(
                warp::reply::with_header(response, "retry-after", throttled.retry_after.to_string()).into_response()
            );
        }
    };
    let (user, source) = match state.check_login(&username, &password, req.client).await? {
        super::authn::LoginOutcome::Accepted { user, source } => (user, source),
        refused => {
            audit_failed_login(state, &username, req.client, &refused.audit_reason()).await;
            let status = if matches!(refused, super::authn::LoginOutcome::Unavailable { .. }) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            return Err(ApiError::new(status, refused.message()));
        }
    };
    attempt.succeeded();
    let object = AuditObject::new("user", Some(user.id), user.username.clone());
    let details = json!({ "via": "api", "source": source });
    state.audit(&crate::store::AuditActor::user(&user, req.client), "login", &object, details).await;
    let sid = state.store.create_session(user.id, chrono::Duration::seconds(auth::SESSION_TTL_SECS)).await?;
    let csrf = auth::csrf_token(&sid);
    let cookie = auth::session_cookie(state, &sid);
    let reply = warp::reply::json(&json!({ "user": user, "csrf_token": csrf }));
    Ok(warp::reply::with_header(reply, "set-cookie", cookie).into_response())
}

async fn logout(state: &Arc<AppState>, principal: &Principal) -> Result<Response, ApiError> {
    if let Principal::Session { sid, .. } = principal {
        state.store.delete_session(sid).await?;
    }
    let cookie = auth::session_cookie_cleared(state);
    Ok(warp::reply::with_header(StatusCode::NO_CONTENT, "set-cookie", cookie).into_response())
}

async fn me(_state: &Arc<AppState>, principal: &Principal) -> Result<Response, ApiError> {
    let user = principal.require()?;
    let csrf = match principal {
        Principal::Session { sid, .. } => Some(auth::csrf_token(sid)),
        _ => None,
    };
    Ok(json_response(StatusCode::OK, &json!({ "user": user, "csrf_token": csrf })))
}

// ------------------------------------------------------------ builds

async fn list_builds(state: &Arc<AppState>, principal: &Principal, req: &ApiRequest) -> Result<Response, ApiError> {
    state.authorize(principal, "list", "build", None).await?;
    for key in req.query.keys() {
        if !["project_id", "worker_pool_id", "status", "limit", "offset"].contains(&key.as_str()) {
            return Err(ApiError::field(
                key,
                format!("unknown filter '{key}' for builds (project_id, worker_pool_id, status, limit, offset)"),
            ));
        }
    }
    let status = match req.query.get("status") {
        Some(s) => {
            Some(BuildStatus::parse(s).ok_or_else(|| ApiError::field("status", format!("unknown status '{s}'")))?)
        }
        None => None,
    };
    let limit = query_i64(&req.query, "limit", PAGE as i64)?.clamp(1, MAX_PAGE as i64);
    let offset = query_i64(&req.query, "offset", 0)?.max(0);
    let filter = BuildFilter {
        project_id: req.query.get("project_id").map(|_| query_i64(&req.query, "project_id", 0)).transpose()?,
        worker_pool_id: req
            .query
            .get("worker_pool_id")
            .map(|_| query_i64(&req.query, "worker_pool_id", 0))
            .transpose()?,
        status,
        limit,
        offset,
    };
    let builds = state.store.list_builds(&filter).await?;
    let objects = build_objects(state, &builds).await?;
    let visible = state.visible(principal, "build", objects).await?;
    let results: Vec<&crate::store::Build> = builds.iter().filter(|b| visible.contains(&b.id)).collect();
    Ok(json_response(StatusCode::OK, &json!({ "limit": limit, "offset": offset, "results": results })))
}

async fn start_project(
    state: &Arc<AppState>,
    principal: &Principal,
    id: Id,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    // The project and the group names its authorization object needs, at once.
    let (project, groups) = futures_util::future::try_join(state.store.get_project(id), state.store.list_groups())
        .await
        .map_err(ApiError::from)?;
    let project = project.ok_or_else(|| ApiError::not_found(&format!("project {id}")))?;
    let object = authz_object_with(&groups, "project", &serde_json::to_value(&project).unwrap_or_default());
    state.authorize(principal, "start", "project", Some(object)).await?;
    let answers: LaunchAnswers = if req.body.iter().all(u8::is_ascii_whitespace) {
        LaunchAnswers::new()
    } else {
        let body = body_object(&req.body)?;
        reject_unknown(&body, &["answers"], "a project start")?;
        match body.get("answers") {
            None | Some(Value::Null) => LaunchAnswers::new(),
            Some(Value::Object(a)) => a.clone(),
            Some(other) => {
                return Err(ApiError::field("answers", format!("'answers' must be an object, got {}", kind_of(other))))
            }
        }
    };
    let build = state
        .engine
        .start_project(StartRequest {
            project_id: id,
            answers,
            created_by: principal.user().map(|u| u.id),
            pipeline_parent: None,
            project: Some(project),
            started_by: principal.user().cloned(),
        })
        .await?;
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
    let pipeline = pipeline_for(state, principal, id, "view").await?;
    let body = body_object(&req.body)?;
    reject_unknown(&body, &["stage"], "a re-run")?;
    let stage_id = match body.get("stage") {
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64().unwrap_or_default(),
        Some(Value::String(name)) => state
            .store
            .find_stage(name)
            .await?
            .map(|s| s.id)
            .ok_or_else(|| ApiError::field("stage", format!("'stage': no stage is named '{name}'")))?,
        None => {
            return Err(ApiError::field("stage", "'stage' is required: the id or name of the stage to re-run from"))
        }
        Some(other) => {
            return Err(ApiError::field("stage", format!("'stage' must be a stage id or name, got {}", kind_of(other))))
        }
    };
    let started = rerun_authorized(state, principal, &pipeline, run, stage_id).await?;
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
            state.authorize(principal, "list", kind.as_str(), None).await?;
            let all = list_values(state, kind).await?;
            // Filtered after visibility: a query must not probe hidden fields.
            let visible = only_visible(state, principal, kind, all).await?;
            let visible = filter_by_query(visible, &req.query, kind)?;
            let limit = (query_i64(&req.query, "limit", PAGE as i64)?.clamp(1, MAX_PAGE as i64)) as usize;
            let offset = query_i64(&req.query, "offset", 0)?.max(0) as usize;
            let count = visible.len();
            let page: Vec<Value> = visible.into_iter().skip(offset).take(limit).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "count": count, "limit": limit, "offset": offset, "results": page }),
            ))
        }
        "get" => {
            let value = get_value(state, kind, id).await?;
            let object = authz_object(state, kind.as_str(), value.clone()).await?;
            let allowed = state.authorize(principal, "view", kind.as_str(), Some(object)).await;
            match allowed {
                Ok(()) => Ok(json_response(StatusCode::OK, &value)),
                Err(e)
                    if kind == ObjectKind::User && principal.user().is_some() && e.status == StatusCode::FORBIDDEN =>
                {
                    Ok(json_response(StatusCode::OK, &user_summary(&value)))
                }
                Err(e) => Err(e),
            }
        }
        "create" => {
            principal.require()?;
            state.authorize(principal, "create", kind.as_str(), None).await?;
            let body = body_object(&req.body)?;
            let deprecated = deprecated_forms(&body);
            let created = create_object(state, principal, req.client, kind, body).await?;
            Ok(with_deprecations(
                json_response(StatusCode::CREATED, &get_value(state, kind, created).await?),
                &deprecated,
            ))
        }
        "update" => {
            get_value(state, kind, id).await?;
            let body = body_object(&req.body)?;
            let deprecated = deprecated_forms(&body);
            update_object(state, principal, req.client, kind, id, body).await?;
            Ok(with_deprecations(json_response(StatusCode::OK, &get_value(state, kind, id).await?), &deprecated))
        }
        "delete" => {
            delete_object(state, principal, req.client, kind, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::not_found("route")),
    }
}
