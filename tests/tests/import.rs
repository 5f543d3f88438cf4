//! Organization import end to end (inventory #47-#49): the real `vespene`
//! binary and the real `github` plugin against a local HTTP server speaking
//! the GitHub REST API, whose repositories are served by a real `git daemon`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vespene::store::{Build, BuildStatus, NewUser, Organization, Secret, ServiceLogin, Store, WorkerPool};
use vespene_e2e::servers::{run, GitDaemon};
use vespene_e2e::*;

fn settings() -> String {
    format!("plugin_path = [\"{}\"]\n", bin_dir().display())
}

async fn pool(store: &Store, name: &str) -> WorkerPool {
    let p = WorkerPool { name: name.into(), isolation_method: "shell".into(), ..Default::default() };
    let id = store.create_worker_pool(&p).await.unwrap();
    store.get_worker_pool(id).await.unwrap().unwrap()
}

/// A bare repository `<name>.git` under `base` with one commit of `files`.
fn repository(base: &Path, name: &str, files: &[(&str, &str)]) {
    let work = base.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "commit.gpgsign=false"])
            .args(args)
            .current_dir(&work))
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(work.join("README"), name).unwrap();
    for (path, text) in files {
        std::fs::write(work.join(path), text).unwrap();
    }
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    run(Command::new("git").args(["clone", "-q", "--bare"]).arg(&work).arg(base.join(format!("{name}.git"))));
}

/// A GitHub API for organization `acme`: two pages of repositories (the
/// first with a `Link: rel="next"`), then 404 for anything else. Answers
/// the request heads it saw.
fn github_api(pages: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let base = format!("http://{addr}");
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
            let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
            log.lock().unwrap().push(head);
            let page = (1..=pages.len()).find(|n| path == format!("/orgs/acme/repos?per_page=100&page={n}"));
            let (status, body, link) = match page {
                Some(n) => {
                    let link = if n < pages.len() {
                        format!("Link: <http://{addr}/orgs/acme/repos?per_page=100&page={}>; rel=\"next\"\r\n", n + 1)
                    } else {
                        String::new()
                    };
                    ("200 OK", pages[n - 1].clone(), link)
                }
                None => ("404 Not Found", "{\"message\":\"Not Found\"}".to_string(), String::new()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (base, seen)
}

fn repo_json(daemon: &GitDaemon, name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "clone_url": daemon.url(&format!("{name}.git")), "default_branch": "main",
        "private": false, "full_name": format!("acme/{name}")})
}

async fn log_of(store: &Store, build: i64) -> String {
    let lines = store.output_since(build, 0, 100_000).await.unwrap();
    lines.into_iter().map(|l| l.text).collect::<Vec<_>>().join("\n")
}

/// Runs `vespene import acme [extra]`, answering the import build (if any).
async fn import(sandbox: &Sandbox, store: &Store, extra: &[&str]) -> Option<Build> {
    let before = store.find_organization("acme").await.unwrap().unwrap().last_build_id;
    let mut args = vec!["import", "acme"];
    args.extend_from_slice(extra);
    let out = sandbox.run(&args);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    let after = store.find_organization("acme").await.unwrap().unwrap();
    assert_eq!(after.active_build_id, None, "{text}");
    if after.last_build_id == before {
        assert!(out.status.success() && text.contains("not due"), "{text}");
        return None;
    }
    let build = store.get_build(after.last_build_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(out.status.success(), build.status == BuildStatus::Success, "{text}");
    // The import names the process that ran it, so the heartbeat rule covers it.
    let worker_id = build.worker_id.unwrap_or_else(|| panic!("import build {} names its worker", build.id));
    assert!(store.list_workers().await.unwrap().iter().any(|w| w.id == worker_id), "worker {worker_id} is registered");
    Some(build)
}

const FULL_DOTFILE: &str = "\
name: web-app
script: ci/build.sh
timeout: 17
container_base_image: alpine:3.19
repo_branch: main
webhook_enabled: false
variables:
  region: eu
  replicas: 3
launch_questions:
  - variable: target
    type: radio
    choices: [staging, prod]
worker_pool: special
pipeline: release
pipeline_definition: [build, test, deploy]
stage: test
ownership_groups: [ops]
launch_groups: [dev, nobody-has-this]
";

#[tokio::test(flavor = "multi_thread")]
async fn imports_a_github_organization_with_policies_and_a_pipeline() {
    let repos = tempfile::tempdir().unwrap();
    let work_files: &[(&str, &str)] = &[(".vespene", FULL_DOTFILE)];
    repository_with_dir(repos.path(), "web", work_files, "ci/build.sh", "#!/bin/bash\necho building web\n");
    repository(repos.path(), "plain", &[]);
    repository(repos.path(), "broken", &[(".vespene", "name: broken\ntimeout: soon\n")]);
    let daemon = GitDaemon::start(repos.path());
    let page1 = serde_json::json!([repo_json(&daemon, "web"), repo_json(&daemon, "plain")]).to_string();
    let page2 = serde_json::json!([repo_json(&daemon, "broken")]).to_string();
    let (api, requests) = github_api(vec![page1, page2]);

    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let store = sandbox.store().await;
    let importers = pool(&store, "importers").await;
    let default = pool(&store, "default").await;
    let special = pool(&store, "special").await;
    let admin = NewUser {
        username: "admin".into(),
        password: "an-admin-password".into(),
        is_superuser: true,
        ..Default::default()
    };
    let admin = store.create_user(&admin).await.unwrap();
    let ops = store.create_group("ops").await.unwrap();
    let dev = store.create_group("dev").await.unwrap();
    let login = store
        .create_service_login(&ServiceLogin {
            name: "github".into(),
            username: "ci-bot".into(),
            password: Secret::Set("gh-secret-token".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let org_id = store
        .create_organization(&Organization {
            name: "acme".into(),
            organization_type: "github".into(),
            organization_identifier: "acme".into(),
            api_endpoint: api.clone(),
            default_worker_pool_id: default.id,
            worker_pool_id: importers.id,
            scm_login_id: Some(login),
            // Made by an administrator, so its imports may name any pool.
            created_by: Some(admin),
            ..Default::default()
        })
        .await
        .unwrap();

    // First import: one project, one skipped repository, one error.
    let build = import(&sandbox, &store, &[]).await.expect("the first import runs");
    assert_eq!(build.organization_id, Some(org_id));
    assert_eq!(build.project_id, None);
    assert_eq!(build.worker_pool_id, importers.id);
    assert_eq!((build.status, build.return_code), (BuildStatus::Failure, Some(1)));
    let log = log_of(&store, build.id).await;
    assert!(log.contains("found 3 repositories in GitHub organization acme"), "{log}");
    assert!(log.contains("repository web: created project web-app"), "{log}");
    assert!(log.contains("repository plain: skipped: no .vespene file"), "{log}");
    assert!(log.contains("error: repository broken: .vespene key 'timeout': invalid type"), "{log}");
    assert!(log.contains("repository web: .vespene key 'launch_groups': no group named 'nobody-has-this'"), "{log}");
    assert!(log.contains("created pipeline release with stages build, test, deploy"), "{log}");
    assert!(!log.contains("gh-secret-token"), "{log}");
    {
        let heads = requests.lock().unwrap();
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads[0].starts_with("GET /orgs/acme/repos?per_page=100&page=1 "), "{}", heads[0]);
        assert!(heads[1].starts_with("GET /orgs/acme/repos?per_page=100&page=2 "), "{}", heads[1]);
        assert!(heads.iter().all(|h| h.contains("Bearer gh-secret-token")), "{heads:?}");
    }

    let projects = store.list_projects().await.unwrap();
    assert_eq!(projects.len(), 1, "{projects:?}");
    let web = &projects[0];
    assert_eq!(web.name, "web-app");
    assert_eq!(web.repo_url, daemon.url("web.git"));
    assert_eq!(web.scm_type, "git");
    assert_eq!(web.script, "#!/bin/bash\necho building web\n");
    assert_eq!(web.timeout, 17);
    assert_eq!(web.container_base_image.as_deref(), Some("alpine:3.19"));
    assert_eq!(web.repo_branch, "main");
    assert!(!web.webhook_enabled);
    let vars: serde_json::Value = serde_json::from_str(&web.variables).unwrap();
    assert_eq!(vars, serde_json::json!({"region": "eu", "replicas": 3}));
    let questions: serde_json::Value = serde_json::from_str(&web.launch_questions).unwrap();
    assert_eq!(questions, serde_json::json!([{"variable": "target", "type": "radio", "choices": ["staging", "prod"]}]));
    assert_eq!(web.worker_pool_id, special.id);
    assert_eq!(web.scm_login_id, Some(login));
    assert_eq!(web.owner_group_ids, vec![ops]);
    assert_eq!(web.launch_group_ids, vec![dev]);
    let release = store.find_pipeline("release").await.unwrap().expect("pipeline created");
    let stage_names: Vec<String> = {
        let mut names = Vec::new();
        for id in &release.stage_ids {
            names.push(store.get_stage(*id).await.unwrap().unwrap().name);
        }
        names
    };
    assert_eq!(stage_names, ["build", "test", "deploy"]);
    assert_eq!(web.pipeline_id, Some(release.id));
    assert_eq!(web.stage_id, Some(store.find_stage("test").await.unwrap().unwrap().id));
    let org = store.get_organization(org_id).await.unwrap().unwrap();
    assert_eq!((org.last_build_id, org.active_build_id), (Some(build.id), None));

    // Not due again for refresh_minutes.
    assert!(import(&sandbox, &store, &[]).await.is_none());

    // Hand-edit the script, keep scripts, import stubs, force a rescan.
    let mut edited = web.clone();
    edited.script = "#!/bin/bash\necho edited by hand\n".into();
    edited.timeout = 99;
    store.update_project(&edited).await.unwrap();
    let mut org = store.get_organization(org_id).await.unwrap().unwrap();
    org.overwrite_project_script = false;
    org.import_without_dotfile = true;
    org.force_rescan = true;
    store.update_organization(&org).await.unwrap();
    let second = import(&sandbox, &store, &[]).await.expect("a forced rescan runs");
    assert_eq!((second.status, second.return_code), (BuildStatus::Failure, Some(1)));
    let log = log_of(&store, second.id).await;
    assert!(log.contains("repository web: updated project web-app"), "{log}");
    assert!(log.contains("repository plain: created project plain.git (a stub: no .vespene file)"), "{log}");
    let web = store.find_project("web-app").await.unwrap().unwrap();
    assert_eq!(web.script, "#!/bin/bash\necho edited by hand\n", "the script is kept");
    assert_eq!(web.timeout, 17, "configurations are still overwritten");
    let stub = store.find_project("plain.git").await.unwrap().expect("a stub project");
    assert_eq!(stub.repo_url, daemon.url("plain.git"));
    assert_eq!((stub.scm_type.as_str(), stub.script.as_str()), ("git", ""));
    assert_eq!(stub.worker_pool_id, default.id);
    assert!(stub.webhook_enabled);
    assert!(!store.get_organization(org_id).await.unwrap().unwrap().force_rescan, "force_rescan is reset");
    assert_eq!(store.list_pipelines().await.unwrap().len(), 1);

    // A worker serving the import pool runs a due import in its housekeeping.
    let mut org = store.get_organization(org_id).await.unwrap().unwrap();
    org.force_rescan = true;
    store.update_organization(&org).await.unwrap();
    let mut worker = sandbox.command(&["worker", "importers"]).stdout(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    let third = loop {
        let org = store.get_organization(org_id).await.unwrap().unwrap();
        if org.last_build_id != Some(second.id) && org.active_build_id.is_none() {
            break store.get_build(org.last_build_id.unwrap()).await.unwrap().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the worker did not import");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(third.return_code, Some(1));
    assert_eq!(store.list_projects().await.unwrap().len(), 2);
}

/// Like [`repository`], plus `dir_file` (a path with directories) holding `text`.
fn repository_with_dir(base: &Path, name: &str, files: &[(&str, &str)], dir_file: &str, text: &str) {
    let extra = base.join("extra");
    let path = extra.join(dir_file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    let work = base.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    run(Command::new("cp").arg("-r").arg(extra.join(".")).arg(&work));
    repository(base, name, files);
}

/// `vespene stop` ends an import: the clone in progress (here from a server
/// that never answers) is killed, the import is ABORTED and the organization
/// is free for the next one.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_can_be_stopped_while_it_clones() {
    // Accepts connections and never answers: a clone from it hangs.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/acme/stuck.git", silent.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn({
        let held = held.clone();
        move || {
            for stream in silent.incoming().flatten() {
                held.lock().unwrap().push(stream);
            }
        }
    });
    let repo = serde_json::json!({"name": "stuck", "clone_url": silent_url, "default_branch": "main",
        "private": false, "full_name": "acme/stuck"});
    let (api, _) = github_api(vec![serde_json::json!([repo]).to_string()]);

    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let store = sandbox.store().await;
    let importers = pool(&store, "importers").await;
    let org_id = store
        .create_organization(&Organization {
            name: "acme".into(),
            organization_type: "github".into(),
            organization_identifier: "acme".into(),
            api_endpoint: api,
            default_worker_pool_id: importers.id,
            worker_pool_id: importers.id,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut import = sandbox.command(&["import", "acme", "--force"]).stdout(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    let build_id = loop {
        let org = store.get_organization(org_id).await.unwrap().unwrap();
        if let Some(id) = org.active_build_id {
            if !held.lock().unwrap().is_empty() {
                break id;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the import never started cloning");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let out = sandbox.run(&["stop", &build_id.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stopped = Instant::now();
    while import.try_wait().unwrap().is_none() {
        assert!(stopped.elapsed() < Duration::from_secs(20), "the import did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let build = store.get_build(build_id).await.unwrap().unwrap();
    let log = log_of(&store, build_id).await;
    assert_eq!(build.status, BuildStatus::Aborted, "{log}");
    assert!(log.contains("import stopped"), "{log}");
    let org = store.get_organization(org_id).await.unwrap().unwrap();
    assert_eq!(org.active_build_id, None, "the organization is free again");
    assert!(store.list_projects().await.unwrap().is_empty(), "nothing was imported");
}
