//! Test fixture, never shipped: a trigger, scm, isolation and output plugin
//! that fail every call on purpose, to check that a misbehaving plugin fails
//! the builds that use it and not the server or other builds.
//!
//! Parameters: `panic_in`: `"execute"` (the default) fails every call;
//! `"new"` panics while constructing. `fail_with`: `"panic"` (the default)
//! or `"error"` (returns an error instead of panicking).

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, BatchInfo, CheckoutResult, Host, Isolation, IsolationContext, Lines, Output, PluginResult, Scm,
    ScmContext, Trigger, TriggerContext,
};

/// The panic message the server's tests look for.
pub const MESSAGE: &str = "panicky plugin panicked on purpose";

/// The error message of `fail_with = "error"`.
pub const ERROR: &str = "panicky plugin failed on purpose";

/// How every call fails.
#[derive(Clone, Copy)]
pub enum Failure {
    Panic,
    Error,
}

impl Failure {
    fn from_config(config: &Value) -> PluginResult<Self> {
        match config.get("panic_in").map(|v| v.as_str()) {
            None | Some(Some("execute")) => {}
            Some(Some("new")) => panic!("{MESSAGE}"),
            Some(other) => return Err(format!("parameter 'panic_in' must be \"new\" or \"execute\", not {other:?}")),
        }
        match config.get("fail_with").map(|v| v.as_str()) {
            None | Some(Some("panic")) => Ok(Failure::Panic),
            Some(Some("error")) => Ok(Failure::Error),
            Some(other) => Err(format!("parameter 'fail_with' must be \"panic\" or \"error\", not {other:?}")),
        }
    }

    fn fail<T>(self) -> PluginResult<T> {
        match self {
            Failure::Panic => panic!("{MESSAGE}"),
            Failure::Error => Err(ERROR.into()),
        }
    }
}

/// A trigger whose `execute` fails.
pub struct PanickyTrigger(Failure);

impl Trigger for PanickyTrigger {
    fn new(config: &Value) -> PluginResult<Self> {
        Failure::from_config(config).map(PanickyTrigger)
    }

    fn execute(&self, _context: &TriggerContext, _host: &Host<'_>) -> PluginResult<()> {
        self.0.fail()
    }
}

/// An scm plugin whose `checkout` fails.
pub struct PanickyScm(Failure);

impl Scm for PanickyScm {
    fn new(config: &Value) -> PluginResult<Self> {
        Failure::from_config(config).map(PanickyScm)
    }

    fn checkout(&self, _context: &ScmContext, _host: &Host<'_>) -> PluginResult<CheckoutResult> {
        self.0.fail()
    }
}

/// An isolation plugin whose `execute` fails.
pub struct PanickyIsolation(Failure);

impl Isolation for PanickyIsolation {
    fn new(config: &Value) -> PluginResult<Self> {
        Failure::from_config(config).map(PanickyIsolation)
    }

    fn execute(&self, _context: &IsolationContext, _host: &Host<'_>) -> PluginResult<i32> {
        self.0.fail()
    }
}

/// An output plugin whose `filter` fails.
pub struct PanickyOutput(Failure);

impl Output for PanickyOutput {
    fn new(config: &Value) -> PluginResult<Self> {
        Failure::from_config(config).map(PanickyOutput)
    }

    fn filter(&self, _info: &BatchInfo, _lines: &mut Lines) -> PluginResult<()> {
        self.0.fail()
    }
}

export_plugin! {
    name: "panicky",
    description: "Test fixture that fails every call on purpose",
    trigger: PanickyTrigger,
    scm: PanickyScm,
    isolation: PanickyIsolation,
    output: PanickyOutput,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::testkit::{
        fake_lines, fake_trigger_context, output_from, to_json, trigger_from, RecordingHost,
    };

    use super::*;

    #[test]
    fn panics_become_errors_at_the_boundary() {
        let trigger = trigger_from::<PanickyTrigger>("{}").unwrap();
        let host = RecordingHost::new();
        let err =
            trigger.execute(to_json(&fake_trigger_context("pre")).as_rstr(), &host.host()).into_result().unwrap_err();
        assert!(err.as_str().starts_with(&format!("plugin panicked in execute: {MESSAGE} (at ")), "{err}");

        let output = output_from::<PanickyOutput>(r#"{"panic_in": "execute"}"#).unwrap();
        let (info, lines) = fake_lines(&["x"], 0);
        let err = output.filter(info, lines).into_result().unwrap_err();
        assert!(err.as_str().starts_with(&format!("plugin panicked in filter: {MESSAGE} (at ")), "{err}");

        let trigger = trigger_from::<PanickyTrigger>(r#"{"fail_with": "error"}"#).unwrap();
        let err =
            trigger.execute(to_json(&fake_trigger_context("pre")).as_rstr(), &host.host()).into_result().unwrap_err();
        assert_eq!(err.as_str(), ERROR);
        let err = trigger_from::<PanickyTrigger>(r#"{"fail_with": "maybe"}"#).err().unwrap();
        assert!(err.contains("'fail_with'"), "{err}");

        let err = trigger_from::<PanickyTrigger>(r#"{"panic_in": "new"}"#).err().unwrap();
        assert!(err.starts_with(&format!("plugin panicked in new: {MESSAGE} (at ")), "{err}");
        let err = output_from::<PanickyOutput>(r#"{"panic_in": "new"}"#).err().unwrap();
        assert!(err.starts_with(&format!("plugin panicked in new: {MESSAGE} (at ")), "{err}");
    }
}
