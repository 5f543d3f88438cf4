//! Save-time validation. Every check names the field it rejects, so the web
//! form and the API can put the message next to the right input, and the
//! store refuses the whole save (nothing is half-written).
//!
//! The original accepted bad JSON and bad schedule specifiers and failed later,
//! at build time or silently; here they are refused when saved.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// A rejected value: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("field '{field}': {message}")]
pub struct ValidationError {
    /// The field name as the API and forms spell it.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    /// A new error.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_string(), message: message.into() }
    }
}

type VResult = Result<(), ValidationError>;

/// The longest name accepted.
pub const MAX_NAME: usize = 512;

/// An object name: not blank, no surrounding spaces or control characters.
pub fn name(field: &str, v: &str) -> VResult {
    if v.trim().is_empty() {
        return Err(ValidationError::new(field, "must not be blank"));
    }
    if v.trim() != v {
        return Err(ValidationError::new(field, "must not start or end with spaces"));
    }
    if v.chars().count() > MAX_NAME {
        return Err(ValidationError::new(field, format!("must be at most {MAX_NAME} characters")));
    }
    if v.chars().any(char::is_control) {
        return Err(ValidationError::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// A user name: letters, digits and `@ . + - _`, as Django allowed.
pub fn username(field: &str, v: &str) -> VResult {
    if v.is_empty() || v.len() > 150 {
        return Err(ValidationError::new(field, "must be 1 to 150 characters"));
    }
    if !v.chars().all(|c| c.is_alphanumeric() || "@.+-_".contains(c)) {
        return Err(ValidationError::new(field, "may contain only letters, digits and @ . + - _"));
    }
    Ok(())
}

/// A snippet name: it becomes a template variable (with `-` and spaces turned
/// into `_`), so it must make an identifier.
pub fn snippet_name(field: &str, v: &str) -> VResult {
    name(field, v)?;
    let mut chars = v.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ' ') {
        return Err(ValidationError::new(
            field,
            "must start with a letter or _ and contain only letters, digits, _, - and spaces",
        ));
    }
    Ok(())
}

/// A variable name (launch questions, output variables): an identifier.
pub fn identifier(field: &str, v: &str) -> VResult {
    let mut chars = v.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(ValidationError::new(field, format!("'{v}' is not a valid variable name")));
    }
    Ok(())
}

/// A JSON object (variables). Blank means `{}` and is accepted.
pub fn json_object(field: &str, v: &str) -> VResult {
    if v.trim().is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<Value>(v) {
        Err(e) => Err(ValidationError::new(field, format!("invalid JSON: {e}"))),
        Ok(Value::Object(_)) => Ok(()),
        Ok(_) => Err(ValidationError::new(field, "must be a JSON object ({\"name\": value, ...})")),
    }
}

/// Launch questions: a JSON list of `{variable, type, choices, prompt}`, with
/// `type` one of text (the default), radio or multi, and choices required for
/// radio and multi.
pub fn launch_questions(field: &str, v: &str) -> VResult {
    if v.trim().is_empty() {
        return Ok(());
    }
    let list = match serde_json::from_str::<Value>(v) {
        Err(e) => return Err(ValidationError::new(field, format!("invalid JSON: {e}"))),
        Ok(Value::Array(list)) => list,
        Ok(_) => return Err(ValidationError::new(field, "must be a JSON list of questions")),
    };
    let mut seen = std::collections::HashSet::new();
    for (i, q) in list.iter().enumerate() {
        let n = i + 1;
        let err = |m: String| ValidationError::new(field, format!("question {n}: {m}"));
        let obj = q.as_object().ok_or_else(|| err("must be an object".into()))?;
        for key in obj.keys() {
            if !["variable", "type", "choices", "prompt"].contains(&key.as_str()) {
                return Err(err(format!("unknown key '{key}' (expected variable, type, choices, prompt)")));
            }
        }
        let var = obj.get("variable").and_then(Value::as_str).ok_or_else(|| err("'variable' is required".into()))?;
        identifier(field, var).map_err(|e| err(e.message))?;
        if !seen.insert(var.to_string()) {
            return Err(err(format!("variable '{var}' is asked twice")));
        }
        let kind = match obj.get("type") {
            None | Some(Value::Null) => "text",
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(err("'type' must be a string".into())),
        };
        if !["text", "radio", "multi"].contains(&kind) {
            return Err(err(format!("'type' must be one of text, radio, multi (not '{kind}')")));
        }
        match obj.get("choices") {
            None | Some(Value::Null) if kind == "text" => {}
            Some(Value::Array(c)) if c.iter().all(Value::is_string) && (kind == "text" || !c.is_empty()) => {}
            _ if kind == "text" => return Err(err("'choices' must be a list of strings".into())),
            _ => return Err(err(format!("'{kind}' needs 'choices', a non-empty list of strings"))),
        }
        if let Some(p) = obj.get("prompt") {
            if !p.is_string() && !p.is_null() {
                return Err(err("'prompt' must be a string".into()));
            }
        }
    }
    Ok(())
}

/// A repository URL: blank (no checkout), a URL with a known scheme and a
/// host (or a `file://` path), or scp-like `user@host:path`.
pub fn repo_url(field: &str, v: &str) -> VResult {
    if v.is_empty() {
        return Ok(());
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ValidationError::new(field, "must not contain spaces"));
    }
    if let Some((scheme, rest)) = v.split_once("://") {
        const SCHEMES: &[&str] = &["http", "https", "git", "ssh", "git+ssh", "svn", "svn+ssh", "file"];
        if !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(ValidationError::new(
                field,
                format!("unsupported scheme '{scheme}' (use one of {})", SCHEMES.join(", ")),
            ));
        }
        let host = rest.split('/').next().unwrap_or("");
        if scheme != "file" && host.rsplit('@').next().unwrap_or("").is_empty() {
            return Err(ValidationError::new(field, "is missing a host"));
        }
        if scheme == "file" && !rest.starts_with('/') {
            return Err(ValidationError::new(field, "file:// URLs need an absolute path"));
        }
        return Ok(());
    }
    // scp-like: [user@]host:path
    if let Some((host, path)) = v.split_once(':') {
        let host = host.rsplit('@').next().unwrap_or("");
        if !host.is_empty() && !path.is_empty() && !host.contains('/') {
            return Ok(());
        }
    }
    Err(ValidationError::new(field, "is not a URL (expected e.g. https://host/repo.git or git@host:repo.git)"))
}

/// What admins allow at save beyond the fixed rules: from settings, handed
/// to the store when it is opened (the store never reads settings itself).
#[derive(Debug, Clone, Default)]
pub struct SavePolicy {
    /// `[repositories] local_roots`: the only directories `file://` and path
    /// repositories may be under. Empty: no local repositories at all.
    pub local_repository_roots: Vec<PathBuf>,
    /// `[retention]`: the maximums a project's keep rules may ask for.
    pub retention: crate::settings::RetentionSettings,
}

/// The largest keep rule a project may name (builds or days) when the
/// administrator sets no maximum.
pub const MAX_KEEP: i64 = 1_000_000;

/// A project's keep rule (`log_keep_days`, ...) no larger than the
/// administrator's maximum for it (`max`, 0: none). Refused, not capped, so
/// the owner sees what they get.
pub fn keep_rule_within_maximum(field: &str, value: Option<i64>, max: u32) -> VResult {
    match value {
        Some(v) if max > 0 && v > i64::from(max) => Err(ValidationError::new(
            field,
            format!(
                "must be at most {max}: the administrator's maximum ('retention.max_{field}'); \
                 leave it empty for the default"
            ),
        )),
        _ => Ok(()),
    }
}

/// The local path a repository URL names, if it names one: a `file://` URL
/// (percent-decoded, as git and svn read it) or a bare path (what git clones
/// from the local disk). `None` for network URLs and scp-like `host:path`.
pub fn local_repository_path(url: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let url = url.trim();
    if url.is_empty() {
        return None;
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !scheme.eq_ignore_ascii_case("file") {
            return None;
        }
        // file://host/path: the host (localhost, or anything) is not the path.
        let path = if rest.starts_with('/') { rest } else { rest.find('/').map_or("/", |i| &rest[i..]) };
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
        return Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
    }
    if let Some((host, _)) = url.split_once(':') {
        if !host.is_empty() && !host.contains('/') {
            return None;
        }
    }
    Some(PathBuf::from(url))
}

/// `path` with symlinks resolved as far as it exists (the rest appended):
/// `None` for a relative path or one with `..` in it.
fn resolved(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return None;
    }
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(real, |p: PathBuf, c: &std::ffi::OsString| p.join(c)));
        }
        rest.push(existing.file_name()?.to_os_string());
        if !existing.pop() {
            return None;
        }
    }
}

/// A repository URL against the admin's local roots: network URLs pass; a
/// local one must resolve (symlinks followed, no `..`) to a path inside one
/// of `roots`, which must not be empty.
pub fn local_repository(field: &str, url: &str, roots: &[PathBuf]) -> VResult {
    let Some(path) = local_repository_path(url) else { return Ok(()) };
    if roots.is_empty() {
        return Err(ValidationError::new(
            field,
            format!(
                "'{}' is a local repository, and this server allows none (an admin lists the directories \
                 local repositories may be in under [repositories] local_roots)",
                path.display()
            ),
        ));
    }
    let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    let Some(real) = resolved(&path) else {
        return Err(ValidationError::new(
            field,
            format!("local repository '{}' must be an absolute path without '..'", path.display()),
        ));
    };
    let inside = roots.iter().any(|root| resolved(root).is_some_and(|root| real.starts_with(root)));
    if inside {
        return Ok(());
    }
    let via = if real != path { format!(" (which resolves to '{}')", real.display()) } else { String::new() };
    Err(ValidationError::new(
        field,
        format!(
            "local repository '{}'{via} is outside the directories local repositories may be in ({})",
            path.display(),
            shown.join(", ")
        ),
    ))
}

/// An http(s) URL, blank allowed (API endpoints).
pub fn http_url(field: &str, v: &str) -> VResult {
    if v.is_empty() {
        return Ok(());
    }
    let rest = v.strip_prefix("https://").or_else(|| v.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !v.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(ValidationError::new(field, "must be an http:// or https:// URL")),
    }
}

/// A build script: blank, or starting with an interpreter line.
pub fn script(field: &str, v: &str) -> VResult {
    if v.is_empty() || v.starts_with("#!") {
        Ok(())
    } else {
        Err(ValidationError::new(field, "must start with an interpreter line such as #!/bin/bash"))
    }
}

/// A schedule specifier: blank, or a comma list of numbers and ranges `a-b`
/// within `0..=max` (hours allow 24, as the original did).
pub fn schedule_spec(field: &str, v: &str, max: u32) -> VResult {
    if v.trim().is_empty() {
        return Ok(());
    }
    let bad = |m: String| Err(ValidationError::new(field, m));
    for part in v.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) else {
            return bad(format!("'{part}' is not a number or a range like 8-17"));
        };
        if a > b || b > max {
            return bad(format!("'{part}' must be within 0-{max}, low to high"));
        }
    }
    Ok(())
}

/// An integer within bounds.
pub fn range(field: &str, v: i64, min: i64, max: i64) -> VResult {
    if v < min || v > max {
        return Err(ValidationError::new(field, format!("must be between {min} and {max}")));
    }
    Ok(())
}

/// Optional text with a length limit and no whitespace (tokens, image names).
pub fn token(field: &str, v: Option<&str>, max: usize) -> VResult {
    if let Some(v) = v {
        if v.len() > max {
            return Err(ValidationError::new(field, format!("must be at most {max} characters")));
        }
        if v.chars().any(char::is_whitespace) {
            return Err(ValidationError::new(field, "must not contain spaces"));
        }
    }
    Ok(())
}

/// A plugin key such as an scm type or isolation method: short, lowercase-ish.
pub fn plugin_key(field: &str, v: &str) -> VResult {
    if v.len() > 64 || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(ValidationError::new(field, "must be a plugin name (letters, digits, _ and -)"));
    }
    Ok(())
}

/// `0x` and three or four octal digits (the pool's build-root permissions).
pub fn permissions_hex(field: &str, v: &str) -> VResult {
    match v.strip_prefix("0x") {
        Some(d) if (3..=4).contains(&d.len()) && d.chars().all(|c| ('0'..='7').contains(&c)) => Ok(()),
        _ => Err(ValidationError::new(field, "must look like 0x777 (octal permission digits)")),
    }
}

/// A cron expression (5 fields) or blank.
pub fn cron(field: &str, v: &str) -> VResult {
    if v.trim().is_empty() {
        return Ok(());
    }
    parse_cron(v).map(|_| ()).map_err(|e| ValidationError::new(field, e))
}

/// Parses a 5-field cron expression (minute hour day-of-month month
/// day-of-week). Here, with the field checks, so the store needs nothing of
/// the engine; the scheduler parses with it too.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    use std::str::FromStr;
    let fields = expr.split_whitespace().count();
    if fields != 5 {
        return Err(format!(
            "'{expr}' has {fields} fields; a cron expression has 5: minute hour day-of-month month day-of-week"
        ));
    }
    croner::Cron::from_str(expr.trim()).map_err(|e| format!("'{expr}' is not a valid cron expression: {e}"))
}

/// An IANA time zone name such as `Europe/Paris` (blank means UTC).
pub fn time_zone(field: &str, v: &str) -> VResult {
    if v.trim().is_empty() {
        return Ok(());
    }
    v.trim()
        .parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| ValidationError::new(field, format!("unknown time zone '{v}' (use a name like Europe/Paris)")))
}

/// A JSON list of strings.
pub fn string_list(field: &str, v: &str) -> VResult {
    if v.trim().is_empty() {
        return Ok(());
    }
    match serde_json::from_str::<Vec<String>>(v) {
        Ok(_) => Ok(()),
        Err(e) => Err(ValidationError::new(field, format!("must be a JSON list of names: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field() {
        let e = json_object("variables", "{nope").unwrap_err();
        assert_eq!(e.field, "variables");
        assert!(e.to_string().starts_with("field 'variables': invalid JSON: "), "{e}");
        assert!(json_object("variables", "[1]").is_err());
        assert!(json_object("variables", r#"{"a": [1]}"#).is_ok());
    }

    #[test]
    fn launch_questions_rules() {
        assert!(launch_questions("launch_questions", "[]").is_ok());
        assert!(launch_questions(
            "launch_questions",
            r#"[{"variable":"foo","type":"multi","choices":["a","b"]},{"variable":"baz","prompt":"?"}]"#
        )
        .is_ok());
        let e = launch_questions("launch_questions", r#"[{"variable":"x","type":"radio"}]"#).unwrap_err();
        assert!(e.message.contains("question 1"), "{e}");
        assert!(launch_questions("launch_questions", r#"[{"variable":"1x"}]"#).is_err());
        assert!(
            launch_questions("launch_questions", r#"[{"variable":"x","type":"dropdown","choices":["a"]}]"#).is_err()
        );
        assert!(launch_questions("launch_questions", r#"[{"variable":"x"},{"variable":"x"}]"#).is_err());
        assert!(launch_questions("launch_questions", r#"{"variable":"x"}"#).is_err());
    }

    #[test]
    fn urls() {
        for ok in [
            "",
            "https://github.com/a/b.git",
            "git@github.com:a/b.git",
            "ssh://git@h:22/r",
            "file:///srv/r.git",
            "svn://h/r",
        ] {
            assert!(repo_url("repo_url", ok).is_ok(), "{ok}");
        }
        for bad in ["github.com", "ftp://h/r", "https:///r", "http://h/a b", "file://rel"] {
            assert!(repo_url("repo_url", bad).is_err(), "{bad}");
        }
        assert!(http_url("api_endpoint", "https://ghe.example/api/v3").is_ok());
        assert!(http_url("api_endpoint", "ghe.example").is_err());
    }

    #[test]
    fn local_repositories_only_under_the_roots() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("git");
        std::fs::create_dir_all(root.join("team")).unwrap();
        std::fs::create_dir_all(dir.path().join("private/repo.git")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("private"), root.join("escape")).unwrap();
        let roots = vec![root.clone()];
        let r = root.display();
        for ok in [
            format!("file://{r}/team/a.git"),
            format!("FILE://{r}/team/not-yet-made.git"),
            format!("file://localhost{r}/team"),
            "https://h/r.git".to_string(),
            "git@h:r.git".to_string(),
            String::new(),
        ] {
            assert!(local_repository("repo_url", &ok, &roots).is_ok(), "{ok}");
        }
        for (bad, why) in [
            (format!("file://{r}/../private/repo.git"), "without '..'"),
            (format!("file://{r}/%2e%2e/private/repo.git"), "without '..'"),
            (format!("file://{r}/escape/repo.git"), "which resolves to"),
            (format!("file://{}/private/repo.git", dir.path().display()), "is outside"),
            (format!("{}/private/repo.git", dir.path().display()), "is outside"),
            ("relative/repo".to_string(), "absolute path"),
            (format!("file://{r}2/x"), "is outside"),
        ] {
            let err = local_repository("repo_url", &bad, &roots).unwrap_err();
            assert!(err.message.contains(why) && err.field == "repo_url", "{bad}: {err}");
        }
        let err = local_repository("repo_url", &format!("file://{r}/team"), &[]).unwrap_err();
        assert!(err.message.contains("allows none") && err.message.contains("[repositories] local_roots"), "{err}");
    }

    #[test]
    fn schedules_and_names() {
        assert!(schedule_spec("weekday_start_hours", "0,8,16", 24).is_ok());
        assert!(schedule_spec("weekday_start_hours", "0-24", 24).is_ok());
        assert!(schedule_spec("weekday_start_minutes", "0,61", 59).is_err());
        assert!(schedule_spec("weekday_start_hours", "9-5", 24).is_err());
        assert!(schedule_spec("weekday_start_hours", "noon", 24).is_err());
        assert!(name("name", " x").is_err());
        assert!(name("name", "").is_err());
        assert!(snippet_name("name", "my-snippet").is_ok());
        assert!(snippet_name("name", "1abc").is_err());
        assert!(permissions_hex("permissions_hex", "0x777").is_ok());
        assert!(permissions_hex("permissions_hex", "777").is_err());
        assert!(script("script", "echo hi").is_err());
    }
}
