//! The Redis store's write path: create, compare-and-swap, save a change-set, delete, each one script
//! call (see `scripts.rs`), with the read cache kept fresh and replica acknowledgements waited for.

use super::conn::{backend, Answer, Attempt, Op, NAME};
use super::scripts::scripts;
use super::RedisStore;
use crate::id::StoreKey;
use crate::store::provided::target;
use crate::store::{ChangeSet, Created, Record, Replaced, Saved, StoreError, Version, VersionRule};
use redis::ScriptInvocation;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// The longest TTL the store sets (a hundred years): Redis refuses an expiry past `i64::MAX`
/// milliseconds, and a record may say anything (a hostile or corrupt value copied back at failback).
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The TTL for a record expiring at `expires_ms`, at `now_ms`: the time left, at least 1 ms (Redis
/// refuses `PX 0`).
pub(super) fn ttl_ms_at(expires_ms: u64, now_ms: u64) -> u64 {
    expires_ms.saturating_sub(now_ms).clamp(1, MAX_TTL_MS)
}

/// A user as the scripts take it: `''` for none, `'=' .. user` otherwise.
pub(super) fn user_arg(user: Option<&str>) -> String {
    user.map_or_else(String::new, |u| format!("={u}"))
}

/// A user as the scripts answer it.
fn parse_user_arg(v: &str) -> Option<String> {
    v.strip_prefix('=').map(str::to_owned)
}

/// The arguments of the save script, by name (its `ARGV`, in order).
struct SaveArgs<'a> {
    /// The version the stored value must still have.
    expected: &'a str,
    /// The value to write.
    value: &'a [u8],
    /// Its TTL, ms.
    ttl_ms: u64,
    /// Its expiry (the index score), ms since the epoch.
    expires_ms: u64,
    /// The session's store key (the index member).
    member: &'a str,
    /// The stored user as the caller believes it (see [`user_arg`]).
    believed_user: &'a str,
    /// The user of the value written.
    new_user: &'a str,
    /// Whether the script must check the stored user (the caller does not know it).
    check_user: bool,
    now_ms: u64,
    /// The expiry is the stored one: the index and an unchanged user's set are left alone.
    expiry_kept: bool,
    /// What precedes the version integer in a stored value; `""`: the version is the value's digest.
    version_prefix: &'a str,
    indexed: bool,
    /// The same write sent again: an earlier attempt's connection dropped before its answer.
    replay: bool,
}

impl SaveArgs<'_> {
    fn push_to(&self, out: &mut ScriptInvocation<'_>) {
        let flag = |on: bool| if on { "1" } else { "0" };
        out.arg(self.expected)
            .arg(self.value)
            .arg(self.ttl_ms)
            .arg(self.expires_ms)
            .arg(self.member)
            .arg(self.believed_user)
            .arg(self.new_user)
            .arg(flag(self.check_user))
            .arg(self.now_ms)
            .arg(flag(self.expiry_kept))
            .arg(self.version_prefix)
            .arg(flag(self.indexed))
            .arg(flag(self.replay));
    }
}

/// What a save script answered.
enum SaveReply {
    Gone,
    Saved,
    Changed(Vec<u8>),
    /// The stored value belongs to this user (not the one the call named).
    WrongUser(Option<String>),
    /// A replay found the new value already stored: the first attempt landed, or another writer
    /// wrote the very same bytes.
    AlreadyThere,
}

impl redis::FromRedisValue for SaveReply {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let items: Vec<redis::Value> = redis::FromRedisValue::from_redis_value(v)?;
        let mut items = items.into_iter();
        let code: i64 = match items.next() {
            Some(v) => redis::FromRedisValue::from_redis_value(v)?,
            None => return Err("empty answer from the save script".into()),
        };
        match (code, items.next()) {
            (0, _) => Ok(SaveReply::Gone),
            (1, _) => Ok(SaveReply::Saved),
            (2, Some(cur)) => Ok(SaveReply::Changed(redis::FromRedisValue::from_redis_value(
                cur,
            )?)),
            (3, Some(user)) => {
                let user: String = redis::FromRedisValue::from_redis_value(user)?;
                Ok(SaveReply::WrongUser(parse_user_arg(&user)))
            }
            (4, _) => Ok(SaveReply::AlreadyThere),
            _ => Err("unexpected answer from the save script".into()),
        }
    }
}

/// What a delete script answered.
enum DeleteReply {
    Deleted(bool),
    WrongUser(Option<String>),
    Changed,
}

/// The record to write over the stored version `expected`, with a `last_access` past it when the
/// format's version is that integer (so the version moves, whatever the caller passed).
fn past<'r>(
    record: &'r Arc<Record>,
    expected: &Version,
    rule: VersionRule,
) -> Cow<'r, Arc<Record>> {
    let stored = match rule {
        VersionRule::LeadingInteger { .. } => expected.as_str().parse::<u64>().ok(),
        _ => None,
    };
    match stored {
        Some(v) if record.last_access.as_millis() <= v => {
            let mut r = Record::clone(record);
            r.last_access = crate::expiry::Timestamp::from_millis(v.saturating_add(1));
            Cow::Owned(Arc::new(r))
        }
        _ => Cow::Borrowed(record),
    }
}

/// `record` with a fresh [`Record::write_mark`] when `changes` has increments (which must not land
/// twice: see the replay in [`RedisStore::run_save`]), as it is otherwise.
fn marked<'r>(record: Cow<'r, Arc<Record>>, changes: &ChangeSet) -> Cow<'r, Arc<Record>> {
    if changes.increments.is_empty() {
        return record;
    }
    let mut r = Record::clone(&record);
    r.write_mark = Some(crate::id::Token::random(12).as_str().to_owned());
    Cow::Owned(Arc::new(r))
}

/// The script argument for a format's version rule.
fn version_prefix(rule: VersionRule) -> &'static str {
    match rule {
        VersionRule::LeadingInteger { prefix } => prefix,
        _ => "",
    }
}

impl RedisStore {
    /// Runs a write. With replica acknowledgements configured, on one connection, never sent twice
    /// (a second `WAIT` on a fresh connection would count replicas of nothing), then `WAIT` on that
    /// same connection when `wrote` says it wrote: too few replicas in time is `Unavailable`.
    pub(super) async fn write<T: redis::FromRedisValue>(
        &self,
        op: Op<'_>,
        wrote: impl Fn(&T) -> bool,
    ) -> Result<Answer<T>, StoreError> {
        let Some((replicas, timeout)) = self.inner.config.replica_acks else {
            return self.exec_retrying(op).await;
        };
        let conn = self.conn().await?;
        let value: T = self
            .exec_on(conn.clone(), &op)
            .await
            .map_err(unknown("the write"))?;
        if wrote(&value) {
            let mut wait = redis::cmd("WAIT");
            wait.arg(replicas).arg(timeout.as_millis() as u64);
            let got: u32 = self
                .exec_on(conn, &Op::Cmd(&wait))
                .await
                .map_err(unknown("WAIT"))?;
            if got < replicas {
                return Err(StoreError::Unavailable {
                    backend: NAME,
                    source: format!(
                        "the write reached {got} of {replicas} replicas within {timeout:?}; \
                         it may not survive a failover"
                    )
                    .into(),
                });
            }
        }
        Ok(Answer {
            value,
            retried: false,
        })
    }

    /// `SET NX`, indexed (see the create script).
    pub(super) async fn create_record(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> Result<Created, StoreError> {
        let rkey = self.redis_key(key);
        let _uncache = self.uncache_after(&rkey);
        let layout = &self.inner.layout;
        // A tombstone (a failover's outage marker) is no session: never counted or listed by index.
        let indexed = self.indexed() && !record.tombstone;
        let mut inv = scripts().create.prepare_invoke();
        inv.key(&rkey);
        if indexed {
            inv.key(layout.index_of(key.as_str()));
            if let Some(user) = &record.user {
                inv.key(self.user_key_for(user, key));
            }
        }
        let now = self.now_ms();
        inv.arg(self.format().encode(record))
            .arg(ttl_ms_at(record.expires.as_millis(), now))
            .arg(record.expires.as_millis())
            .arg(key.as_str())
            .arg(now)
            .arg(if indexed { "1" } else { "0" });
        let stored: i64 = self.write(Op::Script(&inv), |n: &i64| *n == 1).await?.value;
        Ok(if stored == 1 {
            Created::Created
        } else {
            Created::Exists
        })
    }

    /// Compare-and-swap ([`SessionStore::replace`](crate::store::SessionStore::replace)).
    pub(super) async fn replace_record(
        &self,
        key: &StoreKey,
        expected: &Version,
        record: Option<&Record>,
    ) -> Result<Replaced, StoreError> {
        let Some(record) = record else {
            return Ok(match self.delete_checked(key, Some(expected)).await? {
                DeleteReply::Deleted(true) => Replaced::Replaced,
                DeleteReply::Deleted(false) => Replaced::Gone,
                _ => Replaced::Changed,
            });
        };
        let rkey = self.redis_key(key);
        let _uncache = self.uncache_after(&rkey);
        let rule = self.format().version_rule();
        let record = Arc::new(record.clone());
        let record = past(&record, expected, rule);
        let mut stored_user: Option<Option<String>> = None;
        for _ in 0..3 {
            match self
                .run_save(key, &rkey, expected, &record, &stored_user, false)
                .await?
            {
                // A replay finding its value: the record is what `replace` meant to leave.
                (SaveReply::Saved | SaveReply::AlreadyThere, _) => return Ok(Replaced::Replaced),
                (SaveReply::Gone, _) => return Ok(Replaced::Gone),
                (SaveReply::Changed(_), false) => return Ok(Replaced::Changed),
                (SaveReply::Changed(_), true) => return Err(outcome_unknown()),
                (SaveReply::WrongUser(actual), _) => stored_user = Some(actual),
            }
        }
        Err(backend(
            "replace kept finding a different user on the session",
        ))
    }

    /// Applies `changes` ([`SessionStore::save`](crate::store::SessionStore::save)): one script call
    /// when nothing changed since the load, a merge and another call otherwise.
    pub(super) async fn save_changes(
        &self,
        key: &StoreKey,
        base: &Version,
        ours: &Arc<Record>,
        changes: &ChangeSet,
    ) -> Result<Saved, StoreError> {
        let rkey = self.redis_key(key);
        let _uncache = self.uncache_after(&rkey);
        let _turn = self.save_turn(key).await;
        let rule = self.format().version_rule();
        let max_attempts = self.inner.config.max_save_attempts;
        let mut expected = base.clone();
        // Ours until a conflict makes a merged copy.
        let mut record: Cow<'_, Arc<Record>> = Cow::Borrowed(ours);
        // The user the stored value belongs to, when known: unless this request changed the user, the
        // loaded one, which `ours` still carries (and the version check proves it is still stored).
        // When it changed, the script checks the stored value and answers the right one.
        let mut stored_user: Option<Option<String>> = match &changes.user {
            None => Some(ours.user.clone()),
            Some(_) => None,
        };
        let mut kept = changes.expiry_kept;
        let mut attempt = 0u32;
        let mut wrong_user_guesses = 0;
        while attempt < max_attempts {
            if target(&record, changes).is_none() {
                // The changes leave the session empty: remove it, if it is still the one merged into.
                match self.delete_checked(key, Some(&expected)).await? {
                    DeleteReply::Deleted(true) => return Ok(Saved::Emptied),
                    DeleteReply::Deleted(false) => return Ok(Saved::Gone),
                    _ => {
                        // Changed meanwhile: read what is there and merge into it.
                        crate::metrics::save_conflict();
                        let current = crate::store::SessionStore::load(self, key).await?;
                        match crate::store::provided::merged(current, changes, ours) {
                            Some((r, v)) => {
                                stored_user = Some(r.user.clone());
                                record = Cow::Owned(r);
                                expected = v;
                                kept = false;
                            }
                            None => return Ok(Saved::Gone),
                        }
                    }
                }
            } else {
                let written = marked(past(&record, &expected, rule), changes);
                let (reply, retried) = self
                    .run_save(key, &rkey, &expected, &written, &stored_user, kept)
                    .await?;
                match reply {
                    SaveReply::Saved => return Ok(Saved::Saved),
                    // A replay finding its own bytes: the first send landed. Sets and removals land
                    // the same however often they are applied; a write with increments carries a
                    // fresh mark, so the same bytes are this write's, never another writer's.
                    SaveReply::AlreadyThere => return Ok(Saved::Saved),
                    SaveReply::Gone => return Ok(Saved::Gone),
                    SaveReply::WrongUser(actual) => {
                        // Not a conflict: the stored value is the one we expected, only its user was
                        // not known here. Name the right set and go again at once (bounded).
                        stored_user = Some(actual);
                        wrong_user_guesses += 1;
                        if wrong_user_guesses > 2 {
                            break;
                        }
                        continue;
                    }
                    SaveReply::Changed(current) => {
                        crate::metrics::save_conflict();
                        let Some(loaded) = self.decode(&rkey, Some(&current)) else {
                            // Not a session any more: nothing to merge into, and never ours to
                            // overwrite. Cleanup removes it.
                            return Ok(Saved::Gone);
                        };
                        if loaded.record.tombstone {
                            return Ok(Saved::Gone);
                        }
                        // Sent twice, and someone wrote after the first: it may have landed.
                        if retried {
                            // A writer that merged on top of it kept its mark: it landed.
                            if written.write_mark.is_some()
                                && loaded.record.write_mark == written.write_mark
                            {
                                return Ok(Saved::Saved);
                            }
                            // Increments must not land twice: say it cannot be told. Sets and
                            // removals are concurrent with that other write either way (this
                            // request has not answered): merge and go again.
                            if !changes.increments.is_empty() {
                                return Err(outcome_unknown());
                            }
                        }
                        let mut merged = Arc::unwrap_or_clone(loaded.record);
                        stored_user = Some(merged.user.clone());
                        let stored_expires = merged.expires;
                        merged.merge(changes, ours);
                        kept = merged.expires == stored_expires;
                        expected = loaded.version;
                        record = Cow::Owned(Arc::new(merged));
                    }
                }
            }
            // Contended: let the other writers through before trying again. A random pause spreads
            // a burst of writers to one session over a few milliseconds instead of having them
            // collide again in lockstep.
            attempt += 1;
            if attempt >= max_attempts {
                break;
            }
            let cap_ms = (1u32 << attempt.min(6)).min(50);
            let jitter = getrandom::u32().unwrap_or(attempt) % (cap_ms * 1000);
            tokio::time::sleep(Duration::from_micros(u64::from(jitter))).await;
        }
        Err(StoreError::Conflict)
    }

    /// One save script call writing `record` over `expected`; answers the reply and whether it was
    /// sent twice.
    async fn run_save(
        &self,
        key: &StoreKey,
        rkey: &str,
        expected: &Version,
        record: &Arc<Record>,
        stored_user: &Option<Option<String>>,
        expiry_kept: bool,
    ) -> Result<(SaveReply, bool), StoreError> {
        let layout = &self.inner.layout;
        let indexed = self.indexed() && !record.tombstone;
        let believed = stored_user.clone().flatten();
        let believed_set = believed
            .as_ref()
            .filter(|_| indexed)
            .map(|u| self.user_key_for(u, key));
        let new_set = record
            .user
            .as_ref()
            .filter(|u| indexed && Some(*u) != believed.as_ref())
            .map(|u| self.user_key_for(u, key));
        let mut keys: Vec<&str> = Vec::with_capacity(4);
        keys.push(rkey);
        if indexed {
            keys.push(layout.index_of(key.as_str()));
        }
        keys.extend(believed_set.as_deref());
        keys.extend(new_set.as_deref());
        let value = self.format().encode(record);
        let now = self.now_ms();
        let (believed_arg, new_arg) = (
            user_arg(believed.as_deref()),
            user_arg(record.user.as_deref()),
        );
        let args = SaveArgs {
            expected: expected.as_str(),
            value: &value,
            ttl_ms: ttl_ms_at(record.expires.as_millis(), now),
            expires_ms: record.expires.as_millis(),
            member: key.as_str(),
            believed_user: &believed_arg,
            new_user: &new_arg,
            check_user: stored_user.is_none() && indexed,
            now_ms: now,
            expiry_kept,
            version_prefix: version_prefix(self.format().version_rule()),
            indexed,
            replay: false,
        };
        let invocation = |args: &SaveArgs<'_>| {
            let mut inv = scripts().save.prepare_invoke();
            for k in &keys {
                inv.key(*k);
            }
            args.push_to(&mut inv);
            inv
        };
        let first = invocation(&args);
        let wrote = |r: &SaveReply| matches!(r, SaveReply::Saved);
        if self.inner.config.replica_acks.is_some() {
            let answer = self.write(Op::Script(&first), wrote).await?;
            return Ok((answer.value, args.replay));
        }
        let replayed = SaveArgs {
            replay: true,
            ..args
        };
        let again = invocation(&replayed);
        let answer = self
            .exec_or_replay(&Op::Script(&first), &Op::Script(&again))
            .await?;
        Ok((answer.value, answer.retried || args.replay))
    }

    /// This process's turn at saving `key` (striped): a burst of requests on one session costs each at
    /// most one merge round. Bounded wait: if the holder is stuck on a frozen Redis, go ahead
    /// optimistically rather than queueing behind it (the script keeps the save correct either way).
    async fn save_turn(&self, key: &StoreKey) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let lock = &self.inner.save_locks[(h.finish() % super::SAVE_LOCK_STRIPES as u64) as usize];
        match lock.try_lock() {
            Ok(turn) => Some(turn),
            Err(_) => tokio::time::timeout(self.inner.config.command_timeout, lock.lock())
                .await
                .ok(),
        }
    }

    /// Deletes a session, naming `user` as its stored user. When the session belongs to someone else:
    /// with `strict`, nothing is deleted (`false`); otherwise the right set is named and the delete
    /// goes again.
    pub(super) async fn delete_as(
        &self,
        key: &StoreKey,
        user: Option<&str>,
        strict: bool,
    ) -> Result<bool, StoreError> {
        let mut believed: Option<String> = user.map(str::to_owned);
        for _ in 0..3 {
            match self.delete_once(key, believed.as_deref(), None).await? {
                DeleteReply::Deleted(found) => return Ok(found),
                DeleteReply::WrongUser(_) if strict => return Ok(false),
                DeleteReply::WrongUser(actual) => believed = actual,
                DeleteReply::Changed => {}
            }
        }
        Err(backend(
            "delete kept finding a different user on the session (concurrent user changes)",
        ))
    }

    /// A delete of `key` only if its stored version is `expected` (any user).
    async fn delete_checked(
        &self,
        key: &StoreKey,
        expected: Option<&Version>,
    ) -> Result<DeleteReply, StoreError> {
        let mut believed: Option<String> = None;
        for _ in 0..3 {
            match self.delete_once(key, believed.as_deref(), expected).await? {
                DeleteReply::WrongUser(actual) => believed = actual,
                other => return Ok(other),
            }
        }
        Err(backend(
            "delete kept finding a different user on the session",
        ))
    }

    /// One delete script call.
    async fn delete_once(
        &self,
        key: &StoreKey,
        believed: Option<&str>,
        expected: Option<&Version>,
    ) -> Result<DeleteReply, StoreError> {
        let rkey = self.redis_key(key);
        let _uncache = self.uncache_after(&rkey);
        let indexed = self.indexed();
        let mut inv = scripts().delete.prepare_invoke();
        inv.key(&rkey);
        if indexed {
            inv.key(self.inner.layout.index_of(key.as_str()));
            if let Some(u) = believed {
                inv.key(self.user_key_for(u, key));
            }
        }
        inv.arg(key.as_str())
            .arg(user_arg(believed))
            .arg(self.now_ms())
            .arg(expected.map_or("", Version::as_str))
            .arg(version_prefix(self.format().version_rule()))
            .arg(if indexed { "1" } else { "0" });
        let reply: Vec<redis::Value> = self
            .write(Op::Script(&inv), |r: &Vec<redis::Value>| {
                matches!(r.first(), Some(redis::Value::Int(1)))
            })
            .await?
            .value;
        let mut reply = reply.into_iter();
        let n: i64 = match reply.next() {
            Some(v) => redis::FromRedisValue::from_redis_value(v)
                .map_err(|e| backend(format!("unexpected answer from the delete script: {e}")))?,
            None => return Err(backend("empty answer from the delete script")),
        };
        Ok(match n {
            -2 => DeleteReply::Changed,
            -1 => {
                let actual: Option<String> = match reply.next() {
                    Some(v) => redis::FromRedisValue::from_redis_value(v).map_err(|e| {
                        backend(format!("unexpected answer from the delete script: {e}"))
                    })?,
                    None => None,
                };
                DeleteReply::WrongUser(actual.as_deref().and_then(parse_user_arg))
            }
            n => DeleteReply::Deleted(n > 0),
        })
    }
}

/// An attempt's failure, where a dropped connection leaves the write's outcome unknown.
fn unknown(what: &'static str) -> impl Fn(Attempt) -> StoreError {
    move |a: Attempt| match a {
        Attempt::Dropped(e) => StoreError::Indeterminate {
            backend: NAME,
            detail: format!("the connection dropped before {what} was answered: {e}"),
        },
        Attempt::Failed(e) => e,
    }
}

fn outcome_unknown() -> StoreError {
    StoreError::Indeterminate {
        backend: NAME,
        detail: "a write was sent twice (its first answer was lost) and the session changed in \
                 between: whether the first one landed cannot be told"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::Timestamp;

    #[test]
    fn a_ttl_is_at_least_a_millisecond_and_at_most_a_hundred_years() {
        assert_eq!(ttl_ms_at(500, 1_000), 1);
        assert_eq!(ttl_ms_at(61_000, 1_000), 60_000);
        assert_eq!(ttl_ms_at(u64::MAX, 1_000), MAX_TTL_MS);
    }

    #[test]
    fn a_record_written_over_a_version_is_later_than_it() {
        let rule = VersionRule::LeadingInteger { prefix: "x" };
        let t = Timestamp::from_millis(100);
        let r = Arc::new(Record::new(t, t, t));
        assert_eq!(
            past(&r, &Version::new("100"), rule).last_access,
            Timestamp::from_millis(101)
        );
        assert!(matches!(
            past(&r, &Version::new("99"), rule),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            past(&r, &Version::new("100"), VersionRule::Digest),
            Cow::Borrowed(_)
        ));
    }
}
