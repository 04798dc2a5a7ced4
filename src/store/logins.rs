//! Failed sign-ins per e-mail address (hashed), for known and unknown
//! addresses alike.

use super::Db;

/// Failures older than this are forgotten.
pub const FORGET_AFTER_MS: i64 = 24 * 3600 * 1000;

/// Until when sign-ins for this address are delayed, if they are.
pub async fn locked_until(db: &Db, email_hash: &str, now: i64) -> sqlx::Result<Option<i64>> {
    let until: Option<Option<i64>> =
        sqlx::query_scalar("SELECT locked_until FROM login_failures WHERE email_hash = $1")
            .bind(email_hash)
            .fetch_optional(&db.pool)
            .await?;
    Ok(until.flatten().filter(|u| *u > now))
}

/// Count one failure; returns the number of failures in the current run
/// (a run is forgotten a day after its last failure).
pub async fn record_failure(db: &Db, email_hash: &str, now: i64) -> sqlx::Result<i64> {
    if rand::random::<u8>() < 3 {
        prune(db, now).await?;
    }
    sqlx::query_scalar(
        "INSERT INTO login_failures (email_hash, failures, locked_until, updated_at) \
         VALUES ($1, 1, NULL, $2) \
         ON CONFLICT (email_hash) DO UPDATE SET \
         failures = CASE WHEN login_failures.updated_at < $3 THEN 1 \
                         ELSE login_failures.failures + 1 END, \
         updated_at = $2 \
         RETURNING failures",
    )
    .bind(email_hash)
    .bind(now)
    .bind(now - FORGET_AFTER_MS)
    .fetch_one(&db.pool)
    .await
}

/// Delay sign-ins for this address until `until` (unix ms).
pub async fn lock_until(db: &Db, email_hash: &str, until: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE login_failures SET locked_until = $1 WHERE email_hash = $2")
        .bind(until)
        .bind(email_hash)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Forget the failures of an address (after a success or a reset).
pub async fn clear(db: &Db, email_hash: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE email_hash = $1")
        .bind(email_hash)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Drop runs that ended more than a day ago.
async fn prune(db: &Db, now: i64) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM login_failures WHERE updated_at < $1 \
         AND (locked_until IS NULL OR locked_until < $2)",
    )
    .bind(now - FORGET_AFTER_MS)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(())
}
