//! The `git` and `svn` scm plugins end to end, against real servers started
//! on 127.0.0.1 for each test: `git daemon`, `sshd` with deploy keys, git's
//! smart HTTP behind basic auth, and `svnserve`. Builds run through the real
//! `vespene` binary (`start`, `worker`) with the real plugin `.so` files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vespene::store::{Build, BuildStatus, OutputStream, Project, Secret, ServiceLogin, SshKey, Store, WorkerPool};
use vespene_e2e::servers::{run, ssh_keygen, svn_repository, GitDaemon, GitHttp, Sshd, Svnserve};
use vespene_e2e::*;

fn settings(extra: &str) -> String {
    format!("plugin_path = [\"{}\"]\n{extra}", bin_dir().display())
}

async fn pool(store: &Store) -> WorkerPool {
    let p = WorkerPool { name: "general".into(), isolation_method: "shell".into(), ..Default::default() };
    let id = store.create_worker_pool(&p).await.unwrap();
    store.get_worker_pool(id).await.unwrap().unwrap()
}

/// A project checking out `url` with `scm`, whose script runs `checks`.
fn project(name: &str, pool: &WorkerPool, scm: &str, url: &str, branch: &str, checks: &str) -> Project {
    Project {
        name: name.into(),
        worker_pool_id: pool.id,
        scm_type: scm.into(),
        repo_url: url.into(),
        repo_branch: branch.into(),
        script: format!("#!/bin/sh\nset -e\n{checks}\necho checks passed\n"),
        ..Default::default()
    }
}

async fn create(store: &Store, p: Project) -> Project {
    let id = store.create_project(&p).await.unwrap();
    store.get_project(id).await.unwrap().unwrap()
}

fn start(sandbox: &Sandbox, project: &str) -> i64 {
    let out = sandbox.run(&["start", project]);
    assert!(out.status.success(), "start {project}: {}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    text.split_whitespace().nth(1).and_then(|id| id.parse().ok()).unwrap_or_else(|| panic!("no build id in {text}"))
}

/// Runs one worker until it has run `n` builds.
fn work(sandbox: &Sandbox, n: usize) {
    let mut child = sandbox
        .command(&["worker", "--max-builds", &n.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the worker did not finish {n} builds in time");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn build(store: &Store, id: i64) -> Build {
    store.get_build(id).await.unwrap().unwrap()
}

async fn log_of(store: &Store, id: i64) -> String {
    let lines = store.output_since(id, 0, 100_000).await.unwrap();
    lines.into_iter().map(|l| l.text).collect::<Vec<_>>().join("\n")
}

async fn messages_of(store: &Store, id: i64) -> Vec<String> {
    let lines = store.output_since(id, 0, 100_000).await.unwrap();
    lines.into_iter().filter(|l| l.stream == OutputStream::Message).map(|l| l.text).collect()
}

async fn succeeded(store: &Store, id: i64) -> Build {
    let b = build(store, id).await;
    assert_eq!(b.status, BuildStatus::Success, "build {id}:\n{}", log_of(store, id).await);
    assert!(log_of(store, id).await.contains("checks passed"));
    b
}

async fn failed_with(store: &Store, id: i64, text: &str) -> String {
    let b = build(store, id).await;
    let log = log_of(store, id).await;
    assert_eq!(b.status, BuildStatus::Failure, "build {id}:\n{log}");
    assert!(log.contains(text), "build {id} should say {text:?}:\n{log}");
    assert!(!log.contains("checks passed"), "build {id} ran its script:\n{log}");
    log
}

/// `git` with a known author and committer.
fn git(dir: &Path, who: (&str, &str), args: &[&str]) -> String {
    run(Command::new("git")
        .args(["-c", &format!("user.name={}", who.0), "-c", &format!("user.email={}", who.1)])
        .args(["-c", "init.defaultBranch=main", "-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir))
}

const ADA: (&str, &str) = ("Ada", "ada@example.com");
const BOB: (&str, &str) = ("Bob", "bob@example.com");

/// What the tests committed.
struct Repos {
    /// `main`'s head (by Ada).
    main: String,
    /// `feature`'s head (by Bob), with `feature.txt` that only it has.
    feature: String,
}

/// Bare repositories under `base`: `app.git` (main, feature, and the
/// submodule `lib` from `../lib.git`) and `lib.git`.
fn git_repos(base: &Path) -> Repos {
    let work = base.join("work");
    let lib = work.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    git(&lib, ADA, &["init", "-q"]);
    std::fs::write(lib.join("lib.txt"), "library\n").unwrap();
    git(&lib, ADA, &["add", "."]);
    git(&lib, ADA, &["commit", "-q", "-m", "lib"]);
    let lib_head = git(&lib, ADA, &["rev-parse", "HEAD"]);

    let app = work.join("app");
    std::fs::create_dir_all(&app).unwrap();
    git(&app, ADA, &["init", "-q"]);
    std::fs::write(app.join("README"), "hello\n").unwrap();
    std::fs::write(app.join(".gitmodules"), "[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n").unwrap();
    git(&app, ADA, &["add", "README", ".gitmodules"]);
    git(&app, ADA, &["update-index", "--add", "--cacheinfo", &format!("160000,{lib_head},lib")]);
    git(&app, ADA, &["commit", "-q", "-m", "first"]);
    std::fs::write(app.join("second.txt"), "two\n").unwrap();
    git(&app, ADA, &["add", "second.txt"]);
    git(&app, ADA, &["commit", "-q", "-m", "second"]);
    let main = git(&app, ADA, &["rev-parse", "HEAD"]);
    git(&app, ADA, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(app.join("feature.txt"), "only on feature\n").unwrap();
    git(&app, BOB, &["add", "feature.txt"]);
    git(&app, BOB, &["commit", "-q", "-m", "feature work"]);
    let feature = git(&app, BOB, &["rev-parse", "HEAD"]);
    git(&app, ADA, &["checkout", "-q", "main"]);

    for name in ["app", "lib"] {
        let bare = base.join(format!("{name}.git"));
        git(base, ADA, &["clone", "-q", "--bare", work.join(name).to_str().unwrap(), bare.to_str().unwrap()]);
    }
    std::fs::remove_dir_all(&work).unwrap();
    Repos { main, feature }
}

/// Checks a build of `main`: files, submodule, revision and committer.
const MAIN_CHECKS: &str = "test -f README\ntest -f second.txt\ntest ! -e feature.txt\ntest -f lib/lib.txt";
/// Checks a build of `feature`: only that branch, shallow.
const FEATURE_CHECKS: &str =
    "test -f feature.txt\ntest -f .git/shallow\ntest \"$(git branch -r | tr -d ' ')\" = origin/feature";

#[tokio::test(flavor = "multi_thread")]
async fn git_public_clones_over_git_daemon_with_branch_and_submodules() {
    let repos_dir = tempfile::tempdir().unwrap();
    let repos = git_repos(repos_dir.path());
    let daemon = GitDaemon::start(repos_dir.path());
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store).await;
    let url = daemon.url("app.git");
    create(&store, project("public", &p, "git", &url, "", MAIN_CHECKS)).await;
    create(&store, project("public-feature", &p, "git", &url, "feature", FEATURE_CHECKS)).await;
    create(&store, project("public-missing", &p, "git", &url, "nope", "true")).await;

    let ids = [start(&sandbox, "public"), start(&sandbox, "public-feature"), start(&sandbox, "public-missing")];
    work(&sandbox, 3);

    let b = succeeded(&store, ids[0]).await;
    assert_eq!(b.revision.as_deref(), Some(repos.main.as_str()));
    assert_eq!(b.revision_username.as_deref(), Some("Ada"));
    assert_eq!(b.revision_email.as_deref(), Some("ada@example.com"));
    let messages = messages_of(&store, ids[0]).await;
    let text = messages.join("\n");
    assert!(text.contains(&format!("git: cloning {url} (default branch, depth 1)")), "{text}");
    assert!(text.contains("git: received 100%"), "{text}");
    assert!(text.contains("git: updating submodule lib from git://127.0.0.1:"), "{text}");
    assert!(text.contains("last change by Ada <ada@example.com>"), "{text}");

    let b = succeeded(&store, ids[1]).await;
    assert_eq!(b.revision.as_deref(), Some(repos.feature.as_str()));
    assert_eq!(b.revision_username.as_deref(), Some("Bob"));
    let text = messages_of(&store, ids[1]).await.join("\n");
    assert!(text.contains("(branch feature only, depth 1)"), "{text}");

    failed_with(&store, ids[2], &format!("git: branch 'nope' does not exist in {url}")).await;
}

/// Every file under `dir` (recursively) that contains `needle`.
fn files_containing(dir: &Path, needle: &str, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_dir() {
            files_containing(&path, needle, found);
        } else if kind.is_file() && entry.metadata().is_ok_and(|m| m.len() < 4 << 20) {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    found.push(path);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn git_private_clones_over_ssh_with_deploy_keys_that_leave_nothing_behind() {
    let repos_dir = tempfile::tempdir().unwrap();
    let repos = git_repos(repos_dir.path());
    let plain = ssh_keygen("");
    let passphrase = "correct horse battery staple";
    let locked = ssh_keygen(passphrase);
    let sshd = Sshd::start(&[&plain.public, &locked.public]);
    let url = sshd.url(&repos_dir.path().join("app.git"));

    let sandbox = Sandbox::new();
    let empty_known_hosts = sandbox.path("empty_known_hosts");
    std::fs::write(&empty_known_hosts, "").unwrap();
    let store_file = sandbox.path("data/known_hosts");
    // A store that already pins another key for this server: its key "changed".
    let pinned = sandbox.path("pinned_known_hosts");
    let other_host_key = ssh_keygen("").public;
    let other = other_host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    std::fs::write(&pinned, format!("[127.0.0.1]:{} {other}\n", sshd.port)).unwrap();
    sandbox.settings(&settings(&format!(
        r#"
[plugins.scm.git]
library = "git"
host_key_policy = "accept-new"
known_hosts = ["{empty}"]
known_hosts_store = "{store_file}"

[plugins.scm.git-strict]
library = "git"
host_key_policy = "strict"
known_hosts = ["{empty}"]

[plugins.scm.git-pinned]
library = "git"
host_key_policy = "accept-new"
known_hosts = ["{empty}"]
known_hosts_store = "{pinned}"
"#,
        empty = empty_known_hosts.display(),
        store_file = store_file.display(),
        pinned = pinned.display(),
    )));
    let store = sandbox.store().await;
    let p = pool(&store).await;
    let key = |name: &str, k: &str, pass: Option<&str>| SshKey {
        name: name.into(),
        private_key: Secret::Set(k.into()),
        unlock_password: pass.map(|p| Secret::Set(p.into())).unwrap_or(Secret::Empty),
        ..Default::default()
    };
    let plain_id = store.create_ssh_key(&key("deploy", &plain.private, None)).await.unwrap();
    let locked_id = store.create_ssh_key(&key("deploy-locked", &locked.private, Some(passphrase))).await.unwrap();
    let with_key = |name: &str, keys: Vec<i64>, scm: &str, branch: &str, checks: &str| Project {
        ssh_key_ids: keys,
        ..project(name, &p, scm, &url, branch, checks)
    };
    create(&store, with_key("ssh-plain", vec![plain_id], "git", "", MAIN_CHECKS)).await;
    create(&store, with_key("ssh-locked", vec![locked_id], "git", "feature", FEATURE_CHECKS)).await;
    create(&store, with_key("ssh-none", vec![], "git", "", "true")).await;
    create(&store, with_key("ssh-strict", vec![plain_id], "git-strict", "", "true")).await;
    create(&store, with_key("ssh-pinned", vec![plain_id], "git-pinned", "", "true")).await;

    let first = start(&sandbox, "ssh-plain");
    let second = start(&sandbox, "ssh-locked");
    work(&sandbox, 2);
    // Each keyed build logged in twice: the repository and its submodule.
    let logins = sshd.log().matches("Accepted publickey").count();
    assert_eq!(logins, 4, "{}", sshd.log());
    // Only after the keyed builds: the next builds of other projects.
    let others = [start(&sandbox, "ssh-none"), start(&sandbox, "ssh-strict"), start(&sandbox, "ssh-pinned")];
    work(&sandbox, 3);

    let b = succeeded(&store, first).await;
    assert_eq!(b.revision.as_deref(), Some(repos.main.as_str()));
    assert_eq!(b.revision_username.as_deref(), Some("Ada"));
    let text = messages_of(&store, first).await.join("\n");
    assert!(text.contains(&format!("git: offering SSH key 'deploy' as {}", sshd.user)), "{text}");
    assert!(text.contains("git: recorded the new host key of [127.0.0.1]:"), "{text}");
    // accept-new recorded exactly the server's key.
    assert_eq!(std::fs::read_to_string(&store_file).unwrap(), sshd.known_hosts_line());

    let b = succeeded(&store, second).await;
    assert_eq!(b.revision.as_deref(), Some(repos.feature.as_str()));
    assert_eq!(b.revision_username.as_deref(), Some("Bob"));
    let log = log_of(&store, second).await;
    assert!(!log.contains(passphrase), "the passphrase reached the log:\n{log}");
    assert!(!log.contains("recorded the new host key"), "the key was already known:\n{log}");

    failed_with(&store, others[0], "asks for an SSH key, and project 'ssh-none' has none attached").await;
    failed_with(&store, others[1], "is not known").await;
    failed_with(&store, others[2], "has CHANGED").await;
    // The refused servers never saw a key: nothing was offered.
    for id in &others[1..] {
        assert!(!log_of(&store, *id).await.contains("offering SSH key"));
    }
    // No login at all after the keyed builds: no key lingered in an agent
    // or a file for the next build to pick up.
    let sshd_log = sshd.log();
    assert_eq!(sshd_log.matches("Accepted publickey").count(), logins, "{sshd_log}");

    // No copy of either key anywhere on disk: not in the build roots, not in
    // a private directory, not in any temp directory, not in ~/.ssh.
    let mut places =
        vec![sandbox.path("data"), std::env::temp_dir(), PathBuf::from("/var/tmp"), PathBuf::from("/dev/shm")];
    if let Some(home) = std::env::var_os("HOME") {
        places.push(PathBuf::from(home).join(".ssh"));
    }
    for k in [&plain, &locked] {
        // A line from the middle of the key body: present in any copy.
        let lines: Vec<&str> = k.private.lines().collect();
        let needle = lines[lines.len() / 2];
        let mut found = Vec::new();
        for place in &places {
            files_containing(place, needle, &mut found);
        }
        assert!(found.is_empty(), "a copy of the private key remains: {found:?}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            [first, second].iter().any(|id| n.starts_with(&format!("vespene-scm-{id}-")))
        })
        .collect();
    assert!(leftovers.is_empty(), "private directories remain: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_private_clones_over_http_with_a_service_login() {
    let repos_dir = tempfile::tempdir().unwrap();
    let repos = git_repos(repos_dir.path());
    let password = "http-pass-7f3a9c";
    let server = GitHttp::start(repos_dir.path(), "ci", password);
    let url = server.url("app.git");

    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store).await;
    let login = |name: &str, pw: &str| ServiceLogin {
        name: name.into(),
        username: "ci".into(),
        password: Secret::Set(pw.into()),
        ..Default::default()
    };
    let good = store.create_service_login(&login("ci", password)).await.unwrap();
    let bad = store.create_service_login(&login("ci-old", "not-the-password-1")).await.unwrap();
    let with_login = |name: &str, id: Option<i64>, branch: &str, checks: &str| Project {
        scm_login_id: id,
        ..project(name, &p, "git", &url, branch, checks)
    };
    create(&store, with_login("http", Some(good), "", MAIN_CHECKS)).await;
    create(&store, with_login("http-feature", Some(good), "feature", FEATURE_CHECKS)).await;
    create(&store, with_login("http-wrong", Some(bad), "", "true")).await;
    create(&store, with_login("http-none", None, "", "true")).await;

    let ids = ["http", "http-feature", "http-wrong", "http-none"].map(|n| start(&sandbox, n));
    work(&sandbox, 4);

    let b = succeeded(&store, ids[0]).await;
    assert_eq!(b.revision.as_deref(), Some(repos.main.as_str()));
    assert_eq!(b.revision_username.as_deref(), Some("Ada"));
    let b = succeeded(&store, ids[1]).await;
    assert_eq!(b.revision.as_deref(), Some(repos.feature.as_str()));
    failed_with(&store, ids[2], &format!("git: authentication failed for {url}: the server refused the login of 'ci'"))
        .await;
    failed_with(&store, ids[3], "asks for a username and password, and project 'http-none' has no service login").await;
    for id in ids {
        let log = log_of(&store, id).await;
        assert!(!log.contains(password) && !log.contains("not-the-password-1"), "a password reached the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn svn_anonymous_and_password_checkouts_over_svnserve() {
    let root = tempfile::tempdir().unwrap();
    // Random: the disk scan below must find only copies this run made (a
    // literal would also be found in any copy of this source).
    let random = |prefix: &str| {
        let mut bytes = [0u8; 12];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut bytes).unwrap();
        format!("{prefix}{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    let password = random("svn-pass-");
    let wrong_password = random("svn-wrong-pass-");
    let password = password.as_str();
    svn_repository(root.path(), "public", &[]);
    svn_repository(root.path(), "private", &[("ada", password)]);
    // Content committed locally (file://) with known authors: trunk by ada,
    // branches/feature by bob with a file only it has.
    let src = root.path().join("src");
    std::fs::create_dir_all(src.join("trunk")).unwrap();
    std::fs::write(src.join("trunk/README"), "hello\n").unwrap();
    for repo in ["public", "private"] {
        let url = format!("file://{}", root.path().join(repo).display());
        run(Command::new("svn").args(["import", "-q", "--username", "ada", "-m", "first"]).arg(&src).arg(&url));
        let branch = format!("{url}/branches/feature");
        run(Command::new("svn")
            .args(["copy", "-q", "--parents", "--username", "bob", "-m", "branch"])
            .arg(format!("{url}/trunk"))
            .arg(&branch));
        let extra = root.path().join("feature.txt");
        std::fs::write(&extra, "only on feature\n").unwrap();
        run(Command::new("svn")
            .args(["import", "-q", "--username", "bob", "-m", "feature work"])
            .arg(&extra)
            .arg(format!("{branch}/feature.txt")));
    }
    std::fs::remove_dir_all(&src).unwrap();
    let server = Svnserve::start(root.path());

    let sandbox = Sandbox::new();
    sandbox.settings(&settings(""));
    let store = sandbox.store().await;
    let p = pool(&store).await;
    let login = |name: &str, pw: &str| ServiceLogin {
        name: name.into(),
        username: "ada".into(),
        password: Secret::Set(pw.into()),
        ..Default::default()
    };
    let good = store.create_service_login(&login("svn-ada", password)).await.unwrap();
    let bad = store.create_service_login(&login("svn-ada-old", &wrong_password)).await.unwrap();
    let with = |name: &str, repo: &str, branch: &str, id: Option<i64>, checks: &str| Project {
        scm_login_id: id,
        ..project(name, &p, "svn", &server.url(repo), branch, checks)
    };
    create(&store, with("svn-trunk", "public", "trunk", None, "test -f README\ntest ! -e feature.txt\ntest -d .svn"))
        .await;
    create(&store, with("svn-feature", "public", "branches/feature", None, "test -f feature.txt")).await;
    create(&store, with("svn-private", "private", "trunk", Some(good), "test -f README")).await;
    create(&store, with("svn-wrong", "private", "trunk", Some(bad), "true")).await;
    create(&store, with("svn-anonymous", "private", "trunk", None, "true")).await;

    let names = ["svn-trunk", "svn-feature", "svn-private", "svn-wrong", "svn-anonymous"];
    let ids = names.map(|n| start(&sandbox, n));
    work(&sandbox, ids.len());

    let b = succeeded(&store, ids[0]).await;
    // r1 made trunk; r2 and r3 only touched the branch.
    assert_eq!(b.revision.as_deref(), Some("1"));
    assert_eq!(b.revision_username.as_deref(), Some("ada"));
    let text = messages_of(&store, ids[0]).await.join("\n");
    assert!(text.contains(&format!("svn: checking out {}/trunk (anonymously)", server.url("public"))), "{text}");
    assert!(text.contains("Checked out revision 3."), "the client's output streams as messages:\n{text}");

    let b = succeeded(&store, ids[1]).await;
    assert_eq!(b.revision.as_deref(), Some("3"));
    assert_eq!(b.revision_username.as_deref(), Some("bob"));

    let b = succeeded(&store, ids[2]).await;
    assert_eq!(b.revision_username.as_deref(), Some("ada"));
    let private_url = format!("{}/trunk", server.url("private"));
    failed_with(&store, ids[3], &format!("svn: authentication failed for {private_url} as ada")).await;
    failed_with(&store, ids[4], &format!("svn: authentication failed for {private_url} (anonymous access refused)"))
        .await;

    for id in ids {
        let log = log_of(&store, id).await;
        assert!(!log.contains(password) && !log.contains(&wrong_password), "a password reached the log:\n{log}");
    }
    // Nothing cached the password: not svn's own config, not a temp file.
    let mut places = vec![sandbox.path("data"), std::env::temp_dir()];
    if let Some(home) = std::env::var_os("HOME") {
        places.push(PathBuf::from(home).join(".subversion"));
    }
    let mut found = Vec::new();
    for place in &places {
        files_containing(place, password, &mut found);
        files_containing(place, &wrong_password, &mut found);
    }
    // The server's own passwd file is the one legitimate copy.
    found.retain(|f| !f.starts_with(root.path()));
    assert!(found.is_empty(), "the svn password was written to disk: {found:?}");
}
