//! `svn:externals`, fetched by the plugin rather than by svn: svn would read a
//! `file://` external with the worker's rights wherever it points, so every
//! definition is parsed, resolved and checked against the server's local
//! repository roots before it is fetched, one level at a time.
//!
//! The syntax is svn's (`svn help propset`): the 1.5+ form
//! `[-r REV] URL[@PEG] DIR`, with relative URLs (`../`, `^/`, `//`, `/`) and
//! double quotes or backslashes around spaces, and the pre-1.5 form
//! `DIR [-r REV] URL`.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use vespene_plugin_api::repositories::{is_file_url, local_allowed, local_roots};
use vespene_plugin_api::{Host, PluginResult, ScmContext};

use crate::{unescape, SvnScm, MAX_EXTERNALS_DEPTH};

/// One external definition, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// The URL, possibly relative, with any `@PEG`.
    pub url: String,
    /// The `-r` revision, if any.
    pub revision: Option<String>,
    /// The directory it goes in, relative to the directory holding the property.
    pub dir: String,
}

/// Parses one `svn:externals` property value.
pub fn parse(text: &str) -> Result<Vec<External>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let tokens = tokenize(line).ok_or_else(|| format!("unbalanced quotes in '{line}'"))?;
        let bad = || format!("cannot read the definition '{line}'");
        let (revision, rest): (Option<String>, Vec<String>) = match tokens.as_slice() {
            [flag, rev, rest @ ..] if flag == "-r" => (Some(rev.clone()), rest.to_vec()),
            [flag, rest @ ..] if flag.starts_with("-r") => (Some(flag[2..].to_string()), rest.to_vec()),
            // Pre-1.5: DIR -r REV URL / DIR -rREV URL.
            [dir, flag, rev, url] if flag == "-r" => (Some(rev.clone()), vec![url.clone(), dir.clone()]),
            [dir, flag, url] if flag.starts_with("-r") => (Some(flag[2..].to_string()), vec![url.clone(), dir.clone()]),
            [a, b] if !looks_like_url(a) && looks_like_url(b) => (None, vec![b.clone(), a.clone()]),
            other => (None, other.to_vec()),
        };
        let [url, dir] = rest.as_slice() else { return Err(bad()) };
        if revision.as_deref().is_some_and(str::is_empty) {
            return Err(bad());
        }
        out.push(External { url: url.clone(), revision, dir: dir.clone() });
    }
    Ok(out)
}

/// Whitespace-separated tokens, with `"..."` and `\x` as svn reads them.
fn tokenize(line: &str) -> Option<Vec<String>> {
    let (mut tokens, mut current, mut quoted, mut started) = (Vec::new(), String::new(), false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                current.push(chars.next()?);
                started = true;
            }
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    tokens.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if quoted {
        return None;
    }
    if started {
        tokens.push(current);
    }
    Some(tokens)
}

fn looks_like_url(token: &str) -> bool {
    token.contains("://") || ["../", "^/", "//", "/"].iter().any(|p| token.starts_with(p))
}

/// The absolute URL of `url` (without its peg), for an external defined on
/// the directory at `dir_url` in the repository at `root_url`.
pub fn resolve(url: &str, dir_url: &str, root_url: &str) -> Result<String, String> {
    let url = strip_peg(url);
    let (scheme, after) = dir_url.split_once("://").ok_or_else(|| format!("'{dir_url}' is not a URL"))?;
    let authority = after.split('/').next().unwrap_or_default();
    let joined = if url.contains("://") {
        url.to_string()
    } else if let Some(rest) = url.strip_prefix("^/") {
        format!("{}/{rest}", root_url.trim_end_matches('/'))
    } else if url.starts_with("../") {
        format!("{}/{url}", dir_url.trim_end_matches('/'))
    } else if url.starts_with("//") {
        format!("{scheme}:{url}")
    } else if url.starts_with('/') {
        format!("{scheme}://{authority}{url}")
    } else {
        return Err(format!("'{url}' is neither an absolute nor a relative svn URL"));
    };
    normalize(&joined)
}

/// `url` without a trailing `@PEG` (an `@` after the last `/`).
fn strip_peg(url: &str) -> &str {
    match (url.rfind('@'), url.rfind('/')) {
        (Some(at), Some(slash)) if at > slash => &url[..at],
        _ => url,
    }
}

/// Folds `.` and `..` path segments; `..` above the server's root is refused.
fn normalize(url: &str) -> Result<String, String> {
    let (scheme, after) = url.split_once("://").ok_or_else(|| format!("'{url}' is not a URL"))?;
    let (authority, path) = after.split_at(after.find('/').unwrap_or(after.len()));
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if segment == ".." {
            segments.pop().ok_or_else(|| format!("'{url}' goes above the server's root"))?;
        } else {
            segments.push(segment);
        }
    }
    Ok(format!("{scheme}://{authority}/{}", segments.join("/")))
}

/// `dir` joined to `base`, refused unless it stays below `base`.
fn destination(base: &Path, dir: &str) -> Result<PathBuf, String> {
    let relative = Path::new(dir);
    if dir.is_empty() || relative.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("directory '{dir}' must be a relative path inside the working copy"));
    }
    Ok(base.join(relative))
}

/// `scheme://authority` of a URL, to tell whether it is the project's server.
fn server_of(url: &str) -> Option<String> {
    let (scheme, after) = url.split_once("://")?;
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), after.split('/').next()?.to_ascii_lowercase()))
}

/// One checkout's fetching of externals.
pub(crate) struct Fetch<'a, 'h> {
    pub plugin: &'a SvnScm,
    pub context: &'a ScmContext,
    pub host: &'a Host<'h>,
    pub config_dir: &'a str,
    pub login: Option<(&'a str, &'a str)>,
    pub timeout: u64,
}

impl Fetch<'_, '_> {
    /// Fetches the externals defined anywhere in the working copy at `dir`,
    /// then theirs, down to [`MAX_EXTERNALS_DEPTH`].
    pub fn externals_of(&self, dir: &Path, level: usize) -> PluginResult<()> {
        for (holder, text) in self.definitions(dir)? {
            let info = self.plugin.info(&holder, self.config_dir)?;
            let (Some(dir_url), Some(root_url)) = (info.url, info.root) else {
                return Err(format!("svn: cannot read the URL of {holder}"));
            };
            let holder_path = Path::new(&holder);
            let shown = holder_path.strip_prefix(&self.context.work_dir).unwrap_or(holder_path).display().to_string();
            let at = if shown.is_empty() { ".".to_string() } else { shown };
            let refuse = |e: String| format!("svn: external in {at}: {e}");
            for external in parse(&text).map_err(refuse)? {
                let url = resolve(&external.url, &dir_url, &root_url).map_err(refuse)?;
                if is_file_url(&url) {
                    local_allowed(&url, &local_roots(self.context)).map_err(refuse)?;
                }
                if level > MAX_EXTERNALS_DEPTH {
                    return Err(refuse(format!("externals nest deeper than {MAX_EXTERNALS_DEPTH} levels")));
                }
                let dest = destination(holder_path, &external.dir).map_err(refuse)?;
                self.fetch(&external, &url, &dest).map_err(refuse)?;
                if dest.is_dir() {
                    self.externals_of(&dest, level + 1)?;
                }
            }
        }
        Ok(())
    }

    /// `(directory, property value)` for every `svn:externals` below `dir`
    /// (local: reads the working copy only).
    fn definitions(&self, dir: &Path) -> PluginResult<Vec<(String, String)>> {
        let out = Command::new(&self.plugin.svn)
            .args(["propget", "svn:externals", "-R", "--xml", "--non-interactive", "--config-dir", self.config_dir])
            .arg("--")
            .arg(dir)
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| format!("svn: cannot run {}: {e}", self.plugin.svn))?;
        if !out.status.success() {
            return Err(format!("svn: cannot read svn:externals: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(parse_propget(&String::from_utf8_lossy(&out.stdout)))
    }

    fn fetch(&self, external: &External, url: &str, dest: &Path) -> Result<(), String> {
        // The peg, if any, goes with the URL as written.
        let peg =
            external.url.rfind('@').filter(|at| Some(*at) > external.url.rfind('/')).map(|at| &external.url[at..]);
        let target = format!("{url}{}", peg.unwrap_or_default());
        let login = self.login.filter(|_| server_of(url) == server_of(&self.context.repo_url));
        self.host.message(&format!("svn: fetching external {} into {}", url, external.dir));
        let dest_text = dest.display().to_string();
        let revision = external.revision.as_deref();
        for verb in ["checkout", "export"] {
            let mut request =
                self.plugin.fetch_request(verb, revision, &target, &dest_text, self.config_dir, login, self.timeout);
            request.cwd = Some(self.context.work_dir.clone());
            let outcome = self.host.run(&request).map_err(|e| format!("cannot run {}: {e}", self.plugin.svn))?;
            if outcome.cancelled || self.host.is_cancelled() {
                return Err("stopped: the build was stopped or timed out".into());
            }
            if outcome.exit_code == 0 {
                return Ok(());
            }
            // E200007: a file external (the URL names a file): export it instead.
            if verb == "checkout" && outcome.last_line.contains("E200007") {
                continue;
            }
            return Err(format!("fetching {url} failed (exit code {}): {}", outcome.exit_code, outcome.last_line));
        }
        Ok(())
    }
}

/// `(path, value)` pairs of `svn propget --xml` output.
pub fn parse_propget(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<target") {
        rest = &rest[i..];
        let Some(path) = rest.find("path=\"").map(|p| &rest[p + 6..]).and_then(|r| r.find('"').map(|e| &r[..e])) else {
            break;
        };
        let value = rest
            .find("<property")
            .and_then(|p| rest[p..].find('>').map(|e| &rest[p + e + 1..]))
            .and_then(|r| r.find("</property>").map(|e| &r[..e]));
        if let Some(value) = value {
            out.push((unescape(path), unescape(value)));
        }
        rest = &rest[1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(url: &str, revision: Option<&str>, dir: &str) -> External {
        External { url: url.into(), revision: revision.map(String::from), dir: dir.into() }
    }

    #[test]
    fn both_syntaxes_parse() {
        let text = "# a comment\n\
                    ^/lib@12 lib\n\
                    -r 7 http://h/r/x \"my dir\"\n\
                    -r9 ../other/y y\n\
                    old http://h/r/old\n\
                    older -r 3 svn://h/r/z\n\
                    oldest -r4 file:///srv/r/w\n\
                    \n  spaced\\ url/../a sub\n";
        let parsed = parse(text).unwrap();
        assert_eq!(
            parsed,
            [
                ext("^/lib@12", None, "lib"),
                ext("http://h/r/x", Some("7"), "my dir"),
                ext("../other/y", Some("9"), "y"),
                ext("http://h/r/old", None, "old"),
                ext("svn://h/r/z", Some("3"), "older"),
                ext("file:///srv/r/w", Some("4"), "oldest"),
                ext("spaced url/../a", None, "sub"),
            ]
        );
        assert_eq!(parse("just-one").unwrap_err(), "cannot read the definition 'just-one'");
        assert_eq!(parse("\"open x").unwrap_err(), "unbalanced quotes in '\"open x'");
    }

    #[test]
    fn relative_urls_resolve_like_svn() {
        let (dir, root) = ("svn://h:3690/repos/proj/trunk/sub", "svn://h:3690/repos/proj");
        assert_eq!(resolve("^/lib@3", dir, root).unwrap(), "svn://h:3690/repos/proj/lib");
        assert_eq!(resolve("^/../other/x", dir, root).unwrap(), "svn://h:3690/repos/other/x");
        assert_eq!(resolve("../../y", dir, root).unwrap(), "svn://h:3690/repos/proj/y");
        assert_eq!(resolve("//elsewhere/r", dir, root).unwrap(), "svn://elsewhere/r");
        assert_eq!(resolve("/r/x", dir, root).unwrap(), "svn://h:3690/r/x");
        assert_eq!(resolve("file:///a/./b/../c", dir, root).unwrap(), "file:///a/c");
        // From a file:// repository, ^/.. reaches its neighbours on disk.
        assert_eq!(resolve("^/../../../etc/x", "file:///srv/r/p/trunk", "file:///srv/r/p").unwrap(), "file:///etc/x");
        assert!(resolve("^/../../../../..", "file:///srv/r/p/trunk", "file:///srv/r/p").is_err());
        assert!(resolve("plain", dir, root).is_err());
    }

    #[test]
    fn destinations_stay_inside() {
        let base = Path::new("/b/wc");
        assert_eq!(destination(base, "lib/x").unwrap(), Path::new("/b/wc/lib/x"));
        for bad in ["../up", "/abs", "a/../../b", ""] {
            assert!(destination(base, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn propget_xml_is_read() {
        let xml = "<?xml version=\"1.0\"?>\n<properties>\n<target\n   path=\"/w/a&amp;b\">\n<property\n   name=\"svn:externals\">^/lib lib\n-r 2 ../x x\n</property>\n</target>\n<target path=\"/w/c\">\n<property name=\"svn:externals\">file:///etc e</property>\n</target>\n</properties>\n";
        assert_eq!(
            parse_propget(xml),
            [("/w/a&b".to_string(), "^/lib lib\n-r 2 ../x x\n".to_string()), ("/w/c".into(), "file:///etc e".into())]
        );
    }
}
