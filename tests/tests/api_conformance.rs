//! API conformance: the OpenAPI document the server serves is checked by
//! `openapi-spec-validator`, and `schemathesis` fuzzes the live server over
//! every operation in it, as an administrator and as an ordinary user. A
//! 5xx, an undocumented status or content type, or an answer that does not
//! match its schema fails the test. Both tools come from PyPI, installed by
//! `scripts/setup --test` into `target/api-tools` (or `$VESPENE_API_TOOLS`).

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use vespene_e2e::api_client::{token_for, user, Client};
use vespene_e2e::{bin_dir, workspace_root, Sandbox};

/// Where the Python tools are; a run without them fails, naming the fix.
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("VESPENE_API_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/api-tools"));
    let path = dir.join("bin").join(name);
    assert!(path.is_file(), "{} is missing: run scripts/setup --test, which installs it", path.display());
    path
}

/// Examples per operation and mode: enough to reach every documented
/// answer, few enough that the whole run takes a few minutes.
const EXAMPLES: &str = "15";

/// One worker: CPython 3.11's `ast` module keeps its recursion depth per
/// process, and two threads compiling patterns at once fail with "AST
/// constructor recursion depth mismatch".
/// Runs schemathesis against `base` as the holder of `token`, on the
/// operations `only` names (every other one when `except` is true).
fn fuzz(document: &std::path::Path, base: &str, token: &str, only: &[&str], except: bool, report: &str) {
    let mut cmd = Command::new(tool("schemathesis"));
    // Its own cache of crashes goes beside the document, not into the checkout.
    cmd.current_dir(document.parent().expect("the document is in the sandbox"));
    cmd.arg("run")
        .arg(document)
        .args(["--url", base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", EXAMPLES, "--seed", "20261204", "--workers", "1"])
        .args(["--phases", "examples,coverage,fuzzing,stateful", "--generation-database", "none"])
        .args(["--request-timeout", "30", "--no-color", "--suppress-health-check", "all"])
        .args(["--report", "junit", "--report-junit-path", report]);
    let flag = if except { "--exclude-operation-id" } else { "--include-operation-id" };
    for id in only {
        cmd.args([flag, id]);
    }
    let out = cmd.output().expect("run schemathesis");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "schemathesis found problems ({}):\n{text}", out.status);
    assert!(text.contains("passed") || text.contains("PASSED") || text.contains("✅"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_valid_and_the_live_api_answers_as_it_says_under_fuzzing() {
    let sandbox = Sandbox::new();
    // No embedded workers: fuzzed projects are started, never run.
    sandbox.settings(&format!("plugin_path = [\"{}\"]\n[workers]\nembedded = false\n", bin_dir().display()));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    user(&store, "root", true, &[]).await;
    user(&store, "alice", false, &[]).await;
    let (root, alice) = (token_for(&server.addr, "root"), token_for(&server.addr, "alice"));
    // Some objects for the fuzzer's ids to find.
    let pool = root.ok("POST", "/api/v1/worker_pools", Some(&json!({ "name": "fuzz-pool", "shared": true })))["id"]
        .as_i64()
        .unwrap();
    let project = alice.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({ "name": "fuzz-project", "worker_pool_id": pool, "script": "#!/bin/sh\necho hi\n" })),
    )["id"]
        .as_i64()
        .unwrap();
    alice.ok("POST", &format!("/api/v1/projects/{project}/start"), None);

    let document: Value = Client::anonymous(&server.addr).ok("GET", "/api/v1/openapi.json", None);
    assert_eq!(document["openapi"], "3.1.0");
    let path = sandbox.path("openapi.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&document).unwrap()).unwrap();

    let out = Command::new(tool("openapi-spec-validator")).arg(&path).output().expect("run openapi-spec-validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Changing or deleting users and deleting tokens could take the
    // administrator's own access away mid-run: those run as alice.
    let own_access = ["user.update", "user.delete", "token.delete", "logout"];
    let base = format!("http://{}", server.addr);
    fuzz(
        &path,
        &base,
        root.token.as_deref().unwrap(),
        &own_access,
        true,
        &sandbox.path("admin.xml").display().to_string(),
    );
    fuzz(
        &path,
        &base,
        alice.token.as_deref().unwrap(),
        &own_access,
        false,
        &sandbox.path("alice.xml").display().to_string(),
    );

    // The fuzzing changed nothing it may not: the administrator still works.
    root.ok("GET", "/api/v1/me", None);
}
