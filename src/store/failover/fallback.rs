//! The fallback's side of an outage: the copy a session is carried on from, tombstones for the
//! outage's deletes, revoke markers, and removing a copy once the primary holds the session.

use super::{outage, FailoverStore, Revoked, ATTEMPTS};
use crate::id::StoreKey;
use crate::store::{Created, Loaded, Replaced, SessionStore, StoreError};

/// What the fallback holds for a session.
pub(super) enum Copy {
    Live(Loaded),
    /// Deleted during the outage.
    Tomb,
    Absent,
}

impl<P: SessionStore, F: SessionStore> FailoverStore<P, F> {
    /// What the fallback holds for `key`, carrying a session served through the primary on from its
    /// last known state when the fallback has no copy yet (never over a tombstone: the copy is only
    /// created where nothing is).
    pub(super) async fn fallback_copy(&self, key: &StoreKey) -> Result<Copy, StoreError> {
        let fallback = &self.inner.fallback;
        for _ in 0..ATTEMPTS {
            match fallback.load(key).await? {
                Some(l) if l.record.tombstone => return Ok(Copy::Tomb),
                Some(l) => return Ok(Copy::Live(l)),
                None => {}
            }
            let known = self.recent().get(key);
            let Some(record) = known.filter(|r| !r.is_expired(self.now())) else {
                return Ok(Copy::Absent);
            };
            if fallback.create(key, &record).await? == Created::Created {
                tracing::debug!(store_key = %key, "session carried on from its last known state");
            }
        }
        Err(StoreError::Conflict)
    }

    /// Writes a tombstone for `key` into the fallback (the session was deleted during an outage);
    /// answers whether a live copy was there.
    pub(super) async fn bury(&self, key: &StoreKey) -> Result<bool, StoreError> {
        let fallback = &self.inner.fallback;
        let now = self.now();
        for _ in 0..ATTEMPTS {
            match fallback.load(key).await? {
                Some(l) if l.record.tombstone => return Ok(false),
                Some(l) => {
                    let until = l.record.expires.max(now.plus(self.inner.tombstone_ttl));
                    let tomb = outage::tombstone(now, until);
                    if fallback.replace(key, &l.version, Some(&tomb)).await? == Replaced::Replaced {
                        return Ok(true);
                    }
                }
                None => {
                    let tomb = outage::tombstone(now, now.plus(self.inner.tombstone_ttl));
                    if fallback.create(key, &tomb).await? == Created::Created {
                        return Ok(false);
                    }
                }
            }
        }
        Err(StoreError::Conflict)
    }

    /// Remembers, durably in the fallback and in memory, that `user`'s sessions were revoked: the
    /// ones the primary holds are revoked there at failback.
    pub(super) async fn remember_revoked(
        &self,
        user: &str,
        revoked: Revoked,
    ) -> Result<(), StoreError> {
        self.revoked_users()
            .insert(user.to_owned(), revoked.clone());
        let fallback = &self.inner.fallback;
        let key = outage::marker_key(user);
        let marker = outage::marker(user, &revoked, self.now().plus(self.inner.tombstone_ttl));
        for _ in 0..ATTEMPTS {
            let written = match fallback.load(&key).await? {
                Some(l) => fallback.replace(&key, &l.version, Some(&marker)).await?,
                None => match fallback.create(&key, &marker).await? {
                    Created::Created => Replaced::Replaced,
                    _ => Replaced::Changed,
                },
            };
            if written == Replaced::Replaced {
                return Ok(());
            }
        }
        Err(StoreError::Conflict)
    }

    /// The fallback's answer for a session deleted on the primary: its outage copy must not come back.
    /// A fallback that cannot be reached at all holds nothing the migration could move now.
    pub(super) async fn drop_fallback_copy(&self, key: &StoreKey) -> Result<bool, StoreError> {
        match self.inner.fallback.delete(key).await {
            Ok(found) => Ok(found),
            Err(e) if e.is_unavailable() && !self.migrating() => {
                tracing::warn!(error = %e, "fallback store unreachable while deleting a session");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}
