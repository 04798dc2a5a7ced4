//! The `kraliki` command line.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;

use crate::audit::{Actor, AuditEvent, Outcome};
use crate::config::{self, FlagOverrides, Settings};
use crate::secrets::{self, Secrets};
use crate::security::events::SecurityLog;
use crate::store::users::{NewUser, Role};
use crate::store::{self, OrgId};
use crate::tls::{CertFiles, ServerCert};

/// Voice by Kraliki: a self-hosted, security-first call-center backend.
#[derive(Parser, Debug)]
#[command(name = "kraliki", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (TOML). Also `KRALIKI_CONFIG`.
    #[arg(long, global = true, env = "KRALIKI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data folder (SQLite database, development keys, mail outbox). Also
    /// `KRALIKI_DATA_DIR`.
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (development mode on 127.0.0.1:3018 by default).
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Generate or inspect keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage organizations.
    #[command(subcommand)]
    Orgs(OrgsCommand),
    /// Inspect the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Probe this server's `/ready` over plain HTTP: exit 0 when it answers
    /// 200, 1 otherwise (container health checks). Reads settings, never
    /// secrets.
    Healthcheck(HealthcheckArgs),
    /// Hand secrets to the container platform.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

/// `kraliki secrets …`.
#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Create versioned Docker secrets `kraliki_<name>_v<N>` from a secrets
    /// file written by `kraliki keys generate` (env file or folder). Each
    /// value reaches `docker secret create` on its standard input only.
    DockerSetup(DockerSetupArgs),
}

/// `kraliki secrets docker-setup` options.
#[derive(Args, Debug)]
pub struct DockerSetupArgs {
    /// Env-format secrets file (`KRALIKI_<NAME>=value` lines) or folder of
    /// one file per secret; must not be readable by group or others.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Version number in the secrets' names (`kraliki_<name>_v<N>`); raise
    /// it for each rotation.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub version: u32,
    /// Print the `docker secret create` commands, one per secret, and run
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `kraliki healthcheck` options.
#[derive(Args, Debug)]
pub struct HealthcheckArgs {
    /// Probe this URL instead: plain `http://HOST:PORT/PATH` (the path
    /// defaults to `/ready`). Without it, the address is the `listen`
    /// setting, a wildcard address (`0.0.0.0`, `::`) probed on loopback.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `kraliki audit …`.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Walk the whole audit chain and exit non-zero at the first altered,
    /// reordered or missing entry, naming it.
    Verify,
}

/// `kraliki serve` options.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address and port to listen on. Also `KRALIKI_LISTEN`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Create a demo organization (an admin, a supervisor, two agents) with
    /// random passwords printed once. Development only.
    #[arg(long)]
    pub demo: bool,
    /// Serve HTTPS with this PEM certificate chain (server certificate
    /// first); needs `--tls-key`. SIGHUP reloads both files. Also
    /// `KRALIKI_TLS__CERT`.
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert` (PKCS#8, RSA or SEC1); mode 0600
    /// in production. Also `KRALIKI_TLS__KEY`.
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Also listen for plain HTTP here, answering every request with a 308
    /// redirect to HTTPS. Also `KRALIKI_TLS__REDIRECT_LISTEN`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub tls_redirect_listen: Option<SocketAddr>,
}

/// `kraliki keys …`.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Write a complete set of new secrets (mode 0600).
    Generate(GenerateArgs),
    /// Replace the token signing key, session key and CSRF key with fresh
    /// ones. Each old key is kept beside the new one as
    /// `<name>.retired.<unix expiry>` and still accepted (never used for
    /// anything new) until the grace period ends. Running servers pick the
    /// change up on SIGHUP.
    Rotate(RotateArgs),
    /// Show the age of every secret and the retired keys still accepted;
    /// warns about keys overdue for rotation (signing key after 90 days,
    /// session and CSRF keys after 30, the database password after 180).
    Status(StatusArgs),
}

/// `kraliki keys rotate` options.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// How long the old keys stay valid for what was made with them, e.g.
    /// 24h, 90m, 7d. Choose at least the access-token lifetime (15 minutes),
    /// and the browser-session lifetime to keep everyone signed in.
    #[arg(long, default_value = "24h", value_parser = parse_grace)]
    pub grace: Duration,
    /// Only these keys (default: all three).
    #[arg(long = "key", value_name = "NAME",
          value_parser = ["jwt_signing_key", "session_key", "csrf_key"])]
    pub keys: Vec<String>,
    /// Rotate the key files in this folder (one file per secret, as written
    /// by `keys generate --format dir`) instead of where the server reads
    /// them.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// `kraliki keys status` options.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Exit with status 1 when a key is overdue for rotation (for cron jobs
    /// and monitoring).
    #[arg(long)]
    pub check: bool,
}

fn parse_grace(text: &str) -> Result<Duration, String> {
    crate::rotation::parse_duration(text)
}

/// Output formats of `keys generate`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `KRALIKI_<NAME>=value` lines.
    Env,
    /// One file per secret in a folder (for Docker secrets or
    /// `KRALIKI_SECRETS_DIR`).
    Dir,
}

/// `kraliki keys generate` options.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "env")]
    pub format: KeyFormat,
    /// Output file (env) or folder (dir). Env format without it prints to
    /// standard output.
    #[arg(long, value_name = "PATH")]
    pub out: Option<PathBuf>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// `kraliki users …`.
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user. The password is read from a prompt, or from the first
    /// line of standard input when it is not a terminal; never from the
    /// command line.
    Create(CreateUserArgs),
}

/// `kraliki users create` options.
#[derive(Args, Debug)]
pub struct CreateUserArgs {
    /// Organization id.
    #[arg(long)]
    pub org: String,
    /// Login e-mail.
    #[arg(long)]
    pub email: String,
    /// Role: agent, supervisor or admin.
    #[arg(long, value_parser = ["agent", "supervisor", "admin"])]
    pub role: String,
    /// Display name (defaults to the e-mail's local part).
    #[arg(long)]
    pub display_name: Option<String>,
}

/// `kraliki orgs …`.
#[derive(Subcommand, Debug)]
pub enum OrgsCommand {
    /// Create an organization and print its id.
    Create {
        /// Organization name.
        #[arg(long)]
        name: String,
    },
}

/// The secrets that `keys generate` writes.
const GENERATED: &[&str] = &[
    "jwt_signing_key",
    "session_key",
    "csrf_key",
    "audit_key",
    "data_key",
    "alert_webhook_secret",
];

/// Run the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn process_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

fn load_settings(cli: &Cli, serve: Option<&ServeArgs>) -> anyhow::Result<Settings> {
    let env = process_env();
    let flags = FlagOverrides {
        listen: serve.and_then(|s| s.listen),
        data_dir: cli.data_dir.clone(),
        tls_cert: serve.and_then(|s| s.tls_cert.clone()),
        tls_key: serve.and_then(|s| s.tls_key.clone()),
        tls_redirect_listen: serve.and_then(|s| s.tls_redirect_listen),
    };
    let settings = config::load(cli.config.as_deref(), &env, &flags)?;
    crate::telemetry::init(&settings.log);
    Ok(settings)
}

fn load_secrets(settings: &Settings) -> anyhow::Result<Secrets> {
    Ok(secrets::load(settings, &process_env())?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => serve(&cli, args).await,
        Command::Migrate => {
            let settings = load_settings(&cli, None)?;
            let secrets = load_secrets(&settings)?;
            let db = crate::startup::open_database(&settings, &secrets).await?;
            db.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keys(KeysCommand::Generate(args)) => generate_keys(args),
        Command::Keys(KeysCommand::Rotate(args)) => rotate_keys(&cli, args),
        Command::Keys(KeysCommand::Status(args)) => key_status(&cli, args),
        Command::Healthcheck(args) => healthcheck(&cli, args).await,
        Command::Secrets(SecretsCommand::DockerSetup(args)) => {
            crate::docker_secrets::setup(&args.file, args.version, args.dry_run)
        }
        Command::Users(UsersCommand::Create(args)) => create_user(&cli, args).await,
        Command::Audit(AuditCommand::Verify) => {
            let settings = load_settings(&cli, None)?;
            let secrets = load_secrets(&settings)?;
            let db = crate::startup::open_database(&settings, &secrets).await?;
            db.migrate().await?;
            match crate::audit::verify(&db, &secrets.audit_key).await? {
                Ok(summary) => {
                    println!(
                        "audit trail intact: {} entries; head MAC {}",
                        summary.entries,
                        if summary.head_mac.is_empty() {
                            "(none)"
                        } else {
                            &summary.head_mac
                        }
                    );
                    Ok(())
                }
                Err(problem) => anyhow::bail!("audit trail broken: {problem}"),
            }
        }
        Command::Orgs(OrgsCommand::Create { name }) => {
            let settings = load_settings(&cli, None)?;
            let secrets = load_secrets(&settings)?;
            let db = crate::startup::open_database(&settings, &secrets).await?;
            db.migrate().await?;
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.chars().count() <= 200,
                "--name must be 1 to 200 characters"
            );
            let org = store::organizations::create(&db, name, false).await?;
            let event = AuditEvent {
                actor: Actor::Cli,
                organization_id: Some(org.id.clone()),
                action: "organization.create",
                object_type: "organization",
                object_id: Some(org.id.clone()),
                outcome: Outcome::Success,
                details: serde_json::json!({}),
            };
            crate::audit::record(&db, &secrets.audit_key, None, event).await?;
            println!("{}", org.id);
            Ok(())
        }
    }
}

async fn serve(cli: &Cli, args: &ServeArgs) -> anyhow::Result<()> {
    let settings = load_settings(cli, Some(args))?;
    if args.demo && settings.is_production() {
        anyhow::bail!("--demo is refused in production: demo accounts are for development only");
    }
    let secrets = load_secrets(&settings)?;
    // The certificate is checked before anything listens.
    let cert = match CertFiles::from_settings(&settings.tls, settings.is_production()) {
        Some(files) => Some(ServerCert::load(files)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let redirect = match settings.tls.redirect_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (tls.redirect_listen)"))?,
        ),
        None => None,
    };
    let metrics = match settings.metrics.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?,
        ),
        None => None,
    };
    let mut settings = settings;
    settings.listen = listener.local_addr()?;
    let state = crate::startup::build_state(settings, secrets, SecurityLog::stdout_sink()).await?;
    if args.demo {
        crate::demo::create(&state).await?;
    }
    if let Some(metrics) = metrics {
        let addr = metrics.local_addr()?;
        tracing::info!(listen = %addr, "metrics listener (GET /metrics, no authentication)");
        eprintln!("kraliki metrics on http://{addr}/metrics");
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = crate::startup::serve_metrics(metrics, state).await {
                tracing::error!(error = format!("{err:#}"), "metrics listener stopped");
            }
        });
    }
    let scheme = if cert.is_some() { "https" } else { "http" };
    tracing::info!(
        listen = %state.settings.listen,
        scheme,
        env = ?state.settings.env,
        database = ?state.db.backend,
        "kraliki is listening"
    );
    let Some(cert) = cert else {
        eprintln!("kraliki listening on http://{}", state.settings.listen);
        return crate::startup::serve(listener, state).await;
    };

    // Before the listening line: from then on a SIGHUP must reload, never
    // end the process.
    crate::tls::reload_on_sighup(cert.clone()).context("cannot listen for SIGHUP")?;
    tracing::info!(
        cert = %cert.files().cert.display(),
        sha256 = %cert.fingerprint(),
        "TLS certificate loaded"
    );
    if let Some(redirect) = &redirect {
        eprintln!(
            "kraliki redirecting http://{} to https",
            redirect.local_addr()?
        );
    }
    eprintln!("kraliki listening on https://{}", state.settings.listen);
    crate::startup::serve_https(listener, redirect, state, cert).await
}

/// How long `kraliki healthcheck` waits for connect, request and status line
/// together.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// `kraliki healthcheck`: one line on standard output when ready; otherwise
/// an error (one line on standard error, exit code 1).
async fn healthcheck(cli: &Cli, args: &HealthcheckArgs) -> anyhow::Result<()> {
    let target = match &args.url {
        Some(url) => ProbeTarget::parse(url)?,
        None => ProbeTarget::for_listen(load_settings(cli, None)?.listen),
    };

    match tokio::time::timeout(HEALTHCHECK_TIMEOUT, target.probe()).await {
        Ok(Ok(200)) => {
            println!("ready: {target} answered 200");
            Ok(())
        }
        Ok(Ok(status)) => anyhow::bail!("not ready: {target} answered {status}"),
        Ok(Err(err)) => anyhow::bail!("not ready: {target}: {err:#}"),
        Err(_) => anyhow::bail!(
            "not ready: {target} did not answer within {} s",
            HEALTHCHECK_TIMEOUT.as_secs()
        ),
    }
}

/// Where `kraliki healthcheck` sends its `GET`.
#[derive(Debug, PartialEq, Eq)]
struct ProbeTarget {
    /// Host as written in a URL (IPv6 in brackets).
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl std::fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

impl ProbeTarget {
    /// The readiness route of a server listening on `listen`.
    fn for_listen(listen: SocketAddr) -> ProbeTarget {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        ProbeTarget {
            host: match ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            },
            port: listen.port(),
            path: "/ready".into(),
        }
    }

    /// Parse `http://HOST[:PORT][/PATH]`; only plain HTTP, no user info.
    fn parse(url: &str) -> anyhow::Result<ProbeTarget> {
        let rest = url.strip_prefix("http://").with_context(|| {
            format!("--url {url:?} must start with http:// (the probe speaks plain HTTP)")
        })?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/ready"),
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        let bad = || anyhow::anyhow!("--url {url:?} is not http://HOST[:PORT][/PATH]");
        anyhow::ensure!(
            !path.chars().any(|c| c.is_whitespace() || c.is_control()),
            bad()
        );
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (ip, after) = v6.split_once(']').ok_or_else(bad)?;
                let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
                let port = match after {
                    "" => "",
                    after => after.strip_prefix(':').ok_or_else(bad)?,
                };
                (format!("[{ip}]"), port)
            }
            None => {
                let (host, port) = authority.split_once(':').unwrap_or((authority, ""));
                let host_ok = !host.is_empty()
                    && host
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
                anyhow::ensure!(host_ok, bad());
                (host.to_string(), port)
            }
        };
        let port: u16 = match port {
            "" => 80,
            port => port.parse().map_err(|_| bad())?,
        };
        anyhow::ensure!(port != 0, bad());
        Ok(ProbeTarget { host, port, path })
    }

    /// Connect, send one HTTP/1.1 `GET`, and return the status code.
    async fn probe(&self) -> anyhow::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let mut stream = tokio::net::TcpStream::connect((host, self.port)).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: kraliki-healthcheck\r\n\
             Accept: application/json\r\nConnection: close\r\n\r\n",
            self.path, self.host, self.port
        );
        stream.write_all(request.as_bytes()).await?;

        // The status line is all that matters.
        let mut head = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 1024 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        parse_status_line(&head)
    }
}

/// The status code of an `HTTP/1.x NNN reason` line.
fn parse_status_line(head: &[u8]) -> anyhow::Result<u16> {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    match code.parse::<u16>() {
        Ok(code) if version.starts_with("HTTP/1.") && (100..600).contains(&code) => Ok(code),
        _ if head.is_empty() => anyhow::bail!("the connection closed without an answer"),
        _ => anyhow::bail!("the answer is not HTTP/1.x"),
    }
}

fn rotate_keys(cli: &Cli, args: &RotateArgs) -> anyhow::Result<()> {
    use crate::rotation;
    let names: Vec<&'static str> = if args.keys.is_empty() {
        secrets::ROTATABLE_KEYS.to_vec()
    } else {
        secrets::ROTATABLE_KEYS
            .iter()
            .copied()
            .filter(|n| args.keys.iter().any(|k| k == n))
            .collect()
    };
    let loaded = match &args.dir {
        Some(_) => None,
        None => {
            let settings = load_settings(cli, None)?;
            Some(load_secrets(&settings)?)
        }
    };
    let files = rotation::key_files(loaded.as_ref(), args.dir.as_deref(), &names)?;
    let now = rotation::now_secs();
    if args.grace < Duration::from_secs(15 * 60) {
        eprintln!(
            "warning: a grace of {} is shorter than the access-token lifetime; tokens and \
             sessions made before this rotation stop working when it ends",
            rotation::human_span(args.grace.as_secs() as i64)
        );
    }
    for (name, path) in &files {
        let done = rotation::rotate_file(name, path, args.grace, now)?;
        println!("{name}: new key in {}", done.path.display());
        if let Some((old, new)) = &done.kids {
            println!("  signing kid {new}; previous kid {old} verifies only");
        }
        println!(
            "  old key kept in {} until {} (unix {})",
            done.retired_path.display(),
            crate::security::events::rfc3339_ms(done.retired_until * 1000),
            done.retired_until
        );
    }
    println!(
        "send SIGHUP to running servers (e.g. `kill -HUP <pid>`) to put the new keys in force"
    );
    Ok(())
}

fn key_status(cli: &Cli, args: &StatusArgs) -> anyhow::Result<()> {
    let settings = load_settings(cli, None)?;
    let secrets = load_secrets(&settings)?;
    let now = crate::rotation::now_secs();
    let ages = crate::rotation::key_ages(&secrets, now)?;
    let overdue = crate::rotation::print_status(&ages, now, &mut std::io::stdout())?;
    if overdue > 0 {
        eprintln!(
            "warning: {overdue} secret(s) overdue for rotation; run `kraliki keys rotate` (keys) \
             or change the database password"
        );
        if args.check {
            anyhow::bail!("{overdue} secret(s) overdue for rotation");
        }
    }
    Ok(())
}

fn generate_keys(args: &GenerateArgs) -> anyhow::Result<()> {
    let values: Vec<(&str, String)> = GENERATED
        .iter()
        .map(|name| (*name, secrets::generate_value(name)))
        .collect();
    match args.format {
        KeyFormat::Env => {
            let mut text = String::from(
                "# Voice by Kraliki secrets. Keep this file private (mode 0600) and out of \
                 version control.\n",
            );
            for (name, value) in &values {
                let value = if *name == "jwt_signing_key" {
                    secrets::pem_to_one_line(value)
                } else {
                    value.clone()
                };
                text.push_str(&format!("{}={}\n", secrets::env_var_name(name), value));
            }
            match &args.out {
                Some(path) => {
                    write_new(path, text.as_bytes(), args.force)?;
                    eprintln!("wrote {} secrets to {}", values.len(), path.display());
                }
                None => {
                    std::io::stdout().write_all(text.as_bytes())?;
                }
            }
        }
        KeyFormat::Dir => {
            let dir = args
                .out
                .as_ref()
                .context("--format dir needs --out FOLDER")?;
            secrets::create_private_dir(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            if !args.force {
                for (name, _) in &values {
                    anyhow::ensure!(
                        !dir.join(name).exists(),
                        "{} exists; pass --force to overwrite",
                        dir.join(name).display()
                    );
                }
            }
            for (name, value) in &values {
                write_new(&dir.join(name), value.as_bytes(), args.force)?;
            }
            eprintln!("wrote {} secrets to {}", values.len(), dir.display());
        }
    }
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        anyhow::bail!("{} exists; pass --force to overwrite", path.display());
    }
    secrets::write_private_file(path, contents, force)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_password() -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Repeat password: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        first
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    Ok(SecretString::from(password))
}

async fn create_user(cli: &Cli, args: &CreateUserArgs) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let settings = load_settings(cli, None)?;
    let secrets = load_secrets(&settings)?;
    let email = crate::auth::parse_email("email", &args.email)
        .map_err(|_| anyhow::anyhow!("--email is not a valid e-mail address"))?;
    let role = Role::parse(&args.role).context("--role must be agent, supervisor or admin")?;
    let password = read_password()?;
    crate::security::password::check_password(password.expose_secret(), &email, false)
        .map_err(|r| anyhow::anyhow!("password refused: {}", r.reason()))?;

    let db = crate::startup::open_database(&settings, &secrets).await?;
    db.migrate().await?;
    let org = OrgId(args.org.clone());
    store::organizations::get(&db, &org)
        .await?
        .with_context(|| format!("no organization with id {}", args.org))?;
    let hasher = crate::security::password::PasswordHasher::new(1);
    let phc = hasher
        .hash(password)
        .await
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    let display_name = args
        .display_name
        .clone()
        .unwrap_or_else(|| email.split('@').next().unwrap_or(&email).to_string());
    let user = store::users::create(
        &db,
        NewUser {
            org: &org,
            email: &email,
            display_name: &display_name,
            role,
            password_hash: &phc,
            is_demo: false,
        },
    )
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            anyhow::anyhow!("a user with this e-mail address already exists")
        }
        _ => anyhow::Error::new(e).context("while creating the user"),
    })?;
    let event = AuditEvent {
        actor: Actor::Cli,
        organization_id: Some(args.org.clone()),
        action: "user.create",
        object_type: "user",
        object_id: Some(user.id.clone()),
        outcome: Outcome::Success,
        details: serde_json::json!({ "role": role.as_str() }),
    };
    crate::audit::record(&db, &secrets.audit_key, None, event).await?;
    println!("{}", user.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthcheck_probes_loopback_for_a_wildcard_listen_address() {
        let t = ProbeTarget::for_listen("0.0.0.0:3018".parse().unwrap());
        assert_eq!(t.to_string(), "http://127.0.0.1:3018/ready");
        let t = ProbeTarget::for_listen("[::]:3018".parse().unwrap());
        assert_eq!(t.to_string(), "http://[::1]:3018/ready");
        let t = ProbeTarget::for_listen("10.1.2.3:80".parse().unwrap());
        assert_eq!(t.to_string(), "http://10.1.2.3:80/ready");
    }

    #[test]
    fn healthcheck_urls() {
        let t = ProbeTarget::parse("http://127.0.0.1:3018").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:3018/ready");
        let t = ProbeTarget::parse("http://app:3018/health").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("app", 3018, "/health")
        );
        let t = ProbeTarget::parse("http://[::1]:9/ready?x=1").unwrap();
        assert_eq!(t.to_string(), "http://[::1]:9/ready?x=1");
        assert_eq!(ProbeTarget::parse("http://localhost").unwrap().port, 80);
        for bad in [
            "https://127.0.0.1:3018/ready",
            "127.0.0.1:3018",
            "http://",
            "http://user@host:1/",
            "http://host:0/",
            "http://host:99999/",
            "http://host:1/a b",
            "http://[::1/",
            "http://[::1]x/",
        ] {
            assert!(ProbeTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn healthcheck_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK\r\n").unwrap(), 200);
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n").unwrap(),
            503
        );
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n").unwrap(), 204);
        assert!(parse_status_line(b"").is_err());
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status_line(b"HTTP/1.1 abc\r\n").is_err());
    }
}
