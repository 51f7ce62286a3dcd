//! Who may call the API: bearer tokens with scopes (`read`, `write`), checked in constant time.
//!
//! Writes always need a token with the `write` scope; reads need one with `read` unless
//! `http.public_reads`. A missing or unknown token is a 401, a token without the scope a 403; the
//! problem names which, never the token. The client a request counts against for rate limits is
//! its token's name when it has a valid token, else its address.

use crate::config::{HttpConfig, Scope};
use crate::secret::Secret;

use super::problem::Problem;

/// One accepted token.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    token: Secret,
    read: bool,
    write: bool,
}

/// The tokens of the API, from the configuration.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    entries: Vec<Entry>,
    public_reads: bool,
}

/// What a request may do, once its credentials are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A valid token, by its name.
    Token(String),
    /// No token (a public read).
    Anonymous,
}

impl Auth {
    /// The tokens of `cfg` (`http.tokens`, `http.write_token`, `http.read_token`).
    pub fn new(cfg: &HttpConfig) -> Self {
        let mut entries: Vec<Entry> = cfg
            .tokens
            .iter()
            .map(|t| Entry {
                name: t.name.clone(),
                token: t.token.clone(),
                read: t.scopes.contains(&Scope::Read),
                write: t.scopes.contains(&Scope::Write),
            })
            .collect();
        if let Some(t) = &cfg.write_token {
            entries.push(Entry { name: "env-write".into(), token: t.clone(), read: true, write: true });
        }
        if let Some(t) = &cfg.read_token {
            entries.push(Entry { name: "env-read".into(), token: t.clone(), read: true, write: false });
        }
        Self { entries, public_reads: cfg.public_reads }
    }

    /// The token of an `Authorization` header value, if it is a bearer token.
    fn bearer(header: Option<&[u8]>) -> Option<&[u8]> {
        let h = header?;
        let (scheme, rest) = h.split_at(h.iter().position(|b| *b == b' ')?);
        scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
    }

    /// Checks the `Authorization` header value `header` for `scope`.
    pub fn check(&self, header: Option<&[u8]>, scope: Scope) -> Result<Caller, Problem> {
        let presented = Self::bearer(header);
        if header.is_some() && presented.is_none() {
            return Err(Problem::unauthorized("the Authorization header must be `Bearer <token>`"));
        }
        let Some(token) = presented else {
            return match scope {
                Scope::Read if self.public_reads => Ok(Caller::Anonymous),
                Scope::Read => Err(Problem::unauthorized("reads need a token with the `read` scope")),
                Scope::Write => Err(Problem::unauthorized("writes need a token with the `write` scope")),
            };
        };
        // Every entry is compared, matching or not, so the time says nothing about which.
        let mut found: Option<&Entry> = None;
        for e in &self.entries {
            if e.token.matches(token) {
                found = Some(e);
            }
        }
        let Some(e) = found else {
            return Err(Problem::unauthorized("the token is not one of this instance's tokens"));
        };
        let allowed = match scope {
            Scope::Read => e.read,
            Scope::Write => e.write,
        };
        if !allowed {
            let needed = match scope {
                Scope::Read => "read",
                Scope::Write => "write",
            };
            return Err(Problem::forbidden(format!("this token does not have the `{needed}` scope")));
        }
        Ok(Caller::Token(e.name.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApiToken, Config};

    fn auth(public_reads: bool) -> Auth {
        let mut cfg = Config::default().http;
        cfg.public_reads = public_reads;
        cfg.tokens = vec![
            ApiToken { name: "dash".into(), token: Secret::new("read-only-token-0001"), scopes: vec![Scope::Read] },
            ApiToken {
                name: "ingest".into(),
                token: Secret::new("read-write-token-002"),
                scopes: vec![Scope::Read, Scope::Write],
            },
        ];
        Auth::new(&cfg)
    }

    #[test]
    fn scopes_are_enforced_and_problems_name_what_is_missing() {
        let a = auth(false);
        let status = |r: Result<Caller, Problem>| r.map_err(|p| p.status);
        assert_eq!(status(a.check(None, Scope::Read)), Err(401));
        assert_eq!(status(a.check(None, Scope::Write)), Err(401));
        assert_eq!(status(a.check(Some(b"Bearer nope-nope-nope-nope"), Scope::Read)), Err(401));
        assert_eq!(status(a.check(Some(b"Basic abc"), Scope::Read)), Err(401));
        assert_eq!(status(a.check(Some(b"read-only-token-0001"), Scope::Read)), Err(401), "no scheme");
        assert_eq!(a.check(Some(b"Bearer read-only-token-0001"), Scope::Read), Ok(Caller::Token("dash".into())));
        assert_eq!(status(a.check(Some(b"Bearer read-only-token-0001"), Scope::Write)), Err(403));
        assert_eq!(a.check(Some(b"bearer  read-write-token-002 "), Scope::Write), Ok(Caller::Token("ingest".into())));
        let problem = a.check(Some(b"Bearer read-only-token-0001"), Scope::Write).expect_err("forbidden");
        assert!(problem.detail.contains("`write` scope") && !problem.detail.contains("read-only-token"));
    }

    #[test]
    fn public_reads_need_no_token_but_writes_still_do() {
        let a = auth(true);
        assert_eq!(a.check(None, Scope::Read), Ok(Caller::Anonymous));
        assert_eq!(a.check(None, Scope::Write).map_err(|p| p.status), Err(401));
        // A wrong token is still refused: it is a mistake worth telling.
        assert_eq!(a.check(Some(b"Bearer wrong-wrong-wrong-wrong"), Scope::Read).map_err(|p| p.status), Err(401));
    }
}
