//! Secrets at rest: SSH private keys, their unlock passwords and service-login
//! passwords are encrypted before they reach the database.
//!
//! The cipher is XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`): an AEAD,
//! so a tampered value fails to decrypt instead of decrypting to garbage, and
//! a 192-bit random nonce per value, so no nonce bookkeeping is needed. The key
//! is 32 random bytes in `<data_dir>/secret.key` (base64), created with mode
//! 0600 on first run.
//!
//! Stored form: `$VESPENE$v1$<base64(nonce || ciphertext+tag)>`. The version
//! names the algorithm and key format, so a later version can be added beside
//! it and old values still read (rotation re-encrypts them).

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The prefix of every encrypted value.
pub const HEADER_PREFIX: &str = "$VESPENE$";
const V1: &str = "$VESPENE$v1$";
const NONCE_LEN: usize = 24;

/// A secret failed to load, encrypt or decrypt.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file could not be read or created.
    #[error("secret key file {path}: {message}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The stored value does not carry a known header.
    #[error("not an encrypted value (no {HEADER_PREFIX}v1$ header)")]
    NotEncrypted,
    /// A header version this build does not know.
    #[error("unknown secret format version '{0}'")]
    UnknownVersion(String),
    /// Wrong key, or the value was altered.
    #[error("secret could not be decrypted (wrong key file, or the value was altered)")]
    Decrypt,
}

/// The key and cipher. Never printed.
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// A box from raw key bytes.
    pub fn from_key(key: &[u8; 32]) -> Self {
        Self { cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// Reads the key file, or creates it (mode 0600) when missing.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let err = |message: String| SecretError::KeyFile { path: path.display().to_string(), message };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = B64.decode(text.trim()).map_err(|e| err(format!("not base64: {e}")))?;
                let key: [u8; 32] =
                    bytes.try_into().map_err(|_| err("must hold 32 bytes of base64-encoded key".into()))?;
                warn_if_readable(path);
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create directory: {e}")))?;
                }
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                match opts.open(path) {
                    Ok(mut f) => {
                        f.write_all(format!("{}\n", B64.encode(key)).as_bytes())
                            .and_then(|_| f.sync_all())
                            .map_err(|e| err(format!("cannot write: {e}")))?;
                        tracing::info!(path = %path.display(), "created a new secret key file");
                        Ok(Self { cipher: XChaCha20Poly1305::new(&key) })
                    }
                    // Another process created it between our read and our create.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load_or_create(path),
                    Err(e) => Err(err(format!("cannot create: {e}"))),
                }
            }
            Err(e) => Err(err(format!("cannot read: {e}"))),
        }
    }

    /// A new random key, in the key file's text form.
    pub fn generate_key_text() -> String {
        format!("{}\n", B64.encode(XChaCha20Poly1305::generate_key(&mut OsRng)))
    }

    /// Writes a new key file (mode 0600) holding `key_text`; fails if `path`
    /// exists. Answers the box for that key.
    pub fn create_key_file(path: &Path, key_text: &str) -> Result<Self, SecretError> {
        let err = |message: String| SecretError::KeyFile { path: path.display().to_string(), message };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path).map_err(|e| err(format!("cannot create: {e}")))?;
        f.write_all(key_text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| err(format!("cannot write: {e}")))?;
        Self::load_or_create(path)
    }

    /// Encrypts a value into its stored form.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, SecretError> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self.cipher.encrypt(&nonce, plaintext.as_bytes()).map_err(|_| SecretError::Decrypt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{V1}{}", B64.encode(blob)))
    }

    /// Decrypts a stored value.
    pub fn decrypt(&self, stored: &str) -> Result<String, SecretError> {
        let rest = stored.strip_prefix(HEADER_PREFIX).ok_or(SecretError::NotEncrypted)?;
        let (version, body) = rest.split_once('$').ok_or(SecretError::NotEncrypted)?;
        if version != "v1" {
            return Err(SecretError::UnknownVersion(version.to_string()));
        }
        let blob = B64.decode(body).map_err(|_| SecretError::Decrypt)?;
        if blob.len() < NONCE_LEN {
            return Err(SecretError::Decrypt);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let pt = self.cipher.decrypt(XNonce::from_slice(nonce), ct).map_err(|_| SecretError::Decrypt)?;
        String::from_utf8(pt).map_err(|_| SecretError::Decrypt)
    }

    /// True when a value carries the encrypted header.
    pub fn is_encrypted(value: &str) -> bool {
        value.starts_with(HEADER_PREFIX)
    }
}

fn warn_if_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "secret key file is readable by group or others; chmod 600 it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let sb = SecretBox::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let enc = sb.encrypt("hunter2").unwrap();
        assert!(enc.starts_with("$VESPENE$v1$"));
        assert!(!enc.contains("hunter2"));
        assert_eq!(sb.decrypt(&enc).unwrap(), "hunter2");
        // Same key file, new process: still decrypts.
        let again = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(again.decrypt(&enc).unwrap(), "hunter2");
        // Two encryptions differ (random nonce).
        assert_ne!(enc, sb.encrypt("hunter2").unwrap());
        // Tampering is detected.
        let mut blob = B64.decode(enc.strip_prefix(V1).unwrap()).unwrap();
        *blob.last_mut().unwrap() ^= 1;
        let bad = format!("{V1}{}", B64.encode(blob));
        assert!(sb.decrypt(&bad).is_err());
        assert!(matches!(sb.decrypt("plain"), Err(SecretError::NotEncrypted)));
        assert!(matches!(sb.decrypt("$VESPENE$v9$xx"), Err(SecretError::UnknownVersion(_))));
        // Another key cannot read it.
        let other = SecretBox::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(other.decrypt(&enc), Err(SecretError::Decrypt)));
    }
}
