//! The `slack` trigger plugin: posts a message about the build to a Slack
//! channel, through the Web API's `chat.postMessage` with a bot token.
//!
//! The message is a minijinja template over the trigger context (`hook`,
//! `build`, `project`), one per hook, rendered with strict undefined checking.
//! Templates are compiled when the server starts, so a syntax error is a
//! configuration error. Every request is bounded by a 10 second timeout.
//!
//! A failed post fails the trigger with Slack's own error code (such as
//! `channel_not_found` or `not_in_channel`), the HTTP status, or the network
//! error. The token is never written to a message or an error.
//!
//! ```toml
//! [plugins.failure_triggers.slack]
//! library = "slack"
//! channel = "#builds"                 # a channel name or id
//! token = "xoxb-..."                  # a bot token with the chat:write scope
//! message_failure = "{{ project.name }} build {{ build.id }} failed :boom:"   # optional
//! # base_url = "https://slack.com/api"   # optional, for a proxy or a test server
//! ```
//!
//! The default messages are [`DEFAULT_PRE`], [`DEFAULT_SUCCESS`] and
//! [`DEFAULT_FAILURE`].
//!
//! Every value a `{{ ... }}` puts into a message is escaped as Slack asks
//! (`&`, `<` and `>` become `&amp;`, `&lt;` and `&gt;`), so a project named
//! `<!channel>` is shown, not obeyed. The template's own text is not escaped
//! (write `<!here>` there to mention the channel); `{{ value | raw }}` pastes
//! a value unescaped.

use std::time::Duration;

use minijinja::{Environment, Error, Output, State, UndefinedBehavior, Value as JinjaValue};
use vespene_plugin_api::serde_json::{self, json, Map, Value};
use vespene_plugin_api::{export_plugin, params, Host, Kind, PluginResult, Trigger, TriggerContext};

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["channel", "token", "base_url", "message_pre", "message_success", "message_failure"];

/// The Slack Web API.
pub const DEFAULT_BASE_URL: &str = "https://slack.com/api";

/// The message posted by a `pre` trigger unless `message_pre` is set.
pub const DEFAULT_PRE: &str = "Vespene build {{ build.id }} of {{ project.name }} started";

/// The message posted by a `success` trigger unless `message_success` is set.
pub const DEFAULT_SUCCESS: &str = "Vespene build {{ build.id }} of {{ project.name }} succeeded";

/// The message posted by a `failure` trigger unless `message_failure` is set.
pub const DEFAULT_FAILURE: &str = "Vespene build {{ build.id }} of {{ project.name }} FAILED\
{% if build.return_code is not none %} (exit code {{ build.return_code }}){% endif %}";

/// How long one post may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The hooks, each with its template parameter and default.
const HOOKS: [(&str, &str, &str); 3] = [
    ("pre", "message_pre", DEFAULT_PRE),
    ("success", "message_success", DEFAULT_SUCCESS),
    ("failure", "message_failure", DEFAULT_FAILURE),
];

/// The `slack` trigger.
pub struct SlackTrigger {
    /// Where messages go, as configured (`#builds`, `builds` or an id).
    channel: String,
    /// The bearer token; never shown.
    token: String,
    /// `{base_url}/chat.postMessage`.
    endpoint: String,
    /// The compiled message templates, named after their parameters.
    templates: Environment<'static>,
    /// The templates' texts by parameter, to quote the part an error points at.
    sources: Vec<(&'static str, String)>,
    /// Keeps connections for later posts; made by the first post, so a server
    /// that never posts does not set up TLS.
    agent: std::sync::OnceLock<ureq::Agent>,
}

// By hand, so the token never reaches a log through `{:?}`.
impl std::fmt::Debug for SlackTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackTrigger")
            .field("channel", &self.channel)
            .field("token", &"<hidden>")
            .field("endpoint", &self.endpoint)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

/// A template error in one line, quoting the failing part of `source` when
/// minijinja knows it ("undefined value" alone does not say which one).
fn describe(err: &minijinja::Error, source: &str) -> String {
    match err.range().and_then(|r| source.get(r)) {
        Some(at) if !at.trim().is_empty() => format!("{err} at `{at}`"),
        _ => err.to_string(),
    }
}

/// At most the first 200 characters of the first line of `text`, for errors.
fn excerpt(text: &str) -> String {
    let line = text.trim().lines().next().unwrap_or("");
    let mut short: String = line.chars().take(200).collect();
    if short.len() < line.len() {
        short.push_str("...");
    }
    short
}

/// A required string parameter.
fn required<'a>(params: &'a Map<String, Value>, name: &str) -> PluginResult<&'a str> {
    match params.get(name).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(format!("parameter '{name}' (a non-empty string) is required")),
    }
}

/// Checks `base_url` and answers the `chat.postMessage` endpoint under it.
fn endpoint(base_url: Option<&Value>) -> PluginResult<String> {
    let base = match base_url {
        None => DEFAULT_BASE_URL,
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("parameter 'base_url' must be a string".to_string()),
    };
    let rest = base.strip_prefix("https://").or_else(|| base.strip_prefix("http://"));
    let valid = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && base.parse::<ureq::http::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if !valid {
        return Err(format!("parameter 'base_url' must be an http:// or https:// URL, not '{base}'"));
    }
    Ok(format!("{}/chat.postMessage", base.trim_end_matches('/')))
}

impl SlackTrigger {
    /// Renders the message for one build: the template of `context.hook`.
    pub fn render(&self, context: &TriggerContext) -> PluginResult<String> {
        let (_, name, _) = HOOKS
            .iter()
            .find(|(hook, _, _)| *hook == context.hook)
            .ok_or_else(|| format!("slack: unknown hook '{}' (expected pre, success or failure)", context.hook))?;
        // The context's own JSON (hook, build, project and any newer fields).
        let vars = serde_json::to_value(context).map_err(|e| e.to_string())?;
        let source = self.sources.iter().find(|(n, _)| n == name).map_or("", |(_, s)| s.as_str());
        self.templates
            .get_template(name)
            .and_then(|t| t.render(&vars))
            .map_err(|e| format!("slack: cannot render {name}: {}", describe(&e, source)))
    }

    /// The channel as shown in messages: `#builds`.
    fn shown_channel(&self) -> String {
        format!("#{}", self.channel.trim_start_matches('#'))
    }

    /// Removes the token from text bound for a log, whatever produced it.
    fn scrub(&self, text: String) -> String {
        if text.contains(&self.token) {
            text.replace(&self.token, "<token>")
        } else {
            text
        }
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(TIMEOUT))
                // Slack's non-200 answers are read and reported, not turned into bare errors.
                .http_status_as_error(false)
                .user_agent(concat!("vespene-plugin-slack/", env!("CARGO_PKG_VERSION")))
                .build()
                .new_agent()
        })
    }

    /// Posts `text`; answers an error line naming what went wrong.
    fn post(&self, text: &str) -> PluginResult<()> {
        let body = json!({ "channel": self.channel, "text": text }).to_string();
        let mut response = self
            .agent()
            .post(&self.endpoint)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/json; charset=utf-8")
            .send(body.as_str())
            .map_err(|e| format!("slack: cannot post to {}: {e}", self.endpoint))?;
        let status = response.status();
        let answer = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("slack: cannot read the answer of {} (HTTP {status}): {e}", self.endpoint))?;
        if status != ureq::http::StatusCode::OK {
            let detail = excerpt(&answer);
            let detail = if detail.is_empty() { String::new() } else { format!(": {detail}") };
            return Err(format!("slack: {} answered HTTP {status}{detail}", self.endpoint));
        }
        let answer: Value = serde_json::from_str(&answer).map_err(|_| {
            format!("slack: {} answered something that is not JSON: {}", self.endpoint, excerpt(&answer))
        })?;
        match answer.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(()),
            Some(false) => {
                let code = answer.get("error").and_then(Value::as_str).unwrap_or("no error code given");
                Err(format!("slack: posting to {} failed: {code}", self.shown_channel()))
            }
            None => {
                Err(format!("slack: {} answered JSON without 'ok': {}", self.endpoint, excerpt(&answer.to_string())))
            }
        }
    }
}

/// Escapes text for a Slack message: `&`, `<`, `>` (Slack's control characters).
pub fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes what a `{{ ... }}` yields Slack-escaped, unless marked raw/safe.
fn escaping_formatter(out: &mut Output, state: &State, value: &JinjaValue) -> Result<(), Error> {
    if value.is_safe() || value.is_undefined() || value.is_none() {
        return minijinja::escape_formatter(out, state, value);
    }
    out.write_str(&slack_escape(&value.to_string())).map_err(Error::from)
}

impl Trigger for SlackTrigger {
    fn new(config: &Value) -> PluginResult<Self> {
        // Refused here, not by params::table, which would quote the value: a misplaced token would be in it.
        if !matches!(config, Value::Object(_) | Value::Null) {
            return Err("the parameters of trigger plugin slack must be a table".to_string());
        }
        let params = params::table(config, Kind::Trigger, "slack", PARAMETERS)?;
        let channel = required(params, "channel")?.trim().to_string();
        let token = required(params, "token")?;
        // It goes into a header: refuse what would break it, without quoting it.
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("parameter 'token' must not contain spaces or control characters".to_string());
        }
        let endpoint = endpoint(params.get("base_url"))?;

        let mut templates = Environment::new();
        templates.set_undefined_behavior(UndefinedBehavior::Strict);
        templates.set_formatter(escaping_formatter);
        templates.add_filter("raw", |v: JinjaValue| {
            JinjaValue::from_safe_string(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        });
        templates.add_filter("shell_quote", |v: JinjaValue| {
            vespene_plugin_api::shell::quote(&v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                .map(JinjaValue::from_safe_string)
                .map_err(|e| Error::new(minijinja::ErrorKind::InvalidOperation, e))
        });
        let mut sources = Vec::new();
        for (_, name, default) in HOOKS {
            let source = match params.get(name) {
                None => default.to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return Err(format!("parameter '{name}' must be a string")),
            };
            // Compiling here turns a syntax error into a start-up error, not a failed build.
            templates
                .add_template_owned(name, source.clone())
                .map_err(|e| format!("parameter '{name}' is not a valid template: {}", describe(&e, &source)))?;
            sources.push((name, source));
        }

        Ok(SlackTrigger {
            channel,
            token: token.to_string(),
            endpoint,
            templates,
            sources,
            agent: std::sync::OnceLock::new(),
        })
    }

    fn execute(&self, context: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
        let text = self.render(context)?;
        self.post(&text).map_err(|e| self.scrub(e))?;
        host.message(&format!("slack: posted to {}", self.shown_channel()));
        Ok(())
    }
}

export_plugin! {
    name: "slack",
    description: "Trigger that posts build notifications to a Slack channel",
    trigger: SlackTrigger,
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{
        self, fake_trigger_context, read_request, serve_canned, RecordingHost, SeenRequest as Seen,
    };
    use vespene_plugin_api::{Trigger, TriggerContext};

    use super::SlackTrigger;

    const TOKEN: &str = "xoxb-1234-SECRET-token";

    /// The canned server's URL with Slack's API prefix.
    fn serve(answers: Vec<(u16, &'static str)>) -> (String, JoinHandle<Vec<Seen>>) {
        let (url, handle) = serve_canned(answers);
        (format!("{url}/api"), handle)
    }

    fn config(base_url: &str, extra: Value) -> Value {
        let mut cfg = json!({ "channel": "#builds", "token": TOKEN, "base_url": base_url });
        cfg.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        cfg
    }

    fn execute(config: &Value, ctx: &TriggerContext, host: &RecordingHost) -> Result<(), String> {
        testkit::trigger::<SlackTrigger>(config.clone())?.execute(ctx, host)
    }

    #[test]
    fn posts_each_hooks_default_message() {
        let ok = r#"{"ok": true, "channel": "C123", "ts": "1.2"}"#;
        let (base_url, server) = serve(vec![(200, ok), (200, ok), (200, ok)]);
        let cfg = config(&base_url, json!({}));
        let host = RecordingHost::new();

        let mut failure = fake_trigger_context("failure");
        failure.build.return_code = Some(2);
        for ctx in [fake_trigger_context("pre"), fake_trigger_context("success"), failure] {
            execute(&cfg, &ctx, &host).unwrap();
        }

        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3);
        for request in &seen {
            assert_eq!(request.request_line, "POST /api/chat.postMessage HTTP/1.1");
            assert_eq!(request.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
            assert_eq!(request.header("content-type"), Some("application/json; charset=utf-8"));
        }
        let bodies: Vec<Value> = seen.iter().map(Seen::json).collect();
        assert_eq!(
            bodies,
            [
                json!({"channel": "#builds", "text": "Vespene build 42 of demo started"}),
                json!({"channel": "#builds", "text": "Vespene build 42 of demo succeeded"}),
                json!({"channel": "#builds", "text": "Vespene build 42 of demo FAILED (exit code 2)"}),
            ]
        );
        assert_eq!(host.messages(), ["slack: posted to #builds"; 3]);
        assert!(host.outputs().is_empty());
    }

    #[test]
    fn the_failure_message_leaves_out_an_unknown_exit_code() {
        let (base_url, server) = serve(vec![(200, r#"{"ok": true}"#)]);
        execute(&config(&base_url, json!({})), &fake_trigger_context("failure"), &RecordingHost::new()).unwrap();
        assert_eq!(server.join().unwrap()[0].json()["text"], "Vespene build 42 of demo FAILED");
    }

    #[test]
    fn custom_templates_see_the_whole_context() {
        let (base_url, server) = serve(vec![(200, r#"{"ok": true}"#)]);
        let cfg = config(
            &base_url,
            json!({ "channel": "C0123", "message_success": "{{ project.name }} #{{ build.id }} {{ hook }} on {{ build.worker_pool }}" }),
        );
        let host = RecordingHost::new();
        execute(&cfg, &fake_trigger_context("success"), &host).unwrap();

        let seen = server.join().unwrap();
        assert_eq!(seen[0].json(), json!({"channel": "C0123", "text": "demo #42 success on general"}));
        assert_eq!(host.messages(), ["slack: posted to #C0123"]);
    }

    #[test]
    fn an_undefined_variable_fails_without_posting() {
        let (base_url, server) = serve(vec![]);
        let cfg = config(&base_url, json!({ "message_pre": "starting {{ build.no_such_field }}" }));
        let err = execute(&cfg, &fake_trigger_context("pre"), &RecordingHost::new()).unwrap_err();
        assert!(err.starts_with("slack: cannot render message_pre: "), "{err}");
        assert!(err.ends_with(" at `build.no_such_field`"), "{err}");
        assert!(server.join().unwrap().is_empty());
    }

    #[test]
    fn slacks_error_code_is_surfaced() {
        let (base_url, server) = serve(vec![(200, r#"{"ok": false, "error": "channel_not_found"}"#)]);
        let host = RecordingHost::new();
        let err = execute(&config(&base_url, json!({})), &fake_trigger_context("success"), &host).unwrap_err();
        assert_eq!(err, "slack: posting to #builds failed: channel_not_found");
        assert!(host.messages().is_empty());
        server.join().unwrap();
    }

    #[test]
    fn http_errors_and_odd_answers_are_named_without_the_token() {
        // Even a server echoing the token back does not get it into the error.
        let echo: &'static str = Box::leak(format!("bad token {TOKEN}").into_boxed_str());
        let (base_url, server) =
            serve(vec![(500, "internal trouble"), (429, ""), (200, "<html>proxy</html>"), (401, echo), (200, "{}")]);
        let cfg = config(&base_url, json!({}));
        let ctx = fake_trigger_context("success");
        let endpoint = format!("{base_url}/chat.postMessage");

        let errors: Vec<String> = (0..5).map(|_| execute(&cfg, &ctx, &RecordingHost::new()).unwrap_err()).collect();
        server.join().unwrap();

        assert_eq!(errors[0], format!("slack: {endpoint} answered HTTP 500 Internal Server Error: internal trouble"));
        assert_eq!(errors[1], format!("slack: {endpoint} answered HTTP 429 Too Many Requests"));
        assert_eq!(errors[2], format!("slack: {endpoint} answered something that is not JSON: <html>proxy</html>"));
        assert_eq!(errors[3], format!("slack: {endpoint} answered HTTP 401 Unauthorized: bad token <token>"));
        assert_eq!(errors[4], format!("slack: {endpoint} answered JSON without 'ok': {{}}"));
        for err in &errors {
            assert!(!err.contains(TOKEN), "{err}");
        }
    }

    #[test]
    fn a_network_error_names_the_endpoint_not_the_token() {
        // A server that reads the request and hangs up without answering.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            read_request(&stream);
        });
        let base_url = format!("http://{addr}/api/");
        let started = Instant::now();
        let err =
            execute(&config(&base_url, json!({})), &fake_trigger_context("pre"), &RecordingHost::new()).unwrap_err();
        server.join().unwrap();
        assert!(err.starts_with(&format!("slack: cannot post to http://{addr}/api/chat.postMessage: ")), "{err}");
        assert!(!err.contains(TOKEN), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn an_unknown_hook_is_an_error() {
        let cfg = config("http://127.0.0.1:9/api", json!({}));
        let err = execute(&cfg, &fake_trigger_context("post"), &RecordingHost::new()).unwrap_err();
        assert_eq!(err, "slack: unknown hook 'post' (expected pre, success or failure)");
    }

    #[test]
    fn bad_configuration_is_named_without_the_token() {
        let t = TOKEN;
        let cases = [
            (json!({ "token": t }), "parameter 'channel' (a non-empty string) is required"),
            (json!({ "channel": " ", "token": t }), "parameter 'channel' (a non-empty string) is required"),
            (json!({ "channel": "#b" }), "parameter 'token' (a non-empty string) is required"),
            (json!({ "channel": "#b", "token": 5 }), "parameter 'token' (a non-empty string) is required"),
            (
                json!({ "channel": "#b", "token": format!("{t}\n") }),
                "parameter 'token' must not contain spaces or control characters",
            ),
            (
                json!({ "channel": "#b", "token": t, "base_url": "ftp://x" }),
                "parameter 'base_url' must be an http:// or https:// URL, not 'ftp://x'",
            ),
            (
                json!({ "channel": "#b", "token": t, "base_url": "https://" }),
                "parameter 'base_url' must be an http:// or https:// URL, not 'https://'",
            ),
            (
                json!({ "channel": "#b", "token": t, "base_url": "slack.com/api" }),
                "parameter 'base_url' must be an http:// or https:// URL, not 'slack.com/api'",
            ),
            (json!({ "channel": "#b", "token": t, "base_url": 1 }), "parameter 'base_url' must be a string"),
            (json!({ "channel": "#b", "token": t, "message_pre": 1 }), "parameter 'message_pre' must be a string"),
            (
                json!({ "channel": "#b", "token": t, "chanel": "#c" }),
                "unknown parameter 'chanel' for trigger plugin slack",
            ),
            (
                json!({ "channel": "#b", "token": t, "a": 1, "b": 2 }),
                "unknown parameters 'a', 'b' for trigger plugin slack",
            ),
            (json!([t]), "the parameters of trigger plugin slack must be a table"),
        ];
        for (cfg, expected) in cases {
            let err = testkit::trigger::<SlackTrigger>(cfg.clone()).err().unwrap();
            assert_eq!(err, expected, "{cfg}");
            assert!(!err.contains(TOKEN));
        }
        assert_eq!(
            testkit::trigger::<SlackTrigger>(Value::Null).err().unwrap(),
            "parameter 'channel' (a non-empty string) is required"
        );
    }

    #[test]
    fn a_template_syntax_error_is_a_configuration_error() {
        let cfg = json!({ "channel": "#b", "token": TOKEN, "message_failure": "{{ build.id" });
        let err = testkit::trigger::<SlackTrigger>(cfg).err().unwrap();
        assert!(err.starts_with("parameter 'message_failure' is not a valid template: "), "{err}");
        assert!(err.contains("syntax error"), "{err}");
    }

    #[test]
    fn the_default_base_url_is_slacks_and_debug_hides_the_token() {
        let trigger = SlackTrigger::new(&json!({ "channel": "#b", "token": TOKEN })).unwrap();
        let shown = format!("{trigger:?}");
        assert!(shown.contains("endpoint: \"https://slack.com/api/chat.postMessage\""), "{shown}");
        assert!(!shown.contains(TOKEN), "{shown}");
    }

    #[test]
    fn templated_values_are_escaped_for_slack_and_the_template_text_is_not() {
        let mut ctx = fake_trigger_context("success");
        ctx.project.name = "<!channel> & co".into();
        let config = json!({"channel": "c", "token": TOKEN,
            "message_success": "<!here> {{ project.name }} / {{ project.name | raw }}"});
        let trigger = <SlackTrigger as Trigger>::new(&config).unwrap();
        assert_eq!(trigger.render(&ctx).unwrap(), "<!here> &lt;!channel&gt; &amp; co / <!channel> & co");
    }
}
