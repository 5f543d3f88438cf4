//! Builds and pipeline runs: starting a project, listing and reading builds
//! and their output, stopping, pinning and deleting them, following one
//! live, approving a pipeline stage and re-running a run from a stage. Each
//! asks the authorization chain about the build's project first; the engine
//! does the work.

use serde_json::json;

use super::access::authz_object_with;
use super::{audit, Error, Principal, Service};
use crate::engine::live::Subscription;
use crate::engine::{LaunchAnswers, PipelineRun, StartRequest};
use crate::store::{AuditEntry, Build, BuildFilter, BuildStatus, Id, OutputLine, Pipeline, PipelineApproval, Project};

/// A stage named by the caller: its id, or its name.
pub enum StageRef {
    /// The stage's id.
    Id(Id),
    /// The stage's name.
    Name(String),
}

/// What a build's page shows beside the build itself.
pub struct BuildDetails {
    /// The worker that ran it, as "hostname (uid)".
    pub worker: Option<String>,
    /// The username of who started it.
    pub created_by: Option<String>,
}

impl Service {
    /// Starts project `id` for the principal (who must be allowed to
    /// `start` it) with answers to its launch questions.
    pub async fn start_project(&self, principal: &Principal, id: Id, answers: LaunchAnswers) -> Result<Build, Error> {
        // The project and the group names its authorization object needs, at once.
        let (project, groups) =
            futures_util::future::try_join(self.store().get_project(id), self.groups_for(principal))
                .await
                .map_err(Error::from)?;
        let project = project.ok_or_else(|| Error::not_found(&format!("project {id}")))?;
        let object =
            super::access::authz_object_with(&groups, "project", &serde_json::to_value(&project).unwrap_or_default());
        self.authorize_with(principal, &groups, "start", "project", Some(object)).await?;
        let build = self
            .engine
            .start_project(StartRequest {
                project_id: id,
                answers,
                created_by: principal.user().map(|u| u.id),
                pipeline_parent: None,
                project: Some(project),
                started_by: principal.user().cloned(),
            })
            .await?;
        Ok(build)
    }

    /// The webhook-enabled projects of a repository URL that follow `branch`
    /// (or every branch), each with its webhook secret, for the caller to
    /// verify a delivery against.
    pub async fn webhook_projects(
        &self,
        url: &str,
        branch: Option<&str>,
    ) -> Result<Vec<(Project, Option<String>)>, Error> {
        let mut found = Vec::new();
        for project in self.store().projects_by_repo_url(url).await? {
            if !project.webhook_enabled {
                continue;
            }
            if !project.repo_branch.is_empty() && branch.is_some_and(|b| b != project.repo_branch) {
                continue;
            }
            let token = self.store().reveal_webhook_token(project.id).await?;
            found.push((project, token));
        }
        Ok(found)
    }

    /// Records a webhook delivery by its id; false when it was received
    /// before (by any process): a replay, which must start nothing.
    pub async fn record_webhook_delivery(&self, id: &str) -> Result<bool, Error> {
        Ok(self.store().record_webhook_delivery(id).await?)
    }

    /// Starts `project` for a webhook delivery the caller has verified.
    pub async fn start_for_webhook(&self, project: &Project) -> Result<Build, Error> {
        Ok(self.engine.start_project(StartRequest { project_id: project.id, ..Default::default() }).await?)
    }

    /// The builds `filter` selects that the principal may see (after `list`
    /// is authorized), each with its authorization object.
    pub async fn list_builds(
        &self,
        principal: &Principal,
        filter: &BuildFilter,
    ) -> Result<Vec<(Build, serde_json::Value)>, Error> {
        let (builds, groups) = self.listed_builds(principal, filter).await?;
        self.visible_builds(principal, &groups, builds).await
    }

    /// [`Service::list_builds`], and whether the page of `filter` was full
    /// before hidden builds were left out (so there may be a next page).
    pub async fn list_builds_page(
        &self,
        principal: &Principal,
        filter: &BuildFilter,
    ) -> Result<(Vec<(Build, serde_json::Value)>, bool), Error> {
        let (builds, groups) = self.listed_builds(principal, filter).await?;
        let full = builds.len() as i64 == filter.limit;
        Ok((self.visible_builds(principal, &groups, builds).await?, full))
    }

    /// The builds `filter` selects and every group, once `list` is authorized.
    async fn listed_builds(
        &self,
        principal: &Principal,
        filter: &BuildFilter,
    ) -> Result<(Vec<Build>, std::sync::Arc<Vec<crate::store::Group>>), Error> {
        let (builds, groups) =
            futures_util::future::try_join(self.store().list_builds(filter), self.groups_for(principal))
                .await
                .map_err(Error::from)?;
        self.authorize_with(principal, &groups, "list", "build", None).await?;
        Ok((builds, groups))
    }

    /// How many builds of `status` wait or run in a pool.
    pub async fn count_builds(&self, worker_pool_id: Id, status: BuildStatus) -> Result<i64, Error> {
        Ok(self.store().count_builds(worker_pool_id, status).await?)
    }

    /// The status of a build, if it exists; for callers that have the
    /// build's authorization already (a pipeline map shows the statuses of
    /// its projects' builds).
    pub async fn build_status(&self, id: Id) -> Result<Option<BuildStatus>, Error> {
        Ok(self.store().build_status(id).await?)
    }

    /// Who ran a build and who started it, for its page.
    pub async fn build_details(&self, build: &Build) -> Result<BuildDetails, Error> {
        let worker = match build.worker_id {
            Some(w) => self.store().get_worker(w).await?.map(|w| format!("{} ({})", w.hostname, w.worker_uid)),
            None => None,
        };
        let created_by = match build.created_by {
            Some(u) => self.store().get_user(u).await?.map(|u| u.username),
            None => None,
        };
        Ok(BuildDetails { worker, created_by })
    }

    /// Up to `limit` output lines of a build the caller may view, after line `after`.
    pub async fn output(&self, build: Id, after: i64, limit: i64) -> Result<Vec<OutputLine>, Error> {
        Ok(self.store().output_since(build, after, limit).await?)
    }

    /// Follows a build's output as it is stored (see `engine::live`).
    pub fn follow(&self, build: Id) -> Subscription {
        self.engine.follow(build)
    }

    /// Asks a queued or running build to stop.
    pub async fn stop_build(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        id: Id,
    ) -> Result<(), Error> {
        let build = self.build_for(principal, id, "stop").await?;
        if !self.store().request_stop(id).await? {
            return Err(Error::conflict(format!(
                "build {id} is {}: only queued or running builds can be stopped",
                build.status
            )));
        }
        let record = self.build_record(principal, client, "build.stop", &build).await;
        self.audit(&record.actor, &record.action, &record.object, record.details).await;
        Ok(())
    }

    /// Pins or unpins a build (retention and cleanup keep a pinned one).
    /// Who may stop a build may pin it: its project's owners and launchers,
    /// and its starter.
    pub async fn pin_build(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        id: Id,
        pinned: bool,
    ) -> Result<Build, Error> {
        let build = self.build_for(principal, id, "stop").await?;
        let action = if pinned { "build.pin" } else { "build.unpin" };
        let record = self.build_record(principal, client, action, &build).await;
        self.store()
            .set_build_pinned_audited(id, pinned, Some(&record))
            .await?
            .ok_or_else(|| Error::not_found(&format!("build {id}")))
    }

    /// Deletes a finished, unpinned build with its log.
    pub async fn delete_build(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        id: Id,
    ) -> Result<(), Error> {
        let build = self.build_for(principal, id, "delete").await?;
        if build.status.is_active() {
            return Err(Error::conflict(format!("build {id} is {}: stop it first", build.status)));
        }
        if build.pinned {
            return Err(Error::conflict(format!("build {id} is pinned: unpin it first")));
        }
        let record = self.build_record(principal, client, "delete", &build).await;
        self.store().delete_build_audited(id, Some(&record)).await?;
        Ok(())
    }

    /// The audit record of `action` on a build by the principal.
    async fn build_record(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        action: &str,
        build: &Build,
    ) -> AuditEntry {
        AuditEntry {
            actor: audit::actor(principal, client),
            action: action.into(),
            object: self.build_audit_object(build).await,
            details: json!({}),
        }
    }

    /// The latest runs of a pipeline the principal may view.
    pub async fn pipeline_runs(&self, principal: &Principal, id: Id, limit: i64) -> Result<Vec<PipelineRun>, Error> {
        let pipeline = self.pipeline_for(principal, id, "view").await?;
        Ok(self.engine.pipeline_runs(&pipeline, limit).await?)
    }

    /// The projects of a stage of a pipeline.
    pub async fn projects_in_stage(&self, pipeline: Id, stage: Id) -> Result<Vec<Project>, Error> {
        Ok(self.store().projects_in_stage(pipeline, stage).await?)
    }

    /// Approves the stage run `run` of a pipeline waits on: its own action,
    /// so a policy can leave approvals to some of those who edit the
    /// pipeline. Answers the approval and the builds it started.
    pub async fn approve_stage(
        &self,
        principal: &Principal,
        client: Option<std::net::IpAddr>,
        id: Id,
        run: Id,
    ) -> Result<(PipelineApproval, Vec<String>), Error> {
        let pipeline = self.pipeline_for(principal, id, "approve").await?;
        principal.require()?;
        let approver = audit::actor(principal, client);
        Ok(self.engine.approve_stage(&pipeline, run, &approver).await?)
    }

    /// Re-runs run `run` of a pipeline from a stage: needs `view` of the
    /// pipeline and `start` of every project of the stage (re-running starts
    /// them). Answers the stage's id and the builds started.
    pub async fn rerun_stage(
        &self,
        principal: &Principal,
        id: Id,
        run: Id,
        stage: StageRef,
    ) -> Result<(Id, Vec<String>), Error> {
        let pipeline = self.pipeline_for(principal, id, "view").await?;
        let stage_id = match stage {
            StageRef::Id(id) => id,
            StageRef::Name(name) => self
                .store()
                .find_stage(&name)
                .await?
                .map(|s| s.id)
                .ok_or_else(|| Error::field("stage", format!("'stage': no stage is named '{name}'")))?,
        };
        let started = self.rerun_authorized(principal, &pipeline, run, stage_id).await?;
        Ok((stage_id, started))
    }

    async fn rerun_authorized(
        &self,
        principal: &Principal,
        pipeline: &Pipeline,
        run: Id,
        stage_id: Id,
    ) -> Result<Vec<String>, Error> {
        if !pipeline.stage_ids.contains(&stage_id) {
            return Err(Error::field(
                "stage",
                format!("'stage': stage {stage_id} is not a stage of pipeline {}", pipeline.name),
            ));
        }
        let groups = self.groups_for(principal).await?;
        for project in self.store().projects_in_stage(pipeline.id, stage_id).await? {
            let object = authz_object_with(&groups, "project", &serde_json::to_value(&project).unwrap_or_default());
            self.authorize_with(principal, &groups, "start", "project", Some(object)).await?;
        }
        let user = principal.require()?;
        Ok(self.engine.rerun_stage(pipeline, run, stage_id, user.id).await?)
    }
}
