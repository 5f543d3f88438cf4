//! Failures: a worker killed with SIGKILL in the middle of a build. The rule:
//! once its worker has not checked in for `workers.heartbeat_timeout_seconds`,
//! any other worker marks the build ORPHANED (not re-run: a half-run build may
//! have had effects), with a message, and keeps the output it had.

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
