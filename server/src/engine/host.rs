//! The callbacks a build lends its plugins: output into the build's log,
//! the stop/timeout token, the command runner, and the secret decrypter that
//! reads stored secrets on demand (and masks them in the log from then on).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RSlice, RStr, RString};
use vespene_plugin_api::abi::*;
use vespene_plugin_api::{CommandRequest, StreamName};

use super::output::BuildLog;
use crate::store::{Id, Store};

/// Why a build is being stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Someone asked for it.
    Requested,
    /// It ran out of time.
    TimedOut,
}

/// The stop/timeout state of one build.
pub struct CancelState {
    requested: AtomicBool,
    deadline: Option<Instant>,
}

impl CancelState {
    /// Nothing asked yet; times out at `deadline`, if any.
    pub fn new(deadline: Option<Instant>) -> Arc<Self> {
        Arc::new(CancelState { requested: AtomicBool::new(false), deadline })
    }

    /// Marks the build as stopped by request.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether and why the build must stop now.
    pub fn reason(&self) -> Option<Stop> {
        if self.requested.load(Ordering::SeqCst) {
            Some(Stop::Requested)
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Stop::TimedOut)
        } else {
            None
        }
    }
}

/// A stored secret, named without its value: `secret://ssh_key/ID/private_key`,
/// `secret://ssh_key/ID/passphrase`, `secret://login/ID/password`.
pub fn secret_handle(kind: &str, id: Id, field: &str) -> String {
    format!("secret://{kind}/{id}/{field}")
}

/// The host side of one build.
pub struct BuildHost {
    pub(super) log: Arc<BuildLog>,
    pub(super) cancel: Arc<CancelState>,
    pub(super) store: Store,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) build_root: std::path::PathBuf,
}

impl BuildHost {
    /// The callbacks for one plugin call.
    pub fn host(&self) -> Host<'_> {
        Host {
            output: OutputSink_TO::from_ptr(self, TD_Opaque),
            cancel: CancelToken_TO::from_ptr(self, TD_Opaque),
            commands: CommandRunner_TO::from_ptr(self, TD_Opaque),
            secrets: SecretDecrypter_TO::from_ptr(self, TD_Opaque),
        }
    }

    fn reveal(&self, handle: &str) -> Result<String, String> {
        let parts: Vec<&str> = handle.strip_prefix("secret://").unwrap_or("").split('/').collect();
        let [kind, id, field] = parts.as_slice() else {
            return Err(format!("'{handle}' is not a secret handle"));
        };
        let id: Id = id.parse().map_err(|_| format!("'{handle}' is not a secret handle"))?;
        let store = self.store.clone();
        let (kind, field) = (kind.to_string(), field.to_string());
        // Plugins call this from the blocking pool, never from the runtime itself.
        let value = self.runtime.block_on(async move {
            match (kind.as_str(), field.as_str()) {
                ("ssh_key", "private_key") => store.reveal_ssh_key(id).await.map(|k| k.private_key),
                ("ssh_key", "passphrase") => store.reveal_ssh_key(id).await.map(|k| k.unlock_password),
                ("login", "password") => store.reveal_service_login_password(id).await,
                _ => Ok(None),
            }
        });
        match value {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(format!("no secret stored for {handle}")),
            Err(e) => Err(format!("cannot read {handle}: {e}")),
        }
    }
}

impl OutputSink for BuildHost {
    fn emit(&self, stream: Stream, lines: RSlice<'_, RStr<'_>>) {
        self.log.push_lines(stream, lines.iter().map(|l| l.as_str().to_owned()).collect());
    }

    fn set_variable(&self, name: RStr<'_>, value: RStr<'_>) -> RResult<(), RString> {
        self.log.set_output_variable(name.as_str(), value.as_str()).map_err(RString::from).into()
    }
}

impl CancelToken for BuildHost {
    fn is_cancelled(&self) -> bool {
        self.cancel.reason().is_some()
    }

    fn remaining_ms(&self) -> i64 {
        match self.cancel.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis() as i64,
            None => -1,
        }
    }
}

impl CommandRunner for BuildHost {
    fn run(&self, request: RStr<'_>) -> RResult<CommandOutcome, RString> {
        let request: CommandRequest = match serde_json::from_str(request.as_str()) {
            Ok(r) => r,
            Err(e) => return RErr(format!("invalid command request: {e}").into()),
        };
        for secret in &request.mask {
            self.log.add_mask(secret);
        }
        let stream = match request.stream {
            StreamName::Output => Stream::Output,
            StreamName::Message => Stream::Message,
        };
        if request.log_command {
            self.log.message(&format!("running: {}", vespene_plugin_api::runner::describe(&request)));
        }
        // Waiting a moment for a write's next line only pays when a secret
        // printed across lines must be caught; otherwise no line waits.
        let gap = if self.log.masks_anything() { vespene_plugin_api::runner::WRITE_GAP_MS } else { 0 };
        match vespene_plugin_api::runner::run_batches(
            &request,
            Some(&self.build_root),
            gap,
            self.log.max_line(),
            |lines| self.log.push_lines(stream, lines),
            &|| self.cancel.reason().is_some(),
        ) {
            Ok((outcome, _)) => ROk(outcome),
            Err(e) => RErr(e.into()),
        }
    }
}

impl SecretDecrypter for BuildHost {
    fn decrypt(&self, stored: RStr<'_>) -> RResult<RString, RString> {
        let stored = stored.as_str();
        if !stored.starts_with("secret://") {
            return ROk(stored.into());
        }
        match self.reveal(stored) {
            Ok(plain) => {
                self.log.add_mask(&plain);
                ROk(plain.into())
            }
            Err(e) => RErr(e.into()),
        }
    }
}
