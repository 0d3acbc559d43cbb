//! What a run cost outside the requests counted: this process's CPU time (`/proc/self/stat`), Redis's
//! (`INFO cpu`), and the commands Redis ran (`INFO commandstats`).

use std::collections::BTreeMap;

/// CPU time of this process so far (user + system, every thread, dead ones too), in nanoseconds.
pub fn self_cpu_ns() -> u64 {
    static TICK_NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let tick_ns = *TICK_NS.get_or_init(|| {
        let hz = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(100);
        1_000_000_000 / hz.max(1)
    });
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // Fields after the command name (in parentheses, which may hold spaces): state is field 3, utime
    // field 14 and stime field 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) * tick_ns
}

/// Redis's CPU time (user + system) from `INFO cpu` text, in nanoseconds.
pub fn redis_cpu_ns(info: &str) -> u64 {
    let secs: f64 = info
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

/// Calls per command from `INFO commandstats` text (`cmdstat_get:calls=12,usec=…`).
pub fn commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// A snapshot of the counters.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub self_ns: u64,
    pub redis_ns: u64,
    pub commands: BTreeMap<String, u64>,
}

impl Snapshot {
    pub async fn take(admin: &mut redis::aio::MultiplexedConnection) -> Snapshot {
        let info: String = redis::cmd("INFO")
            .arg("cpu")
            .arg("commandstats")
            .query_async(admin)
            .await
            .unwrap_or_default();
        Snapshot {
            self_ns: self_cpu_ns(),
            redis_ns: redis_cpu_ns(&info),
            commands: commandstats(&info),
        }
    }

    /// Commands run since `before`, without the probe's own `INFO`.
    pub fn commands_since(&self, before: &Snapshot) -> BTreeMap<String, u64> {
        self.commands
            .iter()
            .filter(|(k, _)| k.as_str() != "info")
            .map(|(k, v)| (k.clone(), v - before.commands.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}
