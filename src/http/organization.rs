//! `/api/organization`: the caller's organization and its security policy.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::AuditEvent;
use crate::error::{ApiError, ApiResult, Problem};
use crate::http::json::ApiJson;
use crate::http::principal::Auth;
use crate::security::permissions::Permission;
use crate::state::AppState;
use crate::store;

/// An organization as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct OrganizationOut {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Supervisors and admins must use a second factor.
    pub require_totp_for_privileged: bool,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

/// `PUT /api/organization/security` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityPolicyIn {
    /// Require a second factor for supervisors and admins.
    pub require_totp_for_privileged: bool,
}

fn out(o: &store::organizations::Organization) -> OrganizationOut {
    OrganizationOut {
        id: o.id.clone(),
        name: o.name.clone(),
        require_totp_for_privileged: store::flag(o.require_totp_privileged),
        created_at: o.created_at,
    }
}

/// The caller's organization. Any signed-in user.
#[utoipa::path(get, path = "/api/organization", tag = "organization",
    responses((status = 200, body = OrganizationOut), (status = 401, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn get_organization(
    State(state): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<ApiJson<OrganizationOut>> {
    let org = store::organizations::get(&state.db, &p.org)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(ApiJson(out(&org)))
}

/// Set the second-factor policy. Needs `manage_organization` (admin). To
/// avoid locking themselves out, the admin must have a second factor before
/// turning the requirement on.
#[utoipa::path(put, path = "/api/organization/security", tag = "organization",
    request_body = SecurityPolicyIn,
    responses((status = 200, body = OrganizationOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn set_security_policy(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<SecurityPolicyIn>,
) -> ApiResult<ApiJson<OrganizationOut>> {
    p.require(&state, Permission::ManageOrganization).await?;
    if body.require_totp_for_privileged {
        let enrolled = store::totp::get(&state.db, &p.org, &p.user_id)
            .await?
            .is_some_and(|e| e.confirmed_at.is_some());
        if !enrolled {
            return Err(ApiError::Conflict(
                "Enrol a second factor yourself before requiring one.".into(),
            ));
        }
    }
    store::organizations::set_require_totp(&state.db, &p.org, body.require_totp_for_privileged)
        .await?;
    if body.require_totp_for_privileged {
        // Sessions opened before the policy must enrol too.
        store::sessions::restrict_unenrolled_privileged(&state.db, &p.org).await?;
    }
    let entry = AuditEvent::by_user(
        &p.user_id,
        &p.org.0,
        "organization.security_policy",
        "organization",
        Some(&p.org.0),
    )
    .detail(
        "require_totp_for_privileged",
        body.require_totp_for_privileged,
    );
    state.audit(&p.meta, entry).await?;
    let org = store::organizations::get(&state.db, &p.org)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(ApiJson(out(&org)))
}
