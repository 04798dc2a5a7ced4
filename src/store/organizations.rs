//! Organizations: the unit of tenancy.

use sqlx::FromRow;

use super::{new_id, now_ms, Db, OrgId};

/// An organization as stored.
#[derive(Debug, Clone, FromRow)]
pub struct Organization {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// 1 when supervisors and admins must use a second factor.
    pub require_totp_privileged: i64,
    /// 1 for the organization created by `serve --demo`.
    pub is_demo: i64,
    /// Creation time, unix ms.
    pub created_at: i64,
}

impl Organization {
    /// Typed id for scoped queries.
    pub fn org_id(&self) -> OrgId {
        OrgId(self.id.clone())
    }
}

/// Create an organization.
pub async fn create(db: &Db, name: &str, is_demo: bool) -> sqlx::Result<Organization> {
    let org = Organization {
        id: new_id(),
        name: name.to_string(),
        require_totp_privileged: 0,
        is_demo: i64::from(is_demo),
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO organizations (id, name, require_totp_privileged, is_demo, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&org.id)
    .bind(&org.name)
    .bind(org.require_totp_privileged)
    .bind(org.is_demo)
    .bind(org.created_at)
    .execute(&db.pool)
    .await?;
    Ok(org)
}

/// Fetch an organization by id.
pub async fn get(db: &Db, org: &OrgId) -> sqlx::Result<Option<Organization>> {
    sqlx::query_as("SELECT * FROM organizations WHERE id = $1")
        .bind(&org.0)
        .fetch_optional(&db.pool)
        .await
}

/// Turn the second-factor requirement for supervisors and admins on or off.
pub async fn set_require_totp(db: &Db, org: &OrgId, required: bool) -> sqlx::Result<()> {
    sqlx::query("UPDATE organizations SET require_totp_privileged = $1 WHERE id = $2")
        .bind(i64::from(required))
        .bind(&org.0)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Whether any demo organization or demo user exists (production refuses
/// to start then).
pub async fn demo_data_exists(db: &Db) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM organizations WHERE is_demo <> 0) \
              + (SELECT COUNT(*) FROM users WHERE is_demo <> 0)",
    )
    .fetch_one(&db.pool)
    .await?;
    Ok(n > 0)
}
