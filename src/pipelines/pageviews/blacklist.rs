//! `pageviews.blacklist`: the (domain, title) pairs never ranked. A global table
//! ([`crate::kafka::global`]): every instance reads all of it into one [`Blacklist`] that its
//! pageviews tasks consult when they rank.

use std::collections::HashSet;
use std::sync::Arc;

use dashmap::DashMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::engine::{Emit, Processor, RawRecord, RecordMeta, RejectClass, Rejection};
use crate::pipelines::decode::{object, required_str, split_key, utf8_value};

/// The (domain, title) pairs excluded from every ranking; shared by every pageviews task and
/// written by the blacklist pipeline.
#[derive(Debug, Default)]
pub struct Blacklist {
    by_domain: DashMap<Box<str>, HashSet<Box<str>>>,
}

impl Blacklist {
    /// An empty blacklist.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Excludes `title` of `domain` from rankings.
    pub fn insert(&self, domain: &str, title: &str) {
        self.by_domain.entry(domain.into()).or_default().insert(title.into());
    }

    /// Ranks `title` of `domain` again.
    pub fn remove(&self, domain: &str, title: &str) {
        if let Some(mut set) = self.by_domain.get_mut(domain) {
            set.remove(title);
        }
    }

    /// True if the pair is excluded.
    pub fn contains(&self, domain: &str, title: &str) -> bool {
        self.by_domain.get(domain).is_some_and(|s| s.contains(title))
    }

    /// The excluded titles of `domain` (a snapshot, for one ranking).
    pub fn titles(&self, domain: &str) -> HashSet<Box<str>> {
        self.by_domain.get(domain).map(|s| s.clone()).unwrap_or_default()
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    domain: Option<&'a RawValue>,
    #[serde(borrow, default)]
    title: Option<&'a RawValue>,
}

/// What a `pageviews.blacklist` record asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlacklistChange<'a> {
    /// Exclude the pair.
    Add {
        /// Domain.
        domain: &'a str,
        /// Title.
        title: &'a str,
    },
    /// Rank the pair again (a tombstone).
    Remove {
        /// Domain.
        domain: &'a str,
        /// Title.
        title: &'a str,
    },
}

/// Decodes a `pageviews.blacklist` record: the key names the pair, the value must agree.
pub fn decode_blacklist(rec: &RawRecord) -> Result<BlacklistChange<'_>, Rejection> {
    let (key, domain, title) = split_key(rec, ' ', "blacklist records are keyed `<domain> <title>`")?;
    if rec.value.is_none() {
        return Ok(BlacklistChange::Remove { domain, title });
    }
    let wire: Wire<'_> = object(utf8_value(rec)?)?;
    let d = required_str("domain", wire.domain)?;
    let t = required_str("title", wire.title)?;
    if d != domain || t != title {
        return Err(Rejection::new(
            RejectClass::InvalidValue,
            format!("value ({d} {t}) does not match the key ({key})"),
        ));
    }
    Ok(BlacklistChange::Add { domain, title })
}

/// Applies `pageviews.blacklist` to the shared [`Blacklist`].
pub struct BlacklistProcessor {
    blacklist: Arc<Blacklist>,
}

impl BlacklistProcessor {
    /// A processor writing into `blacklist`.
    pub fn new(blacklist: Arc<Blacklist>) -> Self {
        Self { blacklist }
    }
}

impl Processor for BlacklistProcessor {
    type Input<'a> = BlacklistChange<'a>;
    type Part = ();

    fn decode<'a>(&self, _topic: &'static str, rec: &'a RawRecord) -> Result<BlacklistChange<'a>, Rejection> {
        decode_blacklist(rec)
    }

    fn process(&mut self, change: BlacklistChange<'_>, _meta: &RecordMeta, _out: &mut Emit<()>) {
        match change {
            BlacklistChange::Add { domain, title } => self.blacklist.insert(domain, title),
            BlacklistChange::Remove { domain, title } => self.blacklist.remove(domain, title),
        }
    }
}
