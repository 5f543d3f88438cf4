//! The `variables-common` variables plugin: the variables a build gets from the
//! objects it belongs to, as edited in Vespene.
//!
//! It answers, in increasing precedence (a later source replaces a top-level
//! key of an earlier one):
//!
//! 1. the worker pool's variable sets, in attached order, then its own variables;
//! 2. the pipeline's variable sets, then its own variables;
//! 3. the stage's variable sets, then its own variables;
//! 4. the project's variable sets, then its own variables.
//!
//! The pool, pipeline and stage come from the context as JSON objects
//! (`{"id", "name", "variables": {...}, "variable_sets": [{"name", "variables"}]}`),
//! null or absent when the project has none; the project's `variables` and
//! `variable_sets` arrive in `context.project.extra`. An absent or null
//! `variables` or `variable_sets` counts as empty. Anything else that is not of
//! that shape fails the computation with one line naming where, such as
//! `variable set 'deploy' of pool 'general': variables must be an object`.
//!
//! It takes no parameters:
//!
//! ```toml
//! [plugins.variables.common]
//! library = "variables-common"
//! ```
//!
//! The original Vespene's `common` plugin skipped values that were not objects
//! silently; here they are errors, so a broken variable set is noticed.

use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{export_plugin, params, Kind, PluginResult, Variables, VariablesContext};

/// The plugin's name, for messages.
const NAME: &str = "variables-common";

/// The `variables-common` variables plugin.
#[derive(Debug, Default)]
pub struct CommonVariables;

/// How messages name an object of `kind`: `pool 'general'`, else `pool 3`
/// (its id), else just `pool`.
fn label(kind: &str, object: &Map<String, Value>) -> String {
    match (object.get("name").and_then(Value::as_str), object.get("id").and_then(Value::as_i64)) {
        (Some(name), _) if !name.is_empty() => format!("{kind} '{name}'"),
        (_, Some(id)) => format!("{kind} {id}"),
        _ => kind.to_string(),
    }
}

/// Merges `variables` (absent or null: nothing) over `into`, or fails naming `what`.
fn merge_object(into: &mut Map<String, Value>, variables: Option<&Value>, what: &str) -> PluginResult<()> {
    match variables {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(vars)) => {
            into.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(())
        }
        Some(_) => Err(format!("{what}: variables must be an object")),
    }
}

/// Merges one level over `into`: its variable sets in order, then its loose
/// variables. `owner` names the level in messages (`pool 'general'`).
fn merge_level(
    into: &mut Map<String, Value>,
    owner: &str,
    sets: Option<&Value>,
    loose: Option<&Value>,
) -> PluginResult<()> {
    match sets {
        None | Some(Value::Null) => {}
        Some(Value::Array(sets)) => {
            for (index, set) in sets.iter().enumerate() {
                let Value::Object(set) = set else {
                    return Err(format!("variable set #{} of {owner}: must be an object", index + 1));
                };
                let what = match set.get("name").and_then(Value::as_str) {
                    Some(name) => format!("variable set '{name}' of {owner}"),
                    None => format!("variable set #{} of {owner}", index + 1),
                };
                merge_object(into, set.get("variables"), &what)?;
            }
        }
        Some(_) => return Err(format!("{owner}: variable_sets must be an array")),
    }
    merge_object(into, loose, owner)
}

/// Merges the pool, pipeline or stage of the context (`kind` names it), if any.
fn merge_optional(into: &mut Map<String, Value>, kind: &str, level: Option<&Value>) -> PluginResult<()> {
    match level {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(object)) => {
            merge_level(into, &label(kind, object), object.get("variable_sets"), object.get("variables"))
        }
        Some(_) => Err(format!("{kind}: must be an object")),
    }
}

/// The plugin's whole computation, public for in-process callers.
pub fn common_variables(context: &VariablesContext) -> PluginResult<Map<String, Value>> {
    let mut variables = Map::new();
    merge_optional(&mut variables, "pool", context.pool.as_ref())?;
    merge_optional(&mut variables, "pipeline", context.pipeline.as_ref())?;
    merge_optional(&mut variables, "stage", context.stage.as_ref())?;
    let project = &context.project;
    let owner = if project.name.is_empty() { "project".to_string() } else { format!("project '{}'", project.name) };
    merge_level(&mut variables, &owner, project.extra.get("variable_sets"), project.extra.get("variables"))?;
    Ok(variables)
}

impl Variables for CommonVariables {
    fn new(config: &Value) -> PluginResult<Self> {
        // No parameters (besides `library` and `enabled`, which the host keeps).
        params::table(config, Kind::Variables, NAME, &[])?;
        Ok(CommonVariables)
    }

    fn compute(&self, context: &VariablesContext, _existing: &Map<String, Value>) -> PluginResult<Map<String, Value>> {
        common_variables(context)
    }
}

export_plugin! {
    name: "variables-common",
    description: "Variables of the pool, pipeline, stage and project, with their variable sets",
    variables: CommonVariables,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{self, json, Value};
    use vespene_plugin_api::testkit::{self, fake_project};
    use vespene_plugin_api::VariablesContext;

    use super::CommonVariables;

    fn compute(ctx: &VariablesContext, existing: Value) -> Result<Value, String> {
        let plugin = testkit::variables::<CommonVariables>(json!({}))?;
        let existing = existing.as_object().expect("the existing variables are an object");
        plugin.compute(ctx, existing).map(Value::Object)
    }

    fn set(name: &str, variables: Value) -> Value {
        json!({ "name": name, "variables": variables })
    }

    /// A pool, pipeline or stage as the engine sends it.
    fn level(id: i64, name: &str, sets: Vec<Value>, variables: Value) -> Option<Value> {
        Some(json!({ "id": id, "name": name, "variables": variables, "variable_sets": sets }))
    }

    fn project_with(ctx: &mut VariablesContext, sets: Vec<Value>, variables: Value) {
        ctx.project.extra.insert("variable_sets".into(), Value::Array(sets));
        ctx.project.extra.insert("variables".into(), variables);
    }

    /// Every level sets `who` and `<level>_set`/`<level>_loose`; the sets of a
    /// level set `<level>_set` twice (second wins) and `<level>_loose` (loose wins).
    fn full_context() -> VariablesContext {
        let mut ctx = VariablesContext { project: fake_project(), ..Default::default() };
        let lvl = |name: &str| {
            vec![
                set(
                    &format!("{name}-a"),
                    json!({"who": format!("{name} set a"), format!("{name}_set"): "a", format!("{name}_loose"): "set"}),
                ),
                set(&format!("{name}-b"), json!({"who": format!("{name} set b"), format!("{name}_set"): "b"})),
            ]
        };
        ctx.pool = level(1, "general", lvl("pool"), json!({"who": "pool", "pool_loose": "loose"}));
        ctx.pipeline = level(2, "release", lvl("pipeline"), json!({"who": "pipeline", "pipeline_loose": "loose"}));
        ctx.stage = level(3, "qa", lvl("stage"), json!({"who": "stage", "stage_loose": "loose"}));
        project_with(&mut ctx, lvl("project"), json!({"who": "project", "project_loose": "loose"}));
        ctx
    }

    #[test]
    fn sets_then_loose_at_every_level() {
        let vars = compute(&full_context(), json!({})).unwrap();
        assert_eq!(
            vars,
            json!({
                "who": "project",
                "pool_set": "b", "pool_loose": "loose",
                "pipeline_set": "b", "pipeline_loose": "loose",
                "stage_set": "b", "stage_loose": "loose",
                "project_set": "b", "project_loose": "loose",
            })
        );
    }

    #[test]
    fn pool_pipeline_stage_project_in_increasing_precedence() {
        // Peel the levels off from the top: each time the next lower one wins.
        let mut ctx = full_context();
        ctx.project.extra.clear();
        assert_eq!(compute(&ctx, json!({})).unwrap()["who"], "stage");
        ctx.stage = level(3, "qa", vec![], json!({}));
        assert_eq!(compute(&ctx, json!({})).unwrap()["who"], "pipeline");
        ctx.pipeline = None;
        assert_eq!(compute(&ctx, json!({})).unwrap()["who"], "pool");

        // A level's loose variables beat all sets of the same level, but a
        // higher level's sets beat a lower level's loose variables.
        let mut ctx = full_context();
        ctx.project.extra.insert("variables".into(), json!({}));
        assert_eq!(compute(&ctx, json!({})).unwrap()["who"], "project set b");
        ctx.project.extra.insert("variable_sets".into(), json!([]));
        assert_eq!(compute(&ctx, json!({})).unwrap()["who"], "stage");
        ctx.stage = level(3, "qa", vec![set("s", json!({"who": "stage set"}))], json!({}));
        assert_eq!(compute(&ctx, json!({})).unwrap()["who"], "stage set");
    }

    #[test]
    fn sets_apply_in_attached_order() {
        let mut ctx = VariablesContext { project: fake_project(), ..Default::default() };
        project_with(&mut ctx, vec![set("z", json!({"x": "z", "only_z": 1})), set("a", json!({"x": "a"}))], json!({}));
        assert_eq!(compute(&ctx, json!({})).unwrap(), json!({"x": "a", "only_z": 1}));
    }

    #[test]
    fn merging_is_shallow_and_values_keep_their_types() {
        let mut ctx = VariablesContext { project: fake_project(), ..Default::default() };
        ctx.pool = level(1, "general", vec![], json!({"deploy": {"region": "eu", "replicas": 2}, "n": 1}));
        project_with(&mut ctx, vec![], json!({"deploy": {"region": "us"}, "list": [1, "two"], "flag": true}));
        assert_eq!(
            compute(&ctx, json!({})).unwrap(),
            json!({"deploy": {"region": "us"}, "n": 1, "list": [1, "two"], "flag": true})
        );
    }

    #[test]
    fn missing_and_null_parts_count_as_empty() {
        // Nothing at all: no pool, pipeline or stage, no project variables.
        let ctx = VariablesContext { project: fake_project(), ..Default::default() };
        assert_eq!(compute(&ctx, json!({})).unwrap(), json!({}));

        let mut ctx = VariablesContext { project: fake_project(), ..Default::default() };
        ctx.pool = Some(json!({"id": 1, "name": "general"}));
        ctx.pipeline = Some(Value::Null);
        ctx.stage = Some(json!({"id": 3, "name": "qa", "variables": null, "variable_sets": null}));
        ctx.project.extra.insert("variables".into(), Value::Null);
        ctx.project.extra.insert("variable_sets".into(), json!([{"name": "empty"}, {"name": "n", "variables": null}]));
        assert_eq!(compute(&ctx, json!({})).unwrap(), json!({}));

        // The same, as the engine's JSON would carry it.
        let ctx: VariablesContext = serde_json::from_value(json!({
            "project": {"id": 7, "name": "demo", "variables": {"a": 1}},
            "pool": null,
            "pipeline_outputs": [],
        }))
        .unwrap();
        assert_eq!(compute(&ctx, json!({})).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn existing_variables_are_ignored() {
        let mut ctx = VariablesContext { project: fake_project(), ..Default::default() };
        project_with(&mut ctx, vec![], json!({"a": 1}));
        assert_eq!(compute(&ctx, json!({"a": 0, "b": 2})).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn bad_shapes_name_where() {
        let base = || VariablesContext { project: fake_project(), ..Default::default() };
        let cases: Vec<(VariablesContext, &str)> = vec![
            (
                VariablesContext { pool: level(1, "p", vec![set("x", json!([1]))], json!({})), ..base() },
                "variable set 'x' of pool 'p': variables must be an object",
            ),
            (
                VariablesContext { pool: level(1, "p", vec![], json!("a=1")), ..base() },
                "pool 'p': variables must be an object",
            ),
            (
                VariablesContext { pipeline: level(2, "rel", vec![], json!(5)), ..base() },
                "pipeline 'rel': variables must be an object",
            ),
            (
                VariablesContext { stage: level(3, "qa", vec![set("s", json!("x"))], json!({})), ..base() },
                "variable set 's' of stage 'qa': variables must be an object",
            ),
            (
                VariablesContext { stage: Some(json!({"id": 9, "variables": []})), ..base() },
                "stage 9: variables must be an object",
            ),
            (
                VariablesContext { pool: Some(json!({"name": "p", "variable_sets": {"x": {}}})), ..base() },
                "pool 'p': variable_sets must be an array",
            ),
            (
                VariablesContext { pool: Some(json!({"name": "p", "variable_sets": [{"name": "a"}, "b"]})), ..base() },
                "variable set #2 of pool 'p': must be an object",
            ),
            (
                VariablesContext { pool: Some(json!({"name": "p", "variable_sets": [{"variables": 1}]})), ..base() },
                "variable set #1 of pool 'p': variables must be an object",
            ),
            (VariablesContext { pipeline: Some(json!("release")), ..base() }, "pipeline: must be an object"),
        ];
        for (ctx, expected) in cases {
            assert_eq!(compute(&ctx, json!({})).unwrap_err(), expected);
        }

        let mut ctx = base();
        ctx.project.extra.insert("variables".into(), json!("{\"a\": 1}"));
        assert_eq!(compute(&ctx, json!({})).unwrap_err(), "project 'demo': variables must be an object");

        let mut ctx = base();
        ctx.project.extra.insert("variable_sets".into(), json!([set("deploy", json!(null)), set("bad", json!(true))]));
        assert_eq!(
            compute(&ctx, json!({})).unwrap_err(),
            "variable set 'bad' of project 'demo': variables must be an object"
        );

        let mut ctx = base();
        ctx.project.name = String::new();
        ctx.project.extra.insert("variable_sets".into(), json!(7));
        assert_eq!(compute(&ctx, json!({})).unwrap_err(), "project: variable_sets must be an array");
    }

    #[test]
    fn takes_no_parameters() {
        for cfg in [Value::Null, json!({})] {
            assert!(testkit::variables::<CommonVariables>(cfg.clone()).is_ok(), "{cfg}");
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        assert!(testkit::variables_from::<CommonVariables>("null").is_ok(), "null");
        let err = testkit::variables::<CommonVariables>(json!({"prefix": "x"})).err().unwrap();
        assert_eq!(err, "unknown parameter 'prefix' for variables plugin variables-common: it takes none");
        let err = testkit::variables::<CommonVariables>(json!({"a": 1, "b": 2})).err().unwrap();
        assert_eq!(err, "unknown parameters 'a', 'b' for variables plugin variables-common: it takes none");
        let err = testkit::variables::<CommonVariables>(json!([1])).err().unwrap();
        assert_eq!(err, "the parameters of variables plugin variables-common must be a table, not [1]");
    }
}
