//! The build engine: the queue and its workers, the life of a build, and what
//! starts builds (people, pipelines, schedules).
//!
//! Owns: enqueueing (variables from the `variables` plugins, launch answers,
//! the script rendered with strict undefined and frozen on the build),
//! workers (atomic claim, wake-up on enqueue with a polling fallback,
//! duplicate collapse, housekeeping), running a build (build root, triggers,
//! checkout, isolation, output through the output chain with secrets masked,
//! `vespene/set` variables, stop and timeout), pipelines and schedules.
//! Calls the store and the plugins; never the web tier.

mod enqueue;
mod host;
pub mod import;
mod output;
mod pipeline;
mod run;
pub mod schedule;
mod worker;

use std::sync::Arc;

use tokio::sync::Notify;

pub use enqueue::{LaunchAnswers, StartRequest};
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
}

impl Engine {
    /// An engine over an open store and the loaded plugins.
    pub fn new(store: Store, registry: Arc<Registry>, settings: Arc<Settings>) -> Self {
        Engine { inner: Arc::new(Inner { store, registry, settings, queued: Notify::new() }) }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The loaded plugins.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
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
