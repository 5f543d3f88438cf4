//! Shell quoting for template values that reach `/bin/sh`: the `shell_quote`
//! filter every Vespene template context offers, and the default rendering
//! of values in the `command` trigger and of launch answers in scripts.

/// Quotes `text` as one POSIX shell word: left as it is when it holds only
/// characters no shell treats specially, otherwise in single quotes (a `'`
/// inside becomes `'\''`). The empty string becomes `''`. A NUL byte cannot
/// be part of a shell word, so it is an error.
///
/// ```
/// use vespene_plugin_api::shell::quote;
/// assert_eq!(quote("main").unwrap(), "main");
/// assert_eq!(quote("x; rm -rf /").unwrap(), "'x; rm -rf /'");
/// assert_eq!(quote("it's").unwrap(), r"'it'\''s'");
/// ```
pub fn quote(text: &str) -> Result<String, String> {
    if text.contains('\0') {
        return Err("a value holding a NUL byte cannot be passed to a shell".into());
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | ',' | '+' | '@' | '%');
    if !text.is_empty() && text.chars().all(plain) {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoted_words_come_back_whole_from_sh() {
        for value in ["plain", "", "a b", "$(id)", "`id`", "x'y", "'", "a\nb", "-rf", "~root", "*", "a;b|c&d>e<f"] {
            let q = quote(value).unwrap();
            let out = std::process::Command::new("/bin/sh").arg("-c").arg(format!("printf %s {q}")).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), value, "{q}");
        }
        assert!(quote("a\0b").is_err());
    }
}
