//! Pageview dumps and blacklist files: opening (gzip or plain, told apart by magic bytes), the
//! hour a dump covers, and line parsing with the reason a line is malformed.
//!
//! A dump line is `domain_code page_title count_views total_response_size`, space-separated, as
//! in <https://dumps.wikimedia.org/other/pageview_complete/readme.html> hourly files. The last
//! field is not used and not checked (Wikimedia writes 0 there since 2016).

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::NaiveDate;

use super::{Error, Result};

/// The two bytes every gzip member starts with (RFC 1952, ID1 ID2).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Read buffer size: large reads keep system calls and decompressor calls off the profile.
const BUF_SIZE: usize = 1 << 20;

/// Longest excerpt of a bad field quoted in a [`LineError`] (a corrupt file can have
/// megabyte-long "lines").
const MAX_QUOTE: usize = 40;

/// One valid dump line, borrowing from the line buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageviewLine<'a> {
    /// Wikimedia domain code, e.g. `en`, `de.m`, `commons.m`.
    pub domain: &'a str,
    /// Page title exactly as in the dump (underscores for spaces, percent-escapes kept).
    pub title: &'a str,
    /// Views in the hour; at least 1.
    pub views: u64,
}

/// One blacklist entry, borrowing from the line buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlacklistEntry<'a> {
    /// Domain code.
    pub domain: &'a str,
    /// Page title.
    pub title: &'a str,
}

/// Why a line is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// The line does not have the expected number of fields.
    FieldCount {
        /// Fields expected.
        expected: usize,
        /// Fields found.
        found: usize,
    },
    /// The views field is not a decimal integer (or does not fit 64 bits); holds an excerpt.
    ViewsNotNumber(String),
    /// The views field is 0 (a dump lists only pages that were viewed).
    ViewsZero,
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The domain field is empty (e.g. a line starting with a space).
    EmptyDomain,
    /// The title field is empty (e.g. two spaces in a row).
    EmptyTitle,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::FieldCount { expected, found: 0 } => write!(f, "empty line (expected {expected} fields)"),
            LineError::FieldCount { expected, found } => {
                write!(f, "expected {expected} space-separated fields, found {found}")
            }
            LineError::ViewsNotNumber(v) => write!(f, "views is not a positive integer: {v:?}"),
            LineError::ViewsZero => f.write_str("views is 0"),
            LineError::InvalidUtf8 => f.write_str("invalid UTF-8"),
            LineError::EmptyDomain => f.write_str("empty domain"),
            LineError::EmptyTitle => f.write_str("empty title"),
        }
    }
}

impl std::error::Error for LineError {}

/// `line` without its trailing `\n` or `\r\n`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn quote(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTE) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Parses a dump line (with or without its line ending).
pub fn parse_line(line: &[u8]) -> Result<PageviewLine<'_>, LineError> {
    let line = std::str::from_utf8(trim_eol(line)).map_err(|_| LineError::InvalidUtf8)?;
    let mut fields = line.split(' ');
    let (Some(domain), Some(title), Some(views), Some(_size), None) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        let found = if line.is_empty() { 0 } else { line.split(' ').count() };
        return Err(LineError::FieldCount { expected: 4, found });
    };
    if domain.is_empty() {
        return Err(LineError::EmptyDomain);
    }
    if title.is_empty() {
        return Err(LineError::EmptyTitle);
    }
    // `u64::from_str` would also take a leading `+`; a dump never has one.
    let views = match views.bytes().all(|b| b.is_ascii_digit()) {
        true => views.parse::<u64>().map_err(|_| LineError::ViewsNotNumber(quote(views)))?,
        false => return Err(LineError::ViewsNotNumber(quote(views))),
    };
    if views == 0 {
        return Err(LineError::ViewsZero);
    }
    Ok(PageviewLine { domain, title, views })
}

/// Parses a blacklist line `domain title` (fields separated by spaces or tabs): `Ok(None)` for a
/// blank line or a `#` comment.
pub fn parse_blacklist_line(line: &[u8]) -> Result<Option<BlacklistEntry<'_>>, LineError> {
    let line = std::str::from_utf8(trim_eol(line)).map_err(|_| LineError::InvalidUtf8)?.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut fields = line.split_ascii_whitespace();
    match (fields.next(), fields.next(), fields.next()) {
        (Some(domain), Some(title), None) => Ok(Some(BlacklistEntry { domain, title })),
        _ => Err(LineError::FieldCount { expected: 2, found: line.split_ascii_whitespace().count() }),
    }
}

/// Epoch milliseconds of `date` at `hour`:00 UTC, if both are valid.
fn hour_start_ms(year: i32, month: u32, day: u32, hour: u32) -> Option<i64> {
    Some(NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_millis())
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// The start (epoch ms, UTC) of the hour a dump covers, from a file name containing
/// `pageviews-YYYYMMDD-HH0000` (anywhere in the file name, not in the directories); `None` if the
/// name has no such part or names an impossible date or hour.
///
/// As in Wikimedia's dumps, the time in the name is the *end* of the hour counted:
/// `pageviews-20200101-150000.gz` holds 14:00-15:00 UTC, so its hour starts at 14:00.
pub fn hour_from_file_name(path: &Path) -> Option<i64> {
    const TAG: &str = "pageviews-";
    let name = path.file_name()?.to_string_lossy();
    name.match_indices(TAG).find_map(|(i, _)| {
        let rest = name[i + TAG.len()..].as_bytes();
        // YYYYMMDD-HHMMSS, then anything but another digit.
        if rest.len() < 15 || rest[8] != b'-' || rest.get(15).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        if digits(&rest[13..15])? != 0 || digits(&rest[11..13])? != 0 {
            return None;
        }
        let year = digits(&rest[0..4])? as i32;
        let end = hour_start_ms(year, digits(&rest[4..6])?, digits(&rest[6..8])?, digits(&rest[9..11])?)?;
        Some(end - HOUR_MS)
    })
}

/// One hour, in milliseconds.
const HOUR_MS: i64 = 3_600_000;

/// Parses an hour given as `YYYY-MM-DDTHH` (UTC) into epoch milliseconds.
pub fn parse_hour(s: &str) -> Result<i64> {
    let b = s.as_bytes();
    let parsed = (b.len() == 13 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T')
        .then(|| {
            let year = digits(&b[0..4])? as i32;
            hour_start_ms(year, digits(&b[5..7])?, digits(&b[8..10])?, digits(&b[11..13])?)
        })
        .flatten();
    parsed.ok_or_else(|| Error::BadHour(s.to_string()))
}

/// The Wikimedia file name of the dump of the hour starting at `ts_ms`:
/// `pageviews-YYYYMMDD-HH0000` naming the hour's *end*, plus `.gz` if `gzip`.
pub fn file_name_for_hour(ts_ms: i64, gzip: bool) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ts_ms + HOUR_MS).unwrap_or_default();
    format!("pageviews-{}{}", t.format("%Y%m%d-%H0000"), if gzip { ".gz" } else { "" })
}

/// Whether data starting with `prefix` is gzip-compressed.
pub fn is_gzip(prefix: &[u8]) -> bool {
    prefix.starts_with(&GZIP_MAGIC)
}

/// A reader that counts the bytes read through it into a shared counter (read by the progress
/// display while the reading thread owns the reader).
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An opened dump or blacklist file.
pub struct Input {
    /// Decompressed text.
    pub reader: Box<dyn BufRead + Send>,
    /// Whether the file is gzip-compressed.
    pub gzip: bool,
    /// Size of the file on disk in bytes.
    pub size: u64,
    /// Bytes of the file (compressed bytes for gzip) read so far.
    pub read: Arc<AtomicU64>,
}

/// Wraps `raw` (the file's bytes) into a line reader, decompressing if it starts with the gzip
/// magic. Multi-member gzip files (concatenated `.gz`) are read whole.
pub fn decode<R: Read + Send + 'static>(raw: R) -> std::io::Result<(Box<dyn BufRead + Send>, bool)> {
    let mut buf = BufReader::with_capacity(BUF_SIZE, raw);
    // A 1-byte file yields fewer than 2 bytes here; it is then (correctly) not gzip.
    let gzip = is_gzip(buf.fill_buf()?);
    Ok(if gzip {
        (Box::new(BufReader::with_capacity(BUF_SIZE, flate2::bufread::MultiGzDecoder::new(buf))), true)
    } else {
        (Box::new(buf), false)
    })
}

/// Opens `path`, detecting gzip by its magic bytes (not by its extension).
pub fn open(path: &Path) -> Result<Input> {
    let io = |source| Error::Io { path: path.display().to_string(), source };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let read = Arc::new(AtomicU64::new(0));
    let (reader, gzip) = decode(Counting { inner: file, count: read.clone() }).map_err(io)?;
    Ok(Input { reader, gzip, size, read })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).expect("valid test timestamp").timestamp_millis()
    }

    #[test]
    fn parses_a_valid_line() {
        let l = parse_line(b"de.m Z\xc3\xbcrich_(Stadt) 17 0\n").expect("valid");
        assert_eq!(l, PageviewLine { domain: "de.m", title: "Zürich_(Stadt)", views: 17 });
        let l = parse_line(b"en Main_Page 242332 0\r\n").expect("valid with CRLF");
        assert_eq!((l.domain, l.title, l.views), ("en", "Main_Page", 242332));
    }

    #[test]
    fn reports_each_kind_of_malformed_line() {
        let cases: &[(&[u8], LineError)] = &[
            (b"en Main_Page 5", LineError::FieldCount { expected: 4, found: 3 }),
            (b"en Main_Page 5 0 extra", LineError::FieldCount { expected: 4, found: 5 }),
            (b"", LineError::FieldCount { expected: 4, found: 0 }),
            (b"\n", LineError::FieldCount { expected: 4, found: 0 }),
            (b"en Main_Page five 0", LineError::ViewsNotNumber("five".into())),
            (b"en Main_Page -3 0", LineError::ViewsNotNumber("-3".into())),
            (b"en Main_Page +3 0", LineError::ViewsNotNumber("+3".into())),
            (b"en Main_Page  0", LineError::ViewsNotNumber("".into())),
            (b"en Main_Page 99999999999999999999999 0", LineError::ViewsNotNumber("99999999999999999999999".into())),
            (b"en Main_Page 0 0", LineError::ViewsZero),
            (b"en Main_\xff_Page 3 0", LineError::InvalidUtf8),
            (b" Main_Page 3 0", LineError::EmptyDomain),
            (b"en  3 0", LineError::EmptyTitle),
        ];
        for (line, want) in cases {
            assert_eq!(parse_line(line).as_ref(), Err(want), "{:?}", String::from_utf8_lossy(line));
        }
        assert_eq!(
            parse_line(b"en Main_Page 5").expect_err("3 fields").to_string(),
            "expected 4 space-separated fields, found 3"
        );
    }

    #[test]
    fn long_bad_fields_are_quoted_shortened() {
        let line = format!("en T {} 0", "x".repeat(1000));
        let msg = parse_line(line.as_bytes()).expect_err("bad views").to_string();
        assert!(msg.len() < 100, "{msg}");
    }

    #[test]
    fn parses_blacklist_lines() {
        assert_eq!(
            parse_blacklist_line(b"en Special:Search\n"),
            Ok(Some(BlacklistEntry { domain: "en", title: "Special:Search" }))
        );
        assert_eq!(parse_blacklist_line(b"  de.m\t-  \r\n"), Ok(Some(BlacklistEntry { domain: "de.m", title: "-" })));
        assert_eq!(parse_blacklist_line(b""), Ok(None));
        assert_eq!(parse_blacklist_line(b"   \n"), Ok(None));
        assert_eq!(parse_blacklist_line(b"# spam pages\n"), Ok(None));
        assert_eq!(parse_blacklist_line(b"en"), Err(LineError::FieldCount { expected: 2, found: 1 }));
        assert_eq!(parse_blacklist_line(b"en a b"), Err(LineError::FieldCount { expected: 2, found: 3 }));
        assert_eq!(parse_blacklist_line(b"en \xfe"), Err(LineError::InvalidUtf8));
    }

    #[test]
    fn hour_from_file_names() {
        // The name's time ends the hour (Wikimedia's format): 10:00 names 09:00-10:00.
        let h = ms("2026-11-23T09:00:00Z");
        for name in [
            "pageviews-20261123-100000.gz",
            "pageviews-20261123-100000",
            "/data/2026/2026-11/pageviews-20261123-100000.gz",
            "copy-of-pageviews-20261123-100000.txt",
        ] {
            assert_eq!(hour_from_file_name(Path::new(name)), Some(h), "{name}");
        }
        assert_eq!(hour_from_file_name(Path::new("pageviews-20240229-230000.gz")), Some(ms("2024-02-29T22:00:00Z")));
        // Midnight ends the last hour of the day before.
        assert_eq!(hour_from_file_name(Path::new("pageviews-20240301-000000.gz")), Some(ms("2024-02-29T23:00:00Z")));
        for ts in [ms("2024-02-29T23:00:00Z"), ms("2026-11-23T09:00:00Z")] {
            assert_eq!(hour_from_file_name(Path::new(&file_name_for_hour(ts, true))), Some(ts), "round trip");
        }
        for bad in [
            "dump.gz",
            "pageviews-20261123.gz",
            "pageviews-20261123-1000.gz",
            "pageviews-20261123-103000.gz",   // not on the hour
            "pageviews-20261123-240000.gz",   // hour 24
            "pageviews-20261323-100000.gz",   // month 13
            "pageviews-20230229-100000.gz",   // not a leap year
            "pageviews-20261123-1000001.gz",  // trailing digit
            "pageviews-2026x123-100000.gz",   // not digits
            "/x/pageviews-20261123-100000/y", // only the file name counts
        ] {
            assert_eq!(hour_from_file_name(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn hour_arguments() {
        assert_eq!(parse_hour("2026-11-23T10").expect("valid"), ms("2026-11-23T10:00:00Z"));
        for bad in ["2026-11-23", "2026-11-23T1", "2026-11-23 10", "2026-11-23T24", "2026-02-30T00", "2026-11-23T10:00"]
        {
            assert!(matches!(parse_hour(bad), Err(Error::BadHour(_))), "{bad}");
        }
    }

    #[test]
    fn file_names_round_trip() {
        let h = ms("2026-01-02T03:00:00Z");
        // 03:00-04:00 is named by its end.
        assert_eq!(file_name_for_hour(h, true), "pageviews-20260102-040000.gz");
        assert_eq!(hour_from_file_name(Path::new(&file_name_for_hour(h, false))), Some(h));
    }

    fn read_all(mut r: Box<dyn BufRead + Send>) -> String {
        let mut s = String::new();
        r.read_to_string(&mut s).expect("read");
        s
    }

    #[test]
    fn detects_gzip_by_magic_bytes_not_by_name() {
        let text = "en Main_Page 3 0\nde Berlin 2 0\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("compress");
        let gz = gz.finish().expect("finish");
        let (r, is_gz) = decode(std::io::Cursor::new(gz.clone())).expect("decode gz");
        assert!(is_gz);
        assert_eq!(read_all(r), text);
        let (r, is_gz) = decode(std::io::Cursor::new(text.as_bytes().to_vec())).expect("decode plain");
        assert!(!is_gz);
        assert_eq!(read_all(r), text);
        // Concatenated members (as `cat a.gz b.gz` makes) are read whole.
        let (r, _) = decode(std::io::Cursor::new([gz.clone(), gz].concat())).expect("decode multi");
        assert_eq!(read_all(r), format!("{text}{text}"));
        for tiny in [&b""[..], b"\x1f"] {
            let (_, is_gz) = decode(std::io::Cursor::new(tiny.to_vec())).expect("decode tiny");
            assert!(!is_gz);
        }

        // Through `open`, with misleading extensions, counting the bytes on disk.
        let dir = tempfile::tempdir().expect("tempdir");
        let plain_gz = dir.path().join("plain.gz");
        std::fs::write(&plain_gz, text).expect("write");
        let mut input = open(&plain_gz).expect("open");
        assert!(!input.gzip);
        let mut s = String::new();
        input.reader.read_to_string(&mut s).expect("read");
        assert_eq!(s, text);
        assert_eq!(input.read.load(Ordering::Relaxed), input.size);
        assert!(matches!(open(&dir.path().join("missing")), Err(Error::Io { .. })));
    }
}
