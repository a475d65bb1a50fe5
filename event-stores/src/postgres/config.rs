//! Connection settings of the PostgreSQL backends, and the pool and schema set-up they share.

use std::fmt;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{StoreError, StoreResult};
use crate::limits::StoreLimits;

use super::error::{map_migrate, map_sqlx};

/// Table that records which of this crate's migrations ran. Its own name (not sqlx's default
/// `_sqlx_migrations`), so an application running its own sqlx migrations on the same database
/// does not collide with ours.
pub const MIGRATIONS_TABLE: &str = "_event_stores_migrations";

/// How to reach PostgreSQL and what the stores accept.
///
/// ```
/// use std::time::Duration;
/// use event_stores::PgConfig;
///
/// let config = PgConfig::new("postgres://app@localhost/app")
///     .max_connections(32)
///     .acquire_timeout(Duration::from_secs(2));
/// assert_eq!(config.max_connections, 32);
/// assert_eq!(config.min_connections, 0);
/// ```
#[derive(Clone)]
pub struct PgConfig {
    /// Connection URL, `postgres://user:password@host:port/database?options`.
    pub url: String,
    /// Most connections the pool opens (default 16).
    pub max_connections: u32,
    /// Connections the pool keeps open even when idle (default 0).
    pub min_connections: u32,
    /// Longest wait for a pooled connection before an operation fails with
    /// [`StoreError::Unavailable`] (default 5 s). A refused connection is retried until then.
    pub acquire_timeout: Duration,
    /// Longest time `connect` may take as a whole: the first connection plus the migrations
    /// (default 10 s).
    pub connect_timeout: Duration,
    /// Idle connections above `min_connections` are closed after this long (default 10 min).
    pub idle_timeout: Option<Duration>,
    /// Ping each connection before handing it out of the pool. Off by default: the ping is a
    /// round trip on every store call (it halves durable command throughput), and a connection
    /// that died anyway fails its statement with the retryable [`StoreError::Unavailable`] and
    /// is dropped from the pool, so the next call gets a fresh one.
    pub ping_before_acquire: bool,
    /// Whether `connect` runs the embedded migrations (default true). Turn off when the schema is
    /// managed elsewhere and the application role may not run DDL.
    pub run_migrations: bool,
    /// `application_name` reported to the server, visible in `pg_stat_activity`.
    pub application_name: String,
    /// What the stores accept (payload sizes, events per append, snapshot size).
    pub limits: StoreLimits,
}

impl PgConfig {
    /// Settings for `url` with the defaults documented on each field.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(600)),
            ping_before_acquire: false,
            run_migrations: true,
            application_name: "event-stores".to_owned(),
            limits: StoreLimits::default(),
        }
    }

    /// Sets [`max_connections`](Self::max_connections).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`min_connections`](Self::min_connections).
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// Sets [`acquire_timeout`](Self::acquire_timeout).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`ping_before_acquire`](Self::ping_before_acquire).
    pub fn ping_before_acquire(mut self, ping: bool) -> Self {
        self.ping_before_acquire = ping;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`run_migrations`](Self::run_migrations).
    pub fn run_migrations(mut self, run: bool) -> Self {
        self.run_migrations = run;
        self
    }

    /// Sets [`application_name`](Self::application_name).
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// Sets [`limits`](Self::limits).
    pub fn limits(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Opens a pool as configured (at least one connection, so a wrong URL or an unreachable
    /// server fails here) and, if [`run_migrations`](Self::run_migrations), migrates the schema.
    /// Bounded by [`connect_timeout`](Self::connect_timeout).
    pub async fn connect_pool(&self) -> StoreResult<PgPool> {
        let options: PgConnectOptions = self
            .url
            .parse::<PgConnectOptions>()
            .map_err(|e| map_sqlx("parsing the PostgreSQL URL", e))?
            .application_name(&self.application_name)
            // Statements are logged by our own tracing spans; sqlx's per-statement INFO logs
            // would drown them.
            .disable_statement_logging();
        let pool_options = PgPoolOptions::new()
            .max_connections(self.max_connections.max(1))
            .min_connections(self.min_connections.min(self.max_connections.max(1)))
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .test_before_acquire(self.ping_before_acquire);
        let connect = async {
            let pool = pool_options
                .connect_with(options)
                .await
                .map_err(|e| map_sqlx(&format!("connecting to {}", self.redacted_url()), e))?;
            if self.run_migrations {
                migrate(&pool).await?;
            }
            Ok(pool)
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable {
                message: format!(
                    "connecting to {} took longer than {:?}",
                    self.redacted_url(),
                    self.connect_timeout
                ),
                source: None,
            }),
        }
    }

    /// The URL with its password replaced by `***`, for messages and logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

impl fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("run_migrations", &self.run_migrations)
            .field("application_name", &self.application_name)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Creates or updates the `events` and `snapshots` tables on `pool`'s database. Idempotent, and
/// safe to run from several processes at once: sqlx holds an advisory lock while migrating.
pub async fn migrate(pool: &PgPool) -> StoreResult<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator.run(pool).await.map_err(map_migrate)
}

/// Replaces the password of a `scheme://user:password@host/...` URL with `***`.
fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact("not a url"), "not a url");
        let config = PgConfig::new("postgres://u:pw@h/d");
        assert!(!format!("{config:?}").contains("pw"));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = PgConfig::new("postgres://h/d");
        assert_eq!(config.max_connections, 16);
        assert_eq!(config.acquire_timeout, Duration::from_secs(5));
        assert!(config.run_migrations);
        assert_eq!(config.limits, StoreLimits::default());
    }
}
