//! Running one claimed build, start to finish: build root, pre triggers,
//! checkout, `vespene.json` and the launch script, the pool's isolation plugin,
//! post triggers, output variables, the final status, and pipeline advance.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_stable::std_types::RStr;
use serde_json::{Map, Value};
use vespene_plugin_api::{
    BuildInfo, CheckoutResult, IsolationContext, LoginRef, PoolInfo, ScmContext, SshKeyRef, TriggerContext,
};

use super::enqueue::{parse_object, project_info};
use super::host::{secret_handle, BuildHost, CancelState, Stop};
use super::output::{BuildLog, LogLimits};
use super::{Engine, EngineError, Result};
use crate::settings::PluginSection;
use crate::store::{Build, BuildStatus, CheckedOut, Project, WorkerPool};

/// The launch script's name in the build root (as in the original).
pub const LAUNCH_SCRIPT: &str = "vespene_launch.sh";
/// How often a running build checks whether someone asked it to stop.
const STOP_POLL: Duration = Duration::from_millis(200);

/// How a build ended, before post triggers.
struct Outcome {
    status: BuildStatus,
    return_code: Option<i64>,
    message: String,
}

impl Engine {
    /// Runs a build this worker has claimed (status RUNNING) to its end.
    pub async fn run_build(&self, build: Build) -> Result<Build> {
        let store = self.store();
        let project = match build.project_id {
            Some(id) => self.patiently("read the project", || store.get_project(id)).await?,
            None => None,
        };
        let Some(project) = project else {
            return Ok(self
                .patiently("finish the build", || store.set_build_status(build.id, BuildStatus::Failure, Some(-1)))
                .await?);
        };
        let pool = self
            .patiently("read the worker pool", || store.get_worker_pool(build.worker_pool_id))
            .await?
            .ok_or_else(|| EngineError::Failed(format!("worker pool {} is gone", build.worker_pool_id)))?;
        let started_ms =
            build.start_time.map(|t| t.timestamp_millis()).unwrap_or_else(|| crate::store::now().timestamp_millis());
        let log = BuildLog::with_limits(build.id, started_ms, LogLimits::from_settings(&self.settings().limits));
        let flusher = tokio::spawn({
            let engine = self.clone();
            let log = log.clone();
            async move { engine.flush_log(log).await }
        });
        let deadline = Instant::now() + Duration::from_secs(project.timeout.max(1) as u64 * 60);
        let cancel = CancelState::new(Some(deadline));
        let watcher = tokio::spawn(watch_for_stop(self.clone(), build.id, cancel.clone()));

        let outcome = self.run_stages(&build, &project, &pool, &log, &cancel).await;
        watcher.abort();
        // The files the build ran with held its secrets in clear: from now on they hold the record's copy.
        if let Err(e) = write_build_files(&self.build_root_for(build.id), &build, &[]) {
            log.message(&format!("could not rewrite the build root's copies without secrets: {e}"));
        }
        let outcome = outcome.unwrap_or_else(|e| Outcome {
            status: BuildStatus::Failure,
            return_code: Some(-1),
            message: format!("build failed: {e}"),
        });
        log.message(&outcome.message);

        // Post triggers see the build as it ended. Their failures are recorded
        // on the build as trigger failures; the build's own result stands.
        let working_dir = self.build_root_for(build.id);
        // The row as it is now: the checkout recorded the revision and committer.
        let current = self.patiently("read the build", || store.get_build(build.id)).await?.unwrap_or(build.clone());
        let mut info = build_info(&current, &pool, &working_dir);
        info.status = outcome.status.as_str().into();
        info.return_code = outcome.return_code.map(|c| c as i32);
        self.run_post_triggers(&info, &project, &log, &cancel).await;

        // Output variables are captured as batches are stored: drain first.
        log.close();
        let _ = flusher.await;
        let variables = log.output_variables();
        if !variables.is_empty() {
            let json = Value::Object(variables).to_string();
            self.patiently("store output variables", || store.set_output_variables(build.id, &json)).await?;
        }
        let finished = match self
            .patiently("finish the build", || store.set_build_status(build.id, outcome.status, outcome.return_code))
            .await
        {
            Ok(b) => b,
            // The first try went through but its answer was lost to a database restart.
            Err(crate::store::StoreError::Transition { from, .. }) if from == outcome.status.as_str() => self
                .patiently("read the build", || store.get_build(build.id))
                .await?
                .ok_or_else(|| EngineError::Failed(format!("build {} disappeared while it was finishing", build.id)))?,
            // Stopped while finishing: ABORTING can only become ABORTED or FAILURE.
            Err(crate::store::StoreError::Transition { .. }) => {
                self.patiently("finish the build", || {
                    store.set_build_status(build.id, BuildStatus::Aborted, outcome.return_code)
                })
                .await?
            }
            Err(e) => return Err(e.into()),
        };
        if finished.status == BuildStatus::Success {
            if let Err(e) = self.advance_pipeline(&finished, &project).await {
                tracing::warn!(build = finished.id, error = %e, "pipeline could not advance");
            }
        }
        Ok(finished)
    }

    /// The clear values of the build's secret variables (placeholder, value),
    /// and every secret in play masked in its log from the start: those
    /// values, the project's SSH keys and passphrases, its service login's
    /// password and its webhook token.
    async fn secrets_in_play(
        &self,
        build: &Build,
        project: &Project,
        log: &Arc<BuildLog>,
    ) -> Result<Vec<(String, String)>> {
        let store = self.store();
        let secrets = self.patiently("read the build's secrets", || store.reveal_build_secrets(build.id)).await?;
        for (placeholder, value) in &secrets {
            if !log.add_mask(value) && !value.is_empty() {
                let name = placeholder.split(':').nth(1).unwrap_or("?");
                log.message(&format!(
                    "secret variable {name} is shorter than {} characters: it is not masked in the output",
                    super::mask::MIN_MASK_LEN
                ));
            }
        }
        let mut others = Vec::new();
        for id in &project.ssh_key_ids {
            if let Ok(key) = store.reveal_ssh_key(*id).await {
                others.extend(key.private_key);
                others.extend(key.unlock_password);
            }
        }
        if let Some(id) = project.scm_login_id {
            others.extend(store.reveal_service_login_password(id).await.ok().flatten());
        }
        others.extend(store.reveal_webhook_token(project.id).await.ok().flatten());
        for value in others {
            log.add_mask(&value);
        }
        Ok(secrets)
    }

    /// Where a build's root lives on this worker.
    pub fn build_root_for(&self, build_id: crate::store::Id) -> PathBuf {
        self.settings().build_root().join(build_id.to_string())
    }

    async fn run_stages(
        &self,
        build: &Build,
        project: &Project,
        pool: &WorkerPool,
        log: &Arc<BuildLog>,
        cancel: &Arc<CancelState>,
    ) -> Result<Outcome> {
        let root = self.build_root_for(build.id);
        create_build_root(&root)?;
        let working_dir = root.display().to_string();
        self.patiently("record the build root", || self.store().set_build_working_dir(build.id, &working_dir)).await?;
        log.message(&format!("build {} of {} on pool {} in {}", build.id, project.name, pool.name, root.display()));
        let secrets = self.secrets_in_play(build, project, log).await?;
        let mut info = build_info(build, pool, &root);

        if !project.repo_url.trim().is_empty() && project.scm_type != "none" {
            let checkout = self.checkout(build, project, &info, &root, log, cancel).await?;
            let checked_out = CheckedOut {
                revision: checkout.revision.as_deref().or(checkout.short_revision.as_deref()),
                committer: checkout.committer.as_deref(),
                committer_email: checkout.committer_email.as_deref(),
            };
            self.patiently("record the revision", || self.store().set_build_revision(build.id, &checked_out)).await?;
            if let Some(rev) = &checkout.revision {
                log.message(&format!("checked out revision {rev}"));
            }
            info.revision = checked_out.revision.map(str::to_string);
            info.committer = checked_out.committer.map(str::to_string);
        }
        if let Some(stop) = cancel.reason() {
            return Ok(stopped(stop, project));
        }

        // After the checkout, so pre triggers know the revision (a commit
        // status needs it); still before the script. Pre triggers are gates:
        // the first that fails stops the build before it runs.
        if let Some(failure) =
            self.run_triggers(PluginSection::PreTriggers, "pre", &info, project, log, cancel, true).await.pop()
        {
            self.note_trigger_failure(build.id, &failure, log).await;
            return Err(EngineError::Failed(format!("{failure}: the build did not run")));
        }

        write_build_files(&root, build, &secrets).map_err(EngineError::Failed)?;

        let isolation = pool.isolation_method.clone();
        let plugin_ok = self.registry().isolation(&isolation).is_some();
        if !plugin_ok {
            return Err(EngineError::Failed(format!(
                "pool '{}' uses isolation '{isolation}', which no configured isolation plugin provides (configured: {})",
                pool.name,
                self.registry().names(PluginSection::Isolation).join(", ")
            )));
        }
        let context = IsolationContext {
            build: info.clone(),
            project: project_info(project),
            pool: PoolInfo {
                id: pool.id,
                name: pool.name.clone(),
                isolation: Some(isolation.clone()),
                sudo_user: pool.sudo_user.clone(),
                network: Some(pool.network),
                ..Default::default()
            },
            build_root: root.display().to_string(),
            launch_script: LAUNCH_SCRIPT.into(),
            timeout_seconds: Some(project.timeout.max(1) as u64 * 60),
            env: Default::default(),
            hidden_paths: self.hidden_paths().to_vec(),
            ..Default::default()
        };
        let context = serde_json::to_string(&context).map_err(|e| EngineError::Failed(e.to_string()))?;
        let host = self.build_host(log, cancel, &root);
        let registry = self.registry().clone();
        let result = tokio::task::spawn_blocking(move || {
            let plugin = registry.isolation(&isolation).expect("checked above");
            plugin
                .execute(RStr::from(context.as_str()), &host.host())
                .into_result()
                .inspect_err(|_| crate::metrics::plugin_error(&isolation, "isolation"))
        })
        .await
        .map_err(|e| EngineError::Failed(format!("the isolation plugin stopped: {e}")))?;
        let locked = lock_build_root(&root);

        if let Some(stop) = cancel.reason() {
            return Ok(stopped(stop, project));
        }
        match result {
            Ok(0) => {
                Ok(Outcome { status: BuildStatus::Success, return_code: Some(0), message: "build succeeded".into() })
            }
            Ok(code) => Ok(Outcome {
                status: BuildStatus::Failure,
                return_code: Some(code.into()),
                message: format!("build failed with exit code {code}"),
            }),
            Err(e) => Err(EngineError::Failed(format!("isolation '{}' failed: {e}", pool.isolation_method))),
        }
        .and_then(|outcome| locked.map(|()| outcome))
    }

    pub(super) fn build_host(&self, log: &Arc<BuildLog>, cancel: &Arc<CancelState>, root: &Path) -> BuildHost {
        BuildHost {
            log: log.clone(),
            cancel: cancel.clone(),
            store: self.store().clone(),
            runtime: tokio::runtime::Handle::current(),
            build_root: root.to_path_buf(),
        }
    }

    async fn checkout(
        &self,
        build: &Build,
        project: &Project,
        info: &BuildInfo,
        root: &Path,
        log: &Arc<BuildLog>,
        cancel: &Arc<CancelState>,
    ) -> Result<CheckoutResult> {
        let scm = project.scm_type.clone();
        if self.registry().scm(&scm).is_none() {
            return Err(EngineError::Failed(format!(
                "project '{}' uses scm '{scm}', which no configured scm plugin provides (configured: {})",
                project.name,
                self.registry().names(PluginSection::Scm).join(", ")
            )));
        }
        // Settings may have changed since the project was saved: local
        // repositories are checked again here, where they would be read.
        let roots = &self.settings().repositories.local_roots;
        crate::store::validate::local_repository("repo_url", &project.repo_url, roots)
            .map_err(|e| EngineError::Failed(format!("repository refused before checkout: {}", e.message)))?;
        // Key files and credential helpers live here, readable only by us, and go after the checkout.
        let private = tempfile::Builder::new()
            .prefix(&format!("vespene-scm-{}-", build.id))
            .tempdir()
            .map_err(|e| EngineError::Failed(format!("cannot create a private directory: {e}")))?;
        let mut ssh_keys = Vec::new();
        for id in &project.ssh_key_ids {
            if let Some(key) = self.patiently("read an SSH key", || self.store().get_ssh_key(*id)).await? {
                ssh_keys.push(SshKeyRef {
                    name: key.name.clone(),
                    private_key: secret_handle("ssh_key", *id, "private_key"),
                    passphrase: key.unlock_password.is_present().then(|| secret_handle("ssh_key", *id, "passphrase")),
                });
            }
        }
        let login = match project.scm_login_id {
            Some(id) => {
                self.patiently("read a service login", || self.store().get_service_login(id)).await?.map(|l| LoginRef {
                    username: l.username.clone(),
                    password: l.password.is_present().then(|| secret_handle("login", id, "password")),
                })
            }
            None => None,
        };
        let mut context = ScmContext {
            build: info.clone(),
            project: project_info(project),
            work_dir: root.display().to_string(),
            private_dir: private.path().display().to_string(),
            repo_url: project.repo_url.clone(),
            branch: Some(project.repo_branch.clone()).filter(|b| !b.trim().is_empty()),
            ssh_keys,
            login,
            ..Default::default()
        };
        // For what the repository pulls in itself (git submodules).
        context.extra.insert("local_repository_roots".into(), serde_json::json!(roots));
        let context = serde_json::to_string(&context).map_err(|e| EngineError::Failed(e.to_string()))?;
        let host = self.build_host(log, cancel, root);
        let registry = self.registry().clone();
        log.message(&format!("checking out {} with scm '{scm}'", without_password(&project.repo_url)));
        let answer = tokio::task::spawn_blocking(move || {
            let plugin = registry.scm(&scm).expect("checked above");
            plugin
                .checkout(RStr::from(context.as_str()), &host.host())
                .into_result()
                .inspect_err(|_| crate::metrics::plugin_error(&scm, "scm"))
        })
        .await
        .map_err(|e| EngineError::Failed(format!("the scm plugin stopped: {e}")))?;
        drop(private);
        let answer = answer.map_err(|e| EngineError::Failed(format!("checkout failed: {e}")))?;
        serde_json::from_str(answer.as_str())
            .map_err(|e| EngineError::Failed(format!("the scm plugin answered an invalid checkout result: {e}")))
    }

    /// The success triggers of a build that succeeded, the failure triggers
    /// of any other; each failure is recorded on the build (see
    /// [`Engine::note_trigger_failure`]) and the rest still run.
    pub(super) async fn run_post_triggers(
        &self,
        info: &BuildInfo,
        project: &Project,
        log: &Arc<BuildLog>,
        cancel: &Arc<CancelState>,
    ) {
        let (section, hook) = if info.status == BuildStatus::Success.as_str() {
            (PluginSection::SuccessTriggers, "success")
        } else {
            (PluginSection::FailureTriggers, "failure")
        };
        for failure in self.run_triggers(section, hook, info, project, log, cancel, false).await {
            self.note_trigger_failure(info.id, &failure, log).await;
        }
    }

    /// A trigger failure: a line in the build's log and in its
    /// `trigger_failures`, never a change of its status.
    async fn note_trigger_failure(&self, build_id: crate::store::Id, failure: &str, log: &Arc<BuildLog>) {
        log.message(&format!("trigger failure (the build's own result is unchanged): {failure}"));
        let store = self.store();
        if let Err(e) =
            self.patiently("record a trigger failure", || store.record_trigger_failure(build_id, failure)).await
        {
            tracing::warn!(build = build_id, error = %e, "cannot record a trigger failure");
        }
    }

    /// Runs a trigger section for a build; answers the failures (with
    /// `stop_at_first`, at most one: the triggers after it do not run).
    #[allow(clippy::too_many_arguments)]
    async fn run_triggers(
        &self,
        section: PluginSection,
        hook: &str,
        info: &BuildInfo,
        project: &Project,
        log: &Arc<BuildLog>,
        cancel: &Arc<CancelState>,
        stop_at_first: bool,
    ) -> Vec<String> {
        let project_triggers: Vec<String> = serde_json::from_str(&project.triggers).unwrap_or_default();
        let names: Vec<String> =
            self.registry().triggers(section, &project_triggers).map(|(n, _)| n.to_string()).collect();
        if names.is_empty() {
            return Vec::new();
        }
        let mut context = TriggerContext {
            hook: hook.into(),
            build: info.clone(),
            project: project_info(project),
            ..Default::default()
        };
        let section_name = section.name();
        // The build's page, for links back (forge_status): only with a public address to give.
        let public_url = self.settings().server.public_url.trim().trim_end_matches('/');
        if !public_url.is_empty() {
            context.extra.insert("build_url".into(), format!("{public_url}/ui/builds/{}", info.id).into());
        }
        // The project's service login, its password as a handle the host's
        // decrypter reads: attaching the login to the project needed `use` on it.
        if let Some(id) = project.scm_login_id {
            let login = match self.patiently("read a service login", || self.store().get_service_login(id)).await {
                Ok(login) => login,
                Err(e) => return vec![format!("{section_name}: cannot read the project's service login: {e}")],
            };
            if let Some(login) = login {
                let login = LoginRef {
                    username: login.username.clone(),
                    password: login.password.is_present().then(|| secret_handle("login", id, "password")),
                };
                match serde_json::to_value(login) {
                    Ok(login) => {
                        context.extra.insert("login".into(), login);
                    }
                    Err(e) => return vec![format!("{section_name}: the trigger context could not be written: {e}")],
                }
            }
        }
        let context = match serde_json::to_string(&context) {
            Ok(c) => c,
            Err(e) => return vec![format!("{section_name}: the trigger context could not be written: {e}")],
        };
        let host = self.build_host(log, cancel, Path::new(&info.working_dir));
        let registry = self.registry().clone();
        tokio::task::spawn_blocking(move || {
            let mut failures = Vec::new();
            for (name, trigger) in registry.triggers(section, &project_triggers) {
                host.log.message(&format!("{section_name}: running trigger '{name}'"));
                if let Err(e) = trigger.execute(RStr::from(context.as_str()), &host.host()).into_result() {
                    crate::metrics::plugin_error(name, "trigger");
                    failures.push(format!("{section_name} trigger '{name}' failed: {e}"));
                    if stop_at_first {
                        break;
                    }
                }
            }
            failures
        })
        .await
        .unwrap_or_else(|e| vec![format!("{section_name} triggers stopped: {e}")])
    }

    /// The failure triggers of a build that failed before any worker took it
    /// (its script did not render), run in the process that started it: in a
    /// build root of its own, with their lines in its log.
    pub(super) async fn fail_unstarted(&self, build: &Build, project: &Project, why: &str) -> Result<()> {
        let store = self.store();
        let pool = store
            .get_worker_pool(build.worker_pool_id)
            .await?
            .ok_or_else(|| EngineError::Failed(format!("worker pool {} is gone", build.worker_pool_id)))?;
        let started_ms = build.start_time.map(|t| t.timestamp_millis()).unwrap_or_default();
        let log = BuildLog::with_limits(build.id, started_ms, LogLimits::from_settings(&self.settings().limits));
        let flusher = tokio::spawn({
            let engine = self.clone();
            let log = log.clone();
            async move { engine.flush_log(log).await }
        });
        log.message(why);
        let root = self.build_root_for(build.id);
        let cancel = CancelState::new(None);
        match create_build_root(&root) {
            Ok(()) => {
                let mut info = build_info(build, &pool, &root);
                info.status = BuildStatus::Failure.as_str().into();
                self.run_post_triggers(&info, project, &log, &cancel).await;
            }
            Err(e) => {
                let failure = format!("failure_triggers did not run: {e}");
                self.note_trigger_failure(build.id, &failure, &log).await;
            }
        }
        log.close();
        let _ = flusher.await;
        Ok(())
    }
}

fn stopped(stop: Stop, project: &Project) -> Outcome {
    match stop {
        Stop::Requested => {
            Outcome { status: BuildStatus::Aborted, return_code: None, message: "build stopped on request".into() }
        }
        Stop::TimedOut => Outcome {
            status: BuildStatus::Failure,
            return_code: Some(-1),
            message: format!("build timed out after {} minute(s) and was stopped", project.timeout),
        },
    }
}

/// Watches the store for a stop request while the build runs.
pub(super) async fn watch_for_stop(engine: Engine, build_id: crate::store::Id, cancel: Arc<CancelState>) {
    loop {
        tokio::time::sleep(STOP_POLL).await;
        match engine.store().build_status(build_id).await {
            Ok(Some(BuildStatus::Aborting)) | Ok(Some(BuildStatus::Aborted)) => {
                cancel.request();
                return;
            }
            _ => {}
        }
    }
}

pub(super) fn create_build_root(root: &Path) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)
            .map_err(|e| EngineError::Failed(format!("cannot clear the build root {}: {e}", root.display())))?;
    }
    // Only the build's own directory is private. The directory holding the
    // roots, when created here, may be searched but not listed (0711): a build
    // identity (sandbox, sudo) can reach its own root and cannot see the others.
    if let Some(parent) = root.parent().filter(|p| !p.exists()) {
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711)))
            .map_err(|e| EngineError::Failed(format!("cannot create the build root {}: {e}", parent.display())))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(root)
        .map_err(|e| EngineError::Failed(format!("cannot create the build root {}: {e}", root.display())))
}

/// Takes a finished build root back from the build's identity: an isolation
/// plugin that ran the build as another user (sandbox, sudo, container) gave
/// the root to it. Afterwards everything in it is the server's, and the root
/// is 0700, so no build identity can read or change it any more: later
/// builds of any project, and processes the build left behind, are shut out.
fn lock_build_root(root: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let fail = |path: &Path, e: std::io::Error| {
        EngineError::Failed(format!("cannot take back the build root ({}): {e}", path.display()))
    };
    let top = std::fs::symlink_metadata(root).map_err(|e| fail(root, e))?;
    // Close the door first, then take back what is inside.
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(|e| fail(root, e))?;
    if (top.uid() == uid && top.gid() == gid) || uid != 0 {
        // Nothing was given away, or we may not take it back (not root): the
        // closed top directory is all the lock there is.
        return Ok(());
    }
    vespene_plugin_api::launch::walk(root, "build root", &mut |path, meta| {
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .map_err(|e| EngineError::Failed(format!("cannot take back the build root {}: {e}", root.display())))
}

fn build_info(build: &Build, pool: &WorkerPool, root: &Path) -> BuildInfo {
    BuildInfo {
        id: build.id,
        status: build.status.as_str().into(),
        working_dir: root.display().to_string(),
        project_id: build.project_id,
        worker_pool: Some(pool.name.clone()),
        revision: build.revision.clone(),
        committer: build.revision_username.clone(),
        queued_time: build.queued_time.map(|t| t.to_rfc3339()),
        start_time: build.start_time.map(|t| t.to_rfc3339()),
        end_time: build.end_time.map(|t| t.to_rfc3339()),
        return_code: build.return_code.map(|c| c as i32),
        variables: parse_object(&build.variables),
        launch_answers: parse_object(&build.launch_answers),
        output_variables: parse_object(&build.output_variables),
        pipeline_parent_id: build.pipeline_parent_build_id,
        pipeline_origin_id: build.pipeline_origin_build_id,
        extra: Map::new(),
    }
}

/// A JSON text pretty-printed (as `vespene.json` holds it).
pub fn pretty_json(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_string())
}

/// Writes `vespene.json` and the launch script into the build root, with the
/// build's secret values put in place of their placeholders (none: the
/// record's copies, as served). An existing file is removed first, so a link
/// the build left there is replaced, never followed.
fn write_build_files(root: &Path, build: &Build, secrets: &[(String, String)]) -> Result<(), String> {
    if !root.is_dir() {
        return Ok(());
    }
    let mut variables = parse_object(&build.variables);
    substitute_json(&mut variables, secrets);
    let json = serde_json::to_string_pretty(&variables).map_err(|e| format!("cannot write vespene.json: {e}"))?;
    let script = substitute(&build.script, secrets);
    for (name, text, mode) in [("vespene.json", json, 0o600), (LAUNCH_SCRIPT, script, 0o700)] {
        let path = root.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot replace {name}: {e}")),
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)))
            .map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    Ok(())
}

/// `text` with each placeholder replaced by its secret value.
fn substitute(text: &str, secrets: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (placeholder, value) in secrets {
        if out.contains(placeholder.as_str()) {
            out = out.replace(placeholder.as_str(), value);
        }
    }
    out
}

/// Every string inside `value` with its placeholders replaced.
fn substitute_json(value: &mut Value, secrets: &[(String, String)]) {
    match value {
        Value::String(s) => *s = substitute(s, secrets),
        Value::Array(items) => items.iter_mut().for_each(|v| substitute_json(v, secrets)),
        Value::Object(o) => o.values_mut().for_each(|v| substitute_json(v, secrets)),
        _ => {}
    }
}

/// A URL with any `user:password@` reduced to `user@`, for the log.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, String::new()));
    match authority.rsplit_once('@') {
        Some((creds, host)) => {
            let user = creds.split_once(':').map(|(u, _)| u).unwrap_or(creds);
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_not_logged() {
        assert_eq!(without_password("https://ci:s3cret@git.example.com/r.git"), "https://ci@git.example.com/r.git");
        assert_eq!(without_password("https://git.example.com/r.git"), "https://git.example.com/r.git");
        assert_eq!(without_password("/srv/repo"), "/srv/repo");
    }
}
