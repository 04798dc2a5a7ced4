//! The outbound request guard over real sockets: loopback, private,
//! metadata and IPv6 loopback targets are refused before any connection,
//! names are judged by what they resolve to, every redirect is checked (and
//! at most five followed), and the allow-list opens a local server.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kraliki::security::outbound::{Lookup, OutboundClient, OutboundError, OutboundSettings};

/// A local HTTP server counting the requests it answers.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Answer a redirect to `location`.
fn redirect_to(location: &'static str) -> impl IntoResponse {
    (StatusCode::FOUND, [(header::LOCATION, location)])
}

/// Start the upstream on 127.0.0.1:0: `/ok` answers 200 `ok`, `/slow`
/// after two seconds, the `/to-*` routes redirect, and `/hop/<n>` is a
/// chain of `n` redirects to `/hop/0`, which answers `arrived`.
async fn upstream() -> Upstream {
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let here: &'static str = Box::leak(format!("http://{addr}/ok").into_boxed_str());
    let counter = hits.clone();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                "late"
            }),
        )
        .route(
            "/to-metadata",
            get(|| async { redirect_to("http://169.254.169.254/latest/meta-data/") }),
        )
        .route(
            "/to-ipv6-loopback",
            get(|| async { redirect_to("http://[::1]/") }),
        )
        .route(
            "/to-public-looking",
            get(|| async { redirect_to("http://public-looking.example/") }),
        )
        .route(
            "/to-gopher",
            get(|| async { redirect_to("gopher://127.0.0.1/") }),
        )
        .route("/to-self", get(move || async move { redirect_to(here) }))
        .route(
            "/hop/{n}",
            get(|Path(n): Path<u32>| async move {
                if n == 0 {
                    "arrived".into_response()
                } else {
                    let next = format!("/hop/{}", n - 1);
                    (StatusCode::FOUND, [(header::LOCATION, next)]).into_response()
                }
            }),
        )
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    next.run(req).await
                }
            },
        ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Upstream { addr, hits }
}

/// Test DNS: `public-looking.example` points inward, `intranet.example` at
/// the loopback upstream; nothing else resolves.
fn lookup() -> Lookup {
    Arc::new(|host: &str| -> Vec<IpAddr> {
        match host {
            "public-looking.example" => vec!["10.0.0.5".parse().unwrap()],
            "intranet.example" => vec!["127.0.0.1".parse().unwrap()],
            _ => Vec::new(),
        }
    })
}

fn settings(allow: &[&str]) -> OutboundSettings {
    OutboundSettings {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        ..OutboundSettings::default()
    }
}

/// Assert a refusal of `address`.
fn assert_forbidden(result: Result<reqwest::Response, OutboundError>, address: &str) {
    match result {
        Err(OutboundError::Forbidden { address: a, .. }) => {
            assert_eq!(a, address.parse::<IpAddr>().unwrap())
        }
        other => panic!("expected a refusal of {address}, got {other:?}"),
    }
}

#[tokio::test]
async fn internal_literal_addresses_are_refused_without_connecting() {
    let up = upstream().await;
    let client = OutboundClient::with_resolver(&settings(&[]), lookup()).unwrap();

    assert_forbidden(client.get(&up.url("/ok")).await, "127.0.0.1");
    assert_forbidden(client.get("http://10.0.0.1/").await, "10.0.0.1");
    assert_forbidden(
        client.get("http://169.254.169.254/latest/meta-data/").await,
        "169.254.169.254",
    );
    let port = up.addr.port();
    assert_forbidden(client.get(&format!("http://[::1]:{port}/ok")).await, "::1");
    assert_forbidden(
        client
            .get(&format!("http://[::ffff:127.0.0.1]:{port}/ok"))
            .await,
        "::ffff:127.0.0.1",
    );
    assert_forbidden(
        client.get(&format!("http://2130706433:{port}/ok")).await,
        "127.0.0.1",
    );
    assert_eq!(up.hits(), 0, "no refused request may reach the server");

    let err = client.get("file:///etc/passwd").await.unwrap_err();
    assert!(matches!(err, OutboundError::Scheme { .. }), "{err:?}");
}

#[tokio::test]
async fn a_public_looking_name_resolving_inward_is_refused() {
    let client = OutboundClient::with_resolver(&settings(&[]), lookup()).unwrap();
    let err = client
        .get("http://public-looking.example/hook?token=abc")
        .await
        .unwrap_err();
    assert_eq!(
        err,
        OutboundError::Forbidden {
            host: "public-looking.example".into(),
            address: "10.0.0.5".parse().unwrap(),
        }
    );
    assert!(!err.to_string().contains("token=abc"), "{err}");

    // Allow-listing another range does not open this one.
    let client = OutboundClient::with_resolver(&settings(&["127.0.0.1"]), lookup()).unwrap();
    assert_forbidden(
        client.get("http://public-looking.example/").await,
        "10.0.0.5",
    );
}

#[tokio::test]
async fn the_allow_list_makes_a_local_server_reachable() {
    let up = upstream().await;
    let client = OutboundClient::with_resolver(&settings(&["127.0.0.1"]), lookup()).unwrap();

    let res = client.get(&up.url("/ok")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");

    // Through a name, the URL's port is kept.
    let port = up.addr.port();
    let res = client
        .get(&format!("http://intranet.example:{port}/ok"))
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "ok");

    // A redirect to an allowed target is followed.
    let res = client.get(&up.url("/to-self")).await.unwrap();
    assert_eq!(res.text().await.unwrap(), "ok");
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn redirects_to_refused_targets_are_not_followed() {
    let up = upstream().await;
    let client = OutboundClient::with_resolver(&settings(&["127.0.0.1"]), lookup()).unwrap();

    assert_forbidden(client.get(&up.url("/to-metadata")).await, "169.254.169.254");
    assert_forbidden(client.get(&up.url("/to-ipv6-loopback")).await, "::1");
    // A redirect to a name is judged by what the name resolves to.
    assert_forbidden(client.get(&up.url("/to-public-looking")).await, "10.0.0.5");
    let err = client.get(&up.url("/to-gopher")).await.unwrap_err();
    assert!(matches!(err, OutboundError::Scheme { .. }), "{err:?}");
    assert_eq!(up.hits(), 4, "only the redirecting requests reached it");

    // Without the allow-list the same metadata redirect is refused too,
    // and the first hop already.
    let strict = OutboundClient::with_resolver(&settings(&[]), lookup()).unwrap();
    assert_forbidden(strict.get(&up.url("/to-metadata")).await, "127.0.0.1");
}

#[tokio::test]
async fn at_most_five_redirects_are_followed() {
    assert_eq!(kraliki::security::outbound::MAX_REDIRECTS, 5);
    let up = upstream().await;
    let client = OutboundClient::with_resolver(&settings(&["127.0.0.1"]), lookup()).unwrap();

    // Five redirects: followed to the end.
    let res = client.get(&up.url("/hop/5")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "arrived");
    assert_eq!(up.hits(), 6);

    // Six: the sixth is refused, and its target never asked.
    let err = client.get(&up.url("/hop/6?token=abc")).await.unwrap_err();
    assert_eq!(
        err,
        OutboundError::Redirect {
            host: "127.0.0.1".into(),
            reason: "too many redirects",
        }
    );
    assert!(!err.to_string().contains("hop"), "{err}");
    assert_eq!(up.hits(), 6 + 6, "/hop/6 to /hop/1 answered, /hop/0 never");
    assert!(!err.is_transient(), "retrying would not help");
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let up = upstream().await;
    let settings = OutboundSettings {
        allow: vec!["127.0.0.1".into()],
        timeout_secs: 1,
    };
    let client = OutboundClient::new(&settings).unwrap();
    let err = client.get(&up.url("/slow")).await.unwrap_err();
    assert!(matches!(err, OutboundError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
}
