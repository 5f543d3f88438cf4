//! Live build output over Server-Sent Events. It reads the output table, so
//! it follows a build whichever worker process (or host) produces it: `line`
//! events carry `{seq, stream, text}` with the line number as the event id
//! (clients resume with Last-Event-ID), and one `end` event carries the final
//! status once the build is over and every line was sent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use warp::reply::Response;
use warp::sse::Event;
use warp::Reply;

use super::limits::LiveSlot;
use super::AppState;
use crate::store::Id;

/// How often a quiet stream looks for new lines.
const POLL: Duration = Duration::from_millis(100);
/// Lines read per query.
const CHUNK: i64 = 1000;

struct Cursor {
    state: Arc<AppState>,
    build: Id,
    after: i64,
    /// Its place among the live streams, freed when the stream ends.
    _slot: LiveSlot,
}

/// The receiving end as a stream; it holds no future, so it is `Sync` as warp wants.
struct Events(tokio::sync::mpsc::Receiver<Event>);

impl futures_util::Stream for Events {
    type Item = Result<Event, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

/// The SSE response for a build, starting after line `after`, holding `slot`
/// until the client goes or the build's end is sent.
pub fn stream(state: Arc<AppState>, build: Id, after: i64, slot: LiveSlot) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(follow(Cursor { state, build, after, _slot: slot }, tx));
    warp::sse::reply(warp::sse::keep_alive().stream(Events(rx))).into_response()
}

/// Sends the build's lines as they are stored, then `end`; stops early when the client goes.
async fn follow(mut c: Cursor, tx: tokio::sync::mpsc::Sender<Event>) {
    loop {
        // Status first: a build that ended before this read has all its lines stored.
        let status = c.state.store.build_status(c.build).await.ok().flatten();
        let lines = c.state.store.output_since(c.build, c.after, CHUNK).await.unwrap_or_default();
        let got = lines.len() as i64;
        for line in lines {
            c.after = line.seq;
            let data = json!({ "seq": line.seq, "stream": line.stream, "text": line.text }).to_string();
            if tx.send(Event::default().event("line").id(line.seq.to_string()).data(data)).await.is_err() {
                return;
            }
        }
        let finished = status.map(|s| !s.is_active()).unwrap_or(true);
        if finished && got < CHUNK {
            let data = json!({ "status": status, "last_seq": c.after }).to_string();
            let _ = tx.send(Event::default().event("end").data(data)).await;
            return;
        }
        if got == 0 {
            // A client that went away frees its place now, not at the next line.
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}
