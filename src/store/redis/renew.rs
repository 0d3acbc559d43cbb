//! Renewal ([`SessionStore::renew`](crate::store::SessionStore::renew)) in one script call on one
//! server and under Sentinel: the old key's version is checked, the new key written and the old one
//! deleted in one atomic step, so a renewal sent twice (its first answer lost with the connection)
//! recognises its own move instead of finding the old key gone and ending the session. A cluster keeps
//! its two keys in different slots and uses the provided create-then-compare-and-delete.

use super::conn::Op;
use super::save::{ttl_ms_at, user_arg};
use super::scripts::scripts;
use super::RedisStore;
use crate::id::StoreKey;
use crate::store::{provided, ChangeSet, Record, Renewed, StoreError, Version, VersionRule};
use std::sync::Arc;

/// What the renew script answered.
enum RenewReply {
    Moved,
    Gone,
    Changed(Vec<u8>),
    WrongUser(Option<String>),
    Taken,
}

impl redis::FromRedisValue for RenewReply {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let items: Vec<redis::Value> = redis::FromRedisValue::from_redis_value(v)?;
        let mut items = items.into_iter();
        let code: i64 = match items.next() {
            Some(v) => redis::FromRedisValue::from_redis_value(v)?,
            None => return Err("empty answer from the renew script".into()),
        };
        match (code, items.next()) {
            (0, _) => Ok(RenewReply::Gone),
            (1, _) => Ok(RenewReply::Moved),
            (2, Some(cur)) => Ok(RenewReply::Changed(
                redis::FromRedisValue::from_redis_value(cur)?,
            )),
            (3, Some(user)) => {
                let user: String = redis::FromRedisValue::from_redis_value(user)?;
                Ok(RenewReply::WrongUser(
                    user.strip_prefix('=').map(str::to_owned),
                ))
            }
            (5, _) => Ok(RenewReply::Taken),
            _ => Err("unexpected answer from the renew script".into()),
        }
    }
}

impl RedisStore {
    /// Moves the session from `old` to `new` with the request's `changes` (see the module docs).
    pub(super) async fn renew_session(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Renewed, StoreError> {
        if self.inner.layout.sharded() {
            return provided::renew(self, old, new, base, ours, changes).await;
        }
        let (old_rkey, new_rkey) = (self.redis_key(old), self.redis_key(new));
        let _uncache_old = self.uncache_after(&old_rkey);
        let _uncache_new = self.uncache_after(&new_rkey);
        let rule = self.format().version_rule();
        let mut expected = base.clone();
        let mut record = Arc::clone(ours);
        // The stored user, when known: the loaded one unless this request changed it.
        let mut believed: Option<Option<String>> = match &changes.user {
            None => Some(ours.user.clone()),
            Some(_) => None,
        };
        for _ in 0..self.inner.config.max_save_attempts.max(1) {
            let reply = self
                .renew_once(
                    old, new, &old_rkey, &new_rkey, &expected, &record, &believed, rule,
                )
                .await?;
            match reply {
                RenewReply::Moved => return Ok(Renewed::Renewed),
                RenewReply::Gone => return Ok(Renewed::Gone),
                RenewReply::Taken => return Err(StoreError::Conflict),
                RenewReply::WrongUser(actual) => believed = Some(actual),
                RenewReply::Changed(current) => {
                    crate::metrics::save_conflict();
                    let current = self.decode(&old_rkey, Some(&current));
                    match provided::merged(current, changes, ours) {
                        Some((r, v)) => {
                            believed = Some(r.user.clone());
                            (record, expected) = (r, v);
                        }
                        None => return Ok(Renewed::Gone),
                    }
                }
            }
        }
        Err(StoreError::Conflict)
    }

    /// One renew script call (sent once more, as a replay, if its connection drops).
    #[allow(clippy::too_many_arguments)]
    async fn renew_once(
        &self,
        old: &StoreKey,
        new: &StoreKey,
        old_rkey: &str,
        new_rkey: &str,
        expected: &Version,
        record: &Arc<Record>,
        believed: &Option<Option<String>>,
        rule: VersionRule,
    ) -> Result<RenewReply, StoreError> {
        let indexed = self.indexed();
        // An unknown stored user: name none, and let the script say whose it is.
        let believed_user = believed.clone().flatten();
        let mut written = Record::clone(record);
        if let VersionRule::LeadingInteger { .. } = rule {
            if let Ok(v) = expected.as_str().parse::<u64>() {
                if written.last_access.as_millis() <= v {
                    written.last_access = crate::expiry::Timestamp::from_millis(v + 1);
                }
            }
        }
        let value = self.format().encode(&written);
        let now = self.now_ms();
        let invocation = |replay: bool| {
            let mut inv = scripts().renew.prepare_invoke();
            inv.key(old_rkey).key(new_rkey);
            if indexed {
                inv.key(self.inner.layout.index_of(old.as_str()));
                if let Some(u) = &believed_user {
                    inv.key(self.user_key_for(u, old));
                }
                if let Some(u) = &written.user {
                    inv.key(self.user_key_for(u, new));
                }
            }
            inv.arg(expected.as_str())
                .arg(&value)
                .arg(ttl_ms_at(written.expires.as_millis(), now))
                .arg(written.expires.as_millis())
                .arg(old.as_str())
                .arg(new.as_str())
                .arg(user_arg(believed_user.as_deref()))
                .arg(user_arg(written.user.as_deref()))
                .arg(match rule {
                    VersionRule::LeadingInteger { prefix } => prefix,
                    _ => "",
                })
                .arg(if indexed { "1" } else { "0" })
                .arg(if replay { "1" } else { "0" });
            inv
        };
        let (first, again) = (invocation(false), invocation(true));
        if self.inner.config.replica_acks.is_some() {
            // Never sent twice with replica acknowledgements (see `write`).
            return self
                .write(Op::Script(&first), |r: &RenewReply| {
                    matches!(r, RenewReply::Moved)
                })
                .await
                .map(|a| a.value);
        }
        self.exec_or_replay(&Op::Script(&first), &Op::Script(&again))
            .await
            .map(|a| a.value)
    }
}
