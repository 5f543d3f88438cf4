//! Test fixture, never shipped: a trigger that sets a build output variable
//! through the host callback `set_variable` (interface 1.4). In the current
//! server the variable is stored with the build; under a server older than
//! 1.4 the callback is refused with an error, and the trigger says so and
//! carries on. It also writes its `export_plugin!` with the kind first and no
//! name, which then comes from the library (`set-variable`).
//!
//! Parameters: `name` and `value` of the variable.

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, plugin_name, Host, Kind, PluginResult, Trigger, TriggerContext};

/// The trigger, and its parameters.
#[derive(Debug, Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
pub struct SetVariable {
    name: String,
    value: String,
}

impl Trigger for SetVariable {
    fn new(config: &Value) -> PluginResult<Self> {
        params::parse(config, Kind::Trigger, plugin_name!())
    }

    fn execute(&self, _context: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
        match host.set_variable(&self.name, &self.value) {
            Ok(()) => host.message(&format!("{} set {}", plugin_name!(), self.name)),
            // An older server: the build goes on without the variable.
            Err(e) => host.message(&format!("{} could not set {}: {e}", plugin_name!(), self.name)),
        }
        Ok(())
    }
}

export_plugin! {
    trigger: SetVariable,
    description: "Test fixture: sets a build output variable through the host",
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{self, fake_trigger_context, RecordingHost};

    use super::SetVariable;

    #[test]
    fn sets_the_variable_through_the_host() {
        let host = RecordingHost::new();
        let trigger = testkit::trigger::<SetVariable>(json!({"name": "image", "value": "app:1.2"})).unwrap();
        trigger.execute(&fake_trigger_context("pre"), &host).unwrap();
        assert_eq!(host.variables()["image"], "app:1.2");
        assert_eq!(host.messages(), ["set-variable set image"]);
    }

    #[test]
    fn a_name_the_host_refuses_is_reported_and_the_build_goes_on() {
        let host = RecordingHost::new();
        let trigger = testkit::trigger::<SetVariable>(json!({"name": "two words", "value": "x"})).unwrap();
        trigger.execute(&fake_trigger_context("pre"), &host).unwrap();
        assert!(host.variables().is_empty());
        assert!(host.messages()[0].starts_with("set-variable could not set two words: output variable name"));
    }

    #[test]
    fn its_name_comes_from_the_library() {
        let err = testkit::trigger::<SetVariable>(json!({"name": "x"})).err().unwrap();
        assert_eq!(err, "parameter 'value' of trigger plugin set-variable is required");
    }
}
