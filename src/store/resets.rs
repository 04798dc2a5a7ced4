//! Password-reset tokens: single use, short-lived, stored only as hashes.

use sqlx::FromRow;

use super::{new_id, now_ms, Db, OrgId};

/// A reset token as stored.
#[derive(Debug, Clone, FromRow)]
pub struct PasswordReset {
    /// Id.
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// User whose password may be reset.
    pub user_id: String,
    /// SHA-256 hex of the token.
    pub token_hash: String,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Expiry, unix ms.
    pub expires_at: i64,
    /// Set once used.
    pub used_at: Option<i64>,
}

/// Store a new reset token hash.
pub async fn create(
    db: &Db,
    org: &OrgId,
    user_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO password_resets (id, organization_id, user_id, token_hash, created_at, \
         expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
    )
    .bind(new_id())
    .bind(&org.0)
    .bind(user_id)
    .bind(token_hash)
    .bind(now_ms())
    .bind(expires_at)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Consume a token: marks it used and returns it when it was unused and
/// unexpired; `None` otherwise. Atomic, so a token works exactly once.
pub async fn consume(db: &Db, token_hash: &str, now: i64) -> sqlx::Result<Option<PasswordReset>> {
    sqlx::query_as(
        "UPDATE password_resets SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING *",
    )
    .bind(now)
    .bind(token_hash)
    .fetch_optional(&db.pool)
    .await
}

/// Look at an unused, unexpired token without spending it.
pub async fn peek(db: &Db, token_hash: &str, now: i64) -> sqlx::Result<Option<PasswordReset>> {
    sqlx::query_as(
        "SELECT * FROM password_resets WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(&db.pool)
    .await
}

/// Spend every unused token of a user (after a reset or a password change,
/// so an older reset mail cannot be used later).
pub async fn revoke_all_for_user(
    db: &Db,
    org: &OrgId,
    user_id: &str,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE password_resets SET used_at = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(&org.0)
    .bind(user_id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// How many reset tokens were made for a user since `since` (unix ms).
pub async fn count_since(db: &Db, org: &OrgId, user_id: &str, since: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM password_resets \
         WHERE organization_id = $1 AND user_id = $2 AND created_at >= $3",
    )
    .bind(&org.0)
    .bind(user_id)
    .bind(since)
    .fetch_one(&db.pool)
    .await
}
