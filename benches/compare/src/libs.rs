//! The in-process comparison (`COMPARE_MODE=libs`, or any `LOAD_LIBS`): sessionforge's `RedisStore`
//! (with and without the read cache) against tower-sessions 0.14 with tower-sessions-redis-store 0.16
//! (fred 10) and a floor, on the load benchmark's `/write` and `/read` handlers, same driver, same
//! `redis-server`, in one interleaved run:
//!
//!     COMPARE_MODE=libs cargo run --release --manifest-path benches/compare/Cargo.toml
//!
//! `LOAD_LIBS` picks a subset of `redis,cached,tower-sessions,floor`; `FLOOR_SCRIPT=1` makes the
//! floor's write a small Lua script (`GET`, `sha1hex`, `SET`, `ZADD`) instead of a plain `SET`.

use crate::driver::{self, env_or, median_spread, paired_ratio, Workload};
use crate::sf_app::{Mode, Server};
use crate::{cpu, probe, support};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use std::collections::BTreeMap;
use std::time::Duration;
use tower_sessions::{Session, SessionManagerLayer};
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
use tower_sessions_redis_store::RedisStore;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lib {
    /// sessionforge's `RedisStore`.
    SfRedis,
    /// sessionforge's `RedisStore` with the client-side read cache.
    SfCached,
    /// tower-sessions with tower-sessions-redis-store.
    TowerSessions,
    /// Not a session library: the least any Redis-backed session layer with a read cache can do. A
    /// write is one plain `SET` (redis-rs, one multiplexed connection) of a 126-byte value; a read
    /// costs nothing. What a session library adds is measured against this.
    Floor,
}

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Lib::SfRedis => "sessionforge redis",
            Lib::SfCached => "sessionforge redis + read cache",
            Lib::TowerSessions => "tower-sessions redis",
            Lib::Floor => "floor: one SET per write (no sessions)",
        }
    }
}

async fn ts_write(session: Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("counter")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0);
    session
        .insert("counter", n + 1)
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((n + 1).to_string())
}

async fn ts_read(session: Session) -> Result<String, StatusCode> {
    let n: u64 = session
        .get("counter")
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
        .unwrap_or(0);
    Ok(n.to_string())
}

/// The floor server (see [`Lib::Floor`]): `/write` stores a 126-byte value under one of 64 keys with
/// a TTL, `/read` answers without Redis.
fn floor_server(url: String) -> Server {
    Server::spawn(move |_shutdown| {
        Box::pin(async move {
            let client = redis::Client::open(url.as_str()).expect("url");
            let conn = redis::aio::ConnectionManager::new(client)
                .await
                .expect("connect");
            let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let write = move || {
                let mut conn = conn.clone();
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 64;
                async move {
                    let value = format!("{{\"createdAt\":1795760393174,\"lastAccess\":1795760395176,\"expires\":1795846795176,\"deadline\":1796365193174,\"data\":{{\"counter\":{n:03}}}}}");
                    if std::env::var("FLOOR_SCRIPT").is_ok() {
                        let script = redis::Script::new("local c = redis.call('GET', KEYS[1]); if c and redis.sha1hex(c) == ARGV[3] then return 2 end; redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4]); return 1");
                        let _: i64 = script
                            .key(format!("floor:{n}"))
                            .key("floor:index")
                            .arg(value)
                            .arg(86_400_000u64)
                            .arg("x")
                            .arg(n)
                            .invoke_async(&mut conn)
                            .await
                            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
                    } else {
                        let _: () = redis::cmd("SET")
                            .arg(format!("floor:{n}"))
                            .arg(value)
                            .arg("PX")
                            .arg(86_400_000u64)
                            .query_async(&mut conn)
                            .await
                            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
                    }
                    Ok::<_, StatusCode>(n.to_string())
                }
            };
            Router::new()
                .route("/write", get(write))
                .route("/read", get(|| async { "0" }))
        })
    })
}

fn tower_sessions_server(url: String) -> Server {
    Server::spawn(move |_shutdown| {
        Box::pin(async move {
            // As tower-sessions-redis-store's documentation sets it up: a fred pool of 6.
            let pool = Pool::new(Config::from_url(&url).expect("url"), None, None, None, 6)
                .expect("fred pool");
            // The connection tasks run on their own; the handle is not needed.
            drop(pool.connect());
            pool.wait_for_connect().await.expect("connect");
            let layer = SessionManagerLayer::new(RedisStore::new(pool)).with_secure(false);
            Router::new()
                .route("/write", get(ts_write))
                .route("/read", get(ts_read))
                .layer(layer)
        })
    })
}

#[derive(Default)]
struct Cell {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
    cmds: Vec<f64>,
    detail: String,
    bytes: Vec<f64>,
    sample: String,
    index_bytes: Vec<f64>,
    cpu: cpu::CpuRuns,
}

pub fn main() {
    let secs: f64 = env_or("LOAD_SECS", 2.0);
    let reps: usize = env_or("LOAD_REPS", 3);
    let clients: usize = env_or("LOAD_CLIENTS", 64);
    let duration = Duration::from_secs_f64(secs);
    let redis = support::RedisServer::start();
    let placement = cpu::place(redis.pid());
    println!(
        "compare: {clients} connections, {secs} s per run, {reps} interleaved repetitions, own redis-server on port {}",
        redis.port()
    );
    println!("{placement}");
    // `LOAD_LIBS`: a comma-separated subset of `redis,cached,tower-sessions,floor` (default: all).
    let wanted = std::env::var("LOAD_LIBS").unwrap_or_default();
    let libs: Vec<Lib> = [
        ("redis", Lib::SfRedis),
        ("cached", Lib::SfCached),
        ("tower-sessions", Lib::TowerSessions),
        ("floor", Lib::Floor),
    ]
    .into_iter()
    .filter(|(k, _)| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == *k))
    .map(|(_, l)| l)
    .collect();
    let mut cells: BTreeMap<(Lib, usize), Cell> = BTreeMap::new();
    for rep in 0..reps {
        for &lib in &libs {
            for (wi, &workload) in Workload::ALL.iter().enumerate() {
                probe::reset(&redis);
                let dir = tempfile::tempdir().expect("tempdir");
                let server = match lib {
                    Lib::SfRedis => {
                        Server::start(Mode::Redis, Some(redis.url()), dir.path().into())
                    }
                    Lib::SfCached => {
                        Server::start(Mode::RedisCached, Some(redis.url()), dir.path().into())
                    }
                    Lib::TowerSessions => tower_sessions_server(redis.url()),
                    Lib::Floor => floor_server(redis.url()),
                };
                driver::run(server.addr, clients, workload, Duration::from_millis(300));
                probe::reset_stats(&redis);
                let (stats, cpu_per) = cpu::measured(
                    || Some(redis.cli(&["INFO", "cpu"])),
                    || driver::run(server.addr, clients, workload, duration),
                );
                let calls = probe::command_calls(&redis);
                let (per, detail) = probe::per_request(&calls, stats.requests);
                let (bytes, sessions, index_bytes) = probe::memory_breakdown(&redis);
                let cell = cells.entry((lib, wi)).or_default();
                cell.rps.push(stats.rps());
                cell.cpu.push(cpu_per);
                cell.p50.push(stats.percentile_ms(0.5));
                cell.p99.push(stats.percentile_ms(0.99));
                cell.errors += stats.errors;
                cell.cmds.push(per);
                cell.detail = detail;
                if sessions > 0 {
                    cell.bytes.push(bytes as f64 / sessions as f64);
                    cell.index_bytes.push(index_bytes as f64 / sessions as f64);
                }
                if cell.sample.is_empty() {
                    cell.sample = probe::sample_value(&redis);
                }
                drop(server);
                eprintln!("{}", stats.progress(rep, reps, lib.name(), 32, workload));
            }
        }
    }
    println!();
    println!("| library | workload | req/s median (min..max) | p50 ms | p99 ms | errors | CPU µs/req: server + Redis (driver) | Redis cmds/req (busiest) | Redis bytes/session |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut med = BTreeMap::new();
    for ((lib, wi), c) in &cells {
        let (rps, rps_s) = median_spread(&c.rps, 0);
        let (bytes, bytes_s) = median_spread(&c.bytes, 0);
        med.insert((*lib, *wi), (rps, bytes, c.cpu.median().total_us()));
        println!(
            "| {} | {} | {rps_s} | {} | {} | {} | {} | {} ({}) | {bytes_s} |",
            lib.name(),
            Workload::ALL[*wi].name(),
            median_spread(&c.p50, 2).1,
            median_spread(&c.p99, 2).1,
            c.errors,
            c.cpu.cell(),
            median_spread(&c.cmds, 2).1,
            c.detail
        );
    }
    println!();
    for (wi, w) in Workload::ALL.iter().enumerate() {
        let target = if *w == Workload::Write { 1.2 } else { 2.0 };
        let Some(&(ts, ts_bytes, ts_cpu)) = med.get(&(Lib::TowerSessions, wi)) else {
            continue;
        };
        for lib in [Lib::SfRedis, Lib::SfCached] {
            let Some(&(sf, sf_bytes, sf_cpu)) = med.get(&(lib, wi)) else {
                continue;
            };
            println!(
                "{} / tower-sessions, {}: throughput {:.2} (target >= {target}), paired by repetition {}, requests per CPU-second (server + Redis) {:.2}, bytes/session {:.2} (target <= 1.2)",
                lib.name(),
                w.name(),
                sf / ts,
                paired_ratio(&cells[&(lib, wi)].rps, &cells[&(Lib::TowerSessions, wi)].rps).1,
                ts_cpu / sf_cpu,
                sf_bytes / ts_bytes
            );
        }
    }
    // Bytes per session at a larger population: 1,000 sessions, where Redis no longer keeps a
    // sorted set in its compact encoding (more than 128 members).
    println!();
    for &lib in &libs {
        probe::reset(&redis);
        let dir = tempfile::tempdir().expect("tempdir");
        let server = match lib {
            Lib::SfRedis => Server::start(Mode::Redis, Some(redis.url()), dir.path().into()),
            Lib::SfCached => Server::start(Mode::RedisCached, Some(redis.url()), dir.path().into()),
            Lib::TowerSessions => tower_sessions_server(redis.url()),
            Lib::Floor => continue,
        };
        for _ in 0..4 {
            driver::run(server.addr, 250, Workload::Write, Duration::from_millis(50));
        }
        drop(server);
        let (bytes, sessions, index) = probe::memory_breakdown(&redis);
        println!(
            "{} at {sessions} sessions: {:.0} bytes/session, of which {:.0} in indexes",
            lib.name(),
            bytes as f64 / sessions.max(1) as f64,
            index as f64 / sessions.max(1) as f64
        );
    }
    println!();
    for &lib in &libs {
        if let Some(c) = cells.get(&(lib, 0)) {
            println!(
                "{}: {} bytes/session of which {} in indexes; a stored session: {}",
                lib.name(),
                median_spread(&c.bytes, 0).1,
                median_spread(&c.index_bytes, 0).1,
                c.sample.replace('\n', " | ")
            );
        }
    }
}
