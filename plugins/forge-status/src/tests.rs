use std::net::TcpListener;

use vespene_plugin_api::serde_json::{json, Value};
use vespene_plugin_api::testkit::{self, fake_trigger_context, serve_canned, RecordingHost, SeenRequest as Seen};
use vespene_plugin_api::TriggerContext;

use super::{repository_from_url, without_userinfo, Forge, ForgeStatus};

const TOKEN: &str = "forge-SECRET-token-123";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// A context for `hook` of a project cloned from `repo_url`, at [`SHA`], with a login and a link.
fn context(hook: &str, status: &str, repo_url: &str) -> TriggerContext {
    let mut ctx = fake_trigger_context(hook);
    ctx.build.status = status.into();
    ctx.build.revision = Some(SHA.into());
    ctx.project.repo_url = Some(repo_url.into());
    ctx.project.repo_branch = Some("main".into());
    ctx.extra.insert("login".into(), json!({"username": "ci", "password": format!("plain:{TOKEN}")}));
    ctx.extra.insert("build_url".into(), json!("https://ci.example.com/ui/builds/42"));
    ctx
}

fn execute(config: &Value, ctx: &TriggerContext, host: &RecordingHost) -> Result<(), String> {
    testkit::trigger::<ForgeStatus>(config.clone())?.execute(ctx, host)
}

#[test]
fn github_gets_pending_success_and_failure_with_a_bearer_token() {
    let (base, server) = serve_canned(vec![(201, "{}"), (201, "{}"), (201, "{}"), (201, "{}")]);
    let cfg = json!({"forge": "github", "api_url": format!("{base}/")});
    let url = "https://github.com/acme/widget.git";
    let mut failed = context("failure", "FAILURE", url);
    failed.build.return_code = Some(2);
    let host = RecordingHost::new();
    for ctx in [context("pre", "RUNNING", url), context("success", "SUCCESS", url), failed, {
        context("failure", "ABORTED", url)
    }] {
        execute(&cfg, &ctx, &host).unwrap();
    }
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 4);
    for request in &seen {
        assert_eq!(request.request_line, format!("POST /repos/acme/widget/statuses/{SHA} HTTP/1.1"));
        assert_eq!(request.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert_eq!(request.header("accept"), Some("application/vnd.github+json"));
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let bodies: Vec<Value> = seen.iter().map(Seen::json).collect();
    let link = "https://ci.example.com/ui/builds/42";
    assert_eq!(
        bodies,
        [
            json!({"state": "pending", "description": "Build 42 is running", "context": "vespene/demo", "target_url": link}),
            json!({"state": "success", "description": "Build 42 succeeded", "context": "vespene/demo", "target_url": link}),
            json!({"state": "failure", "description": "Build 42 failed (exit code 2)", "context": "vespene/demo", "target_url": link}),
            json!({"state": "error", "description": "Build 42 was stopped", "context": "vespene/demo", "target_url": link}),
        ]
    );
    let short = &SHA[..12];
    assert_eq!(
        host.messages(),
        [
            format!("forge_status: github status 'pending' posted for acme/widget@{short}"),
            format!("forge_status: github status 'success' posted for acme/widget@{short}"),
            format!("forge_status: github status 'failure' posted for acme/widget@{short}"),
            format!("forge_status: github status 'error' posted for acme/widget@{short}"),
        ]
    );
}

#[test]
fn gitea_gets_its_api_path_and_a_token_header() {
    let (base, server) = serve_canned(vec![(201, "{}")]);
    let cfg = json!({"forge": "gitea", "api_url": base, "context": "ci/{project}/unit"});
    let host = RecordingHost::new();
    execute(&cfg, &context("failure", "FAILURE", "git@gitea.example.com:team/app.git"), &host).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(seen[0].request_line, format!("POST /api/v1/repos/team/app/statuses/{SHA} HTTP/1.1"));
    assert_eq!(seen[0].header("authorization"), Some(format!("token {TOKEN}").as_str()));
    assert_eq!(seen[0].json()["state"], "failure");
    assert_eq!(seen[0].json()["context"], "ci/demo/unit");
}

#[test]
fn gitlab_gets_an_encoded_project_path_its_own_states_and_a_private_token() {
    let (base, server) = serve_canned(vec![(201, "{}"), (201, "{}"), (201, "{}")]);
    let cfg = json!({"forge": "gitlab", "api_url": base});
    let url = "https://gitlab.example.com/group/sub/app.git";
    let host = RecordingHost::new();
    for ctx in [context("pre", "RUNNING", url), context("failure", "FAILURE", url), context("failure", "ABORTED", url)]
    {
        execute(&cfg, &ctx, &host).unwrap();
    }
    let seen = server.join().unwrap();
    for request in &seen {
        assert_eq!(request.request_line, format!("POST /api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA} HTTP/1.1"));
        assert_eq!(request.header("private-token"), Some(TOKEN));
        assert_eq!(request.header("authorization"), None);
    }
    let states: Vec<Value> = seen.iter().map(|s| s.json()["state"].clone()).collect();
    assert_eq!(states, [json!("pending"), json!("failed"), json!("canceled")]);
    assert_eq!(seen[0].json()["name"], "vespene/demo");
    assert_eq!(seen[0].json()["ref"], "main");
    assert_eq!(seen[0].json().get("context"), None);
}

#[test]
fn the_project_variable_names_the_repository_but_a_launch_answer_cannot() {
    let (base, server) = serve_canned(vec![(201, "{}"), (201, "{}")]);
    let cfg = json!({"forge": "gitlab", "api_url": base});
    let mut ctx = context("success", "SUCCESS", "file:///srv/git/app.git");
    ctx.build.variables = json!({"forge_status_repository": "1234"});
    execute(&cfg, &ctx, &RecordingHost::new()).unwrap();
    // The same value as a launch answer is ignored: the URL decides.
    let mut ctx = context("success", "SUCCESS", "https://gitlab.example.com/team/app");
    ctx.build.variables = json!({"forge_status_repository": "other/place"});
    ctx.build.launch_answers = json!({"forge_status_repository": "other/place"});
    execute(&cfg, &ctx, &RecordingHost::new()).unwrap();
    let seen = server.join().unwrap();
    assert_eq!(seen[0].request_line, format!("POST /api/v4/projects/1234/statuses/{SHA} HTTP/1.1"));
    assert_eq!(seen[1].request_line, format!("POST /api/v4/projects/team%2Fapp/statuses/{SHA} HTTP/1.1"));
}

#[test]
fn without_a_public_url_the_status_has_no_link_and_the_log_says_why() {
    let (base, server) = serve_canned(vec![(201, "{}")]);
    let mut ctx = context("success", "SUCCESS", "https://github.com/acme/widget");
    ctx.extra.remove("build_url");
    let host = RecordingHost::new();
    execute(&json!({"forge": "github", "api_url": base}), &ctx, &host).unwrap();
    assert_eq!(server.join().unwrap()[0].json().get("target_url"), None);
    assert!(host.messages()[0].ends_with("(no link: [server] public_url is not set)"), "{:?}", host.messages());
}

#[test]
fn no_repository_or_revision_posts_nothing_and_says_so() {
    let cfg = json!({"forge": "github", "api_url": "http://127.0.0.1:9"});
    let mut ctx = context("pre", "RUNNING", "");
    ctx.project.repo_url = None;
    let host = RecordingHost::new();
    execute(&cfg, &ctx, &host).unwrap();
    let mut ctx = context("failure", "FAILURE", "https://github.com/acme/widget");
    ctx.build.revision = None;
    execute(&cfg, &ctx, &host).unwrap();
    assert_eq!(
        host.messages(),
        [
            "forge_status: project 'demo' has no repository: no commit status posted",
            "forge_status: build 42 has no checked-out revision: no commit status posted",
        ]
    );
}

#[test]
fn a_missing_login_or_password_fails_naming_the_project() {
    let cfg = json!({"forge": "github", "api_url": "http://127.0.0.1:9"});
    let mut ctx = context("pre", "RUNNING", "https://github.com/acme/widget");
    ctx.extra.remove("login");
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert_eq!(
        err,
        "forge_status: project 'demo' has no service login: attach one whose password is the forge's access token"
    );
    ctx.extra.insert("login".into(), json!({"username": "ci", "password": null}));
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert_eq!(
        err,
        "forge_status: service login 'ci' of project 'demo' has no password: set it to the forge's access token"
    );
    ctx.extra.insert("login".into(), json!({"username": "ci", "password": "plain:two words"}));
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert!(err.contains("is not a token"), "{err}");
    assert!(!err.contains("two words"), "{err}");
}

#[test]
fn forge_errors_are_named_without_the_token() {
    let echo: &'static str = Box::leak(format!("{{\"message\": \"Bad credentials {TOKEN}\"}}").into_boxed_str());
    let (base, server) = serve_canned(vec![(401, echo), (404, "")]);
    let cfg = json!({"forge": "github", "api_url": base});
    let ctx = context("success", "SUCCESS", "https://github.com/acme/widget");
    let errors: Vec<String> = (0..2).map(|_| execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err()).collect();
    server.join().unwrap();
    let target = format!("acme/widget@{}", &SHA[..12]);
    assert_eq!(
        errors[0],
        format!(
            "forge_status: github answered HTTP 401 Unauthorized for the status of {target}: \
             {{\"message\": \"Bad credentials <token>\"}}"
        )
    );
    assert_eq!(errors[1], format!("forge_status: github answered HTTP 404 Not Found for the status of {target}"));
}

#[test]
fn a_network_error_names_the_url_not_the_token() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cfg = json!({"forge": "gitea", "api_url": format!("http://{addr}")});
    let ctx = context("pre", "RUNNING", "https://gitea.example.com/team/app");
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert!(
        err.starts_with(&format!("forge_status: cannot post to http://{addr}/api/v1/repos/team/app/statuses/{SHA}: ")),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
}

#[test]
fn bad_repositories_and_revisions_are_refused_by_name() {
    let cfg = json!({"forge": "github", "api_url": "http://127.0.0.1:9"});
    let mut ctx = context("pre", "RUNNING", "https://github.com/acme/widget");
    ctx.build.revision = Some("r1234".into());
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert_eq!(err, "forge_status: revision 'r1234' is not a git commit id (7 to 64 hex digits)");

    let mut ctx = context("pre", "RUNNING", "https://github.com/acme/widget");
    ctx.build.variables = json!({"forge_status_repository": "acme/../../admin"});
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert_eq!(
        err,
        "forge_status: the variable forge_status_repository: 'acme/../../admin' is not owner/repo of letters, digits, '.', '-' and '_'"
    );
    ctx.build.variables = json!({"forge_status_repository": 5});
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert_eq!(err, "forge_status: the variable forge_status_repository must be a string, not 5");

    let ctx = context("pre", "RUNNING", "file:///srv/git/app.git");
    let err = execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err();
    assert_eq!(
        err,
        "forge_status: cannot tell the github repository from 'file:///srv/git/app.git' (a file:// URL names no forge): \
         set the project variable forge_status_repository"
    );
}

#[test]
fn repositories_come_from_every_usual_url_shape() {
    let cases = [
        (Forge::GitHub, "https://github.com/acme/widget.git", "acme/widget"),
        (Forge::GitHub, "https://user:pw@github.com/acme/widget/", "acme/widget"),
        (Forge::GitHub, "git@github.com:acme/widget.git", "acme/widget"),
        (Forge::Gitea, "ssh://git@gitea.example.com:2222/team/app.git", "team/app"),
        (Forge::Gitea, "https://example.com/gitea/team/app", "team/app"),
        (Forge::Gitea, "git://127.0.0.1:9418/team/app.git", "team/app"),
        (Forge::GitLab, "https://gitlab.com/group/sub/app.git", "group/sub/app"),
        (Forge::GitLab, "git@gitlab.com:group/app.git", "group/app"),
    ];
    for (forge, url, expected) in cases {
        assert_eq!(repository_from_url(forge, url).as_deref(), Ok(expected), "{url}");
    }
    for url in ["/srv/git/app.git", "https://github.com/widget", "https://github.com/"] {
        assert!(repository_from_url(Forge::GitHub, url).is_err(), "{url}");
    }
    // A password in the URL never reaches an error.
    let err = repository_from_url(Forge::GitHub, "https://u:hunter2@github.com/only").unwrap_err();
    assert!(err.contains("'https://github.com/only'") && !err.contains("hunter2"), "{err}");
    assert_eq!(without_userinfo("https://u:p@h/x"), "https://h/x");
}

#[test]
fn bad_configuration_is_named() {
    let cases = [
        (json!({}), "parameter 'forge' (github, gitea or gitlab) is required"),
        (json!({"forge": "bitbucket"}), "parameter 'forge' must be github, gitea or gitlab, not 'bitbucket'"),
        (json!({"forge": 1}), "parameter 'forge' must be a string: github, gitea or gitlab"),
        (json!({"forge": "gitea"}), "parameter 'api_url' is required for forge gitea"),
        (
            json!({"forge": "github", "api_url": "ftp://x"}),
            "parameter 'api_url' must be an http:// or https:// URL without credentials, query or fragment, not 'ftp://x'",
        ),
        (
            json!({"forge": "github", "api_url": "https://u:p@x"}),
            "parameter 'api_url' must be an http:// or https:// URL without credentials, query or fragment, not 'https://u:p@x'",
        ),
        (json!({"forge": "github", "api_url": 3}), "parameter 'api_url' must be a string"),
        (json!({"forge": "github", "context": ""}), "parameter 'context' must be a non-empty string without control characters"),
        (json!({"forge": "github", "token": "x"}), "unknown parameter 'token' for trigger plugin forge_status"),
    ];
    for (config, expected) in cases {
        assert_eq!(testkit::trigger::<ForgeStatus>(config.clone()).err().unwrap(), expected, "{config}");
    }
    // The defaults need nothing but the forge.
    testkit::trigger::<ForgeStatus>(json!({"forge": "github"})).unwrap();
    testkit::trigger::<ForgeStatus>(json!({"forge": "gitlab"})).unwrap();
}

#[test]
fn an_unknown_hook_is_an_error() {
    let cfg = json!({"forge": "github", "api_url": "http://127.0.0.1:9"});
    let err = execute(&cfg, &context("post", "SUCCESS", "https://github.com/a/b"), &RecordingHost::new()).unwrap_err();
    assert_eq!(err, "forge_status: unknown hook 'post' (expected pre, success or failure)");
}
