//! Session stores: the traits every backend implements, the stored [`Record`], and typed errors.
//!
//! Two layers of capability:
//!
//! * [`SessionStore`] is the hot path the layer uses: load, create, save a change-set, delete.
//! * [`ManagedStore`] adds what the admin service, the health monitor and the failover store need:
//!   kind, count, a cursor listing, cleanup, health and usage figures.
//!
//! Both use `impl Future` in trait position, so a concrete store costs no boxing. The [`Session`]
//! handle erases the store behind one boxed future per store call, next to which a network round trip is
//! what counts.
//!
//! # Saving without losing writes
//!
//! A request's changes are a [`ChangeSet`]: keys set, keys removed, whether the data was cleared first,
//! and whether the user changed. A store applies that change-set to **what it holds now**, not to what the
//! request loaded, so two concurrent requests that change different keys both land; on the same key the
//! last writer wins. A store that can compare versions cheaply (Redis with a script, memory under a lock)
//! writes the request's merged record in one step when nothing changed meanwhile, and merges again
//! otherwise. A save never recreates a session that was deleted meanwhile: it answers [`Saved::Gone`].
//!
//! [`Session`]: crate::Session

use crate::expiry::Timestamp;
use crate::id::StoreKey;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

pub mod failover;
pub mod file;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "redis")]
pub use self::redis::{RedisConfig, RedisStore};
pub use failover::FailoverStore;
pub use file::FileStore;
pub use memory::MemoryStore;

/// A boxed error, as sources are kept.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The data of a session: a JSON object.
pub type Data = Map<String, Value>;

/// A session as a store keeps it. Serialised as JSON, this is what `redis-cli GET` shows and what a
/// session file holds:
///
/// ```json
/// {"createdAt":1752360300000,"lastAccess":1752360300000,"expires":1752446700000,
///  "deadline":1752965100000,"userAgent":"curl/8.5.0","user":"alice","data":{"visits":3}}
/// ```
///
/// Times are milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// When the session was created.
    pub created_at: Timestamp,
    /// When the session was last written (saved or touched).
    pub last_access: Timestamp,
    /// When the store forgets the session: the earlier of the idle and absolute limits.
    pub expires: Timestamp,
    /// The absolute limit, which no amount of activity moves.
    pub deadline: Timestamp,
    /// The `User-Agent` of the request that created the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The user the session belongs to, when the application said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The application's data.
    #[serde(default)]
    pub data: Data,
}

impl Record {
    /// Encodes the record as stored: compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record of JSON values always serialises")
    }

    /// Decodes a stored record; anything that is not a well-formed record is [`StoreError::Corrupt`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            detail: "stored value is not a session record",
            source: Some(Box::new(e)),
        })
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires <= now
    }

    /// Applies a request's change-set to this record (the store's current copy), taking the request's
    /// newer timestamps: the merge a store does when another writer got there first.
    pub fn merge(&mut self, changes: &ChangeSet, ours: &Record) {
        changes.apply(&mut self.data);
        if let Some(user) = &changes.user {
            self.user.clone_from(user);
        }
        if let Some(deadline) = changes.deadline {
            self.deadline = deadline;
        }
        self.last_access = self.last_access.max(ours.last_access);
        self.expires = self.expires.max(ours.expires).min(self.deadline);
    }

    /// A listing entry for this record.
    pub fn summary(&self, id: StoreKey) -> Summary {
        Summary {
            id,
            created_at: self.created_at,
            last_access: self.last_access,
            expires: self.expires,
            user_agent: self.user_agent.clone(),
            user: self.user.clone(),
        }
    }
}

/// What one request changed in a session's data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet {
    /// The data was cleared before the entries below were applied.
    pub cleared: bool,
    /// Keys set (`Some`) or removed (`None`), in key order.
    pub entries: BTreeMap<String, Option<Value>>,
    /// The user was set (`Some(Some(..))`) or removed (`Some(None)`).
    pub user: Option<Option<String>>,
    /// The absolute deadline was moved.
    pub deadline: Option<Timestamp>,
    /// Integer keys increased (or decreased) by an amount: applied to the value the store holds when
    /// it saves, so concurrent increments all count. Never holds a key that `entries` also holds.
    pub increments: BTreeMap<String, i64>,
    /// The record is saved with the expiry it was loaded with (no refresh was due, see
    /// [`Expiry::refresh_due`](crate::expiry::Expiry::refresh_due)): a store may leave what it keeps
    /// by expiry (an index scored by it) as it is. `false` (the default) when it may have moved.
    pub expiry_kept: bool,
}

impl ChangeSet {
    /// Whether the change-set changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.cleared
            && self.entries.is_empty()
            && self.increments.is_empty()
            && self.user.is_none()
            && self.deadline.is_none()
    }

    /// Applies the change-set to `data`.
    ///
    /// ```
    /// use sessionforge::store::ChangeSet;
    /// use serde_json::json;
    ///
    /// let mut data = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
    /// let mut changes = ChangeSet::default();
    /// changes.entries.insert("a".into(), None);
    /// changes.entries.insert("c".into(), Some(json!(3)));
    /// changes.apply(&mut data);
    /// assert_eq!(serde_json::Value::Object(data), json!({"b": 2, "c": 3}));
    /// ```
    pub fn apply(&self, data: &mut Data) {
        if self.cleared {
            data.clear();
        }
        for (k, v) in &self.entries {
            match v {
                Some(v) => {
                    data.insert(k.clone(), v.clone());
                }
                None => {
                    data.remove(k);
                }
            }
        }
        for (k, by) in &self.increments {
            data.insert(k.clone(), Value::from(add_to(data.get(k), *by)));
        }
    }
}

/// A record created at `now`, expiring `ttl` later (absolute deadline ten times that), holding
/// `{"n": 1}`: the stores' unit tests share it.
#[cfg(test)]
pub(crate) fn test_record(now: Timestamp, ttl: Duration) -> Record {
    Record {
        created_at: now,
        last_access: now,
        expires: now.plus(ttl),
        deadline: now.plus(ttl * 10),
        user_agent: None,
        user: None,
        data: serde_json::json!({"n": 1}).as_object().unwrap().clone(),
    }
}

/// Bytes the way Redis writes `used_memory_human`: `512B`, `1.50K`, `1.00M`, `2.25G` (powers of 1024).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

/// The conformance check every store's unit tests share: two saves made against the same (by then
/// stale) version both land, merged, and the version moves. Answers the key and the record created.
#[cfg(test)]
pub(crate) async fn assert_stale_saves_merge<S: SessionStore>(
    store: &S,
    now: Timestamp,
) -> (StoreKey, Record) {
    let key = crate::id::Token::generate().store_key();
    let rec = test_record(now, Duration::from_secs(60));
    assert_eq!(store.create(&key, &rec).await.unwrap(), Created::Created);
    let base = store.load(&key).await.unwrap().unwrap().version;
    for k in ["x", "y"] {
        let mut changes = ChangeSet::default();
        changes.entries.insert(k.into(), Some(Value::from(k)));
        let mut ours = rec.clone();
        changes.apply(&mut ours.data);
        assert_eq!(
            store
                .save(&key, &base, &std::sync::Arc::new(ours), &changes)
                .await
                .unwrap(),
            Saved::Saved
        );
    }
    let loaded = store.load(&key).await.unwrap().unwrap();
    assert_eq!(
        Value::Object(loaded.record.data.clone()),
        serde_json::json!({"n": 1, "x": "x", "y": "y"})
    );
    assert_ne!(loaded.version, base);
    (key, rec)
}

/// `current` (an integer, or nothing / anything else counting as 0) plus `by`, saturating.
pub(crate) fn add_to(current: Option<&Value>, by: i64) -> i64 {
    current
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .saturating_add(by)
}

/// An opaque version of a stored record, handed out by `load` and given back to `save` so a store can
/// tell whether anything changed in between. Its meaning is the store's own (a digest, a counter).
///
/// Cheap to clone, and made without allocating when short: a loaded record's version is copied into
/// every save attempt and every read-cache hit, and the memory and file stores make one per write. Up
/// to [`Version::INLINE`] bytes of text are kept inline (a counter, a short digest); longer text (a
/// Redis value that is its own version) is shared.
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
pub struct Version(VersionText);

#[derive(Clone)]
enum VersionText {
    Inline(u8, [u8; Version::INLINE]),
    Shared(std::sync::Arc<str>),
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
            Version(VersionText::Inline(text.len() as u8, buf))
        } else {
            Version(VersionText::Shared(std::sync::Arc::from(text)))
        }
    }

    /// The version's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied whole from a `&str`, so always UTF-8.
            VersionText::Inline(len, buf) => {
                std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default()
            }
            VersionText::Shared(text) => text,
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

/// A record as loaded, with the version to save against.
///
/// The record is shared: a store that keeps records in memory (the memory store, the Redis read cache)
/// hands out the record it keeps without copying it, and the session copies it only when the request
/// changes something ([`Arc::make_mut`](std::sync::Arc::make_mut)). A read therefore costs the same
/// whatever the session holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The stored record.
    pub record: std::sync::Arc<Record>,
    /// Its version.
    pub version: Version,
}

/// The answer to [`SessionStore::create`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Created {
    /// Stored.
    Created,
    /// A session already exists under this key; nothing was written. (With 256-bit tokens this does
    /// not happen by chance; the layer answers it with a fresh token anyway.)
    Exists,
}

/// The answer to [`SessionStore::save`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Saved {
    /// The change-set is stored.
    Saved,
    /// The session no longer exists (deleted or expired meanwhile); nothing was written.
    Gone,
}

/// Which kind of backend serves sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StoreKind {
    /// Redis.
    Redis,
    /// Files in a directory.
    File,
    /// Process memory.
    Memory,
}

impl StoreKind {
    /// `"redis"`, `"file"` or `"memory"`, as the admin API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Redis => "redis",
            StoreKind::File => "file",
            StoreKind::Memory => "memory",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store failure. Keeps its source; [`StoreError::is_unavailable`] tells a failover store whether the
/// backend is down (switch) or the data is bad (treat as absent).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or refused the connection.
    Unavailable {
        /// Which backend.
        backend: StoreKind,
        /// Why.
        source: BoxError,
    },
    /// The backend did not answer within the configured time.
    Timeout {
        /// Which backend.
        backend: StoreKind,
        /// The limit that ran out.
        after: Duration,
    },
    /// Stored data could not be decoded.
    Corrupt {
        /// What was wrong.
        detail: &'static str,
        /// The decoder's error.
        source: Option<BoxError>,
    },
    /// The store is full (a file store's quota).
    QuotaExceeded {
        /// Which limit.
        detail: String,
    },
    /// The session is larger than the configured limit.
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The store kept refusing to create a session under fresh keys.
    Conflict,
    /// A listing cursor ([`ManagedStore::list`]) that the store did not hand out or cannot use: a
    /// client's mistake, which the admin service answers with 400 rather than 500.
    InvalidCursor,
    /// Any other backend failure.
    Backend {
        /// Which backend.
        backend: StoreKind,
        /// Why.
        source: BoxError,
    },
}

impl StoreError {
    /// Whether the error means the backend is down or too slow (so a failover store should switch),
    /// as opposed to a problem with this one session or request.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Timeout { .. }
        )
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable { backend, source } => {
                write!(f, "{backend} session store unavailable: {source}")
            }
            StoreError::Timeout { backend, after } => {
                write!(f, "{backend} session store did not answer within {after:?}")
            }
            StoreError::Corrupt { detail, .. } => write!(f, "corrupt session data: {detail}"),
            StoreError::QuotaExceeded { detail } => write!(f, "session store is full: {detail}"),
            StoreError::TooLarge { size, limit } => {
                write!(f, "session is {size} bytes, over the limit of {limit}")
            }
            StoreError::Conflict => {
                f.write_str("the store reported a key clash for several fresh session tokens")
            }
            StoreError::InvalidCursor => f.write_str("invalid listing cursor"),
            StoreError::Backend { backend, source } => {
                write!(f, "{backend} session store failed: {source}")
            }
        }
    }
}

impl StoreError {
    /// The innermost cause's message ("Connection refused (os error 111)"), or this error's own
    /// message when it has no source: what a log line or a health check should show.
    pub fn root_cause(&self) -> String {
        let mut err: &(dyn std::error::Error + 'static) = self;
        while let Some(next) = err.source() {
            err = next;
        }
        err.to_string()
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Unavailable { source, .. } | StoreError::Backend { source, .. } => {
                Some(source.as_ref())
            }
            StoreError::Corrupt {
                source: Some(s), ..
            } => Some(s.as_ref()),
            _ => None,
        }
    }
}

/// The hot-path operations the session layer needs. Implement this for a new backend.
///
/// All methods take `&self`; a store is shared between requests (wrap its state in an `Arc`).
pub trait SessionStore: Send + Sync + 'static {
    /// Loads a session. `Ok(None)` when there is none, it has expired, or it cannot be decoded (a store
    /// logs and sets aside what it cannot decode rather than failing the request).
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send;

    /// Stores a new session, only if the key is free (`SET NX`).
    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// Applies `changes` to the stored session. `ours` is the request's view (the loaded record with
    /// `changes` applied and its timestamps refreshed); when the stored version is still `base`, a store
    /// may write `ours` as it is (a store that keeps records in memory keeps this `Arc`: the session
    /// never changes a shared record in place). Otherwise it merges `changes` into the current record
    /// ([`Record::merge`]). Answers [`Saved::Gone`], writing nothing, when the session no longer exists.
    fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &std::sync::Arc<Record>,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<Saved, StoreError>> + Send;

    /// Deletes a session; `true` when there was one.
    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The live sessions tied to `user` ([`Record::user`]): metadata only, never a token, oldest
    /// (by creation) first. A store keeps whatever index this needs in step with its sessions (see
    /// each store's docs); an unknown user has no sessions.
    fn user_sessions(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<Summary>, StoreError>> + Send;

    /// Deletes every session tied to `user` except `keep` ("log out everywhere else"); answers how many
    /// were deleted. The next request of a deleted session gets a fresh session, on any instance
    /// sharing the store, and a save in flight for one of them writes nothing ([`Saved::Gone`]).
    ///
    /// The provided version lists ([`SessionStore::user_sessions`]) and deletes one by one; a store
    /// overrides it when it can do better.
    fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        async move {
            let mut deleted = 0;
            for s in self.user_sessions(user).await? {
                if Some(&s.id) != keep && self.delete(&s.id).await? {
                    deleted += 1;
                }
            }
            Ok(deleted)
        }
    }
}

/// Sorts a user's sessions the way [`SessionStore::user_sessions`] answers them: oldest first.
pub(crate) fn sort_user_sessions(sessions: &mut [Summary]) {
    sessions.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
}

/// One entry of a session listing: metadata only, never a token.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The store key (a digest of the token, useless as a cookie).
    pub id: StoreKey,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When it was last written.
    pub last_access: Timestamp,
    /// When it expires.
    pub expires: Timestamp,
    /// The user agent that created it.
    pub user_agent: Option<String>,
    /// Its user, if any.
    pub user: Option<String>,
}

impl Serialize for StoreKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A page of a listing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    /// The sessions on this page.
    pub sessions: Vec<Summary>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

/// What a store uses of its backend's resources.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Usage {
    /// Redis memory, from `INFO memory` (and `CONFIG GET` where allowed).
    Redis {
        /// `used_memory`, bytes.
        used_memory: u64,
        /// `used_memory_human`.
        used_memory_human: String,
        /// `maxmemory`, bytes (0: no limit); `None` when it could not be read.
        maxmemory: Option<u64>,
        /// `maxmemory-policy`; `None` when it could not be read.
        maxmemory_policy: Option<String>,
    },
    /// Disk use of a file store.
    Disk {
        /// The directory.
        directory: String,
        /// Session files.
        files: u64,
        /// Their total size.
        bytes: u64,
    },
    /// Process memory of a memory store.
    Memory {
        /// Entries held (live or not yet reaped).
        entries: u64,
        /// Approximate bytes of encoded records.
        bytes: u64,
    },
}

/// `INFO` parsed into sections: section name (lower case) to field to value.
pub type RedisInfo = BTreeMap<String, BTreeMap<String, String>>;

/// A store's view of its own health.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreHealth {
    /// The backend serving sessions now.
    pub serving: StoreKind,
    /// Whether that backend works (answers, or can write its directory).
    pub healthy: bool,
    /// Whether a Redis behind this store answers (`None` when there is no Redis).
    pub redis_healthy: Option<bool>,
    /// Human-readable detail (the last error, the failover state).
    pub detail: Option<String>,
}

/// One node of a multi-node Redis (a Redis Cluster), as `/health` and `/redis-info` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeHealth {
    /// `host:port`.
    pub address: String,
    /// `master` or `replica`.
    pub role: String,
    /// Whether it answers and the cluster does not consider it failed.
    pub healthy: bool,
    /// Round-trip time of a `PING`, or why it is down.
    pub detail: Option<String>,
}

/// `INFO` per node, keyed by `host:port`.
pub type RedisNodeInfo = BTreeMap<String, RedisInfo>;

/// What the admin service, the health monitor and the failover store need beyond the hot path.
pub trait ManagedStore: SessionStore {
    /// The backend serving sessions now (a failover store answers with its current mode).
    fn kind(&self) -> StoreKind;

    /// How many sessions are stored (live ones; a store may count not-yet-reaped expired ones).
    fn count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// One page of sessions, starting at `cursor` (`None` for the first page), at most `limit` long.
    /// A cursor the store cannot use is [`StoreError::InvalidCursor`].
    fn list(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Removes what the backend does not expire by itself (expired files, corrupt values); answers how
    /// many entries were removed.
    fn cleanup(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The store's health.
    fn health(&self) -> impl Future<Output = StoreHealth> + Send;

    /// Resource use.
    fn usage(&self) -> impl Future<Output = Result<Usage, StoreError>> + Send;

    /// Redis `INFO`, when a Redis serves sessions now; `Ok(None)` for stores without one.
    fn redis_info(&self) -> impl Future<Output = Result<Option<RedisInfo>, StoreError>> + Send {
        async { Ok(None) }
    }

    /// Each node of a multi-node Redis (a cluster) with its own health; empty for one server and for
    /// stores without Redis.
    fn node_health(&self) -> impl Future<Output = Vec<NodeHealth>> + Send {
        async { Vec::new() }
    }

    /// `INFO` of each node of a multi-node Redis (a cluster); `Ok(None)` for one server and for
    /// stores without Redis.
    fn redis_node_info(
        &self,
    ) -> impl Future<Output = Result<Option<RedisNodeInfo>, StoreError>> + Send {
        async { Ok(None) }
    }
}

/// The object-safe face of a [`SessionStore`], one boxed future per call. The [`crate::Session`] handle
/// holds its store this way so handlers see one concrete type whatever the backend.
pub(crate) trait DynStore: Send + Sync + 'static {
    fn load<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<Option<Loaded>, StoreError>>;
    fn create<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Created, StoreError>>;
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        base: &'a Version,
        ours: &'a std::sync::Arc<Record>,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<Saved, StoreError>>;
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<bool, StoreError>>;
    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Summary>, StoreError>>;
    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
}

pub(crate) type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pin_project_lite::pin_project! {
    /// A store call, timed and its failure counted for `/metrics`. A plain future around the call
    /// (an `async fn` would hold the call's future twice, as its argument and as what it awaits,
    /// doubling the box every call is put in).
    ///
    /// The clock is read only once the call has to wait: a call answered by its first poll (a cache
    /// hit, the memory store) did no I/O and is counted as taking 0 µs, which is below the
    /// histogram's first bucket (100 µs) either way; that saves two clock reads on such calls.
    /// A waiting call is timed from the end of its first poll (where it sent its request).
    struct Instrumented<F> {
        #[pin]
        fut: F,
        op: crate::metrics::Op,
        start: Option<std::time::Instant>,
    }
}

impl<F, T> Future for Instrumented<F>
where
    F: Future<Output = Result<T, StoreError>>,
{
    type Output = Result<T, StoreError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let res = match this.fut.poll(cx) {
            std::task::Poll::Ready(res) => res,
            std::task::Poll::Pending => {
                this.start.get_or_insert_with(std::time::Instant::now);
                return std::task::Poll::Pending;
            }
        };
        let took = this
            .start
            .map_or(std::time::Duration::ZERO, |s| s.elapsed());
        let m = crate::metrics::Metrics::global();
        m.observe_store_call(*this.op, took);
        if res.is_err() {
            m.count(crate::metrics::Event::StoreError);
        }
        std::task::Poll::Ready(res)
    }
}

/// Times a store call and counts its failure, for `/metrics` (from its first poll).
fn instrumented<F>(op: crate::metrics::Op, fut: F) -> Instrumented<F> {
    Instrumented {
        fut,
        op,
        start: None,
    }
}

impl<S: SessionStore> DynStore for S {
    fn load<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<Option<Loaded>, StoreError>> {
        Box::pin(instrumented(
            crate::metrics::Op::Load,
            SessionStore::load(self, key),
        ))
    }
    fn create<'a>(
        &'a self,
        key: &'a StoreKey,
        record: &'a Record,
    ) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(instrumented(
            crate::metrics::Op::Create,
            SessionStore::create(self, key, record),
        ))
    }
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        base: &'a Version,
        ours: &'a std::sync::Arc<Record>,
        changes: &'a ChangeSet,
    ) -> BoxFuture<'a, Result<Saved, StoreError>> {
        Box::pin(instrumented(
            crate::metrics::Op::Save,
            SessionStore::save(self, key, base, ours, changes),
        ))
    }
    fn delete<'a>(&'a self, key: &'a StoreKey) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(instrumented(
            crate::metrics::Op::Delete,
            SessionStore::delete(self, key),
        ))
    }
    fn user_sessions<'a>(
        &'a self,
        user: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Summary>, StoreError>> {
        Box::pin(SessionStore::user_sessions(self, user))
    }
    fn revoke_user_sessions<'a>(
        &'a self,
        user: &'a str,
        keep: Option<&'a StoreKey>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(SessionStore::revoke_user_sessions(self, user, keep))
    }
}

impl<S: SessionStore> SessionStore for std::sync::Arc<S> {
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
    fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &std::sync::Arc<Record>,
        changes: &ChangeSet,
    ) -> impl Future<Output = Result<Saved, StoreError>> + Send {
        (**self).save(key, base, ours, changes)
    }
    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).delete(key)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(data: Value) -> Record {
        Record {
            created_at: Timestamp::from_millis(1),
            last_access: Timestamp::from_millis(2),
            expires: Timestamp::from_millis(10),
            deadline: Timestamp::from_millis(100),
            user_agent: Some("ua".into()),
            user: None,
            data: data.as_object().unwrap().clone(),
        }
    }

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
    fn record_json_round_trips_and_uses_readable_field_names() {
        let r = record(json!({"visits": 3}));
        let text = String::from_utf8(r.to_json()).unwrap();
        assert!(text.contains("\"createdAt\":1"), "{text}");
        assert!(text.contains("\"userAgent\":\"ua\""), "{text}");
        assert!(!text.contains("\"user\":"), "{text}");
        assert_eq!(Record::from_json(text.as_bytes()).unwrap(), r);
    }

    #[test]
    fn corrupt_json_is_a_corrupt_error_not_a_panic() {
        for bad in [
            &b"{"[..],
            b"null",
            b"[1,2]",
            b"{\"createdAt\":\"x\"}",
            b"\xff\xfe",
        ] {
            let e = Record::from_json(bad).unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
            assert!(!e.is_unavailable());
        }
    }

    #[test]
    fn merge_keeps_the_other_writers_keys_and_takes_ours() {
        let mut stored = record(json!({"a": 1, "other": true}));
        stored.last_access = Timestamp::from_millis(5);
        let mut changes = ChangeSet::default();
        changes.entries.insert("a".into(), Some(json!(2)));
        changes.entries.insert("mine".into(), Some(json!("x")));
        changes.user = Some(Some("alice".into()));
        let mut ours = record(json!({}));
        ours.last_access = Timestamp::from_millis(7);
        ours.expires = Timestamp::from_millis(500);
        stored.merge(&changes, &ours);
        assert_eq!(
            Value::Object(stored.data.clone()),
            json!({"a": 2, "other": true, "mine": "x"})
        );
        assert_eq!(stored.user.as_deref(), Some("alice"));
        assert_eq!(stored.last_access, Timestamp::from_millis(7));
        // Never past the absolute deadline.
        assert_eq!(stored.expires, Timestamp::from_millis(100));
    }

    #[test]
    fn root_cause_shows_the_innermost_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = StoreError::Unavailable {
            backend: StoreKind::Redis,
            source: Box::new(io),
        };
        assert_eq!(
            e.to_string(),
            "redis session store unavailable: Connection refused"
        );
        assert_eq!(e.root_cause(), "Connection refused");
        let t = StoreError::Timeout {
            backend: StoreKind::Redis,
            after: Duration::from_secs(1),
        };
        assert_eq!(t.root_cause(), t.to_string());
    }

    #[test]
    fn increments_apply_to_the_current_value_and_treat_others_as_zero() {
        let mut data = json!({"n": 5, "s": "x"}).as_object().unwrap().clone();
        let mut c = ChangeSet::default();
        c.increments.insert("n".into(), 3);
        c.increments.insert("s".into(), 2);
        c.increments.insert("new".into(), -1);
        assert!(!c.is_empty());
        c.apply(&mut data);
        assert_eq!(
            Value::Object(data.clone()),
            json!({"n": 8, "s": 2, "new": -1})
        );
        // A second writer's increment merged onto that counts too.
        c.apply(&mut data);
        assert_eq!(data["n"], 11);
        let mut max = json!({"n": i64::MAX}).as_object().unwrap().clone();
        c.apply(&mut max);
        assert_eq!(max["n"], i64::MAX, "saturates");
    }

    #[tokio::test]
    async fn a_store_call_that_waits_is_timed_and_one_answered_at_once_counts_as_zero() {
        use crate::metrics::{Metrics, Op};
        let m = Metrics::global();
        let (count, sum) = m.latency(Op::Delete);
        let waited: Result<(), StoreError> = instrumented(Op::Delete, async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        })
        .await;
        waited.unwrap();
        let (count2, sum2) = m.latency(Op::Delete);
        assert!(count2 > count);
        assert!(sum2 - sum >= 5_000, "{} µs", sum2 - sum);
        // Answered by its first poll: counted, with no time (other tests may add meanwhile, so only
        // the count is checked).
        let at_once: Result<(), StoreError> =
            instrumented(Op::Delete, std::future::ready(Ok(()))).await;
        at_once.unwrap();
        assert!(m.latency(Op::Delete).0 > count2);
    }

    #[test]
    fn cleared_change_set_drops_keys_it_does_not_set() {
        let mut data = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        let mut c = ChangeSet {
            cleared: true,
            ..Default::default()
        };
        c.entries.insert("b".into(), Some(json!(3)));
        c.apply(&mut data);
        assert_eq!(Value::Object(data), json!({"b": 3}));
    }
}
