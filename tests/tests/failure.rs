//! Failures: a worker killed with SIGKILL in the middle of a build. The rule:
//! once its worker has not checked in for `workers.heartbeat_timeout_seconds`,
//! any other worker marks the build ORPHANED (not re-run: a half-run build may
//! have had effects), with a message, and keeps the output it had.
//!
//! And plugins that panic or return errors at every call: the builds that use
//! them fail with a message naming the plugin; the server and other builds
//! carry on. (The database restarted mid-run is `db_restart.rs`: it restarts
//! the shared PostgreSQL, so it runs in a test binary of its own.)

use std::time::Duration;

use vespene::store::{BuildStatus, Project, WorkerPool};
use vespene_e2e::builds::*;
use vespene_e2e::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_build_is_orphaned_and_keeps_its_output() {
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n[workers]\nembedded = false\nper_pool = 1\nheartbeat_timeout_seconds = 3\n",
        bin_dir().display()
    ));
    let store = sandbox.store().await;
    let pool = WorkerPool { name: "fragile".into(), isolation_method: "shell".into(), ..Default::default() };
    let pool_id = store.create_worker_pool(&pool).await.unwrap();
    let script = "#!/bin/bash\necho $$ > pid\necho before the kill\nexec sleep 600\n";
    let project =
        Project { name: "victim".into(), worker_pool_id: pool_id, script: script.into(), ..Default::default() };
    store.create_project(&project).await.unwrap();

    let doomed = WorkerProcess::spawn(&sandbox, &[]);
    let id = start(&sandbox, "victim", &[]);
    wait_for(Duration::from_secs(30), "the first line", || async {
        stdout_of(&store, id).await.iter().any(|l| l.ends_with("before the kill")).then_some(())
    })
    .await;
    doomed.kill_hard();
    // Still RUNNING right after the kill: nobody has noticed yet.
    assert_eq!(store.get_build(id).await.unwrap().unwrap().status, BuildStatus::Running);

    let _survivor = WorkerProcess::spawn(&sandbox, &[]);
    let build = finished(&store, id, Duration::from_secs(30)).await;
    assert_eq!(build.status, BuildStatus::Orphaned);
    let log = log_of(&store, id).await;
    assert!(log.contains("before the kill"), "the output up to the kill is kept: {log}");
    assert!(log.contains("stopped checking in: build orphaned"), "{log}");
    let project = store.find_project("victim").await.unwrap().unwrap();
    assert_eq!(project.active_build_id, None, "the project can start again");

    // The killed worker's script is left behind by SIGKILL; clean it up.
    if let Ok(pid) = std::fs::read_to_string(std::path::Path::new(&build.working_dir).join("pid")) {
        let _ = std::process::Command::new("kill").args(["-9", pid.trim()]).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_failing_every_call_fail_their_builds_and_nothing_else() {
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n\
         [workers]\nper_pool = 3\n\
         [repositories]\nlocal_roots = [\"/nowhere\"]\n\
         [plugins.pre_triggers.boom]\nlibrary = \"panicky\"\nper_project = true\n\
         [plugins.pre_triggers.grumpy]\nlibrary = \"panicky\"\nper_project = true\nfail_with = \"error\"\n\
         [plugins.scm.broken_scm]\nlibrary = \"panicky\"\n\
         [plugins.isolation.broken_isolation]\nlibrary = \"panicky\"\n\
         [plugins.isolation.grumpy_isolation]\nlibrary = \"panicky\"\nfail_with = \"error\"\n",
        bin_dir().display()
    ));
    let store = sandbox.store().await;
    let pool = |name: &str, isolation: &str| WorkerPool {
        name: name.into(),
        isolation_method: isolation.into(),
        ..Default::default()
    };
    let healthy = store.create_worker_pool(&pool("healthy", "shell")).await.unwrap();
    let panicking = store.create_worker_pool(&pool("panicking", "broken_isolation")).await.unwrap();
    let erroring = store.create_worker_pool(&pool("erroring", "grumpy_isolation")).await.unwrap();
    let script = "#!/bin/sh\nfor i in 1 2 3 4 5; do echo line $i; sleep 0.05; done\n";
    let project = |name: &str, pool_id| Project {
        name: name.into(),
        worker_pool_id: pool_id,
        script: script.into(),
        ..Default::default()
    };
    store.create_project(&project("good", healthy)).await.unwrap();
    store
        .create_project(&Project { triggers: r#"["boom"]"#.into(), ..project("panicking-trigger", healthy) })
        .await
        .unwrap();
    store
        .create_project(&Project { triggers: r#"["grumpy"]"#.into(), ..project("erroring-trigger", healthy) })
        .await
        .unwrap();
    store
        .create_project(&Project {
            scm_type: "broken_scm".into(),
            repo_url: "file:///nowhere".into(),
            ..project("panicking-scm", healthy)
        })
        .await
        .unwrap();
    store.create_project(&project("panicking-isolation", panicking)).await.unwrap();
    store.create_project(&project("erroring-isolation", erroring)).await.unwrap();

    let server = sandbox.serve();
    let expected = [
        (
            "panicking-trigger",
            "pre_triggers trigger 'boom' failed: plugin panicked in execute: panicky plugin panicked on purpose",
        ),
        ("erroring-trigger", "pre_triggers trigger 'grumpy' failed: panicky plugin failed on purpose"),
        ("panicking-scm", "plugin panicked in checkout: panicky plugin panicked on purpose"),
        ("panicking-isolation", "plugin panicked in execute: panicky plugin panicked on purpose"),
        ("erroring-isolation", "panicky plugin failed on purpose"),
    ];
    // Three rounds, the good project's builds interleaved with the failing ones.
    for round in 0..3 {
        let mut failing = Vec::new();
        let good = start(&sandbox, "good", &[]);
        for (name, message) in expected {
            failing.push((start(&sandbox, name, &[]), name, message));
        }
        let build = finished(&store, good, Duration::from_secs(60)).await;
        assert_eq!(build.status, BuildStatus::Success, "round {round}: {}", log_of(&store, good).await);
        let lines: Vec<String> = unstamped_output(&store, good).await;
        assert_eq!(lines, (1..=5).map(|i| format!("line {i}")).collect::<Vec<_>>(), "round {round}");
        for (id, name, message) in failing {
            let build = finished(&store, id, Duration::from_secs(60)).await;
            let log = log_of(&store, id).await;
            assert_eq!(build.status, BuildStatus::Failure, "{name}: {log}");
            assert!(log.contains(message), "{name}: expected {message:?} in\n{log}");
            assert!(!log.contains("line 1"), "{name}: the script must not have run: {log}");
        }
        let (status, body) = server.get("/api/v1/health");
        assert_eq!(status, 200, "round {round}: the server still answers: {body}");
    }
}
