//! Release `vespene` processes for the benchmarks: spawning and stopping
//! them, a data directory with its settings file and store (SQLite, or a
//! fresh PostgreSQL database), and reading their memory from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vespene::store::{NewBuild, Project, Store, StoreOptions, WorkerPool};

// ---------------------------------------------------------------------------
// Child processes and clean-up

/// A child process, killed (SIGKILL) and reaped when dropped unless it has
/// already exited.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(command: &mut Command, what: &str) -> Proc {
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {what}: {e} (build it first: cargo build --release --workspace --exclude vespene-e2e)")
        });
        Proc { child, what: what.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for it to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
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
    pub fn terminate(&mut self, limit: Duration) -> bool {
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
pub fn kill_strays(dir: &Path) {
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
pub struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str, name: String) -> (PgDatabase, String) {
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

pub struct Sandbox {
    pub backend: &'static str,
    pub release: PathBuf,
    pub config: PathBuf,
    pub store: Store,
    // Dropped in this order, after `Drop::drop` has killed stray build processes:
    // the directory, then the PostgreSQL database.
    pub dir: tempfile::TempDir,
    pub _pg: Option<PgDatabase>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        kill_strays(self.dir.path());
    }
}

/// The release directory: the binary and the plugins.
/// target/release, where `scripts/bench` builds the measured binary and
/// plugins (the harness itself runs from target/bench-harness/deps).
pub fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("the harness runs from target/PROFILE/deps");
    target.join("release")
}

impl Sandbox {
    /// SQLite in a temp dir, or a fresh database on the PostgreSQL server of `pg_url`.
    pub async fn new(pg_url: Option<&str>, extra_settings: &str) -> Sandbox {
        let release = release_dir();
        assert!(release.join("vespene").is_file(), "no release binary at {}/vespene", release.display());
        let dir = tempfile::Builder::new().prefix("vespene-bench-").tempdir().unwrap();
        // The server keeps its data directory private (0700) and warns when it has to.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let (pg, url, backend) = match pg_url {
            Some(base) => {
                static DATABASES: AtomicUsize = AtomicUsize::new(0);
                let name = format!("bench_{}_{}", std::process::id(), DATABASES.fetch_add(1, Ordering::Relaxed));
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
            secrets: super::basic_secrets(dir.path()),
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
    pub fn command(&self, args: &[&str]) -> Command {
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

    /// Starts `vespene serve` on a free loopback port; answers it and its
    /// address once it listens.
    pub fn serve(&self) -> (Proc, String) {
        use std::io::{BufRead, BufReader};
        let mut server = Proc::spawn(
            self.command(&["serve"])
                .env("VESPENE_SERVER__LISTEN", "127.0.0.1:0")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
            "vespene serve",
        );
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = server.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("Vespene is listening on http://") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).expect("vespene serve did not start listening");
        (server, addr)
    }

    pub async fn pool(&self, name: &str) -> i64 {
        let pool = WorkerPool {
            name: name.into(),
            isolation_method: "shell".into(),
            // Queued builds of one project all run (no newest-only rule).
            build_latest: false,
            ..Default::default()
        };
        self.store.create_worker_pool(&pool).await.unwrap()
    }

    pub async fn project(&self, name: &str, pool: i64, script: &str) -> i64 {
        let project = Project { name: name.into(), worker_pool_id: pool, script: script.into(), ..Default::default() };
        self.store.create_project(&project).await.unwrap()
    }

    /// Queues a build straight into the store (as the engine benchmark does):
    /// one project may then have many queued builds.
    pub async fn queue(&self, project: i64, pool: i64, script: &str) -> i64 {
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
pub async fn wait_for<T, F, Fut>(limit: Duration, every: Duration, what: &str, mut check: F) -> T
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

pub struct Status {
    pub rss_kib: u64,
    pub peak_kib: u64,
    pub threads: u64,
}

pub fn proc_status(pid: u32) -> Status {
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

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One HTTP/1.1 request with a bearer token over a new connection; answers the status.
pub async fn http(addr: &str, method: &str, path: &str, token: &str) -> Result<u16, String> {
    Ok(http_response(addr, method, path, token).await?.0)
}

/// One HTTP/1.1 request with a bearer token over a new connection; answers
/// the status and the body.
pub async fn http_response(addr: &str, method: &str, path: &str, token: &str) -> Result<(u16, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&response[..head_end]);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
    Ok((status, response.split_off(head_end + 4)))
}
