//! The `command` trigger plugin: runs a shell command before or after a build.
//!
//! Its parameter `command` is a minijinja template rendered against the
//! trigger context (`hook`, `build`, `project`) with strict undefined checking,
//! so a misspelt variable fails the trigger instead of running a half-empty
//! command. The command runs through the host with `/bin/sh -c`, in the build's
//! working directory, its output going to the build's message log; a non-zero
//! exit fails the trigger.
//!
//! The same library is also a secrets plugin, which keeps secret values
//! outside the database: see [`secrets`].
//!
//! Every value a `{{ ... }}` puts into the command is shell-quoted (one shell
//! word, whatever it holds: a project named `x; reboot` stays a name), so do
//! not put quotes of your own around it. `{{ value | raw }}` (or `| safe`)
//! pastes a value as it is; `quote = false` on the entry turns the quoting off
//! for the whole command (then `| shell_quote` quotes one value).
//!
//! ```toml
//! [plugins.success_triggers.notify]
//! library = "command"
//! command = "logger -t vespene {{ 'build ' ~ build.id ~ ' of ' ~ project.name ~ ' passed' }}"
//! ```

pub mod secrets;

use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value as JinjaValue};
use vespene_plugin_api::serde_json::{self, Value};
use vespene_plugin_api::{
    export_plugin, params, CommandRequest, Host, Kind, PluginResult, StreamName, Trigger, TriggerContext,
};

/// The name the command template is stored under; it appears in render errors.
const TEMPLATE: &str = "command";

/// The `command` trigger.
#[derive(Debug)]
pub struct CommandTrigger {
    /// Holds the compiled command template.
    env: Environment<'static>,
    /// The template's text, to quote the part an error points at.
    source: String,
}

/// A template error in one line, quoting the failing part of `source` when
/// minijinja knows it ("undefined value" alone does not say which one).
fn describe(err: &minijinja::Error, source: &str) -> String {
    match err.range().and_then(|r| source.get(r)) {
        Some(at) if !at.trim().is_empty() => format!("{err} at `{at}`"),
        _ => err.to_string(),
    }
}

impl CommandTrigger {
    /// Renders the command for one build.
    pub fn render(&self, context: &TriggerContext) -> PluginResult<String> {
        // The context's own JSON (hook, build, project and any newer fields).
        let vars = serde_json::to_value(context).map_err(|e| e.to_string())?;
        self.env
            .get_template(TEMPLATE)
            .and_then(|t| t.render(&vars))
            .map_err(|e| format!("cannot render the command of the command trigger: {}", describe(&e, &self.source)))
    }
}

/// The `shell_quote` filter: the value as one shell word (marked safe, so the
/// default quoting does not quote it twice).
fn shell_quote_filter(value: JinjaValue) -> Result<JinjaValue, Error> {
    let text = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
    vespene_plugin_api::shell::quote(&text)
        .map(JinjaValue::from_safe_string)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e))
}

/// The `raw` filter: the value pasted as it is (as `safe` does).
fn raw_filter(value: JinjaValue) -> JinjaValue {
    JinjaValue::from_safe_string(value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string()))
}

/// Writes what a `{{ ... }}` yields as one shell word, unless marked raw/safe.
fn quoting_formatter(out: &mut Output, state: &State, value: &JinjaValue) -> Result<(), Error> {
    let plain = value.is_safe()
        || value.is_undefined()
        || value.is_none()
        || matches!(value.kind(), ValueKind::Number | ValueKind::Bool);
    if plain {
        return minijinja::escape_formatter(out, state, value);
    }
    let quoted =
        vespene_plugin_api::shell::quote(&value.to_string()).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))?;
    out.write_str(&quoted).map_err(Error::from)
}

impl Trigger for CommandTrigger {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Trigger, "command", &["command", "quote"])?;
        let command =
            params.get("command").and_then(Value::as_str).ok_or("parameter 'command' (a string) is required")?;
        let quote = match params.get("quote") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("parameter 'quote' must be true or false, got {other}")),
        };

        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("shell_quote", shell_quote_filter);
        env.add_filter("raw", raw_filter);
        if quote {
            env.set_formatter(quoting_formatter);
        }
        // Compiling here turns a syntax error into a start-up error, not a failed build.
        env.add_template_owned(TEMPLATE, command.to_string())
            .map_err(|e| format!("parameter 'command' is not a valid template: {}", describe(&e, command)))?;
        Ok(CommandTrigger { env, source: command.to_string() })
    }

    fn execute(&self, context: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
        let rendered = self.render(context)?;
        let working_dir = &context.build.working_dir;
        // The host logs the command line itself (log_command), so no message here.
        let outcome = host.run(&CommandRequest {
            stream: StreamName::Message,
            cwd: (!working_dir.is_empty()).then(|| working_dir.clone()),
            ..CommandRequest::shell(rendered.clone())
        })?;
        // A stopped command exits non-zero too: report the cancel, which is the cause.
        if outcome.cancelled {
            return Err("command trigger was cancelled".to_string());
        }
        if outcome.exit_code != 0 {
            return Err(format!("command trigger failed with exit code {}: {rendered}", outcome.exit_code));
        }
        Ok(())
    }
}

export_plugin! {
    name: "command",
    description: "Trigger that runs a templated shell command; secrets plugin that keeps values in an external store",
    trigger: CommandTrigger,
    secrets: secrets::CommandSecrets,
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use vespene_plugin_api::abi::{CommandOutcome, CommandRunner, CommandRunner_TO};
    use vespene_plugin_api::abi_stable::sabi_trait::TD_Opaque;
    use vespene_plugin_api::abi_stable::std_types::{ROk, RResult, RStr, RString};
    use vespene_plugin_api::serde_json::{self, json};
    use vespene_plugin_api::testkit::{self, fake_trigger_context, RecordingHost};
    use vespene_plugin_api::{CommandRequest, StreamName, TriggerContext};

    use super::CommandTrigger;

    fn config(command: &str) -> serde_json::Value {
        json!({ "command": command })
    }

    fn context_in(dir: &std::path::Path) -> TriggerContext {
        let mut ctx = fake_trigger_context("success");
        ctx.build.working_dir = dir.to_string_lossy().into_owned();
        ctx
    }

    fn execute(config: serde_json::Value, ctx: &TriggerContext, host: &RecordingHost) -> Result<(), String> {
        testkit::trigger::<CommandTrigger>(config)?.execute(ctx, host)
    }

    #[test]
    fn runs_the_rendered_command_in_the_working_dir() {
        let dir = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        // A relative path: lands in the build's working directory only if cwd is set.
        let cfg = config("echo '{{ hook }} {{ build.id }} {{ project.name }}' > out.txt && echo wrote it");

        execute(cfg, &context_in(dir.path()), &host).unwrap();

        let written = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
        assert_eq!(written, "success 42 demo\n");
        // The command's output goes to the housekeeping log, not the build output.
        assert_eq!(host.messages(), ["running: echo 'success 42 demo' > out.txt && echo wrote it", "wrote it"]);
        assert!(host.outputs().is_empty());
    }

    #[test]
    fn non_zero_exit_fails_with_code_and_command() {
        let dir = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        let err =
            execute(config("echo failing for {{ build.id }}; exit 3"), &context_in(dir.path()), &host).unwrap_err();
        assert_eq!(err, "command trigger failed with exit code 3: echo failing for 42; exit 3");
        assert_eq!(host.messages(), ["running: echo failing for 42; exit 3", "failing for 42"]);
    }

    #[test]
    fn undefined_variable_fails_at_execute_without_running() {
        let dir = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        let err =
            execute(config("touch ran.txt {{ build.no_such_field }}"), &context_in(dir.path()), &host).unwrap_err();
        assert!(err.starts_with("cannot render the command"), "{err}");
        assert!(err.contains("undefined"), "{err}");
        assert!(err.ends_with(" at `build.no_such_field`"), "{err}");
        assert!(!dir.path().join("ran.txt").exists());
    }

    #[test]
    fn null_fields_render_and_newer_context_fields_are_visible() {
        let dir = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        let mut ctx = context_in(dir.path());
        ctx.extra.insert("pipeline".into(), json!({"name": "deploy"}));
        execute(config("echo {{ pipeline.name }} {{ build.revision or 'HEAD' }}"), &ctx, &host).unwrap();
        assert_eq!(host.messages(), ["running: echo deploy HEAD", "deploy HEAD"]);
    }

    #[test]
    fn template_syntax_error_is_a_configuration_error() {
        let err = testkit::trigger::<CommandTrigger>(config("echo {{ build.id")).err().unwrap();
        assert!(err.starts_with("parameter 'command' is not a valid template: "), "{err}");
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn command_is_required_and_must_be_a_string() {
        for cfg in [json!({}), json!(null), json!({"command": 5}), json!({"command": null})] {
            let err = testkit::trigger::<CommandTrigger>(cfg.clone()).err().unwrap();
            assert_eq!(err, "parameter 'command' (a string) is required", "{cfg}");
        }
    }

    #[test]
    fn unknown_parameters_are_named() {
        let err = testkit::trigger::<CommandTrigger>(json!({"command": "true", "comand": "x"})).err().unwrap();
        assert_eq!(err, "unknown parameter 'comand' for trigger plugin command");

        let err = testkit::trigger::<CommandTrigger>(json!({"a": 1, "b": 2})).err().unwrap();
        assert_eq!(err, "unknown parameters 'a', 'b' for trigger plugin command");
    }

    // ABI level on purpose from here on: these tests check the exact request
    // the plugin sends across the boundary and answer canned outcomes, so they
    // put their own command runner into the raw `Host`; the typed kit's
    // `RecordingHost` runs commands for real and cannot be given another.

    /// A command runner that records the request and answers a canned outcome.
    struct FakeRunner {
        seen: Mutex<Vec<CommandRequest>>,
        outcome: CommandOutcome,
    }

    impl CommandRunner for FakeRunner {
        fn run(&self, request: RStr<'_>) -> RResult<CommandOutcome, RString> {
            let req = serde_json::from_str(request.as_str()).unwrap();
            self.seen.lock().unwrap().push(req);
            ROk(self.outcome.clone())
        }
    }

    fn with_fake_runner(outcome: CommandOutcome, ctx: &TriggerContext) -> (Result<(), String>, Vec<CommandRequest>) {
        let recording = RecordingHost::new();
        let runner = FakeRunner { seen: Mutex::new(Vec::new()), outcome };
        let mut host = recording.host();
        host.commands = CommandRunner_TO::from_ptr(&runner, TD_Opaque);
        let trigger =
            testkit::trigger_from::<CommandTrigger>(&config("make deploy ID={{ build.id }}").to_string()).unwrap();
        let result = trigger.execute(testkit::to_json(ctx).as_rstr(), &host).into_result().map_err(Into::into);
        drop(host);
        (result, runner.seen.into_inner().unwrap())
    }

    #[test]
    fn asks_the_host_for_a_logged_shell_command_on_the_message_stream() {
        let mut ctx = fake_trigger_context("pre");
        ctx.build.working_dir = "/srv/build/42".into();
        let (result, seen) =
            with_fake_runner(CommandOutcome { exit_code: 0, cancelled: false, last_line: "".into() }, &ctx);
        result.unwrap();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.shell.as_deref(), Some("make deploy ID=42"));
        assert!(req.argv.is_empty());
        assert_eq!(req.cwd.as_deref(), Some("/srv/build/42"));
        assert_eq!(req.stream, StreamName::Message);
        assert!(req.log_command);
    }

    #[test]
    fn empty_working_dir_leaves_cwd_to_the_host() {
        let mut ctx = fake_trigger_context("pre");
        ctx.build.working_dir = String::new();
        let (result, seen) =
            with_fake_runner(CommandOutcome { exit_code: 0, cancelled: false, last_line: "".into() }, &ctx);
        result.unwrap();
        assert_eq!(seen[0].cwd, None);
    }

    #[test]
    fn a_cancelled_command_reports_the_cancel() {
        let (result, _) = with_fake_runner(
            CommandOutcome { exit_code: -1, cancelled: true, last_line: "".into() },
            &fake_trigger_context("success"),
        );
        assert_eq!(result.unwrap_err(), "command trigger was cancelled");
    }

    #[test]
    fn values_are_shell_words_unless_raw_or_quote_is_off() {
        use vespene_plugin_api::Trigger;
        let mut ctx = fake_trigger_context("success");
        ctx.project.name = "x; touch pwned 'q'".into();
        let quoted = r#"'x; touch pwned '\''q'\'''"#;
        let render = |config: serde_json::Value| CommandTrigger::new(&config).unwrap().render(&ctx).unwrap();
        let out = render(json!({"command": "echo {{ project.name }} {{ build.id }} {{ project.name | raw }}"}));
        assert_eq!(out, format!("echo {quoted} 42 x; touch pwned 'q'"));
        let out =
            render(json!({"command": "echo {{ project.name }}|{{ project.name | shell_quote }}", "quote": false}));
        assert_eq!(out, format!("echo x; touch pwned 'q'|{quoted}"));
        let err = CommandTrigger::new(&json!({"command": "true", "quote": "yes"})).unwrap_err();
        assert_eq!(err, "parameter 'quote' must be true or false, got \"yes\"");
    }
}
