//! Storage on SQLite (embedded default) or PostgreSQL, one query text for
//! both through sqlx's `Any` driver. Every query of organization-owned data
//! takes an [`OrgId`], so a query without its organization cannot be
//! written.

pub mod audit;
pub mod calls;
pub mod events;
pub mod logins;
pub mod organizations;
pub mod resets;
pub mod sessions;
pub mod totp;
pub mod users;
pub mod ws_tickets;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

/// Which database engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The organization a query is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(pub String);

impl std::fmt::Display for OrgId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The database handle shared by the whole server.
#[derive(Clone, Debug)]
pub struct Db {
    /// Connection pool.
    pub pool: AnyPool,
    /// Engine behind the pool.
    pub backend: Backend,
}

/// A new random id.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

impl Db {
    /// Connect to PostgreSQL when `database_url` is given, otherwise open (or
    /// create) `<data_dir>/kraliki.db`.
    pub async fn connect(database_url: Option<&str>, data_dir: &Path) -> anyhow::Result<Db> {
        sqlx::any::install_default_drivers();
        let (url, backend) = match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                (url.to_string(), Backend::Postgres)
            }
            Some(url) if url.starts_with("sqlite:") => (url.to_string(), Backend::Sqlite),
            Some(_) => {
                anyhow::bail!("database_url must start with postgres://, postgresql:// or sqlite:")
            }
            None => {
                crate::secrets::create_private_dir(data_dir)
                    .with_context(|| format!("while creating {}", data_dir.display()))?;
                let path = data_dir.join("kraliki.db");
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    Backend::Sqlite,
                )
            }
        };
        let options = AnyConnectOptions::from_str(&url).context("while parsing database_url")?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 8 } else { 16 })
            // A request waits at most this long for a connection; after that
            // it is answered 503 (the database is down or overloaded).
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                                      PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .context("while connecting to the database")?;
        Ok(Db { pool, backend })
    }

    /// Apply pending migrations for this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&self.pool).await,
        }
        .context("while applying migrations")
    }

    /// Check that the database answers.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("while pinging the database")?;
        Ok(())
    }
}

/// Bool stored as 0/1 in a BIGINT column (portable across both engines).
pub fn flag(v: i64) -> bool {
    v != 0
}

/// An opaque list cursor: the sort key of the last item of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `created_at` of the last item.
    pub created_at: i64,
    /// Id of the last item (tie-breaker).
    pub id: String,
}

impl Cursor {
    /// Encode as URL-safe text.
    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}|{}", self.created_at, self.id))
    }

    /// Decode; `None` when malformed.
    pub fn decode(text: &str) -> Option<Cursor> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (t, id) = raw.split_once('|')?;
        if id.is_empty() || id.len() > 64 {
            return None;
        }
        Some(Cursor {
            created_at: t.parse().ok()?,
            id: id.to_string(),
        })
    }
}

/// Cut a page fetched with one row more than `limit` down to `limit`, and
/// return the cursor of its last row when more rows follow.
pub fn paginate<T>(
    rows: &mut Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (i64, &str),
) -> Option<String> {
    if rows.len() as i64 <= limit {
        return None;
    }
    rows.truncate(limit as usize);
    rows.last().map(|row| {
        let (created_at, id) = key(row);
        Cursor {
            created_at,
            id: id.to_string(),
        }
        .encode()
    })
}
