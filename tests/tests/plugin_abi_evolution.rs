//! The stable-ABI promise: a plugin built against the frozen 1.0 interface
//! keeps loading and working in the current server, and every kind's
//! template from `vespene plugins new` builds, passes its tests and loads,
//! also outside any Vespene checkout and offline.

use std::path::PathBuf;
use std::process::Command;

use vespene_e2e::*;
use vespene_plugin_api::INTERFACE_VERSION;

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
        assert_eq!(row["older_interface"], true, "a 1.0 plugin is flagged in a newer server");
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

        // Its own tests pass, and it builds, offline.
        for args in [&["test", "--quiet", "--offline"][..], &["build", "--quiet", "--offline"][..]] {
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
        assert!(text.contains(&format!("interface: {INTERFACE_VERSION}\n")), "{text}");
    }

    // Bad input is refused clearly.
    let out = sandbox.run(&["plugins", "new", "Bad_Name", "--kind", "scm"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid plugin name 'Bad_Name'"), "{}", stderr(&out));
    let out = sandbox.run(&["plugins", "new", "ok", "--kind", "teleport"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown plugin kind 'teleport'"), "{}", stderr(&out));
}

/// Every file of a directory, recursively, with its text.
fn files_under(dir: &std::path::Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            found.push((path, text));
        }
    }
    found
}

/// Runs one build of a project `greeted` (a shell script) in the sandbox's
/// running server; answers the finished build, which succeeded, and its log.
async fn one_successful_build(sandbox: &Sandbox) -> (vespene::store::Build, String) {
    use vespene_e2e::builds::{finished, log_of, start};
    let store = sandbox.store().await;
    let pool = vespene_e2e::api_client::shared_shell_pool(&store).await;
    store
        .create_project(&vespene::store::Project {
            name: "greeted".into(),
            worker_pool_id: pool,
            script: "#!/bin/sh\necho building\n".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = start(sandbox, "greeted", &[]);
    let build = finished(&store, id, std::time::Duration::from_secs(60)).await;
    assert_eq!(build.status, vespene::store::BuildStatus::Success);
    (build, log_of(&store, id).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_made_outside_the_tree_builds_offline_loads_and_runs_in_a_build() {
    // An author's directory: no Vespene checkout in sight.
    let outside = tempfile::tempdir().unwrap();
    let dir = outside.path().join("greeter");
    let sandbox = Sandbox::new();
    let out = sandbox
        .command(&["plugins", "new", "greeter", "--kind", "trigger", "--dir", &dir.display().to_string()])
        .current_dir(outside.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing in it points into the checkout: the interface is vendored.
    let checkout = workspace_root().display().to_string();
    for (path, text) in files_under(&dir) {
        assert!(
            !text.contains(&checkout) && !text.contains("../plugin-api"),
            "{} points into a checkout",
            path.display()
        );
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("path = \"vendor/vespene-plugin-api\""), "{manifest}");
    assert!(dir.join("vendor/vespene-plugin-api/src/abi.rs").is_file());

    // Built offline, as its README says, with the workspace's lock so nothing new is resolved.
    std::fs::copy(workspace_root().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--offline"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", fixtures_target())
        .env("CARGO_NET_OFFLINE", "true")
        .status()
        .unwrap();
    assert!(status.success(), "the new crate did not build offline");

    // Installed into a plugin directory of the admin's, configured, and run by a build.
    let installed = sandbox.path("site-plugins");
    std::fs::create_dir_all(&installed).unwrap();
    std::fs::copy(fixtures_target().join("debug/libvespene_greeter.so"), installed.join("libvespene_greeter.so"))
        .unwrap();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\", \"{}\"]\n[plugins.success_triggers.greeter]\nlibrary = \"greeter\"\ngreeting = \"hello from outside\"\n",
        bin_dir().display(),
        installed.display()
    ));
    let _server = sandbox.serve();
    let (build, log) = one_successful_build(&sandbox).await;
    assert!(log.contains(&format!("hello from outside from build {} of greeted", build.id)), "{log}");
}

fn build_frozen_1_0_host() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "vespene-compat-host", "--manifest-path"])
        .arg(workspace_root().join("tests/compat/Cargo.toml"))
        .env("CARGO_TARGET_DIR", fixtures_target())
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the frozen 1.0 host failed");
    fixtures_target().join("debug/vespene-host-1-0")
}

/// The host can grow within 1.x: `set_variable` (1.4) works in the current
/// server, and a 1.4 plugin run by a 1.0 host, whose callbacks lack it, gets
/// an error naming the version instead of a crash, and its build goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_callback_newer_than_the_server_is_refused_gracefully_where_it_is_missing() {
    let plugin = bin_dir().join("libvespene_set_variable.so");
    let parameters = r#"{"name": "greeting", "value": "hello from a plugin"}"#;

    // A 1.0 server's loader and host callbacks.
    let out = Command::new(build_frozen_1_0_host()).arg(&plugin).arg(parameters).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(text.contains(&format!("loaded set-variable 0.0.0, built on interface {INTERFACE_VERSION}")), "{text}");
    assert!(
        text.contains(
            "[message] set-variable could not set greeting: this server does not offer the host callback \
             'set_variable': it exists since plugin interface 1.4 and the server running this plugin is older"
        ),
        "{text}"
    );
    assert!(text.ends_with("trigger: ok\n"), "{text}");

    // The current server: the same library, as a pre-trigger of a build.
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n[plugins.pre_triggers.greeting]\nlibrary = \"set_variable\"\n\
         name = \"greeting\"\nvalue = \"hello from a plugin\"\n",
        bin_dir().display()
    ));
    let _server = sandbox.serve();
    let (build, log) = one_successful_build(&sandbox).await;
    let variables: serde_json::Value = serde_json::from_str(&build.output_variables).unwrap();
    assert_eq!(variables["greeting"], "hello from a plugin");
    assert!(log.contains("output variable greeting set by a plugin"), "{log}");
    assert!(log.contains("set-variable set greeting"), "{log}");
    assert!(!log.contains("could not set"), "{log}");
}
