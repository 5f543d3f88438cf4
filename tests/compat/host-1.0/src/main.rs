//! `vespene-host-1-0 LIBRARY PARAMETERS_JSON`: loads LIBRARY with the checks a
//! 1.0 server made (abi_stable's own layout and version check), builds its
//! trigger from the parameters, runs it for a fake `pre` hook with 1.0 host
//! callbacks, and prints every line it emitted, then `trigger: ok` or
//! `trigger failed: ERROR`. Exit code 0 when the trigger ran (whatever it
//! answered), 2 when the library could not be loaded or built.

use std::path::Path;
use std::process::ExitCode;

use vespene_plugin_api::abi::PluginModuleRef;
use vespene_plugin_api::abi_stable::library::RootModule;
use vespene_plugin_api::abi_stable::std_types::{RResult, RStr};
use vespene_plugin_api::testkit::{fake_trigger_context, to_json, RecordingHost};
use vespene_plugin_api::Stream;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [library, parameters] = args.as_slice() else {
        eprintln!("usage: vespene-host-1-0 LIBRARY PARAMETERS_JSON");
        return ExitCode::from(2);
    };
    let module = match PluginModuleRef::load_from_file(Path::new(library)) {
        Ok(module) => module,
        Err(e) => {
            eprintln!("cannot load {library}: {e}");
            return ExitCode::from(2);
        }
    };
    let info = (module.info())();
    println!("loaded {} {}, built on interface {}", info.name, info.version, info.interface_version);
    let Some(new_trigger) = module.new_trigger() else {
        eprintln!("{library} provides no trigger");
        return ExitCode::from(2);
    };
    let trigger = match new_trigger(RStr::from(parameters.as_str())) {
        RResult::ROk(trigger) => trigger,
        RResult::RErr(e) => {
            eprintln!("cannot build the trigger: {e}");
            return ExitCode::from(2);
        }
    };
    let host = RecordingHost::new();
    let context = to_json(&fake_trigger_context("pre"));
    let answer = trigger.execute(context.as_rstr(), &host.host());
    for (stream, line) in host.lines() {
        let tag = if stream == Stream::Output { "output" } else { "message" };
        println!("[{tag}] {line}");
    }
    match answer {
        RResult::ROk(()) => println!("trigger: ok"),
        RResult::RErr(e) => println!("trigger failed: {e}"),
    }
    ExitCode::SUCCESS
}
