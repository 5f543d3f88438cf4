//! Checking a plugin's parameter table in `new`, with the messages every
//! shipped plugin uses.
//!
//! A plugin's parameters arrive as the JSON of its settings entry (without
//! `library` and `enabled`): a table, or `null` when a host sends none.
//!
//! The usual way: describe the parameters as a struct and let [`parse`] read
//! them, with every error naming the parameter:
//!
//! ```
//! use vespene_plugin_api::serde::Deserialize;
//! use vespene_plugin_api::serde_json::json;
//! use vespene_plugin_api::{params, Kind};
//!
//! #[derive(Deserialize)]
//! #[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
//! struct Settings {
//!     greeting: String,
//!     #[serde(default)]
//!     times: u32,
//! }
//!
//! let s: Settings = params::parse(&json!({"greeting": "hi"}), Kind::Trigger, "hello").unwrap();
//! assert_eq!((s.greeting.as_str(), s.times), ("hi", 0));
//! let err = |config| params::parse::<Settings>(&config, Kind::Trigger, "hello").err().unwrap();
//! assert_eq!(err(json!({})), "parameter 'greeting' of trigger plugin hello is required");
//! assert_eq!(err(json!({"greeting": "hi", "greting": 1})), "unknown parameter 'greting' for trigger plugin hello");
//! assert_eq!(
//!     err(json!({"greeting": "hi", "times": -1})),
//!     "parameter 'times' of trigger plugin hello: invalid value: integer `-1`, expected u32"
//! );
//! ```
//!
//! [`table`] is the lower-level way: it answers the table, refusing anything
//! else and every key the plugin does not know, and the plugin reads and
//! checks each parameter itself.
//!
//! ```
//! use vespene_plugin_api::serde_json::{json, Value};
//! use vespene_plugin_api::{params, Kind, PluginResult};
//!
//! fn greeting(config: &Value) -> PluginResult<String> {
//!     let params = params::table(config, Kind::Trigger, "hello", &["greeting"])?;
//!     let greeting = params.get("greeting").and_then(Value::as_str);
//!     Ok(greeting.ok_or("parameter 'greeting' (a string) is required")?.to_string())
//! }
//!
//! assert_eq!(greeting(&json!({"greeting": "hi"})).unwrap(), "hi");
//! assert_eq!(
//!     greeting(&json!({"greting": "hi"})).unwrap_err(),
//!     "unknown parameter 'greting' for trigger plugin hello"
//! );
//! assert_eq!(
//!     greeting(&json!(["hi"])).unwrap_err(),
//!     "the parameters of trigger plugin hello must be a table, not [\"hi\"]"
//! );
//! ```

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::{Kind, PluginResult};

/// What `null` parameters read as.
static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

/// The parameter table of plugin `name` of `kind`, refusing any key not in
/// `known`. `null` counts as an empty table.
///
/// The errors, for `table(config, Kind::Scm, "git", &["depth"])`:
/// * `the parameters of scm plugin git must be a table, not [1]`
/// * `unknown parameter 'x' for scm plugin git`
/// * `unknown parameters 'x', 'y' for scm plugin git` (every unknown key, in
///   the table's order)
///
/// When `known` is empty, the unknown-parameter messages end with `: it takes none`.
pub fn table<'a>(config: &'a Value, kind: Kind, name: &str, known: &[&str]) -> PluginResult<&'a Map<String, Value>> {
    let params = open_table(config, kind, name)?;
    let unknown: Vec<String> =
        params.keys().filter(|k| !known.contains(&k.as_str())).map(|k| format!("'{k}'")).collect();
    let takes_none = if known.is_empty() { ": it takes none" } else { "" };
    match unknown.as_slice() {
        [] => Ok(params),
        [one] => Err(format!("unknown parameter {one} for {kind} plugin {name}{takes_none}")),
        many => Err(format!("unknown parameters {} for {kind} plugin {name}{takes_none}", many.join(", "))),
    }
}

/// The parameters of plugin `name` of `kind`, read into `T` (a struct that
/// derives `Deserialize`, usually with `deny_unknown_fields`). `null` reads as
/// an empty table. Every error is one line naming the parameter:
/// * `parameter 'greeting' of trigger plugin hello is required`
/// * `unknown parameter 'greting' for trigger plugin hello`
/// * `parameter 'times' of trigger plugin hello: invalid type: string "x", expected u32`
///   (for a nested value, the path: `parameter 'env.HOME' ...`)
pub fn parse<T: serde::de::DeserializeOwned>(config: &Value, kind: Kind, name: &str) -> PluginResult<T> {
    let table = Value::Object(open_table(config, kind, name)?.clone());
    serde_path_to_error::deserialize::<_, T>(table).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        // serde's own wording, for the two errors that are about a key rather than a value.
        let quoted = |prefix: &str| inner.strip_prefix(prefix).and_then(|r| r.split('`').next()).map(str::to_string);
        let at = |key: &str| if path == "." || path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
        if let Some(key) = quoted("unknown field `") {
            // The path already ends with the unknown key.
            let full = if path == "." || path.is_empty() { key } else { path.clone() };
            format!("unknown parameter '{full}' for {kind} plugin {name}")
        } else if let Some(key) = quoted("missing field `") {
            format!("parameter '{}' of {kind} plugin {name} is required", at(&key))
        } else if path == "." || path.is_empty() {
            format!("the parameters of {kind} plugin {name}: {inner}")
        } else {
            format!("parameter '{path}' of {kind} plugin {name}: {inner}")
        }
    })
}

/// The parameter table of plugin `name` of `kind`, whatever its keys: for a
/// plugin whose parameter names are open-ended (object kinds, variable names),
/// which checks the keys itself. `null` counts as an empty table; anything else
/// is refused as by [`table`].
pub fn open_table<'a>(config: &'a Value, kind: Kind, name: &str) -> PluginResult<&'a Map<String, Value>> {
    match config {
        Value::Object(params) => Ok(params),
        Value::Null => Ok(&EMPTY),
        other => Err(format!("the parameters of {kind} plugin {name} must be a table, not {other}")),
    }
}

/// An environment-variable table parameter (`env = { NAME = "value" }`);
/// absent means empty. Names must be usable as variable names and values
/// strings without NUL bytes; the messages name `parameter`.
pub fn env_table(params: &Map<String, Value>, parameter: &str) -> PluginResult<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    let Some(value) = params.get(parameter) else { return Ok(env) };
    let Value::Object(table) = value else {
        return Err(format!("parameter '{parameter}' must be a table of variable names to strings"));
    };
    for (name, value) in table {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("parameter '{parameter}': '{name}' is not a valid environment variable name"));
        }
        match value {
            Value::String(s) if !s.contains('\0') => {
                env.insert(name.clone(), s.clone());
            }
            Value::String(_) => {
                return Err(format!("parameter '{parameter}': the value of '{name}' contains a NUL byte"))
            }
            _ => return Err(format!("parameter '{parameter}': the value of '{name}' must be a string")),
        }
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parse_names_nested_parameters_by_their_path() {
        use serde::Deserialize;
        use serde_json::json;
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Inner {
            #[allow(dead_code)]
            port: u16,
        }
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Outer {
            #[allow(dead_code)]
            server: Inner,
        }
        let err = |config: serde_json::Value| super::parse::<Outer>(&config, crate::Kind::Scm, "x").unwrap_err();
        assert_eq!(err(json!({"server": {}})), "parameter 'server.port' of scm plugin x is required");
        assert_eq!(
            err(json!({"server": {"port": 1, "host": "h"}})),
            "unknown parameter 'server.host' for scm plugin x"
        );
        assert_eq!(
            err(json!({"server": {"port": 70000}})),
            "parameter 'server.port' of scm plugin x: invalid value: integer `70000`, expected u16"
        );
        assert_eq!(err(json!([1])), "the parameters of scm plugin x must be a table, not [1]");
    }

    #[test]
    fn env_tables_are_checked_and_named() {
        let params = |v: serde_json::Value| v.as_object().unwrap().clone();
        let env = env_table(&params(serde_json::json!({"env": {"A": "1"}})), "env").unwrap();
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert!(env_table(&params(serde_json::json!({})), "env").unwrap().is_empty());
        let err = |v| env_table(&params(v), "env").unwrap_err();
        assert_eq!(
            err(serde_json::json!({"env": ["A=1"]})),
            "parameter 'env' must be a table of variable names to strings"
        );
        assert_eq!(
            err(serde_json::json!({"env": {"A=B": "1"}})),
            "parameter 'env': 'A=B' is not a valid environment variable name"
        );
        assert_eq!(err(serde_json::json!({"env": {"A": 1}})), "parameter 'env': the value of 'A' must be a string");
        assert_eq!(
            err(serde_json::json!({"env": {"A": "x\0"}})),
            "parameter 'env': the value of 'A' contains a NUL byte"
        );
    }

    use serde_json::json;

    use super::*;

    #[test]
    fn a_table_of_known_parameters_is_answered_as_is() {
        let config = json!({"command": "make", "file": "x"});
        let params = table(&config, Kind::Trigger, "command", &["file", "command"]).unwrap();
        assert_eq!(params, config.as_object().unwrap());
        assert!(std::ptr::eq(params, config.as_object().unwrap()));
    }

    #[test]
    fn null_and_an_empty_table_are_no_parameters() {
        assert!(table(&Value::Null, Kind::Scm, "none", &[]).unwrap().is_empty());
        assert!(table(&json!({}), Kind::Scm, "none", &[]).unwrap().is_empty());
        assert!(table(&Value::Null, Kind::Scm, "git", &["depth"]).unwrap().is_empty());
        assert!(open_table(&Value::Null, Kind::Authorization, "group-required").unwrap().is_empty());
    }

    #[test]
    fn anything_but_a_table_is_refused_quoting_it() {
        let cases = [
            (json!([]), "the parameters of isolation plugin shell must be a table, not []"),
            (json!("x"), "the parameters of isolation plugin shell must be a table, not \"x\""),
            (json!(1), "the parameters of isolation plugin shell must be a table, not 1"),
            (json!(false), "the parameters of isolation plugin shell must be a table, not false"),
        ];
        for (config, expected) in cases {
            assert_eq!(table(&config, Kind::Isolation, "shell", &["shell"]).unwrap_err(), expected);
            assert_eq!(open_table(&config, Kind::Isolation, "shell").unwrap_err(), expected);
        }
    }

    #[test]
    fn one_unknown_parameter_is_named() {
        let err = table(&json!({"comand": "x"}), Kind::Trigger, "command", &["command"]).unwrap_err();
        assert_eq!(err, "unknown parameter 'comand' for trigger plugin command");
    }

    #[test]
    fn several_unknown_parameters_are_all_named() {
        let config = json!({"a": 1, "command": "x", "b": 2});
        let err = table(&config, Kind::Trigger, "command", &["command"]).unwrap_err();
        assert_eq!(err, "unknown parameters 'a', 'b' for trigger plugin command");
    }

    #[test]
    fn a_plugin_without_parameters_says_it_takes_none() {
        let err = table(&json!({"prefix": "x"}), Kind::Variables, "variables-common", &[]).unwrap_err();
        assert_eq!(err, "unknown parameter 'prefix' for variables plugin variables-common: it takes none");
        let err = table(&json!({"a": 1, "b": 2}), Kind::Variables, "variables-common", &[]).unwrap_err();
        assert_eq!(err, "unknown parameters 'a', 'b' for variables plugin variables-common: it takes none");
    }

    #[test]
    fn an_open_table_keeps_every_key() {
        let config = json!({"project": {}, "anything": 1});
        assert_eq!(open_table(&config, Kind::Authorization, "group-required").unwrap().len(), 2);
    }
}
