//! The web UI in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, `scripts/setup --test`)
//! against `vespene serve` with the real plugins. The WebDriver client is the
//! few JSON-over-HTTP calls below, on the suite's loopback HTTP helper.
//!
//! Screenshots of the pages are written to `tests/artifacts/` and checked:
//! the colours of named elements in the PNG must be those the page styles
//! them with (`Browser::screenshot_checked`).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use vespene::store::{NewUser, Pipeline, Project, Stage, Store};
use vespene_e2e::*;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The longest any one wait may take.
const WAIT: Duration = Duration::from_secs(45);

/// `chromedriver` on a loopback port, killed when dropped.
struct Driver {
    child: Child,
    addr: String,
}

impl Driver {
    fn start() -> Driver {
        let exe = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromedriver is not installed: run `scripts/setup --test` (Debian: chromium chromium-driver)");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, addr: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(&driver.addr).is_ok() {
                let (status, body) = wd_request(&driver.addr, "GET", "/status", "");
                if status == 200 && body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// A new headless browser session.
    fn session(&self) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                        "--disable-dev-shm-usage", "--no-first-run",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let value = call(&self.addr, "POST", "/session", Some(&caps));
        let id = value["sessionId"].as_str().expect("a session id").to_string();
        Browser { addr: self.addr.clone(), id, _profile: profile }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver request: (status, body). chromedriver keeps connections
/// open, so the body is read by its Content-Length.
fn wd_request(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to chromedriver");
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("a WebDriver status line");
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut data = vec![0u8; length];
    reader.read_exact(&mut data).expect("a WebDriver reply body");
    (status, String::from_utf8_lossy(&data).into_owned())
}

fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    let (status, reply) = wd_request(addr, method, path, &text);
    let value: Value = serde_json::from_str(&reply).unwrap_or(Value::String(reply));
    assert!(status == 200, "WebDriver {method} {path}: {status} {value}");
    value["value"].clone()
}

/// One browser session.
struct Browser {
    addr: String,
    id: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = wd_request(&self.addr, "DELETE", &format!("/session/{}", self.id), "");
    }
}

impl Browser {
    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = if method == "GET" { None } else { Some(&body) };
        call(&self.addr, method, &format!("/session/{}{path}", self.id), body)
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", json!({})).as_str().unwrap_or_default().to_string()
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.cmd("POST", "/elements", json!({ "using": "css selector", "value": css }));
        found
            .as_array()
            .unwrap_or_else(|| panic!("find {css}: {found}"))
            .iter()
            .map(|e| e[ELEMENT].as_str().unwrap_or_else(|| panic!("element {e}")).to_string())
            .collect()
    }

    fn find(&self, css: &str) -> String {
        self.find_all(css).into_iter().next().unwrap_or_else(|| panic!("no element {css} on {}", self.url()))
    }

    /// Clicks the element `css` names; found again if a self-refreshing panel
    /// replaced it between the lookup and the click.
    fn click(&self, css: &str) {
        for _ in 0..5 {
            let e = self.find(css);
            let path = format!("/session/{}/element/{e}/click", self.id);
            let (status, reply) = wd_request(&self.addr, "POST", &path, "{}");
            if status == 200 {
                return;
            }
            assert!(reply.contains("stale element reference"), "WebDriver click {css}: {status} {reply}");
        }
        panic!("{css} kept being replaced before it could be clicked");
    }

    fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), json!({}));
        self.cmd("POST", &format!("/element/{e}/value"), json!({ "text": text }));
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.cmd("GET", &format!("/element/{e}/text"), json!({})).as_str().unwrap_or_default().to_string()
    }

    fn run(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", json!({ "script": script, "args": args }))
    }

    fn run_async(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/async", json!({ "script": script, "args": args }))
    }

    /// Chooses the option with this label in a `<select>`.
    fn choose(&self, css: &str, label: &str) {
        let ok = self.run(
            "const s = document.querySelector(arguments[0]);\
             for (const o of s.options) { if (o.text === arguments[1]) { o.selected = true; return true; } }\
             return false;",
            json!([css, label]),
        );
        assert_eq!(ok, json!(true), "no option {label} in {css}");
    }

    /// Waits until `script` returns something truthy, and answers it.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.run(script, json!([]));
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} on {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A screenshot written to `tests/artifacts/`, checked against the page:
    /// each `swatch` element must be inside the viewport, and the colour most
    /// of its pixels have in the PNG (decoded by the browser itself) must be
    /// its computed background colour (its fill, for SVG shapes). A blank,
    /// stale or unstyled capture fails.
    fn screenshot_checked(&self, name: &str, swatches: &[&str]) -> PathBuf {
        // Swatches outside the viewport are scrolled into it first.
        self.run(
            "for (const css of arguments[0]) {
               const el = document.querySelector(css);
               if (!el) continue;
               const r = el.getBoundingClientRect();
               if (r.top < 0 || r.bottom > innerHeight) el.scrollIntoView({ block: 'nearest' });
             }",
            json!([swatches]),
        );
        let data = self.cmd("GET", "/screenshot", json!({}));
        let encoded = data.as_str().expect("a base64 screenshot").to_string();
        let png = base64::engine::general_purpose::STANDARD.decode(&encoded).unwrap();
        let dir = workspace_root().join("tests/artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, png).unwrap();
        for css in swatches {
            let seen = self.run_async(
                "const [png, css, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
                 const el = document.querySelector(css);
                 if (!el) return done({ error: 'no element ' + css });
                 const r = el.getBoundingClientRect();
                 if (r.top < 0 || r.left < 0 || r.bottom > innerHeight || r.right > innerWidth || r.width < 4)
                   return done({ error: css + ' is not inside the viewport: ' + JSON.stringify(r) });
                 const img = new Image();
                 img.onerror = () => done({ error: 'the screenshot is not a PNG' });
                 img.onload = () => {
                   const canvas = document.createElement('canvas');
                   canvas.width = img.width; canvas.height = img.height;
                   const g = canvas.getContext('2d');
                   g.drawImage(img, 0, 0);
                   const scale = img.width / innerWidth;
                   const inset = Math.min(4, r.width / 4);
                   const y = Math.floor((r.top + r.height / 2) * scale);
                   const x0 = Math.ceil((r.left + inset) * scale), x1 = Math.floor((r.right - inset) * scale);
                   const row = g.getImageData(x0, y, Math.max(1, x1 - x0), 1).data;
                   const counts = {};
                   for (let i = 0; i < row.length; i += 4) {
                     const key = row[i] + ',' + row[i + 1] + ',' + row[i + 2];
                     counts[key] = (counts[key] || 0) + 1;
                   }
                   const most = Object.entries(counts).sort((a, b) => b[1] - a[1])[0][0];
                   const style = getComputedStyle(el);
                   done({ pixel: most.split(',').map(Number), css: el instanceof SVGElement ? style.fill : style.backgroundColor });
                 };
                 img.src = 'data:image/png;base64,' + png;",
                json!([encoded, css]),
            );
            assert!(seen["error"].is_null(), "{name}: {}", seen["error"]);
            let expected: Vec<i64> = seen["css"]
                .as_str()
                .unwrap()
                .trim_start_matches("rgba(")
                .trim_start_matches("rgb(")
                .trim_end_matches(')')
                .split(',')
                .take(3)
                .map(|c| c.trim().parse().unwrap())
                .collect();
            let pixel: Vec<i64> = seen["pixel"].as_array().unwrap().iter().map(|c| c.as_i64().unwrap()).collect();
            let close = expected.iter().zip(&pixel).all(|(e, p)| (e - p).abs() <= 6);
            assert!(close, "{name}: {css} is {pixel:?} in the screenshot, but the page styles it {}", seen["css"]);
        }
        path
    }

    fn login(&self, base: &str, name: &str) {
        self.goto(&format!("{base}/login"));
        self.fill("#username", name);
        self.fill("#password", &format!("password-of-{name}"));
        self.click("#login-submit");
        self.wait_for("the dashboard after login", "return location.pathname === '/ui/dashboard';");
    }
}

fn settings() -> String {
    format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 2\n", bin_dir().display())
}

async fn user(store: &Store, name: &str, superuser: bool) -> i64 {
    store
        .create_user(&NewUser {
            username: name.into(),
            password: format!("password-of-{name}"),
            is_superuser: superuser,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_creates_a_pool_and_project_starts_it_and_watches_it_live() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let server = sandbox.serve();
    let base = format!("http://{}", server.addr);
    let store = sandbox.store().await;
    user(&store, "alice", true).await;
    let driver = Driver::start();
    let browser = driver.session();

    // Anonymous visitors are sent to the login page, the plugins page too.
    browser.goto(&format!("{base}/ui/plugins"));
    assert!(browser.url().contains("/login?next="), "{}", browser.url());
    browser.login(&base, "alice");

    // A worker pool through the form.
    browser.goto(&format!("{base}/ui/worker_pools/new"));
    browser.fill("#f-name", "ui-pool");
    browser.click("#tab-security");
    browser.fill("#f-isolation_method", "shell");
    browser.click("#save");
    browser.wait_for("the pool's page", "return /^\\/ui\\/worker_pools\\/\\d+$/.test(location.pathname);");
    assert!(browser.text("h1").contains("ui-pool"));

    // A project: first with a script the store refuses, to see the error by
    // its field and the submitted values kept.
    browser.goto(&format!("{base}/ui/projects/new"));
    browser.fill("#f-name", "ui-project");
    browser.choose("#f-worker_pool_id", "ui-pool");
    browser
        .run("document.getElementById('f-script').value = arguments[0];", json!(["echo this has no interpreter line"]));
    browser.click("#save");
    browser.wait_for("the script's error", "return document.getElementById('err-script');");
    let error = browser.text("#err-script");
    assert!(error.contains("interpreter"), "{error}");
    assert_eq!(browser.run("return document.getElementById('f-name').value;", json!([])), json!("ui-project"));
    let script =
        "#!/bin/bash\necho first-line\nsleep 3\nfor i in 1 2 3; do echo tick $i; sleep 1; done\necho done-line\n";
    browser.run("document.getElementById('f-script').value = arguments[0];", json!([script]));
    browser.click("#save");
    browser.wait_for("the project's page", "return /^\\/ui\\/projects\\/\\d+$/.test(location.pathname);");

    // Start it and watch the output arrive before the build ends.
    browser.click("#start-project");
    browser.wait_for("the build page", "return /^\\/ui\\/builds\\/\\d+$/.test(location.pathname);");
    browser.run("window.__sameDocument = 'yes';", json!([]));
    let seen = browser.wait_for(
        "the first output line",
        "const l = [...document.querySelectorAll('#output .line-stdout')].find(e => e.textContent.includes('first-line'));\
         return l ? document.getElementById('build-status').textContent : null;",
    );
    assert!(
        seen == json!("RUNNING") || seen == json!("QUEUED"),
        "the first line should appear while the build runs, status was {seen}"
    );
    assert!(
        !browser
            .run("return document.getElementById('output').textContent.includes('done-line');", json!([]))
            .as_bool()
            .unwrap(),
        "the last line was already there: not live"
    );
    let status = browser.wait_for(
        "the final status",
        "const s = document.getElementById('build-status').textContent; return s === 'SUCCESS' || s === 'FAILURE' ? s : null;",
    );
    assert_eq!(status, json!("SUCCESS"));
    // Same document: nothing reloaded the page.
    assert_eq!(browser.run("return window.__sameDocument || null;", json!([])), json!("yes"));
    let texts = browser.run(
        "return [...document.querySelectorAll('#output .line')].map(e => [e.className, e.textContent]);",
        json!([]),
    );
    let texts = texts.as_array().unwrap();
    assert!(texts
        .iter()
        .any(|t| t[0].as_str().unwrap().contains("line-stdout") && t[1].as_str().unwrap().contains("done-line")));
    assert!(texts.iter().any(|t| t[0].as_str().unwrap().contains("line-message")), "housekeeping lines: {texts:?}");
    let color = |class: &str| {
        browser.run(
            "const e = document.querySelector('#output .' + arguments[0]); return e ? getComputedStyle(e).color : null;",
            json!([class]),
        )
    };
    assert_ne!(color("line-stdout"), color("line-message"), "stdout and messages look the same");
    browser.wait_for("the return code", "return document.getElementById('build-rc').textContent === '0';");
    let build_id: i64 = browser.url().rsplit('/').next().unwrap().parse().unwrap();
    browser.screenshot_checked("build.png", &["header", "#build-status"]);

    // The dashboard updates by itself when another build starts.
    browser.goto(&format!("{base}/ui/dashboard"));
    browser.run("window.__sameDocument = 'dash';", json!([]));
    let project_id = store.find_project("ui-project").await.unwrap().unwrap().id;
    let started = browser.run_async(
        "const done = arguments[arguments.length - 1];\
         const csrf = document.querySelector('input[name=csrf_token]').value;\
         fetch('/ui/projects/' + arguments[0] + '/start', { method: 'POST', body: new URLSearchParams({ csrf_token: csrf }) })\
           .then(r => done(r.url)).catch(e => done('error ' + e));",
        json!([project_id]),
    );
    let second: i64 =
        started.as_str().unwrap().rsplit('/').next().unwrap().parse().expect("redirected to the new build");
    assert!(second > build_id);
    browser.wait_for(
        "the new build on the dashboard",
        &format!("return !!document.querySelector('#board-running [data-build=\"{second}\"], #board-queued [data-build=\"{second}\"]');"),
    );
    assert_eq!(browser.run("return window.__sameDocument || null;", json!([])), json!("dash"));
    browser.screenshot_checked("dashboard.png", &["header"]);
    browser.wait_for(
        "the new build to finish on the dashboard",
        &format!("return !!document.querySelector('#board-latest [data-build=\"{second}\"] .status-SUCCESS');"),
    );

    // The pipeline map: one row per stage, with the project's live status.
    let pool = store.find_worker_pool("ui-pool").await.unwrap().unwrap().id;
    let build_stage = store
        .create_stage(&Stage { name: "build".into(), variables: "{}".into(), ..Default::default() })
        .await
        .unwrap();
    let deploy_stage = store
        .create_stage(&Stage { name: "deploy".into(), variables: "{}".into(), ..Default::default() })
        .await
        .unwrap();
    let pipeline = store
        .create_pipeline(&Pipeline {
            name: "ui-pipeline".into(),
            stage_ids: vec![build_stage, deploy_stage],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut project = store.get_project(project_id).await.unwrap().unwrap();
    project.pipeline_id = Some(pipeline);
    project.stage_id = Some(build_stage);
    store.update_project(&project).await.unwrap();
    store
        .create_project(&Project {
            name: "ui-deploy".into(),
            worker_pool_id: pool,
            pipeline_id: Some(pipeline),
            stage_id: Some(deploy_stage),
            script: "#!/bin/bash\necho deploying\n".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    browser.goto(&format!("{base}/ui/pipelines/{pipeline}/map"));
    assert_eq!(browser.find_all("table.map tbody tr").len(), 2);
    assert!(browser.text("table.map tbody tr:first-child").contains("ui-project"));
    assert!(browser.text("table.map tbody tr:nth-child(2)").contains("ui-deploy"));
    assert!(browser.text("[data-project=\"ui-deploy\"]").contains("never built"));
    // Run the pipeline from its first stage; the map follows without a reload.
    browser.run("window.__sameDocument = 'map';", json!([]));
    browser.run_async(
        "const done = arguments[arguments.length - 1];\
         const csrf = document.querySelector('input[name=csrf_token]').value;\
         fetch('/ui/projects/' + arguments[0] + '/start', { method: 'POST', body: new URLSearchParams({ csrf_token: csrf }) })\
           .then(r => done(r.status)).catch(e => done(String(e)));",
        json!([project_id]),
    );
    browser.wait_for(
        "the deploy stage to run after the build stage",
        "const c = document.querySelector('[data-project=\"ui-deploy\"]'); return c && c.querySelector('.badge') ? true : null;",
    );
    assert_eq!(browser.run("return window.__sameDocument || null;", json!([])), json!("map"));
    browser.screenshot_checked("pipeline-map.png", &["header", "[data-project=\"ui-deploy\"] .badge"]);

    // The plugins page lists what the server loaded.
    browser.goto(&format!("{base}/ui/plugins"));
    assert!(browser.text("main").contains("ownership"));

    // Every form control has a label, and the tabs are reachable by keyboard.
    browser.goto(&format!("{base}/ui/projects/new"));
    let unlabelled = browser.run(
        "return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
            .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
            .map(e => e.name || e.id);",
        json!([]),
    );
    assert_eq!(unlabelled, json!([]), "form controls without a label");
    let unreachable = browser.run(
        "return Array.from(document.querySelectorAll('[role=tab], nav a, button'))
            .filter(e => e.tabIndex < 0 && e.getAttribute('aria-selected') !== 'false').length;",
        json!([]),
    );
    assert_eq!(unreachable, json!(0), "controls that keyboard users cannot reach");

    // Readable on a phone-width screen: nothing wider than the viewport.
    browser.cmd("POST", "/window/rect", json!({ "width": 390, "height": 844 }));
    for page in ["/ui/dashboard", "/ui/projects", "/ui/builds"] {
        browser.goto(&format!("{base}{page}"));
        let overflow = browser
            .run("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", json!([]));
        let culprits = browser.run(
            "const w = document.documentElement.clientWidth;
             return Array.from(document.querySelectorAll('body *'))
               .filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('.scroll'))
               .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));",
            json!([]),
        );
        assert!(overflow.as_i64().unwrap_or(0) <= 1, "{page} is wider than a phone screen by {overflow}px: {culprits}");
    }
    browser.screenshot_checked("phone-builds.png", &["header"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_rights_sees_no_controls_and_direct_posts_are_refused() {
    let sandbox = Sandbox::new();
    // Others' projects are visible only with `filter_view = false` (the default hides them).
    sandbox.settings(&format!("{}[plugins.authorization.ownership]\nfilter_view = false\n", settings()));
    let server = sandbox.serve();
    let base = format!("http://{}", server.addr);
    let store = sandbox.store().await;
    let owner = user(&store, "olga", true).await;
    user(&store, "victor", false).await;
    let pool = store.list_worker_pools().await.unwrap()[0].id;
    let project = store
        .create_project(&Project {
            name: "not-yours".into(),
            worker_pool_id: pool,
            created_by: Some(owner),
            script: "#!/bin/bash\necho hi\n".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let driver = Driver::start();
    let browser = driver.session();
    browser.login(&base, "victor");

    browser.goto(&format!("{base}/ui/projects"));
    assert!(browser.text("tbody").contains("not-yours"), "the project is listed");
    // (Anyone may create projects of their own; these controls are for this one.)
    for css in ["button.start", "a.start", "a.edit", "form[data-confirm]"] {
        assert!(browser.find_all(css).is_empty(), "a non-owner sees {css}");
    }
    browser.goto(&format!("{base}/ui/projects/{project}"));
    for css in ["#start-project", "#edit-object", "form[data-confirm]"] {
        assert!(browser.find_all(css).is_empty(), "a non-owner sees {css}");
    }
    browser.goto(&format!("{base}/ui/worker_pools"));
    assert!(browser.find_all("#new-worker_pool").is_empty());
    // The edit page falls back to the read-only page.
    browser.goto(&format!("{base}/ui/projects/{project}/edit"));
    assert!(browser.url().ends_with(&format!("/ui/projects/{project}")), "{}", browser.url());

    // Direct POSTs with the user's own valid CSRF token are refused.
    let post = |path: String, body: Value| {
        browser.run_async(
            "const done = arguments[arguments.length - 1];\
             const csrf = document.querySelector('input[name=csrf_token]').value;\
             const body = new URLSearchParams(Object.assign({ csrf_token: csrf }, arguments[1]));\
             fetch(arguments[0], { method: 'POST', body, redirect: 'manual' }).then(r => done(r.status)).catch(e => done(String(e)));",
            json!([path, body]),
        )
    };
    assert_eq!(post(format!("/ui/projects/{project}/start"), json!({})), json!(403));
    assert_eq!(post(format!("/ui/projects/{project}/edit"), json!({ "name": "taken-over" })), json!(403));
    assert_eq!(post(format!("/ui/projects/{project}/delete"), json!({})), json!(403));
    assert_eq!(post("/ui/worker_pools/new".into(), json!({ "name": "mine" })), json!(403));
    // And without the token, even an allowed action is refused.
    let no_csrf = browser.run_async(
        "const done = arguments[arguments.length - 1];\
         fetch('/ui/snippets/new', { method: 'POST', body: new URLSearchParams({ name: 'x', text: 'y' }) }).then(r => done(r.status));",
        json!([]),
    );
    assert_eq!(no_csrf, json!(403));
    assert!(store.list_builds(&Default::default()).await.unwrap().is_empty(), "no build was started");
    let unchanged = store.get_project(project).await.unwrap().unwrap();
    assert_eq!(unchanged.name, "not-yours");
    assert!(store.find_worker_pool("mine").await.unwrap().is_none());

    // Build roots are behind login.
    let (status, _) = server.get("/ui/builds/1/files");
    assert_eq!(status, 303, "anonymous file browsing redirects to the login");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_log_shows_its_tail_and_loads_earlier_lines_in_place() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let server = sandbox.serve();
    let base = format!("http://{}", server.addr);
    let store = sandbox.store().await;
    user(&store, "alice", true).await;
    let api = vespene_e2e::api_client::token_for(&server.addr, "alice");
    let pool = api.ok("POST", "/api/v1/worker_pools", Some(&json!({"name": "big-pool", "isolation_method": "shell"})));
    let project = api.ok(
        "POST",
        "/api/v1/projects",
        Some(
            &json!({"name": "big", "worker_pool_id": pool["id"], "script": "#!/bin/sh\nseq -f 'big line %g' 1 2500\n"}),
        ),
    );
    let id =
        api.ok("POST", &format!("/api/v1/projects/{}/start", project["id"]), Some(&json!({})))["id"].as_i64().unwrap();
    let started = Instant::now();
    let total = loop {
        let b = api.ok("GET", &format!("/api/v1/builds/{id}"), None);
        if b["status"] == "SUCCESS" {
            break b["output_lines"].as_i64().unwrap();
        }
        assert!(started.elapsed() < WAIT, "the build did not succeed: {b}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(total > 2500);

    let driver = Driver::start();
    let browser = driver.session();
    browser.login(&base, "alice");
    browser.goto(&format!("{base}/ui/builds/{id}"));
    let seqs = || -> Vec<i64> {
        browser
            .run("return [...document.querySelectorAll('#output .line')].map(e => +e.dataset.seq);", json!([]))
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    // The tail: the last 1,000 lines, not the whole log.
    assert_eq!(seqs(), ((total - 999)..=total).collect::<Vec<_>>());
    let size = browser.run("return document.documentElement.outerHTML.length;", json!([])).as_i64().unwrap();
    assert!(size < 250_000, "the page is {size} bytes");
    let raw = browser.run("return document.getElementById('raw-log').getAttribute('href');", json!([]));
    assert_eq!(raw, json!(format!("/api/v1/builds/{id}/log.txt")));
    let href = browser.run("return document.getElementById('load-earlier').getAttribute('href');", json!([]));
    assert_eq!(href, json!(format!("/ui/builds/{id}?before={}", total - 999)), "works without the script too");
    browser.run("window.__sameDocument = 'yes';", json!([]));

    // "Load earlier lines" puts the page before in place, down to the first line.
    browser.click("#load-earlier");
    browser.wait_for("the earlier page", "return document.querySelectorAll('#output .line').length === 2000;");
    assert_eq!(seqs(), ((total - 1999)..=total).collect::<Vec<_>>());
    assert_eq!(
        browser.run("return document.getElementById('load-earlier').offsetParent !== null;", json!([])),
        json!(true)
    );
    while browser.run("return document.getElementById('load-earlier').offsetParent !== null;", json!([])) == json!(true)
    {
        let before = seqs().len();
        browser.click("#load-earlier");
        browser.wait_for(
            "another earlier page",
            &format!("return document.querySelectorAll('#output .line').length > {before};"),
        );
    }
    assert_eq!(seqs(), (1..=total).collect::<Vec<_>>(), "every line once, in order");
    let first = browser.run("return document.querySelector('#output .line').textContent;", json!([]));
    assert!(first.as_str().unwrap().contains(": "), "{first}");
    assert!(browser.run("return document.getElementById('output').textContent.includes('big line 1\\n') || [...document.querySelectorAll('#output .line-stdout')].some(e => e.textContent.endsWith('big line 1'));", json!([])).as_bool().unwrap());
    assert_eq!(browser.run("return window.__sameDocument || null;", json!([])), json!("yes"));

    // The plain link's page: the lines just before, not followed live.
    browser.goto(&format!("{base}/ui/builds/{id}?before=1001"));
    assert_eq!(seqs(), (1..=1000).collect::<Vec<_>>());
    assert_eq!(browser.run("return document.getElementById('output').dataset.active;", json!([])), json!("0"));
    assert!(browser.text("#output-range").contains(&format!("of {total}")));
}

/// `git` with a known author, in `dir`.
fn git(dir: &std::path::Path, args: &[&str]) -> String {
    vespene_e2e::servers::run(
        Command::new("git")
            .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir),
    )
    .trim()
    .to_string()
}

/// The project page's recent builds (status, run time in seconds, revision,
/// committer), its duration-and-outcome chart and success rate; the
/// dashboard's queue depth per pool. Bob, another ordinary user, sees none
/// of alice's private project's builds on these pages; the admin sees them.
#[tokio::test(flavor = "multi_thread")]
async fn the_project_page_shows_recent_builds_a_chart_and_the_success_rate_and_the_dashboard_queues() {
    use vespene_e2e::builds::{finished, WorkerProcess};
    let sandbox = Sandbox::new();
    // No embedded workers: builds run in worker processes the test starts, so some can wait in the queue.
    sandbox.settings(&format!("plugin_path = [\"{}\"]\n[workers]\nembedded = false\n", bin_dir().display()));
    let server = sandbox.serve();
    let base = format!("http://{}", server.addr);
    let store = sandbox.store().await;
    user(&store, "root", true).await;
    let alice = user(&store, "alice", false).await;
    user(&store, "bob", false).await;
    let pool = vespene_e2e::api_client::shared_shell_pool(&store).await;

    // Alice's project builds from a git repository: a pass, a failure, a pass.
    let repos = tempfile::tempdir().unwrap();
    let work = repos.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    std::fs::write(work.join("README"), "app\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    git(repos.path(), &["clone", "-q", "--bare", "work", "app.git"]);
    let daemon = vespene_e2e::servers::GitDaemon::start(repos.path());
    let project = store
        .create_project(&Project {
            name: "alice-app".into(),
            worker_pool_id: pool,
            created_by: Some(alice),
            scm_type: "git".into(),
            repo_url: daemon.url("app.git"),
            script: "#!/bin/sh\nexit 0\n".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut builds = Vec::new();
    for script in ["#!/bin/sh\nsleep 1\n", "#!/bin/sh\nexit 3\n", "#!/bin/sh\nsleep 2\n"] {
        let mut p = store.get_project(project).await.unwrap().unwrap();
        p.script = script.into();
        store.update_project(&p).await.unwrap();
        let id = vespene_e2e::builds::start(&sandbox, "alice-app", &[]);
        WorkerProcess::spawn(&sandbox, &["--max-builds", "1"]).wait(Duration::from_secs(60));
        builds.push(finished(&store, id, Duration::from_secs(60)).await);
    }
    let statuses: Vec<&str> = builds.iter().map(|b| b.status.as_str()).collect();
    assert_eq!(statuses, ["SUCCESS", "FAILURE", "SUCCESS"]);
    // One more waits in the queue, with no worker to take it.
    let waiting = [vespene_e2e::builds::start(&sandbox, "alice-app", &[])];
    let queued = store.count_builds(pool, vespene::store::BuildStatus::Queued).await.unwrap();
    assert_eq!(queued, 1);

    let driver = Driver::start();
    let browser = driver.session();
    browser.login(&base, "alice");
    browser.goto(&format!("{base}/ui/projects/{project}"));
    let rows = browser.run(
        "return [...document.querySelectorAll('#project-build-table tbody tr')].map(r => \
           [r.dataset.build, ...[...r.cells].map(c => c.textContent.trim())]);",
        json!([]),
    );
    let rows = rows.as_array().unwrap().clone();
    // Newest first: the queued one, then the three that ran.
    let shown: Vec<i64> = rows.iter().map(|r| r[0].as_str().unwrap().parse().unwrap()).collect();
    let mut expected: Vec<i64> = builds.iter().map(|b| b.id).chain(waiting.iter().copied()).collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(shown, expected, "{rows:?}");
    for (row, b) in rows.iter().skip(rows.len() - 3).zip(builds.iter().rev()) {
        assert_eq!(row[2], json!(b.status.as_str()), "{row}");
        let runtime = row[3].as_str().unwrap();
        assert!(runtime.ends_with(" s") && !runtime.contains("min"), "a short build's run time in seconds: {runtime}");
        assert_eq!(row[4], json!(&sha[..10]), "{row}");
        assert_eq!(row[5], json!("Ada"), "{row}");
    }
    // One bar per finished build, oldest left, coloured by outcome, the longest tallest.
    let bars = browser.run(
        "return [...document.querySelectorAll('#build-chart rect')].map(r => \
           [Number(r.dataset.build), r.getAttribute('class'), Number(r.getAttribute('x')), Number(r.getAttribute('height')), \
            getComputedStyle(r).fill]);",
        json!([]),
    );
    let bars = bars.as_array().unwrap().clone();
    assert_eq!(bars.len(), 3, "{bars:?}");
    let ids: Vec<i64> = bars.iter().map(|b| b[0].as_i64().unwrap()).collect();
    assert_eq!(ids, builds.iter().map(|b| b.id).collect::<Vec<_>>());
    assert_eq!(bars[0][1], json!("bar bar-SUCCESS"));
    assert_eq!(bars[1][1], json!("bar bar-FAILURE"));
    assert!(bars[0][2].as_i64() < bars[1][2].as_i64() && bars[1][2].as_i64() < bars[2][2].as_i64());
    assert!(bars[2][3].as_i64() > bars[0][3].as_i64(), "the 2 s build is taller than the 1 s one: {bars:?}");
    assert_ne!(bars[0][4], bars[1][4], "success and failure bars look the same");
    // No script of the page's own drew it: the SVG came with the HTML.
    let svg_in_html = browser.run_async(
        "const done = arguments[arguments.length - 1]; fetch(location.href).then(r => r.text()).then(t => done(t.includes('<svg id=\"build-chart\"')));",
        json!([]),
    );
    assert_eq!(svg_in_html, json!(true));
    let rate = browser.text("#success-rate");
    assert!(rate.contains("67%") && rate.contains("2 of the last 3"), "{rate}");
    browser.run("document.getElementById('build-chart').scrollIntoView({ block: 'center' });", json!([]));
    browser.screenshot_checked(
        "project.png",
        &[
            "#build-chart rect.bar-SUCCESS",
            "#build-chart rect.bar-FAILURE",
            "#project-build-table .badge.status-FAILURE",
        ],
    );

    // The builds list and the build page show seconds too.
    browser.goto(&format!("{base}/ui/builds?project_id={project}"));
    let runtimes = browser.run(
        "return [...document.querySelectorAll('tbody tr td:last-child')].map(c => c.textContent.trim()).filter(t => t);",
        json!([]),
    );
    assert_eq!(runtimes.as_array().unwrap().len(), 3, "{runtimes}");
    assert!(runtimes.as_array().unwrap().iter().all(|t| t.as_str().unwrap().ends_with(" s")), "{runtimes}");

    // The dashboard: queue depth per pool.
    browser.goto(&format!("{base}/ui/dashboard"));
    let depth = browser.text("#board-queues [data-pool=\"shell\"] .queued");
    assert_eq!(depth, queued.to_string());
    browser.screenshot_checked("dashboard-queues.png", &["header"]);

    // Bob sees the pool's depth (how busy it is), none of alice's builds.
    let bob = driver.session();
    bob.login(&base, "bob");
    bob.goto(&format!("{base}/ui/dashboard"));
    assert_eq!(bob.text("#board-queues [data-pool=\"shell\"] .queued"), queued.to_string());
    for b in builds.iter().map(|b| b.id).chain(waiting) {
        assert!(bob.find_all(&format!("[data-build=\"{b}\"]")).is_empty(), "bob sees build {b} on the dashboard");
    }
    bob.goto(&format!("{base}/ui/projects/{project}"));
    assert!(bob.find_all("#project-build-table").is_empty(), "bob sees alice's project builds");
    assert!(bob.find_all("#build-chart").is_empty());
    assert!(!bob.text("main").contains(&sha[..10]));
    bob.goto(&format!("{base}/ui/builds?project_id={project}"));
    assert!(bob.find_all("tbody a[href^=\"/ui/builds/\"]").is_empty(), "bob lists alice's builds");

    // The admin sees them all.
    let admin = driver.session();
    admin.login(&base, "root");
    admin.goto(&format!("{base}/ui/projects/{project}"));
    assert_eq!(admin.find_all("#project-build-table tbody tr").len(), expected.len());
    assert_eq!(admin.find_all("#build-chart rect").len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_run_waits_for_approval_on_the_grid_is_approved_in_the_browser_and_shows_in_the_audit_log() {
    use vespene_e2e::api_client::{shared_shell_pool, token_for};
    let sandbox = Sandbox::new();
    sandbox.settings(&settings());
    let server = sandbox.serve();
    let base = format!("http://{}", server.addr);
    let store = sandbox.store().await;
    user(&store, "root", true).await;
    user(&store, "alice", false).await;
    user(&store, "bob", false).await;
    let pool = shared_shell_pool(&store).await;
    let (admin, alice) = (token_for(&server.addr, "root"), token_for(&server.addr, "alice"));
    let build = admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "build", "shared": true})))["id"].clone();
    let prod =
        admin.ok("POST", "/api/v1/stages", Some(&json!({"name": "prod", "shared": true, "approval_required": true})))
            ["id"]
            .clone();
    let pid = alice.ok("POST", "/api/v1/pipelines", Some(&json!({"name": "release", "stage_ids": [build, prod]})))
        ["id"]
        .as_i64()
        .unwrap();
    let mut compile = 0;
    for (name, stage, script) in
        [("compile", &build, "#!/bin/bash\necho compiled\n"), ("ship", &prod, "#!/bin/bash\necho shipped\n")]
    {
        let p = alice.ok(
            "POST",
            "/api/v1/projects",
            Some(
                &json!({"name": name, "worker_pool_id": pool, "pipeline_id": pid, "stage_id": stage, "script": script}),
            ),
        );
        if name == "compile" {
            compile = p["id"].as_i64().unwrap();
        }
    }
    let run = alice.ok("POST", &format!("/api/v1/projects/{compile}/start"), None)["id"].as_i64().unwrap();

    let driver = Driver::start();
    let browser = driver.session();
    browser.login(&base, "alice");
    browser.goto(&format!("{base}/ui/pipelines/{pid}/map"));
    let row = format!("table.runs tr[data-run=\"{run}\"]");
    // The map refreshes itself: the run reaches the approval stage without a reload.
    browser.wait_for(
        "the run to wait for approval on the grid",
        &format!(
            "const r = document.querySelector('{row}'); return r && r.querySelector('button.approve') ? true : null;"
        ),
    );
    assert_eq!(browser.text(&format!("{row} td[data-stage=\"build\"] .badge")), "SUCCESS");
    assert_eq!(browser.text(&format!("{row} td[data-stage=\"prod\"] .badge")), "WAITING FOR APPROVAL");
    browser.run("document.querySelector('table.runs').scrollIntoView({ block: 'center' });", json!([]));
    browser.screenshot_checked(
        "pipeline-grid-waiting.png",
        &[
            &format!("{row} td[data-stage=\"build\"] .badge"),
            &format!("{row} td[data-stage=\"prod\"] .badge"),
            &format!("{row} button.approve"),
        ],
    );

    // Bob sees the grid but no Approve button.
    let other = driver.session();
    other.login(&base, "bob");
    other.goto(&format!("{base}/ui/pipelines/{pid}/map"));
    other.wait_for("bob's grid", &format!("return document.querySelector('{row}') ? true : null;"));
    assert!(other.find_all(&format!("{row} button.approve")).is_empty(), "bob is offered Approve");
    assert!(store.find_project("ship").await.unwrap().unwrap().last_build_id.is_none(), "ship ran unapproved");

    // Alice presses Approve: the stage runs, the grid shows who approved.
    browser.click(&format!("{row} button.approve"));
    browser.wait_for(
        "the approved stage to succeed on the grid",
        &format!(
            "const c = document.querySelector('{row} td[data-stage=\"prod\"]'); \
             return c && c.dataset.status === 'SUCCESS' && c.querySelector('.approved') ? true : null;"
        ),
    );
    assert_eq!(browser.text(&format!("{row} td[data-stage=\"prod\"] .approved")), "approved by alice");
    browser.run("document.querySelector('table.runs').scrollIntoView({ block: 'center' });", json!([]));
    browser.screenshot_checked(
        "pipeline-grid-approved.png",
        &[&format!("{row} td[data-stage=\"build\"] .badge"), &format!("{row} td[data-stage=\"prod\"] .badge")],
    );

    // The audit page: superusers only, filtered to approvals, names alice.
    other.goto(&format!("{base}/ui/audit"));
    assert!(!other.text("main").contains("pipeline.approve"), "bob reads the audit log");
    let admin_browser = driver.session();
    admin_browser.login(&base, "root");
    admin_browser.goto(&format!("{base}/ui/audit"));
    admin_browser.fill("#filter-action", "pipeline.approve");
    admin_browser.click("form.filters button[type=submit]");
    admin_browser.wait_for("the filtered audit page", "return location.search.includes('action=pipeline.approve');");
    let rows = admin_browser.run(
        "return [...document.querySelectorAll('main tbody tr')].map(r => [...r.cells].map(c => c.textContent.trim()));",
        json!([]),
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], json!("alice"), "{rows:?}");
    assert_eq!(rows[0][2], json!("127.0.0.1"), "the approver's address: {rows:?}");
    assert_eq!(rows[0][3], json!("pipeline.approve"), "{rows:?}");
    assert!(rows[0][4].as_str().unwrap().contains(&format!("pipeline #{pid}")), "{rows:?}");
    // Logins are there too when the filter is cleared.
    admin_browser.goto(&format!("{base}/ui/audit?action=login"));
    let actors = admin_browser.run(
        "return [...document.querySelectorAll('main tbody tr td:nth-child(2)')].map(c => c.textContent.trim());",
        json!([]),
    );
    for name in ["alice", "bob", "root"] {
        assert!(actors.as_array().unwrap().contains(&json!(name)), "{name} logged in: {actors}");
    }
    admin_browser.goto(&format!("{base}/ui/audit?action=pipeline.approve"));
    admin_browser.screenshot_checked("audit.png", &["header", "form.filters button[type=submit]"]);
}
