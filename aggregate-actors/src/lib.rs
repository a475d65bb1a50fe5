//! Event-sourced aggregates as virtual actors, with actor-held snapshots.
//!
//! You write an [`Aggregate`]: its commands, events, state, a `decide` function (state +
//! command → events, or a domain error) and an `apply` function (state + event → state).
//! You register it with an [`Executor`] and send commands. Behind the executor, each aggregate
//! id is one actor (on [`actor_runtime`], itself on ractor), activated on its first command:
//!
//! 1. **Activation** loads the newest snapshot that passes every check (schema version,
//!    checksum, decoding, `last_event_id` equal to the stored event at its version), falling
//!    back to older ones and finally to a full replay, then replays only the events after it,
//!    page by page.
//! 2. **Commands** run one at a time: decide → append with the expected version → apply →
//!    reply. A rejected, conflicting or crashing command stores nothing. Conflicts with another
//!    writer are retried on fresh state.
//! 3. **Snapshots** are decided by a [`SnapshotStrategy`](strategy::SnapshotStrategy) after
//!    each command (or on passivation, or on demand) and written in the background; a failed
//!    write never fails a command. States are MessagePack, compressed above a threshold (zstd
//!    by default; lz4 through the pure-Rust `lz4_flex` for speed; or none, see
//!    [`SnapshotCompression`]), optionally as deltas against an earlier full snapshot
//!    ([`AggregateSettings::incremental`]), checksummed with xxh3.
//! 4. **Exactly once**: every command has a [`CommandId`] (yours, through [`CommandOptions`],
//!    or a generated one). Its events carry it and their ids derive from it; each aggregate
//!    remembers its recent command ids ([`DedupWindow`], carried in snapshots), so a command id
//!    seen before is answered with the original outcome ([`Committed::duplicate`]) instead of
//!    being decided again, and the store's unique event id refuses a second copy beyond the
//!    window. A failure is either *not stored* ([`CommandError::Rejected`],
//!    [`CommandError::NotStored`]) or [`CommandError::Indeterminate`]: the append may have
//!    committed, and retrying with the same command id is always safe. A command carries its
//!    deadline and is dropped unstarted once its caller has gone.
//! 5. **Reminders**: `decide` can schedule a command for later through its [`Context`],
//!    stored with the command's events; a [`scheduler::Scheduler`] fires each exactly once
//!    (see [`reminder`]).
//!
//! ```
//! use aggregate_actors::{
//!     Aggregate, AggregateSettings, CommandError, CommandId, CommandOptions, Context, Executor,
//!     strategy::EveryNEvents,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! struct Account;
//!
//! enum Command { Deposit(u64), Withdraw(u64) }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! enum Event { Deposited { amount: u64 }, Withdrew { amount: u64 } }
//!
//! #[derive(Debug, Clone, Default, Serialize, Deserialize)]
//! struct Balance { cents: u64 }
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("insufficient funds")]
//! struct InsufficientFunds;
//!
//! impl Aggregate for Account {
//!     const TYPE: &'static str = "account";
//!     type Command = Command;
//!     type Event = Event;
//!     type State = Balance;
//!     type Error = InsufficientFunds;
//!
//!     // `ctx` has the id, the command id, a clock and services: see `Context`.
//!     fn decide(
//!         state: &Balance,
//!         command: &Command,
//!         _ctx: &mut Context<'_, Self>,
//!     ) -> Result<Vec<Event>, InsufficientFunds> {
//!         match *command {
//!             Command::Deposit(amount) => Ok(vec![Event::Deposited { amount }]),
//!             Command::Withdraw(amount) if amount > state.cents => Err(InsufficientFunds),
//!             Command::Withdraw(amount) => Ok(vec![Event::Withdrew { amount }]),
//!         }
//!     }
//!
//!     fn apply(state: &mut Balance, event: &Event) {
//!         match event {
//!             Event::Deposited { amount } => state.cents += amount,
//!             Event::Withdrew { amount } => state.cents -= amount,
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let executor = Executor::in_memory()
//!     .register::<Account>(AggregateSettings::new().strategy(EveryNEvents::new(100)))
//!     .build()?;
//!
//! executor.execute::<Account>("alice", Command::Deposit(500)).await?;
//! let done = executor.execute::<Account>("alice", Command::Withdraw(200)).await?;
//! assert_eq!(done.version, 2);
//!
//! let refused = executor.execute::<Account>("alice", Command::Withdraw(1_000)).await;
//! assert!(matches!(refused, Err(CommandError::Rejected(InsufficientFunds))));
//!
//! // A retried command (same id) is applied once: the repeat gets the original outcome.
//! let pay = CommandOptions::new().command_id(CommandId::from_key("invoice-7"));
//! let first = executor.execute_with::<Account>("alice", Command::Deposit(50), pay.clone()).await?;
//! let again = executor.execute_with::<Account>("alice", Command::Deposit(50), pay).await?;
//! assert!(again.duplicate && again.version == first.version);
//!
//! assert_eq!(executor.state::<Account>("alice").await?.state.cents, 350);
//! executor.shutdown().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Snapshot semantics worth knowing
//!
//! - Besides the strategy, an actor that passivates (idle, evicted, shut down) with events
//!   newer than its last snapshot takes one
//!   ([`AggregateSettings::snapshot_on_passivation`] turns that off).
//! - Snapshots are written in the background, off the command path: another executor on the
//!   same stores sees a snapshot only once it is written ([`Executor::flush_snapshots`] waits
//!   for that).
//! - [`Retention`] keeps the newest 3 per aggregate by default, so
//!   [time travel](Executor::reconstruct) to a version before the oldest kept one replays from
//!   the first event. With incremental snapshots, retention also keeps the full snapshot that
//!   each kept delta was written against, and a delta whose base is missing or damaged is
//!   skipped like any invalid snapshot.
//!
//! # Errors
//!
//! A command fails in one of three ways, by what is known about the store afterwards:
//! [`CommandError::Rejected`] and [`CommandError::NotStored`] stored nothing,
//! [`CommandError::Indeterminate`] may have stored (retry with the same command id). To act on
//! a failure without matching nested enums, match [`CommandError::kind`] (or
//! [`ExecutorError::kind`], for `state` and `reconstruct`): an [`ErrorKind`] such as
//! `InvalidInput`, `Rejected`, `Conflict`, `Unavailable` or `Indeterminate`. The error enums are
//! `#[non_exhaustive]`: new failure modes can be added without breaking your matches.
//!
//! # Features
//!
//! - `postgres` (default): the PostgreSQL stores of [`event_stores`] (`PgEventStore`,
//!   `PgSnapshotStore`, `PgConfig`, …), on sqlx; it turns on `event-stores/postgres`. Without
//!   it, with `aggregate-actors = { …, default-features = false }`, you get the in-memory
//!   stores ([`Executor::in_memory`], `InMemoryEventStore`, `InMemorySnapshotStore`) and any
//!   store of your own, and sqlx is not compiled. Nothing else in this crate changes.

mod actor;
mod aggregate;
mod archive_view;
pub mod batch;
mod builder;
pub mod codec;
mod command;
pub mod config;
pub mod context;
mod dedup;
mod error;
mod error_kind;
mod executor;
mod hydrate;
mod inbound;
mod metrics;
mod outcome;
pub mod reminder;
mod reminder_calls;
mod remote;
mod resident;
mod routing;
pub mod schedule;
pub mod scheduler;
mod settings;
mod shared;
mod snapshot_admin;
mod snapshot_writer;
pub mod strategy;
pub mod testkit;
mod time_travel;
pub mod timer;
pub mod upcast;

pub use actor_runtime;
pub use actor_runtime::{PassivationReason, Placement, RuntimeConfig, RuntimeStats};
pub use aggregate::Aggregate;
pub use builder::{BuildError, ExecutorBuilder};
pub use codec::SnapshotCompression;
pub use command::{CommandId, CommandOptions};
pub use context::{Clock, Context, ManualClock, Services, SystemClock};
pub use dedup::DedupWindow;
pub use error::{ActivationError, CommandError, Delivery, ExecutorError, Indeterminate};
pub use error_kind::ErrorKind;
pub use event_stores;
pub use executor::Executor;
pub use metrics::{ActivationReport, AggregateStats, DAYS_KEPT, SnapshotDay, SnapshotOrigin};
pub use outcome::{At, Committed, ExecutorStats, Reconstruction, StateView, TypeStats};
pub use resident::{ResidentConfig, ResidentStats};
pub use settings::{AggregateSettings, Retention};
pub use shared::PlacementFactory;
pub use snapshot_admin::SnapshotInfo;
pub use upcast::{UpcastError, Upcaster};
