//! The seam between the poller and a platform: what one request for audience counts can come
//! back as, whatever the platform. Each platform module turns its HTTP answers into these.

use std::time::Duration;

/// What one page of a batch came back as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageResult {
    /// Its counts.
    Counts {
        /// `fan_count`.
        fans: u64,
        /// `followers_count`, when present.
        followers: Option<u64>,
    },
    /// The platform could not read it (Facebook code 100 or HTTP 404: no such page, or no
    /// permission). The page is marked failing and reported; the rest of the batch stands.
    Failed {
        /// The platform's error code (HTTP status for REST platforms; `-1` when the id was simply
        /// missing from the answer).
        code: i64,
        /// The API's message.
        message: String,
    },
}

/// How a whole batch request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// The request worked: a result for every requested id, in request order.
    Pages(Vec<(String, PageResult)>),
    /// Throttled: pause the platform (for `retry_after` when the platform says) and retry later.
    Throttled {
        /// The throttling code (Graph API error code, or HTTP 429).
        code: i64,
        /// How long until access returns, from `X-Business-Use-Case-Usage`.
        retry_after: Option<Duration>,
    },
    /// A temporary failure (HTTP 5xx or `is_transient`): retry with backoff.
    Transient {
        /// HTTP status.
        status: u16,
        /// What went wrong.
        message: String,
    },
    /// A request error that retrying will not fix (e.g. an invalid token).
    Rejected {
        /// The platform's error code.
        code: i64,
        /// The platform's message.
        message: String,
    },
    /// The body was not the JSON the platform promises: retry with backoff, count it.
    Malformed {
        /// Why it could not be read.
        reason: String,
    },
}
