//! Topic definitions, read from the `topics/*.json` files embedded at build time: the single
//! source for `topics create`, the topic reference in the README and the schema tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

use serde::Deserialize;

mod files {
    include!(concat!(env!("OUT_DIR"), "/topic_files.rs"));
}

/// One topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDef {
    /// Logical name (the deployment's `kafka.topic_prefix` goes in front).
    pub name: String,
    /// What the topic carries and who writes it.
    pub description: String,
    /// `input`, `output` or `internal`.
    pub role: String,
    /// Partition count for `topics create`.
    pub partitions: i32,
    /// Topic configs for `topics create`, e.g. `cleanup.policy`, `retention.ms`.
    pub config: BTreeMap<String, String>,
    /// What the record key is.
    pub key: String,
    /// Headers and their meaning, when the topic uses any.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON Schema of the value.
    pub value_schema: serde_json::Value,
    /// Example records that are valid.
    pub examples: Vec<Example>,
    /// Example records that pagepulse refuses (input topics): each goes to the dead-letter topic.
    #[serde(default)]
    pub invalid_examples: Vec<InvalidExample>,
}

impl TopicDef {
    /// The definition of a state store's changelog `name` (see [`crate::engine::state`]):
    /// internal, compacted, with `partitions` (its input's count). Not in `topics/`: its name
    /// depends on the application id.
    pub fn changelog(name: &str, partitions: i32) -> Self {
        Self {
            name: name.to_string(),
            description: "State changes of one store (pagepulse's own; see README, Durable state)".into(),
            role: "internal".into(),
            partitions,
            config: [("cleanup.policy".to_string(), "compact".to_string())].into_iter().collect(),
            key: "store-specific".into(),
            headers: BTreeMap::new(),
            value_schema: serde_json::Value::Null,
            examples: Vec::new(),
            invalid_examples: Vec::new(),
        }
    }
}

impl TopicDef {
    /// The definition of a consumer group's instances topic `name` (see
    /// [`crate::kafka::instances`]): internal, compacted, one partition, claims kept an hour.
    pub fn instances(name: &str) -> Self {
        let mut def = Self::changelog(name, 1);
        def.description = "Which instance of the group holds which input partitions (pagepulse's own)".into();
        def.config.insert("cleanup.policy".into(), "compact,delete".into());
        def.config.insert("retention.ms".into(), "3600000".into());
        def.key = "instance id".into();
        def
    }
}

/// A valid example record.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// The key.
    pub key: Option<String>,
    /// The value, as JSON.
    pub value: serde_json::Value,
    /// Headers, if the topic uses any.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// An example that pagepulse refuses, with the reason class it must be refused for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidExample {
    /// The key, for topics whose key is part of the record's meaning (e.g. `pages`).
    #[serde(default)]
    pub key: Option<String>,
    /// The raw value text (not necessarily JSON).
    pub value: String,
    /// The [`crate::engine::RejectClass`] label it is refused with.
    pub reason: String,
}

/// Problems with the embedded definitions (a build of pagepulse with broken `topics/` files).
#[derive(Debug, thiserror::Error)]
#[error("topics/{file}: {message}")]
pub struct DefError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

/// Every topic definition, sorted by name.
pub fn all() -> &'static [TopicDef] {
    static DEFS: OnceLock<Vec<TopicDef>> = OnceLock::new();
    DEFS.get_or_init(|| match parse_all() {
        Ok(defs) => defs,
        // The files are embedded at build time and checked by tests; a broken one is a build bug.
        Err(e) => panic!("embedded topic definitions are invalid: {e}"),
    })
}

fn parse_all() -> Result<Vec<TopicDef>, DefError> {
    let mut defs = Vec::new();
    for (file, text) in files::FILES {
        let def: TopicDef =
            serde_json::from_str(text).map_err(|e| DefError { file: file.to_string(), message: e.to_string() })?;
        if format!("{}.json", def.name) != *file {
            return Err(DefError {
                file: file.to_string(),
                message: format!("name {} does not match the file name", def.name),
            });
        }
        defs.push(def);
    }
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(defs)
}

/// The definition of logical topic `name`.
pub fn get(name: &str) -> Option<&'static TopicDef> {
    all().iter().find(|d| d.name == name)
}

/// The topic reference in Markdown, as the README shows it.
pub fn markdown() -> String {
    // `writeln!` into a String cannot fail: its results are ignored below.
    let mut md = String::new();
    for d in all() {
        let _ = writeln!(md, "### `{}` ({})\n\n{}\n", d.name, d.role, d.description);
        let configs: Vec<String> = d.config.iter().map(|(k, v)| format!("`{k}={v}`")).collect();
        let _ = writeln!(md, "- Partitions: {}; config: {}", d.partitions, configs.join(", "));
        let _ = writeln!(md, "- Key: {}", d.key);
        for (h, what) in &d.headers {
            let _ = writeln!(md, "- Header `{h}`: {what}");
        }
        let _ = writeln!(md, "- Value schema: [`topics/{}.json`](topics/{}.json)", d.name, d.name);
        if let Some(ex) = d.examples.first() {
            let _ = writeln!(md, "- Example value: `{}`", ex.value);
        }
        md.push('\n');
    }
    md
}
