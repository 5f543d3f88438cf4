//! Issue 14 ("safe for a team by default"), findings 6 to 9, end to end
//! through the real `vespene` binary and the real plugin `.so` files:
//! local repositories only under admin-listed roots (6), container builds
//! without root or capabilities on a nosuid,nodev build root (7), imports that
//! never follow a symlink out of the clone (8), and views filtered by default
//! with other users shown by username only (9). Finding 3's import case is
//! here too, beside the other import tests: a `.vespene` file names only the
//! pools, pipelines and stages the organization's owners may use.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use vespene::store::{Build, BuildStatus, NewUser, Organization, Store, WorkerPool};
use vespene_e2e::api_client::token_for;
use vespene_e2e::builds::log_of;
use vespene_e2e::servers::{run, GitDaemon};
use vespene_e2e::*;

fn plugin_settings() -> String {
    format!("plugin_path = [\"{}\"]\n", bin_dir().display())
}

async fn shell_pool(store: &Store, name: &str) -> WorkerPool {
    // Shared: the ordinary users of these tests may use it.
    let p = WorkerPool { name: name.into(), isolation_method: "shell".into(), shared: true, ..Default::default() };
    let id = store.create_worker_pool(&p).await.unwrap();
    store.get_worker_pool(id).await.unwrap().unwrap()
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

/// Finding 3, imports: an organization's import creates projects on its
/// owners' behalf, so the pool, pipeline and stage a `.vespene` file names
/// must be ones they may use (theirs, or shared); others are ignored, said in
/// the import's log.
#[tokio::test(flavor = "multi_thread")]
async fn finding_3_an_imported_dotfile_names_only_what_the_organizations_owners_may_use() {
    let repos = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    sandbox.settings(&plugin_settings());
    let store = sandbox.store().await;
    let alice = user_with_details(&store, "alice", false).await;
    let importers = shell_pool(&store, "importers").await;
    let pool = |name: &str, created_by| WorkerPool {
        name: name.into(),
        isolation_method: "shell".into(),
        created_by,
        ..Default::default()
    };
    store.create_worker_pool(&pool("admins-pool", None)).await.unwrap();
    let alices_pool = store.create_worker_pool(&pool("alices-pool", Some(alice))).await.unwrap();
    let stage = vespene::store::Stage { name: "admins-stage".into(), ..Default::default() };
    let stage = store.create_stage(&stage).await.unwrap();
    let pipeline =
        vespene::store::Pipeline { name: "admins-pipe".into(), stage_ids: vec![stage], ..Default::default() };
    store.create_pipeline(&pipeline).await.unwrap();
    let script = ("build.sh", "#!/bin/sh\necho build\n");
    repository(
        repos.path(),
        "wants-admins",
        &[
            (
                ".vespene",
                "name: wants-admins\nscript: build.sh\nworker_pool: admins-pool\npipeline: admins-pipe\nstage: admins-stage\n",
            ),
            script,
        ],
        &[],
    );
    repository(
        repos.path(),
        "wants-own",
        &[(".vespene", "name: wants-own\nscript: build.sh\nworker_pool: alices-pool\n"), script],
        &[],
    );
    let daemon = GitDaemon::start(repos.path());
    let api = github_api(Value::Array(["wants-admins", "wants-own"].iter().map(|n| repo_json(&daemon, n)).collect()));
    store
        .create_organization(&Organization {
            name: "acme".into(),
            organization_type: "github".into(),
            organization_identifier: "acme".into(),
            api_endpoint: api,
            default_worker_pool_id: importers.id,
            worker_pool_id: importers.id,
            allow_worker_pool_assignment: true,
            created_by: Some(alice),
            ..Default::default()
        })
        .await
        .unwrap();

    let build = import(&sandbox, &store).await;
    let log = log_of(&store, build.id).await;
    assert_eq!(build.status, BuildStatus::Success, "{log}");
    let projects = store.list_projects().await.unwrap();
    let project = |name: &str| projects.iter().find(|p| p.name == name).cloned().expect(name);
    let wants_admins = project("wants-admins");
    assert_eq!(
        (wants_admins.worker_pool_id, wants_admins.pipeline_id, wants_admins.stage_id),
        (importers.id, None, None)
    );
    for (key, kind, name) in [
        ("worker_pool", "worker pool", "admins-pool"),
        ("pipeline", "pipeline", "admins-pipe"),
        ("stage", "stage", "admins-stage"),
    ] {
        let expected = format!(
            "repository wants-admins: .vespene key '{key}': the organization's owners may not use {kind} '{name}'"
        );
        assert!(log.contains(&expected), "no '{expected}' in {log}");
    }
    assert_eq!(project("wants-own").worker_pool_id, alices_pool, "the owners' own pool is theirs to use");
}

// ------------------------------------------------------------ finding 6

/// A server whose admin allows local repositories under `allowed` only, with
/// no embedded workers, users alice and bob, bob's token client, and the
/// default pool.
async fn with_local_roots(allowed: &Path) -> (Sandbox, Server, Store, vespene_e2e::api_client::Client, WorkerPool) {
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        "{}[workers]\nembedded = false\n[repositories]\nlocal_roots = [\"{}\"]\n",
        plugin_settings(),
        allowed.display()
    ));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    user_with_details(&store, "alice", false).await;
    user_with_details(&store, "bob", false).await;
    let b = token_for(&server.addr, "bob");
    let pool = store.find_worker_pool("default").await.unwrap().expect("the default pool");
    (sandbox, server, store, b, pool)
}

/// Finding 6: `file://` repositories only under `[repositories] local_roots`.
/// User B's project naming a root-only repository outside the roots (directly,
/// through a symlink under a root, or with `..`) is refused at save with the
/// field and the reason; one under the root builds; and a worker whose
/// settings no longer list the root refuses the checkout.
#[tokio::test(flavor = "multi_thread")]
async fn finding_6_local_repositories_only_under_admin_roots() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("srv-git");
    let private = dir.path().join("root-only");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&private).unwrap();
    repository(&allowed, "team", &[("README", "team readme 41c7")], &[]);
    repository(&private, "secret", &[("README", "root only 9f2e")], &[]);
    // A repository under the root whose submodule is the root-only one.
    let secret_head = run(Command::new("git").arg("-C").arg(private.join("secret-work")).args(["rev-parse", "HEAD"]));
    let smuggler = allowed.join("smuggler-work");
    std::fs::create_dir_all(&smuggler).unwrap();
    git(&smuggler, &["init", "-q", "-b", "main"]);
    let gitmodules = format!("[submodule \"lib\"]\n\tpath = lib\n\turl = file://{}/secret.git\n", private.display());
    std::fs::write(smuggler.join(".gitmodules"), gitmodules).unwrap();
    git(&smuggler, &["add", ".gitmodules"]);
    git(&smuggler, &["update-index", "--add", "--cacheinfo", &format!("160000,{secret_head},lib")]);
    git(&smuggler, &["commit", "-q", "-m", "first"]);
    run(Command::new("git").args(["clone", "-q", "--bare"]).arg(&smuggler).arg(allowed.join("smuggler.git")));
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&private, allowed.join("escape")).unwrap();

    let (sandbox, _server, store, b, pool) = with_local_roots(&allowed).await;
    let project = |name: &str, url: String| {
        json!({"name": name, "worker_pool_id": pool.id, "repo_url": url, "scm_type": "git",
               "script": "#!/bin/sh\ncat README\n"})
    };

    let (a, p) = (allowed.display(), private.display());
    for (url, reason) in [
        (format!("file://{p}/secret.git"), format!("local repository '{p}/secret.git' is outside")),
        (format!("file://{a}/escape/secret.git"), format!("which resolves to '{p}/secret.git'")),
        (format!("file://{a}/../root-only/secret.git"), "must be an absolute path without '..'".to_string()),
        // A bare path is not a repository URL at all.
        (format!("{p}/secret.git"), "is not a URL".to_string()),
    ] {
        let (status, body) = b.call("POST", "/api/v1/projects", Some(&project("stolen", url.clone())));
        assert_eq!(status, 400, "{url}: {body}");
        assert_eq!(body["field"], "repo_url", "{url}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(&reason), "{url}: {body}");
    }
    assert!(store.list_projects().await.unwrap().is_empty(), "nothing was saved");

    let created = b.ok("POST", "/api/v1/projects", Some(&project("team", format!("file://{a}/team.git"))));
    let id = created["id"].as_i64().unwrap();
    let build = b.ok("POST", &format!("/api/v1/projects/{id}/start"), None)["id"].as_i64().unwrap();
    vespene_e2e::builds::WorkerProcess::spawn(&sandbox, &["default", "--max-builds", "1"])
        .wait(std::time::Duration::from_secs(60));
    let done = store.get_build(build).await.unwrap().unwrap();
    let log = log_of(&store, build).await;
    assert_eq!(done.status, BuildStatus::Success, "{log}");
    assert!(log.contains("team readme 41c7"), "{log}");

    // A submodule cannot pull the root-only repository in either.
    let created = b.ok("POST", "/api/v1/projects", Some(&project("smuggler", format!("file://{a}/smuggler.git"))));
    let sid = created["id"].as_i64().unwrap();
    let build = b.ok("POST", &format!("/api/v1/projects/{sid}/start"), None)["id"].as_i64().unwrap();
    vespene_e2e::builds::WorkerProcess::spawn(&sandbox, &["default", "--max-builds", "1"])
        .wait(std::time::Duration::from_secs(60));
    let done = store.get_build(build).await.unwrap().unwrap();
    let log = log_of(&store, build).await;
    assert_eq!(done.status, BuildStatus::Failure, "{log}");
    assert!(log.contains(&format!("git: submodule lib: local repository '{p}/secret.git' is outside")), "{log}");
    assert!(!log.contains("root only 9f2e"), "{log}");
    let root = Path::new(&done.working_dir);
    assert!(!root.join("lib/README").exists(), "the root-only repository was checked out");

    // The admin takes the root away: the worker refuses before any checkout.
    let build = b.ok("POST", &format!("/api/v1/projects/{id}/start"), None)["id"].as_i64().unwrap();
    let mut worker = sandbox.command(&["worker", "default", "--max-builds", "1"]);
    worker.env("VESPENE_REPOSITORIES__LOCAL_ROOTS", "[]");
    vespene_e2e::builds::WorkerProcess::from_command(worker).wait(std::time::Duration::from_secs(60));
    let done = store.get_build(build).await.unwrap().unwrap();
    let log = log_of(&store, build).await;
    assert_eq!(done.status, BuildStatus::Failure, "{log}");
    assert!(log.contains("repository refused before checkout") && log.contains("allows none"), "{log}");
    assert!(!log.contains("team readme 41c7") && !log.contains("checking out"), "{log}");
}

/// Finding 6, Subversion: an `svn:externals` definition on a repository under
/// the roots cannot pull in a repository outside them, whether it names it
/// outright or reaches it with `^/..`. The build fails naming the external and
/// nothing of the outside repository is read; an external under the roots is
/// fetched.
#[tokio::test(flavor = "multi_thread")]
async fn finding_6_svn_externals_only_under_admin_roots() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (allowed, private) = (dir.path().join("srv-svn"), dir.path().join("root-only"));
    let svnadmin = |path: &Path| run(Command::new("svnadmin").arg("create").arg(path));
    let import = |from: &Path, url: &str| {
        run(Command::new("svn").args(["import", "-q", "--username", "ada", "-m", "first"]).arg(from).arg(url));
    };
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&private).unwrap();
    for (repo, text) in [(allowed.join("team"), "team svn 52ad"), (allowed.join("lib"), "lib svn 0b3e")] {
        svnadmin(&repo);
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("trunk")).unwrap();
        std::fs::write(src.join("trunk/README"), format!("{text}\n")).unwrap();
        import(&src, &format!("file://{}", repo.display()));
        std::fs::remove_dir_all(&src).unwrap();
    }
    svnadmin(&private.join("secret"));
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("trunk")).unwrap();
    std::fs::write(src.join("trunk/README"), "root only svn 7c1d\n").unwrap();
    import(&src, &format!("file://{}/secret", private.display()));
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let team = format!("file://{}/team", allowed.display());
    let set_externals = |value: &str| {
        let wc = dir.path().join("wc");
        run(Command::new("svn").args(["checkout", "-q", &format!("{team}/trunk")]).arg(&wc));
        run(Command::new("svn").args(["propset", "-q", "svn:externals", value]).arg(&wc));
        run(Command::new("svn").args(["commit", "-q", "--username", "ada", "-m", "externals"]).arg(&wc));
        std::fs::remove_dir_all(&wc).unwrap();
    };

    let (sandbox, _server, store, b, pool) = with_local_roots(&allowed).await;
    let created = b.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "svn-team", "worker_pool_id": pool.id, "repo_url": team, "scm_type": "svn",
                     "repo_branch": "trunk", "script": "#!/bin/sh\ncat README lib/README\n"})),
    );
    let id = created["id"].as_i64().unwrap();
    let build_once = || async {
        let build = b.ok("POST", &format!("/api/v1/projects/{id}/start"), None)["id"].as_i64().unwrap();
        vespene_e2e::builds::WorkerProcess::spawn(&sandbox, &["default", "--max-builds", "1"])
            .wait(std::time::Duration::from_secs(60));
        (store.get_build(build).await.unwrap().unwrap(), log_of(&store, build).await)
    };

    set_externals("^/../lib/trunk lib");
    let (done, log) = build_once().await;
    assert_eq!(done.status, BuildStatus::Success, "{log}");
    assert!(log.contains("team svn 52ad") && log.contains("lib svn 0b3e"), "{log}");

    let p = private.display();
    for (external, named) in [
        (format!("file://{p}/secret/trunk lib"), format!("{p}/secret/trunk")),
        ("^/../../root-only/secret/trunk lib".to_string(), format!("{p}/secret/trunk")),
    ] {
        set_externals(&external);
        let (done, log) = build_once().await;
        assert_eq!(done.status, BuildStatus::Failure, "{external}: {log}");
        assert!(
            log.contains(&format!("svn: external in .: local repository '{named}' is outside")),
            "{external}: {log}"
        );
        assert!(!log.contains("root only svn 7c1d"), "{log}");
        assert!(!Path::new(&done.working_dir).join("lib/README").exists(), "the root-only repository was read");
    }
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

// ------------------------------------------------------------ finding 9

/// A user with an e-mail address and a first name, which others must not see.
async fn user_with_details(store: &Store, name: &str, superuser: bool) -> i64 {
    store
        .create_user(&NewUser {
            username: name.into(),
            password: format!("password-of-{name}"),
            email: format!("{name}@example.com"),
            first_name: format!("{name}-first-name"),
            is_superuser: superuser,
            ..Default::default()
        })
        .await
        .unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    keys
}

/// Finding 9: with the shipped settings, an ordinary user sees only their own
/// projects, and other users by username only (API listing, API detail, UI),
/// while their own record stays whole and superusers see everything.
#[tokio::test(flavor = "multi_thread")]
async fn finding_9_views_filtered_by_default_and_others_by_username_only() {
    let sandbox = Sandbox::new();
    sandbox.settings(&plugin_settings());
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let admin_id = user_with_details(&store, "boss", true).await;
    let a_id = user_with_details(&store, "alice", false).await;
    let b_id = user_with_details(&store, "bob", false).await;
    let pool = shell_pool(&store, "builders").await;
    let (admin, a, b) =
        (token_for(&server.addr, "boss"), token_for(&server.addr, "alice"), token_for(&server.addr, "bob"));

    let project = a.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": "alices-project", "worker_pool_id": pool.id, "script": "#!/bin/sh\necho hi\n"})),
    );
    let pid = project["id"].as_i64().unwrap();
    // B can neither list nor view A's project; A and the admin can.
    let listed = b.ok("GET", "/api/v1/projects", None);
    assert_eq!(listed["count"], 0, "{listed}");
    let (status, body) = b.call("GET", &format!("/api/v1/projects/{pid}"), None);
    assert_eq!(status, 403, "{body}");
    for who in [&a, &admin] {
        assert_eq!(who.ok("GET", "/api/v1/projects", None)["count"], 1);
        assert_eq!(who.ok("GET", &format!("/api/v1/projects/{pid}"), None)["name"], "alices-project");
    }

    // B's user listing: everyone, others by id and username only.
    let users = b.ok("GET", "/api/v1/users", None);
    let rows = users["results"].as_array().unwrap();
    // The first start's `admin`, the boss, alice and bob.
    assert_eq!(rows.len(), 4, "{users}");
    for row in rows {
        let id = row["id"].as_i64().unwrap();
        if id == b_id {
            assert_eq!((row["email"].as_str(), row["is_superuser"].as_bool()), (Some("bob@example.com"), Some(false)));
        } else {
            assert_eq!(keys(row), ["id", "username"], "{row}");
        }
    }
    assert!(rows.iter().any(|r| r["username"] == "alice"), "{users}");
    let text = users.to_string();
    for hidden in ["alice@example.com", "boss@example.com", "alice-first-name", "is_superuser\":true"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    // The detail of another user: the same summary. A filter cannot probe hidden fields.
    assert_eq!(b.ok("GET", &format!("/api/v1/users/{a_id}"), None), json!({"id": a_id, "username": "alice"}));
    assert_eq!(b.ok("GET", &format!("/api/v1/users/{admin_id}"), None), json!({"id": admin_id, "username": "boss"}));
    assert_eq!(b.ok("GET", "/api/v1/users?email=alice@example.com", None)["count"], 0);
    assert_eq!(b.ok("GET", "/api/v1/users?email=bob@example.com", None)["count"], 1);
    assert_eq!(b.ok("GET", &format!("/api/v1/users/{b_id}"), None)["email"], "bob@example.com");
    // Superusers see everything.
    let full = admin.ok("GET", &format!("/api/v1/users/{a_id}"), None);
    assert_eq!((full["email"].as_str(), full["is_superuser"].as_bool()), (Some("alice@example.com"), Some(false)));
    let all = admin.ok("GET", "/api/v1/users", None).to_string();
    assert!(all.contains("alice@example.com") && all.contains("boss@example.com"), "{all}");

    // The UI says the same.
    let cookie = server.login("bob", "password-of-bob");
    let (status, page) = server.get_with("/ui/users", &[("Cookie", &cookie)]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("alice") && page.contains("bob@example.com"), "{page}");
    assert!(!page.contains("alice@example.com") && !page.contains("boss@example.com"), "{page}");
    let (status, page) = server.get_with(&format!("/ui/users/{a_id}"), &[("Cookie", &cookie)]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("alice") && !page.contains("alice@example.com") && !page.contains("alice-first-name"));
    let (status, page) = server.get_with("/ui/projects", &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
    assert!(!page.contains("alices-project"), "{page}");
}

// ------------------------------------------------------------ finding 7

const TEST_IMAGE: &str = "vespene-test-busybox:latest";

/// Finding 7: a container build runs as nobody with no capability, cannot
/// make a device node, and sees its build root mounted `nosuid,nodev`; a
/// capability an admin gives back with `cap_add` is there (and only it); and
/// the file browser serves regular files only, never a device node.
#[tokio::test(flavor = "multi_thread")]
async fn finding_7_containers_run_unprivileged_on_a_nosuid_nodev_build_root() {
    use vespene::store::Project;
    use vespene_e2e::builds::{finished, unstamped_output, WorkerProcess};
    let docker = Command::new("docker").args(["image", "inspect", TEST_IMAGE]).output();
    if !docker.is_ok_and(|o| o.status.success()) {
        missing_service("finding_7", &format!("no Docker engine with {TEST_IMAGE} (scripts/start-docker)"));
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.settings(&format!(
        r#"{}
[workers]
embedded = false

[plugins.isolation.container]
library = "container"
images = ["{TEST_IMAGE}"]

[plugins.isolation.container_bind]
library = "container"
images = ["{TEST_IMAGE}"]
user = "0:0"
cap_add = ["NET_BIND_SERVICE"]
"#,
        plugin_settings()
    ));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let b_id = user_with_details(&store, "bob", false).await;
    let script = "#!/bin/sh\n\
                  echo uid=$(id -u)\n\
                  grep -E '^Cap(Eff|Bnd):' /proc/self/status | tr -s '\\t ' ' '\n\
                  if mknod /build/disk b 254 0 2>/dev/null; then echo mknod=made; else echo mknod=refused; fi\n\
                  awk '$5 == \"/build\" { print \"build-mount=\" $6 }' /proc/self/mountinfo\n";
    let mut builds = Vec::new();
    for (name, isolation) in [("plain", "container"), ("bind", "container_bind")] {
        let pool = WorkerPool { name: name.into(), isolation_method: isolation.into(), ..Default::default() };
        let pool_id = store.create_worker_pool(&pool).await.unwrap();
        let project = Project {
            name: format!("{name}-build"),
            worker_pool_id: pool_id,
            created_by: Some(b_id),
            container_base_image: Some(TEST_IMAGE.into()),
            script: script.into(),
            ..Default::default()
        };
        store.create_project(&project).await.unwrap();
        let out = sandbox.run(&["start", &format!("{name}-build")]);
        let id: i64 = stdout(&out).split_whitespace().nth(1).and_then(|i| i.parse().ok()).expect("a build id");
        let mut worker = sandbox.command(&["worker", name, "--max-builds", "1"]);
        worker.env("VESPENE_BUILD_ROOT", sandbox.path("builds"));
        WorkerProcess::from_command(worker).wait(std::time::Duration::from_secs(120));
        let build = finished(&store, id, std::time::Duration::from_secs(10)).await;
        let log = log_of(&store, id).await;
        assert_eq!(build.status, BuildStatus::Success, "{log}");
        builds.push((build, unstamped_output(&store, id).await));
    }
    let lines = |n: usize| builds[n].1.join("\n");
    let plain = lines(0);
    // Not root, no capability at all, no device node, build root nosuid,nodev.
    assert!(plain.contains("uid=65534"), "{plain}");
    assert!(plain.contains("CapEff: 0000000000000000") && plain.contains("CapBnd: 0000000000000000"), "{plain}");
    assert!(plain.contains("mknod=refused"), "{plain}");
    let mount = builds[0].1.iter().find(|l| l.starts_with("build-mount=")).expect("/build is a mount");
    assert!(mount.contains("nosuid") && mount.contains("nodev"), "{mount}");
    // cap_add gives back exactly the capability named (NET_BIND_SERVICE is bit 10).
    let bind = lines(1);
    assert!(bind.contains("uid=0"), "{bind}");
    assert!(bind.contains("CapEff: 0000000000000400") && bind.contains("CapBnd: 0000000000000400"), "{bind}");
    assert!(bind.contains("mknod=refused"), "{bind}");
    let mount = builds[1].1.iter().find(|l| l.starts_with("build-mount=")).expect("/build is a mount");
    assert!(mount.contains("nosuid") && mount.contains("nodev"), "{mount}");
    // After the build the worker's mount is gone and the root is an ordinary directory again.
    let root = Path::new(&builds[0].0.working_dir);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.lines().any(|l| l.split(' ').nth(4) == Some(&root.display().to_string())), "{mounts}");

    // A device node in a build root (made here, as root) is not served by the file browser.
    run(Command::new("mknod").arg(root.join("null")).args(["c", "1", "3"]));
    std::fs::write(root.join("report.txt"), "a regular file\n").unwrap();
    let cookie = server.login("bob", "password-of-bob");
    let id = builds[0].0.id;
    let (status, body) = server.get_with(&format!("/ui/builds/{id}/files/report.txt"), &[("Cookie", &cookie)]);
    assert_eq!((status, body.as_str()), (200, "a regular file\n"));
    let (status, body) = server.get_with(&format!("/ui/builds/{id}/files/null"), &[("Cookie", &cookie)]);
    assert_eq!(status, 403, "a device node was served: {body}");
    assert!(body.contains("not a regular file"), "{body}");
}
