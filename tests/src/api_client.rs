//! An HTTP client for the REST API end-to-end tests: users made in the store,
//! logged in over HTTP, and calls with a bearer token or a session cookie.

use std::io::Write;

use serde_json::{json, Value};
use vespene::store::{NewUser, Store};

use crate::http_request;

/// An API client: a bearer token, or a session cookie with its CSRF token.
#[derive(Clone)]
pub struct Client {
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// A bearer token.
    pub token: Option<String>,
    /// A session cookie (`name=value`).
    pub cookie: Option<String>,
    /// The session's CSRF token.
    pub csrf: Option<String>,
}

impl Client {
    /// A client holding an API token.
    pub fn with_token(addr: &str, token: &str) -> Self {
        Client { addr: addr.into(), token: Some(token.into()), cookie: None, csrf: None }
    }

    /// A client with no credentials.
    pub fn anonymous(addr: &str) -> Self {
        Client { addr: addr.into(), token: None, cookie: None, csrf: None }
    }

    /// A JSON call: (status, body as JSON, or as a string when it is not JSON).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let text = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(method, path, &text, &[])
    }

    /// A call answering the body as text: (status, body).
    pub fn text(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        self.raw_text(method, path, &body.map(|b| b.to_string()).unwrap_or_default(), &[])
    }

    /// A call with a raw body and extra headers.
    pub fn raw(&self, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        let (status, body) = self.raw_text(method, path, body, extra);
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    fn raw_text(&self, method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> (u16, String) {
        let mut headers: Vec<(String, String)> = vec![("Content-Type".into(), "application/json".into())];
        if let Some(t) = &self.token {
            headers.push(("Authorization".into(), format!("Bearer {t}")));
        }
        if let Some(c) = &self.cookie {
            headers.push(("Cookie".into(), c.clone()));
        }
        if let Some(c) = &self.csrf {
            headers.push(("X-CSRF-Token".into(), c.clone()));
        }
        for (k, v) in extra {
            headers.push((k.to_string(), v.to_string()));
        }
        let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        http_request(&self.addr, method, path, &refs, body)
    }

    /// A call that must succeed (2xx); answers the body.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.call(method, path, body);
        assert!((200..300).contains(&status), "{method} {path}: {status} {value}");
        value
    }
}

/// Creates a user (password `password-of-NAME`) in `groups`; answers its id.
pub async fn user(store: &Store, name: &str, superuser: bool, groups: &[i64]) -> i64 {
    let id = store
        .create_user(&NewUser {
            username: name.into(),
            password: "password-of-".to_string() + name,
            is_superuser: superuser,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut u = store.get_user(id).await.unwrap().unwrap();
    u.group_ids = groups.to_vec();
    store.update_user(&u).await.unwrap();
    id
}

/// Logs `name` in and answers a client with a fresh API token of theirs.
pub fn token_for(addr: &str, name: &str) -> Client {
    // Log in with the password, then mint a token as that user.
    let (status, body) = Client::anonymous(addr).call(
        "POST",
        "/api/v1/login",
        Some(&json!({"username": name, "password": format!("password-of-{name}")})),
    );
    assert_eq!(status, 200, "{body}");
    let session = session_from_login(addr, name);
    let token =
        session.ok("POST", "/api/v1/tokens", Some(&json!({"name": "test"})))["token"].as_str().unwrap().to_string();
    Client { addr: addr.into(), token: Some(token), cookie: None, csrf: None }
}

/// Logs `name` in and answers a client holding the session cookie and CSRF token.
pub fn session_from_login(addr: &str, name: &str) -> Client {
    use std::io::Read;
    let body = json!({"username": name, "password": format!("password-of-{name}")}).to_string();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let cookie_line =
        response.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("a session cookie");
    assert!(cookie_line.contains("HttpOnly") && cookie_line.contains("SameSite=Strict"), "{cookie_line}");
    let cookie = cookie_line.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string();
    let json_body = response.split_once("\r\n\r\n").unwrap().1;
    let json_body = json_body.lines().find(|l| l.starts_with('{')).unwrap_or(json_body);
    let value: Value = serde_json::from_str(json_body).unwrap();
    Client {
        addr: addr.into(),
        token: None,
        cookie: Some(cookie),
        csrf: value["csrf_token"].as_str().map(str::to_string),
    }
}

/// A shared worker pool `shell` with shell isolation (so a test, as root, can
/// reach the build roots).
pub async fn shared_shell_pool(store: &Store) -> i64 {
    let pool = vespene::store::WorkerPool {
        name: "shell".into(),
        isolation_method: "shell".into(),
        shared: true,
        ..Default::default()
    };
    store.create_worker_pool(&pool).await.unwrap()
}

/// Creates a project with `script` on `pool` as `client` and starts it; answers the build id.
pub fn create_and_start(client: &Client, pool: i64, name: &str, script: &str) -> i64 {
    let project = client.ok(
        "POST",
        "/api/v1/projects",
        Some(&serde_json::json!({"name": name, "worker_pool_id": pool, "script": script})),
    );
    let build = client.ok("POST", &format!("/api/v1/projects/{}/start", project["id"]), Some(&serde_json::json!({})));
    build["id"].as_i64().unwrap()
}

/// A server started with `settings` (TOML), a shared shell pool and alice's
/// token client.
pub async fn alice_on_a_shell_pool(settings: &str) -> (crate::Sandbox, crate::Server, Store, i64, Client) {
    let sandbox = crate::Sandbox::new();
    sandbox.settings(settings);
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shared_shell_pool(&store).await;
    user(&store, "alice", false, &[]).await;
    let alice = token_for(&server.addr, "alice");
    (sandbox, server, store, pool, alice)
}
