//! [`SessionLayer`]: the settings, applied to a service as a Tower layer.

use crate::config::{LayerConfig, SessionConfig, StoreErrorPolicy};
use crate::expiry::Expiry;
use crate::service::SessionService;
use crate::store::SessionStore;
use crate::transport::{CookieSettings, Signer, Transport};
use cookie::{Key, SameSite};
use http::HeaderName;
use std::sync::Arc;
use std::time::Duration;
use tower_layer::Layer;

/// Adds a [`Session`](crate::Session) to every request's extensions and saves what the handler changed.
///
/// Build it with a store and adjust it with the consuming `with_*` methods; every service it makes
/// shares those settings. The store's [format](crate::format) decides what tokens look like and its
/// [clock](SessionStore::clock) what time it is, so the layer and the store always agree.
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
    config: Arc<LayerConfig>,
}

impl std::fmt::Debug for SessionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        f.debug_struct("SessionLayer")
            .field("store", &c.session.store.name())
            .field("format", &c.session.format.name())
            .field("transport", &c.transport)
            .field("signer", &c.signer)
            .field("expiry", &c.session.expiry)
            .field("policy", &c.policy)
            .field("max_size", &c.session.max_size)
            .field("max_sessions_per_user", &c.session.max_sessions_per_user)
            .finish_non_exhaustive()
    }
}

impl SessionLayer {
    /// A layer keeping sessions in `store`: a cookie named as the store's format says (`id` for the
    /// native format), the default [`Expiry`], 64 KiB of data per session.
    pub fn new(store: impl SessionStore) -> Self {
        let format = store.format();
        let cookie = CookieSettings {
            name: format.cookie_name().to_owned(),
            ..CookieSettings::default()
        };
        let clock = store.clock();
        SessionLayer {
            config: Arc::new(LayerConfig {
                session: Arc::new(SessionConfig {
                    store: Arc::new(store),
                    format,
                    clock,
                    expiry: Expiry::default(),
                    max_size: 64 * 1024,
                    max_sessions_per_user: None,
                    persistent: true,
                }),
                transport: Transport::Cookie(cookie),
                signer: Signer::default(),
                policy: StoreErrorPolicy::Fail,
                shutdown: None,
            }),
        }
    }

    fn layer_config(&mut self) -> &mut LayerConfig {
        Arc::make_mut(&mut self.config)
    }

    fn session_config(&mut self) -> &mut SessionConfig {
        Arc::make_mut(&mut self.layer_config().session)
    }

    fn cookie(mut self, f: impl FnOnce(&mut CookieSettings)) -> Self {
        let transport = &mut self.layer_config().transport;
        if !matches!(transport, Transport::Cookie(_)) {
            *transport = Transport::Cookie(CookieSettings::default());
        }
        if let Transport::Cookie(s) = transport {
            f(s);
        }
        self
    }

    /// Carries the token in a cookie with this name (default `id`, or the store format's).
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

    /// Browser-session cookies (no `Max-Age`: gone when the browser closes) instead of ones whose
    /// `Max-Age` follows the session's expiry, unless a session says otherwise
    /// ([`Session::set_persistent`](crate::Session::set_persistent)). The server-side timeouts apply
    /// either way.
    pub fn with_browser_session_cookie(mut self) -> Self {
        self.session_config().persistent = false;
        self
    }

    /// Carries the token in a request header instead of a cookie (for gRPC metadata and API clients).
    /// A new token comes back in the same response header.
    pub fn with_header(mut self, name: HeaderName) -> Self {
        self.layer_config().transport = Transport::Header(name);
        self
    }

    /// Signs tokens with the first key and accepts tokens signed with any of them (key rotation). A
    /// format that signs its own tokens (express) ignores these.
    pub fn with_signing_keys(mut self, keys: impl IntoIterator<Item = Key>) -> Self {
        self.layer_config().signer = Signer::new(keys.into_iter().collect());
        self
    }

    /// Both timeouts and the touch fraction at once.
    pub fn with_expiry(mut self, expiry: Expiry) -> Self {
        self.session_config().expiry = expiry;
        self
    }

    /// How long a session lives after its last use (default 24 hours), unless it has its own
    /// ([`Session::set_idle_timeout`](crate::Session::set_idle_timeout)).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Self {
        let c = self.session_config();
        c.expiry = c.expiry.with_idle(idle);
        self
    }

    /// How long a session lives after creation, however busy (default 7 days), unless it has its own
    /// deadline ([`Session::set_deadline`](crate::Session::set_deadline)).
    pub fn with_absolute_timeout(mut self, absolute: Duration) -> Self {
        let c = self.session_config();
        c.expiry = c.expiry.with_absolute(absolute);
        self
    }

    /// How far, as a fraction of the idle window (0.0 to 1.0), a session's expiry must be able to move
    /// before a request moves it (default 0.25); see [`Expiry::with_touch_after`].
    pub fn with_touch_after(mut self, fraction: f64) -> Self {
        let c = self.session_config();
        c.expiry = c.expiry.with_touch_after(fraction);
        self
    }

    /// What to answer when saving fails (default [`StoreErrorPolicy::Fail`]).
    pub fn with_store_error_policy(mut self, policy: StoreErrorPolicy) -> Self {
        self.layer_config().policy = policy;
        self
    }

    /// The largest session data, in bytes of JSON (default 64 KiB). Larger inserts fail with
    /// [`SessionError::TooLarge`](crate::SessionError::TooLarge).
    pub fn with_max_size(mut self, bytes: usize) -> Self {
        self.session_config().max_size = bytes;
        self
    }

    /// Counts saves in progress with `shutdown`, so [`Shutdown::drain`](crate::shutdown::Shutdown::drain)
    /// can wait for them.
    pub fn with_shutdown(mut self, shutdown: &crate::shutdown::Shutdown) -> Self {
        self.layer_config().shutdown = Some(shutdown.clone());
        self
    }

    /// At most `max` concurrent sessions per user (at least 1): when a request gives its session a
    /// user ([`Session::set_user`](crate::Session::set_user), at login), the user's least recently
    /// used other sessions beyond `max` are ended, as by
    /// [`SessionStore::revoke_user_sessions`]. The session logging in is never the one ended.
    ///
    /// The cap is applied at login, after the session is stored, and is best effort: two logins of
    /// one user at the same instant may leave one session over the cap until the next login, and a
    /// failure to apply it (a store without a per-user index) is logged rather than failing the login.
    /// Default: no cap.
    ///
    /// ```
    /// use sessionforge::{SessionLayer, store::MemoryStore};
    ///
    /// // One phone, one laptop, one tablet; a fourth login ends the least recently used.
    /// let layer = SessionLayer::new(MemoryStore::new()).with_max_sessions_per_user(3);
    /// ```
    pub fn with_max_sessions_per_user(mut self, max: usize) -> Self {
        self.session_config().max_sessions_per_user = Some(max.max(1));
        self
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.config.clone())
    }
}
