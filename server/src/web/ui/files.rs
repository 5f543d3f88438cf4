//! Browsing a build root in the UI: the service opens the path (confined to
//! the root, no symbolic link followed: `service::files`); this page lists a
//! directory with links, and serves a file as plain text or a download,
//! never as a page of this site.

use serde_json::json;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::{api_error_page, error_page, Ctx};
use crate::service::files::{self, Opened, Refusal, Unbrowsable, MAX_FILE};
use crate::service::model::Id;

/// The page for a refused path.
fn refusal_page(ctx: &Ctx, refusal: &Refusal) -> Response {
    let (status, message) = match refusal {
        Refusal::BadPath => (StatusCode::BAD_REQUEST, "Malformed path.".to_string()),
        Refusal::NotFound => (
            StatusCode::NOT_FOUND,
            "No such file in this build root (it may be on another worker, or cleaned up).".to_string(),
        ),
        Refusal::Symlink => (
            StatusCode::FORBIDDEN,
            "That path goes through a symbolic link, which the file browser never follows.".to_string(),
        ),
        Refusal::Outside => (StatusCode::FORBIDDEN, "That path leads outside the build root.".to_string()),
        Refusal::NotRegular => {
            (StatusCode::FORBIDDEN, "This is not a regular file or a directory: it is not shown.".to_string())
        }
        Refusal::TooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The file is too large to show here (the limit is {} MiB).", MAX_FILE / (1024 * 1024)),
        ),
        Refusal::Io(e) => (StatusCode::NOT_FOUND, e.clone()),
    };
    error_page(Some(ctx), status, &message)
}

/// Decodes `%XX` escapes of one path segment; None if it is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|s| s.into_owned())
}

/// What a path segment in a link keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Percent-encodes a path segment for a link.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

pub(crate) async fn browse(ctx: &Ctx, id: Id, rest: &[&str]) -> Response {
    let mut segments = Vec::new();
    for s in rest {
        match percent_decode(s) {
            Some(s) => segments.push(s),
            None => return error_page(Some(ctx), StatusCode::BAD_REQUEST, "Malformed path."),
        }
    }
    let relative = files::resolved(&segments);
    let opened = match ctx.state.service.build_file(&ctx.principal, id, segments).await {
        Ok(o) => o,
        Err(Unbrowsable::Denied(e)) => return api_error_page(ctx, e.into()),
        Err(Unbrowsable::NoRoot) => {
            return error_page(Some(ctx), StatusCode::NOT_FOUND, &format!("Build {id} has no build root (yet)."))
        }
        Err(Unbrowsable::Removed(when)) => {
            let when = when.format("%Y-%m-%d %H:%M:%S UTC");
            let message =
                format!("The build root of build {id} was removed by retention on {when} (the project's keep rules).");
            return error_page(Some(ctx), StatusCode::GONE, &message);
        }
        Err(Unbrowsable::Refused(refusal)) => return refusal_page(ctx, &refusal),
    };
    let base = format!("/ui/builds/{id}/files");
    let href = |parts: &[String]| {
        let mut h = base.clone();
        for p in parts {
            h.push('/');
            h.push_str(&encode(p));
        }
        h
    };
    let data = match opened {
        Opened::Dir(found) => {
            let mut entries = Vec::new();
            for (name, kind, size) in found {
                let mut parts = relative.clone();
                parts.push(name.clone());
                entries.push(json!({
                    "name": name,
                    "href": href(&parts),
                    "dir": kind == "dir",
                    "kind": kind,
                    "size": (kind == "file").then_some(size),
                }));
            }
            entries.sort_by(|a, b| {
                (!a["dir"].as_bool().unwrap_or(false), a["name"].as_str())
                    .cmp(&(!b["dir"].as_bool().unwrap_or(false), b["name"].as_str()))
            });
            let mut crumbs = vec![json!({ "name": format!("build {id}"), "href": base.clone() })];
            for i in 0..relative.len() {
                crumbs.push(json!({ "name": relative[i], "href": href(&relative[..=i]) }));
            }
            return ctx.page("files.html", json!({ "build_id": id, "crumbs": crumbs, "entries": entries }));
        }
        Opened::File(data) => data,
    };
    // Served as plain text or a download, never as a page of this site.
    let text = std::str::from_utf8(&data).is_ok();
    let mut r = Response::new(data.into());
    let headers = r.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static(if text { "text/plain; charset=utf-8" } else { "application/octet-stream" }),
    );
    headers.insert("content-security-policy", HeaderValue::from_static("sandbox; default-src 'none'"));
    if !text {
        headers.insert("content-disposition", HeaderValue::from_static("attachment"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_decoded_and_encoded() {
        assert_eq!(percent_decode("%2e%2e").as_deref(), Some(".."));
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
