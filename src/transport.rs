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
use crate::id::Token;
use cookie::{Cookie, CookieJar, Key, SameSite};
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, COOKIE, SET_COOKIE};
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
    pub(crate) persistent: bool,
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
            persistent: true,
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

    /// The value to send for `token`: signed with the first key, or the token itself.
    fn seal(&self, name: &str, token: &Token) -> String {
        match self.keys.first() {
            None => token.as_str().to_owned(),
            Some(key) => {
                let mut jar = CookieJar::new();
                jar.signed_mut(key)
                    .add(Cookie::new(name.to_owned(), token.as_str().to_owned()));
                jar.get(name)
                    .map(|c| c.value().to_owned())
                    .unwrap_or_default()
            }
        }
    }

    /// The token inside a presented value, if its signature (when signing) and shape are right.
    fn open(&self, name: &str, value: &str) -> Option<Token> {
        if self.keys.is_empty() {
            return Token::parse(value).ok();
        }
        let mut jar = CookieJar::new();
        jar.add_original(Cookie::new(name.to_owned(), value.to_owned()));
        self.keys
            .iter()
            .find_map(|k| jar.signed(k).get(name))
            .and_then(|c| Token::parse(c.value()).ok())
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

    /// The token the request carries, if it carries a valid one.
    pub(crate) fn extract(&self, headers: &HeaderMap, signer: &Signer) -> Option<Token> {
        match self {
            Transport::Header(name) => {
                let mut values = headers.get_all(name).iter();
                let value = values.next()?;
                if values.next().is_some() {
                    // Two tokens: ambiguous, so neither is trusted.
                    return None;
                }
                signer.open(name.as_str(), value.to_str().ok()?)
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
                found.peek()?;
                let name = Self::cookie_name(s);
                // With duplicates (a cookie-tossing attempt, or a stale cookie on another path) the
                // first one that verifies wins; the others are ignored.
                found.find_map(|v| signer.open(&name, v))
            }
        }
    }

    /// Writes the token (new or refreshed) into the response headers.
    pub(crate) fn send(
        &self,
        headers: &mut HeaderMap,
        signer: &Signer,
        token: &Token,
        expires: Timestamp,
        now: Timestamp,
        fresh: bool,
    ) {
        match self {
            Transport::Header(name) => {
                // API clients keep the token they were given; only a new one needs sending.
                if fresh {
                    if let Ok(v) = HeaderValue::from_str(&signer.seal(name.as_str(), token)) {
                        headers.insert(name.clone(), v);
                    }
                }
            }
            Transport::Cookie(s) => {
                let name = Self::cookie_name(s);
                let value = signer.seal(&name, token);
                let max_age = s
                    .persistent
                    .then(|| expires.remaining(now).as_secs() as i64);
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(tr.extract(&h, &Signer::default()), Some(t));
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
            assert_eq!(tr.extract(&cookie_headers(&[v]), &Signer::default()), None);
        }
    }

    #[test]
    fn signed_tokens_verify_under_any_listed_key_and_tampering_fails() {
        let old = Key::generate();
        let new = Key::generate();
        let t = Token::generate();
        let old_signer = Signer::new(vec![old.clone()]);
        let rotated = Signer::new(vec![new.clone(), old]);
        let sealed = old_signer.seal("id", &t);
        assert_ne!(sealed, t.as_str());
        assert_eq!(rotated.open("id", &sealed), Some(t.clone()));
        // Unsigned or tampered values are refused.
        assert_eq!(rotated.open("id", t.as_str()), None);
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            rotated.open("id", std::str::from_utf8(&tampered).unwrap()),
            None
        );
        // A key no longer listed no longer verifies.
        assert_eq!(Signer::new(vec![new]).open("id", &sealed), None);
    }

    #[test]
    fn two_session_headers_are_ambiguous_and_ignored() {
        let tr = Transport::Header(HeaderName::from_static("x-session-id"));
        let mut h = HeaderMap::new();
        let t = Token::generate();
        h.append("x-session-id", HeaderValue::from_str(t.as_str()).unwrap());
        assert_eq!(tr.extract(&h, &Signer::default()), Some(t.clone()));
        h.append("x-session-id", HeaderValue::from_str(t.as_str()).unwrap());
        assert_eq!(tr.extract(&h, &Signer::default()), None);
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
        assert_eq!(tr.extract(&h, &Signer::default()), Some(t.clone()));
        let h = cookie_headers(&[format!("xid={0}; idx={0}; ID={0}", t.as_str()).as_bytes()]);
        assert_eq!(tr.extract(&h, &Signer::default()), None);
        let host = Transport::Cookie(CookieSettings {
            host_prefix: true,
            ..Default::default()
        });
        let h = cookie_headers(&[format!("id={}", t.as_str()).as_bytes()]);
        assert_eq!(host.extract(&h, &Signer::default()), None);
        let h = cookie_headers(&[format!("__Host-id={}", t.as_str()).as_bytes()]);
        assert_eq!(host.extract(&h, &Signer::default()), Some(t));
    }

    #[test]
    fn the_cookie_has_the_secure_defaults_and_no_store() {
        let tr = Transport::Cookie(CookieSettings::default());
        let mut h = HeaderMap::new();
        let now = Timestamp::from_millis(0);
        tr.send(
            &mut h,
            &Signer::default(),
            &Token::generate(),
            Timestamp::from_millis(3_600_000),
            now,
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
}
