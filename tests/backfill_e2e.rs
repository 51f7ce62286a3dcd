//! Page-view backfill jobs (issue 15) end to end, through the real broker and real HTTP.
//!
//! The test writes small Wikimedia-style hourly dumps (four domains, a few hundred lines each,
//! non-ASCII titles, coarse view counts so that ties fall at the top-25 boundary), gzips them and
//! serves them from a local mirror ([`support::mirror`]) in Wikimedia's layout, where a hour can
//! be missing (404), served slowly, or cut off mid-body on its first download. pagepulse runs
//! with `dump_mirror` pointing there, and jobs are submitted with `POST
//! /api/v1/pageviews/reports` or `pagepulse backfill pageviews`. It proves that:
//!
//! - a six-hour job with a missing, a slow and a truncated hour ends with the five others `done`
//!   and the missing one `failed` after exactly `max_tries` downloads with an error naming the
//!   404, the truncated one done on its second try; every final `pageviews.top` record equals the
//!   counts computed here from the lines written, exactly one per (domain, hour); the job and hour
//!   documents and the 404 problems of unknown jobs and hours are served; bad requests are refused
//!   with problems naming the field; a second job over the same range skips every done hour and
//!   writes no second final record;
//! - a job over hours OLDER than an hour already final (ingested with `pagepulse ingest
//!   pageviews`) computes them exactly (nothing dropped as late), and a job of one hour (`end`
//!   left out) too;
//! - the same dump ingested twice with `pagepulse ingest pageviews` counts once: every partition
//!   reports the second copy `skipped`, there is one final record per (domain, hour), and nothing
//!   of the copy shows up as late in the next hour;
//! - a job whose instance is SIGKILLed mid-download of a (slow) hour completes after a restart
//!   with exactly the computed counts (not doubled, not partial);
//! - `pagepulse backfill pageviews --wait` prints the job id, exits 0 for a job whose hours all
//!   succeed and 1 for a failed one.
//!
//! Each test has its own topic prefix, group and mirror, so they run in parallel.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use support::mirror::{gzip, hour_path, Behaviour, Mirror};
use support::{http, wait_for, Answer, Pagepulse, Rec, TestEnv};

const WRITE: &str = "write-token-0123456789abcdef";
const DOMAINS: [&str; 4] = ["en", "de", "fr.m", "ja"];
const TOP_N: usize = 25;
const HOUR: i64 = 3_600_000;
const MAX_TRIES: u64 = 3;
const REPORTS: &str = "/api/v1/pageviews/reports";

// --- Hours and dumps -------------------------------------------------------------------------

/// Epoch ms of the hour `YYYY-MM-DDTHH` (UTC).
fn ms(hour: &str) -> i64 {
    chrono::NaiveDateTime::parse_from_str(&format!("{hour}:00"), "%Y-%m-%dT%H:%M")
        .unwrap_or_else(|e| panic!("{hour}: {e}"))
        .and_utc()
        .timestamp_millis()
}

/// `YYYY-MM-DDTHH` of epoch ms.
fn hour_name(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("a valid time").format("%Y-%m-%dT%H").to_string()
}

fn title(rng: &mut StdRng, i: usize) -> String {
    match i % 6 {
        0 => format!("Title_{i}"),
        1 => format!("Zürich_{i}"),
        2 => format!("東京_{i}"),
        3 => format!("Ελλάδα_{i}"),
        4 => format!("\"Quoted\"/{i}"),
        // Repeated titles: a title's lines are summed.
        _ => format!("Special:Random{}", rng.gen_range(0..3)),
    }
}

/// One hour's dump, as the test wrote it.
struct Dump {
    /// Start of the hour, epoch ms.
    start: i64,
    /// Every line written: (domain, title, views).
    lines: Vec<(String, String, u64)>,
    /// The dump, gzipped.
    gz: Vec<u8>,
}

impl Dump {
    /// A dump of the hour starting at `start` (`YYYY-MM-DDTHH`), different for each `seed`.
    fn new(start: &str, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut lines = Vec::new();
        let mut text = String::new();
        for d in DOMAINS {
            for i in 0..rng.gen_range(150..300) {
                let t = title(&mut rng, i);
                // A few dozen popular titles with coarse counts (ties at the top-25 boundary),
                // then a long tail.
                let views = if i < 40 { rng.gen_range(1..12) * 100 } else { rng.gen_range(1..5) };
                text.push_str(&format!("{d} {t} {views} 0\n"));
                lines.push((d.to_string(), t, views));
            }
        }
        Self { start: ms(start), lines, gz: gzip(text.as_bytes()) }
    }

    /// `YYYY-MM-DDTHH`.
    fn hour(&self) -> String {
        hour_name(self.start)
    }

    /// Its path on the mirror (and on dumps.wikimedia.org).
    fn path(&self) -> String {
        hour_path(self.start)
    }

    /// Its Wikimedia file name, `pageviews-YYYYMMDD-HH0000.gz` (the end of the hour).
    fn file_name(&self) -> String {
        self.path().rsplit('/').next().expect("a name").to_string()
    }
}

/// What one final `pageviews.top` record must say, computed from the lines written.
#[derive(Debug)]
struct Want {
    domain: String,
    start: i64,
    total: u64,
    /// Views summed per title, ranked by views descending then title in ascending byte order,
    /// the first 25.
    top: Vec<(String, u64)>,
}

/// The expected record of every (domain, hour) of `dumps`, by `pageviews.top` key.
fn expected(dumps: &[&Dump]) -> BTreeMap<String, Want> {
    let mut counts: BTreeMap<String, (String, i64, HashMap<String, u64>)> = BTreeMap::new();
    for d in dumps {
        for (domain, title, views) in &d.lines {
            let key = format!("{domain}|{}", d.hour());
            *counts
                .entry(key)
                .or_insert_with(|| (domain.clone(), d.start, HashMap::new()))
                .2
                .entry(title.clone())
                .or_default() += views;
        }
    }
    counts
        .into_iter()
        .map(|(key, (domain, start, per_title))| {
            let mut all: Vec<(String, u64)> = per_title.into_iter().collect();
            all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_bytes().cmp(b.0.as_bytes())));
            let total = all.iter().map(|(_, v)| v).sum();
            all.truncate(TOP_N);
            (key, Want { domain, start, total, top: all })
        })
        .collect()
}

// --- pagepulse, HTTP ---------------------------------------------------------------------------

/// `pagepulse run` downloading from `mirror`, with fast retries and only the pageviews pipeline.
fn start(env: &TestEnv, mirror: &Mirror) -> Pagepulse {
    let url = mirror.url();
    let vars = [
        ("PAGEPULSE_WRITE_TOKEN", WRITE),
        ("PAGEPULSE__pipelines__pageviews__dump_mirror", url.as_str()),
        ("PAGEPULSE__pipelines__pageviews__backfill_retry_backoff", "100ms"),
        ("PAGEPULSE__pipelines__pageviews__backfill_max_tries", "3"),
        ("PAGEPULSE__pipelines__posts__enabled", "false"),
        ("PAGEPULSE__pipelines__pages__enabled", "false"),
        ("PAGEPULSE__pipelines__fans__enabled", "false"),
        ("PAGEPULSE__pipelines__messages__enabled", "false"),
        ("PAGEPULSE__pipelines__apps__enabled", "false"),
        ("NO_COLOR", "1"),
    ];
    let mut pp = env.start_with(&vars);
    pp.wait_ready(Duration::from_secs(60));
    pp
}

/// The last lines of pagepulse's log, for failure messages.
fn log_tail(pp: &Pagepulse) -> String {
    let log = support::strip_ansi(&pp.log_text());
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn get(pp: &Pagepulse, path: &str) -> Option<Answer> {
    http(&pp.addr, "GET", path, &[], b"")
}

fn post(pp: &Pagepulse, body: &str, token: Option<&str>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth.as_deref() {
        headers.push(("Authorization", a));
    }
    http(&pp.addr, "POST", REPORTS, &headers, body.as_bytes()).expect("an HTTP answer")
}

/// The answer is a problem document with `status` whose text names `names` (e.g. the field).
fn assert_problem(a: &Answer, status: u16, names: &str, what: &str) {
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, status, "{what}: {body}");
    assert_eq!(a.header("content-type"), Some("application/problem+json"), "{what}: {body}");
    assert_eq!(a.json()["status"], status, "{what}: {body}");
    assert!(body.contains(names), "{what}: the problem should name `{names}`: {body}");
}

/// Submits a job over `body` (`{"start", "end"?}`); checks the 202 answer and returns the job id.
fn submit(pp: &Pagepulse, body: Value, hours: u64) -> String {
    let a = post(pp, &body.to_string(), Some(WRITE));
    let v = a.json();
    assert_eq!(a.status, 202, "POST {REPORTS} {body}: {v}");
    let id = v["job"].as_str().filter(|j| !j.is_empty()).unwrap_or_else(|| panic!("a job id: {v}")).to_string();
    assert_eq!(v["status"], "pending", "{v}");
    assert_eq!(v["hours"], hours, "{v}");
    assert_eq!(v["start"], body["start"], "{v}");
    let end = if body["end"].is_null() { &body["start"] } else { &body["end"] };
    assert_eq!(&v["end"], end, "{v}");
    let link = format!("{REPORTS}/{id}");
    assert_eq!(v["links"]["self"], link.as_str(), "{v}");
    assert!(a.header("location").is_some_and(|l| l.ends_with(&link)), "Location {:?} for {link}", a.header("location"));
    id
}

/// Waits until job `id` has ended (`done` or `failed`) and returns its report.
fn wait_job(pp: &Pagepulse, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    wait_for(&format!("job {id} to end"), timeout + Duration::from_secs(5), || {
        if let Some(a) = get(pp, &format!("{REPORTS}/{id}")).filter(|a| a.status == 200) {
            last = a.json();
            if matches!(last["status"].as_str(), Some("done" | "failed")) {
                return Some(last.clone());
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not end within {timeout:?}; last report: {last}\npagepulse log:\n{}",
            log_tail(pp)
        );
        None
    })
}

/// The hour documents of a job report, by hour.
fn hours_of(report: &Value) -> BTreeMap<String, Value> {
    report["hours"]
        .as_array()
        .unwrap_or_else(|| panic!("hours in {report}"))
        .iter()
        .map(|h| (h["hour"].as_str().unwrap_or_else(|| panic!("an hour in {h}")).to_string(), h.clone()))
        .collect()
}

/// The report's `counts` as (state, n), only the states that are not 0.
fn counts(report: &Value) -> BTreeMap<String, u64> {
    let c = report["counts"].as_object().unwrap_or_else(|| panic!("counts in {report}"));
    for state in ["pending", "downloading", "ingesting", "done", "skipped", "failed"] {
        assert!(c.get(state).is_some_and(Value::is_u64), "counts.{state} in {report}");
    }
    c.iter().filter_map(|(k, v)| v.as_u64().filter(|n| *n > 0).map(|n| (k.clone(), n))).collect()
}

fn count_map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// RFC 3339 time of field `f` of `doc`, epoch ms.
fn time_of(doc: &Value, f: &str) -> i64 {
    let t = doc[f].as_str().unwrap_or_else(|| panic!("{f} in {doc}"));
    chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{f} {t:?}: {e}")).timestamp_millis()
}

/// Checks an hour document every ended hour shares (any status).
fn check_hour_doc(doc: &Value, dump: &Dump, mirror: &Mirror, job: &str) {
    assert_eq!(doc["hour"], dump.hour().as_str(), "{doc}");
    assert_eq!(doc["job"], job, "{doc}");
    assert_eq!(doc["max_tries"], MAX_TRIES, "{doc}");
    assert_eq!(doc["url"], mirror.url_of(&dump.path()).as_str(), "the download URL (Wikimedia's layout): {doc}");
    let report = format!("/api/v1/pageviews/hours/{}/top", dump.hour());
    assert_eq!(doc["results"], report.as_str(), "results link: {doc}");
}

/// Checks the document of an hour that was downloaded and ingested in `tries` tries.
fn check_done(doc: &Value, dump: &Dump, mirror: &Mirror, job: &str, tries: Option<u64>) {
    check_hour_doc(doc, dump, mirror, job);
    assert_eq!(doc["status"], "done", "{doc}");
    assert!(doc["error"].is_null(), "{doc}");
    assert_eq!(doc["lines"], dump.lines.len() as u64, "lines of the successful try: {doc}");
    if let Some(t) = tries {
        assert_eq!(doc["try_count"], t, "{doc}");
    }
    assert!(time_of(doc, "finished_at") >= time_of(doc, "started_at"), "{doc}");
}

/// Checks the document of an hour that failed because its dump is missing (404).
fn check_missing(doc: &Value, dump: &Dump, mirror: &Mirror, job: &str) {
    check_hour_doc(doc, dump, mirror, job);
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["try_count"], MAX_TRIES, "{doc}");
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("404")), "the error names the 404: {doc}");
    assert!(doc["finished_at"].is_string(), "{doc}");
}

// --- Reading results ---------------------------------------------------------------------------

/// The final records of `recs` (of `pageviews.top`), by key.
fn finals(recs: &[Rec]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in recs {
        let (Some(k), Some(v)) = (&r.key, &r.value) else { continue };
        let key = String::from_utf8(k.clone()).expect("UTF-8 key");
        let v: Value = serde_json::from_slice(v).unwrap_or_else(|e| panic!("{key}: not JSON: {e}"));
        if v["final"] == true {
            out.entry(key).or_default().push(v);
        }
    }
    out
}

/// Every record of logical topic `topic` produced so far: an end marker (a tombstone with a key
/// of the test's own) is appended to each partition and everything before the markers is
/// returned (tansu 0.6's high watermark cannot be trusted to count records).
fn read_to_end(env: &TestEnv, topic: &str) -> Vec<Rec> {
    let full = env.topic(topic);
    let parts = env.partitions_of(&full).unwrap_or_else(|| panic!("no topic {full}"));
    let marker = format!("__end_of_test__{}", rand::random::<u64>());
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &env.brokers).create().expect("producer");
    for p in 0..parts as i32 {
        producer.send(BaseRecord::<str, [u8]>::to(&full).partition(p).key(&marker)).expect("queue an end marker");
    }
    producer.flush(Duration::from_secs(30)).expect("end markers acknowledged");
    let recs = env.read_until(topic, Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.key.as_deref() == Some(marker.as_bytes())).count() >= parts
    });
    recs.into_iter().filter(|r| !r.key.as_deref().is_some_and(|k| k.starts_with(b"__end_of_test__"))).collect()
}

/// Waits until every key of `want` has a final `pageviews.top` record, then returns every record
/// of the topic so far.
fn read_tops(env: &TestEnv, want: &BTreeMap<String, Want>, timeout: Duration) -> Vec<Rec> {
    env.read_until("pageviews.top", timeout, |recs| {
        let f = finals(recs);
        want.keys().all(|k| f.contains_key(k))
    });
    read_to_end(env, "pageviews.top")
}

/// How many final records one (domain, hour) may have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Finals {
    /// Exactly one.
    One,
    /// Repeats of one identical value (at-least-once output after a crash).
    Identical,
}

/// Every key of `want` has final records equal to the computed ones (articles with ranks, total,
/// domain, hour start), as many as `finals` allows, and no other key has any.
fn assert_tops(recs: &[Rec], want: &BTreeMap<String, Want>, allowed: Finals) {
    let got = finals(recs);
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "final records of windows that should have none: {extra:?}");
    for (key, w) in want {
        let vs = got.get(key).unwrap_or_else(|| panic!("no final record of {key}"));
        match allowed {
            Finals::One => assert_eq!(vs.len(), 1, "{key}: exactly one final record, got {vs:?}"),
            Finals::Identical => {
                assert!(vs.iter().all(|v| v == &vs[0]), "{key}: final records that differ: {vs:?}")
            }
        }
        let v = &vs[0];
        let have: Vec<(String, u64)> = v["articles"]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: articles in {v}"))
            .iter()
            .map(|a| (a["title"].as_str().expect("title").to_string(), a["views"].as_u64().expect("views")))
            .collect();
        assert_eq!(have, w.top, "{key}: the top {TOP_N}");
        let ranks: Vec<u64> =
            v["articles"].as_array().expect("articles").iter().map(|a| a["rank"].as_u64().expect("rank")).collect();
        assert_eq!(ranks, (1..=w.top.len() as u64).collect::<Vec<_>>(), "{key}");
        assert_eq!(v["total_views"].as_u64(), Some(w.total), "{key}: total views");
        assert_eq!(v["domain"], w.domain.as_str(), "{key}");
        assert_eq!(time_of(v, "hour_start"), w.start, "{key}: hour_start");
    }
}

/// No final record of `want` counted late events.
fn assert_no_late(recs: &[Rec], want: &BTreeMap<String, Want>) {
    for (key, vs) in finals(recs) {
        if want.contains_key(&key) {
            assert!(vs.iter().all(|v| v["late_events"] == 0), "{key}: late events: {vs:?}");
        }
    }
}

/// Writes `dump` under its Wikimedia file name into `dir` and loads it with `pagepulse ingest
/// pageviews`.
fn ingest(env: &TestEnv, dir: &std::path::Path, dump: &Dump) {
    let file = dir.join(dump.file_name());
    std::fs::write(&file, &dump.gz).expect("write the dump");
    env.run(&["ingest", "pageviews", "--quiet", file.to_str().expect("UTF-8 path")]);
}

/// A child process killed when dropped (a failed test leaves nothing running).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill(); // Err if it already exited
        let _ = self.0.wait();
    }
}

/// Runs `pagepulse args` of `env` to its end, failing after `timeout`: (status, stdout, stderr).
fn run_cli(env: &TestEnv, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let out = tempfile::NamedTempFile::new().expect("stdout file");
    let err = tempfile::NamedTempFile::new().expect("stderr file");
    let child = env
        .cli(args)
        .stdout(Stdio::from(out.reopen().expect("reopen")))
        .stderr(Stdio::from(err.reopen().expect("reopen")))
        .spawn()
        .expect("spawn pagepulse");
    let mut child = Reaped(child);
    let status = wait_for(&format!("pagepulse {args:?} to exit"), timeout, || child.0.try_wait().expect("try_wait"));
    let text = |f: &tempfile::NamedTempFile| std::fs::read_to_string(f.path()).unwrap_or_default();
    (status, text(&out), text(&err))
}

// --- Tests ---------------------------------------------------------------------------------------

#[test]
fn a_six_hour_job_with_a_missing_a_slow_and_a_truncated_hour() {
    let env = TestEnv::new();
    let mirror = Mirror::start();
    // 2024-02-29T19 ..= 2024-03-01T00: the files of the last two hours end in March, so they are
    // in 2024/2024-03/ (Wikimedia files a dump by the end of its hour).
    let dumps: Vec<Dump> =
        (0..6).map(|h| Dump::new(&hour_name(ms("2024-02-29T19") + h * HOUR), 100 + h as u64)).collect();
    let (missing, slow, cut) = (1, 2, 4);
    assert!(dumps[cut].path().starts_with("/2024/2024-03/pageviews-20240301-000000"), "{}", dumps[cut].path());
    for (i, d) in dumps.iter().enumerate() {
        let behaviour = match i {
            _ if i == missing => Behaviour::Missing,
            // About 2.5 s for the whole body.
            _ if i == slow => Behaviour::Slow { chunk: d.gz.len() / 12 + 1, every: Duration::from_millis(200) },
            _ if i == cut => Behaviour::TruncateFirst(1),
            _ => Behaviour::Normal,
        };
        mirror.put(&d.path(), d.gz.clone(), behaviour);
    }
    let pp = start(&env, &mirror);

    // Refused requests: problems naming what is wrong.
    let ok = r#"{"start": "2024-02-29T19", "end": "2024-03-01T00"}"#;
    let a = post(&pp, ok, None);
    assert_eq!(a.status, 401, "no token: {}", String::from_utf8_lossy(&a.body));
    assert_problem(&post(&pp, r#"{"end": "2024-02-29T19"}"#, Some(WRITE)), 400, "start", "no start");
    assert_problem(&post(&pp, r#"{"start": "2024-02-30T01"}"#, Some(WRITE)), 400, "start", "no such day");
    assert_problem(&post(&pp, r#"{"start": "2024-02-29 19:00"}"#, Some(WRITE)), 400, "start", "not YYYY-MM-DDTHH");
    assert_problem(
        &post(&pp, r#"{"start": "2024-02-29T19", "end": "2024-02-29T18"}"#, Some(WRITE)),
        400,
        "end",
        "end before start",
    );
    // 745 hours, one more than backfill_max_hours.
    let long = post(&pp, r#"{"start": "2024-01-01T00", "end": "2024-02-01T00"}"#, Some(WRITE));
    assert_problem(&long, 400, "", "a range over backfill_max_hours");
    assert_problem(
        &post(&pp, r#"{"start": "2024-02-29T19", "priority": "high"}"#, Some(WRITE)),
        400,
        "priority",
        "an unknown field",
    );

    // The job.
    let id = submit(&pp, json!({"start": "2024-02-29T19", "end": "2024-03-01T00"}), 6);
    let report = wait_job(&pp, &id, Duration::from_secs(120));
    assert_eq!(report["status"], "failed", "one hour failed: {report}");
    assert_eq!(report["job"], id.as_str());
    assert_eq!((&report["start"], &report["end"]), (&json!("2024-02-29T19"), &json!("2024-03-01T00")), "{report}");
    assert!(time_of(&report, "updated_at") >= time_of(&report, "created_at"), "{report}");
    assert_eq!(counts(&report), count_map(&[("done", 5), ("failed", 1)]), "{report}");
    let docs = hours_of(&report);
    assert_eq!(docs.keys().cloned().collect::<Vec<_>>(), dumps.iter().map(Dump::hour).collect::<Vec<_>>(), "{report}");
    for (i, d) in dumps.iter().enumerate() {
        let doc = &docs[&d.hour()];
        if i == missing {
            check_missing(doc, d, &mirror, &id);
        } else {
            check_done(doc, d, &mirror, &id, Some(if i == cut { 2 } else { 1 }));
        }
    }
    // The mirror saw exactly those downloads, and nothing else (no refused request made a job).
    assert_eq!(mirror.gets(&dumps[missing].path()), MAX_TRIES as usize, "tries of the missing hour");
    assert_eq!(mirror.gets(&dumps[cut].path()), 2, "the truncated hour: cut, then whole");
    assert_eq!(mirror.completed(&dumps[cut].path()), 1);
    for (i, d) in dumps.iter().enumerate().filter(|(i, _)| ![missing, cut].contains(i)) {
        assert_eq!(mirror.gets(&d.path()), 1, "hour {i} ({}) is downloaded once", d.hour());
    }
    let paths: HashSet<String> = dumps.iter().map(Dump::path).collect();
    let strays: Vec<_> = mirror.log().into_iter().filter(|r| !paths.contains(&r.path)).collect();
    assert!(strays.is_empty(), "requests outside the job's range: {strays:?}");

    // Results: the five hours, exact, one final record each; nothing for the missing hour.
    let ok_dumps: Vec<&Dump> = dumps.iter().enumerate().filter(|(i, _)| *i != missing).map(|(_, d)| d).collect();
    let want = expected(&ok_dumps);
    assert_eq!(want.len(), 5 * DOMAINS.len());
    let tops = read_tops(&env, &want, Duration::from_secs(60));
    assert_tops(&tops, &want, Finals::One);
    // ... and the API serves them (the truncated hour, every domain).
    for domain in DOMAINS {
        let key = format!("{domain}|{}", dumps[cut].hour());
        let path = format!("/api/v1/pageviews/top/{domain}/{}", dumps[cut].hour());
        let v = wait_for(&format!("GET {path}"), Duration::from_secs(30), || {
            get(&pp, &path).filter(|a| a.status == 200).map(|a| a.json())
        });
        let have: Vec<(String, u64)> = v["articles"]
            .as_array()
            .expect("articles")
            .iter()
            .map(|a| (a["title"].as_str().expect("title").to_string(), a["views"].as_u64().expect("views")))
            .collect();
        assert_eq!(have, want[&key].top, "{path}");
    }

    // Each done hour's report (its `results` link): every domain's top 25, JSON and CSV.
    for d in dumps.iter().filter(|d| d.hour() != dumps[missing].hour()) {
        let link = docs[&d.hour()]["results"].as_str().expect("a results link").to_string();
        let a = get(&pp, &link).expect("an answer");
        assert_eq!(a.status, 200, "{link}: {}", String::from_utf8_lossy(&a.body));
        let v = a.json();
        assert_eq!(v["hour"], d.hour().as_str(), "{link}");
        let mut domains = Vec::new();
        for t in v["domains"].as_array().expect("domains") {
            let key = format!("{}|{}", t["domain"].as_str().expect("domain"), d.hour());
            let have: Vec<(String, u64)> = t["articles"]
                .as_array()
                .expect("articles")
                .iter()
                .map(|a| (a["title"].as_str().expect("title").to_string(), a["views"].as_u64().expect("views")))
                .collect();
            assert_eq!((have, t["final"].as_bool()), (want[&key].top.clone(), Some(true)), "{link}: {key}");
            domains.push(t["domain"].as_str().expect("domain").to_string());
        }
        let mut all: Vec<String> = DOMAINS.iter().map(|d| d.to_string()).collect();
        all.sort();
        assert_eq!(domains, all, "{link}: every domain, in order");
        let csv = http(&pp.addr, "GET", &format!("{link}?format=csv"), &[], b"").expect("an answer");
        let text = String::from_utf8_lossy(&csv.body).into_owned();
        let rows = DOMAINS.iter().map(|dm| want[&format!("{dm}|{}", d.hour())].top.len()).sum::<usize>();
        assert_eq!(
            (csv.status, text.lines().count()),
            (200, rows + 1),
            "{link}?format=csv: a header and a row per article"
        );
        assert_eq!(text.lines().next(), Some("domain,hour_start,final,rank,title,views"));
    }
    let a = get(&pp, &format!("/api/v1/pageviews/hours/{}/top", dumps[missing].hour())).expect("an answer");
    assert_problem(&a, 404, &dumps[missing].hour(), "the report of an hour never computed");

    // Hour documents.
    let slow_hour = dumps[slow].hour();
    let doc = get(&pp, &format!("/api/v1/pageviews/hours/{slow_hour}")).expect("an answer");
    assert_eq!(doc.status, 200, "{}", String::from_utf8_lossy(&doc.body));
    check_done(&doc.json(), &dumps[slow], &mirror, &id, Some(1));
    let untouched = "2024-02-29T18";
    let a = get(&pp, &format!("/api/v1/pageviews/hours/{untouched}")).expect("an answer");
    assert_problem(&a, 404, untouched, "an hour no job or ingestion touched");
    let a = get(&pp, &format!("{REPORTS}/no-such-job-42")).expect("an answer");
    assert_problem(&a, 404, "no-such-job-42", "an unknown job");

    // The same range again: every done hour is skipped, the missing one fails again, and no
    // second final record appears.
    let id2 = submit(&pp, json!({"start": "2024-02-29T19", "end": "2024-03-01T00"}), 6);
    assert_ne!(id2, id, "a new job");
    let report2 = wait_job(&pp, &id2, Duration::from_secs(120));
    assert_eq!(report2["status"], "failed", "{report2}");
    assert_eq!(counts(&report2), count_map(&[("skipped", 5), ("failed", 1)]), "{report2}");
    let docs2 = hours_of(&report2);
    for (i, d) in dumps.iter().enumerate() {
        let doc = &docs2[&d.hour()];
        let status = if i == missing { "failed" } else { "skipped" };
        assert_eq!(doc["status"], status, "{doc}");
    }
    assert!(docs2[&dumps[missing].hour()]["error"].as_str().is_some_and(|e| e.contains("404")), "{report2}");
    assert_eq!(
        mirror.gets(&dumps[missing].path()),
        2 * MAX_TRIES as usize,
        "the second job tried the missing hour again"
    );
    assert_tops(&read_to_end(&env, "pageviews.top"), &want, Finals::One);
}

#[test]
fn a_job_older_than_an_hour_already_final_is_exact() {
    let env = TestEnv::new();
    let mirror = Mirror::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let later = Dump::new("2024-03-10T12", 7);
    let older: Vec<Dump> = ["2024-03-10T08", "2024-03-10T09", "2024-03-10T10"]
        .iter()
        .enumerate()
        .map(|(i, h)| Dump::new(h, 70 + i as u64))
        .collect();
    for d in &older {
        mirror.put(&d.path(), d.gz.clone(), Behaviour::Normal);
    }
    let pp = start(&env, &mirror);

    // The later hour first, from its file: final.
    ingest(&env, dir.path(), &later);
    let want_later = expected(&[&later]);
    assert_tops(&read_tops(&env, &want_later, Duration::from_secs(60)), &want_later, Finals::One);
    let path = format!("/api/v1/pageviews/hours/{}", later.hour());
    let doc = wait_for("the ingested hour's document", Duration::from_secs(30), || {
        get(&pp, &path).filter(|a| a.status == 200).map(|a| a.json())
    });
    assert_eq!(doc["hour"], later.hour().as_str(), "{doc}");
    assert!(doc["job"].is_null(), "an hour from `ingest pageviews` has no job: {doc}");
    assert_eq!(doc["status"], "done", "{doc}");
    // Nothing touched 2024-03-10T10 yet.
    let a = get(&pp, &format!("/api/v1/pageviews/hours/{}", older[2].hour())).expect("an answer");
    assert_problem(&a, 404, &older[2].hour(), "an hour no job touched yet");

    // Two older hours in one job, then the third alone (`end` left out: one hour).
    let id = submit(&pp, json!({"start": older[0].hour(), "end": older[1].hour()}), 2);
    let report = wait_job(&pp, &id, Duration::from_secs(90));
    assert_eq!(report["status"], "done", "{report}");
    assert_eq!(counts(&report), count_map(&[("done", 2)]), "{report}");
    let docs = hours_of(&report);
    for d in &older[..2] {
        check_done(&docs[&d.hour()], d, &mirror, &id, Some(1));
    }
    let id2 = submit(&pp, json!({"start": older[2].hour()}), 1);
    let report2 = wait_job(&pp, &id2, Duration::from_secs(90));
    assert_eq!(report2["status"], "done", "{report2}");
    assert_eq!(counts(&report2), count_map(&[("done", 1)]), "{report2}");
    check_done(&hours_of(&report2)[&older[2].hour()], &older[2], &mirror, &id2, Some(1));

    // Every hour exact, nothing of the older hours dropped or counted as late.
    let all: Vec<&Dump> = older.iter().chain([&later]).collect();
    let want = expected(&all);
    let tops = read_tops(&env, &want, Duration::from_secs(60));
    assert_tops(&tops, &want, Finals::One);
    assert_no_late(&tops, &want);
}

#[test]
fn the_same_dump_ingested_twice_counts_once() {
    let env = TestEnv::new();
    let mirror = Mirror::start(); // unused: nothing is downloaded here
    let dir = tempfile::tempdir().expect("temp dir");
    let pp = start(&env, &mirror);
    let first = Dump::new("2024-05-01T06", 11);
    let next = Dump::new("2024-05-01T07", 12);
    let parts = env.partitions_of(&env.topic("pageviews")).expect("the pageviews topic");

    ingest(&env, dir.path(), &first);
    let want_first = expected(&[&first]);
    read_tops(&env, &want_first, Duration::from_secs(60));
    ingest(&env, dir.path(), &first);

    // Every partition closes the hour twice: final from the first copy, skipped from the second.
    let hour = first.hour();
    let outcomes = |recs: &[Rec]| -> BTreeMap<i32, Vec<String>> {
        let mut by_part: BTreeMap<i32, Vec<String>> = BTreeMap::new();
        for r in recs {
            let Some(key) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) else { continue };
            let Some(p) = key.strip_prefix(&format!("close/{hour}/")).and_then(|p| p.parse().ok()) else { continue };
            let v: Value = r.value.as_deref().and_then(|v| serde_json::from_slice(v).ok()).unwrap_or(Value::Null);
            by_part.entry(p).or_default().push(v["outcome"].as_str().unwrap_or("?").to_string());
        }
        by_part
    };
    let recs = env.read_until("pageviews.jobs", Duration::from_secs(60), |recs| {
        let o = outcomes(recs);
        (0..parts as i32).all(|p| o.get(&p).is_some_and(|v| v.iter().any(|x| x == "skipped")))
    });
    let o = outcomes(&recs);
    for p in 0..parts as i32 {
        assert_eq!(o[&p], ["final", "skipped"], "partition {p} closing {hour}: {o:?}");
    }

    // The next hour: nothing of the second copy shows up as late.
    ingest(&env, dir.path(), &next);
    let want = expected(&[&first, &next]);
    let tops = read_tops(&env, &want, Duration::from_secs(60));
    assert_tops(&tops, &want, Finals::One);
    assert_no_late(&tops, &want);
    let a = get(&pp, &format!("/api/v1/pageviews/hours/{hour}")).expect("an answer");
    assert_eq!(a.status, 200, "an ingested hour has a document: {}", String::from_utf8_lossy(&a.body));
}

/// A mirror serving `n` hours from `start` (seeds from `seed`), hour `slow` of them slowly: about
/// 10 s every time it is downloaded.
fn with_a_slow_hour(start: &str, n: i64, slow: usize, seed: u64) -> (Mirror, Vec<Dump>) {
    let mirror = Mirror::start();
    let dumps: Vec<Dump> = (0..n).map(|h| Dump::new(&hour_name(ms(start) + h * HOUR), seed + h as u64)).collect();
    for (i, d) in dumps.iter().enumerate() {
        let behaviour = if i == slow {
            Behaviour::Slow { chunk: d.gz.len() / 40 + 1, every: Duration::from_millis(250) }
        } else {
            Behaviour::Normal
        };
        mirror.put(&d.path(), d.gz.clone(), behaviour);
    }
    (mirror, dumps)
}

/// Waits until a third of `dump` went out of `mirror`; returns its path.
fn a_third_of(mirror: &Mirror, dump: &Dump) -> String {
    let path = dump.path();
    let size = mirror.size(&path);
    wait_for("a third of the slow hour downloaded", Duration::from_secs(90), || {
        (mirror.sent(&path) >= size / 3).then_some(())
    });
    path
}

#[test]
fn a_job_killed_mid_download_completes_exactly_after_a_restart() {
    let env = TestEnv::new();
    let slow = 2;
    let (mirror, dumps) = with_a_slow_hour("2024-07-01T00", 4, slow, 300);
    let mut pp = start(&env, &mirror);
    let id = submit(&pp, json!({"start": dumps[0].hour(), "end": dumps[3].hour()}), 4);

    // Killed when a third of the slow hour is out: mid-job, mid-hour.
    let slow_path = a_third_of(&mirror, &dumps[slow]);
    assert_eq!(mirror.completed(&slow_path), 0, "the slow hour was still downloading");
    pp.signal(libc::SIGKILL);
    pp.wait_exit(Duration::from_secs(10));

    let pp = start(&env, &mirror);
    let report = wait_job(&pp, &id, Duration::from_secs(150));
    assert_eq!(report["status"], "done", "{report}");
    assert_eq!(counts(&report), count_map(&[("done", 4)]), "{report}");
    let docs = hours_of(&report);
    for d in &dumps {
        // An interrupted try may or may not count: the number of tries is not checked.
        check_done(&docs[&d.hour()], d, &mirror, &id, None);
    }
    assert!(mirror.gets(&slow_path) >= 2, "the slow hour was downloaded again after the restart");
    assert!(mirror.completed(&slow_path) >= 1);

    // Exactly the computed counts: the partial first download counted neither alone nor twice.
    // (Repeats of the identical final value are allowed: output is at least once by default.)
    let all: Vec<&Dump> = dumps.iter().collect();
    let want = expected(&all);
    assert_tops(&read_tops(&env, &want, Duration::from_secs(60)), &want, Finals::Identical);
}

#[test]
fn the_cli_waits_for_a_job_and_exits_by_its_outcome() {
    let env = TestEnv::new();
    let mirror = Mirror::start();
    let dumps = [Dump::new("2024-09-15T10", 21), Dump::new("2024-09-15T11", 22)];
    for d in &dumps {
        mirror.put(&d.path(), d.gz.clone(), Behaviour::Normal);
    }
    let pp = start(&env, &mirror);

    let args =
        ["backfill", "pageviews", "--start", "2024-09-15T10", "--end", "2024-09-15T11", "--wait", "--timeout", "2m"];
    let (status, out, err) = run_cli(&env, &args, Duration::from_secs(150));
    assert_eq!(status.code(), Some(0), "a job whose hours all succeed: stdout:\n{out}\nstderr:\n{err}");
    let first = out.lines().next().unwrap_or_default();
    let id = first.strip_prefix("job ").map(str::trim).filter(|j| !j.is_empty());
    let id = id.unwrap_or_else(|| panic!("first line `job <id>`, got {first:?}; stdout:\n{out}")).to_string();
    for d in &dumps {
        assert!(out.contains(&d.hour()), "--wait prints the state changes of {}: {out}", d.hour());
    }
    let report = wait_job(&pp, &id, Duration::from_secs(30));
    assert_eq!(report["status"], "done", "{report}");
    assert_eq!(counts(&report), count_map(&[("done", 2)]), "{report}");
    let want = expected(&dumps.iter().collect::<Vec<_>>());
    assert_tops(&read_tops(&env, &want, Duration::from_secs(60)), &want, Finals::One);

    // One hour the mirror does not have (`--end` left out): the job fails, and so does the CLI.
    let gone = "2024-09-15T12";
    let (status, out, err) = run_cli(
        &env,
        &["backfill", "pageviews", "--start", gone, "--wait", "--timeout", "2m"],
        Duration::from_secs(150),
    );
    assert_eq!(status.code(), Some(1), "a failed job: stdout:\n{out}\nstderr:\n{err}");
    let id2 = out.lines().next().and_then(|l| l.strip_prefix("job ")).map(str::trim).unwrap_or_default().to_string();
    assert!(!id2.is_empty() && id2 != id, "a new job id: {out}");
    let report2 = wait_job(&pp, &id2, Duration::from_secs(30));
    assert_eq!(report2["status"], "failed", "{report2}");
    assert_eq!(counts(&report2), count_map(&[("failed", 1)]), "{report2}");
    let doc = &hours_of(&report2)[gone];
    assert_eq!(doc["try_count"], MAX_TRIES, "{doc}");
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("404")), "{doc}");
    assert_eq!(mirror.gets(&hour_path(ms(gone))), MAX_TRIES as usize);
}

#[test]
fn a_job_moves_to_another_instance_when_its_owner_dies() {
    let env = TestEnv::new();
    let slow = 1;
    let (mirror, dumps) = with_a_slow_hour("2024-08-01T00", 3, slow, 700);
    // Two instances of one group: the job runs on the one owning its `pageviews.reports` partition.
    let mut a = start(&env, &mirror);
    let mut b = start(&env, &mirror);
    wait_for("both instances hold partitions", Duration::from_secs(90), || {
        let held = |pp: &Pagepulse| pp.metric("pagepulse_assigned_partitions", "") > 0.0;
        (held(&a) && held(&b)).then_some(())
    });
    let id = submit(&a, json!({"start": dumps[0].hour(), "end": dumps[2].hour()}), 3);
    let slow_path = a_third_of(&mirror, &dumps[slow]);
    let running = |pp: &Pagepulse| pp.metric("pagepulse_backfill_jobs_running", "");
    let (ra, rb) = (running(&a), running(&b));
    assert_eq!(ra + rb, 1.0, "exactly one instance runs the job: {ra} and {rb}");
    let (owner, survivor) = if ra == 1.0 { (&mut a, &b) } else { (&mut b, &a) };
    owner.signal(libc::SIGKILL);
    owner.wait_exit(Duration::from_secs(10));

    // The survivor takes the partition over, restores the job from its changelog and ends it.
    let report = wait_job(survivor, &id, Duration::from_secs(180));
    assert_eq!(report["status"], "done", "{report}\n{}", log_tail(survivor));
    assert_eq!(counts(&report), count_map(&[("done", 3)]), "{report}");
    let docs = hours_of(&report);
    for d in &dumps {
        check_done(&docs[&d.hour()], d, &mirror, &id, None);
    }
    assert_eq!(running(survivor), 0.0, "the job ended on the survivor");
    assert!(
        support::strip_ansi(&survivor.log_text()).contains("backfill jobs restored: resuming"),
        "the survivor resumed the job from its partition's changelog:\n{}",
        log_tail(survivor)
    );
    assert!(mirror.gets(&slow_path) >= 2, "the slow hour was downloaded again by the survivor");
    let all: Vec<&Dump> = dumps.iter().collect();
    let want = expected(&all);
    assert_tops(&read_tops(&env, &want, Duration::from_secs(60)), &want, Finals::Identical);
}
