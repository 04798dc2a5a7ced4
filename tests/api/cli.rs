//! The command line: help, key generation, development keys generated on
//! first start and reused after, organizations and users made from the
//! shell, migrations.
//!
//! Like `production.rs`, these run the real binary with a cleared
//! environment in development mode, on the embedded SQLite database only
//! (`KRALIKI_TEST_DATABASE_URL` does not apply to spawned binaries).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::helpers::GOOD_PASSWORD;
use crate::production::{expect_listening, kraliki, run, Finished, REQUIRED_KEYS};

/// Folders of one development installation.
struct Dev {
    data: tempfile::TempDir,
    secrets: tempfile::TempDir,
}

impl Dev {
    fn new() -> Dev {
        Dev {
            data: tempfile::tempdir().unwrap(),
            secrets: tempfile::tempdir().unwrap(),
        }
    }

    /// `kraliki --data-dir <data> <args…>` with an empty secrets folder.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = kraliki();
        cmd.env("KRALIKI_SECRETS_DIR", self.secrets.path())
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args);
        cmd
    }

    async fn create_org(&self, name: &str) -> String {
        let done = run(self.cmd(&["orgs", "create", "--name", name]), None).await;
        assert!(done.status.success(), "orgs create: {}", done.stderr);
        let id = done.stdout.trim().to_string();
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "an id, got {id:?}");
        id
    }

    async fn create_user(&self, org: &str, email: &str, role: &str, password: &str) -> Finished {
        let cmd = self.cmd(&[
            "users", "create", "--org", org, "--email", email, "--role", role,
        ]);
        run(cmd, Some(&format!("{password}\n"))).await
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Parse `NAME=value` lines, skipping comments.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[tokio::test]
async fn help_of_every_command_succeeds() {
    let commands: &[&[&str]] = &[
        &["--help"],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["keys", "--help"],
        &["keys", "generate", "--help"],
        &["users", "--help"],
        &["users", "create", "--help"],
        &["orgs", "--help"],
        &["orgs", "create", "--help"],
        &["audit", "--help"],
        &["audit", "verify", "--help"],
        &["secrets", "--help"],
        &["secrets", "docker-setup", "--help"],
        &["healthcheck", "--help"],
    ];
    for args in commands {
        let mut cmd = kraliki();
        cmd.args(*args);
        let done = run(cmd, None).await;
        assert!(
            done.status.success(),
            "kraliki {}: {}",
            args.join(" "),
            done.stderr
        );
        assert!(done.stdout.contains("Usage:"), "kraliki {}", args.join(" "));
    }
    let mut cmd = kraliki();
    cmd.arg("--help");
    let top = run(cmd, None).await.stdout;
    for sub in ["serve", "migrate", "keys", "users", "orgs"] {
        assert!(top.contains(sub), "top-level help lists {sub}");
    }
    // An unknown command is an error, not a silent success.
    let mut cmd = kraliki();
    cmd.arg("no-such-command");
    assert!(!run(cmd, None).await.status.success());
}

#[tokio::test]
async fn keys_generate_env_writes_a_private_file_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kraliki.env");
    let generate = |force: bool| {
        let mut cmd = kraliki();
        cmd.args(["keys", "generate", "--format", "env", "--out"])
            .arg(&file);
        if force {
            cmd.arg("--force");
        }
        cmd
    };

    let done = run(generate(false), None).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(mode(&file), 0o600);
    let first = std::fs::read_to_string(&file).unwrap();
    let vars = parse_env_file(&first);
    for name in [
        "KRALIKI_JWT_SIGNING_KEY",
        "KRALIKI_SESSION_KEY",
        "KRALIKI_CSRF_KEY",
        "KRALIKI_AUDIT_KEY",
        "KRALIKI_DATA_KEY",
        "KRALIKI_ALERT_WEBHOOK_SECRET",
    ] {
        let value = vars
            .get(name)
            .unwrap_or_else(|| panic!("{name} in {first}"));
        assert!(value.len() >= 40, "{name} looks random and long");
    }
    // Every symmetric key passes the loader's own strength check.
    for name in ["session_key", "csrf_key", "audit_key", "data_key"] {
        let var = kraliki::secrets::env_var_name(name);
        kraliki::secrets::decode_symmetric(name, &vars[&var]).unwrap();
    }
    // Nothing secret goes to the terminal.
    for value in vars.values() {
        assert!(!done.stdout.contains(value.as_str()));
        assert!(!done.stderr.contains(value.as_str()));
    }

    let done = run(generate(false), None).await;
    assert!(!done.status.success(), "must refuse to overwrite");
    assert!(done.stderr.contains("--force"), "{}", done.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first, "untouched");

    let done = run(generate(true), None).await;
    assert!(done.status.success(), "{}", done.stderr);
    let second = std::fs::read_to_string(&file).unwrap();
    assert_ne!(second, first, "--force writes fresh keys");
    assert_eq!(mode(&file), 0o600);
}

#[tokio::test]
async fn keys_generate_dir_writes_private_files_and_never_overwrites_silently() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("secrets");
    let generate = |force: bool| {
        let mut cmd = kraliki();
        cmd.args(["keys", "generate", "--format", "dir", "--out"])
            .arg(&dir);
        if force {
            cmd.arg("--force");
        }
        cmd
    };
    let done = run(generate(false), None).await;
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(mode(&dir), 0o700, "a new secrets folder is private");
    let names = [
        "jwt_signing_key",
        "session_key",
        "csrf_key",
        "audit_key",
        "data_key",
        "alert_webhook_secret",
    ];
    let mut before = Vec::new();
    for name in names {
        let path = dir.join(name);
        assert_eq!(mode(&path), 0o600, "{name}");
        before.push(std::fs::read_to_string(&path).unwrap());
    }
    assert!(before[0].starts_with("-----BEGIN PRIVATE KEY-----"));

    let done = run(generate(false), None).await;
    assert!(!done.status.success(), "must refuse to overwrite");
    assert!(done.stderr.contains("--force"), "{}", done.stderr);
    for (name, old) in names.iter().zip(&before) {
        assert_eq!(&std::fs::read_to_string(dir.join(name)).unwrap(), old);
    }

    let done = run(generate(true), None).await;
    assert!(done.status.success(), "{}", done.stderr);
    for (name, old) in names.iter().zip(&before) {
        assert_ne!(&std::fs::read_to_string(dir.join(name)).unwrap(), old);
        assert_eq!(mode(&dir.join(name)), 0o600);
    }
}

#[tokio::test]
async fn an_env_format_secrets_file_works_as_configuration() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("kraliki.env");
    let mut cmd = kraliki();
    cmd.args(["keys", "generate", "--format", "env", "--out"])
        .arg(&file);
    assert!(run(cmd, None).await.status.success());
    let vars = parse_env_file(&std::fs::read_to_string(&file).unwrap());

    let dev = Dev::new();
    let mut cmd = dev.cmd(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.envs(&vars);
    let server = expect_listening(cmd).await;
    let res = reqwest::get(format!("{}/ready", server.base))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (stdout, stderr) = server.stop().await;
    // Every key came from the variables: none was generated.
    assert!(
        !dev.data.path().join("secrets").exists(),
        "development generated keys although the variables were set:\n{stderr}"
    );
    assert!(stderr.contains("environment variable"), "{stderr}");
    for value in vars.values() {
        assert!(!stdout.contains(value.as_str()) && !stderr.contains(value.as_str()));
    }
}

/// Every file of the development key folder: name → contents, asserting
/// the folder is private and holds exactly the five private key files.
fn development_keys(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    assert_eq!(mode(dir), 0o700, "the key folder is private");
    let keys: BTreeMap<String, Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{} is private", path.display());
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    let mut names: Vec<&str> = keys.keys().map(String::as_str).collect();
    let mut want = REQUIRED_KEYS.to_vec();
    names.sort_unstable();
    want.sort_unstable();
    assert_eq!(names, want);
    assert!(keys.values().all(|v| v.len() >= 32));
    keys
}

#[tokio::test]
async fn development_keys_are_generated_private_on_first_start_and_reused() {
    // An empty data folder and an empty secrets folder.
    let dev = Dev::new();
    let key_dir = dev.data.path().join("secrets");
    assert!(!key_dir.exists());
    let serve = || dev.cmd(&["serve", "--listen", "127.0.0.1:0"]);

    let server = expect_listening(serve()).await;
    let generated = development_keys(&key_dir);
    assert!(server.stderr().contains("generated development key"));
    // Credentials of every kind, issued under those keys: a bearer token,
    // a session cookie and its CSRF token (development registration is
    // open).
    let client = reqwest::Client::new();
    let email = "first-admin@example.com";
    let res = client
        .post(format!("{}/api/auth/register", server.base))
        .json(&json!({
            "organization_name": "Restarted Calls",
            "email": email,
            "password": GOOD_PASSWORD,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let credentials = json!({"email": email, "password": GOOD_PASSWORD});
    let res = client
        .post(format!("{}/api/auth/login", server.base))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_string();
    let res = client
        .post(format!("{}/api/auth/session", server.base))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let body: Value = res.json().await.unwrap();
    let csrf = body["csrf_token"].as_str().unwrap().to_string();
    server.stop().await;

    // The second start reads the same files and changes none of them.
    let server = expect_listening(serve()).await;
    assert_eq!(development_keys(&key_dir), generated, "keys were replaced");
    let res = client
        .get(format!("{}/api/auth/me", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the token from before the restart");
    let res = client
        .get(format!("{}/api/auth/me", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the cookie from before the restart");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["csrf_token"], csrf.as_str());
    let res = client
        .post(format!("{}/api/auth/logout", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    server.stop().await;

    // Entries written by both runs form one chain under one audit key.
    let done = run(dev.cmd(&["audit", "verify"]), None).await;
    assert!(done.status.success(), "audit verify: {}", done.stderr);
    assert!(
        done.stdout.contains("audit trail intact"),
        "{}",
        done.stdout
    );
    assert_eq!(development_keys(&key_dir), generated);
}

#[tokio::test]
async fn orgs_and_users_made_on_the_command_line_can_sign_in() {
    let dev = Dev::new();
    let done = run(dev.cmd(&["migrate"]), None).await;
    assert!(done.status.success(), "migrate: {}", done.stderr);
    // Migrating twice is harmless.
    assert!(run(dev.cmd(&["migrate"]), None).await.status.success());

    let org = dev.create_org("Acme Calls").await;
    let email = "Ops.Admin@Example.com";
    let done = dev.create_user(&org, email, "admin", GOOD_PASSWORD).await;
    assert!(done.status.success(), "users create: {}", done.stderr);
    let user_id = done.stdout.trim().to_string();
    assert!(uuid::Uuid::parse_str(&user_id).is_ok(), "{user_id:?}");
    assert!(!done.stdout.contains(GOOD_PASSWORD) && !done.stderr.contains(GOOD_PASSWORD));

    // Same e-mail again: refused.
    let done = dev
        .create_user(&org, "ops.admin@example.com", "agent", GOOD_PASSWORD)
        .await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("already exists"), "{}", done.stderr);

    // Unknown organization: refused.
    let done = dev
        .create_user(
            &uuid::Uuid::new_v4().to_string(),
            "someone@example.com",
            "agent",
            GOOD_PASSWORD,
        )
        .await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("no organization"), "{}", done.stderr);

    let server = expect_listening(dev.cmd(&["serve", "--listen", "127.0.0.1:0"])).await;
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/api/auth/login", server.base))
        .json(&json!({"email": email, "password": GOOD_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], user_id.as_str());
    assert_eq!(body["user"]["organization_id"], org.as_str());
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["email"], "ops.admin@example.com");
    assert_eq!(body["user"]["display_name"], "ops.admin");
    let token = body["access_token"].as_str().unwrap();
    // The admin really is an admin of that organization.
    let res = client
        .get(format!("{}/api/users", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn users_create_refuses_weak_passwords_and_password_arguments() {
    let dev = Dev::new();
    let org = dev.create_org("Acme").await;

    let done = dev
        .create_user(&org, "agent@example.com", "agent", "Zq9xK-w7")
        .await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("password refused"), "{}", done.stderr);
    assert!(done.stderr.contains("too short"), "{}", done.stderr);
    assert!(
        !done.stderr.contains("Zq9xK-w7"),
        "the password is not echoed"
    );

    let done = dev
        .create_user(&org, "agent@example.com", "agent", "password1234567890")
        .await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("password refused"), "{}", done.stderr);

    let done = dev
        .create_user(
            &org,
            "agent@example.com",
            "agent",
            "agent@example.com-is-my-login",
        )
        .await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("e-mail"), "{}", done.stderr);

    // Nothing was created by the refusals.
    let done = dev
        .create_user(&org, "agent@example.com", "agent", GOOD_PASSWORD)
        .await;
    assert!(done.status.success(), "{}", done.stderr);

    // There is no way to put a password on the command line.
    let cmd = dev.cmd(&[
        "users",
        "create",
        "--org",
        &org,
        "--email",
        "other@example.com",
        "--role",
        "agent",
        "--password",
        GOOD_PASSWORD,
    ]);
    let done = run(cmd, Some(&format!("{GOOD_PASSWORD}\n"))).await;
    assert!(!done.status.success());

    // A bad role or e-mail is refused before anything is read.
    let done = dev
        .create_user(&org, "x@example.com", "root", GOOD_PASSWORD)
        .await;
    assert!(!done.status.success());
    let done = dev
        .create_user(&org, "not-an-email", "agent", GOOD_PASSWORD)
        .await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("--email"), "{}", done.stderr);

    // An empty organization name is refused.
    let done = run(dev.cmd(&["orgs", "create", "--name", "  "]), None).await;
    assert!(!done.status.success());
    assert!(done.stderr.contains("--name"), "{}", done.stderr);
}
