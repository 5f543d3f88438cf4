//! Retention (issue 18), end to end through the real `vespene` binary and the
//! real plugin `.so` files: per-project keep rules for logs and build roots
//! applied by worker housekeeping, pinned builds, the administrator's defaults
//! and maximums, `vespene cleanup` with the same rules, and the threats:
//! another user pinning, unpinning or changing the keep rules of a project
//! that is not theirs, and one project's rule reaching another's builds.
//! Housekeeping runs every 10 seconds, so the tests wait for its effect.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use vespene::store::{BuildStatus, Store, WorkerPool};
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

/// Long enough for two housekeeping passes (every 10 s) on a busy machine.
const PRUNED_WITHIN: Duration = Duration::from_secs(60);

fn settings(extra: &str) -> String {
    format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 2\n{extra}", bin_dir().display())
}

/// A shared pool with shell isolation (so the test, as root, can look at the build roots).
async fn shell_pool(store: &Store) -> i64 {
    let pool =
        WorkerPool { name: "shell".into(), isolation_method: "shell".into(), shared: true, ..Default::default() };
    store.create_worker_pool(&pool).await.unwrap()
}

/// A server with `[retention]` settings `retention`, a shared shell pool, and
/// clients for alice and bob (ordinary users) and an administrator.
struct Team {
    sandbox: Sandbox,
    server: Server,
    store: Store,
    pool: i64,
    admin: Client,
    alice: Client,
    bob: Client,
}

async fn team(retention: &str) -> Team {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(retention));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shell_pool(&store).await;
    user(&store, "root-admin", true, &[]).await;
    user(&store, "alice", false, &[]).await;
    user(&store, "bob", false, &[]).await;
    let (admin, alice, bob) =
        (token_for(&server.addr, "root-admin"), token_for(&server.addr, "alice"), token_for(&server.addr, "bob"));
    Team { sandbox, server, store, pool, admin, alice, bob }
}

fn create_project(client: &Client, pool: i64, name: &str, extra: Value) -> i64 {
    let mut body =
        json!({"name": name, "worker_pool_id": pool, "script": "#!/bin/sh\necho \"hello from $0\"\ntouch made-here\n"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    client.ok("POST", "/api/v1/projects", Some(&body))["id"].as_i64().unwrap()
}

/// Starts `project` and waits until the build finished successfully.
async fn run(client: &Client, store: &Store, project: i64) -> i64 {
    let build = client.ok("POST", &format!("/api/v1/projects/{project}/start"), Some(&json!({})));
    let id = build["id"].as_i64().unwrap();
    let b = finished(store, id, Duration::from_secs(60)).await;
    assert_eq!(b.status, BuildStatus::Success, "{}", log_of(store, id).await);
    assert!(Path::new(&b.working_dir).join("made-here").exists(), "build {id} has its root");
    id
}

fn build(client: &Client, id: i64) -> Value {
    client.ok("GET", &format!("/api/v1/builds/{id}"), None)
}

fn root_of(store_build: &Value) -> std::path::PathBuf {
    Path::new(store_build["working_dir"].as_str().unwrap()).to_path_buf()
}

/// Waits until housekeeping removed the log of every build in `logs` and the
/// root of every build in `roots`.
async fn pruned(store: &Store, logs: &[i64], roots: &[i64]) {
    wait_for(PRUNED_WITHIN, "housekeeping to apply the keep rules", || async move {
        for id in logs {
            store.get_build(*id).await.ok()??.log_removed_at?;
        }
        for id in roots {
            store.get_build(*id).await.ok()??.root_removed_at?;
        }
        Some(())
    })
    .await;
}

/// POSTs a UI form as `session` (with its CSRF token); answers the status.
fn post_form(session: &Client, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let mut body = format!("csrf_token={}", session.csrf.as_deref().unwrap());
    for (k, v) in fields {
        body += &format!("&{k}={v}");
    }
    let cookie = session.cookie.clone().unwrap();
    http_request(
        &session.addr,
        "POST",
        path,
        &[("Cookie", cookie.as_str()), ("Content-Type", "application/x-www-form-urlencoded")],
        &body,
    )
}

/// A project with keep rules after several builds: housekeeping removes the
/// old logs (the records stay, saying when) and the old build roots; the
/// pinned build and the running build keep theirs; unpinned, a build is the
/// rules' again.
#[tokio::test(flavor = "multi_thread")]
async fn housekeeping_prunes_old_logs_and_roots_and_keeps_pinned_and_running_builds() {
    let t = team("").await;
    let project = create_project(&t.alice, t.pool, "web", json!({}));
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(run(&t.alice, &t.store, project).await);
    }
    let pinned = t.alice.ok("POST", &format!("/api/v1/builds/{}/pin", ids[0]), None);
    assert_eq!(pinned["pinned"], json!(true), "{pinned}");
    // A build of the same project still running when the rules apply.
    let slow = json!({"script": "#!/bin/sh\necho started\nsleep 120\n"});
    t.alice.ok("PATCH", &format!("/api/v1/projects/{project}"), Some(&slow));
    let running =
        t.alice.ok("POST", &format!("/api/v1/projects/{project}/start"), Some(&json!({})))["id"].as_i64().unwrap();
    wait_for(Duration::from_secs(60), "the slow build to print", || async {
        stdout_of(&t.store, running).await.iter().any(|l| l.ends_with("started")).then_some(())
    })
    .await;

    // Logs of the last 2 builds, roots of the last 1.
    let rules = json!({"log_keep_builds": 2, "root_keep_builds": 1});
    let saved = t.alice.ok("PATCH", &format!("/api/v1/projects/{project}"), Some(&rules));
    assert_eq!((saved["log_keep_builds"].as_i64(), saved["root_keep_days"].as_i64()), (Some(2), None), "{saved}");
    pruned(&t.store, &[ids[1], ids[2]], &[ids[1], ids[2], ids[3]]).await;

    for id in [ids[1], ids[2]] {
        let b = build(&t.alice, id);
        assert!(b["log_removed_at"].is_string(), "{b}");
        assert_eq!(b["status"], json!("SUCCESS"), "the record stays: {b}");
        assert!(b["output_lines"].as_i64().unwrap() > 0, "and says how many lines there were: {b}");
        let out = t.alice.ok("GET", &format!("/api/v1/builds/{id}/output"), None);
        assert_eq!(out["lines"], json!([]), "{out}");
        assert_eq!(out["log_removed_at"], b["log_removed_at"], "{out}");
    }
    for id in [ids[3], ids[4], ids[0]] {
        let b = build(&t.alice, id);
        assert!(b["log_removed_at"].is_null(), "build {id} keeps its log: {b}");
        assert!(stdout_of(&t.store, id).await.iter().any(|l| l.contains("hello from")), "build {id}");
    }
    for id in [ids[1], ids[2], ids[3]] {
        let b = build(&t.alice, id);
        assert!(b["root_removed_at"].is_string(), "{b}");
        assert!(!root_of(&b).exists(), "build {id}'s root is gone");
    }
    for id in [ids[0], ids[4]] {
        let b = build(&t.alice, id);
        assert!(b["root_removed_at"].is_null() && root_of(&b).join("made-here").exists(), "build {id}: {b}");
    }
    // The running build is neither counted nor touched.
    let r = build(&t.alice, running);
    assert_eq!(r["status"], json!("RUNNING"));
    assert!(r["log_removed_at"].is_null() && r["root_removed_at"].is_null() && root_of(&r).exists(), "{r}");
    assert!(!stdout_of(&t.store, running).await.is_empty());

    // The page says what happened; the files of a removed root are gone (410).
    let session = session_from_login(&t.server.addr, "alice");
    let (status, page) = session.text("GET", &format!("/ui/builds/{}", ids[1]), None);
    assert_eq!(status, 200);
    assert!(page.contains("was removed by retention on"), "{page}");
    let (status, page) = session.text("GET", &format!("/ui/builds/{}/files/", ids[3]), None);
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("removed by retention"), "{page}");
    let (_, page) = session.text("GET", &format!("/ui/builds/{}", ids[0]), None);
    assert!(page.contains("id=\"pin-build\"") && page.contains("Unpin"), "the pinned build offers Unpin");

    // A pinned build cannot be deleted; unpinned (the UI button), the rules take it.
    let (status, body) = t.alice.call("DELETE", &format!("/api/v1/builds/{}", ids[0]), None);
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("pinned"), "{body}");
    let (status, _) = post_form(&session, &format!("/ui/builds/{}/unpin", ids[0]), &[]);
    assert_eq!(status, 303);
    assert_eq!(build(&t.alice, ids[0])["pinned"], json!(false));
    pruned(&t.store, &[ids[0]], &[ids[0]]).await;
    assert!(build(&t.alice, ids[4])["log_removed_at"].is_null(), "the newest keep theirs");

    t.alice.ok("POST", &format!("/api/v1/builds/{running}/stop"), None);
    finished(&t.store, running, Duration::from_secs(60)).await;
    drop(t.server);
}

/// The administrator's maximum: a project asking for more is refused, naming
/// the field and the maximum; a value saved before the maximum was lowered is
/// held to it; a project with no rule of its own gets the default. Bad
/// settings stop the server with one line naming the key.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_maximum_refuses_larger_rules_caps_older_ones_and_the_default_applies() {
    let t = team("[retention]\nlog_keep_builds = 1\nmax_log_keep_builds = 3\nmax_root_keep_days = 30\n").await;
    let (status, body) = t.alice.call(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "big", "worker_pool_id": t.pool, "log_keep_builds": 4})),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], json!("log_keep_builds"), "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("at most 3") && error.contains("retention.max_log_keep_builds"), "{error}");
    // The maximum binds the administrator's projects too.
    let (status, body) = t.admin.call(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "big", "worker_pool_id": t.pool, "root_keep_days": 31})),
    );
    assert_eq!((status, body["field"].as_str()), (400, Some("root_keep_days")), "{body}");

    let capped = create_project(&t.alice, t.pool, "capped", json!({"log_keep_builds": 3}));
    // The project form says what blank means and what is allowed.
    let session = session_from_login(&t.server.addr, "alice");
    let (status, page) = session.text("GET", &format!("/ui/projects/{capped}/edit"), None);
    assert_eq!(status, 200);
    assert!(
        page.contains("The server&#x27;s default: 1 build. At most 3.")
            || page.contains("The server's default: 1 build. At most 3."),
        "{page}"
    );
    assert!(page.contains("name=\"root_keep_days\""), "{page}");
    let defaulted = create_project(&t.alice, t.pool, "defaulted", json!({}));
    // As if saved before the administrator lowered the maximum.
    sqlx::query("UPDATE projects SET log_keep_builds = 10 WHERE id = $1")
        .bind(capped)
        .execute(t.store.pool())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(run(&t.alice, &t.store, capped).await);
    }
    let first = run(&t.alice, &t.store, defaulted).await;
    let second = run(&t.alice, &t.store, defaulted).await;
    pruned(&t.store, &[ids[0], ids[1], first], &[]).await;
    for id in [ids[2], ids[3], ids[4], second] {
        assert!(build(&t.alice, id)["log_removed_at"].is_null(), "build {id} keeps its log");
    }
    // Its next save is asked to come within the maximum.
    let (status, body) =
        t.alice.call("PATCH", &format!("/api/v1/projects/{capped}"), Some(&json!({"description": "x"})));
    assert_eq!((status, body["field"].as_str()), (400, Some("log_keep_builds")), "{body}");
    t.alice.ok("PATCH", &format!("/api/v1/projects/{capped}"), Some(&json!({"log_keep_builds": null})));
    drop(t.server);

    // Settings that make no sense name the key.
    let bad = Sandbox::new();
    bad.settings(&settings("[retention]\nlog_keep_days = 100\nmax_log_keep_days = 30\n"));
    let out = bad.run(&["settings"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("'retention.log_keep_days'") && err.contains("'retention.max_log_keep_days' (30)"), "{err}");
    bad.settings(&settings("[retention]\nroot_keep_builds = -2\n"));
    let out = bad.run(&["serve"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("retention.root_keep_builds"), "{}", stderr(&out));
}

/// `vespene cleanup` applies the same rules on demand and prints what it
/// removed; its age flags keep working and spare pinned builds.
#[tokio::test(flavor = "multi_thread")]
async fn cleanup_applies_the_keep_rules_prints_what_it_removed_and_spares_pinned_builds() {
    let t = team("").await;
    let project = create_project(&t.alice, t.pool, "app", json!({}));
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(run(&t.alice, &t.store, project).await);
    }
    t.alice.ok("POST", &format!("/api/v1/builds/{}/pin", ids[1]), None);
    let roots: Vec<_> = ids.iter().map(|id| root_of(&build(&t.alice, *id))).collect();
    drop(t.server);

    // No worker runs now: the rules act only when cleanup applies them.
    let mut p = t.store.get_project(project).await.unwrap().unwrap();
    p.log_keep_builds = Some(1);
    p.root_keep_builds = Some(1);
    t.store.update_project(&p).await.unwrap();
    let out = t.sandbox.run(&["cleanup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let (a, c) = (ids[0], ids[2]);
    assert!(text.contains(&format!("removed the logs of 2 build(s): #{a}, #{c}")), "{text}");
    assert!(text.contains("removed 2 build root(s) under") && text.contains(&format!(": #{a}, #{c}")), "{text}");
    for (i, id) in ids.iter().enumerate() {
        let b = t.store.get_build(*id).await.unwrap().unwrap();
        let gone = i == 0 || i == 2;
        assert_eq!(b.log_removed_at.is_some(), gone, "build {id}");
        assert_eq!(b.root_removed_at.is_some(), gone, "build {id}");
        assert_eq!(roots[i].exists(), !gone, "build {id}");
    }
    let again = t.sandbox.run(&["cleanup"]);
    assert!(stdout(&again).contains("removed the logs of 0 build(s)"), "{}", stdout(&again));

    // D days: the newest build finished ten days ago; a 7-day rule takes its log.
    sqlx::query("UPDATE builds SET end_time = $1 WHERE id = $2")
        .bind((vespene::store::now() - chrono::Duration::days(10)).timestamp_millis())
        .bind(ids[3])
        .execute(t.store.pool())
        .await
        .unwrap();
    p.log_keep_days = Some(7);
    t.store.update_project(&p).await.unwrap();
    let out = t.sandbox.run(&["cleanup"]);
    assert!(stdout(&out).contains(&format!("removed the logs of 1 build(s): #{}", ids[3])), "{}", stdout(&out));
    assert!(t.store.get_build(ids[1]).await.unwrap().unwrap().log_removed_at.is_none(), "pinned");

    // The age flags alone: every old root and build goes but the pinned one's.
    let out = t.sandbox.run(&["cleanup", "--no-keep-rules"]);
    assert!(!out.status.success() && stderr(&out).contains("nothing to do"), "{}", stderr(&out));
    let out = t.sandbox.run(&["cleanup", "--no-keep-rules", "--build-roots-older-than", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!roots[3].exists() && roots[1].exists(), "{}", stdout(&out));
    let out = t.sandbox.run(&["cleanup", "--builds-older-than", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("deleted 3 finished, unpinned build(s)"), "{}", stdout(&out));
    let left: Vec<i64> = t
        .store
        .list_builds(&vespene::store::BuildFilter { project_id: Some(project), ..Default::default() })
        .await
        .unwrap()
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(left, vec![ids[1]], "the pinned build alone is left");
    let kept = t.store.get_build(ids[1]).await.unwrap().unwrap();
    assert!(kept.pinned && kept.log_removed_at.is_none() && roots[1].join("made-here").exists());
}

/// Threat: bob pins alice's builds (keeping her logs past her rules, past the
/// admin's intent) or unpins them (so her rules delete what she kept), by the
/// API or the UI form. Only those who may stop the build may: her, the
/// administrator; bob is refused and nothing changes.
#[tokio::test(flavor = "multi_thread")]
async fn threat_bob_cannot_pin_or_unpin_alices_builds() {
    let t = team("").await;
    let project = create_project(&t.alice, t.pool, "alices", json!({}));
    let kept = run(&t.alice, &t.store, project).await;
    let other = run(&t.alice, &t.store, project).await;
    t.alice.ok("POST", &format!("/api/v1/builds/{kept}/pin"), None);

    for (path, id) in [("unpin", kept), ("pin", other)] {
        let (status, body) = t.bob.call("POST", &format!("/api/v1/builds/{id}/{path}"), None);
        assert_eq!(status, 403, "bob may {path} build {id}: {body}");
    }
    let bob_session = session_from_login(&t.server.addr, "bob");
    for (path, id) in [("unpin", kept), ("pin", other)] {
        let (status, page) = post_form(&bob_session, &format!("/ui/builds/{id}/{path}"), &[]);
        assert_eq!(status, 403, "bob may {path} build {id} in the UI: {page}");
    }
    let (_, page) = bob_session.text("GET", &format!("/ui/builds/{kept}"), None);
    assert!(!page.contains("id=\"pin-build\""), "no pin button for bob");
    assert_eq!(build(&t.alice, kept)["pinned"], json!(true), "still pinned");
    assert_eq!(build(&t.alice, other)["pinned"], json!(false), "still unpinned");
    // Anonymous requests are refused too.
    let (status, _) = Client::anonymous(&t.server.addr).call("POST", &format!("/api/v1/builds/{other}/pin"), None);
    assert_eq!(status, 401);
    // The administrator may.
    assert_eq!(t.admin.ok("POST", &format!("/api/v1/builds/{other}/pin"), None)["pinned"], json!(true));
    assert_eq!(t.admin.ok("POST", &format!("/api/v1/builds/{other}/unpin"), None)["pinned"], json!(false));
    drop(t.server);
}

/// Threat: bob sets alice's keep rules to 1 build / 1 day (deleting her
/// logs and roots) through the API or the UI's edit form. Refused; her rules
/// are unchanged.
#[tokio::test(flavor = "multi_thread")]
async fn threat_bob_cannot_change_alices_keep_rules() {
    let t = team("").await;
    let project = create_project(&t.alice, t.pool, "alices", json!({"log_keep_builds": 50}));
    for field in ["log_keep_builds", "log_keep_days", "root_keep_builds", "root_keep_days"] {
        let (status, body) = t.bob.call("PATCH", &format!("/api/v1/projects/{project}"), Some(&json!({ field: 1 })));
        assert_eq!(status, 403, "bob may set {field}: {body}");
    }
    let bob_session = session_from_login(&t.server.addr, "bob");
    let (status, page) = post_form(&bob_session, &format!("/ui/projects/{project}/edit"), &[("log_keep_builds", "1")]);
    assert_eq!(status, 403, "bob may edit in the UI: {page}");
    let p = t.store.get_project(project).await.unwrap().unwrap();
    assert_eq!(
        (p.log_keep_builds, p.log_keep_days, p.root_keep_builds, p.root_keep_days),
        (Some(50), None, None, None),
        "alice's rules are unchanged"
    );
    // The administrator may change them.
    let saved = t.admin.ok("PATCH", &format!("/api/v1/projects/{project}"), Some(&json!({"root_keep_days": 7})));
    assert_eq!(saved["root_keep_days"], json!(7));
    drop(t.server);
}

/// Threat: bob's project, with a rule of one build, has its keep rule reach
/// the builds of alice's project (no rule). Rules are per project: bob's
/// old log goes, every log and root of alice's stays.
#[tokio::test(flavor = "multi_thread")]
async fn threat_one_projects_keep_rule_never_reaches_another_projects_builds() {
    let t = team("").await;
    let alices = create_project(&t.alice, t.pool, "alices", json!({}));
    let bobs = create_project(&t.bob, t.pool, "bobs", json!({"log_keep_builds": 1, "root_keep_builds": 1}));
    let a1 = run(&t.alice, &t.store, alices).await;
    let b1 = run(&t.bob, &t.store, bobs).await;
    let a2 = run(&t.alice, &t.store, alices).await;
    let b2 = run(&t.bob, &t.store, bobs).await;
    pruned(&t.store, &[b1], &[b1]).await;
    assert!(build(&t.bob, b2)["log_removed_at"].is_null());
    for id in [a1, a2] {
        let b = build(&t.alice, id);
        assert!(b["log_removed_at"].is_null() && b["root_removed_at"].is_null(), "{b}");
        assert!(root_of(&b).join("made-here").exists(), "alice's build {id} keeps its root");
    }
    drop(t.server);
}
