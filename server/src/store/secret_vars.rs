//! Secret variables inside a `variables` JSON object.
//!
//! A variable whose value is an object with the single key `secret` is a
//! secret: `{"DB_PASS": {"secret": "value"}}`. In the database the value is
//! sealed by the secrets plugin chain (`{"secret": "$VESPENE$v1$..."}`); read back
//! it is `{"secret": "********"}` when a value is stored and `{"secret": null}`
//! when none is. Writing `"********"` keeps the stored value of that name.
//! Objects without secrets are stored and shown byte for byte as written.

use serde_json::{Map, Value};

use super::secrets::SecretCipher;
use super::validate::ValidationError;
use super::{Result, StoreError};

/// What a stored secret value reads as, and what keeps it on write.
pub const MASKED: &str = "********";

/// The tables whose `variables` column may hold secret variables.
pub const TABLES: [&str; 5] = ["projects", "worker_pools", "variable_sets", "pipelines", "stages"];

/// `Some(value)` when `v` is a secret variable (`{"secret": string|null}` or
/// any other one-key object named `secret`, which validation refuses).
pub fn secret_of(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(o) if o.len() == 1 => o.get("secret"),
        _ => None,
    }
}

fn parse(json: &str) -> Option<Map<String, Value>> {
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(o)) => Some(o),
        _ => None,
    }
}

fn has_secrets(o: &Map<String, Value>) -> bool {
    o.values().any(|v| secret_of(v).is_some())
}

/// The stored form as the API shows it: every secret value masked.
pub fn mask(stored: &str) -> String {
    let Some(mut o) = parse(stored).filter(has_secrets) else { return stored.to_string() };
    for v in o.values_mut() {
        if let Some(secret) = secret_of(v) {
            let shown = if secret.as_str().is_some_and(|s| !s.is_empty()) { Value::from(MASKED) } else { Value::Null };
            *v = serde_json::json!({ "secret": shown });
        }
    }
    Value::Object(o).to_string()
}

/// The input made ready to store: new secret values encrypted, `"********"`
/// replaced by the value stored under that name in `stored` (the row as it is
/// now; `None` on create). `field` names the field in errors.
pub fn seal(input: &str, stored: Option<&str>, secrets: &dyn SecretCipher, field: &str) -> Result<String> {
    let Some(mut o) = parse(input).filter(has_secrets) else { return Ok(input.to_string()) };
    let before = stored.and_then(parse).unwrap_or_default();
    for (name, v) in o.iter_mut() {
        let Some(secret) = secret_of(v) else { continue };
        let sealed = match secret {
            Value::Null => Value::Null,
            Value::String(s) if s == MASKED => match before.get(name).and_then(secret_of) {
                Some(Value::String(kept)) if secrets.is_sealed(kept) => Value::String(kept.clone()),
                _ => {
                    return Err(ValidationError::new(
                        field,
                        format!("secret variable '{name}': \"{MASKED}\" keeps the stored value, but none is stored"),
                    )
                    .into())
                }
            },
            Value::String(s) => Value::String(secrets.encrypt(s)?),
            other => {
                return Err(ValidationError::new(
                    field,
                    format!(
                    "secret variable '{name}': {{\"secret\": ...}} takes a string (or null for no value), got {other}"
                ),
                )
                .into())
            }
        };
        *v = serde_json::json!({ "secret": sealed });
    }
    Ok(Value::Object(o).to_string())
}

/// Stored secret values that are not encrypted yet (written before secret
/// variables existed, when `{"secret": ...}` was an ordinary object), encrypted.
/// `None` when nothing changes.
pub fn seal_plaintext(stored: &str, secrets: &dyn SecretCipher) -> Result<Option<String>> {
    let Some(mut o) = parse(stored).filter(has_secrets) else { return Ok(None) };
    let mut changed = false;
    for v in o.values_mut() {
        match secret_of(v) {
            Some(Value::String(s)) if !secrets.is_sealed(s) => {
                let sealed = secrets.encrypt(s)?;
                *v = serde_json::json!({ "secret": sealed });
                changed = true;
            }
            Some(Value::String(_) | Value::Null) | None => {}
            // Not a secret's shape: an old object variable; it becomes a string.
            Some(other) => {
                let sealed = secrets.encrypt(&other.to_string())?;
                *v = serde_json::json!({ "secret": sealed });
                changed = true;
            }
        }
    }
    Ok(changed.then(|| Value::Object(o).to_string()))
}

/// Every encrypted value re-encrypted from `old` to `new`; `None` when there is none.
pub fn reseal(stored: &str, old: &dyn SecretCipher, new: &dyn SecretCipher, what: &str) -> Result<Option<String>> {
    let Some(mut o) = parse(stored).filter(has_secrets) else { return Ok(None) };
    let mut changed = false;
    for (name, v) in o.iter_mut() {
        if let Some(Value::String(s)) = secret_of(v) {
            let plain = old
                .decrypt(s)
                .map_err(|e| StoreError::Config(format!("{what}, variable '{name}', cannot be decrypted: {e}")))?;
            *v = serde_json::json!({ "secret": new.encrypt(&plain)? });
            changed = true;
        }
    }
    Ok(changed.then(|| Value::Object(o).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `basic` secrets plugin with a fresh key.
    fn basic(dir: &tempfile::TempDir) -> crate::plugins::SecretsChain {
        let config = serde_json::json!({"key_file": dir.path().join("secret.key")}).to_string();
        let plugin = vespene_plugin_api::testkit::secrets_from::<vespene_basic::BasicSecrets>(&config).unwrap();
        crate::plugins::SecretsChain::single("basic", plugin)
    }

    #[test]
    fn sealed_masked_kept_and_refused() {
        let (dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sb = basic(&dir);
        let plain = r#"{"a": 1}"#;
        assert_eq!(seal(plain, None, &sb, "variables").unwrap(), plain, "no secrets: untouched");
        assert_eq!(mask(plain), plain);

        let sealed =
            seal(r#"{"a": 1, "DB_PASS": {"secret": "hunter2-long"}, "none": {"secret": null}}"#, None, &sb, "v")
                .unwrap();
        assert!(!sealed.contains("hunter2-long") && sealed.contains("$VESPENE$v1$"), "{sealed}");
        let shown = mask(&sealed);
        assert_eq!(
            serde_json::from_str::<Value>(&shown).unwrap(),
            serde_json::json!({"a": 1, "DB_PASS": {"secret": "********"}, "none": {"secret": null}})
        );
        // Writing back what was shown keeps the value.
        let again = seal(&shown, Some(&sealed), &sb, "v").unwrap();
        let v: Value = serde_json::from_str(&again).unwrap();
        assert_eq!(sb.decrypt(v["DB_PASS"]["secret"].as_str().unwrap()).unwrap(), "hunter2-long");
        // "********" with nothing stored, and a bad shape, name the variable.
        let err = seal(r#"{"X": {"secret": "********"}}"#, None, &sb, "variables").unwrap_err().to_string();
        assert!(err.contains("'X'") && err.contains("none is stored"), "{err}");
        let err = seal(r#"{"Y": {"secret": 5}}"#, None, &sb, "variables").unwrap_err().to_string();
        assert!(err.contains("'Y'") && err.contains("takes a string"), "{err}");
        // Rotation.
        let other = basic(&other_dir);
        let rotated = reseal(&sealed, &sb, &other, "projects 1").unwrap().unwrap();
        let v: Value = serde_json::from_str(&rotated).unwrap();
        assert_eq!(other.decrypt(v["DB_PASS"]["secret"].as_str().unwrap()).unwrap(), "hunter2-long");
        // Old clear values are encrypted once.
        let old = seal_plaintext(r#"{"K": {"secret": "clear-value"}}"#, &sb).unwrap().unwrap();
        assert!(!old.contains("clear-value"));
        assert_eq!(seal_plaintext(&old, &sb).unwrap(), None);
    }
}
