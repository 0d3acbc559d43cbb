//! Token and store-key parsing: never panics, accepts exactly 43 canonical base64url characters, and
//! whatever it accepts round-trips and is safe to use as a file name or Redis key suffix.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionforge::id::{StoreKey, Token};

fn check_shape(s: &str) {
    assert_eq!(s.len(), 43);
    assert!(s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    // Nothing a path could be made of.
    assert!(!s.contains('/') && !s.contains('.') && !s.contains('\\'));
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let token = Token::parse(s);
    let key = StoreKey::parse(s);
    // Tokens and store keys share one grammar.
    assert_eq!(token.is_ok(), key.is_ok(), "{s:?}");
    if let Ok(t) = token {
        assert_eq!(t.as_str(), s);
        check_shape(t.as_str());
        // Debug never shows the secret.
        assert!(!format!("{t:?}").contains(s));
        let k = t.store_key();
        check_shape(k.as_str());
        assert_ne!(k.as_str(), s);
        assert_eq!(StoreKey::parse(k.as_str()).unwrap(), k);
        assert_eq!(Token::parse(t.as_str()).unwrap(), t);
    }
    if let Ok(k) = key {
        assert_eq!(k.as_str(), s);
        assert_eq!(k.to_string(), s);
    }
});
