//! Dead letters: refused input records, forwarded unchanged with the reason in headers.
//!
//! The key and value bytes are the original ones, byte for byte; the headers say why and where
//! from, so an operator can fix and replay them:
//! `pagepulse.error` (readable reason naming the field), `pagepulse.reason` (the class, as in the
//! metrics), `pagepulse.pipeline`, `pagepulse.topic`, `pagepulse.partition`, `pagepulse.offset`.

use super::processor::Rejection;
use super::record::{OutRecord, RawRecord};

/// Logical name of the dead-letter topic.
pub const TOPIC: &str = "deadletter";

/// Header carrying the readable reason.
pub const ERROR_HEADER: &str = "pagepulse.error";

/// The dead-letter record for `rec`, read from `full_topic`/`partition`, refused by `pipeline`.
pub fn dead_letter(rec: &RawRecord, pipeline: &str, full_topic: &str, partition: i32, why: &Rejection) -> OutRecord {
    OutRecord {
        topic: TOPIC,
        key: rec.key.clone(),
        value: rec.value.clone(),
        headers: vec![
            (ERROR_HEADER, why.message.clone().into_bytes()),
            ("pagepulse.reason", why.class.as_str().as_bytes().to_vec()),
            ("pagepulse.pipeline", pipeline.as_bytes().to_vec()),
            ("pagepulse.topic", full_topic.as_bytes().to_vec()),
            ("pagepulse.partition", partition.to_string().into_bytes()),
            ("pagepulse.offset", rec.offset.to_string().into_bytes()),
        ],
        partition: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RejectClass;

    #[test]
    fn keeps_bytes_and_explains() {
        let rec = RawRecord {
            key: Some(b"k\xff".to_vec()),
            value: Some(b"\x00{bad".to_vec()),
            offset: 42,
            timestamp_ms: None,
        };
        let why = Rejection::new(RejectClass::InvalidJson, "value is not JSON: expected value at line 1 column 1");
        let out = dead_letter(&rec, "posts", "pre.posts", 3, &why);
        assert_eq!(out.topic, TOPIC);
        assert_eq!(out.key, rec.key);
        assert_eq!(out.value, rec.value);
        assert_eq!(out.header(ERROR_HEADER), Some(why.message.as_bytes()));
        assert_eq!(out.header("pagepulse.reason"), Some(&b"invalid_json"[..]));
        assert_eq!(out.header("pagepulse.topic"), Some(&b"pre.posts"[..]));
        assert_eq!(out.header("pagepulse.partition"), Some(&b"3"[..]));
        assert_eq!(out.header("pagepulse.offset"), Some(&b"42"[..]));
    }
}
