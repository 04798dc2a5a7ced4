//! AES-256-GCM sealing of small values (session references in cookies,
//! TOTP secrets at rest). The output is base64url of nonce ‖ ciphertext;
//! the associated data binds a sealed value to its purpose.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;

use crate::secrets::Key32;

/// Seal `plaintext` for `purpose`.
pub fn seal(key: &Key32, purpose: &[u8], plaintext: &[u8]) -> String {
    let cipher = Aes256Gcm::new(key.expose().into());
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: purpose,
            },
        )
        .expect("AES-GCM encryption of a small value cannot fail");
    let mut out = Vec::with_capacity(12 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    URL_SAFE_NO_PAD.encode(out)
}

/// Open a sealed value; `None` when it was altered, sealed for another
/// purpose or under another key.
pub fn open(key: &Key32, purpose: &[u8], sealed: &str) -> Option<Vec<u8>> {
    if sealed.len() > 4096 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if raw.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = raw.split_at(12);
    Aes256Gcm::new(key.expose().into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: purpose,
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = Key32::new([9u8; 32]);
        let sealed = seal(&key, b"session", b"abc");
        assert_eq!(open(&key, b"session", &sealed).unwrap(), b"abc");
        assert!(open(&key, b"totp", &sealed).is_none());
        assert!(open(&Key32::new([8u8; 32]), b"session", &sealed).is_none());
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        raw[13] ^= 1;
        assert!(open(&key, b"session", &URL_SAFE_NO_PAD.encode(raw)).is_none());
    }
}
