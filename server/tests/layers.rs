//! The server's layers, checked against its source (ARCHITECTURE.md,
//! "Layers"): each top-level module of `server/src` names only the modules
//! below it (the web tier names the service layer, never the store or the
//! engine), and inside the web tier the API and the UI are adapters naming
//! neither each other nor anything that names them; so no modules form a
//! cycle. Comments and
//! test code (`#[cfg(test)]` items, `tests.rs` files) are not counted: a test
//! may build what it needs from any layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may name, lowest first.
const LAYERS: &[(&str, &[&str])] = &[
    ("metrics", &[]),
    ("settings", &[]),
    ("store", &["settings", "metrics"]),
    ("plugins", &["settings", "store", "metrics"]),
    ("engine", &["settings", "store", "plugins", "metrics"]),
    ("service", &["settings", "store", "plugins", "engine", "metrics"]),
    ("web", &["settings", "service", "metrics"]),
    ("cli", &["settings", "store", "plugins", "engine", "service", "web", "metrics"]),
];

/// The modules of the web tier (files of `server/src/web`, and the `ui`
/// folder) and the ones each may name. `mod.rs`, which puts the routes
/// together, may name them all.
const WEB_LAYERS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("routes", &[]),
    ("limits", &["error"]),
    ("request", &["error", "routes"]),
    ("auth", &["error"]),
    ("audit", &["error"]),
    ("openapi", &["auth", "routes"]),
    ("log", &[]),
    ("live", &["limits", "error"]),
    ("observe", &["auth", "error"]),
    ("webhooks", &["error", "request"]),
    ("ui", &["audit", "auth", "error", "limits", "request", "routes"]),
    (
        "api",
        &["audit", "auth", "error", "limits", "live", "log", "observe", "openapi", "request", "routes", "webhooks"],
    ),
];

/// The top-level modules a piece of source names through `crate::`, leaving
/// out comments and `#[cfg(test)]` items. A `use crate::{...}` group is
/// refused: it would hide which layers it reaches.
fn modules_named(source: &str) -> Result<BTreeSet<String>, String> {
    names_after(source, &["crate::"])
}

/// The names that follow any of `prefixes` in code (not in comments or
/// `#[cfg(test)]` items).
fn names_after(source: &str, prefixes: &[&str]) -> Result<BTreeSet<String>, String> {
    let mut named = BTreeSet::new();
    let mut lines = source.lines();
    while let Some(line) = lines.next() {
        let code = line.split("//").next().unwrap_or("").trim();
        if code == "#[cfg(test)]" {
            // A test module runs to the end of its braces; another test item is one line.
            let Some(item) = lines.next() else { break };
            if item.trim_end().ends_with('{') {
                let braces = |l: &str| l.matches('{').count() as i64 - l.matches('}').count() as i64;
                let mut depth = braces(item);
                for inner in lines.by_ref() {
                    depth += braces(inner);
                    if depth <= 0 {
                        break;
                    }
                }
            }
            continue;
        }
        for prefix in prefixes {
            let mut rest = code;
            while let Some(at) = rest.find(prefix) {
                let after = &rest[at + prefix.len()..];
                if after.starts_with('{') {
                    return Err(format!("`{code}`: name each layer in its own `use {prefix}module::...`"));
                }
                let module: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !module.is_empty() {
                    named.insert(module);
                }
                rest = after;
            }
        }
    }
    Ok(named)
}

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") && path.file_name().is_some_and(|n| n != "tests.rs") {
        out.push(path.to_path_buf());
    }
}

/// The places under `dir` (a file or folder per module, `skip` aside) that
/// name a module of `layers` they may not; `prefixes` says, for a file,
/// which paths reach a sibling module (`crate::` for the top level).
fn violations(
    dir: &Path,
    layers: &[(&str, &[&str])],
    skip: &[&str],
    prefixes: impl Fn(&Path) -> Vec<&'static str>,
) -> Vec<String> {
    let layers: BTreeMap<&str, &[&str]> = layers.iter().copied().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut wrong = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let Some(allowed) = layers.get(name.as_str()) else {
            wrong.push(format!("{} is in no layer: add it to the table and ARCHITECTURE.md", path.display()));
            continue;
        };
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let shown = file.strip_prefix(root).unwrap().display().to_string();
            match names_after(&text, &prefixes(&file)) {
                Err(e) => wrong.push(format!("{shown}: {e}")),
                Ok(named) => {
                    for module in named {
                        if module != name && layers.contains_key(module.as_str()) && !allowed.contains(&module.as_str())
                        {
                            wrong.push(format!("{shown} ({name}) names {module}, a layer it may not name"));
                        }
                    }
                }
            }
        }
    }
    wrong
}

#[test]
fn each_top_level_module_names_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let wrong = violations(&src, LAYERS, &["lib", "main"], |_| vec!["crate::"]);
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn in_the_web_tier_the_api_and_the_ui_are_adapters_naming_neither_each_other() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/web");
    let wrong = violations(&web, WEB_LAYERS, &["mod"], |file| {
        // In web/x.rs and web/ui/mod.rs `super::` is the web tier; deeper, `super::super::`.
        let nested = file.parent() != Some(web.as_path()) && file.file_name().is_some_and(|n| n != "mod.rs");
        vec!["crate::web::", if nested { "super::super::" } else { "super::" }]
    });
    assert!(wrong.is_empty(), "web layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_check_reads_code_and_skips_comments_and_tests() {
    let source = "use crate::store::Store;\n\
                  // crate::web is only mentioned here\n\
                  let x = crate::engine::run(); // and crate::cli here\n\
                  #[cfg(test)]\n\
                  mod tests {\n    use crate::web::x;\n    fn f() { crate::cli::g() }\n}\n\
                  #[cfg(test)]\n\
                  use crate::settings::Y;\n\
                  fn after() { crate::plugins::z(); }\n";
    let named: Vec<String> = modules_named(source).unwrap().into_iter().collect();
    assert_eq!(named, ["engine", "plugins", "store"]);
    assert!(modules_named("use crate::{store::A, web::B};").is_err());
}
