//! `GET /api/audit`: the organization's audit trail, newest first.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiResult, Problem};
use crate::http::json::{int_param, ApiJson, ApiQuery};
use crate::http::principal::Auth;
use crate::http::users::page_params;
use crate::security::permissions::Permission;
use crate::state::AppState;
use crate::store;

/// Filters and paging.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Page size, 1–100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only this action, e.g. `auth.login`.
    pub action: Option<String>,
}

/// An audit entry as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct AuditOut {
    /// Position in the chain.
    pub seq: i64,
    /// Id.
    pub id: String,
    /// `user`, `cli` or `system`.
    pub actor_type: String,
    /// Acting user.
    pub actor_id: Option<String>,
    /// What happened.
    pub action: String,
    /// Kind of object.
    pub object_type: String,
    /// Object.
    pub object_id: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// Client address.
    pub ip: String,
    /// Request id.
    pub request_id: String,
    /// Extra fields.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// Time, unix milliseconds.
    pub created_at: i64,
}

/// A page of audit entries.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The organization's audit trail (for the operator organization, also the
/// deployment's own entries). Needs `view_audit` (admin).
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn list_audit(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<ApiJson<AuditPage>> {
    p.require(&state, Permission::ViewAudit).await?;
    let (limit, cursor) =
        page_params(int_param("limit", q.limit.as_deref())?, q.cursor.as_deref())?;
    // Admins of the operator organization also see the deployment's own
    // entries (secret rotations), as they see all security events.
    let operator = crate::http::security::scope(&state, &p.org).is_none();
    let mut rows = store::audit::list(
        &state.db,
        &p.org,
        operator,
        q.action.as_deref(),
        cursor.as_ref(),
        limit + 1,
    )
    .await?;
    let next_cursor = store::paginate(&mut rows, limit, |r| (r.seq, &r.id));
    let items = rows
        .into_iter()
        .map(|r| AuditOut {
            seq: r.seq,
            id: r.id,
            actor_type: r.actor_type,
            actor_id: r.actor_id,
            action: r.action,
            object_type: r.object_type,
            object_id: r.object_id,
            outcome: r.outcome,
            ip: r.ip,
            request_id: r.request_id,
            details: serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null),
            created_at: r.created_at,
        })
        .collect();
    Ok(ApiJson(AuditPage { items, next_cursor }))
}
