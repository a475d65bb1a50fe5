//! Stores for tests that change one or two calls of a real store and pass every other call
//! through unchanged: a fault, a delay, a counter, a filter.
//!
//! A test writes the calls it changes as a [`StoreHooks`] (or [`SnapshotHooks`]) and wraps the
//! store under test in a [`Hooked`] (or [`HookedSnapshots`]). Every hook it leaves out calls
//! the same method of the inner store, the defaulted ones of the store traits included
//! (`read_start`, `append_with_reminders`, `count_after`, `save_and_read_back`, `location`, …),
//! so the wrapped store answers exactly as the inner one does, for PostgreSQL as for memory.
//!
//! A hook that changes what a call does must also change the calls that do the same by another
//! way, or they go around it: a save hook sees nothing of
//! [`SnapshotStore::save_and_read_back`] (the snapshot writer's save) unless that is hooked as
//! well, and a read hook nothing of [`EventStore::read_start`] (an activation's first read,
//! which PostgreSQL answers in one statement when the snapshots share its database).

use std::ops::Deref;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::{
    AppendReceipt, CrashSafety, DueReminders, EventStore, Fence, NewEvent, ReadQuery,
    RecordedEvent, ReminderChange, SnapshotDay, SnapshotRecord, SnapshotStats, SnapshotStore,
    StoreResult, StoredReminder, StreamId, StreamStart,
};

/// Writes, from one list of a store trait's methods, the hooks trait (one method for each, given
/// the inner store and the call's arguments, calling the inner store's by default) and the
/// wrapper that implements the store trait by calling the hooks: the list is all there is to
/// keep in step with the store trait.
macro_rules! hooked_store {
    (
        store: $store:ident;
        $(#[$hooks_doc:meta])*
        hooks: $hooks:ident;
        $(#[$wrapper_doc:meta])*
        wrapper: $wrapper:ident;
        async: {$(
            $(#[$doc:meta])*
            fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
        )*}
        sync: {$(
            $(#[$sync_doc:meta])*
            fn $sync_name:ident() -> $sync_ret:ty;
        )*}
    ) => {
        $(#[$hooks_doc])*
        #[async_trait]
        pub trait $hooks: Send + Sync + 'static {
            $(
                $(#[$doc])*
                async fn $name(&self, inner: &Arc<dyn $store>, $($arg: $ty),*) -> $ret {
                    inner.$name($($arg),*).await
                }
            )*
            $(
                $(#[$sync_doc])*
                fn $sync_name(&self, inner: &Arc<dyn $store>) -> $sync_ret {
                    inner.$sync_name()
                }
            )*
        }

        $(#[$wrapper_doc])*
        ///
        /// It dereferences to its hooks, so a test reads their counters and flips their
        /// switches through the store it handed out.
        pub struct $wrapper<H> {
            inner: Arc<dyn $store>,
            hooks: H,
        }

        impl<H> $wrapper<H> {
            /// `inner`, with its calls made through `hooks`.
            pub fn new(inner: Arc<dyn $store>, hooks: H) -> Self {
                Self { inner, hooks }
            }

            /// The hooks.
            pub fn hooks(&self) -> &H {
                &self.hooks
            }

            /// The inner store, whose calls go around the hooks.
            pub fn inner(&self) -> &Arc<dyn $store> {
                &self.inner
            }
        }

        impl<H> Deref for $wrapper<H> {
            type Target = H;

            fn deref(&self) -> &H {
                &self.hooks
            }
        }

        #[async_trait]
        impl<H: $hooks> $store for $wrapper<H> {
            $(
                async fn $name(&self, $($arg: $ty),*) -> $ret {
                    self.hooks.$name(&self.inner, $($arg),*).await
                }
            )*
            $(
                fn $sync_name(&self) -> $sync_ret {
                    self.hooks.$sync_name(&self.inner)
                }
            )*
        }
    };
}

hooked_store! {
    store: EventStore;
    /// The calls of an [`EventStore`] a [`Hooked`] store makes: one method for each method of
    /// the trait, given the inner store and the call's arguments. Each calls the same method of
    /// `inner` unless overridden.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// use async_trait::async_trait;
    /// use event_stores::testing::{Hooked, StoreHooks};
    /// use event_stores::{
    ///     EventStore, InMemoryEventStore, NewEvent, ReadQuery, RecordedEvent, StoreResult, StreamId,
    /// };
    ///
    /// /// Counts the reads of a stream; everything else is the inner store's.
    /// #[derive(Default)]
    /// struct CountReads(AtomicU64);
    ///
    /// #[async_trait]
    /// impl StoreHooks for CountReads {
    ///     async fn read_stream(
    ///         &self,
    ///         inner: &Arc<dyn EventStore>,
    ///         stream: &StreamId,
    ///         query: ReadQuery,
    ///     ) -> StoreResult<Vec<RecordedEvent>> {
    ///         self.0.fetch_add(1, Ordering::SeqCst);
    ///         inner.read_stream(stream, query).await
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = Hooked::new(Arc::new(InMemoryEventStore::new()), CountReads::default());
    /// let stream = StreamId::new("counter", "1")?;
    /// store.append(&stream, 0, vec![NewEvent::new("Incremented", 1, vec![])]).await?;
    /// assert_eq!(store.read_stream(&stream, ReadQuery::all()).await?.len(), 1);
    /// assert_eq!(store.stream_version(&stream).await?, 1);
    /// assert_eq!(store.hooks().0.load(Ordering::SeqCst), 1);
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    hooks: StoreHooks;
    /// An [`EventStore`] that makes every call through its [`StoreHooks`] on an inner store.
    wrapper: Hooked;
    async: {
        /// [`EventStore::append`].
        fn append(stream: &StreamId, expected_version: u64, events: Vec<NewEvent>)
            -> StoreResult<AppendReceipt>;
        /// [`EventStore::read_stream`].
        fn read_stream(stream: &StreamId, query: ReadQuery) -> StoreResult<Vec<RecordedEvent>>;
        /// [`EventStore::stream_version`].
        fn stream_version(stream: &StreamId) -> StoreResult<u64>;
        /// [`EventStore::read_all`].
        fn read_all(after_position: u64, limit: usize) -> StoreResult<Vec<RecordedEvent>>;
        /// [`EventStore::count_after`].
        fn count_after(position: u64) -> StoreResult<u64>;
        /// [`EventStore::stream_ids`].
        fn stream_ids(aggregate_type: &str, after: Option<&str>, limit: usize)
            -> StoreResult<Vec<String>>;
        /// [`EventStore::read_command`].
        fn read_command(stream: &StreamId, command_id: Uuid) -> StoreResult<Vec<RecordedEvent>>;
        /// [`EventStore::append_fenced`].
        fn append_fenced(
            stream: &StreamId, expected_version: u64, events: Vec<NewEvent>, fence: &Fence,
        ) -> StoreResult<AppendReceipt>;
        /// [`EventStore::read_start`].
        fn read_start(stream: &StreamId, snapshots: &dyn SnapshotStore, page_size: usize)
            -> StoreResult<Option<StreamStart>>;
        /// [`EventStore::append_with_reminders`].
        fn append_with_reminders(
            stream: &StreamId, expected_version: u64, events: Vec<NewEvent>,
            reminders: Vec<ReminderChange>, fence: Option<&Fence>,
        ) -> StoreResult<AppendReceipt>;
        /// [`EventStore::reminders_of`].
        fn reminders_of(stream: &StreamId) -> StoreResult<Vec<StoredReminder>>;
        /// [`EventStore::due_reminders`].
        fn due_reminders(query: &DueReminders) -> StoreResult<Vec<StoredReminder>>;
    }
    sync: {
        /// [`EventStore::crash_safety`].
        fn crash_safety() -> CrashSafety;
    }
}

hooked_store! {
    store: SnapshotStore;
    /// The calls of a [`SnapshotStore`] a [`HookedSnapshots`] store makes: one method for each
    /// method of the trait, given the inner store and the call's arguments. Each calls the same
    /// method of `inner` unless overridden.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use async_trait::async_trait;
    /// use event_stores::testing::{HookedSnapshots, SnapshotHooks};
    /// use event_stores::{InMemorySnapshotStore, SnapshotRecord, SnapshotStore, StoreError, StoreResult};
    ///
    /// /// Refuses every save, both ways of saving; reads are the inner store's.
    /// struct RefuseSaves;
    ///
    /// fn refused() -> StoreError {
    ///     StoreError::Unavailable { message: "refused (example)".into(), source: None }
    /// }
    ///
    /// #[async_trait]
    /// impl SnapshotHooks for RefuseSaves {
    ///     async fn save(&self, _: &Arc<dyn SnapshotStore>, _: SnapshotRecord) -> StoreResult<()> {
    ///         Err(refused())
    ///     }
    ///     async fn save_and_read_back(
    ///         &self,
    ///         _: &Arc<dyn SnapshotStore>,
    ///         _: SnapshotRecord,
    ///     ) -> StoreResult<SnapshotRecord> {
    ///         Err(refused())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = HookedSnapshots::new(Arc::new(InMemorySnapshotStore::new()), RefuseSaves);
    /// let stream = event_stores::StreamId::new("counter", "1")?;
    /// assert!(store.load_latest(&stream).await?.is_none());
    /// assert_eq!(store.location(), None, "the in-memory store's own answer");
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    hooks: SnapshotHooks;
    /// A [`SnapshotStore`] that makes every call through its [`SnapshotHooks`] on an inner store.
    wrapper: HookedSnapshots;
    async: {
        /// [`SnapshotStore::save`].
        fn save(record: SnapshotRecord) -> StoreResult<()>;
        /// [`SnapshotStore::save_and_read_back`].
        fn save_and_read_back(record: SnapshotRecord) -> StoreResult<SnapshotRecord>;
        /// [`SnapshotStore::load_latest`].
        fn load_latest(stream: &StreamId) -> StoreResult<Option<SnapshotRecord>>;
        /// [`SnapshotStore::load_at_or_before_version`].
        fn load_at_or_before_version(stream: &StreamId, at_or_before: u64)
            -> StoreResult<Option<SnapshotRecord>>;
        /// [`SnapshotStore::load_at_or_before_time`].
        fn load_at_or_before_time(stream: &StreamId, at: DateTime<Utc>)
            -> StoreResult<Option<SnapshotRecord>>;
        /// [`SnapshotStore::list`].
        fn list(stream: &StreamId, from: u64, to: u64) -> StoreResult<Vec<SnapshotRecord>>;
        /// [`SnapshotStore::delete`].
        fn delete(stream: &StreamId, version: u64) -> StoreResult<bool>;
        /// [`SnapshotStore::delete_older_than`].
        fn delete_older_than(stream: &StreamId, before: u64) -> StoreResult<u64>;
        /// [`SnapshotStore::retain_newest`].
        fn retain_newest(stream: &StreamId, keep: usize) -> StoreResult<u64>;
        /// [`SnapshotStore::retain_newest_at_or_below`].
        fn retain_newest_at_or_below(stream: &StreamId, at_or_below: u64, keep: usize)
            -> StoreResult<u64>;
        /// [`SnapshotStore::stats`].
        fn stats(stream: &StreamId) -> StoreResult<SnapshotStats>;
        /// [`SnapshotStore::add_snapshot_days`].
        fn add_snapshot_days(aggregate_type: &str, days: &[SnapshotDay]) -> StoreResult<()>;
        /// [`SnapshotStore::snapshot_days`].
        fn snapshot_days(aggregate_type: &str, since: NaiveDate)
            -> StoreResult<Vec<SnapshotDay>>;
    }
    sync: {
        /// [`SnapshotStore::location`].
        fn location() -> Option<String>;
    }
}

#[cfg(test)]
mod tests {
    //! Stores wrapped with no hook changed pass the whole contract suite, as their inner
    //! stores do: every call reaches the inner store, the defaulted ones included.

    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::contract::{self, Fixture};

    struct NoHooks;

    impl StoreHooks for NoHooks {}

    impl SnapshotHooks for NoHooks {}

    fn wrapped(events: Arc<dyn EventStore>, snapshots: Arc<dyn SnapshotStore>) -> Fixture {
        Fixture::new(
            Hooked::new(events, NoHooks),
            HookedSnapshots::new(snapshots, NoHooks),
            contract::limits(),
        )
    }

    mod memory {
        use super::*;
        use crate::{InMemoryEventStore, InMemorySnapshotStore};

        crate::store_contract! {
            make = async {
                let limits = contract::limits();
                Some(wrapped(
                    Arc::new(InMemoryEventStore::with_limits(limits)),
                    Arc::new(InMemorySnapshotStore::with_limits(limits)),
                ))
            }
        }
    }

    #[cfg(feature = "postgres")]
    mod postgres {
        use super::*;
        use crate::testing::fresh_database;

        crate::store_contract! {
            make = async {
                let db = fresh_database().await?;
                let (events, snapshots) = db.stores(contract::limits()).await.unwrap();
                Some(wrapped(Arc::new(events), Arc::new(snapshots)).keep_alive(db))
            }
        }

        /// An activation's first read is the inner store's one statement: the wrapped snapshot
        /// store names the inner one's database.
        #[tokio::test(flavor = "multi_thread")]
        async fn read_start_and_location_reach_the_inner_stores() {
            let Some(db) = fresh_database().await else {
                return;
            };
            let (events, snapshots) = db.stores(contract::limits()).await.unwrap();
            let safety = events.crash_safety();
            let fixture = wrapped(Arc::new(events), Arc::new(snapshots));
            assert!(fixture.snapshots.location().is_some());
            let stream = contract::fresh_stream("hooked");
            let start = fixture
                .events
                .read_start(&stream, &*fixture.snapshots, 10)
                .await
                .unwrap();
            assert!(start.is_some(), "PostgreSQL answers read_start itself");
            assert_eq!(fixture.events.crash_safety(), safety);
        }
    }
}
