//! The append-only audit log table and its head row.

use sqlx::FromRow;

use super::{Cursor, Db, OrgId};

/// An audit entry as stored.
#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct AuditRow {
    /// Position in the chain, from 1 without gaps.
    pub seq: i64,
    /// Id.
    pub id: String,
    /// Organization concerned, if any.
    pub organization_id: Option<String>,
    /// `user`, `cli` or `system`.
    pub actor_type: String,
    /// Acting user, when a user acted.
    pub actor_id: Option<String>,
    /// What happened, e.g. `auth.login`.
    pub action: String,
    /// Kind of object acted on, e.g. `user`.
    pub object_type: String,
    /// Object acted on.
    pub object_id: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Client address (or `cli`).
    pub ip: String,
    /// Request id (empty outside requests).
    pub request_id: String,
    /// Extra fields, JSON.
    pub details: String,
    /// Time, unix ms.
    pub created_at: i64,
    /// Which audit key made the MAC.
    pub key_id: String,
    /// MAC of the previous entry (empty for the first).
    pub prev_mac: String,
    /// HMAC-SHA256 over this entry and `prev_mac`, hex.
    pub mac: String,
}

/// Append one entry. `make` receives the sequence number and the previous
/// MAC and returns the complete row; the head row is locked meanwhile so
/// appends from several instances form one chain.
pub async fn append(db: &Db, make: impl FnOnce(i64, &str) -> AuditRow) -> sqlx::Result<AuditRow> {
    let mut tx = db.pool.begin().await?;
    let (seq, prev_mac): (i64, String) =
        sqlx::query_as("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, mac")
            .fetch_one(&mut *tx)
            .await?;
    let row = make(seq, &prev_mac);
    sqlx::query(
        "INSERT INTO audit_log (seq, id, organization_id, actor_type, actor_id, action, \
         object_type, object_id, outcome, ip, request_id, details, created_at, key_id, \
         prev_mac, mac) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(row.seq)
    .bind(&row.id)
    .bind(&row.organization_id)
    .bind(&row.actor_type)
    .bind(&row.actor_id)
    .bind(&row.action)
    .bind(&row.object_type)
    .bind(&row.object_id)
    .bind(&row.outcome)
    .bind(&row.ip)
    .bind(&row.request_id)
    .bind(&row.details)
    .bind(row.created_at)
    .bind(&row.key_id)
    .bind(&row.prev_mac)
    .bind(&row.mac)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_head SET mac = $1 WHERE id = 1")
        .bind(&row.mac)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// The head: last sequence number and MAC.
pub async fn head(db: &Db) -> sqlx::Result<(i64, String)> {
    sqlx::query_as("SELECT seq, mac FROM audit_head WHERE id = 1")
        .fetch_one(&db.pool)
        .await
}

/// Entries with `seq > after`, in order, at most `limit` (for walking the
/// whole chain page by page).
pub async fn after(db: &Db, after: i64, limit: i64) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after)
        .bind(limit)
        .fetch_all(&db.pool)
        .await
}

/// An organization's entries, newest first; with `deployment_wide`, also
/// the entries tied to no organization (key rotations and other actions
/// of the deployment itself).
pub async fn list(
    db: &Db,
    org: &OrgId,
    deployment_wide: bool,
    action: Option<&str>,
    before: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    let before_seq = before.map(|c| c.created_at).unwrap_or(i64::MAX);
    sqlx::query_as(
        "SELECT * FROM audit_log \
         WHERE (organization_id = $1 OR ($5 = 1 AND organization_id IS NULL)) \
         AND ($2 = '' OR action = $2) AND seq < $3 ORDER BY seq DESC LIMIT $4",
    )
    .bind(&org.0)
    .bind(action.unwrap_or(""))
    .bind(before_seq)
    .bind(limit)
    .bind(i64::from(deployment_wide))
    .fetch_all(&db.pool)
    .await
}
