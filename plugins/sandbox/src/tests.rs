//! The plugin against the real bubblewrap, through the test kit's host, which
//! runs commands exactly as the server does. Run as root (CI does), builds get
//! their own uid; as another user, the worker's.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use vespene_plugin_api::serde_json::json;
use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
use vespene_plugin_api::IsolationContext;

use super::*;

const SCRIPT: &str = "vespene_launch.sh";

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// A build root inside a directory others may search (as a real build root
/// base is), with the launch script and `vespene.json`, as the engine leaves it.
struct Root {
    _base: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn root_with(script: &str) -> Root {
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let path = base.path().join("17");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(path.join(SCRIPT), script).unwrap();
    std::fs::set_permissions(path.join(SCRIPT), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(path.join("vespene.json"), r#"{"build_id": 17}"#).unwrap();
    Root { _base: base, path }
}

fn context(root: &Root) -> IsolationContext {
    let mut project = fake_project();
    project.id = 7;
    IsolationContext {
        build: fake_build(),
        project,
        build_root: root.path.display().to_string(),
        launch_script: SCRIPT.into(),
        timeout_seconds: Some(60),
        ..Default::default()
    }
}

fn execute(config: Value, ctx: &IsolationContext, host: &RecordingHost) -> Result<i32, String> {
    testkit::isolation::<SandboxIsolation>(config)?.execute(ctx, host)
}

#[test]
fn a_build_runs_as_its_projects_identity_and_sees_only_its_root() {
    // A directory the build is shown (read_only) with a secret inside that the
    // host lists as hidden, as it lists the data directory.
    let shown = tempfile::tempdir().unwrap();
    std::fs::create_dir(shown.path().join("data")).unwrap();
    std::fs::write(shown.path().join("data/secret.key"), "KEY").unwrap();
    std::fs::write(shown.path().join("visible.txt"), "ok").unwrap();
    std::fs::set_permissions(shown.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = root_with(&format!(
        "#!/bin/sh\nid -u\npwd\necho \"home=$HOME\"\ncat vespene.json; echo\ncat {shown}/visible.txt; echo\n\
         ls {shown}/data | wc -l\nls /var/lib /home /root 2>/dev/null | wc -l\nenv | grep -c CARGO\n\
         touch /usr/x 2>/dev/null || echo usr-read-only\necho tmp > /tmp/t && cat /tmp/t\necho out > made\n",
        shown = shown.path().display()
    ));
    let mut ctx = context(&root);
    ctx.hidden_paths = vec![shown.path().join("data").display().to_string()];
    let host = RecordingHost::new();
    let config = json!({ "read_only": [shown.path()] });

    assert_eq!(execute(config, &ctx, &host), Ok(0), "{:?}", host.lines());

    let uid = if euid() == 0 { DEFAULT_UID_BASE + 7 } else { euid() };
    let root_text = root.path.display().to_string();
    assert_eq!(
        host.outputs(),
        [
            uid.to_string(),
            root_text.clone(),
            format!("home={root_text}"),
            r#"{"build_id": 17}"#.to_string(),
            "ok".into(),
            "0".into(),
            "0".into(),
            "0".into(),
            "usr-read-only".into(),
            "tmp".into(),
        ]
    );
    let made = std::fs::symlink_metadata(root.path.join("made")).unwrap();
    assert_eq!(made.uid(), uid, "files the build writes belong to its identity");
    assert_eq!(
        host.messages(),
        [format!("sandbox isolation: running {SCRIPT} as uid {uid} in {root_text}, network on")]
    );
}

#[test]
fn a_pool_without_network_has_only_loopback() {
    let script = "#!/bin/sh\nreadlink /proc/self/ns/net\ntail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '\n";
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap().display().to_string();

    let root = root_with(script);
    let mut ctx = context(&root);
    ctx.pool.network = Some(false);
    let host = RecordingHost::new();
    assert_eq!(execute(json!({}), &ctx, &host), Ok(0), "{:?}", host.lines());
    let out = host.outputs();
    assert_ne!(out[0], host_ns, "a namespace of its own");
    assert_eq!(out[1..], ["lo".to_string()]);
    assert!(host.messages()[0].ends_with("network off"));

    let root = root_with(script);
    let ctx = context(&root);
    let host = RecordingHost::new();
    assert_eq!(execute(json!({}), &ctx, &host), Ok(0), "{:?}", host.lines());
    assert_eq!(host.outputs()[0], host_ns, "the host's network by default");
}

/// Whether a process whose command line contains `needle` runs on the host.
fn running(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
            .unwrap_or(false)
    })
}

#[test]
fn a_stop_kills_everything_the_build_started_even_outside_its_process_group() {
    // A daemon in a session of its own would survive a process-group kill.
    // The sleeps carry this run's pid, so nothing left by another run counts.
    let (daemon, foreground) =
        (format!("sleep 3011.{}", std::process::id()), format!("sleep 3012.{}", std::process::id()));
    let root = root_with(&format!("#!/bin/sh\nsetsid {daemon} &\nsleep 0.2\necho started\n{foreground}\n"));
    let ctx = context(&root);
    let host = RecordingHost::new();
    let result = std::thread::scope(|s| {
        let run = s.spawn(|| execute(json!({}), &ctx, &host));
        let begun = Instant::now();
        while !host.outputs().contains(&"started".to_string()) {
            assert!(begun.elapsed() < Duration::from_secs(20), "the build never started: {:?}", host.lines());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(running(&daemon));
        host.cancel();
        run.join().unwrap()
    });
    assert_eq!(result, Err(STOPPED.to_string()));
    let gone = Instant::now();
    while running(&daemon) || running(&foreground) {
        assert!(gone.elapsed() < Duration::from_secs(5), "a process of the stopped build survived");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_timeout_stops_the_build() {
    let root = root_with("#!/bin/sh\necho going\nsleep 3021\n");
    let mut ctx = context(&root);
    ctx.timeout_seconds = Some(1);
    let host = RecordingHost::new();
    let begun = Instant::now();
    assert_eq!(execute(json!({}), &ctx, &host), Err(STOPPED.to_string()));
    assert!(begun.elapsed() < Duration::from_secs(10));
    assert_eq!(host.outputs(), ["going"]);
}

#[test]
fn a_script_without_shebang_runs_with_the_shell_and_the_build_environment_wins() {
    let root = root_with("echo \"$GREETING $LANG_X $PATH\"\n");
    let mut ctx = context(&root);
    ctx.env.insert("GREETING".into(), "from-the-build".into());
    let config = json!({ "env": { "GREETING": "from-the-plugin", "LANG_X": "C.UTF-8" }, "path": "/usr/bin:/bin" });
    let host = RecordingHost::new();
    assert_eq!(execute(config, &ctx, &host), Ok(0), "{:?}", host.lines());
    assert_eq!(host.outputs(), ["from-the-build C.UTF-8 /usr/bin:/bin"]);
}

#[test]
fn identities_come_from_the_project_when_the_worker_is_root() {
    let plugin = SandboxIsolation::new(&json!({"uid_base": 5000, "uid_count": 100})).unwrap();
    let root = root_with("#!/bin/sh\n");
    let mut ctx = context(&root);
    assert_eq!(plugin.identity(&ctx, 0), Ok(Identity::Own(5007)));
    assert_eq!(plugin.identity(&ctx, 1000), Ok(Identity::Worker(1000)));
    ctx.project.id = 100;
    assert_eq!(
        plugin.identity(&ctx, 0).unwrap_err(),
        "sandbox isolation: project id 100 has no build identity: ids 1 to 99 map to uids 5001 to 5099 \
         (raise parameter 'uid_count')"
    );
}

#[test]
fn bad_configuration_is_named() {
    let cases = [
        (json!({"bwrap": "bwrap"}), "parameter 'bwrap' must be an absolute path, not 'bwrap'"),
        (json!({"shell": 3}), "parameter 'shell' must be a non-empty string"),
        (json!({"read_only": "/opt"}), "parameter 'read_only' must be a list of absolute paths"),
        (json!({"read_only": ["opt"]}), "parameter 'read_only': \"opt\" is not an absolute path below /"),
        (json!({"uid_base": -1}), "parameter 'uid_base' must be a whole number from 1 to 4294967295, not -1"),
        (
            json!({"uid_base": 4294967000u64}),
            "parameters 'uid_base' + 'uid_count' (4294967000 + 1000000) pass the largest uid",
        ),
        (json!({"network": false}), "unknown parameter 'network' for isolation plugin sandbox"),
    ];
    for (config, expected) in cases {
        assert_eq!(testkit::isolation::<SandboxIsolation>(config.clone()).err().unwrap(), expected, "{config}");
    }
}

#[test]
fn a_missing_bubblewrap_is_named() {
    let root = root_with("#!/bin/sh\ntrue\n");
    let host = RecordingHost::new();
    let err = execute(json!({"bwrap": "/nonexistent/bwrap"}), &context(&root), &host).unwrap_err();
    assert_eq!(
        err,
        "sandbox isolation: bubblewrap is not installed: /nonexistent/bwrap does not exist (install Debian's \
         package bubblewrap, or set parameter 'bwrap')"
    );
}

#[test]
fn a_root_the_identity_cannot_reach_is_named() {
    if euid() != 0 {
        return; // only root switches identity
    }
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = base.path().join("5");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join(SCRIPT), "#!/bin/sh\ntrue\n").unwrap();
    let root = Root { _base: base, path };
    let host = RecordingHost::new();
    let err = execute(json!({}), &context(&root), &host).unwrap_err();
    assert!(err.contains("cannot reach the build root") && err.contains("is not searchable by others"), "{err}");
}
