//! The store's subcommands: `migrate`, `user create`, `tutorial` and
//! `cleanup`. Each opens the store from the effective settings on its own
//! small tokio runtime.

use std::collections::HashSet;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Subcommand;

use crate::engine::retention::{self, Budget};
use crate::settings::Settings;
use crate::store::{self, NewUser, Store, StoreOptions};

/// `vespene user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password comes from --password, else the
    /// VESPENE_PASSWORD environment variable, else a prompt.
    Create {
        /// The login name.
        name: String,
        /// Make the user a superuser.
        #[arg(long)]
        superuser: bool,
        /// The password (visible in the process list: prefer VESPENE_PASSWORD or the prompt).
        #[arg(long)]
        password: Option<String>,
        /// E-mail address.
        #[arg(long, default_value = "")]
        email: String,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

async fn open(settings: &Settings, migrate: bool) -> anyhow::Result<Store> {
    store::create_data_dir(&settings.data_dir)?;
    let opts = StoreOptions { migrate, ..StoreOptions::from_settings(settings, super::load_secrets(settings)?) };
    Ok(Store::open(&opts).await?.with_policy(Store::policy_from(settings)))
}

/// `vespene secrets ...`
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Seal every stored secret again with the sealing secrets plugin. When that
    /// plugin keeps a key file (`key_file`), it gets a new key, which replaces
    /// the file; the old one is kept beside it. Refused while a server or
    /// worker runs on the database. Copy the new key file to every worker host
    /// before starting them again.
    RotateKey,
}

/// `vespene secrets rotate-key`: the sealing secrets plugin is built a second
/// time (with a new key file when it keeps one), every stored value is read
/// with the configured chain and sealed with that instance in one
/// transaction, then the key files swap.
pub fn secrets(settings: &Settings, cmd: SecretsCommand) -> anyhow::Result<ExitCode> {
    let SecretsCommand::RotateKey = cmd;
    runtime()?.block_on(async {
        let store = open(settings, false).await?;
        let Some(_alone) = store.claim_alone().await? else {
            anyhow::bail!(
                "a vespene server or worker is running on this database, and it holds the current key: \
                 stop every one of them, then run this again"
            );
        };
        let Some((name, entry)) = settings.plugins.sealing_secrets() else {
            anyhow::bail!("no secrets plugin is configured ([plugins.secrets]): there is nothing to rotate to");
        };
        let key_file = entry.params.get("key_file").and_then(|v| v.as_str()).map(std::path::PathBuf::from);
        let next = key_file.as_ref().map(|k| std::path::PathBuf::from(format!("{}.next", k.display())));
        if let (Some(key_file), Some(next)) = (&key_file, &next) {
            if next.exists() {
                anyhow::bail!(
                    "{} exists: an earlier rotation was interrupted. If `vespene` fails to read secrets with {}, \
                     the database was re-encrypted: move {} to {}; otherwise delete it, then run this again",
                    next.display(),
                    key_file.display(),
                    next.display(),
                    key_file.display()
                );
            }
        }
        // The plugin creates the new key file when it starts on a missing one.
        let mut fresh = entry.clone();
        if let Some(next) = &next {
            fresh.params.insert("key_file".into(), toml::Value::String(next.display().to_string()));
        }
        let only_first = crate::settings::PluginSettings {
            secrets: [(name.clone(), fresh)].into_iter().collect(),
            ..Default::default()
        };
        let sealer = crate::plugins::Registry::load(&only_first, &settings.plugin_path.dirs())?.secrets_chain();
        let changed = match store.reencrypt_secrets(&sealer).await {
            Ok(n) => n,
            Err(e) => {
                // Nothing was re-encrypted: the new key is not needed.
                if let Some(next) = &next {
                    let _ = std::fs::remove_file(next);
                }
                return Err(e.into());
            }
        };
        store.close().await;
        match (&key_file, &next) {
            (Some(key_file), Some(next)) => {
                let previous = format!("{}.previous-{}", key_file.display(), store::now().timestamp());
                std::fs::rename(key_file, &previous)?;
                std::fs::rename(next, key_file)?;
                println!(
                    "re-encrypted {changed} secret(s) with a new key in {} (secrets plugin '{name}'); the previous \
                     key is kept as {previous}. Copy the new key file to every worker host.",
                    key_file.display(),
                )
            }
            _ => println!("re-sealed {changed} secret(s) with secrets plugin '{name}'"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `vespene migrate`: applies pending schema migrations.
pub fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(settings, false).await?;
        let applied = store.migrate().await?;
        let version = store::migrate::current_version(store.pool()).await?;
        println!(
            "database {}: applied {applied} migration(s), schema version {version}",
            store::redact_url(&settings.database_url())
        );
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `vespene user create NAME [--superuser]`.
pub fn user(settings: &Settings, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let UserCommand::Create { name, superuser, password, email } = cmd;
    let password = match password.or_else(|| std::env::var("VESPENE_PASSWORD").ok()) {
        Some(p) => p,
        None => prompt_password(&name)?,
    };
    runtime()?.block_on(async {
        let store = open(settings, true).await?;
        let id = store
            .create_user(&NewUser {
                username: name.clone(),
                password,
                email,
                is_superuser: superuser,
                ..Default::default()
            })
            .await?;
        println!("created {}user '{name}' (id {id})", if superuser { "superuser " } else { "" });
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `vespene tutorial`: idempotent demo data.
pub fn tutorial(settings: &Settings) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(settings, true).await?;
        let report = store::tutorial::setup(&store).await?;
        if report.created.is_empty() {
            println!("tutorial data already present; nothing to do");
        } else {
            for c in &report.created {
                println!("created {c}");
            }
        }
        store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// `vespene cleanup`: applies the projects' keep rules (unless `keep_rules`
/// is false), then deletes builds and build roots older than the given ages.
/// Pinned, queued, running and stopping builds are never touched.
pub fn cleanup(
    settings: &Settings,
    builds_days: Option<u32>,
    roots_days: Option<u32>,
    keep_rules: bool,
) -> anyhow::Result<ExitCode> {
    if !keep_rules && builds_days.is_none() && roots_days.is_none() {
        anyhow::bail!(
            "nothing to do: without the keep rules, give --builds-older-than DAYS and/or --build-roots-older-than DAYS"
        );
    }
    let root = settings.build_root();
    runtime()?.block_on(async {
        let store = open(settings, true).await?;
        let result = async {
            if keep_rules {
                let report = retention::apply(&store, &settings.retention, &root, Budget::UNLIMITED).await?;
                println!("keep rules: removed the logs of {} build(s){}", report.logs.len(), id_list(&report.logs));
                println!(
                    "keep rules: removed {} build root(s) under {}{}",
                    report.roots.len(),
                    root.display(),
                    id_list(&report.roots)
                );
                for (id, why) in &report.failed_roots {
                    eprintln!("keep rules: cannot remove the build root of build {id}: {why}");
                }
                if settings.retention.audit_keep_days > 0 {
                    println!(
                        "audit log: removed {} event(s) older than {} day(s)",
                        report.audit, settings.retention.audit_keep_days
                    );
                }
            }
            if let Some(days) = builds_days {
                let cutoff = store::now() - chrono::Duration::days(days.into());
                let n = store.delete_builds_older_than(cutoff).await?;
                println!("deleted {n} finished, unpinned build(s) queued more than {days} day(s) ago");
            }
            if let Some(days) = roots_days {
                let kept: HashSet<i64> = store.builds_kept_from_cleanup().await?.into_iter().collect();
                let cutoff = SystemTime::now() - Duration::from_secs(u64::from(days) * 86_400);
                let n = remove_old_build_roots(&root, cutoff, &kept)?;
                println!(
                    "removed {n} build root(s) under {} older than {days} day(s) (pinned and active builds' kept)",
                    root.display()
                );
            }
            anyhow::Ok(())
        }
        .await;
        store.close().await;
        result
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `: #3, #4, #5`, or nothing for none.
fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = ids.iter().map(|id| format!("#{id}")).collect();
    format!(": {}", ids.join(", "))
}

/// Removes the directories directly under `root` last modified before
/// `cutoff`, except those named after a build in `kept`; answers how many.
/// A missing root is not an error.
pub fn remove_old_build_roots(root: &Path, cutoff: SystemTime, kept: &HashSet<i64>) -> anyhow::Result<usize> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(anyhow::anyhow!("cannot read build root {}: {e}", root.display())),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        // symlink_metadata: never follow a link out of the build root.
        let meta = entry.path().symlink_metadata()?;
        if !meta.is_dir() {
            continue;
        }
        if entry.file_name().to_str().and_then(|n| n.parse::<i64>().ok()).is_some_and(|id| kept.contains(&id)) {
            continue;
        }
        if meta.modified()? < cutoff {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn prompt_password(name: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no password: give --password, set VESPENE_PASSWORD, or run on a terminal to be prompted");
    }
    let first = read_hidden(&format!("password for {name}: "))?;
    let second = read_hidden("again: ")?;
    if first != second {
        anyhow::bail!("the passwords do not match");
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off.
fn read_hidden(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    #[cfg(unix)]
    let saved = unsafe {
        // SAFETY: plain termios calls on stdin with a zeroed, then filled, struct.
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            Some(saved)
        } else {
            None
        }
    };
    let mut line = String::new();
    let res = std::io::stdin().lock().read_line(&mut line);
    #[cfg(unix)]
    if let Some(saved) = saved {
        // SAFETY: restores the settings read above.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &saved);
        }
    }
    eprintln!();
    res?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_only_old_roots() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("1");
        let new = dir.path().join("2");
        let old_pinned = dir.path().join("3");
        std::fs::create_dir_all(old.join("sub")).unwrap();
        std::fs::create_dir_all(&new).unwrap();
        std::fs::create_dir_all(&old_pinned).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
        std::fs::File::open(&old).unwrap().set_modified(long_ago).unwrap();
        std::fs::File::open(&old_pinned).unwrap().set_modified(long_ago).unwrap();
        let cutoff = SystemTime::now() - Duration::from_secs(5 * 86_400);
        let kept: HashSet<i64> = [3].into_iter().collect();
        assert_eq!(remove_old_build_roots(dir.path(), cutoff, &kept).unwrap(), 1);
        assert!(!old.exists());
        assert!(new.exists());
        assert!(old_pinned.exists(), "a pinned or active build's root is kept whatever its age");
        assert_eq!(remove_old_build_roots(&dir.path().join("missing"), cutoff, &kept).unwrap(), 0);
    }
}
