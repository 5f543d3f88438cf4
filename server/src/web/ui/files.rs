//! Browsing a build root: behind login and `view` on the build, and confined
//! to the build's working directory. The requested path is canonicalised
//! (symlinks resolved) and must stay inside the canonical build root, so
//! neither `..` nor a symlink pointing out can escape (the original's
//! anonymous file server allowed `../`).

use std::path::{Path, PathBuf};

use serde_json::json;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::{api_error_page, error_page, Ctx};
use crate::store::Id;
use crate::web::api;

/// Files larger than this are not served.
const MAX_FILE: u64 = 20 * 1024 * 1024;

/// Decodes `%XX` escapes of one path segment; None if it is malformed.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a path segment for a link.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The canonical path of `segments` under `root`, if it stays inside it.
pub(crate) fn confine(root: &Path, segments: &[String]) -> Result<PathBuf, &'static str> {
    let root = std::fs::canonicalize(root).map_err(|_| "not found")?;
    let mut path = root.clone();
    for s in segments {
        if s.is_empty() || s == "." {
            continue;
        }
        if s.contains('/') || s.contains('\0') {
            return Err("bad path");
        }
        path.push(s);
    }
    let canonical = std::fs::canonicalize(&path).map_err(|_| "not found")?;
    if canonical.starts_with(&root) {
        Ok(canonical)
    } else {
        Err("outside the build root")
    }
}

pub(crate) async fn browse(ctx: &Ctx, id: Id, rest: &[&str]) -> Response {
    let (build, object) = match api::build_object(&ctx.state, id).await {
        Ok(b) => b,
        Err(e) => return api_error_page(ctx, e),
    };
    if let Err(e) = ctx.state.authorize(&ctx.principal, "view", "build", Some(object)).await {
        return api_error_page(ctx, e);
    }
    if build.working_dir.is_empty() {
        return error_page(Some(ctx), StatusCode::NOT_FOUND, &format!("Build {id} has no build root (yet)."));
    }
    let mut segments = Vec::new();
    for s in rest {
        match percent_decode(s) {
            Some(s) => segments.push(s),
            None => return error_page(Some(ctx), StatusCode::BAD_REQUEST, "Malformed path."),
        }
    }
    let root = PathBuf::from(&build.working_dir);
    let target = match confine(&root, &segments) {
        Ok(p) => p,
        Err("outside the build root") => {
            return error_page(Some(ctx), StatusCode::FORBIDDEN, "That path leads outside the build root.")
        }
        Err(_) => {
            return error_page(
                Some(ctx),
                StatusCode::NOT_FOUND,
                "No such file in this build root (it may be on another worker, or cleaned up).",
            )
        }
    };
    let canonical_root = std::fs::canonicalize(&root).unwrap_or(root);
    let relative: Vec<String> = target
        .strip_prefix(&canonical_root)
        .map(|p| p.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let base = format!("/ui/builds/{id}/files");
    let href = |parts: &[String]| {
        let mut h = base.clone();
        for p in parts {
            h.push('/');
            h.push_str(&encode(p));
        }
        h
    };
    let meta = match std::fs::metadata(&target) {
        Ok(m) => m,
        Err(e) => return error_page(Some(ctx), StatusCode::NOT_FOUND, &e.to_string()),
    };
    if meta.is_dir() {
        let mut entries = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&target) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let meta = std::fs::metadata(entry.path()).ok();
                let mut parts = relative.clone();
                parts.push(name.clone());
                entries.push(json!({
                    "name": name,
                    "href": href(&parts),
                    "dir": meta.as_ref().is_some_and(|m| m.is_dir()),
                    "size": meta.as_ref().map(|m| m.len()),
                }));
            }
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
    if !meta.is_file() {
        // A device node or FIFO a build made would read the worker's devices.
        return error_page(Some(ctx), StatusCode::FORBIDDEN, "This is not a regular file: it is not shown.");
    }
    if meta.len() > MAX_FILE {
        return error_page(Some(ctx), StatusCode::PAYLOAD_TOO_LARGE, "The file is too large to show here.");
    }
    // While the build runs these two hold its secrets in clear: they are
    // served from the build record, which holds only placeholders.
    let data = match relative.as_slice() {
        [name] if name == "vespene.json" => crate::engine::pretty_json(&build.variables).into_bytes(),
        [name] if name == crate::engine::LAUNCH_SCRIPT => build.script.clone().into_bytes(),
        _ => match tokio::fs::read(&target).await {
            Ok(d) => d,
            Err(e) => return error_page(Some(ctx), StatusCode::NOT_FOUND, &e.to_string()),
        },
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
    fn paths_stay_inside_the_build_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.txt"), root.join("in")).unwrap();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(confine(&root, &s(&["sub", "a.txt"])).is_ok());
        assert!(confine(&root, &s(&["in"])).is_ok());
        assert_eq!(confine(&root, &s(&["..", "secret"])), Err("outside the build root"));
        assert_eq!(confine(&root, &s(&["sub", "..", "..", "secret"])), Err("outside the build root"));
        assert_eq!(confine(&root, &s(&["out"])), Err("outside the build root"));
        assert_eq!(confine(&root, &s(&["../secret"])), Err("bad path"));
        assert_eq!(confine(&root, &s(&["missing"])), Err("not found"));
        assert_eq!(percent_decode("%2e%2e").as_deref(), Some(".."));
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
