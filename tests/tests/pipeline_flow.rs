//! Issue 19: pipelines people can trust (a restarted stage continues its run
//! with that run's outputs, approval stages, re-run from a stage, the runs
//! grid), one trigger outcome model, one behaviour for duplicate starts, and
//! pools for `serve`'s embedded workers. The real binary and plugins, on
//! SQLite and (where a test server is configured) PostgreSQL.

use std::time::Duration;

use serde_json::{json, Value};
use vespene::store::{BuildStatus, Pipeline, Project, Stage, Store, WorkerPool};
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

fn settings(extra: &str) -> String {
    format!("plugin_path = [\"{}\"]\n{extra}", bin_dir().display())
}

async fn shell_pool(store: &Store, name: &str) -> WorkerPool {
    let p = WorkerPool {
        name: name.into(),
        isolation_method: "shell".into(),
        build_latest: false,
        shared: true,
        ..Default::default()
    };
    let id = store.create_worker_pool(&p).await.unwrap();
    store.get_worker_pool(id).await.unwrap().unwrap()
}

async fn latest_build(store: &Store, project: &str) -> vespene::store::Build {
    let p = store.find_project(project).await.unwrap().unwrap();
    let filter = vespene::store::BuildFilter { project_id: Some(p.id), limit: 1000, ..Default::default() };
    let builds = store.list_builds(&filter).await.unwrap();
    builds.into_iter().max_by_key(|b| b.id).unwrap_or_else(|| panic!("{project} has no build"))
}

async fn restart_continues_the_run(db: Db) {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(db, "restart_continues_the_run").await.is_none() {
        return;
    }
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let pool = shell_pool(&store, "general").await;
    let mut stages = Vec::new();
    for name in ["build", "test", "ship"] {
        stages.push(store.create_stage(&Stage { name: name.into(), ..Default::default() }).await.unwrap());
    }
    let pipeline_id = store
        .create_pipeline(&Pipeline { name: "release".into(), stage_ids: stages.clone(), ..Default::default() })
        .await
        .unwrap();
    let make = |name: &str, stage: usize, script: &str| Project {
        name: name.into(),
        worker_pool_id: pool.id,
        pipeline_id: Some(pipeline_id),
        stage_id: Some(stages[stage]),
        script: script.into(),
        ..Default::default()
    };
    for p in [
        make("compile", 0, "#!/bin/bash\necho vespene/set image v42\n"),
        make("unit", 1, "#!/bin/bash\necho unit {{ image }}\nexit 1\n"),
        make("deploy", 2, "#!/bin/bash\necho deploy {{ image }}\n"),
    ] {
        store.create_project(&p).await.unwrap();
    }
    let first = start(&sandbox, "compile", &[]);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "2"]).wait(Duration::from_secs(60));
    let failed = latest_build(&store, "unit").await;
    assert_eq!(failed.status, BuildStatus::Failure);

    // Fixed and started again by hand: the same run, with compile's outputs.
    let mut unit = store.find_project("unit").await.unwrap().unwrap();
    unit.script = "#!/bin/bash\necho unit {{ image }}\n".into();
    store.update_project(&unit).await.unwrap();
    let again = start(&sandbox, "unit", &[]);
    assert!(log_of(&store, again).await.contains(&format!("continues run {first}")), "{}", log_of(&store, again).await);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "2"]).wait(Duration::from_secs(60));
    let unit_build = store.get_build(again).await.unwrap().unwrap();
    assert_eq!(unit_build.status, BuildStatus::Success, "{}", log_of(&store, again).await);
    assert_eq!(unit_build.pipeline_origin_build_id, Some(first));
    assert!(stdout_of(&store, again).await.iter().any(|l| l.ends_with("unit v42")));
    let deploy = latest_build(&store, "deploy").await;
    assert_eq!(deploy.status, BuildStatus::Success, "{}", log_of(&store, deploy.id).await);
    assert_eq!(deploy.pipeline_origin_build_id, Some(first));
    assert!(stdout_of(&store, deploy.id).await.iter().any(|l| l.ends_with("deploy v42")));
    let pipeline = store.get_pipeline(pipeline_id).await.unwrap().unwrap();
    assert_eq!(pipeline.last_completed_by, Some(deploy.id), "last_completed_by names the completing build");
    assert!(pipeline.last_completed_date.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_stage_continues_its_run_with_earlier_outputs_sqlite() {
    restart_continues_the_run(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_stage_continues_its_run_with_earlier_outputs_postgres() {
    restart_continues_the_run(Db::Postgres).await;
}

async fn trigger_outcomes(db: Db) {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(db, "trigger_outcomes").await.is_none() {
        return;
    }
    let record = sandbox.path("failures.log");
    sandbox.settings(&settings(&format!(
        r#"
[plugins.success_triggers.broken]
library = "command"
command = "echo notifier down; exit 4"

[plugins.success_triggers.after]
library = "command"
command = "echo after {{{{ build.id }}}} >> {log}"

[plugins.failure_triggers.record]
library = "command"
command = "echo failure {{{{ build.id }}}} >> {log}"
"#,
        log = record.display()
    )));
    let store = sandbox.store().await;
    let pool = shell_pool(&store, "general").await;
    for (name, script, repo) in [
        ("fine", "#!/bin/bash\necho ok\n", ""),
        ("typo", "#!/bin/bash\necho {{ nope }}\n", ""),
        ("nocheckout", "#!/bin/bash\necho never\n", "git://127.0.0.1:1/missing.git"),
    ] {
        let p = Project {
            name: name.into(),
            worker_pool_id: pool.id,
            script: script.into(),
            repo_url: repo.into(),
            scm_type: if repo.is_empty() { "none".into() } else { "git".into() },
            ..Default::default()
        };
        store.create_project(&p).await.unwrap();
    }
    let fine = start(&sandbox, "fine", &[]);
    let nocheckout = start(&sandbox, "nocheckout", &[]);
    let out = sandbox.run(&["start", "typo"]);
    assert!(!out.status.success());
    let typo: i64 = stdout(&out).split_whitespace().nth(1).unwrap().parse().unwrap();
    WorkerProcess::spawn(&sandbox, &["--max-builds", "2"]).wait(Duration::from_secs(60));

    // A failing success trigger: the build keeps its SUCCESS, the failure is recorded, later triggers still run.
    let b = store.get_build(fine).await.unwrap().unwrap();
    assert_eq!(b.status, BuildStatus::Success);
    let failures = b.trigger_failures.clone().unwrap_or_default();
    assert!(failures.contains("success_triggers trigger 'broken' failed"), "{failures:?}");
    let log = log_of(&store, fine).await;
    assert!(
        log.contains("trigger failure (the build's own result is unchanged)") && log.contains("notifier down"),
        "{log}"
    );
    // Where people look: the build page names the trigger failure.
    let server = sandbox.serve();
    user(&store, "root", true, &[]).await;
    let cookie = server.login("root", "password-of-root");
    let (status, page) = server.get_with(&format!("/ui/builds/{fine}"), &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
    let shown = page.split("id=\"build-trigger-failures\"").nth(1).unwrap_or_default();
    assert!(shown.contains("success_triggers trigger") && shown.contains("broken"), "{page}");
    // The template error and the checkout failure both ran the failure triggers.
    assert_eq!(store.get_build(typo).await.unwrap().unwrap().status, BuildStatus::Failure);
    assert_eq!(store.get_build(nocheckout).await.unwrap().unwrap().status, BuildStatus::Failure);
    let written = std::fs::read_to_string(&record).unwrap();
    let mut lines: Vec<&str> = written.lines().collect();
    lines.sort();
    let mut expected = vec![format!("after {fine}"), format!("failure {typo}"), format!("failure {nocheckout}")];
    expected.sort();
    assert_eq!(lines, expected, "{written}");
    assert!(log_of(&store, typo).await.contains("failure_triggers: running trigger 'record'"));
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_failures_are_recorded_and_every_failed_build_runs_failure_triggers_sqlite() {
    trigger_outcomes(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn trigger_failures_are_recorded_and_every_failed_build_runs_failure_triggers_postgres() {
    trigger_outcomes(Db::Postgres).await;
}

/// Waits until the pipeline's latest run is in `state`; answers the run.
fn run_in_state(client: &Client, pipeline: i64, state: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let runs = client.ok("GET", &format!("/api/v1/pipelines/{pipeline}/runs"), None);
        if let Some(run) = runs["results"].as_array().and_then(|r| r.first()) {
            if run["state"] == state {
                return run.clone();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no run became '{state}': {runs}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn approvals(db: Db) {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(db, "approvals").await.is_none() {
        return;
    }
    sandbox.settings(&settings(""));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shared_shell_pool(&store).await;
    user(&store, "root", true, &[]).await;
    user(&store, "alice", false, &[]).await;
    user(&store, "bob", false, &[]).await;
    let admin = token_for(&server.addr, "root");
    let alice = token_for(&server.addr, "alice");
    let bob = token_for(&server.addr, "bob");
    let build_stage = admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "build", "shared": true})))["id"].clone();
    let prod =
        admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "prod", "shared": true, "approval_required": true})));
    assert_eq!(prod["approval_required"], true);
    let prod = prod["id"].clone();
    let pipeline =
        alice.ok("POST", "/api/v1/pipelines", Some(&json!({"name": "release", "stage_ids": [build_stage, prod]})));
    let pid = pipeline["id"].as_i64().unwrap();
    for (name, stage, script) in [
        ("compile", &build_stage, "#!/bin/bash\necho vespene/set v 7\n"),
        ("ship", &prod, "#!/bin/bash\necho ship {{ v }}\n"),
    ] {
        alice.ok(
            "POST",
            "/api/v1/projects",
            Some(
                &json!({"name": name, "worker_pool_id": pool, "pipeline_id": pid, "stage_id": stage, "script": script}),
            ),
        );
    }
    let compile = store.find_project("compile").await.unwrap().unwrap();
    let origin = alice.ok("POST", &format!("/api/v1/projects/{}/start", compile.id), None)["id"].as_i64().unwrap();
    let run = run_in_state(&alice, pid, "waiting for approval");
    assert_eq!(run["run"], origin);
    assert_eq!(run["stages"][1]["status"], "WAITING_FOR_APPROVAL");
    assert!(store.find_project("ship").await.unwrap().unwrap().last_build_id.is_none(), "ship ran unapproved");

    // Another ordinary user may neither approve nor re-run alice's pipeline.
    let approve = format!("/api/v1/pipelines/{pid}/runs/{origin}/approve");
    let rerun = format!("/api/v1/pipelines/{pid}/runs/{origin}/rerun");
    let (status, body) = bob.call("POST", &approve, None);
    assert_eq!(status, 403, "{body}");
    let (status, body) = bob.call("POST", &rerun, Some(&json!({"stage": "build"})));
    assert_eq!(status, 403, "{body}");
    // Re-running the stage that waits is refused: it needs the approval.
    let (status, body) = alice.call("POST", &rerun, Some(&json!({"stage": "prod"})));
    assert_eq!(status, 409, "{body}");
    let (status, body) = alice.call("POST", &rerun, Some(&json!({"stage": 99999})));
    assert_eq!((status, body["field"].as_str()), (400, Some("stage")), "{body}");

    // The owner approves: the stage starts, with the run's outputs, and the approval is on the run.
    let answer = alice.ok("POST", &approve, None);
    assert_eq!(answer["approval"]["approved_by"], store.find_user("alice").await.unwrap().unwrap().id);
    let (status, body) = alice.call("POST", &approve, None);
    assert_eq!(status, 409, "a second approval: {body}");
    let run = run_in_state(&alice, pid, "succeeded");
    assert!(run["stages"][1]["approval"]["approved_at"].is_string(), "{run}");
    let ship = latest_build(&store, "ship").await;
    assert!(stdout_of(&store, ship.id).await.iter().any(|l| l.ends_with("ship 7")));
    // The run reads as succeeded once ship's status is stored; the pipeline
    // row is completed just after, by the worker that finished it.
    let mut completed_by = None;
    for _ in 0..100 {
        completed_by = store.get_pipeline(pid).await.unwrap().unwrap().last_completed_by;
        if completed_by.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(completed_by, Some(ship.id));

    // Re-run from the first stage: a new compile in the same run, and the approval is asked again.
    let answer = alice.ok("POST", &rerun, Some(&json!({"stage": "build"})));
    assert_eq!(answer["started"].as_array().map(Vec::len), Some(1), "{answer}");
    let run = run_in_state(&alice, pid, "waiting for approval");
    assert_eq!(run["run"], origin);
    // A superuser may approve anyone's pipeline.
    admin.ok("POST", &approve, None);
    run_in_state(&alice, pid, "succeeded");
    // Both approvals are in the audit log, under who gave them; bob's refused tries are not.
    let audit = admin.ok("GET", &format!("/api/v1/audit?action=pipeline.approve&object_id={pid}"), None);
    let approvers: Vec<&str> =
        audit["results"].as_array().unwrap().iter().filter_map(|e| e["actor"].as_str()).collect();
    assert_eq!(approvers.len(), 2, "{audit}");
    assert!(approvers.contains(&"alice") && !approvers.contains(&"bob"), "{audit}");
    let ships = store
        .list_builds(&vespene::store::BuildFilter {
            project_id: Some(ship.project_id.unwrap()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ships.len(), 2);
    assert!(ships.iter().all(|b| b.pipeline_origin_build_id == Some(origin)));

    // The map shows the runs grid, with the stage statuses.
    let cookie = server.login("alice", "password-of-alice");
    let (status, page) = server.get_with(&format!("/ui/pipelines/{pid}/map"), &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
    assert!(page.contains(&format!("data-run=\"{origin}\"")) && page.contains("data-status=\"SUCCESS\""), "{page}");
    let (status, page) =
        server.get_with(&format!("/ui/pipelines/{pid}/map"), &[("Cookie", &server.login("bob", "password-of-bob"))]);
    assert!(status != 200 || !page.contains("class=\"approve\""), "bob sees an Approve button");
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_stages_wait_for_an_approver_and_runs_rerun_from_a_stage_sqlite() {
    approvals(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_stages_wait_for_an_approver_and_runs_rerun_from_a_stage_postgres() {
    approvals(Db::Postgres).await;
}

async fn duplicate_starts(db: Db) {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(db, "duplicate_starts").await.is_none() {
        return;
    }
    // No embedded workers: the first build stays QUEUED.
    sandbox.settings(&settings("[workers]\nembedded = false\n"));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shared_shell_pool(&store).await;
    user(&store, "alice", false, &[]).await;
    let alice = token_for(&server.addr, "alice");
    let first = create_and_start(&alice, pool, "once", "#!/bin/bash\nsleep 2\n");
    let project = store.find_project("once").await.unwrap().unwrap();
    let path = format!("/api/v1/projects/{}/start", project.id);
    let (status, body) = alice.call("POST", &path, None);
    assert_eq!(status, 409, "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("build {first}")) && message.contains("QUEUED"), "{body}");
    // While it runs: the same answer, naming it RUNNING.
    let _worker = WorkerProcess::spawn(&sandbox, &["--max-builds", "1"]);
    wait_for(Duration::from_secs(30), "the build to run", || async {
        (store.get_build(first).await.unwrap().unwrap().status == BuildStatus::Running).then_some(())
    })
    .await;
    let (status, body) = alice.call("POST", &path, None);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("RUNNING"), "{body}");
    finished(&store, first, Duration::from_secs(30)).await;
    let filter = vespene::store::BuildFilter { project_id: Some(project.id), limit: 10, ..Default::default() };
    assert_eq!(store.list_builds(&filter).await.unwrap().len(), 1, "a refused start left a build");
    // Once it has finished, a start is accepted again.
    alice.ok("POST", &path, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_quick_start_is_refused_naming_the_build_sqlite() {
    duplicate_starts(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_quick_start_is_refused_naming_the_build_postgres() {
    duplicate_starts(Db::Postgres).await;
}

async fn pools_for_embedded_workers(db: Db) {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(db, "pools_for_embedded").await.is_none() {
        return;
    }
    sandbox.settings(&settings("[workers]\npools = [\"embedded\"]\n"));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let embedded = shell_pool(&store, "embedded").await;
    let side = shell_pool(&store, "side").await;
    user(&store, "alice", false, &[]).await;
    let alice = token_for(&server.addr, "alice");
    let on_embedded = create_and_start(&alice, embedded.id, "inside", "#!/bin/bash\necho inside\n");
    let on_side = create_and_start(&alice, side.id, "beside", "#!/bin/bash\necho beside\n");
    assert_eq!(finished(&store, on_embedded, Duration::from_secs(30)).await.status, BuildStatus::Success);
    // serve's workers leave the other pool alone ...
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(store.get_build(on_side).await.unwrap().unwrap().status, BuildStatus::Queued);
    // ... so a standalone worker of that pool gets its build.
    WorkerProcess::spawn(&sandbox, &["side", "--max-builds", "1"]).wait(Duration::from_secs(30));
    assert_eq!(store.get_build(on_side).await.unwrap().unwrap().status, BuildStatus::Success);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_worker_beside_serve_gets_the_builds_of_its_pool_sqlite() {
    pools_for_embedded_workers(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_worker_beside_serve_gets_the_builds_of_its_pool_postgres() {
    pools_for_embedded_workers(Db::Postgres).await;
}

/// `approve` is an action of its own: `group-required` leaves approvals to a
/// release group, while the pipeline's other owners still edit it.
#[tokio::test(flavor = "multi_thread")]
async fn approvals_can_be_left_to_a_release_group_that_edits_nothing_more() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(
        "[plugins.authorization.group_required]\nlibrary = \"group-required\"\npipeline = { approve = [\"release\"] }\n",
    ));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shared_shell_pool(&store).await;
    let (release, devs) = (store.create_group("release").await.unwrap(), store.create_group("devs").await.unwrap());
    user(&store, "root", true, &[]).await;
    user(&store, "alice", false, &[devs]).await;
    user(&store, "carol", false, &[devs, release]).await;
    user(&store, "bob", false, &[release]).await;
    let (admin, alice, carol, bob) = (
        token_for(&server.addr, "root"),
        token_for(&server.addr, "alice"),
        token_for(&server.addr, "carol"),
        token_for(&server.addr, "bob"),
    );
    let build = admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "build", "shared": true})))["id"].clone();
    let prod =
        admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "prod", "shared": true, "approval_required": true})))
            ["id"]
            .clone();
    // Alice's pipeline, owned with the devs group: carol owns it too.
    let pipeline = alice.ok(
        "POST",
        "/api/v1/pipelines",
        Some(&json!({"name": "release-train", "stage_ids": [build, prod], "owner_group_ids": [devs]})),
    );
    let pid = pipeline["id"].as_i64().unwrap();
    for (name, stage) in [("compile", &build), ("deploy", &prod)] {
        alice.ok(
            "POST",
            "/api/v1/projects",
            Some(&json!({"name": name, "worker_pool_id": pool, "pipeline_id": pid, "stage_id": stage,
                         "script": "#!/bin/bash\necho ok\n"})),
        );
    }
    let compile = store.find_project("compile").await.unwrap().unwrap();
    let origin = alice.ok("POST", &format!("/api/v1/projects/{}/start", compile.id), None)["id"].as_i64().unwrap();
    run_in_state(&alice, pid, "waiting for approval");
    let approve = format!("/api/v1/pipelines/{pid}/runs/{origin}/approve");

    // Alice owns and edits the pipeline, but is not in release: no approval.
    let (status, body) = alice.call("POST", &approve, None);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("approve"), "{body}");
    alice.ok("PATCH", &format!("/api/v1/pipelines/{pid}"), Some(&json!({"description": "edited by alice"})));
    // Bob is in release but does not own the pipeline: the ownership plugin refuses.
    let (status, body) = bob.call("POST", &approve, None);
    assert_eq!(status, 403, "{body}");
    // Neither sees an Approve button on the map; carol does.
    for (name, shown) in [("alice", false), ("bob", false), ("carol", true)] {
        let cookie = server.login(name, &format!("password-of-{name}"));
        let (status, page) = server.get_with(&format!("/ui/pipelines/{pid}/map"), &[("Cookie", &cookie)]);
        assert_eq!(status, 200, "{name}: {page}");
        assert_eq!(page.contains("class=\"approve\""), shown, "{name} and the Approve button: {page}");
    }
    assert!(store.find_project("deploy").await.unwrap().unwrap().last_build_id.is_none(), "deploy ran unapproved");

    // Carol owns it (devs) and is in release: she approves, and the run goes on.
    let answer = carol.ok("POST", &approve, None);
    assert_eq!(answer["approval"]["approved_by"], store.find_user("carol").await.unwrap().unwrap().id);
    run_in_state(&alice, pid, "succeeded");
}
