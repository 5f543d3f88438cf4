//! What operators and dashboards read: whether the database answers, the
//! gauges `/metrics` reads from it, and the status a project's badge shows.

use std::time::Duration;

use super::{Error, Failure, Principal, Service};
use crate::store::{Backend, BuildStatus, Id, Store};

/// How long readiness waits for the database before calling it gone.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the database answers.
pub struct Readiness {
    /// "sqlite" or "postgres".
    pub database: &'static str,
    /// Why it is not ready, if it is not.
    pub error: Option<String>,
}

/// Reads the database's gauges for `/metrics`: a handle that a standalone
/// worker, which runs no [`Service`], has too.
#[derive(Clone)]
pub struct GaugeSource(Store);

impl GaugeSource {
    /// Gauges read from `store`.
    pub fn new(store: Store) -> Self {
        GaugeSource(store)
    }

    /// The metrics in the OpenMetrics text format, the database gauges read now.
    pub async fn exposition(&self) -> Result<String, Error> {
        let store = &self.0;
        let now = crate::store::now();
        let heartbeat_ages = store
            .list_workers()
            .await?
            .into_iter()
            .filter_map(|w| {
                let age = (now - w.last_checkin?).num_milliseconds() as f64 / 1000.0;
                Some((w.worker_uid, w.hostname, age))
            })
            .collect();
        let gauges = crate::metrics::Gauges {
            finished_statuses: BuildStatus::ALL
                .into_iter()
                .filter(|s| !s.is_active())
                .map(BuildStatus::as_str)
                .collect(),
            queue_depth: store.queue_depth_by_pool().await?,
            running_builds: store.count_running_builds().await?,
            heartbeat_ages,
        };
        crate::metrics::render(&gauges).map_err(Error::internal)
    }
}

impl Service {
    /// Whether the database answers a query within a few seconds.
    pub async fn readiness(&self) -> Readiness {
        let database = match self.store().backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        let error = match tokio::time::timeout(READY_TIMEOUT, self.store().ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("the database ({database}) does not answer: {e}")),
            Err(_) => Some(format!("the database ({database}) did not answer within {} s", READY_TIMEOUT.as_secs())),
        };
        Readiness { database, error }
    }

    /// The gauges of this server's database.
    pub fn gauges(&self) -> GaugeSource {
        GaugeSource::new(self.store().clone())
    }

    /// The status of project `id`'s last finished build, for its badge.
    /// Public when the project says so; otherwise for those who may view the
    /// project, and not found for everyone else (its existence does not leak).
    pub async fn badge_status(&self, principal: &Principal, id: Id) -> Result<Option<BuildStatus>, Error> {
        let hidden = || Error::not_found(&format!("project {id}"));
        let project = self.store().get_project(id).await?.ok_or_else(hidden)?;
        if !project.public_badge {
            let value = serde_json::to_value(&project).unwrap_or_default();
            self.authorize_on(principal, "view", "project", &value, &[]).await.map_err(|e| {
                if matches!(e.failure, Failure::Unauthenticated | Failure::Forbidden) {
                    hidden()
                } else {
                    e
                }
            })?;
        }
        Ok(self.store().last_finished_status(id).await?)
    }
}
