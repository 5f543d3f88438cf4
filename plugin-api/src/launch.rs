//! What every isolation plugin does around the build's launch script: find it
//! in the build root, tell whether it names its own interpreter, walk the build
//! root without following symlinks, and start it through the host's runner.
//! The messages start with the plugin's label (`"sandbox isolation"`), so a
//! build's log says which plugin spoke.
//!
//! ```
//! use vespene_plugin_api::launch;
//! use vespene_plugin_api::IsolationContext;
//!
//! let root = std::env::temp_dir().join(format!("launch-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&root).unwrap();
//! std::fs::write(root.join("vespene_launch.sh"), "#!/bin/sh\necho hi\n").unwrap();
//! let context = IsolationContext {
//!     build_root: root.display().to_string(),
//!     launch_script: "vespene_launch.sh".into(),
//!     ..Default::default()
//! };
//! let script = launch::launch_script(&context, "my isolation").unwrap();
//! assert!(launch::has_shebang(&script, "my isolation").unwrap());
//!
//! let bad = IsolationContext { launch_script: "../x.sh".into(), ..context };
//! assert_eq!(
//!     launch::launch_script(&bad, "my isolation").unwrap_err(),
//!     "my isolation: launch script '../x.sh' must be a plain file name in the build root"
//! );
//! std::fs::remove_dir_all(&root).unwrap();
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{CommandOutcome, CommandRequest, Host, IsolationContext, PluginResult};

/// How many more times a script that could not start because it was "text
/// file busy" is tried.
const BUSY_RETRIES: u32 = 5;

/// The launch script's absolute path, once checked: a plain file name naming a
/// regular file (not a symlink) in the build root.
pub fn launch_script(context: &IsolationContext, label: &str) -> PluginResult<PathBuf> {
    let name = context.launch_script.as_str();
    if context.build_root.is_empty() {
        return Err(format!("{label}: the build has no build root"));
    }
    if name.is_empty() {
        return Err(format!("{label}: the build has no launch script"));
    }
    if name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(format!("{label}: launch script '{name}' must be a plain file name in the build root"));
    }
    let joined = Path::new(&context.build_root).join(name);
    // The runner starts the script from the build root, so a relative path
    // would resolve twice; `absolute` touches neither the file system nor symlinks.
    let path =
        std::path::absolute(&joined).map_err(|e| format!("{label}: cannot make {} absolute: {e}", joined.display()))?;
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err(format!("{label}: launch script {} is not a regular file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{label}: launch script '{name}' not found in build root {}", context.build_root))
        }
        Err(e) => Err(format!("{label}: cannot read launch script {}: {e}", path.display())),
    }
}

/// Whether the script starts with `#!`, so the kernel picks its interpreter.
pub fn has_shebang(script: &Path, label: &str) -> PluginResult<bool> {
    let file = std::fs::File::open(script)
        .map_err(|e| format!("{label}: cannot read launch script {}: {e}", script.display()))?;
    let mut head = Vec::with_capacity(2);
    file.take(2)
        .read_to_end(&mut head)
        .map_err(|e| format!("{label}: cannot read launch script {}: {e}", script.display()))?;
    Ok(head == b"#!")
}

/// Calls `f` on `root` and everything under it, never following symlinks, so
/// a build cannot point a chown or chmod at a file outside its root.
pub fn walk(
    root: &Path,
    label: &str,
    f: &mut dyn FnMut(&Path, &std::fs::Metadata) -> PluginResult<()>,
) -> PluginResult<()> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| format!("{label}: cannot read {}: {e}", root.display()))?;
    f(root, &meta)?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(root).map_err(|e| format!("{label}: cannot list {}: {e}", root.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{label}: cannot list {}: {e}", root.display()))?;
            walk(&entry.path(), label, f)?;
        }
    }
    Ok(())
}

/// Whether the runner could not start the command because the file was open
/// for writing: `ETXTBSY`, 26 on Linux and the BSDs. The engine closes the
/// script before calling the plugin, but a process forked at that moment by
/// another thread of the server briefly holds a copy of the write handle until
/// it execs. The host answers errors as text only.
pub fn is_text_file_busy(error: &str) -> bool {
    error.contains("(os error 26)")
}

/// Runs `request`, trying again while the script is briefly "text file busy".
/// Nothing ran when that error comes back, so trying again is safe.
pub fn run_script(host: &Host<'_>, request: &CommandRequest) -> PluginResult<CommandOutcome> {
    let mut attempt = 0;
    loop {
        match host.run(request) {
            Err(e) if is_text_file_busy(&e) && attempt < BUSY_RETRIES && !host.is_cancelled() => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(20 << attempt));
            }
            other => return other,
        }
    }
}
