//! The audit log on the web side: its filters read from a query string, and
//! `GET /api/v1/audit` (the records themselves are the service's).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::service::model::AuditFilter;
use crate::service::Principal;

/// Page size of `GET /api/v1/audit` when none is asked for, and the largest.
pub const PAGE: i64 = 50;
pub const MAX_PAGE: i64 = 500;

/// The filters of `GET /api/v1/audit` (and of the UI page), from query pairs.
pub fn filter_from(query: &HashMap<String, String>) -> Result<AuditFilter, ApiError> {
    const KNOWN: &[&str] = &["actor", "action", "object_kind", "object_id", "since", "until", "before", "limit"];
    if let Some(key) = query.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(ApiError::field(key, format!("unknown filter '{key}' for the audit log ({})", KNOWN.join(", "))));
    }
    let text = |name: &str| query.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string);
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        match text(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::field(name, format!("'{name}' must be a whole number, got '{v}'"))),
        }
    };
    let time = |name: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
        match text(name) {
            None => Ok(None),
            Some(v) => parse_time(&v).map(Some).ok_or_else(|| {
                ApiError::field(
                    name,
                    format!(
                        "'{name}' must be an RFC 3339 time (2026-01-31T12:00:00Z) or a date (2026-01-31), got '{v}'"
                    ),
                )
            }),
        }
    };
    let limit = number("limit")?.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::field("limit", format!("'limit' must be from 1 to {MAX_PAGE}, got {limit}")));
    }
    Ok(AuditFilter {
        actor: text("actor"),
        action: text("action"),
        object_kind: text("object_kind"),
        object_id: number("object_id")?,
        since: time("since")?,
        until: time("until")?,
        before_id: number("before")?,
        limit,
    })
}

fn parse_time(v: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc())
}

/// `GET /api/v1/audit`.
pub async fn list(
    state: &Arc<AppState>,
    principal: &Principal,
    query: &HashMap<String, String>,
) -> Result<warp::reply::Response, ApiError> {
    let filter = filter_from(query)?;
    let (events, next) = state.service.audit_page(principal, &filter).await?;
    Ok(warp::reply::Reply::into_response(warp::reply::json(
        &json!({ "limit": filter.limit, "next_before": next, "results": events }),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filters_name_the_field() {
        let q = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect::<HashMap<_, _>>();
        assert_eq!(filter_from(&q("since", "yesterday")).unwrap_err().field.as_deref(), Some("since"));
        assert_eq!(filter_from(&q("limit", "0")).unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(filter_from(&q("colour", "red")).unwrap_err().field.as_deref(), Some("colour"));
        let f = filter_from(&q("since", "2026-01-31")).unwrap();
        assert_eq!(f.since.unwrap().to_rfc3339(), "2026-01-31T00:00:00+00:00");
    }
}
