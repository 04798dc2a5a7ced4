//! Key rotation on disk (`kraliki keys rotate`, `kraliki keys status`) and
//! the reload a running server does on SIGHUP.
//!
//! A rotation writes a fresh key where the server reads the current one,
//! and keeps the old value beside it as `<name>.retired.<unix expiry>`. The
//! server uses the new key for everything new and accepts the retired one
//! (tokens, session cookies, CSRF tokens made before) until the expiry.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::audit::{Actor, AuditEvent, Outcome};
use crate::keys::LiveKeys;
use crate::secrets::{self, Secrets, RETIRED_MARKER, ROTATABLE_KEYS};
use crate::security::events::{EventType, SecurityEvent, Severity};
use crate::security::tokens::KeyRing;
use crate::state::AppState;

/// How old each secret may get before `keys status` warns.
pub const MAX_AGE_DAYS: &[(&str, u64)] = &[
    ("jwt_signing_key", 90),
    ("session_key", 30),
    ("csrf_key", 30),
    ("database_url", 180),
];

/// Parse a duration such as `24h`, `90m`, `30s`, `7d` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a duration; write e.g. 24h, 90m, 30s or 7d");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    if total == 0 {
        return Err(format!(
            "`{text}` is zero; the grace period must be positive"
        ));
    }
    if total > 366 * 86_400 {
        return Err(format!("`{text}` is longer than a year"));
    }
    Ok(Duration::from_secs(total))
}

fn unix_now() -> i64 {
    crate::store::now_ms() / 1000
}

/// Human wording of a span of seconds: `3 days`, `5 hours`, `12 minutes`.
pub fn human_span(secs: i64) -> String {
    let secs = secs.max(0);
    let (n, unit) = if secs >= 2 * 86_400 {
        (secs / 86_400, "days")
    } else if secs >= 2 * 3600 {
        (secs / 3600, "hours")
    } else if secs >= 120 {
        (secs / 60, "minutes")
    } else {
        (secs, "seconds")
    };
    format!("{n} {unit}")
}

/// Where each rotatable key is stored: in `dir` when given, otherwise
/// wherever the server would read it (the secrets folder, a `_FILE`
/// variable, or the development key folder).
pub fn key_files(
    secrets: Option<&Secrets>,
    dir: Option<&Path>,
    names: &[&'static str],
) -> anyhow::Result<BTreeMap<&'static str, PathBuf>> {
    let mut files = BTreeMap::new();
    for name in names {
        let path = match (dir, secrets) {
            (Some(dir), _) => dir.join(name),
            (None, Some(secrets)) => match secrets.sources.get(name).and_then(|s| s.path()) {
                Some(path) => path.to_path_buf(),
                None => anyhow::bail!(
                    "{name} comes from the environment variable {}; rotation needs keys in \
                     files (a secrets folder or {}_FILE)",
                    secrets::env_var_name(name),
                    secrets::env_var_name(name)
                ),
            },
            (None, None) => anyhow::bail!("no secrets folder to rotate"),
        };
        if !path.is_file() {
            anyhow::bail!("{name}: {} does not exist", path.display());
        }
        files.insert(*name, path);
    }
    Ok(files)
}

/// What one key's rotation did.
#[derive(Debug)]
pub struct Rotated {
    /// Key name.
    pub name: &'static str,
    /// Where the new key was written.
    pub path: PathBuf,
    /// Where the old key now lives, verify or decrypt only.
    pub retired_path: PathBuf,
    /// Unix time the old key stops being accepted.
    pub retired_until: i64,
    /// For the signing key: the old and new `kid`.
    pub kids: Option<(String, String)>,
}

fn jwt_kid(text: &str) -> anyhow::Result<String> {
    let pem = secrets::normalize_jwt_key(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(KeyRing::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("jwt_signing_key: {e}"))?
        .signing_kid()
        .to_string())
}

/// Rotate the key stored at `path`: its value moves to
/// `<path>.retired.<now + grace>`, a fresh value takes its place (written
/// to a temporary file and renamed, so a reader never sees half a key), and
/// retired files whose expiry has passed are removed.
pub fn rotate_file(
    name: &'static str,
    path: &Path,
    grace: Duration,
    now: i64,
) -> anyhow::Result<Rotated> {
    let old = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {name} from {}", path.display()))?;
    let fresh = secrets::generate_value(name);
    let kids = if name == "jwt_signing_key" {
        Some((jwt_kid(old.trim_end())?, jwt_kid(&fresh)?))
    } else {
        secrets::decode_symmetric(name, old.trim_end())
            .map_err(|e| anyhow::anyhow!("{e} (in {})", path.display()))?;
        None
    };
    let retired_until = now + grace.as_secs() as i64;
    let retired_path = sibling(path, &format!("{RETIRED_MARKER}{retired_until}"))?;
    secrets::write_private_file(&retired_path, old.as_bytes(), false).with_context(|| {
        format!(
            "cannot write {} (rotated twice within a second, or the folder is read-only)",
            retired_path.display()
        )
    })?;
    let temp = sibling(path, ".rotating")?;
    let written = secrets::write_private_file(&temp, fresh.as_bytes(), true)
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        let _ = std::fs::remove_file(&retired_path);
        return Err(e)
            .with_context(|| format!("cannot write the new {name} to {}", path.display()));
    }
    prune_expired(path, now)?;
    Ok(Rotated {
        name,
        path: path.to_path_buf(),
        retired_path,
        retired_until,
        kids,
    })
}

fn sibling(path: &Path, suffix: &str) -> anyhow::Result<PathBuf> {
    let file_name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut name = file_name.to_os_string();
    name.push(suffix);
    Ok(path.with_file_name(name))
}

/// Remove retired copies of the key at `path` that expired before `now`.
fn prune_expired(path: &Path, now: i64) -> anyhow::Result<()> {
    let (Some(dir), Some(file_name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let prefix = format!("{}{RETIRED_MARKER}", file_name.to_string_lossy());
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let expired = name
            .strip_prefix(&prefix)
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|at| at <= now);
        if expired {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// One line of `keys status`.
#[derive(Debug)]
pub struct KeyAge {
    /// Secret name.
    pub name: &'static str,
    /// Where it lives; `None` for a plain environment variable.
    pub path: Option<PathBuf>,
    /// Seconds since the file was last written.
    pub age_secs: Option<i64>,
    /// The rotation schedule, when the secret has one.
    pub max_age_days: Option<u64>,
    /// Retired copies still accepted: path and unix expiry.
    pub retired: Vec<(PathBuf, i64)>,
}

impl KeyAge {
    /// Whether the secret is older than its schedule allows.
    pub fn overdue(&self) -> bool {
        match (self.age_secs, self.max_age_days) {
            (Some(age), Some(days)) => age > (days * 86_400) as i64,
            _ => false,
        }
    }
}

/// The age of every secret the server would load, from the time its file
/// was last written (`keys generate` and `keys rotate` write them).
pub fn key_ages(secrets: &Secrets, now: i64) -> anyhow::Result<Vec<KeyAge>> {
    let mut out = Vec::new();
    for (name, source) in &secrets.sources {
        let path = source.path().map(Path::to_path_buf);
        let age_secs = match &path {
            Some(p) => {
                let modified = std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .with_context(|| format!("cannot read the age of {}", p.display()))?;
                let at = modified
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64;
                Some(now - at)
            }
            None => None,
        };
        let retired = match (&path, ROTATABLE_KEYS.contains(name)) {
            (Some(p), true) => secrets::retired_beside(p, now)?,
            _ => Vec::new(),
        };
        out.push(KeyAge {
            name,
            path,
            age_secs,
            max_age_days: MAX_AGE_DAYS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, d)| *d),
            retired,
        });
    }
    Ok(out)
}

/// Print `keys status`; the number of secrets overdue for rotation.
pub fn print_status(
    ages: &[KeyAge],
    now: i64,
    out: &mut impl std::io::Write,
) -> std::io::Result<usize> {
    let mut overdue = 0;
    for key in ages {
        let age = key
            .age_secs
            .map(human_span)
            .unwrap_or_else(|| "unknown (environment variable)".into());
        let schedule = key
            .max_age_days
            .map(|d| format!(", rotate every {d} days"))
            .unwrap_or_default();
        let state = if key.overdue() {
            overdue += 1;
            "  WARNING: overdue for rotation"
        } else {
            ""
        };
        writeln!(out, "{:<22} age {age}{schedule}{state}", key.name)?;
        if let Some(p) = &key.path {
            writeln!(out, "{:<22}   file {}", "", p.display())?;
        }
        for (path, until) in &key.retired {
            writeln!(
                out,
                "{:<22}   retired {} accepted for {} more",
                "",
                path.display(),
                human_span(until - now)
            )?;
        }
    }
    Ok(overdue)
}

/// The current unix time, for the CLI.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_else(|_| unix_now())
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Keys whose current value changed, now in force.
    pub rotated: Vec<&'static str>,
    /// Secrets that changed on disk but only take effect after a restart.
    pub need_restart: Vec<&'static str>,
}

fn same_opt(a: &Option<secrecy::SecretString>, b: &Option<secrecy::SecretString>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => bool::from(
            a.expose_secret()
                .as_bytes()
                .ct_eq(b.expose_secret().as_bytes()),
        ),
        _ => false,
    }
}

/// Re-read every secret and put the new token, session and CSRF keys in
/// force. On any error the running keys stay as they were. Each key whose
/// current value changed raises `SECRET_ROTATED` and gets an audit entry.
pub async fn reload(state: &AppState) -> anyhow::Result<ReloadOutcome> {
    let env: BTreeMap<String, String> = std::env::vars().collect();
    let fresh = secrets::load(&state.settings, &env)?;
    let keys = LiveKeys::from_secrets(&fresh)?;
    let old = state.keys.get();

    let mut outcome = ReloadOutcome::default();
    let old_kid = old.tokens.signing_kid().to_string();
    let new_kid = keys.tokens.signing_kid().to_string();
    if old_kid != new_kid {
        outcome.rotated.push("jwt_signing_key");
    }
    if !old.session.same_current(&keys.session) {
        outcome.rotated.push("session_key");
    }
    if !old.csrf.same_current(&keys.csrf) {
        outcome.rotated.push("csrf_key");
    }
    let running = &state.secrets;
    let fixed = [
        (
            "audit_key",
            bool::from(running.audit_key.expose().ct_eq(fresh.audit_key.expose())),
        ),
        (
            "data_key",
            bool::from(running.data_key.expose().ct_eq(fresh.data_key.expose())),
        ),
        (
            "database_url",
            same_opt(&running.database_url, &fresh.database_url),
        ),
        ("redis_url", same_opt(&running.redis_url, &fresh.redis_url)),
        ("amqp_url", same_opt(&running.amqp_url, &fresh.amqp_url)),
        (
            "twilio_auth_token",
            same_opt(&running.twilio_auth_token, &fresh.twilio_auth_token),
        ),
        (
            "telnyx_public_key",
            same_opt(&running.telnyx_public_key, &fresh.telnyx_public_key),
        ),
        (
            "smtp_password",
            same_opt(&running.smtp_password, &fresh.smtp_password),
        ),
        (
            "alert_webhook_secret",
            same_opt(&running.alert_webhook_secret, &fresh.alert_webhook_secret),
        ),
    ];
    outcome.need_restart = fixed
        .iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| *name)
        .collect();

    state.keys.replace(keys);

    for name in &outcome.rotated {
        let mut event =
            SecurityEvent::internal(EventType::SecretRotated, Severity::Medium, "SIGHUP")
                .with("secret", *name);
        let mut details = serde_json::json!({ "secret": name, "trigger": "SIGHUP" });
        if *name == "jwt_signing_key" {
            event = event
                .with("kid", new_kid.clone())
                .with("previous_kid", old_kid.clone());
            details["kid"] = new_kid.clone().into();
            details["previous_kid"] = old_kid.clone().into();
        }
        state.security.record(event).await;
        crate::audit::record(
            &state.db,
            &state.secrets.audit_key,
            None,
            AuditEvent {
                actor: Actor::System,
                organization_id: None,
                action: "secret.rotate",
                object_type: "secret",
                object_id: Some((*name).to_string()),
                outcome: Outcome::Success,
                details,
            },
        )
        .await?;
    }
    for name in &outcome.need_restart {
        tracing::warn!(
            secret = *name,
            "secret changed on disk; the running server keeps the old value until it restarts"
        );
    }
    tracing::info!(rotated = ?outcome.rotated, "secrets reloaded");
    Ok(outcome)
}

/// Reload secrets on every SIGHUP until the process ends. The handler is
/// installed before this returns, so a SIGHUP sent once the server
/// listens never takes the default action (ending the process). A failed
/// reload is logged and leaves the running keys in force.
pub fn reload_on_sighup(state: AppState) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading secrets");
            if let Err(err) = reload(&state).await {
                tracing::error!(
                    error = %format!("{err:#}"),
                    "reload failed; the running keys stay in force"
                );
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        for bad in [
            "",
            "24",
            "h",
            "0s",
            "3w",
            "-1h",
            "400d",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(human_span(59), "59 seconds");
        assert_eq!(human_span(3 * 3600), "3 hours");
        assert_eq!(human_span(95 * 86_400), "95 days");
    }

    #[test]
    fn rotating_a_file_keeps_the_old_key_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session_key");
        let old = secrets::generate_value("session_key");
        std::fs::write(&path, &old).unwrap();
        std::fs::write(dir.path().join("session_key.retired.100"), &old).unwrap();
        let done = rotate_file("session_key", &path, Duration::from_secs(60), 1000).unwrap();
        assert_eq!(done.retired_until, 1060);
        assert_eq!(std::fs::read_to_string(&done.retired_path).unwrap(), old);
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert_ne!(fresh, old);
        secrets::decode_symmetric("session_key", &fresh).unwrap();
        assert!(
            !dir.path().join("session_key.retired.100").exists(),
            "expired copy pruned"
        );
        assert!(!dir.path().join("session_key.rotating").exists());
        use std::os::unix::fs::PermissionsExt;
        for p in [&path, &done.retired_path] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
}
