//! [`Native`]: the default format.

use super::Format;
use crate::id::{StoreKey, Token};
use crate::store::{Record, StoreError, VersionRule};

/// The default format: 256-bit random tokens (43 base64url characters), stores keyed by the token's
/// SHA-256 digest, and records stored as readable JSON ([`Record::to_json`]) that starts with its
/// version, `{"lastAccess":<ms>,…`.
///
/// ```
/// use sessionforge::format::{Format, Native};
///
/// let token = Native.generate();
/// assert_eq!(Native.open(&Native.seal(&token)), Some(token));
/// assert_ne!(Native.store_key(&token).as_str(), token.as_str());
/// assert_eq!(Native.open("not a token"), None);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Native;

/// What every native record starts with, before its `lastAccess`.
pub(crate) const VERSION_PREFIX: &str = "{\"lastAccess\":";

impl Format for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn generate(&self) -> Token {
        Token::generate()
    }

    fn open(&self, presented: &str) -> Option<Token> {
        Token::parse(presented).ok()
    }

    fn seal(&self, token: &Token) -> String {
        token.as_str().to_owned()
    }

    fn store_key(&self, token: &Token) -> StoreKey {
        token.store_key()
    }

    /// Only digests: 43 characters, like every key [`Token::store_key`] gives.
    fn accepts_key(&self, key: &StoreKey) -> bool {
        key.as_str().len() == 43
    }

    fn encode(&self, record: &Record) -> Vec<u8> {
        record.to_json()
    }

    fn decode(&self, stored: &[u8]) -> Result<Record, StoreError> {
        Record::from_json(stored)
    }

    fn version_rule(&self) -> VersionRule {
        VersionRule::LeadingInteger {
            prefix: VERSION_PREFIX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::Timestamp;

    #[test]
    fn a_native_record_starts_with_the_prefix_its_version_rule_reads() {
        let r = Record::new(
            Timestamp::from_millis(1_752_360_300_123),
            Timestamp::from_millis(1_752_360_400_000),
            Timestamp::from_millis(1_752_360_500_000),
        );
        let bytes = Native.encode(&r);
        assert!(bytes.starts_with(VERSION_PREFIX.as_bytes()));
        assert_eq!(
            Native.version_rule().version_of(&bytes).as_str(),
            "1752360300123"
        );
        assert_eq!(Native.decode(&bytes).unwrap(), r);
    }
}
