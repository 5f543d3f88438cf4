//! Autoscaling: housekeeping asks each autoscaled pool's autoscaler (an entry
//! of the `[plugins.autoscalers]` settings section, named by the pool) to
//! `plan` the pool's size from its demand and to `scale` the pool to it,
//! every `reevaluate_seconds`.
//!
//! One decision at a time per pool, across every process on the database: a
//! decision starts by winning the pool row's lease (a conditional `UPDATE`,
//! see [`crate::store::Store::claim_autoscaling`]) and ends by recording
//! `last_autoscaled`, the status and a one-line message on the row, which
//! releases the lease. A process whose settings do not configure the pool's
//! autoscaler (a containerised worker, say) never claims it.
//!
//! The server keeps the final word on size: a plan outside the pool's
//! `minimum..=maximum` is cut back into it before `scale` sees it, so a
//! plugin's mistake cannot run up a bill past the pool's maximum.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RSlice, RStr, RString};
use serde::Serialize;
use serde_json::{json, Value};
use vespene_plugin_api::abi::*;
use vespene_plugin_api::{CommandRequest, PoolInfo, PoolStatus, ScalePlan};

use super::{Engine, EngineError, Result};
use crate::store::{BuildStatus, Id, WorkerPool};

/// How long a decision holds its pool: a process that dies mid-decision
/// blocks the pool's autoscaling this long at most.
const LEASE: Duration = Duration::from_secs(600);
/// When the host tells a scaling plugin to stop (its cancel token), well
/// before the lease runs out, so a slow `scale` ends while it still holds it.
const SCALE_DEADLINE: Duration = Duration::from_secs(540);
/// The longest line of a scaling command's output kept.
const MAX_LINE: usize = 4096;

/// One autoscaling decision, as recorded and as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The pool's name.
    pub pool: String,
    /// The autoscaler entry that decided.
    pub autoscaler: String,
    /// Builds waiting in the pool's queue.
    pub queued: u64,
    /// Builds running in the pool.
    pub running: u64,
    /// The pool's own workers that checked in recently.
    pub workers: u64,
    /// The size planned (within the pool's bounds); absent when `plan` failed.
    pub size: Option<u64>,
    /// Whether the plan was applied (`scale` answered Ok).
    pub applied: bool,
    /// The one line recorded on the pool: the plan and its reason, or the error.
    pub message: String,
    /// What the autoscaler logged while scaling (its messages and command output).
    pub log: Vec<String>,
}

impl Engine {
    /// Decides for every autoscaled pool whose decision is due and whose
    /// autoscaler this process has; housekeeping calls it.
    pub async fn autoscale_due_pools(&self) -> Result<()> {
        for pool in self.store().list_worker_pools().await? {
            if !pool.autoscaling_enabled || self.registry().autoscaler(&pool.autoscaler).is_none() {
                continue;
            }
            if let Some(decision) = self.autoscale(pool.id, false).await? {
                log_decision(&decision);
            }
        }
        Ok(())
    }

    /// Decides for one pool now, due or not (`POST .../autoscale`); `None`
    /// while another decision for it runs.
    pub async fn autoscale_now(&self, pool_id: Id) -> Result<Option<Decision>> {
        let pool = self
            .store()
            .get_worker_pool(pool_id)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("worker pool {pool_id} does not exist")))?;
        if !pool.autoscaling_enabled {
            return Err(EngineError::Invalid(format!("worker pool {} does not have autoscaling enabled", pool.name)));
        }
        if self.registry().autoscaler(&pool.autoscaler).is_none() {
            return Err(EngineError::Invalid(format!(
                "the autoscaler '{}' of worker pool {} is not configured in this server's [plugins.autoscalers]",
                pool.autoscaler, pool.name
            )));
        }
        let decision = self.autoscale(pool_id, true).await?;
        if let Some(d) = &decision {
            log_decision(d);
        }
        Ok(decision)
    }

    /// Claims the pool's decision, makes it and records it.
    async fn autoscale(&self, pool_id: Id, force: bool) -> Result<Option<Decision>> {
        let lease_until = crate::store::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
        let Some(pool) = self.store().claim_autoscaling(pool_id, lease_until, force).await? else {
            return Ok(None);
        };
        let decision = match self.decide(&pool).await {
            Ok(d) => d,
            Err(e) => Decision {
                pool: pool.name.clone(),
                autoscaler: pool.autoscaler.clone(),
                queued: 0,
                running: 0,
                workers: 0,
                size: None,
                applied: false,
                message: format!("cannot autoscale: {e}"),
                log: vec![],
            },
        };
        let status = if decision.applied { 0 } else { 1 };
        self.store().finish_autoscaling(pool.id, status, &decision.message).await?;
        Ok(Some(decision))
    }

    /// Looks at the pool's demand, asks the autoscaler to plan and then to
    /// scale, on the blocking pool (plugins block).
    async fn decide(&self, pool: &WorkerPool) -> Result<Decision> {
        let store = self.store();
        let queued = store.count_builds(pool.id, BuildStatus::Queued).await?.max(0) as u64;
        let running = (store.count_builds(pool.id, BuildStatus::Running).await?
            + store.count_builds(pool.id, BuildStatus::Aborting).await?)
            .max(0) as u64;
        let timeout = self.settings().workers.heartbeat_timeout_seconds.max(1);
        let since = crate::store::now() - chrono::Duration::seconds(timeout as i64);
        let workers = store.count_pool_workers(&pool.name, since).await?;
        let status = pool_status(pool, queued, running, workers);
        let registry = self.registry().clone();
        let entry = pool.autoscaler.clone();
        let (minimum, maximum) = (pool.minimum.max(0) as u64, pool.maximum.max(0) as u64);
        let mut decision = Decision {
            pool: pool.name.clone(),
            autoscaler: entry.clone(),
            queued,
            running,
            workers,
            size: None,
            applied: false,
            message: String::new(),
            log: vec![],
        };
        let (plan, outcome, log) = tokio::task::spawn_blocking(move || {
            let scaler =
                registry.autoscaler(&entry).ok_or_else(|| format!("autoscaler '{entry}' is not configured"))?;
            let status_json = serde_json::to_string(&status).map_err(|e| e.to_string())?;
            let planned =
                scaler.plan(RStr::from_str(&status_json)).into_result().map_err(|e| format!("plan failed: {e}"))?;
            let mut plan: ScalePlan = serde_json::from_str(planned.as_str())
                .map_err(|e| format!("plan answered something that is not a ScalePlan: {e}"))?;
            let wanted = plan.size;
            plan.size = wanted.clamp(minimum, maximum);
            if plan.size != wanted {
                plan.reason = format!("{} (the plan of {wanted} cut to the pool's {minimum}..={maximum})", plan.reason);
            }
            let plan_json = serde_json::to_string(&plan).map_err(|e| e.to_string())?;
            let host = ScaleHost::new();
            let outcome = scaler
                .scale(RStr::from_str(&status_json), RStr::from_str(&plan_json), &host.host())
                .into_result()
                .map_err(|e| e.to_string());
            Ok::<_, String>((plan, outcome, host.into_log()))
        })
        .await
        .map_err(|e| EngineError::Failed(format!("autoscaling pool {} stopped: {e}", pool.name)))?
        .map_err(EngineError::Failed)?;
        decision.size = Some(plan.size);
        decision.log = log;
        let demand = format!("{queued} queued, {running} running, {workers} workers");
        match outcome {
            Ok(()) => {
                decision.applied = true;
                decision.message = format!("scaled to {} workers ({demand}): {}", plan.size, plan.reason);
            }
            Err(e) => {
                decision.message = format!("scaling to {} workers failed ({demand}): {e}", plan.size);
            }
        }
        Ok(decision)
    }
}

/// The log line of a decision (the pool row keeps the same line).
fn log_decision(d: &Decision) {
    if d.applied {
        tracing::info!(pool = %d.pool, autoscaler = %d.autoscaler, "autoscaling: {}", d.message);
    } else {
        tracing::warn!(pool = %d.pool, autoscaler = %d.autoscaler, "autoscaling: {}", d.message);
    }
}

/// What the autoscaler sees: the pool, its demand, its own workers, and the
/// pool's autoscaling settings in `extra` (`minimum`, `maximum`,
/// `running_weight`, `queued_weight`, `excess`, `multiplier`, `autoscaler`).
fn pool_status(pool: &WorkerPool, queued: u64, running: u64, workers: u64) -> PoolStatus {
    let settings = json!({
        "autoscaler": pool.autoscaler,
        "minimum": pool.minimum.max(0),
        "maximum": pool.maximum.max(0),
        "running_weight": pool.running_weight,
        "queued_weight": pool.queued_weight,
        "excess": pool.excess,
        "multiplier": pool.multiplier,
    });
    let extra = match settings {
        Value::Object(map) => map,
        _ => Default::default(),
    };
    PoolStatus {
        pool: PoolInfo {
            id: pool.id,
            name: pool.name.clone(),
            isolation: Some(pool.isolation_method.clone()).filter(|s| !s.is_empty()),
            sudo_user: pool.sudo_user.clone(),
            network: Some(pool.network),
            ..Default::default()
        },
        queued,
        running,
        workers,
        extra,
    }
}

/// The callbacks a `scale` call gets: its messages and command output are
/// kept for the decision's log, its commands run in the temporary directory,
/// and it is told to stop at [`SCALE_DEADLINE`]. It gets no secrets.
struct ScaleHost {
    log: Mutex<Vec<String>>,
    deadline: Instant,
}

impl ScaleHost {
    fn new() -> Self {
        ScaleHost { log: Mutex::new(vec![]), deadline: Instant::now() + SCALE_DEADLINE }
    }

    fn host(&self) -> Host<'_> {
        Host {
            output: OutputSink_TO::from_ptr(self, TD_Opaque),
            cancel: CancelToken_TO::from_ptr(self, TD_Opaque),
            commands: CommandRunner_TO::from_ptr(self, TD_Opaque),
            secrets: SecretDecrypter_TO::from_ptr(self, TD_Opaque),
        }
    }

    fn push(&self, lines: Vec<String>) {
        for line in &lines {
            tracing::info!("autoscaler: {line}");
        }
        self.log.lock().unwrap_or_else(|e| e.into_inner()).extend(lines);
    }

    fn into_log(self) -> Vec<String> {
        self.log.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

impl OutputSink for ScaleHost {
    fn emit(&self, _stream: Stream, lines: RSlice<'_, RStr<'_>>) {
        self.push(lines.iter().map(|l| l.as_str().to_owned()).collect());
    }

    fn set_variable(&self, name: RStr<'_>, _value: RStr<'_>) -> RResult<(), RString> {
        RErr(format!("cannot set output variable {}: an autoscaler runs outside any build", name.as_str()).into())
    }
}

impl CancelToken for ScaleHost {
    fn is_cancelled(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn remaining_ms(&self) -> i64 {
        self.deadline.saturating_duration_since(Instant::now()).as_millis() as i64
    }
}

impl CommandRunner for ScaleHost {
    fn run(&self, request: RStr<'_>) -> RResult<CommandOutcome, RString> {
        let request: CommandRequest = match serde_json::from_str(request.as_str()) {
            Ok(r) => r,
            Err(e) => return RErr(format!("invalid command request: {e}").into()),
        };
        if request.log_command {
            self.push(vec![format!("running: {}", vespene_plugin_api::runner::describe(&request))]);
        }
        let cwd = std::env::temp_dir();
        match vespene_plugin_api::runner::run_batches(
            &request,
            Some(&cwd),
            0,
            MAX_LINE,
            |lines| self.push(lines),
            &|| self.is_cancelled(),
        ) {
            Ok((outcome, _)) => ROk(outcome),
            Err(e) => RErr(e.into()),
        }
    }
}

impl SecretDecrypter for ScaleHost {
    fn decrypt(&self, stored: RStr<'_>) -> RResult<RString, RString> {
        if stored.as_str().starts_with("secret://") {
            return RErr("autoscalers are given no stored secrets".into());
        }
        ROk(stored.as_str().into())
    }
}
