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

/// What one request came back as, with the usage figures the platform reported alongside.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// How the request ended.
    pub outcome: BatchOutcome,
    /// The highest usage percentage the platform reported for its rate-limit window (0 when it
    /// reports none); the dispatcher slows the platform down as it approaches 100.
    pub usage_pct: u32,
    /// How long the platform asked to be left alone (Facebook's `estimated_time_to_regain_access`,
    /// Mastodon's `X-RateLimit-Reset` once the budget is spent), even on a successful answer.
    pub pause: Option<Duration>,
}

/// The future of one request: owns everything it needs, so the dispatcher can spawn it.
pub type FetchFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Fetched> + Send + 'static>>;

/// One social platform's audience-count API: "fetch audience counts for these page ids". A new
/// crawler is one module implementing this trait and one line registering it.
///
/// Implementations make exactly one request per call and never retry, sleep or rate-limit: the
/// dispatcher owns retries (with backoff), pauses and the request budget, the same way for every
/// platform. A transport failure or timeout comes back as [`BatchOutcome::Transient`] with
/// status 0. Credentials never appear in `Debug` output, errors or log lines.
pub trait Platform: Send + Sync + 'static {
    /// The platform's name: the `platform` field of `pages` records, the first part of page keys
    /// (`<platform>:<page_id>`) and the `platform` label of metrics. Lower case, e.g. `facebook`.
    fn name(&self) -> &'static str;

    /// Most page ids one request may name (1 for platforms without batch lookups).
    fn max_batch(&self) -> usize;

    /// How many calls the platform's rate limit counts one request for `ids` pages as (Facebook
    /// counts every id of a multi-id request).
    fn cost(&self, ids: usize) -> u32;

    /// One request for `ids` (1 ..= [`max_batch`](Platform::max_batch) page ids, without the
    /// platform prefix). [`BatchOutcome::Pages`] holds one result per requested id, in request
    /// order.
    fn fetch(&self, ids: Vec<String>) -> FetchFuture;
}
