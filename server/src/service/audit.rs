//! The audit log as operations write and read it: who the actor is, what a
//! change looks like in a record (field names always; old and new values
//! only for fields that can never hold a secret), and the log's pages.

use serde_json::{json, Map, Value};

use super::{Error, Principal, Service};
use crate::store::{AuditActor, AuditEvent, AuditFilter, AuditObject, Build};

/// Longest value text kept in a change record; longer ones are cut.
const MAX_VALUE_CHARS: usize = 500;

/// The actor of an operation, from its principal and the client's address.
pub fn actor(principal: &Principal, client: Option<std::net::IpAddr>) -> AuditActor {
    match principal.user() {
        Some(u) => AuditActor::user(u, client),
        None => AuditActor { id: None, name: "anonymous".into(), remote_addr: client.map(|a| a.to_string()) },
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

impl Service {
    /// Records an audit event. The change it describes is already saved, so a
    /// failure to record is logged (with the event) rather than undoing it.
    pub async fn audit(&self, actor: &AuditActor, action: &str, object: &AuditObject, details: Value) {
        if let Err(e) = self.store().record_audit(actor, action, object, details.clone()).await {
            tracing::error!(
                error = %e, actor = %actor.name, action, kind = %object.kind, id = ?object.id,
                "cannot record an audit event"
            );
        }
    }

    /// Records a failed login: the username tried and the client's address.
    pub async fn audit_failed_login(&self, username: &str, client: Option<std::net::IpAddr>, reason: &str) {
        let actor = actor(&Principal::Anonymous, client);
        let object = AuditObject::new("user", None, username);
        self.audit(&actor, "login_failed", &object, json!({ "username": username, "reason": reason })).await;
    }

    /// A build as an audit record names it: its id and its project's name.
    pub async fn build_audit_object(&self, build: &Build) -> AuditObject {
        let project = match build.project_id {
            Some(pid) => self.store().get_project(pid).await.ok().flatten().map(|p| p.name).unwrap_or_default(),
            None => String::new(),
        };
        AuditObject::new("build", Some(build.id), project)
    }

    /// One page of the audit log (superusers only) and the cursor of the
    /// next (`before`), if there may be more.
    pub async fn audit_page(
        &self,
        principal: &Principal,
        filter: &AuditFilter,
    ) -> Result<(Vec<AuditEvent>, Option<i64>), Error> {
        principal.require_superuser("only superusers may read the audit log")?;
        let events = self.store().list_audit(filter).await?;
        let next = if events.len() as i64 == filter.limit { events.last().map(|e| e.id) } else { None };
        Ok((events, next))
    }
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
}
