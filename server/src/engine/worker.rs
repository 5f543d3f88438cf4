//! Workers: slots that claim builds atomically from their pools' queues and
//! run them. Idle slots wake when this process queues a build or, on
//! PostgreSQL, when any process does (LISTEN/NOTIFY). For what that misses
//! (other processes' builds on SQLite), one idle slot at a time polls the
//! store every `workers.poll_milliseconds`, and a build it finds wakes the
//! others, so an idle worker costs one query per interval however many slots
//! it has. Housekeeping runs beside them:
//! check-ins, schedules, sweeping builds nobody will run, autoscaling (see
//! [`super::autoscale`]), and retention (the logs and this host's build roots
//! that projects no longer keep).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use super::{schedule, Engine, EngineError, Result, StartRequest};
use crate::store::{Build, BuildStatus, Id, Worker};

/// How often a worker checks in while it runs builds.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often housekeeping runs.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// What a worker process serves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Pool names; empty means every pool.
    pub pools: Vec<String>,
    /// Builds run at once.
    pub slots: usize,
    /// Stop after this many builds.
    pub max_builds: Option<u64>,
    /// Run exactly this build, then stop.
    pub build_id: Option<Id>,
    /// A name unique to this worker process.
    pub name: String,
}

/// The builds this worker process is running. A claim and its entry here
/// happen under the lock, so a build the store says this worker holds but
/// that is not here is a claim whose answer was lost (a database restart).
type Running = Arc<Mutex<HashSet<Id>>>;

/// What a worker did.
#[derive(Debug, Clone, Default)]
pub struct WorkerSummary {
    /// Builds it ran.
    pub builds: u64,
}

impl WorkerConfig {
    /// A worker named after this host and process; a second worker in the
    /// same process gets a name of its own (claim recovery tells workers
    /// apart by name).
    pub fn named(pools: Vec<String>, slots: usize) -> Self {
        static WORKERS_IN_PROCESS: AtomicU64 = AtomicU64::new(0);
        let host = hostname();
        let name = match WORKERS_IN_PROCESS.fetch_add(1, Ordering::Relaxed) {
            0 => format!("{host}-{}", std::process::id()),
            n => format!("{host}-{}-{n}", std::process::id()),
        };
        Self { pools, slots: slots.max(1), max_builds: None, build_id: None, name }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

impl Engine {
    /// Runs a worker until `shutdown` turns true or its build budget is spent.
    pub async fn run_worker(&self, config: WorkerConfig, shutdown: watch::Receiver<bool>) -> Result<WorkerSummary> {
        let worker_id = self.check_in(&config).await?;
        let _heartbeat = self.heartbeat(&config);
        let _listener = self.listen_for_queued_builds();
        if let Some(build_id) = config.build_id {
            let build = self
                .store()
                .claim_build(build_id, Some(worker_id))
                .await?
                .ok_or_else(|| EngineError::Invalid(format!("build {build_id} does not exist or is not queued")))?;
            self.run_build(build).await?;
            return Ok(WorkerSummary { builds: 1 });
        }
        let ran = Arc::new(AtomicU64::new(0));
        let running: Running = Arc::default();
        let poll = Duration::from_millis(self.settings().workers.poll_milliseconds.max(10));
        let budget = config.max_builds;
        // Held by the one idle slot whose turn it is to poll.
        let poll_turn = Arc::new(Mutex::new(()));
        let mut slots = Vec::new();
        for slot in 0..config.slots.max(1) {
            let engine = self.clone();
            let pools = config.pools.clone();
            let ran = ran.clone();
            let running = running.clone();
            let mut shutdown = shutdown.clone();
            let poll_turn = poll_turn.clone();
            slots.push(tokio::spawn(async move {
                // At start the first slot looks at the queue as a poll would (a
                // build it finds wakes the others) and the rest wait: a worker
                // with 50 slots does not start with 50 queries at once.
                let mut polled = slot == 0;
                let mut waiting = slot != 0;
                loop {
                    if *shutdown.borrow() || budget.is_some_and(|b| ran.load(Ordering::SeqCst) >= b) {
                        return;
                    }
                    if !std::mem::take(&mut waiting) {
                        let polled = std::mem::take(&mut polled);
                        match engine.claim(&pools, worker_id, budget, &ran, &running, polled).await {
                            Ok(true) => continue,
                            Ok(false) => {}
                            Err(e) => tracing::error!(error = %e, "worker slot"),
                        }
                    }
                    tokio::select! {
                        _ = engine.queued() => {}
                        _ = async {
                            let _turn = poll_turn.lock().await;
                            tokio::time::sleep(poll).await;
                        } => polled = true,
                        _ = shutdown.changed() => {}
                    }
                }
            }));
        }
        let housekeeping = tokio::spawn({
            let engine = self.clone();
            let config = config.clone();
            async move {
                loop {
                    if let Err(e) = engine.housekeeping(&config).await {
                        tracing::warn!(error = %e, "worker housekeeping");
                    }
                    tokio::time::sleep(HOUSEKEEPING).await;
                }
            }
        });
        for slot in slots {
            let _ = slot.await;
        }
        housekeeping.abort();
        Ok(WorkerSummary { builds: ran.load(Ordering::SeqCst) })
    }

    /// Checks in every two seconds until the answer is dropped.
    pub(crate) fn heartbeat(&self, config: &WorkerConfig) -> AbortOnDrop {
        let engine = self.clone();
        let config = config.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = engine.check_in(&config).await {
                    if e.is_unavailable() {
                        engine.note_unavailable();
                    }
                    tracing::warn!(error = %e, "worker check-in");
                }
            }
        }))
    }

    /// On PostgreSQL, wakes this process's idle slots whenever any process
    /// queues a build (LISTEN/NOTIFY), reconnecting after a lost connection;
    /// the slots' poll covers what is missed meanwhile. `None` on SQLite.
    fn listen_for_queued_builds(&self) -> Option<AbortOnDrop> {
        if self.store().backend() != crate::store::Backend::Postgres {
            return None;
        }
        let engine = self.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                match engine.store().queue_listener().await {
                    Ok(Some(mut listener)) => loop {
                        match listener.try_recv().await {
                            Ok(Some(_)) => engine.notify_queued(),
                            // The connection was lost; the next call reconnects and listens again.
                            Ok(None) => engine.notify_queued(),
                            Err(e) => {
                                tracing::warn!(error = %e, "queue listener");
                                break;
                            }
                        }
                    },
                    Ok(None) => return,
                    Err(e) => tracing::warn!(error = %e, "queue listener"),
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        })))
    }

    /// Registers (or refreshes) this worker; answers its id.
    pub(crate) async fn check_in(&self, config: &WorkerConfig) -> Result<Id> {
        Ok(self
            .store()
            .upsert_worker(&Worker {
                worker_uid: config.name.clone(),
                hostname: hostname(),
                build_root: self.settings().build_root().display().to_string(),
                pools: config.pools.clone(),
                ..Default::default()
            })
            .await?)
    }

    async fn pool_ids(&self, names: &[String]) -> Result<Vec<Id>> {
        let pools = self.store().list_worker_pools().await?;
        if names.is_empty() {
            return Ok(pools.into_iter().map(|p| p.id).collect());
        }
        Ok(pools.into_iter().filter(|p| names.contains(&p.name)).map(|p| p.id).collect())
    }

    /// Claims and runs one build (or the builds of a claim whose answer was
    /// lost); false when the queue was empty.
    async fn claim(
        &self,
        pools: &[String],
        worker_id: Id,
        budget: Option<u64>,
        ran: &AtomicU64,
        running: &Running,
        polled: bool,
    ) -> Result<bool> {
        let ids = self.pool_ids(pools).await?;
        // Count the build before running it, so slots never overrun the budget.
        if let Some(b) = budget {
            if ran.fetch_add(1, Ordering::SeqCst) >= b {
                ran.fetch_sub(1, Ordering::SeqCst);
                return Ok(false);
            }
        }
        let claimed = match self.claim_or_recover(&ids, worker_id, running).await {
            Ok(claimed) => claimed,
            Err(e) => {
                if budget.is_some() {
                    ran.fetch_sub(1, Ordering::SeqCst);
                }
                return Err(e);
            }
        };
        if claimed.is_empty() {
            if budget.is_some() {
                ran.fetch_sub(1, Ordering::SeqCst);
            }
            return Ok(false);
        }
        if polled {
            // Polling found work another process queued: there may be more,
            // and the other idle slots only poll in turn.
            self.notify_queued();
        }
        let extra = claimed.len() as u64 - u64::from(budget.is_some());
        ran.fetch_add(extra, Ordering::SeqCst);
        for build in claimed {
            let id = build.id;
            self.run_claimed(build).await;
            running.lock().await.remove(&id);
        }
        Ok(true)
    }

    /// The next queued build, claimed. When the claim's answer is lost to an
    /// unreachable database it may still have gone through: once the database
    /// is back, the builds the store says this worker holds and no slot runs
    /// are this claim's, and are answered instead (run once, never lost).
    async fn claim_or_recover(&self, pool_ids: &[Id], worker_id: Id, running: &Running) -> Result<Vec<Build>> {
        let mut held = running.lock().await;
        match self.store().claim_next_build(pool_ids, Some(worker_id)).await {
            Ok(Some(build)) => {
                held.insert(build.id);
                Ok(vec![build])
            }
            Ok(None) => Ok(Vec::new()),
            Err(e) if e.is_unavailable() => {
                self.note_unavailable();
                tracing::warn!(error = %e, "claim interrupted; checking whether it went through");
                let mine = self
                    .patiently("look for an interrupted claim", || self.store().claimed_builds_of_worker(worker_id))
                    .await?;
                let lost: Vec<Build> = mine.into_iter().filter(|b| !held.contains(&b.id)).collect();
                for build in &lost {
                    tracing::warn!(build = build.id, "an interrupted claim went through; running its build");
                    held.insert(build.id);
                }
                Ok(lost)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a build this worker claimed; a build that cannot run fails.
    async fn run_claimed(&self, build: Build) {
        let id = build.id;
        let result: Result<()> = async {
            let pool = self.patiently("read the worker pool", || self.store().get_worker_pool(build.worker_pool_id));
            if let (Some(project_id), Some(pool)) = (build.project_id, pool.await?) {
                if pool.build_latest {
                    // Starts refuse a second build of a busy project, so duplicates come
                    // only from builds queued straight into the store; each says why it went.
                    let dropped = self
                        .patiently("collapse queued duplicates", || self.store().abort_other_queued(project_id, id))
                        .await?;
                    for other in dropped {
                        let why = format!(
                            "dropped without running: build {id} of the same project was taken first and pool {} \
                             collapses duplicate queued builds (build_latest)",
                            pool.name
                        );
                        let _ = self
                            .store()
                            .append_output(other, &[(crate::store::OutputStream::Message, why.as_str())])
                            .await;
                        self.live().finished(other);
                    }
                }
            }
            self.run_build(build).await.map(|_| ())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(build = id, error = %e, "build failed to run");
            let failed =
                self.patiently("fail the build", || self.store().set_build_status(id, BuildStatus::Failure, Some(-1)));
            if let Err(e) = failed.await {
                tracing::error!(build = id, error = %e, "cannot mark the build failed");
            }
        }
        // Its final status is stored: live viewers get the end now.
        self.live().finished(id);
    }

    async fn housekeeping(&self, config: &WorkerConfig) -> Result<()> {
        if let Err(e) = self.check_in(config).await {
            if e.is_unavailable() {
                self.note_unavailable();
            }
            return Err(e);
        }
        let now = crate::store::now();
        // The rule for a worker that stopped checking in: its builds are ORPHANED,
        // not run again (a half-run build may have had effects), and keep their output.
        let timeout = self.settings().workers.heartbeat_timeout_seconds.max(1);
        let silent = now - chrono::Duration::seconds(timeout as i64);
        // Right after the database was unreachable from here, the others' silence
        // is the outage's, not theirs: give them a full timeout to check in again.
        if !self.unavailable_within(Duration::from_secs(timeout)) {
            let message = "the worker running this build stopped checking in: build orphaned";
            for id in self.store().orphan_builds_of_silent_workers(silent, message).await? {
                tracing::warn!(build = id, "{message}");
            }
        }
        for pool in self.store().list_worker_pools().await? {
            if !config.pools.is_empty() && !config.pools.contains(&pool.name) {
                continue;
            }
            let cutoff = now - chrono::Duration::minutes(pool.auto_abort_minutes.max(1));
            self.store().orphan_stale_builds(pool.id, cutoff).await?;
        }
        self.store().abort_stale_aborting(now - chrono::Duration::minutes(10)).await?;
        self.run_schedules().await?;
        self.run_imports(config).await?;
        if let Err(e) = self.autoscale_due_pools().await {
            tracing::warn!(error = %e, "autoscaling");
        }
        self.apply_retention().await
    }

    /// One slice of retention: the logs the keep rules no longer cover, and
    /// the build roots under this worker's own build root. Safe with other
    /// worker processes doing the same at once (see [`super::retention`]).
    pub async fn apply_retention(&self) -> Result<()> {
        use super::retention::{apply, Budget};
        let settings = self.settings();
        let root = settings.build_root();
        let report = apply(self.store(), &settings.retention, &root, Budget::HOUSEKEEPING).await?;
        for (id, why) in &report.failed_roots {
            tracing::warn!(build = id, error = %why, "retention: cannot remove the build root; trying again next time");
        }
        if !report.logs.is_empty() || !report.roots.is_empty() {
            tracing::info!(
                logs = report.logs.len(),
                roots = report.roots.len(),
                build_root = %root.display(),
                "retention: removed build logs and build roots the projects' keep rules no longer cover"
            );
        }
        Ok(())
    }

    /// Runs the due organization imports whose worker pool this worker
    /// serves; one import of an organization at a time across all workers.
    pub async fn run_imports(&self, config: &WorkerConfig) -> Result<()> {
        let orgs: Vec<_> = self.store().list_organizations().await?.into_iter().filter(|o| o.import_enabled).collect();
        if orgs.is_empty() {
            return Ok(());
        }
        let served = self.pool_ids(&config.pools).await?;
        for org in orgs {
            if !served.contains(&org.worker_pool_id) {
                continue;
            }
            match self.import_organization(org.id, false, config).await {
                Ok(Some(build)) => {
                    tracing::info!(organization = %org.name, build = build.id, status = %build.status, "organization imported")
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(organization = %org.name, error = %e, "organization import"),
            }
        }
        Ok(())
    }

    /// Queues the scheduled builds that are due. Every worker process looks;
    /// an engine mark per project and slot makes exactly one of them queue it.
    pub async fn run_schedules(&self) -> Result<()> {
        let now = crate::store::now();
        for project in self.store().list_projects().await? {
            if !project.schedule_enabled {
                continue;
            }
            let (crons, zone) = match (schedule::project_schedules(&project), schedule::project_zone(&project)) {
                (Ok(c), Ok(z)) => (c, z),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(project = %project.name, error = %e, "bad schedule");
                    continue;
                }
            };
            let since = now - chrono::Duration::minutes(project.schedule_threshold.max(1));
            let Some(slot) = schedule::latest_due(&crons, zone, since, now) else { continue };
            if let Some(active) = project.active_build_id {
                if let Some(b) = self.store().get_build(active).await? {
                    if b.status.is_active() {
                        continue;
                    }
                }
            }
            if self.store().try_mark("schedule", &format!("{}:{}", project.id, slot.timestamp())).await? {
                let build = self.start_project(StartRequest { project_id: project.id, ..Default::default() }).await?;
                tracing::info!(project = %project.name, build = build.id, "scheduled build queued");
            }
        }
        Ok(())
    }
}

/// Aborts a background task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
