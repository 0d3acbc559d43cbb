//! Failing back: what an outage left in the fallback goes to the primary, one session at a time, each
//! under its session's lock.

use super::outage::{self, Revoked};
use super::{FailoverStore, Side, ATTEMPTS};
use crate::id::StoreKey;
use crate::store::{Created, Record, Replaced, SessionStore, StoreError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use Side::{Fallback, Primary};

/// Entries listed per page of the fallback.
const PAGE: usize = 500;

impl<P: SessionStore, F: SessionStore> FailoverStore<P, F> {
    /// Switches back to the primary and carries the outage over: revoke markers, tombstones and the
    /// sessions written during the outage. Run by the monitor when the primary is healthy; resumes
    /// where an interrupted one stopped.
    pub(super) async fn fail_back(&self) {
        let Ok(_one_at_a_time) = self.inner.failback.try_lock() else {
            return;
        };
        // The outage's revocations first, into memory: from the switch on, no session they cover is
        // served from the primary, even before the migration reaches its marker.
        if let Err(e) = self.load_markers().await {
            self.interrupted(Fallback(e));
            return;
        }
        {
            // Every operation that began on the fallback has finished once this is held: the listing
            // below sees everything they wrote.
            let _all = self.inner.gate.write().await;
            self.inner.migrating.store(true, Ordering::Release);
            if self.inner.on_fallback.swap(false, Ordering::AcqRel) {
                // What the cache knew predates the outage; the primary is the truth again.
                self.recent().clear();
                self.switched_back();
            }
        }
        match self.migrate_all().await {
            Ok(moved) if !self.is_on_fallback() => {
                self.inner.migrating.store(false, Ordering::Release);
                self.revoked_users().clear();
                tracing::info!(moved, "the outage's sessions moved to the primary store");
            }
            // A request found the primary gone again and switched: the next failback resumes.
            Ok(_) => {}
            Err(side) => self.interrupted(side),
        }
    }

    /// Reads every revoke marker in the fallback into memory.
    async fn load_markers(&self) -> Result<(), StoreError> {
        let mut cursor: Option<String> = None;
        loop {
            let page = self.inner.fallback.list(cursor.as_deref(), PAGE).await?;
            for s in page
                .sessions
                .iter()
                .filter(|s| s.tombstone && s.user.is_some())
            {
                if let Some(l) = self.inner.fallback.load(&s.id).await? {
                    if let Some((user, revoked)) = outage::parse_marker(&s.id, &l.record) {
                        self.revoked_users().insert(user, revoked);
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(()),
            }
        }
    }

    /// Carries over every entry of the fallback; answers how many.
    async fn migrate_all(&self) -> Result<u64, Side> {
        let mut moved = 0;
        let mut cursor: Option<String> = None;
        loop {
            if self.is_on_fallback() {
                return Ok(moved);
            }
            // Pages resume after the cursor, so removing entries behind it disturbs nothing.
            let page = self
                .inner
                .fallback
                .list(cursor.as_deref(), PAGE)
                .await
                .map_err(Fallback)?;
            for s in &page.sessions {
                let _key = self.lock(&s.id).await;
                if self.migrate_locked(&s.id).await? {
                    moved += 1;
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(moved),
            }
        }
    }

    /// Carries over what the fallback holds under `key` (the caller holds the key's lock): a revoke
    /// marker is applied, a tombstone deletes the primary's copy, a live session goes into the primary
    /// unless the primary's copy is strictly newer; then the entry leaves the fallback (only if it did
    /// not change meanwhile: a newer write goes over too). Answers whether there was anything.
    pub(super) async fn migrate_locked(&self, key: &StoreKey) -> Result<bool, Side> {
        let (primary, fallback) = (&self.inner.primary, &self.inner.fallback);
        for _ in 0..ATTEMPTS {
            if self.is_on_fallback() {
                // The primary went away again: the entry stays where it is served from.
                return Ok(false);
            }
            let Some(l) = fallback.load(key).await.map_err(Fallback)? else {
                return Ok(false);
            };
            // What the primary holds for the key once this entry is carried over.
            let mut now_held = None;
            if let Some((user, revoked)) = outage::parse_marker(key, &l.record) {
                self.revoke_before(&user, &revoked).await.map_err(Primary)?;
            } else if l.record.tombstone || self.revoked_during_outage(key, &l.record) {
                primary.delete(key).await.map_err(Primary)?;
            } else {
                match self
                    .copy_to_primary(key, &l.record)
                    .await
                    .map_err(Primary)?
                {
                    Some(held) => now_held = Some(held),
                    None => continue,
                }
            }
            match fallback
                .replace(key, &l.version, None)
                .await
                .map_err(Fallback)?
            {
                Replaced::Changed => continue,
                _ => {
                    // The next outage carries the session on from here, as from any other the
                    // primary served.
                    let mut recent = self.recent();
                    match now_held {
                        Some(held) => recent.put(key, held),
                        None => {
                            recent.ended(key);
                        }
                    }
                    return Ok(true);
                }
            }
        }
        Err(Primary(StoreError::Conflict))
    }

    /// Writes an outage copy into the primary unless the primary holds a strictly newer one (another
    /// instance wrote it meanwhile). Answers what the primary holds then, or `None` when the primary
    /// changed under the attempt.
    async fn copy_to_primary(
        &self,
        key: &StoreKey,
        record: &Arc<Record>,
    ) -> Result<Option<Arc<Record>>, StoreError> {
        let primary = &self.inner.primary;
        if primary.create(key, record).await? == Created::Created {
            return Ok(Some(Arc::clone(record)));
        }
        let Some(current) = primary.load(key).await? else {
            return Ok(None);
        };
        // The fallback's copy exists because the outage wrote it, so it wins unless the primary's is
        // strictly newer: a tie with a pre-outage copy must not drop an acknowledged outage write.
        if current.record.last_access > record.last_access {
            return Ok(Some(current.record));
        }
        let mut newer = Record::clone(record);
        newer.last_access = record.last_access.max(current.record.last_access.next());
        Ok(
            (primary.replace(key, &current.version, Some(&newer)).await? == Replaced::Replaced)
                .then(|| Arc::new(newer)),
        )
    }

    /// Revokes in the primary what a revocation during the outage covered: the user's sessions
    /// created up to it, except the one kept.
    async fn revoke_before(&self, user: &str, revoked: &Revoked) -> Result<(), StoreError> {
        let primary = &self.inner.primary;
        for s in primary.user_sessions(user).await? {
            if revoked.keep.as_ref() != Some(&s.id) && s.user_since <= revoked.at {
                primary.delete(&s.id).await?;
            }
        }
        Ok(())
    }
}
