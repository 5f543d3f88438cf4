//! The API's route table: warp's filters are built from it (`filter`: each
//! route's method, path and typed parameters) and the OpenAPI document
//! (`openapi`) is generated from it, so the two cannot drift apart. The
//! typed query parameters of the operations that take some are here too:
//! the handlers read the query string into them and the document lists
//! their fields.

use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;
use warp::filters::BoxedFilter;
use warp::Filter;

use crate::service::model::{
    Group, ObjectKind, Organization, Pipeline, Project, ServiceLogin, Snippet, SshKey, Stage, User, VariableSet,
    WorkerPool,
};

/// One API route.
pub struct Route {
    /// A stable name the dispatcher switches on.
    pub id: &'static str,
    /// The HTTP method.
    pub method: &'static str,
    /// The path, with `{id}` (and for pipeline runs `{run}`) for its parameters.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
}

macro_rules! crud_routes {
    ($($kind:literal => $path:literal),* $(,)?) => {
        &[
            $(
                Route { id: concat!($kind, ".list"), method: "GET", path: concat!("/api/v1/", $path), summary: concat!("List ", $path, " (limit, offset, name filters)") },
                Route { id: concat!($kind, ".create"), method: "POST", path: concat!("/api/v1/", $path), summary: concat!("Create one of ", $path) },
                Route { id: concat!($kind, ".get"), method: "GET", path: concat!("/api/v1/", $path, "/{id}"), summary: concat!("Get one of ", $path) },
                Route { id: concat!($kind, ".update"), method: "PATCH", path: concat!("/api/v1/", $path, "/{id}"), summary: concat!("Change fields of one of ", $path) },
                Route { id: concat!($kind, ".delete"), method: "DELETE", path: concat!("/api/v1/", $path, "/{id}"), summary: concat!("Delete one of ", $path) },
            )*
        ]
    };
}

/// The object routes, one block per kind.
pub const CRUD: &[Route] = crud_routes! {
    "project" => "projects",
    "pipeline" => "pipelines",
    "stage" => "stages",
    "worker_pool" => "worker_pools",
    "variable_set" => "variable_sets",
    "snippet" => "snippets",
    "ssh_key" => "ssh_keys",
    "service_login" => "service_logins",
    "organization" => "organizations",
    "user" => "users",
    "group" => "groups",
};

/// The actions of [`CRUD`], as the last part of a route id.
pub const CRUD_ACTIONS: &[&str] = &[".list", ".create", ".get", ".update", ".delete"];

/// An object kind of [`CRUD`] and the type its answers serialize.
pub struct ObjectRoutes {
    /// The kind.
    pub kind: ObjectKind,
    /// The name of its schema in the OpenAPI document.
    pub schema: &'static str,
    /// Adds the type's schema, and those it names, to a list.
    pub schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
}

/// The answer of `build.output` (its OpenAPI schema is derived from this).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct OutputPage {
    /// The build.
    pub build: i64,
    /// Its status, read before the lines: a finished status means every
    /// line was stored before these were read.
    pub status: crate::service::model::BuildStatus,
    /// The lines after `after`, at most `limit` of them.
    pub lines: Vec<crate::service::model::OutputLine>,
    /// When retention removed the build's log, if it did.
    pub log_removed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The query parameters of an object listing's page; the listing's other
/// parameters are its filters (`?name=...`).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Paging {
    /// Page size (1 to 500, default 50).
    #[param(nullable = false)]
    pub limit: Option<i64>,
    /// Rows to skip.
    #[param(nullable = false)]
    pub offset: Option<i64>,
}

/// The query parameters of `build.list`; others are refused, naming them.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BuildQuery {
    /// Only this project's builds.
    #[param(nullable = false)]
    pub project_id: Option<i64>,
    /// Only this pool's builds.
    #[param(nullable = false)]
    pub worker_pool_id: Option<i64>,
    /// Only builds in this status.
    #[param(value_type = Option<crate::service::model::BuildStatus>, nullable = false)]
    pub status: Option<String>,
    /// Page size (1 to 500, default 50).
    #[param(nullable = false)]
    pub limit: Option<i64>,
    /// Rows to skip.
    #[param(nullable = false)]
    pub offset: Option<i64>,
}

impl BuildQuery {
    /// Its parameters' names.
    pub const NAMES: &'static [&'static str] = &["project_id", "worker_pool_id", "status", "limit", "offset"];
}

/// The query parameters of `build.output`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Lines after this sequence number (default 0: from the start).
    #[param(nullable = false)]
    pub after: Option<i64>,
    /// Lines to return (1 to 10000, default 1000).
    #[param(nullable = false)]
    pub limit: Option<i64>,
}

/// The query parameters of `build.stream` (a `Last-Event-ID` header wins).
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Lines after this sequence number (default 0: from the start).
    #[param(nullable = false)]
    pub after: Option<i64>,
}

/// The query parameters of `pipeline.runs`.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Runs to show (1 to 100, default 10).
    #[param(nullable = false)]
    pub limit: Option<i64>,
}

/// A request body read into a type: the fields it may hold, for the
/// refusal of any other (naming the allowed ones), and what it is called in
/// messages.
pub trait Body: serde::de::DeserializeOwned {
    /// Its fields.
    const FIELDS: &'static [&'static str];
    /// What it is, in messages ("a login").
    const WHAT: &'static str;
}

/// The body of `login`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    /// The account's name (required).
    #[serde(default)]
    #[schema(required = true, nullable = false)]
    pub username: Option<String>,
    /// Its password (required).
    #[serde(default)]
    #[schema(write_only, required = true, nullable = false)]
    pub password: Option<String>,
}

impl Body for LoginBody {
    const FIELDS: &'static [&'static str] = &["username", "password"];
    const WHAT: &'static str = "login";
}

/// The body of `project.start` (it may be empty).
#[derive(serde::Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// Answers to the project's launch questions.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub answers: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Body for StartBody {
    const FIELDS: &'static [&'static str] = &["answers"];
    const WHAT: &'static str = "a project start";
}

/// A stage, by id or by name.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum StageChoice {
    /// Its id.
    Id(i64),
    /// Its name.
    Name(String),
}

/// The body of `pipeline.rerun`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerunBody {
    /// The stage to re-run from: its id or its name (required).
    #[serde(default)]
    #[schema(required = true, nullable = false)]
    pub stage: Option<StageChoice>,
}

impl Body for RerunBody {
    const FIELDS: &'static [&'static str] = &["stage"];
    const WHAT: &'static str = "a re-run";
}

/// The body of `token.create`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// A label (default `api`).
    #[serde(default)]
    pub name: Option<String>,
    /// Days until it expires (none: it does not).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 36500)]
    pub expires_in_days: Option<i64>,
}

impl Body for TokenBody {
    const FIELDS: &'static [&'static str] = &["name", "expires_in_days"];
    const WHAT: &'static str = "token";
}

/// Adds `T`'s schema and those it names to `into`.
pub fn schemas_of<T: ToSchema>(into: &mut Vec<(String, RefOr<Schema>)>) {
    into.push((T::name().into_owned(), T::schema()));
    T::schemas(into);
}

macro_rules! object_routes {
    ($($ty:ident),* $(,)?) => {
        &[$(ObjectRoutes { kind: ObjectKind::$ty, schema: stringify!($ty), schemas: schemas_of::<$ty> },)*]
    };
}

/// The types of the object kinds, in the order of [`CRUD`].
pub const OBJECTS: &[ObjectRoutes] = object_routes! {
    Project, Pipeline, Stage, WorkerPool, VariableSet, Snippet, SshKey, ServiceLogin, Organization, User, Group,
};

/// The other routes.
pub const SPECIAL: &[Route] = &[
    Route { id: "health", method: "GET", path: "/api/v1/health", summary: "Liveness and version" },
    Route { id: "openapi", method: "GET", path: "/api/v1/openapi.json", summary: "This document" },
    Route {
        id: "login",
        method: "POST",
        path: "/api/v1/login",
        summary: "Log in with username and password; sets the session cookie",
    },
    Route { id: "logout", method: "POST", path: "/api/v1/logout", summary: "End the session" },
    Route {
        id: "me",
        method: "GET",
        path: "/api/v1/me",
        summary: "The current user (and the CSRF token of a session)",
    },
    Route { id: "plugins", method: "GET", path: "/api/v1/plugins", summary: "Loaded plugins" },
    Route {
        id: "project.start",
        method: "POST",
        path: "/api/v1/projects/{id}/start",
        summary: "Start a project (body: {\"answers\": {...}})",
    },
    Route {
        id: "pipeline.runs",
        method: "GET",
        path: "/api/v1/pipelines/{id}/runs",
        summary: "The pipeline's latest runs (limit, default 10), newest first, with every stage's status",
    },
    Route {
        id: "pipeline.approve",
        method: "POST",
        path: "/api/v1/pipelines/{id}/runs/{run}/approve",
        summary: "Approve the stage a run waits before, and start it (edit permission on the pipeline)",
    },
    Route {
        id: "pipeline.rerun",
        method: "POST",
        path: "/api/v1/pipelines/{id}/runs/{run}/rerun",
        summary: "Re-run a run from a stage (body: {\"stage\": id or name}; start permission on its projects)",
    },
    Route {
        id: "worker_pool.autoscale",
        method: "POST",
        path: "/api/v1/worker_pools/{id}/autoscale",
        summary: "Ask the pool's autoscaler to plan and scale now (edit permission on the pool; 409 while another decision runs)",
    },
    Route {
        id: "worker.list",
        method: "GET",
        path: "/api/v1/workers",
        summary: "Worker processes: the pools each serves, its last check-in, and whether it is alive (superusers)",
    },
    Route {
        id: "build.list",
        method: "GET",
        path: "/api/v1/builds",
        summary: "List builds (project_id, worker_pool_id, status, limit, offset)",
    },
    Route { id: "build.get", method: "GET", path: "/api/v1/builds/{id}", summary: "Get a build" },
    Route { id: "build.delete", method: "DELETE", path: "/api/v1/builds/{id}", summary: "Delete a finished build" },
    Route {
        id: "build.stop",
        method: "POST",
        path: "/api/v1/builds/{id}/stop",
        summary: "Stop a queued or running build",
    },
    Route {
        id: "build.pin",
        method: "POST",
        path: "/api/v1/builds/{id}/pin",
        summary: "Pin a build: no retention rule or cleanup removes its log, root or record",
    },
    Route {
        id: "build.unpin",
        method: "POST",
        path: "/api/v1/builds/{id}/unpin",
        summary: "Unpin a build: the project's keep rules apply to it again",
    },
    Route {
        id: "build.output",
        method: "GET",
        path: "/api/v1/builds/{id}/output",
        summary: "Output lines after sequence number `after` (limit)",
    },
    Route {
        id: "build.log",
        method: "GET",
        path: "/api/v1/builds/{id}/log.txt",
        summary: "The whole stored log as text/plain, one line per output line, streamed; gzip when Accept-Encoding allows it",
    },
    Route {
        id: "build.stream",
        method: "GET",
        path: "/api/v1/builds/{id}/stream",
        summary: "Live output as Server-Sent Events (line events, then end)",
    },
    Route { id: "token.list", method: "GET", path: "/api/v1/tokens", summary: "Your API tokens" },
    Route { id: "token.create", method: "POST", path: "/api/v1/tokens", summary: "Create an API token (shown once)" },
    Route {
        id: "token.delete",
        method: "DELETE",
        path: "/api/v1/tokens/{id}",
        summary: "Revoke one of your API tokens",
    },
    Route {
        id: "project.badge",
        method: "GET",
        path: "/api/v1/projects/{id}/badge.svg",
        summary: "The last finished build's status as an SVG badge (public when the project's public_badge is on)",
    },
    Route {
        id: "audit.list",
        method: "GET",
        path: "/api/v1/audit",
        summary: "The audit log, newest first (superusers; actor, action, object_kind, object_id, since, until, before, limit)",
    },
    Route { id: "webhook", method: "POST", path: "/webhooks", summary: "GitHub, GitLab or generic push webhooks" },
];

/// Every route.
pub fn all() -> impl Iterator<Item = &'static Route> {
    SPECIAL.iter().chain(CRUD.iter())
}

/// A request's route and its path parameters.
#[derive(Clone, Copy)]
pub struct Matched {
    /// The route.
    pub route: &'static Route,
    /// `{id}`, when the path has one.
    pub id: Option<i64>,
    /// `{run}`, when the path has one.
    pub run: Option<i64>,
}

/// The route table as one warp filter: each route's method and path, its
/// `{id}` and `{run}` parsed as numbers. A request no route takes is
/// rejected (not found, or method not allowed).
pub fn filter() -> BoxedFilter<(Matched,)> {
    all().map(route_filter).reduce(|a, b| a.or(b).unify().boxed()).expect("the table has routes")
}

fn route_filter(route: &'static Route) -> BoxedFilter<(Matched,)> {
    let mut path: BoxedFilter<(Vec<i64>,)> = warp::any().map(Vec::new).boxed();
    for segment in route.path.trim_start_matches('/').split('/') {
        path = if segment.starts_with('{') {
            path.and(warp::path::param::<i64>())
                .map(|mut found: Vec<i64>, param: i64| {
                    found.push(param);
                    found
                })
                .boxed()
        } else {
            path.and(warp::path(segment)).boxed()
        };
    }
    let method = match route.method {
        "GET" => warp::get().boxed(),
        "POST" => warp::post().boxed(),
        "PATCH" => warp::patch().boxed(),
        "DELETE" => warp::delete().boxed(),
        other => unreachable!("route {} has the method {other}, which the table does not use", route.id),
    };
    method
        .and(path)
        .and(warp::path::end())
        .map(move |found: Vec<i64>| Matched { route, id: found.first().copied(), run: found.get(1).copied() })
        .boxed()
}

/// Whether some route has this path, whatever its method (for 405 versus
/// 404 when no route took a request).
pub fn path_exists(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let actual: Vec<&str> = path.split('/').collect();
    all().any(|route| {
        let pattern: Vec<&str> = route.path.split('/').collect();
        pattern.len() == actual.len()
            && pattern
                .iter()
                .zip(&actual)
                .all(|(p, a)| if p.starts_with('{') { a.parse::<i64>().is_ok() } else { p == a })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_find_their_route_and_typed_parameters() {
        let routes = filter();
        let found = |method: &str, path: &str| {
            let request = warp::test::request().method(method).path(path);
            let routes = routes.clone();
            async move { request.filter(&routes).await.ok().map(|m| (m.route.id, m.id, m.run)) }
        };
        assert_eq!(found("GET", "/api/v1/projects").await, Some(("project.list", None, None)));
        assert_eq!(found("GET", "/api/v1/projects/").await, Some(("project.list", None, None)));
        assert_eq!(found("PATCH", "/api/v1/projects/7").await, Some(("project.update", Some(7), None)));
        assert_eq!(
            found("POST", "/api/v1/pipelines/3/runs/12/approve").await,
            Some(("pipeline.approve", Some(3), Some(12)))
        );
        assert_eq!(found("GET", "/api/v1/projects/seven").await, None);
        assert_eq!(found("PUT", "/api/v1/projects/7").await, None);
        assert!(path_exists("/api/v1/projects/7") && !path_exists("/api/v1/projects/seven"));
    }

    /// Each body's list of fields is its schema's.
    fn fields_of<T: Body + ToSchema>() {
        let schema = serde_json::to_value(<T as utoipa::PartialSchema>::schema()).unwrap();
        let mut listed: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        let mut fields = T::FIELDS.to_vec();
        listed.sort_unstable();
        fields.sort_unstable();
        assert_eq!(listed, fields, "{}", T::WHAT);
        assert_eq!(schema["additionalProperties"], serde_json::json!(false), "{}", T::WHAT);
    }

    #[test]
    fn request_bodies_list_their_fields() {
        fields_of::<LoginBody>();
        fields_of::<StartBody>();
        fields_of::<RerunBody>();
        fields_of::<TokenBody>();
        let token = serde_json::to_value(<TokenBody as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(token["properties"]["expires_in_days"]["maximum"], crate::service::accounts::MAX_TOKEN_DAYS);
    }

    #[test]
    fn every_object_kind_has_its_routes_and_its_type() {
        let kinds: Vec<&str> = CRUD.iter().filter_map(|r| r.id.strip_suffix(".list")).collect();
        let typed: Vec<&str> = OBJECTS.iter().map(|o| o.kind.as_str()).collect();
        let all: Vec<&str> = ObjectKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(kinds, all);
        assert_eq!(typed, all);
        for kind in ObjectKind::ALL {
            let list = CRUD.iter().find(|r| r.id == format!("{kind}.list")).unwrap();
            assert_eq!(list.path, format!("/api/v1/{}", kind.plural()));
            assert_eq!(ObjectKind::parse(kind.as_str()), Some(kind));
            assert_eq!(ObjectKind::from_plural(kind.plural()), Some(kind));
        }
    }
}
