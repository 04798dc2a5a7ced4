//! The audit trail (DESIGN.md §6): sign-ins, sign-outs, user creation and
//! role changes are recorded with who, what, which object, outcome, address
//! and request id, and shown to admins only; the table refuses updates and
//! deletes; and `kraliki audit verify` (the real binary) finds an entry that
//! was altered, deleted, swapped or cut off by someone who bypassed that
//! refusal with direct database access.
//!
//! Runs on both databases: the spawned binary gets the app's data folder
//! (the SQLite file) and secrets folder (the audit key and, on PostgreSQL,
//! the `database_url`).

use base64::Engine;
use kraliki::store::audit::AuditRow;
use kraliki::store::users::Role;
use kraliki::store::Backend;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::helpers::*;
use crate::production::{kraliki, run, Finished};

/// Send `req` with the request id `id`.
async fn send_as(req: reqwest::RequestBuilder, id: &str) -> reqwest::Response {
    req.header("x-request-id", id).send().await.unwrap()
}

/// The session id (`sid` claim) of an access token.
fn session_of(access_token: &str) -> String {
    let payload = access_token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: Value = serde_json::from_slice(&bytes).unwrap();
    claims["sid"].as_str().expect("sid claim").to_string()
}

/// Every audit entry the token's organization shows, newest first, walking
/// the pages.
async fn audit_entries(app: &TestApp, token: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut req = app
            .client
            .get(app.url("/api/audit"))
            .bearer_auth(token)
            .query(&[("limit", "2")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

/// The one entry with `action` made by request `request_id`.
fn entry<'a>(entries: &'a [Value], action: &str, request_id: &str) -> &'a Value {
    let found: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == action && e["request_id"] == request_id)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {action} entry for request {request_id}: {entries:#?}"
    );
    found[0]
}

/// Assert who, what, which object, outcome and where.
fn assert_entry(e: &Value, actor: &str, object: (&str, &str), outcome: &str) {
    assert_eq!(e["actor_type"], "user", "{e}");
    assert_eq!(e["actor_id"], actor, "{e}");
    assert_eq!(e["object_type"], object.0, "{e}");
    assert_eq!(e["object_id"], object.1, "{e}");
    assert_eq!(e["outcome"], outcome, "{e}");
    assert_eq!(e["ip"], "127.0.0.1", "{e}");
    assert!(e["seq"].as_i64().unwrap() > 0, "{e}");
    assert!(e["created_at"].as_i64().unwrap() > 0, "{e}");
}

#[tokio::test]
async fn sign_in_sign_out_and_user_changes_are_audited_for_admins_only() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let c = &app.client;
    let login = |id: &'static str, password: &str| {
        send_as(
            c.post(app.url("/api/auth/login"))
                .json(&json!({"email": admin.email, "password": password})),
            id,
        )
    };

    let res = login("audit-login-1", &admin.password).await;
    assert_eq!(res.status(), 200);
    let token: String = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .into();
    let res = login("audit-login-2", &admin.password).await;
    let second: String = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .into();
    let res = login("audit-login-bad", "wrong-password-for-sure").await;
    assert_eq!(res.status(), 401);

    let res = send_as(
        c.post(app.url("/api/users"))
            .bearer_auth(&token)
            .json(&json!({
                "email": "audited-agent@example.com",
                "role": "agent",
                "password": GOOD_PASSWORD,
            })),
        "audit-create",
    )
    .await;
    assert_eq!(res.status(), 201);
    let user_id: String = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .into();

    let res = send_as(
        c.patch(app.url(&format!("/api/users/{user_id}")))
            .bearer_auth(&token)
            .json(&json!({"role": "supervisor"})),
        "audit-role",
    )
    .await;
    assert_eq!(res.status(), 200);

    let res = send_as(
        c.post(app.url("/api/auth/logout")).bearer_auth(&second),
        "audit-logout",
    )
    .await;
    assert_eq!(res.status(), 204);

    let entries = audit_entries(&app, &token).await;
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first, no duplicates: {seqs:?}"
    );

    let e = entry(&entries, "auth.login", "audit-login-1");
    assert_entry(e, &admin.id, ("session", &session_of(&token)), "success");
    let e = entry(&entries, "auth.login", "audit-login-bad");
    assert_entry(e, &admin.id, ("user", &admin.id), "failure");
    assert_eq!(e["details"]["reason"], "invalid_credentials", "{e}");
    let e = entry(&entries, "user.create", "audit-create");
    assert_entry(e, &admin.id, ("user", &user_id), "success");
    assert_eq!(e["details"]["role"], "agent");
    let e = entry(&entries, "user.role_change", "audit-role");
    assert_entry(e, &admin.id, ("user", &user_id), "success");
    assert_eq!(e["details"]["from"], "agent");
    assert_eq!(e["details"]["to"], "supervisor");
    let e = entry(&entries, "auth.logout", "audit-logout");
    assert_entry(e, &admin.id, ("session", &session_of(&second)), "success");
    // Nothing secret is written down.
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains(GOOD_PASSWORD) && !text.contains("wrong-password-for-sure"));

    // Filtered by action.
    let res = app.get_auth("/api/audit?action=user.create", &token).await;
    let page: Value = res.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["request_id"], "audit-create");

    // An agent is refused, and the refusal is itself audited.
    let agent = app.create_user(&admin.org, Role::Agent).await;
    let agent_token = app.token(&agent).await;
    let res = send_as(
        c.get(app.url("/api/audit")).bearer_auth(&agent_token),
        "audit-agent",
    )
    .await;
    assert_problem(res, 403).await;
    let entries = audit_entries(&app, &token).await;
    let e = entry(&entries, "access.denied", "audit-agent");
    assert_entry(e, &agent.id, ("permission", "view_audit"), "denied");

    // Another organization's admin sees none of it.
    let other = app.org_with(Role::Admin).await;
    let other_token = app.token(&other).await;
    let theirs = audit_entries(&app, &other_token).await;
    assert!(
        theirs.iter().all(|e| e["actor_id"] != admin.id.as_str()
            && !e["request_id"].as_str().unwrap().starts_with("audit-")),
        "{theirs:#?}"
    );
    assert!(theirs.iter().any(|e| e["actor_id"] == other.id.as_str()));

    // Without credentials: 401.
    let res = c.get(app.url("/api/audit")).send().await.unwrap();
    assert_problem(res, 401).await;
}

/// An app with a few audit entries (sign-ins of an admin, one failed).
async fn app_with_entries() -> TestApp {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    for _ in 0..4 {
        app.login(&admin).await;
    }
    let res = app.login_raw(&admin.email, "not-the-password-at-all").await;
    assert_eq!(res.status(), 401);
    assert!(entry_count(&app).await >= 5);
    app
}

async fn entry_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
}

/// `kraliki --data-dir <app data> audit verify` with the app's secrets.
async fn verify(app: &TestApp) -> Finished {
    let mut cmd = kraliki();
    cmd.env("KRALIKI_SECRETS_DIR", app.secrets_dir.path())
        .arg("--data-dir")
        .arg(app.data_dir.path())
        .args(["audit", "verify"]);
    run(cmd, None).await
}

/// A connection of someone with direct access to the database (not the
/// server's pool), with the append-only triggers out of the way.
async fn attacker(app: &TestApp) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    match app.state.db.backend {
        Backend::Sqlite => {
            let file = app.data_dir.path().join("kraliki.db");
            let mut conn = sqlx::AnyConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .unwrap();
            for statement in [
                "DROP TRIGGER audit_log_no_update",
                "DROP TRIGGER audit_log_no_delete",
            ] {
                sqlx::query(statement).execute(&mut conn).await.unwrap();
            }
            conn
        }
        Backend::Postgres => {
            let url = std::fs::read_to_string(app.secrets_dir.path().join("database_url")).unwrap();
            let mut conn = sqlx::AnyConnection::connect(url.trim()).await.unwrap();
            sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER USER")
                .execute(&mut conn)
                .await
                .unwrap();
            conn
        }
    }
}

async fn row(conn: &mut sqlx::AnyConnection, seq: i64) -> AuditRow {
    sqlx::query_as("SELECT * FROM audit_log WHERE seq = $1")
        .bind(seq)
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Replace every column of entry `seq` but the sequence number with `r`'s.
async fn overwrite(conn: &mut sqlx::AnyConnection, seq: i64, r: &AuditRow) {
    sqlx::query(
        "UPDATE audit_log SET id = $1, organization_id = $2, actor_type = $3, actor_id = $4, \
         action = $5, object_type = $6, object_id = $7, outcome = $8, ip = $9, \
         request_id = $10, details = $11, created_at = $12, key_id = $13, prev_mac = $14, \
         mac = $15 WHERE seq = $16",
    )
    .bind(&r.id)
    .bind(&r.organization_id)
    .bind(&r.actor_type)
    .bind(&r.actor_id)
    .bind(&r.action)
    .bind(&r.object_type)
    .bind(&r.object_id)
    .bind(&r.outcome)
    .bind(&r.ip)
    .bind(&r.request_id)
    .bind(&r.details)
    .bind(r.created_at)
    .bind(&r.key_id)
    .bind(&r.prev_mac)
    .bind(&r.mac)
    .bind(seq)
    .execute(conn)
    .await
    .unwrap();
}

/// Assert that verification failed and named the entry.
fn assert_broken(done: &Finished, needles: &[&str]) {
    assert!(
        !done.status.success(),
        "verify must fail; stdout: {} stderr: {}",
        done.stdout,
        done.stderr
    );
    assert!(
        done.stderr.contains("audit trail broken"),
        "stderr: {}",
        done.stderr
    );
    for needle in needles {
        assert!(
            done.stderr.contains(needle),
            "stderr names {needle:?}: {}",
            done.stderr
        );
    }
}

#[tokio::test]
async fn an_untouched_chain_verifies() {
    let app = app_with_entries().await;
    let n = entry_count(&app).await;
    let done = verify(&app).await;
    assert!(
        done.status.success(),
        "stdout: {} stderr: {}",
        done.stdout,
        done.stderr
    );
    assert!(
        done.stdout
            .contains(&format!("audit trail intact: {n} entries")),
        "stdout: {}",
        done.stdout
    );

    // The server goes on appending to the same chain afterwards.
    let admin = app.org_with(Role::Admin).await;
    app.login(&admin).await;
    let done = verify(&app).await;
    assert!(done.status.success(), "stderr: {}", done.stderr);
    assert!(done.stdout.contains(&format!("{} entries", n + 1)));
}

#[tokio::test]
async fn an_altered_field_is_found() {
    let app = app_with_entries().await;
    let mut conn = attacker(&app).await;
    let target = row(&mut conn, 3).await;
    sqlx::query("UPDATE audit_log SET ip = '203.0.113.7' WHERE seq = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let done = verify(&app).await;
    assert_broken(&done, &["entry 3", &target.id, "altered"]);
}

#[tokio::test]
async fn a_deleted_entry_is_found() {
    let app = app_with_entries().await;
    let mut conn = attacker(&app).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    let done = verify(&app).await;
    assert_broken(&done, &["entry 2", "missing"]);
}

#[tokio::test]
async fn swapped_entries_are_found() {
    let app = app_with_entries().await;
    let mut conn = attacker(&app).await;
    let two = row(&mut conn, 2).await;
    let three = row(&mut conn, 3).await;
    // Ids are unique: park entry 2 under a temporary id first.
    let parked = AuditRow {
        id: "parked".into(),
        ..three.clone()
    };
    overwrite(&mut conn, 2, &parked).await;
    overwrite(&mut conn, 3, &two).await;
    overwrite(&mut conn, 2, &three).await;
    assert_eq!(row(&mut conn, 2).await.id, three.id);

    let done = verify(&app).await;
    assert_broken(&done, &["entry 2"]);
}

#[tokio::test]
async fn entries_cut_off_the_end_are_found() {
    let app = app_with_entries().await;
    let n = entry_count(&app).await;
    let mut conn = attacker(&app).await;
    sqlx::query("DELETE FROM audit_log WHERE seq = $1")
        .bind(n)
        .execute(&mut conn)
        .await
        .unwrap();
    let done = verify(&app).await;
    assert_broken(&done, &[&format!("entries after {}", n - 1)]);
}

#[tokio::test]
async fn the_table_refuses_updates_and_deletes() {
    let app = app_with_entries().await;
    let n = entry_count(&app).await;
    let pool = &app.state.db.pool;

    let mut statements = vec![
        "UPDATE audit_log SET ip = '203.0.113.7' WHERE seq = 1",
        "UPDATE audit_log SET outcome = 'success'",
        "DELETE FROM audit_log WHERE seq = 1",
        "DELETE FROM audit_log",
    ];
    match app.state.db.backend {
        Backend::Postgres => statements.push("TRUNCATE audit_log"),
        // SQLite's REPLACE conflict resolution deletes the old row without
        // firing delete triggers; it must not rewrite an entry either.
        Backend::Sqlite => statements.extend([
            "INSERT OR REPLACE INTO audit_log SELECT seq, id, organization_id, actor_type, \
             actor_id, action, object_type, object_id, outcome, '203.0.113.7', request_id, \
             details, created_at, key_id, prev_mac, mac FROM audit_log WHERE seq = 1",
            "REPLACE INTO audit_log SELECT seq + 1000, id, organization_id, actor_type, \
             actor_id, action, object_type, object_id, outcome, ip, request_id, details, \
             created_at, key_id, prev_mac, mac FROM audit_log WHERE seq = 1",
        ]),
    }
    // An upsert onto an existing entry is an update.
    statements.push(
        "INSERT INTO audit_log SELECT * FROM audit_log WHERE seq = 1 \
         ON CONFLICT (seq) DO UPDATE SET ip = '203.0.113.7'",
    );
    for statement in statements {
        let err = sqlx::query(statement)
            .execute(pool)
            .await
            .expect_err(statement);
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }

    assert_eq!(entry_count(&app).await, n);
    let ip: String = sqlx::query_scalar("SELECT ip FROM audit_log WHERE seq = 1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(ip, "127.0.0.1");
    let summary = kraliki::audit::verify(&app.state.db, &app.state.secrets.audit_key)
        .await
        .unwrap()
        .expect("the chain is intact");
    assert_eq!(summary.entries, n);
}
