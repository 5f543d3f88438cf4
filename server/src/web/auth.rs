//! Who is asking, and may they: session cookies (HttpOnly, SameSite=Strict)
//! for people, bearer API tokens for scripts, a CSRF token required on every
//! state-changing request a cookie authenticates, and the `authorization`
//! plugin chain (every configured plugin must allow).

use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};
use vespene_plugin_api::{AccessRequest, UserInfo};
use warp::http::{HeaderMap, Method};

use super::error::ApiError;
use super::AppState;
use crate::store::User;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vespene_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a login lasts, in seconds.
pub const SESSION_TTL_SECS: i64 = 14 * 24 * 3600;

/// How a request was authenticated.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Nobody.
    Anonymous,
    /// A browser session.
    Session {
        /// The user.
        user: User,
        /// The session id (from the cookie).
        sid: String,
    },
    /// An API token.
    Token {
        /// The user.
        user: User,
        /// The token itself (kept when its user changes their password with it).
        token: String,
    },
}

impl Principal {
    /// The user, if any.
    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::Anonymous => None,
            Principal::Session { user, .. } | Principal::Token { user, .. } => Some(user),
        }
    }

    /// The user or 401.
    pub fn require(&self) -> Result<&User, ApiError> {
        self.user().ok_or_else(ApiError::unauthenticated)
    }
}

/// The CSRF token that goes with a session: derived from the session id, so
/// only a page that could read the session's own answers knows it.
pub fn csrf_token(sid: &str) -> String {
    let digest = Sha256::digest(format!("vespene-csrf:{sid}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Set-Cookie` value that starts a session (`Secure` when the settings
/// say so: `server.secure_cookies`, on by default for an https `public_url`).
pub fn session_cookie(state: &AppState, sid: &str) -> String {
    format!(
        "{SESSION_COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_TTL_SECS}{}",
        secure_attribute(state)
    )
}

/// The `Set-Cookie` value that ends the session.
pub fn session_cookie_cleared(state: &AppState) -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", secure_attribute(state))
}

/// `; Secure` when cookies must travel over HTTPS only.
pub fn secure_attribute(state: &AppState) -> &'static str {
    if state.settings.server.cookies_secure() {
        "; Secure"
    } else {
        ""
    }
}

/// A cookie value from the Cookie header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// Authenticates a request from its headers; a CSRF check for cookie-based
/// state changes. Bad credentials are an error, no credentials is Anonymous.
pub async fn authenticate(state: &Arc<AppState>, method: &Method, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let token =
            value.strip_prefix("Bearer ").ok_or_else(|| ApiError::bad("Authorization must be 'Bearer <token>'"))?;
        return match state.store.authenticate_token(token.trim()).await? {
            Some(user) => Ok(Principal::Token { user, token: token.trim().to_string() }),
            None => Err(ApiError::new(warp::http::StatusCode::UNAUTHORIZED, "the API token is unknown or revoked")),
        };
    }
    let Some(sid) = cookie(headers, SESSION_COOKIE) else { return Ok(Principal::Anonymous) };
    let Some(user) = state.store.session_user(&sid).await? else { return Ok(Principal::Anonymous) };
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if sent != csrf_token(&sid) {
            return Err(ApiError::forbidden("missing or wrong CSRF token (send the X-CSRF-Token header)"));
        }
    }
    Ok(Principal::Session { user, sid })
}

/// The user as authorization plugins see them.
pub async fn user_info(state: &Arc<AppState>, user: &User) -> Result<UserInfo, ApiError> {
    let groups = state.store.list_groups().await?;
    Ok(UserInfo {
        id: user.id,
        username: user.username.clone(),
        superuser: user.is_superuser,
        groups: groups.into_iter().filter(|g| user.group_ids.contains(&g.id)).map(|g| g.name).collect(),
    })
}

impl AppState {
    /// Asks every authorization plugin; all must allow.
    pub async fn authorize(
        self: &Arc<Self>,
        principal: &Principal,
        action: &str,
        kind: &str,
        object: Option<Value>,
    ) -> Result<(), ApiError> {
        let user = match principal.user() {
            Some(u) => Some(user_info(self, u).await?),
            None => None,
        };
        let anonymous = user.is_none();
        let request = AccessRequest { user, action: action.into(), kind: kind.into(), object };
        let state = self.clone();
        let verdict = tokio::task::spawn_blocking(move || state.registry.access_check(&request))
            .await
            .map_err(ApiError::internal)?;
        verdict.map_err(|m| if anonymous { ApiError::unauthenticated() } else { ApiError::forbidden(m) })
    }

    /// The ids among `candidates` that every authorization plugin lets the user see.
    pub async fn visible(
        self: &Arc<Self>,
        principal: &Principal,
        kind: &str,
        candidates: Vec<Value>,
    ) -> Result<Vec<i64>, ApiError> {
        let user = match principal.user() {
            Some(u) => Some(user_info(self, u).await?),
            None => None,
        };
        self.filter_by(user, "list", kind, candidates).await
    }

    /// The ids among `candidates` on which every authorization plugin allows
    /// `action` to `user` (the plugins' `filter_list`).
    pub async fn filter_by(
        self: &Arc<Self>,
        user: Option<UserInfo>,
        action: &str,
        kind: &str,
        candidates: Vec<Value>,
    ) -> Result<Vec<i64>, ApiError> {
        let request = AccessRequest { user, action: action.into(), kind: kind.into(), object: None };
        let state = self.clone();
        let allowed = tokio::task::spawn_blocking(move || state.registry.access_filter(&request, &candidates))
            .await
            .map_err(ApiError::internal)?;
        allowed.map_err(ApiError::forbidden)
    }
}
