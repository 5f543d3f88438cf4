//! An example **autoscaler** plugin: sizes a worker pool after its queue and
//! applies the size by running a shell command.
//!
//! The plan asks for one worker per `per_worker` builds queued or running,
//! rounded up and kept between `min` and `max`:
//! `size = clamp(ceil((queued + running) / per_worker), min, max)`.
//! To apply it, `command` runs through the host with `/bin/sh -c`, its output
//! going to the message log, after `{size}` is replaced by the planned size
//! and `{pool}` by the pool's name, quoted for the shell (so write `{pool}`,
//! not `'{pool}'`). The command also sees `VESPENE_POOL`,
//! `VESPENE_POOL_SIZE` and `VESPENE_POOL_WORKERS` (the workers alive now) in
//! its environment. A non-zero exit fails the scaling.
//!
//! ```toml
//! [plugins.autoscalers.cloud]
//! library = "template"
//! min = 1            # optional, default 0
//! max = 8
//! per_worker = 2     # optional, default 1
//! command = "/usr/local/bin/resize-workers --group {pool} --count {size}"
//! ```
//!
//! The command runs at every scaling round, even when the size is unchanged,
//! so it must be idempotent: "make it N", not "add N". To adapt the plugin,
//! change the formula in [`Autoscaler::plan`] (the status has the pool, its
//! queued and running builds and its live workers), or call a cloud API in
//! [`Autoscaler::scale`] instead of running a command.

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, plugin_name, Autoscaler, CommandRequest, Host, Kind, PluginResult, PoolStatus, ScalePlan,
    StreamName,
};

/// The example autoscaler: queue-proportional, applied by a command. Its
/// parameters are read straight into it.
#[derive(Debug, Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
pub struct CommandAutoscaler {
    /// The fewest workers (default 0).
    #[serde(default)]
    min: u64,
    /// The most workers.
    max: u64,
    /// Builds per worker (default 1).
    #[serde(default = "one")]
    per_worker: u64,
    /// The command applying a size.
    command: String,
}

/// The default of `per_worker`.
fn one() -> u64 {
    1
}

/// `text` as one single-quoted shell word.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl CommandAutoscaler {
    /// The command line applying `size` to `pool`.
    pub fn command_line(&self, pool: &str, size: u64) -> String {
        // {size} first: a pool named "{size}" must stay a name.
        self.command.replace("{size}", &size.to_string()).replace("{pool}", &shell_quote(pool))
    }
}

impl Autoscaler for CommandAutoscaler {
    fn new(config: &Value) -> PluginResult<Self> {
        let scaler: CommandAutoscaler = params::parse(config, Kind::Autoscaler, plugin_name!())?;
        if scaler.max < scaler.min {
            return Err(format!("parameter 'max' ({}) must not be less than 'min' ({})", scaler.max, scaler.min));
        }
        if scaler.per_worker == 0 {
            return Err("parameter 'per_worker' must be at least 1".to_string());
        }
        if scaler.command.trim().is_empty() {
            return Err("parameter 'command' (a shell command line) must not be empty".to_string());
        }
        Ok(scaler)
    }

    fn plan(&self, status: &PoolStatus) -> PluginResult<ScalePlan> {
        let (queued, running) = (status.queued, status.running);
        let wanted = queued.saturating_add(running).div_ceil(self.per_worker);
        let size = wanted.clamp(self.min, self.max);
        let mut reason = format!(
            "{queued} queued and {running} running builds at {} per worker need {wanted} workers",
            self.per_worker
        );
        if size > wanted {
            reason.push_str(&format!(", raised to the minimum of {}", self.min));
        } else if size < wanted {
            reason.push_str(&format!(", capped at the maximum of {}", self.max));
        }
        reason.push_str(&format!("; {} alive now", status.workers));
        Ok(ScalePlan { size, reason })
    }

    fn scale(&self, status: &PoolStatus, plan: &ScalePlan, host: &Host<'_>) -> PluginResult<()> {
        let pool = &status.pool.name;
        if !(self.min..=self.max).contains(&plan.size) {
            return Err(format!(
                "refusing to scale pool {pool} to {} workers: outside {}..={}",
                plan.size, self.min, self.max
            ));
        }
        host.message(&format!("scaling pool {pool} from {} to {} workers: {}", status.workers, plan.size, plan.reason));
        let env = [
            ("VESPENE_POOL", pool.clone()),
            ("VESPENE_POOL_SIZE", plan.size.to_string()),
            ("VESPENE_POOL_WORKERS", status.workers.to_string()),
        ];
        let outcome = host.run(&CommandRequest {
            stream: StreamName::Message,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..CommandRequest::shell(self.command_line(pool, plan.size))
        })?;
        if outcome.cancelled {
            return Err(format!("scaling pool {pool} was cancelled"));
        }
        if outcome.exit_code != 0 {
            return Err(format!(
                "scale command for pool {pool} failed with exit code {}: {}",
                outcome.exit_code, outcome.last_line
            ));
        }
        Ok(())
    }
}

export_plugin! {
    description: "Example autoscaler: one worker per N builds, applied by a shell command",
    autoscaler: CommandAutoscaler,
}

#[cfg(test)]
mod tests {
    use std::fs;

    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, RecordingHost};
    use vespene_plugin_api::{plugin_name, PluginResult, PoolInfo, PoolStatus, ScalePlan};

    use super::{shell_quote, CommandAutoscaler};

    fn status(pool: &str, queued: u64, running: u64, workers: u64) -> PoolStatus {
        PoolStatus {
            pool: PoolInfo { id: 1, name: pool.into(), ..Default::default() },
            queued,
            running,
            workers,
            ..Default::default()
        }
    }

    fn plan(config: &Value, status: &PoolStatus) -> ScalePlan {
        testkit::autoscaler::<CommandAutoscaler>(config.clone()).unwrap().plan(status).unwrap()
    }

    fn scale(config: &Value, status: &PoolStatus, plan: &ScalePlan, host: &RecordingHost) -> PluginResult<()> {
        testkit::autoscaler::<CommandAutoscaler>(config.clone())?.scale(status, plan, host)
    }

    #[test]
    fn plans_one_worker_per_n_builds_within_bounds() {
        let cfg = &json!({"min": 1, "max": 5, "per_worker": 2, "command": "true"});
        let sizes: Vec<u64> = [(0, 0), (1, 0), (3, 0), (2, 2), (5, 4), (20, 0)]
            .map(|(q, r)| plan(cfg, &status("p", q, r, 2)).size)
            .into();
        assert_eq!(sizes, [1, 1, 2, 2, 5, 5]);

        assert_eq!(
            plan(cfg, &status("p", 0, 0, 3)).reason,
            "0 queued and 0 running builds at 2 per worker need 0 workers, raised to the minimum of 1; 3 alive now"
        );
        assert_eq!(
            plan(cfg, &status("p", 3, 0, 1)).reason,
            "3 queued and 0 running builds at 2 per worker need 2 workers; 1 alive now"
        );
        assert_eq!(
            plan(cfg, &status("p", 15, 5, 5)).reason,
            "15 queued and 5 running builds at 2 per worker need 10 workers, capped at the maximum of 5; 5 alive now"
        );
    }

    #[test]
    fn defaults_are_no_minimum_and_one_build_per_worker() {
        let cfg = &json!({"max": 3, "command": "true"});
        assert_eq!(plan(cfg, &status("p", 0, 0, 1)).size, 0);
        assert_eq!(plan(cfg, &status("p", 1, 1, 1)).size, 2);
        assert_eq!(plan(cfg, &status("p", u64::MAX, u64::MAX, 1)).size, 3);
    }

    #[test]
    fn scale_runs_the_command_with_size_and_quoted_pool() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cfg = json!({
            "max": 5,
            "command": format!("echo {{size}} {{pool}} $VESPENE_POOL_SIZE $VESPENE_POOL_WORKERS > {}", out.display()),
        });
        let host = RecordingHost::new();
        let status = status("it's $HOME {size}", 4, 0, 1);
        let plan = ScalePlan { size: 4, reason: "busy".into() };

        scale(&cfg, &status, &plan, &host).unwrap();

        assert_eq!(fs::read_to_string(&out).unwrap(), "4 it's $HOME {size} 4 1\n");
        assert_eq!(host.messages()[0], "scaling pool it's $HOME {size} from 1 to 4 workers: busy");
    }

    #[test]
    fn a_failing_command_fails_the_scaling() {
        let cfg = &json!({"max": 5, "command": "echo no quota left; exit 7"});
        let err =
            scale(cfg, &status("gpu", 1, 0, 0), &ScalePlan { size: 1, reason: String::new() }, &RecordingHost::new())
                .unwrap_err();
        assert_eq!(err, "scale command for pool gpu failed with exit code 7: no quota left");
    }

    #[test]
    fn plans_outside_the_bounds_and_cancelled_builds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let cfg = json!({"min": 1, "max": 5, "command": format!("touch {}", marker.display())});
        let host = RecordingHost::new();
        for size in [0, 6] {
            let err =
                scale(&cfg, &status("gpu", 0, 0, 0), &ScalePlan { size, reason: String::new() }, &host).unwrap_err();
            assert_eq!(err, format!("refusing to scale pool gpu to {size} workers: outside 1..=5"));
        }
        host.cancel();
        let err =
            scale(&cfg, &status("gpu", 0, 0, 0), &ScalePlan { size: 2, reason: String::new() }, &host).unwrap_err();
        assert_eq!(err, "scaling pool gpu was cancelled");
        assert!(!marker.exists(), "no command ran");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let invalid = |parameter: &str, problem: &str| {
            format!("parameter '{parameter}' of autoscaler plugin {name}: invalid {problem}, expected u64")
        };
        let cases = [
            (json!({"command": "true"}), format!("parameter 'max' of autoscaler plugin {name} is required")),
            (json!({"max": -1, "command": "true"}), invalid("max", "value: integer `-1`")),
            (json!({"max": 2.5, "command": "true"}), invalid("max", "type: floating point `2.5`")),
            (json!({"min": "1", "max": 2, "command": "true"}), invalid("min", "type: string \"1\"")),
            (
                json!({"min": 3, "max": 2, "command": "true"}),
                "parameter 'max' (2) must not be less than 'min' (3)".to_string(),
            ),
            (
                json!({"max": 2, "per_worker": 0, "command": "true"}),
                "parameter 'per_worker' must be at least 1".to_string(),
            ),
            (json!({"max": 2}), format!("parameter 'command' of autoscaler plugin {name} is required")),
            (
                json!({"max": 2, "command": " "}),
                "parameter 'command' (a shell command line) must not be empty".to_string(),
            ),
            (
                json!({"max": 2, "command": ["true"]}),
                format!("parameter 'command' of autoscaler plugin {name}: invalid type: sequence, expected a string"),
            ),
            (
                json!({"max": 2, "command": "true", "pool": "x"}),
                format!("unknown parameter 'pool' for autoscaler plugin {name}"),
            ),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::autoscaler::<CommandAutoscaler>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
