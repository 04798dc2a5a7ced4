//! Sessions (one per sign-in, browser or token) and their refresh-token
//! families. Revoking a session stops its access tokens, its cookie and its
//! refresh family.

use sqlx::FromRow;

use super::{new_id, now_ms, Db, OrgId};

/// A sign-in session as stored.
#[derive(Debug, Clone, FromRow)]
pub struct Session {
    /// Id (the `sid` claim of access tokens).
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// User.
    pub user_id: String,
    /// `token` (API clients) or `browser` (cookie).
    pub kind: String,
    /// Role at sign-in (a role change revokes the user's sessions).
    pub role: String,
    /// 1 while the user must still enrol a second factor: only enrolment
    /// endpoints are allowed.
    pub restricted: i64,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Last use, unix ms (browser idle timeout).
    pub last_seen_at: i64,
    /// Hard end, unix ms.
    pub absolute_expires_at: i64,
    /// Revocation time, unix ms.
    pub revoked_at: Option<i64>,
    /// Address the session was created from.
    pub ip: String,
    /// User agent the session was created with.
    pub user_agent: String,
}

/// Fields of a new session.
pub struct NewSession<'a> {
    /// Organization.
    pub org: &'a OrgId,
    /// User.
    pub user_id: &'a str,
    /// `token` or `browser`.
    pub kind: &'a str,
    /// Role at sign-in.
    pub role: &'a str,
    /// Second-factor enrolment still required.
    pub restricted: bool,
    /// Absolute lifetime, ms.
    pub lifetime_ms: i64,
    /// Client address.
    pub ip: &'a str,
    /// Client user agent (truncated by the caller).
    pub user_agent: &'a str,
}

/// Create a session.
pub async fn create(db: &Db, new: NewSession<'_>) -> sqlx::Result<Session> {
    let now = now_ms();
    let s = Session {
        id: new_id(),
        organization_id: new.org.0.clone(),
        user_id: new.user_id.to_string(),
        kind: new.kind.to_string(),
        role: new.role.to_string(),
        restricted: i64::from(new.restricted),
        created_at: now,
        last_seen_at: now,
        absolute_expires_at: now + new.lifetime_ms,
        revoked_at: None,
        ip: new.ip.to_string(),
        user_agent: new.user_agent.to_string(),
    };
    sqlx::query(
        "INSERT INTO sessions (id, organization_id, user_id, kind, role, restricted, \
         created_at, last_seen_at, absolute_expires_at, revoked_at, ip, user_agent) \
         VALUES ($1, $2, $3, $4, $10, $5, $6, $6, $7, NULL, $8, $9)",
    )
    .bind(&s.id)
    .bind(&s.organization_id)
    .bind(&s.user_id)
    .bind(&s.kind)
    .bind(s.restricted)
    .bind(now)
    .bind(s.absolute_expires_at)
    .bind(&s.ip)
    .bind(&s.user_agent)
    .bind(&s.role)
    .execute(&db.pool)
    .await?;
    Ok(s)
}

/// Fetch a session of an organization.
pub async fn get(db: &Db, org: &OrgId, id: &str) -> sqlx::Result<Option<Session>> {
    sqlx::query_as("SELECT * FROM sessions WHERE organization_id = $1 AND id = $2")
        .bind(&org.0)
        .bind(id)
        .fetch_optional(&db.pool)
        .await
}

/// Fetch a session by id alone (browser cookies carry only the id; the
/// organization comes from the row).
pub async fn get_unscoped(db: &Db, id: &str) -> sqlx::Result<Option<Session>> {
    sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await
}

/// Record activity on a session.
pub async fn touch(db: &Db, org: &OrgId, id: &str, now: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE organization_id = $2 AND id = $3")
        .bind(now)
        .bind(&org.0)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Revoke one session and its refresh family.
pub async fn revoke(db: &Db, org: &OrgId, id: &str) -> sqlx::Result<()> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "UPDATE sessions SET revoked_at = $1 \
         WHERE organization_id = $2 AND id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&org.0)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 \
         WHERE organization_id = $2 AND session_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&org.0)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Revoke every session and refresh family of a user; returns how many
/// sessions were live.
pub async fn revoke_all_for_user(db: &Db, org: &OrgId, user_id: &str) -> sqlx::Result<u64> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let r = sqlx::query(
        "UPDATE sessions SET revoked_at = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&org.0)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 \
         WHERE organization_id = $2 AND user_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&org.0)
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(r.rows_affected())
}

/// Limit to second-factor enrolment every live session of a supervisor or
/// admin of `org` who has no confirmed second factor (used when the
/// organization starts requiring one, so sessions opened before the policy
/// cannot keep full access). Returns how many sessions were limited.
pub async fn restrict_unenrolled_privileged(db: &Db, org: &OrgId) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE sessions SET restricted = 1 \
         WHERE organization_id = $1 AND revoked_at IS NULL AND restricted = 0 \
         AND role IN ('supervisor', 'admin') \
         AND user_id NOT IN (SELECT user_id FROM totp_enrolments \
             WHERE organization_id = $1 AND confirmed_at IS NOT NULL)",
    )
    .bind(&org.0)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected())
}

/// A refresh token as stored (the token itself only as a SHA-256 hash).
#[derive(Debug, Clone, FromRow)]
pub struct RefreshToken {
    /// Id.
    pub id: String,
    /// Family: all tokens descending from one sign-in.
    pub family_id: String,
    /// Session the family belongs to.
    pub session_id: String,
    /// Organization.
    pub organization_id: String,
    /// User.
    pub user_id: String,
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Idle expiry of this token, unix ms.
    pub expires_at: i64,
    /// Absolute expiry of the family, unix ms.
    pub family_expires_at: i64,
    /// Set when the token was exchanged for a new one.
    pub retired_at: Option<i64>,
    /// Set when the family was revoked.
    pub revoked_at: Option<i64>,
}

/// Fields of a new refresh token.
pub struct NewRefresh<'a> {
    /// Family id (new for a sign-in, inherited on rotation).
    pub family_id: &'a str,
    /// Session.
    pub session_id: &'a str,
    /// Organization.
    pub org: &'a OrgId,
    /// User.
    pub user_id: &'a str,
    /// SHA-256 hex of the token.
    pub token_hash: &'a str,
    /// Idle expiry, unix ms.
    pub expires_at: i64,
    /// Family absolute expiry, unix ms.
    pub family_expires_at: i64,
}

async fn insert_refresh<'e, E>(exec: E, new: &NewRefresh<'_>) -> sqlx::Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, session_id, organization_id, user_id, \
         token_hash, created_at, expires_at, family_expires_at, retired_at, revoked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)",
    )
    .bind(new_id())
    .bind(new.family_id)
    .bind(new.session_id)
    .bind(&new.org.0)
    .bind(new.user_id)
    .bind(new.token_hash)
    .bind(now_ms())
    .bind(new.expires_at)
    .bind(new.family_expires_at)
    .execute(exec)
    .await?;
    Ok(())
}

/// Store the first token of a family.
pub async fn create_refresh(db: &Db, new: NewRefresh<'_>) -> sqlx::Result<()> {
    insert_refresh(&db.pool, &new).await
}

/// Find a refresh token by its hash (the presenter knows only the token).
pub async fn find_refresh(db: &Db, token_hash: &str) -> sqlx::Result<Option<RefreshToken>> {
    sqlx::query_as("SELECT * FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(&db.pool)
        .await
}

/// Retire `old` and store its successor, atomically. Returns false when
/// `old` was already retired or revoked (a concurrent or repeated use).
pub async fn rotate_refresh(
    db: &Db,
    old: &RefreshToken,
    new: NewRefresh<'_>,
) -> sqlx::Result<bool> {
    let mut tx = db.pool.begin().await?;
    let r = sqlx::query(
        "UPDATE refresh_tokens SET retired_at = $1 \
         WHERE id = $2 AND organization_id = $3 AND retired_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now_ms())
    .bind(&old.id)
    .bind(&old.organization_id)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    insert_refresh(&mut *tx, &new).await?;
    tx.commit().await?;
    Ok(true)
}

/// Revoke a whole family and the session it belongs to.
pub async fn revoke_family(db: &Db, token: &RefreshToken) -> sqlx::Result<()> {
    let org = OrgId(token.organization_id.clone());
    let now = now_ms();
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 \
         WHERE organization_id = $2 AND family_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&org.0)
    .bind(&token.family_id)
    .execute(&db.pool)
    .await?;
    revoke(db, &org, &token.session_id).await
}
