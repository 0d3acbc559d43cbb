//! The load benchmark: `cargo bench --bench load`.
//!
//! An Axum server with the session layer on loopback, driven by 64 HTTP/1.1 connections, each a client
//! with its own cookie jar, in every mode (no sessions, memory, Redis, Redis with the read cache,
//! failover on Redis, files) and two workloads (write-every-request, read-mostly). Runs are interleaved
//! (every mode and workload once, then again) and repeated; the table shows medians with the spread.
//! The benchmark starts its own `redis-server` on a free loopback port.
//!
//! Environment: `LOAD_SECS` (seconds per run, default 2), `LOAD_REPS` (repetitions, default 3),
//! `LOAD_CLIENTS` (connections, default 64), `LOAD_MODES` (comma-separated subset of
//! `none,memory,redis,cached,failover,file`), `LOAD_PIN` (`0`: no CPU placement; see `cpu.rs`).
//! Besides req/s it prints the CPU time per request of the server, of Redis and of the driver.

#[path = "../../tests/support/mod.rs"]
mod support;

mod cpu;
mod driver;
mod median;
mod probe;
mod sf_app;

use driver::{env_or, median_spread, paired_ratio, Workload};
use sf_app::{Mode, Server};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Default)]
struct Cell {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
    cmds: Vec<f64>,
    detail: String,
    bytes: Vec<f64>,
    cpu: cpu::CpuRuns,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "the load benchmark runs with `cargo bench --bench load` (skipped under cargo test)"
        );
        return;
    }
    let secs: f64 = env_or("LOAD_SECS", 2.0);
    let reps: usize = env_or("LOAD_REPS", 3);
    let clients: usize = env_or("LOAD_CLIENTS", 64);
    let wanted = std::env::var("LOAD_MODES").unwrap_or_default();
    let all = [
        ("none", Mode::NoSessions),
        ("memory", Mode::Memory),
        ("redis", Mode::Redis),
        ("cached", Mode::RedisCached),
        ("failover", Mode::Failover),
        ("file", Mode::File),
    ];
    let modes: Vec<Mode> = all
        .iter()
        .filter(|(k, _)| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == *k))
        .map(|(_, m)| *m)
        .collect();
    let duration = Duration::from_secs_f64(secs);
    let redis = support::RedisServer::start();
    let placement = cpu::place(redis.pid());
    println!(
        "load: {clients} connections, {secs} s per run, {reps} interleaved repetitions, redis-server {} on port {}",
        redis.cli(&["INFO", "server"]).lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").trim(),
        redis.port()
    );
    println!("{placement}");
    let mut cells: BTreeMap<(usize, usize), Cell> = BTreeMap::new();
    for rep in 0..reps {
        for (mi, &mode) in modes.iter().enumerate() {
            for (wi, &workload) in Workload::ALL.iter().enumerate() {
                let dir = tempfile::tempdir().expect("tempdir");
                if mode.uses_redis() {
                    probe::reset(&redis);
                }
                let server = Server::start(mode, Some(redis.url()), dir.path().to_owned());
                // A short warm-up run (connections, sessions, caches), then the measured run.
                driver::run(server.addr, clients, workload, Duration::from_millis(300));
                if mode.uses_redis() {
                    probe::reset_stats(&redis);
                }
                let info = || mode.uses_redis().then(|| redis.cli(&["INFO", "cpu"]));
                let (stats, per) = cpu::measured(info, || {
                    driver::run(server.addr, clients, workload, duration)
                });
                let cell = cells.entry((mi, wi)).or_default();
                cell.cpu.push(per);
                cell.rps.push(stats.rps());
                cell.p50.push(stats.percentile_ms(0.50));
                cell.p99.push(stats.percentile_ms(0.99));
                cell.errors += stats.errors;
                if mode.uses_redis() {
                    let calls = probe::command_calls(&redis);
                    let (per, detail) = probe::per_request(&calls, stats.requests);
                    cell.cmds.push(per);
                    cell.detail = detail;
                    let (bytes, sessions) = probe::memory_per_session(&redis);
                    if sessions > 0 {
                        cell.bytes.push(bytes as f64 / sessions as f64);
                    }
                    if rep == 0
                        && mi == modes.iter().position(|m| *m == mode).unwrap_or(0)
                        && wi == 0
                        && mode == Mode::Redis
                    {
                        println!(
                            "a stored session: {}",
                            probe::sample_value(&redis).replace('\n', " | ")
                        );
                    }
                }
                drop(server);
                eprintln!("{}", stats.progress(rep, reps, mode.name(), 22, workload));
            }
        }
    }
    println!();
    println!("| mode | workload | req/s median (min..max) | p50 ms | p99 ms | errors | CPU µs/req: server + Redis (driver) | Redis cmds/req (busiest) | Redis bytes/session |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rps_of = BTreeMap::new();
    let mut cpu_of = BTreeMap::new();
    for ((mi, wi), c) in &cells {
        let (rps, rps_s) = median_spread(&c.rps, 0);
        rps_of.insert((modes[*mi], *wi), rps);
        let (_, p50) = median_spread(&c.p50, 2);
        let (_, p99) = median_spread(&c.p99, 2);
        let cmds = if c.cmds.is_empty() {
            "-".to_owned()
        } else {
            format!("{} ({})", median_spread(&c.cmds, 2).1, c.detail)
        };
        let bytes = if c.bytes.is_empty() {
            "-".to_owned()
        } else {
            median_spread(&c.bytes, 0).1
        };
        cpu_of.insert((modes[*mi], *wi), c.cpu.median().total_us());
        println!(
            "| {} | {} | {rps_s} | {p50} | {p99} | {} | {} | {cmds} | {bytes} |",
            modes[*mi].name(),
            Workload::ALL[*wi].name(),
            c.errors,
            c.cpu.cell()
        );
    }
    println!();
    for (wi, w) in Workload::ALL.iter().enumerate() {
        let cell = |mode: Mode| {
            let at = modes.iter().position(|m| *m == mode)?;
            cells.get(&(at, wi))
        };
        let (Some(none), Some(mem)) = (cell(Mode::NoSessions), cell(Mode::Memory)) else {
            continue;
        };
        println!(
            "memory / no sessions, {}: throughput {:.2} (target >= 0.85), paired by repetition {}; requests per server CPU-second {:.2}",
            w.name(),
            rps_of[&(Mode::Memory, wi)] / rps_of[&(Mode::NoSessions, wi)],
            paired_ratio(&mem.rps, &none.rps).1,
            cpu_of[&(Mode::NoSessions, wi)] / cpu_of[&(Mode::Memory, wi)]
        );
    }
}
