//! WebSocket tickets: single-use, short-lived credentials for one upgrade
//! of `GET /api/ws`, stored only as SHA-256 hashes. Using a ticket deletes
//! its row in the same statement that reads it, so a ticket works once even
//! when several instances share the database.

use sqlx::FromRow;

use super::{now_ms, Db, OrgId};

/// A ticket as stored.
#[derive(Debug, Clone, FromRow)]
pub struct WsTicket {
    /// SHA-256 hex of the ticket.
    pub ticket_hash: String,
    /// Organization of the user.
    pub organization_id: String,
    /// User the ticket was issued to.
    pub user_id: String,
    /// Session the ticket was issued from; it must still be live at use.
    pub session_id: String,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Expiry, unix ms.
    pub expires_at: i64,
}

/// Fields of a new ticket.
pub struct NewWsTicket<'a> {
    /// Organization.
    pub org: &'a OrgId,
    /// User.
    pub user_id: &'a str,
    /// Session.
    pub session_id: &'a str,
    /// SHA-256 hex of the ticket.
    pub ticket_hash: &'a str,
    /// Expiry, unix ms.
    pub expires_at: i64,
}

/// Store a new ticket hash.
pub async fn create(db: &Db, new: NewWsTicket<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ws_tickets (ticket_hash, organization_id, user_id, session_id, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new.ticket_hash)
    .bind(&new.org.0)
    .bind(new.user_id)
    .bind(new.session_id)
    .bind(now_ms())
    .bind(new.expires_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Spend a ticket: delete it and return what it was, expired or not (the
/// caller tells an expired ticket from a live one). `None` when no such
/// ticket exists, including one already spent.
pub async fn consume(db: &Db, ticket_hash: &str) -> sqlx::Result<Option<WsTicket>> {
    sqlx::query_as("DELETE FROM ws_tickets WHERE ticket_hash = $1 RETURNING *")
        .bind(ticket_hash)
        .fetch_optional(&db.pool)
        .await
}

/// Delete every ticket that expired before `now`; returns how many.
pub async fn purge_expired(db: &Db, now: i64) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM ws_tickets WHERE expires_at <= $1")
        .bind(now)
        .execute(&db.pool)
        .await?;
    Ok(r.rows_affected())
}
