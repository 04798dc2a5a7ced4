//! `/api/calls`: calls of the organization; agents see only their own.

use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiResult, Problem};
use crate::http::json::{int_param, ApiJson, ApiQuery};
use crate::http::principal::Auth;
use crate::http::users::page_params;
use crate::security::permissions::{allows, Permission};
use crate::state::AppState;
use crate::store;
use crate::store::calls::{Call, CallFilter, STATUSES};

/// Filters and paging for the call list.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    /// Page size, 1–100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
    /// Only calls in this state (`queued`, `ringing`, `in_progress`,
    /// `completed`, `busy`, `no_answer`, `failed`, `canceled`).
    pub status: Option<String>,
}

/// A page of calls.
#[derive(Serialize, ToSchema)]
pub struct CallPage {
    /// Calls, newest first.
    pub items: Vec<Call>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// List calls, newest first. Agents see their own calls; supervisors and
/// admins see all of the organization's. Needs `view_own_calls`.
#[utoipa::path(get, path = "/api/calls", tag = "calls", params(CallQuery),
    responses((status = 200, body = CallPage), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn list_calls(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<CallQuery>,
) -> ApiResult<ApiJson<CallPage>> {
    p.require(&state, Permission::ViewOwnCalls).await?;
    let (limit, cursor) =
        page_params(int_param("limit", q.limit.as_deref())?, q.cursor.as_deref())?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::field(
                "status",
                "invalid",
                format!("Must be one of: {}.", STATUSES.join(", ")),
            ));
        }
    }
    let own_only = !allows(p.role, Permission::ViewAllCalls);
    let mut rows = store::calls::list(
        &state.db,
        &p.org,
        CallFilter {
            status: q.status.as_deref(),
            agent_id: own_only.then_some(p.user_id.as_str()),
            before: cursor.as_ref(),
            limit: limit + 1,
        },
    )
    .await?;
    let next_cursor = store::paginate(&mut rows, limit, |c| (c.created_at, &c.id));
    Ok(ApiJson(CallPage {
        items: rows,
        next_cursor,
    }))
}

/// One call. Agents may read only their own (others answer 404).
#[utoipa::path(get, path = "/api/calls/{id}", tag = "calls",
    params(("id" = String, Path, description = "Call id")),
    responses((status = 200, body = Call), (status = 401, body = Problem),
        (status = 404, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn get_call(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<Call>> {
    p.require(&state, Permission::ViewOwnCalls).await?;
    let call = store::calls::get(&state.db, &p.org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !allows(p.role, Permission::ViewAllCalls) && call.agent_id.as_deref() != Some(&p.user_id) {
        return Err(ApiError::NotFound);
    }
    Ok(ApiJson(call))
}
