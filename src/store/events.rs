//! Stored security events.

use sqlx::FromRow;

use super::{Cursor, Db};

/// A security event as stored.
#[derive(Debug, Clone, FromRow, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    /// Id.
    pub id: String,
    /// Organization, when the event concerns one.
    pub organization_id: Option<String>,
    /// Event type, e.g. `AUTH_FAILURE`.
    pub event_type: String,
    /// `LOW`, `MEDIUM`, `HIGH` or `CRITICAL`.
    pub severity: String,
    /// Client address.
    pub ip: String,
    /// HTTP method.
    pub method: String,
    /// Request path and query.
    pub url: String,
    /// Request id.
    pub request_id: String,
    /// User, when known.
    pub user_id: Option<String>,
    /// Type-specific fields, JSON.
    pub details: String,
    /// Time, unix ms.
    pub created_at: i64,
}

/// Store an event.
pub async fn insert(db: &Db, e: &StoredEvent) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO security_events (id, organization_id, event_type, severity, ip, method, \
         url, request_id, user_id, details, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&e.id)
    .bind(&e.organization_id)
    .bind(&e.event_type)
    .bind(&e.severity)
    .bind(&e.ip)
    .bind(&e.method)
    .bind(&e.url)
    .bind(&e.request_id)
    .bind(&e.user_id)
    .bind(&e.details)
    .bind(e.created_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Filters for listing events; empty strings and `None` mean "any".
#[derive(Debug, Default)]
pub struct EventFilter<'a> {
    /// Only this organization's events; `None` for every event.
    pub organization_id: Option<&'a str>,
    /// Only this type.
    pub event_type: Option<&'a str>,
    /// Only these severities (e.g. `["HIGH", "CRITICAL"]`).
    pub severities: &'a [&'a str],
    /// Only from this client address.
    pub ip: Option<&'a str>,
    /// Only at or after this time, unix ms.
    pub since: Option<i64>,
}

/// Newest events first, filtered, continuing before `before`.
pub async fn search(
    db: &Db,
    f: &EventFilter<'_>,
    before: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    let (t, id) = before
        .map(|c| (c.created_at, c.id.clone()))
        .unwrap_or((i64::MAX, String::new()));
    let sev = |i: usize| f.severities.get(i).copied().unwrap_or("");
    sqlx::query_as(
        "SELECT * FROM security_events WHERE ($1 = '' OR organization_id = $1) \
         AND ($2 = '' OR event_type = $2) \
         AND ($3 = '' OR severity IN ($3, $4, $5, $6)) \
         AND ($7 = '' OR ip = $7) AND created_at >= $8 \
         AND (created_at < $9 OR (created_at = $9 AND id < $10) OR $10 = '') \
         ORDER BY created_at DESC, id DESC LIMIT $11",
    )
    .bind(f.organization_id.unwrap_or(""))
    .bind(f.event_type.unwrap_or(""))
    .bind(sev(0))
    .bind(sev(1))
    .bind(sev(2))
    .bind(sev(3))
    .bind(f.ip.unwrap_or(""))
    .bind(f.since.unwrap_or(i64::MIN))
    .bind(t)
    .bind(id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// Newest events first, optionally of one type.
pub async fn list(
    db: &Db,
    event_type: Option<&str>,
    before: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<StoredEvent>> {
    let (t, id) = before
        .map(|c| (c.created_at, c.id.clone()))
        .unwrap_or((i64::MAX, String::new()));
    sqlx::query_as(
        "SELECT * FROM security_events WHERE ($1 = '' OR event_type = $1) \
         AND (created_at < $2 OR (created_at = $2 AND id < $3) OR $3 = '') \
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(event_type.unwrap_or(""))
    .bind(t)
    .bind(id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}
