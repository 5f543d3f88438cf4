//! The `variables-snippets` variables plugin: every snippet, rendered, becomes
//! a variable.
//!
//! Snippets are named blocks of template text edited in Vespene (a shared
//! deploy preamble, a notification command). For each snippet of the context,
//! in name order, this plugin renders its text with minijinja against the
//! variables computed so far by the earlier plugins of the chain (`existing`),
//! and answers the result under the snippet's name with `-` and spaces turned
//! into `_`: snippet `deploy-setup` becomes `{{ deploy_setup }}`. A snippet
//! whose variable is already in `existing` is skipped, not even rendered: a
//! snippet never replaces a variable set anywhere else.
//!
//! The server hands it only the snippets a build may render: those the
//! project's script names and its owners may use.
//!
//! Rendering is lenient: an undefined variable renders as nothing and loops
//! over nothing, so a snippet can serve projects that set only some of its
//! variables. Looking up an attribute of an undefined variable
//! (`{{ missing.attr }}`) still fails. Snippets see `existing` only, not each
//! other. A template that does not compile or render fails the computation
//! with one line naming the snippet, and so do two snippets whose names become
//! the same variable (`a-b` and `a b`).
//!
//! It takes no parameters:
//!
//! ```toml
//! [plugins.variables.snippets]
//! library = "variables-snippets"
//! ```

use std::collections::HashMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{export_plugin, params, Kind, PluginResult, SnippetInfo, Variables, VariablesContext};

/// The plugin's name, for messages.
const NAME: &str = "variables-snippets";

/// The `variables-snippets` variables plugin.
#[derive(Debug, Default)]
pub struct SnippetVariables;

/// The variable a snippet is injected as: its name with `-` and spaces as `_`.
pub fn variable_name(snippet: &str) -> String {
    snippet.replace(['-', ' '], "_")
}

/// A template error in one line, quoting the failing part of `source` when
/// minijinja knows it ("undefined value" alone does not say which one).
fn describe(err: &minijinja::Error, source: &str) -> String {
    match err.range().and_then(|r| source.get(r)) {
        Some(at) if !at.trim().is_empty() => format!("{err} at `{at}`"),
        _ => err.to_string(),
    }
}

/// The most template instructions one snippet may run (minijinja fuel).
pub const SNIPPET_FUEL: u64 = 5_000_000;

/// Renders every snippet against `existing`: the plugin's whole computation,
/// public for in-process callers.
pub fn render_snippets(snippets: &[SnippetInfo], existing: &Map<String, Value>) -> PluginResult<Map<String, Value>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    // Snippets become shell script text, not HTML: never escape.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // `{{ value | shell_quote }}`: one shell word, as in scripts.
    env.add_filter("shell_quote", |v: minijinja::Value| {
        vespene_plugin_api::shell::quote(&v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .map(minijinja::Value::from_safe_string)
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))
    });
    // A snippet that loops for ever fails its builds instead of holding a thread.
    env.set_fuel(Some(SNIPPET_FUEL));

    let mut variables = Map::new();
    // Which snippet each variable came from, to report two names that collide.
    let mut origin: HashMap<String, &str> = HashMap::new();
    for snippet in snippets {
        let name = snippet.name.as_str();
        let key = variable_name(name);
        if key.is_empty() {
            return Err("a snippet has an empty name".to_string());
        }
        if let Some(other) = origin.insert(key.clone(), name) {
            return Err(format!("snippets '{other}' and '{name}' both become the variable '{key}'"));
        }
        if existing.contains_key(&key) {
            // A snippet never replaces a variable set anywhere else.
            continue;
        }
        let template = env
            .template_from_named_str(name, &snippet.text)
            .map_err(|e| format!("snippet '{name}' is not a valid template: {}", describe(&e, &snippet.text)))?;
        let text = template
            .render(existing)
            .map_err(|e| format!("cannot render snippet '{name}': {}", describe(&e, &snippet.text)))?;
        variables.insert(key, Value::String(text));
    }
    Ok(variables)
}

impl Variables for SnippetVariables {
    fn new(config: &Value) -> PluginResult<Self> {
        params::table(config, Kind::Variables, NAME, &[])?;
        Ok(SnippetVariables)
    }

    fn compute(&self, context: &VariablesContext, existing: &Map<String, Value>) -> PluginResult<Map<String, Value>> {
        render_snippets(&context.snippets, existing)
    }
}

export_plugin! {
    name: "variables-snippets",
    description: "Snippets rendered against the variables so far, injected by name",
    variables: SnippetVariables,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_project};
    use vespene_plugin_api::{SnippetInfo, VariablesContext};

    use super::{variable_name, SnippetVariables};

    fn snippet(name: &str, text: &str) -> SnippetInfo {
        SnippetInfo { name: name.into(), text: text.into() }
    }

    fn compute(snippets: Vec<SnippetInfo>, existing: Value) -> Result<Value, String> {
        let plugin = testkit::variables::<SnippetVariables>(json!({}))?;
        let ctx = VariablesContext { project: fake_project(), snippets, ..Default::default() };
        let existing = existing.as_object().expect("the existing variables are an object");
        plugin.compute(&ctx, existing).map(Value::Object)
    }

    #[test]
    fn renders_against_existing_variables() {
        let snippets = vec![
            snippet("greeting", "hello {{ company }}, {{ replicas * 2 }} replicas"),
            snippet("host-list", "{% for h in hosts %}{{ h.name }}{% if not loop.last %},{% endif %}{% endfor %}"),
            snippet("plain", "no templating at all\n"),
        ];
        let existing = json!({"company": "ACME", "replicas": 3, "hosts": [{"name": "a"}, {"name": "b"}]});
        assert_eq!(
            compute(snippets, existing).unwrap(),
            json!({
                "greeting": "hello ACME, 6 replicas",
                "host_list": "a,b",
                // Like Jinja2's default, one trailing newline is dropped.
                "plain": "no templating at all",
            })
        );
    }

    #[test]
    fn undefined_variables_render_leniently() {
        let snippets = vec![
            snippet("missing", "[{{ nope }}]"),
            snippet("loop", "[{% for x in nope %}{{ x }}{% endfor %}]"),
            snippet("test", "{% if nope %}yes{% else %}no{% endif %} {{ nope | default('dflt') }}"),
            snippet("attr", "[{{ obj.missing }}]"),
        ];
        assert_eq!(
            compute(snippets, json!({"obj": {"x": 1}})).unwrap(),
            json!({"missing": "[]", "loop": "[]", "test": "no dflt", "attr": "[]"})
        );
    }

    #[test]
    fn names_become_identifiers() {
        let snippets = vec![snippet("deploy-setup", "d"), snippet("my snippet-2", "m"), snippet("already_ok", "a")];
        assert_eq!(
            compute(snippets, json!({})).unwrap(),
            json!({"deploy_setup": "d", "my_snippet_2": "m", "already_ok": "a"})
        );
        assert_eq!(variable_name("a - b"), "a___b");
    }

    #[test]
    fn snippets_see_existing_only_and_never_replace_it() {
        // `b` does not see `c`'s rendering; `a` leaves the existing `a` alone,
        // and is not even rendered (its text would not compile).
        let snippets = vec![snippet("a", "new {{ a"), snippet("b", "[{{ a }}{{ c }}]"), snippet("c", "c")];
        assert_eq!(compute(snippets, json!({"a": "old"})).unwrap(), json!({"b": "[old]", "c": "c"}));
    }

    #[test]
    fn no_escaping() {
        let snippets = vec![snippet("cmd", "echo {{ msg }}")];
        assert_eq!(compute(snippets, json!({"msg": "<a & 'b'>"})).unwrap(), json!({"cmd": "echo <a & 'b'>"}));
    }

    #[test]
    fn no_snippets_contribute_nothing() {
        assert_eq!(compute(vec![], json!({"a": 1})).unwrap(), json!({}));
    }

    #[test]
    fn syntax_errors_name_the_snippet() {
        let err =
            compute(vec![snippet("good", "ok"), snippet("deploy-setup", "echo {{ target")], json!({})).unwrap_err();
        assert!(err.starts_with("snippet 'deploy-setup' is not a valid template: syntax error"), "{err}");

        let err = compute(vec![snippet("blocks", "{% if x %}open")], json!({})).unwrap_err();
        assert!(err.starts_with("snippet 'blocks' is not a valid template: syntax error"), "{err}");
    }

    #[test]
    fn render_errors_name_the_snippet() {
        let err = compute(vec![snippet("deep", "{{ nope.attr }}")], json!({})).unwrap_err();
        assert!(err.starts_with("cannot render snippet 'deep': "), "{err}");
        assert!(err.contains("undefined"), "{err}");
        assert!(err.ends_with(" at `nope.attr`"), "{err}");

        let err = compute(vec![snippet("filter", "{{ 'x' | no_such_filter }}")], json!({})).unwrap_err();
        assert!(err.contains("snippet 'filter'"), "{err}");
    }

    #[test]
    fn colliding_and_empty_names_are_errors() {
        let err = compute(vec![snippet("a b", "1"), snippet("a-b", "2")], json!({})).unwrap_err();
        assert_eq!(err, "snippets 'a b' and 'a-b' both become the variable 'a_b'");
        let err = compute(vec![snippet("", "1")], json!({})).unwrap_err();
        assert_eq!(err, "a snippet has an empty name");
    }

    #[test]
    fn takes_no_parameters() {
        for cfg in [Value::Null, json!({})] {
            assert!(testkit::variables::<SnippetVariables>(cfg.clone()).is_ok(), "{cfg}");
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        assert!(testkit::variables_from::<SnippetVariables>("null").is_ok(), "null");
        let err = testkit::variables::<SnippetVariables>(json!({"strict": true})).err().unwrap();
        assert_eq!(err, "unknown parameter 'strict' for variables plugin variables-snippets: it takes none");
        let err = testkit::variables::<SnippetVariables>(json!({"a": 1, "b": 2})).err().unwrap();
        assert_eq!(err, "unknown parameters 'a', 'b' for variables plugin variables-snippets: it takes none");
        let err = testkit::variables::<SnippetVariables>(json!("x")).err().unwrap();
        assert_eq!(err, "the parameters of variables plugin variables-snippets must be a table, not \"x\"");
    }
}
