//! The posts pipeline's per-partition logic: decode and validate a post, analyse its text, emit
//! `posts.analysis`, and count its hashtags (for the aggregate, and in the durable
//! [`TagBuckets`]).

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::config::PostsConfig;
use super::names::{ANALYSIS, MAX_FUTURE_SKEW_MS};
use super::store::TagBuckets;
use super::trending::TagHit;
use crate::clock::{format_ms, Clock};
use crate::engine::state::{Change, Entries};
use crate::engine::{Emit, OutRecord, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::ops::text;
use crate::ops::window::AddOutcome;
use crate::pipelines::decode::{object, optional_str, plain_string_fields, required_str, rfc3339_ms, utf8_value};

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    author: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created_at: Option<&'a RawValue>,
}

/// A decoded, valid post.
#[derive(Debug, Clone, PartialEq)]
pub struct Post<'a> {
    /// Post id.
    pub id: Cow<'a, str>,
    /// Text.
    pub content: Cow<'a, str>,
    /// `created_at` in epoch milliseconds, if given.
    pub created_at_ms: Option<i64>,
}

/// Decodes and validates a `posts` record value.
///
/// A value in the plainest form (string fields without escapes, [`plain_string_fields`]) that
/// passes every check is read in one pass; anything else takes the full decoder, which gives the
/// same answer for the plain ones (a property test checks it) and the errors for the rest.
pub fn decode_post(rec: &RawRecord, max_content_bytes: usize) -> Result<Post<'_>, Rejection> {
    let text = utf8_value(rec)?;
    if let Some([Some(id), Some(content), _author, created_at]) =
        plain_string_fields(text, ["id", "content", "author", "created_at"])
    {
        if !id.is_empty() && content.len() <= max_content_bytes {
            let created_at_ms = match created_at {
                Some(t) => rfc3339_ms("created_at", t).ok().map(Some),
                None => Some(None),
            };
            // An invalid `created_at`: the full decoder words the error.
            if let Some(created_at_ms) = created_at_ms {
                return Ok(Post { id: Cow::Borrowed(id), content: Cow::Borrowed(content), created_at_ms });
            }
        }
    }
    decode_post_fully(text, max_content_bytes)
}

/// [`decode_post`] of any value, by the field helpers of [`crate::pipelines::decode`].
fn decode_post_fully(text: &str, max_content_bytes: usize) -> Result<Post<'_>, Rejection> {
    let wire: Wire<'_> = object(text)?;
    let id = required_str("id", wire.id)?;
    if id.is_empty() {
        return Err(Rejection::new(RejectClass::InvalidValue, "field `id` must not be empty"));
    }
    let content = required_str("content", wire.content)?;
    if content.len() > max_content_bytes {
        return Err(Rejection::new(
            RejectClass::TooLarge,
            format!("field `content` is {} bytes, more than the {} allowed", content.len(), max_content_bytes),
        ));
    }
    optional_str("author", wire.author)?;
    let created_at_ms = match optional_str("created_at", wire.created_at)? {
        Some(t) => Some(rfc3339_ms("created_at", &t)?),
        None => None,
    };
    Ok(Post { id, content, created_at_ms })
}

/// A `posts.analysis` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis<'a> {
    /// Post id (borrowed from the input when writing, owned when reading).
    pub id: Cow<'a, str>,
    /// UAX #29 words in `content`.
    pub word_count: usize,
    /// Mean word length in Unicode scalar values; 0 with no words.
    pub avg_word_length: f64,
    /// Lower-cased hashtags without `#`, de-duplicated, in order of first appearance.
    pub hashtags: Vec<String>,
    /// Lower-cased mentions without `@`, de-duplicated, in order of first appearance.
    pub mentions: Vec<String>,
    /// When pagepulse analysed the post (RFC 3339, UTC).
    pub analyzed_at: Cow<'a, str>,
}

/// The per-partition posts processor.
pub struct PostsProcessor {
    max_content_bytes: usize,
    clock: Arc<dyn Clock>,
    /// `analyzed_at` of the last record, formatted: thousands of records share a second
    /// ([`PostsProcessor::stamp_at`]).
    stamp: (i64, String),
    /// The durable share of the trending counts.
    tags: TagBuckets,
    /// The input partition (its trending share is published under it).
    partition: i32,
    /// Hashtags ignored: too late for the window, or past `trending_max_tags`.
    ignored: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
}

impl PostsProcessor {
    /// A processor with the pipeline's config.
    pub fn new(cfg: &PostsConfig, clock: Arc<dyn Clock>) -> Self {
        let tags = TagBuckets::new(cfg);
        Self {
            max_content_bytes: cfg.max_content_bytes,
            clock,
            stamp: (i64::MIN, String::new()),
            tags,
            partition: 0,
            ignored: None,
        }
    }

    /// Counts ignored hashtags in `pagepulse_window_ignored_events_total{pipeline="posts"}`.
    pub fn with_metrics(mut self, metrics: &crate::metrics::Metrics) -> Self {
        let m = &metrics.window_ignored;
        self.ignored = Some((
            m.with_label_values(&[super::PIPELINE, "late"]),
            m.with_label_values(&[super::PIPELINE, "over_capacity"]),
        ));
        self
    }

    /// The processor of input partition `partition` (default 0).
    pub fn for_partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }
}

impl PostsProcessor {
    /// Sets `self.stamp` to `now_ms` formatted. Thousands of records share a second: within
    /// the same second only the three millisecond digits change, rewritten in place.
    fn stamp_at(&mut self, now_ms: i64) {
        let (at, text) = &mut self.stamp;
        if *at == now_ms {
            return;
        }
        // `format_ms` always ends with `.mmmZ`.
        if *at != i64::MIN && at.div_euclid(1000) == now_ms.div_euclid(1000) && text.len() >= 5 {
            let ms = now_ms.rem_euclid(1000);
            let digits = [ms / 100, ms / 10 % 10, ms % 10].map(|d| b'0' + d as u8);
            let start = text.len() - 4;
            text.replace_range(start..start + 3, std::str::from_utf8(&digits).expect("ASCII digits"));
        } else {
            *text = format_ms(now_ms);
        }
        *at = now_ms;
    }
}

/// Writes a JSON string as `serde_json` writes it: as is between quotes when nothing in it needs
/// escaping (the usual case), through `serde_json` otherwise.
fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        serde_json::to_writer(&mut *buf, s).expect("serializing a string into a Vec cannot fail");
    } else {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    }
}

fn write_json_strs(buf: &mut Vec<u8>, list: &[String]) {
    buf.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_json_str(buf, s);
    }
    buf.push(b']');
}

/// Writes the [`Analysis`] of a post into `buf`, byte for byte what `serde_json::to_writer` writes
/// for it (a property test checks it), without its per-field machinery: the analysis is written
/// once per post.
pub fn write_analysis(buf: &mut Vec<u8>, id: &str, stats: &text::TextStats, analyzed_at: &str) {
    buf.extend_from_slice(b"{\"id\":");
    write_json_str(buf, id);
    buf.extend_from_slice(b",\"word_count\":");
    buf.extend_from_slice(itoa::Buffer::new().format(stats.word_count).as_bytes());
    buf.extend_from_slice(b",\"avg_word_length\":");
    if stats.avg_word_length.is_finite() {
        buf.extend_from_slice(ryu::Buffer::new().format_finite(stats.avg_word_length).as_bytes());
    } else {
        buf.extend_from_slice(b"null"); // as serde_json (a mean of counts is always finite)
    }
    buf.extend_from_slice(b",\"hashtags\":");
    write_json_strs(buf, &stats.hashtags);
    buf.extend_from_slice(b",\"mentions\":");
    write_json_strs(buf, &stats.mentions);
    buf.extend_from_slice(b",\"analyzed_at\":");
    write_json_str(buf, analyzed_at);
    buf.push(b'}');
}

impl Processor for PostsProcessor {
    type Input<'a> = Post<'a>;
    type Part = TagHit;

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<Post<'a>, Rejection> {
        decode_post(rec, self.max_content_bytes)
    }

    fn process(&mut self, post: Post<'_>, meta: &RecordMeta, out: &mut Emit<TagHit>) {
        let now_ms = self.clock.now().timestamp_millis();
        let stats = text::analyze(&post.content);
        let event_ms = post.created_at_ms.or(meta.timestamp_ms).unwrap_or(now_ms).min(now_ms + MAX_FUTURE_SKEW_MS);
        self.stamp_at(now_ms);
        // Room for the fixed fields and the usual tags, so the buffer is allocated once.
        let mut value = Vec::with_capacity(128 + post.id.len() + post.content.len() / 2);
        write_analysis(&mut value, &post.id, &stats, &self.stamp.1);
        out.record(OutRecord::new(ANALYSIS, post.id.as_bytes(), value));
        // The analysis is written: the hashtags move into the parts (no copy).
        for tag in stats.hashtags {
            match self.tags.add(&tag, event_ms) {
                Ok(count) => out.part(TagHit { partition: self.partition, tag, ts_ms: event_ms, count }),
                Err(why) => {
                    if let Some((late, over)) = &self.ignored {
                        if why == AddOutcome::Late {
                            late.inc()
                        } else {
                            over.inc()
                        }
                    }
                }
            }
        }
    }

    fn take_changes(&mut self, out: &mut Vec<Change>) {
        self.tags.take_changes(out);
    }

    fn restore(&mut self, entries: Entries, out: &mut Emit<TagHit>) {
        self.tags.restore(self.partition, entries, &mut out.parts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Config;
    use crate::pipelines::posts::INPUT;

    fn rec(v: &str) -> RawRecord {
        RawRecord { key: Some(b"k".to_vec()), value: Some(v.as_bytes().to_vec()), offset: 7, timestamp_ms: Some(1_000) }
    }

    fn reject(v: &str) -> Rejection {
        decode_post(&rec(v), 65536).expect_err("should be rejected")
    }

    #[test]
    fn decodes_valid_posts() {
        let r = rec(r#"{"id":"1","content":"hi","author":"ana","created_at":"2026-11-23T10:00:00Z"}"#);
        let p = decode_post(&r, 65536).expect("valid");
        assert_eq!(p.id, "1");
        assert_eq!(p.created_at_ms, Some(1_795_428_000_000));
        let r = rec(r#"{"id":"2","content":"","extra":[1,2]}"#);
        let p = decode_post(&r, 65536).expect("valid, extra ignored");
        assert_eq!(p.created_at_ms, None);
    }

    #[test]
    fn rejections_name_the_field() {
        assert_eq!(reject(r#"{"content":"x"}"#).message, "field `id` is missing");
        assert_eq!(reject(r#"{"id":5,"content":"x"}"#).message, "field `id` must be a string, found number");
        assert_eq!(reject(r#"{"id":"1"}"#).message, "field `content` is missing");
        assert_eq!(reject(r#"{"id":"1","content":["x"]}"#).class, RejectClass::WrongType);
        assert_eq!(reject(r#"{"id":"","content":"x"}"#).class, RejectClass::InvalidValue);
        assert_eq!(
            reject(r#"{"id":"1","content":"x","author":1}"#).message,
            "field `author` must be a string, found number"
        );
        assert!(reject(r#"{"id":"1","content":"x","created_at":"noon"}"#).message.starts_with("field `created_at`"));
        let big = format!(r#"{{"id":"1","content":"{}"}}"#, "a".repeat(65537));
        assert_eq!(reject(&big).class, RejectClass::TooLarge);
        assert_eq!(reject("not json").class, RejectClass::InvalidJson);
    }

    /// The one-pass reading of plain values must answer exactly as the full decoder, on values
    /// full of what makes it step aside.
    #[test]
    fn the_plain_path_answers_as_the_full_decoder() {
        use rand::{Rng, SeedableRng};
        const KEYS: &[&str] = &[
            r#""id""#,
            r#""content""#,
            r#""author""#,
            r#""created_at""#,
            r#""extra""#,
            r#""i\u0064""#,
            r#""""#,
            r#""Content""#,
        ];
        const VALUES: &[&str] = &[
            r#""x""#,
            r#""""#,
            r#""hello world""#,
            r#""a\nb""#,
            "\"tab\there\"",
            r#""2026-11-23T10:00:00Z""#,
            r#""2026-11-23T10:00:00.123+02:00""#,
            r#""noon""#,
            r#""2026-11-23T10:00:00\u005a""#,
            "5",
            "null",
            "true",
            "[1,2]",
            r#"{"a":"b"}"#,
            r#""é東🎉""#,
            r#""a longer text than eight""#,
            r#""\"q\"""#,
            "\"\u{7f}\"",
        ];
        const GOOD: &[&str] = &[r#""p-1""#, r#""hi there""#, r#""ana""#, r#""2026-11-23T10:00:00Z""#];
        const WS: &[&str] = &["", "", "", "", "", "", " ", "\n", "\t", "\r\n"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut plain_ok = 0;
        for round in 0..50_000 {
            let ws = |rng: &mut rand::rngs::StdRng| match rng.gen_bool(0.005) {
                true => "\u{a0}",
                false => WS[rng.gen_range(0..WS.len())],
            };
            let mut v = String::from(ws(&mut rng));
            v.push('{');
            let members = if rng.gen_bool(0.8) { rng.gen_range(2..5) } else { rng.gen_range(0..7) };
            for m in 0..members {
                // Mostly the fields of a post, in order; sometimes anything.
                let key = if rng.gen_bool(0.9) { KEYS[m % 4] } else { KEYS[rng.gen_range(0..KEYS.len())] };
                let value = if rng.gen_bool(0.8) { GOOD[m % 4] } else { VALUES[rng.gen_range(0..VALUES.len())] };
                for part in [ws(&mut rng), key, ws(&mut rng), ":", ws(&mut rng), value, ws(&mut rng)] {
                    v.push_str(part);
                }
                if m + 1 < members || rng.gen_bool(0.05) {
                    v.push(',');
                }
            }
            if rng.gen_bool(0.97) {
                v.push('}');
            }
            v.push_str(ws(&mut rng));
            if rng.gen_bool(0.03) {
                v.push_str(["x", "{}", ",", "}"][rng.gen_range(0..4)]);
            }
            let rec = rec(&v);
            let got = decode_post(&rec, 8);
            assert_eq!(got, decode_post_fully(&v, 8), "round {round}: {v}");
            plain_ok += usize::from(got.is_ok() && plain_string_fields(&v, ["id"]).is_some());
        }
        assert!(plain_ok > 2_000, "the plain path was taken {plain_ok} times");
    }

    #[test]
    fn process_emits_analysis_and_tag_hits() {
        let cfg = Config::default().posts;
        let clock = Arc::new(ManualClock::at_ms(1_795_428_000_000));
        let mut p = PostsProcessor::new(&cfg, clock);
        let mut out = Emit::default();
        let r = rec(r#"{"id":"9","content":"This is a sample post. #Rust #rust @Ana"}"#);
        let post = p.decode(INPUT, &r).expect("valid");
        p.process(post, &RecordMeta { topic: INPUT, partition: 0, offset: 7, timestamp_ms: Some(1_000) }, &mut out);
        assert_eq!(out.records.len(), 1);
        let a: Analysis =
            serde_json::from_slice(out.records[0].value.as_deref().expect("value")).expect("analysis JSON");
        assert_eq!(a.id, "9");
        assert_eq!(a.word_count, 8);
        assert_eq!(a.hashtags, vec!["rust"]);
        assert_eq!(a.mentions, vec!["ana"]);
        assert_eq!(a.analyzed_at, "2026-11-23T10:00:00.000Z");
        assert_eq!(out.records[0].key.as_deref(), Some(&b"9"[..]));
        // No created_at: the record timestamp is the event time.
        assert_eq!(out.parts, vec![TagHit { partition: 0, tag: "rust".into(), ts_ms: 1_000, count: 1 }]);
    }

    /// The hand-written analysis must be byte for byte what serde_json writes for [`Analysis`],
    /// on strings full of what JSON escapes.
    #[test]
    fn written_analysis_equals_serde_json() {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &[
            "a", "Z", "7", "_", " ", "\"", "\\", "/", "\n", "\t", "\u{1}", "\u{1f}", "\u{7f}", "é", "東", "🎉",
            "\u{2028}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        let piece = |rng: &mut rand::rngs::StdRng| -> String {
            (0..rng.gen_range(0..6)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect()
        };
        for round in 0..20_000 {
            let id = piece(&mut rng);
            let stats = text::TextStats {
                word_count: rng.gen_range(0..100_000),
                avg_word_length: match rng.gen_range(0..4) {
                    0 => 0.0,
                    1 => f64::from(rng.gen_range(1..20)),
                    2 => rng.gen_range(1..1000) as f64 / rng.gen_range(1..300) as f64,
                    _ => rng.gen::<f64>() * 1e6,
                },
                hashtags: (0..rng.gen_range(0..4)).map(|_| piece(&mut rng)).collect(),
                mentions: (0..rng.gen_range(0..3)).map(|_| piece(&mut rng)).collect(),
            };
            let at = piece(&mut rng);
            let mut got = Vec::new();
            write_analysis(&mut got, &id, &stats, &at);
            let expected = serde_json::to_vec(&Analysis {
                id: Cow::Borrowed(&id),
                word_count: stats.word_count,
                avg_word_length: stats.avg_word_length,
                hashtags: stats.hashtags.clone(),
                mentions: stats.mentions.clone(),
                analyzed_at: Cow::Borrowed(&at),
            })
            .expect("serializable");
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected), "round {round}");
        }
    }

    /// The stamp rewritten in place within a second equals a fresh formatting, across second,
    /// minute and day boundaries and backwards steps.
    #[test]
    fn stamps_equal_format_ms() {
        use rand::{Rng, SeedableRng};
        let cfg = Config::default().posts;
        let mut p = PostsProcessor::new(&cfg, Arc::new(ManualClock::at_ms(0)));
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut now = 1_795_391_999_000_i64; // a second before a day boundary
        for _ in 0..100_000 {
            now += match rng.gen_range(0..10) {
                0 => -rng.gen_range(0..2_000),
                1 => rng.gen_range(0..90_000),
                _ => rng.gen_range(0..3),
            };
            p.stamp_at(now);
            assert_eq!(p.stamp.1, format_ms(now), "{now}");
        }
    }
}
