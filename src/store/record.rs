//! [`Record`], a session as stored, and [`ChangeSet`], what one request changed in it.

use crate::expiry::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// The data of a session: a JSON object.
pub type Data = Map<String, Value>;

/// A session as a store keeps it. With the native format it is stored as this JSON, which is what
/// `redis-cli GET` shows and what a session file holds:
///
/// ```json
/// {"lastAccess":1752360300000,"createdAt":1752360300000,"expires":1752446700000,
///  "deadline":1752965100000,"userAgent":"curl/8.5.0","user":"alice","data":{"visits":3}}
/// ```
///
/// Times are milliseconds since the Unix epoch.
///
/// **`last_access` is a version.** Every record the crate writes over a stored one has a strictly
/// larger `last_access` than the one it replaces (the layer and the provided save path see to it), so a
/// store may use it to tell whether a record changed since it was loaded (the Redis and file stores
/// do; see [`VersionRule`](super::VersionRule)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Record {
    /// When the session was last written (saved or touched). Serialised first: see the type's docs.
    pub last_access: Timestamp,
    /// When the session was created.
    pub created_at: Timestamp,
    /// When the store forgets the session: the earlier of the idle and absolute limits.
    pub expires: Timestamp,
    /// The absolute limit, which no amount of activity moves.
    pub deadline: Timestamp,
    /// The session's own idle timeout, overriding the layer's ("remember me"); `None`: the layer's.
    #[serde(
        rename = "idle",
        default,
        skip_serializing_if = "Option::is_none",
        with = "millis"
    )]
    pub idle_timeout: Option<Duration>,
    /// Whether the session's cookie outlives the browser session, overriding the layer's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
    /// The `User-Agent` of the request that created the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The user the session belongs to, when the application said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When the session was given its current user (a login), if after it was created: a revoke of
    /// the user ends the sessions that were theirs when it began, not one logged in afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_since: Option<Timestamp>,
    /// This record stands for a session that was deleted where the store could not reach it: the
    /// [`FailoverStore`](super::FailoverStore) writes such markers into its fallback during an outage
    /// so that no path ever creates the session again, and carries the delete over at failback. A store
    /// keeps a tombstone like any record but leaves it out of counts and listings.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstone: bool,
    /// A random mark a store may put on the record it writes so that, when the reply to that write is
    /// lost and the write is sent again, it can tell its own earlier write from another writer's
    /// identical one (the Redis store marks saves that carry increments, which must not land twice).
    /// `None` on records nobody marked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_mark: Option<String>,
    /// The application's data.
    #[serde(default)]
    pub data: Data,
    /// Fields of the stored value this crate does not model, kept as they were for whoever wrote them
    /// (the express format keeps express-session's `cookie` object here). Empty in the native format.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Data,
}

/// `Option<Duration>` as whole milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl Record {
    /// A new, empty session created at `now`, expiring at `expires` and ending for good at `deadline`.
    pub fn new(now: Timestamp, expires: Timestamp, deadline: Timestamp) -> Self {
        Record {
            last_access: now,
            created_at: now,
            expires: expires.min(deadline),
            deadline,
            idle_timeout: None,
            persistent: None,
            user_agent: None,
            user: None,
            user_since: None,
            tombstone: false,
            write_mark: None,
            data: Data::new(),
            extra: Data::new(),
        }
    }

    /// Encodes the record as the native format stores it: compact JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record of JSON values always serialises")
    }

    /// Decodes a native record; anything that is not a well-formed record is
    /// [`StoreError::Corrupt`](super::StoreError::Corrupt).
    pub fn from_json(bytes: &[u8]) -> Result<Self, super::StoreError> {
        serde_json::from_slice(bytes).map_err(|e| super::StoreError::Corrupt {
            detail: "stored value is not a session record",
            source: Some(Box::new(e)),
        })
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires <= now
    }

    /// Whether the record holds nothing worth keeping: no data and no user. The layer never stores an
    /// empty session, and a save that leaves one empty deletes it ([`Saved::Emptied`](super::Saved)).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty() && self.user.is_none()
    }

    /// Applies a request's change-set to this record (the store's current copy), taking the request's
    /// newer timestamps: the merge a store does when another writer got there first. The result's
    /// `last_access` is later than both this record's and `ours` (see the type's docs).
    pub fn merge(&mut self, changes: &ChangeSet, ours: &Record) {
        changes.apply(&mut self.data);
        if let Some(user) = &changes.user {
            if self.user != *user {
                self.user.clone_from(user);
                self.user_since = ours.user_since;
            }
        }
        if let Some(deadline) = changes.deadline {
            self.deadline = deadline;
        }
        if let Some(idle) = changes.idle_timeout {
            self.idle_timeout = idle;
        }
        if let Some(persistent) = changes.persistent {
            self.persistent = persistent;
        }
        let stored_access = self.last_access;
        self.last_access = ours.last_access.max(stored_access.next());
        self.expires = if changes.deadline.is_some() || changes.idle_timeout.is_some() {
            // The request chose a new expiry policy: its expiry stands, even if shorter.
            ours.expires
        } else {
            self.expires.max(ours.expires)
        }
        .min(self.deadline);
    }

    /// A listing entry for this record.
    pub fn summary(&self, id: crate::id::StoreKey) -> super::Summary {
        super::Summary {
            id,
            created_at: self.created_at,
            last_access: self.last_access,
            expires: self.expires,
            user_agent: self.user_agent.clone(),
            user: self.user.clone(),
            user_since: self.owned_since(),
            tombstone: self.tombstone,
        }
    }

    /// When the session became its current user's: [`Record::user_since`], or its creation.
    pub fn owned_since(&self) -> Timestamp {
        self.user_since.unwrap_or(self.created_at)
    }
}

/// What one request changed in a session.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ChangeSet {
    /// The data was cleared before the entries below were applied.
    pub cleared: bool,
    /// Keys set (`Some`) or removed (`None`), in key order.
    pub entries: BTreeMap<String, Option<Value>>,
    /// Integer keys increased (or decreased) by an amount: applied to the value the store holds when
    /// it saves, so concurrent increments all count. Never holds a key that `entries` also holds.
    pub increments: BTreeMap<String, i64>,
    /// The user was set (`Some(Some(..))`) or removed (`Some(None)`).
    pub user: Option<Option<String>>,
    /// The absolute deadline was moved.
    pub deadline: Option<Timestamp>,
    /// The session's own idle timeout was set (`Some(Some(..))`) or reset to the layer's (`Some(None)`).
    pub idle_timeout: Option<Option<Duration>>,
    /// The session's own cookie persistence was set or reset.
    pub persistent: Option<Option<bool>>,
    /// The record is saved with the expiry it was loaded with (no refresh was due, see
    /// [`Expiry::refresh_due`](crate::expiry::Expiry::refresh_due)): a store may leave what it keeps
    /// by expiry (an index scored by it) as it is. `false` (the default) when it may have moved.
    pub expiry_kept: bool,
}

impl ChangeSet {
    /// Whether the change-set changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.cleared
            && self.entries.is_empty()
            && self.increments.is_empty()
            && self.user.is_none()
            && self.deadline.is_none()
            && self.idle_timeout.is_none()
            && self.persistent.is_none()
    }

    /// Applies the change-set to `data`.
    ///
    /// ```
    /// use sessionforge::store::ChangeSet;
    /// use serde_json::json;
    ///
    /// let mut data = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
    /// let mut changes = ChangeSet::default();
    /// changes.entries.insert("a".into(), None);
    /// changes.entries.insert("c".into(), Some(json!(3)));
    /// changes.increments.insert("b".into(), 5);
    /// changes.apply(&mut data);
    /// assert_eq!(serde_json::Value::Object(data), json!({"b": 7, "c": 3}));
    /// ```
    pub fn apply(&self, data: &mut Data) {
        if self.cleared {
            data.clear();
        }
        for (k, v) in &self.entries {
            match v {
                Some(v) => {
                    data.insert(k.clone(), v.clone());
                }
                None => {
                    data.shift_remove(k);
                }
            }
        }
        for (k, by) in &self.increments {
            data.insert(k.clone(), Value::from(add_to(data.get(k), *by)));
        }
    }

    /// The change-set that makes any record hold exactly `record`'s data, user and policy: what a
    /// copy between stores applies (the failover store's migration).
    pub fn replacing_with(record: &Record) -> Self {
        ChangeSet {
            cleared: true,
            entries: record
                .data
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
            user: Some(record.user.clone()),
            deadline: Some(record.deadline),
            idle_timeout: Some(record.idle_timeout),
            persistent: Some(record.persistent),
            ..Default::default()
        }
    }
}

/// `current` (an integer, or nothing / anything else counting as 0) plus `by`, saturating.
pub(crate) fn add_to(current: Option<&Value>, by: i64) -> i64 {
    current
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .saturating_add(by)
}

/// A record created at `now`, expiring `ttl` later (absolute deadline ten times that), holding
/// `{"n": 1}`: the stores' unit tests share it.
#[cfg(test)]
pub(crate) fn test_record(now: Timestamp, ttl: Duration) -> Record {
    let mut r = Record::new(now, now.plus(ttl), now.plus(ttl * 10));
    r.data = serde_json::json!({"n": 1}).as_object().unwrap().clone();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(data: Value) -> Record {
        let mut r = Record::new(
            Timestamp::from_millis(2),
            Timestamp::from_millis(10),
            Timestamp::from_millis(100),
        );
        r.created_at = Timestamp::from_millis(1);
        r.user_agent = Some("ua".into());
        r.data = data.as_object().unwrap().clone();
        r
    }

    #[test]
    fn floats_in_the_data_read_back_bit_for_bit() {
        // Found by the `record_decode` fuzz target: without serde_json's `float_roundtrip`, these
        // came back one ULP off.
        for text in [
            "366666666666666666666666666666666666666666666666666666666666666",
            "1.5777777777770001",
            "0.1",
            "-2.2250738585072014e-308",
        ] {
            let v: f64 = text.parse().unwrap();
            let r = record(json!({ "v": v }));
            let back = Record::from_json(&r.to_json()).unwrap();
            let got = back.data["v"].as_f64().unwrap();
            assert_eq!(got.to_bits(), v.to_bits(), "{text}");
        }
    }

    #[test]
    fn record_json_round_trips_starts_with_its_version_and_omits_what_is_unset() {
        let r = record(json!({"visits": 3}));
        let text = String::from_utf8(r.to_json()).unwrap();
        assert!(text.starts_with("{\"lastAccess\":2,"), "{text}");
        assert!(text.contains("\"createdAt\":1"), "{text}");
        assert!(text.contains("\"userAgent\":\"ua\""), "{text}");
        for absent in ["\"user\":", "idle", "persistent", "tombstone"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert_eq!(Record::from_json(text.as_bytes()).unwrap(), r);
        let mut policy = r.clone();
        policy.idle_timeout = Some(Duration::from_secs(60));
        policy.persistent = Some(true);
        let text = String::from_utf8(policy.to_json()).unwrap();
        assert!(
            text.contains("\"idle\":60000,\"persistent\":true"),
            "{text}"
        );
        assert_eq!(Record::from_json(text.as_bytes()).unwrap(), policy);
    }

    #[test]
    fn corrupt_json_is_a_corrupt_error_not_a_panic() {
        for bad in [
            &b"{"[..],
            b"null",
            b"[1,2]",
            b"{\"createdAt\":\"x\"}",
            b"\xff\xfe",
        ] {
            let e = Record::from_json(bad).unwrap_err();
            assert!(
                matches!(e, super::super::StoreError::Corrupt { .. }),
                "{e:?}"
            );
            assert!(!e.is_unavailable());
        }
    }

    #[test]
    fn merge_keeps_the_other_writers_keys_takes_ours_and_moves_the_version_on() {
        let mut stored = record(json!({"a": 1, "other": true}));
        stored.last_access = Timestamp::from_millis(9);
        let mut changes = ChangeSet::default();
        changes.entries.insert("a".into(), Some(json!(2)));
        changes.entries.insert("mine".into(), Some(json!("x")));
        changes.user = Some(Some("alice".into()));
        let mut ours = record(json!({}));
        ours.last_access = Timestamp::from_millis(7);
        ours.expires = Timestamp::from_millis(500);
        stored.merge(&changes, &ours);
        assert_eq!(
            Value::Object(stored.data.clone()),
            json!({"a": 2, "other": true, "mine": "x"})
        );
        assert_eq!(stored.user.as_deref(), Some("alice"));
        // Later than both the stored record and ours, so the stored version moves.
        assert_eq!(stored.last_access, Timestamp::from_millis(10));
        // Never past the absolute deadline.
        assert_eq!(stored.expires, Timestamp::from_millis(100));
    }

    #[test]
    fn a_new_expiry_policy_wins_over_a_later_stored_expiry() {
        let mut stored = record(json!({}));
        stored.expires = Timestamp::from_millis(90);
        let mut ours = record(json!({}));
        ours.expires = Timestamp::from_millis(20);
        let changes = ChangeSet {
            idle_timeout: Some(Some(Duration::from_millis(18))),
            ..ChangeSet::default()
        };
        stored.merge(&changes, &ours);
        assert_eq!(stored.expires, Timestamp::from_millis(20));
        assert_eq!(stored.idle_timeout, Some(Duration::from_millis(18)));
    }

    #[test]
    fn increments_apply_to_the_current_value_and_treat_others_as_zero() {
        let mut data = json!({"n": 5, "s": "x"}).as_object().unwrap().clone();
        let mut c = ChangeSet::default();
        c.increments.insert("n".into(), 3);
        c.increments.insert("s".into(), 2);
        c.increments.insert("new".into(), -1);
        assert!(!c.is_empty());
        c.apply(&mut data);
        assert_eq!(
            Value::Object(data.clone()),
            json!({"n": 8, "s": 2, "new": -1})
        );
        // A second writer's increment merged onto that counts too.
        c.apply(&mut data);
        assert_eq!(data["n"], 11);
        let mut max = json!({"n": i64::MAX}).as_object().unwrap().clone();
        c.apply(&mut max);
        assert_eq!(max["n"], i64::MAX, "saturates");
    }

    #[test]
    fn cleared_change_set_drops_keys_it_does_not_set() {
        let mut data = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        let mut c = ChangeSet {
            cleared: true,
            ..Default::default()
        };
        c.entries.insert("b".into(), Some(json!(3)));
        c.apply(&mut data);
        assert_eq!(Value::Object(data), json!({"b": 3}));
    }

    #[test]
    fn replacing_with_a_record_makes_any_record_hold_its_data_and_user() {
        let theirs = record(json!({"old": 1}));
        let mut ours = record(json!({"new": 2}));
        ours.user = Some("bob".into());
        let mut merged = theirs.clone();
        merged.merge(&ChangeSet::replacing_with(&ours), &ours);
        assert_eq!(Value::Object(merged.data), json!({"new": 2}));
        assert_eq!(merged.user.as_deref(), Some("bob"));
    }
}
