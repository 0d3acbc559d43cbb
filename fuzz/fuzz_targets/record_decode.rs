//! Decoding a stored record (what Redis or a session file holds): never panics, anything it refuses
//! is `StoreError::Corrupt`, and anything it accepts encodes and decodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionforge::expiry::Timestamp;
use sessionforge::id::StoreKey;
use sessionforge::store::{ChangeSet, Record, StoreError};

fuzz_target!(|data: &[u8]| {
    match Record::from_json(data) {
        Err(e) => {
            assert!(matches!(e, StoreError::Corrupt { .. }), "{e:?}");
            assert!(!e.is_unavailable());
        }
        Ok(mut r) => {
            let encoded = r.to_json();
            let again = Record::from_json(&encoded).expect("an encoded record decodes");
            assert_eq!(again.created_at, r.created_at);
            assert_eq!(again.expires, r.expires);
            assert_eq!(again.user, r.user);
            assert_eq!(again.data.len(), r.data.len());
            // What the stores and the admin listing do with a loaded record.
            let _ = r.is_expired(Timestamp::from_millis(u64::MAX));
            let key = StoreKey::parse(&"A".repeat(43)).unwrap();
            let _ = serde_json_summary(&r, key);
            let ours = again.clone();
            let mut changes = ChangeSet::default();
            changes.entries.insert("k".into(), Some(serde_json::json!(1)));
            changes.deadline = Some(r.deadline);
            r.merge(&changes, &ours);
            assert!(r.expires <= r.deadline);
        }
    }
});

fn serde_json_summary(r: &Record, key: StoreKey) -> String {
    let s = r.summary(key);
    format!("{:?} {}", s, s.created_at)
}
