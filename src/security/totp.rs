//! The second factor: TOTP codes (RFC 6238) and single-use recovery codes.
//!
//! TOTP here is the profile every authenticator app understands: HMAC-SHA-1,
//! 6 digits, 30-second steps, a 160-bit secret shown as base32. A code is
//! accepted for the current step and one step either side (clock drift), is
//! compared in constant time, and is refused when its step is not later than
//! the last step the account used, so an observed code cannot be replayed.
//!
//! Recovery codes are random strings from an alphabet without look-alike
//! characters. Only their SHA-256 is stored; a code is normalized (lowercase,
//! no dashes or spaces) before hashing so users may type it either way. The
//! caller deletes a code's hash once it has been used.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::{Rng, RngCore};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a generated TOTP secret in bytes (160 bits, as RFC 4226 advises).
pub const SECRET_LEN: usize = 20;

/// Number of digits in a code.
pub const DIGITS: usize = 6;

/// Length of a time step in seconds.
pub const STEP_SECONDS: u64 = 30;

/// How many steps before and after the current one are still accepted.
pub const ALLOWED_DRIFT_STEPS: u64 = 1;

/// Alphabet of recovery codes: lowercase letters and digits without the
/// look-alikes `0`/`o`, `1`/`l`/`i`. 31 symbols, about 4.95 bits each.
const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// Characters in each dash-separated group of a recovery code.
const RECOVERY_GROUP_LEN: usize = 4;

/// Groups in a recovery code: 3 groups of 4 make 12 symbols, about 59 bits.
const RECOVERY_GROUPS: usize = 3;

/// RFC 4648 base32 alphabet, as used in `otpauth://` URIs.
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A fresh random TOTP secret of [`SECRET_LEN`] bytes from the OS generator.
pub fn generate_secret() -> Vec<u8> {
    let mut secret = vec![0u8; SECRET_LEN];
    OsRng.fill_bytes(&mut secret);
    secret
}

/// The secret in unpadded RFC 4648 base32, the form authenticator apps take
/// when a user types the key by hand.
pub fn secret_base32(secret: &[u8]) -> String {
    let mut encoded = String::with_capacity(secret.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits: u32 = 0;
    for &byte in secret {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            encoded.push(char::from(
                BASE32_ALPHABET[usize::from((buffer >> bits) & 0x1f)],
            ));
        }
    }
    if bits > 0 {
        encoded.push(char::from(
            BASE32_ALPHABET[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    encoded
}

/// The `otpauth://totp/...` URI an authenticator app reads from a QR code,
/// following the Key URI format: label `issuer:account`, then the secret,
/// issuer, algorithm, digits and period. Issuer and account are
/// percent-encoded.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
         &algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        account = percent_encode(account),
        secret = secret_base32(secret),
    )
}

/// Percent-encodes everything except RFC 3986 unreserved characters, so the
/// result is safe in both the path and the query of a URI.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// Checks a TOTP `code` typed at `unix_time` (seconds).
///
/// Accepts the code of the current step or of one step either side, unless
/// that step is at or before `last_used_step` (a replay). The code must be
/// exactly [`DIGITS`] ASCII digits; surrounding whitespace is ignored. Every
/// candidate step is computed and compared in constant time. Returns the
/// matched step, which the caller stores as the new `last_used_step`; when
/// two steps match (a one-in-a-million coincidence) the later one is returned
/// so neither code can be used again.
#[must_use]
pub fn verify_code(
    secret: &[u8],
    code: &str,
    unix_time: u64,
    last_used_step: Option<u64>,
) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }

    let current = unix_time / STEP_SECONDS;
    let first = current.saturating_sub(ALLOWED_DRIFT_STEPS);
    let last = current.saturating_add(ALLOWED_DRIFT_STEPS);
    let mut matched = None;
    for step in first..=last {
        let expected = hotp(secret, step, DIGITS);
        let equal: bool = expected.as_bytes().ct_eq(code.as_bytes()).into();
        let fresh = last_used_step.is_none_or(|used| step > used);
        if equal && fresh {
            matched = Some(step);
        }
    }
    matched
}

/// The 6-digit code for `unix_time` (seconds), zero-padded.
pub fn code_at(secret: &[u8], unix_time: u64) -> String {
    hotp(secret, unix_time / STEP_SECONDS, DIGITS)
}

/// HOTP (RFC 4226): HMAC-SHA-1 of the big-endian counter, dynamically
/// truncated to 31 bits, reduced to `digits` decimal digits (at most 9).
fn hotp(secret: &[u8], counter: u64, digits: usize) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();

    let offset = usize::from(digest[digest.len() - 1] & 0x0f);
    let truncated = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    let modulus = 10u32.pow(u32::try_from(digits).unwrap_or(9).min(9));
    format!("{:0width$}", truncated % modulus, width = digits)
}

/// `n` fresh recovery codes, each like `k7m2-x9qp-3hwd`: 12 symbols from a
/// 31-character alphabet without look-alikes (about 59 bits).
pub fn generate_recovery_codes(n: usize) -> Vec<String> {
    (0..n).map(|_| generate_recovery_code()).collect()
}

fn generate_recovery_code() -> String {
    let mut code = String::with_capacity(RECOVERY_GROUPS * (RECOVERY_GROUP_LEN + 1));
    for group in 0..RECOVERY_GROUPS {
        if group > 0 {
            code.push('-');
        }
        for _ in 0..RECOVERY_GROUP_LEN {
            let index = OsRng.gen_range(0..RECOVERY_ALPHABET.len());
            code.push(char::from(RECOVERY_ALPHABET[index]));
        }
    }
    code
}

/// The canonical form of a recovery code as typed: lowercase, with dashes and
/// whitespace removed.
pub fn normalize_recovery_code(code: &str) -> String {
    code.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The value stored for a recovery code: lowercase hex SHA-256 of its
/// normalized form. Codes carry enough entropy that an unsalted hash is safe
/// to store and to look up by.
pub fn hash_recovery_code(code: &str) -> String {
    hex::encode(Sha256::digest(normalize_recovery_code(code).as_bytes()))
}

/// Whether a typed recovery code matches a stored hash, compared in constant
/// time.
#[must_use]
pub fn recovery_code_matches(code: &str, stored_hash: &str) -> bool {
    hash_recovery_code(code)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SHA-1 seed of RFC 6238, Appendix B.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn matches_the_rfc_6238_sha1_vectors() {
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, expected) in vectors {
            assert_eq!(
                hotp(RFC_SECRET, time / STEP_SECONDS, 8),
                expected,
                "T={time}"
            );
            assert_eq!(code_at(RFC_SECRET, time), expected[2..], "T={time}");
        }
    }

    #[test]
    fn matches_the_rfc_4226_hotp_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, counter as u64, 6), *code);
        }
    }

    #[test]
    fn accepts_the_current_step_and_one_either_side() {
        let now: u64 = 1_111_111_111;
        let step = now / STEP_SECONDS;
        for drift in [-1i64, 0, 1] {
            let at = now.checked_add_signed(drift * 30).unwrap();
            let code = code_at(RFC_SECRET, at);
            assert_eq!(
                verify_code(RFC_SECRET, &code, now, None),
                Some(step.checked_add_signed(drift).unwrap()),
                "drift {drift}"
            );
        }
    }

    #[test]
    fn refuses_codes_two_steps_away() {
        let now: u64 = 1_111_111_111;
        for drift in [-2i64, 2] {
            let code = code_at(RFC_SECRET, now.checked_add_signed(drift * 30).unwrap());
            assert_eq!(
                verify_code(RFC_SECRET, &code, now, None),
                None,
                "drift {drift}"
            );
        }
    }

    #[test]
    fn refuses_a_replayed_code() {
        let now = 1_234_567_890;
        let code = code_at(RFC_SECRET, now);
        let step = verify_code(RFC_SECRET, &code, now, None).unwrap();
        assert_eq!(verify_code(RFC_SECRET, &code, now, Some(step)), None);
        assert_eq!(verify_code(RFC_SECRET, &code, now + 30, Some(step)), None);

        // A code for an earlier step than the last one used is refused too.
        let previous = code_at(RFC_SECRET, now - 30);
        assert_eq!(verify_code(RFC_SECRET, &previous, now, Some(step)), None);

        // The next step's code is still fine.
        let next = code_at(RFC_SECRET, now + 30);
        assert_eq!(
            verify_code(RFC_SECRET, &next, now + 30, Some(step)),
            Some(step + 1)
        );
    }

    #[test]
    fn refuses_malformed_codes() {
        let now = 59;
        assert_eq!(code_at(RFC_SECRET, now), "287082");
        assert_eq!(verify_code(RFC_SECRET, "287082", now, None), Some(1));
        assert_eq!(verify_code(RFC_SECRET, " 287082\n", now, None), Some(1));
        for code in [
            "",
            "28708",
            "2870820",
            "94287082",
            "28708a",
            "287 082",
            "+28708",
            "２８７０８２",
            "287082\0",
        ] {
            assert_eq!(verify_code(RFC_SECRET, code, now, None), None, "{code:?}");
        }
    }

    #[test]
    fn handles_the_first_step() {
        let code = code_at(RFC_SECRET, 0);
        assert_eq!(verify_code(RFC_SECRET, &code, 0, None), Some(0));
        assert_eq!(verify_code(RFC_SECRET, &code, 0, Some(0)), None);
    }

    #[test]
    fn generated_secrets_are_random_and_160_bits() {
        let first = generate_secret();
        let second = generate_secret();
        assert_eq!(first.len(), 20);
        assert_ne!(first, second);
        assert_eq!(secret_base32(&first).len(), 32);
    }

    #[test]
    fn encodes_base32_per_rfc_4648() {
        let cases = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (input, expected) in cases {
            assert_eq!(secret_base32(input.as_bytes()), expected);
        }
        assert_eq!(
            secret_base32(RFC_SECRET),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn builds_an_otpauth_uri() {
        let uri = otpauth_uri(
            RFC_SECRET,
            "Voice by Kraliki",
            "jana.novakova+a@example.com",
        );
        assert_eq!(
            uri,
            "otpauth://totp/Voice%20by%20Kraliki:jana.novakova%2Ba%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Voice%20by%20Kraliki\
             &algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn percent_encodes_reserved_and_non_ascii_characters() {
        assert_eq!(
            percent_encode("a:b/c?d&e=f#g%h"),
            "a%3Ab%2Fc%3Fd%26e%3Df%23g%25h"
        );
        assert_eq!(percent_encode("Kralíki"), "Kral%C3%ADki");
        assert_eq!(percent_encode("A-z.0_9~"), "A-z.0_9~");
    }

    #[test]
    fn recovery_codes_are_unambiguous_and_strong() {
        let codes = generate_recovery_codes(10);
        assert_eq!(codes.len(), 10);
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 10);

        for code in &codes {
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), RECOVERY_GROUPS, "{code}");
            assert!(
                groups.iter().all(|g| g.len() == RECOVERY_GROUP_LEN),
                "{code}"
            );
            assert!(
                code.bytes()
                    .all(|b| b == b'-' || RECOVERY_ALPHABET.contains(&b)),
                "{code}"
            );
            assert!(!code.contains(['0', 'o', '1', 'l', 'i']), "{code}");
        }

        let bits =
            (RECOVERY_GROUPS * RECOVERY_GROUP_LEN) as f64 * (RECOVERY_ALPHABET.len() as f64).log2();
        assert!(bits >= 50.0, "{bits} bits");
    }

    #[test]
    fn the_alphabet_has_no_duplicates() {
        let mut alphabet = RECOVERY_ALPHABET.to_vec();
        alphabet.sort_unstable();
        alphabet.dedup();
        assert_eq!(alphabet.len(), RECOVERY_ALPHABET.len());
    }

    #[test]
    fn normalizes_recovery_codes() {
        assert_eq!(normalize_recovery_code("K7M2-X9QP-3HWD"), "k7m2x9qp3hwd");
        assert_eq!(
            normalize_recovery_code(" k7m2 x9qp\t3hwd \n"),
            "k7m2x9qp3hwd"
        );
        assert_eq!(normalize_recovery_code("k7m2x9qp3hwd"), "k7m2x9qp3hwd");
    }

    #[test]
    fn hashes_the_normalized_recovery_code() {
        let stored = hash_recovery_code("k7m2-x9qp-3hwd");
        assert_eq!(stored.len(), 64);
        assert!(stored
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(hash_recovery_code("K7M2 X9QP 3HWD"), stored);
        assert_eq!(hash_recovery_code("k7m2x9qp3hwd"), stored);
        assert_ne!(hash_recovery_code("k7m2-x9qp-3hwe"), stored);

        // SHA-256("abc"), FIPS 180-2.
        assert_eq!(
            hash_recovery_code("a-b c"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );

        assert!(recovery_code_matches("K7M2-X9QP-3HWD", &stored));
        assert!(!recovery_code_matches("k7m2-x9qp-3hwe", &stored));
    }
}
