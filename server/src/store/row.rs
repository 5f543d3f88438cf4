//! Low-level helpers shared by the query modules: converting values to and
//! from the representations the `Any` driver carries (times as epoch
//! milliseconds, booleans that arrive as integers from SQLite), building
//! INSERT/UPDATE statements from column lists, and turning constraint errors
//! into readable [`StoreError`]s.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::{Id, Result, StoreError};

/// A column value to bind.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Int(Option<i64>),
    Real(f64),
    Bool(bool),
    Text(Option<String>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(Some(v))
    }
}
impl From<Option<i64>> for Val {
    fn from(v: Option<i64>) -> Self {
        Val::Int(v)
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        Val::Real(v)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Self {
        Val::Bool(v)
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        Val::Text(Some(v))
    }
}
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(Some(v.to_string()))
    }
}
impl From<Option<String>> for Val {
    fn from(v: Option<String>) -> Self {
        Val::Text(v)
    }
}
impl From<Option<DateTime<Utc>>> for Val {
    fn from(v: Option<DateTime<Utc>>) -> Self {
        Val::Int(v.map(|t| t.timestamp_millis()))
    }
}
impl From<DateTime<Utc>> for Val {
    fn from(v: DateTime<Utc>) -> Self {
        Val::Int(Some(v.timestamp_millis()))
    }
}

/// Binds one value.
pub(crate) fn bind<'q>(q: Query<'q, Any, AnyArguments<'q>>, v: Val) -> Query<'q, Any, AnyArguments<'q>> {
    match v {
        Val::Int(i) => q.bind(i),
        Val::Real(f) => q.bind(f),
        Val::Bool(b) => q.bind(b),
        Val::Text(s) => q.bind(s),
    }
}

/// `INSERT INTO table (cols) VALUES ($1..) RETURNING id`.
pub(crate) fn insert_sql(table: &str, cols: &[(&'static str, Val)]) -> String {
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    let params: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    format!("INSERT INTO {table} ({}) VALUES ({}) RETURNING id", names.join(", "), params.join(", "))
}

/// `UPDATE table SET a = $1, .. WHERE id = $N`.
pub(crate) fn update_sql(table: &str, cols: &[(&'static str, Val)]) -> String {
    let sets: Vec<String> = cols.iter().enumerate().map(|(i, (n, _))| format!("{n} = ${}", i + 1)).collect();
    format!("UPDATE {table} SET {} WHERE id = ${}", sets.join(", "), cols.len() + 1)
}

/// Now, truncated to the millisecond precision we store.
pub fn now() -> DateTime<Utc> {
    from_millis(Utc::now().timestamp_millis())
}

pub(crate) fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn get_i64(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub(crate) fn get_opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(col)?)
}

pub(crate) fn get_f64(row: &AnyRow, col: &str) -> Result<f64> {
    Ok(row.try_get::<f64, _>(col)?)
}

pub(crate) fn get_str(row: &AnyRow, col: &str) -> Result<String> {
    Ok(row.try_get::<Option<String>, _>(col)?.unwrap_or_default())
}

pub(crate) fn get_opt_str(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(col)?)
}

/// PostgreSQL hands back a boolean; SQLite an integer.
pub(crate) fn get_bool(row: &AnyRow, col: &str) -> Result<bool> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(col)? != 0),
    }
}

pub(crate) fn get_time(row: &AnyRow, col: &str) -> Result<DateTime<Utc>> {
    Ok(from_millis(get_i64(row, col)?))
}

pub(crate) fn get_opt_time(row: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(get_opt_i64(row, col)?.map(from_millis))
}

/// Maps constraint violations to readable errors; `what` names the object
/// (e.g. "project") and `name` its name for the duplicate message.
pub(crate) fn map_db_err(e: sqlx::Error, what: &str, name: &str) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
            return StoreError::Conflict(format!("a {what} named '{name}' already exists"));
        }
        if is_fk_violation(db.as_ref()) {
            return StoreError::Reference(format!(
                "{what} '{name}' refers to an object that does not exist, or is still in use: {}",
                db.message()
            ));
        }
    }
    StoreError::Db(e)
}

/// True for a foreign-key violation. SQLite reports `ON DELETE RESTRICT`
/// with a trigger constraint code, so the message is checked too.
pub(crate) fn is_fk_violation(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation || db.message().contains("FOREIGN KEY constraint failed")
}

/// `$a, $a+1, ...` for an IN list starting at placeholder `start`.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Reads a list of ids from a link table, in link order.
pub(crate) async fn link_ids<'e, E>(
    exec: E,
    table: &str,
    owner_col: &str,
    target_col: &str,
    owner: Id,
) -> Result<Vec<Id>>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let sql = format!("SELECT {target_col} FROM {table} WHERE {owner_col} = $1 ORDER BY position, {target_col}");
    let rows = sqlx::query(&sql).bind(owner).fetch_all(exec).await?;
    rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
}

/// Replaces the links of one owner in a link table (inside the caller's
/// transaction), keeping the given order in `position`.
pub(crate) async fn set_links(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    owner_col: &str,
    target_col: &str,
    owner: Id,
    targets: &[Id],
) -> Result<()> {
    sqlx::query(&format!("DELETE FROM {table} WHERE {owner_col} = $1")).bind(owner).execute(&mut *conn).await?;
    let mut seen = std::collections::HashSet::new();
    for (pos, t) in targets.iter().enumerate() {
        if !seen.insert(*t) {
            continue;
        }
        let sql = format!("INSERT INTO {table} ({owner_col}, {target_col}, position) VALUES ($1, $2, $3)");
        sqlx::query(&sql).bind(owner).bind(*t).bind(pos as i64).execute(&mut *conn).await.map_err(|e| {
            if let sqlx::Error::Database(db) = &e {
                if is_fk_violation(db.as_ref()) {
                    return StoreError::Reference(format!("{table}: {target_col} {t} does not exist"));
                }
            }
            StoreError::Db(e)
        })?;
    }
    Ok(())
}
