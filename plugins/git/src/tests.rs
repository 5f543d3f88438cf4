//! Unit tests: configuration, URL helpers, and local clones through the same
//! ABI object the server uses (the network transports are covered by the
//! end-to-end tests in `tests/tests/scm.rs`).

use std::path::Path;
use std::process::Command;

use vespene_plugin_api::serde_json::json;
use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
use vespene_plugin_api::{CheckoutResult, ScmContext};

use super::*;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository with `main` (one file) and `feature` (one more file), and
/// a second repository used as a submodule of `main` by a relative URL.
fn fixture(root: &Path) -> (String, String) {
    let lib = root.join("lib.git");
    std::fs::create_dir_all(&lib).unwrap();
    git(&lib, &["init", "-q"]);
    std::fs::write(lib.join("lib.txt"), "library\n").unwrap();
    git(&lib, &["add", "."]);
    git(&lib, &["commit", "-q", "-m", "lib"]);
    let lib_head = git(&lib, &["rev-parse", "HEAD"]);

    let repo = root.join("repo.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    std::fs::write(repo.join(".gitmodules"), "[submodule \"lib\"]\n\tpath = lib\n\turl = ../lib.git\n").unwrap();
    git(&repo, &["add", "README", ".gitmodules"]);
    git(&repo, &["update-index", "--add", "--cacheinfo", &format!("160000,{lib_head},lib")]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let main_head = git(&repo, &["rev-parse", "HEAD"]);
    git(&repo, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(repo.join("feature.txt"), "only on feature\n").unwrap();
    git(&repo, &["add", "feature.txt"]);
    Command::new("git")
        .args(["-c", "user.name=Bob", "-c", "user.email=bob@example.com", "commit", "-q", "-m", "feature work"])
        .current_dir(&repo)
        .status()
        .unwrap();
    git(&repo, &["checkout", "-q", "main"]);
    (format!("file://{}", repo.display()), main_head)
}

fn context(url: &str, work: &Path, branch: Option<&str>) -> ScmContext {
    let mut ctx = ScmContext {
        build: fake_build(),
        project: fake_project(),
        work_dir: work.display().to_string(),
        private_dir: work.parent().unwrap().display().to_string(),
        repo_url: url.into(),
        branch: branch.map(String::from),
        ..Default::default()
    };
    // The fixtures' submodules are local: allowed under any root here.
    ctx.extra.insert("local_repository_roots".into(), json!(["/"]));
    ctx
}

#[test]
fn local_submodules_outside_the_servers_roots_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (url, _) = fixture(root.path());
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let mut ctx = context(&url, &work, None);
    ctx.extra.insert("local_repository_roots".into(), json!([elsewhere.path().display().to_string()]));
    let err = checkout(json!({}), &ctx, &RecordingHost::new()).unwrap_err();
    let lib = root.path().join("lib.git");
    assert!(err.starts_with(&format!("git: submodule lib: local repository '{}' is outside", lib.display())), "{err}");
    assert!(!work.join("lib/lib.txt").exists());
    // A server that sends no roots allows no local submodule.
    let work2 = root.path().join("work2");
    std::fs::create_dir_all(&work2).unwrap();
    let mut ctx = context(&url, &work2, None);
    ctx.extra.clear();
    let err = checkout(json!({}), &ctx, &RecordingHost::new()).unwrap_err();
    assert!(err.contains("local_roots: none"), "{err}");
    assert!(local_allowed(&format!("file://{}/x/%2e%2e/y", root.path().display()), &[root.path().into()]).is_err());
    assert!(local_allowed(&format!("file://{}/x", root.path().display()), &[root.path().into()]).is_ok());
}

fn checkout(config: Value, ctx: &ScmContext, host: &RecordingHost) -> Result<CheckoutResult, String> {
    testkit::scm::<GitScm>(config)?.checkout(ctx, host)
}

#[test]
fn clones_the_default_branch_with_submodules_and_records_revision_and_committer() {
    let root = tempfile::tempdir().unwrap();
    let (url, head) = fixture(root.path());
    let work = root.path().join("build");
    std::fs::create_dir(&work).unwrap();
    let host = RecordingHost::new();

    let result = checkout(json!({}), &context(&url, &work, None), &host).unwrap();

    assert_eq!(result.revision.as_deref(), Some(head.as_str()));
    assert!(head.starts_with(result.short_revision.as_deref().unwrap()));
    assert_eq!(result.committer.as_deref(), Some("Ada"));
    assert_eq!(result.committer_email.as_deref(), Some("ada@example.com"));
    assert_eq!(std::fs::read_to_string(work.join("README")).unwrap(), "hello\n");
    assert!(!work.join("feature.txt").exists());
    assert_eq!(std::fs::read_to_string(work.join("lib/lib.txt")).unwrap(), "library\n");
    let messages = host.messages();
    assert!(messages[0].starts_with("git: cloning file://") && messages[0].contains("default branch"), "{messages:?}");
    assert!(messages.iter().any(|m| m.starts_with("git: updating submodule lib")), "{messages:?}");
}

#[test]
fn a_named_branch_is_cloned_alone() {
    let root = tempfile::tempdir().unwrap();
    let (url, _) = fixture(root.path());
    let work = root.path().join("build");
    std::fs::create_dir(&work).unwrap();
    let host = RecordingHost::new();

    let result = checkout(json!({"submodules": false}), &context(&url, &work, Some("feature")), &host).unwrap();

    assert_eq!(result.committer.as_deref(), Some("Bob"));
    assert_eq!(result.committer_email.as_deref(), Some("bob@example.com"));
    assert!(work.join("feature.txt").exists());
    assert!(!work.join("lib/lib.txt").exists(), "submodules were switched off");
    let remote_branches = git(&work, &["branch", "-r"]);
    assert_eq!(remote_branches, "origin/feature");
    assert_eq!(git(&work, &["rev-parse", "--abbrev-ref", "HEAD"]), "feature");
}

#[test]
fn a_missing_branch_and_a_missing_repository_are_named() {
    let root = tempfile::tempdir().unwrap();
    let (url, _) = fixture(root.path());
    let work = root.path().join("build");
    std::fs::create_dir(&work).unwrap();

    let err = checkout(json!({}), &context(&url, &work, Some("nope")), &RecordingHost::new()).unwrap_err();
    assert_eq!(err, format!("git: branch 'nope' does not exist in {url}"));

    let work2 = root.path().join("build2");
    std::fs::create_dir(&work2).unwrap();
    let err = checkout(json!({}), &context("file:///no/such/repo", &work2, None), &RecordingHost::new()).unwrap_err();
    assert!(err.starts_with("git: cloning file:///no/such/repo failed:"), "{err}");

    let err = checkout(json!({}), &context(&url, &work2, Some("bad..name")), &RecordingHost::new()).unwrap_err();
    assert_eq!(err, "git: 'bad..name' is not a valid branch name");
}

#[test]
fn a_stopped_build_clones_nothing() {
    let root = tempfile::tempdir().unwrap();
    let (url, _) = fixture(root.path());
    let work = root.path().join("build");
    std::fs::create_dir(&work).unwrap();
    let host = RecordingHost::new();
    host.cancel();
    let err = checkout(json!({}), &context(&url, &work, None), &host).unwrap_err();
    assert_eq!(err, "git: checkout stopped: the build was stopped or timed out");
    assert!(std::fs::read_dir(&work).unwrap().next().is_none());
}

#[test]
fn bad_configuration_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kh");
    std::fs::write(&file, "").unwrap();
    let cases = [
        (
            json!({"host_key_policy": "yes"}),
            "parameter 'host_key_policy' must be \"strict\" or \"accept-new\", not \"yes\"",
        ),
        (json!({"host_key_policy": "accept-new"}), "parameter 'known_hosts_store' is required with host_key_policy"),
        (json!({"known_hosts": "relative"}), "parameter 'known_hosts' must be an absolute path, not 'relative'"),
        (json!({"known_hosts": ["/no/such/file"]}), "parameter 'known_hosts': /no/such/file does not exist"),
        (json!({"timeout_seconds": 0}), "parameter 'timeout_seconds' must be a positive integer"),
        (json!({"depth": -1}), "parameter 'depth' must be a whole number"),
        (json!({"submodules": "yes"}), "parameter 'submodules' must be true or false"),
        (json!({"insecure": true}), "unknown parameter 'insecure' for scm plugin git"),
    ];
    for (config, expected) in cases {
        let err = testkit::scm::<GitScm>(config.clone()).err().unwrap();
        assert!(err.starts_with(expected), "{config}: {err}");
    }
    let ok = json!({
        "host_key_policy": "accept-new",
        "known_hosts": [file.display().to_string()],
        "known_hosts_store": format!("{}/store", dir.path().display()),
        "depth": 0,
    });
    testkit::scm::<GitScm>(ok).unwrap();
    testkit::scm::<GitScm>(json!({})).unwrap();
}

#[test]
fn url_helpers() {
    let e = |host: &str, port| Some(Endpoint { host: host.into(), port });
    assert_eq!(endpoint("ssh://git@127.0.0.1:2222/srv/repo.git"), e("127.0.0.1", 2222));
    assert_eq!(endpoint("ssh://example.com/repo"), e("example.com", 22));
    assert_eq!(endpoint("git@github.com:org/repo.git"), e("github.com", 22));
    assert_eq!(endpoint("git://127.0.0.1:9419/repo"), e("127.0.0.1", 9419));
    assert_eq!(endpoint("https://u:p@[::1]:8443/r"), e("::1", 8443));
    assert_eq!(endpoint("http://h/r"), e("h", 80));
    assert_eq!(endpoint("/srv/repo"), None);
    assert_eq!(endpoint("file:///srv/repo"), None);
    assert!(is_local("file:///srv/repo") && is_local("/srv/repo") && !is_local("git@h:r"));
    assert_eq!(redact("https://ada:s3cret@h:8080/r.git"), "https://ada:***@h:8080/r.git");
    assert_eq!(redact("https://ada@h/r.git"), "https://ada@h/r.git");
    assert_eq!(redact("git@h:r.git"), "git@h:r.git");
    assert_eq!(resolve_relative("file:///srv/a/repo.git", "../lib.git"), "file:///srv/a/lib.git");
    assert_eq!(resolve_relative("git://h:9418/repo.git/", "./sub"), "git://h:9418/repo.git/sub");
    assert_eq!(resolve_relative("ssh://git@h/org/repo", "../../other/x"), "ssh://git@h/other/x");
    assert_eq!(resolve_relative("git@h:org/repo.git", "../lib.git"), "git@h:org/lib.git");
    assert_eq!(resolve_relative("git@h:repo.git", "../lib.git"), "git@h:lib.git");
}
