//! CPU accounting and placement for the load benchmarks (Linux `/proc` and `taskset`).
//!
//! On a small machine the load driver, the server under test and `redis-server` share the same cores,
//! so requests per second measure all three together: a driver that needs a whole core compresses
//! every ratio towards 1. Two things fix that here:
//!
//! * **CPU per request**: the run time of the server's threads (named [`SERVER_THREAD`]), of Redis
//!   (`INFO cpu`) and of the driver thread, each divided by the requests served. It does not depend on
//!   what else the machine is doing, and its inverse is how many requests a core serves.
//! * **Placement** (`LOAD_PIN`, on by default with two or more CPUs): the driver runs on CPU 0 and the
//!   server and Redis on the others, like a load generator on its own machine, so req/s is the
//!   server's capacity rather than a share of a core fought over with the driver.
#![allow(dead_code)]

use std::process::Command;

/// The prefix of the server's thread names: its runtime's workers and blocking pool (`sut-worker`)
/// and the thread that runs the accept loop (`sut-main`).
pub const SERVER_THREAD: &str = "sut-";

/// Nanoseconds the threads of this process whose name starts with `prefix` have run
/// (`/proc/self/task/*/schedstat`, first field).
pub fn threads_ns(prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .filter_map(|t| schedstat_ns(&t.path().join("schedstat")))
        .sum()
}

/// Nanoseconds the calling thread has run.
pub fn this_thread_ns() -> u64 {
    schedstat_ns(std::path::Path::new("/proc/thread-self/schedstat")).unwrap_or(0)
}

fn schedstat_ns(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Redis's CPU time in nanoseconds (user + system, all its threads), from `INFO cpu` text.
pub fn redis_ns(info_cpu: &str) -> u64 {
    let secs: f64 = info_cpu
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user")
                .then(|| v.parse::<f64>().ok())
                .flatten()
        })
        .sum();
    (secs * 1e9) as u64
}

/// Whether to pin: `LOAD_PIN=0` turns it off; otherwise on when the machine has two or more CPUs
/// and `taskset` is there.
pub fn pinning() -> bool {
    static PIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PIN.get_or_init(|| {
        if std::env::var("LOAD_PIN").is_ok_and(|v| v == "0") {
            return false;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        cpus >= 2
            && Command::new("taskset")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
    })
}

/// Places the benchmark: the calling thread (the driver) on CPU 0 and Redis (`redis_pid`) with the
/// servers on the other CPUs, when [`pinning`]. Answers a line saying what was done.
pub fn place(redis_pid: Option<u32>) -> String {
    if !pinning() {
        return "placement: none (LOAD_PIN=0, one CPU, or no taskset): driver, server and Redis share every CPU".into();
    }
    pin_this_thread("0");
    let cpus = server_cpus();
    if let Some(pid) = redis_pid {
        pin_process(pid, &cpus);
    }
    format!("placement: driver on CPU 0, server and Redis on CPU {cpus} (LOAD_PIN=0 to share)")
}

/// Runs `run` (one measured driver run) between two CPU snapshots; `redis_info_cpu` answers
/// `INFO cpu` of the benchmark's Redis, if any.
pub fn measured(
    redis_info_cpu: impl Fn() -> Option<String>,
    run: impl FnOnce() -> super::driver::Stats,
) -> (super::driver::Stats, PerRequest) {
    let before = Snapshot::take(redis_info_cpu().as_deref());
    let stats = run();
    let after = Snapshot::take(redis_info_cpu().as_deref());
    let per = before.per_request(&after, stats.driver_ns, stats.requests);
    (stats, per)
}

/// The CPUs the server and Redis get when pinning: all but CPU 0, as a `taskset` list.
pub fn server_cpus() -> String {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    if cpus <= 2 {
        "1".to_owned()
    } else {
        format!("1-{}", cpus - 1)
    }
}

/// Pins every thread of process `pid` (all of its tasks) to `cpus`. Threads it starts later inherit
/// the mask from the thread that starts them.
pub fn pin_process(pid: u32, cpus: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .output();
}

/// Pins the threads of this process named `prefix…` to `cpus`.
pub fn pin_threads(prefix: &str, cpus: &str) {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for t in dir.filter_map(Result::ok) {
        let named = std::fs::read_to_string(t.path().join("comm"))
            .is_ok_and(|c| c.trim_end().starts_with(prefix));
        if named {
            pin_task(&t.file_name().to_string_lossy(), cpus);
        }
    }
}

/// Pins the calling thread to `cpus`.
pub fn pin_this_thread(cpus: &str) {
    if let Ok(tid) = std::fs::read_link("/proc/thread-self") {
        if let Some(tid) = tid.file_name() {
            pin_task(&tid.to_string_lossy(), cpus);
        }
    }
}

/// Pins one thread (task id `tid`) to `cpus`.
fn pin_task(tid: &str, cpus: &str) {
    let _ = Command::new("taskset")
        .args(["-p", "-c", cpus, tid])
        .output();
}

/// CPU nanoseconds per request of one run: server threads, Redis, the driver.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerRequest {
    pub server_us: f64,
    pub redis_us: f64,
    pub driver_us: f64,
}

impl PerRequest {
    /// Server plus Redis: what the system under test spends on a request.
    pub fn total_us(&self) -> f64 {
        self.server_us + self.redis_us
    }
}

/// A snapshot of the CPU counters, to subtract from a later one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    server: u64,
    redis: u64,
}

impl Snapshot {
    /// The counters now; `redis_info_cpu` is `INFO cpu` of the benchmark's Redis, if it has one.
    pub fn take(redis_info_cpu: Option<&str>) -> Snapshot {
        Snapshot {
            server: threads_ns(SERVER_THREAD),
            redis: redis_info_cpu.map_or(0, redis_ns),
        }
    }

    /// Per-request figures from this snapshot to `later`, given the driver's own thread time.
    pub fn per_request(&self, later: &Snapshot, driver_ns: u64, requests: u64) -> PerRequest {
        let r = requests.max(1) as f64 * 1000.0;
        PerRequest {
            server_us: later.server.saturating_sub(self.server) as f64 / r,
            redis_us: later.redis.saturating_sub(self.redis) as f64 / r,
            driver_us: driver_ns as f64 / r,
        }
    }
}

/// The CPU figures of one table cell's runs.
#[derive(Default)]
pub struct CpuRuns {
    server_us: Vec<f64>,
    redis_us: Vec<f64>,
    driver_us: Vec<f64>,
}

impl CpuRuns {
    /// Adds one run's figures.
    pub fn push(&mut self, p: PerRequest) {
        self.server_us.push(p.server_us);
        self.redis_us.push(p.redis_us);
        self.driver_us.push(p.driver_us);
    }

    /// The medians over the runs.
    pub fn median(&self) -> PerRequest {
        let m = |xs: &[f64]| super::driver::median_spread(xs, 1).0;
        PerRequest {
            server_us: m(&self.server_us),
            redis_us: m(&self.redis_us),
            driver_us: m(&self.driver_us),
        }
    }

    /// The table cell: `server + Redis = total (driver)`, medians in µs.
    pub fn cell(&self) -> String {
        let p = self.median();
        format!(
            "{:.1} + {:.1} = {:.1} ({:.1})",
            p.server_us,
            p.redis_us,
            p.total_us(),
            p.driver_us
        )
    }
}
