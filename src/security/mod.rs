//! Cryptography and security controls: tokens, passwords, second factor,
//! sealing, CSRF, permissions, client addresses, security events and their
//! alerts, and the guard on outbound requests.

pub mod alerts;
pub mod blocklist;
pub mod client_ip;
pub mod csrf;
pub mod events;
pub mod fanout;
pub mod ids;
pub mod outbound;
pub mod password;
pub mod permissions;
pub mod ratelimit;
pub mod seal;
pub mod tokens;
pub mod totp;

use base64::Engine;
use rand::RngCore;
use sha2::Digest;

/// A random opaque token of 256 bits, base64url without padding.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 hex of an opaque token, the only form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
