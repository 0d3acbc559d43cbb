//! The Redis store as operators see it: health (with memory pressure), memory figures and warnings,
//! `INFO`, and what the eviction policy means for the indexes.

use super::conn::{backend, Op, NAME};
use super::RedisStore;
use crate::store::{human_bytes, Health, StoreError, Usage};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `INFO` parsed into sections: section name (lower case) to field to value.
pub(super) type Info = BTreeMap<String, BTreeMap<String, String>>;

/// How long a read of the eviction policy is trusted.
const POLICY_FRESH: Duration = Duration::from_secs(5);
/// Memory above this share of `maxmemory` is worth a warning, and under `noeviction` makes the store
/// report itself degraded (writes are about to be refused).
const NEARLY_FULL: f64 = 0.9;

/// Parses `INFO` text into sections.
pub(super) fn parse_info(text: &str) -> Info {
    let mut info = Info::new();
    let mut section = String::from("default");
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('#') {
            section = name.trim().to_ascii_lowercase();
            info.entry(section.clone()).or_default();
        } else if let Some((k, v)) = line.split_once(':') {
            info.entry(section.clone())
                .or_default()
                .insert(k.to_owned(), v.to_owned());
        }
    }
    info
}

/// `INFO` as JSON: sections of string fields.
pub(super) fn info_json(info: Info) -> Value {
    Value::Object(
        info.into_iter()
            .map(|(s, fields)| {
                let fields: Map<String, Value> = fields
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                (s, Value::Object(fields))
            })
            .collect(),
    )
}

/// The memory figures of `INFO memory` (and `CONFIG GET` where allowed).
#[derive(Debug, Default, Clone)]
pub(super) struct Memory {
    pub(super) used: u64,
    pub(super) used_human: String,
    /// 0: no limit; `None`: unknown (managed Redis forbidding `CONFIG`, an old `INFO`).
    pub(super) max: Option<u64>,
    pub(super) policy: Option<String>,
    pub(super) evicted_keys: u64,
}

impl Memory {
    /// The share of `maxmemory` in use, when there is a limit.
    fn share(&self) -> Option<f64> {
        self.max
            .filter(|m| *m > 0)
            .map(|m| self.used as f64 / m as f64)
    }

    /// Whether writes are refused or about to be: under `noeviction`, at 90% of `maxmemory` or more.
    fn nearly_full(&self) -> bool {
        self.policy.as_deref() == Some("noeviction")
            && self.share().is_some_and(|s| s >= NEARLY_FULL)
    }

    /// What the operator should know.
    fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(policy) = self.policy.as_deref().filter(|p| p.starts_with("allkeys-")) {
            out.push(format!(
                "Redis maxmemory-policy is {policy}: under memory pressure Redis evicts live sessions \
                 (their users are logged out) and may evict the session index and per-user sets \
                 (counts, listings and revocations then fall back to scanning every key). Use \
                 noeviction (writes fail loudly and the failover store serves from files) or \
                 volatile-ttl."
            ));
        }
        if let Some(share) = self.share().filter(|s| *s >= NEARLY_FULL) {
            out.push(format!(
                "Redis memory is at {:.0}% of maxmemory ({} of {}): new sessions and saves will soon \
                 be refused or evict others.",
                share * 100.0,
                self.used_human,
                human_bytes(self.max.unwrap_or_default())
            ));
        }
        if self.evicted_keys > 0 {
            out.push(format!(
                "Redis has evicted {} keys since it started: evicted sessions are logged out, and \
                 session counts may include them until cleanup.",
                self.evicted_keys
            ));
        }
        out
    }
}

impl RedisStore {
    /// The memory figures (summed over the masters of a cluster).
    pub(super) async fn memory(&self) -> Result<Memory, StoreError> {
        if self.inner.layout.sharded() {
            return self.cluster_memory().await;
        }
        let text: String = self
            .exec(Op::Cmd(redis::cmd("INFO").arg("memory").arg("stats")))
            .await?;
        let mut info = parse_info(&text);
        let mem = info.remove("memory").unwrap_or_default();
        let mut m = Memory {
            used: mem
                .get("used_memory")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| backend("INFO memory has no used_memory"))?,
            used_human: mem.get("used_memory_human").cloned().unwrap_or_default(),
            max: mem.get("maxmemory").and_then(|v| v.parse().ok()),
            policy: mem.get("maxmemory_policy").cloned(),
            evicted_keys: info
                .get("stats")
                .and_then(|s| s.get("evicted_keys"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        };
        if m.max.is_none() || m.policy.is_none() {
            let pairs: Result<Vec<String>, _> = self
                .exec(Op::Cmd(redis::cmd("CONFIG").arg("GET").arg("maxmemory*")))
                .await;
            for kv in pairs.unwrap_or_default().chunks(2) {
                match kv {
                    [k, v] if k == "maxmemory" => m.max = m.max.or(v.parse().ok()),
                    [k, v] if k == "maxmemory-policy" => {
                        m.policy = m.policy.clone().or(Some(v.clone()))
                    }
                    _ => {}
                }
            }
        }
        Ok(m)
    }

    /// Whether the index and user sets can be trusted to list every session: the format keeps them,
    /// and no `allkeys-*` eviction policy can have evicted them (read at most every few seconds).
    pub(super) async fn trusts_indexes(&self) -> Result<bool, StoreError> {
        if !self.indexed() {
            return Ok(false);
        }
        let cached = *self.inner.policy.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, allkeys)) = cached.filter(|(at, _)| at.elapsed() < POLICY_FRESH) {
            let _ = at;
            return Ok(!allkeys);
        }
        let allkeys = self
            .memory()
            .await?
            .policy
            .is_some_and(|p| p.starts_with("allkeys-"));
        *self.inner.policy.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), allkeys));
        Ok(!allkeys)
    }

    /// Whether eviction may have removed index entries or user sets: Redis evicted keys, or its policy
    /// may evict any key.
    pub(super) async fn eviction_seen(&self) -> Result<bool, StoreError> {
        let m = self.memory().await?;
        Ok(m.evicted_keys > 0 || m.policy.is_some_and(|p| p.starts_with("allkeys-")))
    }

    /// Healthy when Redis answers `PING` (and, for a cluster, every master); degraded when it is at
    /// 90% of `maxmemory` or more under `noeviction` (writes are or will soon be refused).
    pub(super) async fn check_health(&self) -> Health {
        if self.inner.layout.sharded() {
            return self.cluster_health().await;
        }
        match self.ping().await {
            Ok(rtt) => {
                let h = Health::ok(NAME)
                    .with_backend(NAME, true)
                    .with_detail(format!("PING {:.1} ms", rtt.as_secs_f64() * 1000.0));
                match self.memory().await {
                    Ok(m) if m.nearly_full() => h.degraded("store full"),
                    _ => h,
                }
            }
            Err(e) => Health::ok(NAME)
                .unavailable("not answering")
                .with_backend(NAME, false)
                .with_detail(e.root_cause()),
        }
    }

    /// `memoryUsage`: `used_memory`, `used_memory_human`, and where known `maxmemory` and
    /// `maxmemory_policy` (as text, as `INFO` writes them), with warnings.
    pub(super) async fn memory_usage(&self) -> Result<Usage, StoreError> {
        let m = self.memory().await?;
        let mut u = Usage::new("memoryUsage")
            .with("used_memory", m.used.to_string())
            .with("used_memory_human", m.used_human.clone());
        if let Some(max) = m.max {
            u = u.with("maxmemory", max.to_string());
        }
        if let Some(policy) = &m.policy {
            u = u.with("maxmemory_policy", policy.clone());
        }
        for w in m.warnings() {
            u = u.warn(w);
        }
        Ok(u)
    }

    /// `{"redis": INFO by section}`; for a cluster, the cluster's table under `redis` and each node's
    /// `INFO` under `nodes`.
    pub(super) async fn server_info(&self) -> Result<Map<String, Value>, StoreError> {
        let mut out = Map::new();
        if self.inner.layout.sharded() {
            out.insert("redis".into(), info_json(self.cluster_info().await?));
            if let Ok(nodes) = self.cluster_node_info().await {
                out.insert(
                    "nodes".into(),
                    Value::Object(
                        nodes
                            .into_iter()
                            .map(|(addr, info)| (addr, info_json(info)))
                            .collect(),
                    ),
                );
            }
            return Ok(out);
        }
        let text: String = self.exec(Op::Cmd(&redis::cmd("INFO"))).await?;
        out.insert("redis".into(), info_json(parse_info(&text)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_text_is_split_into_lower_case_sections() {
        let info = parse_info("# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nused_memory:100\r\nused_memory_human:100B\r\n");
        assert_eq!(info["server"]["redis_version"], "7.0.15");
        assert_eq!(info["memory"]["used_memory_human"], "100B");
        assert_eq!(info_json(info)["memory"]["used_memory"], "100");
    }

    #[test]
    fn warnings_name_allkeys_policies_pressure_and_evictions() {
        let calm = Memory {
            used: 10,
            max: Some(100),
            policy: Some("noeviction".into()),
            ..Default::default()
        };
        assert!(calm.warnings().is_empty() && !calm.nearly_full());
        let pressed = Memory {
            used: 95,
            ..calm.clone()
        };
        assert!(pressed.nearly_full());
        assert!(pressed.warnings()[0].contains("95%"));
        let allkeys = Memory {
            policy: Some("allkeys-lru".into()),
            evicted_keys: 3,
            ..calm
        };
        let w = allkeys.warnings();
        assert!(w[0].contains("allkeys-lru") && w[1].contains("evicted 3 keys"));
        assert!(!allkeys.nearly_full());
    }
}
