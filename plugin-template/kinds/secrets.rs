//! An example **secrets** plugin: keeps each secret in a file of its own,
//! outside the database, which then stores only a reference to it.
//!
//! `cloak` writes the plain value to a new file of the directory `dir`
//! (mode 0600, never overwriting one) and answers
//! `[VESPENE-CLOAK][FILE][V1]<file name>`; `decloak` reads the file back.
//! Removing a file revokes its secret; backing up the database no longer
//! backs up the secrets.
//!
//! **This is not encryption.** It is the pattern for an external secret store
//! (HashiCorp Vault, a cloud key manager, a hardware module): the database
//! holds a versioned header and a reference, the store holds the value. Here
//! the store is a directory, protected by file permissions only: the plugin
//! refuses a `dir` that users other than its owner can read or enter.
//!
//! ```toml
//! [plugins.secrets.files]
//! library = "template"
//! dir = "/var/lib/vespene/secrets"   # owned by the server's user, mode 0700
//! ```
//!
//! The first configured secrets plugin stores new secrets; every configured
//! one that recognizes a stored value's header can read it, so keep an old
//! plugin configured (after the new one) while values move over. To adapt it,
//! change the header's tag and version, and the three methods of [`Secrets`].

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, plugin_name, Kind, PluginResult, Secrets};

/// The parameters this plugin takes; any other key is a configuration error.
#[derive(Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
struct Parameters {
    /// The directory holding the secret files: absolute, private to the server's user.
    dir: String,
}

/// What every value this plugin stores starts with. Bump the version when the
/// format changes, and keep reading the old one.
pub const HEADER: &str = "[VESPENE-CLOAK][FILE][V1]";

/// How many new names `cloak` tries before giving up.
const ATTEMPTS: u32 = 16;

/// The example secrets plugin: one file per secret.
#[derive(Debug)]
pub struct FileSecrets {
    /// The directory holding the secret files.
    dir: PathBuf,
    /// Makes names unique among the secrets cloaked in the same nanosecond.
    counter: AtomicU64,
}

impl FileSecrets {
    /// A name no other file of `dir` is expected to have: the time, the
    /// process and a counter. `create_new` catches the unexpected.
    fn new_name(&self) -> String {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{nanos:x}-{:x}-{count:x}", std::process::id())
    }

    /// The file a stored value refers to, refusing anything but a plain name in `dir`.
    fn file_of(&self, stored: &str) -> PluginResult<PathBuf> {
        let name = stored.strip_prefix(HEADER).ok_or("not a value stored by the file secrets plugin")?;
        if name.is_empty() || name.contains('/') || name.contains("..") || name.contains('\0') {
            return Err(format!("invalid secret file name '{name}'"));
        }
        Ok(self.dir.join(name))
    }
}

impl Secrets for FileSecrets {
    fn new(config: &Value) -> PluginResult<Self> {
        let Parameters { dir } = params::parse(config, Kind::Secrets, plugin_name!())?;
        if !Path::new(&dir).is_absolute() {
            return Err(format!("parameter 'dir' must be an absolute directory path, not {dir:?}"));
        }
        let dir = PathBuf::from(dir);
        let meta = fs::metadata(&dir)
            .ok()
            .filter(|m| m.is_dir())
            .ok_or_else(|| format!("parameter 'dir': {} is not a directory", dir.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "parameter 'dir': {} is open to other users (mode {mode:03o}): make it 0700",
                dir.display()
            ));
        }
        Ok(FileSecrets { dir, counter: AtomicU64::new(0) })
    }

    fn recognizes(&self, stored: &str) -> bool {
        stored.starts_with(HEADER)
    }

    fn cloak(&self, plain: &str) -> PluginResult<String> {
        for _ in 0..ATTEMPTS {
            let name = self.new_name();
            let path = self.dir.join(&name);
            let mut file = match OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create secret file {}: {e}", path.display())),
            };
            // Written and synced before the reference is handed out.
            if let Err(e) = file.write_all(plain.as_bytes()).and_then(|()| file.sync_all()) {
                let _ = fs::remove_file(&path);
                return Err(format!("cannot write secret file {}: {e}", path.display()));
            }
            return Ok(format!("{HEADER}{name}"));
        }
        Err(format!("cannot find a free secret file name in {}", self.dir.display()))
    }

    fn decloak(&self, stored: &str) -> PluginResult<String> {
        let path = self.file_of(stored)?;
        fs::read_to_string(&path).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
    }
}

export_plugin! {
    description: "Example secrets store: keeps each secret in a file (not encryption)",
    secrets: FileSecrets,
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use vespene_plugin_api::plugin_name;
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{self, TestSecrets};

    use super::{FileSecrets, HEADER};

    fn store() -> (tempfile::TempDir, TestSecrets) {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let secrets = testkit::secrets::<FileSecrets>(json!({"dir": dir.path()})).unwrap();
        (dir, secrets)
    }

    #[test]
    fn cloaked_values_live_in_private_files_and_come_back() {
        let (dir, secrets) = store();

        let stored = secrets.cloak("s3cr3t\nwith lines").unwrap();

        assert!(stored.starts_with(HEADER), "{stored}");
        assert!(!stored.contains("s3cr3t"));
        assert!(secrets.recognizes(&stored));
        let file = dir.path().join(&stored[HEADER.len()..]);
        assert_eq!(fs::read_to_string(&file).unwrap(), "s3cr3t\nwith lines");
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(secrets.decloak(&stored).unwrap(), "s3cr3t\nwith lines");
    }

    #[test]
    fn every_cloak_makes_a_new_file() {
        let (dir, secrets) = store();
        let first = secrets.cloak("same").unwrap();
        let second = secrets.cloak("same").unwrap();
        let empty = secrets.cloak("").unwrap();
        assert_ne!(first, second);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 3);
        assert_eq!(secrets.decloak(&empty).unwrap(), "");
    }

    #[test]
    fn other_headers_are_not_recognized() {
        let (_dir, secrets) = store();
        for stored in ["plain text", "[VESPENE-CLOAK][SYM][V1]abc", "[VESPENE-CLOAK][FILE][V2]abc", ""] {
            assert!(!secrets.recognizes(stored), "{stored}");
        }
        let err = secrets.decloak("plain text").unwrap_err();
        assert_eq!(err, "not a value stored by the file secrets plugin");
    }

    #[test]
    fn names_outside_the_directory_are_refused() {
        // The store is a directory next to a file "outside" that must stay unreachable.
        let outer = tempfile::tempdir().unwrap();
        let store = outer.path().join("store");
        fs::create_dir(&store).unwrap();
        fs::set_permissions(&store, fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(outer.path().join("outside"), "x").unwrap();
        let secrets = testkit::secrets::<FileSecrets>(json!({"dir": store})).unwrap();
        for name in ["../outside", "a/b", "/etc/passwd", "..", ""] {
            let err = secrets.decloak(&format!("{HEADER}{name}")).unwrap_err();
            assert_eq!(err, format!("invalid secret file name '{name}'"));
        }
        let err = secrets.decloak(&format!("{HEADER}removed")).unwrap_err();
        assert!(err.starts_with(&format!("cannot read secret file {}", store.join("removed").display())), "{err}");
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let name = plugin_name!();
        let cases = [
            (json!({}), format!("parameter 'dir' of secrets plugin {name} is required")),
            (
                json!({"dir": 1}),
                format!("parameter 'dir' of secrets plugin {name}: invalid type: integer `1`, expected a string"),
            ),
            (
                json!({"dir": "secrets"}),
                "parameter 'dir' must be an absolute directory path, not \"secrets\"".to_string(),
            ),
            (json!({"dir": file}), format!("parameter 'dir': {} is not a directory", file.display())),
            (
                json!({"dir": open}),
                format!("parameter 'dir': {} is open to other users (mode 755): make it 0700", open.display()),
            ),
            (json!({"dir": dir.path(), "key": "x"}), format!("unknown parameter 'key' for secrets plugin {name}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::secrets::<FileSecrets>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
