//! A build's log on its way to storage: lines arrive from any thread (plugins,
//! command runners), are batched, `vespene/set` lines are captured, secrets are
//! masked, the output plugin chain runs on the batch, and the batch is
//! appended to the store in one transaction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use abi_stable::std_types::{RString, RVec};
use serde_json::{Map, Value};
use tokio::sync::Notify;
use vespene_plugin_api::{BatchInfo, OutputLine, Stream};

use super::mask::Masker;
use super::Engine;
use crate::store::{Id, OutputStream};

/// How long the first lines of a batch wait for more (bounds live latency;
/// a build printing fast fills a batch sooner).
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// This many waiting lines are a batch at once: one chunk's worth.
const BATCH_LINES: usize = crate::store::CHUNK_LINES;
/// The most lines stored in one append (a few chunks). One append holds
/// SQLite's write lock: it must stay short, or heartbeats wait behind it.
const MAX_APPEND: usize = 4 * crate::store::CHUNK_LINES;
/// The most bytes stored in one append.
const MAX_APPEND_BYTES: usize = 16 * crate::store::CHUNK_BYTES;
/// A build that prints faster than storage keeps up waits (its pipe fills)
/// once this many lines are waiting, instead of growing the worker's memory.
const MAX_PENDING: usize = 65_536;
/// ... or once this many bytes are waiting (long lines are up to
/// `limits.max_line_bytes` each).
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// How long a producer waits for room before it looks again (it is woken
/// as soon as the flusher takes lines).
const ROOM_WAIT: Duration = Duration::from_millis(100);

/// The limits one build's log is kept within (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Longer lines are stored in pieces.
    pub max_line: usize,
    /// Output past this many bytes is not stored (Vespene's own messages are).
    pub max_output_bytes: u64,
}

impl LogLimits {
    /// The limits the settings give.
    pub fn from_settings(limits: &crate::settings::Limits) -> Self {
        LogLimits { max_line: limits.max_line_bytes, max_output_bytes: limits.max_output_bytes }
    }
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits::from_settings(&crate::settings::Limits::default())
    }
}

/// The log of one running build.
pub struct BuildLog {
    build_id: Id,
    started_ms: i64,
    pending: Mutex<VecDeque<OutputLine>>,
    /// The bytes of text in `pending` (changed under its lock).
    pending_bytes: AtomicUsize,
    limits: LogLimits,
    /// Output bytes taken so far, against `limits.max_output_bytes`.
    output_bytes: AtomicU64,
    /// Output lines and bytes dropped past the cap.
    dropped_lines: AtomicU64,
    dropped_bytes: AtomicU64,
    /// Signalled when the flusher takes lines (room for a waiting producer).
    room: Condvar,
    wake: Notify,
    closed: AtomicBool,
    masks: Mutex<Masker>,
    /// Whether `masks` holds anything (read without its lock on every batch).
    masking: AtomicBool,
    output_variables: Mutex<Map<String, Value>>,
}

impl BuildLog {
    /// A log for `build_id`, which started at `started_ms`, with the default limits.
    #[cfg(test)]
    pub fn new(build_id: Id, started_ms: i64) -> Arc<Self> {
        Self::with_limits(build_id, started_ms, LogLimits::default())
    }

    /// A log whose lines longer than `limits.max_line` bytes are stored in
    /// pieces, each but the last ending with
    /// [`vespene_plugin_api::LINE_CONTINUES`], and whose output past
    /// `limits.max_output_bytes` is dropped with a marker.
    pub fn with_limits(build_id: Id, started_ms: i64, limits: LogLimits) -> Arc<Self> {
        Arc::new(BuildLog {
            build_id,
            started_ms,
            pending: Mutex::new(VecDeque::new()),
            pending_bytes: AtomicUsize::new(0),
            limits: LogLimits { max_line: limits.max_line.max(4), ..limits },
            output_bytes: AtomicU64::new(0),
            dropped_lines: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            room: Condvar::new(),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            masks: Mutex::new(Masker::default()),
            masking: AtomicBool::new(false),
            output_variables: Mutex::new(Map::new()),
        })
    }

    /// The longest line stored whole.
    pub fn max_line(&self) -> usize {
        self.limits.max_line
    }

    fn full(&self, pending: &VecDeque<OutputLine>) -> bool {
        pending.len() >= MAX_PENDING || self.pending_bytes.load(Ordering::SeqCst) >= MAX_PENDING_BYTES
    }

    fn pending_len(&self) -> usize {
        self.pending.lock().expect("log lock").len()
    }

    /// Adds a line; callable from any thread (see [`BuildLog::push_lines`]).
    pub fn push(&self, stream: Stream, text: &str) {
        self.push_lines(stream, vec![text.to_owned()]);
    }

    /// A housekeeping line.
    pub fn message(&self, text: &str) {
        self.push(Stream::Message, text);
    }

    /// Masks `secret` (and each of its lines, for keys) in everything stored
    /// from now on, in its common encodings too. False when it is shorter
    /// than [`MIN_MASK_LEN`](super::mask::MIN_MASK_LEN) and so is not masked.
    pub fn add_mask(&self, secret: &str) -> bool {
        let added = self.masks.lock().expect("mask lock").add(secret);
        if added {
            self.masking.store(true, Ordering::SeqCst);
        }
        added
    }

    /// Whether any secret is masked in this log.
    pub fn masks_anything(&self) -> bool {
        self.masking.load(Ordering::SeqCst)
    }

    /// Adds the lines of one write together, so a secret printed across two
    /// of them is masked (and no flush can come between them); callable from
    /// any thread. Output waits while [`MAX_PENDING`] lines or
    /// [`MAX_PENDING_BYTES`] are waiting to be stored (plugins call this from
    /// blocking threads); Vespene's own messages never wait. Lines longer
    /// than the limit go in pieces; output past the build's cap is dropped.
    pub fn push_lines(&self, stream: Stream, mut texts: Vec<String>) {
        if texts.iter().any(|t| t.len() > self.limits.max_line) {
            texts = texts.iter().flat_map(|t| vespene_plugin_api::split_long_line(t, self.limits.max_line)).collect();
        }
        let marker = if stream == Stream::Output { self.cap(&mut texts) } else { None };
        if !texts.is_empty() {
            self.enqueue(stream, texts);
        }
        if let Some(marker) = marker {
            self.enqueue(Stream::Message, vec![marker]);
        }
    }

    fn enqueue(&self, stream: Stream, mut texts: Vec<String>) {
        if texts.len() > 1 && self.masks_anything() {
            self.masks.lock().expect("mask lock").mask_split(&mut texts);
        }
        let at = now_ms();
        let bytes: usize = texts.iter().map(String::len).sum();
        let (before, after) = {
            let mut pending = self.pending.lock().expect("log lock");
            while stream == Stream::Output && self.full(&pending) && !self.closed.load(Ordering::SeqCst) {
                self.wake.notify_one();
                pending = self.room.wait_timeout(pending, ROOM_WAIT).expect("log lock").0;
            }
            self.pending_bytes.fetch_add(bytes, Ordering::SeqCst);
            let before = pending.len();
            pending.extend(texts.into_iter().map(|t| OutputLine { stream, at_unix_ms: at, text: t.into() }));
            (before, pending.len())
        };
        // The first lines after a quiet spell start a batch; a full batch goes at once.
        if before == 0 || (before < BATCH_LINES && after >= BATCH_LINES) {
            self.wake.notify_one();
        }
    }

    /// Cuts `texts` to what fits under the output cap (each line counts with
    /// its newline) and counts the rest as dropped. Answers the marker to
    /// store when this write is the one that crossed the cap.
    fn cap(&self, texts: &mut Vec<String>) -> Option<String> {
        let cap = self.limits.max_output_bytes;
        let bytes: u64 = texts.iter().map(|t| t.len() as u64 + 1).sum();
        let before = self.output_bytes.fetch_add(bytes, Ordering::SeqCst);
        if before.saturating_add(bytes) <= cap {
            return None;
        }
        let mut room = cap.saturating_sub(before);
        let keep = texts
            .iter()
            .take_while(|t| {
                let fits = (t.len() as u64) < room;
                room = room.saturating_sub(t.len() as u64 + 1);
                fits
            })
            .count();
        let dropped = &texts[keep..];
        self.dropped_lines.fetch_add(dropped.len() as u64, Ordering::SeqCst);
        self.dropped_bytes.fetch_add(dropped.iter().map(|t| t.len() as u64 + 1).sum(), Ordering::SeqCst);
        texts.truncate(keep);
        // Only the write that crossed the cap started under it.
        (before <= cap).then(|| {
            format!(
                "output limit reached: this build's output past {} is not stored ([limits] max_output_bytes); \
                 the build goes on",
                human_bytes(cap)
            )
        })
    }

    /// Sets an output variable a plugin gave through the host
    /// (`Host::set_variable`): the name checked, the value masked like the
    /// log, and a message line naming the variable (not its value).
    pub fn set_output_variable(&self, name: &str, value: &str) -> Result<(), String> {
        vespene_plugin_api::check_variable_name(name)?;
        let value = self.mask(value).unwrap_or_else(|| value.to_string());
        self.output_variables.lock().expect("vars lock").insert(name.to_string(), Value::String(value));
        self.message(&format!("output variable {name} set by a plugin"));
        Ok(())
    }

    /// The variables set so far with `vespene/set NAME VALUE`.
    pub fn output_variables(&self) -> Map<String, Value> {
        self.output_variables.lock().expect("vars lock").clone()
    }

    /// No more lines will come: the flusher drains and stops. Output dropped
    /// past the cap is counted in a last message.
    pub fn close(&self) {
        let (lines, bytes) = (self.dropped_lines.load(Ordering::SeqCst), self.dropped_bytes.load(Ordering::SeqCst));
        if lines > 0 && !self.closed.load(Ordering::SeqCst) {
            self.message(&format!("{lines} line(s) of output ({}) past the limit were not stored", human_bytes(bytes)));
        }
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// The oldest waiting lines, at most [`MAX_APPEND`] and about [`MAX_APPEND_BYTES`].
    fn take(&self) -> Vec<OutputLine> {
        let mut pending = self.pending.lock().expect("log lock");
        let (mut n, mut bytes) = (0, 0);
        while n < pending.len().min(MAX_APPEND) && (n == 0 || bytes < MAX_APPEND_BYTES) {
            bytes += pending[n].text.len();
            n += 1;
        }
        self.pending_bytes.fetch_sub(bytes, Ordering::SeqCst);
        let batch: Vec<OutputLine> = pending.drain(..n).collect();
        drop(pending);
        self.room.notify_all();
        batch
    }

    /// Masks the secrets in a batch, under one lock.
    fn mask_batch(&self, lines: &mut [OutputLine]) {
        if !self.masks_anything() {
            return;
        }
        let masks = self.masks.lock().expect("mask lock");
        for line in lines {
            if let Some(masked) = masks.mask(line.text.as_str()) {
                line.text = masked.into();
            }
        }
    }

    /// `text` with every secret known so far masked, or `None` when none is in it.
    fn mask(&self, text: &str) -> Option<String> {
        if !self.masks_anything() {
            return None;
        }
        self.masks.lock().expect("mask lock").mask(text)
    }

    fn capture_output_variable(&self, text: &str) {
        let Some(rest) = text.trim_start().strip_prefix("vespene/set") else { return };
        if !rest.starts_with(char::is_whitespace) {
            return;
        }
        // Shell-style quoting: `vespene/set image "a b"` sets image to `a b`.
        if let Some(words) = shlex::split(rest) {
            if let [name, value] = words.as_slice() {
                self.output_variables.lock().expect("vars lock").insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
}

/// `n` bytes for people: "100 MiB", "1.5 KiB", "12 bytes".
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let (mut value, mut unit) = (n as f64 / 1024.0, 0);
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    format!("{} {}", text.strip_suffix(".0").unwrap_or(&text), UNITS[unit])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Engine {
    /// Stores a build's log, a batch at a time, until it is closed and drained.
    pub(crate) async fn flush_log(&self, log: Arc<BuildLog>) {
        // The build's line count after our last append: tells a retried append
        // whether its first try was committed.
        let mut stored =
            self.patiently("read the output count", || self.store().output_seq(log.build_id)).await.ok().flatten();
        loop {
            if !log.closed.load(Ordering::SeqCst) {
                let waiting = log.pending_len();
                if waiting == 0 {
                    // Quiet: wait for a first line (or the close).
                    let _ = tokio::time::timeout(Duration::from_secs(1), log.wake.notified()).await;
                }
                if waiting < BATCH_LINES && !log.closed.load(Ordering::SeqCst) {
                    // A few ms for the lines behind it, unless a batch fills sooner.
                    let _ = tokio::time::timeout(BATCH_WINDOW, log.wake.notified()).await;
                }
            }
            let closed = log.closed.load(Ordering::SeqCst);
            let batch = log.take();
            if !batch.is_empty() {
                self.store_batch(&log, batch, &mut stored).await;
            }
            if closed {
                // Lines pushed between the take and the close check, and what a
                // full batch left behind.
                loop {
                    let rest = log.take();
                    if rest.is_empty() {
                        break;
                    }
                    self.store_batch(&log, rest, &mut stored).await;
                }
                break;
            }
        }
        self.output_plugins_finished(&log).await;
    }

    async fn store_batch(&self, log: &Arc<BuildLog>, mut batch: Vec<OutputLine>, stored: &mut Option<i64>) {
        log.mask_batch(&mut batch);
        for line in &batch {
            // After masking: a secret set as an output variable is stored masked.
            log.capture_output_variable(line.text.as_str());
        }
        let info = BatchInfo { build_id: log.build_id, build_started_unix_ms: log.started_ms };
        let registry = self.registry().clone();
        let filtered = tokio::task::spawn_blocking(move || {
            let mut lines = RVec::from(batch);
            let mut problems = Vec::new();
            for (name, plugin) in registry.output_chain_named() {
                // A plugin gets a copy: the lines are kept when it fails.
                match plugin.filter(info, lines.clone()).into_result() {
                    Ok(out) => lines = out,
                    // A broken output plugin must not lose the build's output.
                    Err(e) => {
                        crate::metrics::plugin_error(name, "output");
                        problems.push(format!("output plugin '{name}' failed: {e}"))
                    }
                }
            }
            (lines, problems)
        })
        .await;
        let (lines, problems) = match filtered {
            Ok(result) => result,
            Err(e) => (RVec::new(), vec![format!("output plugins stopped: {e}")]),
        };
        let mut rows: Vec<(OutputStream, RString)> = lines
            .into_iter()
            .map(|l| {
                let stream = match l.stream {
                    Stream::Output => OutputStream::Stdout,
                    Stream::Message => OutputStream::Message,
                };
                (stream, l.text)
            })
            .collect();
        rows.extend(problems.into_iter().map(|p| (OutputStream::Message, p.into())));
        let (id, before, n) = (log.build_id, *stored, rows.len() as i64);
        let mut tries = 0;
        let appended = self
            .patiently("store build output", || {
                tries += 1;
                let retry = tries > 1;
                let rows = &rows;
                async move {
                    // A retry after a cut connection: the first try may have been
                    // committed with only its answer lost. Then it is not stored twice.
                    if let (true, Some(before)) = (retry, before) {
                        if self.store().output_seq(id).await? == Some(before + n) {
                            return Ok(before + n);
                        }
                    }
                    self.store().append_output(id, rows).await
                }
            })
            .await;
        match appended {
            Ok(last) => {
                *stored = Some(last);
                // Live viewers get the lines as stored: `last - n + 1 ..= last`.
                self.live().publish(id, last, rows);
            }
            Err(e) => {
                *stored = None;
                tracing::error!(build = log.build_id, error = %e, "cannot store build output");
            }
        }
    }

    async fn output_plugins_finished(&self, log: &Arc<BuildLog>) {
        let info = BatchInfo { build_id: log.build_id, build_started_unix_ms: log.started_ms };
        let registry = self.registry().clone();
        let problems = tokio::task::spawn_blocking(move || {
            registry
                .output_chain_named()
                .into_iter()
                .filter_map(|(name, plugin)| {
                    plugin.build_finished(info).into_result().err().map(|e| {
                        crate::metrics::plugin_error(name, "output");
                        format!("output plugin '{name}': {e}")
                    })
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for p in problems {
            tracing::warn!(build = log.build_id, "{p}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secrets_and_their_lines() {
        let log = BuildLog::new(1, 0);
        log.add_mask("hunter22");
        log.add_mask("-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----");
        log.add_mask("ab"); // too short to mask
        assert_eq!(log.mask("password is hunter22!").as_deref(), Some("password is ********!"));
        assert_eq!(log.mask("key line AAAABBBBCCCC").as_deref(), Some("key line ********"));
        assert_eq!(log.mask("nothing secret about ab"), None);
    }

    #[test]
    fn a_full_log_holds_output_back_and_hands_out_bounded_batches() {
        let log = BuildLog::new(1, 0);
        for i in 0..MAX_PENDING {
            log.push(Stream::Output, &i.to_string());
        }
        log.message("messages never wait");
        let pushed = Arc::new(AtomicBool::new(false));
        let producer = std::thread::spawn({
            let (log, pushed) = (log.clone(), pushed.clone());
            move || {
                log.push(Stream::Output, "one more");
                pushed.store(true, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!pushed.load(Ordering::SeqCst), "the producer waits while the log is full");
        let batch = log.take();
        assert_eq!(batch.len(), MAX_APPEND);
        assert_eq!(batch[0].text.as_str(), "0", "oldest first");
        producer.join().unwrap();
        assert!(pushed.load(Ordering::SeqCst));
        let mut rest = 0;
        loop {
            let batch = log.take();
            if batch.is_empty() {
                break;
            }
            assert!(batch.len() <= MAX_APPEND);
            rest += batch.len();
        }
        assert_eq!(rest, MAX_PENDING - MAX_APPEND + 2, "every line is handed out once");
    }

    #[test]
    fn output_past_the_cap_is_dropped_with_a_marker_and_counted() {
        let log = BuildLog::with_limits(1, 0, LogLimits { max_line: 1024, max_output_bytes: 20 });
        log.push(Stream::Output, "0123456789"); // 11 bytes with its newline
        log.push_lines(Stream::Output, vec!["abcd".into(), "efgh".into(), "ijkl".into()]);
        log.push(Stream::Output, "never stored");
        log.message("messages still are");
        log.close();
        let texts: Vec<String> = log.take().into_iter().map(|l| l.text.into_string()).collect();
        assert_eq!(texts[..2], ["0123456789", "abcd"], "what fits under the cap is kept");
        assert!(texts[2].starts_with("output limit reached: this build's output past 20 bytes is not stored"));
        assert_eq!(texts[3], "messages still are");
        assert_eq!(texts[4], "3 line(s) of output (23 bytes) past the limit were not stored");
        assert_eq!(texts.len(), 5);
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(12), "12 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(100 * 1024 * 1024), "100 MiB");
    }

    #[test]
    fn captures_output_variables_with_quoting() {
        let log = BuildLog::new(1, 0);
        log.capture_output_variable("vespene/set img \"a b\"");
        log.capture_output_variable("vespene/set tag v1");
        log.capture_output_variable("vespene/set too many words here");
        log.capture_output_variable("vespene/settle x y");
        let vars = log.output_variables();
        assert_eq!(vars.get("img"), Some(&Value::String("a b".into())));
        assert_eq!(vars.get("tag"), Some(&Value::String("v1".into())));
        assert_eq!(vars.len(), 2);
    }
}
