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

/// The value of each base64url character (`0..64`), or 64 for a byte outside the alphabet.
const B64URL: [u8; 256] = {
    let mut t = [64u8; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// 43 characters of base64url, the text of 32 bytes, kept inline: a token or a store key costs no
/// allocation and copies like an integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id43([u8; 43]);

impl Id43 {
    /// Checks `s`: exactly 43 characters, all base64url, and canonical (the last character carries two
    /// padding bits, which must be zero, so one value has exactly one text).
    fn parse(s: &str) -> Result<Self, InvalidId> {
        let bytes: &[u8; 43] = s.as_bytes().try_into().map_err(|_| InvalidId::Length)?;
        if bytes.iter().any(|&b| B64URL[usize::from(b)] == 64) {
            return Err(InvalidId::Alphabet);
        }
        if B64URL[usize::from(bytes[42])] & 0b11 != 0 {
            return Err(InvalidId::Alphabet);
        }
        Ok(Id43(*bytes))
    }

    /// The text of 32 bytes.
    fn encode(raw: &[u8; 32]) -> Self {
        let mut out = [0u8; 43];
        let written = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut out)
            .expect("32 bytes are 43 characters of unpadded base64");
        debug_assert_eq!(written, 43);
        Id43(out)
    }

    fn as_str(&self) -> &str {
        // Only base64url (ASCII) is ever stored, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The secret a client presents: 256 random bits as fixed-length base64url.
///
/// `Debug` is redacted; the only ways to see the text are [`Token::as_str`] and [`Token::into_string`],
/// which the transports use to write the cookie or header.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Id43);

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
        Token(Id43::encode(&bytes))
    }

    /// Parses a presented token strictly: exactly [`Token::LEN`] base64url characters, canonical.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        Id43::parse(s).map(Token)
    }

    /// The text to send to the client.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The text to send to the client, by value.
    pub fn into_string(self) -> String {
        self.as_str().to_owned()
    }

    /// The key under which the store keeps this token's session: SHA-256 of the token, base64url.
    pub fn store_key(&self) -> StoreKey {
        StoreKey(Id43::encode(&Sha256::digest(self.0 .0).into()))
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
/// no path separators or dots. Ordered as its text is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(Id43);

impl StoreKey {
    /// Length of a store key in characters.
    pub const LEN: usize = 43;

    /// Validates a store key given as text (an admin path segment, a file name).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        Id43::parse(s).map(StoreKey)
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({})", self.as_str())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
    fn parse_accepts_exactly_what_a_strict_base64url_decoder_accepts() {
        // Every byte value in every position class: the 42 leading characters and the last one (whose
        // two padding bits must be zero). The table-driven check must agree with the `base64` crate.
        let base = Token::generate().into_string();
        for pos in [0, 21, 41, 42] {
            for b in 0..=255u8 {
                let mut bytes = base.clone().into_bytes();
                bytes[pos] = b;
                let Ok(text) = String::from_utf8(bytes) else {
                    continue;
                };
                let mut buf = [0u8; 33];
                let strict =
                    text.len() == 43 && URL_SAFE_NO_PAD.decode_slice(&text, &mut buf).is_ok();
                assert_eq!(
                    Token::parse(&text).is_ok(),
                    strict,
                    "byte {b:#04x} at {pos}"
                );
                assert_eq!(StoreKey::parse(&text).is_ok(), strict);
            }
        }
        // A multi-byte character of the right byte length is refused, not sliced.
        let accented = format!("é{}", &base[2..]);
        assert_eq!(accented.len(), 43);
        assert_eq!(Token::parse(&accented), Err(InvalidId::Alphabet));
    }

    #[test]
    fn texts_round_trip_and_order_as_text() {
        let a = Token::generate().store_key();
        let b = Token::generate().store_key();
        assert_eq!(StoreKey::parse(a.as_str()), Ok(a));
        assert_eq!(a.cmp(&b), a.as_str().cmp(b.as_str()));
        let t = Token::generate();
        assert_eq!(Token::parse(&t.clone().into_string()), Ok(t));
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
