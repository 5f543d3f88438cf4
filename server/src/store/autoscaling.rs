//! Autoscaling decisions in the store: the per-pool lease that lets one
//! process at a time decide for a pool, the decision's record on the pool
//! row, and the workers that serve a pool.
//!
//! The lease is a conditional `UPDATE` of the pool row (`autoscaling_lease`
//! empty or expired, and the decision due), atomic on both backends: of
//! several processes asking at once, exactly one changes the row and decides.

use chrono::{DateTime, Utc};

use super::row::{self, get_opt_time, get_str};
use super::{Id, Result, Store, WorkerPool};

impl Store {
    /// Claims the next autoscaling decision for a pool until `lease_until`:
    /// the pool row is answered when this caller won it, `None` when the pool
    /// is not autoscaled, another process holds the lease, or (unless `force`)
    /// the decision is not due yet (`reevaluate_seconds` after the last one).
    pub async fn claim_autoscaling(
        &self,
        pool_id: Id,
        lease_until: DateTime<Utc>,
        force: bool,
    ) -> Result<Option<WorkerPool>> {
        let now = row::now().timestamp_millis();
        let due = if force {
            ""
        } else {
            "AND (last_autoscaled IS NULL OR last_autoscaled + reevaluate_seconds * 1000 <= $3)"
        };
        let sql = format!(
            "UPDATE worker_pools SET autoscaling_lease = $1
             WHERE id = $2 AND autoscaling_enabled = $4 AND autoscaler <> ''
               AND (autoscaling_lease IS NULL OR autoscaling_lease <= $3) {due}"
        );
        let done = sqlx::query(&sql)
            .bind(lease_until.timestamp_millis())
            .bind(pool_id)
            .bind(now)
            .bind(true)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        self.get_worker_pool(pool_id).await
    }

    /// Records a decision and releases the lease: `status` 0 when it was
    /// applied, 1 when it failed; `message` is its one line.
    pub async fn finish_autoscaling(&self, pool_id: Id, status: i64, message: &str) -> Result<()> {
        sqlx::query(
            "UPDATE worker_pools SET autoscaling_lease = NULL, last_autoscaled = $1, autoscaling_status = $2,
                 autoscaling_message = $3
             WHERE id = $4",
        )
        .bind(row::now().timestamp_millis())
        .bind(status)
        .bind(message)
        .bind(pool_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a process holds a pool's autoscaling lease now.
    pub async fn autoscaling_leased(&self, pool_id: Id) -> Result<bool> {
        let sql = "SELECT autoscaling_lease FROM worker_pools WHERE id = $1";
        let lease = self.read_row(sql, &[pool_id.into()], |r| get_opt_time(r, "autoscaling_lease")).await?.flatten();
        Ok(lease.is_some_and(|until| until > row::now()))
    }

    /// The workers that name `pool` among the pools they serve and checked in
    /// at or after `since`. Workers serving every pool are not counted: they
    /// are not the pool's own, and no autoscaler starts or stops them.
    pub async fn count_pool_workers(&self, pool: &str, since: DateTime<Utc>) -> Result<u64> {
        let sql = "SELECT pools FROM workers WHERE last_checkin >= $1";
        let serving = self
            .read_rows(sql, &[since.timestamp_millis().into()], |r| {
                Ok(decode_pools(get_str(r, "pools")?).iter().any(|p| p == pool))
            })
            .await?;
        Ok(serving.into_iter().filter(|serves| *serves).count() as u64)
    }
}

/// The `workers.pools` column: a JSON array of pool names ('' for none).
pub(crate) fn encode_pools(pools: &[String]) -> String {
    if pools.is_empty() {
        String::new()
    } else {
        serde_json::to_string(pools).unwrap_or_default()
    }
}

/// Reads the `workers.pools` column back.
pub(crate) fn decode_pools(text: String) -> Vec<String> {
    serde_json::from_str(&text).unwrap_or_default()
}
