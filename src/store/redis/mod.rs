//! [`RedisStore`]: sessions in Redis, shared by every instance of an application.
//!
//! # Layout
//!
//! * A session lives at `<prefix><store key>` (prefix `session:` by default) as a string holding
//!   [`Record::to_json`], so `redis-cli GET session:<id>` shows it as JSON:
//!   `{"createdAt":…,"lastAccess":…,"expires":…,"deadline":…,"userAgent":"…","user":"…","data":{…}}`.
//!   Its TTL is set with the value, in milliseconds (`PX`): the time left until `expires`.
//! * A sorted set at `<prefix>index` holds every session's store key scored by its expiry
//!   (milliseconds since the epoch). It makes [`ManagedStore::count`] one `ZCOUNT` and
//!   [`ManagedStore::list`] a ranked page, both O(log n), never `KEYS` or a full `SCAN`. The value and
//!   its index entry change together, in one Lua script per create, save and delete.
//!
//! # Saving
//!
//! [`SessionStore::load`] answers the record with its version: the stored bytes themselves for a value
//! up to 1 KiB, the SHA-1 of them (exactly what Lua's `redis.sha1hex` computes) for a larger one. A save
//! is one `EVALSHA` on the uncontended path: the script writes the new value if the stored value is
//! still the loaded one (compared byte for byte, or by digest), answers "gone" (writing nothing)
//! if the session was deleted meanwhile, and otherwise hands back the current value, which the store
//! merges with the request's change-set ([`Record::merge`]) and tries again (bounded).
//!
//! # Connections and waits
//!
//! Nothing connects when the store is built: an application starts while Redis is down. The first
//! call connects (bounded by the connect timeout); a failed connect is tried again by the next call.
//! Every command is bounded by the command timeout, so a dead or frozen Redis costs a request at most
//! about `connect_timeout + command_timeout`, answered as [`StoreError::Timeout`] or
//! [`StoreError::Unavailable`] (which a failover store treats as "switch to files").
//!
//! ```no_run
//! use sessionforge::{SessionLayer, store::redis::{RedisConfig, RedisStore}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // REDIS_URL, or REDIS_HOST / REDIS_PORT / REDIS_PASSWORD / REDIS_DB / ...
//! let config = RedisConfig::from_env()?.with_prefix("djforge:sess:");
//! let store = RedisStore::new(config)?;
//! let layer = SessionLayer::new(store);
//! # Ok(()) }
//! ```
//!
//! # Pitfalls
//!
//! * Sessions evicted by a `maxmemory` policy leave their index entry behind until a listing or
//!   [`ManagedStore::cleanup`] notices; [`ManagedStore::count`] may count them until then. Prefer
//!   `volatile-*` or `noeviction` policies for a Redis that holds sessions.
//! * The index and a session are two keys in one script, which Redis Cluster only allows within one
//!   hash slot; this store talks to a single Redis (or a replicated primary). See the connection notes
//!   in the source for how a cluster connection fits.

mod cache;
mod cluster;
mod config;
mod layout;
mod scripts;
mod topology;

pub use cache::ReadCacheStats;
pub use config::{
    ConfigError, NodeAddr, RedisConfig, Topology, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_SAVE_ATTEMPTS, DEFAULT_PREFIX, TLS_FEATURE,
};

use super::{
    ChangeSet, Created, Loaded, ManagedStore, NodeHealth, Page, Record, RedisInfo, RedisNodeInfo,
    Saved, SessionStore, StoreError, StoreHealth, StoreKind, Summary, Usage, Version,
};
use crate::id::StoreKey;
use crate::metrics::{Event, Metrics};
use layout::Layout;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, ScriptInvocation, ServerErrorKind};
use scripts::scripts;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use topology::{Conn, Connector};

/// What to send: a command, a script or a pipeline.
enum Op<'a> {
    Cmd(&'a Cmd),
    Script(&'a ScriptInvocation<'a>),
    Pipe(&'a Pipeline),
    /// A command for one cluster node (`host:port`); the one server when not a cluster.
    OnNode(&'a str, &'a Cmd),
}

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
    /// The client-side read cache, when configured ([`RedisConfig::with_read_cache`]).
    cache: Option<Arc<cache::ReadCache>>,
}

/// Sessions in Redis. Cheap to clone; clones share one connection.
///
/// Build it from a [`RedisConfig`]; it does not connect until first used.
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

/// One argument of the save script, borrowed where it can be (the command copies it anyway).
pub(super) enum SaveArg<'a> {
    Bytes(std::borrow::Cow<'a, [u8]>),
    Num(u64),
}

impl<'a> From<&'a str> for SaveArg<'a> {
    fn from(s: &'a str) -> Self {
        SaveArg::Bytes(std::borrow::Cow::Borrowed(s.as_bytes()))
    }
}

impl SaveArg<'_> {
    /// An upper bound of its length in a command.
    pub(super) fn len(&self) -> usize {
        match self {
            SaveArg::Bytes(b) => b.len(),
            SaveArg::Num(_) => 20,
        }
    }
}

impl redis::ToRedisArgs for SaveArg<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        match self {
            SaveArg::Bytes(b) => out.write_arg(b),
            SaveArg::Num(n) => n.write_redis_args(out),
        }
    }
}

/// What a save script answered.
enum SaveReply {
    Gone,
    Saved,
    Changed(Vec<u8>),
    /// The stored value belongs to this user (not the one the call named).
    WrongUser(Option<String>),
}

impl redis::FromRedisValue for SaveReply {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let items: Vec<redis::Value> = redis::FromRedisValue::from_redis_value(v)?;
        let mut items = items.into_iter();
        let code: i64 = match items.next() {
            Some(v) => redis::FromRedisValue::from_redis_value(v)?,
            None => return Err("empty answer from the save script".into()),
        };
        match (code, items.next()) {
            (0, _) => Ok(SaveReply::Gone),
            (1, _) => Ok(SaveReply::Saved),
            (2, Some(cur)) => Ok(SaveReply::Changed(redis::FromRedisValue::from_redis_value(
                cur,
            )?)),
            (3, Some(user)) => {
                let user: String = redis::FromRedisValue::from_redis_value(user)?;
                Ok(SaveReply::WrongUser(parse_user_arg(&user)))
            }
            _ => Err("unexpected answer from the save script".into()),
        }
    }
}

/// Stored values up to this many bytes are their own version: the save script compares them byte for
/// byte (Lua strings are interned, so that is a pointer comparison), which spares hashing the value on
/// both ends; larger values are versioned by their digest so a save does not send them twice.
const RAW_VERSION_MAX: usize = 1024;

/// The version the store hands out for a stored value: the value itself when it is small, its
/// [`version_of`] digest otherwise. The save script accepts either form.
fn version_for(bytes: &[u8]) -> Version {
    if bytes.len() <= RAW_VERSION_MAX {
        if let Ok(text) = std::str::from_utf8(bytes) {
            return Version::new(text);
        }
    }
    version_of(bytes)
}

/// The digest version of a stored value: the lower-case hex SHA-1 of its bytes (Lua's
/// `redis.sha1hex`). The save script accepts it for any value (the store itself uses it for values
/// over 1 KiB, and the value itself below).
pub fn version_of(bytes: &[u8]) -> Version {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = sha1_smol::Sha1::from(bytes).digest().bytes();
    let mut hex = String::with_capacity(40);
    for b in digest {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    Version::new(hex)
}

impl RedisStore {
    /// A store with these settings. Does no I/O: Redis may be down.
    pub fn new(config: RedisConfig) -> Result<Self, ConfigError> {
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
        let cache = match (&connector, config.read_cache) {
            (_, 0) => None,
            (Connector::Single(client), n) => {
                Some(cache::ReadCache::new(client, &config, n).map_err(|e| {
                    ConfigError::InvalidUrl {
                        reason: e.to_string(),
                    }
                })?)
            }
            _ => {
                tracing::warn!("the Redis read cache needs a single server; it is off for a cluster or Sentinel");
                None
            }
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
            }),
        })
    }

    /// A store configured from the environment ([`RedisConfig::from_env`]).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(RedisConfig::from_env()?)
    }

    /// The store's settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The Redis key of a session: `<prefix><store key>`; in cluster mode
    /// `<prefix>{<c>}<store key>`, `<c>` being the store key's first character (its hash tag).
    pub fn redis_key(&self, key: &StoreKey) -> String {
        self.inner.layout.session_key(key)
    }

    /// The Redis key of the listing index: `<prefix>index`, a sorted set of store keys scored by
    /// expiry (milliseconds since the epoch). In cluster mode the index is sharded and this is the
    /// first shard; see [`RedisStore::index_key_for`].
    pub fn index_key(&self) -> &str {
        &self.inner.layout.indexes()[0]
    }

    /// The index that holds `key`: `<prefix>index`, or `<prefix>{<c>}index` in cluster mode (the
    /// same hash slot as the session, so one script can change both).
    pub fn index_key_for(&self, key: &StoreKey) -> &str {
        self.inner.layout.index_of(key.as_str())
    }

    /// The Redis key of `user`'s session set: `<prefix>user:<user>` for ids of at most 64 characters
    /// from `A-Z a-z 0-9 . _ @ + -` (readable in `redis-cli`), `<prefix>user:#<sha1 hex of the id>`
    /// for any other id (bounded length, no separators or glob characters from client input; `#` never
    /// appears in a readable id, so the two forms cannot collide). Neither form can be a session key
    /// (store keys have no `:`).
    ///
    /// The set holds the store keys of the user's sessions scored by their expiry (milliseconds since
    /// the epoch); its own TTL follows its latest member's expiry.
    ///
    /// ```
    /// use sessionforge::store::redis::{RedisConfig, RedisStore};
    ///
    /// let store = RedisStore::new(RedisConfig::new("redis://127.0.0.1:6379")?.with_prefix("app:"))?;
    /// assert_eq!(store.user_key("alice@example.com"), "app:user:alice@example.com");
    /// assert_eq!(store.user_key("a b").len(), "app:user:#".len() + 40);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn user_key(&self, user: &str) -> String {
        format!("{}{}", self.inner.config.prefix, user_suffix(user))
    }

    /// The user set that holds `key` for `user`: [`RedisStore::user_key`] for one server; in cluster
    /// mode one set per user *and shard*, `<prefix>{<c>}user:<user>`, in the hash slot of the
    /// session (`<c>` as in [`RedisStore::redis_key`]), so the scripts keep the session, its index
    /// entry and its user-set entry in step atomically there too.
    pub fn user_key_for(&self, user: &str, key: &StoreKey) -> String {
        self.inner.layout.user_key(&user_suffix(user), key.as_str())
    }

    /// What the client-side read cache has done so far; `None` when it is off.
    pub fn read_cache_stats(&self) -> Option<ReadCacheStats> {
        self.inner.cache.as_ref().map(|c| c.stats())
    }

    /// Drops `rkey` from the read cache when the returned guard goes (however the write ends), so
    /// this process's next load of a session it wrote or deleted reads Redis even if the
    /// invalidation message is still on its way.
    fn uncache_after<'a>(&'a self, rkey: &'a str) -> cache::Uncache<'a> {
        cache::Uncache::new(self.inner.cache.as_deref(), rkey)
    }

    /// Sends `PING` and answers the round-trip time (connecting first if needed). Bounded by the
    /// connect and command timeouts: the health check of a failover store.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let reply: String = self.exec(Op::Cmd(&redis::cmd("PING"))).await?;
        if reply != "PONG" {
            return Err(backend(format!("unexpected PING reply {reply:?}")));
        }
        Ok(start.elapsed())
    }

    fn current(&self) -> Option<(u64, Conn)> {
        self.inner.conn.read().ok().and_then(|c| c.clone())
    }

    /// Forgets connection `generation` after a failure that may have left it unusable, so the next
    /// call opens a fresh one. (The connection manager reconnects by itself after I/O errors, but
    /// keeps a failed handshake, e.g. `LOADING` or a refused `AUTH`, and cannot see a half-open
    /// socket that only ever times out.)
    fn reset(&self, generation: u64) {
        if let Ok(mut slot) = self.inner.conn.write() {
            if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
                *slot = None;
            }
        }
    }

    async fn conn(&self) -> Result<(u64, Conn), StoreError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let limit = self.inner.config.connect_timeout;
        // Boxed: connecting is rare, and its future is large; inline it would make every store
        // call's future (moved into a box per call) kilobytes bigger.
        tokio::time::timeout(limit, Box::pin(self.connect()))
            .await
            .unwrap_or(Err(StoreError::Timeout {
                backend: StoreKind::Redis,
                after: limit,
            }))
    }

    async fn connect(&self) -> Result<(u64, Conn), StoreError> {
        let _one_at_a_time = self.inner.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let cfg = &self.inner.config;
        let conn = self.inner.connector.connect(cfg).await;
        let conn = conn.map_err(|e| {
            tracing::debug!(error = %e, redis = %cfg, "cannot connect to Redis");
            if e.is_timeout() {
                StoreError::Timeout {
                    backend: StoreKind::Redis,
                    after: cfg.connect_timeout,
                }
            } else {
                // Whatever stopped the handshake (refused, reset, AUTH, LOADING), Redis is not
                // usable now.
                StoreError::Unavailable {
                    backend: StoreKind::Redis,
                    source: Box::new(e),
                }
            }
        })?;
        let generation = self
            .inner
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut slot) = self.inner.conn.write() {
            *slot = Some((generation, conn.clone()));
        }
        tracing::debug!(redis = %cfg, "connected to Redis");
        Ok((generation, conn))
    }

    /// Runs one command, script or pipeline: at most the connect plus the command timeout in all.
    async fn exec<T: redis::FromRedisValue>(&self, op: Op<'_>) -> Result<T, StoreError> {
        let budget = self.inner.config.connect_timeout + self.inner.config.command_timeout;
        let started = Instant::now();
        match self.exec_once(&op).await {
            // An established connection was closed under us (a proxy's or Redis's idle timeout,
            // `CLIENT KILL`, a restart): one more try on a fresh connection, so a dropped connection
            // alone is not an outage. A Redis that is really gone refuses the reconnect at once. The
            // retry only gets what is left of one call's budget (connect + command timeout), so the
            // whole call never takes longer than a call without it could.
            Err(Attempt::Dropped(e)) => {
                let left = budget.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, Box::pin(self.exec_once(&op))).await {
                    Ok(res) => res.map_err(Attempt::into_error),
                    Err(_) => Err(e),
                }
            }
            other => other.map_err(Attempt::into_error),
        }
    }

    async fn exec_once<T: redis::FromRedisValue>(&self, op: &Op<'_>) -> Result<T, Attempt> {
        let (generation, mut conn) = self.conn().await.map_err(Attempt::Failed)?;
        let after = self.inner.config.command_timeout;
        let fut = async {
            match op {
                Op::Cmd(cmd) => cmd.query_async(&mut conn).await,
                Op::Script(inv) => inv.invoke_async(&mut conn).await,
                Op::Pipe(pipe) => pipe.query_async(&mut conn).await,
                // Boxed: admin-only, and the cluster's routing future is large.
                Op::OnNode(addr, cmd) => Box::pin(conn.on_node(addr, cmd))
                    .await
                    .and_then(|v| redis::from_redis_value(v).map_err(Into::into)),
            }
        };
        match tokio::time::timeout(after, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if is_connection_problem(&e) {
                    self.reset(generation);
                }
                if e.is_connection_dropped() {
                    Err(Attempt::Dropped(map_error(e, after)))
                } else {
                    Err(Attempt::Failed(map_error(e, after)))
                }
            }
            Err(_) => {
                self.reset(generation);
                Err(Attempt::Failed(StoreError::Timeout {
                    backend: StoreKind::Redis,
                    after,
                }))
            }
        }
    }

    /// With [`RedisConfig::with_replica_acks`], waits until enough replicas have this connection's
    /// writes; too few in time is `Unavailable`. Nothing to do otherwise.
    async fn replicated(&self) -> Result<(), StoreError> {
        let Some((replicas, timeout)) = self.inner.config.replica_acks else {
            return Ok(());
        };
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout.as_millis() as u64);
        let got: u32 = self.exec(Op::Cmd(&wait)).await?;
        if got < replicas {
            return Err(StoreError::Unavailable {
                backend: StoreKind::Redis,
                source: format!(
                    "the write reached {got} of {replicas} replicas within {timeout:?}; \
                     it may not survive a failover"
                )
                .into(),
            });
        }
        Ok(())
    }

    /// Removes `members` from the sorted set `set` (the index or a user set) where their session key
    /// does not exist, checked atomically: a session created meanwhile under the same key stays.
    async fn drop_stale<M: AsRef<str>>(&self, set: &str, members: &[M]) -> Result<u64, StoreError> {
        let mut inv = scripts().repair.prepare_invoke();
        inv.key(set);
        for m in members {
            // In cluster mode `set` is a shard's and every member is in that shard: one slot.
            inv.key(self.inner.layout.session_key_of(m.as_ref()))
                .arg(m.as_ref());
        }
        self.exec(Op::Script(&inv)).await
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

    /// The TTL for a record: the time left until it expires, at least 1 ms (Redis refuses `PX 0`).
    fn ttl_ms(&self, record: &Record) -> u64 {
        ttl_ms_at(record, self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        self.inner.config.clock.now().as_millis()
    }
}

/// The TTL for a record at `now_ms`: the time left until it expires, at least 1 ms (Redis refuses
/// `PX 0`).
fn ttl_ms_at(record: &Record, now_ms: u64) -> u64 {
    record
        .expires
        .as_millis()
        .saturating_sub(now_ms)
        .clamp(1, MAX_TTL_MS)
}

/// The longest TTL the store sets (a hundred years): Redis refuses an expiry past `i64::MAX`
/// milliseconds, and a record may say anything (a hostile or corrupt value copied back at failback).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// Whether an error says the connection itself may be broken (as opposed to Redis answering our
/// command with an error).
fn is_connection_problem(e: &RedisError) -> bool {
    match e.kind() {
        ErrorKind::Server(
            ServerErrorKind::BusyLoading
            | ServerErrorKind::MasterDown
            | ServerErrorKind::ReadOnly
            | ServerErrorKind::ClusterDown,
        ) => true,
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType => false,
        _ => true,
    }
}

/// Refused, reset, dropped and other I/O errors: unavailable; timeouts: timeout; the rest: backend.
/// How one attempt at a command failed.
enum Attempt {
    /// The connection was dropped: worth one retry on a new connection.
    Dropped(StoreError),
    /// Anything else.
    Failed(StoreError),
}

impl Attempt {
    fn into_error(self) -> StoreError {
        match self {
            Attempt::Dropped(e) | Attempt::Failed(e) => e,
        }
    }
}

fn map_error(e: RedisError, after: Duration) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout {
            backend: StoreKind::Redis,
            after,
        }
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
            )
        )
    {
        StoreError::Unavailable {
            backend: StoreKind::Redis,
            source: Box::new(e),
        }
    } else {
        StoreError::Backend {
            backend: StoreKind::Redis,
            source: Box::new(e),
        }
    }
}

fn backend(msg: impl Into<String>) -> StoreError {
    StoreError::Backend {
        backend: StoreKind::Redis,
        source: msg.into().into(),
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, key: &StoreKey) -> Result<Option<Loaded>, StoreError> {
        let rkey = self.redis_key(key);
        let Some(cache) = &self.inner.cache else {
            let fetched = self.exec(Op::Cmd(redis::cmd("GET").arg(&rkey))).await;
            return self.decode_load(&rkey, fetched);
        };
        if let Some(hit) = cache.get(&rkey) {
            if !hit.record.is_expired(self.inner.config.clock.now()) {
                return Ok(Some(hit));
            }
            cache.invalidate(&rkey);
        }
        match cache.fetch(&rkey).await {
            Some((ticket, fetched)) => {
                let loaded = self.decode_load(&rkey, fetched);
                cache.finish(ticket, loaded.as_ref().ok().and_then(Option::as_ref));
                loaded
            }
            None => {
                let fetched = self.exec(Op::Cmd(redis::cmd("GET").arg(&rkey))).await;
                self.decode_load(&rkey, fetched)
            }
        }
    }

    async fn create(&self, key: &StoreKey, record: &Record) -> Result<Created, StoreError> {
        let rkey = self.redis_key(key);
        let _uncache = self.uncache_after(&rkey);
        let mut inv = scripts().create.prepare_invoke();
        inv.key(self.redis_key(key))
            .key(self.index_key_for(key))
            .arg(record.to_json())
            .arg(self.ttl_ms(record))
            .arg(record.expires.as_millis())
            .arg(key.as_str())
            .arg(self.now_ms());
        if let Some(user) = &record.user {
            inv.key(self.user_key_for(user, key));
        }
        let stored: i64 = self.exec(Op::Script(&inv)).await?;
        Ok(if stored == 1 {
            self.replicated().await?;
            Created::Created
        } else {
            Created::Exists
        })
    }

    async fn save(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        let rkey = self.redis_key(key);
        let uncache = self.uncache_after(&rkey);
        let stripe = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            (h.finish() % SAVE_LOCK_STRIPES as u64) as usize
        };
        // Bounded wait: if the holder is stuck on a frozen Redis, go ahead optimistically rather
        // than queueing behind it (the script keeps the save correct either way). Uncontended (the
        // usual case) it is taken at once, with no timer.
        let lock = &self.inner.save_locks[stripe];
        let _turn = match lock.try_lock() {
            Ok(turn) => Some(turn),
            Err(_) => tokio::time::timeout(self.inner.config.command_timeout, lock.lock())
                .await
                .ok(),
        };
        let mut expected = base.clone();
        // Ours until a conflict makes a merged copy.
        let mut record = std::borrow::Cow::Borrowed(ours);
        // The user the stored value belongs to, when known. Unless this request changed the user,
        // it is the loaded one, which `ours` still carries (and the digest check proves it is still
        // stored). When it changed, the script checks the stored JSON and answers the right one.
        let mut stored_user: Option<Option<String>> = match &changes.user {
            None => Some(ours.user.clone()),
            Some(_) => None,
        };
        // Saves go through the read cache's tracking connection, whose script reads the key again.
        let tracked = self.inner.cache.is_some() && self.inner.config.replica_acks.is_none();
        // Whether the record keeps the expiry (index score) the stored value has.
        let mut kept = changes.expiry_kept;
        let mut attempt = 0u32;
        let mut wrong_user_guesses = 0;
        while attempt < self.inner.config.max_save_attempts {
            let believed = stored_user.clone().flatten();
            let new_user = record.user.clone();
            let believed_set = believed.as_ref().map(|u| self.user_key_for(u, key));
            let new_set = new_user
                .as_ref()
                .filter(|u| Some(*u) != believed.as_ref())
                .map(|u| self.user_key_for(u, key));
            let mut keys: Vec<&str> = Vec::with_capacity(4);
            keys.extend([rkey.as_str(), self.index_key_for(key)]);
            keys.extend(believed_set.as_deref());
            keys.extend(new_set.as_deref());
            let json = record.to_json();
            let flag = |on: bool| SaveArg::from(if on { "1" } else { "0" });
            let now = self.now_ms();
            let args = [
                SaveArg::from(expected.as_str()),
                SaveArg::Bytes(std::borrow::Cow::Borrowed(&json)),
                SaveArg::Num(ttl_ms_at(&record, now)),
                SaveArg::Num(record.expires.as_millis()),
                SaveArg::from(key.as_str()),
                SaveArg::Bytes(user_arg(believed.as_deref()).into_bytes().into()),
                SaveArg::Bytes(user_arg(new_user.as_deref()).into_bytes().into()),
                flag(stored_user.is_none()),
                SaveArg::Num(now),
                flag(tracked),
                flag(kept),
            ];
            let reply = match self
                .save_through_cache(&rkey, &keys, &args, &json, &record, &uncache)
                .await
            {
                Some(reply) => reply?,
                None => {
                    uncache.rearm();
                    let mut inv = scripts().save.prepare_invoke();
                    for k in &keys {
                        inv.key(k);
                    }
                    for a in &args {
                        inv.arg(a);
                    }
                    self.exec::<SaveReply>(Op::Script(&inv)).await?
                }
            };
            match reply {
                SaveReply::Saved => {
                    self.replicated().await?;
                    return Ok(Saved::Saved);
                }
                SaveReply::Gone => return Ok(Saved::Gone),
                SaveReply::WrongUser(actual) => {
                    // Not a conflict: the stored value is the one we expected, only its user was not
                    // known here. Name the right set and go again at once (bounded).
                    stored_user = Some(actual);
                    wrong_user_guesses += 1;
                    if wrong_user_guesses > 2 {
                        break;
                    }
                    continue;
                }
                SaveReply::Changed(current) => {
                    Metrics::global().count(Event::SaveConflict);
                    let Ok(mut merged) = Record::from_json(&current) else {
                        // Not a session any more: nothing to merge into, and never ours to
                        // overwrite. Cleanup removes it.
                        self.warn_corrupt(&rkey, &"corrupt value found while saving");
                        return Ok(Saved::Gone);
                    };
                    // The value we now expect is `current`, whose user is exactly known.
                    stored_user = Some(merged.user.clone());
                    let stored_expires = merged.expires;
                    merged.merge(changes, ours);
                    kept = merged.expires == stored_expires;
                    expected = version_for(&current);
                    record = std::borrow::Cow::Owned(Arc::new(merged));
                }
            }
            // Contended: let the other writers through before trying again. A random pause spreads a
            // burst of writers to one session (say 64 tabs firing at once) over a few milliseconds
            // instead of having them collide again in lockstep.
            attempt += 1;
            if attempt >= self.inner.config.max_save_attempts {
                break;
            }
            let cap_ms = (1u32 << attempt.min(6)).min(50);
            let jitter = getrandom::u32().unwrap_or(attempt) % (cap_ms * 1000);
            tokio::time::sleep(Duration::from_micros(u64::from(jitter))).await;
        }
        Err(backend(format!(
            "save kept conflicting with concurrent writers ({} attempts)",
            self.inner.config.max_save_attempts
        )))
    }

    /// One script call for a session without a user; a session with one costs a second call (the
    /// first one finds out whose set to update: see the scripts' docs).
    async fn delete(&self, key: &StoreKey) -> Result<bool, StoreError> {
        self.delete_as(key, None, false).await
    }

    /// Prunes the user's set (expired members), reads the members' sessions, and lazily drops members
    /// whose session key is gone. At most [`MAX_USER_SESSIONS`] sessions, soonest expiry first.
    async fn user_sessions(&self, user: &str) -> Result<Vec<Summary>, StoreError> {
        let mut sessions = self.user_page(user, MAX_USER_SESSIONS).await?;
        super::sort_user_sessions(&mut sessions);
        Ok(sessions)
    }

    /// Deletes each listed session with its user named, in one script call each: a session whose user
    /// changed since the listing is left alone (it is someone else's now).
    async fn revoke_user_sessions(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        // Rounds until a round finds nothing more to delete (a user with more sessions than one
        // listing holds), bounded.
        for _ in 0..64 {
            let batch = self.user_page(user, REVOKE_BATCH).await?;
            let mut round = 0;
            for s in &batch {
                if Some(&s.id) != keep && self.delete_as(&s.id, Some(user), true).await? {
                    round += 1;
                }
            }
            deleted += round;
            if round == 0 || batch.len() < REVOKE_BATCH {
                break;
            }
        }
        Ok(deleted)
    }
}

/// `user:<user>` for readable ids, `user:#<sha1 hex>` otherwise (see [`RedisStore::user_key`]).
fn user_suffix(user: &str) -> String {
    let readable = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'));
    if readable {
        format!("user:{user}")
    } else {
        format!("user:#{}", sha1_smol::Sha1::from(user.as_bytes()).digest())
    }
}

impl RedisStore {
    /// With the read cache on (and no replica acknowledgements to wait for, which must be asked on
    /// the connection that wrote): the save script on the tracking connection, which tracks the key
    /// again after writing, and on success the record just written goes into the cache, so the next
    /// load of this session is a hit. One round trip. `None`: save through the main connection.
    async fn save_through_cache(
        &self,
        rkey: &str,
        keys: &[&str],
        args: &[SaveArg<'_>],
        json: &[u8],
        record: &Arc<Record>,
        uncache: &cache::Uncache<'_>,
    ) -> Option<Result<SaveReply, StoreError>> {
        let cache = self.inner.cache.as_ref()?;
        if self.inner.config.replica_acks.is_some() {
            return None;
        }
        let (ticket, answer) = cache
            .save_tracked(&scripts().save, keys, args, rkey)
            .await?;
        let reply = answer.and_then(|v| {
            redis::FromRedisValue::from_redis_value(v)
                .map_err(|e| backend(format!("unexpected answer from the save script: {e}")))
        });
        match &reply {
            Ok(SaveReply::Saved) => {
                // Stored exactly as sent, and tracked again by the script: unless an invalidation
                // arrived meanwhile (the ticket says), this is what Redis holds.
                let saved = Loaded {
                    record: Arc::clone(record),
                    version: version_for(json),
                };
                cache.finish(ticket, Some(&saved));
            }
            _ => {
                cache.finish(ticket, None);
                cache.invalidate(rkey);
            }
        }
        // The cache holds what Redis holds now (or nothing): the guard has nothing left to drop.
        uncache.disarm();
        Some(reply)
    }

    /// Turns a `GET` answer into a loaded session: absent, expired, foreign or corrupt values are
    /// `None` (logged once).
    fn decode_load(
        &self,
        rkey: &str,
        fetched: Result<Option<Vec<u8>>, StoreError>,
    ) -> Result<Option<Loaded>, StoreError> {
        let raw: Option<Vec<u8>> = match fetched {
            Ok(v) => v,
            Err(StoreError::Backend { source, .. })
                if source
                    .downcast_ref::<RedisError>()
                    .is_some_and(|e| e.code() == Some("WRONGTYPE")) =>
            {
                self.warn_corrupt(rkey, &"not a string");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(raw) = raw else { return Ok(None) };
        match Record::from_json(&raw) {
            Ok(record) if record.is_expired(self.inner.config.clock.now()) => Ok(None),
            Ok(record) => Ok(Some(Loaded {
                record: Arc::new(record),
                version: version_for(&raw),
            })),
            Err(e) => {
                self.warn_corrupt(rkey, &e);
                Ok(None)
            }
        }
    }
}

/// A user as the scripts take it: `''` for none, `'=' .. user` otherwise.
fn user_arg(user: Option<&str>) -> String {
    user.map_or_else(String::new, |u| format!("={u}"))
}

/// A user as the scripts answer it.
fn parse_user_arg(v: &str) -> Option<String> {
    v.strip_prefix('=').map(str::to_owned)
}

impl RedisStore {
    /// Deletes a session, naming `user` as its stored user. When the session belongs to someone else:
    /// with `strict`, nothing is deleted (`false`); otherwise the right set is named and the delete
    /// goes again.
    async fn delete_as(
        &self,
        key: &StoreKey,
        user: Option<&str>,
        strict: bool,
    ) -> Result<bool, StoreError> {
        let rkey = self.redis_key(key);
        let _uncache = self.uncache_after(&rkey);
        let mut believed: Option<String> = user.map(str::to_owned);
        for _ in 0..3 {
            let mut inv = scripts().delete.prepare_invoke();
            inv.key(self.redis_key(key)).key(self.index_key_for(key));
            if let Some(u) = &believed {
                inv.key(self.user_key_for(u, key));
            }
            inv.arg(key.as_str())
                .arg(user_arg(believed.as_deref()))
                .arg(self.now_ms());
            let reply: Vec<redis::Value> = self.exec(Op::Script(&inv)).await?;
            let mut reply = reply.into_iter();
            let n: i64 = match reply.next() {
                Some(v) => redis::FromRedisValue::from_redis_value(v).map_err(|e| {
                    backend(format!("unexpected answer from the delete script: {e}"))
                })?,
                None => return Err(backend("empty answer from the delete script")),
            };
            if n >= 0 {
                if n > 0 {
                    self.replicated().await?;
                }
                return Ok(n > 0);
            }
            if strict {
                return Ok(false);
            }
            let actual: Option<String> = match reply.next() {
                Some(v) => redis::FromRedisValue::from_redis_value(v).map_err(|e| {
                    backend(format!("unexpected answer from the delete script: {e}"))
                })?,
                None => None,
            };
            believed = actual.as_deref().and_then(parse_user_arg);
        }
        Err(backend(
            "delete kept finding a different user on the session (concurrent user changes)",
        ))
    }

    /// Up to `limit` of the user's live sessions, repairing the set on the way. In cluster mode the
    /// user's sets are visited shard by shard.
    async fn user_page(&self, user: &str, limit: usize) -> Result<Vec<Summary>, StoreError> {
        let mut sessions = Vec::new();
        for ukey in self.inner.layout.user_keys(&user_suffix(user)) {
            if sessions.len() >= limit {
                break;
            }
            let more = self
                .user_page_in(&ukey, user, limit - sessions.len())
                .await?;
            sessions.extend(more);
        }
        Ok(sessions)
    }

    /// [`RedisStore::user_page`] within one user set (all its members share its hash slot).
    async fn user_page_in(
        &self,
        ukey: &str,
        user: &str,
        limit: usize,
    ) -> Result<Vec<Summary>, StoreError> {
        let layout = &self.inner.layout;
        let mut inv = scripts().user_list.prepare_invoke();
        inv.key(ukey).arg(self.now_ms()).arg(limit);
        let members: Vec<String> = self.exec(Op::Script(&inv)).await?;
        let now = self.inner.config.clock.now();
        let mut sessions = Vec::with_capacity(members.len());
        let mut gone: Vec<&String> = Vec::new();
        for chunk in members.chunks(USER_MGET_CHUNK) {
            let names: Vec<String> = chunk.iter().map(|m| layout.session_key_of(m)).collect();
            let values: Vec<Option<Vec<u8>>> =
                self.exec(Op::Cmd(redis::cmd("MGET").arg(&names))).await?;
            for ((member, name), value) in chunk.iter().zip(&names).zip(values) {
                let Ok(id) = StoreKey::parse(member) else {
                    gone.push(member);
                    continue;
                };
                match value.map(|v| Record::from_json(&v)) {
                    None => gone.push(member),
                    Some(Ok(r)) if !r.is_expired(now) && r.user.as_deref() == Some(user) => {
                        sessions.push(r.summary(id))
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => self.warn_corrupt(name, &e),
                }
            }
        }
        if !gone.is_empty() {
            // A failure here only delays the repair.
            if let Err(e) = self.drop_stale(ukey, &gone).await {
                tracing::debug!(error = %e, "could not drop stale user-set entries");
            }
        }
        Ok(sessions)
    }
}

/// The most sessions [`SessionStore::user_sessions`] answers for one user.
pub const MAX_USER_SESSIONS: usize = 10_000;
/// Sessions listed per round of a revoke.
const REVOKE_BATCH: usize = 1000;
/// Session values fetched per `MGET` when listing a user's sessions.
const USER_MGET_CHUNK: usize = 500;

/// Number of striped save locks (a few tens of KiB; collisions between sessions are rare).
const SAVE_LOCK_STRIPES: usize = 1024;

/// Batch size of the cleanup's sweeps.
const SWEEP_BATCH: usize = 1000;
/// The largest page a listing fetches at once.
const MAX_PAGE: usize = 10_000;

impl RedisStore {
    /// Removes index entries of expired sessions, in batches; answers how many.
    async fn trim_expired(&self) -> Result<u64, StoreError> {
        let now = self.now_ms();
        let mut removed = 0u64;
        for index in self.inner.layout.indexes() {
            loop {
                let mut inv = scripts().trim.prepare_invoke();
                inv.key(index).arg(now).arg(SWEEP_BATCH);
                let n: u64 = self.exec(Op::Script(&inv)).await?;
                removed += n;
                if (n as usize) < SWEEP_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Removes index entries whose session is gone (evicted, deleted behind the store's back).
    async fn sweep_orphans(&self) -> Result<u64, StoreError> {
        let layout = &self.inner.layout;
        let mut removed = 0u64;
        for index in layout.indexes() {
            let mut cursor: u64 = 0;
            loop {
                let (next, items): (u64, Vec<String>) = self
                    .exec(Op::Cmd(
                        redis::cmd("ZSCAN")
                            .arg(index)
                            .arg(cursor)
                            .arg("COUNT")
                            .arg(SWEEP_BATCH),
                    ))
                    .await?;
                let members: Vec<&String> = items.iter().step_by(2).collect();
                if !members.is_empty() {
                    // One pipeline per index: in cluster mode its sessions share its hash slot.
                    let mut pipe = redis::pipe();
                    for m in &members {
                        pipe.cmd("EXISTS").arg(layout.session_key_of(m));
                    }
                    let exists: Vec<i64> = self.exec(Op::Pipe(&pipe)).await?;
                    let gone: Vec<&String> = members
                        .iter()
                        .zip(exists)
                        .filter(|(_, e)| *e == 0)
                        .map(|(m, _)| *m)
                        .collect();
                    if !gone.is_empty() {
                        removed += self.drop_stale(index, &gone).await?;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Deletes values under the prefix that are not session records (SCAN, in batches, on every
    /// master in cluster mode).
    async fn sweep_corrupt(&self) -> Result<u64, StoreError> {
        let nodes: Vec<Option<String>> = if self.inner.layout.sharded() {
            self.cluster_masters()
                .await?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        };
        let mut removed = 0u64;
        for node in &nodes {
            removed += self.sweep_corrupt_on(node.as_deref()).await?;
        }
        Ok(removed)
    }

    async fn sweep_corrupt_on(&self, node: Option<&str>) -> Result<u64, StoreError> {
        let layout = &self.inner.layout;
        let pattern = format!("{}*", glob_escape(&self.inner.config.prefix));
        let mut cursor: u64 = 0;
        let mut removed = 0u64;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SWEEP_BATCH)
                .clone();
            let (next, keys): (u64, Vec<String>) = match node {
                Some(addr) => self.exec(Op::OnNode(addr, &scan)).await?,
                None => self.exec(Op::Cmd(&scan)).await?,
            };
            // Only keys shaped like store keys are ours; the index and foreign keys are left alone.
            let ours: Vec<(&String, StoreKey)> = keys
                .iter()
                .filter_map(|k| layout.store_key_of(k).map(|id| (k, id)))
                .collect();
            if !ours.is_empty() {
                let names: Vec<&String> = ours.iter().map(|(k, _)| *k).collect();
                let values: Vec<Option<Vec<u8>>> =
                    self.exec(Op::Cmd(redis::cmd("MGET").arg(&names))).await?;
                for ((rkey, id), value) in ours.iter().zip(values) {
                    let corrupt = match value {
                        Some(v) => Record::from_json(&v).is_err(),
                        // MGET answers nil for a missing key and for a non-string one.
                        None => {
                            let t: String =
                                self.exec(Op::Cmd(redis::cmd("TYPE").arg(*rkey))).await?;
                            t != "none" && t != "string"
                        }
                    };
                    if corrupt {
                        let n = u64::from(self.delete_as(id, None, false).await?);
                        if n > 0 {
                            tracing::info!(key = %rkey, "cleanup removed a corrupt session value");
                        }
                        removed += n;
                    }
                }
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

/// Escapes the glob characters of a `SCAN MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Parses `INFO` text into sections.
fn parse_info(text: &str) -> RedisInfo {
    let mut info = RedisInfo::new();
    let mut section = String::from("default");
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('#') {
            section = name.trim().to_ascii_lowercase();
            info.entry(section.clone()).or_default();
        } else if let Some((k, v)) = line.split_once(':') {
            info.entry(section.clone())
                .or_default()
                .insert(k.to_owned(), v.to_owned());
        }
    }
    info
}

impl ManagedStore for RedisStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Redis
    }

    /// `ZCOUNT <prefix>index (now +inf`: O(log n).
    async fn count(&self) -> Result<u64, StoreError> {
        if self.inner.layout.sharded() {
            return self.cluster_count().await;
        }
        self.exec(Op::Cmd(
            redis::cmd("ZCOUNT")
                .arg(self.index_key())
                .arg(format!("({}", self.now_ms()))
                .arg("+inf"),
        ))
        .await
    }

    /// Live sessions ordered by expiry (soonest first), then store key. The cursor is
    /// `<expiry ms>:<store key>` of the last entry shown.
    async fn list(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let limit = limit.min(MAX_PAGE);
        if limit == 0 {
            return Ok(Page::default());
        }
        let (score, member) = match cursor {
            None => (String::new(), String::new()),
            Some(c) => {
                let parsed = c.split_once(':').and_then(|(s, m)| {
                    let s: u64 = s.parse().ok()?;
                    StoreKey::parse(m).ok()?;
                    Some((s.to_string(), m.to_owned()))
                });
                parsed.ok_or(StoreError::InvalidCursor)?
            }
        };
        let entries: Vec<(String, u64)> = if self.inner.layout.sharded() {
            self.cluster_page(&score, &member, limit + 1).await?
        } else {
            let mut inv = scripts().page.prepare_invoke();
            inv.key(self.index_key())
                .arg(self.now_ms())
                .arg(limit + 1)
                .arg(score)
                .arg(member);
            let flat: Vec<String> = self.exec(Op::Script(&inv)).await?;
            flat.chunks(2)
                .filter_map(|p| match p {
                    [m, s] => s.parse::<f64>().ok().map(|s| (m.clone(), s as u64)),
                    _ => None,
                })
                .collect()
        };
        let more = entries.len() > limit;
        let shown = &entries[..entries.len().min(limit)];
        let next_cursor = if more {
            shown.last().map(|(m, s)| format!("{s}:{m}"))
        } else {
            None
        };
        if shown.is_empty() {
            return Ok(Page {
                sessions: Vec::new(),
                next_cursor,
            });
        }
        let names: Vec<String> = shown
            .iter()
            .map(|(m, _)| self.inner.layout.session_key_of(m))
            .collect();
        let values: Vec<Option<Vec<u8>>> =
            self.exec(Op::Cmd(redis::cmd("MGET").arg(&names))).await?;
        let now = self.inner.config.clock.now();
        let mut sessions = Vec::with_capacity(shown.len());
        let mut gone = Vec::new();
        for (((member, _), name), value) in shown.iter().zip(&names).zip(values) {
            let Ok(id) = StoreKey::parse(member) else {
                gone.push(member.clone());
                continue;
            };
            match value.map(|v| Record::from_json(&v)) {
                None => gone.push(member.clone()),
                Some(Ok(r)) if !r.is_expired(now) => sessions.push(r.summary(id)),
                Some(Ok(_)) => {}
                Some(Err(e)) => self.warn_corrupt(name, &e),
            }
        }
        // Lazily drop index entries whose session is gone (one call per index: in cluster mode a
        // shard's entries share its slot). A failure here only delays it.
        let mut by_index: std::collections::BTreeMap<&str, Vec<&String>> = Default::default();
        for m in &gone {
            by_index
                .entry(self.inner.layout.index_of(m))
                .or_default()
                .push(m);
        }
        for (index, members) in by_index {
            if let Err(e) = self.drop_stale(index, &members).await {
                tracing::debug!(error = %e, "could not drop stale index entries");
            }
        }
        Ok(Page {
            sessions,
            next_cursor,
        })
    }

    /// Drops index entries of expired or vanished sessions and deletes values under the prefix that
    /// are not session records. Works in batches (`ZSCAN`/`SCAN`), never blocking Redis for long.
    async fn cleanup(&self) -> Result<u64, StoreError> {
        let expired = self.trim_expired().await?;
        let orphans = self.sweep_orphans().await?;
        let corrupt = self.sweep_corrupt().await?;
        tracing::info!(expired, orphans, corrupt, "Redis session cleanup done");
        Ok(expired + orphans + corrupt)
    }

    async fn health(&self) -> StoreHealth {
        if self.inner.layout.sharded() {
            return self.cluster_health().await;
        }
        match self.ping().await {
            Ok(rtt) => StoreHealth {
                serving: StoreKind::Redis,
                healthy: true,
                redis_healthy: Some(true),
                detail: Some(format!("PING {:.1} ms", rtt.as_secs_f64() * 1000.0)),
            },
            Err(e) => StoreHealth {
                serving: StoreKind::Redis,
                healthy: false,
                redis_healthy: Some(false),
                detail: Some(e.root_cause()),
            },
        }
    }

    /// `INFO memory`, with `CONFIG GET` for the limits when `INFO` lacks them (managed Redis often
    /// forbids `CONFIG`: then they are `None`).
    async fn usage(&self) -> Result<Usage, StoreError> {
        if self.inner.layout.sharded() {
            return self.cluster_usage().await;
        }
        let text: String = self.exec(Op::Cmd(redis::cmd("INFO").arg("memory"))).await?;
        let info = parse_info(&text);
        let mem = info.get("memory").cloned().unwrap_or_default();
        let used_memory = mem
            .get("used_memory")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| backend("INFO memory has no used_memory"))?;
        let used_memory_human = mem.get("used_memory_human").cloned().unwrap_or_default();
        let mut maxmemory = mem.get("maxmemory").and_then(|v| v.parse().ok());
        let mut maxmemory_policy = mem.get("maxmemory_policy").cloned();
        if maxmemory.is_none() || maxmemory_policy.is_none() {
            let pairs: Result<Vec<String>, _> = self
                .exec(Op::Cmd(redis::cmd("CONFIG").arg("GET").arg("maxmemory*")))
                .await;
            if let Ok(pairs) = pairs {
                for kv in pairs.chunks(2) {
                    match kv {
                        [k, v] if k == "maxmemory" => maxmemory = maxmemory.or(v.parse().ok()),
                        [k, v] if k == "maxmemory-policy" => {
                            maxmemory_policy = maxmemory_policy.or(Some(v.clone()))
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(Usage::Redis {
            used_memory,
            used_memory_human,
            maxmemory,
            maxmemory_policy,
        })
    }

    async fn redis_info(&self) -> Result<Option<RedisInfo>, StoreError> {
        if self.inner.layout.sharded() {
            return self.cluster_info().await.map(Some);
        }
        let text: String = self.exec(Op::Cmd(&redis::cmd("INFO"))).await?;
        Ok(Some(parse_info(&text)))
    }

    async fn node_health(&self) -> Vec<NodeHealth> {
        if !self.inner.layout.sharded() {
            return Vec::new();
        }
        self.cluster_node_health().await.unwrap_or_default()
    }

    async fn redis_node_info(&self) -> Result<Option<RedisNodeInfo>, StoreError> {
        if !self.inner.layout.sharded() {
            return Ok(None);
        }
        self.cluster_node_info().await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_is_at_least_a_millisecond_and_at_most_a_hundred_years() {
        let at = |expires: u64| {
            let t0 = crate::expiry::Timestamp::from_millis(0);
            let mut r = crate::store::test_record(t0, Duration::ZERO);
            r.expires = crate::expiry::Timestamp::from_millis(expires);
            ttl_ms_at(&r, 1_000)
        };
        assert_eq!(at(500), 1);
        assert_eq!(at(61_000), 60_000);
        assert_eq!(at(u64::MAX), MAX_TTL_MS);
    }

    #[test]
    fn small_values_are_their_own_version_and_large_ones_their_digest() {
        let small = br#"{"data":{"n":1}}"#;
        assert_eq!(version_for(small).as_str(), r#"{"data":{"n":1}}"#);
        let large = vec![b'x'; RAW_VERSION_MAX + 1];
        assert_eq!(version_for(&large), version_of(&large));
        assert_eq!(version_for(&large).as_str().len(), 40);
    }

    #[test]
    fn version_is_the_lowercase_hex_sha1_redis_computes() {
        // sha1("abc"), as `redis-cli EVAL "return redis.sha1hex(ARGV[1])" 0 abc` prints it.
        assert_eq!(
            version_of(b"abc").as_str(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn info_text_is_split_into_lower_case_sections() {
        let info = parse_info("# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nused_memory:100\r\nused_memory_human:100B\r\n");
        assert_eq!(info["server"]["redis_version"], "7.0.15");
        assert_eq!(info["memory"]["used_memory_human"], "100B");
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("djforge:sess:"), "djforge:sess:");
    }

    #[test]
    fn only_connection_level_errors_reset_the_connection() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(is_connection_problem(&refused));
        assert!(matches!(
            map_error(refused, Duration::from_secs(1)),
            StoreError::Unavailable { .. }
        ));
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(matches!(
            map_error(timeout, Duration::from_secs(1)),
            StoreError::Timeout { .. }
        ));
        let typed = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(!is_connection_problem(&typed));
        assert!(matches!(
            map_error(typed, Duration::from_secs(1)),
            StoreError::Backend { .. }
        ));
    }
}
