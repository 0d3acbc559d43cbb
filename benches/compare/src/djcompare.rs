//! The default comparison (`COMPARE_MODE=djforge`): the real DJForge example binary, as shipped, against
//! the same app on tower-sessions and against the same routes with no sessions, on one `redis-server`,
//! interleaved, over three workloads and a session-size axis.
//!
//! * **DJForge** is `target/release/examples/djforge` (or `DJFORGE_BIN`), built beforehand with `cargo
//!   build --release --example djforge`, run as a child process with nothing set but `REDIS_HOST`,
//!   `REDIS_PORT` (the benchmark's own Redis), `HOST=127.0.0.1`, `PORT=0`, `SESSION_DIR` (a temporary
//!   directory), `RUST_LOG=warn` and `SESSION_COOKIE_SECURE=false`: its failover store over Redis with
//!   the read cache, its metrics recorder, its logging. Its address is read from its
//!   `DJForge listening on http://…` line. It starts on all CPUs (so its runtime has as many workers as
//!   the machine has CPUs, as shipped) and is then moved to the server CPUs.
//! * **tower-sessions** and **no sessions** (`apps.rs`) run in this process on a 2-worker runtime,
//!   like the load benchmark's servers.
//! * **Workloads** (`djdriver.rs`): write (`GET /api/me`), read (`GET /api/prefs`), mixed (90% reads,
//!   10% `PUT /api/prefs/theme`). Each client first stores a preference of the run's size.
//! * **Sizes** (`LOAD_SIZES`, bytes, default `50,2048,8192`): the stored preference's JSON.
//!
//! Every (size, workload, library) cell runs once per repetition with a fresh server and a flushed
//! Redis; the libraries of a cell run back to back (their order turns each repetition), and ratios are
//! paired by repetition. Besides req/s, per run: CPU per request (server, Redis, driver), Redis commands
//! per request, bytes Redis received per write and sent per request (`INFO stats`
//! `total_net_input_bytes`/`total_net_output_bytes`), Redis bytes per session.
//!
//! Environment: `LOAD_SECS` (default 2), `LOAD_REPS` (default 3), `LOAD_CLIENTS` (default 64),
//! `LOAD_PIN`, `LOAD_SERVER_WORKERS` (the in-process servers), `LOAD_SIZES`, `COMPARE_LIBS` (a subset of
//! `djforge,baseline,tower-sessions,none`), `DJFORGE_BIN`, and `DJFORGE_BASELINE_BIN`: a second DJForge
//! binary (say, built from an earlier commit) run as one more subject, with its own ratio table.

use crate::djdriver::{self, Work};
use crate::driver::{env_or, median_spread, paired_ratio};
use crate::sf_app::Server;
use crate::support::RedisServer;
use crate::{apps, cpu, probe};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lib {
    /// The DJForge example binary (sessionforge, as shipped).
    Djforge,
    /// Another DJForge binary (`DJFORGE_BASELINE_BIN`, for example built from an earlier commit), run
    /// exactly like the first: the before/after of a change, in the same run.
    Baseline,
    /// The same app on tower-sessions with tower-sessions-redis-store.
    TowerSessions,
    /// The same routes without sessions.
    NoSessions,
}

impl Lib {
    fn name(self) -> &'static str {
        match self {
            Lib::Djforge => "djforge (sessionforge)",
            Lib::Baseline => "djforge (baseline)",
            Lib::TowerSessions => "tower-sessions",
            Lib::NoSessions => "no sessions",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Lib::Djforge => "djforge",
            Lib::Baseline => "baseline",
            Lib::TowerSessions => "tower-sessions",
            Lib::NoSessions => "none",
        }
    }
}

/// The DJForge binary running as a child process; stopped (SIGTERM, then SIGKILL after 5 s) on drop.
struct DjChild {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl DjChild {
    fn start(bin: &Path, redis_port: u16) -> DjChild {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("djforge.stderr");
        let sessions = dir.path().join("sessions");
        // Started on every CPU, whatever the calling (driver) thread is pinned to, so the binary
        // sizes its runtime as it would on this machine; moved to the server CPUs once listening.
        let mut cmd = if cpu::pinning() {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let mut c = Command::new("taskset");
            c.args(["-c", &format!("0-{}", cpus - 1)]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.env_clear()
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_PORT", redis_port.to_string())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("SESSION_DIR", &sessions)
            .env("RUST_LOG", "warn")
            .env("SESSION_COOKIE_SECURE", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // Reads every line (so the pipe never fills) and forwards them.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining.
                    continue;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "djforge did not print its address within 30 s; stdout: {seen:?}; stderr: {}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    );
                }
            };
            if line.starts_with("Sessions: file store") {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "djforge started on its file fallback, not on the benchmark's Redis: {line}"
                );
            }
            if let Some(a) = line.strip_prefix("DJForge listening on http://") {
                break a.trim().parse().expect("djforge's address");
            }
            seen.push(line);
        };
        if cpu::pinning() {
            cpu::pin_process(child.id(), &cpu::server_cpus());
        }
        DjChild {
            child,
            addr,
            stderr,
            _dir: dir,
        }
    }

    fn tasks(&self) -> impl Iterator<Item = PathBuf> {
        std::fs::read_dir(format!("/proc/{}/task", self.child.id()))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|t| t.path())
    }

    /// Nanoseconds the process's threads have run.
    fn cpu_ns(&self) -> u64 {
        self.tasks()
            .filter_map(|t| {
                std::fs::read_to_string(t.join("schedstat"))
                    .ok()?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Its threads by name, counted: `tokio-runtime-w×2, djforge-snapsh×1`.
    fn threads(&self) -> String {
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        for t in self.tasks() {
            let name = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
            *names.entry(name.trim().to_owned()).or_default() += 1;
        }
        names
            .iter()
            .map(|(n, c)| format!("{n}×{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What it logged on standard error (warnings and errors: `RUST_LOG=warn`).
    fn logged(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for DjChild {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server under test.
enum Sut {
    Child(DjChild),
    InProcess(Server),
}

impl Sut {
    fn start(lib: Lib, bins: &Bins, redis: &RedisServer) -> Sut {
        match lib {
            Lib::Djforge => Sut::Child(DjChild::start(&bins.djforge, redis.port())),
            Lib::Baseline => Sut::Child(DjChild::start(
                bins.baseline.as_deref().expect("a baseline binary"),
                redis.port(),
            )),
            Lib::TowerSessions => {
                let url = redis.url();
                Sut::InProcess(Server::spawn(move |_| {
                    Box::pin(async move { apps::tower_sessions(&url).await })
                }))
            }
            Lib::NoSessions => Sut::InProcess(Server::spawn(move |_| {
                Box::pin(async move { apps::no_sessions() })
            })),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Sut::Child(c) => c.addr,
            Sut::InProcess(s) => s.addr,
        }
    }

    /// The server's CPU time so far: the child's threads, or this process's server threads.
    fn cpu_ns(&self) -> u64 {
        match self {
            Sut::Child(c) => c.cpu_ns(),
            Sut::InProcess(_) => cpu::threads_ns(cpu::SERVER_THREAD),
        }
    }
}

/// The DJForge binaries: the one under test and, when `DJFORGE_BASELINE_BIN` is set, a baseline.
struct Bins {
    djforge: PathBuf,
    baseline: Option<PathBuf>,
}

/// Counters read around a measured run.
#[derive(Clone, Copy, Default)]
struct Snap {
    server_ns: u64,
    redis_ns: u64,
    net_in: u64,
    net_out: u64,
}

impl Snap {
    fn take(sut: &Sut, redis: &RedisServer) -> Snap {
        let info = redis.cli(&["INFO", "cpu", "stats"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        Snap {
            server_ns: sut.cpu_ns(),
            redis_ns: cpu::redis_ns(&info),
            net_in: field("total_net_input_bytes"),
            net_out: field("total_net_output_bytes"),
        }
    }
}

/// Redis commands per request since the last reset (`INFO commandstats`; commands run inside a
/// script count too, as Redis counts them), and the four busiest as `name calls/req (µs/call)`: the
/// time Redis spent executing each (a script's includes its inner commands').
fn command_detail(redis: &RedisServer, requests: u64) -> (f64, String) {
    let text = redis.cli(&["INFO", "commandstats"]);
    let mut rows: Vec<(String, u64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (name, fields) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            if name == "info" || name.starts_with("config") {
                return None;
            }
            let field = |k: &str| fields.split(',').find_map(|f| f.strip_prefix(k));
            let calls: u64 = field("calls=")?.parse().ok()?;
            let per: f64 = field("usec_per_call=")?.parse().ok()?;
            Some((name.to_owned(), calls, per))
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    let r = requests.max(1) as f64;
    let total: u64 = rows.iter().map(|x| x.1).sum();
    let detail = rows
        .iter()
        .take(4)
        .map(|(name, calls, per)| format!("{name} {:.2} ({per:.1} µs)", *calls as f64 / r))
        .collect::<Vec<_>>()
        .join(", ");
    (total as f64 / r, detail)
}

#[derive(Default)]
struct Cell {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
    cmds: Vec<f64>,
    detail: String,
    /// Bytes Redis received per write request.
    in_per_write: Vec<f64>,
    /// Bytes Redis received per request.
    in_per_req: Vec<f64>,
    /// Bytes Redis sent per request.
    out_per_req: Vec<f64>,
    bytes: Vec<f64>,
    cpu: cpu::CpuRuns,
    /// The server's total CPU per request (server + Redis), per run, for paired CPU ratios.
    cpu_total: Vec<f64>,
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// Targets of issue 19: (size, workload) → djforge / tower-sessions at least this.
fn target(size: usize, work: Work) -> Option<f64> {
    match (size, work) {
        (50, Work::Write) => Some(1.5),
        (50, Work::Mixed) => Some(2.0),
        (50, Work::Read) => Some(2.5),
        (2048, Work::Write) => Some(1.3),
        (2048, Work::Mixed) => Some(1.8),
        (2048, Work::Read) => Some(2.2),
        _ => None,
    }
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target {
        "yes"
    } else {
        "**no**"
    }
}

pub fn main() {
    let secs: f64 = env_or("LOAD_SECS", 2.0);
    let reps: usize = env_or("LOAD_REPS", 3);
    let clients: usize = env_or("LOAD_CLIENTS", 64);
    let duration = Duration::from_secs_f64(secs);
    let sizes: Vec<usize> = std::env::var("LOAD_SIZES")
        .unwrap_or_else(|_| "50,2048,8192".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let wanted = std::env::var("COMPARE_LIBS").unwrap_or_default();
    let bins = Bins {
        djforge: std::env::var_os("DJFORGE_BIN").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/examples/djforge"),
            PathBuf::from,
        ),
        baseline: std::env::var_os("DJFORGE_BASELINE_BIN").map(PathBuf::from),
    };
    let libs: Vec<Lib> = [
        Lib::Djforge,
        Lib::Baseline,
        Lib::TowerSessions,
        Lib::NoSessions,
    ]
    .into_iter()
    .filter(|l| *l != Lib::Baseline || bins.baseline.is_some())
    .filter(|l| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == l.key()))
    .collect();
    for (lib, bin) in [
        (Lib::Djforge, Some(&bins.djforge)),
        (Lib::Baseline, bins.baseline.as_ref()),
    ] {
        if let Some(bin) = bin.filter(|b| libs.contains(&lib) && !b.is_file()) {
            panic!(
                "no DJForge binary at {}: run `cargo build --release --example djforge` at the repository root first (or set DJFORGE_BIN / DJFORGE_BASELINE_BIN)",
                bin.display()
            );
        }
    }
    let redis = RedisServer::start();
    let placement = cpu::place(redis.pid());
    let version = redis
        .cli(&["INFO", "server"])
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap_or("?")
        .trim()
        .to_owned();
    println!(
        "compare (djforge): {clients} connections, {secs} s per run, {reps} interleaved repetitions, sizes {sizes:?} bytes, own redis-server {version} on port {}",
        redis.port()
    );
    println!("djforge binary: {}", bins.djforge.display());
    if let Some(b) = &bins.baseline {
        println!("baseline binary: {}", b.display());
    }
    println!("{placement}");
    if libs.contains(&Lib::Djforge) {
        let probe = DjChild::start(&bins.djforge, redis.port());
        println!("djforge's threads once listening: {}", probe.threads());
    }
    let mut cells: BTreeMap<(usize, Work, Lib), Cell> = BTreeMap::new();
    let mut logged = String::new();
    for rep in 0..reps {
        for &size in &sizes {
            for work in Work::ALL {
                // The libraries of one cell back to back, the order turned every repetition.
                let mut order = libs.clone();
                order.rotate_left(rep % libs.len().max(1));
                for lib in order {
                    probe::reset(&redis);
                    let sut = Sut::start(lib, &bins, &redis);
                    let (mut before, mut after) = (Snap::default(), Snap::default());
                    let run = djdriver::run(
                        sut.addr(),
                        clients,
                        work,
                        size,
                        lib != Lib::NoSessions,
                        Duration::from_millis(300),
                        duration,
                        |start| {
                            if start {
                                probe::reset_stats(&redis);
                                before = Snap::take(&sut, &redis);
                            } else {
                                after = Snap::take(&sut, &redis);
                            }
                        },
                    );
                    let stats = &run.stats;
                    let (per, detail) = command_detail(&redis, stats.requests);
                    let (bytes, sessions, _) = probe::memory_breakdown(&redis);
                    let r = stats.requests.max(1) as f64;
                    let per_cpu = cpu::PerRequest {
                        server_us: after.server_ns.saturating_sub(before.server_ns) as f64
                            / r
                            / 1000.0,
                        redis_us: after.redis_ns.saturating_sub(before.redis_ns) as f64
                            / r
                            / 1000.0,
                        driver_us: stats.driver_ns as f64 / r / 1000.0,
                    };
                    let net_in = after.net_in.saturating_sub(before.net_in) as f64;
                    let net_out = after.net_out.saturating_sub(before.net_out) as f64;
                    let cell = cells.entry((size, work, lib)).or_default();
                    cell.rps.push(stats.rps());
                    cell.p50.push(stats.percentile_ms(0.5));
                    cell.p99.push(stats.percentile_ms(0.99));
                    cell.errors += stats.errors;
                    cell.cpu.push(per_cpu);
                    cell.cpu_total.push(per_cpu.total_us());
                    if lib != Lib::NoSessions {
                        cell.cmds.push(per);
                        cell.detail = detail;
                        if run.writes > 0 {
                            cell.in_per_write.push(net_in / run.writes as f64);
                        }
                        cell.in_per_req.push(net_in / r);
                        cell.out_per_req.push(net_out / r);
                        if sessions > 0 {
                            cell.bytes.push(bytes as f64 / sessions as f64);
                        }
                    }
                    if let Sut::Child(c) = &sut {
                        let l = c.logged();
                        if !l.trim().is_empty() && logged.len() < 4000 {
                            logged.push_str(&l);
                        }
                    }
                    drop(sut);
                    eprintln!(
                        "run {}/{reps} {:>5} {:<22} {:<5} {:>8.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}  CPU µs/req {:.1} + {:.1}",
                        rep + 1,
                        size_name(size),
                        lib.name(),
                        work.short(),
                        stats.rps(),
                        stats.percentile_ms(0.5),
                        stats.percentile_ms(0.99),
                        stats.errors,
                        per_cpu.server_us,
                        per_cpu.redis_us,
                    );
                }
            }
        }
    }
    drop(redis);
    report(&cells, &sizes, &libs, reps);
    if !logged.trim().is_empty() {
        println!();
        println!("djforge logged on stderr (RUST_LOG=warn), first 4 KB:");
        println!("{logged}");
    }
}

fn report(cells: &BTreeMap<(usize, Work, Lib), Cell>, sizes: &[usize], libs: &[Lib], reps: usize) {
    println!();
    println!("| size | workload | server | req/s median (min..max) | p50 ms | p99 ms | errors | CPU µs/req: server + Redis (driver) | Redis cmds/req (busiest) | Redis bytes in per write, out per req | Redis bytes/session |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for ((size, work, lib), c) in cells {
        let (cmds, net, bytes) = if *lib == Lib::NoSessions {
            ("–".to_owned(), "–".to_owned(), "–".to_owned())
        } else {
            let w = if c.in_per_write.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.0}", median_spread(&c.in_per_write, 0).0)
            };
            (
                format!("{} ({})", median_spread(&c.cmds, 2).1, c.detail),
                format!("{w}, {:.0}", median_spread(&c.out_per_req, 0).0),
                median_spread(&c.bytes, 0).1,
            )
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {cmds} | {net} | {bytes} |",
            size_name(*size),
            work.name(),
            lib.name(),
            median_spread(&c.rps, 0).1,
            median_spread(&c.p50, 2).1,
            median_spread(&c.p99, 2).1,
            c.errors,
            c.cpu.cell(),
        );
    }

    // The ratios: paired by repetition (run i of one against run i of the other, seconds apart).
    let get = |size, work, lib| cells.get(&(size, work, lib));
    println!();
    println!("Ratios ({reps} repetitions): paired median (min..max) of per-repetition req/s ratios; ratio of medians; requests per CPU-second of server + Redis (paired median).");
    println!();
    println!("| size | workload | djforge / tower-sessions, paired | ratio of medians | per CPU-second | target | met? | djforge / no sessions, paired | per CPU-second |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut summary: BTreeMap<usize, BTreeMap<Work, f64>> = BTreeMap::new();
    for &size in sizes {
        for work in Work::ALL {
            let Some(dj) = get(size, work, Lib::Djforge) else {
                continue;
            };
            let (vs_ts, vs_ts_s, med_ts, cpu_ts) = match get(size, work, Lib::TowerSessions) {
                Some(ts) => {
                    let (p, s) = paired_ratio(&dj.rps, &ts.rps);
                    let m = median_spread(&dj.rps, 0).0 / median_spread(&ts.rps, 0).0;
                    let cpu = paired_ratio(&ts.cpu_total, &dj.cpu_total).1;
                    (p, s, format!("{m:.2}"), cpu)
                }
                None => (f64::NAN, "–".into(), "–".into(), "–".into()),
            };
            if vs_ts.is_finite() {
                summary.entry(size).or_default().insert(work, vs_ts);
            }
            let (vs_none, vs_none_cpu) = match get(size, work, Lib::NoSessions) {
                Some(none) => (
                    paired_ratio(&dj.rps, &none.rps).1,
                    paired_ratio(&none.cpu_total, &dj.cpu_total).1,
                ),
                None => ("–".into(), "–".into()),
            };
            let (t, met) = match target(size, work) {
                Some(t) if vs_ts.is_finite() => (format!("≥ {t}"), verdict(vs_ts, t).to_owned()),
                Some(t) => (format!("≥ {t}"), "–".into()),
                None => ("–".into(), "–".into()),
            };
            let none_target = if size == 50 && work == Work::Read {
                " (target ≥ 0.9)"
            } else {
                ""
            };
            println!(
                "| {} | {} | {vs_ts_s} | {med_ts} | {cpu_ts} | {t} | {met} | {vs_none}{none_target} | {vs_none_cpu} |",
                size_name(size),
                work.short(),
            );
        }
    }

    if libs.contains(&Lib::Baseline) {
        println!();
        println!("djforge / baseline, paired median (min..max) of per-repetition req/s ratios; per CPU-second of server + Redis.");
        println!();
        println!("| size | workload | req/s | per CPU-second |");
        println!("|---|---|---|---|");
        for &size in sizes {
            for work in Work::ALL {
                if let (Some(dj), Some(base)) = (
                    get(size, work, Lib::Djforge),
                    get(size, work, Lib::Baseline),
                ) {
                    println!(
                        "| {} | {} | {} | {} |",
                        size_name(size),
                        work.short(),
                        paired_ratio(&dj.rps, &base.rps).1,
                        paired_ratio(&base.cpu_total, &dj.cpu_total).1,
                    );
                }
            }
        }
    }

    // The size axis: each server's throughput, size by size, then what Redis received per write and
    // sent per read.
    println!();
    let head: Vec<String> = sizes.iter().map(|s| size_name(*s)).collect();
    println!("Size axis: req/s (median) by session size.");
    println!();
    println!("| server | workload | {} |", head.join(" | "));
    println!("|---|---|{}", "---|".repeat(sizes.len()));
    for &lib in libs {
        for work in Work::ALL {
            let rps: Vec<String> = sizes
                .iter()
                .map(|&s| {
                    get(s, work, lib).map_or("–".into(), |c| {
                        format!("{:.0}", median_spread(&c.rps, 0).0)
                    })
                })
                .collect();
            println!(
                "| {} | {} | {} |",
                lib.name(),
                work.short(),
                rps.join(" | ")
            );
        }
    }
    println!();
    println!("Bytes Redis received per write (write workload) and sent per read (read workload), medians, by session size.");
    println!();
    println!(
        "| server | to Redis per write: {} | from Redis per read: {} |",
        head.join(" | "),
        head.join(" | ")
    );
    println!(
        "|---|{}{}",
        "---|".repeat(sizes.len()),
        "---|".repeat(sizes.len())
    );
    for &lib in libs.iter().filter(|l| **l != Lib::NoSessions) {
        let col = |work: Work, f: fn(&Cell) -> &Vec<f64>| -> Vec<String> {
            sizes
                .iter()
                .map(|&s| match get(s, work, lib) {
                    Some(c) if !f(c).is_empty() => format!("{:.0}", median_spread(f(c), 0).0),
                    _ => "–".into(),
                })
                .collect()
        };
        println!(
            "| {} | {} | {} |",
            lib.name(),
            col(Work::Write, |c| &c.in_per_write).join(" | "),
            col(Work::Read, |c| &c.out_per_req).join(" | ")
        );
    }

    println!();
    for (size, label) in [(50usize, ""), (2048, " at 2 KB")] {
        let Some(r) = summary.get(&size) else {
            continue;
        };
        let f = |w| r.get(&w).map_or("n/a".to_owned(), |v| format!("{v:.2}x"));
        println!(
            "write {}, read {}, mixed {} vs tower-sessions{label}",
            f(Work::Write),
            f(Work::Read),
            f(Work::Mixed)
        );
    }
}
