//! The `variables-pipelines` variables plugin: the output variables of the
//! earlier stages of the same pipeline run.
//!
//! A build sets output variables by printing `vespene/set NAME VALUE` lines.
//! When a pipeline moves on, the engine hands this plugin, in
//! `context.pipeline_outputs`, the builds of the earlier stages of *this*
//! pipeline run, oldest first:
//!
//! ```json
//! [{"stage": "build", "stage_index": 0, "project": "app", "build_id": 12,
//!   "output_variables": {"image": "app:1.2"}}]
//! ```
//!
//! Their `output_variables` are merged in that order, so for a key set by
//! several earlier stages the nearest one wins. An absent or null
//! `output_variables` counts as empty; one that is not an object fails the
//! computation naming the build.
//!
//! Its one optional parameter, `prefix` (default empty), is put in front of
//! every key, to keep upstream values apart from the build's own variables:
//!
//! ```toml
//! [plugins.variables.pipelines]
//! library = "variables-pipelines"
//! prefix = "upstream_"      # `vespene/set image x` becomes {{ upstream_image }}
//! ```
//!
//! The original Vespene's `pipelines` plugin took the last successful build of
//! every project of the earlier stages, whichever pipeline run it belonged to.

use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{export_plugin, params, Kind, PluginResult, Variables, VariablesContext};

/// The plugin's name, for messages.
const NAME: &str = "variables-pipelines";

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["prefix"];

/// The `variables-pipelines` variables plugin.
#[derive(Debug, Default)]
pub struct PipelineVariables {
    /// Put in front of every key.
    prefix: String,
}

/// Whether `prefix` keeps an identifier an identifier: empty, or ASCII letters,
/// digits and `_` not starting with a digit.
fn valid_prefix(prefix: &str) -> bool {
    prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !prefix.starts_with(|c: char| c.is_ascii_digit())
}

/// How messages name a pipeline output: `the output variables of build 12
/// (project 'app', stage 'build')`, with what the entry carries.
fn label(index: usize, entry: &Map<String, Value>) -> String {
    let build = match entry.get("build_id").and_then(Value::as_i64) {
        Some(id) => format!("build {id}"),
        None => format!("pipeline output #{}", index + 1),
    };
    let details: Vec<String> = ["project", "stage"]
        .iter()
        .filter_map(|key| entry.get(*key).and_then(Value::as_str).map(|v| format!("{key} '{v}'")))
        .collect();
    if details.is_empty() {
        build
    } else {
        format!("{build} ({})", details.join(", "))
    }
}

impl PipelineVariables {
    /// A plugin putting `prefix` in front of every key.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        PipelineVariables { prefix: prefix.into() }
    }

    /// The plugin's whole computation, public for in-process callers.
    pub fn merge(&self, outputs: &[Value]) -> PluginResult<Map<String, Value>> {
        let mut variables = Map::new();
        for (index, entry) in outputs.iter().enumerate() {
            let Value::Object(entry) = entry else {
                return Err(format!("pipeline output #{}: must be an object", index + 1));
            };
            match entry.get("output_variables") {
                None | Some(Value::Null) => {}
                // Oldest first: a later (nearer) stage replaces what an earlier one set.
                Some(Value::Object(vars)) => {
                    variables.extend(vars.iter().map(|(k, v)| (format!("{}{k}", self.prefix), v.clone())))
                }
                Some(_) => return Err(format!("{}: output_variables must be an object", label(index, entry))),
            }
        }
        Ok(variables)
    }
}

impl Variables for PipelineVariables {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Variables, NAME, PARAMETERS)?;
        let prefix = match params.get("prefix") {
            None => "",
            Some(Value::String(prefix)) => prefix.as_str(),
            Some(other) => return Err(format!("parameter 'prefix' must be a string, not {other}")),
        };
        if !valid_prefix(prefix) {
            return Err(format!(
                "parameter 'prefix' must contain only ASCII letters, digits and _, and not start with a digit: \
                 '{prefix}'"
            ));
        }
        Ok(PipelineVariables::with_prefix(prefix))
    }

    fn compute(&self, context: &VariablesContext, _existing: &Map<String, Value>) -> PluginResult<Map<String, Value>> {
        self.merge(&context.pipeline_outputs)
    }
}

export_plugin! {
    name: "variables-pipelines",
    description: "Output variables of earlier stages of the same pipeline run",
    variables: PipelineVariables,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_project};
    use vespene_plugin_api::VariablesContext;

    use super::PipelineVariables;

    fn compute(config: Value, outputs: Vec<Value>, existing: Value) -> Result<Value, String> {
        let plugin = testkit::variables::<PipelineVariables>(config)?;
        let ctx = VariablesContext { project: fake_project(), pipeline_outputs: outputs, ..Default::default() };
        let existing = existing.as_object().expect("the existing variables are an object");
        plugin.compute(&ctx, existing).map(Value::Object)
    }

    fn output(stage_index: i64, stage: &str, build_id: i64, vars: Value) -> Value {
        json!({
            "stage": stage,
            "stage_index": stage_index,
            "project": format!("app-{stage}"),
            "build_id": build_id,
            "output_variables": vars,
        })
    }

    #[test]
    fn nearest_earlier_stage_wins() {
        let outputs = vec![
            output(0, "build", 10, json!({"image": "app:1", "built_by": "build", "shared": "build"})),
            output(1, "test", 11, json!({"tested": "yes", "shared": "test"})),
            output(2, "stage", 12, json!({"image": "app:1-staged", "shared": "stage"})),
        ];
        assert_eq!(
            compute(json!({}), outputs, json!({})).unwrap(),
            json!({
                "image": "app:1-staged",
                "built_by": "build",
                "tested": "yes",
                "shared": "stage",
            })
        );
    }

    #[test]
    fn later_entries_win_within_a_stage_too() {
        // Two projects of one stage: the engine's order (oldest first) decides.
        let outputs =
            vec![output(0, "build", 10, json!({"v": "first"})), output(0, "build", 11, json!({"v": "second"}))];
        assert_eq!(compute(json!({}), outputs, json!({})).unwrap(), json!({"v": "second"}));
    }

    #[test]
    fn values_are_replaced_whole_and_keep_their_types() {
        let outputs = vec![
            output(0, "a", 1, json!({"obj": {"x": 1, "y": 2}, "n": 1})),
            output(1, "b", 2, json!({"obj": {"x": 3}, "flag": false})),
        ];
        assert_eq!(compute(json!({}), outputs, json!({})).unwrap(), json!({"obj": {"x": 3}, "n": 1, "flag": false}));
    }

    #[test]
    fn no_outputs_and_empty_outputs_contribute_nothing() {
        assert_eq!(compute(json!({}), vec![], json!({"kept": 1})).unwrap(), json!({}));
        let outputs = vec![
            json!({"stage": "a", "stage_index": 0, "build_id": 1}),
            json!({"stage": "b", "stage_index": 1, "build_id": 2, "output_variables": null}),
            output(2, "c", 3, json!({})),
        ];
        assert_eq!(compute(json!({}), outputs, json!({})).unwrap(), json!({}));
    }

    #[test]
    fn existing_variables_are_overridden_not_echoed() {
        let outputs = vec![output(0, "build", 1, json!({"region": "us"}))];
        assert_eq!(compute(json!({}), outputs, json!({"region": "eu", "other": 1})).unwrap(), json!({"region": "us"}));
    }

    #[test]
    fn prefix_goes_in_front_of_every_key() {
        let outputs =
            vec![output(0, "build", 1, json!({"image": "a", "tag": "t"})), output(1, "test", 2, json!({"image": "b"}))];
        assert_eq!(
            compute(json!({"prefix": "upstream_"}), outputs.clone(), json!({"image": "own"})).unwrap(),
            json!({"upstream_image": "b", "upstream_tag": "t"})
        );
        assert_eq!(compute(json!({"prefix": ""}), outputs, json!({})).unwrap(), json!({"image": "b", "tag": "t"}));
    }

    #[test]
    fn bad_outputs_name_the_build() {
        let err = compute(json!({}), vec![output(0, "build", 12, json!(["a"]))], json!({})).unwrap_err();
        assert_eq!(err, "build 12 (project 'app-build', stage 'build'): output_variables must be an object");

        let err = compute(json!({}), vec![output(0, "a", 1, json!({})), json!({"output_variables": "x=1"})], json!({}))
            .unwrap_err();
        assert_eq!(err, "pipeline output #2: output_variables must be an object");

        let err = compute(json!({}), vec![json!(null)], json!({})).unwrap_err();
        assert_eq!(err, "pipeline output #1: must be an object");
    }

    #[test]
    fn configuration() {
        for cfg in [Value::Null, json!({}), json!({"prefix": "up_"}), json!({"prefix": "_x9"})] {
            assert!(testkit::variables::<PipelineVariables>(cfg.clone()).is_ok(), "{cfg}");
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        assert!(testkit::variables_from::<PipelineVariables>("null").is_ok(), "null");
        let cases = [
            (json!({"prefix": 3}), "parameter 'prefix' must be a string, not 3"),
            (
                json!({"prefix": "up-"}),
                "parameter 'prefix' must contain only ASCII letters, digits and _, and not start with a digit: 'up-'",
            ),
            (
                json!({"prefix": "1_"}),
                "parameter 'prefix' must contain only ASCII letters, digits and _, and not start with a digit: '1_'",
            ),
            (
                json!({"prefix": "a", "prefx": "b"}),
                "unknown parameter 'prefx' for variables plugin variables-pipelines",
            ),
            (json!({"a": 1, "b": 2}), "unknown parameters 'a', 'b' for variables plugin variables-pipelines"),
            (json!([]), "the parameters of variables plugin variables-pipelines must be a table, not []"),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::variables::<PipelineVariables>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
