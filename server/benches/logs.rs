//! Build output at volume, measured with the release `vespene serve` (embedded
//! workers, shell isolation, the default `timestamp` output plugin):
//!
//! 1. one build printing 1,000,000 lines (`seq 1 1000000`), from the build's
//!    start to its end, beside `seq 1 1000000 > file` on the same machine and
//!    beside the figure of one row per line (before chunked storage); every
//!    line is then read back and checked. With the server's peak resident
//!    memory (VmHWM), the chunks stored, and the longest gap between the
//!    worker's heartbeats during the build (it checks in every 2 s);
//! 2. a build printing as fast as it can (`while true; do echo tick; done`)
//!    for 10 s: the server's peak resident memory, the latency of other API
//!    requests meanwhile (one client, one request after another), and how long
//!    a stop takes to end it ABORTED.
//!
//! 1 runs on SQLite and, when VESPENE_TEST_POSTGRES_URL is set, on a fresh
//! PostgreSQL database; 2 runs on SQLite (the default install).
//!
//! Run with `scripts/bench logs`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::procs::{http, mib, proc_status, wait_for, Sandbox};
use vespene::store::{BuildStatus, OutputStream, Store};

/// Lines printed by the big build.
const LINES: u64 = 1_000_000;
/// One row per line, before chunked storage (docs/benchmarks.md, commit fd97f4c).
const BEFORE: [(&str, f64); 2] = [("SQLite", 30_893.0), ("PostgreSQL", 160_953.0)];
/// How long the flood runs before it is stopped.
const FLOOD: Duration = Duration::from_secs(10);
/// A heartbeat later than this after the one before is late (workers check in every 2 s).
const LATE_HEARTBEAT: Duration = Duration::from_millis(3_000);

/// Samples the peak resident memory of `pid` until `done`.
fn rss_sampler(pid: u32, done: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !done.load(Ordering::SeqCst) {
            peak = peak.max(proc_status(pid).rss_kib);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// Watches the workers' check-ins until `done`; answers the oldest a
/// worker's last check-in ever was when looked at (every 50 ms), in ms.
fn heartbeat_watch(store: Store, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let mut oldest = 0;
        while !done.load(Ordering::SeqCst) {
            let now = vespene::store::now().timestamp_millis();
            for w in store.list_workers().await.unwrap_or_default() {
                if let Some(at) = w.last_checkin {
                    oldest = oldest.max(now - at.timestamp_millis());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        oldest
    })
}

async fn seq_to_file() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("seq 1 {LINES} > {}", dir.path().join("file").display()))
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed().as_secs_f64()
}

async fn million_lines(backend: Option<&str>) {
    let sb = Sandbox::new(backend, "\n[workers]\nembedded = true\nper_pool = 1\n").await;
    let store = &sb.store;
    let script = format!("#!/bin/sh\nseq 1 {LINES}\n");
    let pool = sb.pool("lines").await;
    let project = sb.project("lines", pool, &script).await;
    let (mut server, _) = sb.serve();
    // Startup settles: the first housekeeping pass, the workers' first check-in.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let done = Arc::new(AtomicBool::new(false));
    let heartbeats = heartbeat_watch(store.clone(), done.clone());
    let build = sb.queue(project, pool, &script).await;
    let build = wait_for(Duration::from_secs(240), Duration::from_millis(20), "the big build to finish", || async {
        let b = store.get_build(build).await.unwrap().unwrap();
        (!b.status.is_active()).then_some(b)
    })
    .await;
    done.store(true, Ordering::SeqCst);
    let longest_gap = heartbeats.await.unwrap();
    let peak_kib = proc_status(server.pid()).peak_kib;
    assert!(server.terminate(Duration::from_secs(10)), "the server did not stop on SIGTERM");
    assert_eq!(build.status, BuildStatus::Success, "the big build did not succeed");
    let seconds = (build.end_time.unwrap() - build.start_time.unwrap()).num_milliseconds() as f64 / 1000.0;

    // Every stored line back: the script's lines, in order, each stamped once.
    let reading = Instant::now();
    let (mut after, mut stored, mut total) = (0, 0u64, 0u64);
    loop {
        let page = store.output_since(build.id, after, 100_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        total += page.len() as u64;
        for line in page.iter().filter(|l| l.stream == OutputStream::Stdout) {
            stored += 1;
            let (stamp, text) = line.text.split_once(" | ").unwrap_or_else(|| panic!("unstamped: {:?}", line.text));
            assert!(stamp.trim_end().ends_with('m'), "not a timestamp prefix: {:?}", line.text);
            assert_eq!(text, stored.to_string(), "stored line {stored} is wrong");
        }
    }
    let read_seconds = reading.elapsed().as_secs_f64();
    assert_eq!(stored, LINES, "stored line count");
    let (raw, packed) = store.log_size(build.id).await.unwrap();
    let rate = LINES as f64 / seconds;
    let before = BEFORE.iter().find(|(name, _)| *name == sb.backend).map(|(_, r)| *r).unwrap_or(f64::NAN);
    println!(
        "  {:<11} {:>6.2} s {:>10.0} lines/s  ({:.1}x one row per line: {before:.0} lines/s)",
        sb.backend,
        seconds,
        rate,
        rate / before
    );
    println!(
        "  {:<11} read back and checked: {total} lines in {read_seconds:.2} s ({:.0} lines/s); log {:.1} MiB, \
         stored {:.1} MiB (zstd)",
        "",
        total as f64 / read_seconds,
        raw as f64 / 1048576.0,
        packed as f64 / 1048576.0
    );
    println!(
        "  {:<11} server peak RSS {:.1} MiB; the oldest heartbeat seen during the build was {:.1} s old ({})",
        "",
        mib(peak_kib),
        longest_gap as f64 / 1000.0,
        if longest_gap as u128 > LATE_HEARTBEAT.as_millis() { "LATE" } else { "none late" }
    );
}

async fn flood() {
    let sb = Sandbox::new(None, "\n[workers]\nembedded = true\nper_pool = 1\n").await;
    let store = &sb.store;
    let token = support::bench_superuser(store).await;
    let script = "#!/bin/sh\nwhile true; do echo tick; done\n";
    let pool = sb.pool("flood").await;
    let project = sb.project("flood", pool, script).await;
    let (mut server, addr) = sb.serve();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kib = proc_status(server.pid()).rss_kib;
    let build = sb.queue(project, pool, script).await;
    wait_for(Duration::from_secs(30), Duration::from_millis(10), "the flood to start", || async {
        (store.output_seq(build).await.unwrap().unwrap_or(0) > 10).then_some(())
    })
    .await;
    let done = Arc::new(AtomicBool::new(false));
    let rss = rss_sampler(server.pid(), done.clone());
    let lines_at_start = store.output_seq(build).await.unwrap().unwrap_or(0);
    let flood_started = Instant::now();
    let mut latencies = Vec::new();
    let errors = AtomicU64::new(0);
    let paths = [format!("/api/v1/builds/{build}"), "/api/v1/projects".to_string(), "/api/v1/builds?limit=20".into()];
    while flood_started.elapsed() < FLOOD {
        for path in &paths {
            let sent = Instant::now();
            match http(&addr, "GET", path, &token).await {
                Ok(200) => latencies.push(sent.elapsed().as_secs_f64() * 1000.0),
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let lines = store.output_seq(build).await.unwrap().unwrap_or(0) - lines_at_start;
    let flood_seconds = flood_started.elapsed().as_secs_f64();
    let stop_sent = Instant::now();
    let answered = http(&addr, "POST", &format!("/api/v1/builds/{build}/stop"), &token).await;
    let stop_answer_ms = stop_sent.elapsed().as_secs_f64() * 1000.0;
    assert!(matches!(answered, Ok(200..=299)), "the stop request was refused: {answered:?}");
    let status = wait_for(Duration::from_secs(120), Duration::from_millis(10), "the flood to stop", || async {
        store.build_status(build).await.unwrap().filter(|s| !s.is_active())
    })
    .await;
    let stopped_in = stop_sent.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let peak_kib = rss.join().unwrap();
    assert!(server.terminate(Duration::from_secs(20)), "the server did not stop on SIGTERM");
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "  stored while flooding: {lines} lines in {flood_seconds:.1} s ({:.0} lines/s)",
        lines as f64 / flood_seconds
    );
    println!("  server RSS: idle {:.1} MiB, peak during the flood {:.1} MiB", mib(idle_kib), mib(peak_kib));
    println!(
        "  other API requests meanwhile: median {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={}, {} failed)",
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1],
        latencies.len(),
        errors.load(Ordering::Relaxed)
    );
    println!("  stop: answered in {stop_answer_ms:.1} ms; build {status} {stopped_in:.2} s after the request");
    assert_eq!(status, BuildStatus::Aborted, "the flood did not end ABORTED");
}

async fn run() {
    let pg_url = std::env::var("VESPENE_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    println!("logs benchmark (release `vespene serve`, embedded workers, shell isolation, timestamp output plugin)");
    if pg_url.is_none() {
        println!("(SQLite only: set VESPENE_TEST_POSTGRES_URL for the PostgreSQL rows)");
    }
    let seq = seq_to_file().await;
    println!(
        "\none build printing {LINES} lines (`seq 1 {LINES}`), build start to end; \
         `seq 1 {LINES} > file` takes {:.0} ms here",
        seq * 1000.0
    );
    million_lines(None).await;
    if let Some(url) = &pg_url {
        million_lines(Some(url)).await;
    }
    println!(
        "\na build printing as fast as it can (`while true; do echo tick; done`) for {} s, SQLite",
        FLOOD.as_secs()
    );
    flood().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    runtime.block_on(run());
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
}
