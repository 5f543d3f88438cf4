//! Organization imports (inventory #47-#49): list an organization's
//! repositories with its `organizations` plugin, clone each one, read its
//! `.vespene` file and create or update the project with the same repository
//! URL, within the organization's policy toggles. Each import is a build of
//! its own (no project, straight to RUNNING) whose log says what happened to
//! every repository; one repository's error is logged and the import goes on.

use std::path::Path;
use std::sync::Arc;

use abi_stable::std_types::RStr;
use serde::Deserialize;
use serde_json::{json, Value};
use vespene_plugin_api::RepositoryRef;

use super::host::{secret_handle, CancelState};
use super::output::{BuildLog, LogLimits};
use super::run::{create_build_root, watch_for_stop};
use super::worker::AbortOnDrop;
use super::{Engine, EngineError, Result, WorkerConfig};
use crate::settings::PluginSection;
use crate::store::{Build, BuildStatus, Id, Organization, Pipeline, Project, Stage};

/// The file read at the root of every repository.
pub const DOTFILE: &str = ".vespene";

/// The keys of a `.vespene` file (inventory #48). `ownership_groups` (the
/// original's documentation) is accepted for `owner_groups` (its code).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DotVespene {
    /// The project's name.
    pub name: Option<String>,
    /// A path in the repository whose content becomes the project's script.
    pub script: Option<String>,
    /// Minutes.
    pub timeout: Option<i64>,
    /// For container isolation.
    pub container_base_image: Option<String>,
    /// The branch built.
    pub repo_branch: Option<String>,
    /// Whether webhooks start the project.
    pub webhook_enabled: Option<bool>,
    /// Project variables (a mapping).
    pub variables: Option<Value>,
    /// Launch questions (a list).
    pub launch_questions: Option<Value>,
    /// A worker pool, by name.
    pub worker_pool: Option<String>,
    /// A pipeline, by name.
    pub pipeline: Option<String>,
    /// Stage names: the pipeline to create if it does not exist.
    pub pipeline_definition: Option<Vec<String>>,
    /// A stage, by name.
    pub stage: Option<String>,
    /// Owner group names.
    #[serde(alias = "ownership_groups")]
    pub owner_groups: Option<Vec<String>>,
    /// Launch group names.
    pub launch_groups: Option<Vec<String>>,
}

/// An import error for one repository: "repository R: .vespene key 'K': problem".
/// Why a `.vespene` reference was not followed: not the owners' to use.
fn refused(kind: &str, name: &str) -> String {
    format!("the organization's owners may not use {kind} '{name}' (neither theirs nor shared); ignored")
}

fn key_error(repo: &str, key: &str, problem: impl std::fmt::Display) -> String {
    format!("repository {repo}: {DOTFILE} key '{key}': {problem}")
}

/// Parses and checks a `.vespene` file's text; errors name the repository,
/// the key and the problem.
pub fn parse_dotfile(repo: &str, text: &str) -> std::result::Result<DotVespene, String> {
    if text.trim().is_empty() {
        return Ok(DotVespene::default());
    }
    let de = yaml_serde::Deserializer::from_str(text);
    let parsed: DotVespene = serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner().to_string();
        if let Some(rest) = inner.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or_default();
            return key_error(repo, key, "unknown key");
        }
        let path = e.path().to_string();
        let key = path.trim_start_matches('.').split(['.', '[']).next().unwrap_or_default();
        if key.is_empty() || key == "?" {
            format!("repository {repo}: {DOTFILE} is not a valid YAML mapping: {inner}")
        } else {
            // the YAML parser already names the path: do not say it twice.
            let problem = inner.strip_prefix(&format!("{}: ", path.trim_start_matches('.'))).unwrap_or(&inner);
            key_error(repo, key, problem)
        }
    })?;
    check_dotfile(repo, &parsed)?;
    Ok(parsed)
}

fn check_dotfile(repo: &str, d: &DotVespene) -> std::result::Result<(), String> {
    use crate::store::validate as v;
    let named = |key: &str, value: &Option<String>| -> std::result::Result<(), String> {
        if let Some(value) = value {
            v::name(key, value).map_err(|e| key_error(repo, key, e.message))?;
        }
        Ok(())
    };
    named("name", &d.name)?;
    named("worker_pool", &d.worker_pool)?;
    named("pipeline", &d.pipeline)?;
    named("stage", &d.stage)?;
    if let Some(script) = &d.script {
        let p = Path::new(script);
        if script.trim().is_empty() || p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
            return Err(key_error(repo, "script", format!("'{script}' must be a relative path inside the repository")));
        }
    }
    if let Some(t) = d.timeout {
        if t <= 0 {
            return Err(key_error(repo, "timeout", format!("must be a positive number of minutes, not {t}")));
        }
    }
    if let Some(vars) = &d.variables {
        if !vars.is_object() {
            return Err(key_error(repo, "variables", "must be a mapping of names to values"));
        }
    }
    if let Some(q) = &d.launch_questions {
        v::launch_questions("launch_questions", &q.to_string())
            .map_err(|e| key_error(repo, "launch_questions", e.message))?;
    }
    if let Some(stages) = &d.pipeline_definition {
        if d.pipeline.is_none() {
            return Err(key_error(repo, "pipeline_definition", "needs 'pipeline' to name the pipeline"));
        }
        if stages.is_empty() || stages.len() > 7 {
            return Err(key_error(repo, "pipeline_definition", "must list 1 to 7 stage names"));
        }
        let mut seen = std::collections::HashSet::new();
        for s in stages {
            v::name("pipeline_definition", s).map_err(|e| key_error(repo, "pipeline_definition", e.message))?;
            if !seen.insert(s) {
                return Err(key_error(repo, "pipeline_definition", format!("stage '{s}' appears twice")));
            }
        }
    }
    for (key, groups) in [("owner_groups", &d.owner_groups), ("launch_groups", &d.launch_groups)] {
        for g in groups.iter().flatten() {
            v::name(key, g).map_err(|e| key_error(repo, key, e.message))?;
        }
    }
    Ok(())
}

/// What happened to one repository.
enum RepoResult {
    Created(String),
    Updated(String),
    Skipped(String),
}

/// Whether an organization's import is due at `now` (inventory #47).
pub fn import_due(org: &Organization, last: Option<&Build>, now: crate::store::Timestamp) -> bool {
    if !org.import_enabled {
        return false;
    }
    if org.force_rescan {
        return true;
    }
    match last {
        None => true,
        Some(b) if b.status.is_active() => false,
        Some(b) => {
            let ended = b.end_time.or(b.start_time).unwrap_or(now);
            now >= ended + chrono::Duration::minutes(org.refresh_minutes.max(1))
        }
    }
}

impl Engine {
    /// Imports an organization's repositories when it is due (or at once with
    /// `force`). `None` when it is not due, or another import of the same
    /// organization is running. `worker` is who runs it (the build names it).
    pub async fn import_organization(&self, org_id: Id, force: bool, worker: &WorkerConfig) -> Result<Option<Build>> {
        let store = self.store();
        let org = store
            .get_organization(org_id)
            .await?
            .ok_or_else(|| EngineError::Invalid(format!("no organization {org_id}")))?;
        if !force {
            let last = match org.last_build_id {
                Some(id) => store.get_build(id).await?,
                None => None,
            };
            if !import_due(&org, last.as_ref(), crate::store::now()) {
                return Ok(None);
            }
        }
        // The import names its worker, which checks in while it runs: if the
        // worker dies, the heartbeat rule orphans the import and frees the organization.
        let worker_id = self.check_in(worker).await?;
        let _heartbeat = self.heartbeat(worker);
        let Some(build) = store.begin_import(org.id, org.worker_pool_id, Some(worker_id)).await? else {
            return Ok(None);
        };
        let started_ms = build.start_time.map(|t| t.timestamp_millis()).unwrap_or(0);
        let log = BuildLog::with_limits(build.id, started_ms, LogLimits::from_settings(&self.settings().limits));
        let flusher = tokio::spawn({
            let engine = self.clone();
            let log = log.clone();
            async move { engine.flush_log(log).await }
        });
        // `vespene stop` works on imports too: the clone in progress is killed.
        let cancel = CancelState::new(None);
        let _watcher = AbortOnDrop(tokio::spawn(watch_for_stop(self.clone(), build.id, cancel.clone())));
        let outcome = self.run_import(&build, &org, &log, &cancel).await;
        let (status, code) = match outcome {
            _ if cancel.reason().is_some() => {
                log.message("import stopped");
                (BuildStatus::Aborted, -1)
            }
            Ok(0) => {
                log.message("import succeeded");
                (BuildStatus::Success, 0)
            }
            Ok(failed) => {
                log.message(&format!("import finished with {failed} failed repositories"));
                (BuildStatus::Failure, failed as i64)
            }
            Err(e) => {
                log.message(&format!("import failed: {e}"));
                (BuildStatus::Failure, -1)
            }
        };
        let root = self.build_root_for(build.id);
        let _ = std::fs::remove_dir_all(&root);
        log.close();
        let _ = flusher.await;
        store.clear_force_rescan(org.id).await?;
        match store.set_build_status(build.id, status, Some(code)).await {
            Ok(b) => Ok(Some(b)),
            // Stopped while importing: ABORTING can only become ABORTED or FAILURE.
            Err(crate::store::StoreError::Transition { .. }) => {
                Ok(Some(store.set_build_status(build.id, BuildStatus::Aborted, Some(code)).await?))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Imports every repository; answers how many failed.
    async fn run_import(
        &self,
        build: &Build,
        org: &Organization,
        log: &Arc<BuildLog>,
        cancel: &Arc<CancelState>,
    ) -> Result<usize> {
        let root = self.build_root_for(build.id);
        create_build_root(&root)?;
        self.store().set_build_working_dir(build.id, &root.display().to_string()).await?;
        let kind = org.organization_type.clone();
        log.message(&format!(
            "import {} of organization {} ({kind} '{}') in {}",
            build.id,
            org.name,
            org.organization_identifier,
            root.display()
        ));
        if self.registry().organization(&kind).is_none() {
            return Err(EngineError::Failed(format!(
                "organization '{}' uses type '{kind}', which no configured organization plugin provides (configured: {})",
                org.name,
                self.registry().names(PluginSection::Organizations).join(", ")
            )));
        }
        let login = match org.scm_login_id {
            Some(id) => self.store().get_service_login(id).await?.map(|l| {
                json!({
                    "username": l.username,
                    "password": l.password.is_present().then(|| secret_handle("login", id, "password")),
                })
            }),
            None => None,
        };
        let org_json = json!({
            "id": org.id,
            "name": org.name,
            "organization_identifier": org.organization_identifier,
            "api_endpoint": org.api_endpoint,
            "login": login,
        })
        .to_string();
        let host = Arc::new(self.build_host(log, cancel, &root));
        let registry = self.registry().clone();
        let found = tokio::task::spawn_blocking({
            let (host, registry, org_json, kind) = (host.clone(), registry.clone(), org_json.clone(), kind.clone());
            move || {
                let plugin = registry.organization(&kind).expect("checked above");
                plugin
                    .find_repos(RStr::from(org_json.as_str()), &host.host())
                    .into_result()
                    .inspect_err(|_| crate::metrics::plugin_error(&kind, "organization"))
            }
        })
        .await
        .map_err(|e| EngineError::Failed(format!("the organization plugin stopped: {e}")))?
        .map_err(|e| EngineError::Failed(format!("listing the repositories failed: {e}")))?;
        let repos: Vec<RepositoryRef> = serde_json::from_str(found.as_str())
            .map_err(|e| EngineError::Failed(format!("the organization plugin answered an invalid list: {e}")))?;
        log.message(&format!("{} repositories to import", repos.len()));

        let mut failed = 0;
        for (n, repo) in repos.iter().enumerate() {
            if cancel.reason().is_some() {
                return Ok(failed);
            }
            let dest = root.join(format!("repo-{n}"));
            let cloned = tokio::task::spawn_blocking({
                let (host, registry, org_json, kind) = (host.clone(), registry.clone(), org_json.clone(), kind.clone());
                let repo_json = serde_json::to_string(repo).unwrap_or_default();
                let dest = dest.display().to_string();
                move || {
                    let plugin = registry.organization(&kind).expect("checked above");
                    plugin
                        .clone_repo(
                            RStr::from(org_json.as_str()),
                            RStr::from(repo_json.as_str()),
                            RStr::from(dest.as_str()),
                            &host.host(),
                        )
                        .into_result()
                        .inspect_err(|_| crate::metrics::plugin_error(&kind, "organization"))
                }
            })
            .await
            .map_err(|e| EngineError::Failed(format!("the organization plugin stopped: {e}")))?;
            let result = match cloned {
                Err(e) => Err(format!("repository {}: cannot clone {}: {e}", repo.name, repo.clone_url)),
                Ok(()) => self.import_repository(org, repo, &dest, log).await,
            };
            let _ = std::fs::remove_dir_all(&dest);
            match result {
                Ok(RepoResult::Created(name)) => {
                    log.message(&format!("repository {}: created project {name}", repo.name))
                }
                Ok(RepoResult::Updated(name)) => {
                    log.message(&format!("repository {}: updated project {name}", repo.name))
                }
                Ok(RepoResult::Skipped(why)) => log.message(&format!("repository {}: skipped: {why}", repo.name)),
                Err(e) => {
                    failed += 1;
                    log.message(&format!("error: {e}"));
                }
            }
        }
        Ok(failed)
    }

    /// Creates or updates the project of one cloned repository.
    async fn import_repository(
        &self,
        org: &Organization,
        repo: &RepositoryRef,
        dir: &Path,
        log: &BuildLog,
    ) -> std::result::Result<RepoResult, String> {
        let rname = repo.name.as_str();
        let store = self.store();
        let db = |e: crate::store::StoreError| format!("repository {rname}: {e}");
        let dotfile = read_in_clone(dir, DOTFILE).map_err(|e| format!("repository {rname}: {DOTFILE} file: {e}"))?;
        let config = if let Some(text) = dotfile {
            Some(parse_dotfile(rname, &text)?)
        } else if org.import_without_dotfile {
            None
        } else {
            return Ok(RepoResult::Skipped(format!("no {DOTFILE} file")));
        };
        let has_file = config.is_some();
        let config = config.unwrap_or_default();
        let script = match &config.script {
            Some(path) => Some(
                read_in_clone(dir, path)
                    .and_then(|text| text.ok_or_else(|| "no such file".to_string()))
                    .map_err(|e| key_error(rname, "script", format!("cannot read '{path}': {e}")))?,
            ),
            None => None,
        };

        let existing = store.projects_by_repo_url(&repo.clone_url).await.map_err(db)?.into_iter().next();
        let is_new = existing.is_none();
        let mut project = existing.unwrap_or_else(|| Project {
            name: default_name(&repo.clone_url),
            repo_url: repo.clone_url.clone(),
            scm_type: "git".into(),
            script: String::new(),
            webhook_enabled: true,
            worker_pool_id: org.default_worker_pool_id,
            scm_login_id: org.scm_login_id,
            ..Default::default()
        });
        let configure = is_new || org.overwrite_configurations;
        if let Some(name) = &config.name {
            if is_new || org.overwrite_project_name {
                project.name = name.clone();
            }
        }
        if let Some(other) = store.find_project(&project.name).await.map_err(db)? {
            if other.id != project.id {
                return Err(key_error(
                    rname,
                    "name",
                    format!("project '{}' already exists for another repository ({})", project.name, other.repo_url),
                ));
            }
        }
        if let Some(script) = script {
            if is_new || org.overwrite_project_script {
                project.script = script;
            }
        }
        if configure {
            if let Some(t) = config.timeout {
                project.timeout = t;
            }
            if let Some(image) = &config.container_base_image {
                project.container_base_image = Some(image.clone()).filter(|i| !i.is_empty());
            }
            if let Some(branch) = &config.repo_branch {
                project.repo_branch = branch.clone();
            }
            if let Some(w) = config.webhook_enabled {
                project.webhook_enabled = w;
            }
            if let Some(vars) = &config.variables {
                project.variables = vars.to_string();
            }
            if let Some(q) = &config.launch_questions {
                project.launch_questions = q.to_string();
            }
            for (key, names, is_owner) in
                [("owner_groups", &config.owner_groups, true), ("launch_groups", &config.launch_groups, false)]
            {
                let Some(names) = names else { continue };
                let mut ids = Vec::new();
                for name in names {
                    match store.find_group(name).await.map_err(db)? {
                        Some(g) => ids.push(g.id),
                        None => log.message(&key_error(rname, key, format!("no group named '{name}'; ignored"))),
                    }
                }
                if is_owner {
                    project.owner_group_ids = ids;
                } else {
                    project.launch_group_ids = ids;
                }
            }
        }
        if let Some(pool) = &config.worker_pool {
            if org.allow_worker_pool_assignment && configure {
                match store.find_worker_pool(pool).await.map_err(db)? {
                    Some(p) if self.organization_may_use(org, "worker_pool", &p).await? => {
                        project.worker_pool_id = p.id
                    }
                    Some(_) => log.message(&key_error(rname, "worker_pool", refused("worker pool", pool))),
                    None => {
                        log.message(&key_error(rname, "worker_pool", format!("no worker pool named '{pool}'; ignored")))
                    }
                }
            } else if !org.allow_worker_pool_assignment {
                log.message(&key_error(rname, "worker_pool", "worker pool assignment is not allowed; ignored"));
            }
        }
        if let (Some(pipeline), Some(stages)) = (&config.pipeline, &config.pipeline_definition) {
            if !org.allow_pipeline_definition {
                log.message(&key_error(rname, "pipeline_definition", "pipeline definition is not allowed; ignored"));
            } else if store.find_pipeline(pipeline).await.map_err(db)?.is_none() {
                self.define_pipeline(pipeline, stages, org.created_by)
                    .await
                    .map_err(|e| key_error(rname, "pipeline_definition", e))?;
                log.message(&format!(
                    "repository {rname}: created pipeline {pipeline} with stages {}",
                    stages.join(", ")
                ));
            }
        }
        if configure {
            if let Some(pipeline) = &config.pipeline {
                match store.find_pipeline(pipeline).await.map_err(db)? {
                    Some(p) if self.organization_may_use(org, "pipeline", &p).await? => {
                        project.pipeline_id = Some(p.id)
                    }
                    Some(_) => log.message(&key_error(rname, "pipeline", refused("pipeline", pipeline))),
                    None => {
                        log.message(&key_error(rname, "pipeline", format!("no pipeline named '{pipeline}'; ignored")))
                    }
                }
            }
            if let Some(stage) = &config.stage {
                match store.find_stage(stage).await.map_err(db)? {
                    Some(s) if self.organization_may_use(org, "stage", &s).await? => project.stage_id = Some(s.id),
                    Some(_) => log.message(&key_error(rname, "stage", refused("stage", stage))),
                    None => log.message(&key_error(rname, "stage", format!("no stage named '{stage}'; ignored"))),
                }
            }
        }
        let saved = if is_new {
            store.create_project(&project).await.map(|_| ())
        } else {
            store.update_project(&project).await
        };
        saved.map_err(|e| format!("repository {rname}: cannot save project '{}': {e}", project.name))?;
        Ok(match (is_new, has_file) {
            (true, false) => RepoResult::Created(format!("{} (a stub: no {DOTFILE} file)", project.name)),
            (true, true) => RepoResult::Created(project.name),
            (false, _) => RepoResult::Updated(project.name),
        })
    }

    /// Whether the organization's owners (its creator) may use `object`, a
    /// pool, pipeline or stage a `.vespene` file names: an import is a create
    /// or update made on their behalf, so it names only what they may use.
    async fn organization_may_use(
        &self,
        org: &Organization,
        kind: &str,
        object: impl serde::Serialize,
    ) -> std::result::Result<bool, String> {
        let groups = self.group_names().await.map_err(|e| e.to_string())?;
        let owners = self.owners(&groups, org.created_by, &[]).await.map_err(|e| e.to_string())?;
        let object = groups.object(object);
        let id = object["id"].as_i64().unwrap_or_default();
        Ok(self.usable(owners, kind, vec![object]).await.map_err(|e| e.to_string())?.contains(&id))
    }

    /// Creates a pipeline and any missing stages, in order; the pipeline is
    /// the organization's owners' (`created_by`), so its projects may use it.
    async fn define_pipeline(
        &self,
        name: &str,
        stages: &[String],
        created_by: Option<Id>,
    ) -> std::result::Result<(), String> {
        let store = self.store();
        let mut ids = Vec::new();
        for stage in stages {
            let id = match store.find_stage(stage).await.map_err(|e| e.to_string())? {
                Some(s) => s.id,
                None => store
                    .create_stage(&Stage { name: stage.clone(), variables: "{}".into(), ..Default::default() })
                    .await
                    .map_err(|e| format!("cannot create stage '{stage}': {e}"))?,
            };
            ids.push(id);
        }
        store
            .create_pipeline(&Pipeline { name: name.to_string(), stage_ids: ids, created_by, ..Default::default() })
            .await
            .map_err(|e| format!("cannot create pipeline '{name}': {e}"))?;
        Ok(())
    }
}

/// Reads `rel` inside the clone `dir`: `None` when it does not exist. A
/// repository controls its own tree, so every component of the path must be
/// a real directory or, at the end, a regular file: a symlink (which could
/// point at the server's key or database) is refused at any level, and the
/// file is opened with `O_NOFOLLOW` so nothing is followed after the check.
fn read_in_clone(dir: &Path, rel: &str) -> std::result::Result<Option<String>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Component;
    let mut path = dir.to_path_buf();
    let parts: Vec<Component> = Path::new(rel).components().collect();
    for (n, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            return Err(format!("'{rel}' must be a relative path inside the repository"));
        };
        path.push(name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let shown = path.strip_prefix(dir).unwrap_or(&path).display().to_string();
        let last = n + 1 == parts.len();
        if meta.file_type().is_symlink() {
            return Err(format!("'{shown}' is a symbolic link, which imports never follow"));
        }
        if last && !meta.is_file() {
            return Err(format!("'{shown}' is not a regular file"));
        }
        if !last && !meta.is_dir() {
            return Ok(None);
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err(format!("'{rel}' is not a regular file"));
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(Some(text))
}

/// The original's default project name: the last segment of the clone URL.
fn default_name(url: &str) -> String {
    let last = url.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or(url);
    if last.is_empty() {
        url.to_string()
    } else {
        last.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_and_ownership_groups_is_an_alias() {
        let text = "name: web\nscript: build.sh\ntimeout: 5\ncontainer_base_image: alpine\nrepo_branch: dev\n\
                    webhook_enabled: false\nvariables: {a: 1}\nlaunch_questions: [{variable: who}]\n\
                    worker_pool: p\npipeline: pl\npipeline_definition: [s1, s2]\nstage: s1\n\
                    ownership_groups: [ops]\nlaunch_groups: [dev]\n";
        let d = parse_dotfile("r", text).unwrap();
        assert_eq!(d.name.as_deref(), Some("web"));
        assert_eq!(d.owner_groups, Some(vec!["ops".to_string()]));
        assert_eq!(d.variables, Some(json!({"a": 1})));
        assert_eq!(d.pipeline_definition.unwrap().len(), 2);
    }

    #[test]
    fn errors_name_the_repository_the_key_and_the_problem() {
        let cases = [
            ("nmae: x\n", "repository r: .vespene key 'nmae': unknown key"),
            ("timeout: soon\n", "repository r: .vespene key 'timeout': invalid type: string \"soon\", expected i64"),
            (
                "variables: {a: 1}\nlaunch_groups: {x: 1}\n",
                "repository r: .vespene key 'launch_groups': invalid type: map",
            ),
            ("timeout: 0\n", "repository r: .vespene key 'timeout': must be a positive number of minutes, not 0"),
            ("variables: [1]\n", "repository r: .vespene key 'variables': must be a mapping"),
            ("script: ../x\n", "repository r: .vespene key 'script': '../x' must be a relative path"),
            ("pipeline_definition: [a]\n", "repository r: .vespene key 'pipeline_definition': needs 'pipeline'"),
            ("launch_questions: [{type: text}]\n", "repository r: .vespene key 'launch_questions': question 1"),
            ("- a\n", "repository r: .vespene is not a valid YAML mapping"),
        ];
        for (text, expected) in cases {
            let err = parse_dotfile("r", text).unwrap_err();
            assert!(err.starts_with(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn clone_files_are_read_only_when_regular_and_inside() {
        let dir = tempfile::tempdir().unwrap();
        let clone = dir.path().join("clone");
        std::fs::create_dir_all(clone.join("ci")).unwrap();
        std::fs::write(clone.join("ci/build.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("secret.key"), "key").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.key"), clone.join("link")).unwrap();
        std::os::unix::fs::symlink("ci", clone.join("dirlink")).unwrap();
        assert_eq!(read_in_clone(&clone, "ci/build.sh").unwrap().as_deref(), Some("#!/bin/sh\n"));
        assert_eq!(read_in_clone(&clone, "missing").unwrap(), None);
        assert!(read_in_clone(&clone, "link").unwrap_err().contains("'link' is a symbolic link"));
        assert!(read_in_clone(&clone, "dirlink/build.sh").unwrap_err().contains("'dirlink' is a symbolic link"));
        assert!(read_in_clone(&clone, "ci").unwrap_err().contains("not a regular file"));
        assert!(read_in_clone(&clone, "../secret.key").is_err());
    }

    #[test]
    fn default_names_are_the_last_url_segment() {
        assert_eq!(default_name("git://127.0.0.1:9/web"), "web");
        assert_eq!(default_name("https://github.com/acme/web.git"), "web.git");
        assert_eq!(default_name("git@github.com:acme/web.git"), "web.git");
    }
}
