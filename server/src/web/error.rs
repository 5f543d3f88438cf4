//! API errors: a status code and one line for a person, as JSON
//! (`{"error": "...", "field": "..."}`).

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::service::{Error, Failure};

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
    /// The field at fault, when there is one.
    pub field: Option<String>,
}

impl ApiError {
    /// An error with a status and a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), field: None }
    }

    /// 400: the request is malformed.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 400 naming a field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), field: Some(field.to_string()) }
    }

    /// 401: who are you?
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "log in or send an API token (Authorization: Bearer ...)")
    }

    /// 403: not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// 404: no such thing.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    /// 500 for a failure inside the server: the cause goes to the log with a
    /// random id, the client gets the id alone (no database text, paths or
    /// other internals in an answer).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::internal(cause).into()
    }

    /// The response for this error.
    pub fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match e.failure {
            Failure::Invalid => StatusCode::BAD_REQUEST,
            Failure::Unauthenticated => StatusCode::UNAUTHORIZED,
            Failure::Forbidden => StatusCode::FORBIDDEN,
            Failure::NotFound => StatusCode::NOT_FOUND,
            Failure::Conflict => StatusCode::CONFLICT,
            Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError { status, message: e.message, field: e.field }
    }
}
