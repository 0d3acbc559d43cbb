//! [`Express`]: express-session's format, to share live sessions with a Node application
//! (express-session with connect-redis on the same Redis and prefix, or session-file-store in the same
//! directory) during a migration.

use super::Format;
use crate::expiry::Timestamp;
use crate::id::{StoreKey, Token};
use crate::store::{Record, StoreError, VersionRule};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::fmt;
use std::time::{Duration, UNIX_EPOCH};

/// What `encodeURIComponent` leaves as it is (the cookie npm package encodes values with it).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Top-level fields this crate keeps beside the application's, in the spirit of session-file-store's
/// `__lastAccess` (express-session keeps unknown fields as they are).
const LAST_ACCESS: &str = "__lastAccess";
const CREATED_AT: &str = "__createdAt";
const DEADLINE: &str = "__deadline";
const USER_AGENT: &str = "__userAgent";
const TOMBSTONE: &str = "__tombstone";
const WRITE_MARK: &str = "__writeMark";
const USER_SINCE: &str = "__userSince";

/// express-session's format.
///
/// * **Cookies**: `connect.sid` by default, valued `s:<sid>.<signature>` (percent-encoded), the
///   signature being unpadded standard base64 of HMAC-SHA256(secret, sid), as cookie-signature signs.
///   The first secret signs; every one is tried to verify (in constant time), which is how express
///   apps rotate secrets. A new sid is 24 random bytes, 32 base64url characters (uid-safe).
/// * **Keys**: the sid itself, as connect-redis keys `<prefix><sid>` and session-file-store names
///   `<sid>.json`. So a Redis dump or a directory listing shows live sids: without a secret they are
///   not usable cookies, but move to the native format once the Node side is gone (`SECURITY.md`).
/// * **Values**: `JSON.stringify(session)`: the application's fields at the top level (the user in the
///   field named by [`Express::with_user_field`], `user` by default), and express-session's `cookie`
///   object, whose `expires` is the session's expiry and `originalMaxAge` its idle window. Fields this
///   crate does not know, the cookie's `domain` and anything else, are kept as they were. The crate
///   adds `__lastAccess` (which session-file-store reads) and its own `__createdAt`, `__deadline`,
///   `__userAgent`, `__userSince` after a login, and `__writeMark` after a save with increments (see
///   [`Record::user_since`], [`Record::write_mark`]).
/// * **No indexes of ours** (Node would not keep them): stores count, list and find a user's sessions
///   by scanning. In Redis the key's TTL is the expiry (a Node touch only moves the TTL).
///
/// A Node write is a whole-value `SET`: between the two sides, the last writer wins. Between Rust
/// requests, concurrent saves merge as usual (the version is the value's digest).
///
/// ```
/// use sessionforge::format::{Express, Format};
///
/// let express = Express::new(["new-secret", "old-secret"]).unwrap();
/// let token = express.generate();
/// assert_eq!(token.as_str().len(), 32);
/// let cookie = express.seal(&token);
/// assert!(cookie.starts_with("s%3A"));
/// assert_eq!(express.open(&cookie), Some(token));
/// // Signed with the old secret: still accepted.
/// let old = Express::new(["old-secret"]).unwrap();
/// assert_eq!(express.open(&old.seal(&token)), Some(token));
/// assert_eq!(express.store_key(&token).as_str(), token.as_str());
/// ```
#[derive(Clone)]
pub struct Express {
    secrets: Vec<Vec<u8>>,
    user_field: String,
    secure: bool,
    same_site: &'static str,
}

impl fmt::Debug for Express {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Express")
            .field("secrets", &self.secrets.len())
            .field("user_field", &self.user_field)
            .finish_non_exhaustive()
    }
}

/// Why an express format could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExpressError {
    /// No secret (or only empty ones) was given: express-session requires one.
    NoSecret,
}

impl fmt::Display for ExpressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpressError::NoSecret => f.write_str("the express format needs at least one secret"),
        }
    }
}

impl std::error::Error for ExpressError {}

type HmacSha256 = Hmac<Sha256>;

impl Express {
    /// The format with express-session's `secret` list: the first signs, all verify. Empty secrets
    /// are ignored; none left is an error.
    pub fn new<I, S>(secrets: I) -> Result<Self, ExpressError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.is_empty() {
            return Err(ExpressError::NoSecret);
        }
        Ok(Express {
            secrets,
            user_field: "user".into(),
            secure: false,
            same_site: "lax",
        })
    }

    /// The top-level field that holds the user (default `user`): [`Record::user`] on this side.
    #[must_use]
    pub fn with_user_field(mut self, field: impl Into<String>) -> Self {
        self.user_field = field.into();
        self
    }

    /// The cookie attributes written into the `cookie` object of sessions created here (Node reads
    /// them back for its own `Set-Cookie`): `secure` (default false) and `sameSite` (`"lax"`).
    #[must_use]
    pub fn with_cookie_attributes(mut self, secure: bool, same_site: &'static str) -> Self {
        self.secure = secure;
        self.same_site = same_site;
        self
    }

    /// The signature of `sid` under `secret`.
    fn sign(secret: &[u8], sid: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(sid.as_bytes());
        STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` is `sid`'s under one of the secrets (constant time per secret).
    fn verify(&self, sid: &str, signature: &str) -> bool {
        let Ok(raw) = STANDARD_NO_PAD.decode(signature) else {
            return false;
        };
        self.secrets.iter().any(|secret| {
            let mut mac =
                HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
            mac.update(sid.as_bytes());
            mac.verify_slice(&raw).is_ok()
        })
    }
}

/// An ISO 8601 timestamp as JavaScript's `Date#toJSON` writes it: `2026-12-02T10:00:00.000Z`.
fn iso(t: Timestamp) -> String {
    t.to_rfc3339()
}

/// A `Date`-ish JSON value: an ISO string, or milliseconds.
fn parse_time(v: &Value) -> Option<Timestamp> {
    match v {
        Value::String(s) => humantime::parse_rfc3339_weak(s)
            .ok()
            .or_else(|| humantime::parse_rfc3339(s).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| Timestamp::from_millis(d.as_millis() as u64)),
        Value::Number(n) => n.as_u64().map(Timestamp::from_millis),
        _ => None,
    }
}

fn millis(v: Option<&Value>) -> Option<Timestamp> {
    v.and_then(Value::as_u64).map(Timestamp::from_millis)
}

impl Format for Express {
    fn name(&self) -> &'static str {
        "express"
    }

    fn generate(&self) -> Token {
        Token::random(24)
    }

    fn open(&self, presented: &str) -> Option<Token> {
        let value = presented.trim_matches('"');
        let decoded = if value.contains('%') {
            percent_decode_str(value).decode_utf8().ok()?.into_owned()
        } else {
            value.to_owned()
        };
        let signed = decoded.strip_prefix("s:")?;
        let (sid, signature) = signed.rsplit_once('.')?;
        if sid.is_empty() || !self.verify(sid, signature) {
            return None;
        }
        // Any sid express would issue (uid-safe: base64url); others are not ours to key by.
        Token::parse_loose(sid, 1).ok()
    }

    fn seal(&self, token: &Token) -> String {
        let sid = token.as_str();
        let signed = format!("s:{sid}.{}", Self::sign(&self.secrets[0], sid));
        utf8_percent_encode(&signed, URI_COMPONENT).to_string()
    }

    fn signs_tokens(&self) -> bool {
        true
    }

    fn store_key(&self, token: &Token) -> StoreKey {
        StoreKey::of_token(token)
    }

    fn encode(&self, record: &Record) -> Vec<u8> {
        let mut cookie = match record.extra.get("cookie") {
            Some(Value::Object(c)) => c.clone(),
            _ => {
                let mut c = Map::new();
                c.insert("secure".into(), self.secure.into());
                c.insert("httpOnly".into(), true.into());
                c.insert("path".into(), "/".into());
                c.insert("sameSite".into(), self.same_site.into());
                c
            }
        };
        let idle = record.idle_timeout.unwrap_or_else(|| {
            Duration::from_millis(
                record
                    .expires
                    .as_millis()
                    .saturating_sub(record.last_access.as_millis()),
            )
        });
        // express-session's `Cookie#data` order: originalMaxAge, …, expires, then the attributes.
        let mut ordered = Map::new();
        ordered.insert(
            "originalMaxAge".into(),
            (u64::try_from(idle.as_millis()).unwrap_or(u64::MAX)).into(),
        );
        for k in ["partitioned", "priority"] {
            if let Some(v) = cookie.shift_remove(k) {
                ordered.insert(k.into(), v);
            }
        }
        cookie.shift_remove("originalMaxAge");
        cookie.shift_remove("expires");
        ordered.insert("expires".into(), iso(record.expires).into());
        ordered.extend(cookie);
        let mut out = Map::new();
        out.insert("cookie".into(), Value::Object(ordered));
        for (k, v) in &record.extra {
            if k != "cookie" {
                out.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &record.data {
            out.insert(k.clone(), v.clone());
        }
        match &record.user {
            Some(user) => {
                out.insert(self.user_field.clone(), user.clone().into());
            }
            None => {
                // A user field that holds something else than a user name stays where it was (data).
                if !record.data.contains_key(&self.user_field) {
                    out.shift_remove(&self.user_field);
                }
            }
        }
        out.insert(LAST_ACCESS.into(), record.last_access.as_millis().into());
        out.insert(CREATED_AT.into(), record.created_at.as_millis().into());
        if record.deadline.as_millis() != u64::MAX {
            out.insert(DEADLINE.into(), record.deadline.as_millis().into());
        }
        if let Some(ua) = &record.user_agent {
            out.insert(USER_AGENT.into(), ua.clone().into());
        }
        if record.tombstone {
            out.insert(TOMBSTONE.into(), true.into());
        }
        if let Some(since) = record.user_since {
            out.insert(USER_SINCE.into(), since.as_millis().into());
        }
        if let Some(mark) = &record.write_mark {
            out.insert(WRITE_MARK.into(), mark.clone().into());
        }
        serde_json::to_vec(&Value::Object(out)).expect("JSON values always serialise")
    }

    fn decode(&self, stored: &[u8]) -> Result<Record, StoreError> {
        let corrupt = |detail| StoreError::Corrupt {
            detail,
            source: None,
        };
        let value: Value = serde_json::from_slice(stored).map_err(|e| StoreError::Corrupt {
            detail: "stored value is not JSON",
            source: Some(Box::new(e)),
        })?;
        let Value::Object(mut fields) = value else {
            return Err(corrupt("stored value is not an express session"));
        };
        // express-session fails on a session without its cookie object: not one of its sessions.
        let Some(Value::Object(cookie)) = fields.shift_remove("cookie") else {
            return Err(corrupt("stored value has no express-session cookie object"));
        };
        let last_access = millis(fields.shift_remove(LAST_ACCESS).as_ref());
        let created_at = millis(fields.shift_remove(CREATED_AT).as_ref());
        let deadline = millis(fields.shift_remove(DEADLINE).as_ref());
        let idle = cookie
            .get("originalMaxAge")
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        let expires = cookie.get("expires").and_then(parse_time);
        let last_access = last_access
            .or_else(|| {
                Some(Timestamp::from_millis(
                    expires?.as_millis().checked_sub(idle?.as_millis() as u64)?,
                ))
            })
            .unwrap_or_default();
        // Without an expiry (a browser-session cookie), the store's TTL decides.
        let expires = match (expires, idle) {
            (Some(e), Some(i)) => e.max(last_access.plus(i)),
            (Some(e), None) => e,
            (None, Some(i)) => last_access.plus(i),
            (None, None) => Timestamp::from_millis(u64::MAX),
        };
        let mut record = Record::new(
            last_access,
            expires,
            deadline.unwrap_or(Timestamp::from_millis(u64::MAX)),
        );
        record.created_at = created_at.unwrap_or(last_access);
        record.idle_timeout = idle;
        record.user_agent = match fields.shift_remove(USER_AGENT) {
            Some(Value::String(ua)) => Some(ua),
            _ => None,
        };
        record.tombstone = matches!(fields.shift_remove(TOMBSTONE), Some(Value::Bool(true)));
        record.user_since = fields
            .shift_remove(USER_SINCE)
            .as_ref()
            .and_then(Value::as_u64)
            .map(Timestamp::from_millis);
        record.write_mark = match fields.shift_remove(WRITE_MARK) {
            Some(Value::String(mark)) => Some(mark),
            _ => None,
        };
        if let Some(Value::String(user)) = fields.get(&self.user_field) {
            record.user = Some(user.clone());
            fields.shift_remove(&self.user_field);
        }
        record.extra.insert("cookie".into(), Value::Object(cookie));
        record.data = fields;
        Ok(record)
    }

    fn version_rule(&self) -> VersionRule {
        VersionRule::Digest
    }

    fn indexed(&self) -> bool {
        false
    }

    fn expiry_in_ttl(&self) -> bool {
        true
    }

    fn cookie_name(&self) -> &'static str {
        "connect.sid"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn express() -> Express {
        Express::new(["s3cret", "old-secret"]).unwrap()
    }

    #[test]
    fn cookies_are_what_cookie_signature_and_express_session_write() {
        // Observed from express-session 1.19 with the secret "s3cret".
        let sid = "NXH8yjICtTzZ1OcxxYyhj9Vo7BQdtTOX";
        let token = Token::parse_loose(sid, 1).unwrap();
        assert_eq!(
            express().seal(&token),
            "s%3ANXH8yjICtTzZ1OcxxYyhj9Vo7BQdtTOX.JyRIr%2F5w8KNyarntjrIlzGafPJp84s3s8p8YaXeRYVg"
        );
        // Raw and percent-encoded values both open; a tampered or unsigned one does not.
        let raw = "s:NXH8yjICtTzZ1OcxxYyhj9Vo7BQdtTOX.JyRIr/5w8KNyarntjrIlzGafPJp84s3s8p8YaXeRYVg";
        assert_eq!(express().open(raw), Some(token));
        assert_eq!(express().open(&raw.replace("JyRI", "JyRJ")), None);
        assert_eq!(express().open(sid), None);
        assert_eq!(express().open("s:.abc"), None);
        assert_eq!(Express::new(["other"]).unwrap().open(raw), None);
        assert_eq!(Express::new([""]).unwrap_err(), ExpressError::NoSecret);
    }

    #[test]
    fn a_node_session_decodes_and_its_unknown_fields_survive_a_round_trip() {
        let node = br#"{"cookie":{"originalMaxAge":3600000,"expires":"2026-12-02T11:15:08.585Z","secure":false,"httpOnly":true,"domain":"example.com","path":"/","sameSite":"lax"},"user":"alice","visits":3,"nodeOnly":{"a":[1,2]}}"#;
        let r = express().decode(node).unwrap();
        assert_eq!(r.user.as_deref(), Some("alice"));
        assert_eq!(r.data["visits"], 3);
        assert_eq!(r.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(r.expires.to_rfc3339(), "2026-12-02T11:15:08.585Z");
        let back: Value = serde_json::from_slice(&express().encode(&r)).unwrap();
        assert_eq!(back["nodeOnly"]["a"][1], 2);
        assert_eq!(back["cookie"]["domain"], "example.com");
        assert_eq!(back["cookie"]["expires"], "2026-12-02T11:15:08.585Z");
        assert_eq!(back["cookie"]["originalMaxAge"], 3600000);
        assert_eq!(back["user"], "alice");
        // express-session writes its cookie object first.
        let text = String::from_utf8(express().encode(&r)).unwrap();
        assert!(
            text.starts_with("{\"cookie\":{\"originalMaxAge\":"),
            "{text}"
        );
    }

    #[test]
    fn a_session_created_here_has_the_cookie_object_node_requires() {
        let now = Timestamp::from_millis(1_800_000_000_000);
        let mut r = Record::new(
            now,
            now.plus(Duration::from_secs(60)),
            now.plus(Duration::from_secs(600)),
        );
        r.user_agent = Some("curl".into());
        r.data.insert("visits".into(), 1.into());
        let v: Value = serde_json::from_slice(&express().encode(&r)).unwrap();
        assert_eq!(v["cookie"]["originalMaxAge"], 60_000);
        assert_eq!(v["cookie"]["httpOnly"], true);
        assert_eq!(v["__lastAccess"], 1_800_000_000_000u64);
        let again = express().decode(&express().encode(&r)).unwrap();
        assert_eq!(
            (again.created_at, again.deadline, again.expires),
            (r.created_at, r.deadline, r.expires)
        );
        assert_eq!(again.user_agent.as_deref(), Some("curl"));
        assert!(express().decode(br#"{"user":"x","visits":1}"#).is_err());
    }
}
