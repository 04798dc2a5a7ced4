//! `kraliki secrets docker-setup` and `deploy/setup-docker-secrets.sh`.
//!
//! Runs the real binary with a cleared environment against a fake `docker`
//! first on `PATH`: a shell script that records, per call, its arguments,
//! its standard input and its environment, and exits 0 (or fails on a
//! chosen call). A separate test target needing nothing but Rust and `sh`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use kraliki::secrets::der_to_pem;
use kraliki::security::tokens::KeyRing;

/// The secrets `kraliki keys generate` writes, in the order docker-setup
/// creates them.
const GENERATED: &[&str] = &[
    "jwt_signing_key",
    "session_key",
    "csrf_key",
    "audit_key",
    "data_key",
    "alert_webhook_secret",
];

/// `kraliki` with an empty environment except `PATH` (the fake docker's
/// folder first, when given).
fn kraliki(fake: Option<&FakeDocker>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kraliki"));
    cmd.env_clear()
        .env("PATH", path_with(fake))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn path_with(fake: Option<&FakeDocker>) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    match fake {
        Some(fake) => format!("{}:{path}", fake.bin.display()),
        None => path,
    }
}

struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Finished {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("kraliki runs");
    Finished {
        success: status.success(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// A secrets file (env) or folder (dir) from `kraliki keys generate`, and
/// the values in it by secret name.
struct Generated {
    _dir: tempfile::TempDir,
    path: PathBuf,
    values: Vec<(String, String)>,
}

impl Generated {
    fn env() -> Generated {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.env");
        let done = run(kraliki(None)
            .args(["keys", "generate", "--format", "env", "--out"])
            .arg(&path));
        assert!(done.success, "{}", done.stderr);
        let values = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (key, value) = l.split_once('=').unwrap();
                let name = key.strip_prefix("KRALIKI_").unwrap().to_lowercase();
                (name, value.to_string())
            })
            .collect();
        Generated {
            _dir: dir,
            path,
            values,
        }
    }

    fn dir() -> Generated {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        let done = run(kraliki(None)
            .args(["keys", "generate", "--format", "dir", "--out"])
            .arg(&path));
        assert!(done.success, "{}", done.stderr);
        let values = GENERATED
            .iter()
            .map(|name| {
                let value = std::fs::read_to_string(path.join(name)).unwrap();
                (name.to_string(), value)
            })
            .collect();
        Generated {
            _dir: dir,
            path,
            values,
        }
    }

    fn value(&self, name: &str) -> &str {
        &self.values.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// Every value and every line of a multi-line value: none may appear
    /// outside the fake docker's standard input.
    fn fragments(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, value) in &self.values {
            out.push(value.trim().to_string());
            out.extend(
                value
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .map(str::to_string),
            );
        }
        let jwt = self.value("jwt_signing_key");
        if !jwt.starts_with("-----") {
            out.extend(pem_of_one_line(jwt).lines().map(str::to_string));
        }
        out.retain(|f| f.len() >= 16);
        out
    }
}

fn pem_of_one_line(one_line: &str) -> String {
    let der = base64::engine::general_purpose::STANDARD
        .decode(one_line)
        .unwrap();
    der_to_pem(&der)
}

/// A fake `docker` in its own folder, recording call `n` as `argv.n`,
/// `stdin.n` and `env.n` in `log`.
struct FakeDocker {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    log: PathBuf,
}

impl FakeDocker {
    /// A docker that succeeds, or fails with status 3 on call `fail_at`.
    fn new(fail_at: Option<usize>) -> FakeDocker {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let log = dir.path().join("log");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&log).unwrap();
        let script = format!(
            "#!/bin/sh\n\
             log='{log}'\n\
             n=1\n\
             while [ -e \"$log/argv.$n\" ]; do n=$((n + 1)); done\n\
             printf '%s\\n' \"$@\" > \"$log/argv.$n\"\n\
             cat > \"$log/stdin.$n\"\n\
             env > \"$log/env.$n\"\n\
             if [ \"$n\" = '{fail}' ]; then echo 'fake docker: refused' >&2; exit 3; fi\n\
             echo \"fakeid$n\"\n",
            log = log.display(),
            fail = fail_at.map(|n| n.to_string()).unwrap_or_default(),
        );
        let docker = bin.join("docker");
        std::fs::write(&docker, script).unwrap();
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeDocker {
            _dir: dir,
            bin,
            log,
        }
    }

    fn calls(&self) -> usize {
        (1..)
            .take_while(|n| self.log.join(format!("argv.{n}")).exists())
            .count()
    }

    fn read(&self, what: &str, n: usize) -> String {
        std::fs::read_to_string(self.log.join(format!("{what}.{n}"))).unwrap()
    }
}

fn expected_argv(name: &str, version: u32) -> String {
    format!(
        "secret\ncreate\n--label\norg.kraliki.secret={name}\n--label\n\
         org.kraliki.version={version}\nkraliki_{name}_v{version}\n-\n"
    )
}

fn expected_dry_run(version: u32) -> String {
    GENERATED
        .iter()
        .map(|name| format!("docker secret create kraliki_{name}_v{version} -\n"))
        .collect()
}

fn assert_no_value_in(generated: &Generated, texts: &[&str]) {
    for fragment in generated.fragments() {
        for text in texts {
            assert!(
                !text.contains(&fragment),
                "a secret value leaked into {text:?}"
            );
        }
    }
}

#[test]
fn dry_run_prints_one_command_per_secret_and_runs_nothing() {
    let fake = FakeDocker::new(None);
    for generated in [Generated::env(), Generated::dir()] {
        let done = run(kraliki(Some(&fake))
            .args(["secrets", "docker-setup", "--version", "3", "--dry-run"])
            .arg(&generated.path));
        assert!(done.success, "{}", done.stderr);
        assert_eq!(done.stdout, expected_dry_run(3));
        assert_no_value_in(&generated, &[&done.stdout, &done.stderr]);

        let done = run(kraliki(Some(&fake))
            .args(["secrets", "docker-setup", "--dry-run"])
            .arg(&generated.path));
        assert_eq!(done.stdout, expected_dry_run(1), "--version defaults to 1");
    }
    assert_eq!(fake.calls(), 0);
}

#[test]
fn each_value_reaches_docker_on_standard_input_only() {
    for generated in [Generated::env(), Generated::dir()] {
        let fake = FakeDocker::new(None);
        let done = run(kraliki(Some(&fake))
            .args(["secrets", "docker-setup", "--version", "3"])
            .arg(&generated.path)
            // As if the operator had sourced the env file: not for docker.
            .env("KRALIKI_SESSION_KEY", generated.value("session_key")));
        assert!(done.success, "{}", done.stderr);
        assert_eq!(fake.calls(), GENERATED.len());

        let mut outside_stdin = vec![done.stdout.clone(), done.stderr.clone()];
        for (i, name) in GENERATED.iter().enumerate() {
            let n = i + 1;
            assert_eq!(fake.read("argv", n), expected_argv(name, 3), "call {n}");
            let stdin = fake.read("stdin", n);
            let written = generated.value(name);
            if *name == "jwt_signing_key" {
                let pem = if written.starts_with("-----") {
                    written.to_string()
                } else {
                    pem_of_one_line(written)
                };
                assert_eq!(stdin, pem);
                assert!(stdin.starts_with("-----BEGIN PRIVATE KEY-----\n"));
                KeyRing::from_pem(&stdin).expect("the stored JWT key loads");
            } else {
                assert_eq!(stdin, written, "{name}");
            }
            outside_stdin.push(fake.read("argv", n));
            outside_stdin.push(fake.read("env", n));
        }
        let texts: Vec<&str> = outside_stdin.iter().map(String::as_str).collect();
        assert_no_value_in(&generated, &texts);
    }
}

#[test]
fn a_failing_docker_stops_the_run_naming_the_secret() {
    let generated = Generated::env();
    let fake = FakeDocker::new(Some(2));
    let done = run(kraliki(Some(&fake))
        .args(["secrets", "docker-setup", "--version", "3"])
        .arg(&generated.path));
    assert!(!done.success);
    assert!(
        done.stderr.contains("secret session_key"),
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("kraliki_session_key_v3"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("status 3"), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("docker secret rm kraliki_jwt_signing_key_v3"),
        "{}",
        done.stderr
    );
    assert_eq!(fake.calls(), 2, "no call after the failure");
    assert_no_value_in(&generated, &[&done.stdout, &done.stderr]);
}

#[test]
fn a_file_others_can_read_is_refused() {
    let fake = FakeDocker::new(None);
    for generated in [Generated::env(), Generated::dir()] {
        let (mode, fix) = if generated.path.is_dir() {
            (0o750, "chmod 700")
        } else {
            (0o640, "chmod 600")
        };
        std::fs::set_permissions(&generated.path, std::fs::Permissions::from_mode(mode)).unwrap();
        for dry_run in [false, true] {
            let mut cmd = kraliki(Some(&fake));
            cmd.args(["secrets", "docker-setup"]).arg(&generated.path);
            if dry_run {
                cmd.arg("--dry-run");
            }
            let done = run(&mut cmd);
            assert!(!done.success);
            let fix = format!("{fix} {}", generated.path.display());
            assert!(done.stderr.contains(&fix), "{}", done.stderr);
            assert_eq!(done.stdout, "");
        }
    }

    let generated = Generated::dir();
    let file = generated.path.join("csrf_key");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o604)).unwrap();
    let done = run(kraliki(Some(&fake))
        .args(["secrets", "docker-setup"])
        .arg(&generated.path));
    assert!(!done.success);
    let fix = format!("chmod 600 {}", file.display());
    assert!(done.stderr.contains(&fix), "{}", done.stderr);
    assert_eq!(fake.calls(), 0);
}

#[test]
fn unknown_keys_and_malformed_lines_are_refused_by_line() {
    let fake = FakeDocker::new(None);
    let generated = Generated::env();
    let original = std::fs::read_to_string(&generated.path).unwrap();
    let lines_before = original.lines().count();
    let session = generated.value("session_key");
    let cases = [
        (
            format!("KRALIKI_SESION_KEY={session}\n"),
            "line {n}: KRALIKI_SESION_KEY is not a known secret",
        ),
        (
            format!("{session}\n"),
            "line {n}: expected KRALIKI_<NAME>=value",
        ),
        (
            format!("KRALIKI_SESSION_KEY={session}\n"),
            "line {n}: KRALIKI_SESSION_KEY is set twice (first on line 3)",
        ),
        (
            "KRALIKI_SMTP_PASSWORD=\n".to_string(),
            "line {n}: KRALIKI_SMTP_PASSWORD is empty",
        ),
    ];
    for (extra, expected) in cases {
        std::fs::write(&generated.path, format!("{original}{extra}")).unwrap();
        let done = run(kraliki(Some(&fake))
            .args(["secrets", "docker-setup"])
            .arg(&generated.path));
        assert!(!done.success);
        let expected = expected.replace("{n}", &(lines_before + 1).to_string());
        assert!(done.stderr.contains(&expected), "{}", done.stderr);
        assert_no_value_in(&generated, &[&done.stdout, &done.stderr]);
    }

    let done = run(kraliki(Some(&fake))
        .args(["secrets", "docker-setup", "--version", "0"])
        .arg(&generated.path));
    assert!(!done.success);

    let folder = Generated::dir();
    std::fs::write(folder.path.join("postgres_password"), "x").unwrap();
    let done = run(kraliki(Some(&fake))
        .args(["secrets", "docker-setup"])
        .arg(&folder.path));
    assert!(!done.success);
    assert!(
        done.stderr
            .contains("postgres_password is not a known secret"),
        "{}",
        done.stderr
    );
    assert_eq!(fake.calls(), 0);
}

#[test]
fn without_docker_on_path_it_says_so() {
    let generated = Generated::env();
    let empty = tempfile::tempdir().unwrap();
    let done = run(kraliki(None)
        .env("PATH", empty.path())
        .args(["secrets", "docker-setup"])
        .arg(&generated.path));
    assert!(!done.success);
    assert!(done.stderr.contains("not on PATH"), "{}", done.stderr);
}

#[test]
fn the_deploy_wrapper_runs_docker_setup_and_reminds_to_delete_the_file() {
    let generated = Generated::env();
    let fake = FakeDocker::new(None);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/setup-docker-secrets.sh");

    let done = run(Command::new("sh")
        .arg(&script)
        .args(["--version", "2"])
        .arg(&generated.path)
        .env_clear()
        .env("PATH", path_with(Some(&fake)))
        .env("KRALIKI_BIN", env!("CARGO_BIN_EXE_kraliki")));
    assert!(done.success, "{}", done.stderr);
    assert_eq!(fake.calls(), GENERATED.len());
    assert_eq!(fake.read("argv", 1), expected_argv("jwt_signing_key", 2));
    let reminder = format!("shred -u \"{}\"", generated.path.display());
    assert!(done.stderr.contains(&reminder), "{}", done.stderr);

    let done = run(Command::new("sh")
        .arg(&script)
        .arg(&generated.path)
        .arg("--dry-run")
        .env_clear()
        .env("PATH", path_with(Some(&fake)))
        .env("KRALIKI_BIN", env!("CARGO_BIN_EXE_kraliki")));
    assert!(done.success, "{}", done.stderr);
    assert_eq!(done.stdout, expected_dry_run(1));
    assert!(!done.stderr.contains("shred"), "{}", done.stderr);
    assert_eq!(fake.calls(), GENERATED.len());
}
