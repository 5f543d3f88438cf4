//! Shared by the benchmarks and the store tests, which open a store without
//! loading plugin libraries. Each target uses part of it.
#![allow(dead_code)]

pub mod procs;

use std::path::Path;
use std::sync::Arc;

use vespene::plugins::SecretsChain;
use vespene::store::{NewUser, SecretCipher, Store, StoreOptions, WorkerPool};

/// The `basic` secrets plugin (built in-process through its ABI constructor)
/// with a key file in `dir`: what the server loads as `libvespene_basic.so`.
pub fn basic_secrets(dir: &Path) -> Arc<dyn SecretCipher> {
    let config = serde_json::json!({"key_file": dir.join("secret.key")}).to_string();
    let plugin = vespene_plugin_api::testkit::secrets_from::<vespene_basic::BasicSecrets>(&config).unwrap();
    Arc::new(SecretsChain::single("basic", plugin))
}

/// A store on a fresh SQLite file in `dir`, sealing with [`basic_secrets`].
pub async fn sqlite_store(dir: &Path) -> Store {
    Store::open(&StoreOptions {
        url: format!("sqlite://{}", dir.join("vespene.db").display()),
        secrets: basic_secrets(dir),
        max_connections: 2,
        migrate: true,
        compress_logs: true,
    })
    .await
    .unwrap()
}

/// The superuser `bench` (password `bench-password`), and an API token of theirs.
pub async fn bench_superuser(store: &Store) -> String {
    let user = store
        .create_user(&NewUser {
            username: "bench".into(),
            password: "bench-password".into(),
            is_superuser: true,
            ..Default::default()
        })
        .await
        .unwrap();
    store.create_api_token(user, "bench", None).await.unwrap().1
}

/// A worker pool `bench` with shell isolation.
pub async fn shell_pool(store: &Store) -> i64 {
    let pool = WorkerPool { name: "bench".into(), isolation_method: "shell".into(), ..Default::default() };
    store.create_worker_pool(&pool).await.unwrap()
}
