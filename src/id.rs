//! Session tokens and the store keys derived from them.
//!
//! A [`Token`] is what the client holds. With the default [`Native`](crate::format::Native) format it
//! is 256 bits from the operating system's CSPRNG, written as 43 characters of unpadded base64url, and
//! the server never stores it: stores are keyed by a [`StoreKey`], the SHA-256 digest of the token, so a
//! Redis dump, a directory listing or the admin listing reveals nothing a client could present (the
//! lesson of Rack's CVE-2019-16782). Other formats derive keys their own way (see [`crate::format`]).
//!
//! Both are short runs of base64url characters (`A-Z a-z 0-9 - _`, at most [`MAX_LEN`]), kept inline:
//! they cost no allocation, copy like integers and are safe as file names and Redis keys.
//!
//! ```
//! use sessionforge::id::{StoreKey, Token};
//!
//! let token = Token::generate();
//! assert_eq!(token.as_str().len(), 43);
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

/// The longest token or store key, in characters.
pub const MAX_LEN: usize = 64;

/// Why a presented token or store key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidId {
    /// Wrong number of characters.
    Length,
    /// A character outside the base64url alphabet (or, for a native token, a non-canonical last one).
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

/// Up to [`MAX_LEN`] base64url characters, kept inline (the bytes past `len` are always zero, so the
/// derived equality and hash are the text's).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Id {
    len: u8,
    text: [u8; MAX_LEN],
}

impl Ord for Id {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Id {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Id {
    /// Checks that `s` is `min..=MAX_LEN` base64url characters.
    fn parse(s: &str, min: usize) -> Result<Self, InvalidId> {
        let bytes = s.as_bytes();
        if bytes.len() < min || bytes.len() > MAX_LEN {
            return Err(InvalidId::Length);
        }
        if bytes.iter().any(|&b| B64URL[usize::from(b)] == 64) {
            return Err(InvalidId::Alphabet);
        }
        let mut text = [0u8; MAX_LEN];
        text[..bytes.len()].copy_from_slice(bytes);
        Ok(Id {
            // At most MAX_LEN (64): fits a byte.
            len: bytes.len() as u8,
            text,
        })
    }

    /// The unpadded base64url text of `raw` (at most 48 bytes).
    fn encode(raw: &[u8]) -> Self {
        let mut text = [0u8; MAX_LEN];
        let written = URL_SAFE_NO_PAD
            .encode_slice(raw, &mut text)
            .expect("at most 48 bytes fit 64 characters");
        Id {
            len: written as u8,
            text,
        }
    }

    fn as_str(&self) -> &str {
        // Only base64url (ASCII) is ever stored, so this cannot fail.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Random bytes from the operating system's CSPRNG, as unpadded base64url.
///
/// # Panics
///
/// Only if the operating system has no random source at all, which no supported platform lacks; a
/// session library that silently fell back to weaker randomness would be worse.
fn random(bytes: usize) -> Id {
    let mut buf = [0u8; 48];
    let raw = &mut buf[..bytes.min(48)];
    getrandom::fill(raw).expect("the operating system's random source is unavailable");
    Id::encode(raw)
}

/// The secret a client presents: base64url characters, 43 of them (256 random bits) for the native
/// format.
///
/// `Debug` is redacted; the only ways to see the text are [`Token::as_str`] and [`Token::into_string`],
/// which the transports use to write the cookie or header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(Id);

impl Token {
    /// A fresh native token: 256 bits from the operating system's CSPRNG, 43 characters.
    pub fn generate() -> Self {
        Token(random(32))
    }

    /// A fresh token of `bytes` random bytes (at most 48), written as base64url: what a format that
    /// needs another length draws (express-session's sids are 24 bytes, 32 characters).
    pub fn random(bytes: usize) -> Self {
        Token(random(bytes))
    }

    /// Parses a presented native token strictly: exactly 43 base64url characters, canonical (the last
    /// character carries two padding bits, which must be zero, so one value has exactly one text).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.len() != 43 {
            return Err(InvalidId::Length);
        }
        let id = Id::parse(s, 43)?;
        if B64URL[usize::from(id.text[42])] & 0b11 != 0 {
            return Err(InvalidId::Alphabet);
        }
        Ok(Token(id))
    }

    /// Parses a token of `min..=`[`MAX_LEN`] base64url characters, without the native format's exact
    /// length: for formats whose tokens come from elsewhere (an express-session sid).
    pub fn parse_loose(s: &str, min: usize) -> Result<Self, InvalidId> {
        Id::parse(s, min.max(1)).map(Token)
    }

    /// The text to send to the client.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The text to send to the client, by value.
    pub fn into_string(self) -> String {
        self.as_str().to_owned()
    }

    /// The native store key of this token: its SHA-256 digest, as 43 base64url characters.
    pub fn store_key(&self) -> StoreKey {
        StoreKey(Id::encode(&Sha256::digest(self.as_str().as_bytes())))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The key a store files a session under: 1 to [`MAX_LEN`] base64url characters. For the native
/// format, the SHA-256 digest of the session's token (43 characters).
///
/// Safe to log, list and use as a file name or a Redis key: its alphabet has no path separators, dots,
/// spaces or glob characters. Ordered as its text is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreKey(Id);

impl StoreKey {
    /// Validates a store key given as text (an admin path segment, a file name, a Redis key's tail).
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        Id::parse(s, 1).map(StoreKey)
    }

    /// The key whose text is `token`'s (for formats that key sessions by the token itself).
    pub fn of_token(token: &Token) -> Self {
        StoreKey(token.0)
    }

    /// A key derived from arbitrary bytes: their SHA-256 digest, truncated to `bytes` (at most 32) and
    /// written as base64url. For keys of a store's own (a marker that must not collide with sessions).
    pub fn digest_of(data: &[u8], bytes: usize) -> Self {
        let digest = Sha256::digest(data);
        StoreKey(Id::encode(&digest[..bytes.clamp(1, 32)]))
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

impl serde::Serialize for StoreKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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
        assert_eq!(a.as_str().len(), 43);
        assert!(Token::parse(a.as_str()).is_ok());
        assert_eq!(Token::random(24).as_str().len(), 32);
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
            }
        }
        // A multi-byte character of the right byte length is refused, not sliced.
        let accented = format!("é{}", &base[2..]);
        assert_eq!(accented.len(), 43);
        assert_eq!(Token::parse(&accented), Err(InvalidId::Alphabet));
    }

    #[test]
    fn loose_tokens_and_store_keys_take_any_base64url_run_up_to_the_limit() {
        assert!(Token::parse_loose(&"a".repeat(32), 16).is_ok());
        assert_eq!(
            Token::parse_loose(&"a".repeat(15), 16),
            Err(InvalidId::Length)
        );
        assert_eq!(
            Token::parse_loose(&"a".repeat(MAX_LEN + 1), 16),
            Err(InvalidId::Length)
        );
        assert_eq!(
            Token::parse_loose("abc.defghijklmnopq", 16),
            Err(InvalidId::Alphabet)
        );
        assert!(StoreKey::parse("x").is_ok());
        assert_eq!(StoreKey::parse(""), Err(InvalidId::Length));
        assert_eq!(StoreKey::parse("a/b"), Err(InvalidId::Alphabet));
        let t = Token::parse_loose("abcdefghijklmnopqrstuvwxyz012345", 16).unwrap();
        assert_eq!(StoreKey::of_token(&t).as_str(), t.as_str());
        assert_eq!(StoreKey::digest_of(b"x", 16).as_str().len(), 22);
    }

    #[test]
    fn texts_round_trip_and_order_as_text() {
        let a = Token::generate().store_key();
        let b = Token::generate().store_key();
        assert_eq!(StoreKey::parse(a.as_str()), Ok(a));
        assert_eq!(a.cmp(&b), a.as_str().cmp(b.as_str()));
        // Shorter keys order before their extensions, as text does.
        let short = StoreKey::parse("ab").unwrap();
        let long = StoreKey::parse("abc").unwrap();
        assert!(short < long);
        let t = Token::generate();
        assert_eq!(Token::parse(&t.into_string()), Ok(t));
    }

    #[test]
    fn store_key_is_a_stable_digest_that_differs_from_the_token() {
        let t = Token::parse(&"A".repeat(43)).unwrap();
        let k = t.store_key();
        assert_eq!(k, t.store_key());
        assert_ne!(k.as_str(), t.as_str());
        assert_eq!(k.as_str().len(), 43);
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
