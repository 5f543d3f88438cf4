//! Test fixture, never shipped: a trigger and an output plugin that panic on
//! purpose, to check that a panic in a plugin fails one call and not the server.
//!
//! Parameter `panic_in`: `"execute"` (the default) panics in the trigger's
//! `execute` and the output's `filter`; `"new"` panics while constructing.

use vespene_plugin_api::abi_stable::std_types::RVec;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, BatchInfo, Host, Output, OutputLine, PluginResult, Trigger, TriggerContext};

/// The panic message the server's tests look for.
pub const MESSAGE: &str = "panicky plugin panicked on purpose";

/// Where to panic.
fn check_config(config: &Value) -> PluginResult<()> {
    match config.get("panic_in").map(|v| v.as_str()) {
        None | Some(Some("execute")) => Ok(()),
        Some(Some("new")) => panic!("{MESSAGE}"),
        Some(other) => Err(format!("parameter 'panic_in' must be \"new\" or \"execute\", not {other:?}")),
    }
}

/// A trigger whose `execute` panics.
pub struct PanickyTrigger;

impl Trigger for PanickyTrigger {
    fn new(config: &Value) -> PluginResult<Self> {
        check_config(config).map(|()| PanickyTrigger)
    }

    fn execute(&self, _context: &TriggerContext, _host: &Host<'_>) -> PluginResult<()> {
        panic!("{MESSAGE}")
    }
}

/// An output plugin whose `filter` panics.
pub struct PanickyOutput;

impl Output for PanickyOutput {
    fn new(config: &Value) -> PluginResult<Self> {
        check_config(config).map(|()| PanickyOutput)
    }

    fn filter(&self, _info: &BatchInfo, _lines: &mut RVec<OutputLine>) -> PluginResult<()> {
        panic!("{MESSAGE}")
    }
}

export_plugin! {
    name: "panicky",
    description: "Test fixture that panics on purpose",
    trigger: PanickyTrigger,
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

        let err = trigger_from::<PanickyTrigger>(r#"{"panic_in": "new"}"#).err().unwrap();
        assert!(err.starts_with(&format!("plugin panicked in new: {MESSAGE} (at ")), "{err}");
        let err = output_from::<PanickyOutput>(r#"{"panic_in": "new"}"#).err().unwrap();
        assert!(err.starts_with(&format!("plugin panicked in new: {MESSAGE} (at ")), "{err}");
    }
}
