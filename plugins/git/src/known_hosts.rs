//! The SSH host-key policy: a server's key is checked against OpenSSH
//! `known_hosts` files before any credential is sent to it.
//!
//! * `strict`: the key must already be listed in one of the `known_hosts`
//!   files (or in the `known_hosts_store`); an unknown host fails the checkout.
//! * `accept-new`: like OpenSSH's `StrictHostKeyChecking=accept-new`, a host
//!   that no file lists is trusted on first use and its key is appended to the
//!   `known_hosts_store`; a host that is listed with other keys is refused (its
//!   key changed, or someone is in the middle).
//!
//! There is no "accept anything" setting on purpose. Lines use the OpenSSH
//! format: plain or hashed (`|1|salt|hash`) host names, `[host]:port` for
//! other ports than 22, `*`/`?` wildcards, `!` negations and the `@revoked`
//! marker (`@cert-authority` lines are skipped: libgit2 sees plain keys only).

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// How unknown hosts are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Only hosts already listed are accepted.
    Strict,
    /// Unknown hosts are recorded on first use; changed keys are refused.
    AcceptNew,
}

impl Policy {
    /// Parses the `host_key_policy` parameter.
    pub fn parse(text: &str) -> Option<Policy> {
        match text {
            "strict" => Some(Policy::Strict),
            "accept-new" => Some(Policy::AcceptNew),
            _ => None,
        }
    }
}

/// Why a key was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Listed in this file.
    Known(PathBuf),
    /// Unknown until now and recorded in this file (accept-new).
    Recorded(PathBuf),
}

/// The configured policy and the files it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeys {
    /// strict or accept-new.
    pub policy: Policy,
    /// Read-only known_hosts files; missing ones are skipped.
    pub files: Vec<PathBuf>,
    /// Where accept-new records keys; also read as a known_hosts file.
    pub store: Option<PathBuf>,
}

/// One parsed known_hosts line.
struct Entry {
    revoked: bool,
    hosts: String,
    key: Vec<u8>,
}

impl HostKeys {
    /// Checks `key` (the SSH wire-format public key the server presented) for
    /// `host` on `port`; records it when the policy allows.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Result<Verdict, String> {
        let name = host_name(host, port);
        let described = describe_key(key);
        let mut others = Vec::new();
        let mut known = None;
        for file in self.files.iter().chain(self.store.iter()) {
            for entry in read_entries(file)? {
                if !hosts_match(&entry.hosts, &name) {
                    continue;
                }
                if entry.key == key {
                    if entry.revoked {
                        return Err(format!(
                            "git: the host key of {name} ({described}) is marked @revoked in {}: refusing to connect",
                            file.display()
                        ));
                    }
                    known.get_or_insert_with(|| file.clone());
                } else if !entry.revoked {
                    others.push(file.display().to_string());
                }
            }
        }
        if let Some(file) = known {
            return Ok(Verdict::Known(file));
        }
        if !others.is_empty() {
            others.dedup();
            return Err(format!(
                "git: the host key of {name} has CHANGED: it presented {described}, which does not match the key(s) \
                 recorded in {}; refusing to connect (if the server's key really changed, remove its old line)",
                others.join(", ")
            ));
        }
        match (self.policy, &self.store) {
            (Policy::AcceptNew, Some(store)) => {
                record(store, &name, key)?;
                Ok(Verdict::Recorded(store.clone()))
            }
            _ => {
                let searched: Vec<String> =
                    self.files.iter().chain(self.store.iter()).map(|p| p.display().to_string()).collect();
                Err(format!(
                    "git: the host key of {name} ({described}) is not known (searched: {}); add it to a file named by \
                     the git plugin's 'known_hosts' parameter, or set host_key_policy = \"accept-new\"",
                    if searched.is_empty() { "no files".to_string() } else { searched.join(", ") }
                ))
            }
        }
    }
}

/// How known_hosts names a host: `host` on port 22, `[host]:port` otherwise.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `ssh-ed25519 SHA256:...`, as OpenSSH prints a key.
pub fn describe_key(key: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key);
    format!("{} SHA256:{}", key_type(key).unwrap_or("unknown key type"), STANDARD_NO_PAD.encode(digest))
}

/// The key type named at the start of a wire-format key (a length-prefixed string).
pub fn key_type(key: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(key.get(4..4 + len)?).ok()
}

fn read_entries(file: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("git: cannot read known_hosts file {}: {e}", file.display())),
    };
    Ok(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            // CA lines certify other keys; plain keys are all libgit2 shows us.
            _ => return None,
        }
        first = fields.next()?;
    }
    let _key_type = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    Some(Entry { revoked, hosts: first.to_string(), key })
}

/// Whether a comma-separated host field names `name` (hashed entries, wildcards
/// and `!` negations as in OpenSSH).
fn hosts_match(field: &str, name: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pattern, name) {
            matched = true;
        }
    }
    matched
}

fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else { return false };
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// `*` and `?` wildcards, case-insensitive like host names.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((b'?', rest)) => !n.is_empty() && go(rest, &n[1..]),
            Some((c, rest)) => n.first().is_some_and(|d| d.eq_ignore_ascii_case(c)) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn record(store: &Path, name: &str, key: &[u8]) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("git: cannot record the host key of {name} in {}: {e}", store.display());
    if let Some(dir) = store.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let Some(kind) = key_type(key) else {
        return Err(format!("git: {name} presented a host key of no known type"));
    };
    let line = format!("{name} {kind} {}\n", STANDARD.encode(key));
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // One write of one line with O_APPEND: concurrent builds do not interleave.
    options.open(store).and_then(|mut f| f.write_all(line.as_bytes())).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, body: &[u8]) -> Vec<u8> {
        let mut k = (kind.len() as u32).to_be_bytes().to_vec();
        k.extend_from_slice(kind.as_bytes());
        k.extend_from_slice(&(body.len() as u32).to_be_bytes());
        k.extend_from_slice(body);
        k
    }

    fn line(hosts: &str, k: &[u8]) -> String {
        format!("{hosts} {} {}\n", key_type(k).unwrap(), STANDARD.encode(k))
    }

    fn hashed(name: &str, salt: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn strict_accepts_listed_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let good = key("ssh-ed25519", b"good");
        std::fs::write(&file, format!("# comment\n\n{}", line("[127.0.0.1]:2222,other", &good))).unwrap();
        let keys = HostKeys { policy: Policy::Strict, files: vec![file.clone()], store: None };

        assert_eq!(keys.check("127.0.0.1", 2222, &good).unwrap(), Verdict::Known(file.clone()));
        assert_eq!(keys.check("other", 22, &good).unwrap(), Verdict::Known(file));
        let err = keys.check("127.0.0.1", 2223, &good).unwrap_err();
        assert!(err.contains("[127.0.0.1]:2223 (ssh-ed25519 SHA256:") && err.contains("is not known"), "{err}");
        let err = keys.check("127.0.0.1", 2222, &key("ssh-ed25519", b"evil")).unwrap_err();
        assert!(err.contains("has CHANGED"), "{err}");
    }

    #[test]
    fn accept_new_records_once_and_refuses_changed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("sub/known_hosts");
        let keys =
            HostKeys { policy: Policy::AcceptNew, files: vec![dir.path().join("missing")], store: Some(store.clone()) };
        let first = key("ssh-ed25519", b"first");

        assert_eq!(keys.check("127.0.0.1", 2222, &first).unwrap(), Verdict::Recorded(store.clone()));
        assert_eq!(keys.check("127.0.0.1", 2222, &first).unwrap(), Verdict::Known(store.clone()));
        let text = std::fs::read_to_string(&store).unwrap();
        assert_eq!(text, line("[127.0.0.1]:2222", &first));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&store).unwrap().permissions().mode() & 0o777, 0o600);

        let err = keys.check("127.0.0.1", 2222, &key("ssh-ed25519", b"second")).unwrap_err();
        assert!(err.contains("has CHANGED") && err.contains(&store.display().to_string()), "{err}");
        // Nothing was added for the changed key.
        assert_eq!(std::fs::read_to_string(&store).unwrap(), text);
        // Another port is another host.
        assert!(matches!(keys.check("127.0.0.1", 2223, &first).unwrap(), Verdict::Recorded(_)));
    }

    #[test]
    fn hashed_wildcard_negated_and_revoked_entries() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        let k = key("ecdsa-sha2-nistp256", b"k");
        let bad = key("ssh-rsa", b"bad");
        let text = [
            line(&hashed("git.example.com", b"0123456789abcdefghij"), &k),
            line("*.corp,!evil.corp", &k),
            format!("@revoked {}", line("*", &bad)),
            format!("@cert-authority {}", line("*", &key("ssh-ed25519", b"ca"))),
        ]
        .concat();
        std::fs::write(&file, text).unwrap();
        let keys = HostKeys { policy: Policy::AcceptNew, files: vec![file], store: None };

        assert!(matches!(keys.check("git.example.com", 22, &k), Ok(Verdict::Known(_))));
        assert!(matches!(keys.check("build.CORP", 22, &k), Ok(Verdict::Known(_))));
        // Negated: unknown, and accept-new without a store cannot record it.
        assert!(keys.check("evil.corp", 22, &k).unwrap_err().contains("is not known"));
        assert!(keys.check("any.host", 22, &bad).unwrap_err().contains("@revoked"));
    }

    #[test]
    fn describes_keys_like_openssh() {
        let k = key("ssh-ed25519", b"x");
        assert_eq!(key_type(&k), Some("ssh-ed25519"));
        assert!(describe_key(&k).starts_with("ssh-ed25519 SHA256:"));
        assert_eq!(key_type(b"\x00\x00"), None);
        assert_eq!(host_name("h", 22), "h");
        assert_eq!(host_name("h", 2200), "[h]:2200");
    }
}
