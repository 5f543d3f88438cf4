//! `vespene plugins new NAME --kind KIND`: a new plugin crate made from
//! `plugin-template`, whose files are built into the binary so the command
//! works wherever `vespene` is installed.
//!
//! The interface crate, `vespene-plugin-api`, is built in too and vendored
//! into the new crate (`vendor/vespene-plugin-api`): the crate builds on a
//! machine with only the installed server, with no path into a Vespene
//! checkout and no registry crate of ours. Its other dependencies are
//! ordinary crates.io ones.

use std::path::Path;

use vespene_plugin_api::{Kind, INTERFACE_VERSION};

const CARGO_TOML: &str = include_str!("../../../plugin-template/Cargo.toml");

/// The template's source for a kind: the template crate itself is the trigger.
fn source_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Trigger => include_str!("../../../plugin-template/src/lib.rs"),
        Kind::Scm => include_str!("../../../plugin-template/kinds/scm.rs"),
        Kind::Isolation => include_str!("../../../plugin-template/kinds/isolation.rs"),
        Kind::Output => include_str!("../../../plugin-template/kinds/output.rs"),
        Kind::Authorization => include_str!("../../../plugin-template/kinds/authorization.rs"),
        Kind::Organization => include_str!("../../../plugin-template/kinds/organization.rs"),
        Kind::Variables => include_str!("../../../plugin-template/kinds/variables.rs"),
        Kind::Secrets => include_str!("../../../plugin-template/kinds/secrets.rs"),
        Kind::Autoscaler => include_str!("../../../plugin-template/kinds/autoscaler.rs"),
        Kind::Authentication => include_str!("../../../plugin-template/kinds/authentication.rs"),
    }
}

/// Where the vendored interface crate goes in a new crate.
const VENDORED_API: &str = "vendor/vespene-plugin-api";

/// The interface crate's manifest, and the workspace's, whose inherited
/// fields the vendored manifest spells out.
const API_MANIFEST: &str = include_str!("../../../plugin-api/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");

/// The interface crate's sources, as this binary was built with them (a unit
/// test checks that the list is the whole `plugin-api/src`).
const API_SOURCES: &[(&str, &str)] = &[
    ("src/abi.rs", include_str!("../../../plugin-api/src/abi.rs")),
    ("src/context.rs", include_str!("../../../plugin-api/src/context.rs")),
    ("src/export.rs", include_str!("../../../plugin-api/src/export.rs")),
    ("src/launch.rs", include_str!("../../../plugin-api/src/launch.rs")),
    ("src/lib.rs", include_str!("../../../plugin-api/src/lib.rs")),
    ("src/params.rs", include_str!("../../../plugin-api/src/params.rs")),
    ("src/planner.rs", include_str!("../../../plugin-api/src/planner.rs")),
    ("src/repositories.rs", include_str!("../../../plugin-api/src/repositories.rs")),
    ("src/runner.rs", include_str!("../../../plugin-api/src/runner.rs")),
    ("src/shell.rs", include_str!("../../../plugin-api/src/shell.rs")),
    ("src/testkit.rs", include_str!("../../../plugin-api/src/testkit.rs")),
];

/// The interface crate's manifest with every `workspace = true` replaced by
/// the workspace's value, so it builds outside the Vespene tree.
fn vendored_api_manifest() -> Result<String, String> {
    let bad = |what: &str, e: &dyn std::fmt::Display| format!("the built-in {what} is not valid TOML: {e}");
    let mut manifest: toml::Table = API_MANIFEST.parse().map_err(|e| bad("plugin-api/Cargo.toml", &e))?;
    let workspace: toml::Table = WORKSPACE_MANIFEST.parse().map_err(|e| bad("Cargo.toml", &e))?;
    let inherited = |section: &str, key: &str| -> Result<toml::Value, String> {
        workspace
            .get("workspace")
            .and_then(|w| w.get(section))
            .and_then(|s| s.get(key))
            .cloned()
            .ok_or_else(|| format!("plugin-api inherits {section}.{key}, which the workspace does not define"))
    };
    let is_inherited = |v: &toml::Value| v.get("workspace").and_then(toml::Value::as_bool) == Some(true);
    if let Some(package) = manifest.get_mut("package").and_then(toml::Value::as_table_mut) {
        for (key, value) in package.iter_mut() {
            if is_inherited(value) {
                *value = inherited("package", key)?;
            }
        }
    }
    for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
        let Some(deps) = manifest.get_mut(section).and_then(toml::Value::as_table_mut) else { continue };
        for (name, dep) in deps.iter_mut() {
            if !is_inherited(dep) {
                continue;
            }
            // The workspace's entry, with this entry's own keys (features, optional) added.
            let mut spelled = match inherited("dependencies", name)? {
                toml::Value::String(version) => toml::Table::from_iter([("version".into(), version.into())]),
                toml::Value::Table(table) => table,
                other => return Err(format!("workspace dependency {name} is neither a version nor a table: {other}")),
            };
            for (key, value) in dep.as_table().into_iter().flatten().filter(|(k, _)| *k != "workspace") {
                spelled.insert(key.clone(), value.clone());
            }
            *dep = toml::Value::Table(spelled);
        }
    }
    let text = toml::to_string(&manifest).map_err(|e| format!("cannot write the vendored manifest: {e}"))?;
    Ok(format!(
        "# vespene-plugin-api {INTERFACE_VERSION}, the Vespene plugin interface, vendored by `vespene plugins new`\n\
         # from the server that created this crate. To move to a newer interface, create a crate\n\
         # with a newer `vespene plugins new` and copy this directory over.\n\n{text}"
    ))
}
/// Checks a plugin name: lowercase letters, digits and dashes, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("invalid plugin name '{name}': use lowercase letters, digits and dashes, starting with a letter"))
    }
}

/// Writes the new crate into `dir` (which must not exist yet), with the
/// interface crate vendored, or depending on the checkout at `api_path`.
pub fn create(name: &str, kind: Kind, dir: &Path, api_path: Option<&Path>) -> Result<(), String> {
    validate_name(name)?;
    if dir.exists() {
        return Err(format!("{} already exists; choose another --dir", dir.display()));
    }
    let lib = format!("vespene_{}", name.replace('-', "_"));
    // "1.3" of "1.3.0": any later 1.x interface crate is as good.
    let requirement = INTERFACE_VERSION.rsplit_once('.').map_or(INTERFACE_VERSION, |(major_minor, _)| major_minor);
    let api_at = match api_path {
        Some(p) => p.display().to_string(),
        None => VENDORED_API.to_string(),
    };
    let api_dep = format!("vespene-plugin-api = {{ path = \"{api_at}\", version = \"{requirement}\"");
    // The template's opening comment is about the template itself.
    let header = format!("# A Vespene {kind} plugin, made by `vespene plugins new {name} --kind {kind}`.\n");
    let cargo_toml: String = CARGO_TOML
        .lines()
        .skip_while(|line| !line.starts_with("[package]"))
        .map(|line| {
            if line.starts_with("vespene-plugin-api = {") {
                // Keep whatever follows the version (features = ["testkit"] on the dev line).
                let rest = line.split_once("version = \"").and_then(|(_, r)| r.split_once('"')).map_or("", |(_, r)| r);
                format!("{api_dep}{rest}")
            } else {
                line.replace("vespene-plugin-template", &format!("vespene-plugin-{name}"))
                    .replace("vespene_template", &lib)
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let source = source_for(kind).replace("\"template\"", &format!("\"{name}\""));
    let readme = readme(name, kind, &lib);
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("has a parent"))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    // The template's empty [workspace] table keeps the crate standalone wherever it is created.
    write("Cargo.toml", &(header + &cargo_toml + "\n"))?;
    write("README.md", &readme)?;
    write("src/lib.rs", &source)?;
    write(".gitignore", "/target\nCargo.lock\n")?;
    if api_path.is_none() {
        write(&format!("{VENDORED_API}/Cargo.toml"), &vendored_api_manifest()?)?;
        for (file, text) in API_SOURCES {
            write(&format!("{VENDORED_API}/{file}"), text)?;
        }
    }
    Ok(())
}

/// The settings section a plugin of `kind` is configured in (the first, for triggers).
pub fn section_for(kind: Kind) -> &'static str {
    match kind {
        Kind::Trigger => "success_triggers",
        Kind::Organization => "organizations",
        Kind::Autoscaler => "autoscalers",
        other => other.name(),
    }
}

fn readme(name: &str, kind: Kind, lib: &str) -> String {
    let section = section_for(kind);
    format!(
        "# vespene-plugin-{name}\n\n\
         A Vespene {kind} plugin, created by `vespene plugins new {name} --kind {kind}` from the\n\
         plugin template. `src/lib.rs` says what it does and how to adapt it; the\n\
         plugin author docs (`docs/plugins/{kind}.md` in the Vespene tree) describe the {kind} kind.\n\n\
         ## Build and test\n\n\
         ```sh\ncargo test\ncargo build --release\n```\n\n\
         The tests go through the same ABI constructor the server uses (the\n\
         `testkit` feature of vespene-plugin-api).\n\n\
         `vendor/vespene-plugin-api` is the plugin interface, as the server that\n\
         created this crate speaks it; `cargo doc --open` shows its documentation.\n\
         Nothing else of Vespene is needed to build: the other dependencies come\n\
         from crates.io (`cargo build --offline` works once cargo has them).\n\n\
         ## Install\n\n\
         Copy `target/release/lib{lib}.so` into a directory on the server's `plugin_path`\n\
         (by default `/usr/lib/vespene/plugins`), then name it in the settings:\n\n\
         ```toml\n[plugins.{section}.{name}]\nlibrary = \"{name}\"\n# ...its parameters\n```\n\n\
         Check it before restarting the server:\n\n\
         ```sh\nvespene plugins check target/release/lib{lib}.so\nvespene plugins list\n```\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_interface_source_file_is_vendored() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let built_in: Vec<String> = API_SOURCES.iter().map(|(f, _)| f.to_string()).collect();
        assert_eq!(built_in, on_disk, "API_SOURCES must list every file of plugin-api/src");
    }

    #[test]
    fn the_vendored_manifest_inherits_nothing_from_a_workspace() {
        let text = vendored_api_manifest().unwrap();
        let manifest: toml::Table = text.parse().unwrap();
        assert!(!text.contains("workspace"), "{text}");
        assert_eq!(manifest["package"]["version"].as_str(), Some(INTERFACE_VERSION));
        assert!(manifest["package"]["edition"].is_str());
        assert!(manifest["dependencies"]["abi_stable"]["version"].is_str(), "{text}");
        assert_eq!(manifest["dependencies"]["libc"]["optional"].as_bool(), Some(true));
        assert!(manifest["dependencies"]["serde"]["features"].as_array().is_some_and(|f| !f.is_empty()));
    }
}
