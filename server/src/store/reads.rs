//! Reads outside a transaction: [`Store::read_rows`] and
//! [`Store::read_row`], the path of every read the store makes outside one
//! (a read inside a write's transaction stays on its connection, to see the
//! transaction's own changes).
//!
//! On PostgreSQL, and on a SQLite database that is not a file, a read goes
//! through the sqlx pool like every other statement. On a SQLite file it runs
//! in place, on the calling thread, over a small pool of read-only
//! connections of its own ([`SqliteReader`]): a SQLite read is a few
//! microseconds of work in this process, and sqlx's driver hands each
//! statement to the connection's own thread and back and copies every value
//! twice (out of SQLite, then into its `Any` row), which cost more than the
//! read itself. In WAL mode a reader never waits for the writer, so running
//! in place does not hold up the runtime behind a write; each statement is
//! its own read transaction and sees every commit made before it.
//!
//! The SQL is the same for both: `$N` placeholders, which SQLite reads as
//! named parameters (bound here by their number, as sqlx does).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::row::{bind, RowRead, Val};
use super::{Result, Store, StoreError};

/// Connections kept open between reads: one per runtime thread and a few
/// for blocking tasks. More are opened when more read at once, and closed
/// after.
const IDLE_CONNECTIONS: usize = 8;

/// Prepared statements kept per connection: the API's reads are a few dozen
/// distinct statements.
const STATEMENT_CACHE: usize = 64;

/// Read-only connections to one SQLite file, lent out one per read.
pub(crate) struct SqliteReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: AtomicBool,
}

impl SqliteReader {
    /// A reader of the database at `path`; one connection is opened now, so
    /// a file that cannot be read is an error at open.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let reader = SqliteReader { path: path.to_path_buf(), idle: Mutex::new(Vec::new()), closed: false.into() };
        let first = reader.connect()?;
        reader.idle().push(first);
        Ok(reader)
    }

    fn connect(&self) -> Result<Connection> {
        // Read-write, so it shares the WAL index with the writer; `query_only`
        // makes any statement that would write fail.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the list was held left it whole: it is only pushed and popped.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the idle connections; later reads fail, as the sqlx pool's do.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.idle().clear();
    }

    /// At most `max` rows of `sql` with `args` bound to `$1..`, each mapped by `each`.
    pub(crate) fn read<T>(
        &self,
        sql: &str,
        args: &[Val],
        max: usize,
        mut each: impl FnMut(&dyn RowRead) -> Result<T>,
    ) -> Result<Vec<T>> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Db(sqlx::Error::PoolClosed));
        }
        let popped = self.idle().pop();
        let conn = match popped {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let answer = read_with(&conn, sql, args, max, &mut each);
        let mut idle = self.idle();
        if idle.len() < IDLE_CONNECTIONS && !self.closed.load(Ordering::SeqCst) {
            idle.push(conn);
        }
        answer
    }
}

fn read_with<T>(
    conn: &Connection,
    sql: &str,
    args: &[Val],
    max: usize,
    each: &mut dyn FnMut(&dyn RowRead) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    for index in 1..=stmt.parameter_count() {
        let number = stmt.parameter_name(index).and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok());
        let Some(value) = number.and_then(|n| args.get(n.checked_sub(1)?)) else {
            return Err(StoreError::Config(format!("parameter {index} of a read has no value: {sql}")));
        };
        match value {
            Val::Int(v) => stmt.raw_bind_parameter(index, v)?,
            Val::Real(v) => stmt.raw_bind_parameter(index, v)?,
            Val::Bool(v) => stmt.raw_bind_parameter(index, v)?,
            Val::Text(v) => stmt.raw_bind_parameter(index, v)?,
        }
    }
    let names: Vec<String> = stmt.column_names().into_iter().map(str::to_string).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while out.len() < max {
        let Some(row) = rows.next()? else { break };
        out.push(each(&SqliteRow { row, names: &names, next: 0.into() })?);
    }
    Ok(out)
}

/// A row of the SQLite read path, its values read in place.
struct SqliteRow<'r> {
    row: &'r rusqlite::Row<'r>,
    names: &'r [String],
    /// Where the next column looked up probably is: a struct's fields are
    /// mostly read in the order of its table's columns.
    next: std::cell::Cell<usize>,
}

impl SqliteRow<'_> {
    fn value(&self, col: &str) -> Result<ValueRef<'_>> {
        let guess = self.next.get();
        let index = if self.names.get(guess).is_some_and(|n| n == col) {
            guess
        } else {
            self.names
                .iter()
                .position(|n| n == col)
                .ok_or_else(|| StoreError::Db(sqlx::Error::ColumnNotFound(col.to_string())))?
        };
        self.next.set(index + 1);
        Ok(self.row.get_ref(index)?)
    }
}

fn wrong_type(col: &str, expected: &str, found: ValueRef<'_>) -> StoreError {
    let found = match found {
        ValueRef::Null => "NULL",
        ValueRef::Integer(_) => "an integer",
        ValueRef::Real(_) => "a real",
        ValueRef::Text(_) => "text",
        ValueRef::Blob(_) => "a blob",
    };
    StoreError::Db(sqlx::Error::ColumnDecode {
        index: col.to_string(),
        source: format!("expected {expected}, found {found}").into(),
    })
}

impl RowRead for SqliteRow<'_> {
    fn int(&self, col: &str) -> Result<Option<i64>> {
        match self.value(col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Integer(i) => Ok(Some(i)),
            other => Err(wrong_type(col, "an integer", other)),
        }
    }
    fn real(&self, col: &str) -> Result<Option<f64>> {
        match self.value(col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Real(f) => Ok(Some(f)),
            ValueRef::Integer(i) => Ok(Some(i as f64)),
            other => Err(wrong_type(col, "a real", other)),
        }
    }
    fn text(&self, col: &str) -> Result<Option<String>> {
        match self.value(col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => Ok(Some(s.to_string())),
                Err(e) => Err(StoreError::Db(sqlx::Error::ColumnDecode { index: col.to_string(), source: e.into() })),
            },
            other => Err(wrong_type(col, "text", other)),
        }
    }
    fn boolean(&self, col: &str) -> Result<Option<bool>> {
        Ok(self.int(col)?.map(|i| i != 0))
    }
    fn bytes(&self, col: &str) -> Result<Option<Vec<u8>>> {
        match self.value(col)? {
            ValueRef::Null => Ok(None),
            ValueRef::Blob(b) | ValueRef::Text(b) => Ok(Some(b.to_vec())),
            other => Err(wrong_type(col, "a blob", other)),
        }
    }
}

impl Store {
    /// The rows of a read outside any transaction, each mapped by `each`.
    pub(crate) async fn read_rows<T>(
        &self,
        sql: &str,
        args: &[Val],
        each: impl FnMut(&dyn RowRead) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.read_up_to(sql, args, usize::MAX, each).await
    }

    /// The first row of a read outside any transaction, mapped by `each`.
    pub(crate) async fn read_row<T>(
        &self,
        sql: &str,
        args: &[Val],
        each: impl FnMut(&dyn RowRead) -> Result<T>,
    ) -> Result<Option<T>> {
        Ok(self.read_up_to(sql, args, 1, each).await?.into_iter().next())
    }

    async fn read_up_to<T>(
        &self,
        sql: &str,
        args: &[Val],
        max: usize,
        mut each: impl FnMut(&dyn RowRead) -> Result<T>,
    ) -> Result<Vec<T>> {
        if let Some(reader) = &self.reader {
            return reader.read(sql, args, max, each);
        }
        let mut query = sqlx::query(sql);
        for arg in args {
            query = bind(query, arg.clone());
        }
        if max == 1 {
            return query.fetch_optional(&self.pool).await?.map(|r| each(&r)).into_iter().collect();
        }
        query.fetch_all(&self.pool).await?.iter().take(max).map(|r| each(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::row::{get_i64, get_str, FromRow};
    use crate::store::test_store::sqlite;
    use crate::store::{Build, BuildStatus, NewBuild, Project, WorkerPool};

    /// `$N` is the N-th value whatever the order the statement names them in,
    /// and a number named twice is one value.
    #[tokio::test]
    async fn parameters_are_bound_by_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        assert!(store.reader.is_some(), "a SQLite file is read in place");
        let args = [Val::from(7), Val::from("seven"), Val::Text(None)];
        let read = store
            .read_row("SELECT $2 AS word, $1 AS number, $1 + 1 AS next, $3 AS absent", &args, |r| {
                Ok((get_str(r, "word")?, get_i64(r, "number")?, get_i64(r, "next")?, r.text("absent")?))
            })
            .await
            .unwrap();
        assert_eq!(read, Some(("seven".to_string(), 7, 8, None)));
        let missing = store.read_row("SELECT $2 AS word", &args[..1], |r| get_str(r, "word")).await.unwrap_err();
        assert!(missing.to_string().contains("parameter 1 of a read has no value"), "{missing}");
    }

    /// A read is its own read transaction: it sees every commit before it,
    /// on a connection that was lent before the commit too.
    #[tokio::test]
    async fn a_read_sees_every_commit_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let names = || store.read_rows("SELECT name FROM projects ORDER BY name", &[], |r| get_str(r, "name"));
        assert_eq!(names().await.unwrap(), Vec::<String>::new());
        let pool = store.create_worker_pool(&WorkerPool { name: "p".into(), ..Default::default() }).await.unwrap();
        let id = store
            .create_project(&Project { name: "a".into(), worker_pool_id: pool, ..Default::default() })
            .await
            .unwrap();
        assert_eq!(names().await.unwrap(), ["a"]);
        sqlx::query("UPDATE projects SET name = 'b' WHERE id = $1").bind(id).execute(&store.pool).await.unwrap();
        assert_eq!(names().await.unwrap(), ["b"]);
        // At most one row for `read_row`, whatever the statement answers.
        store.create_project(&Project { name: "c".into(), worker_pool_id: pool, ..Default::default() }).await.unwrap();
        let first = store.read_row("SELECT name FROM projects ORDER BY name", &[], |r| get_str(r, "name")).await;
        assert_eq!(first.unwrap().as_deref(), Some("b"));
    }

    /// The in-place connections are `query_only`: a statement that would
    /// write fails, and nothing changes.
    #[tokio::test]
    async fn the_read_path_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let pool = store.create_worker_pool(&WorkerPool { name: "p".into(), ..Default::default() }).await.unwrap();
        for sql in ["DELETE FROM worker_pools", "UPDATE worker_pools SET name = 'q'", "DROP TABLE worker_pools"] {
            let refused = store.read_rows(sql, &[], |_| Ok(())).await.unwrap_err();
            assert!(refused.to_string().contains("readonly"), "{sql}: {refused}");
        }
        assert_eq!(store.get_worker_pool(pool).await.unwrap().unwrap().name, "p");
    }

    /// The same row reads the same through the in-place path and through
    /// sqlx's `Any` driver: every field of a project and a build.
    #[tokio::test]
    async fn both_paths_read_a_row_alike() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let pool = store
            .create_worker_pool(&WorkerPool {
                name: "p".into(),
                running_weight: 1.5,
                autoscaling_enabled: true,
                autoscaler: "fixed".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let id = store
            .create_project(&Project {
                name: "every field".into(),
                worker_pool_id: pool,
                variables: r#"{"a": "ü"}"#.into(),
                log_keep_days: Some(3),
                container_base_image: Some("debian".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let build = store
            .create_build(&NewBuild {
                project_id: Some(id),
                worker_pool_id: pool,
                status: Some(BuildStatus::Failure),
                ..Default::default()
            })
            .await
            .unwrap();
        async fn alike<T: FromRow + PartialEq + std::fmt::Debug>(store: &Store, sql: &str, id: i64) {
            let in_place = store.read_row(sql, &[id.into()], |r| T::from_row(r)).await.unwrap().unwrap();
            let any = sqlx::query(sql).bind(id).fetch_one(&store.pool).await.unwrap();
            assert_eq!(in_place, T::from_row(&any).unwrap());
        }
        alike::<Project>(&store, "SELECT * FROM projects WHERE id = $1", id).await;
        alike::<Build>(&store, "SELECT * FROM builds WHERE id = $1", build.id).await;
        alike::<WorkerPool>(&store, "SELECT * FROM worker_pools WHERE id = $1", pool).await;
    }

    /// A NULL where a value must be, or a value of another type, is an
    /// error naming the column.
    #[tokio::test]
    async fn a_value_that_does_not_fit_names_its_column() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        let read = |sql: &'static str| store.read_row(sql, &[], |r| get_i64(r, "value"));
        for (sql, expected) in [
            ("SELECT NULL AS value", "value"),
            ("SELECT 'seven' AS value", "expected an integer, found text"),
            ("SELECT 1 AS other", "value"),
        ] {
            let refused = read(sql).await.unwrap_err().to_string();
            assert!(refused.contains(expected), "{sql}: {refused}");
        }
    }

    /// After `close`, a read fails as one on the closed pool does.
    #[tokio::test]
    async fn a_closed_store_reads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite(dir.path()).await;
        assert_eq!(store.read_row("SELECT 1 AS one", &[], |r| get_i64(r, "one")).await.unwrap(), Some(1));
        store.close().await;
        let refused = store.read_row("SELECT 1 AS one", &[], |r| get_i64(r, "one")).await.unwrap_err();
        assert!(matches!(refused, StoreError::Db(sqlx::Error::PoolClosed)), "{refused}");
    }
}
