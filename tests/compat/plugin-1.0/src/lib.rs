//! A plugin as a third party wrote it against interface 1.0: a trigger that
//! writes a marker file and an output plugin that tags lines. The current
//! server must load and run both, even though its interface has since gained
//! methods and a plugin kind.

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

export_plugin! {
    name: "compat",
    description: "Built against the frozen 1.0 interface",
    trigger: Marker,
    output: Tagger,
}
