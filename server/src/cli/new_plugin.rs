//! `vespene plugins new NAME --kind KIND`: a new plugin crate made from
//! `plugin-template`, whose files are built into the binary so the command
//! works wherever `vespene` is installed.

use std::path::{Path, PathBuf};

use vespene_plugin_api::Kind;

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

/// Where the interface crate's source was when this binary was built; used as
/// the new crate's path dependency when it still exists.
fn default_api_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
    path.join("Cargo.toml").is_file().then(|| path.canonicalize().unwrap_or(path))
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

/// Writes the new crate into `dir` (which must not exist yet).
pub fn create(name: &str, kind: Kind, dir: &Path, api_path: Option<&Path>) -> Result<(), String> {
    validate_name(name)?;
    if dir.exists() {
        return Err(format!("{} already exists; choose another --dir", dir.display()));
    }
    let lib = format!("vespene_{}", name.replace('-', "_"));
    let api_path = api_path.map(Path::to_path_buf).or_else(default_api_path);
    let api_dep = match &api_path {
        Some(p) => format!("vespene-plugin-api = {{ path = \"{}\", version = \"1.3\"", p.display()),
        None => "vespene-plugin-api = { version = \"1.3\"".to_string(),
    };
    let cargo_toml: String = CARGO_TOML
        .lines()
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
    // An empty workspace table keeps the crate standalone wherever it is created.
    write("Cargo.toml", &(cargo_toml + "\n\n[workspace]\n"))?;
    write("README.md", &readme)?;
    write("src/lib.rs", &source)?;
    write(".gitignore", "/target\nCargo.lock\n")?;
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
         ## Install\n\n\
         Copy `target/release/lib{lib}.so` into a directory on the server's `plugin_path`\n\
         (by default `/usr/lib/vespene/plugins`), then name it in the settings:\n\n\
         ```toml\n[plugins.{section}.{name}]\nlibrary = \"{name}\"\n# ...its parameters\n```\n\n\
         Check it before restarting the server:\n\n\
         ```sh\nvespene plugins check target/release/lib{lib}.so\nvespene plugins list\n```\n"
    )
}
