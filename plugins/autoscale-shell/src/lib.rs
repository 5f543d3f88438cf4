//! The `autoscale-shell` autoscaler: the original Vespene's stock planner,
//! with its weights applied, and its shell executor, with the command a
//! template.
//!
//! **Plan.** From the pool's settings (sent by the server in
//! `PoolStatus.extra`, edited on the pool):
//!
//! ```text
//! demand = running × running_weight + queued × queued_weight
//! size   = ceil(demand × multiplier) + excess, kept within minimum..=maximum
//! ```
//!
//! (The original computed `ceil((queued + running) × multiplier) + excess` and
//! left both weights unused.)
//!
//! **Scale.** Renders `command` (a minijinja template) with `worker_pool`
//! (the pool's name), `size` (the planned size), `queued_size`,
//! `running_size` and `workers` (the pool's own workers alive now), and runs
//! it with `/bin/sh -c` on every decision: the command is declarative ("the
//! pool should have `size` workers"), so running it again is harmless and
//! repairs drift. Every `{{ ... }}` value is shell-quoted; the command also
//! finds `VESPENE_POOL`, `VESPENE_SIZE`, `VESPENE_QUEUED`, `VESPENE_RUNNING`
//! and `VESPENE_WORKERS` in its environment. A non-zero exit fails the
//! decision, with the exit code and the command's last line.
//!
//! The command exists only here, in the settings files: the API and the UI
//! choose an autoscaler for a pool by name but can never set its command.
//!
//! ```toml
//! [plugins.autoscalers.cloud]
//! library = "autoscale-shell"
//! command = "/usr/local/bin/resize-pool {{ worker_pool }} {{ size }}"
//! timeout_seconds = 300    # optional, default 600
//! cwd = "/var/lib/vespene" # optional, default: the server's temporary directory
//! ```

use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Output, State, UndefinedBehavior, Value as JinjaValue};
use vespene_plugin_api::serde_json::{json, Map, Value};
use vespene_plugin_api::{
    export_plugin, params, Autoscaler, CommandRequest, Host, Kind, PluginResult, PoolStatus, ScalePlan, StreamName,
};

/// The name the plugin reports and its errors use.
const NAME: &str = "autoscale-shell";
/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["command", "timeout_seconds", "cwd"];
/// The compiled command's name in the template environment.
const TEMPLATE: &str = "command";

/// The stock planner, shared with every autoscaler (one build per worker here).
pub use vespene_plugin_api::planner::PlannerSettings;

/// The stock plan for one build per worker.
pub fn stock_plan(status: &PoolStatus, settings: &PlannerSettings) -> ScalePlan {
    vespene_plugin_api::planner::stock_plan(status, settings, 1)
}

/// The `autoscale-shell` autoscaler.
pub struct ShellAutoscaler {
    /// Holds the compiled command template.
    env: Environment<'static>,
    /// The template's text, for error messages.
    source: String,
    timeout_seconds: u64,
    cwd: Option<String>,
}

/// A template error in one line, quoting the failing part of `source`.
fn describe(err: &Error, source: &str) -> String {
    match err.range().and_then(|r| source.get(r)) {
        Some(at) if !at.trim().is_empty() => format!("{err} at `{at}`"),
        _ => err.to_string(),
    }
}

/// Writes what a `{{ ... }}` yields as one shell word (numbers as they are).
fn quoting_formatter(out: &mut Output, state: &State, value: &JinjaValue) -> Result<(), Error> {
    if value.is_undefined() || value.is_none() || matches!(value.kind(), ValueKind::Number | ValueKind::Bool) {
        return minijinja::escape_formatter(out, state, value);
    }
    let quoted =
        vespene_plugin_api::shell::quote(&value.to_string()).map_err(|e| Error::new(ErrorKind::InvalidOperation, e))?;
    out.write_str(&quoted).map_err(Error::from)
}

impl ShellAutoscaler {
    /// The command for one decision.
    pub fn render(&self, status: &PoolStatus, plan: &ScalePlan) -> PluginResult<String> {
        let vars = json!({
            "worker_pool": status.pool.name,
            "size": plan.size,
            "queued_size": status.queued,
            "running_size": status.running,
            "workers": status.workers,
        });
        self.env
            .get_template(TEMPLATE)
            .and_then(|t| t.render(&vars))
            .map_err(|e| format!("cannot render the command of autoscaler {NAME}: {}", describe(&e, &self.source)))
    }
}

/// An optional positive whole-number parameter.
fn positive(params: &Map<String, Value>, name: &str, default: u64) -> PluginResult<u64> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("parameter '{name}' must be a whole number above 0, got {v}")),
    }
}

impl Autoscaler for ShellAutoscaler {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Autoscaler, NAME, PARAMETERS)?;
        let command = match params.get("command") {
            Some(Value::String(c)) if !c.trim().is_empty() => c.clone(),
            Some(Value::String(_)) => return Err("parameter 'command' must not be empty".into()),
            Some(other) => return Err(format!("parameter 'command' must be a string, got {other}")),
            None => return Err("parameter 'command' (a string) is required".into()),
        };
        let timeout_seconds = positive(params, "timeout_seconds", 600)?;
        let cwd = match params.get("cwd") {
            None => None,
            Some(Value::String(c)) if c.starts_with('/') => Some(c.clone()),
            Some(other) => return Err(format!("parameter 'cwd' must be an absolute path, got {other}")),
        };
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_formatter(quoting_formatter);
        // Compiling here turns a syntax error into a start-up error.
        env.add_template_owned(TEMPLATE, command.clone())
            .map_err(|e| format!("parameter 'command' is not a valid template: {}", describe(&e, &command)))?;
        Ok(ShellAutoscaler { env, source: command, timeout_seconds, cwd })
    }

    fn plan(&self, status: &PoolStatus) -> PluginResult<ScalePlan> {
        Ok(stock_plan(status, &PlannerSettings::from_status(status)?))
    }

    fn scale(&self, status: &PoolStatus, plan: &ScalePlan, host: &Host<'_>) -> PluginResult<()> {
        let pool = &status.pool.name;
        let rendered = self.render(status, plan)?;
        host.message(&format!("{NAME}: pool {pool}: {} -> {} workers ({})", status.workers, plan.size, plan.reason));
        let mut request = CommandRequest::shell(rendered);
        for (key, value) in [
            ("VESPENE_POOL", pool.clone()),
            ("VESPENE_SIZE", plan.size.to_string()),
            ("VESPENE_QUEUED", status.queued.to_string()),
            ("VESPENE_RUNNING", status.running.to_string()),
            ("VESPENE_WORKERS", status.workers.to_string()),
        ] {
            request.env.insert(key.to_string(), value);
        }
        request.stream = StreamName::Message;
        request.timeout_seconds = Some(self.timeout_seconds);
        request.cwd = self.cwd.clone();
        let outcome = host.run(&request)?;
        if outcome.cancelled {
            return Err(format!("scaling pool {pool} to {} was stopped", plan.size));
        }
        if outcome.exit_code != 0 {
            return Err(format!(
                "scaling pool {pool} to {} failed with exit code {}: {}",
                plan.size, outcome.exit_code, outcome.last_line
            ));
        }
        Ok(())
    }
}

export_plugin! {
    name: "autoscale-shell",
    description: "Autoscaler: the stock planner (weighted demand, multiplier, excess, bounds) applied by a templated shell command",
    autoscaler: ShellAutoscaler,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{self, json};
    use vespene_plugin_api::testkit::{self, RecordingHost};
    use vespene_plugin_api::{PoolInfo, PoolStatus, ScalePlan};

    use super::ShellAutoscaler;

    fn status(queued: u64, running: u64, workers: u64, settings: serde_json::Value) -> PoolStatus {
        PoolStatus {
            pool: PoolInfo { id: 1, name: "general builds".into(), ..Default::default() },
            queued,
            running,
            workers,
            extra: settings.as_object().cloned().unwrap_or_default(),
        }
    }

    fn plan(config: serde_json::Value, s: &PoolStatus) -> Result<ScalePlan, String> {
        testkit::autoscaler::<ShellAutoscaler>(config)?.plan(s)
    }

    /// A configuration whose command does nothing: these tests plan only.
    fn runs_true() -> serde_json::Value {
        json!({"command": "true"})
    }

    #[test]
    fn the_weights_are_applied() {
        let weights = json!({ "running_weight": 0.5, "queued_weight": 2.0, "maximum": 100 });
        // 4 running × 0.5 + 3 queued × 2 = 8 (the original would have said 7).
        assert_eq!(plan(runs_true(), &status(3, 4, 0, weights.clone())).unwrap().size, 8);
        let none_for_queued = json!({ "queued_weight": 0.0, "maximum": 100 });
        assert_eq!(plan(runs_true(), &status(30, 2, 0, none_for_queued)).unwrap().size, 2);
    }

    #[test]
    fn multiplier_excess_and_bounds() {
        let s = json!({ "multiplier": 0.5, "excess": 1, "minimum": 2, "maximum": 6 });
        // ceil(5 × 0.5) + 1 = 4
        let p = plan(runs_true(), &status(5, 0, 0, s.clone())).unwrap();
        assert_eq!(p.size, 4);
        assert!(p.reason.contains("+ 1 excess = 4"), "{}", p.reason);
        assert_eq!(plan(runs_true(), &status(0, 0, 5, s.clone())).unwrap().size, 2, "never below the minimum");
        assert_eq!(plan(runs_true(), &status(100, 40, 1, s)).unwrap().size, 6, "never above the maximum");
        let negative = json!({ "excess": -3 });
        assert_eq!(plan(runs_true(), &status(1, 0, 0, negative)).unwrap().size, 0, "a negative excess stops at 0");
    }

    #[test]
    fn bad_pool_settings_name_the_field() {
        let err = plan(runs_true(), &status(1, 0, 0, json!({ "queued_weight": -1.0 }))).unwrap_err();
        assert_eq!(err, "pool setting 'queued_weight' must be a non-negative number, got -1.0");
        let err = plan(runs_true(), &status(1, 0, 0, json!({ "minimum": 5, "maximum": 2 }))).unwrap_err();
        assert_eq!(err, "pool setting 'minimum' (5) is greater than 'maximum' (2)");
    }

    #[test]
    fn the_command_is_rendered_quoted_and_run_with_the_sizes() {
        let config = json!({
            "command": "echo pool={{ worker_pool }} size={{ size }} queued={{ queued_size }} env=$VESPENE_SIZE"
        });
        let plugin = testkit::autoscaler::<ShellAutoscaler>(config).unwrap();
        let host = RecordingHost::new();
        let p = ScalePlan { size: 3, reason: "test".into() };
        let s = status(5, 1, 1, json!({}));
        plugin.scale(&s, &p, &host).unwrap();
        assert_eq!(host.messages().last().map(String::as_str), Some("pool=general builds size=3 queued=5 env=3"));
    }

    #[test]
    fn a_pool_name_cannot_inject_shell() {
        let config = json!({ "command": "echo {{ worker_pool }}" });
        let plugin = testkit::autoscaler::<ShellAutoscaler>(config).unwrap();
        let host = RecordingHost::new();
        let mut s = status(0, 0, 0, json!({}));
        s.pool.name = "x; echo injected".into();
        let p = ScalePlan { size: 0, reason: "test".into() };
        plugin.scale(&s, &p, &host).unwrap();
        assert_eq!(host.messages().last().map(String::as_str), Some("x; echo injected"));
    }

    #[test]
    fn a_failing_command_fails_the_decision() {
        let plugin = testkit::autoscaler::<ShellAutoscaler>(json!({"command": "echo quota exceeded; exit 2"})).unwrap();
        let host = RecordingHost::new();
        let p = ScalePlan { size: 3, reason: "test".into() };
        let err = plugin.scale(&status(5, 0, 1, json!({})), &p, &host).unwrap_err();
        assert_eq!(err, "scaling pool general builds to 3 failed with exit code 2: quota exceeded");
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let cases = [
            (json!({}), "parameter 'command' (a string) is required".to_string()),
            (json!({ "command": "" }), "parameter 'command' must not be empty".to_string()),
            (json!({ "command": 3 }), "parameter 'command' must be a string, got 3".to_string()),
            (
                json!({ "command": "x", "timeout_seconds": 0 }),
                "parameter 'timeout_seconds' must be a whole number above 0, got 0".to_string(),
            ),
            (
                json!({ "command": "x", "cwd": "tmp" }),
                "parameter 'cwd' must be an absolute path, got \"tmp\"".to_string(),
            ),
            (
                json!({ "command": "x", "planner": "stock" }),
                "unknown parameter 'planner' for autoscaler plugin autoscale-shell".to_string(),
            ),
        ];
        for (config, expected) in cases {
            let err = testkit::autoscaler::<ShellAutoscaler>(config.clone()).err().unwrap();
            assert!(err.starts_with(&expected), "{config}: {err}");
        }
        let err = testkit::autoscaler::<ShellAutoscaler>(json!({"command": "echo {{ size"})).err().unwrap();
        assert!(err.starts_with("parameter 'command' is not a valid template"), "{err}");
    }
}
