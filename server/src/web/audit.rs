//! The audit log on the web side: who the actor of a request is, what a
//! change looks like in a record (field names always; old and new values only
//! for fields that can never hold a secret), and `GET /api/v1/audit`.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::store::{AuditActor, AuditEvent, AuditFilter, AuditObject};

/// Page size of `GET /api/v1/audit` when none is asked for, and the largest.
pub const PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

/// Longest value text kept in a change record; longer ones are cut.
const MAX_VALUE_CHARS: usize = 500;

/// The actor of a request.
pub fn actor(principal: &Principal, client: Option<std::net::IpAddr>) -> AuditActor {
    match principal.user() {
        Some(u) => AuditActor::user(u, client),
        None => AuditActor { id: None, name: "anonymous".into(), remote_addr: client.map(|a| a.to_string()) },
    }
}

impl AppState {
    /// Records an audit event. The change it describes is already saved, so a
    /// failure to record is logged (with the event) rather than undoing it.
    pub async fn audit(&self, actor: &AuditActor, action: &str, object: &AuditObject, details: Value) {
        if let Err(e) = self.store.record_audit(actor, action, object, details.clone()).await {
            tracing::error!(
                error = %e, actor = %actor.name, action, kind = %object.kind, id = ?object.id,
                "cannot record an audit event"
            );
        }
    }
}

/// Whether a field may hold a secret (or text a secret was pasted into): the
/// record names it, never its value. Secret variables live in `variables`.
pub fn secret_field(field: &str) -> bool {
    matches!(field, "variables" | "private_key" | "secret_values" | "launch_answers")
        || field.contains("password")
        || field.contains("secret")
        || field.contains("token")
}

/// What a create or update changed: `{"fields": [...], "changes": {field:
/// {"old", "new"}}}`. `asked` are the fields the request named; `before` and
/// `after` the object as the API shows it (secrets already masked there).
/// A secret field is listed by name whenever it was asked, even when its
/// masked reading did not change.
pub fn change_details(before: Option<&Value>, after: &Value, asked: &[String]) -> Value {
    let mut fields: Vec<String> = Vec::new();
    let mut changes = Map::new();
    for field in asked {
        if field == "current_password" {
            // Proof of the old password, not a change.
            continue;
        }
        let old = before.map(|b| b.get(field).cloned().unwrap_or(Value::Null));
        let new = after.get(field).cloned().unwrap_or(Value::Null);
        if secret_field(field) {
            fields.push(field.clone());
            continue;
        }
        if old.as_ref() == Some(&new) {
            continue;
        }
        fields.push(field.clone());
        let mut change = Map::new();
        if let Some(old) = old {
            change.insert("old".into(), shorten(old));
        }
        change.insert("new".into(), shorten(new));
        changes.insert(field.clone(), Value::Object(change));
    }
    fields.sort();
    json!({ "fields": fields, "changes": changes })
}

fn shorten(v: Value) -> Value {
    match v {
        Value::String(s) if s.chars().count() > MAX_VALUE_CHARS => {
            Value::String(s.chars().take(MAX_VALUE_CHARS).collect::<String>() + " [cut]")
        }
        other => other,
    }
}

/// The filters of `GET /api/v1/audit` (and of the UI page), from query pairs.
pub fn filter_from(query: &HashMap<String, String>) -> Result<AuditFilter, ApiError> {
    const KNOWN: &[&str] = &["actor", "action", "object_kind", "object_id", "since", "until", "before", "limit"];
    if let Some(key) = query.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::field(key, format!("unknown filter '{key}' for the audit log ({})", KNOWN.join(", "))));
    }
    let text = |name: &str| query.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string);
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        match text(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::field(name, format!("'{name}' must be a whole number, got '{v}'"))),
        }
    };
    let time = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        match text(name) {
            None => Ok(None),
            Some(v) => parse_time(&v).map(Some).ok_or_else(|| {
                ApiError::field(
                    name,
                    format!(
                        "'{name}' must be an RFC 3339 time (2026-01-31T12:00:00Z) or a date (2026-01-31), got '{v}'"
                    ),
                )
            }),
        }
    };
    let limit = number("limit")?.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", format!("'limit' must be from 1 to {MAX_PAGE}, got {limit}")));
    }
    Ok(AuditFilter {
        actor: text("actor"),
        action: text("action"),
        object_kind: text("object_kind"),
        object_id: number("object_id")?,
        since: time("since")?,
        until: time("until")?,
        before_id: number("before")?,
        limit,
    })
}

fn parse_time(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// Superusers only: 401 for nobody, 403 for an ordinary user.
pub fn require_superuser(principal: &Principal) -> Result<(), ApiError> {
    if !principal.require()?.is_superuser {
        return Err(ApiError::forbidden("only superusers may read the audit log"));
    }
    Ok(())
}

/// One page of events and the cursor of the next (`before`), if there may be more.
pub async fn page(state: &Arc<AppState>, filter: &AuditFilter) -> Result<(Vec<AuditEvent>, Option<i64>), ApiError> {
    let events = state.store.list_audit(filter).await?;
    let next = if events.len() as i64 == filter.limit { events.last().map(|e| e.id) } else { None };
    Ok((events, next))
}

/// `GET /api/v1/audit`.
pub async fn list(
    state: &Arc<AppState>,
    principal: &Principal,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, ApiError> {
    require_superuser(principal)?;
    let filter = filter_from(query)?;
    let (events, next) = page(state, &filter).await?;
    Ok(warp::reply::Reply::into_response(warp::reply::json(
        &json!({ "limit": filter.limit, "next_before": next, "results": events }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_named_without_values_and_others_show_old_and_new() {
        let before = json!({ "name": "a", "variables": "{\"X\":{\"secret\":\"********\"}}", "timeout": 60 });
        let after = json!({ "name": "b", "variables": "{\"X\":{\"secret\":\"********\"}}", "timeout": 60 });
        let asked = ["name", "variables", "timeout", "password", "current_password"].map(String::from);
        let d = change_details(Some(&before), &after, &asked);
        assert_eq!(d["fields"], json!(["name", "password", "variables"]));
        assert_eq!(d["changes"], json!({ "name": { "old": "a", "new": "b" } }));
    }

    #[test]
    fn bad_filters_name_the_field() {
        let q = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect::<HashMap<_, _>>();
        assert_eq!(filter_from(&q("since", "yesterday")).unwrap_err().field.as_deref(), Some("since"));
        assert_eq!(filter_from(&q("limit", "0")).unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(filter_from(&q("colour", "red")).unwrap_err().field.as_deref(), Some("colour"));
        let f = filter_from(&q("since", "2026-01-31")).unwrap();
        assert_eq!(f.since.unwrap().to_rfc3339(), "2026-01-31T00:00:00+00:00");
    }
}
