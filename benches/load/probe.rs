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

/// `MEMORY USAGE` summed over every key (sessions plus any index), and the number of keys whose name
/// does not end in `index`: bytes per session = total / sessions.
pub fn memory_per_session(redis: &RedisServer) -> (u64, u64) {
    const SCRIPT: &str = "local t, n = 0, 0 \
        for _, k in ipairs(redis.call('KEYS', '*')) do \
          t = t + (redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0') or 0) \
          if string.sub(k, -5) ~= 'index' then n = n + 1 end \
        end \
        return {t, n}";
    let out = redis.cli(&["EVAL", SCRIPT, "0"]);
    let mut nums = out.lines().filter_map(|l| l.trim().parse::<u64>().ok());
    let total = nums.next().unwrap_or(0);
    let sessions = nums.next().unwrap_or(0);
    (total, sessions)
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
