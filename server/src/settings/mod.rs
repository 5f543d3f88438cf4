//! Settings: layered TOML with built-in defaults.
//!
//! Owns the settings schema and the layering rule: built-in defaults, then
//! `/etc/vespene/settings.toml`, then `/etc/vespene/settings.d/*.toml` in name
//! order, then `--config FILE`, then `VESPENE_*` environment variables
//! (`VESPENE_DATA_DIR`, `VESPENE_SERVER__LISTEN`: `__` separates nesting). Tables
//! merge key by key, so a file in `settings.d` can add one plugin entry without
//! restating the rest. Nothing here loads plugins; see [`crate::plugins`].

mod plugins;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

pub use plugins::{PluginEntry, PluginSection, PluginSettings};

/// Where the system-wide settings live.
pub const SYSTEM_DIR: &str = "/etc/vespene";

/// The effective settings of one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the database, the secret key and build roots live by default.
    pub data_dir: PathBuf,
    /// Directories searched, in order, for plugins named by bare name.
    pub plugin_path: PluginPath,
    /// Where build roots are created; `<data_dir>-builds` when empty: outside
    /// the private data directory, so build identities can reach their roots.
    #[serde(default)]
    pub build_root: Option<PathBuf>,
    /// The web server.
    pub server: ServerSettings,
    /// The database.
    pub database: DatabaseSettings,
    /// Workers embedded in `vespene serve`.
    pub workers: WorkerSettings,
    /// Which repositories projects may name.
    #[serde(default)]
    pub repositories: RepositorySettings,
    /// What happens with no authorization plugin configured.
    #[serde(default)]
    pub authorization: AuthorizationSettings,
    /// Where logins are checked, in which order (docs/plugins/authentication.md).
    #[serde(default)]
    pub authentication: AuthenticationSettings,
    /// How webhooks must prove themselves.
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// Bounds on what one request, login, template, output line or viewer may cost.
    #[serde(default)]
    pub limits: Limits,
    /// How long build logs and build roots are kept (docs/retention.md).
    #[serde(default)]
    pub retention: RetentionSettings,
    /// Who may read `GET /metrics` (docs/operations.md).
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// The plugin configuration, section by section.
    pub plugins: PluginSettings,
    /// The settings files and directories these settings were read from:
    /// builds must not see them (they may hold passwords).
    #[serde(skip)]
    pub read_from: Vec<PathBuf>,
}

/// `plugin_path` as a list, or a `:`-separated string (handy in the environment).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PluginPath {
    /// `plugin_path = ["/a", "/b"]`
    List(Vec<PathBuf>),
    /// `VESPENE_PLUGIN_PATH=/a:/b`
    Joined(String),
}

impl PluginPath {
    /// The directories, in search order.
    pub fn dirs(&self) -> Vec<PathBuf> {
        match self {
            PluginPath::List(v) => v.clone(),
            PluginPath::Joined(s) => s.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect(),
        }
    }
}

/// The web server's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// The address to listen on.
    pub listen: String,
    /// The URL people reach the server at (`https://ci.example.com`); empty
    /// when unknown. An `https` URL turns `secure_cookies` on by default.
    #[serde(default)]
    pub public_url: String,
    /// Whether the session cookie carries `Secure` (sent over HTTPS only).
    /// Unset: on when `public_url` starts with `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_cookies: Option<bool>,
    /// How many days a new API token lasts when its creator names no expiry;
    /// 0 (the default): tokens last until revoked.
    #[serde(default)]
    pub token_expiry_days: u32,
}

impl ServerSettings {
    /// Whether session cookies are marked `Secure`.
    pub fn cookies_secure(&self) -> bool {
        self.secure_cookies.unwrap_or_else(|| self.public_url.trim().to_ascii_lowercase().starts_with("https://"))
    }
}

/// What the server does when no authorization plugin is configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationSettings {
    /// With no enabled entry in `[plugins.authorization]`, every request
    /// would be allowed to everyone, anonymous ones included: `vespene serve`
    /// refuses to start unless this is `true`.
    #[serde(default)]
    pub allow_everything: bool,
}

/// The name of local accounts (passwords kept by Vespene) in `authentication.order`.
pub const LOCAL_SOURCE: &str = "local";

/// Where logins are checked: Vespene's own accounts (`local`) and the entries
/// of `[plugins.authentication]`, asked in `order` until one accepts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationSettings {
    /// The sources, by name: `local` and authentication entry names. Empty
    /// (the default): `local` first, then every enabled entry in settings
    /// order. Leaving `local` out of a non-empty list turns local passwords off.
    #[serde(default)]
    pub order: Vec<String>,
}

impl AuthenticationSettings {
    /// The sources to ask, in order.
    pub fn sources(&self, plugins: &PluginSettings) -> Vec<String> {
        if !self.order.is_empty() {
            return self.order.clone();
        }
        let enabled = plugins.authentication.iter().filter(|(_, e)| e.enabled).map(|(n, _)| n.clone());
        std::iter::once(LOCAL_SOURCE.to_string()).chain(enabled).collect()
    }

    /// One line naming a source that is unknown, repeated, or missing from
    /// the order, and an entry named like local accounts.
    pub fn validate(&self, plugins: &PluginSettings) -> Result<(), SettingsError> {
        let enabled: Vec<&String> = plugins.authentication.iter().filter(|(_, e)| e.enabled).map(|(n, _)| n).collect();
        if plugins.authentication.contains_key(LOCAL_SOURCE) {
            return Err(SettingsError(format!(
                "invalid setting 'plugins.authentication.{LOCAL_SOURCE}': '{LOCAL_SOURCE}' names Vespene's own \
                 accounts in authentication.order; give the entry another name"
            )));
        }
        for (i, name) in self.order.iter().enumerate() {
            if self.order[..i].contains(name) {
                return Err(SettingsError(format!("invalid setting 'authentication.order': '{name}' is named twice")));
            }
            if name != LOCAL_SOURCE && !enabled.contains(&name) {
                return Err(SettingsError(format!(
                    "invalid setting 'authentication.order': '{name}' is neither '{LOCAL_SOURCE}' nor an enabled \
                     entry of [plugins.authentication]"
                )));
            }
        }
        if !self.order.is_empty() {
            if let Some(left_out) = enabled.iter().find(|n| !self.order.contains(n)) {
                return Err(SettingsError(format!(
                    "invalid setting 'authentication.order': the enabled entry '{left_out}' of \
                     [plugins.authentication] is not in it; add it, or disable the entry"
                )));
            }
        }
        Ok(())
    }
}

/// Who may read `GET /metrics`: superusers always, and whoever sends
/// `Authorization: Bearer <token>` when `token` is set (for a Prometheus
/// scraper that holds no account). Empty: superusers only.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// The scrape token; empty for none.
    pub token: String,
}

/// How webhooks must prove themselves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Every project needs a webhook secret, and every delivery a proof of it
    /// (for the generic form: the signed timestamp, not the bare token).
    /// A project without a secret then starts from no webhook.
    #[serde(default)]
    pub require_signature: bool,
    /// How far (seconds) a generic delivery's signed `X-Vespene-Timestamp`
    /// may be from the server's clock.
    #[serde(default = "default_timestamp_window")]
    pub timestamp_window_seconds: u64,
}

fn default_timestamp_window() -> u64 {
    300
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings { require_signature: false, timestamp_window_seconds: default_timestamp_window() }
    }
}

/// The database's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://...`; empty means SQLite in the data directory.
    #[serde(default)]
    pub url: String,
    /// zstd-compress build logs as they are stored (chunks already stored
    /// stay as they are; both forms are read).
    #[serde(default = "default_true")]
    pub compress_logs: bool,
    /// Connections this process opens to the database at most (10 when
    /// unset). They are opened as work needs them: an idle server holds a
    /// few, each with its own schema, statements and page cache on SQLite.
    #[serde(default)]
    pub max_connections: Option<u32>,
}

fn default_true() -> bool {
    true
}

/// Embedded workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Whether `vespene serve` runs workers in its own process.
    pub embedded: bool,
    /// How many builds each pool runs at once in the embedded workers.
    pub per_pool: u32,
    /// A RUNNING build whose worker has not checked in for this long is
    /// ORPHANED (workers check in every few seconds).
    pub heartbeat_timeout_seconds: u64,
    /// How often an idle worker looks at the queue by itself. Builds queued in
    /// the same process, or by any process on PostgreSQL, wake it at once.
    pub poll_milliseconds: u64,
    /// The pools whose builds `serve`'s embedded workers take, by name;
    /// empty (the default): every pool. Pools left out are for standalone
    /// `vespene worker POOL` processes.
    #[serde(default)]
    pub pools: Vec<String>,
}

impl WorkerSettings {
    /// One line naming a blank or repeated pool name.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (i, name) in self.pools.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(SettingsError(format!(
                    "invalid setting 'workers.pools': entry {} is blank; name a worker pool, or leave the list \
                     empty for every pool",
                    i + 1
                )));
            }
            if self.pools[..i].contains(name) {
                return Err(SettingsError(format!("invalid setting 'workers.pools': pool '{name}' is named twice")));
            }
        }
        Ok(())
    }
}

/// Which repositories projects may name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositorySettings {
    /// The directories `file://` and path repositories may be in (symlinks
    /// resolved). Empty, the default: no local repositories, since a worker
    /// would clone them with its own rights. Checked when a project is saved
    /// and again before every checkout.
    #[serde(default)]
    pub local_roots: Vec<PathBuf>,
}

/// Bounds that keep hostile input and overload from taking the server down
/// (`[limits]`; see the README's settings section).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Output lines longer than this many bytes are stored in pieces, each
    /// but the last ending with " [line continues]".
    pub max_line_bytes: usize,
    /// A build's output past this many bytes is not stored (a marker line
    /// says where it stopped; the build goes on). Vespene's own messages are.
    pub max_output_bytes: u64,
    /// The most template instructions one script render may run (minijinja fuel).
    pub template_fuel: u64,
    /// How many templates render at once (0: one per CPU core).
    pub template_concurrency: usize,
    /// A connection that has not sent a whole request head within this many
    /// seconds (a new one, or an idle keep-alive one) is closed.
    pub header_read_timeout_seconds: u64,
    /// A request body that sends nothing for this many seconds is answered 408.
    pub body_idle_timeout_seconds: u64,
    /// Live output streams (SSE) one user may have open at once.
    pub live_streams_per_user: usize,
    /// Live output streams open at once, all users together.
    pub live_streams_total: usize,
    /// Failed logins of one account within the window before its logins are refused (429).
    pub login_failures_per_account: u32,
    /// Failed logins from one client address within the window before its logins are refused (429).
    pub login_failures_per_address: u32,
    /// The window, in seconds, over which failed logins are counted.
    pub login_window_seconds: u64,
    /// How many password hashes are computed at once (0: one per CPU core).
    pub password_hash_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_output_bytes: 100 * 1024 * 1024,
            template_fuel: 5_000_000,
            template_concurrency: 0,
            header_read_timeout_seconds: 30,
            body_idle_timeout_seconds: 30,
            live_streams_per_user: 16,
            live_streams_total: 1024,
            login_failures_per_account: 10,
            login_failures_per_address: 50,
            login_window_seconds: 900,
            password_hash_concurrency: 0,
        }
    }
}

impl Limits {
    /// One line naming the first limit that makes no sense.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, why: &str| Err(SettingsError(format!("invalid setting 'limits.{key}': {why}")));
        if self.max_line_bytes < 1024 {
            return bad("max_line_bytes", "must be at least 1024");
        }
        if self.max_output_bytes < self.max_line_bytes as u64 {
            return bad("max_output_bytes", "must be at least limits.max_line_bytes");
        }
        for (key, value) in [
            ("template_fuel", self.template_fuel),
            ("header_read_timeout_seconds", self.header_read_timeout_seconds),
            ("body_idle_timeout_seconds", self.body_idle_timeout_seconds),
            ("live_streams_per_user", self.live_streams_per_user as u64),
            ("live_streams_total", self.live_streams_total as u64),
            ("login_failures_per_account", self.login_failures_per_account as u64),
            ("login_failures_per_address", self.login_failures_per_address as u64),
            ("login_window_seconds", self.login_window_seconds),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        Ok(())
    }

    /// `n`, or the number of CPU cores when `n` is 0.
    pub fn or_cores(n: usize) -> usize {
        if n > 0 {
            n
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
        }
    }
}

/// How long build logs and build roots are kept (`[retention]`; see
/// docs/retention.md). Every number is a count of builds or of days, and 0
/// means no limit. The defaults apply to projects that set no keep rule of
/// their own; the maximums bound what a project may ask for (and the
/// defaults too).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Keep the logs of this many most recent finished builds per project.
    pub log_keep_builds: u32,
    /// Keep the logs of builds that finished less than this many days ago.
    pub log_keep_days: u32,
    /// Keep the build roots of this many most recent finished builds per project.
    pub root_keep_builds: u32,
    /// Keep the build roots of builds that finished less than this many days ago.
    pub root_keep_days: u32,
    /// The most `log_keep_builds` a project may ask for.
    pub max_log_keep_builds: u32,
    /// The most `log_keep_days` a project may ask for.
    pub max_log_keep_days: u32,
    /// The most `root_keep_builds` a project may ask for.
    pub max_root_keep_builds: u32,
    /// The most `root_keep_days` a project may ask for.
    pub max_root_keep_days: u32,
    /// Keep audit events this many days; 0 (the default): forever.
    pub audit_keep_days: u32,
}

impl RetentionSettings {
    /// The four rule keys: (key, default, maximum).
    pub fn keys(&self) -> [(&'static str, u32, u32); 4] {
        [
            ("log_keep_builds", self.log_keep_builds, self.max_log_keep_builds),
            ("log_keep_days", self.log_keep_days, self.max_log_keep_days),
            ("root_keep_builds", self.root_keep_builds, self.max_root_keep_builds),
            ("root_keep_days", self.root_keep_days, self.max_root_keep_days),
        ]
    }

    /// The administrator's maximum for a project field (`log_keep_days`, ...); 0: none.
    pub fn maximum(&self, field: &str) -> u32 {
        self.keys().iter().find(|(k, _, _)| *k == field).map_or(0, |(_, _, max)| *max)
    }

    /// One line naming the first default that exceeds its maximum.
    pub fn validate(&self) -> Result<(), SettingsError> {
        for (key, default, max) in self.keys() {
            if max > 0 && default > max {
                return Err(SettingsError(format!(
                    "invalid setting 'retention.{key}': {default} is more than 'retention.max_{key}' ({max}); \
                     lower it, or raise the maximum"
                )));
            }
        }
        Ok(())
    }
}

/// Where a layer of settings came from, for error messages.
#[derive(Debug, Clone)]
pub struct Layer {
    /// A file path, or a description such as "built-in defaults".
    pub source: String,
    /// Its content.
    pub table: Table,
}

/// A settings error: one line naming the source and the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Options that decide which layers are read.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The system directory; `/etc/vespene` when `None`.
    pub system_dir: Option<PathBuf>,
    /// A file given with `--config`.
    pub config_file: Option<PathBuf>,
    /// Environment variables to read (normally `std::env::vars()`).
    pub env: Vec<(String, String)>,
}

impl LoadOptions {
    /// Reads the process environment and the usual locations.
    pub fn from_process(config_file: Option<PathBuf>) -> Self {
        let system_dir = std::env::var_os("VESPENE_SYSTEM_DIR").map(PathBuf::from);
        Self { system_dir, config_file, env: std::env::vars().collect() }
    }
}

/// Environment variables that configure the process but are not settings keys.
/// (`VESPENE_PASSWORD` feeds `vespene user create`; `VESPENE_TEST_*` configure tests.)
const NON_SETTINGS_ENV: &[&str] = &[
    "VESPENE_LOG",
    "VESPENE_SYSTEM_DIR",
    "VESPENE_CONFIG",
    "VESPENE_PASSWORD",
    "VESPENE_TEST_POSTGRES_URL",
    "VESPENE_BENCH_LINES",
    "VESPENE_BENCH_BATCH",
];

impl Settings {
    /// Reads every layer and merges them into the effective settings.
    pub fn load(options: &LoadOptions) -> Result<(Settings, Vec<String>), SettingsError> {
        let layers = collect_layers(options)?;
        let sources = layers.iter().map(|l| l.source.clone()).collect();
        let mut settings = Self::from_layers(&layers)?;
        settings.read_from.push(options.system_dir.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_DIR)));
        settings.read_from.extend(options.config_file.iter().cloned());
        Ok((settings, sources))
    }

    /// Merges layers in order and checks the result.
    pub fn from_layers(layers: &[Layer]) -> Result<Settings, SettingsError> {
        let mut merged = Table::new();
        for layer in layers {
            merge(&mut merged, layer.table.clone());
        }
        let mut settings: Settings = serde_path_to_error::deserialize(Value::Table(merged)).map_err(|e| {
            let key = e.path().to_string();
            let from: Vec<&str> =
                layers.iter().filter(|l| has_path(&l.table, &key)).map(|l| l.source.as_str()).collect();
            let from = if from.is_empty() { String::new() } else { format!(" (set in {})", from.join(", ")) };
            SettingsError(format!("invalid setting '{key}'{from}: {}", e.inner()))
        })?;
        settings.plugins.validate()?;
        settings.authentication.validate(&settings.plugins)?;
        settings.plugins.anchor_key_files(&settings.data_dir);
        settings.limits.validate()?;
        settings.retention.validate()?;
        settings.workers.validate()?;
        if settings.database.max_connections == Some(0) {
            return Err(SettingsError("invalid setting 'database.max_connections': must be at least 1".into()));
        }
        Ok(settings)
    }

    /// The effective build root: `build_root`, else `<data_dir>-builds`.
    pub fn build_root(&self) -> PathBuf {
        self.build_root.clone().unwrap_or_else(|| {
            let mut sibling = self.data_dir.clone().into_os_string();
            sibling.push("-builds");
            PathBuf::from(sibling)
        })
    }

    /// The database pool's size: `[database] max_connections`, or 10.
    pub fn database_connections(&self) -> u32 {
        self.database.max_connections.unwrap_or(10)
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        if self.database.url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("vespene.db").display())
        } else {
            self.database.url.clone()
        }
    }
}

/// The built-in defaults: enough for `vespene serve` with no settings file.
pub fn defaults() -> Table {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let plugin_path: Vec<Value> = [exe_dir.join("plugins"), exe_dir, PathBuf::from("/usr/lib/vespene/plugins")]
        .iter()
        .map(|p| Value::String(p.display().to_string()))
        .collect();
    let mut table: Table = DEFAULTS_TOML.parse().expect("built-in defaults parse");
    table.insert("plugin_path".into(), Value::Array(plugin_path));
    table
}

/// The defaults that do not depend on where the binary is.
const DEFAULTS_TOML: &str = r#"
data_dir = "/var/lib/vespene"

[server]
listen = "127.0.0.1:8000"
public_url = ""
token_expiry_days = 0

[authorization]
allow_everything = false

[webhooks]
require_signature = false
timestamp_window_seconds = 300

[database]
url = ""

[workers]
embedded = true
per_pool = 2
heartbeat_timeout_seconds = 30
poll_milliseconds = 500
pools = []

[repositories]
local_roots = []

[plugins.scm.none]
library = "none"

[plugins.scm.git]
library = "git"
host_key_policy = "strict"

[plugins.scm.svn]
library = "svn"

[plugins.isolation.sandbox]
library = "sandbox"

[plugins.isolation.shell]
library = "shell"

[plugins.isolation.sudo]
library = "sudo"

[plugins.variables.common]
library = "variables-common"

[plugins.variables.pipelines]
library = "variables-pipelines"

[plugins.variables.snippets]
library = "variables-snippets"

[plugins.output.timestamp]
library = "timestamp"
mode = "elapsed"

[plugins.organizations.github]
library = "github"

[plugins.authorization.ownership]
library = "ownership"
filter_view = true

[plugins.authorization.group_required]
library = "group-required"

[plugins.secrets.basic]
library = "basic"
key_file = "secret.key"
"#;

fn collect_layers(options: &LoadOptions) -> Result<Vec<Layer>, SettingsError> {
    let mut layers = vec![Layer { source: "built-in defaults".into(), table: defaults() }];
    let system_dir = options.system_dir.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_DIR));
    let main_file = system_dir.join("settings.toml");
    if main_file.exists() {
        layers.push(read_layer(&main_file)?);
    }
    let dropins = system_dir.join("settings.d");
    if dropins.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dropins)
            .map_err(|e| SettingsError(format!("{}: {e}", dropins.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for file in files {
            layers.push(read_layer(&file)?);
        }
    }
    if let Some(file) = &options.config_file {
        if !file.exists() {
            return Err(SettingsError(format!("settings file {} does not exist", file.display())));
        }
        layers.push(read_layer(file)?);
    }
    let env = env_layer(&options.env)?;
    if !env.table.is_empty() {
        layers.push(env);
    }
    Ok(layers)
}

fn read_layer(path: &Path) -> Result<Layer, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError(format!("{}: {e}", path.display())))?;
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
        SettingsError(format!("{}: {}", path.display(), e.to_string().replace('\n', " ").trim()))
    })?;
    // Relative library paths are relative to the file that names them.
    if let Some(dir) = path.parent() {
        plugins::anchor_library_paths(&mut table, dir);
    }
    Ok(Layer { source: path.display().to_string(), table })
}

fn env_layer(env: &[(String, String)]) -> Result<Layer, SettingsError> {
    let mut table = Table::new();
    for (name, raw) in env {
        let Some(key) = name.strip_prefix("VESPENE_") else { continue };
        // Every `VESPENE_TEST_*` configures the test suite (service URLs), never the server.
        if NON_SETTINGS_ENV.contains(&name.as_str()) || key.starts_with("TEST_") || key.is_empty() {
            continue;
        }
        let path: Vec<String> = key.split("__").map(|p| p.to_ascii_lowercase()).collect();
        // A value that parses as a TOML literal (number, bool, array) keeps its type.
        let value = format!("v = {raw}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.clone()));
        let mut cursor = &mut table;
        for part in &path[..path.len() - 1] {
            cursor = cursor
                .entry(part.clone())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .ok_or_else(|| SettingsError(format!("environment variable {name} conflicts with another")))?;
        }
        cursor.insert(path[path.len() - 1].clone(), value);
    }
    Ok(Layer { source: "environment (VESPENE_*)".into(), table })
}

/// Merges `over` into `base`: tables recursively, everything else replaced.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn has_path(table: &Table, dotted: &str) -> bool {
    let mut cursor = table;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        match cursor.get(*part) {
            Some(Value::Table(t)) if i + 1 < parts.len() => cursor = t,
            Some(_) => return true,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
