//! Users: the people who sign in. E-mail is the login and is unique across
//! the deployment; everything else is scoped by organization.

use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;

use super::{new_id, now_ms, Cursor, Db, OrgId};

/// The three roles of an organization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Handles calls; sees only their own.
    Agent,
    /// Watches and coaches agents.
    Supervisor,
    /// Administers the organization.
    Admin,
}

impl Role {
    /// Stored and wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// Supervisors and admins.
    pub fn is_privileged(self) -> bool {
        matches!(self, Role::Supervisor | Role::Admin)
    }
}

/// A user as stored.
#[derive(Clone, FromRow)]
pub struct User {
    /// Id.
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// Lower-cased e-mail address.
    pub email: String,
    /// Name shown in the console.
    pub display_name: String,
    /// `agent`, `supervisor` or `admin`.
    pub role: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// 1 for demo accounts.
    pub is_demo: i64,
    /// Unused since migration 0003 (failures are counted per address in
    /// `login_failures`); kept so old rows still load.
    pub failed_logins: i64,
    /// Unused since migration 0003; see `failed_logins`.
    pub locked_until: Option<i64>,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// Last change, unix ms.
    pub updated_at: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The user's role (unknown spellings cannot be stored: a CHECK forbids them).
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Agent)
    }

    /// Typed organization id.
    pub fn org_id(&self) -> OrgId {
        OrgId(self.organization_id.clone())
    }
}

/// Fields of a new user.
pub struct NewUser<'a> {
    /// Organization.
    pub org: &'a OrgId,
    /// E-mail (lower-cased by the caller).
    pub email: &'a str,
    /// Display name.
    pub display_name: &'a str,
    /// Role.
    pub role: Role,
    /// Argon2id PHC string.
    pub password_hash: &'a str,
    /// Demo account.
    pub is_demo: bool,
}

/// Insert a user. A duplicate e-mail is a unique violation.
pub async fn create(db: &Db, new: NewUser<'_>) -> sqlx::Result<User> {
    let now = now_ms();
    let user = User {
        id: new_id(),
        organization_id: new.org.0.clone(),
        email: new.email.to_string(),
        display_name: new.display_name.to_string(),
        role: new.role.as_str().to_string(),
        password_hash: new.password_hash.to_string(),
        is_demo: i64::from(new.is_demo),
        failed_logins: 0,
        locked_until: None,
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO users (id, organization_id, email, display_name, role, password_hash, \
         is_demo, failed_logins, locked_until, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, NULL, $8, $8)",
    )
    .bind(&user.id)
    .bind(&user.organization_id)
    .bind(&user.email)
    .bind(&user.display_name)
    .bind(&user.role)
    .bind(&user.password_hash)
    .bind(user.is_demo)
    .bind(now)
    .execute(&db.pool)
    .await?;
    Ok(user)
}

/// Find a user by login e-mail (the only unscoped lookup: sign-in does not
/// know the organization yet).
pub async fn find_by_email(db: &Db, email: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as("SELECT * FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(&db.pool)
        .await
}

/// Fetch a user of an organization.
pub async fn get(db: &Db, org: &OrgId, id: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as("SELECT * FROM users WHERE organization_id = $1 AND id = $2")
        .bind(&org.0)
        .bind(id)
        .fetch_optional(&db.pool)
        .await
}

/// A page of an organization's users, oldest first.
pub async fn list(
    db: &Db,
    org: &OrgId,
    after: Option<&Cursor>,
    limit: i64,
) -> sqlx::Result<Vec<User>> {
    let (t, id) = after
        .map(|c| (c.created_at, c.id.clone()))
        .unwrap_or((i64::MIN, String::new()));
    sqlx::query_as(
        "SELECT * FROM users WHERE organization_id = $1 \
         AND (created_at > $2 OR (created_at = $2 AND id > $3)) \
         ORDER BY created_at, id LIMIT $4",
    )
    .bind(&org.0)
    .bind(t)
    .bind(id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// Replace the password hash and clear the failure count.
pub async fn set_password(db: &Db, org: &OrgId, id: &str, phc: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL, \
         updated_at = $2 WHERE organization_id = $3 AND id = $4",
    )
    .bind(phc)
    .bind(now_ms())
    .bind(&org.0)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Change a user's role.
pub async fn set_role(db: &Db, org: &OrgId, id: &str, role: Role) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE users SET role = $1, updated_at = $2 WHERE organization_id = $3 AND id = $4",
    )
    .bind(role.as_str())
    .bind(now_ms())
    .bind(&org.0)
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() > 0)
}
