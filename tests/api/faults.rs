//! The database going away under a running server: requests that need it
//! get 503 problem+json with `Retry-After` (never a 500 or a hang), the
//! server stays alive, and once the database is back it serves again with
//! every acknowledged write in place.
//!
//! PostgreSQL only (`KRALIKI_TEST_DATABASE_URL`, as in CI's PostgreSQL
//! run, which `.ci/run` always makes): the server reaches its database
//! through a TCP relay written here, and the test cuts the relay, as a
//! network partition or a database restart would. The embedded SQLite
//! database has no connection to lose, so on the SQLite run the test says
//! so and returns.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kraliki::store::users::Role;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::*;

/// A TCP relay to `upstream` on a fixed local port, which can be cut (all
/// connections dropped, new ones refused) and restored.
struct Relay {
    port: u16,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            upstream: upstream.to_string(),
            tasks: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, tasks) = (self.upstream.clone(), self.tasks.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accepting);
    }

    /// Drop every connection and stop listening.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listen again on the same port.
    async fn restore(&self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        for _ in 0..50 {
            if let Ok(listener) = TcpListener::bind(addr).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not listen on {addr} again");
    }
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_going_away_is_a_503_and_nothing_acknowledged_is_lost() {
    let Some(admin_url) = postgres_url() else {
        eprintln!("the database fault test runs on PostgreSQL (KRALIKI_TEST_DATABASE_URL)");
        return;
    };
    let relay = Relay::start(authority(&admin_url)).await;
    let port = relay.port;
    let app = spawn_app_with(move |s| {
        // Point the app's database URL at the relay.
        let path = s.secrets_dir.join("database_url");
        let url = std::fs::read_to_string(&path).unwrap();
        let relayed = url.replacen(authority(&url), &format!("127.0.0.1:{port}"), 1);
        std::fs::write(&path, relayed).unwrap();
    })
    .await;
    let admin = app.org_with(Role::Admin).await;
    let token = app.token(&admin).await;
    let create_agent = |email: &str| {
        app.client
            .post(app.url("/api/users"))
            .bearer_auth(&token)
            .json(&json!({"email": email, "role": "agent", "password": GOOD_PASSWORD}))
            .send()
    };

    // An acknowledged write before the outage.
    let email = format!("kept-{}@example.com", uuid::Uuid::new_v4().simple());
    let res = create_agent(&email).await.unwrap();
    assert_eq!(res.status(), 201);
    let kept: Value = res.json().await.unwrap();

    relay.cut();
    for path in ["/api/calls", "/api/users"] {
        let res = tokio::time::timeout(Duration::from_secs(20), app.get_auth(path, &token))
            .await
            .expect("an answer, not a hang");
        assert_eq!(res.headers()["retry-after"], "5", "{path}");
        let body = assert_problem(res, 503).await;
        assert_eq!(body["code"], "unavailable", "{path}");
        assert!(!body.to_string().contains(&port.to_string()), "{body}");
    }
    // A write during the outage is refused, not acknowledged.
    let refused_email = format!("refused-{}@example.com", uuid::Uuid::new_v4().simple());
    let res = create_agent(&refused_email).await.unwrap();
    assert_problem(res, 503).await;
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the process stays alive");

    relay.restore().await;
    let res = eventually(|| async {
        let res = app
            .get_auth(
                &format!("/api/users/{}", kept["id"].as_str().unwrap()),
                &token,
            )
            .await;
        (res.status() == 200).then_some(res)
    })
    .await;
    let user: Value = res.json().await.unwrap();
    assert_eq!(
        user["email"],
        email.as_str(),
        "the write made before the outage"
    );
    // The refused one left nothing behind: it can be made now.
    let res = create_agent(&refused_email).await.unwrap();
    assert_eq!(res.status(), 201, "no half-made user from the outage");
    assert_eq!(
        app.client
            .get(app.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
