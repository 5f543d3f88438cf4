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

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vespene::store::{BuildFilter, BuildStatus, NewBuild, OutputStream, Project, Store, StoreOptions, WorkerPool};

/// Trivial builds per throughput run.
const TRIVIAL_BUILDS: usize = 600;
/// Lines printed by the one big build.
const LINES: u64 = 1_000_000;
/// Builds running at once for the memory figure.
const CONCURRENT: usize = 50;

// ---------------------------------------------------------------------------
// Child processes and clean-up

/// A child process, killed (SIGKILL) and reaped when dropped unless it has
/// already exited.
struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    fn spawn(command: &mut Command, what: &str) -> Proc {
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {what}: {e} (build it first: cargo build --release --workspace --exclude vespene-e2e)")
        });
        Proc { child, what: what.to_string() }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for it to exit by itself.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        let started = Instant::now();
        while !self.exited() {
            if started.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// SIGTERM, then up to `limit` for it to exit; SIGKILL after that.
    /// Answers whether it exited on SIGTERM.
    fn terminate(&mut self, limit: Duration) -> bool {
        if self.exited() {
            return true;
        }
        // SAFETY: plain kill(2) on our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        if self.wait_exit(limit) {
            return true;
        }
        eprintln!("{} did not exit within {limit:?} of SIGTERM: killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Kills (by pid) build processes left running in `dir`: the scripts of a
/// worker or server that was killed on a failure path. Nothing else runs there.
fn kill_strays(dir: &Path) {
    let Ok(dir) = dir.canonicalize() else { return };
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        if std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir)) {
            // SAFETY: kill(2) on a process of this benchmark's own build roots.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

/// A fresh PostgreSQL database, dropped (with any connection left) when this is dropped.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    async fn create(admin_url: &str, name: String) -> (PgDatabase, String) {
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(admin_url).await.expect("connect to VESPENE_TEST_POSTGRES_URL");
        admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.unwrap();
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        let _ = admin.close().await;
        let url = format!("{}/{name}", admin_url.rsplit_once('/').expect("a URL naming a database").0);
        (PgDatabase { admin_url: admin_url.to_string(), name }, url)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // A runtime of its own on a thread of its own: this may run inside the main runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                use sqlx::{Connection, Executor};
                let mut admin = sqlx::AnyConnection::connect(&url).await.map_err(|e| e.to_string())?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<_, String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the benchmark database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the benchmark database {}", self.name),
        }
    }
}

// ---------------------------------------------------------------------------
// A data directory, a database and the settings file worker processes read

struct Sandbox {
    backend: &'static str,
    release: PathBuf,
    config: PathBuf,
    store: Store,
    // Dropped in this order, after `Drop::drop` has killed stray build processes:
    // the directory, then the PostgreSQL database.
    dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill_strays(self.dir.path());
    }
}

/// The release directory: the binary and the plugins.
fn release_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

impl Sandbox {
    /// SQLite in a temp dir, or a fresh database on the PostgreSQL server of `pg_url`.
    async fn new(pg_url: Option<&str>, extra_settings: &str) -> Sandbox {
        let release = release_dir();
        assert!(release.join("vespene").is_file(), "no release binary at {}/vespene", release.display());
        let dir = tempfile::Builder::new().prefix("vespene-bench-scale-").tempdir().unwrap();
        let (pg, url, backend) = match pg_url {
            Some(base) => {
                static DATABASES: AtomicUsize = AtomicUsize::new(0);
                let name = format!("bench_scale_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
                let (db, url) = PgDatabase::create(base, name).await;
                (Some(db), url, "PostgreSQL")
            }
            None => (None, format!("sqlite://{}", dir.path().join("vespene.db").display()), "SQLite"),
        };
        let mut table = toml::Table::new();
        table.insert("data_dir".into(), dir.path().display().to_string().into());
        table.insert("plugin_path".into(), toml::Value::Array(vec![release.display().to_string().into()]));
        let mut database = toml::Table::new();
        database.insert("url".into(), url.clone().into());
        table.insert("database".into(), database.into());
        let mut text = toml::to_string(&table).unwrap();
        text.push_str(extra_settings);
        let config = dir.path().join("settings.toml");
        std::fs::write(&config, text).unwrap();
        // The bench opens (and migrates) the store first, creating the secret key
        // the processes share.
        let store = Store::open(&StoreOptions {
            url,
            secrets: support::basic_secrets(dir.path()),
            max_connections: 4,
            migrate: true,
            compress_logs: true,
        })
        .await
        .unwrap();
        Sandbox { backend, release, config, store, dir, _pg: pg }
    }

    /// `vespene --config SETTINGS ARGS...`, with no inherited VESPENE_* variable
    /// and no /etc/vespene.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(self.release.join("vespene"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("VESPENE_") {
                command.env_remove(name);
            }
        }
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("VESPENE_SYSTEM_DIR", self.dir.path().join("no-system-settings"))
            .env("VESPENE_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    async fn pool(&self, name: &str) -> i64 {
        let pool = WorkerPool {
            name: name.into(),
            isolation_method: "shell".into(),
            // Queued builds of one project all run (no newest-only rule).
            build_latest: false,
            ..Default::default()
        };
        self.store.create_worker_pool(&pool).await.unwrap()
    }

    async fn project(&self, name: &str, pool: i64, script: &str) -> i64 {
        let project = Project { name: name.into(), worker_pool_id: pool, script: script.into(), ..Default::default() };
        self.store.create_project(&project).await.unwrap()
    }

    /// Queues a build straight into the store (as the engine benchmark does):
    /// one project may then have many queued builds.
    async fn queue(&self, project: i64, pool: i64, script: &str) -> i64 {
        let build = NewBuild {
            project_id: Some(project),
            worker_pool_id: pool,
            script: script.into(),
            variables: "{}".into(),
            launch_answers: "{}".into(),
            ..Default::default()
        };
        self.store.create_build(&build).await.unwrap().id
    }
}

/// Polls `check` every `every` until it answers `Some`; panics after `limit`.
async fn wait_for<T, F, Fut>(limit: Duration, every: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

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
"##;

struct Status {
    rss_kib: u64,
    peak_kib: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Status {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server is running");
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Status { rss_kib: field("VmRSS:"), peak_kib: field("VmHWM:"), threads: field("Threads:") }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

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

    let mut server = Proc::spawn(
        sb.command(&["serve"])
            .env("VESPENE_SERVER__LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        "vespene serve",
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = server.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Vespene is listening on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("vespene serve did not start listening");
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
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let started = Instant::now();
    runtime.block_on(run());
    println!("\n(total {:.0} s)", started.elapsed().as_secs_f64());
}
