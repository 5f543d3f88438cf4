//! An example **isolation** plugin: runs the build's launch script with a
//! shell, directly on the worker, through the host's command runner.
//!
//! The host's runner streams the script's output into the build log live,
//! captures `vespene/set` lines, and kills the script's whole process group
//! when the build is stopped or times out; this plugin only says what to run:
//! `<shell> <build_root>/<launch_script>` in the build root, with the build's
//! environment plus the configured `extra_env`, under the build's time limit.
//! It answers the script's exit code, and fails with `build was cancelled`
//! when the build was stopped.
//!
//! Running builds unisolated is what the shipped `shell` isolation does;
//! this example adds a configurable shell and environment. To isolate for
//! real, change the command: e.g. `["sudo", "-Hnu", user, shell, script]`, or
//! `["docker", "run", "--rm", "-v", root:root, "-w", root, image, shell, script]`
//! with the image from `context.project.container_base_image`.
//!
//! ```toml
//! [plugins.isolation.shell]
//! library = "template"
//! shell = "/bin/bash"                              # optional, default /bin/sh
//! extra_env = { LANG = "C.UTF-8", CI = "true" }   # optional
//! ```
//!
//! A worker pool then uses it with `isolation = "shell"` (the entry's name).
//! The build's own environment wins over `extra_env`: it holds the variables
//! the build must see, which a setting cannot override.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, plugin_name, CommandRequest, Host, Isolation, IsolationContext, Kind, PluginResult,
    StreamName,
};

/// The example isolation plugin: the launch script under a shell, unisolated.
/// Its parameters are read straight into it.
#[derive(Debug, Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
pub struct ShellIsolation {
    /// The interpreter the script is handed to (default `/bin/sh`).
    #[serde(default = "default_shell")]
    shell: String,
    /// Variables added to the build's environment (which wins on a clash).
    #[serde(default)]
    extra_env: BTreeMap<String, String>,
}

/// The default of `shell`.
fn default_shell() -> String {
    "/bin/sh".to_string()
}

impl ShellIsolation {
    /// The command that runs one build's script.
    pub fn command(&self, context: &IsolationContext) -> PluginResult<CommandRequest> {
        if context.build_root.is_empty() {
            return Err("the build has no build root".to_string());
        }
        let script = Path::new(&context.launch_script);
        // A file name inside the build root, not a way out of it.
        if context.launch_script.is_empty() || !script.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(format!("launch script '{}' is not a file name inside the build root", context.launch_script));
        }
        let path = Path::new(&context.build_root).join(script);
        if !path.is_file() {
            return Err(format!("launch script {} does not exist", path.display()));
        }
        let mut env = self.extra_env.clone();
        env.extend(context.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(CommandRequest {
            cwd: Some(context.build_root.clone()),
            env,
            timeout_seconds: context.timeout_seconds,
            stream: StreamName::Output,
            ..CommandRequest::argv([self.shell.clone(), path.to_string_lossy().into_owned()])
        })
    }
}

impl Isolation for ShellIsolation {
    fn new(config: &Value) -> PluginResult<Self> {
        let isolation: ShellIsolation = params::parse(config, Kind::Isolation, plugin_name!())?;
        if !Path::new(&isolation.shell).is_absolute() {
            return Err(format!("parameter 'shell' must be an absolute path, not {:?}", isolation.shell));
        }
        if let Some(name) = isolation.extra_env.keys().find(|name| name.is_empty() || name.contains('=')) {
            return Err(format!("parameter 'extra_env' has an invalid variable name '{name}'"));
        }
        Ok(isolation)
    }

    fn execute(&self, context: &IsolationContext, host: &Host<'_>) -> PluginResult<i32> {
        // The runner logs the command line to the message log itself.
        let outcome = host.run(&self.command(context)?)?;
        // A stopped script exits non-zero too: report the cancel, which is the cause.
        if outcome.cancelled {
            return Err("build was cancelled".to_string());
        }
        Ok(outcome.exit_code)
    }
}

export_plugin! {
    description: "Example isolation: runs the launch script with a shell in the build root",
    isolation: ShellIsolation,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
    use vespene_plugin_api::{plugin_name, IsolationContext, PluginResult};

    use super::ShellIsolation;

    const SCRIPT: &str =
        "#!/bin/sh\necho \"in $(pwd)\"\necho \"greeting=$GREETING build=$BUILD_ID\"\necho oops >&2\nexit 3\n";

    /// A build root holding `vespene_launch.sh`, and its context.
    fn build_root(script: &str) -> (tempfile::TempDir, IsolationContext) {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("vespene_launch.sh"), script).unwrap();
        let ctx = IsolationContext {
            build: fake_build(),
            project: fake_project(),
            build_root: root.path().to_string_lossy().into_owned(),
            launch_script: "vespene_launch.sh".to_string(),
            timeout_seconds: Some(60),
            env: [("BUILD_ID".to_string(), "42".to_string())].into(),
            ..Default::default()
        };
        (root, ctx)
    }

    fn execute(config: Value, ctx: &IsolationContext, host: &RecordingHost) -> PluginResult<i32> {
        testkit::isolation::<ShellIsolation>(config)?.execute(ctx, host)
    }

    #[test]
    fn runs_the_script_in_the_build_root_and_answers_its_exit_code() {
        let (root, ctx) = build_root(SCRIPT);
        let host = RecordingHost::new();

        let code = execute(json!({"extra_env": {"GREETING": "hi"}}), &ctx, &host).unwrap();

        assert_eq!(code, 3);
        let script = root.path().join("vespene_launch.sh");
        assert_eq!(host.messages(), [format!("running: /bin/sh {}", script.display())]);
        let pwd = fs::canonicalize(root.path()).unwrap();
        assert_eq!(host.outputs(), [format!("in {}", pwd.display()), "greeting=hi build=42".into(), "oops".into()]);
    }

    #[test]
    fn the_builds_environment_wins_over_extra_env() {
        let (_root, ctx) = build_root(SCRIPT);
        let host = RecordingHost::new();
        execute(json!({"extra_env": {"GREETING": "hi", "BUILD_ID": "forged"}}), &ctx, &host).unwrap();
        assert_eq!(host.outputs()[1], "greeting=hi build=42");
    }

    #[test]
    fn a_configured_shell_runs_the_script() {
        let (_root, ctx) = build_root("echo $0 ran me; exit 0\n");
        let host = RecordingHost::new();
        let code = execute(json!({"shell": "/bin/sh"}), &ctx, &host).unwrap();
        assert_eq!(code, 0);
        assert!(host.outputs()[0].ends_with("vespene_launch.sh ran me"), "{:?}", host.outputs());

        let err = execute(json!({"shell": "/nonexistent/shell"}), &ctx, &RecordingHost::new()).unwrap_err();
        assert!(err.starts_with("cannot start /nonexistent/shell"), "{err}");
    }

    #[test]
    fn a_cancelled_build_is_an_error_not_an_exit_code() {
        let (_root, ctx) = build_root(SCRIPT);
        let host = RecordingHost::new();
        host.cancel();
        assert_eq!(execute(json!({}), &ctx, &host).unwrap_err(), "build was cancelled");
        assert!(host.outputs().is_empty(), "the script did not run");
    }

    #[test]
    fn the_script_must_be_a_file_in_the_build_root() {
        let (root, mut ctx) = build_root(SCRIPT);
        for script in ["../vespene_launch.sh", "/bin/true", ""] {
            ctx.launch_script = script.to_string();
            let err = execute(json!({}), &ctx, &RecordingHost::new()).unwrap_err();
            assert_eq!(err, format!("launch script '{script}' is not a file name inside the build root"));
        }
        ctx.launch_script = "missing.sh".to_string();
        let err = execute(json!({}), &ctx, &RecordingHost::new()).unwrap_err();
        assert_eq!(
            err,
            format!("launch script {} does not exist", Path::new(&ctx.build_root).join("missing.sh").display())
        );
        drop(root);
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let cases = [
            (
                json!({"extra_env": ["A=1"]}),
                format!("parameter 'extra_env' of isolation plugin {name}: invalid type: sequence, expected a map"),
            ),
            (
                json!({"extra_env": {"A": 1}}),
                format!(
                    "parameter 'extra_env.A' of isolation plugin {name}: invalid type: integer `1`, expected a string"
                ),
            ),
            (
                json!({"extra_env": {"A=B": "1"}}),
                "parameter 'extra_env' has an invalid variable name 'A=B'".to_string(),
            ),
            (json!({"shell": "sh"}), "parameter 'shell' must be an absolute path, not \"sh\"".to_string()),
            (json!({"env": {}}), format!("unknown parameter 'env' for isolation plugin {name}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::isolation::<ShellIsolation>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
