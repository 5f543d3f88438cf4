//! Live output: one shared source per followed build, however many follow it.
//!
//! The [`LiveHub`] (owned by the [`Engine`]) holds a [`Channel`] for each
//! build that has viewers now: a ring of the most recent stored lines (at
//! most [`RING_BYTES`] of text), the build's end once it is known, and a
//! version number viewers wait on. Lines reach a channel two ways:
//!
//! - **builds this process runs**: the output flusher calls
//!   [`LiveHub::publish`] right after each successful append, with the
//!   stored lines and their sequence numbers, and the worker calls
//!   [`LiveHub::finished`] once the build's final status is stored;
//! - **builds run elsewhere** (a standalone `vespene worker`, another host):
//!   the channel's one source task polls the store every [`REMOTE_POLL`]
//!   (status, then lines after the last one it has), however many viewers
//!   the build has. For a build this process runs, the same task only checks
//!   the status every [`LOCAL_CHECK`] (a safety net for an end nobody
//!   announced) and reads the store once at the end.
//!
//! The channel goes away, and its source stops, when its last viewer leaves.
//!
//! A viewer ([`Subscription`]) reads from the ring after its own cursor. A
//! viewer whose cursor is older than the ring ([`LiveRead::Behind`]: it joined
//! late, or it was slow and the ring moved on) reads those lines from the
//! store and comes back. Publishing never waits for a viewer; a channel keeps
//! its lines contiguous (a batch that overlaps what it has is trimmed, one
//! after a gap restarts the ring), so a viewer that follows its cursor gets
//! every line once, in order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::store::{BuildStatus, Id, OutputStream, Store};

/// How much line text a channel keeps for its viewers; a viewer further
/// behind reads the store.
pub const RING_BYTES: usize = 1024 * 1024;
/// How often the source of a build run by another process polls the store.
pub const REMOTE_POLL: Duration = Duration::from_millis(100);
/// How often the source of a build this process runs checks its status.
pub const LOCAL_CHECK: Duration = Duration::from_secs(1);
/// Lines the source reads from the store per query.
const SOURCE_PAGE: i64 = 1000;

/// One line as viewers see it (its number is its place in the batch).
#[derive(Debug, Clone)]
pub struct LiveLine {
    /// Which stream.
    pub stream: OutputStream,
    /// The stored text.
    pub text: String,
}

/// Consecutive stored lines: `first`, `first + 1`, ...
#[derive(Debug)]
pub struct LiveBatch {
    /// The first line's sequence number.
    pub first: i64,
    /// The lines.
    pub lines: Vec<LiveLine>,
    /// A rendering of the whole batch, made once by whichever reader needs it
    /// first and shared by the rest (the web tier keeps its SSE text here).
    pub rendered: OnceLock<Vec<bytes::Bytes>>,
    bytes: usize,
}

impl LiveBatch {
    fn new(first: i64, lines: Vec<LiveLine>) -> Self {
        let bytes = lines.iter().map(|l| l.text.len() + 16).sum();
        LiveBatch { first, lines, rendered: OnceLock::new(), bytes }
    }

    /// The last line's sequence number.
    pub fn last(&self) -> i64 {
        self.first + self.lines.len() as i64 - 1
    }
}

/// How a build ended, as its channel's source saw it in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveEnd {
    /// The final status (`None`: the build is gone).
    pub status: Option<BuildStatus>,
    /// The build's last line number when it ended.
    pub last_seq: i64,
}

/// What a viewer at `after` should do next ([`Subscription::read`]).
#[derive(Debug)]
pub enum LiveRead {
    /// Send these batches' lines after `after` (the first may start earlier).
    Lines(Vec<Arc<LiveBatch>>),
    /// The lines after `after` are no longer (or not yet) held here: read
    /// them from the store. `end` is the build's end if it is known.
    Behind(Option<LiveEnd>),
    /// Nothing new: wait ([`Subscription::changed`]).
    Wait,
    /// Every line was sent and the build is over.
    End(LiveEnd),
}

#[derive(Default)]
struct Ring {
    /// The line number just before the ring's first line; `None` until known.
    base: Option<i64>,
    batches: VecDeque<Arc<LiveBatch>>,
    bytes: usize,
    end: Option<LiveEnd>,
}

impl Ring {
    fn last(&self) -> Option<i64> {
        self.batches.back().map(|b| b.last()).or(self.base)
    }

    /// Adds lines `first..`, keeping the ring contiguous; false if nothing was new.
    fn push(&mut self, first: i64, mut lines: Vec<LiveLine>) -> bool {
        if lines.is_empty() || self.end.is_some() {
            return false;
        }
        let mut first = first;
        match self.last() {
            Some(last) if last >= first => {
                // Already held (the flusher and a store read may both bring a line).
                let skip = (last - first + 1) as usize;
                if skip >= lines.len() {
                    return false;
                }
                lines.drain(..skip);
                first = last + 1;
            }
            Some(last) if last + 1 == first => {}
            _ => {
                // A gap (or the first lines): the ring restarts here; viewers
                // before it read the store.
                self.batches.clear();
                self.bytes = 0;
                self.base = Some(first - 1);
            }
        }
        let batch = Arc::new(LiveBatch::new(first, lines));
        self.bytes += batch.bytes;
        self.batches.push_back(batch);
        while self.bytes > RING_BYTES && self.batches.len() > 1 {
            let old = self.batches.pop_front().expect("a batch");
            self.bytes -= old.bytes;
            self.base = Some(old.last());
        }
        true
    }

    fn read(&self, after: i64) -> LiveRead {
        let Some(base) = self.base else {
            return match self.end {
                Some(end) if end.last_seq <= after => LiveRead::End(end),
                Some(end) => LiveRead::Behind(Some(end)),
                None => LiveRead::Wait,
            };
        };
        if after < base {
            return LiveRead::Behind(self.end);
        }
        let batches: Vec<Arc<LiveBatch>> = self.batches.iter().filter(|b| b.last() > after).cloned().collect();
        if !batches.is_empty() {
            return LiveRead::Lines(batches);
        }
        match self.end {
            Some(end) if end.last_seq <= after => LiveRead::End(end),
            Some(end) => LiveRead::Behind(Some(end)),
            None => LiveRead::Wait,
        }
    }
}

/// The live state of one followed build.
struct Channel {
    build: Id,
    ring: Mutex<Ring>,
    /// Bumped on every change of the ring.
    version: watch::Sender<u64>,
    /// Wakes the source (the build ended here).
    kick: Notify,
    /// Set when the last viewer left: the source stops.
    retired: AtomicBool,
    viewers: std::sync::atomic::AtomicUsize,
}

impl Channel {
    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn push(&self, first: i64, lines: Vec<LiveLine>) {
        let pushed = self.ring.lock().expect("ring lock").push(first, lines);
        if pushed {
            self.changed();
        }
    }
}

#[derive(Default)]
struct HubState {
    channels: HashMap<Id, Arc<Channel>>,
    /// Builds whose output this process is storing now.
    local: HashSet<Id>,
}

/// The live-output hub of one process (see the module doc).
#[derive(Clone, Default)]
pub struct LiveHub {
    state: Arc<Mutex<HubState>>,
}

impl LiveHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines `last - lines.len() + 1 ..= last` of `build` were just stored by
    /// this process. Cheap when nobody follows the build.
    pub fn publish<S: Into<String>>(&self, build: Id, last: i64, lines: Vec<(OutputStream, S)>) {
        let channel = {
            let mut state = self.state.lock().expect("hub lock");
            state.local.insert(build);
            state.channels.get(&build).cloned()
        };
        if let Some(channel) = channel {
            let first = last - lines.len() as i64 + 1;
            channel
                .push(first, lines.into_iter().map(|(stream, text)| LiveLine { stream, text: text.into() }).collect());
        }
    }

    /// `build`, which this process ran, has its final status stored.
    pub fn finished(&self, build: Id) {
        let channel = {
            let mut state = self.state.lock().expect("hub lock");
            state.local.remove(&build);
            state.channels.get(&build).cloned()
        };
        if let Some(channel) = channel {
            channel.kick.notify_one();
        }
    }

    /// How many builds have a channel now (viewers), for tests and metrics.
    pub fn followed(&self) -> usize {
        self.state.lock().expect("hub lock").channels.len()
    }

    fn is_local(&self, build: Id) -> bool {
        self.state.lock().expect("hub lock").local.contains(&build)
    }

    /// Follows `build`: joins its channel, making it (and its one source
    /// task, which reads `store`) if it is the first viewer.
    pub fn subscribe(&self, store: &Store, build: Id) -> Subscription {
        let (channel, new) = {
            let mut state = self.state.lock().expect("hub lock");
            let channel = match state.channels.get(&build) {
                Some(c) => (c.clone(), false),
                None => {
                    let channel = Arc::new(Channel {
                        build,
                        ring: Mutex::new(Ring::default()),
                        version: watch::channel(0).0,
                        kick: Notify::new(),
                        retired: AtomicBool::new(false),
                        viewers: Default::default(),
                    });
                    state.channels.insert(build, channel.clone());
                    (channel, true)
                }
            };
            // Counted under the hub lock: a last viewer leaving at the same
            // time cannot retire the channel this one has just joined.
            channel.0.viewers.fetch_add(1, Ordering::SeqCst);
            channel
        };
        let version = channel.version.subscribe();
        if new {
            tokio::spawn(source(self.clone(), store.clone(), channel.clone()));
        }
        Subscription { hub: self.clone(), channel, version }
    }

    fn leave(&self, channel: &Arc<Channel>) {
        let mut state = self.state.lock().expect("hub lock");
        if channel.viewers.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last viewer: under the hub lock, so a new viewer makes a new channel.
            if state.channels.get(&channel.build).is_some_and(|c| Arc::ptr_eq(c, channel)) {
                state.channels.remove(&channel.build);
            }
            channel.retired.store(true, Ordering::SeqCst);
            channel.kick.notify_one();
        }
    }
}

/// One viewer's place in a build's channel; leaves it when dropped.
pub struct Subscription {
    hub: LiveHub,
    channel: Arc<Channel>,
    version: watch::Receiver<u64>,
}

impl Subscription {
    /// What to do next for a viewer that has sent every line up to `after`.
    pub fn read(&mut self, after: i64) -> LiveRead {
        // Seen: `changed` waits for anything after this read.
        self.version.borrow_and_update();
        self.channel.ring.lock().expect("ring lock").read(after)
    }

    /// Waits until the channel changed since the last [`Subscription::read`].
    pub async fn changed(&mut self) {
        // The sender lives as long as the channel, which this holds.
        let _ = self.version.changed().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(&self.channel);
    }
}

/// The one source of a channel (see the module doc); stops when the channel
/// is retired or has seen the build's end.
async fn source(hub: LiveHub, store: Store, channel: Arc<Channel>) {
    let build = channel.build;
    // Where the store reads start: what the ring holds, else the build's count now.
    let mut after = channel.ring.lock().expect("ring lock").last();
    loop {
        if channel.retired.load(Ordering::SeqCst) {
            return;
        }
        let local = hub.is_local(build);
        // Status first: a build that ended before this read has all its lines stored.
        let status = match store.build_status(build).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(build, error = %e, "live output: cannot read the build's status");
                None
            }
        };
        let over = matches!(status, Some(s) if !s.is_some_and(BuildStatus::is_active));
        if after.is_none() {
            match store.output_seq(build).await {
                Ok(n) => {
                    let n = n.unwrap_or(0);
                    // One guard, released before `changed`: when a publish had
                    // set the base first, locking the ring a second time here
                    // while still holding it froze the worker thread (and
                    // every task queued behind the ring's lock).
                    let based = {
                        let mut ring = channel.ring.lock().expect("ring lock");
                        let based = ring.base.is_none();
                        if based {
                            ring.base = Some(n);
                        }
                        after = ring.last();
                        based
                    };
                    if based {
                        channel.changed();
                    }
                }
                Err(e) => tracing::debug!(build, error = %e, "live output: cannot read the line count"),
            }
        }
        if let (Some(from), true) = (after, !local || over) {
            // A build run elsewhere, or the last lines of any build.
            let mut from = from.max(channel.ring.lock().expect("ring lock").last().unwrap_or(0));
            loop {
                let lines = match store.output_since(build, from, SOURCE_PAGE).await {
                    Ok(lines) => lines,
                    Err(e) => {
                        tracing::debug!(build, error = %e, "live output: cannot read lines");
                        break;
                    }
                };
                let got = lines.len() as i64;
                if let Some(first) = lines.first().map(|l| l.seq) {
                    from = lines.last().map(|l| l.seq).unwrap_or(from);
                    channel
                        .push(first, lines.into_iter().map(|l| LiveLine { stream: l.stream, text: l.text }).collect());
                }
                if got < SOURCE_PAGE || channel.retired.load(Ordering::SeqCst) {
                    break;
                }
            }
            after = Some(from);
        }
        if over {
            let last_seq = match store.output_seq(build).await {
                Ok(n) => n.unwrap_or(0),
                Err(_) => after.unwrap_or(0),
            };
            let status = status.flatten();
            channel.ring.lock().expect("ring lock").end = Some(LiveEnd { status, last_seq });
            channel.changed();
            return;
        }
        let wait = if hub.is_local(build) { LOCAL_CHECK } else { REMOTE_POLL };
        let _ = tokio::time::timeout(wait, channel.kick.notified()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(texts: &[&str]) -> Vec<LiveLine> {
        texts.iter().map(|t| LiveLine { stream: OutputStream::Stdout, text: t.to_string() }).collect()
    }

    fn seqs(read: LiveRead, after: i64) -> Vec<i64> {
        match read {
            LiveRead::Lines(batches) => {
                batches.iter().flat_map(|b| (b.first..=b.last()).filter(move |s| *s > after)).collect()
            }
            other => panic!("expected lines, got {other:?}"),
        }
    }

    #[test]
    fn a_ring_keeps_lines_contiguous_and_trims_overlaps() {
        let mut ring = Ring::default();
        assert!(matches!(ring.read(0), LiveRead::Wait));
        assert!(ring.push(1, lines(&["a", "b"])));
        assert!(ring.push(2, lines(&["b", "c"])), "the new part of an overlapping batch is kept");
        assert!(!ring.push(1, lines(&["a", "b", "c"])), "a batch held already adds nothing");
        assert_eq!(seqs(ring.read(0), 0), vec![1, 2, 3]);
        assert_eq!(seqs(ring.read(2), 2), vec![3]);
        assert!(matches!(ring.read(3), LiveRead::Wait));
        // A gap restarts the ring: a viewer before it reads the store.
        assert!(ring.push(10, lines(&["j"])));
        assert!(matches!(ring.read(3), LiveRead::Behind(None)));
        assert_eq!(seqs(ring.read(9), 9), vec![10]);
        ring.end = Some(LiveEnd { status: Some(BuildStatus::Success), last_seq: 10 });
        assert!(matches!(ring.read(10), LiveRead::End(_)));
        assert!(matches!(ring.read(3), LiveRead::Behind(Some(_))));
        assert!(!ring.push(11, lines(&["after the end"])));
    }

    #[test]
    fn a_full_ring_drops_its_oldest_batches() {
        let mut ring = Ring::default();
        let big = "x".repeat(RING_BYTES / 4);
        for i in 0..10 {
            ring.push(i + 1, lines(&[&big]));
        }
        assert!(ring.bytes <= RING_BYTES);
        let base = ring.base.unwrap();
        assert!(base > 0);
        assert!(matches!(ring.read(0), LiveRead::Behind(None)), "a slow viewer reads the store");
        assert_eq!(seqs(ring.read(base), base), ((base + 1)..=10).collect::<Vec<_>>());
    }
}
