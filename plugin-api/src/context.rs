//! The JSON contexts the host hands to plugins, and the JSON answers it expects.
//!
//! Every struct tolerates unknown fields (they land in `extra`) so the server can
//! add fields in a minor version without breaking plugins, and every field a
//! plugin may not get has a default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A build, as plugins see it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BuildInfo {
    /// The build's id.
    pub id: i64,
    /// QUEUED, RUNNING, SUCCESS, FAILURE, ABORTING, ABORTED or ORPHANED.
    pub status: String,
    /// The build root: the script's working directory.
    pub working_dir: String,
    /// The project's id, if the build belongs to a project.
    pub project_id: Option<i64>,
    /// The worker pool's name.
    pub worker_pool: Option<String>,
    /// The checked-out revision.
    pub revision: Option<String>,
    /// Who made the last change of the checked-out branch.
    pub committer: Option<String>,
    /// RFC 3339 times.
    pub queued_time: Option<String>,
    /// When the build started running (RFC 3339).
    pub start_time: Option<String>,
    /// When the build ended (RFC 3339).
    pub end_time: Option<String>,
    /// The script's exit code, once known.
    pub return_code: Option<i32>,
    /// The variables frozen when the build was queued.
    pub variables: Value,
    /// The answers to the project's launch questions.
    pub launch_answers: Value,
    /// Values the build set with `vespene/set NAME VALUE`.
    pub output_variables: Value,
    /// The build that started this one in a pipeline.
    pub pipeline_parent_id: Option<i64>,
    /// The first build of this pipeline run.
    pub pipeline_origin_id: Option<i64>,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A project, as plugins see it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ProjectInfo {
    /// The project's id.
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// A free text description.
    pub description: String,
    /// The repository URL, if any.
    pub repo_url: Option<String>,
    /// The branch to build, if any.
    pub repo_branch: Option<String>,
    /// The SCM plugin's name.
    pub scm_type: Option<String>,
    /// The build timeout in minutes.
    pub timeout_minutes: Option<i64>,
    /// The base image for container isolation.
    pub container_base_image: Option<String>,
    /// The worker pool's name.
    pub worker_pool: Option<String>,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A worker pool, as plugins see it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PoolInfo {
    /// The pool's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The isolation plugin's name.
    pub isolation: Option<String>,
    /// The user builds run as under sudo isolation.
    pub sudo_user: Option<String>,
    /// Whether the pool's builds may use the network; `None` (servers before
    /// 1.2) means yes.
    pub network: Option<bool>,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What a trigger is called with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TriggerContext {
    /// `pre`, `success` or `failure`.
    pub hook: String,
    /// The build.
    pub build: BuildInfo,
    /// The build's project.
    pub project: ProjectInfo,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An SSH key attached to a project, still encrypted: call
/// [`crate::abi::Host::decrypt`] to read it, and keep the clear text in memory
/// or in the context's private directory only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SshKeyRef {
    /// The key's name in Vespene.
    pub name: String,
    /// The private key, encrypted.
    pub private_key: String,
    /// Its passphrase, encrypted, if it has one.
    pub passphrase: Option<String>,
}

/// A service login (username and encrypted password) attached to a project.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LoginRef {
    /// The username.
    pub username: String,
    /// The password, encrypted.
    pub password: Option<String>,
}

/// What an SCM plugin is called with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ScmContext {
    /// The build.
    pub build: BuildInfo,
    /// The project.
    pub project: ProjectInfo,
    /// The empty directory to check out into.
    pub work_dir: String,
    /// A directory only this build can read, removed after the checkout, for
    /// key files and credential helpers.
    pub private_dir: String,
    /// The repository URL.
    pub repo_url: String,
    /// The branch to check out, if one is named.
    pub branch: Option<String>,
    /// SSH keys attached to the project.
    pub ssh_keys: Vec<SshKeyRef>,
    /// The service login attached to the project.
    pub login: Option<LoginRef>,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What an SCM plugin answers after a checkout.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CheckoutResult {
    /// The full revision checked out.
    pub revision: Option<String>,
    /// A short form of it, for display.
    pub short_revision: Option<String>,
    /// Who made the last change on the branch (name).
    pub committer: Option<String>,
    /// Their email, if the SCM knows it.
    pub committer_email: Option<String>,
}

/// What an isolation plugin is called with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IsolationContext {
    /// The build.
    pub build: BuildInfo,
    /// The project.
    pub project: ProjectInfo,
    /// The worker pool.
    pub pool: PoolInfo,
    /// The build root, already holding the checkout, `vespene.json` and the script.
    pub build_root: String,
    /// The launch script's file name inside the build root.
    pub launch_script: String,
    /// The time limit, if any; the cancel token also fires when it passes.
    pub timeout_seconds: Option<u64>,
    /// Environment variables the build must see.
    pub env: BTreeMap<String, String>,
    /// Paths the build must not see: the server's data directory, settings,
    /// plugin files and the other builds' roots. An isolation plugin that
    /// shows the build part of the host's file system hides these.
    pub hidden_paths: Vec<String>,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The user behind a request, as authorization plugins see them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct UserInfo {
    /// The user's id.
    pub id: i64,
    /// Their login name.
    pub username: String,
    /// Superusers may do everything.
    pub superuser: bool,
    /// The names of their groups.
    pub groups: Vec<String>,
}

/// The actions an [`AccessRequest`] asks about.
///
/// `use` (since 1.2) asks whether the user may name the object in another
/// one: attach an SSH key or a service login to a project, put a project in a
/// pool, a pipeline or a stage, add a variable set, have a build render a
/// snippet. A host asks a plugin built on an older interface `edit` instead,
/// so such a plugin never grants more than it did.
///
/// `approve` (since 1.3) asks whether the user may let a pipeline run past a
/// stage that waits for a manual approval (`kind = "pipeline"`). A plugin
/// built on an older interface is asked `edit` instead.
pub const ACCESS_ACTIONS: [&str; 9] = ["list", "view", "create", "edit", "delete", "start", "stop", "use", "approve"];

/// The first interface version whose plugins understand the `use` action.
pub const USE_ACTION_SINCE: (u64, u64) = (1, 2);

/// The first interface version whose plugins understand the `approve` action.
pub const APPROVE_ACTION_SINCE: (u64, u64) = (1, 3);

/// The action a plugin built on interface `built_on` (major, minor) is asked
/// in place of `action`: the actions it predates become `edit`, so it never
/// grants more than it did.
pub fn action_for_interface(action: &str, built_on: (u64, u64)) -> &str {
    match action {
        "use" if built_on < USE_ACTION_SINCE => "edit",
        "approve" if built_on < APPROVE_ACTION_SINCE => "edit",
        other => other,
    }
}

/// The object kinds an [`AccessRequest`] asks about.
pub const ACCESS_KINDS: [&str; 13] = [
    "project",
    "build",
    "pipeline",
    "stage",
    "worker_pool",
    "snippet",
    "variable_set",
    "ssh_key",
    "service_login",
    "organization",
    "user",
    "group",
    "api_token",
];

/// One access question for the authorization chain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AccessRequest {
    /// Who asks; `None` for an anonymous request.
    pub user: Option<UserInfo>,
    /// One of [`ACCESS_ACTIONS`].
    pub action: String,
    /// One of [`ACCESS_KINDS`].
    pub kind: String,
    /// The object acted on (absent for `list` and `create`), with at least
    /// `id`, `created_by` and, where the kind has them, `owner_groups` and
    /// `launch_groups` (group names) and `shared` (since 1.2: the owner lets
    /// anyone use it). For `use`, also `field`: the field of the object being
    /// saved that names this one (`scm_login_id`, `ssh_key_ids`, ...).
    pub object: Option<Value>,
}

/// A repository found by an organization plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct RepositoryRef {
    /// Its short name.
    pub name: String,
    /// The URL to clone.
    pub clone_url: String,
    /// Its default branch, if known.
    pub default_branch: Option<String>,
}

/// A named snippet: a template rendered leniently and injected as a variable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SnippetInfo {
    /// Its name.
    pub name: String,
    /// Its template text.
    pub text: String,
}

/// What a variables plugin is called with.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VariablesContext {
    /// The project, with `variables` and `variable_sets` in `extra`.
    pub project: ProjectInfo,
    /// The pool, with its variables.
    pub pool: Option<Value>,
    /// The pipeline, with its variables.
    pub pipeline: Option<Value>,
    /// The stage, with its variables.
    pub stage: Option<Value>,
    /// Output variables of earlier stages of this pipeline run, oldest first.
    pub pipeline_outputs: Vec<Value>,
    /// The snippets this build may render, ordered by name: since 1.2, only
    /// those the project's script names, that no variable level defines, and
    /// that the project's owners may `use` (earlier servers sent every one).
    pub snippets: Vec<SnippetInfo>,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A command for the host's command runner.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CommandRequest {
    /// The program and its arguments. Empty when `shell` is used.
    pub argv: Vec<String>,
    /// A shell command line, run with `/bin/sh -c`.
    pub shell: Option<String>,
    /// The working directory; the build root when absent.
    pub cwd: Option<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Text written to the command's standard input.
    pub stdin: Option<String>,
    /// A time limit of its own, within the build's.
    pub timeout_seconds: Option<u64>,
    /// Which log its lines go to.
    pub stream: StreamName,
    /// Whether the command line itself is written to the message log first.
    pub log_command: bool,
    /// Extra strings to mask in what it prints (passwords it was given).
    pub mask: Vec<String>,
}

impl Default for CommandRequest {
    fn default() -> Self {
        Self {
            argv: Vec::new(),
            shell: None,
            cwd: None,
            env: BTreeMap::new(),
            stdin: None,
            timeout_seconds: None,
            stream: StreamName::Output,
            log_command: true,
            mask: Vec::new(),
        }
    }
}

impl CommandRequest {
    /// A request running `line` with `/bin/sh -c`.
    pub fn shell(line: impl Into<String>) -> Self {
        Self { shell: Some(line.into()), ..Self::default() }
    }

    /// A request running `argv` directly, without a shell.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { argv: argv.into_iter().map(Into::into).collect(), ..Self::default() }
    }
}

/// A [`crate::abi::Stream`] in JSON.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    /// The build's output.
    #[default]
    Output,
    /// The housekeeping log.
    Message,
}

/// What an autoscaler sees of a pool (since 1.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct PoolStatus {
    /// The pool.
    pub pool: PoolInfo,
    /// Builds waiting in its queue.
    pub queued: u64,
    /// Builds running now.
    pub running: u64,
    /// Workers that heartbeated recently.
    pub workers: u64,
    /// Fields added by newer servers.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An autoscaler's decision (since 1.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ScalePlan {
    /// How many workers the pool should have.
    pub size: u64,
    /// Why, for the log.
    pub reason: String,
}
