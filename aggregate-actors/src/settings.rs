//! Per-aggregate-type settings: snapshot strategy, retention, compression, retries, runtime.

use std::sync::Arc;
use std::time::Duration;

use actor_runtime::RuntimeConfig;
use event_stores::SnapshotArchive;

use crate::aggregate::Aggregate;
use crate::codec::{CompressionConfig, SnapshotCompression};
use crate::context::{Clock, Services, SystemClock};
use crate::dedup::DedupWindow;
use crate::reminder::ReminderCodec;
use crate::resident::ResidentConfig;
use crate::strategy::{EveryNEvents, SnapshotStrategy};

/// How many snapshots to keep per aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep this many newest snapshots (at least 1), plus the full snapshots that the kept
    /// deltas were written against (see [`AggregateSettings::incremental`]).
    pub keep_newest: usize,
    /// Also delete snapshots older than this, except the newest one.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_newest: 3,
            max_age: None,
        }
    }
}

/// Settings of one registered aggregate type. `AggregateSettings::default()` snapshots every
/// 100 events and on passivation, keeps 3 snapshots, compresses states of 4 KiB and more with
/// zstd level 3 (each snapshot in full),
/// retries a conflicting command 3 times and remembers the last 128 command ids (up to an hour)
/// per aggregate.
pub struct AggregateSettings<A: Aggregate> {
    /// When to take snapshots.
    pub strategy: Arc<dyn SnapshotStrategy<A>>,
    /// Take a snapshot when the actor passivates (idle, evicted, shutdown) if it has events
    /// since the last one.
    pub snapshot_on_passivation: bool,
    /// Snapshot retention.
    pub retention: Retention,
    /// Snapshot compression: algorithm, threshold and incremental snapshots.
    pub compression: CompressionConfig,
    /// How often a command is re-decided on fresh state after a version conflict.
    pub max_conflict_retries: u32,
    /// Events per page when replaying.
    pub replay_page_size: usize,
    /// The virtual-actor runtime settings for this type (idle timeout, LRU cap, mailbox, …).
    /// Its `call_timeout` is also each command's default deadline.
    pub runtime: RuntimeConfig,
    /// How many recent command ids each aggregate remembers for deduplication.
    pub dedup: DedupWindow,
    /// The services `decide` can look up ([`Context::service`](crate::Context::service)).
    pub services: Services,
    /// The clock `decide` reads ([`Context::now`](crate::Context::now)); the system clock by
    /// default.
    pub clock: Arc<dyn Clock>,
    /// Set when the type uses durable reminders (see [`reminders`](Self::reminders)).
    pub reminders: Option<ReminderCodec<A>>,
    /// Where retention moves old snapshots instead of deleting them (see
    /// [`archive`](Self::archive)).
    pub archive: Option<Arc<dyn SnapshotArchive>>,
    /// The resident tier: how many bytes of stopped aggregates stay in memory, so their next
    /// activation reads no store (see [`resident`](Self::resident)).
    pub resident: ResidentConfig,
}

impl<A: Aggregate> Default for AggregateSettings<A> {
    fn default() -> Self {
        Self {
            strategy: Arc::new(EveryNEvents::new(100)),
            snapshot_on_passivation: true,
            retention: Retention::default(),
            compression: CompressionConfig::default(),
            max_conflict_retries: 3,
            replay_page_size: 1_000,
            runtime: RuntimeConfig::default(),
            dedup: DedupWindow::default(),
            services: Services::new(),
            clock: Arc::new(SystemClock),
            reminders: None,
            archive: None,
            resident: ResidentConfig::default(),
        }
    }
}

impl<A: Aggregate> Clone for AggregateSettings<A> {
    fn clone(&self) -> Self {
        Self {
            strategy: Arc::clone(&self.strategy),
            snapshot_on_passivation: self.snapshot_on_passivation,
            retention: self.retention,
            compression: self.compression,
            max_conflict_retries: self.max_conflict_retries,
            replay_page_size: self.replay_page_size,
            runtime: self.runtime.clone(),
            dedup: self.dedup,
            services: self.services.clone(),
            clock: Arc::clone(&self.clock),
            reminders: self.reminders,
            archive: self.archive.clone(),
            resident: self.resident,
        }
    }
}

impl<A: Aggregate> AggregateSettings<A> {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the snapshot strategy.
    pub fn strategy(mut self, strategy: impl SnapshotStrategy<A>) -> Self {
        self.strategy = Arc::new(strategy);
        self
    }

    /// Turns snapshots on passivation on or off.
    pub fn snapshot_on_passivation(mut self, on: bool) -> Self {
        self.snapshot_on_passivation = on;
        self
    }

    /// Moves the snapshots retention removes (beyond `keep_newest`, older than `max_age`) to
    /// `archive` instead of deleting them: archived snapshots can be listed
    /// ([`Executor::archived_snapshots`](crate::Executor::archived_snapshots)), restored
    /// ([`Executor::restore_archived`](crate::Executor::restore_archived)) and read by time
    /// travel on request ([`Executor::reconstruct_with_archive`](crate::Executor::reconstruct_with_archive)).
    pub fn archive(mut self, archive: Arc<dyn SnapshotArchive>) -> Self {
        self.archive = Some(archive);
        self
    }

    /// Sets retention.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the compression algorithm of snapshots (zstd level 3 by default; lz4; none). Each
    /// snapshot records its own, so changing it later leaves older snapshots readable. A zstd
    /// level out of range fails [`ExecutorBuilder::build`](crate::ExecutorBuilder::build) with
    /// [`BuildError::InvalidCompression`](crate::BuildError::InvalidCompression).
    pub fn compression(mut self, algorithm: SnapshotCompression) -> Self {
        self.compression.algorithm = algorithm;
        self
    }

    /// Sets the whole compression setting: algorithm, size threshold and incremental snapshots.
    pub fn compression_config(mut self, compression: CompressionConfig) -> Self {
        self.compression = compression;
        self
    }

    /// Incremental snapshots: up to `max_deltas` snapshots after a full one are written as
    /// deltas against it (zstd with the full snapshot's bytes as dictionary; a small change to
    /// a large state stores a small fraction of it), then the next one is full again. 0 (the
    /// default) writes every snapshot in full. States below the compression threshold are
    /// always written in full. A delta whose base is missing or damaged is skipped on
    /// activation for an older snapshot, as any invalid snapshot is; retention keeps the base
    /// of every delta it keeps.
    pub fn incremental(mut self, max_deltas: u32) -> Self {
        self.compression.max_deltas = max_deltas;
        self
    }

    /// Sets the number of conflict retries.
    pub fn max_conflict_retries(mut self, retries: u32) -> Self {
        self.max_conflict_retries = retries;
        self
    }

    /// Sets the replay page size (at least 1).
    pub fn replay_page_size(mut self, size: usize) -> Self {
        self.replay_page_size = size.max(1);
        self
    }

    /// Sets the deduplication window.
    pub fn dedup(mut self, window: DedupWindow) -> Self {
        self.dedup = window;
        self
    }

    /// Sets the resident tier's budget. An actor that stops for idleness or eviction leaves
    /// its state, version and snapshot bookkeeping behind in a compact entry (its state as it
    /// was, or encoded as a snapshot encodes it when larger than
    /// [`ResidentConfig::decoded_max_bytes`]; its recent command ids as they are; no task, no
    /// channel), and the next message for its id starts an actor
    /// from that entry with no store read. Over the budget the least recently used entries go
    /// cold, snapshotted first when ahead of their last snapshot, as are all entries on
    /// shutdown, [`Executor::passivate_all`](crate::Executor::passivate_all) and when ids move
    /// to another node. [`ResidentConfig::off`] keeps nothing.
    ///
    /// An entry stands in for a live actor, so the usual rule holds: one process writes an
    /// aggregate at a time (a cluster moves ids between nodes with passivation, which drops
    /// their entries).
    pub fn resident(mut self, resident: ResidentConfig) -> Self {
        self.resident = resident;
        self
    }

    /// Sets the runtime settings.
    pub fn runtime(mut self, runtime: RuntimeConfig) -> Self {
        self.runtime = runtime;
        self
    }

    /// Registers a service that `decide` can look up by its type with
    /// [`Context::service`](crate::Context::service): a price list, a currency table, an id
    /// generator. `decide` may run more than once for one command, so a service should be
    /// read-only or idempotent, and quick (it runs on the aggregate's actor).
    pub fn service<T: Send + Sync + 'static>(mut self, service: T) -> Self {
        self.services.insert(service);
        self
    }

    /// Turns durable reminders on for this type (see [`crate::reminder`]): `decide` may
    /// schedule them, the executor can fire them. Their commands are stored as MessagePack.
    pub fn reminders(mut self) -> Self
    where
        A::Command: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.reminders = Some(ReminderCodec::msgpack());
        self
    }

    /// Sets the clock `decide` reads ([`Context::now`](crate::Context::now)).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}
