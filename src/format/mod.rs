//! Session formats: how a token looks, how a store key is derived from it, and how a record is
//! encoded in a store.
//!
//! A store is built with a format ([`SessionStore::format`](crate::store::SessionStore::format)) and
//! the layer follows its store, so the cookie it issues, the key it asks for and the bytes the store
//! writes always agree.
//!
//! | format | token and cookie | store key | stored value | index |
//! |---|---|---|---|---|
//! | [`Native`] (default) | 256 random bits, 43 base64url characters | SHA-256 of the token | readable JSON ([`Record`]) | yes |
//! | [`Express`] | express-session's `s:<sid>.<signature>` | the sid itself | express-session's JSON | no (`SCAN`) |
//!
//! A new format is one more implementation of [`Format`]: a compact binary encoding, a shorter key.
//!
//! # Pitfalls
//!
//! * Build every store of one application with the same format: a failover store's primary and
//!   fallback, and every instance sharing a Redis. The layer takes it from the store it is given.
//! * Changing the format of a running deployment logs everyone out, unless a format reads both
//!   (see `SECURITY.md` for a rolling cut-over from the express format to the native one).

use crate::id::{StoreKey, Token};
use crate::store::{Record, StoreError, VersionRule};
use std::fmt;
use std::sync::{Arc, OnceLock};

mod express;
mod native;

pub use express::{Express, ExpressError};
pub use native::Native;

/// A format, shared by the layer and the stores.
pub type SharedFormat = Arc<dyn Format>;

/// The native format, shared.
pub fn native() -> SharedFormat {
    static NATIVE: OnceLock<SharedFormat> = OnceLock::new();
    NATIVE.get_or_init(|| Arc::new(Native)).clone()
}

/// How tokens look, how keys are derived and how records are stored. See the [module docs](self).
pub trait Format: Send + Sync + fmt::Debug + 'static {
    /// The format's name (`"native"`, `"express"`), for logs and errors.
    fn name(&self) -> &'static str;

    /// A fresh token for a new session.
    fn generate(&self) -> Token;

    /// The token inside a presented cookie or header value, if the value is well-formed (and, for a
    /// format that signs its tokens, correctly signed). Anything else is `None`: the client gets a
    /// fresh session and nothing it sent reaches a store.
    fn open(&self, presented: &str) -> Option<Token>;

    /// What the cookie or header carries for `token`.
    fn seal(&self, token: &Token) -> String;

    /// Whether [`Format::seal`] signs the token itself (then the layer's own signing keys do not
    /// apply).
    fn signs_tokens(&self) -> bool {
        false
    }

    /// The key the store files the session of `token` under.
    fn store_key(&self, token: &Token) -> StoreKey;

    /// Whether `key` could be one of this format's store keys: a store that finds entries by name (the
    /// file store's directory) leaves the others alone. Every key by default.
    fn accepts_key(&self, key: &StoreKey) -> bool {
        let _ = key;
        true
    }

    /// The record as stored.
    fn encode(&self, record: &Record) -> Vec<u8>;

    /// A stored value as a record; what is not one is [`StoreError::Corrupt`].
    fn decode(&self, stored: &[u8]) -> Result<Record, StoreError>;

    /// How a store reads a stored value's version without decoding it.
    fn version_rule(&self) -> VersionRule;

    /// Whether stores keep their own expiry and per-user indexes for this format. A format shared
    /// with another application that would not keep them up to date answers `false`: stores then
    /// count, list and find a user's sessions by scanning.
    fn indexed(&self) -> bool {
        true
    }

    /// Whether another application may move a session's expiry by its store's TTL alone (a Node
    /// touch is an `EXPIRE`): stores with TTLs then read the expiry from the TTL, not the value.
    fn expiry_in_ttl(&self) -> bool {
        false
    }

    /// The cookie name an application of this format uses by default.
    fn cookie_name(&self) -> &'static str {
        "id"
    }
}
