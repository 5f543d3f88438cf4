//! The secrets plugin chain as the store sees it: the first configured secrets
//! plugin seals every new value, and the first that recognizes a stored value
//! reads it back. Values move between plugins only by `vespene secrets
//! rotate-key`, which reads each with the chain and seals it with the first.

use std::sync::Arc;

use abi_stable::std_types::RStr;
use vespene_plugin_api::abi::SecretsBox;

use crate::store::secrets::{header_of, HEADER_PREFIX};
use crate::store::{SecretCipher, SecretError};

/// The configured secrets plugins, in settings order.
#[derive(Clone, Default)]
pub struct SecretsChain {
    plugins: Vec<(String, Arc<SecretsBox>)>,
}

impl std::fmt::Debug for SecretsChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.plugins.iter().map(|(name, _)| name)).finish()
    }
}

impl SecretsChain {
    /// A chain of `(entry name, plugin)` pairs; the first seals.
    pub fn new(plugins: Vec<(String, Arc<SecretsBox>)>) -> Self {
        Self { plugins }
    }

    /// A chain of one plugin.
    pub fn single(name: &str, plugin: SecretsBox) -> Self {
        Self::new(vec![(name.to_string(), Arc::new(plugin))])
    }

    /// The entry names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.plugins.iter().map(|(name, _)| name.as_str()).collect()
    }
}

impl SecretCipher for SecretsChain {
    fn encrypt(&self, plain: &str) -> Result<String, SecretError> {
        let (name, plugin) = self.plugins.first().ok_or(SecretError::NoPlugin)?;
        let failed = |message: String| {
            crate::metrics::plugin_error(name, "secrets");
            SecretError::Plugin { plugin: name.clone(), message }
        };
        let stored: String = plugin.cloak(RStr::from(plain)).into_result().map_err(|e| failed(e.into()))?.into();
        // A value without the header would later be taken for clear text.
        if !stored.starts_with(HEADER_PREFIX) || !plugin.recognizes(RStr::from(stored.as_str())) {
            return Err(failed(format!(
                "its sealed value must start with {HEADER_PREFIX} and be one it recognizes ({})",
                header_of(&stored)
            )));
        }
        Ok(stored)
    }

    fn decrypt(&self, stored: &str) -> Result<String, SecretError> {
        if self.plugins.is_empty() {
            return Err(SecretError::NoPlugin);
        }
        let (name, plugin) = self
            .plugins
            .iter()
            .find(|(_, p)| p.recognizes(RStr::from(stored)))
            .ok_or_else(|| SecretError::NotRecognized(header_of(stored)))?;
        let plain = plugin.decloak(RStr::from(stored)).into_result();
        plain.map(Into::into).map_err(|e| {
            crate::metrics::plugin_error(name, "secrets");
            SecretError::Plugin { plugin: name.clone(), message: e.into() }
        })
    }
}
