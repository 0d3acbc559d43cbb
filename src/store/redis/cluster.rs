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

use super::topology::ClusterNode;
use super::{backend, parse_info, Op, RedisStore};
use crate::store::{NodeHealth, RedisInfo, StoreError, StoreHealth, StoreKind, Usage};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
            Ok(Err(e)) => Err(super::map_error(e, cfg.command_timeout)),
            Err(_) => Err(StoreError::Timeout {
                backend: StoreKind::Redis,
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
                backend: StoreKind::Redis,
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
    pub(super) async fn cluster_node_health(&self) -> Result<Vec<NodeHealth>, StoreError> {
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
                    address: n.addr,
                    role: n.role.to_owned(),
                    healthy: up,
                    detail: Some(detail),
                }
            })
            .collect())
    }

    /// Healthy when the cluster says `cluster_state:ok` and every slot-serving master answers us.
    pub(super) async fn cluster_health(&self) -> StoreHealth {
        let down = |detail: String| StoreHealth {
            serving: StoreKind::Redis,
            healthy: false,
            redis_healthy: Some(false),
            detail: Some(detail),
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
            "cluster_state:{state}; masters {masters_up}/{masters} up, replicas {replicas_up}/{replicas} up; {}",
            nodes
                .iter()
                .map(|n| format!(
                    "{} {} {}",
                    n.address,
                    n.role,
                    if n.healthy { "up" } else { "down" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        // A failed master that still owns slots makes the cluster refuse those slots (or, without
        // full coverage, lose them): not healthy.
        let healthy = state == "ok"
            && nodes
                .iter()
                .filter(|n| n.role == "master")
                .all(|n| n.healthy);
        StoreHealth {
            serving: StoreKind::Redis,
            healthy,
            redis_healthy: Some(healthy),
            detail: Some(summary),
        }
    }

    /// `INFO` of every reachable node, keyed by `host:port`; an unreachable node gets an `error`
    /// section.
    pub(super) async fn cluster_node_info(
        &self,
    ) -> Result<BTreeMap<String, RedisInfo>, StoreError> {
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
                    let mut info = RedisInfo::new();
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
    pub(super) async fn cluster_info(&self) -> Result<RedisInfo, StoreError> {
        let text: String = self
            .exec(Op::Cmd(redis::cmd("CLUSTER").arg("INFO")))
            .await?;
        let mut info = RedisInfo::new();
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
    pub(super) async fn cluster_usage(&self) -> Result<Usage, StoreError> {
        let masters = self.cluster_masters().await?;
        let mut used = 0u64;
        let mut max = Some(0u64);
        let mut policy = None;
        for addr in &masters {
            let text: String = self
                .exec(Op::OnNode(addr, redis::cmd("INFO").arg("memory")))
                .await?;
            let mem = parse_info(&text).remove("memory").unwrap_or_default();
            used += mem
                .get("used_memory")
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| backend(format!("INFO memory of {addr} has no used_memory")))?;
            max = match (
                max,
                mem.get("maxmemory").and_then(|v| v.parse::<u64>().ok()),
            ) {
                (Some(total), Some(m)) => Some(total + m),
                _ => None,
            };
            policy = policy.or_else(|| mem.get("maxmemory_policy").cloned());
        }
        Ok(Usage::Redis {
            used_memory: used,
            used_memory_human: crate::store::human_bytes(used),
            maxmemory: max,
            maxmemory_policy: policy,
        })
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
