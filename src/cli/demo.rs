//! `pagepulse demo posts`, `demo pages` and `demo messages`: demo producers of social posts, of
//! tracked pages and of users' messages, for the quickstart and benchmarks; `demo pageviews-dump`:
//! realistic hourly pageview dump files (for `pagepulse ingest pageviews`); `demo apps-csv`: an app
//! catalogue in the form of Kaggle's `AppleStore.csv` (for `pagepulse ingest apps`).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::config::Config;
use crate::kafka::client;

/// Demo producers.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Produce social posts to the `posts` topic.
    Posts(PostsArgs),
    /// Track the simulator's pages (page-000001 ... page-N) in the `pages` topic, then exit.
    Pages(PagesArgs),
    /// Write realistic hourly pageview dumps (`pageviews-YYYYMMDD-HH0000[.gz]`, named by the end
    /// of their hour as Wikimedia's are) into a directory.
    PageviewsDump(PageviewsDumpArgs),
    /// Produce users' messages (username, city, state) to the `messages` topic.
    Messages(MessagesArgs),
    /// Write an app catalogue in the CSV form of Kaggle's `AppleStore.csv` (17 columns), with
    /// well-known apps first (Pandora, Spotify Music, Shazam, ...).
    AppsCsv(AppsCsvArgs),
    /// Produce a history of fan-count observations (`fans.observations`) for the simulator's
    /// pages, as the poller would have written them: every page once per interval, at its slot
    /// plus a random delay, with the simulator's fan counts; oldest first, all pages per slot.
    Observations(ObservationsArgs),
    /// Write the fans pipeline's changelog as if it had processed `demo observations` with the
    /// same arguments (each page's series built by the pipeline's own code, then one complete
    /// flush per partition at input position 0), for restore benchmarks: restoring it is what an
    /// instance does after a crash, without first pushing the observations through the broker.
    FansChangelog(ObservationsArgs),
}

/// Arguments of `demo observations`.
#[derive(Debug, Args)]
pub struct ObservationsArgs {
    /// Pages: page-000001 ..= page-N on Facebook.
    #[arg(long, default_value_t = 1000)]
    pub pages: u64,
    /// The first page index (to add pages to an earlier run's).
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Hours of history per page, ending at `--end`.
    #[arg(long, default_value_t = 24)]
    pub hours: u64,
    /// Seconds between two observations of a page (10 to 86400).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub interval_s: u64,
    /// Each observation is stamped at its slot plus a uniform delay in `0..=jitter_ms` (the
    /// poller stamps the time its answer arrived); 0 for exact slots.
    #[arg(long, default_value_t = 100)]
    pub jitter_ms: u64,
    /// The end of the history (RFC 3339); the current time when absent.
    #[arg(long)]
    pub end: Option<chrono::DateTime<chrono::Utc>>,
    /// Seed of the delays: the same seed gives the same samples, in `observations` and
    /// `fans-changelog` alike.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One simulated page of `demo observations` / `demo fans-changelog`: its key, id and poll phase.
struct DemoPage {
    key: String,
    id: String,
    index: u64,
    phase: i64,
}

impl DemoPage {
    fn new(index: u64, interval_ms: i64) -> Self {
        let id = crate::simulate::trajectory::page_id(index);
        let key = format!("facebook:{id}");
        let phase = crate::poll::scheduler::phase_ms(&key, interval_ms);
        Self { key, id, index, phase }
    }

    /// The page's sample for slot `slot_ms`: at the slot shifted by the page's poll phase, as the
    /// poller's schedule would, plus a delay in `0..=jitter_ms` that depends only on the seed,
    /// the page and the slot (so both demo commands write the same samples, in any order).
    fn sample_at(&self, args: &ObservationsArgs, slot_ms: i64) -> crate::ops::series::Sample {
        use crate::simulate::trajectory::mix;
        let delay = match args.jitter_ms {
            0 => 0,
            j => (mix(args.seed ^ mix(self.index ^ mix(slot_ms as u64))) % (j + 1)) as i64,
        };
        let at_ms = slot_ms + self.phase + delay;
        let (fans, followers) = crate::simulate::trajectory::fans_at(&self.id, at_ms);
        crate::ops::series::Sample { at_ms, fans, followers: Some(followers) }
    }
}

/// The observations `demo observations` writes for slot `slot_ms`: (key, value) per page, in
/// page order ([`DemoPage::sample_at`]).
pub fn observation_records(args: &ObservationsArgs, slot_ms: i64) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    let interval = (args.interval_s * 1000) as i64;
    (args.first..args.first + args.pages).map(move |i| {
        let page = DemoPage::new(i, interval);
        let s = page.sample_at(args, slot_ms);
        let rec = crate::poll::dispatch::observation(&page.key, s.fans, s.followers, s.at_ms);
        (page.key, rec.value.unwrap_or_default())
    })
}

/// Arguments of `demo apps-csv`.
#[derive(Debug, Args)]
pub struct AppsCsvArgs {
    /// The file to write.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Apps in the catalogue (the real data set has 7,197).
    #[arg(long, default_value_t = 7197, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub apps: u64,
    /// Random seed (the same seed gives the same file).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Arguments of `demo pageviews-dump`.
#[derive(Debug, Args)]
pub struct PageviewsDumpArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Number of hourly files.
    #[arg(long, default_value_t = 1)]
    pub hours: u64,
    /// The first hour (UTC), `YYYY-MM-DDTHH`.
    #[arg(long, value_parser = |s: &str| crate::ingest::dump::parse_hour(s).map_err(|e| e.to_string()))]
    pub start: i64,
    /// Distinct `(domain, title)` lines per hour (a real hour of all Wikimedia projects has ~6M).
    #[arg(long, default_value_t = 6_000_000)]
    pub lines: u64,
    /// Number of domains (Zipf-distributed shares: en, de, ja, es, ...).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub domains: u64,
    /// Random seed (the same seed gives the same files).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Compress the files with gzip (as Wikimedia publishes them).
    #[arg(long)]
    pub gzip: bool,
}

/// Arguments of `demo pages`.
#[derive(Debug, Args)]
pub struct PagesArgs {
    /// Pages to track: page-000001 ..= page-N (the ids `simulate graph-api --pages N` serves).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Poll interval of every page, in seconds (10 to 86400).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub interval_s: u64,
    /// Track every Nth page on Mastodon instead of Facebook; 0 for none.
    #[arg(long, default_value_t = 0)]
    pub mastodon_every: u64,
    /// Also track this many Facebook pages the simulator does not know (they show up as failing).
    #[arg(long, default_value_t = 0)]
    pub unknown: u64,
    /// Stop tracking the pages instead (tombstones).
    #[arg(long)]
    pub untrack: bool,
}

/// The `pages` record (key, value) of simulated page `i`; `None` value for a tombstone.
pub fn page_record(i: u64, args: &PagesArgs) -> (String, Option<String>) {
    let id = crate::simulate::trajectory::page_id(i);
    let platform =
        if args.mastodon_every > 0 && i.is_multiple_of(args.mastodon_every) { "mastodon" } else { "facebook" };
    let key = format!("{platform}:{id}");
    let value = (!args.untrack)
        .then(|| serde_json::json!({ "platform": platform, "page_id": id, "interval_s": args.interval_s }).to_string());
    (key, value)
}

/// Arguments of `demo posts`.
#[derive(Debug, Args)]
pub struct PostsArgs {
    /// Posts per second; 0 for as fast as possible.
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// Stop after this many posts; 0 for never.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Make every Nth record malformed (rotating through the kinds of bad input); 0 for never.
    #[arg(long, default_value_t = 0)]
    pub bad_every: u64,
    /// Approximate size of each record value in bytes.
    #[arg(long, default_value_t = 160)]
    pub size: usize,
    /// Prefix of the generated post ids.
    #[arg(long, default_value = "demo")]
    pub id_prefix: String,
    /// Random seed (the same seed gives the same posts).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Make about every Nth post mention a well-known app by name (Pandora, Spotify Music, ...:
    /// `demo apps-csv` and the real `AppleStore.csv` both list them); 0 for never.
    #[arg(long, default_value_t = 8)]
    pub mention_every: u64,
}

const WORDS: &[&str] = &[
    "the",
    "new",
    "release",
    "is",
    "out",
    "and",
    "it",
    "looks",
    "great",
    "today",
    "we",
    "shipped",
    "a",
    "faster",
    "stream",
    "processor",
    "for",
    "audience",
    "analytics",
    "café",
    "naïve",
    "über",
    "東京",
    "データ",
    "🎉",
    "🚀",
    "really",
    "love",
    "this",
    "team",
    "update",
    "weekend",
    "launch",
    "music",
    "football",
    "coffee",
    "morning",
];
const TAGS: &[&str] = &[
    "rust",
    "kafka",
    "streaming",
    "analytics",
    "launch",
    "music",
    "football",
    "coffee",
    "AI",
    "news",
    "travel",
    "東京",
    "café",
    "weekend",
    "tech",
    "data",
    "OpenSource",
    "gaming",
    "food",
    "photography",
];
const MENTIONS: &[&str] = &["ana", "bob", "ferris", "Zoë", "kafka_team", "data_eng"];

/// Builds the `n`th demo record value; about one post in `mention_every` names a well-known app
/// (popular ones more often).
pub fn post(rng: &mut StdRng, n: u64, prefix: &str, size: usize, created_at: &str, mention_every: u64) -> String {
    let mut content = String::new();
    if mention_every > 0 && rng.gen_range(0..mention_every) == 0 {
        let names = crate::ingest::apps_generate::FAMOUS_NAMES;
        let i = ((names.len() as f64) * rng.gen::<f64>().powi(2)) as usize;
        let name = names[i.min(names.len() - 1)];
        let phrase = ["listening on", "just tried", "loving", "anyone else on", "switched to"][rng.gen_range(0..5)];
        content.push_str(phrase);
        content.push(' ');
        content.push_str(name);
    }
    // Roughly: 55 bytes of JSON around the content.
    let target = size.saturating_sub(55 + prefix.len()).max(8);
    while content.len() < target {
        if !content.is_empty() {
            content.push(' ');
        }
        let roll: f64 = rng.gen();
        if roll < 0.12 {
            // Zipf-like: low indexes (popular tags) far more often.
            let i = ((TAGS.len() as f64) * rng.gen::<f64>().powi(3)) as usize;
            content.push('#');
            content.push_str(TAGS[i.min(TAGS.len() - 1)]);
        } else if roll < 0.17 {
            content.push('@');
            content.push_str(MENTIONS[rng.gen_range(0..MENTIONS.len())]);
        } else {
            content.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        }
    }
    serde_json::json!({ "id": format!("{prefix}-{n}"), "content": content, "created_at": created_at }).to_string()
}

/// The `k`th kind of malformed record.
pub fn malformed(k: u64, n: u64) -> Vec<u8> {
    match k % 7 {
        0 => format!("{{\"id\": \"bad-{n}\", \"content\": ").into_bytes(),
        1 => format!("{{\"content\": \"no id {n}\"}}").into_bytes(),
        2 => format!("{{\"id\": {n}, \"content\": \"numeric id\"}}").into_bytes(),
        3 => format!("{{\"id\": \"bad-{n}\"}}").into_bytes(),
        4 => format!("{{\"id\": \"bad-{n}\", \"content\": \"x\", \"created_at\": \"tomorrow\"}}").into_bytes(),
        5 => b"[1, 2, 3]".to_vec(),
        _ => {
            let mut v = format!("{{\"id\": \"bad-{n}\", \"content\": \"").into_bytes();
            v.extend_from_slice(b"\xff\xfe\"}");
            v
        }
    }
}

/// A producer for demo records, once the broker answers.
fn producer(cfg: &Config) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    let admin = client::admin(&cfg.kafka)?;
    client::metadata(&admin, &cfg.kafka)?;
    let mut pc = client::producer_base(&cfg.kafka);
    pc.set("linger.ms", "10").set("batch.num.messages", "10000").set("queue.buffering.max.messages", "1000000");
    Ok(pc.create()?)
}

/// Runs a demo producer.
pub fn run(cmd: &DemoCommand, cfg: &Config) -> anyhow::Result<()> {
    match cmd {
        DemoCommand::Posts(args) => posts(args, cfg),
        DemoCommand::Pages(args) => pages(args, cfg),
        DemoCommand::PageviewsDump(args) => pageviews_dump(args),
        DemoCommand::AppsCsv(args) => apps_csv(args),
        DemoCommand::Messages(args) => messages(args, cfg),
        DemoCommand::Observations(args) => observations(args, cfg),
        DemoCommand::FansChangelog(args) => fans_changelog(args, cfg),
    }
}

fn apps_csv(args: &AppsCsvArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let file = std::fs::File::create(&args.out).map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    crate::ingest::apps_generate::write_catalogue(&mut out, args.apps as usize, args.seed)
        .and_then(|()| out.flush())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", args.out.display()))?;
    eprintln!(
        "wrote {} apps to {}",
        args.apps.max(crate::ingest::apps_generate::FAMOUS.len() as u64),
        args.out.display()
    );
    Ok(())
}

fn pageviews_dump(args: &PageviewsDumpArgs) -> anyhow::Result<()> {
    use crate::ingest::generate::{write_dumps, DumpSpec};
    let spec = DumpSpec { lines: args.lines, domains: args.domains as usize, seed: args.seed };
    let started = Instant::now();
    let files = write_dumps(&spec, &args.out, args.start, args.hours, args.gzip)
        .map_err(|e| anyhow::anyhow!("writing dumps into {}: {e}", args.out.display()))?;
    let bytes: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    for f in &files {
        println!("{}", f.display());
    }
    eprintln!(
        "wrote {} files, {} lines, {:.1} MB in {:.2} s",
        files.len(),
        args.lines * args.hours,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn pages(args: &PagesArgs, cfg: &Config) -> anyhow::Result<()> {
    let producer = producer(cfg)?;
    let topic = cfg.topic(crate::pipelines::pages::INPUT);
    let started = Instant::now();
    let unknown = (1..=args.unknown).map(|k| crate::simulate::faults::MAX_PAGES + k);
    let mut sent = 0u64;
    for i in (1..=args.count).chain(unknown) {
        let (key, value) = page_record(i, args);
        let mut rec = BaseRecord::to(&topic).key(key.as_bytes());
        if let Some(v) = &value {
            rec = rec.payload(v.as_bytes());
        }
        client::send_waiting(&producer, rec, || {})?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let verb = if args.untrack { "untracked" } else { "tracked" };
    eprintln!("{verb} {sent} pages in {topic} in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The slots of `args`: (first slot, number of slots, interval), in epoch milliseconds. The last
/// slot's phase-shifted observations stay before the end.
fn slots(args: &ObservationsArgs) -> (i64, i64, i64) {
    let interval = (args.interval_s * 1000) as i64;
    let end = args.end.unwrap_or_else(chrono::Utc::now).timestamp_millis();
    let n = (args.hours * 3_600_000).div_ceil(args.interval_s * 1000) as i64;
    ((end - interval).div_euclid(interval) * interval - (n - 1) * interval, n, interval)
}

fn observations(args: &ObservationsArgs, cfg: &Config) -> anyhow::Result<()> {
    let producer = producer(cfg)?;
    let topic = cfg.topic(crate::poll::observation::TOPIC);
    let (first_slot, n, interval) = slots(args);
    let started = Instant::now();
    let mut sent = 0u64;
    for k in 0..n {
        for (key, value) in observation_records(args, first_slot + k * interval) {
            let rec = BaseRecord::to(&topic).key(key.as_bytes()).payload(value.as_slice());
            client::send_waiting(&producer, rec, || {})?;
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("produced {sent} observations to {topic} in {secs:.2} s: {:.0}/s", sent as f64 / secs);
    Ok(())
}

fn fans_changelog(args: &ObservationsArgs, cfg: &Config) -> anyhow::Result<()> {
    use crate::engine::state;
    use crate::ops::series::RollingFans;
    use crate::pipelines::fans::{INPUT, PIPELINE};
    let producer = producer(cfg)?;
    let changelog = state::changelog_topic(&cfg.kafka.group_id, PIPELINE);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(crate::kafka::changelog::ensure(cfg, &[(changelog.as_str(), INPUT)]))?;
    let admin = client::admin(&cfg.kafka)?;
    let input = cfg.topic(INPUT);
    let partitions = client::metadata(&admin, &cfg.kafka)?
        .topics()
        .iter()
        .find(|t| t.name() == input)
        .map(|t| t.partitions().len() as i32)
        .ok_or_else(|| anyhow::anyhow!("topic {input} does not exist: run `pagepulse topics create` first"))?;
    let topic = cfg.topic(&changelog);
    let owners: Vec<u64> = (0..partitions).map(|_| state::new_owner()).collect();
    let headers = |owner: u64| {
        rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header { key: state::OWNER_HEADER, value: Some(&owner.to_le_bytes()[..]) })
    };
    let (first_slot, n, interval) = slots(args);
    let started = Instant::now();
    let (mut bytes, mut buf) = (0usize, Vec::new());
    // Page by page (not slot by slot as `observations` sends them): a series depends only on
    // the set of its samples, so the order does not change it, and one page is held at a time.
    for i in args.first..args.first + args.pages {
        let page = DemoPage::new(i, interval);
        let mut series = RollingFans::new();
        for k in 0..n {
            series.observe(page.sample_at(args, first_slot + k * interval));
        }
        buf.clear();
        series.encode(&mut buf);
        bytes += buf.len();
        let p = crate::kafka::partitioner::partition_for(page.key.as_bytes(), partitions);
        let rec = BaseRecord::to(&topic)
            .partition(p)
            .key(page.key.as_bytes())
            .payload(buf.as_slice())
            .headers(headers(owners[p as usize]));
        client::send_waiting(&producer, rec, || {})?;
    }
    for (p, owner) in owners.iter().enumerate() {
        let marker = state::marker_record("", p as i32, *owner, Some(0));
        let key = marker.key.unwrap_or_default();
        let value = marker.value.unwrap_or_default();
        let rec = BaseRecord::to(&topic).partition(p as i32).key(&key[..]).payload(&value[..]).headers(headers(*owner));
        client::send_waiting(&producer, rec, || {})?;
    }
    producer.flush(Duration::from_secs(120))?;
    eprintln!(
        "wrote {} pages x {n} samples to {topic} ({partitions} partitions, {:.1} MB of values) in {:.2} s",
        args.pages,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn posts(args: &PostsArgs, cfg: &Config) -> anyhow::Result<()> {
    let producer = producer(cfg)?;
    let topic = cfg.topic("posts");
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let (mut sent, mut bad) = (0u64, 0u64);
    let mut created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    while args.count == 0 || sent < args.count {
        if args.rate > 0 {
            // Pace against the start time, so the average rate is exact however bursty sends are.
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        if sent % 1000 == 0 {
            created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        }
        let key = format!("{}-{sent}", args.id_prefix);
        let value = if args.bad_every > 0 && sent % args.bad_every == args.bad_every - 1 {
            bad += 1;
            malformed(bad, sent)
        } else {
            post(&mut rng, sent, &args.id_prefix, args.size, &created_at, args.mention_every).into_bytes()
        };
        let rec = BaseRecord::to(&topic).key(key.as_bytes()).payload(value.as_slice());
        client::send_waiting(&producer, rec, || {})?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("produced {sent} records to {topic} ({bad} malformed) in {secs:.2} s: {:.0}/s", sent as f64 / secs);
    Ok(())
}

/// Arguments of `demo messages`.
#[derive(Debug, Args)]
pub struct MessagesArgs {
    /// Messages per second; 0 for as fast as possible.
    #[arg(long, default_value_t = 20)]
    pub rate: u64,
    /// Stop after this many messages; 0 for never.
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Distinct users writing (each lives in one city, a few travel).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub users: u64,
    /// Make every Nth record malformed (rotating through the kinds of bad input); 0 for never.
    #[arg(long, default_value_t = 0)]
    pub bad_every: u64,
    /// Date every Nth message three minutes back, so it arrives after its minute is final (a
    /// late message: counted in the totals and the metrics only); 0 for never.
    #[arg(long, default_value_t = 0)]
    pub late_every: u64,
    /// Random seed (the same seed gives the same users and messages).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// (city, state) pairs the demo users live in, most populous first: users pick them with a
/// Zipf-like skew, so a few cities and states dominate. The same city name in two states
/// (Portland, Springfield) counts as two cities.
pub const CITIES: &[(&str, &str)] = &[
    ("New York", "NY"),
    ("Los Angeles", "CA"),
    ("Chicago", "IL"),
    ("Houston", "TX"),
    ("Phoenix", "AZ"),
    ("Philadelphia", "PA"),
    ("San Antonio", "TX"),
    ("San Diego", "CA"),
    ("Dallas", "TX"),
    ("San Jose", "CA"),
    ("Austin", "TX"),
    ("Jacksonville", "FL"),
    ("San Francisco", "CA"),
    ("Columbus", "OH"),
    ("Seattle", "WA"),
    ("Denver", "CO"),
    ("Washington", "DC"),
    ("Boston", "MA"),
    ("Nashville", "TN"),
    ("Detroit", "MI"),
    ("Portland", "OR"),
    ("Las Vegas", "NV"),
    ("Miami", "FL"),
    ("Atlanta", "GA"),
    ("Buffalo", "NY"),
    ("Albuquerque", "NM"),
    ("Springfield", "IL"),
    ("Springfield", "MA"),
    ("Portland", "ME"),
    ("Honolulu", "HI"),
    ("Anchorage", "AK"),
    ("St. Louis", "MO"),
    ("New Orleans", "LA"),
    ("Salt Lake City", "UT"),
    ("Santa Fe", "NM"),
];

const MESSAGE_WORDS: &[&str] = &[
    "yo", "what", "up", "anyone", "around", "tonight", "the", "game", "was", "great", "traffic", "is", "terrible",
    "coffee", "first", "love", "this", "city", "weather", "today", "new", "place", "downtown", "see", "you", "there",
    "🎉", "☕", "café", "later",
];

/// Index into a list of `len` by a Zipf-like skew (low indexes far more often).
fn skewed(rng: &mut StdRng, len: usize) -> usize {
    ((len as f64) * rng.gen::<f64>().powi(3)) as usize % len
}

/// The username of demo user `u`.
pub fn demo_username(u: u64) -> String {
    match u % 7 {
        0 => format!("zoë_{u}"),
        _ => format!("user{u:05}"),
    }
}

/// The home (city, state) of demo user `u`: skewed towards the first cities, the same for a
/// given seed.
pub fn home_of(u: u64, seed: u64) -> (&'static str, &'static str) {
    let mut rng = StdRng::seed_from_u64(seed ^ u.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    CITIES[skewed(&mut rng, CITIES.len())]
}

/// The `n`th demo message of a population of `users` users at event time `ts_ms`: (key, value).
/// Users write with a skewed activity; one message in twenty is written away from home; city
/// and state come in varied case and spacing (which the pipeline groups); one in eight carries
/// no `ts` (the record timestamp counts) and one in eight an epoch-milliseconds `ts`.
pub fn message(rng: &mut StdRng, n: u64, users: u64, seed: u64, ts_ms: i64) -> (String, String) {
    let u = ((users as f64) * rng.gen::<f64>().powi(2)) as u64 % users;
    let username = demo_username(u);
    let (city, state) = if rng.gen_ratio(1, 20) { CITIES[skewed(rng, CITIES.len())] } else { home_of(u, seed) };
    let (city, state) = match rng.gen_range(0..10) {
        0 => (city.to_lowercase(), state.to_lowercase()),
        1 => (format!(" {}  ", city.replace(' ', "  ")), format!("{state} ")),
        2 => (city.to_uppercase(), state.to_string()),
        _ => (city.to_string(), state.to_string()),
    };
    let words = rng.gen_range(2..12);
    let text: Vec<&str> = (0..words).map(|_| MESSAGE_WORDS[rng.gen_range(0..MESSAGE_WORDS.len())]).collect();
    let mut value =
        serde_json::json!({ "username": username, "city": city, "state": state, "message": text.join(" ") });
    match n % 8 {
        3 => {}
        5 => value["ts"] = ts_ms.into(),
        _ => value["ts"] = crate::clock::format_ms(ts_ms).into(),
    }
    (username, value.to_string())
}

/// The `k`th kind of malformed message record: (key, value).
pub fn malformed_message(k: u64, n: u64) -> (String, Vec<u8>) {
    let user = format!("bad{n}");
    let v = |s: String| s.into_bytes();
    match k % 8 {
        0 => (user.clone(), v(format!("{{\"username\": \"{user}\", \"city\": \"Boston\", \"message\": \"no state\"}}"))),
        1 => (user.clone(), v(format!("{{\"username\": \"{user}\", \"city\": \"   \", \"state\": \"MA\", \"message\": \"blank city\"}}"))),
        2 => (user, v(format!("{{\"username\": {n}, \"city\": \"Boston\", \"state\": \"MA\", \"message\": \"numeric user\"}}"))),
        3 => (format!("other{n}"), v(format!("{{\"username\": \"{user}\", \"city\": \"Boston\", \"state\": \"MA\", \"message\": \"wrong key\"}}"))),
        4 => (user.clone(), v(format!("{{\"username\": \"{user}\", \"city\": \"{}\", \"state\": \"MA\", \"message\": \"long city\"}}", "x".repeat(300)))),
        5 => (user.clone(), v(format!("{{\"username\": \"{user}\", \"city\": \"Boston\", \"state\": \"MA\", \"message\": \"hi\", \"ts\": \"yesterday\"}}"))),
        6 => (user, b"{\"username\": \"cut".to_vec()),
        _ => (user.clone(), v(format!("{{\"username\": \"{user}\", \"city\": \"Boston\", \"state\": \"MA\", \"message\": 7}}"))),
    }
}

fn messages(args: &MessagesArgs, cfg: &Config) -> anyhow::Result<()> {
    let producer = producer(cfg)?;
    let topic = cfg.topic(crate::pipelines::messages::INPUT);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let started = Instant::now();
    let (mut sent, mut bad, mut late) = (0u64, 0u64, 0u64);
    while args.count == 0 || sent < args.count {
        if args.rate > 0 {
            // Pace against the start time, so the average rate is exact however bursty sends are.
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let (key, value) = if args.bad_every > 0 && sent % args.bad_every == args.bad_every - 1 {
            bad += 1;
            malformed_message(bad, sent)
        } else {
            let mut ts = chrono::Utc::now().timestamp_millis();
            if args.late_every > 0 && sent % args.late_every == args.late_every - 1 {
                late += 1;
                ts -= 3 * 60_000;
            }
            let (k, v) = message(&mut rng, sent, args.users, args.seed, ts);
            (k, v.into_bytes())
        };
        let rec = BaseRecord::to(&topic).key(key.as_bytes()).payload(value.as_slice());
        client::send_waiting(&producer, rec, || {})?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {sent} records to {topic} ({bad} malformed, {late} dated late) in {secs:.2} s: {:.0}/s",
        sent as f64 / secs
    );
    Ok(())
}
