//! The database restarted in the middle of a run. Two worker processes are
//! running builds when PostgreSQL is stopped, kept down for a few seconds and
//! started again: the workers reconnect, every build finishes once, and every
//! build's output is complete.
//!
//! It restarts the PostgreSQL server the whole suite shares (`scripts/start-postgres
//! --restart`), so it lives in a test binary of its own: cargo runs test
//! binaries one after another.

use std::collections::HashMap;
use std::time::Duration;

use vespene::store::{BuildStatus, NewBuild, Project, WorkerPool};
use vespene_e2e::builds::*;
use vespene_e2e::*;

const BUILDS: usize = 60;
const LINES: usize = 20;

#[tokio::test(flavor = "multi_thread")]
async fn workers_ride_out_a_database_restart() {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(Db::Postgres, "db_restart").await.is_none() {
        return;
    }
    sandbox.settings(&format!("plugin_path = [\"{}\"]\n[workers]\nembedded = false\n", bin_dir().display()));
    let store = sandbox.store().await;
    // Every build runs: no collapsing of queued duplicates.
    let pool = WorkerPool {
        name: "steady".into(),
        isolation_method: "shell".into(),
        build_latest: false,
        ..Default::default()
    };
    let pool_id = store.create_worker_pool(&pool).await.unwrap();
    let runs = sandbox.path("runs.log");
    // Each run of a build leaves its id in runs.log: a build run twice shows twice.
    let script = format!(
        "#!/bin/sh\nbasename \"$PWD\" >> {runs}\nfor i in $(seq 1 {LINES}); do echo line $i; sleep 0.05; done\n",
        runs = runs.display()
    );
    let project = Project { name: "steady".into(), worker_pool_id: pool_id, ..Default::default() };
    let project_id = store.create_project(&project).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..BUILDS {
        let build = NewBuild {
            project_id: Some(project_id),
            worker_pool_id: pool_id,
            script: script.clone(),
            ..Default::default()
        };
        ids.push(store.create_build(&build).await.unwrap().id);
    }

    let _workers: Vec<_> = (0..2).map(|_| WorkerProcess::spawn(&sandbox, &["--slots", "2"])).collect();
    drop(store);
    // Twice: once early, once with the queue half drained.
    for after_runs in [8, BUILDS / 2] {
        wait_for(Duration::from_secs(120), "builds to be running", || async {
            let done = std::fs::read_to_string(&runs).unwrap_or_default().lines().count();
            (done >= after_runs).then_some(())
        })
        .await;
        let restart = std::process::Command::new("bash")
            .arg(workspace_root().join("scripts/start-postgres"))
            .args(["--restart", "3"])
            .output()
            .expect("run scripts/start-postgres --restart");
        assert!(restart.status.success(), "restart failed: {}", String::from_utf8_lossy(&restart.stderr));
    }

    let store = sandbox.store().await;
    for &id in &ids {
        let build = finished(&store, id, Duration::from_secs(240)).await;
        let log = log_of(&store, id).await;
        assert_eq!(build.status, BuildStatus::Success, "build {id}:\n{log}");
        assert!(build.worker_id.is_some(), "build {id} names its worker");
        let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
        assert_eq!(unstamped_output(&store, id).await, expected, "build {id}'s output is complete:\n{log}");
    }
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        *counts.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    for &id in &ids {
        assert_eq!(counts.get(&id), Some(&1), "build {id} ran exactly once");
    }
    assert_eq!(counts.len(), ids.len());
}
