//! How Vespene scales, measured with the release binary in separate processes:
//!
//! 1. trivial builds per second (600 builds of `echo hi` per run, queued
//!    before the workers start) with 1, 2 and 4 `vespene worker POOL`
//!    processes of one slot each, from the first claim to the last build's end
//!    (the builds' own start and end times), and the ratios 2/1 and 4/1;
//! 2. output lines per second of one build printing 1,000,000 lines
//!    (`seq 1 1000000`) through the `timestamp` output plugin into storage,
//!    from the build's start to its end, after which every stored line is read
//!    back and checked (count, order, text); with the number of appends it
//!    took (lines stored in one append share their storage time) and the
//!    worker process's peak resident memory (VmHWM);
//! 3. the resident memory (VmRSS) of a release `vespene serve` with every
//!    shipped plugin loaded, idle after startup and with 50 builds (50 projects,
//!    `sleep`) running at once in its embedded workers (`workers.per_pool = 50`),
//!    which are then stopped before the server is.
//!
//! 1 and 2 run on SQLite and, when VESPENE_TEST_POSTGRES_URL is set (a server
//! where the role may CREATE DATABASE; `eval "$(scripts/start-postgres)"`), on
//! a fresh PostgreSQL database that is dropped afterwards; 3 runs on SQLite.
//!
//! Run with `scripts/bench scale` (it builds the release binary and plugins
//! first); set VESPENE_TEST_POSTGRES_URL for the PostgreSQL rows.

mod support;

use support::procs::{mib, proc_status, wait_for, Proc, Sandbox};

use std::process::Stdio;
use std::time::{Duration, Instant};

use vespene::store::{BuildFilter, BuildStatus, OutputStream};

/// Trivial builds per throughput run.
const TRIVIAL_BUILDS: usize = 600;
/// Lines printed by the one big build.
const LINES: u64 = 1_000_000;
/// Builds running at once for the memory figure.
const CONCURRENT: usize = 50;
/// Trivial builds in the memory soak, and how many are queued at a time.
const SOAK_BUILDS: usize = 20_000;
const SOAK_ROUND: usize = 1_000;

// ---------------------------------------------------------------------------
// 1. Trivial builds per second with N worker processes

const TRIVIAL_SCRIPT: &str = "#!/bin/sh\necho hi\n";

struct Throughput {
    rate: f64,
    /// How far apart the workers' first claims were.
    spread_ms: i64,
    /// Builds run by the busiest and the idlest worker.
    per_worker: (usize, usize),
}

async fn trivial_builds(sb: &Sandbox, workers: usize) -> Throughput {
    let pool_name = format!("trivial-{workers}");
    let pool = sb.pool(&pool_name).await;
    let project = sb.project(&pool_name, pool, TRIVIAL_SCRIPT).await;
    for _ in 0..TRIVIAL_BUILDS {
        sb.queue(project, pool, TRIVIAL_SCRIPT).await;
    }
    // All queued before any worker exists: the workers start together and claim from a full queue.
    let mut procs: Vec<Proc> = (0..workers)
        .map(|i| {
            Proc::spawn(
                sb.command(&["worker", &pool_name]).stdout(Stdio::null()).stderr(Stdio::inherit()),
                &format!("vespene worker {i}"),
            )
        })
        .collect();
    let store = &sb.store;
    wait_for(Duration::from_secs(120), Duration::from_millis(50), "the trivial builds to finish", || async {
        let mut done = 0;
        for status in [BuildStatus::Success, BuildStatus::Failure, BuildStatus::Aborted, BuildStatus::Orphaned] {
            done += store.count_builds(pool, status).await.unwrap();
        }
        (done as usize == TRIVIAL_BUILDS).then_some(())
    })
    .await;
    for p in &mut procs {
        assert!(p.terminate(Duration::from_secs(10)), "a worker did not stop on SIGTERM");
    }
    let builds = store
        .list_builds(&BuildFilter { worker_pool_id: Some(pool), limit: TRIVIAL_BUILDS as i64, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(builds.len(), TRIVIAL_BUILDS);
    let failed: Vec<_> = builds.iter().filter(|b| b.status != BuildStatus::Success).map(|b| (b.id, b.status)).collect();
    assert!(failed.is_empty(), "builds did not succeed: {failed:?}");
    let ms = |t: Option<chrono::DateTime<chrono::Utc>>| t.expect("a finished build has its times").timestamp_millis();
    let first = builds.iter().map(|b| ms(b.start_time)).min().unwrap();
    let last = builds.iter().map(|b| ms(b.end_time)).max().unwrap();
    let mut by_worker: std::collections::BTreeMap<i64, (i64, usize)> = Default::default();
    for b in &builds {
        let entry = by_worker.entry(b.worker_id.expect("claimed by a worker")).or_insert((i64::MAX, 0));
        entry.0 = entry.0.min(ms(b.start_time));
        entry.1 += 1;
    }
    assert_eq!(by_worker.len(), workers, "not every worker process ran builds");
    let firsts = by_worker.values().map(|v| v.0);
    let counts = by_worker.values().map(|v| v.1);
    Throughput {
        rate: TRIVIAL_BUILDS as f64 / ((last - first).max(1) as f64 / 1000.0),
        spread_ms: firsts.clone().max().unwrap() - firsts.min().unwrap(),
        per_worker: (counts.clone().max().unwrap(), counts.min().unwrap()),
    }
}

// ---------------------------------------------------------------------------
// 1b. Queue to start with an idle worker in another process

/// Builds queued one at a time into an idle `vespene worker` process: the
/// time from the build's queued time to its start (both stamped by the
/// database's clients on this machine), in ms, sorted.
async fn wake_up_ms(sb: &Sandbox, samples: usize) -> Vec<f64> {
    let pool = sb.pool("wake").await;
    let project = sb.project("wake", pool, TRIVIAL_SCRIPT).await;
    let mut worker = Proc::spawn(
        sb.command(&["worker", "wake"]).stdout(Stdio::null()).stderr(Stdio::inherit()),
        "vespene worker (wake-up)",
    );
    let store = &sb.store;
    wait_for(Duration::from_secs(30), Duration::from_millis(50), "the worker to check in", || async {
        (!store.list_workers().await.unwrap().is_empty()).then_some(())
    })
    .await;
    let mut waits = Vec::with_capacity(samples);
    for i in 0..samples {
        // An idle worker at a different point of its poll each time.
        tokio::time::sleep(Duration::from_millis(150 + (i as u64 * 37) % 400)).await;
        let id = sb.queue(project, pool, TRIVIAL_SCRIPT).await;
        let build = wait_for(Duration::from_secs(30), Duration::from_millis(5), "the build to finish", || async {
            let b = store.get_build(id).await.unwrap().unwrap();
            (!b.status.is_active()).then_some(b)
        })
        .await;
        let start = build.start_time.expect("started").timestamp_millis();
        waits.push((start - build.queued_time.expect("queued").timestamp_millis()) as f64);
    }
    assert!(worker.terminate(Duration::from_secs(10)), "the worker did not stop on SIGTERM");
    waits.sort_by(|a, b| a.partial_cmp(b).unwrap());
    waits
}

// ---------------------------------------------------------------------------
// 2. One build printing a million lines

struct Lines {
    seconds: f64,
    stored: u64,
    /// Appends to the store, told apart by their storage time, and the largest.
    batches: u64,
    largest_batch: u64,
    /// The worker process's peak resident memory.
    worker_peak_kib: u64,
}

async fn million_lines(sb: &Sandbox) -> Lines {
    let script = format!("#!/bin/sh\nseq 1 {LINES}\n");
    let pool = sb.pool("lines").await;
    let project = sb.project("lines", pool, &script).await;
    let build = sb.queue(project, pool, &script).await;
    let mut worker = Proc::spawn(
        sb.command(&["worker", "lines"]).stdout(Stdio::null()).stderr(Stdio::inherit()),
        "vespene worker (lines)",
    );
    let store = &sb.store;
    let build = wait_for(Duration::from_secs(240), Duration::from_millis(100), "the big build to finish", || async {
        let b = store.get_build(build).await.unwrap().unwrap();
        (!b.status.is_active()).then_some(b)
    })
    .await;
    let worker_peak_kib = proc_status(worker.pid()).peak_kib;
    assert!(worker.terminate(Duration::from_secs(10)), "the worker did not stop on SIGTERM");
    assert_eq!(build.status, BuildStatus::Success, "the big build did not succeed");
    let seconds = (build.end_time.unwrap() - build.start_time.unwrap()).num_milliseconds() as f64 / 1000.0;

    // Read every stored line back: the script's lines, in order, each stamped once.
    let mut lines = Lines { seconds, stored: 0, batches: 0, largest_batch: 0, worker_peak_kib };
    let (mut after, mut batch_ts, mut batch_len) = (0, None, 0u64);
    loop {
        let page = store.output_since(build.id, after, 100_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.seq;
        for line in page.iter().filter(|l| l.stream == OutputStream::Stdout) {
            lines.stored += 1;
            let (stamp, text) = line.text.split_once(" | ").unwrap_or_else(|| panic!("unstamped: {:?}", line.text));
            assert!(stamp.trim_end().ends_with('m'), "not a timestamp prefix: {:?}", line.text);
            assert_eq!(text, lines.stored.to_string(), "stored line {} is wrong", lines.stored);
            // One append stores its lines with one time.
            if batch_ts != Some(line.ts) {
                lines.batches += 1;
                (batch_ts, batch_len) = (Some(line.ts), 0);
            }
            batch_len += 1;
            lines.largest_batch = lines.largest_batch.max(batch_len);
        }
    }
    lines
}

// ---------------------------------------------------------------------------
// 4. Server memory over a soak of trivial builds

async fn soak() {
    let sb = Sandbox::new(None, &ALL_PLUGINS.replace("per_pool = 50", "per_pool = 4")).await;
    let store = &sb.store;
    support::bench_superuser(store).await;
    let script = "#!/bin/sh\necho hi\n";
    let pool = sb.pool("soak").await;
    let project = sb.project("soak", pool, script).await;
    let (mut server, _) = sb.serve();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = proc_status(server.pid()).rss_kib;
    println!(
        "\nserver memory over a soak: release `vespene serve`, SQLite, every shipped plugin, embedded workers \
         (4 slots), {SOAK_BUILDS} trivial builds queued {SOAK_ROUND} at a time"
    );
    println!("  {:>8} builds   {:>7.1} MiB VmRSS", 0, mib(idle));
    let started = Instant::now();
    let mut after_first = 0;
    for round in 1..=SOAK_BUILDS / SOAK_ROUND {
        for _ in 0..SOAK_ROUND {
            sb.queue(project, pool, script).await;
        }
        wait_for(Duration::from_secs(600), Duration::from_millis(100), "a soak round to finish", || async {
            for status in [BuildStatus::Queued, BuildStatus::Running] {
                let filter = BuildFilter {
                    project_id: Some(project),
                    status: Some(status),
                    limit: 1,
                    offset: 0,
                    ..Default::default()
                };
                if !store.list_builds(&filter).await.unwrap().is_empty() {
                    return None;
                }
            }
            Some(())
        })
        .await;
        let rss = proc_status(server.pid()).rss_kib;
        if round == 1 {
            after_first = rss;
        }
        if round == 1 || round % 5 == 0 {
            println!("  {:>8} builds   {:>7.1} MiB VmRSS", round * SOAK_ROUND, mib(rss));
        }
    }
    let end = proc_status(server.pid()).rss_kib;
    let failed = store
        .list_builds(&BuildFilter {
            project_id: Some(project),
            status: Some(BuildStatus::Failure),
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len();
    println!(
        "  after {SOAK_BUILDS} builds: {:+.1}% against after the first {SOAK_ROUND} ({:.0} builds/s, {failed} failed)",
        (end as f64 / after_first as f64 - 1.0) * 100.0,
        SOAK_BUILDS as f64 / started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0, "soak builds failed");
    assert!(server.terminate(Duration::from_secs(20)), "the server did not exit on SIGTERM");
}

// ---------------------------------------------------------------------------
// 3. Server memory, idle and with 50 builds running

/// The plugins the defaults leave out (they need parameters), configured so
/// that `serve` loads every shipped plugin; the triggers run for no project.
const ALL_PLUGINS: &str = r##"
[workers]
embedded = true
per_pool = 50

[plugins.success_triggers.notify]
library = "command"
per_project = true
command = "true"

[plugins.failure_triggers.slack]
library = "slack"
per_project = true
channel = "#bench"
token = "xoxb-not-a-token"

[plugins.isolation.container]
library = "container"
images = ["debian:bookworm"]

[plugins.pre_triggers.forge]
library = "forge_status"
per_project = true
forge = "github"
"##;

async fn server_memory() {
    let sb = Sandbox::new(None, ALL_PLUGINS).await;
    let store = &sb.store;
    // A user exists, as on every start but the first (which hashes a new admin password).
    support::bench_superuser(store).await;
    let script = "#!/bin/sh\necho started\nexec sleep 120\n";
    let pool = sb.pool("memory").await;
    let mut projects = Vec::new();
    for i in 0..CONCURRENT {
        projects.push(sb.project(&format!("sleeper-{i}"), pool, script).await);
    }

    let plugins = sb.command(&["plugins", "list", "--json"]).stderr(Stdio::inherit()).output().unwrap();
    assert!(plugins.status.success(), "vespene plugins list failed");
    let plugins: serde_json::Value = serde_json::from_slice(&plugins.stdout).unwrap();
    let plugin_count = plugins.as_array().map_or(0, Vec::len);

    let (mut server, _) = sb.serve();
    // Let startup settle: the first housekeeping pass, the workers' first polls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = proc_status(server.pid());

    let mut builds = Vec::new();
    for &project in &projects {
        builds.push(sb.queue(project, pool, script).await);
    }
    let started = Instant::now();
    // Running means the script runs: its first line has been stored.
    wait_for(Duration::from_secs(90), Duration::from_millis(200), "all builds to be running", || async {
        for &id in &builds {
            if store.build_status(id).await.unwrap() != Some(BuildStatus::Running) {
                return None;
            }
            let lines = store.output_since(id, 0, 20).await.unwrap();
            if !lines.iter().any(|l| l.stream == OutputStream::Stdout) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let all_running = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let busy = proc_status(server.pid());
    assert!(!server.exited(), "the server exited");

    // Stop the builds through the store (the server's workers kill their
    // process groups), then the server itself.
    let stopping = Instant::now();
    for &id in &builds {
        store.request_stop(id).await.unwrap();
    }
    wait_for(Duration::from_secs(60), Duration::from_millis(100), "the builds to stop", || async {
        for &id in &builds {
            if store.build_status(id).await.unwrap().is_none_or(|s| s.is_active()) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let stopped_in = stopping.elapsed();
    let term = Instant::now();
    let clean = server.terminate(Duration::from_secs(20));
    let exited_in = term.elapsed();
    let aborted = {
        let mut n = 0;
        for &id in &builds {
            n += usize::from(store.build_status(id).await.unwrap() == Some(BuildStatus::Aborted));
        }
        n
    };

    println!(
        "\nserver memory: release `vespene serve`, SQLite, {plugin_count} plugins loaded (every shipped one), \
         embedded workers with {CONCURRENT} slots"
    );
    let running = format!("{CONCURRENT} builds running (`sleep`)");
    println!("  {:<32} {:>7.1} MiB VmRSS   ({} threads)", "idle after startup", mib(idle.rss_kib), idle.threads);
    println!(
        "  {running:<32} {:>7.1} MiB VmRSS   ({} threads; all running {:.1} s after queueing)",
        mib(busy.rss_kib),
        busy.threads,
        all_running.as_secs_f64()
    );
    let increment = mib(busy.rss_kib.saturating_sub(idle.rss_kib));
    println!(
        "  {:<32} {increment:>7.1} MiB         ({:.0} KiB per running build)",
        "increment",
        increment * 1024.0 / CONCURRENT as f64
    );
    println!(
        "  stop: {aborted}/{CONCURRENT} builds ABORTED {:.1} s after the stop requests; server {} {:.1} s after SIGTERM",
        stopped_in.as_secs_f64(),
        if clean { "exited" } else { "was killed" },
        exited_in.as_secs_f64()
    );
    assert_eq!(aborted, CONCURRENT, "not every build was aborted");
    assert!(clean, "the server did not exit on SIGTERM");
}

// ---------------------------------------------------------------------------

async fn run() {
    let pg_url = std::env::var("VESPENE_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    let mut backends: Vec<Option<&str>> = vec![None];
    if let Some(url) = &pg_url {
        backends.push(Some(url));
    }
    println!("scale benchmark (release `vespene` processes, shell isolation, timestamp output plugin)");
    if pg_url.is_none() {
        println!("(SQLite only: set VESPENE_TEST_POSTGRES_URL for the PostgreSQL rows)");
    }

    println!(
        "\ntrivial builds per second: {TRIVIAL_BUILDS} `echo hi` builds queued, then N `vespene worker POOL` \
         processes (1 slot each);\nfirst claim to last build's end"
    );
    println!(
        "  {:<12} {:>7} {:>10} {:>10}   {:>22}  {:>17}",
        "backend", "workers", "builds/s", "vs 1", "first claims spread", "builds per worker"
    );
    for &backend in &backends {
        let sb = Sandbox::new(backend, "\n[workers]\nembedded = false\n").await;
        let mut rates = Vec::new();
        for workers in [1, 2, 4] {
            let t = trivial_builds(&sb, workers).await;
            rates.push(t.rate);
            println!(
                "  {:<12} {workers:>7} {:>10.1} {:>9.2}x   {:>19} ms  {:>17}",
                sb.backend,
                t.rate,
                t.rate / rates[0],
                t.spread_ms,
                format!("{}-{}", t.per_worker.1, t.per_worker.0)
            );
        }
        println!(
            "  {:<12} ratio 2/1 workers: {:.2}x   ratio 4/1 workers: {:.2}x",
            sb.backend,
            rates[1] / rates[0],
            rates[2] / rates[0]
        );
    }

    println!(
        "\nqueue to start, an idle `vespene worker` process and a build queued by another process \
         (SQLite: the worker polls every 500 ms; PostgreSQL: LISTEN/NOTIFY)"
    );
    for &backend in &backends {
        let sb = Sandbox::new(backend, "\n[workers]\nembedded = false\n").await;
        let waits = wake_up_ms(&sb, 40).await;
        let at = |p: f64| waits[((waits.len() - 1) as f64 * p).round() as usize];
        println!(
            "  {:<12} median {:>7.1} ms   p99 {:>7.1} ms   max {:>7.1} ms   (n={})",
            sb.backend,
            at(0.5),
            at(0.99),
            waits[waits.len() - 1],
            waits.len()
        );
    }

    println!(
        "\none build printing {LINES} lines (`seq 1 {LINES}`) through the timestamp plugin into storage \
         (`vespene worker`), build start to end"
    );
    for &backend in &backends {
        let sb = Sandbox::new(backend, "\n[workers]\nembedded = false\n").await;
        let l = million_lines(&sb).await;
        println!(
            "  {:<12} {:>8.2} s {:>9.0} lines/s   {} lines stored{}, in {} append(s) (largest {} lines); \
             worker peak RSS {:.0} MiB",
            sb.backend,
            l.seconds,
            LINES as f64 / l.seconds,
            l.stored,
            if l.stored == LINES { " and checked" } else { " (WRONG COUNT)" },
            l.batches,
            l.largest_batch,
            mib(l.worker_peak_kib)
        );
        assert_eq!(l.stored, LINES, "stored line count");
    }

    server_memory().await;
    soak().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    runtime.block_on(run());
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
}
