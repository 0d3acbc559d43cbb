//! Session tokens and the store keys derived from them.
//!
//! A [`Token`] is what the client holds: 256 bits from the operating system's CSPRNG, written as 43
//! characters of unpadded base64url. The server never stores it. Stores are keyed by a [`StoreKey`], the
//! SHA-256 digest of the token (again 43 characters of base64url), so a Redis dump, a directory listing or
//! the admin listing reveals nothing a client could present (the lesson of Rack's CVE-2019-16782).
//!
//! ```
//! use sessionforge::id::{StoreKey, Token};
//!
//! let token = Token::generate();
//! assert_eq!(token.as_str().len(), Token::LEN);
//! // A token survives a round trip through its text form ...
//! let parsed = Token::parse(token.as_str()).unwrap();
//! assert_eq!(parsed.store_key(), token.store_key());
//! // ... but anything else is refused before it reaches a store.
//! assert!(Token::parse("../../etc/passwd").is_err());
//! // Debug output never shows the secret.
//! assert!(!format!("{token:?}").contains(token.as_str()));
//! // Store keys are safe to show and to use as file names.
//! assert!(StoreKey::parse(token.store_key().as_str()).is_ok());
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;

/// Number of random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// Why a presented token or store key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidId {
    /// Wrong number of characters.
    Length,
    /// A character outside the base64url alphabet.
    Alphabet,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidId::Length => f.write_str("session id has the wrong length"),
            InvalidId::Alphabet => f.write_str("session id has a character outside base64url"),
        }
    }
}

impl std::error::Error for InvalidId {}

/// Checks that `s` is exactly `len` characters of the unpadded base64url alphabet.
fn check_b64url(s: &str, len: usize) -> Result<(), InvalidId> {
    if s.len() != len {
        return Err(InvalidId::Length);
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(InvalidId::Alphabet);
    }
    // The last character of 43 base64url characters carries only 4 meaningful bits; a canonical encoding
    // leaves the other 2 at zero. Decoding refuses the non-canonical spellings, so one secret has one text.
    // Decoded into a stack buffer: this runs on every request that presents a token.
    let mut buf = [0u8; 64];
    let decoded = if len <= 80 {
        URL_SAFE_NO_PAD.decode_slice(s, &mut buf).is_ok()
    } else {
        URL_SAFE_NO_PAD.decode(s).is_ok()
    };
    if decoded {
        Ok(())
    } else {
        Err(InvalidId::Alphabet)
    }
}

/// The secret a client presents: 256 random bits as fixed-length base64url.
///
/// `Debug` is redacted; the only ways to see the text are [`Token::as_str`] and [`Token::into_string`],
/// which the transports use to write the cookie or header.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Length of a token's text form.
    pub const LEN: usize = 43;

    /// A fresh token from the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// Only if the operating system has no random source at all, which no supported platform lacks; a
    /// session library that silently fell back to weaker randomness would be worse.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the operating system's random source is unavailable");
        Token(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses a presented token strictly: exactly [`Token::LEN`] base64url characters, canonical.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check_b64url(s, Self::LEN)?;
        Ok(Token(s.to_owned()))
    }

    /// The text to send to the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text to send to the client, by value.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The key under which the store keeps this token's session: SHA-256 of the token, base64url.
    pub fn store_key(&self) -> StoreKey {
        let digest = Sha256::digest(self.0.as_bytes());
        StoreKey(URL_SAFE_NO_PAD.encode(digest))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The key a store files a session under: the SHA-256 digest of its token, as 43 base64url characters.
///
/// Safe to log, list and use as a file name: it cannot be turned back into a token, and its alphabet has
/// no path separators or dots.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(String);

impl StoreKey {
    /// Length of a store key's text form.
    pub const LEN: usize = 43;

    /// Parses a store key (as shown by the admin listing) strictly.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        check_b64url(s, Self::LEN)?;
        Ok(StoreKey(s.to_owned()))
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({})", self.0)
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_and_well_formed() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), Token::LEN);
        assert!(Token::parse(a.as_str()).is_ok());
    }

    #[test]
    fn parse_refuses_wrong_length_alphabet_and_non_canonical_text() {
        let t = Token::generate();
        assert_eq!(Token::parse(&t.as_str()[1..]), Err(InvalidId::Length));
        assert_eq!(
            Token::parse(&format!("{}A", t.as_str())),
            Err(InvalidId::Length)
        );
        let dotted = format!("{}.", &t.as_str()[..42]);
        assert_eq!(Token::parse(&dotted), Err(InvalidId::Alphabet));
        let slashed = format!("/{}", &t.as_str()[1..]);
        assert_eq!(Token::parse(&slashed), Err(InvalidId::Alphabet));
        // 'B' as the last of 43 characters sets a bit past the 256 that were encoded.
        let non_canonical = format!("{}B", &"A".repeat(42));
        assert_eq!(Token::parse(&non_canonical), Err(InvalidId::Alphabet));
        assert!(Token::parse(&"A".repeat(43)).is_ok());
    }

    #[test]
    fn store_key_is_a_stable_digest_that_differs_from_the_token() {
        let t = Token::parse(&"A".repeat(43)).unwrap();
        let k = t.store_key();
        assert_eq!(k, t.store_key());
        assert_ne!(k.as_str(), t.as_str());
        assert_eq!(k.as_str().len(), StoreKey::LEN);
        assert!(StoreKey::parse(k.as_str()).is_ok());
    }

    #[test]
    fn debug_redacts_tokens() {
        let t = Token::generate();
        let shown = format!("{t:?}");
        assert!(!shown.contains(t.as_str()));
        assert!(shown.contains("redacted"));
    }
}
