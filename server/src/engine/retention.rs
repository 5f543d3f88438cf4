//! Retention: which builds keep their log and their build root, applied by
//! every worker's housekeeping and by `vespene cleanup` (docs/retention.md).
//!
//! A project has two keep rules, one for logs and one for build roots. Each
//! keeps the last N finished builds and/or the builds that finished less than
//! D days ago; a build outside either bound loses its log (or its root), and
//! its record stays, saying when. A rule the project leaves empty (or 0) is
//! the administrator's default (`[retention]`), and no rule goes past the
//! administrator's maximum. Pinned builds are neither pruned nor counted;
//! queued, running and stopping builds are never touched.
//!
//! Logs live in the database: any process may prune them, and the store's
//! conditional updates make two processes at once safe. Build roots live on
//! the disk of the host that ran the build: each process prunes only the
//! roots under its own `build_root`, by directory name (the build id).

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::settings::RetentionSettings;
use crate::store::{Id, Project, Result, Store};

/// One keep rule: the last `builds` finished builds and the builds finished
/// less than `days` days ago. 0 on an axis: no limit on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepRule {
    /// How many of the newest finished (unpinned) builds are kept; 0: all.
    pub builds: i64,
    /// Builds finished less than this many days ago are kept; 0: all.
    pub days: i64,
}

impl KeepRule {
    /// Whether the rule keeps every build.
    pub fn keeps_everything(&self) -> bool {
        self.builds <= 0 && self.days <= 0
    }

    /// Where the rule draws the line in a project's builds at `now`, given
    /// the id of the project's `builds`-th newest finished unpinned build
    /// (`None` when it has fewer).
    pub fn bounds(&self, nth_newest: Option<Id>, now: DateTime<Utc>) -> Bounds {
        Bounds {
            below_id: if self.builds > 0 { nth_newest } else { None },
            finished_before: if self.days > 0 {
                chrono::Duration::try_days(self.days).and_then(|d| now.checked_sub_signed(d))
            } else {
                None
            },
        }
    }
}

impl std::fmt::Display for KeepRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.builds, self.days) {
            (b, d) if b <= 0 && d <= 0 => write!(f, "keep everything"),
            (b, d) if d <= 0 => write!(f, "keep the last {b} builds"),
            (b, d) if b <= 0 => write!(f, "keep {d} days"),
            (b, d) => write!(f, "keep the last {b} builds and at most {d} days"),
        }
    }
}

/// The rule in force for one axis: what the project asks (`None` or 0: the
/// administrator's `default`), capped by the administrator's `max` (0: no
/// maximum). 0 in the answer: no limit.
pub fn effective(asked: Option<i64>, default: u32, max: u32) -> i64 {
    let asked = asked.filter(|v| *v > 0).unwrap_or(i64::from(default));
    let max = i64::from(max);
    if max > 0 && (asked <= 0 || asked > max) {
        max
    } else {
        asked.max(0)
    }
}

/// A project's two keep rules, as in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectRules {
    /// For build logs.
    pub log: KeepRule,
    /// For build roots.
    pub root: KeepRule,
}

/// The rules in force for `project` under the administrator's `settings`.
pub fn project_rules(project: &Project, settings: &RetentionSettings) -> ProjectRules {
    let s = settings;
    ProjectRules {
        log: KeepRule {
            builds: effective(project.log_keep_builds, s.log_keep_builds, s.max_log_keep_builds),
            days: effective(project.log_keep_days, s.log_keep_days, s.max_log_keep_days),
        },
        root: KeepRule {
            builds: effective(project.root_keep_builds, s.root_keep_builds, s.max_root_keep_builds),
            days: effective(project.root_keep_days, s.root_keep_days, s.max_root_keep_days),
        },
    }
}

/// Where a keep rule draws the line in one project's builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Builds with a smaller id are past the last N.
    pub below_id: Option<Id>,
    /// Builds that finished before this are older than D days.
    pub finished_before: Option<DateTime<Utc>>,
}

impl Bounds {
    /// Whether the rule keeps every build of the project (for now).
    pub fn keeps_everything(&self) -> bool {
        self.below_id.is_none() && self.finished_before.is_none()
    }

    /// Whether a finished, unpinned build is outside the rule.
    pub fn excludes(&self, id: Id, finished_at: Option<DateTime<Utc>>) -> bool {
        self.below_id.is_some_and(|b| id < b)
            || matches!((self.finished_before, finished_at), (Some(cutoff), Some(t)) if t < cutoff)
    }
}

/// How much one pass may remove (housekeeping works in slices, so one pass
/// never holds the database for long; `vespene cleanup` takes everything).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Logs per pass; 0: no limit.
    pub logs: usize,
    /// Build roots per pass; 0: no limit.
    pub roots: usize,
    /// Audit events per pass; 0: no limit.
    pub audit: usize,
}

impl Budget {
    /// Everything at once.
    pub const UNLIMITED: Budget = Budget { logs: 0, roots: 0, audit: 0 };
    /// One housekeeping pass.
    pub const HOUSEKEEPING: Budget = Budget { logs: 200, roots: 100, audit: 5000 };
}

/// What one pass removed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Builds whose log was removed.
    pub logs: Vec<Id>,
    /// Builds whose root was removed from this host.
    pub roots: Vec<Id>,
    /// Roots that could not be removed, with why (left for the next pass).
    pub failed_roots: Vec<(Id, String)>,
    /// Audit events removed for being older than `[retention] audit_keep_days`.
    pub audit: u64,
}

impl Report {
    /// Whether nothing happened.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty() && self.roots.is_empty() && self.failed_roots.is_empty() && self.audit == 0
    }
}

/// Applies every project's keep rules once: removes the logs they no longer
/// cover (any host's builds) and the build roots under `build_root` (this
/// host's). Pinned, queued, running and stopping builds are never touched.
pub async fn apply(store: &Store, settings: &RetentionSettings, build_root: &Path, budget: Budget) -> Result<Report> {
    let now = crate::store::now();
    let mut report = Report::default();
    let mut root_bounds: HashMap<Id, Bounds> = HashMap::new();
    for project in store.list_projects().await? {
        let rules = project_rules(&project, settings);
        if !rules.log.keeps_everything() && (budget.logs == 0 || report.logs.len() < budget.logs) {
            let bounds = bounds_of(store, project.id, rules.log, now).await?;
            let left = if budget.logs == 0 { 0 } else { budget.logs - report.logs.len() };
            let ids =
                store.builds_past_log_rule(project.id, bounds.below_id, bounds.finished_before, left as i64).await?;
            for id in ids {
                if store.delete_build_log(id).await? {
                    report.logs.push(id);
                }
            }
        }
        if !rules.root.keeps_everything() {
            root_bounds.insert(project.id, bounds_of(store, project.id, rules.root, now).await?);
        }
    }
    root_bounds.retain(|_, b| !b.keeps_everything());
    if !root_bounds.is_empty() {
        prune_roots(store, build_root, &root_bounds, budget, &mut report).await?;
    }
    if let Some(cutoff) = audit_cutoff(settings, now) {
        report.audit = store.delete_audit_before(cutoff, budget.audit as i64).await?;
    }
    Ok(report)
}

/// Audit events recorded before this are past `[retention] audit_keep_days`;
/// `None` when they are kept forever (0).
pub fn audit_cutoff(settings: &RetentionSettings, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    (settings.audit_keep_days > 0)
        .then(|| chrono::Duration::try_days(settings.audit_keep_days.into()))
        .flatten()
        .and_then(|d| now.checked_sub_signed(d))
}

async fn bounds_of(store: &Store, project_id: Id, rule: KeepRule, now: DateTime<Utc>) -> Result<Bounds> {
    let nth = if rule.builds > 0 { store.nth_newest_finished_build(project_id, rule.builds).await? } else { None };
    Ok(rule.bounds(nth, now))
}

/// The build ids named by the directories directly under `build_root`
/// (symbolic links and other files are not build roots).
pub fn local_root_ids(build_root: &Path) -> std::io::Result<Vec<Id>> {
    let entries = match std::fs::read_dir(build_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<Id>().ok()) else { continue };
        if id > 0 && entry.file_type()?.is_dir() {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

async fn prune_roots(
    store: &Store,
    build_root: &Path,
    bounds: &HashMap<Id, Bounds>,
    budget: Budget,
    report: &mut Report,
) -> Result<()> {
    let ids = local_root_ids(build_root).map_err(|e| {
        crate::store::StoreError::Config(format!("cannot read the build root {}: {e}", build_root.display()))
    })?;
    for facts in store.retention_facts(&ids).await? {
        if budget.roots > 0 && report.roots.len() >= budget.roots {
            break;
        }
        let Some(b) = facts.project_id.and_then(|p| bounds.get(&p)) else { continue };
        if !facts.finished || facts.pinned || !b.excludes(facts.id, facts.finished_at) {
            continue;
        }
        // Claimed first: a pin that lands meanwhile, or another process on
        // this host sharing the directory, sees the claim.
        if !store.claim_root_removal(facts.id).await? {
            continue;
        }
        let dir = build_root.join(facts.id.to_string());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => report.roots.push(facts.id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.roots.push(facts.id),
            Err(e) => {
                store.unclaim_root_removal(facts.id).await?;
                report.failed_roots.push((facts.id, format!("{}: {e}", dir.display())));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_project_asks_the_default_fills_in_and_the_maximum_caps() {
        // (asked, default, max) -> in force; 0 means no limit.
        let cases = [
            (None, 0, 0, 0),
            (Some(0), 0, 0, 0),
            (None, 30, 0, 30),
            (Some(0), 30, 0, 30),
            (Some(5), 30, 0, 5),
            (Some(500), 30, 0, 500),
            (Some(500), 30, 100, 100),
            (Some(100), 30, 100, 100),
            (Some(7), 30, 100, 7),
            (None, 0, 100, 100),
            (None, 30, 100, 30),
            (Some(-3), 10, 0, 10),
        ];
        for (asked, default, max, want) in cases {
            assert_eq!(effective(asked, default, max), want, "asked {asked:?}, default {default}, max {max}");
        }
    }

    #[test]
    fn audit_events_are_kept_forever_by_default_and_days_when_set() {
        let now = crate::store::now();
        assert_eq!(audit_cutoff(&RetentionSettings::default(), now), None);
        let settings = RetentionSettings { audit_keep_days: 30, ..Default::default() };
        assert_eq!(audit_cutoff(&settings, now), Some(now - chrono::Duration::days(30)));
    }

    #[test]
    fn project_rules_take_each_axis_separately() {
        let settings = RetentionSettings {
            log_keep_builds: 50,
            log_keep_days: 0,
            root_keep_builds: 0,
            root_keep_days: 2,
            max_log_keep_builds: 200,
            max_log_keep_days: 0,
            max_root_keep_builds: 10,
            max_root_keep_days: 0,
            audit_keep_days: 0,
        };
        let project = Project {
            log_keep_builds: Some(1000),
            log_keep_days: Some(90),
            root_keep_builds: None,
            root_keep_days: Some(0),
            ..Default::default()
        };
        let rules = project_rules(&project, &settings);
        assert_eq!(rules.log, KeepRule { builds: 200, days: 90 });
        assert_eq!(rules.root, KeepRule { builds: 10, days: 2 });
        assert_eq!(project_rules(&Project::default(), &RetentionSettings::default()), ProjectRules::default());
        assert!(ProjectRules::default().log.keeps_everything());
    }

    #[test]
    fn bounds_exclude_builds_past_the_last_n_or_older_than_d_days() {
        let now = "2024-06-10T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let days_ago = |d: i64| Some(now - chrono::Duration::days(d));
        // The last 3: the third newest is build 40; days unlimited.
        let b = KeepRule { builds: 3, days: 0 }.bounds(Some(40), now);
        assert_eq!(b, Bounds { below_id: Some(40), finished_before: None });
        assert!(b.excludes(39, days_ago(0)));
        assert!(!b.excludes(40, days_ago(1000)));
        assert!(!b.excludes(41, None));
        // Fewer than N builds: nothing is past the last N.
        assert!(KeepRule { builds: 3, days: 0 }.bounds(None, now).keeps_everything());
        // 7 days, any number of builds.
        let b = KeepRule { builds: 0, days: 7 }.bounds(Some(40), now);
        assert_eq!(b.below_id, None, "no build limit: the nth build does not matter");
        assert!(b.excludes(100, days_ago(8)));
        assert!(!b.excludes(1, days_ago(6)));
        assert!(!b.excludes(1, None), "no time known: kept");
        // Both: either bound excludes.
        let b = KeepRule { builds: 2, days: 7 }.bounds(Some(50), now);
        assert!(b.excludes(49, days_ago(1)));
        assert!(b.excludes(60, days_ago(9)));
        assert!(!b.excludes(55, days_ago(1)));
        // Nothing to keep by: no bounds; absurd day counts do not overflow.
        assert!(KeepRule::default().bounds(Some(1), now).keeps_everything());
        let far = KeepRule { builds: 0, days: i64::MAX }.bounds(None, now);
        assert!(!far.excludes(1, days_ago(365 * 1000)));
    }

    #[test]
    fn rules_read_as_sentences() {
        assert_eq!(KeepRule { builds: 0, days: 0 }.to_string(), "keep everything");
        assert_eq!(KeepRule { builds: 10, days: 0 }.to_string(), "keep the last 10 builds");
        assert_eq!(KeepRule { builds: 0, days: 30 }.to_string(), "keep 30 days");
        assert_eq!(KeepRule { builds: 10, days: 30 }.to_string(), "keep the last 10 builds and at most 30 days");
    }

    #[test]
    fn local_roots_are_numbered_directories_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["3", "12", "x", "0"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("7"), "a file").unwrap();
        std::os::unix::fs::symlink(dir.path().join("3"), dir.path().join("9")).unwrap();
        assert_eq!(local_root_ids(dir.path()).unwrap(), vec![3, 12]);
        assert_eq!(local_root_ids(&dir.path().join("missing")).unwrap(), Vec::<Id>::new());
    }
}
