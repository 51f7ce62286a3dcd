//! CSV answers (RFC 4180): a header row, then one row per item; a field with a comma, a quote,
//! a CR or an LF is quoted, quotes doubled. Lines end with CRLF, as the RFC says.

/// A CSV document being written.
pub struct Csv {
    out: String,
}

impl Csv {
    /// A document whose first row is `header`.
    pub fn new(header: &[&str]) -> Self {
        let mut c = Self { out: String::new() };
        c.row(header.iter().copied());
        c
    }

    /// Appends one row.
    pub fn row<I, S>(&mut self, fields: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for (i, f) in fields.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let f = f.as_ref();
            if f.contains([',', '"', '\r', '\n']) {
                self.out.push('"');
                self.out.push_str(&f.replace('"', "\"\""));
                self.out.push('"');
            } else {
                self.out.push_str(f);
            }
        }
        self.out.push_str("\r\n");
    }

    /// The document's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.out.into_bytes()
    }
}

/// The content type of a CSV answer.
pub const CONTENT_TYPE: &str = "text/csv; charset=utf-8; header=present";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_needs_quoting() {
        let mut c = Csv::new(&["a", "b"]);
        c.row(["plain", "with, comma"]);
        c.row(["say \"hi\"", "two\nlines"]);
        let text = String::from_utf8(c.into_bytes()).unwrap();
        assert_eq!(text, "a,b\r\nplain,\"with, comma\"\r\n\"say \"\"hi\"\"\",\"two\nlines\"\r\n");
    }
}
