//! Reading one section of the configuration file: typed values with their defaults, every problem
//! recorded with its dotted key (and the environment variable it came from) instead of stopping
//! at the first. [`crate::config`] composes the sections; each pipeline's `config.rs` reads its
//! own with a [`Fields`]. This module knows nothing of either, so both can use it.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `kafka.brokers`.
    pub key: String,
    /// Environment variable the value came from, if any.
    pub env: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.env {
            Some(var) => write!(f, "{} (from {}): {}", self.key, var, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// Reads typed fields out of one TOML section, recording every problem instead of stopping at
/// the first; whatever is left at [`Fields::finish`] is an unknown key.
pub struct Fields<'a> {
    table: Table,
    path: String,
    problems: &'a mut Vec<Problem>,
    from_env: &'a BTreeSet<(String, String)>,
}

thread_local! {
    /// Every key read while [`keys_read`] runs on this thread.
    static READ: RefCell<Option<BTreeSet<String>>> = const { RefCell::new(None) };
}

/// Runs `load` and returns every dotted key it read through a [`Fields`]: what the loader
/// accepts, so a test can hold the generated configuration reference to it.
pub fn keys_read(load: impl FnOnce()) -> BTreeSet<String> {
    READ.with(|r| *r.borrow_mut() = Some(BTreeSet::new()));
    load();
    READ.with(|r| r.borrow_mut().take()).unwrap_or_default()
}

impl<'a> Fields<'a> {
    /// The top level of a file: its problems go to `problems`; `from_env` pairs each key set from
    /// the environment with its variable.
    pub fn root(table: Table, problems: &'a mut Vec<Problem>, from_env: &'a BTreeSet<(String, String)>) -> Self {
        Fields { table, path: String::new(), problems, from_env }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    fn env_of(&self, full: &str) -> Option<String> {
        self.from_env.iter().find(|(k, _)| k == full).map(|(_, v)| v.clone())
    }

    /// Notes that `key` is one the loader reads (see [`keys_read`]), and takes its value out.
    fn remove(&mut self, key: &str) -> Option<Value> {
        READ.with(|r| {
            if let Some(read) = r.borrow_mut().as_mut() {
                read.insert(self.key(key));
            }
        });
        self.table.remove(key)
    }

    /// Records a problem with `key` (in this section).
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let full = self.key(key);
        let env = self.env_of(&full);
        self.problems.push(Problem { key: full, env, message: message.into() });
    }

    /// Records a problem for `key` when `bad` holds.
    pub fn check(&mut self, bad: bool, key: &str, message: &str) {
        if bad {
            self.problem(key, message);
        }
    }

    /// A sub-section; its problems go to the same list.
    pub fn section(&mut self, key: &str) -> Fields<'_> {
        let table = match self.table.remove(key) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(other) => {
                self.problem(key, format!("must be a section ([{}]), found {}", self.key(key), other.type_str()));
                Table::new()
            }
        };
        Fields { table, path: self.key(key), problems: self.problems, from_env: self.from_env }
    }

    /// Any value serde can read from TOML.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        match self.remove(key) {
            None => default,
            Some(v) => {
                let shown = v.to_string();
                match v.try_into::<T>() {
                    Ok(t) => t,
                    Err(e) => {
                        self.problem(key, format!("invalid value {shown}: {}", e.message().trim()));
                        default
                    }
                }
            }
        }
    }

    /// A string; values from the environment may look like numbers or booleans and still count
    /// as strings (`PAGEPULSE_TOPIC_PREFIX=2024`).
    pub fn string(&mut self, key: &str, default: &str) -> String {
        let full = self.key(key);
        match self.remove(key) {
            None => default.to_string(),
            Some(Value::String(s)) => s,
            Some(v @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_))) if self.env_of(&full).is_some() => {
                v.to_string()
            }
            Some(v) => {
                self.problem(key, format!("expected a string, found {} {}", v.type_str(), v));
                default.to_string()
            }
        }
    }

    /// A duration written like `250ms`, `5s`, `10m`, `1h`.
    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        match self.remove(key) {
            None => default,
            Some(Value::String(s)) => humantime::parse_duration(&s).unwrap_or_else(|e| {
                self.problem(key, format!("invalid duration \"{s}\": {e} (write e.g. \"250ms\", \"5s\", \"1h\")"));
                default
            }),
            Some(v) => {
                self.problem(key, format!("expected a duration string such as \"5s\", found {} {}", v.type_str(), v));
                default
            }
        }
    }

    /// A string parsed with `FromStr`.
    pub fn parse<T: std::str::FromStr>(&mut self, key: &str, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match self.remove(key) {
            None => default,
            Some(Value::String(s)) => s.parse().unwrap_or_else(|e| {
                self.problem(key, format!("invalid value \"{s}\": {e}"));
                default
            }),
            Some(v) => {
                self.problem(key, format!("expected a string, found {} {}", v.type_str(), v));
                default
            }
        }
    }

    /// Reports every key nobody asked for.
    pub fn finish(self) {
        let Fields { table, path, problems, from_env } = self;
        for key in table.keys() {
            let full = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            let env = from_env.iter().find(|(k, _)| *k == full).map(|(_, v)| v.clone());
            problems.push(Problem { key: full, env, message: "unknown key".into() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_their_key_and_unknown_keys_are_reported() {
        let table: Table = "a = \"x\"\nb = \"5q\"\n[s]\nc = 1\nd = true\n".parse().expect("TOML");
        let from_env = BTreeSet::from([("s.d".to_string(), "PAGEPULSE__s__d".to_string())]);
        let mut problems = Vec::new();
        let read = keys_read(|| {
            let mut root = Fields::root(table, &mut problems, &from_env);
            assert_eq!(root.string("a", "-"), "x");
            assert_eq!(root.duration("b", Duration::from_secs(1)), Duration::from_secs(1));
            let mut s = root.section("s");
            assert_eq!(s.take("c", 0u32), 1);
            s.finish();
            root.finish();
        });
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(shown[0].starts_with("b: invalid duration \"5q\""), "{shown:?}");
        assert_eq!(shown[1], "s.d (from PAGEPULSE__s__d): unknown key");
        assert_eq!(read, BTreeSet::from(["a".to_string(), "b".to_string(), "s.c".to_string()]));
    }
}
