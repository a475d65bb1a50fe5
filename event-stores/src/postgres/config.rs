//! Connection settings of the PostgreSQL backends, and the pool and schema set-up they share.

use std::fmt;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{StoreError, StoreResult};
use crate::limits::StoreLimits;

use super::durability::Durability;
use super::error::{map_migrate, map_sqlx};

/// How long an append waits for the server's answer when the store was not made by
/// [`PgConfig`] (which derives it from `statement_timeout`): 12 s.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(12);

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
    /// Server-side limit on one statement (`statement_timeout`, default 10 s): a statement
    /// stuck on the server fails (and stores nothing) instead of holding an actor. `None`
    /// keeps the server's setting.
    pub statement_timeout: Option<Duration>,
    /// Server-side limit on waiting for a lock (`lock_timeout`, default 5 s). `None` keeps the
    /// server's setting.
    pub lock_timeout: Option<Duration>,
    /// TCP keepalive of the server's end of each connection (`tcp_keepalives_idle` and
    /// `_interval` of this duration, `_count` 3, and `tcp_user_timeout`; default 5 s), so the
    /// server notices a vanished client and ends its transaction instead of holding locks.
    /// sqlx exposes no socket options for the client's end; [`client_timeout`](Self::client_timeout)
    /// bounds that side. `None` keeps the server's settings.
    pub tcp_keepalive: Option<Duration>,
    /// How long the client waits for the answer to an append it has sent before it closes the
    /// connection and reports [`StoreError::Indeterminate`] (a stalled server or a
    /// black-holed network answers nothing, and no server-side timeout fires). Reads of the
    /// event store (activation, stream, command, `read_all` and reminder reads) and of the
    /// snapshot store (loads, lists, stats) wait as long, then close their connection and
    /// report [`StoreError::Unavailable`]: they changed nothing. Default: `statement_timeout`
    /// + 2 s, or 12 s without one.
    pub client_timeout: Option<Duration>,
    /// Refuse to connect (with [`StoreError::NotDurable`]) when the server would lose
    /// acknowledged commits in a crash: `fsync` off, `synchronous_commit` off or
    /// `full_page_writes` off. Default false: such a server is accepted with a warning, and
    /// [`PgEventStore::server_durability`](super::PgEventStore::server_durability) says so.
    pub require_durability: bool,
    /// How concurrent appends to different streams share one statement and one commit
    /// (default: on, see [`GroupCommit`]).
    pub group_commit: GroupCommit,
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
            statement_timeout: Some(Duration::from_secs(10)),
            lock_timeout: Some(Duration::from_secs(5)),
            tcp_keepalive: Some(Duration::from_secs(5)),
            client_timeout: None,
            require_durability: false,
            group_commit: GroupCommit::default(),
        }
    }

    /// Sets [`statement_timeout`](Self::statement_timeout).
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets [`lock_timeout`](Self::lock_timeout).
    pub fn lock_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets [`tcp_keepalive`](Self::tcp_keepalive).
    pub fn tcp_keepalive(mut self, keepalive: Option<Duration>) -> Self {
        self.tcp_keepalive = keepalive;
        self
    }

    /// Sets [`client_timeout`](Self::client_timeout).
    pub fn with_client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = Some(timeout);
        self
    }

    /// Turns group commit on or off (the other [`GroupCommit`] settings stay).
    pub fn group_commit(mut self, enabled: bool) -> Self {
        self.group_commit.enabled = enabled;
        self
    }

    /// Sets every [`group_commit`](Self::group_commit) setting.
    pub fn group_commit_settings(mut self, settings: GroupCommit) -> Self {
        self.group_commit = settings;
        self
    }

    /// Sets [`require_durability`](Self::require_durability).
    pub fn require_durability(mut self, require: bool) -> Self {
        self.require_durability = require;
        self
    }

    /// The client-side bound on an append's answer in effect (see
    /// [`client_timeout`](Self::client_timeout)).
    pub fn client_timeout(&self) -> Duration {
        self.client_timeout.unwrap_or(match self.statement_timeout {
            Some(statement) => statement + Duration::from_secs(2),
            None => DEFAULT_CLIENT_TIMEOUT,
        })
    }

    /// Session settings sent when each connection starts.
    fn session_options(&self) -> Vec<(&'static str, String)> {
        let millis = |d: Duration| d.as_millis().max(1).to_string();
        let mut options = Vec::new();
        if let Some(timeout) = self.statement_timeout {
            options.push(("statement_timeout", millis(timeout)));
        }
        if let Some(timeout) = self.lock_timeout {
            options.push(("lock_timeout", millis(timeout)));
        }
        if let Some(keepalive) = self.tcp_keepalive {
            let secs = keepalive.as_secs().max(1).to_string();
            options.push(("tcp_keepalives_idle", secs.clone()));
            options.push(("tcp_keepalives_interval", secs));
            options.push(("tcp_keepalives_count", "3".to_owned()));
            options.push(("tcp_user_timeout", millis(keepalive * 4)));
        }
        options
    }

    /// Reads the server's durability settings on `pool`, logs a warning when acknowledged
    /// commits would not survive a server crash, and refuses such a server when
    /// [`require_durability`](Self::require_durability) is set.
    pub async fn check_durability(&self, pool: &PgPool) -> StoreResult<Durability> {
        let durability = Durability::read(pool).await?;
        if !durability.survives_server_crash() {
            if self.require_durability {
                return Err(StoreError::NotDurable(durability.to_string()));
            }
            tracing::warn!(
                url = %self.redacted_url(),
                %durability,
                "PostgreSQL would lose acknowledged commits in a server crash"
            );
        }
        Ok(durability)
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
            .options(self.session_options())
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
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("client_timeout", &self.client_timeout())
            .field("require_durability", &self.require_durability)
            .field("group_commit", &self.group_commit)
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

/// How concurrent appends of one [`PgEventStore`](super::PgEventStore) share statements.
///
/// ```
/// use event_stores::{GroupCommit, PgConfig};
///
/// // On by default; turn it off to send every append as its own statement.
/// let config = PgConfig::new("postgres://app@localhost/app").group_commit(false);
/// assert!(!config.group_commit.enabled);
/// assert_eq!(GroupCommit::default().max_appends, 128);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Whether appends are batched at all (default true). Activation reads
    /// ([`EventStore::read_start`](crate::EventStore::read_start)) are batched the same way
    /// while this is on.
    pub enabled: bool,
    /// Most appends in one batch (default 128).
    pub max_appends: usize,
    /// Most events in one batch (default 8 192; capped at
    /// [`PG_MAX_EVENTS_PER_APPEND`](super::PG_MAX_EVENTS_PER_APPEND), since positions number the events of one transaction).
    /// A single append larger than this goes alone.
    pub max_events: usize,
    /// Most bytes of events in one batch (default 64 MiB): their payloads and types plus a
    /// fixed amount per event for its other columns. A batch is one message to the server,
    /// which refuses any over 1 GiB, failing every append in it; keep this well below that.
    /// A single append larger than this goes alone.
    pub max_batch_bytes: usize,
    /// Most batches in flight at once, each on a connection of its own, kept outside the pool
    /// (so the store may hold this many connections beyond the pool's maximum), since sqlx
    /// pings every connection that returns to its pool. While they are all busy, new appends
    /// gather into the next batch.
    ///
    /// `None` (the default) picks by what a commit waits for on the server, as
    /// [`PgEventStore::connect`](super::PgEventStore::connect) reads it: **1** when commits wait
    /// for their WAL flush (`fsync` and `synchronous_commit` on), since the flush dominates and
    /// one committer, like a database's WAL writer, puts the most appends in each flush; **2**
    /// when they do not, since the statement's work dominates then and a second batch overlaps
    /// one batch's server work with the other's client work. Measured on two cores at 16
    /// appenders (`make bench`, scenario 3): with flush 1 in flight did 29.8 k/s against 25.4 k/s
    /// with 2; without flush 2 did 41.6 k/s against 36.1 k/s with 1. A store made from a pool
    /// reads no settings and uses 1.
    pub max_batches_in_flight: Option<usize>,
    /// Under load only, how long a runner may hold the next batch for the appenders of its last
    /// batch to come back (default 200 µs): a batch of N waits until N appends are queued again
    /// or this has passed. After a batch of one it never waits, so a lone caller's latency is
    /// unchanged. Zero sends whatever is queued at once.
    pub linger: Duration,
}

impl GroupCommit {
    /// How many batches may be in flight against a server with `durability` (see
    /// [`max_batches_in_flight`](Self::max_batches_in_flight)).
    pub fn batches_in_flight(&self, durability: Option<&Durability>) -> usize {
        match (self.max_batches_in_flight, durability) {
            (Some(n), _) => n.max(1),
            (None, Some(durability)) if !durability.commits_wait_for_flush() => 2,
            (None, _) => 1,
        }
    }
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            enabled: true,
            max_appends: 128,
            max_events: 8_192,
            max_batch_bytes: 64 << 20,
            max_batches_in_flight: None,
            linger: Duration::from_micros(200),
        }
    }
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
    fn batches_in_flight_follow_what_a_commit_waits_for_unless_set() {
        let server = |fsync: bool, synchronous_commit: &str| Durability {
            fsync,
            synchronous_commit: synchronous_commit.into(),
            full_page_writes: true,
        };
        let auto = GroupCommit::default();
        assert_eq!(auto.max_batches_in_flight, None);
        assert_eq!(auto.batches_in_flight(Some(&server(true, "on"))), 1);
        assert_eq!(auto.batches_in_flight(Some(&server(true, "local"))), 1);
        assert_eq!(auto.batches_in_flight(Some(&server(true, "off"))), 2);
        assert_eq!(auto.batches_in_flight(Some(&server(false, "on"))), 2);
        assert_eq!(auto.batches_in_flight(None), 1, "settings unknown: one");
        let set = |n| GroupCommit {
            max_batches_in_flight: Some(n),
            ..GroupCommit::default()
        };
        assert_eq!(set(3).batches_in_flight(Some(&server(true, "on"))), 3);
        assert_eq!(set(0).batches_in_flight(None), 1);
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = PgConfig::new("postgres://h/d");
        assert_eq!(config.group_commit.max_batch_bytes, 64 * 1024 * 1024);
        assert_eq!(config.max_connections, 16);
        assert_eq!(config.acquire_timeout, Duration::from_secs(5));
        assert!(config.run_migrations);
        assert_eq!(config.limits, StoreLimits::default());
    }
}
