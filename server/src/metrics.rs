//! Prometheus metrics (`GET /metrics`, docs/operations.md).
//!
//! Two sorts: counters and histograms this process keeps in memory (build
//! outcomes and durations of the builds this process finished, plugin call
//! errors in this process, HTTP requests it served), which start from zero at
//! every start; and gauges read from the database at each scrape (queue depth
//! per pool, running builds, worker heartbeat ages), which every server
//! process answers alike.
//!
//! A leaf: every layer counts into it, and it names none of them. The web
//! tier reads the gauges from the store and hands them to [`render`].

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
    hostname: String,
}

/// The process-local metrics.
struct Local {
    build_outcomes: Family<StatusLabel, Counter>,
    build_duration: Histogram,
    plugin_errors: Family<PluginLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Histogram,
}

static LOCAL: LazyLock<Local> = LazyLock::new(|| Local {
    build_outcomes: Family::default(),
    // 1 s to about 9 hours.
    build_duration: Histogram::new(exponential_buckets(1.0, 2.5, 15)),
    plugin_errors: Family::default(),
    http_requests: Family::default(),
    // 1 ms to about 16 s.
    http_duration: Histogram::new(exponential_buckets(0.001, 2.5, 12)),
});

/// Counts a build that this process moved to a finished status (`SUCCESS`, ...).
pub fn build_finished(status: &str, seconds: Option<f64>) {
    LOCAL.build_outcomes.get_or_create(&StatusLabel { status: status.to_string() }).inc();
    if let Some(s) = seconds {
        LOCAL.build_duration.observe(s.max(0.0));
    }
}

/// Counts a failed plugin call: the plugin's settings name and its kind
/// (`scm`, `isolation`, `trigger`, `output`, `variables`, `authorization`,
/// `organization`, `secrets`).
pub fn plugin_error(plugin: &str, kind: &str) {
    LOCAL.plugin_errors.get_or_create(&PluginLabels { plugin: plugin.to_string(), kind: kind.to_string() }).inc();
}

/// Counts one HTTP request by method and status class (`2xx`, `4xx`, ...).
pub fn http_request(method: &str, status: u16, seconds: f64) {
    let class = format!("{}xx", status / 100);
    LOCAL.http_requests.get_or_create(&HttpLabels { method: method.to_string(), status: class }).inc();
    LOCAL.http_duration.observe(seconds);
}

/// What the database says at a scrape, read by the caller.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Every finished build status, counted from zero so rates work from the first build.
    pub finished_statuses: Vec<&'static str>,
    /// Queued builds per pool name.
    pub queue_depth: Vec<(String, i64)>,
    /// Builds running now, on any host.
    pub running_builds: i64,
    /// Seconds since each worker (uid, host name) last checked in.
    pub heartbeat_ages: Vec<(String, String, f64)>,
}

/// The whole exposition (OpenMetrics text): this process's counters and the
/// database `gauges`.
pub fn render(gauges: &Gauges) -> Result<String, String> {
    let mut registry = Registry::with_prefix("vespene");
    let local = &*LOCAL;
    for status in &gauges.finished_statuses {
        let _ = local.build_outcomes.get_or_create(&StatusLabel { status: status.to_string() });
    }
    registry.register(
        "builds_finished",
        "Builds this process moved to a finished status, by status (process-local, from start)",
        local.build_outcomes.clone(),
    );
    registry.register(
        "build_duration_seconds",
        "Run time of the builds this process finished, start to end (process-local)",
        local.build_duration.clone(),
    );
    registry.register(
        "plugin_errors",
        "Plugin calls that failed in this process, by plugin name and kind (process-local)",
        local.plugin_errors.clone(),
    );
    registry.register(
        "http_requests",
        "HTTP requests this process answered, by method and status class (process-local)",
        local.http_requests.clone(),
    );
    registry.register(
        "http_request_duration_seconds",
        "Time to answer an HTTP request (to the response head; process-local)",
        local.http_duration.clone(),
    );

    let queue: Family<PoolLabel, Gauge> = Family::default();
    for (pool, depth) in &gauges.queue_depth {
        queue.get_or_create(&PoolLabel { pool: pool.clone() }).set(*depth);
    }
    registry.register("queue_depth", "Queued builds per worker pool (from the database)", queue);
    let running: Gauge = Gauge::default();
    running.set(gauges.running_builds);
    registry.register("running_builds", "Builds running now, any host (from the database)", running);
    let heartbeats: Family<WorkerLabel, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    for (worker, hostname, age) in &gauges.heartbeat_ages {
        heartbeats.get_or_create(&WorkerLabel { worker: worker.clone(), hostname: hostname.clone() }).set(age.max(0.0));
    }
    registry.register(
        "worker_heartbeat_age_seconds",
        "Seconds since each worker last checked in (from the database)",
        heartbeats,
    );

    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .map_err(|e| format!("cannot encode the metrics: {e}"))?;
    Ok(out)
}
