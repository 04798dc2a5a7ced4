//! CSRF tokens for cookie sessions: HMAC-SHA256 of the session id under
//! `csrf_key`, so nothing extra is stored and a token is useless for any
//! other session.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secrets::Key32;

/// The CSRF token of a session.
pub fn token_for(key: &Key32, session_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.expose()).expect("any key length");
    mac.update(b"kraliki-csrf:");
    mac.update(session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Compare a presented token with the session's, in constant time.
pub fn verify(key: &Key32, session_id: &str, presented: &str) -> bool {
    let expected = token_for(key, session_id);
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_bound_to_session() {
        let key = Key32::new([3u8; 32]);
        let t = token_for(&key, "s1");
        assert!(verify(&key, "s1", &t));
        assert!(!verify(&key, "s2", &t));
        assert!(!verify(&key, "s1", ""));
    }
}
