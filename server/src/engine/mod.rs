//! The build engine: the queue and its workers, the life of a build, and what
//! starts builds (people, pipelines, schedules).
//!
//! Owns: enqueueing (variables from the `variables` plugins, launch answers,
//! the script rendered with strict undefined and frozen on the build),
//! workers (atomic claim, wake-up on enqueue with a polling fallback,
//! duplicate collapse, housekeeping), running a build (build root, triggers,
//! checkout, isolation, output through the output chain with secrets masked,
//! `vespene/set` variables, stop and timeout), pipelines and schedules, and
//! retention (pruning the logs and build roots projects no longer keep), and
//! autoscaling (asking each autoscaled pool's autoscaler to size it).
//! Calls the store and the plugins; never the web tier.
//!
//! A database that goes away (restart, network cut) does not lose a build:
//! a running build's writes wait for it to come back ([`Engine::patiently`]),
//! and a claim whose answer was lost is found again by the worker that made it.

mod access;
pub mod autoscale;
mod enqueue;
mod host;
pub mod import;
pub mod live;
pub mod mask;
mod output;
mod pipeline;
pub mod retention;
mod run;
pub mod schedule;
mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

pub use enqueue::{LaunchAnswers, StartRequest};
pub use pipeline::{PipelineRun, StageBuild, StageRun};
pub use run::{pretty_json, LAUNCH_SCRIPT};
pub use worker::{WorkerConfig, WorkerSummary};

use crate::plugins::Registry;
use crate::settings::Settings;
use crate::store::{Store, StoreError};

/// An engine error: one line for a person.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request is wrong (bad launch answers, unknown project, ...).
    #[error("{0}")]
    Invalid(String),
    /// A plugin or the system failed.
    #[error("{0}")]
    Failed(String),
}

impl EngineError {
    /// Whether the database was unreachable (see [`StoreError::is_unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, EngineError::Store(e) if e.is_unavailable())
    }
}

/// Shorthand.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The engine, shared by the web tier and the workers of one process.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registry: Arc<Registry>,
    settings: Arc<Settings>,
    /// Wakes this process's idle workers when a build is queued here.
    queued: Notify,
    /// When (unix seconds) this process last found the database unreachable; 0 if never.
    unavailable_at: AtomicI64,
    /// What builds must not see (see [`Engine::hidden_paths`]).
    hidden_paths: Vec<String>,
    /// Live output for viewers (see [`live`]).
    live: live::LiveHub,
}

/// How long a running build's writes wait for an unreachable database before
/// they give up: long enough for a restart or a failover.
const OUTAGE_PATIENCE: Duration = Duration::from_secs(600);

impl Engine {
    /// An engine over an open store and the loaded plugins.
    pub fn new(store: Store, registry: Arc<Registry>, settings: Arc<Settings>) -> Self {
        let hidden_paths = hidden_paths(&settings, &registry);
        Engine {
            inner: Arc::new(Inner {
                store,
                registry,
                settings,
                queued: Notify::new(),
                unavailable_at: AtomicI64::new(0),
                hidden_paths,
                live: live::LiveHub::new(),
            }),
        }
    }

    /// The server's own files, which isolation plugins hide from builds: the
    /// data directory (database, key), every build root, the settings files
    /// and the plugin libraries.
    pub fn hidden_paths(&self) -> &[String] {
        &self.inner.hidden_paths
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The live-output hub: builds this process runs publish into it, viewers follow it.
    pub fn live(&self) -> &live::LiveHub {
        &self.inner.live
    }

    /// Follows `build`'s output live (see [`live`]).
    pub fn follow(&self, build: crate::store::Id) -> live::Subscription {
        self.inner.live.subscribe(&self.inner.store, build)
    }

    /// The loaded plugins.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Runs a store operation, trying again while the database is unreachable
    /// (for up to ten minutes, backing off to one try every two seconds).
    /// Other errors are answered at once.
    pub(crate) async fn patiently<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match op().await {
                Err(e) if e.is_unavailable() && started.elapsed() < OUTAGE_PATIENCE => {
                    self.note_unavailable();
                    tracing::warn!(error = %e, "{what}: the database is unreachable; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// Records that the database was just unreachable from this process.
    pub(crate) fn note_unavailable(&self) {
        self.inner.unavailable_at.store(crate::store::now().timestamp(), Ordering::Relaxed);
    }

    /// Whether this process found the database unreachable within `window`.
    pub(crate) fn unavailable_within(&self, window: Duration) -> bool {
        let at = self.inner.unavailable_at.load(Ordering::Relaxed);
        at > 0 && crate::store::now().timestamp() - at <= window.as_secs() as i64
    }

    /// Tells idle workers of this process that there is work.
    pub(crate) fn notify_queued(&self) {
        self.inner.queued.notify_waiters();
    }

    /// Waits for [`Engine::notify_queued`].
    pub(crate) async fn queued(&self) {
        self.inner.queued.notified().await
    }
}

fn hidden_paths(settings: &Settings, registry: &Registry) -> Vec<String> {
    let mut paths = vec![settings.data_dir.clone(), settings.build_root()];
    paths.extend(settings.read_from.iter().cloned());
    paths.extend(registry.summaries().into_iter().map(|p| std::path::PathBuf::from(p.library)));
    // Hidden paths are compared with the paths a build is shown, so make them absolute.
    let mut paths: Vec<String> =
        paths.iter().filter_map(|p| std::path::absolute(p).ok()).map(|p| p.display().to_string()).collect();
    paths.sort();
    paths.dedup();
    paths
}
