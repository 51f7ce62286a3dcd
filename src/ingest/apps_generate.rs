//! A deterministic generator of app catalogues in the CSV form of Kaggle's `AppleStore.csv` (17
//! columns, the first an unnamed row index; strings quoted, numbers not), for the quickstart and
//! tests: the project does not ship the Kaggle file.
//!
//! The catalogue starts with [`FAMOUS`], well-known apps with the names, genres and rating counts
//! they have in the real data set (so the default `Book+Music` ranking reads the same: Pandora,
//! Spotify, Shazam, ...), followed by invented apps whose names are drawn from word lists, in the
//! data set's genres and proportions, with a skewed (Pareto-like) number of ratings. Some names
//! carry a tagline after ` - ` or `: `, as real ones do.

use std::io::{self, Write};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Well-known apps: (id, track_name, prime_genre, rating_count_tot, user_rating, price), as in the
/// July 2017 data set.
pub const FAMOUS: &[(&str, &str, &str, u64, f64, f64)] = &[
    ("284035177", "Pandora - Music & Radio", "Music", 1_126_879, 4.0, 0.0),
    ("324684580", "Spotify Music", "Music", 878_563, 4.5, 0.0),
    ("284993459", "Shazam - Discover music, artists, videos & lyrics", "Music", 402_925, 4.0, 0.0),
    ("290638154", "iHeartRadio – Free Music & Radio Stations", "Music", 293_228, 4.0, 0.0),
    ("302584613", "Kindle – Read eBooks, Magazines & Textbooks", "Book", 252_076, 3.5, 0.0),
    ("336353151", "SoundCloud - Music & Audio", "Music", 135_744, 4.0, 0.0),
    ("421254504", "Magic Piano by Smule", "Music", 131_695, 4.5, 0.0),
    ("509993510", "Smule Sing!", "Music", 119_316, 4.5, 0.0),
    ("418987775", "TuneIn Radio - MLB NBA Audiobooks Podcasts Music", "Music", 110_420, 4.5, 0.0),
    ("510855668", "Amazon Music", "Music", 106_235, 4.5, 0.0),
    ("379693831", "Audible – audio books, original series & podcasts", "Book", 105_274, 4.5, 0.0),
    ("284882215", "Facebook", "Social Networking", 2_974_676, 3.5, 0.0),
    ("389801252", "Instagram", "Photo & Video", 2_161_558, 4.5, 0.0),
    ("529479190", "Clash of Clans", "Games", 2_130_805, 4.5, 0.0),
    ("553834731", "Candy Crush Saga", "Games", 961_794, 4.5, 0.0),
    ("343200656", "Angry Birds", "Games", 824_451, 4.5, 0.0),
    ("333903271", "Twitter", "News", 354_058, 3.5, 0.0),
    ("363590051", "Netflix", "Entertainment", 308_844, 3.5, 0.0),
    ("447188370", "Snapchat", "Photo & Video", 323_905, 2.5, 0.0),
    ("310633997", "WhatsApp Messenger", "Social Networking", 287_589, 4.5, 0.0),
    ("544007664", "YouTube - Watch Videos, Music, and Live Streams", "Photo & Video", 278_166, 3.0, 0.0),
    ("323229106", "Waze - GPS Navigation, Maps & Real-time Traffic", "Navigation", 345_046, 4.5, 0.0),
    ("585027354", "Google Maps - Navigation & Transit", "Navigation", 154_911, 4.5, 0.0),
    ("281796108", "Evernote - stay organized", "Productivity", 161_065, 4.0, 0.0),
];

/// The names [`FAMOUS`] apps are mentioned by (their `track_name` cut at the tagline): what the
/// demo posts mention now and then.
pub const FAMOUS_NAMES: &[&str] = &[
    "Pandora",
    "Spotify Music",
    "Shazam",
    "iHeartRadio",
    "Kindle",
    "SoundCloud",
    "Magic Piano by Smule",
    "Smule Sing!",
    "TuneIn Radio",
    "Amazon Music",
    "Audible",
    "Facebook",
    "Instagram",
    "Clash of Clans",
    "Candy Crush Saga",
    "Angry Birds",
    "Twitter",
    "Netflix",
    "Snapchat",
    "WhatsApp Messenger",
    "YouTube",
    "Waze",
    "Google Maps",
    "Evernote",
];

/// Genres with their share of the real data set (in ‰, summing to 1000).
const GENRES: &[(&str, u32)] = &[
    ("Games", 537),
    ("Entertainment", 74),
    ("Education", 63),
    ("Photo & Video", 48),
    ("Utilities", 35),
    ("Health & Fitness", 25),
    ("Productivity", 25),
    ("Social Networking", 23),
    ("Lifestyle", 20),
    ("Music", 19),
    ("Shopping", 17),
    ("Sports", 16),
    ("Book", 16),
    ("Finance", 15),
    ("Travel", 11),
    ("News", 10),
    ("Weather", 10),
    ("Reference", 9),
    ("Food & Drink", 9),
    ("Business", 8),
    ("Navigation", 6),
    ("Medical", 3),
    ("Catalogs", 1),
];

const FIRST: &[&str] = &[
    "Pixel",
    "Super",
    "Daily",
    "Magic",
    "Smart",
    "Tiny",
    "Happy",
    "Dragon",
    "Galaxy",
    "Word",
    "Puzzle",
    "Photo",
    "Budget",
    "Sleep",
    "Zen",
    "Rocket",
    "Ocean",
    "Candy",
    "City",
    "Farm",
    "Ninja",
    "Zombie",
    "Radio",
    "Beat",
    "Story",
    "Chess",
    "Solitaire",
    "Color",
    "Recipe",
    "Yoga",
    "Run",
    "Learn",
    "Quick",
    "Pocket",
    "Royal",
    "Lucky",
    "Wild",
];
const SECOND: &[&str] = &[
    "Quest", "Blast", "Studio", "Planner", "Tracker", "Hero", "Saga", "Mania", "Master", "Lab", "World", "Journey",
    "Camera", "Editor", "Coach", "Diary", "Scanner", "Player", "Tuner", "Reader", "Wars", "Run", "Jump", "Match",
    "Kingdom", "Garden", "Notes", "Timer", "Radar", "Maker", "Books", "Piano", "Drums", "Dash", "Rush", "Island",
];
const TAGLINES: &[&str] = &[
    "Free",
    "Best Puzzle Game",
    "Track Your Day",
    "HD Edition",
    "Pro",
    "Learn Fast",
    "Music & Radio",
    "Photo Editor",
    "Stay Organized",
    "Fun for Kids",
    "Offline Maps",
    "Relax & Sleep",
];

/// The data set's header, 17 columns.
pub const HEADER: &str = r#""","id","track_name","size_bytes","currency","price","rating_count_tot","rating_count_ver","user_rating","user_rating_ver","ver","cont_rating","prime_genre","sup_devices.num","ipadSc_urls.num","lang.num","vpp_lic""#;

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A number as the data set writes it: `0` for zero, `4.5`, `3.99`.
fn num(x: f64) -> String {
    if x == x.trunc() {
        format!("{}", x as u64)
    } else {
        format!("{x}")
    }
}

// One argument per CSV column group the generator varies: a struct would only restate the
// column list that `row` writes.
#[allow(clippy::too_many_arguments)]
fn row(
    index: usize,
    id: &str,
    name: &str,
    genre: &str,
    ratings: u64,
    rating: f64,
    price: f64,
    rng: &mut StdRng,
) -> String {
    let size: u64 = rng.gen_range(5_000_000..400_000_000);
    let ver = format!("{}.{}.{}", rng.gen_range(1..12), rng.gen_range(0..10), rng.gen_range(0..20));
    let cont = ["4+", "9+", "12+", "17+"][rng.gen_range(0..4)];
    let rating_ver = (rng.gen_range(0..=10) as f64) / 2.0;
    [
        quoted(&index.to_string()),
        quoted(id),
        quoted(name),
        size.to_string(),
        quoted("USD"),
        num(price),
        ratings.to_string(),
        (ratings / rng.gen_range(2..200)).to_string(),
        num(rating),
        num(rating_ver),
        quoted(&ver),
        quoted(cont),
        quoted(genre),
        rng.gen_range(24..48).to_string(),
        rng.gen_range(0..6).to_string(),
        rng.gen_range(1..30).to_string(),
        "1".to_string(),
    ]
    .join(",")
}

/// Writes a catalogue of `apps` apps (at least the [`FAMOUS`] ones) in the 17-column form:
/// the same `seed` gives the same file. Invented apps get ids from 1,100,000,000 up (the real data
/// set's are below), names that are unique, and fewer ratings than the famous apps of their genre.
pub fn write_catalogue(out: &mut impl Write, apps: usize, seed: u64) -> io::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    writeln!(out, "{HEADER}")?;
    let mut index = 0;
    for &(id, name, genre, ratings, rating, price) in FAMOUS {
        index += 1;
        writeln!(out, "{}", row(index, id, name, genre, ratings, rating, price, &mut rng))?;
    }
    let mut names = std::collections::HashSet::new();
    while index < apps {
        let base = format!("{} {}", FIRST[rng.gen_range(0..FIRST.len())], SECOND[rng.gen_range(0..SECOND.len())]);
        // Numbered sequels keep invented names unique.
        let mut name = base.clone();
        let mut n = 2;
        while !names.insert(name.clone()) {
            name = format!("{base} {n}");
            n += 1;
        }
        let shown = match rng.gen_range(0..10) {
            0..=2 => format!("{name} - {}", TAGLINES[rng.gen_range(0..TAGLINES.len())]),
            3 => format!("{name}: {}", TAGLINES[rng.gen_range(0..TAGLINES.len())]),
            _ => name,
        };
        let mut pick = rng.gen_range(0..1000);
        let genre = GENRES
            .iter()
            .find(|(_, share)| {
                let hit = pick < *share;
                pick = pick.saturating_sub(*share);
                hit
            })
            .map_or("Games", |(g, _)| g);
        // Pareto-like: most apps have few ratings, a few have many (but under the famous ones).
        let u: f64 = rng.gen_range(0.0001..1.0);
        let ratings = ((1.0 / u.powf(1.6)) as u64).min(99_000);
        let rating = (rng.gen_range(0..=10) as f64) / 2.0;
        let price = if rng.gen_bool(0.55) { 0.0 } else { [0.99, 1.99, 2.99, 4.99, 9.99][rng.gen_range(0..5)] };
        index += 1;
        let id = (1_100_000_000 + index).to_string();
        writeln!(out, "{}", row(index, &id, &shown, genre, ratings, rating, price, &mut rng))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::apps::{split_row, Layout, Split};

    #[test]
    fn generated_catalogues_read_back_and_are_deterministic() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_catalogue(&mut a, 500, 7).expect("in memory");
        write_catalogue(&mut b, 500, 7).expect("in memory");
        assert_eq!(a, b);
        let text = String::from_utf8(a).expect("UTF-8");
        let mut lines = text.lines();
        let Ok(Split::Row(header)) = split_row(lines.next().expect("header").as_bytes()) else { panic!("header") };
        let layout = Layout::from_header(&header).expect("the data set's header");
        let mut ids = std::collections::HashSet::new();
        let mut n = 0;
        for line in lines {
            let Ok(Split::Row(fields)) = split_row(line.as_bytes()) else { panic!("row {line}") };
            let app = layout.app(&fields).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(ids.insert(app.id.clone()), "ids are unique");
            n += 1;
        }
        assert_eq!(n, 500);
        assert!(text.contains("\"Spotify Music\""));
    }
}
