//! Issue 18's live viewers and big logs, end to end through the real
//! `vespene` binary: many SSE viewers of one build (followed through the
//! server's shared live hub, not a poll each), a viewer resuming with
//! Last-Event-ID, a build run by a standalone `vespene worker` process
//! followed live, the raw log download (`log.txt`, plain and gzip), and who
//! may read them (threat tests, listed in docs/security.md).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vespene::store::{Store, WorkerPool};
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

/// The longest any one read may wait.
const WAIT: Duration = Duration::from_secs(120);

fn settings(embedded: bool) -> String {
    format!(
        "plugin_path = [\"{}\"]\n[workers]\nembedded = {embedded}\nper_pool = 2\n[limits]\nlive_streams_per_user = 200\nlive_streams_total = 400\n",
        bin_dir().display()
    )
}

/// A shared pool with shell isolation (builds can see the test's gate files).
async fn shell_pool(store: &Store) -> i64 {
    let pool =
        WorkerPool { name: "shell".into(), isolation_method: "shell".into(), shared: true, ..Default::default() };
    store.create_worker_pool(&pool).await.unwrap()
}

/// Creates a project with `script` and starts it; answers the build id.
fn start_project(client: &Client, pool: i64, name: &str, script: &str) -> i64 {
    let project =
        client.ok("POST", "/api/v1/projects", Some(&json!({"name": name, "worker_pool_id": pool, "script": script})));
    let build = client.ok("POST", &format!("/api/v1/projects/{}/start", project["id"]), Some(&json!({})));
    build["id"].as_i64().unwrap()
}

/// Every stored line of a build through the API: (seq, text).
fn api_lines(client: &Client, build: i64) -> Vec<(i64, String)> {
    let mut lines = Vec::new();
    loop {
        let after = lines.last().map(|(s, _)| *s).unwrap_or(0);
        let page = client.ok("GET", &format!("/api/v1/builds/{build}/output?after={after}&limit=10000"), None);
        let got = page["lines"].as_array().unwrap();
        if got.is_empty() {
            return lines;
        }
        lines.extend(got.iter().map(|l| (l["seq"].as_i64().unwrap(), l["text"].as_str().unwrap().to_string())));
    }
}

fn wait_until_finished(client: &Client, build: i64) -> Value {
    let started = Instant::now();
    loop {
        let b = client.ok("GET", &format!("/api/v1/builds/{build}"), None);
        if !["QUEUED", "RUNNING", "ABORTING"].contains(&b["status"].as_str().unwrap()) {
            return b;
        }
        assert!(started.elapsed() < WAIT, "build {build} did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A raw HTTP/1.1 exchange answering (status, lower-cased head, body bytes),
/// the body de-chunked.
fn fetch(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let (status, head) = read_head(&mut reader);
    let mut body = Vec::new();
    if head.contains("transfer-encoding: chunked") {
        while let Some(chunk) = read_chunk(&mut reader) {
            body.extend_from_slice(&chunk);
        }
    } else {
        reader.read_to_end(&mut body).unwrap();
    }
    (status, head, body)
}

fn read_head(reader: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

/// The next chunk of a chunked body; `None` at its end (or a cut connection).
fn read_chunk(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut size = String::new();
    if reader.read_line(&mut size).ok()? == 0 {
        return None;
    }
    let size = usize::from_str_radix(size.trim(), 16).ok()?;
    if size == 0 {
        return None;
    }
    let mut chunk = vec![0u8; size + 2];
    reader.read_exact(&mut chunk).ok()?;
    chunk.truncate(size);
    Some(chunk)
}

/// One SSE viewer of a build, reading events off the de-chunked body.
struct Viewer {
    reader: BufReader<TcpStream>,
    pending: String,
}

/// One event: (name, id, data).
type SseEvent = (String, Option<i64>, Value);

impl Viewer {
    /// Opens the stream; answers the status and, on 200, the viewer.
    fn open(addr: &str, token: &str, build: i64, last_event_id: Option<i64>) -> (u16, Option<Viewer>) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let resume = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        write!(
            stream,
            "GET /api/v1/builds/{build}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let (status, head) = read_head(&mut reader);
        if status != 200 {
            return (status, None);
        }
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        (status, Some(Viewer { reader, pending: String::new() }))
    }

    /// The next event, `None` when the stream ended.
    fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(at) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..at + 2).collect();
                let (mut name, mut id, mut data) = (String::new(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v);
                    }
                }
                if name.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((name, id, serde_json::from_str(&data).unwrap()));
            }
            let chunk = read_chunk(&mut self.reader)?;
            self.pending.push_str(std::str::from_utf8(&chunk).expect("UTF-8 event text"));
        }
    }

    /// Every event up to and including `end`: the lines (seq, text) and the end's data.
    fn until_end(mut self) -> (Vec<(i64, String)>, Value) {
        let mut lines = Vec::new();
        while let Some((name, id, data)) = self.next() {
            match name.as_str() {
                "line" => {
                    assert_eq!(id, data["seq"].as_i64(), "the event id is the line number");
                    lines.push((id.unwrap(), data["text"].as_str().unwrap().to_string()));
                }
                "end" => return (lines, data),
                other => panic!("unexpected event {other}"),
            }
        }
        panic!("the stream ended without an end event after {} lines", lines.len());
    }
}

/// Asserts `lines` are `from..` with no gap or repeat.
fn assert_consecutive(lines: &[(i64, String)], from: i64, who: &str) {
    for (i, (seq, _)) in lines.iter().enumerate() {
        assert_eq!(*seq, from + i as i64, "{who}: line {i} has number {seq}");
    }
}

/// The `N` of every `line N` a build printed, in the order seen.
fn numbers(lines: &[(i64, String)]) -> Vec<u64> {
    lines.iter().filter_map(|(_, t)| t.split("line ").nth(1)?.split_whitespace().next()?.parse().ok()).collect()
}

/// A server with embedded workers (or none), a shared shell pool, alice
/// (ordinary) with a token.
async fn server_with_alice(embedded: bool) -> (Sandbox, Server, Store, i64, Client) {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(embedded));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shell_pool(&store).await;
    user(&store, "alice", false, &[]).await;
    let alice = token_for(&server.addr, "alice");
    (sandbox, server, store, pool, alice)
}

fn gate_script(gate: &Path, before: u32, after: u32) -> String {
    format!(
        "#!/bin/sh\nseq -f 'line %g' 1 {before}\nwhile [ ! -e '{}' ]; do sleep 0.05; done\nseq -f 'line %g' {} {}\n",
        gate.display(),
        before + 1,
        before + after
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_viewers_of_one_build_get_every_line_once_in_order() {
    let (_sandbox, server, _store, pool, alice) = server_with_alice(true).await;
    const LINES: u64 = 20_000;
    // Bursts with pauses, 60-odd bytes a line: viewers join at different points.
    let script = format!(
        "#!/bin/sh\nfor b in 0 1 2 3 4 5 6 7 8 9; do seq -f 'line %g ..................................' $((b*{n}+1)) $((b*{n}+{n})); sleep 0.2; done\n",
        n = LINES / 10
    );
    let build = start_project(&alice, pool, "busy", &script);
    let token = alice.token.clone().unwrap();
    let mut viewers = Vec::new();
    for i in 0..40u64 {
        let (addr, token) = (server.addr.clone(), token.clone());
        viewers.push(std::thread::spawn(move || {
            // Ten join while the build runs; two of those stall before reading anything.
            if i >= 30 {
                std::thread::sleep(Duration::from_millis(150 * (i - 29)));
            }
            let (status, viewer) = Viewer::open(&addr, &token, build, None);
            assert_eq!(status, 200, "viewer {i}");
            if i >= 38 {
                std::thread::sleep(Duration::from_secs(3));
            }
            viewer.unwrap().until_end()
        }));
    }
    let results: Vec<_> = viewers.into_iter().map(|v| v.join().unwrap()).collect();
    let stored = api_lines(&alice, build);
    let finished = wait_until_finished(&alice, build);
    assert_eq!(finished["status"], "SUCCESS");
    for (i, (lines, end)) in results.iter().enumerate() {
        let who = format!("viewer {i}");
        assert_consecutive(lines, 1, &who);
        assert_eq!(lines, &stored, "{who} saw exactly the stored lines");
        assert_eq!(end["status"], "SUCCESS", "{who}");
        assert_eq!(end["last_seq"].as_i64(), Some(stored.len() as i64), "{who}");
        assert_eq!(numbers(lines), (1..=LINES).collect::<Vec<_>>(), "{who}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_resuming_with_last_event_id_gets_the_rest_once() {
    let (sandbox, server, _store, pool, alice) = server_with_alice(true).await;
    let gate = sandbox.path("resume-gate");
    let build = start_project(&alice, pool, "resume", &gate_script(&gate, 50, 50));
    let token = alice.token.clone().unwrap();
    let (_, viewer) = Viewer::open(&server.addr, &token, build, None);
    let mut viewer = viewer.unwrap();
    let mut first = Vec::new();
    while let Some((name, id, data)) = viewer.next() {
        assert_eq!(name, "line");
        first.push((id.unwrap(), data["text"].as_str().unwrap().to_string()));
        if first.last().unwrap().1.ends_with("line 20") {
            break;
        }
    }
    drop(viewer);
    let last_id = first.last().unwrap().0;
    // Back while the build waits, and again once it went on.
    let (status, viewer) = Viewer::open(&server.addr, &token, build, Some(last_id));
    assert_eq!(status, 200);
    let mut viewer = viewer.unwrap();
    let (_, id, _) = viewer.next().expect("the line after the last one seen");
    assert_eq!(id, Some(last_id + 1), "resumes right after Last-Event-ID");
    std::fs::write(&gate, "").unwrap();
    let (rest, end) = viewer.until_end();
    assert_eq!(end["status"], "SUCCESS");
    let mut all = first.clone();
    all.push((last_id + 1, String::new()));
    all.extend(rest);
    let stored = api_lines(&alice, build);
    assert_consecutive(&all, 1, "resumed viewer");
    assert_eq!(all.len(), stored.len());
    assert_eq!(end["last_seq"].as_i64(), Some(stored.len() as i64));
    // `?after=` is the same thing for clients that cannot set the header, after the end too.
    let (_, viewer) = Viewer::open(&server.addr, &token, build, Some(stored.len() as i64 - 3));
    let (tail, end) = viewer.unwrap().until_end();
    assert_eq!(tail, stored[stored.len() - 3..].to_vec());
    assert_eq!(end["last_seq"].as_i64(), Some(stored.len() as i64));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_run_by_a_standalone_worker_process_is_followed_live() {
    let (sandbox, server, _store, pool, alice) = server_with_alice(false).await;
    let gate = sandbox.path("worker-gate");
    let build = start_project(&alice, pool, "elsewhere", &gate_script(&gate, 30, 30));
    let token = alice.token.clone().unwrap();
    // Viewers of the queued build, before any worker runs.
    let (tx, rx) = std::sync::mpsc::channel();
    let viewers: Vec<_> = (0..5)
        .map(|_| {
            let (addr, token, tx) = (server.addr.clone(), token.clone(), tx.clone());
            std::thread::spawn(move || {
                let (_, viewer) = Viewer::open(&addr, &token, build, None);
                let mut viewer = viewer.unwrap();
                let mut lines = Vec::new();
                while let Some((name, id, data)) = viewer.next() {
                    assert_eq!(name, "line");
                    lines.push((id.unwrap(), data["text"].as_str().unwrap().to_string()));
                    if lines.last().unwrap().1.ends_with("line 30") {
                        break;
                    }
                }
                tx.send(()).unwrap();
                let (rest, end) = viewer.until_end();
                lines.extend(rest);
                (lines, end)
            })
        })
        .collect();
    let _worker = WorkerProcess::spawn(&sandbox, &[]);
    for _ in 0..5 {
        rx.recv_timeout(WAIT).expect("every viewer saw line 30 while the build waits");
    }
    let running = alice.ok("GET", &format!("/api/v1/builds/{build}"), None);
    assert_eq!(running["status"], "RUNNING", "the lines came live, before the build ended");
    std::fs::write(&gate, "").unwrap();
    let stored_len = {
        wait_until_finished(&alice, build);
        api_lines(&alice, build).len()
    };
    for v in viewers {
        let (lines, end) = v.join().unwrap();
        assert_consecutive(&lines, 1, "a viewer of a worker process's build");
        assert_eq!(lines.len(), stored_len);
        assert_eq!(end["status"], "SUCCESS");
        assert_eq!(numbers(&lines), (1..=60).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_raw_log_downloads_as_plain_text_and_gzip() {
    let (_sandbox, server, _store, pool, alice) = server_with_alice(true).await;
    let script = "#!/bin/sh\nseq -f 'line %g of a long log' 1 2500\nprintf 'tab\\there, é ü 日本, <b>html</b>\\n'\n";
    let build = start_project(&alice, pool, "download", script);
    assert_eq!(wait_until_finished(&alice, build)["status"], "SUCCESS");
    let stored = api_lines(&alice, build);
    assert!(stored.len() > 2500);
    let expected: String = stored.iter().map(|(_, t)| format!("{t}\n")).collect();
    let token = format!("Bearer {}", alice.token.as_deref().unwrap());
    let path = format!("/api/v1/builds/{build}/log.txt");

    let (status, head, body) = fetch(&server.addr, &path, &[("Authorization", &token)]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/plain; charset=utf-8"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(!head.contains("content-encoding"), "not asked for gzip: {head}");
    assert_eq!(String::from_utf8(body).unwrap(), expected);

    let (status, head, body) =
        fetch(&server.addr, &path, &[("Authorization", &token), ("Accept-Encoding", "br, gzip;q=0.8")]);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(body.len() < expected.len() / 3, "compressed: {} of {} bytes", body.len(), expected.len());
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..]).read_to_string(&mut text).unwrap();
    assert_eq!(text, expected);

    // gzip refused explicitly: plain.
    let (_, head, body) = fetch(&server.addr, &path, &[("Authorization", &token), ("Accept-Encoding", "gzip;q=0")]);
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(body.len(), expected.len());
    // The route is in the OpenAPI document.
    let doc = alice.ok("GET", "/api/v1/openapi.json", None);
    assert!(doc["paths"]["/api/v1/builds/{id}/log.txt"]["get"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn threat_bob_can_neither_download_nor_follow_alices_build_log() {
    let (sandbox, server, store, pool, alice) = server_with_alice(true).await;
    user(&store, "bob", false, &[]).await;
    user(&store, "boss", true, &[]).await;
    let bob = token_for(&server.addr, "bob");
    let boss = token_for(&server.addr, "boss");
    let gate = sandbox.path("private-gate");
    let script = format!(
        "#!/bin/sh\necho alices-private-line\nwhile [ ! -e '{}' ]; do sleep 0.05; done\necho alices-last-line\n",
        gate.display()
    );
    let build = start_project(&alice, pool, "alices", &script);
    let log = format!("/api/v1/builds/{build}/log.txt");
    // While it runs and after it ended.
    for phase in ["running", "finished"] {
        if phase == "finished" {
            std::fs::write(&gate, "").unwrap();
            wait_until_finished(&alice, build);
        } else {
            let started = Instant::now();
            while !api_lines(&alice, build).iter().any(|(_, t)| t.ends_with("alices-private-line")) {
                assert!(started.elapsed() < WAIT);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let bearer = |c: &Client| format!("Bearer {}", c.token.as_deref().unwrap());
        for gzip in ["identity", "gzip"] {
            let (status, _, body) =
                fetch(&server.addr, &log, &[("Authorization", &bearer(&bob)), ("Accept-Encoding", gzip)]);
            assert!(status == 403 || status == 404, "{phase}: bob downloaded alice's log: {status}");
            assert!(!String::from_utf8_lossy(&body).contains("alices-"), "{phase}");
        }
        let (status, _, body) = fetch(&server.addr, &log, &[]);
        assert_eq!(status, 401, "{phase}: anonymous");
        assert!(!String::from_utf8_lossy(&body).contains("alices-"));
        let (status, viewer) = Viewer::open(&server.addr, bob.token.as_deref().unwrap(), build, None);
        assert!(status == 403 || status == 404, "{phase}: bob followed alice's build: {status}");
        assert!(viewer.is_none());
        let (status, _, body) = fetch(&server.addr, &format!("/api/v1/builds/{build}/stream?after=0"), &[]);
        assert_eq!(status, 401, "{phase}: anonymous stream");
        assert!(!String::from_utf8_lossy(&body).contains("alices-"));
        // The UI's pages of the log (tail and earlier) are refused to bob too.
        let bob_session = session_from_login(&server.addr, "bob");
        let cookie = bob_session.cookie.clone().unwrap();
        for page in [format!("/ui/builds/{build}"), format!("/ui/builds/{build}?before=2")] {
            let (_, _, body) = fetch(&server.addr, &page, &[("Cookie", &cookie)]);
            assert!(!String::from_utf8_lossy(&body).contains("alices-"), "{phase}: bob read {page}");
        }
        // Alice and a superuser may.
        for who in [&alice, &boss] {
            let (status, _, body) = fetch(&server.addr, &log, &[("Authorization", &bearer(who))]);
            assert_eq!(status, 200, "{phase}");
            assert!(String::from_utf8_lossy(&body).contains("alices-private-line"), "{phase}");
        }
        let (status, viewer) = Viewer::open(&server.addr, boss.token.as_deref().unwrap(), build, None);
        assert_eq!(status, 200);
        let (_, _, data) = viewer.unwrap().next().unwrap();
        assert!(data["seq"].as_i64() == Some(1), "{phase}: the admin follows from the first line");
    }
}
