//! Secrets (access tokens): printed as `***` by `Debug` and `Display`, so they never reach logs,
//! metrics or error messages, and compared in constant time.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A secret string.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that needs it (comparing, or a request that
    /// carries it) and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this secret, in time that depends only on the lengths (not on
    /// where the first difference is).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        // Compare every byte of the longer one, so a wrong length takes no shortcut.
        let n = mine.len().max(candidate.len());
        let mut diff = (mine.len() ^ candidate.len()) as u8 | u8::from(mine.len() != candidate.len());
        for i in 0..n {
            let a = mine.get(i).copied().unwrap_or(0);
            let b = candidate.get(i).copied().unwrap_or(0);
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }

    /// Length in bytes (for validation messages that must not show the secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_compare_exactly() {
        let s = Secret::new("s3cr3t-token-0123456789");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert!(s.matches(b"s3cr3t-token-0123456789"));
        assert!(!s.matches(b"s3cr3t-token-012345678"));
        assert!(!s.matches(b"s3cr3t-token-01234567890"));
        assert!(!s.matches(b"x3cr3t-token-0123456789"));
        assert!(!s.matches(b""));
        assert!(!Secret::new("").matches(b"a"));
    }
}
