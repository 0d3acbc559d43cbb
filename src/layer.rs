//! [`SessionLayer`]: the configuration, applied to a service as a Tower layer.

use crate::expiry::{Clock, Expiry, SharedClock, SystemClock};
use crate::service::SessionService;
use crate::store::{DynStore, SessionStore};
use crate::transport::{CookieSettings, Signer, Transport};
use cookie::{Key, SameSite};
use http::HeaderName;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// What the layer answers when the store fails while saving a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorPolicy {
    /// Replace the response with a JSON error: `503 {"error":"session store unavailable"}` for an
    /// unavailable store, 413 for an oversized session, 500 otherwise. gRPC requests get
    /// `grpc-status: 14` (UNAVAILABLE) instead. The default: a client is never told a change was kept
    /// when it was not.
    #[default]
    Fail,
    /// Log the error and send the handler's response unchanged (the change is lost).
    Ignore,
}

pub(crate) struct Config {
    pub(crate) transport: Transport,
    pub(crate) signer: Signer,
    pub(crate) expiry: Expiry,
    pub(crate) clock: SharedClock,
    pub(crate) policy: StoreErrorPolicy,
    pub(crate) max_size: usize,
    pub(crate) shutdown: Option<crate::shutdown::Shutdown>,
    pub(crate) max_sessions_per_user: Option<usize>,
}

/// Adds a [`Session`](crate::Session) to every request's extensions and saves what the handler changed.
///
/// Build it with a store and adjust it with the consuming `with_*` methods:
///
/// ```
/// use sessionforge::{SessionLayer, store::MemoryStore};
/// use std::time::Duration;
///
/// let layer = SessionLayer::new(MemoryStore::new())
///     .with_cookie_name("sid")
///     .with_idle_timeout(Duration::from_secs(30 * 60))
///     .with_absolute_timeout(Duration::from_secs(8 * 3600));
/// ```
#[derive(Clone)]
#[must_use]
pub struct SessionLayer {
    store: Arc<dyn DynStore>,
    transport: Transport,
    keys: Vec<Key>,
    expiry: Expiry,
    clock: SharedClock,
    policy: StoreErrorPolicy,
    max_size: usize,
    shutdown: Option<crate::shutdown::Shutdown>,
    max_sessions_per_user: Option<usize>,
    /// Built once, on first use, so that every service the layer makes shares one config.
    built: Arc<std::sync::OnceLock<Arc<Config>>>,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("transport", &self.transport)
            .field("signing_keys", &self.keys.len())
            .field("expiry", &self.expiry)
            .field("policy", &self.policy)
            .field("max_size", &self.max_size)
            .field("max_sessions_per_user", &self.max_sessions_per_user)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer keeping sessions in `store`, with a cookie named `id` and the default [`Expiry`].
    pub fn new(store: impl SessionStore) -> Self {
        SessionLayer {
            store: Arc::new(store),
            transport: Transport::Cookie(CookieSettings::default()),
            keys: Vec::new(),
            expiry: Expiry::default(),
            clock: Arc::new(SystemClock),
            policy: StoreErrorPolicy::Fail,
            max_size: 64 * 1024,
            shutdown: None,
            max_sessions_per_user: None,
            built: Default::default(),
        }
    }

    fn cookie(mut self, f: impl FnOnce(&mut CookieSettings)) -> Self {
        if !matches!(self.transport, Transport::Cookie(_)) {
            self.transport = Transport::Cookie(CookieSettings::default());
        }
        if let Transport::Cookie(s) = &mut self.transport {
            f(s);
        }
        self.built = Default::default();
        self
    }

    /// Carries the token in a cookie with this name (default `id`).
    pub fn with_cookie_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.cookie(|s| s.name = name)
    }

    /// The cookie's `Path` (default `/`).
    pub fn with_path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.cookie(|s| s.path = path)
    }

    /// The cookie's `Domain` (default none: this host only).
    pub fn with_domain(self, domain: impl Into<String>) -> Self {
        let domain = domain.into();
        self.cookie(|s| s.domain = Some(domain))
    }

    /// Whether the cookie is `Secure` (default `true`).
    pub fn with_secure(self, secure: bool) -> Self {
        self.cookie(|s| s.secure = secure)
    }

    /// Whether the cookie is `HttpOnly` (default `true`).
    pub fn with_http_only(self, http_only: bool) -> Self {
        self.cookie(|s| s.http_only = http_only)
    }

    /// The cookie's `SameSite` (default `Lax`).
    pub fn with_same_site(self, same_site: SameSite) -> Self {
        self.cookie(|s| s.same_site = same_site)
    }

    /// Names the cookie `__Host-<name>`, which browsers accept only when `Secure`, with `Path=/` and no
    /// `Domain`: the strongest binding of a cookie to one origin.
    pub fn with_host_prefix(self) -> Self {
        self.cookie(|s| s.host_prefix = true)
    }

    /// A browser-session cookie (no `Max-Age`: gone when the browser closes) instead of one whose
    /// `Max-Age` follows the session's expiry. The server-side timeouts apply either way.
    pub fn with_browser_session_cookie(self) -> Self {
        self.cookie(|s| s.persistent = false)
    }

    /// Carries the token in a request header instead of a cookie (for gRPC metadata and API clients).
    /// A new token comes back in the same response header.
    pub fn with_header(mut self, name: HeaderName) -> Self {
        self.transport = Transport::Header(name);
        self.built = Default::default();
        self
    }

    /// Signs tokens with the first key and accepts tokens signed with any of them (key rotation).
    pub fn with_signing_keys(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        self.keys = keys.into_iter().collect();
        self.built = Default::default();
        self
    }

    /// Both timeouts and the touch interval at once.
    pub fn with_expiry(mut self, expiry: Expiry) -> Self {
        self.expiry = expiry;
        self.built = Default::default();
        self
    }

    /// How long a session lives after its last use (default 24 hours).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        self.expiry.idle = idle;
        self.built = Default::default();
        self
    }

    /// How long a session lives after creation, however busy (default 7 days).
    pub fn with_absolute_timeout(mut self, absolute: Duration) -> Self {
        self.expiry.absolute = absolute;
        self.built = Default::default();
        self
    }

    /// How far, as a fraction of the idle window (0.0 to 1.0), a session's expiry must be able to move
    /// before a request refreshes it (default 0.25). Until then a read-only request writes nothing, and
    /// a request that changes data saves it without moving the expiry, so no `Set-Cookie` is sent and
    /// the store's expiry index is left alone. 0.0 refreshes on every request that uses the session.
    pub fn with_touch_after(mut self, fraction: f64) -> Self {
        self.expiry.touch_after_permille = (fraction.clamp(0.0, 1.0) * 1000.0).round() as u16;
        self.built = Default::default();
        self
    }

    /// Where time comes from (tests use [`ManualClock`](crate::expiry::ManualClock)).
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self.built = Default::default();
        self
    }

    /// What to answer when saving fails (default [`StoreErrorPolicy::Fail`]).
    pub fn with_store_error_policy(mut self, policy: StoreErrorPolicy) -> Self {
        self.policy = policy;
        self.built = Default::default();
        self
    }

    /// The largest session data, in bytes of JSON (default 64 KiB). Larger inserts fail with
    /// [`SessionError::TooLarge`](crate::SessionError::TooLarge).
    pub fn with_max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self.built = Default::default();
        self
    }

    /// Counts saves in progress with `shutdown`, so [`Shutdown::drain`](crate::shutdown::Shutdown::drain)
    /// can wait for them.
    pub fn with_shutdown(mut self, shutdown: &crate::shutdown::Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self.built = Default::default();
        self
    }

    /// At most `max` concurrent sessions per user (at least 1): when a request gives its session a
    /// user ([`Session::set_user`](crate::Session::set_user), at login), the user's least recently
    /// used other sessions beyond `max` are ended, as by
    /// [`SessionStore::revoke_user_sessions`](crate::store::SessionStore::revoke_user_sessions). The
    /// session logging in is never the one ended.
    ///
    /// The cap is applied at login, after the session is stored, and is best effort: two logins of
    /// one user at the same instant may leave one session over the cap until the next login, and a
    /// failure to apply it is logged rather than failing the login. Default: no cap.
    ///
    /// ```
    /// use sessionforge::{SessionLayer, store::MemoryStore};
    ///
    /// // One phone, one laptop, one tablet; a fourth login ends the least recently used.
    /// let layer = SessionLayer::new(MemoryStore::new()).with_max_sessions_per_user(3);
    /// ```
    pub fn with_max_sessions_per_user(mut self, max: usize) -> Self {
        self.max_sessions_per_user = Some(max.max(1));
        self.built = Default::default();
        self
    }

    fn config(&self) -> Arc<Config> {
        self.built
            .get_or_init(|| {
                Arc::new(Config {
                    transport: self.transport.clone(),
                    signer: Signer::new(self.keys.clone()),
                    expiry: self.expiry,
                    clock: self.clock.clone(),
                    policy: self.policy,
                    max_size: self.max_size,
                    shutdown: self.shutdown.clone(),
                    max_sessions_per_user: self.max_sessions_per_user,
                })
            })
            .clone()
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.store.clone(), self.config())
    }
}
