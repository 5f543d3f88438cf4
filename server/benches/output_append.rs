//! Build-output append throughput: 1,000,000 lines appended in batches to one
//! build, on SQLite (a temporary file) and, when `VESPENE_TEST_POSTGRES_URL`
//! is set, on PostgreSQL (a fresh database). Prints lines per second.
//!
//! Run: `scripts/bench output_append`
//! Options (environment): `VESPENE_BENCH_LINES` (default 1000000),
//! `VESPENE_BENCH_BATCH` (default 500).

mod support;

use std::time::Instant;

use sqlx::{Connection, Executor};
use vespene::store::{NewBuild, OutputStream, Store, StoreOptions, WorkerPool};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn run(label: &str, store: Store, total: usize, batch: usize) {
    let pool = store
        .create_worker_pool(&WorkerPool { name: "bench".into(), isolation_method: "none".into(), ..Default::default() })
        .await
        .unwrap();
    let build = store.create_build(&NewBuild { worker_pool_id: pool, ..Default::default() }).await.unwrap();
    // A typical line: a timestamp prefix and some compiler-ish text.
    let lines: Vec<(OutputStream, String)> = (0..batch)
        .map(|i| (OutputStream::Stdout, format!("    0.{i:02}m | Compiling crate-{i} v1.0.{i} (/src/crate-{i})")))
        .collect();
    let start = Instant::now();
    let mut done = 0;
    while done < total {
        let n = batch.min(total - done);
        store.append_output(build.id, &lines[..n]).await.unwrap();
        done += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let last = store.output_since(build.id, total as i64 - 1, 0).await.unwrap();
    assert_eq!(last.len(), 1, "the last line is there");
    assert_eq!(last[0].seq, total as i64);
    println!(
        "output_append {label:<10} {total} lines in batches of {batch}: {secs:.2} s, {:.0} lines/s",
        total as f64 / secs
    );
    store.close().await;
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total = env_usize("VESPENE_BENCH_LINES", 1_000_000);
    let batch = env_usize("VESPENE_BENCH_BATCH", 500).max(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            url: format!("sqlite://{}", dir.path().join("bench.db").display()),
            secrets: support::basic_secrets(dir.path()),
            max_connections: 4,
            migrate: true,
            compress_logs: true,
        };
        run("sqlite", Store::open(&opts).await.unwrap(), total, batch).await;

        match std::env::var("VESPENE_TEST_POSTGRES_URL") {
            Ok(url) => {
                sqlx::any::install_default_drivers();
                let name = format!("vbench_{}", std::process::id());
                let mut admin = sqlx::AnyConnection::connect(&url).await.unwrap();
                admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
                let base = url.rsplit_once('/').unwrap().0;
                let opts = StoreOptions { url: format!("{base}/{name}"), ..opts.clone() };
                run("postgres", Store::open(&opts).await.unwrap(), total, batch).await;
                admin.execute(format!("DROP DATABASE {name}").as_str()).await.unwrap();
                admin.close().await.unwrap();
            }
            Err(_) => println!("output_append postgres   SKIP: VESPENE_TEST_POSTGRES_URL is not set"),
        }
    });
}
