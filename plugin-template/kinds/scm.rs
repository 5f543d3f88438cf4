//! An example **SCM** plugin: "checks out" a directory of the server's file
//! system by copying it into the build's work directory.
//!
//! A project's `repo_url` is an absolute path, optionally written as a
//! `file://` URL. Every file, directory and symbolic link under it is copied
//! (`.git` directories and the names listed in `exclude` are skipped, at any
//! depth), with file permissions kept. The revision answered is a content hash
//! of the copy (FNV-1a, 128 bits, over the sorted relative paths, the
//! executable bits and the contents), so two builds of an unchanged directory
//! get the same revision and any change gives a new one. A directory has no
//! committer and no branches: a branch named by the project is ignored, with a
//! note in the build's message log.
//!
//! ```toml
//! [plugins.scm.directory]
//! library = "template"
//! exclude = ["node_modules", ".DS_Store"]   # optional
//! ```
//!
//! A project then uses it with `scm_type = "directory"` (the entry's name) and
//! `repo_url = "/srv/sources/my-project"`.
//!
//! To adapt it to a real source control system, keep the shape of
//! [`Scm::checkout`]: read `repo_url`, `branch`, `ssh_keys` and `login` from
//! the context (decrypt keys with [`Host::decrypt`] and write them only into
//! `private_dir`), run the client through [`Host::run`] so its output is
//! streamed and a stopped build kills it, and answer the revision and
//! committer.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, plugin_name, CheckoutResult, Host, Kind, PluginResult, Scm, ScmContext,
};

/// The parameters this plugin takes; any other key is a configuration error.
#[derive(Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
struct Parameters {
    /// File or directory names to skip at any depth.
    #[serde(default)]
    exclude: Vec<String>,
}

/// Directory entries that are never copied.
const ALWAYS_SKIPPED: &str = ".git";

/// The example SCM plugin: copies a local directory.
#[derive(Debug)]
pub struct DirectoryCopy {
    /// File or directory names skipped at any depth.
    exclude: Vec<OsString>,
}

/// A 128-bit FNV-1a hash: tiny, dependency-free and stable across Rust
/// releases (unlike `std::hash::DefaultHasher`, whose output may change).
/// Not cryptographic: fine to tell revisions apart, not to authenticate them.
#[derive(Debug, Clone, Copy)]
pub struct Fnv128(u128);

impl Fnv128 {
    const OFFSET_BASIS: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    /// A hash of nothing yet.
    pub fn new() -> Self {
        Fnv128(Self::OFFSET_BASIS)
    }

    /// Feeds `bytes` into the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u128::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    /// The hash so far, as 32 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.0)
    }
}

impl Default for Fnv128 {
    fn default() -> Self {
        Self::new()
    }
}

/// One checkout in progress: what was copied so far and its running hash.
struct Checkout<'a, 'h> {
    exclude: &'a [OsString],
    host: &'a Host<'h>,
    /// The tree hash: one record per entry, in sorted path order.
    tree: Fnv128,
    files: u64,
    bytes: u64,
    buffer: Vec<u8>,
}

impl Checkout<'_, '_> {
    /// Adds one entry to the tree hash. Records are `kind`, the relative path,
    /// a NUL (paths never hold one) and a fixed-size tail, so no two different
    /// trees feed the hash the same bytes.
    fn record(&mut self, kind: u8, relative: &Path, tail: &[u8]) {
        self.tree.update(&[kind]);
        self.tree.update(relative.as_os_str().as_bytes());
        self.tree.update(&[0]);
        self.tree.update(tail);
    }

    /// Copies the contents of directory `from` into the existing directory `to`.
    fn directory(&mut self, from: &Path, to: &Path, relative: &Path) -> PluginResult<()> {
        let mut entries = fs::read_dir(from)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read directory {}: {e}", from.display()))?;
        // Sorted, so the hash does not depend on the file system's order.
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            if self.host.is_cancelled() {
                return Err("checkout was cancelled".to_string());
            }
            let name = entry.file_name();
            if name == ALWAYS_SKIPPED || self.exclude.contains(&name) {
                continue;
            }
            let (source, target, relative) = (entry.path(), to.join(&name), relative.join(&name));
            let io = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", source.display());
            // file_type does not follow symbolic links: links are copied as links.
            let file_type = entry.file_type().map_err(|e| io("inspect", e))?;
            if file_type.is_dir() {
                fs::create_dir(&target).map_err(|e| format!("cannot create {}: {e}", target.display()))?;
                self.record(b'd', &relative, &[]);
                self.directory(&source, &target, &relative)?;
            } else if file_type.is_symlink() {
                let link = fs::read_link(&source).map_err(|e| io("read link", e))?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| format!("cannot create link {}: {e}", target.display()))?;
                let mut digest = Fnv128::new();
                digest.update(link.as_os_str().as_bytes());
                self.record(b'l', &relative, &digest.0.to_le_bytes());
            } else if file_type.is_file() {
                let (digest, executable) = self.file(&source, &target)?;
                let mut tail = [0u8; 17];
                tail[0] = u8::from(executable);
                tail[1..].copy_from_slice(&digest.0.to_le_bytes());
                self.record(b'f', &relative, &tail);
            }
            // Sockets, FIFOs and devices are not source code: skipped.
        }
        Ok(())
    }

    /// Copies one file, hashing its contents on the way; answers the content
    /// hash and whether it is executable.
    fn file(&mut self, source: &Path, target: &Path) -> PluginResult<(Fnv128, bool)> {
        let read_error = |e: std::io::Error| format!("cannot read {}: {e}", source.display());
        let write_error = |e: std::io::Error| format!("cannot write {}: {e}", target.display());
        let mut input = File::open(source).map_err(read_error)?;
        let permissions = input.metadata().map_err(read_error)?.permissions();
        let mut output = File::create(target).map_err(write_error)?;
        let mut digest = Fnv128::new();
        loop {
            let n = match input.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            digest.update(&self.buffer[..n]);
            output.write_all(&self.buffer[..n]).map_err(write_error)?;
            self.bytes += n as u64;
        }
        let executable = permissions.mode() & 0o111 != 0;
        // The permission bits only: no setuid or setgid copies.
        fs::set_permissions(target, fs::Permissions::from_mode(permissions.mode() & 0o777)).map_err(write_error)?;
        self.files += 1;
        Ok((digest, executable))
    }
}

/// The directory a `repo_url` names: an absolute path, or a `file://` URL of one.
fn source_dir(repo_url: &str) -> PluginResult<PathBuf> {
    let path = Path::new(repo_url.strip_prefix("file://").unwrap_or(repo_url));
    if !path.is_absolute() {
        return Err(format!("repository '{repo_url}' must be an absolute path or a file:// URL"));
    }
    if !path.is_dir() {
        return Err(format!("repository '{repo_url}' is not a directory"));
    }
    Ok(path.to_path_buf())
}

impl Scm for DirectoryCopy {
    fn new(config: &Value) -> PluginResult<Self> {
        let Parameters { exclude } = params::parse(config, Kind::Scm, plugin_name!())?;
        if let Some(name) = exclude.iter().find(|n| n.is_empty() || n.contains('/')) {
            return Err(format!("parameter 'exclude' must list file names (strings without '/'), not {name:?}"));
        }
        Ok(DirectoryCopy { exclude: exclude.into_iter().map(OsString::from).collect() })
    }

    fn checkout(&self, context: &ScmContext, host: &Host<'_>) -> PluginResult<CheckoutResult> {
        let source = source_dir(&context.repo_url)?;
        if context.work_dir.is_empty() {
            return Err("the checkout has no work directory".to_string());
        }
        let work_dir = Path::new(&context.work_dir);
        fs::create_dir_all(work_dir).map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
        // Copying a directory into itself would never end.
        let resolve = |p: &Path| fs::canonicalize(p).map_err(|e| format!("cannot resolve {}: {e}", p.display()));
        if resolve(work_dir)?.starts_with(resolve(&source)?) {
            return Err(format!(
                "the work directory {} is inside the repository {}",
                work_dir.display(),
                source.display()
            ));
        }
        if let Some(branch) = &context.branch {
            host.message(&format!("branch '{branch}' ignored: a directory has no branches"));
        }
        host.message(&format!("copying {} into {}", source.display(), work_dir.display()));

        let mut copy = Checkout {
            exclude: &self.exclude,
            host,
            tree: Fnv128::new(),
            files: 0,
            bytes: 0,
            buffer: vec![0; 64 * 1024],
        };
        copy.directory(&source, work_dir, Path::new(""))?;
        let revision = copy.tree.hex();
        let short = revision[..8].to_string();
        host.message(&format!("copied {} files ({} bytes), revision {short}", copy.files, copy.bytes));
        Ok(CheckoutResult {
            revision: Some(revision),
            short_revision: Some(short),
            committer: None,
            committer_email: None,
        })
    }
}

export_plugin! {
    description: "Example SCM: copies a local directory into the build, revision = content hash",
    scm: DirectoryCopy,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
    use vespene_plugin_api::{plugin_name, CheckoutResult, PluginResult, ScmContext};

    use super::{DirectoryCopy, Fnv128};

    fn context(repo_url: &str, work_dir: &Path) -> ScmContext {
        ScmContext {
            build: fake_build(),
            project: fake_project(),
            work_dir: work_dir.to_string_lossy().into_owned(),
            repo_url: repo_url.to_string(),
            ..Default::default()
        }
    }

    fn checkout(config: Value, ctx: &ScmContext, host: &RecordingHost) -> PluginResult<CheckoutResult> {
        testkit::scm::<DirectoryCopy>(config)?.checkout(ctx, host)
    }

    /// A source tree with a nested file, an executable, a link, `.git` and `target`.
    fn source_tree() -> tempfile::TempDir {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        fs::create_dir_all(root.join("src/deep")).unwrap();
        fs::create_dir_all(root.join(".git/objects")).unwrap();
        fs::create_dir_all(root.join("target")).unwrap();
        fs::write(root.join("README"), "read me\n").unwrap();
        fs::write(root.join("src/deep/main.c"), "int main() { return 0; }\n").unwrap();
        fs::write(root.join("build.sh"), "#!/bin/sh\nmake\n").unwrap();
        fs::set_permissions(root.join("build.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(root.join("target/big.o"), "object").unwrap();
        std::os::unix::fs::symlink("README", root.join("LINK")).unwrap();
        src
    }

    fn revision_of(src: &Path, config: Value) -> String {
        let work = tempfile::tempdir().unwrap();
        let ctx = context(&src.to_string_lossy(), work.path());
        checkout(config, &ctx, &RecordingHost::new()).unwrap().revision.unwrap()
    }

    #[test]
    fn copies_the_tree_without_git_and_excluded_names() {
        let src = source_tree();
        let work = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        let ctx = context(&format!("file://{}", src.path().display()), work.path());

        let result = checkout(json!({"exclude": ["target"]}), &ctx, &host).unwrap();

        let w = work.path();
        assert_eq!(fs::read_to_string(w.join("README")).unwrap(), "read me\n");
        assert_eq!(fs::read_to_string(w.join("src/deep/main.c")).unwrap(), "int main() { return 0; }\n");
        assert_eq!(
            fs::metadata(w.join("build.sh")).unwrap().permissions().mode() & 0o7777,
            0o755,
            "permission bits kept, setuid dropped"
        );
        assert_eq!(fs::read_link(w.join("LINK")).unwrap(), Path::new("README"));
        assert!(!w.join(".git").exists());
        assert!(!w.join("target").exists());

        let revision = result.revision.unwrap();
        assert_eq!(revision.len(), 32);
        assert!(revision.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(result.short_revision.unwrap(), revision[..8]);
        assert_eq!(result.committer, None);
        assert_eq!(host.messages().last().unwrap(), &format!("copied 3 files (48 bytes), revision {}", &revision[..8]));
    }

    #[test]
    fn the_revision_follows_the_contents() {
        let src = source_tree();
        let first = revision_of(src.path(), json!({}));
        assert_eq!(revision_of(src.path(), json!({})), first, "an unchanged tree keeps its revision");

        // Skipped content does not count.
        fs::write(src.path().join(".git/HEAD"), "ref: refs/heads/other\n").unwrap();
        assert_eq!(revision_of(src.path(), json!({})), first);

        fs::write(src.path().join("README"), "read me!\n").unwrap();
        let edited = revision_of(src.path(), json!({}));
        assert_ne!(edited, first, "changed contents");

        fs::rename(src.path().join("README"), src.path().join("README.txt")).unwrap();
        let renamed = revision_of(src.path(), json!({}));
        assert_ne!(renamed, edited, "renamed file");

        fs::set_permissions(src.path().join("README.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(revision_of(src.path(), json!({})), renamed, "made executable");

        assert_ne!(revision_of(src.path(), json!({"exclude": ["target"]})), revision_of(src.path(), json!({})));
    }

    #[test]
    fn a_named_branch_is_reported_as_ignored() {
        let src = source_tree();
        let work = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        let mut ctx = context(&src.path().to_string_lossy(), work.path());
        ctx.branch = Some("main".to_string());
        checkout(json!({}), &ctx, &host).unwrap();
        assert_eq!(host.messages()[0], "branch 'main' ignored: a directory has no branches");
    }

    #[test]
    fn a_cancelled_build_stops_the_copy() {
        let src = source_tree();
        let work = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        host.cancel();
        let err = checkout(json!({}), &context(&src.path().to_string_lossy(), work.path()), &host).unwrap_err();
        assert_eq!(err, "checkout was cancelled");
        assert!(!work.path().join("README").exists());
    }

    #[test]
    fn bad_repositories_fail_the_checkout() {
        let src = source_tree();
        let work = tempfile::tempdir().unwrap();
        let host = RecordingHost::new();
        let missing = src.path().join("nope");

        let err = checkout(json!({}), &context(&missing.to_string_lossy(), work.path()), &host).unwrap_err();
        assert_eq!(err, format!("repository '{}' is not a directory", missing.display()));

        let err = checkout(json!({}), &context("relative/dir", work.path()), &host).unwrap_err();
        assert_eq!(err, "repository 'relative/dir' must be an absolute path or a file:// URL");

        let inside = src.path().join("src/out");
        let err = checkout(json!({}), &context(&src.path().to_string_lossy(), &inside), &host).unwrap_err();
        assert!(err.contains("is inside the repository"), "{err}");
    }

    #[test]
    fn fnv128_matches_the_reference_values() {
        // FNV-1a 128 of "" is the offset basis; of "a" from the reference tables.
        assert_eq!(Fnv128::new().hex(), "6c62272e07bb014262b821756295c58d");
        let mut h = Fnv128::new();
        h.update(b"a");
        assert_eq!(h.hex(), "d228cb696f1a8caf78912b704e4a8964");
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let cases = [
            (
                json!({"exclude": "target"}),
                format!(
                    "parameter 'exclude' of scm plugin {name}: invalid type: string \"target\", expected a sequence"
                ),
            ),
            (
                json!({"exclude": [1]}),
                format!("parameter 'exclude[0]' of scm plugin {name}: invalid type: integer `1`, expected a string"),
            ),
            (
                json!({"exclude": ["a/b"]}),
                "parameter 'exclude' must list file names (strings without '/'), not \"a/b\"".to_string(),
            ),
            (json!({"exlude": []}), format!("unknown parameter 'exlude' for scm plugin {name}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::scm::<DirectoryCopy>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
        assert!(testkit::scm::<DirectoryCopy>(Value::Null).is_ok(), "no parameters at all");
    }
}
