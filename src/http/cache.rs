//! HTTP caching of reads: every JSON (or CSV) answer carries an `ETag` (a hash of its body) and a
//! `Cache-Control`; a request whose `If-None-Match` names the current ETag is answered `304 Not
//! Modified` with no body. Results that can no longer change (a final window or minute) say so
//! with `immutable`.

use std::hash::{Hash, Hasher};

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};

/// How long a client may keep an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Live state: revalidate after a second.
    Live,
    /// Final: it will never change.
    Immutable,
}

impl Freshness {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Freshness::Live => "private, max-age=1",
            Freshness::Immutable => "public, max-age=31536000, immutable",
        })
    }
}

/// The ETag of `body`: a strong tag from a 64-bit hash (stable across restarts: SipHash with
/// fixed keys).
pub fn etag(body: &[u8]) -> String {
    #[allow(deprecated)] // SipHasher: stable output with fixed keys, which DefaultHasher does not promise
    let mut h = std::hash::SipHasher::new_with_keys(0x7061_6765, 0x7075_6c73);
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

/// Whether `req`'s `If-None-Match` names `tag` (or is `*`).
fn not_modified(req: &HttpRequest, tag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

/// A 200 answer with `body` of `content_type`, or a 304 when the client has it already.
pub fn answer(req: &HttpRequest, content_type: &'static str, body: Vec<u8>, freshness: Freshness) -> HttpResponse {
    let tag = etag(&body);
    let unchanged = not_modified(req, &tag);
    let mut resp = if unchanged { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    resp.insert_header((header::ETAG, tag.as_str())).insert_header((header::CACHE_CONTROL, freshness.header()));
    if unchanged {
        return resp.finish();
    }
    resp.content_type(content_type).body(body)
}

/// A 200 JSON answer of `value` (or 304).
pub fn json<T: serde::Serialize>(req: &HttpRequest, value: &T, freshness: Freshness) -> HttpResponse {
    let body = serde_json::to_vec(value).expect("API values serialize");
    answer(req, "application/json", body, freshness)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn an_unchanged_answer_is_304_and_a_changed_one_200() {
        let body = br#"{"a":1}"#.to_vec();
        let tag = etag(&body);
        assert_eq!(tag, etag(br#"{"a":1}"#), "stable");
        assert_ne!(tag, etag(br#"{"a":2}"#));
        let req = TestRequest::default().insert_header((header::IF_NONE_MATCH, tag.as_str())).to_http_request();
        let resp = answer(&req, "application/json", body.clone(), Freshness::Immutable);
        assert_eq!(resp.status(), 304);
        assert_eq!(resp.headers().get(header::ETAG).and_then(|v| v.to_str().ok()), Some(tag.as_str()));
        let req = TestRequest::default().insert_header((header::IF_NONE_MATCH, "\"other\"")).to_http_request();
        let resp = answer(&req, "application/json", body, Freshness::Live);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("private, max-age=1"));
    }
}
