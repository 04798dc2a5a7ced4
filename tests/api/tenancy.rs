//! Tenancy and object-level authorization (DESIGN.md §4), list conventions
//! (§8) and the OpenAPI document.
//!
//! Another organization's record answers 404 exactly like a missing one;
//! agents see only their own calls; denials are 403 with an
//! `ACCESS_DENIED` event.

use std::collections::HashSet;

use kraliki::store::users::Role;
use serde_json::{json, Value};

use crate::helpers::*;

/// A problem body without the per-request parts, for comparing shapes.
fn shape(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("instance");
    body
}

async fn get_json(app: &TestApp, path: &str, token: &str) -> Value {
    let res = app.get_auth(path, token).await;
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// Follow `next_cursor` from `path` (which already has a `?`) to the end.
async fn walk(app: &TestApp, path: &str, token: &str) -> (Vec<String>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut req = app.client.get(app.url(path)).bearer_auth(token);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        pages += 1;
        assert!(pages < 100, "pagination does not end");
        all.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page.get("next_cursor").is_none() || page["next_cursor"].is_null());
                break;
            }
        }
    }
    (all, pages)
}

async fn pause() {
    // Distinct creation times make "newest first" observable.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

#[tokio::test]
async fn another_organizations_records_answer_404_like_missing_ones() {
    let app = spawn_app().await;
    let admin_a = app.org_with(Role::Admin).await;
    let agent_a = app.create_user(&admin_a.org, Role::Agent).await;
    let admin_b = app.org_with(Role::Admin).await;
    let agent_b = app.create_user(&admin_b.org, Role::Agent).await;
    let call_a = app
        .create_call(&admin_a.org, Some(&agent_a.id), "completed")
        .await;
    let call_b = app
        .create_call(&admin_b.org, Some(&agent_b.id), "completed")
        .await;
    let token_a = app.token(&admin_a).await;
    let missing = uuid::Uuid::new_v4().to_string();

    // Own records are visible, which makes the 404s below meaningful.
    get_json(&app, &format!("/api/users/{}", agent_a.id), &token_a).await;
    get_json(&app, &format!("/api/calls/{call_a}"), &token_a).await;

    let foreign = assert_problem(
        app.get_auth(&format!("/api/users/{}", agent_b.id), &token_a)
            .await,
        404,
    )
    .await;
    let absent = assert_problem(
        app.get_auth(&format!("/api/users/{missing}"), &token_a)
            .await,
        404,
    )
    .await;
    assert_eq!(shape(foreign), shape(absent));

    let foreign = assert_problem(
        app.get_auth(&format!("/api/calls/{call_b}"), &token_a)
            .await,
        404,
    )
    .await;
    let absent = assert_problem(
        app.get_auth(&format!("/api/calls/{missing}"), &token_a)
            .await,
        404,
    )
    .await;
    assert_eq!(shape(foreign), shape(absent));

    let patch = |id: &str| {
        app.client
            .patch(app.url(&format!("/api/users/{id}")))
            .bearer_auth(&token_a)
            .json(&json!({"role": "admin"}))
            .send()
    };
    let foreign = assert_problem(patch(&agent_b.id).await.unwrap(), 404).await;
    let absent = assert_problem(patch(&missing).await.unwrap(), 404).await;
    assert_eq!(shape(foreign), shape(absent));

    // B's agent is still an agent, and still signs in as one.
    let token_b = app.token(&admin_b).await;
    let user = get_json(&app, &format!("/api/users/{}", agent_b.id), &token_b).await;
    assert_eq!(user["role"], "agent");
    let me = app.login(&agent_b).await;
    assert_eq!(me["user"]["role"], "agent");

    // Lists never show the other organization.
    let users = get_json(&app, "/api/users?limit=100", &token_a).await;
    let listed = ids(&users);
    assert!(listed.contains(&admin_a.id) && listed.contains(&agent_a.id));
    assert!(!listed.contains(&admin_b.id) && !listed.contains(&agent_b.id));
    for u in users["items"].as_array().unwrap() {
        assert_eq!(u["organization_id"], admin_a.org.as_str());
    }
    let calls = get_json(&app, "/api/calls?limit=100", &token_a).await;
    assert_eq!(ids(&calls), vec![call_a.clone()]);
    for c in calls["items"].as_array().unwrap() {
        assert_eq!(c["organization_id"], admin_a.org.as_str());
    }

    // And the other way round.
    let calls_b = get_json(&app, "/api/calls?limit=100", &token_b).await;
    assert_eq!(ids(&calls_b), vec![call_b]);
    let users_b = ids(&get_json(&app, "/api/users?limit=100", &token_b).await);
    assert!(!users_b.contains(&admin_a.id) && !users_b.contains(&agent_a.id));
}

#[tokio::test]
async fn agents_see_only_their_own_calls_and_supervisors_see_all() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let org = admin.org.clone();
    let agent1 = app.create_user(&org, Role::Agent).await;
    let agent2 = app.create_user(&org, Role::Agent).await;
    let supervisor = app.create_user(&org, Role::Supervisor).await;

    let mut created = Vec::new();
    for (agent, status) in [
        (Some(&agent1), "completed"),
        (Some(&agent2), "completed"),
        (Some(&agent1), "no_answer"),
        (None, "queued"),
        (Some(&agent2), "in_progress"),
        (Some(&agent1), "completed"),
    ] {
        let id = app
            .create_call(&org, agent.map(|a| a.id.as_str()), status)
            .await;
        created.push((id, agent.map(|a| a.id.clone()), status));
        pause().await;
    }
    let newest_first: Vec<String> = created.iter().rev().map(|c| c.0.clone()).collect();
    let of = |agent: &TestUser| -> Vec<String> {
        created
            .iter()
            .rev()
            .filter(|c| c.1.as_deref() == Some(agent.id.as_str()))
            .map(|c| c.0.clone())
            .collect()
    };

    let t1 = app.token(&agent1).await;
    let t2 = app.token(&agent2).await;
    let ts = app.token(&supervisor).await;
    let ta = app.token(&admin).await;

    assert_eq!(ids(&get_json(&app, "/api/calls", &t1).await), of(&agent1));
    assert_eq!(ids(&get_json(&app, "/api/calls", &t2).await), of(&agent2));
    assert_eq!(ids(&get_json(&app, "/api/calls", &ts).await), newest_first);
    assert_eq!(ids(&get_json(&app, "/api/calls", &ta).await), newest_first);

    // Another agent's call, or an unassigned one, is 404 for an agent —
    // the same answer as a call that does not exist.
    let other = of(&agent2)[0].clone();
    let unassigned = created[3].0.clone();
    let missing = assert_problem(
        app.get_auth(&format!("/api/calls/{}", uuid::Uuid::new_v4()), &t1)
            .await,
        404,
    )
    .await;
    for id in [&other, &unassigned] {
        let body = assert_problem(app.get_auth(&format!("/api/calls/{id}"), &t1).await, 404).await;
        assert_eq!(shape(body), shape(missing.clone()));
    }
    let own = get_json(&app, &format!("/api/calls/{}", of(&agent1)[0]), &t1).await;
    assert_eq!(own["agent_id"], agent1.id.as_str());
    // Supervisors read any call of the organization.
    let call = get_json(&app, &format!("/api/calls/{other}"), &ts).await;
    assert_eq!(call["agent_id"], agent2.id.as_str());
    get_json(&app, &format!("/api/calls/{unassigned}"), &ts).await;

    // The status filter, newest first, for both kinds of viewer.
    let completed: Vec<String> = created
        .iter()
        .rev()
        .filter(|c| c.2 == "completed")
        .map(|c| c.0.clone())
        .collect();
    let page = get_json(&app, "/api/calls?limit=20&status=completed", &ts).await;
    assert_eq!(ids(&page), completed);
    for c in page["items"].as_array().unwrap() {
        assert_eq!(c["status"], "completed");
    }
    let times: Vec<i64> = get_json(&app, "/api/calls", &ts).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["created_at"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let own_completed: Vec<String> = of(&agent1)
        .into_iter()
        .filter(|id| completed.contains(id))
        .collect();
    let page = get_json(&app, "/api/calls?status=completed", &t1).await;
    assert_eq!(ids(&page), own_completed);
    let page = get_json(&app, "/api/calls?status=failed", &ts).await;
    assert!(ids(&page).is_empty());
    assert!(page["next_cursor"].is_null());

    // An agent's pagination stays within their own calls.
    let (walked, _) = walk(&app, "/api/calls?limit=1", &t1).await;
    assert_eq!(walked, of(&agent1));
}

#[tokio::test]
async fn agents_are_denied_user_management_with_an_event() {
    let app = spawn_app().await;
    let agent = app.org_with(Role::Agent).await;
    let colleague = app.create_user(&agent.org, Role::Agent).await;
    let token = app.token(&agent).await;

    let body = assert_problem(app.get_auth("/api/users", &token).await, 403).await;
    assert_eq!(body["code"], "forbidden");
    let res = app
        .client
        .post(app.url("/api/users"))
        .bearer_auth(&token)
        .json(&json!({
            "email": "new-hire@example.com",
            "role": "admin",
            "password": GOOD_PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    let res = app
        .get_auth(&format!("/api/users/{}", colleague.id), &token)
        .await;
    assert_problem(res, 403).await;
    let res = app
        .client
        .patch(app.url(&format!("/api/users/{}", agent.id)))
        .bearer_auth(&token)
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
    // Reading oneself is allowed.
    let me = get_json(&app, &format!("/api/users/{}", agent.id), &token).await;
    assert_eq!(me["role"], "agent");

    let events = app.events("ACCESS_DENIED").await;
    assert_eq!(events.len(), 4, "one event per denial: {events:?}");
    for e in &events {
        assert_eq!(e.user_id.as_deref(), Some(agent.id.as_str()));
        assert_eq!(e.organization_id.as_deref(), Some(agent.org.as_str()));
        assert!(e.url.starts_with("/api/users"), "{}", e.url);
    }
    let mut methods: Vec<&str> = events.iter().map(|e| e.method.as_str()).collect();
    methods.sort_unstable();
    assert_eq!(methods, ["GET", "GET", "PATCH", "POST"]);
    let post = events.iter().find(|e| e.method == "POST").unwrap();
    let details: Value = serde_json::from_str(&post.details).unwrap();
    assert_eq!(details["permission"], "manage_users");
    assert_eq!(details["role"], "agent");
    let logged = app
        .log
        .lines()
        .into_iter()
        .filter(|l| l["type"] == "ACCESS_DENIED")
        .count();
    assert_eq!(logged, 4, "denials also go to the security log");

    // Nobody was created and nobody was promoted.
    let admin = app.create_user(&agent.org, Role::Admin).await;
    let admin_token = app.token(&admin).await;
    let users = get_json(&app, "/api/users", &admin_token).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 3);
    let me = get_json(&app, &format!("/api/users/{}", agent.id), &admin_token).await;
    assert_eq!(me["role"], "agent");

    // Supervisors may read users but not manage them.
    let sup = app.create_user(&agent.org, Role::Supervisor).await;
    let sup_token = app.token(&sup).await;
    get_json(&app, "/api/users", &sup_token).await;
    let res = app
        .client
        .patch(app.url(&format!("/api/users/{}", agent.id)))
        .bearer_auth(&sup_token)
        .json(&json!({"role": "supervisor"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, 403).await;
}

#[tokio::test]
async fn cursor_pagination_walks_every_item_once() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let org = admin.org.clone();
    // No pauses: several calls share a millisecond, so the id tie-breaker
    // of the cursor is exercised too.
    let mut calls = Vec::new();
    for i in 0..7 {
        let status = if i % 2 == 0 { "completed" } else { "busy" };
        calls.push(app.create_call(&org, None, status).await);
    }
    // Noise in another organization.
    let other = app.org_with(Role::Admin).await;
    for _ in 0..3 {
        app.create_call(&other.org, None, "completed").await;
    }
    let token = app.token(&admin).await;

    let (walked, pages) = walk(&app, "/api/calls?limit=2", &token).await;
    assert_eq!(pages, 4);
    assert_eq!(walked.len(), 7);
    let unique: HashSet<_> = walked.iter().collect();
    assert_eq!(unique.len(), 7, "no duplicates");
    assert_eq!(unique, calls.iter().collect::<HashSet<_>>());
    // The walk is the same order as one big page.
    let all = get_json(&app, "/api/calls?limit=100", &token).await;
    assert_eq!(ids(&all), walked);

    // Filter and cursor together.
    let (walked, _) = walk(&app, "/api/calls?limit=2&status=completed", &token).await;
    assert_eq!(walked.len(), 4);
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), 4);

    // A page that exactly fills the limit has no next cursor.
    let page = get_json(&app, "/api/calls?limit=7", &token).await;
    assert_eq!(ids(&page).len(), 7);
    assert!(page["next_cursor"].is_null());

    // Users paginate the same way.
    for _ in 0..4 {
        app.create_user(&org, Role::Agent).await;
    }
    let (walked, pages) = walk(&app, "/api/users?limit=2", &token).await;
    assert_eq!(walked.len(), 5);
    assert_eq!(pages, 3);
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), 5);
    assert!(!walked.contains(&other.id));
}

#[tokio::test]
async fn invalid_list_parameters_are_400_naming_the_field() {
    let app = spawn_app().await;
    let admin = app.org_with(Role::Admin).await;
    let token = app.token(&admin).await;
    let not_a_cursor = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("no separator here")
    };
    // (path, parameter, value); the parameter is the field named.
    let cases = [
        ("/api/calls", "limit", "0"),
        ("/api/calls", "limit", "101"),
        ("/api/calls", "limit", "-5"),
        ("/api/calls", "limit", "ten"),
        ("/api/calls", "status", "bogus"),
        ("/api/calls", "cursor", "%%%not base64"),
        ("/api/calls", "cursor", not_a_cursor.as_str()),
        ("/api/users", "limit", "0"),
        ("/api/users", "limit", "101"),
        ("/api/users", "limit", "1e3"),
        ("/api/users", "cursor", "garbage!"),
        ("/api/users", "cursor", not_a_cursor.as_str()),
    ];
    for (path, field, value) in cases {
        let res = app
            .client
            .get(app.url(path))
            .query(&[(field, value)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let body = assert_problem(res, 400).await;
        assert_eq!(body["code"], "validation_failed", "{path} {field}={value}");
        assert_eq!(
            body["errors"][0]["field"], field,
            "{path} {field}={value}: {body}"
        );
        assert!(body["detail"].as_str().unwrap().contains(field));
    }
    // The bounds themselves are fine.
    for limit in ["1", "100"] {
        let res = app
            .client
            .get(app.url("/api/calls"))
            .query(&[("limit", limit)])
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
}

/// Every route registered in `src/http/mod.rs`: (path, method, has error
/// responses, takes a JSON body).
const ROUTES: &[(&str, &str, bool, bool)] = &[
    ("/", "get", false, false),
    ("/health", "get", false, false),
    ("/ready", "get", true, false),
    ("/metrics", "get", true, false),
    ("/.well-known/jwks.json", "get", false, false),
    ("/api/openapi.json", "get", false, false),
    ("/api/auth/register", "post", true, true),
    ("/api/auth/login", "post", true, true),
    ("/api/auth/session", "post", true, true),
    ("/api/auth/refresh", "post", true, true),
    ("/api/auth/logout", "post", true, false),
    ("/api/auth/logout-all", "post", true, false),
    ("/api/auth/me", "get", true, false),
    ("/api/auth/forgot-password", "post", true, true),
    ("/api/auth/reset-password", "post", true, true),
    ("/api/auth/change-password", "post", true, true),
    ("/api/auth/totp/enrol", "post", true, false),
    ("/api/auth/totp/verify", "post", true, true),
    ("/api/auth/totp/disable", "post", true, true),
    ("/api/users", "get", true, false),
    ("/api/users", "post", true, true),
    ("/api/users/{id}", "get", true, false),
    ("/api/users/{id}", "patch", true, true),
    ("/api/calls", "get", true, false),
    ("/api/calls/{id}", "get", true, false),
    ("/api/organization", "get", true, false),
    ("/api/organization/security", "put", true, true),
    ("/api/audit", "get", true, false),
    ("/api/security/events", "get", true, false),
    ("/api/security/events/stream", "get", true, false),
    ("/api/ws/ticket", "post", true, false),
    ("/api/ws", "get", true, false),
    ("/assets/{file}", "get", true, false),
    ("/favicon.ico", "get", false, false),
];

/// Resolve a local `$ref`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let doc: Value = res.json().await.expect("valid JSON");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");

    for (path, method, has_errors, has_body) in ROUTES {
        let op = paths
            .get(*path)
            .and_then(|p| p.get(*method))
            .unwrap_or_else(|| panic!("{method} {path} is missing from the OpenAPI document"));
        let responses = op["responses"].as_object().expect("responses");
        // A WebSocket route succeeds with 101 Switching Protocols.
        assert!(
            responses.keys().any(|k| k.starts_with('2') || k == "101"),
            "{method} {path}: a success response"
        );
        if *has_errors {
            let problems: Vec<&String> = responses
                .iter()
                .filter(|(k, _)| k.starts_with('4') || k.starts_with('5'))
                .filter(|(_, r)| {
                    r["content"]["application/problem+json"]["schema"]["$ref"]
                        == "#/components/schemas/Problem"
                })
                .map(|(k, _)| k)
                .collect();
            assert!(
                !problems.is_empty(),
                "{method} {path}: an error response with the Problem schema as \
                 application/problem+json: {responses:?}"
            );
            // Every error response is a problem document.
            for (status, r) in responses.iter().filter(|(k, _)| k.starts_with('4')) {
                assert_eq!(
                    r["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
        // Protected operations say so, and document the 401.
        if op.get("security").is_some() {
            assert!(responses.contains_key("401"), "{method} {path}: 401");
        }
        if *has_body {
            let body = &op["requestBody"];
            assert_eq!(body["required"], true, "{method} {path}: body required");
            let schema = &body["content"]["application/json"]["schema"];
            assert!(
                schema.get("$ref").is_some() || schema.get("type").is_some(),
                "{method} {path}: request body schema"
            );
            if let Some(r) = schema["$ref"].as_str() {
                assert!(resolve(&doc, r).is_some(), "{method} {path}: {r} resolves");
            }
        } else {
            assert!(
                op.get("requestBody").is_none(),
                "{method} {path} takes no body"
            );
        }
    }

    // Operations added after this list was written follow the same rules:
    // every client error is a problem document, and protected operations
    // document their 401.
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let responses = op["responses"].as_object().expect("responses");
            for (status, r) in responses.iter().filter(|(k, _)| k.starts_with('4')) {
                assert_eq!(
                    r["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
            if op.get("security").is_some() {
                assert!(responses.contains_key("401"), "{method} {path}: 401");
            }
        }
    }

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        assert!(resolve(&doc, &r).is_some(), "{r} does not resolve");
    }
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(
            problem["properties"].get(field).is_some(),
            "Problem has {field}"
        );
    }
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
    assert!(doc["components"]["securitySchemes"]
        .get("session_cookie")
        .is_some());
}
