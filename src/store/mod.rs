//! Session stores: the contract every backend implements, and the built-in backends.
//!
//! # The contract in one page
//!
//! A store keeps [`Record`]s under [`StoreKey`]s. To write one, implement [`SessionStore`]: a name and
//! four primitive operations. Everything else is provided on top of them, generic over any store:
//!
//! | you implement | what it must do |
//! |---|---|
//! | [`name`](SessionStore::name) | `"postgres"`, `"dynamo"`: how health, stats and errors name your store |
//! | [`load`](SessionStore::load) | the record and a [`Version`] of it; `None` when absent or expired |
//! | [`create`](SessionStore::create) | store a record only if the key is free ([`Created::Exists`] otherwise) |
//! | [`replace`](SessionStore::replace) | write a record, or remove it (`None`), **only if** its version is still the one given: a compare-and-swap |
//! | [`delete`](SessionStore::delete) | remove a record unconditionally |
//!
//! A version is whatever your backend can compare cheaply: a counter, a row version, or the record's
//! `last_access`, which the crate moves forward on every write (see [`Record`]).
//!
//! | provided | on top of the primitives |
//! |---|---|
//! | [`save`](SessionStore::save) | apply one request's [`ChangeSet`] to what is stored **now**: compare-and-swap, and on a conflict load, [`merge`](Record::merge) and try again. Removes the session when the changes leave it empty. Never recreates a deleted session |
//! | [`renew`](SessionStore::renew) | move a session to a new key (login, against fixation): the new key is written first, the old one removed only if unchanged, concurrent changes follow; fails when the old key is gone |
//! | [`revoke_user_sessions`](SessionStore::revoke_user_sessions) | list a user's sessions and delete them |
//!
//! A store that can do better overrides a provided method: the Redis store saves in one script round
//! trip, the memory store under its lock. The guarantees stay the same whoever does the work.
//!
//! Optional capabilities answer [`StoreError::Unsupported`] until a store implements them, and the
//! admin service then answers `501` with `{"error":"this session store cannot …"}`, never a wrong
//! figure: [`user_sessions`](SessionStore::user_sessions) (per-user index, needed for revoke and the
//! per-user cap), [`count`](SessionStore::count) and [`list`](SessionStore::list),
//! [`cleanup`](SessionStore::cleanup), [`usage`](SessionStore::usage). [`health`](SessionStore::health)
//! answers "ok" by default, and [`info`](SessionStore::info) ("nothing to show").
//!
//! `examples/custom_store.rs` is a complete store of about a hundred lines; the conformance kit
//! (`sessionforge::store::conformance`, feature `test-util`) checks a store against everything below.
//!
//! # The guarantees
//!
//! * **Lossless concurrent writes.** Two requests that change different keys of one session both land;
//!   on the same key the last writer wins; [`increment`](crate::Session::increment)s all count.
//! * **No resurrection.** A session deleted (logout, admin delete, revoke) while a request was in
//!   flight is never written again by that request, nor by a renewal, nor (in the failover store) by a
//!   failover or failback.
//! * **Empty means gone.** A save whose changes leave the stored session with no data and no user
//!   removes it; the store decides on what it holds, so a concurrent writer's key keeps it alive.
//! * **Expiry.** A store never answers a record whose `expires` has passed, and forgets it by then or
//!   at [`cleanup`](SessionStore::cleanup).
//! * **Corrupt data is no session.** A value a store cannot decode is absent (logged, set aside).
//!
//! Every method takes `&self`; a store is shared between requests (keep its state behind an `Arc`),
//! and cloning one shares that state. Methods return `impl Future + Send`, so a concrete store costs
//! no boxing; the layer and the admin service erase the store behind one boxed future per call.

use crate::id::StoreKey;
use std::future::Future;
use std::sync::Arc;

#[cfg(feature = "test-util")]
pub mod conformance;
mod describe;
pub(crate) mod dynamic;
mod error;
pub mod failover;
pub mod file;
pub mod memory;
mod provided;
mod record;
#[cfg(feature = "redis")]
pub mod redis;
mod version;

pub(crate) use describe::human_bytes;
pub use describe::{sort_user_sessions, Backend, Health, HealthStatus, Page, Summary, Usage};
pub use error::{BoxError, StoreError};
pub use failover::FailoverStore;
pub use file::FileStore;
pub use memory::MemoryStore;
pub use record::{ChangeSet, Data, Record};
pub use version::{Version, VersionRule};

pub(crate) use record::add_to;
#[cfg(test)]
pub(crate) use record::test_record;

/// A record as loaded, with the version to compare against.
///
/// The record is shared: a store that keeps records in memory (the memory store, the Redis read cache)
/// hands out the record it keeps without copying it, and the session copies it only when the request
/// changes something ([`Arc::make_mut`]). A read therefore costs the same whatever the session holds.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Loaded {
    /// The stored record.
    pub record: Arc<Record>,
    /// Its version.
    pub version: Version,
}

impl Loaded {
    /// A loaded record with its version.
    pub fn new(record: impl Into<Arc<Record>>, version: Version) -> Self {
        Loaded {
            record: record.into(),
            version,
        }
    }
}

/// The answer to [`SessionStore::create`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// Stored.
    Created,
    /// A record already exists under this key; nothing was written.
    Exists,
}

/// The answer to [`SessionStore::replace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Replaced {
    /// The stored version was the expected one; the record was written (or removed).
    Replaced,
    /// The stored version is another one; nothing was written.
    Changed,
    /// Nothing is stored under the key (deleted or expired); nothing was written.
    Gone,
}

/// The answer to [`SessionStore::save`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Saved {
    /// The change-set is stored.
    Saved,
    /// The change-set left the session with no data and no user, so it was removed.
    Emptied,
    /// The session no longer exists (deleted or expired meanwhile); nothing was written.
    Gone,
}

/// The answer to [`SessionStore::renew`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Renewed {
    /// The session now lives under the new key, with any concurrent changes; the old key is gone.
    Renewed,
    /// The old session no longer exists (deleted, revoked or expired meanwhile); nothing was written.
    Gone,
}

/// A session store. Implement the first five methods; see the [module docs](self) for the contract.
pub trait SessionStore: Send + Sync + 'static {
    /// The store's name, as health, stats and errors show it: `"redis"`, `"file"`, `"postgres"`.
    /// A store that serves from one of several backends (the failover store) names the one serving
    /// now.
    fn name(&self) -> &'static str;

    /// Loads a session with its version. `Ok(None)` when there is none or it has expired; a value that
    /// cannot be decoded is `Ok(None)` too (logged and set aside), never an error.
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send;

    /// Stores a new session, only if nothing (live) is stored under the key.
    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Compare-and-swap: if the record stored under `key` still has version `expected`, writes
    /// `record`, or removes the session when `record` is `None`. Answers [`Replaced::Changed`] (writing
    /// nothing) when another version is stored, and [`Replaced::Gone`] when nothing is.
    ///
    /// Must be atomic with respect to every other write to the key, across every process sharing the
    /// backend: this is what makes the provided [`save`](SessionStore::save) lossless.
    fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> impl Future<Output = Result<Replaced, StoreError>> + Send;

    /// Removes a session, whatever its version; `true` when there was a live one.
    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Applies one request's `changes` to the stored session. `base` is the version the request loaded
    /// and `ours` its view: the loaded record with `changes` applied and its timestamps refreshed.
    ///
    /// Provided: writes `ours` if the stored version is still `base`; otherwise loads the current
    /// record, [merges](Record::merge) `changes` into it and tries again. When the result has no data
    /// and no user it removes the session instead ([`Saved::Emptied`]). When the session is gone (or a
    /// [tombstone](Record::tombstone)) it writes nothing ([`Saved::Gone`]). Override it only to do the
    /// same in fewer steps (a store that keeps records in memory may keep the `ours` [`Arc`] as it is:
    /// the session never changes a shared record in place).
    fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<Saved, StoreError>> + Send {
        provided::save(self, key, base, ours, changes)
    }

    /// Moves a session from `old` to the fresh key `new` (a renewed token), applying `changes` as
    /// [`save`](SessionStore::save) does. `base` and `ours` are as for `save`.
    ///
    /// Provided: writes `new` first, then removes `old` only if its version is still `base`; if `old`
    /// changed meanwhile, the concurrent changes are merged in and it goes again; if `old` is gone
    /// (revoked, deleted) `new` is removed and the answer is [`Renewed::Gone`]. A crash in between leaves
    /// the old session as it was. [`StoreError::Conflict`] when `new` is taken.
    fn renew(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<Renewed, StoreError>> + Send {
        provided::renew(self, old, new, base, ours, changes)
    }

    /// **Optional: per-user index.** The live sessions tied to `user` ([`Record::user`]): metadata only,
    /// oldest first ([`sort_user_sessions`]). It must list *every* live session of the user, or fail:
    /// revocation and the per-user cap rely on it. An unknown user has no sessions.
    fn user_sessions(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<Summary>, StoreError>> + Send {
        let _ = user;
        std::future::ready(Err(StoreError::unsupported("list a user's sessions")))
    }

    /// Deletes every session tied to `user` except `keep` ("log out everywhere"); answers how many.
    /// Their next request, on any instance sharing the store, gets a fresh session, and a save in flight
    /// for one of them writes nothing.
    ///
    /// Provided: [`user_sessions`](SessionStore::user_sessions), then a delete for each.
    fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        provided::revoke(self, user, keep)
    }

    /// **Optional.** How many live sessions are stored.
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        std::future::ready(Err(StoreError::unsupported("count sessions")))
    }

    /// **Optional.** One page of live sessions, starting after `cursor` (`None` for the first page), at
    /// most `limit` long. A cursor the store did not hand out is [`StoreError::InvalidCursor`].
    /// [Tombstones](Record::tombstone) are listed too, marked ([`Summary::tombstone`]): a failover
    /// store finds an outage's deletes in its fallback that way. [`count`](SessionStore::count) and
    /// [`user_sessions`](SessionStore::user_sessions) leave them out.
    fn list(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send {
        let _ = (cursor, limit);
        std::future::ready(Err(StoreError::unsupported("list sessions")))
    }

    /// **Optional.** Removes what the backend does not expire by itself (expired files, corrupt values,
    /// stale index entries); answers how many entries went.
    fn cleanup(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        std::future::ready(Err(StoreError::unsupported("clean up sessions")))
    }

    /// **Optional.** What the store uses of its backend (shown by the admin's `/stats`).
    fn usage(&self) -> impl Future<Output = Result<Usage, StoreError>> + Send {
        std::future::ready(Err(StoreError::unsupported("report its resource use")))
    }

    /// The store's health. Provided: ok, under the store's name.
    fn health(&self) -> impl Future<Output = Health> + Send {
        std::future::ready(Health::ok(self.name()))
    }

    /// Information about the backend for operators, as JSON fields (the Redis store answers
    /// `{"redis": <INFO by section>}`), shown by the admin's `/redis-info`; `None`: nothing to show now.
    fn info(
        &self,
    ) -> impl Future<Output = Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError>>
           + Send {
        std::future::ready(Ok(None))
    }

    /// How this store encodes records and derives keys from tokens. The layer issues and reads tokens
    /// the same way, so a store's format decides both. Provided: the [native](crate::format::Native)
    /// format.
    fn format(&self) -> crate::format::SharedFormat {
        crate::format::native()
    }

    /// Where the store reads the time to decide expiry. The layer reads the same clock, so a test sets
    /// a [`ManualClock`](crate::expiry::ManualClock) in one place, the store's builder. Provided: the
    /// system clock.
    fn clock(&self) -> crate::expiry::SharedClock {
        crate::expiry::system_clock()
    }
}

impl<S: SessionStore> SessionStore for Arc<S> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send {
        (**self).load(key)
    }
    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send {
        (**self).create(key, record)
    }
    fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> impl Future<Output = Result<Replaced, StoreError>> + Send {
        (**self).replace(key, expected, record)
    }
    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).delete(key)
    }
    fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<Saved, StoreError>> + Send {
        (**self).save(key, base, ours, changes)
    }
    fn renew(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<Renewed, StoreError>> + Send {
        (**self).renew(old, new, base, ours, changes)
    }
    fn user_sessions(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<Summary>, StoreError>> + Send {
        (**self).user_sessions(user)
    }
    fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).revoke_user_sessions(user, keep)
    }
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).count()
    }
    fn list(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send {
        (**self).list(cursor, limit)
    }
    fn cleanup(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).cleanup()
    }
    fn usage(&self) -> impl Future<Output = Result<Usage, StoreError>> + Send {
        (**self).usage()
    }
    fn health(&self) -> impl Future<Output = Health> + Send {
        (**self).health()
    }
    fn info(
        &self,
    ) -> impl Future<Output = Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError>>
           + Send {
        (**self).info()
    }
    fn format(&self) -> crate::format::SharedFormat {
        (**self).format()
    }
    fn clock(&self) -> crate::expiry::SharedClock {
        (**self).clock()
    }
}
