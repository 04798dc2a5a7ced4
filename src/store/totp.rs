//! Second-factor enrolments and recovery codes. The TOTP secret is stored
//! sealed with `data_key`; recovery codes only as hashes.

use sqlx::FromRow;

use super::{new_id, now_ms, Db, OrgId};

/// A TOTP enrolment as stored.
#[derive(Debug, Clone, FromRow)]
pub struct Enrolment {
    /// User.
    pub user_id: String,
    /// Organization.
    pub organization_id: String,
    /// The secret, sealed with `data_key`.
    pub secret_sealed: String,
    /// Set once the user proved possession with a first code.
    pub confirmed_at: Option<i64>,
    /// Last accepted time step (replay guard).
    pub last_used_step: Option<i64>,
    /// Creation time, unix ms.
    pub created_at: i64,
}

/// Fetch a user's enrolment.
pub async fn get(db: &Db, org: &OrgId, user_id: &str) -> sqlx::Result<Option<Enrolment>> {
    sqlx::query_as("SELECT * FROM totp_enrolments WHERE organization_id = $1 AND user_id = $2")
        .bind(&org.0)
        .bind(user_id)
        .fetch_optional(&db.pool)
        .await
}

/// Start (or restart) an unconfirmed enrolment. A confirmed one is kept:
/// returns false then.
pub async fn begin(db: &Db, org: &OrgId, user_id: &str, sealed: &str) -> sqlx::Result<bool> {
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "DELETE FROM totp_enrolments \
         WHERE organization_id = $1 AND user_id = $2 AND confirmed_at IS NULL",
    )
    .bind(&org.0)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    let r = sqlx::query(
        "INSERT INTO totp_enrolments (user_id, organization_id, secret_sealed, confirmed_at, \
         last_used_step, created_at) VALUES ($1, $2, $3, NULL, NULL, $4) \
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(&org.0)
    .bind(sealed)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected() == 1)
}

/// Record a used step, only if it is newer than the last one (atomic replay
/// guard). Returns false when the step was already used.
pub async fn use_step(db: &Db, org: &OrgId, user_id: &str, step: i64) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE totp_enrolments SET last_used_step = $1 \
         WHERE organization_id = $2 AND user_id = $3 \
         AND (last_used_step IS NULL OR last_used_step < $1)",
    )
    .bind(step)
    .bind(&org.0)
    .bind(user_id)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Confirm an unconfirmed enrolment and replace the recovery codes;
/// false (and nothing changed) when it was confirmed meanwhile, so two
/// racing confirmations cannot both succeed.
pub async fn confirm(
    db: &Db,
    org: &OrgId,
    user_id: &str,
    code_hashes: &[String],
) -> sqlx::Result<bool> {
    let mut tx = db.pool.begin().await?;
    let confirmed = sqlx::query(
        "UPDATE totp_enrolments SET confirmed_at = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND confirmed_at IS NULL",
    )
    .bind(now_ms())
    .bind(&org.0)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    if confirmed.rows_affected() != 1 {
        return Ok(false);
    }
    sqlx::query("DELETE FROM recovery_codes WHERE organization_id = $1 AND user_id = $2")
        .bind(&org.0)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    for hash in code_hashes {
        sqlx::query(
            "INSERT INTO recovery_codes (id, organization_id, user_id, code_hash, used_at) \
             VALUES ($1, $2, $3, $4, NULL)",
        )
        .bind(new_id())
        .bind(&org.0)
        .bind(user_id)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// Remove the enrolment and recovery codes.
pub async fn remove(db: &Db, org: &OrgId, user_id: &str) -> sqlx::Result<()> {
    let mut tx = db.pool.begin().await?;
    sqlx::query("DELETE FROM recovery_codes WHERE organization_id = $1 AND user_id = $2")
        .bind(&org.0)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM totp_enrolments WHERE organization_id = $1 AND user_id = $2")
        .bind(&org.0)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// Use a recovery code once: true when an unused code with this hash
/// existed and is now spent.
pub async fn use_recovery_code(
    db: &Db,
    org: &OrgId,
    user_id: &str,
    code_hash: &str,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE recovery_codes SET used_at = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND code_hash = $4 AND used_at IS NULL",
    )
    .bind(now_ms())
    .bind(&org.0)
    .bind(user_id)
    .bind(code_hash)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() > 0)
}
