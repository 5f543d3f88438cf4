//! Which processes have the database open for work. Every `vespene serve` and
//! `vespene worker` holds a shared claim while it runs; a command that must
//! have the database to itself (`vespene secrets rotate-key`, which swaps the
//! key every running process has loaded) takes the claim alone, or is told
//! who is in the way.
//!
//! On SQLite the claim is an `flock` on `<database>.running` beside the
//! database file (every process using it is on this host). On PostgreSQL it is
//! a session advisory lock, held by a connection of its own, so workers on
//! other hosts count too.

use sqlx::Connection;

use super::{sqlite_file, Backend, Result, Store, StoreError};

/// The advisory lock key on PostgreSQL ("vespene" in ASCII).
const ADVISORY_KEY: i64 = 0x0076_6573_7065_6e65;

/// A claim on the database, released when dropped.
pub struct RunningClaim {
    _held: Held,
}

// Held for their drop alone: closing the file or the connection releases the lock.
#[allow(dead_code)]
enum Held {
    /// An in-memory database: no other process can open it.
    Nothing,
    File(std::fs::File),
    Postgres(Box<sqlx::postgres::PgConnection>),
}

impl std::fmt::Debug for RunningClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningClaim")
    }
}

impl Store {
    /// The shared claim a running server or worker holds. Refused while a
    /// command holds the database alone.
    pub async fn claim_running(&self) -> Result<RunningClaim> {
        self.claim(false).await?.ok_or_else(|| {
            StoreError::Config(
                "the database is held by a command that needs it alone (vespene secrets rotate-key); \
                 start again when it has finished"
                    .into(),
            )
        })
    }

    /// The claim alone: `None` while any server or worker runs on this database.
    pub async fn claim_alone(&self) -> Result<Option<RunningClaim>> {
        self.claim(true).await
    }

    async fn claim(&self, alone: bool) -> Result<Option<RunningClaim>> {
        match self.backend {
            Backend::Sqlite => {
                let Some(db) = sqlite_file(&self.url) else { return Ok(Some(RunningClaim { _held: Held::Nothing })) };
                let path = format!("{}.running", db.display());
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::Config(format!("cannot open {path}: {e}")))?;
                let how = if alone { libc::LOCK_EX } else { libc::LOCK_SH };
                // SAFETY: flock on a descriptor this function owns; no memory is shared.
                let taken = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), how | libc::LOCK_NB) } == 0;
                Ok(taken.then(|| RunningClaim { _held: Held::File(file) }))
            }
            Backend::Postgres => {
                let mut conn = sqlx::postgres::PgConnection::connect(&self.url).await?;
                let sql =
                    if alone { "SELECT pg_try_advisory_lock($1)" } else { "SELECT pg_try_advisory_lock_shared($1)" };
                let taken: bool = sqlx::query_scalar(sql).bind(ADVISORY_KEY).fetch_one(&mut conn).await?;
                Ok(taken.then(|| RunningClaim { _held: Held::Postgres(Box::new(conn)) }))
            }
        }
    }
}
