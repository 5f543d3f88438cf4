//! The `timestamp` output plugin: prefixes every build output line with the
//! minutes elapsed since the build started, as in `    1.50m | compiling...`.
//!
//! Its one parameter, `mode`, defaults to and must be `elapsed`.
//!
//! Output plugins run on every batch of every build's output, so the work is
//! kept to one allocation per line: the prefix is formatted into a reused
//! buffer, only again when the line's time differs from the previous line's.

use std::fmt::Write as _;

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, BatchInfo, Kind, Lines, Output, PluginResult};

/// The `timestamp` output plugin.
#[derive(Debug, Default)]
pub struct Timestamp;

/// Prefixes each line's text with the minutes since `info.build_started_unix_ms`,
/// formatted `{:8.2}m | `. Lines stamped before the start count as 0.
///
/// This is the whole of the plugin's `filter`, public so benchmarks and other
/// in-process callers run exactly the same code.
pub fn stamp_lines(info: &BatchInfo, lines: &mut Lines) {
    let mut prefix = String::with_capacity(16);
    // Lines of one batch usually share a timestamp: format each distinct one once.
    let mut prefix_for: Option<i64> = None;
    for line in lines.iter_mut() {
        if prefix_for != Some(line.at_unix_ms) {
            let elapsed_ms = line.at_unix_ms.saturating_sub(info.build_started_unix_ms).max(0);
            let minutes = elapsed_ms as f64 / 60000.0;
            prefix.clear();
            // Writing into a String cannot fail.
            let _ = write!(prefix, "{minutes:8.2}m | ");
            prefix_for = Some(line.at_unix_ms);
        }
        // One exactly-sized allocation per line, handed over without a copy;
        // the old text is freed by the allocator that made it.
        let mut text = String::with_capacity(prefix.len() + line.text().len());
        text.push_str(&prefix);
        text.push_str(line.text());
        line.set_text(text);
    }
}

impl Output for Timestamp {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Output, "timestamp", &["mode"])?;
        match params.get("mode") {
            None => Ok(Timestamp),
            Some(Value::String(m)) if m == "elapsed" => Ok(Timestamp),
            Some(Value::String(m)) => {
                Err(format!("unknown mode '{m}' for the timestamp plugin: the only mode is 'elapsed'"))
            }
            Some(other) => Err(format!("unknown mode {other} for the timestamp plugin: the only mode is 'elapsed'")),
        }
    }

    fn filter(&self, info: &BatchInfo, lines: &mut Lines) -> PluginResult<()> {
        stamp_lines(info, lines);
        Ok(())
    }
}

export_plugin! {
    name: "timestamp",
    description: "Prefixes output lines with the minutes since the build started",
    output: Timestamp,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit::{self, fake_lines};
    use vespene_plugin_api::{BatchInfo, Lines, OutputLine, Stream};

    use super::{stamp_lines, Timestamp};

    fn texts(lines: &Lines) -> Vec<&str> {
        lines.iter().map(|l| l.text()).collect()
    }

    #[test]
    fn filter_prefixes_minutes_since_start() {
        let plugin = testkit::output::<Timestamp>(json!({"mode": "elapsed"})).unwrap();
        let (info, lines) = fake_lines(&["compiling", "", "done | ok"], 90_000);

        let out = plugin.filter_lines(&info, lines).unwrap();

        assert_eq!(texts(&out), vec!["    1.50m | compiling", "    1.50m | ", "    1.50m | done | ok"]);
        assert!(out.iter().all(|l| l.stream == Stream::Output && l.at_unix_ms == 90_000));
    }

    #[test]
    fn each_line_uses_its_own_time_and_stream_is_kept() {
        let plugin = testkit::output::<Timestamp>(json!({})).unwrap();
        let info = BatchInfo { build_id: 1, build_started_unix_ms: 1_700_000_000_000 };
        let line = |offset: i64, stream, text: &str| OutputLine::new(stream, 1_700_000_000_000 + offset, text);
        let lines = Lines::from(vec![
            line(-5_000, Stream::Message, "before start"),
            line(0, Stream::Output, "at start"),
            line(0, Stream::Output, "same instant"),
            line(599, Stream::Output, "0.00998 minutes"),
            line(3_600_000, Stream::Message, "an hour in"),
            line(600_000_000, Stream::Output, "a week in"),
        ]);

        let out = plugin.filter_lines(&info, lines).unwrap();

        assert_eq!(
            texts(&out),
            vec![
                "    0.00m | before start",
                "    0.00m | at start",
                "    0.00m | same instant",
                "    0.01m | 0.00998 minutes",
                "   60.00m | an hour in",
                "10000.00m | a week in",
            ]
        );
        let streams: Vec<Stream> = out.iter().map(|l| l.stream).collect();
        assert_eq!(
            streams,
            vec![Stream::Message, Stream::Output, Stream::Output, Stream::Output, Stream::Message, Stream::Output]
        );
    }

    #[test]
    fn stamp_lines_matches_filter_and_handles_extremes() {
        let (info, mut lines) = fake_lines(&["x"], i64::MIN);
        stamp_lines(&info, &mut lines);
        assert_eq!(texts(&lines), vec!["    0.00m | x"]);

        let mut empty = Lines::new();
        stamp_lines(&info, &mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn mode_defaults_to_elapsed() {
        for cfg in [Value::Null, json!({}), json!({"mode": "elapsed"})] {
            assert!(testkit::output::<Timestamp>(cfg.clone()).is_ok(), "{cfg}");
        }
        // Raw on purpose: a host's text "null" reaches `new` as JSON null, and
        // the typed loader never sends that text (it sends null as "").
        assert!(testkit::output_from::<Timestamp>("null").is_ok(), "null");
    }

    #[test]
    fn other_modes_are_refused() {
        let err = testkit::output::<Timestamp>(json!({"mode": "wallclock"})).err().unwrap();
        assert_eq!(err, "unknown mode 'wallclock' for the timestamp plugin: the only mode is 'elapsed'");
        let err = testkit::output::<Timestamp>(json!({"mode": 3})).err().unwrap();
        assert!(err.starts_with("unknown mode 3 "), "{err}");
    }

    #[test]
    fn unknown_parameters_are_named() {
        let err = testkit::output::<Timestamp>(json!({"mode": "elapsed", "format": "x"})).err().unwrap();
        assert_eq!(err, "unknown parameter 'format' for output plugin timestamp");
    }
}
