//! Schema migrations: numbered SQL files per backend, embedded in the binary
//! (`server/migrations/{sqlite,postgres}/NNNN_name.sql`), applied in order,
//! each in its own transaction, and recorded in `vespene_migrations`.
//!
//! Why not `sqlx::migrate!`: it needs the macro feature, and one tiny runner
//! keeps the two backends' histories side by side with the same version numbers.

use sqlx::{AnyPool, Row};

use super::{Backend, Result, StoreError};

/// One migration: its version, name, and SQL for each backend.
pub struct Migration {
    /// Strictly increasing.
    pub version: i64,
    /// A short description.
    pub name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
    /// Data conversion that SQL alone cannot do, run after the SQL in the
    /// same transaction.
    convert: Option<Convert>,
}

/// A migration's data conversion.
type Convert = for<'c> fn(&'c mut sqlx::AnyConnection) -> futures_util::future::BoxFuture<'c, Result<()>>;

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sqlite: include_str!("../../migrations/sqlite/0001_initial.sql"),
        postgres: include_str!("../../migrations/postgres/0001_initial.sql"),
        convert: None,
    },
    Migration {
        version: 2,
        name: "revision_email",
        sqlite: include_str!("../../migrations/sqlite/0002_revision_email.sql"),
        postgres: include_str!("../../migrations/postgres/0002_revision_email.sql"),
        convert: None,
    },
    Migration {
        version: 3,
        name: "pool_network",
        sqlite: include_str!("../../migrations/sqlite/0003_pool_network.sql"),
        postgres: include_str!("../../migrations/postgres/0003_pool_network.sql"),
        convert: None,
    },
    Migration {
        version: 4,
        name: "shared_and_owners",
        sqlite: include_str!("../../migrations/sqlite/0004_shared_and_owners.sql"),
        postgres: include_str!("../../migrations/postgres/0004_shared_and_owners.sql"),
        convert: None,
    },
    Migration {
        version: 5,
        name: "secret_values",
        sqlite: include_str!("../../migrations/sqlite/0005_secret_values.sql"),
        postgres: include_str!("../../migrations/postgres/0005_secret_values.sql"),
        convert: None,
    },
    Migration {
        version: 6,
        name: "webhook_deliveries",
        sqlite: include_str!("../../migrations/sqlite/0006_webhook_deliveries.sql"),
        postgres: include_str!("../../migrations/postgres/0006_webhook_deliveries.sql"),
        convert: None,
    },
    Migration {
        version: 7,
        name: "log_chunks",
        sqlite: include_str!("../../migrations/sqlite/0007_log_chunks.sql"),
        postgres: include_str!("../../migrations/postgres/0007_log_chunks.sql"),
        convert: Some(|conn| Box::pin(super::logs::convert_line_rows(conn))),
    },
    Migration {
        version: 8,
        name: "retention",
        sqlite: include_str!("../../migrations/sqlite/0008_retention.sql"),
        postgres: include_str!("../../migrations/postgres/0008_retention.sql"),
        convert: None,
    },
    Migration {
        version: 9,
        name: "audit_and_badges",
        sqlite: include_str!("../../migrations/sqlite/0009_audit_and_badges.sql"),
        postgres: include_str!("../../migrations/postgres/0009_audit_and_badges.sql"),
        convert: None,
    },
    Migration {
        version: 10,
        name: "pipeline_flow",
        sqlite: include_str!("../../migrations/sqlite/0010_pipeline_flow.sql"),
        postgres: include_str!("../../migrations/postgres/0010_pipeline_flow.sql"),
        convert: None,
    },
    Migration {
        version: 11,
        name: "authentication",
        sqlite: include_str!("../../migrations/sqlite/0011_authentication.sql"),
        postgres: include_str!("../../migrations/postgres/0011_authentication.sql"),
        convert: None,
    },
    Migration {
        version: 12,
        name: "autoscaling",
        sqlite: include_str!("../../migrations/sqlite/0012_autoscaling.sql"),
        postgres: include_str!("../../migrations/postgres/0012_autoscaling.sql"),
        convert: None,
    },
];

/// Applies pending migrations; answers how many ran.
pub async fn run(pool: &AnyPool, backend: Backend) -> Result<usize> {
    // Look first: PostgreSQL logs a notice for IF NOT EXISTS on every start.
    let exists_sql = match backend {
        Backend::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'vespene_migrations'",
        Backend::Postgres => "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'vespene_migrations'",
    };
    if sqlx::query(exists_sql).fetch_optional(pool).await?.is_none() {
        create_table(pool).await?;
    }
    let mut applied = 0;
    for m in MIGRATIONS {
        let mut tx = pool.begin().await?;
        if backend == Backend::Postgres {
            // Two processes starting at once: the second waits here, then sees
            // the migration recorded and skips it.
            sqlx::query("LOCK TABLE vespene_migrations IN EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        let done = sqlx::query("SELECT version FROM vespene_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if done {
            tx.commit().await?;
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::Config(format!("migration {} ({}) failed: {e}", m.version, m.name)))?;
        if let Some(convert) = m.convert {
            convert(&mut tx)
                .await
                .map_err(|e| StoreError::Config(format!("migration {} ({}) failed: {e}", m.version, m.name)))?;
        }
        sqlx::query("INSERT INTO vespene_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(super::row::now().timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        applied += 1;
    }
    Ok(applied)
}

async fn create_table(pool: &AnyPool) -> Result<()> {
    // IF NOT EXISTS still matters: two processes may both have looked.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS vespene_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The highest applied version (0 for an empty database).
pub async fn current_version(pool: &AnyPool) -> Result<i64> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM vespene_migrations").fetch_one(pool).await?;
    Ok(row.try_get::<i64, _>("v")?)
}
