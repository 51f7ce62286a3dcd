//! App Store catalogue files: the "Mobile App Statistics (Apple iOS app store)" data set as Kaggle
//! publishes it (`AppleStore.csv`), read row by row into typed `apps` records.
//!
//! Both published forms are read: 17 columns whose first is an unnamed row index (header `""`),
//! as in the original file, and the 16 named columns alone. Columns are found by their header
//! names, so their order does not matter. Fields follow RFC 4180: a field in double quotes may hold
//! commas, line breaks and doubled quotes (`""`). Numbers may be written `0` or `0.0`; integer
//! columns accept an integral decimal (`12.0`).
//!
//! A row that cannot be read ([`RowError`]: wrong number of fields, a quote left open, a number
//! that is not one, an empty id or name) is reported with the line it starts on and skipped; a
//! header that is not this data set's stops the load (nothing would be right).

use std::fmt;

use serde::Serialize;

/// The 16 named columns, in the order of the original file (and of the JSON record).
pub const COLUMNS: [&str; 16] = [
    "id",
    "track_name",
    "size_bytes",
    "currency",
    "price",
    "rating_count_tot",
    "rating_count_ver",
    "user_rating",
    "user_rating_ver",
    "ver",
    "cont_rating",
    "prime_genre",
    "sup_devices.num",
    "ipadSc_urls.num",
    "lang.num",
    "vpp_lic",
];

/// Longest accepted app id, in bytes (the data set's are 9-10 digits).
pub const MAX_ID_BYTES: usize = 64;
/// Longest accepted `track_name`, in bytes (the data set's longest is 235).
pub const MAX_TRACK_NAME_BYTES: usize = 1024;
/// Longest accepted text of any other string column, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Longest accepted row, in bytes, quoted line breaks included (the data set's rows are under 400
/// bytes): a quote left open cannot swallow the rest of a file.
pub const MAX_ROW_BYTES: usize = 64 * 1024;

/// Why a header is not an `AppleStore.csv` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The file is empty.
    #[error("the file is empty: expected a header row naming the columns {}", COLUMNS.join(", "))]
    Empty,
    /// The header row itself is malformed.
    #[error("the header row is malformed: {0}")]
    Malformed(String),
    /// A column the data set has is missing.
    #[error("the header has no column `{0}` (expected {cols}, optionally after an unnamed index column)", cols = COLUMNS.join(", "))]
    Missing(&'static str),
    /// A column the data set does not have.
    #[error("the header has an unknown column `{0}`")]
    Unknown(String),
    /// A column named twice.
    #[error("the header names column `{0}` twice")]
    Duplicate(String),
}

/// Why a row was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowError {
    /// The row has another number of fields than the header.
    FieldCount {
        /// Fields in the header.
        expected: usize,
        /// Fields in the row.
        found: usize,
    },
    /// A quoted field is not closed by the end of the file (or within [`MAX_ROW_BYTES`]).
    UnclosedQuote,
    /// Something other than a comma follows a closing quote.
    AfterQuote,
    /// The row is not valid UTF-8.
    InvalidUtf8,
    /// A field's value is not what its column holds.
    Field {
        /// The column.
        column: &'static str,
        /// What is wrong, with an excerpt of the value.
        reason: String,
    },
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowError::FieldCount { expected, found } => write!(f, "expected {expected} fields, found {found}"),
            RowError::UnclosedQuote => write!(f, "a quoted field is not closed (within {MAX_ROW_BYTES} bytes)"),
            RowError::AfterQuote => f.write_str("a closing quote is followed by something other than a comma"),
            RowError::InvalidUtf8 => f.write_str("invalid UTF-8"),
            RowError::Field { column, reason } => write!(f, "field `{column}`: {reason}"),
        }
    }
}

/// The result of splitting one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    /// The fields of a complete row.
    Row(Vec<String>),
    /// A quoted field runs past the end of the text: the row continues on the next line.
    Open,
}

/// Splits one CSV row (without its line ending, or with it: a trailing `\r\n` or `\n` is
/// dropped) into fields, undoing quoting.
pub fn split_row(row: &[u8]) -> Result<Split, RowError> {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    let row = row.strip_suffix(b"\r").unwrap_or(row);
    let text = std::str::from_utf8(row).map_err(|_| RowError::InvalidUtf8)?;
    let mut fields = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        // At the start of a field.
        let mut field = String::new();
        if chars.peek().is_some_and(|&(_, c)| c == '"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Ok(Split::Open),
                    Some((_, '"')) => {
                        if chars.peek().is_some_and(|&(_, c)| c == '"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some((_, c)) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(Split::Row(fields));
                }
                Some((_, ',')) => fields.push(field),
                Some(_) => return Err(RowError::AfterQuote),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(Split::Row(fields));
                    }
                    Some((_, ',')) => {
                        fields.push(field);
                        break;
                    }
                    Some((_, c)) => field.push(c),
                }
            }
        }
    }
}

/// Joins the lines of a file into CSV rows: a quoted field may span lines, so a row is complete
/// only once its quotes close. Feed it every line in order ([`push`](Rows::push)), then call
/// [`finish`](Rows::finish).
#[derive(Debug, Default)]
pub struct Rows {
    pending: Vec<u8>,
    /// The line the pending row starts on.
    start: u64,
}

impl Rows {
    /// A joiner with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes line `line_no` (1-based, with its line ending); returns a complete row with the
    /// number of the line it started on, or `None` while the row continues on the next line.
    pub fn push(&mut self, line_no: u64, line: &[u8]) -> Option<(u64, Result<Vec<String>, RowError>)> {
        let (start, split) = if self.pending.is_empty() {
            (line_no, split_row(line))
        } else {
            self.pending.extend_from_slice(line);
            (self.start, split_row(&self.pending))
        };
        match split {
            Ok(Split::Open) => {
                if self.pending.is_empty() {
                    self.pending.extend_from_slice(line);
                    self.start = line_no;
                }
                if self.pending.len() > MAX_ROW_BYTES {
                    self.pending.clear();
                    return Some((start, Err(RowError::UnclosedQuote)));
                }
                None
            }
            Ok(Split::Row(fields)) => {
                self.pending.clear();
                Some((start, Ok(fields)))
            }
            Err(e) => {
                self.pending.clear();
                Some((start, Err(e)))
            }
        }
    }

    /// The end of the file: a row still open is malformed.
    pub fn finish(&mut self) -> Option<(u64, RowError)> {
        if self.pending.is_empty() {
            return None;
        }
        self.pending.clear();
        Some((self.start, RowError::UnclosedQuote))
    }
}

/// Where each named column is in a row, from the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Fields per row (16, or 17 with the index column).
    pub width: usize,
    /// The position of each of [`COLUMNS`], in that order.
    positions: [usize; 16],
}

impl Layout {
    /// The layout a header row declares: the 16 named columns in any order, optionally with one
    /// unnamed column (the row index of the original file), which is ignored.
    pub fn from_header(fields: &[String]) -> Result<Self, HeaderError> {
        let mut positions = [usize::MAX; 16];
        let mut unnamed = 0;
        for (i, name) in fields.iter().enumerate() {
            let name = name.trim_start_matches('\u{feff}').trim();
            if name.is_empty() {
                unnamed += 1;
                if unnamed > 1 {
                    return Err(HeaderError::Duplicate(String::new()));
                }
                continue;
            }
            let Some(c) = COLUMNS.iter().position(|c| *c == name) else {
                return Err(HeaderError::Unknown(name.to_string()));
            };
            if positions[c] != usize::MAX {
                return Err(HeaderError::Duplicate(name.to_string()));
            }
            positions[c] = i;
        }
        if let Some(c) = positions.iter().position(|p| *p == usize::MAX) {
            return Err(HeaderError::Missing(COLUMNS[c]));
        }
        Ok(Self { width: fields.len(), positions })
    }

    /// The typed app of a data row.
    pub fn app(&self, fields: &[String]) -> Result<AppRow, RowError> {
        if fields.len() != self.width {
            return Err(RowError::FieldCount { expected: self.width, found: fields.len() });
        }
        let f = |c: usize| fields[self.positions[c]].as_str();
        let row = AppRow {
            id: text(COLUMNS[0], f(0), MAX_ID_BYTES, true)?,
            track_name: text(COLUMNS[1], f(1), MAX_TRACK_NAME_BYTES, true)?,
            size_bytes: integer(COLUMNS[2], f(2))?,
            currency: text(COLUMNS[3], f(3), MAX_TEXT_BYTES, false)?,
            price: number(COLUMNS[4], f(4), None)?,
            rating_count_tot: integer(COLUMNS[5], f(5))?,
            rating_count_ver: integer(COLUMNS[6], f(6))?,
            user_rating: number(COLUMNS[7], f(7), Some(5.0))?,
            user_rating_ver: number(COLUMNS[8], f(8), Some(5.0))?,
            ver: text(COLUMNS[9], f(9), MAX_TEXT_BYTES, false)?,
            cont_rating: text(COLUMNS[10], f(10), MAX_TEXT_BYTES, false)?,
            prime_genre: text(COLUMNS[11], f(11), MAX_TEXT_BYTES, true)?,
            sup_devices_num: integer(COLUMNS[12], f(12))?,
            ipad_sc_urls_num: integer(COLUMNS[13], f(13))?,
            lang_num: integer(COLUMNS[14], f(14))?,
            vpp_lic: integer(COLUMNS[15], f(15))?,
        };
        if row.id.chars().any(char::is_whitespace) {
            return Err(RowError::Field {
                column: COLUMNS[0],
                reason: format!("{:?} contains whitespace", excerpt(&row.id)),
            });
        }
        Ok(row)
    }
}

/// Longest excerpt of a bad value quoted in a [`RowError`].
const MAX_QUOTE: usize = 40;

fn excerpt(v: &str) -> String {
    match v.char_indices().nth(MAX_QUOTE) {
        Some((i, _)) => format!("{}...", &v[..i]),
        None => v.to_string(),
    }
}

fn text(column: &'static str, v: &str, max: usize, required: bool) -> Result<String, RowError> {
    let v = v.trim();
    if required && v.is_empty() {
        return Err(RowError::Field { column, reason: "is empty".into() });
    }
    if v.len() > max {
        return Err(RowError::Field { column, reason: format!("is {} bytes, more than the {max} allowed", v.len()) });
    }
    Ok(v.to_string())
}

fn integer(column: &'static str, v: &str) -> Result<u64, RowError> {
    let t = v.trim();
    // `12` or `12.0` (some copies write integers as decimals).
    let whole = match t.split_once('.') {
        Some((w, frac)) if !frac.is_empty() && frac.bytes().all(|b| b == b'0') => w,
        Some(_) => t,
        None => t,
    };
    if !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = whole.parse() {
            return Ok(n);
        }
    }
    Err(RowError::Field { column, reason: format!("{:?} is not a non-negative integer", excerpt(t)) })
}

fn number(column: &'static str, v: &str, max: Option<f64>) -> Result<f64, RowError> {
    let t = v.trim();
    let plain = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    match t.parse::<f64>() {
        Ok(n) if plain && n.is_finite() && max.is_none_or(|m| n <= m) => Ok(n),
        Ok(_) if plain => Err(RowError::Field {
            column,
            reason: format!("{:?} is out of range (0 to {})", excerpt(t), max.unwrap_or(f64::MAX)),
        }),
        _ => Err(RowError::Field { column, reason: format!("{:?} is not a non-negative number", excerpt(t)) }),
    }
}

/// One app of the catalogue, typed: the JSON value of its `apps` record (field names and order
/// as in the data set).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppRow {
    /// The App Store id (digits in the data set), also the record's key.
    pub id: String,
    /// The name as listed, often with a tagline: `Pandora - Music & Radio`.
    pub track_name: String,
    /// Download size in bytes.
    pub size_bytes: u64,
    /// Currency of `price` (`USD`).
    pub currency: String,
    /// Price in `currency`.
    pub price: f64,
    /// User ratings, all versions.
    pub rating_count_tot: u64,
    /// User ratings, current version.
    pub rating_count_ver: u64,
    /// Average user rating, all versions (0 to 5).
    pub user_rating: f64,
    /// Average user rating, current version (0 to 5).
    pub user_rating_ver: f64,
    /// Latest version string, e.g. `9.24.12`.
    pub ver: String,
    /// Content rating, e.g. `4+`.
    pub cont_rating: String,
    /// Primary genre, e.g. `Music`.
    pub prime_genre: String,
    /// Supported devices.
    #[serde(rename = "sup_devices.num")]
    pub sup_devices_num: u64,
    /// Screenshots shown.
    #[serde(rename = "ipadSc_urls.num")]
    pub ipad_sc_urls_num: u64,
    /// Supported languages.
    #[serde(rename = "lang.num")]
    pub lang_num: u64,
    /// Volume purchase licensing (1 when enabled).
    pub vpp_lic: u64,
}

/// Writes the JSON value of `app`'s `apps` record into `out` (cleared first); the key is
/// `app.id`.
pub fn encode(app: &AppRow, out: &mut Vec<u8>) {
    out.clear();
    serde_json::to_writer(out, app).expect("serializing strings and numbers into a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER17: &str = r#""","id","track_name","size_bytes","currency","price","rating_count_tot","rating_count_ver","user_rating","user_rating_ver","ver","cont_rating","prime_genre","sup_devices.num","ipadSc_urls.num","lang.num","vpp_lic""#;
    const HEADER16: &str = "id,track_name,size_bytes,currency,price,rating_count_tot,rating_count_ver,user_rating,user_rating_ver,ver,cont_rating,prime_genre,sup_devices.num,ipadSc_urls.num,lang.num,vpp_lic";

    fn fields(line: &str) -> Vec<String> {
        match split_row(line.as_bytes()).expect("well formed") {
            Split::Row(f) => f,
            Split::Open => panic!("row is open: {line}"),
        }
    }

    fn layout(header: &str) -> Layout {
        Layout::from_header(&fields(header)).expect("valid header")
    }

    #[test]
    fn both_published_forms_give_the_same_app() {
        let a = layout(HEADER17)
            .app(&fields(r#""3","284993459","Shazam - Discover music, artists, videos & lyrics",147093504,"USD",0,402925,136,4,4.5,"11.0.3","12+","Music",37,1,16,1"#))
            .expect("valid row");
        let b = layout(HEADER16)
            .app(&fields(r#"284993459,"Shazam - Discover music, artists, videos & lyrics",147093504,USD,0.0,402925,136,4.0,4.5,11.0.3,12+,Music,37,1,16,1"#))
            .expect("valid row");
        assert_eq!(a, b);
        assert_eq!(a.track_name, "Shazam - Discover music, artists, videos & lyrics", "quoted comma kept");
        assert_eq!((a.price, a.rating_count_tot, a.user_rating), (0.0, 402925, 4.0));
        let mut out = Vec::new();
        encode(&a, &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(v["rating_count_tot"], serde_json::json!(402925));
        assert!(v["price"].is_number() && v["user_rating"].is_number());
        assert_eq!(v["ver"], "11.0.3");
        assert_eq!(v["sup_devices.num"], 37);
        assert_eq!(v.as_object().expect("object").len(), 16);
    }

    #[test]
    fn quoting_rules() {
        assert_eq!(fields(r#"a,"b,c","say ""hi""",,"""#), vec!["a", "b,c", "say \"hi\"", "", ""]);
        assert_eq!(fields(r#""x""y",z"#), vec!["x\"y", "z"]);
        assert_eq!(fields("a,b\r\n"), vec!["a", "b"]);
        assert_eq!(fields(",,"), vec!["", "", ""]);
        assert_eq!(split_row(br#""open, and"#), Ok(Split::Open));
        assert_eq!(split_row(br#""closed"x,y"#), Err(RowError::AfterQuote));
        assert_eq!(split_row(b"a,\xff"), Err(RowError::InvalidUtf8));
    }

    #[test]
    fn a_quoted_line_break_joins_lines_and_the_row_keeps_its_first_line_number() {
        let mut rows = Rows::new();
        assert_eq!(rows.push(4, b"1,\"two\n"), None);
        assert_eq!(rows.push(5, b"lines\",3\n"), Some((4, Ok(vec!["1".into(), "two\nlines".into(), "3".into()]))));
        assert_eq!(rows.push(6, b"x\n"), Some((6, Ok(vec!["x".into()]))));
        assert_eq!(rows.push(7, b"\"never closed\n"), None);
        assert_eq!(rows.finish(), Some((7, RowError::UnclosedQuote)));
        assert_eq!(rows.finish(), None);
    }

    #[test]
    fn malformed_rows_say_why() {
        let l = layout(HEADER16);
        let row = |s: &str| l.app(&fields(s)).expect_err("malformed");
        let good = "1,Name,10,USD,0.99,5,1,4.5,4,1.0,4+,Book,37,5,1,1";
        l.app(&fields(good)).expect("the base row is valid");
        assert_eq!(row("1,Name,10"), RowError::FieldCount { expected: 16, found: 3 });
        let err = row("1,Name,10,USD,0.99,many,1,4.5,4,1.0,4+,Book,37,5,1,1");
        assert_eq!(err.to_string(), "field `rating_count_tot`: \"many\" is not a non-negative integer");
        assert!(row("1,Name,10,USD,-1,5,1,4.5,4,1.0,4+,Book,37,5,1,1").to_string().starts_with("field `price`"));
        assert!(row("1,Name,10,USD,1,5,1,7,4,1.0,4+,Book,37,5,1,1").to_string().contains("out of range"));
        assert!(row("1,Name,10,USD,1,5.5,1,4,4,1.0,4+,Book,37,5,1,1")
            .to_string()
            .starts_with("field `rating_count_tot`"));
        assert_eq!(row(",Name,10,USD,1,5,1,4,4,1.0,4+,Book,37,5,1,1").to_string(), "field `id`: is empty");
        assert_eq!(row("1, ,10,USD,1,5,1,4,4,1.0,4+,Book,37,5,1,1").to_string(), "field `track_name`: is empty");
        // Integral decimals are integers.
        assert_eq!(l.app(&fields("1,Name,10.0,USD,0,5,1,4,4,1.0,4+,Book,37.0,5,1,1")).expect("valid").size_bytes, 10);
    }

    #[test]
    fn headers_are_checked_by_name() {
        assert_eq!(layout(HEADER17).width, 17);
        let mut reordered = fields(HEADER16);
        reordered.swap(0, 5);
        Layout::from_header(&reordered).expect("any order");
        let mut missing = fields(HEADER16);
        missing.pop();
        assert_eq!(Layout::from_header(&missing), Err(HeaderError::Missing("vpp_lic")));
        let mut unknown = fields(HEADER16);
        unknown.push("extra".into());
        assert_eq!(Layout::from_header(&unknown), Err(HeaderError::Unknown("extra".into())));
        let bom = format!("\u{feff}{HEADER16}");
        assert_eq!(layout(&bom).width, 16, "a byte order mark is not part of the first name");
    }

    /// Random rows written the way a CSV writer quotes them come back field for field.
    #[test]
    fn written_rows_split_back_into_their_fields() {
        use rand::{Rng, SeedableRng};
        const PIECES: &[&str] = &["a", "Z", "9", " ", ",", "\"", "\"\"", "é", "東", "-", ":", "|", "\r", "\n", ""];
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for round in 0..5_000 {
            let n = rng.gen_range(1..6);
            let row: Vec<String> = (0..n)
                .map(|_| (0..rng.gen_range(0..6)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect())
                .collect();
            let line = row
                .iter()
                .map(|f| {
                    if f.contains([',', '"', '\r', '\n']) || rng.gen_bool(0.3) {
                        format!("\"{}\"", f.replace('"', "\"\""))
                    } else {
                        f.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            let mut rows = Rows::new();
            let mut got = None;
            let lines: Vec<&str> = if line.is_empty() { vec![""] } else { line.split_inclusive('\n').collect() };
            for (i, l) in lines.into_iter().enumerate() {
                if let Some((start, r)) = rows.push(i as u64 + 1, l.as_bytes()) {
                    got = Some((start, r));
                }
            }
            let (start, r) = got.unwrap_or_else(|| panic!("round {round}: row never completed: {line:?}"));
            assert_eq!(start, 1);
            assert_eq!(r, Ok(row), "round {round}: {line:?}");
        }
    }
}
