//! The `container` isolation plugin: runs the build's launch script in a fresh
//! Docker container made from the project's base image, with its output
//! streamed live, line by line, while the build runs (the original showed a
//! container's output only once it had ended).
//!
//! # What it does for each build
//!
//! 1. Picks the image: the project's `container_base_image`, else the
//!    `default_image` parameter. The image must be on the `images` allow-list
//!    (exact names, tag included), or the build fails naming the image and the
//!    list: a project cannot pick an image the administrator did not allow.
//! 2. Creates a container labelled `vespene.build=<id>` and
//!    `vespene.build_root=<build root>`, named `vespene-build-<id>-<unique>`
//!    (containers a crashed worker left for the same build root go first), with the build root bind-mounted at `/build`
//!    (its working directory), so whatever the build writes there is in the
//!    build root afterwards. The Docker daemon must therefore run on the
//!    worker's machine. The script runs as `SHELL /build/vespene_launch.sh`
//!    (`shell` parameter, default `/bin/sh`): minimal images have no bash, so
//!    the script's `#!` line is not used. Its stderr is merged into stdout in
//!    the container, so lines keep their order.
//! 3. Limits: `--network none` unless the pool is listed in `network_pools`
//!    (then the `network` parameter, default `bridge`); memory (`memory_mb`,
//!    default 2048, swap included), CPUs (`cpus`, fractional, default 2 or
//!    all of a smaller machine's), a process limit (`pids_limit`, default
//!    1024), and `no-new-privileges`. Every capability is dropped; `cap_add`
//!    gives back the ones an admin lists. The script runs as `user` (default
//!    `65534:65534`, nobody), never as root unless `user` says `0`, and the
//!    build root is given to that user first.
//!    The build root is made a mount of its own on the worker, `nosuid,nodev`,
//!    before the container is created and unmounted after it is removed,
//!    whatever happened (Docker's bind mounts take no such options; a bind
//!    mount keeps its source's flags). The worker must therefore run as root.
//! 4. Starts it and follows its logs: every complete line is handed to the
//!    host as it arrives. Every 100 ms it checks the build's cancel token (stop
//!    and timeout) and its own deadline; when either fires, the container is
//!    killed (SIGKILL) at once.
//! 5. Answers the script's exit code, and always removes the container
//!    (`docker rm -f`), whatever happened.
//!
//! The plugin owns a small tokio runtime of its own (one worker thread),
//! started by the first build, and never touches the host's: the host calls
//! `execute` from a blocking thread, and the plugin blocks on its own runtime
//! there.
//!
//! ```toml
//! [plugins.isolation.container]
//! library = "container"
//! images = ["debian:bookworm", "registry.example.com/ci/rust:1.87"]   # required
//! default_image = "debian:bookworm"  # optional: for projects naming no image
//! shell = "/bin/sh"                  # optional: runs the launch script
//! memory_mb = 2048                   # optional: memory limit (default 2048)
//! cpus = 1.5                         # optional: CPU limit (default 2, or the machine's if fewer)
//! pids_limit = 1024                  # optional: process limit (default 1024)
//! cap_add = ["NET_BIND_SERVICE"]     # optional: capabilities given back (all are dropped)
//! network_pools = ["deploy"]         # optional: pools whose builds get a network
//! network = "bridge"                 # optional: the network they get
//! user = "1000:1000"                 # optional: numeric user in the container (default 65534:65534);
//!                                    # the build root is given to it (the worker must be root)
//! env = { LANG = "C.UTF-8" }         # optional, added to every build's environment
//! docker_host = "unix:///var/run/docker.sock"  # optional, else DOCKER_HOST, else this
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{export_plugin, params, Host, Isolation, IsolationContext, Kind, PluginResult};

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &[
    "images",
    "default_image",
    "shell",
    "memory_mb",
    "cpus",
    "pids_limit",
    "network_pools",
    "network",
    "user",
    "env",
    "docker_host",
    "cap_add",
];

/// The container's user when the `user` parameter names none: nobody.
pub const DEFAULT_USER: &str = "65534:65534";
/// The memory limit (MiB) when `memory_mb` is not set.
pub const DEFAULT_MEMORY_MB: u64 = 2048;
/// The CPU limit when `cpus` is not set (fewer on a smaller machine).
pub const DEFAULT_CPUS: f64 = 2.0;

/// Linux capabilities `cap_add` may name (capabilities(7)).
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// Where the build root appears inside the container.
pub const MOUNT_POINT: &str = "/build";
/// The label every build container carries, valued with the build's id.
pub const BUILD_LABEL: &str = "vespene.build";
/// The label valued with the build root: with the id, it names one build of
/// one worker even when several servers share the Docker engine.
pub const ROOT_LABEL: &str = "vespene.build_root";
/// The error answered when the build was stopped; the engine knows which of
/// stop and timeout it was.
pub const STOPPED: &str = "the build was stopped or timed out";
/// How often a running build checks for stop and timeout.
const POLL: Duration = Duration::from_millis(100);
/// How long Docker may take to answer one request.
const DOCKER_TIMEOUT_SECS: u64 = 120;

/// The `container` isolation plugin.
pub struct ContainerIsolation {
    settings: Settings,
    /// The plugin's own runtime, started by the first build (a server that
    /// never runs a container build keeps no thread for it). Taken by `Drop`
    /// to shut it down without blocking, even when the host drops plugins
    /// from async code.
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

/// The checked parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The allow-list of images.
    pub images: Vec<String>,
    /// The image of projects that name none.
    pub default_image: Option<String>,
    /// Runs the launch script.
    pub shell: String,
    /// Memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// CPU limit.
    pub cpus: Option<f64>,
    /// Process limit.
    pub pids_limit: i64,
    /// Pools whose builds get a network.
    pub network_pools: Vec<String>,
    /// The network they get.
    pub network: String,
    /// The user in the container (`uid` or `uid:gid`).
    pub user: String,
    /// Capabilities given back, as `CAP_NAME`.
    pub cap_add: Vec<String>,
    /// Added to every build's environment.
    pub env: BTreeMap<String, String>,
    /// The Docker endpoint.
    pub docker_host: Option<String>,
}

impl Settings {
    /// Checks the parameters, naming the first bad one.
    pub fn parse(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Isolation, "container", PARAMETERS)?;
        let images = string_list(params, "images")?.unwrap_or_default();
        if images.is_empty() {
            return Err("parameter 'images' is required: the list of images builds may use".to_string());
        }
        let default_image = string(params, "default_image")?;
        if let Some(image) = &default_image {
            if !images.contains(image) {
                return Err(format!("parameter 'default_image': '{image}' is not in parameter 'images'"));
            }
        }
        let shell = string(params, "shell")?.unwrap_or_else(|| "/bin/sh".to_string());
        if !shell.starts_with('/') {
            return Err("parameter 'shell' must be an absolute path in the image, such as \"/bin/sh\"".to_string());
        }
        let memory_mb = match params.get("memory_mb") {
            None => Some(DEFAULT_MEMORY_MB),
            Some(v) => Some(
                v.as_u64()
                    .filter(|m| *m >= 6)
                    .ok_or("parameter 'memory_mb' must be a whole number of MiB, at least 6")?,
            ),
        };
        let cpus = match params.get("cpus") {
            // Docker refuses more CPUs than the machine has.
            None => Some(std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64).min(DEFAULT_CPUS)),
            Some(v) => Some(
                v.as_f64().filter(|c| *c > 0.0 && *c <= 1024.0).ok_or("parameter 'cpus' must be a number above 0")?,
            ),
        };
        let pids_limit = match params.get("pids_limit") {
            None => 1024,
            Some(v) => v.as_i64().filter(|p| *p > 0).ok_or("parameter 'pids_limit' must be a whole number above 0")?,
        };
        let user = string(params, "user")?.unwrap_or_else(|| DEFAULT_USER.to_string());
        parse_ids(&user).ok_or_else(|| {
            format!("parameter 'user' must be a numeric uid or uid:gid, such as \"1000:1000\", not '{user}'")
        })?;
        let mut cap_add = Vec::new();
        for name in string_list(params, "cap_add")?.unwrap_or_default() {
            let upper = name.trim().to_ascii_uppercase();
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            if !CAPABILITIES.contains(&bare) {
                return Err(format!(
                    "parameter 'cap_add': '{name}' is not a Linux capability (such as \"NET_BIND_SERVICE\"; see capabilities(7))"
                ));
            }
            cap_add.push(format!("CAP_{bare}"));
        }
        Ok(Settings {
            images,
            default_image,
            shell,
            memory_mb,
            cpus,
            pids_limit,
            network_pools: string_list(params, "network_pools")?.unwrap_or_default(),
            network: string(params, "network")?.unwrap_or_else(|| "bridge".to_string()),
            user,
            cap_add,
            env: params::env_table(params, "env")?,
            docker_host: string(params, "docker_host")?,
        })
    }

    /// The image for a build: the project's, else the default; allowed or refused.
    pub fn image_for(&self, context: &IsolationContext) -> PluginResult<String> {
        let wanted = context.project.container_base_image.as_deref().map(str::trim).filter(|i| !i.is_empty());
        let image = match (wanted, &self.default_image) {
            (Some(image), _) => image.to_string(),
            (None, Some(image)) => image.clone(),
            (None, None) => {
                return Err(format!(
                    "container isolation: project '{}' names no container_base_image and parameter 'default_image' is not set",
                    context.project.name
                ))
            }
        };
        if !self.images.contains(&image) {
            return Err(format!(
                "container isolation: image '{image}' is not in the container plugin's allow-list (parameter 'images'): {}",
                self.images.join(", ")
            ));
        }
        Ok(image)
    }

    /// The container for one build.
    pub fn container_config(&self, context: &IsolationContext, image: &str) -> PluginResult<ContainerCreateBody> {
        let script = script_name(context)?;
        let mut env = self.env.clone();
        env.extend(context.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let network = if context.pool.name.is_empty() || !self.network_pools.contains(&context.pool.name) {
            "none".to_string()
        } else {
            self.network.clone()
        };
        let host_config = HostConfig {
            binds: Some(vec![format!("{}:{MOUNT_POINT}:rw", context.build_root)]),
            network_mode: Some(network),
            memory: self.memory_mb.map(|m| (m * 1024 * 1024) as i64),
            // Swap counts against the limit: no swapping past it.
            memory_swap: self.memory_mb.map(|m| (m * 1024 * 1024) as i64),
            nano_cpus: self.cpus.map(|c| (c * 1e9) as i64),
            pids_limit: Some(self.pids_limit),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            cap_drop: Some(vec!["ALL".to_string()]),
            cap_add: Some(self.cap_add.clone()).filter(|c| !c.is_empty()),
            auto_remove: Some(false),
            ..Default::default()
        };
        Ok(ContainerCreateBody {
            image: Some(image.to_string()),
            // Docker keeps stdout and stderr apart and may reorder them: merge
            // them in the container, as the host's runner does with one pipe.
            cmd: Some(vec![
                self.shell.clone(),
                "-c".to_string(),
                "exec \"$0\" \"$1\" 2>&1".to_string(),
                self.shell.clone(),
                format!("{MOUNT_POINT}/{script}"),
            ]),
            working_dir: Some(MOUNT_POINT.to_string()),
            env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(HashMap::from([
                (BUILD_LABEL.to_string(), context.build.id.to_string()),
                (ROOT_LABEL.to_string(), context.build_root.clone()),
            ])),
            user: Some(self.user.clone()),
            tty: Some(false),
            open_stdin: Some(false),
            attach_stdin: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        })
    }
}

/// A numeric `uid` or `uid:gid`.
fn parse_ids(user: &str) -> Option<(u32, Option<u32>)> {
    match user.split_once(':') {
        Some((uid, gid)) => Some((uid.parse().ok()?, Some(gid.parse().ok()?))),
        None => Some((user.parse().ok()?, None)),
    }
}

/// Gives the build root to the container's user, so it can write there; the
/// engine made it private to the worker. Symlinks are not followed.
fn give_root_to(path: &std::path::Path, uid: u32, gid: Option<u32>) -> PluginResult<()> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("container isolation: cannot read {}: {e}", path.display()))?;
    std::os::unix::fs::lchown(path, Some(uid), gid)
        .map_err(|e| format!("container isolation: cannot give {} to uid {uid}: {e}", path.display()))?;
    if meta.is_dir() {
        let entries =
            std::fs::read_dir(path).map_err(|e| format!("container isolation: cannot list {}: {e}", path.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("container isolation: cannot list {}: {e}", path.display()))?;
            give_root_to(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// A fresh container name for a build. Build ids are unique per server
/// only, and several servers (or test sandboxes) may share one Docker engine.
pub fn container_name(build_id: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let unique = (u64::from(std::process::id()) << 32) ^ u64::from(nanos) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("vespene-build-{build_id}-{unique:x}")
}

/// The launch script's name, checked: a plain file name in the build root.
fn script_name(context: &IsolationContext) -> PluginResult<&str> {
    let name = context.launch_script.as_str();
    if context.build_root.is_empty() || !context.build_root.starts_with('/') {
        return Err("container isolation: the build has no absolute build root".to_string());
    }
    if name.is_empty() || name.contains('/') || name == "." || name == ".." || name.contains('\0') {
        return Err(format!("container isolation: launch script '{name}' must be a plain file name in the build root"));
    }
    if !std::path::Path::new(&context.build_root).join(name).is_file() {
        return Err(format!(
            "container isolation: launch script '{name}' not found in build root {}",
            context.build_root
        ));
    }
    Ok(name)
}

/// Splits a byte stream into lines as chunks arrive.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Adds a chunk; answers the lines it completed, without line ends. A
    /// line longer than [`vespene_plugin_api::DEFAULT_MAX_LINE`] comes in
    /// pieces, each but the last ending with [`vespene_plugin_api::LINE_CONTINUES`],
    /// so an endless line is never held whole.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(chunk);
        let mut lines = Vec::new();
        loop {
            let max = vespene_plugin_api::DEFAULT_MAX_LINE;
            if let Some(at) = self.pending.iter().take(max + 1).position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                lines.push(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']).to_string());
            } else if self.pending.len() > max {
                // Cut at a character boundary of what is there (lossy for invalid bytes).
                let mut cut = max;
                while cut > 0 && (self.pending[cut] & 0xC0) == 0x80 {
                    cut -= 1;
                }
                let cut = if cut == 0 { max } else { cut };
                let piece: Vec<u8> = self.pending.drain(..cut).collect();
                lines.push(format!("{}{}", String::from_utf8_lossy(&piece), vespene_plugin_api::LINE_CONTINUES));
            } else {
                break;
            }
        }
        lines
    }

    /// The last, unterminated line, if any.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty()).then(|| {
            let line = String::from_utf8_lossy(&self.pending).trim_end_matches('\r').to_string();
            self.pending.clear();
            line
        })
    }
}

/// How a container run ended.
enum Ended {
    Exited(i32),
    Stopped,
}

impl ContainerIsolation {
    fn runtime(&self) -> PluginResult<&tokio::runtime::Runtime> {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("vespene-container")
                    .enable_all()
                    .build()
                    .map_err(|e| format!("container isolation: cannot start its runtime: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    async fn connect(&self) -> PluginResult<Docker> {
        let host = self.settings.docker_host.clone().or_else(|| std::env::var("DOCKER_HOST").ok());
        let docker = match host.as_deref() {
            Some(h) if h.starts_with("unix://") || h.starts_with('/') => {
                Docker::connect_with_socket(h, DOCKER_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
                Docker::connect_with_http(h, DOCKER_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Some(h) => return Err(format!("container isolation: unsupported docker host '{h}'")),
            None => Docker::connect_with_socket_defaults(),
        }
        .map_err(|e| format!("container isolation: cannot connect to Docker: {e}"))?;
        // Older daemons refuse newer API versions: speak the daemon's.
        docker.negotiate_version().await.map_err(|e| format!("container isolation: cannot reach Docker: {e}"))
    }

    /// Creates, runs and follows the container; the caller removes it.
    async fn run(
        &self,
        docker: &Docker,
        name: &str,
        body: ContainerCreateBody,
        context: &IsolationContext,
        host: &Host<'_>,
    ) -> PluginResult<Ended> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| format!("container isolation: cannot create the container: {e}"))?;
        if host.is_cancelled() {
            return Ok(Ended::Stopped);
        }
        docker
            .start_container(name, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| format!("container isolation: cannot start the container: {e}"))?;

        let deadline = context.timeout_seconds.map(|s| Instant::now() + Duration::from_secs(s));
        let stop_due = || host.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d);
        let logs = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).build();
        let mut logs = docker.logs(name, Some(logs));
        let mut splitter = LineSplitter::default();
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                chunk = logs.next() => match chunk {
                    Some(Ok(output)) => {
                        for line in splitter.push(&output.into_bytes()) {
                            host.print(&line);
                        }
                    }
                    Some(Err(e)) => {
                        host.message(&format!("container isolation: the log stream broke: {e}"));
                        break;
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if stop_due() {
                        return Ok(Ended::Stopped);
                    }
                }
            }
        }
        if let Some(line) = splitter.finish() {
            host.print(&line);
        }
        // The logs ended: the container has stopped or is about to.
        let mut wait =
            docker.wait_container(name, Some(WaitContainerOptionsBuilder::new().condition("not-running").build()));
        loop {
            tokio::select! {
                answer = wait.next() => return match answer {
                    Some(Ok(r)) => Ok(Ended::Exited(r.status_code as i32)),
                    Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(Ended::Exited(code as i32)),
                    Some(Err(e)) => Err(format!("container isolation: cannot learn the exit code: {e}")),
                    None => Err("container isolation: Docker did not report the exit code".to_string()),
                },
                _ = tick.tick() => {
                    if stop_due() {
                        return Ok(Ended::Stopped);
                    }
                }
            }
        }
    }

    async fn execute_async(&self, context: &IsolationContext, host: &Host<'_>) -> PluginResult<i32> {
        let image = self.settings.image_for(context)?;
        let body = self.settings.container_config(context, &image)?;
        if host.is_cancelled() {
            return Err(STOPPED.to_string());
        }
        if let Some((uid, gid)) = parse_ids(&self.settings.user) {
            give_root_to(std::path::Path::new(&context.build_root), uid, gid)?;
        }
        // Unmounted when this goes, whatever happens below.
        let _mount = NosuidMount::new(&context.build_root)?;
        let docker = self.connect().await?;
        let name = container_name(context.build.id);
        // A worker that died mid-build may have left one behind for this build root.
        remove_leftovers(&docker, &context.build_root).await;
        let network = body.host_config.as_ref().and_then(|h| h.network_mode.clone()).unwrap_or_default();
        host.message(&format!(
            "container isolation: running {} in {name} from image {image} (network {network})",
            context.launch_script
        ));
        let result = self.run(&docker, &name, body, context, host).await;
        if matches!(result, Ok(Ended::Stopped)) {
            // At once: no grace period for a stopped or timed out build.
            let kill = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
            let _ = docker.kill_container(&name, Some(kill)).await;
        }
        remove(&docker, &name).await;
        match result? {
            Ended::Exited(code) => Ok(code),
            Ended::Stopped => Err(STOPPED.to_string()),
        }
    }
}

/// The build root as a mount of its own, `nosuid,nodev`, for as long as the
/// value lives: the container's bind mount of it keeps those flags, so a
/// set-uid file or a device node made there is inert, in the container and
/// on the worker.
struct NosuidMount {
    path: std::ffi::CString,
}

impl NosuidMount {
    fn new(path: &str) -> PluginResult<Self> {
        let c = std::ffi::CString::new(path).map_err(|_| "container isolation: the build root has a NUL byte")?;
        let failed = |what: &str| {
            format!(
                "container isolation: cannot {what} the build root {path} nosuid,nodev (the worker must run as root): {}",
                std::io::Error::last_os_error()
            )
        };
        // SAFETY: plain mount(2) calls on a NUL-terminated path we own.
        unsafe {
            if libc::mount(c.as_ptr(), c.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                return Err(failed("bind-mount"));
            }
            let mount = NosuidMount { path: c };
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_NOSUID | libc::MS_NODEV;
            if libc::mount(std::ptr::null(), mount.path.as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
                return Err(failed("remount"));
            }
            Ok(mount)
        }
    }
}

impl Drop for NosuidMount {
    fn drop(&mut self) {
        // SAFETY: unmounts the mount made in `new`; MNT_DETACH so a late reader cannot keep it.
        unsafe {
            libc::umount2(self.path.as_ptr(), libc::MNT_DETACH);
        }
    }
}

/// Removes the containers of earlier runs in `build_root`.
async fn remove_leftovers(docker: &Docker, build_root: &str) {
    let filters = HashMap::from([("label".to_string(), vec![format!("{ROOT_LABEL}={build_root}")])]);
    let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
    if let Ok(found) = docker.list_containers(Some(options)).await {
        for id in found.into_iter().filter_map(|c| c.id) {
            remove(docker, &id).await;
        }
    }
}

/// Removes a container and its anonymous volumes, if it exists.
async fn remove(docker: &Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
    let _ = docker.remove_container(name, Some(options)).await;
}

impl Drop for ContainerIsolation {
    fn drop(&mut self) {
        if let Some(Ok(runtime)) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Isolation for ContainerIsolation {
    fn new(config: &Value) -> PluginResult<Self> {
        let settings = Settings::parse(config)?;
        Ok(ContainerIsolation { settings, runtime: OnceLock::new() })
    }

    fn execute(&self, context: &IsolationContext, host: &Host<'_>) -> PluginResult<i32> {
        // `host` is not Send: block on our runtime from the host's blocking
        // thread; the runtime's own thread drives Docker's sockets.
        self.runtime()?.block_on(self.execute_async(context, host))
    }
}

fn string(params: &Map<String, Value>, name: &str) -> PluginResult<Option<String>> {
    match params.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\0') => Ok(Some(s.clone())),
        Some(_) => Err(format!("parameter '{name}' must be a non-empty string")),
    }
}

fn string_list(params: &Map<String, Value>, name: &str) -> PluginResult<Option<Vec<String>>> {
    let Some(value) = params.get(name) else { return Ok(None) };
    let error = || format!("parameter '{name}' must be a list of non-empty strings");
    let list = value.as_array().ok_or_else(error)?;
    list.iter()
        .map(|v| v.as_str().filter(|s| !s.trim().is_empty()).map(String::from).ok_or_else(error))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

export_plugin! {
    name: "container",
    description: "Isolation plugin that runs build scripts in Docker containers, with live output",
    isolation: ContainerIsolation,
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{self, fake_build, fake_project, RecordingHost};
    use vespene_plugin_api::{IsolationContext, PoolInfo};

    use super::*;

    /// The image `scripts/start-docker` builds from Debian's busybox-static.
    const TEST_IMAGE: &str = "vespene-test-busybox:latest";

    fn context(root: &Path, script: &str, image: Option<&str>) -> IsolationContext {
        std::fs::write(root.join("vespene_launch.sh"), script).unwrap();
        let mut project = fake_project();
        project.container_base_image = image.map(String::from);
        IsolationContext {
            build: fake_build(),
            project,
            pool: PoolInfo { name: "general".into(), ..Default::default() },
            build_root: root.display().to_string(),
            launch_script: "vespene_launch.sh".into(),
            timeout_seconds: Some(60),
            ..Default::default()
        }
    }

    fn settings(config: Value) -> Settings {
        Settings::parse(&config).unwrap()
    }

    /// Whether a Docker daemon answers and holds the test image.
    fn docker_ready() -> bool {
        let ok = std::process::Command::new("docker")
            .args(["image", "inspect", TEST_IMAGE])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            println!("SKIP: no Docker daemon with {TEST_IMAGE} (run scripts/start-docker)");
        }
        ok
    }

    #[test]
    fn images_come_from_the_project_or_the_default_and_must_be_allowed() {
        let root = tempfile::tempdir().unwrap();
        let s = settings(json!({ "images": ["a:1", "b:2"], "default_image": "b:2" }));
        assert_eq!(s.image_for(&context(root.path(), "true", Some("a:1"))).unwrap(), "a:1");
        assert_eq!(s.image_for(&context(root.path(), "true", None)).unwrap(), "b:2");
        assert_eq!(
            s.image_for(&context(root.path(), "true", Some("evil:latest"))).unwrap_err(),
            "container isolation: image 'evil:latest' is not in the container plugin's allow-list (parameter 'images'): a:1, b:2"
        );
        let s = settings(json!({ "images": ["a:1"] }));
        assert_eq!(
            s.image_for(&context(root.path(), "true", Some(" "))).unwrap_err(),
            "container isolation: project 'demo' names no container_base_image and parameter 'default_image' is not set"
        );
    }

    #[test]
    fn the_container_has_no_network_unless_the_pool_is_allowed_one_and_carries_the_limits() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), "true", Some("a:1"));
        ctx.build.id = 77;
        ctx.env.insert("FROM_BUILD".into(), "1".into());
        let s = settings(json!({
            "images": ["a:1"], "memory_mb": 512, "cpus": 1.5, "pids_limit": 100,
            "network_pools": ["deploy"], "env": { "LANG": "C.UTF-8" }
        }));
        let body = s.container_config(&ctx, "a:1").unwrap();
        let hc = body.host_config.clone().unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.binds.unwrap(), [format!("{}:/build:rw", root.path().display())]);
        assert_eq!(hc.memory, Some(512 * 1024 * 1024));
        assert_eq!(hc.nano_cpus, Some(1_500_000_000));
        assert_eq!(hc.pids_limit, Some(100));
        assert_eq!(
            body.cmd.unwrap(),
            ["/bin/sh", "-c", "exec \"$0\" \"$1\" 2>&1", "/bin/sh", "/build/vespene_launch.sh"]
        );
        assert_eq!(body.working_dir.as_deref(), Some("/build"));
        assert_eq!(body.env.unwrap(), ["FROM_BUILD=1", "LANG=C.UTF-8"]);
        let labels = body.labels.unwrap();
        assert_eq!(labels[BUILD_LABEL], "77");
        assert_eq!(labels[ROOT_LABEL], root.path().display().to_string());

        ctx.pool.name = "deploy".into();
        let body = s.container_config(&ctx, "a:1").unwrap();
        assert_eq!(body.host_config.unwrap().network_mode.as_deref(), Some("bridge"));
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"one\ntw"), ["one"]);
        assert!(s.push(b"o").is_empty());
        assert_eq!(s.push(b"\r\nthree\nfo"), ["two", "three"]);
        assert_eq!(s.finish().as_deref(), Some("fo"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn bad_configuration_is_named() {
        let cases = [
            (json!({}), "parameter 'images' is required: the list of images builds may use"),
            (json!({"images": "a:1"}), "parameter 'images' must be a list of non-empty strings"),
            (
                json!({"images": ["a:1"], "default_image": "b:2"}),
                "parameter 'default_image': 'b:2' is not in parameter 'images'",
            ),
            (
                json!({"images": ["a:1"], "memory_mb": "1g"}),
                "parameter 'memory_mb' must be a whole number of MiB, at least 6",
            ),
            (json!({"images": ["a:1"], "cpus": 0}), "parameter 'cpus' must be a number above 0"),
            (
                json!({"images": ["a:1"], "shell": "sh"}),
                "parameter 'shell' must be an absolute path in the image, such as \"/bin/sh\"",
            ),
            (
                json!({"images": ["a:1"], "network_pools": "x"}),
                "parameter 'network_pools' must be a list of non-empty strings",
            ),
            (
                json!({"images": ["a:1"], "user": "builder"}),
                "parameter 'user' must be a numeric uid or uid:gid, such as \"1000:1000\", not 'builder'",
            ),
            (json!({"images": ["a:1"], "image": "a:1"}), "unknown parameter 'image' for isolation plugin container"),
            (json!([]), "the parameters of isolation plugin container must be a table, not []"),
        ];
        for (config, expected) in cases {
            assert_eq!(testkit::isolation::<ContainerIsolation>(config.clone()).err().unwrap(), expected, "{config}");
        }
        testkit::isolation::<ContainerIsolation>(json!({"images": ["a:1"], "default_image": "a:1", "cpus": 0.5}))
            .unwrap();
    }

    fn config() -> Value {
        json!({ "images": [TEST_IMAGE] })
    }

    #[test]
    fn by_default_every_capability_goes_the_user_is_nobody_and_resources_are_limited() {
        let root = tempfile::tempdir().unwrap();
        let ctx = context(root.path(), "true", Some("a:1"));
        let body = settings(json!({"images": ["a:1"]})).container_config(&ctx, "a:1").unwrap();
        assert_eq!(body.user.as_deref(), Some(DEFAULT_USER));
        let hc = body.host_config.unwrap();
        assert_eq!(hc.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(hc.cap_add, None);
        assert_eq!(hc.security_opt.unwrap(), ["no-new-privileges"]);
        assert_eq!(hc.memory, Some(2048 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
        let cpus = std::thread::available_parallelism().unwrap().get().min(2) as i64;
        assert_eq!(hc.nano_cpus, Some(cpus * 1_000_000_000));
        assert_eq!(hc.pids_limit, Some(1024));

        let s = settings(json!({"images": ["a:1"], "cap_add": ["net_bind_service", "CAP_CHOWN"], "user": "0"}));
        let body = s.container_config(&ctx, "a:1").unwrap();
        assert_eq!(body.user.as_deref(), Some("0"));
        assert_eq!(body.host_config.unwrap().cap_add.unwrap(), ["CAP_NET_BIND_SERVICE", "CAP_CHOWN"]);
        let err = Settings::parse(&json!({"images": ["a:1"], "cap_add": ["ALL"]})).unwrap_err();
        assert!(err.starts_with("parameter 'cap_add': 'ALL' is not a Linux capability"), "{err}");
    }

    #[test]
    fn runs_in_a_container_writes_into_the_build_root_and_answers_the_exit_code() {
        if !docker_ready() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(
            root.path(),
            "#!/bin/bash\necho \"in $(pwd)\"\necho to-stderr >&2\necho result > made.txt\nls /sys/class/net\nexit 3\n",
            Some(TEST_IMAGE),
        );
        ctx.build.id = 900_001;
        let plugin = testkit::isolation::<ContainerIsolation>(config()).unwrap();
        let host = RecordingHost::new();
        let code = plugin.execute(&ctx, &host).unwrap();
        assert_eq!(code, 3, "{:?}", host.lines());
        let out = host.outputs();
        // In order, stderr merged; no network interface but the loopback.
        assert_eq!(out, ["in /build", "to-stderr", "lo"]);
        assert_eq!(std::fs::read_to_string(root.path().join("made.txt")).unwrap(), "result\n");
        assert!(!container_exists(root.path()), "the container was left behind");
    }

    #[test]
    fn an_unprivileged_container_user_gets_the_build_root() {
        if !docker_ready() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let ctx = context(root.path(), "id -u\necho mine > made.txt\n", Some(TEST_IMAGE));
        let plugin =
            testkit::isolation::<ContainerIsolation>(json!({ "images": [TEST_IMAGE], "user": "4321:4321" })).unwrap();
        let host = RecordingHost::new();
        let code = plugin.execute(&ctx, &host).unwrap();
        assert_eq!(code, 0, "{:?}", host.lines());
        assert_eq!(host.outputs(), ["4321"]);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(root.path().join("made.txt")).unwrap().uid(), 4321);
    }

    #[test]
    fn a_stopped_build_kills_its_container_at_once() {
        if !docker_ready() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), "echo started\nsleep 600\n", Some(TEST_IMAGE));
        ctx.build.id = 900_002;
        let plugin = testkit::isolation::<ContainerIsolation>(config()).unwrap();
        let host = RecordingHost::new();
        let started = Instant::now();
        std::thread::scope(|scope| {
            let run = scope.spawn(|| plugin.execute(&ctx, &host));
            while !host.outputs().contains(&"started".to_string()) {
                assert!(started.elapsed() < Duration::from_secs(30), "never started: {:?}", host.lines());
                std::thread::sleep(Duration::from_millis(20));
            }
            let asked = Instant::now();
            host.cancel();
            let err = run.join().unwrap().unwrap_err();
            assert_eq!(err, STOPPED);
            assert!(asked.elapsed() < Duration::from_secs(2), "stop took {:?}", asked.elapsed());
        });
        assert!(!container_exists(root.path()), "the container was left behind");
    }

    fn container_exists(build_root: &Path) -> bool {
        let out = std::process::Command::new("docker")
            .args(["ps", "-a", "-q", "--filter", &format!("label={ROOT_LABEL}={}", build_root.display())])
            .output()
            .unwrap();
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }
}
