//! Releasing dead members of a consumer group: a minimal client of the group coordinator's own
//! protocol (FindCoordinator, JoinGroup, SyncGroup, LeaveGroup, in their first, non-flexible
//! versions), used by the membership watchdog. librdkafka has no call for "this member id is
//! dead, remove it"; the Kafka protocol does: a LeaveGroup naming it.
//!
//! Why JoinGroup and SyncGroup first: tansu 0.6.0 can keep a *phantom leader*. When a member's
//! own heartbeat reaches the coordinator after that member's session expired (after a broker
//! pause longer than the session timeout, the heartbeats queued in the socket arrive at once),
//! the coordinator drops the member but keeps its id as the group's leader; every member that
//! joins afterwards is told to wait for that leader's assignment, which never comes. Joining
//! under the phantom's id makes us that leader; a SyncGroup with no assignments completes the
//! round; the LeaveGroup then leaves the group with no leader, and the next real member to join
//! leads and assigns. On Kafka, the JoinGroup of an id the coordinator does not know is refused
//! (`UNKNOWN_MEMBER_ID`) and the LeaveGroup of a dead member's id just removes it a session
//! timeout early: harmless either way.
//!
//! Plain TCP only: with TLS or SASL configured in `kafka.consumer`, releasing is skipped (the
//! watchdog's rejoin still runs).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Errors of talking to the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed or timed out.
    #[error("coordinator I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The answer could not be read.
    #[error("malformed answer from the broker: {0}")]
    Malformed(&'static str),
    /// The broker refused with this error code.
    #[error("the broker answered error code {0}")]
    Refused(i16),
    /// No bootstrap server answered.
    #[error("no broker answered at {0}")]
    Unreachable(String),
}

/// Result of coordinator calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

const FIND_COORDINATOR: i16 = 10;
const JOIN_GROUP: i16 = 11;
const LEAVE_GROUP: i16 = 13;
const SYNC_GROUP: i16 = 14;
/// `UNKNOWN_MEMBER_ID`: the coordinator does not know the id (Kafka, for a dead member).
pub const UNKNOWN_MEMBER_ID: i16 = 25;

/// Request body encoding, Kafka's classic (non-flexible) wire format.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
        self.i16(len);
        self.0.extend_from_slice(&s.as_bytes()[..len as usize]);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.i32(i32::try_from(b.len()).unwrap_or(i32::MAX));
        self.0.extend_from_slice(b);
        self
    }
}

/// Response decoding.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Error::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().map_err(|_| Error::Malformed("i16"))?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().map_err(|_| Error::Malformed("i32"))?))
    }
    fn string(&mut self) -> Result<String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(String::new());
        }
        Ok(String::from_utf8_lossy(self.take(len as usize)?).into_owned())
    }
}

/// One connection to a broker.
struct Conn {
    stream: TcpStream,
    correlation: i32,
    client_id: String,
}

impl Conn {
    fn open(addr: &str, timeout: Duration, client_id: &str) -> Result<Self> {
        let sock = std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or(Error::Malformed("no address for the broker"))?;
        let stream = TcpStream::connect_timeout(&sock, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self { stream, correlation: 0, client_id: client_id.to_string() })
    }

    fn call(&mut self, api_key: i16, version: i16, body: &Writer) -> Result<Vec<u8>> {
        self.correlation += 1;
        let mut head = Writer::default();
        head.i16(api_key).i16(version).i32(self.correlation).string(&self.client_id);
        let size = i32::try_from(head.0.len() + body.0.len()).map_err(|_| Error::Malformed("request too large"))?;
        let mut frame = size.to_be_bytes().to_vec();
        frame.extend_from_slice(&head.0);
        frame.extend_from_slice(&body.0);
        self.stream.write_all(&frame)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(4..=16 << 20).contains(&len) {
            return Err(Error::Malformed("response size"));
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        let mut r = Reader(&buf);
        if r.i32()? != self.correlation {
            return Err(Error::Malformed("correlation id"));
        }
        Ok(r.0.to_vec())
    }
}

/// The consumer protocol's subscription metadata (version 0) for `topics`.
fn subscription(topics: &[String]) -> Vec<u8> {
    let mut w = Writer::default();
    w.i16(0).i32(topics.len() as i32);
    for t in topics {
        w.string(t);
    }
    w.bytes(&[]);
    w.0
}

/// What a release did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// The id was the group's (phantom) leader: joined, synced and left under it.
    LeaderReleased,
    /// The coordinator knew the id as a member: it left.
    Left,
    /// The coordinator did not know the id: nothing to release.
    Unknown,
}

/// Where to reach the group coordinator, and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    /// Bootstrap servers, `host:port` comma-separated.
    pub brokers: String,
    /// The consumer group.
    pub group: String,
    /// The client id to send.
    pub client_id: String,
    /// The group's session timeout, sent with the JoinGroup.
    pub session_timeout: Duration,
    /// Timeout of each connection and request.
    pub timeout: Duration,
}

fn coordinator(t: &Target) -> Result<Conn> {
    let mut last = None;
    for addr in t.brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let attempt = (|| {
            let mut c = Conn::open(addr, t.timeout, &t.client_id)?;
            let mut body = Writer::default();
            body.string(&t.group);
            let resp = c.call(FIND_COORDINATOR, 0, &body)?;
            let mut r = Reader(&resp);
            let err = r.i16()?;
            if err != 0 {
                return Err(Error::Refused(err));
            }
            let _node = r.i32()?;
            let host = r.string()?;
            let port = r.i32()?;
            let there = format!("{host}:{port}");
            // The bootstrap broker is the coordinator (one-broker clusters): keep the connection.
            if there == addr {
                return Ok(c);
            }
            Conn::open(&there, t.timeout, &t.client_id)
        })();
        match attempt {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Unreachable(t.brokers.clone())))
}

/// Releases `member` from the group of `target`, whose members subscribe to `topics` (see the
/// module docs).
pub fn release(target: &Target, member: &str, topics: &[String]) -> Result<Released> {
    let mut c = coordinator(target)?;
    let session = i32::try_from(target.session_timeout.as_millis()).unwrap_or(i32::MAX);
    let mut join = Writer::default();
    join.string(&target.group)
        .i32(session)
        .i32(session)
        .string(member)
        .string("consumer")
        .i32(1)
        .string("range")
        .bytes(&subscription(topics));
    let resp = c.call(JOIN_GROUP, 1, &join)?;
    let mut r = Reader(&resp);
    let err = r.i16()?;
    let leader = if err == 0 {
        let generation = r.i32()?;
        let _protocol = r.string()?;
        let leader = r.string()?;
        let _me = r.string()?;
        if leader == member {
            // Leading the round: complete it with no assignments, so that it ends.
            let mut sync = Writer::default();
            sync.string(&target.group).i32(generation).string(member).i32(0);
            let resp = c.call(SYNC_GROUP, 0, &sync)?;
            let sync_err = Reader(&resp).i16()?;
            tracing::debug!(member, sync_err, "synced under a released member id");
        }
        leader == member
    } else {
        tracing::debug!(member, err, "join under a released member id refused");
        false
    };
    let mut leave = Writer::default();
    leave.string(&target.group).string(member);
    let resp = c.call(LEAVE_GROUP, 0, &leave)?;
    match Reader(&resp).i16()? {
        0 if leader => Ok(Released::LeaderReleased),
        0 => Ok(Released::Left),
        UNKNOWN_MEMBER_ID => Ok(Released::Unknown),
        e => Err(Error::Refused(e)),
    }
}

/// This process's current member id in `consumer`'s group, if it has one.
pub fn member_id<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
) -> Option<String> {
    use rdkafka::consumer::Consumer;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is a live client handle for as long as `consumer` is borrowed; librdkafka
    // returns a string it allocated (or null), which we copy and free with its own allocator.
    unsafe {
        let ptr = rdkafka::bindings::rd_kafka_memberid(rk);
        if ptr.is_null() {
            return None;
        }
        let id = std::ffi::CStr::from_ptr(ptr).to_string_lossy().into_owned();
        rdkafka::bindings::rd_kafka_mem_free(rk, ptr.cast());
        (!id.is_empty()).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_use_kafkas_classic_encoding() {
        let mut w = Writer::default();
        w.i16(11).i32(-1).string("ab").bytes(&[1, 2]);
        assert_eq!(w.0, vec![0, 11, 255, 255, 255, 255, 0, 2, b'a', b'b', 0, 0, 0, 2, 1, 2]);
        assert_eq!(subscription(&["t".into()]), vec![0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0]);
        let mut r = Reader(&w.0);
        assert_eq!((r.i16().ok(), r.i32().ok()), (Some(11), Some(-1)));
        assert_eq!(r.string().ok(), Some("ab".to_string()));
        assert_eq!(r.i32().ok(), Some(2));
        assert_eq!(r.take(2).ok(), Some(&[1u8, 2][..]));
        assert!(r.i16().is_err(), "reading past the end is an error, not a panic");
    }
}
