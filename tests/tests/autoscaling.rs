//! Autoscaling end to end: the real server's housekeeping asking the shipped
//! autoscalers (`autoscale-docker`, `autoscale-shell`, built `.so` files) to
//! size pools, and who may change or trigger that.
//!
//! The Docker test runs on PostgreSQL and the real Docker engine: the pool
//! grows to its maximum with containerised `vespene worker` processes built
//! from this build's binary (`scripts/build-worker-image`), they run the
//! builds, heartbeat and are listed, and the pool shrinks to its minimum
//! once idle.

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

/// A superuser `chief` (`admin` is the first start's own) and the ordinary users `alice` and `bob`, with clients.
struct People {
    admin: Client,
    alice: Client,
    bob: Client,
}

async fn people(store: &vespene::store::Store, addr: &str) -> People {
    user(store, "chief", true, &[]).await;
    user(store, "alice", false, &[]).await;
    user(store, "bob", false, &[]).await;
    People { admin: token_for(addr, "chief"), alice: token_for(addr, "alice"), bob: token_for(addr, "bob") }
}

/// Settings with embedded workers that serve only the pool `local`, so the
/// autoscaled pools' builds wait for workers of their own, and the shell
/// autoscaler `cmd` appending to `scaled.log`.
fn shell_settings(sandbox: &Sandbox) -> String {
    let log = sandbox.path("scaled.log");
    format!(
        r#"plugin_path = ["{bin}"]
[workers]
pools = ["local"]

[plugins.autoscalers.cmd]
library = "autoscale-shell"
command = "echo {{{{ worker_pool }}}} size={{{{ size }}}} queued={{{{ queued_size }}}} running={{{{ running_size }}}} >> {log}"

[plugins.autoscalers.broken]
library = "autoscale-shell"
command = "echo out of quota; exit 3"
"#,
        bin = bin_dir().display(),
        log = log.display()
    )
}

fn scaled_log(sandbox: &Sandbox) -> Vec<String> {
    std::fs::read_to_string(sandbox.path("scaled.log")).unwrap_or_default().lines().map(str::to_string).collect()
}

/// Queues `n` builds running `script` with `/bin/sh` on `pool`: one each of
/// the projects `NAME-1` to `NAME-n` (a project runs one build at a time).
fn queue_builds(client: &Client, pool: i64, name: &str, script: &str, n: usize) -> Vec<i64> {
    let script = format!("#!/bin/sh\n{script}\n");
    (1..=n)
        .map(|i| {
            let body = json!({ "name": format!("{name}-{i}"), "worker_pool_id": pool, "script": script });
            let project = client.ok("POST", "/api/v1/projects", Some(&body));
            let build = client.ok("POST", &format!("/api/v1/projects/{}/start", project["id"]), Some(&json!({})));
            build["id"].as_i64().unwrap()
        })
        .collect()
}

/// Asks for a decision now, again while housekeeping's own runs (409).
async fn decide_now(client: &Client, pool_id: i64) -> Value {
    let path = format!("/api/v1/worker_pools/{pool_id}/autoscale");
    let started = Instant::now();
    loop {
        let (status, body) = client.call("POST", &path, None);
        match status {
            200 => return body,
            409 if started.elapsed() < Duration::from_secs(60) => tokio::time::sleep(Duration::from_millis(200)).await,
            _ => panic!("POST {path}: {status} {body}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_autoscaler_applies_the_weights_and_runs_the_templated_command() {
    let sandbox = Sandbox::new();
    sandbox.settings(&shell_settings(&sandbox));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let who = people(&store, &server.addr).await;
    let pool = who.admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({
            "name": "weighted", "isolation_method": "shell", "build_latest": false,
            "running_weight": 1.0, "queued_weight": 0.5, "multiplier": 2.0, "excess": 1,
            "minimum": 0, "maximum": 10,
        })),
    );
    let pool_id = pool["id"].as_i64().unwrap();
    queue_builds(&who.admin, pool_id, "waits", "true", 4);

    // Enabled, and decided at once: 4 queued × 0.5 = 2, × 2 = 4, + 1 = 5. The
    // original planner ignored the weights: ceil(4 × 2) + 1 = 9.
    who.admin.ok(
        "PATCH",
        &format!("/api/v1/worker_pools/{pool_id}"),
        Some(&json!({ "autoscaling_enabled": true, "autoscaler": "cmd", "reevaluate_seconds": 1 })),
    );
    let answer = decide_now(&who.admin, pool_id).await;
    let decision = &answer["decision"];
    assert_eq!(decision["size"], 5, "{answer}");
    assert_eq!(decision["applied"], true, "{answer}");
    assert_eq!(decision["queued"], 4, "{answer}");
    let decided = scaled_log(&sandbox);
    assert!(!decided.is_empty() && decided.iter().all(|l| l == "weighted size=5 queued=4 running=0"), "{decided:?}");
    let row = &answer["worker_pool"];
    assert_eq!(row["autoscaling_status"], 0, "{row}");
    assert!(row["last_autoscaled"].is_string(), "{row}");
    let message = row["autoscaling_message"].as_str().unwrap();
    assert!(message.starts_with("scaled to 5 workers (4 queued, 0 running, 0 workers)"), "{message}");
    assert!(message.contains("4 queued × 0.5"), "{message}");

    // Housekeeping decides again by itself once the interval has passed.
    wait_for(Duration::from_secs(40), "housekeeping's own decision", || async {
        if scaled_log(&sandbox).len() > decided.len() {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        None
    })
    .await;
    assert_eq!(scaled_log(&sandbox)[decided.len()], "weighted size=5 queued=4 running=0");

    // The UI's pool form shows the autoscaling settings, and no command.
    let browser = session_from_login(&server.addr, "chief");
    let (status, page) = browser.text("GET", &format!("/ui/worker_pools/{pool_id}/edit"), None);
    assert_eq!(status, 200, "{page}");
    for field in ["autoscaling_enabled", "autoscaler", "minimum", "maximum", "queued_weight", "reevaluate_seconds"] {
        assert!(page.contains(&format!("id=\"f-{field}\"")), "the form has {field}");
    }
    assert!(page.contains("value=\"cmd\""), "the autoscaler's name is shown");
    assert!(!page.contains("executor_command"), "no command field");
    let (status, page) = browser.text("GET", &format!("/ui/worker_pools/{pool_id}"), None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Last decision") && page.contains("scaled to 5 workers"), "the last decision is shown");

    // A failing command is recorded as a failed decision with its reason.
    who.admin.ok("PATCH", &format!("/api/v1/worker_pools/{pool_id}"), Some(&json!({ "autoscaler": "broken" })));
    let answer = decide_now(&who.admin, pool_id).await;
    assert_eq!(answer["decision"]["applied"], false, "{answer}");
    assert_eq!(answer["worker_pool"]["autoscaling_status"], 1, "{answer}");
    let message = answer["worker_pool"]["autoscaling_message"].as_str().unwrap();
    assert!(message.ends_with("failed with exit code 3: out of quota"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_decision_at_a_time_per_pool_across_processes() {
    // Two servers on one database, both with the autoscaler, both deciding
    // every housekeeping round for a pool due every second: each decision
    // appends its start and end to the log, and none may overlap another.
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(Db::Postgres, "autoscaling_one_at_a_time").await.is_none() {
        return;
    }
    let log = sandbox.path("decisions.log");
    sandbox.settings(&format!(
        r#"plugin_path = ["{bin}"]
[workers]
pools = ["local"]

[plugins.autoscalers.slow]
library = "autoscale-shell"
command = "echo start >> {log}; sleep 2; echo end >> {log}"
"#,
        bin = bin_dir().display(),
        log = log.display()
    ));
    let first = sandbox.serve();
    let second = sandbox.serve();
    let store = sandbox.store().await;
    let who = people(&store, &first.addr).await;
    let pool = who.admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({
            "name": "contended", "isolation_method": "shell",
            "autoscaling_enabled": true, "autoscaler": "slow", "reevaluate_seconds": 1,
        })),
    );
    let pool_id = pool["id"].as_i64().unwrap();
    let path = format!("/api/v1/worker_pools/{pool_id}/autoscale");
    let clients = [who.admin, token_for(&second.addr, "chief")];
    // Rounds of six requests at once, three to each server: while one
    // decision runs (two seconds), every other request is refused with 409.
    let mut decided = 0;
    for round in 0..3 {
        let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
            let asks: Vec<_> = (0..6)
                .map(|n| {
                    let (client, path) = (&clients[n % 2], &path);
                    scope.spawn(move || client.call("POST", path, None))
                })
                .collect();
            asks.into_iter().map(|a| a.join().unwrap()).collect()
        });
        let won = answers.iter().filter(|(status, _)| *status == 200).count();
        assert!(answers.iter().all(|(status, _)| *status == 200 || *status == 409), "round {round}: {answers:?}");
        assert!(won <= 1, "round {round}: {won} decisions at once: {answers:?}");
        decided += won;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    assert!(decided >= 1, "some request decided");
    // Housekeeping in both processes decides too (every second is due):
    // give it two rounds, then check that no two decisions ever overlapped.
    tokio::time::sleep(Duration::from_secs(22)).await;
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_string).collect();
    assert!(lines.len() >= 2 * (decided + 2), "the requests' and housekeeping's decisions ran: {lines:?}");
    for pair in lines.chunks(2) {
        assert!(pair == ["start", "end"] || pair == ["start"], "decisions overlapped: {lines:?}");
    }
}

// ------------------------------------------------------------ authorization

/// A server with the shell autoscaler, an autoscaled pool `scaled` shared
/// with everyone, and the three people.
async fn authz_setup() -> (Sandbox, Server, People, i64) {
    let sandbox = Sandbox::new();
    sandbox.settings(&shell_settings(&sandbox));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let who = people(&store, &server.addr).await;
    let pool = who.admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({
            "name": "scaled", "isolation_method": "shell", "shared": true,
            "autoscaling_enabled": true, "autoscaler": "cmd", "reevaluate_seconds": 3600,
        })),
    );
    let pool_id = pool["id"].as_i64().unwrap();
    // The first decision (a new pool's is due at once) is done here; the next
    // is due in an hour, so anything in the log later was asked for.
    decide_now(&who.admin, pool_id).await;
    std::fs::remove_file(sandbox.path("scaled.log")).unwrap();
    (sandbox, server, who, pool_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn autoscaling_finding_1_an_ordinary_user_cannot_change_a_pools_autoscaling() {
    let (_sandbox, _server, who, pool_id) = authz_setup().await;
    let path = format!("/api/v1/worker_pools/{pool_id}");
    for (client, name) in [(&who.alice, "alice"), (&who.bob, "bob")] {
        for change in [
            json!({ "autoscaling_enabled": false }),
            json!({ "autoscaler": "broken" }),
            json!({ "maximum": 1000 }),
            json!({ "reevaluate_seconds": 1 }),
        ] {
            let (status, body) = client.call("PATCH", &path, Some(&change));
            assert_eq!(status, 403, "{name} {change}: {body}");
        }
        let (status, body) = client.call(
            "POST",
            "/api/v1/worker_pools",
            Some(&json!({ "name": format!("{name}-pool"), "autoscaling_enabled": true, "autoscaler": "cmd" })),
        );
        assert_eq!(status, 403, "{name} creates an autoscaled pool: {body}");
    }
    let pool = who.admin.ok("GET", &path, None);
    assert_eq!((pool["autoscaler"].as_str(), pool["maximum"].as_i64()), (Some("cmd"), Some(10)), "{pool}");
    // Nor do they see the build machines (host names, build roots).
    let (status, body) = who.alice.call("GET", "/api/v1/workers", None);
    assert_eq!(status, 403, "{body}");
    assert!(who.admin.ok("GET", "/api/v1/workers", None)["results"].is_array());
    // The superuser may.
    who.admin.ok("PATCH", &path, Some(&json!({ "maximum": 4 })));
}

#[tokio::test(flavor = "multi_thread")]
async fn autoscaling_finding_2_an_ordinary_user_cannot_trigger_an_autoscaling_decision() {
    let (sandbox, _server, who, pool_id) = authz_setup().await;
    let path = format!("/api/v1/worker_pools/{pool_id}/autoscale");
    for (client, name) in [(&who.alice, "alice"), (&who.bob, "bob"), (&Client::anonymous(&who.admin.addr), "anonymous")]
    {
        let (status, body) = client.call("POST", &path, None);
        assert!(status == 403 || status == 401, "{name}: {status} {body}");
    }
    // Alice's builds on the shared pool are demand, not input: the command
    // the admin wrote runs with numbers and the pool's name only.
    queue_builds(&who.alice, pool_id, "$(touch pwned)", "echo '; touch pwned'", 2);
    assert!(scaled_log(&sandbox).is_empty(), "nothing ran for the refused requests");
    decide_now(&who.admin, pool_id).await;
    assert_eq!(scaled_log(&sandbox), ["scaled size=2 queued=2 running=0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn autoscaling_finding_3_no_api_caller_can_set_an_autoscaler_command() {
    let (sandbox, _server, who, pool_id) = authz_setup().await;
    let path = format!("/api/v1/worker_pools/{pool_id}");
    // Not even a superuser: commands live in the settings files only.
    for field in ["executor_command", "executor", "planner", "command"] {
        let (status, body) = who.admin.call("PATCH", &path, Some(&json!({ field: "touch /tmp/pwned" })));
        assert_eq!(status, 400, "{field}: {body}");
        assert!(body.to_string().contains(&format!("unknown field '{field}'")), "{field}: {body}");
    }
    // An autoscaler is picked among the configured ones, by name.
    let (status, body) = who.admin.call("PATCH", &path, Some(&json!({ "autoscaler": "nope" })));
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(text.contains("'autoscaler': 'nope' is not an autoscaler") && text.contains("(cmd, broken)"), "{text}");
    let (status, body) = who.admin.call("PATCH", &path, Some(&json!({ "autoscaler": "../../tmp/x" })));
    assert_eq!(status, 400, "{body}");
    // Read-only results of decisions.
    for field in ["autoscaling_message", "autoscaling_status", "last_autoscaled"] {
        let (status, body) = who.admin.call("PATCH", &path, Some(&json!({ field: Value::Null })));
        assert_eq!(status, 400, "{field}: {body}");
        assert!(body.to_string().contains("read-only"), "{field}: {body}");
    }
    // Bad numbers name their field.
    for (field, value) in [("maximum", json!(-1)), ("reevaluate_seconds", json!(0)), ("queued_weight", json!(-0.5))] {
        let (status, body) = who.admin.call("PATCH", &path, Some(&json!({ field: value })));
        assert_eq!(status, 400, "{field}: {body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
    assert!(scaled_log(&sandbox).is_empty());
}

// ------------------------------------------------------------ docker

/// Removes the test's worker containers, whatever happened.
struct Containers {
    prefix: String,
}

impl Containers {
    fn list(&self) -> Vec<String> {
        let out = Command::new("docker")
            .args(["ps", "-q", "--filter", &format!("label=vespene.autoscaler={}", self.prefix)])
            .output()
            .expect("docker ps");
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=vespene.autoscaler={}", self.prefix)])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_autoscaled_pool_grows_to_its_max_runs_the_builds_in_containers_and_shrinks_to_its_min() {
    let test = "a_docker_autoscaled_pool";
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(Db::Postgres, "autoscaling_docker").await.is_none() {
        return;
    }
    if !Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success()) {
        missing_service(test, "no Docker engine answers (scripts/start-docker starts one)");
        return;
    }
    let tag = "vespene-worker:e2e";
    let built = Command::new(workspace_root().join("scripts/build-worker-image"))
        .arg(bin_dir())
        .arg(tag)
        .output()
        .expect("run scripts/build-worker-image");
    assert!(built.status.success(), "build-worker-image: {}", stderr(&built));

    let prefix = format!("vespene-e2e-{}", std::process::id());
    let containers = Containers { prefix: prefix.clone() };
    let database_url = sandbox.database_url.clone().unwrap();
    // The first start makes the key; the workers get it read-only.
    sandbox.settings(&format!(
        r#"plugin_path = ["{bin}"]
[workers]
pools = ["local"]

[plugins.autoscalers.docker]
library = "autoscale-docker"
image = "{tag}"
name_prefix = "{prefix}"
env = {{ VESPENE_DATABASE__URL = "{database_url}", VESPENE_LOG = "info" }}
binds = ["{key}:/var/lib/vespene/secret.key:ro"]
"#,
        bin = bin_dir().display(),
        key = sandbox.path("data/secret.key").display(),
    ));
    let server = sandbox.serve();
    assert!(sandbox.path("data/secret.key").exists());
    let store = sandbox.store().await;
    let who = people(&store, &server.addr).await;
    let pool = who.admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({ "name": "containers", "isolation_method": "shell", "build_latest": false,
                      "minimum": 1, "maximum": 3, "reevaluate_seconds": 1 })),
    );
    let pool_id = pool["id"].as_i64().unwrap();
    let builds = queue_builds(
        &who.admin,
        pool_id,
        "in-a-container",
        "test -f /.dockerenv && echo inside a container; sleep 6",
        6,
    );

    who.admin.ok(
        "PATCH",
        &format!("/api/v1/worker_pools/{pool_id}"),
        Some(&json!({ "autoscaling_enabled": true, "autoscaler": "docker" })),
    );
    let answer = decide_now(&who.admin, pool_id).await;
    assert_eq!(answer["decision"]["size"], 3, "6 queued, cut to the maximum: {answer}");
    assert_eq!(answer["decision"]["applied"], true, "{answer}");

    // Three containers, and three containerised workers heartbeating and listed.
    let mut most = 0;
    let listed: Vec<Value> = wait_for(Duration::from_secs(90), "three containerised workers listed alive", || {
        let running = containers.list().len();
        most = most.max(running);
        let workers = who.admin.ok("GET", "/api/v1/workers", None);
        let ours: Vec<Value> = workers["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["worker_uid"].as_str().is_some_and(|u| u.starts_with(&prefix)))
            .filter(|w| w["alive"] == true && w["pools"] == json!(["containers"]))
            .cloned()
            .collect();
        async move {
            if ours.len() == 3 {
                return Some(ours);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        }
    })
    .await;
    let uids: HashSet<String> = listed.iter().map(|w| w["worker_uid"].as_str().unwrap().to_string()).collect();
    assert_eq!(uids.len(), 3);

    // Every build ran, in one of those containers.
    let deadline = Instant::now() + Duration::from_secs(180);
    for &id in &builds {
        let build = finished(&store, id, deadline.saturating_duration_since(Instant::now())).await;
        most = most.max(containers.list().len());
        assert_eq!(build.status.as_str(), "SUCCESS", "build {id}: {}", log_of(&store, id).await);
        let worker = store.get_worker(build.worker_id.expect("a worker ran it")).await.unwrap().unwrap();
        assert!(uids.contains(&worker.worker_uid), "build {id} ran on {}", worker.worker_uid);
        assert!(log_of(&store, id).await.contains("inside a container"), "build {id}");
    }
    let used: HashSet<i64> = {
        let mut used = HashSet::new();
        for &id in &builds {
            used.insert(store.get_build(id).await.unwrap().unwrap().worker_id.unwrap());
        }
        used
    };
    assert!(used.len() >= 2, "the builds were spread over the containers: {used:?}");

    // Idle: housekeeping shrinks the pool to its minimum, and no further.
    wait_for(Duration::from_secs(90), "the pool shrinking to its minimum of 1", || {
        let running = containers.list().len();
        most = most.max(running);
        async move {
            if running == 1 {
                return Some(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            None
        }
    })
    .await;
    assert!(most <= 3, "never more containers than the maximum: {most}");
    let pool = who.admin.ok("GET", &format!("/api/v1/worker_pools/{pool_id}"), None);
    assert_eq!(pool["autoscaling_status"], 0, "{pool}");
    let message = pool["autoscaling_message"].as_str().unwrap();
    assert!(message.starts_with("scaled to 1 workers (0 queued, 0 running"), "{message}");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(containers.list().len(), 1, "the minimum stays");
    drop(server);
}
