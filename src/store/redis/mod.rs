//! [`RedisStore`]: sessions in Redis, shared by every instance of an application. One server, a Redis
//! Cluster, or a master found through Sentinel ([`Topology`]).
//!
//! ```no_run
//! use sessionforge::{SessionLayer, store::redis::RedisConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // REDIS_URL, or REDIS_HOST / REDIS_PORT / REDIS_PASSWORD / REDIS_DB / ...
//! let store = RedisConfig::from_env()?.with_prefix("djforge:sess:").build()?;
//! let layer = SessionLayer::new(store);
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! * A session lives at `<prefix><store key>` (prefix `session:` by default) as a string holding the
//!   record as the store's [format](crate::format) encodes it. For the native format that is readable
//!   JSON, so `redis-cli GET session:<id>` shows it:
//!   `{"lastAccess":…,"createdAt":…,"expires":…,"deadline":…,"userAgent":"…","user":"…","data":{…}}`.
//!   Its TTL is set with the value, in milliseconds (`PX`): the time left until `expires`.
//! * A sorted set at `<prefix>index` holds every session's store key scored by its expiry, so counting
//!   is one `ZCOUNT` and a listing page a ranked range, never `KEYS` or a full `SCAN`. A sorted set
//!   per user, `<prefix>user:<user>`, lists the user's sessions for "log out everywhere". The value and
//!   its entries change together, in one Lua script per create, save and delete. Neither set has a
//!   TTL: a `volatile-*` eviction policy cannot evict them away from their sessions.
//! * In cluster mode every key carries a hash tag so that a session and its index entries share a slot
//!   (see `layout.rs`). A format that does not keep indexes (express) counts, lists and finds a user's
//!   sessions with a cursor-paged `SCAN`.
//!
//! # Saving
//!
//! [`SessionStore::load`] answers the record with its version, read from the value's first bytes
//! (the native format starts with `{"lastAccess":<ms>`, which every write moves on), so no load or
//! save hashes the value. A save is one `EVALSHA` on the uncontended path: the script writes the new
//! value if the stored one still has the loaded version, answers "gone" (writing nothing) if the session
//! was deleted meanwhile, and otherwise hands back the current value, which the store merges with the
//! request's change-set ([`Record::merge`]) and tries again. A save whose reply was lost with its
//! connection is sent once more on a fresh one; the script recognises its own value and answers "done",
//! so nothing is applied twice (a save with increments carries a random
//! [`Record::write_mark`](crate::store::Record::write_mark), so the same bytes cannot be another
//! writer's); when the second answer cannot tell, the store answers
//! [`StoreError::Indeterminate`] rather than guess.
//!
//! # The read cache
//!
//! On by default (10,000 sessions, [`RedisConfig::with_read_cache`]), on one server and under
//! Sentinel: a load of a cached session costs no round trip; a save costs one and drops the session
//! from the cache (its next load reads Redis once). Redis keeps it correct across instances with
//! `CLIENT TRACKING` (see `cache.rs` for the guarantees, including eviction and a silent network
//! loss). A cluster runs without it: one tracking connection
//! per master and routing of the invalidations would be needed.
//!
//! # Eviction
//!
//! Under `allkeys-*` eviction policies Redis may evict the index or a user's set while sessions live
//! on. The store then trusts neither: count, listing, a user's sessions and revocation use `SCAN`, so
//! "log out everywhere" never misses a live session, and cleanup rebuilds what eviction removed. The
//! admin's stats warn about such policies, about evicted keys, and about memory above 90% of
//! `maxmemory`. A write Redis refuses for memory (`noeviction` at the limit) is [`StoreError::Full`].
//!
//! # Connections and waits
//!
//! Nothing connects when the store is built: an application starts while Redis is down. Every command
//! is bounded by the command timeout, so a dead or frozen Redis costs a request at most about
//! `connect_timeout + command_timeout`, answered as [`StoreError::Timeout`] or
//! [`StoreError::Unavailable`] (which a failover store treats as "switch to files").

mod cache;
mod cluster;
mod config;
mod conn;
mod env;
mod layout;
mod maintenance;
mod managed;
mod renew;
mod save;
mod scripts;
mod topology;
mod users;

pub use cache::ReadCacheStats;
pub use config::{ConfigError, NodeAddr, RedisConfig, Topology};

use super::{
    ChangeSet, Created, Health, Loaded, Page, Record, Renewed, Replaced, Saved, SessionStore,
    StoreError, Summary, Usage, Version,
};
use crate::expiry::SharedClock;
use crate::format::SharedFormat;
use crate::id::StoreKey;
use conn::{Op, NAME};
use layout::Layout;
use redis::RedisError;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use topology::{Conn, Connector};

struct Inner {
    config: RedisConfig,
    connector: Connector,
    /// The open connection and its generation (so a failing call resets only the connection it used).
    conn: RwLock<Option<(u64, Conn)>>,
    generation: std::sync::atomic::AtomicU64,
    /// One connect at a time; the others wait for it.
    connecting: tokio::sync::Mutex<()>,
    /// Where sessions and their index entries live (sharded in cluster mode).
    layout: Layout,
    /// Striped locks that take this process's concurrent saves of one session in turn, so a burst of
    /// requests on one session costs each at most one merge round instead of colliding again and
    /// again. Writers in other processes are still handled optimistically by the save script.
    save_locks: Box<[tokio::sync::Mutex<()>]>,
    /// Store keys already reported as corrupt (bounded), so a bad value is logged once, not per request.
    warned: Mutex<HashSet<String>>,
    /// The client-side read cache, unless turned off or on a cluster.
    cache: Option<Arc<cache::ReadCache>>,
    /// The eviction policy as last read, and when (see `managed.rs`).
    policy: Mutex<Option<(std::time::Instant, bool)>>,
}

/// Sessions in Redis. Cheap to clone; clones share one connection. Build it from a [`RedisConfig`]; it
/// does not connect until first used.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("config", &self.inner.config)
            .field(
                "connected",
                &self.inner.conn.read().map(|c| c.is_some()).unwrap_or(false),
            )
            .finish()
    }
}

/// What a load reads: the value, and its TTL in ms when the format keeps the expiry there.
struct Fetched {
    value: Option<Vec<u8>>,
    ttl_ms: Option<i64>,
}

impl redis::FromRedisValue for Fetched {
    /// A `GET` answer, or a `GET` + `PTTL` pipeline's.
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        match v {
            redis::Value::Array(items) if items.len() == 2 => {
                let mut items = items.into_iter();
                let value = redis::FromRedisValue::from_redis_value(
                    items.next().unwrap_or(redis::Value::Nil),
                )?;
                let ttl = redis::FromRedisValue::from_redis_value(
                    items.next().unwrap_or(redis::Value::Nil),
                )?;
                Ok(Fetched {
                    value,
                    ttl_ms: Some(ttl),
                })
            }
            v => Ok(Fetched {
                value: redis::FromRedisValue::from_redis_value(v)?,
                ttl_ms: None,
            }),
        }
    }
}

/// A load's read: `GET key`, or `GET` and `PTTL` in one pipeline when the format keeps the expiry in
/// the TTL.
enum ReadOp {
    Get(redis::Cmd),
    GetTtl(redis::Pipeline),
}

impl ReadOp {
    fn op(&self) -> Op<'_> {
        match self {
            ReadOp::Get(cmd) => Op::Cmd(cmd),
            ReadOp::GetTtl(pipe) => Op::Pipe(pipe),
        }
    }
}

fn read_op(rkey: &str, with_ttl: bool) -> ReadOp {
    if with_ttl {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(rkey).cmd("PTTL").arg(rkey);
        ReadOp::GetTtl(pipe)
    } else {
        let mut cmd = redis::cmd("GET");
        cmd.arg(rkey);
        ReadOp::Get(cmd)
    }
}

/// Number of striped save locks (a few tens of KiB; collisions between sessions are rare).
const SAVE_LOCK_STRIPES: usize = 1024;

impl RedisStore {
    /// The store of `config` ([`RedisConfig::build`]).
    fn build(config: RedisConfig) -> Result<Self, ConfigError> {
        #[cfg(feature = "redis-tls")]
        if config.tls() {
            // redis-rs's rustls needs a process-wide crypto provider; keep one the application chose.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if config.replica_acks.is_some() && matches!(config.topology, Topology::Cluster { .. }) {
            return Err(ConfigError::InvalidTopology {
                reason: "with_replica_acks is for a single server or Sentinel, not a cluster"
                    .into(),
            });
        }
        let connector = Connector::new(&config)?;
        let cache = match config.read_cache {
            0 => None,
            _ if connector.is_cluster() => {
                tracing::info!("the Redis read cache is off on a cluster");
                None
            }
            n => Some(
                cache::ReadCache::new(connector.single(), &config, n).map_err(|e| {
                    ConfigError::InvalidUrl {
                        reason: e.to_string(),
                    }
                })?,
            ),
        };
        let layout = Layout::new(&config.prefix, connector.is_cluster());
        Ok(RedisStore {
            inner: Arc::new(Inner {
                config,
                connector,
                conn: RwLock::new(None),
                generation: Default::default(),
                connecting: tokio::sync::Mutex::new(()),
                layout,
                save_locks: (0..SAVE_LOCK_STRIPES)
                    .map(|_| tokio::sync::Mutex::new(()))
                    .collect(),
                warned: Mutex::new(HashSet::new()),
                cache,
                policy: Mutex::new(None),
            }),
        })
    }

    /// The store's settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// What the client-side read cache has done so far; `None` when it is off.
    pub fn read_cache_stats(&self) -> Option<ReadCacheStats> {
        self.inner.cache.as_ref().map(|c| c.stats())
    }

    fn format(&self) -> &SharedFormat {
        &self.inner.config.format
    }

    /// Whether the store keeps its index and user sets (the format allows it).
    fn indexed(&self) -> bool {
        self.inner.config.format.indexed()
    }

    /// The Redis key of a session.
    fn redis_key(&self, key: &StoreKey) -> String {
        self.inner.layout.session_key(key)
    }

    fn now_ms(&self) -> u64 {
        self.inner.config.clock.now().as_millis()
    }

    /// Drops `rkey` from the read cache when the returned guard goes (however the write ends), so
    /// this process's next load of a session it wrote or deleted reads Redis even if the
    /// invalidation message is still on its way.
    fn uncache_after<'a>(&'a self, rkey: &'a str) -> cache::Uncache<'a> {
        cache::Uncache::new(self.inner.cache.as_deref(), rkey)
    }

    /// Logs a corrupt or foreign value once per key (bounded memory), not on every request.
    fn warn_corrupt(&self, redis_key: &str, why: &dyn std::fmt::Display) {
        let first = match self.inner.warned.lock() {
            Ok(mut seen) => {
                if seen.len() >= 1024 {
                    seen.clear();
                }
                seen.insert(redis_key.to_owned())
            }
            Err(_) => true,
        };
        if first {
            tracing::warn!(key = %redis_key, error = %why,
                "value under the session prefix is not a session record; ignored until cleanup");
        }
    }

    /// Decodes a stored value: absent, expired, foreign or corrupt values are `None` (logged once).
    /// When the format keeps the expiry in the TTL, a value Redis still holds is live whatever its
    /// stored expiry says (another app's touch moves only the TTL).
    fn decode(&self, rkey: &str, raw: Option<&[u8]>) -> Option<Loaded> {
        let loaded = self.decode_stored(rkey, raw);
        if self.format().expiry_in_ttl() {
            return loaded;
        }
        loaded.filter(|l| !l.record.is_expired(self.inner.config.clock.now()))
    }

    /// Decodes a stored value whatever its expiry says: what Redis still holds, even when this
    /// instance's clock thinks it is over (another instance's clock may disagree; a revoke must reach
    /// it). Absent, foreign or corrupt values are `None` (logged once).
    fn decode_stored(&self, rkey: &str, raw: Option<&[u8]>) -> Option<Loaded> {
        let raw = raw?;
        let format = self.format();
        match format.decode(raw) {
            Ok(record) => Some(Loaded::new(record, format.version_rule().version_of(raw))),
            Err(e) => {
                self.warn_corrupt(rkey, &e);
                None
            }
        }
    }

    /// Turns a read's answer into a loaded session. A key of another type is not ours: absent. When
    /// the format keeps the expiry in the TTL, the TTL read with it is the session's expiry.
    fn decode_load(
        &self,
        rkey: &str,
        fetched: Result<Fetched, StoreError>,
    ) -> Result<Option<Loaded>, StoreError> {
        match fetched {
            Ok(Fetched { value, ttl_ms }) => {
                let loaded = self.decode(rkey, value.as_deref());
                let now = self.inner.config.clock.now();
                Ok(match (loaded, ttl_ms) {
                    (Some(mut l), Some(ttl)) if ttl > 0 => {
                        // The stored expiry, unless the TTL tells another (a touch by another app
                        // moves only the TTL); a second apart is the rounding of `SET … EX`.
                        let by_ttl = now.plus(std::time::Duration::from_millis(ttl as u64));
                        let stored = l.record.expires;
                        if by_ttl.as_millis().abs_diff(stored.as_millis()) > 1000 {
                            Arc::make_mut(&mut l.record).expires = by_ttl;
                        }
                        Some(l)
                    }
                    (loaded, _) => loaded.filter(|l| !l.record.is_expired(now)),
                })
            }
            Err(StoreError::Backend { source, .. })
                if source
                    .downcast_ref::<RedisError>()
                    .is_some_and(|e| e.code() == Some("WRONGTYPE")) =>
            {
                self.warn_corrupt(rkey, &"not a string");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl SessionStore for RedisStore {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let rkey = self.redis_key(key);
        let with_ttl = self.format().expiry_in_ttl();
        let read = read_op(&rkey, with_ttl);
        let Some(cache) = &self.inner.cache else {
            return self.decode_load(&rkey, self.exec(read.op()).await);
        };
        if let Some(hit) = cache.get(&rkey) {
            if !hit.record.is_expired(self.inner.config.clock.now()) {
                return Ok(Some(hit));
            }
            cache.invalidate(&rkey);
        }
        match cache.fetch(&rkey, with_ttl).await {
            Some((ticket, fetched)) => {
                let loaded = self.decode_load(&rkey, fetched);
                cache.finish(ticket, loaded.as_ref().ok().and_then(Option::as_ref));
                loaded
            }
            None => self.decode_load(&rkey, self.exec(read.op()).await),
        }
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        self.create_record(key, record).await
    }

    async fn replace(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        self.replace_record(key, expected, record).await
    }

    /// One script call for a session without a user; a session with one costs a second call (the
    /// first one finds out whose set to update: see the scripts' docs).
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.delete_as(key, None, false).await
    }

    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        self.save_changes(key, base, ours, changes).await
    }

    async fn renew(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Renewed, StoreError> {
        self.renew_session(old, new, base, ours, changes).await
    }

    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        self.sessions_of(user, false).await
    }

    async fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> Result<u64, StoreError> {
        self.revoke(user, keep).await
    }

    async fn count(&self) -> Result<u64, StoreError> {
        self.count_sessions().await
    }

    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.list_sessions(cursor, limit).await
    }

    async fn cleanup(&self) -> Result<u64, StoreError> {
        self.clean_up().await
    }

    async fn usage(&self) -> Result<Usage, StoreError> {
        self.memory_usage().await
    }

    async fn health(&self) -> Health {
        self.check_health().await
    }

    async fn info(&self) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
        self.server_info().await.map(Some)
    }

    fn format(&self) -> SharedFormat {
        self.inner.config.format.clone()
    }

    fn clock(&self) -> SharedClock {
        self.inner.config.clock.clone()
    }
}
