//! Mention matching: an app's name, and the word index that finds every app a post mentions.
//!
//! - An app's **name** is its `track_name` cut at the first ` - `, ` – `, ` — `, `: ` or ` | `
//!   and trimmed ("Pandora - Music & Radio" -> "Pandora"; "Spotify Music" stays).
//! - A post **mentions** an app when the post's Unicode words ([`crate::ops::text::for_each_word`],
//!   UAX #29), lower-cased, contain the name's words, lower-cased, as a contiguous run: `#Spotify`
//!   and "spotify music!" mention "Spotify", "spotify music!" mentions "Spotify Music" too, and
//!   "Spotifyish" mentions neither. A name without words (all punctuation or emoji) is never
//!   mentioned.
//!
//! [`Matcher`] is a trie over words: words are numbered once ([`Matcher`] interns them), each node
//! is a word sequence, and an edge is one lookup of (node, next word): an array index from the
//! root, a hash lookup further down. A post costs one lookup per word (its number; a word in no
//! name ends there) plus one per step along a name it starts: never a scan of the catalogue. Each
//! app sits at the node of its whole name, so names that share their first words ("Magic Piano",
//! "Magic Piano by Smule") share the path.
//!
//! A post's words never straddle ASCII whitespace (UAX #29 always breaks there, see
//! [`for_each_word`]), so [`Matcher::find`] cuts the post there and numbers each piece's words
//! once per [`Scratch`]: a piece seen before (posts repeat their words) costs one hash lookup, not
//! a word segmentation, lower-casing and lookup per word.

use std::sync::atomic::{AtomicU64, Ordering};

use hashbrown::HashMap;

use crate::ops::text::for_each_word;

/// Where an app's `track_name` is cut to give its name.
pub const NAME_SEPARATORS: [&str; 5] = [" - ", " – ", " — ", ": ", " | "];

/// An app's name: its `track_name` cut at the first of [`NAME_SEPARATORS`], trimmed.
pub fn app_name(track_name: &str) -> &str {
    let cut = NAME_SEPARATORS.iter().filter_map(|s| track_name.find(s)).min().unwrap_or(track_name.len());
    track_name[..cut].trim()
}

/// The lower-cased Unicode words of `text`: what a name is matched by.
pub fn lower_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_word(text, |w| out.push(w.to_lowercase()));
    out
}

/// An app's number in the catalogue (see [`super::catalogue`]).
pub type Slot = u32;

/// A word no name contains.
const UNKNOWN: u32 = u32::MAX;
/// The trie's root: the empty word sequence.
const ROOT: u32 = 0;
/// No node: a word that starts no name.
const NO_NODE: u32 = u32::MAX;

/// Pieces of a post (between ASCII whitespace) longer than this are not remembered by a
/// [`Scratch`]: URLs and the like rarely repeat.
const MAX_CACHED_PIECE: usize = 64;
/// A [`Scratch`] forgets every piece once it remembers this many (its memory stays bounded).
/// (Small in tests, so that they forget often.)
const MAX_CACHED_PIECES: usize = if cfg!(test) { 64 } else { 8192 };

/// Numbers every [`Matcher`] and every change to one: what a [`Scratch`] remembers pieces for.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATIONS.fetch_add(1, Ordering::Relaxed)
}

/// A trie node: the apps whose whole name is its word sequence.
#[derive(Debug, Default)]
struct Node {
    apps: Vec<Slot>,
    /// Some longer name continues from here (else a post's run ends here without a lookup).
    branches: bool,
}

/// The word index: a trie of the apps' names (see the module docs).
#[derive(Debug)]
pub struct Matcher {
    /// Word -> its number.
    words: HashMap<Box<str>, u32>,
    /// Word number -> the node of the one-word sequence, or [`NO_NODE`]: the root's edges.
    first: Vec<u32>,
    /// (node << 32 | word) -> the node one word further, for nodes other than the root.
    edges: HashMap<u64, u32>,
    /// The trie's nodes; the root is node 0.
    nodes: Vec<Node>,
    /// Names inserted and not removed.
    live: usize,
    /// Changes whenever a word may get a new number (see [`Scratch`]).
    generation: u64,
}

impl Default for Matcher {
    fn default() -> Self {
        Self {
            words: HashMap::new(),
            first: Vec::new(),
            edges: HashMap::new(),
            nodes: vec![Node::default()],
            live: 0,
            generation: next_generation(),
        }
    }
}

/// What [`Matcher::find`] reuses from one post to the next, so matching allocates nothing once
/// the post's pieces are known: the words' numbers of the pieces (text between ASCII whitespace)
/// seen lately, valid for one generation of one [`Matcher`].
#[derive(Debug, Default)]
pub struct Scratch {
    ids: Vec<u32>,
    lower: String,
    /// Piece -> the span of `pool` holding its words' numbers.
    pieces: HashMap<Box<str>, (u32, u32)>,
    pool: Vec<u32>,
    /// The [`Matcher::generation`] the pieces were numbered by (0: none).
    generation: u64,
}

fn edge(node: u32, word: u32) -> u64 {
    (u64::from(node) << 32) | u64::from(word)
}

/// The ASCII whitespace UAX #29 always breaks words at (as [`for_each_word`] cuts text).
fn is_break(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

impl Matcher {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names in the index.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no name is indexed.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Trie nodes, live or left behind by removed names: [`super::catalogue`] rebuilds the index
    /// when they outgrow the live names.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Indexes app `slot` under its name's lower-cased `words`; a name without words is not
    /// indexed (never mentioned).
    pub fn insert(&mut self, words: &[String], slot: Slot) {
        if words.is_empty() {
            return;
        }
        let mut node = ROOT;
        for w in words {
            let word = match self.words.get(w.as_str()) {
                Some(&word) => word,
                None => {
                    let word = self.words.len() as u32;
                    self.words.insert(w.as_str().into(), word);
                    self.first.push(NO_NODE);
                    // Pieces numbered before may hold this word.
                    self.generation = next_generation();
                    word
                }
            };
            let next_node = self.nodes.len() as u32;
            let next = if node == ROOT {
                let first = &mut self.first[word as usize];
                if *first == NO_NODE {
                    *first = next_node;
                }
                *first
            } else {
                *self.edges.entry(edge(node, word)).or_insert(next_node)
            };
            if next == next_node {
                self.nodes[node as usize].branches = true;
                self.nodes.push(Node::default());
            }
            node = next;
        }
        self.nodes[node as usize].apps.push(slot);
        self.live += 1;
    }

    /// Removes app `slot` indexed under `words` (what it was inserted with). The path stays (other
    /// names may share it); see [`nodes`](Matcher::nodes).
    pub fn remove(&mut self, words: &[String], slot: Slot) {
        let Some(node) = self.walk(words) else { return };
        let apps = &mut self.nodes[node as usize].apps;
        if let Some(i) = apps.iter().position(|s| *s == slot) {
            apps.swap_remove(i);
            self.live -= 1;
        }
    }

    fn walk(&self, words: &[String]) -> Option<u32> {
        let (head, rest) = words.split_first()?;
        let mut node = self.first[*self.words.get(head.as_str())? as usize];
        if node == NO_NODE {
            return None;
        }
        for w in rest {
            let word = *self.words.get(w.as_str())?;
            node = *self.edges.get(&edge(node, word))?;
        }
        Some(node)
    }

    /// The word's number, lower-casing it first (into `lower`) if needed; [`UNKNOWN`] if no name
    /// has it.
    fn word_id(words: &HashMap<Box<str>, u32>, lower: &mut String, w: &str) -> u32 {
        let key = if w.is_ascii() {
            if !w.bytes().any(|b| b.is_ascii_uppercase()) {
                w
            } else {
                lower.clear();
                lower.extend(w.chars().map(|c| c.to_ascii_lowercase()));
                lower.as_str()
            }
        } else if w.contains('Σ') {
            // A final capital sigma lower-cases to `ς`, by its context: as `str::to_lowercase`
            // (which the names were lower-cased with) does it.
            *lower = w.to_lowercase();
            lower.as_str()
        } else {
            lower.clear();
            for c in w.chars() {
                lower.extend(c.to_lowercase());
            }
            lower.as_str()
        };
        words.get(key).copied().unwrap_or(UNKNOWN)
    }

    /// Appends the numbers of `text`'s words to `scratch.ids`, piece by piece (see the module
    /// docs).
    fn number_words(&self, text: &str, scratch: &mut Scratch) {
        if scratch.generation != self.generation {
            scratch.pieces.clear();
            scratch.pool.clear();
            scratch.generation = self.generation;
        }
        let Scratch { ids, lower, pieces, pool, .. } = scratch;
        ids.clear();
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if is_break(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !is_break(bytes[i]) {
                i += 1;
            }
            // Cut at ASCII bytes: `start..i` are character boundaries.
            let piece = &text[start..i];
            if piece.len() > MAX_CACHED_PIECE {
                for_each_word(piece, |w| ids.push(Self::word_id(&self.words, lower, w)));
                continue;
            }
            if let Some(&(from, len)) = pieces.get(piece) {
                ids.extend_from_slice(&pool[from as usize..(from + len) as usize]);
                continue;
            }
            if pieces.len() >= MAX_CACHED_PIECES {
                pieces.clear();
                pool.clear();
            }
            let from = pool.len();
            for_each_word(piece, |w| pool.push(Self::word_id(&self.words, lower, w)));
            ids.extend_from_slice(&pool[from..]);
            pieces.insert(piece.into(), (from as u32, (pool.len() - from) as u32));
        }
    }

    /// Appends to `found` every app `text` mentions, each once, in slot order.
    pub fn find(&self, text: &str, scratch: &mut Scratch, found: &mut Vec<Slot>) {
        let start = found.len();
        if self.live == 0 {
            return;
        }
        self.number_words(text, scratch);
        let ids = &scratch.ids;
        for (i, &head) in ids.iter().enumerate() {
            if head == UNKNOWN {
                continue;
            }
            let mut node = self.first[head as usize];
            if node == NO_NODE {
                continue;
            }
            found.extend_from_slice(&self.nodes[node as usize].apps);
            for &word in &ids[i + 1..] {
                if word == UNKNOWN || !self.nodes[node as usize].branches {
                    break;
                }
                match self.edges.get(&edge(node, word)) {
                    Some(&next) => {
                        node = next;
                        found.extend_from_slice(&self.nodes[node as usize].apps);
                    }
                    None => break,
                }
            }
        }
        found[start..].sort_unstable();
        let mut w = start;
        for r in start..found.len() {
            if r == start || found[r] != found[w - 1] {
                found[w] = found[r];
                w += 1;
            }
        }
        found.truncate(w);
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;

    #[test]
    fn names_are_cut_at_the_first_separator() {
        assert_eq!(app_name("Pandora - Music & Radio"), "Pandora");
        assert_eq!(app_name("Spotify Music"), "Spotify Music");
        assert_eq!(app_name("iHeartRadio – Free Music & Radio Stations"), "iHeartRadio");
        assert_eq!(app_name("Kindle – Read eBooks, Magazines & Textbooks"), "Kindle");
        assert_eq!(app_name("Minecraft: Story Mode"), "Minecraft");
        assert_eq!(app_name("A — B - C"), "A", "the first separator wins, whichever it is");
        assert_eq!(app_name("X | Y: Z"), "X");
        assert_eq!(app_name("  Padded  "), "Padded");
        assert_eq!(app_name("No-space-dash"), "No-space-dash");
        assert_eq!(app_name("Ratio 16:9"), "Ratio 16:9", "a colon not followed by a space does not cut");
    }

    fn matcher(names: &[&str]) -> Matcher {
        let mut m = Matcher::new();
        for (i, n) in names.iter().enumerate() {
            m.insert(&lower_words(app_name(n)), i as Slot);
        }
        m
    }

    fn find(m: &Matcher, text: &str) -> Vec<Slot> {
        let mut out = Vec::new();
        m.find(text, &mut Scratch::default(), &mut out);
        out
    }

    #[test]
    fn posts_mention_names_as_whole_word_runs() {
        let m =
            matcher(&["Spotify", "Spotify Music", "Pandora - Music & Radio", "Magic Piano by Smule", "Smule Sing!"]);
        assert_eq!(find(&m, "#Spotify is great"), vec![0]);
        assert_eq!(find(&m, "I love spotify music!"), vec![0, 1], "both names are in the post");
        assert_eq!(find(&m, "Spotifyish noise"), Vec::<Slot>::new());
        assert_eq!(find(&m, "PANDORA, pandora and Pandora"), vec![2], "once per post");
        assert_eq!(find(&m, "magic piano by smule sing"), vec![3, 4], "overlapping runs both count");
        assert_eq!(find(&m, "magic piano by"), Vec::<Slot>::new());
        assert_eq!(find(&m, "smule, sing"), vec![4], "punctuation between words is not a word");
    }

    #[test]
    fn unicode_names_and_removal() {
        let mut m = matcher(&["Café Übersicht", "東京 Guide", "🎉"]);
        assert_eq!(find(&m, "café übersicht!"), vec![0]);
        assert_eq!(find(&m, "CAFÉ ÜBERSICHT"), vec![0]);
        assert_eq!(find(&m, "東京 guide"), vec![1]);
        assert_eq!(m.len(), 2, "a name without words is not indexed");
        m.remove(&lower_words("Café Übersicht"), 0);
        assert_eq!(find(&m, "café übersicht"), Vec::<Slot>::new());
        assert_eq!(m.len(), 1);
    }

    /// The obvious matcher: every name's words against every position of the post's words.
    fn brute_force(names: &[Vec<String>], text: &str) -> Vec<Slot> {
        let post = lower_words(text);
        names
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.is_empty() && post.windows(n.len()).any(|w| w == n.as_slice()))
            .map(|(i, _)| i as Slot)
            .collect()
    }

    #[test]
    fn the_index_finds_what_a_brute_force_matcher_finds() {
        const VOCAB: &[&str] = &[
            "a",
            "b",
            "c",
            "ab",
            "Spotify",
            "spotify",
            "music",
            "Music",
            "é",
            "É",
            "東京",
            "x1",
            "don't",
            "3.5",
            "the",
            "Straße",
            "İstanbul",
            "ΣΑΣ",
            "naïve",
            "e\u{301}",
            "データ",
            "x\u{a0}y",
        ];
        const GLUE: &[&str] = &[
            " ", "  ", ", ", "! ", " - ", ": ", " #", " @", "🎉", "\n", ".", "-", "_", "\t", "\u{a0}", "\r\n", "'",
            "\u{200b}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let text = |rng: &mut rand::rngs::StdRng, most: usize| {
            let mut t = String::new();
            for _ in 0..rng.gen_range(0..most) {
                t.push_str(VOCAB[rng.gen_range(0..VOCAB.len())]);
                t.push_str(GLUE[rng.gen_range(0..GLUE.len())]);
            }
            t
        };
        // One scratch throughout, as a task keeps one: what it remembers of earlier posts (and
        // earlier indexes) must never change a result.
        let mut scratch = Scratch::default();
        for round in 0..300 {
            let track_names: Vec<String> = (0..rng.gen_range(1..40)).map(|_| text(&mut rng, 4)).collect();
            let names: Vec<Vec<String>> = track_names.iter().map(|t| lower_words(app_name(t))).collect();
            let mut m = Matcher::new();
            // Half the names now, the rest after some posts (new words then get numbers).
            let half = names.len() / 2;
            for (i, n) in names.iter().enumerate().take(half) {
                m.insert(n, i as Slot);
            }
            let mut live: Vec<Vec<String>> = names.iter().take(half).cloned().collect();
            live.resize(names.len(), Vec::new());
            let mut check = |m: &Matcher, live: &[Vec<String>], rng: &mut rand::rngs::StdRng| {
                for _ in 0..25 {
                    let post = text(rng, 12);
                    let mut got = Vec::new();
                    m.find(&post, &mut scratch, &mut got);
                    assert_eq!(got, brute_force(live, &post), "round {round}: {post:?} with {track_names:?}");
                }
            };
            check(&m, &live, &mut rng);
            for (i, n) in names.iter().enumerate().skip(half) {
                m.insert(n, i as Slot);
                live[i] = n.clone();
            }
            // Remove a few, as catalogue changes do.
            for i in 0..names.len() {
                if rng.gen_bool(0.1) {
                    m.remove(&names[i], i as Slot);
                    live[i] = Vec::new();
                }
            }
            check(&m, &live, &mut rng);
        }
    }
}
