//! An example **output** plugin: redacts words from build logs.
//!
//! Every occurrence of each configured word, in every line of both logs (the
//! build's output and the housekeeping messages), is replaced by `****`
//! before the line is stored. Matching is exact and case-sensitive; where two
//! words match at the same place, the longer one is replaced.
//!
//! ```toml
//! [plugins.output.redact]
//! library = "template"
//! words = ["hunter2", "internal.example.com"]
//! ```
//!
//! The server already masks the secrets it knows about; this covers words it
//! cannot know, such as host names or customer names.
//!
//! Output plugins run on every batch of every build's output, so they must be
//! cheap. Here a line without a match is left untouched (no allocation), and
//! a line with matches is rebuilt once, into one new buffer. To
//! adapt it, change [`Redactor::redact`]; to drop a line, remove it from
//! `lines` in `filter`; to write lines elsewhere, flush in `build_finished`.

use vespene_plugin_api::abi_stable::std_types::{RString, RVec};
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, BatchInfo, Kind, Output, OutputLine, PluginResult};

/// The plugin's name, for messages.
const NAME: &str = "template";

/// The parameters this plugin takes; anything else is a configuration error.
const PARAMETERS: &[&str] = &["words"];

/// What a redacted word is replaced with.
pub const MASK: &str = "****";

/// The example output plugin: replaces configured words by [`MASK`].
#[derive(Debug)]
pub struct Redactor {
    /// The words, longest first so the longest wins a tie, without duplicates.
    words: Vec<String>,
}

impl Redactor {
    /// The earliest match of any word in `text`, as (start, length).
    fn first_match(&self, text: &str) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for word in &self.words {
            // Only a strictly earlier start replaces the best (longer words come
            // first), and such a match ends before `best_start + word.len()`.
            let limit = match best {
                None => text.len(),
                Some((best_start, _)) => {
                    let mut end = (best_start + word.len()).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    end
                }
            };
            if let Some(start) = text[..limit].find(word.as_str()) {
                if best.is_none_or(|(best_start, _)| start < best_start) {
                    best = Some((start, word.len()));
                }
            }
        }
        best
    }

    /// `text` with every word replaced, or `None` when nothing matches.
    pub fn redact(&self, text: &str) -> Option<RString> {
        let (mut start, mut len) = self.first_match(text)?;
        let mut redacted = RString::with_capacity(text.len());
        let mut rest = text;
        loop {
            redacted.push_str(&rest[..start]);
            redacted.push_str(MASK);
            rest = &rest[start + len..];
            match self.first_match(rest) {
                Some(next) => (start, len) = next,
                None => break,
            }
        }
        redacted.push_str(rest);
        Some(redacted)
    }
}

impl Output for Redactor {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Output, NAME, PARAMETERS)?;
        let mut words = match params.get("words") {
            Some(Value::Array(words)) if !words.is_empty() => words
                .iter()
                .map(|word| match word.as_str() {
                    Some(w) if !w.is_empty() => Ok(w.to_string()),
                    _ => Err(format!("parameter 'words' must hold non-empty strings, not {word}")),
                })
                .collect::<PluginResult<Vec<_>>>()?,
            _ => return Err("parameter 'words' (a non-empty list of strings) is required".to_string()),
        };
        words.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        words.dedup();
        Ok(Redactor { words })
    }

    fn filter(&self, _info: &BatchInfo, lines: &mut RVec<OutputLine>) -> PluginResult<()> {
        for line in lines.iter_mut() {
            if let Some(text) = self.redact(&line.text) {
                line.text = text;
            }
        }
        Ok(())
    }
}

export_plugin! {
    name: "template",
    description: "Example output filter: replaces configured words in build logs by ****",
    output: Redactor,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::abi::Stream;
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit::{fake_lines, output_from};

    use super::{Redactor, NAME};

    fn filter(config_json: &str, texts: &[&str]) -> Vec<String> {
        let output = output_from::<Redactor>(config_json).unwrap();
        let (info, lines) = fake_lines(texts, 0);
        let lines = output.filter(info, lines).into_result().unwrap();
        lines.iter().map(|l| l.text.to_string()).collect()
    }

    #[test]
    fn replaces_every_occurrence_of_every_word() {
        let cfg = r#"{"words": ["hunter2", "db.internal"]}"#;
        let out = filter(cfg, &["password hunter2 for db.internal", "hunter2hunter2!", "nothing here", ""]);
        assert_eq!(out, ["password **** for ****", "********!", "nothing here", ""]);
    }

    #[test]
    fn the_longest_of_overlapping_words_wins() {
        let cfg = r#"{"words": ["secret", "secretpass", "pass"]}"#;
        assert_eq!(filter(cfg, &["a secretpass, a secret, a pass"]), ["a ****, a ****, a ****"]);
        // "cretpa" starts earlier than "pass", so it is the one replaced.
        assert_eq!(filter(r#"{"words": ["pass", "cretpa"]}"#, &["secretpass"]), ["se****ss"]);
    }

    #[test]
    fn works_on_multibyte_text() {
        assert_eq!(filter(r#"{"words": ["clé", "ü"]}"#, &["la clé: über"]), ["la ****: ****ber"]);
        // The search for "y" after "€" was found must not cut the "€" in two.
        assert_eq!(filter(r#"{"words": ["€", "y"]}"#, &["x€ y €"]), ["x**** **** ****"]);
    }

    #[test]
    fn message_lines_are_redacted_too_and_untouched_lines_are_not_copied() {
        let output = output_from::<Redactor>(r#"{"words": ["hunter2"]}"#).unwrap();
        let (info, mut lines) = fake_lines(&["clean line", "cloning with hunter2"], 1500);
        lines[1].stream = Stream::Message;
        let clean_buffer = lines[0].text.as_ptr();

        let lines = output.filter(info, lines).into_result().unwrap();

        assert_eq!(lines[0].text.as_str(), "clean line");
        assert_eq!(lines[0].text.as_ptr(), clean_buffer, "a line without a match keeps its buffer");
        assert_eq!(lines[1].text.as_str(), "cloning with ****");
        assert_eq!((lines[1].stream, lines[1].at_unix_ms), (Stream::Message, 1500));
        output.build_finished(info).into_result().unwrap();
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let required = "parameter 'words' (a non-empty list of strings) is required".to_string();
        let cases = [
            (json!({}), required.clone()),
            (json!({"words": []}), required.clone()),
            (json!({"words": "hunter2"}), required),
            (json!({"words": ["a", 1]}), "parameter 'words' must hold non-empty strings, not 1".to_string()),
            (json!({"words": [""]}), "parameter 'words' must hold non-empty strings, not \"\"".to_string()),
            (json!({"words": ["a"], "mask": "x"}), format!("unknown parameter 'mask' for output plugin {NAME}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(output_from::<Redactor>(&cfg.to_string()).err().unwrap(), expected, "{cfg}");
        }
    }
}
