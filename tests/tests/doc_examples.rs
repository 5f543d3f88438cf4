//! The worked examples of the plugin author guides (`docs/plugins/*.md`)
//! compile, load in the real binary as the kind they document, and pass the
//! unit tests printed with them.
//!
//! In each guide, the complete example is the ```rust block that both has `use`
//! lines and invokes `export_plugin!` (the `src/lib.rs` of a plugin); a ```rust
//! block starting with `#[cfg(test)]` is its tests and is appended to it. The
//! extra crates a guide's ```toml manifest lists (other than the interface
//! crate) become the scratch crate's dependencies. Every example is a member of
//! one scratch workspace under `target/doc-examples/`, built into one target
//! directory there, so the dependencies compile once and later runs are
//! incremental. Examples are compiled with warnings denied.

use std::path::{Path, PathBuf};

use vespene_e2e::{cargo, stderr, stdout, workspace_root, Sandbox};

/// One guide's example, as extracted from its Markdown.
struct Example {
    /// `docs/plugins/<file>`, for messages.
    doc: String,
    /// The scratch package's name.
    package: String,
    /// The scratch library's name (the `.so` is `lib<lib>.so`).
    lib: String,
    /// The complete example, followed by its tests block if there is one.
    source: String,
    has_tests: bool,
    /// Extra `[dependencies]` and `[dev-dependencies]` lines from the guide's manifest.
    dependencies: Vec<String>,
    dev_dependencies: Vec<String>,
    /// From the `export_plugin!` invocation: the plugin's name and kinds.
    name: String,
    kinds: Vec<String>,
}

/// The fenced blocks of a Markdown text: (info string, body).
fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match &mut open {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    open = Some((info.trim().to_string(), String::new()));
                }
            }
            Some((_, body)) => {
                if line.trim_end() == "```" {
                    blocks.push(open.take().unwrap());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

/// The dependency lines of `section` in a manifest block, without the interface crate.
fn dependency_lines(manifest: &str, section: &str) -> Vec<String> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == section;
        } else if inside && !line.is_empty() && !line.starts_with('#') && !line.starts_with("vespene-plugin-api") {
            lines.push(line.to_string());
        }
    }
    lines
}

/// The `name` and kinds of the example's `export_plugin!` invocation.
fn exported(doc: &str, source: &str) -> (String, Vec<String>) {
    let start = source.find("\nexport_plugin!").unwrap_or_else(|| panic!("{doc}: no export_plugin! invocation"));
    let body = &source[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
    let mut name = String::new();
    let mut kinds = Vec::new();
    for entry in body.split(',') {
        let Some((key, value)) = entry.split_once(':') else { continue };
        match key.trim() {
            "name" => name = value.trim().trim_matches('"').to_string(),
            "description" => {}
            kind => kinds.push(kind.to_string()),
        }
    }
    (name, kinds)
}

/// The example of one guide, or `None` when it holds no complete plugin.
fn example(path: &Path) -> Option<Example> {
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let doc = format!("docs/plugins/{file}");
    let text = std::fs::read_to_string(path).unwrap();
    let blocks = fenced_blocks(&text);
    let is_rust = |info: &str| info == "rust";
    let complete: Vec<&String> = blocks
        .iter()
        .filter(|(info, body)| {
            is_rust(info)
                && body.lines().any(|l| l.starts_with("use "))
                && body.lines().any(|l| l.starts_with("export_plugin!"))
        })
        .map(|(_, body)| body)
        .collect();
    let source = match complete.as_slice() {
        [] => return None,
        [one] => (*one).clone(),
        _ => panic!("{doc}: more than one complete example (a ```rust block with `use` lines and export_plugin!)"),
    };
    let tests: Vec<&String> = blocks
        .iter()
        .filter(|(info, body)| is_rust(info) && body.trim_start().starts_with("#[cfg(test)]"))
        .map(|(_, body)| body)
        .collect();
    assert!(tests.len() <= 1, "{doc}: more than one #[cfg(test)] block");
    let manifest = blocks
        .iter()
        .find(|(info, body)| info == "toml" && body.contains("dependencies]"))
        .map(|(_, body)| body.as_str())
        .unwrap_or("");
    let (name, kinds) = exported(&doc, &source);
    let stem = path.file_stem().unwrap().to_string_lossy().to_lowercase();
    Some(Example {
        package: format!("doc-example-{stem}"),
        lib: format!("doc_example_{stem}"),
        source: match tests.first() {
            Some(tests) => format!("{source}\n{tests}"),
            None => source,
        },
        has_tests: !tests.is_empty(),
        dependencies: dependency_lines(manifest, "[dependencies]"),
        dev_dependencies: dependency_lines(manifest, "[dev-dependencies]"),
        name,
        kinds,
        doc,
    })
}

/// Writes `text` to `path` unless it already holds it, so that cargo sees
/// unchanged sources as unchanged.
fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// Writes the scratch workspace holding every example; answers its manifest.
fn write_workspace(dir: &Path, examples: &[Example]) -> PathBuf {
    let root = workspace_root();
    let api = root.join("plugin-api");
    let api = api.display().to_string().replace('\\', "/");
    let members: Vec<String> = examples.iter().map(|e| format!("\"{}\"", e.package)).collect();
    write_if_changed(
        &dir.join("Cargo.toml"),
        &format!("[workspace]\nresolver = \"2\"\nmembers = [{}]\n", members.join(", ")),
    );
    // The workspace's lock file: the examples' crates resolve to the versions
    // the server is tested with, without asking the registry.
    if !dir.join("Cargo.lock").exists() {
        std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    }
    for e in examples {
        let crate_dir = dir.join(&e.package);
        let mut manifest = format!(
            "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [lib]\nname = \"{}\"\ncrate-type = [\"cdylib\"]\n\n\
             [dependencies]\nvespene-plugin-api = {{ path = \"{api}\" }}\n",
            e.package, e.lib
        );
        for line in &e.dependencies {
            manifest.push_str(line);
            manifest.push('\n');
        }
        manifest.push_str(&format!(
            "\n[dev-dependencies]\nvespene-plugin-api = {{ path = \"{api}\", features = [\"testkit\"] }}\n"
        ));
        for line in &e.dev_dependencies {
            manifest.push_str(line);
            manifest.push('\n');
        }
        write_if_changed(&crate_dir.join("Cargo.toml"), &manifest);
        write_if_changed(&crate_dir.join("src/lib.rs"), &e.source);
    }
    dir.join("Cargo.toml")
}

/// Runs cargo `args` on one example's package; answers cargo's error output on failure.
fn cargo_on(target: &Path, manifest: &Path, package: &str, args: &[&str]) -> Result<(), String> {
    let out = cargo(target)
        .args(args)
        .args(["--quiet", "-p", package, "--manifest-path"])
        .arg(manifest)
        .env("RUSTFLAGS", "-D warnings")
        .output()
        .expect("run cargo");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}{}", stdout(&out), stderr(&out)))
    }
}

#[test]
fn the_plugin_guides_examples_compile_load_and_pass_their_tests() {
    let docs = workspace_root().join("docs/plugins");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    paths.sort();
    let examples: Vec<Example> = paths.iter().filter_map(|p| example(p)).collect();

    // Every kind's guide holds a complete example of that kind.
    for path in &paths {
        let stem = path.file_stem().unwrap().to_string_lossy();
        // The README and design notes (abi.md) are not a kind's guide.
        if vespene_plugin_api::Kind::from_name(&stem).is_none() {
            continue;
        }
        let example = examples.iter().find(|e| e.doc.ends_with(&format!("/{stem}.md")));
        let example = example.unwrap_or_else(|| panic!("docs/plugins/{stem}.md holds no complete example"));
        assert_eq!(example.kinds, [stem.to_string()], "{}: the example's export_plugin! kinds", example.doc);
    }

    let scratch = workspace_root().join("target/doc-examples");
    let manifest = write_workspace(&scratch.join("workspace"), &examples);
    let target = scratch.join("target");
    let sandbox = Sandbox::new();
    let mut failures = Vec::new();
    for e in &examples {
        if let Err(errors) = cargo_on(&target, &manifest, &e.package, &["build"]) {
            let built = manifest.with_file_name(&e.package).join("src/lib.rs");
            failures.push(format!("{}: the example does not compile (as {}):\n{errors}", e.doc, built.display()));
            continue;
        }
        let so = target.join(format!("debug/lib{}.so", e.lib));
        let out = sandbox.run(&["plugins", "check", &so.display().to_string()]);
        let text = stdout(&out);
        let kinds = format!("kinds: {}", e.kinds.join(", "));
        if !out.status.success() || !text.contains(&format!("name: {}\n", e.name)) || !text.contains(&kinds) {
            failures.push(format!(
                "{}: `vespene plugins check` on the built example does not report name {} and {kinds}:\n{text}{}",
                e.doc,
                e.name,
                stderr(&out)
            ));
            continue;
        }
        if e.has_tests {
            if let Err(errors) = cargo_on(&target, &manifest, &e.package, &["test", "--lib"]) {
                failures.push(format!("{}: the example's tests fail:\n{errors}", e.doc));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
