//! The `svn` scm plugin: checks out a Subversion repository into the build
//! root with the `svn` command-line client, run through the host so its output
//! streams live into the build's message log and a stop kills it.
//!
//! * The checkout URL is the project's repository URL, with the project's
//!   branch appended as a path when one is named (`branches/feature`,
//!   `trunk`, `tags/1.0`).
//! * Anonymous, or with the project's service login: the username on the
//!   command line, the password on standard input (`--password-from-stdin`),
//!   never in the arguments, never in the build log (masked), never on disk:
//!   `--no-auth-cache` and `--config-dir` in the build's private directory,
//!   which the engine removes after the checkout.
//! * Always `--non-interactive`: a server asking for anything else (a
//!   password that was refused, an unknown certificate) fails the build with
//!   one clear line instead of hanging it.
//! * `svn:externals` are fetched by the plugin, one level at a time, instead of
//!   by svn itself: each definition is resolved (`../`, `^/`, `//`, `/` and
//!   absolute URLs, pegs and `-r` revisions) and checked before anything is
//!   read. A `file://` external must be inside the server's
//!   `local_repository_roots` (its `[repositories] local_roots`), like the
//!   project's own repository; otherwise the checkout fails naming it. An
//!   external's directory must stay inside the working copy. The project's
//!   login is offered only to externals on the repository's own server.
//!   `externals = false` skips externals altogether.
//! * The answer records the last changed revision of the checked-out path and
//!   its author.
//!
//! ```toml
//! [plugins.scm.svn]
//! library = "svn"
//! svn = "/usr/bin/svn"       # optional, default "svn" on PATH
//! timeout_seconds = 600      # optional
//! externals = true           # optional: fetch svn:externals (checked as above)
//! ```

mod externals;

use std::path::Path;
use std::process::Command;

use externals::Fetch;

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, CheckoutResult, CommandRequest, Host, Kind, PluginResult, Scm, ScmContext, StreamName,
};

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["svn", "timeout_seconds", "externals"];

/// How deep externals of externals are followed.
pub const MAX_EXTERNALS_DEPTH: usize = 8;

/// The time limit of one checkout when `timeout_seconds` is not set.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 600;

/// The `svn` scm plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvnScm {
    svn: String,
    timeout_seconds: u64,
    externals: bool,
}

impl SvnScm {
    /// The URL checked out: the repository URL, plus the branch path if any.
    pub fn checkout_url(context: &ScmContext) -> String {
        let url = context.repo_url.trim();
        match context.branch.as_deref().map(|b| b.trim().trim_matches('/')).filter(|b| !b.is_empty()) {
            Some(branch) => format!("{}/{branch}", url.trim_end_matches('/')),
            None => url.to_string(),
        }
    }

    /// The command that checks `url` out, with the password (if any) to feed
    /// on standard input.
    pub fn checkout_request(
        &self,
        context: &ScmContext,
        url: &str,
        config_dir: &str,
        login: Option<(&str, &str)>,
        timeout_seconds: u64,
    ) -> CommandRequest {
        let mut request =
            self.fetch_request("checkout", None, url, &context.work_dir, config_dir, login, timeout_seconds);
        request.cwd = Some(context.work_dir.clone());
        request
    }

    /// `svn checkout` (or `export`, for a file external) of `url` into `dest`,
    /// never following externals: the plugin checks those itself.
    #[allow(clippy::too_many_arguments)]
    fn fetch_request(
        &self,
        verb: &str,
        revision: Option<&str>,
        url: &str,
        dest: &str,
        config_dir: &str,
        login: Option<(&str, &str)>,
        timeout_seconds: u64,
    ) -> CommandRequest {
        let mut argv = vec![
            self.svn.clone(),
            verb.into(),
            "--non-interactive".into(),
            "--no-auth-cache".into(),
            "--ignore-externals".into(),
            "--config-dir".into(),
            config_dir.into(),
        ];
        if let Some(revision) = revision {
            argv.extend(["-r".into(), revision.into()]);
        }
        let mut request = CommandRequest::default();
        if let Some((username, password)) = login {
            argv.extend(["--username".into(), username.into(), "--password-from-stdin".into()]);
            request.stdin = Some(password.to_string());
            request.mask = vec![password.to_string()].into_iter().filter(|p| !p.is_empty()).collect();
        }
        argv.extend(["--".into(), url.into(), dest.into()]);
        request.argv = argv;

        // English messages, so failures can be told apart.
        request.env.insert("LC_ALL".into(), "C".into());
        request.stream = StreamName::Message;
        request.timeout_seconds = Some(timeout_seconds);
        request
    }
}

impl Scm for SvnScm {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Scm, "svn", PARAMETERS)?;
        let svn = match params.get("svn") {
            None => "svn".to_string(),
            Some(Value::String(s)) if !s.is_empty() && !s.contains('\0') => {
                if s.contains('/') && !Path::new(s).is_file() {
                    return Err(format!("parameter 'svn': {s} does not exist or is not a file"));
                }
                s.clone()
            }
            Some(_) => return Err("parameter 'svn' must be the path of the svn client".into()),
        };
        let timeout_seconds = match params.get("timeout_seconds") {
            None => DEFAULT_TIMEOUT_SECONDS,
            Some(v) => v.as_u64().filter(|n| *n > 0).ok_or("parameter 'timeout_seconds' must be a positive integer")?,
        };
        let externals = match params.get("externals") {
            None => true,
            Some(v) => v.as_bool().ok_or("parameter 'externals' must be true or false")?,
        };
        Ok(SvnScm { svn, timeout_seconds, externals })
    }

    fn checkout(&self, context: &ScmContext, host: &Host<'_>) -> PluginResult<CheckoutResult> {
        if context.repo_url.trim().is_empty() {
            return Err("svn: the project has no repository URL".into());
        }
        if context.work_dir.is_empty() || !Path::new(&context.work_dir).is_dir() {
            return Err(format!("svn: the build root '{}' does not exist", context.work_dir));
        }
        if context.private_dir.is_empty() || !Path::new(&context.private_dir).is_dir() {
            return Err("svn: the build has no private directory for the client's configuration".into());
        }
        let url = Self::checkout_url(context);
        // svn writes its configuration (and would write caches) here only.
        let config_dir = Path::new(&context.private_dir).join("svn");
        std::fs::create_dir_all(&config_dir)
            .map_err(|e| format!("svn: cannot create {}: {e}", config_dir.display()))?;
        let config_dir = config_dir.display().to_string();

        let password;
        let login = match &context.login {
            Some(login) => {
                password = match &login.password {
                    Some(stored) => host.decrypt(stored).map_err(|e| format!("svn: {e}"))?,
                    None => String::new(),
                };
                Some((login.username.as_str(), password.as_str()))
            }
            None => None,
        };
        let mut timeout = self.timeout_seconds;
        if let Some(ms) = host.remaining_ms() {
            timeout = timeout.min(ms.div_ceil(1000).max(1));
        }
        host.message(&format!(
            "svn: checking out {url} ({})",
            match login {
                Some((user, _)) => format!("as {user}"),
                None => "anonymously".into(),
            }
        ));
        let request = self.checkout_request(context, &url, &config_dir, login, timeout);
        let outcome = host.run(&request).map_err(|e| format!("svn: cannot run {}: {e}", self.svn))?;
        if outcome.cancelled || host.is_cancelled() {
            return Err("svn: checkout stopped: the build was stopped or timed out".into());
        }
        if outcome.exit_code != 0 {
            let last = outcome.last_line.as_str();
            return Err(if is_auth_failure(last) {
                match login {
                    Some((user, _)) => format!("svn: authentication failed for {url} as {user}: {last}"),
                    None => format!("svn: authentication failed for {url} (anonymous access refused): {last}"),
                }
            } else {
                format!("svn: checkout of {url} failed (exit code {}): {last}", outcome.exit_code)
            });
        }
        if self.externals {
            let fetch = Fetch { plugin: self, context, host, config_dir: &config_dir, login, timeout };
            fetch.externals_of(Path::new(&context.work_dir), 1)?;
        }
        let info = self.info(&context.work_dir, &config_dir)?;
        let result = CheckoutResult {
            short_revision: info.revision.as_ref().map(|r| format!("r{r}")),
            revision: info.revision,
            committer: info.author,
            committer_email: None,
        };
        host.message(&format!(
            "svn: checked out {url} at {}, last change by {}",
            result.short_revision.as_deref().unwrap_or("an unknown revision"),
            result.committer.as_deref().unwrap_or("nobody known")
        ));
        Ok(result)
    }
}

impl SvnScm {
    /// Reads the working copy's last change (local: no server, no credentials).
    fn info(&self, work_dir: &str, config_dir: &str) -> PluginResult<Info> {
        let out = Command::new(&self.svn)
            .args(["info", "--xml", "--non-interactive", "--config-dir", config_dir, "--", work_dir])
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("svn: cannot run {}: {e}", self.svn))?;
        if !out.status.success() {
            return Err(format!(
                "svn: cannot read the checked-out revision: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(parse_info(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// What `svn info --xml` says about the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// The last changed revision (the working copy's if no commit is listed).
    pub revision: Option<String>,
    /// Its author.
    pub author: Option<String>,
    /// The URL of the working copy directory.
    pub url: Option<String>,
    /// The URL of its repository's root.
    pub root: Option<String>,
}

/// Parses `svn info --xml`: `<entry revision=..><commit revision="N"><author>A</author>`.
pub fn parse_info(xml: &str) -> Info {
    let attribute = |from: &str| -> Option<String> {
        let rest = &from[from.find("revision=\"")? + "revision=\"".len()..];
        Some(rest[..rest.find('"')?].to_string())
    };
    let revision = xml.find("<commit").and_then(|i| attribute(&xml[i..]));
    let revision = revision.or_else(|| xml.find("<entry").and_then(|i| attribute(&xml[i..])));
    Info { revision, author: element(xml, "author"), url: element(xml, "url"), root: element(xml, "root") }
}

/// The text of the first `<name>` element, unescaped.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let rest = &xml[xml.find(&open)? + open.len()..];
    Some(unescape(&rest[..rest.find(&format!("</{name}>"))?]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// Whether svn's last line says the server refused who we are (wrong or no
/// password, anonymous access denied).
pub fn is_auth_failure(line: &str) -> bool {
    // E170001: authorization failed; E215004: no more credentials;
    // E170013 wraps them when the connection itself is refused for auth.
    ["E170001", "E215004", "Authentication", "authorization failed", "Authorization failed"]
        .iter()
        .any(|needle| line.contains(needle))
}

export_plugin! {
    name: "svn",
    description: "Scm plugin that checks out Subversion repositories with the svn client",
    scm: SvnScm,
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
    use vespene_plugin_api::{CheckoutResult, LoginRef, ScmContext};

    use super::*;

    fn run(cmd: &str, args: &[&str]) {
        let out = Command::new(cmd).args(args).output().expect("run svn tools");
        assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A repository with trunk/ (by ada) and branches/feature/ (by bob).
    fn fixture(root: &Path) -> String {
        let repo = root.join("repo");
        run("svnadmin", &["create", repo.to_str().unwrap()]);
        let url = format!("file://{}", repo.display());
        let src = root.join("src");
        std::fs::create_dir_all(src.join("trunk")).unwrap();
        std::fs::write(src.join("trunk/README"), "hello\n").unwrap();
        run("svn", &["import", "-q", "--username", "ada", "-m", "first", src.to_str().unwrap(), &url]);
        let branch = format!("{url}/branches/feature");
        run("svn", &["copy", "-q", "--parents", "--username", "bob", "-m", "branch", &format!("{url}/trunk"), &branch]);
        url
    }

    fn context(url: &str, root: &Path, branch: Option<&str>) -> ScmContext {
        let work = root.join("build");
        let private = root.join("private");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&private).unwrap();
        ScmContext {
            build: fake_build(),
            project: fake_project(),
            work_dir: work.display().to_string(),
            private_dir: private.display().to_string(),
            repo_url: url.into(),
            branch: branch.map(String::from),
            ..Default::default()
        }
    }

    fn checkout(ctx: &ScmContext, host: &RecordingHost) -> Result<CheckoutResult, String> {
        testkit::scm::<SvnScm>(json!({}))?.checkout(ctx, host)
    }

    #[test]
    fn checks_out_a_branch_path_and_records_revision_and_author() {
        let root = tempfile::tempdir().unwrap();
        let url = fixture(root.path());
        let ctx = context(&url, root.path(), Some("branches/feature"));
        let host = RecordingHost::new();

        let result = checkout(&ctx, &host).unwrap();

        assert_eq!(result.revision.as_deref(), Some("2"));
        assert_eq!(result.short_revision.as_deref(), Some("r2"));
        assert_eq!(result.committer.as_deref(), Some("bob"));
        assert!(Path::new(&ctx.work_dir).join("README").exists());
        let messages = host.messages();
        assert_eq!(messages[0], format!("svn: checking out {url}/branches/feature (anonymously)"));
        assert!(messages.iter().any(|m| m.starts_with("running: svn checkout --non-interactive --no-auth-cache")));
        // The client's configuration stays in the private directory.
        assert!(Path::new(&ctx.private_dir).join("svn").is_dir());
    }

    /// Sets `svn:externals` on trunk of the repository at `url`.
    fn set_externals(url: &str, root: &Path, value: &str) {
        let wc = root.join("externals-wc");
        run("svn", &["checkout", "-q", &format!("{url}/trunk"), wc.to_str().unwrap()]);
        run("svn", &["propset", "-q", "svn:externals", value, wc.to_str().unwrap()]);
        run("svn", &["commit", "-q", "--username", "ada", "-m", "externals", wc.to_str().unwrap()]);
        std::fs::remove_dir_all(wc).unwrap();
    }

    #[test]
    fn externals_are_fetched_only_from_allowed_places() {
        let root = tempfile::tempdir().unwrap();
        let url = fixture(root.path());
        let elsewhere = tempfile::tempdir().unwrap();
        let secret = fixture(elsewhere.path());
        let roots = json!([root.path()]);

        // Relative, same-repository and file externals under the roots are fetched.
        set_externals(&url, root.path(), "^/branches/feature feat\n-r 1 ../trunk/README readme-copy\n");
        let mut ctx = context(&url, root.path(), Some("trunk"));
        ctx.extra.insert("local_repository_roots".into(), roots.clone());
        let host = RecordingHost::new();
        checkout(&ctx, &host).unwrap();
        let work = Path::new(&ctx.work_dir);
        assert_eq!(std::fs::read_to_string(work.join("feat/README")).unwrap(), "hello\n");
        assert_eq!(std::fs::read_to_string(work.join("readme-copy")).unwrap(), "hello\n");
        assert!(host
            .messages()
            .iter()
            .any(|m| m == &format!("svn: fetching external {url}/branches/feature into feat")));

        // One outside the roots is refused before it is read, naming it.
        set_externals(&url, root.path(), &format!("{secret}/trunk stolen\n"));
        let root2 = tempfile::tempdir().unwrap();
        let mut ctx = context(&url, root2.path(), Some("trunk"));
        ctx.extra.insert("local_repository_roots".into(), roots);
        let err = checkout(&ctx, &RecordingHost::new()).unwrap_err();
        let path = secret.strip_prefix("file://").unwrap();
        assert!(err.starts_with(&format!("svn: external in .: local repository '{path}/trunk' is outside")), "{err}");
        assert!(!Path::new(&ctx.work_dir).join("stolen").exists());

        // With no roots from the server, no file:// external is allowed at all.
        let root3 = tempfile::tempdir().unwrap();
        let ctx = context(&url, root3.path(), Some("trunk"));
        let err = checkout(&ctx, &RecordingHost::new()).unwrap_err();
        assert!(err.contains("(local_roots: none)") || err.contains("local_roots: none"), "{err}");

        // externals = false skips them.
        let plugin = testkit::scm::<SvnScm>(json!({"externals": false})).unwrap();
        let root4 = tempfile::tempdir().unwrap();
        let ctx = context(&url, root4.path(), Some("trunk"));
        plugin.checkout(&ctx, &RecordingHost::new()).unwrap();
        assert!(!Path::new(&ctx.work_dir).join("stolen").exists());
        assert!(Path::new(&ctx.work_dir).join("README").exists());
    }

    #[test]
    fn a_missing_path_fails_clearly() {
        let root = tempfile::tempdir().unwrap();
        let url = fixture(root.path());
        let ctx = context(&url, root.path(), Some("branches/nope"));
        let err = checkout(&ctx, &RecordingHost::new()).unwrap_err();
        assert!(err.starts_with(&format!("svn: checkout of {url}/branches/nope failed (exit code 1):")), "{err}");
    }

    #[test]
    fn the_password_goes_on_stdin_and_is_masked_never_in_argv() {
        let plugin = SvnScm { svn: "svn".into(), timeout_seconds: 60, externals: true };
        let mut ctx = context("svn://h/repo", tempfile::tempdir().unwrap().path(), None);
        ctx.login = Some(LoginRef { username: "ada".into(), password: Some("plain:s3cret".into()) });
        let request = plugin.checkout_request(&ctx, "svn://h/repo", "/private/svn", Some(("ada", "s3cret")), 60);
        assert!(!request.argv.iter().any(|a| a.contains("s3cret")), "{:?}", request.argv);
        assert_eq!(request.stdin.as_deref(), Some("s3cret"));
        assert_eq!(request.mask, ["s3cret"]);
        let argv = request.argv.join(" ");
        assert!(argv.contains("--username ada --password-from-stdin"), "{argv}");
        assert!(
            argv.contains("--non-interactive --no-auth-cache --ignore-externals --config-dir /private/svn"),
            "{argv}"
        );
    }

    #[test]
    fn urls_info_and_errors() {
        let mut ctx = ScmContext { repo_url: "svn://h/repo/".into(), ..Default::default() };
        assert_eq!(SvnScm::checkout_url(&ctx), "svn://h/repo/");
        ctx.branch = Some("/branches/x/".into());
        assert_eq!(SvnScm::checkout_url(&ctx), "svn://h/repo/branches/x");
        let xml = "<info><entry kind=\"dir\" path=\".\" revision=\"9\"><commit\n   revision=\"7\">\n<author>a&amp;b</author></commit></entry></info>";
        let expected = Info { revision: Some("7".into()), author: Some("a&b".into()), url: None, root: None };
        assert_eq!(parse_info(xml), expected);
        assert!(is_auth_failure("svn: E170001: Authentication error from server: Password incorrect"));
        assert!(!is_auth_failure("svn: E170000: URL 'svn://h/x' doesn't exist"));
    }

    #[test]
    fn bad_configuration_is_named() {
        let cases = [
            (json!({"svn": 1}), "parameter 'svn' must be the path of the svn client"),
            (json!({"svn": "/no/svn"}), "parameter 'svn': /no/svn does not exist or is not a file"),
            (json!({"timeout_seconds": "x"}), "parameter 'timeout_seconds' must be a positive integer"),
            (json!({"externals": "no"}), "parameter 'externals' must be true or false"),
            (json!({"user": "x"}), "unknown parameter 'user' for scm plugin svn"),
        ];
        for (config, expected) in cases {
            assert_eq!(testkit::scm::<SvnScm>(config.clone()).err().unwrap(), expected, "{config}");
        }
        testkit::scm::<SvnScm>(json!({})).unwrap();
    }
}
