//! The store: every persistent object of Vespene and the queries over them.
//!
//! Owns the database schema (migrations for SQLite and PostgreSQL, see
//! [`migrate`]), the domain types ([`models`]), save-time validation
//! ([`validate`]), sealing secrets at rest with the cipher it is given (the
//! secrets plugin chain, [`secrets`]), which processes hold the database
//! ([`RunningClaim`]), and the queue:
//! the database *is* the build queue, so claiming a build, appending its output
//! and moving it through the status machine are store operations that are
//! atomic on both backends.
//!
//! One set of query code serves both backends: queries go through sqlx's `Any`
//! driver with runtime SQL and `$N` placeholders, which SQLite also accepts.
//! To keep to the types `Any` can carry, times are stored as milliseconds since
//! the Unix epoch (`BIGINT`), booleans as `BOOLEAN` (an integer on SQLite), and
//! JSON documents as text. The few statements that must differ (row locking,
//! schema DDL) branch on [`Backend`]. Reads outside a transaction go through
//! [`reads`], which on a SQLite file runs them in place instead of through
//! sqlx; the SQL is the same.
//!
//! A struct stored as a row names each column once, as its field: it derives
//! `FromRow` (and `ToColumns` when the generic save path in `objects` writes
//! it) from `vespene-store-derive`, and the store's `row::Column` says how
//! each field type is stored, so the conversions above are written in one
//! place. Queries still name the columns their `WHERE`, `ORDER BY` and
//! hand-written `UPDATE`s use; what remains mapped by hand is a projection
//! (a computed column, a decoded log chunk), said so where it is.

mod accounts;
mod audit;
mod autoscaling;
mod builds;
mod logs;
pub mod migrate;
pub mod models;
mod objects;
pub mod patch;
mod reads;
mod retention;
mod row;
mod running;
pub mod secret_vars;
pub mod secrets;
pub use running::RunningClaim;
#[cfg(test)]
pub(crate) mod test_store;
pub mod tutorial;
pub mod validate;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

pub use accounts::{check_password, hash_password, random_token, set_hash_concurrency, ExternalLogin};
pub use audit::{AuditActor, AuditEntry, AuditEvent, AuditFilter, AuditObject};
pub use builds::BuildFilter;
pub use logs::{CHUNK_BYTES, CHUNK_LINES};
pub use models::*;
pub(crate) use objects::Record;
pub use objects::SshKeySecrets;
pub use patch::{Patch, Patchable};
pub use retention::RetentionFacts;
pub use row::now;
pub use secrets::{SecretCipher, SecretError};
pub use validate::ValidationError;

use crate::settings::Settings;

/// Which database server is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, the embedded default.
    Sqlite,
    /// PostgreSQL, for teams and multi-host workers.
    Postgres,
}

impl Backend {
    /// Works out the backend from a database URL.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL '{}': use sqlite://PATH or postgres://...",
                redact_url(url)
            )))
        }
    }
}

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A value failed validation; nothing was saved.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The object does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// The kind of object, e.g. "project".
        what: &'static str,
        /// Its id or name.
        id: String,
    },
    /// A uniqueness rule was broken (e.g. a duplicate name).
    #[error("{0}")]
    Conflict(String),
    /// The object is still referenced (e.g. a worker pool used by projects), or a
    /// reference points at nothing.
    #[error("{0}")]
    Reference(String),
    /// A status change the build state machine does not allow.
    #[error("build {id} cannot go from {from} to {to}")]
    Transition {
        /// The build.
        id: Id,
        /// Its current status.
        from: String,
        /// The status asked for.
        to: BuildStatus,
    },
    /// Encrypting or decrypting a secret failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// Bad store configuration (URL, key file).
    #[error("{0}")]
    Config(String),
    /// The database said no.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// SQLite said no to a read on the in-place read path (`reads`).
    #[error("database error: {0}")]
    Read(#[from] rusqlite::Error),
}

impl StoreError {
    /// Whether the database could not be reached or dropped the connection (a
    /// restart, a network cut): worth trying again once it is back. The
    /// statement may or may not have been applied.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::WorkerCrashed => true,
                // SQLSTATE 08: connection exception; 57P: operator intervention (shutdown, restart).
                sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
                _ => false,
            },
            _ => false,
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the database: cheap to clone, shared by the web tier and workers.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Reads outside transactions on a SQLite file, in place (`reads`).
    reader: Option<Arc<reads::SqliteReader>>,
    backend: Backend,
    secrets: Arc<dyn SecretCipher>,
    /// The database URL (for the PostgreSQL queue listener's own connection).
    url: Arc<str>,
    /// Settings-made rules checked at save (local repository roots).
    policy: Arc<validate::SavePolicy>,
    /// Whether new log chunks are zstd-compressed.
    compress_logs: bool,
}

macro_rules! queue_channel {
    () => {
        "vespene_queue"
    };
}
/// The PostgreSQL channel on which every queued build is announced.
pub const QUEUE_CHANNEL: &str = queue_channel!();
/// The announcement (`NOTIFY` takes no bind parameters).
const NOTIFY_QUEUED: &str = concat!("NOTIFY ", queue_channel!());

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

/// How to open a store.
#[derive(Clone)]
pub struct StoreOptions {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// Seals and reads secret values: the secrets plugin chain.
    pub secrets: Arc<dyn SecretCipher>,
    /// Pool size.
    pub max_connections: u32,
    /// Run pending migrations on open.
    pub migrate: bool,
    /// zstd-compress new log chunks (`[database] compress_logs`).
    pub compress_logs: bool,
}

impl StoreOptions {
    /// Options from the effective settings: the configured database (SQLite in
    /// the data directory by default), sealing secrets with `secrets`.
    pub fn from_settings(settings: &Settings, secrets: Arc<dyn SecretCipher>) -> Self {
        Self {
            url: settings.database_url(),
            secrets,
            max_connections: settings.database_connections(),
            migrate: true,
            compress_logs: settings.database.compress_logs,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions").field("url", &redact_url(&self.url)).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store from settings, creating the data directory and the
    /// SQLite file as needed, and migrating the schema. `secrets` is the
    /// secrets plugin chain.
    pub async fn open_from_settings(settings: &Settings, secrets: Arc<dyn SecretCipher>) -> Result<Self> {
        create_data_dir(&settings.data_dir).map_err(|e| {
            StoreError::Config(format!("cannot create data directory {}: {e}", settings.data_dir.display()))
        })?;
        let options = StoreOptions::from_settings(settings, secrets);
        Ok(Self::open(&options).await?.with_policy(Self::policy_from(settings)))
    }

    /// The save-time rules that settings make.
    pub fn policy_from(settings: &Settings) -> validate::SavePolicy {
        validate::SavePolicy {
            local_repository_roots: settings.repositories.local_roots.clone(),
            retention: settings.retention,
        }
    }

    /// This store with `policy` checked at every save. A store opened with
    /// [`Store::open`] alone has the empty policy: no local repositories.
    pub fn with_policy(mut self, policy: validate::SavePolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The save-time rules in force.
    pub fn policy(&self) -> &validate::SavePolicy {
        &self.policy
    }

    /// Opens (and by default migrates) the store.
    pub async fn open(opts: &StoreOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(&opts.url)?;
        let secrets = opts.secrets.clone();
        let url = match backend {
            // Create the database file on first run.
            Backend::Sqlite if !opts.url.contains("mode=") => {
                let sep = if opts.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}mode=rwc", opts.url)
            }
            _ => opts.url.clone(),
        };
        let connect = AnyConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Config(format!("bad database URL '{}': {e}", redact_url(&opts.url))))?;
        let pool_opts = || {
            let opts = AnyPoolOptions::new()
                .max_connections(opts.max_connections.max(1))
                .acquire_timeout(Duration::from_secs(60));
            if backend != Backend::Sqlite {
                return opts;
            }
            // A SQLite connection is a file handle in this process: it cannot
            // go stale, so the ping sqlx sends before lending one out (a round
            // trip to the connection's thread per query) buys nothing.
            let opts = opts.test_before_acquire(false);
            // Writers queue on SQLite's lock rather than failing at once; WAL lets
            // readers (live output) run beside the writer.
            opts.after_connect(|conn, _meta| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA busy_timeout = 30000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
        };
        let db_file = if backend == Backend::Sqlite { sqlite_file(&opts.url) } else { None };
        let private = |db: &Path| {
            private_sqlite_files(db).map_err(|e| {
                StoreError::Config(format!("cannot make the database {} private (0600): {e}", db.display()))
            })
        };
        if let Some(db) = &db_file {
            private(db)?;
        }
        let pool = pool_opts().connect_with(connect.clone()).await?;
        if backend == Backend::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL;").execute(&pool).await?;
        }
        if let Some(db) = &db_file {
            // The journal files exist now.
            private(db)?;
        }
        let mut store = Store {
            pool,
            reader: None,
            backend,
            secrets,
            url: opts.url.as_str().into(),
            policy: Default::default(),
            compress_logs: opts.compress_logs,
        };
        if opts.migrate {
            if store.migrate().await? > 0 && backend == Backend::Sqlite {
                // SQLite connections that were open while a migration changed a
                // table keep statements prepared against the old columns: start
                // afresh, so every connection sees the schema as migrated.
                store.pool.close().await;
                store.pool = pool_opts().connect_with(connect).await?;
            }
            store.seal_plaintext_secrets().await?;
        }
        // Opened after any migration, so no read sees the schema before it.
        if let Some(db) = &db_file {
            store.reader = Some(Arc::new(reads::SqliteReader::open(db)?));
        }
        Ok(store)
    }

    /// Applies pending migrations; answers how many were applied.
    pub async fn migrate(&self) -> Result<usize> {
        migrate::run(&self.pool, self.backend).await
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock
    /// at once (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
    /// writes fails with "database is locked" when another process wrote in
    /// between, instead of waiting its turn.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A connection that hears every build queued by any process
    /// ([`QUEUE_CHANNEL`]); `None` on SQLite, which has no notifications.
    pub async fn queue_listener(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(QUEUE_CHANNEL).await?;
        Ok(Some(listener))
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The raw pool, for tests and diagnostics. Application code goes through
    /// the typed methods.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The secrets chain, so the engine can decrypt values it is handed.
    pub fn secrets(&self) -> &dyn SecretCipher {
        &*self.secrets
    }

    /// Decrypts a value stored with the secret header.
    pub fn decrypt(&self, stored: &str) -> Result<String> {
        Ok(self.secrets.decrypt(stored)?)
    }

    /// Whether the database answers a query now (`GET /readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool and the read connections.
    pub async fn close(&self) {
        if let Some(reader) = &self.reader {
            reader.close();
        }
        self.pool.close().await;
    }
}

/// The first-start bootstrap used by `vespene serve`: when no user exists,
/// creates the superuser `admin` with a random password and answers it (so
/// serve can print it once); otherwise answers `None`.
pub async fn ensure_admin(store: &Store) -> Result<Option<String>> {
    if store.user_count().await? > 0 {
        return Ok(None);
    }
    let password = accounts::random_password(20);
    let user =
        NewUser { username: "admin".into(), password: password.clone(), is_superuser: true, ..Default::default() };
    match store.create_user(&user).await {
        Ok(_) => Ok(Some(password)),
        // Another process created it first.
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A URL with any password replaced, safe for error messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((creds, host)) = rest.split_once('@') {
            if let Some((user, _)) = creds.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// Creates the data directory (and missing parents) private to the server's
/// user, mode 0700 (whatever the umask): it holds the database and the secret
/// key, which builds run by isolation plugins as other users must not read.
/// An existing directory that others may enter is made 0700; when that is not
/// possible (it belongs to another user) the error says so and nothing starts.
pub fn create_data_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // Parents get the usual mode: a build root beside the data directory stays reachable.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => {
            let mode = std::fs::metadata(path)?.mode() & 0o7777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "it has mode {mode:04o}, so other users may read the database and the secret key, \
                             and it cannot be made 0700: {e}"
                        ),
                    )
                })?;
                tracing::warn!(path = %path.display(), was = format!("{mode:04o}"), "made the data directory 0700");
            }
            Ok(())
        }
        other => other,
    }
}

/// The file of a `sqlite://` URL (without its query), if it names one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// Makes a SQLite database and its journal files readable by the server's
/// user only (0600): created so when missing, narrowed when found wider.
fn private_sqlite_files(db: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    if !db.exists() {
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(db)?;
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if let Ok(meta) = std::fs::metadata(&file) {
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}
