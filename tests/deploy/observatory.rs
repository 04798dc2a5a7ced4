//! The MDN HTTP Observatory scanner (npm `@mdn/mdn-http-observatory`,
//! installed into `target/observatory` by
//! `scripts/install-deploy-test-deps.sh`) scans `kraliki serve` over native
//! TLS, and the nginx setup in front of it: both grade A+ with a score of
//! at least 130 (DESIGN §5).
//!
//! The scanner takes a host name only: its `scan()` calls the retriever
//! without port options, so it always fetches `http://HOST/` and
//! `https://HOST/` on ports 80 and 443. These tests therefore bind
//! 127.0.0.1:80 and 127.0.0.1:443 (the tests run as root), one test at a
//! time, and scan `localhost`, with the throwaway certificate given to node
//! as an extra trusted CA so the scan runs with certificate verification
//! on, as against a real site.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::support::{Kraliki, Site, TestCert};

/// The standard ports are one resource: one scan at a time.
static STANDARD_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What A+ with every bonus the application can earn adds up to: 100,
/// plus CSP with `default-src 'none'` (10), `frame-ancestors` (5),
/// Cross-Origin-Resource-Policy (10) and a private Referrer-Policy (5).
const MIN_SCORE: i64 = 130;

/// The scanner's package folder.
fn scanner() -> PathBuf {
    let observatory = std::env::var_os("KRALIKI_OBSERVATORY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/observatory"));
    let scanner = observatory.join("node_modules/@mdn/mdn-http-observatory");
    assert!(
        scanner.join("src/scan.js").is_file() && scanner.join("conf/hsts-preload.json").is_file(),
        "the MDN HTTP Observatory scanner is not installed in {}: run \
         scripts/install-deploy-test-deps.sh",
        scanner.display()
    );
    scanner
}

/// Scan `localhost` (ports 80 and 443), trusting `cert`; the report.
async fn scan(cert: &Path) -> serde_json::Value {
    let scanner = scanner();
    let run = tokio::process::Command::new(crate::support::program("node"))
        .arg(scanner.join("src/scan.js"))
        .arg("localhost")
        .current_dir(&scanner)
        .env("NODE_EXTRA_CA_CERTS", cert)
        // `localhost` may resolve to ::1 first; the servers are on 127.0.0.1.
        .env("NODE_OPTIONS", "--dns-result-order=ipv4first")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the scan finishes within two minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "the scanner's output is not JSON ({e}); exit {}; stdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Grade A+, score at least [`MIN_SCORE`], with the HTTPS checks passed on
/// a verified certificate; the whole report on failure.
fn assert_a_plus(report: &serde_json::Value, what: &str) {
    let pretty = serde_json::to_string_pretty(report).unwrap();
    let scan = &report["scan"];
    assert_eq!(scan["grade"], "A+", "{what}: grade; report:\n{pretty}");
    let score = scan["score"].as_i64().unwrap_or_default();
    assert!(
        score >= MIN_SCORE,
        "{what}: score {score} < {MIN_SCORE}; report:\n{pretty}"
    );
    let tests = &report["tests"];
    for (test, expected) in [
        ("redirection", "redirection-to-https"),
        (
            "strict-transport-security",
            "hsts-implemented-max-age-at-least-six-months",
        ),
        ("x-frame-options", "x-frame-options-implemented-via-csp"),
        (
            "cross-origin-resource-policy",
            "corp-implemented-with-same-origin",
        ),
        ("referrer-policy", "referrer-policy-private"),
        (
            "content-security-policy",
            "csp-implemented-with-no-unsafe-default-src-none",
        ),
    ] {
        assert_eq!(
            tests[test]["result"], expected,
            "{what}: {test}; report:\n{pretty}"
        );
    }
    assert_eq!(scan["testsFailed"], 0, "{what}; report:\n{pretty}");
    eprintln!(
        "{what}: Observatory grade {} score {score}",
        scan["grade"].as_str().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observatory_grades_kraliki_over_native_tls_a_plus() {
    let _ports = STANDARD_PORTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cert = TestCert::generate(dir.path());
    let cert_path = cert.cert.display().to_string();
    let key_path = cert.key.display().to_string();
    let kraliki = Kraliki::start_with(
        &[],
        &[
            "--listen",
            "127.0.0.1:443",
            "--tls-redirect-listen",
            "127.0.0.1:80",
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ],
    )
    .await;
    assert_eq!(kraliki.addr.port(), 443);

    let report = scan(&cert.cert).await;
    assert_a_plus(&report, "kraliki serve over native TLS");
    assert_eq!(
        report["tests"]["redirection"]["route"][1], "https://localhost/",
        "plain HTTP redirects straight to HTTPS on the same host:\n{report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observatory_grades_nginx_in_front_of_kraliki_a_plus() {
    let _ports = STANDARD_PORTS.lock().await;
    let kraliki = Kraliki::start("127.0.0.1/32").await;
    let site = Site::render_on(&format!("server {};", kraliki.addr), 80, 443);
    let _nginx = site.start().await;

    let report = scan(&site.cert.cert).await;
    assert_a_plus(&report, "nginx in front of kraliki");
}
