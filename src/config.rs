//! Typed configuration: a TOML file plus environment overrides, validated once and completely.
//!
//! Every problem is collected before start-up fails, each naming its key (and the environment
//! variable it came from), so a user fixes a config file in one round instead of one error at a
//! time. The sections are composed here: the Kafka, HTTP, engine and platform sections are
//! below, each pipeline's is in its folder (`pipelines/<name>/config.rs`), all read with
//! [`crate::section::Fields`]. The doc comments on their fields are the configuration reference
//! ([`mod@reference`], `pagepulse config docs`, the README's table).
//!
//! Environment overrides, applied on top of the file:
//! - `PAGEPULSE_BROKERS` → `kafka.brokers`
//! - `PAGEPULSE_TOPIC_PREFIX` → `kafka.topic_prefix`
//! - `PAGEPULSE_GROUP_ID` → `kafka.group_id`
//! - `PAGEPULSE_HTTP_LISTEN` → `http.listen`, `PAGEPULSE_HTTP_ADVERTISE` → `http.advertise`
//! - `PAGEPULSE_CLUSTER_TOKEN` → `http.cluster_token`
//! - `PAGEPULSE_WRITE_TOKEN` → `http.write_token`, `PAGEPULSE_READ_TOKEN` → `http.read_token`
//! - `PAGEPULSE_FACEBOOK_TOKEN` → `platforms.facebook.access_token`
//! - `PAGEPULSE_MASTODON_TOKEN` → `platforms.mastodon.access_token`
//! - `PAGEPULSE__<section>__<key>` (double underscores) → any key, e.g.
//!   `PAGEPULSE__engine__workers=4` or `PAGEPULSE__pipelines__posts__trending_top_n=20`.

pub mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::pipelines::apps::config::AppsConfig;
use crate::pipelines::fans::config::FansConfig;
use crate::pipelines::messages::config::MessagesConfig;
use crate::pipelines::pages::config::PagesConfig;
use crate::pipelines::pageviews::config::PageviewsConfig;
use crate::pipelines::posts::config::PostsConfig;
use crate::poll::facebook::Token;
use crate::secret::Secret;
use crate::section::Fields;
pub use crate::section::Problem;

/// Errors of loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One or more keys are unknown or invalid.
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" },
        .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Result of loading the configuration.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[kafka]`: where the broker is and how pagepulse talks to it.
    pub kafka: KafkaConfig,
    /// `[http]`: the metrics and health endpoint.
    pub http: HttpConfig,
    /// `[engine]`: batching, parallelism, backpressure and shutdown.
    pub engine: EngineConfig,
    /// `[pipelines.posts]`: social post analysis.
    pub posts: PostsConfig,
    /// `[pipelines.fans]`: rolling fan counts of tracked pages.
    pub fans: FansConfig,
    /// `[pipelines.pages]`: the poll schedules of tracked pages.
    pub pages: PagesConfig,
    /// `[pipelines.pageviews]`: top-N page views per domain and hour, and trending now.
    pub pageviews: PageviewsConfig,
    /// `[pipelines.apps]`: the app catalogue, its rankings and the mentions of its apps in posts.
    pub apps: AppsConfig,
    /// `[pipelines.messages]`: message statistics by state and city, per minute and all time.
    pub messages: MessagesConfig,
    /// `[platforms.facebook]`: the Facebook Graph API.
    pub facebook: PlatformConfig,
    /// `[platforms.mastodon]`: Mastodon's account lookup API.
    pub mastodon: PlatformConfig,
}

/// `[kafka]`
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port` (default `127.0.0.1:9092`; env
    /// `PAGEPULSE_BROKERS`).
    pub brokers: String,
    /// Prepended to every topic name, so several deployments can share a cluster (default empty;
    /// env `PAGEPULSE_TOPIC_PREFIX`). Letters, digits, `.`, `_` and `-` only.
    pub topic_prefix: String,
    /// Consumer group id and application id; instances with the same id split the input
    /// partitions (default `pagepulse`; env `PAGEPULSE_GROUP_ID`). Names pagepulse's own topics:
    /// changelogs `<group_id>-<store>-changelog` and the instance map `<group_id>-instances`.
    pub group_id: String,
    /// Client id reported to the broker (default `pagepulse`).
    pub client_id: String,
    /// Replication factor for `topics create` (default 1: right for a one-broker development
    /// cluster; use 3 in production).
    pub replication_factor: i32,
    /// How long start-up and admin commands wait for the broker to answer before failing with a
    /// clear error (default `10s`).
    pub connect_timeout: Duration,
    /// Consumer group session timeout, 1s..1h (default `10s`: short enough that a crashed
    /// instance's partitions move quickly; librdkafka's own default is 45 s). Also the
    /// membership watchdog's clock: an instance silent this long is dead, and partitions without
    /// a live owner for half of it make an instance holding less than its share rejoin.
    pub session_timeout: Duration,
    /// How often tasks flush their state changes to the changelogs and fully processed offsets
    /// are committed (default `1s`).
    pub commit_interval: Duration,
    /// How often librdkafka reports statistics (consumer lag, broker state) (default `2s`).
    pub statistics_interval: Duration,
    /// Extra librdkafka consumer properties, e.g. `{ "fetch.max.bytes" = "52428800" }`.
    pub consumer: BTreeMap<String, String>,
    /// Extra librdkafka producer properties, e.g. `{ "compression.type" = "lz4" }`.
    pub producer: BTreeMap<String, String>,
}

/// `[http]`
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Address of the HTTP API (`/api/v1`), the live page (`/`), `/docs`, `/metrics`, `/healthz`
    /// and `/readyz` (default `127.0.0.1:9898`; env `PAGEPULSE_HTTP_LISTEN`). Port 0 picks a free port (logged
    /// at start-up). On an address other than loopback pagepulse refuses to start without a
    /// token configured.
    pub listen: SocketAddr,
    /// Bearer tokens of the API, a list of `{ name = "...", token = "...", scopes = ["read",
    /// "write"] }` (default none). `write` allows writes, `read` reads; the name shows in
    /// nothing but this file (tokens are never logged). Tokens are at least 16 characters.
    pub tokens: Vec<ApiToken>,
    /// One more token with both scopes, from the environment (env `PAGEPULSE_WRITE_TOKEN`;
    /// default none).
    pub write_token: Option<Secret>,
    /// One more token with the `read` scope, from the environment (env `PAGEPULSE_READ_TOKEN`;
    /// default none).
    pub read_token: Option<Secret>,
    /// Answer reads without a token (default false: reads need a `read` token). Writes always
    /// need a `write` token.
    pub public_reads: bool,
    /// Reads per second one client may make, sustained (default 5000); a client is its token,
    /// else its address.
    pub read_rate: f64,
    /// Reads a client may make at once after a quiet spell (default 10000).
    pub read_burst: u32,
    /// Writes per second one client may make, sustained (default 2000).
    pub write_rate: f64,
    /// Writes a client may make at once after a quiet spell (default 4000).
    pub write_burst: u32,
    /// Clients the rate limiter tracks at most (default 100000); past it the least recently
    /// seen client's budget is forgotten (it starts full again).
    pub max_clients: usize,
    /// Most bytes of a JSON request body (default 65536).
    pub max_body_bytes: usize,
    /// Most bytes of a CSV upload (`POST /api/v1/apps`) (default 33554432, 32 MiB).
    pub max_upload_bytes: usize,
    /// Deepest nesting of arrays and objects accepted in a JSON request body (default 16).
    pub max_json_depth: usize,
    /// Longest a client may take to send a request's head; a slow client cannot hold a worker
    /// (default `5s`).
    pub request_timeout: Duration,
    /// Longest a write waits for the broker's acknowledgement before answering 503 (default
    /// `10s`).
    pub write_timeout: Duration,
    /// Threads serving HTTP, 1..64 (default 2).
    pub workers: NonZeroUsize,
    /// PEM certificate chain: serve HTTPS with it and `tls_key` (default none: plain HTTP).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (default none).
    pub tls_key: Option<PathBuf>,
    /// Origins allowed to call the API from a browser (CORS), e.g. `["https://dash.example"]`;
    /// `["*"]` allows any (default none: CORS off).
    pub cors_origins: Vec<String>,
    /// How long results read by key stay answerable (a post's analysis, an hour's top
    /// articles, a minute's statistics), by the record's timestamp, 1m..365d (default `7d`).
    /// Every instance reads these result topics whole into memory; older entries are dropped.
    pub results_retention: Duration,
    /// Most bytes (keys, values and about 96 bytes of bookkeeping each) of each result topic
    /// held for reads by key, 1 MiB..16 GiB (default 67108864, 64 MiB: about 200,000 post
    /// analyses); past it the entries written least recently are dropped first.
    pub results_max_bytes: usize,
    /// `host:port` at which the other instances of the group reach this one's HTTP endpoint
    /// (default: `listen`; env `PAGEPULSE_HTTP_ADVERTISE`). Set it when `listen` is `0.0.0.0` or
    /// not reachable as such from the other instances.
    pub advertise: Option<String>,
    /// What a read for a key held by another instance gets (a page of a `fans.observations`
    /// partition this instance does not own): `proxy` (default: this instance asks the owner and
    /// passes its answer on), `redirect` (a `307` to the owner's address) or `off` (a `404`, as
    /// if there were one instance).
    pub forward: Forward,
    /// The secret instances of one group share to vouch for requests they forward (env
    /// `PAGEPULSE_CLUSTER_TOKEN`; at least 16 characters; default none). With it, a forwarded
    /// request's credentials and rate limit are checked once, by the instance the client called;
    /// without it, the client's `Authorization` header is forwarded and checked again by the
    /// owner.
    pub cluster_token: Option<Secret>,
    /// Longest a forwarded request waits for the owner's answer before answering `503` (default
    /// `5s`, 100ms..60s).
    pub forward_timeout: Duration,
}

/// What a read for a key held by another instance gets (`http.forward`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// This instance asks the owner and passes its answer on.
    Proxy,
    /// A `307 Temporary Redirect` to the owner's address.
    Redirect,
    /// No forwarding: a `404` naming the owner.
    Off,
}

/// One bearer token of the HTTP API.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// What the token is for (never the token itself).
    pub name: String,
    /// The token.
    pub token: Secret,
    /// What it may do: `read`, `write` or both.
    pub scopes: Vec<Scope>,
}

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET requests of the API.
    Read,
    /// POST and DELETE requests of the API.
    Write,
}

/// `[engine]`
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Threads that run partition tasks, 1..256 (default: the number of CPU cores).
    pub workers: NonZeroUsize,
    /// Most records moved from the consumer to a task in one batch (default 2000).
    pub batch_max_records: NonZeroUsize,
    /// Longest a partial batch waits for more records before it is dispatched (default `5ms`).
    pub batch_max_wait: Duration,
    /// Batches a task's inbox holds (default 16). Batches that do not fit wait in the router,
    /// up to `partition_buffer_bytes` per partition, after which that partition alone is paused
    /// in the consumer until its task catches up; the consumer keeps polling and every other
    /// partition keeps flowing.
    pub inbox_capacity: NonZeroUsize,
    /// Bytes of records (keys, values and 48 bytes of bookkeeping each) one input partition may
    /// hold beyond its task's inbox before it is paused in the consumer (default 8388608, 8 MiB).
    /// Larger values pause and resume a partition that is always behind less often (each resume
    /// fetches again what the consumer had prefetched for it); the memory bound is this times the
    /// number of input partitions an instance owns.
    pub partition_buffer_bytes: NonZeroUsize,
    /// Most output bytes queued in the producer before tasks wait for acknowledgements
    /// (default 67108864, 64 MiB). In exactly-once mode each task has a producer of its own, each
    /// with this bound; its queue empties at every commit.
    pub producer_queue_bytes: NonZeroUsize,
    /// Longest a graceful shutdown (SIGINT/SIGTERM) takes before pagepulse exits anyway; work not
    /// finished by then is not committed and is redone on restart (default `8s`).
    pub shutdown_timeout: Duration,
    /// Keep stateful pipelines' state in changelog topics and restore it on assignment (default
    /// true; see README, Durable state). `false` keeps state in memory only: a restart or
    /// rebalance starts it empty. For measuring what durability costs.
    pub durable_state: bool,
    /// `at_least_once` (default) or `exactly_once`: each task's outputs, changelog writes and
    /// input offsets commit in one Kafka transaction every `kafka.commit_interval` (and when the
    /// task stops), so `read_committed` consumers see each result once, across crashes. Needs a
    /// broker with transactions (tansu 0.6.0 has none: pagepulse then stops at its first commit).
    /// Costs one producer per task, and delays results by up to a commit interval.
    /// Outputs no task writes (aggregates such as `posts.trending`, the poll dispatchers'
    /// `fans.observations`) stay at-least-once. See README, Exactly-once mode.
    pub processing_guarantee: ProcessingGuarantee,
}

/// What a crash may do to outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Every input's effect reaches the outputs; a crash may repeat outputs written after the
    /// last flush (never lose or change a final result).
    #[default]
    AtLeastOnce,
    /// Each task's results are visible once to `read_committed` consumers, across crashes
    /// (see [`crate::kafka::txn`]).
    ExactlyOnce,
}

/// `[platforms.<p>]`, one per platform (`facebook`, `mastodon`): where a platform's API is and
/// how hard pagepulse may use it. Limits hold per instance: split a platform's global budget
/// between instances by configuration.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Poll this platform's pages (default true). `pages` records naming a disabled platform are
    /// dead-lettered.
    pub enabled: bool,
    /// The API's base URL (default `https://graph.facebook.com` and `https://mastodon.social`).
    pub base_url: String,
    /// The API version in the path (Facebook only; default `v19.0`).
    pub version: String,
    /// Access token (env `PAGEPULSE_FACEBOOK_TOKEN` / `PAGEPULSE_MASTODON_TOKEN`; prefer the
    /// environment to the file). Never logged: it prints as `***`. Facebook refuses requests
    /// without one; Mastodon's lookup works without.
    pub access_token: Option<Token>,
    /// Longest one request may take, connecting included, before it counts as a transient
    /// failure (default `10s`).
    pub timeout: Duration,
    /// Sustained calls per second (Facebook counts every id of a batch as a call; default 2000
    /// for Facebook, 1 for Mastodon, whose default budget is 300 per 5 minutes).
    pub rate_per_sec: f64,
    /// Calls that may be made at once after a quiet spell (default 500 for Facebook, 10 for
    /// Mastodon).
    pub burst: u32,
    /// Requests in flight at once (default 16 for Facebook, 4 for Mastodon).
    pub max_in_flight: u32,
    /// Retries of a request that failed transiently (5xx, timeout, malformed body) before its
    /// pages wait for their next slot (default 3).
    pub retries: u32,
    /// Upper bound of the first retry's delay; each retry doubles it, with full jitter
    /// (default `500ms`).
    pub retry_base: Duration,
    /// Upper bound of any retry's delay (default `30s`).
    pub retry_max: Duration,
    /// How long to pause when the platform reports 100 % usage without saying for how long
    /// (default `60s`).
    pub saturated_pause: Duration,
    /// An answer that arrives at most this long after its page's slot is stamped with the slot
    /// (`observed_at` = the schedule's due time) instead of the arrival time, as Prometheus
    /// aligns scrape timestamps (`--scrape.timestamp-tolerance`): a page's observations then lie
    /// on its exact grid, which its 30-day series stores in about half the bytes (see the README,
    /// *Memory*). Later answers keep their arrival time; `0s` stamps every answer on arrival
    /// (default `1s`, at most `1m`).
    pub stamp_tolerance: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_table(Table::new(), &BTreeSet::new()).expect("the defaults are valid")
    }
}

/// The fixed environment variables and the keys they set.
const ENV_ALIASES: &[(&str, &str)] = &[
    ("PAGEPULSE_BROKERS", "kafka.brokers"),
    ("PAGEPULSE_TOPIC_PREFIX", "kafka.topic_prefix"),
    ("PAGEPULSE_GROUP_ID", "kafka.group_id"),
    ("PAGEPULSE_HTTP_LISTEN", "http.listen"),
    ("PAGEPULSE_WRITE_TOKEN", "http.write_token"),
    ("PAGEPULSE_READ_TOKEN", "http.read_token"),
    ("PAGEPULSE_CLUSTER_TOKEN", "http.cluster_token"),
    ("PAGEPULSE_HTTP_ADVERTISE", "http.advertise"),
    ("PAGEPULSE_FACEBOOK_TOKEN", "platforms.facebook.access_token"),
    ("PAGEPULSE_MASTODON_TOKEN", "platforms.mastodon.access_token"),
];

impl Config {
    /// Loads `path` (if given) and applies overrides from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| Error::Read { path: p.display().to_string(), source })?;
                text.parse::<Table>()
                    .map_err(|e| Error::Syntax { path: p.display().to_string(), message: e.to_string() })?
            }
            None => Table::new(),
        };
        Self::from_parts(table, std::env::vars())
    }

    /// Builds the config from a parsed file and environment variables (injected for tests).
    pub fn from_parts(mut table: Table, env: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let mut from_env = BTreeSet::new();
        let mut problems = Vec::new();
        for (var, raw) in env {
            let key = if let Some((_, key)) = ENV_ALIASES.iter().find(|(v, _)| *v == var) {
                key.to_string()
            } else if let Some(rest) = var.strip_prefix("PAGEPULSE__") {
                rest.split("__").collect::<Vec<_>>().join(".")
            } else {
                continue;
            };
            if let Err(message) = set_path(&mut table, &key, env_value(&raw)) {
                problems.push(Problem { key: key.clone(), env: Some(var.clone()), message });
            }
            from_env.insert((key, var));
        }
        match Self::from_table(table, &from_env) {
            Ok(cfg) if problems.is_empty() => Ok(cfg),
            Ok(_) => Err(Error::Invalid(problems)),
            Err(Error::Invalid(mut more)) => {
                problems.append(&mut more);
                Err(Error::Invalid(problems))
            }
            Err(e) => Err(e),
        }
    }

    fn from_table(table: Table, from_env: &BTreeSet<(String, String)>) -> Result<Self> {
        let mut problems = Vec::new();
        let mut root = Fields::root(table, &mut problems, from_env);

        let mut k = root.section("kafka");
        let kafka = KafkaConfig {
            brokers: k.string("brokers", "127.0.0.1:9092"),
            topic_prefix: k.string("topic_prefix", ""),
            group_id: k.string("group_id", "pagepulse"),
            client_id: k.string("client_id", "pagepulse"),
            replication_factor: k.take("replication_factor", 1),
            connect_timeout: k.duration("connect_timeout", Duration::from_secs(10)),
            session_timeout: k.duration("session_timeout", Duration::from_secs(10)),
            commit_interval: k.duration("commit_interval", Duration::from_secs(1)),
            statistics_interval: k.duration("statistics_interval", Duration::from_secs(2)),
            consumer: k.take("consumer", BTreeMap::new()),
            producer: k.take("producer", BTreeMap::new()),
        };
        k.check(kafka.brokers.trim().is_empty(), "brokers", "must name at least one host:port");
        k.check(
            !kafka.topic_prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "topic_prefix",
            "may contain only letters, digits, '.', '_' and '-'",
        );
        k.check(kafka.group_id.trim().is_empty(), "group_id", "must not be empty");
        k.check(!(1..=32).contains(&kafka.replication_factor), "replication_factor", "must be between 1 and 32");
        k.check(kafka.connect_timeout < Duration::from_millis(100), "connect_timeout", "must be at least 100ms");
        k.check(
            !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&kafka.session_timeout),
            "session_timeout",
            "must be between 1s and 1h",
        );
        k.check(kafka.commit_interval.is_zero(), "commit_interval", "must be positive");
        k.check(
            kafka.statistics_interval < Duration::from_millis(100),
            "statistics_interval",
            "must be at least 100ms",
        );
        k.finish();

        let mut h = root.section("http");
        let http = HttpConfig {
            listen: h.parse("listen", SocketAddr::from(([127, 0, 0, 1], 9898))),
            tokens: h.take("tokens", Vec::new()),
            write_token: h.take::<Option<String>>("write_token", None).map(Secret::new),
            read_token: h.take::<Option<String>>("read_token", None).map(Secret::new),
            public_reads: h.take("public_reads", false),
            read_rate: h.take("read_rate", 5000.0),
            read_burst: h.take("read_burst", 10_000),
            write_rate: h.take("write_rate", 2000.0),
            write_burst: h.take("write_burst", 4000),
            max_clients: h.take("max_clients", 100_000),
            max_body_bytes: h.take("max_body_bytes", 65_536),
            max_upload_bytes: h.take("max_upload_bytes", 32 << 20),
            max_json_depth: h.take("max_json_depth", 16),
            request_timeout: h.duration("request_timeout", Duration::from_secs(5)),
            write_timeout: h.duration("write_timeout", Duration::from_secs(10)),
            workers: h.take("workers", NonZeroUsize::new(2).expect("2 > 0")),
            tls_cert: h.take("tls_cert", None),
            tls_key: h.take("tls_key", None),
            cors_origins: h.take("cors_origins", Vec::new()),
            results_retention: h.duration("results_retention", Duration::from_secs(7 * 86_400)),
            results_max_bytes: h.take("results_max_bytes", 64 << 20),
            advertise: h.take("advertise", None),
            forward: h.take("forward", Forward::Proxy),
            cluster_token: h.take::<Option<String>>("cluster_token", None).map(Secret::new),
            forward_timeout: h.duration("forward_timeout", Duration::from_secs(5)),
        };
        h.check(
            http.cluster_token.as_ref().is_some_and(|t| t.len() < 16),
            "cluster_token",
            "must be at least 16 characters",
        );
        h.check(
            !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&http.forward_timeout),
            "forward_timeout",
            "must be between 100ms and 60s",
        );
        h.check(
            http.advertise.as_deref().is_some_and(|a| {
                a.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            }),
            "advertise",
            "must be `host:port`, e.g. `10.0.0.5:9898`",
        );
        h.check(
            !(Duration::from_secs(60)..=Duration::from_secs(365 * 86_400)).contains(&http.results_retention),
            "results_retention",
            "must be between 1m and 365d",
        );
        h.check(
            !(1 << 20..=16 << 30).contains(&http.results_max_bytes),
            "results_max_bytes",
            "must be between 1048576 and 17179869184",
        );
        let mut names = BTreeSet::new();
        for t in &http.tokens {
            h.check(t.name.trim().is_empty(), "tokens", "every token needs a name");
            h.check(!names.insert(t.name.clone()), "tokens", &format!("token name `{}` is used twice", t.name));
            h.check(t.token.len() < 16, "tokens", &format!("token `{}` is shorter than 16 characters", t.name));
            h.check(t.scopes.is_empty(), "tokens", &format!("token `{}` has no scopes", t.name));
        }
        for (key, t) in [("write_token", &http.write_token), ("read_token", &http.read_token)] {
            h.check(t.as_ref().is_some_and(|t| t.len() < 16), key, "must be at least 16 characters");
        }
        h.check(
            !(0.0..=1e6).contains(&http.read_rate) || http.read_rate == 0.0,
            "read_rate",
            "must be above 0 and at most 1000000",
        );
        h.check(
            !(0.0..=1e6).contains(&http.write_rate) || http.write_rate == 0.0,
            "write_rate",
            "must be above 0 and at most 1000000",
        );
        h.check(http.read_burst == 0, "read_burst", "must be positive");
        h.check(http.write_burst == 0, "write_burst", "must be positive");
        h.check(!(1..=10_000_000).contains(&http.max_clients), "max_clients", "must be between 1 and 10000000");
        h.check(
            !(1024..=16 << 20).contains(&http.max_body_bytes),
            "max_body_bytes",
            "must be between 1024 and 16777216",
        );
        h.check(
            !(1024..=1 << 30).contains(&http.max_upload_bytes),
            "max_upload_bytes",
            "must be between 1024 and 1073741824",
        );
        h.check(!(1..=128).contains(&http.max_json_depth), "max_json_depth", "must be between 1 and 128");
        h.check(http.request_timeout < Duration::from_millis(100), "request_timeout", "must be at least 100ms");
        h.check(http.write_timeout < Duration::from_millis(100), "write_timeout", "must be at least 100ms");
        h.check(http.workers.get() > 64, "workers", "must be at most 64");
        h.check(http.tls_cert.is_some() != http.tls_key.is_some(), "tls_key", "tls_cert and tls_key go together");
        let any_token = !http.tokens.is_empty() || http.write_token.is_some() || http.read_token.is_some();
        h.check(
            !http.listen.ip().is_loopback() && !any_token,
            "tokens",
            "listening on a non-loopback address needs at least one token (http.tokens, PAGEPULSE_WRITE_TOKEN or \
             PAGEPULSE_READ_TOKEN): the API would otherwise be open to the network",
        );
        h.finish();

        let mut e = root.section("engine");
        let cores = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        let engine = EngineConfig {
            workers: e.take("workers", cores),
            batch_max_records: e.take("batch_max_records", NonZeroUsize::new(2000).expect("2000 > 0")),
            batch_max_wait: e.duration("batch_max_wait", Duration::from_millis(5)),
            inbox_capacity: e.take("inbox_capacity", NonZeroUsize::new(16).expect("16 > 0")),
            partition_buffer_bytes: e.take("partition_buffer_bytes", NonZeroUsize::new(8 << 20).expect("> 0")),
            producer_queue_bytes: e.take("producer_queue_bytes", NonZeroUsize::new(64 << 20).expect("> 0")),
            shutdown_timeout: e.duration("shutdown_timeout", Duration::from_secs(8)),
            durable_state: e.take("durable_state", true),
            processing_guarantee: e.take("processing_guarantee", ProcessingGuarantee::AtLeastOnce),
        };
        e.check(engine.workers.get() > 256, "workers", "must be at most 256");
        e.check(engine.batch_max_records.get() > 1_000_000, "batch_max_records", "must be at most 1000000");
        e.check(engine.batch_max_wait > Duration::from_secs(10), "batch_max_wait", "must be at most 10s");
        e.check(engine.inbox_capacity.get() > 10_000, "inbox_capacity", "must be at most 10000");
        e.check(
            engine.partition_buffer_bytes.get() > 1 << 30,
            "partition_buffer_bytes",
            "must be at most 1073741824 (1 GiB)",
        );
        e.check(
            engine.producer_queue_bytes.get() < 1 << 20,
            "producer_queue_bytes",
            "must be at least 1048576 (1 MiB)",
        );
        e.check(engine.shutdown_timeout > Duration::from_secs(300), "shutdown_timeout", "must be at most 5m");
        e.finish();

        let mut pipelines = root.section("pipelines");
        let posts = PostsConfig::from_section(pipelines.section("posts"));
        let fans = FansConfig::from_section(pipelines.section("fans"));
        let pages = PagesConfig::from_section(pipelines.section("pages"));
        let pageviews = PageviewsConfig::from_section(pipelines.section("pageviews"));
        let apps = AppsConfig::from_section(pipelines.section("apps"));
        let messages = MessagesConfig::from_section(pipelines.section("messages"));
        pipelines.finish();

        let mut platforms = root.section("platforms");
        let facebook =
            PlatformConfig::from_section(platforms.section("facebook"), "https://graph.facebook.com", 2000.0, 500, 16);
        let mastodon =
            PlatformConfig::from_section(platforms.section("mastodon"), "https://mastodon.social", 1.0, 10, 4);
        if pages.enabled && !facebook.enabled && !mastodon.enabled {
            platforms.problem("facebook.enabled", "pipelines.pages needs at least one enabled platform");
        }
        platforms.finish();
        root.finish();

        if problems.is_empty() {
            Ok(Config { kafka, http, engine, posts, fans, pages, pageviews, messages, apps, facebook, mastodon })
        } else {
            Err(Error::Invalid(problems))
        }
    }

    /// The full name of a logical topic: the prefix followed by the logical name.
    pub fn topic(&self, logical: &str) -> String {
        format!("{}{}", self.kafka.topic_prefix, logical)
    }
}

/// Turns an environment value into a TOML value: TOML literals (numbers, booleans, arrays,
/// quoted strings) are taken as such, anything else is a plain string.
fn env_value(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Sets the dotted `key` in `table`, creating sections as needed.
fn set_path(table: &mut Table, key: &str, value: Value) -> std::result::Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or("empty key")?;
    let mut cur = table;
    for part in parts {
        let entry = cur.entry(part.to_string()).or_insert_with(|| Value::Table(Table::new()));
        cur = entry.as_table_mut().ok_or_else(|| format!("`{part}` is not a section"))?;
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

impl PlatformConfig {
    /// Reads and checks a platform's section, with these defaults, recording every problem in
    /// `p`.
    fn from_section(mut p: Fields<'_>, base_url: &str, rate: f64, burst: u32, in_flight: u32) -> Self {
        let token: Option<String> = p.take("access_token", None);
        p.check(token.as_deref().is_some_and(str::is_empty), "access_token", "must not be empty");
        let cfg = PlatformConfig {
            enabled: p.take("enabled", true),
            base_url: p.string("base_url", base_url),
            version: p.string("version", "v19.0"),
            access_token: token.map(Token::new),
            timeout: p.duration("timeout", Duration::from_secs(10)),
            rate_per_sec: p.take("rate_per_sec", rate),
            burst: p.take("burst", burst),
            max_in_flight: p.take("max_in_flight", in_flight),
            retries: p.take("retries", 3),
            retry_base: p.duration("retry_base", Duration::from_millis(500)),
            retry_max: p.duration("retry_max", Duration::from_secs(30)),
            saturated_pause: p.duration("saturated_pause", Duration::from_secs(60)),
            stamp_tolerance: p.duration("stamp_tolerance", Duration::from_secs(1)),
        };
        p.check(cfg.stamp_tolerance > Duration::from_secs(60), "stamp_tolerance", "must be at most 1m");
        p.check(
            !(cfg.base_url.starts_with("http://") || cfg.base_url.starts_with("https://")),
            "base_url",
            "must start with http:// or https://",
        );
        p.check(
            cfg.version.is_empty() || cfg.version.contains(['/', '?', '#', ' ']),
            "version",
            "must be a path segment such as v19.0",
        );
        p.check(
            !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&cfg.timeout),
            "timeout",
            "must be between 100ms and 5m",
        );
        p.check(
            !(cfg.rate_per_sec.is_finite() && (0.001..=1_000_000.0).contains(&cfg.rate_per_sec)),
            "rate_per_sec",
            "must be between 0.001 and 1000000",
        );
        p.check(!(1..=1_000_000).contains(&cfg.burst), "burst", "must be between 1 and 1000000");
        p.check(!(1..=10_000).contains(&cfg.max_in_flight), "max_in_flight", "must be between 1 and 10000");
        p.check(cfg.retries > 100, "retries", "must be at most 100");
        p.check(cfg.retry_base.is_zero(), "retry_base", "must be positive");
        p.check(cfg.retry_max < cfg.retry_base, "retry_max", "must be at least retry_base");
        p.check(cfg.saturated_pause > Duration::from_secs(86_400), "saturated_pause", "must be at most 1d");
        p.finish();
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Config> {
        Config::from_parts(
            toml.parse::<Table>().expect("test TOML parses"),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults() {
        let c = load("", &[]).expect("defaults are valid");
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9898");
        assert_eq!(c.posts.trending_top_n, 10);
        assert_eq!(c.posts.trending_window, Duration::from_secs(3600));
        assert_eq!(c.topic("posts"), "posts");
    }

    #[test]
    fn file_values_and_env_overrides() {
        let c = load(
            "[kafka]\nbrokers = \"file:1\"\ntopic_prefix = \"a.\"\n[engine]\nbatch_max_wait = \"20ms\"\n",
            &[("PAGEPULSE_BROKERS", "env:2"), ("PAGEPULSE__engine__workers", "3"), ("PAGEPULSE_TOPIC_PREFIX", "2024")],
        )
        .expect("valid");
        assert_eq!(c.kafka.brokers, "env:2");
        assert_eq!(c.kafka.topic_prefix, "2024");
        assert_eq!(c.engine.workers.get(), 3);
        assert_eq!(c.engine.batch_max_wait, Duration::from_millis(20));
        assert_eq!(c.topic("posts"), "2024posts");
    }

    #[test]
    fn every_problem_is_listed_with_its_key() {
        let err = load(
            "bogus = 1\n[kafka]\nbrokers = 5\ntypo = true\n[engine]\nworkers = 0\nbatch_max_wait = \"soon\"\n\
             [pipelines.posts]\ntrending_top_n = 0\ntrending_bucket = \"7m\"\n",
            &[("PAGEPULSE_HTTP_LISTEN", "not-an-addr")],
        )
        .expect_err("invalid");
        let Error::Invalid(problems) = &err else { panic!("expected Invalid, got {err}") };
        let keys: BTreeSet<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "bogus",
            "kafka.brokers",
            "kafka.typo",
            "engine.workers",
            "engine.batch_max_wait",
            "pipelines.posts.trending_top_n",
            "pipelines.posts.trending_window",
            "http.listen",
        ] {
            assert!(keys.contains(k), "missing problem for {k}: {err}");
        }
        let text = err.to_string();
        assert!(text.contains("http.listen (from PAGEPULSE_HTTP_LISTEN)"), "{text}");
        assert!(text.contains("kafka.typo: unknown key"), "{text}");
    }

    #[test]
    fn unknown_env_key_is_rejected() {
        let err = load("", &[("PAGEPULSE__engine__wrokers", "2")]).expect_err("unknown key");
        assert!(err.to_string().contains("engine.wrokers (from PAGEPULSE__engine__wrokers): unknown key"), "{err}");
    }

    #[test]
    fn bad_prefix_and_section_type() {
        let err = load("http = 3\n[kafka]\ntopic_prefix = \"a b\"\n", &[]).expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("kafka.topic_prefix"), "{text}");
        assert!(text.contains("http: must be a section"), "{text}");
    }
}
