//! Issue 15 ("hostile input and overload"), findings 1 to 5, end to end
//! through the real `vespene` binary and the real plugin `.so` files, as an
//! attacker on loopback would try them: the file browser following links and
//! opening FIFOs (1), logins that cost unbounded memory and can be guessed
//! without limit (2), scripts rendered on the request threads without limit
//! (3), an endless output line held whole (4), and requests that are never
//! finished, bodies that are never counted and live streams that are never
//! capped (5). Each test asserts behaviour (a status, a header, a closed
//! connection, a marker), never a duration.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use vespene::store::BuildStatus;
use vespene_e2e::api_client::*;
use vespene_e2e::builds::*;
use vespene_e2e::*;

fn settings(extra: &str) -> String {
    format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 4\n{extra}", bin_dir().display())
}

/// Sends a raw request and reads the whole answer (the connection is closed
/// by `Connection: close`), failing if nothing comes within `limit`.
fn raw_exchange(addr: &str, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) if answer.is_empty() => panic!("no answer within {limit:?}: {e}"),
        Err(_) => {}
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn header_of<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The server's peak resident memory so far (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// Finding 1: the file browser opens paths relative to the build root and
/// follows no symbolic link at any level, not even one pointing inside the
/// root, so a build that swaps a directory for a link between two requests
/// gets nothing out; FIFOs and devices are refused at once, never opened for
/// a blocking read.
#[tokio::test(flavor = "multi_thread")]
async fn finding_1_the_file_browser_follows_no_symlink_and_refuses_fifos() {
    let (sandbox, server, store, pool, alice) = alice_on_a_shell_pool(&settings("")).await;
    let id = create_and_start(
        &alice,
        pool,
        "files",
        "#!/bin/sh\necho hello > report.txt\nmkdir sub\necho inner > sub/inner.txt\n",
    );
    let build = finished(&store, id, Duration::from_secs(60)).await;
    assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, id).await);
    let root = Path::new(&build.working_dir).to_path_buf();
    let outside = sandbox.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("f"), "SECRET-OUTSIDE\n").unwrap();
    std::os::unix::fs::symlink(root.join("report.txt"), root.join("link-in")).unwrap();
    std::os::unix::fs::symlink("report.txt", root.join("relative-link")).unwrap();
    std::os::unix::fs::symlink(sandbox.path("data/secret.key"), root.join("key")).unwrap();
    std::os::unix::fs::symlink(root.join("sub"), root.join("dirlink")).unwrap();
    let fifo = std::ffi::CString::new(root.join("pipe").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");

    let session = session_from_login(&server.addr, "alice");
    let get = |path: &str| session.text("GET", &format!("/ui/builds/{id}/files/{path}"), None);
    assert_eq!(get("report.txt"), (200, "hello\n".to_string()));
    assert_eq!(get("sub/inner.txt"), (200, "inner\n".to_string()));
    for link in ["link-in", "relative-link", "key", "dirlink/inner.txt"] {
        let (status, body) = get(link);
        assert_eq!(status, 403, "{link} was served: {body}");
        assert!(body.contains("symbolic link"), "{link}: {body}");
    }
    // A FIFO with no writer: refused, and the answer comes (it would hang a thread for good).
    let (status, body) = get("pipe");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not a regular file"), "{body}");
    // The listing shows what links are without following them.
    let (status, listing) = get("");
    assert_eq!(status, 200, "{listing}");
    assert!(listing.contains("report.txt") && listing.contains("link-in"), "{listing}");

    // A directory swapped for a link to the outside, over and over, while files are asked for.
    std::fs::create_dir_all(root.join("swap")).unwrap();
    std::fs::write(root.join("swap/f"), "harmless\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, root, outside) = (stop.clone(), root.clone(), outside.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let _ = std::fs::rename(root.join("swap"), root.join("swap.real"));
                let _ = std::os::unix::fs::symlink(&outside, root.join("swap"));
                std::thread::yield_now();
                let _ = std::fs::remove_file(root.join("swap"));
                let _ = std::fs::rename(root.join("swap.real"), root.join("swap"));
            }
        })
    };
    let mut served = 0;
    for _ in 0..300 {
        let (status, body) = get("swap/f");
        assert!(!body.contains("SECRET-OUTSIDE"), "a swapped link was followed out of the build root");
        if status == 200 {
            served += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    swapper.join().unwrap();
    println!("swap/f served {served} times of 300, never through the link");
}

/// Finding 2: wrong logins are throttled per account and per client address
/// (429 with Retry-After, even for the right password while it lasts), a
/// flood of them costs bounded memory (password hashing has a concurrency
/// bound), and another address and another account are not affected.
#[tokio::test(flavor = "multi_thread")]
async fn finding_2_logins_are_throttled_per_account_and_address_and_a_flood_holds_memory() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(
        "[limits]\nlogin_failures_per_account = 3\nlogin_failures_per_address = 40\nlogin_window_seconds = 600\n",
    ));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    user(&store, "alice", false, &[]).await;
    user(&store, "bob", false, &[]).await;
    let login = |from: &str, name: &str, password: &str| -> String {
        let body = json!({"username": name, "password": password}).to_string();
        let request = format!(
            "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange_on(connect_from(from, &server.addr), request.as_bytes())
    };
    for _ in 0..3 {
        let answer = login("127.0.0.1", "alice", "wrong");
        assert_eq!(status_of(&answer), 401, "{answer}");
    }
    let answer = login("127.0.0.1", "alice", "wrong");
    assert_eq!(status_of(&answer), 429, "{answer}");
    let retry: u64 = header_of(&answer, "retry-after").expect("Retry-After").parse().expect("seconds");
    assert!(retry > 0 && retry <= 600, "{retry}");
    assert!(answer.contains("too many failed logins"), "{answer}");
    // The right password waits too, from any address; other accounts are not affected.
    assert_eq!(status_of(&login("127.0.0.1", "alice", "password-of-alice")), 429);
    assert_eq!(status_of(&login("127.0.0.2", "alice", "password-of-alice")), 429);
    assert_eq!(status_of(&login("127.0.0.1", "bob", "password-of-bob")), 200);

    // A flood of wrong logins for names that do not exist, 30 at a time, from one address.
    let pid = server.pid();
    let addr = server.addr.clone();
    let answers: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..30)
            .map(|t| {
                let addr = addr.clone();
                scope.spawn(move || {
                    (0..2)
                        .map(|i| {
                            let body = json!({"username": format!("nobody-{t}-{i}"), "password": "guess"}).to_string();
                            let request = format!(
                                "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            status_of(&raw_exchange(&addr, request.as_bytes(), Duration::from_secs(300)))
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.len(), 60);
    assert!(answers.contains(&429), "{answers:?}");
    assert!(answers.iter().all(|s| *s == 401 || *s == 429), "{answers:?}");
    // The address is now over its limit: a further wrong login anywhere is refused unhashed.
    let answer = login("127.0.0.1", "bob", "wrong");
    assert_eq!(status_of(&answer), 429, "{answer}");
    assert!(answer.contains("this address"), "{answer}");
    // ... while another address still logs in.
    assert_eq!(status_of(&login("127.0.0.2", "bob", "password-of-bob")), 200);
    let peak = peak_rss_kib(pid);
    assert!(peak < 100 * 1024, "the server's peak RSS reached {} MiB under a flood of wrong logins", peak / 1024);
}

/// Connects to `server` from the loopback address `from`.
fn connect_from(from: &str, server: &str) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        use std::os::fd::FromRawFd;
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut local: libc::sockaddr_in = std::mem::zeroed();
        local.sin_family = libc::AF_INET as libc::sa_family_t;
        local.sin_addr.s_addr = u32::from(from.parse::<std::net::Ipv4Addr>().unwrap()).to_be();
        let r = libc::bind(
            fd,
            &local as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(r, 0, "bind to {from}");
        let target: std::net::SocketAddrV4 = server.parse().unwrap();
        let mut remote: libc::sockaddr_in = std::mem::zeroed();
        remote.sin_family = libc::AF_INET as libc::sa_family_t;
        remote.sin_port = target.port().to_be();
        remote.sin_addr.s_addr = u32::from(*target.ip()).to_be();
        let r = libc::connect(
            fd,
            &remote as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(r, 0, "connect from {from}");
        TcpStream::from_raw_fd(fd)
    }
}

fn exchange_on(mut stream: TcpStream, request: &[u8]) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Finding 3: a script whose template never ends (nested loops) is rendered
/// off the request threads with a fuel limit: the start answers, the build
/// fails naming the problem, and the server answers others meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn finding_3_a_runaway_template_runs_out_of_fuel_off_the_request_threads() {
    let (_sandbox, server, store, pool, alice) = alice_on_a_shell_pool(&settings("")).await;
    let script = "#!/bin/sh\n{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}\
                  {% endfor %}{% endfor %}{% endfor %}echo never\n";
    let mut ids = Vec::new();
    for n in 0..2 {
        let project = alice.ok(
            "POST",
            "/api/v1/projects",
            Some(&json!({"name": format!("loops-{n}"), "worker_pool_id": pool, "script": script})),
        );
        ids.push(project["id"].as_i64().unwrap());
    }
    let token = alice.token.clone().unwrap();
    let starts: Vec<_> = ids
        .iter()
        .map(|id| {
            let (addr, token, id) = (server.addr.clone(), token.clone(), *id);
            std::thread::spawn(move || {
                let request = format!(
                    "POST /api/v1/projects/{id}/start HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                     Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
                );
                raw_exchange(&addr, request.as_bytes(), Duration::from_secs(120))
            })
        })
        .collect();
    // Other requests are answered while those render.
    let health = raw_exchange(
        &server.addr,
        b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(120),
    );
    assert_eq!(status_of(&health), 200, "{health}");
    for start in starts {
        let answer = start.join().unwrap();
        assert_eq!(status_of(&answer), 201, "{answer}");
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap_or("")).unwrap_or_default();
        let id = body["id"].as_i64().unwrap_or_else(|| panic!("{answer}"));
        assert_eq!(body["status"], "FAILURE", "{answer}");
        let log = log_of(&store, id).await;
        assert!(log.contains("too much work to render") && log.contains("fuel"), "{log}");
    }
}

/// Finding 4: a line longer than `max_line_bytes` (64 KiB by default) is
/// stored in pieces, each but the last ending with a visible marker, every
/// byte kept, and the worker never holds the whole line.
#[tokio::test(flavor = "multi_thread")]
async fn finding_4_an_endless_output_line_is_split_with_a_marker_and_nothing_is_lost() {
    let (_sandbox, server, store, pool, alice) = alice_on_a_shell_pool(&settings("")).await;
    let before = peak_rss_kib(server.pid());
    // 96 MiB of 'x' with no newline, then a normal line.
    let size: usize = 96 * 1024 * 1024;
    let script = format!("#!/bin/sh\nhead -c {size} /dev/zero | tr '\\0' x\necho\necho after\n");
    let id = create_and_start(&alice, pool, "long-line", &script);
    let build = finished(&store, id, Duration::from_secs(600)).await;
    assert_eq!(build.status, BuildStatus::Success, "{}", log_of(&store, id).await);
    let lines = store.output_since(id, 0, 1_000_000).await.unwrap();
    let marker = vespene_plugin_api::runner::LINE_CONTINUES;
    let mut pieces = 0;
    let mut xs = 0;
    let mut after = false;
    for line in lines.iter().filter(|l| l.stream != vespene::store::OutputStream::Message) {
        let text = unstamped(&line.text);
        if let Some(piece) = text.strip_suffix(marker) {
            assert!(piece.len() <= 64 * 1024, "a piece of {} bytes", piece.len());
            assert!(piece.bytes().all(|b| b == b'x'));
            pieces += 1;
            xs += piece.len();
        } else if text.bytes().all(|b| b == b'x') && !text.is_empty() {
            // The last piece.
            assert!(text.len() <= 64 * 1024);
            xs += text.len();
        } else if text == "after" {
            after = true;
        }
    }
    assert_eq!(xs, size, "every byte of the long line is stored");
    assert!(pieces >= size / (64 * 1024) - 1, "{pieces} pieces");
    assert!(after, "the line after the long one is stored");
    // Holding the line whole costs at least its size (the old code grew by
    // about four times it); pieces in flight and the store's batches stay
    // well below (about 25 to 70 MiB here, depending on how busy the disk is).
    let peak = peak_rss_kib(server.pid());
    assert!(
        peak < before + (size / 1024) as u64,
        "the server's peak RSS grew from {} to {} MiB: the line was held whole",
        before / 1024,
        peak / 1024
    );
}

/// Finding 5: a chunked body is counted as it arrives (413 past 1 MiB), a
/// request whose headers never end and a body that stalls are closed after
/// the configured timeouts, and live streams are capped per user and in
/// total with a 503 saying so.
#[tokio::test(flavor = "multi_thread")]
async fn finding_5_bodies_are_counted_slow_requests_time_out_and_live_streams_are_capped() {
    let sandbox = Sandbox::new();
    sandbox.settings(&settings(
        "[limits]\nheader_read_timeout_seconds = 2\nbody_idle_timeout_seconds = 2\n\
         live_streams_per_user = 2\nlive_streams_total = 3\n",
    ));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    let pool = shared_shell_pool(&store).await;
    user(&store, "alice", false, &[]).await;
    // A superuser, who may watch alice's build.
    user(&store, "bob", true, &[]).await;
    let alice = token_for(&server.addr, "alice");
    let bob = token_for(&server.addr, "bob");

    // A chunked body of 4 MiB, unauthenticated: refused once 1 MiB has arrived.
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    stream
        .write_all(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n")
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..256 {
            if writer.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).is_err()
                || writer.write_all(&chunk).is_err()
                || writer.write_all(b"\r\n").is_err()
            {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert_eq!(status_of(&status_line), 413, "{status_line}");
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    assert!(rest.contains("larger than 1048576 bytes"), "{rest}");
    drop(reader);
    feeder.join().unwrap();

    // Headers that never end: the connection is closed after the header-read timeout.
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = Vec::new();
    let closed = slow.read_to_end(&mut buf);
    assert!(
        closed.is_ok() || closed.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the half-sent request was not closed: {closed:?}"
    );
    // An idle keep-alive connection is closed too.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    idle.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let closed = idle.read_to_end(&mut buf);
    assert!(closed.is_ok(), "the idle connection was not closed: {closed:?}");
    assert_eq!(status_of(&String::from_utf8_lossy(&buf)), 200);
    // A body that stalls: 408, and closed.
    let answer = raw_exchange(
        &server.addr,
        b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
        Duration::from_secs(60),
    );
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert!(answer.contains("the request body stalled"), "{answer}");

    // Live streams of a running build: two per user, three in all.
    let id = create_and_start(&alice, pool, "sleeper", "#!/bin/sh\necho started\nsleep 120\n");
    let open = |client: &Client| -> (u16, Option<TcpStream>, String) {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(
            s,
            "GET /api/v1/builds/{id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            client.token.as_deref().unwrap()
        )
        .unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = status_of(&head);
        if status == 200 {
            (status, Some(s), head)
        } else {
            let mut body = vec![0; 4096];
            let n = reader.read(&mut body).unwrap_or(0);
            (status, None, format!("{head}{}", String::from_utf8_lossy(&body[..n])))
        }
    };
    let (s1, a1, _) = open(&alice);
    let (s2, _a2, _) = open(&alice);
    assert_eq!((s1, s2), (200, 200));
    let (s3, _, body) = open(&alice);
    assert_eq!(s3, 503, "{body}");
    assert!(body.contains("too many live streams") && body.contains("per user"), "{body}");
    let (s4, _b1, _) = open(&bob);
    assert_eq!(s4, 200);
    let (s5, _, body) = open(&bob);
    assert_eq!(s5, 503, "{body}");
    assert!(body.contains("too many live streams") && body.contains("in all"), "{body}");
    // A closed stream frees its place.
    drop(a1);
    let reopened = wait_for(Duration::from_secs(60), "a freed live stream", || async {
        let (status, stream, _) = open(&bob);
        (status == 200).then_some(stream)
    })
    .await;
    assert!(reopened.is_some());
    alice.ok("POST", &format!("/api/v1/builds/{id}/stop"), None);
}
