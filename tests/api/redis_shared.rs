//! Two instances behave as one through Redis (DESIGN §1, §5, §8): a login
//! limit of 5 is 5 across both; when Redis goes away each instance keeps
//! limiting on its own, raises `DEGRADED` and reports not ready; when Redis
//! returns, the limit is shared again.
//!
//! This runs the real binary twice, each with its own data folder (so its
//! own SQLite database: nothing but Redis is shared), against a throwaway
//! `redis-server` on a free port — never the shared Redis on 6379. The
//! client address of each request comes from `X-Forwarded-For`, which the
//! instances believe from 127.0.0.1, so every phase uses a fresh address.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::production::{generate_key_dir, kraliki, run};

/// How long a server or Redis may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long recovery may take once Redis is back: the limiter tries Redis
/// again at most once a second.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(6);

/// The line `kraliki serve` prints on standard error once it listens.
const LISTENING: &str = "kraliki listening on http://";

/// A `redis-server` of this test alone, on a free port, with a password
/// as in production, killed when dropped. Nothing is persisted.
struct ThrowawayRedis {
    child: Option<std::process::Child>,
    port: u16,
    password: String,
    dir: tempfile::TempDir,
}

impl ThrowawayRedis {
    /// Start on a free port (another if that one is taken meanwhile).
    async fn start() -> Self {
        let mut redis = ThrowawayRedis {
            child: None,
            port: 0,
            password: uuid::Uuid::new_v4().simple().to_string(),
            dir: tempfile::tempdir().unwrap(),
        };
        for _ in 0..5 {
            redis.port = free_port();
            if redis.run().await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}", self.password, self.port)
    }

    /// Spawn the server on `self.port` and wait until it answers PING;
    /// false if it exits first (the port was taken).
    async fn run(&mut self) -> bool {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--requirepass", &self.password])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH for this test");
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if ping(self.port, &self.password).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// Start again on the same port, after [`ThrowawayRedis::kill`].
    async fn restart(&mut self) {
        // The port was just ours; give it a moment if something else got it.
        for _ in 0..20 {
            if self.run().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server could not start again on port {}", self.port);
    }

    /// Kill the server and wait until it is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether a Redis server with `password` answers PING on `port`.
async fn ping(port: u16, password: &str) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let command = format!("AUTH {password}\r\nPING\r\n");
        stream.write_all(command.as_bytes()).await.ok()?;
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+OK\r\n+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// One running `kraliki serve`, its standard output (security events) and
/// standard error (diagnostics) read in the background.
struct Instance {
    name: &'static str,
    /// Killed when dropped (`kill_on_drop`).
    _child: tokio::process::Child,
    base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Instance {
    /// Development-mode `kraliki serve` on a loopback port, with its own
    /// data folder and the shared secrets folder.
    async fn start(name: &'static str, secrets: &Path, data: &Path, key_prefix: &str) -> Instance {
        Instance::start_with(name, secrets, data, key_prefix, &[]).await
    }

    /// [`Instance::start`] with more environment variables.
    async fn start_with(
        name: &'static str,
        secrets: &Path,
        data: &Path,
        key_prefix: &str,
        env: &[(&str, &str)],
    ) -> Instance {
        let mut cmd = kraliki();
        cmd.envs(env.iter().copied())
            .env("KRALIKI_SECRETS_DIR", secrets)
            .env("KRALIKI_REDIS_KEY_PREFIX", key_prefix)
            .env("KRALIKI_TRUSTED_PROXIES", "127.0.0.1/32")
            .arg("--data-dir")
            .arg(data)
            .args(["serve", "--listen", "127.0.0.1:0"]);
        let mut child = cmd.spawn().expect("kraliki starts");

        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        for (pipe, buf, tx) in [
            (
                Box::new(child.stdout.take().unwrap())
                    as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                stdout.clone(),
                None,
            ),
            (
                Box::new(child.stderr.take().unwrap()),
                stderr.clone(),
                Some(tx),
            ),
        ] {
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    {
                        let mut b = buf.lock().unwrap();
                        b.push_str(&line);
                        b.push('\n');
                    }
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            });
        }

        let listening = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = rx.recv().await {
                if let Some(addr) = line.strip_prefix(LISTENING) {
                    return Some(format!("http://{}", addr.trim()));
                }
            }
            None
        })
        .await;
        match listening {
            Ok(Some(base)) => Instance {
                name,
                _child: child,
                base,
                stdout,
                stderr,
            },
            _ => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "instance {name} did not listen; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The security events written so far (JSON lines on stdout).
    fn security_events(&self, event_type: &str) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "SECURITY EVENT" && v["type"] == event_type)
            .collect()
    }

    /// Wait (briefly) for the first security event of a type.
    async fn wait_for_event(&self, event_type: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(event) = self.security_events(event_type).into_iter().next() {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "instance {} wrote no {event_type} event; stdout:\n{}",
                self.name,
                self.stdout.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr_contains(&self, needle: &str) -> bool {
        self.stderr.lock().unwrap().contains(needle)
    }
}

/// The client, and every status it has seen.
struct Client {
    http: reqwest::Client,
    seen: Vec<(String, u16)>,
}

impl Client {
    fn new() -> Client {
        Client {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            seen: Vec::new(),
        }
    }

    /// A failed login from `client_ip` (through the trusted proxy) with a
    /// fresh unknown e-mail, so that only the rate limit can refuse it.
    /// Returns the status and the `RateLimit` field.
    async fn bad_login(&mut self, on: &Instance, client_ip: &str) -> (u16, String) {
        let res = self
            .http
            .post(on.url("/api/auth/login"))
            .header("x-forwarded-for", client_ip)
            .json(&json!({
                "email": format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple()),
                "password": "wrong-password-123",
            }))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let fields = res
            .headers()
            .get("ratelimit")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        self.seen
            .push((format!("{} POST /api/auth/login", on.name), status));
        assert!(status < 500, "instance {} answered {status}", on.name);
        (status, fields)
    }

    /// Failed logins that must all be let through, with the remaining
    /// quota each should report.
    async fn allowed(&mut self, on: &Instance, client_ip: &str, remaining: &[u64]) {
        for r in remaining {
            let (status, fields) = self.bad_login(on, client_ip).await;
            assert_eq!(
                status, 401,
                "instance {} refused a login from {client_ip} that should have \
                 {r} left after it ({fields})",
                on.name
            );
            let expected = format!("\"login\";r={r};t=");
            assert!(
                fields.starts_with(&expected),
                "instance {}: expected {expected}…, got {fields:?}",
                on.name
            );
        }
    }

    /// A login that must be refused by the rate limit.
    async fn refused(&mut self, on: &Instance, client_ip: &str) {
        let (status, fields) = self.bad_login(on, client_ip).await;
        assert_eq!(status, 429, "instance {} let {client_ip} through", on.name);
        assert!(fields.starts_with("\"login\";r=0;t="), "{fields}");
    }

    async fn get(&mut self, on: &Instance, path: &str) -> reqwest::Response {
        let res = self.http.get(on.url(path)).send().await.unwrap();
        self.seen
            .push((format!("{} GET {path}", on.name), res.status().as_u16()));
        res
    }

    /// `/ready` answers 200.
    async fn ready(&mut self, on: &Instance) {
        let res = self.get(on, "/ready").await;
        assert_eq!(res.status(), 200, "instance {} not ready", on.name);
    }

    /// `/ready` answers 503, naming Redis and nothing of its address.
    async fn not_ready(&mut self, on: &Instance, redis: &ThrowawayRedis) {
        let res = self.get(on, "/ready").await;
        assert_eq!(
            res.status(),
            503,
            "instance {} ready without Redis",
            on.name
        );
        let content_type = res.headers()[reqwest::header::CONTENT_TYPE].clone();
        assert_eq!(content_type, "application/problem+json");
        let text = res.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["status"], 503);
        assert_eq!(body["code"], "unavailable");
        assert_eq!(body["detail"], "Redis is not reachable.", "{text}");
        assert!(!text.contains("redis://") && !text.contains(&format!(":{}", redis.port)));
    }
}

/// Write a secret file the way an operator would: mode 0600.
fn write_secret(dir: &Path, name: &str, value: &str) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))
        .unwrap();
    std::io::Write::write_all(&mut file, value.as_bytes()).unwrap();
}

/// Two instances, A and B, sharing one secrets folder and `redis`, each
/// with its own data folder, under a key prefix of their own.
struct Pair {
    a: Instance,
    b: Instance,
    _folders: [tempfile::TempDir; 3],
}

impl Pair {
    async fn start(redis: &ThrowawayRedis) -> Pair {
        let secrets = tempfile::tempdir().unwrap();
        generate_key_dir(secrets.path()).await;
        write_secret(secrets.path(), "redis_url", &redis.url());
        let prefix = format!("kraliki-test-{}:", uuid::Uuid::new_v4().simple());
        let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = tokio::join!(
            Instance::start("A", secrets.path(), data_a.path(), &prefix),
            Instance::start("B", secrets.path(), data_b.path(), &prefix),
        );
        Pair {
            a,
            b,
            _folders: [secrets, data_a, data_b],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_login_limits_through_redis_and_fall_back_without_it() {
    let mut redis = ThrowawayRedis::start().await;
    let Pair { a, b, _folders } = Pair::start(&redis).await;
    let mut client = Client::new();
    client.ready(&a).await;
    client.ready(&b).await;

    // Shared: 3 on A and 2 on B use up one budget of 5; the 6th is refused
    // on either, and the block holds on both.
    let ip = "198.51.100.1";
    client.allowed(&a, ip, &[4, 3, 2]).await;
    client.allowed(&b, ip, &[1, 0]).await;
    client.refused(&a, ip).await;
    client.refused(&b, ip).await;
    let event = a.wait_for_event("RATE_LIMIT_EXCEEDED").await;
    assert_eq!(event["ip"], ip);
    assert!(
        b.security_events("RATE_LIMIT_EXCEEDED").is_empty(),
        "only the instance that saw the violation reports it"
    );
    assert!(a.security_events("DEGRADED").is_empty());
    assert!(b.security_events("DEGRADED").is_empty());

    // Redis goes away: neither instance is ready…
    redis.kill();
    client.not_ready(&a, &redis).await;
    client.not_ready(&b, &redis).await;

    // …but each keeps limiting on its own: a new address gets 5 on A, the
    // 6th is refused; B never saw those 5 and counts its own 5.
    let ip = "198.51.100.2";
    client.allowed(&a, ip, &[4, 3, 2, 1, 0]).await;
    client.refused(&a, ip).await;
    client.allowed(&b, ip, &[4, 3, 2, 1, 0]).await;
    client.refused(&b, ip).await;
    for instance in [&a, &b] {
        let event = instance.wait_for_event("DEGRADED").await;
        assert_eq!(event["component"], "rate_limit", "{event}");
        assert!(!event.to_string().contains(&redis.url()));
        assert_eq!(
            instance.security_events("DEGRADED").len(),
            1,
            "instance {}: one DEGRADED event per outage",
            instance.name
        );
    }

    // Redis returns (empty, on the same port): both are ready again at once…
    redis.restart().await;
    client.ready(&a).await;
    client.ready(&b).await;

    // …and each goes back to Redis with its next limited request once its
    // retry is due (at most a second after its last failure).
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    for instance in [&a, &b] {
        while !instance.stderr_contains("Redis answers again") {
            assert!(
                Instant::now() < deadline,
                "instance {} did not go back to Redis; stderr:\n{}",
                instance.name,
                instance.stderr.lock().unwrap()
            );
            let res = client.get(instance, "/api/openapi.json").await;
            assert_eq!(res.status(), 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Shared again: 3 on A, 2 on B, and the 6th is refused on either.
    let ip = "198.51.100.3";
    client.allowed(&a, ip, &[4, 3, 2]).await;
    client.allowed(&b, ip, &[1, 0]).await;
    client.refused(&b, ip).await;
    client.refused(&a, ip).await;

    // Nothing failed on the server side at any point, outage included,
    // except the readiness answers that were meant to.
    let failures: Vec<_> = client
        .seen
        .iter()
        .filter(|(what, status)| *status >= 500 && !what.ends_with("GET /ready"))
        .collect();
    assert!(failures.is_empty(), "5xx answers: {failures:?}");
    let not_ready = client
        .seen
        .iter()
        .filter(|(what, status)| *status >= 500 && what.ends_with("GET /ready"))
        .count();
    assert_eq!(not_ready, 2, "only the two checks during the outage");

    // The Redis password was never written anywhere, outage included.
    for instance in [&a, &b] {
        let stdout = instance.stdout.lock().unwrap();
        let stderr = instance.stderr.lock().unwrap();
        assert!(stderr.contains("Redis failed"), "the outage was logged");
        assert!(
            !stdout.contains(&redis.password) && !stderr.contains(&redis.password),
            "instance {} wrote the Redis password",
            instance.name
        );
    }
}

#[tokio::test]
async fn ready_names_redis_when_it_cannot_be_reached() {
    // An in-process server whose Redis URL points at a closed port (the
    // harness reads the secrets folder after `configure`).
    let port = free_port();
    let app = crate::helpers::spawn_app_with(move |s| {
        write_secret(
            &s.secrets_dir,
            "redis_url",
            &format!("redis://127.0.0.1:{port}"),
        );
    })
    .await;
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["detail"], "Redis is not reachable.");
    assert!(body["instance"].is_string(), "{text}");
    assert!(!text.contains("redis://") && !text.contains(&format!(":{port}")));

    // Health is only about the process.
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_intrusion_blocks_through_redis() {
    let redis = ThrowawayRedis::start().await;
    let Pair { a, b, _folders } = Pair::start(&redis).await;
    let http = reqwest::Client::new();
    let attack = |on: &Instance, ip: &str| {
        http.get(on.url("/api/calls?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
            .header("x-forwarded-for", ip)
            .send()
    };

    // Ten hits (the default threshold) spread over both instances: five on
    // A, four on B, and the tenth on A blocks the address.
    let ip = "203.0.113.40";
    for (i, on) in [&a, &a, &a, &a, &a, &b, &b, &b, &b].into_iter().enumerate() {
        let res = attack(on, ip).await.unwrap();
        assert_eq!(
            res.status(),
            401,
            "hit {} on {} is not blocked yet",
            i + 1,
            on.name
        );
    }
    let res = attack(&a, ip).await.unwrap();
    assert_eq!(res.status(), 403, "the tenth hit blocks");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], "ip_blocked");
    let blocked = a.wait_for_event("IP_BLOCKED").await;
    assert_eq!(blocked["ip"], ip);
    assert!(b.security_events("IP_BLOCKED").is_empty());

    // B refuses that address too, for anything, and serves others.
    let res = http
        .get(b.url("/api/openapi.json"))
        .header("x-forwarded-for", ip)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "the block holds on the other instance");
    assert!(
        res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let res = http
        .get(b.url("/api/openapi.json"))
        .header("x-forwarded-for", "203.0.113.41")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(a.security_events("SUSPICIOUS_ACTIVITY").len(), 6);
    assert_eq!(b.security_events("SUSPICIOUS_ACTIVITY").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_on_one_instance_sees_live_events_raised_on_the_other() {
    let redis = ThrowawayRedis::start().await;
    let secrets = tempfile::tempdir().unwrap();
    generate_key_dir(secrets.path()).await;
    write_secret(secrets.path(), "redis_url", &redis.url());
    let prefix = format!("kraliki-test-{}:", uuid::Uuid::new_v4().simple());
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // An operator admin on A (whose stream carries events of no
    // organization, like a rate-limited sign-in), made on the command line.
    let cli = |args: &[&str]| {
        let mut cmd = kraliki();
        cmd.env("KRALIKI_SECRETS_DIR", secrets.path())
            .arg("--data-dir")
            .arg(data_a.path())
            .args(args);
        cmd
    };
    let made = run(cli(&["orgs", "create", "--name", "Operator"]), None).await;
    assert!(made.status.success(), "{}", made.stderr);
    let operator = made.stdout.trim().to_string();
    let email = "ops@operator.example";
    let made = run(
        cli(&[
            "users", "create", "--org", &operator, "--email", email, "--role", "admin",
        ]),
        Some(&format!("{}\n", crate::helpers::GOOD_PASSWORD)),
    )
    .await;
    assert!(made.status.success(), "{}", made.stderr);
    // And an admin of a customer organization, who must see only their own.
    let made = run(cli(&["orgs", "create", "--name", "Customer"]), None).await;
    assert!(made.status.success(), "{}", made.stderr);
    let customer = made.stdout.trim().to_string();
    let customer_email = "admin@customer.example";
    let made = run(
        cli(&[
            "users",
            "create",
            "--org",
            &customer,
            "--email",
            customer_email,
            "--role",
            "admin",
        ]),
        Some(&format!("{}\n", crate::helpers::GOOD_PASSWORD)),
    )
    .await;
    assert!(made.status.success(), "{}", made.stderr);
    let env = [("KRALIKI_OPERATOR_ORGANIZATION", operator.as_str())];
    let (a, b) = tokio::join!(
        Instance::start_with("A", secrets.path(), data_a.path(), &prefix, &env),
        Instance::start("B", secrets.path(), data_b.path(), &prefix),
    );

    let http = reqwest::Client::new();
    // An admin's live stream on A, collected in the background.
    let stream = |email: &'static str| {
        let (http, url, login) = (
            http.clone(),
            a.url("/api/security/events/stream"),
            a.url("/api/auth/login"),
        );
        async move {
            let res = http
                .post(login)
                .json(&json!({"email": email, "password": crate::helpers::GOOD_PASSWORD}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let token = res.json::<Value>().await.unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_string();
            let res = http.get(url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(res.status(), 200);
            let received = Arc::new(Mutex::new(String::new()));
            let sink = received.clone();
            tokio::spawn(async move {
                let mut body = res;
                while let Ok(Some(chunk)) = body.chunk().await {
                    sink.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk));
                }
            });
            received
        }
    };
    let alerts_in = |received: &Arc<Mutex<String>>| -> Vec<Value> {
        received
            .lock()
            .unwrap()
            .split("\n\n")
            .filter(|frame| frame.contains("event: security.alert"))
            .filter_map(|frame| frame.lines().find_map(|l| l.strip_prefix("data: ")))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect()
    };
    let received = stream(email).await;
    let theirs = stream(customer_email).await;

    // Whoever can write to Redis cannot inject alerts: an unsigned message
    // and one signed with another key, both naming the customer.
    let forged_event = json!({
        "id": "forged", "organization_id": customer, "event_type": "TOKEN_REUSE_DETECTED",
        "severity": "CRITICAL", "ip": "192.0.2.66", "method": "POST", "url": "/forged",
        "request_id": "forged", "user_id": null, "details": "{}", "created_at": 1
    });
    let envelope = json!({"origin": "intruder", "event": forged_event}).to_string();
    let mut publisher = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for message in [envelope.clone(), format!("{}.{envelope}", "ab".repeat(32))] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("{prefix}security-events"))
            .arg(message)
            .query_async(&mut publisher)
            .await
            .unwrap();
    }

    // A sign-in flood on B: the sixth is refused there, a HIGH event.
    let mut client = Client::new();
    let ip = "198.51.100.60";
    client.allowed(&b, ip, &[4, 3, 2, 1, 0]).await;
    client.refused(&b, ip).await;
    let raised = b.wait_for_event("RATE_LIMIT_EXCEEDED").await;
    assert_eq!(raised["severity"], "HIGH", "{raised}");

    // It reaches the operator admin's stream on A, once.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alerts_in(&received).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a duplicate (or a forged alert) to show up, were there one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts = alerts_in(&received);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["type"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(alerts[0]["ip"], ip);
    assert_eq!(
        alerts[0]["request_id"], raised["request_id"],
        "the same event"
    );
    // The customer's admin sees neither that event (of no organization)
    // nor the forged ones naming their organization.
    assert!(alerts_in(&theirs).is_empty(), "{:?}", alerts_in(&theirs));
    // A only passed it on: it did not log, store or alert it as its own.
    assert!(a.security_events("RATE_LIMIT_EXCEEDED").is_empty());
    assert!(a.stderr_contains("dropped an unsigned or invalid message"));
}
