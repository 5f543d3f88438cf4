//! The REST API end to end, against `vespene serve` with the real plugins
//! (ownership and group-required authorization, shell isolation, ...).

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vespene::store::{BuildStatus, Store};
use vespene_e2e::api_client::*;
use vespene_e2e::*;

fn settings() -> String {
    format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 2\n", bin_dir().display())
}

/// Serves `sandbox` with a superuser `root`; answers the server and a client holding root's token.
async fn served_as_root(sandbox: &Sandbox) -> (Server, Client) {
    sandbox.settings(&settings());
    let server = sandbox.serve();
    user(&sandbox.store().await, "root", true, &[]).await;
    let client = token_for(&server.addr, "root");
    (server, client)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rest_client_creates_starts_follows_and_reads_a_build() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let server = sandbox.serve();
    let store = sandbox.store().await;
    user(&store, "robot", true, &[]).await;
    let client = token_for(&server.addr, "robot");

    let pool =
        client.ok("POST", "/api/v1/worker_pools", Some(&json!({"name": "rest-pool", "isolation_method": "shell"})));
    let project = client.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({
            "name": "rest-project",
            "worker_pool_id": pool["id"],
            "script": "#!/bin/bash\nfor i in 1 2 3; do echo \"step $i of {{ target }}\"; sleep 0.2; done\n",
            "variables": "{\"target\": \"prod\"}",
            "launch_questions": "[{\"variable\": \"target\", \"type\": \"radio\", \"choices\": [\"prod\", \"test\"]}]"
        })),
    );
    let build = client.ok(
        "POST",
        &format!("/api/v1/projects/{}/start", project["id"]),
        Some(&json!({"answers": {"target": "test"}})),
    );
    let id = build["id"].as_i64().unwrap();
    assert_eq!(build["status"], "QUEUED");

    // Follow the SSE stream to its end.
    let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(
        stream,
        "GET /api/v1/builds/{id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
        client.token.as_deref().unwrap()
    )
    .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let reader = BufReader::new(stream);
    let mut texts = Vec::new();
    let mut end = None;
    let mut event = String::new();
    for line in reader.lines() {
        let line = line.unwrap();
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            let value: Value = serde_json::from_str(data.trim()).unwrap();
            if event == "line" {
                texts.push(value["text"].as_str().unwrap().to_string());
            } else if event == "end" {
                end = Some(value);
                break;
            }
        }
    }
    let end = end.expect("an end event");
    assert_eq!(end["status"], "SUCCESS");
    let steps: Vec<&String> = texts.iter().filter(|t| t.contains("step ")).collect();
    assert_eq!(steps.len(), 3, "{texts:?}");
    assert!(steps[2].ends_with("step 3 of test"), "{texts:?}");

    let final_build = client.ok("GET", &format!("/api/v1/builds/{id}"), None);
    assert_eq!(final_build["status"], "SUCCESS");
    assert_eq!(final_build["return_code"], 0);
    let output = client.ok("GET", &format!("/api/v1/builds/{id}/output?after=0"), None);
    let lines = output["lines"].as_array().unwrap();
    assert_eq!(lines.len() as i64, end["last_seq"].as_i64().unwrap());
    let later = client.ok("GET", &format!("/api/v1/builds/{id}/output?after={}", lines.len() - 1), None);
    assert_eq!(later["lines"].as_array().unwrap().len(), 1);
    let listed = client.ok("GET", &format!("/api/v1/builds?project_id={}", project["id"]), None);
    assert_eq!(listed["results"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_need_csrf_tokens_and_tokens_can_be_revoked() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let server = sandbox.serve();
    let store = sandbox.store().await;
    user(&store, "alice", true, &[]).await;
    let session = session_from_login(&server.addr, "alice");
    assert_eq!(session.ok("GET", "/api/v1/me", None)["user"]["username"], "alice");
    let mut no_csrf = session.clone();
    no_csrf.csrf = None;
    let (status, body) = no_csrf.call("POST", "/api/v1/groups", Some(&json!({"name": "devs"})));
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("CSRF"));
    session.ok("POST", "/api/v1/groups", Some(&json!({"name": "devs"})));

    let (status, _) = Client::anonymous(&server.addr).call(
        "POST",
        "/api/v1/login",
        Some(&json!({"username": "alice", "password": "wrong-password"})),
    );
    assert_eq!(status, 401);
    let created = session.ok("POST", "/api/v1/tokens", Some(&json!({"name": "ci"})));
    let token = Client {
        addr: server.addr.clone(),
        token: created["token"].as_str().map(str::to_string),
        cookie: None,
        csrf: None,
    };
    token.ok("GET", "/api/v1/projects", None);
    session.ok("DELETE", &format!("/api/v1/tokens/{}", created["details"]["id"]), None);
    assert_eq!(token.call("GET", "/api/v1/projects", None).0, 401);
    session.ok("POST", "/api/v1/logout", None);
    assert_eq!(session.call("GET", "/api/v1/me", None).0, 401);
    // The token is stored hashed.
    let raw = sqlx_tokens(&sandbox).await;
    assert!(!raw.contains(created["token"].as_str().unwrap()));
}

async fn sqlx_tokens(sandbox: &Sandbox) -> String {
    use sqlx::Row;
    let store = sandbox.store().await;
    let rows = sqlx::query("SELECT * FROM api_tokens").fetch_all(store.pool()).await.unwrap();
    rows.iter().map(|r| format!("{:?}", r.try_get::<String, _>("token_hash").unwrap_or_default())).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_clear_4xx_and_change_nothing() {
    let sandbox = Sandbox::new();
    let (_server, client) = served_as_root(&sandbox).await;
    let pool = client.ok("POST", "/api/v1/worker_pools", Some(&json!({"name": "p1", "isolation_method": "shell"})));
    let before = client.ok("GET", "/api/v1/projects", None);

    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", "{\"name\": ".to_string(), "malformed JSON"),
        ("not an object", "[1, 2]".to_string(), "expected a JSON object"),
        ("empty", String::new(), "empty"),
        (
            "unknown field",
            json!({"name": "x", "worker_pool_id": pool["id"], "colour": "red"}).to_string(),
            "unknown field 'colour'",
        ),
        (
            "wrong type",
            json!({"name": "x", "worker_pool_id": pool["id"], "timeout": "long"}).to_string(),
            "field 'timeout'",
        ),
        ("read-only", json!({"name": "x", "worker_pool_id": pool["id"], "id": 99}).to_string(), "read-only"),
        (
            "bad variables",
            json!({"name": "x", "worker_pool_id": pool["id"], "variables": "{nope"}).to_string(),
            "variables",
        ),
        ("missing pool", json!({"name": "x"}).to_string(), "worker_pool"),
    ];
    for (what, body, needle) in cases {
        let (status, value) = client.raw("POST", "/api/v1/projects", &body, &[]);
        assert!((400..500).contains(&status), "{what}: {status} {value}");
        let message = value["error"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{what}: {message}");
    }
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let (status, value) = client.raw("POST", "/api/v1/projects", &big, &[]);
    assert_eq!(status, 413, "{value}");
    let (status, value) = client.call("GET", "/api/v1/builds?status=DANCING", None);
    assert_eq!(status, 400, "{value}");
    let (status, _) = client.call("GET", "/api/v1/projects/999999", None);
    assert_eq!(status, 404);
    let (status, _) = client.call("PUT", "/api/v1/projects", None);
    assert_eq!(status, 405);
    assert_eq!(client.ok("GET", "/api/v1/projects", None), before, "nothing was saved");
    // A bad password on a user update leaves the other fields unsaved too.
    let u = client.ok("POST", "/api/v1/users", Some(&json!({"username": "bob", "password": "long-enough-pw"})));
    let (status, _) = client.call(
        "PATCH",
        &format!("/api/v1/users/{}", u["id"]),
        Some(&json!({"email": "b@x", "password": "short"})),
    );
    assert_eq!(status, 400);
    assert_eq!(client.ok("GET", &format!("/api/v1/users/{}", u["id"]), None)["email"], "");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_documents_are_sent_as_json_or_as_text_and_a_user_is_saved_with_its_groups_or_not_at_all() {
    let sandbox = Sandbox::new();
    let (server, client) = served_as_root(&sandbox).await;
    let pool = client.ok("POST", "/api/v1/worker_pools", Some(&json!({"name": "p1", "isolation_method": "shell"})));

    // The document itself, or (older clients) the document as a string: both read back as the document.
    let set = client.ok("POST", "/api/v1/variable_sets", Some(&json!({"name": "eu", "variables": {"region": "eu"}})));
    let set = client.ok("GET", &format!("/api/v1/variable_sets/{}", set["id"]), None);
    assert_eq!(set["variables"], json!({"region": "eu"}), "{set}");
    let questions = json!([{"variable": "target", "type": "radio", "choices": ["prod", "test"]}]);
    let project = client.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({
            "name": "documents",
            "worker_pool_id": pool["id"],
            "variables": {"target": "prod", "DB_PASS": {"secret": "hunter2"}},
            "launch_questions": questions,
        })),
    );
    let path = format!("/api/v1/projects/{}", project["id"]);
    let read = client.ok("GET", &path, None);
    assert_eq!(read["variables"], json!({"target": "prod", "DB_PASS": {"secret": "********"}}), "the secret is sealed");
    assert_eq!(read["launch_questions"], questions);
    // The string form still works, and its answer says it is deprecated, naming the field.
    let auth = format!("Bearer {}", client.token.as_deref().unwrap());
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let old_form = json!({"variables": "{\"target\": \"test\"}"}).to_string();
    let (status, head, body) = vespene_e2e::http_exchange(&server.addr, "PATCH", &path, &headers, &old_form);
    assert_eq!(status, 200, "{body}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("\r\ndeprecation: true"), "{head}");
    assert!(head.contains("'variables' sent as a json string"), "{head}");
    let new_form = json!({"description": "documents", "variables": {"target": "test"}}).to_string();
    let (status, head, body) = vespene_e2e::http_exchange(&server.addr, "PATCH", &path, &headers, &new_form);
    assert_eq!(status, 200, "{body}");
    assert!(!head.to_ascii_lowercase().contains("deprecation"), "{head}");
    let read = client.ok("GET", &path, None);
    assert_eq!(read["variables"], json!({"target": "test"}), "the string form read back as the document");
    // Only those fields take a document: an object elsewhere is still a type error naming the field.
    let (status, value) = client.call("PATCH", &path, Some(&json!({"script": {"run": "make"}})));
    assert_eq!(status, 400, "{value}");
    assert!(value["error"].as_str().unwrap().contains("field 'script'"), "{value}");

    // A user naming a group that does not exist is refused, and nothing of it is saved.
    let (status, value) = client.call(
        "POST",
        "/api/v1/users",
        Some(&json!({"username": "carol", "password": "long-enough-pw", "group_ids": [424242]})),
    );
    assert_eq!(status, 400, "{value}");
    assert_eq!(value["field"], "group_ids", "{value}");
    let users = client.ok("GET", "/api/v1/users", None);
    assert!(!users.to_string().contains("carol"), "{users}");
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_verify_signatures_and_match_repository_and_branch() {
    use hmac::{Hmac, Mac};
    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool =
        vespene::store::WorkerPool { name: "hooks".into(), isolation_method: "shell".into(), ..Default::default() };
    let pool_id = store.create_worker_pool(&pool).await.unwrap();
    let make = |name: &str, repo: &str, branch: &str| vespene::store::Project {
        name: name.into(),
        worker_pool_id: pool_id,
        repo_url: repo.into(),
        repo_branch: branch.into(),
        scm_type: "none".into(),
        webhook_enabled: true,
        webhook_token: vespene::store::Secret::Set("s3cret".into()),
        script: "#!/bin/bash\necho hooked\n".into(),
        ..Default::default()
    };
    for p in [
        make("main-app", "https://git.example.com/app.git", "main"),
        make("dev-app", "https://git.example.com/app.git", "dev"),
        make("other", "https://git.example.com/other.git", "main"),
    ] {
        store.create_project(&p).await.unwrap();
    }
    let payload =
        json!({"ref": "refs/heads/main", "repository": {"clone_url": "https://git.example.com/app.git"}}).to_string();
    let sign = |key: &str| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(payload.as_bytes());
        format!("sha256={}", mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    let anon = Client::anonymous(&server.addr);
    let forged = sign("wrong-key");
    let (status, body) =
        anon.raw("POST", "/webhooks", &payload, &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &forged)]);
    assert_eq!(status, 403, "{body}");
    let (status, _) = anon.raw("POST", "/webhooks", &payload, &[("X-GitHub-Event", "push")]);
    assert_eq!(status, 401);
    let count = |store: Store| async move {
        store.list_builds(&vespene::store::BuildFilter { limit: 100, ..Default::default() }).await.unwrap().len()
    };
    assert_eq!(count(store.clone()).await, 0, "a forged webhook started a build");

    let good = sign("s3cret");
    let (status, body) = anon.raw(
        "POST",
        "/webhooks",
        &payload,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &good), ("X-GitHub-Delivery", "d-1")],
    );
    assert_eq!(status, 200, "{body}");
    let started = body["started"].as_array().unwrap();
    assert_eq!(started.len(), 1, "{body}");
    assert_eq!(started[0]["project"], "main-app");

    // GitLab's token header.
    let gitlab =
        json!({"ref": "refs/heads/dev", "project": {"git_http_url": "https://git.example.com/app.git"}}).to_string();
    let (status, _) =
        anon.raw("POST", "/webhooks", &gitlab, &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")]);
    assert_eq!(status, 403);
    let (status, body) = anon.raw(
        "POST",
        "/webhooks",
        &gitlab,
        &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "s3cret"), ("X-Gitlab-Event-UUID", "u-1")],
    );
    assert_eq!(status, 200);
    assert_eq!(body["started"][0]["project"], "dev-app");
    assert_eq!(count(store.clone()).await, 2);
    let (status, body) = anon.raw("POST", "/webhooks", "{\"hello\": 1}", &[]);
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_lists_every_route_and_every_route_is_served() {
    let sandbox = Sandbox::new();
    let (_server, client) = served_as_root(&sandbox).await;
    let doc = client.ok("GET", "/api/v1/openapi.json", None);
    let paths = doc["paths"].as_object().unwrap();
    for route in vespene::web::routes::all() {
        let entry = &paths[route.path];
        assert!(
            entry[route.method.to_ascii_lowercase()].is_object(),
            "{} {} missing from OpenAPI",
            route.method,
            route.path
        );
        let path = route.path.replace("{id}", "424242").replace("{run}", "424243");
        let (status, body) = client.call(route.method, &path, Some(&json!({})));
        let message = body["error"].as_str().unwrap_or_default();
        assert!(
            !message.starts_with("route "),
            "{} {} is in the table but not served: {status} {message}",
            route.method,
            route.path
        );
    }
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(documented, vespene::web::routes::all().count());
}

/// Who may do what: a matrix over users, objects and actions, through the API.
#[tokio::test(flavor = "multi_thread")]
async fn the_authorization_matrix() {
    let sandbox = Sandbox::new();
    // This matrix is the one of `filter_view = false` (others may view); the
    // default (true) is proved in team_safety_hardening.rs.
    sandbox.settings(&format!("{}[plugins.authorization.ownership]\nfilter_view = false\n", settings()));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let owners = store.create_group("owners").await.unwrap();
    let launchers = store.create_group("launchers").await.unwrap();
    user(&store, "boss", true, &[]).await;
    let creator_id = user(&store, "creator", false, &[]).await;
    user(&store, "owner", false, &[owners]).await;
    user(&store, "launcher", false, &[launchers]).await;
    user(&store, "other", false, &[]).await;
    let admin = token_for(&server.addr, "boss");
    let creator = token_for(&server.addr, "creator");
    // No duplicate collapse: every build started here must stay stoppable.
    let pool = admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({"name": "m", "isolation_method": "shell", "build_latest": false, "shared": true})),
    );
    let project = creator.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "guarded", "worker_pool_id": pool["id"], "owner_group_ids": [owners], "launch_group_ids": [launchers], "script": "#!/bin/bash\nsleep 30\n"})),
    );
    assert_eq!(project["created_by"], creator_id);
    let pid = project["id"].as_i64().unwrap();
    let clients: Vec<(&str, Client)> = vec![
        ("boss", admin.clone()),
        ("creator", creator.clone()),
        ("owner", token_for(&server.addr, "owner")),
        ("launcher", token_for(&server.addr, "launcher")),
        ("other", token_for(&server.addr, "other")),
        ("anonymous", Client::anonymous(&server.addr)),
    ];
    // (user, view, edit, start, stop, delete)
    let expected = [
        ("boss", true, true, true, true, true),
        ("creator", true, true, true, true, true),
        ("owner", true, true, true, true, true),
        ("launcher", true, false, true, true, false),
        ("other", true, false, false, false, false),
        ("anonymous", false, false, false, false, false),
    ];
    for (name, view, edit, start, stop, delete) in expected {
        let client = &clients.iter().find(|(n, _)| *n == name).unwrap().1;
        let allowed = |status: u16| (200..300).contains(&status);
        let denied = |status: u16| status == 401 || status == 403;
        let check = |action: &str, status: u16, want: bool, body: &Value| {
            assert!(if want { allowed(status) } else { denied(status) }, "{name} {action}: {status} {body}");
        };
        let (s, b) = client.call("GET", &format!("/api/v1/projects/{pid}"), None);
        check("view project", s, view, &b);
        let (s, b) = client.call("GET", "/api/v1/projects", None);
        check("list projects", s, view, &b);
        let (s, b) = client.call(
            "PATCH",
            &format!("/api/v1/projects/{pid}"),
            Some(&json!({"description": format!("edited by {name}")})),
        );
        check("edit project", s, edit, &b);
        let (s, b) = client.call("POST", &format!("/api/v1/projects/{pid}/start"), None);
        check("start project", s, start, &b);
        // A project runs one build at a time: end this one before the next start.
        if let Some(started) = b["id"].as_i64().filter(|_| allowed(s)) {
            admin.ok("POST", &format!("/api/v1/builds/{started}/stop"), None);
        }
        // Stop a build someone else started.
        let build = admin.ok("POST", &format!("/api/v1/projects/{pid}/start"), None);
        let (s, b) = client.call("POST", &format!("/api/v1/builds/{}/stop", build["id"]), None);
        check("stop build", s, stop, &b);
        if !allowed(s) {
            admin.ok("POST", &format!("/api/v1/builds/{}/stop", build["id"]), None);
        }
        let (s, b) = client.call("GET", &format!("/api/v1/builds/{}", build["id"]), None);
        check("view build", s, view, &b);
        // Pools are superuser objects.
        let (s, b) =
            client.call("PATCH", &format!("/api/v1/worker_pools/{}", pool["id"]), Some(&json!({"description": "x"})));
        check("edit pool", s, name == "boss", &b);
        let (s, b) = client.call(
            "POST",
            "/api/v1/worker_pools",
            Some(&json!({"name": format!("pool-{name}"), "isolation_method": "shell"})),
        );
        check("create pool", s, name == "boss", &b);
        let _ = delete;
    }
    // Nobody raises their own privileges.
    let other = &clients.iter().find(|(n, _)| *n == "other").unwrap().1;
    let me = other.ok("GET", "/api/v1/me", None)["user"]["id"].clone();
    let (s, b) = other.call("PATCH", &format!("/api/v1/users/{me}"), Some(&json!({"is_superuser": true})));
    assert!(s == 403, "{s} {b}");
    let (s, _) = other.call("PATCH", &format!("/api/v1/users/{me}"), Some(&json!({"group_ids": [owners]})));
    assert_eq!(s, 403);
    other.ok("PATCH", &format!("/api/v1/users/{me}"), Some(&json!({"email": "other@example.com"})));
    assert!(!store.get_user(me.as_i64().unwrap()).await.unwrap().unwrap().is_superuser);
    // Deleting: the launcher and others cannot, the creator can.
    for name in ["launcher", "other"] {
        let client = &clients.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(client.call("DELETE", &format!("/api/v1/projects/{pid}"), None).0, 403, "{name} deleted");
    }
    // Builds must end before the project goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let filter = vespene::store::BuildFilter { project_id: Some(pid), limit: 100, ..Default::default() };
        let active = store
            .list_builds(&filter)
            .await
            .unwrap()
            .iter()
            .filter(|b| b.status.is_active())
            .map(|b| b.id)
            .collect::<Vec<_>>();
        if active.is_empty() {
            break;
        }
        for id in active {
            let _ = store.request_stop(id).await;
        }
        assert!(Instant::now() < deadline, "builds did not stop");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = BuildStatus::Success;
    creator.ok("DELETE", &format!("/api/v1/projects/{pid}"), None);
}

/// One table of defaults: an object made through the API with its name only
/// is the one the UI's empty form shows (a pool isolates with `sandbox`, the
/// JSON documents are empty objects).
#[tokio::test(flavor = "multi_thread")]
async fn objects_made_with_a_name_only_take_the_same_defaults_as_the_ui_form() {
    let sandbox = Sandbox::new();
    let (server, client) = served_as_root(&sandbox).await;
    let pool = client.ok("POST", "/api/v1/worker_pools", Some(&json!({ "name": "plain" })));
    assert_eq!(pool["isolation_method"], "sandbox", "{pool}");
    assert_eq!(pool["variables"], json!({}), "{pool}");
    for (path, name) in [("stages", "plain-stage"), ("variable_sets", "plain-set"), ("pipelines", "plain-line")] {
        let made = client.ok("POST", &format!("/api/v1/{path}"), Some(&json!({ "name": name })));
        assert_eq!(made["variables"], json!({}), "{path}: {made}");
    }
    // The UI's form for a new pool shows the same isolation, selected.
    let cookie = server.login("root", "password-of-root");
    let (status, page) = server.get_with("/ui/worker_pools/new", &[("Cookie", &cookie)]);
    assert_eq!(status, 200, "{page}");
    let field = page.split("id=\"f-isolation_method\"").nth(1).unwrap_or_default();
    assert!(field.split('>').next().unwrap_or_default().contains("value=\"sandbox\""), "{page}");
}
