//! `[pipelines.messages]`: the messages pipeline's section of the configuration file.

use std::time::Duration;

use crate::section::Fields;

/// `[pipelines.messages]`
#[derive(Debug, Clone)]
pub struct MessagesConfig {
    /// Run the messages pipeline (default true).
    pub enabled: bool,
    /// Cities in each `messages.stats` and `messages.totals` record (default 10; 1 to 1000).
    pub top_cities: usize,
    /// How far behind its partition's newest event time a message may be and still count in its
    /// minute: a partition's watermark is its newest event time minus this, and a minute is final
    /// once every active partition's watermark has passed its end (default `30s`; at most `1h`).
    pub allowed_lateness: Duration,
    /// A partition without input for this long no longer holds minutes open; once every
    /// partition of the instance has been without input this long, every open minute closes
    /// (default `60s`; `1s` to `1d`).
    pub idle_timeout: Duration,
    /// Shortest time between two `messages.totals` records; one is written only when the figures
    /// changed (default `60s`; `1s` to `1d`).
    pub totals_interval: Duration,
    /// Most distinct usernames one partition counts (all time: distinct users are counted
    /// exactly, so each is remembered); messages of further users are dead-lettered, naming the
    /// key (default 1000000; at most 100000000).
    pub max_users_per_partition: usize,
    /// Most distinct (state, city) pairs one partition counts (all time); messages naming further
    /// cities are dead-lettered, naming the field (default 100000; at most 10000000).
    pub max_cities_per_partition: usize,
    /// Most minutes one partition holds open at once (minutes not yet final); a message that would
    /// open one more is dead-lettered, naming `ts` (default 1440, a day; 1 to 100000).
    pub max_open_minutes: usize,
    /// Most states exported to Prometheus in `pagepulse_messages_by_state` (the most counted
    /// first; default 60; 0 to 10000); further ones are counted in
    /// `pagepulse_results_over_bound`, not exported.
    pub export_states_max: usize,
}

impl MessagesConfig {
    /// Reads and checks the section, recording every problem in `m`.
    pub fn from_section(mut m: Fields<'_>) -> Self {
        let messages = MessagesConfig {
            enabled: m.take("enabled", true),
            top_cities: m.take("top_cities", 10),
            allowed_lateness: m.duration("allowed_lateness", Duration::from_secs(30)),
            idle_timeout: m.duration("idle_timeout", Duration::from_secs(60)),
            totals_interval: m.duration("totals_interval", Duration::from_secs(60)),
            max_users_per_partition: m.take("max_users_per_partition", 1_000_000),
            max_cities_per_partition: m.take("max_cities_per_partition", 100_000),
            max_open_minutes: m.take("max_open_minutes", 1440),
            export_states_max: m.take("export_states_max", 60),
        };
        m.check(messages.export_states_max > 10_000, "export_states_max", "must be at most 10000");
        let day = Duration::from_secs(86_400);
        m.check(!(1..=1000).contains(&messages.top_cities), "top_cities", "must be between 1 and 1000");
        m.check(messages.allowed_lateness > Duration::from_secs(3600), "allowed_lateness", "must be at most 1h");
        m.check(
            !(Duration::from_secs(1)..=day).contains(&messages.idle_timeout),
            "idle_timeout",
            "must be between 1s and 1d",
        );
        m.check(
            !(Duration::from_secs(1)..=day).contains(&messages.totals_interval),
            "totals_interval",
            "must be between 1s and 1d",
        );
        m.check(
            !(1..=100_000_000).contains(&messages.max_users_per_partition),
            "max_users_per_partition",
            "must be between 1 and 100000000",
        );
        m.check(
            !(1..=10_000_000).contains(&messages.max_cities_per_partition),
            "max_cities_per_partition",
            "must be between 1 and 10000000",
        );
        m.check(
            !(1..=100_000).contains(&messages.max_open_minutes),
            "max_open_minutes",
            "must be between 1 and 100000",
        );
        m.finish();
        messages
    }
}
