//! A generator of realistic hourly pageview dumps, deterministic for a seed.
//!
//! Shape, after the real Wikimedia hourly files: domains get Zipf-distributed shares of the lines
//! (`en` ≫ `de` ≫ `ja` ...), and within a domain the views of the title of popularity rank `r` are
//! about `top / r` (Zipf with exponent 1) times some noise, so a few titles have huge counts and
//! most of the long tail has 1 to 3 views. Every line of an hour is a distinct `(domain, title)`.
//!
//! Titles are built from a vocabulary (ASCII, non-ASCII UTF-8, punctuation) by writing the title
//! number in bijective base-|vocabulary| — one word per digit — so distinct numbers give distinct
//! titles and tail titles are longer than head titles; some get a namespace (`Talk:`, `File:`
//! ... `.jpg`) or a disambiguation suffix. A title keeps its number across hours; half of the
//! tail is replaced by new titles every hour, as real tails churn.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dump::file_name_for_hour;

/// Domain codes in order of traffic; further domains are named `x<N>`.
const DOMAINS: &[&str] = &[
    "en",
    "de",
    "ja",
    "es",
    "fr",
    "ru",
    "it",
    "zh",
    "pt",
    "pl",
    "en.m",
    "de.m",
    "ja.m",
    "es.m",
    "fr.m",
    "ru.m",
    "nl",
    "commons.m",
    "sv",
    "uk",
    "fa",
    "ar",
    "tr",
    "id",
    "vi",
    "ko",
    "he",
    "cs",
    "fi",
    "hu",
    "no",
    "da",
    "ro",
    "el",
    "www.wd",
];

/// Title words. None contains `_` (the word separator), `:` (namespaces) or `(` (suffixes), which
/// keeps titles of distinct numbers distinct.
const WORDS: &[&str] = &[
    "History",
    "List",
    "of",
    "the",
    "United",
    "States",
    "World",
    "War",
    "II",
    "Album",
    "Film",
    "Season",
    "Episode",
    "Football",
    "Club",
    "Election",
    "Music",
    "River",
    "Mountain",
    "Island",
    "Station",
    "Church",
    "Battle",
    "Party",
    "University",
    "Museum",
    "Bridge",
    "Street",
    "Park",
    "Lake",
    "Castle",
    "Empire",
    "Kingdom",
    "Republic",
    "King",
    "Queen",
    "John",
    "Smith",
    "Maria",
    "Anna",
    "Peter",
    "Paris",
    "London",
    "Berlin",
    "Tokyo",
    "Rome",
    "New",
    "York",
    "Old",
    "North",
    "South",
    "East",
    "West",
    "Great",
    "Little",
    "Saint",
    "Red",
    "Blue",
    "Black",
    "White",
    "Green",
    "Golden",
    "Star",
    "Moon",
    "Sun",
    "Night",
    "Day",
    "Year",
    "2024",
    "2025",
    "2026",
    "1999",
    "1984",
    "21st",
    "Century",
    "Cup",
    "League",
    "Championship",
    "Grand",
    "Prix",
    "Olympic",
    "Games",
    "Tour",
    "Live",
    "Love",
    "Song",
    "Band",
    "Book",
    "Novel",
    "Series",
    "Game",
    "Software",
    "Linux",
    "Python",
    "C++",
    "AC/DC",
    "Don't",
    "Mr.",
    "St.",
    "&",
    "Hello!",
    "What?",
    "Jean-Paul",
    "O'Brien",
    "%22Quoted%22",
    "3.14",
    "Zürich",
    "München",
    "São",
    "Paulo",
    "København",
    "Kraków",
    "Ελλάδα",
    "Москва",
    "Россия",
    "東京",
    "日本",
    "北京",
    "서울",
    "القاهرة",
    "עברית",
    "Café",
    "Naïve",
    "Ærø",
    "Ñandú",
    "Ōsaka",
    "Þór",
    "İstanbul",
    "Việt",
    "Nam",
    "Łódź",
    "Ça",
    "Über",
    "Éire",
];

/// Namespaces a title may have (`File:` titles also end in `.jpg`).
const NAMESPACES: &[&str] = &["Talk:", "Category:", "File:", "User:", "Special:", "Wikipedia:", "Template:"];

/// Disambiguation suffixes a title may have.
const SUFFIXES: &[&str] = &["_(film)", "_(album)", "_(band)", "_(disambiguation)", "_(2026_film)", "_(TV_series)"];

/// Zipf exponent of the domains' shares of the lines.
const DOMAIN_EXPONENT: f64 = 1.1;
/// Views of the first domain's `Main_Page` in an hour with [`REAL_LINES`] lines (enwiki's is in the
/// 100k-300k range); scaled with the number of lines, so smaller dumps keep the same shape.
const TOP_VIEWS: f64 = 250_000.0;
/// Lines of a real hourly dump of all Wikimedia projects, about (2024-2026 files).
const REAL_LINES: f64 = 6_000_000.0;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpSpec {
    /// Lines (distinct `(domain, title)` pairs) per hour.
    pub lines: u64,
    /// Number of domains.
    pub domains: usize,
    /// Random seed: the same spec gives the same files, byte for byte.
    pub seed: u64,
}

/// The code of domain `i` (0 is the busiest).
pub fn domain_code(i: usize) -> String {
    DOMAINS.get(i).map_or_else(|| format!("x{i}"), |d| (*d).to_string())
}

/// Zipf weight of domain `i`.
fn domain_weight(i: usize) -> f64 {
    1.0 / ((i + 1) as f64).powf(DOMAIN_EXPONENT)
}

/// Lines per domain: Zipf shares of `lines` summing to exactly `lines`.
pub fn domain_lines(lines: u64, domains: usize) -> Vec<u64> {
    let total: f64 = (0..domains).map(domain_weight).sum();
    let mut shares: Vec<u64> = (0..domains).map(|i| (lines as f64 * domain_weight(i) / total).floor() as u64).collect();
    let rest = lines - shares.iter().sum::<u64>();
    if let Some(first) = shares.first_mut() {
        *first += rest;
    }
    shares
}

/// SplitMix64: a fast, well-mixed hash of a `u64`, for per-title choices that must not depend on
/// the order of generation.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Appends the title number `id` (at least 1) of domain `domain` to `out`. Distinct `id`s give
/// distinct titles; number 0 is `Main_Page`.
pub fn title(domain: usize, id: u64, out: &mut String) {
    if id == 0 {
        out.push_str("Main_Page");
        return;
    }
    let h = mix(id ^ ((domain as u64) << 48));
    let namespace = h.is_multiple_of(10).then(|| NAMESPACES[(h >> 8) as usize % NAMESPACES.len()]);
    out.push_str(namespace.unwrap_or(""));
    // Each domain sees the vocabulary rotated, so domains do not all share the same titles.
    let v = WORDS.len() as u64;
    let (mut n, mut first) = (id, true);
    while n > 0 {
        n -= 1;
        if !first {
            out.push('_');
        }
        first = false;
        out.push_str(WORDS[((n % v + domain as u64 * 7) % v) as usize]);
        n /= v;
    }
    match namespace {
        Some("File:") => out.push_str(".jpg"),
        Some(_) => {}
        None if (h >> 16).is_multiple_of(12) => out.push_str(SUFFIXES[(h >> 24) as usize % SUFFIXES.len()]),
        None => {}
    }
}

/// Writes the dump of hour number `hour` (0 for the first) to `out`; returns the lines written
/// (always `spec.lines`).
pub fn write_hour<W: Write>(spec: &DumpSpec, hour: u64, out: &mut W) -> std::io::Result<u64> {
    let mut line = String::with_capacity(256);
    let mut written = 0;
    for (d, &n) in domain_lines(spec.lines, spec.domains).iter().enumerate() {
        let code = domain_code(d);
        let mut rng = StdRng::seed_from_u64(mix(spec.seed ^ mix(hour ^ mix(d as u64))));
        let top = TOP_VIEWS * spec.lines as f64 / REAL_LINES * domain_weight(d);
        for rank in 1..=n {
            // Tail titles (beyond the top tenth): half of them are new each hour, numbered past
            // every title of hour 0 so they collide with none of this hour's.
            let id = if hour > 0 && rank > n / 10 && rng.gen::<bool>() { rank - 1 + hour * n } else { rank - 1 };
            let expected = top / rank as f64;
            let views = ((expected * rng.gen_range(0.6..1.4) + rng.gen::<f64>() * 2.5) as u64).max(1);
            line.clear();
            line.push_str(&code);
            line.push(' ');
            title(d, id, &mut line);
            line.push(' ');
            line.push_str(itoa(views, &mut [0; 20]));
            line.push_str(" 0\n");
            out.write_all(line.as_bytes())?;
            written += 1;
        }
    }
    Ok(written)
}

/// Formats `n` in decimal into `buf` (faster than `write!` on the hot path).
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ASCII digits")
}

/// Writes `hours` hourly dumps into `dir` (created if missing), the first covering the hour
/// starting at `start_ms`, each named like Wikimedia's (`pageviews-YYYYMMDD-HH0000[.gz]`);
/// returns the files written.
pub fn write_dumps(
    spec: &DumpSpec,
    dir: &Path,
    start_ms: i64,
    hours: u64,
    gzip: bool,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for h in 0..hours {
        let path = dir.join(file_name_for_hour(start_ms + h as i64 * 3_600_000, gzip));
        let file = BufWriter::with_capacity(1 << 20, File::create(&path)?);
        if gzip {
            // Level 6 is gzip's default, which Wikimedia's files use.
            let mut gz =
                BufWriter::with_capacity(1 << 20, flate2::write::GzEncoder::new(file, flate2::Compression::new(6)));
            write_hour(spec, h, &mut gz)?;
            gz.into_inner().map_err(|e| e.into_error())?.finish()?.flush()?;
        } else {
            let mut file = file;
            write_hour(spec, h, &mut file)?;
            file.flush()?;
        }
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use super::*;
    use crate::ingest::dump::parse_line;

    fn hour(spec: &DumpSpec, h: u64) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(write_hour(spec, h, &mut out).expect("write to a Vec"), spec.lines);
        out
    }

    const SPEC: DumpSpec = DumpSpec { lines: 50_000, domains: 8, seed: 42 };

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(hour(&SPEC, 0), hour(&SPEC, 0));
        assert_ne!(hour(&SPEC, 0), hour(&DumpSpec { seed: 43, ..SPEC }, 0));
        assert_ne!(hour(&SPEC, 0), hour(&SPEC, 1));
    }

    #[test]
    fn lines_are_valid_and_distinct_with_zipf_shape() {
        for h in [0, 3] {
            let text = hour(&SPEC, h);
            let mut seen = HashSet::new();
            let mut per_domain: BTreeMap<&str, u64> = BTreeMap::new();
            let mut views = Vec::new();
            let (mut non_ascii, mut punct) = (0, 0);
            for raw in text.split_inclusive(|&b| b == b'\n') {
                let l = parse_line(raw).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(raw)));
                assert!(seen.insert((l.domain, l.title)), "duplicate {} {}", l.domain, l.title);
                *per_domain.entry(l.domain).or_default() += 1;
                views.push(l.views);
                non_ascii += u64::from(!l.title.is_ascii());
                punct += u64::from(l.title.contains(['(', ':', '/', '\'', '&', '!', '?', '%', '.', '+']));
            }
            assert_eq!(seen.len() as u64, SPEC.lines);
            // Domains: en ≫ de ≫ ja ..., every one present.
            let counts: Vec<u64> = (0..SPEC.domains).map(|d| per_domain[domain_code(d).as_str()]).collect();
            assert!(counts.windows(2).all(|w| w[0] > w[1]), "{counts:?}");
            assert!(counts[0] > 4 * counts[SPEC.domains - 1], "{counts:?}");
            // Views: a long tail of 1-3, a few huge.
            views.sort_unstable();
            let small = views.iter().filter(|&&v| v <= 3).count() as f64 / views.len() as f64;
            assert!(small > 0.7, "share of views <= 3: {small}");
            let max = *views.last().expect("lines");
            assert!(max > 1000 * views[views.len() / 2], "max {max}, median {}", views[views.len() / 2]);
            assert!(non_ascii > 100 && punct > 100, "non-ASCII {non_ascii}, punctuation {punct}");
        }
    }

    #[test]
    fn titles_are_distinct_and_vary_in_length() {
        let mut seen = HashSet::new();
        let mut lengths = HashSet::new();
        for id in 0..200_000 {
            let mut t = String::new();
            title(2, id, &mut t);
            assert!(!t.contains(' ') && !t.is_empty(), "{t:?}");
            lengths.insert(t.chars().count());
            assert!(seen.insert(t), "title {id} repeats");
        }
        assert!(lengths.len() > 30, "{} distinct lengths", lengths.len());
    }

    #[test]
    fn domain_lines_sum_exactly() {
        for (lines, domains) in [(0, 3), (7, 3), (1_000_003, 20), (6_000_000, 50)] {
            let shares = domain_lines(lines, domains);
            assert_eq!(shares.len(), domains);
            assert_eq!(shares.iter().sum::<u64>(), lines);
        }
        assert_eq!(domain_code(0), "en");
        assert_eq!(domain_code(1), "de");
        assert_eq!(domain_code(100), "x100");
    }

    #[test]
    fn writes_named_gzip_and_plain_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = DumpSpec { lines: 1000, domains: 3, seed: 1 };
        let start = crate::ingest::dump::parse_hour("2026-11-23T22").expect("hour");
        let files = write_dumps(&spec, dir.path(), start, 3, true).expect("write");
        let names: Vec<_> = files.iter().map(|f| f.file_name().expect("name").to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            // Each names the end of its hour: 22:00-23:00 is `...-230000`.
            ["pageviews-20261123-230000.gz", "pageviews-20261124-000000.gz", "pageviews-20261124-010000.gz"]
        );
        let mut input = crate::ingest::dump::open(&files[1]).expect("open");
        assert!(input.gzip);
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut input.reader, &mut text).expect("read");
        assert_eq!(text, hour(&spec, 1));
        let plain = write_dumps(&spec, &dir.path().join("plain"), start, 1, false).expect("write");
        assert_eq!(std::fs::read(&plain[0]).expect("read"), hour(&spec, 0));
    }
}
