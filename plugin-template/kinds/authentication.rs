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

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{
    export_plugin, params, plugin_name, Authentication, Kind, LoginIdentity, LoginRequest, LoginVerdict, PluginResult,
};

/// One account this plugin knows: a table of the `users` parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
struct Account {
    /// The environment variable holding the password.
    password_env: String,
    /// The Vespene groups the account belongs to.
    #[serde(default)]
    groups: Vec<String>,
    /// Whether it is a superuser.
    #[serde(default)]
    superuser: bool,
}

/// The example authentication plugin: accounts with passwords in environment
/// variables. Its one parameter, `users`, is read straight into it.
#[derive(Debug, Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
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
        let expected = std::env::var(&account.password_env).map_err(|_| {
            format!("environment variable {} (the password of {username}) is not set", account.password_env)
        })?;
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

impl Authentication for EnvAccounts {
    fn new(config: &Value) -> PluginResult<Self> {
        let accounts: EnvAccounts = params::parse(config, Kind::Authentication, plugin_name!())?;
        if accounts.users.is_empty() {
            return Err("parameter 'users' must name at least one user".to_string());
        }
        for (name, account) in &accounts.users {
            if account.password_env.is_empty() {
                return Err(format!("parameter 'users.{name}.password_env' must name an environment variable"));
            }
            if account.groups.iter().any(|g| g.trim().is_empty()) {
                return Err(format!("parameter 'users.{name}.groups' must list group names (non-empty strings)"));
            }
        }
        Ok(accounts)
    }

    fn authenticate(&self, request: &LoginRequest, password: &str) -> PluginResult<LoginVerdict> {
        self.check(&request.username, password)
    }
}

export_plugin! {
    description: "Example authentication: service accounts with passwords in environment variables",
    authentication: EnvAccounts,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit;
    use vespene_plugin_api::{plugin_name, LoginIdentity, LoginRequest, LoginVerdict, PluginResult};

    use super::EnvAccounts;

    /// Logs `username` in through the ABI, as the server does.
    fn login(config: &Value, username: &str, password: &str) -> PluginResult<LoginVerdict> {
        let plugin = testkit::authentication::<EnvAccounts>(config.clone())?;
        plugin.authenticate(&LoginRequest { username: username.into(), ..Default::default() }, password)
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
        let name = plugin_name!();
        let cases = [
            (json!({}), format!("parameter 'users' of authentication plugin {name} is required")),
            (json!({"users": {}}), "parameter 'users' must name at least one user".to_string()),
            (
                json!({"users": {"bot": {}}}),
                format!("parameter 'users.bot.password_env' of authentication plugin {name} is required"),
            ),
            (
                json!({"users": {"bot": {"password_env": ""}}}),
                "parameter 'users.bot.password_env' must name an environment variable".to_string(),
            ),
            (
                json!({"users": {"bot": {"password_env": "X", "group": []}}}),
                format!("unknown parameter 'users.bot.group' for authentication plugin {name}"),
            ),
            (
                json!({"users": {"bot": {"password_env": "X", "groups": ["ops", " "]}}}),
                "parameter 'users.bot.groups' must list group names (non-empty strings)".to_string(),
            ),
            (
                json!({"users": {"bot": {"password_env": "X", "superuser": 1}}}),
                format!(
                    "parameter 'users.bot.superuser' of authentication plugin {name}: \
                     invalid type: integer `1`, expected a boolean"
                ),
            ),
            (json!({"user": {}}), format!("unknown parameter 'user' for authentication plugin {name}")),
        ];
        for (config, expected) in cases {
            assert_eq!(testkit::authentication::<EnvAccounts>(config.clone()).err().unwrap(), expected, "{config}");
        }
    }
}
