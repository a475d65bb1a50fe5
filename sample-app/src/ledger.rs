//! The glue between the domain and the framework: which aggregates the service hosts, their
//! settings, and how to open the stores and build the executor.

use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::config::{ConfigError, SnapshotConfigFile};
use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemoryScheduleStore, InMemorySnapshotStore, PgConfig,
    PgEventStore, PgScheduleStore, PgSnapshotStore, ScheduleStore, SnapshotStore, StoreError,
};
use aggregate_actors::strategy::{EveryNEvents, Never, ReplayCost};
use aggregate_actors::{
    Aggregate, AggregateSettings, BuildError, Executor, ExecutorBuilder, Retention, RuntimeConfig,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;

use crate::domain::{Account, AccountCommand, Customer, CustomerCommand, Dated, ReviewPolicy};

/// An aggregate the ledger service hosts: what the HTTP API, the demo and the inspector need
/// beyond [`Aggregate`].
pub trait LedgerAggregate: Aggregate<State: PartialEq + Serialize> + Sized {
    /// The collection name in URLs, e.g. `"accounts"`.
    const COLLECTION: &'static str;
    /// The command as callers send it (JSON), before the service stamps it with the time.
    type Request: DeserializeOwned + Send + 'static;

    /// Stamps a request with the instant it was received.
    fn command(request: Self::Request, at: DateTime<Utc>) -> Self::Command;

    /// A stable, machine-readable name of the broken rule.
    fn rule(error: &Self::Error) -> &'static str;

    /// The settings this aggregate runs with in the service.
    fn settings() -> AggregateSettings<Self>;
}

/// Commands wait at most this long for their actor (activation included) before the caller
/// gets a timeout: shorter than typical HTTP client timeouts, so clients see our 504.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn runtime() -> RuntimeConfig {
    RuntimeConfig {
        call_timeout: CALL_TIMEOUT,
        // Idle accounts leave memory after five minutes (with a snapshot, see below).
        idle_timeout: Some(Duration::from_secs(300)),
        // A command for an id that does not exist yet activates an actor even when it is
        // rejected, so a client cycling through random ids could grow memory without bound:
        // cap the live actors per type (the least recently used idle ones are evicted).
        max_live_actors: Some(100_000),
        ..RuntimeConfig::default()
    }
}

impl LedgerAggregate for Account {
    const COLLECTION: &'static str = "accounts";
    type Request = AccountCommand;

    fn command(request: AccountCommand, at: DateTime<Utc>) -> Dated<AccountCommand> {
        Dated::at(request, at)
    }

    fn rule(error: &Self::Error) -> &'static str {
        error.code()
    }

    /// Accounts grow with every transaction, so they snapshot every 100 events and when they
    /// passivate; twenty snapshots are kept so that time-travel queries into the recent past
    /// start from one instead of replaying from the first event.
    ///
    /// Durable reminders are on (a freeze schedules the account's review) with the default
    /// [`ReviewPolicy`] (30 days); [`host`] registers the configured one instead.
    fn settings() -> AggregateSettings<Self> {
        account_settings()
            .service(ReviewPolicy::default())
            .reminders()
    }
}

/// The account settings without reviews: no [`ReviewPolicy`], reminders off.
fn account_settings() -> AggregateSettings<Account> {
    AggregateSettings::new()
        .strategy(EveryNEvents::new(100))
        .snapshot_on_passivation(true)
        .retention(Retention {
            keep_newest: 20,
            max_age: None,
        })
        .runtime(runtime())
}

impl LedgerAggregate for Customer {
    const COLLECTION: &'static str = "customers";
    type Request = CustomerCommand;

    fn command(request: CustomerCommand, at: DateTime<Utc>) -> Dated<CustomerCommand> {
        Dated::at(request, at)
    }

    fn rule(error: &Self::Error) -> &'static str {
        error.code()
    }

    /// Customers have a handful of events: replaying them is cheaper than reading a snapshot.
    /// They snapshot only after an activation that turned out expensive (more than 200 events
    /// or 20 ms), and not on passivation, so typical customers cost no snapshot writes at all.
    fn settings() -> AggregateSettings<Self> {
        AggregateSettings::new()
            .strategy(ReplayCost::new(200, Duration::from_millis(20)))
            .snapshot_on_passivation(false)
            .runtime(runtime())
    }
}

/// The event store and snapshot store the service runs on.
#[derive(Clone)]
pub struct Stores {
    /// Events: the source of truth.
    pub events: Arc<dyn EventStore>,
    /// Snapshots: the state provider.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// Where they live, for humans (`in-memory` or the redacted PostgreSQL URL).
    pub description: String,
    /// The PostgreSQL pool both stores share (cluster mode keeps its membership and shard
    /// ownership in the same database); `None` in memory.
    pub pool: Option<PgPool>,
    /// Snapshot settings read from a file, applied over the types' own
    /// ([`with_snapshot_config`](Self::with_snapshot_config)).
    pub snapshot_config: Option<Arc<SnapshotConfigFile>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl Stores {
    /// Fresh in-memory stores: everything is lost when the process ends.
    pub fn in_memory() -> Self {
        Self {
            events: Arc::new(InMemoryEventStore::new()),
            snapshots: Arc::new(InMemorySnapshotStore::new()),
            description: "in-memory".to_owned(),
            pool: None,
            snapshot_config: None,
        }
    }

    /// Both stores in the PostgreSQL database at `url`, sharing one pool (the schema is
    /// created or migrated on connect).
    pub async fn postgres(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let config = PgConfig::new(url)
            .max_connections(max_connections)
            .application_name("sample-app");
        let events = PgEventStore::connect(&config).await?;
        let snapshots = PgSnapshotStore::from_pool(events.pool().clone(), config.limits)
            .await?
            .with_client_timeout(config.client_timeout());
        Ok(Self {
            pool: Some(events.pool().clone()),
            events: Arc::new(events),
            snapshots: Arc::new(snapshots),
            description: format!("PostgreSQL at {}", config.redacted_url()),
            snapshot_config: None,
        })
    }

    /// Where snapshot schedules are kept: the `snapshot_schedules` table on PostgreSQL, a
    /// fresh in-memory store otherwise.
    pub fn schedule_store(&self) -> Arc<dyn ScheduleStore> {
        match &self.pool {
            Some(pool) => Arc::new(PgScheduleStore::new(pool.clone())),
            None => Arc::new(InMemoryScheduleStore::new()),
        }
    }

    /// These stores with the snapshot settings of `file` applied to the hosted types, checked
    /// now: a type the service does not host, or a bad value, is an error here rather than a
    /// setting silently ignored later.
    pub fn with_snapshot_config(mut self, file: SnapshotConfigFile) -> Result<Self, ConfigError> {
        file.check_types(&[Account::TYPE, Customer::TYPE])?;
        file.apply::<Account>(Account::settings())?;
        file.apply::<Customer>(Customer::settings())?;
        self.snapshot_config = Some(Arc::new(file));
        Ok(self)
    }

    /// PostgreSQL when `database_url` is given, in-memory otherwise.
    pub async fn open(
        database_url: Option<&str>,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        match database_url {
            Some(url) => Self::postgres(url, max_connections).await,
            None => Ok(Self::in_memory()),
        }
    }

    /// The executor the service runs: both aggregates with their [`LedgerAggregate::settings`]
    /// (accounts reviewed after the default [`ReviewPolicy`]). Build it after installing a
    /// metrics recorder: the framework resolves its metric handles at registration.
    pub fn executor(&self) -> Result<Executor, BuildError> {
        self.executor_with(Some(ReviewPolicy::default()))
    }

    /// [`executor`](Self::executor) with frozen accounts reviewed after `reviews`, or never
    /// (`None`: no review is scheduled, reminders are off for accounts).
    pub fn executor_with(&self, reviews: Option<ReviewPolicy>) -> Result<Executor, BuildError> {
        host(
            Executor::builder(Arc::clone(&self.events), Arc::clone(&self.snapshots)),
            Reach::ThisNode,
            reviews,
            self.snapshot_config.as_deref(),
        )
        .build()
    }

    /// An executor on the same event store that never reads or writes snapshots: every
    /// activation replays the whole stream. The demo compares against it.
    pub fn full_replay_executor(&self) -> Result<Executor, BuildError> {
        fn never<A: LedgerAggregate>() -> AggregateSettings<A> {
            A::settings().strategy(Never).snapshot_on_passivation(false)
        }
        Executor::builder(
            Arc::clone(&self.events),
            Arc::new(InMemorySnapshotStore::new()),
        )
        .register::<Account>(never())
        .register::<Customer>(never())
        .build()
    }
}

/// Whether the hosted aggregates are served by this process alone or by a cluster of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// One process serves every aggregate (`register`).
    ThisNode,
    /// Each aggregate is served by the node owning its shard, and calls for it travel there
    /// from any node (`register_remote`: commands and domain errors cross the wire).
    Cluster,
}

/// Why a snapshot configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotConfigFileError {
    /// The file could not be read.
    #[error("cannot read the snapshot configuration {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid configuration for the hosted types.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: ConfigError,
    },
}

/// Reads the snapshot configuration at `path`: JSON when its name ends in `.json`, TOML
/// otherwise (see `sample-app/snapshots.toml`).
pub fn read_snapshot_config(
    path: &std::path::Path,
) -> Result<SnapshotConfigFile, SnapshotConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| SnapshotConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parsed = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        SnapshotConfigFile::from_json(&text)
    } else {
        SnapshotConfigFile::from_toml(&text)
    };
    parsed.map_err(|source| SnapshotConfigFileError::Config {
        path: path.to_owned(),
        source,
    })
}

/// Registers the hosted aggregates on `builder` with their [`LedgerAggregate::settings`]: the
/// one list of what the service hosts, for a single process and for a cluster node alike.
///
/// `reviews` is how long a frozen account waits for its automatic review (registered as the
/// account type's [`ReviewPolicy`] service, with reminders on); `None` turns reviews off, and
/// then a freeze schedules nothing and accounts need no reminder storage. `config`'s snapshot
/// settings, if any, go over the types' own.
pub fn host(
    builder: ExecutorBuilder,
    reach: Reach,
    reviews: Option<ReviewPolicy>,
    config: Option<&SnapshotConfigFile>,
) -> ExecutorBuilder {
    let accounts = match reviews {
        Some(policy) => Account::settings().service(policy),
        None => account_settings(),
    };
    let accounts = configured(config, accounts);
    let customers = configured(config, Customer::settings());
    match reach {
        Reach::ThisNode => builder
            .register::<Account>(accounts)
            .register::<Customer>(customers),
        Reach::Cluster => builder
            .register_remote::<Account>(accounts)
            .register_remote::<Customer>(customers),
    }
}

/// `settings` with `config`'s section for `A` applied. The file was checked when it was read
/// ([`Stores::with_snapshot_config`]); should applying fail anyway, the type keeps its own
/// settings and the error is logged.
fn configured<A: Aggregate>(
    config: Option<&SnapshotConfigFile>,
    settings: AggregateSettings<A>,
) -> AggregateSettings<A> {
    let Some(config) = config else {
        return settings;
    };
    match config.apply::<A>(settings.clone()) {
        Ok(configured) => configured,
        Err(error) => {
            tracing::error!(%error, aggregate = A::TYPE, "snapshot configuration not applied");
            settings
        }
    }
}

/// The hosted aggregate types, by URL collection name (or type name, for the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection {
    /// [`Account`].
    Accounts,
    /// [`Customer`].
    Customers,
}

impl Collection {
    /// Every hosted type.
    pub const ALL: [Collection; 2] = [Collection::Accounts, Collection::Customers];

    /// `"accounts"` / `"customers"`; the singular type names `"account"` / `"customer"` are
    /// accepted too.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            n if n == Account::COLLECTION || n == Account::TYPE => Some(Collection::Accounts),
            n if n == Customer::COLLECTION || n == Customer::TYPE => Some(Collection::Customers),
            _ => None,
        }
    }

    /// The URL collection name only: `"accounts"` / `"customers"`.
    pub fn parse_collection(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The URL collection name.
    pub fn name(self) -> &'static str {
        match self {
            Collection::Accounts => Account::COLLECTION,
            Collection::Customers => Customer::COLLECTION,
        }
    }

    /// The stored aggregate type name.
    pub fn aggregate_type(self) -> &'static str {
        match self {
            Collection::Accounts => Account::TYPE,
            Collection::Customers => Customer::TYPE,
        }
    }
}
