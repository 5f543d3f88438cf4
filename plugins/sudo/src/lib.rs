//! The `sudo` isolation plugin: runs the build's launch script as a dedicated,
//! unprivileged build user through `sudo -n -u USER`, so a build cannot read
//! the server's settings, database or secret key, nor other builds' roots.
//!
//! # What it does for each build
//!
//! 1. Picks the build user: the pool's `sudo_user`; else, when
//!    `project_uid_base` is set, a uid of the project's own
//!    (`project_uid_base + project id`, with the gid of the same number), so
//!    builds of different projects cannot read each other's roots even while
//!    they run; else the `default_user` parameter. `root` (or any user with
//!    uid 0) is refused.
//! 2. Gives the build root to that user. The engine created it mode 0700,
//!    owned by the worker. When the worker runs as root (the usual install),
//!    the whole tree is handed over with `chown -R USER:USER-GROUP`: afterwards
//!    only the build user and root (the worker) can read it. A worker that is
//!    not root cannot chown; it then needs the `group` parameter: the tree is
//!    given to that group (`chgrp -R`, `g+rwX`, setgid directories), and the
//!    group must hold only the worker's user and the build user.
//! 3. Checks that the build user can reach the build root at all: every
//!    directory above it must be searchable by that user. The server's data
//!    directory is private (mode 0700), so a build root inside it (the
//!    default, `<data_dir>/buildroot`) is not: set `build_root` elsewhere.
//! 4. Runs the script through the host's command runner:
//!    `sudo -n -u USER -- env -i HOME=... PATH=... NAME=VALUE... SCRIPT`, in the
//!    build root, so output (stdout and stderr merged) streams live into the
//!    build's log and a stop or timeout kills the whole process group, sudo
//!    and everything under it. The environment is explicit: nothing of the
//!    server's leaks in (`env -i`), and the build sees `HOME` (its build
//!    root), `USER`, `LOGNAME`, `PATH` (the `path` parameter), this plugin's
//!    `env` parameter and the build's own environment on top.
//!
//! # sudo configuration
//!
//! `-n` never prompts: root may run commands as any user by default; a worker
//! that is not root needs a sudoers rule such as
//! `vespene ALL=(vespene-build) NOPASSWD: ALL`. Debian's sudoers sets
//! `use_pty`; when the worker has a controlling terminal, sudo then runs the
//! build in a session of its own, which a process-group kill does not reach
//! directly (the build gets SIGHUP instead). Turn it off for build users:
//! `Defaults>vespene-build !use_pty` in `/etc/sudoers.d/vespene`.
//!
//! Project uids have no account, and sudo would hand an unknown uid the
//! worker's own supplementary groups (root's, for a root worker). So a build
//! under a project uid is started with `setpriv` instead, by the worker, which
//! must then be root: uid and gid set, no supplementary groups, no
//! capabilities, no new privileges.
//!
//! Values given on the `env` parameter or in the build's environment are on
//! sudo's command line, which local users can see in the process list: keep
//! secrets in variables (`vespene.json`, readable by the build user only).
//!
//! ```toml
//! [plugins.isolation.sudo]
//! library = "sudo"
//! default_user = "vespene-build"   # optional: for pools that name no sudo_user
//! project_uid_base = 2000000       # optional: pools naming no sudo_user run each project as this + its id
//! shell = "/bin/bash"              # optional, default /bin/sh: for scripts without a #! line
//! path = "/usr/local/bin:/usr/bin:/bin"  # optional: the build's PATH
//! env = { LANG = "C.UTF-8" }       # optional, added to every build's environment
//! group = "vespene-builds"         # only for workers not running as root
//! ```

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{
    export_plugin, launch, params, CommandRequest, Host, Isolation, IsolationContext, Kind, PluginResult, StreamName,
};

/// How this plugin's messages start.
const LABEL: &str = "sudo isolation";

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["default_user", "shell", "path", "env", "group", "project_uid_base"];

/// The shell used for scripts without a `#!` line when `shell` is not set.
pub const DEFAULT_SHELL: &str = "/bin/sh";

/// Where util-linux installs `setpriv`, which starts builds under project uids.
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// The build's `PATH` when the `path` parameter is not set.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The error answered when the script was stopped; the engine knows which of
/// the two it was.
pub const STOPPED: &str = "the build was stopped or timed out";

/// The `sudo` isolation plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SudoIsolation {
    default_user: Option<String>,
    shell: String,
    path: String,
    env: BTreeMap<String, String>,
    group: Option<String>,
    project_uid_base: Option<u32>,
}

/// A local account, as far as this plugin needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Every group it is in, the primary one included.
    pub groups: Vec<u32>,
}

impl SudoIsolation {
    /// The build user for `context`: the pool's `sudo_user`, else `default_user`.
    pub fn user_name(&self, context: &IsolationContext) -> PluginResult<String> {
        let from_pool = context.pool.sudo_user.as_deref().map(str::trim).filter(|u| !u.is_empty());
        let name = match (from_pool, self.project_uid_base, &self.default_user) {
            (Some(u), _, _) => u.to_string(),
            (None, Some(base), _) => {
                let id = u32::try_from(context.project.id).ok().filter(|id| *id > 0);
                let uid =
                    id.and_then(|id| base.checked_add(id)).filter(|uid| *uid < u32::MAX - 1).ok_or_else(|| {
                        format!("sudo isolation: project id {} has no uid past {base}", context.project.id)
                    })?;
                return Ok(format!("#{uid}"));
            }
            (None, None, Some(u)) => u.clone(),
            (None, None, None) => {
                return Err(format!(
                    "sudo isolation: pool '{}' names no sudo_user and parameter 'default_user' is not set",
                    context.pool.name
                ))
            }
        };
        check_user_name(&name).map_err(|e| format!("sudo isolation: {e}"))?;
        Ok(name)
    }

    /// The environment the script gets, and nothing else: the fixed
    /// variables, this plugin's `env`, then the build's (the build wins).
    pub fn environment(&self, context: &IsolationContext, user: &str) -> BTreeMap<String, String> {
        let user = match user.strip_prefix('#') {
            Some(uid) => format!("vespene-build-{uid}"),
            None => user.to_string(),
        };
        let user = user.as_str();
        let mut env = BTreeMap::new();
        env.insert("HOME".to_string(), context.build_root.clone());
        env.insert("USER".to_string(), user.to_string());
        env.insert("LOGNAME".to_string(), user.to_string());
        env.insert("PATH".to_string(), self.path.clone());
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(context.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// The command request running `script` as `user`.
    pub fn request(&self, context: &IsolationContext, user: &str, script: &Path) -> PluginResult<CommandRequest> {
        let mut argv: Vec<String> = match user.strip_prefix('#') {
            // A project uid: its group has the same number, and nothing else.
            Some(uid) => [SETPRIV, "--reuid", uid, "--regid", uid, "--clear-groups", "--inh-caps=-all"]
                .into_iter()
                .chain(["--bounding-set=-all", "--no-new-privs"])
                .map(String::from)
                .collect(),
            None => ["sudo", "-n", "-u", user].map(String::from).to_vec(),
        };
        argv.extend(["--", "env", "-i"].map(String::from));
        argv.extend(self.environment(context, user).into_iter().map(|(k, v)| format!("{k}={v}")));
        let path = script.to_string_lossy().into_owned();
        if !launch::has_shebang(script, LABEL)? {
            argv.push(self.shell.clone());
        }
        argv.push(path);
        Ok(CommandRequest {
            argv,
            cwd: Some(context.build_root.clone()),
            timeout_seconds: context.timeout_seconds,
            stream: StreamName::Output,
            log_command: false,
            ..CommandRequest::default()
        })
    }

    /// Makes the build root the build user's (see the module docs).
    fn give_root_to(&self, root: &Path, account: &Account) -> PluginResult<()> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 {
            return launch::walk(root, LABEL, &mut |path, _| {
                std::os::unix::fs::lchown(path, Some(account.uid), Some(account.gid))
                    .map_err(|e| format!("sudo isolation: cannot give {} to {}: {e}", path.display(), account.name))
            });
        }
        let Some(group) = &self.group else {
            return Err(format!(
                "sudo isolation: the worker runs as uid {euid}, not root, so it cannot give the build root to '{}': \
                 set parameter 'group' to a group holding only the worker's user and '{}'",
                account.name, account.name
            ));
        };
        let gid = group_id(group)?;
        launch::walk(root, LABEL, &mut |path, meta| {
            std::os::unix::fs::lchown(path, None, Some(gid))
                .map_err(|e| format!("sudo isolation: cannot give {} to group '{group}': {e}", path.display()))?;
            if meta.file_type().is_symlink() {
                return Ok(());
            }
            let mode = meta.permissions().mode();
            // Group may read and write; directories pass their group on (setgid).
            let wanted = if meta.is_dir() { mode | 0o2070 } else { mode | 0o060 | ((mode & 0o100) >> 3) };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted & 0o7777))
                .map_err(|e| format!("sudo isolation: cannot open {} to group '{group}': {e}", path.display()))
        })
    }
}

/// Refuses names sudo could read as options and the superuser.
fn check_user_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(format!("'{name}' is not a valid user name"));
    }
    if name == "root" {
        return Err("builds never run as root: name another user".to_string());
    }
    Ok(())
}

/// Looks a user up in the system's user database; a `#UID` project identity
/// has no entry there and is its own group.
pub fn lookup_user(name: &str) -> PluginResult<Account> {
    if let Some(uid) = name.strip_prefix('#').and_then(|n| n.parse::<u32>().ok()) {
        return Ok(Account { name: name.to_string(), uid, gid: uid, groups: vec![uid] });
    }
    let c_name = CString::new(name).map_err(|_| format!("'{name}' is not a valid user name"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives `pwd`'s use.
    let rc = unsafe { libc::getpwnam_r(c_name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Err(format!("sudo isolation: build user '{name}' does not exist on this worker"));
    }
    let (uid, gid) = (pwd.pw_uid, pwd.pw_gid);
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut count = groups.len() as libc::c_int;
    // SAFETY: `groups` holds `count` entries; getgrouplist writes at most that many.
    let rc = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
    groups.truncate(if rc < 0 { 0 } else { count as usize });
    if !groups.contains(&gid) {
        groups.push(gid);
    }
    Ok(Account { name: name.to_string(), uid, gid, groups })
}

/// A group's id by name.
fn group_id(name: &str) -> PluginResult<u32> {
    let c_name = CString::new(name).map_err(|_| format!("parameter 'group': '{name}' is not a valid group name"))?;
    // SAFETY: getgrnam answers a pointer into static storage, read at once.
    let group = unsafe { libc::getgrnam(c_name.as_ptr()) };
    if group.is_null() {
        return Err(format!("parameter 'group': group '{name}' does not exist on this worker"));
    }
    // SAFETY: non-null, as checked.
    Ok(unsafe { (*group).gr_gid })
}

/// Whether `account` may search directory `meta` (its x bit for them).
fn may_search(meta: &std::fs::Metadata, account: &Account) -> bool {
    let mode = meta.mode();
    if meta.uid() == account.uid {
        mode & 0o100 != 0
    } else if account.groups.contains(&meta.gid()) {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// The first directory above `root` that `account` cannot search, if any.
pub fn unreachable_ancestor(root: &Path, account: &Account) -> Option<PathBuf> {
    root.ancestors()
        .skip(1)
        .find(|dir| match std::fs::metadata(dir) {
            Ok(meta) => !may_search(&meta, account),
            Err(_) => true,
        })
        .map(Path::to_path_buf)
}

fn string_param(params: &Map<String, Value>, name: &str) -> PluginResult<Option<String>> {
    match params.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\0') => Ok(Some(s.clone())),
        Some(_) => Err(format!("parameter '{name}' must be a non-empty string")),
    }
}

impl Isolation for SudoIsolation {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Isolation, "sudo", PARAMETERS)?;
        let default_user = string_param(params, "default_user")?;
        if let Some(user) = &default_user {
            check_user_name(user).map_err(|e| format!("parameter 'default_user': {e}"))?;
        }
        let shell = string_param(params, "shell")?.unwrap_or_else(|| DEFAULT_SHELL.to_string());
        if !shell.starts_with('/') {
            return Err("parameter 'shell' must be an absolute path, such as \"/bin/bash\"".to_string());
        }
        let path = string_param(params, "path")?.unwrap_or_else(|| DEFAULT_PATH.to_string());
        let group = string_param(params, "group")?;
        if let Some(group) = &group {
            group_id(group)?;
        }
        let project_uid_base = match params.get("project_uid_base") {
            None => None,
            Some(v) => {
                Some(v.as_u64().and_then(|n| u32::try_from(n).ok()).filter(|n| *n >= 1000).ok_or_else(|| {
                    format!("parameter 'project_uid_base' must be a whole number from 1000 to {}, not {v}", u32::MAX)
                })?)
            }
        };
        Ok(SudoIsolation { default_user, shell, path, env: params::env_table(params, "env")?, group, project_uid_base })
    }

    fn execute(&self, context: &IsolationContext, host: &Host<'_>) -> PluginResult<i32> {
        let user = self.user_name(context)?;
        // SAFETY: geteuid has no preconditions.
        if user.starts_with('#') && unsafe { libc::geteuid() } != 0 {
            return Err(format!(
                "sudo isolation: project uid {user} needs a worker running as root (parameter 'project_uid_base')"
            ));
        }
        let account = lookup_user(&user)?;
        if account.uid == 0 {
            return Err(format!("sudo isolation: '{user}' has uid 0: builds never run as root"));
        }
        let script = launch::launch_script(context, LABEL)?;
        if host.is_cancelled() {
            return Err(STOPPED.to_string());
        }
        let root = Path::new(&context.build_root);
        self.give_root_to(root, &account)?;
        if let Some(dir) = unreachable_ancestor(&script, &account) {
            return Err(format!(
                "sudo isolation: build user '{user}' cannot reach the build root {}: {} is not searchable by them \
                 (the server's data directory is private: set build_root outside it)",
                context.build_root,
                dir.display()
            ));
        }
        let request = self.request(context, &user, &script)?;
        host.message(&format!("sudo isolation: running {} as {user} in {}", context.launch_script, context.build_root));
        let outcome = host.run(&request).map_err(|e| format!("sudo isolation: cannot run the launch script: {e}"))?;
        if outcome.cancelled {
            return Err(STOPPED.to_string());
        }
        Ok(outcome.exit_code)
    }
}

export_plugin! {
    name: "sudo",
    description: "Isolation plugin that runs build scripts as a dedicated build user through sudo",
    isolation: SudoIsolation,
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
    use vespene_plugin_api::{IsolationContext, PoolInfo};

    use super::*;

    const SCRIPT: &str = "vespene_launch.sh";
    /// The user the end-to-end tests and `scripts/setup --test` create.
    const BUILD_USER: &str = "vespene-build";

    fn context(root: &Path, text: &str, sudo_user: Option<&str>) -> IsolationContext {
        let script = root.join(SCRIPT);
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        IsolationContext {
            build: fake_build(),
            project: fake_project(),
            pool: PoolInfo { name: "general".into(), sudo_user: sudo_user.map(String::from), ..Default::default() },
            build_root: root.display().to_string(),
            launch_script: SCRIPT.into(),
            timeout_seconds: Some(60),
            ..Default::default()
        }
    }

    fn plugin(config: &str) -> SudoIsolation {
        let value =
            if config.is_empty() { Value::Null } else { vespene_plugin_api::serde_json::from_str(config).unwrap() };
        SudoIsolation::new(&value).unwrap()
    }

    /// Whether this machine can run the real thing: root, sudo and the build user.
    fn can_sudo() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let ok = root
            && lookup_user(BUILD_USER).is_ok()
            && std::process::Command::new("sudo").arg("-V").output().is_ok_and(|o| o.status.success());
        if !ok {
            println!("SKIP: needs root, sudo and user {BUILD_USER} (scripts/setup --test)");
        }
        ok
    }

    /// A build root the build user can reach: a 0711 directory under /tmp.
    fn reachable_root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let root = dir.path().join("42");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }

    #[test]
    fn the_pool_user_wins_over_the_default_and_root_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let p = plugin(r#"{"default_user": "fallback"}"#);
        assert_eq!(p.user_name(&context(root.path(), "true", Some("builder"))).unwrap(), "builder");
        assert_eq!(p.user_name(&context(root.path(), "true", Some("  "))).unwrap(), "fallback");
        assert_eq!(p.user_name(&context(root.path(), "true", None)).unwrap(), "fallback");
        assert_eq!(
            plugin("{}").user_name(&context(root.path(), "true", None)).unwrap_err(),
            "sudo isolation: pool 'general' names no sudo_user and parameter 'default_user' is not set"
        );
        assert_eq!(
            p.user_name(&context(root.path(), "true", Some("root"))).unwrap_err(),
            "sudo isolation: builds never run as root: name another user"
        );
        assert_eq!(
            p.user_name(&context(root.path(), "true", Some("-u0"))).unwrap_err(),
            "sudo isolation: '-u0' is not a valid user name"
        );
    }

    #[test]
    fn the_request_is_sudo_with_an_explicit_environment_in_the_build_root() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), "#!/bin/sh\ntrue\n", Some("builder"));
        ctx.env.insert("GREETING".into(), "from the build".into());
        let p = plugin(r#"{"env": {"GREETING": "from the plugin", "LANG": "C.UTF-8"}, "path": "/bin"}"#);
        let script = root.path().join(SCRIPT);
        let req = p.request(&ctx, "builder", &script).unwrap();
        let home = format!("HOME={}", root.path().display());
        let expected = [
            "sudo",
            "-n",
            "-u",
            "builder",
            "--",
            "env",
            "-i",
            "GREETING=from the build",
            &home,
            "LANG=C.UTF-8",
            "LOGNAME=builder",
            "PATH=/bin",
            "USER=builder",
            &script.display().to_string(),
        ];
        assert_eq!(req.argv, expected);
        assert_eq!(req.cwd.as_deref(), Some(ctx.build_root.as_str()));
        assert_eq!(req.timeout_seconds, Some(60));
        assert!(req.env.is_empty(), "nothing travels through sudo's environment: {:?}", req.env);
        assert!(!req.log_command);

        // A script without #! runs with the shell.
        std::fs::write(&script, "echo plain\n").unwrap();
        let req = plugin(r#"{"shell": "/bin/bash"}"#).request(&ctx, "builder", &script).unwrap();
        assert_eq!(req.argv[req.argv.len() - 2..], ["/bin/bash".to_string(), script.display().to_string()]);
    }

    #[test]
    fn a_private_directory_above_the_build_root_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("data");
        let root = private.join("buildroot/42");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let stranger = Account { name: "x".into(), uid: 54321, gid: 54321, groups: vec![54321] };
        assert_eq!(unreachable_ancestor(&root, &stranger), Some(private.clone()));
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert_eq!(unreachable_ancestor(&root, &stranger), None);
    }

    #[test]
    fn bad_configuration_is_named() {
        let cases = [
            (json!({"default_user": "root"}), "parameter 'default_user': builds never run as root: name another user"),
            (json!({"default_user": 5}), "parameter 'default_user' must be a non-empty string"),
            (json!({"shell": "bash"}), "parameter 'shell' must be an absolute path, such as \"/bin/bash\""),
            (json!({"env": {"A": 1}}), "parameter 'env': the value of 'A' must be a string"),
            (
                json!({"group": "no-such-group-here"}),
                "parameter 'group': group 'no-such-group-here' does not exist on this worker",
            ),
            (json!({"user": "x"}), "unknown parameter 'user' for isolation plugin sudo"),
            (json!([]), "the parameters of isolation plugin sudo must be a table, not []"),
        ];
        for (config, expected) in cases {
            assert_eq!(testkit::isolation::<SudoIsolation>(config.clone()).err().unwrap(), expected, "{config}");
        }
        for config in [Value::Null, json!({}), json!({"default_user": "nobody", "path": "/bin", "env": {}})] {
            testkit::isolation::<SudoIsolation>(config).unwrap();
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        testkit::isolation_from::<SudoIsolation>("null").unwrap();
    }

    #[test]
    fn an_unknown_user_and_a_stopped_build_run_nothing() {
        let root = tempfile::tempdir().unwrap();
        let plugin = testkit::isolation::<SudoIsolation>(json!({})).unwrap();
        let host = RecordingHost::new();
        let ctx = context(root.path(), "#!/bin/sh\ntouch ran\n", Some("no-such-user-here"));
        let err = plugin.execute(&ctx, &host).unwrap_err();
        assert_eq!(err, "sudo isolation: build user 'no-such-user-here' does not exist on this worker");

        let ctx = context(root.path(), "#!/bin/sh\ntouch ran\n", Some("nobody"));
        host.cancel();
        let err = plugin.execute(&ctx, &host).unwrap_err();
        assert_eq!(err, STOPPED);
        assert!(!root.path().join("ran").exists());
    }

    #[test]
    fn with_project_uids_each_project_runs_as_its_own_uid_in_no_other_group() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return; // only root hands roots to project uids
        }
        let per_project = testkit::isolation::<SudoIsolation>(json!({"project_uid_base": 2000000})).unwrap();
        let mut seen = Vec::new();
        for project in [3, 4] {
            let dir = reachable_root();
            let root = dir.path().join("42");
            let mut ctx = context(&root, "#!/bin/sh\nid -u\nid -G\necho \"user=$USER\"\ntouch made\n", None);
            ctx.project.id = project;
            let host = RecordingHost::new();
            let code = per_project.execute(&ctx, &host);
            assert_eq!(code, Ok(0), "{:?}", host.lines());
            let uid = 2_000_000 + project as u32;
            assert_eq!(host.outputs(), [uid.to_string(), uid.to_string(), format!("user=vespene-build-{uid}")]);
            assert_eq!(std::fs::metadata(root.join("made")).unwrap().uid(), uid);
            seen.push(uid);
        }
        assert_ne!(seen[0], seen[1]);
        // A pool's own sudo_user still wins.
        let dir = reachable_root();
        let ctx = context(&dir.path().join("42"), "true", Some("builder"));
        assert_eq!(plugin(r#"{"project_uid_base": 2000000}"#).user_name(&ctx).unwrap(), "builder");
    }

    #[test]
    fn runs_as_the_build_user_who_owns_the_build_root() {
        if !can_sudo() {
            return;
        }
        let dir = reachable_root();
        let root = dir.path().join("42");
        std::fs::write(root.join("vespene.json"), "{}").unwrap();
        let ctx = context(
            &root,
            "#!/bin/sh\nwhoami\necho \"home=$HOME\"\necho \"server-env=${CARGO_MANIFEST_DIR:-unset}\"\ntouch made\nexit 5\n",
            Some(BUILD_USER),
        );
        let plugin = testkit::isolation::<SudoIsolation>(json!({})).unwrap();
        let host = RecordingHost::new();
        let code = plugin.execute(&ctx, &host).unwrap();
        assert_eq!(code, 5, "{:?}", host.lines());
        assert_eq!(
            host.outputs(),
            [BUILD_USER.to_string(), format!("home={}", root.display()), "server-env=unset".into()]
        );
        let account = lookup_user(BUILD_USER).unwrap();
        for path in [root.clone(), root.join("made"), root.join("vespene.json")] {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.uid(), account.uid, "{} belongs to the build user", path.display());
        }
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_build_root_the_user_cannot_reach_is_refused_clearly() {
        if !can_sudo() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Private to root, like the server's data directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let root = dir.path().join("42");
        std::fs::create_dir(&root).unwrap();
        let ctx = context(&root, "#!/bin/sh\ntrue\n", Some(BUILD_USER));
        let plugin = testkit::isolation::<SudoIsolation>(json!({})).unwrap();
        let host = RecordingHost::new();
        let err = plugin.execute(&ctx, &host).unwrap_err();
        let expected = format!(
            "sudo isolation: build user '{BUILD_USER}' cannot reach the build root {}: {} is not searchable by them",
            root.display(),
            dir.path().display()
        );
        assert!(err.starts_with(&expected), "{err}");
        assert!(host.outputs().is_empty());
    }
}
