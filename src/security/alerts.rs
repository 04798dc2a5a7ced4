//! The alert webhook: HIGH and CRITICAL security events POSTed as JSON to
//! `alert_webhook_url`, signed, retried and de-duplicated, through the
//! outbound request guard.
//!
//! # Signature
//!
//! Each request carries two headers:
//!
//! - `X-Kraliki-Timestamp`: the time of sending, unix seconds;
//! - `X-Kraliki-Signature`: `v1=` and the lowercase hex HMAC-SHA256 of
//!   `"{timestamp}.{body}"`, keyed with the `alert_webhook_secret` secret
//!   exactly as stored (its text, not decoded).
//!
//! A receiver recomputes the HMAC over the raw body, compares in constant
//! time, and refuses timestamps more than a few minutes from its own clock.
//! Every attempt is signed afresh, so a retry carries a new timestamp; the
//! body, and its `id`, stay the same, which lets a receiver drop repeats.
//!
//! # Body
//!
//! `id` (of the stored security event), `type`, `severity`, `timestamp`
//! (RFC 3339, ms), `ip`, `method`, `url` (the path only; the query is left
//! out because it may carry a token), `request_id`, `user_id` and
//! `organization_id` when known, `details` (the type-specific fields) and
//! `suppressed` (see below).
//!
//! # Delivery
//!
//! [`SecurityLog`](crate::security::events::SecurityLog) offers each event to
//! a bounded queue and never waits: when the queue is full the alert is
//! dropped and a warning logged. One background task takes alerts off the
//! queue, de-duplicates them and hands each to a delivery task (a few at a
//! time). A delivery is retried on timeouts, connection failures, 408, 429
//! and 5xx with exponential backoff (`retry_base_ms`, doubled each time, up
//! to `max_attempts` attempts); any other 4xx, or a refusal by the outbound
//! guard, ends it.
//!
//! De-duplication: per event type and key (the client address, or the user
//! when the address is empty), the first alert is sent and repeats within
//! `dedup_window_secs` are only counted; the next alert sent for that type
//! and key carries the count as `suppressed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};

use crate::config::{ConfigError, Settings};
use crate::secrets::{env_var_name, Secrets};
use crate::security::events::{rfc3339_ms, Severity};
use crate::security::outbound::{OutboundClient, OutboundError};
use crate::security::ratelimit::Clock;
use crate::store::events::StoredEvent;

/// The header carrying the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-kraliki-timestamp";
/// The header carrying `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-kraliki-signature";

/// Shortest accepted `alert_webhook_secret`, characters.
const MIN_SECRET_LEN: usize = 32;
/// Deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 4;
/// Type-and-key pairs remembered for de-duplication.
const MAX_DEDUP_KEYS: usize = 10_000;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Alert webhook delivery (`[alerts]`). The URL itself is the top-level
/// `alert_webhook_url`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Repeats of one event type for one address (or user) within this many
    /// seconds of a sent alert are counted, not sent. 0 sends every event.
    /// Default 600.
    pub dedup_window_secs: u64,
    /// Lowest severity sent: `LOW`, `MEDIUM`, `HIGH` (default) or
    /// `CRITICAL`. Lower than `HIGH` can be noisy.
    pub min_severity: Severity,
    /// Wait before the first retry, milliseconds; doubles with each further
    /// attempt. Default 1000 (1 s, 2 s, 4 s, 8 s).
    pub retry_base_ms: u64,
    /// Attempts per alert, the first included. Default 5.
    pub max_attempts: u32,
    /// Alerts waiting for delivery; beyond this, new alerts are dropped and
    /// a warning logged. Default 1024.
    pub queue_capacity: usize,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            dedup_window_secs: 600,
            min_severity: Severity::High,
            retry_base_ms: 1000,
            max_attempts: 5,
            queue_capacity: 1024,
        }
    }
}

impl AlertSettings {
    /// Check the settings; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_base_ms == 0 {
            return Err("alerts.retry_base_ms must be a positive number of milliseconds".into());
        }
        if !(1..=20).contains(&self.max_attempts) {
            return Err("alerts.max_attempts must be between 1 and 20".into());
        }
        if self.queue_capacity == 0 {
            return Err("alerts.queue_capacity must be positive".into());
        }
        Ok(())
    }
}

/// Check `alert_webhook_url` (empty is off). Production requires https.
/// Messages never repeat the URL, whose path may be a credential.
pub fn validate_url(url: &str, production: bool) -> Result<(), String> {
    if url.is_empty() {
        return Ok(());
    }
    let parsed = Url::parse(url).map_err(|_| {
        "alert_webhook_url (KRALIKI_ALERT_WEBHOOK_URL) is not a valid absolute URL".to_string()
    })?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if !production => Ok(()),
        "http" => Err(
            "alert_webhook_url (KRALIKI_ALERT_WEBHOOK_URL) must be https:// in production, \
             because alerts describe attacks on this deployment"
                .into(),
        ),
        _ => Err("alert_webhook_url (KRALIKI_ALERT_WEBHOOK_URL) must be an https:// URL".into()),
    }
}

/// `v1=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The request path's side of [`start`]: offers events to the delivery
/// queue without waiting. Cheap to clone.
#[derive(Clone)]
pub struct AlertSender {
    queue: mpsc::Sender<StoredEvent>,
    min_severity: Severity,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AlertSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSender")
            .field("min_severity", &self.min_severity)
            .finish_non_exhaustive()
    }
}

impl AlertSender {
    /// Queue `event` for the webhook if it is severe enough. Never blocks;
    /// a full queue drops the alert and logs (the first drop, then every
    /// hundredth).
    pub fn offer(&self, event: &StoredEvent, severity: Severity) {
        if severity < self.min_severity {
            return;
        }
        let Err(err) = self.queue.try_send(event.clone()) else {
            return;
        };
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped == 1 || dropped.is_multiple_of(100) {
            let reason = match err {
                mpsc::error::TrySendError::Full(_) => "queue full",
                mpsc::error::TrySendError::Closed(_) => "delivery task stopped",
            };
            tracing::warn!(
                event_type = %event.event_type,
                event_id = %event.id,
                dropped_total = dropped,
                reason,
                "security alert dropped"
            );
        }
    }
}

/// Start alert delivery when `alert_webhook_url` is set; `None` when it is
/// not. Refuses a URL without a usable `alert_webhook_secret`, and a URL
/// whose IP literal the outbound guard would refuse. Spawns the delivery
/// task, so it must run inside the Tokio runtime.
pub fn start(
    settings: &Settings,
    secrets: &Secrets,
    client: OutboundClient,
    clock: Arc<dyn Clock>,
) -> Result<Option<AlertSender>, ConfigError> {
    let Some(webhook) = Webhook::configure(settings, secrets, client)? else {
        return Ok(None);
    };
    let alerts = &settings.alerts;
    let (queue, receiver) = mpsc::channel(alerts.queue_capacity);
    tracing::info!(
        host = %webhook.host,
        min_severity = alerts.min_severity.as_str(),
        "alert webhook on"
    );
    let dedup = Dedup::new(alerts.dedup_window_secs.saturating_mul(1000));
    tokio::spawn(dispatch(receiver, Arc::new(webhook), dedup, clock));
    Ok(Some(AlertSender {
        queue,
        min_severity: alerts.min_severity,
        dropped: Arc::new(AtomicU64::new(0)),
    }))
}

/// Take alerts off the queue, drop repeats, and deliver the rest a few at a
/// time. Ends when every [`AlertSender`] is gone.
async fn dispatch(
    mut receiver: mpsc::Receiver<StoredEvent>,
    webhook: Arc<Webhook>,
    mut dedup: Dedup,
    clock: Arc<dyn Clock>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(event) = receiver.recv().await {
        let key = match (event.ip.is_empty(), &event.user_id) {
            (true, Some(user)) => user.clone(),
            _ => event.ip.clone(),
        };
        let Some(suppressed) = dedup.admit(&event.event_type, &key, clock.now_ms()) else {
            continue;
        };

        let body = alert_body(&event, suppressed);
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let webhook = webhook.clone();
        tokio::spawn(async move {
            webhook.deliver(&event, &body).await;
            drop(permit);
        });
    }
}

/// The JSON body of one alert.
fn alert_body(event: &StoredEvent, suppressed: u64) -> Vec<u8> {
    let details = serde_json::from_str::<Value>(&event.details)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()));
    let path = event.url.split(['?', '#']).next().unwrap_or_default();
    let mut body = serde_json::json!({
        "id": event.id,
        "type": event.event_type,
        "severity": event.severity,
        "timestamp": rfc3339_ms(event.created_at),
        "ip": event.ip,
        "method": event.method,
        "url": path,
        "request_id": event.request_id,
        "details": details,
        "suppressed": suppressed,
    });
    if let Some(user) = &event.user_id {
        body["user_id"] = user.as_str().into();
    }
    if let Some(organization) = &event.organization_id {
        body["organization_id"] = organization.as_str().into();
    }
    serde_json::to_vec(&body).expect("a JSON value serializes")
}

/// Repeats per event type and key within a window.
struct Dedup {
    window_ms: u64,
    seen: HashMap<(String, String), Seen>,
}

/// The last alert sent for one type and key.
struct Seen {
    sent_at_ms: u64,
    suppressed: u64,
}

impl Dedup {
    fn new(window_ms: u64) -> Self {
        Dedup {
            window_ms,
            seen: HashMap::new(),
        }
    }

    /// `Some(n)` when an alert should be sent now, `n` being the repeats
    /// suppressed since the previous one; `None` for a repeat.
    fn admit(&mut self, event_type: &str, key: &str, now_ms: u64) -> Option<u64> {
        if self.window_ms == 0 {
            return Some(0);
        }
        let id = (event_type.to_string(), key.to_string());
        if let Some(seen) = self.seen.get_mut(&id) {
            if now_ms.saturating_sub(seen.sent_at_ms) < self.window_ms {
                seen.suppressed += 1;
                return None;
            }
            let suppressed = seen.suppressed;
            *seen = Seen {
                sent_at_ms: now_ms,
                suppressed: 0,
            };
            return Some(suppressed);
        }

        if self.seen.len() >= MAX_DEDUP_KEYS {
            self.make_room(now_ms);
        }
        self.seen.insert(
            id,
            Seen {
                sent_at_ms: now_ms,
                suppressed: 0,
            },
        );
        Some(0)
    }

    /// Forget pairs whose window is over, then, if still full, the oldest.
    /// Counts of forgotten pairs are logged rather than lost silently.
    fn make_room(&mut self, now_ms: u64) {
        let window_ms = self.window_ms;
        let mut forgotten = 0u64;
        self.seen.retain(|_, seen| {
            let keep = now_ms.saturating_sub(seen.sent_at_ms) < window_ms;
            if !keep {
                forgotten += seen.suppressed;
            }
            keep
        });
        if self.seen.len() >= MAX_DEDUP_KEYS {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, seen)| seen.sent_at_ms)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                forgotten += self.seen.remove(&id).map_or(0, |seen| seen.suppressed);
            }
        }
        if forgotten > 0 {
            tracing::info!(
                suppressed = forgotten,
                "suppressed security alerts forgotten to bound de-duplication memory"
            );
        }
    }
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry(String),
    GiveUp(String),
}

/// Sort a receiver's status: 2xx done; 408, 429 and 5xx worth retrying;
/// anything else final.
fn outcome_of(status: StatusCode) -> Outcome {
    if status.is_success() {
        Outcome::Delivered
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Outcome::Retry(format!("receiver answered {status}"))
    } else {
        Outcome::GiveUp(format!("receiver answered {status}"))
    }
}

/// Wait before attempt `attempt + 1`: `base`, doubled per attempt made.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Where and how alerts are sent.
struct Webhook {
    url: String,
    /// Host of the URL: the only part of it that is logged.
    host: String,
    secret: SecretString,
    client: OutboundClient,
    retry_base: Duration,
    max_attempts: u32,
}

impl Webhook {
    fn configure(
        settings: &Settings,
        secrets: &Secrets,
        client: OutboundClient,
    ) -> Result<Option<Webhook>, ConfigError> {
        let url = settings.alert_webhook_url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        validate_url(url, settings.is_production()).map_err(ConfigError)?;
        let parsed = Url::parse(url).map_err(|_| ConfigError("alert_webhook_url".into()))?;

        let secret = secrets.alert_webhook_secret.clone().ok_or_else(|| {
            ConfigError(format!(
                "alert_webhook_url is set but the alert_webhook_secret secret is missing, and \
                 alerts are never sent unsigned; put it in {} or in a file named by {}_FILE \
                 (`kraliki keys generate` makes one), or unset KRALIKI_ALERT_WEBHOOK_URL",
                settings.secrets_dir.join("alert_webhook_secret").display(),
                env_var_name("alert_webhook_secret"),
            ))
        })?;
        if secret.expose_secret().trim().len() < MIN_SECRET_LEN {
            return Err(ConfigError(format!(
                "secret alert_webhook_secret must be at least {MIN_SECRET_LEN} random \
                 characters; `kraliki keys generate` makes one"
            )));
        }

        match client.policy().check_url(&parsed) {
            Ok(()) => {}
            Err(OutboundError::Forbidden { address, .. }) => {
                return Err(ConfigError(format!(
                    "alert_webhook_url points at {address}, which the outbound guard refuses; \
                     add it to outbound.allow (KRALIKI_OUTBOUND__ALLOW) if that receiver is \
                     meant to be reached"
                )));
            }
            Err(err) => return Err(ConfigError(format!("alert_webhook_url: {err}"))),
        }

        let alerts = &settings.alerts;
        Ok(Some(Webhook {
            url: url.to_string(),
            host: parsed.host_str().unwrap_or_default().to_string(),
            secret,
            client,
            retry_base: Duration::from_millis(alerts.retry_base_ms),
            max_attempts: alerts.max_attempts,
        }))
    }

    /// Deliver one alert, retrying as the module doc describes. Logs the
    /// result; only the host of the URL is ever logged.
    async fn deliver(&self, event: &StoredEvent, body: &[u8]) {
        for attempt in 1..=self.max_attempts {
            let reason = match self.attempt(body).await {
                Outcome::Delivered => {
                    tracing::info!(
                        event_type = %event.event_type,
                        event_id = %event.id,
                        host = %self.host,
                        attempt,
                        "security alert delivered"
                    );
                    return;
                }
                Outcome::GiveUp(reason) => {
                    tracing::error!(
                        event_type = %event.event_type,
                        event_id = %event.id,
                        host = %self.host,
                        attempt,
                        reason = %reason,
                        "security alert refused; not retrying"
                    );
                    return;
                }
                Outcome::Retry(reason) => reason,
            };
            if attempt == self.max_attempts {
                tracing::error!(
                    event_type = %event.event_type,
                    event_id = %event.id,
                    host = %self.host,
                    attempts = attempt,
                    reason = %reason,
                    "security alert not delivered; giving up"
                );
                return;
            }
            let wait = backoff(self.retry_base, attempt);
            tracing::warn!(
                event_type = %event.event_type,
                event_id = %event.id,
                host = %self.host,
                attempt,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                reason = %reason,
                "security alert delivery failed; will retry"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One signed POST.
    async fn attempt(&self, body: &[u8]) -> Outcome {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signature = sign(self.secret.expose_secret().as_bytes(), timestamp, body);
        let request = match self.client.request(Method::POST, &self.url) {
            Ok(request) => request,
            Err(err) => return Outcome::GiveUp(err.to_string()),
        };
        let request = request
            .header(CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_vec());

        match self.client.send(request).await {
            Ok(response) => outcome_of(response.status()),
            Err(err) if err.is_transient() => Outcome::Retry(err.to_string()),
            Err(err) => Outcome::GiveUp(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(url: &str, details: &str) -> StoredEvent {
        StoredEvent {
            id: "ev1".into(),
            organization_id: Some("org1".into()),
            event_type: "CSRF_VIOLATION".into(),
            severity: "HIGH".into(),
            ip: "203.0.113.9".into(),
            method: "PUT".into(),
            url: url.into(),
            request_id: "req1".into(),
            user_id: Some("user1".into()),
            details: details.into(),
            created_at: 1_700_000_000_123,
        }
    }

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's hmac module over the same input.
        let sig = sign(
            b"whsec-test-key-0123456789abcdef0123",
            1_700_000_000,
            br#"{"type":"CSRF_VIOLATION"}"#,
        );
        assert_eq!(
            sig,
            "v1=74c4283e75ed80ea283f636eeec50e9000c45053a6fc24c520dc13576c9d237e"
        );
    }

    #[test]
    fn body_names_the_event_and_leaves_out_the_query() {
        let body = alert_body(
            &event("/api/auth/reset?token=s3cr3t", r#"{"reason":"missing"}"#),
            3,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], "ev1");
        assert_eq!(v["type"], "CSRF_VIOLATION");
        assert_eq!(v["severity"], "HIGH");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["ip"], "203.0.113.9");
        assert_eq!(v["url"], "/api/auth/reset");
        assert_eq!(v["user_id"], "user1");
        assert_eq!(v["organization_id"], "org1");
        assert_eq!(v["details"]["reason"], "missing");
        assert_eq!(v["suppressed"], 3);
        assert!(!String::from_utf8(body).unwrap().contains("s3cr3t"));

        let mut anonymous = event("/x", "not json");
        anonymous.user_id = None;
        anonymous.organization_id = None;
        let v: Value = serde_json::from_slice(&alert_body(&anonymous, 0)).unwrap();
        assert!(v.get("user_id").is_none() && v.get("organization_id").is_none());
        assert_eq!(v["details"], serde_json::json!({}));
    }

    #[test]
    fn repeats_within_the_window_are_counted_and_reported_once_it_ends() {
        let mut d = Dedup::new(600_000);
        assert_eq!(d.admit("CSRF_VIOLATION", "1.2.3.4", 0), Some(0));
        assert_eq!(d.admit("CSRF_VIOLATION", "1.2.3.4", 1_000), None);
        assert_eq!(d.admit("CSRF_VIOLATION", "1.2.3.4", 599_999), None);
        // Another type or another key is its own alert.
        assert_eq!(d.admit("TOKEN_REUSE_DETECTED", "1.2.3.4", 2_000), Some(0));
        assert_eq!(d.admit("CSRF_VIOLATION", "5.6.7.8", 2_000), Some(0));
        // The window ends: sent, carrying the two repeats.
        assert_eq!(d.admit("CSRF_VIOLATION", "1.2.3.4", 600_000), Some(2));
        assert_eq!(d.admit("CSRF_VIOLATION", "1.2.3.4", 600_001), None);
        assert_eq!(d.admit("CSRF_VIOLATION", "1.2.3.4", 1_200_000), Some(1));

        let mut off = Dedup::new(0);
        assert_eq!(off.admit("X", "k", 0), Some(0));
        assert_eq!(off.admit("X", "k", 0), Some(0));
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut d = Dedup::new(600_000);
        for i in 0..MAX_DEDUP_KEYS + 50 {
            assert_eq!(d.admit("IP_BLOCKED", &i.to_string(), i as u64), Some(0));
        }
        assert!(d.seen.len() <= MAX_DEDUP_KEYS);
        // The newest keys are still de-duplicated.
        let newest = (MAX_DEDUP_KEYS + 49).to_string();
        assert_eq!(d.admit("IP_BLOCKED", &newest, 20_000), None);
    }

    #[test]
    fn statuses_are_sorted_into_done_retry_and_give_up() {
        assert_eq!(outcome_of(StatusCode::OK), Outcome::Delivered);
        assert_eq!(outcome_of(StatusCode::NO_CONTENT), Outcome::Delivered);
        for retry in [500, 502, 503, 408, 429] {
            let status = StatusCode::from_u16(retry).unwrap();
            assert!(matches!(outcome_of(status), Outcome::Retry(_)), "{retry}");
        }
        for give_up in [400, 401, 403, 404, 410, 302] {
            let status = StatusCode::from_u16(give_up).unwrap();
            assert!(
                matches!(outcome_of(status), Outcome::GiveUp(_)),
                "{give_up}"
            );
        }
    }

    #[test]
    fn backoff_doubles_from_the_base() {
        let base = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=5).map(|a| backoff(base, a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }

    #[test]
    fn urls_must_be_https_in_production() {
        assert!(validate_url("", true).is_ok());
        assert!(validate_url("https://alerts.example.com/hook", true).is_ok());
        assert!(validate_url("http://127.0.0.1:9000/hook", false).is_ok());
        let err = validate_url("http://alerts.example.com/hook/s3cr3t", true).unwrap_err();
        assert!(err.contains("https://") && !err.contains("s3cr3t"), "{err}");
        assert!(validate_url("ftp://alerts.example.com/", false).is_err());
        assert!(validate_url("not a url", false).is_err());
    }

    #[test]
    fn settings_are_validated() {
        let mut s = AlertSettings::default();
        assert!(s.validate().is_ok());
        s.max_attempts = 0;
        assert!(s.validate().is_err());
        s = AlertSettings {
            retry_base_ms: 0,
            ..AlertSettings::default()
        };
        assert!(s.validate().is_err());
    }
}
