//! # The Vespene plugin interface
//!
//! Every Vespene plugin, the shipped ones included, is a shared library (`.so`)
//! built against this crate and nothing else of the server. The server loads it at
//! start-up, checks that its layout and interface version match, and calls it
//! through `abi_stable` trait objects, so a plugin built with another compiler
//! version, or against an older 1.x release of this crate, keeps working.
//!
//! ## Writing a plugin
//!
//! 1. Make a `cdylib` crate depending on `vespene-plugin-api` (start from the
//!    `plugin-template` crate, or run `vespene plugins new NAME --kind KIND`).
//! 2. Implement one or more of the kind traits: [`Trigger`], [`Scm`],
//!    [`Isolation`], [`Output`], [`Authorization`], [`Organization`],
//!    [`Variables`], [`Secrets`], [`Autoscaler`], [`Authentication`].
//! 3. Export it with [`export_plugin!`].
//!
//! ```
//! use vespene_plugin_api::serde::Deserialize;
//! use vespene_plugin_api::serde_json::Value;
//! use vespene_plugin_api::{export_plugin, params, plugin_name, Host, Kind, PluginResult, Trigger, TriggerContext};
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
//! pub struct Hello { greeting: String }
//!
//! impl Trigger for Hello {
//!     fn new(config: &Value) -> PluginResult<Self> {
//!         params::parse(config, Kind::Trigger, plugin_name!())
//!     }
//!     fn execute(&self, ctx: &TriggerContext, host: &Host<'_>) -> PluginResult<()> {
//!         host.message(&format!("{} from build {}", self.greeting, ctx.build.id));
//!         Ok(())
//!     }
//! }
//!
//! export_plugin! { description: "Says hello", trigger: Hello }
//! ```
//!
//! The plugin's name is its library's: a crate whose `[lib] name` is
//! `vespene_hello` builds `libvespene_hello.so`, which settings name
//! `library = "hello"`, and [`plugin_name!`] answers `hello`.
//!
//! ## Testing a plugin
//!
//! The `testkit` feature loads a plugin through the same constructor and
//! trait object the server uses, with plain Rust values in and out:
//! `testkit::trigger::<Hello>(json!({"greeting": "hi"}))?.execute(&context, &host)`.
//! See the `testkit` module (built with the feature).
//!
//! ## What a plugin may and may not do
//!
//! * Blocking is fine: the host calls plugins on its blocking thread pool.
//! * Never use the host's tokio runtime; a plugin that needs async owns its own.
//! * Panics never cross the boundary: [`export_plugin!`] catches them and the
//!   call fails with the panic message, failing one build or request only.
//! * Configuration arrives as the JSON of the plugin's settings parameters and
//!   is checked in `new`: return an error naming the parameter and the problem;
//!   the server then refuses to start with that message. [`params::parse`]
//!   reads the parameters into a struct that derives `Deserialize`, every
//!   error naming the parameter in the same words as every other plugin
//!   ([`params::table`] and [`params::open_table`] for reading them by hand).
//! * Plugins never touch the database; everything they need is in the context.
//!
//! ## Keeping plugins loading across versions
//!
//! See the rules in [`abi`]: new kinds and methods are appended at the end with
//! defaults, nothing is reordered or retyped, and everything that must grow freely
//! travels as JSON. A plugin built against 1.0 loads in every 1.x server; the
//! server flags it as built on an older minor version, and refuses a plugin of
//! another major version with one line naming both versions.
//!
//! The server can grow too: a host callback added in a later 1.x (such as
//! [`Host::set_variable`], 1.4) answers an error naming the version it needs
//! when the server running the plugin is older, so a plugin may use it and
//! fall back.
//!
//! `abi_stable` carries the calls, but a plugin never names its types: the
//! traits take plain Rust values and JSON, [`Lines`] is the batch an output
//! plugin edits, and the test kit speaks plain values too. Were `abi_stable`
//! to be replaced, this crate would change underneath and plugins would be
//! rebuilt, not rewritten (`docs/plugins/abi.md`, "If abi_stable must go").

#![warn(missing_docs)]
// `#[sabi_trait]` expands to impls the non_local_definitions lint dislikes.
#![allow(non_local_definitions)]

pub mod abi;
mod context;
#[doc(hidden)]
pub mod export;
pub mod launch;
pub mod params;
pub mod planner;
pub mod repositories;
#[cfg(feature = "runner")]
pub mod runner;
pub mod shell;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use abi::{BatchInfo, CommandOutcome, Host, OutputLine, PluginInfo, Stream, INTERFACE_VERSION};

/// A batch of output lines, as an [`Output`] plugin edits it: a vector of
/// [`OutputLine`] (push, remove, `retain`, `iter_mut` as with a `Vec`).
pub type Lines = abi_stable::std_types::RVec<OutputLine>;

impl OutputLine {
    /// A line of `stream` produced at `at_unix_ms`.
    pub fn new(stream: Stream, at_unix_ms: i64, text: impl Into<String>) -> Self {
        OutputLine { stream, at_unix_ms, text: text.into().into() }
    }

    /// The line's text.
    pub fn text(&self) -> &str {
        self.text.as_str()
    }

    /// Replaces the line's text.
    pub fn set_text(&mut self, text: impl Into<String>) {
        self.text = text.into().into();
    }
}

/// Checks an output variable's name for [`Host::set_variable`]: a letter or
/// `_`, then letters, digits or `_`, at most 128 bytes, so templates reach
/// it as `{{ name }}`.
pub fn check_variable_name(name: &str) -> PluginResult<()> {
    let mut chars = name.chars();
    let starts_well = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !starts_well || name.len() > 128 || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "output variable name {name:?} is not allowed: use a letter or '_', then letters, digits or '_' \
             (at most 128)"
        ));
    }
    Ok(())
}

/// The error a host callback answers when the server running the plugin is
/// older than the callback: `callback` exists since interface `since`.
pub fn missing_host_callback(callback: &str, since: &str) -> String {
    format!(
        "this server does not offer the host callback '{callback}': it exists since plugin interface {since} \
         and the server running this plugin is older"
    )
}

/// The end of every piece of an output line longer than the limit but the
/// last: the line goes on in the next stored line.
pub const LINE_CONTINUES: &str = " [line continues]";
/// The longest output line kept whole by default (64 KiB): longer ones are
/// stored in pieces (the server's `limits.max_line_bytes`).
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// The length of `text`'s first piece of at most `max` bytes, cut at a
/// character boundary (at least one character, so a piece is never empty).
pub fn line_piece_len(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut cut = max;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        text.chars().next().map_or(0, char::len_utf8)
    } else {
        cut
    }
}

/// `text` in pieces of at most `max` bytes, each but the last ending with
/// [`LINE_CONTINUES`]; a line within the limit comes back whole.
pub fn split_long_line(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let n = line_piece_len(rest, max);
        pieces.push(format!("{}{LINE_CONTINUES}", &rest[..n]));
        rest = &rest[n..];
    }
    pieces.push(rest.to_string());
    pieces
}
pub use context::*;

/// Re-exported so plugins use the exact `abi_stable` this interface was built with.
pub use abi_stable;
/// Re-exported so a plugin's parameter struct derives `Deserialize` for
/// [`params::parse`] with the serde this interface was built with
/// (`#[serde(crate = "vespene_plugin_api::serde")]`).
pub use serde;
/// Re-exported for plugins' configuration and context handling.
pub use serde_json;

use abi_stable::std_types::{RSlice, RStr};
use serde_json::Value;

/// What plugin methods return: an error is one human-readable line.
pub type PluginResult<T> = Result<T, String>;

/// The plugin kinds, in the order of [`abi::PluginModule`]'s constructors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Runs before or after builds.
    Trigger,
    /// Checks out source code.
    Scm,
    /// Runs the build script somewhere safe.
    Isolation,
    /// Transforms build output lines.
    Output,
    /// Decides who may do what.
    Authorization,
    /// Imports projects from an organization of repositories.
    Organization,
    /// Computes build variables.
    Variables,
    /// Encrypts and decrypts stored secrets.
    Secrets,
    /// Plans and applies worker pool sizes (since 1.1).
    Autoscaler,
    /// Checks usernames and passwords against another directory (since 1.3).
    Authentication,
}

impl Kind {
    /// Every kind, in interface order.
    pub const ALL: [Kind; 10] = [
        Kind::Trigger,
        Kind::Scm,
        Kind::Isolation,
        Kind::Output,
        Kind::Authorization,
        Kind::Organization,
        Kind::Variables,
        Kind::Secrets,
        Kind::Autoscaler,
        Kind::Authentication,
    ];

    /// The kind's name as used in settings and plugin info.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Trigger => "trigger",
            Kind::Scm => "scm",
            Kind::Isolation => "isolation",
            Kind::Output => "output",
            Kind::Authorization => "authorization",
            Kind::Organization => "organization",
            Kind::Variables => "variables",
            Kind::Secrets => "secrets",
            Kind::Autoscaler => "autoscaler",
            Kind::Authentication => "authentication",
        }
    }

    /// Parses a kind name.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Host<'_> {
    /// Writes a housekeeping line to the build's message log.
    pub fn message(&self, text: &str) {
        self.output.emit(Stream::Message, RSlice::from_slice(&[RStr::from(text)]));
    }

    /// Writes a line to the build's output log.
    pub fn print(&self, text: &str) {
        self.output.emit(Stream::Output, RSlice::from_slice(&[RStr::from(text)]));
    }

    /// Whether the build was stopped or timed out.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Milliseconds left before the build's timeout, `None` for no limit.
    pub fn remaining_ms(&self) -> Option<u64> {
        u64::try_from(self.cancel.remaining_ms()).ok()
    }

    /// Runs a command through the host (streamed, cancellable).
    pub fn run(&self, request: &CommandRequest) -> PluginResult<CommandOutcome> {
        let json = serde_json::to_string(request).map_err(|e| e.to_string())?;
        self.commands.run(RStr::from(json.as_str())).into_result().map_err(Into::into)
    }

    /// Decrypts a stored secret.
    pub fn decrypt(&self, stored: &str) -> PluginResult<String> {
        self.secrets.decrypt(RStr::from(stored)).into_result().map(Into::into).map_err(Into::into)
    }

    /// Since 1.4: sets the build's output variable `name` (what later
    /// pipeline stages and triggers see), as a `vespene/set NAME VALUE` line
    /// would, without the line in the log. A server older than 1.4 answers
    /// [`missing_host_callback`]'s error; calls made outside a build (an
    /// autoscaler's `scale`) are refused too.
    pub fn set_variable(&self, name: &str, value: &str) -> PluginResult<()> {
        self.output.set_variable(RStr::from(name), RStr::from(value)).into_result().map_err(Into::into)
    }
}

/// A trigger: runs before a build (`pre_triggers`; an error fails the build
/// before its script runs) or after it (`success_triggers`, `failure_triggers`).
pub trait Trigger: Send + Sync + Sized + 'static {
    /// Builds the trigger from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Runs the trigger for one build.
    fn execute(&self, context: &TriggerContext, host: &Host<'_>) -> PluginResult<()>;
}

/// An SCM plugin: fills the build's empty work directory from a repository.
///
/// Its checklist: public checkouts; a named branch, and only that branch;
/// private content with the SSH keys and logins stored in Vespene; the revision
/// checked out; who made the last change on the branch.
pub trait Scm: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Checks out `context.repo_url` into `context.work_dir`.
    fn checkout(&self, context: &ScmContext, host: &Host<'_>) -> PluginResult<CheckoutResult>;
}

/// An isolation plugin: runs the launch script in the build root, streaming its
/// output, honouring the cancel token, and answers the exit code.
pub trait Isolation: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Runs the build's script.
    fn execute(&self, context: &IsolationContext, host: &Host<'_>) -> PluginResult<i32>;
}

/// An output plugin: sees every batch of lines before it is stored. Remove a
/// line from `lines` to drop it. This is the hot path: keep it cheap.
pub trait Output: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Transforms a batch in place.
    fn filter(&self, info: &BatchInfo, lines: &mut Lines) -> PluginResult<()>;

    /// Called once a build's output is complete (since 1.1): flush buffers,
    /// close files. Does nothing by default.
    fn build_finished(&self, info: &BatchInfo) -> PluginResult<()> {
        let _ = info;
        Ok(())
    }
}

/// An authorization plugin. Every configured one must allow an action.
pub trait Authorization: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Whether the request is allowed.
    fn check(&self, request: &AccessRequest) -> PluginResult<bool>;
    /// The ids, among `candidates`, that the requester may see in a listing.
    /// The default keeps all of them when `check` allows the listing.
    fn filter_list(&self, request: &AccessRequest, candidates: &[Value]) -> PluginResult<Vec<i64>> {
        if self.check(request)? {
            Ok(candidates.iter().filter_map(|c| c.get("id").and_then(Value::as_i64)).collect())
        } else {
            Ok(Vec::new())
        }
    }
}

/// An organization plugin: lists and clones an organization's repositories.
/// Reading `.vespene` files and updating projects is the server's job.
pub trait Organization: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Lists the repositories of the organization described by `organization`.
    fn find_repos(&self, organization: &Value, host: &Host<'_>) -> PluginResult<Vec<RepositoryRef>>;
    /// Clones `repository` (its default branch, shallow) into `dest`.
    fn clone_repo(
        &self,
        organization: &Value,
        repository: &RepositoryRef,
        dest: &str,
        host: &Host<'_>,
    ) -> PluginResult<()>;
}

/// A variables plugin: contributes variables merged over the earlier plugins'.
pub trait Variables: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Computes this plugin's variables (a JSON object).
    fn compute(
        &self,
        context: &VariablesContext,
        existing: &serde_json::Map<String, Value>,
    ) -> PluginResult<serde_json::Map<String, Value>>;
}

/// A secrets plugin: the first configured one encrypts; any that recognizes a
/// stored value decrypts it.
pub trait Secrets: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Whether `stored` carries this plugin's header.
    fn recognizes(&self, stored: &str) -> bool;
    /// Encrypts a value; the answer must start with a versioned header.
    fn cloak(&self, plain: &str) -> PluginResult<String>;
    /// Decrypts a value this plugin recognizes.
    fn decloak(&self, stored: &str) -> PluginResult<String>;
}

/// An autoscaler (since 1.1): decides how many workers a pool needs and makes
/// it so, e.g. by running a command that starts or stops worker machines.
pub trait Autoscaler: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// The size the pool should have now.
    fn plan(&self, status: &PoolStatus) -> PluginResult<ScalePlan>;
    /// Applies `plan` to the pool.
    fn scale(&self, status: &PoolStatus, plan: &ScalePlan, host: &Host<'_>) -> PluginResult<()>;
}

/// An authentication plugin (since 1.3): checks a username and password
/// against another directory (LDAP, ...) and says who the user is. The host
/// creates the Vespene account on the first accepted login and syncs its
/// groups and superuser flag on every one.
///
/// Answer [`LoginVerdict::Rejected`] for an unknown user or a wrong password,
/// and an error only when the directory cannot be asked (down, misconfigured):
/// the host then says the source is unavailable, and logs the error. Never
/// put the password in an answer or an error.
pub trait Authentication: Send + Sync + Sized + 'static {
    /// Builds the plugin from its settings parameters.
    fn new(config: &Value) -> PluginResult<Self>;
    /// Checks `password` for the user in `request`.
    fn authenticate(&self, request: &LoginRequest, password: &str) -> PluginResult<LoginVerdict>;
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_macro_uses_abi_stables_symbol_name() {
        assert_eq!(abi_stable::library::ROOT_MODULE_LOADER_NAME, "_1as_0lib_1header_0root_bmodule_bloader");
    }

    #[test]
    fn older_plugins_are_asked_edit_for_the_actions_they_predate() {
        use crate::action_for_interface as asked;
        assert_eq!(asked("use", (1, 1)), "edit");
        assert_eq!(asked("use", (1, 2)), "use");
        assert_eq!(asked("approve", (1, 0)), "edit");
        assert_eq!(asked("approve", (1, 2)), "edit");
        assert_eq!(asked("approve", (1, 3)), "approve");
        assert_eq!(asked("view", (1, 0)), "view");
        assert!(crate::ACCESS_ACTIONS.contains(&"approve"));
    }
}
