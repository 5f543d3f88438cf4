//! Issue 15 ("hostile input and overload"), findings 6 to 13, 15 and 16, end
//! to end through the real `vespene` binary and the real plugin `.so` files:
//! shell-safe templating (6), webhook signatures and replays (7), no start
//! without an authorization plugin (8), sessions, passwords and tokens (9),
//! no secret on a command line (10), plugin files nobody else can change
//! (11), a private data directory (12), the admin password only once the
//! port is ours (13), Slack escaping and opaque internal errors (15), and
//! tests that fail when their service is missing (16).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use vespene::store::{BuildStatus, Project, Store, WorkerPool};
use vespene_e2e::api_client::{session_from_login, token_for, user, Client};
use vespene_e2e::builds::{finished, log_of, start, unstamped_output, WorkerProcess};
use vespene_e2e::*;

fn settings(extra: &str) -> String {
    format!("plugin_path = [\"{}\"]\n{extra}", bin_dir().display())
}

async fn shell_pool(store: &Store, name: &str) -> WorkerPool {
    let p = WorkerPool { name: name.into(), isolation_method: "shell".into(), shared: true, ..Default::default() };
    let id = store.create_worker_pool(&p).await.unwrap();
    store.get_worker_pool(id).await.unwrap().unwrap()
}

/// Runs `vespene serve` expecting it to refuse to start: answers (stdout, stderr).
/// Fails when it is still running after 20 seconds (it started).
fn serve_refused(sandbox: &Sandbox, listen: &str) -> (String, String) {
    let mut child = sandbox
        .command(&["serve"])
        .env("VESPENE_SERVER__LISTEN", listen)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("vespene serve started where it must refuse: {}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "serve exited 0");
    (stdout(&out), stderr(&out))
}

/// A raw HTTP exchange: (status, head, body).
fn raw_http(addr: &str, request: &str) -> (u16, String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn set_cookies(head: &str) -> Vec<String> {
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .map(|l| l.split_once(':').unwrap().1.trim().to_string())
        .collect()
}

fn json_login(addr: &str, name: &str, password: &str) -> (u16, String, String) {
    let body = json!({"username": name, "password": password}).to_string();
    raw_http(
        addr,
        &format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

// ------------------------------------------------------------------ finding 6

/// Finding 6: a project name (the command trigger) and a launch answer (the
/// script) that hold shell syntax are pasted as one quoted word each, so they
/// run nothing; `| raw` is the documented way to the value as given.
#[tokio::test(flavor = "multi_thread")]
async fn finding_6_names_and_launch_answers_reach_the_shell_as_words() {
    let sandbox = Sandbox::new();
    let pwned = sandbox.path("pwned");
    let out = sandbox.path("trigger.txt");
    sandbox.settings(&settings(&format!(
        "[plugins.success_triggers.record]\nlibrary = \"command\"\n\
         command = \"echo {{{{ project.name }}}} >> {out}\"\n\
         [plugins.success_triggers.raw]\nlibrary = \"command\"\nquote = false\n\
         command = \"echo raw-entry {{{{ build.id }}}} >> {out}\"\n",
        out = out.display()
    )));
    let store = sandbox.store().await;
    let alice = user(&store, "alice", false, &[]).await;
    let pool = shell_pool(&store, "general").await;
    let name = format!("x; touch {}", pwned.display());
    let project = Project {
        name: name.clone(),
        worker_pool_id: pool.id,
        created_by: Some(alice),
        launch_questions: r#"[{"variable":"who","type":"text"}]"#.into(),
        script:
            "#!/bin/sh\necho hello {{ who }}\necho upper {{ who | upper }}\necho quoted {{ 'a b' | shell_quote }}\n"
                .into(),
        ..Default::default()
    };
    store.create_project(&project).await.unwrap();
    let answer = format!("$(touch {}); `touch {}`", pwned.display(), pwned.display());
    let id = start(&sandbox, &name, &["--answers", &json!({ "who": answer }).to_string()]);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "1"]).wait(Duration::from_secs(60));
    let build = finished(&store, id, Duration::from_secs(10)).await;
    assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, id).await);
    assert!(!pwned.exists(), "a project name or a launch answer ran a command");
    let lines = unstamped_output(&store, id).await;
    assert_eq!(lines[0], format!("hello {answer}"), "{lines:?}");
    assert_eq!(lines[1], format!("upper {}", answer.to_uppercase()), "{lines:?}");
    assert_eq!(lines[2], "quoted a b", "{lines:?}");
    let recorded = std::fs::read_to_string(&out).unwrap();
    assert_eq!(recorded, format!("{name}\nraw-entry {id}\n"), "the trigger got the name as one word");

    // The documented opt-out: `| raw` pastes the answer as given.
    let mut raw = store.find_project(&name).await.unwrap().unwrap();
    raw.script = "#!/bin/sh\n{{ who | raw }}\n".into();
    store.update_project(&raw).await.unwrap();
    let id =
        start(&sandbox, &name, &["--answers", &json!({ "who": format!("touch {}", pwned.display()) }).to_string()]);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "1"]).wait(Duration::from_secs(60));
    finished(&store, id, Duration::from_secs(10)).await;
    assert!(pwned.exists(), "`| raw` pastes the answer as written");
}

// ------------------------------------------------------------------ finding 7

fn hmac_hex(key: &str, message: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

async fn build_count(store: &Store) -> usize {
    store.list_builds(&vespene::store::BuildFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
}

/// Finding 7: with `[webhooks] require_signature`, a project without a secret
/// starts from no webhook; a GitHub delivery is acted on once, even when it
/// is replayed to a server started afresh; the generic form's signed
/// timestamp must be recent, and a signature is accepted once.
#[tokio::test(flavor = "multi_thread")]
async fn finding_7_webhooks_require_signatures_and_refuse_replays() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings("[webhooks]\nrequire_signature = true\n[workers]\nembedded = false\n"));
    let store = sandbox.store().await;
    let alice = user(&store, "alice", false, &[]).await;
    let pool = shell_pool(&store, "general").await;
    let make = |name: &str, url: &str, token: &str| Project {
        name: name.into(),
        repo_url: url.into(),
        worker_pool_id: pool.id,
        webhook_enabled: true,
        webhook_token: if token.is_empty() {
            vespene::store::Secret::Empty
        } else {
            vespene::store::Secret::Set(token.into())
        },
        created_by: Some(alice),
        script: "#!/bin/sh\necho hooked\n".into(),
        ..Default::default()
    };
    store.create_project(&make("unsigned", "https://git.example.com/open.git", "")).await.unwrap();
    store.create_project(&make("signed", "https://git.example.com/app.git", "s3cret-hook")).await.unwrap();
    let server = sandbox.serve();
    let anon = Client::anonymous(&server.addr);

    // No secret: refused when the admin requires signatures.
    let open = json!({"ref": "refs/heads/main", "repository": {"clone_url": "https://git.example.com/open.git"}});
    let (status, body) = anon.raw(
        "POST",
        "/webhooks",
        &open.to_string(),
        &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "open-1")],
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("require_signature"), "{body}");
    assert_eq!(build_count(&store).await, 0);

    // A signed GitHub delivery starts once; its replay, with or without a new delivery id, is refused.
    let push =
        json!({"ref": "refs/heads/main", "repository": {"clone_url": "https://git.example.com/app.git"}}).to_string();
    let sig = format!("sha256={}", hmac_hex("s3cret-hook", push.as_bytes()));
    let github = |delivery: &'static str| {
        vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", sig.as_str()), ("X-GitHub-Delivery", delivery)]
    };
    let (status, body) = anon.raw("POST", "/webhooks", &push, &github("delivery-1"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["started"][0]["project"], "signed", "{body}");
    let (status, body) = anon.raw("POST", "/webhooks", &push, &github("delivery-1"));
    assert_eq!(status, 409, "a replay: {body}");
    let (status, body) = anon.raw("POST", "/webhooks", &push, &github("delivery-2"));
    assert_eq!(status, 409, "the same signed body under a new id: {body}");
    assert_eq!(build_count(&store).await, 1);

    // Another process (a restarted server) remembers.
    drop(server);
    let server = sandbox.serve();
    let anon = Client::anonymous(&server.addr);
    let (status, body) = anon.raw("POST", "/webhooks", &push, &github("delivery-1"));
    assert_eq!(status, 409, "a replay to a fresh process: {body}");
    assert_eq!(build_count(&store).await, 1);
    // Stop that build: a start while it waits would be refused as busy (409), not judged as a delivery.
    let queued =
        vespene::store::BuildFilter { status: Some(vespene::store::BuildStatus::Queued), ..Default::default() };
    let first = store.list_builds(&queued).await.unwrap();
    assert_eq!(first.len(), 1, "the started build waits (no workers here)");
    assert!(store.request_stop(first[0].id).await.unwrap());

    // The generic form: a bare token is not a signature here; the signed timestamp must be recent.
    let generic = json!({"repository": "https://git.example.com/app.git", "branch": "main"}).to_string();
    let (status, body) = anon.raw("POST", "/webhooks", &generic, &[("X-Vespene-Token", "s3cret-hook")]);
    assert_eq!(status, 401, "{body}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let signed = |stamp: u64| {
        let message = format!("{stamp}.{generic}");
        (stamp.to_string(), format!("sha256={}", hmac_hex("s3cret-hook", message.as_bytes())))
    };
    let (old_stamp, old_sig) = signed(now - 3600);
    let (status, body) = anon.raw(
        "POST",
        "/webhooks",
        &generic,
        &[("X-Vespene-Timestamp", &old_stamp), ("X-Vespene-Signature", &old_sig)],
    );
    assert_eq!(status, 403, "an hour-old timestamp: {body}");
    assert!(body.to_string().contains("timestamp_window_seconds"), "{body}");
    let (stamp, sig) = signed(now);
    let headers = [("X-Vespene-Timestamp", stamp.as_str()), ("X-Vespene-Signature", sig.as_str())];
    let (status, body) = anon.raw("POST", "/webhooks", &generic, &headers);
    assert_eq!(status, 200, "{body}");
    let (status, body) = anon.raw("POST", "/webhooks", &generic, &headers);
    assert_eq!(status, 409, "the same signed delivery again: {body}");
    // A forged signature for a fresh timestamp.
    let (status, body) = anon.raw(
        "POST",
        "/webhooks",
        &generic,
        &[("X-Vespene-Timestamp", &(now + 1).to_string()), ("X-Vespene-Signature", &sig)],
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(build_count(&store).await, 2);
}

// ------------------------------------------------------------------ finding 8

/// Finding 8: with every authorization plugin switched off, `vespene serve`
/// refuses to start and says how to run anyway; `allow_everything = true`
/// starts it with a warning. With the default chain, an anonymous request
/// cannot reset the admin's password.
#[tokio::test(flavor = "multi_thread")]
async fn finding_8_without_an_authorization_plugin_serve_refuses_to_start() {
    let off = "[plugins.authorization.ownership]\nenabled = false\n\
               [plugins.authorization.group_required]\nenabled = false\n";
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(off));
    let (out, err) = serve_refused(&sandbox, "127.0.0.1:0");
    assert!(err.contains("no authorization plugin") && err.contains("allow_everything = true"), "{err}");
    assert!(!out.contains("password"), "no admin was made: {out}");

    sandbox.settings(&settings(&format!("{off}[authorization]\nallow_everything = true\n")));
    let server = sandbox.serve();
    let lines = server.stdout_lines().join("\n");
    assert!(lines.contains("allow_everything") && lines.contains("every request is allowed"), "{lines}");
    drop(server);

    // The default chain: anonymous changes are refused.
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let server = sandbox.serve();
    let admin_password = server.admin_password().unwrap();
    let store = sandbox.store().await;
    let admin = store.find_user("admin").await.unwrap().unwrap();
    let (status, body) = Client::anonymous(&server.addr).call(
        "PATCH",
        &format!("/api/v1/users/{}", admin.id),
        Some(&json!({"password": "taken-over-1234"})),
    );
    assert_eq!(status, 401, "{body}");
    assert_eq!(json_login(&server.addr, "admin", &admin_password).0, 200);
}

// ------------------------------------------------------------------ finding 9

/// Finding 9: `Secure` cookies behind an https public URL; a password change
/// needs the current password and ends the user's other sessions and
/// tokens; a superuser resets another user's password without it, and an
/// ordinary user cannot; tokens expire, by default after the admin's number
/// of days; the login form carries a CSRF token.
#[tokio::test(flavor = "multi_thread")]
async fn finding_9_sessions_passwords_tokens_and_the_login_form() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings("[server]\npublic_url = \"https://ci.example.com\"\ntoken_expiry_days = 7\n"));
    let server = sandbox.serve();
    let addr = server.addr.clone();
    let admin_password = server.admin_password().unwrap();
    let store = sandbox.store().await;
    let alice = user(&store, "alice", false, &[]).await;
    let bob = user(&store, "bob", false, &[]).await;

    // Secure cookies.
    let (status, head, _) = json_login(&addr, "alice", "password-of-alice");
    assert_eq!(status, 200);
    let cookie = set_cookies(&head).join("\n");
    assert!(cookie.contains("; Secure"), "{cookie}");

    // Alice's ways in: two sessions and a token.
    let first = session_from_login(&addr, "alice");
    let second = session_from_login(&addr, "alice");
    let token = token_for(&addr, "alice");
    for c in [&first, &second, &token] {
        assert_eq!(c.call("GET", "/api/v1/me", None).0, 200);
    }
    let me = format!("/api/v1/users/{alice}");
    let (status, body) = first.call("PATCH", &me, Some(&json!({"password": "alice-new-password"})));
    assert_eq!((status, body["field"].as_str()), (400, Some("current_password")), "{body}");
    let (status, body) = first.call(
        "PATCH",
        &me,
        Some(&json!({"password": "alice-new-password", "current_password": "not-her-password"})),
    );
    assert_eq!(status, 403, "{body}");
    // Bob may not set Alice's password.
    let bob_client = token_for(&addr, "bob");
    let (status, body) = bob_client.call("PATCH", &me, Some(&json!({"password": "bob-owns-alice-1"})));
    assert_eq!(status, 403, "{body}");
    assert_eq!(json_login(&addr, "alice", "password-of-alice").0, 200, "her password is unchanged");

    first.ok("PATCH", &me, Some(&json!({"password": "alice-new-password", "current_password": "password-of-alice"})));
    assert_eq!(first.call("GET", "/api/v1/me", None).0, 200, "the session that changed it stays");
    assert_eq!(second.call("GET", "/api/v1/me", None).0, 401, "her other session ended");
    assert_eq!(token.call("GET", "/api/v1/me", None).0, 401, "her token ended");
    assert_eq!(json_login(&addr, "alice", "password-of-alice").0, 401);
    assert_eq!(json_login(&addr, "alice", "alice-new-password").0, 200);

    // The admin resets Bob's password without knowing it; Bob's token ends.
    let admin = session_client(&addr, "admin", &admin_password);
    admin.ok("PATCH", &format!("/api/v1/users/{bob}"), Some(&json!({"password": "reset-by-admin-1"})));
    assert_eq!(bob_client.call("GET", "/api/v1/me", None).0, 401, "bob's token ended with the reset");
    assert_eq!(json_login(&addr, "bob", "reset-by-admin-1").0, 200);

    // Token expiry: the admin's default, a chosen one, and an expired token refused.
    let token =
        session_client(&addr, "bob", "reset-by-admin-1").ok("POST", "/api/v1/tokens", Some(&json!({"name": "b"})))
            ["token"]
            .clone();
    let bob_client = Client::with_token(&addr, token.as_str().unwrap());
    let session = session_client(&addr, "alice", "alice-new-password");
    let made = session.ok("POST", "/api/v1/tokens", Some(&json!({"name": "default"})));
    let days = |v: &Value| {
        let expires = v["details"]["expires_at"].as_str().unwrap_or_else(|| panic!("no expiry: {v}"));
        let expires = chrono_days_from_now(expires);
        expires.round() as i64
    };
    assert_eq!(days(&made), 7, "{made}");
    let chosen = session.ok("POST", "/api/v1/tokens", Some(&json!({"name": "short", "expires_in_days": 2})));
    assert_eq!(days(&chosen), 2, "{chosen}");
    let (status, body) =
        session.call("POST", "/api/v1/tokens", Some(&json!({"name": "bad", "expires_in_days": "soon"})));
    assert_eq!((status, body["field"].as_str()), (400, Some("expires_in_days")), "{body}");
    sqlx::query("UPDATE api_tokens SET expires_at = 1 WHERE user_id = $1")
        .bind(bob)
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(bob_client.call("GET", "/api/v1/me", None).0, 401, "an expired token is refused");

    // The login form: a POST without the form's token is refused; the form's own token works.
    let form = "username=alice&password=alice-new-password&next=%2Fui%2Fdashboard";
    let (status, head, _) = raw_http(
        &addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 403, "{head}");
    assert!(!head.contains("vespene_session="), "{head}");
    let (status, head, page) = raw_http(&addr, "GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 200);
    let login_cookie = set_cookies(&head).into_iter().find(|c| c.starts_with("vespene_login_csrf=")).expect("cookie");
    let login_cookie = login_cookie.split(';').next().unwrap().to_string();
    let field = page.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert_eq!(login_cookie, format!("vespene_login_csrf={field}"));
    let form = format!("{form}&csrf_token={field}");
    let (status, head, _) = raw_http(
        &addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nCookie: {login_cookie}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("vespene_session=") && head.contains("; Secure"), "{head}");
    // And a JSON login posted as a form (text/plain) is refused.
    let body = json!({"username": "alice", "password": "alice-new-password"}).to_string();
    let (status, _, _) = raw_http(
        &addr,
        &format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(status, 415);
}

/// A client holding a session of `name`, logged in with `password`.
fn session_client(addr: &str, name: &str, password: &str) -> Client {
    let (status, head, body) = json_login(addr, name, password);
    assert_eq!(status, 200, "{body}");
    let cookie = set_cookies(&head)[0].split(';').next().unwrap().to_string();
    let answer: Value = serde_json::from_str(body.lines().find(|l| l.starts_with('{')).unwrap_or(&body)).unwrap();
    Client {
        addr: addr.into(),
        token: None,
        cookie: Some(cookie),
        csrf: answer["csrf_token"].as_str().map(str::to_string),
    }
}

/// Days from now until an RFC 3339 time.
fn chrono_days_from_now(when: &str) -> f64 {
    let when = chrono::DateTime::parse_from_rfc3339(when).unwrap();
    (when.timestamp() - chrono::Utc::now().timestamp()) as f64 / 86_400.0
}

// ------------------------------------------------------------------ finding 11

/// Finding 11: a plugin library, or the directory holding it, that others
/// can write is refused by name; a `sha256` that does not match the file is
/// refused before it is loaded, and the right one loads.
#[tokio::test(flavor = "multi_thread")]
async fn finding_11_plugins_others_could_change_or_with_a_wrong_digest_are_refused() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lib = dir.join("libvespene_timestamp.so");
    std::fs::copy(plugin_lib("timestamp"), &lib).unwrap();
    let entry =
        |extra: &str| settings(&format!("[plugins.output.timestamp]\nlibrary = \"{}\"\n{extra}", lib.display()));
    let load = |sandbox: &Sandbox| {
        let out = sandbox.run(&["plugins", "list"]);
        (out.status.success(), format!("{}{}", stdout(&out), stderr(&out)))
    };
    sandbox.settings(&entry(""));
    let (ok, text) = load(&sandbox);
    assert!(ok, "{text}");

    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, text) = load(&sandbox);
    assert!(!ok && text.contains(&lib.display().to_string()) && text.contains("writable by everyone"), "{text}");
    let (_, err) = serve_refused(&sandbox, "127.0.0.1:0");
    assert!(err.contains("output.timestamp") && err.contains("writable"), "{err}");
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o755)).unwrap();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o775)).unwrap();
    let (ok, text) = load(&sandbox);
    assert!(!ok && text.contains("plugin directory") && text.contains("writable by its group"), "{text}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Owned by someone else.
    std::os::unix::fs::chown(&lib, Some(65534), None).unwrap();
    let (ok, text) = load(&sandbox);
    assert!(!ok && text.contains("uid 65534"), "{text}");
    std::os::unix::fs::chown(&lib, Some(0), None).unwrap();

    use sha2::Digest;
    let digest: String =
        sha2::Sha256::digest(std::fs::read(&lib).unwrap()).iter().map(|b| format!("{b:02x}")).collect();
    sandbox.settings(&entry(&format!("sha256 = \"{}\"\n", "0".repeat(64))));
    let (ok, text) = load(&sandbox);
    assert!(!ok && text.contains(&digest) && text.contains("sha256"), "{text}");
    sandbox.settings(&entry(&format!("sha256 = \"{digest}\"\n")));
    let (ok, text) = load(&sandbox);
    assert!(ok, "{text}");
}

// ------------------------------------------------------------------ finding 12

/// Finding 12: an existing data directory others may enter is made 0700 at
/// start, and the SQLite database and its journal files are 0600.
#[tokio::test(flavor = "multi_thread")]
async fn finding_12_the_data_directory_is_0700_and_the_database_0600() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let data = sandbox.path("data");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = sandbox.serve();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    for file in ["vespene.db", "vespene.db-wal", "vespene.db-shm", "secret.key"] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
        } else {
            assert_ne!(file, "vespene.db", "the database exists");
        }
    }
    drop(server);
}

// ------------------------------------------------------------------ finding 13

/// Finding 13: a first start that cannot listen prints no administrator
/// password and creates no administrator; the next start, on a free port,
/// prints it.
#[tokio::test(flavor = "multi_thread")]
async fn finding_13_a_start_on_a_busy_port_keeps_the_admin_password_for_the_next() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (out, err) = serve_refused(&sandbox, &busy.local_addr().unwrap().to_string());
    assert!(err.contains("cannot listen"), "{err}");
    assert!(!out.contains("password"), "the password was spent on a start that failed: {out}");
    drop(busy);
    let server = sandbox.serve();
    let password = server.admin_password().expect("the next start prints the password");
    assert_eq!(json_login(&server.addr, "admin", &password).0, 200);
}

// ------------------------------------------------------------------ finding 10

/// A GitHub API for organization `acme` answering one repository at an https
/// clone URL (never fetched: the `git` on the importer's PATH is a recorder).
fn github_api_one_repo() -> String {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let body = json!([{"name": "app", "clone_url": "https://git.example.invalid/acme/app.git",
        "default_branch": "main", "private": true, "full_name": "acme/app"}])
    .to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let mut first = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if first.is_empty() {
                    first = line.clone();
                }
                line.clear();
            }
            let (status, body) = if first.contains("/orgs/acme/repos?per_page=100&page=1 ") {
                ("200 OK", body.clone())
            } else {
                ("404 Not Found", "{\"message\":\"Not Found\"}".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

/// Finding 10: the GitHub import hands its token to git through git's
/// environment configuration, not its command line (which `ps` shows to
/// every local user).
#[tokio::test(flavor = "multi_thread")]
async fn finding_10_the_github_import_keeps_its_token_off_gits_command_line() {
    const TOKEN: &str = "ghp_finding10_token_value";
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let alice = user(&store, "alice", false, &[]).await;
    let pool = shell_pool(&store, "importers").await;
    let login = store
        .create_service_login(&vespene::store::ServiceLogin {
            name: "github-token".into(),
            username: "x-access-token".into(),
            password: vespene::store::Secret::Set(TOKEN.into()),
            created_by: Some(alice),
            ..Default::default()
        })
        .await
        .unwrap();
    store
        .create_organization(&vespene::store::Organization {
            name: "acme".into(),
            organization_type: "github".into(),
            organization_identifier: "acme".into(),
            api_endpoint: github_api_one_repo(),
            default_worker_pool_id: pool.id,
            worker_pool_id: pool.id,
            scm_login_id: Some(login),
            import_without_dotfile: true,
            created_by: Some(alice),
            ..Default::default()
        })
        .await
        .unwrap();
    // A `git` that records how it was called.
    let bin = sandbox.path("fakebin");
    std::fs::create_dir(&bin).unwrap();
    let argv_file = sandbox.path("git-argv");
    let env_file = sandbox.path("git-env");
    std::fs::write(
        bin.join("git"),
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" >> {}\nenv >> {}\nexit 1\n", argv_file.display(), env_file.display()),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = sandbox.command(&["import", "acme", "--force"]).env("PATH", path).output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let argv = std::fs::read_to_string(&argv_file).unwrap_or_else(|_| panic!("git never ran: {text}"));
    assert!(argv.contains("https://git.example.invalid/acme/app.git"), "{argv}");
    assert!(!argv.contains(TOKEN), "the token is on git's command line: {argv}");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(env.contains(&format!("GIT_CONFIG_VALUE_0=Authorization: Bearer {TOKEN}")), "git got no token: {env}");
    let org = store.find_organization("acme").await.unwrap().unwrap();
    let log = log_of(&store, org.last_build_id.unwrap()).await;
    assert!(!log.contains(TOKEN), "{log}");
}

// ------------------------------------------------------------------ finding 15

/// A Slack API stand-in that answers `ok` and hands back the first message's JSON.
fn fake_slack() -> (String, std::thread::JoinHandle<Value>) {
    use std::io::BufRead;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
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
        serde_json::from_slice(&body).unwrap()
    });
    (addr, handle)
}

/// Starts `vespene serve` with its log in a file: answers the process and its address.
fn serve_with_log(sandbox: &Sandbox, log: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = sandbox
        .command(&["serve"])
        .env("VESPENE_SERVER__LISTEN", "127.0.0.1:0")
        .env("VESPENE_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve printed where it listens").unwrap();
        if let Some(rest) = line.strip_prefix("Vespene is listening on http://") {
            break rest.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Finding 15: a project named `<!channel>` is shown in Slack, not obeyed
/// (`&`, `<`, `>` escaped); an internal error answers a generic message and
/// an id, the database's own text going only to the log line with that id.
#[tokio::test(flavor = "multi_thread")]
async fn finding_15_slack_text_is_escaped_and_internal_errors_leak_nothing() {
    let (slack, posted) = fake_slack();
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(&format!(
        "[plugins.success_triggers.slack]\nlibrary = \"slack\"\nchannel = \"builds\"\ntoken = \"xoxb-test\"\n\
         base_url = \"http://{slack}\"\nmessage_success = \"<!here> {{{{ project.name }}}} passed\"\n"
    )));
    let store = sandbox.store().await;
    let alice = user(&store, "alice", false, &[]).await;
    let pool = shell_pool(&store, "general").await;
    let name = "<!channel> & <@U123|everyone>";
    let project = Project {
        name: name.into(),
        worker_pool_id: pool.id,
        created_by: Some(alice),
        script: "#!/bin/sh\ntrue\n".into(),
        ..Default::default()
    };
    store.create_project(&project).await.unwrap();
    let id = start(&sandbox, name, &[]);
    WorkerProcess::spawn(&sandbox, &["--max-builds", "1"]).wait(Duration::from_secs(60));
    assert_eq!(finished(&store, id, Duration::from_secs(10)).await.status, BuildStatus::Success);
    let text = posted.join().unwrap()["text"].as_str().unwrap().to_string();
    assert_eq!(text, "<!here> &lt;!channel&gt; &amp; &lt;@U123|everyone&gt; passed", "the template's own text is kept");

    // An internal error: the table behind /api/v1/tokens is gone.
    let log = sandbox.path("serve.log");
    let (mut server, addr) = serve_with_log(&sandbox, &log);
    user(&store, "bob", false, &[]).await;
    let client = session_from_login(&addr, "bob");
    sqlx::query("DROP TABLE api_tokens").execute(store.pool()).await.unwrap();
    let (status, body) = client.text("GET", "/api/v1/tokens", None);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(status, 500, "{body}");
    assert!(!body.contains("api_tokens") && !body.contains("database"), "raw database text answered: {body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    let id = message.split("(id ").nth(1).and_then(|r| r.split(')').next()).expect("an error id");
    let log = std::fs::read_to_string(&log).unwrap();
    let line = log.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("no log line carries {id}:\n{log}"));
    assert!(line.contains("api_tokens"), "the log line has the cause: {line}");
}

// ------------------------------------------------------------------ finding 16

/// Needs PostgreSQL: skipped without `VESPENE_TEST_POSTGRES_URL`, unless `CI`
/// is set (then it fails). Driven by the finding 16 test below.
#[tokio::test(flavor = "multi_thread")]
async fn finding_16_probe_needs_postgres() {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(Db::Postgres, "finding_16_probe").await.is_none() {
        return;
    }
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    assert_eq!(store.backend(), vespene::store::Backend::Postgres);
}

/// Finding 16: a test whose service is missing prints SKIP and passes on a
/// developer's machine, and fails when `CI` is set.
#[test]
fn finding_16_a_missing_service_fails_the_test_in_ci() {
    let probe = |ci: Option<&str>| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "finding_16_probe_needs_postgres", "--nocapture", "--test-threads", "1"])
            .env_remove("VESPENE_TEST_POSTGRES_URL")
            .env_remove("CI");
        if let Some(ci) = ci {
            cmd.env("CI", ci);
        }
        let out = cmd.output().unwrap();
        (out.status.success(), format!("{}{}", stdout(&out), stderr(&out)))
    };
    let (ok, text) = probe(None);
    assert!(ok && text.contains("SKIP finding_16_probe on postgres"), "{text}");
    let (ok, text) = probe(Some("false"));
    assert!(ok && text.contains("SKIP"), "{text}");
    let (ok, text) = probe(Some("true"));
    assert!(!ok, "in CI a missing service must fail: {text}");
    assert!(text.contains("CI is set") && text.contains("VESPENE_TEST_POSTGRES_URL"), "{text}");
}
