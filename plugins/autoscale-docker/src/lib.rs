//! The `autoscale-docker` autoscaler: keeps as many `vespene worker POOL`
//! containers running on a Docker engine as the pool needs.
//!
//! **Plan.** The stock planner's formula (the pool's weights, multiplier and
//! excess, sent by the server in `PoolStatus.extra`) over worker containers
//! of `slots` builds each:
//! `ceil((running × running_weight + queued × queued_weight) × multiplier / slots) + excess`,
//! within the pool's `minimum..=maximum`.
//!
//! **Scale.** Lists the pool's containers (by label), starts new ones from
//! `image` until there are `size`, or sends `SIGTERM` to the newest surplus
//! ones. A worker told to stop claims nothing more, finishes the builds it
//! runs, and exits; its container removes itself (`auto_remove`). Until then
//! it still counts, so a later decision sends the same containers the same
//! signal rather than stopping more.
//!
//! Each container runs `vespene worker POOL --name NAME --slots N` with the
//! container's own name as the worker's name (containers on the host network
//! share the host's name, and each is process 1 of its own namespace, so the
//! default name would collide). It uses the host's network by default, so a
//! worker reaches a database on the host's loopback (`127.0.0.1`). The image
//! holds the `vespene` binary, the plugins and the libraries they link
//! (`scripts/build-worker-image` makes one from local files); the workers'
//! settings come from `env` (`VESPENE_DATABASE__URL`, ...) and `binds` (the
//! secret key file, a settings file).
//!
//! ```toml
//! [plugins.autoscalers.docker]
//! library = "autoscale-docker"
//! image = "vespene-worker:latest"            # optional, this default
//! env = { VESPENE_DATABASE__URL = "postgres://vespene@127.0.0.1:5432/vespene" }
//! binds = ["/var/lib/vespene/secret.key:/var/lib/vespene/secret.key:ro"]  # optional
//! network = "host"                           # optional, this default
//! slots = 1                                  # optional: builds per worker container
//! binary = "/usr/local/bin/vespene"          # optional: the binary in the image
//! name_prefix = "vespene-worker"             # optional: container names and the label
//! docker_host = "unix:///var/run/docker.sock" # optional: else DOCKER_HOST or the default socket
//! ```

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use vespene_plugin_api::planner::{stock_plan, PlannerSettings};
use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{export_plugin, params, Autoscaler, Host, Kind, PluginResult, PoolStatus, ScalePlan};

/// The name the plugin reports and its errors use.
const NAME: &str = "autoscale-docker";
/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["image", "env", "binds", "network", "slots", "binary", "name_prefix", "docker_host"];
/// Seconds a Docker API call may take.
const DOCKER_TIMEOUT_SECS: u64 = 60;
/// Labels on every container this plugin starts.
const PREFIX_LABEL: &str = "vespene.autoscaler";
const POOL_ID_LABEL: &str = "vespene.pool_id";
const POOL_LABEL: &str = "vespene.pool";

/// The plugin's parameters.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    image: String,
    env: BTreeMap<String, String>,
    binds: Vec<String>,
    network: String,
    slots: u64,
    binary: String,
    name_prefix: String,
    docker_host: Option<String>,
}

/// The `autoscale-docker` autoscaler.
pub struct DockerAutoscaler {
    settings: DockerSettings,
}

fn string(params: &Map<String, Value>, name: &str, default: &str) -> PluginResult<String> {
    match params.get(name) {
        None => Ok(default.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(other) => Err(format!("parameter '{name}' must be a non-empty string, got {other}")),
    }
}

impl DockerAutoscaler {
    fn parse(config: &Value) -> PluginResult<DockerSettings> {
        let params = params::table(config, Kind::Autoscaler, NAME, PARAMETERS)?;
        let binds = match params.get("binds") {
            None => vec![],
            Some(Value::Array(items)) => items
                .iter()
                .map(|b| match b.as_str() {
                    Some(s) if s.split(':').count() >= 2 && s.starts_with('/') => Ok(s.to_string()),
                    _ => {
                        Err(format!("parameter 'binds' must list \"/host/path:/container/path[:ro]\" strings, got {b}"))
                    }
                })
                .collect::<PluginResult<_>>()?,
            Some(other) => return Err(format!("parameter 'binds' must be a list of strings, got {other}")),
        };
        let slots = match params.get("slots") {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| format!("parameter 'slots' must be a whole number from 1 to 1000, got {v}"))?,
        };
        let name_prefix = string(params, "name_prefix", "vespene-worker")?;
        if !name_prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || !name_prefix.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(format!(
                "parameter 'name_prefix' must be letters, digits, '-', '_' and '.', got \"{name_prefix}\""
            ));
        }
        let docker_host = match params.get("docker_host") {
            None => None,
            Some(Value::String(h))
                if h.starts_with("unix://")
                    || h.starts_with('/')
                    || h.starts_with("tcp://")
                    || h.starts_with("http://") =>
            {
                Some(h.clone())
            }
            Some(other) => {
                return Err(format!(
                    "parameter 'docker_host' must be a unix://, tcp:// or http:// address, got {other}"
                ))
            }
        };
        Ok(DockerSettings {
            image: string(params, "image", "vespene-worker:latest")?,
            env: params::env_table(params, "env")?,
            binds,
            network: string(params, "network", "host")?,
            slots,
            binary: string(params, "binary", "/usr/local/bin/vespene")?,
            name_prefix,
            docker_host,
        })
    }

    async fn connect(&self) -> PluginResult<Docker> {
        let host = self.settings.docker_host.clone().or_else(|| std::env::var("DOCKER_HOST").ok());
        let docker = match host.as_deref() {
            Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
                Docker::connect_with_http(h, DOCKER_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Some(h) => Docker::connect_with_socket(h, DOCKER_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
            None => Docker::connect_with_socket_defaults(),
        }
        .map_err(|e| format!("{NAME}: cannot connect to Docker: {e}"))?;
        // Older daemons refuse newer API versions: speak the daemon's.
        docker.negotiate_version().await.map_err(|e| format!("{NAME}: cannot reach Docker: {e}"))
    }

    /// The pool's containers that are not on their way out of existence,
    /// newest first.
    async fn containers(&self, docker: &Docker, pool_id: i64) -> PluginResult<Vec<ContainerSummary>> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{PREFIX_LABEL}={}", self.settings.name_prefix), format!("{POOL_ID_LABEL}={pool_id}")],
        )]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let mut found: Vec<ContainerSummary> = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("{NAME}: cannot list the pool's containers: {e}"))?
            .into_iter()
            .filter(|c| {
                let state = c.state.as_ref().map(|s| s.to_string()).unwrap_or_default();
                matches!(state.as_str(), "created" | "running" | "restarting")
            })
            .collect();
        found.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.names.cmp(&a.names)));
        Ok(found)
    }

    /// Creates and starts one worker container for the pool.
    async fn start_worker(&self, docker: &Docker, status: &PoolStatus) -> PluginResult<String> {
        let s = &self.settings;
        let name = format!("{}-{}-{}", s.name_prefix, status.pool.id, unique_suffix());
        let body = ContainerCreateBody {
            image: Some(s.image.clone()),
            cmd: Some(vec![
                s.binary.clone(),
                "worker".into(),
                status.pool.name.clone(),
                "--name".into(),
                name.clone(),
                "--slots".into(),
                s.slots.to_string(),
            ]),
            env: Some(s.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(HashMap::from([
                (PREFIX_LABEL.to_string(), s.name_prefix.clone()),
                (POOL_ID_LABEL.to_string(), status.pool.id.to_string()),
                (POOL_LABEL.to_string(), status.pool.name.clone()),
            ])),
            host_config: Some(HostConfig {
                network_mode: Some(s.network.clone()),
                binds: Some(s.binds.clone()),
                // A worker that was told to stop and has exited leaves nothing behind.
                auto_remove: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        docker.create_container(Some(options), body).await.map_err(|e| {
            format!(
                "{NAME}: cannot create a worker container from image {}: {e} (scripts/build-worker-image builds one)",
                s.image
            )
        })?;
        if let Err(e) = docker.start_container(&name, None::<bollard::query_parameters::StartContainerOptions>).await {
            // A container that never started would count as a worker for good.
            let remove = RemoveContainerOptionsBuilder::new().force(true).build();
            let _ = docker.remove_container(&name, Some(remove)).await;
            return Err(format!("{NAME}: cannot start worker container {name}: {e}"));
        }
        Ok(name)
    }

    async fn scale_async(&self, status: &PoolStatus, plan: &ScalePlan, host: &Host<'_>) -> PluginResult<()> {
        let docker = self.connect().await?;
        let pool = &status.pool.name;
        let containers = self.containers(&docker, status.pool.id).await?;
        let have = containers.len() as u64;
        if have == plan.size {
            host.message(&format!("{NAME}: pool {pool} has its {have} worker containers ({})", plan.reason));
            return Ok(());
        }
        host.message(&format!("{NAME}: pool {pool}: {have} -> {} worker containers ({})", plan.size, plan.reason));
        for _ in have..plan.size {
            if host.is_cancelled() {
                return Err(format!("{NAME}: scaling pool {pool} was stopped"));
            }
            let name = self.start_worker(&docker, status).await?;
            host.message(&format!("{NAME}: started {name}"));
        }
        // The newest surplus containers drain: SIGTERM, finish, exit.
        for c in containers.iter().take(have.saturating_sub(plan.size) as usize) {
            let id = c.id.clone().unwrap_or_default();
            let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string());
            let name = name.unwrap_or_else(|| id.clone());
            let term = KillContainerOptionsBuilder::new().signal("SIGTERM").build();
            match docker.kill_container(&id, Some(term)).await {
                Ok(()) => host.message(&format!("{NAME}: told {name} to finish its builds and stop")),
                // It stopped on its own meanwhile: that is what was wanted.
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 404 | 409, .. }) => {}
                Err(e) => return Err(format!("{NAME}: cannot stop worker container {name}: {e}")),
            }
        }
        Ok(())
    }
}

/// A name suffix no other container of the pool has: the time in
/// microseconds and the process id, in hexadecimal.
fn unique_suffix() -> String {
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or_default();
    format!("{micros:x}{:x}", std::process::id())
}

/// The stock planner ([`vespene_plugin_api::planner`]) over containers of
/// `slots` builds each.
pub fn plan_for(status: &PoolStatus, slots: u64) -> PluginResult<ScalePlan> {
    let settings = PlannerSettings::from_status(status)?;
    Ok(stock_plan(status, &settings, slots))
}

impl Autoscaler for DockerAutoscaler {
    fn new(config: &Value) -> PluginResult<Self> {
        Ok(DockerAutoscaler { settings: Self::parse(config)? })
    }

    fn plan(&self, status: &PoolStatus) -> PluginResult<ScalePlan> {
        plan_for(status, self.settings.slots)
    }

    fn scale(&self, status: &PoolStatus, plan: &ScalePlan, host: &Host<'_>) -> PluginResult<()> {
        // `host` is not Send: block on a runtime of our own from the host's
        // blocking thread (never the host's runtime).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("{NAME}: cannot start its runtime: {e}"))?;
        runtime.block_on(self.scale_async(status, plan, host))
    }
}

export_plugin! {
    name: "autoscale-docker",
    description: "Autoscaler: runs `vespene worker POOL` containers on a Docker engine, as many as the pool needs",
    autoscaler: DockerAutoscaler,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit;
    use vespene_plugin_api::{PoolInfo, PoolStatus};

    use super::{plan_for, DockerAutoscaler};

    fn status(queued: u64, running: u64, settings: vespene_plugin_api::serde_json::Value) -> PoolStatus {
        PoolStatus {
            pool: PoolInfo { id: 7, name: "docker".into(), ..Default::default() },
            queued,
            running,
            workers: 0,
            extra: settings.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn plans_containers_of_slots_builds_within_bounds() {
        let bounds = json!({ "minimum": 0, "maximum": 3 });
        assert_eq!(plan_for(&status(6, 0, bounds.clone()), 1).unwrap().size, 3, "cut to the maximum");
        assert_eq!(plan_for(&status(3, 2, json!({ "maximum": 10 })), 2).unwrap().size, 3, "5 builds, 2 per container");
        assert_eq!(plan_for(&status(0, 0, json!({ "minimum": 1 })), 1).unwrap().size, 1, "never below the minimum");
        let weighted = json!({ "queued_weight": 0.5, "maximum": 10 });
        assert_eq!(plan_for(&status(4, 1, weighted), 1).unwrap().size, 3, "1 + 4 × 0.5");
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let cases = [
            (json!({ "slots": 0 }), "parameter 'slots' must be a whole number from 1 to 1000, got 0"),
            (json!({ "binds": "/a:/b" }), "parameter 'binds' must be a list of strings, got \"/a:/b\""),
            (
                json!({ "binds": ["a"] }),
                "parameter 'binds' must list \"/host/path:/container/path[:ro]\" strings, got \"a\"",
            ),
            (json!({ "image": "" }), "parameter 'image' must be a non-empty string, got \"\""),
            (
                json!({ "name_prefix": "a b" }),
                "parameter 'name_prefix' must be letters, digits, '-', '_' and '.', got \"a b\"",
            ),
            (
                json!({ "docker_host": "ssh://x" }),
                "parameter 'docker_host' must be a unix://, tcp:// or http:// address, got \"ssh://x\"",
            ),
            (json!({ "command": "x" }), "unknown parameter 'command' for autoscaler plugin autoscale-docker"),
        ];
        for (config, expected) in cases {
            let err = testkit::autoscaler::<DockerAutoscaler>(config.clone()).err().unwrap();
            assert!(err.starts_with(expected), "{config}: {err}");
        }
        assert!(testkit::autoscaler::<DockerAutoscaler>(json!({})).is_ok(), "every parameter has a default");
    }
}
