//! List, detail, new, edit and delete pages for every object kind, through
//! the same store calls and authorization as the REST API.

use std::collections::HashMap;

use serde_json::{json, Value};
use warp::http::{Method, StatusCode};
use warp::reply::Response;

use super::forms;
use super::{api_error_page, error_page, redirect, Ctx, Form, UiRequest};
use crate::service::model::ObjectKind;
use crate::service::objects;
use crate::web::error::ApiError;

/// The kind a URL segment names (`/ui/<plural>/...`).
pub(crate) fn kind_of(segment: &str) -> Option<ObjectKind> {
    ObjectKind::from_plural(segment)
}

/// The page titles of a kind: plural and singular.
fn titles(kind: ObjectKind) -> (&'static str, &'static str) {
    match kind {
        ObjectKind::Project => ("Projects", "project"),
        ObjectKind::Pipeline => ("Pipelines", "pipeline"),
        ObjectKind::Stage => ("Stages", "stage"),
        ObjectKind::Snippet => ("Snippets", "snippet"),
        ObjectKind::VariableSet => ("Variable sets", "variable set"),
        ObjectKind::ServiceLogin => ("Service logins", "service login"),
        ObjectKind::SshKey => ("SSH keys", "SSH key"),
        ObjectKind::Organization => ("Organizations", "organization"),
        ObjectKind::WorkerPool => ("Worker pools", "worker pool"),
        ObjectKind::User => ("Users", "user"),
        ObjectKind::Group => ("Groups", "group"),
    }
}

/// The display name of an object.
pub(crate) async fn handle(
    ctx: &Ctx,
    kind: ObjectKind,
    method: Method,
    rest: &[&str],
    req: &UiRequest,
    form: &Form,
) -> Response {
    let result = match (method, rest) {
        (Method::GET, []) => list(ctx, kind, req).await,
        (Method::GET, ["new"]) => new(ctx, kind, None).await,
        (Method::POST, ["new"]) => new(ctx, kind, Some(form)).await,
        (Method::GET, [id]) | (Method::GET, [id, "detail"]) => detail(ctx, kind, id.parse().unwrap_or(0)).await,
        (Method::GET, [id, "edit"]) => edit(ctx, kind, id.parse().unwrap_or(0), None).await,
        (Method::POST, [id, "edit"]) => edit(ctx, kind, id.parse().unwrap_or(0), Some(form)).await,
        (Method::POST, [id, "delete"]) => delete(ctx, kind, id.parse().unwrap_or(0)).await,
        _ => return error_page(Some(ctx), StatusCode::NOT_FOUND, &format!("There is no page at {}.", req.path)),
    };
    result.unwrap_or_else(|e| api_error_page(ctx, e))
}

/// Extra list columns per kind: (field, heading).
fn columns(kind: ObjectKind) -> &'static [(&'static str, &'static str)] {
    use ObjectKind::*;
    match kind {
        Pipeline => &[("description", "Description"), ("last_completed_date", "Last completed")],
        Snippet | VariableSet | Stage | ServiceLogin | SshKey | WorkerPool => &[("description", "Description")],
        Organization => &[("organization_identifier", "Organization"), ("last_build_id", "Last import")],
        User => &[("email", "E-mail"), ("is_superuser", "Superuser"), ("auth_source", "Password checked by")],
        Project | Group => &[],
    }
}

async fn list(ctx: &Ctx, kind: ObjectKind, _req: &UiRequest) -> Result<Response, ApiError> {
    let values = ctx.state.service.list_visible(&ctx.principal, kind).await?;
    let mut rows = Vec::new();
    for v in &values {
        let cols: Vec<String> = columns(kind)
            .iter()
            .map(|(f, _)| match &v[*f] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
                other => other.to_string(),
            })
            .collect();
        rows.push(json!({
            "id": v["id"],
            "name": objects::object_name(kind, v),
            "cols": cols,
            "can_edit": ctx.can("edit", kind.as_str(), Some(v)).await,
            "can_delete": ctx.can("delete", kind.as_str(), Some(v)).await,
        }));
    }
    let (plural, singular) = titles(kind);
    Ok(ctx.page(
        "list.html",
        json!({
            "kind": kind.as_str(),
            "segment": kind.plural(),
            "title": plural,
            "singular": singular,
            "headings": columns(kind).iter().map(|c| c.1).collect::<Vec<_>>(),
            "rows": rows,
            "can_create": ctx.can("create", kind.as_str(), None).await,
        }),
    ))
}

/// Splits an API error into field errors (shown next to the field) and a general one.
fn field_errors(kind: ObjectKind, e: ApiError) -> Result<(HashMap<String, String>, Option<String>), ApiError> {
    if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::UNAUTHORIZED || e.status == StatusCode::NOT_FOUND {
        return Err(e);
    }
    if e.status.is_server_error() {
        return Err(e);
    }
    let mut errors = HashMap::new();
    match e.field {
        Some(f) if forms::fields(kind).iter().any(|x| x.name == f) => {
            errors.insert(f, e.message);
            Ok((errors, None))
        }
        _ => Ok((errors, Some(e.message))),
    }
}

async fn form_page(
    ctx: &Ctx,
    kind: ObjectKind,
    object: &Value,
    form: Option<&Form>,
    errors: HashMap<String, String>,
    general: Option<String>,
    creating: bool,
) -> Response {
    let mut lookups = forms::lookups(ctx, kind).await;
    only_usable(ctx, kind, object, &mut lookups).await;
    let mut groups = forms::view(kind, object, form, &errors, &lookups, creating);
    if kind == ObjectKind::Project {
        forms::explain_keep_rules(&mut groups, &ctx.state.settings().retention);
    }
    let (_, singular) = titles(kind);
    let action = if creating {
        format!("/ui/{}/new", kind.plural())
    } else {
        format!("/ui/{}/{}/edit", kind.plural(), object["id"])
    };
    let status = if errors.is_empty() && general.is_none() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    ctx.page_with_status(
        "form.html",
        status,
        json!({
            "kind": kind.as_str(),
            "segment": kind.plural(),
            "singular": singular,
            "creating": creating,
            "id": object["id"],
            "name": objects::object_name(kind, object),
            "groups": groups,
            "action": action,
            "general_error": general,
            "error_count": errors.len(),
        }),
    )
}

/// Pickers offer only what the user may `use` (the server checks it again on
/// save), plus whatever the object already names so an edit keeps it.
async fn only_usable(ctx: &Ctx, kind: ObjectKind, object: &Value, lookups: &mut forms::Lookups) {
    if ctx.principal.user().is_none() {
        return;
    }
    for &(_, target) in objects::references(kind) {
        let Some(names) = lookups.get_mut(&target) else { continue };
        let mut keep: Vec<i64> = objects::references(kind)
            .iter()
            .filter(|(_, t)| *t == target)
            .flat_map(|(field, _)| objects::referenced_ids(&object[*field]))
            .collect();
        let candidates = names.keys().copied().collect();
        match ctx.state.service.usable(&ctx.principal, target, candidates).await {
            Ok(usable) => keep.extend(usable),
            Err(_) => continue,
        }
        names.retain(|id, _| keep.contains(id));
    }
}

async fn new(ctx: &Ctx, kind: ObjectKind, form: Option<&Form>) -> Result<Response, ApiError> {
    ctx.require("create", kind.as_str(), None).await?;
    let object = objects::defaults(kind)?;
    let Some(form) = form else {
        return Ok(form_page(ctx, kind, &object, None, HashMap::new(), None, true).await);
    };
    let lookups = forms::lookups(ctx, kind).await;
    let input = match forms::read(kind, form, &object, &lookups, true) {
        Ok(input) => input,
        Err(errors) => return Ok(form_page(ctx, kind, &object, Some(form), errors, None, true).await),
    };
    match ctx.state.service.create_object(&ctx.principal, ctx.client, kind, input).await {
        Ok(created) => Ok(redirect(&format!("/ui/{}/{}", kind.plural(), created["id"]))),
        Err(e) => {
            let (errors, general) = field_errors(kind, e.into())?;
            Ok(form_page(ctx, kind, &object, Some(form), errors, general, true).await)
        }
    }
}

async fn edit(ctx: &Ctx, kind: ObjectKind, id: i64, form: Option<&Form>) -> Result<Response, ApiError> {
    let current = ctx.state.service.get_value(kind, id).await?;
    ctx.require("view", kind.as_str(), Some(&current)).await?;
    let Some(form) = form else {
        if edit_allowed(ctx, kind, &current).await.is_err() {
            // As the original: no edit rights means the read-only page.
            return Ok(redirect(&format!("/ui/{}/{id}", kind.plural())));
        }
        return Ok(form_page(ctx, kind, &current, None, HashMap::new(), None, false).await);
    };
    // Refused before the form is even read: no errors for someone who may not edit.
    edit_allowed(ctx, kind, &current).await?;
    let lookups = forms::lookups(ctx, kind).await;
    let input = match forms::read(kind, form, &current, &lookups, false) {
        Ok(input) => input,
        Err(errors) => return Ok(form_page(ctx, kind, &current, Some(form), errors, None, false).await),
    };
    if input.is_empty() {
        return Ok(redirect(&format!("/ui/{}/{id}", kind.plural())));
    }
    match ctx.state.service.update_object(&ctx.principal, ctx.client, kind, id, input).await {
        Ok(_) => Ok(redirect(&format!("/ui/{}/{id}", kind.plural()))),
        Err(e) => {
            let (errors, general) = field_errors(kind, e.into())?;
            Ok(form_page(ctx, kind, &current, Some(form), errors, general, false).await)
        }
    }
}

/// Whether the object may be edited at all (for a user row: with no
/// privileged field named, which the authorization plugins check per change).
async fn edit_allowed(ctx: &Ctx, kind: ObjectKind, current: &Value) -> Result<(), ApiError> {
    // A user row is asked about with no privileged field named, which the plugins check per change.
    let changes: &[(&str, Value)] = if kind == ObjectKind::User { &[("changes", json!([]))] } else { &[] };
    Ok(ctx.state.service.authorize_on(&ctx.principal, "edit", kind.as_str(), current, changes).await?)
}

async fn detail(ctx: &Ctx, kind: ObjectKind, id: i64) -> Result<Response, ApiError> {
    let mut current = ctx.state.service.get_value(kind, id).await?;
    let mut partial = false;
    if let Err(e) = ctx.require("view", kind.as_str(), Some(&current)).await {
        // As in the API: another user's row shows its username only.
        if kind != ObjectKind::User || ctx.principal.user().is_none() || e.status != StatusCode::FORBIDDEN {
            return Err(e);
        }
        current = objects::user_summary(&current);
        partial = true;
    }
    let lookups = forms::lookups(ctx, kind).await;
    let mut groups: Vec<(&str, Vec<Value>)> = Vec::new();
    for field in forms::fields(kind) {
        if partial && current.get(field.name).is_none() {
            continue;
        }
        let v = json!({
            "label": field.label,
            "value": forms::display(field, &current[field.name], &lookups),
            "code": matches!(field.widget, forms::Widget::Code),
        });
        match groups.iter_mut().find(|(g, _)| *g == field.group) {
            Some((_, list)) => list.push(v),
            None => groups.push((field.group, vec![v])),
        }
    }
    if kind == ObjectKind::WorkerPool {
        // What autoscaling last did: read-only, so not in the form.
        let text = |v: &Value| match v {
            Value::Null => "never".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let outcome = match current["autoscaling_status"].as_i64() {
            None => "none yet".to_string(),
            Some(0) => "applied".to_string(),
            Some(_) => "failed".to_string(),
        };
        let decision = vec![
            json!({ "label": "Last decision", "value": text(&current["last_autoscaled"]), "code": false }),
            json!({ "label": "Outcome", "value": outcome, "code": false }),
            json!({ "label": "Message", "value": text(&current["autoscaling_message"]), "code": true }),
        ];
        match groups.iter_mut().find(|(g, _)| *g == "Autoscaling") {
            Some((_, list)) => list.extend(decision),
            None => groups.push(("Autoscaling", decision)),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, fields)| json!({ "name": g, "id": g.to_lowercase().replace(' ', "-"), "fields": fields }))
        .collect();
    let mut extra = json!({});
    if kind == ObjectKind::Project {
        let questions = super::pages::has_questions(&current);
        extra = json!({
            "can_start": ctx.can("start", "project", Some(&current)).await,
            "questions": questions,
            "active_build_id": current["active_build_id"],
            "last_build_id": current["last_build_id"],
            "history": super::pages::project_history(ctx, id).await?,
        });
    }
    let (_, singular) = titles(kind);
    let can_edit = edit_allowed(ctx, kind, &current).await.is_ok();
    Ok(ctx.page(
        "detail.html",
        json!({
            "kind": kind.as_str(),
            "segment": kind.plural(),
            "singular": singular,
            "id": id,
            "name": objects::object_name(kind, &current),
            "groups": groups,
            "can_edit": can_edit,
            "can_delete": ctx.can("delete", kind.as_str(), Some(&current)).await,
            "project": extra,
        }),
    ))
}

async fn delete(ctx: &Ctx, kind: ObjectKind, id: i64) -> Result<Response, ApiError> {
    ctx.state.service.delete_object(&ctx.principal, ctx.client, kind, id).await?;
    Ok(redirect(&format!("/ui/{}", kind.plural())))
}
