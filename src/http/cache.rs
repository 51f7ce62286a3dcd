//! HTTP caching of reads: every JSON (or CSV) answer carries an `ETag` (a hash of its body) and a
//! `Cache-Control`; a request whose `If-None-Match` names the current ETag is answered `304 Not
//! Modified` with no body. Results that can no longer change (a final window or minute) say so
//! with `immutable`.

use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};

use crate::ops::latest::Stored;

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

/// The ETag of `body`: a strong tag from its 64-bit XXH3 hash (stable across restarts and
/// versions; the same digest a stored record keeps, [`Stored::digest`]).
pub fn etag(body: &[u8]) -> String {
    tag(xxhash_rust::xxh3::xxh3_64(body))
}

fn tag(digest: u64) -> String {
    format!("\"{digest:016x}\"")
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
    let digest = xxhash_rust::xxh3::xxh3_64(&body);
    respond(req, content_type, Bytes::from(body), digest, freshness)
}

/// A stored record's bytes as they are, shared with the table (no copy).
struct Shared(Arc<Stored>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A 200 answer whose body is a stored record as it is (its tag computed once per record, the
/// bytes shared, not copied), or a 304.
pub fn stored(
    req: &HttpRequest,
    content_type: &'static str,
    value: &Arc<Stored>,
    freshness: Freshness,
) -> HttpResponse {
    respond(req, content_type, Bytes::from_owner(Shared(value.clone())), value.digest(), freshness)
}

fn respond(
    req: &HttpRequest,
    content_type: &'static str,
    body: Bytes,
    digest: u64,
    freshness: Freshness,
) -> HttpResponse {
    let tag = tag(digest);
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

    #[test]
    fn a_stored_record_is_answered_as_it_is_with_the_tag_of_its_bytes() {
        let bytes = br#"{"final":true,"articles":[]}"#;
        let record = Arc::new(Stored::new(bytes));
        // The tag is the one a computed body with the same bytes gets: XXH3, checked against the
        // published test vector of the empty input.
        assert_eq!(etag(b""), "\"2d06800538d394c2\"");
        let req = TestRequest::default().to_http_request();
        let resp = stored(&req, "application/json", &record, Freshness::Immutable);
        assert_eq!(resp.status(), 200);
        let tag = resp.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(tag.as_deref(), Some(etag(bytes).as_str()));
        let body = actix_web::body::to_bytes(resp.into_body());
        let body = block_on(body).expect("body");
        assert_eq!(&body[..], bytes);
        let req =
            TestRequest::default().insert_header((header::IF_NONE_MATCH, tag.unwrap().as_str())).to_http_request();
        assert_eq!(stored(&req, "application/json", &record, Freshness::Immutable).status(), 304);
    }

    /// Polls a future that never waits (a body already in memory) to its end.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        actix_rt::System::new().block_on(f)
    }
}
