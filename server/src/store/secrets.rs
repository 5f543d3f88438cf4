//! Secrets at rest: SSH private keys, their unlock passwords, service-login
//! passwords, webhook tokens and secret variables reach the database only in
//! the form a [`SecretCipher`] gives them.
//!
//! The store does not encrypt anything itself: the server hands it the
//! secrets plugin chain (`crate::plugins::SecretsChain`), whose first plugin
//! encrypts and whose first plugin that recognizes a value decrypts it. Every
//! stored value starts with [`HEADER_PREFIX`], so a value no configured plugin
//! recognizes is still known to be sealed, never taken for clear text.

/// The prefix of every sealed value, whichever plugin sealed it.
pub const HEADER_PREFIX: &str = "$VESPENE$";

/// A secret failed to encrypt or decrypt.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No secrets plugin is configured, so nothing can be sealed or read.
    #[error("no secrets plugin is configured ([plugins.secrets]), so secret values cannot be stored or read")]
    NoPlugin,
    /// No configured plugin recognizes the stored value.
    #[error("no configured secrets plugin recognizes the stored value ({0}); configure the plugin that stored it")]
    NotRecognized(String),
    /// The plugin refused or failed.
    #[error("secrets plugin '{plugin}': {message}")]
    Plugin {
        /// The plugin's entry name.
        plugin: String,
        /// What it said.
        message: String,
    },
}

/// Seals values for storage and reads them back.
pub trait SecretCipher: Send + Sync {
    /// The stored form of `plain`; it starts with [`HEADER_PREFIX`].
    fn encrypt(&self, plain: &str) -> Result<String, SecretError>;
    /// The clear value of a stored one.
    fn decrypt(&self, stored: &str) -> Result<String, SecretError>;
    /// Whether `stored` is a sealed value (recognized by a plugin or not).
    fn is_sealed(&self, stored: &str) -> bool {
        stored.starts_with(HEADER_PREFIX)
    }
}

/// The header of a stored value (`$VESPENE$v1$`), for messages: never the value.
pub fn header_of(stored: &str) -> String {
    match stored.strip_prefix(HEADER_PREFIX).and_then(|rest| rest.find('$')) {
        Some(end) => stored[..HEADER_PREFIX.len() + end + 1].to_string(),
        None => "no $VESPENE$ header".to_string(),
    }
}
