//! Build output at volume (issue 18), end to end through the real `vespene`
//! binary and plugin `.so` files: a build printing as fast as it can is
//! stopped and ends ABORTED while another user's requests are answered, and
//! output past `[limits] max_output_bytes` is left out with a marker. The
//! figures (latency, memory, lines per second) are in `scripts/bench logs`;
//! these tests assert behaviour, never a duration.

use std::time::Duration;

use vespene::store::{BuildStatus, OutputStream};
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

fn settings(extra: &str) -> String {
    format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 2\n{extra}", bin_dir().display())
}

/// Threat: one user's build prints without end (`while true; do echo; done`)
/// to take the server down for everyone. Alice's flood is stored while bob's
/// own requests are answered, and her stop ends it ABORTED with its output kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_build_is_stopped_and_other_users_are_answered_meanwhile() {
    let (_sandbox, server, store, pool, alice) = alice_on_a_shell_pool(&settings("")).await;
    user(&store, "bob", false, &[]).await;
    let bob = token_for(&server.addr, "bob");
    bob.ok("POST", "/api/v1/projects", Some(&serde_json::json!({"name": "bobs", "worker_pool_id": pool})));

    let id = create_and_start(&alice, pool, "flood", "#!/bin/sh\nwhile true; do echo tick; done\n");
    wait_for(Duration::from_secs(60), "the flood to fill the log", || async {
        (store.output_seq(id).await.unwrap().unwrap_or(0) > 200_000).then_some(())
    })
    .await;
    for _ in 0..20 {
        let projects = bob.ok("GET", "/api/v1/projects", None);
        assert_eq!(projects["count"], 1, "bob sees his own project only: {projects}");
        let (status, _) = bob.call("GET", &format!("/api/v1/builds/{id}"), None);
        assert!(status == 403 || status == 404, "bob may not read alice's build: {status}");
        let build = alice.ok("GET", &format!("/api/v1/builds/{id}"), None);
        assert_eq!(build["status"], "RUNNING");
    }
    let (status, _) = bob.call("POST", &format!("/api/v1/builds/{id}/stop"), None);
    assert!(status == 403 || status == 404, "bob may not stop alice's flood: {status}");
    alice.ok("POST", &format!("/api/v1/builds/{id}/stop"), None);
    let build = finished(&store, id, Duration::from_secs(60)).await;
    assert_eq!(build.status, BuildStatus::Aborted);

    // Every stored line is there, numbered without a gap, the ticks and then
    // the stop's own message.
    let lines = store.output_since(id, 0, 0).await.unwrap();
    assert_eq!(lines.len() as i64, build.output_lines, "every line numbered once");
    assert!(lines.iter().enumerate().all(|(i, l)| l.seq == i as i64 + 1), "line numbers without a gap");
    let ticks = lines.iter().filter(|l| l.stream == OutputStream::Stdout).count();
    assert!(ticks > 200_000, "{ticks} ticks stored");
    assert!(lines.iter().filter(|l| l.stream == OutputStream::Stdout).all(|l| unstamped(&l.text) == "tick"));
    let messages: Vec<&str> =
        lines.iter().filter(|l| l.stream == OutputStream::Message).map(|l| l.text.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("stop")), "the stop is logged: {messages:?}");
    // The API pages through the chunks by line number, as before.
    let page = alice.ok("GET", &format!("/api/v1/builds/{id}/output?after=4095&limit=3"), None);
    let seqs: Vec<i64> = page["lines"].as_array().unwrap().iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [4096, 4097, 4098], "{page}");
}

/// Output past the cap is not stored: what came before it is, a message says
/// where the cap was reached, the build runs on to its own end (and its
/// later messages are stored), and the last line counts what was left out.
#[tokio::test(flavor = "multi_thread")]
async fn output_past_the_cap_is_left_out_with_a_marker_and_counted() {
    let (_sandbox, _server, store, pool, alice) =
        alice_on_a_shell_pool(&settings("[limits]\nmax_output_bytes = 1048576\n")).await;
    let total = 300_000u64;
    let id = create_and_start(&alice, pool, "chatty", &format!("#!/bin/sh\nseq 1 {total}\necho done >&2\n"));
    let build = finished(&store, id, Duration::from_secs(120)).await;
    assert_eq!(build.status, BuildStatus::Success, "the cap does not fail the build");

    // The lines that fit: each counts with its newline.
    let (mut kept, mut bytes) = (0u64, 0u64);
    loop {
        let cost = (kept + 1).to_string().len() as u64 + 1;
        if bytes + cost > 1_048_576 {
            break;
        }
        kept += 1;
        bytes += cost;
    }
    let lines = store.output_since(id, 0, 0).await.unwrap();
    let output: Vec<&str> =
        lines.iter().filter(|l| l.stream == OutputStream::Stdout).map(|l| unstamped(&l.text)).collect();
    assert_eq!(output.len() as u64, kept, "the lines under the cap, and no other");
    assert_eq!(output.last().copied(), Some(kept.to_string().as_str()));
    let messages: Vec<&str> =
        lines.iter().filter(|l| l.stream == OutputStream::Message).map(|l| unstamped(&l.text)).collect();
    let marker = messages
        .iter()
        .position(|m| m.starts_with("output limit reached"))
        .unwrap_or_else(|| panic!("no marker in {} lines: {messages:?}", output.len()));
    assert!(messages[marker].contains("past 1 MiB"), "{}", messages[marker]);
    let dropped = total - kept + 1; // `done` too
    let counted = format!("{dropped} line(s) of output");
    assert!(messages.iter().any(|m| m.starts_with(&counted)), "the drop is counted as {counted}: {messages:?}");
    // The marker sits where the output stopped.
    let marker_seq = lines.iter().find(|l| unstamped(&l.text).starts_with("output limit reached")).unwrap().seq;
    let last_kept = lines.iter().rfind(|l| l.stream == OutputStream::Stdout).unwrap().seq;
    assert!(marker_seq > last_kept, "the marker follows the last kept line");
}
