//! A page's history as queries read it: its line chart over a time range at 10-minute or hourly
//! resolution, and its table of every sample kept, newest first, a page at a time. Plain
//! functions over what [`FansLive::history`](super::live::FansLive::history) copies out of a page.
//!
//! What is kept (see [`crate::ops::series`]): the latest [`TABLE_ROWS`](crate::ops::series::TABLE_ROWS)
//! raw samples, the last sample of every 10-minute bucket of the last 7 days (from the hour
//! 7 days before the newest one's), and the last
//! sample of every hour of the last 30 days. The table lists the raw samples, then, older than
//! the oldest of them, the 10-minute points, then the hourly ones: every observation the page
//! still has, at the finest resolution kept.

use serde::{Deserialize, Serialize};

use crate::clock::format_ms;
use crate::ops::series::{Sample, SeriesPoint, COARSE_MS};

/// The resolution of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// One point per 10-minute bucket where kept (the last 7 days), hourly before.
    TenMinutes,
    /// One point per hour.
    Hour,
}

impl Resolution {
    /// `10m` or `1h`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "10m" => Some(Self::TenMinutes),
            "1h" => Some(Self::Hour),
            _ => None,
        }
    }
}

/// One point of a chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChartPoint {
    /// When its sample was observed (RFC 3339).
    pub at: String,
    /// The fan count then.
    pub fans: u64,
    /// Start of the bucket it is the last sample of (RFC 3339).
    pub bucket_start: String,
    /// The bucket's width in seconds: 600 or 3600.
    pub bucket_s: i64,
}

/// The points of `points` (oldest first, as [`crate::ops::series::RollingFans::series`] gives
/// them) observed in `[from_ms, to_ms)`, at `resolution`: for [`Resolution::Hour`], the last
/// sample of each hour.
pub fn chart(points: &[SeriesPoint], from_ms: i64, to_ms: i64, resolution: Resolution) -> Vec<ChartPoint> {
    let inside = points.iter().filter(|p| p.at_ms >= from_ms && p.at_ms < to_ms);
    let mut out: Vec<SeriesPoint> = Vec::new();
    for p in inside {
        let p = match resolution {
            Resolution::TenMinutes => *p,
            Resolution::Hour => {
                SeriesPoint { start_ms: p.start_ms.div_euclid(COARSE_MS) * COARSE_MS, width_ms: COARSE_MS, ..*p }
            }
        };
        match out.last_mut() {
            // Points come oldest first: a later one of the same hour replaces the earlier.
            Some(last) if last.start_ms == p.start_ms && last.width_ms == p.width_ms => *last = p,
            _ => out.push(p),
        }
    }
    out.into_iter()
        .map(|p| ChartPoint {
            at: format_ms(p.at_ms),
            fans: p.fans,
            bucket_start: format_ms(p.start_ms),
            bucket_s: p.width_ms / 1000,
        })
        .collect()
}

/// One row of a page's table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// When it was observed (RFC 3339).
    pub observed_at: String,
    /// Fan count.
    pub fans: u64,
    /// Follower count, for raw samples when the platform reports one.
    pub followers: Option<u64>,
    /// `sample` (a raw observation), `10m` or `1h` (the last sample of its bucket).
    pub kind: &'static str,
}

/// A page of a table: rows newest first, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TablePage {
    /// The rows, newest first.
    pub rows: Vec<Row>,
    /// Pass as `cursor` to get the next (older) rows; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A cursor: the observation time (epoch ms) of the last row already returned; rows strictly
/// older follow.
pub fn cursor(at_ms: i64) -> String {
    format!("t{at_ms}")
}

/// Reads a [`cursor`]; `None` when it is not one.
pub fn parse_cursor(s: &str) -> Option<i64> {
    s.strip_prefix('t')?.parse().ok()
}

/// Every row kept, newest first, older than `before_ms` (exclusive), at most `limit` of them.
/// `samples` newest first, `points` oldest first, as the series gives them.
pub fn table(samples: &[Sample], points: &[SeriesPoint], before_ms: i64, limit: usize) -> TablePage {
    let oldest_sample = samples.last().map_or(i64::MAX, |s| s.at_ms);
    let raw = samples.iter().map(|s| (s.at_ms, s.fans, s.followers, "sample"));
    let older = points
        .iter()
        .rev()
        .filter(|p| p.at_ms < oldest_sample)
        .map(|p| (p.at_ms, p.fans, None, if p.width_ms == COARSE_MS { "1h" } else { "10m" }));
    let mut rows: Vec<Row> = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    for (at_ms, fans, followers, kind) in raw.chain(older).filter(|r| r.0 < before_ms) {
        if rows.len() == limit {
            more = true;
            break;
        }
        rows.push(Row { observed_at: format_ms(at_ms), fans, followers, kind });
    }
    let next_cursor = more.then(|| rows.last().map(|r| r.observed_at.clone())).flatten().map(|at| {
        let ms = chrono::DateTime::parse_from_rfc3339(&at).map(|t| t.timestamp_millis()).unwrap_or(i64::MIN);
        cursor(ms)
    });
    TablePage { rows, next_cursor }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::series::{RollingFans, FINE_MS};

    const H: i64 = 3_600_000;
    const T0: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z

    /// A page observed every 5 minutes for 30 days, fans = minutes since T0.
    fn page() -> RollingFans {
        let mut s = RollingFans::new();
        let mut t = T0;
        while t < T0 + 30 * 24 * H {
            s.observe(Sample { at_ms: t, fans: ((t - T0) / 60_000) as u64, followers: Some(1) });
            t += 5 * 60_000;
        }
        s
    }

    #[test]
    fn the_chart_keeps_the_range_and_the_last_sample_of_each_bucket() {
        let s = page();
        let end = T0 + 30 * 24 * H;
        let points = s.series();
        // The last 3 hours at 10 minutes: 18 buckets, each's last sample at +5 min.
        let c = chart(&points, end - 3 * H, end, Resolution::TenMinutes);
        assert_eq!(c.len(), 18);
        assert!(c.iter().all(|p| p.bucket_s == FINE_MS / 1000));
        assert_eq!(c[0].at, format_ms(end - 3 * H + 5 * 60_000));
        // The same range hourly: 3 points, each the hour's last sample (at +55 min).
        let c = chart(&points, end - 3 * H, end, Resolution::Hour);
        assert_eq!(c.len(), 3);
        for (i, p) in c.iter().enumerate() {
            let hour = end - 3 * H + i as i64 * H;
            assert_eq!((p.bucket_start.clone(), p.at.clone()), (format_ms(hour), format_ms(hour + 55 * 60_000)));
            assert_eq!(p.fans, ((hour + 55 * 60_000 - T0) / 60_000) as u64);
        }
        // Ten days back only hourly points are kept, whatever the resolution asked.
        let c = chart(&points, end - 10 * 24 * H, end - 10 * 24 * H + 5 * H, Resolution::TenMinutes);
        assert_eq!(c.len(), 5);
        assert!(c.iter().all(|p| p.bucket_s == 3600));
    }

    #[test]
    fn the_table_pages_through_every_row_kept_newest_first() {
        let s = page();
        let (samples, points) = (s.table(), s.series());
        let mut all = Vec::new();
        let mut before = i64::MAX;
        loop {
            let p = table(&samples, &points, before, 100);
            assert!(p.rows.len() <= 100);
            all.extend(p.rows);
            match p.next_cursor {
                Some(c) => before = parse_cursor(&c).expect("a cursor"),
                None => break,
            }
        }
        let times: Vec<i64> = all
            .iter()
            .map(|r| chrono::DateTime::parse_from_rfc3339(&r.observed_at).unwrap().timestamp_millis())
            .collect();
        assert!(times.windows(2).all(|w| w[0] > w[1]), "strictly newest first, no row twice");
        assert_eq!(all.iter().filter(|r| r.kind == "sample").count(), samples.len());
        let older_points = points.iter().filter(|p| p.at_ms < samples.last().unwrap().at_ms).count();
        assert_eq!(all.len(), samples.len() + older_points, "every row kept");
        assert!(all.len() > 24 * 29, "far more than the latest 24 rows");
        assert_eq!(all.last().unwrap().kind, "1h");
        assert_eq!(parse_cursor("x1"), None);
    }
}
