//! Team safety, findings 1 and 5 of the security review: builds kept away
//! from the server and from each other. The real `vespene serve` with the
//! shipped `.so` files, an administrator and two ordinary users, A and B, who
//! drive everything over the REST API. Runs as root (as CI does), so sandboxed
//! builds get identities of their own, and sudo is real.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vespene::store::{BuildStatus, Store, WorkerPool};
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A sandbox laid out as a fresh install: the server creates its data
/// directory, and build roots go where the server puts them by default
/// (`<data_dir>-builds`). Its own directory is searchable, as `/var/lib` is.
fn fresh_install(extra_settings: &str) -> Sandbox {
    assert!(is_root(), "these tests run as root (as CI does): build identities and sudo need it");
    let mut sandbox = Sandbox::new();
    sandbox.fixed_build_root = false;
    std::fs::set_permissions(sandbox.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::remove_dir_all(sandbox.path("data")).unwrap();
    sandbox.settings(&format!(
        "plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 2\n{extra_settings}",
        bin_dir().display()
    ));
    std::fs::set_permissions(sandbox.path("settings.toml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    sandbox
}

/// The admin's store handle and clients for the ordinary users A and B.
async fn team(sandbox: &Sandbox, server: &Server) -> (Store, Client, Client) {
    let store = sandbox.store().await;
    user(&store, "alice", false, &[]).await;
    user(&store, "bob", false, &[]).await;
    (store, token_for(&server.addr, "alice"), token_for(&server.addr, "bob"))
}

fn pool_named(client: &Client, name: &str) -> Value {
    let pools = client.ok("GET", "/api/v1/worker_pools", None);
    let items = pools["results"].as_array().cloned().unwrap_or_default();
    items.into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("no pool '{name}' in {pools}"))
}

fn project(client: &Client, name: &str, pool: &Value, script: &str) -> i64 {
    let project = client.ok(
        "POST",
        "/api/v1/projects",
        Some(&json!({"name": name, "worker_pool_id": pool["id"], "script": script})),
    );
    project["id"].as_i64().unwrap()
}

fn start(client: &Client, project: i64) -> i64 {
    client.ok("POST", &format!("/api/v1/projects/{project}/start"), Some(&json!({})))["id"].as_i64().unwrap()
}

/// Whether a process whose command line contains `needle` runs on this machine.
fn running(needle: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
            .unwrap_or(false)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_1_an_ordinary_users_build_cannot_read_the_servers_key_database_settings_or_environment() {
    let sandbox = fresh_install("");
    let server = sandbox.serve();
    assert!(
        server.stdout_lines().iter().any(|l| l == "Created the worker pool 'default' (sandbox isolation)"),
        "{:?}",
        server.stdout_lines()
    );
    let (store, _alice, bob) = team(&sandbox, &server).await;
    let data = sandbox.path("data");
    assert_eq!(std::fs::metadata(&data).unwrap().mode() & 0o777, 0o700);
    let default = pool_named(&bob, "default");
    assert_eq!(default["isolation_method"], "sandbox");

    // Everything B's build tries to read or change of the server's.
    let targets = [
        data.join("secret.key"),
        data.join("vespene.db"),
        sandbox.path("settings.toml"),
        plugin_lib("ownership"),
        bin_dir().join("vespene"),
    ];
    let mut script = String::from("#!/bin/sh\n");
    for target in &targets {
        let t = target.display();
        script += &format!("if head -c1 '{t}' >/dev/null 2>&1; then echo 'READ {t}'; else echo 'hidden {t}'; fi\n");
    }
    script += &format!(
        "ls '{data}' >/dev/null 2>&1 && echo 'LISTED data' || echo 'hidden data'\n\
         echo \"server variables: $(env | grep -c '^VESPENE_')\"\n\
         echo \"uid: $(id -u)\"\n\
         touch /etc/planted 2>/dev/null && echo 'WROTE /etc' || echo 'read-only /etc'\n\
         touch '{planted}' 2>/dev/null\n\
         echo mine > \"$HOME/mine.txt\" && echo 'wrote own root'\n",
        data = data.display(),
        planted = sandbox.path("planted").display()
    );
    let project = project(&bob, "bobs-probe", &default, &script);
    let id = start(&bob, project);
    let build = finished(&store, id, Duration::from_secs(60)).await;
    let out = unstamped_output(&store, id).await;
    assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, id).await);

    let mut expected: Vec<String> = targets.iter().map(|t| format!("hidden {}", t.display())).collect();
    expected.push("hidden data".into());
    expected.push("server variables: 0".into());
    expected.push(format!("uid: {}", 1_000_000 + project));
    expected.push("read-only /etc".into());
    expected.push("wrote own root".into());
    assert_eq!(out, expected);
    // What it wrote outside its root stayed in its private /tmp.
    assert!(!sandbox.path("planted").exists() && !std::path::Path::new("/etc/planted").exists());
    // The key still decrypts what it did: nothing of the server's was touched.
    assert!(store.find_user("bob").await.unwrap().is_some_and(|u| !u.is_superuser));
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_1_a_sandboxed_build_streams_live_and_a_stop_kills_everything_inside() {
    let sandbox = fresh_install("");
    let server = sandbox.serve();
    let (store, _alice, bob) = team(&sandbox, &server).await;
    let default = pool_named(&bob, "default");
    // A daemon in a session of its own escapes a process-group kill. The
    // sleeps carry this run's pid, so nothing left by another run counts.
    let (daemon, foreground) =
        (format!("sleep 3131.{}", std::process::id()), format!("sleep 3132.{}", std::process::id()));
    let script = format!("#!/bin/sh\nsetsid {daemon} &\necho started\n{foreground}\n");
    let id = start(&bob, project(&bob, "bobs-daemon", &default, &script));

    wait_for(Duration::from_secs(60), "the first line, live", || async {
        let running = store.get_build(id).await.unwrap().unwrap().status == BuildStatus::Running;
        (running && unstamped_output(&store, id).await.contains(&"started".to_string())).then_some(())
    })
    .await;
    assert!(running(&daemon) && running(&foreground));

    bob.ok("POST", &format!("/api/v1/builds/{id}/stop"), None);
    let stopped_at = Instant::now();
    let build = finished(&store, id, Duration::from_secs(20)).await;
    assert_eq!(build.status, BuildStatus::Aborted);
    while running(&daemon) || running(&foreground) {
        assert!(stopped_at.elapsed() < Duration::from_secs(10), "a process of the stopped build survived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_1_a_pool_without_network_gives_its_builds_only_loopback() {
    let sandbox = fresh_install("");
    let server = sandbox.serve();
    let (store, _alice, bob) = team(&sandbox, &server).await;
    user(&store, "root-admin", true, &[]).await;
    let admin = token_for(&server.addr, "root-admin");
    let offline = admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({"name": "offline", "isolation_method": "sandbox", "network": false, "shared": true})),
    );
    assert_eq!(offline["network"], false);
    let script = "#!/bin/sh\ntail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '\n";
    let offline_build = start(&bob, project(&bob, "bobs-offline", &offline, script));
    let online_build = start(&bob, project(&bob, "bobs-online", &pool_named(&bob, "default"), script));

    finished(&store, offline_build, Duration::from_secs(60)).await;
    finished(&store, online_build, Duration::from_secs(60)).await;
    assert_eq!(unstamped_output(&store, offline_build).await, ["lo"]);
    let online = unstamped_output(&store, online_build).await;
    assert!(online.len() > 1, "the default pool keeps the network: {online:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_1_serve_warns_once_per_shell_pool_ordinary_users_may_use() {
    let sandbox = fresh_install("");
    sandbox.run(&["migrate"]);
    let store = sandbox.store().await;
    let alice = user(&store, "alice", false, &[]).await;
    let admin = user(&store, "root-admin", true, &[]).await;
    let pools = [
        ("shared-shell", "shell", true, None),
        ("alices-shell", "shell", false, Some(alice)),
        ("admins-shell", "shell", false, Some(admin)),
        ("unowned-shell", "shell", false, None),
        ("team", "sandbox", true, None),
    ];
    for (name, isolation, shared, created_by) in pools {
        let pool = WorkerPool {
            name: name.into(),
            isolation_method: isolation.into(),
            shared,
            created_by,
            ..Default::default()
        };
        store.create_worker_pool(&pool).await.unwrap();
    }
    let server = sandbox.serve();
    let warnings: Vec<String> = server.stdout_lines().into_iter().filter(|l| l.starts_with("warning:")).collect();
    let warning = |pool: &str| {
        format!(
            "warning: worker pool '{pool}' runs builds with 'shell' isolation, as the server's own user, and \
             ordinary users may use it: whoever starts a build there can read the server's key and database \
             (use 'sandbox')"
        )
    };
    assert_eq!(warnings, [warning("alices-shell"), warning("shared-shell")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_5_projects_cannot_read_each_others_build_roots_during_or_after_a_build() {
    let sandbox = fresh_install("");
    let server = sandbox.serve();
    let (store, alice, bob) = team(&sandbox, &server).await;
    let default = pool_named(&alice, "default");
    let roots = sandbox.path("data-builds");

    // A's build writes a secret into its root and stays running until stopped.
    let alice_project = project(
        &alice,
        "alices-build",
        &default,
        "#!/bin/sh\necho alice-secret > \"$HOME/secret.txt\"\necho \"uid $(id -u)\"\necho ready\nsleep 3141\n",
    );
    let alice_build = start(&alice, alice_project);
    wait_for(Duration::from_secs(60), "A's build to be ready", || async {
        unstamped_output(&store, alice_build).await.contains(&"ready".to_string()).then_some(())
    })
    .await;
    let alice_root = roots.join(alice_build.to_string());
    assert_eq!(alice_root, std::path::PathBuf::from(store.get_build(alice_build).await.unwrap().unwrap().working_dir));

    // B knows where A's root is and tries it, and lists the directory of all roots.
    let probe = format!(
        "#!/bin/sh\necho \"uid $(id -u)\"\ncat '{root}/secret.txt' 2>/dev/null || echo 'no secret'\n\
         echo \"roots: $(ls '{roots}' 2>&1 | tr '\\n' ' ')\"\n",
        root = alice_root.display(),
        roots = roots.display()
    );
    let bob_project = project(&bob, "bobs-probe", &default, &probe);
    let during = start(&bob, bob_project);
    finished(&store, during, Duration::from_secs(60)).await;
    let bob_uid = format!("uid {}", 1_000_000 + bob_project);
    // B sees its own root only.
    let only_own = |id: i64| format!("roots: {id} ");
    assert_eq!(unstamped_output(&store, during).await, [bob_uid.clone(), "no secret".into(), only_own(during)]);

    // A's build ends; its root is the server's again, closed.
    store.request_stop(alice_build).await.unwrap();
    finished(&store, alice_build, Duration::from_secs(20)).await;
    let alice_out = unstamped_output(&store, alice_build).await;
    assert_eq!(alice_out[0], format!("uid {}", 1_000_000 + alice_project));
    assert_ne!(alice_out[0], bob_uid, "each project has an identity of its own");
    let meta = std::fs::metadata(&alice_root).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
    assert_eq!(std::fs::metadata(alice_root.join("secret.txt")).unwrap().uid(), 0);
    let roots_mode = std::fs::metadata(&roots).unwrap().mode() & 0o777;
    assert_eq!(roots_mode, 0o711, "roots may be reached, never listed");

    let after = start(&bob, bob_project);
    finished(&store, after, Duration::from_secs(60)).await;
    assert_eq!(unstamped_output(&store, after).await, [bob_uid.clone(), "no secret".into(), only_own(after)]);

    // Served only to users who may view the build.
    let bob_session = session_from_login(&server.addr, "bob");
    let (status, _) = bob_session.call("GET", &format!("/ui/builds/{alice_build}/files/secret.txt"), None);
    assert!(status == 403 || status == 404, "B browsed A's build root: {status}");
    let alice_session = session_from_login(&server.addr, "alice");
    let (status, body) = alice_session.call("GET", &format!("/ui/builds/{alice_build}/files/secret.txt"), None);
    assert_eq!(status, 200);
    assert!(body.to_string().contains("alice-secret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn finding_5_sudo_works_with_the_default_layout_gives_projects_their_own_uids_and_closes_finished_roots() {
    let sandbox = fresh_install("[plugins.isolation.sudo]\nlibrary = \"sudo\"\nproject_uid_base = 2000000\n");
    let server = sandbox.serve();
    let (store, alice, bob) = team(&sandbox, &server).await;
    user(&store, "root-admin", true, &[]).await;
    let admin = token_for(&server.addr, "root-admin");
    let roots = sandbox.path("data-builds");

    // A pool with a named build user works with the default build_root.
    let named = admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({"name": "sudo-named", "isolation_method": "sudo", "sudo_user": "vespene-build", "shared": true})),
    );
    let id = start(&alice, project(&alice, "alices-sudo", &named, "#!/bin/sh\nid -un\necho a > mine.txt\n"));
    let build = finished(&store, id, Duration::from_secs(60)).await;
    assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, id).await);
    assert_eq!(unstamped_output(&store, id).await, ["vespene-build"]);
    let root = roots.join(id.to_string());
    let meta = std::fs::metadata(&root).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o700));
    let read = std::process::Command::new("sudo")
        .args(["-n", "-u", "vespene-build", "cat"])
        .arg(root.join("mine.txt"))
        .output()
        .unwrap();
    assert!(!read.status.success(), "the build user still reads a finished root");

    // A pool naming no user runs each project as a uid of its own, so B's
    // build cannot read A's root while A's build runs.
    let per_project = admin.ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&json!({"name": "sudo-projects", "isolation_method": "sudo", "shared": true})),
    );
    let alice_project = project(
        &alice,
        "alices-running",
        &per_project,
        "#!/bin/sh\necho alice-secret > secret.txt\nid -u\necho ready\nsleep 3151\n",
    );
    let alice_build = start(&alice, alice_project);
    wait_for(Duration::from_secs(60), "A's build to be ready", || async {
        unstamped_output(&store, alice_build).await.contains(&"ready".to_string()).then_some(())
    })
    .await;
    let probe = format!(
        "#!/bin/sh\nid -u\ncat '{}/secret.txt' 2>/dev/null || echo 'no secret'\n",
        roots.join(alice_build.to_string()).display()
    );
    let bob_project = project(&bob, "bobs-probe", &per_project, &probe);
    let bob_build = start(&bob, bob_project);
    finished(&store, bob_build, Duration::from_secs(60)).await;
    assert_eq!(
        unstamped_output(&store, bob_build).await,
        [(2_000_000 + bob_project).to_string(), "no secret".to_string()]
    );
    store.request_stop(alice_build).await.unwrap();
    finished(&store, alice_build, Duration::from_secs(20)).await;
    assert_eq!(unstamped_output(&store, alice_build).await[0], (2_000_000 + alice_project).to_string());
}
