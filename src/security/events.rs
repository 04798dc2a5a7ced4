//! Security events: typed, written as one JSON line with the marker
//! `"SECURITY EVENT"` on the security log, and stored for admins.
//!
//! Lines are produced by serde_json, so user-supplied text (paths, user
//! agents) is escaped and cannot forge a line.

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::http::request::RequestMeta;
use crate::metrics::Metrics;
use crate::security::alerts::AlertSender;
use crate::security::fanout::Fanout;
use crate::store::{self, events::StoredEvent, Db};

/// Kinds of security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// A rate limit was exceeded.
    RateLimitExceeded,
    /// Intrusion detection matched a rule.
    SuspiciousActivity,
    /// A sign-in or credential check failed.
    AuthFailure,
    /// An account was delayed after repeated failures.
    AccountLocked,
    /// A cookie-authenticated request failed the CSRF checks.
    CsrfViolation,
    /// An access token was refused.
    InvalidToken,
    /// A retired refresh token was presented again.
    TokenReuseDetected,
    /// An authenticated principal lacked a permission.
    AccessDenied,
    /// A provider webhook had a bad signature.
    WebhookSignatureInvalid,
    /// An address was blocked.
    IpBlocked,
    /// A secret or key was rotated.
    SecretRotated,
    /// A dependency failed and a fallback is in use.
    Degraded,
}

impl EventType {
    /// Wire spelling, e.g. `AUTH_FAILURE`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            EventType::SuspiciousActivity => "SUSPICIOUS_ACTIVITY",
            EventType::AuthFailure => "AUTH_FAILURE",
            EventType::AccountLocked => "ACCOUNT_LOCKED",
            EventType::CsrfViolation => "CSRF_VIOLATION",
            EventType::InvalidToken => "INVALID_TOKEN",
            EventType::TokenReuseDetected => "TOKEN_REUSE_DETECTED",
            EventType::AccessDenied => "ACCESS_DENIED",
            EventType::WebhookSignatureInvalid => "WEBHOOK_SIGNATURE_INVALID",
            EventType::IpBlocked => "IP_BLOCKED",
            EventType::SecretRotated => "SECRET_ROTATED",
            EventType::Degraded => "DEGRADED",
        }
    }
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Informational.
    Low,
    /// Worth a look.
    Medium,
    /// Likely an attack.
    High,
    /// Act now.
    Critical,
}

impl Severity {
    /// Wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

/// One security event.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    /// Kind.
    pub event_type: EventType,
    /// Severity.
    pub severity: Severity,
    /// Client address.
    pub ip: String,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub url: String,
    /// Request id.
    pub request_id: String,
    /// User, when known.
    pub user_id: Option<String>,
    /// Organization, when known.
    pub organization_id: Option<String>,
    /// Type-specific fields (`reason`, `limit`, …).
    pub details: Map<String, Value>,
}

impl SecurityEvent {
    /// An event about the request described by `meta`.
    pub fn new(event_type: EventType, severity: Severity, meta: &RequestMeta) -> Self {
        SecurityEvent {
            event_type,
            severity,
            ip: meta.ip.to_string(),
            method: meta.method.clone(),
            url: meta.url.clone(),
            request_id: meta.request_id.clone(),
            user_id: None,
            organization_id: None,
            details: Map::new(),
        }
    }

    /// An event the server raises itself, not caused by a request (a key
    /// reload, say); `trigger` says what set it off.
    pub fn internal(event_type: EventType, severity: Severity, trigger: &str) -> Self {
        SecurityEvent {
            event_type,
            severity,
            ip: "local".into(),
            method: "INTERNAL".into(),
            url: trigger.into(),
            request_id: crate::store::new_id(),
            user_id: None,
            organization_id: None,
            details: Map::new(),
        }
    }

    /// Add a type-specific field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// Name the user and organization concerned.
    pub fn for_user(mut self, user_id: &str, organization_id: &str) -> Self {
        self.user_id = Some(user_id.to_string());
        self.organization_id = Some(organization_id.to_string());
        self
    }

    /// The JSON log line (without the trailing newline).
    pub fn to_log_line(&self, timestamp: &str) -> String {
        let mut obj = Map::new();
        obj.insert("timestamp".into(), timestamp.into());
        obj.insert("level".into(), "WARN".into());
        obj.insert("message".into(), "SECURITY EVENT".into());
        obj.insert("type".into(), self.event_type.as_str().into());
        obj.insert("severity".into(), self.severity.as_str().into());
        obj.insert("ip".into(), self.ip.clone().into());
        obj.insert("method".into(), self.method.clone().into());
        obj.insert("url".into(), self.url.clone().into());
        obj.insert("request_id".into(), self.request_id.clone().into());
        if let Some(u) = &self.user_id {
            obj.insert("user_id".into(), u.clone().into());
        }
        if let Some(o) = &self.organization_id {
            obj.insert("organization_id".into(), o.clone().into());
        }
        for (k, v) in &self.details {
            obj.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(obj).to_string()
    }
}

/// Where security log lines go.
pub type LogSink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Writes and stores security events, and publishes HIGH and CRITICAL
/// ones to live subscribers (the admin event stream) and, when configured,
/// to the alert webhook.
#[derive(Clone)]
pub struct SecurityLog {
    db: Db,
    sink: LogSink,
    live: tokio::sync::broadcast::Sender<StoredEvent>,
    alerts: Option<AlertSender>,
    fanout: Option<Fanout>,
    metrics: Arc<Metrics>,
}

impl SecurityLog {
    /// A log writing lines to `sink` and storing events in `db`.
    pub fn new(db: Db, sink: LogSink) -> Self {
        let (live, _) = tokio::sync::broadcast::channel(256);
        SecurityLog {
            db,
            sink,
            live,
            alerts: None,
            fanout: None,
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The metrics this log counts its events in (the server's metrics).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Also offer each recorded event to the alert webhook, which keeps
    /// those at or above its minimum severity.
    pub fn with_alerts(mut self, alerts: AlertSender) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Also publish HIGH and CRITICAL events to the other instances, and
    /// receive theirs (see [`crate::security::fanout`]).
    pub fn with_fanout(mut self, fanout: Fanout) -> Self {
        self.fanout = Some(fanout);
        self
    }

    /// The sender live subscribers listen to, for events that arrive from
    /// other instances.
    pub fn live_sender(&self) -> tokio::sync::broadcast::Sender<StoredEvent> {
        self.live.clone()
    }

    /// Receive HIGH and CRITICAL events as they are recorded (with Redis,
    /// those of every instance).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoredEvent> {
        self.live.subscribe()
    }

    /// A sink writing to standard output.
    pub fn stdout_sink() -> LogSink {
        Arc::new(Mutex::new(Box::new(std::io::stdout())))
    }

    /// Write and store one event. A storage failure is logged; it never
    /// fails the request that raised the event.
    pub async fn record(&self, event: SecurityEvent) {
        let now = store::now_ms();
        let timestamp = rfc3339_ms(now);
        let line = event.to_log_line(&timestamp);
        self.metrics
            .security_event(event.event_type.as_str(), event.severity.as_str());
        if let Ok(mut sink) = self.sink.lock() {
            let _ = writeln!(sink, "{line}");
            let _ = sink.flush();
        }
        let stored = StoredEvent {
            id: store::new_id(),
            organization_id: event.organization_id.clone(),
            event_type: event.event_type.as_str().to_string(),
            severity: event.severity.as_str().to_string(),
            ip: event.ip.clone(),
            method: event.method.clone(),
            url: event.url.clone(),
            request_id: event.request_id.clone(),
            user_id: event.user_id.clone(),
            details: Value::Object(event.details.clone()).to_string(),
            created_at: now,
        };
        if let Err(err) = store::events::insert(&self.db, &stored).await {
            tracing::error!(error = %err, event = event.event_type.as_str(), "could not store security event");
        }
        if let Some(alerts) = &self.alerts {
            alerts.offer(&stored, event.severity);
        }
        if event.severity >= Severity::High {
            if let Some(fanout) = &self.fanout {
                fanout.publish(&stored);
            }
            // No subscribers is normal; a send error only means that.
            let _ = self.live.send(stored);
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339_ms(unix_ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&f).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_line_escapes_control_characters() {
        let meta = RequestMeta {
            ip: "127.0.0.1".parse().unwrap(),
            method: "GET".into(),
            url: "/x\n{\"type\":\"FORGED\"}".into(),
            request_id: "r1".into(),
            user_agent: String::new(),
        };
        let line = SecurityEvent::new(EventType::AuthFailure, Severity::Medium, &meta)
            .with("reason", "bad\r\npassword")
            .to_log_line("2026-01-01T00:00:00.000Z");
        assert!(!line.contains('\n') && !line.contains('\r'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["message"], "SECURITY EVENT");
        assert_eq!(v["type"], "AUTH_FAILURE");
        assert_eq!(v["severity"], "MEDIUM");
    }

    #[test]
    fn timestamps_have_milliseconds() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
