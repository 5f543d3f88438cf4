use super::*;

fn layer(source: &str, text: &str) -> Layer {
    Layer { source: source.into(), table: text.parse().unwrap() }
}

#[test]
fn defaults_alone_are_valid_and_ship_plugins() {
    let settings = Settings::from_layers(&[Layer { source: "defaults".into(), table: defaults() }]).unwrap();
    assert_eq!(settings.server.listen, "127.0.0.1:8000");
    assert!(settings.plugins.scm.contains_key("none"));
    assert_eq!(settings.plugins.output["timestamp"].params["mode"].as_str(), Some("elapsed"));
    assert!(settings.database_url().starts_with("sqlite://"));
}

#[test]
fn later_layers_override_and_add_entries_in_order() {
    let layers = [
        Layer { source: "defaults".into(), table: defaults() },
        layer("a.toml", "[server]\nlisten = \"127.0.0.1:9\"\n[plugins.success_triggers.b]\nlibrary = \"command\"\ncommand = \"b\"\n"),
        layer("b.toml", "[plugins.success_triggers.a]\nlibrary = \"command\"\ncommand = \"a\"\n"),
    ];
    let settings = Settings::from_layers(&layers).unwrap();
    assert_eq!(settings.server.listen, "127.0.0.1:9");
    let names: Vec<&String> = settings.plugins.success_triggers.keys().collect();
    assert_eq!(names, ["b", "a"]);
}

#[test]
fn disabled_entries_are_skipped() {
    let layers = [
        Layer { source: "defaults".into(), table: defaults() },
        layer("off.toml", "[plugins.output.timestamp]\nenabled = false\n"),
    ];
    let settings = Settings::from_layers(&layers).unwrap();
    assert_eq!(settings.plugins.enabled().filter(|(s, _, _)| *s == PluginSection::Output).count(), 0);
}

#[test]
fn errors_name_the_key_and_the_file() {
    let layers = [Layer { source: "defaults".into(), table: defaults() }, layer("bad.toml", "[server]\nlisten = 5\n")];
    let err = Settings::from_layers(&layers).unwrap_err().to_string();
    assert!(err.contains("server.listen") && err.contains("bad.toml"), "{err}");

    let layers = [
        Layer { source: "defaults".into(), table: defaults() },
        layer("x.toml", "[plugins.sccm.git]\nlibrary = \"git\"\n"),
    ];
    let err = Settings::from_layers(&layers).unwrap_err().to_string();
    assert!(err.contains("sccm"), "{err}");
}

#[test]
fn environment_overrides_with_nesting_and_types() {
    let env = vec![
        ("VESPENE_SERVER__LISTEN".to_string(), "127.0.0.1:7".to_string()),
        ("VESPENE_WORKERS__PER_POOL".to_string(), "5".to_string()),
        ("VESPENE_PLUGIN_PATH".to_string(), "/a:/b".to_string()),
        ("VESPENE_LOG".to_string(), "debug".to_string()),
        ("HOME".to_string(), "/root".to_string()),
    ];
    let layers = [Layer { source: "defaults".into(), table: defaults() }, env_layer(&env).unwrap()];
    let settings = Settings::from_layers(&layers).unwrap();
    assert_eq!(settings.server.listen, "127.0.0.1:7");
    assert_eq!(settings.workers.per_pool, 5);
    assert_eq!(settings.plugin_path.dirs(), vec![PathBuf::from("/a"), PathBuf::from("/b")]);
}

#[test]
fn files_layer_in_name_order_and_relative_libraries_anchor_to_their_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("settings.toml"), "data_dir = \"/srv/one\"\n").unwrap();
    std::fs::create_dir(dir.path().join("settings.d")).unwrap();
    std::fs::write(dir.path().join("settings.d/20-b.toml"), "data_dir = \"/srv/b\"\n").unwrap();
    std::fs::write(
        dir.path().join("settings.d/10-a.toml"),
        "data_dir = \"/srv/a\"\n[plugins.scm.mine]\nlibrary = \"lib/libmine.so\"\n",
    )
    .unwrap();
    let options = LoadOptions { system_dir: Some(dir.path().to_path_buf()), config_file: None, env: vec![] };
    let (settings, sources) = Settings::load(&options).unwrap();
    assert_eq!(settings.data_dir, PathBuf::from("/srv/b"));
    assert_eq!(sources.len(), 4);
    assert_eq!(
        settings.plugins.scm["mine"].library,
        dir.path().join("settings.d/lib/libmine.so").display().to_string()
    );
}

#[test]
fn a_missing_config_file_is_an_error() {
    let options = LoadOptions {
        system_dir: Some(PathBuf::from("/nonexistent")),
        config_file: Some(PathBuf::from("/nonexistent/x.toml")),
        env: vec![],
    };
    assert!(Settings::load(&options).unwrap_err().to_string().contains("/nonexistent/x.toml"));
}

#[test]
fn secure_cookies_follow_an_https_public_url_unless_set() {
    let load = |text: &str| {
        Settings::from_layers(&[Layer { source: "defaults".into(), table: defaults() }, layer("s.toml", text)]).unwrap()
    };
    assert!(!load("").server.cookies_secure());
    assert!(load("[server]\npublic_url = \"HTTPS://ci.example.com\"\n").server.cookies_secure());
    assert!(!load("[server]\npublic_url = \"http://ci.example.com\"\n").server.cookies_secure());
    assert!(!load("[server]\npublic_url = \"https://ci\"\nsecure_cookies = false\n").server.cookies_secure());
    assert!(load("[server]\nsecure_cookies = true\n").server.cookies_secure());
    let settings = load("[authorization]\nallow_everything = true\n[webhooks]\nrequire_signature = true\n");
    assert!(settings.authorization.allow_everything && settings.webhooks.require_signature);
    assert_eq!(settings.webhooks.timestamp_window_seconds, 300);
    // The effective settings print back as TOML.
    toml::to_string_pretty(&load("")).unwrap();
}

#[test]
fn retention_defaults_keep_everything_and_bad_values_name_the_key() {
    let defaults = Layer { source: "defaults".into(), table: defaults() };
    let settings = Settings::from_layers(std::slice::from_ref(&defaults)).unwrap();
    assert_eq!(settings.retention, RetentionSettings::default(), "nothing is pruned unless an admin says so");

    let ok = layer("r.toml", "[retention]\nlog_keep_builds = 20\nmax_log_keep_builds = 100\nroot_keep_days = 3\n");
    let settings = Settings::from_layers(&[defaults.clone(), ok]).unwrap();
    assert_eq!((settings.retention.log_keep_builds, settings.retention.maximum("log_keep_builds")), (20, 100));

    let over = layer("over.toml", "[retention]\nlog_keep_days = 400\nmax_log_keep_days = 365\n");
    let err = Settings::from_layers(&[defaults.clone(), over]).unwrap_err().to_string();
    assert!(err.contains("'retention.log_keep_days'") && err.contains("'retention.max_log_keep_days' (365)"), "{err}");

    let negative = layer("neg.toml", "[retention]\nroot_keep_builds = -1\n");
    let err = Settings::from_layers(&[defaults.clone(), negative]).unwrap_err().to_string();
    assert!(err.contains("retention.root_keep_builds") && err.contains("neg.toml"), "{err}");

    let unknown = layer("typo.toml", "[retention]\nkeep_logs = 5\n");
    let err = Settings::from_layers(&[defaults.clone(), unknown]).unwrap_err().to_string();
    assert!(err.contains("retention") && err.contains("keep_logs"), "{err}");

    let text = layer("text.toml", "[retention]\nmax_root_keep_days = \"a week\"\n");
    let err = Settings::from_layers(&[defaults, text]).unwrap_err().to_string();
    assert!(err.contains("retention.max_root_keep_days"), "{err}");
}

#[test]
fn database_connections_default_to_ten_and_zero_is_refused() {
    let defaults = Layer { source: "defaults".into(), table: defaults() };
    let settings = Settings::from_layers(std::slice::from_ref(&defaults)).unwrap();
    assert_eq!(settings.database_connections(), 10);

    let set = layer("set.toml", "[database]\nmax_connections = 16\n");
    let settings = Settings::from_layers(&[defaults.clone(), set]).unwrap();
    assert_eq!(settings.database_connections(), 16);

    let zero = layer("zero.toml", "[database]\nmax_connections = 0\n");
    let err = Settings::from_layers(&[defaults, zero]).unwrap_err().to_string();
    assert!(err.contains("'database.max_connections'") && err.contains("at least 1"), "{err}");
}

#[test]
fn worker_pools_for_embedded_workers_are_checked() {
    let with = |text: &str| {
        Settings::from_layers(&[Layer { source: "defaults".into(), table: defaults() }, layer("w.toml", text)])
    };
    assert!(with("[workers]\n").unwrap().workers.pools.is_empty(), "default: every pool");
    assert_eq!(with("[workers]\npools = [\"default\", \"fast\"]\n").unwrap().workers.pools, ["default", "fast"]);
    let err = with("[workers]\npools = \"default\"\n").unwrap_err().to_string();
    assert!(err.contains("workers.pools") && err.contains("w.toml"), "{err}");
    let err = with("[workers]\npools = [1]\n").unwrap_err().to_string();
    assert!(err.contains("workers.pools"), "{err}");
    let err = with("[workers]\npool = [\"default\"]\n").unwrap_err().to_string();
    assert!(err.contains("pool"), "{err}");
    let err = with("[workers]\npools = [\"\"]\n").unwrap_err().to_string();
    assert!(err.contains("workers.pools") && err.contains("blank"), "{err}");
    let err = with("[workers]\npools = [\"a\", \"a\"]\n").unwrap_err().to_string();
    assert!(err.contains("'a' is named twice"), "{err}");
}
