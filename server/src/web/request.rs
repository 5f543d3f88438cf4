//! A request as the API dispatcher and the webhook receiver see it, and its
//! body read as a JSON object.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value};
use warp::http::{HeaderMap, Method};

use super::error::ApiError;

/// A request as the dispatcher sees it.
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// Headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The client's address, when known.
    pub client: Option<std::net::IpAddr>,
}

/// The body as a JSON object, or a 400 saying what is wrong with it.
pub fn body_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad("the request body is empty: send a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad(format!("expected a JSON object, got {}", kind_of(&other)))),
        Err(e) => Err(ApiError::bad(format!("malformed JSON: {e}"))),
    }
}

pub(crate) use crate::service::objects::kind_of;
