//! The `vespene` command line: argument parsing (clap) and one function per
//! subcommand. Subcommands load settings and plugins through the same code the
//! server uses, so `plugins list` and `plugins check` tell the truth about what
//! `serve` will do.

pub mod alloc;
mod engine_cmd;
mod new_plugin;
mod plugins_cmd;
mod store_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use vespene_plugin_api::Kind;

use crate::plugins::Registry;
use crate::settings::{LoadOptions, Settings};

/// Vespene: a self-hosted build and automation server.
#[derive(Debug, Parser)]
#[command(name = "vespene", version, about)]
pub struct Cli {
    /// A settings file read after /etc/vespene/settings.toml and settings.d.
    #[arg(long, global = true, env = "VESPENE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the web server (and, by default, embedded workers).
    Serve,
    /// Inspect and try plugins.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Print the effective settings as TOML.
    Settings,
    /// Apply pending database migrations.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(store_cmd::UserCommand),
    /// Manage the key that encrypts stored secrets.
    #[command(subcommand)]
    Secrets(store_cmd::SecretsCommand),
    /// Create the tutorial's demo objects (safe to run again).
    Tutorial,
    /// Run a standalone worker against the configured database.
    Worker {
        /// Pools to serve (default: every pool).
        pools: Vec<String>,
        /// Stop after this many builds.
        #[arg(long)]
        max_builds: Option<u64>,
        /// Run exactly this queued build, then stop.
        #[arg(long)]
        build_id: Option<i64>,
        /// Builds run at once.
        #[arg(long, default_value_t = 1)]
        slots: usize,
        /// This worker's unique name (default: the host name and process id).
        /// Containers sharing the host's name and all being process 1 need one
        /// each.
        #[arg(long)]
        name: Option<String>,
        /// Serve this worker's /metrics (and /healthz) on this address, for
        /// the `[metrics] token` (the builds it runs are counted here only).
        #[arg(long, value_name = "ADDRESS")]
        metrics_listen: Option<String>,
    },
    /// Start a project (by name or id).
    Start {
        /// The project's name or id.
        project: String,
        /// Launch answers as a JSON object.
        #[arg(long)]
        answers: Option<String>,
        /// Wait for the build to finish; the exit code says whether it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Import an organization's repositories now (by name or id).
    Import {
        /// The organization's name or id.
        organization: String,
        /// Import even when it is not due.
        #[arg(long)]
        force: bool,
    },
    /// Stop a queued or running build.
    Stop {
        /// The build id.
        build: i64,
    },
    /// Look at builds.
    #[command(subcommand)]
    Build(engine_cmd::BuildCommand),
    /// Apply the projects' keep rules now (remove the build logs, and the
    /// build roots under this host's build_root, that they no longer keep),
    /// then delete builds and build roots older than the given ages. Pinned,
    /// queued and running builds are never touched. See docs/retention.md.
    Cleanup {
        /// Also delete whole finished builds (record and log) queued more than DAYS days ago.
        #[arg(long, value_name = "DAYS")]
        builds_older_than: Option<u32>,
        /// Also delete build root directories last modified more than DAYS days ago.
        #[arg(long, value_name = "DAYS")]
        build_roots_older_than: Option<u32>,
        /// Skip the keep rules: only the age flags.
        #[arg(long)]
        no_keep_rules: bool,
    },
}

/// `vespene plugins ...`
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Load every configured plugin and list them.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load one .so file and report what it provides, or why it cannot load.
    Check {
        /// The plugin library.
        path: PathBuf,
        /// On a layout mismatch, print abi_stable's full report.
        #[arg(long)]
        detail: bool,
    },
    /// Create a new plugin crate from the plugin template.
    New {
        /// The plugin's name (lowercase letters, digits, dashes).
        name: String,
        /// Its kind: trigger, scm, isolation, output, authorization,
        /// organization, variables, secrets or autoscaler.
        #[arg(long, value_parser = parse_kind)]
        kind: Kind,
        /// Where to create it (default: ./vespene-plugin-NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on the vespene-plugin-api crate in this directory (a
        /// Vespene checkout's `plugin-api`) instead of the copy of the
        /// interface vendored into the new crate (the default).
        #[arg(long)]
        api_path: Option<PathBuf>,
    },
    /// Call a configured trigger or output plugin (SECTION.NAME), or a whole section in order (SECTION), outside a build.
    Try {
        /// SECTION.NAME (e.g. success_triggers.publish) or SECTION (e.g. success_triggers).
        entry: String,
        /// For output plugins: the line to pass through (repeatable).
        #[arg(long = "line", default_value = "hello from vespene")]
        lines: Vec<String>,
        /// How many times to call it (each call is independent).
        #[arg(long, default_value_t = 1)]
        times: u32,
    },
}

/// Runs the command line and answers the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    tune_allocator();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Allocator tuning for a long-running server on glibc, which serves the
/// large blocks of the server's allocator ([`alloc`]) and every allocation
/// of the C code it links (SQLite, zstd).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters, before any other thread exists.
        unsafe {
            // Blocks of a MiB or more are mapped on their own and given back to
            // the system when freed. glibc otherwise raises that threshold to the
            // largest block freed so far and keeps such blocks in per-thread
            // arenas: a flood of logins (argon2 takes 19 MiB each) left the
            // server at gigabytes it kept. A fixed threshold also stops glibc's
            // dynamic adjustment.
            libc::mallopt(libc::M_MMAP_THRESHOLD, alloc::LARGE_BLOCK as libc::c_int);
            // glibc's arenas stay at their default (eight per core): every
            // SQLite connection runs on its own thread, and with one arena per
            // core those threads queued on the arenas' locks (a quarter of the
            // API's time under load, docs/benchmarks.md) to save 0.6 MiB.
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VESPENE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Plugins(PluginsCommand::Check { path, detail }) => Ok(plugins_cmd::check(&path, detail)),
        Command::Plugins(PluginsCommand::New { name, kind, dir, api_path }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(format!("vespene-plugin-{name}")));
            new_plugin::create(&name, kind, &dir, api_path.as_deref()).map_err(anyhow::Error::msg)?;
            println!(
                "created {} ({kind} plugin '{name}'): cd there, then `cargo test` and `cargo build --release`",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        command => {
            let (settings, _sources) = Settings::load(&LoadOptions::from_process(cli.config))?;
            match command {
                Command::Serve => {
                    let registry = load_plugins(&settings)?;
                    crate::web::serve(settings, registry)?;
                    Ok(ExitCode::SUCCESS)
                }
                Command::Settings => {
                    print!("{}", toml::to_string_pretty(&settings)?);
                    Ok(ExitCode::SUCCESS)
                }
                Command::Plugins(PluginsCommand::List { json }) => {
                    plugins_cmd::list(&load_plugins(&settings)?, json)?;
                    Ok(ExitCode::SUCCESS)
                }
                Command::Plugins(PluginsCommand::Try { entry, lines, times }) => {
                    Ok(plugins_cmd::try_entry(&load_plugins(&settings)?, &entry, &lines, times))
                }
                Command::Worker { pools, max_builds, build_id, slots, name, metrics_listen } => {
                    let mut config = crate::engine::WorkerConfig::named(pools, slots);
                    if let Some(name) = name {
                        config.name = name;
                    }
                    config.max_builds = max_builds;
                    config.build_id = build_id;
                    engine_cmd::worker(&settings, config, metrics_listen.as_deref())
                }
                Command::Start { project, answers, wait } => {
                    engine_cmd::start(&settings, &project, answers.as_deref(), wait)
                }
                Command::Stop { build } => engine_cmd::stop(&settings, build),
                Command::Import { organization, force } => engine_cmd::import(&settings, &organization, force),
                Command::Build(cmd) => engine_cmd::build(&settings, cmd),
                Command::Migrate => store_cmd::migrate(&settings),
                Command::User(cmd) => store_cmd::user(&settings, cmd),
                Command::Secrets(cmd) => store_cmd::secrets(&settings, cmd),
                Command::Tutorial => store_cmd::tutorial(&settings),
                Command::Cleanup { builds_older_than, build_roots_older_than, no_keep_rules } => {
                    store_cmd::cleanup(&settings, builds_older_than, build_roots_older_than, !no_keep_rules)
                }
                Command::Plugins(PluginsCommand::Check { .. } | PluginsCommand::New { .. }) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// Loads the configured plugins; the server refuses to start without them.
pub fn load_plugins(settings: &Settings) -> anyhow::Result<Registry> {
    Ok(Registry::load(&settings.plugins, &settings.plugin_path.dirs())?)
}

/// Loads the secrets plugins alone, for commands that open the store but run
/// no build: the chain the store seals and reads secret values with.
pub fn load_secrets(settings: &Settings) -> anyhow::Result<std::sync::Arc<crate::plugins::SecretsChain>> {
    let only_secrets =
        crate::settings::PluginSettings { secrets: settings.plugins.secrets.clone(), ..Default::default() };
    let registry = Registry::load(&only_secrets, &settings.plugin_path.dirs())?;
    Ok(std::sync::Arc::new(registry.secrets_chain()))
}

fn parse_kind(name: &str) -> Result<Kind, String> {
    Kind::from_name(name).ok_or_else(|| {
        let all: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown plugin kind '{name}' (one of: {})", all.join(", "))
    })
}
