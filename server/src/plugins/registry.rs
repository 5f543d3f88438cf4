//! The loaded plugin set: every enabled settings entry, instantiated with its
//! parameters, kept in section and settings order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use abi_stable::std_types::RStr;
use serde::Serialize;
use serde_json::Value;
use vespene_plugin_api::abi::*;
use vespene_plugin_api::{AccessRequest, Kind};

use super::loader::{self, Library};
use crate::settings::{PluginEntry, PluginSection, PluginSettings};

/// A plugin instance of one kind.
pub enum Instance {
    /// A trigger.
    Trigger(TriggerBox),
    /// An SCM plugin.
    Scm(ScmBox),
    /// An isolation plugin.
    Isolation(IsolationBox),
    /// An output plugin.
    Output(OutputBox),
    /// An authorization plugin.
    Authorization(AuthorizationBox),
    /// An organization importer.
    Organization(OrganizationBox),
    /// A variables plugin.
    Variables(VariablesBox),
    /// A secrets plugin (shared with the store's secrets chain).
    Secrets(std::sync::Arc<SecretsBox>),
    /// An autoscaler.
    Autoscaler(AutoscalerBox),
    /// An authentication source (shared with login checks on the blocking pool).
    Authentication(std::sync::Arc<AuthenticationBox>),
}

/// One configured, loaded and instantiated plugin.
pub struct LoadedPlugin {
    /// The entry's name in its section.
    pub name: String,
    /// The section it is configured in.
    pub section: PluginSection,
    /// The library it came from.
    pub library: Library,
    /// The live instance.
    pub instance: Instance,
    /// A trigger that runs only for projects naming it.
    pub per_project: bool,
    /// The secrets plugin that seals new values.
    pub seals: bool,
}

/// What `vespene plugins list` and the plugins page show of a plugin.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PluginSummary {
    /// The entry's name.
    pub name: String,
    /// Its section.
    pub section: String,
    /// The library's path.
    pub library: String,
    /// The plugin's own name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The interface version it was built on.
    pub interface_version: String,
    /// True when built on an older minor version of the interface.
    pub older_interface: bool,
    /// What it says it does.
    pub description: String,
}

/// A plugin that could not be loaded: one line naming entry, path and reason.
#[derive(Debug, thiserror::Error)]
#[error("plugin '{entry}'{}: {reason}", .path.as_ref().map(|p| format!(" ({})", p.display())).unwrap_or_default())]
pub struct PluginLoadError {
    /// `section.name`.
    pub entry: String,
    /// The library path, once resolved.
    pub path: Option<PathBuf>,
    /// Why it failed.
    pub reason: String,
}

/// Every loaded plugin.
#[derive(Default)]
pub struct Registry {
    plugins: Vec<LoadedPlugin>,
}

impl Registry {
    /// Loads and instantiates every enabled entry; the first failure stops it.
    pub fn load(settings: &PluginSettings, plugin_path: &[PathBuf]) -> Result<Registry, PluginLoadError> {
        let mut libraries: HashMap<PathBuf, Library> = HashMap::new();
        let mut plugins = Vec::new();
        for (section, name, entry) in settings.enabled() {
            let fail = |path: Option<&Path>, reason: String| PluginLoadError {
                entry: format!("{section}.{name}"),
                path: path.map(Path::to_path_buf),
                reason,
            };
            let path = loader::resolve(&entry.library, plugin_path).map_err(|r| fail(None, r))?;
            let key = path.canonicalize().unwrap_or_else(|_| path.clone());
            loader::check_trusted(&key).map_err(|r| fail(Some(&path), r))?;
            if let Some(expected) = &entry.sha256 {
                loader::check_sha256(&key, expected).map_err(|r| fail(Some(&path), r))?;
            }
            let library = match libraries.get(&key) {
                Some(lib) => lib.clone(),
                None => {
                    let lib = loader::open(&path).map_err(|r| fail(Some(&path), r))?;
                    libraries.insert(key, lib.clone());
                    lib
                }
            };
            let instance = instantiate(&library, section, entry).map_err(|r| fail(Some(&path), r))?;
            plugins.push(LoadedPlugin {
                name: name.clone(),
                section,
                library,
                instance,
                per_project: entry.per_project,
                seals: section == PluginSection::Secrets && settings.sealing_secrets().is_some_and(|(n, _)| n == name),
            });
        }
        Ok(Registry { plugins })
    }

    /// The secrets chain the store seals and reads with: the sealing plugin
    /// first, then the others in settings order.
    pub fn secrets_chain(&self) -> super::SecretsChain {
        let mut plugins: Vec<&LoadedPlugin> = self.section(PluginSection::Secrets).collect();
        plugins.sort_by_key(|p| !p.seals);
        let plugins = plugins.into_iter().filter_map(|p| match &p.instance {
            Instance::Secrets(s) => Some((p.name.clone(), s.clone())),
            _ => None,
        });
        super::SecretsChain::new(plugins.collect())
    }

    /// Every plugin, in section and settings order.
    pub fn all(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// Summaries for listings.
    pub fn summaries(&self) -> Vec<PluginSummary> {
        self.plugins.iter().map(LoadedPlugin::summary).collect()
    }

    /// The plugins of one section, in settings order.
    pub fn section(&self, section: PluginSection) -> impl Iterator<Item = &LoadedPlugin> {
        self.plugins.iter().filter(move |p| p.section == section)
    }

    /// Looks up `section.name`.
    pub fn get(&self, section: PluginSection, name: &str) -> Option<&LoadedPlugin> {
        self.section(section).find(|p| p.name == name)
    }

    /// The triggers of a trigger section that run for `project_triggers`: the
    /// global ones and the per-project ones the project names, in settings order.
    pub fn triggers<'a>(
        &'a self,
        section: PluginSection,
        project_triggers: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'a TriggerBox)> + 'a {
        self.section(section).filter_map(move |p| match &p.instance {
            Instance::Trigger(t) if !p.per_project || project_triggers.contains(&p.name) => Some((p.name.as_str(), t)),
            _ => None,
        })
    }

    /// The variables chain, in order.
    pub fn variables_chain(&self) -> Vec<(&str, &VariablesBox)> {
        self.section(PluginSection::Variables)
            .filter_map(|p| match &p.instance {
                Instance::Variables(v) => Some((p.name.as_str(), v)),
                _ => None,
            })
            .collect()
    }

    /// The output chain, in order.
    pub fn output_chain(&self) -> Vec<&OutputBox> {
        self.section(PluginSection::Output)
            .filter_map(|p| match &p.instance {
                Instance::Output(o) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// The output chain with entry names, in order.
    pub fn output_chain_named(&self) -> Vec<(&str, &OutputBox)> {
        self.section(PluginSection::Output)
            .filter_map(|p| match &p.instance {
                Instance::Output(o) => Some((p.name.as_str(), o)),
                _ => None,
            })
            .collect()
    }

    /// The SCM plugin configured as `name`.
    pub fn scm(&self, name: &str) -> Option<&ScmBox> {
        match &self.get(PluginSection::Scm, name)?.instance {
            Instance::Scm(s) => Some(s),
            _ => None,
        }
    }

    /// The isolation plugin configured as `name`.
    pub fn isolation(&self, name: &str) -> Option<&IsolationBox> {
        match &self.get(PluginSection::Isolation, name)?.instance {
            Instance::Isolation(s) => Some(s),
            _ => None,
        }
    }

    /// An organization importer by entry name.
    pub fn organization(&self, name: &str) -> Option<&OrganizationBox> {
        match &self.get(PluginSection::Organizations, name)?.instance {
            Instance::Organization(o) => Some(o),
            _ => None,
        }
    }

    /// The authentication plugin configured as `name`.
    pub fn authentication(&self, name: &str) -> Option<std::sync::Arc<AuthenticationBox>> {
        match &self.get(PluginSection::Authentication, name)?.instance {
            Instance::Authentication(a) => Some(a.clone()),
            _ => None,
        }
    }

    /// The autoscaler configured as `name`.
    pub fn autoscaler(&self, name: &str) -> Option<&AutoscalerBox> {
        match &self.get(PluginSection::Autoscalers, name)?.instance {
            Instance::Autoscaler(a) => Some(a),
            _ => None,
        }
    }

    /// The names configured in a section (the UI's choice lists).
    pub fn names(&self, section: PluginSection) -> Vec<String> {
        self.section(section).map(|p| p.name.clone()).collect()
    }
}

impl Registry {
    /// Asks every authorization plugin (blocking); all must allow. The error
    /// says which plugin refused or failed. A plugin built before an action
    /// existed (`use`, `approve`) is asked `edit` instead, so it never grants
    /// more than it did.
    pub fn access_check(&self, request: &AccessRequest) -> Result<(), String> {
        let mut asked = AccessJson::new(request);
        for plugin in self.section(PluginSection::Authorization) {
            if let Instance::Authorization(a) = &plugin.instance {
                let json = asked.for_plugin(plugin);
                match a.check(RStr::from(json)).into_result() {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(format!(
                            "not allowed to {} this {} (by '{}')",
                            request.action, request.kind, plugin.name
                        ))
                    }
                    Err(e) => {
                        crate::metrics::plugin_error(&plugin.name, "authorization");
                        return Err(format!("authorization plugin '{}' failed: {e}", plugin.name));
                    }
                }
            }
        }
        Ok(())
    }

    /// The ids among `candidates` on which every authorization plugin allows
    /// the request (blocking; the plugins' `filter_list`), with the same rule
    /// for plugins that predate an action as [`Registry::access_check`].
    pub fn access_filter(&self, request: &AccessRequest, candidates: &[Value]) -> Result<Vec<i64>, String> {
        let mut asked = AccessJson::new(request);
        let candidates_json = serde_json::to_string(candidates).expect("JSON values serialize");
        let mut ids: Vec<i64> = candidates.iter().filter_map(|c| c["id"].as_i64()).collect();
        for plugin in self.section(PluginSection::Authorization) {
            if let Instance::Authorization(a) = &plugin.instance {
                let json = asked.for_plugin(plugin);
                let keep = a
                    .filter_list(RStr::from(json), RStr::from(candidates_json.as_str()))
                    .into_result()
                    .map_err(|e| {
                        crate::metrics::plugin_error(&plugin.name, "authorization");
                        format!("authorization plugin '{}' failed: {e}", plugin.name)
                    })?;
                ids.retain(|id| keep.contains(id));
            }
        }
        Ok(ids)
    }
}

/// An access request as JSON, serialized at most once as asked and once as
/// `edit`: plugins built before an action existed are asked `edit` in its
/// place ([`vespene_plugin_api::action_for_interface`]).
struct AccessJson<'a> {
    request: &'a AccessRequest,
    as_asked: Option<String>,
    as_edit: Option<String>,
}

impl<'a> AccessJson<'a> {
    fn new(request: &'a AccessRequest) -> Self {
        AccessJson { request, as_asked: None, as_edit: None }
    }

    /// The request as `plugin` is asked it.
    fn for_plugin(&mut self, plugin: &LoadedPlugin) -> &str {
        let action = vespene_plugin_api::action_for_interface(&self.request.action, plugin.interface());
        let request = self.request;
        if action == request.action {
            self.as_asked.get_or_insert_with(|| serde_json::to_string(request).expect("access request serializes"))
        } else {
            self.as_edit.get_or_insert_with(|| {
                serde_json::to_string(&AccessRequest { action: action.into(), ..request.clone() })
                    .expect("access request serializes")
            })
        }
    }
}

/// The (major, minor) of an interface version ("1.2.0").
fn interface_of(interface_version: &str) -> (u64, u64) {
    let mut parts = interface_version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether `interface_version` ("1.2.0") is older than `since` (major, minor).
fn interface_before(interface_version: &str, since: (u64, u64)) -> bool {
    interface_of(interface_version) < since
}

impl LoadedPlugin {
    /// The (major, minor) interface version the plugin was built on.
    pub fn interface(&self) -> (u64, u64) {
        interface_of(self.library.info.interface_version.as_str())
    }

    /// What listings show of this plugin.
    pub fn summary(&self) -> PluginSummary {
        let info = &self.library.info;
        PluginSummary {
            name: self.name.clone(),
            section: self.section.name().to_string(),
            library: self.library.path.display().to_string(),
            plugin: info.name.to_string(),
            version: info.version.to_string(),
            interface_version: info.interface_version.to_string(),
            older_interface: loader::built_on_older_minor(info.interface_version.as_str()),
            description: info.description.to_string(),
        }
    }
}

/// The kinds a library provides, read from its constructors (the source of truth).
pub fn provided_kinds(module: &PluginModuleRef) -> Vec<Kind> {
    let mut kinds = Vec::new();
    let mut add = |present: bool, kind: Kind| {
        if present {
            kinds.push(kind)
        }
    };
    add(module.new_trigger().is_some(), Kind::Trigger);
    add(module.new_scm().is_some(), Kind::Scm);
    add(module.new_isolation().is_some(), Kind::Isolation);
    add(module.new_output().is_some(), Kind::Output);
    add(module.new_authorization().is_some(), Kind::Authorization);
    add(module.new_organization().is_some(), Kind::Organization);
    add(module.new_variables().is_some(), Kind::Variables);
    add(module.new_secrets().is_some(), Kind::Secrets);
    // Fields after the 1.0 prefix are absent from plugins built on 1.0.
    add(module.new_autoscaler().flatten().is_some(), Kind::Autoscaler);
    // And after the 1.2 one, from plugins built on 1.2 or older.
    add(module.new_authentication().flatten().is_some(), Kind::Authentication);
    kinds
}

fn instantiate(library: &Library, section: PluginSection, entry: &PluginEntry) -> Result<Instance, String> {
    let params = entry.params_json();
    let cfg = RStr::from(params.as_str());
    let module = &library.module;
    let missing = || {
        let kinds: Vec<&str> = provided_kinds(module).into_iter().map(Kind::name).collect();
        // A kind newer than the plugin's interface cannot be in it: say so.
        let since = match section.kind() {
            Kind::Authentication => Some(vespene_plugin_api::AUTHENTICATION_SINCE),
            _ => None,
        };
        let too_old = match since {
            Some((major, minor)) if interface_before(library.info.interface_version.as_str(), (major, minor)) => {
                format!(
                    " (it was built on plugin interface {}; the {} kind exists since {major}.{minor}: rebuild it \
                     against vespene-plugin-api {})",
                    library.info.interface_version,
                    section.kind(),
                    vespene_plugin_api::INTERFACE_VERSION
                )
            }
            _ => String::new(),
        };
        format!(
            "library '{}' provides {} but section '{section}' needs {} plugin{too_old}",
            library.info.name,
            if kinds.is_empty() { "no plugin kind".to_string() } else { kinds.join(", ") },
            with_article(section.kind().name())
        )
    };
    let bad = |e: abi_stable::std_types::RString| format!("bad parameters: {e}");
    Ok(match section.kind() {
        Kind::Trigger => Instance::Trigger(module.new_trigger().ok_or_else(missing)?(cfg).into_result().map_err(bad)?),
        Kind::Scm => Instance::Scm(module.new_scm().ok_or_else(missing)?(cfg).into_result().map_err(bad)?),
        Kind::Isolation => {
            Instance::Isolation(module.new_isolation().ok_or_else(missing)?(cfg).into_result().map_err(bad)?)
        }
        Kind::Output => Instance::Output(module.new_output().ok_or_else(missing)?(cfg).into_result().map_err(bad)?),
        Kind::Authorization => {
            Instance::Authorization(module.new_authorization().ok_or_else(missing)?(cfg).into_result().map_err(bad)?)
        }
        Kind::Organization => {
            Instance::Organization(module.new_organization().ok_or_else(missing)?(cfg).into_result().map_err(bad)?)
        }
        Kind::Variables => {
            Instance::Variables(module.new_variables().ok_or_else(missing)?(cfg).into_result().map_err(bad)?)
        }
        Kind::Secrets => Instance::Secrets(std::sync::Arc::new(
            module.new_secrets().ok_or_else(missing)?(cfg).into_result().map_err(bad)?,
        )),
        Kind::Autoscaler => Instance::Autoscaler(
            module.new_autoscaler().flatten().ok_or_else(missing)?(cfg).into_result().map_err(bad)?,
        ),
        Kind::Authentication => Instance::Authentication(std::sync::Arc::new(
            module.new_authentication().flatten().ok_or_else(missing)?(cfg).into_result().map_err(bad)?,
        )),
    })
}

/// "a scm", "an autoscaler": the article a kind name takes.
fn with_article(kind: &str) -> String {
    let an = kind.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {kind}", if an { "an" } else { "a" })
}
