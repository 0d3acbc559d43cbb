//! [`Version`]: what a load hands out and a compare-and-swap gives back, and [`VersionRule`]: how a
//! store reads one from stored bytes without decoding them.

use std::fmt;
use std::sync::Arc;

/// An opaque version of a stored record, handed out by `load` and given back to `replace` (or `save`)
/// so a store can tell whether anything changed in between. Its meaning is the store's own: a counter,
/// the record's `lastAccess` (see [`Record`](super::Record)), a digest.
///
/// Cheap to clone, and made without allocating when short: up to [`Version::INLINE`] bytes of text are
/// kept inline (a counter, a timestamp, a short digest); longer text is shared.
///
/// ```
/// use sessionforge::store::Version;
///
/// assert_eq!(Version::new("17").as_str(), "17");
/// let long = "x".repeat(100);
/// assert_eq!(Version::new(&long), Version::new(long.clone()));
/// assert_ne!(Version::new("17"), Version::new("18"));
/// ```
#[derive(Clone)]
pub struct Version(Text);

#[derive(Clone)]
enum Text {
    Inline(u8, [u8; Version::INLINE]),
    Shared(Arc<str>),
}

impl Version {
    /// The longest text kept inline, in bytes.
    pub const INLINE: usize = 30;

    /// A version with the given text.
    pub fn new(v: impl AsRef<str>) -> Self {
        let text = v.as_ref();
        if text.len() <= Self::INLINE {
            let mut buf = [0u8; Self::INLINE];
            buf[..text.len()].copy_from_slice(text.as_bytes());
            // At most `INLINE` (30): fits a byte.
            Version(Text::Inline(text.len() as u8, buf))
        } else {
            Version(Text::Shared(Arc::from(text)))
        }
    }

    /// A version that matches no stored record: a save against it always merges.
    pub fn none() -> Self {
        Version::new("")
    }

    /// The version's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied whole from a `&str`, so always UTF-8.
            Text::Inline(len, buf) => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            Text::Shared(text) => text,
        }
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Version {}

impl std::hash::Hash for Version {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Version").field(&self.as_str()).finish()
    }
}

/// How a store reads the version of a stored value from its bytes, without decoding it: the same rule
/// on both ends of a compare-and-swap (in Redis, a Lua script applies it to the value it holds).
///
/// A [`Format`](crate::format::Format) names the rule for the values it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionRule {
    /// The decimal integer right after `prefix` at the start of the value (the native format starts
    /// with `{"lastAccess":<ms>`, which every write moves on). A value that does not start so (written
    /// by an older release, or by someone else) falls back to its digest.
    LeadingInteger {
        /// The bytes before the integer.
        prefix: &'static str,
    },
    /// The lower-case hex SHA-1 of the whole value (Lua's `redis.sha1hex`): for values written by
    /// others, whose content is all there is to compare.
    Digest,
}

impl VersionRule {
    /// The version of `stored` under this rule.
    ///
    /// ```
    /// use sessionforge::store::VersionRule;
    ///
    /// let rule = VersionRule::LeadingInteger { prefix: "{\"lastAccess\":" };
    /// assert_eq!(rule.version_of(br#"{"lastAccess":1752360300000,"data":{}}"#).as_str(), "1752360300000");
    /// // Anything else: its digest.
    /// assert_eq!(rule.version_of(b"abc").as_str(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    /// ```
    pub fn version_of(self, stored: &[u8]) -> Version {
        if let VersionRule::LeadingInteger { prefix } = self {
            if let Some(rest) = stored.strip_prefix(prefix.as_bytes()) {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                if (1..=20).contains(&digits) {
                    // ASCII digits: always UTF-8.
                    return Version::new(std::str::from_utf8(&rest[..digits]).unwrap_or_default());
                }
            }
        }
        sha1_hex(stored)
    }
}

/// The lower-case hex SHA-1 of `bytes`, as Lua's `redis.sha1hex` writes it.
fn sha1_hex(bytes: &[u8]) -> Version {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha1_smol::Sha1::from(bytes).digest().bytes();
    let mut hex = [0u8; 40];
    for (i, b) in digest.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    Version::new(std::str::from_utf8(&hex).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_keep_their_text_inline_or_shared_alike() {
        use std::hash::{BuildHasher, RandomState};
        let hasher = RandomState::new();
        for len in [
            0,
            1,
            Version::INLINE - 1,
            Version::INLINE,
            Version::INLINE + 1,
            1024,
        ] {
            let text: String = "aé".chars().cycle().take(len).collect();
            let v = Version::new(&text);
            assert_eq!(v.as_str(), text, "{len}");
            assert_eq!(v.clone(), Version::new(text.clone()));
            assert_eq!(hasher.hash_one(&v), hasher.hash_one(Version::new(&text)));
            let other: String = format!("{text}!");
            assert_ne!(v, Version::new(other));
        }
        // A multi-byte character that straddles the inline limit goes to the shared form whole.
        let straddling = format!("{}é", "a".repeat(Version::INLINE - 1));
        assert_eq!(Version::new(&straddling).as_str(), straddling);
        assert_eq!(format!("{:?}", Version::new("7")), "Version(\"7\")");
    }

    #[test]
    fn the_leading_integer_rule_reads_the_number_and_falls_back_to_the_digest() {
        let rule = VersionRule::LeadingInteger {
            prefix: "{\"lastAccess\":",
        };
        assert_eq!(rule.version_of(b"{\"lastAccess\":7,\"x\":1}").as_str(), "7");
        for other in [
            &b"{\"createdAt\":1,\"lastAccess\":2}"[..],
            b"{\"lastAccess\":,}",
            b"{\"lastAccess\":123456789012345678901,}",
            b"",
        ] {
            assert_eq!(
                rule.version_of(other),
                VersionRule::Digest.version_of(other)
            );
        }
        // sha1("abc"), as `redis-cli EVAL "return redis.sha1hex(ARGV[1])" 0 abc` prints it.
        assert_eq!(
            VersionRule::Digest.version_of(b"abc").as_str(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }
}
