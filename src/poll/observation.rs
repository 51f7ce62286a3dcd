//! The `fans.observations` record: one audience count of one page at one time. The poll
//! dispatchers ([`super::dispatch`]) write it; the fans pipeline
//! ([`crate::pipelines::fans`]) reads it, as it reads those of any external scraper. Defined here,
//! below both, so writer and reader cannot drift apart.

use std::borrow::Cow;

use serde::{Serialize, Serializer};

use crate::clock::format_ms;

/// The topic observations are written to (logical name).
pub const TOPIC: &str = "fans.observations";

/// A `fans.observations` value (see `topics/fans.observations.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observation<'a> {
    /// Platform name, e.g. `facebook`.
    pub platform: Cow<'a, str>,
    /// The page's id on its platform.
    pub page_id: Cow<'a, str>,
    /// Fan count.
    pub fans: u64,
    /// Follower count, when the platform reports one.
    pub followers: Option<u64>,
    /// When it was observed, epoch milliseconds (written as RFC 3339 `observed_at`).
    #[serde(rename = "observed_at", serialize_with = "rfc3339")]
    pub observed_at_ms: i64,
}

impl Observation<'_> {
    /// The page key, `<platform>:<page_id>`: the record's key.
    pub fn key(&self) -> String {
        format!("{}:{}", self.platform, self.page_id)
    }

    /// The record value, JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serializing plain structs cannot fail")
    }
}

fn rfc3339<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_ms(*ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_topic_defines() {
        let o = Observation {
            platform: "facebook".into(),
            page_id: "p".into(),
            fans: 3,
            followers: None,
            observed_at_ms: 1500,
        };
        assert_eq!(
            String::from_utf8(o.to_json()).expect("JSON is UTF-8"),
            r#"{"platform":"facebook","page_id":"p","fans":3,"followers":null,"observed_at":"1970-01-01T00:00:01.500Z"}"#
        );
        assert_eq!(o.key(), "facebook:p");
    }
}
