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

use vespene_plugin_api::serde::Deserialize;
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, plugin_name, BatchInfo, Kind, Lines, Output, PluginResult};

/// The parameters this plugin takes; any other key is a configuration error.
#[derive(Deserialize)]
#[serde(crate = "vespene_plugin_api::serde", deny_unknown_fields)]
struct Parameters {
    /// The words to redact: at least one, none empty.
    words: Vec<String>,
}

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
    pub fn redact(&self, text: &str) -> Option<String> {
        let (mut start, mut len) = self.first_match(text)?;
        let mut redacted = String::with_capacity(text.len());
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
        let Parameters { mut words } = params::parse(config, Kind::Output, plugin_name!())?;
        if words.is_empty() {
            return Err("parameter 'words' must list at least one word".to_string());
        }
        if words.iter().any(String::is_empty) {
            return Err("parameter 'words' must not hold an empty word".to_string());
        }
        words.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        words.dedup();
        Ok(Redactor { words })
    }

    fn filter(&self, _info: &BatchInfo, lines: &mut Lines) -> PluginResult<()> {
        for line in lines.iter_mut() {
            if let Some(text) = self.redact(line.text()) {
                line.set_text(text);
            }
        }
        Ok(())
    }
}

export_plugin! {
    description: "Example output filter: replaces configured words in build logs by ****",
    output: Redactor,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_lines};
    use vespene_plugin_api::{plugin_name, Stream};

    use super::Redactor;

    fn filter(config: Value, texts: &[&str]) -> Vec<String> {
        testkit::output::<Redactor>(config).unwrap().filter(texts, 0).unwrap()
    }

    #[test]
    fn replaces_every_occurrence_of_every_word() {
        let cfg = json!({"words": ["hunter2", "db.internal"]});
        let out = filter(cfg, &["password hunter2 for db.internal", "hunter2hunter2!", "nothing here", ""]);
        assert_eq!(out, ["password **** for ****", "********!", "nothing here", ""]);
    }

    #[test]
    fn the_longest_of_overlapping_words_wins() {
        let cfg = json!({"words": ["secret", "secretpass", "pass"]});
        assert_eq!(filter(cfg, &["a secretpass, a secret, a pass"]), ["a ****, a ****, a ****"]);
        // "cretpa" starts earlier than "pass", so it is the one replaced.
        assert_eq!(filter(json!({"words": ["pass", "cretpa"]}), &["secretpass"]), ["se****ss"]);
    }

    #[test]
    fn works_on_multibyte_text() {
        assert_eq!(filter(json!({"words": ["clé", "ü"]}), &["la clé: über"]), ["la ****: ****ber"]);
        // The search for "y" after "€" was found must not cut the "€" in two.
        assert_eq!(filter(json!({"words": ["€", "y"]}), &["x€ y €"]), ["x**** **** ****"]);
    }

    #[test]
    fn message_lines_are_redacted_too_and_untouched_lines_are_not_copied() {
        let output = testkit::output::<Redactor>(json!({"words": ["hunter2"]})).unwrap();
        let (info, mut lines) = fake_lines(&["clean line", "cloning with hunter2"], 1500);
        lines[1].stream = Stream::Message;
        let clean_buffer = lines[0].text().as_ptr();

        let lines = output.filter_lines(&info, lines).unwrap();

        assert_eq!(lines[0].text(), "clean line");
        assert_eq!(lines[0].text().as_ptr(), clean_buffer, "a line without a match keeps its buffer");
        assert_eq!(lines[1].text(), "cloning with ****");
        assert_eq!((lines[1].stream, lines[1].at_unix_ms), (Stream::Message, 1500));
        output.build_finished(&info).unwrap();
    }

    #[test]
    fn bad_configurations_name_the_parameter() {
        let name = plugin_name!();
        let cases = [
            (json!({}), format!("parameter 'words' of output plugin {name} is required")),
            (json!({"words": []}), "parameter 'words' must list at least one word".to_string()),
            (
                json!({"words": "hunter2"}),
                format!(
                    "parameter 'words' of output plugin {name}: invalid type: string \"hunter2\", expected a sequence"
                ),
            ),
            (
                json!({"words": ["a", 1]}),
                format!("parameter 'words[1]' of output plugin {name}: invalid type: integer `1`, expected a string"),
            ),
            (json!({"words": ["a", ""]}), "parameter 'words' must not hold an empty word".to_string()),
            (json!({"words": ["a"], "mask": "x"}), format!("unknown parameter 'mask' for output plugin {name}")),
        ];
        for (cfg, expected) in cases {
            assert_eq!(testkit::output::<Redactor>(cfg.clone()).err().unwrap(), expected, "{cfg}");
        }
    }
}
