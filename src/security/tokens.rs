//! Access tokens: Ed25519 key ring, JWKS, and strict `at+jwt` signing and verification.
//!
//! Tokens are compact JWS built by hand on `ed25519-dalek` so that every header is ours:
//! the only algorithm is EdDSA, every token names its key by `kid` (the RFC 7638 JWK
//! thumbprint), and verification checks the signature before it reads a single claim.
//! Every refusal has a short, stable [`TokenError::reason`] for security events; neither
//! reasons nor messages ever carry token contents or key material.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// Longest token accepted; anything longer is refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The `typ` header this module writes.
const TOKEN_TYP: &str = "at+jwt";

/// Creates a new random Ed25519 signing key as PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn generate_signing_key_pem() -> String {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .expect("a fresh Ed25519 key always encodes as PKCS#8");
    pem.as_str().to_owned()
}

/// Why a key could not be loaded. Messages never include the offending input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The signing key is not an Ed25519 PKCS#8 PEM private key.
    #[error("signing key is not an Ed25519 PKCS#8 PEM private key")]
    InvalidPrivateKey,
    /// A verify-only key is neither an Ed25519 PEM public key nor a PEM private key.
    #[error("verify-only key is not an Ed25519 PEM public or private key")]
    InvalidPublicKey,
    /// The public key is a small-order point, which would accept forged signatures.
    #[error("public key is a weak (small-order) Ed25519 point")]
    WeakKey,
}

/// A public key as published: its `kid`, raw `x` bytes and optional expiry (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// RFC 7638 JWK thumbprint of the key.
    pub kid: String,
    /// The 32-byte Ed25519 public key.
    pub x: [u8; 32],
    /// Unix time from which the key is refused; `None` for keys that do not expire.
    pub expires_at: Option<i64>,
}

struct VerifyOnlyKey {
    kid: String,
    key: VerifyingKey,
    expires_at: Option<i64>,
}

impl VerifyOnlyKey {
    fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// One signing key plus verify-only keys kept for a grace period after a rotation.
///
/// The private key lives in an `ed25519_dalek::SigningKey`, which zeroizes itself on drop.
pub struct KeyRing {
    signing: SigningKey,
    signing_kid: String,
    verify_only: Vec<VerifyOnlyKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<&str> = self.verify_only.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .field("verify_only_kids", &kids)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key (members in lexicographic order).
fn thumbprint(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.as_bytes());
    let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()))
}

impl KeyRing {
    /// Builds a ring around the signing key given as Ed25519 PKCS#8 PEM.
    pub fn from_pem(signing_pem: &str) -> Result<KeyRing, KeyError> {
        let signing =
            SigningKey::from_pkcs8_pem(signing_pem).map_err(|_| KeyError::InvalidPrivateKey)?;
        let signing_kid = thumbprint(&signing.verifying_key());
        Ok(KeyRing {
            signing,
            signing_kid,
            verify_only: Vec::new(),
        })
    }

    /// Adds a verify-only key from PEM: a public key (SPKI) or a demoted private key,
    /// of which only the public half is kept. Re-adding a key updates its expiry.
    pub fn add_verify_only_pem(
        &mut self,
        pem: &str,
        expires_at: Option<i64>,
    ) -> Result<(), KeyError> {
        let key = match VerifyingKey::from_public_key_pem(pem) {
            Ok(key) => key,
            Err(_) => SigningKey::from_pkcs8_pem(pem)
                .map_err(|_| KeyError::InvalidPublicKey)?
                .verifying_key(),
        };
        self.add_verifying_key(key, expires_at)
    }

    /// Adds a verify-only key from its raw 32 bytes. Re-adding a key updates its expiry.
    ///
    /// Unlike a bare setter this returns a `Result`: bytes that are not a point, or a
    /// small-order point, are refused rather than silently dropped.
    pub fn add_verify_only_public(
        &mut self,
        public: [u8; 32],
        expires_at: Option<i64>,
    ) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(&public).map_err(|_| KeyError::InvalidPublicKey)?;
        self.add_verifying_key(key, expires_at)
    }

    fn add_verifying_key(
        &mut self,
        key: VerifyingKey,
        expires_at: Option<i64>,
    ) -> Result<(), KeyError> {
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }

        let kid = thumbprint(&key);
        if kid == self.signing_kid {
            // The signing key never expires while it signs; nothing to add.
            return Ok(());
        }
        match self.verify_only.iter_mut().find(|k| k.kid == kid) {
            Some(existing) => existing.expires_at = expires_at,
            None => self.verify_only.push(VerifyOnlyKey {
                kid,
                key,
                expires_at,
            }),
        }
        Ok(())
    }

    /// The `kid` written into every token this ring signs.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// The signing key and every verify-only key not yet expired at `now`.
    pub fn public_keys(&self, now: i64) -> Vec<PublicKeyInfo> {
        let signing = PublicKeyInfo {
            kid: self.signing_kid.clone(),
            x: self.signing.verifying_key().to_bytes(),
            expires_at: None,
        };
        let verify_only = self
            .verify_only
            .iter()
            .filter(|k| !k.is_expired(now))
            .map(|k| PublicKeyInfo {
                kid: k.kid.clone(),
                x: k.key.to_bytes(),
                expires_at: k.expires_at,
            });
        std::iter::once(signing).chain(verify_only).collect()
    }

    /// The JWK Set served at `/.well-known/jwks.json`.
    pub fn jwks(&self, now: i64) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .public_keys(now)
            .into_iter()
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(k.x),
                    "kid": k.kid,
                    "alg": "EdDSA",
                    "use": "sig",
                })
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }

    /// Signs `claims` as a compact JWS with header `{"alg":"EdDSA","typ":"at+jwt","kid":…}`.
    pub fn sign_access(&self, claims: &AccessClaims) -> String {
        let header = format!(
            r#"{{"alg":"EdDSA","typ":"{TOKEN_TYP}","kid":"{}"}}"#,
            self.signing_kid
        );
        let payload = serde_json::to_vec(claims).expect("access claims always serialize");
        let mut token = URL_SAFE_NO_PAD.encode(header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut token);

        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        token
    }

    /// Finds the key a token names, refusing verify-only keys past their expiry.
    fn verifying_key(&self, kid: &str, now: i64) -> Result<VerifyingKey, TokenError> {
        if kid == self.signing_kid {
            return Ok(self.signing.verifying_key());
        }
        let key = self
            .verify_only
            .iter()
            .find(|k| k.kid == kid)
            .ok_or(TokenError::UnknownKid)?;
        if key.is_expired(now) {
            return Err(TokenError::ExpiredKey);
        }
        Ok(key.key)
    }

    /// Verifies an access token and returns its claims.
    ///
    /// Order: size and shape, header, key, signature (`verify_strict`), then claims.
    pub fn verify_access(
        &self,
        token: &str,
        expect: &Expectations,
        now: i64,
    ) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header_b64, payload_b64, signature_b64] = parts[..] else {
            return Err(TokenError::Malformed);
        };

        let header: Header =
            parse_object(&decode_part(header_b64)?).ok_or(TokenError::BadHeader)?;
        if header.alg.as_deref() != Some("EdDSA") {
            return Err(TokenError::UnsupportedAlg);
        }
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(TOKEN_TYP) || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenError::WrongTyp);
        }
        if header.has_forbidden_member() {
            return Err(TokenError::BadHeader);
        }
        let kid = header.kid.ok_or(TokenError::MissingKid)?;
        let key = self.verifying_key(&kid, now)?;

        let signature: [u8; 64] = decode_part(signature_b64)?
            .try_into()
            .map_err(|_| TokenError::BadSignature)?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        key.verify_strict(
            &token.as_bytes()[..signing_input_len],
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| TokenError::BadSignature)?;

        let claims: RawClaims =
            parse_object(&decode_part(payload_b64)?).ok_or(TokenError::InvalidClaims)?;
        claims.check(expect, now)
    }
}

/// Claims of an access token (DESIGN §4); all ten are required.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AccessClaims {
    /// Issuer: the deployment's public URL.
    pub iss: String,
    /// Audience the token is for.
    pub aud: String,
    /// Subject: the user id.
    pub sub: String,
    /// Organization id of the user.
    pub org: String,
    /// Role within the organization: `agent`, `supervisor` or `admin`.
    pub role: String,
    /// Session id; revoking the session stops its access tokens.
    pub sid: String,
    /// Unique token id.
    pub jti: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not valid before (unix seconds).
    pub nbf: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
}

/// What a verifier requires of a token besides a valid signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectations {
    /// Exact `iss` required.
    pub issuer: String,
    /// Audience that `aud` must be, or contain when it is an array.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds; negative counts as 0.
    pub leeway_secs: i64,
}

/// Why a token was refused; see [`TokenError::reason`] for the logged form.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Too long, not three parts, or not strict base64url.
    #[error("token is not a well-formed compact JWS")]
    Malformed,
    /// Header is not a JSON object of the expected shape, or carries a refused member.
    #[error("token header is invalid")]
    BadHeader,
    /// `alg` is anything but `EdDSA`.
    #[error("token algorithm is not supported")]
    UnsupportedAlg,
    /// `typ` is missing or not `at+jwt`.
    #[error("token type is not at+jwt")]
    WrongTyp,
    /// No `kid` header.
    #[error("token header names no key")]
    MissingKid,
    /// `kid` names no key in the ring.
    #[error("token names an unknown key")]
    UnknownKid,
    /// `kid` names a verify-only key past its expiry.
    #[error("token names a retired key")]
    ExpiredKey,
    /// Signature is not 64 bytes or does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// Claims are not a JSON object or a claim has the wrong type.
    #[error("token claims are invalid")]
    InvalidClaims,
    /// A required claim is absent (the claim name is a fixed string, never token input).
    #[error("token lacks the `{0}` claim")]
    MissingClaim(&'static str),
    /// `iss` differs from the expected issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name the expected audience.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` or `iat` lies in the future.
    #[error("token is not yet valid")]
    NotYetValid,
}

impl TokenError {
    /// Short stable snake_case reason for security events.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::BadHeader => "bad_header",
            TokenError::UnsupportedAlg => "unsupported_alg",
            TokenError::WrongTyp => "wrong_typ",
            TokenError::MissingKid => "missing_kid",
            TokenError::UnknownKid => "unknown_kid",
            TokenError::ExpiredKey => "expired_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::InvalidClaims => "invalid_claims",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
        }
    }
}

/// Decodes one token part as strict base64url: URL alphabet only, no padding,
/// canonical trailing bits.
fn decode_part(part: &str) -> Result<Vec<u8>, TokenError> {
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TokenError::Malformed);
    }
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)
}

/// Parses a JSON object into `T`. Refuses arrays (which derived structs would otherwise
/// accept positionally) and duplicate members.
fn parse_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Option<T> {
    if !json.trim_ascii_start().starts_with(b"{") {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// Records whether a member was present at all, whatever its value (even `null`).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| Present(true))
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    #[serde(default)]
    crit: Present,
    #[serde(default)]
    jku: Present,
    #[serde(default)]
    jwk: Present,
    #[serde(default)]
    x5u: Present,
    #[serde(default)]
    x5c: Present,
}

impl Header {
    /// Members that would let a token pick its own key or extend processing rules.
    fn has_forbidden_member(&self) -> bool {
        [&self.crit, &self.jku, &self.jwk, &self.x5u, &self.x5c]
            .iter()
            .any(|p| p.0)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    aud: Option<Audience>,
    sub: Option<String>,
    org: Option<String>,
    role: Option<String>,
    sid: Option<String>,
    jti: Option<String>,
    iat: Option<i64>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

fn required<T>(value: Option<T>, name: &'static str) -> Result<T, TokenError> {
    value.ok_or(TokenError::MissingClaim(name))
}

impl RawClaims {
    fn check(self, expect: &Expectations, now: i64) -> Result<AccessClaims, TokenError> {
        let claims = AccessClaims {
            iss: required(self.iss, "iss")?,
            aud: match required(self.aud, "aud")? {
                Audience::One(aud) => aud,
                Audience::Many(auds) if auds.contains(&expect.audience) => expect.audience.clone(),
                Audience::Many(_) => return Err(TokenError::WrongAudience),
            },
            sub: required(self.sub, "sub")?,
            org: required(self.org, "org")?,
            role: required(self.role, "role")?,
            sid: required(self.sid, "sid")?,
            jti: required(self.jti, "jti")?,
            iat: required(self.iat, "iat")?,
            nbf: required(self.nbf, "nbf")?,
            exp: required(self.exp, "exp")?,
        };

        let leeway = expect.leeway_secs.max(0);
        if claims.iss != expect.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != expect.audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.exp <= now.saturating_sub(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) || claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use serde_json::json;

    const NOW: i64 = 1_750_000_000;

    fn expect() -> Expectations {
        Expectations {
            issuer: "https://voice.example".into(),
            audience: "kraliki-api".into(),
            leeway_secs: 30,
        }
    }

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "https://voice.example".into(),
            aud: "kraliki-api".into(),
            sub: "user-1".into(),
            org: "org-1".into(),
            role: "agent".into(),
            sid: "session-1".into(),
            jti: "jti-1".into(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 900,
        }
    }

    fn new_ring() -> KeyRing {
        KeyRing::from_pem(&generate_signing_key_pem()).unwrap()
    }

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn header(alg: &str, kid: &str) -> String {
        format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#)
    }

    /// Builds a token from raw JSON, signed by `ring`'s signing key whatever the header says.
    fn forge(ring: &KeyRing, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = ring.signing.sign(input.as_bytes());
        format!("{input}.{}", b64(signature.to_bytes()))
    }

    /// The standard claims as JSON, after `edit`.
    fn payload(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut value = serde_json::to_value(claims()).unwrap();
        edit(&mut value);
        value.to_string()
    }

    fn verify(ring: &KeyRing, token: &str) -> Result<AccessClaims, &'static str> {
        ring.verify_access(token, &expect(), NOW)
            .map_err(|e| e.reason())
    }

    /// HMAC-SHA256 (RFC 2104), written out so the test needs no extra crate.
    fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message);
        let outer = Sha256::new().chain_update(pad(0x5c));
        outer.chain_update(inner.finalize()).finalize().to_vec()
    }

    #[test]
    fn hmac_helper_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn round_trip_with_exact_header() {
        let ring = new_ring();
        let token = ring.sign_access(&claims());
        let header_b64 = token.split('.').next().unwrap();
        let expected = header("EdDSA", ring.signing_kid());
        assert_eq!(
            URL_SAFE_NO_PAD.decode(header_b64).unwrap(),
            expected.as_bytes()
        );
        assert!(!token.contains('='));
        assert_eq!(verify(&ring, &token), Ok(claims()));
    }

    #[test]
    fn alg_none_is_refused_in_any_casing_with_or_without_signature() {
        let ring = new_ring();
        let payload = b64(payload(|_| {}));
        for alg in ["none", "None", "NONE", "nOnE"] {
            let h = b64(header(alg, ring.signing_kid()));
            for signature in [String::new(), b64([7u8; 64])] {
                let token = format!("{h}.{payload}.{signature}");
                assert_eq!(verify(&ring, &token), Err("unsupported_alg"), "{alg}");
            }
        }
    }

    #[test]
    fn hs256_keyed_with_public_key_pem_and_other_algs_are_refused() {
        let ring = new_ring();
        let public_pem = ring
            .signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF);
        let h = header("HS256", ring.signing_kid());
        let input = format!("{}.{}", b64(h), b64(payload(|_| {})));
        let mac = hmac_sha256(public_pem.unwrap().as_bytes(), input.as_bytes());
        let token = format!("{input}.{}", b64(mac));
        assert_eq!(verify(&ring, &token), Err("unsupported_alg"));

        for alg in ["ES256", "RS256", "Ed25519", "eddsa", "EdDSA "] {
            let token = forge(&ring, &header(alg, ring.signing_kid()), &payload(|_| {}));
            assert_eq!(verify(&ring, &token), Err("unsupported_alg"), "{alg}");
        }
    }

    #[test]
    fn kid_must_be_present_and_known() {
        let ring = new_ring();
        let no_kid = forge(&ring, r#"{"alg":"EdDSA","typ":"at+jwt"}"#, &payload(|_| {}));
        assert_eq!(verify(&ring, &no_kid), Err("missing_kid"));
        let other = new_ring().sign_access(&claims());
        assert_eq!(verify(&ring, &other), Err("unknown_kid"));
    }

    #[test]
    fn header_shape_typ_and_refused_members() {
        let ring = new_ring();
        let kid = ring.signing_kid().to_owned();
        let case = |h: String| verify(&ring, &forge(&ring, &h, &payload(|_| {}))).map(|_| ());

        for member in ["crit", "jku", "jwk", "x5u", "x5c"] {
            let h = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}","{member}":null}}"#);
            assert_eq!(case(h), Err("bad_header"), "{member}");
        }
        let duplicate = format!(r#"{{"alg":"none","alg":"EdDSA","typ":"at+jwt","kid":"{kid}"}}"#);
        assert_eq!(case(duplicate), Err("bad_header"));
        assert_eq!(
            case(format!(r#"["EdDSA","at+jwt","{kid}"]"#)),
            Err("bad_header")
        );
        assert_eq!(
            case(r#"{"alg":"EdDSA","typ":"at+jwt","kid":7}"#.into()),
            Err("bad_header")
        );
        let jwt = format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#);
        assert_eq!(case(jwt), Err("wrong_typ"));
        assert_eq!(
            case(format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#)),
            Err("wrong_typ")
        );
        let long_typ = format!(r#"{{"alg":"EdDSA","typ":"Application/AT+JWT","kid":"{kid}"}}"#);
        assert_eq!(case(long_typ), Ok(()));
    }

    #[test]
    fn time_claims_with_leeway() {
        let ring = new_ring();
        let at = |exp: i64, nbf: i64, iat: i64| {
            let token = ring.sign_access(&AccessClaims {
                exp,
                nbf,
                iat,
                ..claims()
            });
            verify(&ring, &token).map(|_| ())
        };
        assert_eq!(at(NOW - 100, NOW - 999, NOW - 999), Err("expired"));
        assert_eq!(at(NOW - 30, NOW - 999, NOW - 999), Err("expired"));
        assert_eq!(at(NOW - 29, NOW - 999, NOW - 999), Ok(()));
        assert_eq!(at(NOW + 900, NOW + 60, NOW), Err("not_yet_valid"));
        assert_eq!(at(NOW + 900, NOW, NOW + 60), Err("not_yet_valid"));
        assert_eq!(at(NOW + 900, NOW + 30, NOW + 30), Ok(()));
        assert_eq!(at(i64::MAX, i64::MIN, i64::MIN), Ok(()));
    }

    #[test]
    fn claims_must_be_complete_and_typed() {
        let ring = new_ring();
        let kid = ring.signing_kid().to_owned();
        let case = |p: String| {
            ring.verify_access(&forge(&ring, &header("EdDSA", &kid), &p), &expect(), NOW)
        };

        let no_exp = payload(|v| drop(v.as_object_mut().unwrap().remove("exp")));
        assert_eq!(case(no_exp), Err(TokenError::MissingClaim("exp")));
        let null_sid = payload(|v| v["sid"] = serde_json::Value::Null);
        assert_eq!(case(null_sid).unwrap_err().reason(), "missing_claim");
        let text_exp = payload(|v| v["exp"] = "9999999999".into());
        assert_eq!(case(text_exp).unwrap_err().reason(), "invalid_claims");
        assert_eq!(case("[]".into()).unwrap_err().reason(), "invalid_claims");
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let ring = new_ring();
        let kid = ring.signing_kid().to_owned();
        let case = |p: String| verify(&ring, &forge(&ring, &header("EdDSA", &kid), &p));

        let iss = payload(|v| v["iss"] = "https://voice.example/".into());
        assert_eq!(case(iss), Err("wrong_issuer"));
        let aud = payload(|v| v["aud"] = "other-api".into());
        assert_eq!(case(aud), Err("wrong_audience"));
        let auds = payload(|v| v["aud"] = json!(["a", "b"]));
        assert_eq!(case(auds), Err("wrong_audience"));
        let auds = payload(|v| v["aud"] = json!(["a", "kraliki-api"]));
        assert_eq!(case(auds).unwrap().aud, "kraliki-api");
    }

    #[test]
    fn tampered_stripped_or_short_signature() {
        let ring = new_ring();
        let token = ring.sign_access(&claims());
        let [h, p, s] = token.split('.').collect::<Vec<_>>()[..] else {
            unreachable!()
        };

        let admin = b64(payload(|v| v["role"] = "admin".into()));
        assert_eq!(
            verify(&ring, &format!("{h}.{admin}.{s}")),
            Err("bad_signature")
        );
        assert_eq!(verify(&ring, &format!("{h}.{p}.")), Err("bad_signature"));
        let short = b64(&URL_SAFE_NO_PAD.decode(s).unwrap()[..63]);
        assert_eq!(
            verify(&ring, &format!("{h}.{p}.{short}")),
            Err("bad_signature")
        );
    }

    #[test]
    fn strict_shape_and_encoding() {
        let ring = new_ring();
        let refresh_token = b64(rand::random::<[u8; 32]>());
        assert_eq!(refresh_token.len(), 43);
        assert_eq!(verify(&ring, &refresh_token), Err("malformed"));

        let token = ring.sign_access(&claims());
        let (rest, sig) = token.rsplit_once('.').unwrap();
        let mutants = [
            format!("{token}="),
            format!("{rest}.+{}", &sig[1..]),
            format!("{rest}.{}/", &sig[..sig.len() - 1]),
            format!(" {token}"),
            format!("{token}\n"),
            format!("{token}.{sig}"),
            rest.to_owned(),
            format!("{rest}.{}", "A".repeat(MAX_TOKEN_LEN)),
        ];
        for mutant in mutants {
            assert_eq!(verify(&ring, &mutant), Err("malformed"), "{mutant:?}");
        }
    }

    #[test]
    fn verify_only_key_works_until_its_expiry() {
        let old_pem = generate_signing_key_pem();
        let token = KeyRing::from_pem(&old_pem).unwrap().sign_access(&claims());

        let mut ring = new_ring();
        ring.add_verify_only_pem(&old_pem, Some(NOW + 1)).unwrap();
        assert_eq!(verify(&ring, &token), Ok(claims()));
        let after = ring.verify_access(&token, &expect(), NOW + 1);
        assert_eq!(after, Err(TokenError::ExpiredKey));
        assert_eq!(ring.public_keys(NOW).len(), 2);
        assert_eq!(ring.public_keys(NOW + 1).len(), 1);
    }

    #[test]
    fn jwks_contents_and_kid_stability() {
        let pem = generate_signing_key_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let mut ring = KeyRing::from_pem(&pem).unwrap();
        assert_eq!(
            ring.signing_kid(),
            KeyRing::from_pem(&pem).unwrap().signing_kid()
        );

        // RFC 8037 appendix A.3: the thumbprint of the RFC 8032 test 1 public key.
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).unwrap().try_into().unwrap();
        ring.add_verify_only_public(bytes, Some(NOW + 60)).unwrap();
        let own_public = ring
            .signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF);
        ring.add_verify_only_pem(&own_public.unwrap(), None)
            .unwrap();

        let signing_x = b64(ring.signing.verifying_key().as_bytes());
        let kid = ring.signing_kid();
        let jwk = |x: &str, kid: &str| json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"});
        let old_kid = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";
        let both = json!({ "keys": [jwk(&signing_x, kid), jwk(x, old_kid)] });
        assert_eq!(ring.jwks(NOW), both);
        assert_eq!(
            ring.jwks(NOW + 60),
            json!({ "keys": [jwk(&signing_x, kid)] })
        );
    }

    #[test]
    fn key_errors_and_debug_reveal_no_material() {
        let pem = generate_signing_key_pem();
        let mut ring = KeyRing::from_pem(&pem).unwrap();
        let debug = format!("{ring:?}");
        assert!(debug.contains(ring.signing_kid()));
        let secret = ring.signing.to_bytes();
        for shown in [
            b64(secret),
            format!("{secret:?}"),
            format!("{:?}", &secret[..4]),
        ] {
            assert!(!debug.contains(&shown));
        }

        let err = KeyRing::from_pem(&pem.replace('A', "B")).unwrap_err();
        assert_eq!(err, KeyError::InvalidPrivateKey);
        assert!(!err.to_string().contains("BEGIN"));
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            ring.add_verify_only_public(identity, None),
            Err(KeyError::WeakKey)
        );
        let not_a_key = ring.add_verify_only_pem("not a key", None);
        assert_eq!(not_a_key, Err(KeyError::InvalidPublicKey));
    }

    #[test]
    fn errors_never_echo_token_contents() {
        let ring = new_ring();
        let token = forge(&ring, &header("EdDSA", "<script>secret-kid"), "{}");
        let err = ring.verify_access(&token, &expect(), NOW).unwrap_err();
        assert_eq!(err, TokenError::UnknownKid);
        assert!(!format!("{err} {err:?}").contains("secret-kid"));
    }
}
