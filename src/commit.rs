//! Turning a request's changes into one store call when its response is ready, and what the client is
//! told about its token.
//!
//! | the request… | store call | the client gets |
//! |---|---|---|
//! | never used the session, or only read it (no refresh due) | none | nothing |
//! | left a new session empty | none | nothing (a removal cookie if it presented a dead token) |
//! | filled a new session | `create` under a fresh token | the new token |
//! | changed a stored session | `save` (the change-set) | nothing, or the token again when the expiry moved |
//! | emptied it | `save`, which removes it | a removal cookie |
//! | called `cycle_id` | `renew` to a fresh token | the new token (a removal cookie if it was revoked meanwhile) |
//! | called `destroy` | `delete` | a removal cookie |
//!
//! Every write moves the record's `last_access` past the loaded one, so it doubles as a version (see
//! [`Record`]).

use crate::error::SessionError;
use crate::expiry::Timestamp;
use crate::id::{StoreKey, Token};
use crate::metrics::{event, Event};
use crate::session::{Presented, Session, State};
use crate::store::{Created, Record, Renewed, Saved, StoreError};
use std::sync::Arc;

/// What the layer does with the client's token after the request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Nothing to send.
    Nothing,
    /// Send this token (new, or the same one with a moved expiry).
    Send {
        token: Token,
        expires: Timestamp,
        /// A cookie with `Max-Age` (rather than one for the browser session).
        persistent: bool,
        fresh: bool,
    },
    /// Tell the client to forget its token.
    Remove,
}

/// Attempts at a fresh token before giving up (a clash of 256-bit tokens does not happen by chance).
const TOKEN_ATTEMPTS: usize = 3;

impl Session {
    /// Whether [`Session::commit`] would certainly do nothing: the session was not loaded, or it is a
    /// stored session the request only read, with no expiry refresh due. Lets the layer answer a
    /// read-only request without setting up a save. `false` when unsure (the state is locked).
    pub(crate) fn nothing_to_commit(&self) -> bool {
        let Ok(st) = self.inner.state.try_lock() else {
            return false;
        };
        if !st.loaded {
            return true;
        }
        let config = &self.inner.config;
        match (&st.stored, &st.record) {
            (Some(_), Some(record)) if st.retire.is_none() && !st.renew => {
                st.changes.is_empty() && !config.expiry.refresh_due(record, config.clock.now())
            }
            _ => false,
        }
    }

    /// Saves what the request changed. Called by the layer once the response is ready.
    pub(crate) async fn commit(&self) -> Result<Outcome, SessionError> {
        let mut st = self.inner.state.lock().await;
        if !st.loaded {
            return Ok(Outcome::Nothing);
        }
        let config = &*self.inner.config;
        let store = &config.store;
        let now = config.clock.now();
        // A user given to the session by this request (a login): the moment the cap applies.
        let login = match &st.changes.user {
            Some(Some(user)) if config.max_sessions_per_user.is_some() => Some(user.clone()),
            _ => None,
        };

        if let Some(old) = st.retire.take() {
            store.delete(&old).await?;
            event(Event::Destroyed);
            tracing::info!(store_key = %old, "session destroyed");
        }
        let State {
            stored,
            record,
            changes,
            renew,
            ..
        } = &mut *st;
        let forget = || match self.inner.presented {
            // A dead, destroyed or malformed token: make the client drop it.
            Presented::Token(_) | Presented::Malformed => Outcome::Remove,
            Presented::Nothing => Outcome::Nothing,
        };
        let Some(record) = record.as_mut() else {
            return Ok(forget());
        };
        let persistent = record.persistent.unwrap_or(config.persistent);

        let Some((key, version)) = stored.clone() else {
            // Nothing stored under the client's token: create a session if there is anything to keep.
            if record.is_empty() {
                return Ok(forget());
            }
            let r = Arc::make_mut(record);
            r.last_access = now;
            r.expires = config.expiry.expires_at(r, now);
            self.check_size(r)?;
            let token = self.create(r).await?;
            event(Event::Created);
            tracing::debug!("session created");
            self.enforce_cap(login.as_deref(), &config.format.store_key(&token))
                .await;
            return Ok(Outcome::Send {
                token,
                expires: r.expires,
                persistent,
                fresh: true,
            });
        };

        if *renew && record.is_empty() {
            // Renewed and emptied: nothing left to move.
            store.delete(&key).await?;
            event(Event::Destroyed);
            return Ok(Outcome::Remove);
        }
        // The expiry moves (and the cookie is sent again) when the request set a new policy, or once
        // it can move by the touch window; otherwise a change is saved under the expiry it has.
        let touch = *renew
            || changes.deadline.is_some()
            || changes.idle_timeout.is_some()
            || changes.persistent.is_some()
            || config.expiry.refresh_due(record, now);
        if changes.is_empty() && !touch {
            return Ok(Outcome::Nothing);
        }
        let r = Arc::make_mut(record);
        r.last_access = now.max(r.last_access.next());
        if touch {
            r.expires = config.expiry.expires_at(r, now);
        }
        changes.expiry_kept = !touch;
        self.check_size(r)?;
        let expires = r.expires;

        if *renew {
            for _ in 0..TOKEN_ATTEMPTS {
                let token = config.format.generate();
                let new_key = config.format.store_key(&token);
                let renewed = match store.renew(&key, &new_key, &version, record, changes).await {
                    // A failure after the move may have landed (its answer lost on the way back):
                    // the fresh key holds a session only if this renewal put it there, so a client
                    // keeps the token that reaches its session, whichever that is.
                    Err(e) if !matches!(e, StoreError::Conflict) => {
                        match store.load(&new_key).await {
                            Ok(Some(_)) => {
                                tracing::warn!(error = %e, new = %new_key, "renewal answered an error but had moved the session");
                                Ok(Renewed::Renewed)
                            }
                            _ => Err(e),
                        }
                    }
                    other => other,
                };
                match renewed {
                    Ok(Renewed::Renewed) => {
                        event(Event::Renewed);
                        tracing::info!(old = %key, new = %new_key, "session id renewed");
                        self.enforce_cap(login.as_deref(), &new_key).await;
                        return Ok(Outcome::Send {
                            token,
                            expires,
                            persistent,
                            fresh: true,
                        });
                    }
                    Ok(_) => {
                        tracing::info!(store_key = %key, "session ended while it was being renewed; not renewed");
                        return Ok(Outcome::Remove);
                    }
                    Err(StoreError::Conflict) => {
                        tracing::warn!("renewal met a taken key or kept meeting writers; again");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            return Err(SessionError::Store(StoreError::Conflict));
        }

        match store.save(&key, &version, record, changes).await? {
            Saved::Saved => {
                event(Event::Saved);
                self.enforce_cap(login.as_deref(), &key).await;
                Ok(match (&self.inner.presented, touch) {
                    (Presented::Token(token), true) => Outcome::Send {
                        token: *token,
                        expires,
                        persistent,
                        fresh: false,
                    },
                    _ => Outcome::Nothing,
                })
            }
            Saved::Emptied => {
                event(Event::Destroyed);
                tracing::debug!(store_key = %key, "session emptied; removed");
                Ok(Outcome::Remove)
            }
            _ => {
                tracing::debug!(store_key = %key, "session deleted while the request ran; not saved");
                Ok(Outcome::Remove)
            }
        }
    }

    /// Stores `record` under a fresh token, retrying on the (astronomically unlikely) clash.
    async fn create(&self, record: &Record) -> Result<Token, SessionError> {
        let config = &self.inner.config;
        for _ in 0..TOKEN_ATTEMPTS {
            let token = config.format.generate();
            let key = config.format.store_key(&token);
            if config.store.create(&key, record).await? == Created::Created {
                return Ok(token);
            }
            tracing::warn!("session key clash on create; drawing a new token");
        }
        Err(SessionError::Store(StoreError::Conflict))
    }

    fn check_size(&self, record: &Record) -> Result<(), SessionError> {
        let limit = self.inner.config.max_size;
        let size = crate::session::json_len(&record.data);
        if size > limit {
            Err(SessionError::TooLarge { size, limit })
        } else {
            Ok(())
        }
    }

    /// After a login (`user` given to the session `current` by this request), ends the user's least
    /// recently used other sessions beyond the configured cap. Best effort: a failure is logged, not
    /// answered (the login itself is stored), and two logins at the same moment may each see the
    /// other's session missing from their listing and leave one session over the cap until the next
    /// login.
    async fn enforce_cap(&self, user: Option<&str>, current: &StoreKey) {
        let config = &self.inner.config;
        let (Some(user), Some(max)) = (user, config.max_sessions_per_user) else {
            return;
        };
        let mut others = match config.store.user_sessions(user).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "could not list the user's sessions to apply the cap");
                return;
            }
        };
        others.retain(|s| &s.id != current);
        // This session counts whether or not the listing saw it.
        let excess = (others.len() + 1).saturating_sub(max);
        if excess == 0 {
            return;
        }
        others.sort_by(|a, b| {
            (a.last_access, a.created_at, &a.id).cmp(&(b.last_access, b.created_at, &b.id))
        });
        for s in others.iter().take(excess) {
            match config.store.delete(&s.id).await {
                Ok(_) => {
                    event(Event::Destroyed);
                    tracing::info!(store_key = %s.id, max, "session ended: the user is over the session cap");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not end a session over the user's cap");
                    return;
                }
            }
        }
    }
}
