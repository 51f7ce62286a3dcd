//! The configuration reference, generated from the doc comments of the config sections: the
//! README's configuration table is `pagepulse config docs`, and a test fails when they differ
//! (as the topic reference is generated from `topics/`).
//!
//! The build script extracts every documented `pub struct` of `src/config.rs` and of each
//! `src/pipelines/<name>/config.rs` with its fields' types and doc comments. Sections come in
//! the order of [`super::Config`]'s fields; a struct's section is the first `` `[...]` `` of its
//! doc.

use std::fmt::Write as _;

/// A documented `pub struct` of a config file, as the build script found it.
struct DocStruct {
    name: &'static str,
    /// Its doc comment, line by line.
    doc: &'static [&'static str],
    /// Its `pub` fields, in order.
    fields: &'static [DocField],
}

/// A `pub` field of a [`DocStruct`].
struct DocField {
    name: &'static str,
    /// Its Rust type, as written.
    ty: &'static str,
    /// Its doc comment, line by line.
    doc: &'static [&'static str],
}

include!(concat!(env!("OUT_DIR"), "/config_docs.rs"));

/// One key of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Dotted key; `<p>` stands for a platform name in `platforms.<p>.*`.
    pub key: String,
    /// What the value is written as.
    pub kind: &'static str,
    /// The field's doc comment, on one line.
    pub doc: String,
}

/// The struct named `name`.
fn find(name: &str) -> Option<&'static DocStruct> {
    STRUCTS.iter().find(|s| s.name == name)
}

/// The section a struct's doc names: its first `` `[...]` ``.
fn section_of(doc: &[&str]) -> Option<String> {
    let text = doc.join(" ");
    let start = text.find("`[")? + 2;
    let end = start + text[start..].find("]`")?;
    Some(text[start..end].to_string())
}

/// How a value of Rust type `ty` is written in the file. Panics on a type nobody described yet,
/// so a new one gets a deliberate entry (the tests build the whole reference).
fn kind(ty: &str) -> &'static str {
    match ty {
        "bool" => "boolean",
        "usize" | "u32" | "i32" | "u64" | "NonZeroUsize" => "integer",
        "f64" => "number",
        "String" | "Option<String>" | "Option<Token>" | "Option<Secret>" => "string",
        "Forward" => "`\"proxy\"`, `\"redirect\"` or `\"off\"`",
        "Option<PathBuf>" => "path",
        "Vec<String>" => "list of strings",
        "Vec<ApiToken>" => "list of `{ name, token, scopes }`",
        "Duration" | "Option<Duration>" => "duration",
        "SocketAddr" => "`\"host:port\"`",
        "BTreeMap<String, String>" => "table of strings",
        "ProcessingGuarantee" => "`\"at_least_once\"` or `\"exactly_once\"`",
        "Vec<RankingConfig>" => "list of tables",
        other => panic!("config type `{other}` has no entry in config::reference::kind"),
    }
}

/// Doc comment lines as one line of Markdown table text: intra-doc links become plain code,
/// and `|` is escaped.
fn one_line(doc: &[&str]) -> String {
    doc.iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .replace("[`", "`")
        .replace("`]", "`")
        .replace('|', "\\|")
}

/// Every key of the configuration file, in the order of [`super::Config`]'s sections.
pub fn keys() -> Vec<Key> {
    let config = find("Config").expect("config.rs defines Config");
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for section in config.fields {
        let ty = section.ty;
        if seen.contains(&ty) {
            continue; // one section type for several sections ([platforms.<p>])
        }
        seen.push(ty);
        let s = find(ty).unwrap_or_else(|| panic!("section type {ty} is not a documented pub struct"));
        let name = section_of(s.doc).unwrap_or_else(|| panic!("{ty}'s doc does not name its section as `[...]`"));
        for f in s.fields {
            out.push(Key { key: format!("{name}.{}", f.name), kind: kind(f.ty), doc: one_line(f.doc) });
        }
    }
    out
}

/// The configuration reference in Markdown, as the README shows it.
pub fn markdown() -> String {
    let mut md = String::from("| key | type | meaning |\n|---|---|---|\n");
    for k in keys() {
        // `writeln!` into a String cannot fail.
        let _ = writeln!(md, "| `{}` | {} | {} |", k.key, k.kind, k.doc);
    }
    md
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::Config;
    use crate::section::keys_read;

    #[test]
    fn every_key_the_loader_reads_is_documented_and_nothing_else() {
        let read = keys_read(|| drop(Config::default()));
        let documented: BTreeSet<String> = keys()
            .into_iter()
            .flat_map(|k| match k.key.strip_prefix("platforms.<p>.") {
                Some(rest) => vec![format!("platforms.facebook.{rest}"), format!("platforms.mastodon.{rest}")],
                None => vec![k.key],
            })
            .collect();
        assert_eq!(documented, read);
        assert!(keys().iter().all(|k| !k.doc.is_empty()), "every field has a doc comment");
    }

    #[test]
    fn readme_configuration_table_is_generated_from_the_doc_comments() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
        let begin = "<!-- config:begin -->\n";
        let (_, rest) = readme.split_once(begin).expect("README has the config:begin marker");
        let (table, _) = rest.split_once("<!-- config:end -->").expect("README has the config:end marker");
        assert!(
            table == markdown(),
            "README's configuration table is stale: paste the output of `pagepulse config docs` between the markers"
        );
    }
}
