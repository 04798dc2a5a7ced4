//! Building the server from settings and secrets, and running it.

use std::net::SocketAddr;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::{ConfigError, Settings};
use crate::mail::Mailer;
use crate::secrets::Secrets;
use crate::security::events::{LogSink, SecurityLog};
use crate::security::password::PasswordHasher;
use crate::security::tokens::{Expectations, KeyRing};
use crate::state::{AppState, Inner};
use crate::store::Db;

/// Open the database the secrets point at (PostgreSQL, or SQLite in the
/// data folder), refusing SQLite in production without the opt-in.
pub async fn open_database(settings: &Settings, secrets: &Secrets) -> anyhow::Result<Db> {
    let url = secrets
        .database_url
        .as_ref()
        .map(|u| u.expose_secret().to_string());
    let wants_sqlite = url.as_deref().is_none_or(|u| u.starts_with("sqlite:"));
    if settings.is_production() && wants_sqlite && !settings.allow_sqlite_in_production {
        return Err(ConfigError(
            "production refuses the embedded SQLite database: set the database_url secret to a \
             PostgreSQL URL, or set KRALIKI_ALLOW_SQLITE_IN_PRODUCTION=true for a deliberate \
             single-host install"
                .into(),
        )
        .into());
    }
    Db::connect(url.as_deref(), &settings.data_dir).await
}

/// Checks that need the database: production refuses demo accounts.
pub async fn production_checks(settings: &Settings, db: &Db) -> anyhow::Result<()> {
    if settings.is_production() && crate::store::organizations::demo_data_exists(db).await? {
        return Err(ConfigError(
            "production refuses to start: demo accounts exist in the database (made by \
             `kraliki serve --demo`); use a fresh database for production"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// Assemble the shared state: connects, migrates, checks, loads keys.
pub async fn build_state(
    settings: Settings,
    secrets: Secrets,
    sink: LogSink,
) -> anyhow::Result<AppState> {
    let db = open_database(&settings, &secrets).await?;
    db.migrate().await?;
    production_checks(&settings, &db).await?;

    let keys = KeyRing::from_pem(secrets.jwt_signing_key.expose_secret())
        .map_err(|e| anyhow::anyhow!("jwt_signing_key: {e}"))?;
    let hasher = PasswordHasher::new(settings.auth.hash_concurrency);
    let mailer = Mailer::from_settings(&settings, &secrets)?;
    let trusted_proxies = settings
        .trusted_proxies
        .iter()
        .filter_map(|p| crate::config::parse_proxy(p))
        .collect();
    let token_expectations = Expectations {
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
        leeway_secs: 30,
    };
    let security = SecurityLog::new(db.clone(), sink);
    Ok(AppState::new(Inner {
        settings,
        secrets,
        db,
        keys,
        hasher,
        security,
        mailer,
        trusted_proxies,
        token_expectations,
    }))
}

/// Serve on `listener` until SIGINT or SIGTERM, then finish in-flight
/// requests.
pub async fn serve(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let app = crate::http::router(state);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("while serving")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
