//! Prometheus metrics: what `GET /metrics` counts, who may read it on the
//! main listener, and the unauthenticated `metrics.listen` listener of the
//! real binary.

use kraliki::store::users::Role;

use crate::helpers::*;
use crate::production::{expect_listening, generate_key_dir, kraliki};

/// The value of the sample line whose name and labels are `series`
/// exactly, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a sample value is a number"))
}

/// An app whose operator organization exists, with one admin of it; the
/// app and that admin's access token.
async fn with_operator_admin() -> (TestApp, String) {
    let operator = uuid::Uuid::new_v4().to_string();
    let configured = operator.clone();
    let app = spawn_app_with(move |s| s.operator_organization = configured).await;
    app.create_org_with_id(&operator, "Operator").await;
    let admin = app.create_user(&operator, Role::Admin).await;
    let token = app.token(&admin).await;
    (app, token)
}

#[tokio::test]
async fn metrics_count_requests_per_route_template_and_security_events_per_type() {
    let (app, token) = with_operator_admin().await;
    let customer = app.org_with(Role::Agent).await;
    let agent_token = app.token(&customer).await;

    for _ in 0..3 {
        let res = app.get_auth("/api/calls", &agent_token).await;
        assert_eq!(res.status(), 200);
    }
    let missing = uuid::Uuid::new_v4();
    let res = app
        .get_auth(&format!("/api/calls/{missing}"), &agent_token)
        .await;
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .get(app.url("/no-such-page-3f9a"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .login_raw(&customer.email, "not-the-password-at-all")
        .await;
    assert_eq!(res.status(), 401);
    let failures = app.events("AUTH_FAILURE").await.len() as f64;
    assert!(failures >= 1.0);

    let res = app.get_auth("/metrics", &token).await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let text = res.text().await.unwrap();

    let calls = r#"kraliki_http_requests_total{method="GET",route="/api/calls",status="200"}"#;
    assert_eq!(sample(&text, calls), Some(3.0), "{text}");
    let one_call =
        r#"kraliki_http_requests_total{method="GET",route="/api/calls/{id}",status="404"}"#;
    assert_eq!(sample(&text, one_call), Some(1.0), "{text}");
    let unmatched = r#"kraliki_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(sample(&text, unmatched), Some(1.0), "{text}");
    let logins =
        r#"kraliki_http_requests_total{method="POST",route="/api/auth/login",status="401"}"#;
    assert_eq!(sample(&text, logins), Some(1.0), "{text}");
    let timed = r#"kraliki_http_request_duration_seconds_count{method="GET",route="/api/calls"}"#;
    assert_eq!(sample(&text, timed), Some(3.0), "{text}");
    let under_30s =
        r#"kraliki_http_request_duration_seconds_bucket{method="GET",route="/api/calls",le="30"}"#;
    assert_eq!(sample(&text, under_30s), Some(3.0), "{text}");

    let event = text
        .lines()
        .filter(|l| l.starts_with(r#"kraliki_security_events_total{type="AUTH_FAILURE","#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>();
    assert_eq!(event, failures, "{text}");
    assert!(text.contains("# TYPE kraliki_http_requests_total counter"));
    assert!(text.contains("# TYPE kraliki_http_request_duration_seconds histogram"));

    // Labels are route templates: no raw path, id or query reaches them.
    assert!(!text.contains("no-such-page"), "{text}");
    assert!(!text.contains(&missing.to_string()), "{text}");
    assert!(!text.contains(&customer.email), "{text}");
}

#[tokio::test]
async fn only_admins_of_the_operator_organization_read_metrics() {
    let (app, operator_token) = with_operator_admin().await;

    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_problem(res, 401).await;

    let customer_admin = app.org_with(Role::Admin).await;
    let customer_token = app.token(&customer_admin).await;
    let agent = app.create_user(&customer_admin.org, Role::Agent).await;
    let agent_token = app.token(&agent).await;
    for (who, token) in [("agent", &agent_token), ("customer admin", &customer_token)] {
        let res = app.get_auth("/metrics", token).await;
        assert_eq!(res.status(), 403, "{who}");
        let body = assert_problem(res, 403).await;
        assert_eq!(body["code"], "forbidden", "{who}");
    }
    let denied = app.events("ACCESS_DENIED").await;
    let for_metrics: Vec<_> = denied
        .iter()
        .filter(|e| e.details.contains(r#""permission":"view_metrics""#))
        .collect();
    assert_eq!(for_metrics.len(), 2, "{denied:#?}");
    assert!(for_metrics
        .iter()
        .any(|e| e.user_id.as_deref() == Some(customer_admin.id.as_str())));

    let res = app.get_auth("/metrics", &operator_token).await;
    assert_eq!(res.status(), 200);

    // Without an operator organization nobody reads them here (the
    // internal listener is the way).
    let plain = spawn_app().await;
    let admin = plain.org_with(Role::Admin).await;
    let token = plain.token(&admin).await;
    let res = plain.get_auth("/metrics", &token).await;
    assert_problem(res, 403).await;
}

#[tokio::test]
async fn the_metrics_listener_serves_metrics_alone_without_authentication() {
    let secrets = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    generate_key_dir(secrets.path()).await;
    let mut cmd = kraliki();
    cmd.env("KRALIKI_SECRETS_DIR", secrets.path())
        .env("KRALIKI_METRICS__LISTEN", "127.0.0.1:0")
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path());
    let server = expect_listening(cmd).await;
    let stderr = server.stderr();
    let metrics_url = stderr
        .lines()
        .find_map(|l| l.strip_prefix("kraliki metrics on "))
        .unwrap_or_else(|| panic!("no metrics line in:\n{stderr}"))
        .trim()
        .to_string();
    assert!(
        metrics_url.starts_with("http://127.0.0.1:"),
        "{metrics_url}"
    );
    assert!(!metrics_url.contains(server.base.trim_start_matches("http://")));

    let client = reqwest::Client::new();
    for _ in 0..2 {
        let res = client
            .get(format!("{}/health", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    // The main listener still wants an operator admin.
    let res = client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = client.get(&metrics_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains; preload"
    );
    let text = res.text().await.unwrap();
    let health = r#"kraliki_http_requests_total{method="GET",route="/health",status="200"}"#;
    assert_eq!(sample(&text, health), Some(2.0), "{text}");
    let refused = r#"kraliki_http_requests_total{method="GET",route="/metrics",status="401"}"#;
    assert_eq!(sample(&text, refused), Some(1.0), "{text}");

    // Nothing else is served there: not the API, not the start page.
    let root = metrics_url.trim_end_matches("/metrics");
    for path in ["/api/calls", "/", "/health", "/api/openapi.json"] {
        let res = client.get(format!("{root}{path}")).send().await.unwrap();
        assert_problem(res, 404).await;
    }
    let (_, err) = server.stop().await;
    assert!(!err.contains("metrics listener stopped"), "{err}");
}
