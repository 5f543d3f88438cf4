//! Authentication plugins, end to end: the real `vespene` binary with the real
//! `ldap` plugin (`libvespene_ldap.so`) against a real OpenLDAP server
//! (`scripts/start-slapd`, which sets `VESPENE_TEST_LDAP_URL`; the directory it
//! loads is described there). A local administrator and two ordinary
//! directory users, alice and bob; carol is in the directory's `ci-admins`,
//! dave and admin are directory users named like local accounts.
//!
//! The tests named `threat_...` are rows of docs/security.md ("Logins from a
//! directory").

use std::io::{Read, Write};

use serde_json::{json, Value};
use vespene_e2e::api_client::Client;
use vespene_e2e::*;

const BASE: &str = "dc=vespene,dc=test";

/// The URL of the test directory, or `None` after saying it is missing.
fn ldap_url(test: &str) -> Option<String> {
    match std::env::var("VESPENE_TEST_LDAP_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            missing_service(test, "VESPENE_TEST_LDAP_URL is not set (eval \"$(scripts/start-slapd)\" sets it)");
            None
        }
    }
}

/// The `ldap` entry for `url`, with the test directory's layout and group map.
fn ldap_entry(url: &str, extra: &str) -> String {
    format!(
        r#"
[plugins.authentication.ldap]
library = "ldap"
url = "{url}"
base_dn = "ou=people,{BASE}"
group_base_dn = "ou=groups,{BASE}"
bind_dn = "cn=vespene,ou=services,{BASE}"
bind_password = "vespene-search-password"
group_map = {{ developers = "dev", testers = "qa", everyone = "staff" }}
superuser_groups = ["ci-admins"]
timeout_seconds = 3
{extra}
"#
    )
}

fn settings(url: &str, extra: &str, top: &str) -> String {
    format!("plugin_path = [\"{}\"]\n{top}\n{}", bin_dir().display(), ldap_entry(url, extra))
}

/// The password the test directory gives `uid`.
fn directory_password(uid: &str) -> String {
    format!("{uid}-ldap-password")
}

/// Posts a login: (status, body, a session client when it succeeded).
fn login(addr: &str, username: &str, password: &str) -> (u16, Value, Option<Client>) {
    let body = json!({"username": username, "password": password}).to_string();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let json_text = rest.lines().find(|l| l.starts_with('{')).unwrap_or(rest);
    let value: Value = serde_json::from_str(json_text).unwrap_or(Value::String(rest.to_string()));
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .map(|l| l.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string());
    let client = cookie.filter(|_| status == 200).map(|cookie| Client {
        addr: addr.into(),
        token: None,
        cookie: Some(cookie),
        csrf: value["csrf_token"].as_str().map(str::to_string),
    });
    (status, value, client)
}

/// Logs in and answers the session, failing the test otherwise.
fn session(addr: &str, username: &str, password: &str) -> Client {
    let (status, body, client) = login(addr, username, password);
    assert_eq!(status, 200, "login of {username}: {body}");
    client.unwrap()
}

/// A running server with the local administrator's session.
struct Setup {
    sandbox: Sandbox,
    server: Server,
    admin: Client,
    admin_password: String,
}

fn start(settings: &str) -> Setup {
    start_on(Sandbox::new(), settings)
}

/// [`start`] on a fresh database of `db`; `None` when PostgreSQL is wanted and missing.
async fn start_with(db: Db, test: &str, settings: &str) -> Option<Setup> {
    let mut sandbox = Sandbox::new();
    sandbox.use_database(db, test).await?;
    Some(start_on(sandbox, settings))
}

fn start_on(sandbox: Sandbox, settings: &str) -> Setup {
    sandbox.settings(settings);
    let server = sandbox.serve_logged();
    let admin_password = server.admin_password().expect("the first start prints the administrator's password");
    let admin = session(&server.addr, "admin", &admin_password);
    Setup { sandbox, server, admin, admin_password }
}

impl Setup {
    /// A user's full record, as the administrator reads it.
    fn user(&self, username: &str) -> Value {
        let page = self.admin.ok("GET", &format!("/api/v1/users?username={username}"), None);
        page["results"][0].clone()
    }

    /// The names of a user's groups.
    fn groups_of(&self, username: &str) -> Vec<String> {
        let user = self.user(username);
        let groups = self.admin.ok("GET", "/api/v1/groups?limit=500", None);
        let ids: Vec<i64> = user["group_ids"].as_array().unwrap().iter().filter_map(Value::as_i64).collect();
        let mut names: Vec<String> = groups["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| ids.contains(&g["id"].as_i64().unwrap()))
            .map(|g| g["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    /// The audit log, newest first.
    fn audit(&self, action: &str) -> Vec<Value> {
        let page = self.admin.ok("GET", &format!("/api/v1/audit?limit=500&action={action}"), None);
        page["results"].as_array().unwrap().clone()
    }

    /// Restarts the server with other settings, on the same data.
    fn restart(&mut self, settings: &str) {
        self.sandbox.settings(settings);
        let old = std::mem::replace(&mut self.server, self.sandbox.serve_logged());
        drop(old);
        self.admin = session(&self.server.addr, "admin", &self.admin_password);
    }
}

#[test]
fn a_directory_user_logs_in_is_created_with_mapped_groups_and_the_login_is_audited() {
    let Some(url) = ldap_url("a_directory_user_logs_in") else { return };
    let t = start(&settings(&url, "", ""));

    let alice = session(&t.server.addr, "alice", &directory_password("alice"));
    let me = alice.ok("GET", "/api/v1/me", None);
    assert_eq!(me["user"]["username"], "alice", "{me}");

    let record = t.user("alice");
    assert_eq!(record["auth_source"], "ldap", "{record}");
    assert_eq!(record["is_superuser"], false);
    assert_eq!(record["email"], "alice@ldap.vespene.test");
    assert_eq!((&record["first_name"], &record["last_name"]), (&json!("Alice"), &json!("Liddell")));
    // developers -> dev, everyone -> staff; ci-admins and unmapped groups give nothing.
    assert_eq!(t.groups_of("alice"), ["dev", "staff"]);
    // bob: developers and testers.
    session(&t.server.addr, "bob", &directory_password("bob"));
    assert_eq!(t.groups_of("bob"), ["dev", "qa", "staff"]);
    // A second login finds the same account.
    session(&t.server.addr, "alice", &directory_password("alice"));
    let users = t.admin.ok("GET", "/api/v1/users?username=alice", None);
    assert_eq!(users["results"].as_array().unwrap().len(), 1);

    let logins = t.audit("login");
    let alices = logins.iter().filter(|e| e["actor"] == "alice").collect::<Vec<_>>();
    assert_eq!(alices.len(), 2, "{logins:?}");
    assert_eq!(alices[0]["details"], json!({"via": "api", "source": "ldap"}));
    assert_eq!(alices[0]["remote_addr"], "127.0.0.1");
    let admin_login = logins.iter().find(|e| e["actor"] == "admin").expect("the admin's login");
    assert_eq!(admin_login["details"]["source"], "local");

    // Nothing of the passwords in the audit log or the server's log.
    let everything = t.admin.ok("GET", "/api/v1/audit?limit=500", None).to_string();
    let log = t.sandbox.server_log();
    for secret in [directory_password("alice"), directory_password("bob"), "vespene-search-password".into()] {
        assert!(!everything.contains(&secret) && !log.contains(&secret), "{secret} leaked");
    }
}

#[test]
fn a_directory_user_logs_in_through_the_web_form() {
    let Some(url) = ldap_url("a_directory_user_logs_in_through_the_web_form") else { return };
    let t = start(&settings(&url, "", ""));
    // The form's CSRF token comes with the page, in the form and in a cookie.
    let mut stream = std::net::TcpStream::connect(&t.server.addr).unwrap();
    write!(stream, "GET /login HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let cookie_line = response.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).unwrap();
    let cookie = cookie_line.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string();
    let token = response.split("name=\"csrf_token\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let post = |password: &str| {
        let body = format!("username=bob&password={password}&next=%2F&csrf_token={token}");
        http_request(
            &t.server.addr,
            "POST",
            "/login",
            &[("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", &cookie)],
            &body,
        )
    };
    let (status, body) = post("not-bobs-password");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Wrong username or password."), "{body}");
    let (status, body) = post(&directory_password("bob"));
    assert_eq!(status, 303, "{body}");
    let ui_login = t.audit("login").into_iter().find(|e| e["actor"] == "bob").expect("bob's login");
    assert_eq!(ui_login["details"], json!({"via": "ui", "source": "ldap"}));
    // The users page says whose password the directory checks.
    let cookie = t.admin.cookie.clone().unwrap();
    let (status, page) = t.server.get_with("/ui/users", &[("Cookie", &cookie)]);
    assert_eq!(status, 200, "{page}");
    let bob_row =
        page.split("<tr").find(|row| row.contains(">bob<")).unwrap_or_else(|| panic!("no row for bob: {page}"));
    assert!(page.contains("Password checked by") && bob_row.contains("ldap"), "{bob_row}");
}

#[test]
fn threat_a_wrong_directory_password_or_an_unknown_user_is_refused_and_audited() {
    let Some(url) = ldap_url("threat_a_wrong_directory_password") else { return };
    let t = start(&settings(&url, "", ""));
    for (username, password) in
        [("alice", "not-alices-password"), ("alice", "bob-ldap-password"), ("nobody", "nobody-ldap-password")]
    {
        let (status, body, _) = login(&t.server.addr, username, password);
        assert_eq!((status, body["error"].as_str()), (401, Some("wrong username or password")), "{username}: {body}");
    }
    // No account was made for the failures.
    assert!(t.admin.ok("GET", "/api/v1/users?username=alice", None)["results"].as_array().unwrap().is_empty());
    let failed = t.audit("login_failed");
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed.iter().all(|e| e["details"]["reason"] == "wrong username or password"), "{failed:?}");
    assert!(!t.sandbox.server_log().contains("not-alices-password"));
}

#[test]
fn threat_an_empty_password_never_logs_a_directory_user_in() {
    // LDAP takes a simple bind with an empty password as an anonymous bind, which succeeds.
    let Some(url) = ldap_url("threat_an_empty_password") else { return };
    let t = start(&settings(&url, "", ""));
    let (status, body, _) = login(&t.server.addr, "alice", "");
    assert_eq!(status, 401, "{body}");

    // The plugin refuses it too, asked directly through the real library.
    let verdict = ask_the_library(&url, "alice", "");
    assert_eq!(verdict, Ok(json!({"outcome": "rejected", "reason": "empty password"})));
}

#[test]
fn threat_ldap_filter_injection_in_the_username_finds_nobody() {
    let Some(url) = ldap_url("threat_ldap_filter_injection") else { return };
    let t = start(&settings(&url, "", ""));
    for username in ["*)(uid=*", "*", "alice)(|(uid=*", "al*"] {
        let (status, body, _) = login(&t.server.addr, username, &directory_password("alice"));
        assert_eq!(status, 401, "{username}: {body}");
        // The plugin itself escapes: asked directly, the literal name matches no entry.
        assert_eq!(
            ask_the_library(&url, username, &directory_password("alice")),
            Ok(json!({"outcome": "rejected", "reason": "no such user in the directory"})),
            "{username}"
        );
    }
    assert!(t.admin.ok("GET", "/api/v1/users?username=alice", None)["results"].as_array().unwrap().is_empty());
}

/// Asks the built `libvespene_ldap.so` directly, through the same ABI the server uses.
fn ask_the_library(url: &str, username: &str, password: &str) -> Result<Value, String> {
    use vespene_plugin_api::abi_stable::std_types::RStr;
    let library = vespene::plugins::open(&plugin_lib("ldap")).expect("the ldap plugin opens");
    let constructor = library.module.new_authentication().flatten().expect("it provides authentication");
    let params = json!({"url": url, "base_dn": format!("ou=people,{BASE}"), "timeout_seconds": 3}).to_string();
    let plugin = constructor(RStr::from(params.as_str())).into_result().map_err(String::from)?;
    let request = json!({"username": username}).to_string();
    let answer = plugin.authenticate(RStr::from(request.as_str()), RStr::from(password)).into_result();
    answer.map(|a| serde_json::from_str(a.as_str()).unwrap()).map_err(String::from)
}

#[test]
fn threat_directory_users_get_no_superuser_unless_mapped() {
    let Some(url) = ldap_url("threat_directory_users_get_no_superuser") else { return };
    let t = start(&settings(&url, "", ""));
    let alice = session(&t.server.addr, "alice", &directory_password("alice"));
    assert_eq!(alice.call("GET", "/api/v1/audit", None).0, 403, "alice reads the audit log");
    assert_eq!(t.user("alice")["is_superuser"], false);

    let carol = session(&t.server.addr, "carol", &directory_password("carol"));
    assert_eq!(t.user("carol")["is_superuser"], true, "carol is in ci-admins, a superuser group");
    carol.ok("GET", "/api/v1/audit", None);

    // Mapped superuser is synced at every login: without the mapping, carol is an ordinary user again.
    let mut t = t;
    let unmapped = settings(&url, "", "").replace("superuser_groups = [\"ci-admins\"]", "");
    t.restart(&unmapped);
    let carol = session(&t.server.addr, "carol", &directory_password("carol"));
    assert_eq!(t.user("carol")["is_superuser"], false);
    assert_eq!(carol.call("GET", "/api/v1/audit", None).0, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_synced_and_only_the_plugins_memberships_are_taken_away_sqlite() {
    groups_are_synced(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_synced_and_only_the_plugins_memberships_are_taken_away_postgres() {
    groups_are_synced(Db::Postgres).await;
}

async fn groups_are_synced(db: Db) {
    let test = format!("groups_are_synced on {db:?}");
    let Some(url) = ldap_url(&test) else { return };
    let Some(mut t) = start_with(db, "groups_are_synced", &settings(&url, "", "")).await else { return };
    session(&t.server.addr, "bob", &directory_password("bob"));
    assert_eq!(t.groups_of("bob"), ["dev", "qa", "staff"]);

    // The administrator adds bob to a group of their own, and to `release`,
    // which the directory will map later.
    let manual = t.admin.ok("POST", "/api/v1/groups", Some(&json!({"name": "manual"})))["id"].as_i64().unwrap();
    let release = t.admin.ok("POST", "/api/v1/groups", Some(&json!({"name": "release"})))["id"].as_i64().unwrap();
    let bob = t.user("bob");
    let mut ids: Vec<Value> = bob["group_ids"].as_array().unwrap().clone();
    ids.extend([json!(manual), json!(release)]);
    t.admin.ok("PATCH", &format!("/api/v1/users/{}", bob["id"]), Some(&json!({"group_ids": ids})));
    session(&t.server.addr, "bob", &directory_password("bob"));
    assert_eq!(t.groups_of("bob"), ["dev", "manual", "qa", "release", "staff"], "a login keeps the admin's groups");

    // The directory stops naming testers (qa) and starts naming release.
    let remapped = settings(&url, "", "")
        .replace("testers = \"qa\"", "testers = \"release\"")
        .replace("everyone = \"staff\"", "everyone = \"everybody\"");
    t.restart(&remapped);
    session(&t.server.addr, "bob", &directory_password("bob"));
    // qa and staff came from the plugin and are gone; release stays (the
    // admin's membership); manual stays; everybody is created and joined.
    assert_eq!(t.groups_of("bob"), ["dev", "everybody", "manual", "release"]);
    // Groups themselves are never deleted.
    let groups = t.admin.ok("GET", "/api/v1/groups?limit=500", None).to_string();
    assert!(groups.contains("\"qa\"") && groups.contains("\"staff\""), "{groups}");

    // The mapping to release goes away again: bob keeps it, the admin gave it.
    t.restart(&settings(&url, "", ""));
    session(&t.server.addr, "bob", &directory_password("bob"));
    assert_eq!(t.groups_of("bob"), ["dev", "manual", "qa", "release", "staff"]);
}

#[test]
fn threat_ldap_down_is_a_clear_error_and_the_local_admin_still_logs_in() {
    let Some(url) = ldap_url("threat_ldap_down") else { return };
    // First with the directory up: alice's account exists.
    let mut t = start(&settings(&url, "", "[authentication]\norder = [\"ldap\", \"local\"]"));
    session(&t.server.addr, "alice", &directory_password("alice"));

    // Then down (nothing listens on the port), and asked first.
    let dead = format!("ldap://127.0.0.1:{}", servers::free_port());
    t.restart(&settings(&dead, "", "[authentication]\norder = [\"ldap\", \"local\"]"));
    let (status, body, _) = login(&t.server.addr, "alice", &directory_password("alice"));
    assert_eq!(status, 503, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("the authentication source 'ldap' is unavailable"), "{message}");
    assert!(message.ends_with("; local accounts can still log in"), "{message}");
    let log = t.sandbox.server_log();
    let line = log
        .lines()
        .find(|l| l.contains("authentication source 'ldap' is unavailable"))
        .unwrap_or_else(|| panic!("no log line about the directory:\n{log}"));
    assert!(line.contains(&format!("cannot reach the LDAP directory at {dead}")), "{line}");
    assert!(!log.contains(&directory_password("alice")), "the password is in the log");
    let failed = t.audit("login_failed");
    assert_eq!(failed[0]["details"]["reason"], "authentication source unavailable: 'ldap'", "{failed:?}");

    // The local administrator logs in all the same (restart() did, and again here).
    let (status, body, _) = login(&t.server.addr, "admin", &t.admin_password);
    assert_eq!(status, 200, "{body}");
    // A wrong local password is still just wrong: the directory is not asked for a local account.
    let (status, body, _) = login(&t.server.addr, "admin", "not-the-admin-password");
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn threat_a_local_account_is_not_taken_over_by_a_directory_user_of_the_same_name_sqlite() {
    not_taken_over(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn threat_a_local_account_is_not_taken_over_by_a_directory_user_of_the_same_name_postgres() {
    not_taken_over(Db::Postgres).await;
}

async fn not_taken_over(db: Db) {
    let Some(url) = ldap_url(&format!("threat_a_local_account_is_not_taken_over on {db:?}")) else { return };
    for order in ["", "[authentication]\norder = [\"ldap\", \"local\"]"] {
        let Some(t) = start_with(db, "not_taken_over", &settings(&url, "", order)).await else { return };
        // A local dave, an ordinary user.
        let dave =
            t.admin.ok("POST", "/api/v1/users", Some(&json!({"username": "dave", "password": "local-dave-password"})));
        for (username, password) in [("dave", directory_password("dave")), ("admin", directory_password("admin"))] {
            let (status, body, _) = login(&t.server.addr, username, &password);
            assert_eq!(status, 401, "{order}: the directory's {username} logged into the local account: {body}");
        }
        // The local accounts are unchanged and their own passwords work.
        let record = t.user("dave");
        assert_eq!((&record["auth_source"], &record["id"]), (&json!("local"), &dave["id"]));
        assert!(record["group_ids"].as_array().unwrap().is_empty(), "{record}");
        assert_eq!(record["email"], "", "nothing synced from the directory");
        session(&t.server.addr, "dave", "local-dave-password");
        session(&t.server.addr, "admin", &t.admin_password);
        assert_eq!(t.user("admin")["is_superuser"], true);
        // The directory was never even asked about the local names (it would
        // have accepted them, and the store refused the takeover).
        let log = t.sandbox.server_log();
        assert!(!log.contains("not taken over"), "a local account's password went to the directory:\n{log}");
    }
}

#[test]
fn threat_a_directory_account_has_no_local_password() {
    let Some(url) = ldap_url("threat_a_directory_account_has_no_local_password") else { return };
    let t = start(&settings(&url, "", ""));
    session(&t.server.addr, "bob", &directory_password("bob"));
    let bob = t.user("bob");
    // Not even a superuser can give it one: the directory checks it.
    let (status, body) = t.admin.call(
        "PATCH",
        &format!("/api/v1/users/{}", bob["id"]),
        Some(&json!({"password": "a-local-password-for-bob"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("checked by the authentication source 'ldap'"), "{body}");
    assert_eq!(login(&t.server.addr, "bob", "a-local-password-for-bob").0, 401);
    // A deactivated directory account stays out, whatever the directory says.
    t.admin.ok("PATCH", &format!("/api/v1/users/{}", bob["id"]), Some(&json!({"is_active": false})));
    assert_eq!(login(&t.server.addr, "bob", &directory_password("bob")).0, 401);
}

#[test]
fn threat_login_throttling_applies_to_directory_logins() {
    let Some(url) = ldap_url("threat_login_throttling") else { return };
    let t = start(&settings(&url, "", "[limits]\nlogin_failures_per_account = 3\nlogin_window_seconds = 600"));
    for _ in 0..3 {
        assert_eq!(login(&t.server.addr, "alice", "guess-guess-guess").0, 401);
    }
    // The right password no longer helps: the account's failures are used up.
    let (status, body, _) = login(&t.server.addr, "alice", &directory_password("alice"));
    assert_eq!(status, 429, "{body}");
    assert!(body["error"].as_str().unwrap().contains("too many failed logins for this account"), "{body}");
    let throttled = t.audit("login_failed");
    assert_eq!(throttled[0]["details"]["reason"], "throttled");
    // Another directory user is not affected.
    session(&t.server.addr, "bob", &directory_password("bob"));
}

#[test]
fn local_accounts_can_be_switched_off_and_bad_settings_name_the_setting() {
    let Some(url) = ldap_url("local_accounts_can_be_switched_off") else { return };
    // Local first by default; with `order` naming only ldap, local passwords stop working.
    let mut t = start(&settings(&url, "", ""));
    t.sandbox.settings(&settings(&url, "", "[authentication]\norder = [\"ldap\"]"));
    let old = std::mem::replace(&mut t.server, t.sandbox.serve_logged());
    drop(old);
    assert_eq!(login(&t.server.addr, "admin", &t.admin_password).0, 401);
    session(&t.server.addr, "alice", &directory_password("alice"));
    drop(t);

    let cases = [
        (settings(&url, "", "[authentication]\norder = [\"local\", \"nope\"]"), "invalid setting 'authentication.order': 'nope' is neither 'local' nor an enabled entry of [plugins.authentication]"),
        (settings(&url, "", "[authentication]\norder = [\"local\", \"local\"]"), "invalid setting 'authentication.order': 'local' is named twice"),
        (settings(&url, "", "[authentication]\norder = [\"local\"]"), "invalid setting 'authentication.order': the enabled entry 'ldap' of [plugins.authentication] is not in it"),
        (settings(&url, "", "").replace("[plugins.authentication.ldap]", "[plugins.authentication.local]"), "invalid setting 'plugins.authentication.local'"),
        (settings(&url, "", "").replace(&format!("base_dn = \"ou=people,{BASE}\""), ""), "plugin 'authentication.ldap'"),
        (settings(&url, "timeout_seconds_typo = 3", ""), "unknown parameter 'timeout_seconds_typo' for authentication plugin ldap"),
    ];
    // `plugins list` loads the settings and every plugin as `serve` does, and exits.
    for (settings, expected) in cases {
        let sandbox = Sandbox::new();
        sandbox.settings(&settings);
        let out = sandbox.run(&["plugins", "list"]);
        assert!(!out.status.success(), "accepted:\n{settings}");
        assert!(stderr(&out).contains(expected), "{expected:?} missing from: {}", stderr(&out));
    }
    // The missing base_dn is named too.
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(&url, "", "").replace(&format!("base_dn = \"ou=people,{BASE}\""), ""));
    let err = stderr(&sandbox.run(&["plugins", "list"]));
    assert!(err.contains("bad parameters: parameter 'base_dn' (a string) is required"), "{err}");
}
