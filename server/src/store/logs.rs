//! Build logs: append-only, numbered lines (1, 2, 3, ... per build) stored as
//! chunks of consecutive lines, one row per chunk in `build_log_chunks`.
//!
//! A row per line cost SQLite ~30k lines/s and a row lock per line on
//! PostgreSQL; a chunk holds up to [`CHUNK_LINES`] lines or about
//! [`CHUNK_BYTES`] of text, so a million-line build is a few hundred rows.
//!
//! An append first bumps `builds.output_seq` by the number of lines (taking
//! that row's write lock, so concurrent appenders to one build serialise and
//! never share a number), then inserts its chunks, in one transaction. Chunks
//! never span two appends: a chunk's lines are `first_seq..=last_seq`.
//!
//! The chunk payload (`encoding` 0, or zstd-compressed as `encoding` 1) is,
//! for each line: its stream (one byte), its time as a zigzag varint of
//! milliseconds since the previous line's (the first since 0), the text's
//! length as a varint, and the UTF-8 text.

use sqlx::Row;

use super::row::{self, get_i64};
use super::*;

/// The most lines in one chunk.
pub const CHUNK_LINES: usize = 4096;
/// A chunk is closed once its text reaches this many bytes (a longer single
/// line is a chunk of its own; lines are at most `limits.max_line_bytes`).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// zstd's level for chunks: its fastest standard one; logs compress well anyway.
const ZSTD_LEVEL: i32 = 1;
/// Chunks read per query.
const CHUNKS_PER_READ: i64 = 16;

/// How a chunk's payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Plain = 0,
    Zstd = 1,
}

fn stream_byte(stream: OutputStream) -> u8 {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
        OutputStream::Message => 2,
    }
}

fn stream_of(byte: u8) -> Option<OutputStream> {
    match byte {
        0 => Some(OutputStream::Stdout),
        1 => Some(OutputStream::Stderr),
        2 => Some(OutputStream::Message),
        _ => None,
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn get_varint(data: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The payload of one chunk being written.
#[derive(Default)]
pub(crate) struct ChunkWriter {
    buf: Vec<u8>,
    lines: usize,
    text_bytes: usize,
    last_ts: i64,
}

impl ChunkWriter {
    /// Whether a line of `len` bytes still belongs in this chunk.
    fn fits(&self, len: usize) -> bool {
        self.lines == 0 || (self.lines < CHUNK_LINES && self.text_bytes + len <= CHUNK_BYTES)
    }

    fn push(&mut self, stream: OutputStream, ts_ms: i64, text: &str) {
        self.buf.push(stream_byte(stream));
        put_varint(&mut self.buf, zigzag(ts_ms.wrapping_sub(self.last_ts)));
        put_varint(&mut self.buf, text.len() as u64);
        self.buf.extend_from_slice(text.as_bytes());
        self.last_ts = ts_ms;
        self.lines += 1;
        self.text_bytes += text.len();
    }

    /// The stored form: (encoding, bytes).
    fn finish(self, compress: bool) -> (Encoding, Vec<u8>) {
        if compress {
            if let Ok(packed) = zstd::bulk::compress(&self.buf, ZSTD_LEVEL) {
                if packed.len() < self.buf.len() {
                    return (Encoding::Zstd, packed);
                }
            }
        }
        (Encoding::Plain, self.buf)
    }
}

/// The lines numbered in `keep` of a stored chunk whose first line is
/// `first_seq`, and how many lines the chunk holds. Every line is checked;
/// only the kept ones are copied out (a page often wants part of a chunk).
fn decode_chunk(
    encoding: i64,
    data: &[u8],
    first_seq: i64,
    raw_bytes: usize,
    keep: std::ops::RangeInclusive<i64>,
) -> Option<(i64, Vec<OutputLine>)> {
    let unpacked;
    let payload = match encoding {
        0 => data,
        1 => {
            // A decompression context per thread: making one costs more than
            // unpacking a chunk of a few hundred lines.
            thread_local! {
                static UNPACKER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                    const { std::cell::RefCell::new(None) };
            }
            unpacked = UNPACKER.with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    *cell = zstd::bulk::Decompressor::new().ok();
                }
                cell.as_mut()?.decompress(data, raw_bytes).ok()
            })?;
            &unpacked[..]
        }
        _ => return None,
    };
    let mut lines = Vec::new();
    let (mut at, mut ts, mut seq) = (0, 0i64, first_seq);
    while at < payload.len() {
        let stream = stream_of(payload[at])?;
        at += 1;
        ts = ts.wrapping_add(unzigzag(get_varint(payload, &mut at)?));
        let len = get_varint(payload, &mut at)? as usize;
        let text = std::str::from_utf8(payload.get(at..at.checked_add(len)?)?).ok()?;
        at += len;
        if keep.contains(&seq) {
            lines.push(OutputLine { seq, stream, ts: row::from_millis(ts), text: text.to_owned() });
        }
        seq += 1;
    }
    Some((seq - first_seq, lines))
}

/// Writes `lines`, numbered from `first_seq`, as chunks of `build_id`.
async fn insert_chunks<'l>(
    conn: &mut sqlx::AnyConnection,
    build_id: Id,
    first_seq: i64,
    lines: impl Iterator<Item = (OutputStream, i64, &'l str)>,
    compress: bool,
) -> Result<()> {
    let mut seq = first_seq;
    let mut chunk = ChunkWriter::default();
    let mut chunk_first = seq;
    for (stream, ts, text) in lines {
        if !chunk.fits(text.len()) {
            let done = std::mem::take(&mut chunk);
            insert_chunk(conn, build_id, chunk_first, seq - 1, done, compress).await?;
            chunk_first = seq;
        }
        chunk.push(stream, ts, text);
        seq += 1;
    }
    if chunk.lines > 0 {
        insert_chunk(conn, build_id, chunk_first, seq - 1, chunk, compress).await?;
    }
    Ok(())
}

async fn insert_chunk(
    conn: &mut sqlx::AnyConnection,
    build_id: Id,
    first_seq: i64,
    last_seq: i64,
    chunk: ChunkWriter,
    compress: bool,
) -> Result<()> {
    let raw_bytes = chunk.buf.len() as i64;
    let (encoding, data) = chunk.finish(compress);
    sqlx::query(
        "INSERT INTO build_log_chunks (build_id, first_seq, last_seq, raw_bytes, encoding, data)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(build_id)
    .bind(first_seq)
    .bind(last_seq)
    .bind(raw_bytes)
    .bind(encoding as i64)
    .bind(data)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`Store::append_output`] inside a transaction the caller commits.
pub(crate) async fn append_output_in<S: AsRef<str>>(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    build_id: Id,
    lines: &[(OutputStream, S)],
    compress: bool,
) -> Result<i64> {
    let n = lines.len() as i64;
    // Reserve the numbers first: this write takes the lock.
    let r = sqlx::query("UPDATE builds SET output_seq = output_seq + $1 WHERE id = $2 RETURNING output_seq")
        .bind(n)
        .bind(build_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound { what: "build", id: build_id.to_string() })?;
    let last: i64 = r.try_get(0)?;
    let ts = row::now().timestamp_millis();
    let lines = lines.iter().map(|(stream, text)| (*stream, ts, text.as_ref()));
    insert_chunks(tx, build_id, last - n + 1, lines, compress).await?;
    Ok(last)
}

fn damaged(build_id: Id, last: i64) -> StoreError {
    StoreError::Config(format!("the stored log of build {build_id} is damaged in the chunk ending at line {last}"))
}

impl Store {
    /// How many output lines a build has (the last sequence number given out).
    pub async fn output_seq(&self, build_id: Id) -> Result<Option<i64>> {
        self.read_row("SELECT output_seq FROM builds WHERE id = $1", &[build_id.into()], |r| get_i64(r, "output_seq"))
            .await
    }

    /// Appends lines to a build's output in one transaction; answers the
    /// sequence number of the last line (lines are numbered 1, 2, 3, ...).
    pub async fn append_output<S: AsRef<str>>(&self, build_id: Id, lines: &[(OutputStream, S)]) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let last = append_output_in(&mut tx, build_id, lines, self.compress_logs).await?;
        tx.commit().await?;
        Ok(last)
    }

    /// Output lines with `seq > after`, oldest first, at most `limit` (0 means
    /// no limit). Live viewers call this with the last seq they have.
    pub async fn output_since(&self, build_id: Id, after: i64, limit: i64) -> Result<Vec<OutputLine>> {
        let limit = if limit <= 0 { usize::MAX } else { limit as usize };
        let mut out = Vec::new();
        let mut cursor = after;
        while out.len() < limit {
            let mut rows = 0;
            let args = [build_id.into(), cursor.into(), CHUNKS_PER_READ.into()];
            // A chunk row is not a struct: it is decoded into its lines.
            self.read_rows(
                "SELECT first_seq, last_seq, raw_bytes, encoding, data FROM build_log_chunks
                 WHERE build_id = $1 AND last_seq > $2 ORDER BY last_seq LIMIT $3",
                &args,
                |r| {
                    rows += 1;
                    if out.len() >= limit {
                        return Ok(());
                    }
                    let (first, last) = (get_i64(r, "first_seq")?, get_i64(r, "last_seq")?);
                    let raw = get_i64(r, "raw_bytes")?.max(0) as usize;
                    let data = r.bytes("data")?.ok_or_else(|| row::unexpected_null("data"))?;
                    // The lines after `after`, as many as the page has room for.
                    let from = after.saturating_add(1).max(first);
                    let room = (limit - out.len()).min(i64::MAX as usize) as i64;
                    let keep = from..=from.saturating_add(room - 1);
                    let lines = decode_chunk(get_i64(r, "encoding")?, &data, first, raw, keep)
                        .filter(|(count, _)| *count == last - first + 1)
                        .ok_or_else(|| damaged(build_id, last))?
                        .1;
                    out.extend(lines);
                    cursor = last;
                    Ok(())
                },
            )
            .await?;
            // Fewer rows than asked for: these are the last ones stored.
            if rows < CHUNKS_PER_READ {
                break;
            }
        }
        Ok(out)
    }

    /// The bytes of a build's stored log before compression, and after.
    pub async fn log_size(&self, build_id: Id) -> Result<(i64, i64)> {
        let sql = "SELECT CAST(COALESCE(SUM(raw_bytes), 0) AS BIGINT) AS raw,
                          CAST(COALESCE(SUM(LENGTH(data)), 0) AS BIGINT) AS stored
                   FROM build_log_chunks WHERE build_id = $1";
        let size = self.read_row(sql, &[build_id.into()], |r| Ok((get_i64(r, "raw")?, get_i64(r, "stored")?))).await?;
        Ok(size.unwrap_or_default())
    }
}

/// Migration 7: the one-row-per-line `build_output` table becomes chunks
/// (compressed), build by build, and is dropped.
pub(crate) async fn convert_line_rows(conn: &mut sqlx::AnyConnection) -> Result<()> {
    let builds: Vec<i64> = sqlx::query("SELECT DISTINCT build_id FROM build_output ORDER BY build_id")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<std::result::Result<_, _>>()?;
    for build_id in builds {
        let mut after = 0i64;
        loop {
            let rows = sqlx::query(
                "SELECT seq, stream, ts, line FROM build_output WHERE build_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            )
            .bind(build_id)
            .bind(after)
            .bind(CHUNK_LINES as i64)
            .fetch_all(&mut *conn)
            .await?;
            if rows.is_empty() {
                break;
            }
            // Old one-line rows, read only to be packed into chunks: no struct.
            let mut lines = Vec::with_capacity(rows.len());
            for r in &rows {
                let stream = OutputStream::parse(&row::get_str(r, "stream")?);
                lines.push((get_i64(r, "seq")?, stream, get_i64(r, "ts")?, row::get_str(r, "line")?));
            }
            after = lines.last().map(|l| l.0).unwrap_or(after);
            // Chunks hold consecutive numbers: a gap (never made by Vespene) starts a new one.
            let mut start = 0;
            while start < lines.len() {
                let mut end = start + 1;
                while end < lines.len() && lines[end].0 == lines[end - 1].0 + 1 {
                    end += 1;
                }
                let run = &lines[start..end];
                insert_chunks(conn, build_id, run[0].0, run.iter().map(|l| (l.1, l.2, l.3.as_str())), true).await?;
                start = end;
            }
        }
    }
    sqlx::query("DROP TABLE build_output").execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: std::ops::RangeInclusive<i64> = i64::MIN..=i64::MAX;

    #[test]
    fn chunks_round_trip_in_both_encodings() {
        for compress in [false, true] {
            let mut w = ChunkWriter::default();
            let texts = ["first", "", "ünïcödé ✓", "a much longer line that repeats, repeats, repeats, repeats"];
            let streams = [OutputStream::Stdout, OutputStream::Message, OutputStream::Stderr, OutputStream::Stdout];
            let times = [1_700_000_000_123i64, 1_700_000_000_200, 1_700_000_000_100, 1_700_000_000_100];
            for i in 0..4 {
                w.push(streams[i], times[i], texts[i]);
            }
            let raw = w.buf.len();
            let (encoding, data) = w.finish(compress);
            let (count, lines) = decode_chunk(encoding as i64, &data, 41, raw, ALL).expect("decodes");
            assert_eq!((count, lines.len()), (4, 4));
            let (count, part) = decode_chunk(encoding as i64, &data, 41, raw, 42..=43).expect("decodes");
            assert_eq!((count, part), (4, lines[1..3].to_vec()), "only the lines kept, every line counted");
            for (i, l) in lines.iter().enumerate() {
                assert_eq!(l.seq, 41 + i as i64);
                assert_eq!(l.text, texts[i]);
                assert_eq!(l.stream, streams[i]);
                assert_eq!(l.ts.timestamp_millis(), times[i], "times may go backwards too");
            }
        }
    }

    #[test]
    fn damaged_payloads_are_refused_not_misread() {
        let mut w = ChunkWriter::default();
        w.push(OutputStream::Stdout, 5, "hello");
        let raw = w.buf.len();
        let (_, data) = w.finish(false);
        assert!(decode_chunk(0, &data[..data.len() - 1], 1, raw, ALL).is_none(), "cut short");
        let mut bad_stream = data.clone();
        bad_stream[0] = 9;
        assert!(decode_chunk(0, &bad_stream, 1, raw, ALL).is_none(), "unknown stream");
        assert!(decode_chunk(7, &data, 1, raw, ALL).is_none(), "unknown encoding");
        assert!(decode_chunk(1, &data, 1, raw, ALL).is_none(), "not zstd");
    }

    #[test]
    fn chunks_close_at_the_line_and_byte_limits() {
        let mut w = ChunkWriter::default();
        assert!(w.fits(CHUNK_BYTES * 2), "an empty chunk takes any line");
        for _ in 0..CHUNK_LINES {
            w.push(OutputStream::Stdout, 0, "x");
        }
        assert!(!w.fits(1));
        let mut w = ChunkWriter::default();
        w.push(OutputStream::Stdout, 0, &"y".repeat(CHUNK_BYTES - 10));
        assert!(w.fits(10) && !w.fits(11));
    }

    #[test]
    fn varints_and_zigzag_cover_the_range() {
        for v in [0i64, 1, -1, 63, -64, 64, i64::MAX, i64::MIN, 1_700_000_000_000] {
            let mut buf = Vec::new();
            put_varint(&mut buf, zigzag(v));
            let mut at = 0;
            assert_eq!(unzigzag(get_varint(&buf, &mut at).unwrap()), v);
            assert_eq!(at, buf.len());
        }
    }
}
