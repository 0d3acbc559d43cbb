//! [`ExactJson`]: a JSON body, refused (400) when it holds an integer JSON cannot keep exactly,
//! instead of rounding it in silence.

use crate::error::AppError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// A JSON body of type `T`. Integers beyond what a 64-bit integer holds (which a JSON parser would
/// turn into a rounded float: `123456789012345678901234567890` becomes `1.2345678901234568e+29`) are
/// refused with 400, as are bodies that are not JSON or not a `T`; bodies over the app's limit get
/// 413. Every refusal is JSON.
pub struct ExactJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ExactJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await?;
        if let Some(number) = inexact_integer(&bytes) {
            return Err(AppError::BadRequest(format!(
                "the integer {number} is too large to keep exactly; send it as a string"
            )));
        }
        serde_json::from_slice(&bytes)
            .map(ExactJson)
            .map_err(|e| AppError::BadRequest(format!("the body is not the JSON expected: {e}")))
    }
}

/// The first integer literal (no fraction, no exponent) in `json` that fits neither an `i64` nor a
/// `u64`, if any. Strings are skipped.
fn inexact_integer(json: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < json.len()
                    && matches!(json[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = std::str::from_utf8(&json[start..i]).unwrap_or("");
                let integer = !token.contains(['.', 'e', 'E']);
                if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
                    return Some(token.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_integers_beyond_64_bits_are_inexact() {
        assert_eq!(
            inexact_integer(br#"{"a":123456789012345678901234567890}"#).as_deref(),
            Some("123456789012345678901234567890")
        );
        assert_eq!(
            inexact_integer(br#"[-9223372036854775809]"#).as_deref(),
            Some("-9223372036854775809")
        );
        for fine in [
            &br#"{"a":18446744073709551615,"b":-9223372036854775808}"#[..],
            br#"1.5e300"#,
            br#""123456789012345678901234567890""#,
            br#"{"s":"\"99999999999999999999999\""}"#,
        ] {
            assert_eq!(
                inexact_integer(fine),
                None,
                "{}",
                String::from_utf8_lossy(fine)
            );
        }
    }
}
