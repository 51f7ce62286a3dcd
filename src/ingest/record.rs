//! The Kafka records ingestion writes. The pageviews pipeline decodes exactly these:
//!
//! - `pageviews`: key = domain code, value
//!   `{"domain": "en", "title": "Main_Page", "views": 242332, "ts": 1795424400000}` (`ts`: start of
//!   the hour, epoch milliseconds).
//!   A record of a file ingestion also carries `"batch": "<id>"`, and the ingestion writes
//!   **control records** (key [`CONTROL_KEY`], one to every partition):
//!   `{"control": "begin", "hour": 1795424400000, "batch": "<id>", "replace": false}` before its
//!   records, `{"control": "end", ...}` after every record is acknowledged, or
//!   `{"control": "abort", ...}` when it gives up. The hour of a file is final once its end is in.
//! - `pageviews.blacklist`: key = `"<domain> <title>"`, value `{"domain": "en", "title": "..."}`,
//!   or a tombstone (no value) to lift the entry.

use serde::Serialize;

use super::dump::{BlacklistEntry, PageviewLine};

/// The JSON value of a `pageviews` record.
#[derive(Debug, Serialize)]
pub struct PageviewValue<'a> {
    /// Domain code.
    pub domain: &'a str,
    /// Title exactly as in the dump.
    pub title: &'a str,
    /// Views in the hour.
    pub views: u64,
    /// Start of the hour, epoch milliseconds (UTC).
    pub ts: i64,
}

/// Key of the control records of file ingestions on `pageviews` (not a domain code: those have
/// no `!`).
pub const CONTROL_KEY: &str = "!file";

/// Longest batch id accepted.
pub const MAX_BATCH: usize = 128;

/// What a control record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlKind {
    /// The batch's records of the hour follow.
    Begin,
    /// Every record of the batch is in: the hour is final.
    End,
    /// The batch gave up: its partial counts are dropped.
    Abort,
}

/// The JSON value of a control record.
#[derive(Debug, Serialize)]
pub struct ControlValue<'a> {
    /// What it says.
    pub control: ControlKind,
    /// Start of the hour, epoch milliseconds (UTC).
    pub hour: i64,
    /// The ingestion's batch id.
    pub batch: &'a str,
    /// On `begin`: count the hour again even if it is final from a file.
    pub replace: bool,
}

/// Writes a control record's value into `out` (cleared first).
pub fn encode_control(control: ControlKind, hour: i64, batch: &str, replace: bool, out: &mut Vec<u8>) {
    out.clear();
    let value = ControlValue { control, hour, batch, replace };
    serde_json::to_writer(out, &value).expect("serializing strings and integers into a Vec cannot fail");
}

/// Writes the value of the `pageviews` record of `line`, of file ingestion `batch`, into `out`.
pub fn encode_pageview_of(line: &PageviewLine<'_>, ts_ms: i64, batch: &str, out: &mut Vec<u8>) {
    out.clear();
    #[derive(Serialize)]
    struct Of<'a> {
        domain: &'a str,
        title: &'a str,
        views: u64,
        ts: i64,
        batch: &'a str,
    }
    let value = Of { domain: line.domain, title: line.title, views: line.views, ts: ts_ms, batch };
    serde_json::to_writer(out, &value).expect("serializing strings and integers into a Vec cannot fail");
}

/// The JSON value of a `pageviews.blacklist` record.
#[derive(Debug, Serialize)]
pub struct BlacklistValue<'a> {
    /// Domain code.
    pub domain: &'a str,
    /// Title.
    pub title: &'a str,
}

/// Writes the value of the `pageviews` record of `line` in the hour starting at `ts_ms` into
/// `out` (cleared first, so one buffer serves every line); the key is `line.domain`.
pub fn encode_pageview(line: &PageviewLine<'_>, ts_ms: i64, out: &mut Vec<u8>) {
    out.clear();
    let value = PageviewValue { domain: line.domain, title: line.title, views: line.views, ts: ts_ms };
    serde_json::to_writer(out, &value).expect("serializing strings and integers into a Vec cannot fail");
}

/// Writes the key of the `pageviews.blacklist` record of `entry` into `key`, and its value into
/// `value` unless `remove` (then the record is a tombstone). Both buffers are cleared first.
pub fn encode_blacklist(entry: &BlacklistEntry<'_>, remove: bool, key: &mut Vec<u8>, value: &mut Vec<u8>) {
    key.clear();
    key.extend_from_slice(entry.domain.as_bytes());
    key.push(b' ');
    key.extend_from_slice(entry.title.as_bytes());
    value.clear();
    if !remove {
        let v = BlacklistValue { domain: entry.domain, title: entry.title };
        serde_json::to_writer(value, &v).expect("serializing strings into a Vec cannot fail");
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::ingest::dump::parse_line;

    #[test]
    fn pageview_value_is_the_agreed_json() {
        let mut out = Vec::new();
        let line = parse_line(b"en Main_Page 242332 0").expect("valid");
        encode_pageview(&line, 1_795_424_400_000, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).expect("utf8"),
            r#"{"domain":"en","title":"Main_Page","views":242332,"ts":1795424400000}"#
        );
    }

    #[test]
    fn odd_titles_are_escaped_and_round_trip() {
        let mut out = vec![b'x'; 5];
        for title in [
            r#"Quote_"this"_one"#,
            r"Back\slash\\",
            "Tab\there",
            "Ctrl\u{1}char",
            "東京都",
            "Emoji_🎉",
            "%22percent%22",
            "</script>",
        ] {
            let raw = format!("de.m {title} 7 0");
            let line = parse_line(raw.as_bytes()).expect("valid");
            encode_pageview(&line, 0, &mut out);
            let v: Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(v, json!({"domain": "de.m", "title": title, "views": 7, "ts": 0}), "{title}");
        }
    }

    #[test]
    fn blacklist_records_and_tombstones() {
        let (mut k, mut v) = (Vec::new(), Vec::new());
        let e = BlacklistEntry { domain: "en", title: r#"Special:"Search""# };
        encode_blacklist(&e, false, &mut k, &mut v);
        assert_eq!(k, br#"en Special:"Search""#);
        let got: Value = serde_json::from_slice(&v).expect("valid JSON");
        assert_eq!(got, json!({"domain": "en", "title": r#"Special:"Search""#}));
        encode_blacklist(&e, true, &mut k, &mut v);
        assert_eq!(k, br#"en Special:"Search""#);
        assert!(v.is_empty());
    }
}
