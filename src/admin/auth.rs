//! Who may use the admin API: [`AdminAuth`] and the [`PeerAddr`] extension.

use http::header::AUTHORIZATION;
use http::{Extensions, HeaderMap};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use subtle::ConstantTimeEq;

/// The socket address of the peer that sent a request, as a request extension.
///
/// The admin service's loopback check reads the **socket** peer, never a header such as
/// `X-Forwarded-For` (which any client can write). Axum users get it for free from
/// `Router::into_make_service_with_connect_info::<SocketAddr>()` (feature `axum`); with plain Hyper or
/// Tonic, insert it yourself where you accept the connection:
///
/// ```
/// use sessionforge::admin::PeerAddr;
/// use std::net::SocketAddr;
///
/// let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr(peer));
/// assert_eq!(req.extensions().get::<PeerAddr>().unwrap().0.port(), 50000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// How the admin service decides who may list, delete and clean up sessions.
///
/// Build one with a constructor; there is no `Default` on purpose, and [`AdminService::new`] starts from
/// [`AdminAuth::loopback_only`].
///
/// | mode | who gets in | refused with |
/// |---|---|---|
/// | [`bearer`](AdminAuth::bearer) | `Authorization: Bearer <token>` | 401 + `WWW-Authenticate: Bearer` |
/// | [`loopback_only`](AdminAuth::loopback_only) | a socket peer on 127.0.0.0/8 or ::1 | 403 |
/// | [`bearer_or_loopback`](AdminAuth::bearer_or_loopback) | either of the above | 401 + `WWW-Authenticate: Bearer` |
/// | [`insecure_open_to_anyone`](AdminAuth::insecure_open_to_anyone) | everyone | never |
///
/// Tokens are compared in constant time (as SHA-256 digests, so not even their length leaks). An empty
/// token matches nothing: a service built from an unset variable fails closed instead of opening up.
///
/// ```
/// use sessionforge::admin::AdminAuth;
///
/// let auth = match std::env::var("SESSION_ADMIN_TOKEN") {
///     Ok(token) if !token.is_empty() => AdminAuth::bearer(token),
///     _ => AdminAuth::loopback_only(),
/// };
/// assert!(!format!("{auth:?}").contains("secret"));
/// assert!(!format!("{:?}", AdminAuth::bearer("secret")).contains("secret"));
/// ```
///
/// [`AdminService::new`]: super::AdminService::new
#[derive(Clone)]
pub struct AdminAuth {
    /// SHA-256 of the token; `None`: no token accepted.
    token: Option<[u8; 32]>,
    loopback: bool,
    open: bool,
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match (self.open, self.token.is_some(), self.loopback) {
            (true, _, _) => "insecure_open_to_anyone",
            (false, true, true) => "bearer_or_loopback",
            (false, true, false) => "bearer",
            (false, false, true) => "loopback_only",
            (false, false, false) => "nobody",
        };
        f.debug_struct("AdminAuth")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

/// The outcome of an access check: `Ok` or the refusal to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Denied {
    /// No token, or a wrong one, where a token would have been accepted: 401.
    Unauthorized { token_sent: bool },
    /// Loopback-only and the peer is elsewhere: 403.
    NotLoopback,
    /// Loopback-only and the request carries no peer address: 403, with how to provide one.
    NoPeerAddr,
}

impl AdminAuth {
    /// Only requests carrying `Authorization: Bearer <token>`, from anywhere. The choice behind a reverse
    /// proxy (where every peer looks local) and for remote scrapers of `/metrics`.
    ///
    /// An empty `token` matches nothing: every request is refused.
    pub fn bearer(token: impl AsRef<str>) -> Self {
        AdminAuth {
            token: digest_of(token.as_ref()),
            loopback: false,
            open: false,
        }
    }

    /// Only requests whose socket peer is a loopback address (the same machine), so the seed's
    /// `curl http://localhost:3001/api/sessions/stats` works and nothing from outside does. The default.
    ///
    /// The peer comes from [`PeerAddr`] or (feature `axum`) Axum's `ConnectInfo<SocketAddr>`; a request
    /// with neither is refused. Behind a reverse proxy on the same host every request looks local: use
    /// [`AdminAuth::bearer`] there.
    pub fn loopback_only() -> Self {
        AdminAuth {
            token: None,
            loopback: true,
            open: false,
        }
    }

    /// A loopback peer, or any peer with the bearer token.
    pub fn bearer_or_loopback(token: impl AsRef<str>) -> Self {
        AdminAuth {
            token: digest_of(token.as_ref()),
            loopback: true,
            open: false,
        }
    }

    /// **No protection at all**: anyone who can reach the service can list, delete and clean up every
    /// session. Only for a service bound to a private interface you fully control, or behind your own
    /// authentication layer.
    pub fn insecure_open_to_anyone() -> Self {
        AdminAuth {
            token: None,
            loopback: false,
            open: true,
        }
    }

    /// Whether this mode lets everyone in.
    pub fn is_open_to_anyone(&self) -> bool {
        self.open
    }

    /// Decides on a request from its headers and extensions.
    pub(crate) fn check(&self, headers: &HeaderMap, ext: &Extensions) -> Result<(), Denied> {
        if self.open {
            return Ok(());
        }
        let presented = bearer_token(headers);
        if let (Some(expected), Some(presented)) = (&self.token, presented) {
            let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
            if bool::from(got.ct_eq(expected)) {
                return Ok(());
            }
        }
        let token_sent = headers.contains_key(AUTHORIZATION);
        // A wrong token is never rescued by the loopback rule: it is a mistake worth reporting.
        if self.token.is_some() && token_sent {
            return Err(Denied::Unauthorized { token_sent });
        }
        if !self.loopback {
            return Err(Denied::Unauthorized { token_sent });
        }
        match peer_of(ext) {
            Some(peer) if is_loopback(peer.ip()) => Ok(()),
            _ if self.token.is_some() => Err(Denied::Unauthorized { token_sent }),
            Some(_) => Err(Denied::NotLoopback),
            None => Err(Denied::NoPeerAddr),
        }
    }
}

fn digest_of(token: &str) -> Option<[u8; 32]> {
    if token.is_empty() {
        tracing::warn!("admin bearer token is empty; the admin API will refuse every request");
        None
    } else {
        Some(Sha256::digest(token.as_bytes()).into())
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), if well-formed.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// The socket peer: our [`PeerAddr`] first, then Axum's `ConnectInfo<SocketAddr>`.
fn peer_of(ext: &Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = ext.get::<PeerAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    None
}

/// Loopback, including IPv4 loopback seen through a dual-stack socket (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ext(peer: Option<&str>) -> Extensions {
        let mut e = Extensions::new();
        if let Some(p) = peer {
            e.insert(PeerAddr(p.parse().unwrap()));
        }
        e
    }

    fn auth_header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_right_token_opens_and_a_wrong_or_missing_one_is_unauthorized() {
        let auth = AdminAuth::bearer("s3cret");
        let none = ext(None);
        assert_eq!(auth.check(&auth_header("Bearer s3cret"), &none), Ok(()));
        assert_eq!(auth.check(&auth_header("bearer s3cret"), &none), Ok(()));
        assert_eq!(
            auth.check(&auth_header("Bearer s3cre"), &none),
            Err(Denied::Unauthorized { token_sent: true })
        );
        assert_eq!(
            auth.check(&auth_header("Basic czNjcmV0"), &none),
            Err(Denied::Unauthorized { token_sent: true })
        );
        assert_eq!(
            auth.check(&HeaderMap::new(), &ext(Some("127.0.0.1:1"))),
            Err(Denied::Unauthorized { token_sent: false })
        );
    }

    #[test]
    fn an_empty_token_matches_nothing() {
        let auth = AdminAuth::bearer("");
        assert!(auth.check(&auth_header("Bearer "), &ext(None)).is_err());
        assert!(auth.check(&HeaderMap::new(), &ext(None)).is_err());
    }

    #[test]
    fn loopback_only_admits_local_peers_including_mapped_ipv4() {
        let auth = AdminAuth::loopback_only();
        let h = HeaderMap::new();
        for ok in [
            "127.0.0.1:5",
            "127.8.9.10:5",
            "[::1]:5",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert_eq!(auth.check(&h, &ext(Some(ok))), Ok(()), "{ok}");
        }
        for far in [
            "10.0.0.1:5",
            "[2001:db8::1]:5",
            "[::ffff:10.0.0.1]:5",
            "0.0.0.0:5",
        ] {
            assert_eq!(
                auth.check(&h, &ext(Some(far))),
                Err(Denied::NotLoopback),
                "{far}"
            );
        }
        assert_eq!(auth.check(&h, &ext(None)), Err(Denied::NoPeerAddr));
    }

    #[test]
    fn x_forwarded_for_is_never_read() {
        let auth = AdminAuth::loopback_only();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
        h.insert("forwarded", HeaderValue::from_static("for=127.0.0.1"));
        assert_eq!(
            auth.check(&h, &ext(Some("10.1.2.3:4"))),
            Err(Denied::NotLoopback)
        );
    }

    #[test]
    fn token_or_loopback_takes_either_and_reports_401_to_strangers() {
        let auth = AdminAuth::bearer_or_loopback("t");
        assert_eq!(
            auth.check(&HeaderMap::new(), &ext(Some("127.0.0.1:1"))),
            Ok(())
        );
        assert_eq!(
            auth.check(&auth_header("Bearer t"), &ext(Some("10.0.0.1:1"))),
            Ok(())
        );
        assert_eq!(
            auth.check(&HeaderMap::new(), &ext(Some("10.0.0.1:1"))),
            Err(Denied::Unauthorized { token_sent: false })
        );
    }

    #[test]
    fn open_mode_admits_everyone_and_says_so() {
        let auth = AdminAuth::insecure_open_to_anyone();
        assert!(auth.is_open_to_anyone());
        assert_eq!(auth.check(&HeaderMap::new(), &ext(None)), Ok(()));
        assert!(format!("{auth:?}").contains("insecure_open_to_anyone"));
    }
}
