//! Who is asking, as HTTP carries it: session cookies (HttpOnly,
//! SameSite=Strict) for people, bearer API tokens for scripts, and a CSRF
//! token required on every state-changing request a cookie authenticates.
//! Whether they may is the service's (`service::access`).

use std::sync::Arc;

use sha2::{Digest, Sha256};
use warp::http::{HeaderMap, Method};

use super::error::ApiError;
use super::AppState;
pub use crate::service::accounts::SESSION_TTL_SECS;
use crate::service::Principal;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "vespene_session";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
    if state.settings().server.cookies_secure() {
        "; Secure"
    } else {
        ""
    }
}

/// A cookie value from the Cookie headers (read by the `headers` crate's
/// typed `Cookie`, which warp's own cookie filters use).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    use headers::HeaderMapExt;
    headers.typed_get::<headers::Cookie>()?.get(name).map(str::to_string)
}

/// Authenticates a request from its headers; a CSRF check for cookie-based
/// state changes. Bad credentials are an error, no credentials is Anonymous.
pub async fn authenticate(state: &Arc<AppState>, method: &Method, headers: &HeaderMap) -> Result<Principal, ApiError> {
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let token =
            value.strip_prefix("Bearer ").ok_or_else(|| ApiError::bad("Authorization must be 'Bearer <token>'"))?;
        return Ok(state.service.token_principal(token.trim()).await?);
    }
    let Some(sid) = cookie(headers, SESSION_COOKIE) else { return Ok(Principal::Anonymous) };
    let Some(principal) = state.service.session_principal(&sid).await? else { return Ok(Principal::Anonymous) };
    let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state {
        let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
        if sent != csrf_token(&sid) {
            return Err(ApiError::forbidden("missing or wrong CSRF token (send the X-CSRF-Token header)"));
        }
    }
    Ok(principal)
}
