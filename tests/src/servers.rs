//! Real repository servers for the SCM tests, each on 127.0.0.1 and a free
//! port, each stopped when dropped: `git daemon` (public git://), `sshd` with
//! generated host and deploy keys (private ssh://), a smart-HTTP server that
//! requires basic auth in front of `git http-backend`, and `svnserve`.
//!
//! Everything lives in a temporary directory of the server's own; nothing on
//! the machine's own SSH or Subversion setup is touched.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1 (free when asked; servers bind it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str, child: &mut Child) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening on {port}: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command to success, answering its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A child process killed (and reaped) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `git daemon --export-all` serving every repository under `base`.
pub struct GitDaemon {
    _child: Killed,
    /// The port it listens on.
    pub port: u16,
}

impl GitDaemon {
    /// Starts serving `base`.
    pub fn start(base: &Path) -> Self {
        let port = free_port();
        // `git daemon` runs `git-daemon` as a child of its own, which killing
        // `git` would leave running (holding whatever descriptors the test
        // process had): start the daemon itself.
        let exec_path = run(Command::new("git").arg("--exec-path"));
        let mut child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .arg("--export-all")
            .arg(format!("--base-path={}", base.display()))
            .arg("--reuseaddr")
            .arg(format!("--port={port}"))
            .arg("--listen=127.0.0.1")
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start git daemon");
        wait_listening(port, "git daemon", &mut child);
        GitDaemon { _child: Killed(child), port }
    }

    /// `git://127.0.0.1:PORT/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

/// An SSH key pair made with `ssh-keygen`.
pub struct KeyPair {
    /// The private key (OpenSSH format).
    pub private: String,
    /// The public key line.
    pub public: String,
}

/// Generates an ed25519 key with `passphrase` ("" for none), keeping only its
/// text: the files are removed at once, so a later search of the disk for
/// the key finds only what the code under test left.
pub fn ssh_keygen(passphrase: &str) -> KeyPair {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", "vespene-test", "-f"])
        .arg(&file));
    let pair = KeyPair {
        private: std::fs::read_to_string(&file).unwrap(),
        public: std::fs::read_to_string(file.with_extension("pub")).unwrap().trim().to_string(),
    };
    drop(dir);
    pair
}

/// `sshd` on 127.0.0.1 for the current user, public-key authentication only,
/// with the given authorized keys and a host key of its own.
pub struct Sshd {
    _child: Killed,
    _dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
    /// The user that logs in (the one running the tests).
    pub user: String,
    /// The host's public key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
}

impl Sshd {
    /// Starts sshd accepting `authorized` public key lines.
    pub fn start(authorized: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let host_key = dir.path().join("host_ed25519");
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&host_key));
        let authorized_keys = dir.path().join("authorized_keys");
        std::fs::write(&authorized_keys, authorized.join("\n") + "\n").unwrap();
        let user = run(Command::new("id").arg("-un"));
        let port = free_port();
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nAllowUsers {user}\n\
                 AllowAgentForwarding no\nX11Forwarding no\nLogLevel VERBOSE\n",
                host_key.display(),
                dir.path().join("sshd.pid").display(),
                authorized_keys.display(),
            ),
        )
        .unwrap();
        // sshd's privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/sshd");
        wait_listening(port, "sshd", &mut child);
        let host_key = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
        let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        Sshd { _child: Killed(child), _dir: dir, port, user, host_key }
    }

    /// `ssh://USER@127.0.0.1:PORT<absolute path>`.
    pub fn url(&self, path: &Path) -> String {
        format!("ssh://{}@127.0.0.1:{}{}", self.user, self.port, path.display())
    }

    /// The known_hosts line for this server.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_key)
    }

    /// What sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("sshd.log")).unwrap_or_default()
    }
}

/// Git's smart HTTP (`git http-backend` as CGI) behind HTTP basic auth.
pub struct GitHttp {
    stop: Arc<AtomicBool>,
    /// The port it listens on.
    pub port: u16,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitHttp {
    /// Serves the repositories under `root` to `user`:`password` only.
    pub fn start(root: &Path, user: &str, password: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!("Basic {}", base64(format!("{user}:{password}").as_bytes()));
        let root = root.to_path_buf();
        let user = user.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (root, expected, user) = (root.clone(), expected.clone(), user.clone());
                std::thread::spawn(move || {
                    let _ = serve_cgi(stream, &root, &expected, &user);
                });
            }
        });
        GitHttp { stop, port, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One request: check the credentials, run `git http-backend`, translate its
/// CGI answer into an HTTP response, close.
fn serve_cgi(stream: TcpStream, root: &Path, expected_auth: &str, user: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if header("authorization").as_deref() != Some(expected_auth) {
        let body = "authentication required\n";
        write!(
            writer,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", &method)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(encoding) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", protocol);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut output = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut output)?;
    let _ = feeder.join();
    child.wait()?;
    let split = output.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, content) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&output[..i]).into_owned(), &output[i + n..]),
        None => (String::new(), &output[..]),
    };
    let mut status = "200 OK".to_string();
    let mut response_headers = String::new();
    for h in head.lines() {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            Some((k, v)) => response_headers.push_str(&format!("{}: {}\r\n", k.trim(), v.trim())),
            None => {}
        }
    }
    write!(
        writer,
        "HTTP/1.1 {status}\r\n{response_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    )?;
    writer.write_all(content)?;
    writer.flush()
}

fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `svnserve` serving the repositories under `root` (`svn://127.0.0.1:PORT/<name>`).
pub struct Svnserve {
    _child: Killed,
    /// The port it listens on.
    pub port: u16,
}

impl Svnserve {
    /// Starts serving `root`.
    pub fn start(root: &Path) -> Self {
        let port = free_port();
        let mut child = Command::new("svnserve")
            .args(["-d", "--foreground", "--listen-host", "127.0.0.1", "--listen-port"])
            .arg(port.to_string())
            .arg("-r")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start svnserve");
        wait_listening(port, "svnserve", &mut child);
        Svnserve { _child: Killed(child), port }
    }

    /// `svn://127.0.0.1:PORT/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("svn://127.0.0.1:{}/{name}", self.port)
    }
}

/// Creates a Subversion repository `root/name` whose `svnserve.conf` allows
/// anonymous reads, or, with `users`, only those users (plain passwd file).
pub fn svn_repository(root: &Path, name: &str, users: &[(&str, &str)]) -> PathBuf {
    let repo = root.join(name);
    run(Command::new("svnadmin").arg("create").arg(&repo));
    let conf = if users.is_empty() {
        "[general]\nanon-access = read\nauth-access = write\n".to_string()
    } else {
        let passwd: String = users.iter().map(|(u, p)| format!("{u} = {p}\n")).collect();
        std::fs::write(repo.join("conf/passwd"), format!("[users]\n{passwd}")).unwrap();
        "[general]\nanon-access = none\nauth-access = write\npassword-db = passwd\nrealm = vespene-test\n".to_string()
    };
    std::fs::write(repo.join("conf/svnserve.conf"), conf).unwrap();
    repo
}
