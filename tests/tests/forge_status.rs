//! The `forge_status` trigger end to end: `vespene serve` with embedded
//! workers builds projects checked out from a real git repository (`git
//! daemon` on 127.0.0.1) and reports each build to a stand-in forge on
//! 127.0.0.1 that speaks the commit status APIs of GitHub, Gitea and GitLab
//! (recording every request). The token is the password of the project's
//! service login; an admin and two ordinary users, alice and bob.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use vespene::store::{Build, BuildStatus, Store};
use vespene_e2e::api_client::{shared_shell_pool, user, Client};
use vespene_e2e::builds::{finished, log_of};
use vespene_e2e::servers::{run, GitDaemon};
use vespene_e2e::*;

const PUBLIC_URL: &str = "https://ci.example.test";
const ALICE_TOKEN: &str = "alice-forge-token-0123456789";

/// One request the stand-in forge received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A forge stand-in on 127.0.0.1 answering every request `201 {}`.
struct FakeForge {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl FakeForge {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, halt) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let log = log.clone();
                        std::thread::spawn(move || serve_connection(stream, &log));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeForge { addr, seen, stop }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeForge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads requests off one connection (clients may keep it alive) until it closes.
fn serve_connection(stream: TcpStream, log: &Mutex<Vec<Seen>>) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        let length: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        log.lock().unwrap().push(Seen { method, path, headers, body });
        let reply = "{}";
        write!(
            writer,
            "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
            reply.len()
        )
        .unwrap();
    }
}

/// `git` with a known author.
fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir))
}

/// A bare repository `base/acme/widget.git` with `main` and a `broken`
/// branch one commit ahead; answers their heads.
fn widget_repository(base: &Path) -> (String, String) {
    let work = base.join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("README"), "widget\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let main = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    git(&work, &["checkout", "-q", "-b", "broken"]);
    std::fs::write(work.join("BROKEN"), "yes\n").unwrap();
    git(&work, &["add", "BROKEN"]);
    git(&work, &["commit", "-q", "-m", "break it"]);
    let broken = git(&work, &["rev-parse", "HEAD"]).trim().to_string();
    std::fs::create_dir_all(base.join("acme")).unwrap();
    let bare = base.join("acme/widget.git");
    git(base, &["clone", "-q", "--bare", work.to_str().unwrap(), bare.to_str().unwrap()]);
    (main, broken)
}

/// Settings: a public URL, and one forge_status entry per forge in each trigger
/// section, run only by the projects that name it.
fn settings(forge: &str) -> String {
    let mut text = format!(
        "plugin_path = [\"{}\"]\n[server]\npublic_url = \"{PUBLIC_URL}/\"\n[workers]\nembedded = true\nper_pool = 2\n",
        bin_dir().display()
    );
    for section in ["pre_triggers", "success_triggers", "failure_triggers"] {
        for (name, kind) in [("gh", "github"), ("gt", "gitea"), ("gl", "gitlab")] {
            text.push_str(&format!(
                "[plugins.{section}.{name}]\nlibrary = \"forge_status\"\nforge = \"{kind}\"\n\
                 api_url = \"http://{forge}/{name}\"\nper_project = true\n"
            ));
        }
    }
    text
}

async fn client(store: &Store, addr: &str, user: i64) -> Client {
    let (_, token) = store.create_api_token(user, "test", None).await.unwrap();
    Client::with_token(addr, &token)
}

fn id(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id in {v}"))
}

/// Everything a test needs: a served repository, a forge, a server with an admin, alice and bob.
struct World {
    _repos: tempfile::TempDir,
    _daemon: GitDaemon,
    repo_url: String,
    main: String,
    broken: String,
    forge: FakeForge,
    _server: Server,
    store: Store,
    pool: i64,
    admin: Client,
    alice: Client,
    bob: Client,
}

async fn world(sandbox: &mut Sandbox, db: Db, test: &str) -> Option<World> {
    sandbox.use_database(db, test).await?;
    let repos = tempfile::tempdir().unwrap();
    let (main, broken) = widget_repository(repos.path());
    let daemon = GitDaemon::start(repos.path());
    let repo_url = daemon.url("acme/widget.git");
    let forge = FakeForge::start();
    sandbox.settings(&settings(&forge.addr));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shared_shell_pool(&store).await;
    let (root, a, b) = (
        user(&store, "root", true, &[]).await,
        user(&store, "alice", false, &[]).await,
        user(&store, "bob", false, &[]).await,
    );
    let admin = client(&store, &server.addr, root).await;
    let alice = client(&store, &server.addr, a).await;
    let bob = client(&store, &server.addr, b).await;
    Some(World {
        _repos: repos,
        _daemon: daemon,
        repo_url,
        main,
        broken,
        forge,
        _server: server,
        store,
        pool,
        admin,
        alice,
        bob,
    })
}

impl World {
    /// A project of `client`'s on `branch` of the widget repository, naming
    /// `trigger`; `script_exit` is its script's exit code.
    fn project(&self, client: &Client, name: &str, trigger: &str, branch: &str, login: Option<i64>) -> i64 {
        let script = if branch == "broken" { "#!/bin/sh\ntest ! -e BROKEN\n" } else { "#!/bin/sh\ntest -e README\n" };
        let mut body = json!({
            "name": name, "worker_pool_id": self.pool, "scm_type": "git", "repo_url": self.repo_url,
            "repo_branch": branch, "script": script, "triggers": json!([trigger]).to_string(),
        });
        if let Some(login) = login {
            body["scm_login_id"] = json!(login);
        }
        id(&client.ok("POST", "/api/v1/projects", Some(&body)))
    }

    fn start(&self, client: &Client, project: i64) -> i64 {
        id(&client.ok("POST", &format!("/api/v1/projects/{project}/start"), Some(&json!({}))))
    }

    async fn finished(&self, build: i64) -> Build {
        finished(&self.store, build, Duration::from_secs(120)).await
    }

    /// The requests about `build` (its link names it), in the order received.
    fn about(&self, build: i64) -> Vec<Seen> {
        let link = format!("{PUBLIC_URL}/ui/builds/{build}");
        self.forge.seen().into_iter().filter(|s| s.body["target_url"] == link.as_str()).collect()
    }
}

/// Pending, then the final state, each with the build's own commit, the
/// project's token and a link to the build's page; GitHub, Gitea and GitLab
/// each in their own dialect.
async fn forge_status_reports_pending_then_the_result(db: Db) {
    let mut sandbox = Sandbox::new();
    let Some(w) = world(&mut sandbox, db, "forge_status_reports").await else { return };
    let login = id(&w.alice.ok(
        "POST",
        "/api/v1/service_logins",
        Some(&json!({"name": "alice-forge", "username": "alice", "password": ALICE_TOKEN})),
    ));
    let cases = [
        ("gh", "github", "/gh/repos/acme/widget/statuses", "authorization", format!("Bearer {ALICE_TOKEN}")),
        ("gt", "gitea", "/gt/api/v1/repos/acme/widget/statuses", "authorization", format!("token {ALICE_TOKEN}")),
        ("gl", "gitlab", "/gl/api/v4/projects/acme%2Fwidget/statuses", "private-token", ALICE_TOKEN.to_string()),
    ];
    let mut builds = Vec::new();
    for (trigger, forge, path, header, auth) in &cases {
        let passing = w.project(&w.alice, &format!("{forge}-passing"), trigger, "main", Some(login));
        let failing = w.project(&w.alice, &format!("{forge}-failing"), trigger, "broken", Some(login));
        builds.push((w.start(&w.alice, passing), true, *forge, *path, *header, auth.clone()));
        builds.push((w.start(&w.alice, failing), false, *forge, *path, *header, auth.clone()));
    }
    for (build, passes, forge, path, header, auth) in &builds {
        let b = w.finished(*build).await;
        let log = log_of(&w.store, *build).await;
        let (status, sha) = if *passes { (BuildStatus::Success, &w.main) } else { (BuildStatus::Failure, &w.broken) };
        assert_eq!(b.status, status, "build {build}:\n{log}");
        assert_eq!(b.revision.as_deref(), Some(sha.as_str()), "build {build}");
        assert!(!log.contains(ALICE_TOKEN), "the token reached build {build}'s log:\n{log}");
        let seen = w.about(*build);
        let states: Vec<&str> = seen.iter().map(|s| s.body["state"].as_str().unwrap_or("?")).collect();
        let last = match (*passes, *forge) {
            (true, _) => "success",
            (false, "gitlab") => "failed",
            (false, _) => "failure",
        };
        assert_eq!(states, ["pending", last], "build {build} ({forge}): {seen:?}\n{log}");
        let project = if *passes { format!("{forge}-passing") } else { format!("{forge}-failing") };
        let name_key = if *forge == "gitlab" { "name" } else { "context" };
        for s in &seen {
            assert_eq!(s.method, "POST");
            assert_eq!(s.path, format!("{path}/{sha}"), "build {build}");
            assert_eq!(s.header(header), Some(auth.as_str()), "build {build}: {s:?}");
            assert_eq!(s.body[name_key], format!("vespene/{project}"), "{s:?}");
        }
        let description = seen[1].body["description"].as_str().unwrap_or_default().to_string();
        let expected =
            if *passes { format!("Build {build} succeeded") } else { format!("Build {build} failed (exit code 1)") };
        assert_eq!(description, expected);
        assert!(log.contains(&format!("forge_status: {forge} status 'pending' posted for acme/widget@")), "{log}");
    }
    // Nothing else reached the forge: two requests per build.
    assert_eq!(w.forge.seen().len(), builds.len() * 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn forge_status_reports_pending_then_the_result_on_sqlite() {
    forge_status_reports_pending_then_the_result(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forge_status_reports_pending_then_the_result_on_postgres() {
    forge_status_reports_pending_then_the_result(Db::Postgres).await;
}

/// Bob cannot make the plugin post with alice's token: attaching her login to
/// his project needs `use` on it, refused on create and on update; his
/// project without a login fails naming the cause and sends the forge nothing.
/// The admin may use any login (superusers may use everything).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_user_cannot_make_forge_status_use_the_first_users_login() {
    let mut sandbox = Sandbox::new();
    let Some(w) = world(&mut sandbox, Db::Sqlite, "forge_status_use").await else { return };
    let login = id(&w.alice.ok(
        "POST",
        "/api/v1/service_logins",
        Some(&json!({"name": "alice-forge", "username": "alice", "password": ALICE_TOKEN})),
    ));
    // Bob cannot read the token either: passwords are write-only, and he cannot see her login at all.
    let (status, _) = w.bob.call("GET", &format!("/api/v1/service_logins/{login}"), None);
    assert!(status == 403 || status == 404, "{status}");

    let body = json!({
        "name": "bob-widget", "worker_pool_id": w.pool, "scm_type": "git", "repo_url": w.repo_url,
        "script": "#!/bin/sh\ntrue\n", "triggers": "[\"gh\"]", "scm_login_id": login,
    });
    let (status, answer) = w.bob.call("POST", "/api/v1/projects", Some(&body));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["field"], "scm_login_id", "{answer}");
    assert!(w.store.find_project("bob-widget").await.unwrap().is_none());

    let bobs = w.project(&w.bob, "bob-widget", "gh", "main", None);
    let (status, answer) =
        w.bob.call("PATCH", &format!("/api/v1/projects/{bobs}"), Some(&json!({"scm_login_id": login})));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(w.store.get_project(bobs).await.unwrap().unwrap().scm_login_id, None);

    // His build runs without a token: the pending status cannot be sent, so it fails before its script.
    let build = w.start(&w.bob, bobs);
    let b = w.finished(build).await;
    let log = log_of(&w.store, build).await;
    assert_eq!(b.status, BuildStatus::Failure, "{log}");
    assert!(
        log.contains("pre_triggers trigger 'gh' failed: forge_status: project 'bob-widget' has no service login"),
        "{log}"
    );
    assert!(w.about(build).is_empty(), "{:?}", w.forge.seen());

    // The admin may attach alice's login (superusers may use everything): it is then her token that is sent.
    let admins = w.project(&w.admin, "admin-widget", "gh", "main", Some(login));
    let build = w.start(&w.admin, admins);
    assert_eq!(w.finished(build).await.status, BuildStatus::Success, "{}", log_of(&w.store, build).await);
    let seen = w.about(build);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.header("authorization") == Some(&format!("Bearer {ALICE_TOKEN}"))));
    // And nothing of bob's ever carried a token.
    assert_eq!(w.forge.seen().len(), 2);
}
