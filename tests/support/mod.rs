//! Integration-test harness: a real Kafka-compatible broker (tansu, started once per test binary
//! on a free port, or the one named by `PAGEPULSE_TEST_BROKERS`), a random topic prefix and group
//! per test, the `pagepulse` binary as a child process, and polling helpers with deadlines.

#![allow(dead_code)]

pub mod fans;
pub mod mirror;
pub mod netns;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Pause between two checks of a condition in the deadline-bounded waits below.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Bootstrap servers of the test broker.
pub fn brokers() -> String {
    static BROKERS: OnceLock<String> = OnceLock::new();
    BROKERS
        .get_or_init(|| match std::env::var("PAGEPULSE_TEST_BROKERS") {
            Ok(b) if !b.is_empty() => b,
            _ => start_tansu(),
        })
        .clone()
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        cargo_bin
    } else {
        "tansu".into()
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind port 0").local_addr().expect("local addr").port()
}

/// The tansu build with the SQLite storage engine (`scripts/install-tansu.sh` installs it as
/// `~/.cargo/bin/tansu-sqlite`; `TANSU_SQLITE_BIN` names another), `None` when it is not installed.
pub fn tansu_sqlite_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("TANSU_SQLITE_BIN") {
        return Some(p.into());
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default());
    [home.join(".cargo/bin/tansu-sqlite"), home.join(".cache/pagepulse/tansu-libsql/bin/tansu")]
        .into_iter()
        .find(|p| p.exists())
}

/// Where a test broker keeps its topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// In memory (`memory://`): gone when the broker stops. Fast; what the tests use.
    Memory,
    /// In `tansu.db` in the broker's directory (`sqlite://`): kept across restarts, compacted.
    Sqlite,
}

/// The tansu command for a broker on 127.0.0.1:`port`, run in `dir` (it reads `.env` from its
/// working directory; the SQLite engine keeps its database there), logging to `dir/tansu.log`,
/// killed when the spawning thread ends.
fn tansu_command(port: u16, dir: &std::path::Path, storage: Storage) -> Command {
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("tansu.log")).expect("log file");
    let (bin, engine) = match storage {
        Storage::Memory => (tansu_bin(), "memory://tansu/"),
        // tansu resolves the URL against its working directory (scripts/broker.sh).
        Storage::Sqlite => (tansu_sqlite_bin().expect("tansu-sqlite (scripts/install-tansu.sh)"), "sqlite://tansu.db"),
    };
    let mut cmd = Command::new(bin);
    cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .args(["--storage-engine", engine])
        .current_dir(dir)
        .stdout(Stdio::from(log.try_clone().expect("dup log")))
        .stderr(Stdio::from(log));
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

/// Waits until something listens on `addr`.
fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen on {addr} within 20 s");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Starts tansu on a free port from a thread that lives as long as the test process: the child
/// gets PR_SET_PDEATHSIG, which fires when the *spawning thread* exits, so that thread must not
/// be a test thread.
fn start_tansu() -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tansu-keeper".into())
        .spawn(move || {
            let port = free_port();
            let dir = tempfile::tempdir().expect("temp dir for tansu (it reads .env from its cwd)");
            let child = tansu_command(port, dir.path(), Storage::Memory).spawn().unwrap_or_else(|e| {
                panic!("cannot start tansu ({e}); run scripts/install-tansu.sh or set PAGEPULSE_TEST_BROKERS")
            });
            let addr = format!("127.0.0.1:{port}");
            wait_listening(&addr);
            tx.send(addr).expect("test thread waits for the address");
            let _keep = (child, dir);
            loop {
                std::thread::park();
            }
        })
        .expect("spawn tansu keeper");
    rx.recv().expect("tansu keeper sends its address")
}

/// A broker of one test's own, which the test may pause, resume and restart (the shared broker
/// of [`brokers`] must never be). Start and restart it from the test's thread (the broker dies
/// with the thread that spawned it). Killed when dropped.
pub struct Broker {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    storage: Storage,
}

impl Broker {
    /// Starts a tansu broker with in-memory storage on a free port.
    pub fn start() -> Self {
        Self::start_on(Storage::Memory)
    }

    /// Starts a tansu broker with SQLite storage (in its own temporary directory) on a free port,
    /// or `None` when the SQLite build of tansu is not installed.
    pub fn start_sqlite() -> Option<Self> {
        tansu_sqlite_bin()?;
        Some(Self::start_on(Storage::Sqlite))
    }

    fn start_on(storage: Storage) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir for tansu");
        let child = tansu_command(port, dir.path(), storage).spawn().expect("start tansu (scripts/install-tansu.sh)");
        let addr = format!("127.0.0.1:{port}");
        wait_listening(&addr);
        Self { addr, port, child, dir, storage }
    }

    /// The broker's directory (with SQLite storage, its database `tansu.db` is there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Freezes the broker process (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// Kills the broker and starts a new one on the same port: with in-memory storage every
    /// topic, offset and group is gone; with SQLite storage the new one opens the same database.
    pub fn restart(&mut self) {
        let _ = self.child.kill(); // Err only if it already exited
        let _ = self.child.wait();
        self.start_again();
    }

    /// Stops the broker with `signal` (e.g. SIGTERM or SIGKILL), waits until it has exited
    /// (failing the test after 20 s) and starts it again on the same port and directory; returns
    /// how long the old one took to exit.
    pub fn restart_after(&mut self, signal: i32) -> Duration {
        let asked = Instant::now();
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        wait_for("the broker to exit", Duration::from_secs(20), || self.child.try_wait().ok().flatten());
        let took = asked.elapsed();
        self.start_again();
        took
    }

    fn start_again(&mut self) {
        // The port is free again once the process is gone; a new broker may take a moment.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tansu_command(self.port, self.dir.path(), self.storage).spawn() {
                Ok(child) => {
                    self.child = child;
                    break;
                }
                Err(e) => assert!(Instant::now() < deadline, "cannot restart tansu: {e}"),
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        wait_listening(&self.addr);
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Best effort: it may be stopped; SIGKILL works on a stopped process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, failing the test with `what` at the deadline.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A plain HTTP/1.0 GET: (status, body), or None if nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// An HTTP answer: status, headers (names lower-cased), body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// One HTTP/1.1 request (`Connection: close`) with `headers` and `body`; `None` if nothing
/// answers. `path` is sent as given (so tests can send odd, unencoded paths).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Answer> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Some(Answer { status, headers, body })
}

/// Decodes a chunked body.
fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 || b.len() < eol + 2 + size {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
}

/// A record for [`TestEnv::produce_python_at`]: key, value (`None`: a tombstone) and timestamp
/// (epoch ms; `None`: the producer's clock).
pub type StampedRecord = (Option<String>, Option<Vec<u8>>, Option<i64>);

/// One test's slice of the broker: its own topic prefix and group id.
pub struct TestEnv {
    /// Bootstrap servers.
    pub brokers: String,
    /// Topic prefix, e.g. `t1a2b3c.`.
    pub prefix: String,
    /// Consumer group id.
    pub group: String,
}

impl TestEnv {
    /// A fresh prefix and group, with every pagepulse topic created under the prefix.
    pub fn new() -> Self {
        Self::on(brokers())
    }

    /// Like [`TestEnv::new`], on the broker at `brokers` (e.g. a test's own [`Broker`]).
    pub fn on(brokers: String) -> Self {
        let tag: u32 = rand::thread_rng().gen();
        let env = Self { brokers, prefix: format!("t{tag:08x}."), group: format!("g{tag:08x}") };
        env.create_topics();
        env
    }

    /// Creates every pagepulse topic under the prefix (idempotent).
    pub fn create_topics(&self) {
        let out = self.cli(&["topics", "create"]).output().expect("run pagepulse topics create");
        assert!(out.status.success(), "topics create failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Full name of logical topic `t`.
    pub fn topic(&self, t: &str) -> String {
        format!("{}{}", self.prefix, t)
    }

    /// A `pagepulse` command with this environment's broker, prefix and group.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pagepulse"));
        c.args(args);
        self.with_env(&mut c);
        c
    }

    fn with_env(&self, c: &mut Command) {
        c.env("PAGEPULSE_BROKERS", &self.brokers)
            .env("PAGEPULSE_TOPIC_PREFIX", &self.prefix)
            .env("PAGEPULSE_GROUP_ID", &self.group)
            .env("PAGEPULSE__kafka__session_timeout", "\"6s\"")
            .env("PAGEPULSE_LOG", "info,librdkafka=warn")
            // The tests read the API without tokens unless they test tokens (they set it false).
            .env("PAGEPULSE__http__public_reads", "true");
    }

    /// Starts `pagepulse run` inside host `i` of `hosts`, its HTTP endpoint on that host's address
    /// (port 9898 on every host: they are different hosts), with extra environment variables.
    pub fn start_in(&self, hosts: &netns::Hosts, i: usize, vars: &[(&str, &str)]) -> Pagepulse {
        let addr = format!("{}:9898", hosts.ips[i]);
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut c = hosts.command(i, env!("CARGO_BIN_EXE_pagepulse"));
        c.arg("run");
        self.with_env(&mut c);
        let child = c
            .envs(vars.iter().copied())
            .env("PAGEPULSE_HTTP_LISTEN", &addr)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().expect("reopen log")))
            .spawn()
            .expect("spawn pagepulse run in a namespace");
        Pagepulse { child: Some(child), addr, log }
    }

    /// Runs `pagepulse args` of this environment to its end; panics with its stderr if it fails.
    pub fn run(&self, args: &[&str]) {
        let out = self.cli(args).output().expect("run pagepulse");
        assert!(out.status.success(), "pagepulse {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Writes a generated app catalogue of `apps` apps (Kaggle's CSV form) into `dir` and loads it
    /// into `apps` with `ingest apps`.
    pub fn load_demo_catalogue(&self, dir: &std::path::Path, apps: usize) {
        let csv = dir.join("apps.csv");
        let csv = csv.to_str().expect("UTF-8 path");
        self.run(&["demo", "apps-csv", "--out", csv, "--apps", &apps.to_string()]);
        self.run(&["ingest", "apps", "--quiet", csv]);
    }

    /// Generates one hour of page views (`lines` lines over `domains` domains) starting at `hour`
    /// (`YYYY-MM-DDTHH`) into `dir/dumps` and loads it into `pageviews` with `ingest pageviews`.
    pub fn ingest_demo_hour(&self, dir: &std::path::Path, hour: &str, lines: usize, domains: usize) {
        let dumps = dir.join("dumps");
        let out = dumps.to_str().expect("UTF-8 path");
        let (lines, domains) = (lines.to_string(), domains.to_string());
        self.run(&["demo", "pageviews-dump", "--out", out, "--start", hour, "--lines", &lines, "--domains", &domains]);
        let mut ingest = vec!["ingest".to_string(), "pageviews".into(), "--quiet".into()];
        ingest.extend(
            std::fs::read_dir(&dumps).expect("dumps").map(|e| e.expect("entry").path().to_string_lossy().into_owned()),
        );
        self.run(&ingest.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// Starts `pagepulse run` with its HTTP endpoint on a free port.
    pub fn start(&self) -> Pagepulse {
        self.start_with(&[])
    }

    /// Starts `pagepulse run` with extra environment variables (config overrides).
    pub fn start_with(&self, vars: &[(&str, &str)]) -> Pagepulse {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = self
            .cli(&["run"])
            .envs(vars.iter().copied())
            .env("PAGEPULSE_HTTP_LISTEN", &addr)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().expect("reopen log")))
            .spawn()
            .expect("spawn pagepulse run");
        Pagepulse { child: Some(child), addr, log }
    }

    /// Produces `records` (key, value) to logical topic `topic` with Python's confluent-kafka.
    pub fn produce_python(&self, topic: &str, records: &[(Option<String>, Option<Vec<u8>>)]) {
        let stamped: Vec<_> = records.iter().map(|(k, v)| (k.clone(), v.clone(), None)).collect();
        self.produce_python_at(topic, &stamped);
    }

    /// Like [`produce_python`](TestEnv::produce_python), each record with its own timestamp
    /// (epoch ms; `None`: the producer's clock).
    pub fn produce_python_at(&self, topic: &str, records: &[StampedRecord]) {
        use base64::Engine as _;
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        for (k, v, ts) in records {
            let line = serde_json::json!({
                "key": k,
                "value_b64": v.as_ref().map(|v| base64::engine::general_purpose::STANDARD.encode(v)),
                "timestamp": ts,
            });
            writeln!(file, "{line}").expect("write record");
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/produce.py");
        let out = Command::new("python3")
            .args([script, &self.brokers, &self.topic(topic)])
            .arg(file.path())
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "python producer failed (is confluent-kafka installed? scripts/test.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let acked: usize = String::from_utf8_lossy(&out.stdout).trim().parse().expect("acked count");
        assert_eq!(acked, records.len());
    }

    /// Reads logical topic `topic` from the beginning until `done(records)` holds, failing at the
    /// deadline. Each record once, in offset order per partition.
    ///
    /// tansu 0.6.0 can leave a consumer's fetches of a partition empty while it is being written
    /// (the high watermark it reports then lags behind offsets already read). So when nothing
    /// arrives for 3 s and `done` does not hold yet, the reader starts over with a new consumer
    /// from the beginning, skipping what it has (it cannot resume mid-log: tansu answers a fetch
    /// from inside a record batch with the next batch).
    pub fn read_until(&self, topic: &str, timeout: Duration, mut done: impl FnMut(&[Rec]) -> bool) -> Vec<Rec> {
        let full = self.topic(topic);
        let start = || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &self.brokers)
                .set("group.id", format!("{}-reader", self.group))
                .set("enable.auto.commit", "false")
                .create()
                .expect("test consumer");
            let md = consumer.fetch_metadata(Some(&full), Duration::from_secs(10)).expect("metadata");
            let parts = md.topics()[0].partitions().len();
            let mut tpl = TopicPartitionList::new();
            for p in 0..parts as i32 {
                tpl.add_partition_offset(&full, p, Offset::Beginning).expect("add partition");
            }
            consumer.assign(&tpl).expect("assign");
            consumer
        };
        let mut consumer = start();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut recs = Vec::new();
        let deadline = Instant::now() + timeout;
        let mut last_record = Instant::now();
        // Doubles at every start-over without a new record, back to 3 s at the next record.
        let mut patience = Duration::from_secs(3);
        while !done(&recs) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} reading {full}: have {} records (next offsets {next:?})",
                recs.len()
            );
            if last_record.elapsed() > patience {
                consumer = start();
                last_record = Instant::now();
                patience = (patience * 2).min(Duration::from_secs(24));
            }
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("consume");
                let want = next.entry(m.partition()).or_insert(0);
                if m.offset() < *want {
                    continue; // read before a restart
                }
                *want = m.offset() + 1;
                last_record = Instant::now();
                patience = Duration::from_secs(3);
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                recs.push(Rec {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
        recs
    }

    /// Every record of logical topic `topic` up to its end as of now (each partition's high
    /// watermark when called), in the order read.
    pub fn read_all(&self, topic: &str, timeout: Duration) -> Vec<Rec> {
        let full = self.topic(topic);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}-reader", self.group))
            .create()
            .expect("test consumer");
        let md = consumer.fetch_metadata(Some(&full), Duration::from_secs(10)).expect("metadata");
        let ends: Vec<(i32, i64)> = (0..md.topics()[0].partitions().len() as i32)
            .map(|p| (p, consumer.fetch_watermarks(&full, p, Duration::from_secs(10)).expect("watermarks").1))
            .collect();
        self.read_until(topic, timeout, |recs| {
            ends.iter().all(|&(p, end)| end == 0 || recs.iter().any(|r| r.partition == p && r.offset + 1 >= end))
        })
    }

    /// The committed offsets of this environment's group for logical topic `topic`.
    pub fn committed(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .expect("test consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.topic(topic), p);
        }
        let got = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Best effort: topics live in the broker's memory; a failed delete only costs memory.
        let admin: Result<rdkafka::admin::AdminClient<_>, _> =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create();
        if let Ok(admin) = admin {
            let names: Vec<String> = pagepulse::kafka::topics::all().iter().map(|d| self.topic(&d.name)).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let _ = rt.block_on(admin.delete_topics(&refs, &rdkafka::admin::AdminOptions::new()));
        }
    }
}

/// A consumed record.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers as text.
    pub headers: BTreeMap<String, String>,
}

/// A running `pagepulse run` child process; killed when dropped.
pub struct Pagepulse {
    child: Option<Child>,
    /// Its HTTP address.
    pub addr: String,
    log: tempfile::NamedTempFile,
}

impl Pagepulse {
    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let addr = self.addr.clone();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((200, _)) = http_get(&addr, "/readyz") {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("pagepulse exited early with {status}; log:\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "pagepulse not ready within {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// The value of the sample `name{labels}` (labels as printed, e.g. `topic="posts"`), 0 when absent.
    pub fn metric(&self, name: &str, labels: &str) -> f64 {
        metric_value(&self.metrics(), name, labels)
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: plain kill(2) on our own child.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits for the process to exit, failing after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "pagepulse did not exit within {timeout:?}; log:\n{}", self.log_text());
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Pagepulse {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Already-exited children make these fail harmlessly.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The value of `name{labels}` in Prometheus text `text`, 0 when absent.
pub fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    let want = if labels.is_empty() { name.to_string() } else { format!("{name}{{{labels}}}") };
    text.lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| *series == want)
        .filter_map(|(_, v)| v.parse().ok())
        .next()
        .unwrap_or(0.0)
}

/// Sum of every sample of `name` whose labels contain `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

// --- Durable-state tests (crash loop, scale-out): feeding input while pagepulse runs. ---

/// Counts refused deliveries of a [`TestProducer`].
pub struct CountingContext {
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for CountingContext {}

impl rdkafka::producer::ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A Kafka producer for test input (idempotent, so the records of one partition keep the order
/// they were sent in; keyed records go to the partition Kafka's default partitioner picks,
/// `murmur2_random` in librdkafka, as every pagepulse producer does: see
/// `pagepulse::kafka::partitioner`). Safe to share between threads.
pub struct TestProducer {
    producer: rdkafka::producer::ThreadedProducer<CountingContext>,
}

impl TestProducer {
    /// Queues one record to full topic `topic`, waiting while the local queue is full.
    pub fn send(&self, topic: &str, key: &[u8], value: Option<&[u8]>) {
        self.send_record(topic, None, key, value);
    }

    /// Like [`send`](TestProducer::send), to a chosen partition.
    pub fn send_to(&self, topic: &str, partition: i32, key: &[u8], value: Option<&[u8]>) {
        self.send_record(topic, Some(partition), key, value);
    }

    fn send_record(&self, topic: &str, partition: Option<i32>, key: &[u8], value: Option<&[u8]>) {
        use rdkafka::producer::BaseRecord;
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic).key(key);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => return,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("cannot queue a record for {topic}: {e}"),
            }
        }
    }

    /// Waits until every queued record is acknowledged, failing the test if any was refused.
    pub fn flush(&self) {
        use rdkafka::producer::Producer;
        self.producer.flush(Duration::from_secs(60)).expect("test input acknowledged within 60 s");
        let failed = self.producer.context().failed.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(failed, 0, "the broker refused {failed} test input records");
    }
}

impl TestEnv {
    /// A producer for test input on this environment's broker.
    pub fn producer(&self) -> TestProducer {
        self.producer_lingering(Duration::from_millis(5))
    }

    /// Like [`producer`](TestEnv::producer), waiting up to `linger` to fill a record batch (a
    /// burst sent within it goes to the broker as one batch per partition, up to 10,000 records).
    pub fn producer_lingering(&self, linger: Duration) -> TestProducer {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", linger.as_millis().to_string())
            .create_with_context(CountingContext { failed: std::sync::atomic::AtomicU64::new(0) })
            .expect("test producer");
        TestProducer { producer }
    }

    /// Partitions of full topic `full`, `None` if the broker does not know it.
    pub fn partitions_of(&self, full: &str) -> Option<usize> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("metadata client");
        let md = consumer.fetch_metadata(Some(full), Duration::from_secs(10)).expect("metadata");
        let t = md.topics().iter().find(|t| t.name() == full)?;
        (t.error().is_none() && !t.partitions().is_empty()).then(|| t.partitions().len())
    }

    /// Full name of the changelog of `store` for this environment's group.
    pub fn changelog(&self, store: &str) -> String {
        self.topic(&format!("{}-{store}-changelog", self.group))
    }
}

impl Pagepulse {
    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`), e.g. the colours of a log.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One "state restored" line of a pagepulse log.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreLine {
    /// The store.
    pub store: String,
    /// The partition.
    pub partition: i32,
    /// Changelog records read.
    pub records: u64,
    /// Torn keys repaired.
    pub torn: u64,
    /// How long it took, in milliseconds (0 if the line does not say).
    pub took_ms: f64,
}

/// Milliseconds of a `Duration` as `{:?}` prints it (`715.43ms`, `1.2s`, `830µs`).
fn debug_duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "s" => n * 1000.0,
        "ms" => n,
        "µs" | "us" => n / 1000.0,
        "ns" => n / 1e6,
        _ => return None,
    })
}

/// Every state restore a pagepulse log reports (`state restored store=... records=...`).
pub fn restores_in_log(log: &str) -> Vec<RestoreLine> {
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!(" {name}="))? + name.len() + 2;
        let rest = &line[at..];
        let end = rest.find(' ').unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"').to_string())
    };
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("state restored"))
        .filter_map(|l| {
            Some(RestoreLine {
                store: field(l, "store")?,
                partition: field(l, "partition")?.parse().ok()?,
                records: field(l, "records")?.parse().ok()?,
                torn: field(l, "torn").and_then(|t| t.parse().ok()).unwrap_or(0),
                took_ms: field(l, "took").and_then(|t| debug_duration_ms(&t)).unwrap_or(0.0),
            })
        })
        .collect()
}

impl TestEnv {
    /// This environment's pagepulse configuration (broker, prefix, group; defaults otherwise).
    pub fn config(&self) -> pagepulse::config::Config {
        let env = [
            ("PAGEPULSE_BROKERS", self.brokers.clone()),
            ("PAGEPULSE_TOPIC_PREFIX", self.prefix.clone()),
            ("PAGEPULSE_GROUP_ID", self.group.clone()),
        ];
        pagepulse::config::Config::from_parts(Default::default(), env.map(|(k, v)| (k.to_string(), v)))
            .expect("test config")
    }

    /// Restores every partition of `store`'s changelog the way pagepulse does (a fence under a
    /// new owner, then a replay up to it): the state the next owner of each partition would get.
    /// Run it only while no instance of this group runs: the fence shuts out the current owners.
    pub fn restore_changelog(&self, store: &str, partitions: i32) -> Vec<pagepulse::engine::state::Restored> {
        use pagepulse::engine::StateBackend;
        let backend = pagepulse::kafka::changelog::KafkaBackend::new(&self.config()).expect("changelog backend");
        let logical: &'static str =
            Box::leak(pagepulse::engine::state::changelog_topic(&self.group, store).into_boxed_str());
        (0..partitions)
            .map(|p| {
                backend
                    .restore(logical, p, pagepulse::engine::state::new_owner())
                    .unwrap_or_else(|e| panic!("restoring {store} partition {p}: {e}"))
            })
            .collect()
    }
}

impl Pagepulse {
    /// Rebalances that left this instance without partitions, as its log reports them.
    pub fn empty_assignments(&self) -> usize {
        strip_ansi(&self.log_text()).lines().filter(|l| l.contains("rebalance assigned=[]")).count()
    }

    /// Assignments (rebalances) its log reports.
    pub fn assignments(&self) -> usize {
        strip_ansi(&self.log_text()).lines().filter(|l| l.contains("rebalance assigned=")).count()
    }
}
