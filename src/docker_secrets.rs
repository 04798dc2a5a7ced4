//! `kraliki secrets docker-setup`: turn a secrets file written by
//! `kraliki keys generate` into versioned Docker secrets
//! (`kraliki_<name>_v<N>`).
//!
//! The file is read and every value checked before `docker` runs at all, so
//! a typo creates nothing. Each value reaches `docker secret create` on its
//! standard input: never on a command line, never in the child's
//! environment, never in a message. Errors name the file, line and key,
//! never a value.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::secrets::{self, SECRET_NAMES, SYMMETRIC_KEYS};

/// One secret read from the file and checked, in the form Docker stores:
/// the JWT key as PEM, every other secret as written.
pub struct SecretEntry {
    /// One of [`SECRET_NAMES`].
    pub name: &'static str,
    value: SecretString,
}

impl SecretEntry {
    /// The Docker secret's name for `version`: `kraliki_<name>_v<N>`.
    pub fn docker_name(&self, version: u32) -> String {
        format!("kraliki_{}_v{version}", self.name)
    }
}

/// `kraliki secrets docker-setup FILE [--version N] [--dry-run]`.
///
/// `file` is an env-format secrets file or a folder of one file per secret.
/// With `dry_run`, print one `docker secret create` line per secret on
/// standard output and run nothing.
pub fn setup(file: &Path, version: u32, dry_run: bool) -> anyhow::Result<()> {
    anyhow::ensure!(version >= 1, "--version must be 1 or more");

    let entries = read(file)?;

    if dry_run {
        let mut out = std::io::stdout().lock();
        for entry in &entries {
            writeln!(out, "docker secret create {} -", entry.docker_name(version))?;
        }
        return Ok(());
    }

    let mut created: Vec<String> = Vec::new();
    for entry in &entries {
        let docker_name = entry.docker_name(version);
        let status = create(entry, version).with_context(|| {
            format!(
                "while creating Docker secret {docker_name} (secret {})",
                entry.name
            )
        })?;
        if !status.success() {
            let cleanup = if created.is_empty() {
                String::from("no secret was created before it")
            } else {
                format!(
                    "created before it: {0}; remove them with `docker secret rm {0}` before \
                     running again with --version {version}",
                    created.join(" ")
                )
            };
            anyhow::bail!(
                "`docker secret create {docker_name}` for secret {} failed: docker {}; \
                 stopped there ({cleanup})",
                entry.name,
                describe(status)
            );
        }
        eprintln!("created Docker secret {docker_name}");
        created.push(docker_name);
    }
    eprintln!(
        "created {} Docker secrets, version {version}, from {}",
        created.len(),
        file.display()
    );
    Ok(())
}

/// Run `docker secret create` for one secret, the value on standard input.
fn create(entry: &SecretEntry, version: u32) -> anyhow::Result<ExitStatus> {
    let mut cmd = Command::new("docker");
    cmd.args(["secret", "create", "--label"])
        .arg(format!("org.kraliki.secret={}", entry.name))
        .arg("--label")
        .arg(format!("org.kraliki.version={version}"))
        .arg(entry.docker_name(version))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // Someone who sourced the secrets file into this shell has the values in
    // `KRALIKI_*` variables; docker needs none of them.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("KRALIKI_") {
            cmd.env_remove(key);
        }
    }

    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("cannot run `docker`: it is not on PATH (install Docker)")
        }
        _ => anyhow::Error::new(e).context("cannot run `docker`"),
    })?;

    let mut stdin = child.stdin.take().expect("stdin is piped");
    let written = stdin.write_all(entry.value.expose_secret().as_bytes());
    drop(stdin);
    let status = child.wait().context("while waiting for docker")?;
    match written {
        // A docker that exits without reading its input says why itself.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("while writing the value to docker"))
        }
        _ => Ok(status),
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// Read and check every secret in `path` (an env file or a folder), in
/// [`SECRET_NAMES`] order. Refuses a file or folder that group or others can
/// read.
pub fn read(path: &Path) -> anyhow::Result<Vec<SecretEntry>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        check_private(path, &meta, "chmod 700")?;
        read_dir(path)
    } else {
        check_private(path, &meta, "chmod 600")?;
        let bytes = Zeroizing::new(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
        parse_env(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

fn check_private(path: &Path, meta: &std::fs::Metadata, fix: &str) -> anyhow::Result<()> {
    let mode = meta.permissions().mode() & 0o777;
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} is readable by other users (mode {mode:03o}); refusing to use it. Run `{fix} {}` \
         first",
        path.display(),
        path.display()
    );
    Ok(())
}

/// A folder written by `kraliki keys generate --format dir`: one file per
/// secret, named after it.
fn read_dir(dir: &Path) -> anyhow::Result<Vec<SecretEntry>> {
    let mut found = BTreeMap::new();
    for item in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let item = item.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = item.path();
        let name = item
            .file_name()
            .to_str()
            .and_then(|n| SECRET_NAMES.iter().copied().find(|known| *known == n))
            .with_context(|| {
                format!(
                    "{} is not a known secret; a secrets folder holds only files named {}",
                    path.display(),
                    SECRET_NAMES.join(", ")
                )
            })?;
        let meta =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        anyhow::ensure!(meta.is_file(), "{} is not a file", path.display());
        check_private(&path, &meta, "chmod 600")?;

        let bytes = Zeroizing::new(
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        );
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
        // As the secrets loader reads it.
        let value = text.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!value.is_empty(), "{} is empty", path.display());
        let value = checked(name, value).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        found.insert(name, value);
    }
    in_order(found).with_context(|| format!("{} holds no secrets", dir.display()))
}

/// An env-format secrets file: `KRALIKI_<NAME>=value` lines, optionally
/// after `export `; values may be in single or double quotes, taken
/// literally. `#` comments and blank lines are ignored. Errors name the line
/// and, for a `KRALIKI_` key, the key; never the value.
fn parse_env(text: &str) -> Result<Vec<SecretEntry>, String> {
    let mut found: BTreeMap<&'static str, (usize, SecretString)> = BTreeMap::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {line_no}: expected KRALIKI_<NAME>=value"))?;
        let key = key.trim();
        let is_kraliki_key = key.starts_with("KRALIKI_")
            && key
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !is_kraliki_key {
            // The text before `=` may be part of a value; never echo it.
            return Err(format!(
                "line {line_no}: expected KRALIKI_<NAME>=value (the text before `=` is not a \
                 KRALIKI_ name)"
            ));
        }
        let name = SECRET_NAMES
            .iter()
            .copied()
            .find(|name| secrets::env_var_name(name) == key)
            .ok_or_else(|| {
                let known: Vec<String> = SECRET_NAMES
                    .iter()
                    .map(|n| secrets::env_var_name(n))
                    .collect();
                format!(
                    "line {line_no}: {key} is not a known secret; known: {}",
                    known.join(", ")
                )
            })?;
        if let Some((first, _)) = found.get(name) {
            return Err(format!(
                "line {line_no}: {key} is set twice (first on line {first})"
            ));
        }

        let value = unquote(value.trim()).map_err(|why| format!("line {line_no}: {key} {why}"))?;
        if value.is_empty() {
            return Err(format!("line {line_no}: {key} is empty"));
        }
        let value = checked(name, value).map_err(|e| format!("line {line_no}: {e}"))?;
        found.insert(name, (line_no, value));
    }
    let found = found.into_iter().map(|(name, (_, v))| (name, v)).collect();
    in_order(found).ok_or_else(|| "holds no KRALIKI_<NAME>=value lines".to_string())
}

/// The value inside matching quotes, or the bare value.
fn unquote(value: &str) -> Result<&str, &'static str> {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            return match rest.strip_suffix(quote) {
                Some(inner) if !inner.contains(quote) => Ok(inner),
                _ => Err("has an unterminated or stray quote"),
            };
        }
    }
    if value.contains(['"', '\'']) {
        return Err("has a quote inside an unquoted value; quote the whole value");
    }
    if value.contains(char::is_whitespace) {
        return Err("has whitespace in an unquoted value; quote the whole value");
    }
    Ok(value)
}

/// Check a value as the secrets loader will at start-up, so Docker never
/// stores one the server refuses. Returns what Docker should store.
fn checked(name: &'static str, value: &str) -> Result<SecretString, String> {
    if name == "jwt_signing_key" {
        let mut pem = secrets::normalize_jwt_key(value).map_err(|e| e.0)?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        return Ok(SecretString::from(pem));
    }
    if SYMMETRIC_KEYS.contains(&name) {
        secrets::decode_symmetric(name, value).map_err(|e| e.0)?;
    } else {
        secrets::check_opaque(name, value).map_err(|e| e.0)?;
    }
    Ok(SecretString::from(value.to_owned()))
}

fn in_order(mut found: BTreeMap<&'static str, SecretString>) -> Option<Vec<SecretEntry>> {
    let entries: Vec<SecretEntry> = SECRET_NAMES
        .iter()
        .filter_map(|name| found.remove(name).map(|value| SecretEntry { name, value }))
        .collect();
    (!entries.is_empty()).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[SecretEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.name).collect()
    }

    fn key() -> String {
        secrets::generate_value("session_key")
    }

    #[test]
    fn env_lines_are_read_in_secret_order_with_quotes_and_comments() {
        let jwt = secrets::pem_to_one_line(&secrets::generate_value("jwt_signing_key"));
        let (a, b) = (key(), key());
        let text = format!(
            "# comment\n\n  KRALIKI_CSRF_KEY = '{a}'  \nexport KRALIKI_SESSION_KEY=\"{b}\"\n\
             KRALIKI_JWT_SIGNING_KEY={jwt}\r\nKRALIKI_DATABASE_URL=postgres://k:{a}@db/k\n"
        );
        let entries = parse_env(&text).unwrap();
        assert_eq!(
            names(&entries),
            ["jwt_signing_key", "session_key", "csrf_key", "database_url"]
        );
        assert!(entries[0]
            .value
            .expose_secret()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(entries[1].value.expose_secret(), b);
        assert_eq!(entries[2].value.expose_secret(), a);
        assert_eq!(entries[0].docker_name(7), "kraliki_jwt_signing_key_v7");
    }

    #[test]
    fn bad_env_lines_are_refused_by_line_without_their_value() {
        let k = key();
        let cases = [
            (
                format!("KRALIKI_SESSION_KEY={k}\n{k}\n"),
                "line 2: expected",
            ),
            (
                format!("\n{k}=x\n"),
                "line 2: expected KRALIKI_<NAME>=value (the text",
            ),
            (
                format!("KRALIKI_SESION_KEY={k}\n"),
                "line 1: KRALIKI_SESION_KEY is not a known",
            ),
            (
                format!("KRALIKI_SESSION_KEY_FILE={k}\n"),
                "KRALIKI_SESSION_KEY_FILE is not",
            ),
            (
                format!("KRALIKI_CSRF_KEY={k}\n#\nKRALIKI_CSRF_KEY={k}\n"),
                "line 3: KRALIKI_CSRF_KEY is set twice (first on line 1)",
            ),
            (
                "KRALIKI_AUDIT_KEY=\n".to_string(),
                "line 1: KRALIKI_AUDIT_KEY is empty",
            ),
            (
                "KRALIKI_AUDIT_KEY=''\n".to_string(),
                "line 1: KRALIKI_AUDIT_KEY is empty",
            ),
            (
                format!("KRALIKI_AUDIT_KEY=\"{k}\n"),
                "line 1: KRALIKI_AUDIT_KEY has an unterminated",
            ),
            (format!("KRALIKI_AUDIT_KEY={k} # note\n"), "whitespace"),
            (
                "KRALIKI_DATA_KEY=changeme\n".to_string(),
                "line 1: secret data_key is a placeholder",
            ),
            (
                "KRALIKI_JWT_SIGNING_KEY=AAAA\n".to_string(),
                "line 1: secret jwt_signing_key",
            ),
            ("# nothing\n".to_string(), "holds no"),
        ];
        for (text, expected) in cases {
            let err = parse_env(&text).err().unwrap();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
            assert!(!err.contains(&k), "{err:?} shows a value");
        }
    }
}
