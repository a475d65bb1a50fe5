//! Backup and restore (`event_stores::backup`): round trips by scope, incremental and repeated
//! imports, every kind of damage refused with its typed error and nothing stored, and a
//! PostgreSQL round trip into a fresh database audited in SQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use event_stores::backup::{
    self, BackupError, BackupScope, ExportOptions, ExportReport, ImportOptions, ImportReport,
    Phase, Progress,
};
use event_stores::{
    EventMetadata, EventStore, InMemoryEventStore, InMemorySnapshotStore, InvalidInput, NewEvent,
    SnapshotBase, SnapshotRecord, SnapshotStore, StoreLimits, StreamId, TraceParent,
};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64;

fn stream(aggregate_type: &str, id: &str) -> StreamId {
    StreamId::new(aggregate_type, id).unwrap()
}

fn event(stream: &StreamId, n: u64) -> NewEvent {
    let mut event = NewEvent::new(
        if n.is_multiple_of(2) {
            "Deposited"
        } else {
            "Withdrew"
        },
        1 + (n % 3) as u32,
        format!("{stream} payload {n}").into_bytes(),
    );
    if n.is_multiple_of(3) {
        event = event.for_command(stream, Uuid::now_v7(), 0);
    }
    if !n.is_multiple_of(2) {
        event = event.with_metadata(EventMetadata {
            correlation_id: Some(Uuid::new_v4()),
            causation_id: Some(Uuid::new_v4()),
            trace_parent: Some(TraceParent::generate()),
        });
    }
    event
}

/// Appends `count` events to `stream` after its current version, one append of two at most so
/// that streams interleave in position order.
async fn append(store: &dyn EventStore, stream: &StreamId, count: u64) {
    let mut version = store.stream_version(stream).await.unwrap();
    let target = version + count;
    while version < target {
        let batch: Vec<NewEvent> = (version + 1..=(version + 2).min(target))
            .map(|n| event(stream, n))
            .collect();
        let receipt = store.append(stream, version, batch).await.unwrap();
        version = receipt.last_version;
    }
}

fn snapshot(
    stream: &StreamId,
    version: u64,
    last_event_id: Uuid,
    base: Option<&SnapshotRecord>,
) -> SnapshotRecord {
    let bytes = Bytes::from(format!("state of {stream} at {version}").into_bytes());
    SnapshotRecord {
        stream: stream.clone(),
        version,
        last_event_id,
        state_schema_version: 2,
        codec: "msgpack".into(),
        compression: "none".into(),
        checksum: xxh3_64(&bytes),
        uncompressed_size: bytes.len() as u64,
        stored_size: bytes.len() as u64,
        // Whole milliseconds: every store keeps them exactly.
        taken_at: DateTime::from_timestamp_millis(1_750_000_000_000 + version as i64).unwrap(),
        bytes,
        base: base.map(|b| SnapshotBase {
            version: b.version,
            checksum: b.checksum,
        }),
    }
}

async fn event_id_at(store: &dyn EventStore, stream: &StreamId, version: u64) -> Uuid {
    let query = event_stores::ReadQuery::after(version - 1).up_to_version(version);
    store.read_stream(stream, query).await.unwrap()[0].event_id
}

/// Saves a full snapshot at `full` and a delta on it at `delta`.
async fn snapshots_of(
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
    stream: &StreamId,
    full: u64,
    delta: u64,
) {
    let base = snapshot(stream, full, event_id_at(events, stream, full).await, None);
    snapshots.save(base.clone()).await.unwrap();
    let delta = snapshot(
        stream,
        delta,
        event_id_at(events, stream, delta).await,
        Some(&base),
    );
    snapshots.save(delta).await.unwrap();
}

const ACCOUNTS: [&str; 4] = ["a-1", "a-2", "a-3", "a-4"];
const CUSTOMERS: [&str; 2] = ["c-1", "c-2"];

/// Four accounts (7 events each) and two customers (3 each), interleaved, with a full and a
/// delta snapshot on `account/a-1`.
async fn seed(events: &dyn EventStore, snapshots: &dyn SnapshotStore) {
    for round in 0..4 {
        for id in ACCOUNTS {
            append(
                events,
                &stream("account", id),
                if round == 3 { 1 } else { 2 },
            )
            .await;
        }
        if round < 3 {
            for id in CUSTOMERS {
                append(events, &stream("customer", id), 1).await;
            }
        }
    }
    snapshots_of(events, snapshots, &stream("account", "a-1"), 3, 6).await;
}

/// An event without what the target assigns: stream, version, id, command id, type, schema
/// version, payload, metadata.
type EventRow = (
    StreamId,
    u64,
    Uuid,
    Option<Uuid>,
    String,
    u32,
    Bytes,
    EventMetadata,
);

/// What a store holds, in a comparable form: every event without `recorded_at` and position
/// (which a target assigns), and every snapshot.
#[derive(Debug, PartialEq)]
struct Dump {
    events: Vec<EventRow>,
    snapshots: Vec<SnapshotRecord>,
}

async fn dump(events: &dyn EventStore, snapshots: &dyn SnapshotStore) -> Dump {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = events.read_all(after, 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        all.extend(page);
    }
    let mut streams: Vec<StreamId> = all.iter().map(|e| e.stream.clone()).collect();
    streams.sort();
    streams.dedup();
    let mut records = Vec::new();
    for stream in &streams {
        let mut listed = snapshots.list(stream, 1, i64::MAX as u64).await.unwrap();
        listed.reverse();
        records.extend(listed);
    }
    let mut events: Vec<_> = all
        .into_iter()
        .map(|e| {
            (
                e.stream,
                e.version,
                e.event_id,
                e.command_id,
                e.event_type,
                e.schema_version,
                e.payload,
                e.metadata,
            )
        })
        .collect();
    events.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    Dump {
        events,
        snapshots: records,
    }
}

fn memory() -> (InMemoryEventStore, InMemorySnapshotStore) {
    (InMemoryEventStore::new(), InMemorySnapshotStore::new())
}

async fn export(
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
    scope: &BackupScope,
) -> (Vec<u8>, ExportReport) {
    let mut file = Vec::new();
    let report = backup::export(
        events,
        snapshots,
        scope,
        &mut file,
        &ExportOptions::default().page_size(5),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.bytes, file.len() as u64);
    (file, report)
}

async fn import(
    file: &[u8],
    events: &dyn EventStore,
    snapshots: &dyn SnapshotStore,
) -> Result<ImportReport, BackupError> {
    let options = ImportOptions {
        batch_events: 3,
        concurrency: 4,
        ..ImportOptions::default()
    };
    backup::import(|| Ok(file), events, snapshots, &options, |_| {}).await
}

#[tokio::test]
async fn a_whole_store_round_trips_into_memory_with_every_field_but_times_and_positions_kept() {
    let (events, snapshots) = memory();
    seed(&events, &snapshots).await;
    let mut exported = Vec::new();
    let mut file = Vec::new();
    let report = backup::export(
        &events,
        &snapshots,
        &BackupScope::all(),
        &mut file,
        &ExportOptions::default().page_size(4),
        |p| exported.push(p),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.streams, report.events, report.snapshots),
        (6, 34, 2)
    );
    assert!(
        exported
            .windows(2)
            .all(|w| w[0].events <= w[1].events && w[0].bytes <= w[1].bytes)
    );
    assert_eq!(
        exported.last().map(|p| (p.phase, p.events, p.bytes)),
        Some((Phase::Export, 34, file.len() as u64))
    );

    let (target, target_snapshots) = memory();
    let mut phases: Vec<Progress> = Vec::new();
    let imported = backup::import(
        || Ok(file.as_slice()),
        &target,
        &target_snapshots,
        &ImportOptions::default(),
        |p| phases.push(p),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            imported.events_written,
            imported.events_already_present,
            imported.snapshots_saved
        ),
        (34, 0, 2)
    );
    assert_eq!(
        (imported.streams_written, imported.streams_already_present),
        (6, 0)
    );
    assert_eq!(
        (
            imported.summary.events,
            imported.summary.streams,
            imported.summary.bytes
        ),
        (34, 6, file.len() as u64)
    );
    let last_of = |phase| {
        phases
            .iter()
            .rfind(|p| p.phase == phase)
            .map(|p| (p.events, p.snapshots))
    };
    assert_eq!(last_of(Phase::Verify), Some((34, 2)));
    assert_eq!(last_of(Phase::Write), Some((34, 2)));
    assert_eq!(
        dump(&target, &target_snapshots).await,
        dump(&events, &snapshots).await
    );

    let summary = backup::verify(file.as_slice(), |_| {}).await.unwrap();
    assert_eq!(summary, imported.summary);
    assert_eq!(summary.scope, BackupScope::all());
}

#[tokio::test]
async fn a_type_scope_exports_only_the_streams_of_that_type() {
    let (events, snapshots) = memory();
    seed(&events, &snapshots).await;
    let (file, report) = export(
        &events,
        &snapshots,
        &BackupScope::aggregate_type("customer"),
    )
    .await;
    assert_eq!((report.streams, report.events, report.snapshots), (2, 6, 0));

    let (target, target_snapshots) = memory();
    import(&file, &target, &target_snapshots).await.unwrap();
    let (source, copy) = (
        dump(&events, &snapshots).await,
        dump(&target, &target_snapshots).await,
    );
    let customers: Vec<_> = source
        .events
        .into_iter()
        .filter(|e| e.0.aggregate_type() == "customer")
        .collect();
    assert_eq!(copy.events, customers);
    assert!(copy.snapshots.is_empty());
}

#[tokio::test]
async fn an_id_scope_exports_only_those_streams_with_their_snapshots_and_refuses_ids_without_a_type()
 {
    let (events, snapshots) = memory();
    seed(&events, &snapshots).await;
    // A repeated id is exported once; an id with no events exports nothing.
    let scope = BackupScope::aggregate_type("account").with_ids(["a-1", "a-3", "a-1", "missing"]);
    let (file, report) = export(&events, &snapshots, &scope).await;
    assert_eq!(
        (report.streams, report.events, report.snapshots),
        (2, 14, 2)
    );

    let (target, target_snapshots) = memory();
    let imported = import(&file, &target, &target_snapshots).await.unwrap();
    assert_eq!(imported.summary.scope, scope);
    let (source, copy) = (
        dump(&events, &snapshots).await,
        dump(&target, &target_snapshots).await,
    );
    let wanted: Vec<_> = source
        .events
        .into_iter()
        .filter(|e| ["a-1", "a-3"].contains(&e.0.aggregate_id()))
        .collect();
    assert_eq!(copy.events, wanted);
    assert_eq!(copy.snapshots, source.snapshots);

    let err = backup::export(
        &events,
        &snapshots,
        &BackupScope::all().with_ids(["a-1"]),
        Vec::new(),
        &ExportOptions::default(),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BackupError::InvalidScope(_)), "{err}");
}

/// Two rounds of events around `cut`: three events per account before, three after (and a
/// stream that only exists after); a full snapshot at 2 and a delta on it at 5.
async fn two_rounds(events: &dyn EventStore, snapshots: &dyn SnapshotStore) -> DateTime<Utc> {
    for id in ACCOUNTS {
        append(events, &stream("account", id), 3).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for id in ACCOUNTS {
        append(events, &stream("account", id), 3).await;
    }
    append(events, &stream("account", "late"), 2).await;
    snapshots_of(events, snapshots, &stream("account", "a-2"), 2, 5).await;
    cut
}

#[tokio::test]
async fn time_range_exports_chain_into_incremental_imports_and_a_later_range_alone_is_a_gap_conflict()
 {
    let (events, snapshots) = memory();
    let cut = two_rounds(&events, &snapshots).await;
    let (before, early) = export(
        &events,
        &snapshots,
        &BackupScope::all().recorded_before(cut),
    )
    .await;
    let (after, late) = export(&events, &snapshots, &BackupScope::all().recorded_from(cut)).await;
    assert_eq!(
        (early.events, early.snapshots),
        (12, 1),
        "the full snapshot at 2 is before the cut"
    );
    // The delta at 5 comes with its base at 2, so the later file alone can decode it.
    assert_eq!((late.events, late.streams, late.snapshots), (14, 5, 2));

    let (target, target_snapshots) = memory();
    let err = import(&after, &target, &target_snapshots)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BackupError::Conflict { stream, stored_version: 0, first_in_file: 4, .. } if stream.aggregate_type() == "account"),
        "{err}"
    );
    assert_eq!(
        target.count_after(0).await.unwrap(),
        0,
        "a refused import stores nothing"
    );

    import(&before, &target, &target_snapshots).await.unwrap();
    let continued = import(&after, &target, &target_snapshots).await.unwrap();
    assert_eq!(
        (continued.events_written, continued.events_already_present),
        (14, 0)
    );
    assert_eq!(
        dump(&target, &target_snapshots).await,
        dump(&events, &snapshots).await
    );
}

#[tokio::test]
async fn importing_again_skips_what_is_there_and_resumes_a_stream_imported_half_way() {
    let (events, snapshots) = memory();
    let cut = two_rounds(&events, &snapshots).await;
    let (whole, _) = export(&events, &snapshots, &BackupScope::all()).await;
    let (first_half, _) = export(
        &events,
        &snapshots,
        &BackupScope::all().recorded_before(cut),
    )
    .await;

    // The target holds the first half, as after an import that stopped there.
    let (target, target_snapshots) = memory();
    import(&first_half, &target, &target_snapshots)
        .await
        .unwrap();
    let resumed = import(&whole, &target, &target_snapshots).await.unwrap();
    assert_eq!(
        (resumed.events_written, resumed.events_already_present),
        (14, 12)
    );
    assert_eq!(
        (resumed.streams_written, resumed.streams_already_present),
        (5, 0)
    );
    assert_eq!(
        dump(&target, &target_snapshots).await,
        dump(&events, &snapshots).await
    );

    let again = import(&whole, &target, &target_snapshots).await.unwrap();
    assert_eq!(
        (again.events_written, again.events_already_present),
        (0, 26)
    );
    assert_eq!(again.streams_already_present, 5);
    assert_eq!(
        dump(&target, &target_snapshots).await,
        dump(&events, &snapshots).await
    );
}

#[tokio::test]
async fn a_stream_holding_other_events_is_a_conflict_and_nothing_of_the_file_is_imported() {
    let (events, snapshots) = memory();
    seed(&events, &snapshots).await;
    let (file, _) = export(&events, &snapshots, &BackupScope::all()).await;

    let (target, target_snapshots) = memory();
    let taken = stream("account", "a-2");
    append(&target, &taken, 2).await;
    let before = dump(&target, &target_snapshots).await;
    let err = import(&file, &target, &target_snapshots).await.unwrap_err();
    match &err {
        BackupError::Conflict {
            stream,
            stored_version,
            first_in_file,
            ..
        } => {
            assert_eq!((stream, *stored_version, *first_in_file), (&taken, 2, 1));
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(err.to_string().contains("account/a-2"), "{err}");
    assert_eq!(
        dump(&target, &target_snapshots).await,
        before,
        "the target is unchanged"
    );
}

// ---- Damage: the file is taken apart and put together again with one thing wrong. ----

/// One raw frame: length, checksum, body.
#[derive(Clone)]
struct Raw {
    checksum: u64,
    body: Vec<u8>,
}

fn frames_of(file: &[u8]) -> Vec<Raw> {
    let mut data = zstd::decode_all(&file[12..]).unwrap().into_iter();
    let mut frames = Vec::new();
    while data.len() > 0 {
        let mut take = |n: usize| data.by_ref().take(n).collect::<Vec<u8>>();
        let len = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
        let checksum = u64::from_le_bytes(take(8).try_into().unwrap());
        frames.push(Raw {
            checksum,
            body: take(len),
        });
    }
    frames
}

fn file_of(frames: &[Raw]) -> Vec<u8> {
    let mut data = Vec::new();
    for frame in frames {
        data.extend_from_slice(&(frame.body.len() as u32).to_le_bytes());
        data.extend_from_slice(&frame.checksum.to_le_bytes());
        data.extend_from_slice(&frame.body);
    }
    let mut file = b"ESBACKUP".to_vec();
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend(zstd::encode_all(data.as_slice(), 3).unwrap());
    file
}

#[derive(Deserialize)]
enum Kind {
    Header(IgnoredAny),
    Event(EventKey),
    Snapshot(IgnoredAny),
    Trailer(IgnoredAny),
}

#[derive(Deserialize)]
struct EventKey {
    aggregate_id: String,
    version: u64,
}

fn kind(frame: &Raw) -> Kind {
    rmp_serde::from_slice(&frame.body).unwrap()
}

/// A seeded store's backup, and an empty target.
async fn damage_fixture() -> (Vec<u8>, InMemoryEventStore, InMemorySnapshotStore) {
    let (events, snapshots) = memory();
    seed(&events, &snapshots).await;
    let (file, _) = export(&events, &snapshots, &BackupScope::all()).await;
    let (target, target_snapshots) = memory();
    (file, target, target_snapshots)
}

/// Imports `file` into the empty target, expects a refusal, and checks nothing was stored.
async fn refused(
    file: &[u8],
    target: &InMemoryEventStore,
    snapshots: &InMemorySnapshotStore,
) -> BackupError {
    let err = import(file, target, snapshots)
        .await
        .expect_err("a damaged file must be refused");
    assert_eq!(
        target.count_after(0).await.unwrap(),
        0,
        "nothing stored after: {err}"
    );
    let any = stream("account", "a-1");
    assert!(
        snapshots.load_latest(&any).await.unwrap().is_none(),
        "no snapshot stored after: {err}"
    );
    assert!(
        backup::verify(file, |_| {}).await.is_err(),
        "verify refuses it too"
    );
    err
}

#[tokio::test]
async fn a_flipped_byte_inside_a_frame_is_a_checksum_error_naming_the_frame_and_stores_nothing() {
    let (file, target, snapshots) = damage_fixture().await;
    let mut frames = frames_of(&file);
    // Taken apart and put together unchanged, the file still imports: the damage below is
    // what the refusal is about.
    let (copy, copy_snapshots) = memory();
    import(&file_of(&frames), &copy, &copy_snapshots)
        .await
        .unwrap();
    let middle = frames.len() / 2;
    let body = &mut frames[middle].body;
    let at = body.len() / 2;
    body[at] ^= 0x20;
    let err = refused(&file_of(&frames), &target, &snapshots).await;
    assert!(
        matches!(err, BackupError::Checksum { frame } if frame == middle as u64),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("frame {middle}")),
        "{err}"
    );
}

#[tokio::test]
async fn a_flipped_byte_anywhere_in_the_compressed_file_is_refused_without_panicking() {
    let (file, target, snapshots) = damage_fixture().await;
    // The 12 bytes of magic and version, then one zstd stream.
    let content = zstd::stream::decode_all(&file[12..]).unwrap();
    let (mut flips, mut harmless) = (0, 0);
    for at in (0..file.len()).step_by(7) {
        let mut damaged = file.clone();
        damaged[at] ^= 0x01;
        flips += 1;
        // A few bits of a zstd stream carry nothing (padding of an entropy-coded stream): the
        // flip leaves the content as it was, so there is nothing to refuse.
        if at >= 12 && zstd::stream::decode_all(&damaged[12..]).is_ok_and(|c| c == content) {
            harmless += 1;
            continue;
        }
        let err = refused(&damaged, &target, &snapshots).await;
        assert!(
            matches!(
                err,
                BackupError::BadMagic
                    | BackupError::UnsupportedVersion { .. }
                    | BackupError::Checksum { .. }
                    | BackupError::Decompress { .. }
                    | BackupError::Truncated { .. }
                    | BackupError::FrameTooLarge { .. }
                    | BackupError::Malformed { .. }
            ),
            "byte {at}: {err}"
        );
    }
    assert!(
        harmless * 20 < flips,
        "{harmless} of {flips} flips left the content unchanged"
    );
}

#[tokio::test]
async fn a_truncated_file_is_refused_as_truncated_wherever_it_was_cut() {
    let (file, target, snapshots) = damage_fixture().await;
    for len in 1..file.len() {
        let err = refused(&file[..len], &target, &snapshots).await;
        assert!(
            matches!(err, BackupError::Truncated { .. }),
            "cut at {len} of {}: {err}",
            file.len()
        );
    }
    assert!(matches!(
        refused(&[], &target, &snapshots).await,
        BackupError::BadMagic
    ));
}

#[tokio::test]
async fn a_file_of_another_kind_is_bad_magic_and_a_future_format_is_unsupported() {
    let (file, target, snapshots) = damage_fixture().await;
    let mut other = file.clone();
    other[..8].copy_from_slice(b"PK\x03\x04zip!");
    assert!(matches!(
        refused(&other, &target, &snapshots).await,
        BackupError::BadMagic
    ));

    let mut future = file.clone();
    future[8..12].copy_from_slice(&2u32.to_le_bytes());
    let err = refused(&future, &target, &snapshots).await;
    assert!(
        matches!(
            err,
            BackupError::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("version 2"), "{err}");
}

#[tokio::test]
async fn a_missing_event_is_a_not_contiguous_error_and_a_missing_snapshot_a_trailer_mismatch() {
    let (file, target, snapshots) = damage_fixture().await;
    let frames = frames_of(&file);
    let dropped = frames
        .iter()
        .position(|f| matches!(kind(f), Kind::Event(EventKey { ref aggregate_id, version: 4 }) if aggregate_id == "a-3"))
        .unwrap();
    let mut gap = frames.clone();
    gap.remove(dropped);
    let err = refused(&file_of(&gap), &target, &snapshots).await;
    assert!(
        matches!(&err, BackupError::NotContiguous { stream, expected: 4, found: 5 } if stream.aggregate_id() == "a-3"),
        "{err}"
    );

    // Every frame intact and every stream contiguous: only the trailer tells.
    let last_snapshot = frames
        .iter()
        .rposition(|f| matches!(kind(f), Kind::Snapshot(_)))
        .unwrap();
    let mut short = frames.clone();
    short.remove(last_snapshot);
    let err = refused(&file_of(&short), &target, &snapshots).await;
    assert!(
        matches!(&err, BackupError::Malformed { reason, .. } if reason.contains("trailer")),
        "{err}"
    );

    // Two events swapped: each intact, but out of order.
    let mut swapped = frames.clone();
    swapped.swap(1, 2);
    assert!(
        matches!(kind(&frames[1]), Kind::Event(_)) && matches!(kind(&frames[2]), Kind::Event(_))
    );
    let err = refused(&file_of(&swapped), &target, &snapshots).await;
    assert!(
        matches!(
            err,
            BackupError::NotContiguous { .. } | BackupError::Malformed { .. }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_corrupt_length_or_an_undecodable_body_is_refused_without_a_huge_allocation() {
    let (file, target, snapshots) = damage_fixture().await;
    let frames = frames_of(&file);

    // A length of 4 GiB: refused from the length alone.
    let mut data = b"ESBACKUP".to_vec();
    data.extend_from_slice(&1u32.to_le_bytes());
    let mut inner = Vec::new();
    for frame in &frames[..1] {
        inner.extend_from_slice(&(frame.body.len() as u32).to_le_bytes());
        inner.extend_from_slice(&frame.checksum.to_le_bytes());
        inner.extend_from_slice(&frame.body);
    }
    inner.extend_from_slice(&u32::MAX.to_le_bytes());
    inner.extend_from_slice(&[0; 8]);
    data.extend(zstd::encode_all(inner.as_slice(), 3).unwrap());
    let err = refused(&data, &target, &snapshots).await;
    assert!(
        matches!(
            err,
            BackupError::FrameTooLarge {
                frame: 1,
                len: 4_294_967_295,
                ..
            }
        ),
        "{err}"
    );

    // A body with a valid checksum that is not a frame.
    let mut garbage = frames.clone();
    garbage[3].body = b"\xc1 not msgpack".to_vec();
    garbage[3].checksum = xxh3_64(&garbage[3].body);
    let err = refused(&file_of(&garbage), &target, &snapshots).await;
    assert!(
        matches!(err, BackupError::Malformed { frame: 3, .. }),
        "{err}"
    );

    // Data after the trailer.
    let mut longer = frames.clone();
    longer.push(frames[1].clone());
    let err = refused(&file_of(&longer), &target, &snapshots).await;
    assert!(
        matches!(&err, BackupError::Malformed { reason, .. } if reason.contains("after the trailer")),
        "{err}"
    );
}

// ---- Content the stores refuse: every frame intact, one event or snapshot bad. ----

/// A frame body that can be changed and encoded again (the header is never changed).
#[derive(Serialize, Deserialize)]
enum Editable {
    Event(EventBody),
    Snapshot(SnapshotBody),
    Trailer(TrailerBody),
}

#[derive(Serialize, Deserialize)]
struct EventBody {
    aggregate_type: String,
    aggregate_id: String,
    version: u64,
    event_id: Uuid,
    command_id: Option<Uuid>,
    event_type: String,
    schema_version: u32,
    payload: Bytes,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    trace_parent: Option<String>,
    recorded_at_us: i64,
    position: u64,
}

#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    aggregate_type: String,
    aggregate_id: String,
    version: u64,
    last_event_id: Uuid,
    state_schema_version: u32,
    codec: String,
    compression: String,
    checksum: u64,
    uncompressed_size: u64,
    taken_at_us: i64,
    bytes: Bytes,
    base: Option<(u64, u64)>,
}

#[derive(Serialize, Deserialize)]
struct TrailerBody {
    frames: u64,
    streams: u64,
    events: u64,
    snapshots: u64,
    running_checksum: u64,
}

fn editable(frame: &Raw) -> Editable {
    rmp_serde::from_slice(&frame.body).unwrap()
}

/// The file of `frames` with frame `at` changed by `edit`, its checksum and the trailer's
/// running checksum recomputed: every frame intact, only the content wrong.
fn edited(frames: &[Raw], at: usize, edit: impl FnOnce(&mut Editable)) -> Vec<u8> {
    let mut frames = frames.to_vec();
    let mut body = editable(&frames[at]);
    edit(&mut body);
    frames[at].body = rmp_serde::to_vec_named(&body).unwrap();
    frames[at].checksum = xxh3_64(&frames[at].body);
    let (trailer, before) = frames.split_last_mut().unwrap();
    let checksums: Vec<u8> = before
        .iter()
        .flat_map(|frame| frame.checksum.to_le_bytes())
        .collect();
    let Editable::Trailer(mut body) = editable(trailer) else {
        panic!("the last frame is the trailer")
    };
    body.running_checksum = xxh3_64(&checksums);
    trailer.body = rmp_serde::to_vec_named(&Editable::Trailer(body)).unwrap();
    trailer.checksum = xxh3_64(&trailer.body);
    file_of(&frames)
}

/// The index of the last frame of the kind `is`.
fn last_frame(frames: &[Raw], is: fn(&Editable) -> bool) -> usize {
    frames
        .iter()
        .rposition(|frame| rmp_serde::from_slice::<Editable>(&frame.body).is_ok_and(|f| is(&f)))
        .unwrap()
}

fn is_event(frame: &Editable) -> bool {
    matches!(frame, Editable::Event(_))
}

fn is_snapshot(frame: &Editable) -> bool {
    matches!(frame, Editable::Snapshot(_))
}

#[tokio::test]
async fn an_event_type_or_snapshot_name_with_control_characters_is_refused_with_its_typed_error_and_stores_nothing()
 {
    let (file, target, snapshots) = damage_fixture().await;
    let frames = frames_of(&file);
    // Edited and written again unchanged, the file still imports.
    let (copy, copy_snapshots) = memory();
    let unchanged = edited(&frames, last_frame(&frames, is_event), |_| {});
    import(&unchanged, &copy, &copy_snapshots).await.unwrap();

    // The last event: every stream before it would be stored before the store refused it.
    let at = last_frame(&frames, is_event);
    let file = edited(&frames, at, |frame| {
        if let Editable::Event(event) = frame {
            event.event_type.push('\n');
        }
    });
    let err = refused(&file, &target, &snapshots).await;
    assert!(
        matches!(
            err,
            BackupError::InvalidInput {
                frame,
                source: InvalidInput::NameHasControlCharacters { what: "event type" },
            } if frame == at as u64
        ),
        "{err}"
    );

    let at = last_frame(&frames, is_snapshot);
    for (what, name) in [
        ("snapshot codec", "msg\u{1b}pack"),
        ("snapshot compression", "none\0"),
    ] {
        let file = edited(&frames, at, |frame| {
            if let Editable::Snapshot(snapshot) = frame {
                match what {
                    "snapshot codec" => snapshot.codec = name.into(),
                    _ => snapshot.compression = name.into(),
                }
            }
        });
        let err = refused(&file, &target, &snapshots).await;
        assert!(
            matches!(
                &err,
                BackupError::InvalidInput {
                    frame,
                    source: InvalidInput::NameHasControlCharacters { what: refused },
                } if *frame == at as u64 && *refused == what
            ),
            "{what}: {err}"
        );
    }
}

#[tokio::test]
async fn an_event_id_the_file_holds_twice_is_refused_with_its_typed_error_and_stores_nothing() {
    let (file, target, snapshots) = damage_fixture().await;
    let frames = frames_of(&file);
    let Editable::Event(first) = editable(&frames[1]) else {
        panic!("events follow the header")
    };
    let at = last_frame(&frames, is_event);
    let file = edited(&frames, at, |frame| {
        if let Editable::Event(event) = frame {
            assert_ne!(event.aggregate_id, first.aggregate_id, "another stream");
            event.event_id = first.event_id;
        }
    });
    let err = refused(&file, &target, &snapshots).await;
    assert!(
        matches!(
            err,
            BackupError::InvalidInput {
                frame,
                source: InvalidInput::DuplicateEventId(id),
            } if frame == at as u64 && id == first.event_id
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_payload_or_snapshot_above_the_targets_limits_is_refused_before_anything_is_stored() {
    let (file, _, _) = damage_fixture().await;
    let frames = frames_of(&file);
    let limits = StoreLimits::default();

    // A payload one byte above the stores' default limit, in the file's last event.
    let at = last_frame(&frames, is_event);
    let big = edited(&frames, at, |frame| {
        if let Editable::Event(event) = frame {
            event.payload = vec![7; limits.max_event_payload_bytes + 1].into();
        }
    });
    let (target, target_snapshots) = memory();
    let err = import(&big, &target, &target_snapshots)
        .await
        .expect_err("refused");
    assert!(
        matches!(
            err,
            BackupError::InvalidInput {
                frame,
                source: InvalidInput::PayloadTooLarge { what: "event payload", .. },
            } if frame == at as u64
        ),
        "{err}"
    );
    assert_eq!(target.count_after(0).await.unwrap(), 0, "nothing stored");
    backup::verify(big.as_slice(), |_| {})
        .await
        .expect("sizes are the target's limits, not the file's");

    // Snapshots larger than a target takes, told through the options.
    let small = StoreLimits {
        max_snapshot_bytes: 16,
        ..limits
    };
    let (target, target_snapshots) = (
        InMemoryEventStore::with_limits(small),
        InMemorySnapshotStore::with_limits(small),
    );
    let options = ImportOptions {
        limits: small,
        ..ImportOptions::default()
    };
    let err = backup::import(
        || Ok(file.as_slice()),
        &target,
        &target_snapshots,
        &options,
        |_| {},
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(
            err,
            BackupError::InvalidInput {
                source: InvalidInput::PayloadTooLarge {
                    what: "snapshot",
                    limit: 16,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(target.count_after(0).await.unwrap(), 0, "nothing stored");
}

/// An event store that records the size (events, payload bytes) of every append it is sent
/// and counts the events stored, and passes everything on to `inner`.
struct Recording<S> {
    inner: S,
    appends: std::sync::Mutex<Vec<(usize, usize)>>,
    stored: std::sync::atomic::AtomicU64,
}

impl<S> Recording<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            appends: std::sync::Mutex::default(),
            stored: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The appends sent since the last call: (events, payload bytes) each.
    fn take_appends(&self) -> Vec<(usize, usize)> {
        std::mem::take(&mut *self.appends.lock().unwrap())
    }

    /// The events stored through this store so far.
    fn stored(&self) -> u64 {
        self.stored.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl<S: EventStore> EventStore for Recording<S> {
    async fn append(
        &self,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
    ) -> event_stores::StoreResult<event_stores::AppendReceipt> {
        let bytes = events.iter().map(|e| e.payload.len()).sum();
        let count = events.len();
        self.appends.lock().unwrap().push((count, bytes));
        let receipt = self.inner.append(stream, expected_version, events).await?;
        self.stored
            .fetch_add(count as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(receipt)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        query: event_stores::ReadQuery,
    ) -> event_stores::StoreResult<Vec<event_stores::RecordedEvent>> {
        self.inner.read_stream(stream, query).await
    }

    async fn stream_version(&self, stream: &StreamId) -> event_stores::StoreResult<u64> {
        self.inner.stream_version(stream).await
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> event_stores::StoreResult<Vec<event_stores::RecordedEvent>> {
        self.inner.read_all(after_position, limit).await
    }

    async fn read_command(
        &self,
        stream: &StreamId,
        command_id: Uuid,
    ) -> event_stores::StoreResult<Vec<event_stores::RecordedEvent>> {
        self.inner.read_command(stream, command_id).await
    }
}

/// Limits of a target smaller than the import's batch options: 100 events and 2 500 payload
/// bytes per append.
const SMALL_APPENDS: StoreLimits = StoreLimits {
    max_event_payload_bytes: 1_000,
    max_events_per_append: 100,
    max_append_bytes: 2_500,
    max_snapshot_bytes: 64 * 1024,
};

/// `count` events of `stream` after its current version, each with a payload of `size` bytes,
/// in appends of at most 100.
async fn append_sized(store: &dyn EventStore, stream: &StreamId, count: u64, size: usize) {
    let mut version = store.stream_version(stream).await.unwrap();
    let target = version + count;
    while version < target {
        let batch: Vec<NewEvent> = (version + 1..=(version + 100).min(target))
            .map(|n| {
                let mut payload = vec![b'.'; size];
                let tag = n.to_le_bytes();
                let tagged = tag.len().min(size);
                payload[..tagged].copy_from_slice(&tag[..tagged]);
                NewEvent {
                    payload: payload.into(),
                    ..event(stream, n)
                }
            })
            .collect();
        let receipt = store.append(stream, version, batch).await.unwrap();
        version = receipt.last_version;
    }
}

/// A store whose streams need more than one append of [`SMALL_APPENDS`] each, by their event
/// count: 1 050 events of 8 bytes (with a snapshot at the last) and 30 of 8 bytes.
async fn many_events() -> (InMemoryEventStore, InMemorySnapshotStore) {
    let (events, snapshots) = memory();
    let many = stream("account", "many");
    append_sized(&events, &many, 1_050, 8).await;
    append_sized(&events, &stream("account", "few"), 30, 8).await;
    let last = event_id_at(&events, &many, 1_050).await;
    snapshots
        .save(snapshot(&many, 1_050, last, None))
        .await
        .unwrap();
    (events, snapshots)
}

/// A store whose streams need more than one append of [`SMALL_APPENDS`] each, by their payload
/// bytes: 20 events of 600 bytes and 9 of 400 bytes.
async fn large_events() -> (InMemoryEventStore, InMemorySnapshotStore) {
    let (events, snapshots) = memory();
    append_sized(&events, &stream("document", "large"), 20, 600).await;
    append_sized(&events, &stream("document", "medium"), 9, 400).await;
    (events, snapshots)
}

/// Batch options far above [`SMALL_APPENDS`]: 10 000 events per append (and so megabytes of
/// these payloads), told the target's limits.
fn large_batches() -> ImportOptions {
    ImportOptions {
        batch_events: 10_000,
        concurrency: 4,
        limits: SMALL_APPENDS,
        ..ImportOptions::default()
    }
}

/// Imports `file` with `options` into `target`, which enforces [`SMALL_APPENDS`]: everything
/// is written (`events` events, `snapshots` snapshots), each append within the limits and the
/// largest ones as large as `fullest` (events, bytes); returns what was appended.
async fn import_within_limits<S: EventStore>(
    file: &[u8],
    target: &Recording<S>,
    target_snapshots: &dyn SnapshotStore,
    options: &ImportOptions,
    (events, snapshots): (u64, u64),
    fullest: (usize, usize),
) -> Vec<(usize, usize)> {
    let report = match backup::import(|| Ok(file), target, target_snapshots, options, |_| {}).await
    {
        Ok(report) => report,
        Err(err) => panic!(
            "refused after {} of its {events} events were stored: {err}",
            target.stored()
        ),
    };
    assert_eq!(
        (report.events_written, report.snapshots_saved),
        (events, snapshots)
    );
    let appends = target.take_appends();
    assert!(
        appends.iter().all(|&(events, bytes)| {
            (1..=SMALL_APPENDS.max_events_per_append).contains(&events)
                && bytes <= SMALL_APPENDS.max_append_bytes
        }),
        "every append within the target's limits: {appends:?}"
    );
    assert_eq!(
        appends.iter().map(|a| a.0 as u64).sum::<u64>(),
        events,
        "{appends:?}"
    );
    assert!(
        appends.contains(&fullest),
        "the limits are used, not undercut: {appends:?}"
    );
    appends
}

#[tokio::test]
async fn an_import_with_more_events_per_batch_than_the_target_takes_in_an_append_cuts_its_batches()
{
    let (events, snapshots) = many_events().await;
    let (file, _) = export(&events, &snapshots, &BackupScope::all()).await;

    let target = Recording::new(InMemoryEventStore::with_limits(SMALL_APPENDS));
    let target_snapshots = InMemorySnapshotStore::with_limits(SMALL_APPENDS);
    import_within_limits(
        &file,
        &target,
        &target_snapshots,
        &large_batches(),
        (1_080, 1),
        (100, 800),
    )
    .await;
    assert_eq!(
        dump(&target, &target_snapshots).await,
        dump(&events, &snapshots).await
    );

    // Batches smaller than the limits stay as they are.
    let target = Recording::new(InMemoryEventStore::with_limits(SMALL_APPENDS));
    let options = ImportOptions {
        batch_events: 3,
        ..large_batches()
    };
    let appends = import_within_limits(
        &file,
        &target,
        &InMemorySnapshotStore::with_limits(SMALL_APPENDS),
        &options,
        (1_080, 1),
        (3, 24),
    )
    .await;
    assert!(
        appends.iter().all(|&(events, _)| events <= 3),
        "{appends:?}"
    );
}

#[tokio::test]
async fn an_import_with_more_bytes_per_batch_than_the_target_takes_in_an_append_cuts_its_batches() {
    let (events, snapshots) = large_events().await;
    let (file, _) = export(&events, &snapshots, &BackupScope::all()).await;

    let target = Recording::new(InMemoryEventStore::with_limits(SMALL_APPENDS));
    let target_snapshots = InMemorySnapshotStore::with_limits(SMALL_APPENDS);
    let appends = import_within_limits(
        &file,
        &target,
        &target_snapshots,
        &large_batches(),
        (29, 0),
        (4, 2_400),
    )
    .await;
    assert!(appends.contains(&(6, 2_400)), "{appends:?}");
    assert_eq!(
        dump(&target, &target_snapshots).await,
        dump(&events, &snapshots).await
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;
    use event_stores::StoreLimits;
    use event_stores::testing::fresh_database;
    use sqlx::PgPool;

    /// Count and digest of the rows as stored, except what a target assigns itself
    /// (`recorded_at`, `position`, `tx`).
    async fn audit(pool: &PgPool) -> (i64, String, i64, String) {
        let (events, event_digest): (i64, String) = sqlx::query_as(
            "SELECT count(*), coalesce(md5(string_agg((to_jsonb(e) - 'recorded_at' - 'position' - 'tx')::text, ',' \
             ORDER BY aggregate_type, aggregate_id, version)), '') FROM events e",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        let (snapshots, snapshot_digest): (i64, String) = sqlx::query_as(
            "SELECT count(*), coalesce(md5(string_agg(to_jsonb(s)::text, ',' \
             ORDER BY aggregate_type, aggregate_id, version)), '') FROM snapshots s",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        (events, event_digest, snapshots, snapshot_digest)
    }

    async fn event_ids(pool: &PgPool) -> Vec<Uuid> {
        sqlx::query_scalar(
            "SELECT event_id FROM events ORDER BY aggregate_type, aggregate_id, version",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_postgres_store_round_trips_into_a_fresh_database_and_into_memory_with_the_same_rows()
    {
        let Some(source_db) = fresh_database().await else {
            return;
        };
        let Some(target_db) = fresh_database().await else {
            return;
        };
        let (events, snapshots) = source_db.stores(StoreLimits::default()).await.unwrap();
        seed(&events, &snapshots).await;
        let (file, report) = export(&events, &snapshots, &BackupScope::all()).await;
        assert_eq!((report.events, report.snapshots), (34, 2));

        let (target, target_snapshots) = target_db.stores(StoreLimits::default()).await.unwrap();
        let imported = import(&file, &target, &target_snapshots).await.unwrap();
        assert_eq!(imported.events_written, 34);
        let source_rows = audit(events.pool()).await;
        assert_eq!(source_rows.0, 34);
        assert_eq!(
            audit(target.pool()).await,
            source_rows,
            "the same rows on both sides"
        );
        assert_eq!(
            event_ids(target.pool()).await,
            event_ids(events.pool()).await
        );

        let (memory_events, memory_snapshots) = memory();
        import(&file, &memory_events, &memory_snapshots)
            .await
            .unwrap();
        let source = dump(&events, &snapshots).await;
        assert_eq!(dump(&target, &target_snapshots).await, source);
        assert_eq!(dump(&memory_events, &memory_snapshots).await, source);

        // Into PostgreSQL again: everything is there already; a conflicting stream refuses all.
        let again = import(&file, &target, &target_snapshots).await.unwrap();
        assert_eq!(
            (again.events_written, again.events_already_present),
            (0, 34)
        );
        let Some(other_db) = fresh_database().await else {
            return;
        };
        let (other, other_snapshots) = other_db.stores(StoreLimits::default()).await.unwrap();
        append(&other, &stream("customer", "c-2"), 1).await;
        let err = import(&file, &other, &other_snapshots).await.unwrap_err();
        assert!(matches!(err, BackupError::Conflict { .. }), "{err}");
        assert_eq!(audit(other.pool()).await.0, 1, "nothing imported");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_import_into_postgres_with_batches_above_its_append_limits_cuts_them_to_fit() {
        let Some(target_db) = fresh_database().await else {
            return;
        };
        let (target, target_snapshots) = target_db.stores(SMALL_APPENDS).await.unwrap();
        assert_eq!(target.limits(), SMALL_APPENDS);
        let target = Recording::new(target);
        for (source, counts, fullest) in [
            (many_events().await, (1_080, 1), (100, 800)),
            (large_events().await, (29, 0), (4, 2_400)),
        ] {
            let (events, snapshots) = source;
            let (file, _) = export(&events, &snapshots, &BackupScope::all()).await;
            let written = target.stored();
            import_within_limits(
                &file,
                &target,
                &target_snapshots,
                &large_batches(),
                counts,
                fullest,
            )
            .await;
            assert_eq!(target.stored(), written + counts.0);
        }
        assert_eq!(audit(target.inner.pool()).await.0, 1_109);
    }
}
