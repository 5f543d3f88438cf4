//! The operations people and scripts perform, below every way of asking for
//! them: the REST API, the web UI and webhooks (`web`) are adapters that turn
//! a request into one call here and its result into an answer.
//!
//! An operation authenticates its caller ([`Principal`]), asks the
//! authorization plugin chain, checks its input, writes through the store
//! and records what it did in the audit log; it reaches the build engine for
//! starting, stopping, approving and following builds. It knows nothing of
//! HTTP: failures are [`Error`]s of a [`Failure`] kind, which the web tier
//! maps to status codes.
//!
//! What it owns: who may do what (`access`), the audit records of changes
//! (`audit`), logins, sessions and API tokens (`accounts`), the object
//! operations (`objects`), builds and pipelines (`builds`), the files of a
//! build's root (`files`), workers and autoscaling (`workers`), and what
//! operators read (`observe`).

pub mod access;
pub mod accounts;
pub mod audit;
pub mod builds;
mod error;
pub mod files;
pub mod objects;
pub mod observe;
pub mod startup;
pub mod workers;

use std::sync::Arc;

pub use access::Principal;
pub use error::{Error, Failure};

use crate::engine::Engine;
use crate::plugins::Registry;
use crate::settings::Settings;
use crate::store::Store;

/// The domain types the operations take and give: the store's models and
/// what the engine says about a build.
pub mod model {
    pub use crate::engine::live::{LiveBatch, LiveRead, Subscription};
    pub use crate::engine::retention::effective as effective_retention;
    pub use crate::engine::{pretty_json, LaunchAnswers, PipelineRun, LAUNCH_SCRIPT};
    pub use crate::plugins::{PluginSummary, Registry};
    pub use crate::store::models::*;
    pub use crate::store::validate::MAX_NAME;
    pub use crate::store::{
        now, random_token, AuditActor, AuditEvent, AuditFilter, AuditObject, BuildFilter, ExternalLogin, StoreError,
        ValidationError,
    };
}

/// The operations, over one store, engine and plugin registry. Cheap to
/// clone (it is a handle).
#[derive(Clone)]
pub struct Service {
    engine: Engine,
}

impl Service {
    /// The operations over `engine` (which holds the store and the plugins).
    pub fn new(engine: Engine) -> Self {
        Service { engine }
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        self.engine.settings()
    }

    fn store(&self) -> &Store {
        self.engine.store()
    }

    fn registry(&self) -> &Arc<Registry> {
        self.engine.registry()
    }

    /// The loaded plugins, as `GET /api/v1/plugins` lists them.
    pub fn plugin_summaries(&self) -> Vec<crate::plugins::PluginSummary> {
        self.registry().summaries()
    }
}
