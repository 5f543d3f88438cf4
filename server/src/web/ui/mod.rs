//! The web UI: server-rendered pages from minijinja templates built into the
//! binary (no front-end build step), autoescaped, plus one small
//! dependency-free script for the live parts (output tail over SSE, the
//! self-refreshing dashboard and pipeline map, tabs, delete confirmations).
//!
//! Every page needs a login (anonymous requests are sent to `/login`); every
//! form is a POST carrying the session's CSRF token; every action asks the
//! same authorization chain as the REST API, and controls are shown only when
//! it would allow them.

mod crud;
mod files;
mod forms;
mod pages;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use minijinja::Environment;
use serde::Serialize;
use serde_json::{json, Value};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Reply};

use super::auth;
use super::error::ApiError;
use super::AppState;
use crate::service::accounts::LoginOutcome;
use crate::service::model::{ObjectKind, User};
use crate::service::Principal;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../../templates/base.html")),
    ("plugins.html", include_str!("../../../templates/plugins.html")),
    ("login.html", include_str!("../../../templates/login.html")),
    ("error.html", include_str!("../../../templates/error.html")),
    ("list.html", include_str!("../../../templates/list.html")),
    ("detail.html", include_str!("../../../templates/detail.html")),
    ("form.html", include_str!("../../../templates/form.html")),
    ("projects.html", include_str!("../../../templates/projects.html")),
    ("start_prompt.html", include_str!("../../../templates/start_prompt.html")),
    ("builds.html", include_str!("../../../templates/builds.html")),
    ("build.html", include_str!("../../../templates/build.html")),
    ("dashboard.html", include_str!("../../../templates/dashboard.html")),
    ("dashboard_fragment.html", include_str!("../../../templates/dashboard_fragment.html")),
    ("pipeline_map.html", include_str!("../../../templates/pipeline_map.html")),
    ("pipeline_map_fragment.html", include_str!("../../../templates/pipeline_map_fragment.html")),
    ("files.html", include_str!("../../../templates/files.html")),
    ("macros.html", include_str!("../../../templates/macros.html")),
    ("audit.html", include_str!("../../../templates/audit.html")),
];

const SCRIPT: &str = include_str!("../../../templates/static/vespene.js");
const STYLE: &str = include_str!("../../../templates/static/vespene.css");

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source).unwrap_or_else(|e| panic!("built-in template {name}: {e}"));
        }
        env
    })
}

/// Renders a built-in page.
pub fn render(name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
    templates().get_template(name)?.render(context)
}

/// Largest form body accepted.
const MAX_FORM: u64 = 1024 * 1024;

/// Whether a path belongs to the UI (so the API filter never sees it).
fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/login" || path == "/logout" || path == "/ui" || path.starts_with("/ui/")
}

/// The UI's routes: `/`, `/login`, `/logout` and everything under `/ui`.
pub fn routes(state: Arc<AppState>) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path::full()
        .and_then(|path: warp::path::FullPath| async move {
            if is_ui_path(path.as_str()) {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(super::limits::client_addr())
        .and(super::limits::body(MAX_FORM, state.body_idle()))
        .and_then(move |method, path: warp::path::FullPath, query: String, headers, client, body| {
            let state = state.clone();
            async move {
                let response = match body {
                    Ok(body) => {
                        let req = UiRequest {
                            method,
                            path: path.as_str().to_string(),
                            query: parse_pairs(query.as_bytes()),
                            headers,
                            body,
                            client,
                        };
                        handle(state, req).await
                    }
                    Err(super::limits::BodyError::TooLarge(_)) => super::closing(error_page(
                        None,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("The form is too large (the limit is {MAX_FORM} bytes)."),
                    )),
                    Err(e) => {
                        let e = e.api_error();
                        super::closing(error_page(None, e.status, &e.message))
                    }
                };
                Ok::<_, warp::Rejection>(secure(response))
            }
        })
}

/// Security headers on every UI response: no inline script or style runs, no framing.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.entry("content-security-policy").or_insert(HeaderValue::from_static(
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key("cache-control") {
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
    }
    response
}

/// One request to the UI.
pub(crate) struct UiRequest {
    pub method: Method,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub client: Option<std::net::IpAddr>,
}

impl UiRequest {
    /// The first query value for `name`.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `a=1&b=2` pairs, decoded; repeated keys kept in order.
pub(crate) fn parse_pairs(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A submitted form.
#[derive(Debug, Default)]
pub(crate) struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// The logged-in user of a page.
pub(crate) struct Ctx {
    pub state: Arc<AppState>,
    pub principal: Principal,
    pub user: User,
    pub csrf: String,
    /// The path of the page, for the navigation's current marker.
    pub path: String,
    /// The client's address (for the audit log).
    pub client: Option<std::net::IpAddr>,
}

impl Ctx {
    /// May the user do `action` on this object (JSON as the store serializes it)?
    pub async fn can(&self, action: &str, kind: &str, object: Option<&Value>) -> bool {
        self.require(action, kind, object).await.is_ok()
    }

    /// Like [`Ctx::can`], as an error for the handlers.
    pub async fn require(&self, action: &str, kind: &str, object: Option<&Value>) -> Result<(), ApiError> {
        let service = &self.state.service;
        let allowed = match object {
            Some(v) => service.authorize_on(&self.principal, action, kind, v, &[]).await,
            None => service.authorize(&self.principal, action, kind, None).await,
        };
        Ok(allowed?)
    }

    /// A page: the template with the navigation, user and CSRF token added.
    pub fn page(&self, template: &str, mut context: Value) -> Response {
        self.page_with_status(template, StatusCode::OK, std::mem::take(&mut context))
    }

    pub fn page_with_status(&self, template: &str, status: StatusCode, mut context: Value) -> Response {
        if let Value::Object(map) = &mut context {
            map.insert(
                "me".into(),
                json!({ "username": self.user.username, "id": self.user.id, "is_superuser": self.user.is_superuser }),
            );
            map.insert("csrf_token".into(), json!(self.csrf));
            map.insert("nav".into(), nav(&self.path, self.user.is_superuser));
        }
        html(template, status, context)
    }
}

/// The navigation bar, in the original's order (plus dashboard and plugins).
fn nav(path: &str, superuser: bool) -> Value {
    let mut items = vec![
        ("/ui/dashboard", "Dashboard"),
        ("/ui/projects", "Projects"),
        ("/ui/builds", "Builds"),
        ("/ui/pipelines", "Pipelines"),
        ("/ui/stages", "Stages"),
        ("/ui/snippets", "Snippets"),
        ("/ui/variable_sets", "Variables"),
        ("/ui/service_logins", "Logins"),
        ("/ui/ssh_keys", "SSH Keys"),
        ("/ui/organizations", "Organizations"),
        ("/ui/worker_pools", "Worker Pools"),
        ("/ui/users", "Users"),
        ("/ui/groups", "Groups"),
        ("/ui/plugins", "Plugins"),
    ];
    if superuser {
        items.push(("/ui/audit", "Audit"));
    }
    Value::Array(
        items
            .iter()
            .map(|(href, label)| {
                let current = path == *href || path.starts_with(&format!("{href}/"));
                json!({ "href": href, "label": label, "current": current })
            })
            .collect(),
    )
}

fn html(template: &str, status: StatusCode, context: Value) -> Response {
    match render(template, context) {
        Ok(body) => warp::reply::with_status(warp::reply::html(body), status).into_response(),
        Err(e) => {
            let e = ApiError::internal(format_args!("template {template}: {e}"));
            warp::reply::with_status(warp::reply::html(e.message), StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
    }
}

/// 303 to `to`.
pub(crate) fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut().insert("location", HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")));
    r
}

/// An error page (with the navigation when someone is logged in).
pub(crate) fn error_page(ctx: Option<&Ctx>, status: StatusCode, message: &str) -> Response {
    let context = json!({ "status": status.as_u16(), "reason": status.canonical_reason(), "message": message });
    match ctx {
        Some(ctx) => ctx.page_with_status("error.html", status, context),
        None => html("error.html", status, context),
    }
}

/// An API error as a page, for someone not logged in.
fn api_error_page_anonymous(e: ApiError) -> Response {
    error_page(None, e.status, &e.message)
}

/// An API error as a page.
pub(crate) fn api_error_page(ctx: &Ctx, e: ApiError) -> Response {
    error_page(Some(ctx), e.status, &e.message)
}

async fn handle(state: Arc<AppState>, req: UiRequest) -> Response {
    let path = req.path.clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    // Pages that need no login.
    match (req.method.clone(), segments.as_slice()) {
        (Method::GET, ["ui", "static", "vespene.js"]) => return asset(SCRIPT, "text/javascript; charset=utf-8"),
        (Method::GET, ["ui", "static", "vespene.css"]) => return asset(STYLE, "text/css; charset=utf-8"),
        (_, ["login"]) => return login(&state, &req).await,
        _ => {}
    }
    let ctx = match session(&state, &req).await {
        Ok(Some(ctx)) => ctx,
        Ok(None) => {
            if matches!(segments.as_slice(), ["logout"]) {
                return redirect("/login");
            }
            if req.method == Method::GET && segments.last() != Some(&"fragment") {
                let next: String = form_urlencoded::byte_serialize(req.path.as_bytes()).collect();
                return redirect(&format!("/login?next={next}"));
            }
            return error_page(None, StatusCode::UNAUTHORIZED, "Log in first.");
        }
        Err(e) => return error_page(None, e.status, &e.message),
    };
    // Every state change carries the CSRF token of the session.
    let form = Form(parse_pairs(&req.body));
    if req.method != Method::GET && req.method != Method::HEAD && form.get("csrf_token") != Some(ctx.csrf.as_str()) {
        return error_page(
            Some(&ctx),
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong: reload the page and try again.",
        );
    }
    match (req.method.clone(), segments.as_slice()) {
        (Method::GET, []) | (Method::GET, ["ui"]) => redirect("/ui/dashboard"),
        (Method::GET, ["logout"]) => ctx.page("login.html", json!({ "logout": true })),
        (Method::POST, ["logout"]) => logout(&ctx).await,
        (Method::GET, ["ui", "plugins"]) => ctx.page(
            "plugins.html",
            json!({
                "plugins": ctx.state.service.plugin_summaries(),
                "interface_version": vespene_plugin_api::INTERFACE_VERSION,
            }),
        ),
        (Method::GET, ["ui", "audit"]) => audit_page(&ctx, &req).await,
        (Method::GET, ["ui", "dashboard"]) => pages::dashboard(&ctx, false).await,
        (Method::GET, ["ui", "dashboard", "fragment"]) => pages::dashboard(&ctx, true).await,
        (Method::GET, ["ui", "projects"]) => pages::projects(&ctx, &req).await,
        (method, ["ui", "projects", id, "start"]) if method == Method::POST => {
            pages::start(&ctx, parse_id(id), &Form::default()).await
        }
        (Method::GET, ["ui", "projects", id, "start_prompt"]) => pages::start_prompt(&ctx, parse_id(id), None).await,
        (Method::POST, ["ui", "projects", id, "start_prompt"]) => pages::start(&ctx, parse_id(id), &form).await,
        (Method::GET, ["ui", "builds"]) => pages::builds(&ctx, &req).await,
        (Method::GET, ["ui", "builds", id]) | (Method::GET, ["ui", "builds", id, "detail"]) => {
            let before = req.query("before").and_then(|s| s.parse::<i64>().ok());
            pages::build(&ctx, parse_id(id), before).await
        }
        (Method::POST, ["ui", "builds", id, "stop"]) => pages::stop(&ctx, parse_id(id), &form).await,
        (Method::POST, ["ui", "builds", id, "delete"]) => pages::delete_build(&ctx, parse_id(id)).await,
        (Method::POST, ["ui", "builds", id, "pin"]) => pages::pin(&ctx, parse_id(id), true).await,
        (Method::POST, ["ui", "builds", id, "unpin"]) => pages::pin(&ctx, parse_id(id), false).await,
        (Method::GET, ["ui", "builds", id, "files", rest @ ..]) => files::browse(&ctx, parse_id(id), rest).await,
        (Method::GET, ["ui", "pipelines", id, "map"]) => pages::pipeline_map(&ctx, parse_id(id), false).await,
        (Method::GET, ["ui", "pipelines", id, "map", "fragment"]) => {
            pages::pipeline_map(&ctx, parse_id(id), true).await
        }
        (Method::POST, ["ui", "pipelines", id, "runs", run, action @ ("approve" | "rerun")]) => {
            pages::pipeline_run_action(&ctx, parse_id(id), parse_id(run), action, &form).await
        }
        (method, ["ui", plural, rest @ ..]) if crud::kind_of(plural).is_some() => {
            let kind = crud::kind_of(plural).expect("checked");
            crud::handle(&ctx, kind, method, rest, &req, &form).await
        }
        _ => error_page(Some(&ctx), StatusCode::NOT_FOUND, &format!("There is no page at {}.", req.path)),
    }
}

/// The audit log page (superusers), with the API's filters; a bad filter is
/// shown above an empty table, naming it.
async fn audit_page(ctx: &Ctx, req: &UiRequest) -> Response {
    if let Err(e) = ctx.principal.require_superuser("only superusers may read the audit log") {
        return api_error_page(ctx, e.into());
    }
    let query: HashMap<String, String> =
        req.query.iter().filter(|(_, v)| !v.trim().is_empty()).map(|(k, v)| (k.clone(), v.clone())).collect();
    let shown = |name: &str| query.get(name).cloned().unwrap_or_default();
    let filters = json!({
        "actor": shown("actor"), "action": shown("action"), "object_kind": shown("object_kind"),
        "object_id": shown("object_id"), "since": shown("since"), "until": shown("until"),
    });
    let (events, next, error) = match super::audit::filter_from(&query) {
        Ok(filter) => match ctx.state.service.audit_page(&ctx.principal, &filter).await {
            Ok((events, next)) => (events, next, None),
            Err(e) => return api_error_page(ctx, e.into()),
        },
        Err(e) => (Vec::new(), None, Some(e.message)),
    };
    let next = next.map(|before| {
        let mut pairs: Vec<(String, String)> =
            query.iter().filter(|(k, _)| *k != "before").map(|(k, v)| (k.clone(), v.clone())).collect();
        pairs.sort();
        pairs.push(("before".into(), before.to_string()));
        form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
    });
    let rows: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "at": e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                "actor": e.actor, "remote_addr": e.remote_addr, "action": e.action,
                "object_kind": e.object_kind, "object_id": e.object_id, "object_name": e.object_name,
                "details": e.details.to_string(),
            })
        })
        .collect();
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    ctx.page_with_status(
        "audit.html",
        status,
        json!({ "events": rows, "filters": filters, "next": next, "error": error }),
    )
}

/// An id from the path; 0 (which matches nothing) when it is not a number.
fn parse_id(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
    r.headers_mut().insert("cache-control", HeaderValue::from_static("max-age=300"));
    r
}

/// The session of the request, if it has a live one.
async fn session(state: &Arc<AppState>, req: &UiRequest) -> Result<Option<Ctx>, ApiError> {
    let Some(sid) = auth::cookie(&req.headers, auth::SESSION_COOKIE) else { return Ok(None) };
    let Some(principal) = state.service.session_principal(&sid).await? else { return Ok(None) };
    let user = principal.require()?.clone();
    let csrf = auth::csrf_token(&sid);
    Ok(Some(Ctx { state: state.clone(), principal, user, csrf, path: req.path.clone(), client: req.client }))
}

/// Where to go after logging in: a local path only.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/dashboard".to_string(),
    }
}

/// The cookie carrying the login form's CSRF token (double submit: the form
/// must send back the value the cookie holds, which a page elsewhere cannot read).
const LOGIN_CSRF_COOKIE: &str = "vespene_login_csrf";

/// The login page, with a fresh CSRF token in the form and its cookie.
fn login_page(state: &AppState, status: StatusCode, mut context: Value) -> Response {
    let token = crate::service::model::random_token();
    context["csrf_token"] = json!(token);
    let mut r = html("login.html", status, context);
    let cookie = format!(
        "{LOGIN_CSRF_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        auth::secure_attribute(state)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert("set-cookie", v);
    }
    r
}

async fn login(state: &Arc<AppState>, req: &UiRequest) -> Response {
    let next = safe_next(req.query("next"));
    if req.method == Method::GET {
        if let Ok(Some(_)) = session(state, req).await {
            return redirect(&next);
        }
        return login_page(state, StatusCode::OK, json!({ "next": next }));
    }
    if req.method != Method::POST {
        return error_page(None, StatusCode::METHOD_NOT_ALLOWED, "Use the login form.");
    }
    let form = Form(parse_pairs(&req.body));
    let expected = auth::cookie(&req.headers, LOGIN_CSRF_COOKIE).unwrap_or_default();
    let sent = form.get("csrf_token").unwrap_or("");
    if expected.is_empty() || !constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
        return error_page(
            None,
            StatusCode::FORBIDDEN,
            "The login form's CSRF token is missing or wrong: reload the login page and try again.",
        );
    }
    let username = form.get("username").unwrap_or("").trim().to_string();
    let password = form.get("password").unwrap_or("");
    let next = safe_next(form.get("next"));
    let attempt = match state.login_throttle.begin(&username, req.client) {
        Ok(attempt) => attempt,
        Err(throttled) => {
            state.service.audit_failed_login(&username, req.client, "throttled").await;
            let error = format!("Too many failed logins: {}.", throttled.message);
            let context = json!({ "next": next, "username": username, "error": error });
            let mut r = login_page(state, StatusCode::TOO_MANY_REQUESTS, context);
            r.headers_mut().insert("retry-after", HeaderValue::from(throttled.retry_after));
            return r;
        }
    };
    let (user, source) = match state.service.check_login(&username, password, req.client).await {
        Ok(LoginOutcome::Accepted { user, source }) => {
            attempt.succeeded();
            (user, source)
        }
        Ok(refused) => {
            state.service.audit_failed_login(&username, req.client, &refused.audit_reason()).await;
            let status = if matches!(refused, LoginOutcome::Unavailable { .. }) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            return login_page(
                state,
                status,
                json!({ "next": next, "username": username, "error": refused.sentence() }),
            );
        }
        Err(e) => return api_error_page_anonymous(e.into()),
    };
    let sid = match state.service.start_session(&user, &source, "ui", req.client).await {
        Ok(sid) => sid,
        Err(e) => return api_error_page_anonymous(e.into()),
    };
    let mut r = redirect(&next);
    if let Ok(v) = HeaderValue::from_str(&auth::session_cookie(state, &sid)) {
        r.headers_mut().append("set-cookie", v);
    }
    // The login form's token is spent.
    let spent = format!("{LOGIN_CSRF_COOKIE}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&spent) {
        r.headers_mut().append("set-cookie", v);
    }
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn logout(ctx: &Ctx) -> Response {
    let _ = ctx.state.service.end_session(&ctx.principal).await;
    let mut r = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&auth::session_cookie_cleared(&ctx.state)) {
        r.headers_mut().insert("set-cookie", v);
    }
    r
}

/// Names of the objects of a kind by id, for showing references.
pub(crate) async fn names(ctx: &Ctx, kind: ObjectKind) -> HashMap<i64, String> {
    ctx.state.service.names(&ctx.principal, kind).await.unwrap_or_default()
}
