//! Native TLS of the real binary (`kraliki serve --tls-cert --tls-key`):
//! TLS 1.2 and 1.3 with AEAD suites only, the redirect-only plain
//! listener, certificate reload on SIGHUP, and refusals of bad files.
//!
//! Certificates are made here at test time (rcgen): a throwaway CA and a
//! server certificate for `localhost` and 127.0.0.1 that it signs. No
//! private key is committed.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::production::{expect_listening, expect_refused, kraliki, Running};

/// A throwaway certificate authority.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// A server certificate and its key, as PEM files.
struct ServerFiles {
    cert: PathBuf,
    key: PathBuf,
    /// The server certificate (DER), to compare with what a client sees.
    der: Vec<u8>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// Issue a certificate for `localhost` and 127.0.0.1 and write it and
    /// its key (mode 0600) into `dir` as `cert.pem` and `key.pem`,
    /// replacing what is there.
    fn issue(&self, dir: &Path) -> ServerFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let files = ServerFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            der: cert.der().to_vec(),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
        files
    }

    fn der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A reqwest client trusting only this CA, `localhost` on `addr`.
    fn reqwest_client(&self, addr: SocketAddr, version: reqwest::tls::Version) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_der(self.cert.der()).unwrap())
            .min_tls_version(version)
            .max_tls_version(version)
            .resolve("localhost", addr)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

/// Folders of one TLS server.
struct Folders {
    data: tempfile::TempDir,
    secrets: tempfile::TempDir,
    tls: tempfile::TempDir,
}

impl Folders {
    fn new() -> Folders {
        Folders {
            data: tempfile::tempdir().unwrap(),
            secrets: tempfile::tempdir().unwrap(),
            tls: tempfile::tempdir().unwrap(),
        }
    }

    /// `kraliki serve` in development mode on a loopback port, with `args`.
    fn serve(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = kraliki();
        cmd.env("KRALIKI_SECRETS_DIR", self.secrets.path())
            .env("KRALIKI_LOG__LEVEL", "info")
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        cmd
    }

    /// [`Folders::serve`] with `--tls-cert` and `--tls-key` of `files`.
    fn serve_tls(&self, files: &ServerFiles, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.serve(args);
        cmd.arg("--tls-cert")
            .arg(&files.cert)
            .arg("--tls-key")
            .arg(&files.key);
        cmd
    }
}

/// The address of an `https://127.0.0.1:<port>` base URL.
fn https_addr(server: &Running) -> SocketAddr {
    server
        .base
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("the server speaks HTTPS: {}", server.base))
        .parse()
        .unwrap()
}

/// A rustls client trusting only `ca`, offering `alpn`.
fn rustls_client(ca: CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connect and handshake as `localhost`.
async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The server certificate a connection was given.
fn peer_cert(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// One keep-alive `GET` over HTTP/1.1 on an open connection: status line
/// and body.
async fn http1_get(stream: &mut TlsStream<TcpStream>, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed mid-answer");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let status = head.lines().next().unwrap().to_string();
    let body = String::from_utf8(buf[head_end..head_end + length].to_vec()).unwrap();
    (status, body)
}

/// Send SIGHUP to the server.
fn sighup(server: &Running) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Poll (up to ten seconds) until `f` holds.
async fn within_ten_seconds<F, Fut>(what: &str, server: &Running, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(
            Instant::now() < deadline,
            "{what} within ten seconds; stderr:\n{}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn https_over_tls_1_3_and_1_2_with_alpn_h2_and_http1() {
    let folders = Folders::new();
    let ca = TestCa::new("kraliki test CA");
    let files = ca.issue(folders.tls.path());
    let server = expect_listening(folders.serve_tls(&files, &[])).await;
    let addr = https_addr(&server);

    // A client that connects and never sends its hello holds up nobody:
    // everything below is served while it waits.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let stalled_since = Instant::now();

    for version in [
        reqwest::tls::Version::TLS_1_3,
        reqwest::tls::Version::TLS_1_2,
    ] {
        let client = ca.reqwest_client(addr, version);
        let res = client
            .get(format!("https://localhost:{}/health", addr.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e:?}"));
        assert_eq!(res.status(), 200, "{version:?}");
        assert_eq!(
            res.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains; preload",
            "{version:?}"
        );
    }

    // ALPN: h2 when the client offers it, HTTP/1.1 otherwise.
    for (offer, expected) in [
        (&[b"h2".as_slice(), b"http/1.1"][..], b"h2".as_slice()),
        (&[b"http/1.1".as_slice()][..], b"http/1.1".as_slice()),
    ] {
        let stream = tls_connect(&rustls_client(ca.der(), offer), addr)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(expected));
    }
    let mut stream = tls_connect(&rustls_client(ca.der(), &[b"http/1.1"]), addr)
        .await
        .unwrap();
    let (status, body) = http1_get(&mut stream, "/health").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");

    // The stalled client is cut off once the handshake timeout (10 s) is
    // over, not before.
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(20), stalled.read(&mut byte)).await;
    let waited = stalled_since.elapsed();
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the stalled connection is closed: {closed:?}"
    );
    assert!(
        waited >= Duration::from_secs(9) && waited < Duration::from_secs(20),
        "closed after {waited:?}"
    );

    // The start-up log says the server speaks HTTPS.
    let (_, err) = server.stop().await;
    assert!(err.contains("\"scheme\":\"https\""), "{err}");
}

/// A TLS record holding a ClientHello of `version` (no supported_versions
/// extension, so at most TLS 1.2) offering `suites`, for `localhost`.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend(kind.to_be_bytes());
        out.extend((data.len() as u16).to_be_bytes());
        out.extend(data);
    }
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend(((name.len() + 3) as u16).to_be_bytes());
    sni.push(0); // host_name
    sni.extend((name.len() as u16).to_be_bytes());
    sni.extend(name);
    let mut extensions = Vec::new();
    extension(&mut extensions, 0x0000, &sni);
    // supported_groups: x25519, secp256r1.
    extension(&mut extensions, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed.
    extension(&mut extensions, 0x000b, &[1, 0]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256,
    // rsa_pkcs1_sha256.
    extension(&mut extensions, 0x000d, &[0, 6, 4, 3, 8, 4, 4, 1]);
    // extended_master_secret, renegotiation_info (empty).
    extension(&mut extensions, 0x0017, &[]);
    extension(&mut extensions, 0xff01, &[0]);

    let mut hello = Vec::new();
    hello.extend(version.to_be_bytes());
    hello.extend([0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend(((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        hello.extend(suite.to_be_bytes());
    }
    hello.extend([1, 0]); // compression: null only
    hello.extend((extensions.len() as u16).to_be_bytes());
    hello.extend(extensions);

    let mut handshake = vec![1]; // client_hello
    handshake.extend(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend((handshake.len() as u16).to_be_bytes());
    record.extend(handshake);
    record
}

/// How a server answered a ClientHello.
#[derive(Debug, PartialEq, Eq)]
enum HelloAnswer {
    /// A ServerHello choosing this version and cipher suite.
    ServerHello { version: u16, suite: u16 },
    /// An alert with this description.
    Alert(u8),
    /// Anything else (closed without an alert, another record).
    Other(Vec<u8>),
}

async fn answer_to(addr: SocketAddr, hello: &[u8]) -> HelloAnswer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        // An alert is 7 bytes and the end; a ServerHello comes with the
        // rest of the server's flight, far more than 100 bytes.
        while answer.len() < 100 {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server answers a ClientHello within 10 s");
    match answer.as_slice() {
        [0x15, 0x03, _, 0, 2, _level, description, ..] => HelloAnswer::Alert(*description),
        // handshake record, server_hello, 3-byte length, version, random,
        // session id length, session id, cipher suite.
        [0x16, 0x03, _, _, _, 0x02, _, _, _, v1, v2, rest @ ..] => {
            let sid = rest.get(32).map(|l| *l as usize).unwrap_or(usize::MAX - 40);
            match rest.get(33 + sid..35 + sid) {
                Some(&[s1, s2]) => HelloAnswer::ServerHello {
                    version: u16::from_be_bytes([*v1, *v2]),
                    suite: u16::from_be_bytes([s1, s2]),
                },
                _ => HelloAnswer::Other(answer.clone()),
            }
        }
        other => HelloAnswer::Other(other.to_vec()),
    }
}

#[tokio::test]
async fn tls_1_0_and_1_1_and_cbc_suites_are_refused() {
    let folders = Folders::new();
    let ca = TestCa::new("kraliki test CA");
    let files = ca.issue(folders.tls.path());
    let server = expect_listening(folders.serve_tls(&files, &[])).await;
    let addr = https_addr(&server);

    // rustls clients cannot offer TLS 1.1 or CBC suites, so these hellos
    // are written by hand. First the control: the same hello for TLS 1.2
    // with an AEAD suite gets a ServerHello, so a refusal below is about
    // the version or the suites, not a malformed hello.
    const ECDHE_ECDSA_AES128_GCM_SHA256: u16 = 0xc02b;
    const CBC_SUITES: &[u16] = &[
        0xc009, // ECDHE_ECDSA_WITH_AES_128_CBC_SHA
        0xc00a, // ECDHE_ECDSA_WITH_AES_256_CBC_SHA
        0xc023, // ECDHE_ECDSA_WITH_AES_128_CBC_SHA256
        0xc024, // ECDHE_ECDSA_WITH_AES_256_CBC_SHA384
        0xc013, // ECDHE_RSA_WITH_AES_128_CBC_SHA
        0x002f, // RSA_WITH_AES_128_CBC_SHA
        0x000a, // RSA_WITH_3DES_EDE_CBC_SHA
    ];
    assert_eq!(
        answer_to(
            addr,
            &client_hello(0x0303, &[ECDHE_ECDSA_AES128_GCM_SHA256])
        )
        .await,
        HelloAnswer::ServerHello {
            version: 0x0303,
            suite: ECDHE_ECDSA_AES128_GCM_SHA256
        }
    );

    const PROTOCOL_VERSION: u8 = 70;
    const HANDSHAKE_FAILURE: u8 = 40;
    let mut all = CBC_SUITES.to_vec();
    all.push(ECDHE_ECDSA_AES128_GCM_SHA256);
    for (name, version) in [("TLS 1.1", 0x0302), ("TLS 1.0", 0x0301)] {
        assert_eq!(
            answer_to(addr, &client_hello(version, &all)).await,
            HelloAnswer::Alert(PROTOCOL_VERSION),
            "{name}"
        );
    }
    assert_eq!(
        answer_to(addr, &client_hello(0x0303, CBC_SUITES)).await,
        HelloAnswer::Alert(HANDSHAKE_FAILURE),
        "TLS 1.2 with CBC suites only"
    );

    // Plain HTTP to the TLS port is not served.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
}

#[tokio::test]
async fn the_redirect_listener_answers_308_to_https_with_the_security_headers() {
    let folders = Folders::new();
    let ca = TestCa::new("kraliki test CA");
    let files = ca.issue(folders.tls.path());
    let server =
        expect_listening(folders.serve_tls(&files, &["--tls-redirect-listen", "127.0.0.1:0"]))
            .await;
    let https = https_addr(&server);
    let redirect: SocketAddr = server
        .stderr()
        .lines()
        .find_map(|l| l.strip_prefix("kraliki redirecting http://"))
        .and_then(|l| l.strip_suffix(" to https"))
        .expect("the redirect listener's line")
        .parse()
        .unwrap();

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path) in [
        (reqwest::Method::GET, "/api/calls?limit=5&cursor=a%20b"),
        (reqwest::Method::POST, "/api/auth/login"),
        (reqwest::Method::GET, "/"),
    ] {
        let res = plain
            .request(method.clone(), format!("http://{redirect}{path}"))
            .header("Host", format!("localhost:{}", redirect.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 308, "{method} {path}");
        assert_eq!(
            res.headers()["location"],
            format!("https://localhost:{}{path}", https.port()).as_str(),
            "{method} {path}"
        );
        let headers = res.headers();
        for name in [
            "strict-transport-security",
            "content-security-policy",
            "x-frame-options",
            "x-content-type-options",
            "referrer-policy",
            "permissions-policy",
            "cross-origin-opener-policy",
            "cross-origin-resource-policy",
        ] {
            assert_eq!(headers.get_all(name).iter().count(), 1, "{name}");
        }
        assert!(headers.get("server").is_none());
        assert!(res.bytes().await.unwrap().is_empty(), "no body");
    }

    // A Host that is not a plain host name gets no redirect anywhere.
    let res = plain
        .get(format!("http://{redirect}/"))
        .header("Host", "evil.example/phish")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.headers().get("location").is_none());

    // Following the redirect reaches the HTTPS listener.
    let client = ca.reqwest_client(https, reqwest::tls::Version::TLS_1_3);
    let res = client
        .get(format!("https://localhost:{}/health", https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_connections_and_keeps_it_on_a_bad_file() {
    let folders = Folders::new();
    let old_ca = TestCa::new("old CA");
    let old = old_ca.issue(folders.tls.path());
    let server = expect_listening(folders.serve_tls(&old, &[])).await;
    let addr = https_addr(&server);
    let trusts_old = rustls_client(old_ca.der(), &[b"http/1.1"]);

    let mut before = tls_connect(&trusts_old, addr).await.unwrap();
    assert_eq!(peer_cert(&before), old.der);
    let (status, _) = http1_get(&mut before, "/health").await;
    assert_eq!(status, "HTTP/1.1 200 OK");

    // New files at the same paths, from another CA; then SIGHUP.
    let new_ca = TestCa::new("new CA");
    let new = new_ca.issue(folders.tls.path());
    let trusts_new = rustls_client(new_ca.der(), &[b"http/1.1"]);
    assert!(
        tls_connect(&trusts_new, addr).await.is_err(),
        "no reload before the signal"
    );
    sighup(&server);
    let (connector, expected) = (&trusts_new, &new.der);
    within_ten_seconds(
        "a new handshake gets the new certificate",
        &server,
        move || async move {
            match tls_connect(connector, addr).await {
                Ok(stream) => peer_cert(&stream) == *expected,
                Err(_) => false,
            }
        },
    )
    .await;
    let mut after = tls_connect(&trusts_new, addr).await.unwrap();
    let (status, _) = http1_get(&mut after, "/health").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    // This client keeps session tickets (rustls's default) from its first
    // connection: the reloaded server neither resumes that session nor
    // hands out the old certificate.
    assert!(
        tls_connect(&trusts_old, addr).await.is_err(),
        "new handshakes no longer get the old certificate"
    );

    // The connection opened before the reload goes on with its session.
    let (status, _) = http1_get(&mut before, "/health").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "the old connection still works");
    assert_eq!(peer_cert(&before), old.der);

    // A broken certificate file: the reload fails, is logged, and the
    // certificate in use stays.
    std::fs::write(&new.cert, "-----BEGIN CERTIFICATE-----\nbroken\n").unwrap();
    sighup(&server);
    let running = &server;
    within_ten_seconds("the failed reload is logged", &server, move || async move {
        running.stderr().contains("TLS certificate reload failed")
    })
    .await;
    let stream = tls_connect(&trusts_new, addr).await.unwrap();
    assert_eq!(peer_cert(&stream), new.der);
    let log = server.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("TLS certificate reload failed"))
        .unwrap();
    assert!(line.contains("cert.pem"), "the log names the file: {line}");
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");

    // Still serving: the signal never ends the process.
    let (status, _) = http1_get(&mut after, "/health").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn bad_tls_files_and_settings_stop_the_server_naming_the_file() {
    let folders = Folders::new();
    let ca = TestCa::new("kraliki test CA");
    let good = ca.issue(folders.tls.path());
    let dir = folders.tls.path();

    let missing = dir.join("no-such-cert.pem");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let other_key = dir.join("other-key.pem");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();

    let cases: [(&Path, &Path, &[&str]); 4] = [
        (
            &missing,
            &good.key,
            &["cannot read the TLS certificate file", "no-such-cert.pem"],
        ),
        (
            &garbage,
            &good.key,
            &["holds no PEM CERTIFICATE block", "garbage.pem"],
        ),
        (
            &good.cert,
            &garbage,
            &["holds no PEM private key", "garbage.pem"],
        ),
        (
            &good.cert,
            &other_key,
            &["does not go with the key file", "other-key.pem"],
        ),
    ];
    for (cert, key, needles) in cases {
        let mut cmd = folders.serve(&[]);
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        let done = expect_refused(cmd).await;
        for needle in needles {
            assert!(
                done.stderr.contains(needle),
                "{needle:?} in:\n{}",
                done.stderr
            );
        }
        assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
    }

    // One of the pair alone is a configuration error naming the other.
    let mut cmd = folders.serve(&[]);
    cmd.arg("--tls-cert").arg(&good.cert);
    let done = expect_refused(cmd).await;
    assert!(
        done.stderr
            .contains("tls.key (KRALIKI_TLS__KEY, --tls-key) is missing"),
        "{}",
        done.stderr
    );
    let mut cmd = folders.serve(&["--tls-redirect-listen", "127.0.0.1:0"]);
    cmd.env("KRALIKI_TLS__KEY", &good.key);
    let done = expect_refused(cmd).await;
    assert!(
        done.stderr
            .contains("tls.cert (KRALIKI_TLS__CERT, --tls-cert) is missing"),
        "{}",
        done.stderr
    );

    // The environment works as well as the flags.
    let mut cmd = folders.serve(&[]);
    cmd.env("KRALIKI_TLS__CERT", &good.cert)
        .env("KRALIKI_TLS__KEY", &good.key);
    let server = expect_listening(cmd).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
}

#[tokio::test]
async fn production_refuses_a_tls_key_readable_by_others() {
    let folders = Folders::new();
    crate::production::generate_key_dir(folders.secrets.path()).await;
    let ca = TestCa::new("kraliki test CA");
    let files = ca.issue(folders.tls.path());
    let production = |files: &ServerFiles| {
        let mut cmd = folders.serve_tls(files, &[]);
        cmd.env("KRALIKI_ENV", "production")
            .env("KRALIKI_PUBLIC_URL", "https://calls.example.test")
            .env("KRALIKI_SMTP__HOST", "smtp.example.test")
            .env("KRALIKI_ALLOW_SQLITE_IN_PRODUCTION", "true");
        cmd
    };

    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let done = expect_refused(production(&files)).await;
    let expected = format!("run `chmod 600 {}`", files.key.display());
    assert!(done.stderr.contains(&expected), "{}", done.stderr);
    assert!(done.stderr.contains("mode 0644"), "{}", done.stderr);

    std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = expect_listening(production(&files)).await;
    assert!(server.base.starts_with("https://"), "{}", server.base);
}
