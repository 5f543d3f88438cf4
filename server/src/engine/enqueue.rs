//! Starting a project: launch answers checked against the project's
//! questions, variables computed by the `variables` plugin chain, the script
//! rendered with strict undefined, and the build queued with both frozen.

use abi_stable::std_types::RStr;
use minijinja::{Environment, UndefinedBehavior};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use vespene_plugin_api::{ProjectInfo, SnippetInfo, VariablesContext};

use super::{Engine, EngineError, Result};
use crate::store::{Build, BuildStartAudit, BuildStatus, Id, NewBuild, OutputStream, Project};

/// Answers to launch questions: variable name to a string, or a list of
/// strings for `multi` questions.
pub type LaunchAnswers = Map<String, Value>;

/// A request to start a project.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// The project.
    pub project_id: Id,
    /// Answers to its launch questions.
    pub answers: LaunchAnswers,
    /// Who asked (none for webhooks, schedules and pipelines).
    pub created_by: Option<Id>,
    /// The build of the previous pipeline stage that started this one.
    pub pipeline_parent: Option<Build>,
    /// The project as the caller read it (to authorize the start): not
    /// read again. `None`: read by `project_id`.
    pub project: Option<Project>,
    /// The account of `created_by`, when the caller has it: the audit
    /// record names it without reading it again.
    pub started_by: Option<crate::store::User>,
}

#[derive(Debug, Deserialize)]
struct Question {
    variable: String,
    #[serde(rename = "type", default = "text")]
    kind: String,
    #[serde(default)]
    choices: Vec<String>,
}

fn text() -> String {
    "text".into()
}

/// Checks answers against the questions: unknown variables, a radio answer
/// outside its choices, a multi answer that is not a list of choices.
pub fn check_answers(questions_json: &str, answers: &LaunchAnswers) -> Result<()> {
    let questions: Vec<Question> =
        serde_json::from_str(if questions_json.trim().is_empty() { "[]" } else { questions_json })
            .map_err(|e| EngineError::Invalid(format!("the project's launch questions are invalid: {e}")))?;
    for (name, answer) in answers {
        let Some(q) = questions.iter().find(|q| &q.variable == name) else {
            return Err(EngineError::Invalid(format!("launch answer '{name}': the project asks no such question")));
        };
        let bad = |why: String| Err(EngineError::Invalid(format!("launch answer '{name}': {why}")));
        match (q.kind.as_str(), answer) {
            ("multi", Value::Array(items)) => {
                for item in items {
                    match item.as_str() {
                        Some(s) if q.choices.iter().any(|c| c == s) => {}
                        _ => return bad(format!("{item} is not one of {:?}", q.choices)),
                    }
                }
            }
            ("multi", other) => return bad(format!("expected a list of choices, got {other}")),
            ("radio", Value::String(s)) if q.choices.contains(s) => {}
            ("radio", other) => return bad(format!("{other} is not one of {:?}", q.choices)),
            (_, Value::String(_)) => {}
            (_, other) => return bad(format!("expected text, got {other}")),
        }
    }
    Ok(())
}

/// Renders a build script: full Jinja syntax, undefined variables are
/// errors, and at most `fuel` template instructions (minijinja's fuel), so a
/// loop that never ends fails the render instead of holding a thread.
///
/// The project's own variables (its author's, its sets', the pool's, the
/// pipeline's, snippets) are pasted as written. Launch answers come from
/// whoever starts the build, so each is pasted as one shell word (quoted when
/// it holds anything a shell treats specially), as is any text a template
/// computes from one; `{{ NAME | raw }}` (or `| safe`) pastes an answer as
/// given. `| shell_quote` quotes any value.
pub fn render_script(
    script: &str,
    variables: &Map<String, Value>,
    answers: &LaunchAnswers,
    fuel: u64,
) -> Result<String, String> {
    use minijinja::Value as V;
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_fuel(Some(fuel));
    env.add_filter("shell_quote", shell_quote_filter);
    env.add_filter("raw", |v: V| V::from_safe_string(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
    env.set_formatter(quoting_formatter);
    let template = env.template_from_str(script).map_err(|e| describe_template_error(&e, script))?;
    let mut context: Vec<(String, V)> =
        variables.iter().filter(|(k, _)| !answers.contains_key(*k)).map(|(k, v)| (k.clone(), trusted(v))).collect();
    context.extend(answers.iter().map(|(k, v)| (k.clone(), V::from_serialize(v))));
    template.render(V::from_iter(context)).map_err(|e| {
        if e.kind() == minijinja::ErrorKind::OutOfFuel {
            format!(
                "{TOO_MUCH_WORK}: it ran out of fuel after {fuel} template instructions \
                 (limits.template_fuel); look for loops that nest too deeply or never end"
            )
        } else {
            describe_template_error(&e, script)
        }
    })
}

/// A variable as the script's author wrote it: its strings are pasted as written.
fn trusted(value: &Value) -> minijinja::Value {
    use minijinja::Value as V;
    match value {
        Value::String(s) => V::from_safe_string(s.clone()),
        Value::Array(items) => V::from(items.iter().map(trusted).collect::<Vec<_>>()),
        Value::Object(map) => V::from_iter(map.iter().map(|(k, v)| (k.clone(), trusted(v)))),
        other => V::from_serialize(other),
    }
}

/// The `shell_quote` filter: a value as one shell word.
fn shell_quote_filter(value: minijinja::Value) -> std::result::Result<minijinja::Value, minijinja::Error> {
    let text = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
    vespene_plugin_api::shell::quote(&text)
        .map(minijinja::Value::from_safe_string)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
}

/// Writes a `{{ ... }}`: text not marked as written (answers, and what a
/// template computes) as one shell word.
fn quoting_formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &minijinja::Value,
) -> std::result::Result<(), minijinja::Error> {
    use minijinja::value::ValueKind;
    let plain = value.is_safe()
        || value.is_undefined()
        || value.is_none()
        || matches!(value.kind(), ValueKind::Number | ValueKind::Bool);
    if plain {
        return minijinja::escape_formatter(out, state, value);
    }
    let quoted = vespene_plugin_api::shell::quote(&value.to_string())
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))?;
    out.write_str(&quoted).map_err(minijinja::Error::from)
}

/// How a render that ran out of fuel is described.
const TOO_MUCH_WORK: &str = "needs too much work to render";

/// How many scripts render at once.
static RENDERING: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

impl Engine {
    /// [`render_script`] off the async threads (the blocking pool, at most
    /// `limits.template_concurrency` at once), with `limits.template_fuel`.
    pub async fn render_script_bounded(
        &self,
        script: &str,
        variables: &Map<String, Value>,
        answers: &LaunchAnswers,
    ) -> Result<String, String> {
        let limits = &self.settings().limits;
        let semaphore = RENDERING.get_or_init(|| {
            tokio::sync::Semaphore::new(crate::settings::Limits::or_cores(limits.template_concurrency))
        });
        let _permit = semaphore.acquire().await.map_err(|e| e.to_string())?;
        let (script, variables, answers, fuel) =
            (script.to_string(), variables.clone(), answers.clone(), limits.template_fuel);
        tokio::task::spawn_blocking(move || render_script(&script, &variables, &answers, fuel))
            .await
            .map_err(|e| format!("rendering stopped: {e}"))?
    }
}

/// The error with the part of the script it points at (`undefined value
/// (in <string>:2) at `nope``).
fn describe_template_error(e: &minijinja::Error, source: &str) -> String {
    match e.range().and_then(|r| source.get(r)) {
        Some(at) if !at.trim().is_empty() => format!("{e} at `{at}`"),
        _ => e.to_string(),
    }
}

impl Engine {
    /// Queues a build of a project. A script that does not render gives a
    /// FAILURE build at once, with the template error in its log, and runs
    /// the failure triggers. A project runs one build at a time: a start
    /// while it has a QUEUED or RUNNING build is refused, naming that build.
    ///
    /// A start of a project in a later stage of a pipeline (not the first)
    /// without a parent build continues the pipeline run its last pipeline
    /// build belonged to: it gets that run's earlier stages' outputs, and its
    /// success advances that run.
    pub async fn start_project(&self, mut req: StartRequest) -> Result<Build> {
        let store = self.store();
        let project = match req.project.take().filter(|p| p.id == req.project_id) {
            Some(project) => project,
            None => store
                .get_project(req.project_id)
                .await?
                .ok_or_else(|| EngineError::Invalid(format!("project {} does not exist", req.project_id)))?,
        };
        check_answers(&project.launch_questions, &req.answers)?;
        let mut notes = Vec::new();
        if req.pipeline_parent.is_none() {
            if let Some((parent, note)) = self.run_to_continue(&project).await? {
                req.pipeline_parent = Some(parent);
                notes.push(note);
            }
        }
        let mut placeholders = Placeholders::new();
        // A variables plugin that fails (a snippet this script names that does
        // not render) fails this build, as a template error does.
        let (mut variables, failed) =
            match self.compute_variables_with(&project, req.pipeline_parent.as_ref(), &mut placeholders).await {
                Ok(v) => (v, None),
                Err(EngineError::Failed(e)) => (Map::new(), Some(e)),
                Err(e) => return Err(e),
            };
        for (k, v) in &req.answers {
            variables.insert(k.clone(), v.clone());
        }
        let (parent, origin) = match &req.pipeline_parent {
            Some(p) => (Some(p.id), Some(p.pipeline_origin_build_id.unwrap_or(p.id))),
            None => (None, None),
        };
        let mut new = NewBuild {
            project_id: Some(project.id),
            organization_id: None,
            worker_pool_id: project.worker_pool_id,
            status: None,
            script: String::new(),
            variables: Value::Object(variables.clone()).to_string(),
            launch_answers: Value::Object(req.answers.clone()).to_string(),
            secret_values: String::new(),
            created_by: req.created_by,
            pipeline_parent_build_id: parent,
            pipeline_origin_build_id: origin,
            one_at_a_time: true,
            audit: None,
        };
        let rendered = match failed {
            Some(e) => Err(format!("the variables could not be computed: {e}")),
            None => self.render_script_bounded(&project.script, &variables, &req.answers).await.map_err(|e| {
                if e.starts_with(TOO_MUCH_WORK) {
                    format!("the script {e}")
                } else {
                    format!("the script has a template error: {e}")
                }
            }),
        };
        match rendered {
            Ok(script) => {
                new.secret_values = placeholders.used_by(&[&script, &new.variables]);
                new.script = script;
                new.audit = Some(self.start_audit(&req, &project, BuildStatus::Queued).await);
                let build = store.create_build(&new).await?;
                let lines: Vec<(OutputStream, &str)> =
                    notes.iter().map(|n| (OutputStream::Message, n.as_str())).collect();
                if !lines.is_empty() {
                    store.append_output(build.id, &lines).await?;
                }
                self.notify_queued();
                Ok(build)
            }
            Err(e) => {
                new.status = Some(BuildStatus::Failure);
                new.script = project.script.clone();
                new.audit = Some(self.start_audit(&req, &project, BuildStatus::Failure).await);
                let build = store.create_build(&new).await?;
                if !notes.is_empty() {
                    let lines: Vec<(OutputStream, &str)> =
                        notes.iter().map(|n| (OutputStream::Message, n.as_str())).collect();
                    store.append_output(build.id, &lines).await?;
                }
                let message = format!("the project could not be started: {e}");
                // A build that fails here still notifies: its failure triggers run.
                if let Err(e) = self.fail_unstarted(&build, &project, &message).await {
                    tracing::warn!(build = build.id, error = %e, "failure triggers of an unstarted build");
                }
                Ok(store.get_build(build.id).await?.unwrap_or(build))
            }
        }
    }

    /// The audit record of a build start, written with the build: the user
    /// who asked, or `system` for webhooks, schedules and pipelines. Launch
    /// answers are not recorded (they may hold anything a user typed).
    async fn start_audit(&self, req: &StartRequest, project: &Project, status: BuildStatus) -> BuildStartAudit {
        let actor = match (req.created_by, &req.started_by) {
            (Some(id), Some(user)) if user.id == id => crate::store::AuditActor::user(user, None),
            (Some(id), _) => match self.store().get_user(id).await {
                Ok(Some(user)) => crate::store::AuditActor::user(&user, None),
                _ => crate::store::AuditActor { id: Some(id), name: format!("user {id}"), remote_addr: None },
            },
            (None, _) => crate::store::AuditActor::system(),
        };
        let details = serde_json::json!({
            "project_id": project.id,
            "status": status,
            "pipeline_parent_build_id": req.pipeline_parent.as_ref().map(|p| p.id),
        });
        BuildStartAudit { actor, object_name: project.name.clone(), details }
    }

    /// For a project in a later pipeline stage started without a parent:
    /// the parent of its last pipeline build (so the new build joins that
    /// run), and the log line saying so. `None` for first-stage projects,
    /// projects outside an enabled pipeline, and projects no run reached.
    async fn run_to_continue(&self, project: &Project) -> Result<Option<(Build, String)>> {
        let store = self.store();
        let (Some(pipeline_id), Some(stage_id)) = (project.pipeline_id, project.stage_id) else { return Ok(None) };
        if !project.pipeline_enabled {
            return Ok(None);
        }
        let Some(pipeline) = store.get_pipeline(pipeline_id).await? else { return Ok(None) };
        if !pipeline.enabled || pipeline.stage_ids.first() == Some(&stage_id) {
            return Ok(None);
        }
        let Some(last) = store.latest_pipeline_build_of(project.id).await? else { return Ok(None) };
        let Some(parent_id) = last.pipeline_parent_build_id else { return Ok(None) };
        let Some(parent) = store.get_build(parent_id).await? else { return Ok(None) };
        let origin = parent.pipeline_origin_build_id.unwrap_or(parent.id);
        let note = format!(
            "pipeline {}: this start continues run {origin} (after build {}): it gets that run's earlier \
             stages' outputs, and its success advances that run",
            pipeline.name, parent.id
        );
        Ok(Some((parent, note)))
    }

    /// Runs the `variables` plugin chain for a project, each result merged
    /// over the ones before.
    /// Secret variables come out as placeholders (see [`Placeholders`]).
    pub async fn compute_variables(&self, project: &Project, parent: Option<&Build>) -> Result<Map<String, Value>> {
        self.compute_variables_with(project, parent, &mut Placeholders::new()).await
    }

    async fn compute_variables_with(
        &self,
        project: &Project,
        parent: Option<&Build>,
        placeholders: &mut Placeholders,
    ) -> Result<Map<String, Value>> {
        let context = self.variables_context(project, parent, placeholders).await?;
        let context = serde_json::to_string(&context).map_err(|e| EngineError::Failed(e.to_string()))?;
        let registry = self.registry().clone();
        tokio::task::spawn_blocking(move || {
            let mut merged = Map::new();
            for (name, plugin) in registry.variables_chain() {
                let existing = Value::Object(merged.clone()).to_string();
                let answer = plugin
                    .compute(RStr::from(context.as_str()), RStr::from(existing.as_str()))
                    .into_result()
                    .map_err(|e| {
                        crate::metrics::plugin_error(name, "variables");
                        EngineError::Failed(format!("variables plugin '{name}' failed: {e}"))
                    })?;
                let computed: Map<String, Value> = serde_json::from_str(answer.as_str()).map_err(|e| {
                    EngineError::Failed(format!(
                        "variables plugin '{name}' answered something that is not an object: {e}"
                    ))
                })?;
                merged.extend(computed);
            }
            Ok(merged)
        })
        .await
        .map_err(|e| EngineError::Failed(format!("variables computation stopped: {e}")))?
    }

    async fn variables_context(
        &self,
        project: &Project,
        parent: Option<&Build>,
        ph: &mut Placeholders,
    ) -> Result<VariablesContext> {
        let store = self.store();
        // What the levels need, read at once (each on a pooled connection):
        // the pool, pipeline and stage, the variables stored on each, and
        // the snippets. The placeholders are then given in the same order
        // as always: project, its sets, pool, pipeline, stage.
        let sealed = |table: &'static str, id: Option<Id>| async move {
            match id {
                Some(id) => store.sealed_variables(table, id).await.map(Option::unwrap_or_default),
                None => Ok(String::new()),
            }
        };
        let (pool, pipeline, stage, stored, all_snippets) = futures_util::future::try_join5(
            store.get_worker_pool(project.worker_pool_id),
            async {
                if let Some(id) = project.pipeline_id {
                    store.get_pipeline(id).await
                } else {
                    Ok(None)
                }
            },
            async {
                if let Some(id) = project.stage_id {
                    store.get_stage(id).await
                } else {
                    Ok(None)
                }
            },
            futures_util::future::try_join4(
                sealed("projects", Some(project.id)),
                sealed("worker_pools", Some(project.worker_pool_id)),
                sealed("pipelines", project.pipeline_id),
                sealed("stages", project.stage_id),
            ),
            store.list_snippets(),
        )
        .await?;
        let (own, pool_vars, pipeline_vars, stage_vars) = stored;
        let mut info = project_info(project);
        info.extra.insert("variables".into(), ph.swap(&own));
        info.extra.insert("variable_sets".into(), self.variable_sets(&project.variable_set_ids, ph).await?);
        let level = |id: Id, name: &str, vars: Value, sets: Value| json!({ "id": id, "name": name, "variables": vars, "variable_sets": sets });
        let pool = match pool {
            Some(p) => {
                let vars = ph.swap(&pool_vars);
                Some(level(p.id, &p.name, vars, self.variable_sets(&p.variable_set_ids, ph).await?))
            }
            None => None,
        };
        let pipeline_value = match &pipeline {
            Some(p) => {
                let vars = ph.swap(&pipeline_vars);
                Some(level(p.id, &p.name, vars, self.variable_sets(&p.variable_set_ids, ph).await?))
            }
            None => None,
        };
        let stage_value = match &stage {
            Some(s) => {
                let vars = ph.swap(&stage_vars);
                Some(level(s.id, &s.name, vars, self.variable_sets(&s.variable_set_ids, ph).await?))
            }
            None => None,
        };
        let pipeline_outputs = match (&pipeline, &stage, parent) {
            (Some(p), Some(s), Some(parent)) => self.earlier_stage_outputs(p, s.id, parent).await?,
            _ => Vec::new(),
        };
        let mut context = VariablesContext {
            project: info,
            pool,
            pipeline: pipeline_value,
            stage: stage_value,
            pipeline_outputs,
            ..Default::default()
        };
        context.snippets = self.snippets_for(project, &context, all_snippets).await?;
        Ok(context)
    }

    /// The snippets a build of `project` renders: those its script names,
    /// that no variable of any level already defines (a snippet never
    /// replaces a variable), and that the project's owners may use (the
    /// authorization chain's `use`, asked for a user made of the project's
    /// creator and owner groups). Another user's snippet, or a broken one the
    /// script does not name, cannot touch the build.
    async fn snippets_for(
        &self,
        project: &Project,
        context: &VariablesContext,
        all: Vec<crate::store::Snippet>,
    ) -> Result<Vec<SnippetInfo>> {
        let named = script_names(&project.script);
        let defined = defined_names(context);
        let wanted: Vec<crate::store::Snippet> = all
            .into_iter()
            .filter(|s| {
                let key = snippet_variable(&s.name);
                named.contains(&key) && !defined.contains(&key)
            })
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let groups = self.group_names().await?;
        let owners = self.owners(&groups, project.created_by, &project.owner_group_ids).await?;
        let candidates: Vec<Value> = wanted.iter().map(|s| groups.object(s)).collect();
        let usable = self.usable(owners, "snippet", candidates).await?;
        let mut snippets: Vec<SnippetInfo> = wanted
            .into_iter()
            .filter(|s| usable.contains(&s.id))
            .map(|s| SnippetInfo { name: s.name, text: s.text })
            .collect();
        snippets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(snippets)
    }

    async fn variable_sets(&self, ids: &[Id], ph: &mut Placeholders) -> Result<Value> {
        let mut sets = Vec::new();
        for id in ids {
            if let Some(set) = self.store().get_variable_set(*id).await? {
                let vars = self.sealed("variable_sets", set.id, ph).await?;
                sets.push(json!({ "name": set.name, "variables": vars }));
            }
        }
        Ok(Value::Array(sets))
    }

    /// A row's variables with each secret replaced by its placeholder.
    async fn sealed(&self, table: &str, id: Id, ph: &mut Placeholders) -> Result<Value> {
        let stored = self.store().sealed_variables(table, id).await?.unwrap_or_default();
        Ok(ph.swap(&stored))
    }

    /// Output variables of the successful builds of earlier stages of this
    /// pipeline run (the parent's origin), oldest stage first.
    async fn earlier_stage_outputs(
        &self,
        pipeline: &crate::store::Pipeline,
        stage_id: Id,
        parent: &Build,
    ) -> Result<Vec<Value>> {
        let Some(stage_index) = pipeline.stage_ids.iter().position(|s| *s == stage_id) else {
            return Ok(Vec::new());
        };
        let origin = parent.pipeline_origin_build_id.unwrap_or(parent.id);
        let mut outputs = Vec::new();
        for build in self.store().builds_of_run(origin).await? {
            if build.status != BuildStatus::Success {
                continue;
            }
            let Some(project_id) = build.project_id else { continue };
            let Some(project) = self.store().get_project(project_id).await? else { continue };
            let Some(index) = project.stage_id.and_then(|s| pipeline.stage_ids.iter().position(|x| *x == s)) else {
                continue;
            };
            if index >= stage_index {
                continue;
            }
            let stage_name = match project.stage_id {
                Some(id) => self.store().get_stage(id).await?.map(|s| s.name).unwrap_or_default(),
                None => String::new(),
            };
            outputs.push((
                index,
                json!({
                    "stage": stage_name,
                    "stage_index": index,
                    "project": project.name,
                    "build_id": build.id,
                    "output_variables": parse_object(&build.output_variables),
                }),
            ));
        }
        outputs.sort_by_key(|(index, v)| (*index, v["build_id"].as_i64()));
        Ok(outputs.into_iter().map(|(_, v)| v).collect())
    }
}

/// Secret variables met while a build's variables are gathered. Each stored
/// secret becomes a placeholder, `@@vespene-secret:NAME:TAG:N@@`, in what the
/// variables plugins see, in the build's variables and in its rendered script;
/// the sealed values go with the build apart from them, and the worker puts
/// the clear values in place only in the files the running build reads.
pub struct Placeholders {
    tag: String,
    sealed: Map<String, Value>,
}

impl Default for Placeholders {
    fn default() -> Self {
        Self::new()
    }
}

impl Placeholders {
    /// None yet; a fresh random tag, so a placeholder cannot be guessed ahead.
    pub fn new() -> Self {
        use rand::Rng;
        let tag: u32 = rand::thread_rng().gen();
        Placeholders { tag: format!("{tag:08x}"), sealed: Map::new() }
    }

    /// The variables object `stored` with its secrets swapped for placeholders
    /// (a secret with no value becomes the empty string).
    pub fn swap(&mut self, stored: &str) -> Value {
        let mut vars = parse_object(stored);
        if let Value::Object(o) = &mut vars {
            for (name, v) in o.iter_mut() {
                let Some(secret) = crate::store::secret_vars::secret_of(v) else { continue };
                *v = match secret.as_str().filter(|s| !s.is_empty()) {
                    Some(sealed) => {
                        let safe: String =
                            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
                        let placeholder = format!("@@vespene-secret:{safe}:{}:{}@@", self.tag, self.sealed.len() + 1);
                        self.sealed.insert(placeholder.clone(), Value::String(sealed.to_string()));
                        Value::String(placeholder)
                    }
                    None => Value::String(String::new()),
                };
            }
        }
        vars
    }

    /// The sealed values of the placeholders that occur in `texts`, as the
    /// build's `secret_values` JSON.
    pub fn used_by(&self, texts: &[&str]) -> String {
        let used: Map<String, Value> = self
            .sealed
            .iter()
            .filter(|(p, _)| texts.iter().any(|t| t.contains(p.as_str())))
            .map(|(p, v)| (p.clone(), v.clone()))
            .collect();
        Value::Object(used).to_string()
    }
}

/// The variable a snippet becomes: its name with `-` and spaces as `_`.
fn snippet_variable(name: &str) -> String {
    name.replace(['-', ' '], "_")
}

/// The top-level names a script looks up (none if it does not parse: it
/// then fails to render anyway).
fn script_names(script: &str) -> std::collections::HashSet<String> {
    let env = Environment::new();
    env.template_from_str(script).map(|t| t.undeclared_variables(false)).unwrap_or_default()
}

/// Every variable name set by a level of the context: the project, the pool,
/// the pipeline and the stage, and their variable sets. (Earlier stages'
/// outputs may be renamed by the pipelines plugin; the snippets plugin itself
/// never replaces what the chain computed before it.)
fn defined_names(context: &VariablesContext) -> std::collections::HashSet<String> {
    let mut names = std::collections::HashSet::new();
    let mut add_level = |level: &Value| {
        if let Some(vars) = level["variables"].as_object() {
            names.extend(vars.keys().cloned());
        }
        for set in level["variable_sets"].as_array().into_iter().flatten() {
            if let Some(vars) = set["variables"].as_object() {
                names.extend(vars.keys().cloned());
            }
        }
    };
    add_level(&Value::Object(context.project.extra.clone()));
    for level in [&context.pool, &context.pipeline, &context.stage].into_iter().flatten() {
        add_level(level);
    }
    names
}

/// A project as plugins see it.
pub fn project_info(p: &Project) -> ProjectInfo {
    ProjectInfo {
        id: p.id,
        name: p.name.clone(),
        description: p.description.clone(),
        repo_url: Some(p.repo_url.clone()).filter(|s| !s.is_empty()),
        repo_branch: Some(p.repo_branch.clone()).filter(|s| !s.is_empty()),
        scm_type: Some(p.scm_type.clone()),
        timeout_minutes: Some(p.timeout),
        container_base_image: p.container_base_image.clone(),
        worker_pool: None,
        // Whether SCM plugins check out submodules too.
        extra: Map::from_iter([("recursive".to_string(), Value::Bool(p.recursive))]),
    }
}

/// A stored JSON object, or an empty one.
pub fn parse_object(json: &str) -> Value {
    match serde_json::from_str::<Value>(json) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_render_strictly() {
        let vars: Map<String, Value> = serde_json::from_value(json!({"a": 1, "mode": "x"})).unwrap();
        assert_eq!(render_script("echo {{ a }}\n", &vars, &Map::new(), 1000).unwrap(), "echo 1\n");
        assert_eq!(render_script("{% if mode == 'x' %}yes{% endif %}", &vars, &Map::new(), 1000).unwrap(), "yes");
        let err = render_script("echo {{ nope }}", &vars, &Map::new(), 1000).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        assert!(render_script("{% if %}", &vars, &Map::new(), 1000).is_err());
    }

    #[test]
    fn answers_are_shell_words_unless_raw() {
        let vars: Map<String, Value> = serde_json::from_value(json!({"dir": "a b", "who": "x"})).unwrap();
        let answers: LaunchAnswers = serde_json::from_value(json!({"who": "$(id); echo 'hi'"})).unwrap();
        let out = render_script("cd {{ dir }}; echo {{ who }}; {{ who | raw }}", &vars, &answers, 1000).unwrap();
        assert_eq!(out, r#"cd a b; echo '$(id); echo '\''hi'\'''; $(id); echo 'hi'"#);
        let out = render_script("{{ dir | shell_quote }} {{ who | upper }}", &vars, &Map::new(), 1000).unwrap();
        assert_eq!(out, "'a b' X");
        let loops = "{% for i in range(1000) %}{% for j in range(1000) %}{{ i }}{% endfor %}{% endfor %}";
        let err = render_script(loops, &vars, &Map::new(), 10_000).unwrap_err();
        assert!(err.starts_with(TOO_MUCH_WORK) && err.contains("limits.template_fuel"), "{err}");
    }

    #[test]
    fn launch_answers_are_checked_against_questions() {
        let q = r#"[{"variable":"foo","type":"multi","choices":["a","b"]},
                    {"variable":"bar","type":"radio","choices":["x","y"]},
                    {"variable":"baz"}]"#;
        let ok: LaunchAnswers = serde_json::from_value(json!({"foo": ["a"], "bar": "y", "baz": "free"})).unwrap();
        check_answers(q, &ok).unwrap();
        for (bad, needle) in [
            (json!({"foo": "a"}), "expected a list"),
            (json!({"foo": ["c"]}), "not one of"),
            (json!({"bar": "z"}), "not one of"),
            (json!({"baz": 3}), "expected text"),
            (json!({"qux": "1"}), "no such question"),
        ] {
            let answers: LaunchAnswers = serde_json::from_value(bad).unwrap();
            let err = check_answers(q, &answers).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
