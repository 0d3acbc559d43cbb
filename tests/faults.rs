//! Fault injection under load: a pool of clients drives an in-process server (the djforge shape: a
//! `FailoverStore` over a real `redis-server` and a `FileStore` in a tempdir, served over loopback)
//! while a harness kills Redis (`kill -9`), freezes it (SIGSTOP/SIGCONT), restarts it and drops its
//! client connections (`CLIENT KILL`). Afterwards every change the server acknowledged must be in the
//! store.
//!
//! The quick run is part of `cargo test --all-features`; the soak run is
//! `cargo test --all-features --test faults -- --ignored --nocapture` (see TESTING.md), with
//! `SOAK_SECS` and `SOAK_CLIENTS` to size it. Both print a report.
//!
//! Redis runs with `appendonly yes` and `appendfsync always`, so a `kill -9` loses nothing Redis
//! acknowledged: what these tests measure is the crate, not Redis's durability settings.

#[path = "support/load.rs"]
mod load;
mod support;

use sessionforge::shutdown::Shutdown;
use sessionforge::store::redis::{RedisConfig, RedisStore};
use sessionforge::store::{FailoverStore, FileStore, SessionStore};
use sessionforge::SessionLayer;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use support::RedisServer;

/// Counts the store's failovers and failbacks, which it emits through the `metrics` facade; every
/// other metric is dropped. Installed once for the process (the store's tasks run on every worker
/// thread, so a thread-local recorder would miss some).
#[derive(Default)]
struct Transitions {
    failovers: Arc<AtomicU64>,
    failbacks: Arc<AtomicU64>,
}

impl metrics::Recorder for Transitions {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        match key.name() {
            "sessionforge_failovers_total" => metrics::Counter::from_arc(self.failovers.clone()),
            "sessionforge_failbacks_total" => metrics::Counter::from_arc(self.failbacks.clone()),
            _ => metrics::Counter::noop(),
        }
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The process's failover and failback counts so far.
fn transitions() -> (u64, u64) {
    static COUNTS: OnceLock<(Arc<AtomicU64>, Arc<AtomicU64>)> = OnceLock::new();
    let (failovers, failbacks) = COUNTS.get_or_init(|| {
        let recorder = Transitions::default();
        let counts = (recorder.failovers.clone(), recorder.failbacks.clone());
        metrics::set_global_recorder(recorder).expect("no other recorder in this test binary");
        counts
    });
    (
        failovers.load(Ordering::SeqCst),
        failbacks.load(Ordering::SeqCst),
    )
}

/// The store's last failover or failback as its health reports it (`"failover"`, `"failback"`).
async fn last_transition(store: &Store) -> Option<String> {
    let h = store.health().await;
    h.extra
        .get("lastTransition")
        .and_then(|t| t["kind"].as_str())
        .map(str::to_owned)
}

/// The Redis connect and command timeouts the store is configured with.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// The most a request may take while Redis misbehaves: a connect and a command timeout, then files.
const CONFIGURED_TIMEOUT: Duration = Duration::from_millis(500);
/// No request may hang: well past any timeout, a request counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

type Store = FailoverStore<RedisStore, FileStore>;

struct Rig {
    redis: RedisServer,
    store: Store,
    addr: SocketAddr,
    shutdown: Shutdown,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    let redis = RedisServer::with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let dir = tempfile::tempdir().unwrap();
    let primary: RedisStore = RedisConfig::new(redis.url())
        .unwrap()
        .with_prefix("djforge:sess:")
        .with_connect_timeout(REDIS_TIMEOUT)
        .with_command_timeout(REDIS_TIMEOUT)
        .build()
        .unwrap();
    let shutdown = Shutdown::new();
    let store = FailoverStore::builder(primary, FileStore::new(dir.path().join("sessions")))
        .with_check_interval(Duration::from_millis(100))
        .with_startup_timeout(Duration::from_secs(2))
        .start(&shutdown)
        .await;
    assert!(!store.is_on_fallback(), "Redis serves at the start");
    let layer = SessionLayer::new(store.clone())
        .with_secure(false)
        .with_shutdown(&shutdown);
    let app = load::app().layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let signal = shutdown.signal();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
            .unwrap()
    });
    Rig {
        redis,
        store,
        addr,
        shutdown,
        _dir: dir,
    }
}

/// One fault, as the harness applies it.
#[derive(Clone, Copy, Debug)]
enum Fault {
    ClientKill,
    Freeze(Duration),
    Kill9ThenRestart(Duration),
}

/// Applies `faults` one after another, `gap` apart, on a blocking thread; answers the server back.
async fn inject(mut redis: RedisServer, faults: Vec<Fault>, gap: Duration) -> RedisServer {
    tokio::task::spawn_blocking(move || {
        for f in faults {
            std::thread::sleep(gap);
            match f {
                Fault::ClientKill => {
                    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
                    eprintln!("fault: CLIENT KILL TYPE normal -> {killed}");
                }
                Fault::Freeze(d) => {
                    eprintln!("fault: SIGSTOP for {d:?}");
                    redis.pause();
                    std::thread::sleep(d);
                    redis.resume();
                }
                Fault::Kill9ThenRestart(d) => {
                    eprintln!("fault: kill -9, down for {d:?}, restart");
                    redis.kill();
                    std::thread::sleep(d);
                    redis.restart();
                }
            }
        }
        redis
    })
    .await
    .unwrap()
}

/// Drives `clients` clients through `faults` and answers the report; fails on any goal missed.
async fn fault_run(clients: usize, faults: Vec<Fault>, gap: Duration, tail: Duration) {
    let panics_before = load::count_panics();
    let transitions_before = transitions();
    let rig = rig().await;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let drivers: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(load::run_client(
                rig.addr,
                format!("c{c}"),
                usize::MAX,
                stop.clone(),
                REQUEST_LIMIT,
            ))
        })
        .collect();
    let redis = inject(rig.redis, faults, gap).await;
    tokio::time::sleep(tail).await;
    stop.store(true, Ordering::SeqCst);
    let mut tally = load::Tally::default();
    for d in drivers {
        tally.absorb(d.await.unwrap());
    }
    let run_time = started.elapsed();

    // Redis is back: wait for the failback (the monitor checks every 100 ms; nudge it too).
    let deadline = Instant::now() + Duration::from_secs(15);
    while rig.store.is_on_fallback() && Instant::now() < deadline {
        rig.store.check_now().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!rig.store.is_on_fallback(), "failed back to Redis");
    rig.store.check_now().await;
    // Checked through the failover store (as the app reads) and in Redis itself.
    let (lost_keys, lost_sessions) = load::verify(&rig.store, &tally.acked).await;
    let (lost_in_redis, _) = load::verify(rig.store.primary(), &tally.acked).await;
    let panics = load::count_panics() - panics_before;
    let (failovers, failbacks) = {
        let now = transitions();
        (now.0 - transitions_before.0, now.1 - transitions_before.1)
    };
    let last = last_transition(&rig.store).await;

    eprintln!(
        "\nFAULT INJECTION REPORT ({clients} clients, {run_time:.1?}, {failovers} failovers, \
         {failbacks} failbacks, last: {last:?})\n\
         requests sent:          {}\n\
         2xx:                    {}\n\
         non-2xx:                {} (transport errors: {})\n\
         panics:                 {panics}\n\
         acknowledged changes:   {}\n\
         changes lost:           {lost_keys} (missing from Redis itself: {lost_in_redis})\n\
         sessions lost:          {lost_sessions}\n\
         fresh sessions (outage): {}\n\
         longest request:        {:?} (configured timeout {CONFIGURED_TIMEOUT:?}, goal <= +50 ms)\n\
         non-2xx detail:         {:?}\n",
        tally.sent,
        tally.ok,
        tally.non_2xx,
        tally.transport_errors,
        tally.acked.len(),
        tally.fresh_sessions,
        tally.longest,
        tally.bad.iter().take(10).collect::<Vec<_>>(),
    );
    rig.shutdown.trigger();
    let report = rig.shutdown.drain(Duration::from_secs(5)).await;
    drop(redis);

    assert!(tally.sent > clients * 10, "the load ran: {}", tally.sent);
    // Was: transitions() >= 2. The store started on Redis and ends on it: its last transition is a
    // failback, which only follows a failover.
    assert_eq!(
        last.as_deref(),
        Some("failback"),
        "the faults caused a failover and a failback"
    );
    assert!(
        failovers >= 1 && failbacks >= 1,
        "the faults caused a failover ({failovers}) and a failback ({failbacks})"
    );
    assert_eq!(
        tally.non_2xx, 0,
        "every request answered 2xx: {:?}",
        tally.bad
    );
    assert_eq!(panics, 0, "no panics");
    assert_eq!(lost_sessions, 0, "no acknowledged session lost");
    assert_eq!(lost_keys, 0, "no acknowledged change lost");
    assert_eq!(
        lost_in_redis, 0,
        "every acknowledged change is in Redis after failback"
    );
    // The latency goal is reported above; this bound only catches hangs.
    assert!(
        tally.longest < Duration::from_secs(5),
        "longest request {:?}",
        tally.longest
    );
    assert!(report.clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_lose_nothing_while_redis_is_killed_frozen_restarted_and_disconnected() {
    let faults = vec![
        Fault::ClientKill,
        Fault::Freeze(Duration::from_millis(700)),
        Fault::Kill9ThenRestart(Duration::from_millis(800)),
        Fault::ClientKill,
    ];
    tokio::time::timeout(
        Duration::from_secs(50),
        fault_run(
            6,
            faults,
            Duration::from_millis(600),
            Duration::from_millis(800),
        ),
    )
    .await
    .expect("the fault run finished in time");
}

/// The soak: the same faults over and over for `SOAK_SECS` (default 120) with `SOAK_CLIENTS`
/// (default 32) clients.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak test, minutes long: cargo test --all-features --test faults -- --ignored --nocapture"]
async fn soak_clients_lose_nothing_under_repeated_redis_faults() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let clients: usize = std::env::var("SOAK_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let cycle = [
        Fault::ClientKill,
        Fault::Freeze(Duration::from_millis(1500)),
        Fault::Kill9ThenRestart(Duration::from_secs(2)),
        Fault::ClientKill,
        Fault::Freeze(Duration::from_millis(300)),
    ];
    // Each fault plus its gap takes about 2 s on average.
    let n = (secs / 2).max(cycle.len() as u64) as usize;
    let faults = cycle.iter().copied().cycle().take(n).collect();
    tokio::time::timeout(
        Duration::from_secs(secs * 3 + 120),
        fault_run(
            clients,
            faults,
            Duration::from_secs(1),
            Duration::from_secs(2),
        ),
    )
    .await
    .expect("the soak finished in time");
}
