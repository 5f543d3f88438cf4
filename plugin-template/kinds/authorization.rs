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

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, AccessRequest, Authorization, Kind, PluginResult};

/// The plugin's name, for messages.
const NAME: &str = "template";

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["admins"];

/// The actions every logged-in user may take.
const READ_ACTIONS: &[&str] = &["list", "view"];

/// The example authorization plugin: read-only except for administrators.
#[derive(Debug)]
pub struct ReadOnlyPolicy {
    /// Usernames that may do everything.
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
        let params = params::table(config, Kind::Authorization, NAME, PARAMETERS)?;
        let admins = match params.get("admins") {
            None => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|name| match name.as_str() {
                    Some(n) if !n.trim().is_empty() => Ok(n.to_string()),
                    _ => Err(format!("parameter 'admins' must list usernames (non-empty strings), not {name}")),
                })
                .collect::<PluginResult<_>>()?,
            Some(other) => return Err(format!("parameter 'admins' must be a list of usernames, not {other}")),
        };
        Ok(ReadOnlyPolicy { admins })
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
    name: "template",
    description: "Example authorization: read-only for everyone but superusers and admins",
    authorization: ReadOnlyPolicy,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::abi::AuthorizationBox;
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{authorization_from, to_json};
    use vespene_plugin_api::{AccessRequest, UserInfo};

    use super::{ReadOnlyPolicy, NAME};

    const ACTIONS: [&str; 7] = ["list", "view", "create", "edit", "delete", "start", "stop"];

    fn policy() -> AuthorizationBox {
        authorization_from::<ReadOnlyPolicy>(r#"{"admins": ["alice"]}"#).unwrap()
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
        ACTIONS
            .into_iter()
            .filter(|action| policy.check(to_json(&request(who.clone(), action)).as_rstr()).into_result().unwrap())
            .collect()
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
        let candidates = to_json(&json!([{"id": 1}, {"id": 5, "name": "x"}, {"name": "no id"}]));
        let listed = |who| {
            let req = to_json(&request(who, "list"));
            policy.filter_list(req.as_rstr(), candidates.as_rstr()).into_result().unwrap().into_vec()
        };
        assert_eq!(listed(user("carol", false)), [1, 5]);
        assert_eq!(listed(user("alice", false)), [1, 5]);
        assert!(listed(None).is_empty());
    }

    #[test]
    fn no_admins_is_valid() {
        let policy = authorization_from::<ReadOnlyPolicy>("{}").unwrap();
        let edit = to_json(&request(user("alice", false), "edit"));
        assert!(!policy.check(edit.as_rstr()).into_result().unwrap());
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let cases = [
            (json!({"admins": "alice"}), "parameter 'admins' must be a list of usernames, not \"alice\"".to_string()),
            (json!({"admins": [7]}), "parameter 'admins' must list usernames (non-empty strings), not 7".to_string()),
            (
                json!({"admins": [" "]}),
                "parameter 'admins' must list usernames (non-empty strings), not \" \"".to_string(),
            ),
            (json!({"admin": []}), format!("unknown parameter 'admin' for authorization plugin {NAME}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(authorization_from::<ReadOnlyPolicy>(&cfg.to_string()).err().unwrap(), expected, "{cfg}");
        }
    }
}
