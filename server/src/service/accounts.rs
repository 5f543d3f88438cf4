//! Checking a username and password: local accounts and the authentication
//! plugins, asked in `authentication.order` until one accepts.
//!
//! An account belongs to the source that created it (`users.auth_source`), so
//! a source is only asked about a name that has no account yet or whose
//! account is its own: a password typed for a local account never reaches a
//! directory, and a directory that knows a local account's name cannot log
//! into it (the local account wins). A plugin's error (its directory is down
//! or misconfigured) is logged with the source's name and the chain goes on;
//! if no source accepted, the answer says which source was unavailable.
//! Throttling stays with the callers (the API and UI login handlers), which
//! treat every source alike.
//!
//! Also here: sessions and API tokens, the two ways a request proves who
//! it is for.

use std::net::IpAddr;

use abi_stable::std_types::RStr;
use vespene_plugin_api::{LoginRequest, LoginVerdict};

use serde_json::json;

use super::{audit, Error, Principal, Service};
use crate::settings::LOCAL_SOURCE;
use crate::store::{ApiToken, AuditActor, AuditEntry, AuditObject, ExternalLogin, Id, User};

/// What a login came to.
#[derive(Debug)]
pub enum LoginOutcome {
    /// The password is right.
    Accepted {
        /// The account, synced with what its source says.
        user: User,
        /// The source that checked it (`local` or a plugin entry's name).
        source: String,
    },
    /// No source accepted the username and password.
    Refused,
    /// No source accepted, and `sources` could not be asked (their errors
    /// are in the server's log).
    Unavailable {
        /// The sources that failed.
        sources: Vec<String>,
        /// Whether local accounts are among the sources (they still work).
        local_works: bool,
    },
}

impl LoginOutcome {
    /// The failure's reason as the audit log records it.
    pub fn audit_reason(&self) -> String {
        match self {
            LoginOutcome::Unavailable { sources, .. } => {
                format!("authentication source unavailable: {}", quoted(sources))
            }
            _ => "wrong username or password".into(),
        }
    }

    /// The failure as the person logging in reads it in the API: nothing
    /// about which sources know the name, but a source being down is said plainly.
    pub fn message(&self) -> String {
        match self {
            LoginOutcome::Unavailable { sources, local_works } => format!(
                "cannot check this login now: the authentication source {} is unavailable (the server's log \
                 says why){}",
                quoted(sources),
                if *local_works { "; local accounts can still log in" } else { "" }
            ),
            _ => "wrong username or password".into(),
        }
    }

    /// [`LoginOutcome::message`] as a sentence, for the login page.
    pub fn sentence(&self) -> String {
        let message = self.message();
        let mut chars = message.chars();
        let first = chars.next().map(|c| c.to_uppercase().collect::<String>()).unwrap_or_default();
        format!("{first}{}.", chars.as_str())
    }
}

fn quoted(sources: &[String]) -> String {
    sources.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

impl Service {
    /// Checks a login against every source in order (see the module doc).
    pub async fn check_login(
        &self,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<LoginOutcome, Error> {
        let owner = self.store().account_source(username).await?;
        let mut unavailable = Vec::new();
        let sources = self.settings().authentication.sources(&self.settings().plugins);
        let local_works = sources.iter().any(|s| s == LOCAL_SOURCE);
        for source in sources {
            // Only the source an account belongs to may check its password.
            if owner.as_deref().is_some_and(|o| o != source) {
                continue;
            }
            if source == LOCAL_SOURCE {
                if let Some(user) = self.store().verify_password(username, password).await? {
                    return Ok(LoginOutcome::Accepted { user, source });
                }
                continue;
            }
            match self.ask_plugin(&source, username, password, client).await {
                Ok(PluginAnswer::Accepted(user)) => return Ok(LoginOutcome::Accepted { user: *user, source }),
                Ok(PluginAnswer::Refused { stop: true }) => return Ok(LoginOutcome::Refused),
                Ok(PluginAnswer::Refused { stop: false }) => {}
                Err(e) => {
                    // The error names the directory's trouble, never the password.
                    tracing::error!(source = %source, username = %username, "authentication source '{source}' is unavailable: {e}");
                    crate::metrics::plugin_error(&source, "authentication");
                    unavailable.push(source);
                }
            }
        }
        Ok(if unavailable.is_empty() {
            LoginOutcome::Refused
        } else {
            LoginOutcome::Unavailable { sources: unavailable, local_works }
        })
    }

    /// Asks one authentication plugin, and records an accepted login.
    async fn ask_plugin(
        &self,
        source: &str,
        username: &str,
        password: &str,
        client: Option<IpAddr>,
    ) -> Result<PluginAnswer, String> {
        // A name that cannot be an account never reaches a directory (its
        // characters include every LDAP filter metacharacter).
        if let Err(e) = crate::store::validate::username("username", username) {
            tracing::info!(source = %source, "login for an invalid username not sent to '{source}': {e}");
            return Ok(PluginAnswer::Refused { stop: false });
        }
        // An empty password is an unauthenticated bind in LDAP, which
        // succeeds: no plugin ever sees one.
        if password.is_empty() {
            return Ok(PluginAnswer::Refused { stop: false });
        }
        let plugin = self
            .registry()
            .authentication(source)
            .ok_or_else(|| format!("no authentication plugin '{source}' is loaded"))?;
        let request = LoginRequest {
            username: username.to_string(),
            client_address: client.map(|c| c.to_string()),
            ..Default::default()
        };
        let request = serde_json::to_string(&request).map_err(|e| e.to_string())?;
        let password = password.to_string();
        let answer = tokio::task::spawn_blocking(move || {
            plugin
                .authenticate(RStr::from(request.as_str()), RStr::from(password.as_str()))
                .into_result()
                .map(String::from)
                .map_err(String::from)
        })
        .await
        .map_err(|e| format!("the plugin's call did not finish: {e}"))??;
        let verdict: LoginVerdict = serde_json::from_str(&answer)
            .map_err(|e| format!("the plugin answered something that is not a verdict: {e}"))?;
        let identity = match verdict {
            LoginVerdict::Rejected { reason } => {
                tracing::info!(source = %source, username = %username, "login rejected by '{source}': {reason}");
                return Ok(PluginAnswer::Refused { stop: false });
            }
            LoginVerdict::Accepted(identity) => identity,
        };
        match self.store().external_login(source, username, &identity).await.map_err(|e| e.to_string())? {
            ExternalLogin::Ready { user, created, skipped_groups } => {
                if created {
                    tracing::info!(source = %source, "created account '{username}' on its first login through '{source}'");
                }
                for skipped in skipped_groups {
                    tracing::warn!(source = %source, "group {skipped} named by '{source}' for '{username}' was not synced");
                }
                Ok(PluginAnswer::Accepted(Box::new(user)))
            }
            ExternalLogin::OwnedElsewhere(owner) => {
                // Only a race with another login can get here (the owner was
                // looked up first); the account still is not taken over.
                tracing::warn!(source = %source, "'{source}' accepted '{username}', whose account belongs to '{owner}': not taken over");
                Ok(PluginAnswer::Refused { stop: false })
            }
            ExternalLogin::Inactive => {
                tracing::info!(source = %source, "'{source}' accepted '{username}', whose account is deactivated");
                Ok(PluginAnswer::Refused { stop: true })
            }
            ExternalLogin::InvalidName(why) => {
                tracing::warn!(source = %source, "'{source}' accepted '{username}', which cannot be an account name: {why}");
                Ok(PluginAnswer::Refused { stop: false })
            }
        }
    }
}

/// One plugin's part in a login.
enum PluginAnswer {
    /// It accepted, and the account is ready (boxed: a user is large).
    Accepted(Box<User>),
    /// It did not accept; `stop` when no other source may try (a
    /// deactivated account).
    Refused {
        /// Whether the chain ends here.
        stop: bool,
    },
}

/// How long a login lasts, in seconds.
pub const SESSION_TTL_SECS: i64 = 14 * 24 * 3600;

/// Longest lifetime an API token may be given, in days.
pub const MAX_TOKEN_DAYS: i64 = 36_500;

impl Service {
    /// The user a bearer API token stands for; unknown, expired and revoked
    /// tokens are refused.
    pub async fn token_principal(&self, token: &str) -> Result<Principal, Error> {
        match self.store().authenticate_token(token).await? {
            Some((user, groups)) => Ok(Principal::Token { user, token: token.to_string(), groups: groups.into() }),
            None => Err(Error::new(super::Failure::Unauthenticated, "the API token is unknown or revoked")),
        }
    }

    /// The session `sid` names, if it is live.
    pub async fn session_principal(&self, sid: &str) -> Result<Option<Principal>, Error> {
        Ok(self.store().session_user(sid).await?.map(|user| Principal::Session { user, sid: sid.to_string() }))
    }

    /// Starts a session for a login `source` accepted, recorded in the audit
    /// log with the way it came (`via`: "api" or "ui"); answers the session id.
    pub async fn start_session(
        &self,
        user: &User,
        source: &str,
        via: &str,
        client: Option<IpAddr>,
    ) -> Result<String, Error> {
        let record = AuditEntry {
            actor: AuditActor::user(user, client),
            action: "login".into(),
            object: AuditObject::new("user", Some(user.id), user.username.clone()),
            details: json!({ "via": via, "source": source }),
        };
        let ttl = chrono::Duration::seconds(SESSION_TTL_SECS);
        Ok(self.store().create_session_audited(user.id, ttl, Some(&record)).await?)
    }

    /// Ends the principal's session, if it is one.
    pub async fn end_session(&self, principal: &Principal) -> Result<(), Error> {
        if let Principal::Session { sid, .. } = principal {
            self.store().delete_session(sid).await?;
        }
        Ok(())
    }

    /// The caller's own API tokens.
    pub async fn list_tokens(&self, principal: &Principal) -> Result<Vec<ApiToken>, Error> {
        let user = principal.require()?;
        Ok(self.store().list_api_tokens(user.id).await?)
    }

    /// A new API token for the caller, valid `days` (the settings' default
    /// when `None`); answers its record and the token, shown this once.
    pub async fn create_token(
        &self,
        principal: &Principal,
        client: Option<IpAddr>,
        name: &str,
        days: Option<i64>,
    ) -> Result<(ApiToken, String), Error> {
        let user = principal.require()?;
        let days = match days {
            None => self.settings().server.token_expiry_days as i64,
            Some(d) if (1..=MAX_TOKEN_DAYS).contains(&d) => d,
            Some(d) => {
                return Err(Error::field(
                    "expires_in_days",
                    format!("'expires_in_days' must be a whole number of days from 1 to {MAX_TOKEN_DAYS}, got {d}"),
                ))
            }
        };
        let ttl = (days > 0).then(|| chrono::Duration::days(days));
        let actor = audit::actor(principal, client);
        let record = |token: &ApiToken| AuditEntry {
            actor,
            action: "token.create".into(),
            object: AuditObject::new("token", Some(token.id), name),
            details: json!({ "expires_in_days": (days > 0).then_some(days) }),
        };
        Ok(self.store().create_api_token_audited(user.id, name, ttl, record).await?)
    }

    /// Revokes one of the caller's own API tokens.
    pub async fn revoke_token(&self, principal: &Principal, client: Option<IpAddr>, id: Id) -> Result<(), Error> {
        let user = principal.require()?;
        let Some(token) = self.store().list_api_tokens(user.id).await?.into_iter().find(|t| t.id == id) else {
            return Err(Error::not_found(&format!("token {id}")));
        };
        let record = AuditEntry {
            actor: audit::actor(principal, client),
            action: "token.revoke".into(),
            object: AuditObject::new("token", Some(id), token.name),
            details: json!({}),
        };
        self.store().delete_api_token_audited(id, &record).await?;
        Ok(())
    }
}
