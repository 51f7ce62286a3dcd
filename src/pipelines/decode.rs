//! Shared helpers for decoding JSON input records with errors that name the field at fault.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::engine::{RawRecord, RejectClass, Rejection};

/// The record's value as UTF-8 text, or the rejection a dead letter carries.
pub fn utf8_value(rec: &RawRecord) -> Result<&str, Rejection> {
    let bytes = rec.value.as_deref().ok_or_else(|| {
        Rejection::new(RejectClass::EmptyValue, "value is missing (tombstone); a JSON object is required")
    })?;
    std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            RejectClass::InvalidUtf8,
            format!("value is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to()),
        )
    })
}

/// Parses `text` as a JSON object into `T` (whose fields are typically `Option<&RawValue>`).
pub fn object<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, Rejection> {
    if !text.trim_start().starts_with('{') {
        let kind = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => json_kind(&v).to_string(),
            Err(e) => return Err(Rejection::new(RejectClass::InvalidJson, format!("value is not valid JSON: {e}"))),
        };
        return Err(Rejection::new(RejectClass::InvalidJson, format!("value must be a JSON object, found {kind}")));
    }
    serde_json::from_str(text)
        .map_err(|e| Rejection::new(RejectClass::InvalidJson, format!("value is not valid JSON: {e}")))
}

/// Names a JSON value's type the way error messages say it.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

fn raw_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "string",
        Some(b'{') => "object",
        Some(b'[') => "array",
        Some(b't' | b'f') => "boolean",
        Some(b'n') => "null",
        _ => "number",
    }
}

/// A required key of the form `<left><sep><right>`, both parts non-empty: the whole key and its
/// parts. `what` describes the expected key in the messages, e.g. "`pages` records are keyed
/// `<platform>:<page_id>`".
pub fn split_key<'a>(rec: &'a RawRecord, sep: char, what: &str) -> Result<(&'a str, &'a str, &'a str), Rejection> {
    let key = rec
        .key
        .as_deref()
        .ok_or_else(|| Rejection::new(RejectClass::MissingField, format!("key is missing: {what}")))?;
    let key =
        std::str::from_utf8(key).map_err(|_| Rejection::new(RejectClass::InvalidUtf8, "key is not valid UTF-8"))?;
    match key.split_once(sep) {
        Some((l, r)) if !l.is_empty() && !r.is_empty() => Ok((key, l, r)),
        _ => Err(Rejection::new(RejectClass::InvalidValue, format!("key \"{key}\" is malformed: {what}"))),
    }
}

/// JSON's whitespace (not Unicode's).
fn skip_json_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The JSON string at byte `i` of `text` when it has neither escapes nor control characters
/// (it is then its own text), and the byte after it; `None` otherwise.
fn plain_string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let end = start + memchr::memchr2(b'"', b'\\', &b[start..])?;
    if b[end] != b'"' || b[start..end].iter().any(|&c| c < 0x20) {
        return None;
    }
    // Both ends are ASCII quotes: character boundaries.
    Some((&text[start..end], end + 1))
}

/// The fields `names` of `text` in one pass, when `text` is a JSON object in its plainest form:
/// every key and value a string without escapes or control characters, no name twice. Other keys
/// are skipped, as [`object`] skips them. `None` for anything else (an escape, a number, `null`,
/// a nested value, a repeated name, invalid JSON...): then [`object`] and the field helpers give
/// the answer, errors included. When this returns fields, [`object`] with `Option<&RawValue>`
/// fields and [`required_str`]/[`optional_str`] would give the same strings, borrowed.
pub fn plain_string_fields<'a, const N: usize>(text: &'a str, names: [&str; N]) -> Option<[Option<&'a str>; N]> {
    let b = text.as_bytes();
    let mut fields = [None; N];
    let mut i = skip_json_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_json_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, next) = plain_string(text, i)?;
            i = skip_json_ws(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let (value, next) = plain_string(text, skip_json_ws(b, i + 1))?;
            if let Some(k) = names.iter().position(|n| *n == key) {
                if fields[k].replace(value).is_some() {
                    return None;
                }
            }
            i = skip_json_ws(b, next);
            match b.get(i) {
                Some(b',') => i = skip_json_ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_json_ws(b, i) == b.len()).then_some(fields)
}

/// A required string field.
pub fn required_str<'a>(name: &str, raw: Option<&'a RawValue>) -> Result<Cow<'a, str>, Rejection> {
    match raw {
        None => Err(Rejection::new(RejectClass::MissingField, format!("field `{name}` is missing"))),
        Some(r) if r.get() == "null" => {
            Err(Rejection::new(RejectClass::MissingField, format!("field `{name}` is null")))
        }
        Some(r) => string(name, r),
    }
}

/// An optional string field (absent and `null` are both "not given").
pub fn optional_str<'a>(name: &str, raw: Option<&'a RawValue>) -> Result<Option<Cow<'a, str>>, Rejection> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => string(name, r).map(Some),
    }
}

fn string<'a>(name: &str, raw: &'a RawValue) -> Result<Cow<'a, str>, Rejection> {
    if raw_kind(raw) != "string" {
        return Err(Rejection::new(
            RejectClass::WrongType,
            format!("field `{name}` must be a string, found {}", raw_kind(raw)),
        ));
    }
    // Borrow when the string has no escapes; unescape into an owned string otherwise.
    let s: Cow<'a, str> = match serde_json::from_str::<&'a str>(raw.get()) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => Cow::Owned(
            serde_json::from_str::<String>(raw.get())
                .map_err(|e| Rejection::new(RejectClass::InvalidValue, format!("field `{name}`: {e}")))?,
        ),
    };
    Ok(s)
}

/// A required non-negative integer field.
pub fn required_u64(name: &str, raw: Option<&RawValue>) -> Result<u64, Rejection> {
    match raw {
        None => Err(Rejection::new(RejectClass::MissingField, format!("field `{name}` is missing"))),
        Some(r) if r.get() == "null" => {
            Err(Rejection::new(RejectClass::MissingField, format!("field `{name}` is null")))
        }
        Some(r) => unsigned(name, r),
    }
}

/// An optional non-negative integer field (absent and `null` are both "not given").
pub fn optional_u64(name: &str, raw: Option<&RawValue>) -> Result<Option<u64>, Rejection> {
    match raw {
        None => Ok(None),
        Some(r) if r.get() == "null" => Ok(None),
        Some(r) => unsigned(name, r).map(Some),
    }
}

fn unsigned(name: &str, raw: &RawValue) -> Result<u64, Rejection> {
    if raw_kind(raw) != "number" {
        return Err(Rejection::new(
            RejectClass::WrongType,
            format!("field `{name}` must be a number, found {}", raw_kind(raw)),
        ));
    }
    let text = raw.get();
    if let Ok(n) = text.parse::<u64>() {
        return Ok(n);
    }
    // JSON has one number type: `10.0` and `1e3` are integers too (as JSON Schema counts them).
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&f) => Ok(f as u64),
        _ => Err(Rejection::new(
            RejectClass::InvalidValue,
            format!("field `{name}` must be a non-negative integer, got {text}"),
        )),
    }
}

/// Parses an RFC 3339 timestamp field into epoch milliseconds.
///
/// The usual forms (`YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1 to 9 digits, then `Z` or
/// `±HH:MM`) are read directly by [`rfc3339_ms_fast`]; anything else (lower-case `t`/`z`, a space
/// separator, a leap second, an invalid date) goes through chrono, which also words the errors.
pub fn rfc3339_ms(name: &str, value: &str) -> Result<i64, Rejection> {
    if let Some(ms) = rfc3339_ms_fast(value.as_bytes()) {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value).map(|t| t.timestamp_millis()).map_err(|e| {
        Rejection::new(
            RejectClass::InvalidValue,
            format!("field `{name}` must be an RFC 3339 timestamp, got \"{value}\": {e}"),
        )
    })
}

/// The value of the ASCII digits `b` (at most 9 of them), or `None` if one is not a digit.
#[inline]
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d` (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// [`rfc3339_ms`] of the strict usual form, computed without chrono (a timestamp is parsed per
/// record in several pipelines): `None` for anything it does not read, which then goes to chrono.
/// A property test checks that every value it reads is the one chrono reads.
fn rfc3339_ms_fast(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day == 0 || day > month_days[month as usize - 1] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let frac = &b[i + 1..i + 1 + n];
        // Milliseconds: the first three digits, the rest truncated (as chrono's timestamp_millis).
        millis =
            frac.iter().take(3).chain(std::iter::repeat(&b'0')).take(3).fold(0, |n, &c| n * 10 + i64::from(c - b'0'));
        i += 1 + n;
    }
    let offset_s = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let s = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_s;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every timestamp the fast reader reads must be read the same by chrono; and the usual forms
    /// must take the fast path.
    #[test]
    fn fast_rfc3339_agrees_with_chrono() {
        use rand::{Rng, SeedableRng};
        let chrono_ms = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis());
        for usual in ["2026-11-23T10:00:00Z", "1970-01-01T00:00:00.5+01:00", "2024-02-29T23:59:59.999999999-23:59"] {
            assert_eq!(rfc3339_ms_fast(usual.as_bytes()), chrono_ms(usual), "{usual}");
            assert!(rfc3339_ms_fast(usual.as_bytes()).is_some(), "{usual}");
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3339);
        const PIECES: &[&str] =
            &["0", "1", "2", "9", "5", "3", "-", ":", "T", "t", " ", "Z", "z", "+", ".", "60", "29", "31", "00"];
        let mut fast_hits = 0;
        for round in 0..200_000 {
            // A valid timestamp (random date, time, fraction, zone), then sometimes mutated.
            let (y, mo, d) = (rng.gen_range(0..10_000), rng.gen_range(0..14), rng.gen_range(0..33));
            let (h, mi, s) = (rng.gen_range(0..25), rng.gen_range(0..61), rng.gen_range(0..61));
            let frac = match rng.gen_range(0..4) {
                0 => String::new(),
                1 => format!(".{}", rng.gen_range(0..1000)),
                2 => format!(".{:09}", rng.gen_range(0..1_000_000_000u32)),
                _ => format!(".{}", "7".repeat(rng.gen_range(0..12))),
            };
            let zone = match rng.gen_range(0..3) {
                0 => "Z".to_string(),
                1 => format!("+{:02}:{:02}", rng.gen_range(0..25), rng.gen_range(0..61)),
                _ => format!("-{:02}:{:02}", rng.gen_range(0..25), rng.gen_range(0..61)),
            };
            let mut v = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}");
            if rng.gen_bool(0.3) {
                let at = rng.gen_range(0..v.len());
                let piece = PIECES[rng.gen_range(0..PIECES.len())];
                match rng.gen_range(0..3) {
                    0 => v.replace_range(at..at + 1, piece),
                    1 => v.insert_str(at, piece),
                    _ => {
                        v.remove(at);
                    }
                }
            }
            let fast = rfc3339_ms_fast(v.as_bytes());
            if fast.is_some() {
                fast_hits += 1;
                assert_eq!(fast, chrono_ms(&v), "round {round}: {v}");
            }
            assert_eq!(rfc3339_ms("t", &v).ok(), chrono_ms(&v), "round {round}: {v}");
        }
        assert!(fast_hits > 50_000, "the fast path read only {fast_hits} values");
    }

    #[derive(serde::Deserialize)]
    struct W<'a> {
        #[serde(borrow)]
        a: Option<&'a RawValue>,
    }

    fn rec(v: &[u8]) -> RawRecord {
        RawRecord { key: None, value: Some(v.to_vec()), offset: 0, timestamp_ms: None }
    }

    #[test]
    fn strings_borrow_or_unescape() {
        let w: W = object(r#"{"a": "plain"}"#).expect("object");
        assert!(matches!(required_str("a", w.a).expect("string"), Cow::Borrowed("plain")));
        let w: W = object(r#"{"a": "tab\there \u00e9"}"#).expect("object");
        assert_eq!(required_str("a", w.a).expect("string"), "tab\there é");
    }

    #[test]
    fn errors_name_the_field() {
        let w: W = object(r#"{"a": 5}"#).expect("object");
        let e = required_str("a", w.a).expect_err("number");
        assert_eq!((e.class, e.message.as_str()), (RejectClass::WrongType, "field `a` must be a string, found number"));
        let w: W = object(r#"{}"#).expect("object");
        assert_eq!(required_str("a", w.a).expect_err("missing").class, RejectClass::MissingField);
        assert_eq!(optional_str("a", w.a).expect("absent is fine"), None);
    }

    #[test]
    fn non_objects_and_bad_bytes() {
        assert_eq!(
            object::<W>("[1]").err().map(|e| e.message),
            Some("value must be a JSON object, found array".into())
        );
        assert_eq!(object::<W>("{nope").err().map(|e| e.class), Some(RejectClass::InvalidJson));
        assert_eq!(utf8_value(&rec(b"{\"a\":\"\xff\"}")).err().map(|e| e.class), Some(RejectClass::InvalidUtf8));
        let tomb = RawRecord { value: None, ..rec(b"") };
        assert_eq!(utf8_value(&tomb).err().map(|e| e.class), Some(RejectClass::EmptyValue));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms("t", "1970-01-01T00:00:01Z").expect("valid"), 1000);
        assert_eq!(rfc3339_ms("t", "yesterday").expect_err("invalid").class, RejectClass::InvalidValue);
    }
}
