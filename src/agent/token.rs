//! Agent tokens: the shared secret between one agent process and the conductor.
//!
//! Issued once per deployment (at the first lookup, or pregenerated for virtual media), sent
//! by the agent with every heartbeat and by the conductor with every command. Compared in
//! constant time so response timing reveals nothing about the stored token.

use base64::Engine;
use subtle::ConstantTimeEq;

/// What the API and a repeated lookup show instead of a token.
pub const MASK: &str = "******";

/// Random bytes in a token (Python's `secrets.token_urlsafe()` default, which Ironic uses).
const TOKEN_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("cannot read the system random source for an agent token: {0}")]
pub struct TokenError(String);

/// A new token: 32 random bytes, url-safe base64 without padding (43 characters).
pub fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| TokenError(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// True when `given` equals `stored`. A missing token on either side never matches.
pub fn matches(stored: Option<&str>, given: Option<&str>) -> bool {
    match (stored, given) {
        (Some(s), Some(g)) if !s.is_empty() => bool::from(s.as_bytes().ct_eq(g.as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_url_safe_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{a}"
        );
    }

    #[test]
    fn matching_needs_both_sides_and_exact_bytes() {
        let t = generate().unwrap();
        assert!(matches(Some(&t), Some(&t)));
        assert!(!matches(Some(&t), Some(&t[..42])));
        assert!(!matches(Some(&t), Some(MASK)));
        assert!(!matches(Some(&t), None));
        assert!(!matches(None, Some(&t)));
        assert!(!matches(Some(""), Some("")));
    }
}
