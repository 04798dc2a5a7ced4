//! The repository's nginx configuration, rendered for loopback and run for
//! real: in front of two `kraliki serve` processes (headers, redirect,
//! client address, body limit, load spreading), and in front of a small
//! upstream written here for what the application cannot show yet (the
//! media stream route) or cannot show at all (the headers nginx forwards as
//! they arrive, unbuffered event streams, nginx's own error answers). The
//! application's own WebSocket (`/api/ws`, ticket from `/api/ws/ticket`) is
//! also run through nginx for real.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use sha1::Digest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::support::{
    assert_security_headers_once, repo_file, Kraliki, Policy, Site, CLIENT_IP, TEMPLATE_VARS,
};

/// An address no test client uses: a forged `X-Forwarded-For` value.
const FORGED_IP: &str = "203.0.113.66";

#[test]
fn the_template_placeholders_are_exactly_those_the_stack_sets() {
    let template = repo_file("deploy/nginx/templates/kraliki.conf.template");
    let mut used = BTreeSet::new();
    for line in template.lines() {
        let code = line.split('#').next().unwrap_or_default();
        let mut rest = code;
        while let Some(start) = rest.find("${") {
            let end = rest[start..].find('}').expect("closed placeholder") + start;
            used.insert(rest[start + 2..end].to_string());
            rest = &rest[end..];
        }
    }
    let known: BTreeSet<String> = TEMPLATE_VARS.iter().map(|s| s.to_string()).collect();
    assert_eq!(used, known, "placeholders of the template");

    // The stack gives nginx a value for each, and lets envsubst replace
    // nothing else.
    let stack: serde_norway::Value =
        serde_norway::from_str(&repo_file("deploy/production.yml")).unwrap();
    let env = &stack["services"]["nginx"]["environment"];
    for name in TEMPLATE_VARS {
        assert!(
            env[*name].as_str().is_some(),
            "nginx environment sets {name}"
        );
    }
    let filter = env["NGINX_ENVSUBST_FILTER"].as_str().unwrap();
    for name in TEMPLATE_VARS {
        assert!(filter.contains(name), "NGINX_ENVSUBST_FILTER names {name}");
    }
}

/// The directives' values, each as written once at the start of a line
/// (comments left out).
fn directive_values(text: &str, name: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter_map(|l| l.strip_prefix(name))
        .filter(|rest| rest.starts_with(' '))
        .map(|rest| rest.trim().trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn the_configuration_pins_what_a_live_test_cannot_show() {
    // TLS 1.0 and 1.1 refused: the test client (rustls) cannot even offer
    // them, so the configuration itself is checked.
    let site = repo_file("deploy/nginx/templates/kraliki.conf.template");
    let main = repo_file("deploy/nginx/nginx.conf");
    assert_eq!(
        directive_values(&site, "ssl_protocols"),
        vec!["TLSv1.2 TLSv1.3"]
    );
    assert_eq!(
        directive_values(&site, "ssl_prefer_server_ciphers"),
        vec!["off"]
    );
    assert_eq!(directive_values(&site, "ssl_session_tickets"), vec!["off"]);
    for cipher in directive_values(&site, "ssl_ciphers")[0].split(':') {
        assert!(
            cipher.starts_with("ECDHE-")
                && (cipher.contains("-GCM-") || cipher.ends_with("CHACHA20-POLY1305")),
            "AEAD with forward secrecy only: {cipher}"
        );
    }
    assert_eq!(directive_values(&main, "server_tokens"), vec!["off"]);
    assert_eq!(directive_values(&main, "client_max_body_size"), vec!["1m"]);
    assert_eq!(
        directive_values(&main, "large_client_header_buffers"),
        vec!["4 16k"]
    );
    // Nothing hides what the application sets, and no header is added to
    // proxied answers (only the error locations include the snippet).
    assert!(directive_values(&site, "proxy_hide_header").is_empty());
    assert!(directive_values(&main, "proxy_hide_header").is_empty());
    assert!(directive_values(&site, "add_header")
        .iter()
        .all(|v| v.starts_with("Retry-After ")));
    assert!(directive_values(&main, "add_header").is_empty());
    assert!(directive_values(&site, "proxy_intercept_errors").is_empty());
    // Every forwarded-for line replaces the header.
    let xff = directive_values(&site, "proxy_set_header X-Forwarded-For");
    assert!(!xff.is_empty());
    assert!(xff.iter().all(|v| v == "$remote_addr"), "{xff:?}");
}

#[test]
fn the_rendered_configuration_passes_nginx_t() {
    let site = Site::render("server 127.0.0.1:9;");
    let out = site.check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nginx -t: {stderr}{}",
        site.error_log()
    );
    assert!(stderr.contains("test is successful"), "{stderr}");
    // Deprecation and other warnings are problems waiting to happen.
    assert!(!stderr.contains("[warn]"), "{stderr}");
    assert!(!site.error_log().contains("[warn]"), "{}", site.error_log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_in_front_of_two_kraliki_instances() {
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        Kraliki::start("127.0.0.1/32"),
        Kraliki::start("127.0.0.1/32")
    );
    let site = Site::render(&format!("server {}; server {};", a.addr, b.addr));
    let _nginx = site.start().await;
    let client = site.https_client();

    // Every security header exactly once: a JSON API answer, the console
    // page, and 404s, all made by the application and passed through.
    let res = client.get(site.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_security_headers_once(res.headers(), Policy::Operational, "GET /health");
    let res = client
        .get(site.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_security_headers_once(res.headers(), Policy::Api, "GET /api/openapi.json");
    let res = client.get(site.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert_security_headers_once(res.headers(), Policy::Console, "GET /");
    let res = client
        .get(site.url("/api/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_security_headers_once(res.headers(), Policy::Api, "404 under /api");
    let res = client.get(site.url("/no-such-page")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_security_headers_once(res.headers(), Policy::Console, "404 page");

    // Plain HTTP is only a permanent redirect to HTTPS, with the headers.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .get(format!(
            "http://127.0.0.1:{}/api/calls?limit=5",
            site.http_port
        ))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 301);
    assert_eq!(
        res.headers()["location"],
        "https://localhost/api/calls?limit=5",
        "to the configured name, never the client's Host"
    );
    assert_security_headers_once(res.headers(), Policy::Api, "the HTTP redirect");

    // Failed sign-ins with a forged X-Forwarded-For: the application sees
    // the address nginx saw (127.0.0.2: the client binds it, while nginx
    // itself connects from 127.0.0.1), never the forged one. Four of them,
    // spread over both instances.
    for i in 0..4 {
        let res = client
            .post(site.url("/api/auth/login"))
            .header("X-Forwarded-For", FORGED_IP)
            .header("X-Real-IP", FORGED_IP)
            .json(&serde_json::json!({
                "email": format!("nobody-{i}@example.com"),
                "password": "not-the-password-of-anyone",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "failed sign-in {i}");
        assert_security_headers_once(res.headers(), Policy::Api, "failed sign-in");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (events_a, events_b) = loop {
        let failures = |k: &Kraliki| -> Vec<serde_json::Value> {
            k.security_events()
                .into_iter()
                .filter(|e| e["type"] == "AUTH_FAILURE")
                .collect()
        };
        let (ea, eb) = (failures(&a), failures(&b));
        if ea.len() + eb.len() >= 4 || std::time::Instant::now() > deadline {
            break (ea, eb);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        events_a.len() + events_b.len(),
        4,
        "four AUTH_FAILURE events; stderr:\n{}\n{}",
        a.stderr(),
        b.stderr()
    );
    for event in events_a.iter().chain(&events_b) {
        assert_eq!(event["ip"], CLIENT_IP, "{event}");
        assert!(!event.to_string().contains(FORGED_IP), "{event}");
    }
    assert!(
        !events_a.is_empty() && !events_b.is_empty(),
        "requests reach both instances: {} and {}",
        events_a.len(),
        events_b.len()
    );

    // Bodies: 2 MiB is refused by nginx (413, problem+json, headers);
    // 512 KiB is let through to the application.
    let res = client
        .post(site.url("/api/auth/login"))
        .header("Content-Type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_security_headers_once(res.headers(), Policy::Api, "413 from nginx");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 413);
    let res = client
        .post(site.url("/api/auth/login"))
        .header("Content-Type", "application/json")
        .body(vec![b' '; 512 * 1024])
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 413, "512 KiB is within the limit");
    assert!(res.status().is_client_error(), "the application answered");
    assert_security_headers_once(res.headers(), Policy::Api, "bad body");

    // TLS 1.2 and 1.3 are both offered.
    for (min, max) in [
        (
            reqwest::tls::Version::TLS_1_2,
            reqwest::tls::Version::TLS_1_2,
        ),
        (
            reqwest::tls::Version::TLS_1_3,
            reqwest::tls::Version::TLS_1_3,
        ),
    ] {
        let c = site
            .client_builder()
            .min_tls_version(min)
            .max_tls_version(max)
            .build()
            .unwrap();
        let res = c.get(site.url("/health")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{max:?}");
    }
    eprintln!(
        "nginx in front of two instances: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Read one unmasked server frame of any length: (opcode, payload).
async fn server_frame(io: &mut reqwest::Upgraded) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            io.read_exact(&mut ext).await.unwrap();
            u16::from_be_bytes(ext) as usize
        }
        127 => panic!("no server frame here is that large"),
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

/// The next text frame, skipping the server's pings.
async fn server_text(io: &mut reqwest::Upgraded) -> serde_json::Value {
    loop {
        let (opcode, payload) = tokio::time::timeout(Duration::from_secs(5), server_frame(io))
            .await
            .expect("a frame within 5 s");
        match opcode {
            0x1 => return serde_json::from_slice(&payload).expect("text frames are JSON"),
            0x9 | 0xA => continue,
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_websocket_works_through_nginx() {
    let app = Kraliki::start_with(
        &[("KRALIKI_TRUSTED_PROXIES", "127.0.0.1/32")],
        &["--listen", "127.0.0.1:0", "--demo"],
    )
    .await;
    let demo = app.stderr();
    let (email, password) = demo
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("agent")).then(|| {
                (
                    words.next().unwrap().to_string(),
                    words.next().unwrap().to_string(),
                )
            })
        })
        .unwrap_or_else(|| panic!("no demo agent in:\n{demo}"));
    let site = Site::render(&format!("server {};", app.addr));
    let _nginx = site.start().await;
    let client = site.https_client();

    let res = client
        .post(site.url("/api/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token = res.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let res = client
        .post(site.url("/api/ws/ticket"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "a ticket through nginx");
    let ticket = res.json::<serde_json::Value>().await.unwrap()["ticket"]
        .as_str()
        .unwrap()
        .to_string();

    // The real handshake through nginx: 101, the application's hello, a
    // ping answered by a pong, and a clean close.
    let key = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
    let res = client
        .get(site.url(&format!("/api/ws?ticket={ticket}")))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        101,
        "Switching Protocols from the application"
    );
    assert_eq!(
        res.headers()["sec-websocket-accept"],
        websocket_accept(&key).as_str()
    );
    let mut io = res.upgrade().await.unwrap();
    let hello = server_text(&mut io).await;
    assert_eq!(hello["type"], "hello", "{hello}");
    io.write_all(&client_frame(0x1, br#"{"type":"ping"}"#))
        .await
        .unwrap();
    let pong = server_text(&mut io).await;
    assert_eq!(pong["type"], "pong", "{pong}");
    io.write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let (opcode, _) = tokio::time::timeout(Duration::from_secs(5), server_frame(&mut io))
        .await
        .expect("the close is answered");
    assert_eq!(opcode, 0x8);

    // The ticket was single-use: a second upgrade with it is refused.
    let res = client
        .get(site.url(&format!("/api/ws?ticket={ticket}")))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// What the test upstream received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A small HTTP/1.1 upstream standing in for the application where it has
/// nothing to show yet: records every request's headers; answers
/// WebSocket upgrades and echoes text frames; streams `…/stream` as
/// server-sent events, holding the second event until released; drops the
/// connection for `/close` (nginx answers 502); answers anything else 200
/// with a marker header and a Content-Security-Policy of its own.
struct Upstream {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release_stream: Arc<Notify>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release_stream = Arc::new(Notify::new());
        let (s, r) = (seen.clone(), release_stream.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve_connection(stream, s, r).await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            release_stream,
        }
    }

    fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
fn websocket_accept(key: &str) -> String {
    let mut sha = sha1::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

async fn serve_connection(
    stream: TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
    release_stream: Arc<Notify>,
) -> std::io::Result<()> {
    let mut conn = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if conn.read_line(&mut request_line).await? == 0 {
            return Ok(());
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if conn.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let request = Seen { path, headers };
        seen.lock().unwrap().push(request.clone());
        let length: usize = request
            .all("content-length")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        conn.read_exact(&mut body).await?;

        let upgrade = request
            .all("upgrade")
            .first()
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if upgrade {
            let key = request
                .all("sec-websocket-key")
                .first()
                .copied()
                .unwrap_or("");
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                websocket_accept(key)
            );
            conn.get_mut().write_all(answer.as_bytes()).await?;
            return echo_frames(&mut conn).await;
        }
        if request.path.ends_with("/stream") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                        Cache-Control: no-store\r\nTransfer-Encoding: chunked\r\n\r\n";
            conn.get_mut().write_all(head.as_bytes()).await?;
            write_chunk(conn.get_mut(), b"data: first\n\n").await?;
            let _ = tokio::time::timeout(Duration::from_secs(20), release_stream.notified()).await;
            write_chunk(conn.get_mut(), b"data: second\n\n").await?;
            conn.get_mut().write_all(b"0\r\n\r\n").await?;
            return Ok(());
        }
        if request.path == "/close" {
            return Ok(());
        }
        let body = br#"{"upstream":true}"#;
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Content-Security-Policy: upstream-policy\r\nX-Upstream-Marker: 1\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        conn.get_mut().write_all(answer.as_bytes()).await?;
        conn.get_mut().write_all(body).await?;
    }
}

async fn write_chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    stream.write_all(data).await?;
    stream.write_all(b"\r\n").await?;
    stream.flush().await
}

/// Read masked client frames and echo text frames back; answer a close.
async fn echo_frames(conn: &mut BufReader<TcpStream>) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 2];
        conn.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        assert!(head[1] & 0x80 != 0, "client frames are masked");
        let len = (head[1] & 0x7f) as usize;
        assert!(len < 126, "short frames only");
        let mut mask = [0u8; 4];
        conn.read_exact(&mut mask).await?;
        let mut payload = vec![0u8; len];
        conn.read_exact(&mut payload).await?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        let mut frame = vec![0x80 | opcode, len as u8];
        frame.extend_from_slice(&payload);
        conn.get_mut().write_all(&frame).await?;
        if opcode == 0x8 {
            return Ok(());
        }
    }
}

/// A masked client frame (RFC 6455 §5.2), payload under 126 bytes.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_upgrades_websockets_and_streams_events_unbuffered() {
    let upstream = Upstream::start().await;
    let site = Site::render(&format!("server {};", upstream.addr));
    let _nginx = site.start().await;
    let client = site.https_client();

    // A WebSocket through nginx on both WebSocket routes: the handshake
    // reaches the upstream, the 101 comes back, and frames flow both ways.
    for path in ["/api/ws", "/api/media/call-1/stream"] {
        let key = base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
        let res = client
            .get(site.url(path))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 101, "{path}: Switching Protocols");
        assert_eq!(
            res.headers()["sec-websocket-accept"],
            websocket_accept(&key).as_str(),
            "{path}"
        );
        let mut io = res.upgrade().await.unwrap();
        let message = format!("hello through nginx on {path}");
        io.write_all(&client_frame(0x1, message.as_bytes()))
            .await
            .unwrap();
        let (opcode, payload) = tokio::time::timeout(Duration::from_secs(5), server_frame(&mut io))
            .await
            .expect("an echo within 5 s");
        assert_eq!((opcode, payload), (0x1, message.into_bytes()), "{path}");
        io.write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
            .await
            .unwrap();
        let (opcode, _) = server_frame(&mut io).await;
        assert_eq!(opcode, 0x8, "{path}: close answered");

        let seen = upstream.requests_to(path);
        assert_eq!(seen.len(), 1, "{path}");
        assert_eq!(seen[0].all("upgrade"), vec!["websocket"], "{path}");
        assert_eq!(seen[0].all("connection"), vec!["upgrade"], "{path}");
        assert_eq!(seen[0].all("x-forwarded-for"), vec![CLIENT_IP], "{path}");
    }

    // Elsewhere an upgrade is not passed on: a plain answer, no 101.
    let res = client
        .get(site.url("/api/calls"))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.requests_to("/api/calls");
    assert!(seen[0].all("upgrade").is_empty(), "{seen:?}");

    // Server-sent events: the first event arrives while the upstream still
    // holds the second, so nothing sits in a buffer in between.
    let first_event = async {
        let mut res = client
            .get(site.url("/api/security/events/stream"))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let first = res.chunk().await.unwrap().unwrap();
        (res, first)
    };
    let (mut res, first) = tokio::time::timeout(Duration::from_secs(5), first_event)
        .await
        .expect("the answer and its first event before the stream ends (no buffering)");
    assert_eq!(&first[..], b"data: first\n\n");
    upstream.release_stream.notify_one();
    let mut rest = Vec::new();
    while let Some(chunk) = res.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"data: second\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_forwards_headers_as_set_and_answers_its_own_errors_with_the_headers() {
    let upstream = Upstream::start().await;
    let site = Site::render(&format!("server {};", upstream.addr));
    let _nginx = site.start().await;
    let client = site.https_client();

    // Forwarded headers: replaced or dropped, never passed on as forged.
    let res = client
        .get(site.url("/api/echo"))
        .header("X-Forwarded-For", FORGED_IP)
        .header("X-Real-IP", FORGED_IP)
        .header("Forwarded", format!("for={FORGED_IP};proto=http"))
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = upstream.requests_to("/api/echo").pop().unwrap();
    assert_eq!(
        seen.all("x-forwarded-for"),
        vec![CLIENT_IP],
        "replaced, not appended"
    );
    assert_eq!(seen.all("x-forwarded-proto"), vec!["https"]);
    assert_eq!(seen.all("x-forwarded-host"), vec!["localhost"]);
    assert_eq!(seen.all("host"), vec!["localhost"]);
    assert!(seen.all("x-real-ip").is_empty(), "{seen:?}");
    assert!(seen.all("forwarded").is_empty(), "{seen:?}");

    // Proxied answers pass through untouched: nginx adds no security
    // header of its own (the application sets them), hides none.
    let headers = res.headers();
    assert_eq!(
        headers
            .get_all("content-security-policy")
            .iter()
            .collect::<Vec<_>>(),
        vec!["upstream-policy"]
    );
    assert_eq!(headers["x-upstream-marker"], "1");
    assert!(headers.get("strict-transport-security").is_none());
    assert!(headers.get("x-frame-options").is_none());

    // nginx's own answers carry every header once, as problem+json.
    let res = client.get(site.url("/close")).send().await.unwrap();
    assert_eq!(res.status(), 502);
    assert_security_headers_once(res.headers(), Policy::Api, "502 from nginx");
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    let res = client
        .get(site.url("/api/echo"))
        .header("X-Padding", "a".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 431, "a header line over 16 KiB");
    assert_security_headers_once(res.headers(), Policy::Api, "431 from nginx");

    let res = client
        .get(site.url(&format!("/api/echo?q={}", "a".repeat(17 * 1024))))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 414, "a request line over 16 KiB");
    assert_security_headers_once(res.headers(), Policy::Api, "414 from nginx");

    // Plain HTTP spoken to the TLS port.
    let mut raw = TcpStream::connect(("127.0.0.1", site.https_port))
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(
        answer.matches("Strict-Transport-Security:").count(),
        1,
        "{answer}"
    );

    // The outer flood guard: a burst far above 20 requests per second
    // from one address meets 429s, with the headers and Retry-After.
    let burst = (0..150).map(|_| client.get(site.url("/health")).send());
    let answers = futures_util::future::join_all(burst).await;
    let mut limited = None;
    let mut passed = 0;
    for res in answers {
        let res = res.unwrap();
        match res.status().as_u16() {
            200 => passed += 1,
            429 => limited = Some(res),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(passed >= 40, "the burst allowance lets {passed} through");
    let limited = limited.expect("some requests are limited");
    assert_security_headers_once(limited.headers(), Policy::Api, "429 from nginx");
    assert_eq!(limited.headers()["retry-after"], "1");
}
