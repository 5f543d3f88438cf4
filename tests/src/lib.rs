//! Helpers for the end-to-end tests: where the built binary and plugin
//! libraries are, running `vespene` with a settings file in a sandbox, and
//! building fixture plugins against modified copies of the interface crate.
//!
//! The tests expect `cargo build --workspace` to have run first (the test
//! script does it), so `target/<profile>/` holds `vespene` and every `.so`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod api_client;
pub mod builds;
pub mod hosts;
pub mod servers;

/// The directory holding the built `vespene` binary and the plugin libraries.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VESPENE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The path of a built library named `libvespene_<name>.so`.
pub fn plugin_lib(name: &str) -> PathBuf {
    let path = bin_dir().join(format!("libvespene_{name}.so"));
    assert!(path.exists(), "{} is missing: run `cargo build --workspace` first", path.display());
    path
}

/// A sandbox: a data directory, an empty system settings directory, and a
/// settings file that tests fill in.
pub struct Sandbox {
    /// Removed when the sandbox is dropped.
    pub dir: tempfile::TempDir,
    /// The database, when not the sandbox's SQLite file.
    pub database_url: Option<String>,
    /// Build roots in `data/buildroot` rather than where the server puts them
    /// by default (`<data_dir>-builds`, beside the data directory, which the
    /// server keeps 0700 so no build identity could reach a root inside it).
    pub build_root_in_data: bool,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A fresh sandbox.
    pub fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        // Searchable, as /var/lib is: build identities reach `data-builds` through it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        Sandbox { dir, database_url: None, build_root_in_data: false }
    }

    /// A path inside the sandbox.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes the `--config` settings file.
    pub fn settings(&self, toml: &str) -> &Self {
        std::fs::write(self.path("settings.toml"), toml).unwrap();
        self
    }

    /// A `vespene` command in this sandbox, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin_dir().join("vespene"));
        if self.path("settings.toml").exists() {
            cmd.arg("--config").arg(self.path("settings.toml"));
        }
        cmd.args(args)
            .env("VESPENE_SYSTEM_DIR", self.path("etc"))
            .env("VESPENE_DATA_DIR", self.path("data"))
            .env("VESPENE_LOG", "warn")
            .env_remove("VESPENE_BUILD_ROOT")
            .env_remove("VESPENE_CONFIG")
            .env_remove("VESPENE_BIN_DIR")
            .current_dir(self.dir.path());
        if let Some(url) = &self.database_url {
            cmd.env("VESPENE_DATABASE__URL", url);
        }
        if self.build_root_in_data {
            cmd.env("VESPENE_BUILD_ROOT", self.path("data/buildroot"));
        }
        cmd
    }

    /// Runs `vespene` with `args` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run vespene")
    }
}

/// Whether the tests run in CI: `CI` set to anything but "", "0" or "false".
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// A service `test` needs is missing (`why` says which, and how to start it).
/// In CI ([`in_ci`]) that fails the test; elsewhere it prints `SKIP` and the
/// caller returns, so the test passes.
pub fn missing_service(test: &str, why: &str) {
    assert!(!in_ci(), "{test}: {why}; CI is set, so a missing service fails the test instead of skipping it");
    println!("SKIP {test}: {why}");
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Builds `tests/fixtures/foreign-plugin` against a copy of `plugin-api` that
/// `edit` may change (version, layout), in a target directory of its own, and
/// returns the `.so`. Copies share one target directory so `abi_stable` is
/// compiled once for all of them.
pub fn build_foreign_plugin(tag: &str, edit: impl FnOnce(&Path)) -> PathBuf {
    // Fixtures share a target directory and an output file name: one at a time.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let work = root.join("target").join("fixtures").join(tag);
    let _ = std::fs::remove_dir_all(&work);
    copy_dir(&root.join("plugin-api"), &work.join("plugin-api"));
    copy_dir(&root.join("tests/fixtures/foreign-plugin"), &work.join("plugin"));
    // A workspace of its own that inherits the real one's settings and dependencies.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let deps = &manifest[manifest.find("[workspace.package]").expect("workspace.package table")..];
    // The copy's version may change: depend on it by path alone.
    let deps: Vec<String> = deps
        .lines()
        .map(|l| {
            if l.starts_with("vespene-plugin-api = ") {
                "vespene-plugin-api = { path = \"plugin-api\" }".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    let deps = deps.join("\n");
    std::fs::write(
        work.join("Cargo.toml"),
        format!("[workspace]\nresolver = \"2\"\nmembers = [\"plugin-api\", \"plugin\"]\n\n{deps}"),
    )
    .unwrap();
    edit(&work.join("plugin-api"));
    let target = root.join("target").join("fixtures-target");
    let status = cargo(&target)
        .args(["build", "--quiet", "-p", "vespene-test-plugin-foreign", "--manifest-path"])
        .arg(work.join("Cargo.toml"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the {tag} fixture plugin failed");
    // Every fixture builds the same file name: keep a copy per tag.
    let built = target.join("debug/libvespene_foreign.so");
    let kept = work.join("libvespene_foreign.so");
    std::fs::copy(&built, &kept).expect("copy fixture library");
    kept
}

/// A `cargo` command (the one running the tests) building into `target_dir`:
/// scratch crates built by the tests keep a target directory of their own, so
/// they never wait on or disturb the workspace's.
pub fn cargo(target_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.env("CARGO_TARGET_DIR", target_dir);
    cmd
}

/// Where fixture plugins built outside the workspace go, shared so their
/// dependencies compile once.
pub fn fixtures_target() -> PathBuf {
    workspace_root().join("target").join("fixtures-target")
}

/// Builds `plugin-template` the way its README tells an author to (a
/// standalone crate, not a workspace member) and answers its library.
pub fn built_plugin_template() -> PathBuf {
    let template = workspace_root().join("plugin-template");
    let status = cargo(&fixtures_target())
        .args(["build", "--quiet", "--offline"])
        .current_dir(&template)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building plugin-template failed");
    fixtures_target().join("debug/libvespene_template.so")
}

/// Rewrites the `version = "..."` line of a copied crate's Cargo.toml.
pub fn set_crate_version(crate_dir: &Path, version: &str) {
    let manifest = crate_dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut done = false;
    let text: Vec<String> = text
        .lines()
        .map(|l| {
            if !done && l.starts_with("version = ") {
                done = true;
                format!("version = \"{version}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&manifest, text.join("\n") + "\n").unwrap();
}

/// Replaces `from` with `to` in a file, asserting it was there.
pub fn replace_in(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} does not contain {from:?}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let dest = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A running `vespene serve`, killed when dropped.
pub struct Server {
    child: std::process::Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// What the server printed before it listened.
    startup: Vec<String>,
}

impl Sandbox {
    /// Starts `vespene serve` on a free loopback port and waits until it listens.
    pub fn serve(&self) -> Server {
        self.serve_with_stderr(std::process::Stdio::inherit())
    }

    /// Like [`Sandbox::serve`], with the server's log (its stderr) appended
    /// to `server.log` in the sandbox, for tests that check what it says
    /// ([`Sandbox::server_log`]).
    pub fn serve_logged(&self) -> Server {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.path("server.log")).unwrap();
        self.serve_with_stderr(log.into())
    }

    /// What servers started with [`Sandbox::serve_logged`] logged so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.path("server.log")).unwrap_or_default()
    }

    fn serve_with_stderr(&self, stderr: std::process::Stdio) -> Server {
        use std::io::BufRead;
        let mut child = self
            .command(&["serve"])
            .env("VESPENE_SERVER__LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start vespene serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut startup = Vec::new();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("Vespene is listening on http://") {
                        break rest.trim_end_matches('/').to_string();
                    }
                    startup.push(line);
                }
                _ => {
                    let status = child.wait().expect("wait for serve");
                    panic!("vespene serve exited before listening: {status}\n{}", self.server_log());
                }
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr, startup }
    }
}

impl Server {
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines the server printed before it started listening.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.startup.clone()
    }

    /// GET `path`, answering (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_request(&self.addr, "GET", path, &[], "")
    }

    /// GET `path` with extra headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        http_request(&self.addr, "GET", path, headers, "")
    }

    /// The administrator password the first start printed, if it did.
    pub fn admin_password(&self) -> Option<String> {
        self.startup.iter().find_map(|l| {
            l.split_once("password '")
                .map(|(_, rest)| rest.trim_end_matches(|c| c != '\'').trim_end_matches('\'').to_string())
        })
    }

    /// Logs in through the API; answers the `Cookie` header value of the session.
    pub fn login(&self, username: &str, password: &str) -> String {
        use std::io::{Read, Write};
        let body = serde_json::json!({ "username": username, "password": password }).to_string();
        let mut stream = std::net::TcpStream::connect(&self.addr).expect("connect");
        write!(
            stream,
            "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let line = response
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
            .unwrap_or_else(|| panic!("login failed: {response}"));
        line.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bodies above this size are sent only after the server's `100 Continue`.
const LARGE_BODY: usize = 64 * 1024;

/// A minimal HTTP/1.1 client for loopback tests: (status, body).
pub fn http_request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let (status, _, body) = http_exchange(addr, method, path, headers, body);
    (status, body)
}

/// [`http_request`], answering the response's head (status line and
/// headers) as well: `(status, head, body)`.
pub fn http_exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to server");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    let mut response = Vec::new();
    if body.len() > LARGE_BODY {
        // As curl does: the server may refuse a large body from its headers alone and close
        // the connection; writing the body anyway would end in a reset that loses the answer.
        request.push_str(&format!("Content-Length: {}\r\nExpect: 100-continue\r\n\r\n", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
        let mut first = [0u8; 1024];
        let n = stream.read(&mut first).unwrap();
        if first[..n].starts_with(b"HTTP/1.1 100") {
            stream.write_all(body.as_bytes()).unwrap();
            let head_end = first[..n].windows(4).position(|w| w == b"\r\n\r\n").map_or(n, |p| p + 4);
            response.extend_from_slice(&first[head_end..n]);
        } else {
            response.extend_from_slice(&first[..n]);
        }
    } else {
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
    }
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    (status, head.to_string(), body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file in the sandbox (the embedded default).
    Sqlite,
    /// A fresh database on the PostgreSQL server of `VESPENE_TEST_POSTGRES_URL`.
    Postgres,
}

impl Sandbox {
    /// Points the sandbox at a fresh database of `db`; `None` (after printing
    /// why) when PostgreSQL is asked for but no test server is configured.
    pub async fn use_database(&mut self, db: Db, test: &str) -> Option<()> {
        if db == Db::Sqlite {
            return Some(());
        }
        let Ok(url) = std::env::var("VESPENE_TEST_POSTGRES_URL") else {
            missing_service(
                &format!("{test} on postgres"),
                "VESPENE_TEST_POSTGRES_URL is not set (scripts/start-postgres sets it)",
            );
            return None;
        };
        use sqlx::{Connection, Executor};
        sqlx::any::install_default_drivers();
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "e2e_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            test.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(30).collect::<String>()
        );
        let mut admin = sqlx::AnyConnection::connect(&url).await.expect("connect to VESPENE_TEST_POSTGRES_URL");
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.expect("create test database");
        admin.close().await.ok();
        let base = url.rsplit_once('/').map(|(b, _)| b).expect("database URL with a path");
        self.database_url = Some(format!("{base}/{name}"));
        Some(())
    }

    /// The store the sandbox's `vespene` processes use, opened from the test
    /// with the secrets plugins its settings configure (the built `.so` files).
    pub async fn store(&self) -> vespene::store::Store {
        let url =
            self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.path("data/vespene.db").display()));
        let options = vespene::settings::LoadOptions {
            system_dir: Some(self.path("etc")),
            config_file: Some(self.path("settings.toml")).filter(|f| f.exists()),
            env: vec![("VESPENE_DATA_DIR".into(), self.path("data").display().to_string())],
        };
        let settings = vespene::settings::Settings::load(&options).ok().map(|(settings, _)| settings);
        // Settings a test made invalid on purpose: the default secrets plugin.
        let secrets = settings.as_ref().map(|s| s.plugins.secrets.clone()).unwrap_or_else(|| {
            let mut basic = vespene::settings::PluginEntry {
                library: "basic".into(),
                enabled: true,
                per_project: false,
                seal: false,
                sha256: None,
                params: Default::default(),
            };
            let key_file = self.path("data/secret.key").display().to_string();
            basic.params.insert("key_file".into(), toml::Value::String(key_file));
            [("basic".to_string(), basic)].into_iter().collect()
        });
        let only_secrets = vespene::settings::PluginSettings { secrets, ..Default::default() };
        let registry = vespene::plugins::Registry::load(&only_secrets, &[bin_dir()]).expect("load the secrets plugins");
        let opts = vespene::store::StoreOptions {
            url,
            secrets: std::sync::Arc::new(registry.secrets_chain()),
            max_connections: 4,
            migrate: true,
            compress_logs: true,
        };
        let store = vespene::store::Store::open(&opts).await.expect("open the sandbox store");
        // The save-time rules of the sandbox's settings, as its `vespene` processes have them.
        match settings {
            Some(settings) => store.with_policy(vespene::store::Store::policy_from(&settings)),
            None => store,
        }
    }
}
