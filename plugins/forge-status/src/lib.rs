//! The `forge_status` trigger plugin: reports a build to the forge hosting
//! its repository as a commit status, through the commit status API of
//! GitHub, Gitea or GitLab.
//!
//! In `pre_triggers` it posts `pending`; in `success_triggers` and
//! `failure_triggers` the build's final state (`success`, `failure`, or
//! `error` / GitLab's `canceled` for a stopped build), each with a link to the
//! build's page when the server's `[server] public_url` is set.
//!
//! ```toml
//! [plugins.pre_triggers.forge]
//! library = "forge_status"
//! forge = "gitea"                       # github, gitea or gitlab
//! api_url = "https://gitea.example.com" # default: https://api.github.com, https://gitlab.com; gitea has none
//! # context = "vespene/{project}"       # the status's name; {project} is the project's name
//! ```
//!
//! The same entry goes under `success_triggers` and `failure_triggers`.
//!
//! * The repository comes from the project's repository URL (`owner/repo`
//!   for GitHub and Gitea, the whole path for GitLab), unless the project's
//!   variable `forge_status_repository` names it (`owner/repo`, or a GitLab
//!   project path or numeric id). A launch answer cannot set it.
//! * The commit is the revision the build checked out.
//! * The token is the password of the project's service login (the server
//!   hands it over as a secret handle, read through the host's decrypter and
//!   masked in the build's log). It is never part of a message or an error.
//!
//! A build without a repository or revision gets no status (a message says
//! so). A missing login, a bad repository or revision, and any answer of the
//! forge but 2xx fail the trigger, naming the cause. Every request is bounded
//! by a 10 second timeout.

use std::time::Duration;

use vespene_plugin_api::serde_json::{json, Map, Value};
use vespene_plugin_api::{export_plugin, params, Host, Kind, LoginRef, PluginResult, Trigger, TriggerContext};

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["forge", "api_url", "context"];

/// The project variable that names the repository instead of its URL.
pub const REPOSITORY_VARIABLE: &str = "forge_status_repository";

/// The status name unless `context` is set.
pub const DEFAULT_CONTEXT: &str = "vespene/{project}";

/// How long one request may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The longest description the forges take (GitHub's limit).
const MAX_DESCRIPTION: usize = 140;

/// The forges this plugin speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// `POST {api_url}/repos/{owner}/{repo}/statuses/{sha}`.
    GitHub,
    /// `POST {api_url}/api/v1/repos/{owner}/{repo}/statuses/{sha}`.
    Gitea,
    /// `POST {api_url}/api/v4/projects/{id or url-encoded path}/statuses/{sha}`.
    GitLab,
}

impl Forge {
    fn parse(name: &str) -> PluginResult<Self> {
        match name {
            "github" => Ok(Forge::GitHub),
            "gitea" => Ok(Forge::Gitea),
            "gitlab" => Ok(Forge::GitLab),
            other => Err(format!("parameter 'forge' must be github, gitea or gitlab, not '{other}'")),
        }
    }

    /// Its name as in the settings.
    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::Gitea => "gitea",
            Forge::GitLab => "gitlab",
        }
    }

    fn default_api_url(self) -> Option<&'static str> {
        match self {
            Forge::GitHub => Some("https://api.github.com"),
            Forge::Gitea => None,
            Forge::GitLab => Some("https://gitlab.com"),
        }
    }

    /// The state this forge calls a build's outcome: `hook` with the build's status.
    fn state(self, hook: &str, status: &str) -> PluginResult<&'static str> {
        let state = match (hook, status) {
            ("pre", _) => "pending",
            ("success", _) => "success",
            ("failure", "ABORTED") | ("failure", "ABORTING") => {
                if self == Forge::GitLab {
                    "canceled"
                } else {
                    "error"
                }
            }
            ("failure", "FAILURE") => {
                if self == Forge::GitLab {
                    "failed"
                } else {
                    "failure"
                }
            }
            // ORPHANED and whatever newer servers add: the build did not get to a result of its own.
            ("failure", _) => {
                if self == Forge::GitLab {
                    "failed"
                } else {
                    "error"
                }
            }
            (other, _) => {
                return Err(format!("forge_status: unknown hook '{other}' (expected pre, success or failure)"))
            }
        };
        Ok(state)
    }
}

/// The `forge_status` trigger.
#[derive(Debug)]
pub struct ForgeStatus {
    forge: Forge,
    /// Without a trailing slash.
    api_url: String,
    /// The status name, `{project}` not yet replaced.
    context: String,
    /// Keeps connections for later requests; made by the first one, so a
    /// server that never posts does not set up TLS.
    agent: std::sync::OnceLock<ureq::Agent>,
}

/// Checks `api_url` (absent: the forge's default).
fn api_url(forge: Forge, value: Option<&Value>) -> PluginResult<String> {
    let url = match value {
        None => forge
            .default_api_url()
            .ok_or_else(|| format!("parameter 'api_url' is required for forge {}", forge.name()))?,
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("parameter 'api_url' must be a string".to_string()),
    };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    let valid = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#', '@']))
        && url.parse::<ureq::http::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if !valid {
        return Err(format!(
            "parameter 'api_url' must be an http:// or https:// URL without credentials, query or fragment, not '{url}'"
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// A repository URL with any `user:password@` taken out, for messages.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// The repository path of a clone URL: `owner/repo` (`.git` and slashes
/// trimmed), or for GitLab every path segment (`group/subgroup/repo`).
///
/// Takes `https://`, `http://`, `git://` and `ssh://` URLs and scp-like
/// `git@host:owner/repo.git`; a local repository (`file://`, a path) names
/// no forge repository.
pub fn repository_from_url(forge: Forge, url: &str) -> PluginResult<String> {
    let url = url.trim();
    let shown = without_userinfo(url);
    let refuse = |why: &str| {
        format!("forge_status: cannot tell the {} repository from '{shown}' ({why}): set the project variable {REPOSITORY_VARIABLE}", forge.name())
    };
    let path = if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme.to_ascii_lowercase().as_str(), "https" | "http" | "git" | "ssh" | "git+ssh" | "ssh+git") {
            return Err(refuse(&format!("a {scheme}:// URL names no forge")));
        }
        match rest.find('/') {
            Some(slash) => &rest[slash..],
            None => "",
        }
    } else if let Some((host, path)) = url.split_once(':').filter(|(h, _)| !h.is_empty() && !h.contains('/')) {
        // scp-like syntax: [user@]host:path
        let _ = host;
        path
    } else {
        return Err(refuse("a local path names no forge"));
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() < 2 {
        return Err(refuse("it has no owner/repository path"));
    }
    let repository = match forge {
        Forge::GitLab => segments.join("/"),
        Forge::GitHub | Forge::Gitea => segments[segments.len() - 2..].join("/"),
    };
    check_repository(forge, &repository).map_err(|e| refuse(&e))?;
    Ok(repository)
}

/// Whether `repository` can be put into an API path as it is: `owner/repo`
/// (GitHub, Gitea), or a path of at least two segments or a numeric id
/// (GitLab); segments of letters, digits, `.`, `-` and `_`, none `.` or `..`.
pub fn check_repository(forge: Forge, repository: &str) -> Result<(), String> {
    if forge == Forge::GitLab && !repository.is_empty() && repository.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    let segments: Vec<&str> = repository.split('/').collect();
    let shape_ok = match forge {
        Forge::GitLab => segments.len() >= 2,
        Forge::GitHub | Forge::Gitea => segments.len() == 2,
    };
    let segments_ok = segments.iter().all(|s| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    if shape_ok && segments_ok {
        return Ok(());
    }
    let expected = match forge {
        Forge::GitLab => "group/project (subgroups allowed) or a numeric project id",
        Forge::GitHub | Forge::Gitea => "owner/repo",
    };
    Err(format!("'{repository}' is not {expected} of letters, digits, '.', '-' and '_'"))
}

/// Whether `revision` is a git commit id: 7 to 64 hex digits.
fn check_revision(revision: &str) -> PluginResult<()> {
    if (7..=64).contains(&revision.len()) && revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("forge_status: revision '{revision}' is not a git commit id (7 to 64 hex digits)"))
    }
}

/// At most the first 200 characters of the first line of `text`, for errors.
fn excerpt(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("");
    let mut short: String = line.chars().take(200).collect();
    if short.len() < line.len() {
        short.push_str("...");
    }
    short
}

/// One status, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRequest {
    /// The full URL.
    pub url: String,
    /// The JSON body.
    pub body: Value,
    /// For messages: `owner/repo@1234567`.
    pub target: String,
    /// The state sent.
    pub state: &'static str,
}

impl ForgeStatus {
    /// The repository a build's status goes to: the project variable, or its repository URL.
    fn repository(&self, context: &TriggerContext) -> PluginResult<Option<String>> {
        let answered = context.build.launch_answers.get(REPOSITORY_VARIABLE).is_some();
        // A launch answer lands in the build's variables too: only the project's own value counts.
        if let Some(value) = context.build.variables.get(REPOSITORY_VARIABLE).filter(|_| !answered) {
            let Some(repository) = value.as_str().map(str::trim) else {
                return Err(format!("forge_status: the variable {REPOSITORY_VARIABLE} must be a string, not {value}"));
            };
            check_repository(self.forge, repository)
                .map_err(|e| format!("forge_status: the variable {REPOSITORY_VARIABLE}: {e}"))?;
            return Ok(Some(repository.to_string()));
        }
        match context.project.repo_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => repository_from_url(self.forge, url).map(Some),
            None => Ok(None),
        }
    }

    /// What to post for a build, or `None` (with the reason) when it has no
    /// repository or revision to report on.
    pub fn request(&self, context: &TriggerContext) -> PluginResult<Result<StatusRequest, String>> {
        let state = self.forge.state(&context.hook, &context.build.status)?;
        let Some(repository) = self.repository(context)? else {
            return Ok(Err(format!(
                "forge_status: project '{}' has no repository: no commit status posted",
                context.project.name
            )));
        };
        let Some(revision) = context.build.revision.as_deref().filter(|r| !r.is_empty()) else {
            return Ok(Err(format!(
                "forge_status: build {} has no checked-out revision: no commit status posted",
                context.build.id
            )));
        };
        check_revision(revision)?;
        let url = match self.forge {
            Forge::GitHub => format!("{}/repos/{repository}/statuses/{revision}", self.api_url),
            Forge::Gitea => format!("{}/api/v1/repos/{repository}/statuses/{revision}", self.api_url),
            Forge::GitLab => {
                format!("{}/api/v4/projects/{}/statuses/{revision}", self.api_url, repository.replace('/', "%2F"))
            }
        };
        let id = context.build.id;
        let mut description = match (context.hook.as_str(), state) {
            ("pre", _) => format!("Build {id} is running"),
            ("success", _) => format!("Build {id} succeeded"),
            (_, "error") | (_, "canceled") if context.build.status.starts_with("ABORT") => {
                format!("Build {id} was stopped")
            }
            _ => match context.build.return_code {
                Some(code) if code > 0 => format!("Build {id} failed (exit code {code})"),
                _ => format!("Build {id} failed"),
            },
        };
        if description.len() > MAX_DESCRIPTION {
            description = description.chars().take(MAX_DESCRIPTION).collect();
        }
        let name = self.context.replace("{project}", &context.project.name);
        let mut body = Map::new();
        body.insert("state".into(), json!(state));
        body.insert("description".into(), json!(description));
        body.insert((if self.forge == Forge::GitLab { "name" } else { "context" }).into(), json!(name));
        if let Some(link) = build_url(context) {
            body.insert("target_url".into(), json!(link));
        }
        if self.forge == Forge::GitLab {
            if let Some(branch) = context.project.repo_branch.as_deref().filter(|b| !b.trim().is_empty()) {
                body.insert("ref".into(), json!(branch));
            }
        }
        let short: String = revision.chars().take(12).collect();
        Ok(Ok(StatusRequest { url, body: Value::Object(body), target: format!("{repository}@{short}"), state }))
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(TIMEOUT))
                // The forge's error answers are read and reported, not turned into bare errors.
                .http_status_as_error(false)
                .user_agent(concat!("vespene-plugin-forge-status/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        })
    }

    /// Sends one status with `token`; errors never hold the token.
    fn send(&self, status: &StatusRequest, token: &str) -> PluginResult<()> {
        let scrub = |text: String| if token.is_empty() { text } else { text.replace(token, "<token>") };
        let request = self.agent().post(&status.url).header("Content-Type", "application/json");
        let request = match self.forge {
            Forge::GitHub => request
                .header("Authorization", &format!("Bearer {token}"))
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28"),
            Forge::Gitea => request.header("Authorization", &format!("token {token}")),
            Forge::GitLab => request.header("PRIVATE-TOKEN", token),
        };
        let mut response = request
            .send(status.body.to_string().as_str())
            .map_err(|e| scrub(format!("forge_status: cannot post to {}: {e}", status.url)))?;
        let code = response.status();
        if code.is_success() {
            return Ok(());
        }
        let answer = response.body_mut().read_to_string().unwrap_or_default();
        let detail = excerpt(&answer);
        let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
        Err(scrub(format!(
            "forge_status: {} answered HTTP {code} for the status of {}{detail}",
            self.forge.name(),
            status.target
        )))
    }
}

/// The build's page, as the server put it into the context (`build_url`).
fn build_url(context: &TriggerContext) -> Option<&str> {
    context.extra.get("build_url").and_then(Value::as_str).filter(|u| !u.is_empty())
}

/// The token: the password of the project's service login (`login` in the context).
fn token(context: &TriggerContext, host: &Host<'_>) -> PluginResult<String> {
    let login: Option<LoginRef> = match context.extra.get("login") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            vespene_plugin_api::serde_json::from_value(v.clone())
                .map_err(|e| format!("forge_status: the server sent a login that cannot be read: {e}"))?,
        ),
    };
    let Some(login) = login else {
        return Err(format!(
            "forge_status: project '{}' has no service login: attach one whose password is the forge's access token",
            context.project.name
        ));
    };
    let Some(handle) = login.password.as_deref().filter(|p| !p.is_empty()) else {
        return Err(format!(
            "forge_status: service login '{}' of project '{}' has no password: set it to the forge's access token",
            login.username, context.project.name
        ));
    };
    let token =
        host.decrypt(handle).map_err(|e| format!("forge_status: cannot read the service login's token: {e}"))?;
    // It goes into a header: refuse what would break it, without quoting it.
    if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "forge_status: the password of service login '{}' is not a token (empty, or it holds spaces or control characters)",
            login.username
        ));
    }
    Ok(token)
}

impl Trigger for ForgeStatus {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Trigger, "forge_status", PARAMETERS)?;
        let forge = match params.get("forge") {
            Some(Value::String(s)) => Forge::parse(s)?,
            Some(_) => return Err("parameter 'forge' must be a string: github, gitea or gitlab".to_string()),
            None => return Err("parameter 'forge' (github, gitea or gitlab) is required".to_string()),
        };
        let api_url = api_url(forge, params.get("api_url"))?;
        let context = match params.get("context") {
            None => DEFAULT_CONTEXT.to_string(),
            Some(Value::String(s)) if !s.trim().is_empty() && !s.chars().any(char::is_control) => s.clone(),
            Some(_) => {
                return Err("parameter 'context' must be a non-empty string without control characters".to_string())
            }
        };
        Ok(ForgeStatus { forge, api_url, context, agent: std::sync::OnceLock::new() })
    }

    fn execute(&self, context: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
        let status = match self.request(context)? {
            Ok(status) => status,
            Err(why) => {
                host.message(&why);
                return Ok(());
            }
        };
        let token = token(context, host)?;
        self.send(&status, &token)?;
        let link = if build_url(context).is_some() { "" } else { " (no link: [server] public_url is not set)" };
        host.message(&format!(
            "forge_status: {} status '{}' posted for {}{link}",
            self.forge.name(),
            status.state,
            status.target
        ));
        Ok(())
    }
}

export_plugin! {
    name: "forge_status",
    description: "Trigger that reports builds to GitHub, Gitea or GitLab as commit statuses",
    trigger: ForgeStatus,
}

#[cfg(test)]
mod tests;
