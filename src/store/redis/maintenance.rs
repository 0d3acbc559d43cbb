//! The Redis store's admin side over its sessions: count, listing pages, cleanup, and the cursor-paged
//! `SCAN` used where the index cannot be trusted (never `KEYS`).

use super::conn::{backend, Op};
use super::scripts::scripts;
use super::RedisStore;
use crate::id::StoreKey;
use crate::store::{Page, Record, StoreError, Summary};

/// Batch size of `SCAN`, `ZSCAN` and the trim.
const SWEEP_BATCH: usize = 1000;
/// The largest page a listing fetches at once.
const MAX_PAGE: usize = 10_000;
/// The most keys one scan visits before giving up: beyond it, an answer built from a scan (a user's
/// sessions for a revoke) could not be sure, so it is an error instead.
const MAX_SCANNED: u64 = 5_000_000;
/// How a scan-based listing cursor starts (index cursors are `<expiry>:<store key>`).
const SCAN_CURSOR: &str = "s:";

/// Escapes the glob characters of a `SCAN MATCH` pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStore {
    /// The nodes a scan must visit: every master of a cluster, or the one server (`None`).
    async fn scan_nodes(&self) -> Result<Vec<Option<String>>, StoreError> {
        Ok(if self.inner.layout.sharded() {
            self.cluster_masters()
                .await?
                .into_iter()
                .map(Some)
                .collect()
        } else {
            vec![None]
        })
    }

    /// One `SCAN` step on `node` for keys under the prefix: the next cursor and the session keys found
    /// (index and user-set keys, and foreign keys, are left out).
    async fn scan_step(
        &self,
        node: Option<&str>,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, StoreKey)>), StoreError> {
        let pattern = format!("{}*", glob_escape(&self.inner.config.prefix));
        let (next, keys) = self
            .scan_matching(node, cursor, &pattern, None, count)
            .await?;
        let layout = &self.inner.layout;
        let format = self.format();
        // Only names the format could have written: anything else under the prefix is someone else's.
        let ours = keys
            .into_iter()
            .filter_map(|k| layout.store_key_of(&k).map(|id| (k, id)))
            .filter(|(_, id)| format.accepts_key(id))
            .collect();
        Ok((next, ours))
    }

    /// One `SCAN … MATCH pattern` step on `node` (only keys of `kind`, when given): the next cursor
    /// and the keys found.
    async fn scan_matching(
        &self,
        node: Option<&str>,
        cursor: u64,
        pattern: &str,
        kind: Option<&str>,
        count: usize,
    ) -> Result<(u64, Vec<String>), StoreError> {
        let mut scan = redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count);
        if let Some(kind) = kind {
            scan.arg("TYPE").arg(kind);
        }
        match node {
            Some(addr) => self.exec(Op::OnNode(addr, &scan)).await,
            None => self.exec(Op::Cmd(&scan)).await,
        }
    }

    /// The values of `keys` (all on one node in cluster mode: the keys a `SCAN` step found there).
    async fn values(
        &self,
        node: Option<&str>,
        keys: &[(String, StoreKey)],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if node.is_some() {
            // Different hash slots: one call each (an admin path). `MGET` of one key rather than
            // `GET`: nil for a value of another type, as below, instead of an error.
            let mut out = Vec::with_capacity(keys.len());
            for (k, _) in keys {
                let mut one: Vec<Option<Vec<u8>>> =
                    self.exec(Op::Cmd(redis::cmd("MGET").arg(k))).await?;
                out.push(one.pop().flatten());
            }
            return Ok(out);
        }
        let names: Vec<&String> = keys.iter().map(|(k, _)| k).collect();
        self.exec(Op::Cmd(redis::cmd("MGET").arg(&names))).await
    }

    /// Calls `visit` with every live record under the prefix (tombstones included), by `SCAN`.
    /// Bounded: more keys than [`MAX_SCANNED`] is an error rather than a partial answer.
    pub(super) async fn scan_records(
        &self,
        even_expired: bool,
        mut visit: impl FnMut(StoreKey, Record),
    ) -> Result<(), StoreError> {
        let mut scanned = 0u64;
        for node in self.scan_nodes().await? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_step(node.as_deref(), cursor, SWEEP_BATCH).await?;
                scanned += keys.len() as u64;
                if scanned > MAX_SCANNED {
                    return Err(backend(format!(
                        "more than {MAX_SCANNED} keys under the prefix: a scan cannot answer for all of them"
                    )));
                }
                let values = self.values(node.as_deref(), &keys).await?;
                for ((rkey, id), value) in keys.into_iter().zip(values) {
                    let loaded = if even_expired {
                        self.decode_stored(&rkey, value.as_deref())
                    } else {
                        self.decode(&rkey, value.as_deref())
                    };
                    if let Some(l) = loaded {
                        visit(id, std::sync::Arc::unwrap_or_clone(l.record));
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// Live sessions: `ZCOUNT <prefix>index (now +inf` (O(log n)), or a scan when the index cannot be
    /// trusted.
    pub(super) async fn count_sessions(&self) -> Result<u64, StoreError> {
        if !self.trusts_indexes().await? {
            let mut n = 0;
            self.scan_records(false, |_, r| n += u64::from(!r.tombstone))
                .await?;
            return Ok(n);
        }
        if self.inner.layout.sharded() {
            return self.cluster_count().await;
        }
        self.exec(Op::Cmd(
            redis::cmd("ZCOUNT")
                .arg(&self.inner.layout.indexes()[0])
                .arg(format!("({}", self.now_ms()))
                .arg("+inf"),
        ))
        .await
    }

    /// One page of live sessions: from the index, ordered by expiry then store key (the cursor is
    /// `<expiry ms>:<store key>` of the last entry shown), or by `SCAN` where the index cannot be
    /// trusted (the cursor is `s:<node>:<scan cursor>`; a scan may show an entry twice).
    pub(super) async fn list_sessions(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let limit = limit.min(MAX_PAGE);
        if limit == 0 {
            return Ok(Page::default());
        }
        let scanning = cursor.is_some_and(|c| c.starts_with(SCAN_CURSOR));
        if scanning || !self.trusts_indexes().await? {
            return self.scan_page(cursor, limit).await;
        }
        self.index_page(cursor, limit).await
    }

    async fn index_page(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let (score, member) = match cursor {
            None => (String::new(), String::new()),
            Some(c) => {
                let parsed = c.split_once(':').and_then(|(s, m)| {
                    let s: u64 = s.parse().ok()?;
                    StoreKey::parse(m).ok()?;
                    Some((s.to_string(), m.to_owned()))
                });
                parsed.ok_or(StoreError::InvalidCursor)?
            }
        };
        let entries: Vec<(String, u64)> = if self.inner.layout.sharded() {
            self.cluster_page(&score, &member, limit + 1).await?
        } else {
            let mut inv = scripts().page.prepare_invoke();
            inv.key(&self.inner.layout.indexes()[0])
                .arg(self.now_ms())
                .arg(limit + 1)
                .arg(score)
                .arg(member);
            let flat: Vec<String> = self.exec(Op::Script(&inv)).await?;
            flat.chunks(2)
                .filter_map(|p| match p {
                    [m, s] => s.parse::<f64>().ok().map(|s| (m.clone(), s as u64)),
                    _ => None,
                })
                .collect()
        };
        let more = entries.len() > limit;
        let shown = &entries[..entries.len().min(limit)];
        let next_cursor = if more {
            shown.last().map(|(m, s)| format!("{s}:{m}"))
        } else {
            None
        };
        let layout = &self.inner.layout;
        let names: Vec<String> = shown
            .iter()
            .map(|(m, _)| layout.session_key_of(m))
            .collect();
        let values: Vec<Option<Vec<u8>>> = if names.is_empty() {
            Vec::new()
        } else {
            self.exec(Op::Cmd(redis::cmd("MGET").arg(&names))).await?
        };
        let mut sessions = Vec::with_capacity(shown.len());
        let mut gone = Vec::new();
        for (((member, _), name), value) in shown.iter().zip(&names).zip(values) {
            let Ok(id) = StoreKey::parse(member) else {
                gone.push(member.clone());
                continue;
            };
            match value {
                None => gone.push(member.clone()),
                Some(v) => {
                    sessions.extend(self.decode(name, Some(&v)).map(|l| l.record.summary(id)))
                }
            }
        }
        // Lazily drop index entries whose session is gone (one call per index: in cluster mode a
        // shard's entries share its slot). A failure here only delays it.
        let mut by_index: std::collections::BTreeMap<&str, Vec<&String>> = Default::default();
        for m in &gone {
            by_index.entry(layout.index_of(m)).or_default().push(m);
        }
        for (index, members) in by_index {
            if let Err(e) = self.drop_stale(index, &members).await {
                tracing::debug!(error = %e, "could not drop stale index entries");
            }
        }
        Ok(Page::new(sessions, next_cursor))
    }

    /// A page by `SCAN`: sessions from the cursor on, node by node, until `limit` are found or the
    /// scan ends. The cursor is where the last `SCAN` batch began and how many of its keys were shown,
    /// so a page never holds more than `limit`; a batch scanned again can differ while Redis rehashes,
    /// so such a listing may repeat or miss an entry then.
    async fn scan_page(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        let nodes = self.scan_nodes().await?;
        let (mut node, mut at, mut skip) = match cursor {
            None => (0usize, 0u64, 0usize),
            Some(c) => {
                let parsed = c.strip_prefix(SCAN_CURSOR).and_then(|rest| {
                    let mut parts = rest.split(':');
                    let node = parts.next()?.parse().ok()?;
                    let at = parts.next()?.parse().ok()?;
                    let skip = parts.next().map_or(Some(0), |s| s.parse().ok())?;
                    parts.next().is_none().then_some((node, at, skip))
                });
                parsed.ok_or(StoreError::InvalidCursor)?
            }
        };
        let mut sessions: Vec<Summary> = Vec::new();
        while node < nodes.len() {
            let here = nodes[node].as_deref();
            let (next, keys) = self.scan_step(here, at, limit.min(SWEEP_BATCH)).await?;
            let values = self.values(here, &keys).await?;
            let batch = keys.len();
            for (i, ((rkey, id), value)) in keys.into_iter().zip(values).enumerate().skip(skip) {
                if let Some(l) = self.decode(&rkey, value.as_deref()) {
                    sessions.push(l.record.summary(id));
                }
                if sessions.len() == limit && i + 1 < batch {
                    let cursor = format!("{SCAN_CURSOR}{node}:{at}:{}", i + 1);
                    return Ok(Page::new(sessions, Some(cursor)));
                }
            }
            skip = 0;
            if next == 0 {
                node += 1;
                at = 0;
            } else {
                at = next;
            }
            if sessions.len() == limit {
                break;
            }
        }
        let next_cursor = (node < nodes.len()).then(|| format!("{SCAN_CURSOR}{node}:{at}:0"));
        Ok(Page::new(sessions, next_cursor))
    }

    /// Removes `members` from the sorted set `set` (the index or a user set) where their session key
    /// does not exist, checked atomically: a session created meanwhile under the same key stays.
    pub(super) async fn drop_stale<M: AsRef<str>>(
        &self,
        set: &str,
        members: &[M],
    ) -> Result<u64, StoreError> {
        let mut inv = scripts().repair.prepare_invoke();
        inv.key(set);
        for m in members {
            // In cluster mode `set` is a shard's and every member is in that shard: one slot.
            inv.key(self.inner.layout.session_key_of(m.as_ref()))
                .arg(m.as_ref());
        }
        self.exec(Op::Script(&inv)).await
    }

    /// Removes what Redis does not expire by itself: index entries of expired or vanished sessions,
    /// and values under the prefix that are not session records; and, when eviction may have removed
    /// index entries or user sets, puts live sessions back into them. Works in batches, never blocking
    /// Redis for long.
    pub(super) async fn clean_up(&self) -> Result<u64, StoreError> {
        let (expired, orphans) = if self.indexed() {
            let expired = self.trim_expired().await?;
            let mut orphans = 0;
            for index in self.inner.layout.indexes() {
                orphans += self.prune_set(index).await?;
            }
            let user_entries = self.prune_user_sets().await?;
            tracing::debug!(user_entries, "stale user-set entries removed");
            (expired, orphans)
        } else {
            (0, 0)
        };
        let repair = self.indexed() && self.eviction_seen().await?;
        let (corrupt, reindexed) = self.sweep_values(repair).await?;
        tracing::info!(
            expired,
            orphans,
            corrupt,
            reindexed,
            "Redis session cleanup done"
        );
        Ok(expired + orphans + corrupt)
    }

    /// Removes index entries of expired sessions, in batches; answers how many.
    async fn trim_expired(&self) -> Result<u64, StoreError> {
        let now = self.now_ms();
        let mut removed = 0u64;
        for index in self.inner.layout.indexes() {
            loop {
                let mut inv = scripts().trim.prepare_invoke();
                inv.key(index).arg(now).arg(SWEEP_BATCH);
                let n: u64 = self.exec(Op::Script(&inv)).await?;
                removed += n;
                if (n as usize) < SWEEP_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Removes the members of the sorted set `set` (an index or a user set) whose session is gone
    /// (expired, evicted, deleted behind the store's back); answers how many. A set left empty is gone
    /// with its last member.
    async fn prune_set(&self, set: &str) -> Result<u64, StoreError> {
        let layout = &self.inner.layout;
        let mut removed = 0u64;
        let mut cursor: u64 = 0;
        loop {
            let (next, items): (u64, Vec<String>) = self
                .exec(Op::Cmd(
                    redis::cmd("ZSCAN")
                        .arg(set)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(SWEEP_BATCH),
                ))
                .await?;
            let members: Vec<&String> = items.iter().step_by(2).collect();
            if !members.is_empty() {
                // One pipeline per set: in cluster mode its sessions share its hash slot.
                let mut pipe = redis::pipe();
                for m in &members {
                    pipe.cmd("EXISTS").arg(layout.session_key_of(m));
                }
                let exists: Vec<i64> = self.exec(Op::Pipe(&pipe)).await?;
                let gone: Vec<&String> = members
                    .iter()
                    .zip(exists)
                    .filter(|(_, e)| *e == 0)
                    .map(|(m, _)| *m)
                    .collect();
                if !gone.is_empty() {
                    removed += self.drop_stale(set, &gone).await?;
                }
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Prunes every user set (they have no TTL: the set of a user who never comes back goes once its
    /// last session has); answers how many members went.
    async fn prune_user_sets(&self) -> Result<u64, StoreError> {
        let prefix = glob_escape(&self.inner.config.prefix);
        let pattern = if self.inner.layout.sharded() {
            format!("{prefix}{{?}}user:*")
        } else {
            format!("{prefix}user:*")
        };
        let mut removed = 0;
        for node in self.scan_nodes().await? {
            let mut cursor = 0;
            loop {
                let (next, sets) = self
                    .scan_matching(node.as_deref(), cursor, &pattern, Some("zset"), SWEEP_BATCH)
                    .await?;
                for set in &sets {
                    removed += self.prune_set(set).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Scans every value under the prefix: deletes those that are not session records, and with
    /// `repair`, puts each live session back into the index and its user set (eviction may have
    /// removed them). Answers (corrupt values removed, sessions re-indexed).
    async fn sweep_values(&self, repair: bool) -> Result<(u64, u64), StoreError> {
        let (mut removed, mut reindexed) = (0u64, 0u64);
        for node in self.scan_nodes().await? {
            let mut cursor = 0;
            loop {
                let (next, keys) = self.scan_step(node.as_deref(), cursor, SWEEP_BATCH).await?;
                let values = self.values(node.as_deref(), &keys).await?;
                for ((rkey, id), value) in keys.iter().zip(values) {
                    let record = match value {
                        Some(v) => self.format().decode(&v).ok(),
                        // MGET answers nil for a missing key and for a non-string one.
                        None => {
                            let t: String =
                                self.exec(Op::Cmd(redis::cmd("TYPE").arg(rkey))).await?;
                            if t == "none" || t == "string" {
                                continue;
                            }
                            None
                        }
                    };
                    match record {
                        None => {
                            let n = u64::from(self.delete_as(id, None, false).await?);
                            if n > 0 {
                                tracing::info!(key = %rkey, "cleanup removed a corrupt session value");
                            }
                            removed += n;
                        }
                        Some(r) if repair => reindexed += self.reindex(id, rkey, &r).await?,
                        Some(_) => {}
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok((removed, reindexed))
    }

    /// Puts a live session back into the index and its user set; answers 1 when it was missing there.
    async fn reindex(&self, id: &StoreKey, rkey: &str, record: &Record) -> Result<u64, StoreError> {
        let layout = &self.inner.layout;
        let mut inv = scripts().reindex.prepare_invoke();
        inv.key(rkey).key(layout.index_of(id.as_str()));
        if let Some(user) = &record.user {
            inv.key(self.user_key_for(user, id));
        }
        inv.arg(id.as_str()).arg(record.expires.as_millis());
        self.exec(Op::Script(&inv)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("djforge:sess:"), "djforge:sess:");
    }
}
