//! Redis figures for the load benchmark, read with `redis-cli` from the benchmark's own server:
//! commands per request (`INFO commandstats` deltas) and bytes per session (`MEMORY USAGE`).
#![allow(dead_code)]

use super::support::RedisServer;
use std::collections::BTreeMap;

/// Empties the server and zeroes its command statistics.
pub fn reset(redis: &RedisServer) {
    redis.cli(&["FLUSHALL"]);
    redis.cli(&["CONFIG", "RESETSTAT"]);
}

/// Zeroes the command statistics only.
pub fn reset_stats(redis: &RedisServer) {
    redis.cli(&["CONFIG", "RESETSTAT"]);
}

/// Calls per command since the last reset, as `INFO commandstats` counts them (commands run inside
/// Lua scripts count too). The probe's own `INFO`/`CONFIG` are left out.
pub fn command_calls(redis: &RedisServer) -> BTreeMap<String, u64> {
    let text = redis.cli(&["INFO", "commandstats"]);
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        if name == "info" || name.starts_with("config") {
            continue;
        }
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.insert(name.to_owned(), calls);
    }
    out
}

/// `MEMORY USAGE` summed over every key (sessions plus any index or per-user set), the number of
/// session keys (strings), and the bytes of the non-string keys (index, sets): bytes per session =
/// total / sessions.
pub fn memory_per_session(redis: &RedisServer) -> (u64, u64) {
    let (total, sessions, _) = memory_breakdown(redis);
    (total, sessions)
}

/// As [`memory_per_session`], with the bytes held by non-string keys (indexes) third.
pub fn memory_breakdown(redis: &RedisServer) -> (u64, u64, u64) {
    const SCRIPT: &str = "local t, n, x = 0, 0, 0 \
        for _, k in ipairs(redis.call('KEYS', '*')) do \
          local m = redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0') or 0 \
          t = t + m \
          if redis.call('TYPE', k).ok == 'string' then n = n + 1 else x = x + m end \
        end \
        return {t, n, x}";
    let out = redis.cli(&["EVAL", SCRIPT, "0"]);
    let mut nums = out.lines().filter_map(|l| l.trim().parse::<u64>().ok());
    (
        nums.next().unwrap_or(0),
        nums.next().unwrap_or(0),
        nums.next().unwrap_or(0),
    )
}

/// One stored value, for showing what a session looks like.
pub fn sample_value(redis: &RedisServer) -> String {
    const SCRIPT: &str = "for _, k in ipairs(redis.call('KEYS', '*')) do \
          if redis.call('TYPE', k).ok == 'string' then \
            return {k, redis.call('GET', k), redis.call('STRLEN', k)} end \
        end \
        return {}";
    redis.cli(&["EVAL", SCRIPT, "0"])
}

/// `calls` divided by `requests`, plus the three busiest commands.
pub fn per_request(calls: &BTreeMap<String, u64>, requests: u64) -> (f64, String) {
    let total: u64 = calls.values().sum();
    let mut top: Vec<(&String, &u64)> = calls.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    let r = requests.max(1) as f64;
    let detail = top
        .iter()
        .take(4)
        .map(|(k, v)| format!("{k} {:.2}", **v as f64 / r))
        .collect::<Vec<_>>()
        .join(", ");
    (total as f64 / r, detail)
}
