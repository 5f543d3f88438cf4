//! The `git` scm plugin: clones a project's repository into the build root with
//! libgit2 (no `git` binary needed), over `file://`, `git://`, `ssh://` (and
//! `user@host:path`) and `http(s)://`.
//!
//! * A named branch is cloned alone (`+refs/heads/B:refs/remotes/origin/B`) and
//!   shallow (`depth`, default 1); without a branch the remote's default branch
//!   is checked out. Local (`file://`) clones are never shallow: libgit2's local
//!   transport cannot do it, and copying local objects is cheap anyway.
//! * SSH keys attached to the project are decrypted on demand and handed to
//!   libssh2 from memory for this clone only: never written to disk, never
//!   added to an agent, so nothing outlives the build (the original left keys
//!   in the agent for later builds). Should libssh2 lack in-memory keys, the key
//!   goes to a 0600 file in the build's private directory, which the engine
//!   removes after the checkout. No agent and no `~/.ssh/id_*` key is ever used.
//! * The project's service login answers http(s) username/password prompts,
//!   for the repository's own host only (not for submodules elsewhere).
//! * SSH host keys are checked by the policy in [`known_hosts`]: `strict` or
//!   `accept-new`, never "accept anything".
//! * Submodules are initialised and updated recursively with the same
//!   credentials, unless `submodules = false` (or the project says
//!   `recursive = false`, when the server passes it). A local (`file://` or
//!   path) submodule must be inside one of the server's
//!   `local_repository_roots` (its `[repositories] local_roots`), symlinks
//!   resolved; none are allowed when the server sends none.
//! * Progress goes to the build's message log (25/50/75/100%); the clone stops
//!   when the build is stopped or `timeout_seconds` (or the build's own
//!   timeout) passes.
//! * The answer records the full and short revision of `HEAD` and its
//!   committer's name and email.
//!
//! ```toml
//! [plugins.scm.git]
//! library = "git"
//! host_key_policy = "strict"            # or "accept-new"
//! known_hosts = ["/etc/vespene/known_hosts"]  # default: ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts
//! known_hosts_store = "/var/lib/vespene/known_hosts"  # required for accept-new
//! timeout_seconds = 600
//! depth = 1                             # 0: full history
//! submodules = true
//! ```

pub mod known_hosts;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use git2::build::RepoBuilder;
use git2::{
    CertificateCheckStatus, Cred, CredentialType, ErrorCode, FetchOptions, RemoteCallbacks, Repository,
    SubmoduleUpdateOptions,
};
use known_hosts::{HostKeys, Policy, Verdict};
use vespene_plugin_api::repositories::{local_allowed, local_roots};
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, CheckoutResult, Host, Kind, PluginResult, Scm, ScmContext};

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] =
    &["host_key_policy", "known_hosts", "known_hosts_store", "timeout_seconds", "depth", "submodules"];

/// The time limit of one checkout when `timeout_seconds` is not set.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 600;

/// How deep nested submodules are followed.
const MAX_SUBMODULE_DEPTH: usize = 8;

/// The `git` scm plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitScm {
    host_keys: HostKeys,
    timeout: Duration,
    depth: u32,
    submodules: bool,
}

impl Scm for GitScm {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Scm, "git", PARAMETERS)?;
        let policy = match params.get("host_key_policy") {
            None => Policy::Strict,
            Some(Value::String(s)) => Policy::parse(s).ok_or_else(|| {
                format!("parameter 'host_key_policy' must be \"strict\" or \"accept-new\", not \"{s}\"")
            })?,
            Some(_) => return Err("parameter 'host_key_policy' must be \"strict\" or \"accept-new\"".into()),
        };
        let files = match params.get("known_hosts") {
            None => default_known_hosts(),
            Some(Value::String(s)) => vec![absolute_file("known_hosts", s, true)?],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => absolute_file("known_hosts", s, true),
                    _ => Err("parameter 'known_hosts' must be a path or a list of paths".to_string()),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("parameter 'known_hosts' must be a path or a list of paths".into()),
        };
        let store = match params.get("known_hosts_store") {
            None => None,
            Some(Value::String(s)) => Some(absolute_file("known_hosts_store", s, false)?),
            Some(_) => return Err("parameter 'known_hosts_store' must be an absolute path".into()),
        };
        if policy == Policy::AcceptNew && store.is_none() {
            return Err("parameter 'known_hosts_store' is required with host_key_policy = \"accept-new\": \
                        the file where first-seen host keys are recorded"
                .into());
        }
        let timeout = match params.get("timeout_seconds") {
            None => DEFAULT_TIMEOUT_SECONDS,
            Some(v) => v.as_u64().filter(|n| *n > 0).ok_or("parameter 'timeout_seconds' must be a positive integer")?,
        };
        let depth = match params.get("depth") {
            None => 1,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n <= i32::MAX as u32)
                .ok_or("parameter 'depth' must be a whole number (0 for the full history)")?,
        };
        let submodules = match params.get("submodules") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err("parameter 'submodules' must be true or false".into()),
        };
        Ok(GitScm {
            host_keys: HostKeys { policy, files, store },
            timeout: Duration::from_secs(timeout),
            depth,
            submodules,
        })
    }

    fn checkout(&self, context: &ScmContext, host: &Host<'_>) -> PluginResult<CheckoutResult> {
        let url = context.repo_url.trim();
        if url.is_empty() {
            return Err("git: the project has no repository URL".into());
        }
        let work_dir = Path::new(&context.work_dir);
        if context.work_dir.is_empty() || !work_dir.is_dir() {
            return Err(format!("git: the build root '{}' does not exist", context.work_dir));
        }
        init_libgit2();
        let branch = context.branch.as_deref().map(str::trim).filter(|b| !b.is_empty());
        if let Some(b) = branch {
            if !git2::Reference::is_valid_name(&format!("refs/heads/{b}")) {
                return Err(format!("git: '{b}' is not a valid branch name"));
            }
        }
        let mut limit = self.timeout;
        if let Some(ms) = host.remaining_ms() {
            limit = limit.min(Duration::from_millis(ms));
        }
        let session =
            Session { plugin: self, context, host, started: Instant::now(), limit, reason: RefCell::new(None) };
        if host.is_cancelled() {
            return Err(session.stopped().unwrap_or_default());
        }
        let repo = session.clone_repo(url, branch, work_dir)?;
        let recursive = context.project.extra.get("recursive").and_then(Value::as_bool).unwrap_or(true);
        if self.submodules && recursive {
            session.update_submodules(&repo, url, 1)?;
        }
        let commit = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(|e| format!("git: cannot read the checked-out commit: {}", e.message()))?;
        let short = commit.as_object().short_id().ok().and_then(|b| b.as_str().ok().map(String::from));
        let committer = commit.committer();
        let result = CheckoutResult {
            revision: Some(commit.id().to_string()),
            short_revision: short,
            committer: committer.name().ok().map(String::from),
            committer_email: committer.email().ok().map(String::from),
        };
        host.message(&format!(
            "git: checked out {} ({}), last change by {} <{}>",
            result.short_revision.as_deref().unwrap_or(""),
            commit.summary().ok().flatten().unwrap_or(""),
            result.committer.as_deref().unwrap_or("?"),
            result.committer_email.as_deref().unwrap_or("?"),
        ));
        Ok(result)
    }
}

/// `~/.ssh/known_hosts` and `/etc/ssh/ssh_known_hosts`, as OpenSSH reads them.
/// Sets up libgit2 on the first checkout rather than when the plugin is
/// configured: initializing libgit2 initializes OpenSSL, about 2 MiB of
/// resident memory that a server which never clones over git should not carry.
fn init_libgit2() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        // libgit2's own socket timeouts, so a silent server cannot hang a
        // worker between two progress callbacks (git:// and http(s)).
        // SAFETY: plain integer options of the libgit2 linked into this library.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(30_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(120_000);
        }
    });
}

fn default_known_hosts() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".ssh/known_hosts"));
    }
    files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
    files
}

fn absolute_file(name: &str, path: &str, must_exist: bool) -> PluginResult<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_absolute() {
        return Err(format!("parameter '{name}' must be an absolute path, not '{path}'"));
    }
    if must_exist && !p.is_file() {
        return Err(format!("parameter '{name}': {path} does not exist or is not a file"));
    }
    Ok(p)
}

/// One checkout: the context, the host and what went wrong inside a libgit2
/// callback (libgit2 would only say "callback returned an error").
struct Session<'a, 'h> {
    plugin: &'a GitScm,
    context: &'a ScmContext,
    host: &'a Host<'h>,
    started: Instant,
    limit: Duration,
    reason: RefCell<Option<String>>,
}

/// Per-connection counters, so a refused credential is not offered forever.
#[derive(Default)]
struct Attempts {
    ssh_keys: Cell<usize>,
    passwords: Cell<usize>,
    progress_quarter: Cell<usize>,
    key_files: RefCell<Vec<PathBuf>>,
}

impl Drop for Attempts {
    fn drop(&mut self) {
        // Fallback key files go as soon as the connection is done, not only
        // when the engine removes the private directory.
        for file in self.key_files.borrow().iter() {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Session<'_, '_> {
    /// Why the clone must stop now, if it must.
    fn stopped(&self) -> Option<String> {
        if self.host.is_cancelled() {
            Some("git: checkout stopped: the build was stopped or timed out".into())
        } else if self.started.elapsed() >= self.limit {
            Some(format!("git: checkout timed out after {} s", self.limit.as_secs()))
        } else {
            None
        }
    }

    /// Remembers why a callback failed and answers libgit2's error for it.
    fn fail(&self, reason: String) -> git2::Error {
        let error = git2::Error::from_str(&reason);
        self.reason.borrow_mut().get_or_insert(reason);
        error
    }

    /// The error to report for a failed libgit2 call: the callback's own
    /// reason when there is one.
    fn error(&self, what: &str, e: &git2::Error) -> String {
        if let Some(reason) = self.reason.borrow_mut().take() {
            return reason;
        }
        if let Some(stop) = self.stopped() {
            return stop;
        }
        format!("git: {what} failed: {}", e.message())
    }

    fn clone_repo(&self, url: &str, branch: Option<&str>, into: &Path) -> PluginResult<Repository> {
        let local = is_local(url);
        let depth = if local { 0 } else { self.plugin.depth };
        self.host.message(&format!(
            "git: cloning {} ({}, {})",
            redact(url),
            match branch {
                Some(b) => format!("branch {b} only"),
                None => "default branch".into(),
            },
            if depth == 0 { "full history".to_string() } else { format!("depth {depth}") },
        ));
        let attempts = Attempts::default();
        let mut builder = RepoBuilder::new();
        builder.fetch_options(self.fetch_options(url, url, depth, &attempts));
        if let Some(b) = branch {
            let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}");
            builder.remote_create(move |repo, name, url| repo.remote_with_fetch(name, url, &refspec));
            builder.branch(b);
        }
        builder.clone(url, into).map_err(|e| {
            if let (Some(b), ErrorCode::NotFound) = (branch, e.code()) {
                if self.reason.borrow().is_none() {
                    return format!("git: branch '{b}' does not exist in {}", redact(url));
                }
            }
            self.error(&format!("cloning {}", redact(url)), &e)
        })
    }

    fn update_submodules(&self, repo: &Repository, parent_url: &str, level: usize) -> PluginResult<()> {
        let submodules = repo.submodules().map_err(|e| self.error("listing submodules", &e))?;
        for mut sub in submodules {
            let path = sub.path().display().to_string();
            sub.init(false).map_err(|e| self.error(&format!("initialising submodule {path}"), &e))?;
            let name = sub.name().unwrap_or(&path).to_string();
            let raw = sub.url().ok().flatten().unwrap_or_default().to_string();
            // Relative URLs (../lib.git) are relative to the parent's remote;
            // libgit2 mangles file:/// ones, so resolve them here and record
            // the result where `update` reads it.
            let url = if raw.starts_with("./") || raw.starts_with("../") {
                let resolved = resolve_relative(parent_url, &raw);
                repo.config()
                    .and_then(|mut c| c.set_str(&format!("submodule.{name}.url"), &resolved))
                    .and_then(|()| sub.reload(true))
                    .map_err(|e| self.error(&format!("initialising submodule {path}"), &e))?;
                resolved
            } else {
                raw
            };
            // A remote repository must not pull a local one in with the worker's rights.
            if is_local(&url) {
                let roots = local_roots(self.context);
                local_allowed(&url, &roots).map_err(|e| format!("git: submodule {path}: {e}"))?;
            }
            self.host.message(&format!("git: updating submodule {path} from {}", redact(&url)));
            let attempts = Attempts::default();
            let mut options = SubmoduleUpdateOptions::new();
            // Full fetch: the pinned commit need not be the tip of any branch.
            options.fetch(self.fetch_options(&url, parent_url, 0, &attempts));
            sub.update(true, Some(&mut options)).map_err(|e| self.error(&format!("updating submodule {path}"), &e))?;
            if level < MAX_SUBMODULE_DEPTH {
                let child = sub.open().map_err(|e| self.error(&format!("opening submodule {path}"), &e))?;
                self.update_submodules(&child, &url, level + 1)?;
            }
        }
        Ok(())
    }

    /// Fetch options for `url`: credentials, host-key policy, progress and
    /// the stop check. `origin` is the project's repository URL, whose host
    /// alone gets the project's password.
    fn fetch_options<'s>(&'s self, url: &str, origin: &str, depth: u32, attempts: &'s Attempts) -> FetchOptions<'s> {
        let mut callbacks = RemoteCallbacks::new();
        let password_allowed = endpoint(url).map(|e| (e.host, e.port)) == endpoint(origin).map(|e| (e.host, e.port));
        let target = redact(url);
        callbacks.credentials(move |_url, user, allowed| {
            self.credentials(&target, user, allowed, password_allowed, attempts)
        });
        let ssh = endpoint(url);
        callbacks.certificate_check(move |cert, hostname| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2 and OpenSSL verify the certificate chain.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let Some(key) = hostkey.hostkey() else {
                return Err(self.fail(format!("git: {hostname} presented no raw host key to check")));
            };
            let port = ssh.as_ref().filter(|e| e.host.eq_ignore_ascii_case(hostname)).map(|e| e.port).unwrap_or(22);
            match self.plugin.host_keys.check(hostname, port, key) {
                Ok(Verdict::Known(_)) => Ok(CertificateCheckStatus::CertificateOk),
                Ok(Verdict::Recorded(file)) => {
                    self.host.message(&format!(
                        "git: recorded the new host key of {} ({}) in {}",
                        known_hosts::host_name(hostname, port),
                        known_hosts::describe_key(key),
                        file.display()
                    ));
                    Ok(CertificateCheckStatus::CertificateOk)
                }
                Err(reason) => Err(self.fail(reason)),
            }
        });
        callbacks.transfer_progress(move |progress| {
            if let Some(stop) = self.stopped() {
                self.fail(stop);
                return false;
            }
            let total = progress.total_objects();
            if let Some(quarter) = (progress.received_objects() * 4).checked_div(total) {
                if quarter > attempts.progress_quarter.get() {
                    attempts.progress_quarter.set(quarter);
                    self.host.message(&format!(
                        "git: received {}% ({}/{} objects, {} KiB)",
                        quarter * 25,
                        progress.received_objects(),
                        total,
                        progress.received_bytes() / 1024
                    ));
                }
            }
            true
        });
        callbacks.sideband_progress(move |_| match self.stopped() {
            Some(stop) => {
                self.fail(stop);
                false
            }
            None => true,
        });
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        if depth > 0 {
            options.depth(depth as i32);
        }
        options
    }

    fn credentials(
        &self,
        target: &str,
        user_from_url: Option<&str>,
        allowed: CredentialType,
        password_allowed: bool,
        attempts: &Attempts,
    ) -> Result<Cred, git2::Error> {
        if let Some(stop) = self.stopped() {
            return Err(self.fail(stop));
        }
        let user = user_from_url.unwrap_or("git");
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user);
        }
        let project = &self.context.project.name;
        if allowed.intersects(CredentialType::SSH_KEY | CredentialType::SSH_MEMORY) {
            let keys = &self.context.ssh_keys;
            let n = attempts.ssh_keys.get();
            attempts.ssh_keys.set(n + 1);
            if keys.is_empty() {
                return Err(
                    self.fail(format!("git: {target} asks for an SSH key, and project '{project}' has none attached"))
                );
            }
            let Some(key) = keys.get(n) else {
                let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
                return Err(self.fail(format!(
                    "git: {target} refused every SSH key attached to project '{project}' ({}) for user '{user}'",
                    names.join(", ")
                )));
            };
            let private = self.host.decrypt(&key.private_key).map_err(|e| self.fail(format!("git: {e}")))?;
            let passphrase = match &key.passphrase {
                Some(p) => Some(self.host.decrypt(p).map_err(|e| self.fail(format!("git: {e}")))?),
                None => None,
            };
            self.host.message(&format!("git: offering SSH key '{}' as {user}", key.name));
            if allowed.contains(CredentialType::SSH_MEMORY) {
                return Cred::ssh_key_from_memory(user, None, &private, passphrase.as_deref())
                    .map_err(|e| self.fail(format!("git: SSH key '{}' cannot be used: {}", key.name, e.message())));
            }
            // libssh2 without in-memory keys: a 0600 file in the private
            // directory, removed with `attempts` right after this connection.
            let file = self.write_key_file(n, &private)?;
            attempts.key_files.borrow_mut().push(file.clone());
            return Cred::ssh_key(user, None, &file, passphrase.as_deref())
                .map_err(|e| self.fail(format!("git: SSH key '{}' cannot be used: {}", key.name, e.message())));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let login = self.context.login.as_ref().filter(|_| password_allowed);
            let Some(login) = login else {
                return Err(self.fail(format!(
                    "git: {target} asks for a username and password, and project '{project}' has no service login \
                     attached{}",
                    if password_allowed { "" } else { " for that host" }
                )));
            };
            if attempts.passwords.replace(attempts.passwords.get() + 1) > 0 {
                return Err(self.fail(format!(
                    "git: authentication failed for {target}: the server refused the login of '{}'",
                    login.username
                )));
            }
            let password = match &login.password {
                Some(p) => self.host.decrypt(p).map_err(|e| self.fail(format!("git: {e}")))?,
                None => String::new(),
            };
            return Cred::userpass_plaintext(&login.username, &password);
        }
        Err(self.fail(format!("git: {target} asks for credentials this plugin cannot give ({allowed:?})")))
    }

    fn write_key_file(&self, n: usize, private: &str) -> Result<PathBuf, git2::Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if self.context.private_dir.is_empty() {
            return Err(self.fail("git: no private directory to hold the SSH key".into()));
        }
        let file = Path::new(&self.context.private_dir).join(format!("ssh-key-{n}"));
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .and_then(|mut f| f.write_all(private.as_bytes()))
            .map_err(|e| self.fail(format!("git: cannot write the SSH key file {}: {e}", file.display())))?;
        Ok(file)
    }
}

/// Host and port of a network URL (`ssh://`, `git://`, `http(s)://`, or the
/// scp-like `user@host:path`), `None` for local paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host name or address (without brackets).
    pub host: String,
    /// The port, the scheme's default when the URL names none.
    pub port: u16,
}

/// Where `url` connects to.
pub fn endpoint(url: &str) -> Option<Endpoint> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let default = match scheme.to_ascii_lowercase().as_str() {
            "ssh" | "git+ssh" | "ssh+git" => 22,
            "git" => 9418,
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        let authority = rest.split('/').next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner.split_once(']')?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(p) if !p.is_empty() => p.parse().ok()?,
            _ => default,
        };
        return Some(Endpoint { host: host.to_string(), port });
    }
    // scp-like: [user@]host:path, where host has no slash before the colon.
    let (before, _) = url.split_once(':')?;
    if before.contains('/') || before.is_empty() {
        return None;
    }
    let host = before.rsplit_once('@').map(|(_, h)| h).unwrap_or(before);
    Some(Endpoint { host: host.trim_matches(['[', ']']).to_string(), port: 22 })
}

/// Resolves a submodule URL starting with `./` or `../` against the
/// parent's remote URL, as git does.
pub fn resolve_relative(base: &str, relative: &str) -> String {
    let mut base = base.trim_end_matches('/').to_string();
    let mut rest = relative;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            rest = r;
            // The last path segment goes; for scp-like URLs the path may start after ':'.
            let floor = base.find("://").map(|i| i + 3).unwrap_or(0);
            match base[floor..].rfind(['/', ':']) {
                // Keep the ':' of `host:path`, drop the '/' of a path.
                Some(i) if base.as_bytes()[floor + i] == b':' => base.truncate(floor + i + 1),
                Some(i) => base.truncate(floor + i),
                None => base.clear(),
            }
        } else {
            break;
        }
    }
    if base.ends_with(':') {
        format!("{base}{rest}")
    } else {
        format!("{base}/{rest}")
    }
}

/// Whether `url` is a local repository (libgit2's local transport).
pub fn is_local(url: &str) -> bool {
    url.starts_with("file://") || endpoint(url).is_none()
}

/// `url` with any password removed, for the log.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let user = userinfo.split_once(':').map(|(u, _)| format!("{u}:***")).unwrap_or(userinfo.to_string());
            format!("{scheme}://{user}@{hostport}{path}")
        }
        None => url.to_string(),
    }
}

export_plugin! {
    name: "git",
    description: "Scm plugin that clones git repositories with libgit2 (file, git, ssh, http(s))",
    scm: GitScm,
}

#[cfg(test)]
mod tests;
