//! PostgreSQL backends (feature `postgres`, on by default): [`PgEventStore`] and
//! [`PgSnapshotStore`] on a sqlx pool.
//!
//! Both stores run the same embedded migration set (tables `events` and `snapshots`, tracked in
//! [`MIGRATIONS_TABLE`]), so they can live in one database, sharing a pool
//! (`PgSnapshotStore::from_pool(events.pool().clone(), limits)`), or in two.
//!
//! Errors: a server that cannot be reached, a lost connection, a pool that timed out or a server
//! refusing connections map to [`StoreError::Unavailable`](crate::StoreError::Unavailable)
//! (retryable); everything else the server reports maps to
//! [`StoreError::Backend`](crate::StoreError::Backend).

mod append;
mod archive;
mod batcher;
mod config;
mod connection;
mod durability;
mod error;
mod event_store;
mod group_commit;
mod reminder_reads;
mod reminders;
mod rows;
mod schedules;
mod snapshot_days;
mod snapshot_store;
mod snapshot_writes;
mod start;

pub use archive::PgSnapshotArchive;
pub use batcher::BatchStats;
pub use config::{DEFAULT_CLIENT_TIMEOUT, GroupCommit, MIGRATIONS_TABLE, PgConfig, migrate};
pub use durability::Durability;
pub use event_store::{PG_MAX_EVENTS_PER_APPEND, PgEventStore};
pub use group_commit::GroupCommitStats;
pub use schedules::PgScheduleStore;
pub use snapshot_store::PgSnapshotStore;
pub use sqlx::postgres::PgPool;
