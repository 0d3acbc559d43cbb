//! The failover store's memory of sessions it served through the primary: their last known state, to
//! carry them on from during an outage, and which of them ended (deleted, or their user revoked), so
//! that a request still in flight when the primary goes away never carries an ended session on into
//! the fallback (from where failback would copy it back). Bounded; the oldest entries go first.
//! Records are shared with the requests that loaded or saved them, so keeping one costs no copy.

use crate::expiry::Timestamp;
use crate::id::StoreKey;
use crate::store::{ChangeSet, Record, Version};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// How many ended sessions and revoked users are remembered (whatever the state capacity: this
/// costs a key each).
const ENDED: usize = 10_000;

pub(super) struct Recent {
    capacity: usize,
    tick: u64,
    /// Each key's last known state, the primary's version of it when known (a load), and its tick.
    map: HashMap<StoreKey, (Arc<Record>, Option<Version>, u64)>,
    order: VecDeque<(StoreKey, u64)>,
    /// Sessions deleted through this store, oldest first.
    ended: HashSet<StoreKey>,
    ended_order: VecDeque<StoreKey>,
    /// Users revoked through this store: when, and the session kept.
    revoked: HashMap<String, (Timestamp, Option<StoreKey>)>,
    revoked_order: VecDeque<String>,
}

impl Recent {
    pub(super) fn new(capacity: usize) -> Self {
        Recent {
            capacity,
            tick: 0,
            map: HashMap::new(),
            order: VecDeque::new(),
            ended: HashSet::new(),
            ended_order: VecDeque::new(),
            revoked: HashMap::new(),
            revoked_order: VecDeque::new(),
        }
    }

    /// `key`'s session was deleted: forget its state and remember that it ended.
    pub(super) fn ended(&mut self, key: &StoreKey) {
        self.map.remove(key);
        if self.ended.insert(*key) {
            self.ended_order.push_back(*key);
            if self.ended_order.len() > ENDED {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
    }

    /// The user's sessions created up to `at` were revoked, except `keep`.
    pub(super) fn revoked(&mut self, user: &str, at: Timestamp, keep: Option<&StoreKey>) {
        self.remove_user(user, keep);
        if self
            .revoked
            .insert(user.to_owned(), (at, keep.copied()))
            .is_none()
        {
            self.revoked_order.push_back(user.to_owned());
            if self.revoked_order.len() > ENDED {
                if let Some(old) = self.revoked_order.pop_front() {
                    self.revoked.remove(&old);
                }
            }
        }
    }

    /// Whether the session under `key`, as `record` shows it, is known to have ended here.
    pub(super) fn has_ended(&self, key: &StoreKey, record: &Record) -> bool {
        self.ended.contains(key)
            || record.user.as_ref().is_some_and(|u| {
                self.revoked.get(u).is_some_and(|(at, keep)| {
                    keep.as_ref() != Some(key) && record.owned_since() <= *at
                })
            })
    }

    pub(super) fn put(&mut self, key: &StoreKey, record: Arc<Record>) {
        self.put_version(key, record, None);
    }

    /// As [`Recent::put`], for a state the primary answered at `version` (a load).
    pub(super) fn put_version(
        &mut self,
        key: &StoreKey,
        record: Arc<Record>,
        version: Option<Version>,
    ) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        self.map.insert(*key, (record, version, self.tick));
        self.order.push_back((*key, self.tick));
        while self.map.len() > self.capacity || self.order.len() > 2 * self.capacity.max(8) {
            let Some((k, t)) = self.order.pop_front() else {
                break;
            };
            // Only the newest mention of a key evicts it; older ones are stale order entries.
            if self.map.get(&k).is_some_and(|(_, _, newest)| *newest == t) {
                self.map.remove(&k);
            }
        }
    }

    /// Applies a saved change-set the way the primary did: to the state it holds. When that state is
    /// the one the request loaded (`base`, the primary's version it saved against), the primary
    /// stored `ours` as it is, and so does this, without a merge.
    pub(super) fn apply(
        &mut self,
        key: &StoreKey,
        base: &Version,
        changes: &ChangeSet,
        ours: &Arc<Record>,
    ) {
        let merged = match self.map.get(key) {
            Some((current, version, _))
                if !Arc::ptr_eq(current, ours) && version.as_ref() != Some(base) =>
            {
                let mut r = Record::clone(current);
                r.merge(changes, ours);
                Arc::new(r)
            }
            _ => Arc::clone(ours),
        };
        self.put(key, merged);
    }

    pub(super) fn get(&self, key: &StoreKey) -> Option<Arc<Record>> {
        self.map.get(key).map(|(r, _, _)| Arc::clone(r))
    }

    /// The state and the primary's version of it, when known.
    pub(super) fn get_version(&self, key: &StoreKey) -> Option<(Arc<Record>, Option<Version>)> {
        self.map
            .get(key)
            .map(|(r, v, _)| (Arc::clone(r), v.clone()))
    }

    pub(super) fn remove(&mut self, key: &StoreKey) -> Option<Arc<Record>> {
        self.map.remove(key).map(|(r, _, _)| r)
    }

    /// Forgets the user's sessions (revoked), except `keep`.
    fn remove_user(&mut self, user: &str, keep: Option<&StoreKey>) {
        self.map
            .retain(|k, (r, _, _)| r.user.as_deref() != Some(user) || Some(k) == keep);
    }

    /// Forgets the sessions' states (not which ended).
    pub(super) fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiry::Timestamp;
    use crate::id::Token;

    fn rec(v: i64) -> Arc<Record> {
        let t = Timestamp::from_millis(v as u64);
        let mut r = Record::new(t, t, t);
        r.data.insert("v".into(), v.into());
        Arc::new(r)
    }

    #[test]
    fn the_oldest_sessions_go_first_and_a_refresh_keeps_one() {
        let mut recent = Recent::new(2);
        let keys: Vec<StoreKey> = (0..3).map(|_| Token::generate().store_key()).collect();
        recent.put(&keys[0], rec(0));
        recent.put(&keys[1], rec(1));
        recent.put(&keys[0], rec(2));
        recent.put(&keys[2], rec(3));
        assert!(recent.get(&keys[1]).is_none());
        assert_eq!(recent.get(&keys[0]).unwrap().data["v"], 2);
        assert!(recent.get(&keys[2]).is_some());
    }

    #[test]
    fn a_saved_change_set_is_merged_into_the_known_state() {
        let mut recent = Recent::new(10);
        let k = Token::generate().store_key();
        recent.put(&k, rec(1));
        let mut changes = ChangeSet::default();
        changes.entries.insert("x".into(), Some(7.into()));
        recent.apply(&k, &Version::new("9"), &changes, &rec(5));
        let r = recent.get(&k).unwrap();
        assert_eq!(
            (r.data["v"].clone(), r.data["x"].clone()),
            (1.into(), 7.into())
        );
        // Saved against the version this instance loaded: the primary stored the request's record.
        recent.put_version(&k, rec(1), Some(Version::new("9")));
        let ours = rec(5);
        recent.apply(&k, &Version::new("9"), &changes, &ours);
        assert!(Arc::ptr_eq(&recent.get(&k).unwrap(), &ours));
        // Against another version: merged into what is known.
        recent.put_version(&k, rec(1), Some(Version::new("10")));
        recent.apply(&k, &Version::new("9"), &changes, &ours);
        assert_eq!(recent.get(&k).unwrap().data["v"], 1);
        let mut off = Recent::new(0);
        off.put(&k, rec(1));
        assert!(off.get(&k).is_none());
    }
}
