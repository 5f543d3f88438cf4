//! Live build output over Server-Sent Events: `line` events carry
//! `{seq, stream, text}` with the line number as the event id (clients
//! resume with Last-Event-ID), and one `end` event carries the final status
//! once the build is over and every line was sent.
//!
//! A viewer first reads the lines after its starting point from the store,
//! then follows the build's shared channel in the engine's live hub
//! ([`crate::engine::live`]): no viewer polls the database. A viewer that
//! falls behind the channel (a slow client) reads the store again until it
//! has caught up; it never holds up the others. Each batch of lines is
//! rendered to SSE text once, in pieces of at most [`PIECE_BYTES`], and every
//! viewer sends the same bytes (shared, never copied per viewer). A viewer
//! woken by new lines waits [`VIEW_TICK`] before it reads, so a build printing
//! all the time costs each viewer a few writes a second, not one per batch.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use warp::reply::Response;

use super::limits::LiveSlot;
use super::AppState;
use crate::service::model::{BuildStatus, Id, OutputStream};
use crate::service::model::{LiveBatch, LiveRead};

/// Lines read from the store per query while catching up.
const CATCH_UP: i64 = 500;
/// The most SSE text sent as one piece (bounds what a slow viewer holds).
const PIECE_BYTES: usize = 16 * 1024;
/// Pieces waiting for a viewer's connection.
const QUEUE: usize = 8;
/// How long a viewer woken by new lines gathers more before it sends them.
const VIEW_TICK: Duration = Duration::from_millis(50);
/// A quiet stream sends a comment this often, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long a viewer that found its lines neither in the channel nor (yet)
/// in the store waits before it looks again.
const RETRY: Duration = Duration::from_millis(100);

struct Cursor {
    state: Arc<AppState>,
    build: Id,
    after: i64,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    /// Its place among the live streams, freed when the stream ends.
    _slot: LiveSlot,
}

/// The SSE response for a build, starting after line `after`, holding `slot`
/// until the client goes or the build's end is sent.
pub fn stream(state: Arc<AppState>, build: Id, after: i64, slot: LiveSlot) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    tokio::spawn(follow(Cursor { state, build, after, tx, _slot: slot }));
    let mut response = super::streamed(rx);
    let headers = response.headers_mut();
    headers.insert("content-type", warp::http::HeaderValue::from_static("text/event-stream"));
    headers.insert("cache-control", warp::http::HeaderValue::from_static("no-cache"));
    response
}

/// The `line` events of these lines, as SSE text in pieces of about [`PIECE_BYTES`].
fn render<'a>(lines: impl Iterator<Item = (i64, OutputStream, &'a str)>) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for (seq, stream, text) in lines {
        let data = json!({ "seq": seq, "stream": stream, "text": text }).to_string();
        piece.push_str("event:line\ndata:");
        piece.push_str(&data);
        piece.push_str("\nid:");
        piece.push_str(&seq.to_string());
        piece.push_str("\n\n");
        if piece.len() >= PIECE_BYTES {
            pieces.push(Bytes::from(std::mem::take(&mut piece)));
        }
    }
    if !piece.is_empty() {
        pieces.push(Bytes::from(piece));
    }
    pieces
}

impl Cursor {
    /// Sends pieces; false when the client is gone.
    async fn send_pieces(&mut self, pieces: &[Bytes], last: i64) -> bool {
        for piece in pieces {
            if self.tx.send(Ok(piece.clone())).await.is_err() {
                return false;
            }
        }
        self.after = last;
        true
    }

    /// Sends the lines of a batch after the cursor; false when the client is gone.
    async fn send_batch(&mut self, batch: &LiveBatch) -> bool {
        if batch.last() <= self.after {
            return true;
        }
        if batch.first > self.after {
            let pieces = batch.rendered.get_or_init(|| {
                render(batch.lines.iter().enumerate().map(|(i, l)| (batch.first + i as i64, l.stream, &*l.text)))
            });
            return self.send_pieces(pieces, batch.last()).await;
        }
        // Part of it was read from the store already.
        let skip = (self.after - batch.first + 1) as usize;
        let pieces = render(
            batch.lines.iter().enumerate().skip(skip).map(|(i, l)| (batch.first + i as i64, l.stream, &*l.text)),
        );
        self.send_pieces(&pieces, batch.last()).await
    }

    /// Sends the next page of lines from the store: how many, or `None` when
    /// the client is gone.
    async fn send_from_store(&mut self) -> Option<i64> {
        let lines = self.state.service.output(self.build, self.after, CATCH_UP).await.unwrap_or_default();
        let Some(last) = lines.last().map(|l| l.seq) else { return Some(0) };
        let pieces = render(lines.iter().map(|l| (l.seq, l.stream, l.text.as_str())));
        let got = lines.len() as i64;
        drop(lines);
        self.send_pieces(&pieces, last).await.then_some(got)
    }

    async fn send_end(&self, status: Option<BuildStatus>) {
        let data = json!({ "status": status, "last_seq": self.after }).to_string();
        let _ = self.tx.send(Ok(Bytes::from(format!("event:end\ndata:{data}\n\n")))).await;
    }
}

/// Sends the build's lines as they are stored, then `end`; stops early when the client goes.
async fn follow(mut c: Cursor) {
    // Status first: a build that ended before this read has all its lines stored.
    let status = c.state.service.build_status(c.build).await.ok().flatten();
    if !status.is_some_and(BuildStatus::is_active) {
        // Over already: the store has every line.
        loop {
            match c.send_from_store().await {
                None => return,
                Some(got) if got < CATCH_UP => break,
                Some(_) => {}
            }
        }
        return c.send_end(status).await;
    }
    let mut live = c.state.service.follow(c.build);
    loop {
        match live.read(c.after) {
            LiveRead::Lines(batches) => {
                for batch in batches {
                    if !c.send_batch(&batch).await {
                        return;
                    }
                }
            }
            LiveRead::Behind(end) => match c.send_from_store().await {
                None => return,
                Some(0) => {
                    if let Some(end) = end {
                        return c.send_end(end.status).await;
                    }
                    // Announced but not readable yet (a replica behind, say).
                    tokio::select! {
                        _ = c.tx.closed() => return,
                        _ = tokio::time::sleep(RETRY) => {}
                    }
                }
                Some(_) => {}
            },
            LiveRead::Wait => {
                // A client that went away frees its place now, not at the next line.
                tokio::select! {
                    _ = c.tx.closed() => return,
                    _ = live.changed() => {
                        // More lines are on their way: take them together.
                        tokio::time::sleep(VIEW_TICK).await;
                    }
                    _ = tokio::time::sleep(KEEP_ALIVE) => {
                        if c.tx.send(Ok(Bytes::from_static(b":\n\n"))).await.is_err() {
                            return;
                        }
                    }
                }
            }
            LiveRead::End(end) => return c.send_end(end.status).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_pieces_are_what_warp_writes_for_each_line_event() {
        let lines: Vec<(i64, OutputStream, String)> = (1..=2000)
            .map(|i| {
                (
                    i,
                    if i % 7 == 0 { OutputStream::Message } else { OutputStream::Stdout },
                    format!("line {i} \"q\" é\t<"),
                )
            })
            .collect();
        let pieces = render(lines.iter().map(|(s, st, t)| (*s, *st, t.as_str())));
        assert!(pieces.len() > 1, "a long batch goes in several pieces");
        assert!(pieces.iter().all(|p| p.len() < PIECE_BYTES + 200));
        let ours: String = pieces.iter().map(|p| std::str::from_utf8(p).unwrap()).collect();
        // What the stream sent before, one warp event per line.
        let theirs: String = lines
            .iter()
            .map(|(seq, stream, text)| {
                let data = json!({ "seq": seq, "stream": stream, "text": text }).to_string();
                warp::sse::Event::default().event("line").id(seq.to_string()).data(data).to_string()
            })
            .collect();
        assert_eq!(ours, theirs);
    }
}
