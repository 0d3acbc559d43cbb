//! Token and store-key parsing: never panics; each parser accepts exactly its grammar, and whatever it
//! accepts round-trips and is safe to use as a file name or Redis key suffix.
//!
//! * `Token::parse` (the native format's strict parser): exactly 43 base64url characters whose last one
//!   is canonical (its two padding bits zero, so one 256-bit value has one text).
//! * `Token::parse_loose(s, min)`: `max(min, 1)..=64` base64url characters.
//! * `StoreKey::parse`: 1 to 64 base64url characters.
//!
//! Between them: a token's text is a valid store key (and a loose token's), a token's store key is
//! itself a 43-character key different from the token, and none of them contains a path character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionforge::format;
use sessionforge::id::{StoreKey, Token, MAX_LEN};

/// The value of a base64url character.
fn b64url(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// The grammar of a store key (and of a loose token with `min` 1): 1..=64 base64url characters.
fn key_grammar(s: &str, min: usize) -> bool {
    (min.max(1)..=MAX_LEN).contains(&s.len()) && s.bytes().all(|b| b64url(b).is_some())
}

/// The grammar of a native token: 43 base64url characters, the last with its two low bits zero.
fn token_grammar(s: &str) -> bool {
    s.len() == 43 && key_grammar(s, 43) && b64url(s.as_bytes()[42]).is_some_and(|v| v & 0b11 == 0)
}

/// Safe as a file name and a Redis key suffix: base64url only, so no separator, dot, space, glob or
/// control character.
fn check_safe(s: &str) {
    assert!(!s.is_empty() && s.len() <= MAX_LEN, "{s:?}");
    assert!(s.bytes().all(|b| b64url(b).is_some()), "{s:?}");
    assert!(
        !s.contains(['/', '\\', '.', '%', ':', '*', '?', ' ', '\0']),
        "{s:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let token = Token::parse(s);
    let key = StoreKey::parse(s);

    // Each parser accepts exactly its grammar.
    assert_eq!(token.is_ok(), token_grammar(s), "Token::parse {s:?}");
    assert_eq!(key.is_ok(), key_grammar(s, 1), "StoreKey::parse {s:?}");
    for min in [0, 1, 16, 43, MAX_LEN, MAX_LEN + 1] {
        let loose = Token::parse_loose(s, min);
        assert_eq!(
            loose.is_ok(),
            key_grammar(s, min),
            "parse_loose({s:?}, {min})"
        );
        if let Ok(t) = loose {
            assert_eq!(t.as_str(), s);
            // A key by the token itself (the express format's) is the token's text.
            assert_eq!(StoreKey::of_token(&t).as_str(), s);
            // Debug never shows it ("Token(<redacted>)" holds no base64url run longer than 8).
            assert!(s.len() <= 8 || !format!("{t:?}").contains(s));
        }
    }
    // The native format opens exactly what the strict parser accepts.
    assert_eq!(format::native().open(s), token.ok(), "native open {s:?}");

    if let Ok(t) = token {
        // A token's text is a valid store key.
        assert!(key.is_ok(), "{s:?}");
        assert_eq!(t.as_str(), s);
        assert_eq!(t.into_string(), s);
        check_safe(t.as_str());
        // Debug never shows the secret.
        assert!(!format!("{t:?}").contains(s));
        let k = t.store_key();
        assert_eq!(k.as_str().len(), 43);
        check_safe(k.as_str());
        assert_ne!(k.as_str(), s);
        assert_eq!(StoreKey::parse(k.as_str()).unwrap(), k);
        assert_eq!(Token::parse(t.as_str()).unwrap(), t);
        assert_eq!(format::native().store_key(&t), k);
        assert!(format::native().accepts_key(&k));
        assert_eq!(format::native().seal(&t), s);
    }
    if let Ok(k) = key {
        assert_eq!(k.as_str(), s);
        assert_eq!(k.to_string(), s);
        check_safe(k.as_str());
        // Store keys are safe to show: Debug names them.
        assert!(format!("{k:?}").contains(s));
        assert_eq!(StoreKey::parse(k.as_str()).unwrap(), k);
        // Ordered as its text is.
        let a = StoreKey::parse("A").unwrap();
        assert_eq!(k.cmp(&a), s.cmp("A"));
        // The native format's stores only list digest-shaped keys.
        assert_eq!(format::native().accepts_key(&k), s.len() == 43);
    }
    // A digest key of anything is a well-formed key.
    let d = StoreKey::digest_of(data, data.len());
    check_safe(d.as_str());
    assert_eq!(StoreKey::parse(d.as_str()).unwrap(), d);
});
