//! What one start of a project costs over HTTP: `POST /api/v1/projects/{id}/start`
//! against the release `vespene serve`, one request at a time on a new
//! loopback connection (as a script or webhook relay would call it), on
//! SQLite and, when VESPENE_TEST_POSTGRES_URL is set, on PostgreSQL. Each
//! start is of a different project (a second start of a queued project is
//! refused), with no worker to take the builds. Prints the median, p90 and
//! p99 of the whole request as the client sees it.
//!
//! Run with `scripts/bench api_start`.

mod support;

use std::time::Instant;

use support::procs::Sandbox;

const STARTS: usize = 400;

async fn measure(pg_url: Option<&str>) {
    let sandbox = Sandbox::new(pg_url, "[workers]\nembedded = false\n").await;
    let token = support::bench_superuser(&sandbox.store).await;
    let pool = sandbox.pool("bench").await;
    let mut projects = Vec::with_capacity(STARTS);
    for i in 0..STARTS {
        projects.push(sandbox.project(&format!("start-{i}"), pool, "#!/bin/sh\necho started\n").await);
    }
    let (mut server, addr) = sandbox.serve();
    // One start first, so the figures do not include the first connection's setup.
    let warm = sandbox.project("warm-up", pool, "#!/bin/sh\ntrue\n").await;
    assert_eq!(support::procs::http(&addr, "POST", &format!("/api/v1/projects/{warm}/start"), &token).await, Ok(201));
    let mut costs = Vec::with_capacity(STARTS);
    for id in &projects {
        let began = Instant::now();
        let status = support::procs::http(&addr, "POST", &format!("/api/v1/projects/{id}/start"), &token).await;
        costs.push(began.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, Ok(201), "start of project {id}");
    }
    server.terminate(std::time::Duration::from_secs(10));
    costs.sort_by(f64::total_cmp);
    let at = |q: f64| costs[((costs.len() as f64 * q) as usize).min(costs.len() - 1)];
    println!(
        "start over HTTP ({}, {STARTS} starts, release build): median {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
        sandbox.backend,
        at(0.5),
        at(0.9),
        at(0.99)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        measure(None).await;
        match std::env::var("VESPENE_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) {
            Some(url) => measure(Some(&url)).await,
            None => println!("start over HTTP (PostgreSQL): not measured, VESPENE_TEST_POSTGRES_URL is not set"),
        }
    });
}
