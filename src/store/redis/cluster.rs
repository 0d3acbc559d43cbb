//! The Redis store's cluster mode: the work that spans shards and nodes.
//!
//! * **count**: `ZCOUNT` on each of the 64 shard indexes (sent concurrently), summed.
//! * **list**: each shard answers its first `limit + 1` live entries after the cursor (exactly
//!   after: same expiry and a member up to the cursor's are skipped, byte order), and the pages are
//!   merged by (expiry, store key). The result has the order and the cursor format
//!   (`<expiry ms>:<store key>`) of one server, so the admin API cannot tell the difference.
//! * **cleanup**: the index sweeps go shard by shard; the `SCAN` for corrupt values runs on every
//!   master (`SCAN` only sees the keys of the node it runs on).
//! * **health / INFO / memory**: per node, from the cluster's node table (`CLUSTER NODES`), with a
//!   `PING` or `INFO` sent to each node by address.

use super::conn::{backend, map_error, Op, NAME};
use super::managed::{parse_info, Info, Memory};
use super::topology::ClusterNode;
use super::RedisStore;
use crate::store::{Health, StoreError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One node of the cluster as health reports it.
struct NodeHealth {
    address: String,
    role: String,
    /// A master serving slots (one without, such as a node still joining as a replica, serves no
    /// session: its state does not decide the cluster's health).
    serving: bool,
    healthy: bool,
    detail: String,
}

impl RedisStore {
    /// Runs `make(index)` on every shard index concurrently; answers the results in shard order.
    async fn on_every_index<T, F>(&self, make: F) -> Result<Vec<T>, StoreError>
    where
        T: redis::FromRedisValue + Send + 'static,
        F: Fn(&str) -> redis::Cmd,
    {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, index) in self.inner.layout.indexes().iter().enumerate() {
            let cmd = make(index);
            let store = self.clone();
            tasks.spawn(async move { (i, store.exec::<T>(Op::Cmd(&cmd)).await) });
        }
        let mut out: Vec<Option<T>> = (0..tasks.len()).map(|_| None).collect();
        while let Some(done) = tasks.join_next().await {
            let (i, result) = done.map_err(|e| backend(format!("shard task failed: {e}")))?;
            out[i] = Some(result?);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// `cmd` on the node `node`: through the cluster connection for a master, over a one-off
    /// connection for a replica (the cluster connection holds masters only). Bounded by the connect
    /// and command timeouts.
    async fn on_node<T: redis::FromRedisValue>(
        &self,
        node: &ClusterNode,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        if node.role == "master" {
            return self.exec(Op::OnNode(&node.addr, cmd)).await;
        }
        let cfg = &self.inner.config;
        let limit = cfg.connect_timeout + cfg.command_timeout;
        let direct = async {
            let mut conn = super::topology::Connector::direct(cfg, &node.addr).await?;
            cmd.query_async::<T>(&mut conn).await
        };
        match tokio::time::timeout(limit, direct).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(e, cfg.command_timeout)),
            Err(_) => Err(StoreError::Timeout {
                backend: NAME,
                after: limit,
            }),
        }
    }

    /// The cluster's node table (`CLUSTER NODES` from one node).
    pub(super) async fn cluster_nodes(&self) -> Result<Vec<ClusterNode>, StoreError> {
        let text: String = self
            .exec(Op::Cmd(redis::cmd("CLUSTER").arg("NODES")))
            .await?;
        Ok(super::topology::parse_cluster_nodes(&text))
    }

    /// `host:port` of every master that serves slots. An error while a slot-serving master is
    /// marked failed: work that must see every key (the `SCAN` of cleanup) cannot be complete.
    pub(super) async fn cluster_masters(&self) -> Result<Vec<String>, StoreError> {
        let nodes = self.cluster_nodes().await?;
        let masters: Vec<&ClusterNode> = nodes
            .iter()
            .filter(|n| n.role == "master" && n.has_slots)
            .collect();
        if let Some(down) = masters.iter().find(|n| n.failed()) {
            return Err(StoreError::Unavailable {
                backend: NAME,
                source: format!("cluster master {} is marked failed", down.addr).into(),
            });
        }
        Ok(masters.iter().map(|n| n.addr.clone()).collect())
    }

    /// Live sessions: the sum of `ZCOUNT` over the shard indexes.
    pub(super) async fn cluster_count(&self) -> Result<u64, StoreError> {
        let now = format!("({}", self.now_ms());
        let counts: Vec<u64> = self
            .on_every_index(|index| {
                redis::cmd("ZCOUNT")
                    .arg(index)
                    .arg(&now)
                    .arg("+inf")
                    .clone()
            })
            .await?;
        Ok(counts.iter().sum())
    }

    /// The first `want` live entries after (`score`, `member`) over all shards, in (expiry, store
    /// key) order.
    pub(super) async fn cluster_page(
        &self,
        score: &str,
        member: &str,
        want: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let now = self.now_ms();
        let mut tasks = tokio::task::JoinSet::new();
        for index in self.inner.layout.indexes() {
            let store = self.clone();
            let (index, score, member) = (index.clone(), score.to_owned(), member.to_owned());
            tasks.spawn(async move {
                let mut inv = super::scripts::scripts().page.prepare_invoke();
                inv.key(&index).arg(now).arg(want).arg(&score).arg(&member);
                store.exec::<Vec<String>>(Op::Script(&inv)).await
            });
        }
        let mut entries: Vec<(String, u64)> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let flat = done.map_err(|e| backend(format!("shard task failed: {e}")))??;
            entries.extend(flat.chunks(2).filter_map(|p| match p {
                [m, s] => s.parse::<f64>().ok().map(|s| (m.clone(), s as u64)),
                _ => None,
            }));
        }
        entries.sort_by(|a, b| {
            a.1.cmp(&b.1)
                .then_with(|| a.0.as_bytes().cmp(b.0.as_bytes()))
        });
        entries.truncate(want);
        Ok(entries)
    }

    /// Every node of the cluster with our own `PING` to it (concurrently, each bounded by the command
    /// timeout).
    async fn cluster_node_health(&self) -> Result<Vec<NodeHealth>, StoreError> {
        let nodes = self.cluster_nodes().await?;
        let mut tasks = tokio::task::JoinSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let store = self.clone();
            let node = node.clone();
            tasks.spawn(async move {
                let start = Instant::now();
                let pong: Result<String, StoreError> =
                    store.on_node(&node, &redis::cmd("PING")).await;
                (i, pong.map(|_| start.elapsed()))
            });
        }
        let mut pings: Vec<Option<Result<Duration, StoreError>>> =
            (0..nodes.len()).map(|_| None).collect();
        while let Some(Ok((i, r))) = tasks.join_next().await {
            pings[i] = Some(r);
        }
        Ok(nodes
            .into_iter()
            .zip(pings)
            .map(|(n, ping)| {
                let (up, detail) = match ping {
                    Some(Ok(rtt)) if !n.failed() => {
                        (true, format!("PING {:.1} ms", rtt.as_secs_f64() * 1000.0))
                    }
                    Some(Ok(_)) => (false, format!("flagged {} by the cluster", n.flags)),
                    Some(Err(e)) => (false, e.root_cause()),
                    None => (false, "no answer".to_owned()),
                };
                NodeHealth {
                    serving: n.role == "master" && n.has_slots,
                    address: n.addr,
                    role: n.role.to_owned(),
                    healthy: up,
                    detail,
                }
            })
            .collect())
    }

    /// Healthy when the cluster says `cluster_state:ok` and every slot-serving master answers us. Each
    /// node goes to the operators' `nodes` field.
    pub(super) async fn cluster_health(&self) -> Health {
        let down = |detail: String| {
            Health::ok(NAME)
                .unavailable("not answering")
                .with_backend(NAME, false)
                .with_detail(detail)
        };
        let state: Result<String, StoreError> =
            self.exec(Op::Cmd(redis::cmd("CLUSTER").arg("INFO"))).await;
        let state = match state {
            Ok(text) => parse_kv(&text)
                .remove("cluster_state")
                .unwrap_or_else(|| "unknown".into()),
            Err(e) => return down(e.root_cause()),
        };
        let nodes = match self.cluster_node_health().await {
            Ok(n) => n,
            Err(e) => return down(e.root_cause()),
        };
        let masters_up = nodes
            .iter()
            .filter(|n| n.role == "master" && n.healthy)
            .count();
        let masters = nodes.iter().filter(|n| n.role == "master").count();
        let replicas_up = nodes
            .iter()
            .filter(|n| n.role == "replica" && n.healthy)
            .count();
        let replicas = nodes.len() - masters;
        let summary = format!(
            "cluster_state:{state}; masters {masters_up}/{masters} up, replicas {replicas_up}/{replicas} up"
        );
        // A failed master that still owns slots makes the cluster refuse those slots (or, without
        // full coverage, lose them): not healthy.
        let healthy = state == "ok" && nodes.iter().filter(|n| n.serving).all(|n| n.healthy);
        let table: Vec<serde_json::Value> = nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "address": n.address,
                    "role": n.role,
                    "status": if n.healthy { "healthy" } else { "unhealthy" },
                    "detail": n.detail,
                })
            })
            .collect();
        let h = Health::ok(NAME)
            .with_backend(NAME, healthy)
            .with_detail(summary)
            .with_extra("nodes", table);
        if healthy {
            h
        } else {
            h.unavailable("cluster not serving every slot")
        }
    }

    /// `INFO` of every reachable node, keyed by `host:port`; an unreachable node gets an `error`
    /// section.
    pub(super) async fn cluster_node_info(&self) -> Result<BTreeMap<String, Info>, StoreError> {
        let nodes = self.cluster_nodes().await?;
        let mut tasks = tokio::task::JoinSet::new();
        for node in nodes {
            let store = self.clone();
            tasks.spawn(async move {
                let text: Result<String, StoreError> =
                    store.on_node(&node, &redis::cmd("INFO")).await;
                (node.addr, text)
            });
        }
        let mut out = BTreeMap::new();
        while let Some(Ok((addr, text))) = tasks.join_next().await {
            let info = match text {
                Ok(t) => parse_info(&t),
                Err(e) => {
                    let mut info = Info::new();
                    info.entry("error".into())
                        .or_default()
                        .insert("message".into(), e.root_cause());
                    info
                }
            };
            out.insert(addr, info);
        }
        Ok(out)
    }

    /// The cluster-wide part of `/redis-info`: `cluster` (`CLUSTER INFO`) and `nodes`
    /// (`host:port` → role and flags). Per-node `INFO` is [`RedisStore::cluster_node_info`].
    pub(super) async fn cluster_info(&self) -> Result<Info, StoreError> {
        let text: String = self
            .exec(Op::Cmd(redis::cmd("CLUSTER").arg("INFO")))
            .await?;
        let mut info = Info::new();
        info.insert("cluster".into(), parse_kv(&text));
        let nodes = self.cluster_nodes().await?;
        info.insert(
            "nodes".into(),
            nodes
                .into_iter()
                .map(|n| (n.addr, format!("{} {}", n.role, n.flags)))
                .collect(),
        );
        Ok(info)
    }

    /// Memory of the masters, summed (replicas hold copies of the same data).
    pub(super) async fn cluster_memory(&self) -> Result<Memory, StoreError> {
        let masters = self.cluster_masters().await?;
        let mut m = Memory {
            max: Some(0),
            ..Memory::default()
        };
        for addr in &masters {
            let text: String = self
                .exec(Op::OnNode(
                    addr,
                    redis::cmd("INFO").arg("memory").arg("stats"),
                ))
                .await?;
            let mut info = parse_info(&text);
            let mem = info.remove("memory").unwrap_or_default();
            m.used += mem
                .get("used_memory")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| backend(format!("INFO memory of {addr} has no used_memory")))?;
            m.max = match (
                m.max,
                mem.get("maxmemory").and_then(|v| v.parse::<u64>().ok()),
            ) {
                (Some(total), Some(max)) => Some(total + max),
                _ => None,
            };
            m.policy = m.policy.or_else(|| mem.get("maxmemory_policy").cloned());
            m.evicted_keys += info
                .get("stats")
                .and_then(|s| s.get("evicted_keys"))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        m.used_human = crate::store::human_bytes(m.used);
        Ok(m)
    }
}

/// `key:value` lines (`CLUSTER INFO`).
fn parse_kv(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_info_lines_become_a_map() {
        let m = parse_kv("cluster_state:ok\r\ncluster_slots_ok:16384\r\n");
        assert_eq!(m["cluster_state"], "ok");
        assert_eq!(m["cluster_slots_ok"], "16384");
    }

    #[test]
    fn memory_reads_like_used_memory_human() {
        use crate::store::human_bytes as human;
        assert_eq!(human(1000), "1000B");
        assert_eq!(human(1536), "1.50K");
        assert_eq!(human(3 * 1024 * 1024), "3.00M");
    }
}
