//! The audit log: one row per state change, login, token, build start or
//! stop, and the plugins loaded at start (`audit_events`, migration 9).
//!
//! Rows are written in the transaction of the change they describe (an
//! [`AuditEntry`]) or, for events that change nothing else (a refused login,
//! the plugins a start loaded), on their own; they are never updated.
//! The actor's username is copied into the row, so the log still says who
//! after the user is deleted. Callers put only names and non-secret values
//! into `details`: this module stores what it is given.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use vespene_store_derive::FromRow;

use super::row::{self, get_i64, FromRow as _};
use super::*;

/// An audit record to write in the transaction of the change it describes.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Who did it.
    pub actor: AuditActor,
    /// What they did (`create`, `update`, `build.pin`, ...).
    pub action: String,
    /// What it was done to.
    pub object: AuditObject,
    /// The change: field names, and old and new values where no secret can be.
    pub details: Value,
}

impl AuditEntry {
    /// Writes the record on `executor` (a transaction's connection).
    pub(super) async fn insert<'e, E>(&self, executor: E) -> Result<Id>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        insert_audit(executor, &self.actor, &self.action, &self.object, &self.details).await
    }
}

/// Who did it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditActor {
    /// The user's id; `None` for the server itself or an anonymous client.
    pub id: Option<i64>,
    /// The username, or `system` / `anonymous`.
    pub name: String,
    /// The client's address, when the change came over HTTP.
    pub remote_addr: Option<String>,
}

impl AuditActor {
    /// The server itself (start-up, schedules, webhooks, pipelines).
    pub fn system() -> Self {
        AuditActor { id: None, name: "system".into(), remote_addr: None }
    }

    /// A logged-in user.
    pub fn user(user: &User, remote_addr: Option<std::net::IpAddr>) -> Self {
        AuditActor { id: Some(user.id), name: user.username.clone(), remote_addr: remote_addr.map(|a| a.to_string()) }
    }
}

/// What it was done to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditObject {
    /// The object kind (`project`, `build`, `user`, `token`, `plugins`, ...).
    pub kind: String,
    /// Its id, when it has one.
    pub id: Option<i64>,
    /// Its name at the time.
    pub name: String,
}

impl AuditObject {
    /// An object by kind, id and name.
    pub fn new(kind: &str, id: Option<Id>, name: impl Into<String>) -> Self {
        AuditObject { kind: kind.into(), id, name: name.into() }
    }
}

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema, FromRow)]
pub struct AuditEvent {
    /// Row id; newer events have larger ids.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The actor's user id, if a user.
    pub actor_id: Option<i64>,
    /// The actor's username, `system` or `anonymous`.
    pub actor: String,
    /// What happened: `create`, `update`, `delete`, `login`, `login_failed`,
    /// `token.create`, `token.revoke`, `build.start`, `build.stop`, ...
    pub action: String,
    /// The object's kind.
    pub object_kind: String,
    /// The object's id.
    pub object_id: Option<i64>,
    /// The object's name at the time.
    pub object_name: String,
    /// The client's address ("" when not over HTTP).
    pub remote_addr: String,
    /// More about it (changed field names, non-secret old and new values).
    #[row(read = details_from)]
    pub details: Value,
}

/// Which events to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this actor (username).
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only objects of this kind.
    pub object_kind: Option<String>,
    /// Only this object id.
    pub object_id: Option<i64>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Only events older than this id (the paging cursor).
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// Inserts one audit event through `executor`: the pool, or the
/// transaction of the change it records.
pub(super) async fn insert_audit<'e, E>(
    executor: E,
    actor: &AuditActor,
    action: &str,
    object: &AuditObject,
    details: &Value,
) -> Result<Id>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let r = sqlx::query(
        "INSERT INTO audit_events (at, actor_id, actor, action, object_kind, object_id, object_name, \
         remote_addr, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(now().timestamp_millis())
    .bind(actor.id)
    .bind(actor.name.clone())
    .bind(action.to_string())
    .bind(object.kind.clone())
    .bind(object.id)
    .bind(object.name.clone())
    .bind(actor.remote_addr.clone().unwrap_or_default())
    .bind(details.to_string())
    .fetch_one(executor)
    .await?;
    get_i64(&r, "id")
}

impl Store {
    /// Records one audit event; answers its id. Every part of the server that
    /// changes state calls this (the web tier for objects, logins and tokens,
    /// the engine for builds, `serve` for the plugins it loaded).
    pub async fn record_audit(
        &self,
        actor: &AuditActor,
        action: &str,
        object: &AuditObject,
        details: Value,
    ) -> Result<Id> {
        insert_audit(&self.pool, actor, action, object, &details).await
    }

    /// Events matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds: Vec<row::Val> = Vec::new();
        let mut add = |clause: &str, v: row::Val| {
            binds.push(v);
            clauses.push(clause.replace('?', &format!("${}", binds.len())));
        };
        if let Some(a) = &filter.actor {
            add("actor = ?", a.clone().into());
        }
        if let Some(a) = &filter.action {
            add("action = ?", a.clone().into());
        }
        if let Some(k) = &filter.object_kind {
            add("object_kind = ?", k.clone().into());
        }
        if let Some(id) = filter.object_id {
            add("object_id = ?", id.into());
        }
        if let Some(t) = filter.since {
            add("at >= ?", t.into());
        }
        if let Some(t) = filter.until {
            add("at < ?", t.into());
        }
        if let Some(id) = filter.before_id {
            add("id < ?", id.into());
        }
        let mut sql = "SELECT * FROM audit_events".to_string();
        if !clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&clauses.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit.max(1)));
        self.read_rows(&sql, &binds, |r| AuditEvent::from_row(r)).await
    }

    /// Deletes up to `limit` events (0: all) recorded before `cutoff`; answers how many.
    pub async fn delete_audit_before(&self, cutoff: DateTime<Utc>, limit: i64) -> Result<u64> {
        let done = if limit > 0 {
            sqlx::query(
                "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)",
            )
            .bind(cutoff.timestamp_millis())
            .bind(limit)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query("DELETE FROM audit_events WHERE at < $1")
                .bind(cutoff.timestamp_millis())
                .execute(&self.pool)
                .await?
        };
        Ok(done.rows_affected())
    }
}

/// The `details` column: JSON, or the text itself if it is not.
fn details_from(details: String) -> Value {
    serde_json::from_str(&details).unwrap_or(Value::String(details))
}
