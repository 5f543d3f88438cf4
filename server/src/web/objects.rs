//! Object operations the REST API and the web UI share: reading an object
//! as JSON, listing what a principal may see, the object the authorization
//! chain is asked about, the `use` checks on references, and creating,
//! changing and deleting objects with their checks and audit records. The
//! API (`api`) and the UI (`ui`) are adapters over these; neither names the
//! other.

use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};
use warp::http::StatusCode;

use super::auth::Principal;
use super::error::ApiError;
pub(crate) use super::request::kind_of;
use super::AppState;
use crate::store::{
    AuditObject, Id, NewUser, ObjectKind, Organization, Pipeline, Project, ServiceLogin, Snippet, SshKey, Stage, User,
    VariableSet, WorkerPool,
};

pub(crate) fn reject_unknown(body: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), ApiError> {
    if let Some(key) = body.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::field(
            key,
            format!("unknown field '{key}' for {what} (allowed: {})", allowed.join(", ")),
        ));
    }
    Ok(())
}

/// Deserializes `value` into `T`, naming the field at fault.
pub(crate) fn typed<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        ApiError::field(&field, format!("field '{field}' of {what}: {}", e.inner()))
    })
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
pub(crate) fn build_authz_object(build: &crate::store::Build, mut project: Value) -> Value {
    project["id"] = json!(build.id);
    project["project_id"] = json!(build.project_id);
    project["build_created_by"] = json!(build.created_by);
    project
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
pub(crate) fn read_only(kind: ObjectKind) -> &'static [&'static str] {
    use ObjectKind::*;
    match kind {
        Project | Organization => &["id", "created_by", "last_build_id", "active_build_id", "last_successful_build_id"],
        Pipeline => &["id", "created_by", "last_completed_date", "last_completed_by"],
        WorkerPool => &["id", "created_by", "last_autoscaled", "autoscaling_status", "autoscaling_message"],
        User => &["id", "created_at", "last_login", "auth_source"],
        Group => &["id", "created_at"],
        Stage | VariableSet | Snippet | SshKey | ServiceLogin => &["id", "created_by"],
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
pub(crate) fn references(kind: ObjectKind) -> &'static [(&'static str, ObjectKind)] {
    use ObjectKind::*;
    match kind {
        Project => &[
            ("worker_pool_id", WorkerPool),
            ("scm_login_id", ServiceLogin),
            ("ssh_key_ids", SshKey),
            ("variable_set_ids", VariableSet),
            ("pipeline_id", Pipeline),
            ("stage_id", Stage),
        ],
        Pipeline => &[("stage_ids", Stage), ("variable_set_ids", VariableSet)],
        Stage | WorkerPool => &[("variable_set_ids", VariableSet)],
        Organization => &[
            ("worker_pool_id", WorkerPool),
            ("default_worker_pool_id", WorkerPool),
            ("scm_login_id", ServiceLogin),
            ("auto_attach_ssh_key_ids", SshKey),
        ],
        VariableSet | Snippet | SshKey | ServiceLogin | User | Group => &[],
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
pub(crate) async fn check_uses(
    state: &Arc<AppState>,
    principal: &Principal,
    kind: ObjectKind,
    before: Option<&Value>,
    after: &Value,
) -> Result<(), ApiError> {
    for &(field, target) in references(kind) {
        let old = before.map(|b| referenced_ids(&b[field])).unwrap_or_default();
        for id in referenced_ids(&after[field]) {
            if old.contains(&id) {
                continue;
            }
            // A missing object is the store's to refuse, naming the field.
            let value = match get_value(state, target, id).await {
                Ok(v) => v,
                Err(e) if e.status == StatusCode::NOT_FOUND => continue,
                Err(e) => return Err(e),
            };
            let mut object = authz_object(state, target.as_str(), value.clone()).await?;
            object["name"] = value["name"].clone();
            object["field"] = json!(field);
            if let Err(e) = state.authorize(principal, "use", target.as_str(), Some(object)).await {
                if e.status != StatusCode::FORBIDDEN {
                    return Err(e);
                }
                let what = target.label();
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
            ObjectKind::Project => dispatch_kind!(@one Project, $store, $op $(, $arg)*),
            ObjectKind::Pipeline => dispatch_kind!(@one Pipeline, $store, $op $(, $arg)*),
            ObjectKind::Stage => dispatch_kind!(@one Stage, $store, $op $(, $arg)*),
            ObjectKind::WorkerPool => dispatch_kind!(@one WorkerPool, $store, $op $(, $arg)*),
            ObjectKind::VariableSet => dispatch_kind!(@one VariableSet, $store, $op $(, $arg)*),
            ObjectKind::Snippet => dispatch_kind!(@one Snippet, $store, $op $(, $arg)*),
            ObjectKind::SshKey => dispatch_kind!(@one SshKey, $store, $op $(, $arg)*),
            ObjectKind::ServiceLogin => dispatch_kind!(@one ServiceLogin, $store, $op $(, $arg)*),
            ObjectKind::Organization => dispatch_kind!(@one Organization, $store, $op $(, $arg)*),
            // Users and groups have store functions of their own; callers
            // handle them before dispatching.
            ObjectKind::User | ObjectKind::Group => unreachable!("users and groups are not dispatched"),
        }
    };
    (@one $ty:ty, $store:expr, list) => {
        $store.list_records::<$ty>().await.map_err(ApiError::from).map(as_values)
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

/// A new object of `kind` before the client's fields: the one table of
/// defaults, for the API's creates and the UI's empty forms alike.
pub(crate) fn defaults(kind: ObjectKind) -> Result<Value, ApiError> {
    match kind {
        ObjectKind::User => Ok(json!({
            "username": "", "email": "", "first_name": "", "last_name": "",
            "is_superuser": false, "is_active": true, "group_ids": [],
        })),
        ObjectKind::Group => Ok(json!({ "name": "" })),
        _ => dispatch_kind!(kind, (), defaults),
    }
}

pub(crate) async fn list_values(state: &Arc<AppState>, kind: ObjectKind) -> Result<Vec<Value>, ApiError> {
    match kind {
        ObjectKind::User => Ok(as_values(state.store.list_users().await?)),
        ObjectKind::Group => Ok(as_values(state.store.list_groups().await?)),
        _ => dispatch_kind!(kind, state.store, list),
    }
}

pub(crate) async fn get_value(state: &Arc<AppState>, kind: ObjectKind, id: Id) -> Result<Value, ApiError> {
    let found = match kind {
        ObjectKind::User => state.store.get_user(id).await?.map(|u| serde_json::to_value(u).unwrap_or_default()),
        ObjectKind::Group => state
            .store
            .list_groups()
            .await?
            .into_iter()
            .find(|g| g.id == id)
            .map(|g| serde_json::to_value(g).unwrap_or_default()),
        _ => dispatch_kind!(kind, state.store, get, id)?,
    };
    found.ok_or_else(|| ApiError::not_found(&format!("{} {id}", kind.label())))
}

/// The objects among `values` the principal may see (the authorization chain's `filter_list`).
/// Users are the exception: a logged-in user sees every other user, but by
/// username only (with the id that other objects point at).
pub(crate) async fn only_visible(
    state: &Arc<AppState>,
    principal: &Principal,
    kind: ObjectKind,
    values: Vec<Value>,
) -> Result<Vec<Value>, ApiError> {
    let groups = state.store.list_groups().await?;
    let objects = values.iter().map(|v| authz_object_with(&groups, kind.as_str(), v)).collect();
    let visible = state.visible(principal, kind.as_str(), objects).await?;
    let shown = |v: &Value| v["id"].as_i64().is_some_and(|i| visible.contains(&i));
    if kind == ObjectKind::User && principal.user().is_some() {
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
    kind: ObjectKind,
) -> Result<Vec<Value>, ApiError> {
    state.authorize(principal, "list", kind.as_str(), None).await?;
    let all = list_values(state, kind).await?;
    only_visible(state, principal, kind, all).await
}

/// Creates an object from JSON input, as `POST /api/v1/<kind>s` does; the
/// caller has authorized `create` already.
pub(crate) async fn create_object(
    state: &Arc<AppState>,
    principal: &Principal,
    client: Option<std::net::IpAddr>,
    kind: ObjectKind,
    body: Map<String, Value>,
) -> Result<Id, ApiError> {
    let user = principal.require()?.clone();
    let what = kind.label();
    let asked: Vec<String> = body.keys().cloned().collect();
    let id = match kind {
        ObjectKind::User => create_user(state, body).await?,
        ObjectKind::Group => {
            reject_unknown(&body, &["name"], "group")?;
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field("name", "'name' (a string) is required"))?;
            state.store.create_group(name).await?
        }
        _ => {
            let mut value = defaults(kind)?;
            merge_input(&mut value, body, kind, &what)?;
            value["created_by"] = json!(user.id);
            check_uses(state, principal, kind, None, &value).await?;
            check_autoscaler(state, kind, &value)?;
            dispatch_kind!(kind, state.store, create, value, &what)?
        }
    };
    // Shared by the API and the UI: every object created is recorded here.
    let after = get_value(state, kind, id).await?;
    let object = AuditObject::new(kind.as_str(), Some(id), object_name(kind, &after));
    let details = super::audit::change_details(None, &after, &asked);
    state.audit(&super::audit::actor(principal, client), "create", &object, details).await;
    Ok(id)
}

/// Changes fields of an object, as `PATCH /api/v1/<kind>s/{id}` does, `edit` authorization included.
pub(crate) async fn update_object(
    state: &Arc<AppState>,
    principal: &Principal,
    client: Option<std::net::IpAddr>,
    kind: ObjectKind,
    id: Id,
    body: Map<String, Value>,
) -> Result<(), ApiError> {
    let what = kind.label();
    let current = get_value(state, kind, id).await?;
    let mut object = authz_object(state, kind.as_str(), current.clone()).await?;
    let asked: Vec<String> = body.keys().cloned().collect();
    let mut changes = asked.clone();
    if body.contains_key("group_ids") {
        // Authorization plugins speak of group membership as `groups`.
        changes.push("groups".into());
    }
    object["changes"] = json!(changes);
    state.authorize(principal, "edit", kind.as_str(), Some(object)).await?;
    match kind {
        ObjectKind::User => update_user(state, principal, current.clone(), body).await?,
        ObjectKind::Group => {
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
    let object = AuditObject::new(kind.as_str(), Some(id), object_name(kind, &after));
    let details = super::audit::change_details(Some(&current), &after, &asked);
    state.audit(&super::audit::actor(principal, client), "update", &object, details).await;
    Ok(())
}

/// Deletes an object, as `DELETE /api/v1/<kind>s/{id}` does, `delete` authorization included.
pub(crate) async fn delete_object(
    state: &Arc<AppState>,
    principal: &Principal,
    client: Option<std::net::IpAddr>,
    kind: ObjectKind,
    id: Id,
) -> Result<(), ApiError> {
    let current = get_value(state, kind, id).await?;
    let object = authz_object(state, kind.as_str(), current.clone()).await?;
    state.authorize(principal, "delete", kind.as_str(), Some(object)).await?;
    let deleted = match kind {
        ObjectKind::User => state.store.delete_user(id).await?,
        ObjectKind::Group => state.store.delete_group(id).await?,
        _ => dispatch_kind!(kind, state.store, delete, id)?,
    };
    if !deleted {
        return Err(ApiError::not_found(&format!("{} {id}", kind.label())));
    }
    let object = AuditObject::new(kind.as_str(), Some(id), object_name(kind, &current));
    state.audit(&super::audit::actor(principal, client), "delete", &object, json!({})).await;
    Ok(())
}

/// A pool's `autoscaler` must name an entry of the `[plugins.autoscalers]`
/// settings section: the API picks an autoscaler, it never defines one (its
/// parameters, commands included, come only from the settings files).
pub(crate) fn check_autoscaler(state: &Arc<AppState>, kind: ObjectKind, value: &Value) -> Result<(), ApiError> {
    let name = value.get("autoscaler").and_then(Value::as_str).unwrap_or("");
    if kind != ObjectKind::WorkerPool || name.is_empty() {
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
/// Stored objects as JSON.
fn as_values<T: serde::Serialize>(objects: Vec<T>) -> Vec<Value> {
    objects.into_iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect()
}

/// Fields whose value is a JSON document kept as text (variables, a
/// project's launch questions and per-project triggers). A client may send
/// the document itself, an object or a list; the document as a JSON string
/// is still accepted.
pub(crate) const JSON_TEXT_FIELDS: &[&str] = &["variables", "launch_questions", "triggers"];

pub(crate) fn merge_input(
    value: &mut Value,
    body: Map<String, Value>,
    kind: ObjectKind,
    what: &str,
) -> Result<(), ApiError> {
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
        let v = match v {
            Value::Object(_) | Value::Array(_)
                if JSON_TEXT_FIELDS.contains(&key.as_str()) && object[&key].is_string() =>
            {
                Value::String(v.to_string())
            }
            v => v,
        };
        object.insert(key, v);
    }
    Ok(())
}

/// `?field=value` filters on top-level fields, compared as text.
pub(crate) fn filter_by_query(
    all: Vec<Value>,
    query: &HashMap<String, String>,
    kind: ObjectKind,
) -> Result<Vec<Value>, ApiError> {
    let filters: Vec<(&String, &String)> =
        query.iter().filter(|(k, _)| !["limit", "offset"].contains(&k.as_str())).collect();
    // A field no listed row has is unknown (rows shown in part lack some).
    if let Some((key, _)) =
        filters.iter().find(|(k, _)| !all.is_empty() && all.iter().all(|f| f.get(k.as_str()).is_none()))
    {
        return Err(ApiError::field(key, format!("unknown filter '{key}' for {}", kind.label())));
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

pub(crate) const USER_FIELDS: &[&str] = &[
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

pub(crate) async fn create_user(state: &Arc<AppState>, body: Map<String, Value>) -> Result<Id, ApiError> {
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

pub(crate) async fn update_user(
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

/// The display name of an object (the username of a user).
pub(crate) fn object_name(kind: ObjectKind, v: &Value) -> String {
    v[kind.name_field()].as_str().unwrap_or_default().to_string()
}
