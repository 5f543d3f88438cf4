//! Many workers on many hosts against one PostgreSQL: three hosts (network
//! namespaces with their own links and hostnames, see `vespene_e2e::hosts`),
//! each running a `vespene worker` process with two slots, drain 1,000 builds.
//! No build is claimed twice, every build has its complete output, and every
//! host did part of the work.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use vespene::store::{BuildStatus, NewBuild, Project, WorkerPool};
use vespene_e2e::builds::*;
use vespene_e2e::hosts::{forward, Host};
use vespene_e2e::*;

const HOSTS: u8 = 3;
const BUILDS: usize = 1000;
const LINES: usize = 5;

#[tokio::test(flavor = "multi_thread")]
async fn workers_on_three_hosts_drain_a_thousand_builds_once_each() {
    let mut sandbox = Sandbox::new();
    if sandbox.use_database(Db::Postgres, "multi_host").await.is_none() {
        return;
    }
    let database_url = sandbox.database_url.clone().unwrap();
    // postgres://user:pass@127.0.0.1:PORT/db: the server the hosts reach through their links.
    let (credentials, rest) = database_url.rsplit_once('@').unwrap();
    let (server, database) = rest.split_once('/').unwrap();
    sandbox.settings(&format!("plugin_path = [\"{}\"]\n[workers]\nembedded = false\n", bin_dir().display()));
    let store = sandbox.store().await;
    let pool = WorkerPool {
        name: "fleet".into(),
        isolation_method: "shell".into(),
        build_latest: false,
        ..Default::default()
    };
    let pool_id = store.create_worker_pool(&pool).await.unwrap();
    let project_id = store
        .create_project(&Project { name: "fleet".into(), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();

    let mut hosts = Vec::new();
    let mut workers = Vec::new();
    for n in 1..=HOSTS {
        let host = Host::new(n, &format!("build-host-{n}"));
        let door = forward(&format!("{}:0", host.gateway), server).await;
        assert!(host.can_reach(&door), "{} reaches the database at {door}", host.hostname);
        assert!(!host.can_reach(server), "{} has no way to {server} but its link", host.hostname);
        let mut command = sandbox.command(&["worker", "fleet", "--slots", "2"]);
        command
            .env("VESPENE_DATABASE__URL", format!("{credentials}@{door}/{database}"))
            .env("VESPENE_BUILD_ROOT", sandbox.path(&format!("{}/builds", host.hostname)));
        workers.push(WorkerProcess::from_command(host.wrap(&command)));
        hosts.push(host);
    }

    let runs = sandbox.path("runs.log");
    // Each run leaves its build id in runs.log (one short O_APPEND write: whole lines).
    let script = format!(
        "#!/bin/sh\necho $(basename \"$PWD\") >> {}\nfor i in $(seq 1 {LINES}); do echo line $i; done\n",
        runs.display()
    );
    let started = Instant::now();
    let mut ids = Vec::with_capacity(BUILDS);
    for _ in 0..BUILDS {
        let build = NewBuild {
            project_id: Some(project_id),
            worker_pool_id: pool_id,
            script: script.clone(),
            ..Default::default()
        };
        ids.push(store.create_build(&build).await.unwrap().id);
    }
    wait_for(Duration::from_secs(900), "the queue to drain", || async {
        let done = std::fs::read_to_string(&runs).unwrap_or_default().lines().count();
        let last = store.get_build(*ids.last().unwrap()).await.unwrap().unwrap();
        (done >= BUILDS && !last.status.is_active()).then_some(())
    })
    .await;
    let expected: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    let mut builds_per_host: HashMap<String, usize> = HashMap::new();
    let workers_by_id: HashMap<i64, String> =
        store.list_workers().await.unwrap().into_iter().map(|w| (w.id, w.hostname)).collect();
    for &id in &ids {
        let build = finished(&store, id, Duration::from_secs(60)).await;
        assert_eq!(build.status, BuildStatus::Success, "build {id}:\n{}", log_of(&store, id).await);
        assert_eq!(unstamped_output(&store, id).await, expected, "build {id}'s output is complete");
        let worker = build.worker_id.unwrap_or_else(|| panic!("build {id} names its worker"));
        *builds_per_host.entry(workers_by_id[&worker].clone()).or_default() += 1;
    }
    let elapsed = started.elapsed();

    let mut runs_per_build: HashMap<i64, usize> = HashMap::new();
    for line in std::fs::read_to_string(&runs).unwrap().lines() {
        *runs_per_build.entry(line.trim().parse().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = runs_per_build.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "builds run more than once: {twice:?}");
    assert_eq!(runs_per_build.keys().copied().collect::<HashSet<_>>(), ids.iter().copied().collect());

    let names: HashSet<&String> = builds_per_host.keys().collect();
    let expected_hosts: Vec<String> = hosts.iter().map(|h| h.hostname.clone()).collect();
    assert_eq!(names, expected_hosts.iter().collect(), "every host ran builds: {builds_per_host:?}");
    println!("{BUILDS} builds on {HOSTS} hosts in {elapsed:.1?}: {builds_per_host:?}");
    drop(workers);
}
