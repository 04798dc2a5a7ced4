//! Helpers of the deployment tests: repository files, a throwaway TLS
//! certificate, the nginx configuration rendered for loopback, and the
//! processes (nginx, `kraliki serve`) these tests start and stop.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a process may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The text of a file of this repository.
pub fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// A program the deployment tests need: on `PATH` or in `/usr/sbin`.
/// Missing is a failure with the fix, never a skip.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed; the deployment tests need it: run \
                 scripts/install-deploy-test-deps.sh"
            )
        })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed certificate for `localhost` and 127.0.0.1, made with
/// openssl at test time. `CA:FALSE` because rustls refuses a CA
/// certificate as a server's own certificate (openssl's default for
/// `req -x509` is `CA:TRUE`); the test clients trust this very certificate.
pub struct TestCert {
    /// The certificate (PEM file).
    pub cert: PathBuf,
    /// Its private key (PEM file).
    pub key: PathBuf,
}

impl TestCert {
    pub fn generate(dir: &Path) -> TestCert {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let out = std::process::Command::new(program("openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TestCert { cert, key }
    }

    /// The certificate as reqwest's root certificate.
    pub fn reqwest_root(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(&std::fs::read(&self.cert).unwrap()).unwrap()
    }
}

/// The placeholders of `deploy/nginx/templates/kraliki.conf.template`.
pub const TEMPLATE_VARS: &[&str] = &[
    "SERVER_NAME",
    "UPSTREAMS",
    "TLS_CERT",
    "TLS_KEY",
    "HTTP_LISTEN",
    "HTTPS_LISTEN",
    "NGINX_TEMP_DIR",
];

/// The repository's nginx configuration rendered into a temporary folder
/// for loopback, laid out as in the image: `nginx.conf`,
/// `conf.d/kraliki.conf`, `snippets/security-headers.conf`.
pub struct Site {
    /// Holds every file; removed on drop.
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub https_port: u16,
    pub cert: TestCert,
}

impl Site {
    /// Render with `upstreams` (e.g. `server 127.0.0.1:4000;`), on free
    /// loopback ports.
    pub fn render(upstreams: &str) -> Site {
        Site::render_on(upstreams, free_port(), free_port())
    }

    /// [`Site::render`] on the given loopback ports.
    pub fn render_on(upstreams: &str, http_port: u16, https_port: u16) -> Site {
        let dir = tempfile::tempdir().unwrap();
        // nginx workers run as an unprivileged user when the tests run as
        // root; they must reach the temporary-files folder.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path();
        for sub in ["conf.d", "snippets", "temp"] {
            std::fs::create_dir(root.join(sub)).unwrap();
            std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let cert = TestCert::generate(root);

        let values = [
            ("SERVER_NAME", "localhost".to_string()),
            ("UPSTREAMS", upstreams.to_string()),
            ("TLS_CERT", cert.cert.display().to_string()),
            ("TLS_KEY", cert.key.display().to_string()),
            ("HTTP_LISTEN", format!("127.0.0.1:{http_port}")),
            ("HTTPS_LISTEN", format!("127.0.0.1:{https_port}")),
            ("NGINX_TEMP_DIR", root.join("temp").display().to_string()),
        ];
        assert_eq!(values.len(), TEMPLATE_VARS.len());
        let site = render_template(
            &repo_file("deploy/nginx/templates/kraliki.conf.template"),
            &values,
        );
        std::fs::write(root.join("conf.d/kraliki.conf"), site).unwrap();
        std::fs::write(
            root.join("nginx.conf"),
            repo_file("deploy/nginx/nginx.conf"),
        )
        .unwrap();
        std::fs::write(
            root.join("snippets/security-headers.conf"),
            repo_file("deploy/nginx/snippets/security-headers.conf"),
        )
        .unwrap();
        Site {
            dir,
            http_port,
            https_port,
            cert,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// nginx with this site's prefix, configuration and logs.
    fn nginx(&self, extra_globals: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(program("nginx"));
        cmd.arg("-p")
            .arg(format!("{}/", self.dir.path().display()))
            .arg("-e")
            .arg(self.path("error.log"))
            .arg("-c")
            .arg(self.path("nginx.conf"))
            .arg("-g")
            .arg(format!(
                "{extra_globals}pid {}; error_log {};",
                self.path("nginx.pid").display(),
                self.path("error.log").display()
            ))
            .stdin(Stdio::null());
        cmd
    }

    /// `nginx -t`: the rendered configuration is valid.
    pub fn check(&self) -> std::process::Output {
        self.nginx("").arg("-t").output().expect("nginx -t runs")
    }

    /// The error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
    }

    /// Start nginx in the foreground and wait until both ports accept.
    pub async fn start(&self) -> Nginx {
        let out = self.check();
        assert!(
            out.status.success(),
            "nginx -t: {}{}",
            String::from_utf8_lossy(&out.stderr),
            self.error_log()
        );
        let mut child = self
            .nginx("daemon off; ")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let up = [self.http_port, self.https_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("nginx exited with {status}: {}", self.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Nginx { child }
    }

    /// An HTTPS client that trusts only this site's certificate, reaches
    /// `localhost` on the site's port, and connects from 127.0.0.2 so that
    /// nginx's view of the client differs from nginx's own address.
    pub fn https_client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// [`Site::https_client`]'s builder, for further settings.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(self.cert.reqwest_root())
            .resolve(
                "localhost",
                SocketAddr::from(([127, 0, 0, 1], self.https_port)),
            )
            .local_address(CLIENT_IP.parse::<std::net::IpAddr>().unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https_port)
    }
}

/// The client address the tests connect from.
pub const CLIENT_IP: &str = "127.0.0.2";

/// Replace `${NAME}` for each name; every placeholder must be given.
pub fn render_template(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_string();
    for (name, value) in values {
        let placeholder = format!("${{{name}}}");
        assert!(
            text.contains(&placeholder),
            "the template uses {placeholder}"
        );
        text = text.replace(&placeholder, value);
    }
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or_default();
        assert!(
            !code.contains("${"),
            "a placeholder without a value: {line}"
        );
    }
    text
}

/// A running nginx, stopped (master and workers) when dropped.
pub struct Nginx {
    child: std::process::Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; a SIGKILL would orphan them.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kraliki serve` in development mode on a loopback port, with its own
/// data folder and standard output (the security event lines) collected.
pub struct Kraliki {
    _child: tokio::process::Child,
    _data: tempfile::TempDir,
    _secrets: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Kraliki {
    /// Start the real binary with `trusted_proxies` and wait for its
    /// listening line.
    pub async fn start(trusted_proxies: &str) -> Kraliki {
        Kraliki::start_with(
            &[("KRALIKI_TRUSTED_PROXIES", trusted_proxies)],
            &["--listen", "127.0.0.1:0"],
        )
        .await
    }

    /// Start the real binary with more environment variables and `serve`
    /// arguments, and wait for its listening line (`http://` or
    /// `https://`).
    pub async fn start_with(env: &[(&str, &str)], serve_args: &[&str]) -> Kraliki {
        let data = tempfile::tempdir().unwrap();
        let secrets = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kraliki"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KRALIKI_SECRETS_DIR", secrets.path())
            .env("KRALIKI_LOG__LEVEL", "warn")
            .envs(env.iter().copied())
            .arg("--data-dir")
            .arg(data.path())
            .arg("serve")
            .args(serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kraliki starts");

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let lines = stdout.clone();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                lines.lock().unwrap().push(line);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let text = stderr.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err.next_line().await {
                text.lock().unwrap().push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });

        let listening = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = rx.recv().await {
                let Some(base) = line.strip_prefix("kraliki listening on ") else {
                    continue;
                };
                let addr = base
                    .trim()
                    .trim_start_matches("http://")
                    .trim_start_matches("https://");
                return Some(addr.parse::<SocketAddr>().unwrap());
            }
            None
        })
        .await;
        let addr = match listening {
            Ok(Some(addr)) => addr,
            _ => panic!(
                "kraliki serve did not listen; stderr:\n{}",
                stderr.lock().unwrap()
            ),
        };
        Kraliki {
            _child: child,
            _data: data,
            _secrets: secrets,
            addr,
            stdout,
            stderr,
        }
    }

    /// The security event lines printed so far, parsed.
    pub fn security_events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"SECURITY EVENT\""))
            .map(|l| serde_json::from_str(l).expect("an event line is JSON"))
            .collect()
    }

    /// Everything written to standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// Which headers an answer must carry besides the common set.
#[derive(Clone, Copy, Debug)]
pub enum Policy {
    /// Answers under `/api/` and answers nginx makes itself: the API
    /// Content-Security-Policy and `Cache-Control: no-store`.
    Api,
    /// Other machine-readable answers (`/health`, `/ready`, …): the API
    /// Content-Security-Policy.
    Operational,
    /// Console pages: the console Content-Security-Policy.
    Console,
}

/// Assert every header of DESIGN §5 appears exactly once with its value.
/// `Cache-Control: no-store` is required on API answers (the application
/// sends it on `/api/*`; nginx on its own answers).
pub fn assert_security_headers_once(headers: &HeaderMap, policy: Policy, what: &str) {
    let csp = match policy {
        Policy::Api | Policy::Operational => kraliki::http::headers::API_CSP,
        Policy::Console => kraliki::http::headers::CONSOLE_CSP,
    };
    let expected: &[(&str, &str)] = &[
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains; preload",
        ),
        ("content-security-policy", csp),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("x-xss-protection", "0"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        (
            "permissions-policy",
            "camera=(), geolocation=(), payment=(), microphone=(self)",
        ),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ];
    for (name, value) in expected {
        let all: Vec<_> = headers.get_all(*name).iter().collect();
        assert_eq!(all.len(), 1, "{what}: {name} exactly once, got {all:?}");
        assert_eq!(all[0], value, "{what}: {name}");
    }
    let cache: Vec<_> = headers.get_all("cache-control").iter().collect();
    match policy {
        Policy::Api => assert_eq!(cache, vec!["no-store"], "{what}: Cache-Control"),
        Policy::Operational | Policy::Console => {
            assert!(cache.len() <= 1, "{what}: Cache-Control {cache:?}")
        }
    }
    assert!(
        headers.get("x-powered-by").is_none(),
        "{what}: no X-Powered-By"
    );
    // nginx names itself without a version (`server_tokens off`).
    for server in headers.get_all("server") {
        let server = server.to_str().unwrap();
        assert!(
            !server.contains('/'),
            "{what}: Server {server:?} has a version"
        );
    }
}
