//! The two outputs' values, and the ranking itself as a plain function.
//!
//! - `apps.top` (key = ranking name): the `top_n` apps of the ranking's genres, highest `by`
//!   first, ties by app id (numerically for numeric ids, else by bytes), with their figures and
//!   mention counts.
//! - `apps.mentions` (key = app id): an app's mention counts.

use std::cmp::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::catalogue::App;
use super::config::{RankBy, RankingConfig};

/// An `apps.top` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopValue {
    /// The ranking's name (also the key).
    pub ranking: String,
    /// The genres ranked together.
    pub genres: Vec<String>,
    /// What apps are ranked by.
    pub by: String,
    /// When this record was written (wall clock, RFC 3339).
    pub generated_at: String,
    /// The ranked apps, best first.
    pub apps: Vec<RankedApp>,
}

/// One app of a ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedApp {
    /// 1-based rank.
    pub rank: usize,
    /// App id.
    pub id: String,
    /// The name as listed.
    pub track_name: String,
    /// Primary genre.
    pub prime_genre: String,
    /// User ratings, all versions.
    pub rating_count_tot: u64,
    /// Average user rating.
    pub user_rating: f64,
    /// Price.
    pub price: f64,
    /// Mentions since the app was loaded.
    pub mentions_total: u64,
    /// Mentions over the last 24 hours of post event time.
    pub mentions_24h: u64,
}

/// An `apps.mentions` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MentionsValue {
    /// App id (also the key).
    pub id: String,
    /// The name posts mention it by.
    pub name: String,
    /// Mentions since the app was loaded.
    pub mentions_total: u64,
    /// Mentions over the last 24 hours of post event time.
    pub mentions_24h: u64,
    /// When the counts were taken (wall clock, RFC 3339).
    pub as_of: String,
}

/// Ascending app id order: numeric ids by value, others (and numeric against others) by bytes.
pub fn id_order(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// Ranks `apps` (already restricted to the ranking's genres) by `ranking.by`, highest first, ties
/// by id; `mentions(id)` gives an app's `(total, 24h)` counts. The apps carry no generation time:
/// the caller compares rankings without it.
pub fn rank(ranking: &RankingConfig, mut apps: Vec<Arc<App>>, mentions: impl Fn(&str) -> (u64, u64)) -> Vec<RankedApp> {
    let key = |a: &App| -> f64 {
        match ranking.by {
            RankBy::RatingCountTot => a.rating_count_tot as f64,
            RankBy::RatingCountVer => a.rating_count_ver as f64,
            RankBy::UserRating => a.user_rating,
            RankBy::MentionsTotal => mentions(&a.id).0 as f64,
            RankBy::Mentions24h => mentions(&a.id).1 as f64,
        }
    };
    // Counts are exact in an f64 up to 2^53, far beyond any rating or mention count.
    let mut keyed: Vec<(f64, Arc<App>)> = apps.drain(..).map(|a| (key(&a), a)).collect();
    let by_rank =
        |x: &(f64, Arc<App>), y: &(f64, Arc<App>)| y.0.total_cmp(&x.0).then_with(|| id_order(&x.1.id, &y.1.id));
    if keyed.len() > ranking.top_n {
        keyed.select_nth_unstable_by(ranking.top_n - 1, by_rank);
        keyed.truncate(ranking.top_n);
    }
    keyed.sort_by(by_rank);
    keyed
        .into_iter()
        .enumerate()
        .map(|(i, (_, a))| {
            let (total, day) = mentions(&a.id);
            RankedApp {
                rank: i + 1,
                id: a.id.to_string(),
                track_name: a.track_name.clone(),
                prime_genre: a.prime_genre.clone(),
                rating_count_tot: a.rating_count_tot,
                user_rating: a.user_rating,
                price: a.price,
                mentions_total: total,
                mentions_24h: day,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipelines::apps::matcher::app_name;

    fn app(id: &str, ratings: u64, stars: f64) -> Arc<App> {
        Arc::new(App {
            id: id.into(),
            track_name: format!("App {id}"),
            name: app_name(&format!("App {id}")).into(),
            prime_genre: "Music".into(),
            rating_count_tot: ratings,
            rating_count_ver: 0,
            user_rating: stars,
            price: 0.0,
        })
    }

    fn ranking(by: RankBy, top_n: usize) -> RankingConfig {
        RankingConfig { name: "r".into(), genres: vec!["Music".into()], top_n, by }
    }

    #[test]
    fn highest_first_ties_by_numeric_id() {
        let apps = vec![app("20", 5, 4.0), app("3", 5, 4.5), app("100", 9, 3.0), app("7", 1, 5.0)];
        let ids = |r: Vec<RankedApp>| r.into_iter().map(|a| (a.rank, a.id)).collect::<Vec<_>>();
        let by_ratings = rank(&ranking(RankBy::RatingCountTot, 3), apps.clone(), |_| (0, 0));
        assert_eq!(ids(by_ratings), vec![(1, "100".into()), (2, "3".into()), (3, "20".into())]);
        let by_stars = rank(&ranking(RankBy::UserRating, 10), apps.clone(), |_| (0, 0));
        assert_eq!(by_stars[0].id, "7");
        assert_eq!(by_stars.len(), 4);
        let by_mentions = rank(&ranking(RankBy::Mentions24h, 1), apps, |id| if id == "20" { (9, 2) } else { (1, 1) });
        assert_eq!((by_mentions[0].id.as_str(), by_mentions[0].mentions_total), ("20", 9));
    }
}
