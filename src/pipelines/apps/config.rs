//! `[pipelines.apps]`: the app-catalogue pipeline's section of the configuration file.

use std::time::Duration;

use serde::Deserialize;

use crate::section::Fields;

/// `[pipelines.apps]`
#[derive(Debug, Clone)]
pub struct AppsConfig {
    /// Run the app-catalogue pipeline: the `apps` catalogue, its rankings and the mentions of its
    /// apps in `posts` (default true).
    pub enabled: bool,
    /// The rankings written to `apps.top`, a list of tables `{ name, genres, top_n, by }`: `name`
    /// (the record's key, unique), `genres` (the `prime_genre`s ranked together), `top_n` (1 to
    /// 1000, default 10) and `by` (`rating_count_tot`, the default, `rating_count_ver`,
    /// `user_rating`, `mentions_total` or `mentions_24h`; highest first, ties by app id). Default:
    /// one ranking, `{ name = "Book+Music", genres = ["Book", "Music"] }`. At most 100.
    pub rankings: Vec<RankingConfig>,
    /// The shortest time between two `apps.mentions` records of one app (default `10s`; `100ms`
    /// to `1h`); one is written only when the app's counts changed.
    pub mentions_interval: Duration,
    /// Granularity of the 24-hour mention window (default `5m`; at least `1s`, and must divide
    /// 24 hours): `mentions_24h` counts the posts of the 24 hours of buckets that end with the
    /// newest post's bucket.
    pub mentions_bucket: Duration,
    /// Most apps the catalogue holds; records of further apps are dead-lettered (default
    /// 1000000).
    pub max_apps: usize,
}

/// One ranking of `[pipelines.apps] rankings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankingConfig {
    /// The ranking's name: the key of its `apps.top` records.
    pub name: String,
    /// The `prime_genre`s ranked together (compared exactly).
    pub genres: Vec<String>,
    /// Apps in the ranking.
    #[serde(default = "default_top_n")]
    pub top_n: usize,
    /// What apps are ranked by.
    #[serde(default)]
    pub by: RankBy,
}

/// What a ranking orders apps by (highest first; ties by app id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// User ratings, all versions: the issue's "most reviewed".
    #[default]
    RatingCountTot,
    /// User ratings of the current version.
    RatingCountVer,
    /// Average user rating.
    UserRating,
    /// Mentions since the app was loaded.
    MentionsTotal,
    /// Mentions in the last 24 hours of post event time.
    #[serde(rename = "mentions_24h")]
    Mentions24h,
}

impl RankBy {
    /// The name written in `apps.top`'s `by` field.
    pub fn as_str(self) -> &'static str {
        match self {
            RankBy::RatingCountTot => "rating_count_tot",
            RankBy::RatingCountVer => "rating_count_ver",
            RankBy::UserRating => "user_rating",
            RankBy::MentionsTotal => "mentions_total",
            RankBy::Mentions24h => "mentions_24h",
        }
    }

    /// True when the ranking moves with mention counts.
    pub fn by_mentions(self) -> bool {
        matches!(self, RankBy::MentionsTotal | RankBy::Mentions24h)
    }
}

/// The issue's ranking: the ten most-reviewed apps of the Book and Music genres.
fn default_top_n() -> usize {
    10
}

/// The default rankings: one, `Book+Music` (what the system pagepulse replaces published).
fn default_rankings() -> Vec<RankingConfig> {
    vec![RankingConfig {
        name: "Book+Music".into(),
        genres: vec!["Book".into(), "Music".into()],
        top_n: default_top_n(),
        by: RankBy::RatingCountTot,
    }]
}

impl AppsConfig {
    /// Reads and checks the section, recording every problem in `a`.
    pub fn from_section(mut a: Fields<'_>) -> Self {
        let apps = AppsConfig {
            enabled: a.take("enabled", true),
            rankings: a.take("rankings", default_rankings()),
            mentions_interval: a.duration("mentions_interval", Duration::from_secs(10)),
            mentions_bucket: a.duration("mentions_bucket", Duration::from_secs(300)),
            max_apps: a.take("max_apps", 1_000_000),
        };
        a.check(apps.rankings.len() > 100, "rankings", "must list at most 100 rankings");
        for (i, r) in apps.rankings.iter().enumerate() {
            let key = |field: &str| format!("rankings[{i}].{field}");
            if r.name.trim().is_empty() || r.name.len() > 256 {
                a.problem(&key("name"), "must be 1 to 256 bytes, not blank");
            }
            if apps.rankings[..i].iter().any(|o| o.name == r.name) {
                a.problem(&key("name"), format!("\"{}\" names two rankings", r.name));
            }
            if r.genres.is_empty() || r.genres.iter().any(|g| g.trim().is_empty()) {
                a.problem(&key("genres"), "must list at least one genre, none blank");
            }
            if !(1..=1000).contains(&r.top_n) {
                a.problem(&key("top_n"), "must be between 1 and 1000");
            }
        }
        a.check(
            !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&apps.mentions_interval),
            "mentions_interval",
            "must be between 100ms and 1h",
        );
        let day_ms = 86_400_000u128;
        let bucket_ms = apps.mentions_bucket.as_millis();
        a.check(
            bucket_ms < 1000 || !day_ms.is_multiple_of(bucket_ms.max(1)),
            "mentions_bucket",
            "must be at least 1s and divide 24h",
        );
        a.check(apps.max_apps == 0, "max_apps", "must be positive");
        a.finish();
        apps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Error};

    fn load(toml: &str) -> Result<Config, Error> {
        Config::from_parts(toml.parse().expect("test TOML"), std::iter::empty())
    }

    #[test]
    fn the_default_ranking_is_the_issues() {
        let cfg = load("").expect("defaults");
        assert_eq!(cfg.apps.rankings, default_rankings());
        assert_eq!(cfg.apps.rankings[0].by.as_str(), "rating_count_tot");
        assert_eq!(cfg.apps.mentions_interval, Duration::from_secs(10));
    }

    #[test]
    fn rankings_are_a_list_and_every_problem_names_its_entry() {
        let cfg = load(
            "[[pipelines.apps.rankings]]\nname = \"Games\"\ngenres = [\"Games\"]\ntop_n = 5\nby = \"mentions_24h\"\n",
        )
        .expect("valid");
        assert_eq!(cfg.apps.rankings.len(), 1);
        assert_eq!((cfg.apps.rankings[0].top_n, cfg.apps.rankings[0].by), (5, RankBy::Mentions24h));
        let err = load(
            "[pipelines.apps]\nmentions_bucket = \"7m\"\n[[pipelines.apps.rankings]]\nname = \"A\"\ngenres = []\n\
             [[pipelines.apps.rankings]]\nname = \"A\"\ngenres = [\"Book\"]\ntop_n = 0\n",
        )
        .expect_err("invalid");
        let text = err.to_string();
        for key in [
            "pipelines.apps.rankings[0].genres",
            "pipelines.apps.rankings[1].name",
            "pipelines.apps.rankings[1].top_n",
            "pipelines.apps.mentions_bucket",
        ] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
        let err = load("[[pipelines.apps.rankings]]\nname = \"A\"\ngenres = [\"Book\"]\nby = \"stars\"\n")
            .expect_err("unknown `by`");
        assert!(err.to_string().contains("pipelines.apps.rankings"), "{err}");
    }
}
