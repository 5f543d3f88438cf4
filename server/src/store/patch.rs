//! A client's change to an object, typed: each object kind's `<Kind>Patch`
//! (made by `#[derive(Patch)]` on the kind's struct) holds one `Option` per
//! field a client may set. A create applies it to the kind's defaults, an
//! update to the stored object; the fields the server keeps are not in it,
//! so no request can set them.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::ValidationError;

/// A typed change to an object of type [`Patch::Object`].
pub trait Patch: Sized {
    /// The object it changes.
    type Object;
    /// The fields a client may set, in the object's order.
    const FIELDS: &'static [&'static str];
    /// The change a request's JSON fields ask for. A field the server keeps is
    /// refused as read-only, any other unknown one as unknown, and a value of
    /// the wrong type naming its path; `what` names the kind in messages.
    fn from_fields(body: Map<String, Value>, what: &str) -> Result<Self, ValidationError>;
    /// Sets the fields the change holds, leaving the others as they are.
    fn apply(self, to: &mut Self::Object);
}

/// An object kind changed by a typed [`Patch`].
pub trait Patchable: Sized {
    /// Its change.
    type Patch: Patch<Object = Self>;
    /// Records who created it, for kinds that keep their creator.
    fn set_creator(&mut self, user: i64);
}

/// Reads the value sent for field `key` as `T` (the field's type, read the
/// way the object reads it), naming the path at fault when it is not one.
pub fn field_value<T: DeserializeOwned>(key: &str, value: Value, what: &str) -> Result<T, ValidationError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match inner.as_str() {
            "." => key.to_string(),
            path if path.starts_with('[') => format!("{key}{path}"),
            path => format!("{key}.{path}"),
        };
        let message = format!("field '{field}' of {what}: {}", e.inner());
        ValidationError { field, message }
    })
}

/// The error for a field no patch of the kind has: read-only when the
/// server keeps it, else unknown, listing those that may be sent.
pub fn refused(key: &str, what: &str, kept: &[&str], allowed: &[&str]) -> ValidationError {
    let message = if kept.contains(&key) {
        format!("field '{key}' of {what} is read-only")
    } else {
        format!("unknown field '{key}' for {what} (allowed: {})", allowed.join(", "))
    };
    ValidationError::new(key, message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{Project, ProjectPatch, Secret};

    fn patch(body: Value) -> Result<ProjectPatch, ValidationError> {
        let Value::Object(body) = body else { panic!("a test body is an object") };
        ProjectPatch::from_fields(body, "project")
    }

    #[test]
    fn a_patch_sets_only_what_it_holds() {
        let mut project = Project { name: "before".into(), timeout: 30, ..Project::default() };
        patch(json!({ "description": "now", "variables": { "a": 1 }, "ssh_key_ids": [3, 4], "pipeline_id": null }))
            .unwrap()
            .apply(&mut project);
        assert_eq!(project.name, "before");
        assert_eq!(project.timeout, 30);
        assert_eq!(project.description, "now");
        assert_eq!(project.variables, r#"{"a":1}"#);
        assert_eq!(project.ssh_key_ids, vec![3, 4]);
        assert_eq!(project.pipeline_id, None);
    }

    #[test]
    fn json_documents_and_secrets_read_as_the_object_reads_them() {
        let mut project = Project { webhook_token: Secret::Stored, ..Project::default() };
        patch(json!({ "launch_questions": "[{\"name\": \"q\"}]", "webhook_token": "********" }))
            .unwrap()
            .apply(&mut project);
        assert_eq!(project.launch_questions, r#"[{"name": "q"}]"#, "the deprecated string form is the text itself");
        assert_eq!(project.webhook_token, Secret::Stored, "the mask keeps the stored secret");
    }

    #[test]
    fn kept_unknown_and_mistyped_fields_are_refused_by_name() {
        let e = patch(json!({ "last_build_id": 4 })).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("last_build_id", "field 'last_build_id' of project is read-only")
        );
        assert_eq!(patch(json!({ "id": 4 })).unwrap_err().message, "field 'id' of project is read-only");
        assert_eq!(patch(json!({ "created_by": 4 })).unwrap_err().field, "created_by");
        let e = patch(json!({ "colour": "red" })).unwrap_err();
        assert!(
            e.message.starts_with("unknown field 'colour' for project (allowed: name, description, "),
            "{}",
            e.message
        );
        let e = patch(json!({ "ssh_key_ids": [1, "two"] })).unwrap_err();
        assert_eq!(e.field, "ssh_key_ids[1]");
        assert!(
            e.message.starts_with("field 'ssh_key_ids[1]' of project: invalid type: string \"two\""),
            "{}",
            e.message
        );
        let e = patch(json!({ "name": null })).unwrap_err();
        assert_eq!(e.field, "name");
        assert!(!ProjectPatch::FIELDS.iter().any(|f| <Project as crate::store::row::FromRow>::KEPT.contains(f)));
    }
}
