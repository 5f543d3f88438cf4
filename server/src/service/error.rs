//! What can go wrong in an operation, as the caller is told: a kind of
//! failure, one line for a person, and the field at fault when there is one.

use crate::engine::EngineError;
use crate::store::StoreError;

/// The kind of a failure; the web tier picks the HTTP status from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The input is wrong (a field, a filter, a body).
    Invalid,
    /// Nobody is logged in, or the credentials are unknown.
    Unauthenticated,
    /// The caller may not do this.
    Forbidden,
    /// No such thing (or none the caller may know of).
    NotFound,
    /// The state of things does not allow it now (a duplicate name, a build
    /// still running, a replayed delivery).
    Conflict,
    /// A source the operation needs does not answer.
    Unavailable,
    /// A fault inside the server.
    Internal,
}

/// A failed operation.
#[derive(Debug)]
pub struct Error {
    /// What kind of failure.
    pub failure: Failure,
    /// What went wrong, for a person.
    pub message: String,
    /// The field at fault, when there is one.
    pub field: Option<String>,
}

impl Error {
    /// A failure of `failure` kind.
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Error { failure, message: message.into(), field: None }
    }

    /// The input is malformed.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(Failure::Invalid, message)
    }

    /// The input is wrong in `field`.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Error { failure: Failure::Invalid, message: message.into(), field: Some(field.to_string()) }
    }

    /// Who is asking?
    pub fn unauthenticated() -> Self {
        Self::new(Failure::Unauthenticated, "log in or send an API token (Authorization: Bearer ...)")
    }

    /// Not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Failure::Forbidden, message)
    }

    /// No such thing.
    pub fn not_found(what: &str) -> Self {
        Self::new(Failure::NotFound, format!("{what} not found"))
    }

    /// Not now.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Failure::Conflict, message)
    }

    /// A fault inside the server: the cause goes to the log with a random
    /// id, the caller gets the id alone (no database text, paths or other
    /// internals in an answer).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        use rand::Rng;
        let id = format!("{:016x}", rand::thread_rng().gen::<u64>());
        tracing::error!(error_id = %id, error = %cause, "internal error");
        Self::new(
            Failure::Internal,
            format!("internal error (id {id}): the server's log has the details under this id"),
        )
    }

    /// Whether this is a refusal by the authorization chain (or another `Forbidden`).
    pub fn is_forbidden(&self) -> bool {
        self.failure == Failure::Forbidden
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Validation(v) => {
                Error { failure: Failure::Invalid, message: v.to_string(), field: Some(v.field.clone()) }
            }
            StoreError::NotFound { .. } => Error::new(Failure::NotFound, e.to_string()),
            StoreError::Conflict(_) | StoreError::Reference(_) | StoreError::Transition { .. } => {
                Error::conflict(e.to_string())
            }
            other => Error::internal(other),
        }
    }
}

impl From<EngineError> for Error {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) => s.into(),
            EngineError::Invalid(m) => Error::bad(m),
            // The engine's own failure message is meant for the caller.
            EngineError::Failed(m) => Error::new(Failure::Internal, m),
        }
    }
}
