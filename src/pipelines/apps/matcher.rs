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
//! is a word sequence, and an edge is one hash lookup of (node, next word). A post costs one hash
//! lookup per word (its number; a word in no name ends there) plus one per step along a name it
//! starts: never a scan of the catalogue. Each app sits at the node of its whole name, so names
//! that share their first words ("Magic Piano", "Magic Piano by Smule") share the path.

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

/// The word index: a trie of the apps' names (see the module docs).
#[derive(Debug)]
pub struct Matcher {
    /// Word -> its number.
    words: HashMap<Box<str>, u32>,
    /// (node << 32 | word) -> the node one word further.
    edges: HashMap<u64, u32>,
    /// The apps whose whole name is each node's word sequence.
    nodes: Vec<Vec<Slot>>,
    /// Names inserted and not removed.
    live: usize,
}

impl Default for Matcher {
    fn default() -> Self {
        Self { words: HashMap::new(), edges: HashMap::new(), nodes: vec![Vec::new()], live: 0 }
    }
}

/// What [`Matcher::find`] reuses from one post to the next, so matching allocates nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    ids: Vec<u32>,
    lower: String,
}

fn edge(node: u32, word: u32) -> u64 {
    (u64::from(node) << 32) | u64::from(word)
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
            let next_word = self.words.len() as u32;
            let word = match self.words.get(w.as_str()) {
                Some(&word) => word,
                None => {
                    self.words.insert(w.as_str().into(), next_word);
                    next_word
                }
            };
            let next_node = self.nodes.len() as u32;
            node = *self.edges.entry(edge(node, word)).or_insert(next_node);
            if node == next_node {
                self.nodes.push(Vec::new());
            }
        }
        self.nodes[node as usize].push(slot);
        self.live += 1;
    }

    /// Removes app `slot` indexed under `words` (what it was inserted with). The path stays (other
    /// names may share it); see [`nodes`](Matcher::nodes).
    pub fn remove(&mut self, words: &[String], slot: Slot) {
        let Some(node) = self.walk(words) else { return };
        let apps = &mut self.nodes[node as usize];
        if let Some(i) = apps.iter().position(|s| *s == slot) {
            apps.swap_remove(i);
            self.live -= 1;
        }
    }

    fn walk(&self, words: &[String]) -> Option<u32> {
        if words.is_empty() {
            return None;
        }
        let mut node = ROOT;
        for w in words {
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
        } else {
            lower.clear();
            for c in w.chars() {
                lower.extend(c.to_lowercase());
            }
            lower.as_str()
        };
        words.get(key).copied().unwrap_or(UNKNOWN)
    }

    /// Appends to `found` every app `text` mentions, each once, in slot order.
    pub fn find(&self, text: &str, scratch: &mut Scratch, found: &mut Vec<Slot>) {
        let start = found.len();
        if self.live == 0 {
            return;
        }
        let Scratch { ids, lower } = scratch;
        ids.clear();
        for_each_word(text, |w| ids.push(Self::word_id(&self.words, lower, w)));
        for i in 0..ids.len() {
            let mut node = ROOT;
            for &word in &ids[i..] {
                if word == UNKNOWN {
                    break;
                }
                match self.edges.get(&edge(node, word)) {
                    Some(&next) => {
                        node = next;
                        found.extend_from_slice(&self.nodes[node as usize]);
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
            "a", "b", "c", "ab", "Spotify", "spotify", "music", "Music", "é", "É", "東京", "x1", "don't", "3.5", "the",
        ];
        const GLUE: &[&str] = &[" ", "  ", ", ", "! ", " - ", ": ", " #", " @", "🎉", "\n", ".", "-", "_"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let text = |rng: &mut rand::rngs::StdRng, most: usize| {
            let mut t = String::new();
            for _ in 0..rng.gen_range(0..most) {
                t.push_str(VOCAB[rng.gen_range(0..VOCAB.len())]);
                t.push_str(GLUE[rng.gen_range(0..GLUE.len())]);
            }
            t
        };
        for round in 0..300 {
            let track_names: Vec<String> = (0..rng.gen_range(1..40)).map(|_| text(&mut rng, 4)).collect();
            let names: Vec<Vec<String>> = track_names.iter().map(|t| lower_words(app_name(t))).collect();
            let mut m = Matcher::new();
            for (i, n) in names.iter().enumerate() {
                m.insert(n, i as Slot);
            }
            // Remove a few, as catalogue changes do.
            let mut live = names.clone();
            for i in 0..names.len() {
                if rng.gen_bool(0.1) {
                    m.remove(&names[i], i as Slot);
                    live[i] = Vec::new();
                }
            }
            for _ in 0..50 {
                let post = text(&mut rng, 12);
                assert_eq!(find(&m, &post), brute_force(&live, &post), "round {round}: {post:?} with {track_names:?}");
            }
        }
    }
}
