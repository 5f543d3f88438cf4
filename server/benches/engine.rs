//! The engine's costs, measured in one process on SQLite with the release
//! plugins: trigger-to-first-output latency against a bare `sh` spawn,
//! trivial builds per second with 1 and 4 worker slots, and what the `sandbox`
//! isolation adds to a trivial build over `shell`.
//!
//! Run with `scripts/bench engine`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vespene::engine::{Engine, StartRequest, WorkerConfig};
use vespene::plugins::Registry;
use vespene::settings::{defaults, Layer, Settings};
use vespene::store::{NewBuild, OutputStream, Project, Store, StoreOptions, WorkerPool};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(label: &str, mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = percentile(&samples, 0.5);
    println!(
        "{label:<44} median {median:>8.2} ms   p99 {:>8.2} ms   (n={})",
        percentile(&samples, 0.99),
        samples.len()
    );
    median
}

fn bare_spawn_ms() -> f64 {
    let started = Instant::now();
    let mut child = Command::new("/bin/sh").args(["-c", "echo first"]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    child.wait().unwrap();
    ms
}

/// An engine over SQLite in a temp dir, or over a fresh database on the
/// PostgreSQL server of `pg_url`.
async fn setup(pg_url: Option<&str>) -> (Engine, tempfile::TempDir, WorkerPool) {
    let dir = tempfile::tempdir().unwrap();
    let release = support::procs::release_dir();
    let mut table = defaults();
    table.insert("data_dir".into(), toml::Value::String(dir.path().join("data").display().to_string()));
    // Build identities (sandbox isolation as root) must reach their roots.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let roots = dir.path().join("builds");
    table.insert("build_root".into(), toml::Value::String(roots.display().to_string()));
    table.insert("plugin_path".into(), toml::Value::Array(vec![toml::Value::String(release.display().to_string())]));
    let settings = Settings::from_layers(&[Layer { source: "bench".into(), table }]).unwrap();
    let registry = Registry::load(&settings.plugins, &settings.plugin_path.dirs())
        .unwrap_or_else(|e| panic!("{e} (build the plugins first: cargo build --release --workspace)"));
    let url = match pg_url {
        Some(base_url) => {
            use sqlx::{Connection, Executor};
            sqlx::any::install_default_drivers();
            let name = format!("bench_engine_{}", std::process::id());
            let mut admin = sqlx::AnyConnection::connect(base_url).await.unwrap();
            admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
            format!("{}/{name}", base_url.rsplit_once('/').unwrap().0)
        }
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let store = Store::open(&StoreOptions {
        url,
        secrets: support::basic_secrets(dir.path()),
        max_connections: 8,
        migrate: true,
        compress_logs: true,
    })
    .await
    .unwrap();
    let pool = WorkerPool {
        name: "bench".into(),
        isolation_method: "shell".into(),
        build_latest: false,
        ..Default::default()
    };
    let id = store.create_worker_pool(&pool).await.unwrap();
    let pool = store.get_worker_pool(id).await.unwrap().unwrap();
    (Engine::new(store, Arc::new(registry), Arc::new(settings)), dir, pool)
}

async fn latency(engine: &Engine, pool: &WorkerPool, runs: usize) -> Vec<f64> {
    let project = Project {
        name: "latency".into(),
        worker_pool_id: pool.id,
        // Still running when its first line is stored: this measures live output.
        script: "#!/bin/sh\necho first\nsleep 0.05\n".into(),
        ..Default::default()
    };
    let project_id = engine.store().create_project(&project).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_worker(WorkerConfig::named(vec![], 1), stop_rx).await }
    });
    let mut samples = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let build = engine.start_project(StartRequest { project_id, ..Default::default() }).await.unwrap();
        loop {
            let lines = engine.store().output_since(build.id, 0, 1000).await.unwrap();
            if lines.iter().any(|l| l.stream == OutputStream::Stdout) {
                break;
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        // Let the build finish before the next one, so runs do not overlap.
        while engine.store().get_build(build.id).await.unwrap().unwrap().status.is_active() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = stop_tx.send(true);
    let _ = worker.await;
    samples
}

/// Start-to-finished times of a trivial build on each pool, alternating so
/// that drift hits both alike.
async fn isolation_cost(engine: &Engine, pools: &[&WorkerPool], runs: usize) -> Vec<Vec<f64>> {
    let mut projects = Vec::new();
    for pool in pools {
        let project = Project {
            name: format!("isolation-{}", pool.name),
            worker_pool_id: pool.id,
            script: "#!/bin/sh\necho ok\n".into(),
            ..Default::default()
        };
        projects.push(engine.store().create_project(&project).await.unwrap());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_worker(WorkerConfig::named(vec![], 1), stop_rx).await }
    });
    let mut samples = vec![Vec::new(); pools.len()];
    for _ in 0..runs {
        for (i, project_id) in projects.iter().enumerate() {
            let started = Instant::now();
            let build =
                engine.start_project(StartRequest { project_id: *project_id, ..Default::default() }).await.unwrap();
            loop {
                let b = engine.store().get_build(build.id).await.unwrap().unwrap();
                if !b.status.is_active() {
                    assert_eq!(b.status.as_str(), "SUCCESS", "build {} on pool {}", b.id, pools[i].name);
                    break;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            samples[i].push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let _ = stop_tx.send(true);
    let _ = worker.await;
    samples
}

async fn throughput(engine: &Engine, pool: &WorkerPool, slots: usize, builds: usize, backend: &str) -> f64 {
    let project = Project {
        name: format!("throughput-{slots}"),
        worker_pool_id: pool.id,
        script: "#!/bin/sh\necho ok\n".into(),
        ..Default::default()
    };
    let project_id = engine.store().create_project(&project).await.unwrap();
    for _ in 0..builds {
        let nb = NewBuild {
            project_id: Some(project_id),
            worker_pool_id: pool.id,
            script: project.script.clone(),
            variables: "{}".into(),
            launch_answers: "{}".into(),
            ..Default::default()
        };
        engine.store().create_build(&nb).await.unwrap();
    }
    let mut config = WorkerConfig::named(vec![], slots);
    config.max_builds = Some(builds as u64);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let summary = engine.run_worker(config, stop_rx).await.unwrap();
    assert_eq!(summary.builds, builds as u64);
    let rate = builds as f64 / started.elapsed().as_secs_f64();
    println!("trivial builds, {slots} worker slot(s), {backend:<10}      {rate:>8.1} builds/s  ({builds} builds)");
    rate
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (engine, _dir, pool) = setup(None).await;
        println!("engine benchmark (release build, SQLite, shell isolation, timestamp output plugin)");
        let bare =
            summary("bare `sh -c 'echo first'` spawn to first line", (0..100).map(|_| bare_spawn_ms()).collect());
        let engine_ms = summary("start_project to first stored output line", latency(&engine, &pool, 100).await);
        println!("  ratio engine / bare spawn (median): {:.1}x\n", engine_ms / bare);
        let one = throughput(&engine, &pool, 1, 200, "SQLite").await;
        let four = throughput(&engine, &pool, 4, 200, "SQLite").await;
        println!("  ratio 4 slots / 1 slot: {:.2}x\n", four / one);
        let sandbox = WorkerPool { name: "bench-sandbox".into(), isolation_method: "sandbox".into(), ..pool.clone() };
        let sandbox = engine.store().get_worker_pool(engine.store().create_worker_pool(&sandbox).await.unwrap());
        let sandbox = sandbox.await.unwrap().unwrap();
        let costs = isolation_cost(&engine, &[&pool, &sandbox], 100).await;
        let shell_ms = summary("trivial build start to end, shell isolation", costs[0].clone());
        let sandbox_ms = summary("trivial build start to end, sandbox isolation", costs[1].clone());
        println!("  sandbox adds (median): {:.2} ms ({:.2}x)\n", sandbox_ms - shell_ms, sandbox_ms / shell_ms);
        // The same on PostgreSQL, where several writers do not queue on one file lock.
        if let Ok(url) = std::env::var("VESPENE_TEST_POSTGRES_URL") {
            let (engine, _dir, pool) = setup(Some(&url)).await;
            let mut rates = Vec::new();
            for slots in [1, 2, 4] {
                rates.push(throughput(&engine, &pool, slots, 200, "PostgreSQL").await);
            }
            println!("  ratio 4 slots / 1 slot on PostgreSQL: {:.2}x", rates[2] / rates[0]);
        }
    });
}
