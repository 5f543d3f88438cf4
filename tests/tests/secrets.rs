//! Rotating the key that encrypts stored secrets: `vespene secrets rotate-key`
//! re-encrypts every SSH key, unlock password and service-login password with
//! a new key, swaps the key files, and keeps the old key beside the new one.

use vespene::store::{Secret, ServiceLogin, SshKey, Store};
use vespene_basic::SecretBox;
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

/// A script secret store for the `command` secrets plugin: one file per id.
fn script_store(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("store.sh");
    let body = format!(
        "#!/bin/sh\nset -e\ncase \"$1\" in\n  put) cat > \"{0}/$2\" ;;\n  get) cat \"{0}/$2\" ;;\nesac\n",
        dir.display()
    );
    std::fs::write(&script, body).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = script.display();
    format!(
        "[plugins.secrets.vault]\nlibrary = \"command\"\nseal = true\n\
         store = [\"{script}\", \"put\", \"{{id}}\"]\nfetch = [\"{script}\", \"get\", \"{{id}}\"]\n"
    )
}

/// Issue 14 (secrets through the plugin chain) and issue 17 (secrets plugins
/// in use): with the `command` plugin sealing, a login password and a secret
/// variable saved through the API live in the admin's script store and the
/// database holds only ids; a build gets the variable (masked in its output);
/// values the `basic` plugin sealed before still read; and `rotate-key` moves
/// every one of them into the script store.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_sealed_by_the_sealing_plugin_and_read_by_the_chain() {
    use sqlx::Row;
    use vespene_e2e::api_client::{token_for, user};
    let vault = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new();
    let base = format!("plugin_path = [\"{}\"]\n[workers]\nembedded = true\nper_pool = 1\n", bin_dir().display());
    sandbox.settings(&base);

    // Before the admin adds the vault: `basic` seals.
    let store = sandbox.store().await;
    let old_login = store
        .create_service_login(&ServiceLogin {
            name: "before".into(),
            username: "bot".into(),
            password: Secret::Set("sealed-by-basic-7e1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(store);

    sandbox.settings(&format!("{base}{}", script_store(vault.path())));
    let server = sandbox.serve();
    let store = sandbox.store().await;
    user(&store, "root", true, &[]).await;
    user(&store, "alice", false, &[]).await;
    let alice = token_for(&server.addr, "alice");
    let pool = token_for(&server.addr, "root").ok(
        "POST",
        "/api/v1/worker_pools",
        Some(&serde_json::json!({"name": "vault-pool", "isolation_method": "shell", "build_latest": false,
                                 "shared": true})),
    );
    let login = alice.ok(
        "POST",
        "/api/v1/service_logins",
        Some(&serde_json::json!({"name": "deploy", "username": "ci", "password": "login-pass-4c2a9"})),
    );
    let project = alice.ok(
        "POST",
        "/api/v1/projects",
        Some(&serde_json::json!({
            "name": "vaulted", "worker_pool_id": pool["id"], "repo_url": "", "scm_type": "none",
            "variables": "{\"API_KEY\": {\"secret\": \"api-key-value-5d8f3\"}}",
            "script": "#!/bin/sh\necho \"key=$(cat vespene.json | grep -o 'api-key[^\\\"]*')\"\n"
        })),
    );
    let stored_password: String = sqlx::query("SELECT password FROM service_logins WHERE id = $1")
        .bind(login["id"].as_i64().unwrap())
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert!(stored_password.starts_with("$VESPENE$cmd1$"), "{stored_password}");
    let stored_vars: String = sqlx::query("SELECT variables FROM projects WHERE id = $1")
        .bind(project["id"].as_i64().unwrap())
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert!(stored_vars.contains("$VESPENE$cmd1$") && !stored_vars.contains("api-key-value"), "{stored_vars}");
    let in_vault: Vec<String> = std::fs::read_dir(vault.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != "store.sh")
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(in_vault.contains(&"login-pass-4c2a9\n".to_string()), "{in_vault:?}");
    assert!(in_vault.contains(&"api-key-value-5d8f3\n".to_string()), "{in_vault:?}");
    // The server reads both kinds: the vault's and basic's older value.
    assert_eq!(store.reveal_service_login_password(old_login).await.unwrap().as_deref(), Some("sealed-by-basic-7e1"));

    let build = alice.ok("POST", &format!("/api/v1/projects/{}/start", project["id"]), None)["id"].as_i64().unwrap();
    let done = vespene_e2e::builds::finished(&store, build, std::time::Duration::from_secs(60)).await;
    let log = vespene_e2e::builds::log_of(&store, build).await;
    assert_eq!(done.status, vespene::store::BuildStatus::Success, "{log}");
    assert!(
        log.contains("key=") && !log.contains("api-key-value-5d8f3"),
        "the secret reached the build, masked: {log}"
    );
    drop(server);

    // rotate-key moves basic's value into the vault too.
    let out = sandbox.run(&["secrets", "rotate-key"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("secret(s) with secrets plugin 'vault'"), "{}", stdout(&out));
    let passwords: Vec<String> = sqlx::query("SELECT password FROM service_logins ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(passwords.iter().all(|p| p.starts_with("$VESPENE$cmd1$")), "{passwords:?}");
    let store = sandbox.store().await;
    assert_eq!(store.reveal_service_login_password(old_login).await.unwrap().as_deref(), Some("sealed-by-basic-7e1"));
}

/// Issue 15, finding 14: `rotate-key` while a server runs on the database
/// would leave the server with a key that reads nothing; it is refused,
/// naming why, and nothing changes. Once the server stops it runs.
#[tokio::test(flavor = "multi_thread")]
async fn finding_14_rotate_key_is_refused_while_a_server_runs() {
    for db in [Db::Sqlite, Db::Postgres] {
        let mut sandbox = Sandbox::new();
        if sandbox.use_database(db, "finding_14_rotate_key").await.is_none() {
            continue;
        }
        let store = sandbox.store().await;
        let login = store
            .create_service_login(&ServiceLogin {
                name: "github".into(),
                username: "bot".into(),
                password: Secret::Set("gh-token-in-use".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let key = std::fs::read_to_string(sandbox.path("data/secret.key")).unwrap();
        let server = sandbox.serve();

        let out = sandbox.run(&["secrets", "rotate-key"]);
        assert_eq!(out.status.code(), Some(1), "{db:?}: {}", stdout(&out));
        assert!(stderr(&out).contains("a vespene server or worker is running on this database"), "{}", stderr(&out));
        assert_eq!(std::fs::read_to_string(sandbox.path("data/secret.key")).unwrap(), key, "the key is kept");
        assert_eq!(store.reveal_service_login_password(login).await.unwrap().as_deref(), Some("gh-token-in-use"));

        drop(server);
        let out = sandbox.run(&["secrets", "rotate-key"]);
        assert!(out.status.success(), "{db:?}: {}{}", stdout(&out), stderr(&out));
        let store = sandbox.store().await;
        assert_eq!(store.reveal_service_login_password(login).await.unwrap().as_deref(), Some("gh-token-in-use"));
    }
}
