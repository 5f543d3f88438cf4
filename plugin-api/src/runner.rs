//! The command runner behind the host's [`CommandRunner`](crate::abi::CommandRunner)
//! callback (feature `runner`): stdout and stderr merged and streamed line by
//! line, ANSI escapes removed, standard input fed, and the whole process group
//! killed at once on stop or timeout (not on the next output line). The server
//! runs plugins' commands with it, and the test kit's `RecordingHost` does too,
//! so a plugin's tests see what a build would.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{CommandOutcome, CommandRequest};

/// How often a running command checks for stop and timeout.
const POLL: Duration = Duration::from_millis(50);

/// The gap a host that masks secrets passes to [`run_writes`]: output lines
/// that follow each other within this many milliseconds are handed over
/// together, as one write (a shell's `printf` writes line by line). A host
/// with nothing to mask passes 0, so no line waits.
pub const WRITE_GAP_MS: i32 = 5;
/// The most lines handed over together.
const WRITE_LINES: usize = 1024;
/// The most bytes of lines handed over together.
const WRITE_BYTES: usize = 1024 * 1024;
/// Batches of lines read ahead of the host: past them the reader waits, and
/// so does the command, whose pipe fills.
const READ_AHEAD: usize = 4;

pub use crate::{DEFAULT_MAX_LINE, LINE_CONTINUES};

/// What [`read_piece`] read.
enum Piece {
    /// A whole line (or the last, unterminated one).
    Line,
    /// The first `max_line` bytes of a longer line; more follows.
    Long,
    /// Nothing more.
    Eof,
}

/// Reads into `buf` up to a newline, or until it holds `max_line` bytes:
/// a line without end is never held whole.
fn read_piece(reader: &mut impl BufRead, buf: &mut Vec<u8>, max_line: usize) -> std::io::Result<Piece> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(if buf.is_empty() { Piece::Eof } else { Piece::Line });
        }
        let room = max_line.saturating_sub(buf.len());
        // One byte past the room: a newline right at the limit ends the line there.
        let window = &available[..available.len().min(room + 1)];
        if let Some(at) = window.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&available[..=at]);
            reader.consume(at + 1);
            return Ok(Piece::Line);
        }
        let take = available.len().min(room);
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if buf.len() >= max_line {
            return Ok(Piece::Long);
        }
    }
}

/// How many bytes at the end of `b` begin a UTF-8 character that is not complete yet.
fn incomplete_tail(b: &[u8]) -> usize {
    for back in 1..=b.len().min(3) {
        let c = b[b.len() - back];
        if c & 0xC0 == 0x80 {
            continue;
        }
        let need = match c {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Whether `fd` has something to read (or has closed) within `ms` milliseconds.
fn readable_within(fd: &impl std::os::fd::AsRawFd, ms: i32) -> bool {
    let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pollfd, 1, ms) > 0 }
}

/// Why a command was stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The build was stopped or the host's cancel token fired.
    Cancelled,
    /// The request's own time limit passed.
    TimedOut,
}

/// Runs `request`, calling `on_line` for every line it prints and `cancelled`
/// between lines and every [`POLL`] while it is quiet.
pub fn run(
    request: &CommandRequest,
    default_cwd: Option<&std::path::Path>,
    mut on_line: impl FnMut(&str),
    cancelled: &dyn Fn() -> bool,
) -> Result<(CommandOutcome, Option<StopReason>), String> {
    run_writes(request, default_cwd, 0, |lines| lines.iter().for_each(|l| on_line(l)), cancelled)
}

/// [`run`], handing over together the lines of one write of the command
/// (the lines of one read, and lines that follow within `write_gap_ms`):
/// the host masks a secret printed across two of them. Lines longer than
/// [`DEFAULT_MAX_LINE`] come in pieces (see [`run_writes_capped`]).
pub fn run_writes(
    request: &CommandRequest,
    default_cwd: Option<&std::path::Path>,
    write_gap_ms: i32,
    on_lines: impl FnMut(&[String]),
    cancelled: &dyn Fn() -> bool,
) -> Result<(CommandOutcome, Option<StopReason>), String> {
    run_writes_capped(request, default_cwd, write_gap_ms, DEFAULT_MAX_LINE, on_lines, cancelled)
}

/// [`run_writes`] with lines longer than `max_line` bytes handed over in
/// pieces of at most `max_line` bytes, each but the last ending with
/// [`LINE_CONTINUES`]: an endless line is never held whole, and no byte of
/// it is lost. The output is read at most a few batches ahead of
/// `on_lines`: a command printing faster than the host takes it waits.
pub fn run_writes_capped(
    request: &CommandRequest,
    default_cwd: Option<&std::path::Path>,
    write_gap_ms: i32,
    max_line: usize,
    mut on_lines: impl FnMut(&[String]),
    cancelled: &dyn Fn() -> bool,
) -> Result<(CommandOutcome, Option<StopReason>), String> {
    run_batches(request, default_cwd, write_gap_ms, max_line, |lines| on_lines(&lines), cancelled)
}

/// [`run_writes_capped`], handing each batch of lines over to keep: a host
/// that stores them takes them without copying.
pub fn run_batches(
    request: &CommandRequest,
    default_cwd: Option<&std::path::Path>,
    write_gap_ms: i32,
    max_line: usize,
    mut on_lines: impl FnMut(Vec<String>),
    cancelled: &dyn Fn() -> bool,
) -> Result<(CommandOutcome, Option<StopReason>), String> {
    let max_line = max_line.max(4);
    let mut cmd = match (&request.shell, request.argv.split_first()) {
        (Some(line), _) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
        (None, Some((program, args))) => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        (None, None) => return Err("the command is empty".into()),
    };
    if let Some(cwd) = request.cwd.as_deref().map(std::path::Path::new).or(default_cwd) {
        cmd.current_dir(cwd);
    }
    let (reader, writer) = std::io::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let writer2 = writer.try_clone().map_err(|e| format!("cannot create a pipe: {e}"))?;
    cmd.envs(&request.env)
        .stdin(if request.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(writer)
        .stderr(writer2)
        // Its own process group, so one kill reaches everything it started.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e}", describe(request)))?;
    drop(cmd); // closes our copies of the pipe's write end
    if let (Some(input), Some(mut stdin)) = (&request.stdin, child.stdin.take()) {
        let input = input.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let (tx, rx) = mpsc::sync_channel::<Vec<String>>(READ_AHEAD);
    let reader_thread = std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(64 * 1024, reader);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        let mut bytes = 0;
        loop {
            let piece = match read_piece(&mut reader, &mut buf, max_line) {
                Ok(Piece::Eof) | Err(_) => break,
                Ok(piece) => piece,
            };
            match piece {
                Piece::Long => {
                    // Cut at a character boundary: the start of a split character waits for the next piece.
                    let keep = incomplete_tail(&buf);
                    let rest = buf.split_off(buf.len() - keep);
                    let text = String::from_utf8_lossy(&buf);
                    lines.push(format!("{}{LINE_CONTINUES}", strip_ansi(&text)));
                    bytes += buf.len();
                    buf = rest;
                }
                _ => {
                    let text = String::from_utf8_lossy(&buf);
                    lines.push(strip_ansi(text.trim_end_matches(['\n', '\r'])));
                    bytes += buf.len();
                    buf.clear();
                }
            }
            // Whole lines still buffered, or following within a moment (a
            // shell's printf writes line by line), go in the same batch. A
            // partial line does not hold back the lines before it.
            let room = lines.len() < WRITE_LINES && bytes < WRITE_BYTES;
            if reader.buffer().is_empty() && room && readable_within(reader.get_ref(), write_gap_ms) {
                let _ = reader.fill_buf();
            }
            let more = room && (reader.buffer().contains(&b'\n') || buf.len() + reader.buffer().len() >= max_line);
            if !more {
                if tx.send(std::mem::take(&mut lines)).is_err() {
                    break;
                }
                bytes = 0;
            }
        }
        if !lines.is_empty() {
            let _ = tx.send(lines);
        }
    });
    let deadline = request.timeout_seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut last_line = String::new();
    let mut stop = None;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(lines) => {
                if let Some(line) = lines.last() {
                    last_line.clone_from(line);
                }
                on_lines(lines);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if stop.is_none() {
            if cancelled() {
                stop = Some(StopReason::Cancelled);
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                stop = Some(StopReason::TimedOut);
            }
            if stop.is_some() {
                kill_group(child.id());
            }
        }
    }
    let _ = reader_thread.join();
    let status = child.wait().map_err(|e| format!("cannot wait for {}: {e}", describe(request)))?;
    // Children that closed their output but kept running die with the group too.
    kill_group(child.id());
    let outcome = CommandOutcome {
        exit_code: status.code().unwrap_or(-1),
        cancelled: stop.is_some(),
        last_line: last_line.into(),
    };
    Ok((outcome, stop))
}

/// Kills a process group started with `process_group(0)`.
pub fn kill_group(pid: u32) {
    // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGKILL);
    }
}

/// The command as shown in the message log.
pub fn describe(request: &CommandRequest) -> String {
    match &request.shell {
        Some(line) => line.clone(),
        None => request.argv.join(" "),
    }
}

/// Removes ANSI escape sequences (colours, cursor moves) from a line.
pub fn strip_ansi(line: &str) -> String {
    if !line.contains('\u{1b}') {
        return line.to_string();
    }
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                chars.next();
                // CSI: parameters and intermediates, then one final byte in @..~
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                // OSC: up to BEL or ESC \
                for c in chars.by_ref() {
                    if c == '\u{7}' || c == '\u{1b}' {
                        break;
                    }
                }
            }
            Some(_) => {
                chars.next();
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours_and_keeps_text() {
        assert_eq!(strip_ansi("\u{1b}[1;31mred\u{1b}[0m plain"), "red plain");
        assert_eq!(strip_ansi("no escapes"), "no escapes");
    }

    #[test]
    fn merges_streams_and_reports_exit_code() {
        let mut lines = Vec::new();
        let (outcome, stop) =
            run(&CommandRequest::shell("echo out; echo err >&2; exit 3"), None, |l| lines.push(l.to_string()), &|| {
                false
            })
            .unwrap();
        assert_eq!(outcome.exit_code, 3);
        assert_eq!(stop, None);
        assert_eq!(lines, vec!["out", "err"]);
        assert_eq!(outcome.last_line.as_str(), "err");
    }

    #[test]
    fn lines_of_one_write_come_together_and_a_partial_line_holds_nothing_back() {
        let started = Instant::now();
        let mut batches: Vec<(Vec<String>, Duration)> = Vec::new();
        let script = "printf 'a\\nb\\n'; sleep 0.3; echo first; printf part; sleep 0.6; echo ial";
        let record = |l: &[String]| batches.push((l.to_vec(), started.elapsed()));
        run_writes(&CommandRequest::shell(script), None, WRITE_GAP_MS, record, &|| false).unwrap();
        let lines: Vec<Vec<String>> = batches.iter().map(|(l, _)| l.clone()).collect();
        assert_eq!(lines, vec![vec!["a", "b"], vec!["first"], vec!["partial"]]);
        assert!(batches[1].1 < Duration::from_millis(800), "'first' waited for the partial line: {batches:?}");
    }

    #[test]
    fn long_lines_come_in_marked_pieces_and_nothing_is_lost() {
        let mut lines = Vec::new();
        // 10 x 'a', 'é' split across the 12-byte limit, then a short line.
        let script = "printf 'aaaaaaaaaaa\\303\\251bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\\nshort\\n'";
        run_writes_capped(&CommandRequest::shell(script), None, 0, 12, |l| lines.extend_from_slice(l), &|| false)
            .unwrap();
        let joined: String = lines.iter().map(|l| l.strip_suffix(LINE_CONTINUES).unwrap_or(l)).collect();
        assert_eq!(joined, format!("aaaaaaaaaaaé{}short", "b".repeat(36)), "{lines:?}");
        assert_eq!(lines[0], format!("aaaaaaaaaaa{LINE_CONTINUES}"));
        assert!(lines.iter().all(|l| l.strip_suffix(LINE_CONTINUES).unwrap_or(l).len() <= 12), "{lines:?}");
        assert_eq!(lines.last().unwrap(), "short");
        assert_eq!(lines.iter().filter(|l| !l.ends_with(LINE_CONTINUES)).count(), 2, "{lines:?}");
    }

    #[test]
    fn timeout_kills_the_whole_group_quickly() {
        let started = Instant::now();
        let req =
            CommandRequest { timeout_seconds: Some(1), ..CommandRequest::shell("sleep 600 & sleep 600; echo never") };
        let (outcome, stop) = run(&req, None, |_| {}, &|| false).unwrap();
        assert_eq!(stop, Some(StopReason::TimedOut));
        assert!(outcome.cancelled);
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }
}
