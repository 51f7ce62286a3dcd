//! Errors as `application/problem+json` (RFC 9457): every refusal of the HTTP API names the
//! problem, with a stable `type` a client can match on, and a `detail` a person can act on.
//!
//! Bad input is always a 4xx. A 5xx means pagepulse itself could not do what was asked (the
//! broker did not acknowledge a write in time), never that the request was wrong.

use std::fmt;

use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The media type of problem documents.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem, as RFC 9457 defines it, plus the fields pagepulse adds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// A URI naming the kind of problem: `https://pagepulse.dev/problems/<kind>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// What exactly was wrong with this request.
    pub detail: String,
    /// The field, parameter or key at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The class of refused content, as in the `pagepulse.reason` header of a dead letter
    /// (`missing_field`, `wrong_type`, `invalid_value`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Seconds to wait before retrying (429, 503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Extra headers to send with it (rate-limit headers on a 429).
    #[serde(skip)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem of kind `kind` (a slug), with status and title.
    pub fn new(status: StatusCode, kind: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://pagepulse.dev/problems/{kind}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            reason: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// 400: the request is malformed (syntax, a parameter, a path segment).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", detail)
    }

    /// 422: the request is well-formed but its content is refused (what the pipeline would
    /// dead-letter, with the same reason).
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-content", "Invalid content", detail)
    }

    /// 404: nothing here by that name.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 401: no usable credentials.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail);
        p.headers
            .push((actix_web::http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"pagepulse\"")));
        p
    }

    /// 403: credentials without the needed scope.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 413: the body is over its bound.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Payload too large", detail)
    }

    /// 415: a content type this route does not take.
    pub fn unsupported_media(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
    }

    /// 405: a method this route does not take.
    pub fn method_not_allowed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", detail)
    }

    /// 406: no representation the client accepts.
    pub fn not_acceptable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_ACCEPTABLE, "not-acceptable", "Not acceptable", detail)
    }

    /// 429: over the client's rate limit.
    pub fn rate_limited(retry_after: u64, headers: Vec<(HeaderName, HeaderValue)>) -> Self {
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("rate limit reached: retry in {retry_after} s"),
        );
        p.retry_after = Some(retry_after);
        p.headers = headers;
        p
    }

    /// 503: not available right now (a partition restoring, the broker not answering).
    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut p = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail);
        p.retry_after = Some(retry_after);
        p
    }

    /// Names the class of refused content.
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Names the field or parameter at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        resp.content_type(CONTENT_TYPE);
        if let Some(secs) = self.retry_after {
            resp.insert_header((RETRY_AFTER, secs.to_string()));
        }
        for (k, v) in &self.headers {
            resp.insert_header((k.clone(), v.clone()));
        }
        resp.body(serde_json::to_vec(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn a_problem_is_rfc_9457_json_with_its_headers() {
        let p = Problem::invalid("field `content` is missing").with_field("content");
        let resp = p.error_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some(CONTENT_TYPE));
        let body = resp.into_body().try_into_bytes().expect("a full body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["type"], "https://pagepulse.dev/problems/invalid-content");
        assert_eq!(v["status"], 422);
        assert_eq!(v["detail"], "field `content` is missing");
        assert_eq!(v["field"], "content");
        let limited = Problem::rate_limited(3, Vec::new()).error_response();
        assert_eq!(limited.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("3"));
    }
}
