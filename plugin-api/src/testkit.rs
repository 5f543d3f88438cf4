//! A test kit for plugin authors (feature `testkit`): a recording host, fake
//! contexts, and one loader per kind ([`trigger`], [`scm`], ..., [`authentication`])
//! that builds a plugin through the same ABI constructor and trait object the
//! server uses, so a plugin is tested without a server, with plain Rust
//! values in and out; for plugins that call an HTTP API, a canned loopback
//! server that records what it was sent ([`serve_canned`]).
//!
//! ```
//! # use vespene_plugin_api::{serde_json::Value, Host, PluginResult, Trigger, TriggerContext};
//! # struct MyTrigger(String);
//! # impl Trigger for MyTrigger {
//! #     fn new(config: &Value) -> PluginResult<Self> {
//! #         Ok(MyTrigger(config["greeting"].as_str().ok_or("parameter 'greeting' is required")?.into()))
//! #     }
//! #     fn execute(&self, _: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
//! #         host.message(&self.0);
//! #         host.set_variable("greeted", "yes")
//! #     }
//! # }
//! use vespene_plugin_api::serde_json::json;
//! use vespene_plugin_api::testkit::{self, fake_trigger_context, RecordingHost};
//!
//! let host = RecordingHost::new();
//! let trigger = testkit::trigger::<MyTrigger>(json!({"greeting": "hi"})).unwrap();
//! trigger.execute(&fake_trigger_context("success"), &host).unwrap();
//! assert!(host.messages().iter().any(|l| l.contains("hi")));
//! assert_eq!(host.variables()["greeted"], "yes");
//!
//! let err = testkit::trigger::<MyTrigger>(json!({})).err().unwrap();
//! assert_eq!(err, "parameter 'greeting' is required");
//! ```
//!
//! The `*_from` loaders answer the raw ABI objects instead, for tests of the
//! boundary itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RErr, ROk, RResult, RSlice, RStr, RString, RVec},
};
use serde_json::{json, Map, Value};

use crate::abi::*;
use crate::*;

/// A host that records every line a plugin emits and runs commands as the
/// server does (stdout and stderr merged in order, stdin, timeouts), without
/// isolation. Secrets "decrypt" by stripping a `plain:` prefix.
#[derive(Default)]
pub struct RecordingHost {
    lines: Mutex<Vec<(Stream, String)>>,
    variables: Mutex<BTreeMap<String, String>>,
    cancelled: AtomicBool,
}

impl RecordingHost {
    /// A host with nothing recorded and no cancellation.
    pub fn new() -> Self {
        Self::default()
    }

    /// The callbacks to pass to a plugin call.
    pub fn host(&self) -> Host<'_> {
        Host {
            output: OutputSink_TO::from_ptr(self, TD_Opaque),
            cancel: CancelToken_TO::from_ptr(self, TD_Opaque),
            commands: CommandRunner_TO::from_ptr(self, TD_Opaque),
            secrets: SecretDecrypter_TO::from_ptr(self, TD_Opaque),
        }
    }

    /// Marks the build as stopped.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Every line recorded so far, with its stream.
    pub fn lines(&self) -> Vec<(Stream, String)> {
        self.lines.lock().unwrap().clone()
    }

    /// The housekeeping lines recorded so far.
    pub fn messages(&self) -> Vec<String> {
        self.of(Stream::Message)
    }

    /// The output lines recorded so far.
    pub fn outputs(&self) -> Vec<String> {
        self.of(Stream::Output)
    }

    /// The output variables set so far with [`Host::set_variable`].
    pub fn variables(&self) -> BTreeMap<String, String> {
        self.variables.lock().unwrap().clone()
    }

    fn of(&self, stream: Stream) -> Vec<String> {
        self.lines().into_iter().filter(|(s, _)| *s == stream).map(|(_, l)| l).collect()
    }

    fn record(&self, stream: Stream, text: &str) {
        self.lines.lock().unwrap().push((stream, text.to_string()));
    }
}

impl OutputSink for RecordingHost {
    fn emit(&self, stream: Stream, lines: RSlice<'_, RStr<'_>>) {
        for line in lines.iter() {
            self.record(stream, line.as_str());
        }
    }

    fn set_variable(&self, name: RStr<'_>, value: RStr<'_>) -> RResult<(), RString> {
        if let Err(e) = crate::check_variable_name(name.as_str()) {
            return RErr(e.into());
        }
        self.variables.lock().unwrap().insert(name.as_str().to_string(), value.as_str().to_string());
        ROk(())
    }
}

impl CancelToken for RecordingHost {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn remaining_ms(&self) -> i64 {
        -1
    }
}

impl CommandRunner for RecordingHost {
    fn run(&self, request: RStr<'_>) -> RResult<CommandOutcome, RString> {
        let req: CommandRequest = match serde_json::from_str(request.as_str()) {
            Ok(r) => r,
            Err(e) => return RErr(format!("bad command request: {e}").into()),
        };
        let stream = match req.stream {
            StreamName::Output => Stream::Output,
            StreamName::Message => Stream::Message,
        };
        // Like the server: the command line is logged first, and a stopped
        // build runs nothing more.
        if req.log_command {
            self.record(Stream::Message, &format!("running: {}", crate::runner::describe(&req)));
        }
        if self.is_cancelled() {
            return ROk(CommandOutcome { exit_code: -1, cancelled: true, last_line: RString::new() });
        }
        // The server's own runner: merged streams, stdin, timeout, process-group kill.
        match crate::runner::run(&req, None, |line| self.record(stream, line), &|| self.is_cancelled()) {
            Ok((outcome, _)) => ROk(outcome),
            Err(e) => RErr(e.into()),
        }
    }
}

impl SecretDecrypter for RecordingHost {
    fn decrypt(&self, stored: RStr<'_>) -> RResult<RString, RString> {
        ROk(stored.as_str().strip_prefix("plain:").unwrap_or(stored.as_str()).into())
    }
}

/// A build in its first seconds of running, for contexts.
pub fn fake_build() -> BuildInfo {
    BuildInfo {
        id: 42,
        status: "RUNNING".into(),
        working_dir: std::env::temp_dir().to_string_lossy().into_owned(),
        project_id: Some(7),
        worker_pool: Some("general".into()),
        variables: json!({}),
        launch_answers: json!({}),
        output_variables: json!({}),
        ..Default::default()
    }
}

/// A project named `demo`.
pub fn fake_project() -> ProjectInfo {
    ProjectInfo {
        id: 7,
        name: "demo".into(),
        scm_type: Some("none".into()),
        worker_pool: Some("general".into()),
        timeout_minutes: Some(60),
        ..Default::default()
    }
}

/// A trigger context for `hook` (`pre`, `success`, `failure`).
pub fn fake_trigger_context(hook: &str) -> TriggerContext {
    TriggerContext { hook: hook.into(), build: fake_build(), project: fake_project(), ..Default::default() }
}

/// A batch of output lines produced `offset_ms` after a build started at 0.
pub fn fake_lines(texts: &[&str], offset_ms: i64) -> (BatchInfo, Lines) {
    let info = BatchInfo { build_id: 42, build_started_unix_ms: 0 };
    let lines = texts.iter().map(|t| OutputLine::new(Stream::Output, offset_ms, *t)).collect();
    (info, lines)
}

// ------------------------------------------------------------ typed loaders

fn config_text(config: &Value) -> String {
    if config.is_null() {
        String::new()
    } else {
        config.to_string()
    }
}

fn to_text<T: serde::Serialize>(value: &T) -> RString {
    serde_json::to_string(value).expect("a value the test kit serializes").into()
}

fn from_text<T: serde::de::DeserializeOwned>(what: &str, json: RString) -> PluginResult<T> {
    serde_json::from_str(json.as_str()).map_err(|e| format!("the plugin answered an invalid {what}: {e}"))
}

fn plain<T>(result: RResult<T, RString>) -> PluginResult<T> {
    result.into_result().map_err(Into::into)
}

macro_rules! typed_loader {
    ($(#[$doc:meta])* $fn_name:ident, $author:path, $wrapper:ident, $boxed:ty, $ctor:ident) => {
        $(#[$doc])*
        pub struct $wrapper($boxed);

        /// Builds the plugin through its exported ABI constructor, exactly as
        /// the server does, from its settings parameters (`null` for none).
        pub fn $fn_name<T: $author>(config: Value) -> PluginResult<$wrapper> {
            plain(crate::export::$ctor::<T>(RStr::from(config_text(&config).as_str()))).map($wrapper)
        }
    };
}

typed_loader!(
    /// A trigger under test (from [`trigger`]).
    trigger, crate::Trigger, TestTrigger, TriggerBox, new_trigger
);
typed_loader!(
    /// An SCM plugin under test (from [`scm`]).
    scm, crate::Scm, TestScm, ScmBox, new_scm
);
typed_loader!(
    /// An isolation plugin under test (from [`isolation`]).
    isolation, crate::Isolation, TestIsolation, IsolationBox, new_isolation
);
typed_loader!(
    /// An output plugin under test (from [`output`]).
    output, crate::Output, TestOutput, OutputBox, new_output
);
typed_loader!(
    /// An authorization plugin under test (from [`authorization`]).
    authorization, crate::Authorization, TestAuthorization, AuthorizationBox, new_authorization
);
typed_loader!(
    /// An organization plugin under test (from [`organization`]).
    organization, crate::Organization, TestOrganization, OrganizationBox, new_organization
);
typed_loader!(
    /// A variables plugin under test (from [`variables`]).
    variables, crate::Variables, TestVariables, VariablesBox, new_variables
);
typed_loader!(
    /// A secrets plugin under test (from [`secrets`]).
    secrets, crate::Secrets, TestSecrets, SecretsBox, new_secrets
);
typed_loader!(
    /// An autoscaler under test (from [`autoscaler`]).
    autoscaler, crate::Autoscaler, TestAutoscaler, AutoscalerBox, new_autoscaler
);
typed_loader!(
    /// An authentication plugin under test (from [`authentication`]).
    authentication, crate::Authentication, TestAuthentication, AuthenticationBox, new_authentication
);

impl TestTrigger {
    /// Runs the trigger for `context`.
    pub fn execute(&self, context: &TriggerContext, host: &RecordingHost) -> PluginResult<()> {
        plain(self.0.execute(to_text(context).as_rstr(), &host.host()))
    }
}

impl TestScm {
    /// Checks out for `context`.
    pub fn checkout(&self, context: &ScmContext, host: &RecordingHost) -> PluginResult<CheckoutResult> {
        from_text("checkout result", plain(self.0.checkout(to_text(context).as_rstr(), &host.host()))?)
    }
}

impl TestIsolation {
    /// Runs the build's script for `context`; answers its exit code.
    pub fn execute(&self, context: &IsolationContext, host: &RecordingHost) -> PluginResult<i32> {
        plain(self.0.execute(to_text(context).as_rstr(), &host.host()))
    }
}

impl TestOutput {
    /// Filters the output lines `texts`, produced `offset_ms` after the build
    /// started; answers the texts kept, as stored.
    pub fn filter(&self, texts: &[&str], offset_ms: i64) -> PluginResult<Vec<String>> {
        let (info, lines) = fake_lines(texts, offset_ms);
        Ok(self.filter_lines(&info, lines)?.iter().map(|l| l.text().to_string()).collect())
    }

    /// Filters a batch of whole lines (streams and times of your own).
    pub fn filter_lines(&self, info: &BatchInfo, lines: Lines) -> PluginResult<Lines> {
        plain(self.0.filter(*info, lines))
    }

    /// Tells the plugin the build's output is complete.
    pub fn build_finished(&self, info: &BatchInfo) -> PluginResult<()> {
        plain(self.0.build_finished(*info))
    }
}

impl TestAuthorization {
    /// Whether `request` is allowed.
    pub fn check(&self, request: &AccessRequest) -> PluginResult<bool> {
        plain(self.0.check(to_text(request).as_rstr()))
    }

    /// The ids among `candidates` the requester may see.
    pub fn filter_list(&self, request: &AccessRequest, candidates: &[Value]) -> PluginResult<Vec<i64>> {
        plain(self.0.filter_list(to_text(request).as_rstr(), to_text(&candidates).as_rstr())).map(RVec::into_vec)
    }
}

impl TestOrganization {
    /// Lists the organization's repositories.
    pub fn find_repos(&self, organization: &Value, host: &RecordingHost) -> PluginResult<Vec<RepositoryRef>> {
        from_text("repository list", plain(self.0.find_repos(to_text(organization).as_rstr(), &host.host()))?)
    }

    /// Clones one repository into `dest`.
    pub fn clone_repo(
        &self,
        organization: &Value,
        repository: &RepositoryRef,
        dest: &str,
        host: &RecordingHost,
    ) -> PluginResult<()> {
        plain(self.0.clone_repo(
            to_text(organization).as_rstr(),
            to_text(repository).as_rstr(),
            RStr::from(dest),
            &host.host(),
        ))
    }
}

impl TestVariables {
    /// The variables computed for `context` on top of `existing`.
    pub fn compute(
        &self,
        context: &VariablesContext,
        existing: &Map<String, Value>,
    ) -> PluginResult<Map<String, Value>> {
        from_text("variables object", plain(self.0.compute(to_text(context).as_rstr(), to_text(existing).as_rstr()))?)
    }
}

impl TestSecrets {
    /// Whether `stored` is this plugin's.
    pub fn recognizes(&self, stored: &str) -> bool {
        self.0.recognizes(RStr::from(stored))
    }

    /// Encrypts a plain value.
    pub fn cloak(&self, plain_text: &str) -> PluginResult<String> {
        plain(self.0.cloak(RStr::from(plain_text))).map(Into::into)
    }

    /// Decrypts a stored value.
    pub fn decloak(&self, stored: &str) -> PluginResult<String> {
        plain(self.0.decloak(RStr::from(stored))).map(Into::into)
    }
}

impl TestAutoscaler {
    /// The plan for a pool's status.
    pub fn plan(&self, status: &PoolStatus) -> PluginResult<ScalePlan> {
        from_text("scale plan", plain(self.0.plan(to_text(status).as_rstr()))?)
    }

    /// Carries out a plan.
    pub fn scale(&self, status: &PoolStatus, plan: &ScalePlan, host: &RecordingHost) -> PluginResult<()> {
        plain(self.0.scale(to_text(status).as_rstr(), to_text(plan).as_rstr(), &host.host()))
    }
}

impl TestAuthentication {
    /// The verdict on a login.
    pub fn authenticate(&self, request: &LoginRequest, password: &str) -> PluginResult<LoginVerdict> {
        from_text("login verdict", plain(self.0.authenticate(to_text(request).as_rstr(), RStr::from(password)))?)
    }
}

// ------------------------------------------------------------ ABI-level loaders

macro_rules! loader {
    ($fn_name:ident, $author:path, $boxed:ty, $ctor:ident) => {
        /// Builds the plugin through its exported ABI constructor, exactly as the
        /// server does, from the JSON of its settings parameters.
        pub fn $fn_name<T: $author>(config_json: &str) -> Result<$boxed, String> {
            crate::export::$ctor::<T>(RStr::from(config_json)).into_result().map_err(Into::into)
        }
    };
}

loader!(trigger_from, crate::Trigger, TriggerBox, new_trigger);
loader!(scm_from, crate::Scm, ScmBox, new_scm);
loader!(isolation_from, crate::Isolation, IsolationBox, new_isolation);
loader!(output_from, crate::Output, OutputBox, new_output);
loader!(authorization_from, crate::Authorization, AuthorizationBox, new_authorization);
loader!(organization_from, crate::Organization, OrganizationBox, new_organization);
loader!(variables_from, crate::Variables, VariablesBox, new_variables);
loader!(secrets_from, crate::Secrets, SecretsBox, new_secrets);
loader!(autoscaler_from, crate::Autoscaler, AutoscalerBox, new_autoscaler);
loader!(authentication_from, crate::Authentication, AuthenticationBox, new_authentication);

/// Serializes a context for an ABI call.
pub fn to_json<T: serde::Serialize>(value: &T) -> RString {
    serde_json::to_string(value).expect("context serializes").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(host: &RecordingHost, request: CommandRequest) -> CommandOutcome {
        let json = serde_json::to_string(&request).unwrap();
        CommandRunner::run(host, RStr::from(json.as_str())).into_result().unwrap()
    }

    #[test]
    fn commands_run_as_on_the_server() {
        let host = RecordingHost::new();
        let outcome = run(&host, CommandRequest::shell("echo one; echo two >&2; echo three; exit 4"));
        assert_eq!((outcome.exit_code, outcome.cancelled), (4, false));
        assert_eq!(host.outputs(), ["one", "two", "three"], "in the order they were written");

        let fed = CommandRequest { stdin: Some("fed in\n".into()), ..CommandRequest::shell("cat") };
        run(&host, fed);
        assert_eq!(host.outputs().last().map(String::as_str), Some("fed in"));

        let slow = CommandRequest { timeout_seconds: Some(1), ..CommandRequest::shell("sleep 30; echo never") };
        let outcome = run(&host, slow);
        assert!(outcome.cancelled, "the time limit stops it");
        assert!(!host.outputs().iter().any(|l| l == "never"));
    }
}

/// One HTTP request as [`serve_canned`] saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `POST /path HTTP/1.1`.
    pub request_line: String,
    /// Header names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body (by its Content-Length).
    pub body: String,
}

impl SeenRequest {
    /// A header's value by its lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("the request body is not JSON ({e}): {}", self.body))
    }
}

/// For plugins that call an HTTP API (a chat service, a forge): a server on
/// 127.0.0.1 that answers each connection with the next canned
/// `(status, JSON body)` and records the request. It stops after the last
/// answer, or when no client came for 10 seconds; joining the handle answers
/// what it saw. The URL is `http://127.0.0.1:PORT`.
pub fn serve_canned(answers: Vec<(u16, &'static str)>) -> (String, std::thread::JoinHandle<Vec<SeenRequest>>) {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    listener.set_nonblocking(true).expect("a non-blocking listener");
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        for (status, body) in answers {
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break Some(stream),
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => break None,
                }
            };
            let Some(mut stream) = stream else { break };
            stream.set_nonblocking(false).expect("a blocking stream");
            stream.set_read_timeout(Some(Duration::from_secs(5))).expect("a read timeout");
            seen.push(read_request(&stream));
            let reply = format!(
                "HTTP/1.1 {status} Canned\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).expect("write the answer");
        }
        seen
    });
    (url, handle)
}

/// Reads one HTTP/1.1 request with a Content-Length body (for a test
/// server of your own, say one that hangs up without answering).
pub fn read_request(stream: &std::net::TcpStream) -> SeenRequest {
    use std::io::{BufRead, BufReader, Read};
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).expect("a request line");
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header is NAME: VALUE");
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let length: usize =
        headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().expect("a Content-Length"));
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    SeenRequest {
        request_line: request_line.trim_end().to_string(),
        headers,
        body: String::from_utf8(body).expect("a UTF-8 body"),
    }
}
