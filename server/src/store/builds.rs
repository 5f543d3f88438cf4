//! Builds and the queue: creating builds, claiming them atomically, moving
//! them through the status machine, and their append-only output.
//!
//! Claiming is one `UPDATE ... WHERE id = (SELECT ... LIMIT 1) AND status =
//! 'QUEUED' RETURNING *` statement. On PostgreSQL the inner select takes the
//! row with `FOR UPDATE SKIP LOCKED`, so concurrent claimers each get a
//! different build instead of queuing on the same row; on SQLite the statement
//! runs under the database write lock, which serialises claimers.
//!
//! Their output is in [`super::logs`].

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::logs::append_output_in;
use super::row::{self, get_i64, get_str, FromRow};
use super::validate::{self as v};
use super::*;

/// A page of the build list.
#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    /// Only this project's builds.
    pub project_id: Option<Id>,
    /// Only this pool's builds.
    pub worker_pool_id: Option<Id>,
    /// Only builds in this status.
    pub status: Option<BuildStatus>,
    /// Page size (0 means 50).
    pub limit: i64,
    /// Rows to skip.
    pub offset: i64,
}

impl Store {
    /// Creates a build: QUEUED (the default), RUNNING (import builds) or
    /// FAILURE (the script could not be rendered). A queued build becomes its
    /// project's active build, in the same transaction. The pipeline origin
    /// defaults to the build itself.
    pub async fn create_build(&self, nb: &NewBuild) -> Result<Build> {
        v::json_object("variables", &nb.variables)?;
        v::json_object("launch_answers", &nb.launch_answers)?;
        let status = nb.status.unwrap_or(BuildStatus::Queued);
        let now = row::now().timestamp_millis();
        let (start, end) = match status {
            BuildStatus::Queued => (None, None),
            BuildStatus::Running => (Some(now), None),
            _ => (Some(now), Some(now)),
        };
        let mut tx = self.begin_write().await?;
        if let (true, Some(pid)) = (nb.one_at_a_time, nb.project_id) {
            if self.backend == Backend::Postgres {
                // Two starts at once: the second waits here and then sees the first's build.
                sqlx::query("SELECT id FROM projects WHERE id = $1 FOR UPDATE").bind(pid).execute(&mut *tx).await?;
            }
            let active = sqlx::query(
                "SELECT id, status FROM builds WHERE project_id = $1 AND status IN ('QUEUED', 'RUNNING')
                 ORDER BY id LIMIT 1",
            )
            .bind(pid)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = active {
                let (id, status): (Id, String) = (r.try_get(0)?, r.try_get(1)?);
                return Err(StoreError::Conflict(format!(
                    "build {id} of this project is {status}: a project runs one build at a time; \
                     start it again when build {id} has finished, or stop build {id} first"
                )));
            }
        }
        let r = sqlx::query(
            "INSERT INTO builds (project_id, organization_id, worker_pool_id, status, queued_time, start_time,
                 end_time, script, variables, launch_answers, created_by, pipeline_parent_build_id,
                 pipeline_origin_build_id, secret_values)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
        )
        .bind(nb.project_id)
        .bind(nb.organization_id)
        .bind(nb.worker_pool_id)
        .bind(status.as_str())
        .bind(now)
        .bind(start)
        .bind(end)
        .bind(nb.script.as_str())
        .bind(if nb.variables.trim().is_empty() { "{}" } else { nb.variables.as_str() })
        .bind(if nb.launch_answers.trim().is_empty() { "{}" } else { nb.launch_answers.as_str() })
        .bind(nb.created_by)
        .bind(nb.pipeline_parent_build_id)
        .bind(nb.pipeline_origin_build_id)
        .bind(if nb.secret_values.trim().is_empty() { "{}" } else { nb.secret_values.as_str() })
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| row::map_db_err(e, "build", "new build"))?;
        let id: Id = r.try_get(0)?;
        // The new row comes back from the statement that completes it (one
        // round trip fewer than reading it again).
        let mut created = None;
        if nb.pipeline_origin_build_id.is_none() {
            let r = sqlx::query("UPDATE builds SET pipeline_origin_build_id = id WHERE id = $1 RETURNING *")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            created = Some(Build::from_row(&r)?);
        }
        if let Some(pid) = nb.project_id {
            let sql = if status.is_active() {
                "UPDATE projects SET active_build_id = $1 WHERE id = $2"
            } else {
                "UPDATE projects SET last_build_id = $1 WHERE id = $2"
            };
            sqlx::query(sql).bind(id).bind(pid).execute(&mut *tx).await?;
        }
        if let Some(oid) = nb.organization_id {
            sqlx::query("UPDATE organizations SET active_build_id = $1 WHERE id = $2")
                .bind(id)
                .bind(oid)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(audit) = &nb.audit {
            let object = AuditObject::new("build", Some(id), audit.object_name.clone());
            super::audit::insert_audit(&mut *tx, &audit.actor, "build.start", &object, &audit.details).await?;
        }
        let b = match created {
            Some(b) => b,
            None => fetch_build(&mut tx, id).await?,
        };
        if status == BuildStatus::Queued && self.backend == Backend::Postgres {
            // Delivered on commit to every worker process listening.
            sqlx::query(NOTIFY_QUEUED).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(b)
    }

    /// One build.
    pub async fn get_build(&self, id: Id) -> Result<Option<Build>> {
        self.read_row("SELECT * FROM builds WHERE id = $1", &[id.into()], |r| Build::from_row(r)).await
    }

    /// A build and its project's owners (`None` when it has no project, or
    /// its project is gone), in one query: what each check on a build reads.
    pub async fn build_with_owners(&self, id: Id) -> Result<Option<(Build, Option<ProjectOwners>)>> {
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT builds.*, {} FROM builds LEFT JOIN projects ON projects.id = builds.project_id \
                 WHERE builds.id = $1",
                objects::OWNER_COLUMNS.as_str()
            )
        });
        self.read_row(SQL.as_str(), &[id.into()], |r| Ok((Build::from_row(r)?, objects::owners_from_row(r)?))).await
    }

    /// The clear values of a build's secret variables, as (placeholder,
    /// value) pairs. Only the worker running the build calls this.
    pub async fn reveal_build_secrets(&self, id: Id) -> Result<Vec<(String, String)>> {
        let sql = "SELECT secret_values FROM builds WHERE id = $1";
        let Some(stored) = self.read_row(sql, &[id.into()], |r| get_str(r, "secret_values")).await? else {
            return Err(StoreError::NotFound { what: "build", id: id.to_string() });
        };
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&stored).unwrap_or_default();
        let mut out = Vec::with_capacity(map.len());
        for (placeholder, value) in map {
            let Some(sealed) = value.as_str() else { continue };
            let plain = self.secrets.decrypt(sealed).map_err(|e| {
                StoreError::Config(format!("the secret variable behind {placeholder} cannot be decrypted: {e}"))
            })?;
            out.push((placeholder, plain));
        }
        Ok(out)
    }

    /// Builds, newest first.
    pub async fn list_builds(&self, f: &BuildFilter) -> Result<Vec<Build>> {
        let mut sql = String::from("SELECT * FROM builds WHERE 1 = 1");
        let mut vals: Vec<row::Val> = vec![];
        if let Some(p) = f.project_id {
            vals.push(p.into());
            sql += &format!(" AND project_id = ${}", vals.len());
        }
        if let Some(p) = f.worker_pool_id {
            vals.push(p.into());
            sql += &format!(" AND worker_pool_id = ${}", vals.len());
        }
        if let Some(s) = f.status {
            vals.push(s.as_str().into());
            sql += &format!(" AND status = ${}", vals.len());
        }
        vals.push(if f.limit > 0 { f.limit } else { 50 }.into());
        vals.push(f.offset.max(0).into());
        sql += &format!(" ORDER BY id DESC LIMIT ${} OFFSET ${}", vals.len() - 1, vals.len());
        self.read_rows(&sql, &vals, |r| Build::from_row(r)).await
    }

    /// How many builds are in `status` in a pool (autoscaling, status pages).
    pub async fn count_builds(&self, worker_pool_id: Id, status: BuildStatus) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM builds WHERE worker_pool_id = $1 AND status = $2";
        let n = self.read_row(sql, &[worker_pool_id.into(), status.as_str().into()], |r| get_i64(r, "n")).await?;
        Ok(n.unwrap_or_default())
    }

    /// Queued builds per worker pool, by pool name (every pool, 0 included).
    pub async fn queue_depth_by_pool(&self) -> Result<Vec<(String, i64)>> {
        let sql = "SELECT p.name AS name, COUNT(b.id) AS depth FROM worker_pools p \
                   LEFT JOIN builds b ON b.worker_pool_id = p.id AND b.status = 'QUEUED' \
                   GROUP BY p.id, p.name ORDER BY p.name";
        self.read_rows(sql, &[], |r| Ok((get_str(r, "name")?, get_i64(r, "depth")?))).await
    }

    /// The status of a project's newest finished build, if any.
    pub async fn last_finished_status(&self, project_id: Id) -> Result<Option<BuildStatus>> {
        let sql =
            "SELECT status FROM builds WHERE project_id = $1 AND status NOT IN ('QUEUED', 'RUNNING', 'ABORTING') \
                   ORDER BY id DESC LIMIT 1";
        let status = self.read_row(sql, &[project_id.into()], |r| get_str(r, "status")).await?;
        Ok(status.and_then(|s| BuildStatus::parse(&s)))
    }

    /// How many builds are RUNNING or ABORTING now, on any host.
    pub async fn count_running_builds(&self) -> Result<i64> {
        let sql = "SELECT COUNT(*) AS n FROM builds WHERE status IN ('RUNNING', 'ABORTING')";
        Ok(self.read_row(sql, &[], |r| get_i64(r, "n")).await?.unwrap_or_default())
    }

    /// Claims the oldest QUEUED build in any of `pool_ids` for `worker_id`,
    /// atomically: it becomes RUNNING with a start time, and no other claimer
    /// can get it. `None` when the queue is empty.
    pub async fn claim_next_build(&self, pool_ids: &[Id], worker_id: Option<Id>) -> Result<Option<Build>> {
        if pool_ids.is_empty() {
            return Ok(None);
        }
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE builds SET status = 'RUNNING', start_time = $1, worker_id = $2
             WHERE id = (SELECT id FROM builds WHERE status = 'QUEUED' AND worker_pool_id IN ({})
                         ORDER BY id LIMIT 1{lock})
               AND status = 'QUEUED'
             RETURNING *",
            row::placeholders(3, pool_ids.len())
        );
        let mut q = sqlx::query(&sql).bind(row::now().timestamp_millis()).bind(worker_id);
        for p in pool_ids {
            q = q.bind(*p);
        }
        let r = q.fetch_optional(&self.pool).await?;
        r.as_ref().map(Build::from_row).transpose()
    }

    /// The project builds a worker holds (RUNNING or ABORTING), oldest first;
    /// organization imports are not claimed from the queue and are left out.
    pub async fn claimed_builds_of_worker(&self, worker_id: Id) -> Result<Vec<Build>> {
        let sql = "SELECT * FROM builds WHERE worker_id = $1 AND status IN ('RUNNING', 'ABORTING')
                   AND organization_id IS NULL ORDER BY id";
        self.read_rows(sql, &[worker_id.into()], |r| Build::from_row(r)).await
    }

    /// Claims the oldest QUEUED build of the pool named `pool`.
    pub async fn claim_next_build_in(&self, pool: &str, worker_id: Option<Id>) -> Result<Option<Build>> {
        let Some(p) = self.find_worker_pool(pool).await? else {
            return Err(StoreError::NotFound { what: "worker pool", id: pool.to_string() });
        };
        self.claim_next_build(&[p.id], worker_id).await
    }

    /// Claims one given build if it is still QUEUED (`worker --build-id`).
    pub async fn claim_build(&self, id: Id, worker_id: Option<Id>) -> Result<Option<Build>> {
        let r = sqlx::query(
            "UPDATE builds SET status = 'RUNNING', start_time = $1, worker_id = $2
             WHERE id = $3 AND status = 'QUEUED' RETURNING *",
        )
        .bind(row::now().timestamp_millis())
        .bind(worker_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(Build::from_row).transpose()
    }

    /// Moves a build to `to` if the state machine allows it from its current
    /// status; answers the updated build. Finishing statuses set the end time
    /// and the return code, and update the project's build pointers, in one
    /// transaction.
    pub async fn set_build_status(&self, id: Id, to: BuildStatus, return_code: Option<i64>) -> Result<Build> {
        let from = to.previous();
        let now = row::now().timestamp_millis();
        let finishing = !to.is_active();
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE builds SET status = $1,
                 end_time = CASE WHEN $2 THEN $3 ELSE end_time END,
                 return_code = COALESCE($4, return_code)
             WHERE id = $5 AND status IN ({})",
            row::placeholders(6, from.len())
        );
        let mut q = sqlx::query(&sql).bind(to.as_str()).bind(finishing).bind(now).bind(return_code).bind(id);
        for s in &from {
            q = q.bind(s.as_str());
        }
        let done = q.execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            let cur = sqlx::query("SELECT status FROM builds WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?;
            return match cur {
                None => Err(StoreError::NotFound { what: "build", id: id.to_string() }),
                Some(r) => Err(StoreError::Transition { id, from: get_str(&r, "status")?, to }),
            };
        }
        let b = fetch_build(&mut tx, id).await?;
        update_pointers(&mut tx, &b).await?;
        tx.commit().await?;
        if finishing {
            let seconds = b.start_time.zip(b.end_time).map(|(s, e)| (e - s).num_milliseconds() as f64 / 1000.0);
            crate::metrics::build_finished(to.as_str(), seconds);
        }
        Ok(b)
    }

    /// Asks for a build to stop: a QUEUED build becomes ABORTED at once, a
    /// RUNNING one ABORTING (its worker kills it), and the project is free to
    /// start again at once. False when it was not stoppable.
    pub async fn request_stop(&self, id: Id) -> Result<bool> {
        // A queued build has nobody to notice ABORTING: it ends here and now.
        if self.build_status(id).await? == Some(BuildStatus::Queued) {
            match self.set_build_status(id, BuildStatus::Aborted, None).await {
                Ok(_) => return Ok(true),
                // Claimed in the meantime: ask the worker instead.
                Err(StoreError::Transition { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match self.set_build_status(id, BuildStatus::Aborting, None).await {
            Ok(_) => Ok(true),
            Err(StoreError::Transition { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Current status of a build (workers check it between output lines).
    pub async fn build_status(&self, id: Id) -> Result<Option<BuildStatus>> {
        let status =
            self.read_row("SELECT status FROM builds WHERE id = $1", &[id.into()], |r| get_str(r, "status")).await?;
        Ok(status.and_then(|s| BuildStatus::parse(&s)))
    }

    /// Records what was checked out.
    pub async fn set_build_revision(&self, id: Id, checked_out: &CheckedOut<'_>) -> Result<()> {
        sqlx::query("UPDATE builds SET revision = $1, revision_username = $2, revision_email = $3 WHERE id = $4")
            .bind(checked_out.revision)
            .bind(checked_out.committer)
            .bind(checked_out.committer_email)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the build root.
    pub async fn set_build_working_dir(&self, id: Id, dir: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET working_dir = $1 WHERE id = $2").bind(dir).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    /// Replaces the output variables (a JSON object).
    pub async fn set_output_variables(&self, id: Id, json: &str) -> Result<()> {
        v::json_object("output_variables", json)?;
        sqlx::query("UPDATE builds SET output_variables = $1 WHERE id = $2")
            .bind(json)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// QUEUED builds in a pool queued before `cutoff` become ORPHANED;
    /// answers how many.
    pub async fn orphan_stale_builds(&self, worker_pool_id: Id, cutoff: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE builds SET status = 'ORPHANED', end_time = $1
             WHERE worker_pool_id = $2 AND status = 'QUEUED' AND queued_time < $3",
        )
        .bind(row::now().timestamp_millis())
        .bind(worker_pool_id)
        .bind(cutoff.timestamp_millis())
        .execute(&self.pool)
        .await?;
        self.clear_inactive_pointers().await?;
        Ok(done.rows_affected())
    }

    /// ABORTING builds queued before `cutoff` (nobody is acting on them)
    /// become ABORTED; answers how many.
    pub async fn abort_stale_aborting(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE builds SET status = 'ABORTED', end_time = $1 WHERE status = 'ABORTING' AND queued_time < $2",
        )
        .bind(row::now().timestamp_millis())
        .bind(cutoff.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Duplicate collapse: every other QUEUED build of the project becomes
    /// ABORTED; answers their ids.
    pub async fn abort_other_queued(&self, project_id: Id, keep: Id) -> Result<Vec<Id>> {
        let rows = sqlx::query(
            "UPDATE builds SET status = 'ABORTED', end_time = $1
             WHERE project_id = $2 AND status = 'QUEUED' AND id <> $3 RETURNING id",
        )
        .bind(row::now().timestamp_millis())
        .bind(project_id)
        .bind(keep)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)?)).collect()
    }

    async fn clear_inactive_pointers(&self) -> Result<()> {
        sqlx::query(CLEAR_INACTIVE_POINTERS).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes finished builds (and their output) queued before `cutoff`;
    /// builds still queued or running, and pinned builds, are kept. Answers
    /// how many went.
    pub async fn delete_builds_older_than(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "DELETE FROM builds WHERE queued_time < $1 AND status NOT IN ('QUEUED', 'RUNNING', 'ABORTING')
               AND pinned = $2",
        )
        .bind(cutoff.timestamp_millis())
        .bind(false)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

async fn fetch_build(conn: &mut sqlx::AnyConnection, id: Id) -> Result<Build> {
    let r = sqlx::query("SELECT * FROM builds WHERE id = $1").bind(id).fetch_one(conn).await?;
    Build::from_row(&r)
}

/// Keeps the project's (or organization's) build pointers in step with a
/// status change.
async fn update_pointers(conn: &mut sqlx::AnyConnection, b: &Build) -> Result<()> {
    for (table, owner) in [("projects", b.project_id), ("organizations", b.organization_id)] {
        let Some(owner) = owner else { continue };
        match b.status {
            // Stopping frees the project at once (inventory #5).
            BuildStatus::Aborting => {
                let sql = format!("UPDATE {table} SET active_build_id = NULL WHERE id = $1 AND active_build_id = $2");
                sqlx::query(&sql).bind(owner).bind(b.id).execute(&mut *conn).await?;
            }
            s if !s.is_active() => {
                let sql = format!(
                    "UPDATE {table} SET last_build_id = $2,
                         active_build_id = CASE WHEN active_build_id = $2 THEN NULL ELSE active_build_id END,
                         last_successful_build_id = CASE WHEN $3 THEN $2
                             WHEN last_successful_build_id = $2 THEN NULL
                             ELSE last_successful_build_id END
                     WHERE id = $1"
                );
                sqlx::query(&sql).bind(owner).bind(b.id).bind(s == BuildStatus::Success).execute(&mut *conn).await?;
            }
            _ => {}
        }
    }
    Ok(())
}

impl Store {
    /// Every build of one pipeline run (same origin), oldest first.
    pub async fn builds_of_run(&self, origin_id: Id) -> Result<Vec<Build>> {
        let sql = "SELECT * FROM builds WHERE pipeline_origin_build_id = $1 ORDER BY id";
        self.read_rows(sql, &[origin_id.into()], |r| Build::from_row(r)).await
    }

    /// Records a one-shot decision (`kind`, `mark`); true only for the one
    /// caller, across all processes, that recorded it first.
    pub async fn try_mark(&self, kind: &str, mark: &str) -> Result<bool> {
        let done =
            sqlx::query("INSERT INTO engine_marks (kind, mark, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(kind)
                .bind(mark)
                .bind(row::now().timestamp_millis())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Deletes one finished build and its output; false if there was none.
    pub async fn delete_build(&self, id: Id) -> Result<bool> {
        self.delete_build_audited(id, None).await
    }

    /// [`Store::delete_build`], recording `audit` in the same transaction
    /// when the build was deleted.
    pub async fn delete_build_audited(&self, id: Id, audit: Option<&AuditEntry>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        for sql in [
            "UPDATE projects SET last_build_id = NULL WHERE last_build_id = $1",
            "UPDATE projects SET last_successful_build_id = NULL WHERE last_successful_build_id = $1",
            "UPDATE builds SET pipeline_parent_build_id = NULL WHERE pipeline_parent_build_id = $1",
            "DELETE FROM build_log_chunks WHERE build_id = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        let done = sqlx::query("DELETE FROM builds WHERE id = $1 AND status NOT IN ('QUEUED', 'RUNNING', 'ABORTING')")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = done.rows_affected() > 0;
        if let (true, Some(audit)) = (deleted, audit) {
            audit.insert(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}

impl Store {
    /// Starts an organization import: creates its build (no project, RUNNING)
    /// and makes it the organization's active build, in one transaction, only
    /// if the organization has no active import. `None` when another import
    /// holds it, so an organization is never imported twice at once. A pointer
    /// left on a finished (or deleted) build is cleared first. The build names
    /// `worker_id`, so the heartbeat rule orphans it if that worker dies.
    pub async fn begin_import(
        &self,
        organization_id: Id,
        worker_pool_id: Id,
        worker_id: Option<Id>,
    ) -> Result<Option<Build>> {
        let sql = "SELECT active_build_id FROM organizations WHERE id = $1";
        let current = self.read_row(sql, &[organization_id.into()], |r| r.int("active_build_id")).await?;
        let Some(current) = current else { return Ok(None) };
        if let Some(active) = current {
            if self.build_status(active).await?.is_some_and(BuildStatus::is_active) {
                return Ok(None);
            }
            sqlx::query("UPDATE organizations SET active_build_id = NULL WHERE id = $1 AND active_build_id = $2")
                .bind(organization_id)
                .bind(active)
                .execute(&self.pool)
                .await?;
        }
        let now = row::now().timestamp_millis();
        let mut tx = self.begin_write().await?;
        // Claim the organization first: the row lock (or SQLite's write lock)
        // makes a concurrent claimer see the pointer already set.
        let claimed =
            sqlx::query("UPDATE organizations SET active_build_id = NULL WHERE id = $1 AND active_build_id IS NULL")
                .bind(organization_id)
                .execute(&mut *tx)
                .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let r = sqlx::query(
            "INSERT INTO builds (project_id, organization_id, worker_pool_id, status, queued_time, start_time,
                 script, variables, launch_answers, worker_id)
             VALUES (NULL, $1, $2, $3, $4, $4, '', '{}', '{}', $5) RETURNING id",
        )
        .bind(organization_id)
        .bind(worker_pool_id)
        .bind(BuildStatus::Running.as_str())
        .bind(now)
        .bind(worker_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| row::map_db_err(e, "build", "import build"))?;
        let id: Id = r.try_get(0)?;
        sqlx::query("UPDATE builds SET pipeline_origin_build_id = id WHERE id = $1").bind(id).execute(&mut *tx).await?;
        let set =
            sqlx::query("UPDATE organizations SET active_build_id = $1 WHERE id = $2 AND active_build_id IS NULL")
                .bind(id)
                .bind(organization_id)
                .execute(&mut *tx)
                .await?;
        if set.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        let b = fetch_build(&mut tx, id).await?;
        tx.commit().await?;
        Ok(Some(b))
    }

    /// Clears an organization's forced rescan flag (after an import).
    pub async fn clear_force_rescan(&self, organization_id: Id) -> Result<()> {
        sqlx::query("UPDATE organizations SET force_rescan = $1 WHERE id = $2")
            .bind(false)
            .bind(organization_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Projects whose active build has ended point at no active build.
const CLEAR_INACTIVE_POINTERS: &str = "UPDATE projects SET active_build_id = NULL WHERE active_build_id IN
     (SELECT id FROM builds WHERE status NOT IN ('QUEUED', 'RUNNING', 'ABORTING'))";

impl Store {
    /// RUNNING or ABORTING builds whose worker last checked in before `cutoff`
    /// (killed, or cut off from the database) become ORPHANED, with `message`
    /// as their last output line, in one transaction; answers their ids.
    pub async fn orphan_builds_of_silent_workers(&self, cutoff: DateTime<Utc>, message: &str) -> Result<Vec<Id>> {
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(
            "UPDATE builds SET status = 'ORPHANED', end_time = $1
             WHERE status IN ('RUNNING', 'ABORTING')
               AND worker_id IN (SELECT id FROM workers WHERE last_checkin < $2)
             RETURNING id",
        )
        .bind(row::now().timestamp_millis())
        .bind(cutoff.timestamp_millis())
        .fetch_all(&mut *tx)
        .await?;
        let ids = rows.iter().map(|r| r.try_get::<i64, _>(0)).collect::<std::result::Result<Vec<_>, _>>()?;
        for &id in &ids {
            append_output_in(&mut tx, id, &[(OutputStream::Message, message)], self.compress_logs).await?;
        }
        if !ids.is_empty() {
            sqlx::query(CLEAR_INACTIVE_POINTERS).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(ids)
    }
}

impl Store {
    /// Adds a line to the build's trigger failures.
    pub async fn record_trigger_failure(&self, build_id: Id, failure: &str) -> Result<()> {
        sqlx::query("UPDATE builds SET trigger_failures = COALESCE(trigger_failures || $1, '') || $2 WHERE id = $3")
            .bind("\n")
            .bind(failure)
            .bind(build_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The runs (origin build ids) of a pipeline's projects, newest first.
    pub async fn pipeline_runs(&self, pipeline_id: Id, limit: i64) -> Result<Vec<Id>> {
        let sql = "SELECT DISTINCT pipeline_origin_build_id AS run FROM builds
                   WHERE pipeline_origin_build_id IS NOT NULL
                     AND project_id IN (SELECT id FROM projects WHERE pipeline_id = $1)
                   ORDER BY run DESC LIMIT $2";
        self.read_rows(sql, &[pipeline_id.into(), limit.into()], |r| get_i64(r, "run")).await
    }

    /// The latest build of a project that a pipeline started (one with a
    /// parent): the build a plain start of the project continues from.
    pub async fn latest_pipeline_build_of(&self, project_id: Id) -> Result<Option<Build>> {
        let sql = "SELECT * FROM builds WHERE project_id = $1 AND pipeline_parent_build_id IS NOT NULL
                   ORDER BY id DESC LIMIT 1";
        self.read_row(sql, &[project_id.into()], |r| Build::from_row(r)).await
    }

    /// Records that build `by` completed a run of the pipeline, now. Only
    /// these two columns are written: a change someone makes to the pipeline
    /// meanwhile is kept.
    pub async fn mark_pipeline_complete(&self, pipeline_id: Id, by: Id) -> Result<()> {
        sqlx::query("UPDATE pipelines SET last_completed_date = $1, last_completed_by = $2 WHERE id = $3")
            .bind(row::now().timestamp_millis())
            .bind(by)
            .bind(pipeline_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A run starts waiting before `stage_id` (again, if it waited there
    /// before: an earlier approval of the same run and stage is cleared).
    pub async fn request_approval(&self, pipeline_id: Id, origin: Id, stage_id: Id, parent: Id) -> Result<()> {
        sqlx::query(
            "INSERT INTO pipeline_approvals (origin_build_id, stage_id, pipeline_id, parent_build_id, requested_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (origin_build_id, stage_id) DO UPDATE SET parent_build_id = excluded.parent_build_id,
                 requested_at = excluded.requested_at, approved_by = NULL, approved_at = NULL",
        )
        .bind(origin)
        .bind(stage_id)
        .bind(pipeline_id)
        .bind(parent)
        .bind(row::now().timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Approves a waiting run at `stage_id`; answers the approval when this
    /// call ended the wait (one caller wins), `None` when nothing waited.
    pub async fn approve(&self, origin: Id, stage_id: Id, user_id: Id) -> Result<Option<PipelineApproval>> {
        let done = sqlx::query(
            "UPDATE pipeline_approvals SET approved_by = $1, approved_at = $2
             WHERE origin_build_id = $3 AND stage_id = $4 AND approved_at IS NULL",
        )
        .bind(user_id)
        .bind(row::now().timestamp_millis())
        .bind(origin)
        .bind(stage_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        Ok(self.approvals_of_run(origin).await?.into_iter().find(|a| a.stage_id == stage_id))
    }

    /// The approvals (waiting and given) of one run.
    pub async fn approvals_of_run(&self, origin: Id) -> Result<Vec<PipelineApproval>> {
        let sql = "SELECT * FROM pipeline_approvals WHERE origin_build_id = $1 ORDER BY requested_at";
        self.read_rows(sql, &[origin.into()], |r| PipelineApproval::from_row(r)).await
    }
}
