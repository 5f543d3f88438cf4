//! The build engine end to end: the real `vespene` binary (workers, `start`,
//! `stop`) with the real plugin `.so` files (none, shell, command, timestamp,
//! variables-*, slack), on SQLite and, where a test server is configured, on
//! PostgreSQL.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use vespene::store::{Build, BuildStatus, NewBuild, Pipeline, Project, Snippet, Stage, Store, VariableSet, WorkerPool};
use vespene_e2e::builds::*;
use vespene_e2e::*;

fn settings(extra: &str) -> String {
    format!("plugin_path = [\"{}\"]\n{extra}", bin_dir().display())
}

async fn pool(store: &Store, name: &str) -> WorkerPool {
    let p =
        WorkerPool { name: name.into(), isolation_method: "shell".into(), build_latest: false, ..Default::default() };
    let id = store.create_worker_pool(&p).await.unwrap();
    store.get_worker_pool(id).await.unwrap().unwrap()
}

async fn project(store: &Store, name: &str, pool: &WorkerPool, script: &str) -> Project {
    let p = Project { name: name.into(), worker_pool_id: pool.id, script: script.into(), ..Default::default() };
    let id = store.create_project(&p).await.unwrap();
    store.get_project(id).await.unwrap().unwrap()
}

async fn builds_of(store: &Store, project: &Project) -> Vec<Build> {
    let filter = vespene::store::BuildFilter { project_id: Some(project.id), limit: 1000, ..Default::default() };
    let mut builds = store.list_builds(&filter).await.unwrap();
    builds.sort_by_key(|b| b.id);
    builds
}

#[tokio::test(flavor = "multi_thread")]
async fn variables_from_every_level_a_snippet_and_a_launch_answer() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let set = |name: &str, vars: &str| VariableSet { name: name.into(), variables: vars.into(), ..Default::default() };
    let pool_set =
        store.create_variable_set(&set("pool-set", r#"{"level":"pool-set","pool_only":"p"}"#)).await.unwrap();
    let project_set =
        store.create_variable_set(&set("project-set", r#"{"level":"project-set","set_only":"s"}"#)).await.unwrap();
    let mut p = WorkerPool {
        name: "general".into(),
        isolation_method: "shell".into(),
        variables: r#"{"level":"pool"}"#.into(),
        variable_set_ids: vec![pool_set],
        ..Default::default()
    };
    p.id = store.create_worker_pool(&p).await.unwrap();
    let stage = Stage {
        name: "build".into(),
        variables: r#"{"level":"stage","stage_only":"st"}"#.into(),
        ..Default::default()
    };
    let stage_id = store.create_stage(&stage).await.unwrap();
    let pipeline = Pipeline {
        name: "ci".into(),
        stage_ids: vec![stage_id],
        variables: r#"{"level":"pipeline","pipe_only":"pi"}"#.into(),
        ..Default::default()
    };
    let pipeline_id = store.create_pipeline(&pipeline).await.unwrap();
    store
        .create_snippet(&Snippet {
            name: "greet-line".into(),
            text: "snippet sees {{ level }} and {{ pool_only }}{{ missing }}".into(),
            // Nobody owns the project: only a shared snippet is rendered for it.
            shared: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let proj = Project {
        name: "levels".into(),
        worker_pool_id: p.id,
        pipeline_id: Some(pipeline_id),
        stage_id: Some(stage_id),
        variables: r#"{"level":"project","who":"nobody"}"#.into(),
        variable_set_ids: vec![project_set],
        launch_questions: r#"[{"variable":"who","type":"radio","choices":["world","moon"]}]"#.into(),
        script: "#!/bin/bash\necho \"level={{ level }} pool={{ pool_only }} pipe={{ pipe_only }} stage={{ stage_only }} set={{ set_only }} who={{ who }}\"\necho \"{{ greet_line }}\"\ncat vespene.json\n".into(),
        ..Default::default()
    };
    store.create_project(&proj).await.unwrap();

    // A bad answer is refused before anything is queued.
    let out = sandbox.run(&["start", "levels", "--answers", r#"{"who":"mars"}"#]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("launch answer 'who'"), "{}", stderr(&out));

    let id = start(&sandbox, "levels", &["--answers", r#"{"who":"moon"}"#]);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "1"]).wait(Duration::from_secs(60));
    let build = finished(&store, id, Duration::from_secs(5)).await;
    assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, id).await);
    let out = stdout_of(&store, id).await;
    // Timestamped by the output plugin: "    0.00m | text".
    let text: Vec<&str> = out.iter().map(|l| l.split_once(" | ").map(|(_, t)| t).unwrap_or(l)).collect();
    assert_eq!(text[0], "level=project pool=p pipe=pi stage=st set=s who=moon");
    assert_eq!(text[1], "snippet sees project and p");
    let json: serde_json::Value = serde_json::from_str(&text[2..].join("\n")).unwrap();
    let frozen: serde_json::Value = serde_json::from_str(&build.variables).unwrap();
    assert_eq!(json, frozen, "vespene.json is the build's frozen variables");
    assert_eq!(frozen["who"], "moon");
    assert_eq!(frozen["greet_line"], "snippet sees project and p");
    assert!(out.iter().all(|l| l.contains("m | ")), "every output line is timestamped: {out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_error_fails_the_build_at_once() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    project(&store, "broken", &p, "#!/bin/bash\necho {{ nope }}\n").await;
    let out = sandbox.run(&["start", "broken"]);
    assert!(!out.status.success());
    let id: i64 = stdout(&out).split_whitespace().nth(1).unwrap().parse().unwrap();
    let build = store.get_build(id).await.unwrap().unwrap();
    assert_eq!(build.status, BuildStatus::Failure);
    let log = log_of(&store, id).await;
    assert!(log.contains("template error") && log.contains("nope"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_ends_a_sleeping_build_within_two_seconds_and_kills_its_processes() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    project(&store, "sleeper", &p, "#!/bin/bash\necho $$ > pids\nsleep 600 &\necho $! >> pids\necho started\nwait\n")
        .await;
    let _worker = WorkerProcess::spawn(&sandbox, &[]);
    let id = start(&sandbox, "sleeper", &[]);
    wait_for(Duration::from_secs(30), "the build to print 'started'", || async {
        stdout_of(&store, id).await.iter().any(|l| l.ends_with("started")).then_some(())
    })
    .await;
    let asked = Instant::now();
    let out = sandbox.run(&["stop", &id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let build = finished(&store, id, Duration::from_secs(10)).await;
    let took = asked.elapsed();
    assert_eq!(build.status, BuildStatus::Aborted);
    assert!(took < Duration::from_secs(2), "stop took {took:?}");
    assert!(log_of(&store, id).await.contains("build stopped on request"));
    let pids = std::fs::read_to_string(Path::new(&build.working_dir).join("pids")).unwrap();
    for pid in pids.split_whitespace() {
        assert!(!process_alive(pid), "process {pid} of the build survived the stop");
    }
    // Stopping a finished build is refused clearly.
    let out = sandbox.run(&["stop", &id.to_string()]);
    assert!(!out.status.success() && stderr(&out).contains("is ABORTED"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_ends_the_build_with_a_message() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    let mut proj = project(&store, "slow", &p, "#!/bin/bash\necho begin\nsleep 600\n").await;
    proj.timeout = 1; // minutes, as in the original
    store.update_project(&proj).await.unwrap();
    let _worker = WorkerProcess::spawn(&sandbox, &[]);
    let id = start(&sandbox, "slow", &[]);
    let build = finished(&store, id, Duration::from_secs(100)).await;
    assert_eq!(build.status, BuildStatus::Failure);
    let took = build.end_time.unwrap() - build.start_time.unwrap();
    assert!(took.num_seconds() >= 59 && took.num_seconds() < 70, "took {took}");
    assert!(log_of(&store, id).await.contains("timed out after 1 minute(s)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_pre_post_and_per_project() {
    let sandbox = Sandbox::new();
    let log = sandbox.path("triggers.log");
    sandbox.settings(&settings(&format!(
        r#"
[plugins.pre_triggers.gate]
library = "command"
command = "test {{{{ project.name }}}} != gated || (echo gate says no; exit 3)"

[plugins.success_triggers.record]
library = "command"
command = "echo success {{{{ build.id }}}} {{{{ build.status }}}} >> {log}"

[plugins.failure_triggers.record]
library = "command"
command = "echo failure {{{{ build.id }}}} {{{{ build.return_code }}}} >> {log}"

[plugins.success_triggers.publish]
library = "command"
per_project = true
command = "echo publish {{{{ project.name }}}} >> {log}"
"#,
        log = log.display()
    )));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    project(&store, "gated", &p, "#!/bin/bash\ntouch ran.txt\n").await;
    project(&store, "fails", &p, "#!/bin/bash\nexit 7\n").await;
    let mut publisher = project(&store, "publisher", &p, "#!/bin/bash\necho ok\n").await;
    publisher.triggers = r#"["publish"]"#.into();
    store.update_project(&publisher).await.unwrap();
    project(&store, "plain", &p, "#!/bin/bash\necho ok\n").await;

    let gated = start(&sandbox, "gated", &[]);
    let fails = start(&sandbox, "fails", &[]);
    let published = start(&sandbox, "publisher", &[]);
    let plain = start(&sandbox, "plain", &[]);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "4"]).wait(Duration::from_secs(60));

    let b = store.get_build(gated).await.unwrap().unwrap();
    assert_eq!(b.status, BuildStatus::Failure);
    let text = log_of(&store, gated).await;
    assert!(text.contains("pre_triggers trigger 'gate' failed") && text.contains("gate says no"), "{text}");
    assert!(!Path::new(&b.working_dir).join("ran.txt").exists(), "the script ran despite the failed pre trigger");

    let b = store.get_build(fails).await.unwrap().unwrap();
    assert_eq!((b.status, b.return_code), (BuildStatus::Failure, Some(7)));
    let b = store.get_build(published).await.unwrap().unwrap();
    assert_eq!((b.status, b.return_code), (BuildStatus::Success, Some(0)), "success records its return code");

    let written = std::fs::read_to_string(&log).unwrap();
    let lines: HashSet<&str> = written.lines().collect();
    let expected: HashSet<String> = [
        format!("failure {gated} -1"),
        format!("failure {fails} 7"),
        format!("success {published} SUCCESS"),
        "publish publisher".to_string(),
        format!("success {plain} SUCCESS"),
    ]
    .into_iter()
    .collect();
    assert_eq!(lines, expected.iter().map(String::as_str).collect(), "{written}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_stage_pipeline_advances_only_when_both_peers_are_green() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    let mut stages = Vec::new();
    for name in ["build", "test", "deploy"] {
        stages.push(store.create_stage(&Stage { name: name.into(), ..Default::default() }).await.unwrap());
    }
    let pipeline_id = store
        .create_pipeline(&Pipeline { name: "release".into(), stage_ids: stages.clone(), ..Default::default() })
        .await
        .unwrap();
    let make = |name: &str, stage: usize, script: &str| Project {
        name: name.into(),
        worker_pool_id: p.id,
        pipeline_id: Some(pipeline_id),
        stage_id: Some(stages[stage]),
        script: script.into(),
        ..Default::default()
    };
    for proj in [
        make("compile", 0, "#!/bin/bash\necho vespene/set image v42\n"),
        make("unit", 1, "#!/bin/bash\nsleep 1\necho unit {{ image }}\n"),
        make("integration", 1, "#!/bin/bash\nsleep 3\necho integration {{ image }}\n"),
        make("ship", 2, "#!/bin/bash\necho ship {{ image }}\n"),
    ] {
        store.create_project(&proj).await.unwrap();
    }
    let first = start(&sandbox, "compile", &[]);
    if !WorkerProcess::spawn(&sandbox, &["--slots", "2", "--max-builds", "4"]).finished_within(Duration::from_secs(90))
    {
        panic!("the worker did not run the four builds:\n{}", dump(&store).await);
    }
    let by_name = |name: &'static str| {
        let store = store.clone();
        async move {
            let p = store.find_project(name).await.unwrap().unwrap();
            builds_of(&store, &p).await
        }
    };
    let (unit, integration, ship) = (by_name("unit").await, by_name("integration").await, by_name("ship").await);
    assert_eq!((unit.len(), integration.len(), ship.len()), (1, 1, 1));
    for b in unit.iter().chain(&integration).chain(&ship) {
        assert_eq!(b.status, BuildStatus::Success, "{}", log_of(&store, b.id).await);
        assert_eq!(b.pipeline_origin_build_id, Some(first));
    }
    assert_eq!(unit[0].pipeline_parent_build_id, Some(first));
    assert_eq!(integration[0].pipeline_parent_build_id, Some(first));
    // The last stage started only after the slower peer was green.
    assert!(ship[0].queued_time.unwrap() >= integration[0].end_time.unwrap());
    assert_eq!(ship[0].pipeline_parent_build_id, Some(integration[0].id));
    assert!(stdout_of(&store, ship[0].id).await.iter().any(|l| l.ends_with("ship v42")));
    assert!(stdout_of(&store, unit[0].id).await.iter().any(|l| l.ends_with("unit v42")));
    assert!(store.find_pipeline("release").await.unwrap().unwrap().last_completed_date.is_some());

    // A failing peer stops the run: the last stage never starts.
    let mut integration_project = store.find_project("integration").await.unwrap().unwrap();
    integration_project.script = "#!/bin/bash\nexit 1\n".into();
    store.update_project(&integration_project).await.unwrap();
    start(&sandbox, "compile", &[]);
    WorkerProcess::spawn(&sandbox, &["--slots", "2", "--max-builds", "3"]).wait(Duration::from_secs(90));
    assert_eq!(by_name("ship").await.len(), 1, "the deploy stage ran after a failed peer");
}

/// Every build and its log, for failure messages.
async fn dump(store: &Store) -> String {
    let mut out = String::new();
    let filter = vespene::store::BuildFilter { limit: 1000, ..Default::default() };
    for b in store.list_builds(&filter).await.unwrap() {
        out.push_str(&format!(
            "build {} project {:?} {}:\n{}\n",
            b.id,
            b.project_id,
            b.status,
            log_of(store, b.id).await
        ));
    }
    out
}

/// Queues `count` trivial builds straight into the queue, spread over projects.
async fn queue_trivial_builds(store: &Store, pool: &WorkerPool, count: usize, shared: &Path) -> Vec<i64> {
    let mut projects = Vec::new();
    for i in 0..10 {
        projects.push(project(store, &format!("drain-{i}"), pool, "#!/bin/sh\necho x\n").await);
    }
    let script = format!(
        "#!/bin/sh\nid=$(basename \"$PWD\")\necho \"build $id line 1\"\necho \"build $id line 2\"\necho \"build $id line 3\"\necho $id >> {}\n",
        shared.display()
    );
    let mut ids = Vec::new();
    for i in 0..count {
        let nb = NewBuild {
            project_id: Some(projects[i % projects.len()].id),
            worker_pool_id: pool.id,
            script: script.clone(),
            variables: "{}".into(),
            launch_answers: "{}".into(),
            ..Default::default()
        };
        ids.push(store.create_build(&nb).await.unwrap().id);
    }
    ids
}

async fn two_workers_and_the_embedded_one_drain_200_builds(db: Db) {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(db, "drain_200").await.is_none() {
        return;
    }
    sandbox.settings(&settings("[workers]\nembedded = true\nper_pool = 2\n"));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    let shared = sandbox.path("ran.log");
    let ids = queue_trivial_builds(&store, &p, 200, &shared).await;
    let _server = sandbox.serve();
    let _w1 = WorkerProcess::spawn(&sandbox, &["--slots", "2"]);
    let _w2 = WorkerProcess::spawn(&sandbox, &["--slots", "2"]);
    for id in &ids {
        let b = finished(&store, *id, Duration::from_secs(240)).await;
        assert_eq!(b.status, BuildStatus::Success, "build {id}: {}", log_of(&store, *id).await);
    }
    let ran = std::fs::read_to_string(&shared).unwrap();
    let mut seen = HashSet::new();
    for line in ran.lines() {
        assert!(seen.insert(line.to_string()), "build {line} ran twice");
    }
    assert_eq!(seen.len(), 200);
    let mut workers = HashSet::new();
    for id in &ids {
        let out = stdout_of(&store, *id).await;
        let wanted: Vec<String> = (1..=3).map(|n| format!("build {id} line {n}")).collect();
        let got: Vec<&str> = out.iter().map(|l| l.split_once(" | ").map(|(_, t)| t).unwrap_or(l)).collect();
        assert_eq!(got, wanted, "output of build {id}");
        workers.insert(store.get_build(*id).await.unwrap().unwrap().worker_id);
    }
    assert!(workers.len() >= 2, "only {} worker(s) took builds", workers.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_200_builds_on_sqlite() {
    two_workers_and_the_embedded_one_drain_200_builds(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_200_builds_on_postgres() {
    two_workers_and_the_embedded_one_drain_200_builds(Db::Postgres).await;
}

/// On PostgreSQL a worker process hears builds queued by other processes at
/// once (LISTEN/NOTIFY), here with its own poll set to ten minutes; even after
/// the database cut its listening connection.
#[tokio::test(flavor = "multi_thread")]
async fn on_postgres_a_worker_wakes_for_builds_queued_elsewhere() {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(Db::Postgres, "wake_up").await.is_none() {
        return;
    }
    sandbox.settings(&settings("[workers]\nembedded = false\npoll_milliseconds = 600000\n"));
    let store = sandbox.store().await;
    let p = pool(&store, "listening").await;
    let shared = sandbox.path("ran.log");
    let _worker = WorkerProcess::spawn(&sandbox, &[]);
    // The worker's first look at the queue comes before these builds exist.
    wait_for(Duration::from_secs(30), "the worker to check in", || async {
        (!store.list_workers().await.unwrap().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = queue_trivial_builds(&store, &p, 1, &shared).await[0];
    let build = finished(&store, first, Duration::from_secs(60)).await;
    assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, first).await);

    // Cut every connection of the worker's (the listener's too): it reconnects and listens again.
    let url = std::env::var("VESPENE_TEST_POSTGRES_URL").unwrap();
    let database = sandbox.database_url.clone().unwrap().rsplit_once('/').unwrap().1.to_string();
    {
        use sqlx::Connection;
        let mut admin = sqlx::AnyConnection::connect(&url).await.unwrap();
        // Only our own role's sessions: background workers of the server itself
        // (autovacuum on this database) belong to the superuser and may not be cut.
        sqlx::query(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND usename = current_user",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    }
    let store = sandbox.store().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let more: Vec<i64> = queue_more_builds(&store, &p, 3, &shared).await;
    for id in more {
        let build = finished(&store, id, Duration::from_secs(60)).await;
        assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, id).await);
    }
}

/// Trivial builds of the `drain-0` project made by [`queue_trivial_builds`].
async fn queue_more_builds(store: &Store, pool: &WorkerPool, count: usize, shared: &Path) -> Vec<i64> {
    let project = store.find_project("drain-0").await.unwrap().unwrap();
    let mut ids = Vec::new();
    for _ in 0..count {
        let nb = NewBuild {
            project_id: Some(project.id),
            worker_pool_id: pool.id,
            script: format!("#!/bin/sh\necho again >> {}\n", shared.display()),
            variables: "{}".into(),
            launch_answers: "{}".into(),
            ..Default::default()
        };
        ids.push(store.create_build(&nb).await.unwrap().id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_schedule_queues_one_build_per_slot_across_workers() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    let mut proj = project(&store, "nightly", &p, "#!/bin/bash\necho scheduled\n").await;
    proj.schedule_enabled = true;
    proj.schedule_cron = "* * * * *".into();
    proj.schedule_timezone = "Europe/Paris".into();
    store.update_project(&proj).await.unwrap();
    let _a = WorkerProcess::spawn(&sandbox, &[]);
    let _b = WorkerProcess::spawn(&sandbox, &[]);
    let first = wait_for(Duration::from_secs(30), "a scheduled build", || async {
        builds_of(&store, &proj).await.into_iter().next()
    })
    .await;
    let b = finished(&store, first.id, Duration::from_secs(30)).await;
    assert_eq!(b.status, BuildStatus::Success);
    // Both workers keep looking; a slot is queued once.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let minutes: Vec<i64> =
        builds_of(&store, &proj).await.iter().map(|b| b.queued_time.unwrap().timestamp() / 60).collect();
    let distinct: HashSet<&i64> = minutes.iter().collect();
    assert_eq!(distinct.len(), minutes.len(), "a schedule slot was queued twice: {minutes:?}");
    // Bad schedules are refused at save time, naming the field.
    proj.schedule_cron = "every day".into();
    let err = store.update_project(&proj).await.unwrap_err().to_string();
    assert!(err.contains("schedule_cron"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_slack_trigger_posts_to_a_slack_api() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.to_ascii_lowercase().starts_with("content-length:") {
                length = line[15..].trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let reply = "{\"ok\":true}";
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
        (head, String::from_utf8(body).unwrap())
    });
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(&format!(
        "[plugins.success_triggers.slack]\nlibrary = \"slack\"\nchannel = \"builds\"\ntoken = \"xoxb-test-token\"\nbase_url = \"http://{addr}\"\n"
    )));
    let store = sandbox.store().await;
    let p = pool(&store, "general").await;
    project(&store, "announced", &p, "#!/bin/bash\necho hi\n").await;
    let id = start(&sandbox, "announced", &[]);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "1"]).wait(Duration::from_secs(60));
    let (head, body) = server.join().unwrap();
    assert!(head.starts_with("POST /chat.postMessage "), "{head}");
    assert!(head.contains("Bearer xoxb-test-token"), "{head}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["channel"], "builds");
    assert!(body["text"].as_str().unwrap().contains(&id.to_string()), "{body}");
    assert_eq!(store.get_build(id).await.unwrap().unwrap().status, BuildStatus::Success);
    assert!(!log_of(&store, id).await.contains("xoxb-test-token"));
}
