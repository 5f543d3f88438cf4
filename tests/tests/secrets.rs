//! Rotating the key that encrypts stored secrets: `vespene secrets rotate-key`
//! re-encrypts every SSH key, unlock password and service-login password with
//! a new key, swaps the key files, and keeps the old key beside the new one.

use vespene::store::{Secret, SecretBox, ServiceLogin, SshKey, Store};
use vespene_e2e::*;

/// The stored (encrypted) form of every secret column, in a fixed order.
async fn stored(store: &Store) -> Vec<String> {
    use sqlx::Row;
    let mut values = Vec::new();
    for sql in [
        "SELECT private_key FROM ssh_keys",
        "SELECT unlock_password FROM ssh_keys",
        "SELECT password FROM service_logins",
    ] {
        values.extend(sqlx::query(sql).fetch_all(store.pool()).await.unwrap().iter().map(|r| r.get::<String, _>(0)));
    }
    values
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_key_keeps_every_secret_readable_with_the_new_key_only() {
    let sandbox = Sandbox::new();
    let store = sandbox.store().await;
    let key = store
        .create_ssh_key(&SshKey {
            name: "deploy".into(),
            private_key: Secret::Set(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0IGtleSBib2R5\n-----END OPENSSH PRIVATE KEY-----".into(),
            ),
            unlock_password: Secret::Set("unlock-me".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let login = store
        .create_service_login(&ServiceLogin {
            name: "github".into(),
            username: "bot".into(),
            password: Secret::Set("gh-token".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = stored(&store).await;
    let old_key = std::fs::read_to_string(sandbox.path("data/secret.key")).unwrap();
    drop(store);

    let out = sandbox.run(&["secrets", "rotate-key"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("re-encrypted 3 secret(s)"), "{}", stdout(&out));

    let new_key = std::fs::read_to_string(sandbox.path("data/secret.key")).unwrap();
    assert_ne!(new_key, old_key, "the key file holds a new key");
    let kept: Vec<_> = std::fs::read_dir(sandbox.path("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("secret.key.previous-"))
        .collect();
    assert_eq!(kept.len(), 1, "the old key is kept beside it");
    assert_eq!(std::fs::read_to_string(kept[0].path()).unwrap(), old_key);
    assert!(!sandbox.path("data/secret.key.next").exists());

    // A store opened now (new key) reads every secret as it was.
    let store = sandbox.store().await;
    let revealed = store.reveal_ssh_key(key).await.unwrap();
    assert_eq!(
        revealed.private_key.as_deref(),
        Some("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0IGtleSBib2R5\n-----END OPENSSH PRIVATE KEY-----")
    );
    assert_eq!(revealed.unlock_password.as_deref(), Some("unlock-me"));
    assert_eq!(store.reveal_service_login_password(login).await.unwrap().as_deref(), Some("gh-token"));
    // And the old key no longer opens anything.
    let after = stored(&store).await;
    let old = SecretBox::load_or_create(&kept[0].path()).unwrap();
    assert_eq!(after.len(), 3);
    for (was, now) in before.iter().zip(&after) {
        assert_ne!(was, now, "every value was re-encrypted");
        assert!(old.decrypt(now).is_err(), "the old key cannot read {now}");
    }

    // A rotation with a leftover half-done one is refused, naming the file.
    std::fs::write(sandbox.path("data/secret.key.next"), "x").unwrap();
    let out = sandbox.run(&["secrets", "rotate-key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("secret.key.next exists"), "{}", stderr(&out));
}
