//! Read cache: sessionforge's own (`src/store/redis/cache.rs`) against redis-rs 1.x client-side
//! caching (`cache-aio`), on one `redis-server`, in one interleaved run:
//!
//!     cargo run --release --manifest-path benches/read_cache/Cargo.toml
//!
//! Both workloads (read-mostly: 99% loads, 1% load + save; write-heavy: 50/50) over `RC_SESSIONS`
//! sessions (1,000) with `RC_TASKS` concurrent tasks (64) for `RC_SECS` seconds (3) per run,
//! `RC_REPS` repetitions (4), subjects alternating order every repetition (ours first, then cache-aio
//! first), with the uncached store as a reference. Printed: ops/s, CPU µs per op of this process and of
//! Redis, Redis commands per op (`INFO commandstats`), cache hit rates, and the paired ratios. Then the
//! correctness checks of `checks.rs` (`RC_CHECKS=0` skips them; `RC_CHECKS=only` runs only them).

#[path = "../../../tests/support/mod.rs"]
mod support;

mod checks;
#[path = "../../load/median.rs"]
mod median;
mod probe;
mod proxy;
mod subjects;

use median::median_spread;
use probe::Snapshot;
use sessionforge::expiry::{Clock, SystemClock};
use sessionforge::id::{StoreKey, Token};
use sessionforge::store::{Record, SessionStore};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use subjects::{Subject, Which, PREFIX};

/// The subjects, in the order of even repetitions (odd ones run them in reverse).
const ALL: [Which; 4] = [
    Which::Ours,
    Which::CacheAio,
    Which::CacheAioPlain,
    Which::NoCache,
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    ReadMostly,
    WriteHeavy,
}

impl Workload {
    const ALL: [Workload; 2] = [Workload::ReadMostly, Workload::WriteHeavy];

    fn name(self) -> &'static str {
        match self {
            Workload::ReadMostly => "read-mostly (99% read)",
            Workload::WriteHeavy => "write-heavy (50% write)",
        }
    }

    /// Writes per hundred ops.
    fn write_pct(self) -> u64 {
        match self {
            Workload::ReadMostly => 1,
            Workload::WriteHeavy => 50,
        }
    }
}

/// A small, fast generator (xorshift64*): the same seed gives each subject the same key sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The sessions: store key and Redis key.
type Keys = Arc<Vec<(StoreKey, String)>>;

/// A session as an application keeps it: a user, a user agent and a few small data keys (about 330
/// bytes of JSON).
pub fn sample_record(i: usize) -> Record {
    let now = SystemClock.now();
    let mut r = Record::new(
        now,
        now.plus(Duration::from_secs(24 * 3600)),
        now.plus(Duration::from_secs(7 * 24 * 3600)),
    );
    r.user = Some(format!("user-{i}"));
    r.user_agent =
        Some("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into());
    let data = serde_json::json!({
        "seen": 0,
        "theme": "dark",
        "locale": "en-GB",
        "cart": [101, 2042, 33],
        "csrf": "q8F3kZ0pXv7LwN2bT5yR1uE6iO9aS4dG",
        "flash": null,
    });
    r.data = data.as_object().expect("an object").clone();
    r
}

#[derive(Default, Clone)]
struct RunResult {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    self_ns: u64,
    redis_ns: u64,
    commands: BTreeMap<String, u64>,
    hits: u64,
    misses: u64,
}

impl RunResult {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn self_us(&self) -> f64 {
        self.self_ns as f64 / 1000.0 / self.ops.max(1) as f64
    }
    fn redis_us(&self) -> f64 {
        self.redis_ns as f64 / 1000.0 / self.ops.max(1) as f64
    }
    fn commands_per_op(&self) -> f64 {
        self.commands.values().sum::<u64>() as f64 / self.ops.max(1) as f64
    }
}

async fn run(
    subject: &Subject,
    keys: &Keys,
    workload: Workload,
    secs: f64,
    tasks: usize,
    seed: u64,
    admin: &mut redis::aio::MultiplexedConnection,
) -> RunResult {
    let stop = Arc::new(AtomicBool::new(false));
    let (hits0, misses0) = subject.hits_misses().unwrap_or_default();
    let before = Snapshot::take(admin).await;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let mut s = subject.clone();
        let keys = keys.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            let mut rng = Rng((seed ^ (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (key, rkey) = &keys[(rng.next() % keys.len() as u64) as usize];
                let outcome = if rng.next() % 100 < workload.write_pct() {
                    n += 1;
                    s.write(key, rkey, n).await
                } else {
                    match s.load(key, rkey).await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err(format!("session {rkey} missing")),
                        Err(e) => Err(e),
                    }
                };
                ops += 1;
                if let Err(e) = outcome {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            (ops, errors, first_error)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut result = RunResult::default();
    for h in handles {
        let (ops, errors, first) = h.await.expect("a task panicked");
        result.ops += ops;
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first;
        }
    }
    result.elapsed = start.elapsed();
    let after = Snapshot::take(admin).await;
    result.self_ns = after.self_ns - before.self_ns;
    result.redis_ns = after.redis_ns.saturating_sub(before.redis_ns);
    result.commands = after.commands_since(&before);
    let (hits1, misses1) = subject.hits_misses().unwrap_or_default();
    result.hits = hits1 - hits0;
    result.misses = misses1 - misses0;
    result
}

fn breakdown(runs: &[RunResult]) -> String {
    let ops: u64 = runs.iter().map(|r| r.ops).sum();
    let mut total: BTreeMap<&str, u64> = BTreeMap::new();
    for r in runs {
        for (k, v) in &r.commands {
            *total.entry(k.as_str()).or_default() += v;
        }
    }
    let mut parts: Vec<(&str, u64)> = total.into_iter().collect();
    parts.sort_by_key(|b| std::cmp::Reverse(b.1));
    parts
        .iter()
        .filter(|(_, v)| *v as f64 / ops.max(1) as f64 >= 0.001)
        .map(|(k, v)| format!("{k} {:.3}", *v as f64 / ops.max(1) as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() {
    let secs: f64 = env_or("RC_SECS", 3.0);
    let reps: usize = env_or("RC_REPS", 4);
    let tasks: usize = env_or("RC_TASKS", 64);
    let sessions: usize = env_or("RC_SESSIONS", 1000);
    let checks = std::env::var("RC_CHECKS").unwrap_or_default();

    if checks != "only" {
        bench(secs, reps, tasks, sessions).await;
    }
    if checks != "0" {
        checks::all().await;
    }
}

async fn bench(secs: f64, reps: usize, tasks: usize, sessions: usize) {
    let server = support::RedisServer::start();
    let url = server.url();
    println!("# Read cache: ours vs redis-rs cache-aio\n");
    println!(
        "redis-server {} on 127.0.0.1:{}; {} CPUs; {sessions} sessions, {tasks} tasks, {secs} s per run, \
         {reps} repetitions, order alternating (ours first on even repetitions)\n",
        server
            .cli(&["INFO", "server"])
            .lines()
            .find_map(|l| l.trim().strip_prefix("redis_version:"))
            .unwrap_or("?"),
        server.port(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis-server");

    // The sessions, written once through the store (so the index and user sets exist as in
    // production): a set of its own for each subject, so that one subject's writes never invalidate
    // what another (idle) subject's cache holds.
    let setup = subjects::store(&url, Some(0));
    let mut keys: BTreeMap<Which, Keys> = BTreeMap::new();
    for which in ALL {
        let mut list = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let key = Token::generate().store_key();
            setup
                .create(&key, &sample_record(i))
                .await
                .expect("create a session");
            let rkey = format!("{PREFIX}{}", key.as_str());
            list.push((key, rkey));
        }
        keys.insert(which, Arc::new(list));
    }
    let bytes: usize = redis::cmd("STRLEN")
        .arg(&keys[&Which::Ours][0].1)
        .query_async(&mut admin)
        .await
        .unwrap_or(0);
    println!("stored record: {bytes} bytes of JSON\n");

    let mut subjects = BTreeMap::new();
    for which in ALL {
        let keys = &keys[&which];
        let mut s = Subject::new(which, &url).await;
        // Warm up: read every session (ours opens its tracking connection in the background on the
        // first load; wait for it), then read them all again so both caches hold them.
        let (k0, r0) = &keys[0];
        s.load(k0, r0).await.expect("load");
        if let Subject::Ours(store) = &s {
            let deadline = Instant::now() + Duration::from_secs(10);
            while store.read_cache_stats().is_none_or(|c| c.flushes == 0) {
                assert!(
                    Instant::now() < deadline,
                    "tracking connection never opened"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        for _ in 0..2 {
            for (k, r) in keys.iter() {
                s.load(k, r).await.expect("load").expect("stored");
            }
        }
        subjects.insert(which, s);
    }

    let mut results: BTreeMap<(Workload, Which), Vec<RunResult>> = BTreeMap::new();
    for rep in 0..reps {
        for (wi, workload) in Workload::ALL.into_iter().enumerate() {
            // ABBA: every other repetition runs the subjects in reverse order.
            let mut order = ALL;
            if rep % 2 == 1 {
                order.reverse();
            }
            let seed = 0x5EED_0000 + (rep * 16 + wi) as u64;
            for which in order {
                let r = run(
                    &subjects[&which],
                    &keys[&which],
                    workload,
                    secs,
                    tasks,
                    seed,
                    &mut admin,
                )
                .await;
                eprintln!(
                    "rep {rep} {:<24} {:<30} {:>10.0} ops/s  {:.2} + {:.2} µs/op  {:.3} cmds/op  errors {}{}",
                    workload.name(),
                    which.name(),
                    r.ops_per_sec(),
                    r.self_us(),
                    r.redis_us(),
                    r.commands_per_op(),
                    r.errors,
                    r.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
                );
                results.entry((workload, which)).or_default().push(r);
            }
        }
    }

    println!("| subject | workload | ops/s median (min..max) | CPU µs/op: this process + Redis | Redis cmds/op (by command) | cache hits | errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for workload in Workload::ALL {
        for which in ALL {
            let runs = &results[&(workload, which)];
            let ops: Vec<f64> = runs.iter().map(RunResult::ops_per_sec).collect();
            let cpu: Vec<f64> = runs.iter().map(RunResult::self_us).collect();
            let rcpu: Vec<f64> = runs.iter().map(RunResult::redis_us).collect();
            let cmds: Vec<f64> = runs.iter().map(RunResult::commands_per_op).collect();
            let (h, m) = runs
                .iter()
                .fold((0, 0), |(h, m), r| (h + r.hits, m + r.misses));
            let hit_rate = if h + m == 0 {
                "–".to_owned()
            } else {
                format!("{:.1}%", 100.0 * h as f64 / (h + m) as f64)
            };
            let (c, r) = (median_spread(&cpu, 2).0, median_spread(&rcpu, 2).0);
            println!(
                "| {} | {} | {} | {c:.2} + {r:.2} = {:.2} | {:.3} ({}) | {hit_rate} | {} |",
                which.name(),
                workload.name(),
                median_spread(&ops, 0).1,
                c + r,
                median_spread(&cmds, 3).0,
                breakdown(runs),
                runs.iter().map(|r| r.errors).sum::<u64>(),
            );
        }
    }

    println!("\nPaired by repetition (runs seconds apart), cache-aio / ours:\n");
    println!("| cache-aio on | workload | ops/s ratio median (min..max) | CPU/op ratio, this process | CPU/op ratio, process + Redis | per-rep ops/s ratios |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (b_which, on) in [
        (Which::CacheAio, "ConnectionManager"),
        (Which::CacheAioPlain, "MultiplexedConnection"),
    ] {
        for workload in Workload::ALL {
            let a = &results[&(workload, Which::Ours)];
            let b = &results[&(workload, b_which)];
            let ratio = |f: &dyn Fn(&RunResult) -> f64| -> Vec<f64> {
                a.iter().zip(b).map(|(a, b)| f(b) / f(a)).collect()
            };
            let ops = ratio(&RunResult::ops_per_sec);
            println!(
                "| {on} | {} | {} | {} | {} | {} |",
                workload.name(),
                median_spread(&ops, 3).1,
                median_spread(&ratio(&RunResult::self_us), 2).1,
                median_spread(&ratio(&|r: &RunResult| r.self_us() + r.redis_us()), 2).1,
                ops.iter()
                    .map(|x| format!("{x:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
    }

    // One task, loads of cached sessions one after the other: the in-process cost of a hit, without
    // the scheduling of 64 tasks. And the decode alone, which cache-aio adds to every hit.
    println!("\nOne task, cached loads back to back ({} keys in turn; median of 3 × 0.5 s; wall ns per load):\n", sessions);
    println!("| subject | ns per load |");
    println!("| --- | --- |");
    for which in [Which::Ours, Which::CacheAio, Which::CacheAioPlain] {
        let mut s = subjects[&which].clone();
        let keys = &keys[&which];
        let mut per = Vec::new();
        for _ in 0..3 {
            let (mut n, t0) = (0usize, Instant::now());
            while t0.elapsed() < Duration::from_millis(500) {
                for _ in 0..64 {
                    let (k, r) = &keys[n % keys.len()];
                    s.load(k, r).await.expect("load").expect("stored");
                    n += 1;
                }
            }
            per.push(t0.elapsed().as_nanos() as f64 / n as f64);
        }
        println!("| {} | {} |", which.name(), median_spread(&per, 0).1);
    }
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(&keys[&Which::Ours][0].1)
        .query_async(&mut admin)
        .await
        .expect("GET");
    let format = sessionforge::format::native();
    let mut per = Vec::new();
    for _ in 0..3 {
        let (mut n, t0) = (0usize, Instant::now());
        while t0.elapsed() < Duration::from_millis(500) {
            for _ in 0..64 {
                std::hint::black_box(subjects::decode(&format, Some(std::hint::black_box(&raw))));
                n += 1;
            }
        }
        per.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    println!(
        "| decode alone ({bytes}-byte record: JSON, version, expiry check) | {} |",
        median_spread(&per, 0).1
    );
    println!();
    drop(subjects);
    drop(server);
}
