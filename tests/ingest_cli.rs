//! `pagepulse ingest` against the real broker: a gzip dump and a plain dump with malformed lines
//! arrive exactly once, with the agreed keys and JSON values (the expectation is computed here
//! from the file text, independently of pagepulse's parser); malformed lines are reported with
//! file and line number; blacklists and their `--remove` tombstones; clear, fast failures.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use pagepulse::ingest::generate::{write_hour, DumpSpec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use support::{wait_for, TestEnv};

/// 2026-11-23T10:00:00Z and 11:00, the hours of the two dumps.
const H10: i64 = 1_795_428_000_000;
const H11: i64 = H10 + 3_600_000;

fn admin(env: &TestEnv) -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", &env.brokers).create().expect("admin client")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// The pageviews topics under the env's prefix (4 and 1 partitions), created here until topics/
/// defines them; deleted again when dropped.
struct IngestTopics<'a>(&'a TestEnv);

impl<'a> IngestTopics<'a> {
    fn create(env: &'a TestEnv) -> Self {
        let (pv, bl) = (env.topic("pageviews"), env.topic("pageviews.blacklist"));
        let topics =
            [NewTopic::new(&pv, 4, TopicReplication::Fixed(1)), NewTopic::new(&bl, 1, TopicReplication::Fixed(1))];
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for r in runtime().block_on(admin(env).create_topics(&topics, &opts)).expect("create topics") {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => panic!("cannot create {t}: {e}"),
            }
        }
        for (topic, parts) in [(&pv, 4), (&bl, 1)] {
            wait_for(&format!("{topic} with {parts} partitions"), Duration::from_secs(20), || {
                (partitions(env, topic) == parts).then_some(())
            });
        }
        Self(env)
    }
}

impl Drop for IngestTopics<'_> {
    fn drop(&mut self) {
        let names = [self.0.topic("pageviews"), self.0.topic("pageviews.blacklist")];
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // Best effort: the topics live in the broker's memory; a failed delete only costs memory.
        let _ = runtime().block_on(admin(self.0).delete_topics(&refs, &AdminOptions::new()));
    }
}

fn consumer(env: &TestEnv) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("{}-check", env.group))
        .create()
        .expect("consumer")
}

fn partitions(env: &TestEnv, topic: &str) -> usize {
    consumer(env)
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map(|md| md.topics().first().map_or(0, |t| t.partitions().len()))
        .unwrap_or(0)
}

/// Key prefix of the end markers [`read_all`] appends (followed by a number per call).
const END: &str = "__end_of_test__";

/// Every record of logical topic `topic`, read to its end: an end marker is appended to each
/// partition and the records before the markers are returned. (Counting through watermarks does
/// not work on tansu 0.6: its high watermark is the last batch's base offset + 1, e.g. 5 for 8
/// records in two batches.) Records produced before this call are all before the markers, so a
/// duplicate anywhere shows up.
fn read_all(env: &TestEnv, topic: &str) -> Vec<support::Rec> {
    let full = env.topic(topic);
    let parts = partitions(env, &full);
    let marker = format!("{END}{}", rand::random::<u64>());
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &env.brokers).create().expect("producer");
    for p in 0..parts as i32 {
        producer.send(BaseRecord::<str, str>::to(&full).partition(p).key(&marker)).expect("queue the end marker");
    }
    producer.flush(Duration::from_secs(30)).expect("end markers acknowledged");
    let recs = env.read_until(topic, Duration::from_secs(60), |r| {
        r.iter().filter(|r| r.key.as_deref() == Some(marker.as_bytes())).count() >= parts
    });
    let theirs = |r: &support::Rec| !r.key.as_deref().is_some_and(|k| k.starts_with(END.as_bytes()));
    recs.into_iter().filter(theirs).collect()
}

fn run(env: &TestEnv, args: &[&str]) -> (Output, String) {
    let out = env.cli(args).output().expect("run pagepulse");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

/// The records a dump's text must become, computed from the text without pagepulse's parser:
/// (key, canonical JSON value) for every valid line.
fn expected_pageviews(text: &[u8], ts: i64) -> Vec<(String, String)> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = std::str::from_utf8(line).ok()?;
            let f: Vec<&str> = line.split(' ').collect();
            let views: u64 = f.get(2)?.parse().ok()?;
            (f.len() == 4 && !f[0].is_empty() && !f[1].is_empty() && views > 0).then(|| {
                (f[0].to_string(), json!({"domain": f[0], "title": f[1], "views": views, "ts": ts}).to_string())
            })
        })
        .collect()
}

fn as_text(b: &Option<Vec<u8>>) -> String {
    String::from_utf8(b.clone().expect("present")).expect("UTF-8")
}

/// A page view's value without its `batch` (checked on its own by [`file_batches`]).
fn canonical(value: &[u8]) -> String {
    let mut v = serde_json::from_slice::<Value>(value).expect("the value is JSON");
    v.as_object_mut().expect("an object").remove("batch");
    v.to_string()
}

/// Checks the file-ingestion protocol of `recs` (every record of `pageviews`, partition order
/// kept) and returns the page views: every partition has, for each hour, a `begin` control record
/// before the hour's views and an `end` after them, with one batch per hour that every view of
/// the hour carries.
fn file_batches(recs: Vec<support::Rec>, partitions: usize) -> Vec<support::Rec> {
    let mut batch_of_hour: std::collections::HashMap<i64, String> = std::collections::HashMap::new();
    let mut views = Vec::new();
    for p in 0..partitions as i32 {
        let mut open: Option<(i64, String)> = None;
        let mut ended = Vec::new();
        for r in recs.iter().filter(|r| r.partition == p) {
            let v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
            if r.key.as_deref() == Some(b"!file") {
                let (hour, batch) =
                    (v["hour"].as_i64().expect("hour"), v["batch"].as_str().expect("batch").to_string());
                assert_eq!(batch_of_hour.entry(hour).or_insert_with(|| batch.clone()), &batch, "one batch per hour");
                match v["control"].as_str() {
                    Some("begin") => {
                        assert!(open.is_none(), "partition {p}: a begin inside another hour");
                        open = Some((hour, batch));
                    }
                    Some("end") => {
                        assert_eq!(open.take(), Some((hour, batch)), "partition {p}: an end without its begin");
                        ended.push(hour);
                    }
                    other => panic!("partition {p}: unexpected control {other:?}"),
                }
                continue;
            }
            let (hour, batch) = open.as_ref().unwrap_or_else(|| panic!("partition {p}: a view outside begin/end"));
            assert_eq!((v["ts"].as_i64(), v["batch"].as_str()), (Some(*hour), Some(batch.as_str())), "partition {p}");
            views.push(r.clone());
        }
        assert!(open.is_none(), "partition {p}: an hour never ended");
        assert_eq!(ended.len(), batch_of_hour.len(), "partition {p}: every hour begins and ends");
    }
    views
}

const PLAIN: &[u8] = b"en Main_Page 1200 0\n\
en Broken_line 5\n\
de.m Z\xc3\xbcrich 17 0\n\
en Bad_views abc 0\n\
en Zero_views 0 0\n\
en Bad_\xff_utf8 3 0\n\
en  4 0\n\
ja \xe6\x9d\xb1\xe4\xba\xac 99 0\n\
en \"Quoted\"_\\back\\slash 2 0\n\
en Main_Page 1 0\n";

fn gzip_file(path: &Path, text: &[u8]) {
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).expect("create"), Default::default());
    gz.write_all(text).expect("compress");
    gz.finish().expect("finish gzip");
}

#[test]
fn pageview_dumps_arrive_exactly_once_and_malformed_lines_are_reported() {
    let env = TestEnv::new();
    let _topics = IngestTopics::create(&env);
    let dir = tempfile::tempdir().expect("tempdir");

    let mut generated = Vec::new();
    write_hour(&DumpSpec { lines: 3000, domains: 5, seed: 7 }, 0, &mut generated).expect("generate");
    // Named as Wikimedia names them, by the end of the hour: these are 10:00-11:00 and 11:00-12:00.
    let gz = dir.path().join("pageviews-20261123-110000.gz");
    gzip_file(&gz, &generated);
    // Plain text, no extension; the last line repeats a (domain, title): both are produced.
    let plain = dir.path().join("pageviews-20261123-120000");
    std::fs::write(&plain, PLAIN).expect("write plain dump");

    let (out, err) = run(&env, &["ingest", "pageviews", gz.to_str().expect("path"), plain.to_str().expect("path")]);
    assert!(out.status.success(), "ingest failed:\n{err}");

    let mut expected = expected_pageviews(&generated, H10);
    let plain_expected = expected_pageviews(PLAIN, H11);
    assert_eq!((expected.len(), plain_expected.len()), (3000, 5), "the test's own expectation");
    expected.extend(plain_expected);
    let lines = 3000 + PLAIN.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
    let summary = format!(
        "2 files, {lines} lines read, {} records produced to {}, 5 malformed, {} control records",
        expected.len(),
        env.topic("pageviews"),
        2 * 2 * partitions(&env, &env.topic("pageviews")),
    );
    assert!(err.contains(&summary), "summary {summary:?} not in:\n{err}");
    let p = plain.display();
    for report in [
        format!("{p}:2: malformed line: expected 4 space-separated fields, found 3"),
        format!("{p}:4: malformed line: views is not a positive integer: \"abc\""),
        format!("{p}:5: malformed line: views is 0"),
        format!("{p}:6: malformed line: invalid UTF-8"),
        format!("{p}:7: malformed line: empty title"),
    ] {
        assert!(err.contains(&report), "{report:?} not in:\n{err}");
    }

    // Everything is acknowledged once the command exits: the topic holds exactly these records,
    // each hour between its begin and end in every partition.
    let recs = file_batches(read_all(&env, "pageviews"), partitions(&env, &env.topic("pageviews")));
    let mut got: Vec<(String, String)> =
        recs.iter().map(|r| (as_text(&r.key), canonical(r.value.as_deref().expect("a value")))).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    // The domain is the key, so a domain's records share a partition.
    for domain in ["en", "de"] {
        let mut parts: Vec<i32> = recs.iter().filter(|r| as_text(&r.key) == domain).map(|r| r.partition).collect();
        parts.dedup();
        assert_eq!(parts.len(), 1, "{domain} spread over partitions {parts:?}");
    }
}

#[test]
fn hour_option_and_bad_inputs() {
    let env = TestEnv::new();
    let _topics = IngestTopics::create(&env);
    let dir = tempfile::tempdir().expect("tempdir");
    let unnamed = dir.path().join("dump.txt");
    std::fs::write(&unnamed, "en A 1 0\nen B 2 0\n").expect("write");
    let unnamed = unnamed.to_str().expect("path");

    // No hour in the name and no --hour: refused, naming the file, before producing anything.
    let (out, err) = run(&env, &["ingest", "pageviews", unnamed]);
    assert!(!out.status.success());
    assert!(err.contains(unnamed) && err.contains("--hour"), "{err}");
    let missing = dir.path().join("pageviews-20261123-100000.gz");
    let (out, err) = run(&env, &["ingest", "pageviews", missing.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(err.contains("pageviews-20261123-100000.gz"), "{err}");
    let (out, err) = run(&env, &["ingest", "pageviews", "--hour", "2026-11-23 10", unnamed]);
    assert!(!out.status.success());
    assert!(err.contains("YYYY-MM-DDTHH"), "{err}");
    assert!(read_all(&env, "pageviews").is_empty());

    let (out, err) = run(&env, &["ingest", "pageviews", "--quiet", "--hour", "2026-11-23T11", unnamed]);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("1 files, 2 lines read, 2 records produced"), "{err}");
    let recs = file_batches(read_all(&env, "pageviews"), partitions(&env, &env.topic("pageviews")));
    assert_eq!(recs.len(), 2);
    let mut ts: Vec<i64> = recs
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(r.value.as_deref().expect("value")).expect("JSON")["ts"]
                .as_i64()
                .expect("ts")
        })
        .collect();
    ts.dedup();
    assert_eq!(ts, [H11]);
}

#[test]
fn blacklist_entries_and_their_removal() {
    let env = TestEnv::new();
    let _topics = IngestTopics::create(&env);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("blacklist.txt");
    std::fs::write(
        &file,
        "# search and spam pages\n\nen Special:Search\nde.m\tSpezial:Suche\nen \"Odd\"_title\nonly-a-domain\nen -\n",
    )
    .expect("write");
    let path = file.to_str().expect("path");
    let entries = [("en", "Special:Search"), ("de.m", "Spezial:Suche"), ("en", "\"Odd\"_title"), ("en", "-")];

    let (out, err) = run(&env, &["ingest", "blacklist", path]);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 files, 7 lines read, 4 records produced") && err.contains("1 malformed, 2 skipped"),
        "{err}"
    );
    assert!(err.contains(&format!("{path}:6: malformed line: expected 2 space-separated fields, found 1")), "{err}");
    let recs = read_all(&env, "pageviews.blacklist");
    let got: Vec<(String, Value)> = recs
        .iter()
        .map(|r| (as_text(&r.key), serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON")))
        .collect();
    let want: Vec<(String, Value)> =
        entries.iter().map(|(d, t)| (format!("{d} {t}"), json!({"domain": d, "title": t}))).collect();
    assert_eq!(got, want, "one partition: in file order");

    let (out, err) = run(&env, &["ingest", "blacklist", "--remove", path]);
    assert!(out.status.success(), "{err}");
    // Both runs, without the first read's end marker: entries, then tombstones, exactly once.
    let recs = read_all(&env, "pageviews.blacklist");
    assert_eq!(recs.len(), 8);
    let tombstones: Vec<(String, Option<Vec<u8>>)> =
        recs[4..].iter().map(|r| (as_text(&r.key), r.value.clone())).collect();
    let want: Vec<(String, Option<Vec<u8>>)> = entries.iter().map(|(d, t)| (format!("{d} {t}"), None)).collect();
    assert_eq!(tombstones, want);
}

#[test]
fn unreachable_broker_and_missing_topic_fail_fast_and_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pageviews-20261123-100000");
    std::fs::write(&file, "en A 1 0\n").expect("write");
    let file = file.to_str().expect("path");

    let port = support::free_port();
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pagepulse"))
        .args(["ingest", "pageviews", file])
        .env("PAGEPULSE_BROKERS", format!("127.0.0.1:{port}"))
        .env("PAGEPULSE__kafka__connect_timeout", "\"2s\"")
        .output()
        .expect("run pagepulse");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach Kafka at 127.0.0.1:"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());

    // A prefix under which no topic exists: the missing topic is named.
    let prefix = format!("missing{:08x}.", rand::random::<u32>());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pagepulse"))
        .args(["ingest", "blacklist", file])
        .env("PAGEPULSE_BROKERS", support::brokers())
        .env("PAGEPULSE_TOPIC_PREFIX", &prefix)
        .output()
        .expect("run pagepulse");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("topic {prefix}pageviews.blacklist does not exist")), "{err}");
}

/// The real data set next to the repository (`../shared/data/AppleStore.csv`), if present.
fn apple_store_csv() -> Option<std::path::PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/AppleStore.csv");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: {} is absent (the Kaggle data set is not shipped with pagepulse)", p.display());
        None
    }
}

/// Python's csv module reads a catalogue file independently of pagepulse: `expect` prints, per
/// app, the typed JSON value its record must hold; `plain` writes the 16-column form other copies
/// publish (no index column, numbers as decimals: `0.0`, `4.0`).
const CATALOGUE_PY: &str = r#"
import csv, json, sys
INTS = {"size_bytes", "rating_count_tot", "rating_count_ver", "sup_devices.num", "ipadSc_urls.num", "lang.num", "vpp_lic"}
FLOATS = {"price", "user_rating", "user_rating_ver"}
mode, path = sys.argv[1], sys.argv[2]
with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
header, rows = rows[0], rows[1:]
named = [i for i, h in enumerate(header) if h != ""]
if mode == "expect":
    for r in rows:
        v = {}
        for i in named:
            h, x = header[i], r[i]
            v[h] = int(float(x)) if h in INTS else float(x) if h in FLOATS else x
        print(json.dumps(v))
else:
    w = csv.writer(open(sys.argv[3], "w", newline="", encoding="utf-8"))
    w.writerow([header[i] for i in named])
    for r in rows:
        w.writerow([repr(float(r[i])) if header[i] in FLOATS else r[i] for i in named])
"#;

fn python(args: &[&str]) -> String {
    let out = std::process::Command::new("python3").arg("-c").arg(CATALOGUE_PY).args(args).output().expect("python3");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// (key, value) of every `apps` record.
fn catalogue_records(env: &TestEnv) -> Vec<(String, Option<Value>)> {
    read_all(env, "apps")
        .iter()
        .map(|r| (as_text(&r.key), r.value.as_deref().map(|v| serde_json::from_slice(v).expect("JSON"))))
        .collect()
}

#[test]
fn the_real_app_catalogue_in_both_published_forms_becomes_typed_records() {
    let Some(csv) = apple_store_csv() else { return };
    let csv = csv.to_str().expect("path");
    let expected: Vec<(String, Option<Value>)> = python(&["expect", csv])
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON");
            (v["id"].as_str().expect("id").to_string(), Some(v))
        })
        .collect();
    assert_eq!(expected.len(), 7197);

    // The original, 17 columns with the unnamed index column.
    let env = TestEnv::new();
    let (out, err) = run(&env, &["ingest", "apps", csv]);
    assert!(out.status.success(), "ingest failed:\n{err}");
    let summary = format!("1 files, 7198 lines read, 7197 records produced to {}, 0 malformed", env.topic("apps"));
    assert!(err.contains(&summary), "summary {summary:?} not in:\n{err}");
    let got = catalogue_records(&env);
    assert_eq!(got, expected, "one partition: every app once, in file order, typed");
    let pandora = &got.iter().find(|(k, _)| k == "284035177").expect("Pandora").1;
    let pandora = pandora.as_ref().expect("a value");
    assert_eq!(pandora["track_name"], "Pandora - Music & Radio");
    assert!(pandora["rating_count_tot"].is_u64() && pandora["price"].is_f64() && pandora["ver"].is_string());

    // The 16-column form with decimals for every number.
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("apps16.csv");
    python(&["plain", csv, plain.to_str().expect("path")]);
    let first = std::fs::read_to_string(&plain).expect("written");
    assert!(first.starts_with("id,track_name,") && first.contains(",0.0,"), "the other form: {:.200}", first);
    let env16 = TestEnv::new();
    let (out, err) = run(&env16, &["ingest", "apps", "--quiet", plain.to_str().expect("path")]);
    assert!(out.status.success() && err.contains("7197 records produced"), "{err}");
    assert_eq!(catalogue_records(&env16), expected, "both forms give the same records");
}

#[test]
fn malformed_catalogue_rows_are_reported_and_counted_and_removal_writes_tombstones() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let header = pagepulse::ingest::apps_generate::HEADER;
    let good = |i: u32, name: &str| {
        format!(r#""{i}","{}","{name}",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,1"#, 1000 + i)
    };
    let mut lines = vec![header.to_string(), good(1, "Quoted, with a comma")];
    // Fifteen bad rows, each a different way of being wrong (lines 3 to 17).
    for (i, bad) in [
        r#""2","1002","Short",100"#,
        r#""3","1003","Bad ratings",100,"USD",0,many,1,4.5,4,"1.0","4+","Music",37,5,1,1"#,
        r#""4","1004","Bad price",100,"USD",-1,10,1,4.5,4,"1.0","4+","Music",37,5,1,1"#,
        r#""5","1005","Too many stars",100,"USD",0,10,1,7,4,"1.0","4+","Music",37,5,1,1"#,
        r#""6","","No id",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,1"#,
        r#""7","1007","",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,1"#,
        r#""8","1008","Junk"x,100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,1"#,
        r#""9","1009","Half ratings",100,"USD",0,10.5,1,4.5,4,"1.0","4+","Music",37,5,1,1"#,
        r#""10","1010","No genre",100,"USD",0,10,1,4.5,4,"1.0","4+","",37,5,1,1"#,
        r#""11","1011","Bad size",1e9,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,1"#,
        r#""12","1012","Extra",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,1,9"#,
        r#""13","1013","Bad langs",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,x,1"#,
        r#""14","1014","Bad vpp",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,yes"#,
        r#""15","1015","Bad devices",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",-3,5,1,1"#,
        r#""16","1016","Bad rating ver",100,"USD",0,10,1,4.5,NaN,"1.0","4+","Music",37,5,1,1"#,
    ]
    .iter()
    .enumerate()
    {
        assert!(i < 15);
        lines.push(bad.to_string());
    }
    // A quoted field with a line break (lines 18-19), then a good row and one never closed.
    lines.push(r#""17","1017","Two"#.to_string());
    lines.push(r#"lines",100,"USD",0,10,1,4.5,4,"1.0","4+","Music",37,5,1,1"#.to_string());
    lines.push(good(18, "Last good"));
    lines.push(r#""19","1019","Never closed,100"#.to_string());
    let file = dir.path().join("apps.csv");
    std::fs::write(&file, lines.join("\r\n") + "\r\n").expect("write");
    let path = file.to_str().expect("path");

    let (out, err) = run(&env, &["ingest", "apps", path]);
    assert!(out.status.success(), "malformed rows never stop a load:\n{err}");
    assert!(err.contains("1 files, 21 lines read, 3 records produced") && err.contains("16 malformed"), "{err}");
    for report in [
        format!("{path}:3: malformed row: expected 17 fields, found 4"),
        format!("{path}:4: malformed row: field `rating_count_tot`: \"many\" is not a non-negative integer"),
        format!("{path}:5: malformed row: field `price`: \"-1\" is not a non-negative number"),
        format!("{path}:6: malformed row: field `user_rating`: \"7\" is out of range (0 to 5)"),
        format!("{path}:7: malformed row: field `id`: is empty"),
        format!("{path}:8: malformed row: field `track_name`: is empty"),
        format!("{path}:9: malformed row: a closing quote is followed by something other than a comma"),
        format!("{path}:10: malformed row: field `rating_count_tot`: \"10.5\" is not a non-negative integer"),
        format!("{path}:11: malformed row: field `prime_genre`: is empty"),
        format!("{path}:12: malformed row: field `size_bytes`: \"1e9\" is not a non-negative integer"),
    ] {
        assert!(err.contains(&report), "{report:?} not in:\n{err}");
    }
    assert!(err.contains("(further malformed rows are counted, not shown)"), "{err}");
    assert!(!err.contains(&format!("{path}:13:")), "only the first 10 are shown:\n{err}");
    let got = catalogue_records(&env);
    let ids: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(ids, ["1001", "1017", "1018"]);
    assert_eq!(got[0].1.as_ref().expect("value")["track_name"], "Quoted, with a comma");
    assert_eq!(got[1].1.as_ref().expect("value")["track_name"], "Two\r\nlines", "a quoted line break is kept");

    let (out, err) = run(&env, &["ingest", "apps", "--remove", "--quiet", path]);
    assert!(out.status.success(), "{err}");
    let got = catalogue_records(&env);
    assert_eq!(got.len(), 6);
    assert!(got[3..].iter().all(|(_, v)| v.is_none()), "tombstones: {got:?}");
    assert_eq!(got[3..].iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["1001", "1017", "1018"]);

    // A file that is not a catalogue stops before producing anything, naming the problem.
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "name,price\nx,1\n").expect("write");
    let (out, err) = run(&env, &["ingest", "apps", other.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(err.contains("unknown column `name`") && err.contains("not an App Store catalogue"), "{err}");
}
