//! The subjects under test, each doing one "read" (a session load) and one "write" (a load, then a save
//! of a small change-set) the same way.
//!
//! * **ours**: sessionforge's `RedisStore` with its own read cache (on by default): a second RESP3
//!   connection with `CLIENT TRACKING`, decoded records kept in memory.
//! * **cache-aio**: redis-rs 1.x client-side caching. Loads are a `GET` on a `ConnectionManager` with a
//!   `CacheConfig` (RESP3, `CLIENT TRACKING ON` sent by redis-rs), which caches the *reply bytes*, so the
//!   record is decoded (and its version read) on every load. Saves go through a `RedisStore` with its
//!   own cache off: the very same `EVALSHA` save script as ours, so the write path is identical and
//!   only the read cache differs. That is what building the store's read cache on `cache-aio` would be.
//!   Measured on a `ConnectionManager` (what a store needs: it reconnects, with a new cache epoch) and
//!   on a bare `MultiplexedConnection` (less overhead per call, no reconnect).
//! * **no cache** (reference): the `RedisStore` with `with_read_cache(0)`: one `GET` per load.

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::caching::CacheConfig;
use redis::AsyncConnectionConfig;
use sessionforge::expiry::{Clock, SystemClock};
use sessionforge::format::SharedFormat;
use sessionforge::id::StoreKey;
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{ChangeSet, Loaded, Saved, SessionStore};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

/// The session key prefix every subject uses (the same sessions for all).
pub const PREFIX: &str = "rc:";
/// Sessions each cache may hold (ours: 10,000 by default; cache-aio: set to the same).
pub const CAPACITY: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Which {
    Ours,
    CacheAio,
    CacheAioPlain,
    NoCache,
}

impl Which {
    pub fn name(self) -> &'static str {
        match self {
            Which::Ours => "ours (RedisStore read cache)",
            Which::CacheAio => "cache-aio (ConnectionManager) + decode",
            Which::CacheAioPlain => "cache-aio (MultiplexedConnection) + decode",
            Which::NoCache => "reference: no cache",
        }
    }
}

/// A load or a write went wrong (the benchmark counts these; none are expected).
pub type Error = String;

/// A connection with redis-rs client-side caching.
#[derive(Clone)]
pub enum AioConn {
    /// A `ConnectionManager`: reconnects by itself, and starts a new cache epoch when it does.
    Manager(ConnectionManager),
    /// A bare `MultiplexedConnection`.
    Plain(MultiplexedConnection),
}

/// The redis-rs cache-aio reader: a connection with client-side caching, and the format to decode with.
#[derive(Clone)]
pub struct AioReader {
    pub conn: AioConn,
    format: SharedFormat,
}

impl AioReader {
    /// A connection in RESP3 with client-side caching of `CAPACITY` keys (redis-rs sends `CLIENT
    /// TRACKING ON` on each connection it opens); a `ConnectionManager` when `manager`, else a bare
    /// `MultiplexedConnection`. Both with 1 s connect and response timeouts, as the store has.
    pub async fn connect(url: &str, manager: bool) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(format!("{url}/?protocol=resp3"))?;
        let cache = CacheConfig::new().set_size(NonZeroUsize::new(CAPACITY).expect("non-zero"));
        let conn = if manager {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)))
                .set_cache_config(cache);
            AioConn::Manager(ConnectionManager::new_with_config(client, config).await?)
        } else {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)))
                .set_cache_config(cache);
            AioConn::Plain(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?,
            )
        };
        Ok(AioReader {
            conn,
            format: sessionforge::format::native(),
        })
    }

    /// `GET` through the cache, then decode the bytes as the store would (format decode, version from
    /// the leading bytes, expiry check).
    pub async fn load(&mut self, rkey: &str) -> Result<Option<Loaded>, Error> {
        let mut get = redis::cmd("GET");
        get.arg(rkey);
        let raw: Option<Vec<u8>> = match &mut self.conn {
            AioConn::Manager(c) => get.query_async(c).await,
            AioConn::Plain(c) => get.query_async(c).await,
        }
        .map_err(|e| e.to_string())?;
        Ok(decode(&self.format, raw.as_deref()))
    }

    /// (hits, misses) so far.
    pub fn stats(&self) -> Option<(u64, u64)> {
        match &self.conn {
            AioConn::Manager(c) => c.get_cache_statistics(),
            AioConn::Plain(c) => c.get_cache_statistics(),
        }
        .map(|s| (s.hit as u64, s.miss as u64))
    }
}

/// A stored value as a loaded session, as `RedisStore::decode` does for the native format.
pub fn decode(format: &SharedFormat, raw: Option<&[u8]>) -> Option<Loaded> {
    let raw = raw?;
    let record = format.decode(raw).ok()?;
    if record.is_expired(SystemClock.now()) {
        return None;
    }
    Some(Loaded::new(record, format.version_rule().version_of(raw)))
}

#[derive(Clone)]
pub enum Subject {
    Ours(RedisStore),
    CacheAio {
        reads: AioReader,
        writes: RedisStore,
    },
    NoCache(RedisStore),
}

pub fn store(url: &str, read_cache: Option<usize>) -> RedisStore {
    let mut config = RedisConfig::new(url)
        .expect("a redis:// URL")
        .with_prefix(PREFIX);
    if let Some(n) = read_cache {
        config = config.with_read_cache(n);
    }
    config.build().expect("a valid configuration")
}

impl Subject {
    pub async fn new(which: Which, url: &str) -> Subject {
        match which {
            // The read cache is on by default.
            Which::Ours => Subject::Ours(store(url, None)),
            Which::CacheAio | Which::CacheAioPlain => Subject::CacheAio {
                reads: AioReader::connect(url, which == Which::CacheAio)
                    .await
                    .expect("connect cache-aio"),
                writes: store(url, Some(0)),
            },
            Which::NoCache => Subject::NoCache(store(url, Some(0))),
        }
    }

    pub async fn load(&mut self, key: &StoreKey, rkey: &str) -> Result<Option<Loaded>, Error> {
        match self {
            Subject::Ours(s) | Subject::NoCache(s) => s.load(key).await.map_err(|e| e.to_string()),
            Subject::CacheAio { reads, .. } => reads.load(rkey).await,
        }
    }

    /// A request that changes the session: load it, set one key, save the change-set.
    pub async fn write(&mut self, key: &StoreKey, rkey: &str, n: u64) -> Result<(), Error> {
        let loaded = self
            .load(key, rkey)
            .await?
            .ok_or_else(|| format!("session {rkey} missing"))?;
        let (changes, ours) = change(&loaded, n);
        let store = match self {
            Subject::Ours(s) | Subject::NoCache(s) => s,
            Subject::CacheAio { writes, .. } => writes,
        };
        match store.save(key, &loaded.version, &ours, &changes).await {
            Ok(Saved::Saved) => Ok(()),
            Ok(other) => Err(format!("save answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Hits and misses of the subject's cache so far, if it has one.
    pub fn hits_misses(&self) -> Option<(u64, u64)> {
        match self {
            Subject::Ours(s) => s.read_cache_stats().map(|s| (s.hits, s.misses)),
            Subject::CacheAio { reads, .. } => reads.stats(),
            Subject::NoCache(_) => None,
        }
    }
}

/// One request's change-set (`n` under `"seen"`) and its view of the record, as the layer builds
/// them: the loaded record with the change applied and `last_access` moved on; the expiry kept (no
/// refresh due, the common case).
pub fn change(loaded: &Loaded, n: u64) -> (ChangeSet, Arc<sessionforge::store::Record>) {
    let mut changes = ChangeSet::default();
    changes
        .entries
        .insert("seen".into(), Some(serde_json::Value::from(n)));
    changes.expiry_kept = true;
    let mut ours = sessionforge::store::Record::clone(&loaded.record);
    changes.apply(&mut ours.data);
    ours.last_access = SystemClock.now().max(ours.last_access.next());
    (changes, Arc::new(ours))
}
