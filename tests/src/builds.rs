//! Driving builds from the end-to-end tests: start them with the real binary,
//! run `vespene worker` processes, and read builds and their output back from
//! the store.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vespene::store::{Build, OutputStream, Store};

use crate::{stderr, stdout, Sandbox};

/// A build's output lines (not the housekeeping messages), as stored.
pub async fn stdout_of(store: &Store, build: i64) -> Vec<String> {
    store
        .output_since(build, 0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.stream != OutputStream::Message)
        .map(|l| l.text)
        .collect()
}

/// A stored line without the timestamp plugin's `    0.00m | ` prefix.
pub fn unstamped(line: &str) -> &str {
    line.split_once(" | ").map(|(_, t)| t).unwrap_or(line)
}

/// The whole log of a build, messages included, one line per stored line.
pub async fn log_of(store: &Store, build: i64) -> String {
    let lines = store.output_since(build, 0, 100_000).await.unwrap();
    lines.into_iter().map(|l| l.text).collect::<Vec<_>>().join("\n")
}

/// Polls `check` until it answers `Some`, or fails after `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until build `id` has ended.
pub async fn finished(store: &Store, id: i64, limit: Duration) -> Build {
    wait_for(limit, &format!("build {id} to finish"), || async {
        let b = store.get_build(id).await.unwrap().unwrap();
        (!b.status.is_active()).then_some(b)
    })
    .await
}

/// `vespene start PROJECT EXTRA...`; answers the queued build's id.
pub fn start(sandbox: &Sandbox, project: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["start", project];
    args.extend_from_slice(extra);
    let out = sandbox.run(&args);
    assert!(out.status.success(), "start {project}: {}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    text.split_whitespace().nth(1).and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("no build id in {text}"))
}

/// A `vespene worker` process, killed when dropped.
pub struct WorkerProcess(Child);

impl WorkerProcess {
    /// `vespene worker ARGS...` in the sandbox.
    pub fn spawn(sandbox: &Sandbox, args: &[&str]) -> Self {
        let mut all = vec!["worker"];
        all.extend_from_slice(args);
        Self::from_command(sandbox.command(&all))
    }

    /// A worker from a prepared command (extra environment, say).
    pub fn from_command(mut command: Command) -> Self {
        WorkerProcess(command.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn().expect("start vespene worker"))
    }

    /// Waits for the worker to exit by itself (`--max-builds`), failing after `limit`.
    pub fn wait(self, limit: Duration) {
        assert!(self.finished_within(limit), "worker did not finish within {limit:?}");
    }

    /// Whether the worker exited by itself within `limit`.
    pub fn finished_within(mut self, limit: Duration) -> bool {
        let started = Instant::now();
        while self.0.try_wait().unwrap().is_none() {
            if started.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a process still runs (a zombie has exited; only its parent has not collected it).
pub fn process_alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A build's output lines without their timestamps.
pub async fn unstamped_output(store: &Store, build: i64) -> Vec<String> {
    stdout_of(store, build).await.iter().map(|l| unstamped(l).to_string()).collect()
}

impl WorkerProcess {
    /// SIGKILL: the worker gets no chance to tidy up.
    pub fn kill_hard(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
