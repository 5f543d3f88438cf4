//! The files of a build root: behind `view` on the build, and confined
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

use super::{Error, Principal, Service};
use crate::store::Id;

/// Files larger than this are not served.
pub const MAX_FILE: u64 = 20 * 1024 * 1024;

/// Why a path in a build root is not shown.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
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

/// Why a build's files cannot be browsed at all.
#[derive(Debug)]
pub enum Unbrowsable {
    /// The build is not there, or the caller may not view it.
    Denied(Error),
    /// No worker has made its build root yet.
    NoRoot,
    /// Retention removed the build root at this time.
    Removed(chrono::DateTime<chrono::Utc>),
    /// The path is refused.
    Refused(Refusal),
}

impl From<Error> for Unbrowsable {
    fn from(e: Error) -> Self {
        Unbrowsable::Denied(e)
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
pub enum Opened {
    /// A directory: its entries (name, kind, size), unsorted.
    Dir(Vec<(String, &'static str, u64)>),
    /// A regular file's content.
    File(Vec<u8>),
}

/// Opens `segments` under `root` without following any symbolic link and
/// answers what is there. Blocking: call it off the async threads.
pub fn open_beneath(root: &Path, segments: &[String]) -> Result<Opened, Refusal> {
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

impl Service {
    /// What is at `segments` (path segments, decoded; `.` and `..` allowed
    /// while they stay beneath the root) of build `id`'s root, for a
    /// principal who may view the build. While the build runs,
    /// `vespene.json` and the launch script hold its secrets in clear: they
    /// are answered from the build record, which holds only placeholders.
    pub async fn build_file(
        &self,
        principal: &Principal,
        id: Id,
        segments: Vec<String>,
    ) -> Result<Opened, Unbrowsable> {
        let build = self.build_for(principal, id, "view").await?;
        if build.working_dir.is_empty() {
            return Err(Unbrowsable::NoRoot);
        }
        if let Some(when) = build.root_removed_at {
            return Err(Unbrowsable::Removed(when));
        }
        let root = PathBuf::from(&build.working_dir);
        let relative = resolved(&segments);
        let opened = tokio::task::spawn_blocking(move || open_beneath(&root, &segments))
            .await
            .unwrap_or_else(|e| Err(Refusal::Io(e.to_string())))
            .map_err(Unbrowsable::Refused)?;
        Ok(match (opened, relative.as_slice()) {
            (Opened::File(_), [name]) if name == "vespene.json" => {
                Opened::File(crate::engine::pretty_json(&build.variables).into_bytes())
            }
            (Opened::File(_), [name]) if name == crate::engine::LAUNCH_SCRIPT => {
                Opened::File(build.script.clone().into_bytes())
            }
            (opened, _) => opened,
        })
    }
}

/// The path as shown: `.` and `..` resolved (the kernel keeps it beneath the root).
pub fn resolved(segments: &[String]) -> Vec<String> {
    let mut relative: Vec<String> = Vec::new();
    for s in segments {
        match s.as_str() {
            "" | "." => {}
            ".." => {
                relative.pop();
            }
            _ => relative.push(s.clone()),
        }
    }
    relative
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
    }
}
