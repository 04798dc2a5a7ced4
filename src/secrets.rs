//! Secrets: each loaded by name from, in order, the secrets folder
//! (`/run/secrets/<name>`), a file named by `KRALIKI_<NAME>_FILE`, or the
//! variable `KRALIKI_<NAME>` itself (development only).
//!
//! Secret values live in redacting wrappers and are never logged; the loader
//! logs only where each secret came from. Weak and placeholder values are
//! refused in every mode.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Digest;

use crate::config::{ConfigError, Settings};

/// Every secret the server knows, by name.
pub const SECRET_NAMES: &[&str] = &[
    "jwt_signing_key",
    "session_key",
    "csrf_key",
    "audit_key",
    "data_key",
    "database_url",
    "redis_url",
    "amqp_url",
    "twilio_auth_token",
    "telnyx_public_key",
    "smtp_password",
    "alert_webhook_secret",
];

/// The 256-bit symmetric keys, which `kraliki keys generate` creates and
/// development mode generates on first start.
pub const SYMMETRIC_KEYS: &[&str] = &["session_key", "csrf_key", "audit_key", "data_key"];

/// The keys that rotate without downtime: the old value stays usable
/// (verify or decrypt only) for a grace period after `kraliki keys rotate`.
/// `audit_key` and `data_key` do not rotate this way: entries and stored
/// credentials already written depend on them.
pub const ROTATABLE_KEYS: &[&str] = &["jwt_signing_key", "session_key", "csrf_key"];

/// A retired key file is named `<name>.retired.<unix expiry>` and sits
/// beside the key it was retired from.
pub const RETIRED_MARKER: &str = ".retired.";

/// Values that are never accepted as a secret.
const PLACEHOLDERS: &[&str] = &[
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "password",
    "passw0rd",
    "your-secret-here",
    "your_secret_here",
    "yoursecret",
    "default",
    "example",
    "placeholder",
    "test",
    "admin",
    "12345678",
    "123456789",
    "todo",
    "xxx",
];

/// Where a secret was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file in the secrets folder (Docker secrets).
    SecretsDir(PathBuf),
    /// A file named by `KRALIKI_<NAME>_FILE`.
    FileVar(PathBuf),
    /// The variable `KRALIKI_<NAME>` (development only).
    EnvVar,
    /// Generated into the data folder on first start (development only).
    Generated(PathBuf),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::SecretsDir(p) => write!(f, "secrets folder ({})", p.display()),
            SecretSource::FileVar(p) => write!(f, "_FILE variable ({})", p.display()),
            SecretSource::EnvVar => write!(f, "environment variable"),
            SecretSource::Generated(p) => write!(f, "generated development key ({})", p.display()),
        }
    }
}

/// A 256-bit key, zeroized on drop, never printed.
pub struct Key32(SecretBox<[u8; 32]>);

impl Key32 {
    /// Wrap raw key bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Key32(SecretBox::new(Box::new(bytes)))
    }

    /// The key bytes, for the cipher or MAC that uses them.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl Clone for Key32 {
    fn clone(&self) -> Self {
        Key32::new(*self.expose())
    }
}

impl fmt::Debug for Key32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key32([REDACTED])")
    }
}

/// All loaded secrets.
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Ed25519 signing key for access tokens, PKCS#8 PEM.
    pub jwt_signing_key: SecretString,
    /// Seals browser session cookies (AES-256-GCM).
    pub session_key: Key32,
    /// Derives per-session CSRF tokens (HMAC-SHA256).
    pub csrf_key: Key32,
    /// Chains audit entries (HMAC-SHA256).
    pub audit_key: Key32,
    /// Seals stored credentials and TOTP secrets (AES-256-GCM).
    pub data_key: Key32,
    /// PostgreSQL URL; without it the embedded SQLite database is used.
    pub database_url: Option<SecretString>,
    /// Redis URL; without it state stays in-process.
    pub redis_url: Option<SecretString>,
    /// AMQP URL for the optional event bus.
    pub amqp_url: Option<SecretString>,
    /// Deployment-wide Twilio auth token.
    pub twilio_auth_token: Option<SecretString>,
    /// Deployment-wide Telnyx public key.
    pub telnyx_public_key: Option<SecretString>,
    /// SMTP password.
    pub smtp_password: Option<SecretString>,
    /// Signs alert webhooks.
    pub alert_webhook_secret: Option<SecretString>,
    /// Where each secret came from, for the start-up log.
    pub sources: BTreeMap<&'static str, SecretSource>,
    /// Retired, still-valid values of the rotatable keys, by key name.
    pub retired: BTreeMap<&'static str, Vec<RetiredKey>>,
}

/// A key demoted by a rotation: still accepted for verifying or decrypting
/// until `expires_at`, never used to sign or encrypt.
#[derive(Debug, Clone)]
pub struct RetiredKey {
    /// The key text as stored (PEM or encoded bytes).
    pub value: SecretString,
    /// Unix time (seconds) from which the key is refused.
    pub expires_at: i64,
    /// The file it was read from.
    pub path: PathBuf,
}

impl SecretSource {
    /// The file a secret was read from, if it came from a file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SecretSource::SecretsDir(p) | SecretSource::FileVar(p) | SecretSource::Generated(p) => {
                Some(p)
            }
            SecretSource::EnvVar => None,
        }
    }
}

/// The retired copies of the key stored at `key_path`, found beside it as
/// `<file name>.retired.<unix expiry>`, newest expiry first. Files whose
/// expiry has passed at `now` are skipped; a file with a malformed expiry is
/// an error, so a typo never silently drops a key.
pub fn retired_beside(key_path: &Path, now: i64) -> Result<Vec<(PathBuf, i64)>, ConfigError> {
    let (Some(dir), Some(file_name)) = (key_path.parent(), key_path.file_name()) else {
        return Ok(Vec::new());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}{RETIRED_MARKER}", file_name.to_string_lossy());
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(ConfigError(format!(
                "cannot list {} for retired keys: {e}",
                dir.display()
            )))
        }
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(expiry) = name.strip_prefix(&prefix) else {
            continue;
        };
        let expires_at: i64 = expiry.parse().map_err(|_| {
            ConfigError(format!(
                "retired key file {} must end in a unix time (seconds), as written by \
                 `kraliki keys rotate`",
                entry.path().display()
            ))
        })?;
        if expires_at > now && entry.path().is_file() {
            found.push((entry.path(), expires_at));
        }
    }
    found.sort_by_key(|k| std::cmp::Reverse(k.1));
    Ok(found)
}

fn load_retired(
    name: &'static str,
    source: &SecretSource,
    now: i64,
) -> Result<Vec<RetiredKey>, ConfigError> {
    let Some(path) = source.path() else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for (path, expires_at) in retired_beside(path, now)? {
        let text = read_secret_file(&path, name)?;
        // Checked like the live key, so a damaged file stops the load.
        if name == "jwt_signing_key" {
            normalize_jwt_key(&text)
                .map_err(|e| ConfigError(format!("retired key {}: {}", path.display(), e.0)))?;
        } else {
            decode_symmetric(name, &text)
                .map_err(|e| ConfigError(format!("retired key {}: {}", path.display(), e.0)))?;
        }
        keys.push(RetiredKey {
            value: SecretString::from(text),
            expires_at,
            path,
        });
    }
    Ok(keys)
}

/// The environment variable holding secret `name`.
pub fn env_var_name(name: &str) -> String {
    format!("KRALIKI_{}", name.to_ascii_uppercase())
}

/// Read one secret from its sources, in order. Returns the raw text.
fn find(
    name: &str,
    settings: &Settings,
    env: &BTreeMap<String, String>,
) -> Result<Option<(String, SecretSource)>, ConfigError> {
    let var = env_var_name(name);
    let file_var = format!("{var}_FILE");
    let in_env = env.get(&var).filter(|v| !v.is_empty());
    let in_file_var = env.get(&file_var).filter(|v| !v.is_empty());

    if in_env.is_some() && in_file_var.is_some() {
        return Err(ConfigError(format!(
            "both {var} and {file_var} are set; set only one (prefer {file_var} or the \
             secrets folder)"
        )));
    }

    let dir_path = settings.secrets_dir.join(name);
    if dir_path.is_file() {
        let text = read_secret_file(&dir_path, name)?;
        return Ok(Some((text, SecretSource::SecretsDir(dir_path))));
    }

    if let Some(path) = in_file_var {
        let path = PathBuf::from(path);
        let text = read_secret_file(&path, name)?;
        return Ok(Some((text, SecretSource::FileVar(path))));
    }

    if let Some(value) = in_env {
        if settings.is_production() {
            return Err(ConfigError(format!(
                "secret {name} is set in the plain environment variable {var}, which production \
                 refuses; put it in {} or in a file named by {file_var}",
                dir_path.display()
            )));
        }
        return Ok(Some((value.clone(), SecretSource::EnvVar)));
    }
    Ok(None)
}

fn read_secret_file(path: &Path, name: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read secret {name} from {}: {e}",
            path.display()
        ))
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Whether a value is a known placeholder.
fn is_placeholder(value: &str) -> bool {
    let v = value.trim().to_ascii_lowercase();
    v.is_empty()
        || PLACEHOLDERS.contains(&v.as_str())
        || v.contains("changeme")
        || v.contains("change-me")
        || v.contains("your-secret")
        || v.contains("placeholder")
}

/// Decode a symmetric key given as hex or base64 (standard or URL-safe,
/// padded or not) and check its strength.
pub fn decode_symmetric(name: &str, raw: &str) -> Result<Key32, ConfigError> {
    let fix = format!(
        "generate one with `kraliki keys generate` (secret {name} must be at least 32 random \
         bytes, hex or base64 encoded)"
    );
    let raw = raw.trim();
    if is_placeholder(raw) {
        return Err(ConfigError(format!(
            "secret {name} is a placeholder value; {fix}"
        )));
    }
    let bytes = decode_key_text(raw)
        .ok_or_else(|| ConfigError(format!("secret {name} is not hex or base64; {fix}")))?;
    if bytes.len() < 32 {
        return Err(ConfigError(format!(
            "secret {name} is only {} bytes; {fix}",
            bytes.len()
        )));
    }
    let mut distinct = [false; 256];
    for b in &bytes {
        distinct[*b as usize] = true;
    }
    if distinct.iter().filter(|d| **d).count() < 12 {
        return Err(ConfigError(format!(
            "secret {name} is too repetitive to be random; {fix}"
        )));
    }
    let key: [u8; 32] = if bytes.len() == 32 {
        bytes.as_slice().try_into().expect("length checked")
    } else {
        sha2::Sha256::digest(&bytes).into()
    };
    Ok(Key32::new(key))
}

fn decode_key_text(raw: &str) -> Option<Vec<u8>> {
    if raw.len() >= 64 && raw.len().is_multiple_of(2) && raw.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return hex::decode(raw).ok();
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(raw).ok())
}

/// Accept the JWT key as PKCS#8 PEM, or as base64 of the PKCS#8 DER (the
/// one-line form used in env-format secrets files). Returns PEM.
pub(crate) fn normalize_jwt_key(raw: &str) -> Result<String, ConfigError> {
    let raw = raw.trim();
    let pem = if raw.starts_with("-----BEGIN") {
        raw.replace("\\n", "\n")
    } else {
        let der = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|_| {
                ConfigError(
                    "secret jwt_signing_key must be an Ed25519 PKCS#8 PEM key; generate one with \
                     `kraliki keys generate`"
                        .into(),
                )
            })?;
        der_to_pem(&der)
    };
    crate::security::tokens::KeyRing::from_pem(&pem).map_err(|_| {
        ConfigError(
            "secret jwt_signing_key is not a valid Ed25519 PKCS#8 key; generate one with \
             `kraliki keys generate`"
                .into(),
        )
    })?;
    Ok(pem)
}

/// Wrap PKCS#8 DER bytes in a PEM envelope.
pub fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// The PEM body of a key as one line of base64 DER.
pub fn pem_to_one_line(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// Refuse placeholder passwords inside URLs and placeholder tokens.
pub(crate) fn check_opaque(name: &str, raw: &str) -> Result<(), ConfigError> {
    let candidate = if raw.contains("://") {
        // scheme://user:password@host/...
        raw.split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, pw)| pw.to_string())
    } else {
        Some(raw.to_string())
    };
    if let Some(value) = candidate {
        if is_placeholder(&value) {
            return Err(ConfigError(format!(
                "secret {name} contains a placeholder value; set a real, random one"
            )));
        }
    }
    Ok(())
}

/// Load every secret. In development, missing keys are generated into
/// `<data_dir>/secrets/` (mode 0600) and reused on later starts; in
/// production a missing key is an error.
pub fn load(settings: &Settings, env: &BTreeMap<String, String>) -> Result<Secrets, ConfigError> {
    let mut sources = BTreeMap::new();
    let mut raw: BTreeMap<&'static str, String> = BTreeMap::new();
    for name in SECRET_NAMES {
        if let Some((value, source)) = find(name, settings, env)? {
            sources.insert(*name, source);
            raw.insert(*name, value);
        }
    }

    let required: Vec<&'static str> = std::iter::once("jwt_signing_key")
        .chain(SYMMETRIC_KEYS.iter().copied())
        .collect();
    for name in &required {
        if raw.contains_key(name) {
            continue;
        }
        if settings.is_production() {
            return Err(ConfigError(format!(
                "secret {name} is missing; production reads it from {} or a file named by {}_FILE. \
                 Create all keys with `kraliki keys generate --format dir --out {}`",
                settings.secrets_dir.join(name).display(),
                env_var_name(name),
                settings.secrets_dir.display()
            )));
        }
        let (value, path) = dev_generated(settings, name)?;
        sources.insert(*name, SecretSource::Generated(path));
        raw.insert(*name, value);
    }

    let now = crate::store::now_ms() / 1000;
    let mut retired = BTreeMap::new();
    for name in ROTATABLE_KEYS {
        let keys = load_retired(name, &sources[name], now)?;
        if !keys.is_empty() {
            retired.insert(*name, keys);
        }
    }

    let jwt_signing_key = SecretString::from(normalize_jwt_key(&raw["jwt_signing_key"])?);
    let key = |n: &str| decode_symmetric(n, &raw[n]);
    let session_key = key("session_key")?;
    let csrf_key = key("csrf_key")?;
    let audit_key = key("audit_key")?;
    let data_key = key("data_key")?;

    let mut opaque = |n: &'static str| -> Result<Option<SecretString>, ConfigError> {
        match raw.remove(n) {
            Some(v) => {
                check_opaque(n, &v)?;
                Ok(Some(SecretString::from(v)))
            }
            None => Ok(None),
        }
    };
    let secrets = Secrets {
        jwt_signing_key,
        session_key,
        csrf_key,
        audit_key,
        data_key,
        database_url: opaque("database_url")?,
        redis_url: opaque("redis_url")?,
        amqp_url: opaque("amqp_url")?,
        twilio_auth_token: opaque("twilio_auth_token")?,
        telnyx_public_key: opaque("telnyx_public_key")?,
        smtp_password: opaque("smtp_password")?,
        alert_webhook_secret: opaque("alert_webhook_secret")?,
        sources,
        retired,
    };
    for (name, source) in &secrets.sources {
        tracing::info!(secret = *name, source = %source, "secret loaded");
    }
    for (name, keys) in &secrets.retired {
        for key in keys {
            tracing::info!(
                secret = *name,
                file = %key.path.display(),
                expires_at = key.expires_at,
                "retired key accepted until its expiry"
            );
        }
    }
    Ok(secrets)
}

/// Read or create a development key under `<data_dir>/secrets/`.
fn dev_generated(settings: &Settings, name: &str) -> Result<(String, PathBuf), ConfigError> {
    let dir = settings.data_dir.join("secrets");
    let path = dir.join(name);
    if path.is_file() {
        return Ok((read_secret_file(&path, name)?, path));
    }
    create_private_dir(&dir)
        .map_err(|e| ConfigError(format!("cannot create {}: {e}", dir.display())))?;
    let value = generate_value(name);
    write_private_file(&path, value.as_bytes(), false)
        .map_err(|e| ConfigError(format!("cannot write {}: {e}", path.display())))?;
    Ok((value, path))
}

/// A fresh value for a generated secret: PEM for the JWT key, 32 random
/// bytes in base64 for the others.
pub fn generate_value(name: &str) -> String {
    if name == "jwt_signing_key" {
        crate::security::tokens::generate_signing_key_pem()
    } else {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// Create a folder readable only by its owner.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Write a file with mode 0600. Without `overwrite`, an existing file is an
/// error.
pub fn write_private_file(path: &Path, contents: &[u8], overwrite: bool) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(0o600);
    if overwrite {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut file = opts.open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_keys_are_refused() {
        assert!(decode_symmetric("session_key", "changeme").is_err());
        assert!(decode_symmetric("session_key", &"a".repeat(64)).is_err());
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = decode_symmetric("session_key", &short).unwrap_err();
        assert!(err.0.contains("16 bytes"), "{err}");
        assert!(decode_symmetric("session_key", &generate_value("session_key")).is_ok());
    }

    #[test]
    fn placeholder_passwords_in_urls_are_refused() {
        assert!(check_opaque("database_url", "postgres://app:changeme@db/app").is_err());
        assert!(check_opaque("database_url", "postgres://app:Zq8s2kLm9@db/app").is_ok());
        assert!(check_opaque("database_url", "postgres://db/app").is_ok());
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = Key32::new([0x41; 32]);
        assert_eq!(format!("{k:?}"), "Key32([REDACTED])");
    }
}
