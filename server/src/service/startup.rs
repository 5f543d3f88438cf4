//! What `vespene serve` does before and after it listens: opening the
//! database, refusing to run with no authorization plugin, the first start's
//! administrator and default pool, the warnings an operator must see, and
//! the embedded workers.

use std::sync::Arc;

use super::Service;
use crate::engine::{Engine, WorkerConfig, WorkerSummary};
use crate::plugins::Registry;
use crate::settings::{Limits, PluginSection, Settings};
use crate::store::{AuditActor, AuditObject, Id, RunningClaim, Store, WorkerPool};

/// The embedded workers, running until told to stop.
pub struct Workers {
    stop: tokio::sync::watch::Sender<bool>,
    running: Option<tokio::task::JoinHandle<crate::engine::Result<WorkerSummary>>>,
}

impl Workers {
    /// Stops claiming builds and waits for the builds in progress to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(running) = self.running {
            let _ = running.await;
        }
    }
}

fn has_authorization(registry: &Registry) -> bool {
    registry.all().iter().any(|p| p.section == PluginSection::Authorization)
}

/// Why the server must not start without an authorization plugin: with none,
/// every request would be allowed to everyone. `None` when one is configured,
/// or when `[authorization] allow_everything = true` says so explicitly.
pub fn authorization_refusal(settings: &Settings, registry: &Registry) -> Option<String> {
    if has_authorization(registry) || settings.authorization.allow_everything {
        return None;
    }
    Some(
        "no authorization plugin is configured (every entry of [plugins.authorization] is missing or disabled), \
         so every request would be allowed to everyone, anonymous ones included: refusing to start. Enable one \
         (e.g. [plugins.authorization.ownership] library = \"ownership\"), or set \
         [authorization] allow_everything = true to run without any"
            .to_string(),
    )
}

impl Service {
    /// Opens the database the settings name and holds it for serving (a key
    /// rotation must not run under a server). Refuses to run with no
    /// authorization plugin unless the settings allow everything; says so
    /// loudly when they do.
    pub async fn open(settings: Settings, registry: Registry) -> anyhow::Result<(Service, RunningClaim)> {
        if let Some(refusal) = authorization_refusal(&settings, &registry) {
            anyhow::bail!(refusal);
        }
        if settings.authorization.allow_everything && !has_authorization(&registry) {
            println!(
                "warning: no authorization plugin is configured and 'authorization.allow_everything' is true: \
                 every request is allowed to everyone, anonymous ones included"
            );
        }
        let store = Store::open_from_settings(&settings, Arc::new(registry.secrets_chain())).await?;
        let running = store.claim_running().await?;
        crate::store::set_hash_concurrency(Limits::or_cores(settings.limits.password_hash_concurrency));
        let engine = Engine::new(store, Arc::new(registry), Arc::new(settings));
        Ok((Service::new(engine), running))
    }

    /// The first start's administrator account and default pool, and the
    /// warnings about this configuration, printed for the operator; one
    /// audit record of the plugins this start loaded. Called once the port
    /// is bound, so a start that cannot listen does not spend the one-time
    /// administrator password on a server nobody can reach.
    pub async fn announce_start(&self) -> anyhow::Result<()> {
        let store = self.store();
        if let Some(password) = crate::store::ensure_admin(store).await? {
            // Shown once: the first start of a fresh database.
            println!("Created the administrator account: username 'admin', password '{password}'");
            println!("(change it after logging in; it is not shown again)");
        }
        if store.list_worker_pools().await?.is_empty() {
            // A fresh install gets one pool whose builds cannot see the server.
            let default = WorkerPool {
                name: "default".into(),
                description: "Runs each build in a sandbox of its own (sandbox isolation)".into(),
                isolation_method: "sandbox".into(),
                // Every user's first project goes here.
                shared: true,
                ..Default::default()
            };
            store.create_worker_pool(&default).await?;
            println!("Created the worker pool 'default' (sandbox isolation)");
        }
        for warning in self.unisolated_pool_warnings().await? {
            println!("warning: {warning}");
        }
        if self.registry().secrets_chain().names().is_empty() {
            println!(
                "warning: no secrets plugin is configured ([plugins.secrets]): passwords, SSH keys and secret \
                 variables can be neither stored nor read"
            );
        }
        // One record of what this start loaded, for whoever asks later what ran when.
        let loaded = self.registry().summaries();
        let object = AuditObject::new("plugins", None, format!("{} plugin(s)", loaded.len()));
        store
            .record_audit(&AuditActor::system(), "plugins.loaded", &object, serde_json::json!({ "plugins": loaded }))
            .await?;
        tracing::info!(plugins = loaded.len(), "loaded plugins");
        Ok(())
    }

    /// Starts the embedded workers for the pools `[workers] pools` names,
    /// when `[workers] embedded` is on.
    pub fn start_workers(&self) -> Workers {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let workers = &self.settings().workers;
        let running = workers.embedded.then(|| {
            let config = WorkerConfig::named(workers.pools.clone(), workers.per_pool as usize);
            let engine = self.engine.clone();
            tokio::spawn(async move { engine.run_worker(config, stopped).await })
        });
        Workers { stop, running }
    }

    /// One line per pool whose builds run unisolated, as the server's own
    /// user (an isolation entry of the `shell` library), that ordinary users
    /// may use: a shared pool, or one an ordinary user owns. Whoever may
    /// start a build there can read the server's key and database.
    async fn unisolated_pool_warnings(&self) -> anyhow::Result<Vec<String>> {
        let shell_entries: Vec<String> = self
            .registry()
            .summaries()
            .into_iter()
            .filter(|p| p.section == "isolation" && p.plugin == "shell")
            .map(|p| p.name)
            .collect();
        let superusers: Vec<Id> =
            self.store().list_users().await?.into_iter().filter(|u| u.is_superuser).map(|u| u.id).collect();
        Ok(self
            .store()
            .list_worker_pools()
            .await?
            .into_iter()
            .filter(|pool| shell_entries.contains(&pool.isolation_method))
            .filter(|pool| pool.shared || pool.created_by.is_some_and(|owner| !superusers.contains(&owner)))
            .map(|pool| {
                format!(
                    "worker pool '{}' runs builds with '{}' isolation, as the server's own user, and ordinary users \
                     may use it: whoever starts a build there can read the server's key and database (use 'sandbox')",
                    pool.name, pool.isolation_method
                )
            })
            .collect())
    }
}
