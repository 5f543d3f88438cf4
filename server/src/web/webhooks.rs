//! Push webhooks at `/webhooks`: GitHub, GitLab and a generic JSON form start
//! every webhook-enabled project whose repository matches the payload,
//! honouring the project's branch. A project with a webhook secret only
//! starts for a request proven by it: GitHub's `X-Hub-Signature-256` HMAC,
//! GitLab's `X-Gitlab-Token`, or for the generic form an HMAC of a timestamp
//! and the body (`X-Vespene-Timestamp`, `X-Vespene-Signature`), the timestamp
//! within `[webhooks] timestamp_window_seconds` (the bare `X-Vespene-Token` is
//! still accepted unless signatures are required). With `[webhooks]
//! require_signature`, a project without a secret starts from no webhook.
//!
//! Replays: a delivery is recorded in the database by its id (GitHub's
//! `X-GitHub-Delivery`, GitLab's `X-Gitlab-Event-UUID`, the generic form's
//! signature) and a signed GitHub body by its digest too (the id is not
//! signed); a delivery seen before is refused with 409, whichever process
//! got it first.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use super::error::ApiError;
use super::request::{body_object, ApiRequest};
use super::AppState;
use crate::service::model::now;
use crate::settings::WebhookSettings;

/// Which sender a payload is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sender {
    GitHub,
    GitLab,
    Generic,
}

/// Handles a webhook POST.
pub async fn handle(state: &Arc<AppState>, req: &ApiRequest) -> Result<Response, ApiError> {
    let body = body_object(&req.body)?;
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let sender = if header("x-github-event").is_some() {
        Sender::GitHub
    } else if header("x-gitlab-event").is_some() {
        Sender::GitLab
    } else {
        Sender::Generic
    };
    if sender == Sender::GitHub && header("x-github-event").as_deref() == Some("ping") {
        return Ok(warp::reply::json(&json!({ "ok": true, "started": [] })).into_response());
    }
    let urls = repository_urls(&body);
    if urls.is_empty() {
        return Err(ApiError::bad(
            "the payload names no repository (repository.clone_url / ssh_url / git_url, project.git_http_url / git_ssh_url, or repository as a string)",
        ));
    }
    let branch = payload_branch(&body);
    let mut accepted = Vec::new();
    let mut refused: Option<ApiError> = None;
    let mut seen = std::collections::HashSet::new();
    let mut any_signed = false;
    let now = now().timestamp();
    for url in &urls {
        for (project, token) in state.service.webhook_projects(url, branch.as_deref()).await? {
            if !seen.insert(project.id) {
                continue;
            }
            match verify(&state.settings().webhooks, token.as_deref(), sender, &req.headers, &req.body, now) {
                Ok(signed) => {
                    any_signed |= signed;
                    accepted.push(project);
                }
                Err(e) => {
                    refused
                        .get_or_insert(ApiError { message: format!("project {}: {}", project.name, e.message), ..e });
                }
            }
        }
    }
    if accepted.is_empty() {
        if let Some(e) = refused {
            return Err(e);
        }
    } else {
        for id in delivery_ids(sender, &req.headers, &req.body, any_signed)? {
            if !state.service.record_webhook_delivery(&id).await? {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("this delivery ({id}) was received before: a replayed delivery starts nothing"),
                ));
            }
        }
    }
    let mut started = Vec::new();
    for project in accepted {
        let build = state.service.start_for_webhook(&project).await?;
        started.push(json!({ "project": project.name, "build": build.id }));
    }
    Ok(warp::reply::with_status(warp::reply::json(&json!({ "ok": true, "started": started })), StatusCode::OK)
        .into_response())
}

/// The ids a delivery is recorded under. A signed GitHub or GitLab delivery
/// must carry its id; a signed GitHub body is recorded by digest as well,
/// since the id header is not covered by the signature.
fn delivery_ids(
    sender: Sender,
    headers: &warp::http::HeaderMap,
    body: &[u8],
    signed: bool,
) -> Result<Vec<String>, ApiError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty());
    let digest = || Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut ids = Vec::new();
    match sender {
        Sender::GitHub | Sender::GitLab => {
            let (name, prefix) = if sender == Sender::GitHub {
                ("x-github-delivery", "github")
            } else {
                ("x-gitlab-event-uuid", "gitlab")
            };
            match header(name) {
                Some(id) => ids.push(format!("{prefix}:{id}")),
                None if signed => {
                    return Err(ApiError::bad(format!(
                        "missing {name}: a signed delivery must name its delivery id (replay protection)"
                    )))
                }
                None => {}
            }
            if signed && sender == Sender::GitHub {
                ids.push(format!("github-body:{}", digest()));
            }
        }
        Sender::Generic => {
            if let Some(sig) = header("x-vespene-signature") {
                ids.push(format!("generic:{sig}"));
            }
        }
    }
    Ok(ids)
}

/// The repository URLs a payload names (GitHub and GitLab shapes, or generic).
fn repository_urls(body: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut urls = Vec::new();
    let mut push = |v: &Value| {
        if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
            if !urls.iter().any(|u: &String| u == s) {
                urls.push(s.to_string());
            }
        }
    };
    for section in ["repository", "project"] {
        match body.get(section) {
            Some(Value::Object(o)) => {
                for key in ["clone_url", "ssh_url", "git_url", "git_http_url", "git_ssh_url", "url"] {
                    if let Some(v) = o.get(key) {
                        push(v);
                    }
                }
            }
            Some(v @ Value::String(_)) => push(v),
            _ => {}
        }
    }
    urls
}

/// The pushed branch: `ref: refs/heads/X` (GitHub, GitLab) or `branch: X`.
fn payload_branch(body: &serde_json::Map<String, Value>) -> Option<String> {
    if let Some(r) = body.get("ref").and_then(Value::as_str) {
        return Some(r.strip_prefix("refs/heads/").unwrap_or(r).to_string());
    }
    body.get("branch").and_then(Value::as_str).map(str::to_string)
}

/// Checks a delivery's proof for a project; answers whether it was signed
/// (proven by the project's secret).
fn verify(
    settings: &WebhookSettings,
    token: Option<&str>,
    sender: Sender,
    headers: &warp::http::HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<bool, ApiError> {
    let Some(secret) = token.filter(|s| !s.is_empty()) else {
        if settings.require_signature {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "it has no webhook secret, and this server requires signed webhooks ([webhooks] require_signature): \
                 give the project a webhook_token",
            ));
        }
        // No secret and none required: the project accepts unsigned pushes.
        return Ok(false);
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let hmac_matches = |message: &[u8], sig: &str, name: &str| {
        let hex = sig.strip_prefix("sha256=").unwrap_or("");
        let given = decode_hex(hex).ok_or_else(|| ApiError::forbidden(format!("{name} is not sha256=<hex>")))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
        mac.update(message);
        mac.verify_slice(&given).map_err(|_| ApiError::forbidden("the webhook signature does not match"))
    };
    match sender {
        Sender::GitHub => {
            let Some(sig) = header("x-hub-signature-256") else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing X-Hub-Signature-256 for a project with a webhook secret",
                ));
            };
            hmac_matches(body, sig, "X-Hub-Signature-256").map(|_| true)
        }
        Sender::Generic if header("x-vespene-signature").is_some() || settings.require_signature => {
            let (Some(sig), Some(stamp)) = (header("x-vespene-signature"), header("x-vespene-timestamp")) else {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "a generic webhook must be signed: X-Vespene-Timestamp (Unix seconds) and \
                     X-Vespene-Signature (sha256=<hex HMAC-SHA256 of \"TIMESTAMP.BODY\" with the project's secret>)",
                ));
            };
            let stamp_secs: i64 = stamp
                .trim()
                .parse()
                .map_err(|_| ApiError::bad("X-Vespene-Timestamp must be a Unix time in seconds"))?;
            let mut message = format!("{}.", stamp.trim()).into_bytes();
            message.extend_from_slice(body);
            hmac_matches(&message, sig, "X-Vespene-Signature")?;
            let window = settings.timestamp_window_seconds as i64;
            if (now - stamp_secs).abs() > window {
                return Err(ApiError::forbidden(format!(
                    "X-Vespene-Timestamp {stamp_secs} is more than {window} seconds from the server's time {now} \
                     ([webhooks] timestamp_window_seconds): a late or replayed delivery starts nothing"
                )));
            }
            Ok(true)
        }
        Sender::GitLab | Sender::Generic => {
            let name = if sender == Sender::GitLab { "x-gitlab-token" } else { "x-vespene-token" };
            match header(name) {
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("missing {name} for a project with a webhook secret"),
                )),
                Some(t) if constant_time_eq(t.as_bytes(), secret.as_bytes()) => Ok(true),
                Some(_) => Err(ApiError::forbidden("the webhook token does not match")),
            }
        }
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_urls_and_branches_in_github_and_gitlab_payloads() {
        let github =
            json!({"ref": "refs/heads/main", "repository": {"clone_url": "https://h/r.git", "ssh_url": "git@h:r.git"}});
        let body = github.as_object().unwrap();
        assert_eq!(repository_urls(body), vec!["https://h/r.git", "git@h:r.git"]);
        assert_eq!(payload_branch(body).as_deref(), Some("main"));
        let gitlab = json!({"ref": "refs/heads/dev", "project": {"git_http_url": "https://g/r.git"}});
        assert_eq!(repository_urls(gitlab.as_object().unwrap()), vec!["https://g/r.git"]);
        let generic = json!({"repository": "file:///srv/r", "branch": "x"});
        assert_eq!(repository_urls(generic.as_object().unwrap()), vec!["file:///srv/r"]);
        assert_eq!(payload_branch(generic.as_object().unwrap()).as_deref(), Some("x"));
    }

    #[test]
    fn hex_decodes() {
        assert_eq!(decode_hex("0aff"), Some(vec![10, 255]));
        assert_eq!(decode_hex("0g"), None);
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
    }
}
