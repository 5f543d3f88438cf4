//! The raw, layout-checked interface: the `#[sabi_trait]` objects that cross the
//! library boundary, the root module every plugin exports and the plain data types
//! they exchange.
//!
//! Plugin authors rarely touch this module: implement the traits in the crate root
//! ([`crate::Trigger`], [`crate::Scm`], ...) and let [`crate::export_plugin!`]
//! build these objects. The server uses this module directly.
//!
//! # Evolution rules (what keeps 1.x plugins loading)
//!
//! * New plugin kinds are new constructor fields appended at the **end** of
//!   [`PluginModule`], after the `#[sabi(last_prefix_field)]` one; the host reads
//!   them through the generated accessors, which answer `None` for older plugins.
//! * New methods on a kind or a host callback are appended at the end of its trait
//!   and must have a default body: an older plugin's vtable lacks them and the
//!   default runs instead.
//! * Never reorder, remove or retype a field, method or argument; never add a
//!   variant to an existing `#[repr]` enum. Anything that must grow freely travels
//!   as JSON text (contexts, configuration, results).
//! * A breaking change bumps the major version of this crate; the server then
//!   refuses plugins of the other major version with one line naming both.
//! * Every addition bumps the minor version; the server flags plugins built on
//!   an older minor version (they load, but lack the newer methods and kinds).
//! * [`Host`] is a plain `#[repr(C)]` struct read by offset: it cannot gain a
//!   field within 1.x. Host capabilities grow as methods appended to its four
//!   callback objects, whose vtables are prefix types. Each has a default body
//!   that answers [`crate::missing_host_callback`]'s error: that default runs
//!   in the plugin when the server predates the method, so a newer plugin
//!   meets an older server's missing capability as an `Err`, never as a crash.
//!   How the loader checks older plugins: `docs/plugins/abi.md`.
//!
//! # History
//!
//! * 1.0: trigger, scm, isolation, output, authorization, organization,
//!   variables, secrets.
//! * 1.1: the autoscaler kind ([`PluginModule::new_autoscaler`]) and
//!   [`OutputAbi::build_finished`]. Plugins built on 1.0 keep loading: the host
//!   sees no autoscaler and the default `build_finished` runs for them.
//! * 1.2: the `use` action of the authorization contract
//!   ([`crate::ACCESS_ACTIONS`]) and the `shared` field of access objects. No
//!   layout change; the host asks authorization plugins built on 1.0 or 1.1
//!   `edit` where it would ask `use`, so they never grant more than before.
//! * 1.3: the authentication kind ([`PluginModule::new_authentication`]).
//!   Plugins built on 1.2 or older keep loading; the host sees no
//!   authentication constructor in them, as it sees no autoscaler in 1.0 ones.
//!   Also 1.3: the `approve` action of the authorization contract (manual
//!   approval stages of pipelines); plugins built before 1.3 are asked `edit`
//!   where the host would ask `approve`.
//! * 1.4: the host callback [`OutputSink::set_variable`] (a build output
//!   variable set directly). Plugins of every 1.x version keep loading; a 1.4
//!   plugin on an older server gets an error from it instead.

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RErr, ROk, RResult, RSlice, RStr, RString, RVec},
    RRef, StableAbi,
};

/// Which log of a build a line belongs to.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// What the build's own commands printed (stdout and stderr merged).
    Output = 0,
    /// Housekeeping: checkouts, triggers, commands run by the server or plugins.
    Message = 1,
}

/// One line of build output on its way into storage.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct OutputLine {
    /// Which log the line belongs to.
    pub stream: Stream,
    /// When the line was produced, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// The text, without the trailing newline.
    pub text: RString,
}

/// What an output plugin learns about the build a batch of lines belongs to.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// The build's id.
    pub build_id: i64,
    /// When the build started running, in milliseconds since the Unix epoch.
    pub build_started_unix_ms: i64,
}

/// The result of a command run through the host's [`CommandRunner`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// The exit code; `-1` when the process was killed by a signal.
    pub exit_code: i32,
    /// True when the command was stopped because the build was cancelled or timed out.
    pub cancelled: bool,
    /// The last line the command printed (empty if none).
    pub last_line: RString,
}

// ---------------------------------------------------------------- host callbacks

/// Streams lines into the running build's log, live, and (since 1.4) records
/// the build's output variables.
#[sabi_trait]
pub trait OutputSink: Send + Sync {
    /// Appends `lines` to the build's `stream`. The host runs them through the
    /// output plugin chain and masks secrets before they are stored.
    #[sabi(last_prefix_field)]
    fn emit(&self, stream: Stream, lines: RSlice<'_, RStr<'_>>);

    /// Since 1.4: sets the build's output variable `name` to `value`, as a
    /// `vespene/set NAME VALUE` line would, without the line. A server built
    /// before 1.4 lacks this callback: the default below runs in the plugin
    /// and refuses, so a plugin can tell and carry on.
    fn set_variable(&self, name: RStr<'_>, value: RStr<'_>) -> RResult<(), RString> {
        let _ = (name, value);
        RErr(crate::missing_host_callback("set_variable", "1.4").into())
    }
}

/// Tells long-running plugin work that the build was stopped or timed out.
#[sabi_trait]
pub trait CancelToken: Send + Sync {
    /// True once the build has been stopped or has run out of time.
    /// Check it between units of work and return promptly when it is set.
    fn is_cancelled(&self) -> bool;

    /// Milliseconds left before the build's timeout, or `-1` for no limit.
    #[sabi(last_prefix_field)]
    fn remaining_ms(&self) -> i64;
}

/// Runs commands for a plugin the way the server runs build commands: output
/// streamed live into the build log, `vespene/set` lines captured, the whole
/// process group killed on stop or timeout.
#[sabi_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs the command described by `request`, the JSON of a
    /// [`crate::CommandRequest`].
    #[sabi(last_prefix_field)]
    fn run(&self, request: RStr<'_>) -> RResult<CommandOutcome, RString>;
}

/// Decrypts secrets stored by the server (SSH keys, passwords), on demand.
#[sabi_trait]
pub trait SecretDecrypter: Send + Sync {
    /// Returns the plain text of a value the server stored encrypted.
    /// Plain values come back unchanged.
    #[sabi(last_prefix_field)]
    fn decrypt(&self, stored: RStr<'_>) -> RResult<RString, RString>;
}

/// A borrowed [`OutputSink`] object.
pub type OutputSinkRef<'a> = OutputSink_TO<'a, RRef<'a, ()>>;
/// A borrowed [`CancelToken`] object.
pub type CancelTokenRef<'a> = CancelToken_TO<'a, RRef<'a, ()>>;
/// A borrowed [`CommandRunner`] object.
pub type CommandRunnerRef<'a> = CommandRunner_TO<'a, RRef<'a, ()>>;
/// A borrowed [`SecretDecrypter`] object.
pub type SecretDecrypterRef<'a> = SecretDecrypter_TO<'a, RRef<'a, ()>>;

/// The callbacks the host lends a plugin for the duration of one call.
#[repr(C)]
#[derive(StableAbi)]
pub struct Host<'a> {
    /// Live output into the build's log.
    pub output: OutputSinkRef<'a>,
    /// Stop and timeout signal.
    pub cancel: CancelTokenRef<'a>,
    /// Command execution with streaming and process-group kill.
    pub commands: CommandRunnerRef<'a>,
    /// Decryption of stored secrets.
    pub secrets: SecretDecrypterRef<'a>,
}

// ---------------------------------------------------------------- plugin kinds

/// ABI object of a trigger plugin. See [`crate::Trigger`].
#[sabi_trait]
pub trait TriggerAbi: Send + Sync {
    /// Runs the trigger. `context` is the JSON of a [`crate::TriggerContext`].
    #[sabi(last_prefix_field)]
    fn execute(&self, context: RStr<'_>, host: &Host<'_>) -> RResult<(), RString>;
}

/// ABI object of an SCM plugin. See [`crate::Scm`].
#[sabi_trait]
pub trait ScmAbi: Send + Sync {
    /// Checks out into the context's work directory; answers the JSON of a
    /// [`crate::CheckoutResult`].
    #[sabi(last_prefix_field)]
    fn checkout(&self, context: RStr<'_>, host: &Host<'_>) -> RResult<RString, RString>;
}

/// ABI object of an isolation plugin. See [`crate::Isolation`].
#[sabi_trait]
pub trait IsolationAbi: Send + Sync {
    /// Runs the build's launch script; answers its exit code.
    #[sabi(last_prefix_field)]
    fn execute(&self, context: RStr<'_>, host: &Host<'_>) -> RResult<i32, RString>;
}

/// ABI object of an output plugin. See [`crate::Output`].
#[sabi_trait]
pub trait OutputAbi: Send + Sync {
    /// Transforms a batch of lines; lines left out of the answer are dropped.
    #[sabi(last_prefix_field)]
    fn filter(&self, info: BatchInfo, lines: RVec<OutputLine>) -> RResult<RVec<OutputLine>, RString>;

    /// Since 1.1: the build's output is complete (flush, close files). Plugins
    /// built on 1.0 lack it and this default runs instead.
    fn build_finished(&self, info: BatchInfo) -> RResult<(), RString> {
        let _ = info;
        ROk(())
    }
}

/// ABI object of an authorization plugin. See [`crate::Authorization`].
#[sabi_trait]
pub trait AuthorizationAbi: Send + Sync {
    /// Answers whether the JSON [`crate::AccessRequest`] is allowed.
    fn check(&self, request: RStr<'_>) -> RResult<bool, RString>;

    /// Of the JSON list of objects in `candidates`, the ids the requester may see.
    #[sabi(last_prefix_field)]
    fn filter_list(&self, request: RStr<'_>, candidates: RStr<'_>) -> RResult<RVec<i64>, RString>;
}

/// ABI object of an organization (import) plugin. See [`crate::Organization`].
#[sabi_trait]
pub trait OrganizationAbi: Send + Sync {
    /// Lists the organization's repositories as JSON [`crate::RepositoryRef`]s.
    fn find_repos(&self, organization: RStr<'_>, host: &Host<'_>) -> RResult<RString, RString>;

    /// Clones one repository (JSON [`crate::RepositoryRef`]) into `dest`.
    #[sabi(last_prefix_field)]
    fn clone_repo(
        &self,
        organization: RStr<'_>,
        repository: RStr<'_>,
        dest: RStr<'_>,
        host: &Host<'_>,
    ) -> RResult<(), RString>;
}

/// ABI object of a variables plugin. See [`crate::Variables`].
#[sabi_trait]
pub trait VariablesAbi: Send + Sync {
    /// Computes variables (a JSON object) from the JSON [`crate::VariablesContext`]
    /// and the variables computed so far.
    #[sabi(last_prefix_field)]
    fn compute(&self, context: RStr<'_>, existing: RStr<'_>) -> RResult<RString, RString>;
}

/// ABI object of a secrets plugin. See [`crate::Secrets`].
#[sabi_trait]
pub trait SecretsAbi: Send + Sync {
    /// Whether `stored` was produced by this plugin's `cloak`.
    fn recognizes(&self, stored: RStr<'_>) -> bool;
    /// Encrypts a plain value for storage.
    fn cloak(&self, plain: RStr<'_>) -> RResult<RString, RString>;
    /// Decrypts a value this plugin recognizes.
    #[sabi(last_prefix_field)]
    fn decloak(&self, stored: RStr<'_>) -> RResult<RString, RString>;
}

/// ABI object of an autoscaler plugin (since 1.1). See [`crate::Autoscaler`].
#[sabi_trait]
pub trait AutoscalerAbi: Send + Sync {
    /// Answers the JSON [`crate::ScalePlan`] for the JSON [`crate::PoolStatus`].
    fn plan(&self, status: RStr<'_>) -> RResult<RString, RString>;

    /// Carries out a plan (JSON [`crate::ScalePlan`]) for the pool in `status`.
    #[sabi(last_prefix_field)]
    fn scale(&self, status: RStr<'_>, plan: RStr<'_>, host: &Host<'_>) -> RResult<(), RString>;
}

/// ABI object of an authentication plugin (since 1.3). See [`crate::Authentication`].
#[sabi_trait]
pub trait AuthenticationAbi: Send + Sync {
    /// Checks a login: `request` is the JSON of a [`crate::LoginRequest`];
    /// the password travels on its own. Answers the JSON of a
    /// [`crate::LoginVerdict`], or an error when the directory cannot be asked.
    #[sabi(last_prefix_field)]
    fn authenticate(&self, request: RStr<'_>, password: RStr<'_>) -> RResult<RString, RString>;
}

/// Owned trigger object.
pub type TriggerBox = TriggerAbi_TO<'static, RBox<()>>;
/// Owned SCM object.
pub type ScmBox = ScmAbi_TO<'static, RBox<()>>;
/// Owned isolation object.
pub type IsolationBox = IsolationAbi_TO<'static, RBox<()>>;
/// Owned output object.
pub type OutputBox = OutputAbi_TO<'static, RBox<()>>;
/// Owned authorization object.
pub type AuthorizationBox = AuthorizationAbi_TO<'static, RBox<()>>;
/// Owned organization object.
pub type OrganizationBox = OrganizationAbi_TO<'static, RBox<()>>;
/// Owned variables object.
pub type VariablesBox = VariablesAbi_TO<'static, RBox<()>>;
/// Owned secrets object.
pub type SecretsBox = SecretsAbi_TO<'static, RBox<()>>;
/// Owned autoscaler object (since 1.1).
pub type AutoscalerBox = AutoscalerAbi_TO<'static, RBox<()>>;
/// Owned authentication object (since 1.3).
pub type AuthenticationBox = AuthenticationAbi_TO<'static, RBox<()>>;

/// A constructor: takes the JSON of the plugin's settings parameters.
pub type Ctor<T> = extern "C" fn(config: RStr<'_>) -> RResult<T, RString>;

// ---------------------------------------------------------------- root module

/// Who a plugin library is.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// The plugin's own name (its crate name by convention).
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// One line saying what it does.
    pub description: RString,
    /// The version of this interface crate the plugin was built against.
    pub interface_version: RString,
    /// The kinds it provides, as [`crate::Kind`] names (`trigger`, `scm`, ...).
    pub kinds: RVec<RString>,
}

/// The root module every plugin library exports (through [`crate::export_plugin!`]).
///
/// A prefix type: fields after the `last_prefix_field` may be absent in libraries
/// built against an older 1.x interface, and the host reads them through the
/// generated accessor methods of [`PluginModuleRef`].
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(option))]
pub struct PluginModule {
    /// Describes the library.
    pub info: extern "C" fn() -> PluginInfo,
    /// Builds a trigger from its parameters, if the library provides one.
    pub new_trigger: Option<extern "C" fn(config: RStr<'_>) -> RResult<TriggerBox, RString>>,
    /// Builds an SCM plugin, if provided.
    pub new_scm: Option<extern "C" fn(config: RStr<'_>) -> RResult<ScmBox, RString>>,
    /// Builds an isolation plugin, if provided.
    pub new_isolation: Option<extern "C" fn(config: RStr<'_>) -> RResult<IsolationBox, RString>>,
    /// Builds an output plugin, if provided.
    pub new_output: Option<extern "C" fn(config: RStr<'_>) -> RResult<OutputBox, RString>>,
    /// Builds an authorization plugin, if provided.
    pub new_authorization: Option<extern "C" fn(config: RStr<'_>) -> RResult<AuthorizationBox, RString>>,
    /// Builds an organization plugin, if provided.
    pub new_organization: Option<extern "C" fn(config: RStr<'_>) -> RResult<OrganizationBox, RString>>,
    /// Builds a variables plugin, if provided.
    pub new_variables: Option<extern "C" fn(config: RStr<'_>) -> RResult<VariablesBox, RString>>,
    /// Builds a secrets plugin, if provided.
    #[sabi(last_prefix_field)]
    pub new_secrets: Option<extern "C" fn(config: RStr<'_>) -> RResult<SecretsBox, RString>>,
    /// Since 1.1: builds an autoscaler, if provided. Absent in 1.0 plugins.
    pub new_autoscaler: Option<extern "C" fn(config: RStr<'_>) -> RResult<AutoscalerBox, RString>>,
    /// Since 1.3: builds an authentication plugin, if provided. Absent in
    /// plugins built on 1.2 and older.
    pub new_authentication: Option<extern "C" fn(config: RStr<'_>) -> RResult<AuthenticationBox, RString>>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "vespene_plugin";
    const NAME: &'static str = "vespene plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The interface version this crate defines (its package version).
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");
