//! A store on a fresh SQLite file, for the store's own unit tests.

use super::*;

/// Seals nothing: these tests write no secret.
pub(crate) struct Clear;
impl SecretCipher for Clear {
    fn encrypt(&self, plain: &str) -> Result<String, SecretError> {
        Ok(plain.to_string())
    }
    fn decrypt(&self, stored: &str) -> Result<String, SecretError> {
        Ok(stored.to_string())
    }
}

/// A migrated store on `vespene.db` in `dir`.
pub(crate) async fn sqlite(dir: &Path) -> Store {
    let opts = StoreOptions {
        url: format!("sqlite://{}", dir.join("vespene.db").display()),
        secrets: Arc::new(Clear),
        max_connections: 1,
        migrate: true,
        compress_logs: false,
    };
    Store::open(&opts).await.unwrap()
}
