//! A plugin as a third party wrote it against interface 1.0: a trigger that
//! writes a marker file, an output plugin that tags lines, and an
//! authorization policy that knows only the 1.0 actions. The current server
//! must load and run them, even though its interface has since gained
//! methods, a plugin kind and an authorization action.

use vespene_plugin_api::abi_stable::std_types::RVec;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::*;

pub struct Marker {
    file: String,
}

impl Trigger for Marker {
    fn new(config: &Value) -> PluginResult<Self> {
        let file = config.get("file").and_then(Value::as_str).ok_or("parameter 'file' (a path) is required")?;
        Ok(Marker { file: file.to_string() })
    }

    fn execute(&self, context: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
        host.message("compat 1.0 trigger ran");
        std::fs::write(&self.file, format!("{} {}\n", context.hook, context.project.name)).map_err(|e| e.to_string())
    }
}

pub struct Tagger;

impl Output for Tagger {
    fn new(_config: &Value) -> PluginResult<Self> {
        Ok(Tagger)
    }

    fn filter(&self, _info: &BatchInfo, lines: &mut RVec<OutputLine>) -> PluginResult<()> {
        for line in lines.iter_mut() {
            line.text = format!("[1.0] {}", line.text).into();
        }
        Ok(())
    }
}

/// A naive 1.0 policy: everything is allowed but editing objects of one
/// kind, which only their creator (and superusers) may do. It allows actions
/// it has never heard of, as many plugins written before `use` do.
pub struct LockedKind {
    kind: String,
}

impl Authorization for LockedKind {
    fn new(config: &Value) -> PluginResult<Self> {
        let kind = config.get("locked_kind").and_then(Value::as_str).ok_or("parameter 'locked_kind' is required")?;
        Ok(LockedKind { kind: kind.to_string() })
    }

    fn check(&self, request: &AccessRequest) -> PluginResult<bool> {
        let Some(user) = &request.user else { return Ok(false) };
        if user.superuser || request.action != "edit" || request.kind != self.kind {
            return Ok(true);
        }
        let creator = request.object.as_ref().and_then(|o| o.get("created_by")).and_then(Value::as_i64);
        Ok(creator == Some(user.id))
    }
}

export_plugin! {
    name: "compat",
    description: "Built against the frozen 1.0 interface",
    trigger: Marker,
    output: Tagger,
    authorization: LockedKind,
}
