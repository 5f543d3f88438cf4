//! The `template` trigger plugin: an example to copy when writing a plugin.
//!
//! On each build it writes `<greeting> from build <id> of <project>` to the
//! build's message log and, if the `file` parameter is set, appends the same
//! line to that file. `file` is a minijinja template rendered against the
//! trigger context (`hook`, `build`, `project`), so one file per project is
//! `file = "/var/log/greetings/{{ project.name }}.log"`.
//!
//! ```toml
//! [plugins.success_triggers.hello]
//! library = "template"
//! greeting = "hello"
//! file = "/tmp/{{ project.name }}-greetings.log"
//! ```
//!
//! What every plugin does, shown here:
//! * read its parameters in `new` with [`params::parse`] into a struct, so
//!   each error names the parameter and a bad setting stops the server at
//!   start-up rather than failing builds;
//! * report progress through the [`Host`] and failures as `Err(one line)`;
//! * export itself with [`export_plugin!`].

use std::fs::OpenOptions;
use std::io::Write as _;

use minijinja::{Environment, UndefinedBehavior};
use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::{self, Value};
use vespene_plugin_api::{export_plugin, params, plugin_name, Host, Kind, PluginResult, Trigger, TriggerContext};

/// The parameters this plugin takes; any other key is a configuration error
/// (`deny_unknown_fields`), and [`params::parse`] names the parameter in
/// every error.
#[derive(Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
struct Parameters {
    greeting: String,
    #[serde(default)]
    file: Option<String>,
}

/// The name the `file` template is stored under; it appears in render errors.
const FILE_TEMPLATE: &str = "file";

/// The `template` trigger.
#[derive(Debug)]
pub struct Greeter {
    greeting: String,
    /// The compiled `file` template and its text, when the parameter is set.
    file: Option<(Environment<'static>, String)>,
}

/// A template error in one line, quoting the failing part of `source` when
/// minijinja knows it ("undefined value" alone does not say which one).
fn describe(err: &minijinja::Error, source: &str) -> String {
    match err.range().and_then(|r| source.get(r)) {
        Some(at) if !at.trim().is_empty() => format!("{err} at `{at}`"),
        _ => err.to_string(),
    }
}

impl Greeter {
    /// The line written for one build.
    pub fn line(&self, context: &TriggerContext) -> String {
        format!("{} from build {} of {}", self.greeting, context.build.id, context.project.name)
    }

    /// The file to append to for one build, if the `file` parameter is set.
    pub fn file_path(&self, context: &TriggerContext) -> PluginResult<Option<String>> {
        let Some((env, source)) = &self.file else {
            return Ok(None);
        };
        let vars = serde_json::to_value(context).map_err(|e| e.to_string())?;
        env.get_template(FILE_TEMPLATE).and_then(|t| t.render(&vars)).map(Some).map_err(|e| {
            format!("cannot render parameter 'file' of the {} trigger: {}", plugin_name!(), describe(&e, source))
        })
    }
}

impl Trigger for Greeter {
    fn new(config: &Value) -> PluginResult<Self> {
        let Parameters { greeting, file } = params::parse(config, Kind::Trigger, plugin_name!())?;
        let file = match file {
            None => None,
            Some(path) => {
                let mut env = Environment::new();
                // A misspelt variable must fail, not write to a path with a hole in it.
                env.set_undefined_behavior(UndefinedBehavior::Strict);
                env.add_template_owned(FILE_TEMPLATE, path.clone())
                    .map_err(|e| format!("parameter 'file' is not a valid template: {}", describe(&e, &path)))?;
                Some((env, path))
            }
        };
        Ok(Greeter { greeting, file })
    }

    fn execute(&self, context: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
        let line = self.line(context);
        host.message(&line);
        if let Some(path) = self.file_path(context)? {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| format!("cannot open {path}: {e}"))?;
            // One write per line so concurrent builds do not interleave mid-line.
            file.write_all(format!("{line}\n").as_bytes()).map_err(|e| format!("cannot write to {path}: {e}"))?;
        }
        Ok(())
    }
}

export_plugin! {
    description: "Example trigger: greets each build, optionally into a file",
    trigger: Greeter,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_trigger_context, RecordingHost};
    use vespene_plugin_api::{plugin_name, PluginResult, TriggerContext};

    use super::Greeter;

    /// Builds the trigger from `config` and runs it once, as the server does.
    fn execute(config: Value, ctx: &TriggerContext, host: &RecordingHost) -> PluginResult<()> {
        testkit::trigger::<Greeter>(config)?.execute(ctx, host)
    }

    #[test]
    fn writes_the_greeting_to_the_message_log() {
        let host = RecordingHost::new();
        execute(json!({"greeting": "hello"}), &fake_trigger_context("success"), &host).unwrap();
        assert_eq!(host.messages(), vec!["hello from build 42 of demo".to_string()]);
        assert!(host.outputs().is_empty());
    }

    #[test]
    fn appends_the_greeting_to_the_rendered_file() {
        let dir = tempfile::tempdir().unwrap();
        let template = format!("{}/{{{{ project.name }}}}-{{{{ hook }}}}.log", dir.path().display());
        let cfg = json!({"greeting": "hi", "file": template});
        let host = RecordingHost::new();
        let mut ctx = fake_trigger_context("failure");

        execute(cfg.clone(), &ctx, &host).unwrap();
        ctx.build.id = 43;
        execute(cfg, &ctx, &host).unwrap();

        let written = std::fs::read_to_string(dir.path().join("demo-failure.log")).unwrap();
        assert_eq!(written, "hi from build 42 of demo\nhi from build 43 of demo\n");
        assert_eq!(host.messages().len(), 2);
    }

    #[test]
    fn an_unwritable_file_fails_the_trigger() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = json!({
            "greeting": "hi",
            "file": dir.path().join("missing-dir/x.log"),
        });
        let err = execute(cfg, &fake_trigger_context("success"), &RecordingHost::new()).unwrap_err();
        assert!(err.starts_with("cannot open "), "{err}");
    }

    #[test]
    fn an_undefined_variable_in_file_fails_the_trigger() {
        let cfg = json!({"greeting": "hi", "file": "/tmp/{{ build.nope }}.log"});
        let err = execute(cfg, &fake_trigger_context("success"), &RecordingHost::new()).unwrap_err();
        assert!(err.starts_with("cannot render parameter 'file'"), "{err}");
        assert!(err.ends_with(" at `build.nope`"), "{err}");
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let cases = [
            (json!({}), format!("parameter 'greeting' of trigger plugin {name} is required")),
            (Value::Null, format!("parameter 'greeting' of trigger plugin {name} is required")),
            (
                json!({"greeting": 1}),
                format!("parameter 'greeting' of trigger plugin {name}: invalid type: integer `1`, expected a string"),
            ),
            (
                json!({"greeting": "hi", "file": 1}),
                format!("parameter 'file' of trigger plugin {name}: invalid type: integer `1`, expected a string"),
            ),
            (
                json!({"greeting": "hi", "greting": "x"}),
                format!("unknown parameter 'greting' for trigger plugin {name}"),
            ),
            (json!([]), format!("the parameters of trigger plugin {name} must be a table, not []")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::trigger::<Greeter>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
        let err = testkit::trigger::<Greeter>(json!({"greeting": "hi", "file": "/tmp/{% if %}"})).err().unwrap();
        assert!(err.starts_with("parameter 'file' is not a valid template: "), "{err}");
    }
}
