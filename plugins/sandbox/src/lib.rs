//! The `sandbox` isolation plugin: runs each build in Linux namespaces with
//! bubblewrap (`bwrap`), as an identity of its own, in a view of the machine
//! where the server does not exist.
//!
//! What the build sees:
//! * the system read-only: `/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`, and the
//!   admin's `read_only` paths;
//! * its own build root, read-write, at the same path as on the host (so paths
//!   in `vespene.json` work), as its working directory and `HOME`;
//! * a private `/tmp` and `/var/tmp`, a fresh `/proc` of its own process
//!   namespace, and a minimal `/dev`;
//! * only the environment this plugin gives it: `HOME`, `PATH`, `USER`,
//!   `LOGNAME`, the `env` parameter, then the build's own variables.
//!
//! What it does not: the server's data directory (database, key), its
//! settings, the plugin files, other builds' roots (the host lists them in
//! `hidden_paths`; any that lies inside a path the sandbox shows is covered by
//! an empty tmpfs), `/home`, `/root`, `/var`, `/run`, and the server's
//! environment. Writable places are the build root and the private temporary
//! directories only.
//!
//! Identity: when the worker runs as root, each project's builds run as the
//! host uid and gid `uid_base + project id`, which no account uses: the plugin
//! hands the build root to that uid first, then drops to it with `setpriv`
//! (no capabilities, no new privileges) before `bwrap` starts, so the build
//! owns nothing else on the machine. A worker that is not root runs `bwrap` as
//! its own user; the build is then kept away from the server's files by the
//! mount namespace alone.
//!
//! Network: on unless the pool says `network = false`; then the build has its
//! own network namespace holding only `lo`.
//!
//! Stop and timeout kill `bwrap`, and with it the build's process namespace:
//! every process the build started dies, even one that left its process group.
//!
//! ```toml
//! [plugins.isolation.sandbox]
//! library = "sandbox"
//! bwrap = "/usr/bin/bwrap"             # optional: where bubblewrap is
//! shell = "/bin/bash"                  # optional, default /bin/sh: scripts without a #! line
//! path = "/usr/local/bin:/usr/bin:/bin"  # optional: the build's PATH
//! env = { LANG = "C.UTF-8" }           # optional: added to every build's environment
//! read_only = ["/opt/toolchains"]      # optional: more host paths the build may read
//! uid_base = 1000000                   # optional: build identities are uid_base + project id
//! uid_count = 1000000                  # optional: how many project ids that range covers
//! ```

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{
    export_plugin, launch, params, CommandRequest, Host, Isolation, IsolationContext, Kind, PluginResult, StreamName,
};

/// How this plugin's messages start.
const LABEL: &str = "sandbox isolation";

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["bwrap", "shell", "path", "env", "read_only", "uid_base", "uid_count"];

/// Where Debian's bubblewrap installs `bwrap`.
pub const DEFAULT_BWRAP: &str = "/usr/bin/bwrap";
/// Where util-linux installs `setpriv`, which drops to the build's identity.
pub const SETPRIV: &str = "/usr/bin/setpriv";
/// The shell used for scripts without a `#!` line when `shell` is not set.
pub const DEFAULT_SHELL: &str = "/bin/sh";
/// The build's `PATH` when the `path` parameter is not set.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The first build identity is `DEFAULT_UID_BASE + 1`: above the ranges
/// distributions give accounts and `/etc/subuid` hands out by default.
pub const DEFAULT_UID_BASE: u32 = 1_000_000;
/// How many project ids the identity range covers by default.
pub const DEFAULT_UID_COUNT: u32 = 1_000_000;

/// The host's system directories the build may read. Symlinks among them
/// (merged `/usr`) are recreated as symlinks.
const SYSTEM_PATHS: &[&str] = &["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];

/// The error answered when the script was stopped; the engine knows which of
/// the two it was.
pub const STOPPED: &str = "the build was stopped or timed out";

/// The `sandbox` isolation plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxIsolation {
    bwrap: String,
    shell: String,
    path: String,
    env: BTreeMap<String, String>,
    read_only: Vec<String>,
    uid_base: u32,
    uid_count: u32,
}

/// Who the build runs as on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    /// A uid (and gid of the same number) of the build's project's own.
    Own(u32),
    /// The worker's own user: the worker is not root and cannot switch.
    Worker(u32),
}

impl Identity {
    fn uid(self) -> u32 {
        match self {
            Identity::Own(uid) | Identity::Worker(uid) => uid,
        }
    }
}

impl SandboxIsolation {
    /// Who a build of this context runs as, for a worker running as `euid`.
    pub fn identity(&self, context: &IsolationContext, euid: u32) -> PluginResult<Identity> {
        if euid != 0 {
            return Ok(Identity::Worker(euid));
        }
        let id = context.project.id;
        if id <= 0 || id >= i64::from(self.uid_count) {
            return Err(format!(
                "{LABEL}: project id {id} has no build identity: ids 1 to {} map to uids {} to {} \
                 (raise parameter 'uid_count')",
                self.uid_count - 1,
                self.uid_base + 1,
                self.uid_base + self.uid_count - 1
            ));
        }
        Ok(Identity::Own(self.uid_base + id as u32))
    }

    /// The whole command line: `setpriv` down to the build's identity (when
    /// the worker is root), then `bwrap` with the view described in the module
    /// docs, then the script.
    pub fn argv(&self, context: &IsolationContext, script: &Path, identity: Identity) -> PluginResult<Vec<String>> {
        let root = context.build_root.as_str();
        let mut argv: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| argv.extend(items.iter().map(|s| s.to_string()));
        if let Identity::Own(uid) = identity {
            let uid = uid.to_string();
            push(&[SETPRIV, "--reuid", &uid, "--regid", &uid, "--clear-groups"]);
            push(&["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]);
        }
        push(&[&self.bwrap, "--unshare-all"]);
        if context.pool.network != Some(false) {
            push(&["--share-net"]);
        }
        push(&["--die-with-parent", "--new-session", "--clearenv", "--hostname", "vespene-build"]);
        // The private places first: shown paths may lie below them.
        push(&["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]);
        let mut shown: Vec<&str> = Vec::new();
        for path in SYSTEM_PATHS {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = std::fs::read_link(path)
                        .map_err(|e| format!("{LABEL}: cannot read the symlink {path}: {e}"))?;
                    push(&["--symlink", &target.to_string_lossy(), path]);
                }
                Ok(_) => {
                    push(&["--ro-bind", path, path]);
                    shown.push(path);
                }
                Err(_) => {}
            }
        }
        for path in &self.read_only {
            push(&["--ro-bind", path, path]);
            shown.push(path);
        }
        // Anything of the server's that lies inside a shown tree is covered.
        for hidden in &context.hidden_paths {
            let inside = shown.iter().any(|s| Path::new(hidden).starts_with(s));
            if !inside || Path::new(hidden) == Path::new(root) {
                continue;
            }
            match std::fs::symlink_metadata(hidden) {
                Ok(meta) if meta.is_dir() => push(&["--tmpfs", hidden]),
                Ok(_) => push(&["--ro-bind", "/dev/null", hidden]),
                Err(_) => {}
            }
        }
        push(&["--bind", root, root, "--chdir", root]);
        let user = match identity {
            Identity::Own(uid) => format!("vespene-build-{uid}"),
            Identity::Worker(_) => "vespene-build".to_string(),
        };
        let mut env = BTreeMap::from([
            ("HOME".to_string(), root.to_string()),
            ("PATH".to_string(), self.path.clone()),
            ("USER".to_string(), user.clone()),
            ("LOGNAME".to_string(), user),
        ]);
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(context.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (name, value) in &env {
            push(&["--setenv", name, value]);
        }
        push(&["--"]);
        let script_path = script.to_string_lossy();
        if launch::has_shebang(script, LABEL)? {
            push(&[&script_path]);
        } else {
            push(&[&self.shell, &script_path]);
        }
        Ok(argv)
    }

    /// The command request for one build.
    pub fn request(
        &self,
        context: &IsolationContext,
        script: &Path,
        identity: Identity,
    ) -> PluginResult<CommandRequest> {
        Ok(CommandRequest {
            argv: self.argv(context, script, identity)?,
            cwd: Some(context.build_root.clone()),
            timeout_seconds: context.timeout_seconds,
            stream: StreamName::Output,
            // The script's name is in the message; its text is in the build root.
            log_command: false,
            ..CommandRequest::default()
        })
    }
}

/// Gives the build root to `uid` (never following a symlink), so the build
/// can write there and nowhere else.
fn give_root_to(root: &Path, uid: u32) -> PluginResult<()> {
    launch::walk(root, LABEL, &mut |path, _| {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid))
            .map_err(|e| format!("{LABEL}: cannot give {} to uid {uid}: {e}", path.display()))
    })
}

/// The first directory above `root` that `uid` (in no group) cannot search:
/// bwrap, running as that uid, must reach the build root to show it.
pub fn unreachable_ancestor(root: &Path, uid: u32) -> Option<PathBuf> {
    root.ancestors()
        .skip(1)
        .find(|dir| match std::fs::metadata(dir) {
            Ok(meta) if meta.uid() == uid => meta.mode() & 0o100 == 0,
            Ok(meta) => meta.mode() & 0o001 == 0,
            Err(_) => true,
        })
        .map(Path::to_path_buf)
}

fn string_param(params: &Map<String, Value>, name: &str, default: &str) -> PluginResult<String> {
    match params.get(name) {
        None => Ok(default.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\0') => Ok(s.clone()),
        Some(_) => Err(format!("parameter '{name}' must be a non-empty string")),
    }
}

fn absolute_path_param(params: &Map<String, Value>, name: &str, default: &str) -> PluginResult<String> {
    let value = string_param(params, name, default)?;
    if !value.starts_with('/') {
        return Err(format!("parameter '{name}' must be an absolute path, not '{value}'"));
    }
    Ok(value)
}

fn u32_param(params: &Map<String, Value>, name: &str, default: u32) -> PluginResult<u32> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("parameter '{name}' must be a whole number from 1 to {}, not {v}", u32::MAX)),
    }
}

fn read_only_param(params: &Map<String, Value>) -> PluginResult<Vec<String>> {
    let Some(value) = params.get("read_only") else { return Ok(Vec::new()) };
    let Value::Array(items) = value else {
        return Err("parameter 'read_only' must be a list of absolute paths".to_string());
    };
    items
        .iter()
        .map(|item| match item.as_str() {
            Some(p) if p.starts_with('/') && !p.contains('\0') && p != "/" => Ok(p.to_string()),
            _ => Err(format!("parameter 'read_only': {item} is not an absolute path below /")),
        })
        .collect()
}

impl Isolation for SandboxIsolation {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Isolation, "sandbox", PARAMETERS)?;
        let uid_base = u32_param(params, "uid_base", DEFAULT_UID_BASE)?;
        let uid_count = u32_param(params, "uid_count", DEFAULT_UID_COUNT)?;
        if uid_base.checked_add(uid_count).is_none_or(|end| end >= u32::MAX - 1) {
            return Err(format!("parameters 'uid_base' + 'uid_count' ({uid_base} + {uid_count}) pass the largest uid"));
        }
        Ok(SandboxIsolation {
            bwrap: absolute_path_param(params, "bwrap", DEFAULT_BWRAP)?,
            shell: absolute_path_param(params, "shell", DEFAULT_SHELL)?,
            path: string_param(params, "path", DEFAULT_PATH)?,
            env: params::env_table(params, "env")?,
            read_only: read_only_param(params)?,
            uid_base,
            uid_count,
        })
    }

    fn execute(&self, context: &IsolationContext, host: &Host<'_>) -> PluginResult<i32> {
        let script = launch::launch_script(context, LABEL)?;
        if !Path::new(&self.bwrap).is_file() {
            return Err(format!(
                "{LABEL}: bubblewrap is not installed: {} does not exist (install Debian's package bubblewrap, \
                 or set parameter 'bwrap')",
                self.bwrap
            ));
        }
        if host.is_cancelled() {
            return Err(STOPPED.to_string());
        }
        // SAFETY: geteuid has no preconditions.
        let identity = self.identity(context, unsafe { libc::geteuid() })?;
        let root = Path::new(&context.build_root);
        if let Identity::Own(uid) = identity {
            give_root_to(root, uid)?;
            if let Some(dir) = unreachable_ancestor(root, uid) {
                return Err(format!(
                    "{LABEL}: the build's identity (uid {uid}) cannot reach the build root {}: {} is not searchable \
                     by others (make it mode 0711 or 0755, or set build_root elsewhere)",
                    context.build_root,
                    dir.display()
                ));
            }
        }
        let request = self.request(context, &script, identity)?;
        let network = if context.pool.network == Some(false) { "off" } else { "on" };
        host.message(&format!(
            "{LABEL}: running {} as uid {} in {}, network {network}",
            context.launch_script,
            identity.uid(),
            context.build_root
        ));
        let outcome =
            launch::run_script(host, &request).map_err(|e| format!("{LABEL}: cannot run the launch script: {e}"))?;
        if outcome.cancelled {
            return Err(STOPPED.to_string());
        }
        Ok(outcome.exit_code)
    }
}

export_plugin! {
    name: "sandbox",
    description: "Isolation plugin that runs each build in Linux namespaces (bubblewrap) as an identity of its own, \
                  seeing only its build root",
    isolation: SandboxIsolation,
}

#[cfg(test)]
mod tests;
