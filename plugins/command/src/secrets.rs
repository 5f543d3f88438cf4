//! The `command` secrets plugin: keeps secret values outside the database by
//! running commands the admin gives to store and fetch them (`pass`,
//! `vault kv`, a cloud CLI, or a script of one's own). The database holds only
//! `$VESPENE$cmd1$<id>`, a random 128-bit id.
//!
//! Both commands are argument lists run without a shell, with `{id}`
//! replaced by the value's id (also in the environment as
//! `VESPENE_SECRET_ID`), so nothing in a value or an id can inject anything.
//! `store` gets the value on standard input, followed by one newline; `fetch`
//! prints it, and one trailing newline is removed. A command that exits
//! non-zero, or runs past `timeout_seconds` (default 30), fails the read or
//! write, naming the command and its last line of standard error.
//!
//! ```toml
//! [plugins.secrets.pass]
//! library = "command"
//! store = ["pass", "insert", "--multiline", "--force", "vespene/{id}"]
//! fetch = ["pass", "show", "vespene/{id}"]
//! seal = true                # new values go here; `basic` still reads old ones
//! ```

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vespene_plugin_api::serde_json::Value;
use vespene_plugin_api::{params, Kind, PluginResult, Secrets};

/// The header of every value this plugin stores.
pub const HEADER: &str = "$VESPENE$cmd1$";
const PARAMETERS: &[&str] = &["store", "fetch", "timeout_seconds"];
const DEFAULT_TIMEOUT_SECONDS: u64 = 30;

/// The `command` secrets plugin.
#[derive(Debug)]
pub struct CommandSecrets {
    store: Vec<String>,
    fetch: Vec<String>,
    timeout: Duration,
}

fn argv(params: &vespene_plugin_api::serde_json::Map<String, Value>, name: &str) -> PluginResult<Vec<String>> {
    let bad = || format!("parameter '{name}' must be a non-empty list of strings (the command and its arguments)");
    let list = params.get(name).ok_or_else(|| format!("parameter '{name}' is required"))?;
    let list = list.as_array().filter(|l| !l.is_empty()).ok_or_else(bad)?;
    let argv: Vec<String> =
        list.iter().map(|v| v.as_str().map(String::from).ok_or_else(bad)).collect::<Result<_, _>>()?;
    if !argv.iter().any(|a| a.contains("{id}")) {
        return Err(format!("parameter '{name}' must name the value's id somewhere as {{id}}"));
    }
    Ok(argv)
}

/// 128 random bits, in hex.
fn new_id() -> PluginResult<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read random bytes for an id: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl CommandSecrets {
    /// Runs `template` for `id`, feeding `input`; answers standard output.
    fn run(&self, which: &str, template: &[String], id: &str, input: Option<&str>) -> PluginResult<String> {
        let args: Vec<String> = template.iter().map(|a| a.replace("{id}", id)).collect();
        let fail = |what: String| format!("`{which}` command ({}): {what}", template[0]);
        let mut child = Command::new(&args[0])
            .args(&args[1..])
            .env("VESPENE_SECRET_ID", id)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot start: {e}")))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(input.as_bytes()).and_then(|()| stdin.write_all(b"\n")).map_err(|e| fail(e.to_string()))?;
        }
        // Read both pipes on threads so a chatty command cannot fill one and stall.
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            stdout.read_to_end(&mut buf).map(|_| buf)
        });
        let err = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            match child.try_wait().map_err(|e| fail(e.to_string()))? {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!("still running after {} s; stopped", self.timeout.as_secs())));
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        let stdout =
            out.join().map_err(|_| fail("reading its output failed".into()))?.map_err(|e| fail(e.to_string()))?;
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            let stderr = String::from_utf8_lossy(&stderr);
            let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no message)").trim();
            return Err(fail(format!("{status}: {last}")));
        }
        let mut text = String::from_utf8(stdout).map_err(|_| fail("printed a value that is not UTF-8".into()))?;
        if text.ends_with('\n') {
            text.pop();
        }
        Ok(text)
    }
}

impl Secrets for CommandSecrets {
    fn new(config: &Value) -> PluginResult<Self> {
        let params = params::table(config, Kind::Secrets, "command", PARAMETERS)?;
        let timeout = match params.get("timeout_seconds") {
            None => DEFAULT_TIMEOUT_SECONDS,
            Some(v) => v.as_u64().filter(|n| *n > 0).ok_or("parameter 'timeout_seconds' must be a positive integer")?,
        };
        Ok(CommandSecrets {
            store: argv(params, "store")?,
            fetch: argv(params, "fetch")?,
            timeout: Duration::from_secs(timeout),
        })
    }

    fn recognizes(&self, stored: &str) -> bool {
        stored.strip_prefix(HEADER).is_some_and(is_id)
    }

    fn cloak(&self, plain: &str) -> PluginResult<String> {
        let id = new_id()?;
        self.run("store", &self.store, &id, Some(plain))?;
        Ok(format!("{HEADER}{id}"))
    }

    fn decloak(&self, stored: &str) -> PluginResult<String> {
        let id = stored.strip_prefix(HEADER).filter(|id| is_id(id)).ok_or("not a value of this plugin")?;
        self.run("fetch", &self.fetch, id, None)
    }
}

fn is_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use vespene_plugin_api::serde_json::{json, Value};
    use vespene_plugin_api::testkit;

    use super::*;

    /// A tiny secret store: one file per id in `dir`.
    fn script_store(dir: &std::path::Path) -> (Value, String) {
        let script = dir.join("store.sh");
        let body = format!(
            "#!/bin/sh\nset -e\ncase \"$1\" in\n  put) cat > \"{0}/$2\" ;;\n  get) cat \"{0}/$2\" ;;\n  *) echo \"unknown verb $1\" >&2; exit 2 ;;\nesac\n",
            dir.display()
        );
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = script.display().to_string();
        (json!({"store": [script, "put", "{id}"], "fetch": [script, "get", "{id}"]}), script)
    }

    #[test]
    fn values_live_in_the_script_store_and_the_database_holds_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = script_store(dir.path());
        let plugin = testkit::secrets::<CommandSecrets>(config).unwrap();
        for value in ["hunter2", "two\nlines\n", "$(touch /tmp/x) `id` ' \"", ""] {
            let stored = plugin.cloak(value).unwrap();
            assert!(stored.starts_with(HEADER) && !stored.contains("hunter2"), "{stored}");
            assert!(plugin.recognizes(&stored));
            let id = stored.strip_prefix(HEADER).unwrap();
            assert_eq!(std::fs::read_to_string(dir.path().join(id)).unwrap(), format!("{value}\n"));
            assert_eq!(plugin.decloak(&stored).unwrap(), value);
        }
        assert!(!plugin.recognizes("$VESPENE$v1$abc"));
        assert!(!plugin.recognizes(&format!("{HEADER}../../etc/passwd")));
    }

    #[test]
    fn failures_name_the_command_and_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let (config, script) = script_store(dir.path());
        let plugin = testkit::secrets::<CommandSecrets>(config).unwrap();
        let missing = format!("{HEADER}{}", "0".repeat(32));
        let err = plugin.decloak(&missing).unwrap_err();
        assert!(err.starts_with(&format!("`fetch` command ({script}): exit status: 1: cat: ")), "{err}");

        let slow = json!({"store": ["sh", "-c", "sleep 5", "{id}"], "fetch": ["true", "{id}"], "timeout_seconds": 1});
        let plugin = testkit::secrets::<CommandSecrets>(slow).unwrap();
        let err = plugin.cloak("s3cret-value").unwrap_err();
        assert_eq!(err, "`store` command (sh): still running after 1 s; stopped");
    }

    #[test]
    fn bad_configuration_is_named() {
        for (config, expected) in [
            (json!({"fetch": ["x", "{id}"]}), "parameter 'store' is required"),
            (json!({"store": "pass insert", "fetch": ["x", "{id}"]}), "parameter 'store' must be a non-empty list"),
            (json!({"store": ["x", "{id}"], "fetch": ["pass", "show"]}), "parameter 'fetch' must name the value's id"),
            (
                json!({"store": ["x", "{id}"], "fetch": ["x", "{id}"], "timeout_seconds": 0}),
                "parameter 'timeout_seconds'",
            ),
            (json!({"store": ["x", "{id}"], "fetch": ["x", "{id}"], "shell": true}), "unknown parameter 'shell'"),
        ] {
            let err = testkit::secrets::<CommandSecrets>(config.clone()).err().unwrap();
            assert!(err.starts_with(expected), "{config}: {err}");
        }
    }
}
