//! The Redis store against a real Redis Cluster (3 masters, 3 replicas) and a real Sentinel set-up
//! (master, replica, 3 sentinels), all `redis-server` processes on loopback ports.
//!
//! ```text
//! cargo test --test redis_cluster
//! ```

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use cluster::{inline, RedisCluster, SentinelSetup, MASTER_NAME};
use serde_json::{json, Value};
use sessionforge::expiry::{Clock, SystemClock};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::redis::{RedisConfig, RedisStore, Topology};
use sessionforge::store::{ChangeSet, HealthStatus, Record, Saved, SessionStore};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PREFIX: &str = "test:sess:";
const LIMIT: Duration = Duration::from_secs(20);

fn record(user: Option<&str>, data: Value) -> Record {
    let now = SystemClock.now();
    let mut r = Record::new(
        now,
        now.plus(Duration::from_secs(600)),
        now.plus(Duration::from_secs(6000)),
    );
    r.user_agent = Some("cluster-test".into());
    r.user = user.map(str::to_owned);
    r.data = data.as_object().unwrap().clone();
    r
}

fn key() -> StoreKey {
    Token::generate().store_key()
}

/// The characters a store key can start with (base64url): one index shard each in cluster mode.
const SHARDS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The Redis key of a session in cluster mode: `<prefix>{<c>}<store key>`, where `<c>` is the store
/// key's first character (the hash tag it shares with its index shard).
fn cluster_key(k: &StoreKey) -> String {
    format!("{PREFIX}{{{}}}{}", &k.as_str()[..1], k.as_str())
}

/// The index shards (`<prefix>{<c>}index`) that exist now.
fn shard_indexes(c: &RedisCluster) -> Vec<String> {
    SHARDS
        .chars()
        .map(|ch| format!("{PREFIX}{{{ch}}}index"))
        .filter(|index| c.cli(&["EXISTS", index]) == "1")
        .collect()
}

fn cluster_store(c: &RedisCluster) -> RedisStore {
    RedisConfig::new("redis://127.0.0.1")
        .unwrap()
        .with_cluster_nodes(c.seeds())
        .unwrap()
        .with_prefix(PREFIX)
        .with_connect_timeout(Duration::from_millis(500))
        .with_command_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

async fn bounded<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("no answer within the test's time limit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_store_operation_works_on_a_cluster_with_sessions_spread_over_the_masters() {
    let c = RedisCluster::start(3, 1);
    let store = cluster_store(&c);
    assert!(matches!(
        store.config().topology(),
        Topology::Cluster { .. }
    ));
    // The read cache is on by default, but a cluster runs without it.
    assert_eq!(store.read_cache_stats(), None);

    // Create 300 sessions (a third of them alice's) and check each landed with its index entry.
    let mut keys = Vec::new();
    for i in 0..300 {
        let k = key();
        let user = (i % 3 == 0).then_some("alice");
        let r = record(user, json!({ "n": i }));
        bounded(store.create(&k, &r)).await.unwrap();
        keys.push(k);
    }
    // Spread: every master holds some of them (SCAN-free: DBSIZE per master).
    for m in c.masters() {
        let n: u64 = c.nodes[m].cli(&["DBSIZE"]).parse().unwrap();
        assert!(n > 20, "master {m} holds only {n} keys");
    }
    // The value is readable JSON at its hash-tagged key, indexed in the shard of the same tag.
    let k0 = &keys[0];
    let value = c.cli(&["GET", &cluster_key(k0)]);
    assert!(value.starts_with("{\"lastAccess\":"), "{value}");
    assert!(value.contains("\"userAgent\":\"cluster-test\""), "{value}");
    let shard = format!("{PREFIX}{{{}}}index", &k0.as_str()[..1]);
    assert_ne!(c.cli(&["ZSCORE", &shard, k0.as_str()]), "");

    // Load, save (a merge against a concurrent change), delete.
    let loaded = bounded(store.load(&keys[1])).await.unwrap().unwrap();
    assert_eq!(loaded.record.data["n"], 1);
    let mut ours = (*loaded.record).clone();
    ours.data.insert("x".into(), json!(1));
    let mut changes = ChangeSet::default();
    changes.entries.insert("x".into(), Some(json!(1)));
    assert_eq!(
        bounded(store.save(&keys[1], &loaded.version, &ours.clone().into(), &changes))
            .await
            .unwrap(),
        Saved::Saved
    );
    assert!(bounded(store.delete(&keys[2])).await.unwrap());
    assert!(!bounded(store.delete(&keys[2])).await.unwrap());

    // Count is the sum over shards; the listing walks every shard in one global order.
    assert_eq!(bounded(store.count()).await.unwrap(), 299);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = bounded(store.list(cursor.as_deref(), 37)).await.unwrap();
        seen.extend(page.sessions.iter().map(|s| (s.expires, s.id)));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), 299);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.as_str().cmp(b.1.as_str())));
    assert_eq!(seen, sorted, "one global order (expiry, store key)");
    let ids: HashSet<&str> = seen.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(ids.len(), 299);

    // Per-user sets: alice's sessions over all shards; revoke all but one.
    let alice = bounded(store.user_sessions("alice")).await.unwrap();
    assert_eq!(alice.len(), 100);
    let revoked = bounded(store.revoke_user_sessions("alice", Some(&keys[0])))
        .await
        .unwrap();
    assert_eq!(revoked, 99);
    assert_eq!(
        bounded(store.user_sessions("alice")).await.unwrap().len(),
        1
    );

    // Cleanup sees every master: a corrupt value on some master and an orphan index entry go; the
    // shard indexes themselves stay.
    let bad = key();
    assert_eq!(c.cli(&["SET", &cluster_key(&bad), "{oops"]), "OK");
    let orphan = &keys[4]; // not one of alice's (revoked above)
    assert_eq!(c.cli(&["DEL", &cluster_key(orphan)]), "1");
    let indexes = shard_indexes(&c);
    assert!(indexes.len() > 40, "{} shard indexes", indexes.len());
    let removed = bounded(store.cleanup()).await.expect("cleanup");
    assert_eq!(c.cli(&["EXISTS", &cluster_key(&bad)]), "0");
    let orphan_shard = format!("{PREFIX}{{{}}}index", &orphan.as_str()[..1]);
    assert_eq!(c.cli(&["ZSCORE", &orphan_shard, orphan.as_str()]), "");
    assert_eq!(
        shard_indexes(&c),
        indexes,
        "cleanup removed a shard index <prefix>{{c}}index"
    );
    assert_eq!(removed, 2, "the corrupt value and the orphan entry");
    assert_eq!(bounded(store.count()).await.unwrap(), 199);

    // Health reports each node; INFO per node; memory summed over masters.
    let h = bounded(store.health()).await;
    assert_eq!(h.status, HealthStatus::Ok, "{h:?}");
    assert_eq!(h.backend("redis"), Some(true));
    assert!(
        h.detail.as_deref().unwrap().contains("masters 3/3 up"),
        "{h:?}"
    );
    // Changed in this release: the nodes are in the health's operator fields.
    let nodes = h.extra["nodes"].as_array().expect("nodes in the health");
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    assert!(nodes.iter().all(|n| n["status"] == "healthy"), "{nodes:?}");
    assert_eq!(nodes.iter().filter(|n| n["role"] == "master").count(), 3);
    assert_eq!(nodes.iter().filter(|n| n["role"] == "replica").count(), 3);
    let addresses: HashSet<&str> = nodes
        .iter()
        .map(|n| n["address"].as_str().unwrap())
        .collect();
    let seeds = c.seeds();
    assert_eq!(addresses, seeds.iter().map(String::as_str).collect());
    // Changed in this release: `info()` answers `{"redis": {...}, "nodes": {address: INFO}}`.
    let info = bounded(store.info()).await.unwrap().unwrap();
    assert_eq!(info["redis"]["cluster"]["cluster_state"], "ok");
    let per_node = info["nodes"].as_object().expect("INFO per node");
    assert_eq!(per_node.len(), 6);
    assert!(
        per_node
            .values()
            .all(|i| i["server"]["redis_version"].is_string()),
        "{per_node:?}"
    );
    // Usage is open data: the figures as INFO writes them.
    let usage = bounded(store.usage()).await.unwrap();
    assert_eq!(usage.section, "memoryUsage");
    let used: u64 = usage.figures["used_memory"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(used > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_on_a_cluster_removes_corrupt_values_of_any_type_and_keeps_the_rest() {
    let c = RedisCluster::start(3, 0);
    let store = cluster_store(&c);
    let mut live = Vec::new();
    for i in 0..30 {
        let k = key();
        bounded(store.create(&k, &record(None, json!({ "n": i }))))
            .await
            .unwrap();
        live.push(k);
    }
    // A value that is not JSON and one that is not a string at all, each under a session key.
    let (text, hash) = (key(), key());
    assert_eq!(c.cli(&["SET", &cluster_key(&text), "{oops"]), "OK");
    assert_eq!(c.cli(&["HSET", &cluster_key(&hash), "a", "b"]), "1");
    // Keys under the prefix that are not shaped like session keys are not ours.
    let foreign = [format!("{PREFIX}foreign"), format!("{PREFIX}{{f}}foreign")];
    for k in &foreign {
        assert_eq!(c.cli(&["SET", k, "hello"]), "OK");
    }
    // Loads treat both as no session.
    assert!(bounded(store.load(&text)).await.unwrap().is_none());
    assert!(bounded(store.load(&hash)).await.unwrap().is_none());
    let removed = bounded(store.cleanup()).await.expect("cleanup");
    assert_eq!(c.cli(&["EXISTS", &cluster_key(&text)]), "0");
    assert_eq!(c.cli(&["EXISTS", &cluster_key(&hash)]), "0");
    for k in &foreign {
        assert_eq!(c.cli(&["GET", k]), "hello", "{k} is not a session");
    }
    assert_eq!(removed, 2);
    assert_eq!(bounded(store.count()).await.unwrap(), 30);
    for k in &live {
        assert!(bounded(store.load(k)).await.unwrap().is_some());
    }
}

/// Writes sessions in a loop and records each acknowledged one with the time of its ack.
struct Writer {
    acked: Arc<Mutex<Vec<(StoreKey, Instant)>>>,
    failed: Arc<std::sync::atomic::AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(store: RedisStore) -> Self {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (a, f, s) = (acked.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let k = key();
                match store.create(&k, &record(None, json!({ "i": i }))).await {
                    Ok(_) => {
                        a.lock().unwrap().push((k, Instant::now()));
                        // A steady client (~300 writes/s), not a flood: the check afterwards loads
                        // every acknowledged session.
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    Err(_) => {
                        f.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                i += 1;
            }
        });
        Writer {
            acked,
            failed,
            stop,
            task,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    async fn wait_acked(&self, more_than: usize) {
        let deadline = Instant::now() + LIMIT;
        while self.acked() <= more_than {
            assert!(Instant::now() < deadline, "the writer made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> (Vec<(StoreKey, Instant)>, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.task.await.unwrap();
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        (
            acked,
            self.failed.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// The acknowledged sessions that cannot be loaded now.
async fn missing(store: &RedisStore, acked: &[(StoreKey, Instant)]) -> Vec<(StoreKey, Instant)> {
    let mut out = Vec::new();
    for (k, at) in acked {
        if bounded(store.load(k)).await.unwrap().is_none() {
            out.push((*k, *at));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_under_a_running_client_loses_no_acknowledged_session() {
    let mut c = RedisCluster::start(3, 1);
    let store = cluster_store(&c);
    let writer = Writer::start(store.clone());
    writer.wait_acked(50).await;

    // 1. A coordinated CLUSTER FAILOVER: the master pauses writers until its replica has caught up,
    //    so nothing acknowledged may be lost.
    let masters = c.masters();
    let replica = c.replica_of(masters[0]);
    c.manual_failover(replica);
    let before = writer.acked();
    writer.wait_acked(before + 50).await;

    // 2. A crash: SIGKILL another master while the client writes; its replica takes over after the
    //    node timeout. Redis replication is asynchronous, so a write the master acknowledged in the
    //    last moment before dying, before it reached the replica, is lost: Redis documents this
    //    window. Every session acknowledged before it must survive.
    let victim = masters[1];
    let victim_replica = c.replica_of(victim);
    c.wait_replicated(victim, victim_replica);
    let killed_at = Instant::now();
    c.kill(victim);
    c.wait_role(victim_replica, "master");
    c.wait_healthy();
    let before = writer.acked();
    writer.wait_acked(before + 50).await;
    let (acked, failed) = writer.stop().await;

    let lost = missing(&store, &acked).await;
    // The loss window: acknowledged within the moment before the kill (replication on loopback
    // takes well under a millisecond; 100 ms is generous). Nothing older, nothing after the
    // promotion.
    let outside: Vec<_> = lost
        .iter()
        .filter(|(_, at)| {
            *at + Duration::from_millis(100) < killed_at
                || *at > killed_at + Duration::from_secs(30)
        })
        .collect();
    println!(
        "cluster failover: {} sessions acknowledged, {} writes failed during the failovers, {} lost \
         (all within the replication window of the killed master)",
        acked.len(),
        failed,
        lost.len()
    );
    assert!(
        outside.is_empty(),
        "{} acknowledged sessions lost outside the kill's replication window",
        outside.len()
    );
    // Sessions were acknowledged after the crash: the client found the promoted replica.
    assert!(acked.iter().any(|(_, at)| *at > killed_at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_reconnects_to_the_new_master() {
    let setup = SentinelSetup::start();
    let old = setup.master();
    let config = RedisConfig::new("redis://127.0.0.1")
        .unwrap()
        .with_sentinel(setup.sentinel_addrs(), MASTER_NAME)
        .unwrap()
        .with_prefix(PREFIX)
        .with_connect_timeout(Duration::from_millis(500))
        .with_command_timeout(Duration::from_millis(500));
    let store = config.build().unwrap();
    let writer = Writer::start(store.clone());
    writer.wait_acked(50).await;
    // Redis replication is asynchronous, and a forced `SENTINEL FAILOVER` does not wait for the
    // replica: the window opens once everything acknowledged so far is known to be on the replica.
    let before_failover = writer.acked();
    let started = Instant::now();
    setup.wait_replicated();
    setup.failover();
    let done = Instant::now();
    writer.wait_acked(writer.acked() + 50).await;
    let (acked, failed) = writer.stop().await;
    let new = setup.master();
    assert_ne!(new, old);

    // The writes after the failover went to the new master.
    let last = &acked.last().unwrap().0;
    let port = setup.servers[new].port();
    let reply = inline(port, &format!("EXISTS {PREFIX}{last}")).unwrap();
    assert_eq!(reply, ":1", "the last session is on the new master");

    let lost = missing(&store, &acked).await;
    // Sentinel promotes the replica before it demotes the old master: a write the old master
    // acknowledged in between is discarded when it resyncs as a replica (Redis documents this
    // window). Nothing acknowledged before the failover began or after it ended may be lost.
    let outside: Vec<_> = lost
        .iter()
        .filter(|(_, at)| *at < started || *at > done)
        .collect();
    println!(
        "sentinel failover: {} sessions acknowledged ({} before it), {} writes failed, {} lost \
         (acknowledged by the old master during the hand-over)",
        acked.len(),
        before_failover,
        failed,
        lost.len()
    );
    assert!(
        outside.is_empty(),
        "{} lost outside the window",
        outside.len()
    );
    let h = store.health().await;
    assert_eq!(h.status, HealthStatus::Ok, "{h:?}");
    assert_eq!(h.backend("redis"), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replica_acks_a_sentinel_failover_loses_no_acknowledged_write() {
    let setup = SentinelSetup::start();
    let config = RedisConfig::new("redis://127.0.0.1")
        .unwrap()
        .with_sentinel(setup.sentinel_addrs(), MASTER_NAME)
        .unwrap()
        .with_prefix(PREFIX)
        .with_connect_timeout(Duration::from_millis(500))
        .with_command_timeout(Duration::from_millis(500))
        .with_replica_acks(1, Duration::from_millis(200));
    let store = config.build().unwrap();
    let writer = Writer::start(store.clone());
    writer.wait_acked(50).await;
    setup.failover();
    writer.wait_acked(writer.acked() + 50).await;
    let (acked, failed) = writer.stop().await;
    let lost = missing(&store, &acked).await;
    println!(
        "sentinel failover with WAIT 1: {} sessions acknowledged, {} writes refused, {} lost",
        acked.len(),
        failed,
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost although each reached a replica",
        lost.len()
    );
}

#[tokio::test]
async fn replica_acks_refuse_writes_no_replica_has_and_a_cluster_refuses_the_setting() {
    let server = support::RedisServer::start();
    let store = RedisConfig::new(server.url())
        .unwrap()
        .with_replica_acks(1, Duration::from_millis(50))
        .build()
        .unwrap();
    // No replica: the write happens on the master, but nobody may be told it is safe.
    let err = store
        .create(&key(), &record(None, json!({"x": 1})))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(err.root_cause().contains("0 of 1 replicas"), "{err}");

    let cluster = RedisConfig::new("redis://127.0.0.1:7000")
        .unwrap()
        .with_cluster_nodes(["127.0.0.1:7000"])
        .unwrap()
        .with_replica_acks(1, Duration::from_millis(50));
    let err = cluster.build().unwrap_err();
    assert!(err.to_string().contains("not a cluster"), "{err}");
}
