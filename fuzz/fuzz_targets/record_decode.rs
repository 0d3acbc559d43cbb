//! Decoding a stored value (what Redis or a session file holds), in every format: never panics,
//! anything refused is `StoreError::Corrupt`, and anything accepted encodes and decodes again.
//!
//! * Native (`Record::from_json`, `format::native()`): the two agree; an accepted record re-encodes to
//!   JSON that decodes to an equal record, and whose leading version (what the stores compare) is its
//!   `lastAccess`.
//! * Express (`format::Express::new(["secret"])`, express-session's JSON as connect-redis and
//!   session-file-store hold it): an accepted value re-encodes and decodes, keeping what the crate reads
//!   from it (times, user, user agent, data, marks). Decoding settles the expiry (the later of the
//!   cookie's `expires` and `lastAccess + originalMaxAge`, within the deadline) and re-encoding writes
//!   it back into express-session's `cookie` object: the expiry is stable from the first re-encoding,
//!   the whole value from the second (a fixed point).
//!
//! On every accepted record: the listing summary, a merge and RFC 3339 formatting do not panic.
//!
//! "Equal" is exact, floats included: the crate's serde_json reads back the shortest text its writer
//! produced (`float_roundtrip`; without it `1.5777777777770001` came back one ULP off, found by this
//! target).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sessionforge::expiry::Timestamp;
use sessionforge::format::{self, Express, Format};
use sessionforge::id::StoreKey;
use sessionforge::store::{ChangeSet, Record, StoreError};
use std::sync::OnceLock;

/// Whether two encodings are the same JSON.
fn same_encoding(a: &[u8], b: &[u8]) -> bool {
    match (
        serde_json::from_slice::<Value>(a),
        serde_json::from_slice::<Value>(b),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn express() -> &'static Express {
    static EXPRESS: OnceLock<Express> = OnceLock::new();
    EXPRESS.get_or_init(|| Express::new(["secret"]).expect("a non-empty secret"))
}

fn assert_corrupt(e: &StoreError, what: &str) {
    assert!(matches!(e, StoreError::Corrupt { .. }), "{what}: {e:?}");
    assert!(!e.is_unavailable(), "{what}: {e:?}");
    assert!(!e.is_full(), "{what}: {e:?}");
    // Its message is printable.
    let _ = e.to_string();
}

/// What the stores and the admin listing do with a loaded record.
fn exercise(r: &Record) {
    let _ = r.is_expired(Timestamp::from_millis(u64::MAX));
    let _ = r.is_expired(Timestamp::from_millis(0));
    let _ = r.is_empty();
    let _ = r.owned_since();
    let key = StoreKey::parse(&"A".repeat(43)).unwrap();
    let s = r.summary(key);
    assert_eq!(s.id, key);
    assert_eq!(s.tombstone, r.tombstone);
    // RFC 3339 formatting of every time the admin shows (including years past 9999).
    for t in [
        s.created_at,
        s.last_access,
        s.expires,
        s.user_since,
        r.deadline,
    ] {
        let text = t.to_rfc3339();
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(text, t.to_string());
    }
    // A merge of a request's changes into it, as a store does on a conflict.
    let mut ours = r.clone();
    ours.last_access = r.last_access.next();
    let mut merged = r.clone();
    let mut changes = ChangeSet::default();
    changes
        .entries
        .insert("k".into(), Some(serde_json::json!(1)));
    changes.increments.insert("n".into(), i64::MAX);
    changes.deadline = Some(r.deadline);
    merged.merge(&changes, &ours);
    assert!(merged.expires <= merged.deadline);
    assert!(merged.last_access >= ours.last_access);
    assert!(merged.last_access > r.last_access || r.last_access.as_millis() == u64::MAX);
    assert_eq!(merged.data.get("k"), Some(&serde_json::json!(1)));
    let mut replaced = r.clone();
    replaced.merge(&ChangeSet::replacing_with(&ours), &ours);
    assert_eq!(replaced.data, ours.data);
    assert_eq!(replaced.user, ours.user);
}

fn native(data: &[u8]) {
    let direct = Record::from_json(data);
    let through_format = format::native().decode(data);
    match (direct, through_format) {
        (Err(e), Err(f)) => {
            assert_corrupt(&e, "Record::from_json");
            assert_corrupt(&f, "native decode");
        }
        (Ok(r), Ok(f)) => {
            assert_eq!(r, f, "Record::from_json and the native format disagree");
            let encoded = r.to_json();
            assert_eq!(format::native().encode(&r), encoded);
            let again = Record::from_json(&encoded).expect("an encoded record decodes");
            assert!(
                again == r,
                "{}\n{again:?}\n{r:?}",
                String::from_utf8_lossy(&encoded)
            );
            assert!(same_encoding(&again.to_json(), &encoded));
            // The version the stores read without decoding is the record's lastAccess.
            let version = format::native().version_rule().version_of(&encoded);
            assert_eq!(
                version.as_str(),
                r.last_access.as_millis().to_string(),
                "{}",
                String::from_utf8_lossy(&encoded)
            );
            exercise(&r);
        }
        (a, b) => panic!("Record::from_json and the native format disagree: {a:?} / {b:?}"),
    }
}

fn express_round_trip(data: &[u8]) {
    let f = express();
    let r1 = match f.decode(data) {
        Err(e) => return assert_corrupt(&e, "express decode"),
        Ok(r) => r,
    };
    exercise(&r1);
    let e1 = f.encode(&r1);
    let r2 = f.decode(&e1).unwrap_or_else(|e| {
        panic!(
            "an encoded express value decodes: {e:?} {}",
            String::from_utf8_lossy(&e1)
        )
    });
    // What the crate reads from the value survives.
    let ctx = || String::from_utf8_lossy(&e1).into_owned();
    assert_eq!(r2.last_access, r1.last_access, "{}", ctx());
    assert_eq!(r2.created_at, r1.created_at, "{}", ctx());
    assert_eq!(r2.deadline, r1.deadline, "{}", ctx());
    assert_eq!(r2.user, r1.user, "{}", ctx());
    assert_eq!(r2.user_agent, r1.user_agent, "{}", ctx());
    assert_eq!(r2.user_since, r1.user_since, "{}", ctx());
    assert_eq!(r2.tombstone, r1.tombstone, "{}", ctx());
    assert_eq!(r2.write_mark, r1.write_mark, "{}", ctx());
    assert!(
        r2.data == r1.data,
        "{}\n{:?}\n{:?}",
        ctx(),
        r2.data,
        r1.data
    );
    assert!(r2.expires <= r2.deadline, "{}", ctx());
    // Normalised by the first re-encoding (the expiry the crate computed is written back into the
    // cookie object), then stable.
    let e2 = f.encode(&r2);
    let r3 = f.decode(&e2).unwrap_or_else(|e| {
        panic!(
            "a re-encoded express value decodes: {e:?} {}",
            String::from_utf8_lossy(&e2)
        )
    });
    let ctx = || String::from_utf8_lossy(&e2).into_owned();
    assert_eq!(r3.expires, r2.expires, "{}", ctx());
    assert_eq!(r3.idle_timeout, r2.idle_timeout, "{}", ctx());
    assert!(r3.data == r2.data, "{}", ctx());
    let e3 = f.encode(&r3);
    let r4 = f.decode(&e3).expect("a re-encoded express value decodes");
    assert!(r4 == r3, "{}\n{r4:?}\n{r3:?}", String::from_utf8_lossy(&e3));
    assert!(
        same_encoding(&f.encode(&r4), &e3),
        "{}",
        String::from_utf8_lossy(&e3)
    );
}

fuzz_target!(|data: &[u8]| {
    native(data);
    express_round_trip(data);
});
