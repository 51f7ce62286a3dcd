//! The topic definitions in `topics/` are the single source of truth: every example record must
//! match its JSON Schema *and* the decoder the pipeline really uses, real pipeline outputs must
//! match the output schemas, and the README's topic reference must be the generated one.

use std::sync::Arc;

use pagepulse::clock::ManualClock;
use pagepulse::config::Config;
use pagepulse::engine::{Aggregate, Emit, Processor, RawRecord, RecordMeta};
use pagepulse::kafka::topics::{self, TopicDef};
use pagepulse::metrics::Metrics;
use pagepulse::pipelines::fans::{self, FansProcessor, FansTop, FansTopView, PageStats};
use pagepulse::pipelines::pages;
use pagepulse::pipelines::pageviews;
use pagepulse::pipelines::posts::{self, Analysis, HashtagTrending, PostsProcessor, Trending};
use serde_json::Value;

fn validator(def: &TopicDef) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(&def.value_schema)
        .unwrap_or_else(|e| panic!("schema of {} does not compile: {e}", def.name))
}

fn def(name: &str) -> &'static TopicDef {
    topics::get(name).unwrap_or_else(|| panic!("topic {name} is defined in topics/"))
}

fn raw(value: &Value) -> RawRecord {
    let bytes = match value {
        Value::String(s) => s.clone().into_bytes(),
        v => v.to_string().into_bytes(),
    };
    RawRecord { key: None, value: Some(bytes), offset: 0, timestamp_ms: Some(1_795_428_000_000) }
}

#[test]
fn every_topic_has_a_valid_definition_and_examples() {
    let all = topics::all();
    assert!(all.len() >= 4);
    for d in all {
        assert!(d.partitions >= 1, "{}: partitions", d.name);
        assert!(d.examples.len() >= 2, "{}: at least two examples", d.name);
        assert!(["input", "output", "internal"].contains(&d.role.as_str()), "{}: role", d.name);
        let policy = d.config.get("cleanup.policy").unwrap_or_else(|| panic!("{}: cleanup.policy", d.name));
        assert!(["delete", "compact", "compact,delete"].contains(&policy.as_str()));
        assert!(d.config.contains_key("retention.ms"), "{}: retention.ms", d.name);
        let v = validator(d);
        for (i, ex) in d.examples.iter().enumerate() {
            let errors: Vec<String> = v.iter_errors(&ex.value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{} example {i} violates its schema: {errors:?}", d.name);
        }
    }
}

#[test]
fn every_topic_the_pipelines_use_is_defined() {
    for t in [
        posts::INPUT,
        posts::ANALYSIS,
        posts::TRENDING,
        fans::INPUT,
        fans::STATS,
        fans::TOP,
        pages::INPUT,
        pageviews::INPUT,
        pageviews::BLACKLIST,
        pageviews::TOP,
        pageviews::TRENDING,
        pagepulse::pipelines::apps::CATALOGUE,
        pagepulse::pipelines::apps::TOP,
        pagepulse::pipelines::apps::MENTIONS,
        pagepulse::engine::deadletter::TOPIC,
    ] {
        def(t);
    }
    let cfg = Config::default();
    for t in pagepulse::app::required_topics(&cfg) {
        def(t);
    }
}

#[test]
fn input_examples_match_the_real_decoder() {
    let d = def(posts::INPUT);
    let cfg = Config::default();
    let p = PostsProcessor::new(&cfg.posts, Arc::new(ManualClock::at_ms(0)));
    let v = validator(d);
    for ex in &d.examples {
        let rec = raw(&ex.value);
        p.decode(posts::INPUT, &rec).unwrap_or_else(|e| panic!("example {} refused by the decoder: {e}", ex.value));
    }
    assert!(d.invalid_examples.len() >= 5);
    for bad in &d.invalid_examples {
        let rec = RawRecord { key: None, value: Some(bad.value.clone().into_bytes()), offset: 0, timestamp_ms: None };
        let why = p
            .decode(posts::INPUT, &rec)
            .err()
            .unwrap_or_else(|| panic!("decoder accepted invalid example {}", bad.value));
        assert_eq!(why.class.as_str(), bad.reason, "reason for {}", bad.value);
        // The schema refuses the same records (when they are JSON at all).
        if let Ok(json) = serde_json::from_str::<Value>(&bad.value) {
            assert!(!v.is_valid(&json), "schema accepts invalid example {}", bad.value);
        }
    }
}

#[test]
fn pages_examples_match_the_real_decoder() {
    let d = def(pages::INPUT);
    let v = validator(d);
    let platforms = ["facebook", "mastodon"];
    for ex in &d.examples {
        let value = (!ex.value.is_null()).then(|| ex.value.to_string().into_bytes());
        let rec = RawRecord { key: ex.key.clone().map(String::into_bytes), value, offset: 0, timestamp_ms: None };
        pages::decode_page(&rec, &platforms).unwrap_or_else(|e| panic!("example {} refused: {e}", ex.value));
    }
    assert!(d.invalid_examples.len() >= 5);
    for bad in &d.invalid_examples {
        let key = bad.key.clone().unwrap_or_else(|| "facebook:nasa".into());
        let rec = RawRecord {
            key: Some(key.into_bytes()),
            value: Some(bad.value.clone().into_bytes()),
            offset: 0,
            timestamp_ms: None,
        };
        let why = pages::decode_page(&rec, &platforms)
            .err()
            .unwrap_or_else(|| panic!("decoder accepted invalid example {}", bad.value));
        assert_eq!(why.class.as_str(), bad.reason, "reason for {}", bad.value);
        // The schema cannot see keys or the enabled platforms; it refuses the rest.
        let schema_visible =
            ["wrong_type", "invalid_json"].contains(&bad.reason.as_str()) || bad.value.contains("interval_s");
        if let (true, Ok(json)) = (schema_visible, serde_json::from_str::<Value>(&bad.value)) {
            assert!(!v.is_valid(&json), "schema accepts invalid example {}", bad.value);
        }
    }
}

#[test]
fn pageviews_examples_match_the_real_decoders_and_outputs_match_their_schemas() {
    for (topic, decode) in [
        (pageviews::INPUT, (|r: &RawRecord| pageviews::decode_input(r).map(|_| ())) as fn(&RawRecord) -> _),
        (pageviews::BLACKLIST, |r: &RawRecord| pageviews::decode_blacklist(r).map(|_| ())),
    ] {
        let d = def(topic);
        let v = validator(d);
        for ex in &d.examples {
            let value = (!ex.value.is_null()).then(|| ex.value.to_string().into_bytes());
            let rec = RawRecord { key: ex.key.clone().map(String::into_bytes), value, offset: 0, timestamp_ms: None };
            decode(&rec).unwrap_or_else(|e| panic!("{topic} example {} refused: {e}", ex.value));
        }
        assert!(d.invalid_examples.len() >= 5, "{topic}");
        for bad in &d.invalid_examples {
            let key = bad.key.clone().unwrap_or_else(|| "en".into());
            let rec = RawRecord {
                key: Some(key.into_bytes()),
                value: Some(bad.value.clone().into_bytes()),
                offset: 0,
                timestamp_ms: None,
            };
            let why = decode(&rec).err().unwrap_or_else(|| panic!("{topic}: decoder accepted {}", bad.value));
            assert_eq!(why.class.as_str(), bad.reason, "{topic}: reason for {}", bad.value);
            let key_related = bad.value.contains("\"de\"") || bad.value.contains("Other");
            if let (false, Ok(json)) = (key_related, serde_json::from_str::<Value>(&bad.value)) {
                let format_only = bad.value.contains("yesterday") || bad.value.contains("\"\"");
                if !format_only {
                    assert!(!v.is_valid(&json), "{topic}: schema accepts invalid example {}", bad.value);
                }
            }
        }
    }
    // Real outputs against their schemas.
    let cfg = Config::default();
    let bl = pageviews::Blacklist::new();
    let m = pagepulse::metrics::Metrics::new();
    let activity = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut p = pageviews::PageviewsProcessor::new(&cfg.pageviews, bl, activity, &m, Arc::new(ManualClock::at_ms(0)));
    let mut out = pagepulse::engine::Emit::default();
    // The file-ingestion examples (a batch's view, then its end) are preceded by the batch's
    // begin, as an ingestion writes them: the end makes that hour final and acknowledges it.
    let examples = &def(pageviews::INPUT).examples;
    let batch = examples.iter().find_map(|ex| ex.value.get("batch")).expect("a batch example").clone();
    let hour = examples.iter().find_map(|ex| ex.value.get("hour")).expect("a control example").clone();
    let begin = serde_json::json!({"control": "begin", "hour": hour, "batch": batch});
    let inputs = std::iter::once((Some("!file".to_string()), begin))
        .chain(examples.iter().map(|ex| (ex.key.clone(), ex.value.clone())));
    for (i, (key, value)) in inputs.enumerate() {
        let rec = RawRecord {
            key: key.map(String::into_bytes),
            value: Some(value.to_string().into_bytes()),
            offset: i as i64,
            timestamp_ms: None,
        };
        let view = p.decode(pageviews::INPUT, &rec).expect("valid example");
        let meta = RecordMeta { topic: pageviews::INPUT, partition: 0, offset: i as i64, timestamp_ms: None };
        p.process(view, &meta, &mut out);
    }
    p.emit_trending(&mut out);
    p.close_idle(&mut out);
    let (vt, vr, vj) =
        (validator(def(pageviews::TOP)), validator(def(pageviews::TRENDING)), validator(def(pageviews::JOBS)));
    let (mut tops, mut trends, mut acks) = (0, 0, 0);
    for r in &out.records {
        let json: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        let (v, n) = match r.topic {
            t if t == pageviews::TOP => (&vt, &mut tops),
            t if t == pageviews::JOBS => (&vj, &mut acks),
            _ => (&vr, &mut trends),
        };
        *n += 1;
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "real {} {json} violates its schema: {errors:?}", r.topic);
    }
    assert_eq!(
        (tops, trends, acks),
        (3, 2, 1),
        "one window per example domain and the file's hour, one trending view per live domain, one close"
    );
    for ex in &def(pageviews::TOP).examples {
        let _: pageviews::HourTop = serde_json::from_value(ex.value.clone()).expect("example decodes as HourTop");
    }
    for ex in &def(pageviews::TRENDING).examples {
        let _: pageviews::DomainTrending = serde_json::from_value(ex.value.clone()).expect("decodes");
    }
}

#[test]
fn fans_examples_match_the_real_decoder_and_outputs_match_their_schemas() {
    let cfg = Config::default();
    let d = def(fans::INPUT);
    let mut p = FansProcessor::new(0, &cfg.fans);
    let mut out = Emit::default();
    for (i, ex) in d.examples.iter().enumerate() {
        let rec = raw(&ex.value);
        let obs = p.decode(fans::INPUT, &rec).unwrap_or_else(|e| panic!("example {} refused: {e}", ex.value));
        let meta = RecordMeta { topic: fans::INPUT, partition: 0, offset: i as i64, timestamp_ms: None };
        p.process(obs, &meta, &mut out);
    }
    for bad in &d.invalid_examples {
        let rec = RawRecord { key: None, value: Some(bad.value.clone().into_bytes()), offset: 0, timestamp_ms: None };
        let why = p.decode(fans::INPUT, &rec).err().unwrap_or_else(|| panic!("decoder accepted {}", bad.value));
        assert_eq!(why.class.as_str(), bad.reason, "reason for {}", bad.value);
        if let Ok(json) = serde_json::from_str::<Value>(&bad.value) {
            assert!(!validator(d).is_valid(&json), "schema accepts invalid example {}", bad.value);
        }
    }
    let vs = validator(def(fans::STATS));
    assert_eq!(out.records.len(), d.examples.len());
    for r in &out.records {
        let v: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        let errors: Vec<String> = vs.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "real fans.stats {v} violates the schema: {errors:?}");
    }
    for ex in &def(fans::STATS).examples {
        let _: PageStats = serde_json::from_value(ex.value.clone()).expect("example decodes as PageStats");
    }
    let mut view = FansTopView::new(cfg.fans.top_n);
    let mut parts = vec![p.top(0)];
    view.merge(&mut parts);
    let mut top = Vec::new();
    view.on_tick(chrono::Utc::now(), &mut top);
    let v: Value = serde_json::from_slice(top[0].value.as_deref().expect("value")).expect("JSON");
    assert!(validator(def(fans::TOP)).is_valid(&v), "real fans.top {v} violates the schema");
    for ex in &def(fans::TOP).examples {
        let _: FansTop = serde_json::from_value(ex.value.clone()).expect("example decodes as FansTop");
    }
}

/// Runs the posts examples through the real processor and aggregate.
fn real_outputs() -> (Vec<Value>, Vec<Value>) {
    let cfg = Config::default();
    let mut p = PostsProcessor::new(&cfg.posts, Arc::new(ManualClock::at_ms(1_795_428_100_000)));
    let mut trending = HashtagTrending::new(&cfg.posts, Metrics::new());
    let mut out = Emit::default();
    for (i, ex) in def(posts::INPUT).examples.iter().enumerate() {
        let rec = raw(&ex.value);
        let post = p.decode(posts::INPUT, &rec).expect("valid example");
        let meta = RecordMeta { topic: posts::INPUT, partition: 0, offset: i as i64, timestamp_ms: rec.timestamp_ms };
        p.process(post, &meta, &mut out);
    }
    trending.merge(&mut out.parts);
    let mut tr = Vec::new();
    trending.on_tick(chrono::Utc::now(), &mut tr);
    let parse =
        |b: &Option<Vec<u8>>| serde_json::from_slice::<Value>(b.as_deref().expect("value")).expect("JSON output");
    (out.records.iter().map(|r| parse(&r.value)).collect(), tr.iter().map(|r| parse(&r.value)).collect())
}

#[test]
fn real_outputs_match_the_output_schemas() {
    let (analyses, trending) = real_outputs();
    assert_eq!(analyses.len(), def(posts::INPUT).examples.len());
    assert_eq!(trending.len(), 1);
    let va = validator(def(posts::ANALYSIS));
    for a in &analyses {
        let errors: Vec<String> = va.iter_errors(a).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "real analysis {a} violates the schema: {errors:?}");
    }
    let vt = validator(def(posts::TRENDING));
    assert!(vt.is_valid(&trending[0]), "real trending {} violates the schema", trending[0]);
}

#[test]
fn output_examples_are_what_the_pipeline_really_writes() {
    let (analyses, _) = real_outputs();
    for ex in &def(posts::ANALYSIS).examples {
        let documented: Analysis<'static> =
            serde_json::from_value(ex.value.clone()).expect("example decodes as Analysis");
        let real = analyses
            .iter()
            .find(|a| a["id"] == documented.id.as_ref())
            .unwrap_or_else(|| panic!("no posts example with id {}", documented.id));
        let real: Analysis<'static> = serde_json::from_value(real.clone()).expect("real analysis decodes");
        assert_eq!(
            (real.word_count, real.avg_word_length, &real.hashtags, &real.mentions),
            (documented.word_count, documented.avg_word_length, &documented.hashtags, &documented.mentions),
            "documented analysis of post {} differs from the real one",
            documented.id
        );
    }
    for ex in &def(posts::TRENDING).examples {
        let _: Trending = serde_json::from_value(ex.value.clone()).expect("example decodes as Trending");
    }
}

#[test]
fn readme_topic_reference_is_generated_from_the_definitions() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let generated = topics::markdown();
    assert!(
        readme.contains(&generated),
        "README's topic reference is stale: paste the output of `pagepulse topics docs` between the markers"
    );
}

#[test]
fn apps_examples_match_the_real_decoder_and_outputs_match_their_schemas() {
    use pagepulse::pipelines::apps::{
        self, decode_app, App, AppsAggregate, Catalogue, CatalogueChange, MentionPart, MentionsValue, TopValue,
    };
    let d = def(apps::CATALOGUE);
    let v = validator(d);
    let catalogue = Catalogue::new(100, Arc::new(std::sync::atomic::AtomicBool::new(true)));
    for ex in &d.examples {
        let value = (!ex.value.is_null()).then(|| ex.value.to_string().into_bytes());
        let rec = RawRecord { key: ex.key.clone().map(String::into_bytes), value, offset: 0, timestamp_ms: None };
        match decode_app(&rec).unwrap_or_else(|e| panic!("apps example {} refused: {e}", ex.value)) {
            CatalogueChange::Upsert(app) => catalogue.upsert(app).expect("room"),
            CatalogueChange::Remove(_) => {}
        }
    }
    assert!(d.invalid_examples.len() >= 5);
    for bad in &d.invalid_examples {
        let rec = RawRecord {
            key: bad.key.clone().map(String::into_bytes),
            value: Some(bad.value.clone().into_bytes()),
            offset: 0,
            timestamp_ms: None,
        };
        let why = decode_app(&rec).err().unwrap_or_else(|| panic!("apps: decoder accepted {}", bad.value));
        assert_eq!(why.class.as_str(), bad.reason, "apps: reason for {}", bad.value);
        // The schema cannot see the key; it refuses the rest.
        if let (false, Ok(json)) = (
            bad.value.contains("\"id\": \"1\"") && bad.key.as_deref() == Some("2"),
            serde_json::from_str::<Value>(&bad.value),
        ) {
            assert!(!v.is_valid(&json), "apps: schema accepts invalid example {}", bad.value);
        }
    }
    // Real outputs, from the examples' catalogue plus a Kindle, against the output schemas.
    catalogue
        .upsert(App {
            id: "302584613".into(),
            track_name: "Kindle – Read eBooks, Magazines & Textbooks".into(),
            name: "Kindle".into(),
            prime_genre: "Book".into(),
            rating_count_tot: 252076,
            rating_count_ver: 1,
            user_rating: 3.5,
            price: 0.0,
        })
        .expect("room");
    let cfg = Config::default();
    let mut agg = AppsAggregate::new(catalogue, &cfg.apps);
    let ts = 1_795_428_000_000;
    agg.merge(&mut vec![
        MentionPart::Hit { partition: 0, app: "284035177".into(), ts_ms: ts },
        MentionPart::Hit { partition: 1, app: "302584613".into(), ts_ms: ts + 1 },
    ]);
    let mut out = Vec::new();
    agg.on_tick(chrono::Utc::now(), &mut out);
    let (top, mentions) = (validator(def(apps::TOP)), validator(def(apps::MENTIONS)));
    let mut seen = (0, 0);
    for r in &out {
        let json: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
        let (validator, count) = match r.topic {
            t if t == apps::TOP => (&top, &mut seen.0),
            t if t == apps::MENTIONS => (&mentions, &mut seen.1),
            other => panic!("unexpected output topic {other}"),
        };
        let errors: Vec<String> = validator.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "real {} {json} violates its schema: {errors:?}", r.topic);
        *count += 1;
    }
    assert_eq!(seen, (1, 2), "one ranking, two apps' mentions");
    for ex in &def(apps::TOP).examples {
        let _: TopValue = serde_json::from_value(ex.value.clone()).expect("example decodes as TopValue");
    }
    for ex in def(apps::MENTIONS).examples.iter().filter(|e| !e.value.is_null()) {
        let _: MentionsValue = serde_json::from_value(ex.value.clone()).expect("example decodes as MentionsValue");
    }
}

/// The shares topics' examples are what the readers accept, and what the tasks really publish
/// matches the schemas.
#[test]
fn shares_examples_match_the_real_readers_and_publishers() {
    use pagepulse::engine::OutRecord;
    use pagepulse::pipelines::fans::top as fans_top;
    use pagepulse::pipelines::posts::trending;
    let split = |key: &str| -> (i32, String) {
        let (p, what) = key.split_once('/').expect("`<partition>/<what>`");
        (p.parse().expect("partition"), what.to_string())
    };
    let d = def(fans::SHARES);
    for ex in &d.examples {
        let (p, what) = split(ex.key.as_deref().expect("key"));
        let value = ex.value.to_string().into_bytes();
        fans_top::decode_share(p, &what, Some(&value)).unwrap_or_else(|e| panic!("{}: {e}", ex.value));
    }
    let d = def(posts::SHARES);
    for ex in &d.examples {
        let (p, what) = split(ex.key.as_deref().expect("key"));
        let value = ex.value.to_string().into_bytes();
        trending::decode_share(p, &what, Some(&value)).unwrap_or_else(|e| panic!("{}: {e}", ex.value));
    }
    let d = def(pagepulse::pipelines::apps::SHARES);
    for ex in &d.examples {
        let (p, what) = split(ex.key.as_deref().expect("key"));
        let value = ex.value.to_string().into_bytes();
        pagepulse::pipelines::apps::aggregate::decode_share(p, &what, Some(&value))
            .unwrap_or_else(|e| panic!("{}: {e}", ex.value));
    }
    let d = def(pagepulse::pipelines::messages::SHARES);
    for ex in &d.examples {
        let (p, what) = split(ex.key.as_deref().expect("key"));
        let value = ex.value.to_string().into_bytes();
        pagepulse::pipelines::messages::totals::decode_share(p, &what, Some(&value))
            .unwrap_or_else(|e| panic!("{}: {e}", ex.value));
    }
    // Real records, through the publishers.
    let cfg = Config::default();
    let mut fp = FansProcessor::new(3, &cfg.fans);
    let obs = serde_json::json!({"platform": "facebook", "page_id": "nasa", "fans": 100,
        "observed_at": "2026-11-23T10:00:00Z"});
    let rec = RawRecord {
        key: Some(b"facebook:nasa".to_vec()),
        value: Some(obs.to_string().into_bytes()),
        offset: 0,
        timestamp_ms: None,
    };
    let o = fp.decode(fans::INPUT, &rec).expect("valid");
    let mut out = Emit::default();
    fp.process(o, &RecordMeta { topic: fans::INPUT, partition: 3, offset: 0, timestamp_ms: None }, &mut out);
    fp.on_tick(chrono::Utc::now(), &mut out);
    let mut recs: Vec<OutRecord> = Vec::new();
    fans_top::publish(3, &mut out.parts, &mut recs);
    assert_eq!(recs.len(), 1);
    let check = |topic: &str, recs: &[OutRecord]| {
        let v = validator(def(topic));
        for r in recs {
            assert_eq!(r.topic, topic);
            let json: Value = serde_json::from_slice(r.value.as_deref().expect("value")).expect("JSON");
            let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{topic}: {json} violates its schema: {errors:?}");
        }
    };
    check(fans::SHARES, &recs);
    assert_eq!(recs[0].key.as_deref(), Some(&b"3/top"[..]));
    let mut pp = PostsProcessor::new(&cfg.posts, Arc::new(ManualClock::at_ms(1_795_428_100_000))).for_partition(5);
    let mut out = Emit::default();
    let rec = raw(&serde_json::json!({"id": "p1", "content": "hi #Rust #rust #kafka"}));
    let post = pp.decode(posts::INPUT, &rec).expect("valid");
    pp.process(
        post,
        &RecordMeta { topic: posts::INPUT, partition: 5, offset: 0, timestamp_ms: rec.timestamp_ms },
        &mut out,
    );
    let mut recs: Vec<OutRecord> = Vec::new();
    trending::publisher(60_000)(5, &mut out.parts, &mut recs);
    assert_eq!(recs.len(), 2, "one record per (minute, tag)");
    check(posts::SHARES, &recs);
}
