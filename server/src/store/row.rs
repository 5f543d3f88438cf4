//! Low-level helpers shared by the query modules: converting values to and
//! from the representations the `Any` driver carries (times as epoch
//! milliseconds, booleans that arrive as integers from SQLite), building
//! INSERT/UPDATE statements from column lists, and turning constraint errors
//! into readable [`StoreError`]s.
//!
//! A struct stored as a row derives [`FromRow`] (and [`ToColumns`] when the
//! generic save path writes it) with `vespene-store-derive`; each field is
//! read and written through its type's [`Column`] impl here, so what a time,
//! a boolean or a secret looks like in the database is said once, in this
//! file. A row is read through [`RowRead`], which both the `Any` driver's
//! rows and the SQLite read path's rows (`store::reads`) implement.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::AnyArguments;
pub(crate) use sqlx::any::AnyRow;
use sqlx::query::Query;
use sqlx::{Any, Row};

use super::{BuildStatus, Id, Result, Secret, SecretCipher, StoreError};

/// The `(column, value)` pairs an INSERT or UPDATE writes.
pub(crate) type Cols = Vec<(&'static str, Val)>;

/// A struct read from a row, one field per column (`#[derive(FromRow)]`).
pub(crate) trait FromRow: Sized {
    /// The columns read, comma-separated, for a `SELECT` that must not read
    /// `*` (the users' password hashes stay in the database).
    const COLUMNS: &'static str;
    /// The fields the server keeps and clients may not set: `id`, and the
    /// fields marked `#[row(read_only)]` or `#[row(kept)]`.
    const KEPT: &'static [&'static str];
    /// The struct from one row; the `skip` fields are left at their default.
    fn from_row<R: RowRead + ?Sized>(row: &R) -> Result<Self>;
}

/// A struct written as a row (`#[derive(ToColumns)]`).
pub(crate) trait ToColumns {
    /// The columns to write. `secrets` seals secret fields; a secret that is
    /// `Stored` is left out, so the stored value is kept.
    fn columns(&self, secrets: &dyn SecretCipher) -> Result<Cols>;
}

/// How one field's type is stored in a column.
pub(crate) trait Column: Sized {
    /// The value of column `col` of `row`.
    fn read<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Self>;
    /// The value to bind; `None` leaves the column out of the statement.
    fn write(&self, secrets: &dyn SecretCipher) -> Result<Option<Val>>;
}

/// Types whose stored value is their own: written as is.
macro_rules! plain_column {
    ($($t:ty => $read:ident),* $(,)?) => {$(
        impl Column for $t {
            fn read<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Self> {
                $read(row, col)
            }
            fn write(&self, _: &dyn SecretCipher) -> Result<Option<Val>> {
                Ok(Some(self.clone().into()))
            }
        }
    )*};
}

plain_column! {
    i64 => get_i64,
    Option<i64> => get_opt_i64,
    f64 => get_f64,
    bool => get_bool,
    String => get_str,
    Option<String> => get_opt_str,
    DateTime<Utc> => get_time,
    Option<DateTime<Utc>> => get_opt_time,
}

/// Sealed with the store's cipher; read back as set or not, never in clear.
impl Column for Secret {
    fn read<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Self> {
        Ok(match get_opt_str(row, col)? {
            Some(s) if !s.is_empty() => Secret::Stored,
            _ => Secret::Empty,
        })
    }
    fn write(&self, secrets: &dyn SecretCipher) -> Result<Option<Val>> {
        Ok(match self {
            Secret::Stored => None,
            Secret::Empty => Some(Val::Text(None)),
            Secret::Set(p) => Some(Val::Text(Some(secrets.encrypt(p)?))),
        })
    }
}

/// Its stored spelling; an unknown one is an error, not a guess.
impl Column for BuildStatus {
    fn read<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Self> {
        let status = get_str(row, col)?;
        BuildStatus::parse(&status)
            .ok_or_else(|| StoreError::Config(format!("unknown build status '{status}' in the database")))
    }
    fn write(&self, _: &dyn SecretCipher) -> Result<Option<Val>> {
        Ok(Some(self.as_str().into()))
    }
}

/// `s`, or `empty` when it is blank (`#[row(json_default = "{}")]`).
pub(crate) fn json_default(s: &str, empty: &str) -> String {
    if s.trim().is_empty() {
        empty.to_string()
    } else {
        s.to_string()
    }
}

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

// What some fields are saved as (`#[row(write = ...)]`).

/// Blank is NULL: an optional text left empty in a form is no value.
pub(crate) fn blank_as_null(v: &Option<String>) -> Option<String> {
    v.clone().filter(|s| !s.is_empty())
}

/// 0 is NULL: for the keep rules, both mean the administrator's default.
pub(crate) fn zero_as_null(v: &Option<i64>) -> Option<i64> {
    v.filter(|v| *v > 0)
}

/// Without surrounding white space.
pub(crate) fn trimmed(v: &str) -> String {
    v.trim().to_string()
}

/// Trimmed, and `UTC` when blank (a schedule's time zone).
pub(crate) fn utc_if_blank(v: &str) -> String {
    match v.trim() {
        "" => "UTC".to_string(),
        v => v.to_string(),
    }
}

/// An empty new value clears the secret rather than sealing "" (a
/// project's webhook token).
pub(crate) fn empty_secret_cleared(v: &Secret) -> Secret {
    match v {
        Secret::Set(t) if t.is_empty() => Secret::Empty,
        other => other.clone(),
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

/// One row of a query's answer, its columns read by name. NULL reads as
/// `None`; a value of another type is an error naming the column.
pub(crate) trait RowRead {
    /// An integer column (a SQLite boolean is one too).
    fn int(&self, col: &str) -> Result<Option<i64>>;
    /// A floating-point column.
    fn real(&self, col: &str) -> Result<Option<f64>>;
    /// A text column.
    fn text(&self, col: &str) -> Result<Option<String>>;
    /// A boolean: PostgreSQL's `BOOLEAN`, or SQLite's integer.
    fn boolean(&self, col: &str) -> Result<Option<bool>>;
    /// A binary column.
    fn bytes(&self, col: &str) -> Result<Option<Vec<u8>>>;
}

impl RowRead for AnyRow {
    fn int(&self, col: &str) -> Result<Option<i64>> {
        Ok(self.try_get::<Option<i64>, _>(col)?)
    }
    fn real(&self, col: &str) -> Result<Option<f64>> {
        Ok(self.try_get::<Option<f64>, _>(col)?)
    }
    fn text(&self, col: &str) -> Result<Option<String>> {
        Ok(self.try_get::<Option<String>, _>(col)?)
    }
    /// The value's type is looked at first: a failed decode builds an error
    /// message, which cost more than the rest of reading the row.
    fn boolean(&self, col: &str) -> Result<Option<bool>> {
        use sqlx::any::AnyTypeInfoKind;
        use sqlx::ValueRef;
        let value = self.try_get_raw(col)?;
        if value.is_null() {
            return Ok(None);
        }
        match value.type_info().kind() {
            AnyTypeInfoKind::Bool => Ok(Some(self.try_get::<bool, _>(col)?)),
            _ => Ok(Some(self.try_get::<i64, _>(col)? != 0)),
        }
    }
    fn bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.try_get::<Option<Vec<u8>>, _>(col)?)
    }
}

/// The error for a NULL where a value must be.
pub(crate) fn unexpected_null(col: &str) -> StoreError {
    StoreError::Db(sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: Box::new(sqlx::error::UnexpectedNullError),
    })
}

pub(crate) fn get_i64<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<i64> {
    row.int(col)?.ok_or_else(|| unexpected_null(col))
}

pub(crate) fn get_opt_i64<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Option<i64>> {
    row.int(col)
}

pub(crate) fn get_f64<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<f64> {
    row.real(col)?.ok_or_else(|| unexpected_null(col))
}

/// NULL reads as "".
pub(crate) fn get_str<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<String> {
    Ok(row.text(col)?.unwrap_or_default())
}

pub(crate) fn get_opt_str<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Option<String>> {
    row.text(col)
}

/// Ids aggregated into one column as comma-separated text (`string_agg`);
/// none when the column is null.
pub(crate) fn get_id_list<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Vec<i64>> {
    let Some(text) = get_opt_str(row, col)? else {
        return Ok(Vec::new());
    };
    let ids = text.split(',').map(str::parse::<i64>).collect::<std::result::Result<Vec<_>, _>>();
    Ok(ids.map_err(|e| sqlx::Error::ColumnDecode { index: col.to_string(), source: Box::new(e) })?)
}

pub(crate) fn get_bool<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<bool> {
    row.boolean(col)?.ok_or_else(|| unexpected_null(col))
}

pub(crate) fn get_time<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<DateTime<Utc>> {
    Ok(from_millis(get_i64(row, col)?))
}

pub(crate) fn get_opt_time<R: RowRead + ?Sized>(row: &R, col: &str) -> Result<Option<DateTime<Utc>>> {
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
