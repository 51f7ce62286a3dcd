//! Every Prometheus metric pagepulse exports, defined once with its help text.
//!
//! Metrics live in their own [`Registry`] (not the process-global one) so that tests can run
//! several engines in one process. Labels are bounded: topic names are the logical names from
//! `topics/` (a handful), partitions are bounded by the topic definitions, and reasons are the
//! fixed classes of [`crate::engine::Rejection`]. No page id, post id or title is a label of
//! these: the pipelines' results, which do carry them, are [`results`] families, each bounded by
//! the configuration.

pub mod memory;
pub mod results;

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The process's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records read from Kafka, by logical topic.
    pub consumed: IntCounterVec,
    /// Records acknowledged by the broker, by logical topic.
    pub produced: IntCounterVec,
    /// Records the broker refused or that could not be enqueued, by logical topic.
    pub produce_errors: IntCounterVec,
    /// Input records sent to the dead-letter topic, by input topic and reason class.
    pub deadlettered: IntCounterVec,
    /// Record timestamp to the moment every output and state change it caused was acknowledged,
    /// by pipeline.
    pub e2e_latency: HistogramVec,
    /// Batches waiting in each task's inbox, by pipeline and partition.
    pub mailbox_depth: IntGaugeVec,
    /// Consumer lag per input partition, as librdkafka reports it (approximate on brokers with a
    /// wrong high watermark, such as tansu 0.6.0).
    pub consumer_lag: IntGaugeVec,
    /// Input partitions currently assigned to this instance.
    pub assigned_partitions: IntGauge,
    /// Running partition tasks, by pipeline.
    pub tasks: IntGaugeVec,
    /// Events ignored by windowed aggregations, by pipeline and reason (`late`, `over_capacity`).
    pub window_ignored: IntCounterVec,
    /// Hours of files the pageviews pipeline handled, by outcome (`final`: closed when its file
    /// ended; `skipped`: already final from a file; `replaced`: a restarted ingestion dropped
    /// earlier partial counts; `aborted`: an ingestion gave up), counted per partition.
    pub pageviews_file_hours: IntCounterVec,
    /// Backfill hours that ended, by status (`done`, `skipped`, `failed`).
    pub backfill_hours: IntCounterVec,
    /// Backfill download tries, by outcome (`ok`, `failed`).
    pub backfill_tries: IntCounterVec,
    /// Dump lines a backfill produced to `pageviews`.
    pub backfill_lines: prometheus::IntCounter,
    /// Backfill jobs this instance is running.
    pub backfill_jobs_running: IntGauge,
    /// Errors reported by the Kafka client, by kind.
    pub kafka_errors: IntCounterVec,
    /// Times a task waited because the producer queue was full (backpressure from the broker).
    pub producer_queue_full: prometheus::IntCounter,
    /// Pages in the poll schedules of this instance, by platform.
    pub pages_tracked: IntGaugeVec,
    /// Page polls by platform and outcome: `ok`, `page_error` (the platform could not read that
    /// page), `gave_up` (retries used up), `rejected` (the platform refused the request).
    pub polls: IntCounterVec,
    /// Poll requests by platform and outcome: `ok`, `throttled`, `transient`, `malformed`,
    /// `rejected`.
    pub poll_requests: IntCounterVec,
    /// Duration of one poll request, by platform.
    pub poll_latency: HistogramVec,
    /// When a page's request was sent minus when the page was due, by platform.
    pub schedule_delay: HistogramVec,
    /// Times a platform was paused because it throttled us or reported its budget spent.
    pub throttle_pauses: IntCounterVec,
    /// Pages whose latest poll failed with a per-page error, by platform.
    pub pages_failing: IntGaugeVec,
    /// Pages waiting for a request slot (queued, in flight or waiting to retry), by platform.
    pub poll_queue: IntGaugeVec,
    /// Poll slots skipped because a page's previous slot was polled late, by platform.
    pub poll_skipped_slots: IntCounterVec,
    /// Duration of each state restore, by store.
    pub state_restore_seconds: HistogramVec,
    /// Changelog records read by restores, by store.
    pub state_restored_records: IntCounterVec,
    /// Changelog bytes (keys and values) read by restores, by store.
    pub state_restored_bytes: IntCounterVec,
    /// Tasks restoring their state right now, by store; `/readyz` is not ready while any is.
    pub state_restoring: IntGaugeVec,
    /// Input records skipped because the restored state already covered them, by pipeline.
    pub state_skipped: IntCounterVec,
    /// Times this instance rejoined its consumer group, by reason: `orphaned_partitions` (the
    /// watchdog found partitions without a live owner) or `session_lost` (the coordinator had
    /// dropped this member, e.g. while the broker was paused).
    pub group_rejoins: IntCounterVec,
    /// Instances of this consumer group alive as the instances topic tells (this one included).
    pub group_live_instances: IntGauge,
    /// 1 while this instance writes a pipeline's cluster-wide results (it holds partition 0 of
    /// the pipeline's input), by pipeline.
    pub aggregate_writer: IntGaugeVec,
    /// Input partitions that no live instance holds, as the watchdog last saw them.
    pub group_orphaned_partitions: IntGauge,
    /// Input partitions paused because their task is too far behind.
    pub partitions_paused: IntGauge,
    /// Times an input partition was paused because its task was too far behind.
    pub partition_pauses: prometheus::IntCounter,
    /// Times the engine was restarted in-process after a failure, by reason.
    pub engine_restarts: IntCounterVec,
    /// Times a partition was fetched again from further back because the broker skipped records
    /// after the consumer was positioned (see `kafka::guard`).
    pub consumer_rewinds: prometheus::IntCounter,
    /// Records the consumer delivered again at or before an offset already delivered since the
    /// partition was positioned, dropped (see `kafka::guard`).
    pub consumer_redelivered: prometheus::IntCounter,
    /// Records of an input several pipelines read that a later reader refused and left to the
    /// input's first pipeline, which dead-letters them once, by pipeline, topic and reason class.
    pub shared_refused: IntCounterVec,
    /// App mentions counted in posts (one per app per post).
    pub app_mentions: prometheus::IntCounter,
    /// Apps in this instance's catalogue.
    pub catalogue_apps: IntGauge,
    /// HTTP requests answered, by route template (`/api/v1/pages/{key}`, `unmatched`), method and
    /// status.
    pub http_requests: IntCounterVec,
    /// Time to answer an HTTP request, by route template.
    pub http_latency: HistogramVec,
    /// API requests refused before their handler ran, by reason: `unauthorized`, `forbidden`,
    /// `rate_limited`.
    pub http_refused: IntCounterVec,
    /// Memory by area (`pagepulse_memory_bytes{area}`, see [`memory`]).
    pub memory: memory::MemoryCollector,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
            registry.register(Box::new(c.clone())).expect("metric names are unique");
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
            registry.register(Box::new(g.clone())).expect("metric names are unique");
            g
        };
        let consumed = counter("pagepulse_records_consumed_total", "Records read from Kafka.", &["topic"]);
        let produced =
            counter("pagepulse_records_produced_total", "Records acknowledged by the Kafka broker.", &["topic"]);
        let produce_errors = counter(
            "pagepulse_produce_errors_total",
            "Records that the broker refused or that could not be enqueued for sending.",
            &["topic"],
        );
        let deadlettered = counter(
            "pagepulse_records_deadlettered_total",
            "Input records sent to the dead-letter topic, by input topic and reason class.",
            &["topic", "reason"],
        );
        let e2e_latency = HistogramVec::new(
            HistogramOpts::new(
                "pagepulse_end_to_end_latency_seconds",
                "From an input record's timestamp to the broker's acknowledgement of every output and state change it caused.",
            )
            .buckets(exponential_buckets(0.001, 2.0, 16).expect("bucket parameters are valid")),
            &["pipeline"],
        )
        .expect("metric definition is valid");
        registry.register(Box::new(e2e_latency.clone())).expect("metric names are unique");
        let mailbox_depth = gauge(
            "pagepulse_mailbox_depth",
            "Batches waiting in a partition task's inbox.",
            &["pipeline", "partition"],
        );
        let consumer_lag = gauge(
            "pagepulse_consumer_lag",
            "Messages between the committed/consumed position and the high watermark, per input partition.",
            &["topic", "partition"],
        );
        let assigned_partitions =
            IntGauge::new("pagepulse_assigned_partitions", "Input partitions currently assigned to this instance.")
                .expect("metric definition is valid");
        registry.register(Box::new(assigned_partitions.clone())).expect("metric names are unique");
        let tasks = gauge("pagepulse_tasks", "Running partition tasks.", &["pipeline"]);
        let window_ignored = counter(
            "pagepulse_window_ignored_events_total",
            "Events a windowed aggregation ignored: too late for the window, or over its key bound.",
            &["pipeline", "reason"],
        );
        let pageviews_file_hours = counter(
            "pagepulse_pageviews_file_hours_total",
            "Hours of files the pageviews pipeline handled per partition, by outcome (final, skipped, replaced, aborted).",
            &["outcome"],
        );
        let backfill_hours = counter(
            "pagepulse_backfill_hours_total",
            "Backfill hours that ended, by status (done, skipped, failed).",
            &["status"],
        );
        let backfill_tries = counter(
            "pagepulse_backfill_tries_total",
            "Backfill download tries, by outcome (ok, failed).",
            &["outcome"],
        );
        let backfill_lines = prometheus::IntCounter::new(
            "pagepulse_backfill_lines_total",
            "Dump lines backfills produced to pageviews.",
        )
        .expect("metric definition is valid");
        registry.register(Box::new(backfill_lines.clone())).expect("metric names are unique");
        let backfill_jobs_running =
            IntGauge::new("pagepulse_backfill_jobs_running", "Backfill jobs this instance is running.")
                .expect("metric definition is valid");
        registry.register(Box::new(backfill_jobs_running.clone())).expect("metric names are unique");
        let kafka_errors = counter("pagepulse_kafka_errors_total", "Errors reported by the Kafka client.", &["kind"]);
        let producer_queue_full = prometheus::IntCounter::new(
            "pagepulse_producer_queue_full_waits_total",
            "Times a task waited 1 ms because the producer queue was at its bound (backpressure from the broker).",
        )
        .expect("metric definition is valid");
        registry.register(Box::new(producer_queue_full.clone())).expect("metric names are unique");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["platform"])
                .expect("metric definition is valid");
            registry.register(Box::new(h.clone())).expect("metric names are unique");
            h
        };
        let pages_tracked = gauge("pagepulse_pages_tracked", "Pages in this instance's poll schedules.", &["platform"]);
        let polls = counter(
            "pagepulse_polls_total",
            "Page polls by outcome: ok, page_error, gave_up (retries used up), rejected (request refused).",
            &["platform", "outcome"],
        );
        let poll_requests = counter(
            "pagepulse_poll_requests_total",
            "Poll requests by outcome: ok, throttled, transient, malformed, rejected.",
            &["platform", "outcome"],
        );
        // Decimal bounds, so that "p99 under 1 s" and similar targets read straight off a bucket.
        let seconds = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        ];
        let poll_latency =
            histogram("pagepulse_poll_latency_seconds", "Duration of one poll request to a platform.", seconds.clone());
        let schedule_delay = histogram(
            "pagepulse_schedule_delay_seconds",
            "Time a page's poll request was sent minus the time the page was due.",
            seconds,
        );
        let throttle_pauses = counter(
            "pagepulse_throttle_pauses_total",
            "Times a platform was paused because it throttled pagepulse or reported its budget spent.",
            &["platform"],
        );
        let pages_failing =
            gauge("pagepulse_pages_failing", "Pages whose latest poll failed with a per-page error.", &["platform"]);
        let poll_queue = gauge(
            "pagepulse_poll_queue_pages",
            "Pages waiting for a request slot: queued, in flight or waiting to retry.",
            &["platform"],
        );
        let poll_skipped_slots = counter(
            "pagepulse_poll_skipped_slots_total",
            "Poll slots skipped because a page's previous slot was polled more than one interval late.",
            &["platform"],
        );
        let state_restore_seconds = HistogramVec::new(
            HistogramOpts::new(
                "pagepulse_state_restore_seconds",
                "Time a task took to restore its partition's state from the changelog.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]),
            &["store"],
        )
        .expect("metric definition is valid");
        registry.register(Box::new(state_restore_seconds.clone())).expect("metric names are unique");
        let state_restored_records =
            counter("pagepulse_state_restored_records_total", "Changelog records read by state restores.", &["store"]);
        let state_restored_bytes = counter(
            "pagepulse_state_restored_bytes_total",
            "Changelog bytes (keys and values) read by state restores.",
            &["store"],
        );
        let state_restoring =
            gauge("pagepulse_state_restoring_tasks", "Tasks restoring their state right now.", &["store"]);
        let state_skipped = counter(
            "pagepulse_state_skipped_records_total",
            "Input records skipped because the restored state already covered them.",
            &["pipeline"],
        );
        let group_rejoins = counter(
            "pagepulse_group_rejoins_total",
            "Times this instance rejoined its consumer group: orphaned_partitions (no live owner) or session_lost.",
            &["reason"],
        );
        let plain_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("metric definition is valid");
            registry.register(Box::new(g.clone())).expect("metric names are unique");
            g
        };
        let group_live_instances = plain_gauge(
            "pagepulse_group_live_instances",
            "Instances of this consumer group alive according to the instances topic, this one included.",
        );
        let group_orphaned_partitions =
            plain_gauge("pagepulse_group_orphaned_partitions", "Input partitions that no live instance holds.");
        let partitions_paused =
            plain_gauge("pagepulse_partitions_paused", "Input partitions paused because their task is too far behind.");
        let partition_pauses = prometheus::IntCounter::new(
            "pagepulse_partition_pauses_total",
            "Times an input partition was paused because its task was too far behind.",
        )
        .expect("metric definition is valid");
        registry.register(Box::new(partition_pauses.clone())).expect("metric names are unique");
        let aggregate_writer = gauge(
            "pagepulse_aggregate_writer",
            "1 while this instance writes the pipeline's cluster-wide results (rankings): it holds partition 0 of the pipeline's input.",
            &["pipeline"],
        );
        let engine_restarts = counter(
            "pagepulse_engine_restarts_total",
            "Times the engine restarted in-process after a failure (from the last committed offsets and state).",
            &["reason"],
        );
        let consumer_rewinds = prometheus::IntCounter::new(
            "pagepulse_consumer_rewinds_total",
            "Times a partition was fetched again from further back because the broker skipped records after a positioning.",
        )
        .expect("metric definition is valid");
        registry.register(Box::new(consumer_rewinds.clone())).expect("metric names are unique");
        let consumer_redelivered = prometheus::IntCounter::new(
            "pagepulse_consumer_redelivered_total",
            "Records delivered again by the consumer at or before an offset already delivered, dropped.",
        )
        .expect("metric definition is valid");
        registry.register(Box::new(consumer_redelivered.clone())).expect("metric names are unique");
        let shared_refused = counter(
            "pagepulse_shared_input_refused_total",
            "Records of an input several pipelines read that this pipeline refused and left to the input's first pipeline, which dead-letters them.",
            &["pipeline", "topic", "reason"],
        );
        let app_mentions = prometheus::IntCounter::new(
            "pagepulse_app_mentions_total",
            "App mentions counted in posts (one per app per post).",
        )
        .expect("metric definition is valid");
        registry.register(Box::new(app_mentions.clone())).expect("metric names are unique");
        let catalogue_apps = plain_gauge("pagepulse_catalogue_apps", "Apps in this instance's app catalogue.");
        let http_requests = counter(
            "pagepulse_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            &["route", "method", "status"],
        );
        let http_latency = HistogramVec::new(
            HistogramOpts::new("pagepulse_http_request_duration_seconds", "Time to answer an HTTP request.")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0]),
            &["route"],
        )
        .expect("metric definition is valid");
        registry.register(Box::new(http_latency.clone())).expect("metric names are unique");
        let http_refused = counter(
            "pagepulse_http_refused_total",
            "API requests refused before their handler ran: unauthorized, forbidden, rate_limited.",
            &["reason"],
        );
        let memory = memory::MemoryCollector::new();
        registry.register(Box::new(memory.clone())).expect("metric names are unique");
        Self {
            registry,
            memory,
            consumed,
            produced,
            produce_errors,
            deadlettered,
            e2e_latency,
            mailbox_depth,
            consumer_lag,
            assigned_partitions,
            tasks,
            window_ignored,
            pageviews_file_hours,
            backfill_hours,
            backfill_tries,
            backfill_lines,
            backfill_jobs_running,
            kafka_errors,
            producer_queue_full,
            pages_tracked,
            polls,
            poll_requests,
            poll_latency,
            schedule_delay,
            throttle_pauses,
            pages_failing,
            poll_queue,
            poll_skipped_slots,
            state_restore_seconds,
            state_restored_records,
            state_restored_bytes,
            state_restoring,
            state_skipped,
            group_rejoins,
            group_live_instances,
            aggregate_writer,
            group_orphaned_partitions,
            partitions_paused,
            partition_pauses,
            engine_restarts,
            consumer_rewinds,
            consumer_redelivered,
            shared_refused,
            app_mentions,
            catalogue_apps,
            http_requests,
            http_latency,
            http_refused,
        }
    }

    /// Adds `collector` (e.g. the pipelines' results, [`results`]) to what [`Metrics::render`]
    /// exports.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }

    /// The registry, for callers that add metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
