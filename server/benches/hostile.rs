//! Overload on loopback against the release `vespene serve` (SQLite,
//! embedded workers): the figures of issue 15.
//!
//! 1. Peak server RSS under a flood of 1,000 wrong logins, 200 at a time, with
//!    the default throttle and with the throttle raised out of the way (every
//!    login hashed: the hashing bound alone).
//! 2. Server CPU and RSS with 1,000 concurrent live (SSE) viewers of one
//!    busy build (100 lines every 100 ms, about 1,000 lines/s), followed
//!    through the shared live hub.
//! 3. With 500 half-open connections (request heads never finished), the time
//!    other requests take to be answered.
//!
//! Run with `scripts/bench hostile`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vespene::store::Project;

const WRONG_LOGINS: usize = 1000;
const LOGIN_CONCURRENCY: usize = 200;
const VIEWERS: usize = 1000;
const HALF_OPEN: usize = 500;
/// Rounds of 100 lines, 100 ms apart: long enough to outlast sections 2 and 3.
const BUSY_ROUNDS: usize = 900;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A fresh data directory with a superuser `bench` and a shell pool; answers its API token.
async fn prepare(dir: &std::path::Path) -> (String, i64) {
    let store = support::sqlite_store(dir).await;
    let token = support::bench_superuser(&store).await;
    let pool = support::shell_pool(&store).await;
    let project = store
        .create_project(&Project {
            name: "busy".into(),
            worker_pool_id: pool,
            script: format!(
                "#!/bin/sh\ni=0\nwhile [ $i -lt {BUSY_ROUNDS} ]; do seq -f 'busy line %g of a build printing a thousand lines a second' $((i*100+1)) $((i*100+100)); i=$((i+1)); sleep 0.1; done\n"
            ),
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;
    (token, project)
}

fn serve(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    let release = support::procs::release_dir();
    let mut command = Command::new(release.join("vespene"));
    command
        .arg("serve")
        .env("VESPENE_DATA_DIR", dir)
        .env("VESPENE_BUILD_ROOT", dir.join("builds"))
        .env("VESPENE_SYSTEM_DIR", dir.join("etc"))
        .env("VESPENE_SERVER__LISTEN", "127.0.0.1:0")
        .env("VESPENE_PLUGIN_PATH", &release)
        .env("VESPENE_LOG", "error")
        .stdout(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("start the release vespene (cargo build --release --workspace first)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("Vespene is listening on http://") {
            break rest.trim_end_matches('/').to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

async fn request(addr: &str, text: String) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    stream.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

fn status(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

async fn login_flood(server: &Server) -> (u64, u64, Vec<(u16, usize)>, f64) {
    let pid = server.child.id();
    let before = status_field(pid, "VmHWM:");
    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(LOGIN_CONCURRENCY));
    let mut tasks = Vec::new();
    for i in 0..WRONG_LOGINS {
        let (addr, semaphore) = (server.addr.clone(), semaphore.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore.acquire().await.unwrap();
            // Half for the real account, half for names that do not exist.
            let name = if i % 2 == 0 { "bench".to_string() } else { format!("nobody-{i}") };
            let body = format!("{{\"username\":\"{name}\",\"password\":\"wrong-{i}\"}}");
            let text = format!(
                "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            request(&addr, text).await.map(|a| status(&a)).unwrap_or(0)
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.unwrap()).or_insert(0usize) += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let peak = status_field(pid, "VmHWM:");
    (before, peak, counts.into_iter().collect(), elapsed)
}

fn main() {
    // 1,000 viewers and 500 half-open connections need descriptors (the server inherits the limit).
    // SAFETY: plain resource-limit calls on this process.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let total = Instant::now();
    println!("hostile-input benchmark (release `vespene serve`, SQLite, embedded workers, shell isolation)");

    // 1. Wrong logins.
    println!("{WRONG_LOGINS} wrong logins, {LOGIN_CONCURRENCY} at a time, half for an existing account, half for unknown names, one client address");
    for (label, env) in [
        ("default throttle", vec![]),
        (
            "throttle raised (every login hashed)",
            vec![
                ("VESPENE_LIMITS__LOGIN_FAILURES_PER_ACCOUNT", "1000000"),
                ("VESPENE_LIMITS__LOGIN_FAILURES_PER_ADDRESS", "1000000"),
            ],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        runtime.block_on(prepare(dir.path()));
        let server = serve(dir.path(), &env);
        std::thread::sleep(Duration::from_millis(500));
        let (before, peak, counts, elapsed) = runtime.block_on(login_flood(&server));
        let after = status_field(server.child.id(), "VmRSS:");
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} x HTTP {s}")).collect();
        println!(
            "  {label:<38} peak RSS {:6.1} MiB (idle peak {:5.1}), RSS after {:5.1} MiB; {:5.1} s; {}",
            mib(peak),
            mib(before),
            mib(after),
            elapsed,
            counts.join(", ")
        );
    }

    // 2 and 3 on one server with the live-stream caps raised for the test.
    let dir = tempfile::tempdir().unwrap();
    let (token, project) = runtime.block_on(prepare(dir.path()));
    let server = serve(
        dir.path(),
        &[("VESPENE_LIMITS__LIVE_STREAMS_PER_USER", "2000"), ("VESPENE_LIMITS__LIVE_STREAMS_TOTAL", "2000")],
    );
    let pid = server.child.id();
    let tick = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64;
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = status_field(pid, "VmRSS:");
    let started = runtime.block_on(request(
        &server.addr,
        format!(
            "POST /api/v1/projects/{project}/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        ),
    ));
    let started = started.expect("start the busy build");
    let build: i64 = started
        .split("\"id\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("a build id");
    // Viewers join early: each first reads the lines stored so far from the store.
    std::thread::sleep(Duration::from_secs(1));
    let window = Duration::from_secs(10);
    let events = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let viewers: Vec<_> = (0..VIEWERS)
        .map(|_| {
            let (addr, token, events, failures) = (server.addr.clone(), token.clone(), events.clone(), failures.clone());
            runtime.spawn(async move {
                let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                };
                let head = format!(
                    "GET /api/v1/builds/{build}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
                );
                if stream.write_all(head.as_bytes()).await.is_err() {
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                let mut buf = vec![0u8; 16384];
                let mut first = true;
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let text = String::from_utf8_lossy(&buf[..n]);
                            if first {
                                first = false;
                                if !text.starts_with("HTTP/1.1 200") {
                                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    return;
                                }
                            }
                            events.fetch_add(text.matches("event:line").count() as u64, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    // Every viewer has caught up and follows the build's live channel.
    std::thread::sleep(Duration::from_secs(5));
    let events0 = events.load(std::sync::atomic::Ordering::Relaxed);
    let cpu0 = cpu_ticks(pid);
    std::thread::sleep(window);
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / tick / window.as_secs_f64() * 100.0;
    let delivered = events.load(std::sync::atomic::Ordering::Relaxed) - events0;
    let rss = status_field(pid, "VmRSS:");
    let peak = status_field(pid, "VmHWM:");
    let threads = status_field(pid, "Threads:");
    for v in viewers {
        v.abort();
    }
    // The build alone, for comparison.
    std::thread::sleep(Duration::from_secs(2));
    let cpu0 = cpu_ticks(pid);
    std::thread::sleep(window);
    let build_only_cpu = (cpu_ticks(pid) - cpu0) as f64 / tick / window.as_secs_f64() * 100.0;
    println!("{VIEWERS} live (SSE) viewers of one busy build (100 lines every 100 ms), over {} s", window.as_secs());
    println!(
        "  server CPU {cpu:5.1}% of one core (the build alone: {build_only_cpu:4.1}%), RSS {:5.1} MiB (idle {:5.1}: +{:4.1} MiB; peak {:5.1}), {threads} threads",
        mib(rss),
        mib(idle_rss),
        mib(rss.saturating_sub(idle_rss)),
        mib(peak)
    );
    println!(
        "  {delivered} line events delivered ({:.0}/s), {} viewers refused or failed",
        delivered as f64 / window.as_secs_f64(),
        failures.load(std::sync::atomic::Ordering::Relaxed)
    );
    // Section 3 measures requests with no build running.
    let _ = runtime.block_on(request(
        &server.addr,
        format!("POST /api/v1/builds/{build}/stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"),
    ));
    std::thread::sleep(Duration::from_secs(3));

    // 3. Half-open connections.
    let half_open: Vec<std::net::TcpStream> = (0..HALF_OPEN)
        .map(|_| {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(&server.addr).expect("connect");
            s.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut times: Vec<f64> = Vec::new();
    let mut bad = 0;
    for _ in 0..100 {
        let t = Instant::now();
        let answer = runtime.block_on(request(
            &server.addr,
            format!("GET /api/v1/builds/{build} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"),
        ));
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if answer.map(|a| status(&a)) != Ok(200) {
            bad += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{HALF_OPEN} half-open connections (request heads never finished), then 100 GET /api/v1/builds/ID one after another");
    println!("  median {:.1} ms, p99 {:.1} ms, max {:.1} ms; {bad} not answered 200", times[50], times[98], times[99]);
    // They are closed after the header-read timeout (30 s by default).
    let closed_after = Instant::now();
    let mut open = half_open;
    let mut probe = open.pop().unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut sink = Vec::new();
    let closed = std::io::Read::read_to_end(&mut probe, &mut sink).is_ok();
    println!(
        "  the half-open connections were closed by the server {:.0} s later (header_read_timeout_seconds = 30): {}",
        closed_after.elapsed().as_secs_f64(),
        if closed { "yes" } else { "no" }
    );
    drop(open);
    println!("(total {:.0} s)", total.elapsed().as_secs_f64());
    assert!(times[99] < 100.0, "a request took {:.1} ms with {HALF_OPEN} half-open connections", times[99]);
}
