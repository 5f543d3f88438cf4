//! The `ldap` authentication plugin: checks a username and password against
//! an LDAP directory and maps the user's directory groups to Vespene groups.
//!
//! A login is a search and a bind: find the user's entry under `base_dn` with
//! `user_filter` (bound as `bind_dn` when given, anonymously otherwise), bind
//! as that entry with the password, then list the groups whose
//! `group_filter` matches the entry. Only groups named in `group_map` become
//! Vespene groups; members of a `superuser_groups` group are superusers, and
//! nobody else is.
//!
//! ```toml
//! [plugins.authentication.ldap]
//! library = "ldap"
//! url = "ldap://ldap.example.com"
//! base_dn = "ou=people,dc=example,dc=com"
//! group_base_dn = "ou=groups,dc=example,dc=com"
//! group_map = { developers = "dev", operators = "ops" }
//! superuser_groups = ["ci-admins"]
//! ```
//!
//! Every value taken from the username (and the entry's DN) is escaped
//! before it goes into a filter, so `*)(uid=*` is looked up as that literal
//! name. An empty password is refused before any bind: LDAP treats a simple
//! bind with an empty password as an anonymous bind, which succeeds.
//!
//! The connection uses the synchronous ldap3 client, which runs a private
//! runtime: the server calls this plugin on its blocking pool.

use std::collections::BTreeMap;
use std::time::Duration;

use ldap3::{ldap_escape, LdapConn, LdapConnSettings, Scope, SearchEntry};
use vespene_plugin_api::serde_json::{Map, Value};
use vespene_plugin_api::{
    export_plugin, params, Authentication, Kind, LoginIdentity, LoginRequest, LoginVerdict, PluginResult,
};

/// The plugin's name, for messages.
const NAME: &str = "ldap";

/// The parameters this plugin takes.
const PARAMETERS: &[&str] = &[
    "url",
    "base_dn",
    "bind_dn",
    "bind_password",
    "user_filter",
    "group_base_dn",
    "group_filter",
    "group_name_attribute",
    "group_map",
    "superuser_groups",
    "starttls",
    "timeout_seconds",
    "email_attribute",
    "first_name_attribute",
    "last_name_attribute",
];

/// LDAP's result code for a wrong password (or an unknown DN) in a bind.
const INVALID_CREDENTIALS: u32 = 49;

/// The `ldap` plugin's settings, checked.
#[derive(Debug, Clone)]
pub struct Ldap {
    url: String,
    base_dn: String,
    /// The service account used to search, with its password; `None` for an anonymous search.
    service: Option<(String, String)>,
    user_filter: String,
    group_base_dn: String,
    group_filter: String,
    group_name_attribute: String,
    /// Directory group name -> Vespene group name.
    group_map: BTreeMap<String, String>,
    superuser_groups: Vec<String>,
    starttls: bool,
    timeout: Duration,
    email_attribute: String,
    first_name_attribute: String,
    last_name_attribute: String,
}

/// A string parameter, or `default` when absent.
fn text(params: &Map<String, Value>, name: &str, default: Option<&str>) -> PluginResult<String> {
    match params.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("parameter '{name}' must not be empty")),
        Some(other) => Err(format!("parameter '{name}' must be a string, not {other}")),
        None => default.map(str::to_string).ok_or_else(|| format!("parameter '{name}' (a string) is required")),
    }
}

impl Ldap {
    /// Checks the settings parameters.
    pub fn from_params(config: &Value) -> PluginResult<Ldap> {
        let params = params::table(config, Kind::Authentication, NAME, PARAMETERS)?;
        let url = text(params, "url", None)?;
        if !(url.starts_with("ldap://") || url.starts_with("ldaps://") || url.starts_with("ldapi://")) {
            return Err(format!("parameter 'url' must start with ldap://, ldaps:// or ldapi://, not '{url}'"));
        }
        let base_dn = text(params, "base_dn", None)?;
        let service = match (params.get("bind_dn"), params.get("bind_password")) {
            (None, None) => None,
            (Some(_), None) => return Err("parameter 'bind_password' is required with 'bind_dn'".into()),
            (None, Some(_)) => return Err("parameter 'bind_password' needs 'bind_dn'".into()),
            (Some(_), Some(_)) => Some((text(params, "bind_dn", None)?, text(params, "bind_password", None)?)),
        };
        let user_filter = text(params, "user_filter", Some("(uid={username})"))?;
        if !user_filter.contains("{username}") {
            return Err(format!("parameter 'user_filter' must contain {{username}}, not '{user_filter}'"));
        }
        let group_base_dn = text(params, "group_base_dn", Some(&base_dn))?;
        let group_filter =
            text(params, "group_filter", Some("(|(member={dn})(uniqueMember={dn})(memberUid={username}))"))?;
        let group_map = match params.get("group_map") {
            None => BTreeMap::new(),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(from, to)| match to.as_str() {
                    Some(to) if !to.trim().is_empty() => Ok((from.clone(), to.to_string())),
                    _ => Err(format!(
                        "parameter 'group_map' must map directory group names to Vespene group names \
                         (non-empty strings); '{from}' maps to {to}"
                    )),
                })
                .collect::<PluginResult<_>>()?,
            Some(other) => return Err(format!("parameter 'group_map' must be a table, not {other}")),
        };
        let superuser_groups = match params.get("superuser_groups") {
            None => Vec::new(),
            Some(Value::Array(names)) => names
                .iter()
                .map(|n| match n.as_str() {
                    Some(s) if !s.trim().is_empty() => Ok(s.to_string()),
                    _ => {
                        Err(format!("parameter 'superuser_groups' must list group names (non-empty strings), not {n}"))
                    }
                })
                .collect::<PluginResult<_>>()?,
            Some(other) => return Err(format!("parameter 'superuser_groups' must be a list, not {other}")),
        };
        let starttls = match params.get("starttls") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(format!("parameter 'starttls' must be true or false, not {other}")),
        };
        if starttls && !url.starts_with("ldap://") {
            return Err("parameter 'starttls' needs an ldap:// url (ldaps:// is already encrypted)".into());
        }
        let timeout = match params.get("timeout_seconds") {
            None => 5,
            Some(v) => match v.as_u64() {
                Some(n @ 1..=300) => n,
                _ => return Err(format!("parameter 'timeout_seconds' must be a whole number from 1 to 300, not {v}")),
            },
        };
        Ok(Ldap {
            url,
            group_base_dn,
            base_dn,
            service,
            user_filter,
            group_filter,
            group_name_attribute: text(params, "group_name_attribute", Some("cn"))?,
            group_map,
            superuser_groups,
            starttls,
            timeout: Duration::from_secs(timeout),
            email_attribute: text(params, "email_attribute", Some("mail"))?,
            first_name_attribute: text(params, "first_name_attribute", Some("givenName"))?,
            last_name_attribute: text(params, "last_name_attribute", Some("sn"))?,
        })
    }

    /// The filter that finds `username`'s entry, the name escaped.
    pub fn user_filter_for(&self, username: &str) -> String {
        self.user_filter.replace("{username}", &ldap_escape(username))
    }

    /// The filter that finds the groups of the entry `dn` (`username`), both escaped.
    pub fn group_filter_for(&self, dn: &str, username: &str) -> String {
        self.group_filter.replace("{dn}", &ldap_escape(dn)).replace("{username}", &ldap_escape(username))
    }

    /// The Vespene groups and superuser flag for the directory groups `names`.
    pub fn map_groups(&self, names: &[String]) -> (Vec<String>, bool) {
        let mut groups: Vec<String> = names.iter().filter_map(|n| self.group_map.get(n).cloned()).collect();
        groups.sort();
        groups.dedup();
        let superuser = names.iter().any(|n| self.superuser_groups.contains(n));
        (groups, superuser)
    }

    fn connect(&self) -> PluginResult<LdapConn> {
        let settings = LdapConnSettings::new().set_conn_timeout(self.timeout).set_starttls(self.starttls);
        LdapConn::with_settings(settings, &self.url)
            .map_err(|e| format!("cannot reach the LDAP directory at {}: {e}", self.url))
    }

    /// Binds as the service account, if one is configured (searches run as it).
    fn bind_service(&self, ldap: &mut LdapConn) -> PluginResult<()> {
        if let Some((dn, password)) = &self.service {
            ldap.with_timeout(self.timeout)
                .simple_bind(dn, password)
                .and_then(|r| r.success())
                .map_err(|e| format!("the search bind as '{dn}' failed (check bind_dn and bind_password): {e}"))?;
        }
        Ok(())
    }

    fn search(
        &self,
        ldap: &mut LdapConn,
        base: &str,
        filter: &str,
        attrs: Vec<&str>,
    ) -> PluginResult<Vec<SearchEntry>> {
        let (entries, _) = ldap
            .with_timeout(self.timeout)
            .search(base, Scope::Subtree, filter, attrs)
            .and_then(|r| r.success())
            .map_err(|e| format!("the search under '{base}' failed: {e}"))?;
        Ok(entries.into_iter().map(SearchEntry::construct).collect())
    }

    /// The whole login, on an open connection.
    fn check(&self, ldap: &mut LdapConn, username: &str, password: &str) -> PluginResult<LoginVerdict> {
        self.bind_service(ldap)?;
        let attrs =
            vec![self.email_attribute.as_str(), self.first_name_attribute.as_str(), self.last_name_attribute.as_str()];
        let mut found = self.search(ldap, &self.base_dn, &self.user_filter_for(username), attrs)?;
        let entry = match found.len() {
            0 => return Ok(LoginVerdict::Rejected { reason: "no such user in the directory".into() }),
            1 => found.remove(0),
            n => {
                return Ok(LoginVerdict::Rejected {
                    reason: format!("{n} directory entries match the user filter; refusing an ambiguous login"),
                })
            }
        };
        let bind = ldap
            .with_timeout(self.timeout)
            .simple_bind(&entry.dn, password)
            .map_err(|e| format!("the bind failed: {e}"))?;
        match bind.rc {
            0 => {}
            INVALID_CREDENTIALS => return Ok(LoginVerdict::Rejected { reason: "wrong password".into() }),
            rc => return Err(format!("the bind as '{}' failed with LDAP result {rc}: {}", entry.dn, bind.text)),
        }
        // Groups are read as the search identity again when there is one.
        self.bind_service(ldap)?;
        let name_attr = self.group_name_attribute.as_str();
        let groups =
            self.search(ldap, &self.group_base_dn, &self.group_filter_for(&entry.dn, username), vec![name_attr])?;
        let names: Vec<String> = groups.iter().filter_map(|g| attribute(g, name_attr)).collect();
        let (groups, superuser) = self.map_groups(&names);
        Ok(LoginVerdict::Accepted(LoginIdentity {
            groups,
            superuser,
            email: attribute(&entry, &self.email_attribute).unwrap_or_default(),
            first_name: attribute(&entry, &self.first_name_attribute).unwrap_or_default(),
            last_name: attribute(&entry, &self.last_name_attribute).unwrap_or_default(),
            ..Default::default()
        }))
    }
}

/// The first value of an attribute, its name matched without regard to case.
fn attribute(entry: &SearchEntry, name: &str) -> Option<String> {
    entry.attrs.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.first().cloned())
}

impl Authentication for Ldap {
    fn new(config: &Value) -> PluginResult<Self> {
        Ldap::from_params(config)
    }

    fn authenticate(&self, request: &LoginRequest, password: &str) -> PluginResult<LoginVerdict> {
        if password.is_empty() {
            // A simple bind with no password is an anonymous bind: it "succeeds".
            return Ok(LoginVerdict::Rejected { reason: "empty password".into() });
        }
        if request.username.is_empty() {
            return Ok(LoginVerdict::Rejected { reason: "empty username".into() });
        }
        let mut ldap = self.connect()?;
        let verdict = self.check(&mut ldap, &request.username, password);
        // Closing is a courtesy to the directory; its failure changes nothing.
        let _ = ldap.unbind();
        verdict
    }
}

export_plugin! {
    name: "ldap",
    description: "Checks logins against an LDAP directory and maps its groups",
    authentication: Ldap,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit;
    use vespene_plugin_api::{LoginRequest, LoginVerdict};

    use super::*;

    fn ldap(extra: Value) -> Ldap {
        let mut cfg = json!({"url": "ldap://127.0.0.1:1", "base_dn": "dc=example,dc=com"});
        cfg.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        Ldap::from_params(&cfg).unwrap()
    }

    #[test]
    fn filter_values_from_the_username_are_escaped() {
        let l = ldap(json!({}));
        assert_eq!(l.user_filter_for("alice"), "(uid=alice)");
        assert_eq!(l.user_filter_for("*)(uid=*"), r"(uid=\2a\29\28uid=\2a)");
        assert_eq!(l.user_filter_for("a\\b\0"), r"(uid=a\5cb\00)");
        assert_eq!(
            l.group_filter_for("uid=x)(cn=*,dc=example", "x*"),
            r"(|(member=uid=x\29\28cn=\2a,dc=example)(uniqueMember=uid=x\29\28cn=\2a,dc=example)(memberUid=x\2a))"
        );
    }

    #[test]
    fn only_mapped_groups_count_and_superuser_needs_a_superuser_group() {
        let l = ldap(
            json!({"group_map": {"devs": "dev", "ops": "ops", "dev-team": "dev"}, "superuser_groups": ["admins"]}),
        );
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(l.map_groups(&names(&["devs", "dev-team", "unmapped"])), (vec!["dev".to_string()], false));
        assert_eq!(l.map_groups(&names(&["admins"])), (vec![], true));
        assert_eq!(l.map_groups(&names(&[])), (vec![], false));
    }

    #[test]
    fn an_empty_password_is_refused_without_asking_the_directory() {
        // Port 1 has no directory: an attempt to connect would be an error, not a refusal.
        let plugin = testkit::authentication::<Ldap>(json!({"url": "ldap://127.0.0.1:1", "base_dn": "dc=x"})).unwrap();
        let request = LoginRequest { username: "alice".into(), ..Default::default() };
        let verdict = plugin.authenticate(&request, "").unwrap();
        assert_eq!(verdict, LoginVerdict::Rejected { reason: "empty password".into() });
    }

    #[test]
    fn an_unreachable_directory_is_an_error_naming_it() {
        let config = json!({"url": "ldap://127.0.0.1:1", "base_dn": "dc=x", "timeout_seconds": 2});
        let plugin = testkit::authentication::<Ldap>(config).unwrap();
        let request = LoginRequest { username: "alice".into(), ..Default::default() };
        let error = plugin.authenticate(&request, "secret-password").unwrap_err();
        assert!(error.starts_with("cannot reach the LDAP directory at ldap://127.0.0.1:1"), "{error}");
        assert!(!error.contains("secret-password"), "{error}");
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let base = json!({"url": "ldap://h", "base_dn": "dc=x"});
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            c
        };
        let cases = [
            (json!({"base_dn": "dc=x"}), "parameter 'url' (a string) is required".to_string()),
            (json!({"url": "http://h", "base_dn": "dc=x"}), "parameter 'url' must start with ldap://, ldaps:// or ldapi://, not 'http://h'".into()),
            (json!({"url": "ldap://h"}), "parameter 'base_dn' (a string) is required".into()),
            (with("bind_dn", json!("cn=svc")), "parameter 'bind_password' is required with 'bind_dn'".into()),
            (with("user_filter", json!("(uid=alice)")), "parameter 'user_filter' must contain {username}, not '(uid=alice)'".into()),
            (with("group_map", json!(["a"])), "parameter 'group_map' must be a table, not [\"a\"]".into()),
            (
                with("group_map", json!({"devs": 3})),
                "parameter 'group_map' must map directory group names to Vespene group names (non-empty strings); 'devs' maps to 3".into(),
            ),
            (with("superuser_groups", json!("admins")), "parameter 'superuser_groups' must be a list, not \"admins\"".into()),
            (with("timeout_seconds", json!(0)), "parameter 'timeout_seconds' must be a whole number from 1 to 300, not 0".into()),
            (with("starttls", json!("yes")), "parameter 'starttls' must be true or false, not \"yes\"".into()),
            (with("base_dn", json!("")), "parameter 'base_dn' must not be empty".into()),
            (with("bind_passwd", json!("x")), "unknown parameter 'bind_passwd' for authentication plugin ldap".into()),
        ];
        for (cfg, expected) in cases {
            assert_eq!(Ldap::from_params(&cfg).unwrap_err(), expected, "{cfg}");
        }
    }
}
