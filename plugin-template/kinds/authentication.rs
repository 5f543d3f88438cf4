//! An example **authentication** plugin: a short list of service accounts
//! whose passwords live in the server's environment, not in the settings.
//!
//! ```toml
//! [plugins.authentication.robots]
//! library = "template"
//! users = { deploy-bot = { password_env = "DEPLOY_BOT_PASSWORD", groups = ["deployers"] } }
//!
//! [authentication]
//! order = ["local", "robots"]
//! ```
//!
//! On the first accepted login the server creates the account `deploy-bot`,
//! owned by this entry, and puts it in the group `deployers` (created if
//! missing). On every login it syncs the groups this entry names and the
//! superuser flag (`superuser = true` in a user's table; `false` by default).
//!
//! To adapt it, change [`EnvAccounts::check`]: answer
//! [`LoginVerdict::Rejected`] for an unknown user or a wrong password, and an
//! error only when the place passwords are checked cannot be reached (the
//! server then says the source is unavailable). Never put the password into
//! an answer, an error or a log line.

use std::collections::BTreeMap;

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, Authentication, Kind, LoginIdentity, LoginRequest, LoginVerdict, PluginResult,
};

/// The plugin's name, for messages.
const NAME: &str = "template";

/// One account this plugin knows.
#[derive(Debug, Clone)]
struct Account {
    /// The environment variable holding the password.
    password_env: String,
    /// The Vespene groups the account belongs to.
    groups: Vec<String>,
    /// Whether it is a superuser.
    superuser: bool,
}

/// The example authentication plugin: accounts with passwords in environment variables.
#[derive(Debug)]
pub struct EnvAccounts {
    users: BTreeMap<String, Account>,
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl EnvAccounts {
    /// The check itself.
    pub fn check(&self, username: &str, password: &str) -> PluginResult<LoginVerdict> {
        let Some(account) = self.users.get(username) else {
            return Ok(LoginVerdict::Rejected { reason: "not one of this plugin's users".into() });
        };
        let expected = std::env::var(&account.password_env)
            .map_err(|_| format!("environment variable {} (the password of {username}) is not set", account.password_env))?;
        if expected.is_empty() || !same(expected.as_bytes(), password.as_bytes()) {
            return Ok(LoginVerdict::Rejected { reason: "wrong password".into() });
        }
        Ok(LoginVerdict::Accepted(LoginIdentity {
            groups: account.groups.clone(),
            superuser: account.superuser,
            ..Default::default()
        }))
    }
}

fn account(name: &str, value: &Value) -> PluginResult<Account> {
    let key = |k: &str| format!("parameter 'users.{name}.{k}'");
    let table = value.as_object().ok_or_else(|| format!("parameter 'users.{name}' must be a table, not {value}"))?;
    if let Some(unknown) = table.keys().find(|k| !["password_env", "groups", "superuser"].contains(&k.as_str())) {
        return Err(format!("unknown {} (known: password_env, groups, superuser)", key(unknown)));
    }
    let password_env = match table.get("password_env") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(format!("{} (an environment variable name) is required", key("password_env"))),
    };
    let groups = match table.get("groups") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|g| g.as_str().filter(|s| !s.trim().is_empty()).map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("{} must list group names (non-empty strings)", key("groups")))?,
        Some(other) => return Err(format!("{} must be a list, not {other}", key("groups"))),
    };
    let superuser = match table.get("superuser") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("{} must be true or false, not {other}", key("superuser"))),
    };
    Ok(Account { password_env, groups, superuser })
}

impl Authentication for EnvAccounts {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Authentication, NAME, &["users"])?;
        let users = match params.get("users") {
            None => return Err("parameter 'users' (a table of users) is required".into()),
            Some(Value::Object(users)) if !users.is_empty() => {
                users.iter().map(|(name, v)| Ok((name.clone(), account(name, v)?))).collect::<PluginResult<_>>()?
            }
            Some(other) => return Err(format!("parameter 'users' must be a table of at least one user, not {other}")),
        };
        Ok(EnvAccounts { users })
    }

    fn authenticate(&self, request: &LoginRequest, password: &str) -> PluginResult<LoginVerdict> {
        self.check(&request.username, password)
    }
}

export_plugin! {
    name: "template",
    description: "Example authentication: service accounts with passwords in environment variables",
    authentication: EnvAccounts,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{self, json};
    use vespene_plugin_api::testkit::{authentication_from, to_json};
    use vespene_plugin_api::{LoginIdentity, LoginRequest, LoginVerdict};

    use super::{EnvAccounts, NAME};

    /// Logs `username` in through the ABI, as the server does.
    fn login(config: &serde_json::Value, username: &str, password: &str) -> Result<LoginVerdict, String> {
        let plugin = authentication_from::<EnvAccounts>(&config.to_string())?;
        let request = to_json(&LoginRequest { username: username.into(), ..Default::default() });
        let answer = plugin.authenticate(request.as_rstr(), password.into()).into_result()?;
        Ok(serde_json::from_str(&answer).unwrap())
    }

    #[test]
    fn the_right_password_logs_in_with_the_configured_groups() {
        std::env::set_var("TEMPLATE_TEST_BOT_PASSWORD", "s3cret-bot");
        let config = json!({"users": {"bot": {"password_env": "TEMPLATE_TEST_BOT_PASSWORD", "groups": ["deployers"]}}});
        let accepted = login(&config, "bot", "s3cret-bot").unwrap();
        let expected = LoginIdentity { groups: vec!["deployers".into()], ..Default::default() };
        assert_eq!(accepted, LoginVerdict::Accepted(expected));
        for (user, password) in [("bot", "s3cret-bo"), ("bot", ""), ("other", "s3cret-bot")] {
            assert!(matches!(login(&config, user, password).unwrap(), LoginVerdict::Rejected { .. }), "{user}");
        }
    }

    #[test]
    fn a_missing_password_variable_is_an_error_naming_it() {
        let config = json!({"users": {"bot": {"password_env": "TEMPLATE_TEST_UNSET_VARIABLE"}}});
        let error = login(&config, "bot", "anything").unwrap_err();
        assert_eq!(error, "environment variable TEMPLATE_TEST_UNSET_VARIABLE (the password of bot) is not set");
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let cases = [
            (json!({}), "parameter 'users' (a table of users) is required".to_string()),
            (json!({"users": {}}), "parameter 'users' must be a table of at least one user, not {}".into()),
            (
                json!({"users": {"bot": {}}}),
                "parameter 'users.bot.password_env' (an environment variable name) is required".into(),
            ),
            (
                json!({"users": {"bot": {"password_env": "X", "group": []}}}),
                "unknown parameter 'users.bot.group' (known: password_env, groups, superuser)".into(),
            ),
            (
                json!({"users": {"bot": {"password_env": "X", "superuser": 1}}}),
                "parameter 'users.bot.superuser' must be true or false, not 1".into(),
            ),
            (json!({"user": {}}), format!("unknown parameter 'user' for authentication plugin {NAME}")),
        ];
        for (config, expected) in cases {
            assert_eq!(authentication_from::<EnvAccounts>(&config.to_string()).err().unwrap(), expected, "{config}");
        }
    }
}
