//! A compact binary encoding for state changelog values: LEB128 varints, zig-zag signed
//! varints and length-prefixed bytes. Small and fast to decode, which is what restore time is
//! made of; every store writes a version byte first so the format can change.

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Appends `v` zig-zag encoded (small magnitudes of either sign stay short).
#[inline]
pub fn put_i64(buf: &mut Vec<u8>, v: i64) {
    put_u64(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Appends `bytes` with their length in front.
pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_u64(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A value that does not decode: truncated, or not what the store wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt state value at byte {at}: {what}")]
pub struct Corrupt {
    /// Position in the value.
    pub at: usize,
    /// What was expected.
    pub what: &'static str,
}

/// Reads what the `put_*` functions wrote, in the same order.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn corrupt(&self, what: &'static str) -> Corrupt {
        Corrupt { at: self.pos, what }
    }

    /// One raw byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Corrupt> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.corrupt("a byte"))?;
        self.pos += 1;
        Ok(b)
    }

    /// An unsigned varint.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, Corrupt> {
        // Most varints of a state value are one byte: that case inlined, the rest out of line.
        if let Some(&b) = self.buf.get(self.pos).filter(|&&b| b < 0x80) {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.u64_long()
    }

    #[inline(never)]
    fn u64_long(&mut self) -> Result<u64, Corrupt> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8().map_err(|_| self.corrupt("a varint"))?;
            if shift == 63 && b > 1 {
                return Err(self.corrupt("a varint of at most 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift > 63 {
                return Err(self.corrupt("a varint of at most 10 bytes"));
            }
        }
    }

    /// A zig-zag signed varint.
    #[inline]
    pub fn i64(&mut self) -> Result<i64, Corrupt> {
        let z = self.u64()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// Length-prefixed bytes, borrowed from the buffer.
    pub fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let len = self.u64()? as usize;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.corrupt("bytes"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Length-prefixed UTF-8 text.
    pub fn str(&mut self) -> Result<&'a str, Corrupt> {
        let at = self.pos;
        std::str::from_utf8(self.bytes()?).map_err(|_| Corrupt { at, what: "UTF-8 text" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_edges() {
        let mut buf = Vec::new();
        let us = [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let is = [0, -1, 1, -64, 64, i64::MIN, i64::MAX];
        for &u in &us {
            put_u64(&mut buf, u);
        }
        for &i in &is {
            put_i64(&mut buf, i);
        }
        put_bytes(&mut buf, "Zürich".as_bytes());
        let mut r = Reader::new(&buf);
        for &u in &us {
            assert_eq!(r.u64().unwrap(), u);
        }
        for &i in &is {
            assert_eq!(r.i64().unwrap(), i);
        }
        assert_eq!(r.str().unwrap(), "Zürich");
        assert!(r.is_empty());
    }

    #[test]
    fn small_values_are_short() {
        let mut buf = Vec::new();
        put_i64(&mut buf, -3);
        put_u64(&mut buf, 100);
        assert_eq!(buf.len(), 2);
    }

    #[test]
    fn truncated_and_overlong_input_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        put_bytes(&mut buf, b"hello");
        assert!(Reader::new(&buf[..3]).bytes().is_err());
        assert!(Reader::new(&[0x80, 0x80]).u64().is_err());
        assert!(Reader::new(&[0xff; 11]).u64().is_err());
        assert!(Reader::new(&[]).u8().is_err());
        let mut bad = Vec::new();
        put_bytes(&mut bad, &[0xff, 0xfe]);
        assert!(Reader::new(&bad).str().is_err());
    }
}
