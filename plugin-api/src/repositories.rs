//! Local repositories (`file://` URLs and paths) that an scm plugin may read
//! with the worker's rights: only those under the directories the server's
//! admin lists in `[repositories] local_roots`, which the server passes to scm
//! plugins as `local_repository_roots` in [`ScmContext::extra`]. Plugins check
//! what a repository pulls in by itself (git submodules, svn externals) here,
//! with the same rule and the same message the server uses for a project's
//! own repository.
//!
//! ```
//! use vespene_plugin_api::repositories::local_allowed;
//!
//! let root = std::env::temp_dir();
//! let inside = format!("file://{}/repos/team.git", root.display());
//! assert!(local_allowed(&inside, &[root.clone()]).is_ok());
//! let err = local_allowed("file:///etc/shadow", &[root]).unwrap_err();
//! assert!(err.starts_with("local repository '/etc/shadow' is outside"), "{err}");
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ScmContext;

/// Whether `url` is a `file://` URL (any case).
pub fn is_file_url(url: &str) -> bool {
    url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("file://"))
}

/// `local_repository_roots` from the server (its `[repositories]
/// local_roots`); none from a server that does not send them.
pub fn local_roots(context: &ScmContext) -> Vec<PathBuf> {
    let list = context.extra.get("local_repository_roots").and_then(Value::as_array);
    list.into_iter().flatten().filter_map(Value::as_str).map(PathBuf::from).collect()
}

/// The path of a local URL: `file://[host]/path` percent-decoded, or the URL itself.
fn local_path(url: &str) -> PathBuf {
    let Some(rest) = is_file_url(url).then(|| &url[7..]) else {
        return PathBuf::from(url);
    };
    let path = if rest.starts_with('/') { rest } else { rest.find('/').map_or("/", |i| &rest[i..]) };
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// `path` with symlinks resolved as far as it exists; `None` if relative or with `..`.
fn resolved(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() || path.components().any(|c| c == std::path::Component::ParentDir) {
        return None;
    }
    let (mut existing, mut rest) = (path.to_path_buf(), Vec::new());
    loop {
        if let Ok(real) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(real, |p: PathBuf, c: &std::ffi::OsString| p.join(c)));
        }
        rest.push(existing.file_name()?.to_os_string());
        existing.pop();
    }
}

/// Whether a local `url` is inside one of `roots` (symlinks resolved), as the
/// server checks a project's own repository.
pub fn local_allowed(url: &str, roots: &[PathBuf]) -> Result<(), String> {
    let path = local_path(url);
    let inside =
        resolved(&path).is_some_and(|real| roots.iter().filter_map(|r| resolved(r)).any(|root| real.starts_with(root)));
    if inside {
        return Ok(());
    }
    let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(format!(
        "local repository '{}' is outside the directories local repositories may be in ([repositories] local_roots: {})",
        path.display(),
        if roots.is_empty() { "none".to_string() } else { roots.join(", ") }
    ))
}
