//! The store operations the crate provides on top of the four primitives (see the
//! [contract](super)): one place for the merge, "no resurrection", "empty means gone" and renewal.

use super::{
    ChangeSet, Created, Loaded, Record, Renewed, Replaced, Saved, SessionStore, StoreError, Version,
};
use crate::id::StoreKey;
use std::sync::Arc;

/// Merge-and-retry rounds before a save or renewal gives up with [`StoreError::Conflict`].
const MAX_ATTEMPTS: usize = 16;

/// What a write after `changes` leaves under the key: `None` (remove it) when the change-set made the
/// record empty. A record that is empty without this request's doing (never the case for a session the
/// layer stored) is kept: only a change can empty a session.
pub(crate) fn target<'a>(record: &'a Record, changes: &ChangeSet) -> Option<&'a Record> {
    if record.is_empty() && !changes.is_empty() {
        None
    } else {
        Some(record)
    }
}

/// The record to write after a conflict: `current` (what the store holds) with `changes` merged in,
/// or `None` when the session is no longer there to write to (absent or a tombstone).
pub(crate) fn merged(
    current: Option<Loaded>,
    changes: &ChangeSet,
    ours: &Record,
) -> Option<(Arc<Record>, Version)> {
    let current = current.filter(|c| !c.record.tombstone)?;
    let mut record = Arc::unwrap_or_clone(current.record);
    record.merge(changes, ours);
    Some((Arc::new(record), current.version))
}

/// [`SessionStore::save`] over [`SessionStore::replace`] and [`SessionStore::load`].
pub(crate) async fn save<S: SessionStore + ?Sized>(
    store: &S,
    key: &StoreKey,
    base: &Version,
    ours: &Arc<Record>,
    changes: &ChangeSet,
) -> Result<Saved, StoreError> {
    let mut expected = base.clone();
    let mut record = Arc::clone(ours);
    for _ in 0..MAX_ATTEMPTS {
        let write = target(&record, changes);
        match store.replace(key, &expected, write).await? {
            Replaced::Replaced if write.is_none() => return Ok(Saved::Emptied),
            Replaced::Replaced => return Ok(Saved::Saved),
            Replaced::Gone => return Ok(Saved::Gone),
            Replaced::Changed => {
                crate::metrics::save_conflict();
                match merged(store.load(key).await?, changes, ours) {
                    Some((r, v)) => (record, expected) = (r, v),
                    None => return Ok(Saved::Gone),
                }
            }
        }
    }
    Err(StoreError::Conflict)
}

/// [`SessionStore::renew`] over create, replace, load and delete.
pub(crate) async fn renew<S: SessionStore + ?Sized>(
    store: &S,
    old: &StoreKey,
    new: &StoreKey,
    base: &Version,
    ours: &Arc<Record>,
    changes: &ChangeSet,
) -> Result<Renewed, StoreError> {
    let mut expected = base.clone();
    let mut record = Arc::clone(ours);
    for _ in 0..MAX_ATTEMPTS {
        // The new key first: whatever happens next, the session exists somewhere.
        if store.create(new, &record).await? == Created::Exists {
            return Err(StoreError::Conflict);
        }
        let removed = store.replace(old, &expected, None).await;
        if !matches!(removed, Ok(Replaced::Replaced)) {
            // Not moved (yet): the new key must not outlive this attempt.
            if let Err(e) = store.delete(new).await {
                tracing::warn!(error = %e, store_key = %new, "could not remove a renewal's new key; it expires unused");
            }
        }
        match removed? {
            Replaced::Replaced => return Ok(Renewed::Renewed),
            Replaced::Gone => return Ok(Renewed::Gone),
            Replaced::Changed => {
                crate::metrics::save_conflict();
                match merged(store.load(old).await?, changes, ours) {
                    Some((r, v)) => (record, expected) = (r, v),
                    None => return Ok(Renewed::Gone),
                }
            }
        }
    }
    Err(StoreError::Conflict)
}

/// Listings a revoke makes at most before it says it could not be sure.
pub(crate) const REVOKE_ROUNDS: usize = 4;

/// [`SessionStore::revoke_user_sessions`] over the per-user listing and delete.
///
/// A session renewed between the listing and its delete moves to a key the listing did not have (its
/// [`user_since`](super::Summary::user_since) moves with it): the user's sessions are listed again until
/// none that was the user's before the revoke began is left, at most [`REVOKE_ROUNDS`] times, and then [`StoreError::Conflict`] rather
/// than a count that could have missed one.
pub(crate) async fn revoke<S: SessionStore + ?Sized>(
    store: &S,
    user: &str,
    keep: Option<&StoreKey>,
) -> Result<u64, StoreError> {
    let started = store.clock().now();
    let mut deleted = 0;
    for round in 0..REVOKE_ROUNDS {
        let mut found = false;
        for s in store.user_sessions(user).await? {
            // The first listing ends every session the user has; later ones look for escapees.
            if Some(&s.id) == keep || (round > 0 && s.user_since > started) {
                continue;
            }
            found = true;
            if store.delete(&s.id).await? {
                deleted += 1;
            }
        }
        if !found {
            return Ok(deleted);
        }
    }
    Err(StoreError::Conflict)
}
