//! The `group-required` authorization plugin: limits actions on object kinds
//! to the members of named groups.
//!
//! ```toml
//! [plugins.authorization.group_required]
//! library = "group-required"
//!
//! [plugins.authorization.group_required.project]
//! create = ["dev", "qa"]    # only dev and qa members create projects
//! start = ["ops"]           # only ops members start them
//!
//! [plugins.authorization.group_required.worker_pool]
//! list = []                 # [] means superusers only
//! use = ["ops"]             # only ops members put projects in pools
//! ```
//!
//! Its parameters are a table per object kind, each a table per action, each
//! a list of group names: `{ "<kind>": { "<action>": ["group", ...] } }`.
//! A kind or action not in the contract below, a value that is not a table
//! or not a list of non-empty group names, is a configuration error naming
//! it. No parameters at all is valid: nothing is restricted.
//!
//! # The request contract
//!
//! The API asks the authorization chain about **every** action, and every
//! configured authorization plugin must allow it. This plugin reads:
//!
//! * `user`: `None` for anonymous requests, which are refused everything (and
//!   `filter_list` answers no ids). Group names are matched exactly.
//! * `action`: `list`, `view`, `create`, `edit`, `delete`, `start`, `stop`,
//!   `approve` or `use` (interface 1.2): `use` of a kind is asked when a project, pipeline,
//!   stage, pool or organization being saved names an object of that kind,
//!   so `[worker_pool] use = ["ops"]` keeps every pool but superusers' out of
//!   the hands of anyone outside ops. `approve` (interface 1.3) is asked of a
//!   `pipeline` waiting at a manual approval stage, so
//!   `pipeline = { approve = ["release"] }` leaves approvals to the release
//!   team, whoever else may edit the pipeline.
//! * `kind`: `project`, `build`, `pipeline`, `stage`, `worker_pool`,
//!   `snippet`, `variable_set`, `ssh_key`, `service_login`, `organization`,
//!   `user`, `group` or `api_token`. `start` is asked of a `project`, `stop`
//!   of a `build`.
//! * `object` is not read: the rules depend only on who asks, the kind and
//!   the action.
//!
//! # The rules
//!
//! 1. Anonymous requests are refused.
//! 2. Superusers may do everything.
//! 3. A kind and action pair that is not configured is unrestricted: this
//!    plugin allows it (other plugins of the chain still decide). That
//!    includes kinds and actions outside the contract, which cannot be
//!    configured.
//! 4. A configured pair allows the members of at least one of its groups;
//!    `[]` allows no one but superusers.
//!    `use` is a pair like any other: configured, it narrows who may name
//!    objects of the kind; not configured, this plugin leaves the decision to
//!    the rest of the chain (the ownership plugin's owners-or-shared rule).
//! 5. `filter_list` answers every candidate's id when the request (normally
//!    `list` of the kind) is allowed, and none otherwise.
//!
//! # Differences from the original Vespene
//!
//! * `list` is enforced (the original never asked it).
//! * `stop` is checked as `stop` (the original checked `view` instead).
//! * Kinds are named as in the API (`worker_pool`, `ssh_key`, ...), not as
//!   lowercased class names (`workerpool`, `sshkey`); the old names are
//!   refused with a hint.
//! * No parameters is valid (the original failed to start with `{}`).

use std::collections::BTreeMap;

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, AccessRequest, Authorization, Kind, PluginResult};

/// The plugin's name, for messages.
const NAME: &str = "group-required";

/// The actions and object kinds of the authorization contract.
pub use vespene_plugin_api::{ACCESS_ACTIONS as ACTIONS, ACCESS_KINDS as KINDS};

/// The `group-required` authorization plugin.
#[derive(Debug, Default)]
pub struct GroupRequired {
    /// kind -> action -> the groups allowed (empty: superusers only).
    rules: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// A name stripped of case, `_`, `-`, spaces and a trailing plural `s`, to
/// suggest the right spelling of a near miss (`workerpool`, `Projects`).
fn loose(name: &str) -> String {
    let squashed: String =
        name.chars().filter(|c| !matches!(c, '_' | '-' | ' ')).flat_map(char::to_lowercase).collect();
    squashed.strip_suffix('s').map(str::to_string).unwrap_or(squashed)
}

/// "unknown X 'name' ...; did you mean 'y'?" or "...; the Xs are a, b, c".
fn unknown(what: &str, name: &str, place: &str, known: &[&str]) -> String {
    match known.iter().find(|k| loose(k) == loose(name)) {
        Some(k) => format!("unknown {what} '{name}' {place}: did you mean '{k}'?"),
        None => format!("unknown {what} '{name}' {place}: the {what}s are {}", known.join(", ")),
    }
}

impl GroupRequired {
    /// The groups allowed `action` on `kind`, if the pair is restricted.
    pub fn required(&self, kind: &str, action: &str) -> Option<&[String]> {
        self.rules.get(kind).and_then(|actions| actions.get(action)).map(Vec::as_slice)
    }
}

impl Authorization for GroupRequired {
    fn new(config: &Value) -> PluginResult<Self> {
        // Its parameters are the object kinds: checked below, with suggestions.
        let params = params::open_table(config, Kind::Authorization, NAME)?;
        let mut rules = BTreeMap::new();
        for (kind, actions) in params {
            if !KINDS.contains(&kind.as_str()) {
                return Err(unknown("kind", kind, &format!("for authorization plugin {NAME}"), &KINDS));
            }
            let Value::Object(actions) = actions else {
                return Err(format!("parameter '{kind}' must be a table of actions and group lists, not {actions}"));
            };
            let mut by_action = BTreeMap::new();
            for (action, groups) in actions {
                if !ACTIONS.contains(&action.as_str()) {
                    return Err(unknown("action", action, &format!("in parameter '{kind}'"), &ACTIONS));
                }
                let Value::Array(groups) = groups else {
                    return Err(format!("parameter '{kind}.{action}' must be a list of group names, not {groups}"));
                };
                let groups = groups
                    .iter()
                    .map(|g| match g.as_str() {
                        Some(name) if !name.trim().is_empty() => Ok(name.to_string()),
                        _ => Err(format!(
                            "parameter '{kind}.{action}' must list group names (non-empty strings), not {g}"
                        )),
                    })
                    .collect::<PluginResult<Vec<_>>>()?;
                by_action.insert(action.clone(), groups);
            }
            rules.insert(kind.clone(), by_action);
        }
        Ok(GroupRequired { rules })
    }

    fn check(&self, request: &AccessRequest) -> PluginResult<bool> {
        let Some(user) = &request.user else { return Ok(false) };
        if user.superuser {
            return Ok(true);
        }
        Ok(match self.required(&request.kind, &request.action) {
            None => true,
            Some(groups) => user.groups.iter().any(|g| groups.contains(g)),
        })
    }

    // filter_list: the trait's default, every candidate when `check` allows
    // the request and none otherwise, is exactly this plugin's rule.
}

export_plugin! {
    name: "group-required",
    description: "Authorization limiting actions on object kinds to members of named groups",
    authorization: GroupRequired,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, TestAuthorization};
    use vespene_plugin_api::{AccessRequest, UserInfo};

    use super::{GroupRequired, ACTIONS, KINDS, NAME};

    fn user(groups: &[&str], superuser: bool) -> Option<UserInfo> {
        Some(UserInfo {
            id: 7,
            username: "someone".into(),
            superuser,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        })
    }

    /// The cast: a superuser in no group, members of dev, qa, ops, of dev and
    /// ops, of no group, and anonymous.
    fn who(name: &str) -> Option<UserInfo> {
        match name {
            "root" => user(&[], true),
            "dev" => user(&["dev"], false),
            "qa" => user(&["qa"], false),
            "ops" => user(&["ops"], false),
            "dev+ops" => user(&["dev", "ops"], false),
            "nobody" => user(&[], false),
            "anonymous" => None,
            _ => unreachable!("{name}"),
        }
    }

    const CAST: [&str; 7] = ["root", "dev", "qa", "ops", "dev+ops", "nobody", "anonymous"];

    fn request(user: Option<UserInfo>, kind: &str, action: &str) -> AccessRequest {
        let object = (action != "list" && action != "create")
            .then(|| json!({"id": 1, "created_by": 7, "owner_groups": ["dev"], "launch_groups": ["dev"]}));
        AccessRequest { user, action: action.into(), kind: kind.into(), object }
    }

    fn check(plugin: &TestAuthorization, req: &AccessRequest) -> bool {
        plugin.check(req).unwrap()
    }

    /// Who of the cast is allowed `action` on `kind`, space-separated.
    fn allowed(plugin: &TestAuthorization, kind: &str, action: &str) -> String {
        CAST.into_iter().filter(|w| check(plugin, &request(who(w), kind, action))).collect::<Vec<_>>().join(" ")
    }

    fn config() -> Value {
        json!({
            "project": {"create": ["dev", "qa"], "list": [], "start": ["ops"]},
            "build": {"view": ["dev"], "stop": ["ops"]},
            "worker_pool": {"list": ["ops"], "view": ["ops"]},
            "user": {"edit": []},
        })
    }

    const EVERYONE: &str = "root dev qa ops dev+ops nobody";

    #[test]
    fn each_rule() {
        let plugin = testkit::authorization::<GroupRequired>(config()).unwrap();
        let cases = [
            // A listed group is enough; superusers always pass.
            ("project", "create", "root dev qa dev+ops"),
            // [] is superusers only, and list is enforced.
            ("project", "list", "root"),
            ("project", "start", "root ops dev+ops"),
            // Unlisted actions of a listed kind are unrestricted.
            ("project", "view", EVERYONE),
            ("project", "edit", EVERYONE),
            ("project", "stop", EVERYONE),
            // stop is checked as stop, not as view.
            ("build", "view", "root dev dev+ops"),
            ("build", "stop", "root ops dev+ops"),
            ("build", "list", EVERYONE),
            ("worker_pool", "list", "root ops dev+ops"),
            ("worker_pool", "view", "root ops dev+ops"),
            ("worker_pool", "create", EVERYONE),
            ("user", "edit", "root"),
            ("user", "view", EVERYONE),
            // Unlisted kinds are unrestricted, known or not.
            ("pipeline", "delete", EVERYONE),
            ("artifact", "view", EVERYONE),
            ("project", "teleport", EVERYONE),
        ];
        for (kind, action, expected) in cases {
            assert_eq!(allowed(&plugin, kind, action), expected, "{action} {kind}");
        }
    }

    #[test]
    fn no_parameters_restrict_nothing_but_anonymous_requests() {
        for cfg in [Value::Null, json!({})] {
            let plugin = testkit::authorization::<GroupRequired>(cfg.clone()).unwrap();
            for kind in KINDS {
                for action in ACTIONS {
                    assert_eq!(allowed(&plugin, kind, action), EVERYONE, "{cfg}: {action} {kind}");
                }
            }
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        let plugin = testkit::authorization_from::<GroupRequired>("null").unwrap();
        for kind in KINDS {
            for action in ACTIONS {
                let raw_check = |w: &&str| {
                    let req = testkit::to_json(&request(who(w), kind, action));
                    plugin.check(req.as_rstr()).into_result().unwrap()
                };
                let who_may = CAST.into_iter().filter(raw_check).collect::<Vec<_>>().join(" ");
                assert_eq!(who_may, EVERYONE, "null: {action} {kind}");
            }
        }
    }

    #[test]
    fn every_kind_and_action_can_be_restricted() {
        for kind in KINDS {
            for action in ACTIONS {
                let cfg = json!({ kind: { action: ["qa"] } });
                let plugin = testkit::authorization::<GroupRequired>(cfg.clone()).unwrap();
                assert_eq!(allowed(&plugin, kind, action), "root qa", "{cfg}");
            }
        }
    }

    #[test]
    fn listings_are_all_or_nothing() {
        let plugin = testkit::authorization::<GroupRequired>(config()).unwrap();
        let candidates = [json!({"id": 1}), json!({"id": 2, "created_by": 9}), json!({"name": "no id"})];
        let listed =
            |who: &str, kind: &str| plugin.filter_list(&request(self::who(who), kind, "list"), &candidates).unwrap();
        let cases: [(&str, &str, &[i64]); 8] = [
            ("root", "project", &[1, 2]),
            ("dev", "project", &[]),
            ("ops", "worker_pool", &[1, 2]),
            ("dev", "worker_pool", &[]),
            ("dev", "build", &[1, 2]),
            ("nobody", "snippet", &[1, 2]),
            ("anonymous", "snippet", &[]),
            ("anonymous", "project", &[]),
        ];
        for (who, kind, expected) in cases {
            assert_eq!(listed(who, kind), expected, "{kind} listed to {who}");
        }
    }

    #[test]
    fn group_names_match_exactly() {
        let plugin = testkit::authorization::<GroupRequired>(json!({"project": {"create": ["dev"]}})).unwrap();
        for groups in [&["Dev"][..], &["dev "], &["developers"], &["de"]] {
            assert!(!check(&plugin, &request(user(groups, false), "project", "create")), "{groups:?}");
        }
    }

    #[test]
    fn configuration_errors_name_the_parameter() {
        let cases = [
            (
                json!("project"),
                format!("the parameters of authorization plugin {NAME} must be a table, not \"project\""),
            ),
            (
                json!({"projekt": {}}),
                format!("unknown kind 'projekt' for authorization plugin {NAME}: the kinds are {}", KINDS.join(", ")),
            ),
            // The original's class names get a hint.
            (
                json!({"workerpool": {"create": []}}),
                format!("unknown kind 'workerpool' for authorization plugin {NAME}: did you mean 'worker_pool'?"),
            ),
            (
                json!({"sshkey": {}}),
                format!("unknown kind 'sshkey' for authorization plugin {NAME}: did you mean 'ssh_key'?"),
            ),
            (
                json!({"Projects": {}}),
                format!("unknown kind 'Projects' for authorization plugin {NAME}: did you mean 'project'?"),
            ),
            (
                json!({"project": ["dev"]}),
                "parameter 'project' must be a table of actions and group lists, not [\"dev\"]".to_string(),
            ),
            (
                json!({"project": {"launch": ["dev"]}}),
                format!("unknown action 'launch' in parameter 'project': the actions are {}", ACTIONS.join(", ")),
            ),
            (
                json!({"project": {"starts": ["dev"]}}),
                "unknown action 'starts' in parameter 'project': did you mean 'start'?".to_string(),
            ),
            (
                json!({"project": {"create": "dev"}}),
                "parameter 'project.create' must be a list of group names, not \"dev\"".to_string(),
            ),
            (
                json!({"build": {"stop": null}}),
                "parameter 'build.stop' must be a list of group names, not null".to_string(),
            ),
            (
                json!({"build": {"stop": ["ops", 3]}}),
                "parameter 'build.stop' must list group names (non-empty strings), not 3".to_string(),
            ),
            (
                json!({"build": {"stop": [" "]}}),
                "parameter 'build.stop' must list group names (non-empty strings), not \" \"".to_string(),
            ),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::authorization::<GroupRequired>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
