//! The keys a running server signs, seals and derives with, swappable while
//! it runs.
//!
//! Each rotatable key has one current value, used for everything new, and
//! any number of retired values with an expiry, accepted for what was made
//! before the rotation (tokens, session cookies, CSRF tokens) until they
//! expire. SIGHUP rebuilds the whole set from the secrets on disk and swaps
//! it in; requests in flight finish with the set they started with.

use std::sync::{Arc, RwLock};

use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::secrets::{decode_symmetric, Key32, Secrets};
use crate::security::tokens::KeyRing;
use crate::security::{csrf, seal};

/// A 256-bit key with the retired values still accepted after a rotation.
#[derive(Debug, Clone)]
pub struct SymmetricRing {
    current: Key32,
    retired: Vec<(Key32, i64)>,
}

impl SymmetricRing {
    /// A ring of one key and no retired ones.
    pub fn single(current: Key32) -> Self {
        SymmetricRing {
            current,
            retired: Vec::new(),
        }
    }

    /// Add a retired key accepted until `expires_at` (unix seconds).
    pub fn with_retired(mut self, key: Key32, expires_at: i64) -> Self {
        self.retired.push((key, expires_at));
        self
    }

    /// The key for everything new.
    pub fn current(&self) -> &Key32 {
        &self.current
    }

    /// The keys accepted at `now`: the current one first, then retired keys
    /// not yet expired.
    pub fn accepted(&self, now: i64) -> impl Iterator<Item = &Key32> {
        std::iter::once(&self.current).chain(
            self.retired
                .iter()
                .filter(move |(_, expires_at)| now < *expires_at)
                .map(|(key, _)| key),
        )
    }

    /// Whether this ring holds the same current key as `other`.
    pub fn same_current(&self, other: &SymmetricRing) -> bool {
        bool::from(self.current.expose().ct_eq(other.current.expose()))
    }
}

/// Every key the request path needs.
#[derive(Debug)]
pub struct LiveKeys {
    /// Access-token signing key and verify-only keys.
    pub tokens: KeyRing,
    /// Seals the browser session cookie.
    pub session: SymmetricRing,
    /// Derives CSRF tokens.
    pub csrf: SymmetricRing,
}

impl LiveKeys {
    /// Build the set from loaded secrets, retired keys included.
    pub fn from_secrets(secrets: &Secrets) -> anyhow::Result<LiveKeys> {
        let mut tokens = KeyRing::from_pem(secrets.jwt_signing_key.expose_secret())
            .map_err(|e| anyhow::anyhow!("jwt_signing_key: {e}"))?;
        let mut session = SymmetricRing::single(secrets.session_key.clone());
        let mut csrf = SymmetricRing::single(secrets.csrf_key.clone());
        for (name, retired) in &secrets.retired {
            for key in retired {
                let text = key.value.expose_secret();
                let bad = |e: &dyn std::fmt::Display| {
                    anyhow::anyhow!("retired key {}: {e}", key.path.display())
                };
                match *name {
                    "jwt_signing_key" => {
                        let pem = crate::secrets::normalize_jwt_key(text).map_err(|e| bad(&e))?;
                        tokens
                            .add_verify_only_pem(&pem, Some(key.expires_at))
                            .map_err(|e| bad(&e))?;
                    }
                    "session_key" => {
                        let k = decode_symmetric(name, text).map_err(|e| bad(&e))?;
                        session = session.with_retired(k, key.expires_at);
                    }
                    "csrf_key" => {
                        let k = decode_symmetric(name, text).map_err(|e| bad(&e))?;
                        csrf = csrf.with_retired(k, key.expires_at);
                    }
                    other => anyhow::bail!("{other} cannot have retired keys"),
                }
            }
        }
        Ok(LiveKeys {
            tokens,
            session,
            csrf,
        })
    }
}

/// Associated data of a sealed session cookie.
pub const SESSION_PURPOSE: &[u8] = b"kraliki-session-v1";

impl LiveKeys {
    /// The session cookie value for `session_id`, sealed with the current key.
    pub fn seal_session(&self, session_id: &str) -> String {
        seal::seal(
            self.session.current(),
            SESSION_PURPOSE,
            session_id.as_bytes(),
        )
    }

    /// The session id inside a cookie sealed with any key accepted at `now`.
    pub fn open_session(&self, cookie: &str, now: i64) -> Option<String> {
        self.session
            .accepted(now)
            .find_map(|key| seal::open(key, SESSION_PURPOSE, cookie))
            .and_then(|bytes| String::from_utf8(bytes).ok())
    }

    /// The CSRF token of a session, derived with the current key.
    pub fn csrf_token(&self, session_id: &str) -> String {
        csrf::token_for(self.csrf.current(), session_id)
    }

    /// Whether `presented` is the CSRF token of the session under any key
    /// accepted at `now`.
    pub fn csrf_valid(&self, session_id: &str, presented: &str, now: i64) -> bool {
        // Every accepted key is tried, so the time taken does not tell which
        // one matched.
        self.csrf.accepted(now).fold(false, |ok, key| {
            csrf::verify(key, session_id, presented) | ok
        })
    }
}

/// The current [`LiveKeys`], replaced as a whole on reload.
#[derive(Debug)]
pub struct KeyStore(RwLock<Arc<LiveKeys>>);

impl KeyStore {
    /// Hold `keys`.
    pub fn new(keys: LiveKeys) -> Self {
        KeyStore(RwLock::new(Arc::new(keys)))
    }

    /// The keys in force now. Callers keep the `Arc` for the length of one
    /// operation, never across a reload they wait for.
    pub fn get(&self) -> Arc<LiveKeys> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            // A panic while swapping cannot leave a half-built value: the
            // write is a single pointer store.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Put `keys` in force; returns the set it replaced.
    pub fn replace(&self, keys: LiveKeys) -> Arc<LiveKeys> {
        let mut guard = match self.0.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *guard, Arc::new(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_keys_are_accepted_until_they_expire() {
        let ring = SymmetricRing::single(Key32::new([1; 32]))
            .with_retired(Key32::new([2; 32]), 100)
            .with_retired(Key32::new([3; 32]), 50);
        let firsts = |now| -> Vec<u8> { ring.accepted(now).map(|k| k.expose()[0]).collect() };
        assert_eq!(firsts(10), vec![1, 2, 3]);
        assert_eq!(firsts(50), vec![1, 2]);
        assert_eq!(firsts(100), vec![1]);
        assert_eq!(ring.current().expose()[0], 1);
    }

    #[test]
    fn same_current_compares_key_bytes() {
        let a = SymmetricRing::single(Key32::new([1; 32]));
        let b = SymmetricRing::single(Key32::new([1; 32])).with_retired(Key32::new([2; 32]), 9);
        let c = SymmetricRing::single(Key32::new([3; 32]));
        assert!(a.same_current(&b));
        assert!(!a.same_current(&c));
    }
}
