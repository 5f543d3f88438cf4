//! The `basic` secrets plugin: SSH private keys, their unlock passwords,
//! service-login passwords, webhook tokens and secret variables are encrypted
//! with a key file before the server stores them.
//!
//! The cipher is XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`): an AEAD,
//! so a tampered value fails to decrypt instead of decrypting to garbage, and
//! a 192-bit random nonce per value, so no nonce bookkeeping is needed. The key
//! is 32 random bytes, base64, in `key_file`, created with mode 0600 when
//! missing. A key file that group or others may read is refused.
//!
//! Stored form: `$VESPENE$v1$<base64(nonce || ciphertext+tag)>`. The version
//! names the algorithm and key format, so a later version can be added beside
//! it and old values still read.
//!
//! ```toml
//! [plugins.secrets.basic]
//! library = "basic"
//! key_file = "secret.key"   # relative to data_dir; the default configuration
//! ```

use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{export_plugin, params, Kind, PluginResult, Secrets};

/// The header of every value this plugin stores.
pub const V1: &str = "$VESPENE$v1$";
const NONCE_LEN: usize = 24;

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

    /// Reads the key file, or creates it (mode 0600, its directory too) when
    /// missing.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let err = |message: String| format!("key file {}: {message}", path.display());
        match std::fs::read_to_string(path) {
            Ok(text) => {
                refuse_if_readable(path).map_err(err)?;
                let bytes = B64.decode(text.trim()).map_err(|e| err(format!("not base64: {e}")))?;
                let key: [u8; 32] =
                    bytes.try_into().map_err(|_| err("must hold 32 bytes of base64-encoded key".into()))?;
                Ok(Self::from_key(&key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its directory: {e}")))?;
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

    /// Encrypts a value into its stored form.
    pub fn encrypt(&self, plaintext: &str) -> Result<String, String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self.cipher.encrypt(&nonce, plaintext.as_bytes()).map_err(|_| "encryption failed".to_string())?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ct.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ct);
        Ok(format!("{V1}{}", B64.encode(blob)))
    }

    /// Decrypts a stored value.
    pub fn decrypt(&self, stored: &str) -> Result<String, String> {
        let body = stored.strip_prefix(V1).ok_or_else(|| format!("not a value of this plugin (no {V1} header)"))?;
        let wrong = || "cannot be decrypted (wrong key file, or the value was altered)".to_string();
        let blob = B64.decode(body).map_err(|_| wrong())?;
        if blob.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let pt = self.cipher.decrypt(XNonce::from_slice(nonce), ct).map_err(|_| wrong())?;
        String::from_utf8(pt).map_err(|_| wrong())
    }
}

fn refuse_if_readable(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!("group or others may read it (mode {:o}); chmod 600 it", mode & 0o777));
        }
    }
    Ok(())
}

/// The parameters this plugin takes.
const PARAMETERS: &[&str] = &["key_file"];

/// The `basic` secrets plugin.
#[derive(Debug)]
pub struct BasicSecrets {
    key: SecretBox,
}

impl Secrets for BasicSecrets {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Secrets, "basic", PARAMETERS)?;
        let key_file = match params.get("key_file") {
            Some(Value::String(path)) if Path::new(path).is_absolute() => path,
            Some(Value::String(path)) => {
                return Err(format!("parameter 'key_file' must be an absolute path (the server makes '{path}' one)"))
            }
            Some(_) => return Err("parameter 'key_file' must be the path of the key file".into()),
            None => return Err("parameter 'key_file' is required: the file holding the key".into()),
        };
        Ok(BasicSecrets { key: SecretBox::load_or_create(Path::new(key_file))? })
    }

    fn recognizes(&self, stored: &str) -> bool {
        stored.starts_with(V1)
    }

    fn cloak(&self, plain: &str) -> PluginResult<String> {
        self.key.encrypt(plain)
    }

    fn decloak(&self, stored: &str) -> PluginResult<String> {
        self.key.decrypt(stored)
    }
}

export_plugin! {
    name: "basic",
    description: "Secrets plugin that encrypts stored secrets with XChaCha20-Poly1305 and a key file",
    secrets: BasicSecrets,
}

#[cfg(test)]
mod tests {
    use vespene_plugin_api::serde_json::json;
    use vespene_plugin_api::testkit;

    use super::*;

    #[test]
    fn round_trip_tamper_and_other_keys() {
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
        assert_eq!(SecretBox::load_or_create(&path).unwrap().decrypt(&enc).unwrap(), "hunter2");
        // Two encryptions differ (random nonce).
        assert_ne!(enc, sb.encrypt("hunter2").unwrap());
        // Tampering is detected.
        let mut blob = B64.decode(enc.strip_prefix(V1).unwrap()).unwrap();
        *blob.last_mut().unwrap() ^= 1;
        let bad = format!("{V1}{}", B64.encode(blob));
        assert!(sb.decrypt(&bad).unwrap_err().contains("cannot be decrypted"));
        assert!(sb.decrypt("plain").unwrap_err().contains("no $VESPENE$v1$ header"));
        // Another key cannot read it.
        let other = SecretBox::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(other.decrypt(&enc).is_err());
    }

    #[test]
    fn through_the_plugin_interface() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let plugin = testkit::secrets::<BasicSecrets>(json!({"key_file": path})).unwrap();
        let stored = plugin.cloak("s3cret-value").unwrap();
        assert!(plugin.recognizes(&stored));
        assert!(!plugin.recognizes("$VESPENE$cmd1$x"));
        assert_eq!(plugin.decloak(&stored).unwrap(), "s3cret-value");
    }

    #[test]
    fn bad_configuration_and_readable_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        for (config, expected) in [
            (json!({}), "parameter 'key_file' is required: the file holding the key"),
            (json!({"key_file": 3}), "parameter 'key_file' must be the path of the key file"),
            (json!({"key_file": "secret.key"}), "parameter 'key_file' must be an absolute path"),
            (json!({"key": "x"}), "unknown parameter 'key' for secrets plugin basic"),
        ] {
            let err = testkit::secrets::<BasicSecrets>(config.clone()).err().unwrap();
            assert!(err.starts_with(expected), "{config}: {err}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join("open.key");
            SecretBox::load_or_create(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = SecretBox::load_or_create(&path).unwrap_err();
            assert!(err.ends_with("group or others may read it (mode 644); chmod 600 it"), "{err}");
        }
    }
}
