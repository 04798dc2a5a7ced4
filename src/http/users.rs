//! `/api/users`: the organization's users. Another organization's user
//! answers 404, exactly like one that does not exist.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::AuditEvent;
use crate::auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::http::json::{int_param, ApiJson, ApiQuery};
use crate::http::principal::Auth;
use crate::security::permissions::Permission;
use crate::state::AppState;
use crate::store::users::{NewUser, Role, User};
use crate::store::{self, Cursor};

/// A user as the API shows it.
#[derive(Serialize, ToSchema, Debug)]
pub struct UserOut {
    /// Id.
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// Login e-mail.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Creation time, unix milliseconds.
    pub created_at: i64,
}

impl From<&User> for UserOut {
    fn from(u: &User) -> Self {
        UserOut {
            id: u.id.clone(),
            organization_id: u.organization_id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            role: u.role(),
            created_at: u.created_at,
        }
    }
}

/// A page of users.
#[derive(Serialize, ToSchema)]
pub struct UserPage {
    /// Users, oldest first.
    pub items: Vec<UserOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1–100 (default 20).
    #[param(value_type = Option<i64>)]
    pub limit: Option<String>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// Validate `limit` and `cursor`.
pub fn page_params(limit: Option<i64>, cursor: Option<&str>) -> ApiResult<(i64, Option<Cursor>)> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            "out_of_range",
            "Must be between 1 and 100.",
        ));
    }
    let cursor = match cursor {
        Some(c) => Some(
            Cursor::decode(c)
                .ok_or_else(|| ApiError::field("cursor", "invalid", "Not a valid cursor."))?,
        ),
        None => None,
    };
    Ok((limit, cursor))
}

/// `POST /api/users` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    /// Login e-mail.
    pub email: String,
    /// Display name (defaults to the e-mail's local part).
    pub display_name: Option<String>,
    /// Role.
    pub role: Role,
    /// Initial password.
    #[schema(value_type = String)]
    pub password: SecretString,
}

/// `PATCH /api/users/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New role. Changing it signs the user out everywhere.
    pub role: Option<Role>,
}

/// List the organization's users. Needs `view_users` (supervisor, admin).
#[utoipa::path(get, path = "/api/users", tag = "users", params(PageQuery),
    responses((status = 200, body = UserPage), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<ApiJson<UserPage>> {
    p.require(&state, Permission::ViewUsers).await?;
    let (limit, cursor) =
        page_params(int_param("limit", q.limit.as_deref())?, q.cursor.as_deref())?;
    let mut rows = store::users::list(&state.db, &p.org, cursor.as_ref(), limit + 1).await?;
    let next_cursor = store::paginate(&mut rows, limit, |u| (u.created_at, &u.id));
    Ok(ApiJson(UserPage {
        items: rows.iter().map(UserOut::from).collect(),
        next_cursor,
    }))
}

/// One user. Anyone may read themselves; others need `view_users`.
#[utoipa::path(get, path = "/api/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserOut), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 404, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<ApiJson<UserOut>> {
    if id != p.user_id {
        p.require(&state, Permission::ViewUsers).await?;
    }
    let user = store::users::get(&state.db, &p.org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(ApiJson(UserOut::from(&user)))
}

/// Create a user in the organization. Needs `manage_users` (admin).
#[utoipa::path(post, path = "/api/users", tag = "users", request_body = UserIn,
    responses((status = 201, body = UserOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    ApiJson(body): ApiJson<UserIn>,
) -> ApiResult<(StatusCode, ApiJson<UserOut>)> {
    p.require(&state, Permission::ManageUsers).await?;
    let email = auth::parse_email("email", &body.email)?;
    let display_name =
        crate::http::auth::display_name_or_default(body.display_name.as_deref(), &email)?;
    auth::check_new_password("password", body.password.expose_secret(), &email, false)?;
    if store::users::find_by_email(&state.db, &email)
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(
            "An account with this e-mail address already exists.".into(),
        ));
    }
    let phc = auth::hash_password(&state, body.password.expose_secret()).await?;
    let user = store::users::create(
        &state.db,
        NewUser {
            org: &p.org,
            email: &email,
            display_name: &display_name,
            role: body.role,
            password_hash: &phc,
            is_demo: false,
        },
    )
    .await?;
    let entry = AuditEvent::by_user(&p.user_id, &p.org.0, "user.create", "user", Some(&user.id))
        .detail("role", body.role.as_str());
    state.audit(&p.meta, entry).await?;
    Ok((StatusCode::CREATED, ApiJson(UserOut::from(&user))))
}

/// Change a user's role; the user is signed out everywhere so the new role
/// takes effect with a new session. Needs `manage_users` (admin).
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", request_body = UserPatch,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = []), ("session_cookie" = [])))]
pub async fn update_user(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> ApiResult<ApiJson<UserOut>> {
    p.require(&state, Permission::ManageUsers).await?;
    let user = store::users::get(&state.db, &p.org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if let Some(role) = body.role.filter(|r| *r != user.role()) {
        store::users::set_role(&state.db, &p.org, &id, role).await?;
        store::sessions::revoke_all_for_user(&state.db, &p.org, &id).await?;
        let entry =
            AuditEvent::by_user(&p.user_id, &p.org.0, "user.role_change", "user", Some(&id))
                .detail("from", user.role().as_str())
                .detail("to", role.as_str());
        state.audit(&p.meta, entry).await?;
    }
    let user = store::users::get(&state.db, &p.org, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(ApiJson(UserOut::from(&user)))
}
