//! The client-side read cache of the Redis store: server-assisted, with `CLIENT TRACKING` over RESP3.
//!
//! Turned on with [`RedisConfig::with_read_cache`](super::RedisConfig::with_read_cache). Loads then go
//! through a second, dedicated connection that speaks RESP3 and has tracking on (`NOLOOP`): Redis
//! remembers which session keys it read and pushes an invalidation message on that connection as soon
//! as any other client (the main connection of this instance, another instance, `redis-cli`) changes
//! or deletes one of them, or the key expires. A load of a cached session costs no round trip.
//!
//! Saves go through the tracking connection too: the save script, which ends with a `GET` of the
//! session. `NOLOOP` keeps the script's own write from invalidating this instance; Redis forgets every
//! client's tracking of a key when it changes, and a read by a script counts as its caller's, so that
//! `GET` tracks the key again and the record just written can be cached: a request that writes costs
//! one round trip, reads nothing back, and leaves the next load a hit. Creates,
//! deletes, revokes and cleanup use the main connection, so their writes are notified like anyone
//! else's. (With replica acknowledgements configured, saves use the main connection too: `WAIT` must be
//! asked on the connection that wrote.)
//!
//! # Correctness
//!
//! * **Invalidations are applied in wire order.** They are handled synchronously by the connection's
//!   reader (an [`AsyncPushSender`]), never queued behind another task, so an invalidation that Redis
//!   sent after a reply is applied before any later reply on that connection is used.
//! * **No stale fill.** A load (or a save) takes a [`Ticket`] before it sends its command;
//!   an invalidation of that key (or a flush) while it is in flight voids the ticket and the answer is
//!   not cached, so a value read just before another writer changed it cannot outlive the
//!   invalidation.
//! * **Own writes.** After this instance creates, deletes or (off the tracking connection) saves a session,
//!   the store drops the key from the cache itself before answering (a guard, however the call ends),
//!   so its next request reads the new state even if the invalidation message is still on its way.
//! * **Lost tracking means an empty cache.** When the tracking connection closes or fails (or Redis
//!   answers `FLUSHALL`), the whole cache is flushed and not used again until a new connection has
//!   tracking on: no stale read after a disconnect, when invalidations may have been missed. A new
//!   tracking connection is opened in the background; loads use the main connection meanwhile, so
//!   opening it never adds to a request's wait.
//! * **Bounded.** At most `capacity` sessions are kept; beyond that an arbitrary entry is dropped.
//!   Entries also respect the session's own expiry.
//!
//! Another instance stops serving its copy as soon as its tracking connection has read the
//! invalidation, which Redis writes while it executes the change, before the writer gets its reply. It
//! is not a linearizable read: a request that reaches the other instance in the microseconds between
//! the write and that message being read can still see the previous value.

use super::{is_connection_problem, map_error, RedisConfig};
use crate::store::{Loaded, StoreError, StoreKind};
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long the cache waits before trying to open its tracking connection again after a failure
/// (loads use the main connection meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    /// Bumped whenever the whole cache is flushed (and tracking restarted): older tickets are void.
    epoch: u64,
    /// Bumped on every invalidation.
    seq: u64,
    /// Cached sessions by Redis key.
    map: HashMap<String, Loaded>,
    /// Keys being fetched: how many fetches, and the `seq` of the key's last invalidation.
    pending: HashMap<String, (usize, u64)>,
    stats: ReadCacheStats,
}

/// What the client-side read cache has done so far ([`RedisStore::read_cache_stats`]).
///
/// [`RedisStore::read_cache_stats`]: super::RedisStore::read_cache_stats
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadCacheStats {
    /// Loads answered from the cache.
    pub hits: u64,
    /// Loads that went to Redis.
    pub misses: u64,
    /// Keys dropped because Redis said they changed, or because this process wrote them.
    pub invalidations: u64,
    /// Times the whole cache was emptied (tracking connection opened or lost, `FLUSHALL`).
    pub flushes: u64,
    /// Sessions cached now.
    pub entries: u64,
}

/// A fetch in progress (see the module docs).
pub(super) struct Ticket {
    key: String,
    epoch: u64,
    seq: u64,
}

struct Link {
    /// Which connection this is (a failing call drops only the connection it used).
    generation: u64,
    conn: MultiplexedConnection,
}

/// The read cache and its tracking connection.
pub(super) struct ReadCache {
    capacity: usize,
    client: redis::Client,
    state: Mutex<State>,
    link: Mutex<Option<Link>>,
    generations: std::sync::atomic::AtomicU64,
    /// When the last connect attempt failed (connects are not retried before [`RETRY_AFTER`]).
    failed_at: Mutex<Option<Instant>>,
    /// A background connect is under way.
    connecting: std::sync::atomic::AtomicBool,
    connect_timeout: Duration,
    command_timeout: Duration,
}

/// Applies invalidation messages on the connection's reader, as they arrive.
struct Invalidator(Weak<ReadCache>);

impl AsyncPushSender for Invalidator {
    fn send(&self, info: PushInfo) -> Result<(), SendError> {
        let Some(cache) = self.0.upgrade() else {
            return Err(SendError);
        };
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                // `FLUSHDB`/`FLUSHALL` (or the tracking table overflowing) invalidates everything.
                None | Some(redis::Value::Nil) => cache.flush(),
                Some(redis::Value::Array(keys)) => {
                    let mut st = cache.state();
                    for k in keys {
                        if let Ok(k) = redis::from_redis_value_ref::<String>(k) {
                            invalidate(&mut st, &k);
                        }
                    }
                }
                Some(_) => cache.flush(),
            },
            PushKind::Disconnection => cache.lost(),
            _ => {}
        }
        Ok(())
    }
}

/// Drops a key from the cache when it goes (see `RedisStore::uncache_after`).
pub(super) struct Uncache<'a> {
    cache: Option<&'a ReadCache>,
    key: &'a str,
    armed: std::sync::atomic::AtomicBool,
}

impl<'a> Uncache<'a> {
    pub(super) fn new(cache: Option<&'a ReadCache>, key: &'a str) -> Self {
        Uncache {
            cache,
            key,
            armed: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The write refreshed the cache itself ([`ReadCache::save_tracked`]): nothing to drop.
    pub(super) fn disarm(&self) {
        self.armed
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// A later write went through the main connection after all: drop the key at the end.
    pub(super) fn rearm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Uncache<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.cache {
            if self.armed.load(std::sync::atomic::Ordering::Relaxed) {
                c.invalidate(self.key);
            }
        }
    }
}

fn invalidate(st: &mut State, key: &str) {
    st.seq += 1;
    st.stats.invalidations += 1;
    st.map.remove(key);
    let seq = st.seq;
    if let Some(p) = st.pending.get_mut(key) {
        p.1 = seq;
    }
}

impl ReadCache {
    /// A cache of at most `capacity` sessions for the Redis at `client`'s address. Does no I/O.
    pub(super) fn new(
        client: &redis::Client,
        config: &RedisConfig,
        capacity: usize,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        Ok(Arc::new(ReadCache {
            capacity: capacity.max(1),
            client,
            state: Mutex::default(),
            link: Mutex::new(None),
            generations: Default::default(),
            failed_at: Mutex::new(None),
            connecting: Default::default(),
            connect_timeout: config.connect_timeout,
            command_timeout: config.command_timeout,
        }))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn link(&self) -> MutexGuard<'_, Option<Link>> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached session under `key`, if tracking is up and it is cached.
    pub(super) fn get(&self, key: &str) -> Option<Loaded> {
        // Entries only exist while the connection that tracks them does: opening one flushes, losing
        // one flushes.
        self.link().as_ref()?;
        let mut st = self.state();
        match st.map.get(key).cloned() {
            Some(hit) => {
                st.stats.hits += 1;
                Some(hit)
            }
            None => {
                st.stats.misses += 1;
                None
            }
        }
    }

    /// Drops `key` (this instance changed or deleted it).
    pub(super) fn invalidate(&self, key: &str) {
        invalidate(&mut self.state(), key);
    }

    /// Drops everything and voids every fetch in progress.
    pub(super) fn flush(&self) {
        let mut st = self.state();
        st.epoch += 1;
        st.stats.flushes += 1;
        st.map.clear();
    }

    /// The tracking connection is gone: flush, and open a new one on the next load.
    fn lost(&self) {
        self.link().take();
        self.flush();
    }

    /// What the cache has done so far.
    pub(super) fn stats(&self) -> ReadCacheStats {
        let st = self.state();
        ReadCacheStats {
            entries: st.map.len() as u64,
            ..st.stats
        }
    }

    fn begin(&self, key: &str) -> Ticket {
        let mut st = self.state();
        st.pending
            .entry(key.to_owned())
            .and_modify(|p| p.0 += 1)
            .or_insert((1, 0));
        Ticket {
            key: key.to_owned(),
            epoch: st.epoch,
            seq: st.seq,
        }
    }

    /// Ends a fetch, caching `value` unless the key was invalidated (or the cache flushed) meanwhile.
    pub(super) fn finish(&self, ticket: Ticket, value: Option<&Loaded>) {
        let mut st = self.state();
        let invalidated_at = match st.pending.get_mut(&ticket.key) {
            Some(p) if p.0 > 1 => {
                p.0 -= 1;
                p.1
            }
            Some(_) => st.pending.remove(&ticket.key).map_or(0, |p| p.1),
            None => 0,
        };
        let Some(value) = value else { return };
        if st.epoch != ticket.epoch || invalidated_at > ticket.seq {
            return;
        }
        if st.map.len() >= self.capacity && !st.map.contains_key(&ticket.key) {
            if let Some(victim) = st.map.keys().next().cloned() {
                st.map.remove(&victim);
            }
        }
        st.map.insert(ticket.key, value.clone());
    }

    /// The tracking connection. When there is none, one is opened in the background (with `CLIENT
    /// TRACKING ON`) and this answers `None`: the caller loads through the main connection meanwhile,
    /// so opening it never adds to a request's wait (a frozen server costs no extra connect timeout).
    async fn conn(self: &Arc<Self>) -> Option<(u64, MultiplexedConnection)> {
        if let Some(l) = self.link().as_ref() {
            return Some((l.generation, l.conn.clone()));
        }
        let recently_failed = self
            .failed_at
            .lock()
            .ok()
            .and_then(|f| *f)
            .is_some_and(|t| t.elapsed() < RETRY_AFTER);
        if recently_failed
            || self
                .connecting
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return None;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match tokio::time::timeout(this.connect_timeout, this.open()).await {
                Ok(Ok(conn)) => {
                    // Nothing cached before this connection can be trusted: it may have missed
                    // invalidations.
                    this.flush();
                    let generation = this
                        .generations
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    *this.link() = Some(Link { generation, conn });
                    tracing::debug!("Redis read cache: tracking connection open");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "Redis read cache unavailable (needs Redis 6+ with RESP3 and CLIENT TRACKING); loading uncached");
                    this.note_failure();
                }
                Err(_) => this.note_failure(),
            }
            this.connecting
                .store(false, std::sync::atomic::Ordering::Release);
        });
        None
    }

    fn note_failure(&self) {
        if let Ok(mut f) = self.failed_at.lock() {
            *f = Some(Instant::now());
        }
    }

    async fn open(self: &Arc<Self>) -> Result<MultiplexedConnection, redis::RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // Every call on this connection is bounded by the store's own timeout.
            .set_response_timeout(None)
            .set_push_sender(Invalidator(Arc::downgrade(self)));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // NOLOOP: the saves this connection runs (`save_tracked`) refresh the cache themselves;
        // every other write of this process goes through the main connection and is notified.
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("NOLOOP")
            .exec_async(&mut conn)
            .await?;
        Ok(conn)
    }

    /// `GET key` on the tracking connection, with the [`Ticket`] to [`ReadCache::finish`] it with.
    /// `None` when the tracking connection is not available or just failed (load through the main
    /// connection). A timeout is answered as such, not tried again: no load waits twice.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        key: &str,
    ) -> Option<(Ticket, Result<Option<Vec<u8>>, StoreError>)> {
        let (generation, mut conn) = self.conn().await?;
        let ticket = self.begin(key);
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        let get = cmd.query_async::<Option<Vec<u8>>>(&mut conn);
        let answer = match tokio::time::timeout(self.command_timeout, get).await {
            Ok(Ok(raw)) => Ok(raw),
            Ok(Err(e)) if is_connection_problem(&e) => {
                // Invalidations may have been lost with the connection: forget it and everything
                // cached, and let the main connection (with its reconnect-and-retry) answer this load.
                self.finish(ticket, None);
                self.drop_link(generation);
                return None;
            }
            Ok(Err(e)) => Err(map_error(e, self.command_timeout)),
            Err(_) => {
                self.drop_link(generation);
                Err(StoreError::Timeout {
                    backend: StoreKind::Redis,
                    after: self.command_timeout,
                })
            }
        };
        Some((ticket, answer))
    }

    /// Runs a save script on the tracking connection, answering its reply and the [`Ticket`] to cache
    /// the saved value with. The connection has `NOLOOP`, so the script's own write does not
    /// invalidate this connection; the script ends with a `GET` of the session (see its `ARGV[10]`),
    /// which Redis counts as this connection's read, so the key is tracked again and any later change
    /// by anyone is notified: the caller may cache what it wrote. One round trip, and nothing read
    /// back. `None` when the tracking connection is not available or failed (save through the main
    /// connection instead; the script's digest check makes a repeated save harmless).
    pub(super) async fn save_tracked(
        self: &Arc<Self>,
        script: &redis::Script,
        keys: &[&str],
        args: &[super::SaveArg<'_>],
        key: &str,
    ) -> Option<(Ticket, Result<redis::Value, StoreError>)> {
        let (generation, mut conn) = self.conn().await?;
        let ticket = self.begin(key);
        // Sized up front: the arguments are known, so the command is built without regrowing.
        let size = 64
            + keys.iter().map(|k| k.len()).sum::<usize>()
            + args.iter().map(super::SaveArg::len).sum::<usize>();
        let mut evalsha = redis::Cmd::with_capacity(3 + keys.len() + args.len(), size);
        evalsha
            .arg("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len());
        for k in keys {
            evalsha.arg(k);
        }
        for a in args {
            evalsha.arg(a);
        }
        let mut loaded_script = false;
        loop {
            let sent = evalsha.query_async::<redis::Value>(&mut conn);
            let answer = match tokio::time::timeout(self.command_timeout, sent).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(e))
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
                        && !loaded_script =>
                {
                    // A restarted or flushed server: load the script and go again (the failed
                    // `EVALSHA` wrote nothing).
                    loaded_script = true;
                    let load = script.load_async(&mut conn);
                    match tokio::time::timeout(self.command_timeout, load).await {
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => Err(e),
                        Err(_) => {
                            self.drop_link(generation);
                            return Some((
                                ticket,
                                Err(StoreError::Timeout {
                                    backend: StoreKind::Redis,
                                    after: self.command_timeout,
                                }),
                            ));
                        }
                    }
                }
                Ok(Err(e)) => Err(e),
                Err(_) => {
                    self.drop_link(generation);
                    return Some((
                        ticket,
                        Err(StoreError::Timeout {
                            backend: StoreKind::Redis,
                            after: self.command_timeout,
                        }),
                    ));
                }
            };
            return match answer {
                Ok(answer) => Some((ticket, Ok(answer))),
                Err(e) if is_connection_problem(&e) => {
                    self.finish(ticket, None);
                    self.drop_link(generation);
                    None
                }
                Err(e) => Some((ticket, Err(map_error(e, self.command_timeout)))),
            };
        }
    }

    fn drop_link(&self, generation: u64) {
        let mut link = self.link();
        if link.as_ref().is_some_and(|l| l.generation == generation) {
            link.take();
        }
        drop(link);
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::Timestamp;
    use crate::store::{Record, Version};

    fn cache() -> Arc<ReadCache> {
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let config = RedisConfig::new("redis://127.0.0.1:1").unwrap();
        ReadCache::new(&client, &config, 2).unwrap()
    }

    fn loaded(v: &str) -> Loaded {
        let t = Timestamp::from_millis(1);
        Loaded {
            record: std::sync::Arc::new(Record {
                created_at: t,
                last_access: t,
                expires: t,
                deadline: t,
                user_agent: None,
                user: None,
                data: Default::default(),
            }),
            version: Version::new(v),
        }
    }

    fn cached(c: &ReadCache, key: &str) -> Option<String> {
        c.state()
            .map
            .get(key)
            .map(|l| l.version.as_str().to_owned())
    }

    #[test]
    fn a_fetch_overtaken_by_an_invalidation_is_not_cached() {
        let c = cache();
        let t = c.begin("k");
        c.invalidate("k");
        c.finish(t, Some(&loaded("old")));
        assert_eq!(cached(&c, "k"), None);
        // A fetch that started after the invalidation is cached.
        let t = c.begin("k");
        c.finish(t, Some(&loaded("new")));
        assert_eq!(cached(&c, "k").as_deref(), Some("new"));
    }

    #[test]
    fn a_flush_voids_fetches_in_progress_and_empties_the_cache() {
        let c = cache();
        let t1 = c.begin("a");
        c.finish(t1, Some(&loaded("1")));
        let t2 = c.begin("b");
        c.flush();
        c.finish(t2, Some(&loaded("2")));
        assert_eq!(cached(&c, "a"), None);
        assert_eq!(cached(&c, "b"), None);
    }

    #[test]
    fn concurrent_fetches_of_one_key_all_see_its_invalidation() {
        let c = cache();
        let t1 = c.begin("k");
        let t2 = c.begin("k");
        c.invalidate("k");
        c.finish(t1, Some(&loaded("1")));
        c.finish(t2, Some(&loaded("2")));
        assert_eq!(cached(&c, "k"), None);
        assert!(c.state().pending.is_empty());
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity() {
        let c = cache();
        for k in ["a", "b", "c", "d"] {
            let t = c.begin(k);
            c.finish(t, Some(&loaded(k)));
        }
        assert_eq!(c.state().map.len(), 2);
    }

    #[test]
    fn nothing_is_served_without_a_tracking_connection() {
        let c = cache();
        let t = c.begin("k");
        c.finish(t, Some(&loaded("1")));
        assert!(c.get("k").is_none());
    }
}
