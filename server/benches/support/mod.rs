//! Shared by the benchmarks and the store tests, which open a store without
//! loading plugin libraries.

use std::path::Path;
use std::sync::Arc;

use vespene::plugins::SecretsChain;
use vespene::store::SecretCipher;

/// The `basic` secrets plugin (built in-process through its ABI constructor)
/// with a key file in `dir`: what the server loads as `libvespene_basic.so`.
pub fn basic_secrets(dir: &Path) -> Arc<dyn SecretCipher> {
    let config = serde_json::json!({"key_file": dir.join("secret.key")}).to_string();
    let plugin = vespene_plugin_api::testkit::secrets_from::<vespene_basic::BasicSecrets>(&config).unwrap();
    Arc::new(SecretsChain::single("basic", plugin))
}
