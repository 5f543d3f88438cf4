//! Issue 14, finding 4: secret variables stay secret. Through the real
//! binary and plugins, with an admin and two ordinary users (A owns the
//! project, B is another user): secret values are write-only in the API,
//! absent from every field of the build record and from the served build
//! root, masked in the output in their common encodings, and `"********"`
//! keeps a stored value.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::Digest;
use vespene::store::Store;
use vespene_e2e::api_client::{session_from_login, user, Client};
use vespene_e2e::*;

/// A's database password: characters that URL-encoding and JSON escape.
const DB_PASS: &str = "Zq7\"x/+p@ss w0rd!Kt9#Lm";
/// A secret of A's variable set.
const SET_TOKEN: &str = "set-secret-9f8e7d6c5b";
/// A's webhook token.
const HOOK: &str = "hook-token-31415926";

struct Team {
    _sandbox: Sandbox,
    server: Server,
    store: Store,
    admin: Client,
    a: Client,
    b: Client,
    pool_id: i64,
}

async fn team() -> Team {
    let sandbox = Sandbox::new();
    sandbox
        .settings(&format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 1\n", bin_dir().display()));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    user(&store, "root", true, &[]).await;
    user(&store, "alice", false, &[]).await;
    user(&store, "bob", false, &[]).await;
    let (admin, a, b) = (
        session_from_login(&server.addr, "root"),
        session_from_login(&server.addr, "alice"),
        session_from_login(&server.addr, "bob"),
    );
    let pool = admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({"name": "secrets-pool", "isolation_method": "shell", "build_latest": false, "shared": true})),
    );
    let pool_id = pool["id"].as_i64().unwrap();
    Team { _sandbox: sandbox, server, store, admin, a, b, pool_id }
}

/// Every spelling of `secret` the output must not hold.
fn spellings(secret: &str) -> Vec<String> {
    let b = secret.as_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let nl = [b, b"\n"].concat();
    vec![
        secret.to_string(),
        STANDARD.encode(b),
        STANDARD_NO_PAD.encode(b),
        URL_SAFE.encode(b),
        URL_SAFE_NO_PAD.encode(b),
        STANDARD.encode(&nl),
        hex.clone(),
        hex.to_uppercase(),
        serde_json::to_string(secret).unwrap(),
        secret.chars().rev().collect(),
    ]
}

fn assert_clean(what: &str, text: &str) {
    let fragments = ["w0rd".to_string(), "p%40ss".to_string(), "9f8e7d6c".into()];
    for spelling in [DB_PASS, SET_TOKEN, HOOK].into_iter().flat_map(spellings).chain(fragments) {
        assert!(!text.contains(&spelling), "{what} holds a secret ({spelling}):\n{text}");
    }
}

/// A's variable set and project (secret `DB_PASS` and webhook token) on the team's pool.
fn a_project(t: &Team, script: &str) -> (i64, i64) {
    let set = t.a.ok(
        "POST",
        "/api/v1/variable_sets",
        Some(&json!({
            "name": "a-set",
            "variables": json!({"SET_TOKEN": {"secret": SET_TOKEN}, "region": "eu"}).to_string(),
        })),
    );
    let project = t.a.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({
            "name": "a-project",
            "worker_pool_id": t.pool_id,
            "script": script,
            "variables": json!({"DB_PASS": {"secret": DB_PASS}, "target": "prod"}).to_string(),
            "variable_set_ids": [set["id"]],
            "webhook_enabled": true,
            "webhook_token": HOOK,
            "repo_url": "https://git.example.com/a.git",
        })),
    );
    (project["id"].as_i64().unwrap(), set["id"].as_i64().unwrap())
}

fn wait_finished(c: &Client, id: i64) -> Value {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let build = c.ok("GET", &format!("/api/v1/builds/{id}"), None);
        if !["QUEUED", "RUNNING", "ABORTING"].contains(&build["status"].as_str().unwrap_or("")) {
            return build;
        }
        assert!(Instant::now() < until, "build {id} did not finish: {build}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_4_secret_values_are_write_only_and_encrypted_at_rest() {
    let t = team().await;
    let (project, set) = a_project(&t, "#!/bin/bash\necho hi\n");

    // Nobody reads them back: not A who wrote them, not the admin, not B.
    for (who, c) in [("A", &t.a), ("admin", &t.admin), ("B", &t.b)] {
        for path in [
            format!("/api/v1/projects/{project}"),
            "/api/v1/projects".into(),
            format!("/api/v1/variable_sets/{set}"),
            "/api/v1/variable_sets".into(),
            format!("/ui/projects/{project}"),
            format!("/ui/projects/{project}/edit"),
            format!("/ui/variable_sets/{set}/edit"),
        ] {
            let (_, text) = c.text("GET", &path, None);
            assert_clean(&format!("{who} GET {path}"), &text);
        }
    }
    // A's edit form: the webhook token is an empty password field marked as stored.
    let (status, form) = t.a.text("GET", &format!("/ui/projects/{project}/edit"), None);
    assert_eq!(status, 200, "{form}");
    assert!(
        form.contains(r#"<input type="password" id="f-webhook_token" name="webhook_token""#)
            && form.contains("(stored; leave blank to keep)"),
        "{form}"
    );
    let shown = t.a.ok("GET", &format!("/api/v1/projects/{project}"), None);
    let vars = &shown["variables"];
    assert_eq!(vars["DB_PASS"], json!({"secret": "********"}), "shown as set: {vars}");
    assert_eq!(shown["webhook_token"], "********", "the webhook token shows as set, never its value");

    // Encrypted at rest: the database holds neither value.
    for (table, id) in [("projects", project), ("variable_sets", set)] {
        let sql = format!("SELECT * FROM {table} WHERE id = {id}");
        let row = sqlx::query(&sql).fetch_one(t.store.pool()).await.unwrap();
        use sqlx::Row;
        let columns: Vec<String> =
            (0..row.len()).filter_map(|i| row.try_get::<Option<String>, _>(i).ok().flatten()).collect();
        assert_clean(&format!("the {table} row"), &columns.join("\n"));
    }

    // Writing back what was read keeps the values; "********" with nothing stored is refused by name.
    t.a.ok(
        "PATCH",
        &format!("/api/v1/projects/{project}"),
        Some(&json!({"variables": shown["variables"], "description": "edited", "webhook_token": "********"})),
    );
    let (status, text) = t.a.text(
        "PATCH",
        &format!("/api/v1/projects/{project}"),
        Some(&json!({"variables": json!({"NEW": {"secret": "********"}}).to_string()})),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("NEW") && text.contains("none is stored"), "{text}");
    let (status, text) = t.a.text(
        "PATCH",
        &format!("/api/v1/projects/{project}"),
        Some(&json!({"variables": json!({"BAD": {"secret": 42}}).to_string()})),
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("BAD") && text.contains("takes a string"), "{text}");

    // The kept webhook token still proves a push, and only the right one does.
    let push = json!({"ref": "refs/heads/main", "repository": "https://git.example.com/a.git"}).to_string();
    let (status, text) = http_request(&t.server.addr, "POST", "/webhooks", &[("X-Vespene-Token", "wrong")], &push);
    assert!(status == 401 || status == 403, "{status} {text}");
    let (status, text) = http_request(&t.server.addr, "POST", "/webhooks", &[("X-Vespene-Token", HOOK)], &push);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("a-project"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_4_builds_hold_no_secret_and_the_output_masks_every_encoding() {
    let t = team().await;
    let script = r#"#!/bin/bash
V='{{ DB_PASS }}'
printf 'sha=%s\n' "$(printf %s "$V" | sha256sum | cut -c1-64)"
[ "$(jq -r .DB_PASS vespene.json)" = "$V" ] && echo "vespene.json has the value"
echo "plain $V"
printf %s "$V" | base64 -w0; echo
printf %s "$V" | base64 -w0 | tr -d =; echo
printf %s "$V" | basenc --base64url -w0; echo
printf %s "$V" | basenc --base64url -w0 | tr -d =; echo
echo "$V" | base64
printf %s "$V" | xxd -p | tr -d '\n'; echo
printf %s "$V" | xxd -p | tr -d '\n' | tr a-f A-F; echo
jq -rn --arg v "$V" '$v|@uri'
jq -cn --arg v "$V" '{pass: $v}'
printf '%s\n%s\n' "${V:0:9}" "${V:9}"
printf %s "$V" | rev; echo
echo "set token {{ SET_TOKEN }}"
echo "hook hook-token-$((31415925 + 1))"
echo "vespene/set leaked {{ SET_TOKEN }}"
"#;
    let (project, _) = a_project(&t, script);
    t.a.ok(
        "PATCH",
        &format!("/api/v1/projects/{project}"),
        Some(&json!({"variables": json!({"DB_PASS": {"secret": DB_PASS}}).to_string()})),
    );
    // What A reads back and writes again ("********") keeps the value the build gets.
    let shown = t.a.ok("GET", &format!("/api/v1/projects/{project}"), None);
    t.a.ok("PATCH", &format!("/api/v1/projects/{project}"), Some(&json!({"variables": shown["variables"]})));

    let build = t.a.ok("POST", &format!("/api/v1/projects/{project}/start"), Some(&json!({})));
    let id = build["id"].as_i64().unwrap();
    assert_clean("the queued build", &build.to_string());
    let build = wait_finished(&t.a, id);
    assert_eq!(build["status"], "SUCCESS", "{build}");

    let output = t.a.ok("GET", &format!("/api/v1/builds/{id}/output?limit=10000"), None);
    let lines: Vec<String> =
        output["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap().to_string()).collect();
    let log = lines.join("\n");
    // The build saw the real value (kept through "********"), in its script and in vespene.json.
    let sha: String = sha2::Sha256::digest(DB_PASS.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert!(lines.iter().any(|l| l.ends_with(&format!("sha={sha}"))), "{log}");
    assert!(log.contains("vespene.json has the value"), "{log}");
    // ...and every spelling of it was masked, the split one included.
    assert_clean("the output", &log);
    assert!(log.contains("plain ********"), "{log}");
    assert!(log.contains("set token ********") && log.contains("hook ********"), "{log}");
    assert!(lines.iter().filter(|l| l.contains("********")).count() >= 15, "{log}");

    // No API field of the build holds a secret, for anyone who may see it.
    for (who, c) in [("A", &t.a), ("admin", &t.admin), ("B", &t.b)] {
        for path in [
            format!("/api/v1/builds/{id}"),
            format!("/api/v1/builds?project_id={project}"),
            format!("/api/v1/builds/{id}/output?limit=10000"),
            format!("/ui/builds/{id}"),
            format!("/ui/builds/{id}/files"),
            format!("/ui/builds/{id}/files/vespene.json"),
            format!("/ui/builds/{id}/files/vespene_launch.sh"),
        ] {
            let (_, text) = c.text("GET", &path, None);
            assert_clean(&format!("{who} GET {path}"), &text);
        }
    }
    let build = t.a.ok("GET", &format!("/api/v1/builds/{id}"), None);
    assert_eq!(build["output_variables"]["leaked"], "********", "{build}");
    assert!(build["script"].as_str().unwrap().contains("@@vespene-secret:DB_PASS:"), "{build}");
    let (status, served) = t.a.text("GET", &format!("/ui/builds/{id}/files/vespene.json"), None);
    assert_eq!(status, 200, "{served}");
    assert!(served.contains("@@vespene-secret:"), "the served vespene.json shows placeholders: {served}");

    // The build root itself was rewritten without secrets when the build ended.
    let root = std::path::PathBuf::from(build["working_dir"].as_str().unwrap());
    for name in ["vespene.json", "vespene_launch.sh"] {
        let text = std::fs::read_to_string(root.join(name)).unwrap();
        assert_clean(&format!("{name} in the build root"), &text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_4_a_secret_named_db_pass_is_masked_and_short_ones_are_named() {
    let t = team().await;
    let script = "#!/bin/bash\necho 'db {{ DB_PASS }}'\necho 'pin {{ PIN }}'\n";
    let project = t.a.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({
            "name": "db-project",
            "worker_pool_id": t.pool_id,
            "script": script,
            "variables": json!({"DB_PASS": {"secret": DB_PASS}, "PIN": {"secret": "1234"}}).to_string(),
        })),
    );
    let build = t.a.ok("POST", &format!("/api/v1/projects/{}/start", project["id"]), Some(&json!({})));
    let id = build["id"].as_i64().unwrap();
    assert_eq!(wait_finished(&t.a, id)["status"], "SUCCESS");
    let output = t.a.ok("GET", &format!("/api/v1/builds/{id}/output"), None);
    let log: Vec<&str> = output["lines"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    let log = log.join("\n");
    assert!(log.contains("db ********"), "{log}");
    assert_clean("the output", &log);
    // Below the minimum length a value is not masked, and the log says so.
    assert!(log.contains("pin 1234"), "{log}");
    assert!(log.contains("secret variable PIN is shorter than 6 characters"), "{log}");
}
