//! `vespene plugins list | check | try`.

use std::path::Path;
use std::process::ExitCode;

use abi_stable::std_types::{RStr, RVec};
use vespene_plugin_api::abi::{BatchInfo, OutputLine, Stream};
use vespene_plugin_api::{Kind, TriggerContext};

use crate::plugins::{console::ConsoleHost, loader, provided_kinds, Instance, LoadedPlugin, Registry};

pub fn list(registry: &Registry, json: bool) -> anyhow::Result<()> {
    let rows = registry.summaries();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<20} {:<17} {:<10} {:<10} {:<10} LIBRARY", "NAME", "SECTION", "PLUGIN", "VERSION", "INTERFACE");
    for r in rows {
        let interface =
            if r.older_interface { format!("{} (older)", r.interface_version) } else { r.interface_version };
        println!("{:<20} {:<17} {:<10} {:<10} {:<10} {}", r.name, r.section, r.plugin, r.version, interface, r.library);
    }
    Ok(())
}

pub fn check(path: &Path, detail: bool) -> ExitCode {
    match loader::open_with_detail(path, detail) {
        Ok(lib) => {
            let kinds: Vec<&str> = provided_kinds(&lib.module).into_iter().map(Kind::name).collect();
            let older = if loader::built_on_older_minor(lib.info.interface_version.as_str()) {
                " (older minor version: still compatible)"
            } else {
                ""
            };
            println!("ok: {}", path.display());
            println!("name: {}", lib.info.name);
            println!("version: {}", lib.info.version);
            println!("description: {}", lib.info.description);
            println!("interface: {}{older}", lib.info.interface_version);
            println!("kinds: {}", kinds.join(", "));
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("error: {}: {reason}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// Calls a trigger or output plugin (`SECTION.NAME`), or every plugin of a
/// section in order (`SECTION`), `times` times. Each failure is reported and the
/// next call still runs, which is how an admin sees a misbehaving plugin.
pub fn try_entry(registry: &Registry, entry: &str, lines: &[String], times: u32) -> ExitCode {
    let (section, name) = match entry.split_once('.') {
        Some((s, n)) => (s, Some(n)),
        None => (entry, None),
    };
    let targets: Vec<&LoadedPlugin> =
        registry.all().iter().filter(|p| p.section.name() == section && name.is_none_or(|n| p.name == n)).collect();
    if targets.is_empty() {
        eprintln!(
            "error: no configured plugin '{entry}' (expected SECTION or SECTION.NAME, see `vespene plugins list`)"
        );
        return ExitCode::FAILURE;
    }
    let host = ConsoleHost::default();
    let mut failures = 0;
    for call in 1..=times {
        for plugin in &targets {
            let label = if targets.len() > 1 { format!("{}.{} ", plugin.section, plugin.name) } else { String::new() };
            match call_once(plugin, lines, &host) {
                Ok(out) => {
                    for line in out {
                        println!("{line}");
                    }
                    println!("{label}call {call}: ok");
                }
                Err(e) => {
                    failures += 1;
                    println!("{label}call {call}: error: {e}");
                }
            }
        }
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn call_once(plugin: &LoadedPlugin, lines: &[String], host: &ConsoleHost) -> Result<Vec<String>, String> {
    match &plugin.instance {
        Instance::Trigger(t) => {
            let ctx = serde_json::to_string(&sample_trigger_context(plugin.section.name())).expect("serializes");
            t.execute(RStr::from(ctx.as_str()), &host.host()).into_result().map(|()| Vec::new()).map_err(Into::into)
        }
        Instance::Output(o) => {
            let now = now_ms();
            let batch: RVec<OutputLine> = lines
                .iter()
                .map(|l| OutputLine { stream: Stream::Output, at_unix_ms: now, text: l.as_str().into() })
                .collect();
            let info = BatchInfo { build_id: 0, build_started_unix_ms: now };
            let out: Vec<String> = o
                .filter(info, batch)
                .into_result()
                .map(|out| out.into_iter().map(|l| l.text.into_string()).collect())
                .map_err(|e| e.to_string())?;
            // Plugins built on interface 1.0 lack build_finished: the default answers.
            o.build_finished(info).into_result().map_err(|e| format!("build_finished: {e}"))?;
            Ok(out)
        }
        _ => Err(format!(
            "`plugins try` calls trigger and output plugins; {} is a {} plugin",
            plugin.name,
            plugin.section.kind()
        )),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn sample_trigger_context(section: &str) -> TriggerContext {
    let hook = section.trim_end_matches("_triggers");
    let dir = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
    TriggerContext {
        hook: hook.into(),
        build: vespene_plugin_api::BuildInfo {
            id: 0,
            status: if hook == "failure" { "FAILURE" } else { "SUCCESS" }.into(),
            working_dir: dir,
            ..Default::default()
        },
        project: vespene_plugin_api::ProjectInfo { id: 0, name: "plugins-try".into(), ..Default::default() },
        ..Default::default()
    }
}
