//! The OpenAPI 3.1 document of the REST API. Its paths come from the route
//! table the dispatcher matches (`routes`), and its object schemas from the
//! domain types themselves (`utoipa::ToSchema` derived on `store`'s types), so
//! neither can drift from what the server answers. Request bodies list the
//! fields of each kind's typed change (`<Kind>Patch`, the type a create or
//! change is read into), with the JSON documents (`variables`, ...)
//! accepted as JSON or, deprecated, as a string.

use serde_json::{json, Map, Value};
use utoipa::openapi::{ComponentsBuilder, RefOr, Schema};

use super::routes::{self, ObjectRoutes, Route};
use crate::service::model::ObjectKind;
use crate::service::objects::{JSON_TEXT_FIELDS, USER_FIELDS};

/// Error statuses every operation may answer, with what each means.
const ERRORS: &[(&str, &str)] = &[
    ("400", "The request is malformed; `field` names the part at fault"),
    ("401", "Not logged in, or the token is not valid"),
    ("403", "The authorization chain does not allow it"),
    ("404", "No such object (or it is hidden from you)"),
    ("409", "It conflicts with the object's state"),
    ("413", "The body is too large"),
    ("429", "Too many requests; `Retry-After` says when to come back"),
];

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Links from an answer carrying an object's `id` to the operations on it
/// (clients and fuzzers follow them from a create to the object made).
fn links_by_id(kind: &str, actions: &[&str]) -> Value {
    let links: Map<String, Value> = actions
        .iter()
        .map(|action| {
            let operation = format!("{kind}.{action}");
            (operation.clone(), json!({ "operationId": operation, "parameters": { "id": "$response.body#/id" } }))
        })
        .collect();
    Value::Object(links)
}

/// The headers an answer carries when the request sent a JSON document as a string.
fn deprecation_headers() -> Value {
    json!({
        "Deprecation": { "description": "`true` when the request used a deprecated form", "schema": { "type": "string" } },
        "Warning": { "description": "Which fields were sent in the deprecated form, and what to send instead",
            "schema": { "type": "string" } },
    })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

/// The schemas the object kinds and the other answers name, from the types.
fn type_schemas() -> Map<String, Value> {
    let mut collected: Vec<(String, RefOr<Schema>)> = Vec::new();
    for kind in routes::OBJECTS {
        (kind.schemas)(&mut collected);
    }
    use crate::service::model::{ApiToken, AuditEvent, Build, OutputLine, PipelineApproval, Worker};
    routes::schemas_of::<Build>(&mut collected);
    routes::schemas_of::<ApiToken>(&mut collected);
    routes::schemas_of::<OutputLine>(&mut collected);
    routes::schemas_of::<routes::OutputPage>(&mut collected);
    routes::schemas_of::<PipelineApproval>(&mut collected);
    routes::schemas_of::<Worker>(&mut collected);
    routes::schemas_of::<AuditEvent>(&mut collected);
    routes::schemas_of::<routes::LoginBody>(&mut collected);
    routes::schemas_of::<routes::StartBody>(&mut collected);
    routes::schemas_of::<routes::RerunBody>(&mut collected);
    routes::schemas_of::<routes::TokenBody>(&mut collected);
    let builder = ComponentsBuilder::new().schemas_from_iter(collected);
    let components = serde_json::to_value(builder.build()).unwrap_or_default();
    components["schemas"].as_object().cloned().unwrap_or_default()
}

/// What a create or change of `kind` may send: the fields of its typed
/// change (`<Kind>Patch`), each with the object's schema for it, none
/// required (a create fills in defaults), no others.
fn input_schema(kind: &ObjectRoutes, object: &Value) -> Value {
    let mut properties = Map::new();
    if kind.kind == ObjectKind::User {
        for field in USER_FIELDS {
            let schema = match *field {
                "password" | "current_password" => json!({ "type": "string", "writeOnly": true }),
                "group_ids" => json!({ "type": "array", "items": { "type": "integer", "format": "int64" } }),
                _ => object["properties"][*field].clone(),
            };
            properties.insert(field.to_string(), schema);
        }
    } else {
        for name in kind.kind.settable_fields() {
            let schema = if *name == "name" {
                // store::validate::name: not blank, no surrounding spaces or control characters.
                json!({ "type": "string", "minLength": 1, "maxLength": crate::service::model::MAX_NAME,
                    "pattern": "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]([^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$" })
            } else if JSON_TEXT_FIELDS.contains(name) {
                json!({ "oneOf": [
                    { "type": ["object", "array"], "description": "The JSON document itself" },
                    { "type": "string", "deprecated": true,
                      "description": "Deprecated: the JSON document as a string; send the document itself" },
                ] })
            } else {
                object["properties"][*name].clone()
            };
            properties.insert(name.to_string(), schema);
        }
    }
    json!({
        "type": "object",
        "description": format!("Fields of a {} to set; others keep their value (or default)", kind.kind.label()),
        "properties": properties,
        "additionalProperties": false,
    })
}

/// One event of the live output stream, as OpenAPI 3.2 describes an event
/// (its `data` is JSON text).
fn sse_event() -> Value {
    let line = json!({ "type": "object", "required": ["seq", "stream", "text"], "properties": {
        "seq": { "type": "integer" }, "stream": schema_ref("OutputStream"), "text": { "type": "string" } } });
    let end = json!({ "type": "object", "required": ["status", "last_seq"], "properties": {
        "status": { "oneOf": [schema_ref("BuildStatus"), { "type": "null" }] }, "last_seq": { "type": "integer" } } });
    json!({ "type": "object", "required": ["event", "data"], "properties": {
        "event": { "enum": ["line", "end"] },
        "id": { "type": "string", "description": "The line number, for Last-Event-ID" },
        "data": { "type": "string", "contentMediaType": "application/json", "contentSchema": { "oneOf": [line, end] } } } })
}

/// A closed object schema of optional fields.
fn closed(properties: Value) -> Value {
    json!({ "type": "object", "properties": properties, "additionalProperties": false })
}

fn path_parameters(route: &Route) -> Vec<Value> {
    ["id", "run"]
        .iter()
        .filter(|p| route.path.contains(&format!("{{{p}}}")))
        .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "integer", "format": "int64" } }))
        .collect()
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": false, "schema": schema, "description": description })
}

/// The query parameters of a typed query (`routes::BuildQuery`, ...).
fn query_params<T: utoipa::IntoParams>() -> Vec<Value> {
    T::into_params(|| None).into_iter().map(|p| serde_json::to_value(p).unwrap_or_default()).collect()
}

fn paging() -> Vec<Value> {
    query_params::<routes::Paging>()
}

/// The request body, extra parameters and success answer of a route that is not an object CRUD route.
fn special(route: &Route) -> (Option<Value>, Vec<Value>, (&'static str, Value)) {
    let body = |schema: Value, required: bool| Some(json!({ "required": required, "content": json_content(schema) }));
    let empty = || body(closed(json!({})), false);
    let results = |item: Value| json!({ "type": "object", "required": ["results"], "properties": { "results": { "type": "array", "items": item } } });
    let text = |mime: &str, what: &str| json!({ "description": what, "content": { mime: { "schema": { "type": "string" } } } });
    let me = json!({ "type": "object", "required": ["user"], "properties": {
        "user": schema_ref("User"), "csrf_token": { "type": ["string", "null"] } } });
    match route.id {
        "health" => (
            None,
            vec![],
            (
                "200",
                ok(
                    "Alive",
                    json!({ "type": "object", "required": ["status", "version"],
            "properties": { "status": { "type": "string" }, "version": { "type": "string" } } }),
                ),
            ),
        ),
        "openapi" => (None, vec![], ("200", ok("This document", json!({ "type": "object" })))),
        "login" => {
            (body(schema_ref("LoginBody"), true), vec![], ("200", ok("Logged in; the session cookie is set", me)))
        }
        "logout" => (None, vec![], ("204", json!({ "description": "Logged out; the session cookie is cleared" }))),
        "me" => (None, vec![], ("200", ok("The current user", me))),
        "plugins" => (None, vec![], ("200", ok("The configured plugins", results(json!({ "type": "object" }))))),
        "project.start" => (
            body(schema_ref("StartBody"), false),
            vec![],
            ("201", {
                let mut queued = ok("The queued build", schema_ref("Build"));
                queued["links"] = links_by_id("build", &["get", "stop", "output", "pin", "unpin", "delete"]);
                queued
            }),
        ),
        "project.badge" => (None, vec![], ("200", text("image/svg+xml", "The badge"))),
        "pipeline.runs" => (
            None,
            query_params::<routes::RunsQuery>(),
            (
                "200",
                ok(
                    "The runs, newest first",
                    json!({ "type": "object", "required": ["pipeline", "results"],
                "properties": { "pipeline": { "type": "integer" }, "results": { "type": "array", "items": { "type": "object" } } } }),
                ),
            ),
        ),
        "pipeline.approve" => (
            empty(),
            vec![],
            (
                "200",
                ok(
                    "The approval and the builds it started",
                    json!({ "type": "object",
            "required": ["approval", "started"], "properties": { "approval": schema_ref("PipelineApproval"),
            "started": { "type": "array", "items": { "type": "string" } } } }),
                ),
            ),
        ),
        "pipeline.rerun" => (
            body(schema_ref("RerunBody"), true),
            vec![],
            (
                "200",
                ok(
                    "The builds started",
                    json!({ "type": "object", "required": ["run", "stage", "started"], "properties": {
                "run": { "type": "integer" }, "stage": { "type": "integer" }, "started": { "type": "array", "items": { "type": "string" } } } }),
                ),
            ),
        ),
        "worker_pool.autoscale" => (
            empty(),
            vec![],
            (
                "200",
                ok(
                    "The decision and the pool after it",
                    json!({ "type": "object",
            "required": ["decision", "worker_pool"], "properties": { "decision": { "type": "object" }, "worker_pool": schema_ref("WorkerPool") } }),
                ),
            ),
        ),
        "worker.list" => (
            None,
            vec![],
            (
                "200",
                ok(
                    "Worker processes",
                    json!({ "type": "object", "required": ["count", "results"],
            "properties": { "count": { "type": "integer" }, "results": { "type": "array", "items": { "allOf": [schema_ref("Worker"),
            { "type": "object", "required": ["alive"], "properties": { "alive": { "type": "boolean" } } }] } } } }),
                ),
            ),
        ),
        "build.list" => {
            let params = query_params::<routes::BuildQuery>();
            (
                None,
                params,
                (
                    "200",
                    ok(
                        "Builds, newest first",
                        json!({ "type": "object", "required": ["limit", "offset", "results"],
                "properties": { "limit": { "type": "integer" }, "offset": { "type": "integer" },
                "results": { "type": "array", "items": schema_ref("Build") } } }),
                    ),
                ),
            )
        }
        "build.get" | "build.pin" | "build.unpin" => (None, vec![], ("200", ok("The build", schema_ref("Build")))),
        "build.delete" | "token.delete" => (None, vec![], ("204", json!({ "description": "Deleted" }))),
        "build.stop" => (
            None,
            vec![],
            (
                "202",
                ok(
                    "Stopping",
                    json!({ "type": "object", "required": ["id", "status"],
            "properties": { "id": { "type": "integer" }, "status": schema_ref("BuildStatus") } }),
                ),
            ),
        ),
        "build.output" => {
            (None, query_params::<routes::OutputQuery>(), ("200", ok("Output lines", schema_ref("OutputPage"))))
        }
        "build.log" => (None, vec![], ("200", text("text/plain", "The stored log, one line per output line"))),
        "build.stream" => (
            None,
            query_params::<routes::StreamQuery>(),
            (
                "200",
                json!({ "description": "`line` events, then one `end` event", "content": {
                "text/event-stream": { "schema": sse_event() } } }),
            ),
        ),
        "token.list" => (None, vec![], ("200", ok("Your tokens", results(schema_ref("ApiToken"))))),
        "token.create" => (
            body(schema_ref("TokenBody"), false),
            vec![],
            (
                "201",
                ok(
                    "The token, shown this once",
                    json!({ "type": "object", "required": ["token", "details"],
                "properties": { "token": { "type": "string" }, "details": schema_ref("ApiToken") } }),
                ),
            ),
        ),
        "audit.list" => {
            let params = ["actor", "action", "object_kind", "object_id", "since", "until", "before", "limit"]
                .iter()
                .map(|name| query(name, json!({ "type": "string" }), "A filter"))
                .collect();
            (
                None,
                params,
                (
                    "200",
                    ok(
                        "Audit events, newest first",
                        json!({ "type": "object", "required": ["limit", "results"],
                "properties": { "limit": { "type": "integer" }, "next_before": { "type": ["integer", "null"],
                "description": "Pass as `before` for the next page" },
                "results": { "type": "array", "items": schema_ref("AuditEvent") } } }),
                    ),
                ),
            )
        }
        "webhook" => (
            body(json!({ "type": "object" }), true),
            vec![],
            (
                "200",
                ok(
                    "Builds started for the push",
                    json!({ "type": "object", "required": ["ok"], "properties": {
                "ok": { "type": "boolean" }, "started": { "type": "array" } } }),
                ),
            ),
        ),
        other => unreachable!("route {other} has no documentation"),
    }
}

/// What a routes's operation is: body, parameters and answers.
fn operation(route: &Route, schemas: &Map<String, Value>) -> Value {
    let mut parameters = path_parameters(route);
    let (body, success) = match routes::OBJECTS
        .iter()
        .find(|k| route.id.split_once('.').map(|(k, _)| k) == Some(k.kind.as_str()))
    {
        Some(kind)
            if !route.id.starts_with("project.start") && routes::CRUD_ACTIONS.iter().any(|a| route.id.ends_with(a)) =>
        {
            let object = schema_ref(kind.schema);
            // Others see a user by name only.
            let item = if kind.kind == ObjectKind::User {
                json!({ "anyOf": [object, schema_ref("UserSummary")] })
            } else {
                object
            };
            let input = |suffix: &str| {
                Some(
                    json!({ "required": true, "content": json_content(schema_ref(&format!("{}{suffix}", kind.schema))) }),
                )
            };
            match route.id.rsplit_once('.').map(|(_, a)| a).unwrap_or_default() {
                "list" => {
                    parameters.extend(paging());
                    for field in schemas[kind.schema]["properties"].as_object().into_iter().flatten().map(|(f, _)| f) {
                        parameters.push(query(
                            field,
                            json!({ "type": "string" }),
                            "Only objects whose field reads this (as text)",
                        ));
                    }
                    let page = json!({ "type": "object", "required": ["count", "limit", "offset", "results"], "properties": {
                        "count": { "type": "integer" }, "limit": { "type": "integer" }, "offset": { "type": "integer" },
                        "results": { "type": "array", "items": item } } });
                    (None, ("200", ok("A page of the objects you may see", page)))
                }
                "create" => {
                    let mut created = ok("Created", item);
                    created["links"] = links_by_id(kind.kind.as_str(), &["get", "update", "delete"]);
                    created["headers"] = deprecation_headers();
                    (input("Create"), ("201", created))
                }
                "get" => (None, ("200", ok("The object", item))),
                "update" => {
                    let mut changed = ok("Changed", item);
                    changed["headers"] = deprecation_headers();
                    (input("Input"), ("200", changed))
                }
                _ => (None, ("204", json!({ "description": "Deleted" }))),
            }
        }
        _ => {
            let (body, extra, success) = special(route);
            parameters.extend(extra);
            (body, success)
        }
    };
    let mut responses = Map::new();
    responses.insert(success.0.to_string(), success.1);
    for (status, what) in ERRORS {
        responses.insert(status.to_string(), ok(what, schema_ref("Error")));
    }
    if route.id == "login" {
        responses.insert("415".into(), ok("Not sent as application/json", schema_ref("Error")));
        responses.insert("503".into(), ok("The authentication service is unavailable", schema_ref("Error")));
    }
    let mut op = json!({ "operationId": route.id, "summary": route.summary, "responses": responses });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    match route.id {
        "health" | "openapi" | "login" | "webhook" => op["security"] = json!([]),
        // Public when the project says so.
        "project.badge" => op["security"] = json!([{}, { "bearer": [] }, { "session": [] }]),
        _ => {}
    }
    op
}

/// The OpenAPI 3.1 document (made once: it depends on nothing at run time).
pub fn document() -> &'static Value {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut schemas = type_schemas();
    schemas.insert(
        "Error".into(),
        json!({ "type": "object", "required": ["error"], "properties": {
            "error": { "type": "string", "description": "What went wrong, in one line" },
            "field": { "type": "string", "description": "The field or parameter at fault" } } }),
    );
    schemas.insert(
        "UserSummary".into(),
        json!({ "type": "object", "required": ["id", "username"], "description": "What others see of a user",
            "properties": { "id": { "type": "integer", "format": "int64" }, "username": { "type": "string" } } }),
    );
    for kind in routes::OBJECTS {
        let input = input_schema(kind, &schemas[kind.schema]);
        let mut create = input.clone();
        create["required"] =
            if kind.kind == ObjectKind::User { json!(["username", "password"]) } else { json!(["name"]) };
        create["description"] = json!(format!("A new {}: fields not sent take their defaults", kind.kind.label()));
        schemas.insert(format!("{}Input", kind.schema), input);
        schemas.insert(format!("{}Create", kind.schema), create);
    }
    let mut paths = Map::new();
    for route in routes::all() {
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation(route, &schemas);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Vespene REST API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API token (POST /api/v1/tokens)" },
                "session": { "type": "apiKey", "in": "cookie", "name": super::auth::SESSION_COOKIE,
                    "description": "The session of POST /api/v1/login; changes also need the X-CSRF-Token header" }
            }
        },
        "security": [{ "bearer": [] }, { "session": [] }],
        "paths": paths,
    })
}
