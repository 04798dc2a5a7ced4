//! Building the server from settings and secrets, and running it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::{ConfigError, Settings};
use crate::http::redirect::HttpsRedirect;
use crate::keys::{KeyStore, LiveKeys};
use crate::mail::Mailer;
use crate::secrets::Secrets;
use crate::security::blocklist::Blocklist;
use crate::security::events::{LogSink, SecurityLog};
use crate::security::outbound::OutboundClient;
use crate::security::password::PasswordHasher;
use crate::security::ratelimit::{Clock, Limiter, SystemClock};
use crate::security::tokens::Expectations;
use crate::shutdown::Shutdown;
use crate::state::{AppState, Inner};
use crate::store::Db;
use crate::tls::{self, ServerCert};

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
    build_state_with_clock(settings, secrets, sink, Arc::new(SystemClock)).await
}

/// [`build_state`] with a given clock for time-based controls (tests use a
/// manual clock instead of sleeping).
pub async fn build_state_with_clock(
    settings: Settings,
    secrets: Secrets,
    sink: LogSink,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AppState> {
    let db = open_database(&settings, &secrets).await?;
    db.migrate().await?;
    production_checks(&settings, &db).await?;

    let keys = KeyStore::new(LiveKeys::from_secrets(&secrets)?);
    let hasher = PasswordHasher::new(settings.auth.hash_concurrency);
    // Before the first request: an unknown e-mail address must not be
    // slower to refuse than a wrong password, the first one included.
    hasher.warm_up().await;
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
    let outbound =
        OutboundClient::new(&settings.outbound).map_err(|e| anyhow::anyhow!("outbound: {e}"))?;
    let mut security = SecurityLog::new(db.clone(), sink);
    let alerts =
        crate::security::alerts::start(&settings, &secrets, outbound.clone(), clock.clone())?;
    if let Some(alerts) = alerts {
        security = security.with_alerts(alerts);
    }
    if let Some(url) = &secrets.redis_url {
        let fanout = crate::security::fanout::start(
            url.expose_secret(),
            &settings.redis_key_prefix,
            &secrets.audit_key,
            security.live_sender(),
        )
        .map_err(|e| anyhow::anyhow!("live events: {e}"))?;
        security = security.with_fanout(fanout);
    }
    let ids = &settings.ids;
    let mut blocklist = Blocklist::new(
        ids.block_threshold as usize,
        ids.block_window_secs * 1000,
        ids.block_secs * 1000,
    );
    if let Some(url) = &secrets.redis_url {
        let prefix = format!("{}ids:", settings.redis_key_prefix);
        blocklist = blocklist
            .with_redis(url.expose_secret(), &prefix)
            .map_err(|e| anyhow::anyhow!("intrusion detection: {e}"))?;
    }
    let limiter = match &secrets.redis_url {
        Some(url) => {
            let prefix = format!("{}rl:", settings.redis_key_prefix);
            Limiter::with_redis(
                settings.rate_limit.clone(),
                clock.clone(),
                url.expose_secret(),
                &prefix,
            )
            .await
        }
        None => Limiter::in_process(settings.rate_limit.clone(), clock.clone()),
    }
    .map_err(|e| anyhow::anyhow!("rate limiter: {e}"))?;
    let metrics = security.metrics().clone();
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
        limiter,
        clock,
        blocklist,
        outbound,
        shutdown: Shutdown::new(),
        metrics,
    }))
}

/// The time limits of an accept loop.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// A client must send its request head within this.
    header_read: Duration,
    /// In-flight requests get this long to finish at shutdown.
    grace: Duration,
}

impl Timing {
    fn of(http: &crate::config::HttpSettings) -> Timing {
        Timing {
            header_read: Duration::from_secs(http.header_read_timeout_secs),
            grace: Duration::from_secs(http.shutdown_grace_secs),
        }
    }
}

/// Serve on `listener` until SIGINT or SIGTERM, then stop accepting and let
/// in-flight requests finish (bounded by `http.shutdown_grace_secs`). SIGHUP
/// reloads secrets and puts rotated keys in force.
pub async fn serve(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let reloader = crate::rotation::reload_on_sighup(state.clone())?;
    let served = serve_until(listener, state, shutdown_signal()).await;
    reloader.abort();
    served
}

/// Serve until `shutdown` completes. Each connection is served by hyper
/// with a header-read timeout, so a client that trickles its request head
/// is cut off.
pub async fn serve_until(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let timing = Timing::of(&state.settings.http);
    let app = crate::http::router(state.clone());
    serve_router(listener, app, None, Some(state), timing, shutdown).await
}

/// Serve the `metrics.listen` listener (`GET /metrics` only) until SIGINT
/// or SIGTERM.
pub async fn serve_metrics(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let timing = Timing::of(&state.settings.http);
    let app = crate::http::metrics::internal_router(state);
    serve_router(listener, app, None, None, timing, shutdown_signal()).await
}

/// Serve HTTPS on `listener` with `cert` (and, with `redirect`, plain HTTP
/// that only redirects to it) until SIGINT or SIGTERM; see [`serve`].
pub async fn serve_https(
    listener: TcpListener,
    redirect: Option<TcpListener>,
    state: AppState,
    cert: Arc<ServerCert>,
) -> anyhow::Result<()> {
    let reloader = crate::rotation::reload_on_sighup(state.clone())?;
    let served = serve_https_until(listener, redirect, state, cert, shutdown_signal()).await;
    reloader.abort();
    served
}

/// [`serve_https`] until `shutdown` completes; both listeners stop then.
pub async fn serve_https_until(
    listener: TcpListener,
    redirect: Option<TcpListener>,
    state: AppState,
    cert: Arc<ServerCert>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let timing = Timing::of(&state.settings.http);
    let https_port = listener.local_addr()?.port();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone: stop as well.
        let _ = stopped.wait_for(|s| *s).await;
    };

    let redirecting = redirect.map(|listener| {
        let target = HttpsRedirect::new(&state.settings.public_url, https_port);
        tokio::spawn(serve_router(
            listener,
            crate::http::redirect::router(target),
            None,
            None,
            timing,
            until_stopped(stopped.clone()),
        ))
    });
    let app = crate::http::router(state.clone());
    let serving = serve_router(
        listener,
        app,
        Some(cert),
        Some(state),
        timing,
        until_stopped(stopped),
    );
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (served, ()) = tokio::join!(serving, signal);
    if let Some(task) = redirecting {
        task.await??;
    }
    served
}

/// A connection's byte stream: plain TCP or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The accept loop: each connection gets its own task, which does the TLS
/// handshake (with the configuration in use at that moment, bounded by
/// [`tls::HANDSHAKE_TIMEOUT`]) when `tls` is set and then serves HTTP/1.1 or
/// HTTP/2 with `app`.
async fn serve_router(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<Arc<ServerCert>>,
    live: Option<AppState>,
    timing: Timing,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timing.header_read);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and similar: back off briefly.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            app.clone()
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let io: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(cert) => {
                    let acceptor = cert.acceptor();
                    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service),
            );
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    // Live streams and WebSockets never finish by themselves: tell them to
    // close now, so they do not hold the drain for the whole grace period,
    // and wait for them as for the connections (upgraded WebSockets are no
    // longer connections hyper tracks).
    if let Some(state) = &live {
        state.shutdown.begin();
    }
    let drained = async {
        let streams = async {
            if let Some(state) = &live {
                state.shutdown.drained().await;
            }
        };
        tokio::join!(graceful.shutdown(), streams);
    };
    tokio::select! {
        () = drained => tracing::info!("all connections closed"),
        () = tokio::time::sleep(timing.grace) => {
            tracing::warn!("shutdown grace period over; closing remaining connections");
        }
    }
    Ok(())
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
