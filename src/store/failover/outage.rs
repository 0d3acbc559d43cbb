//! What the failover store remembers of an outage, durably, in its fallback: a tombstone for each
//! session deleted while the primary was away (under the session's own key, so no path can create the
//! session there again), and a marker for each user revoked then (under a key derived from the user).
//! Both are ordinary records with [`Record::tombstone`] set: whichever process fails back finds them in
//! the fallback's listing and carries them over.

use crate::expiry::Timestamp;
use crate::id::StoreKey;
use crate::store::Record;
use serde_json::Value;
use std::collections::HashMap;

/// A tombstone for a session deleted at `now`, kept until `until` (when the primary's copy would have
/// expired anyway).
pub(super) fn tombstone(now: Timestamp, until: Timestamp) -> Record {
    let mut r = Record::new(now, until, until);
    r.tombstone = true;
    r
}

/// Where the revoke marker of `user` lives.
pub(super) fn marker_key(user: &str) -> StoreKey {
    StoreKey::digest_of(format!("sessionforge:revoked-user:{user}").as_bytes(), 32)
}

/// A user's sessions revoked during an outage: every one created up to `at`, except `keep`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Revoked {
    pub(super) keep: Option<StoreKey>,
    pub(super) at: Timestamp,
}

/// The marker for revoking `user`'s sessions as `revoked` says, kept until `until`.
pub(super) fn marker(user: &str, revoked: &Revoked, until: Timestamp) -> Record {
    let mut r = tombstone(revoked.at, until);
    r.user = Some(user.to_owned());
    r.data.insert(
        "keep".into(),
        revoked.keep.map_or(Value::Null, |k| k.as_str().into()),
    );
    r.data.insert("at".into(), revoked.at.as_millis().into());
    r
}

/// The user and revocation of a marker record stored under `key`; `None` for anything else (a
/// session, a session's tombstone, a record that only looks like a marker).
pub(super) fn parse_marker(key: &StoreKey, record: &Record) -> Option<(String, Revoked)> {
    let user = record.user.as_ref().filter(|_| record.tombstone)?;
    if marker_key(user) != *key {
        return None;
    }
    let keep = match record.data.get("keep") {
        Some(Value::String(k)) => Some(StoreKey::parse(k).ok()?),
        _ => None,
    };
    let at = Timestamp::from_millis(record.data.get("at")?.as_u64()?);
    Some((user.clone(), Revoked { keep, at }))
}

/// Users revoked during the outage, by user.
pub(super) type RevokedUsers = HashMap<String, Revoked>;

/// Whether `record`, stored under `key`, is a session of a user revoked during the outage.
pub(super) fn revoked(users: &RevokedUsers, key: &StoreKey, record: &Record) -> bool {
    record
        .user
        .as_ref()
        .and_then(|u| users.get(u))
        .is_some_and(|r| {
            r.keep.as_ref() != Some(key) && record.owned_since() <= r.at && !record.tombstone
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Token;

    #[test]
    fn a_marker_round_trips_and_nothing_else_passes_for_one() {
        let keep = Token::generate().store_key();
        let r = Revoked {
            keep: Some(keep),
            at: Timestamp::from_millis(5),
        };
        let m = marker("alice", &r, Timestamp::from_millis(50));
        assert!(m.tombstone);
        assert_eq!(
            parse_marker(&marker_key("alice"), &m),
            Some(("alice".to_owned(), r.clone()))
        );
        // Under another key, or not a tombstone: not a marker.
        assert_eq!(parse_marker(&marker_key("bob"), &m), None);
        let mut session = m.clone();
        session.tombstone = false;
        assert_eq!(parse_marker(&marker_key("alice"), &session), None);
    }

    #[test]
    fn a_revocation_covers_the_users_older_sessions_but_the_kept_one() {
        let keep = Token::generate().store_key();
        let other = Token::generate().store_key();
        let users: RevokedUsers = [(
            "alice".to_owned(),
            Revoked {
                keep: Some(keep),
                at: Timestamp::from_millis(100),
            },
        )]
        .into();
        let mut s = Record::new(
            Timestamp::from_millis(50),
            Timestamp::from_millis(500),
            Timestamp::from_millis(500),
        );
        s.user = Some("alice".into());
        assert!(revoked(&users, &other, &s));
        assert!(!revoked(&users, &keep, &s));
        // A login after the revocation is a new session, not covered.
        s.created_at = Timestamp::from_millis(101);
        assert!(!revoked(&users, &other, &s));
        s.user = Some("bob".into());
        s.created_at = Timestamp::from_millis(1);
        assert!(!revoked(&users, &other, &s));
    }
}
