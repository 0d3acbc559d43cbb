//! Who may use the admin API: [`AdminAuth`], applied to the protected routes as a layer, and the
//! [`PeerAddr`] extension it reads.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The socket address of the peer that sent a request, as a request extension.
///
/// The loopback check reads the **socket** peer, never a header such as `X-Forwarded-For` (which any
/// client can write). Axum users get it from `Router::into_make_service_with_connect_info::<SocketAddr>()`;
/// with plain Hyper or Tonic, insert it where you accept the connection:
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
/// | mode | who gets in | refused with |
/// |---|---|---|
/// | [`bearer`](AdminAuth::bearer) | `Authorization: Bearer <token>` | 401 + `WWW-Authenticate: Bearer` |
/// | [`loopback_only`](AdminAuth::loopback_only) | a socket peer on 127.0.0.0/8 or ::1, asking for a loopback host name, not through a proxy | 403 |
/// | [`bearer_or_loopback`](AdminAuth::bearer_or_loopback) | either of the above | 401 + `WWW-Authenticate: Bearer` |
/// | [`insecure_open_to_anyone`](AdminAuth::insecure_open_to_anyone) | everyone | never |
///
/// Three kinds of request reach a loopback socket without coming from the operator, and loopback mode
/// refuses each (403, with a message saying to set a token):
///
/// * **through a reverse proxy on the same host** (every proxied request has a loopback peer): any
///   request carrying `Forwarded`, `X-Forwarded-For` or `X-Real-IP`;
/// * **DNS rebinding** (a page on `evil.example` whose name now points at 127.0.0.1): any `Host` but
///   `localhost`, `127.0.0.1` and `[::1]` (any port), plus names given to [`AdminAuth::allow_host`];
/// * **cross-site requests** from the operator's own browser: in **every** mode, a state-changing
///   request (`POST`, `DELETE`, …) with `Sec-Fetch-Site: cross-site` or an `Origin` other than the
///   request's own host is refused.
///
/// Tokens are compared in constant time (as SHA-256 digests, so not even their length leaks). An empty
/// token matches nothing: a service built from an unset variable fails closed.
///
/// ```
/// use sessionforge::admin::AdminAuth;
///
/// let auth = match std::env::var("SESSION_ADMIN_TOKEN") {
///     Ok(token) if !token.is_empty() => AdminAuth::bearer(token),
///     _ => AdminAuth::loopback_only(),
/// };
/// assert!(!format!("{:?}", AdminAuth::bearer("secret")).contains("secret"));
/// ```
#[derive(Clone)]
pub struct AdminAuth {
    /// SHA-256 of the token; `None`: no token accepted.
    token: Option<[u8; 32]>,
    loopback: bool,
    open: bool,
    /// Host names loopback mode serves besides the loopback ones (lower case).
    hosts: Arc<Vec<String>>,
}

impl fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminAuth")
            .field("mode", &self.mode())
            .field("allowed_hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Denied {
    /// No token, or a wrong one, where a token would have been accepted: 401.
    Unauthorized { token_sent: bool },
    /// Loopback-only and the peer is elsewhere: 403.
    NotLoopback,
    /// Loopback-only and the request carries no peer address: 403, with how to provide one.
    NoPeerAddr,
    /// Loopback-only and the request came through a proxy: 403.
    Proxied,
    /// Loopback-only and the `Host` is not a loopback name: 403 (DNS rebinding).
    ForeignHost,
    /// A state-changing request from another site: 403.
    CrossSite,
}

impl Denied {
    /// The response to send.
    pub(super) fn response(self) -> Response {
        use super::json::error;
        let forbidden = |msg: &str| error(StatusCode::FORBIDDEN, msg);
        match self {
            Denied::Unauthorized { token_sent } => {
                let (msg, challenge) = if token_sent {
                    (
                        "invalid admin token",
                        r#"Bearer realm="sessionforge admin", error="invalid_token""#,
                    )
                } else {
                    (
                        "admin token required: send Authorization: Bearer <token>",
                        r#"Bearer realm="sessionforge admin""#,
                    )
                };
                let mut res = error(StatusCode::UNAUTHORIZED, msg);
                res.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
                res
            }
            Denied::NotLoopback => {
                forbidden("the session admin API answers only this machine; send a bearer token")
            }
            Denied::NoPeerAddr => forbidden(
                "the server records no peer address (serve with into_make_service_with_connect_info, \
                 or insert PeerAddr): loopback-only access cannot be checked",
            ),
            Denied::Proxied => forbidden(
                "this request came through a proxy, where every peer looks local: set an admin token \
                 (SESSION_ADMIN_TOKEN) to use the admin API through it",
            ),
            Denied::ForeignHost => forbidden(
                "the Host is not a loopback name: loopback-only access serves localhost, 127.0.0.1 \
                 and [::1] (set an admin token, or allow the host name)",
            ),
            Denied::CrossSite => {
                forbidden("cross-site request refused: state-changing admin calls must come from the same site")
            }
        }
    }
}

impl AdminAuth {
    /// Only requests carrying `Authorization: Bearer <token>`, from anywhere. The choice behind a
    /// reverse proxy and for remote scrapers of `/metrics`. An empty `token` matches nothing.
    pub fn bearer(token: impl AsRef<str>) -> Self {
        AdminAuth {
            token: digest_of(token.as_ref()),
            loopback: false,
            open: false,
            hosts: Arc::default(),
        }
    }

    /// Only requests whose socket peer is a loopback address, asking for a loopback host name, not
    /// through a proxy: the seed's `curl http://localhost:3001/api/sessions/stats` works, and nothing
    /// from outside does. The default. The peer comes from [`PeerAddr`] or Axum's
    /// `ConnectInfo<SocketAddr>`; a request with neither is refused.
    pub fn loopback_only() -> Self {
        AdminAuth {
            token: None,
            loopback: true,
            open: false,
            hosts: Arc::default(),
        }
    }

    /// A loopback request (as [`AdminAuth::loopback_only`] checks it), or any request with the bearer
    /// token.
    pub fn bearer_or_loopback(token: impl AsRef<str>) -> Self {
        AdminAuth {
            loopback: true,
            ..Self::bearer(token)
        }
    }

    /// **No protection at all**: anyone who can reach the service can list, delete and clean up every
    /// session (cross-site requests are still refused). Only for a service bound to a private
    /// interface you fully control, or behind your own authentication layer.
    pub fn insecure_open_to_anyone() -> Self {
        AdminAuth {
            token: None,
            loopback: false,
            open: true,
            hosts: Arc::default(),
        }
    }

    /// Also serves loopback requests asking for `host` (a name of this machine in `/etc/hosts`),
    /// any port.
    #[must_use]
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.hosts).push(host.into().to_ascii_lowercase());
        self
    }

    /// Whether this mode lets everyone in.
    pub fn is_open_to_anyone(&self) -> bool {
        self.open
    }

    /// The mode's name, as the djforge example prints it at startup.
    pub fn mode(&self) -> &'static str {
        match (self.open, self.token.is_some(), self.loopback) {
            (true, _, _) => "insecure_open_to_anyone",
            (false, true, true) => "bearer_or_loopback",
            (false, true, false) => "bearer",
            (false, false, true) => "loopback_only",
            (false, false, false) => "nobody",
        }
    }

    /// Decides on a request from its method, headers and extensions.
    pub(super) fn check(
        &self,
        method: &Method,
        headers: &HeaderMap,
        ext: &axum::http::Extensions,
    ) -> Result<(), Denied> {
        let changes_state = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if changes_state && cross_site(headers) {
            return Err(Denied::CrossSite);
        }
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
        if (self.token.is_some() && token_sent) || !self.loopback {
            return Err(Denied::Unauthorized { token_sent });
        }
        match peer_of(ext) {
            Some(peer) if is_loopback(peer.ip()) => {
                if ["forwarded", "x-forwarded-for", "x-real-ip"]
                    .iter()
                    .any(|h| headers.contains_key(*h))
                {
                    return Err(Denied::Proxied);
                }
                if !self.loopback_host(headers) {
                    return Err(Denied::ForeignHost);
                }
                Ok(())
            }
            _ if self.token.is_some() => Err(Denied::Unauthorized { token_sent }),
            Some(_) => Err(Denied::NotLoopback),
            None => Err(Denied::NoPeerAddr),
        }
    }

    /// Whether the request's `Host` names a loopback host (or an allowed one).
    fn loopback_host(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let name = host_name(host).to_ascii_lowercase();
        matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]") || self.hosts.contains(&name)
    }
}

/// The layer's check: the request goes on, or gets its refusal. An HTTP/2 request names its host in
/// the URI's authority instead of a `Host` header: the header is filled in from it first, so both
/// versions are judged alike.
pub(super) async fn layer(State(auth): State<AdminAuth>, mut req: Request, next: Next) -> Response {
    if !req.headers().contains_key(HOST) {
        let authority = req
            .uri()
            .authority()
            .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok());
        if let Some(host) = authority {
            req.headers_mut().insert(HOST, host);
        }
    }
    match auth.check(req.method(), req.headers(), req.extensions()) {
        Ok(()) => next.run(req).await,
        Err(denied) => {
            tracing::debug!(?denied, path = req.uri().path(), "admin request refused");
            denied.response()
        }
    }
}

/// `host[:port]` without the port (IPv6 literals keep their brackets).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// Whether a request comes from another site: `Sec-Fetch-Site: cross-site`, or an `Origin` whose
/// authority is not the request's `Host` (an opaque `null` origin included).
fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return false;
    };
    let origin = origin.to_str().unwrap_or("null");
    let Some((scheme, authority)) = origin.split_once("://") else {
        return true;
    };
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => "",
    };
    let strip = |a: &str| -> String {
        a.strip_suffix(default_port)
            .unwrap_or(a)
            .to_ascii_lowercase()
    };
    strip(authority) != strip(host)
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
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// The socket peer: our [`PeerAddr`] first, then Axum's `ConnectInfo<SocketAddr>`.
fn peer_of(ext: &axum::http::Extensions) -> Option<SocketAddr> {
    if let Some(PeerAddr(addr)) = ext.get::<PeerAddr>() {
        return Some(*addr);
    }
    ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
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
    use axum::http::Extensions;

    fn ext(peer: Option<&str>) -> Extensions {
        let mut e = Extensions::new();
        if let Some(p) = peer {
            e.insert(PeerAddr(p.parse().unwrap()));
        }
        e
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn get(auth: &AdminAuth, h: &[(&'static str, &str)], peer: Option<&str>) -> Result<(), Denied> {
        auth.check(&Method::GET, &headers(h), &ext(peer))
    }

    const LOCAL: &[(&str, &str)] = &[("host", "localhost:3001")];

    #[test]
    fn the_right_token_opens_and_a_wrong_or_missing_one_is_unauthorized() {
        let auth = AdminAuth::bearer("s3cret");
        assert_eq!(
            get(&auth, &[("authorization", "Bearer s3cret")], None),
            Ok(())
        );
        assert_eq!(
            get(&auth, &[("authorization", "bearer s3cret")], None),
            Ok(())
        );
        assert_eq!(
            get(&auth, &[("authorization", "Bearer s3cre")], None),
            Err(Denied::Unauthorized { token_sent: true })
        );
        assert_eq!(
            get(&auth, &[("authorization", "Basic czNjcmV0")], None),
            Err(Denied::Unauthorized { token_sent: true })
        );
        assert_eq!(
            get(&auth, LOCAL, Some("127.0.0.1:1")),
            Err(Denied::Unauthorized { token_sent: false })
        );
        let empty = AdminAuth::bearer("");
        assert!(get(&empty, &[("authorization", "Bearer ")], None).is_err());
    }

    #[test]
    fn loopback_only_admits_local_peers_asking_for_local_names() {
        let auth = AdminAuth::loopback_only();
        for ok in [
            "127.0.0.1:5",
            "127.8.9.10:5",
            "[::1]:5",
            "[::ffff:127.0.0.1]:5",
        ] {
            assert_eq!(get(&auth, LOCAL, Some(ok)), Ok(()), "{ok}");
        }
        for host in ["127.0.0.1", "127.0.0.1:8080", "[::1]:3001", "LOCALHOST"] {
            assert_eq!(
                get(&auth, &[("host", host)], Some("127.0.0.1:5")),
                Ok(()),
                "{host}"
            );
        }
        for far in [
            "10.0.0.1:5",
            "[2001:db8::1]:5",
            "[::ffff:10.0.0.1]:5",
            "0.0.0.0:5",
        ] {
            assert_eq!(
                get(&auth, LOCAL, Some(far)),
                Err(Denied::NotLoopback),
                "{far}"
            );
        }
        assert_eq!(get(&auth, LOCAL, None), Err(Denied::NoPeerAddr));
    }

    #[test]
    fn loopback_only_refuses_rebound_names_unless_allowed() {
        let auth = AdminAuth::loopback_only();
        for host in [
            "evil.example:3001",
            "evil.example",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert_eq!(
                get(&auth, &[("host", host)], Some("127.0.0.1:5")),
                Err(Denied::ForeignHost),
                "{host}"
            );
        }
        assert_eq!(
            get(&auth, &[], Some("127.0.0.1:5")),
            Err(Denied::ForeignHost)
        );
        let allowed = auth.allow_host("Admin.Internal");
        assert_eq!(
            get(
                &allowed,
                &[("host", "admin.internal:9")],
                Some("127.0.0.1:5")
            ),
            Ok(())
        );
    }

    #[test]
    fn proxy_headers_deny_loopback_access_and_never_grant_it() {
        let auth = AdminAuth::loopback_only();
        for h in ["forwarded", "x-forwarded-for", "x-real-ip"] {
            let v = if h == "forwarded" {
                "for=127.0.0.1"
            } else {
                "127.0.0.1"
            };
            assert_eq!(
                get(&auth, &[("host", "localhost"), (h, v)], Some("127.0.0.1:5")),
                Err(Denied::Proxied),
                "{h}"
            );
            assert_eq!(
                get(&auth, &[("host", "localhost"), (h, v)], Some("10.1.2.3:4")),
                Err(Denied::NotLoopback)
            );
        }
        // With a token, a proxied request gets in.
        let token = AdminAuth::bearer_or_loopback("t");
        assert_eq!(
            get(
                &token,
                &[
                    ("x-forwarded-for", "1.2.3.4"),
                    ("authorization", "Bearer t")
                ],
                Some("127.0.0.1:5")
            ),
            Ok(())
        );
    }

    #[test]
    fn state_changing_cross_site_requests_are_refused_in_every_mode() {
        for auth in [
            AdminAuth::loopback_only(),
            AdminAuth::bearer("t"),
            AdminAuth::insecure_open_to_anyone(),
        ] {
            let with = |extra: &[(&'static str, &str)]| {
                let mut h: Vec<(&'static str, &str)> =
                    vec![("host", "localhost:3001"), ("authorization", "Bearer t")];
                h.extend_from_slice(extra);
                auth.check(&Method::POST, &headers(&h), &ext(Some("127.0.0.1:5")))
            };
            assert_eq!(
                with(&[("sec-fetch-site", "cross-site")]),
                Err(Denied::CrossSite)
            );
            assert_eq!(
                with(&[("origin", "https://evil.example")]),
                Err(Denied::CrossSite)
            );
            assert_eq!(with(&[("origin", "null")]), Err(Denied::CrossSite));
            assert_eq!(with(&[("origin", "http://localhost:3001")]), Ok(()));
            assert_eq!(with(&[("sec-fetch-site", "same-origin")]), Ok(()));
            assert_eq!(with(&[]), Ok(()));
            // Reading is not state-changing.
            assert!(auth
                .check(
                    &Method::GET,
                    &headers(&[
                        ("host", "localhost:3001"),
                        ("authorization", "Bearer t"),
                        ("origin", "https://evil.example")
                    ]),
                    &ext(Some("127.0.0.1:5"))
                )
                .is_ok());
        }
        let h = headers(&[("origin", "https://example.com"), ("host", "example.com")]);
        assert!(!cross_site(&h), "default port");
    }

    #[test]
    fn modes_are_named_and_tokens_never_shown() {
        assert_eq!(
            AdminAuth::insecure_open_to_anyone().mode(),
            "insecure_open_to_anyone"
        );
        assert_eq!(AdminAuth::loopback_only().mode(), "loopback_only");
        assert!(!format!("{:?}", AdminAuth::bearer("hunter2")).contains("hunter2"));
    }
}
