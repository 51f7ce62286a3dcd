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
pub fn rfc3339_ms(name: &str, value: &str) -> Result<i64, Rejection> {
    chrono::DateTime::parse_from_rfc3339(value).map(|t| t.timestamp_millis()).map_err(|e| {
        Rejection::new(
            RejectClass::InvalidValue,
            format!("field `{name}` must be an RFC 3339 timestamp, got \"{value}\": {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
