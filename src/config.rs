//! Settings: built-in defaults, then an optional `kraliki.toml`, then
//! `KRALIKI_*` environment variables (nested keys joined with `__`), then
//! command-line flags. Unknown keys are an error at every layer.
//!
//! Secrets are not settings; they are loaded by [`crate::secrets`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::secrets::SECRET_NAMES;

/// How the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Local development: embedded defaults, generated secrets allowed.
    Development,
    /// Production: unsafe configuration is refused at start-up.
    Production,
}

/// Format of diagnostic logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (default).
    Json,
    /// Human-readable lines.
    Pretty,
}

/// All settings of `kraliki serve` and the other commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `development` (default) or `production`.
    pub env: Environment,
    /// Address to listen on. Default `127.0.0.1:3018`.
    pub listen: SocketAddr,
    /// Folder for the SQLite database, development secrets and the mail
    /// outbox. Default `./data`.
    pub data_dir: PathBuf,
    /// Folder of Docker secrets, one file per secret. Default `/run/secrets`.
    pub secrets_dir: PathBuf,
    /// Public base URL (scheme, host, optional port) that browsers and
    /// telephony providers use. Empty means `http://<listen>`.
    pub public_url: String,
    /// Peers (CIDR or address) whose `X-Forwarded-For` is believed.
    /// Empty by default: the socket address is the client.
    pub trusted_proxies: Vec<String>,
    /// Origins allowed to make cookie-authenticated requests, besides the
    /// public URL's own origin.
    pub allowed_origins: Vec<String>,
    /// Production only: allow the embedded SQLite database. Default false.
    pub allow_sqlite_in_production: bool,
    /// Whether anyone may create an organization through
    /// `POST /api/auth/register`. Default: on in development, off in
    /// production.
    pub open_registration: Option<bool>,
    /// Id of the operator's organization: its admins see every security
    /// event of the deployment, including those tied to no organization.
    /// Admins of other organizations see only their own. Empty by default.
    pub operator_organization: String,
    /// Deployment-wide Twilio account SID (single-organization installs).
    pub twilio_account_sid: String,
    /// Deployment-wide Telnyx connection id (single-organization installs).
    pub telnyx_connection_id: String,
    /// Authentication lifetimes and limits.
    pub auth: AuthSettings,
    /// Outgoing e-mail.
    pub smtp: SmtpSettings,
    /// Diagnostic logging.
    pub log: LogSettings,
    /// Prefix of every Redis key this deployment uses. Default `kraliki:`.
    pub redis_key_prefix: String,
    /// Rate limits (`[[rate_limit.rules]]`; a list replaces the whole
    /// default table of DESIGN §5).
    pub rate_limit: crate::security::ratelimit::RateLimitSettings,
    /// Intrusion detection.
    pub ids: IdsSettings,
    /// Connection and request time limits.
    pub http: HttpSettings,
    /// HTTPS served by `kraliki serve` itself (single-host installs without
    /// a reverse proxy). Off unless both `tls.cert` and `tls.key` are set.
    pub tls: TlsSettings,
    /// Where HIGH and CRITICAL security events are POSTed, signed with the
    /// `alert_webhook_secret` secret (which must then exist). Empty (the
    /// default) turns alerts off; https:// in production. Its path may be a
    /// credential, so only its host is ever logged.
    pub alert_webhook_url: String,
    /// Alert webhook delivery: de-duplication, severity, retries.
    pub alerts: crate::security::alerts::AlertSettings,
    /// Requests the server makes: the allow-list of otherwise refused
    /// addresses, and the timeout.
    pub outbound: crate::security::outbound::OutboundSettings,
    /// Prometheus metrics.
    pub metrics: MetricsSettings,
}

/// Where Prometheus metrics are served besides `GET /metrics` on the main
/// listener (which needs an admin of the operator organization).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Plain-HTTP address whose only route is `GET /metrics`, without
    /// authentication, for a Prometheus server on an internal network.
    /// Unset (the default): none. Never publish it. Also
    /// `KRALIKI_METRICS__LISTEN`.
    pub listen: Option<SocketAddr>,
}

/// Connection and request time limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// A request must be answered (body upload included) within this many
    /// seconds, else 408. Default 30.
    pub request_timeout_secs: u64,
    /// A client must send its whole request head within this many seconds,
    /// else the connection is closed (slow clients). Default 10.
    pub header_read_timeout_secs: u64,
    /// The server pings each WebSocket this often, in seconds; a client that
    /// sends nothing (not even the pong) for two intervals is disconnected.
    /// Default 30.
    pub ws_ping_interval_secs: u64,
    /// At SIGTERM or SIGINT, requests in flight get this many seconds to
    /// finish; then the remaining connections are closed. Keep it below
    /// the orchestrator's stop timeout (the stack's `stop_grace_period` is
    /// 35 s). Default 30.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            ws_ping_interval_secs: 30,
            shutdown_grace_secs: 30,
        }
    }
}

/// HTTPS served by `kraliki serve` itself: rustls, TLS 1.2 and 1.3 only,
/// AEAD cipher suites only, ALPN `h2` and `http/1.1`. SIGHUP reloads the
/// certificate and key from the same files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's own certificate first. Unset
    /// (the default): plain HTTP. Also `--tls-cert`, `KRALIKI_TLS__CERT`.
    pub cert: Option<PathBuf>,
    /// PEM private key of that certificate (PKCS#8, RSA or SEC1). In
    /// production it must not be readable by group or others (mode 0600).
    /// Also `--tls-key`, `KRALIKI_TLS__KEY`.
    pub key: Option<PathBuf>,
    /// Plain-HTTP address whose only answer is a 308 redirect to HTTPS.
    /// Unset (the default): none. Needs `cert` and `key`. Also
    /// `--tls-redirect-listen`, `KRALIKI_TLS__REDIRECT_LISTEN`.
    pub redirect_listen: Option<SocketAddr>,
}

impl TlsSettings {
    /// Whether HTTPS is on (certificate and key both set).
    pub fn enabled(&self) -> bool {
        self.cert.is_some() && self.key.is_some()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (name, env, value) in [
            ("tls.cert", "KRALIKI_TLS__CERT", &self.cert),
            ("tls.key", "KRALIKI_TLS__KEY", &self.key),
        ] {
            if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError(format!(
                    "{name} ({env}) is empty; give the path of a PEM file or leave it unset"
                )));
            }
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(ConfigError(
                "tls.key (KRALIKI_TLS__KEY, --tls-key) is missing: tls.cert is set, and HTTPS \
                 needs both the certificate and its private key"
                    .into(),
            )),
            (None, Some(_)) => Err(ConfigError(
                "tls.cert (KRALIKI_TLS__CERT, --tls-cert) is missing: tls.key is set, and HTTPS \
                 needs both the certificate and its private key"
                    .into(),
            )),
            (None, None) if self.redirect_listen.is_some() => Err(ConfigError(
                "tls.redirect_listen (KRALIKI_TLS__REDIRECT_LISTEN, --tls-redirect-listen) \
                 redirects to HTTPS, so it needs tls.cert and tls.key"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

/// What intrusion detection does with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdsMode {
    /// Raise events and block addresses after repeated hits (default).
    Enforce,
    /// Raise events only; never block.
    Observe,
    /// Do not inspect requests.
    Off,
}

/// Intrusion detection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdsSettings {
    /// `enforce` (default), `observe` or `off`.
    pub mode: IdsMode,
    /// Requests with findings from one address that trigger a block.
    /// Default 10.
    pub block_threshold: u64,
    /// Window in which those hits are counted, seconds. Default 300.
    pub block_window_secs: u64,
    /// How long a block lasts, seconds. Default 3600.
    pub block_secs: u64,
}

impl Default for IdsSettings {
    fn default() -> Self {
        IdsSettings {
            mode: IdsMode::Enforce,
            block_threshold: 10,
            block_window_secs: 300,
            block_secs: 3600,
        }
    }
}

/// Authentication lifetimes and limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Access token lifetime, seconds. Default 900 (15 minutes).
    pub access_token_ttl_secs: i64,
    /// Refresh token idle lifetime, seconds. Default 7 days.
    pub refresh_idle_secs: i64,
    /// Refresh family absolute lifetime, seconds. Default 30 days.
    pub refresh_absolute_secs: i64,
    /// Browser session idle timeout, seconds. Default 1800 (30 minutes).
    pub session_idle_secs: i64,
    /// Browser session absolute lifetime, seconds. Default 12 hours.
    pub session_absolute_secs: i64,
    /// Password reset token lifetime, seconds. Default 1800 (30 minutes).
    pub reset_token_ttl_secs: i64,
    /// Failed logins before an account is delayed. Default 5.
    pub lockout_threshold: i64,
    /// First delay once the threshold is reached, seconds; doubles with
    /// each further failure. Default 30.
    pub lockout_base_secs: i64,
    /// Longest delay, seconds. Default 3600.
    pub lockout_max_secs: i64,
    /// Concurrent password hashes; 0 means the number of CPUs.
    pub hash_concurrency: usize,
    /// `iss` of access tokens. Default `kraliki`.
    pub issuer: String,
    /// `aud` of access tokens. Default `kraliki-api`.
    pub audience: String,
}

/// Outgoing e-mail. Without a host, development writes mail to
/// `<data_dir>/outbox/`; production refuses to start without a host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// SMTP relay host; empty means the file outbox (development only).
    pub host: String,
    /// SMTP port. Default 587 (STARTTLS).
    pub port: u16,
    /// SMTP user name; the password is the `smtp_password` secret.
    pub username: String,
    /// Sender address. Default `Voice by Kraliki <no-reply@localhost>`.
    pub from: String,
}

/// Diagnostic logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` (default) or `pretty`.
    pub format: LogFormat,
    /// An `EnvFilter` directive. Default `info`.
    pub level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            env: Environment::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 3018)),
            data_dir: PathBuf::from("./data"),
            secrets_dir: PathBuf::from("/run/secrets"),
            public_url: String::new(),
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            allow_sqlite_in_production: false,
            open_registration: None,
            operator_organization: String::new(),
            twilio_account_sid: String::new(),
            telnyx_connection_id: String::new(),
            auth: AuthSettings::default(),
            smtp: SmtpSettings::default(),
            log: LogSettings::default(),
            redis_key_prefix: "kraliki:".into(),
            rate_limit: Default::default(),
            ids: IdsSettings::default(),
            http: HttpSettings::default(),
            tls: TlsSettings::default(),
            alert_webhook_url: String::new(),
            alerts: Default::default(),
            outbound: Default::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            access_token_ttl_secs: 900,
            refresh_idle_secs: 7 * 24 * 3600,
            refresh_absolute_secs: 30 * 24 * 3600,
            session_idle_secs: 1800,
            session_absolute_secs: 12 * 3600,
            reset_token_ttl_secs: 1800,
            lockout_threshold: 5,
            lockout_base_secs: 30,
            lockout_max_secs: 3600,
            hash_concurrency: 0,
            issuer: "kraliki".into(),
            audience: "kraliki-api".into(),
        }
    }
}

impl Default for SmtpSettings {
    fn default() -> Self {
        SmtpSettings {
            host: String::new(),
            port: 587,
            username: String::new(),
            from: "Voice by Kraliki <no-reply@localhost>".into(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Json,
            level: "info".into(),
        }
    }
}

impl Settings {
    /// Whether production rules apply.
    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// Whether open registration is on, after applying the per-mode default.
    pub fn registration_open(&self) -> bool {
        self.open_registration.unwrap_or(!self.is_production())
    }

    /// The public base URL without a trailing slash.
    pub fn public_base_url(&self) -> String {
        if self.public_url.is_empty() {
            let scheme = if self.tls.enabled() { "https" } else { "http" };
            format!("{scheme}://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_string()
        }
    }
}

/// Command-line flags that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--tls-redirect-listen`.
    pub tls_redirect_listen: Option<SocketAddr>,
}

/// A configuration error; the message names the setting and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Environment variables that are neither settings nor secrets but are
/// read by the command line itself.
const NON_SETTING_VARS: &[&str] = &["KRALIKI_CONFIG", "KRALIKI_TEST_POSTGRES_URL"];

/// Load settings from all layers. `env` is the process environment (a map so
/// tests can pass their own).
pub fn load(
    config_file: Option<&Path>,
    env: &BTreeMap<String, String>,
    flags: &FlagOverrides,
) -> Result<Settings, ConfigError> {
    let defaults = toml::Value::try_from(Settings::default())
        .map_err(|e| ConfigError(format!("internal: cannot render defaults: {e}")))?;
    let mut merged = defaults.clone();

    if let Some(path) = config_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
        })?;
        let file: toml::Value = toml::from_str(&text).map_err(|e| {
            ConfigError(format!(
                "configuration file {} is not valid TOML: {e}",
                path.display()
            ))
        })?;
        merge(&mut merged, file);
    }

    for (name, raw) in env {
        let Some(rest) = name.strip_prefix("KRALIKI_") else {
            continue;
        };
        if NON_SETTING_VARS.contains(&name.as_str()) || is_secret_var(rest) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let value = typed_env_value(&defaults, &path, raw);
        insert_path(&mut merged, &path, value).map_err(|_| {
            ConfigError(format!(
                "{name} is not a known setting (check its spelling)"
            ))
        })?;
    }

    let mut settings: Settings = merged.try_into().map_err(|e: toml::de::Error| {
        ConfigError(format!("invalid configuration: {}", e.message()))
    })?;

    if let Some(listen) = flags.listen {
        settings.listen = listen;
    }
    if let Some(dir) = &flags.data_dir {
        settings.data_dir = dir.clone();
    }
    if let Some(cert) = &flags.tls_cert {
        settings.tls.cert = Some(cert.clone());
    }
    if let Some(key) = &flags.tls_key {
        settings.tls.key = Some(key.clone());
    }
    if let Some(addr) = flags.tls_redirect_listen {
        settings.tls.redirect_listen = Some(addr);
    }
    validate(&settings)?;
    Ok(settings)
}

/// Whether `KRALIKI_<rest>` names a secret or its `_FILE` twin.
fn is_secret_var(rest: &str) -> bool {
    let base = rest.strip_suffix("_FILE").unwrap_or(rest);
    SECRET_NAMES.iter().any(|s| s.eq_ignore_ascii_case(base))
}

/// Deep-merge `over` into `base`.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn insert_path(root: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), ()> {
    let (last, parents) = path.split_last().ok_or(())?;
    let mut cur = root;
    for p in parents {
        let table = cur.as_table_mut().ok_or(())?;
        cur = table
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    cur.as_table_mut().ok_or(())?.insert(last.clone(), value);
    Ok(())
}

/// Interpret an environment string according to the type of the default at
/// the same path: lists are comma-separated, numbers and booleans parsed.
fn typed_env_value(defaults: &toml::Value, path: &[String], raw: &str) -> toml::Value {
    let mut cur = Some(defaults);
    for p in path {
        cur = cur.and_then(|v| v.get(p));
    }
    match cur {
        Some(toml::Value::Array(_)) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        Some(toml::Value::Integer(_)) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(raw.to_string())),
        Some(toml::Value::Boolean(_)) | None if matches!(raw.trim(), "true" | "false") => {
            toml::Value::Boolean(raw.trim() == "true")
        }
        _ => toml::Value::String(raw.to_string()),
    }
}

fn validate(s: &Settings) -> Result<(), ConfigError> {
    s.rate_limit
        .validate()
        .map_err(|e| ConfigError(format!("rate_limit: {e}")))?;
    if s.http.request_timeout_secs == 0
        || s.http.header_read_timeout_secs == 0
        || s.http.ws_ping_interval_secs == 0
        || s.http.shutdown_grace_secs == 0
    {
        return Err(ConfigError(
            "http.request_timeout_secs, http.header_read_timeout_secs, \
             http.ws_ping_interval_secs and http.shutdown_grace_secs must be positive"
                .into(),
        ));
    }
    if s.ids.block_threshold == 0 || s.ids.block_window_secs == 0 || s.ids.block_secs == 0 {
        return Err(ConfigError(
            "ids.block_threshold, ids.block_window_secs and ids.block_secs must be positive".into(),
        ));
    }
    s.outbound.validate().map_err(ConfigError)?;
    s.tls.validate()?;
    if let Some(metrics) = s.metrics.listen {
        let taken =
            metrics.port() != 0 && (metrics == s.listen || s.tls.redirect_listen == Some(metrics));
        if taken {
            return Err(ConfigError(format!(
                "metrics.listen (KRALIKI_METRICS__LISTEN) {metrics} is already the address of \
                 another listener: give the metrics their own port"
            )));
        }
    }
    s.alerts.validate().map_err(ConfigError)?;
    crate::security::alerts::validate_url(&s.alert_webhook_url, s.is_production())
        .map_err(ConfigError)?;
    for cidr in &s.trusted_proxies {
        parse_proxy(cidr).ok_or_else(|| {
            ConfigError(format!(
                "trusted_proxies: {cidr:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"
            ))
        })?;
    }
    let scheme_ok = s.public_url.starts_with("https://") || s.public_url.starts_with("http://");
    if !s.public_url.is_empty() && !scheme_ok {
        return Err(ConfigError(
            "public_url (KRALIKI_PUBLIC_URL) must start with https:// or http://".into(),
        ));
    }
    if s.tls.enabled() && s.public_url.starts_with("http://") {
        return Err(ConfigError(
            "public_url (KRALIKI_PUBLIC_URL) must be https:// when kraliki serves HTTPS itself \
             (tls.cert and tls.key are set)"
                .into(),
        ));
    }
    for origin in &s.allowed_origins {
        if origin == "*" {
            return Err(ConfigError(
                "allowed_origins (KRALIKI_ALLOWED_ORIGINS) must not be a wildcard; list origins"
                    .into(),
            ));
        }
    }
    let a = &s.auth;
    for (name, v) in [
        ("auth.access_token_ttl_secs", a.access_token_ttl_secs),
        ("auth.refresh_idle_secs", a.refresh_idle_secs),
        ("auth.refresh_absolute_secs", a.refresh_absolute_secs),
        ("auth.session_idle_secs", a.session_idle_secs),
        ("auth.session_absolute_secs", a.session_absolute_secs),
        ("auth.reset_token_ttl_secs", a.reset_token_ttl_secs),
        ("auth.lockout_threshold", a.lockout_threshold),
        ("auth.lockout_base_secs", a.lockout_base_secs),
        ("auth.lockout_max_secs", a.lockout_max_secs),
    ] {
        if v <= 0 {
            return Err(ConfigError(format!("{name} must be a positive number")));
        }
    }
    if s.is_production() {
        if s.public_url.starts_with("http://") {
            return Err(ConfigError(
                "public_url (KRALIKI_PUBLIC_URL) must be https:// in production, because \
                 session cookies are Secure"
                    .into(),
            ));
        }
        if s.smtp.host.is_empty() {
            return Err(ConfigError(
                "smtp.host (KRALIKI_SMTP__HOST) must be set in production so password \
                 resets can be delivered"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Parse a trusted proxy entry: a CIDR or a single address.
pub fn parse_proxy(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_shutdown_grace_is_a_positive_setting() {
        let s = load(None, &env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(s.http.shutdown_grace_secs, 30);
        let e = env(&[("KRALIKI_HTTP__SHUTDOWN_GRACE_SECS", "5")]);
        let s = load(None, &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.http.shutdown_grace_secs, 5);
        let e = env(&[("KRALIKI_HTTP__SHUTDOWN_GRACE_SECS", "0")]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(err.0.contains("http.shutdown_grace_secs"), "{err}");
    }

    #[test]
    fn the_metrics_listener_needs_its_own_address() {
        let s = load(None, &env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(s.metrics.listen, None);
        let e = env(&[("KRALIKI_METRICS__LISTEN", "10.42.0.5:9090")]);
        let s = load(None, &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.metrics.listen, Some("10.42.0.5:9090".parse().unwrap()));
        let e = env(&[
            ("KRALIKI_LISTEN", "127.0.0.1:4000"),
            ("KRALIKI_METRICS__LISTEN", "127.0.0.1:4000"),
        ]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(
            err.0
                .starts_with("metrics.listen (KRALIKI_METRICS__LISTEN)"),
            "{err}"
        );
        // Port 0 (any free port) never collides.
        let e = env(&[
            ("KRALIKI_LISTEN", "127.0.0.1:0"),
            ("KRALIKI_METRICS__LISTEN", "127.0.0.1:0"),
        ]);
        assert!(load(None, &e, &FlagOverrides::default()).is_ok());
    }

    #[test]
    fn defaults_are_development_on_loopback() {
        let s = load(None, &env(&[]), &FlagOverrides::default()).unwrap();
        assert_eq!(s.env, Environment::Development);
        assert_eq!(s.listen.to_string(), "127.0.0.1:3018");
        assert!(s.registration_open());
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kraliki.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:4000\"\n[auth]\nlockout_threshold = 7\n",
        )
        .unwrap();
        let e = env(&[
            ("KRALIKI_LISTEN", "127.0.0.1:5000"),
            ("KRALIKI_AUTH__SESSION_IDLE_SECS", "60"),
            ("KRALIKI_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("KRALIKI_SESSION_KEY", "not a setting, a secret"),
        ]);
        let s = load(Some(&file), &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(s.auth.lockout_threshold, 7);
        assert_eq!(s.auth.session_idle_secs, 60);
        assert_eq!(s.trusted_proxies, vec!["10.0.0.0/8", "127.0.0.1"]);
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:6000".parse().unwrap()),
            ..FlagOverrides::default()
        };
        let s = load(Some(&file), &e, &flags).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:6000");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = load(
            None,
            &env(&[("KRALIKI_LISTN", "x")]),
            &FlagOverrides::default(),
        )
        .unwrap_err();
        assert!(err.0.contains("listn"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kraliki.toml");
        std::fs::write(&file, "[auth]\nlockout_treshold = 3\n").unwrap();
        let err = load(Some(&file), &env(&[]), &FlagOverrides::default()).unwrap_err();
        assert!(err.0.contains("lockout_treshold"), "{err}");
    }

    #[test]
    fn wildcard_origin_and_bad_proxy_are_refused() {
        let e = env(&[("KRALIKI_ALLOWED_ORIGINS", "*")]);
        assert!(load(None, &e, &FlagOverrides::default()).is_err());
        let e = env(&[("KRALIKI_TRUSTED_PROXIES", "not-an-ip")]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(err.0.contains("trusted_proxies"));
    }

    #[test]
    fn alert_and_outbound_settings_come_from_the_environment() {
        let e = env(&[
            ("KRALIKI_ALERT_WEBHOOK_URL", "https://hooks.example/a"),
            ("KRALIKI_ALERTS__DEDUP_WINDOW_SECS", "60"),
            ("KRALIKI_ALERTS__MIN_SEVERITY", "CRITICAL"),
            ("KRALIKI_OUTBOUND__ALLOW", "10.20.0.0/16, 127.0.0.1"),
            ("KRALIKI_ALERT_WEBHOOK_SECRET", "a secret, not a setting"),
        ]);
        let s = load(None, &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.alert_webhook_url, "https://hooks.example/a");
        assert_eq!(s.alerts.dedup_window_secs, 60);
        assert_eq!(
            s.alerts.min_severity,
            crate::security::events::Severity::Critical
        );
        assert_eq!(s.outbound.allow, vec!["10.20.0.0/16", "127.0.0.1"]);
        assert_eq!(s.outbound.timeout_secs, 10);

        let e = env(&[("KRALIKI_OUTBOUND__ALLOW", "intranet")]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(err.0.contains("outbound.allow"), "{err}");
        let e = env(&[
            ("KRALIKI_ENV", "production"),
            ("KRALIKI_SMTP__HOST", "smtp.example.com"),
            ("KRALIKI_ALERT_WEBHOOK_URL", "http://hooks.example/a"),
        ]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(err.0.contains("alert_webhook_url"), "{err}");
    }

    #[test]
    fn tls_settings_come_from_file_env_and_flags_and_go_together() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kraliki.toml");
        std::fs::write(
            &file,
            "[tls]\ncert = \"/etc/kraliki/cert.pem\"\nkey = \"/etc/kraliki/key.pem\"\n",
        )
        .unwrap();
        let s = load(Some(&file), &env(&[]), &FlagOverrides::default()).unwrap();
        assert!(s.tls.enabled());
        assert_eq!(
            s.tls.key.as_deref(),
            Some(Path::new("/etc/kraliki/key.pem"))
        );
        assert_eq!(s.public_base_url(), "https://127.0.0.1:3018");

        let e = env(&[
            ("KRALIKI_TLS__CERT", "/run/tls/cert.pem"),
            ("KRALIKI_TLS__KEY", "/run/tls/key.pem"),
            ("KRALIKI_TLS__REDIRECT_LISTEN", "0.0.0.0:80"),
        ]);
        let s = load(Some(&file), &e, &FlagOverrides::default()).unwrap();
        assert_eq!(s.tls.cert.as_deref(), Some(Path::new("/run/tls/cert.pem")));
        assert_eq!(s.tls.redirect_listen, Some("0.0.0.0:80".parse().unwrap()));
        let flags = FlagOverrides {
            tls_cert: Some("/flag/cert.pem".into()),
            ..FlagOverrides::default()
        };
        let s = load(Some(&file), &e, &flags).unwrap();
        assert_eq!(s.tls.cert.as_deref(), Some(Path::new("/flag/cert.pem")));

        // One without the other, or a redirect without HTTPS, names the
        // missing setting.
        let e = env(&[("KRALIKI_TLS__CERT", "/run/tls/cert.pem")]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(
            err.0
                .starts_with("tls.key (KRALIKI_TLS__KEY, --tls-key) is missing"),
            "{err}"
        );
        let flags = FlagOverrides {
            tls_key: Some("/flag/key.pem".into()),
            ..FlagOverrides::default()
        };
        let err = load(None, &env(&[]), &flags).unwrap_err();
        assert!(
            err.0
                .starts_with("tls.cert (KRALIKI_TLS__CERT, --tls-cert) is missing"),
            "{err}"
        );
        let e = env(&[("KRALIKI_TLS__REDIRECT_LISTEN", "127.0.0.1:80")]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(err.0.starts_with("tls.redirect_listen"), "{err}");
        let e = env(&[("KRALIKI_TLS__CERTS", "/x")]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(err.0.contains("unknown field `certs`"), "{err}");
        let e = env(&[
            ("KRALIKI_TLS__CERT", "/c.pem"),
            ("KRALIKI_TLS__KEY", "/k.pem"),
            ("KRALIKI_PUBLIC_URL", "http://calls.example"),
        ]);
        let err = load(None, &e, &FlagOverrides::default()).unwrap_err();
        assert!(err.0.contains("public_url"), "{err}");
    }
}
