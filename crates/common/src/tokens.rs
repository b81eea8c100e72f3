//! Bearer tokens from a tokens file. Secrets are compared in constant time and
//! never printed: `Debug` shows names only.
//!
//! File format: one token per line, `name:secret[:more fields]`; blank lines and
//! lines starting with `#` are ignored. spoold uses `name:secret`; ledgerd uses
//! `name:secret:role[:payee-uuid]`.

use std::path::Path;

use subtle::ConstantTimeEq;

/// Shortest secret accepted, in bytes: 16 bytes of randomness is the floor for a
/// bearer token that guards payments.
pub const SECRET_BYTES_MIN: usize = 16;

/// One token: its name (safe to log), its secret, and the fields after the secret.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    secret: Vec<u8>,
    pub extra: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("name", &self.name).field("secret", &"<redacted>").finish()
    }
}

/// The set of tokens a daemon accepts.
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    tokens: Vec<Token>,
}

impl TokenSet {
    /// Reads a tokens file. Errors name the line, never the secret.
    pub fn load(path: &Path) -> Result<TokenSet, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("read tokens file {}: {e}", path.display()))?;
        TokenSet::parse(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))
    }

    /// Parses the text of a tokens file.
    pub fn parse(text: &str) -> Result<TokenSet, String> {
        let mut tokens: Vec<Token> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split(':');
            let name = parts.next().unwrap_or_default().trim().to_owned();
            let secret = parts.next().unwrap_or_default().trim().as_bytes().to_vec();
            if name.is_empty() {
                return Err(format!("line {}: empty token name", n + 1));
            }
            if secret.len() < SECRET_BYTES_MIN {
                return Err(format!(
                    "line {} (token {name:?}): secret shorter than {SECRET_BYTES_MIN} bytes",
                    n + 1
                ));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(format!("line {}: token name {name:?} appears twice", n + 1));
            }
            let extra = parts.map(|p| p.trim().to_owned()).collect();
            tokens.push(Token { name, secret, extra });
        }
        Ok(TokenSet { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }

    /// The token whose secret is `secret`. Every stored secret is compared, each
    /// in constant time, so timing does not tell which one (or whether any) matched.
    pub fn find(&self, secret: &[u8]) -> Option<&Token> {
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.secret.as_slice().ct_eq(secret)) {
                found = Some(t);
            }
        }
        found
    }

    /// The token presented in an `Authorization: Bearer <secret>` header value.
    /// The scheme is case-insensitive (RFC 9110 §11.1), the secret is not.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Option<&Token> {
        self.find(bearer_secret(header?)?)
    }
}

/// The secret of an `Authorization: Bearer <secret>` header value: the scheme
/// matched case-insensitively, then exactly one space.
pub fn bearer_secret(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") || rest.is_empty() {
        return None;
    }
    Some(rest)
}

/// A secret (e.g. the ledger token a node presents) that never prints:
/// `Debug` shows `<redacted>`; only [`Secret::expose`] gives the text.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_match() {
        let set = TokenSet::parse("# comment\nfront-1:0123456789abcdef0123\n\nadmin:abcdefabcdefabcdef:admin\n")
            .expect("parse");
        assert_eq!(set.len(), 2);
        let t = set.authenticate(Some(b"Bearer abcdefabcdefabcdef")).expect("match");
        assert_eq!(t.name, "admin");
        assert_eq!(t.extra, vec!["admin".to_owned()]);
        assert!(set.authenticate(Some(b"Bearer abcdefabcdefabcdeX")).is_none());
        assert!(set.authenticate(Some(b"bEaReR abcdefabcdefabcdef")).is_some(), "scheme is case-insensitive");
        assert!(set.authenticate(Some(b"Basic abcdefabcdefabcdef")).is_none());
        assert!(set.authenticate(Some(b"Bearer ")).is_none());
        assert!(set.authenticate(Some(b"abcdefabcdefabcdef")).is_none());
        assert!(set.authenticate(None).is_none());
        assert!(!format!("{set:?}").contains("abcdef"), "Debug must not print secrets");
    }

    #[test]
    fn bad_token_files_are_refused_without_echoing_secrets() {
        let e = TokenSet::parse("a:short").expect_err("short secret");
        assert!(e.contains("line 1") && !e.contains("short\""), "{e}");
        assert!(TokenSet::parse(":0123456789abcdef0").is_err());
        assert!(TokenSet::parse("a:0123456789abcdef0\na:0123456789abcdef1").is_err());
    }
}
