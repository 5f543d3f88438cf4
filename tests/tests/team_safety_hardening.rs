//! Issue 14 ("safe for a team by default"), findings 6 to 9, end to end
//! through the real `vespene` binary and the real plugin `.so` files:
//! local repositories only under admin-listed roots (6), container builds
//! without root or capabilities on a nosuid,nodev build root (7), imports that
//! never follow a symlink out of the clone (8), and views filtered by default
//! with other users shown by username only (9).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use vespene::store::{Build, BuildStatus, Organization, Store, WorkerPool};
use vespene_e2e::servers::{run, GitDaemon};
use vespene_e2e::*;

fn plugin_settings() -> String {
    format!("plugin_path = [\"{}\"]\n", bin_dir().display())
}

async fn shell_pool(store: &Store, name: &str) -> WorkerPool {
    let p = WorkerPool { name: name.into(), isolation_method: "shell".into(), ..Default::default() };
    let id = store.create_worker_pool(&p).await.unwrap();
    store.get_worker_pool(id).await.unwrap().unwrap()
}

async fn log_of(store: &Store, build: i64) -> String {
    let lines = store.output_since(build, 0, 100_000).await.unwrap();
    lines.into_iter().map(|l| l.text).collect::<Vec<_>>().join("\n")
}

fn git(work: &Path, args: &[&str]) {
    run(Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(work));
}

/// A bare repository `<base>/<name>.git` with one commit of `files` and of
/// `links` (symbolic links: path, target), as git stores them.
fn repository(base: &Path, name: &str, files: &[(&str, &str)], links: &[(&str, &Path)]) -> std::path::PathBuf {
    let work = base.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), name).unwrap();
    for (path, text) in files {
        let path = work.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    for (path, target) in links {
        std::os::unix::fs::symlink(target, work.join(path)).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let bare = base.join(format!("{name}.git"));
    run(Command::new("git").args(["clone", "-q", "--bare"]).arg(&work).arg(&bare));
    bare
}

/// A GitHub API for organization `acme` answering one page of repositories.
fn github_api(repos: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let body = repos.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let path = head.split_whitespace().nth(1).unwrap_or_default();
            let (status, body) = if path == "/orgs/acme/repos?per_page=100&page=1" {
                ("200 OK", body.clone())
            } else {
                ("404 Not Found", "{\"message\":\"Not Found\"}".to_string())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

fn repo_json(daemon: &GitDaemon, name: &str) -> Value {
    json!({"name": name, "clone_url": daemon.url(&format!("{name}.git")), "default_branch": "main",
        "private": false, "full_name": format!("acme/{name}")})
}

/// Runs `vespene import acme --force` and answers the import build.
async fn import(sandbox: &Sandbox, store: &Store) -> Build {
    let out = sandbox.run(&["import", "acme", "--force"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let org = store.find_organization("acme").await.unwrap().unwrap();
    let id = org.last_build_id.unwrap_or_else(|| panic!("no import ran: {text}"));
    store.get_build(id).await.unwrap().unwrap()
}

// ------------------------------------------------------------ finding 8

/// Finding 8: an organization import never follows a symbolic link. A
/// repository whose `.vespene` names a script that is a symlink to a file
/// outside the clone (the server's `secret.key`, or any readable file), or
/// whose `.vespene` is itself a symlink, fails with an error naming the
/// repository and the key, and no project gets the content; a plain
/// repository beside them is still imported.
#[tokio::test(flavor = "multi_thread")]
async fn finding_8_import_refuses_symlinked_dotfile_and_script() {
    let repos = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    sandbox.settings(&plugin_settings());
    let store = sandbox.store().await;
    let key_file = sandbox.path("data/secret.key");
    let key = std::fs::read_to_string(&key_file).expect("the store made its key");
    // Files outside any clone that would pass as a script and as a `.vespene`.
    let outside = repos.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("private.sh"), "#!/bin/sh\necho private-script-of-the-server\n").unwrap();
    std::fs::write(outside.join("dotfile"), "name: from-outside\n").unwrap();

    repository(
        repos.path(),
        "key-thief",
        &[(".vespene", "name: key-thief\nscript: key.sh\n")],
        &[("key.sh", &key_file)],
    );
    repository(
        repos.path(),
        "script-thief",
        &[(".vespene", "name: script-thief\nscript: build.sh\n")],
        &[("build.sh", &outside.join("private.sh"))],
    );
    repository(
        repos.path(),
        "dir-thief",
        &[(".vespene", "name: dir-thief\nscript: ci/private.sh\n")],
        &[("ci", &outside)],
    );
    repository(repos.path(), "dotfile-thief", &[], &[(".vespene", &outside.join("dotfile"))]);
    repository(
        repos.path(),
        "honest",
        &[(".vespene", "name: honest\nscript: ci/build.sh\n"), ("ci/build.sh", "#!/bin/sh\necho honest build\n")],
        &[],
    );
    let daemon = GitDaemon::start(repos.path());
    let names = ["key-thief", "script-thief", "dir-thief", "dotfile-thief", "honest"];
    let api = github_api(Value::Array(names.iter().map(|n| repo_json(&daemon, n)).collect()));
    let pool = shell_pool(&store, "importers").await;
    store
        .create_organization(&Organization {
            name: "acme".into(),
            organization_type: "github".into(),
            organization_identifier: "acme".into(),
            api_endpoint: api,
            default_worker_pool_id: pool.id,
            worker_pool_id: pool.id,
            ..Default::default()
        })
        .await
        .unwrap();

    let build = import(&sandbox, &store).await;
    let log = log_of(&store, build.id).await;
    assert_eq!((build.status, build.return_code), (BuildStatus::Failure, Some(4)), "{log}");
    for (repo, key, what) in [
        ("key-thief", ".vespene key 'script'", "'key.sh' is a symbolic link"),
        ("script-thief", ".vespene key 'script'", "'build.sh' is a symbolic link"),
        ("dir-thief", ".vespene key 'script'", "'ci' is a symbolic link"),
        ("dotfile-thief", ".vespene file", "'.vespene' is a symbolic link"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("error: repository {repo}: ")))
            .unwrap_or_else(|| panic!("no error for {repo}: {log}"));
        assert!(line.contains(key) && line.contains(what), "{repo}: {line}");
    }
    assert!(log.contains("repository honest: created project honest"), "{log}");
    let projects = store.list_projects().await.unwrap();
    let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["honest"], "only the honest repository became a project");
    assert_eq!(projects[0].script, "#!/bin/sh\necho honest build\n");
    for p in &projects {
        assert!(!p.script.contains(key.trim()) && !p.script.contains("private-script-of-the-server"), "{p:?}");
    }
    assert!(!log.contains(key.trim()) && !log.contains("private-script-of-the-server"), "{log}");
}
