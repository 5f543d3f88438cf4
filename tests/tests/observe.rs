//! Health, metrics, badges and the audit log (issue 19), end to end through
//! the real `vespene` binary and plugin `.so` files, with an administrator
//! and two ordinary users (alice and bob): what each may read, and what the
//! audit log records of what each did. `/metrics` is read with the Prometheus
//! project's own OpenMetrics parser (Python's `prometheus_client`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};
use vespene::store::{AuditActor, AuditFilter, AuditObject, BuildStatus, Store};
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

const METRICS_TOKEN: &str = "scrape-token-for-the-tests-0123456789";

fn settings(extra: &str) -> String {
    settings_with(true, extra)
}

/// Settings with `serve`'s embedded workers on or off.
fn settings_with(embedded: bool, extra: &str) -> String {
    format!(
        "plugin_path = [\"{}\"]\n[workers]\nembedded = {embedded}\nper_pool = 2\n[metrics]\ntoken = \"{METRICS_TOKEN}\"\n{extra}",
        bin_dir().display()
    )
}

struct Team {
    sandbox: Sandbox,
    server: Server,
    store: Store,
    pool: i64,
    admin: Client,
    alice: Client,
    bob: Client,
}

async fn team(db: Db, test: &str, extra: &str) -> Option<Team> {
    team_with(db, test, true, extra).await
}

async fn team_with(db: Db, test: &str, embedded: bool, extra: &str) -> Option<Team> {
    let mut sandbox = Sandbox::new();
    sandbox.use_database(db, test).await?;
    sandbox.settings(&settings_with(embedded, extra));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shared_shell_pool(&store).await;
    user(&store, "root-admin", true, &[]).await;
    user(&store, "alice", false, &[]).await;
    user(&store, "bob", false, &[]).await;
    let (admin, alice, bob) =
        (token_for(&server.addr, "root-admin"), token_for(&server.addr, "alice"), token_for(&server.addr, "bob"));
    Some(Team { sandbox, server, store, pool, admin, alice, bob })
}

fn project(client: &Client, pool: i64, name: &str, script: &str) -> i64 {
    let body = json!({"name": name, "worker_pool_id": pool, "script": script});
    client.ok("POST", "/api/v1/projects", Some(&body))["id"].as_i64().unwrap()
}

async fn run(client: &Client, store: &Store, project: i64, want: BuildStatus) -> i64 {
    let build = client.ok("POST", &format!("/api/v1/projects/{project}/start"), Some(&json!({})));
    let id = build["id"].as_i64().unwrap();
    let b = finished(store, id, Duration::from_secs(60)).await;
    assert_eq!(b.status, want, "{}", log_of(store, id).await);
    id
}

/// Every audit event, newest first, as the administrator reads them.
fn audit(admin: &Client, query: &str) -> Vec<Value> {
    let page = admin.ok("GET", &format!("/api/v1/audit?limit=500{query}"), None);
    page["results"].as_array().unwrap().clone()
}

fn find<'a>(events: &'a [Value], action: &str, kind: &str, id: Option<i64>) -> Option<&'a Value> {
    events.iter().find(|e| {
        e["action"] == action && e["object_kind"] == kind && id.is_none_or(|id| e["object_id"].as_i64() == Some(id))
    })
}

fn event<'a>(events: &'a [Value], action: &str, kind: &str, id: Option<i64>) -> &'a Value {
    find(events, action, kind, id)
        .unwrap_or_else(|| panic!("no {action} of {kind} {id:?} in {}", serde_json::to_string_pretty(events).unwrap()))
}

// ------------------------------------------------------------ health

#[tokio::test(flavor = "multi_thread")]
async fn healthz_and_readyz_answer_without_a_login_and_readyz_is_503_naming_the_database_when_it_is_gone() {
    // SQLite: both answer.
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let server = sandbox.serve();
    assert_eq!(server.get("/healthz").0, 200);
    let (status, body) = server.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["database"], "sqlite");
    drop(server);

    // PostgreSQL: the database is dropped under the running server.
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(Db::Postgres, "readyz").await.is_none() {
        return;
    }
    sandbox.settings(&settings(""));
    let server = sandbox.serve();
    let (status, body) = server.get("/readyz");
    assert_eq!(status, 200, "{body}");
    let url = sandbox.database_url.clone().unwrap();
    let (base, name) = url.rsplit_once('/').unwrap();
    let admin_url =
        format!("{base}/{}", std::env::var("VESPENE_TEST_POSTGRES_URL").unwrap().rsplit_once('/').unwrap().1);
    {
        use sqlx::{Connection, Executor};
        let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
        // FORCE may not cut an autovacuum worker (it runs as the bootstrap
        // superuser, 42501) and a plain drop waits on it (55006); such a worker
        // leaves within moments, so the drop is tried again until it goes.
        let mut tries = 0;
        while let Err(err) = admin.execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str()).await {
            let code = err.as_database_error().and_then(|e| e.code()).unwrap_or_default().into_owned();
            tries += 1;
            assert!(matches!(code.as_str(), "42501" | "55006") && tries < 100, "dropping {name}: {err}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        admin.close().await.ok();
    }
    let (status, body) = server.get("/readyz");
    assert_eq!(status, 503, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["database"], "postgres", "{body}");
    assert!(answer["error"].as_str().unwrap().contains("the database (postgres)"), "{body}");
    let credentials = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
    assert!(!body.contains(credentials), "no credentials in the answer: {body}");
    // Liveness is not readiness: the process still answers.
    assert_eq!(server.get("/healthz").0, 200);
}

// ------------------------------------------------------------ metrics

/// `/metrics` parsed by prometheus_client's OpenMetrics parser:
/// family -> (type, [(sample name, labels, value)]).
type Families = HashMap<String, (String, Vec<(String, HashMap<String, String>, f64)>)>;

fn parse_metrics(text: &str) -> Families {
    use std::io::Write;
    const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, [[s.name, s.labels, s.value] for s in f.samples]]
print(json.dumps(out))
"#;
    // Debian's interpreter, where python3-prometheus-client installs (not a pyenv one on PATH).
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", PARSE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup --test installs python3-prometheus-client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the OpenMetrics parser refused /metrics: {}\n{text}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sample(f: &Families, family: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (_, samples) = f.get(family)?;
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
}

fn scrape(addr: &str, auth: &str) -> (u16, String) {
    http_request(addr, "GET", "/metrics", &[("Authorization", auth)], "")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_with_prometheus_client_and_move_as_builds_run() {
    let Some(t) = team(Db::Sqlite, "metrics", "").await else { return };
    let bearer = format!("Bearer {METRICS_TOKEN}");
    let (status, before) = scrape(&t.server.addr, &bearer);
    assert_eq!(status, 200, "{before}");
    let before = parse_metrics(&before);
    assert_eq!(
        sample(&before, "vespene_builds_finished", "vespene_builds_finished_total", &[("status", "SUCCESS")]),
        Some(0.0),
        "outcomes start at zero: {before:?}"
    );
    let check_families = |f: &Families| {
        for (family, kind) in [
            ("vespene_builds_finished", "counter"),
            ("vespene_build_duration_seconds", "histogram"),
            ("vespene_plugin_errors", "counter"),
            ("vespene_http_requests", "counter"),
            ("vespene_http_request_duration_seconds", "histogram"),
            ("vespene_queue_depth", "gauge"),
            ("vespene_running_builds", "gauge"),
            ("vespene_worker_heartbeat_age_seconds", "gauge"),
        ] {
            assert_eq!(f.get(family).map(|f| f.0.as_str()), Some(kind), "{family}: {f:?}");
        }
    };
    let count = |f: &Families, status: &str| {
        sample(f, "vespene_builds_finished", "vespene_builds_finished_total", &[("status", status)]).unwrap_or(0.0)
    };
    let durations = |f: &Families| {
        sample(f, "vespene_build_duration_seconds", "vespene_build_duration_seconds_count", &[]).unwrap_or(0.0)
    };
    let http = |f: &Families| {
        sample(f, "vespene_http_requests", "vespene_http_requests_total", &[("method", "POST"), ("status", "2xx")])
            .unwrap_or(0.0)
    };
    let git_errors = |f: &Families| {
        sample(f, "vespene_plugin_errors", "vespene_plugin_errors_total", &[("plugin", "git"), ("kind", "scm")])
            .unwrap_or(0.0)
    };

    let ok = project(&t.alice, t.pool, "metrics-ok", "#!/bin/sh\necho fine\n");
    let bad = project(&t.alice, t.pool, "metrics-bad", "#!/bin/sh\nexit 3\n");
    run(&t.alice, &t.store, ok, BuildStatus::Success).await;
    run(&t.alice, &t.store, bad, BuildStatus::Failure).await;
    // A checkout from nowhere: the git plugin's call fails.
    let body = json!({"name": "metrics-nowhere", "worker_pool_id": t.pool, "scm_type": "git",
                      "repo_url": "http://127.0.0.1:1/nothing.git", "script": "#!/bin/sh\ntrue\n"});
    let nowhere = t.alice.ok("POST", "/api/v1/projects", Some(&body))["id"].as_i64().unwrap();
    run(&t.alice, &t.store, nowhere, BuildStatus::Failure).await;
    let (status, after) = scrape(&t.server.addr, &bearer);
    assert_eq!(status, 200);
    let after = parse_metrics(&after);
    check_families(&after);
    assert_eq!(count(&after, "SUCCESS") - count(&before, "SUCCESS"), 1.0, "{after:?}");
    assert_eq!(count(&after, "FAILURE") - count(&before, "FAILURE"), 2.0, "{after:?}");
    assert_eq!(durations(&after) - durations(&before), 3.0, "{after:?}");
    assert!(http(&after) > http(&before), "{after:?}");
    assert_eq!(git_errors(&after) - git_errors(&before), 1.0, "{after:?}");
    assert_eq!(sample(&after, "vespene_queue_depth", "vespene_queue_depth", &[("pool", "shell")]), Some(0.0));
    let (_, heartbeats) = &after["vespene_worker_heartbeat_age_seconds"];
    assert!(!heartbeats.is_empty() && heartbeats.iter().all(|(_, _, age)| *age < 60.0), "{heartbeats:?}");
}

/// Builds that standalone workers run are counted by those workers, which
/// serve their own `/metrics` for the scrape token (`--metrics-listen`).
#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_worker_serves_the_outcomes_of_its_own_builds_for_the_token_only() {
    let Some(t) = team_with(Db::Sqlite, "worker_metrics", false, "").await else { return };
    let addr = format!("127.0.0.1:{}", vespene_e2e::servers::free_port());
    let _worker = WorkerProcess::spawn(&t.sandbox, &["shell", "--metrics-listen", &addr]);
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() || http_request(&addr, "GET", "/healthz", &[], "").0 != 200 {
        assert!(started.elapsed() < Duration::from_secs(30), "the worker's /healthz never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ok = project(
        &t.alice,
        t.pool,
        "worker-ok",
        "#!/bin/sh
echo fine
",
    );
    let bad = project(
        &t.bob,
        t.pool,
        "worker-bad",
        "#!/bin/sh
exit 4
",
    );
    run(&t.alice, &t.store, ok, BuildStatus::Success).await;
    run(&t.bob, &t.store, bad, BuildStatus::Failure).await;

    let (status, text) =
        http_request(&addr, "GET", "/metrics", &[("Authorization", &format!("Bearer {METRICS_TOKEN}"))], "");
    assert_eq!(status, 200, "{text}");
    let worker = parse_metrics(&text);
    let count = |f: &Families, status: &str| {
        sample(f, "vespene_builds_finished", "vespene_builds_finished_total", &[("status", status)]).unwrap_or(0.0)
    };
    assert_eq!((count(&worker, "SUCCESS"), count(&worker, "FAILURE")), (1.0, 1.0), "{worker:?}");
    assert_eq!(
        sample(&worker, "vespene_build_duration_seconds", "vespene_build_duration_seconds_count", &[]),
        Some(2.0)
    );
    // The serve process ran none of them, and says so.
    let (_, served) = scrape(&t.server.addr, &format!("Bearer {METRICS_TOKEN}"));
    assert_eq!(count(&parse_metrics(&served), "SUCCESS"), 0.0);

    // A worker has no accounts: a user's API token, a wrong token or none are refused.
    let alice_token = t.alice.token.clone().unwrap();
    for auth in [format!("Bearer {alice_token}"), "Bearer wrong".to_string(), String::new()] {
        let headers: Vec<(&str, &str)> = if auth.is_empty() { vec![] } else { vec![("Authorization", &auth)] };
        let (status, body) = http_request(&addr, "GET", "/metrics", &headers, "");
        assert_eq!(status, 401, "{auth}: {body}");
        assert!(!body.contains("vespene_builds_finished"), "{body}");
    }
    assert_eq!(http_request(&addr, "GET", "/api/v1/projects", &[], "").0, 404);

    // Without a token to protect it, the worker refuses to serve metrics at all.
    let bare = Sandbox::new();
    bare.settings(&format!("plugin_path = [\"{}\"]\n", bin_dir().display()));
    let out = bare.run(&["worker", "--metrics-listen", "127.0.0.1:0", "--max-builds", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--metrics-listen needs the setting [metrics] token"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_read_queue_depth_running_builds_and_heartbeats_from_the_database() {
    // No embedded workers: what is queued stays queued until a worker comes.
    let Some(t) = team_with(Db::Sqlite, "metrics_db", false, "").await else { return };
    let bearer = format!("Bearer {METRICS_TOKEN}");
    let read = || {
        let (status, text) = scrape(&t.server.addr, &bearer);
        assert_eq!(status, 200, "{text}");
        parse_metrics(&text)
    };
    let depth = |f: &Families| sample(f, "vespene_queue_depth", "vespene_queue_depth", &[("pool", "shell")]);
    let running = |f: &Families| sample(f, "vespene_running_builds", "vespene_running_builds", &[]);
    assert_eq!((depth(&read()), running(&read())), (Some(0.0), Some(0.0)));
    let slow = project(&t.alice, t.pool, "slow", "#!/bin/sh\nsleep 30\n");
    let quick = project(&t.bob, t.pool, "quick", "#!/bin/sh\ntrue\n");
    let first = t.alice.ok("POST", &format!("/api/v1/projects/{slow}/start"), Some(&json!({})))["id"].as_i64().unwrap();
    t.bob.ok("POST", &format!("/api/v1/projects/{quick}/start"), Some(&json!({})));
    let f = read();
    assert_eq!((depth(&f), running(&f)), (Some(2.0), Some(0.0)), "{f:?}");
    // A family without samples is left out of the parsed exposition.
    assert!(f.get("vespene_worker_heartbeat_age_seconds").is_none_or(|h| h.1.is_empty()), "no worker yet: {f:?}");
    let _worker = WorkerProcess::spawn(&t.sandbox, &["shell", "--slots", "1"]);
    wait_for(Duration::from_secs(60), "the slow build to run", || async {
        (t.store.get_build(first).await.unwrap().unwrap().status == BuildStatus::Running).then_some(())
    })
    .await;
    let f = read();
    assert_eq!((depth(&f), running(&f)), (Some(1.0), Some(1.0)), "one slot: {f:?}");
    let (_, heartbeats) = &f["vespene_worker_heartbeat_age_seconds"];
    assert!(heartbeats.len() == 1 && heartbeats[0].2 < 60.0, "{heartbeats:?}");
    t.alice.ok("POST", &format!("/api/v1/builds/{first}/stop"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn threat_only_superusers_and_the_scrape_token_read_metrics() {
    let Some(t) = team(Db::Sqlite, "metrics_access", "").await else { return };
    let addr = t.server.addr.clone();
    assert_eq!(http_request(&addr, "GET", "/metrics", &[], "").0, 401, "anonymous");
    assert_eq!(scrape(&addr, "Bearer not-the-token").0, 401, "a wrong token");
    let alice = t.alice.token.clone().unwrap();
    assert_eq!(scrape(&addr, &format!("Bearer {alice}")).0, 403, "alice's API token");
    let alice_session = session_from_login(&addr, "alice");
    let cookie = alice_session.cookie.clone().unwrap();
    assert_eq!(http_request(&addr, "GET", "/metrics", &[("Cookie", &cookie)], "").0, 403, "alice's session");
    let admin = t.admin.token.clone().unwrap();
    assert_eq!(scrape(&addr, &format!("Bearer {admin}")).0, 200, "a superuser's token");
    assert_eq!(scrape(&addr, &format!("Bearer {METRICS_TOKEN}")).0, 200, "the scrape token");
    let _ = (&t.sandbox, &t.bob);
}

// ------------------------------------------------------------ badges

fn badge(addr: &str, auth: Option<&Client>, project: i64) -> (u16, String) {
    let path = format!("/api/v1/projects/{project}/badge.svg");
    match auth {
        Some(c) => c.text("GET", &path, None),
        None => http_request(addr, "GET", &path, &[], ""),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn threat_a_badge_is_public_only_when_its_project_says_so_and_shows_the_last_finished_status() {
    let Some(t) = team(Db::Sqlite, "badges", "").await else { return };
    let addr = t.server.addr.clone();
    let p = project(&t.alice, t.pool, "badged", "#!/bin/sh\necho fine\n");
    let shows = |(status, body): (u16, String), word: &str| {
        assert_eq!(status, 200, "{body}");
        assert!(body.starts_with("<svg") && body.contains(&format!(">{word}</text>")), "{word}: {body}");
    };
    shows(badge(&addr, Some(&t.alice), p), "unknown");
    // Not public: the owner and the administrator see it, bob and anonymous
    // get the same 404 as for a project that does not exist.
    shows(badge(&addr, Some(&t.admin), p), "unknown");
    let missing = badge(&addr, Some(&t.bob), 999_999);
    assert_eq!(missing.0, 404);
    assert_eq!(badge(&addr, Some(&t.bob), p).0, 404);
    assert_eq!(badge(&addr, None, p).0, 404);
    run(&t.alice, &t.store, p, BuildStatus::Success).await;
    shows(badge(&addr, Some(&t.alice), p), "passing");
    t.alice.ok("PATCH", &format!("/api/v1/projects/{p}"), Some(&json!({"script": "#!/bin/sh\nexit 1\n"})));
    run(&t.alice, &t.store, p, BuildStatus::Failure).await;
    shows(badge(&addr, Some(&t.alice), p), "failing");
    // Bob may not make alice's badge public.
    let (status, body) = t.bob.call("PATCH", &format!("/api/v1/projects/{p}"), Some(&json!({"public_badge": true})));
    assert!(status == 403 || status == 404, "{status} {body}");
    assert_eq!(badge(&addr, None, p).0, 404);
    // Alice may: then anyone sees it.
    t.alice.ok("PATCH", &format!("/api/v1/projects/{p}"), Some(&json!({"public_badge": true})));
    shows(badge(&addr, None, p), "failing");
    shows(badge(&addr, Some(&t.bob), p), "failing");
    let _ = &t.sandbox;
}

// ------------------------------------------------------------ audit log

#[tokio::test(flavor = "multi_thread")]
async fn audit_records_who_did_what_through_the_api_and_ui_on_sqlite_and_postgres() {
    for db in [Db::Sqlite, Db::Postgres] {
        let Some(t) = team(db, "audit", "").await else { continue };
        let addr = t.server.addr.clone();

        // A failed login, with the username tried and the address.
        let (status, _) = Client::anonymous(&addr).call(
            "POST",
            "/api/v1/login",
            Some(&json!({"username": "alice", "password": "not-her-password"})),
        );
        assert_eq!(status, 401);

        let p = project(&t.alice, t.pool, "audited", "#!/bin/sh\necho fine\n");
        t.alice.ok("PATCH", &format!("/api/v1/projects/{p}"), Some(&json!({"name": "audited-renamed", "timeout": 90})));
        let build = run(&t.alice, &t.store, p, BuildStatus::Success).await;
        let slow = project(&t.alice, t.pool, "slow", "#!/bin/sh\nsleep 30\n");
        let running =
            t.alice.ok("POST", &format!("/api/v1/projects/{slow}/start"), Some(&json!({})))["id"].as_i64().unwrap();
        t.alice.ok("POST", &format!("/api/v1/builds/{running}/stop"), None);
        finished(&t.store, running, Duration::from_secs(60)).await;
        let bobs = project(&t.bob, t.pool, "bobs", "#!/bin/sh\ntrue\n");
        // Bob deletes his project through the UI form: the same record.
        let bob_session = session_from_login(&addr, "bob");
        let form = format!("csrf_token={}", bob_session.csrf.clone().unwrap());
        let (status, body) = http_request(
            &addr,
            "POST",
            &format!("/ui/projects/{bobs}/delete"),
            &[
                ("Cookie", bob_session.cookie.as_deref().unwrap()),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &form,
        );
        assert_eq!(status, 303, "{body}");
        let alice_token = t.alice.ok("GET", "/api/v1/tokens", None)["results"][0]["id"].as_i64().unwrap();
        let bob_user = t.admin.ok("GET", "/api/v1/users?username=bob", None)["results"][0]["id"].as_i64().unwrap();
        t.admin.ok("PATCH", &format!("/api/v1/users/{bob_user}"), Some(&json!({"first_name": "Robert"})));
        // Revoking alice's token last: her client uses it until here.
        t.alice.ok("DELETE", &format!("/api/v1/tokens/{alice_token}"), None);

        let events = audit(&t.admin, "");
        let plugins = event(&events, "plugins.loaded", "plugins", None);
        assert_eq!(plugins["actor"], "system");
        assert!(plugins["details"]["plugins"].as_array().is_some_and(|p| p.iter().any(|p| p["plugin"] == "git")));
        let failed = event(&events, "login_failed", "user", None);
        assert_eq!((&failed["actor"], &failed["details"]["username"]), (&json!("anonymous"), &json!("alice")));
        assert_eq!(failed["remote_addr"], "127.0.0.1");
        let login = events.iter().find(|e| e["action"] == "login" && e["actor"] == "alice").expect("alice's login");
        assert_eq!(login["remote_addr"], "127.0.0.1");
        assert_eq!(event(&events, "token.create", "token", Some(alice_token))["actor"], "alice");
        assert_eq!(event(&events, "token.revoke", "token", Some(alice_token))["actor"], "alice");
        let created = event(&events, "create", "project", Some(p));
        assert_eq!((&created["actor"], &created["object_name"]), (&json!("alice"), &json!("audited")));
        let updated = event(&events, "update", "project", Some(p));
        assert_eq!(updated["actor"], "alice");
        assert_eq!(updated["object_name"], "audited-renamed");
        assert_eq!(updated["details"]["fields"], json!(["name", "timeout"]));
        assert_eq!(updated["details"]["changes"]["name"], json!({"old": "audited", "new": "audited-renamed"}));
        assert_eq!(updated["details"]["changes"]["timeout"], json!({"old": 60, "new": 90}));
        assert_eq!(event(&events, "build.start", "build", Some(build))["actor"], "alice");
        assert_eq!(event(&events, "build.stop", "build", Some(running))["actor"], "alice");
        let deleted = event(&events, "delete", "project", Some(bobs));
        assert_eq!((&deleted["actor"], &deleted["object_name"]), (&json!("bob"), &json!("bobs")));
        let renamed = event(&events, "update", "user", Some(bob_user));
        assert_eq!(renamed["actor"], "root-admin");
        assert_eq!(renamed["details"]["changes"]["first_name"], json!({"old": "", "new": "Robert"}));

        // Filters and paging.
        let alices = audit(&t.admin, "&actor=alice&object_kind=project");
        assert!(!alices.is_empty() && alices.iter().all(|e| e["actor"] == "alice" && e["object_kind"] == "project"));
        let one = audit(&t.admin, &format!("&object_kind=project&object_id={p}&action=update"));
        assert_eq!(one.len(), 1, "{one:?}");
        let first = t.admin.ok("GET", "/api/v1/audit?limit=2", None);
        let cursor = first["next_before"].as_i64().expect("a next page");
        let second = t.admin.ok("GET", &format!("/api/v1/audit?limit=2&before={cursor}"), None);
        let ids = |v: &Value| v["results"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
        let (a, b): (Vec<i64>, Vec<i64>) = (ids(&first), ids(&second));
        assert!(a.len() == 2 && b.len() == 2 && a[1] > b[0], "{a:?} then {b:?}");
        let future = audit(&t.admin, "&since=2999-01-01");
        assert!(future.is_empty());
        let (status, body) = t.admin.call("GET", "/api/v1/audit?since=last-week", None);
        assert_eq!((status, body["field"].as_str()), (400, Some("since")), "{body}");
        let (status, body) = t.admin.call("GET", "/api/v1/audit?limit=100000", None);
        assert_eq!((status, body["field"].as_str()), (400, Some("limit")), "{body}");
        let _ = &t.sandbox;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn threat_a_secret_change_is_recorded_by_field_name_never_by_value() {
    let Some(t) = team(Db::Sqlite, "audit_secrets", "").await else { return };
    let p = project(&t.alice, t.pool, "with-secrets", "#!/bin/sh\ntrue\n");
    let secrets =
        ["db-password-value-8d1f", "webhook-token-value-77aa", "login-password-value-c3c3", "New-password-5e5e!"];
    t.alice.ok(
        "PATCH",
        &format!("/api/v1/projects/{p}"),
        Some(&json!({
            "variables": json!({"DB_PASS": {"secret": secrets[0]}}).to_string(),
            "webhook_token": secrets[1],
        })),
    );
    let login = t.alice.ok(
        "POST",
        "/api/v1/service_logins",
        Some(&json!({"name": "alices-login", "username": "git", "password": secrets[2]})),
    );
    let alice_id = t.admin.ok("GET", "/api/v1/users?username=alice", None)["results"][0]["id"].as_i64().unwrap();
    t.admin.ok("PATCH", &format!("/api/v1/users/{alice_id}"), Some(&json!({"password": secrets[3]})));

    let events = audit(&t.admin, "");
    let update = event(&events, "update", "project", Some(p));
    assert_eq!(update["details"]["fields"], json!(["variables", "webhook_token"]), "{update}");
    let created = event(&events, "create", "service_login", login["id"].as_i64());
    assert!(created["details"]["fields"].as_array().unwrap().contains(&json!("password")), "{created}");
    let reset = event(&events, "update", "user", Some(alice_id));
    assert_eq!(reset["details"]["fields"], json!(["password"]), "{reset}");
    // Nowhere in the log, as the API shows it or as stored.
    let everything = serde_json::to_string(&events).unwrap();
    let stored = t.store.list_audit(&AuditFilter { limit: 10_000, ..Default::default() }).await.unwrap();
    let stored = format!("{stored:?}");
    for secret in secrets {
        assert!(!everything.contains(secret), "{secret} in the audit log: {everything}");
        assert!(!stored.contains(secret), "{secret} stored in audit_events");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn threat_ordinary_users_cannot_read_the_audit_log() {
    let Some(t) = team(Db::Sqlite, "audit_access", "").await else { return };
    let addr = t.server.addr.clone();
    assert_eq!(t.alice.call("GET", "/api/v1/audit", None).0, 403);
    assert_eq!(t.bob.call("GET", "/api/v1/audit?actor=alice", None).0, 403);
    assert_eq!(Client::anonymous(&addr).call("GET", "/api/v1/audit", None).0, 401);
    let page = |who: &str, path: &str| {
        let session = session_from_login(&addr, who);
        http_request(&addr, "GET", path, &[("Cookie", session.cookie.as_deref().unwrap())], "")
    };
    let (status, body) = page("alice", "/ui/audit");
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("login_failed") && !body.contains("token.create"), "{body}");
    assert!(!page("alice", "/ui/dashboard").1.contains(">Audit</a>"), "no link for alice");
    let (status, body) = page("root-admin", "/ui/audit?actor=alice");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Audit log") && body.contains("token.create"), "{body}");
    assert!(page("root-admin", "/ui/dashboard").1.contains(">Audit</a>"), "a link for superusers");
    let (status, body) = page("root-admin", "/ui/audit?since=soon");
    assert_eq!(status, 400);
    assert!(body.contains("&#x27;since&#x27; must be") || body.contains("'since' must be"), "{body}");
}

/// Puts an event `days` old straight into the database.
async fn old_event(store: &Store, days: i64) -> i64 {
    let object = AuditObject::new("project", Some(1), "ancient");
    let id = store.record_audit(&AuditActor::system(), "update", &object, json!({})).await.unwrap();
    let at = (chrono::Utc::now() - chrono::Duration::days(days)).timestamp_millis();
    sqlx::query("UPDATE audit_events SET at = $1 WHERE id = $2").bind(at).bind(id).execute(store.pool()).await.unwrap();
    id
}

async fn has_event(store: &Store, id: i64) -> bool {
    let all = store.list_audit(&AuditFilter { limit: 10_000, ..Default::default() }).await.unwrap();
    all.iter().any(|e| e.id == id)
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_retention_removes_old_events_in_housekeeping_and_cleanup() {
    let Some(t) = team(Db::Sqlite, "audit_retention", "[retention]\naudit_keep_days = 30\n").await else { return };
    let old = old_event(&t.store, 31).await;
    let recent = old_event(&t.store, 29).await;
    wait_for(Duration::from_secs(60), "housekeeping to remove the old event", || async {
        (!has_event(&t.store, old).await).then_some(())
    })
    .await;
    assert!(has_event(&t.store, recent).await, "a 29-day-old event is kept");
    let Team { sandbox, server, store, .. } = t;
    drop(server);
    let older = old_event(&store, 40).await;
    let out = sandbox.run(&["cleanup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("audit log: removed 1 event(s) older than 30 day(s)"), "{}", stdout(&out));
    assert!(!has_event(&store, older).await && has_event(&store, recent).await);
}
