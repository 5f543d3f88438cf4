//! A bounded load test of the REST API on loopback: 200 concurrent clients
//! read the project list and a build's output for 30 s (VESPENE_BENCH_SECONDS)
//! against the release `vespene serve` on SQLite. Prints requests per second
//! and fails if any request failed. VESPENE_BENCH_PATH sends every request
//! to one path instead (to measure one request kind alone), and
//! VESPENE_BENCH_CLIENTS changes the number of clients. Every answer must be
//! the same as the first one, which is checked to hold the 20 projects and
//! the 200 lines asked for: a fast wrong answer counts as a failure.
//!
//! Run with `scripts/bench api_load`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vespene::store::{NewBuild, OutputStream, Project};

const CLIENTS: usize = 200;

fn main() {
    let seconds: u64 = std::env::var("VESPENE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    let client_count: usize =
        std::env::var("VESPENE_BENCH_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(CLIENTS);
    let only_path = std::env::var("VESPENE_BENCH_PATH").ok();
    let release = support::procs::release_dir();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (token, build_id) = runtime.block_on(async {
        let store = support::sqlite_store(dir.path()).await;
        let token = support::bench_superuser(&store).await;
        let pool = support::shell_pool(&store).await;
        let mut project_id = 0;
        for i in 0..20 {
            project_id = store
                .create_project(&Project { name: format!("project-{i}"), worker_pool_id: pool, ..Default::default() })
                .await
                .unwrap();
        }
        let build = store
            .create_build(&NewBuild {
                project_id: Some(project_id),
                worker_pool_id: pool,
                status: Some(vespene::store::BuildStatus::Failure),
                ..Default::default()
            })
            .await
            .unwrap();
        let lines: Vec<(OutputStream, String)> =
            (0..500).map(|i| (OutputStream::Stdout, format!("output line {i}"))).collect();
        store.append_output(build.id, &lines).await.unwrap();
        store.close().await;
        (token, build.id)
    });
    let mut server = Command::new(release.join("vespene"))
        .arg("serve")
        .env("VESPENE_DATA_DIR", dir.path())
        .env("VESPENE_SYSTEM_DIR", dir.path().join("etc"))
        .env("VESPENE_SERVER__LISTEN", "127.0.0.1:0")
        .env("VESPENE_WORKERS__EMBEDDED", "false")
        // The harness's own knob is no setting of the server's.
        .env_remove("VESPENE_BENCH_SECONDS")
        .env_remove("VESPENE_BENCH_CLIENTS")
        .env_remove("VESPENE_BENCH_PATH")
        .env("VESPENE_PLUGIN_PATH", &release)
        .env("VESPENE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the release vespene (cargo build --release --workspace first)");
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("Vespene is listening on http://") {
            break rest.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let list_path = "/api/v1/projects?limit=20".to_string();
    let output_path = format!("/api/v1/builds/{build_id}/output?after=0&limit=200");
    let paths: Vec<String> = match &only_path {
        Some(path) => vec![path.clone()],
        None => vec![list_path.clone(), output_path.clone()],
    };
    let expected: Arc<std::collections::HashMap<String, Vec<u8>>> = Arc::new(runtime.block_on(async {
        let mut expected = std::collections::HashMap::new();
        for path in &paths {
            let (status, body) = support::procs::http_response(&addr, "GET", path, &token).await.unwrap();
            assert_eq!(status, 200, "GET {path}");
            let text = String::from_utf8_lossy(&body);
            if *path == list_path {
                assert!((0..20).all(|i| text.contains(&format!("\"project-{i}\""))), "the list holds the 20 projects");
            } else if *path == output_path {
                assert!(text.contains("\"output line 0\"") && text.contains("\"output line 199\""), "200 lines");
                assert!(!text.contains("\"output line 200\""), "no more than the 200 lines asked for");
            }
            expected.insert(path.clone(), body);
        }
        expected
    }));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let deadline = started + Duration::from_secs(seconds);
        let mut clients = Vec::new();
        for c in 0..client_count {
            let (addr, token, ok, failed) = (addr.clone(), token.clone(), ok.clone(), failed.clone());
            let (paths, expected) = (paths.clone(), expected.clone());
            clients.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let path = &paths[(c + n as usize) % paths.len()];
                    match support::procs::http_response(&addr, "GET", path, &token).await {
                        Ok((200, body)) if body == expected[path] => ok.fetch_add(1, Ordering::Relaxed),
                        Ok((200, _)) => {
                            eprintln!("{path}: an answer unlike the first");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok((status, _)) => {
                            eprintln!("{path}: HTTP {status}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            eprintln!("{path}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    n += 1;
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let _ = server.kill();
    let _ = server.wait();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let what = only_path.map(|p| format!(", every request GET {p}")).unwrap_or_default();
    println!(
        "REST API load: {client_count} concurrent clients for {seconds} s on loopback (release build, SQLite{what})"
    );
    println!("  requests: {ok} ok, {failed} failed; {:.0} requests/s", ok as f64 / elapsed);
    assert_eq!(failed, 0, "some requests failed");
}
