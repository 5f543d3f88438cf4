//! Finding and opening plugin libraries, with one clear line for every way
//! that can go wrong.

use std::path::{Path, PathBuf};

use abi_stable::abi_stability::abi_checking::{check_layout_compatibility_with_globals, CheckingGlobals};
use abi_stable::library::{lib_header_from_path, LibHeader, LibraryError, RootModule};
use abi_stable::std_types::RBoxError;
use abi_stable::StableAbi;
use vespene_plugin_api::abi::{PluginInfo, PluginModuleRef, INTERFACE_VERSION};

/// An opened plugin library.
#[derive(Clone)]
pub struct Library {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Its root module.
    pub module: PluginModuleRef,
    /// What it says about itself.
    pub info: PluginInfo,
}

/// Resolves `library` (a bare name or a path) against `plugin_path`.
pub fn resolve(library: &str, plugin_path: &[PathBuf]) -> Result<PathBuf, String> {
    if library.contains('/') || library.ends_with(".so") {
        let path = PathBuf::from(library);
        return if path.is_file() { Ok(path) } else { Err(format!("library file {} does not exist", path.display())) };
    }
    let stem = library.replace('-', "_");
    let candidates = [format!("libvespene_{stem}.so"), format!("lib{stem}.so"), format!("{library}.so")];
    for dir in plugin_path {
        for file in &candidates {
            let path = dir.join(file);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    let dirs: Vec<String> = plugin_path.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "library '{library}' not found on plugin_path [{}] (looked for {})",
        dirs.join(", "),
        candidates.join(", ")
    ))
}

/// Refuses a library, or the directory holding it, that someone other than
/// root and the server's own user could change: owned by another user, or
/// writable by its group or by everyone. (A build running as another user
/// could otherwise replace the code the server loads at its next start.)
/// `path` is the resolved file, symlinks followed.
pub fn check_trusted(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = path.parent().unwrap_or(Path::new("/"));
    for (what, p) in [("library", path), ("plugin directory", dir)] {
        let meta = std::fs::metadata(p).map_err(|e| format!("cannot inspect {what} {}: {e}", p.display()))?;
        if meta.uid() != 0 && meta.uid() != me {
            return Err(format!(
                "refusing to load: {what} {} belongs to uid {}, neither root nor the server's user (uid {me}), \
                 who could replace it",
                p.display(),
                meta.uid()
            ));
        }
        let mode = meta.mode();
        if mode & 0o022 != 0 {
            let who = if mode & 0o002 != 0 { "everyone" } else { "its group" };
            return Err(format!(
                "refusing to load: {what} {} is writable by {who} (mode {:04o}); make it writable by its owner \
                 only (chmod go-w)",
                p.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

/// Checks a library's SHA-256 against the `sha256` its settings entry gives.
pub fn check_sha256(path: &Path, expected: &str) -> Result<(), String> {
    use sha2::{Digest, Sha256};
    let expected = expected.trim().to_ascii_lowercase();
    if expected.len() != 64 || !expected.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("sha256 must be 64 hexadecimal digits, got '{expected}'"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != expected {
        return Err(format!(
            "refusing to load: its SHA-256 is {actual}, the settings entry's sha256 says {expected} \
             (the file changed, or the setting is out of date)"
        ));
    }
    Ok(())
}

/// Opens a plugin library, checking its interface version and layout.
pub fn open(path: &Path) -> Result<Library, String> {
    open_with_detail(path, false)
}

/// Like [`open`]; with `detail`, a layout mismatch carries abi_stable's full
/// report (long: for `vespene plugins check --detail`, not for start-up errors).
pub fn open_with_detail(path: &Path, detail: bool) -> Result<Library, String> {
    if !path.is_file() {
        return Err(format!("{} does not exist", path.display()));
    }
    let header = lib_header_from_path(path).map_err(|e| match e {
        LibraryError::OpenError { err, .. } => {
            format!("cannot be opened as a shared library: {}", first_line(&err.to_string()))
        }
        LibraryError::GetSymbolError { .. } => {
            "is not a Vespene plugin: it exports no plugin root module (build it with export_plugin!)".into()
        }
        other => first_line(&other.to_string()),
    })?;
    let built_on = header.version_strings().version.to_string();
    let module = if built_on_older_minor(&built_on) {
        init_older_minor(header)
    } else {
        header.init_root_module::<PluginModuleRef>()
    };
    let module = module.map_err(|e| match e {
        LibraryError::IncompatibleVersionNumber { expected_version, actual_version, .. } => format!(
            "was built on plugin interface {actual_version}, this server speaks {expected_version}: \
             the major versions must match; rebuild it against vespene-plugin-api {}",
            PluginModuleRef::VERSION_STRINGS.version
        ),
        LibraryError::AbiInstability(report) => format!(
            "its plugin interface layout differs from this server's (plugin built on {built_on}, server \
             speaks {INTERFACE_VERSION}): it was built from a modified or mismatched vespene-plugin-api; rebuild it{}",
            if detail { format!("\n{report}") } else { String::new() }
        ),
        LibraryError::InvalidAbiHeader(_) => "was built with an incompatible abi_stable release".into(),
        LibraryError::RootModule { err, .. } => format!("its root module failed: {}", first_line(&err.to_string())),
        other => first_line(&other.to_string()),
    })?;
    let info = (module.info())();
    Ok(Library { path: path.to_path_buf(), module, info })
}

/// A plugin built on an older minor version of the interface has fewer fields
/// in its prefix types (module, vtables) than this server. abi_stable's check
/// wants the loader's side to have at most as many fields as the library's, so
/// the check runs the other way round: the plugin's layout must be a prefix of
/// ours, field for field. The generated accessors then answer `None`, or the
/// trait method's default, for what the plugin lacks.
///
/// The check runs with checking state of its own: abi_stable merges every
/// prefix type it checks into a process-wide map, and for two of the same
/// length it keeps the first one's field types. An older plugin's vtables
/// merged there would carry its older `Host` into the checks of every
/// current plugin loaded after it, which would then fail.
fn init_older_minor(header: &LibHeader) -> Result<PluginModuleRef, LibraryError> {
    let Some(plugin_layout) = header.layout() else {
        return Err(LibraryError::AbiInstability(RBoxError::from_fmt(&"the plugin carries no layout to check")));
    };
    let isolated = CheckingGlobals::new();
    check_layout_compatibility_with_globals(plugin_layout, <PluginModuleRef as StableAbi>::LAYOUT, &isolated)
        .map_err(|e| LibraryError::AbiInstability(RBoxError::from_fmt(&e)))?;
    // SAFETY: the layout was checked just above, with the plugin as the interface.
    unsafe { header.init_root_module_with_unchecked_layout::<PluginModuleRef>() }
}

fn first_line(s: &str) -> String {
    s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(300).collect()
}

/// Whether a plugin was built on an older minor version of this interface.
pub fn built_on_older_minor(plugin_interface: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split('.');
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parse(plugin_interface), parse(INTERFACE_VERSION)) {
        (Some((pmaj, pmin)), Some((smaj, smin))) => pmaj == smaj && pmin < smin,
        _ => false,
    }
}
