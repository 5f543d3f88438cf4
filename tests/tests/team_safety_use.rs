//! Issue 14, findings 3 and 2, end to end through `vespene serve` with the
//! shipped plugins: an admin and two ordinary users, A and B.
//!
//! * Finding 3: an object may name only what its author may `use` (their
//!   own objects, those of their owner groups, or shared ones).
//! * Finding 2: snippets belong to someone like everything else; a project
//!   renders only the snippets its owners may use, a snippet never replaces
//!   a variable set anywhere else, and a broken snippet fails only the builds
//!   whose script uses it.

use std::time::Duration;

use serde_json::{json, Value};
use vespene::store::{BuildStatus, Store};
use vespene_e2e::api_client::{user, Client};
use vespene_e2e::builds::{finished, log_of, stdout_of};
use vespene_e2e::*;

/// A request that must be refused with 403 naming `field` and the object.
fn refused(client: &Client, method: &str, path: &str, body: Value, field: &str, object: &str) {
    let (status, value) = client.call(method, path, Some(&body));
    assert_eq!(status, 403, "{method} {path} {body}: {value}");
    assert_eq!(value["field"], field, "{value}");
    let message = value["error"].as_str().unwrap_or_default();
    assert!(message.contains(&format!("'{object}'")) && message.contains(field), "{message}");
}

async fn client(store: &Store, addr: &str, user: i64) -> Client {
    let (_, token) = store.create_api_token(user, "test", None).await.unwrap();
    Client::with_token(addr, &token)
}

/// A server with embedded workers, and clients for an admin, A and B.
async fn team(sandbox: &Sandbox) -> (Server, Store, Client, Client, Client) {
    sandbox
        .settings(&format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 2\n", bin_dir().display()));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let (root, a, b) = (
        user(&store, "root", true, &[]).await,
        user(&store, "alice", false, &[]).await,
        user(&store, "bob", false, &[]).await,
    );
    let admin = client(&store, &server.addr, root).await;
    let a = client(&store, &server.addr, a).await;
    let b = client(&store, &server.addr, b).await;
    (server, store, admin, a, b)
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAalice\n-----END OPENSSH PRIVATE KEY-----\n";

#[tokio::test(flavor = "multi_thread")]
async fn finding_3_a_project_names_only_what_its_author_may_use() {
    let sandbox = Sandbox::new();
    let (_server, store, admin, a, b) = team(&sandbox).await;
    let default_pool = store.find_worker_pool("default").await.unwrap().expect("the default pool").id;

    // A's things, and the admin's pool and stage, none of them shared.
    let login = a.ok(
        "POST",
        "/api/v1/service_logins",
        Some(&json!({"name": "alice-git", "username": "alice", "password": "alice-secret"})),
    );
    let key = a.ok("POST", "/api/v1/ssh_keys", Some(&json!({"name": "alice-key", "private_key": KEY})));
    let set =
        a.ok("POST", "/api/v1/variable_sets", Some(&json!({"name": "alice-vars", "variables": "{\"x\": \"1\"}"})));
    let pool =
        admin.ok("POST", "/api/v1/worker_pools", Some(&json!({"name": "admins-pool", "isolation_method": "shell"})));
    let private_stage = admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "private-stage"})));
    let stage = admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "build", "shared": true})));
    // A may name the shared stage in A's own pipeline, not the private one.
    refused(
        &a,
        "POST",
        "/api/v1/pipelines",
        json!({"name": "alice-pipe", "stage_ids": [id(&stage), id(&private_stage)]}),
        "stage_ids",
        "private-stage",
    );
    let pipeline = a.ok("POST", "/api/v1/pipelines", Some(&json!({"name": "alice-pipe", "stage_ids": [id(&stage)]})));
    // A uses A's own things.
    a.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "alice-project", "worker_pool_id": default_pool, "scm_login_id": id(&login),
               "ssh_key_ids": [id(&key)], "variable_set_ids": [id(&set)],
               "pipeline_id": id(&pipeline), "stage_id": id(&stage)})),
    );

    // B may not name any of A's things, nor the admin's private pool; the
    // error names the field and the object.
    let project = |extra: Value| {
        let mut body = json!({"name": "bob-project", "worker_pool_id": default_pool});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let projects = "/api/v1/projects";
    refused(&b, "POST", projects, project(json!({"scm_login_id": id(&login)})), "scm_login_id", "alice-git");
    refused(&b, "POST", projects, project(json!({"ssh_key_ids": [id(&key)]})), "ssh_key_ids", "alice-key");
    refused(&b, "POST", projects, project(json!({"variable_set_ids": [id(&set)]})), "variable_set_ids", "alice-vars");
    refused(&b, "POST", projects, project(json!({"worker_pool_id": id(&pool)})), "worker_pool_id", "admins-pool");
    refused(
        &b,
        "POST",
        projects,
        project(json!({"pipeline_id": id(&pipeline), "stage_id": id(&stage)})),
        "pipeline_id",
        "alice-pipe",
    );
    refused(
        &b,
        "POST",
        "/api/v1/pipelines",
        json!({"name": "bob-pipe", "stage_ids": [id(&private_stage)]}),
        "stage_ids",
        "private-stage",
    );
    assert!(store.find_project("bob-project").await.unwrap().is_none(), "nothing was saved");

    // B may use the default pool (shared from the first start) and shared stages.
    let bobs_pipe = b.ok("POST", "/api/v1/pipelines", Some(&json!({"name": "bob-pipe", "stage_ids": [id(&stage)]})));
    let bobs = b.ok("POST", projects, Some(&project(json!({"pipeline_id": id(&bobs_pipe), "stage_id": id(&stage)}))));
    let bobs_path = format!("/api/v1/projects/{}", id(&bobs));
    // An update may not add A's things either.
    refused(&b, "PATCH", &bobs_path, json!({"ssh_key_ids": [id(&key)]}), "ssh_key_ids", "alice-key");

    // B cannot mark A's login shared; A can, and then B may use it.
    let (status, value) =
        b.call("PATCH", &format!("/api/v1/service_logins/{}", id(&login)), Some(&json!({"shared": true})));
    assert_eq!(status, 403, "{value}");
    assert!(!store.get_service_login(id(&login)).await.unwrap().unwrap().shared);
    let (status, value) =
        b.call("PATCH", &format!("/api/v1/worker_pools/{}", id(&pool)), Some(&json!({"shared": true})));
    assert_eq!(status, 403, "{value}");
    a.ok("PATCH", &format!("/api/v1/service_logins/{}", id(&login)), Some(&json!({"shared": true})));
    let updated = b.ok("PATCH", &bobs_path, Some(&json!({"scm_login_id": id(&login)})));
    assert_eq!(updated["scm_login_id"], id(&login));

    // A stops sharing it: B's project keeps working, because an update that
    // does not change a reference does not ask again...
    a.ok("PATCH", &format!("/api/v1/service_logins/{}", id(&login)), Some(&json!({"shared": false})));
    let updated = b.ok("PATCH", &bobs_path, Some(&json!({"description": "still mine"})));
    assert_eq!(updated["scm_login_id"], id(&login));
    // ...but naming it anew is refused again.
    refused(
        &b,
        "POST",
        projects,
        json!({"name": "bob-2", "worker_pool_id": default_pool, "scm_login_id": id(&login)}),
        "scm_login_id",
        "alice-git",
    );

    // Superusers may use everything.
    admin.ok(
        "POST",
        projects,
        Some(&json!({"name": "admins-project", "worker_pool_id": id(&pool), "ssh_key_ids": [id(&key)],
               "scm_login_id": id(&login), "pipeline_id": id(&pipeline), "stage_id": id(&stage)})),
    );
}

/// The frozen 1.0 plugin of tests/compat, built once per target directory.
fn frozen_1_0_plugin() -> std::path::PathBuf {
    let target = workspace_root().join("target").join("fixtures-target");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "vespene-compat-plugin", "--manifest-path"])
        .arg(workspace_root().join("tests/compat/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the frozen 1.0 plugin failed");
    target.join("debug/libvespene_compat.so")
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_3_a_plugin_built_before_use_is_asked_edit_instead() {
    // The chain is the 1.0 plugin alone (with group-required, unconfigured):
    // it allows every action it does not know, and lets only their creators
    // edit service logins.
    let so = frozen_1_0_plugin();
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n\
         [plugins.authorization.ownership]\nenabled = false\n\
         [plugins.authorization.compat]\nlibrary = \"{}\"\nlocked_kind = \"service_login\"\n",
        bin_dir().display(),
        so.display()
    ));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let (a, b) = (user(&store, "alice", false, &[]).await, user(&store, "bob", false, &[]).await);
    let (a, b) = (client(&store, &server.addr, a).await, client(&store, &server.addr, b).await);
    let pool = store.find_worker_pool("default").await.unwrap().unwrap().id;
    let login = a.ok("POST", "/api/v1/service_logins", Some(&json!({"name": "alice-git", "username": "alice"})));
    let key = a.ok("POST", "/api/v1/ssh_keys", Some(&json!({"name": "alice-key", "private_key": KEY})));

    // Asked `use` as such, the plugin would allow it; asked `edit`, it refuses.
    let body = json!({"name": "bob-project", "worker_pool_id": pool, "scm_login_id": id(&login)});
    refused(&b, "POST", "/api/v1/projects", body, "scm_login_id", "alice-git");
    let (_, value) = b.call(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "bob-project", "worker_pool_id": pool, "scm_login_id": id(&login)})),
    );
    assert!(value["error"].as_str().unwrap().contains("(by 'compat')"), "{value}");
    // What it lets B edit, it lets B use: nothing more, nothing less.
    b.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "bob-project", "worker_pool_id": pool, "ssh_key_ids": [id(&key)]})),
    );
    a.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "alice-project", "worker_pool_id": pool, "scm_login_id": id(&login)})),
    );
}

/// Starts a project through the API and waits for its build: (status, the
/// script's output, the frozen variables, the whole log).
async fn run_build(store: &Store, client: &Client, project: i64) -> (BuildStatus, String, Value, String) {
    let build = client.ok("POST", &format!("/api/v1/projects/{project}/start"), Some(&json!({})));
    let build = finished(store, id(&build), Duration::from_secs(60)).await;
    let output = stdout_of(store, build.id).await.join("\n");
    let variables = serde_json::from_str(&build.variables).unwrap_or(Value::Null);
    (build.status, output, variables, log_of(store, build.id).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_2_another_users_snippets_cannot_touch_a_build() {
    let sandbox = Sandbox::new();
    let (_server, store, _admin, a, b) = team(&sandbox).await;
    let pool = store.find_worker_pool("default").await.unwrap().unwrap().id;

    // A's project, with a variable and a secret one, and A's own snippet.
    a.ok("POST", "/api/v1/snippets", Some(&json!({"name": "alice-snippet", "text": "alice says {{ greeting }}"})));
    let project = a.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "alice-project", "worker_pool_id": pool,
               "variables": "{\"greeting\": \"hello-from-a\", \"api_token\": \"a-secret-value\"}",
               "script": "#!/bin/bash\necho \"greeting={{ greeting }}\"\necho \"mine={{ alice_snippet }}\"\n"})),
    );
    // B's snippets: one named like A's variable that would print A's secret,
    // one that does not even compile, and one of B's own.
    b.ok("POST", "/api/v1/snippets", Some(&json!({"name": "greeting", "text": "INJECTED {{ api_token }}"})));
    b.ok("POST", "/api/v1/snippets", Some(&json!({"name": "broken", "text": "{{ oops"})));
    let bobs = b.ok("POST", "/api/v1/snippets", Some(&json!({"name": "bob-snippet", "text": "bob says hi"})));

    // A's build is as if B's snippets did not exist, and A's snippet works.
    let (status, output, variables, log) = run_build(&store, &a, id(&project)).await;
    assert_eq!(status, BuildStatus::Success, "{log}");
    assert!(output.contains("greeting=hello-from-a"), "{output}");
    assert!(output.contains("mine=alice says hello-from-a"), "{output}");
    assert!(!output.contains("INJECTED") && !log.contains("INJECTED"), "{log}");
    assert_eq!(variables["greeting"], "hello-from-a");
    assert!(variables.get("broken").is_none() && variables.get("bob_snippet").is_none(), "{variables}");

    // B's snippet is not even visible to A's project unless B shares it.
    let uses_bobs = a.ok(
        "POST",
        "/api/v1/projects", Some(&json!({"name": "alice-uses-bob", "worker_pool_id": pool, "script": "#!/bin/bash\necho \"{{ bob_snippet }}\"\n"})),
    );
    let (status, _, _, log) = run_build(&store, &a, id(&uses_bobs)).await;
    assert_eq!(status, BuildStatus::Failure, "{log}");
    assert!(log.contains("bob_snippet"), "the template error names it: {log}");
    // A cannot share it for B; B can.
    let (status, value) = a.call("PATCH", &format!("/api/v1/snippets/{}", id(&bobs)), Some(&json!({"shared": true})));
    assert_eq!(status, 403, "{value}");
    b.ok("PATCH", &format!("/api/v1/snippets/{}", id(&bobs)), Some(&json!({"shared": true})));
    let (status, output, _, log) = run_build(&store, &a, id(&uses_bobs)).await;
    assert_eq!(status, BuildStatus::Success, "{log}");
    assert!(output.contains("bob says hi"), "{output}");

    // Shared or not, a snippet never replaces a variable set elsewhere.
    b.ok("PATCH", &format!("/api/v1/snippets/{}", id(&bobs)), Some(&json!({"shared": false})));
    let greeting = store.find_snippet("greeting").await.unwrap().unwrap();
    b.ok("PATCH", &format!("/api/v1/snippets/{}", greeting.id), Some(&json!({"shared": true})));
    let (status, output, variables, log) = run_build(&store, &a, id(&project)).await;
    assert_eq!(status, BuildStatus::Success, "{log}");
    assert!(output.contains("greeting=hello-from-a") && !output.contains("INJECTED"), "{output}");
    assert_eq!(variables["greeting"], "hello-from-a");

    // The broken snippet fails only the builds whose script uses it: B's.
    let bobs_project = b.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "bob-project", "worker_pool_id": pool, "script": "#!/bin/bash\necho \"{{ broken }}\"\n"})),
    );
    let (status, _, _, log) = run_build(&store, &b, id(&bobs_project)).await;
    assert_eq!(status, BuildStatus::Failure, "{log}");
    assert!(log.contains("snippet 'broken'"), "the failure names the snippet: {log}");
    let (status, _, _, log) = run_build(&store, &a, id(&project)).await;
    assert_eq!(status, BuildStatus::Success, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_3_the_ui_pickers_offer_only_what_the_user_may_use() {
    let sandbox = Sandbox::new();
    let (server, _store, _admin, a, _b) = team(&sandbox).await;
    a.ok("POST", "/api/v1/service_logins", Some(&json!({"name": "alice-git", "username": "alice"})));
    a.ok("POST", "/api/v1/ssh_keys", Some(&json!({"name": "alice-key", "private_key": KEY})));
    let shared = a.ok("POST", "/api/v1/variable_sets", Some(&json!({"name": "alice-shared-vars", "shared": true})));
    assert_eq!(shared["shared"], true);
    let page = |user: &str| {
        let cookie = server.login(user, &format!("password-of-{user}"));
        let (status, page) = server.get_with("/ui/projects/new", &[("Cookie", &cookie)]);
        assert_eq!(status, 200, "{page}");
        page
    };
    let alices = page("alice");
    assert!(alices.contains("alice-git") && alices.contains("alice-key"), "{alices}");
    let bobs = page("bob");
    assert!(!bobs.contains("alice-git") && !bobs.contains("alice-key"), "{bobs}");
    assert!(bobs.contains("alice-shared-vars") && bobs.contains(">default<"), "{bobs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_p1_a_plugin_built_before_approve_is_asked_edit_instead() {
    // The 1.0 plugin allows every action it does not know, and lets only
    // their creators edit pipelines: asked `approve` as such, it would let
    // anyone approve; asked `edit`, it refuses everyone but the creator.
    let so = frozen_1_0_plugin();
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n\
         [plugins.authorization.ownership]\nenabled = false\n\
         [plugins.authorization.compat]\nlibrary = \"{}\"\nlocked_kind = \"pipeline\"\n",
        bin_dir().display(),
        so.display()
    ));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let (a, b) = (user(&store, "alice", false, &[]).await, user(&store, "bob", false, &[]).await);
    let (a, b) = (client(&store, &server.addr, a).await, client(&store, &server.addr, b).await);
    let pipeline = a.ok("POST", "/api/v1/pipelines", Some(&json!({"name": "alice-pipeline"})));
    let approve = format!("/api/v1/pipelines/{}/runs/1/approve", id(&pipeline));
    let (status, value) = b.call("POST", &approve, None);
    assert_eq!(status, 403, "{value}");
    assert!(value["error"].as_str().unwrap().contains("(by 'compat')"), "{value}");
    // Alice passes authorization; her pipeline simply has no such run waiting.
    let (status, value) = a.call("POST", &approve, None);
    assert!(status == 404 || status == 409, "{status} {value}");
}
