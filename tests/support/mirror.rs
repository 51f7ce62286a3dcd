//! A stand-in for `https://dumps.wikimedia.org/other/pageviews`: a small HTTP/1.1 server on
//! 127.0.0.1 (a free port), in threads of the test process, serving files from memory by path,
//! each with a [`Behaviour`] (served whole, missing, paced, cut short), and logging every request
//! so tests can count downloads and retries.
//!
//! Paths follow Wikimedia's layout ([`hour_path`]): `/{YYYY}/{YYYY-MM}/pageviews-{YYYYMMDD}-{HH}0000.gz`
//! where every part of the time is the END of the hour the file counts (the file of
//! 2024-02-29T23 is `/2024/2024-03/pageviews-20240301-000000.gz`).
//!
//! Every answer carries `Connection: close` and the connection is closed after it. Paced writes
//! wait on a condition variable with a timeout (the mirror's stop flag), so dropping the mirror
//! ends them at once.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How the mirror answers a GET of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the whole body at once.
    Normal,
    /// 404, every time (as for an hour Wikimedia has not published).
    Missing,
    /// 200 with the whole body, `chunk` bytes at a time, one chunk every `every`.
    Slow {
        /// Bytes per write.
        chunk: usize,
        /// Pause before each write after the first.
        every: Duration,
    },
    /// The first `n` GETs announce the whole body (its full `Content-Length`) but get only its
    /// first half before the connection is closed; later GETs get the whole body.
    TruncateFirst(usize),
}

/// One request the mirror received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The path, without any query.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// Whether the whole body was written (false for cut-short and aborted answers).
    pub complete: bool,
}

#[derive(Default)]
struct State {
    files: HashMap<String, (Arc<Vec<u8>>, Behaviour)>,
    /// GETs per path so far (drives [`Behaviour::TruncateFirst`]).
    gets: HashMap<String, usize>,
    /// Body bytes written per path, over every request.
    sent: HashMap<String, usize>,
    log: Vec<Request>,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the mirror stops; paced writes wait on it with a timeout.
    stop: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits `every` (the pace of a slow answer); false if the mirror stopped meanwhile.
    fn pace(&self, every: Duration) -> bool {
        let guard = self.lock();
        let (guard, _) = self.stop.wait_timeout_while(guard, every, |s| !s.stopped).unwrap_or_else(|e| e.into_inner());
        !guard.stopped
    }

    fn stopped(&self) -> bool {
        self.lock().stopped
    }
}

/// The running mirror; stops when dropped.
pub struct Mirror {
    /// Its address, `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Mirror {
    /// Starts an empty mirror on a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mirror");
        let addr = listener.local_addr().expect("mirror address");
        let shared = Arc::new(Shared { state: Mutex::new(State::default()), stop: Condvar::new() });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("dump-mirror".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stopped() {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = s.clone();
                    let _ = std::thread::Builder::new().name("dump-mirror-conn".into()).spawn(move || serve(&s, conn));
                }
            })
            .expect("spawn the mirror");
        Self { addr, shared, accept: Some(accept) }
    }

    /// The base URL to configure as `dump_mirror`, e.g. `http://127.0.0.1:41234` (no slash at
    /// the end).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The full URL of `path`.
    pub fn url_of(&self, path: &str) -> String {
        format!("{}{path}", self.url())
    }

    /// Serves `body` at `path` (replacing what was there) with `behaviour`.
    pub fn put(&self, path: &str, body: Vec<u8>, behaviour: Behaviour) {
        self.shared.lock().files.insert(path.to_string(), (Arc::new(body), behaviour));
    }

    /// Changes how `path` is served from now on.
    pub fn set_behaviour(&self, path: &str, behaviour: Behaviour) {
        let mut st = self.shared.lock();
        let entry = st.files.get_mut(path).unwrap_or_else(|| panic!("the mirror has no {path}"));
        entry.1 = behaviour;
    }

    /// GET requests of `path` so far (complete, cut short or answered 404 alike).
    pub fn gets(&self, path: &str) -> usize {
        self.shared.lock().gets.get(path).copied().unwrap_or(0)
    }

    /// GETs of `path` whose whole body was written.
    pub fn completed(&self, path: &str) -> usize {
        self.shared.lock().log.iter().filter(|r| r.path == path && r.method == "GET" && r.complete).count()
    }

    /// Body bytes of `path` written so far, over every request.
    pub fn sent(&self, path: &str) -> usize {
        self.shared.lock().sent.get(path).copied().unwrap_or(0)
    }

    /// The size of the body served at `path`.
    pub fn size(&self, path: &str) -> usize {
        self.shared.lock().files.get(path).map(|(b, _)| b.len()).unwrap_or(0)
    }

    /// Every request so far, in the order they ended (an answer still being written is not
    /// listed yet).
    pub fn log(&self) -> Vec<Request> {
        self.shared.lock().log.clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.shared.stop.notify_all();
        // Wakes the accept loop, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

/// The path of the dump of the hour starting at `hour_start_ms` (epoch ms, UTC) in Wikimedia's
/// layout: year, month and name all from the END of the hour.
pub fn hour_path(hour_start_ms: i64) -> String {
    let end = chrono::DateTime::from_timestamp_millis(hour_start_ms + 3_600_000).expect("a valid time");
    format!("/{}/{}/pageviews-{}0000.gz", end.format("%Y"), end.format("%Y-%m"), end.format("%Y%m%d-%H"))
}

/// `text` gzipped (one member, default level), as Wikimedia publishes dumps.
pub fn gzip(text: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

/// Reads one request head (up to the blank line): (method, path without query).
fn read_head(conn: &mut TcpStream) -> Option<(String, String)> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next()?.split_whitespace();
    let method = first.next()?.to_string();
    let target = first.next()?;
    // An absolute-form target (through a proxy) names the path after the authority.
    let target = target.strip_prefix("http://").and_then(|t| t.find('/').map(|i| &t[i..])).unwrap_or(target);
    let path = target.split('?').next().unwrap_or(target).to_string();
    Some((method, path))
}

/// Answers one connection: one request, then close.
fn serve(shared: &Shared, mut conn: TcpStream) {
    let Some((method, path)) = read_head(&mut conn) else { return };
    let (file, nth) = {
        let mut st = shared.lock();
        let nth = if method == "GET" {
            let n = st.gets.entry(path.clone()).or_insert(0);
            *n += 1;
            *n
        } else {
            0
        };
        (st.files.get(&path).cloned(), nth)
    };
    let record = |status: u16, complete: bool| {
        shared.lock().log.push(Request { method: method.clone(), path: path.clone(), status, complete });
    };
    let (body, behaviour) = match file {
        Some((_, Behaviour::Missing)) | None => {
            let msg = b"404 Not Found\n";
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                msg.len()
            );
            let ok = conn.write_all(head.as_bytes()).is_ok() && (method == "HEAD" || conn.write_all(msg).is_ok());
            record(404, ok);
            return;
        }
        Some(f) => f,
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if conn.write_all(head.as_bytes()).is_err() {
        record(200, false);
        return;
    }
    if method == "HEAD" {
        record(200, true);
        return;
    }
    let count = |n: usize| *shared.lock().sent.entry(path.clone()).or_insert(0) += n;
    let complete = match behaviour {
        Behaviour::Missing => unreachable!("answered above"),
        Behaviour::Normal => {
            let ok = conn.write_all(&body).is_ok();
            if ok {
                count(body.len());
            }
            ok
        }
        Behaviour::TruncateFirst(n) if nth <= n => {
            // Half the body (at least one byte, never all of it), then the connection closes
            // with the announced length unmet.
            let part = (body.len() / 2).clamp(1, body.len().saturating_sub(1).max(1));
            if conn.write_all(&body[..part]).is_ok() {
                count(part);
            }
            let _ = conn.flush();
            false
        }
        Behaviour::TruncateFirst(_) => {
            let ok = conn.write_all(&body).is_ok();
            if ok {
                count(body.len());
            }
            ok
        }
        Behaviour::Slow { chunk, every } => {
            let mut ok = true;
            for (i, part) in body.chunks(chunk.max(1)).enumerate() {
                if i > 0 && !shared.pace(every) {
                    ok = false;
                    break;
                }
                if conn.write_all(part).is_err() || conn.flush().is_err() {
                    ok = false;
                    break;
                }
                count(part.len());
            }
            ok
        }
    };
    record(200, complete);
    let _ = conn.shutdown(std::net::Shutdown::Both);
}
