//! The [`Session`] handle a handler sees.
//!
//! A `Session` is cheap to clone (an `Arc`); every clone is the same session. It loads its record on first
//! use, not before: a handler that never touches it costs no store call. Each change is recorded in a
//! [`ChangeSet`] as well as applied to the local view, and when the response is ready the layer saves that
//! change-set (or nothing, if nothing changed).
//!
//! ```
//! # async fn handler(session: sessionforge::Session) -> Result<(), sessionforge::SessionError> {
//! let visits: u64 = session.get("visits").await?.unwrap_or(0);
//! session.insert("visits", visits + 1).await?;
//! # Ok(()) }
//! ```

use crate::expiry::Timestamp;
use crate::id::{StoreKey, Token};
use crate::layer::Config;
use crate::metrics::{Event, Metrics};
use crate::store::{ChangeSet, Created, DynStore, Record, Saved, StoreError, Summary, Version};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Mutex;

/// Longest `User-Agent` kept in the session's metadata.
const MAX_USER_AGENT: usize = 256;

/// Why a session operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed (see [`StoreError::is_unavailable`]).
    Store(StoreError),
    /// A value could not be converted to or from JSON.
    Json(serde_json::Error),
    /// The session would exceed the configured size limit.
    TooLarge {
        /// The size it would have, in bytes of JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Store(e) => write!(f, "{e}"),
            SessionError::Json(e) => write!(f, "session value is not valid for its type: {e}"),
            SessionError::TooLarge { size, limit } => {
                write!(
                    f,
                    "session would be {size} bytes, over the limit of {limit}"
                )
            }
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SessionError::Store(e) => Some(e),
            SessionError::Json(e) => Some(e),
            SessionError::TooLarge { .. } => None,
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooLarge { size, limit } => SessionError::TooLarge { size, limit },
            e => SessionError::Store(e),
        }
    }
}

impl SessionError {
    /// The HTTP status this error is answered with: 503 for an unavailable or full store, 413 for an
    /// oversized session, 500 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            SessionError::Store(e) if e.is_unavailable() => http::StatusCode::SERVICE_UNAVAILABLE,
            SessionError::Store(StoreError::QuotaExceeded { .. }) => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            SessionError::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            _ => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short message safe to show a client (no internals).
    pub fn public_message(&self) -> &'static str {
        match self {
            SessionError::Store(e) if e.is_unavailable() => "session store unavailable",
            SessionError::Store(StoreError::QuotaExceeded { .. }) => "session store full",
            SessionError::Store(_) => "session store error",
            SessionError::Json(_) => "session value has an unexpected type",
            SessionError::TooLarge { .. } => "session data too large",
        }
    }
}

/// What the layer does with the client's token after the request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Nothing to send.
    Nothing,
    /// Send this token (new, or the same one with a refreshed expiry).
    Send {
        token: Token,
        expires: Timestamp,
        fresh: bool,
    },
    /// Tell the client to forget its token.
    Remove,
}

#[derive(Default)]
struct State {
    loaded: bool,
    /// The session as stored when loaded: its key and version. `None`: nothing stored (yet).
    stored: Option<(StoreKey, Version)>,
    /// The local view: the loaded record with this request's changes applied. Shared with the store's
    /// copy until the request changes something ([`Arc::make_mut`] copies it then).
    record: Option<Arc<Record>>,
    changes: ChangeSet,
    /// A key to delete when the request ends (destroyed or renewed session).
    retire: Option<StoreKey>,
    /// `cycle_id` was called: store the data under a new token.
    renew: bool,
}

pub(crate) struct Inner {
    store: Arc<dyn DynStore>,
    config: Arc<Config>,
    presented: Option<Token>,
    /// The request's `User-Agent`, turned into text only when a new session's record is made.
    user_agent: Option<http::HeaderValue>,
    touched: AtomicBool,
    state: Mutex<State>,
}

/// A session, as handlers see it. Get it from the request extensions, or with the Axum extractor.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("token_presented", &self.inner.presented.is_some())
            .field("touched", &self.inner.touched.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        store: Arc<dyn DynStore>,
        config: Arc<Config>,
        presented: Option<Token>,
        user_agent: Option<http::HeaderValue>,
    ) -> Self {
        Session {
            inner: Arc::new(Inner {
                store,
                config,
                presented,
                user_agent,
                touched: AtomicBool::new(false),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Whether the handler used the session at all (if not, the layer does nothing after the request).
    pub(crate) fn touched(&self) -> bool {
        self.inner.touched.load(Ordering::Acquire)
    }

    /// Locks the state, loading the record on first use.
    async fn state(&self) -> Result<tokio::sync::MutexGuard<'_, State>, SessionError> {
        self.inner.touched.store(true, Ordering::Release);
        let mut st = self.inner.state.lock().await;
        if !st.loaded {
            if let Some(token) = &self.inner.presented {
                let key = token.store_key();
                let now = self.inner.config.clock.now();
                match self.inner.store.load(&key).await {
                    Ok(Some(loaded)) if !loaded.record.is_expired(now) => {
                        Metrics::global().count(Event::Loaded);
                        st.record = Some(loaded.record);
                        st.stored = Some((key, loaded.version));
                    }
                    Ok(_) => {
                        tracing::debug!(store_key = %key, "presented session not found; starting a new one");
                    }
                    Err(StoreError::Corrupt { .. }) => {
                        tracing::warn!(store_key = %key, "stored session is corrupt; starting a new one");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "session store failed to load a session");
                        return Err(e.into());
                    }
                }
            }
            st.loaded = true;
        }
        Ok(st)
    }

    /// The value stored under `key`, converted to `T`; `None` when there is none.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        let st = self.state().await?;
        match st.record.as_ref().and_then(|r| r.data.get(key)) {
            Some(v) => T::deserialize(v).map(Some).map_err(SessionError::Json),
            None => Ok(None),
        }
    }

    /// The raw JSON value stored under `key`.
    pub async fn get_value(&self, key: &str) -> Result<Option<Value>, SessionError> {
        let st = self.state().await?;
        Ok(st.record.as_ref().and_then(|r| r.data.get(key)).cloned())
    }

    /// Stores `value` under `key`. Setting a key to the value it already has changes nothing.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(SessionError::Json)?;
        self.insert_value(key, value).await
    }

    /// Stores a raw JSON value under `key`.
    pub async fn insert_value(&self, key: &str, value: Value) -> Result<(), SessionError> {
        let limit = self.inner.config.max_size;
        let size = key.len() + json_len(&value);
        if size > limit {
            return Err(SessionError::TooLarge { size, limit });
        }
        let mut st = self.state().await?;
        let pending_increment = st.changes.increments.contains_key(key);
        let record = self.view(&mut st);
        if record.data.get(key) == Some(&value) && !pending_increment {
            return Ok(());
        }
        set_entry(&mut record.data, key, value.clone());
        st.changes.increments.remove(key);
        match st.changes.entries.get_mut(key) {
            Some(entry) => *entry = Some(value),
            None => {
                st.changes.entries.insert(key.to_owned(), Some(value));
            }
        }
        Ok(())
    }

    /// Adds `by` (which may be negative) to the integer under `key` and answers the new value. A
    /// missing or non-integer value counts as 0.
    ///
    /// Unlike reading, adding and inserting, the store applies the increment to the value it holds
    /// when it saves: concurrent requests that each increment a counter all count.
    ///
    /// ```
    /// # async fn handler(session: sessionforge::Session) -> Result<(), sessionforge::SessionError> {
    /// let views = session.increment("views", 1).await?;
    /// # let _ = views; Ok(()) }
    /// ```
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64, SessionError> {
        let mut st = self.state().await?;
        let record = self.view(&mut st);
        let value = crate::store::add_to(record.data.get(key), by);
        set_entry(&mut record.data, key, value.into());
        let changes = &mut st.changes;
        if let Some(set) = changes.entries.get_mut(key) {
            // Set (or removed) earlier in this request: the new value is absolute.
            *set = Some(value.into());
        } else {
            let total = changes.increments.entry(key.to_owned()).or_insert(0);
            *total = total.saturating_add(by);
        }
        Ok(value)
    }

    /// Removes `key`, answering the value it had.
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        match self.remove_value(key).await? {
            Some(v) => T::deserialize(v).map(Some).map_err(SessionError::Json),
            None => Ok(None),
        }
    }

    /// Removes `key`, answering the raw value it had.
    pub async fn remove_value(&self, key: &str) -> Result<Option<Value>, SessionError> {
        let mut st = self.state().await?;
        let old = match st.record.as_mut() {
            Some(r) if r.data.contains_key(key) => Arc::make_mut(r).data.remove(key),
            _ => None,
        };
        if old.is_some() {
            st.changes.increments.remove(key);
            st.changes.entries.insert(key.to_owned(), None);
        }
        Ok(old)
    }

    /// Removes every key (the session itself, its id and user stay).
    pub async fn clear(&self) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        if let Some(r) = st.record.as_mut().filter(|r| !r.data.is_empty()) {
            Arc::make_mut(r).data.clear();
        }
        st.changes.cleared = true;
        st.changes.entries.clear();
        st.changes.increments.clear();
        Ok(())
    }

    /// All keys.
    pub async fn keys(&self) -> Result<Vec<String>, SessionError> {
        let st = self.state().await?;
        Ok(st
            .record
            .as_ref()
            .map(|r| r.data.keys().cloned().collect())
            .unwrap_or_default())
    }

    /// The whole data as a JSON object.
    pub async fn data(&self) -> Result<crate::store::Data, SessionError> {
        let st = self.state().await?;
        Ok(st
            .record
            .as_ref()
            .map(|r| r.data.clone())
            .unwrap_or_default())
    }

    /// Whether the session holds no data.
    pub async fn is_empty(&self) -> Result<bool, SessionError> {
        let st = self.state().await?;
        Ok(st.record.as_ref().is_none_or(|r| r.data.is_empty()))
    }

    /// The user the session belongs to, if set.
    pub async fn user(&self) -> Result<Option<String>, SessionError> {
        let st = self.state().await?;
        Ok(st.record.as_ref().and_then(|r| r.user.clone()))
    }

    /// Ties the session to a user (shown in listings; typically at login, together with
    /// [`Session::cycle_id`]), or unties it with `None`.
    pub async fn set_user(&self, user: Option<String>) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        let record = self.view(&mut st);
        if record.user == user {
            return Ok(());
        }
        record.user.clone_from(&user);
        st.changes.user = Some(user);
        Ok(())
    }

    /// The store key of this session as stored when the request began (`None` for a session not stored
    /// yet): the `id` the session has in [`Session::user_sessions`] and the admin listing, to mark
    /// "this device". A digest of the token, useless as a cookie.
    pub async fn store_key(&self) -> Result<Option<StoreKey>, SessionError> {
        let st = self.state().await?;
        Ok(st.stored.as_ref().map(|(k, _)| *k))
    }

    /// The live sessions of this session's user, this one included once stored: metadata only (created,
    /// last access, expiry, user agent), never a token, oldest first. Empty when the session has no
    /// user. For a "your devices" page.
    ///
    /// ```
    /// # async fn devices(session: sessionforge::Session) -> Result<(), sessionforge::SessionError> {
    /// let this = session.store_key().await?;
    /// for s in session.user_sessions().await? {
    ///     let marker = if Some(&s.id) == this.as_ref() { " (this device)" } else { "" };
    ///     println!("{:?} since {}{marker}", s.user_agent, s.created_at);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn user_sessions(&self) -> Result<Vec<Summary>, SessionError> {
        let user = {
            let st = self.state().await?;
            st.record.as_ref().and_then(|r| r.user.clone())
        };
        match user {
            Some(user) => Ok(self.inner.store.user_sessions(&user).await?),
            None => Ok(Vec::new()),
        }
    }

    /// Ends every other session of this session's user ("log out everywhere else"), at once, in the
    /// store: their next request, on any instance sharing the store, starts a fresh session. This
    /// session stays. Answers how many sessions were ended; 0 when the session has no user.
    ///
    /// ```
    /// # async fn handler(session: sessionforge::Session) -> Result<(), sessionforge::SessionError> {
    /// let ended = session.revoke_other_sessions().await?;
    /// println!("logged out of {ended} other devices");
    /// # Ok(()) }
    /// ```
    pub async fn revoke_other_sessions(&self) -> Result<u64, SessionError> {
        let (user, keep) = {
            let st = self.state().await?;
            (
                st.record.as_ref().and_then(|r| r.user.clone()),
                st.stored.as_ref().map(|(k, _)| *k),
            )
        };
        let Some(user) = user else { return Ok(0) };
        let n = self
            .inner
            .store
            .revoke_user_sessions(&user, keep.as_ref())
            .await?;
        if n > 0 {
            tracing::info!(sessions = n, "other sessions of the user revoked");
        }
        Ok(n)
    }

    /// Gives the session a new id, keeping its data: the defence against session fixation, to call when
    /// privileges change (login). The record is written under the new key before the old key is deleted,
    /// so a crash in between never loses the session.
    pub async fn cycle_id(&self) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        if st.stored.is_some() {
            st.renew = true;
        }
        Ok(())
    }

    /// Ends the session: deletes it from the store and tells the client to forget its token. Data set
    /// afterwards in the same request starts a new session under a new token.
    pub async fn destroy(&self) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        if let Some((key, _)) = st.stored.take() {
            st.retire = Some(key);
        }
        st.record = None;
        st.changes = ChangeSet::default();
        st.renew = false;
        Ok(())
    }

    /// When the session was created (`None` for a session not stored yet).
    pub async fn created_at(&self) -> Result<Option<Timestamp>, SessionError> {
        self.meta(|r| r.created_at).await
    }

    /// When the session was last written (`None` for a session not stored yet).
    pub async fn last_access(&self) -> Result<Option<Timestamp>, SessionError> {
        self.meta(|r| r.last_access).await
    }

    /// When the session will expire if not used again (`None` for a session not stored yet).
    pub async fn expires_at(&self) -> Result<Option<Timestamp>, SessionError> {
        self.meta(|r| r.expires).await
    }

    /// Sets the session's absolute deadline, the moment it ends however busy it is (for example a longer
    /// one for "remember me", a shorter one after a sensitive action). The idle timeout still applies.
    pub async fn set_deadline(&self, deadline: Timestamp) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        let record = self.view(&mut st);
        record.deadline = deadline;
        st.changes.deadline = Some(deadline);
        Ok(())
    }

    async fn meta<T>(&self, f: impl FnOnce(&Record) -> T) -> Result<Option<T>, SessionError> {
        let st = self.state().await?;
        Ok(st.record.as_deref().map(f))
    }

    /// The local view, created empty (now) if the session does not exist yet.
    fn view<'a>(&self, st: &'a mut State) -> &'a mut Record {
        let config = &self.inner.config;
        let expiry = &config.expiry;
        let ua = &self.inner.user_agent;
        let record = st.record.get_or_insert_with(|| {
            let now = config.clock.now();
            Arc::new(Record {
                created_at: now,
                last_access: now,
                expires: expiry.expires_at(now, now),
                deadline: expiry.deadline(now),
                user_agent: ua
                    .as_ref()
                    .and_then(|v| v.to_str().ok())
                    .map(|ua| ua.chars().take(MAX_USER_AGENT).collect()),
                user: None,
                data: Default::default(),
            })
        });
        Arc::make_mut(record)
    }

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
                st.changes.is_empty()
                    && !config.expiry.refresh_due(
                        record.expires,
                        record.deadline,
                        config.clock.now(),
                    )
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
        let store = &self.inner.store;
        let config = &self.inner.config;
        let now = config.clock.now();
        // A user given to the session by this request (a login): the moment the cap applies.
        let login = match &st.changes.user {
            Some(Some(user)) if config.max_sessions_per_user.is_some() => Some(user.clone()),
            _ => None,
        };

        if let Some(old) = st.retire.take() {
            store.delete(&old).await?;
            Metrics::global().count(Event::Destroyed);
            tracing::info!(store_key = %old, "session destroyed");
        }
        let empty = st
            .record
            .as_ref()
            .is_none_or(|r| r.data.is_empty() && r.user.is_none());

        if st.stored.is_none() {
            // Nothing stored under the client's token: create a session if there is anything to keep.
            if empty {
                return Ok(if self.inner.presented.is_some() && st.record.is_none() {
                    // A destroyed (or unknown) session: make the client drop its token.
                    Outcome::Remove
                } else {
                    Outcome::Nothing
                });
            }
            let record = Arc::make_mut(st.record.as_mut().expect("non-empty session has a record"));
            refresh(record, config, now);
            let (token, expires) = self.create(record).await?;
            Metrics::global().count(Event::Created);
            tracing::debug!(store_key = %token.store_key(), "session created");
            self.enforce_cap(login.as_deref(), &token.store_key()).await;
            return Ok(Outcome::Send {
                token,
                expires,
                fresh: true,
            });
        }

        let State {
            record,
            changes,
            renew,
            stored,
            ..
        } = &mut *st;
        let (key, version) = stored.as_ref().expect("checked above");
        let record = record.as_mut().expect("a stored session has a record");
        if empty && !changes.is_empty() {
            // Everything was removed: an empty session is not kept.
            store.delete(key).await?;
            return Ok(Outcome::Remove);
        }
        if *renew {
            refresh(Arc::make_mut(record), config, now);
            let (token, expires) = self.create(record).await?;
            store.delete(key).await?;
            Metrics::global().count(Event::Renewed);
            tracing::info!(old = %key, new = %token.store_key(), "session id renewed");
            self.enforce_cap(login.as_deref(), &token.store_key()).await;
            return Ok(Outcome::Send {
                token,
                expires,
                fresh: true,
            });
        }
        // The expiry moves (and the cookie is sent again) once it can move by the touch window, or
        // when the deadline changed; otherwise a change is saved under the expiry it already has.
        let touch = changes.deadline.is_some()
            || config
                .expiry
                .refresh_due(record.expires, record.deadline, now);
        if changes.is_empty() && !touch {
            return Ok(Outcome::Nothing);
        }
        if touch {
            refresh(Arc::make_mut(record), config, now);
        } else {
            Arc::make_mut(record).last_access = now;
        }
        changes.expiry_kept = !touch;
        check_size(record, config.max_size)?;
        match store.save(key, version, record, changes).await? {
            Saved::Saved => {
                Metrics::global().count(Event::Saved);
                self.enforce_cap(login.as_deref(), key).await;
                if !touch {
                    return Ok(Outcome::Nothing);
                }
                Ok(Outcome::Send {
                    token: self
                        .inner
                        .presented
                        .clone()
                        .expect("stored implies presented"),
                    expires: record.expires,
                    fresh: false,
                })
            }
            _ => {
                tracing::debug!(store_key = %key, "session deleted while the request ran; not saved");
                Ok(Outcome::Remove)
            }
        }
    }

    /// After a login (`user` given to the session `current` by this request), ends the user's least
    /// recently used other sessions beyond the configured cap. Best effort: a failure is logged, not
    /// answered (the login itself is stored), and two logins at the same moment may each see the
    /// other's session missing from their listing and leave one session over the cap until the next
    /// login.
    async fn enforce_cap(&self, user: Option<&str>, current: &StoreKey) {
        let (Some(user), Some(max)) = (user, self.inner.config.max_sessions_per_user) else {
            return;
        };
        let store = &self.inner.store;
        let mut others = match store.user_sessions(user).await {
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
            match store.delete(&s.id).await {
                Ok(_) => {
                    Metrics::global().count(Event::Destroyed);
                    tracing::info!(store_key = %s.id, max, "session ended: the user is over the session cap");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not end a session over the user's cap");
                    return;
                }
            }
        }
    }

    /// Stores `record` under a fresh token, retrying on the (astronomically unlikely) clash.
    async fn create(&self, record: &Record) -> Result<(Token, Timestamp), SessionError> {
        check_size(record, self.inner.config.max_size)?;
        for _ in 0..3 {
            let token = Token::generate();
            if self.inner.store.create(&token.store_key(), record).await? == Created::Created {
                return Ok((token, record.expires));
            }
            tracing::warn!("session key clash on create; drawing a new token");
        }
        Err(SessionError::Store(StoreError::Conflict))
    }
}

/// Sets `data[key]`, copying the key only when it is new (a map keeps the key it has).
fn set_entry(data: &mut crate::store::Data, key: &str, value: Value) {
    match data.get_mut(key) {
        Some(v) => *v = value,
        None => {
            data.insert(key.to_owned(), value);
        }
    }
}

/// Sets a record's access time to `now` and its expiry per the configured timeouts.
fn refresh(record: &mut Record, config: &Config, now: Timestamp) {
    record.last_access = now;
    record.expires = now.plus(config.expiry.idle).min(record.deadline);
}

fn check_size(record: &Record, limit: usize) -> Result<(), SessionError> {
    let size = json_len(&record.data);
    if size > limit {
        Err(SessionError::TooLarge { size, limit })
    } else {
        Ok(())
    }
}

/// The length of `value` as compact JSON, counted without building the text.
fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, value);
    n.0
}
