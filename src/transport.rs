//! Where the session token travels: a cookie (browsers) or a header (gRPC and API clients).
//!
//! Either way the presented value is checked before anything else happens: a signature (when signing
//! keys are configured), then the token's exact length and alphabet. A value that fails any check is
//! ignored and the client gets a fresh session; nothing it sent reaches a store.
//!
//! # Cookie defaults
//!
//! Name `id`, `HttpOnly`, `Secure`, `SameSite=Lax`, `Path=/`, and a persistent cookie whose `Max-Age`
//! follows the session's server-side expiry. A response that sets the cookie also gets
//! `Cache-Control: no-store` unless the handler chose its own, so no shared cache keeps one user's cookie
//! for another.
//!
//! # Signing
//!
//! Tokens are unguessable on their own; signing adds a second check that rejects forged values without a
//! store lookup. Cookies are signed with the first key given and accepted under any of them, so keys
//! can be rotated: put the new key first, keep the old one until old cookies have expired.
//!
//! # Pitfalls
//!
//! * `Secure` cookies are not sent over plain `http://` except to `localhost`; turn it off with
//!   [`SessionLayer::with_secure`](crate::SessionLayer::with_secure) only for local development.
//! * The `__Host-` prefix ([`SessionLayer::with_host_prefix`](crate::SessionLayer::with_host_prefix))
//!   forces `Secure`, `Path=/` and no `Domain`; a configured domain is then ignored.

use crate::expiry::Timestamp;
use crate::format::Format;
use crate::id::Token;
use crate::session::Presented;
use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, COOKIE, SET_COOKIE, VARY};
use http::HeaderMap;

/// Presented cookie headers longer than this are not parsed (browsers send at most 4 KiB a cookie).
const MAX_COOKIE_HEADER: usize = 8 * 1024;

/// Cookie settings.
#[derive(Clone, Debug)]
pub(crate) struct CookieSettings {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    pub(crate) same_site: SameSite,
    pub(crate) host_prefix: bool,
}

impl Default for CookieSettings {
    fn default() -> Self {
        CookieSettings {
            name: "id".into(),
            path: "/".into(),
            domain: None,
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            host_prefix: false,
        }
    }
}

/// The transport, as configured on the layer.
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    Cookie(CookieSettings),
    Header(HeaderName),
}

/// Token signing with key rotation.
#[derive(Clone, Default)]
pub(crate) struct Signer {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} keys)", self.keys.len())
    }
}

impl Signer {
    pub(crate) fn new(keys: Vec<Key>) -> Self {
        Signer { keys }
    }

    /// The value to send for a format's `value`: signed with the first key, or as it is.
    fn seal(&self, name: &str, value: String) -> String {
        match self.keys.first() {
            None => value,
            Some(key) => {
                let mut jar = CookieJar::new();
                jar.signed_mut(key).add(Cookie::new(name.to_owned(), value));
                jar.get(name)
                    .map(|c| c.value().to_owned())
                    .unwrap_or_default()
            }
        }
    }

    /// The format's value inside a presented one, if its signature (when signing) is right.
    fn open<'v>(&self, name: &str, value: &'v str) -> Option<std::borrow::Cow<'v, str>> {
        if self.keys.is_empty() {
            return Some(value.into());
        }
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(name.to_owned(), value.to_owned()));
        self.keys
            .iter()
            .find_map(|k| jar.signed(k).get(name))
            .map(|c| c.value().to_owned().into())
    }

    /// The token of a presented value: the layer's signature checked (unless the format signs its
    /// own tokens), then the format's own checks.
    fn token(&self, format: &dyn Format, name: &str, value: &str) -> Option<Token> {
        if format.signs_tokens() {
            return format.open(value);
        }
        format.open(&self.open(name, value)?)
    }

    /// What to send for `token`.
    fn value(&self, format: &dyn Format, name: &str, token: &Token) -> String {
        if format.signs_tokens() {
            format.seal(token)
        } else {
            self.seal(name, format.seal(token))
        }
    }
}

/// The prefix of a cookie bound to one origin.
const HOST_PREFIX: &str = "__Host-";

impl Transport {
    fn cookie_name(s: &CookieSettings) -> std::borrow::Cow<'_, str> {
        if s.host_prefix {
            format!("{HOST_PREFIX}{}", s.name).into()
        } else {
            s.name.as_str().into()
        }
    }

    /// What the request carries under the session's name: nothing, a token, or something that is not
    /// a valid token (bad shape or signature).
    pub(crate) fn extract(
        &self,
        headers: &HeaderMap,
        format: &dyn Format,
        signer: &Signer,
    ) -> Presented {
        let found = match self {
            Transport::Header(name) => {
                let mut values = headers.get_all(name).iter();
                let Some(value) = values.next() else {
                    return Presented::Nothing;
                };
                if values.next().is_some() {
                    // Two tokens: ambiguous, so neither is trusted.
                    return Presented::Malformed;
                }
                value
                    .to_str()
                    .ok()
                    .and_then(|v| signer.token(format, name.as_str(), v))
            }
            Transport::Cookie(s) => {
                // `name=value` pairs split on `;` and trimmed, as `Cookie::split_parse` does, without
                // allocating (this runs on every request, session used or not).
                let is_ours = |n: &str| {
                    if s.host_prefix {
                        n.strip_prefix(HOST_PREFIX) == Some(s.name.as_str())
                    } else {
                        n == s.name
                    }
                };
                let mut found = headers
                    .get_all(COOKIE)
                    .iter()
                    .filter(|v| v.len() <= MAX_COOKIE_HEADER)
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .filter_map(|pair| pair.split_once('='))
                    .filter(|(n, _)| is_ours(n.trim()))
                    .map(|(_, v)| v.trim())
                    .peekable();
                if found.peek().is_none() {
                    return Presented::Nothing;
                }
                let name = Self::cookie_name(s);
                // With duplicates (a cookie-tossing attempt, or a stale cookie on another path) the
                // first one that verifies wins; the others are ignored.
                found.find_map(|v| signer.token(format, &name, v))
            }
        };
        match found {
            Some(token) => Presented::Token(token),
            None => {
                crate::metrics::invalid_token("malformed");
                Presented::Malformed
            }
        }
    }

    /// Marks a response that read a session as private: `Cache-Control: no-store` unless the handler
    /// chose its own, and `Vary: Cookie` when the token travels in a cookie.
    pub(crate) fn mark_private(&self, headers: &mut HeaderMap) {
        if !headers.contains_key(CACHE_CONTROL) {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        let vary = match self {
            Transport::Cookie(_) => HeaderValue::from_static("cookie"),
            Transport::Header(name) => match HeaderValue::from_str(name.as_str()) {
                Ok(v) => v,
                Err(_) => return,
            },
        };
        let already = headers.get_all(VARY).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',').any(|f| {
                    f.trim() == "*" || f.trim().eq_ignore_ascii_case(vary.to_str().unwrap_or(""))
                })
            })
        });
        if !already {
            headers.append(VARY, vary);
        }
    }

    /// Writes the token (new or refreshed) into the response headers. A persistent cookie's `Max-Age`
    /// is the time left until `expires`, rounded up: a live session never gets `Max-Age=0`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send(
        &self,
        headers: &mut HeaderMap,
        format: &dyn Format,
        signer: &Signer,
        token: &Token,
        expires: Timestamp,
        now: Timestamp,
        persistent: bool,
        fresh: bool,
    ) {
        match self {
            Transport::Header(name) => {
                // API clients keep the token they were given; only a new one needs sending.
                if fresh {
                    if let Ok(v) =
                        HeaderValue::from_str(&signer.value(format, name.as_str(), token))
                    {
                        headers.insert(name.clone(), v);
                    }
                }
            }
            Transport::Cookie(s) => {
                let name = Self::cookie_name(s);
                let value = signer.value(format, &name, token);
                let max_age = persistent.then(|| max_age(expires, now));
                Self::append_set_cookie(headers, &Self::format_cookie(s, &name, &value, max_age));
            }
        }
    }

    /// Tells the client to forget its token.
    pub(crate) fn remove(&self, headers: &mut HeaderMap) {
        if let Transport::Cookie(s) = self {
            let name = Self::cookie_name(s);
            let mut c = Self::base_cookie(s, name.into_owned(), String::new());
            c.make_removal();
            Self::set_cookie(headers, &c);
        }
    }

    fn base_cookie(s: &CookieSettings, name: String, value: String) -> Cookie<'static> {
        let mut c = Cookie::new(name, value);
        c.set_http_only(s.http_only);
        c.set_same_site(s.same_site);
        if s.host_prefix {
            c.set_secure(true);
            c.set_path("/");
        } else {
            c.set_secure(s.secure);
            c.set_path(s.path.clone());
            if let Some(d) = &s.domain {
                c.set_domain(d.clone());
            }
        }
        c
    }

    fn set_cookie(headers: &mut HeaderMap, c: &Cookie<'_>) {
        Self::append_set_cookie(headers, &c.to_string());
    }

    fn append_set_cookie(headers: &mut HeaderMap, cookie: &str) {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            headers.append(SET_COOKIE, v);
            if !headers.contains_key(CACHE_CONTROL) {
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
        }
    }

    /// The `Set-Cookie` value for a token, written directly: byte for byte what
    /// [`Transport::base_cookie`] plus `Max-Age` renders through the `cookie` crate (a test checks),
    /// at a fraction of the cost, since it is sent on every write.
    fn format_cookie(s: &CookieSettings, name: &str, value: &str, max_age: Option<i64>) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(128 + name.len() + value.len() + s.path.len());
        out.push_str(name);
        out.push('=');
        out.push_str(value);
        if s.http_only {
            out.push_str("; HttpOnly");
        }
        let _ = write!(out, "; SameSite={}", s.same_site);
        let (secure, path, domain) = if s.host_prefix {
            (true, "/", None)
        } else {
            (s.secure, s.path.as_str(), s.domain.as_deref())
        };
        if secure {
            out.push_str("; Secure");
        }
        out.push_str("; Path=");
        out.push_str(path);
        if let Some(d) = domain {
            out.push_str("; Domain=");
            out.push_str(d);
        }
        if let Some(secs) = max_age {
            let _ = write!(out, "; Max-Age={secs}");
        }
        out
    }
}

/// Seconds from `now` until `expires`, rounded up; 0 only when it has passed.
fn max_age(expires: Timestamp, now: Timestamp) -> i64 {
    let ms = expires.remaining(now).as_millis();
    i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Native;

    /// The token `tr` finds in `h`, if it finds one.
    fn tok(tr: &Transport, h: &HeaderMap, signer: &Signer) -> Option<Token> {
        match tr.extract(h, &Native, signer) {
            Presented::Token(t) => Some(t),
            _ => None,
        }
    }

    fn cookie_headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_cookie_is_found_among_others() {
        let t = Token::generate();
        let tr = Transport::Cookie(CookieSettings::default());
        let h = cookie_headers(&[format!("a=b; id={}; c=d", t.as_str()).as_bytes()]);
        assert_eq!(tok(&tr, &h, &Signer::default()), Some(t));
    }

    #[test]
    fn malformed_oversized_and_non_utf8_cookies_yield_no_token() {
        let tr = Transport::Cookie(CookieSettings::default());
        let t = Token::generate();
        let huge = format!("id={}; pad={}", t.as_str(), "x".repeat(9000));
        for v in [
            &b"id=short"[..],
            b"id=../../../../etc/passwd",
            b"id",
            b";;;=;",
            b"id=\xff\xfe",
            huge.as_bytes(),
        ] {
            assert_eq!(tok(&tr, &cookie_headers(&[v]), &Signer::default()), None);
        }
    }

    #[test]
    fn signed_tokens_verify_under_any_listed_key_and_tampering_fails() {
        let old = Key::generate();
        let new = Key::generate();
        let t = Token::generate();
        let old_signer = Signer::new(vec![old.clone()]);
        let rotated = Signer::new(vec![new.clone(), old]);
        let sealed = old_signer.value(&Native, "id", &t);
        assert_ne!(sealed, t.as_str());
        assert_eq!(rotated.token(&Native, "id", &sealed), Some(t));
        // Unsigned or tampered values are refused.
        assert_eq!(rotated.token(&Native, "id", t.as_str()), None);
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            rotated.token(&Native, "id", std::str::from_utf8(&tampered).unwrap()),
            None
        );
        // A key no longer listed no longer verifies.
        assert_eq!(Signer::new(vec![new]).token(&Native, "id", &sealed), None);
    }

    #[test]
    fn two_session_headers_are_ambiguous_and_ignored() {
        let tr = Transport::Header(HeaderName::from_static("x-session-id"));
        let mut h = HeaderMap::new();
        let t = Token::generate();
        h.append("x-session-id", HeaderValue::from_str(t.as_str()).unwrap());
        assert_eq!(tok(&tr, &h, &Signer::default()), Some(t));
        h.append("x-session-id", HeaderValue::from_str(t.as_str()).unwrap());
        assert_eq!(tok(&tr, &h, &Signer::default()), None);
    }

    #[test]
    fn the_hand_written_set_cookie_is_what_the_cookie_crate_renders() {
        let mut settings = vec![CookieSettings::default()];
        for f in [
            (|s: &mut CookieSettings| s.http_only = false) as fn(&mut CookieSettings),
            |s| s.secure = false,
            |s| s.same_site = SameSite::Strict,
            |s| s.same_site = SameSite::None,
            |s| {
                s.same_site = SameSite::None;
                s.secure = false
            },
            |s| s.domain = Some("example.com".into()),
            |s| s.path = "/app".into(),
            |s| {
                s.host_prefix = true;
                s.secure = false;
                s.path = "/x".into();
                s.domain = Some("example.com".into())
            },
        ] {
            let mut s = CookieSettings::default();
            f(&mut s);
            settings.push(s);
        }
        for s in settings {
            for max_age in [None, Some(0), Some(86_400)] {
                let name = Transport::cookie_name(&s);
                let mut c = Transport::base_cookie(&s, name.to_string(), "tok".into());
                if let Some(secs) = max_age {
                    c.set_max_age(cookie::time::Duration::seconds(secs));
                }
                assert_eq!(
                    Transport::format_cookie(&s, &name, "tok", max_age),
                    c.to_string(),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn cookie_pairs_are_trimmed_and_host_prefixed_names_matched_exactly() {
        let t = Token::generate();
        let tr = Transport::Cookie(CookieSettings::default());
        let h = cookie_headers(&[format!(" a=b ;  id = {} ;c=d", t.as_str()).as_bytes()]);
        assert_eq!(tok(&tr, &h, &Signer::default()), Some(t));
        let h = cookie_headers(&[format!("xid={0}; idx={0}; ID={0}", t.as_str()).as_bytes()]);
        assert_eq!(tok(&tr, &h, &Signer::default()), None);
        let host = Transport::Cookie(CookieSettings {
            host_prefix: true,
            ..Default::default()
        });
        let h = cookie_headers(&[format!("id={}", t.as_str()).as_bytes()]);
        assert_eq!(tok(&host, &h, &Signer::default()), None);
        let h = cookie_headers(&[format!("__Host-id={}", t.as_str()).as_bytes()]);
        assert_eq!(tok(&host, &h, &Signer::default()), Some(t));
    }

    #[test]
    fn the_cookie_has_the_secure_defaults_and_no_store() {
        let tr = Transport::Cookie(CookieSettings::default());
        let mut h = HeaderMap::new();
        let now = Timestamp::from_millis(0);
        tr.send(
            &mut h,
            &Native,
            &Signer::default(),
            &Token::generate(),
            Timestamp::from_millis(3_600_000),
            now,
            true,
            true,
        );
        let c = h.get(SET_COOKIE).unwrap().to_str().unwrap();
        for part in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert_eq!(h.get(CACHE_CONTROL).unwrap(), "no-store");
    }

    #[test]
    fn max_age_rounds_up_so_a_live_session_never_gets_zero() {
        let now = Timestamp::from_millis(10_000);
        assert_eq!(max_age(Timestamp::from_millis(10_001), now), 1);
        assert_eq!(max_age(Timestamp::from_millis(11_000), now), 1);
        assert_eq!(max_age(Timestamp::from_millis(11_001), now), 2);
        assert_eq!(max_age(now, now), 0);
        assert_eq!(
            max_age(Timestamp::from_millis(u64::MAX), now),
            18_446_744_073_709_542
        );
    }

    #[test]
    fn a_value_under_our_name_that_is_no_token_is_malformed_and_other_cookies_are_nothing() {
        let tr = Transport::Cookie(CookieSettings::default());
        let h = cookie_headers(&[b"id=malformed; other=1"]);
        assert!(matches!(
            tr.extract(&h, &Native, &Signer::default()),
            Presented::Malformed
        ));
        let h = cookie_headers(&[b"other=1"]);
        assert!(matches!(
            tr.extract(&h, &Native, &Signer::default()),
            Presented::Nothing
        ));
    }

    #[test]
    fn a_response_that_read_a_session_is_private_unless_the_handler_chose() {
        let tr = Transport::Cookie(CookieSettings::default());
        let mut h = HeaderMap::new();
        tr.mark_private(&mut h);
        tr.mark_private(&mut h);
        assert_eq!(h.get(CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(h.get_all(VARY).iter().count(), 1);
        let mut own = HeaderMap::new();
        own.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("private, max-age=5"),
        );
        own.insert(VARY, HeaderValue::from_static("Accept-Encoding, Cookie"));
        tr.mark_private(&mut own);
        assert_eq!(own.get(CACHE_CONTROL).unwrap(), "private, max-age=5");
        assert_eq!(own.get_all(VARY).iter().count(), 1);
    }
}
