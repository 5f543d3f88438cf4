//! Pipelines: after a success, the run (all builds sharing an origin) moves to
//! the next stage once the latest build of every peer of the stage in this
//! run is green; the next stage's projects start in parallel with parent and
//! origin set. A failure stops the run where it is; starting the failed
//! project again (or re-running its stage) continues the same run, with the
//! outputs of that run's earlier stages. A stage marked `approval_required`
//! makes the run wait until someone allowed to approve the pipeline does.
//! One process decides each advance (an engine mark per attempt), so two
//! peers finishing together start the next stage once.

use serde::Serialize;

use super::{Engine, EngineError, Result, StartRequest};
use crate::store::{Build, BuildStatus, Id, OutputStream, Pipeline, PipelineApproval, Project, StoreError, Timestamp};

/// One stage of one run, for the runs grid.
#[derive(Debug, Clone, Serialize)]
pub struct StageRun {
    /// The stage.
    pub stage_id: Id,
    /// Its name.
    pub name: String,
    /// `SUCCESS`, `FAILURE`, `RUNNING`, `QUEUED`, `ABORTED`, ... of its
    /// projects' latest builds in the run; `WAITING_FOR_APPROVAL`; or
    /// `NOT_REACHED`.
    pub status: String,
    /// The latest build of each of its projects in the run.
    pub builds: Vec<StageBuild>,
    /// Its approval in this run, when it needs one and the run reached it.
    pub approval: Option<PipelineApproval>,
}

/// A project's latest build in a run.
#[derive(Debug, Clone, Serialize)]
pub struct StageBuild {
    /// The project.
    pub project_id: Id,
    /// Its name.
    pub project: String,
    /// The build.
    pub build_id: Id,
    /// Its status.
    pub status: BuildStatus,
}

/// A pipeline run: the builds sharing one origin build.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRun {
    /// The run's id: its origin build.
    pub run: Id,
    /// `running`, `waiting for approval`, `failed`, `succeeded` or `stopped`.
    pub state: String,
    /// When its first build was queued.
    pub started: Option<Timestamp>,
    /// Its stages, in the pipeline's order.
    pub stages: Vec<StageRun>,
}

/// A request the run's state does not allow (409).
fn conflict(message: String) -> EngineError {
    EngineError::Store(StoreError::Conflict(message))
}

/// The latest build of each project in a run.
fn latest_per_project(run: &[Build]) -> Vec<&Build> {
    let mut latest: Vec<&Build> = Vec::new();
    for b in run {
        match latest.iter_mut().find(|l| l.project_id == b.project_id) {
            Some(l) if l.id < b.id => *l = b,
            Some(_) => {}
            None => latest.push(b),
        }
    }
    latest
}

impl Engine {
    pub(super) async fn advance_pipeline(&self, build: &Build, project: &Project) -> Result<()> {
        let store = self.store();
        let (Some(pipeline_id), Some(stage_id)) = (project.pipeline_id, project.stage_id) else { return Ok(()) };
        if !project.pipeline_enabled {
            return Ok(());
        }
        let Some(pipeline) = store.get_pipeline(pipeline_id).await? else { return Ok(()) };
        if !pipeline.enabled {
            return Ok(());
        }
        let Some(index) = pipeline.stage_ids.iter().position(|s| *s == stage_id) else { return Ok(()) };
        let origin = build.pipeline_origin_build_id.unwrap_or(build.id);
        let run = store.builds_of_run(origin).await?;
        let latest = latest_per_project(&run);
        let peers = store.projects_in_stage(pipeline_id, stage_id).await?;
        // The first stage gates on the projects this run started; later stages on all of theirs.
        let required: Vec<&Project> = if index == 0 {
            peers.iter().filter(|p| run.iter().any(|b| b.project_id == Some(p.id))).collect()
        } else {
            peers.iter().collect()
        };
        let latest_of = |p: &Project| latest.iter().find(|b| b.project_id == Some(p.id)).copied();
        let waiting: Vec<&str> = required
            .iter()
            .filter(|p| latest_of(p).is_none_or(|b| b.status != BuildStatus::Success))
            .map(|p| p.name.as_str())
            .collect();
        let say = |text: String| async move {
            let _ = self.store().append_output(build.id, &[(OutputStream::Message, text.as_str())]).await;
        };
        if !waiting.is_empty() {
            say(format!("pipeline {}: waiting for {}", pipeline.name, waiting.join(", "))).await;
            return Ok(());
        }
        // Each attempt at a stage (a re-run makes new builds) advances once.
        let attempt = required.iter().filter_map(|p| latest_of(p)).map(|b| b.id).max().unwrap_or(build.id);
        let Some(next_stage) = pipeline.stage_ids.get(index + 1).copied() else {
            if store.try_mark("pipeline-complete", &format!("{origin}:{attempt}")).await? {
                store.mark_pipeline_complete(pipeline.id, build.id).await?;
                say(format!("pipeline {}: complete", pipeline.name)).await;
            }
            return Ok(());
        };
        if !store.try_mark("pipeline-advance", &format!("{origin}:{}:{attempt}", index + 1)).await? {
            return Ok(());
        }
        let stage = store.get_stage(next_stage).await?;
        let stage_name = stage.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        if stage.as_ref().is_some_and(|s| s.approval_required) {
            store.request_approval(pipeline_id, origin, next_stage, build.id).await?;
            say(format!(
                "pipeline {}: stage {stage_name} waits for approval (run {origin}): someone allowed to approve \
                 the pipeline approves it on the pipeline page or with POST /api/v1/pipelines/{pipeline_id}/runs/{origin}/approve",
                pipeline.name
            ))
            .await;
            return Ok(());
        }
        let started = self.start_stage(&pipeline, next_stage, build, None).await?;
        say(format!("pipeline {}: next stage {stage_name}: {}", pipeline.name, started.join(", "))).await;
        Ok(())
    }

    /// Starts every project of a stage (that takes part in pipelines) after
    /// `parent`; answers a line per project: its build, or why it did not start.
    async fn start_stage(
        &self,
        pipeline: &Pipeline,
        stage_id: Id,
        parent: &Build,
        created_by: Option<Id>,
    ) -> Result<Vec<String>> {
        let projects = self.store().projects_in_stage(pipeline.id, stage_id).await?;
        let mut started = Vec::new();
        for p in projects.iter().filter(|p| p.pipeline_enabled) {
            let request = StartRequest {
                project_id: p.id,
                pipeline_parent: Some(parent.clone()),
                created_by,
                ..Default::default()
            };
            match self.start_project(request).await {
                Ok(queued) => started.push(format!("{} (build {})", p.name, queued.id)),
                Err(EngineError::Store(StoreError::Conflict(why))) => {
                    started.push(format!("{} not started: {why}", p.name))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(started)
    }

    /// A run of `pipeline_id`: its builds, after checking the run belongs to it.
    async fn run_of(&self, pipeline: &Pipeline, run: Id) -> Result<Vec<Build>> {
        let builds = self.store().builds_of_run(run).await?;
        let mut ours = false;
        for b in &builds {
            if let Some(pid) = b.project_id {
                if self.store().get_project(pid).await?.is_some_and(|p| p.pipeline_id == Some(pipeline.id)) {
                    ours = true;
                    break;
                }
            }
        }
        if !ours {
            return Err(StoreError::NotFound {
                what: "pipeline run",
                id: format!("{run} of pipeline {}", pipeline.id),
            }
            .into());
        }
        Ok(builds)
    }

    /// Approves the stage run `run` of the pipeline waits before, and starts
    /// it; `approver` is who approves, as the audit log records them (with
    /// their address). Answers the approval and a line per project started.
    pub async fn approve_stage(
        &self,
        pipeline: &Pipeline,
        run: Id,
        approver: &crate::store::AuditActor,
    ) -> Result<(PipelineApproval, Vec<String>)> {
        let user_id = approver.id.ok_or_else(|| conflict("an approval needs a logged-in user".to_string()))?;
        let store = self.store();
        self.run_of(pipeline, run).await?;
        let waiting = store.approvals_of_run(run).await?.into_iter().find(|a| a.approved_at.is_none());
        let Some(waiting) = waiting else {
            return Err(conflict(format!("run {run} of pipeline {} is not waiting for approval", pipeline.name)));
        };
        let Some(approval) = store.approve(run, waiting.stage_id, user_id).await? else {
            return Err(conflict(format!(
                "run {run} of pipeline {} was approved by someone else first",
                pipeline.name
            )));
        };
        let object = crate::store::AuditObject::new("pipeline", Some(pipeline.id), pipeline.name.clone());
        let details = serde_json::json!({ "run": run, "stage_id": approval.stage_id });
        if let Err(e) = store.record_audit(approver, "pipeline.approve", &object, details).await {
            tracing::error!(error = %e, pipeline = pipeline.id, run, "cannot record the approval in the audit log");
        }
        let parent = store.get_build(approval.parent_build_id).await?.ok_or_else(|| {
            conflict(format!(
                "build {} that reached the stage is gone: re-run the stage instead",
                approval.parent_build_id
            ))
        })?;
        let stage_name = store.get_stage(approval.stage_id).await?.map(|s| s.name).unwrap_or_default();
        let started = self.start_stage(pipeline, approval.stage_id, &parent, Some(user_id)).await?;
        let line = format!(
            "pipeline {}: stage {stage_name} approved by {}: {}",
            pipeline.name,
            approver.name,
            started.join(", ")
        );
        store.append_output(parent.id, &[(OutputStream::Message, line.as_str())]).await?;
        Ok((approval, started))
    }

    /// Starts the projects of `stage_id` again in run `run`, after the run's
    /// latest successful build of the stage before it (the first stage: after
    /// the run's origin build). A stage that needs approval re-runs only once
    /// this run approved it. The caller has checked the user may start each
    /// of the stage's projects.
    pub async fn rerun_stage(&self, pipeline: &Pipeline, run: Id, stage_id: Id, user_id: Id) -> Result<Vec<String>> {
        let store = self.store();
        let builds = self.run_of(pipeline, run).await?;
        let Some(index) = pipeline.stage_ids.iter().position(|s| *s == stage_id) else {
            return Err(EngineError::Invalid(format!("stage {stage_id} is not a stage of pipeline {}", pipeline.name)));
        };
        let stage = store
            .get_stage(stage_id)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("stage {stage_id} does not exist")))?;
        if stage.approval_required {
            let approved =
                store.approvals_of_run(run).await?.iter().any(|a| a.stage_id == stage_id && a.approved_at.is_some());
            if !approved {
                return Err(conflict(format!(
                    "stage {} needs approval in run {run} before it runs: approve the run instead",
                    stage.name
                )));
            }
        }
        let parent = if index == 0 {
            builds.iter().find(|b| b.id == run).cloned()
        } else {
            let before = store.projects_in_stage(pipeline.id, pipeline.stage_ids[index - 1]).await?;
            builds
                .iter()
                .rev()
                .find(|b| b.status == BuildStatus::Success && before.iter().any(|p| Some(p.id) == b.project_id))
                .cloned()
        };
        let Some(parent) = parent else {
            return Err(conflict(format!(
                "stage {} cannot re-run in run {run}: the run has no successful build of the stage before it",
                stage.name
            )));
        };
        for p in store.projects_in_stage(pipeline.id, stage_id).await? {
            if let Some(active) = p.active_build_id {
                if store
                    .get_build(active)
                    .await?
                    .is_some_and(|b| matches!(b.status, BuildStatus::Queued | BuildStatus::Running))
                {
                    return Err(conflict(format!(
                        "project {} has build {active} queued or running: wait for it or stop it first",
                        p.name
                    )));
                }
            }
        }
        let started = self.start_stage(pipeline, stage_id, &parent, Some(user_id)).await?;
        let line = format!("pipeline {}: stage {} re-run: {}", pipeline.name, stage.name, started.join(", "));
        store.append_output(parent.id, &[(OutputStream::Message, line.as_str())]).await?;
        Ok(started)
    }

    /// The latest `limit` runs of a pipeline, newest first, each with the
    /// status of every stage.
    pub async fn pipeline_runs(&self, pipeline: &Pipeline, limit: i64) -> Result<Vec<PipelineRun>> {
        let store = self.store();
        let mut stages = Vec::new();
        for id in &pipeline.stage_ids {
            let name = store.get_stage(*id).await?.map(|s| s.name).unwrap_or_else(|| format!("#{id}"));
            stages.push((*id, name, store.projects_in_stage(pipeline.id, *id).await?));
        }
        let mut runs = Vec::new();
        for run in store.pipeline_runs(pipeline.id, limit).await? {
            let builds = store.builds_of_run(run).await?;
            let approvals = store.approvals_of_run(run).await?;
            let latest = latest_per_project(&builds);
            let mut cells = Vec::new();
            for (stage_id, name, projects) in &stages {
                let mine: Vec<StageBuild> = projects
                    .iter()
                    .filter_map(|p| {
                        latest.iter().find(|b| b.project_id == Some(p.id)).map(|b| StageBuild {
                            project_id: p.id,
                            project: p.name.clone(),
                            build_id: b.id,
                            status: b.status,
                        })
                    })
                    .collect();
                let approval = approvals.iter().find(|a| a.stage_id == *stage_id).cloned();
                let status = stage_status(&mine, approval.as_ref());
                cells.push(StageRun { stage_id: *stage_id, name: name.clone(), status, builds: mine, approval });
            }
            let state = run_state(&cells);
            let started = builds.first().and_then(|b| b.queued_time);
            runs.push(PipelineRun { run, state, started, stages: cells });
        }
        Ok(runs)
    }
}

fn stage_status(builds: &[StageBuild], approval: Option<&PipelineApproval>) -> String {
    if approval.is_some_and(|a| a.approved_at.is_none()) {
        return "WAITING_FOR_APPROVAL".into();
    }
    if builds.is_empty() {
        return "NOT_REACHED".into();
    }
    for s in [BuildStatus::Running, BuildStatus::Aborting, BuildStatus::Queued] {
        if builds.iter().any(|b| b.status == s) {
            return s.as_str().into();
        }
    }
    builds.iter().map(|b| b.status).find(|s| *s != BuildStatus::Success).unwrap_or(BuildStatus::Success).as_str().into()
}

fn run_state(stages: &[StageRun]) -> String {
    let has = |s: &str| stages.iter().any(|c| c.status == s);
    if has("WAITING_FOR_APPROVAL") {
        "waiting for approval"
    } else if has("RUNNING") || has("QUEUED") || has("ABORTING") {
        "running"
    } else if stages.iter().any(|c| !matches!(c.status.as_str(), "SUCCESS" | "NOT_REACHED")) {
        "failed"
    } else if stages.last().is_some_and(|c| c.status == "SUCCESS") {
        "succeeded"
    } else {
        "stopped"
    }
    .into()
}
