//! Masking secrets in build output: the exact value, reversed, and its common
//! encodings (base64 and base64url, padded or not and at any alignment, hex
//! in either case, URL-encoded, JSON-escaped), and a value split across two
//! lines of one write.
//!
//! Encodings with one spelling per value are literal patterns, all found in
//! one pass (Aho-Corasick, longest match first). URL-encoding and JSON
//! escaping have many spellings (which characters an encoder escapes, hex
//! case, `+` for a space), so they are matched by decoding: a run of text is
//! masked when it decodes, character by character, to the secret.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// Values shorter than this (in bytes) are not masked: they would mask
/// ordinary text. Documented in docs/variables.md.
pub const MIN_MASK_LEN: usize = 6;
/// What a masked secret looks like.
pub const MASK: &str = "********";

/// The secrets of one build and how to find them.
#[derive(Default)]
pub struct Masker {
    literals: Vec<String>,
    automaton: Option<AhoCorasick>,
    /// Secrets that URL-encoding or JSON escaping would change.
    escapable: Vec<Vec<char>>,
}

impl Masker {
    /// Nothing to mask yet.
    pub fn is_empty(&self) -> bool {
        self.literals.is_empty()
    }

    /// Masks `secret` (and each of its lines, for keys) from now on. Answers
    /// false when the value is too short to be masked.
    pub fn add(&mut self, secret: &str) -> bool {
        let whole = secret.trim().len() >= MIN_MASK_LEN;
        let mut changed = false;
        for candidate in std::iter::once(secret).chain(secret.lines()) {
            let candidate = candidate.trim();
            if candidate.len() < MIN_MASK_LEN {
                continue;
            }
            for form in encodings(candidate) {
                if form.len() >= MIN_MASK_LEN && !self.literals.contains(&form) {
                    self.literals.push(form);
                    changed = true;
                }
            }
            let chars: Vec<char> = candidate.chars().collect();
            if chars.iter().any(|c| !is_unreserved(*c)) && !self.escapable.contains(&chars) {
                self.escapable.push(chars);
            }
        }
        if changed {
            self.automaton = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&self.literals).ok();
        }
        whole
    }

    /// `text` with every secret masked; `None` when it holds none.
    pub fn mask(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        if let Some(ac) = &self.automaton {
            if ac.is_match(text) {
                let mut dst = String::with_capacity(text.len());
                ac.replace_all_with(text, &mut dst, |_, _, d| {
                    d.push_str(MASK);
                    true
                });
                out = Some(dst);
            }
        }
        let current = out.as_deref().unwrap_or(text);
        if !self.escapable.is_empty() && current.contains(['%', '\\', '+']) {
            let mut decoded = current.to_string();
            let mut hit = false;
            for secret in &self.escapable {
                if let Some(masked) = mask_decoded(&decoded, secret) {
                    decoded = masked;
                    hit = true;
                }
            }
            if hit {
                out = Some(decoded);
            }
        }
        out
    }

    /// Masks a secret split across two consecutive lines (`lines` came from
    /// one write): the end of one line and the start of the next.
    pub fn mask_split(&self, lines: &mut [String]) {
        if lines.len() < 2 || self.literals.is_empty() {
            return;
        }
        for i in 0..lines.len() - 1 {
            let mut cut: Option<(usize, usize)> = None;
            'found: for secret in &self.literals {
                for (k, _) in secret.char_indices().skip(1) {
                    let (head, tail) = secret.split_at(k);
                    if lines[i].ends_with(head) && lines[i + 1].starts_with(tail) {
                        cut = Some((lines[i].len() - head.len(), tail.len()));
                        break 'found;
                    }
                }
            }
            if let Some((end_at, start_len)) = cut {
                lines[i].truncate(end_at);
                lines[i].push_str(MASK);
                lines[i + 1].replace_range(..start_len, MASK);
            }
        }
    }
}

/// RFC 3986 unreserved characters: left alone by every URL encoder and by JSON.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~".contains(c)
}

/// The literal spellings of `secret`.
fn encodings(secret: &str) -> Vec<String> {
    let bytes = secret.as_bytes();
    let reversed: String = secret.chars().rev().collect();
    let mut forms = vec![secret.to_string(), reversed, hex::encode(bytes), hex::encode_upper(bytes)];
    let with_newline = [bytes, b"\n"].concat();
    for value in [bytes, with_newline.as_slice()] {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            forms.push(engine.encode(value));
        }
    }
    // The characters of a base64 text that depend on the secret alone, for
    // each of the three places it can start within a 3-byte group: this finds
    // it inside a longer encoded text (`user:secret`, a trailing newline).
    for offset in 0..3 {
        let padded = [vec![0u8; offset], bytes.to_vec()].concat();
        let first = (offset * 8).div_ceil(6);
        let last = (padded.len() * 8) / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let text = engine.encode(&padded);
            if let Some(core) = text.get(first..last) {
                forms.push(core.to_string());
            }
        }
    }
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    forms.sort();
    forms.dedup();
    forms
}

/// `text` with each run that decodes (URL-encoding, `+` for space, JSON
/// escapes, mixed freely) to `secret` masked; `None` when there is none.
fn mask_decoded(text: &str, secret: &[char]) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut hit = false;
    let mut i = 0;
    while i < text.len() {
        match match_at(text, i, secret) {
            Some(end) if end > i => {
                out.push_str(MASK);
                hit = true;
                i = end;
            }
            _ => {
                let c = text[i..].chars().next().expect("i is on a char boundary");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    hit.then_some(out)
}

/// The end of the longest run of `text` from `start` that decodes to `secret`.
fn match_at(text: &str, start: usize, secret: &[char]) -> Option<usize> {
    let mut at = vec![start];
    for &c in secret {
        let mut next = Vec::new();
        for &p in &at {
            spellings_at(text, p, c, &mut next);
        }
        next.sort_unstable();
        next.dedup();
        if next.is_empty() {
            return None;
        }
        at = next;
    }
    at.last().copied()
}

/// Pushes the end of every spelling of `c` that starts at `p` in `text`.
fn spellings_at(text: &str, p: usize, c: char, ends: &mut Vec<usize>) {
    let rest = &text.as_bytes()[p.min(text.len())..];
    let mut buf = [0u8; 4];
    let utf8 = c.encode_utf8(&mut buf).as_bytes();
    if rest.starts_with(utf8) {
        ends.push(p + utf8.len());
    }
    if c == ' ' && rest.starts_with(b"+") {
        ends.push(p + 1);
    }
    // %XX for every byte, either hex case.
    if rest.len() >= 3 * utf8.len()
        && utf8.iter().enumerate().all(|(i, b)| {
            let e = &rest[3 * i..3 * i + 3];
            e[0] == b'%' && std::str::from_utf8(&e[1..]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) == Some(*b)
        })
    {
        ends.push(p + 3 * utf8.len());
    }
    if rest.first() != Some(&b'\\') {
        return;
    }
    let short = match c {
        '"' => Some(b'"'),
        '\\' => Some(b'\\'),
        '/' => Some(b'/'),
        '\n' => Some(b'n'),
        '\t' => Some(b't'),
        '\r' => Some(b'r'),
        '\u{8}' => Some(b'b'),
        '\u{c}' => Some(b'f'),
        _ => None,
    };
    if short.is_some() && rest.get(1) == short.as_ref() {
        ends.push(p + 2);
    }
    // \uXXXX, a surrogate pair beyond the basic plane.
    let mut units = [0u16; 2];
    let units = c.encode_utf16(&mut units);
    let mut q = 0;
    for unit in units.iter() {
        let Some(e) = rest.get(q..q + 6) else { return };
        let ok = e[0] == b'\\'
            && e[1] == b'u'
            && std::str::from_utf8(&e[2..]).ok().and_then(|h| u16::from_str_radix(h, 16).ok()) == Some(*unit);
        if !ok {
            return;
        }
        q += 6;
    }
    ends.push(p + q);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "p@ss w0rd/\"x\"+S3cr3t!";

    fn masker() -> Masker {
        let mut m = Masker::default();
        assert!(m.add(SECRET));
        m
    }

    fn assert_masked(m: &Masker, text: &str) {
        let out = m.mask(text).unwrap_or_else(|| panic!("not masked: {text}"));
        assert!(out.contains(MASK), "{out}");
        for probe in ["w0rd", "S3cr3t", "cDBzcyB3MHJk"] {
            assert!(!out.contains(probe), "{probe} left in {out}");
        }
    }

    #[test]
    fn every_encoding_is_masked() {
        let m = masker();
        let b = SECRET.as_bytes();
        assert_masked(&m, &format!("plain {SECRET} end"));
        assert_masked(&m, &SECRET.chars().rev().collect::<String>());
        for text in [
            STANDARD.encode(b),
            STANDARD_NO_PAD.encode(b),
            URL_SAFE.encode(b),
            URL_SAFE_NO_PAD.encode(b),
            STANDARD.encode([b, b"\n"].concat()),
            STANDARD.encode([b"user:", b].concat()),
            hex::encode(b),
            hex::encode_upper(b),
            serde_json::to_string(SECRET).unwrap(),
            "p%40ss%20w0rd%2F%22x%22%2BS3cr3t%21".into(),
            "p%40ss+w0rd/%22x%22%2bS3cr3t!".into(),
            "p\\u0040ss w0rd\\/\\\"x\\\"+S3cr3t!".into(),
        ] {
            let out = m.mask(&format!("v={text};")).unwrap_or_else(|| panic!("not masked: {text}"));
            assert!(!out.contains(&text), "{text} left in {out}");
        }
        assert_eq!(m.mask("nothing here, 50% off + \\n"), None);
    }

    #[test]
    fn split_across_lines_and_short_values() {
        let m = masker();
        let mut lines = vec!["first p@ss w0".to_string(), "rd/\"x\"+S3cr3t! rest".to_string()];
        m.mask_split(&mut lines);
        assert_eq!(lines, vec![format!("first {MASK}"), format!("{MASK} rest")]);
        let mut m = Masker::default();
        assert!(!m.add("abc"));
        assert!(m.is_empty());
        assert!(m.add("hunter22"));
        assert_eq!(m.mask("password is hunter22!").as_deref(), Some("password is ********!"));
    }
}
