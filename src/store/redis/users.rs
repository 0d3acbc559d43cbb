//! The Redis store's per-user index: one sorted set per user, `<prefix>user:<user>` (one per user and
//! shard in cluster mode), holding the store keys of the user's sessions scored by expiry, written by
//! the same script as the session. When the index cannot be trusted (a format that keeps none, or an
//! `allkeys-*` eviction policy that may have evicted a set), a user's sessions are found by `SCAN`.

use super::conn::{backend, Op};
use super::RedisStore;
use crate::id::StoreKey;
use crate::store::{sort_user_sessions, StoreError, Summary};

/// The most sessions of one user the store lists: beyond it, a listing (and a revoke built on it)
/// could not be sure to hold every one, so it is an error instead.
const MAX_USER_SESSIONS: usize = 100_000;
/// Members read per round when listing a user's set.
const USER_CHUNK: usize = 500;

/// `user:<user>` for ids of at most 64 characters from `A-Z a-z 0-9 . _ @ + -` (readable in
/// `redis-cli`), `user:#<sha1 hex of the id>` for any other id (bounded length, no separators or glob
/// characters from client input; `#` never appears in a readable id, so the two cannot collide).
/// Neither form can be a session key (store keys have no `:`).
pub(super) fn user_suffix(user: &str) -> String {
    let readable = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'));
    if readable {
        format!("user:{user}")
    } else {
        format!("user:#{}", sha1_smol::Sha1::from(user.as_bytes()).digest())
    }
}

impl RedisStore {
    /// The user set that holds `key` for `user`.
    pub(super) fn user_key_for(&self, user: &str, key: &StoreKey) -> String {
        self.inner.layout.user_key(&user_suffix(user), key.as_str())
    }

    /// Every live session of `user`, oldest first; with `even_expired`, also those Redis still holds
    /// that this instance's clock thinks are over (what a revoke must reach: another instance's clock
    /// may be behind ours).
    pub(super) async fn sessions_of(
        &self,
        user: &str,
        even_expired: bool,
    ) -> Result<Vec<Summary>, StoreError> {
        let mut sessions = if self.trusts_indexes().await? {
            self.user_sets(user, even_expired).await?
        } else {
            self.scan_user(user, even_expired).await?
        };
        sort_user_sessions(&mut sessions);
        Ok(sessions)
    }

    /// Deletes each of the user's sessions but `keep`, with its user named, one script call each: a
    /// session whose user changed since the listing is left alone (it is someone else's now). As the
    /// provided revoke, lists again for sessions renewed meanwhile (see `provided::revoke`).
    pub(super) async fn revoke(
        &self,
        user: &str,
        keep: Option<&StoreKey>,
    ) -> Result<u64, StoreError> {
        let started = self.inner.config.clock.now();
        let mut deleted = 0;
        for round in 0..crate::store::provided::REVOKE_ROUNDS {
            let mut found = false;
            for s in self.sessions_of(user, true).await? {
                if Some(&s.id) == keep || (round > 0 && s.user_since > started) {
                    continue;
                }
                found = true;
                if self.delete_as(&s.id, Some(user), true).await? {
                    deleted += 1;
                }
            }
            if !found {
                return Ok(deleted);
            }
        }
        Err(StoreError::Conflict)
    }

    /// The user's live sessions found by scanning every session (no index to trust).
    async fn scan_user(&self, user: &str, even_expired: bool) -> Result<Vec<Summary>, StoreError> {
        let mut sessions = Vec::new();
        self.scan_records(even_expired, |key, record| {
            if !record.tombstone && record.user.as_deref() == Some(user) {
                sessions.push(record.summary(key));
            }
        })
        .await?;
        Ok(sessions)
    }

    /// Every live session in the user's sets (one, or one per shard in cluster mode), dropping
    /// members whose session is gone on the way.
    async fn user_sets(&self, user: &str, even_expired: bool) -> Result<Vec<Summary>, StoreError> {
        let mut sessions = Vec::new();
        for ukey in self.inner.layout.user_keys(&user_suffix(user)) {
            self.user_set(&ukey, user, even_expired, &mut sessions)
                .await?;
        }
        Ok(sessions)
    }

    /// The live sessions of one user set (all its members share its hash slot), read in chunks.
    async fn user_set(
        &self,
        ukey: &str,
        user: &str,
        even_expired: bool,
        sessions: &mut Vec<Summary>,
    ) -> Result<(), StoreError> {
        let layout = &self.inner.layout;
        let mut start = 0usize;
        loop {
            let members: Vec<String> = self
                .exec(Op::Cmd(
                    redis::cmd("ZRANGE")
                        .arg(ukey)
                        .arg(start)
                        .arg(start + USER_CHUNK - 1),
                ))
                .await?;
            let names: Vec<String> = members.iter().map(|m| layout.session_key_of(m)).collect();
            let values: Vec<Option<Vec<u8>>> = if names.is_empty() {
                Vec::new()
            } else {
                self.exec(Op::Cmd(redis::cmd("MGET").arg(&names))).await?
            };
            let mut gone: Vec<&String> = Vec::new();
            for ((member, name), value) in members.iter().zip(&names).zip(values) {
                let (Ok(id), Some(v)) = (StoreKey::parse(member), value) else {
                    gone.push(member);
                    continue;
                };
                let loaded = if even_expired {
                    self.decode_stored(name, Some(&v))
                } else {
                    self.decode(name, Some(&v))
                };
                if let Some(l) = loaded {
                    if l.record.user.as_deref() == Some(user) && !l.record.tombstone {
                        sessions.push(l.record.summary(id));
                    }
                }
            }
            let dropped = if gone.is_empty() {
                0
            } else {
                self.drop_stale(ukey, &gone).await? as usize
            };
            if members.len() < USER_CHUNK {
                return Ok(());
            }
            if sessions.len() > MAX_USER_SESSIONS {
                return Err(backend(format!(
                    "the user has more than {MAX_USER_SESSIONS} sessions: too many to list them all"
                )));
            }
            // The dropped members' ranks are gone: the next chunk starts that much earlier.
            start += members.len() - dropped;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_user_ids_stay_readable_and_others_are_hashed() {
        assert_eq!(user_suffix("alice@example.com"), "user:alice@example.com");
        assert_eq!(user_suffix("a b").len(), "user:#".len() + 40);
        assert_eq!(user_suffix(&"x".repeat(65)).len(), "user:#".len() + 40);
        assert_ne!(user_suffix("a*"), user_suffix("a?"));
    }
}
