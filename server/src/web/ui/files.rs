//! Browsing a build root: behind login and `view` on the build, and confined
//! to the build's working directory. A build controls its own tree and may
//! change it between two requests (swap a directory for a symbolic link), so
//! nothing is checked by name and then reopened: every path is opened
//! relative to the build root with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, which refuses a symbolic link at any level (even
//! one pointing inside the root) and any way out of it. What was opened is
//! looked at through its descriptor (`fstat`): only regular files and
//! directories are shown, a FIFO or device node is never opened for reading,
//! and a file is read up to [`MAX_FILE`] bytes, counted as they are read (the
//! original's anonymous file server allowed `../`).

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde_json::json;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::{api_error_page, error_page, Ctx};
use crate::store::Id;
use crate::web::objects;

/// Files larger than this are not served.
const MAX_FILE: u64 = 20 * 1024 * 1024;

/// Why a path in a build root is not shown.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A segment is malformed (`/` or NUL inside it).
    BadPath,
    /// Nothing there (or not a directory where one was needed).
    NotFound,
    /// A symbolic link at some level.
    Symlink,
    /// `..` past the root.
    Outside,
    /// A FIFO, socket or device node.
    NotRegular,
    /// Larger than [`MAX_FILE`].
    TooLarge,
    /// Anything else the system answered.
    Io(String),
}

impl Refusal {
    fn response(&self, ctx: &Ctx) -> Response {
        let (status, message) = match self {
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
}

impl From<Errno> for Refusal {
    fn from(e: Errno) -> Self {
        match e {
            Errno::LOOP => Refusal::Symlink,
            Errno::XDEV => Refusal::Outside,
            Errno::NOENT | Errno::NOTDIR => Refusal::NotFound,
            other => Refusal::Io(std::io::Error::from(other).to_string()),
        }
    }
}

/// What a path in a build root is, opened.
pub(crate) enum Opened {
    /// A directory: its entries (name, kind, size), unsorted.
    Dir(Vec<(String, &'static str, u64)>),
    /// A regular file's content.
    File(Vec<u8>),
}

/// Opens `segments` under `root` without following any symbolic link and
/// answers what is there. Blocking: call it off the async threads.
pub(crate) fn open_beneath(root: &Path, segments: &[String]) -> Result<Opened, Refusal> {
    let mut rel = PathBuf::new();
    for s in segments {
        if s.contains('/') || s.contains('\0') {
            return Err(Refusal::BadPath);
        }
        if !s.is_empty() && s != "." {
            rel.push(s);
        }
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    // The root itself is the server's (a build cannot replace it): opened as a directory, no link at its end.
    let root_fd =
        rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    // O_PATH opens nothing: a FIFO or a device is looked at, never opened.
    let fd = loop {
        match rustix::fs::openat2(&root_fd, &rel, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty(), how)
        {
            // The kernel saw a rename race (the build changing its tree): look again.
            Err(Errno::AGAIN) => continue,
            other => break other?,
        }
    };
    let stat = rustix::fs::fstat(&fd)?;
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Directory => list(&fd).map(Opened::Dir),
        FileType::RegularFile => read_file(&fd, &stat).map(Opened::File),
        FileType::Symlink => Err(Refusal::Symlink),
        _ => Err(Refusal::NotRegular),
    }
}

fn list(dir: &OwnedFd) -> Result<Vec<(String, &'static str, u64)>, Refusal> {
    let mut entries = Vec::new();
    // A readable descriptor of the same directory (`.` of the O_PATH one).
    let readable = rustix::fs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
    for entry in rustix::fs::Dir::new(readable)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        let Ok(stat) = rustix::fs::statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
        let kind = match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => "dir",
            FileType::RegularFile => "file",
            FileType::Symlink => "link",
            _ => "other",
        };
        entries.push((name, kind, stat.st_size as u64));
    }
    Ok(entries)
}

/// Reads the regular file behind an `O_PATH` descriptor: reopened through
/// `/proc/self/fd` (the same inode, whatever the name now points at),
/// non-blocking, and read up to [`MAX_FILE`] bytes counted as they come.
fn read_file(fd: &OwnedFd, stat: &rustix::fs::Stat) -> Result<Vec<u8>, Refusal> {
    use std::os::unix::fs::OpenOptionsExt;
    if stat.st_size as u64 > MAX_FILE {
        return Err(Refusal::TooLarge);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .map_err(|e| Refusal::Io(e.to_string()))?;
    let again = rustix::fs::fstat(&file)?;
    if (again.st_dev, again.st_ino) != (stat.st_dev, stat.st_ino) || !FileType::from_raw_mode(again.st_mode).is_file() {
        return Err(Refusal::NotRegular);
    }
    let mut data = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut data).map_err(|e| Refusal::Io(e.to_string()))?;
    if data.len() as u64 > MAX_FILE {
        return Err(Refusal::TooLarge);
    }
    Ok(data)
}

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

pub(crate) async fn browse(ctx: &Ctx, id: Id, rest: &[&str]) -> Response {
    let (build, object) = match objects::build_object(&ctx.state, id).await {
        Ok(b) => b,
        Err(e) => return api_error_page(ctx, e),
    };
    if let Err(e) = ctx.state.authorize(&ctx.principal, "view", "build", Some(object)).await {
        return api_error_page(ctx, e);
    }
    if build.working_dir.is_empty() {
        return error_page(Some(ctx), StatusCode::NOT_FOUND, &format!("Build {id} has no build root (yet)."));
    }
    if let Some(when) = build.root_removed_at {
        let when = when.format("%Y-%m-%d %H:%M:%S UTC");
        let message =
            format!("The build root of build {id} was removed by retention on {when} (the project's keep rules).");
        return error_page(Some(ctx), StatusCode::GONE, &message);
    }
    let mut segments = Vec::new();
    for s in rest {
        match percent_decode(s) {
            Some(s) => segments.push(s),
            None => return error_page(Some(ctx), StatusCode::BAD_REQUEST, "Malformed path."),
        }
    }
    let root = PathBuf::from(&build.working_dir);
    let opened = {
        let (root, segments) = (root.clone(), segments.clone());
        tokio::task::spawn_blocking(move || open_beneath(&root, &segments))
            .await
            .unwrap_or_else(|e| Err(Refusal::Io(e.to_string())))
    };
    let opened = match opened {
        Ok(o) => o,
        Err(refusal) => return refusal.response(ctx),
    };
    // The path as shown: `.` and `..` resolved (the kernel kept it beneath the root).
    let mut relative: Vec<String> = Vec::new();
    for s in &segments {
        match s.as_str() {
            "" | "." => {}
            ".." => {
                relative.pop();
            }
            _ => relative.push(s.clone()),
        }
    }
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
    // While the build runs these two hold its secrets in clear: they are
    // served from the build record, which holds only placeholders.
    let data = match relative.as_slice() {
        [name] if name == "vespene.json" => crate::engine::pretty_json(&build.variables).into_bytes(),
        [name] if name == crate::engine::LAUNCH_SCRIPT => build.script.clone().into_bytes(),
        _ => data,
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
    fn paths_stay_inside_the_build_root_and_no_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/a.txt"), root.join("in")).unwrap();
        std::os::unix::fs::symlink(root.join("sub"), root.join("subdir")).unwrap();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let open = |v: &[&str]| open_beneath(&root, &s(v));
        assert!(matches!(open(&["sub", "a.txt"]), Ok(Opened::File(d)) if d == b"a"));
        assert!(matches!(open(&["sub", "..", "sub", "a.txt"]), Ok(Opened::File(_))));
        assert!(matches!(open(&[]), Ok(Opened::Dir(e)) if e.iter().any(|(n, k, _)| n == "in" && *k == "link")));
        assert_eq!(open(&["in"]).err(), Some(Refusal::Symlink));
        assert_eq!(open(&["out"]).err(), Some(Refusal::Symlink));
        assert_eq!(open(&["subdir", "a.txt"]).err(), Some(Refusal::Symlink));
        assert_eq!(open(&["..", "secret"]).err(), Some(Refusal::Outside));
        assert_eq!(open(&["sub", "..", "..", "secret"]).err(), Some(Refusal::Outside));
        assert_eq!(open(&["../secret"]).err(), Some(Refusal::BadPath));
        assert_eq!(open(&["missing"]).err(), Some(Refusal::NotFound));
        let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert_eq!(open(&["fifo"]).err(), Some(Refusal::NotRegular));
        let big = std::fs::File::create(root.join("big")).unwrap();
        big.set_len(MAX_FILE + 1).unwrap();
        assert_eq!(open(&["big"]).err(), Some(Refusal::TooLarge));
        assert_eq!(percent_decode("%2e%2e").as_deref(), Some(".."));
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
