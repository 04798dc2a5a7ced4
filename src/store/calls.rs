//! Calls (minimal for now: enough to list and isolate them; the full call
//! model arrives with the call-center work).

use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;

use super::{new_id, now_ms, Cursor, Db, OrgId};

/// Lifecycle states of a call.
pub const STATUSES: &[&str] = &[
    "queued",
    "ringing",
    "in_progress",
    "completed",
    "busy",
    "no_answer",
    "failed",
    "canceled",
];

/// A call as stored.
#[derive(Debug, Clone, FromRow, Serialize, Deserialize, ToSchema)]
pub struct Call {
    /// Id.
    pub id: String,
    /// Organization.
    pub organization_id: String,
    /// Agent handling the call.
    pub agent_id: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Lifecycle state.
    pub status: String,
    /// Caller, E.164.
    pub from_number: String,
    /// Callee, E.164.
    pub to_number: String,
    /// Answer time, unix ms.
    pub started_at: Option<i64>,
    /// Hang-up time, unix ms.
    pub ended_at: Option<i64>,
    /// Talk time, seconds.
    pub duration_secs: Option<i64>,
    /// Creation time, unix ms.
    pub created_at: i64,
}

/// Fields of a new call.
pub struct NewCall<'a> {
    /// Agent.
    pub agent_id: Option<&'a str>,
    /// Direction.
    pub direction: &'a str,
    /// Status.
    pub status: &'a str,
    /// From, E.164.
    pub from_number: &'a str,
    /// To, E.164.
    pub to_number: &'a str,
}

/// Insert a call.
pub async fn create(db: &Db, org: &OrgId, new: NewCall<'_>) -> sqlx::Result<Call> {
    let call = Call {
        id: new_id(),
        organization_id: org.0.clone(),
        agent_id: new.agent_id.map(str::to_string),
        direction: new.direction.to_string(),
        status: new.status.to_string(),
        from_number: new.from_number.to_string(),
        to_number: new.to_number.to_string(),
        started_at: None,
        ended_at: None,
        duration_secs: None,
        created_at: now_ms(),
    };
    sqlx::query(
        "INSERT INTO calls (id, organization_id, agent_id, direction, status, from_number, \
         to_number, started_at, ended_at, duration_secs, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, NULL, $8)",
    )
    .bind(&call.id)
    .bind(&call.organization_id)
    .bind(&call.agent_id)
    .bind(&call.direction)
    .bind(&call.status)
    .bind(&call.from_number)
    .bind(&call.to_number)
    .bind(call.created_at)
    .execute(&db.pool)
    .await?;
    Ok(call)
}

/// Filter for listing calls.
pub struct CallFilter<'a> {
    /// Only this status.
    pub status: Option<&'a str>,
    /// Only calls of this agent (agents see only their own).
    pub agent_id: Option<&'a str>,
    /// Continue after this cursor.
    pub before: Option<&'a Cursor>,
    /// Page size.
    pub limit: i64,
}

/// A page of calls, newest first.
pub async fn list(db: &Db, org: &OrgId, f: CallFilter<'_>) -> sqlx::Result<Vec<Call>> {
    let (t, id) = f
        .before
        .map(|c| (c.created_at, c.id.clone()))
        .unwrap_or((i64::MAX, String::new()));
    sqlx::query_as(
        "SELECT * FROM calls WHERE organization_id = $1 \
         AND ($2 = '' OR status = $2) AND ($3 = '' OR agent_id = $3) \
         AND (created_at < $4 OR (created_at = $4 AND ($5 = '' OR id < $5))) \
         ORDER BY created_at DESC, id DESC LIMIT $6",
    )
    .bind(&org.0)
    .bind(f.status.unwrap_or(""))
    .bind(f.agent_id.unwrap_or(""))
    .bind(t)
    .bind(id)
    .bind(f.limit)
    .fetch_all(&db.pool)
    .await
}

/// Fetch a call of an organization.
pub async fn get(db: &Db, org: &OrgId, id: &str) -> sqlx::Result<Option<Call>> {
    sqlx::query_as("SELECT * FROM calls WHERE organization_id = $1 AND id = $2")
        .bind(&org.0)
        .bind(id)
        .fetch_optional(&db.pool)
        .await
}
