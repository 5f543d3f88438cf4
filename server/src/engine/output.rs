//! A build's log on its way to storage: lines arrive from any thread (plugins,
//! command runners), are batched, `vespene/set` lines are captured, secrets are
//! masked, the output plugin chain runs on the batch, and the batch is
//! appended to the store in one transaction.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use abi_stable::std_types::RVec;
use serde_json::{Map, Value};
use tokio::sync::Notify;
use vespene_plugin_api::{BatchInfo, OutputLine, Stream};

use super::Engine;
use crate::store::{Id, OutputStream};

/// How long lines may wait before they are stored (bounds live latency).
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A batch this large is stored at once.
const BATCH_LINES: usize = 512;
/// The most lines stored in one append: one transaction holds SQLite's write
/// lock, and a million-line append held it (and every heartbeat) for 30 s.
const MAX_APPEND: usize = 4096;
/// A build that prints faster than storage keeps up waits (its pipe fills)
/// once this many lines are waiting, instead of growing the worker's memory.
const MAX_PENDING: usize = 65_536;
/// ... or once this many bytes are waiting (long lines are up to
/// `limits.max_line_bytes` each).
const MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;
/// The most bytes stored in one append.
const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;
use super::mask::Masker;

/// The log of one running build.
pub struct BuildLog {
    build_id: Id,
    started_ms: i64,
    pending: Mutex<VecDeque<OutputLine>>,
    /// The bytes of text in `pending` (changed under its lock).
    pending_bytes: std::sync::atomic::AtomicUsize,
    /// Longer lines are stored in pieces.
    max_line: usize,
    /// Signalled when the flusher takes lines (room for a waiting producer).
    room: Condvar,
    wake: Notify,
    closed: AtomicBool,
    masks: Mutex<Masker>,
    output_variables: Mutex<Map<String, Value>>,
}

impl BuildLog {
    /// A log for `build_id`, which started at `started_ms`.
    #[cfg(test)]
    pub fn new(build_id: Id, started_ms: i64) -> Arc<Self> {
        Self::with_max_line(build_id, started_ms, vespene_plugin_api::DEFAULT_MAX_LINE)
    }

    /// A log whose lines longer than `max_line` bytes are stored in pieces,
    /// each but the last ending with [`vespene_plugin_api::LINE_CONTINUES`].
    pub fn with_max_line(build_id: Id, started_ms: i64, max_line: usize) -> Arc<Self> {
        Arc::new(BuildLog {
            build_id,
            started_ms,
            pending: Mutex::new(VecDeque::new()),
            pending_bytes: std::sync::atomic::AtomicUsize::new(0),
            max_line: max_line.max(4),
            room: Condvar::new(),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
            masks: Mutex::new(Masker::default()),
            output_variables: Mutex::new(Map::new()),
        })
    }

    /// The longest line stored whole.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    fn full(&self, pending: &VecDeque<OutputLine>) -> bool {
        pending.len() >= MAX_PENDING || self.pending_bytes.load(Ordering::SeqCst) >= MAX_PENDING_BYTES
    }

    /// Adds a line; callable from any thread. A build's output line waits
    /// while [`MAX_PENDING`] lines or [`MAX_PENDING_BYTES`] are waiting to be
    /// stored (plugins call this from blocking threads); Vespene's own
    /// messages never wait. A line longer than the limit goes in pieces.
    pub fn push(&self, stream: Stream, text: &str) {
        if text.len() > self.max_line {
            return self.push_write(stream, &vespene_plugin_api::split_long_line(text, self.max_line));
        }
        let line = OutputLine { stream, at_unix_ms: now_ms(), text: text.into() };
        let len = {
            let mut pending = self.pending.lock().expect("log lock");
            while stream == Stream::Output && self.full(&pending) && !self.closed.load(Ordering::SeqCst) {
                self.wake.notify_one();
                pending = self.room.wait_timeout(pending, FLUSH_EVERY).expect("log lock").0;
            }
            self.pending_bytes.fetch_add(text.len(), Ordering::SeqCst);
            pending.push_back(line);
            pending.len()
        };
        // The first line after a quiet spell goes out at once (live latency);
        // the lines behind it batch up while it is being stored.
        if len == 1 || len >= BATCH_LINES {
            self.wake.notify_one();
        }
    }

    /// A housekeeping line.
    pub fn message(&self, text: &str) {
        self.push(Stream::Message, text);
    }

    /// Masks `secret` (and each of its lines, for keys) in everything stored
    /// from now on, in its common encodings too. False when it is shorter
    /// than [`MIN_MASK_LEN`](super::mask::MIN_MASK_LEN) and so is not masked.
    pub fn add_mask(&self, secret: &str) -> bool {
        self.masks.lock().expect("mask lock").add(secret)
    }

    /// Whether any secret is masked in this log.
    pub fn masks_anything(&self) -> bool {
        !self.masks.lock().expect("mask lock").is_empty()
    }

    /// Adds the lines of one write together, so a secret printed across two
    /// of them is masked (and no flush can come between them).
    pub fn push_write(&self, stream: Stream, texts: &[String]) {
        let mut texts = if texts.iter().any(|t| t.len() > self.max_line) {
            texts.iter().flat_map(|t| vespene_plugin_api::split_long_line(t, self.max_line)).collect()
        } else {
            texts.to_vec()
        };
        if texts.len() < 2 {
            texts.iter().for_each(|t| self.push(stream, t));
            return;
        }
        self.masks.lock().expect("mask lock").mask_split(&mut texts);
        let at = now_ms();
        {
            let mut pending = self.pending.lock().expect("log lock");
            while stream == Stream::Output && self.full(&pending) && !self.closed.load(Ordering::SeqCst) {
                self.wake.notify_one();
                pending = self.room.wait_timeout(pending, FLUSH_EVERY).expect("log lock").0;
            }
            self.pending_bytes.fetch_add(texts.iter().map(String::len).sum(), Ordering::SeqCst);
            pending.extend(texts.into_iter().map(|t| OutputLine { stream, at_unix_ms: at, text: t.into() }));
        }
        self.wake.notify_one();
    }

    /// The variables set so far with `vespene/set NAME VALUE`.
    pub fn output_variables(&self) -> Map<String, Value> {
        self.output_variables.lock().expect("vars lock").clone()
    }

    /// No more lines will come: the flusher drains and stops.
    pub fn close(&self) {
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

    fn mask(&self, text: &str) -> Option<String> {
        let masks = self.masks.lock().expect("mask lock");
        if masks.is_empty() {
            return None;
        }
        masks.mask(text)
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

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Engine {
    /// Stores a build's log until it is closed and drained.
    pub(crate) async fn flush_log(&self, log: Arc<BuildLog>) {
        // The build's line count after our last append: tells a retried append
        // whether its first try was committed.
        let mut stored =
            self.patiently("read the output count", || self.store().output_seq(log.build_id)).await.ok().flatten();
        loop {
            let closed = log.closed.load(Ordering::SeqCst);
            let batch = log.take();
            // A batch cut at a limit left lines behind: no waiting for them.
            let full =
                batch.len() == MAX_APPEND || batch.iter().map(|l| l.text.len()).sum::<usize>() >= MAX_APPEND_BYTES;
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
            if !full {
                let _ = tokio::time::timeout(FLUSH_EVERY, log.wake.notified()).await;
            }
        }
        self.output_plugins_finished(&log).await;
    }

    async fn store_batch(&self, log: &Arc<BuildLog>, batch: Vec<OutputLine>, stored: &mut Option<i64>) {
        let mut lines: RVec<OutputLine> = RVec::with_capacity(batch.len());
        for mut line in batch {
            if let Some(masked) = log.mask(line.text.as_str()) {
                line.text = masked.into();
            }
            // After masking: a secret set as an output variable is stored masked.
            log.capture_output_variable(line.text.as_str());
            lines.push(line);
        }
        let info = BatchInfo { build_id: log.build_id, build_started_unix_ms: log.started_ms };
        let registry = self.registry().clone();
        let filtered = tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            for (name, plugin) in registry.output_chain_named() {
                match plugin.filter(info, lines.clone()).into_result() {
                    Ok(out) => lines = out,
                    // A broken output plugin must not lose the build's output.
                    Err(e) => problems.push(format!("output plugin '{name}' failed: {e}")),
                }
            }
            (lines, problems)
        })
        .await;
        let (lines, problems) = match filtered {
            Ok(result) => result,
            Err(e) => (RVec::new(), vec![format!("output plugins stopped: {e}")]),
        };
        let mut rows: Vec<(OutputStream, String)> = lines
            .into_iter()
            .map(|l| {
                let stream = match l.stream {
                    Stream::Output => OutputStream::Stdout,
                    Stream::Message => OutputStream::Message,
                };
                (stream, l.text.into_string())
            })
            .collect();
        rows.extend(problems.into_iter().map(|p| (OutputStream::Message, p)));
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
                    plugin.build_finished(info).into_result().err().map(|e| format!("output plugin '{name}': {e}"))
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
