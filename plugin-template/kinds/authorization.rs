//! An example **authorization** plugin: Vespene read-only for everyone but
//! the administrators.
//!
//! * Superusers and the users listed in `admins` may do everything.
//! * Every other logged-in user may only `list` and `view`, and sees every
//!   object in listings.
//! * Anonymous requests are refused, and their listings are empty.
//!
//! ```toml
//! [plugins.authorization.read_only]
//! library = "template"
//! admins = ["alice", "bob"]
//! ```
//!
//! Every configured authorization plugin must allow an action for it to
//! happen, so this one can be stacked on a finer-grained policy to freeze an
//! installation during a migration, say.
//!
//! To adapt it, change [`ReadOnlyPolicy::allows`]: the request names the user
//! (with their groups and superuser flag), the action (`list`, `view`,
//! `create`, `edit`, `delete`, `start`, `stop`), the object kind (`project`,
//! `build`, ...) and, except for `list` and `create`, the object with at least
//! its `id`, `created_by` and, where the kind has them, `owner_groups` and
//! `launch_groups`. Override `filter_list` when a listing must show only some
//! objects.

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, plugin_name, AccessRequest, Authorization, Kind, PluginResult};

/// The actions every logged-in user may take.
const READ_ACTIONS: &[&str] = &["list", "view"];

/// The example authorization plugin: read-only except for administrators.
/// Its one parameter, `admins`, is read straight into it.
#[derive(Debug, Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
pub struct ReadOnlyPolicy {
    /// Usernames that may do everything (none by default).
    #[serde(default)]
    admins: Vec<String>,
}

impl ReadOnlyPolicy {
    /// The policy itself.
    pub fn allows(&self, request: &AccessRequest) -> bool {
        match &request.user {
            None => false,
            Some(user) if user.superuser || self.admins.contains(&user.username) => true,
            Some(_) => READ_ACTIONS.contains(&request.action.as_str()),
        }
    }
}

impl Authorization for ReadOnlyPolicy {
    fn new(config: &Value) -> PluginResult<Self> {
        let policy: ReadOnlyPolicy = params::parse(config, Kind::Authorization, plugin_name!())?;
        if let Some(name) = policy.admins.iter().find(|n| n.trim().is_empty()) {
            return Err(format!("parameter 'admins' must list usernames (non-empty strings), not {name:?}"));
        }
        Ok(policy)
    }

    fn check(&self, request: &AccessRequest) -> PluginResult<bool> {
        Ok(self.allows(request))
    }

    fn filter_list(&self, request: &AccessRequest, candidates: &[Value]) -> PluginResult<Vec<i64>> {
        // Reading is open to every logged-in user: they see everything.
        if request.user.is_none() {
            return Ok(Vec::new());
        }
        Ok(candidates.iter().filter_map(|c| c.get("id").and_then(Value::as_i64)).collect())
    }
}

export_plugin! {
    description: "Example authorization: read-only for everyone but superusers and admins",
    authorization: ReadOnlyPolicy,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{self, TestAuthorization};
    use vespene_plugin_api::{plugin_name, AccessRequest, UserInfo};

    use super::ReadOnlyPolicy;

    const ACTIONS: [&str; 7] = ["list", "view", "create", "edit", "delete", "start", "stop"];

    fn policy() -> TestAuthorization {
        testkit::authorization::<ReadOnlyPolicy>(json!({"admins": ["alice"]})).unwrap()
    }

    fn user(username: &str, superuser: bool) -> Option<UserInfo> {
        Some(UserInfo { id: 3, username: username.into(), superuser, groups: vec!["dev".into()] })
    }

    fn request(user: Option<UserInfo>, action: &str) -> AccessRequest {
        let object = (action != "list" && action != "create").then(|| json!({"id": 9, "created_by": 3}));
        AccessRequest { user, action: action.into(), kind: "project".into(), object }
    }

    /// The actions `who` is allowed, through the ABI.
    fn allowed(who: Option<UserInfo>) -> Vec<&'static str> {
        let policy = policy();
        ACTIONS.into_iter().filter(|action| policy.check(&request(who.clone(), action)).unwrap()).collect()
    }

    #[test]
    fn admins_and_superusers_may_do_everything() {
        assert_eq!(allowed(user("alice", false)), ACTIONS);
        assert_eq!(allowed(user("root", true)), ACTIONS);
    }

    #[test]
    fn other_users_may_only_read() {
        assert_eq!(allowed(user("carol", false)), ["list", "view"]);
        // Being an admin is per username, not a substring or a group.
        assert_eq!(allowed(user("alice2", false)), ["list", "view"]);
    }

    #[test]
    fn anonymous_requests_are_refused() {
        assert!(allowed(None).is_empty());
    }

    #[test]
    fn listings_show_everything_to_logged_in_users_only() {
        let policy = policy();
        let candidates = [json!({"id": 1}), json!({"id": 5, "name": "x"}), json!({"name": "no id"})];
        let listed = |who| policy.filter_list(&request(who, "list"), &candidates).unwrap();
        assert_eq!(listed(user("carol", false)), [1, 5]);
        assert_eq!(listed(user("alice", false)), [1, 5]);
        assert!(listed(None).is_empty());
    }

    #[test]
    fn no_admins_is_valid() {
        let policy = testkit::authorization::<ReadOnlyPolicy>(json!({})).unwrap();
        assert!(!policy.check(&request(user("alice", false), "edit")).unwrap());
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let invalid = |parameter: &str, problem: &str| {
            format!("parameter '{parameter}' of authorization plugin {name}: invalid type: {problem}")
        };
        let cases = [
            (json!({"admins": "alice"}), invalid("admins", "string \"alice\", expected a sequence")),
            (json!({"admins": [7]}), invalid("admins[0]", "integer `7`, expected a string")),
            (
                json!({"admins": ["bob", " "]}),
                "parameter 'admins' must list usernames (non-empty strings), not \" \"".to_string(),
            ),
            (json!({"admin": []}), format!("unknown parameter 'admin' for authorization plugin {name}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::authorization::<ReadOnlyPolicy>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
