//! Storage contracts for event-sourced aggregates, and their backends.
//!
//! This crate knows streams, events and snapshots as bytes; it knows no aggregate types and no
//! actors. Two traits make the contract:
//!
//! - [`EventStore`]: atomic, optimistic appends to a stream (`expected_version` must equal the
//!   stream's current version, or the append fails with [`StoreError::VersionConflict`]), paged
//!   reads of one stream, and reads across all streams in position order; and durable reminders
//!   ([`StoredReminder`]) changed in the same transaction as a command's events
//!   ([`EventStore::append_with_reminders`]) and found by due time
//!   ([`EventStore::due_reminders`]).
//! - [`SnapshotStore`] (the "state provider"): snapshot records kept apart from the events,
//!   looked up by version or time, with retention and statistics.
//!
//! Backends: [`InMemoryEventStore`] / [`InMemorySnapshotStore`] (the embedded default) and,
//! with the `postgres` feature (on by default), `PgEventStore` / `PgSnapshotStore` on sqlx.
//! Every backend passes the same contract suite (`contract`, feature `test-support`).
//!
//! ```
//! use event_stores::{EventStore, InMemoryEventStore, NewEvent, ReadQuery, StoreError, StreamId};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryEventStore::new();
//! let stream = StreamId::new("account", "acc-1")?;
//!
//! let receipt = store
//!     .append(&stream, 0, vec![NewEvent::new("Opened", 1, b"{}".to_vec())])
//!     .await?;
//! assert_eq!(receipt.last_version, 1);
//!
//! // A writer that still believes the stream is new loses, and learns the actual version.
//! let err = store
//!     .append(&stream, 0, vec![NewEvent::new("Opened", 1, b"{}".to_vec())])
//!     .await
//!     .unwrap_err();
//! assert!(matches!(err, StoreError::VersionConflict { actual: 1, .. }));
//!
//! let events = store.read_stream(&stream, ReadQuery::all()).await?;
//! assert_eq!(events.len(), 1);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Features
//!
//! - `postgres` (default): the PostgreSQL backends (`postgres`, `PgEventStore`,
//!   `PgSnapshotStore`, `PgConfig`, …), on sqlx. Without it (`default-features = false`) the
//!   crate has the in-memory stores only and does not compile sqlx.
//! - `test-support`: the backend contract suite (`contract`, `store_contract!`) and the test
//!   helpers (`testing`); with `postgres` as well, `testing` also makes throw-away PostgreSQL
//!   databases.

pub mod archive;
pub mod backup;
#[cfg(feature = "test-support")]
pub mod contract;
mod error;
mod event;
mod event_store;
mod fence;
pub mod file_archive;
mod invalid_input;
mod limits;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod reminder;
mod schedule;
mod snapshot;
mod snapshot_days;
mod snapshot_store;
mod stream;
#[cfg(feature = "test-support")]
pub mod testing;
mod trace;

pub use archive::{ArchivedSnapshot, SnapshotArchive};
pub use error::{StoreError, StoreResult};
pub use event::{EventMetadata, NewEvent, RecordedEvent, command_event_id};
pub use event_store::{
    AppendReceipt, CrashSafety, DEFAULT_PAGE_SIZE, EventStore, ReadQuery, StreamPages, StreamStart,
};
pub use fence::Fence;
pub use file_archive::FileSnapshotArchive;
pub use invalid_input::InvalidInput;
pub use limits::{MAX_EVENT_TYPE_LEN, StoreLimits};
pub use memory::{
    InMemoryEventStore, InMemoryScheduleStore, InMemorySnapshotArchive, InMemorySnapshotStore,
};
#[cfg(feature = "postgres")]
pub use postgres::{
    BatchStats, GroupCommit, GroupCommitStats, PgConfig, PgEventStore, PgScheduleStore,
    PgSnapshotArchive, PgSnapshotStore,
};
pub use reminder::{
    DueReminders, MAX_REMINDER_NAME_LEN, REMINDER_YEARS, ReminderChange, ReminderState,
    StoredReminder,
};
pub use schedule::{MAX_SCHEDULE_NAME_LEN, ScheduleStore, StoredSchedule};
pub use snapshot::{SnapshotBase, SnapshotRecord, SnapshotStats};
pub use snapshot_days::{MAX_DAY_FIGURE, SnapshotDay};
pub use snapshot_store::SnapshotStore;
pub use stream::{MAX_ID_LEN, StreamId};
pub use trace::{InvalidTraceParent, TraceParent};
