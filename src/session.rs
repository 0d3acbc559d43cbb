//! The [`Session`] handle a handler sees.
//!
//! A `Session` is cheap to clone (an `Arc`); every clone is the same session. It loads its record on first
//! use, not before: a handler that never touches it costs no store call. Each change is recorded in a
//! [`ChangeSet`] as well as applied to the local view, and when the response is ready the layer saves that
//! change-set (or nothing, if nothing changed): see `commit.rs`.
//!
//! ```
//! # async fn handler(session: sessionforge::Session) -> Result<(), sessionforge::SessionError> {
//! let visits: u64 = session.get("visits").await?.unwrap_or(0);
//! session.insert("visits", visits + 1).await?;
//! # Ok(()) }
//! ```

use crate::config::{SessionConfig, MAX_DEPTH};
use crate::error::SessionError;
use crate::expiry::Timestamp;
use crate::id::{StoreKey, Token};
use crate::metrics::Event;
use crate::store::{ChangeSet, Data, Record, StoreError, Summary, Version};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Longest `User-Agent` kept in the session's metadata.
const MAX_USER_AGENT: usize = 256;

/// What the request carried under the session's cookie or header.
#[derive(Debug)]
pub(crate) enum Presented {
    /// Nothing.
    Nothing,
    /// A value that is not a token of ours (bad shape or signature).
    Malformed,
    /// A well-formed token.
    Token(Token),
}

/// The request's view of its session.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) loaded: bool,
    /// The session as stored when loaded: its key and version. `None`: nothing stored (yet).
    pub(crate) stored: Option<(StoreKey, Version)>,
    /// The local view: the loaded record with this request's changes applied. Shared with the store's
    /// copy until the request changes something ([`Arc::make_mut`] copies it then).
    pub(crate) record: Option<Arc<Record>>,
    pub(crate) changes: ChangeSet,
    /// A key to delete when the request ends (a destroyed session).
    pub(crate) retire: Option<StoreKey>,
    /// `cycle_id` was called: move the data to a new token.
    pub(crate) renew: bool,
}

pub(crate) struct Inner {
    pub(crate) config: Arc<SessionConfig>,
    pub(crate) presented: Presented,
    /// The request's `User-Agent`, turned into text only when a new session's record is made.
    user_agent: Option<http::HeaderValue>,
    touched: AtomicBool,
    pub(crate) state: Mutex<State>,
}

/// A session, as handlers see it. Get it from the request extensions, or with the Axum extractor.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field(
                "token_presented",
                &matches!(self.inner.presented, Presented::Token(_)),
            )
            .field("touched", &self.touched())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        config: Arc<SessionConfig>,
        presented: Presented,
        user_agent: Option<http::HeaderValue>,
    ) -> Self {
        Session {
            inner: Arc::new(Inner {
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
            if let Presented::Token(token) = &self.inner.presented {
                let config = &self.inner.config;
                let key = config.format.store_key(token);
                match config.store.load(&key).await {
                    Ok(Some(loaded))
                        if !loaded.record.tombstone
                            && !loaded.record.is_expired(config.clock.now()) =>
                    {
                        crate::metrics::event(Event::Loaded);
                        st.record = Some(loaded.record);
                        st.stored = Some((key, loaded.version));
                    }
                    Ok(_) => {
                        crate::metrics::invalid_token("unknown");
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
    ///
    /// Fails with [`SessionError::TooLarge`] when the session would outgrow the layer's size limit
    /// and with [`SessionError::TooDeep`] for a value nested more than 64 levels deep (which some
    /// stored form could not be read back from); nothing is changed then.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<(), SessionError> {
        let value = serde_json::to_value(value).map_err(SessionError::Json)?;
        self.insert_value(key, value).await
    }

    /// Stores a raw JSON value under `key` (see [`Session::insert`]).
    pub async fn insert_value(&self, key: &str, value: Value) -> Result<(), SessionError> {
        if depth(&value) > MAX_DEPTH {
            return Err(crate::log::refused(SessionError::TooDeep {
                limit: MAX_DEPTH,
            }));
        }
        let limit = self.inner.config.max_size;
        let size = key.len() + json_len(&value);
        if size > limit {
            return Err(crate::log::refused(SessionError::TooLarge { size, limit }));
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
            Some(r) if r.data.contains_key(key) => Arc::make_mut(r).data.shift_remove(key),
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
    pub async fn data(&self) -> Result<Data, SessionError> {
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

    /// Ties the session to a user (shown in listings, indexed per user; typically at login, together
    /// with [`Session::cycle_id`]), or unties it with `None`.
    pub async fn set_user(&self, user: Option<String>) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        let record = self.view(&mut st);
        if record.user == user {
            return Ok(());
        }
        record.user.clone_from(&user);
        record.user_since = user.as_ref().map(|_| self.inner.config.clock.now());
        st.changes.user = Some(user);
        Ok(())
    }

    /// The store key of this session as stored when the request began (`None` for a session not stored
    /// yet): the `id` the session has in [`Session::user_sessions`] and the admin listing, to mark
    /// "this device". For the native format a digest of the token, useless as a cookie.
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
            Some(user) => Ok(self.inner.config.store.user_sessions(&user).await?),
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
            .config
            .store
            .revoke_user_sessions(&user, keep.as_ref())
            .await?;
        if n > 0 {
            tracing::info!(sessions = n, "other sessions of the user revoked");
        }
        Ok(n)
    }

    /// Gives the session a new id, keeping its data: the defence against session fixation, to call when
    /// privileges change (login). The store moves the session to the new key when the request ends,
    /// writing the new key before removing the old one; if the session was revoked meanwhile, it stays
    /// revoked and the client is told to forget its token.
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
        st.retire = match (st.stored.take(), &self.inner.presented) {
            (Some((key, _)), _) => Some(key),
            // A presented token whose session could not be read (another instance's during an
            // outage, say): its key is deleted all the same, so a logout always ends it.
            (None, Presented::Token(t)) => Some(self.inner.config.format.store_key(t)),
            (None, _) => None,
        };
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

    /// Sets the session's absolute deadline, the moment it ends however busy it is, overriding the
    /// layer's absolute timeout for this session: a later one for "remember me", an earlier one after a
    /// sensitive action. Its idle timeout still applies.
    pub async fn set_deadline(&self, deadline: Timestamp) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        self.view(&mut st).deadline = deadline;
        st.changes.deadline = Some(deadline);
        Ok(())
    }

    /// Gives the session its own idle timeout, overriding the layer's (`None`: the layer's again). It
    /// is stored with the session and honoured by every store: the store keeps the session, and the
    /// cookie's `Max-Age` follows, for that long after each use (up to the deadline).
    ///
    /// "Remember me" for 30 days:
    ///
    /// ```
    /// # async fn login(session: sessionforge::Session) -> Result<(), sessionforge::SessionError> {
    /// use sessionforge::expiry::{Clock, SystemClock};
    /// use std::time::Duration;
    ///
    /// let month = Duration::from_secs(30 * 24 * 3600);
    /// session.set_idle_timeout(Some(month)).await?;
    /// session.set_deadline(SystemClock.now().plus(month)).await?;
    /// session.set_persistent(Some(true)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_idle_timeout(&self, idle: Option<Duration>) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        self.view(&mut st).idle_timeout = idle;
        st.changes.idle_timeout = Some(idle);
        Ok(())
    }

    /// Whether this session's cookie outlives the browser session (`Some(true)`: a persistent cookie
    /// whose `Max-Age` follows the expiry; `Some(false)`: a browser-session cookie), overriding the
    /// layer's setting; `None`: the layer's again.
    pub async fn set_persistent(&self, persistent: Option<bool>) -> Result<(), SessionError> {
        let mut st = self.state().await?;
        self.view(&mut st).persistent = persistent;
        st.changes.persistent = Some(persistent);
        Ok(())
    }

    async fn meta<T>(&self, f: impl FnOnce(&Record) -> T) -> Result<Option<T>, SessionError> {
        let st = self.state().await?;
        Ok(st.record.as_deref().map(f))
    }

    /// The local view, created empty (now) if the session does not exist yet.
    fn view<'a>(&self, st: &'a mut State) -> &'a mut Record {
        let config = &self.inner.config;
        let ua = &self.inner.user_agent;
        let record = st.record.get_or_insert_with(|| {
            let now = config.clock.now();
            let expiry = &config.expiry;
            let mut r = Record::new(now, now.plus(expiry.idle()), expiry.deadline(now));
            r.user_agent = ua
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
            Arc::new(r)
        });
        Arc::make_mut(record)
    }
}

/// Sets `data[key]`, copying the key only when it is new (a map keeps the key it has).
fn set_entry(data: &mut Data, key: &str, value: Value) {
    match data.get_mut(key) {
        Some(v) => *v = value,
        None => {
            data.insert(key.to_owned(), value);
        }
    }
}

/// How many levels of arrays and objects `value` has (a scalar has none), counted without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// The length of `value` as compact JSON, counted without building the text.
pub(crate) fn json_len<T: Serialize + ?Sized>(value: &T) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_counts_nested_arrays_and_objects_without_recursing() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        let mut deep = json!(0);
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        assert_eq!(depth(&deep), 1_000);
    }
}
