//! A host for plugin calls made outside a build (`vespene plugins try`):
//! lines go to standard output, commands run unisolated in the current
//! directory, and secrets are taken as given.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RErr, ROk, RResult, RSlice, RStr, RString};
use vespene_plugin_api::abi::*;
use vespene_plugin_api::CommandRequest;

/// Prints what plugins emit, prefixed by stream.
#[derive(Default)]
pub struct ConsoleHost {
    cancelled: AtomicBool,
}

impl ConsoleHost {
    /// The callbacks for one call.
    pub fn host(&self) -> Host<'_> {
        Host {
            output: OutputSink_TO::from_ptr(self, TD_Opaque),
            cancel: CancelToken_TO::from_ptr(self, TD_Opaque),
            commands: CommandRunner_TO::from_ptr(self, TD_Opaque),
            secrets: SecretDecrypter_TO::from_ptr(self, TD_Opaque),
        }
    }

    /// Stops running commands.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
}

fn print_line(stream: Stream, text: &str) {
    let tag = match stream {
        Stream::Output => "output",
        Stream::Message => "message",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[{tag}] {text}");
}

impl OutputSink for ConsoleHost {
    fn emit(&self, stream: Stream, lines: RSlice<'_, RStr<'_>>) {
        for line in lines.iter() {
            print_line(stream, line.as_str());
        }
    }

    fn set_variable(&self, name: RStr<'_>, value: RStr<'_>) -> RResult<(), RString> {
        if let Err(e) = vespene_plugin_api::check_variable_name(name.as_str()) {
            return RErr(e.into());
        }
        print_line(Stream::Message, &format!("output variable {} = {}", name.as_str(), value.as_str()));
        ROk(())
    }
}

impl CancelToken for ConsoleHost {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn remaining_ms(&self) -> i64 {
        -1
    }
}

impl CommandRunner for ConsoleHost {
    fn run(&self, request: RStr<'_>) -> RResult<CommandOutcome, RString> {
        let request: CommandRequest = match serde_json::from_str(request.as_str()) {
            Ok(r) => r,
            Err(e) => return RErr(format!("invalid command request: {e}").into()),
        };
        let stream = match request.stream {
            vespene_plugin_api::StreamName::Output => Stream::Output,
            vespene_plugin_api::StreamName::Message => Stream::Message,
        };
        if request.log_command {
            print_line(Stream::Message, &format!("running: {}", vespene_plugin_api::runner::describe(&request)));
        }
        match vespene_plugin_api::runner::run(&request, None, |line| print_line(stream, line), &|| self.is_cancelled())
        {
            Ok((outcome, _)) => ROk(outcome),
            Err(e) => RErr(e.into()),
        }
    }
}

impl SecretDecrypter for ConsoleHost {
    fn decrypt(&self, stored: RStr<'_>) -> RResult<RString, RString> {
        ROk(stored.into())
    }
}
