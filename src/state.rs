//! The state shared by every request.

use std::sync::Arc;

use ipnet::IpNet;

use crate::audit::AuditEvent;
use crate::config::Settings;
use crate::http::request::RequestMeta;
use crate::keys::KeyStore;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::secrets::Secrets;
use crate::security::blocklist::Blocklist;
use crate::security::events::SecurityLog;
use crate::security::outbound::OutboundClient;
use crate::security::password::PasswordHasher;
use crate::security::ratelimit::{Clock, Limiter};
use crate::security::tokens::Expectations;
use crate::shutdown::Shutdown;
use crate::store::Db;

/// Cheap-to-clone handle on everything a handler needs.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// The contents of [`AppState`].
pub struct Inner {
    /// Validated settings.
    pub settings: Settings,
    /// Loaded secrets.
    pub secrets: Secrets,
    /// Database.
    pub db: Db,
    /// Token, session and CSRF keys; swapped as a whole on SIGHUP.
    pub keys: KeyStore,
    /// Password hashing on the blocking pool.
    pub hasher: PasswordHasher,
    /// Security event writer.
    pub security: SecurityLog,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// Parsed trusted proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// What access tokens must say about themselves.
    pub token_expectations: Expectations,
    /// Rate limiter (Redis-backed when `redis_url` is set).
    pub limiter: Limiter,
    /// Time source of the rate limiter and blocklist (a manual clock in
    /// tests).
    pub clock: Arc<dyn Clock>,
    /// Addresses blocked by intrusion detection.
    pub blocklist: Blocklist,
    /// The one client for requests to other servers, guarded against
    /// reaching internal addresses.
    pub outbound: OutboundClient,
    /// Tells WebSockets and event streams that the server is stopping.
    pub shutdown: Shutdown,
    /// Request and security-event counts for `GET /metrics`.
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// Wrap the parts.
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }

    /// Append an audit entry for an action taken in the request `meta`.
    pub async fn audit(
        &self,
        meta: &RequestMeta,
        event: AuditEvent,
    ) -> Result<(), crate::error::ApiError> {
        crate::audit::record(&self.db, &self.secrets.audit_key, Some(meta), event)
            .await
            .map_err(crate::error::ApiError::Internal)
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
