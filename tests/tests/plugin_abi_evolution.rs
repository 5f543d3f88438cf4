//! The stable-ABI promise: a plugin built against the frozen 1.0 interface
//! keeps loading and working in the current (1.3) server, and every kind's
//! template from `vespene plugins new` builds, passes its tests and loads.

use std::path::PathBuf;
use std::process::Command;

use vespene_e2e::*;

/// Shared with the other fixture builds so dependencies compile once.
fn fixtures_target() -> PathBuf {
    workspace_root().join("target").join("fixtures-target")
}

fn build_frozen_1_0_plugin() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "vespene-compat-plugin", "--manifest-path"])
        .arg(workspace_root().join("tests/compat/Cargo.toml"))
        .env("CARGO_TARGET_DIR", fixtures_target())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the frozen 1.0 plugin failed");
    fixtures_target().join("debug/libvespene_compat.so")
}

#[test]
fn a_plugin_built_on_interface_1_0_loads_and_works_in_the_current_server() {
    let so = build_frozen_1_0_plugin();
    let sandbox = Sandbox::new();
    let marker = sandbox.path("marker.txt");
    sandbox.settings(&format!(
        "plugin_path = [\"{dir}\"]\n\
         [plugins.success_triggers.compat]\nlibrary = \"{so}\"\nfile = \"{marker}\"\n\
         [plugins.output.compat]\nlibrary = \"{so}\"\n\
         [plugins.output.timestamp]\nlibrary = \"timestamp\"\n",
        dir = bin_dir().display(),
        so = so.display(),
        marker = marker.display()
    ));

    let out = sandbox.run(&["plugins", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let compat: Vec<&serde_json::Value> = rows.as_array().unwrap().iter().filter(|r| r["plugin"] == "compat").collect();
    assert_eq!(compat.len(), 2);
    for row in compat {
        assert_eq!(row["interface_version"], "1.0.0");
        assert_eq!(row["older_interface"], true, "a 1.0 plugin is flagged in a 1.3 server");
    }
    let table = stdout(&sandbox.run(&["plugins", "list"]));
    assert!(table.contains("1.0.0 (older)"), "{table}");

    // It still works: its trigger runs, its output filter and the 1.1
    // build_finished method (absent from its vtable, so the default) both answer.
    let out = sandbox.run(&["plugins", "try", "success_triggers.compat"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("compat 1.0 trigger ran"));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "success plugins-try\n");
    let out = sandbox.run(&["plugins", "try", "output.compat", "--line", "hello"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).lines().next(), Some("[1.0] hello"));

    let out = sandbox.run(&["plugins", "check", &so.display().to_string()]);
    assert!(stdout(&out).contains("interface: 1.0.0 (older minor version: still compatible)"), "{}", stdout(&out));
    assert!(stdout(&out).contains("kinds: trigger, output"));

    // The server starts with it, and its plugins page (behind login) flags it.
    let server = sandbox.serve();
    let password = server.admin_password().expect("the first start prints the admin password");
    let cookie = server.login("admin", &password);
    let (status, page) = server.get_with("/ui/plugins", &[("Cookie", &cookie)]);
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches("built on an older interface").count(), 2, "{page}");
    assert!(page.contains("libvespene_timestamp.so"), "{page}");
    let (status, json) = server.get_with("/api/v1/plugins", &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
    assert!(json.contains("\"older_interface\":true"), "{json}");
}

#[test]
fn a_plugin_built_before_1_3_cannot_be_an_authentication_source() {
    // The 1.0 library's root module ends before the 1.3 constructor: the host
    // reads no authentication kind from it, and says why in one line.
    let so = build_frozen_1_0_plugin();
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n[plugins.authentication.compat]\nlibrary = \"{}\"\n",
        bin_dir().display(),
        so.display()
    ));
    let out = sandbox.run(&["plugins", "list"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    for needle in [
        "plugin 'authentication.compat'",
        "library 'compat' provides trigger, output, authorization but section 'authentication' needs an authentication plugin",
        "it was built on plugin interface 1.0.0; the authentication kind exists since 1.3",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

#[test]
fn plugins_new_makes_a_working_crate_for_every_kind() {
    let kinds = [
        "trigger",
        "scm",
        "isolation",
        "output",
        "authorization",
        "organization",
        "variables",
        "secrets",
        "autoscaler",
        "authentication",
    ];
    let work = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    for kind in kinds {
        let name = format!("my-{kind}");
        let dir = work.path().join(&name);
        let out = sandbox.run(&["plugins", "new", &name, "--kind", kind, "--dir", &dir.display().to_string()]);
        assert!(out.status.success(), "plugins new --kind {kind}: {}", stderr(&out));
        assert!(dir.join("src/lib.rs").is_file() && dir.join("README.md").is_file());
        // Resolve dependencies as the workspace does, so nothing new is fetched or compiled.
        std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

        // Its own tests pass, and it builds.
        for args in [&["test", "--quiet"][..], &["build", "--quiet"][..]] {
            let status = Command::new(env!("CARGO"))
                .args(args)
                .current_dir(&dir)
                .env("CARGO_TARGET_DIR", fixtures_target())
                .status()
                .unwrap();
            assert!(status.success(), "cargo {args:?} failed for the {kind} template");
        }

        // The server loads the .so unchanged and sees the kind.
        let so = fixtures_target().join(format!("debug/libvespene_my_{kind}.so"));
        let out = sandbox.run(&["plugins", "check", &so.display().to_string()]);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(&format!("name: {name}")), "{text}");
        assert!(text.contains(&format!("kinds: {kind}")), "{text}");
        assert!(text.contains("interface: 1.3.0\n"), "{text}");
    }

    // Bad input is refused clearly.
    let out = sandbox.run(&["plugins", "new", "Bad_Name", "--kind", "scm"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid plugin name 'Bad_Name'"), "{}", stderr(&out));
    let out = sandbox.run(&["plugins", "new", "ok", "--kind", "teleport"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown plugin kind 'teleport'"), "{}", stderr(&out));
}
