//! The messages pipeline's per-partition logic: decode and normalize a message, check the
//! partition's bounds, and count it in the partition's [`MessagesStore`], which the instance's
//! [`MinuteBoard`] reads.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::IntCounter;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::board::{Membership, MinuteBoard};
use super::config::MessagesConfig;
use super::names::PIPELINE;
use super::store::{Counted, Limits, MessagesStore, Place};
use super::totals::{PlaceShare, TotalsPart};
use crate::engine::state::{Change, Entries};
use crate::engine::{Emit, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::metrics::Metrics;
use crate::pipelines::decode::{object, required_str, rfc3339_ms, utf8_value};

/// Longest accepted `username` (and key), in bytes.
pub const MAX_USERNAME_BYTES: usize = 256;
/// Longest accepted `state`, in bytes.
pub const MAX_STATE_BYTES: usize = 64;
/// Longest accepted `city`, in bytes.
pub const MAX_CITY_BYTES: usize = 256;
/// Longest accepted `message`, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 65_536;
/// How far `ts` may be ahead of the record's own timestamp: one message dated far in the future
/// would otherwise move its partition's watermark past every open minute.
pub const MAX_AHEAD_MS: i64 = 5 * 60_000;
/// Earliest accepted event time: 0000-01-01T00:00:00Z.
const MIN_TS_MS: i64 = -62_167_219_200_000;
/// Latest accepted event time: 9999-12-31T23:59:59.999Z.
const MAX_TS_MS: i64 = 253_402_300_799_999;

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    username: Option<&'a RawValue>,
    #[serde(borrow, default)]
    city: Option<&'a RawValue>,
    #[serde(borrow, default)]
    state: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    ts: Option<&'a RawValue>,
}

/// A decoded, normalized message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message<'a> {
    /// Username, exactly as sent (it is also the record's key).
    pub username: Cow<'a, str>,
    /// State, trimmed and upper-cased: what states are compared by.
    pub state: Cow<'a, str>,
    /// City as shown: trimmed, inner whitespace collapsed to one space.
    pub city: Cow<'a, str>,
    /// What groups a city's spellings: `<state>` NUL `<city, lower-cased>`.
    pub place: String,
    /// Event time: `ts`, else the record's timestamp; epoch milliseconds.
    pub ts_ms: i64,
}

impl Message<'_> {
    /// The message as the counts take it.
    pub fn counted(&self) -> Counted<'_> {
        Counted {
            username: &self.username,
            state: &self.state,
            city: &self.city,
            place: &self.place,
            ts_ms: self.ts_ms,
        }
    }
}

fn invalid(message: impl Into<String>) -> Rejection {
    Rejection::new(RejectClass::InvalidValue, message)
}

/// A required string field of at most `max` bytes.
fn bounded<'a>(name: &str, raw: Option<&'a RawValue>, max: usize) -> Result<Cow<'a, str>, Rejection> {
    let v = required_str(name, raw)?;
    if v.len() > max {
        return Err(Rejection::new(
            RejectClass::TooLarge,
            format!("field `{name}` is {} bytes, more than the {max} allowed", v.len()),
        ));
    }
    Ok(v)
}

/// A place name (state or city): not blank, and no control characters but whitespace (so the
/// NUL that separates state and city in a place key cannot occur in either).
fn name_text(name: &str, v: &str) -> Result<(), Rejection> {
    if v.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(invalid(format!("field `{name}` must not contain control characters")));
    }
    if v.trim().is_empty() {
        return Err(invalid(format!("field `{name}` must not be empty")));
    }
    Ok(())
}

/// `state` trimmed and upper-cased.
pub fn normalize_state(state: &str) -> Cow<'_, str> {
    let t = state.trim();
    if t.is_ascii() && !t.bytes().any(|b| b.is_ascii_lowercase()) {
        return Cow::Borrowed(t);
    }
    let up = t.to_uppercase();
    if up == t {
        Cow::Borrowed(t)
    } else {
        Cow::Owned(up)
    }
}

/// `city` trimmed, with every run of whitespace made one space: how it is shown.
pub fn collapse_whitespace(city: &str) -> Cow<'_, str> {
    let t = city.trim();
    let mut prev_space = false;
    let collapsed = t.chars().all(|c| {
        let ok = !(c.is_whitespace() && (c != ' ' || prev_space));
        prev_space = c == ' ';
        ok
    });
    if collapsed {
        Cow::Borrowed(t)
    } else {
        Cow::Owned(t.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// The key that groups a city's spellings within its state: `<state>` NUL `<city, lower-cased>`
/// (`city` already collapsed; neither holds a NUL, so the key is unambiguous).
pub fn place_key(state: &str, city: &str) -> String {
    let mut key = String::with_capacity(state.len() + 1 + city.len());
    key.push_str(state);
    key.push('\0');
    if city.is_ascii() {
        key.extend(city.bytes().map(|b| b.to_ascii_lowercase() as char));
    } else {
        key.push_str(&city.to_lowercase());
    }
    key
}

/// Decodes and validates a `messages` record: every refusal names the field (or the key) at fault.
pub fn decode_message(rec: &RawRecord) -> Result<Message<'_>, Rejection> {
    let wire: Wire<'_> = object(utf8_value(rec)?)?;
    let username = bounded("username", wire.username, MAX_USERNAME_BYTES)?;
    if username.trim().is_empty() {
        return Err(invalid("field `username` must not be empty"));
    }
    match rec.key.as_deref() {
        None => {
            return Err(Rejection::new(
                RejectClass::MissingField,
                "key is missing: `messages` records are keyed by username",
            ))
        }
        Some(k) if k != username.as_bytes() => {
            return Err(invalid(format!(
                "key \"{}\" must be the username (\"{username}\"): a user's messages must share a partition",
                String::from_utf8_lossy(k)
            )))
        }
        Some(_) => {}
    }
    let state_raw = bounded("state", wire.state, MAX_STATE_BYTES)?;
    name_text("state", &state_raw)?;
    let city_raw = bounded("city", wire.city, MAX_CITY_BYTES)?;
    name_text("city", &city_raw)?;
    bounded("message", wire.message, MAX_MESSAGE_BYTES)?;
    let ts_ms = event_time(rec, wire.ts)?;
    let state = rebase(state_raw, normalize_state);
    let city = rebase(city_raw, collapse_whitespace);
    let place = place_key(&state, &city);
    Ok(Message { username, state, city, place, ts_ms })
}

/// `f` applied to `raw`, borrowing from the record where `raw` does.
fn rebase<'a>(raw: Cow<'a, str>, f: for<'b> fn(&'b str) -> Cow<'b, str>) -> Cow<'a, str> {
    match raw {
        Cow::Borrowed(s) => f(s),
        Cow::Owned(s) => Cow::Owned(f(&s).into_owned()),
    }
}

/// `ts` (RFC 3339 text or epoch milliseconds), else the record's timestamp.
fn event_time(rec: &RawRecord, ts: Option<&RawValue>) -> Result<i64, Rejection> {
    let ts_ms = match ts.map(RawValue::get) {
        None | Some("null") => rec.timestamp_ms.ok_or_else(|| {
            Rejection::new(RejectClass::MissingField, "field `ts` is missing and the record has no timestamp")
        })?,
        Some(t) if t.starts_with('"') => rfc3339_ms("ts", &required_str("ts", ts)?)?,
        Some(t) if t.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            t.parse::<i64>().map_err(|_| {
                invalid(format!("field `ts` must be an RFC 3339 string or integer epoch milliseconds, got {t}"))
            })?
        }
        Some(t) => {
            let kind = match t.as_bytes()[0] {
                b'{' => "object",
                b'[' => "array",
                _ => "boolean",
            };
            return Err(Rejection::new(
                RejectClass::WrongType,
                format!("field `ts` must be an RFC 3339 string or epoch milliseconds, found {kind}"),
            ));
        }
    };
    // Years 0..=9999: minute arithmetic near the ends of i64 would overflow.
    if !(MIN_TS_MS..=MAX_TS_MS).contains(&ts_ms) {
        return Err(invalid(format!("field `ts` must be between years 0 and 9999, got {ts_ms}")));
    }
    if let Some(at) = rec.timestamp_ms.filter(|at| *at >= 0) {
        if ts_ms > at + MAX_AHEAD_MS {
            return Err(invalid(format!(
                "field `ts` is {} s ahead of the record's timestamp (at most {} s allowed)",
                (ts_ms - at) / 1000,
                MAX_AHEAD_MS / 1000
            )));
        }
    }
    Ok(ts_ms)
}

/// The per-partition messages processor: counts each message in the partition's store, whose
/// counts the board reads. It emits nothing itself (dead letters aside): `messages.stats` and
/// `messages.totals` come from the board.
pub struct MessagesProcessor {
    partition: i32,
    store: MessagesStore,
    board: Arc<Mutex<MinuteBoard>>,
    /// On the board while the processor lives (from its restore, or at once when not durable).
    membership: Option<Membership>,
    late: IntCounter,
}

impl MessagesProcessor {
    /// A processor for `partition` counting for `board`. A `durable` one joins the board once it
    /// is restored ([`Processor::restore`]); one that keeps its state in memory joins at once.
    pub fn new(
        partition: i32,
        cfg: &MessagesConfig,
        board: Arc<Mutex<MinuteBoard>>,
        metrics: &Metrics,
        durable: bool,
    ) -> Self {
        let limits = Limits {
            users: cfg.max_users_per_partition,
            cities: cfg.max_cities_per_partition,
            open_minutes: cfg.max_open_minutes,
            lateness_ms: i64::try_from(cfg.allowed_lateness.as_millis()).unwrap_or(i64::MAX),
        };
        let mut p = Self {
            partition,
            store: MessagesStore::new(limits, durable),
            board,
            membership: None,
            late: metrics.window_ignored.with_label_values(&[PIPELINE, "late"]),
        };
        if !durable {
            p.join();
        }
        p
    }

    fn join(&mut self) {
        self.membership = Some(MinuteBoard::join(&self.board, self.partition, self.store.counts().clone()));
    }

    /// The partition's store.
    pub fn store(&self) -> &MessagesStore {
        &self.store
    }
}

impl Processor for MessagesProcessor {
    type Input<'a> = Message<'a>;
    type Part = TotalsPart;

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<Message<'a>, Rejection> {
        let m = decode_message(rec)?;
        self.store.lock().admits(&m.counted(), self.store.limits())?;
        Ok(m)
    }

    /// Counts the message, and hands on the partition's new all-time figures and those of the
    /// message's place (published to `messages.shares`).
    fn process(&mut self, m: Message<'_>, _meta: &RecordMeta, out: &mut Emit<TotalsPart>) {
        let added = self.store.add(&m.counted());
        if added.minute.is_none() {
            self.late.inc();
        }
        let counts = self.store.lock();
        out.part(TotalsPart::Counts { partition: self.partition, total: counts.total(), users: counts.users() as u64 });
        if let Some(p) = counts.places().get(added.place as usize) {
            out.part(place_part(self.partition, p));
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }

    /// Drops the minutes the board has seen written (their memory, and in durable mode their
    /// chunks at the next flush).
    fn on_tick(&mut self, _now: DateTime<Utc>, _out: &mut Emit<TotalsPart>) {
        self.store.prune();
    }

    /// The store's changes: see [`MessagesStore::take_changes`].
    fn take_changes(&mut self, out: &mut Vec<Change>) {
        self.store.take_changes(out);
    }

    /// Rebuilds the counts ([`MessagesStore::restore`]), then joins the board.
    fn restore(&mut self, entries: Entries, out: &mut Emit<TotalsPart>) {
        self.store.restore(entries);
        self.join();
        // The restored figures go to `messages.shares` again (a crash may have lost the last).
        let counts = self.store.lock();
        out.part(TotalsPart::Counts { partition: self.partition, total: counts.total(), users: counts.users() as u64 });
        for p in counts.places() {
            out.part(place_part(self.partition, p));
        }
    }
}

/// A place's figures in `partition`, as the totals board takes them.
fn place_part(partition: i32, p: &Place) -> TotalsPart {
    TotalsPart::Place {
        partition,
        key: p.key.clone(),
        place: PlaceShare {
            state: p.state.to_string(),
            count: p.count,
            city: p.city.text.to_string(),
            city_ts_ms: p.city.ts_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const T0: i64 = 1_796_464_800_000; // 2026-12-05T10:00:00Z

    fn rec(key: Option<&str>, value: &str) -> RawRecord {
        RawRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            offset: 0,
            timestamp_ms: Some(T0 + 1_000),
        }
    }

    fn ok(key: &str, v: serde_json::Value) -> Message<'static> {
        let r = Box::leak(Box::new(rec(Some(key), &v.to_string())));
        decode_message(r).unwrap_or_else(|e| panic!("{v} refused: {e}"))
    }

    fn refused(key: Option<&str>, v: &str) -> Rejection {
        decode_message(&rec(key, v)).expect_err("refused")
    }

    #[test]
    fn decodes_and_normalizes() {
        let m = ok(
            "fred",
            serde_json::json!({"username": "fred", "city": "New York", "state": "NY", "message": "Yo what up!", "ts": "2026-12-05T10:00:00Z"}),
        );
        assert_eq!((&*m.state, &*m.city, m.place.as_str(), m.ts_ms), ("NY", "New York", "NY\0new york", T0));
        assert!(matches!((&m.username, &m.state, &m.city), (Cow::Borrowed(_), Cow::Borrowed(_), Cow::Borrowed(_))));
        let m = ok(
            "ana",
            serde_json::json!({"username": "ana", "city": " \tnew   YORK  ", "state": " ny ", "message": "", "ts": T0 + 5}),
        );
        assert_eq!((&*m.state, &*m.city, m.place.as_str(), m.ts_ms), ("NY", "new YORK", "NY\0new york", T0 + 5));
        let m = ok("zoë", serde_json::json!({"username": "zoë", "city": "SÃO  PAULO", "state": "sp", "message": "x"}));
        assert_eq!((&*m.state, &*m.city, m.place.as_str()), ("SP", "SÃO PAULO", "SP\0são paulo"));
        assert_eq!(m.ts_ms, T0 + 1_000, "no ts: the record's timestamp");
        let m =
            ok("bo", serde_json::json!({"username": "bo", "city": "Köln", "state": "nrw", "message": "x", "ts": null}));
        assert_eq!((&*m.state, m.ts_ms), ("NRW", T0 + 1_000));
    }

    #[test]
    fn refusals_name_the_field() {
        let base =
            |extra: &str| format!(r#"{{"username": "fred", "city": "NYC", "state": "NY", "message": "hi"{extra}}}"#);
        let cases: Vec<(Option<&str>, String, RejectClass, &str)> = vec![
            (
                Some("fred"),
                r#"{"city": "NYC", "state": "NY", "message": "hi"}"#.into(),
                RejectClass::MissingField,
                "`username`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "state": "NY", "message": "hi"}"#.into(),
                RejectClass::MissingField,
                "`city`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "city": "NYC", "message": "hi"}"#.into(),
                RejectClass::MissingField,
                "`state`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "city": "NYC", "state": "NY"}"#.into(),
                RejectClass::MissingField,
                "`message`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "city": "NYC", "state": 5, "message": "hi"}"#.into(),
                RejectClass::WrongType,
                "`state`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "city": null, "state": "NY", "message": "hi"}"#.into(),
                RejectClass::MissingField,
                "`city`",
            ),
            (
                Some(""),
                r#"{"username": "", "city": "NYC", "state": "NY", "message": "hi"}"#.into(),
                RejectClass::InvalidValue,
                "`username`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "city": " ", "state": "NY", "message": "hi"}"#.into(),
                RejectClass::InvalidValue,
                "`city`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "city": "NYC", "state": "\t", "message": "hi"}"#.into(),
                RejectClass::InvalidValue,
                "`state`",
            ),
            (
                Some("fred"),
                r#"{"username": "fred", "city": "N\u0000C", "state": "NY", "message": "hi"}"#.into(),
                RejectClass::InvalidValue,
                "`city`",
            ),
            (Some("fred"), base(r#", "ts": "noon""#), RejectClass::InvalidValue, "`ts`"),
            (Some("fred"), base(r#", "ts": 1.5"#), RejectClass::InvalidValue, "`ts`"),
            (Some("fred"), base(r#", "ts": {}"#), RejectClass::WrongType, "`ts`"),
            (
                Some("fred"),
                base(&format!(r#", "ts": {}"#, T0 + 1_000 + MAX_AHEAD_MS + 1)),
                RejectClass::InvalidValue,
                "`ts`",
            ),
            (Some("fred"), base(r#", "ts": 253402300800000"#), RejectClass::InvalidValue, "`ts`"),
            (None, base(""), RejectClass::MissingField, "key"),
            (Some("ana"), base(""), RejectClass::InvalidValue, "key"),
            (
                Some("fred"),
                format!(
                    r#"{{"username": "fred", "city": "{}", "state": "NY", "message": "hi"}}"#,
                    "c".repeat(MAX_CITY_BYTES + 1)
                ),
                RejectClass::TooLarge,
                "`city`",
            ),
            (
                Some("fred"),
                format!(
                    r#"{{"username": "fred", "city": "x", "state": "{}", "message": "hi"}}"#,
                    "S".repeat(MAX_STATE_BYTES + 1)
                ),
                RejectClass::TooLarge,
                "`state`",
            ),
            (
                Some("fred"),
                format!(
                    r#"{{"username": "fred", "city": "x", "state": "S", "message": "{}"}}"#,
                    "m".repeat(MAX_MESSAGE_BYTES + 1)
                ),
                RejectClass::TooLarge,
                "`message`",
            ),
            (
                Some("u"),
                format!(
                    r#"{{"username": "{0}", "city": "x", "state": "S", "message": ""}}"#,
                    "u".repeat(MAX_USERNAME_BYTES + 1)
                ),
                RejectClass::TooLarge,
                "`username`",
            ),
            (Some("fred"), "[1]".into(), RejectClass::InvalidJson, "JSON object"),
        ];
        for (key, v, class, names) in cases {
            let e = refused(key, &v);
            assert_eq!(e.class, class, "{v}: {}", e.message);
            assert!(e.message.contains(names), "{v}: {} does not name {names}", e.message);
        }
        let no_ts = RawRecord { timestamp_ms: None, ..rec(Some("fred"), &base("")) };
        let e = decode_message(&no_ts).expect_err("no time at all");
        assert_eq!((e.class, e.message.contains("`ts`")), (RejectClass::MissingField, true));
    }

    /// Property: grouping is exactly "same upper-cased trimmed state, and same lower-cased city
    /// with whitespace collapsed", for random spellings of random names.
    #[test]
    fn city_grouping_matches_a_brute_force_definition() {
        let mut rng = StdRng::seed_from_u64(9);
        let letters = ['a', 'B', 'é', 'É', 'ß', 'z', 'Z', 'ö', 'Ö', ' ', '\t', '\u{a0}', '-'];
        let spell = |rng: &mut StdRng| -> String {
            (0..rng.gen_range(1..8)).map(|_| letters[rng.gen_range(0..letters.len())]).collect()
        };
        let brute = |state: &str, city: &str| {
            let words: Vec<&str> = city.split_whitespace().collect();
            (state.trim().to_uppercase(), words.join(" ").to_lowercase())
        };
        let mut checked = 0;
        for _ in 0..3000 {
            let (s1, c1, s2, c2) = (spell(&mut rng), spell(&mut rng), spell(&mut rng), spell(&mut rng));
            let (c2, s2) = if rng.gen_bool(0.3) {
                // The same words, respelled: random case and spacing.
                let respelled: String = c1
                    .split_whitespace()
                    .map(|w| if rng.gen_bool(0.5) { w.to_uppercase() } else { w.to_lowercase() })
                    .collect::<Vec<_>>()
                    .join(if rng.gen_bool(0.5) { " " } else { " \t " });
                (format!("  {respelled} "), format!(" {} ", s1.to_lowercase()))
            } else {
                (c2, s2)
            };
            let decode = |s: &str, c: &str| {
                let v = serde_json::json!({"username": "u", "city": c, "state": s, "message": ""}).to_string();
                decode_message(&rec(Some("u"), &v)).map(|m| (m.state.into_owned(), m.city.into_owned(), m.place))
            };
            let (Ok(a), Ok(b)) = (decode(&s1, &c1), decode(&s2, &c2)) else { continue };
            let (ba, bb) = (brute(&s1, &c1), brute(&s2, &c2));
            assert_eq!(a.2 == b.2, ba == bb, "{s1:?}/{c1:?} vs {s2:?}/{c2:?}");
            assert_eq!(a.0, ba.0);
            assert_eq!(a.1, c1.split_whitespace().collect::<Vec<_>>().join(" "), "shown: collapsed, case kept");
            checked += 1;
        }
        assert!(checked > 1000, "{checked}");
    }
}
