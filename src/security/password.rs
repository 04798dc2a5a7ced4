//! Passwords: the acceptance policy and Argon2id hashing.
//!
//! The policy follows NIST SP 800-63B-4: length is what matters (at least 15
//! characters, or 8 once a second factor is enrolled, and at most 128), counted
//! in Unicode code points after NFKC normalization; there are no composition
//! rules; a password is refused when zxcvbn finds it common, breached or easy
//! to guess, or when it is built from the user's e-mail address or the product
//! name. Every refusal carries a stable code and a sentence for the user that
//! never repeats the password.
//!
//! Hashing uses Argon2id with m=19456 KiB, t=2, p=1 (the OWASP baseline). The
//! parameters live in the PHC string, so they can be raised later and
//! [`needs_rehash`] tells when a stored hash should be upgraded at the next
//! successful login. Each hash or verification runs on Tokio's blocking pool
//! behind a semaphore, so a login flood queues there instead of starving the
//! async workers. [`PasswordHasher::verify_dummy`] gives unknown e-mail
//! addresses the same cost as a wrong password.
//!
//! Passwords are NFKC-normalized before hashing as well as before the policy
//! check, so the same password typed on different keyboards or input methods
//! (full-width forms, precomposed or combining accents) verifies alike.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{
    Error as PhcError, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;
use zxcvbn::feedback::Warning;
use zxcvbn::Score;

/// Minimum length, in code points after NFKC, without a second factor.
pub const MIN_LENGTH: usize = 15;

/// Minimum length, in code points after NFKC, once a second factor is enrolled.
pub const MIN_LENGTH_WITH_SECOND_FACTOR: usize = 8;

/// Maximum length, in code points after NFKC.
pub const MAX_LENGTH: usize = 128;

/// The product name, which a password must not contain.
const PRODUCT_NAME: &str = "kraliki";

/// Extra words zxcvbn treats as guessable because they belong to this service.
const SERVICE_WORDS: [&str; 2] = [PRODUCT_NAME, "voice"];

/// Shortest e-mail local part that is searched for inside a password; shorter
/// ones ("jo") would refuse too many unrelated passwords.
const MIN_LOCAL_PART_LEN: usize = 3;

/// Inputs longer than this many code points are refused before normalization.
/// NFKC composition can shrink a string (a base letter plus combining marks
/// becomes one code point), so the cut-off is generous; it only keeps a
/// megabyte-sized body from being normalized and scanned.
const MAX_RAW_LENGTH: usize = 4 * MAX_LENGTH;

/// Lowest zxcvbn score accepted: 3 means at least 10^10 estimated guesses.
const MIN_SCORE: Score = Score::Three;

/// Argon2id memory cost in KiB.
pub const ARGON2_M_COST: u32 = 19_456;

/// Argon2id number of passes.
pub const ARGON2_T_COST: u32 = 2;

/// Argon2id degree of parallelism.
pub const ARGON2_P_COST: u32 = 1;

/// Length of the Argon2id output in bytes.
const ARGON2_OUTPUT_LEN: usize = 32;

/// Length of the random salt in bytes.
const SALT_LEN: usize = 16;

/// Why a password was refused. Each variant has a stable [`code`](Self::code)
/// for clients and a [`reason`](Self::reason) sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejection {
    /// Fewer code points than the minimum that applies to the account.
    #[error(
        "The password is too short: use at least {min} characters. \
         A few unrelated words make a long password that is easy to remember."
    )]
    TooShort {
        /// The minimum that applied.
        min: usize,
    },
    /// More code points than the maximum.
    #[error("The password is too long: use at most {max} characters.")]
    TooLong {
        /// The maximum.
        max: usize,
    },
    /// The password contains the account's e-mail address or its local part.
    #[error("The password must not contain your e-mail address or the name before the @.")]
    ContainsEmail,
    /// The password contains the product name.
    #[error("The password must not contain the product name \"Kraliki\".")]
    ContainsProductName,
    /// The password is, or is close to, a common or breached password.
    #[error(
        "The password is in, or close to one in, lists of common and breached passwords. \
         Choose another one."
    )]
    TooCommon,
    /// The password is too easy to guess for another reason (a keyboard
    /// pattern, a sequence, a date, a single word, ...).
    #[error("The password is too easy to guess.{}", prefixed_space(feedback))]
    TooWeak {
        /// zxcvbn's advice, in English; never contains the password.
        feedback: String,
    },
}

impl PasswordRejection {
    /// A sentence for the `detail` of an API error: names the reason, never
    /// repeats the password.
    pub fn reason(&self) -> String {
        self.to_string()
    }

    /// A stable, machine-readable code for the reason, e.g. `"too_short"`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::TooLong { .. } => "too_long",
            Self::ContainsEmail => "contains_email",
            Self::ContainsProductName => "contains_product_name",
            Self::TooCommon => "too_common",
            Self::TooWeak { .. } => "too_weak",
        }
    }
}

fn prefixed_space(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" {text}")
    }
}

/// Checks a new password against the policy for the account with `email`.
///
/// `has_second_factor` lowers the minimum length from [`MIN_LENGTH`] to
/// [`MIN_LENGTH_WITH_SECOND_FACTOR`]. Lengths are counted in Unicode code
/// points after NFKC normalization. The checks run in a fixed order (length,
/// e-mail, product name, strength) and the first failure is returned.
///
/// zxcvbn never estimates more than 10^n guesses for n characters, and score
/// 3 needs more than 10^8, so in practice the shortest password that passes
/// has 9 characters even with a second factor; 8 only passes the length rule.
///
/// zxcvbn is CPU-bound for a few milliseconds on long inputs; callers on the
/// request path may run it on the blocking pool.
///
/// # Errors
///
/// The first [`PasswordRejection`] that applies.
pub fn check_password(
    password: &str,
    email: &str,
    has_second_factor: bool,
) -> Result<(), PasswordRejection> {
    let min = if has_second_factor {
        MIN_LENGTH_WITH_SECOND_FACTOR
    } else {
        MIN_LENGTH
    };
    if password.chars().count() > MAX_RAW_LENGTH {
        return Err(PasswordRejection::TooLong { max: MAX_LENGTH });
    }

    let normalized = normalize(password);
    let length = normalized.chars().count();
    if length < min {
        return Err(PasswordRejection::TooShort { min });
    }
    if length > MAX_LENGTH {
        return Err(PasswordRejection::TooLong { max: MAX_LENGTH });
    }

    let lowered = Zeroizing::new(normalized.to_lowercase());
    let email = normalize(email.trim()).to_lowercase();
    if contains_email(&lowered, &email) {
        return Err(PasswordRejection::ContainsEmail);
    }
    if lowered.contains(PRODUCT_NAME) {
        return Err(PasswordRejection::ContainsProductName);
    }

    let inputs = user_inputs(&email);
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let entropy = zxcvbn::zxcvbn(&normalized, &inputs);
    if entropy.score() >= MIN_SCORE {
        return Ok(());
    }
    let feedback = entropy.feedback();
    let warning = feedback.and_then(zxcvbn::feedback::Feedback::warning);
    if matches!(
        warning,
        Some(
            Warning::ThisIsATop10Password
                | Warning::ThisIsATop100Password
                | Warning::ThisIsACommonPassword
                | Warning::ThisIsSimilarToACommonlyUsedPassword
        )
    ) {
        return Err(PasswordRejection::TooCommon);
    }
    let advice: Vec<String> = feedback
        .into_iter()
        .flat_map(|f| {
            f.warning()
                .map(|w| w.to_string())
                .into_iter()
                .chain(f.suggestions().iter().map(ToString::to_string))
        })
        .collect();
    Err(PasswordRejection::TooWeak {
        feedback: advice.join(" "),
    })
}

/// NFKC-normalizes a password into a buffer that is wiped when dropped.
fn normalize(password: &str) -> Zeroizing<String> {
    Zeroizing::new(password.nfkc().collect())
}

/// The parts of a lowercased e-mail address that a password must not contain:
/// the whole address, its local part, and the local part without a
/// `+subaddress` tag. Local parts shorter than [`MIN_LOCAL_PART_LEN`] code
/// points are not searched for.
fn email_fragments(email: &str) -> Vec<&str> {
    let local = email.rsplit_once('@').map_or(email, |(local, _)| local);
    let base = local.split_once('+').map_or(local, |(base, _)| base);
    let mut fragments = Vec::with_capacity(3);
    if !email.is_empty() {
        fragments.push(email);
    }
    for part in [local, base] {
        if part.chars().count() >= MIN_LOCAL_PART_LEN && !fragments.contains(&part) {
            fragments.push(part);
        }
    }
    fragments
}

fn contains_email(lowered_password: &str, lowered_email: &str) -> bool {
    email_fragments(lowered_email)
        .iter()
        .any(|fragment| lowered_password.contains(fragment))
}

/// Words zxcvbn should treat as known to an attacker: the e-mail address, its
/// local part and the pieces of it, and the service's own words.
fn user_inputs(lowered_email: &str) -> Vec<String> {
    let mut inputs: Vec<String> = email_fragments(lowered_email)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let local = lowered_email
        .rsplit_once('@')
        .map_or(lowered_email, |(local, _)| local);
    for piece in local.split(['.', '_', '-', '+']) {
        if piece.chars().count() >= MIN_LOCAL_PART_LEN && !inputs.iter().any(|i| i == piece) {
            inputs.push(piece.to_owned());
        }
    }
    inputs.extend(SERVICE_WORDS.iter().map(|w| (*w).to_owned()));
    inputs
}

/// A failure to hash or verify. None of these carries the password.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The stored hash is not a PHC string this service can verify.
    #[error("stored password hash is malformed or uses an unsupported algorithm: {0}")]
    InvalidHash(PhcError),
    /// Argon2 refused the operation (for example, out of memory).
    #[error("argon2 failed: {0}")]
    Argon2(PhcError),
    /// The blocking task panicked or was cancelled at shutdown.
    #[error("password hashing task did not complete")]
    TaskFailed(#[from] tokio::task::JoinError),
    /// The concurrency limit was closed; only happens at shutdown.
    #[error("password hashing is shutting down")]
    Closed,
}

/// Hashes and verifies passwords with Argon2id on the blocking pool, at most
/// `permits` at a time.
///
/// Cheap to clone; clones share the semaphore and the dummy hash.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    argon2: Argon2<'static>,
    dummy_hash: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("available_permits", &self.permits.available_permits())
            .field("params", self.argon2.params())
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    /// One permit per CPU the process may use.
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Self::new(cpus)
    }
}

impl PasswordHasher {
    /// A hasher that runs at most `max_concurrent` hashes at once (at least 1).
    ///
    /// Each running hash holds 19 MiB, so `max_concurrent` also bounds the
    /// memory spent on password hashing.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            argon2: current_argon2(),
            dummy_hash: Arc::new(OnceLock::new()),
        }
    }

    /// Hashes `password` with a fresh random salt; returns the PHC string,
    /// e.g. `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
    ///
    /// # Errors
    ///
    /// [`HashError`] when Argon2 fails, the task dies or the hasher is closed.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        self.run_blocking(move || hash_blocking(&argon2, &password))
            .await?
    }

    /// Checks `password` against a stored PHC string, using the parameters
    /// recorded in it. `Ok(false)` is a wrong password; an error means the
    /// stored hash is unusable or hashing failed.
    ///
    /// # Errors
    ///
    /// [`HashError::InvalidHash`] for a malformed or non-Argon2 PHC string;
    /// other [`HashError`]s when the computation itself fails.
    pub async fn verify(&self, password: SecretString, phc: &str) -> Result<bool, HashError> {
        let argon2 = self.argon2.clone();
        let phc = phc.to_owned();
        self.run_blocking(move || verify_blocking(&argon2, &password, &phc))
            .await?
    }

    /// Spends the time of a real [`verify`](Self::verify), against a dummy
    /// hash with the current parameters, and learns nothing. Called when the
    /// e-mail address is unknown, so that answer takes as long as a wrong
    /// password.
    ///
    /// The dummy hash is computed once, on first use; call
    /// [`warm_up`](Self::warm_up) at start-up so the first unknown address is
    /// not slower than the rest.
    pub async fn verify_dummy(&self, password: SecretString) {
        let argon2 = self.argon2.clone();
        let dummy_hash = Arc::clone(&self.dummy_hash);
        let outcome = self
            .run_blocking(move || {
                let phc = dummy_hash.get_or_init(|| make_dummy_hash(&argon2));
                // The outcome is always "no match" (or an error); either way the
                // caller answers as for a wrong password.
                let _ = verify_blocking(&argon2, &password, phc);
            })
            .await;
        drop(outcome);
    }

    /// Computes the dummy hash used by [`verify_dummy`](Self::verify_dummy)
    /// now rather than on the first unknown e-mail address.
    pub async fn warm_up(&self) {
        let argon2 = self.argon2.clone();
        let dummy_hash = Arc::clone(&self.dummy_hash);
        let outcome = self
            .run_blocking(move || {
                dummy_hash.get_or_init(|| make_dummy_hash(&argon2));
            })
            .await;
        drop(outcome);
    }

    /// Whether the dummy hash has been computed (by [`warm_up`](Self::warm_up)
    /// or a first unknown address).
    pub fn is_warm(&self) -> bool {
        self.dummy_hash.get().is_some()
    }

    /// Runs `work` on the blocking pool once a permit is free. The permit moves
    /// into the blocking task, so it stays taken until the work is done even
    /// if the caller's future is dropped (a client hanging up mid-login).
    async fn run_blocking<T, F>(&self, work: F) -> Result<T, HashError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| HashError::Closed)?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        });
        Ok(task.await?)
    }
}

/// Whether a stored PHC string should be replaced by a fresh hash at the next
/// successful login: true when it is not Argon2id version 0x13, when any of
/// m, t, p or the output length is below the current setting, or when it
/// cannot be parsed at all.
#[must_use]
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return true;
    };
    if hash.algorithm != Algorithm::Argon2id.ident() || hash.version != Some(Version::V0x13.into())
    {
        return true;
    }
    let Ok(params) = Params::try_from(&hash) else {
        return true;
    };
    let output_len = hash.hash.map_or(0, |output| output.len());
    params.m_cost() < ARGON2_M_COST
        || params.t_cost() < ARGON2_T_COST
        || params.p_cost() < ARGON2_P_COST
        || output_len < ARGON2_OUTPUT_LEN
}

fn current_argon2() -> Argon2<'static> {
    let params = Params::new(
        ARGON2_M_COST,
        ARGON2_T_COST,
        ARGON2_P_COST,
        Some(ARGON2_OUTPUT_LEN),
    )
    .expect("the built-in Argon2id parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(argon2: &Argon2<'_>, password: &SecretString) -> Result<String, HashError> {
    let normalized = normalize(password.expose_secret());
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(HashError::Argon2)?;
    let hash = argon2
        .hash_password(normalized.as_bytes(), &salt)
        .map_err(HashError::Argon2)?;
    Ok(hash.to_string())
}

fn verify_blocking(
    argon2: &Argon2<'_>,
    password: &SecretString,
    phc: &str,
) -> Result<bool, HashError> {
    let hash = PasswordHash::new(phc).map_err(HashError::InvalidHash)?;
    let normalized = normalize(password.expose_secret());
    match argon2.verify_password(normalized.as_bytes(), &hash) {
        Ok(()) => Ok(true),
        Err(PhcError::Password) => Ok(false),
        Err(
            err @ (PhcError::Algorithm
            | PhcError::Version
            | PhcError::ParamNameDuplicated
            | PhcError::ParamNameInvalid
            | PhcError::ParamValueInvalid(_)
            | PhcError::ParamsMaxExceeded
            | PhcError::OutputSize { .. }
            | PhcError::SaltInvalid(_)
            | PhcError::B64Encoding(_)
            | PhcError::PhcStringField
            | PhcError::PhcStringTrailingData),
        ) => Err(HashError::InvalidHash(err)),
        Err(err) => Err(HashError::Argon2(err)),
    }
}

/// The hash of a random password nobody knows, with the current parameters.
fn make_dummy_hash(argon2: &Argon2<'_>) -> String {
    let mut secret = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(secret.as_mut());
    let password = SecretString::from(hex::encode(secret.as_ref()));
    // Hashing a fixed-size input with valid parameters cannot fail; should it
    // ever, a constant string with the same parameters still costs a full
    // Argon2id computation at verification.
    hash_blocking(argon2, &password).unwrap_or_else(|_| {
        format!(
            "$argon2id$v=19$m={ARGON2_M_COST},t={ARGON2_T_COST},p={ARGON2_P_COST}\
             $c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const EMAIL: &str = "jana.novakova@example.com";

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[test]
    fn accepts_a_four_word_passphrase() {
        assert_eq!(
            check_password("correct-horse-battery-staple-orbit", EMAIL, false),
            Ok(())
        );
    }

    #[test]
    fn accepts_a_long_random_password() {
        assert_eq!(check_password("gT8#vQ2!mZr9@wLk", EMAIL, false), Ok(()));
    }

    #[test]
    fn refuses_fourteen_characters() {
        let rejection = check_password("gT8#vQ2!mZr9@w", EMAIL, false).unwrap_err();
        assert_eq!(rejection, PasswordRejection::TooShort { min: MIN_LENGTH });
        assert_eq!(rejection.code(), "too_short");
        assert!(rejection.reason().contains("at least 15 characters"));
    }

    #[test]
    fn second_factor_lowers_the_minimum_to_eight() {
        assert_eq!(
            check_password("Zq9#vL2", EMAIL, true),
            Err(PasswordRejection::TooShort { min: 8 })
        );

        // Eight characters pass the length rule with a second factor and go on
        // to the strength check. zxcvbn never estimates more than 10^n guesses
        // for n characters, so no 8-character password reaches score 3.
        let eight = "Zq9#vL2!";
        assert_eq!(eight.chars().count(), 8);
        assert_eq!(
            check_password(eight, EMAIL, false),
            Err(PasswordRejection::TooShort { min: 15 })
        );
        assert_eq!(
            check_password(eight, EMAIL, true).map_err(|r| r.code()),
            Err("too_weak")
        );

        let nine = "Zq9#vL2!x";
        assert_eq!(
            check_password(nine, EMAIL, false),
            Err(PasswordRejection::TooShort { min: 15 })
        );
        assert_eq!(check_password(nine, EMAIL, true), Ok(()));
    }

    #[test]
    fn refuses_more_than_128_characters() {
        let accepted: String = "gT8#vQ2!mZr9@wLk".repeat(8);
        assert_eq!(accepted.chars().count(), 128);
        assert_eq!(check_password(&accepted, EMAIL, false), Ok(()));

        let refused = format!("{accepted}x");
        let rejection = check_password(&refused, EMAIL, false).unwrap_err();
        assert_eq!(rejection, PasswordRejection::TooLong { max: 128 });
        assert_eq!(rejection.code(), "too_long");

        let huge = "a".repeat(1 << 20);
        assert_eq!(
            check_password(&huge, EMAIL, false),
            Err(PasswordRejection::TooLong { max: 128 })
        );
    }

    #[test]
    fn refuses_common_passwords() {
        let rejection = check_password("password1234567", EMAIL, false).unwrap_err();
        assert!(
            matches!(
                rejection,
                PasswordRejection::TooCommon | PasswordRejection::TooWeak { .. }
            ),
            "{rejection:?}"
        );
        assert_eq!(
            check_password("password", EMAIL, true),
            Err(PasswordRejection::TooCommon)
        );
        assert_eq!(
            check_password("iloveyou12345678", EMAIL, false).map_err(|r| r.code()),
            Err("too_common")
        );
    }

    #[test]
    fn refuses_guessable_patterns_with_advice() {
        let rejection = check_password("abcdefghijklmnop", EMAIL, false).unwrap_err();
        let PasswordRejection::TooWeak { feedback } = &rejection else {
            panic!("expected too_weak, got {rejection:?}");
        };
        assert!(!feedback.is_empty());
        assert_eq!(rejection.code(), "too_weak");
        assert!(!rejection.reason().contains("abcdef"));
        assert!(rejection
            .reason()
            .starts_with("The password is too easy to guess. "));

        // A keyboard row that is itself a common password counts as common.
        assert_eq!(
            check_password("qwertyuiopasdfgh", EMAIL, false),
            Err(PasswordRejection::TooCommon)
        );
    }

    #[test]
    fn refuses_the_email_local_part_case_insensitively() {
        let rejection = check_password("Xq7!JANA.Novakova#Lp93vR", EMAIL, false).unwrap_err();
        assert_eq!(rejection, PasswordRejection::ContainsEmail);
        assert_eq!(rejection.code(), "contains_email");
        assert!(!rejection.reason().contains("jana"));

        assert_eq!(
            check_password("Xq7!jana.novakova@example.com#L", EMAIL, false),
            Err(PasswordRejection::ContainsEmail)
        );
        assert_eq!(
            check_password(
                "Xq7!jana.novakova#Lp93vR",
                "jana.novakova+calls@example.com",
                false
            ),
            Err(PasswordRejection::ContainsEmail)
        );
    }

    #[test]
    fn ignores_local_parts_shorter_than_three_characters() {
        assert_eq!(
            check_password("gT8#vQ2!mZr9@wLk-jo", "jo@example.com", false),
            Ok(())
        );
    }

    #[test]
    fn refuses_the_product_name() {
        let rejection = check_password("Xq7!KrAlIkI#Lp93vR", EMAIL, false).unwrap_err();
        assert_eq!(rejection, PasswordRejection::ContainsProductName);
        assert_eq!(rejection.code(), "contains_product_name");
        // Full-width letters normalize to the product name too.
        assert_eq!(
            check_password("Xq7!ｋｒａｌｉｋｉ#Lp93vR", EMAIL, false),
            Err(PasswordRejection::ContainsProductName)
        );
    }

    #[test]
    fn counts_code_points_after_nfkc() {
        // 15 full-width letters: NFKC maps each to one ASCII letter.
        let full_width = "ｇｔｖｑｍｚｒｗｌｋｘｐｈｂｎ";
        assert_eq!(full_width.chars().count(), 15);
        assert_eq!(full_width.len(), 45);
        assert_ne!(
            check_password(full_width, EMAIL, false).map_err(|r| r.code()),
            Err("too_short")
        );
        assert_eq!(
            check_password(&full_width[3..], EMAIL, false),
            Err(PasswordRejection::TooShort { min: 15 })
        );

        // "e" followed by a combining acute accent composes to one code point.
        let decomposed = "Zq9#vL2e\u{301}";
        assert_eq!(decomposed.chars().count(), 9);
        assert_eq!(
            check_password(decomposed, EMAIL, false),
            Err(PasswordRejection::TooShort { min: 15 })
        );

        // A ligature expands: "ﬁ" is two code points after NFKC.
        assert_eq!(normalize("ﬁ").chars().count(), 2);
    }

    #[test]
    fn counts_emoji_by_code_point() {
        // Each of these emoji is one code point but four UTF-8 bytes.
        let emoji = "🦊🐙🌵🚲🎻🧊🦉🍄🛶🪁🐝🌋🧭🎲🦔";
        assert_eq!(emoji.chars().count(), 15);
        assert_eq!(check_password(emoji, EMAIL, false), Ok(()));
        let fourteen: String = emoji.chars().take(14).collect();
        assert_eq!(
            check_password(&fourteen, EMAIL, false),
            Err(PasswordRejection::TooShort { min: 15 })
        );
        // A thumbs-up with a skin tone is two code points.
        assert_eq!("👍🏽".chars().count(), 2);
    }

    #[test]
    fn every_rejection_has_a_distinct_code_and_a_sentence() {
        let all = [
            PasswordRejection::TooShort { min: 15 },
            PasswordRejection::TooLong { max: 128 },
            PasswordRejection::ContainsEmail,
            PasswordRejection::ContainsProductName,
            PasswordRejection::TooCommon,
            PasswordRejection::TooWeak {
                feedback: String::new(),
            },
        ];
        let mut codes: Vec<_> = all.iter().map(PasswordRejection::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for rejection in &all {
            let reason = rejection.reason();
            assert!(reason.ends_with('.'), "{reason}");
            assert!(!reason.contains("  "), "{reason}");
        }
    }

    #[tokio::test]
    async fn hash_and_verify_round_trip() {
        let hasher = PasswordHasher::new(2);
        let phc = hasher
            .hash(secret("correct-horse-battery-staple-orbit"))
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!needs_rehash(&phc));

        assert!(hasher
            .verify(secret("correct-horse-battery-staple-orbit"), &phc)
            .await
            .unwrap());
        assert!(!hasher
            .verify(secret("correct-horse-battery-staple-orbiT"), &phc)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn salts_are_random() {
        let hasher = PasswordHasher::default();
        let first = hasher.hash(secret("same password here")).await.unwrap();
        let second = hasher.hash(secret("same password here")).await.unwrap();
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn verification_normalizes_like_hashing() {
        let hasher = PasswordHasher::new(1);
        let phc = hasher
            .hash(secret("ｃａｆｅ\u{301}-latte-orbit"))
            .await
            .unwrap();
        assert!(hasher
            .verify(secret("café-latte-orbit"), &phc)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn malformed_hashes_are_errors_not_matches() {
        let hasher = PasswordHasher::new(1);
        for phc in ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$"] {
            let outcome = hasher.verify(secret("whatever"), phc).await;
            assert!(
                matches!(outcome, Err(HashError::InvalidHash(_))),
                "{phc}: {outcome:?}"
            );
        }
        let pbkdf2 = "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(matches!(
            hasher.verify(secret("whatever"), pbkdf2).await,
            Err(HashError::InvalidHash(_))
        ));
    }

    #[tokio::test]
    async fn dummy_verification_costs_about_as_much_as_a_real_one() {
        let hasher = PasswordHasher::new(1);
        let phc = hasher.hash(secret("a real password here")).await.unwrap();
        hasher.warm_up().await;

        let started = Instant::now();
        assert!(!hasher.verify(secret("wrong guess"), &phc).await.unwrap());
        let real = started.elapsed();

        let started = Instant::now();
        hasher.verify_dummy(secret("wrong guess")).await;
        let dummy = started.elapsed();

        let (low, high) = (real.min(dummy), real.max(dummy));
        assert!(
            high < low * 3 + Duration::from_millis(20),
            "real {real:?}, dummy {dummy:?}"
        );
        let dummy_phc = hasher.dummy_hash.get().unwrap();
        assert!(dummy_phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }

    #[tokio::test]
    async fn dummy_hash_is_computed_lazily_once() {
        let hasher = PasswordHasher::new(1);
        assert!(hasher.dummy_hash.get().is_none());
        hasher.verify_dummy(secret("anything at all")).await;
        let first = hasher.dummy_hash.get().cloned().unwrap();
        hasher.verify_dummy(secret("anything else")).await;
        assert_eq!(hasher.dummy_hash.get(), Some(&first));
    }

    #[tokio::test]
    async fn the_semaphore_bounds_concurrent_hashes() {
        let hasher = PasswordHasher::new(0);
        assert_eq!(hasher.permits.available_permits(), 1);
        let hasher = PasswordHasher::new(2);
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash(secret(&format!("password {i}"))).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(hasher.permits.available_permits(), 2);
    }

    #[test]
    fn weaker_parameters_need_a_rehash() {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let output = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let phc = |alg: &str, m: u32, t: u32, p: u32| {
            format!("$argon2{alg}$v=19$m={m},t={t},p={p}${salt}${output}")
        };
        assert!(!needs_rehash(&phc("id", 19_456, 2, 1)));
        assert!(!needs_rehash(&phc("id", 65_536, 3, 4)));
        assert!(needs_rehash(&phc("id", 4_096, 2, 1)));
        assert!(needs_rehash(&phc("id", 19_456, 1, 1)));
        assert!(needs_rehash(&phc("i", 19_456, 2, 1)));
        assert!(needs_rehash(&phc("d", 19_456, 2, 1)));
        assert!(needs_rehash(&format!(
            "$argon2id$v=16$m=19456,t=2,p=1${salt}${output}"
        )));
        assert!(needs_rehash(&format!(
            "$argon2id$v=19$m=19456,t=2,p=1${salt}$AAAAAAAAAAAAAAAAAAAAAA"
        )));
        assert!(needs_rehash("$2b$12$abcdefghijklmnopqrstuv"));
        assert!(needs_rehash("garbage"));
    }
}
