//! The command line: bad config is refused with every problem named, an unreachable broker gives
//! a clear error instead of a hang, missing topics are named, and `topics create` is idempotent.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

fn pagepulse() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pagepulse"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("PAGEPULSE")) {
        c.env_remove(k);
    }
    c
}

fn run(cmd: &mut Command) -> (bool, String, String, Duration) {
    let t = Instant::now();
    let out = cmd.output().expect("run pagepulse");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
        t.elapsed(),
    )
}

#[test]
fn invalid_config_lists_every_problem_with_its_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[kafka]\nbrokers = 9092\ngroup = \"x\"\n[engine]\nworkers = 0\nshutdown_timeout = \"forever\"\n\
         [pipelines.posts]\ntrending_top_n = -1\n",
    )
    .expect("write config");
    let (ok, _, err, _) = run(pagepulse().args(["run", "--config"]).arg(&path).env("PAGEPULSE_HTTP_LISTEN", "nowhere"));
    assert!(!ok);
    for needle in [
        "kafka.brokers",
        "kafka.group: unknown key",
        "engine.workers",
        "engine.shutdown_timeout",
        "pipelines.posts.trending_top_n",
        "http.listen (from PAGEPULSE_HTTP_LISTEN)",
        "6 problems",
    ] {
        assert!(err.contains(needle), "stderr should mention {needle:?}:\n{err}");
    }
}

#[test]
fn config_syntax_error_names_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[kafka\nbrokers = 1\n").expect("write");
    let (ok, _, err, _) = run(pagepulse().args(["topics", "list", "-c"]).arg(&path));
    assert!(!ok);
    assert!(err.contains("broken.toml") && err.contains("line 1"), "{err}");
}

#[test]
fn unreachable_broker_is_a_clear_error_not_a_hang() {
    let port = support::free_port();
    for args in [&["topics", "list"][..], &["run"][..], &["topics", "create"][..]] {
        let (ok, _, err, took) = run(pagepulse()
            .args(args)
            .env("PAGEPULSE_BROKERS", format!("127.0.0.1:{port}"))
            .env("PAGEPULSE__kafka__connect_timeout", "\"2s\"")
            .env("PAGEPULSE_HTTP_LISTEN", "127.0.0.1:0"));
        assert!(!ok, "{args:?} must fail");
        assert!(
            err.contains("cannot reach Kafka at 127.0.0.1:") && err.contains("PAGEPULSE_BROKERS"),
            "{args:?}: {err}"
        );
        assert!(took < Duration::from_secs(15), "{args:?} took {took:?}");
    }
}

#[test]
fn run_names_missing_topics() {
    let (ok, _, err, _) = run(pagepulse()
        .arg("run")
        .env("PAGEPULSE_BROKERS", support::brokers())
        .env("PAGEPULSE_TOPIC_PREFIX", "nothing-here.")
        .env("PAGEPULSE_HTTP_LISTEN", "127.0.0.1:0"));
    assert!(!ok);
    assert!(err.contains("missing topics: nothing-here.deadletter, nothing-here.posts"), "{err}");
    assert!(err.contains("pagepulse topics create"), "{err}");
}

#[test]
fn topics_create_is_idempotent_and_list_marks_our_topics() {
    let env = support::TestEnv::new(); // creates them once
    let (ok, out, err, _) = run(&mut env.cli(&["topics", "create"]));
    assert!(ok, "{err}");
    for t in ["posts", "posts.analysis", "posts.trending", "deadletter"] {
        assert!(out.contains(&format!("exists  {}", env.topic(t))), "{out}");
    }
    let (ok, out, _, _) = run(&mut env.cli(&["topics", "list"]));
    assert!(ok);
    assert!(out.contains(&format!("{}\t4 partitions  (pagepulse: posts)", env.topic("posts"))), "{out}");
}

#[test]
fn config_docs_prints_the_reference_without_loading_a_config() {
    // An invalid override: `config docs` must not need a valid configuration.
    let (ok, out, err, _) = run(pagepulse().args(["config", "docs"]).env("PAGEPULSE__engine__workers", "0"));
    assert!(ok, "{err}");
    assert!(out.starts_with("| key | type | meaning |"), "{out}");
    assert!(out.contains("| `pipelines.posts.trending_top_n` | integer |"), "{out}");
}

#[test]
fn help_is_available_everywhere() {
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["topics", "--help"],
        &["topics", "create", "--help"],
        &["demo", "posts", "--help"],
        &["consume", "--help"],
    ] {
        let (ok, out, _, _) = run(pagepulse().args(args));
        assert!(ok && out.contains("Usage"), "{args:?}");
    }
}
