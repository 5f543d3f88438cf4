//! The original Vespene's stock planner, for autoscalers: how many workers a
//! pool wants, from its queued and running builds and the planner settings
//! an administrator edits on the pool (which the server sends in
//! [`PoolStatus::extra`]).
//!
//! ```text
//! demand = running × running_weight + queued × queued_weight
//! size   = ceil(demand × multiplier / builds_per_worker) + excess, within minimum..=maximum
//! ```
//!
//! (The original computed `ceil((queued + running) × multiplier) + excess`,
//! leaving both weights unused.) The shipped `autoscale-shell` and
//! `autoscale-docker` plan with it; an autoscaler of your own may too.
//!
//! ```
//! use vespene_plugin_api::planner::{stock_plan, PlannerSettings};
//! use vespene_plugin_api::serde_json::json;
//! use vespene_plugin_api::PoolStatus;
//!
//! let mut status = PoolStatus { queued: 3, running: 4, ..Default::default() };
//! status.extra = json!({"running_weight": 0.5, "queued_weight": 2.0, "maximum": 20})
//!     .as_object().unwrap().clone();
//! let settings = PlannerSettings::from_status(&status).unwrap();
//! assert_eq!(stock_plan(&status, &settings, 1).size, 8);  // 4 × 0.5 + 3 × 2
//! assert_eq!(stock_plan(&status, &settings, 3).size, 3);  // three builds per worker
//! ```

use serde_json::Value;

use crate::{PluginResult, PoolStatus, ScalePlan};

/// A pool's planner settings, as the server sends them in `PoolStatus.extra`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannerSettings {
    /// Workers wanted per running build.
    pub running_weight: f64,
    /// Workers wanted per queued build.
    pub queued_weight: f64,
    /// Factor on the weighted demand.
    pub multiplier: f64,
    /// Workers added after the multiplier.
    pub excess: i64,
    /// The fewest workers.
    pub minimum: u64,
    /// The most workers.
    pub maximum: u64,
}

impl PlannerSettings {
    /// Reads the settings from a status; a field the server did not send
    /// takes the pool default (weights and multiplier 1, excess 0, 0..=10).
    /// A bad value is an error naming the pool setting.
    pub fn from_status(status: &PoolStatus) -> PluginResult<Self> {
        let extra = &status.extra;
        let float = |name: &str, default: f64| -> PluginResult<f64> {
            match extra.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("pool setting '{name}' must be a non-negative number, got {v}")),
            }
        };
        let int = |name: &str, default: i64| -> PluginResult<i64> {
            match extra.get(name) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_i64().ok_or_else(|| format!("pool setting '{name}' must be a whole number, got {v}")),
            }
        };
        let settings = PlannerSettings {
            running_weight: float("running_weight", 1.0)?,
            queued_weight: float("queued_weight", 1.0)?,
            multiplier: float("multiplier", 1.0)?,
            excess: int("excess", 0)?,
            minimum: int("minimum", 0)?.max(0) as u64,
            maximum: int("maximum", 10)?.max(0) as u64,
        };
        if settings.minimum > settings.maximum {
            return Err(format!(
                "pool setting 'minimum' ({}) is greater than 'maximum' ({})",
                settings.minimum, settings.maximum
            ));
        }
        Ok(settings)
    }
}

/// The stock plan for workers that run `builds_per_worker` builds each (0
/// counts as 1): weighted demand, times the multiplier, divided among the
/// workers and rounded up, plus the excess, within the bounds. The reason
/// shows the arithmetic.
pub fn stock_plan(status: &PoolStatus, s: &PlannerSettings, builds_per_worker: u64) -> ScalePlan {
    let per_worker = builds_per_worker.max(1);
    let demand = status.running as f64 * s.running_weight + status.queued as f64 * s.queued_weight;
    let scaled = (demand * s.multiplier / per_worker as f64).ceil();
    // Saturate rather than wrap: a huge queue must mean "maximum", not 0.
    let wanted = (scaled as i64).saturating_add(s.excess).max(0) as u64;
    let size = wanted.clamp(s.minimum, s.maximum);
    let divided = if per_worker == 1 { String::new() } else { format!(" / {per_worker} builds per worker") };
    ScalePlan {
        size,
        reason: format!(
            "{} running × {} + {} queued × {} = {demand}; × {}{divided} = {scaled}; + {} excess = {wanted}; within {}..={}: {size}",
            status.running,
            s.running_weight,
            status.queued,
            s.queued_weight,
            s.multiplier,
            s.excess,
            s.minimum,
            s.maximum
        ),
    }
}
