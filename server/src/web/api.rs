//! The JSON REST API under `/api/v1`: every object kind (list with
//! pagination and filters, get, create, update, delete), starting projects,
//! stopping builds, build output and its live SSE stream, login and tokens.
//! Every action goes through the authorization chain; errors are JSON naming
//! the field or the reason; nothing is half-saved (the store's transactions).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::auth::{self, Principal};
use super::error::ApiError;
use super::routes;
use super::AppState;
use crate::engine::{LaunchAnswers, StartRequest};
use crate::store::{
    AuditObject, BuildFilter, BuildStatus, Id, NewUser, Organization, Pipeline, Project, ServiceLogin, Snippet, SshKey,
    Stage, User, VariableSet, WorkerPool,
};

/// Largest request body accepted.
pub const MAX_BODY: u64 = 1024 * 1024;
/// Page size when none is asked for, and the largest allowed.
const PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// A request as the dispatcher sees it.
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The client's address, when known.
    pub client: Option<std::net::IpAddr>,
}

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
        "openapi" => Ok(json_response(StatusCode::OK, &routes::openapi())),
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
            let current = get_value(&state, "worker_pool", id).await?;
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
            let after = get_value(&state, "worker_pool", id).await?;
            let object = AuditObject::new("worker_pool", Some(id), super::ui::object_name("worker_pool", &after));
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
            crud(&state, &principal, kind, action, id, &req).await
        }
    }
}

// ------------------------------------------------------------ request helpers

fn query_i64(query: &HashMap<String, String>, name: &str, default: i64) -> Result<i64, ApiError> {
    match query.get(name) {
        Some(v) => v.parse().map_err(|_| ApiError::field(name, format!("query parameter '{name}' must be a number"))),
        None => Ok(default),
    }
}

/// The body as a JSON object, or a 400 saying what is wrong with it.
pub fn body_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("the request body is empty: send a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad(format!("expected a JSON object, got {}", kind_of(&other)))),
        Err(e) => Err(ApiError::bad(format!("malformed JSON: {e}"))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn reject_unknown(body: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    if let Some(key) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::field(
            key,
            format!("unknown field '{key}' for {what} (allowed: {})", allowed.join(", ")),
        ));
    }
    Ok(())
}

/// Deserializes `value` into `T`, naming the field at fault.
fn typed<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ApiError::field(&field, format!("field '{field}' of {what}: {}", e.inner()))
    })
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

/// Records a failed login: the username tried and the client's address.
pub(crate) async fn audit_failed_login(
    state: &Arc<AppState>,
    username: &str,
    client: Option<std::net::IpAddr>,
    reason: &str,
) {
    let actor = super::audit::actor(&Principal::Anonymous, client);
    let object = AuditObject::new("user", None, username);
    state.audit(&actor, "login_failed", &object, json!({ "username": username, "reason": reason })).await;
}

/// A build as an audit record names it: its id and its project's name.
pub(crate) async fn build_audit_object(state: &Arc<AppState>, build: &crate::store::Build) -> AuditObject {
    let project = match build.project_id {
        Some(pid) => state.store.get_project(pid).await.ok().flatten().map(|p| p.name).unwrap_or_default(),
        None => String::new(),
    };
    AuditObject::new("build", Some(build.id), project)
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

pub(crate) async fn build_object(state: &Arc<AppState>, id: Id) -> Result<(crate::store::Build, Value), ApiError> {
    let build = state.store.get_build(id).await?.ok_or_else(|| ApiError::not_found(&format!("build {id}")))?;
    let project = match build.project_id {
        Some(pid) => match state.store.get_project(pid).await? {
            Some(p) => authz_object(state, "project", serde_json::to_value(&p).unwrap_or_default()).await?,
            None => json!({}),
        },
        None => json!({}),
    };
    let object = build_authz_object(&build, project);
    Ok((build, object))
}

/// [`build_object`] for a page of builds: one look at the groups and at each
/// project, however many builds the page shows.
pub(crate) async fn build_objects(
    state: &Arc<AppState>,
    builds: &[crate::store::Build],
) -> Result<Vec<Value>, ApiError> {
    let groups = state.store.list_groups().await?;
    let mut projects: std::collections::HashMap<Id, Value> = std::collections::HashMap::new();
    let mut objects = Vec::with_capacity(builds.len());
    for b in builds {
        let project = match b.project_id {
            Some(pid) => match projects.get(&pid) {
                Some(object) => object.clone(),
                None => {
                    let object = match state.store.get_project(pid).await? {
                        Some(p) => authz_object_with(&groups, "project", &serde_json::to_value(&p).unwrap_or_default()),
                        None => json!({}),
                    };
                    projects.insert(pid, object.clone());
                    object
                }
            },
            None => json!({}),
        };
        objects.push(build_authz_object(b, project));
    }
    Ok(objects)
}

/// What the authorization plugins see of a build: its project's owners and
/// launchers, and who started it.
fn build_authz_object(build: &crate::store::Build, mut project: Value) -> Value {
    project["id"] = json!(build.id);
    project["project_id"] = json!(build.project_id);
    project["build_created_by"] = json!(build.created_by);
    project
}

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
    let project = state.store.get_project(id).await?.ok_or_else(|| ApiError::not_found(&format!("project {id}")))?;
    let object = authz_object(state, "project", serde_json::to_value(&project).unwrap_or_default()).await?;
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
        })
        .await?;
    Ok(json_response(StatusCode::CREATED, &build))
}

/// A pipeline, after asking whether the principal may `action` it.
pub(crate) async fn pipeline_for(
    state: &Arc<AppState>,
    principal: &Principal,
    id: Id,
    action: &str,
) -> Result<Pipeline, ApiError> {
    let pipeline = state.store.get_pipeline(id).await?.ok_or_else(|| ApiError::not_found(&format!("pipeline {id}")))?;
    let object = authz_object(state, "pipeline", serde_json::to_value(&pipeline).unwrap_or_default()).await?;
    state.authorize(principal, action, "pipeline", Some(object)).await?;
    Ok(pipeline)
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

/// Re-runs `run` of `pipeline` (which the principal may view) from
/// `stage_id`, once the principal may start every project of the stage.
pub(crate) async fn rerun_authorized(
    state: &Arc<AppState>,
    principal: &Principal,
    pipeline: &Pipeline,
    run: Id,
    stage_id: Id,
) -> Result<Vec<String>, ApiError> {
    if !pipeline.stage_ids.contains(&stage_id) {
        return Err(ApiError::field(
            "stage",
            format!("'stage': stage {stage_id} is not a stage of pipeline {}", pipeline.name),
        ));
    }
    for project in state.store.projects_in_stage(pipeline.id, stage_id).await? {
        let object = authz_object(state, "project", serde_json::to_value(&project).unwrap_or_default()).await?;
        state.authorize(principal, "start", "project", Some(object)).await?;
    }
    let user = principal.require()?;
    Ok(state.engine.rerun_stage(pipeline, run, stage_id, user.id).await?)
}

// ------------------------------------------------------------ objects

/// Fields clients may not set: ids, authorship and pointers the server keeps.
fn read_only(kind: &str) -> &'static [&'static str] {
    match kind {
        "project" | "organization" => {
            &["id", "created_by", "last_build_id", "active_build_id", "last_successful_build_id"]
        }
        "pipeline" => &["id", "created_by", "last_completed_date", "last_completed_by"],
        "worker_pool" => &["id", "created_by", "last_autoscaled", "autoscaling_status", "autoscaling_message"],
        "user" => &["id", "created_at", "last_login", "auth_source"],
        "group" => &["id", "created_at"],
        _ => &["id", "created_by"],
    }
}

/// The object as authorization plugins see it: id, creator, and group names.
pub(crate) async fn authz_object(state: &Arc<AppState>, kind: &str, value: Value) -> Result<Value, ApiError> {
    let groups = state.store.list_groups().await?;
    Ok(authz_object_with(&groups, kind, &value))
}

/// [`authz_object`] with the groups already looked up (listings do it once).
pub(crate) fn authz_object_with(groups: &[crate::store::Group], kind: &str, value: &Value) -> Value {
    let names = |ids: &Value| -> Value {
        let ids: Vec<i64> = ids.as_array().map(|a| a.iter().filter_map(Value::as_i64).collect()).unwrap_or_default();
        json!(groups.iter().filter(|g| ids.contains(&g.id)).map(|g| g.name.clone()).collect::<Vec<_>>())
    };
    let created_by = if kind == "user" { value["id"].clone() } else { value["created_by"].clone() };
    json!({
        "id": value["id"],
        "created_by": created_by,
        "owner_groups": names(&value["owner_group_ids"]),
        "launch_groups": names(&value["launch_group_ids"]),
        "shared": value["shared"].as_bool().unwrap_or(false),
    })
}

/// The fields of `kind` that name other objects, and the kind each names:
/// saving one asks the authorization chain whether the caller may `use` it.
pub(crate) fn references(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "project" => &[
            ("worker_pool_id", "worker_pool"),
            ("scm_login_id", "service_login"),
            ("ssh_key_ids", "ssh_key"),
            ("variable_set_ids", "variable_set"),
            ("pipeline_id", "pipeline"),
            ("stage_id", "stage"),
        ],
        "pipeline" => &[("stage_ids", "stage"), ("variable_set_ids", "variable_set")],
        "stage" | "worker_pool" => &[("variable_set_ids", "variable_set")],
        "organization" => &[
            ("worker_pool_id", "worker_pool"),
            ("default_worker_pool_id", "worker_pool"),
            ("scm_login_id", "service_login"),
            ("auto_attach_ssh_key_ids", "ssh_key"),
        ],
        _ => &[],
    }
}

/// The ids a reference field holds: one id, a list, or none.
pub(crate) fn referenced_ids(value: &Value) -> Vec<Id> {
    match value {
        Value::Array(items) => items.iter().filter_map(Value::as_i64).collect(),
        other => other.as_i64().into_iter().collect(),
    }
}

/// Asks whether the principal may `use` every object that `after` names and
/// `before` (the stored object, on update) did not: a reference already
/// there is not asked again, so existing objects keep working. A refusal is
/// a 403 naming the field and the object.
async fn check_uses(
    state: &Arc<AppState>,
    principal: &Principal,
    kind: &str,
    before: Option<&Value>,
    after: &Value,
) -> Result<(), ApiError> {
    for (field, target) in references(kind) {
        let old = before.map(|b| referenced_ids(&b[*field])).unwrap_or_default();
        for id in referenced_ids(&after[*field]) {
            if old.contains(&id) {
                continue;
            }
            // A missing object is the store's to refuse, naming the field.
            let value = match get_value(state, target, id).await {
                Ok(v) => v,
                Err(e) if e.status == StatusCode::NOT_FOUND => continue,
                Err(e) => return Err(e),
            };
            let mut object = authz_object(state, target, value.clone()).await?;
            object["name"] = value["name"].clone();
            object["field"] = json!(field);
            if let Err(e) = state.authorize(principal, "use", target, Some(object)).await {
                if e.status != StatusCode::FORBIDDEN {
                    return Err(e);
                }
                let what = target.replace('_', " ");
                let name = value["name"].as_str().unwrap_or_default();
                return Err(ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: format!(
                        "field '{field}': you may not use the {what} '{name}' (id {id}), which is neither yours nor \
                         shared: {}",
                        e.message
                    ),
                    field: Some(field.to_string()),
                });
            }
        }
    }
    Ok(())
}

/// One store operation on the object kind named `$kind`, through the
/// store's generic record functions.
macro_rules! dispatch_kind {
    ($kind:expr, $store:expr, $op:ident $(, $arg:expr)*) => {
        match $kind {
            "project" => dispatch_kind!(@one Project, $store, $op $(, $arg)*),
            "pipeline" => dispatch_kind!(@one Pipeline, $store, $op $(, $arg)*),
            "stage" => dispatch_kind!(@one Stage, $store, $op $(, $arg)*),
            "worker_pool" => dispatch_kind!(@one WorkerPool, $store, $op $(, $arg)*),
            "variable_set" => dispatch_kind!(@one VariableSet, $store, $op $(, $arg)*),
            "snippet" => dispatch_kind!(@one Snippet, $store, $op $(, $arg)*),
            "ssh_key" => dispatch_kind!(@one SshKey, $store, $op $(, $arg)*),
            "service_login" => dispatch_kind!(@one ServiceLogin, $store, $op $(, $arg)*),
            "organization" => dispatch_kind!(@one Organization, $store, $op $(, $arg)*),
            other => Err(ApiError::not_found(&format!("object kind {other}"))),
        }
    };
    (@one $ty:ty, $store:expr, list) => {
        $store.list_records::<$ty>().await.map_err(ApiError::from).map(|v| {
            v.into_iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect::<Vec<Value>>()
        })
    };
    (@one $ty:ty, $store:expr, get, $id:expr) => {
        $store
            .get_record::<$ty>($id)
            .await
            .map_err(ApiError::from)
            .map(|o| o.map(|o| serde_json::to_value(o).unwrap_or_default()))
    };
    (@one $ty:ty, $store:expr, create, $value:expr, $what:expr) => {{
        let obj: $ty = typed($value, $what)?;
        $store.create_record(&obj).await.map_err(ApiError::from)
    }};
    (@one $ty:ty, $store:expr, update, $value:expr, $what:expr) => {{
        let obj: $ty = typed($value, $what)?;
        $store.update_record(&obj).await.map_err(ApiError::from)
    }};
    (@one $ty:ty, $store:expr, delete, $id:expr) => {
        $store.delete_record::<$ty>($id).await.map_err(ApiError::from)
    };
    (@one $ty:ty, $store:expr, defaults) => {
        Ok(serde_json::to_value(<$ty>::default()).unwrap_or_default())
    };
}

async fn list_values(state: &Arc<AppState>, kind: &str) -> Result<Vec<Value>, ApiError> {
    match kind {
        "user" => Ok(state
            .store
            .list_users()
            .await?
            .into_iter()
            .map(|u| serde_json::to_value(u).unwrap_or_default())
            .collect()),
        "group" => Ok(state
            .store
            .list_groups()
            .await?
            .into_iter()
            .map(|g| serde_json::to_value(g).unwrap_or_default())
            .collect()),
        _ => dispatch_kind!(kind, state.store, list),
    }
}

pub(crate) async fn get_value(state: &Arc<AppState>, kind: &str, id: Id) -> Result<Value, ApiError> {
    let found = match kind {
        "user" => state.store.get_user(id).await?.map(|u| serde_json::to_value(u).unwrap_or_default()),
        "group" => state
            .store
            .list_groups()
            .await?
            .into_iter()
            .find(|g| g.id == id)
            .map(|g| serde_json::to_value(g).unwrap_or_default()),
        _ => dispatch_kind!(kind, state.store, get, id)?,
    };
    found.ok_or_else(|| ApiError::not_found(&format!("{} {id}", kind.replace('_', " "))))
}

async fn crud(
    state: &Arc<AppState>,
    principal: &Principal,
    kind: &str,
    action: &str,
    id: Id,
    req: &ApiRequest,
) -> Result<Response, ApiError> {
    match action {
        "list" => {
            state.authorize(principal, "list", kind, None).await?;
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
            let allowed =
                state.authorize(principal, "view", kind, Some(authz_object(state, kind, value.clone()).await?)).await;
            match allowed {
                Ok(()) => Ok(json_response(StatusCode::OK, &value)),
                Err(e) if kind == "user" && principal.user().is_some() && e.status == StatusCode::FORBIDDEN => {
                    Ok(json_response(StatusCode::OK, &user_summary(&value)))
                }
                Err(e) => Err(e),
            }
        }
        "create" => {
            principal.require()?;
            state.authorize(principal, "create", kind, None).await?;
            let body = body_object(&req.body)?;
            let created = create_object(state, principal, req.client, kind, body).await?;
            Ok(json_response(StatusCode::CREATED, &get_value(state, kind, created).await?))
        }
        "update" => {
            get_value(state, kind, id).await?;
            let body = body_object(&req.body)?;
            update_object(state, principal, req.client, kind, id, body).await?;
            Ok(json_response(StatusCode::OK, &get_value(state, kind, id).await?))
        }
        "delete" => {
            delete_object(state, principal, req.client, kind, id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::not_found("route")),
    }
}

/// The objects among `values` the principal may see (the authorization chain's `filter_list`).
/// Users are the exception: a logged-in user sees every other user, but by
/// username only (with the id that other objects point at).
pub(crate) async fn only_visible(
    state: &Arc<AppState>,
    principal: &Principal,
    kind: &str,
    values: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let groups = state.store.list_groups().await?;
    let objects = values.iter().map(|v| authz_object_with(&groups, kind, v)).collect();
    let visible = state.visible(principal, kind, objects).await?;
    let shown = |v: &Value| v["id"].as_i64().is_some_and(|i| visible.contains(&i));
    if kind == "user" && principal.user().is_some() {
        return Ok(values.into_iter().map(|v| if shown(&v) { v } else { user_summary(&v) }).collect());
    }
    Ok(values.into_iter().filter(shown).collect())
}

/// What others see of a user: the username and the id, nothing else.
pub(crate) fn user_summary(user: &Value) -> Value {
    json!({ "id": user["id"], "username": user["username"] })
}

/// Every object of `kind` the principal may see, as JSON (after `list` is authorized).
pub(crate) async fn list_visible(
    state: &Arc<AppState>,
    principal: &Principal,
    kind: &str,
) -> Result<Vec<Value>, ApiError> {
    state.authorize(principal, "list", kind, None).await?;
    let all = list_values(state, kind).await?;
    only_visible(state, principal, kind, all).await
}

/// Creates an object from JSON input, as `POST /api/v1/<kind>s` does; the
/// caller has authorized `create` already.
pub(crate) async fn create_object(
    state: &Arc<AppState>,
    principal: &Principal,
    client: Option<std::net::IpAddr>,
    kind: &str,
    body: Map<String, Value>,
) -> Result<Id, ApiError> {
    let user = principal.require()?.clone();
    let what = kind.replace('_', " ");
    let asked: Vec<String> = body.keys().cloned().collect();
    let id = match kind {
        "user" => create_user(state, body).await?,
        "group" => {
            reject_unknown(&body, &["name"], "group")?;
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field("name", "'name' (a string) is required"))?;
            state.store.create_group(name).await?
        }
        _ => {
            let mut value = dispatch_kind!(kind, state.store, defaults)?;
            merge_input(&mut value, body, kind, &what)?;
            value["created_by"] = json!(user.id);
            check_uses(state, principal, kind, None, &value).await?;
            check_autoscaler(state, kind, &value)?;
            dispatch_kind!(kind, state.store, create, value, &what)?
        }
    };
    // Shared by the API and the UI: every object created is recorded here.
    let after = get_value(state, kind, id).await?;
    let object = AuditObject::new(kind, Some(id), super::ui::object_name(kind, &after));
    let details = super::audit::change_details(None, &after, &asked);
    state.audit(&super::audit::actor(principal, client), "create", &object, details).await;
    Ok(id)
}

/// Changes fields of an object, as `PATCH /api/v1/<kind>s/{id}` does, `edit` authorization included.
pub(crate) async fn update_object(
    state: &Arc<AppState>,
    principal: &Principal,
    client: Option<std::net::IpAddr>,
    kind: &str,
    id: Id,
    body: Map<String, Value>,
) -> Result<(), ApiError> {
    let what = kind.replace('_', " ");
    let current = get_value(state, kind, id).await?;
    let mut object = authz_object(state, kind, current.clone()).await?;
    let asked: Vec<String> = body.keys().cloned().collect();
    let mut changes = asked.clone();
    if body.contains_key("group_ids") {
        // Authorization plugins speak of group membership as `groups`.
        changes.push("groups".into());
    }
    object["changes"] = json!(changes);
    state.authorize(principal, "edit", kind, Some(object)).await?;
    match kind {
        "user" => update_user(state, principal, current.clone(), body).await?,
        "group" => {
            reject_unknown(&body, &["name"], "group")?;
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field("name", "'name' (a string) is required"))?;
            state.store.rename_group(id, name).await?;
        }
        _ => {
            let mut value = current.clone();
            merge_input(&mut value, body, kind, &what)?;
            check_uses(state, principal, kind, Some(&current), &value).await?;
            check_autoscaler(state, kind, &value)?;
            dispatch_kind!(kind, state.store, update, value, &what)?;
        }
    }
    // Shared by the API and the UI: every object changed is recorded here.
    let after = get_value(state, kind, id).await?;
    let object = AuditObject::new(kind, Some(id), super::ui::object_name(kind, &after));
    let details = super::audit::change_details(Some(&current), &after, &asked);
    state.audit(&super::audit::actor(principal, client), "update", &object, details).await;
    Ok(())
}

/// Deletes an object, as `DELETE /api/v1/<kind>s/{id}` does, `delete` authorization included.
pub(crate) async fn delete_object(
    state: &Arc<AppState>,
    principal: &Principal,
    client: Option<std::net::IpAddr>,
    kind: &str,
    id: Id,
) -> Result<(), ApiError> {
    let current = get_value(state, kind, id).await?;
    state.authorize(principal, "delete", kind, Some(authz_object(state, kind, current.clone()).await?)).await?;
    let deleted = match kind {
        "user" => state.store.delete_user(id).await?,
        "group" => state.store.delete_group(id).await?,
        _ => dispatch_kind!(kind, state.store, delete, id)?,
    };
    if !deleted {
        return Err(ApiError::not_found(&format!("{} {id}", kind.replace('_', " "))));
    }
    let object = AuditObject::new(kind, Some(id), super::ui::object_name(kind, &current));
    state.audit(&super::audit::actor(principal, client), "delete", &object, json!({})).await;
    Ok(())
}

/// A pool's `autoscaler` must name an entry of the `[plugins.autoscalers]`
/// settings section: the API picks an autoscaler, it never defines one (its
/// parameters, commands included, come only from the settings files).
fn check_autoscaler(state: &Arc<AppState>, kind: &str, value: &Value) -> Result<(), ApiError> {
    let name = value.get("autoscaler").and_then(Value::as_str).unwrap_or("");
    if kind != "worker_pool" || name.is_empty() {
        return Ok(());
    }
    let section = crate::settings::PluginSection::Autoscalers;
    if state.registry.get(section, name).is_none() {
        let known = state.registry.names(section);
        let known = if known.is_empty() { "none is configured".to_string() } else { known.join(", ") };
        return Err(ApiError::field(
            "autoscaler",
            format!(
                "'autoscaler': '{name}' is not an autoscaler in the settings' [plugins.autoscalers] section ({known})"
            ),
        ));
    }
    Ok(())
}

/// Overlays client input on an object, refusing unknown and read-only fields.
fn merge_input(value: &mut Value, body: Map<String, Value>, kind: &str, what: &str) -> Result<(), ApiError> {
    let readonly = read_only(kind);
    let object = value.as_object_mut().expect("objects serialize as JSON objects");
    let allowed: Vec<String> = object.keys().filter(|k| !readonly.contains(&k.as_str())).cloned().collect();
    for (key, v) in body {
        if readonly.contains(&key.as_str()) {
            return Err(ApiError::field(&key, format!("field '{key}' of {what} is read-only")));
        }
        if !object.contains_key(&key) {
            return Err(ApiError::field(
                &key,
                format!("unknown field '{key}' for {what} (allowed: {})", allowed.join(", ")),
            ));
        }
        object.insert(key, v);
    }
    Ok(())
}

/// `?field=value` filters on top-level fields, compared as text.
fn filter_by_query(all: Vec<Value>, query: &HashMap<String, String>, kind: &str) -> Result<Vec<Value>, ApiError> {
    let filters: Vec<(&String, &String)> =
        query.iter().filter(|(k, _)| !["limit", "offset"].contains(&k.as_str())).collect();
    // A field no listed row has is unknown (rows shown in part lack some).
    if let Some((key, _)) =
        filters.iter().find(|(k, _)| !all.is_empty() && all.iter().all(|f| f.get(k.as_str()).is_none()))
    {
        return Err(ApiError::field(key, format!("unknown filter '{key}' for {}", kind.replace('_', " "))));
    }
    Ok(all
        .into_iter()
        .filter(|v| {
            filters.iter().all(|(k, want)| match v.get(k.as_str()) {
                None => false,
                Some(Value::String(s)) => s == *want,
                Some(Value::Null) => want.is_empty() || *want == "null",
                Some(other) => format!("{other}") == **want,
            })
        })
        .collect())
}

const USER_FIELDS: &[&str] = &[
    "username",
    "password",
    "current_password",
    "email",
    "first_name",
    "last_name",
    "is_superuser",
    "is_active",
    "group_ids",
];

async fn create_user(state: &Arc<AppState>, body: Map<String, Value>) -> Result<Id, ApiError> {
    reject_unknown(&body, USER_FIELDS, "user")?;
    #[derive(serde::Deserialize)]
    struct Input {
        username: String,
        password: String,
        #[serde(default)]
        email: String,
        #[serde(default)]
        first_name: String,
        #[serde(default)]
        last_name: String,
        #[serde(default)]
        is_superuser: bool,
        #[serde(default)]
        group_ids: Vec<Id>,
    }
    let input: Input = typed(Value::Object(body), "user")?;
    let user = NewUser {
        username: input.username,
        password: input.password,
        email: input.email,
        first_name: input.first_name,
        last_name: input.last_name,
        is_superuser: input.is_superuser,
    };
    Ok(state.store.create_user_in_groups(&user, &input.group_ids).await?)
}

async fn update_user(
    state: &Arc<AppState>,
    principal: &Principal,
    current: Value,
    mut body: Map<String, Value>,
) -> Result<(), ApiError> {
    reject_unknown(&body, USER_FIELDS, "user")?;
    let mut string_field = |name: &str| match body.remove(name) {
        Some(Value::String(p)) => Ok(Some(p)),
        Some(Value::Null) | None => Ok(None),
        Some(other) => Err(ApiError::field(name, format!("'{name}' must be a string, got {}", kind_of(&other)))),
    };
    let password = string_field("password")?;
    let current_password = string_field("current_password")?;
    let mut value = current;
    for (k, v) in body {
        value[k] = v;
    }
    let user: User = typed(value, "user")?;
    if let Some(p) = &password {
        // An account another source created has its password checked there.
        if user.auth_source != crate::settings::LOCAL_SOURCE {
            return Err(ApiError::field(
                "password",
                format!(
                    "this account's password is checked by the authentication source '{}', not by Vespene",
                    user.auth_source
                ),
            ));
        }
        // Checked first so a weak password leaves the other fields unsaved too.
        crate::store::check_password(p).map_err(crate::store::StoreError::from)?;
        let caller = principal.require()?;
        if caller.id == user.id {
            // One's own password: prove the current one, so a stolen session
            // or token cannot lock its owner out.
            let Some(given) = current_password.as_deref() else {
                return Err(ApiError::field(
                    "current_password",
                    "changing your own password needs 'current_password' (your current password)",
                ));
            };
            if !state.store.password_matches(user.id, given).await? {
                return Err(ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: "'current_password' is not your current password".into(),
                    field: Some("current_password".into()),
                });
            }
        } else if !caller.is_superuser {
            // Only a superuser resets someone else's password (without theirs).
            return Err(ApiError::forbidden("only a superuser may set another user's password"));
        }
    }
    state.store.update_user(&user).await?;
    if let Some(p) = password {
        // Every other way in ends: the user's other sessions and their API
        // tokens (all but the one making the change, when it is theirs).
        let (keep_session, keep_token) = match principal {
            Principal::Session { user: u, sid } if u.id == user.id => (Some(sid.as_str()), None),
            Principal::Token { user: u, token } if u.id == user.id => (None, Some(token.as_str())),
            _ => (None, None),
        };
        state.store.set_password(user.id, &p).await?;
        state.store.end_logins(user.id, keep_session, keep_token).await?;
    }
    Ok(())
}
