//! Embeds every topic definition under `topics/` into the binary, so `topics create` and the
//! pipelines use the same single source whatever directory pagepulse runs from; and extracts the
//! doc comments of the configuration sections (`src/config.rs`, `src/pipelines/*/config.rs`), so
//! `pagepulse config docs` prints the configuration reference from the same text rustdoc shows.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read at run time, not baked in with env!(): a build script binary may be shared between
    // checkouts of the same crate (worktrees with one target directory).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("topics");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("topics/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = String::from(
        "/// Every `topics/*.json` file: (file name, contents).\npub static FILES: &[(&str, &str)] = &[\n",
    );
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.file_name().expect("file name").to_string_lossy();
        writeln!(out, "    ({name:?}, include_str!({:?})),", f.display().to_string()).expect("write to String");
    }
    out.push_str("];\n");
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(Path::new(&out_dir).join("topic_files.rs"), out).expect("write generated file");
    std::fs::write(Path::new(&out_dir).join("config_docs.rs"), config_docs(Path::new(&manifest)))
        .expect("write generated file");
}

/// One `pub struct` of a config file, with its doc and its documented `pub` fields.
struct Struct {
    name: String,
    doc: Vec<String>,
    fields: Vec<(String, String, Vec<String>)>,
}

/// The doc comments of every config section: `src/config.rs` and each pipeline's `config.rs`,
/// as a Rust source defining `STRUCTS` of `config::reference`'s `DocStruct`s.
fn config_docs(manifest: &Path) -> String {
    let mut files = vec![manifest.join("src/config.rs")];
    let pipelines = manifest.join("src/pipelines");
    println!("cargo:rerun-if-changed={}", pipelines.display());
    let mut dirs: Vec<_> = std::fs::read_dir(&pipelines)
        .expect("src/pipelines exists")
        .map(|e| e.expect("readable entry").path().join("config.rs"))
        .filter(|p| p.is_file())
        .collect();
    dirs.sort();
    files.extend(dirs);
    let mut out =
        String::from("/// The documented `pub struct`s of the config files.\nstatic STRUCTS: &[DocStruct] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let text = std::fs::read_to_string(f).expect("readable config file");
        for s in structs(&text) {
            write!(out, "    DocStruct {{ name: {:?}, doc: &{:?}, fields: &[", s.name, s.doc).expect("write to String");
            for (name, ty, doc) in &s.fields {
                write!(out, "DocField {{ name: {name:?}, ty: {ty:?}, doc: &{doc:?} }}, ").expect("write to String");
            }
            out.push_str("] },\n");
        }
    }
    out.push_str("];\n");
    out
}

/// The `pub struct`s of one rustfmt-formatted file, with their `///` docs and `pub` fields.
fn structs(text: &str) -> Vec<Struct> {
    let (mut out, mut doc, mut current): (Vec<Struct>, Vec<String>, Option<Struct>) = (Vec::new(), Vec::new(), None);
    for line in text.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            continue;
        }
        if t.starts_with("#[") {
            continue; // attributes sit between a doc and its item
        }
        match &mut current {
            None => {
                if let Some(name) = t.strip_prefix("pub struct ").and_then(|r| r.strip_suffix(" {")) {
                    current =
                        Some(Struct { name: name.to_string(), doc: std::mem::take(&mut doc), fields: Vec::new() });
                }
            }
            Some(s) => {
                if t == "}" {
                    out.extend(current.take());
                } else if let Some((name, ty)) =
                    t.strip_prefix("pub ").and_then(|r| r.strip_suffix(',')?.split_once(": "))
                {
                    s.fields.push((name.to_string(), ty.to_string(), std::mem::take(&mut doc)));
                }
            }
        }
        doc.clear();
    }
    out
}
