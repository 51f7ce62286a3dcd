//! `topics create` and `topics list`: topic administration from the definitions in `topics/`.

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use super::client::{self, Error as ClientError};
use super::topics::{self, TopicDef};
use crate::config::Config;

/// Errors of topic administration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker is unreachable or the client is misconfigured.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The broker refused to create a topic.
    #[error("cannot create topic {topic}: {reason}")]
    Create {
        /// Full topic name.
        topic: String,
        /// The broker's reason.
        reason: String,
    },
    /// Topics pagepulse needs do not exist.
    #[error("missing topics: {}; create them with `pagepulse topics create`", .0.join(", "))]
    Missing(Vec<String>),
}

/// Result of topic administration.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `create` did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The topic was created.
    Created(String),
    /// It already existed (nothing changed).
    Existed(String),
}

/// Creates every topic in `defs` that does not exist yet. Idempotent.
pub async fn create(cfg: &Config, defs: &[TopicDef]) -> Result<Vec<Created>> {
    let admin = client::admin(&cfg.kafka)?;
    // Fail fast with a clear message when the broker is not there.
    client::metadata(&admin, &cfg.kafka)?;
    let names: Vec<String> = defs.iter().map(|d| cfg.topic(&d.name)).collect();
    let new: Vec<NewTopic<'_>> = defs
        .iter()
        .zip(&names)
        .map(|(d, name)| {
            let mut t = NewTopic::new(name, d.partitions, TopicReplication::Fixed(cfg.kafka.replication_factor));
            for (k, v) in &d.config {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(cfg.kafka.connect_timeout));
    let results = admin.create_topics(&new, &opts).await.map_err(|e| {
        Error::Client(ClientError::Unreachable {
            brokers: cfg.kafka.brokers.clone(),
            timeout: cfg.kafka.connect_timeout,
            source: e,
        })
    })?;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push(Created::Created(name)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push(Created::Existed(name)),
            Err((name, code)) => return Err(Error::Create { topic: name, reason: code.to_string() }),
        }
    }
    Ok(out)
}

/// One topic on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Full name.
    pub name: String,
    /// Partitions.
    pub partitions: usize,
    /// The logical name, when the topic is one of pagepulse's (under this deployment's prefix).
    pub logical: Option<String>,
}

/// Lists the broker's topics, marking pagepulse's own.
pub fn list(cfg: &Config) -> Result<Vec<Listed>> {
    let admin = client::admin(&cfg.kafka)?;
    let md = client::metadata(&admin, &cfg.kafka)?;
    let mut out: Vec<Listed> = md
        .topics()
        .iter()
        .map(|t| {
            let logical =
                t.name().strip_prefix(&cfg.kafka.topic_prefix).filter(|l| topics::get(l).is_some()).map(str::to_string);
            Listed { name: t.name().to_string(), partitions: t.partitions().len(), logical }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Fails with [`Error::Missing`] unless every topic in `logical` exists on the broker.
pub fn require(cfg: &Config, logical: &[&str]) -> Result<()> {
    let present: Vec<String> = list(cfg)?.into_iter().map(|t| t.name).collect();
    let missing: Vec<String> = logical.iter().map(|l| cfg.topic(l)).filter(|full| !present.contains(full)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Missing(missing))
    }
}
