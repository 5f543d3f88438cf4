//! A request as the API dispatcher and the webhook receiver see it, its
//! query string read into the typed parameters of each operation, and its
//! body read as a JSON object.

use std::collections::HashMap;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use warp::http::{HeaderMap, Method};

use super::error::ApiError;

/// A request as the dispatcher sees it.
pub struct ApiRequest {
    /// The method.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The query string, as sent (without the `?`).
    pub raw_query: String,
    /// Its parameters by name (the last of a repeated one).
    pub query: HashMap<String, String>,
    /// Headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The client's address, when known.
    pub client: Option<std::net::IpAddr>,
}

impl ApiRequest {
    /// The query string read as `T`, a 400 naming the parameter at fault.
    pub fn query_as<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let pairs = serde_urlencoded::Deserializer::new(form_urlencoded::parse(self.raw_query.as_bytes()));
        serde_path_to_error::deserialize(pairs).map_err(|e| match e.path().to_string().as_str() {
            "." => ApiError::bad(format!("invalid query string: {}", e.inner())),
            field => ApiError::field(field, format!("query parameter '{field}': {}", e.inner())),
        })
    }
}

/// The body read as `B`: fields it does not have are refused (naming the
/// allowed ones), and a value of the wrong type names its field.
pub fn body_as<B: super::routes::Body>(body: &Bytes) -> Result<B, ApiError> {
    let object = body_object(body)?;
    crate::service::objects::reject_unknown(&object, B::FIELDS, B::WHAT)?;
    Ok(crate::service::objects::typed(Value::Object(object), B::WHAT)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::routes::{BuildQuery, OutputQuery, Paging};

    fn request(raw_query: &str) -> ApiRequest {
        ApiRequest {
            method: Method::GET,
            path: "/api/v1/builds".into(),
            raw_query: raw_query.into(),
            query: form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            client: None,
        }
    }

    #[test]
    fn query_parameters_are_typed_and_a_bad_one_is_named() {
        let q: BuildQuery = request("project_id=7&status=FAILURE&limit=20").query_as().unwrap();
        assert_eq!(
            (q.project_id, q.worker_pool_id, q.status.as_deref(), q.limit),
            (Some(7), None, Some("FAILURE"), Some(20))
        );
        let q: OutputQuery = request("").query_as().unwrap();
        assert_eq!((q.after, q.limit), (None, None));
        let e = request("after=0&limit=ten").query_as::<OutputQuery>().err().unwrap();
        assert_eq!(e.field.as_deref(), Some("limit"));
        assert!(e.message.starts_with("query parameter 'limit': "), "{}", e.message);
        let p: Paging = request("name=a%20b&limit=5").query_as().unwrap();
        assert_eq!((p.limit, p.offset), (Some(5), None), "a listing's filters are not paging");
    }
}
