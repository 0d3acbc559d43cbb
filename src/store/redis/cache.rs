//! The client-side read cache of the Redis store: server-assisted, with `CLIENT TRACKING` over RESP3.
//!
//! On by default ([`RedisConfig::with_read_cache`](super::RedisConfig::with_read_cache)). Loads go
//! through a second, dedicated connection that speaks RESP3 and has tracking on: Redis remembers which
//! session keys it read and pushes an invalidation message on that connection as soon as any client
//! (the main connection of this instance, another instance, `redis-cli`) changes or deletes one of
//! them, or the key expires or is evicted. A load of a cached session costs no round trip.
//!
//! Every write (save, create, delete, revoke, cleanup) goes through the main connection and is
//! notified like anyone else's; the store also drops the key from the cache itself, so the next load
//! of a session this instance wrote reads Redis once.
//!
//! Why not `NOLOOP` and saves on the tracking connection, which would leave a written session cached:
//! `NOLOOP` silences every invalidation raised *while that connection's command runs*, and under
//! `maxmemory` any command (a `GET`, a `PING`) may evict other keys first. Their invalidations would
//! never arrive, and the cache would serve sessions Redis had evicted or a revoke had found gone.
//!
//! # Correctness
//!
//! * **Invalidations are applied in wire order**, synchronously by the connection's reader (an
//!   [`AsyncPushSender`]), so an invalidation sent after a reply is applied before any later reply on
//!   that connection is used.
//! * **No stale fill.** A load takes a [`Ticket`] before it sends its command; an invalidation of
//!   that key (or a flush) while it is in flight voids the ticket and the answer is not cached. A
//!   write by this instance raises that invalidation too, after any `GET` sent before it on the
//!   tracking connection has been answered: a load never caches a value older than one this instance
//!   saved. A ticket dropped unfinished (a client that went away) leaves nothing behind.
//! * **Own writes.** After this instance writes or deletes a session, the store drops the key from
//!   the cache itself, so its next request reads the new state even if the invalidation message is
//!   still on its way.
//! * **Lost tracking means an empty cache.** When the tracking connection closes or fails (or Redis
//!   answers `FLUSHALL`), the whole cache is flushed and not used again until a new connection has
//!   tracking on. A silent loss (no FIN, no RST: a partition, a dead NAT entry) is found by a `PING`
//!   every second with a one-second deadline. A new tracking connection is opened in the background;
//!   loads use the main connection meanwhile.
//! * **Sentinel.** The cache follows the master Sentinel names, and empties when it changes.
//! * **Bounded.** At most `capacity` sessions are kept; beyond that an arbitrary entry is dropped.
//!   Entries also respect the session's own expiry.
//!
//! Another instance stops serving its copy as soon as its tracking connection has read the
//! invalidation, which Redis writes while it executes the change, before the writer gets its reply. It
//! is not a linearizable read: a request that reaches the other instance in the microseconds between
//! the write and that message being read can still see the previous value.

use super::conn::{is_connection_problem, map_error, NAME};
use super::RedisConfig;
use crate::store::{Loaded, StoreError};
use redis::aio::{AsyncPushSender, MultiplexedConnection, SendError};
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long the cache waits before trying to open its tracking connection again after a failure
/// (loads use the main connection meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the tracking connection is checked, and how long its `PING` may take.
const PING_EVERY: Duration = Duration::from_secs(1);

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

/// A fetch in progress (see the module docs): finished with [`ReadCache::finish`], or dropped (its
/// pending mark goes with it).
pub(super) struct Ticket {
    cache: Weak<ReadCache>,
    key: String,
    epoch: u64,
    seq: u64,
    done: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            if let Some(cache) = self.cache.upgrade() {
                cache.settle(&self.key);
            }
        }
    }
}

struct Link {
    /// Which connection this is (a failing call drops only the connection it used).
    generation: u64,
    conn: MultiplexedConnection,
}

/// The read cache and its tracking connection.
pub(super) struct ReadCache {
    capacity: usize,
    /// The server to track (RESP3); `None` until Sentinel names the master.
    client: Mutex<Option<redis::Client>>,
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
}

impl<'a> Uncache<'a> {
    pub(super) fn new(cache: Option<&'a ReadCache>, key: &'a str) -> Self {
        Uncache { cache, key }
    }
}

impl Drop for Uncache<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.cache {
            c.invalidate(self.key);
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

/// `client`'s server, spoken to in RESP3.
fn resp3(client: &redis::Client) -> Result<redis::Client, redis::RedisError> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings))
}

impl ReadCache {
    /// A cache of at most `capacity` sessions for the server of `client` (`None`: Sentinel will name
    /// it). Does no I/O.
    pub(super) fn new(
        client: Option<&redis::Client>,
        config: &RedisConfig,
        capacity: usize,
    ) -> Result<Arc<Self>, redis::RedisError> {
        Ok(Arc::new(ReadCache {
            capacity: capacity.max(1),
            client: Mutex::new(client.map(resp3).transpose()?),
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

    /// Tracks the master Sentinel named; a different one than before empties the cache.
    pub(super) fn follow(&self, master: redis::Client) {
        let Ok(master) = resp3(&master) else { return };
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let addr = |c: &redis::Client| c.get_connection_info().addr().to_string();
        if client.as_ref().map(addr) != Some(addr(&master)) {
            *client = Some(master);
            drop(client);
            self.lost();
        }
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

    fn begin(self: &Arc<Self>, key: &str) -> Ticket {
        let mut st = self.state();
        st.pending
            .entry(key.to_owned())
            .and_modify(|p| p.0 += 1)
            .or_insert((1, 0));
        Ticket {
            cache: Arc::downgrade(self),
            key: key.to_owned(),
            epoch: st.epoch,
            seq: st.seq,
            done: false,
        }
    }

    /// Ends a fetch of `key`: answers the `seq` of the key's last invalidation while it ran.
    fn settle(&self, key: &str) -> u64 {
        let mut st = self.state();
        match st.pending.get_mut(key) {
            Some(p) if p.0 > 1 => {
                p.0 -= 1;
                p.1
            }
            Some(_) => st.pending.remove(key).map_or(0, |p| p.1),
            None => 0,
        }
    }

    /// Ends a fetch, caching `value` unless the key was invalidated (or the cache flushed) meanwhile.
    pub(super) fn finish(&self, mut ticket: Ticket, value: Option<&Loaded>) {
        ticket.done = true;
        let invalidated_at = self.settle(&ticket.key);
        let Some(value) = value else { return };
        let mut st = self.state();
        if st.epoch != ticket.epoch || invalidated_at > ticket.seq {
            return;
        }
        if st.map.len() >= self.capacity && !st.map.contains_key(&ticket.key) {
            if let Some(victim) = st.map.keys().next().cloned() {
                st.map.remove(&victim);
            }
        }
        st.map
            .insert(std::mem::take(&mut ticket.key), value.clone());
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
                    *this.link() = Some(Link {
                        generation,
                        conn: conn.clone(),
                    });
                    tokio::spawn(watch(Arc::downgrade(&this), generation, conn));
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
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                redis::RedisError::from((redis::ErrorKind::Client, "no master known yet"))
            })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // Every call on this connection is bounded by the store's own timeout.
            .set_response_timeout(None)
            .set_push_sender(Invalidator(Arc::downgrade(self)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Without `NOLOOP` (see the module docs): every invalidation reaches this connection.
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .exec_async(&mut conn)
            .await?;
        Ok(conn)
    }

    /// `GET key` (and `PTTL`, `with_ttl`) on the tracking connection, with the [`Ticket`] to
    /// [`ReadCache::finish`] it with.
    /// `None` when the tracking connection is not available or just failed (load through the main
    /// connection). A timeout is answered as such, not tried again: no load waits twice.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        key: &str,
        with_ttl: bool,
    ) -> Option<(Ticket, Result<super::Fetched, StoreError>)> {
        let (generation, mut conn) = self.conn().await?;
        let ticket = self.begin(key);
        let read = super::read_op(key, with_ttl);
        let get = async {
            match &read {
                super::ReadOp::Get(cmd) => cmd.query_async::<super::Fetched>(&mut conn).await,
                super::ReadOp::GetTtl(pipe) => pipe.query_async::<super::Fetched>(&mut conn).await,
            }
        };
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
                    backend: NAME,
                    after: self.command_timeout,
                })
            }
        };
        Some((ticket, answer))
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

/// Checks the tracking connection `generation` every [`PING_EVERY`] while it is the cache's; one
/// that does not answer in time is dropped (and the cache flushed). Ends with the connection or the
/// cache.
async fn watch(cache: Weak<ReadCache>, generation: u64, mut conn: MultiplexedConnection) {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        let Some(c) = cache.upgrade() else { return };
        if c.link().as_ref().is_none_or(|l| l.generation != generation) {
            return;
        }
        drop(c);
        let ping_cmd = redis::cmd("PING");
        let ping = ping_cmd.query_async::<String>(&mut conn);
        let alive = matches!(tokio::time::timeout(PING_EVERY, ping).await, Ok(Ok(_)));
        if !alive {
            if let Some(c) = cache.upgrade() {
                tracing::warn!(
                    "Redis read cache: tracking connection not answering; cache emptied"
                );
                c.drop_link(generation);
            }
            return;
        }
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
        ReadCache::new(Some(&client), &config, 2).unwrap()
    }

    fn loaded(v: &str) -> Loaded {
        let t = Timestamp::from_millis(1);
        Loaded::new(Record::new(t, t, t), Version::new(v))
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

    #[test]
    fn tickets_dropped_unfinished_leave_no_pending_mark() {
        let c = cache();
        for i in 0..1000 {
            let _cancelled = c.begin(&format!("k{i}"));
        }
        let kept = c.begin("k");
        let also = c.begin("k");
        drop(also);
        assert_eq!(c.state().pending.len(), 1);
        c.finish(kept, None);
        assert!(c.state().pending.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_fetches_leave_no_pending_entries() {
        use std::future::Future;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _server = Kill(
            std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is not installed (apt-get install redis-server)"),
        );
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url.as_str()).unwrap();
        let config = RedisConfig::new(url.as_str()).unwrap();
        let c = ReadCache::new(Some(&client), &config, 100).unwrap();
        let mut ready = false;
        for _ in 0..50 {
            if c.fetch("warm", false).await.is_some() {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "tracking connection never opened");
        // A fetch that is still waiting on Redis when dropped is a client that went away
        // mid-request. On a loaded machine the tracking link can be dropped (a missed PING) and a
        // fetch then answers at once, uncached; those are not cancellations, so count the ones
        // that were.
        let mut cancelled = 0;
        for i in 0..1000 {
            let key = format!("k{i}");
            let fut = c.fetch(&key, false);
            tokio::pin!(fut);
            let pending = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(fut.as_mut().poll(cx).is_pending())
            })
            .await;
            cancelled += usize::from(pending);
        }
        assert!(
            cancelled >= 100,
            "only {cancelled} of 1000 fetches were cancelled mid-flight"
        );
        let n = c.state().pending.len();
        assert_eq!(n, 0, "pending map leaks one entry per cancelled load");
    }
}
