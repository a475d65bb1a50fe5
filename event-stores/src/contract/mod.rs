//! The contract every [`EventStore`] and [`SnapshotStore`] backend must pass, written once (in
//! the spirit of Akka's persistence TCK) and run against each backend (feature `test-support`).
//!
//! Each case is a public async function taking the store under test; it panics on a breach, as
//! a test does. [`store_contract!`](crate::store_contract) expands to one
//! `#[tokio::test(flavor = "multi_thread")]` per case, in modules `event_store` and
//! `snapshot_store`, so a backend's test file is a few lines:
//!
//! ```
//! use event_stores::contract::{self, Fixture};
//! use event_stores::{InMemoryEventStore, InMemorySnapshotStore};
//!
//! event_stores::store_contract! {
//!     make = async {
//!         let limits = contract::limits();
//!         Some(Fixture::new(
//!             InMemoryEventStore::with_limits(limits),
//!             InMemorySnapshotStore::with_limits(limits),
//!             limits,
//!         ))
//!     }
//! }
//! # fn main() {}
//! ```
//!
//! `make` is evaluated afresh for every case; `None` skips the case (no database here). The cases
//! only touch streams with fresh random ids and filter `read_all` to their own streams, so they
//! also hold on a store that other tests write to at the same time.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod archive;
mod concurrent_streams;
mod feed;
mod metadata;
mod reminders;
pub mod schedules;
mod single_events;
mod snapshot_bases;
mod snapshot_days;

pub use concurrent_streams::*;
pub use feed::*;
pub use metadata::*;
pub use reminders::*;
pub use single_events::*;
pub use snapshot_bases::*;
pub use snapshot_days::*;

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use uuid::Uuid;

use crate::{
    AppendReceipt, EventMetadata, EventStore, InvalidInput, MAX_EVENT_TYPE_LEN, NewEvent,
    ReadQuery, RecordedEvent, SnapshotRecord, SnapshotStats, SnapshotStore, StoreError,
    StoreLimits, StoreResult, StreamId, StreamPages,
};

/// The stores one contract case runs against, with the limits they were built with.
pub struct Fixture {
    /// The event store under test.
    pub events: Arc<dyn EventStore>,
    /// The snapshot store under test.
    pub snapshots: Arc<dyn SnapshotStore>,
    /// The limits both stores enforce.
    pub limits: StoreLimits,
    keep_alive: Vec<Box<dyn Any + Send + Sync>>,
}

impl Fixture {
    /// A fixture of two stores built with `limits` (use [`limits()`] unless testing limits).
    pub fn new(
        events: impl EventStore,
        snapshots: impl SnapshotStore,
        limits: StoreLimits,
    ) -> Self {
        Self {
            events: Arc::new(events),
            snapshots: Arc::new(snapshots),
            limits,
            keep_alive: Vec::new(),
        }
    }

    /// Keeps `value` alive as long as the fixture, e.g. the throw-away database the stores use.
    pub fn keep_alive(mut self, value: impl Any + Send + Sync) -> Self {
        self.keep_alive.push(Box::new(value));
        self
    }
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("limits", &self.limits)
            .field("keep_alive", &self.keep_alive.len())
            .finish_non_exhaustive()
    }
}

/// The limits contract fixtures are built with: small, so the "too large" cases stay cheap, and
/// large enough for 1 000-event appends.
pub fn limits() -> StoreLimits {
    StoreLimits {
        max_event_payload_bytes: 64 * 1024,
        max_events_per_append: 2_000,
        max_append_bytes: 1024 * 1024,
        max_snapshot_bytes: 256 * 1024,
    }
}

/// Expands to one `#[tokio::test(flavor = "multi_thread")]` per contract case.
///
/// `make` is an expression of type `impl Future<Output = Option<Fixture>>`, evaluated for each
/// case; `None` makes the case return early (skipped). Names used in `make` are resolved in the
/// invoking module (the generated modules `use super::*`).
#[macro_export]
macro_rules! store_contract {
    (make = $make:expr $(,)?) => {
        $crate::__store_contract_cases! {
            make = $make;
            event_store = [
                appended_events_read_back_in_order_with_every_field,
                a_stream_never_written_is_empty_at_version_zero,
                pages_cover_a_stream_exactly_once_in_order,
                append_conflicts_when_expected_version_is_behind,
                append_conflicts_when_expected_version_is_ahead,
                concurrent_appends_at_one_version_store_exactly_one_batch,
                concurrent_appenders_win_each_version_exactly_once,
                up_to_version_reads_a_prefix,
                up_to_time_reads_the_events_recorded_by_then,
                read_all_returns_every_stream_in_position_order,
                read_all_never_skips_an_event_committed_late,
                count_after_counts_what_read_all_returns_after_a_position,
                stream_ids_page_through_one_type_in_id_order,
                malformed_stream_ids_are_refused_with_typed_errors,
                an_append_without_events_is_refused_and_stores_nothing,
                duplicate_event_ids_in_one_append_are_refused_and_store_nothing,
                a_bad_event_type_is_refused_and_stores_nothing,
                an_event_type_with_control_characters_is_refused_and_stores_nothing,
                a_zero_page_size_is_refused,
                events_of_a_command_read_back_with_its_command_id,
                a_command_appended_again_is_refused_as_already_applied_and_stores_nothing,
                a_command_id_on_another_stream_is_another_command,
                a_stored_event_id_reused_outside_its_command_is_a_duplicate_event_id,
                read_command_returns_exactly_that_commands_events_in_order,
                read_command_finds_events_with_a_command_id_but_their_own_ids,
                concurrent_appends_to_many_streams_each_get_their_own_outcome,
                a_command_already_applied_among_concurrent_appends_is_refused_alone,
                an_event_id_in_two_concurrent_appends_is_stored_once,
                one_event_appends_conflict_from_behind_and_ahead_and_store_nothing,
                a_one_event_command_appended_again_meets_the_version_check_first,
                trace_context_survives_every_append_path_and_every_read,
                events_and_reminders_are_stored_together_and_read_back_with_every_field,
                an_append_with_reminders_that_conflicts_stores_neither_events_nor_reminder_changes,
                reminder_changes_without_events_check_the_version,
                scheduling_a_name_again_replaces_it_and_cancel_removes_it,
                changes_to_one_name_in_one_call_apply_in_order,
                fired_moves_a_periodic_reminder_removes_a_one_shot_and_keeps_a_rejected_one,
                fired_with_a_stale_id_changes_nothing,
                due_reminders_returns_scheduled_reminders_due_by_a_time_earliest_first,
                due_reminders_honours_the_shard_filter,
                due_reminders_leaves_out_the_reminders_it_skips_before_the_limit,
                a_command_sent_again_with_reminders_is_refused_and_changes_no_reminder,
                a_firing_sent_again_after_it_was_applied_is_refused_as_already_applied_not_stale,
                reminder_changes_racing_appends_on_one_stream_are_serialised,
                random_reminder_changes_match_a_simple_model,
            ];
            event_store_with_limits = [
                a_multi_event_append_is_atomic,
                a_100_000_event_stream_reads_back_page_by_page,
                an_oversized_payload_is_refused_and_stores_nothing,
                an_append_with_too_many_events_is_refused_and_stores_nothing,
                an_append_over_its_byte_limit_is_refused_and_stores_nothing,
                bad_reminder_input_is_refused_with_typed_errors_and_stores_nothing,
            ];
            snapshot_store = [
                a_saved_snapshot_loads_back_exactly,
                a_save_with_read_back_returns_the_record_as_stored,
                load_latest_returns_the_highest_version,
                load_at_or_before_version_returns_the_newest_not_after_it,
                load_at_or_before_time_returns_the_newest_version_taken_by_then,
                saving_again_at_a_version_replaces_the_snapshot,
                list_returns_the_version_range_newest_first,
                delete_removes_exactly_one_version,
                delete_older_than_removes_only_lower_versions,
                retain_newest_keeps_the_newest_n_and_never_the_last_one,
                stats_summarise_the_kept_snapshots,
                snapshots_of_different_streams_are_independent,
                a_delta_keeps_its_base_through_every_write_and_read,
                retain_newest_keeps_the_bases_of_kept_deltas,
                delete_older_than_keeps_the_bases_of_later_deltas,
                delete_refuses_a_base_that_a_delta_names,
                snapshot_days_add_up_per_day_and_read_back_oldest_first,
                concurrent_snapshot_day_additions_all_count,
                a_bad_snapshot_day_addition_is_refused_and_stores_nothing,
                a_snapshot_codec_or_compression_with_control_characters_is_refused,
            ];
            snapshot_store_with_limits = [
                an_oversized_or_malformed_snapshot_is_refused_and_stores_nothing,
            ];
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_contract_cases {
    (
        make = $make:expr;
        event_store = [$($e:ident),* $(,)?];
        event_store_with_limits = [$($el:ident),* $(,)?];
        snapshot_store = [$($s:ident),* $(,)?];
        snapshot_store_with_limits = [$($sl:ident),* $(,)?];
    ) => {
        mod event_store {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $e() {
                    let fixture: ::std::option::Option<$crate::contract::Fixture> = $make.await;
                    let Some(fixture) = fixture else { return };
                    $crate::contract::$e(::std::sync::Arc::clone(&fixture.events)).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $el() {
                    let fixture: ::std::option::Option<$crate::contract::Fixture> = $make.await;
                    let Some(fixture) = fixture else { return };
                    $crate::contract::$el(::std::sync::Arc::clone(&fixture.events), fixture.limits)
                        .await;
                }
            )*
        }
        mod snapshot_store {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $s() {
                    let fixture: ::std::option::Option<$crate::contract::Fixture> = $make.await;
                    let Some(fixture) = fixture else { return };
                    $crate::contract::$s(::std::sync::Arc::clone(&fixture.snapshots)).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $sl() {
                    let fixture: ::std::option::Option<$crate::contract::Fixture> = $make.await;
                    let Some(fixture) = fixture else { return };
                    $crate::contract::$sl(
                        ::std::sync::Arc::clone(&fixture.snapshots),
                        fixture.limits,
                    )
                    .await;
                }
            )*
        }
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A stream with a fresh random id, so cases never meet each other's events.
pub fn fresh_stream(aggregate_type: &str) -> StreamId {
    StreamId::new(aggregate_type, Uuid::now_v7().to_string()).unwrap()
}

/// An event whose payload is `tag` and whose schema version is 1.
pub fn event(tag: impl AsRef<[u8]>) -> NewEvent {
    NewEvent::new("Happened", 1, Bytes::copy_from_slice(tag.as_ref()))
}

/// `count` events tagged `0..count` (little-endian u64 payloads).
pub fn numbered_events(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count)
        .map(|i| event(i.to_le_bytes()))
        .collect()
}

/// Now, at the microsecond precision every backend keeps.
pub fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) async fn read_whole(store: &dyn EventStore, stream: &StreamId) -> Vec<RecordedEvent> {
    let mut pages = StreamPages::new(store, stream, ReadQuery::all());
    let mut all = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        all.extend(page);
    }
    all
}

fn versions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

fn ids(events: &[RecordedEvent]) -> Vec<Uuid> {
    events.iter().map(|e| e.event_id).collect()
}

pub(crate) fn assert_conflict(
    result: Result<impl std::fmt::Debug, StoreError>,
    stream: &StreamId,
    expected: u64,
    actual: u64,
) {
    match result {
        Err(StoreError::VersionConflict {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&s, stream, "the conflict names the stream");
            assert_eq!(e, expected, "the conflict carries the expected version");
            assert_eq!(a, actual, "the conflict carries the actual version");
        }
        other => panic!("expected a version conflict (actual {actual}), got {other:?}"),
    }
}

pub(crate) fn invalid(result: Result<impl std::fmt::Debug, StoreError>) -> InvalidInput {
    match result {
        Err(StoreError::InvalidInput(input)) => input,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

/// Everything `read_all` returns, restricted to `streams`, read from position 0 in pages of
/// `limit`, checking that positions strictly increase across the whole walk. Walks again until
/// at least `expect` events of `streams` are visible: `read_all` may show an event a moment
/// after its append returned (see [`EventStore::read_all`]); gives up after 30 s.
pub async fn read_all_of(
    store: &dyn EventStore,
    streams: &HashSet<StreamId>,
    limit: usize,
    expect: usize,
) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut after = 0;
        let mut mine = Vec::new();
        loop {
            let page = store.read_all(after, limit).await.unwrap();
            assert!(page.len() <= limit, "read_all returned more than its limit");
            if page.is_empty() {
                break;
            }
            for e in &page {
                assert!(e.position > after, "read_all positions strictly increase");
                after = e.position;
            }
            mine.extend(page.into_iter().filter(|e| streams.contains(&e.stream)));
        }
        if mine.len() >= expect || Instant::now() > deadline {
            return mine;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Event store: appends and reads
// ---------------------------------------------------------------------------------------------

/// Events come back in version order, 1, 2, 3 …, with every field as appended and the receipt's
/// numbers; a second append continues the versions and never records an earlier time.
pub async fn appended_events_read_back_in_order_with_every_field(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("order");
    let correlation = Uuid::now_v7();
    let causation = Uuid::now_v7();
    let first = vec![
        NewEvent::new("Opened", 1, Bytes::from_static(b"\x81\xa1a\x01")).with_metadata(
            EventMetadata {
                correlation_id: Some(correlation),
                causation_id: None,
                trace_parent: None,
            },
        ),
        NewEvent::new("Deposited", 2, Bytes::new()).with_metadata(EventMetadata {
            correlation_id: Some(correlation),
            causation_id: Some(causation),
            trace_parent: Some(crate::TraceParent::generate()),
        }),
        // The largest schema version must survive a backend's signed integer column.
        NewEvent::new("Withdrawn", u32::MAX, vec![0u8, 255, 0, 7]),
    ];
    let receipt = store.append(&stream, 0, first.clone()).await.unwrap();
    assert_eq!(receipt.first_version, 1);
    assert_eq!(receipt.last_version, 3);

    let read = store.read_stream(&stream, ReadQuery::all()).await.unwrap();
    assert_eq!(versions(&read), vec![1, 2, 3]);
    for (got, sent) in read.iter().zip(&first) {
        assert_eq!(got.event_id, sent.event_id);
        assert_eq!(got.stream, stream);
        assert_eq!(got.event_type, sent.event_type);
        assert_eq!(got.schema_version, sent.schema_version);
        assert_eq!(got.payload, sent.payload);
        assert_eq!(got.metadata, sent.metadata);
        assert_eq!(got.recorded_at, receipt.recorded_at, "one append, one time");
    }
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(read[2].position, receipt.last_position);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);

    let second = store
        .append(&stream, 3, numbered_events(0, 2))
        .await
        .unwrap();
    assert_eq!((second.first_version, second.last_version), (4, 5));
    assert!(second.recorded_at >= receipt.recorded_at);
    assert!(second.last_position > receipt.last_position);
    let read = read_whole(store.as_ref(), &stream).await;
    assert_eq!(versions(&read), vec![1, 2, 3, 4, 5]);
    assert!(
        read.windows(2)
            .all(|w| w[0].recorded_at <= w[1].recorded_at),
        "recorded_at never decreases within a stream"
    );
}

/// A stream nobody wrote to has version 0 and reads as empty, from any point.
pub async fn a_stream_never_written_is_empty_at_version_zero(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("empty");
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert!(
        store
            .read_stream(&stream, ReadQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&stream, ReadQuery::after(10).up_to_version(20))
            .await
            .unwrap()
            .is_empty()
    );
    // A stream of the same type with a longer id, and one of another type with the same id,
    // are other streams.
    let neighbour = StreamId::new(
        stream.aggregate_type(),
        format!("{}x", stream.aggregate_id()),
    )
    .unwrap();
    store
        .append(&neighbour, 0, numbered_events(0, 2))
        .await
        .unwrap();
    let other_type = StreamId::new("other", stream.aggregate_id()).unwrap();
    store
        .append(&other_type, 0, numbered_events(0, 1))
        .await
        .unwrap();
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert!(
        store
            .read_stream(&stream, ReadQuery::all())
            .await
            .unwrap()
            .is_empty()
    );
}

/// Reading with `after_version` and a page size walks the stream page by page, every event
/// once, in order; reading past the end is empty.
pub async fn pages_cover_a_stream_exactly_once_in_order(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("paging");
    let mut version = 0;
    for batch in [7u64, 1, 9, 4, 4] {
        store
            .append(&stream, version, numbered_events(version, batch))
            .await
            .unwrap();
        version += batch;
    }
    assert_eq!(version, 25);

    // By hand, with after_version.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store
            .read_stream(&stream, ReadQuery::after(after).page_size(4))
            .await
            .unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        after = last.version;
        seen.extend(page);
    }
    assert_eq!(versions(&seen), (1..=25).collect::<Vec<_>>());
    for e in &seen {
        assert_eq!(e.payload.as_ref(), (e.version - 1).to_le_bytes());
    }

    // With StreamPages: pages of 4, 4, …, 1.
    let mut pages = StreamPages::new(store.as_ref(), &stream, ReadQuery::all().page_size(4));
    let mut sizes = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        sizes.push(page.len());
    }
    assert_eq!(sizes, vec![4, 4, 4, 4, 4, 4, 1]);

    // A page larger than the stream, a start in the middle, a start past the end.
    let all = store
        .read_stream(&stream, ReadQuery::all().page_size(1000))
        .await
        .unwrap();
    assert_eq!(all.len(), 25);
    let tail = store
        .read_stream(&stream, ReadQuery::after(20))
        .await
        .unwrap();
    assert_eq!(versions(&tail), vec![21, 22, 23, 24, 25]);
    assert!(
        store
            .read_stream(&stream, ReadQuery::after(25))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .read_stream(&stream, ReadQuery::after(u64::MAX))
            .await
            .unwrap()
            .is_empty()
    );
}

/// An append whose expected version is behind the stream fails with a typed conflict carrying
/// the actual version, and stores nothing.
pub async fn append_conflicts_when_expected_version_is_behind(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("behind");
    store
        .append(&stream, 0, numbered_events(0, 3))
        .await
        .unwrap();
    let before = read_whole(store.as_ref(), &stream).await;

    assert_conflict(
        store.append(&stream, 1, numbered_events(100, 2)).await,
        &stream,
        1,
        3,
    );
    assert_conflict(
        store.append(&stream, 0, numbered_events(100, 1)).await,
        &stream,
        0,
        3,
    );
    assert_conflict(
        store.append(&stream, 2, numbered_events(100, 1)).await,
        &stream,
        2,
        3,
    );

    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    assert_eq!(read_whole(store.as_ref(), &stream).await, before);
    // The stream still takes appends at its actual version.
    let receipt = store
        .append(&stream, 3, numbered_events(3, 1))
        .await
        .unwrap();
    assert_eq!(receipt.last_version, 4);
}

/// An append whose expected version is ahead of the stream (events the caller imagines) fails
/// with a typed conflict carrying the actual version, and stores nothing.
pub async fn append_conflicts_when_expected_version_is_ahead(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("ahead");
    assert_conflict(
        store.append(&stream, 2, numbered_events(0, 1)).await,
        &stream,
        2,
        0,
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert!(read_whole(store.as_ref(), &stream).await.is_empty());

    store
        .append(&stream, 0, numbered_events(0, 2))
        .await
        .unwrap();
    assert_conflict(
        store.append(&stream, 3, numbered_events(2, 1)).await,
        &stream,
        3,
        2,
    );
    assert_conflict(
        store.append(&stream, u64::MAX, numbered_events(2, 1)).await,
        &stream,
        u64::MAX,
        2,
    );
    assert_eq!(
        versions(&read_whole(store.as_ref(), &stream).await),
        vec![1, 2]
    );
}

/// A batch is stored whole or not at all: its events get consecutive versions and one
/// `recorded_at`; a batch that conflicts, or that holds one bad event among good ones, leaves
/// no trace.
pub async fn a_multi_event_append_is_atomic(store: Arc<dyn EventStore>, limits: StoreLimits) {
    let stream = fresh_stream("atomic");
    let batch = numbered_events(0, 50);
    let receipt = store.append(&stream, 0, batch.clone()).await.unwrap();
    assert_eq!((receipt.first_version, receipt.last_version), (1, 50));
    let read = read_whole(store.as_ref(), &stream).await;
    assert_eq!(versions(&read), (1..=50).collect::<Vec<_>>());
    assert_eq!(
        ids(&read),
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert!(read.iter().all(|e| e.recorded_at == receipt.recorded_at));

    // Conflicting batch.
    assert_conflict(
        store.append(&stream, 10, numbered_events(50, 10)).await,
        &stream,
        10,
        50,
    );
    // One oversized payload at the end of an otherwise fine batch.
    let mut bad = numbered_events(50, 10);
    bad.push(event(vec![0u8; limits.max_event_payload_bytes + 1]));
    invalid(store.append(&stream, 50, bad).await);
    // One event with an empty type in the middle.
    let mut bad = numbered_events(50, 10);
    bad[5].event_type = String::new();
    invalid(store.append(&stream, 50, bad).await);

    assert_eq!(store.stream_version(&stream).await.unwrap(), 50);
    assert_eq!(read_whole(store.as_ref(), &stream).await, read);
    let next = store
        .append(&stream, 50, numbered_events(50, 3))
        .await
        .unwrap();
    assert_eq!((next.first_version, next.last_version), (51, 53));
}

/// Appenders racing at the same expected version: exactly one batch is stored, whole, and every
/// loser gets a conflict naming the winner's version.
pub async fn concurrent_appends_at_one_version_store_exactly_one_batch(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("race");
    let batches: Vec<Vec<NewEvent>> = (0..8).map(|i| numbered_events(i * 1000, 100)).collect();
    let tasks: Vec<_> = batches
        .iter()
        .cloned()
        .map(|batch| {
            let store = Arc::clone(&store);
            let stream = stream.clone();
            tokio::spawn(async move { store.append(&stream, 0, batch).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(receipt) => {
                assert_eq!(receipt.last_version, 100);
                winners.push(i);
            }
            Err(err) => assert_conflict(Err::<(), _>(err), &stream, 0, 100),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer wins");
    let read = read_whole(store.as_ref(), &stream).await;
    assert_eq!(
        ids(&read),
        batches[winners[0]]
            .iter()
            .map(|e| e.event_id)
            .collect::<Vec<_>>(),
        "the stream holds the winner's batch and nothing else"
    );
}

/// 32 tasks append to one stream at once, one event per append, retrying at the version a
/// conflict reports: every version is won exactly once, the stream has no gaps, and each task's
/// events appear in the order it appended them.
pub async fn concurrent_appenders_win_each_version_exactly_once(store: Arc<dyn EventStore>) {
    const TASKS: u64 = 32;
    const PER_TASK: u64 = 10;
    let stream = fresh_stream("contended");
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                let mut expected = 0;
                let mut conflicts = 0u64;
                for seq in 0..PER_TASK {
                    let mut payload = task.to_le_bytes().to_vec();
                    payload.extend_from_slice(&seq.to_le_bytes());
                    let ev = event(payload);
                    loop {
                        match store.append(&stream, expected, vec![ev.clone()]).await {
                            Ok(receipt) => {
                                assert_eq!(receipt.first_version, expected + 1);
                                won.push(receipt.last_version);
                                expected = receipt.last_version;
                                break;
                            }
                            Err(StoreError::VersionConflict { actual, .. }) => {
                                assert_ne!(actual, expected, "a conflict reports another version");
                                conflicts += 1;
                                expected = actual;
                            }
                            Err(other) => panic!("append failed: {other}"),
                        }
                    }
                }
                (won, conflicts)
            })
        })
        .collect();

    let mut won = Vec::new();
    for task in tasks {
        let (versions, _conflicts) = task.await.unwrap();
        won.extend(versions);
    }
    won.sort_unstable();
    assert_eq!(
        won,
        (1..=TASKS * PER_TASK).collect::<Vec<_>>(),
        "each version won exactly once"
    );

    let read = read_whole(store.as_ref(), &stream).await;
    assert_eq!(versions(&read), (1..=TASKS * PER_TASK).collect::<Vec<_>>());
    let mut next_seq: HashMap<u64, u64> = HashMap::new();
    for e in &read {
        let task = u64::from_le_bytes(e.payload[..8].try_into().unwrap());
        let seq = u64::from_le_bytes(e.payload[8..16].try_into().unwrap());
        let expected_seq = next_seq.entry(task).or_insert(0);
        assert_eq!(
            seq, *expected_seq,
            "task {task}'s events are stored once, in order"
        );
        *expected_seq += 1;
    }
    assert_eq!(next_seq.len() as u64, TASKS);
    assert!(next_seq.values().all(|&n| n == PER_TASK));
}

/// A 100 000-event stream, appended 1 000 events at a time, reads back page by page with
/// [`StreamPages`]: every version once, in order, no page larger than asked.
pub async fn a_100_000_event_stream_reads_back_page_by_page(
    store: Arc<dyn EventStore>,
    limits: StoreLimits,
) {
    const EVENTS: u64 = 100_000;
    let batch = 1_000.min(limits.max_events_per_append as u64);
    let stream = fresh_stream("long");
    let mut version = 0;
    while version < EVENTS {
        let n = batch.min(EVENTS - version);
        store
            .append(&stream, version, numbered_events(version, n))
            .await
            .unwrap();
        version += n;
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), EVENTS);

    let mut pages = StreamPages::new(store.as_ref(), &stream, ReadQuery::all().page_size(1_000));
    let mut next = 1;
    let mut page_count = 0;
    while let Some(page) = pages.next_page().await.unwrap() {
        assert!(!page.is_empty() && page.len() <= 1_000);
        page_count += 1;
        for e in page {
            assert_eq!(e.version, next);
            assert_eq!(e.payload.as_ref(), (next - 1).to_le_bytes());
            next += 1;
        }
    }
    assert_eq!(next - 1, EVENTS, "every event read");
    assert!(
        (100..=101).contains(&page_count),
        "read in pages of 1 000, got {page_count} pages"
    );
}

/// `up_to_version` bounds a read to a prefix of the stream, with or without `after_version` and
/// paging.
pub async fn up_to_version_reads_a_prefix(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("upto");
    store
        .append(&stream, 0, numbered_events(0, 10))
        .await
        .unwrap();
    let read = |q: ReadQuery| {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        async move { versions(&store.read_stream(&stream, q).await.unwrap()) }
    };
    assert_eq!(
        read(ReadQuery::all().up_to_version(4)).await,
        vec![1, 2, 3, 4]
    );
    assert_eq!(read(ReadQuery::after(2).up_to_version(4)).await, vec![3, 4]);
    assert_eq!(
        read(ReadQuery::after(4).up_to_version(4)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        read(ReadQuery::after(6).up_to_version(4)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        read(ReadQuery::all().up_to_version(0)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        read(ReadQuery::all().up_to_version(100)).await,
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        read(ReadQuery::all().up_to_version(u64::MAX)).await,
        (1..=10).collect::<Vec<_>>()
    );

    let mut pages = StreamPages::new(
        store.as_ref(),
        &stream,
        ReadQuery::all().up_to_version(5).page_size(2),
    );
    let mut seen = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        seen.extend(versions(&page));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
}

/// `up_to_time` reads the events recorded at or before an instant: a prefix of the stream.
pub async fn up_to_time_reads_the_events_recorded_by_then(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("time");
    let a = store
        .append(&stream, 0, numbered_events(0, 3))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = store
        .append(&stream, 3, numbered_events(3, 2))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let c = store
        .append(&stream, 5, numbered_events(5, 1))
        .await
        .unwrap();
    assert!(a.recorded_at < b.recorded_at && b.recorded_at < c.recorded_at);

    let read = |q: ReadQuery| {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        async move { versions(&store.read_stream(&stream, q).await.unwrap()) }
    };
    let micro = TimeDelta::microseconds(1);
    assert_eq!(
        read(ReadQuery::all().up_to_time(a.recorded_at - micro)).await,
        Vec::<u64>::new()
    );
    assert_eq!(
        read(ReadQuery::all().up_to_time(a.recorded_at)).await,
        vec![1, 2, 3]
    );
    assert_eq!(
        read(ReadQuery::all().up_to_time(a.recorded_at + micro)).await,
        vec![1, 2, 3]
    );
    assert_eq!(
        read(ReadQuery::all().up_to_time(b.recorded_at)).await,
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        read(ReadQuery::after(2).up_to_time(b.recorded_at)).await,
        vec![3, 4, 5]
    );
    assert_eq!(
        read(ReadQuery::all().up_to_time(c.recorded_at)).await,
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(
        read(ReadQuery::all().up_to_time(c.recorded_at).up_to_version(4)).await,
        vec![1, 2, 3, 4]
    );
    // Paging with a time bound.
    let mut pages = StreamPages::new(
        store.as_ref(),
        &stream,
        ReadQuery::all().up_to_time(b.recorded_at).page_size(2),
    );
    let mut seen = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        seen.extend(versions(&page));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
}

/// `read_all` returns the events of every stream in position order, which for appends made one
/// after another is the order they were made in; paging by position loses nothing. (A backend
/// may show an event to `read_all` a moment after its append returned, never out of order.)
pub async fn read_all_returns_every_stream_in_position_order(store: Arc<dyn EventStore>) {
    let s1 = fresh_stream("all");
    let s2 = fresh_stream("all");
    let s3 = fresh_stream("other-type");
    let mut expected = Vec::new();
    let mut versions_of: BTreeMap<StreamId, u64> = BTreeMap::new();
    for (stream, n) in [(&s1, 2), (&s2, 3), (&s1, 1), (&s3, 2), (&s2, 1), (&s1, 4)] {
        let v = versions_of.entry(stream.clone()).or_insert(0);
        let batch = numbered_events(*v, n);
        store.append(stream, *v, batch.clone()).await.unwrap();
        expected.extend(batch.iter().map(|e| e.event_id));
        *v += n;
    }
    let streams: HashSet<StreamId> = [s1.clone(), s2.clone(), s3.clone()].into();

    for limit in [1000, 3, 1] {
        let got = read_all_of(store.as_ref(), &streams, limit, expected.len()).await;
        assert_eq!(ids(&got), expected, "page size {limit}");
        for stream in &streams {
            let of_stream: Vec<u64> = got
                .iter()
                .filter(|e| &e.stream == stream)
                .map(|e| e.version)
                .collect();
            assert_eq!(of_stream, (1..=versions_of[stream]).collect::<Vec<_>>());
        }
    }
    // The positions match what read_stream reports.
    let all = read_all_of(store.as_ref(), &streams, 1000, expected.len()).await;
    let by_stream = read_whole(store.as_ref(), &s2).await;
    let from_all: Vec<_> = all.into_iter().filter(|e| e.stream == s2).collect();
    assert_eq!(from_all, by_stream);
    assert!(store.read_all(0, 0).await.unwrap().is_empty());
    assert!(store.read_all(u64::MAX, 10).await.unwrap().is_empty());
}

/// A reader following positions with `read_all` while many writers append (in transactions
/// that commit in any order) sees every event exactly once, in increasing position order: no
/// event commits "behind" a position the reader has already passed.
pub async fn read_all_never_skips_an_event_committed_late(store: Arc<dyn EventStore>) {
    const WRITERS: u64 = 8;
    const APPENDS: u64 = 40;
    let streams: Vec<StreamId> = (0..WRITERS).map(|_| fresh_stream("follow")).collect();
    let wanted: HashSet<StreamId> = streams.iter().cloned().collect();
    let writers: Vec<_> = streams
        .iter()
        .cloned()
        .enumerate()
        .map(|(w, stream)| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut version = 0;
                for i in 0..APPENDS {
                    let n = 1 + (i + w as u64) % 5;
                    store
                        .append(&stream, version, numbered_events(version, n))
                        .await
                        .unwrap();
                    version += n;
                }
                version
            })
        })
        .collect();

    // Known up front, so the reader can stop as soon as it has everything.
    let total: u64 = (0..WRITERS)
        .flat_map(|w| (0..APPENDS).map(move |i| 1 + (i + w) % 5))
        .sum();
    let writers_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = Arc::clone(&store);
        let writers_done = Arc::clone(&writers_done);
        tokio::spawn(async move {
            let mut after = 0;
            let mut seen: Vec<RecordedEvent> = Vec::new();
            let mut last_progress = Instant::now();
            // Stops with everything, or once the writers are done and nothing new has shown up
            // for a while (then the assertions below report what is missing).
            while (seen.len() as u64) < total {
                let page = store.read_all(after, 50).await.unwrap();
                for e in &page {
                    assert!(e.position > after, "positions strictly increase");
                    after = e.position;
                }
                if page.is_empty() {
                    let settled = writers_done.load(Ordering::SeqCst)
                        && last_progress.elapsed() > Duration::from_secs(5);
                    if settled {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                } else {
                    last_progress = Instant::now();
                }
                seen.extend(page.into_iter().filter(|e| wanted.contains(&e.stream)));
            }
            seen
        })
    };

    let mut final_versions = HashMap::new();
    for (writer, stream) in writers.into_iter().zip(&streams) {
        final_versions.insert(stream.clone(), writer.await.unwrap());
    }
    writers_done.store(true, Ordering::SeqCst);
    assert_eq!(final_versions.values().sum::<u64>(), total);
    let seen = reader.await.unwrap();
    let mut next: HashMap<&StreamId, u64> = HashMap::new();
    for e in &seen {
        let n = next.entry(&e.stream).or_insert(1);
        assert_eq!(
            e.version, *n,
            "{}: the reader skipped or repeated an event (position {})",
            e.stream, e.position
        );
        *n += 1;
    }
    assert_eq!(
        seen.len() as u64,
        total,
        "the reader saw every event of every writer"
    );
    for (stream, v) in final_versions {
        assert_eq!(next.get(&stream).copied().unwrap_or(1) - 1, v);
    }
}

// ---------------------------------------------------------------------------------------------
// Event store: bad input
// ---------------------------------------------------------------------------------------------

/// Empty, oversized or control-character ids cannot become a [`StreamId`], so nothing can be
/// stored under them; the error says which part is wrong.
pub async fn malformed_stream_ids_are_refused_with_typed_errors(store: Arc<dyn EventStore>) {
    assert_eq!(
        StreamId::new("", "1").unwrap_err(),
        InvalidInput::EmptyId {
            what: "aggregate type"
        }
    );
    assert_eq!(
        StreamId::new("account", "").unwrap_err(),
        InvalidInput::EmptyId {
            what: "aggregate id"
        }
    );
    assert!(matches!(
        StreamId::new("account", "x".repeat(crate::MAX_ID_LEN + 1)),
        Err(InvalidInput::IdTooLong { .. })
    ));
    assert!(matches!(
        StreamId::new("account", "a\nb"),
        Err(InvalidInput::IdHasControlCharacters { .. })
    ));
    // The longest accepted id round-trips through the store.
    let longest = StreamId::new("account", "é".repeat(crate::MAX_ID_LEN / 2)).unwrap();
    store
        .append(&longest, 0, numbered_events(0, 1))
        .await
        .unwrap();
    let read = store.read_stream(&longest, ReadQuery::all()).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].stream, longest);
}

/// An append without events is refused with [`InvalidInput::NoEvents`] and changes nothing.
pub async fn an_append_without_events_is_refused_and_stores_nothing(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("none");
    assert_eq!(
        invalid(store.append(&stream, 0, Vec::new()).await),
        InvalidInput::NoEvents
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    store
        .append(&stream, 0, numbered_events(0, 2))
        .await
        .unwrap();
    assert_eq!(
        invalid(store.append(&stream, 2, Vec::new()).await),
        InvalidInput::NoEvents
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
}

/// A payload over the limit is refused with [`InvalidInput::PayloadTooLarge`] and nothing of its
/// batch is stored; a payload of exactly the limit is fine.
pub async fn an_oversized_payload_is_refused_and_stores_nothing(
    store: Arc<dyn EventStore>,
    limits: StoreLimits,
) {
    let stream = fresh_stream("big");
    let max = limits.max_event_payload_bytes;
    let batch = vec![event(b"small"), event(vec![7u8; max + 1])];
    assert_eq!(
        invalid(store.append(&stream, 0, batch).await),
        InvalidInput::PayloadTooLarge {
            what: "event payload",
            size: max + 1,
            limit: max
        }
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    store
        .append(&stream, 0, vec![event(vec![7u8; max])])
        .await
        .unwrap();
    let read = store.read_stream(&stream, ReadQuery::all()).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].payload.len(), max);
}

/// A batch over the per-append limit is refused with [`InvalidInput::TooManyEvents`] and
/// nothing is stored; a batch of exactly the limit is fine.
pub async fn an_append_with_too_many_events_is_refused_and_stores_nothing(
    store: Arc<dyn EventStore>,
    limits: StoreLimits,
) {
    let stream = fresh_stream("many");
    let max = limits.max_events_per_append;
    assert_eq!(
        invalid(
            store
                .append(&stream, 0, numbered_events(0, max as u64 + 1))
                .await
        ),
        InvalidInput::TooManyEvents {
            count: max + 1,
            max
        }
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    let receipt = store
        .append(&stream, 0, numbered_events(0, max as u64))
        .await
        .unwrap();
    assert_eq!(receipt.last_version, max as u64);
}

/// An append whose payloads together exceed the per-append byte limit is refused with
/// [`InvalidInput::PayloadTooLarge`] (each payload alone within its limit) and nothing is
/// stored; payloads of exactly the limit together are fine.
pub async fn an_append_over_its_byte_limit_is_refused_and_stores_nothing(
    store: Arc<dyn EventStore>,
    limits: StoreLimits,
) {
    let stream = fresh_stream("bytes");
    let each = limits.max_event_payload_bytes;
    let fit = limits.max_append_bytes / each;
    assert!(
        fit >= 2 && fit < limits.max_events_per_append,
        "fixture limits"
    );
    let payloads =
        |count: usize| -> Vec<NewEvent> { (0..count).map(|_| event(vec![3u8; each])).collect() };
    assert_eq!(
        invalid(store.append(&stream, 0, payloads(fit + 1)).await),
        InvalidInput::PayloadTooLarge {
            what: "append (all its payloads together)",
            size: each * (fit + 1),
            limit: limits.max_append_bytes
        }
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    let receipt = store.append(&stream, 0, payloads(fit)).await.unwrap();
    assert_eq!(receipt.last_version, fit as u64);
}

/// Two events with one id in a batch are refused with [`InvalidInput::DuplicateEventId`] and
/// nothing is stored.
pub async fn duplicate_event_ids_in_one_append_are_refused_and_store_nothing(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("dup");
    let mut batch = numbered_events(0, 3);
    batch[2].event_id = batch[0].event_id;
    let id = batch[0].event_id;
    assert_eq!(
        invalid(store.append(&stream, 0, batch).await),
        InvalidInput::DuplicateEventId(id)
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert!(read_whole(store.as_ref(), &stream).await.is_empty());
}

/// An empty or overlong event type is refused with [`InvalidInput::BadEventType`] and nothing
/// is stored.
pub async fn a_bad_event_type_is_refused_and_stores_nothing(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("type");
    for bad in [String::new(), "T".repeat(MAX_EVENT_TYPE_LEN + 1)] {
        let len = bad.len();
        let batch = vec![event(b"ok"), NewEvent::new(bad, 1, Bytes::new())];
        assert_eq!(
            invalid(store.append(&stream, 0, batch).await),
            InvalidInput::BadEventType {
                len,
                max: MAX_EVENT_TYPE_LEN
            }
        );
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    let longest = NewEvent::new("T".repeat(MAX_EVENT_TYPE_LEN), 1, Bytes::new());
    store.append(&stream, 0, vec![longest]).await.unwrap();
}

/// An event type with a NUL byte (which PostgreSQL text cannot hold) or another control
/// character is refused with [`InvalidInput::NameHasControlCharacters`], alone or beside good
/// events, and nothing is stored; the same stream then takes a good append at version 0.
pub async fn an_event_type_with_control_characters_is_refused_and_stores_nothing(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("type-ctl");
    for bad in ["T\0", "\0", "T\n", "T\u{1b}[0m", "T\u{7f}", "T\u{85}"] {
        let alone = vec![NewEvent::new(bad, 1, Bytes::from_static(b"x"))];
        let beside = vec![event(b"ok"), NewEvent::new(bad, 1, Bytes::new())];
        for batch in [alone, beside] {
            assert_eq!(
                invalid(store.append(&stream, 0, batch).await),
                InvalidInput::NameHasControlCharacters { what: "event type" },
                "{bad:?}"
            );
        }
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert!(read_whole(store.as_ref(), &stream).await.is_empty());
    let fine = NewEvent::new("Tä €", 1, Bytes::new());
    store.append(&stream, 0, vec![fine]).await.unwrap();
    assert_eq!(
        read_whole(store.as_ref(), &stream).await[0].event_type,
        "Tä €"
    );
}

/// A read with page size 0 is refused with [`InvalidInput::ZeroPageSize`].
pub async fn a_zero_page_size_is_refused(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("zero");
    store
        .append(&stream, 0, numbered_events(0, 1))
        .await
        .unwrap();
    assert_eq!(
        invalid(
            store
                .read_stream(&stream, ReadQuery::all().page_size(0))
                .await
        ),
        InvalidInput::ZeroPageSize
    );
}

// ---------------------------------------------------------------------------------------------
// Event store: commands (exactly-once appends)
// ---------------------------------------------------------------------------------------------

/// The events of command `command_id` on `stream`, tagged `tags`, with derived ids.
fn command_events(stream: &StreamId, command_id: Uuid, tags: &[&str]) -> Vec<NewEvent> {
    (0u32..)
        .zip(tags)
        .map(|(index, tag)| event(tag).for_command(stream, command_id, index))
        .collect()
}

fn command_ids(events: &[RecordedEvent]) -> Vec<Option<Uuid>> {
    events.iter().map(|e| e.command_id).collect()
}

fn payloads(events: &[RecordedEvent]) -> Vec<Bytes> {
    events.iter().map(|e| e.payload.clone()).collect()
}

/// Events appended with [`NewEvent::for_command`] keep their command id and their derived event
/// ids through `read_stream` and `read_all`; an event without a command reads back without one.
pub async fn events_of_a_command_read_back_with_its_command_id(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("command");
    let command = Uuid::now_v7();
    let mut batch = command_events(&stream, command, &["a", "b"]);
    batch.push(event(b"plain"));
    store.append(&stream, 0, batch.clone()).await.unwrap();

    let expected_ids = vec![
        crate::command_event_id(&stream, command, 0),
        crate::command_event_id(&stream, command, 1),
        batch[2].event_id,
    ];
    let expected_commands = vec![Some(command), Some(command), None];
    let read = read_whole(store.as_ref(), &stream).await;
    assert_eq!(ids(&read), expected_ids, "derived event ids are stored");
    assert_eq!(command_ids(&read), expected_commands);

    let streams = [stream.clone()].into();
    let all = read_all_of(store.as_ref(), &streams, 100, 3).await;
    assert_eq!(ids(&all), expected_ids);
    assert_eq!(
        command_ids(&all),
        expected_commands,
        "read_all carries the command id"
    );
}

/// Appending a command's events again fails with [`StoreError::CommandAlreadyApplied`] naming
/// the stream and the command, at the right expected version, with other payloads, with fewer
/// events and after other commands; nothing is stored. A stale expected version is still a
/// version conflict: the version check comes first.
pub async fn a_command_appended_again_is_refused_as_already_applied_and_stores_nothing(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("again");
    let command = Uuid::now_v7();
    store
        .append(&stream, 0, command_events(&stream, command, &["1", "2"]))
        .await
        .unwrap();
    let original = read_whole(store.as_ref(), &stream).await;

    let assert_applied = |result: StoreResult<AppendReceipt>, what: &str| match result {
        Err(StoreError::CommandAlreadyApplied {
            stream: s,
            command_id,
        }) => {
            assert_eq!(s, stream, "{what}: the error names the stream");
            assert_eq!(command_id, command, "{what}: the error names the command");
        }
        other => panic!("{what}: expected CommandAlreadyApplied, got {other:?}"),
    };
    let same = command_events(&stream, command, &["1", "2"]);
    assert_applied(store.append(&stream, 2, same).await, "the same events");
    let other_payloads = command_events(&stream, command, &["x", "y"]);
    assert_applied(
        store.append(&stream, 2, other_payloads).await,
        "other payloads",
    );
    let fewer = command_events(&stream, command, &["1"]);
    assert_applied(store.append(&stream, 2, fewer).await, "fewer events");
    let more = command_events(&stream, command, &["1", "2", "3"]);
    assert_applied(store.append(&stream, 2, more).await, "more events");
    assert_eq!(read_whole(store.as_ref(), &stream).await, original);

    // The version check comes first.
    let stale = command_events(&stream, command, &["1", "2"]);
    assert_conflict(store.append(&stream, 0, stale).await, &stream, 0, 2);

    // Later commands do not hide an earlier one.
    store
        .append(&stream, 2, command_events(&stream, Uuid::now_v7(), &["3"]))
        .await
        .unwrap();
    let retry = command_events(&stream, command, &["1", "2"]);
    assert_applied(
        store.append(&stream, 3, retry).await,
        "after another command",
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    assert_eq!(read_whole(store.as_ref(), &stream).await[..2], original[..]);
}

/// One command id on two streams is two commands: the derived event ids differ and both
/// appends are stored.
pub async fn a_command_id_on_another_stream_is_another_command(store: Arc<dyn EventStore>) {
    let first = fresh_stream("shared");
    let second = fresh_stream("shared");
    let command = Uuid::now_v7();
    let on_first = command_events(&first, command, &["a"]);
    let on_second = command_events(&second, command, &["b"]);
    assert_ne!(on_first[0].event_id, on_second[0].event_id);
    store.append(&first, 0, on_first).await.unwrap();
    store.append(&second, 0, on_second).await.unwrap();
    for (stream, tag) in [(&first, "a"), (&second, "b")] {
        let read = read_whole(store.as_ref(), stream).await;
        assert_eq!(payloads(&read), vec![Bytes::from(tag)]);
        assert_eq!(command_ids(&read), vec![Some(command)]);
        let of_command = store.read_command(stream, command).await.unwrap();
        assert_eq!(of_command, read, "read_command stays within its stream");
    }
}

/// A stored event id reused by another command, by the same command on another stream, or by an
/// event without a command is [`InvalidInput::DuplicateEventId`], not a retried command; nothing
/// of the batch is stored.
pub async fn a_stored_event_id_reused_outside_its_command_is_a_duplicate_event_id(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("reused");
    let other_stream = fresh_stream("reused");
    let command = Uuid::now_v7();
    store
        .append(&stream, 0, command_events(&stream, command, &["a"]))
        .await
        .unwrap();
    let taken = crate::command_event_id(&stream, command, 0);

    let mut other_command = event(b"b").for_command(&stream, Uuid::now_v7(), 0);
    other_command.event_id = taken;
    let mut plain = event(b"c");
    plain.event_id = taken;
    let mut same_command_elsewhere = event(b"d").for_command(&other_stream, command, 0);
    same_command_elsewhere.event_id = taken;
    for (target, expected, reuse) in [
        (&stream, 1, other_command),
        (&stream, 1, plain.clone()),
        (&other_stream, 0, plain),
        (&other_stream, 0, same_command_elsewhere),
    ] {
        let batch = vec![event(b"fresh"), reuse];
        assert_eq!(
            invalid(store.append(target, expected, batch).await),
            InvalidInput::DuplicateEventId(taken)
        );
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 1);
    assert_eq!(store.stream_version(&other_stream).await.unwrap(), 0);
    assert!(read_whole(store.as_ref(), &other_stream).await.is_empty());
}

/// `read_command` returns exactly the events of that command, in version order, whatever was
/// appended before or after it; nothing for an unknown command or stream.
pub async fn read_command_returns_exactly_that_commands_events_in_order(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("read-command");
    let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    store
        .append(&stream, 0, command_events(&stream, a, &["a0", "a1"]))
        .await
        .unwrap();
    store
        .append(&stream, 2, command_events(&stream, b, &["b0", "b1", "b2"]))
        .await
        .unwrap();
    store
        .append(&stream, 5, vec![event(b"plain")])
        .await
        .unwrap();
    store
        .append(&stream, 6, command_events(&stream, c, &["c0"]))
        .await
        .unwrap();
    let all = read_whole(store.as_ref(), &stream).await;

    let of_a = store.read_command(&stream, a).await.unwrap();
    assert_eq!(of_a, all[0..2], "the first command, followed by others");
    let of_b = store.read_command(&stream, b).await.unwrap();
    assert_eq!(of_b, all[2..5], "a command in the middle");
    assert_eq!(versions(&of_b), vec![3, 4, 5]);
    let of_c = store.read_command(&stream, c).await.unwrap();
    assert_eq!(of_c, all[6..7], "the last command");
    assert!(
        store
            .read_command(&stream, Uuid::now_v7())
            .await
            .unwrap()
            .is_empty(),
        "an unknown command stored nothing"
    );
    assert!(
        store
            .read_command(&fresh_stream("read-command"), a)
            .await
            .unwrap()
            .is_empty(),
        "a command stored nothing in a stream it never wrote to"
    );
}

/// Events that carry a command id but ids of their own (not derived from it) are still found
/// by `read_command`, by scanning the stream, in version order.
pub async fn read_command_finds_events_with_a_command_id_but_their_own_ids(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("scan");
    let command = Uuid::now_v7();
    let tagged = |tag: &str| {
        let mut e = event(tag);
        e.command_id = Some(command);
        e
    };
    store
        .append(&stream, 0, vec![event(b"before"), tagged("x0")])
        .await
        .unwrap();
    store
        .append(
            &stream,
            2,
            command_events(&stream, Uuid::now_v7(), &["other"]),
        )
        .await
        .unwrap();
    store
        .append(&stream, 3, vec![tagged("x1"), event(b"after")])
        .await
        .unwrap();
    let of_command = store.read_command(&stream, command).await.unwrap();
    assert_eq!(versions(&of_command), vec![2, 4]);
    assert_eq!(
        payloads(&of_command),
        vec![Bytes::from("x0"), Bytes::from("x1")]
    );
    assert!(of_command.iter().all(|e| e.command_id == Some(command)));
}

// ---------------------------------------------------------------------------------------------
// Snapshot store
// ---------------------------------------------------------------------------------------------

/// A snapshot record of `stream` at `version`, with recognisable fields.
pub fn snapshot(stream: &StreamId, version: u64, taken_at: DateTime<Utc>) -> SnapshotRecord {
    let bytes = Bytes::from(format!("state of {stream} at {version}").into_bytes());
    SnapshotRecord {
        stream: stream.clone(),
        version,
        last_event_id: Uuid::now_v7(),
        state_schema_version: 3,
        codec: "msgpack".into(),
        compression: "none".into(),
        // High bit set: must survive a backend's signed column.
        checksum: u64::MAX - version,
        uncompressed_size: bytes.len() as u64,
        stored_size: bytes.len() as u64,
        taken_at,
        bytes,
        base: None,
    }
}

async fn saved_versions(store: &dyn SnapshotStore, stream: &StreamId) -> Vec<u64> {
    store
        .list(stream, 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect()
}

async fn save_versions(
    store: &dyn SnapshotStore,
    stream: &StreamId,
    versions: impl IntoIterator<Item = u64>,
) {
    let t0 = now_micros();
    for v in versions {
        store
            .save(snapshot(stream, v, t0 + TimeDelta::seconds(v as i64)))
            .await
            .unwrap();
    }
}

/// A save with read-back answers exactly the record a load then returns, replacing one at the
/// same version; saves of many streams at once each get their own record back.
pub async fn a_save_with_read_back_returns_the_record_as_stored(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("snap-back");
    let mut record = snapshot(&stream, 7, now_micros());
    record.bytes = Bytes::from_static(b"first");
    record.stored_size = 5;
    assert_eq!(
        store.save_and_read_back(record.clone()).await.unwrap(),
        record
    );
    record.bytes = Bytes::from_static(b"second!");
    record.stored_size = 7;
    let stored = store.save_and_read_back(record.clone()).await.unwrap();
    assert_eq!(stored, record, "the replacing save's record comes back");
    assert_eq!(store.load_latest(&stream).await.unwrap(), Some(record));

    let records: Vec<SnapshotRecord> = (0..24u8)
        .map(|i| {
            let mut record = snapshot(&fresh_stream("snap-many"), 3, now_micros());
            record.bytes = Bytes::from(vec![i; usize::from(i) + 1]);
            record.stored_size = u64::from(i) + 1;
            record
        })
        .collect();
    let tasks: Vec<_> = records
        .iter()
        .map(|record| {
            let (store, record) = (Arc::clone(&store), record.clone());
            tokio::spawn(async move { store.save_and_read_back(record).await })
        })
        .collect();
    for (task, record) in tasks.into_iter().zip(&records) {
        assert_eq!(
            &task.await.unwrap().unwrap(),
            record,
            "each save gets its own record"
        );
    }
}

/// A saved snapshot loads back with every field as saved.
pub async fn a_saved_snapshot_loads_back_exactly(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("snap");
    let mut record = snapshot(&stream, 42, now_micros());
    record.state_schema_version = u32::MAX;
    record.compression = "zstd".into();
    record.uncompressed_size = 1 << 40;
    record.bytes = Bytes::from((0..=255u8).collect::<Vec<_>>());
    record.stored_size = 256;
    store.save(record.clone()).await.unwrap();
    assert_eq!(
        store.load_latest(&stream).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store.load_at_or_before_version(&stream, 42).await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        store
            .load_at_or_before_time(&stream, record.taken_at)
            .await
            .unwrap(),
        Some(record)
    );
}

/// `load_latest` returns the highest version, whatever order snapshots were saved in, and
/// `None` for a stream without snapshots.
pub async fn load_latest_returns_the_highest_version(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("latest");
    assert_eq!(store.load_latest(&stream).await.unwrap(), None);
    save_versions(store.as_ref(), &stream, [5, 2, 9, 7]).await;
    assert_eq!(
        store.load_latest(&stream).await.unwrap().unwrap().version,
        9
    );
}

/// `load_at_or_before_version` returns the newest snapshot whose version is not after the
/// bound, or `None` when every snapshot is after it.
pub async fn load_at_or_before_version_returns_the_newest_not_after_it(
    store: Arc<dyn SnapshotStore>,
) {
    let stream = fresh_stream("at-version");
    save_versions(store.as_ref(), &stream, [2, 5, 9]).await;
    for (bound, want) in [
        (0, None),
        (1, None),
        (2, Some(2)),
        (4, Some(2)),
        (5, Some(5)),
        (8, Some(5)),
        (9, Some(9)),
        (100, Some(9)),
        (u64::MAX, Some(9)),
    ] {
        let got = store
            .load_at_or_before_version(&stream, bound)
            .await
            .unwrap()
            .map(|r| r.version);
        assert_eq!(got, want, "at or before version {bound}");
    }
}

/// `load_at_or_before_time` returns the highest version among the snapshots taken at or before
/// the instant (even if a higher version was taken earlier than a lower one).
pub async fn load_at_or_before_time_returns_the_newest_version_taken_by_then(
    store: Arc<dyn SnapshotStore>,
) {
    let stream = fresh_stream("at-time");
    let t0 = now_micros();
    let at = |s: i64| t0 + TimeDelta::seconds(s);
    for (version, secs) in [(2, 0), (5, 10), (9, 20), (7, 5)] {
        store
            .save(snapshot(&stream, version, at(secs)))
            .await
            .unwrap();
    }
    let micro = TimeDelta::microseconds(1);
    for (t, want) in [
        (at(0) - micro, None),
        (at(0), Some(2)),
        (at(4), Some(2)),
        (at(5), Some(7)),
        (at(9), Some(7)),
        (at(10), Some(7)),
        (at(20), Some(9)),
        (at(1000), Some(9)),
    ] {
        let got = store
            .load_at_or_before_time(&stream, t)
            .await
            .unwrap()
            .map(|r| r.version);
        assert_eq!(got, want, "at or before {t}");
    }
}

/// Saving at a version that already has a snapshot replaces it.
pub async fn saving_again_at_a_version_replaces_the_snapshot(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("replace");
    let first = snapshot(&stream, 4, now_micros());
    store.save(first.clone()).await.unwrap();
    let mut second = snapshot(&stream, 4, now_micros() + TimeDelta::seconds(1));
    second.bytes = Bytes::from_static(b"newer state");
    second.stored_size = second.bytes.len() as u64;
    second.codec = "json".into();
    store.save(second.clone()).await.unwrap();
    assert_eq!(store.load_latest(&stream).await.unwrap(), Some(second));
    assert_eq!(store.stats(&stream).await.unwrap().count, 1);
}

/// `list(from, to)` returns the snapshots with `from <= version <= to`, newest first.
pub async fn list_returns_the_version_range_newest_first(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("list");
    save_versions(store.as_ref(), &stream, (1..=10).map(|v| v * 10)).await;
    let list = |from, to| {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        async move {
            store
                .list(&stream, from, to)
                .await
                .unwrap()
                .iter()
                .map(|r| r.version)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(30, 70).await, vec![70, 60, 50, 40, 30]);
    assert_eq!(list(31, 69).await, vec![60, 50, 40]);
    assert_eq!(list(70, 30).await, Vec::<u64>::new());
    assert_eq!(list(101, 200).await, Vec::<u64>::new());
    assert_eq!(
        list(0, u64::MAX).await,
        (1..=10).rev().map(|v| v * 10).collect::<Vec<_>>()
    );
    assert_eq!(list(100, 100).await, vec![100]);
}

/// `delete` removes the snapshot at one version (true), and reports false when there is none.
pub async fn delete_removes_exactly_one_version(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("delete");
    save_versions(store.as_ref(), &stream, [1, 5, 9]).await;
    assert!(store.delete(&stream, 5).await.unwrap());
    assert!(!store.delete(&stream, 5).await.unwrap());
    assert!(!store.delete(&stream, 6).await.unwrap());
    assert!(!store.delete(&fresh_stream("delete"), 1).await.unwrap());
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![9, 1]);
}

/// `delete_older_than(v)` removes every snapshot below `v` and reports how many.
pub async fn delete_older_than_removes_only_lower_versions(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("older");
    save_versions(store.as_ref(), &stream, 1..=10).await;
    assert_eq!(store.delete_older_than(&stream, 4).await.unwrap(), 3);
    assert_eq!(
        saved_versions(store.as_ref(), &stream).await,
        (4..=10).rev().collect::<Vec<_>>()
    );
    assert_eq!(store.delete_older_than(&stream, 4).await.unwrap(), 0);
    assert_eq!(store.delete_older_than(&stream, 0).await.unwrap(), 0);
    assert_eq!(store.delete_older_than(&stream, u64::MAX).await.unwrap(), 7);
    assert_eq!(store.load_latest(&stream).await.unwrap(), None);
}

/// `retain_newest(n)` keeps the newest `n` snapshots and deletes the rest; `n = 0` keeps one,
/// because retention never leaves an aggregate without its newest snapshot.
pub async fn retain_newest_keeps_the_newest_n_and_never_the_last_one(
    store: Arc<dyn SnapshotStore>,
) {
    let stream = fresh_stream("retain");
    let other = fresh_stream("retain");
    save_versions(store.as_ref(), &stream, 1..=10).await;
    save_versions(store.as_ref(), &other, 1..=3).await;
    assert_eq!(store.retain_newest(&stream, 3).await.unwrap(), 7);
    assert_eq!(
        saved_versions(store.as_ref(), &stream).await,
        vec![10, 9, 8]
    );
    assert_eq!(store.retain_newest(&stream, 5).await.unwrap(), 0);
    assert_eq!(store.retain_newest(&stream, 0).await.unwrap(), 2);
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![10]);
    assert_eq!(store.retain_newest(&stream, 0).await.unwrap(), 0);
    assert_eq!(
        store
            .retain_newest(&fresh_stream("retain"), 1)
            .await
            .unwrap(),
        0
    );
    assert_eq!(saved_versions(store.as_ref(), &other).await, vec![3, 2, 1]);
}

/// `stats` counts the kept snapshots, sums their stored sizes and reports the newest version
/// and the oldest and newest `taken_at`; a stream without snapshots has empty stats.
pub async fn stats_summarise_the_kept_snapshots(store: Arc<dyn SnapshotStore>) {
    let stream = fresh_stream("stats");
    assert_eq!(
        store.stats(&stream).await.unwrap(),
        SnapshotStats::default()
    );
    let t0 = now_micros();
    let mut total = 0;
    // taken_at deliberately not in version order.
    for (version, secs) in [(3, 30), (8, 10), (5, 50)] {
        let record = snapshot(&stream, version, t0 + TimeDelta::seconds(secs));
        total += record.stored_size;
        store.save(record).await.unwrap();
    }
    assert_eq!(
        store.stats(&stream).await.unwrap(),
        SnapshotStats {
            count: 3,
            total_bytes: total,
            newest_version: Some(8),
            oldest_taken_at: Some(t0 + TimeDelta::seconds(10)),
            newest_taken_at: Some(t0 + TimeDelta::seconds(50)),
        }
    );
    store.delete(&stream, 8).await.unwrap();
    let stats = store.stats(&stream).await.unwrap();
    assert_eq!((stats.count, stats.newest_version), (2, Some(5)));
}

/// Snapshots of one stream never show up for another, even one whose id extends it or one of
/// another type with the same id.
pub async fn snapshots_of_different_streams_are_independent(store: Arc<dyn SnapshotStore>) {
    let a = fresh_stream("iso");
    let longer = StreamId::new(a.aggregate_type(), format!("{}0", a.aggregate_id())).unwrap();
    let other_type = StreamId::new("iso-other", a.aggregate_id()).unwrap();
    save_versions(store.as_ref(), &a, [1, 2]).await;
    save_versions(store.as_ref(), &longer, [3]).await;
    save_versions(store.as_ref(), &other_type, [4, 5, 6]).await;
    assert_eq!(saved_versions(store.as_ref(), &a).await, vec![2, 1]);
    assert_eq!(
        store.load_latest(&longer).await.unwrap().unwrap().stream,
        longer
    );
    assert_eq!(store.stats(&other_type).await.unwrap().count, 3);
    assert_eq!(store.retain_newest(&other_type, 1).await.unwrap(), 2);
    assert_eq!(store.delete_older_than(&longer, 10).await.unwrap(), 1);
    assert_eq!(saved_versions(store.as_ref(), &a).await, vec![2, 1]);
}

/// A snapshot whose codec or compression name holds a NUL byte (which PostgreSQL text cannot
/// hold) or another control character is refused with
/// [`InvalidInput::NameHasControlCharacters`] and nothing is stored.
pub async fn a_snapshot_codec_or_compression_with_control_characters_is_refused(
    store: Arc<dyn SnapshotStore>,
) {
    let stream = fresh_stream("snap-ctl");
    for bad in ["msgpack\0", "\n", "z\u{9b}"] {
        let mut codec = snapshot(&stream, 1, now_micros());
        codec.codec = bad.into();
        assert_eq!(
            invalid(store.save(codec).await),
            InvalidInput::NameHasControlCharacters {
                what: "snapshot codec"
            },
            "{bad:?}"
        );
        let mut compression = snapshot(&stream, 1, now_micros());
        compression.compression = bad.into();
        assert_eq!(
            invalid(store.save_and_read_back(compression).await),
            InvalidInput::NameHasControlCharacters {
                what: "snapshot compression"
            },
            "{bad:?}"
        );
    }
    assert_eq!(store.load_latest(&stream).await.unwrap(), None);
    store
        .save(snapshot(&stream, 1, now_micros()))
        .await
        .unwrap();
    assert_eq!(saved_versions(store.as_ref(), &stream).await, vec![1]);
}

/// A snapshot over the size limit, at version 0, or whose `stored_size` disagrees with its
/// bytes is refused with a typed error, and nothing is stored.
pub async fn an_oversized_or_malformed_snapshot_is_refused_and_stores_nothing(
    store: Arc<dyn SnapshotStore>,
    limits: StoreLimits,
) {
    let stream = fresh_stream("snap-bad");
    let max = limits.max_snapshot_bytes;
    let mut big = snapshot(&stream, 1, now_micros());
    big.bytes = Bytes::from(vec![1u8; max + 1]);
    big.stored_size = big.bytes.len() as u64;
    assert_eq!(
        invalid(store.save(big).await),
        InvalidInput::PayloadTooLarge {
            what: "snapshot",
            size: max + 1,
            limit: max
        }
    );
    assert!(matches!(
        invalid(store.save(snapshot(&stream, 0, now_micros())).await),
        InvalidInput::BadVersion(_)
    ));
    let mut lying = snapshot(&stream, 2, now_micros());
    lying.stored_size += 1;
    assert!(matches!(
        invalid(store.save(lying).await),
        InvalidInput::BadVersion(_)
    ));
    assert_eq!(store.load_latest(&stream).await.unwrap(), None);
    assert_eq!(
        store.stats(&stream).await.unwrap(),
        SnapshotStats::default()
    );

    let mut exact = snapshot(&stream, 3, now_micros());
    exact.bytes = Bytes::from(vec![1u8; max]);
    exact.stored_size = max as u64;
    store.save(exact).await.unwrap();
    assert_eq!(
        store
            .load_latest(&stream)
            .await
            .unwrap()
            .unwrap()
            .bytes
            .len(),
        max
    );
}
