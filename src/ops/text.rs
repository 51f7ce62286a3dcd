//! Word analysis of social post text: word count, average word length, hashtags and mentions.
//!
//! Words are the Unicode (UAX #29) words that `unicode-segmentation`'s `unicode_words()` yields,
//! so "don't" is one word, CJK ideographs are one word each, and punctuation and emoji are not
//! words. Lengths count Unicode scalar values (`char`s), not bytes.
//!
//! A hashtag is `#` followed by one or more word characters (Unicode alphanumerics, marks, and
//! `_`), where the `#` does not follow a word character (so `C#` and `a#b` are not hashtags). A
//! mention is the same with `@` (so `ana@example.com` is not a mention). Both are reported without
//! their sigil, lower-cased, de-duplicated, in order of first appearance.

use unicode_segmentation::UnicodeSegmentation;

/// The result of analysing one text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextStats {
    /// Number of UAX #29 words.
    pub word_count: usize,
    /// Mean word length in Unicode scalar values; 0 when there are no words.
    pub avg_word_length: f64,
    /// Lower-cased hashtags without `#`, de-duplicated, in order of first appearance.
    pub hashtags: Vec<String>,
    /// Lower-cased mentions without `@`, de-duplicated, in order of first appearance.
    pub mentions: Vec<String>,
}

/// Analyses `text`. Runs in time linear in its length.
pub fn analyze(text: &str) -> TextStats {
    let (word_count, total_chars) = count_words(text);
    let avg_word_length = if word_count == 0 { 0.0 } else { total_chars as f64 / word_count as f64 };
    let (hashtags, mentions) = tags(text);
    TextStats { word_count, avg_word_length, hashtags, mentions }
}

/// Number of UAX #29 words in `text` and their total length in scalar values: exactly what
/// `unicode_words()` gives, computed faster.
///
/// ASCII space, tab, CR, LF, VT and FF are always word boundaries in UAX #29 (no rule joins them
/// to anything but whitespace), so the text is cut there first. ASCII tokens (most of them, in
/// most languages' social posts) go through `ascii_words`, a direct transcription of the rules
/// that apply to ASCII; any other token goes through `unicode_words()`. A property test checks
/// the result against `unicode_words()` on the whole text.
pub fn count_words(text: &str) -> (usize, usize) {
    if text.is_ascii() {
        // Whitespace is class Other for the ASCII rules: no need to cut the text first.
        return ascii_words(text.as_bytes());
    }
    let (mut words, mut chars) = (0, 0);
    for token in text.split([' ', '\t', '\n', '\r', '\x0b', '\x0c']) {
        if token.is_ascii() {
            let (w, c) = ascii_words(token.as_bytes());
            words += w;
            chars += c;
        } else {
            for word in token.unicode_words() {
                words += 1;
                chars += word.chars().count();
            }
        }
    }
    (words, chars)
}

/// UAX #29 word-break classes of ASCII bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wb {
    /// ALetter: A-Z, a-z.
    Letter,
    /// Numeric: 0-9.
    Digit,
    /// ExtendNumLet: `_`.
    Connector,
    /// MidLetter: `:`.
    MidLetter,
    /// MidNum: `,` `;`.
    MidNum,
    /// MidNumLet and Single_Quote: `.` `'` (both join letters and digits).
    MidBoth,
    /// Everything else.
    Other,
}

const fn wb_of(b: u8) -> Wb {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Wb::Letter,
        b'0'..=b'9' => Wb::Digit,
        b'_' => Wb::Connector,
        b':' => Wb::MidLetter,
        b',' | b';' => Wb::MidNum,
        b'.' | b'\'' => Wb::MidBoth,
        _ => Wb::Other,
    }
}

/// [`wb_of`] for every byte, computed at compile time: one load per byte on the hot path.
static WB_TABLE: [Wb; 256] = {
    let mut t = [Wb::Other; 256];
    let mut i = 0;
    while i < 128 {
        t[i] = wb_of(i as u8);
        i += 1;
    }
    t
};

#[inline]
fn wb(b: u8) -> Wb {
    WB_TABLE[b as usize]
}

/// Words and their total length in an ASCII token without whitespace. Rules: letters, digits and
/// `_` join each other (WB5, WB8-WB10, WB13a/b); a letter, one of `: . '`, a letter join (WB6/7);
/// a digit, one of `, ; . '`, a digit join (WB11/12); everything else breaks (WB999). A segment is
/// a word when it holds a letter or digit (`unicode_words` drops the rest, e.g. `___` or `#`).
fn ascii_words(b: &[u8]) -> (usize, usize) {
    let (mut words, mut chars) = (0, 0);
    let mut i = 0;
    while i < b.len() {
        let first = wb(b[i]);
        if !matches!(first, Wb::Letter | Wb::Digit | Wb::Connector) {
            i += 1;
            continue;
        }
        let start = i;
        let mut prev = first;
        let mut alnum = first != Wb::Connector;
        i += 1;
        while i < b.len() {
            let cur = wb(b[i]);
            if matches!(cur, Wb::Letter | Wb::Digit | Wb::Connector) {
                alnum |= cur != Wb::Connector;
                prev = cur;
                i += 1;
                continue;
            }
            let next = b.get(i + 1).map(|&n| wb(n));
            let joins = match (prev, cur) {
                (Wb::Letter, Wb::MidLetter | Wb::MidBoth) => next == Some(Wb::Letter),
                (Wb::Digit, Wb::MidNum | Wb::MidBoth) => next == Some(Wb::Digit),
                _ => false,
            };
            if !joins {
                break;
            }
            // The character after the middle one has the same class as `prev`.
            i += 2;
        }
        if alnum {
            words += 1;
            chars += i - start;
        }
    }
    (words, chars)
}

/// Calls `f` with every UAX #29 word of `text`, in order: exactly the words `unicode_words()`
/// yields, found faster the same way as [`count_words`] (ASCII tokens by the ASCII rules, the
/// rest by `unicode_words()`). A property test checks it against `unicode_words()`.
pub fn for_each_word<'a>(text: &'a str, mut f: impl FnMut(&'a str)) {
    if text.is_ascii() {
        ascii_word_ranges(text.as_bytes(), |start, end| f(&text[start..end]));
        return;
    }
    let mut offset = 0;
    for token in text.split([' ', '\t', '\n', '\r', '\x0b', '\x0c']) {
        if token.is_ascii() {
            ascii_word_ranges(token.as_bytes(), |start, end| f(&text[offset + start..offset + end]));
        } else {
            token.unicode_words().for_each(&mut f);
        }
        // Every separator is one byte.
        offset += token.len() + 1;
    }
}

/// The `[start, end)` byte ranges of the words of an ASCII text, by the rules of
/// [`ascii_words`] (whitespace is class Other there, so the text need not be cut first).
fn ascii_word_ranges(b: &[u8], mut f: impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < b.len() {
        let first = wb(b[i]);
        if !matches!(first, Wb::Letter | Wb::Digit | Wb::Connector) {
            i += 1;
            continue;
        }
        let start = i;
        let mut prev = first;
        let mut alnum = first != Wb::Connector;
        i += 1;
        while i < b.len() {
            let cur = wb(b[i]);
            if matches!(cur, Wb::Letter | Wb::Digit | Wb::Connector) {
                alnum |= cur != Wb::Connector;
                prev = cur;
                i += 1;
                continue;
            }
            let next = b.get(i + 1).map(|&n| wb(n));
            let joins = match (prev, cur) {
                (Wb::Letter, Wb::MidLetter | Wb::MidBoth) => next == Some(Wb::Letter),
                (Wb::Digit, Wb::MidNum | Wb::MidBoth) => next == Some(Wb::Digit),
                _ => false,
            };
            if !joins {
                break;
            }
            i += 2;
        }
        if alnum {
            f(start, i);
        }
    }
}

/// Characters that may form a hashtag or mention body.
fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || is_mark(c)
}

/// Combining marks (accents written as separate code points) continue a tag, so `#café` written
/// with a combining acute accent stays one tag. Covers the combining blocks that matter in
/// practice without pulling in a full Unicode property table.
fn is_mark(c: char) -> bool {
    matches!(c as u32, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
        || matches!(c, '\u{0900}'..='\u{0903}' | '\u{093A}'..='\u{094F}' | '\u{0E31}' | '\u{0E34}'..='\u{0E3A}' | '\u{0E47}'..='\u{0E4E}')
}

/// The character that ends just before byte `i` of `text`, if any.
fn char_before(text: &str, i: usize) -> Option<char> {
    text[..i].chars().next_back()
}

/// Extracts hashtags and mentions: jumps from one `#`/`@` to the next with memchr, so text
/// without sigils costs one SIMD scan.
fn tags(text: &str) -> (Vec<String>, Vec<String>) {
    let mut hashtags: Vec<String> = Vec::new();
    let mut mentions: Vec<String> = Vec::new();
    let bytes = text.as_bytes();
    // Sigils consumed as part of a previous tag body cannot start a tag (their previous char is
    // a tag char anyway), so a plain scan over all sigil positions is exact.
    for i in memchr::memchr2_iter(b'#', b'@', bytes) {
        if char_before(text, i).is_some_and(is_tag_char) {
            continue;
        }
        let body_start = i + 1;
        let mut body_end = body_start;
        let mut ascii = true;
        for (j, d) in text[body_start..].char_indices() {
            if !is_tag_char(d) {
                break;
            }
            ascii &= d.is_ascii();
            body_end = body_start + j + d.len_utf8();
        }
        if body_end == body_start {
            continue;
        }
        let body = &text[body_start..body_end];
        let list = if bytes[i] == b'#' { &mut hashtags } else { &mut mentions };
        // Posts carry a handful of tags: a linear scan beats hashing here. Compare before
        // allocating: repeated tags cost no allocation.
        let seen = if ascii {
            list.iter().any(|t| t.eq_ignore_ascii_case(body))
        } else {
            let lower = body.to_lowercase();
            let seen = list.contains(&lower);
            if !seen {
                list.push(lower);
            }
            continue;
        };
        if !seen {
            list.push(body.to_ascii_lowercase());
        }
    }
    (hashtags, mentions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn sample_post_from_the_spec() {
        let a = analyze("This is a sample post.");
        assert_eq!(a.word_count, 5);
        assert!((a.avg_word_length - 3.4).abs() < 1e-12);
        assert!(a.hashtags.is_empty() && a.mentions.is_empty());
    }

    #[test]
    fn accents_count_scalar_values_not_bytes() {
        // "café" is 4 chars (5 bytes precomposed); "naïve" 5 chars.
        let a = analyze("café naïve");
        assert_eq!(a.word_count, 2);
        assert!((a.avg_word_length - 4.5).abs() < 1e-12);
    }

    #[test]
    fn cjk_ideographs_are_words_each() {
        let a = analyze("東京タワー 我爱你");
        // UAX #29: each Han ideograph is its own word; katakana runs stay together.
        let words: Vec<&str> = "東京タワー 我爱你".unicode_words().collect();
        assert_eq!(a.word_count, words.len());
        assert!(a.word_count >= 4, "{words:?}");
    }

    #[test]
    fn emoji_and_punctuation_are_not_words() {
        let a = analyze("🎉🎉 !!! ... ---");
        assert_eq!(a.word_count, 0);
        assert_eq!(a.avg_word_length, 0.0);
        let b = analyze("great 👍 day");
        assert_eq!(b.word_count, 2);
        assert!((b.avg_word_length - 4.0).abs() < 1e-12);
    }

    #[test]
    fn empty_text() {
        let a = analyze("");
        assert_eq!(a, TextStats { word_count: 0, avg_word_length: 0.0, hashtags: vec![], mentions: vec![] });
    }

    #[test]
    fn contractions_and_numbers() {
        let a = analyze("don't stop 3.14");
        assert_eq!(a.word_count, 3);
    }

    /// The fast word count must equal `unicode_words()` exactly, on text full of the characters
    /// where the rules are subtle.
    #[test]
    fn fast_word_count_equals_unicode_words() {
        use rand::{Rng, SeedableRng};
        const ALPHABET: &[&str] = &[
            "a", "Z", "q", "0", "7", "_", ":", ".", "'", ",", ";", "\"", "#", "@", "-", "!", " ", "  ", "\t", "\n",
            "\r\n", "\x0b", "é", "e\u{301}", "\u{301}", "ß", "東", "タ", "ー", "א", "\u{200d}", "🎉", "👍🏽", "\u{200b}",
            "٣", "½", "ǅ", "\u{2019}", "\u{ff0e}", "\u{a0}", "\u{3000}", "\u{ad}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(29);
        for round in 0..20_000 {
            let len = rng.gen_range(0..24);
            let text: String = (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]).collect();
            let expected = text.unicode_words().fold((0, 0), |(w, c), word| (w + 1, c + word.chars().count()));
            assert_eq!(count_words(&text), expected, "round {round}: {text:?}");
        }
        for text in [
            "This is a sample post.",
            "e.g. 3.14 1,000,000 don't a:b x_y __ _a 1_ a.1 1.a a'b'c ...",
            "a.b.c 1.2.3 a..b 1,,2",
        ] {
            let expected = text.unicode_words().fold((0, 0), |(w, c), word| (w + 1, c + word.chars().count()));
            assert_eq!(count_words(text), expected, "{text:?}");
        }
    }

    /// The fast word iteration must yield exactly `unicode_words()`.
    #[test]
    fn for_each_word_equals_unicode_words() {
        use rand::{Rng, SeedableRng};
        const ALPHABET: &[&str] = &[
            "a", "Z", "q", "0", "7", "_", ":", ".", "'", ",", ";", "\"", "#", "@", "-", "!", " ", "  ", "\t", "\n",
            "\r\n", "\x0b", "é", "e\u{301}", "\u{301}", "ß", "東", "タ", "ー", "א", "\u{200d}", "🎉", "👍🏽", "\u{200b}",
            "٣", "½", "ǅ", "\u{2019}", "\u{ff0e}", "\u{a0}", "\u{3000}", "\u{ad}",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(31);
        for round in 0..20_000 {
            let len = rng.gen_range(0..24);
            let text: String = (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]).collect();
            let mut got = Vec::new();
            for_each_word(&text, |w| got.push(w));
            let expected: Vec<&str> = text.unicode_words().collect();
            assert_eq!(got, expected, "round {round}: {text:?}");
        }
    }

    /// The straightforward char-by-char extraction the fast one must agree with.
    fn reference_tags(text: &str) -> (Vec<String>, Vec<String>) {
        let (mut hashtags, mut mentions): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let mut k = 0;
        while k < chars.len() {
            let (i, c) = chars[k];
            let starts = (c == '#' || c == '@') && !(k > 0 && is_tag_char(chars[k - 1].1));
            k += 1;
            if !starts {
                continue;
            }
            let start = i + 1;
            let mut end = start;
            while k < chars.len() && is_tag_char(chars[k].1) {
                end = chars[k].0 + chars[k].1.len_utf8();
                k += 1;
            }
            if end > start {
                let tag = text[start..end].to_lowercase();
                let list = if c == '#' { &mut hashtags } else { &mut mentions };
                if !list.contains(&tag) {
                    list.push(tag);
                }
            }
        }
        (hashtags, mentions)
    }

    #[test]
    fn fast_tags_equal_the_reference() {
        use rand::{Rng, SeedableRng};
        const ALPHABET: &[&str] =
            &["#", "@", "a", "B", "z", "9", "_", " ", ".", "é", "É", "\u{301}", "東", "🎉", "ß", "İ", "-", "#a", "@B"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for round in 0..20_000 {
            let len = rng.gen_range(0..16);
            let text: String = (0..len).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())]).collect();
            assert_eq!(tags(&text), reference_tags(&text), "round {round}: {text:?}");
        }
    }

    #[test]
    fn hashtags_lowercased_deduplicated_in_order() {
        let a = analyze("#Rust and #kafka, then #RUST again #Kafka_Streams #");
        assert_eq!(a.hashtags, s(&["rust", "kafka", "kafka_streams"]));
    }

    #[test]
    fn mentions_and_emails() {
        let a = analyze("hi @Ana and @bob_2! mail ana@example.com @ana");
        assert_eq!(a.mentions, s(&["ana", "bob_2"]));
    }

    #[test]
    fn sigil_inside_word_is_not_a_tag() {
        let a = analyze("I code C# and a#b, x@y");
        assert!(a.hashtags.is_empty(), "{:?}", a.hashtags);
        assert!(a.mentions.is_empty());
    }

    #[test]
    fn unicode_tags() {
        let a = analyze("#東京 #Café #cafe\u{301} @Zoë 🎉#party");
        assert_eq!(a.hashtags, s(&["東京", "café", "cafe\u{301}", "party"]));
        assert_eq!(a.mentions, s(&["zoë"]));
    }

    #[test]
    fn tag_ends_at_punctuation_or_emoji() {
        let a = analyze("#go-lang #fun🎉 (#paren)");
        assert_eq!(a.hashtags, s(&["go", "fun", "paren"]));
    }
}
