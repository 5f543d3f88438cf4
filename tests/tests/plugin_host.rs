//! The plugin host end to end: the real `vespene` binary loading the real
//! plugin `.so` files from settings, and refusing bad ones with one line.

use std::path::Path;

use vespene_e2e::*;
use vespene_plugin_api::INTERFACE_VERSION;

fn lib(name: &str) -> String {
    plugin_lib(name).display().to_string()
}

/// Asserts a failed run printed exactly one line naming `needles`.
fn assert_one_line_error(out: &std::process::Output, needles: &[&str]) {
    assert!(!out.status.success(), "expected failure, got success; stdout: {}", stdout(out));
    assert!(out.status.code().is_some(), "the process died from a signal: {:?}", out.status);
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} missing from: {}", lines[0]);
    }
}

#[test]
fn shipped_and_template_plugins_load_and_are_listed() {
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        r#"
plugin_path = ["{dir}"]

[plugins.scm.none]
library = "none"

[plugins.output.timestamp]
library = "timestamp"
mode = "elapsed"

[plugins.success_triggers.publish]
library = "command"
command = "true"

[plugins.success_triggers.hello]
library = "{template}"
greeting = "hello"
"#,
        dir = bin_dir().display(),
        template = built_plugin_template().display(),
    ));
    let out = sandbox.run(&["plugins", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    let names: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r["section"].as_str().unwrap(), r["name"].as_str().unwrap(), r["plugin"].as_str().unwrap()))
        .collect();
    // Section order first, then settings order inside a section; the
    // built-in defaults (shell isolation, variables, authorization) load too.
    let configured: Vec<(&str, &str, &str)> = names
        .iter()
        .copied()
        .filter(|(section, _, _)| ["success_triggers", "scm", "output"].contains(section))
        .collect();
    assert_eq!(
        configured,
        vec![
            ("success_triggers", "publish", "command"),
            ("success_triggers", "hello", "template"),
            ("scm", "none", "none"),
            ("scm", "git", "git"),
            ("scm", "svn", "svn"),
            ("output", "timestamp", "timestamp"),
        ]
    );
    for default in ["shell", "common", "ownership", "group_required"] {
        assert!(names.iter().any(|(_, n, _)| *n == default), "default plugin {default} missing: {names:?}");
    }
    for row in rows {
        assert_eq!(row["interface_version"], INTERFACE_VERSION);
        assert_eq!(row["older_interface"], false);
        assert!(Path::new(row["library"].as_str().unwrap()).is_file());
        assert!(!row["version"].as_str().unwrap().is_empty());
    }

    let table = sandbox.run(&["plugins", "list"]);
    assert!(table.status.success());
    let text = stdout(&table);
    assert!(text.lines().next().unwrap().starts_with("NAME"), "{text}");
    assert!(text.contains("libvespene_timestamp.so"), "{text}");
}

#[test]
fn the_embedded_defaults_load_with_no_settings_file() {
    let sandbox = Sandbox::new();
    let mut cmd = sandbox.command(&["plugins", "list", "--json"]);
    cmd.env("VESPENE_PLUGIN_PATH", bin_dir());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let plugins: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["plugin"].as_str().unwrap()).collect();
    assert!(plugins.contains(&"none") && plugins.contains(&"timestamp"), "{plugins:?}");
}

#[test]
fn the_same_trigger_library_twice_runs_both_in_settings_order() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("order.log");
    sandbox.settings(&format!(
        r#"
plugin_path = ["{dir}"]

[plugins.success_triggers.second]
library = "command"
command = "echo second {{{{ hook }}}} {{{{ project.name }}}} >> {log}"

[plugins.success_triggers.first]
library = "command"
command = "echo first {{{{ hook }}}} >> {log}"
"#,
        dir = bin_dir().display(),
        log = log.display(),
    ));
    let out = sandbox.run(&["plugins", "try", "success_triggers"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let written = std::fs::read_to_string(&log).unwrap();
    assert_eq!(written, "second success plugins-try\nfirst success\n");
}

#[test]
fn a_failing_command_trigger_is_an_error() {
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n[plugins.failure_triggers.bad]\nlibrary = \"command\"\ncommand = \"exit 4\"\n",
        bin_dir().display()
    ));
    let out = sandbox.run(&["plugins", "try", "failure_triggers.bad"]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("exit code 4"), "{}", stdout(&out));
}

#[test]
fn timestamp_output_plugin_prefixes_elapsed_minutes() {
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n[plugins.output.timestamp]\nlibrary = \"timestamp\"\nmode = \"elapsed\"\n",
        bin_dir().display()
    ));
    let out = sandbox.run(&["plugins", "try", "output.timestamp", "--line", "compiling", "--line", "done"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "    0.00m | compiling");
    assert_eq!(lines[1], "    0.00m | done");
}

fn serve_with(sandbox: &Sandbox, entry_toml: &str) -> std::process::Output {
    sandbox.settings(&format!("plugin_path = [\"{}\"]\n{entry_toml}", bin_dir().display()));
    // `serve` must refuse to start; a timeout guards against it starting anyway.
    let mut child = sandbox
        .command(&["serve"])
        .env("VESPENE_SERVER__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve started despite a misconfigured plugin");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_missing_library_refuses_to_start() {
    let sandbox = Sandbox::new();
    let out = serve_with(&sandbox, "[plugins.scm.ghost]\nlibrary = \"ghost\"\n");
    assert_one_line_error(&out, &["scm.ghost", "'ghost' not found on plugin_path"]);
    let out = serve_with(&sandbox, "[plugins.scm.ghost]\nlibrary = \"/nowhere/libghost.so\"\n");
    assert_one_line_error(&out, &["scm.ghost", "/nowhere/libghost.so does not exist"]);
}

#[test]
fn a_file_that_is_not_a_plugin_refuses_to_start() {
    let sandbox = Sandbox::new();
    let text = sandbox.path("notes.so");
    std::fs::write(&text, "just text").unwrap();
    let out = serve_with(&sandbox, &format!("[plugins.scm.notes]\nlibrary = \"{}\"\n", text.display()));
    assert_one_line_error(&out, &["scm.notes", "notes.so", "cannot be opened as a shared library"]);

    // A real shared library that is not a Vespene plugin.
    let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/lib64/libc.so.6"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("libc on this machine");
    let out = serve_with(&sandbox, &format!("[plugins.scm.libc]\nlibrary = \"{libc}\"\n"));
    assert_one_line_error(&out, &["scm.libc", libc, "is not a Vespene plugin"]);
}

#[test]
fn a_plugin_lacking_the_configured_kind_refuses_to_start() {
    let sandbox = Sandbox::new();
    let out = serve_with(&sandbox, "[plugins.scm.stamp]\nlibrary = \"timestamp\"\n");
    assert_one_line_error(&out, &["scm.stamp", "libvespene_timestamp.so", "provides output", "needs a scm plugin"]);
}

#[test]
fn bad_parameters_refuse_to_start() {
    let sandbox = Sandbox::new();
    let out = serve_with(&sandbox, "[plugins.output.timestamp]\nlibrary = \"timestamp\"\nmode = \"wallclock\"\n");
    assert_one_line_error(&out, &["output.timestamp", "bad parameters", "wallclock"]);
    let out = serve_with(&sandbox, "[plugins.success_triggers.cmd]\nlibrary = \"command\"\n");
    assert_one_line_error(&out, &["success_triggers.cmd", "bad parameters", "command"]);
    let out = serve_with(&sandbox, "[plugins.success_triggers.cmd]\nlibrary = \"command\"\ncommand = \"{{ oops\"\n");
    assert_one_line_error(&out, &["success_triggers.cmd", "bad parameters"]);
}

#[test]
fn a_panicking_constructor_refuses_to_start_with_one_line() {
    let sandbox = Sandbox::new();
    let out = serve_with(&sandbox, "[plugins.pre_triggers.boom]\nlibrary = \"panicky\"\npanic_in = \"new\"\n");
    assert_one_line_error(&out, &["pre_triggers.boom", "plugin panicked in new", "on purpose", "(at "]);
}

#[test]
fn a_panicking_call_is_an_error_and_the_host_serves_the_next_call() {
    let sandbox = Sandbox::new();
    let marker = sandbox.path("after.txt");
    sandbox.settings(&format!(
        "plugin_path = [\"{dir}\"]\n\
         [plugins.pre_triggers.boom]\nlibrary = \"panicky\"\n\
         [plugins.pre_triggers.after]\nlibrary = \"command\"\ncommand = \"echo still here > {marker}\"\n\
         [plugins.output.boom]\nlibrary = \"panicky\"\n",
        dir = bin_dir().display(),
        marker = marker.display()
    ));
    let out = sandbox.run(&["plugins", "try", "pre_triggers.boom", "--times", "3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    for call in 1..=3 {
        assert!(
            text.contains(&format!(
                "call {call}: error: plugin panicked in execute: panicky plugin panicked on purpose"
            )),
            "{text}"
        );
    }
    // The whole pre_triggers section: the panicking one fails, the next still runs.
    let out = sandbox.run(&["plugins", "try", "pre_triggers"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "still here\n");
    let out = sandbox.run(&["plugins", "try", "output.boom", "--times", "2"]);
    assert!(stdout(&out).contains("call 2: error: plugin panicked in filter"), "{}", stdout(&out));
}

#[test]
fn plugins_check_reports_what_a_library_provides() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["plugins", "check", &lib("command")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("name: command")
            && text.contains("kinds: trigger")
            && text.contains(&format!("interface: {INTERFACE_VERSION}")),
        "{text}"
    );

    let out = sandbox.run(&["plugins", "check", "/nowhere/x.so"]);
    assert_one_line_error(&out, &["/nowhere/x.so", "does not exist"]);
}

#[test]
fn another_major_interface_version_is_refused_naming_both_versions() {
    let so = build_foreign_plugin("major-2", |api| set_crate_version(api, "2.0.0"));
    let sandbox = Sandbox::new();
    let out = serve_with(&sandbox, &format!("[plugins.success_triggers.foreign]\nlibrary = \"{}\"\n", so.display()));
    assert_one_line_error(
        &out,
        &["success_triggers.foreign", "built on plugin interface 2.0.0", &format!("speaks {INTERFACE_VERSION}")],
    );
    let out = sandbox.run(&["plugins", "check", &so.display().to_string()]);
    assert_one_line_error(&out, &["2.0.0", INTERFACE_VERSION]);
}

#[test]
fn a_changed_layout_is_refused() {
    let so = build_foreign_plugin("layout", |api| {
        // Same version number, different layout: a field changes type.
        replace_in(&api.join("src/abi.rs"), "pub build_id: i64,", "pub build_id: i32,");
    });
    let sandbox = Sandbox::new();
    let out = serve_with(&sandbox, &format!("[plugins.success_triggers.foreign]\nlibrary = \"{}\"\n", so.display()));
    assert_one_line_error(&out, &["success_triggers.foreign", "layout differs"]);
}

#[test]
fn a_plugin_built_outside_the_workspace_on_the_same_interface_loads() {
    let so = build_foreign_plugin("same", |_| {});
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["plugins", "check", &so.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("name: foreign"));
}

#[test]
fn an_older_minor_version_with_a_changed_layout_is_refused() {
    let so = build_foreign_plugin("old-minor-layout", |api| {
        set_crate_version(api, "1.0.0");
        replace_in(&api.join("src/abi.rs"), "pub build_id: i64,", "pub build_id: i32,");
    });
    let sandbox = Sandbox::new();
    let out = serve_with(&sandbox, &format!("[plugins.success_triggers.foreign]\nlibrary = \"{}\"\n", so.display()));
    assert_one_line_error(&out, &["success_triggers.foreign", "layout differs", "built on 1.0.0"]);
}

#[test]
fn serve_on_a_fresh_data_dir_prints_an_admin_account_once() {
    let sandbox = Sandbox::new();
    sandbox.settings(&format!("plugin_path = [\"{}\"]\n", bin_dir().display()));
    let first = sandbox.serve();
    let printed = first.stdout_lines().join("\n");
    assert!(printed.contains("username 'admin', password '"), "{printed}");
    let (status, body) = first.get("/api/v1/health");
    assert_eq!((status, body.contains("\"ok\"")), (200, true), "{body}");
    drop(first);
    let second = sandbox.serve();
    assert!(!second.stdout_lines().join("\n").contains("password"), "the password is shown only once");
    assert!(sandbox.path("data/vespene.db").exists() && sandbox.path("data/secret.key").exists());
}
