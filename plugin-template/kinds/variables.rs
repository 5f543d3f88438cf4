//! An example **variables** plugin: adds constants and two computed variables
//! to every build.
//!
//! * the configured `values`, as they are (strings, numbers, booleans, lists,
//!   tables);
//! * `build_date`: the day the build's variables were computed (when it was
//!   queued), in UTC, as `YYYY-MM-DD`;
//! * `project_slug`: the project's name in lower case, each run of characters
//!   other than ASCII letters and digits turned into one `-`, with no `-` at
//!   either end (`My Web App (v2)` gives `my-web-app-v2`), for file names,
//!   image tags and URLs.
//!
//! Variables plugins run in a chain, each one's answer merged over the
//! variables computed so far (the project's, its pool's, its pipeline's and
//! the earlier plugins'). This one leaves a variable that already exists
//! alone, so a project can still set its own `build_date`, unless
//! `override = true`.
//!
//! ```toml
//! [plugins.variables.facts]
//! library = "template"
//! values = { company = "ACME", registry = "registry.example.com:5000" }
//! override = false   # optional, the default
//! ```
//!
//! Builds then use `{{ build_date }}`, `{{ project_slug }}` and
//! `{{ company }}` in their scripts. To adapt it, compute other variables in
//! [`Variables::compute`] from the context (project, pool, pipeline, stage,
//! earlier stages' outputs, snippets).

use std::time::{SystemTime, UNIX_EPOCH};

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{export_plugin, params, plugin_name, Kind, PluginResult, Variables, VariablesContext};

/// The variables this plugin computes; `values` may not set them.
const COMPUTED: &[&str] = &["build_date", "project_slug"];

/// The example variables plugin. Its parameters are read straight into it.
#[derive(Debug, Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
pub struct BuildFacts {
    /// The configured constants (`values`).
    #[serde(default)]
    values: Map<String, Value>,
    /// Whether to replace variables that already exist (`override`).
    #[serde(default, rename = "override")]
    override_existing: bool,
}

/// The proleptic Gregorian (year, month, day) of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`; exact for any day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Today's date in UTC, as `YYYY-MM-DD`.
pub fn utc_date(now: SystemTime) -> String {
    let seconds = match now.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs_f64().ceil() as i64),
    };
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    format!("{year:04}-{month:02}-{day:02}")
}

/// `name` in lower case, runs of non-alphanumerics as one `-`, trimmed.
pub fn slug(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    if slug.ends_with('-') {
        slug.pop();
    }
    slug
}

impl Variables for BuildFacts {
    fn new(config: &Value) -> PluginResult<Self> {
        let facts: BuildFacts = params::parse(config, Kind::Variables, plugin_name!())?;
        if let Some(name) = facts.values.keys().find(|k| COMPUTED.contains(&k.as_str())) {
            return Err(format!("parameter 'values' must not set '{name}': the plugin computes it"));
        }
        if facts.values.keys().any(|k| k.trim().is_empty()) {
            return Err("parameter 'values' has an empty variable name".to_string());
        }
        Ok(facts)
    }

    fn compute(&self, context: &VariablesContext, existing: &Map<String, Value>) -> PluginResult<Map<String, Value>> {
        let mut variables = self.values.clone();
        variables.insert("build_date".to_string(), utc_date(SystemTime::now()).into());
        variables.insert("project_slug".to_string(), slug(&context.project.name).into());
        if !self.override_existing {
            // Leaving a name out of the answer keeps the value merged so far.
            variables.retain(|name, _| !existing.contains_key(name));
        }
        Ok(variables)
    }
}

export_plugin! {
    description: "Example variables: adds constants, build_date and project_slug",
    variables: BuildFacts,
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{Duration, UNIX_EPOCH};

    use vespene_plugin_api::serde_json::{json, Map, Value};
    use vespene_plugin_api::testkit::{self, fake_project};
    use vespene_plugin_api::{plugin_name, VariablesContext};

    use super::{civil_from_days, slug, utc_date, BuildFacts};

    /// The variables the plugin answers for a project named `project_name`,
    /// on top of `existing` (a JSON object).
    fn compute(config: Value, project_name: &str, existing: Value) -> Map<String, Value> {
        let plugin = testkit::variables::<BuildFacts>(config).unwrap();
        let mut ctx = VariablesContext { project: fake_project(), ..Default::default() };
        ctx.project.name = project_name.to_string();
        plugin.compute(&ctx, existing.as_object().unwrap()).unwrap()
    }

    fn today_by_date_command() -> String {
        let out = Command::new("date").args(["-u", "+%Y-%m-%d"]).output().expect("date runs");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn adds_the_values_the_date_and_the_slug() {
        let before = today_by_date_command();
        let vars = compute(json!({"values": {"company": "ACME", "replicas": 3}}), "My Web App (v2)", json!({}));
        let after = today_by_date_command();

        assert_eq!(vars["company"], "ACME");
        assert_eq!(vars["replicas"], 3);
        assert_eq!(vars["project_slug"], "my-web-app-v2");
        let date = vars["build_date"].as_str().unwrap();
        assert!(date == before || date == after, "{date} is not today ({before})");
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn existing_variables_are_kept_unless_override_is_set() {
        let existing = json!({"company": "Initech", "build_date": "someday", "other": 1});
        let cfg = json!({"values": {"company": "ACME", "tier": "gold"}});

        let kept = compute(cfg.clone(), "demo", existing.clone());
        assert_eq!(kept, json!({"tier": "gold", "project_slug": "demo"}).as_object().unwrap().clone());

        let mut cfg = cfg;
        cfg["override"] = json!(true);
        let replaced = compute(cfg, "demo", existing);
        assert_eq!(replaced["company"], "ACME");
        assert_ne!(replaced["build_date"], "someday");
        assert_eq!(replaced.len(), 4, "{replaced:?}");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("My Project"), "my-project");
        assert_eq!(slug("  Web__API v2!! "), "web-api-v2");
        assert_eq!(slug("Ärger-Straße 9"), "rger-stra-e-9");
        assert_eq!(slug("---"), "");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(utc_date(UNIX_EPOCH + Duration::from_secs(951_868_799)), "2000-02-29");
        assert_eq!(utc_date(UNIX_EPOCH + Duration::from_secs(951_868_800)), "2000-03-01");
        assert_eq!(utc_date(UNIX_EPOCH - Duration::from_secs(1)), "1969-12-31");
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let cases = [
            (
                json!({"values": ["a"]}),
                format!("parameter 'values' of variables plugin {name}: invalid type: sequence, expected a map"),
            ),
            (
                json!({"values": {"build_date": "x"}}),
                "parameter 'values' must not set 'build_date': the plugin computes it".to_string(),
            ),
            (json!({"values": {"": 1}}), "parameter 'values' has an empty variable name".to_string()),
            (
                json!({"override": "yes"}),
                format!(
                    "parameter 'override' of variables plugin {name}: invalid type: string \"yes\", expected a boolean"
                ),
            ),
            (json!({"value": {}}), format!("unknown parameter 'value' for variables plugin {name}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::variables::<BuildFacts>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
