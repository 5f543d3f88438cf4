//! The store test suite, run twice: once on a fresh SQLite file and once on a
//! fresh PostgreSQL database (when `VESPENE_TEST_POSTGRES_URL` points at a
//! server that lets the role create databases; `scripts/start-postgres` starts
//! one). Every test gets its own database, so they run in parallel.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};

#[path = "../benches/support/mod.rs"]
mod support;

use sqlx::{Connection, Executor, Row};
use support::basic_secrets;
use vespene::store::{
    self, AuditActor, AuditEntry, AuditFilter, Backend, BuildFilter, BuildStartAudit, BuildStatus, Group, NewBuild,
    NewUser, OutputStream, Pipeline, Project, Secret, ServiceLogin, SshKey, Stage, Store, StoreError, StoreOptions,
    VariableSet, Worker, WorkerPool,
};

struct TestDb {
    store: Store,
    /// How the store was opened (to open it again).
    opts: StoreOptions,
    _dir: tempfile::TempDir,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            url: format!("sqlite://{}", dir.path().join("vespene.db").display()),
            secrets: basic_secrets(dir.path()),
            max_connections: 8,
            migrate: true,
            compress_logs: true,
        };
        TestDb { store: Store::open(&opts).await.unwrap(), opts, _dir: dir }
    }

    async fn postgres(test: &str) -> Option<TestDb> {
        let Ok(url) = std::env::var("VESPENE_TEST_POSTGRES_URL") else {
            let why = "VESPENE_TEST_POSTGRES_URL is not set (run scripts/start-postgres)";
            // In CI (as the e2e tests read it) a missing service fails the run;
            // elsewhere it says so and passes.
            let in_ci =
                std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
            assert!(!in_ci, "postgres::{test}: {why}; CI is set, so a missing service fails the test");
            println!("SKIP postgres::{test}: {why}");
            return None;
        };
        sqlx::any::install_default_drivers();
        let name = format!(
            "vt_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            test.chars().take(30).collect::<String>()
        );
        let mut admin = sqlx::AnyConnection::connect(&url).await.expect("connect to VESPENE_TEST_POSTGRES_URL");
        admin.execute(format!("CREATE DATABASE {name}").as_str()).await.unwrap();
        admin.close().await.unwrap();
        let base = url.rsplit_once('/').map(|(b, _)| b).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            url: format!("{base}/{name}"),
            secrets: basic_secrets(dir.path()),
            max_connections: 8,
            migrate: true,
            compress_logs: true,
        };
        Some(TestDb { store: Store::open(&opts).await.unwrap(), opts, _dir: dir })
    }
}

macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    assert_eq!(db.store.backend(), super::Backend::Sqlite);
                    super::$name(&db.store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres(stringify!($name)).await else { return };
                    assert_eq!(db.store.backend(), super::Backend::Postgres);
                    super::$name(&db.store).await;
                    db.store.close().await;
                }
            )*
        }
    };
}

store_tests!(
    migrations_are_idempotent,
    project_round_trips_every_field,
    validation_names_the_field_and_saves_nothing,
    duplicate_names_conflict,
    pipeline_has_ordered_stages_without_limit,
    worker_pool_in_use_cannot_be_deleted,
    secrets_are_encrypted_at_rest_and_masked,
    users_groups_and_passwords,
    ensure_admin_creates_once,
    api_tokens_are_stored_hashed,
    a_build_start_and_its_audit_record_are_kept_together,
    a_change_and_its_audit_record_are_written_together,
    sessions_expire,
    build_status_machine,
    concurrent_claims_never_share_a_build,
    claim_respects_pools,
    output_appends_in_order,
    concurrent_output_appends_keep_sequence,
    cleanup_deletes_only_older_builds,
    tutorial_is_idempotent,
    workers_upsert,
    snippet_names_that_become_one_variable_are_refused,
    secret_variables_are_sealed_kept_and_rotated,
    retention_removes_each_log_once_and_never_a_pinned_or_active_one,
    retention_finds_the_builds_past_a_keep_rule,
    keep_rules_are_checked_against_the_admin_maximum,
);

async fn pool(s: &Store, name: &str) -> i64 {
    s.create_worker_pool(&WorkerPool { name: name.into(), isolation_method: "sudo".into(), ..Default::default() })
        .await
        .unwrap()
}

async fn project(s: &Store, name: &str, pool_id: i64) -> i64 {
    s.create_project(&Project { name: name.into(), worker_pool_id: pool_id, ..Default::default() }).await.unwrap()
}

async fn raw_text(s: &Store, sql: &str, id: i64) -> Option<String> {
    sqlx::query(sql).bind(id).fetch_one(s.pool()).await.unwrap().try_get::<Option<String>, _>(0).unwrap()
}

async fn migrations_are_idempotent(s: &Store) {
    assert_eq!(s.migrate().await.unwrap(), 0, "already migrated on open");
    let latest = store::migrate::MIGRATIONS.last().unwrap().version;
    assert_eq!(store::migrate::current_version(s.pool()).await.unwrap(), latest);
}

async fn project_round_trips_every_field(s: &Store) {
    let pool_id = pool(s, "p").await;
    let vs1 = s
        .create_variable_set(&VariableSet { name: "vs1".into(), variables: r#"{"a":1}"#.into(), ..Default::default() })
        .await
        .unwrap();
    let vs2 = s.create_variable_set(&VariableSet { name: "vs2".into(), ..Default::default() }).await.unwrap();
    let g1 = s.create_group("devs").await.unwrap();
    let g2 = s.create_group("ops").await.unwrap();
    let key = s
        .create_ssh_key(&SshKey {
            name: "deploy".into(),
            private_key: Secret::Set("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let login = s
        .create_service_login(&ServiceLogin {
            name: "gh".into(),
            username: "bot".into(),
            password: Secret::Set("pw".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let stage = s.create_stage(&Stage { name: "build".into(), ..Default::default() }).await.unwrap();
    let pipe = s
        .create_pipeline(&Pipeline { name: "pipe".into(), stage_ids: vec![stage], ..Default::default() })
        .await
        .unwrap();
    let user = s
        .create_user(&NewUser { username: "alice".into(), password: "password1".into(), ..Default::default() })
        .await
        .unwrap();
    let p = Project {
        id: 0,
        name: "full".into(),
        description: "every field".into(),
        pipeline_id: Some(pipe),
        pipeline_enabled: false,
        stage_id: Some(stage),
        last_build_id: None,
        active_build_id: None,
        last_successful_build_id: None,
        repo_url: "git@github.com:acme/app.git".into(),
        repo_branch: "main".into(),
        recursive: false,
        scm_type: "git".into(),
        webhook_enabled: true,
        webhook_token: Secret::Set("tok".into()),
        script: "#!/bin/bash\necho {{ a }}".into(),
        timeout: 5,
        container_base_image: Some("debian:12".into()),
        variables: r#"{"x": "y"}"#.into(),
        variable_set_ids: vec![vs2, vs1],
        launch_questions: r#"[{"variable":"foo","type":"multi","choices":["a","b"]}]"#.into(),
        scm_login_id: Some(login),
        ssh_key_ids: vec![key],
        worker_pool_id: pool_id,
        created_by: Some(user),
        owner_group_ids: vec![g1],
        launch_group_ids: vec![g1, g2],
        schedule_enabled: true,
        monday: true,
        tuesday: false,
        wednesday: true,
        thursday: false,
        friday: true,
        saturday: false,
        sunday: true,
        weekday_start_hours: "0,8,16".into(),
        weekday_start_minutes: "0,30".into(),
        weekend_start_hours: "9-17".into(),
        weekend_start_minutes: "15".into(),
        schedule_threshold: 20,
        schedule_cron: "0 3 * * *".into(),
        schedule_timezone: "Europe/Paris".into(),
        triggers: r#"["publish"]"#.into(),
        log_keep_builds: Some(30),
        log_keep_days: None,
        root_keep_builds: None,
        root_keep_days: Some(2),
        public_badge: true,
    };
    let id = s.create_project(&p).await.unwrap();
    let got = s.get_project(id).await.unwrap().unwrap();
    // The webhook token is write-only: read back as stored, revealed only on purpose.
    assert_eq!(got, Project { id, webhook_token: Secret::Stored, ..p.clone() });
    assert_eq!(s.reveal_webhook_token(id).await.unwrap().as_deref(), Some("tok"));
    assert_eq!(got.variable_set_ids, vec![vs2, vs1], "variable set order is kept");
    assert_eq!(s.find_project("full").await.unwrap().unwrap().id, id);
    assert_eq!(s.list_projects().await.unwrap(), vec![got.clone()]);
    let owners = |p: &Project| vespene::store::ProjectOwners {
        id: p.id,
        created_by: p.created_by,
        owner_group_ids: p.owner_group_ids.clone(),
        launch_group_ids: p.launch_group_ids.clone(),
    };
    let sorted = |mut o: vespene::store::ProjectOwners| {
        o.owner_group_ids.sort_unstable();
        o.launch_group_ids.sort_unstable();
        o
    };
    assert_eq!(s.project_owners(id).await.unwrap().map(sorted), Some(sorted(owners(&got))));

    let mut changed = got.clone();
    changed.variable_set_ids = vec![vs1];
    changed.launch_group_ids = vec![];
    changed.timeout = 90;
    changed.webhook_token = Secret::Empty;
    changed.log_keep_builds = None;
    changed.root_keep_builds = Some(4);
    s.update_project(&changed).await.unwrap();
    assert_eq!(s.get_project(id).await.unwrap().unwrap(), changed);
    assert_eq!(s.project_owners(id).await.unwrap(), Some(owners(&changed)), "no launch groups left");
    // 0 means the administrator's default, as null does: stored as null.
    s.update_project(&Project { log_keep_days: Some(0), ..changed.clone() }).await.unwrap();
    assert_eq!(s.get_project(id).await.unwrap().unwrap().log_keep_days, None);

    // What each check on a build reads: the build and its project's owners, in one query.
    let launchers = Project { launch_group_ids: vec![g2, g1], ..changed.clone() };
    s.update_project(&launchers).await.unwrap();
    let build = s
        .create_build(&NewBuild { project_id: Some(id), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();
    let (read, build_owners) = s.build_with_owners(build.id).await.unwrap().unwrap();
    assert_eq!(read, s.get_build(build.id).await.unwrap().unwrap());
    assert_eq!(build_owners, Some(owners(&launchers)), "the groups in their stored order");
    let loose = s.create_build(&NewBuild { worker_pool_id: pool_id, ..Default::default() }).await.unwrap();
    assert_eq!(s.build_with_owners(loose.id).await.unwrap().map(|(_, o)| o), Some(None), "no project, no owners");
    assert!(s.build_with_owners(loose.id + 1000).await.unwrap().is_none());
    assert!(s.delete_project(id).await.unwrap());
    assert!(s.get_project(id).await.unwrap().is_none());
    assert_eq!(s.project_owners(id).await.unwrap(), None);
    assert!(!s.delete_project(id).await.unwrap());
    let mut gone = changed.clone();
    gone.id = 9999;
    assert!(matches!(s.update_project(&gone).await, Err(StoreError::NotFound { .. })));
    let groups: Vec<Group> = s.list_groups().await.unwrap();
    assert_eq!(groups.len(), 2);
}

async fn validation_names_the_field_and_saves_nothing(s: &Store) {
    let pool_id = pool(s, "p").await;
    let base = Project { name: "v".into(), worker_pool_id: pool_id, ..Default::default() };
    let cases: Vec<(&str, Project)> = vec![
        ("variables", Project { variables: "{nope".into(), ..base.clone() }),
        ("variables", Project { variables: "[1,2]".into(), ..base.clone() }),
        (
            "launch_questions",
            Project { launch_questions: r#"[{"variable":"x","type":"radio"}]"#.into(), ..base.clone() },
        ),
        ("launch_questions", Project { launch_questions: "{".into(), ..base.clone() }),
        ("name", Project { name: "  ".into(), ..base.clone() }),
        ("repo_url", Project { repo_url: "not a url".into(), ..base.clone() }),
        ("script", Project { script: "echo no shebang".into(), ..base.clone() }),
        ("weekday_start_hours", Project { weekday_start_hours: "25".into(), ..base.clone() }),
        ("timeout", Project { timeout: 0, ..base.clone() }),
        ("worker_pool_id", Project { worker_pool_id: 4242, ..base.clone() }),
        ("variable_set_ids", Project { variable_set_ids: vec![4242], ..base.clone() }),
        ("launch_group_ids", Project { launch_group_ids: vec![4242], ..base.clone() }),
    ];
    for (field, p) in cases {
        match s.create_project(&p).await {
            Err(StoreError::Validation(e)) => {
                assert_eq!(e.field, field, "{e}");
                assert!(e.to_string().starts_with(&format!("field '{field}': ")), "{e}");
            }
            other => panic!("{field}: expected a validation error, got {other:?}"),
        }
    }
    let e = s.create_project(&Project { variables: "{nope".into(), ..base.clone() }).await.unwrap_err();
    assert!(e.to_string().starts_with("field 'variables': invalid JSON: "), "{e}");
    assert!(s.list_projects().await.unwrap().is_empty(), "nothing half-saved");

    // An update that fails leaves the old row and links as they were.
    let g = s.create_group("g").await.unwrap();
    let id = s.create_project(&Project { owner_group_ids: vec![g], ..base.clone() }).await.unwrap();
    let before = s.get_project(id).await.unwrap().unwrap();
    let bad =
        Project { owner_group_ids: vec![], ssh_key_ids: vec![777], description: "changed".into(), ..before.clone() };
    assert!(s.update_project(&bad).await.is_err());
    assert_eq!(s.get_project(id).await.unwrap().unwrap(), before);

    let e = s.create_variable_set(&VariableSet { name: "x".into(), variables: "1".into(), ..Default::default() }).await;
    assert!(matches!(e, Err(StoreError::Validation(v)) if v.field == "variables"));
    let e = s
        .create_worker_pool(&WorkerPool { name: "y".into(), permissions_hex: "777".into(), ..Default::default() })
        .await;
    assert!(matches!(e, Err(StoreError::Validation(v)) if v.field == "permissions_hex"));
}

async fn duplicate_names_conflict(s: &Store) {
    let pool_id = pool(s, "p").await;
    project(s, "dup", pool_id).await;
    let e = s.create_project(&Project { name: "dup".into(), worker_pool_id: pool_id, ..Default::default() }).await;
    match e {
        Err(StoreError::Conflict(m)) => assert!(m.contains("'dup' already exists"), "{m}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(s.create_group("g").await.is_ok());
    assert!(matches!(s.create_group("g").await, Err(StoreError::Conflict(_))));
}

async fn pipeline_has_ordered_stages_without_limit(s: &Store) {
    let mut stages = vec![];
    for i in 0..10 {
        stages.push(s.create_stage(&Stage { name: format!("s{i}"), ..Default::default() }).await.unwrap());
    }
    let mut order = stages.clone();
    order.reverse();
    let id = s
        .create_pipeline(&Pipeline { name: "long".into(), stage_ids: order.clone(), ..Default::default() })
        .await
        .unwrap();
    let p = s.get_pipeline(id).await.unwrap().unwrap();
    assert_eq!(p.stage_ids, order, "10 stages, in the given order");
    assert!(p.enabled);
    // Deleting a stage removes it from the pipeline, not the pipeline.
    assert!(s.delete_stage(order[3]).await.unwrap());
    let p = s.get_pipeline(id).await.unwrap().unwrap();
    assert_eq!(p.stage_ids.len(), 9);
    assert!(!p.stage_ids.contains(&order[3]));
    let dup = Pipeline { name: "dup".into(), stage_ids: vec![stages[0], stages[0]], ..Default::default() };
    assert!(matches!(s.create_pipeline(&dup).await, Err(StoreError::Validation(v)) if v.field == "stage_ids"));

    // A run's completion writes its two columns only: an edit made while
    // the run went on is kept.
    let pool_id = pool(s, "runs").await;
    let project_id = project(s, "runner", pool_id).await;
    let build = s
        .create_build(&NewBuild { project_id: Some(project_id), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();
    let edited = Pipeline { description: "edited during the run".into(), ..p.clone() };
    s.update_pipeline(&edited).await.unwrap();
    s.mark_pipeline_complete(id, build.id).await.unwrap();
    let after = s.get_pipeline(id).await.unwrap().unwrap();
    assert_eq!(after.description, "edited during the run");
    assert_eq!(after.last_completed_by, Some(build.id));
    assert!(after.last_completed_date.is_some());
}

async fn worker_pool_in_use_cannot_be_deleted(s: &Store) {
    let pool_id = pool(s, "busy").await;
    let pid = project(s, "p", pool_id).await;
    let e = s.delete_worker_pool(pool_id).await;
    assert!(matches!(e, Err(StoreError::Reference(_))), "{e:?}");
    s.delete_project(pid).await.unwrap();
    assert!(s.delete_worker_pool(pool_id).await.unwrap());
}

async fn secrets_are_encrypted_at_rest_and_masked(s: &Store) {
    const KEY: &str =
        "-----BEGIN OPENSSH PRIVATE KEY-----\nSUPERSECRETKEYMATERIAL\n-----END OPENSSH PRIVATE KEY-----\n";
    let id = s
        .create_ssh_key(&SshKey {
            name: "k".into(),
            private_key: Secret::Set(KEY.into()),
            unlock_password: Secret::Set("open-sesame".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let raw_key = raw_text(s, "SELECT private_key FROM ssh_keys WHERE id = $1", id).await.unwrap();
    let raw_pw = raw_text(s, "SELECT unlock_password FROM ssh_keys WHERE id = $1", id).await.unwrap();
    assert!(raw_key.starts_with("$VESPENE$v1$"), "{raw_key}");
    assert!(!raw_key.contains("SUPERSECRET") && !raw_pw.contains("open-sesame"));
    // Round trip through the explicit accessor only.
    let clear = s.reveal_ssh_key(id).await.unwrap();
    assert_eq!(clear.private_key.as_deref(), Some(KEY));
    assert_eq!(clear.unlock_password.as_deref(), Some("open-sesame"));
    assert_eq!(s.decrypt(&raw_pw).unwrap(), "open-sesame");
    // Listings and gets are masked, in Debug and in JSON too.
    let got = s.get_ssh_key(id).await.unwrap().unwrap();
    assert_eq!(got.private_key, Secret::Stored);
    let listed = s.list_ssh_keys().await.unwrap();
    let shown = format!("{listed:?} {}", serde_json::to_string(&listed).unwrap());
    assert!(!shown.contains("SUPERSECRET") && !shown.contains("open-sesame"), "{shown}");
    // Saving with Stored keeps the value; Empty clears; Set replaces.
    let mut edit = got.clone();
    edit.description = "edited".into();
    edit.unlock_password = Secret::Empty;
    s.update_ssh_key(&edit).await.unwrap();
    let clear = s.reveal_ssh_key(id).await.unwrap();
    assert_eq!(clear.private_key.as_deref(), Some(KEY));
    assert_eq!(clear.unlock_password, None);

    let lid = s
        .create_service_login(&ServiceLogin {
            name: "l".into(),
            username: "u".into(),
            password: Secret::Set("login-pass".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let raw = raw_text(s, "SELECT password FROM service_logins WHERE id = $1", lid).await.unwrap();
    assert!(raw.starts_with("$VESPENE$v1$") && !raw.contains("login-pass"));
    assert_eq!(s.reveal_service_login_password(lid).await.unwrap().as_deref(), Some("login-pass"));
    let login = s.get_service_login(lid).await.unwrap().unwrap();
    assert!(!format!("{login:?}").contains("login-pass"));
}

async fn users_groups_and_passwords(s: &Store) {
    let id = s
        .create_user(&NewUser {
            username: "bob".into(),
            password: "correct horse".into(),
            is_superuser: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let hash = raw_text(s, "SELECT password_hash FROM users WHERE id = $1", id).await.unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let u = s.verify_password("bob", "correct horse").await.unwrap().unwrap();
    assert!(u.is_superuser && u.last_login.is_some());
    assert!(s.verify_password("bob", "wrong").await.unwrap().is_none());
    assert!(s.verify_password("nobody", "x").await.unwrap().is_none());
    let short = s.create_user(&NewUser { username: "c".into(), password: "short".into(), ..Default::default() }).await;
    assert!(matches!(short, Err(StoreError::Validation(v)) if v.field == "password"));
    let bad =
        s.create_user(&NewUser { username: "a b".into(), password: "password1".into(), ..Default::default() }).await;
    assert!(matches!(bad, Err(StoreError::Validation(v)) if v.field == "username"));

    let g = s.create_group("team").await.unwrap();
    s.add_group_member(g, id).await.unwrap();
    s.add_group_member(g, id).await.unwrap();
    assert_eq!(s.group_member_ids(g).await.unwrap(), vec![id]);
    let mut u = s.get_user(id).await.unwrap().unwrap();
    assert_eq!(u.group_ids, vec![g]);
    u.is_active = false;
    u.group_ids = vec![];
    s.update_user(&u).await.unwrap();
    assert!(s.verify_password("bob", "correct horse").await.unwrap().is_none(), "inactive users cannot log in");
    s.set_password(id, "new password").await.unwrap();
    assert_eq!(s.list_users().await.unwrap()[0].group_ids, Vec::<i64>::new());

    // A user and their groups are saved together, or not at all.
    let carol = NewUser { username: "carol".into(), password: "password1".into(), ..Default::default() };
    let missing = s.create_user_in_groups(&carol, &[g, 9999]).await;
    assert!(matches!(missing, Err(StoreError::Validation(v)) if v.field == "group_ids" && v.message.contains("9999")));
    assert!(s.list_users().await.unwrap().iter().all(|u| u.username != "carol"), "nothing half-saved");
    let carol_id = s.create_user_in_groups(&carol, &[g]).await.unwrap();
    assert_eq!(s.get_user(carol_id).await.unwrap().unwrap().group_ids, vec![g]);
}

async fn ensure_admin_creates_once(s: &Store) {
    let pw = store::ensure_admin(s).await.unwrap().expect("created on first start");
    assert!(pw.len() >= 16);
    let admin = s.verify_password("admin", &pw).await.unwrap().unwrap();
    assert!(admin.is_superuser);
    assert_eq!(store::ensure_admin(s).await.unwrap(), None);
    assert_eq!(s.user_count().await.unwrap(), 1);
}

async fn api_tokens_are_stored_hashed(s: &Store) {
    let uid = s
        .create_user(&NewUser { username: "t".into(), password: "password1".into(), ..Default::default() })
        .await
        .unwrap();
    let (tok, secret) = s.create_api_token(uid, "ci", None).await.unwrap();
    let raw: Vec<String> = sqlx::query("SELECT token_hash FROM api_tokens")
        .fetch_all(s.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>(0).unwrap())
        .collect();
    assert_eq!(raw.len(), 1);
    assert!(!raw[0].contains(&secret) && raw[0].len() == 64);
    let (user, groups) = s.authenticate_token(&secret).await.unwrap().unwrap();
    assert_eq!((user.id, user.group_ids, groups), (uid, vec![], vec![]), "no groups yet");
    // The token's query also reads the user's groups and every group, in name order.
    let ops = s.create_group("ops, \"the\" night shift").await.unwrap();
    let dev = s.create_group("dev").await.unwrap();
    s.add_group_member(ops, uid).await.unwrap();
    s.add_group_member(dev, uid).await.unwrap();
    s.create_group("qa").await.unwrap();
    let (user, groups) = s.authenticate_token(&secret).await.unwrap().unwrap();
    assert_eq!(user.group_ids, vec![ops.min(dev), ops.max(dev)]);
    assert_eq!(groups, s.list_groups().await.unwrap(), "every group, as listed");
    assert_eq!(user, s.get_user(uid).await.unwrap().unwrap());
    assert!(s.authenticate_token("vsp_wrong").await.unwrap().is_none());
    let listed = s.list_api_tokens(uid).await.unwrap();
    assert_eq!(listed[0].id, tok.id);
    let first_use = listed[0].last_used_at;
    assert!(first_use.is_some());
    assert!(secret.starts_with(&listed[0].prefix));
    // A use within the minute writes nothing: reading the API is not a commit.
    std::thread::sleep(std::time::Duration::from_millis(5));
    s.authenticate_token(&secret).await.unwrap().unwrap();
    assert_eq!(s.list_api_tokens(uid).await.unwrap()[0].last_used_at, first_use);
    let (_, expired) = s.create_api_token(uid, "old", Some(chrono::Duration::milliseconds(-1))).await.unwrap();
    assert!(s.authenticate_token(&expired).await.unwrap().is_none());
    assert!(s.delete_api_token(tok.id).await.unwrap());
    assert!(s.authenticate_token(&secret).await.unwrap().is_none());
}

async fn a_change_and_its_audit_record_are_written_together(s: &Store) {
    let entry = |action: &str, id: Option<i64>| AuditEntry {
        actor: AuditActor::system(),
        action: action.into(),
        object: store::AuditObject::new("user", id, "someone"),
        details: serde_json::json!({}),
    };
    let new_user =
        |name: &str| NewUser { username: name.into(), password: "a long password 1".into(), ..Default::default() };
    let kept = s.create_user_audited(&new_user("kept"), &[], |u| entry("create", Some(u.id))).await.unwrap();
    let filter = AuditFilter { action: Some("create".into()), limit: 10, ..Default::default() };
    let events = s.list_audit(&filter).await.unwrap();
    assert_eq!(events.iter().map(|e| e.object_id).collect::<Vec<_>>(), [Some(kept.id)]);

    // With the audit log unwritable, no change is saved without its record.
    sqlx::query("ALTER TABLE audit_events RENAME TO audit_events_away").execute(s.pool()).await.unwrap();
    assert!(s.create_user_audited(&new_user("lost"), &[], |u| entry("create", Some(u.id))).await.is_err());
    assert!(s.find_user("lost").await.unwrap().is_none(), "a user created without its audit record");
    let changed = store::User { email: "new@example.com".into(), ..kept.clone() };
    let refused =
        s.update_user_audited(&changed, Some("another long password 2"), None, None, |u| entry("update", Some(u.id)));
    assert!(refused.await.is_err());
    let after = s.get_user(kept.id).await.unwrap().unwrap();
    assert_eq!(after.email, kept.email, "a profile saved without its audit record");
    assert!(s.password_matches(kept.id, "a long password 1").await.unwrap(), "a password set without its record");
    assert!(s.create_group_audited("lost", |g| entry("create", Some(g.id))).await.is_err());
    assert!(s.find_group("lost").await.unwrap().is_none(), "a group created without its audit record");
    assert!(s.delete_user_audited(kept.id, &entry("delete", Some(kept.id))).await.is_err());
    assert!(s.get_user(kept.id).await.unwrap().is_some(), "a user deleted without its audit record");
    assert!(s.create_api_token_audited(kept.id, "lost", None, |t| entry("token.create", Some(t.id))).await.is_err());
    assert!(s.list_api_tokens(kept.id).await.unwrap().is_empty(), "a token made without its audit record");
    sqlx::query("ALTER TABLE audit_events_away RENAME TO audit_events").execute(s.pool()).await.unwrap();
}

async fn a_build_start_and_its_audit_record_are_kept_together(s: &Store) {
    let pool_id = pool(s, "audited").await;
    let pid = project(s, "audited", pool_id).await;
    let audited = |name: &str| NewBuild {
        project_id: Some(pid),
        worker_pool_id: pool_id,
        one_at_a_time: true,
        audit: Some(BuildStartAudit {
            actor: AuditActor::system(),
            object_name: name.into(),
            details: serde_json::json!({ "project_id": pid }),
        }),
        ..Default::default()
    };
    let build = s.create_build(&audited("first")).await.unwrap();
    // The second start is refused (one build at a time): its record goes with it.
    assert!(matches!(s.create_build(&audited("second")).await, Err(StoreError::Conflict(_))));
    let filter = AuditFilter { action: Some("build.start".into()), limit: 10, ..Default::default() };
    let events = s.list_audit(&filter).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].object_id, events[0].object_name.as_str()), (Some(build.id), "first"));
    assert_eq!(events[0].actor, "system");
}

async fn sessions_expire(s: &Store) {
    let uid = s
        .create_user(&NewUser { username: "s".into(), password: "password1".into(), ..Default::default() })
        .await
        .unwrap();
    let sid = s.create_session(uid, chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(s.session_user(&sid).await.unwrap().unwrap().id, uid);
    let raw: i64 = sqlx::query("SELECT COUNT(*) FROM sessions WHERE id_hash = $1")
        .bind(sid.as_str())
        .fetch_one(s.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(raw, 0, "session ids are stored hashed");
    let old = s.create_session(uid, chrono::Duration::milliseconds(-1)).await.unwrap();
    assert!(s.session_user(&old).await.unwrap().is_none());
    assert_eq!(s.purge_expired_sessions().await.unwrap(), 1);
    s.delete_session(&sid).await.unwrap();
    assert!(s.session_user(&sid).await.unwrap().is_none());
}

async fn build_status_machine(s: &Store) {
    let pool_id = pool(s, "p").await;
    let pid = project(s, "proj", pool_id).await;
    let b = s
        .create_build(&NewBuild {
            project_id: Some(pid),
            worker_pool_id: pool_id,
            script: "#!/bin/sh\necho hi".into(),
            variables: r#"{"a":1}"#.into(),
            launch_answers: r#"{"foo":["a"]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(b.status, BuildStatus::Queued);
    assert_eq!(b.pipeline_origin_build_id, Some(b.id), "origin defaults to itself");
    assert!(b.queued_time.is_some() && b.start_time.is_none());
    assert_eq!(s.get_project(pid).await.unwrap().unwrap().active_build_id, Some(b.id));

    // Cannot finish what has not started.
    assert!(matches!(
        s.set_build_status(b.id, BuildStatus::Success, Some(0)).await,
        Err(StoreError::Transition { .. })
    ));
    let claimed = s.claim_next_build(&[pool_id], None).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.status), (b.id, BuildStatus::Running));
    assert!(claimed.start_time.is_some());
    assert!(s.claim_build(b.id, None).await.unwrap().is_none(), "already claimed");
    let checked_out = store::CheckedOut {
        revision: Some("abc1234"),
        committer: Some("Dev"),
        committer_email: Some("dev@example.com"),
    };
    s.set_build_revision(b.id, &checked_out).await.unwrap();
    s.set_output_variables(b.id, r#"{"img":"a b"}"#).await.unwrap();
    assert!(s.set_output_variables(b.id, "nope").await.is_err());
    let done = s.set_build_status(b.id, BuildStatus::Success, Some(0)).await.unwrap();
    assert_eq!(done.status, BuildStatus::Success);
    assert_eq!(done.return_code, Some(0));
    assert_eq!(done.revision.as_deref(), Some("abc1234"));
    assert_eq!(
        (done.revision_username.as_deref(), done.revision_email.as_deref()),
        (Some("Dev"), Some("dev@example.com"))
    );
    assert!(done.end_time.is_some());
    let p = s.get_project(pid).await.unwrap().unwrap();
    assert_eq!((p.active_build_id, p.last_build_id, p.last_successful_build_id), (None, Some(b.id), Some(b.id)));
    // A failing success trigger turns SUCCESS into FAILURE.
    let failed = s.set_build_status(b.id, BuildStatus::Failure, None).await.unwrap();
    assert_eq!(failed.return_code, Some(0));
    assert_eq!(s.get_project(pid).await.unwrap().unwrap().last_successful_build_id, None);
    assert!(matches!(s.set_build_status(b.id, BuildStatus::Running, None).await, Err(StoreError::Transition { .. })));

    // Stop: QUEUED -> ABORTED at once (nobody runs it); RUNNING -> ABORTING
    // (its worker kills it), which frees the project; then ABORTED.
    let queued = s
        .create_build(&NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();
    assert!(s.request_stop(queued.id).await.unwrap());
    assert_eq!(s.build_status(queued.id).await.unwrap(), Some(BuildStatus::Aborted));
    let b2 = s
        .create_build(&NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();
    s.claim_build(b2.id, None).await.unwrap().unwrap();
    assert!(s.request_stop(b2.id).await.unwrap());
    assert_eq!(s.build_status(b2.id).await.unwrap(), Some(BuildStatus::Aborting));
    assert_eq!(s.get_project(pid).await.unwrap().unwrap().active_build_id, None);
    assert!(!s.request_stop(b2.id).await.unwrap(), "already stopping");
    s.set_build_status(b2.id, BuildStatus::Aborted, None).await.unwrap();

    // A render failure is recorded as FAILURE straight away.
    let b3 = s
        .create_build(&NewBuild {
            project_id: Some(pid),
            worker_pool_id: pool_id,
            status: Some(BuildStatus::Failure),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(s.get_project(pid).await.unwrap().unwrap().last_build_id, Some(b3.id));

    // Orphans and duplicate collapse.
    let q1 = s
        .create_build(&NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();
    let q2 = s
        .create_build(&NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(s.abort_other_queued(pid, q1.id).await.unwrap(), vec![q2.id]);
    assert_eq!(s.build_status(q2.id).await.unwrap(), Some(BuildStatus::Aborted));
    assert_eq!(s.orphan_stale_builds(pool_id, store::now() + chrono::Duration::minutes(1)).await.unwrap(), 1);
    assert_eq!(s.build_status(q1.id).await.unwrap(), Some(BuildStatus::Orphaned));
    assert_eq!(s.get_project(pid).await.unwrap().unwrap().active_build_id, None);

    let listed = s.list_builds(&BuildFilter { project_id: Some(pid), ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 6);
    assert!(listed.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let aborted = BuildFilter { status: Some(BuildStatus::Aborted), ..Default::default() };
    assert_eq!(s.list_builds(&aborted).await.unwrap().len(), 3);
}

async fn concurrent_claims_never_share_a_build(s: &Store) {
    const BUILDS: usize = 200;
    const CLAIMERS: usize = 8;
    let pool_id = pool(s, "q").await;
    let pid = project(s, "p", pool_id).await;
    let mut all = HashSet::new();
    for _ in 0..BUILDS {
        let nb = NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() };
        all.insert(s.create_build(&nb).await.unwrap().id);
    }
    let mut tasks = vec![];
    for w in 0..CLAIMERS {
        let s = s.clone();
        let worker = s
            .upsert_worker(&Worker { worker_uid: format!("w{w}"), hostname: "h".into(), ..Default::default() })
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = vec![];
            while let Some(b) = s.claim_next_build(&[pool_id], Some(worker)).await.unwrap() {
                assert_eq!(b.status, BuildStatus::Running);
                assert_eq!(b.worker_id, Some(worker));
                mine.push(b.id);
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    let mut per_worker = vec![];
    for t in tasks {
        let mine = t.await.unwrap();
        per_worker.push(mine.len());
        for id in mine {
            assert!(seen.insert(id), "build {id} was claimed twice");
        }
    }
    assert_eq!(seen, all, "every build claimed exactly once");
    assert_eq!(s.count_builds(pool_id, BuildStatus::Queued).await.unwrap(), 0);
    assert_eq!(s.count_builds(pool_id, BuildStatus::Running).await.unwrap(), BUILDS as i64);
    println!("{:?}: claims per worker {per_worker:?}", s.backend());
}

async fn claim_respects_pools(s: &Store) {
    let a = pool(s, "a").await;
    let b = pool(s, "b").await;
    let pa = project(s, "pa", a).await;
    let pb = project(s, "pb", b).await;
    let a1 = s.create_build(&NewBuild { project_id: Some(pa), worker_pool_id: a, ..Default::default() }).await.unwrap();
    let b1 = s.create_build(&NewBuild { project_id: Some(pb), worker_pool_id: b, ..Default::default() }).await.unwrap();
    let a2 = s.create_build(&NewBuild { project_id: Some(pa), worker_pool_id: a, ..Default::default() }).await.unwrap();
    assert_eq!(s.claim_next_build_in("a", None).await.unwrap().unwrap().id, a1.id, "oldest first");
    assert_eq!(s.claim_next_build(&[a], None).await.unwrap().unwrap().id, a2.id);
    assert!(s.claim_next_build(&[a], None).await.unwrap().is_none());
    assert_eq!(s.build_status(b1.id).await.unwrap(), Some(BuildStatus::Queued), "pool b untouched");
    assert_eq!(s.claim_next_build(&[a, b], None).await.unwrap().unwrap().id, b1.id);
    assert!(s.claim_next_build(&[], None).await.unwrap().is_none());
    assert!(matches!(s.claim_next_build_in("nope", None).await, Err(StoreError::NotFound { .. })));
}

async fn output_appends_in_order(s: &Store) {
    let pool_id = pool(s, "p").await;
    let b = s.create_build(&NewBuild { worker_pool_id: pool_id, ..Default::default() }).await.unwrap();
    let first: Vec<(OutputStream, String)> = (1..=2500).map(|i| (OutputStream::Stdout, format!("line {i}"))).collect();
    assert_eq!(s.append_output(b.id, &first).await.unwrap(), 2500);
    let last = s
        .append_output(b.id, &[(OutputStream::Message, "checkout done"), (OutputStream::Stderr, "warn ünïcödé ✓")])
        .await
        .unwrap();
    assert_eq!(last, 2502);
    assert_eq!(s.append_output::<&str>(b.id, &[]).await.unwrap(), 2502);
    let all = s.output_since(b.id, 0, 0).await.unwrap();
    assert_eq!(all.len(), 2502);
    assert!(all.iter().enumerate().all(|(i, l)| l.seq == i as i64 + 1));
    assert_eq!(all[0].text, "line 1");
    assert_eq!(all[2501].text, "warn ünïcödé ✓");
    assert_eq!(all[2501].stream, OutputStream::Stderr);
    assert_eq!(all[2500].stream, OutputStream::Message);
    let tail = s.output_since(b.id, 2499, 2).await.unwrap();
    assert_eq!(tail.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![2500, 2501]);
    assert_eq!(s.get_build(b.id).await.unwrap().unwrap().output_lines, 2502);
    assert!(matches!(s.append_output(999_999, &[(OutputStream::Stdout, "x")]).await, Err(StoreError::NotFound { .. })));
}

async fn concurrent_output_appends_keep_sequence(s: &Store) {
    let pool_id = pool(s, "p").await;
    let b = s.create_build(&NewBuild { worker_pool_id: pool_id, ..Default::default() }).await.unwrap();
    let mut tasks = vec![];
    for t in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..10 {
                let lines: Vec<(OutputStream, String)> =
                    (0..50).map(|i| (OutputStream::Stdout, format!("t{t} b{batch} l{i}"))).collect();
                s.append_output(b.id, &lines).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = s.output_since(b.id, 0, 0).await.unwrap();
    assert_eq!(all.len(), 2000);
    assert!(all.iter().enumerate().all(|(i, l)| l.seq == i as i64 + 1), "no gaps, no duplicates");
    // Each batch stays contiguous.
    for chunk in all.chunks(50) {
        let prefix = chunk[0].text.rsplit_once(' ').unwrap().0;
        assert!(chunk.iter().all(|l| l.text.starts_with(prefix)), "batch interleaved");
    }
}

async fn cleanup_deletes_only_older_builds(s: &Store) {
    let pool_id = pool(s, "p").await;
    let pid = project(s, "p", pool_id).await;
    let nb = NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() };
    let old = s.create_build(&nb).await.unwrap();
    let old_running = s.create_build(&nb).await.unwrap();
    let new = s.create_build(&nb).await.unwrap();
    s.claim_build(old_running.id, None).await.unwrap().unwrap();
    s.claim_build(old.id, None).await.unwrap().unwrap();
    s.set_build_status(old.id, BuildStatus::Success, Some(0)).await.unwrap();
    s.claim_build(new.id, None).await.unwrap().unwrap();
    s.set_build_status(new.id, BuildStatus::Failure, Some(1)).await.unwrap();
    s.append_output(old.id, &[(OutputStream::Stdout, "old output")]).await.unwrap();
    let ten_days_ago = (store::now() - chrono::Duration::days(10)).timestamp_millis();
    sqlx::query("UPDATE builds SET queued_time = $1 WHERE id IN ($2, $3)")
        .bind(ten_days_ago)
        .bind(old.id)
        .bind(old_running.id)
        .execute(s.pool())
        .await
        .unwrap();
    let n = s.delete_builds_older_than(store::now() - chrono::Duration::days(5)).await.unwrap();
    assert_eq!(n, 1, "only the old finished build");
    assert!(s.get_build(old.id).await.unwrap().is_none());
    assert!(s.get_build(old_running.id).await.unwrap().is_some(), "running builds are kept");
    assert!(s.get_build(new.id).await.unwrap().is_some(), "newer builds are kept");
    assert!(s.output_since(old.id, 0, 0).await.unwrap().is_empty(), "output went with it");
    assert_eq!(s.get_project(pid).await.unwrap().unwrap().last_successful_build_id, None);
}

async fn tutorial_is_idempotent(s: &Store) {
    s.create_user(&NewUser {
        username: "root".into(),
        password: "password1".into(),
        is_superuser: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let first = store::tutorial::setup(s).await.unwrap();
    assert!(first.created.len() >= 15, "{:?}", first.created);
    let second = store::tutorial::setup(s).await.unwrap();
    assert!(second.created.is_empty(), "{:?}", second.created);
    let p = s.find_pipeline(store::tutorial::PIPELINE).await.unwrap().unwrap();
    assert_eq!(p.stage_ids.len(), 4);
    let names: Vec<String> = s.list_projects().await.unwrap().into_iter().map(|p| p.name).collect();
    assert_eq!(names.len(), 4);
    assert!(names.contains(&"tutorial-project1-release".to_string()));
    let root = s.find_user("root").await.unwrap().unwrap();
    assert_eq!(root.group_ids.len(), 4, "superusers join the tutorial groups");
}

async fn workers_upsert(s: &Store) {
    let w = Worker { worker_uid: "host-1".into(), hostname: "a".into(), port: 8000, ..Default::default() };
    let id = s.upsert_worker(&w).await.unwrap();
    let again = s.upsert_worker(&Worker { hostname: "b".into(), ..w.clone() }).await.unwrap();
    assert_eq!(id, again);
    let got = s.get_worker(id).await.unwrap().unwrap();
    assert_eq!(got.hostname, "b");
    assert!(got.first_checkin.is_some() && got.last_checkin >= got.first_checkin);
    assert_eq!(s.list_workers().await.unwrap().len(), 1);
}

/// A connection cut under a running statement (what a database restart does)
/// is told apart from the database refusing a statement: the engine retries
/// the one and reports the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_connection_is_unavailable_and_the_pool_recovers() {
    use vespene::store::StoreError;
    let Some(db) = TestDb::postgres("cut_connection").await else { return };
    let store = db.store.clone();
    let sleeper = tokio::spawn(async move {
        sqlx::query("SELECT pg_sleep(30)").execute(store.pool()).await.map_err(StoreError::from)
    });
    let url = std::env::var("VESPENE_TEST_POSTGRES_URL").unwrap();
    let mut admin = sqlx::AnyConnection::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let cut: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if cut > 0 {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the sleeping statement never showed up");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let err = sleeper.await.unwrap().expect_err("the statement was cut off");
    assert!(err.is_unavailable(), "a cut connection is unavailability: {err:?}");

    let refused = sqlx::query("SELECT * FROM no_such_table").execute(db.store.pool()).await.map_err(StoreError::from);
    assert!(!refused.unwrap_err().is_unavailable(), "a refused statement is not");
    // The pool replaces the dead connection by itself.
    let pool = db.store.create_worker_pool(&WorkerPool { name: "after".into(), ..Default::default() }).await;
    assert!(pool.is_ok(), "{pool:?}");
    db.store.close().await;
}

async fn snippet_names_that_become_one_variable_are_refused(s: &Store) {
    use vespene::store::Snippet;
    let snippet = |name: &str| Snippet { name: name.into(), text: "echo hi".into(), ..Default::default() };
    let first = s.create_snippet(&snippet("deploy step")).await.unwrap();
    let other = s.create_snippet(&snippet("deploy-steps")).await.unwrap();
    match s.create_snippet(&snippet("deploy-step")).await {
        Err(StoreError::Validation(e)) => {
            assert_eq!(e.field, "name");
            assert!(e.message.contains("'deploy step'") && e.message.contains("'deploy_step'"), "{}", e.message);
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    // Renaming into a clash is refused too; renaming a snippet to itself is not a clash.
    let mut renamed = s.get_snippet(other).await.unwrap().unwrap();
    renamed.name = "deploy_step".into();
    assert!(matches!(s.update_snippet(&renamed).await, Err(StoreError::Validation(_))));
    let mut same = s.get_snippet(first).await.unwrap().unwrap();
    same.description = "unchanged name".into();
    s.update_snippet(&same).await.unwrap();
    assert_eq!(s.list_snippets().await.unwrap().len(), 2, "nothing was saved");
}

/// A database the previous release left (schema version 1, no
/// `revision_email`), opened by this one: migrated, its builds kept.
async fn a_schema_one_version_old_is_upgraded_keeping_its_builds(db: TestDb) {
    let s = &db.store;
    let pool_id = pool(s, "p").await;
    let default_pool = pool(s, "default").await;
    let pid = project(s, "old", pool_id).await;
    let nb = NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() };
    let id = s.create_build(&nb).await.unwrap().id;
    let group = s.create_group("old-group").await.unwrap();
    let old_user = s
        .create_user(&NewUser { username: "old-timer".into(), password: "old-password-1".into(), ..Default::default() })
        .await
        .unwrap();
    s.add_group_member(group, old_user).await.unwrap();
    // Every migration after the first undone (the schema of the first release):
    // 0002 revision_email, 0003 the pools' network, 0004 the `shared` flags,
    // 0005 builds.secret_values, 0006 the webhook delivery ids, 0008 retention.
    sqlx::query("ALTER TABLE builds DROP COLUMN revision_email").execute(s.pool()).await.unwrap();
    sqlx::query("ALTER TABLE worker_pools DROP COLUMN network").execute(s.pool()).await.unwrap();
    for table in ["ssh_keys", "service_logins", "variable_sets", "worker_pools", "pipelines", "stages", "snippets"] {
        sqlx::query(&format!("ALTER TABLE {table} DROP COLUMN shared")).execute(s.pool()).await.unwrap();
    }
    sqlx::query("ALTER TABLE builds DROP COLUMN secret_values").execute(s.pool()).await.unwrap();
    sqlx::query("DROP TABLE webhook_deliveries").execute(s.pool()).await.unwrap();
    // 0008 the keep rules, pins and removal times.
    sqlx::query("DROP INDEX builds_project_log").execute(s.pool()).await.unwrap();
    for column in ["log_keep_builds", "log_keep_days", "root_keep_builds", "root_keep_days"] {
        sqlx::query(&format!("ALTER TABLE projects DROP COLUMN {column}")).execute(s.pool()).await.unwrap();
    }
    for column in ["pinned", "log_removed_at", "root_removed_at"] {
        sqlx::query(&format!("ALTER TABLE builds DROP COLUMN {column}")).execute(s.pool()).await.unwrap();
    }
    // 0009 the audit log and public badges.
    sqlx::query("DROP TABLE audit_events").execute(s.pool()).await.unwrap();
    sqlx::query("ALTER TABLE projects DROP COLUMN public_badge").execute(s.pool()).await.unwrap();
    // 0012 autoscaling: the pools' planner, executor and minutes back, no
    // lease or last message; workers without their pools.
    for sql in [
        "ALTER TABLE worker_pools RENAME COLUMN autoscaler TO planner",
        "ALTER TABLE worker_pools ADD COLUMN executor TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE worker_pools ADD COLUMN executor_command TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE worker_pools ADD COLUMN reevaluate_minutes BIGINT NOT NULL DEFAULT 10",
        "ALTER TABLE worker_pools DROP COLUMN reevaluate_seconds",
        "ALTER TABLE worker_pools DROP COLUMN autoscaling_lease",
        "ALTER TABLE worker_pools DROP COLUMN autoscaling_message",
        "ALTER TABLE workers DROP COLUMN pools",
    ] {
        sqlx::query(sql).execute(s.pool()).await.unwrap();
    }
    sqlx::query("UPDATE worker_pools SET planner = 'stock', reevaluate_minutes = 7 WHERE id = $1")
        .bind(pool_id)
        .execute(s.pool())
        .await
        .unwrap();
    // 0010 approval stages, trigger failures and the approvals of runs.
    sqlx::query("DROP TABLE pipeline_approvals").execute(s.pool()).await.unwrap();
    sqlx::query("ALTER TABLE stages DROP COLUMN approval_required").execute(s.pool()).await.unwrap();
    sqlx::query("ALTER TABLE builds DROP COLUMN trigger_failures").execute(s.pool()).await.unwrap();
    // 0011 the sources of accounts and group memberships.
    sqlx::query("ALTER TABLE users DROP COLUMN auth_source").execute(s.pool()).await.unwrap();
    sqlx::query("ALTER TABLE group_members DROP COLUMN source").execute(s.pool()).await.unwrap();
    // 0007: logs were one row per line.
    sqlx::query("DROP TABLE build_log_chunks").execute(s.pool()).await.unwrap();
    sqlx::query(
        "CREATE TABLE build_output (build_id BIGINT NOT NULL, seq BIGINT NOT NULL, stream TEXT NOT NULL,
             ts BIGINT NOT NULL, line TEXT NOT NULL, PRIMARY KEY (build_id, seq))",
    )
    .execute(s.pool())
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO build_output (build_id, seq, stream, ts, line)
         SELECT $1, i, CASE WHEN i % 1000 = 0 THEN 'message' ELSE 'stdout' END, 1700000000000 + i, 'line ' || i FROM n",
    )
    .bind(id)
    .execute(s.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE builds SET output_seq = 5000 WHERE id = $1").bind(id).execute(s.pool()).await.unwrap();
    sqlx::query("DELETE FROM vespene_migrations WHERE version > 1").execute(s.pool()).await.unwrap();
    s.close().await;
    let newer = store::migrate::MIGRATIONS.len() - 1;
    let latest = store::migrate::MIGRATIONS.last().unwrap().version;

    // Connections cache statements against the schema: a new process opens a new store.
    let old = Store::open(&StoreOptions { migrate: false, ..db.opts.clone() }).await.unwrap();
    assert_eq!(store::migrate::current_version(old.pool()).await.unwrap(), 1);
    assert_eq!(old.migrate().await.unwrap(), newer, "every later migration applied");
    old.close().await;
    let upgraded = Store::open(&StoreOptions { migrate: false, ..db.opts.clone() }).await.unwrap();
    assert_eq!(store::migrate::current_version(upgraded.pool()).await.unwrap(), latest);
    let build = upgraded.get_build(id).await.unwrap().expect("the build is kept");
    assert_eq!((build.project_id, build.revision_email), (Some(pid), None));
    // 0011: existing accounts are local ones, and their memberships an administrator's.
    let user = upgraded.find_user("old-timer").await.unwrap().expect("the user is kept");
    assert_eq!((user.auth_source.as_str(), user.group_ids.as_slice()), ("local", &[group][..]));
    assert_eq!(upgraded.verify_password("old-timer", "old-password-1").await.unwrap().map(|u| u.id), Some(old_user));
    let source = sqlx::query("SELECT source FROM group_members WHERE user_id = $1")
        .bind(old_user)
        .fetch_one(upgraded.pool())
        .await
        .unwrap();
    assert_eq!(sqlx::Row::try_get::<String, _>(&source, 0).unwrap(), "");
    // 0004 shares the pool every install started with, and nothing else.
    assert!(upgraded.get_worker_pool(default_pool).await.unwrap().unwrap().shared);
    assert!(!upgraded.get_worker_pool(pool_id).await.unwrap().unwrap().shared);
    // 0012 kept the pool's planner as its autoscaler and its interval, in seconds.
    let scaled = upgraded.get_worker_pool(pool_id).await.unwrap().unwrap();
    assert_eq!((scaled.autoscaler.as_str(), scaled.reevaluate_seconds), ("stock", 420));
    // 0007 turned the log's rows into chunks: every line reads back as it was.
    let lines = upgraded.output_since(id, 0, 0).await.unwrap();
    assert_eq!(lines.len(), 5000);
    for (i, line) in lines.iter().enumerate() {
        let n = i as i64 + 1;
        assert_eq!(
            (line.seq, line.text.as_str(), line.ts.timestamp_millis()),
            (n, &*format!("line {n}"), 1700000000000 + n)
        );
        let stream = if n % 1000 == 0 { OutputStream::Message } else { OutputStream::Stdout };
        assert_eq!(line.stream, stream);
    }
    assert_eq!(
        upgraded.output_since(id, 4990, 3).await.unwrap().iter().map(|l| l.seq).collect::<Vec<_>>(),
        [4991, 4992, 4993]
    );
    upgraded.append_output(id, &[(OutputStream::Stdout, "after the upgrade")]).await.unwrap();
    assert_eq!(upgraded.output_since(id, 5000, 0).await.unwrap()[0].seq, 5001);
    upgraded.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_schema_one_version_old_is_upgraded() {
    a_schema_one_version_old_is_upgraded_keeping_its_builds(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_schema_one_version_old_is_upgraded() {
    let Some(db) = TestDb::postgres("schema_upgrade").await else { return };
    a_schema_one_version_old_is_upgraded_keeping_its_builds(db).await;
}

async fn secret_variables_are_sealed_kept_and_rotated(s: &Store) {
    let vars = r#"{"DB_PASS": {"secret": "sealed-value-1"}, "region": "eu"}"#;
    let id = s
        .create_variable_set(&VariableSet { name: "sealed".into(), variables: vars.into(), ..Default::default() })
        .await
        .unwrap();
    let raw = raw_text(s, "SELECT variables FROM variable_sets WHERE id = $1", id).await.unwrap();
    assert!(!raw.contains("sealed-value-1") && raw.contains("$VESPENE$v1$"), "{raw}");
    let mut set = s.get_variable_set(id).await.unwrap().unwrap();
    assert!(set.variables.contains(r#"{"secret":"********"}"#) && !set.variables.contains("sealed-value"));
    // Saved back as read: the value is kept.
    set.description = "edited".into();
    s.update_variable_set(&set).await.unwrap();
    let sealed = |raw: String| {
        let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
        v["DB_PASS"]["secret"].as_str().unwrap().to_string()
    };
    let kept = sealed(s.sealed_variables("variable_sets", id).await.unwrap().unwrap());
    assert_eq!(s.decrypt(&kept).unwrap(), "sealed-value-1");
    // Rotation re-encrypts it with the new key.
    let elsewhere = tempfile::tempdir().unwrap();
    let new = basic_secrets(elsewhere.path());
    assert!(s.reencrypt_secrets(&*new).await.unwrap() >= 1);
    let rotated = sealed(s.sealed_variables("variable_sets", id).await.unwrap().unwrap());
    assert_eq!(new.decrypt(&rotated).unwrap(), "sealed-value-1");
    assert!(s.decrypt(&rotated).is_err(), "the old key no longer reads it");
}

/// A finished build of `pid` with one line of output; answers its id.
async fn finished_build(s: &Store, pool_id: i64, pid: i64, status: BuildStatus) -> i64 {
    let b = s
        .create_build(&NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap();
    s.claim_build(b.id, None).await.unwrap().unwrap();
    s.append_output(b.id, &[(OutputStream::Stdout, format!("output of {}", b.id))]).await.unwrap();
    s.set_build_status(b.id, status, Some(0)).await.unwrap();
    b.id
}

/// `Store::delete_build_log`: the record stays and says when; two processes
/// at once remove a log once between them; pinned, queued and running builds
/// keep theirs; pinning needs no particular status and unpinning gives the
/// build back to the rules.
async fn retention_removes_each_log_once_and_never_a_pinned_or_active_one(s: &Store) {
    let pool_id = pool(s, "p").await;
    let pid = project(s, "p", pool_id).await;
    let done = finished_build(s, pool_id, pid, BuildStatus::Failure).await;
    let pinned = finished_build(s, pool_id, pid, BuildStatus::Success).await;
    let running = s
        .create_build(&NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap()
        .id;
    s.claim_build(running, None).await.unwrap().unwrap();
    s.append_output(running, &[(OutputStream::Stdout, "still going")]).await.unwrap();
    let queued = s
        .create_build(&NewBuild { project_id: Some(pid), worker_pool_id: pool_id, ..Default::default() })
        .await
        .unwrap()
        .id;
    assert!(s.set_build_pinned(pinned, true).await.unwrap().unwrap().pinned);
    assert!(s.set_build_pinned(9999, true).await.unwrap().is_none());

    // Eight removers at once (as several worker processes would be): one wins.
    let tries: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.delete_build_log(done).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in tries {
        won += u32::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one remover removes a log");
    let b = s.get_build(done).await.unwrap().unwrap();
    assert!(b.log_removed_at.is_some(), "the record says when");
    assert_eq!((b.status, b.output_lines), (BuildStatus::Failure, 1), "the record stays, line count and all");
    assert!(s.output_since(done, 0, 0).await.unwrap().is_empty());

    for (id, why) in [(pinned, "pinned"), (running, "running"), (queued, "queued"), (9999, "missing")] {
        assert!(!s.delete_build_log(id).await.unwrap(), "a {why} build keeps its log");
        if id != 9999 {
            assert!(s.get_build(id).await.unwrap().unwrap().log_removed_at.is_none(), "{why}");
        }
    }
    assert_eq!(s.output_since(pinned, 0, 0).await.unwrap().len(), 1);
    assert_eq!(s.output_since(running, 0, 0).await.unwrap().len(), 1);
    // Roots: the same claim, and it can be taken back when the directory stays.
    assert!(!s.claim_root_removal(pinned).await.unwrap());
    assert!(!s.claim_root_removal(running).await.unwrap());
    assert!(s.claim_root_removal(done).await.unwrap());
    assert!(!s.claim_root_removal(done).await.unwrap(), "claimed once");
    s.unclaim_root_removal(done).await.unwrap();
    assert!(s.get_build(done).await.unwrap().unwrap().root_removed_at.is_none());

    // Cleanup's age rule spares pinned and active builds too.
    let mut kept = s.builds_kept_from_cleanup().await.unwrap();
    kept.sort();
    assert_eq!(kept, vec![pinned, running, queued]);
    let n = s.delete_builds_older_than(store::now() + chrono::Duration::days(1)).await.unwrap();
    assert_eq!(n, 1, "only the unpinned finished build");
    assert!(s.get_build(pinned).await.unwrap().is_some());
    // Unpinned, the build is the rules' again.
    assert!(!s.set_build_pinned(pinned, false).await.unwrap().unwrap().pinned);
    assert!(s.delete_build_log(pinned).await.unwrap());
}

/// The queries behind the rules: the Nth newest finished unpinned build, and
/// the builds past the last N or finished before a time, oldest first.
async fn retention_finds_the_builds_past_a_keep_rule(s: &Store) {
    let pool_id = pool(s, "p").await;
    let pid = project(s, "p", pool_id).await;
    let other = project(s, "other", pool_id).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(finished_build(s, pool_id, pid, BuildStatus::Success).await);
    }
    let theirs = finished_build(s, pool_id, other, BuildStatus::Success).await;
    s.set_build_pinned(ids[4], true).await.unwrap();
    // Newest first, the pinned one not counted: 5, 3, 2, 1, 0.
    assert_eq!(s.nth_newest_finished_build(pid, 1).await.unwrap(), Some(ids[5]));
    assert_eq!(s.nth_newest_finished_build(pid, 2).await.unwrap(), Some(ids[3]));
    assert_eq!(s.nth_newest_finished_build(pid, 5).await.unwrap(), Some(ids[0]));
    assert_eq!(s.nth_newest_finished_build(pid, 6).await.unwrap(), None);
    assert_eq!(s.nth_newest_finished_build(pid, 0).await.unwrap(), None);
    // Keep the last 2: 0, 1 and 2 are past it (4 is pinned); other projects are not looked at.
    let past = s.builds_past_log_rule(pid, Some(ids[3]), None, 0).await.unwrap();
    assert_eq!(past, vec![ids[0], ids[1], ids[2]]);
    assert_eq!(s.builds_past_log_rule(pid, Some(ids[3]), None, 2).await.unwrap(), vec![ids[0], ids[1]]);
    assert!(s.builds_past_log_rule(pid, None, None, 0).await.unwrap().is_empty());
    assert!(!s.builds_past_log_rule(other, Some(theirs + 1), None, 0).await.unwrap().contains(&ids[0]));
    // Older than a day: the one that finished ten days ago.
    sqlx::query("UPDATE builds SET end_time = $1 WHERE id = $2")
        .bind((store::now() - chrono::Duration::days(10)).timestamp_millis())
        .bind(ids[5])
        .execute(s.pool())
        .await
        .unwrap();
    let day_ago = store::now() - chrono::Duration::days(1);
    assert_eq!(s.builds_past_log_rule(pid, None, Some(day_ago), 0).await.unwrap(), vec![ids[5]]);
    s.delete_build_log(ids[0]).await.unwrap();
    let past = s.builds_past_log_rule(pid, Some(ids[3]), Some(day_ago), 0).await.unwrap();
    assert_eq!(past, vec![ids[1], ids[2], ids[5]], "a removed log is not found again");
    // What retention reads about the roots on a host.
    let facts = s.retention_facts(&[ids[4], ids[5], 9999]).await.unwrap();
    assert_eq!(facts.len(), 2);
    assert!(facts[0].pinned && facts[0].finished && facts[0].project_id == Some(pid));
}

/// A keep rule above the administrator's maximum is refused, naming the
/// field and the maximum; at or under it, or empty, it is saved.
async fn keep_rules_are_checked_against_the_admin_maximum(s: &Store) {
    let pool_id = pool(s, "p").await;
    let retention =
        vespene::settings::RetentionSettings { max_log_keep_days: 90, max_root_keep_builds: 5, ..Default::default() };
    let s = s.clone().with_policy(store::validate::SavePolicy { retention, ..Default::default() });
    let p = Project { name: "p".into(), worker_pool_id: pool_id, log_keep_days: Some(91), ..Default::default() };
    match s.create_project(&p).await {
        Err(StoreError::Validation(e)) => {
            assert_eq!(e.field, "log_keep_days");
            assert!(e.message.contains("at most 90") && e.message.contains("retention.max_log_keep_days"), "{e}");
        }
        other => panic!("expected a validation error, got {other:?}"),
    }
    let p = Project { log_keep_days: Some(90), root_keep_builds: Some(5), log_keep_builds: Some(10_000), ..p };
    let id = s.create_project(&p).await.unwrap();
    let mut got = s.get_project(id).await.unwrap().unwrap();
    got.root_keep_builds = Some(6);
    assert!(matches!(s.update_project(&got).await, Err(StoreError::Validation(e)) if e.field == "root_keep_builds"));
    got.root_keep_builds = Some(-1);
    assert!(matches!(s.update_project(&got).await, Err(StoreError::Validation(e)) if e.field == "root_keep_builds"));
    got.root_keep_builds = None;
    s.update_project(&got).await.unwrap();
}
