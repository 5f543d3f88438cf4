//! The `shell` isolation plugin: runs the build's launch script as the server's
//! own user, in the build root. There is no isolation at all, like the shell
//! executors of other CI servers: use it for single-user installs and trusted
//! projects only.
//!
//! The engine has already written the launch script (mode 0700) and
//! `vespene.json` into the build root. The script runs through the host's
//! command runner, so its output (stdout and stderr merged) streams into the
//! build's output log, and a stop or timeout kills its whole process group.
//! A script starting with a `#!` line is executed directly, so the kernel
//! picks its interpreter; one without is run with the `shell` parameter.
//!
//! The script sees the server's own environment (`HOME`, `PATH`, ...), then
//! this plugin's `env` parameter on top, then the build's environment on top
//! of that: the build wins.
//!
//! ```toml
//! [plugins.isolation.shell]
//! library = "shell"
//! shell = "/bin/bash"              # optional, default /bin/sh: for scripts without a #! line
//! env = { LANG = "C.UTF-8" }       # optional, added to every build's environment
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, launch, params, CommandRequest, Host, Isolation, IsolationContext, Kind, PluginResult, StreamName,
};

/// How this plugin's messages start.
const LABEL: &str = "shell isolation";

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["shell", "env"];

/// The shell used for scripts without a `#!` line when `shell` is not set.
pub const DEFAULT_SHELL: &str = "/bin/sh";

/// The error answered when the script was stopped; the engine knows which of
/// the two it was.
pub const STOPPED: &str = "the build was stopped or timed out";

/// The `shell` isolation plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellIsolation {
    /// Runs scripts that have no `#!` line.
    shell: String,
    /// Added to every build's environment, under the build's own.
    env: BTreeMap<String, String>,
}

impl ShellIsolation {
    /// The command line that runs `script` (an absolute path): the script
    /// itself when it starts with `#!`, else the configured shell with the
    /// script as its argument.
    pub fn argv(&self, script: &Path) -> PluginResult<Vec<String>> {
        let path = script.to_string_lossy().into_owned();
        if launch::has_shebang(script, LABEL)? {
            Ok(vec![path])
        } else {
            Ok(vec![self.shell.clone(), path])
        }
    }

    /// The environment the script gets on top of the server's: this plugin's
    /// `env`, overridden by the build's.
    pub fn environment(&self, context: &IsolationContext) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(context.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// The full command request for one build.
    pub fn request(&self, context: &IsolationContext) -> PluginResult<CommandRequest> {
        let script = launch::launch_script(context, LABEL)?;
        Ok(CommandRequest {
            argv: self.argv(&script)?,
            cwd: Some(context.build_root.clone()),
            env: self.environment(context),
            timeout_seconds: context.timeout_seconds,
            stream: StreamName::Output,
            // The script's name is in the message below; its text is in the build root.
            log_command: false,
            ..CommandRequest::default()
        })
    }
}

/// Checks the `shell` parameter: an absolute path to an existing file.
fn parse_shell(value: Option<&Value>) -> PluginResult<String> {
    let shell = match value {
        None => return Ok(DEFAULT_SHELL.to_string()),
        Some(Value::String(s)) if s.starts_with('/') && !s.contains('\0') => s,
        Some(_) => return Err("parameter 'shell' must be an absolute path, such as \"/bin/bash\"".to_string()),
    };
    if !Path::new(shell).is_file() {
        return Err(format!("parameter 'shell': {shell} does not exist or is not a file"));
    }
    Ok(shell.clone())
}

impl Isolation for ShellIsolation {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Isolation, "shell", PARAMETERS)?;
        Ok(ShellIsolation { shell: parse_shell(params.get("shell"))?, env: params::env_table(params, "env")? })
    }

    fn execute(&self, context: &IsolationContext, host: &Host<'_>) -> PluginResult<i32> {
        let request = self.request(context)?;
        // The server's runner would start the script and kill it at its first
        // poll; a build stopped already runs nothing.
        if host.is_cancelled() {
            return Err(STOPPED.to_string());
        }
        host.message(&format!(
            "shell isolation: running {} as the server's user in {}",
            context.launch_script, context.build_root
        ));
        let outcome = launch::run_script(host, &request)
            .map_err(|e| format!("shell isolation: cannot run the launch script: {e}"))?;
        // A killed script exits -1: report the stop, which is the cause.
        if outcome.cancelled {
            return Err(STOPPED.to_string());
        }
        Ok(outcome.exit_code)
    }
}

export_plugin! {
    name: "shell",
    description: "Isolation plugin that runs build scripts unisolated, as the server's own user",
    isolation: ShellIsolation,
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::Mutex;

    use vespene_plugin_api::abi::{CommandOutcome, CommandRunner, CommandRunner_TO};
    use vespene_plugin_api::abi_stable::sabi_trait::TD_Opaque;
    use vespene_plugin_api::abi_stable::std_types::{RResult, RStr, RString};
    use vespene_plugin_api::serde_json::{self, json, Value};
    use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
    use vespene_plugin_api::{CommandRequest, IsolationContext, StreamName};

    use super::{ShellIsolation, STOPPED};

    const SCRIPT: &str = "vespene_launch.sh";

    /// Writes `text` as the launch script (mode 0700, as the engine does) and
    /// a `vespene.json` into `root`, and answers the context for it.
    fn context(root: &Path, text: &str) -> IsolationContext {
        let script = root.join(SCRIPT);
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(root.join("vespene.json"), r#"{"build_id": 42}"#).unwrap();
        IsolationContext {
            build: fake_build(),
            project: fake_project(),
            build_root: root.display().to_string(),
            launch_script: SCRIPT.into(),
            timeout_seconds: Some(60),
            ..Default::default()
        }
    }

    fn execute(config: Value, ctx: &IsolationContext, host: &RecordingHost) -> Result<i32, String> {
        testkit::isolation::<ShellIsolation>(config)?.execute(ctx, host)
    }

    #[test]
    fn runs_a_shebang_script_and_answers_its_exit_code() {
        let root = tempfile::tempdir().unwrap();
        let ctx = context(root.path(), "#!/bin/sh\necho one\necho two >&2\necho three\nexit 3\n");
        let host = RecordingHost::new();

        let code = execute(json!({}), &ctx, &host).unwrap();

        assert_eq!(code, 3);
        // stdout and stderr in the order the script wrote them, as on the server.
        assert_eq!(host.outputs(), ["one", "two", "three"]);
        assert_eq!(
            host.messages(),
            [format!("shell isolation: running {SCRIPT} as the server's user in {}", root.path().display())]
        );
    }

    #[test]
    fn a_script_without_shebang_runs_with_the_configured_shell() {
        let root = tempfile::tempdir().unwrap();
        // A stand-in shell that says it was used, then runs the script with /bin/sh.
        let shell = root.path().join("myshell");
        std::fs::write(&shell, "#!/bin/sh\necho \"myshell: $1\"\nexec /bin/sh \"$@\"\n").unwrap();
        std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ctx = context(root.path(), "echo no shebang here\n");
        let script = root.path().join(SCRIPT);

        let host = RecordingHost::new();
        let code = execute(json!({ "shell": shell }), &ctx, &host).unwrap();
        assert_eq!(code, 0);
        assert_eq!(host.outputs(), [format!("myshell: {}", script.display()), "no shebang here".to_string()]);

        // The default shell is /bin/sh; the script need not even be executable.
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o600)).unwrap();
        let host = RecordingHost::new();
        assert_eq!(execute(json!({}), &ctx, &host).unwrap(), 0);
        assert_eq!(host.outputs(), ["no shebang here"]);
    }

    #[test]
    fn the_build_environment_wins_over_the_configured_one_and_the_servers_is_kept() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(
            root.path(),
            "#!/bin/sh\necho \"greeting=$GREETING\"\necho \"lang=$LANG_X\"\necho \"home=${HOME:+set}\"\n",
        );
        ctx.env.insert("GREETING".into(), "from the build".into());
        let config = json!({ "env": { "GREETING": "from the plugin", "LANG_X": "C.UTF-8" } });
        let host = RecordingHost::new();

        assert_eq!(execute(config, &ctx, &host).unwrap(), 0);
        let expected_home = if std::env::var_os("HOME").is_some() { "home=set" } else { "home=" };
        assert_eq!(host.outputs(), ["greeting=from the build", "lang=C.UTF-8", expected_home]);
    }

    #[test]
    fn the_script_runs_in_the_build_root() {
        let root = tempfile::tempdir().unwrap();
        let ctx = context(root.path(), "#!/bin/sh\ncat vespene.json\necho\npwd\n");
        let host = RecordingHost::new();

        assert_eq!(execute(json!({}), &ctx, &host).unwrap(), 0);
        let pwd = std::fs::canonicalize(root.path()).unwrap();
        assert_eq!(host.outputs(), [r#"{"build_id": 42}"#.to_string(), pwd.display().to_string()]);
    }

    #[test]
    fn a_stopped_build_runs_nothing() {
        let root = tempfile::tempdir().unwrap();
        let ctx = context(root.path(), "#!/bin/sh\ntouch ran\n");
        let host = RecordingHost::new();
        host.cancel();

        assert_eq!(execute(json!({}), &ctx, &host).unwrap_err(), STOPPED);
        assert!(!root.path().join("ran").exists());
        assert!(host.lines().is_empty());
    }

    #[test]
    fn bad_launch_scripts_are_named() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), "#!/bin/sh\ntrue\n");
        let host = RecordingHost::new();

        ctx.launch_script = "../evil.sh".into();
        let err = execute(json!({}), &ctx, &host).unwrap_err();
        assert_eq!(err, "shell isolation: launch script '../evil.sh' must be a plain file name in the build root");

        ctx.launch_script = "missing.sh".into();
        let err = execute(json!({}), &ctx, &host).unwrap_err();
        assert_eq!(
            err,
            format!("shell isolation: launch script 'missing.sh' not found in build root {}", root.path().display())
        );

        ctx.launch_script = String::new();
        assert_eq!(execute(json!({}), &ctx, &host).unwrap_err(), "shell isolation: the build has no launch script");
        assert!(host.lines().is_empty());
    }

    #[test]
    fn bad_configuration_is_named() {
        let cases = [
            (json!({"shell": "bash"}), "parameter 'shell' must be an absolute path, such as \"/bin/bash\"".to_string()),
            (json!({"shell": 5}), "parameter 'shell' must be an absolute path, such as \"/bin/bash\"".to_string()),
            (
                json!({"shell": "/no/such/shell"}),
                "parameter 'shell': /no/such/shell does not exist or is not a file".into(),
            ),
            (json!({"env": "A=1"}), "parameter 'env' must be a table of variable names to strings".into()),
            (json!({"env": {"A": 1}}), "parameter 'env': the value of 'A' must be a string".into()),
            (json!({"env": {"A=B": "1"}}), "parameter 'env': 'A=B' is not a valid environment variable name".into()),
            (json!({"shel": "/bin/sh"}), "unknown parameter 'shel' for isolation plugin shell".into()),
            (json!({"a": 1, "b": 2}), "unknown parameters 'a', 'b' for isolation plugin shell".into()),
            (json!([]), "the parameters of isolation plugin shell must be a table, not []".into()),
        ];
        for (config, expected) in cases {
            assert_eq!(testkit::isolation::<ShellIsolation>(config.clone()).err().unwrap(), expected, "{config}");
        }
        for config in [Value::Null, json!({}), json!({"shell": "/bin/sh", "env": {}})] {
            testkit::isolation::<ShellIsolation>(config).unwrap();
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        testkit::isolation_from::<ShellIsolation>("null").unwrap();
    }

    // ABI level on purpose from here on: these tests check the exact request
    // the plugin sends across the boundary and feed it start errors, so they
    // put their own command runner into the raw `Host`; the typed kit's
    // `RecordingHost` runs commands for real and cannot be given another.

    /// A command runner that records each request and answers the next canned result.
    struct FakeRunner {
        seen: Mutex<Vec<CommandRequest>>,
        answers: Mutex<VecDeque<Result<CommandOutcome, String>>>,
    }

    impl CommandRunner for FakeRunner {
        fn run(&self, request: RStr<'_>) -> RResult<CommandOutcome, RString> {
            self.seen.lock().unwrap().push(serde_json::from_str(request.as_str()).unwrap());
            let answer = self.answers.lock().unwrap().pop_front().expect("no more canned answers");
            answer.map_err(RString::from).into()
        }
    }

    fn done(exit_code: i32, cancelled: bool) -> Result<CommandOutcome, String> {
        Ok(CommandOutcome { exit_code, cancelled, last_line: "".into() })
    }

    fn with_fake_runner(
        answers: Vec<Result<CommandOutcome, String>>,
        ctx: &IsolationContext,
    ) -> (Result<i32, String>, Vec<CommandRequest>) {
        let recording = RecordingHost::new();
        let runner = FakeRunner { seen: Mutex::new(Vec::new()), answers: Mutex::new(answers.into()) };
        let mut host = recording.host();
        host.commands = CommandRunner_TO::from_ptr(&runner, TD_Opaque);
        let plugin = testkit::isolation_from::<ShellIsolation>(r#"{"env": {"CI": "true"}}"#).unwrap();
        let result = plugin.execute(testkit::to_json(ctx).as_rstr(), &host).into_result().map_err(Into::into);
        drop(host);
        (result, runner.seen.into_inner().unwrap())
    }

    #[test]
    fn asks_the_host_for_an_unlogged_output_command_in_the_build_root() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), "#!/bin/bash\nmake\n");
        ctx.timeout_seconds = Some(90);
        ctx.env.insert("BUILD_ID".into(), "42".into());
        let (result, seen) = with_fake_runner(vec![done(0, false)], &ctx);

        assert_eq!(result.unwrap(), 0);
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.argv, [root.path().join(SCRIPT).display().to_string()]);
        assert_eq!(req.shell, None);
        assert_eq!(req.cwd.as_deref(), Some(ctx.build_root.as_str()));
        assert_eq!(req.env.get("BUILD_ID").map(String::as_str), Some("42"));
        assert_eq!(req.env.get("CI").map(String::as_str), Some("true"));
        assert_eq!(req.timeout_seconds, Some(90));
        assert_eq!(req.stream, StreamName::Output);
        assert!(!req.log_command);
    }

    #[test]
    fn a_stopped_or_timed_out_script_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let ctx = context(root.path(), "#!/bin/sh\nsleep 600\n");
        let (result, _) = with_fake_runner(vec![done(-1, true)], &ctx);
        assert_eq!(result.unwrap_err(), STOPPED);
    }

    #[test]
    fn a_text_file_busy_script_is_tried_again_and_other_start_errors_are_not() {
        let root = tempfile::tempdir().unwrap();
        let ctx = context(root.path(), "#!/bin/sh\ntrue\n");
        let busy = || Err("cannot start /x/vespene_launch.sh: Text file busy (os error 26)".to_string());

        let (result, seen) = with_fake_runner(vec![busy(), busy(), done(4, false)], &ctx);
        assert_eq!(result.unwrap(), 4);
        assert_eq!(seen.len(), 3);

        let (result, seen) = with_fake_runner(vec![busy(); 6], &ctx);
        assert_eq!(
            result.unwrap_err(),
            "shell isolation: cannot run the launch script: cannot start /x/vespene_launch.sh: Text file busy (os error 26)"
        );
        assert_eq!(seen.len(), 6);

        let denied = Err("cannot start /x/vespene_launch.sh: Permission denied (os error 13)".to_string());
        let (result, seen) = with_fake_runner(vec![denied], &ctx);
        assert_eq!(
            result.unwrap_err(),
            "shell isolation: cannot run the launch script: cannot start /x/vespene_launch.sh: Permission denied (os error 13)"
        );
        assert_eq!(seen.len(), 1);
    }
}
