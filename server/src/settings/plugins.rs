//! The plugin configuration: ordered sections of named entries, each naming a
//! library and carrying that plugin's parameters.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::{Table, Value};
use vespene_plugin_api::Kind;

use super::SettingsError;

/// One configured plugin instance.
///
/// ```toml
/// [plugins.success_triggers.publish]
/// library = "command"            # bare name on plugin_path, or a path to a .so
/// command = "cp -a {{ build.working_dir }} /srv/publish"
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PluginEntry {
    /// A bare name resolved on `plugin_path`, or a path to a `.so`.
    pub library: String,
    /// `false` switches off an entry a lower layer configured.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Triggers only: run for the projects that name this entry in their
    /// `triggers` list, instead of for every build.
    #[serde(default)]
    pub per_project: bool,
    /// Secrets only: this entry seals every new secret value (by default the
    /// first enabled entry does). The others still read the values they
    /// recognize, so a new plugin can seal while an old one reads.
    #[serde(default)]
    pub seal: bool,
    /// The library's SHA-256 (64 hex digits), checked before it is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Everything else: the plugin's own parameters, handed over as JSON.
    #[serde(flatten)]
    pub params: IndexMap<String, Value>,
}

fn yes() -> bool {
    true
}

impl PluginEntry {
    /// The parameters as the JSON the plugin's constructor receives.
    pub fn params_json(&self) -> String {
        serde_json::to_string(&self.params).unwrap_or_else(|_| "{}".into())
    }
}

/// The sections of the plugin configuration, in the order they are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginSection {
    /// Triggers run before a build's script.
    PreTriggers,
    /// Triggers run after a successful build.
    SuccessTriggers,
    /// Triggers run after a failed build.
    FailureTriggers,
    /// Source control, chosen by a project's `scm_type`.
    Scm,
    /// Isolation, chosen by a pool's isolation method.
    Isolation,
    /// The output chain.
    Output,
    /// The authorization chain.
    Authorization,
    /// Organization importers, chosen by an organization's type.
    Organizations,
    /// The variables chain.
    Variables,
    /// The secrets chain.
    Secrets,
    /// Autoscalers by name (interface 1.1).
    Autoscalers,
    /// Authentication sources, asked in `authentication.order` (interface 1.3).
    Authentication,
}

impl PluginSection {
    /// Every section, in order.
    pub const ALL: [PluginSection; 12] = [
        PluginSection::PreTriggers,
        PluginSection::SuccessTriggers,
        PluginSection::FailureTriggers,
        PluginSection::Scm,
        PluginSection::Isolation,
        PluginSection::Output,
        PluginSection::Authorization,
        PluginSection::Organizations,
        PluginSection::Variables,
        PluginSection::Secrets,
        PluginSection::Autoscalers,
        PluginSection::Authentication,
    ];

    /// The section's name in settings.
    pub fn name(self) -> &'static str {
        match self {
            PluginSection::PreTriggers => "pre_triggers",
            PluginSection::SuccessTriggers => "success_triggers",
            PluginSection::FailureTriggers => "failure_triggers",
            PluginSection::Scm => "scm",
            PluginSection::Isolation => "isolation",
            PluginSection::Output => "output",
            PluginSection::Authorization => "authorization",
            PluginSection::Organizations => "organizations",
            PluginSection::Variables => "variables",
            PluginSection::Secrets => "secrets",
            PluginSection::Autoscalers => "autoscalers",
            PluginSection::Authentication => "authentication",
        }
    }

    /// The plugin kind the section's entries must provide.
    pub fn kind(self) -> Kind {
        match self {
            PluginSection::PreTriggers | PluginSection::SuccessTriggers | PluginSection::FailureTriggers => {
                Kind::Trigger
            }
            PluginSection::Scm => Kind::Scm,
            PluginSection::Isolation => Kind::Isolation,
            PluginSection::Output => Kind::Output,
            PluginSection::Authorization => Kind::Authorization,
            PluginSection::Organizations => Kind::Organization,
            PluginSection::Variables => Kind::Variables,
            PluginSection::Secrets => Kind::Secrets,
            PluginSection::Autoscalers => Kind::Autoscaler,
            PluginSection::Authentication => Kind::Authentication,
        }
    }
}

impl std::fmt::Display for PluginSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

type Entries = IndexMap<String, PluginEntry>;

/// The plugin configuration (`[plugins.<section>.<name>]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Run before a build's script; an error fails the build.
    #[serde(default)]
    pub pre_triggers: Entries,
    /// Run after a successful build.
    #[serde(default)]
    pub success_triggers: Entries,
    /// Run after a failed build.
    #[serde(default)]
    pub failure_triggers: Entries,
    /// SCM plugins by name.
    #[serde(default)]
    pub scm: Entries,
    /// Isolation plugins by name.
    #[serde(default)]
    pub isolation: Entries,
    /// The output chain, in order.
    #[serde(default)]
    pub output: Entries,
    /// The authorization chain; every plugin must allow.
    #[serde(default)]
    pub authorization: Entries,
    /// Organization importers by name.
    #[serde(default)]
    pub organizations: Entries,
    /// The variables chain, in order.
    #[serde(default)]
    pub variables: Entries,
    /// The secrets chain; the first encrypts.
    #[serde(default)]
    pub secrets: Entries,
    /// Autoscalers by name.
    #[serde(default)]
    pub autoscalers: Entries,
    /// Authentication sources besides local accounts (`authentication.order`
    /// says in which order they are asked).
    #[serde(default)]
    pub authentication: Entries,
}

impl PluginSettings {
    /// The entries of a section, in settings order.
    pub fn section(&self, section: PluginSection) -> &Entries {
        match section {
            PluginSection::PreTriggers => &self.pre_triggers,
            PluginSection::SuccessTriggers => &self.success_triggers,
            PluginSection::FailureTriggers => &self.failure_triggers,
            PluginSection::Scm => &self.scm,
            PluginSection::Isolation => &self.isolation,
            PluginSection::Output => &self.output,
            PluginSection::Authorization => &self.authorization,
            PluginSection::Organizations => &self.organizations,
            PluginSection::Variables => &self.variables,
            PluginSection::Secrets => &self.secrets,
            PluginSection::Autoscalers => &self.autoscalers,
            PluginSection::Authentication => &self.authentication,
        }
    }

    /// Every enabled entry, section by section, in settings order.
    pub fn enabled(&self) -> impl Iterator<Item = (PluginSection, &String, &PluginEntry)> {
        PluginSection::ALL
            .into_iter()
            .flat_map(move |s| self.section(s).iter().filter(|(_, e)| e.enabled).map(move |(n, e)| (s, n, e)))
    }

    /// The secrets entry that seals new values: the enabled one marked
    /// `seal = true`, else the first enabled one.
    pub fn sealing_secrets(&self) -> Option<(&String, &PluginEntry)> {
        let mut enabled = self.secrets.iter().filter(|(_, e)| e.enabled);
        enabled.clone().find(|(_, e)| e.seal).or_else(|| enabled.next())
    }

    /// A secrets plugin's relative `key_file` is relative to `data_dir`, where
    /// the server keeps what it must not lose.
    pub(super) fn anchor_key_files(&mut self, data_dir: &Path) {
        for entry in self.secrets.values_mut() {
            if let Some(Value::String(file)) = entry.params.get_mut("key_file") {
                if !Path::new(file.as_str()).is_absolute() {
                    *file = data_dir.join(file.as_str()).display().to_string();
                }
            }
        }
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for (section, name, entry) in self.enabled() {
            if entry.library.trim().is_empty() {
                return Err(SettingsError(format!("invalid setting 'plugins.{section}.{name}.library': it is empty")));
            }
            if entry.seal && section != PluginSection::Secrets {
                return Err(SettingsError(format!(
                    "invalid setting 'plugins.{section}.{name}.seal': only secrets plugins seal values"
                )));
            }
            if entry.per_project && section.kind() != Kind::Trigger {
                return Err(SettingsError(format!(
                    "invalid setting 'plugins.{section}.{name}.per_project': only triggers can be per project"
                )));
            }
        }
        let sealing: Vec<&String> = self.secrets.iter().filter(|(_, e)| e.enabled && e.seal).map(|(n, _)| n).collect();
        if sealing.len() > 1 {
            return Err(SettingsError(format!(
                "invalid setting 'plugins.secrets': only one entry may seal new values, but {} say seal = true",
                sealing.iter().map(|n| format!("'{n}'")).collect::<Vec<_>>().join(" and ")
            )));
        }
        Ok(())
    }
}

/// Makes relative library paths in a settings file relative to its directory.
pub(super) fn anchor_library_paths(table: &mut Table, dir: &Path) {
    let Some(Value::Table(plugins)) = table.get_mut("plugins") else { return };
    for (_, section) in plugins.iter_mut() {
        let Value::Table(entries) = section else { continue };
        for (_, entry) in entries.iter_mut() {
            let Value::Table(entry) = entry else { continue };
            if let Some(Value::String(lib)) = entry.get_mut("library") {
                if lib.contains('/') && !Path::new(lib.as_str()).is_absolute() {
                    *lib = dir.join(lib.as_str()).display().to_string();
                }
            }
        }
    }
}
