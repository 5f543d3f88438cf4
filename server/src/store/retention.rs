//! Retention's queries: pinning builds, finding the builds a keep rule no
//! longer covers, and removing a build's log (the record stays, marked with
//! when). The rules themselves (which builds a rule keeps) are the engine's:
//! see `engine::retention` and docs/retention.md.
//!
//! Every removal is a conditional update first (`... WHERE pinned = false AND
//! the build is finished AND nothing was removed yet`), so a build pinned, or
//! already pruned by another worker process, in the meantime is left alone:
//! two processes pruning at once each remove a given log at most once between
//! them, and never a pinned or active build's.

use chrono::{DateTime, Utc};

use super::row::{self, get_bool, get_i64, get_opt_i64, get_opt_time, get_str};
use super::*;

/// Builds that have finished: queued, running and stopping builds are never
/// pruned, nor counted by a keep rule.
const FINISHED: &str = "status NOT IN ('QUEUED', 'RUNNING', 'ABORTING')";

/// Ids bound per `IN (...)` list.
const IDS_PER_QUERY: usize = 500;

/// What retention needs to know about one build whose root is on this host.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionFacts {
    /// The build.
    pub id: Id,
    /// Its project (`None`: an organization import, which no rule covers).
    pub project_id: Option<Id>,
    /// Finished (not queued, running or stopping).
    pub finished: bool,
    /// Pinned: kept whatever the rules say.
    pub pinned: bool,
    /// When it finished (its queue time when it has no end time).
    pub finished_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Pins or unpins a build; answers the build, `None` if there is none.
    pub async fn set_build_pinned(&self, id: Id, pinned: bool) -> Result<Option<Build>> {
        self.set_build_pinned_audited(id, pinned, None).await
    }

    /// [`Store::set_build_pinned`], recording `audit` in the same
    /// transaction when the build exists.
    pub async fn set_build_pinned_audited(
        &self,
        id: Id,
        pinned: bool,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<Build>> {
        let mut tx = self.begin_write().await?;
        let done =
            sqlx::query("UPDATE builds SET pinned = $1 WHERE id = $2").bind(pinned).bind(id).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(audit) = audit {
            audit.insert(&mut *tx).await?;
        }
        tx.commit().await?;
        self.get_build(id).await
    }

    /// The id of a project's `n`th newest finished, unpinned build (`n` from
    /// 1): a rule keeping the last `n` builds keeps it and the newer ones, and
    /// no older one. `None` when the project has fewer such builds.
    pub async fn nth_newest_finished_build(&self, project_id: Id, n: i64) -> Result<Option<Id>> {
        if n < 1 {
            return Ok(None);
        }
        let sql = format!(
            "SELECT id FROM builds WHERE project_id = $1 AND {FINISHED} AND pinned = $2
             ORDER BY id DESC LIMIT 1 OFFSET $3"
        );
        self.read_row(&sql, &[project_id.into(), false.into(), (n - 1).into()], |r| get_i64(r, "id")).await
    }

    /// A project's finished, unpinned builds that still have their log and
    /// are older than `below_id` (past the last N) or finished before
    /// `finished_before` (older than D days); oldest first, at most `limit`
    /// (0: no limit). Neither bound: none.
    pub async fn builds_past_log_rule(
        &self,
        project_id: Id,
        below_id: Option<Id>,
        finished_before: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<Id>> {
        if below_id.is_none() && finished_before.is_none() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT id FROM builds WHERE project_id = $1 AND {FINISHED} AND pinned = $2 AND log_removed_at IS NULL
               AND (id < $3 OR COALESCE(end_time, queued_time) < $4)
             ORDER BY id LIMIT $5"
        );
        let args = [
            project_id.into(),
            false.into(),
            below_id.unwrap_or(i64::MIN).into(),
            finished_before.map_or(i64::MIN, |t| t.timestamp_millis()).into(),
            if limit > 0 { limit } else { i64::MAX }.into(),
        ];
        self.read_rows(&sql, &args, |r| get_i64(r, "id")).await
    }

    /// Removes a build's log, keeping the build record, which says when
    /// (`log_removed_at`). Only a finished, unpinned build whose log is still
    /// there: false otherwise (pinned, active, already removed by another
    /// process, or no such build). The one place build logs are deleted by
    /// retention.
    pub async fn delete_build_log(&self, build_id: Id) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE builds SET log_removed_at = $1
             WHERE id = $2 AND pinned = $3 AND log_removed_at IS NULL AND {FINISHED}"
        );
        let claimed =
            sqlx::query(&sql).bind(row::now().timestamp_millis()).bind(build_id).bind(false).execute(&mut *tx).await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM build_log_chunks WHERE build_id = $1").bind(build_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// What retention needs to know about `ids` (builds whose roots are on
    /// this host); unknown ids are left out.
    pub async fn retention_facts(&self, ids: &[Id]) -> Result<Vec<RetentionFacts>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = format!(
                "SELECT id, project_id, status, pinned, COALESCE(end_time, queued_time) AS finished_at
                 FROM builds WHERE root_removed_at IS NULL AND id IN ({}) ORDER BY id",
                row::placeholders(1, chunk.len())
            );
            let args: Vec<row::Val> = chunk.iter().map(|id| (*id).into()).collect();
            // A projection, not a row: `finished` is computed from the
            // status and `finished_at` is a COALESCE, so it is mapped here.
            let facts = self.read_rows(&sql, &args, |r| {
                let status = get_str(r, "status")?;
                Ok(RetentionFacts {
                    id: get_i64(r, "id")?,
                    project_id: get_opt_i64(r, "project_id")?,
                    finished: BuildStatus::parse(&status).is_some_and(|s| !s.is_active()),
                    pinned: get_bool(r, "pinned")?,
                    finished_at: get_opt_time(r, "finished_at")?,
                })
            });
            out.extend(facts.await?);
        }
        Ok(out)
    }

    /// Records that retention is removing a build's root, if the build is
    /// finished, unpinned and not marked already; true when this caller may
    /// go ahead and remove the directory.
    pub async fn claim_root_removal(&self, build_id: Id) -> Result<bool> {
        let sql = format!(
            "UPDATE builds SET root_removed_at = $1
             WHERE id = $2 AND pinned = $3 AND root_removed_at IS NULL AND {FINISHED}"
        );
        let done = sqlx::query(&sql)
            .bind(row::now().timestamp_millis())
            .bind(build_id)
            .bind(false)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes back [`Store::claim_root_removal`] when the directory could not
    /// be removed.
    pub async fn unclaim_root_removal(&self, build_id: Id) -> Result<()> {
        sqlx::query("UPDATE builds SET root_removed_at = NULL WHERE id = $1")
            .bind(build_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The builds `vespene cleanup` must not touch whatever their age:
    /// pinned, queued, running and stopping ones.
    pub async fn builds_kept_from_cleanup(&self) -> Result<Vec<Id>> {
        let sql = format!("SELECT id FROM builds WHERE pinned = $1 OR NOT ({FINISHED})");
        self.read_rows(&sql, &[true.into()], |r| get_i64(r, "id")).await
    }
}
