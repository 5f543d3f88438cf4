//! The raw log download, `GET /api/v1/builds/{id}/log.txt`: every stored line
//! of a build (messages included), in order, one text line each, as
//! `text/plain`, gzip-compressed when the request's `Accept-Encoding` allows
//! gzip. It is streamed: pages of [`PAGE`] lines are read from the store one
//! after another (the whole log is never in memory), so a running build's
//! download holds the lines stored so far.

use std::sync::Arc;

use bytes::Bytes;
use warp::http::{HeaderMap, HeaderValue};
use warp::reply::Response;

use super::AppState;
use crate::service::model::Id;

/// Lines read from the store per query.
const PAGE: i64 = 1000;
/// Pieces of the body waiting for the client.
const QUEUE: usize = 4;

/// The response: headers now, the body as the store is read.
pub fn download(state: Arc<AppState>, build: Id, headers: &HeaderMap) -> Response {
    let gzip = accepts_gzip(headers);
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    tokio::spawn(produce(state, build, gzip, tx));
    let mut response = super::streamed(rx);
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("vary", HeaderValue::from_static("accept-encoding"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"build-{build}.log.txt\"")) {
        h.insert("content-disposition", v);
    }
    if gzip {
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    response
}

/// Whether `Accept-Encoding` allows gzip: `gzip` (or `x-gzip`) with a
/// non-zero quality, or else `*` with one.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all("accept-encoding").iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q=").map(|q| q.trim().parse::<f32>().unwrap_or(0.0)))
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q > 0.0),
                "*" => any = Some(q > 0.0),
                _ => {}
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

async fn produce(state: Arc<AppState>, build: Id, gzip: bool, tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
    use std::io::Write;
    let mut encoder = gzip.then(|| flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default()));
    let mut after = 0;
    loop {
        let lines = match state.service.output(build, after, PAGE).await {
            Ok(lines) => lines,
            Err(e) => {
                // Cut the body short: the client sees an incomplete response, not a short log.
                tracing::warn!(build, error = %e, "log download: cannot read lines");
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                return;
            }
        };
        let got = lines.len() as i64;
        let mut text = Vec::with_capacity(lines.iter().map(|l| l.text.len() + 1).sum());
        for line in &lines {
            after = line.seq;
            text.extend_from_slice(line.text.as_bytes());
            text.push(b'\n');
        }
        drop(lines);
        let piece = match encoder.as_mut() {
            Some(gz) => {
                let _ = gz.write_all(&text);
                std::mem::take(gz.get_mut())
            }
            None => text,
        };
        if !piece.is_empty() && tx.send(Ok(Bytes::from(piece))).await.is_err() {
            return;
        }
        if got < PAGE {
            break;
        }
    }
    if let Some(gz) = encoder {
        match gz.finish() {
            Ok(tail) => {
                let _ = tx.send(Ok(Bytes::from(tail))).await;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(value: &str) -> bool {
        let mut h = HeaderMap::new();
        h.insert("accept-encoding", HeaderValue::from_str(value).unwrap());
        accepts_gzip(&h)
    }

    #[test]
    fn gzip_only_when_the_client_allows_it() {
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(accepts("deflate, *"));
        assert!(!accepts("gzip;q=0, *"));
        assert!(!accepts("identity"));
        assert!(!accepts("*;q=0"));
        assert!(accepts("x-gzip"));
    }
}
