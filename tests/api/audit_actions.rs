//! Every auth and admin action of the foundation writes its audit entry
//! (DESIGN.md §6): registration, sign-out everywhere, password change,
//! password reset (done and refused), refresh-token reuse, enabling and
//! disabling the second factor, the organization's security policy, and
//! organizations and users made on the command line (the real binary, actor
//! `cli`). `audit.rs` covers sign-in, sign-out, user creation and role
//! changes over HTTP, and the chain itself.
//!
//! Entries are read straight from `audit_log`, so the organization each one
//! is filed under is checked too (the API shows an organization only its
//! own entries and does not repeat the id). Runs on both databases: the
//! spawned binary gets the app's data folder and secrets folder (with the
//! `database_url` on PostgreSQL).

use kraliki::store::audit::AuditRow;
use kraliki::store::users::Role;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::production::{kraliki, run};

/// Another password that passes the policy.
const NEW_PASSWORD: &str = "quiet-lantern-harbor-meadow-2291";

/// Who an entry should name.
enum Actor<'a> {
    /// A user, by id.
    User(&'a str),
    /// Someone not identified.
    Anonymous,
    /// The command line on the server.
    Cli,
}

/// What an entry should say.
struct Expected<'a> {
    actor: Actor<'a>,
    organization: Option<&'a str>,
    object: (&'a str, Option<&'a str>),
    outcome: &'a str,
}

/// Send `req` with the request id `id`.
async fn send_as(req: reqwest::RequestBuilder, id: &str) -> reqwest::Response {
    req.header("x-request-id", id).send().await.unwrap()
}

/// Every entry written while serving request `request_id`, oldest first.
async fn written_by(app: &TestApp, request_id: &str) -> Vec<AuditRow> {
    sqlx::query_as("SELECT * FROM audit_log WHERE request_id = $1 ORDER BY seq")
        .bind(request_id)
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap()
}

/// The single entry request `request_id` wrote, asserting its action.
async fn the_entry(app: &TestApp, request_id: &str, action: &str) -> AuditRow {
    let rows = written_by(app, request_id).await;
    assert_eq!(
        rows.len(),
        1,
        "request {request_id} writes one entry: {rows:#?}"
    );
    assert_eq!(rows[0].action, action, "{:#?}", rows[0]);
    rows[0].clone()
}

/// Assert who, in which organization, on which object, with what outcome;
/// entries made by a request also name the client address.
fn assert_entry(row: &AuditRow, want: Expected<'_>) {
    let (actor_type, actor_id) = match want.actor {
        Actor::User(id) => ("user", Some(id)),
        Actor::Anonymous => ("anonymous", None),
        Actor::Cli => ("cli", None),
    };
    assert_eq!(row.actor_type, actor_type, "{row:#?}");
    assert_eq!(row.actor_id.as_deref(), actor_id, "{row:#?}");
    assert_eq!(
        row.organization_id.as_deref(),
        want.organization,
        "{row:#?}"
    );
    assert_eq!(row.object_type, want.object.0, "{row:#?}");
    assert_eq!(row.object_id.as_deref(), want.object.1, "{row:#?}");
    assert_eq!(row.outcome, want.outcome, "{row:#?}");
    let ip = if row.request_id.is_empty() {
        "cli"
    } else {
        "127.0.0.1"
    };
    assert_eq!(row.ip, ip, "{row:#?}");
}

/// A successful action of `user` in their organization on `object`.
fn success_by<'a>(user: &'a TestUser, object: (&'a str, &'a str)) -> Expected<'a> {
    Expected {
        actor: Actor::User(&user.id),
        organization: Some(&user.org),
        object: (object.0, Some(object.1)),
        outcome: "success",
    }
}

fn details(row: &AuditRow) -> Value {
    serde_json::from_str(&row.details).unwrap()
}

/// Assert the chain still verifies with the app's audit key.
async fn assert_chain_intact(app: &TestApp) {
    kraliki::audit::verify(&app.state.db, &app.state.secrets.audit_key)
        .await
        .unwrap()
        .expect("the audit chain is intact");
}

/// Assert that no entry holds `secret` in any field.
async fn assert_nowhere_in_the_trail(app: &TestApp, secret: &str) {
    let rows: Vec<AuditRow> = sqlx::query_as("SELECT * FROM audit_log")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    assert!(!rows.is_empty());
    let text = format!("{rows:?}");
    assert!(!text.contains(secret), "a secret reached the audit trail");
}

fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}

fn str_of<'a>(body: &'a Value, field: &str) -> &'a str {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("`{field}` is a string in {body}"))
}

#[tokio::test]
async fn registration_is_audited_as_the_new_admin_of_the_new_organization() {
    // Development: registration is open.
    let app = spawn_app().await;
    let res = send_as(
        app.client.post(app.url("/api/auth/register")).json(&json!({
            "organization_name": "Audited Calls",
            "email": unique_email("founder"),
            "password": GOOD_PASSWORD,
        })),
        "audit-register",
    )
    .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let (user, org) = (str_of(&body, "id"), str_of(&body, "organization_id"));

    let row = the_entry(&app, "audit-register", "auth.register").await;
    assert_entry(
        &row,
        Expected {
            actor: Actor::User(user),
            organization: Some(org),
            object: ("organization", Some(org)),
            outcome: "success",
        },
    );
    assert_nowhere_in_the_trail(&app, GOOD_PASSWORD).await;
    assert_chain_intact(&app).await;
}

#[tokio::test]
async fn sign_out_everywhere_and_password_change_are_audited() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let first = app.token(&user).await;
    app.token(&user).await;

    let res = send_as(
        app.client
            .post(app.url("/api/auth/logout-all"))
            .bearer_auth(&first),
        "audit-logout-all",
    )
    .await;
    assert_eq!(res.status(), 204);
    let row = the_entry(&app, "audit-logout-all", "auth.logout_all").await;
    assert_entry(&row, success_by(&user, ("user", &user.id)));
    assert_eq!(details(&row)["sessions_revoked"], 2, "{row:#?}");

    let token = app.token(&user).await;
    let res = send_as(
        app.client
            .post(app.url("/api/auth/change-password"))
            .bearer_auth(&token)
            .json(&json!({
                "current_password": GOOD_PASSWORD,
                "new_password": NEW_PASSWORD,
            })),
        "audit-password-change",
    )
    .await;
    assert_eq!(res.status(), 204);
    let row = the_entry(&app, "audit-password-change", "auth.password_change").await;
    assert_entry(&row, success_by(&user, ("user", &user.id)));
    for secret in [GOOD_PASSWORD, NEW_PASSWORD] {
        assert_nowhere_in_the_trail(&app, secret).await;
    }
    assert_chain_intact(&app).await;
}

#[tokio::test]
async fn a_password_reset_is_audited_and_so_is_a_refused_reset_token() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Supervisor).await;
    let token = app.requested_reset_token(&user.email).await;

    let reset = |id: &'static str| {
        send_as(
            app.client
                .post(app.url("/api/auth/reset-password"))
                .json(&json!({ "token": token, "new_password": NEW_PASSWORD })),
            id,
        )
    };
    assert_eq!(reset("audit-reset").await.status(), 204);
    let row = the_entry(&app, "audit-reset", "auth.password_reset").await;
    assert_entry(&row, success_by(&user, ("user", &user.id)));

    // The spent token again: refused, and recorded as a failed reset by
    // someone not identified (the token no longer names anyone).
    assert_problem(reset("audit-reset-again").await, 400).await;
    let row = the_entry(&app, "audit-reset-again", "auth.password_reset").await;
    assert_entry(
        &row,
        Expected {
            actor: Actor::Anonymous,
            organization: None,
            object: ("user", None),
            outcome: "failure",
        },
    );
    assert_eq!(details(&row)["reason"], "invalid_reset_token", "{row:#?}");
    for secret in [token.as_str(), NEW_PASSWORD] {
        assert_nowhere_in_the_trail(&app, secret).await;
    }
    assert_chain_intact(&app).await;
}

#[tokio::test]
async fn refresh_token_reuse_is_audited_against_the_session() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let login = app.login(&user).await;
    let first = str_of(&login, "refresh_token").to_string();
    let session: String = sqlx::query_scalar("SELECT id FROM sessions WHERE user_id = $1")
        .bind(&user.id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap();

    let refresh = |id: &'static str| {
        send_as(
            app.client
                .post(app.url("/api/auth/refresh"))
                .json(&json!({ "refresh_token": first })),
            id,
        )
    };
    assert_eq!(refresh("audit-rotate").await.status(), 200);
    assert!(
        written_by(&app, "audit-rotate").await.is_empty(),
        "a normal rotation is not an audited action"
    );
    assert_problem(refresh("audit-reuse").await, 401).await;
    let row = the_entry(&app, "audit-reuse", "auth.token_reuse").await;
    assert_entry(
        &row,
        Expected {
            outcome: "failure",
            ..success_by(&user, ("session", &session))
        },
    );
    assert_nowhere_in_the_trail(&app, &first).await;
    assert_chain_intact(&app).await;
}

#[tokio::test]
async fn second_factor_changes_and_the_security_policy_are_audited() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let token = app.token(&admin).await;
    // Enrol and confirm: the confirmation enables the factor.
    let mut authenticator = crate::totp::begin(&app, &token).await;
    let code = authenticator.fresh_code().await;
    let res = send_as(
        app.client
            .post(app.url("/api/auth/totp/verify"))
            .bearer_auth(&token)
            .json(&json!({ "code": code })),
        "audit-totp-enable",
    )
    .await;
    assert_eq!(res.status(), 200);
    let row = the_entry(&app, "audit-totp-enable", "auth.totp_enable").await;
    assert_entry(&row, success_by(&admin, ("user", &admin.id)));

    // The policy, on and off again.
    for (on, id) in [(true, "audit-policy-on"), (false, "audit-policy-off")] {
        let res = send_as(
            app.client
                .put(app.url("/api/organization/security"))
                .bearer_auth(&token)
                .json(&json!({ "require_totp_for_privileged": on })),
            id,
        )
        .await;
        assert_eq!(res.status(), 200, "{id}");
        let row = the_entry(&app, id, "organization.security_policy").await;
        assert_entry(&row, success_by(&admin, ("organization", &admin.org)));
        assert_eq!(details(&row)["require_totp_for_privileged"], on, "{row:#?}");
    }

    // Disable with the password and a later code.
    let code = authenticator.fresh_code().await;
    let res = send_as(
        app.client
            .post(app.url("/api/auth/totp/disable"))
            .bearer_auth(&token)
            .json(&json!({ "password": admin.password, "code": code })),
        "audit-totp-disable",
    )
    .await;
    assert_eq!(res.status(), 204);
    let row = the_entry(&app, "audit-totp-disable", "auth.totp_disable").await;
    assert_entry(&row, success_by(&admin, ("user", &admin.id)));
    assert_chain_intact(&app).await;
}

#[tokio::test]
async fn organizations_and_users_made_on_the_command_line_are_audited_as_cli() {
    let app = spawn_app().await;
    let cli = |args: &[&str]| {
        let mut cmd = kraliki();
        cmd.env("KRALIKI_SECRETS_DIR", app.secrets_dir.path())
            .arg("--data-dir")
            .arg(app.data_dir.path())
            .args(args);
        cmd
    };

    let done = run(cli(&["orgs", "create", "--name", "Shell Calls"]), None).await;
    assert!(done.status.success(), "orgs create: {}", done.stderr);
    let org = done.stdout.trim().to_string();
    let email = unique_email("shell-admin");
    let done = run(
        cli(&[
            "users", "create", "--org", &org, "--email", &email, "--role", "admin",
        ]),
        Some(&format!("{GOOD_PASSWORD}\n")),
    )
    .await;
    assert!(done.status.success(), "users create: {}", done.stderr);
    let user = done.stdout.trim().to_string();

    let rows: Vec<AuditRow> =
        sqlx::query_as("SELECT * FROM audit_log WHERE organization_id = $1 ORDER BY seq")
            .bind(&org)
            .fetch_all(&app.state.db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    assert_eq!(rows[0].action, "organization.create");
    assert_entry(
        &rows[0],
        Expected {
            actor: Actor::Cli,
            organization: Some(&org),
            object: ("organization", Some(&org)),
            outcome: "success",
        },
    );
    assert_eq!(rows[1].action, "user.create");
    assert_entry(
        &rows[1],
        Expected {
            actor: Actor::Cli,
            organization: Some(&org),
            object: ("user", Some(&user)),
            outcome: "success",
        },
    );
    assert_eq!(details(&rows[1])["role"], "admin");
    assert!(rows.iter().all(|r| r.request_id.is_empty()));
    assert_nowhere_in_the_trail(&app, GOOD_PASSWORD).await;

    // The new admin finds both in the organization's trail, and the running
    // server goes on appending to the same chain.
    let admin = TestUser {
        id: user.clone(),
        org: org.clone(),
        email,
        password: GOOD_PASSWORD.to_string(),
    };
    let token = app.token(&admin).await;
    let res = app
        .get_auth("/api/audit?action=organization.create", &token)
        .await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["actor_type"], "cli");
    assert_eq!(items[0]["object_id"], org.as_str());
    assert_chain_intact(&app).await;
}

#[tokio::test]
async fn a_reset_request_for_a_known_account_is_audited_and_an_unknown_one_leaves_nothing() {
    let app = spawn_app().await;
    let user = app.org_with(Role::Agent).await;
    let ask = |email: String, id: &'static str| {
        send_as(
            app.client
                .post(app.url("/api/auth/forgot-password"))
                .json(&json!({ "email": email })),
            id,
        )
    };
    assert_eq!(ask(user.email.clone(), "audit-forgot").await.status(), 202);
    // Written by the background task that sends the mail.
    let token = mailed_reset_token(&app, &user.email, 0).await;
    let row =
        eventually(|| async { written_by(&app, "audit-forgot").await.into_iter().next() }).await;
    assert_eq!(row.action, "auth.password_reset_request", "{row:#?}");
    assert_entry(
        &row,
        Expected {
            actor: Actor::Anonymous,
            organization: Some(&user.org),
            object: ("user", Some(&user.id)),
            outcome: "success",
        },
    );
    assert_eq!(details(&row)["mailed"], true, "{row:#?}");

    // An address nobody has: the same answer, and no entry at all.
    let unknown = unique_email("nobody");
    assert_eq!(ask(unknown, "audit-forgot-unknown").await.status(), 202);
    assert_eq!(
        ask(user.email.clone(), "audit-forgot-2").await.status(),
        202
    );
    // Once the second known request is audited, the unknown one (sent
    // before it) would have been too.
    eventually(|| async { (!written_by(&app, "audit-forgot-2").await.is_empty()).then_some(()) })
        .await;
    assert!(written_by(&app, "audit-forgot-unknown").await.is_empty());
    assert_nowhere_in_the_trail(&app, &token).await;
    assert_chain_intact(&app).await;
}
