//! Contract cases for reminders: stored with a command's events in one transaction, changed by
//! schedule / cancel / fired, and found by due time.
//!
//! Cases touch only fresh streams and filter `due_reminders` to their own streams; the cases
//! that depend on what else is due use due times in a window of their own, centuries in the
//! past, where no other case (or application) schedules anything.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::{assert_conflict, event, fresh_stream, invalid, now_micros, numbered_events};
use crate::reminder::MAX_REMINDER_PERIOD_MS;
use crate::{
    DueReminders, EventStore, InvalidInput, MAX_REMINDER_NAME_LEN, NewEvent, ReminderChange,
    ReminderState, StoreError, StoreLimits, StoredReminder, StreamId,
};

/// A `Schedule` of `name` with a fresh id.
pub fn schedule(
    name: &str,
    due_at: DateTime<Utc>,
    period_ms: Option<u64>,
    payload: &[u8],
) -> ReminderChange {
    ReminderChange::Schedule {
        name: name.into(),
        reminder_id: Uuid::now_v7(),
        due_at,
        period_ms,
        payload: Bytes::copy_from_slice(payload),
    }
}

fn cancel(name: &str) -> ReminderChange {
    ReminderChange::Cancel { name: name.into() }
}

fn fired(
    reminder: &StoredReminder,
    fired_at: DateTime<Utc>,
    next_due_at: Option<DateTime<Utc>>,
    error: Option<&str>,
) -> ReminderChange {
    ReminderChange::Fired {
        name: reminder.name.clone(),
        reminder_id: reminder.reminder_id,
        due_at: reminder.due_at,
        fired_at,
        next_due_at,
        error: error.map(str::to_owned),
    }
}

/// The reminder as `change` (a `Schedule`) stores it on `stream`, unfenced.
fn as_scheduled(stream: &StreamId, change: &ReminderChange) -> StoredReminder {
    let ReminderChange::Schedule {
        name,
        reminder_id,
        due_at,
        period_ms,
        payload,
    } = change
    else {
        panic!("not a schedule: {change:?}");
    };
    StoredReminder {
        stream: stream.clone(),
        name: name.clone(),
        reminder_id: *reminder_id,
        shard: 0,
        due_at: *due_at,
        period_ms: *period_ms,
        payload: payload.clone(),
        state: ReminderState::Scheduled,
        last_error: None,
        last_fired_at: None,
    }
}

async fn reminders(store: &dyn EventStore, stream: &StreamId) -> Vec<StoredReminder> {
    store.reminders_of(stream).await.unwrap()
}

async fn named(store: &dyn EventStore, stream: &StreamId, name: &str) -> Option<StoredReminder> {
    reminders(store, stream)
        .await
        .into_iter()
        .find(|r| r.name == name)
}

/// Changes without events at `version`, which must succeed.
async fn change(
    store: &dyn EventStore,
    stream: &StreamId,
    version: u64,
    changes: Vec<ReminderChange>,
) {
    let receipt = store
        .append_with_reminders(stream, version, Vec::new(), changes, None)
        .await
        .unwrap();
    assert_eq!(
        (receipt.first_version, receipt.last_version),
        (version, version)
    );
}

/// A time in a window of this case's own, far in the past: `offset` seconds into it.
fn window() -> impl Fn(i64) -> DateTime<Utc> + Copy {
    let start = DateTime::parse_from_rfc3339("1500-01-01T00:00:00Z")
        .unwrap()
        .to_utc()
        + TimeDelta::seconds(rand::random_range(0..3_000_000_000));
    move |offset| start + TimeDelta::seconds(offset)
}

/// Every field of a reminder comes back as scheduled, together with the events of the same call;
/// a stream's reminders come back by name in byte order.
pub async fn events_and_reminders_are_stored_together_and_read_back_with_every_field(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("remind");
    assert!(reminders(store.as_ref(), &stream).await.is_empty());
    let due = now_micros() + TimeDelta::minutes(5);
    let changes = vec![
        schedule("b-periodic", due, Some(60_000), b"\x81\xa1c\x01"),
        schedule("a-once", due + TimeDelta::seconds(1), None, b""),
        schedule("B-upper", due, Some(MAX_REMINDER_PERIOD_MS), b"x"),
        schedule("\u{e9}-accent", due, None, &[0, 255, 7]),
        schedule(&"n".repeat(MAX_REMINDER_NAME_LEN), due, None, b"long"),
    ];
    let receipt = store
        .append_with_reminders(&stream, 0, numbered_events(0, 2), changes.clone(), None)
        .await
        .unwrap();
    assert_eq!((receipt.first_version, receipt.last_version), (1, 2));
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
    assert_eq!(super::read_whole(store.as_ref(), &stream).await.len(), 2);

    let mut expected: Vec<StoredReminder> =
        changes.iter().map(|c| as_scheduled(&stream, c)).collect();
    expected.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let stored = reminders(store.as_ref(), &stream).await;
    assert_eq!(stored, expected);
    assert_eq!(
        stored
            .iter()
            .filter_map(|r| r.name.chars().next())
            .collect::<String>(),
        "Babn\u{e9}",
        "by name, byte by byte"
    );
    assert!(
        reminders(store.as_ref(), &fresh_stream("remind"))
            .await
            .is_empty(),
        "another stream has none"
    );
}

/// An append with reminder changes whose expected version is behind or ahead of the stream is
/// a version conflict and stores neither its events nor its reminder changes.
pub async fn an_append_with_reminders_that_conflicts_stores_neither_events_nor_reminder_changes(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("remind-conflict");
    let due = now_micros() + TimeDelta::hours(1);
    let kept = schedule("kept", due, None, b"kept");
    store
        .append_with_reminders(&stream, 0, numbered_events(0, 2), vec![kept.clone()], None)
        .await
        .unwrap();
    let before = reminders(store.as_ref(), &stream).await;
    for (expected, events) in [(1, 1), (3, 1), (0, 2), (9, 3)] {
        let refused = store
            .append_with_reminders(
                &stream,
                expected,
                numbered_events(10, events),
                vec![schedule("new", due, None, b"new"), cancel("kept")],
                None,
            )
            .await;
        assert_conflict(refused, &stream, expected, 2);
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
    assert_eq!(super::read_whole(store.as_ref(), &stream).await.len(), 2);
    assert_eq!(reminders(store.as_ref(), &stream).await, before);
    assert_eq!(before, vec![as_scheduled(&stream, &kept)]);
}

/// Reminder changes without events check the expected version like an append (behind or
/// ahead: a conflict that changes nothing), leave the version as it is, and apply to a stream
/// with no events at version 0; with no changes either the call is the check alone.
pub async fn reminder_changes_without_events_check_the_version(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("remind-version");
    let due = now_micros() + TimeDelta::hours(1);

    let fresh = store
        .append_with_reminders(
            &stream,
            0,
            Vec::new(),
            vec![schedule("first", due, None, b"1")],
            None,
        )
        .await
        .unwrap();
    assert_eq!((fresh.first_version, fresh.last_version), (0, 0));
    assert_eq!(fresh.last_position, 0);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert_eq!(reminders(store.as_ref(), &stream).await.len(), 1);

    store
        .append(&stream, 0, numbered_events(0, 3))
        .await
        .unwrap();
    let before = reminders(store.as_ref(), &stream).await;
    for stale in [0, 2, 4] {
        let refused = store
            .append_with_reminders(
                &stream,
                stale,
                Vec::new(),
                vec![cancel("first"), schedule("second", due, None, b"2")],
                None,
            )
            .await;
        assert_conflict(refused, &stream, stale, 3);
        let refused = store
            .append_with_reminders(&stream, stale, Vec::new(), Vec::new(), None)
            .await;
        assert_conflict(refused, &stream, stale, 3);
    }
    assert_eq!(reminders(store.as_ref(), &stream).await, before);

    let started = now_micros() - TimeDelta::seconds(5);
    let receipt = store
        .append_with_reminders(
            &stream,
            3,
            Vec::new(),
            vec![cancel("first"), schedule("second", due, None, b"2")],
            None,
        )
        .await
        .unwrap();
    assert_eq!((receipt.first_version, receipt.last_version), (3, 3));
    assert_eq!(receipt.last_position, 0);
    assert!(receipt.recorded_at >= started, "{receipt:?}");
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    let names: Vec<String> = reminders(store.as_ref(), &stream)
        .await
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["second"]);

    let noop = store
        .append_with_reminders(&stream, 3, Vec::new(), Vec::new(), None)
        .await
        .unwrap();
    assert_eq!((noop.first_version, noop.last_version), (3, 3));
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    assert_eq!(
        super::read_whole(store.as_ref(), &stream).await.len(),
        3,
        "no event was added"
    );
}

/// Scheduling a name again replaces it: new id, due time, period and payload, state back to
/// scheduled, error and last firing cleared. Cancel removes it; cancelling a missing name is a
/// no-op that still succeeds.
pub async fn scheduling_a_name_again_replaces_it_and_cancel_removes_it(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("remind-replace");
    let due = now_micros() + TimeDelta::minutes(1);
    let first = schedule("job", due, None, b"first");
    let other = schedule("other", due, Some(1_000), b"other");
    change(store.as_ref(), &stream, 0, vec![first, other.clone()]).await;
    // Its firing is refused: kept as rejected, with the error and the time it fired.
    let current = named(store.as_ref(), &stream, "job").await.unwrap();
    change(
        store.as_ref(),
        &stream,
        0,
        vec![fired(&current, due, None, Some("refused"))],
    )
    .await;
    let rejected = named(store.as_ref(), &stream, "job").await.unwrap();
    assert_eq!(rejected.state, ReminderState::Rejected);
    assert_eq!(rejected.last_error.as_deref(), Some("refused"));
    assert_eq!(rejected.last_fired_at, Some(due));

    let again = schedule("job", due + TimeDelta::hours(2), Some(5), b"second");
    store
        .append_with_reminders(&stream, 0, vec![event("e")], vec![again.clone()], None)
        .await
        .unwrap();
    let replaced = named(store.as_ref(), &stream, "job").await.unwrap();
    assert_eq!(replaced, as_scheduled(&stream, &again));
    assert_ne!(replaced.reminder_id, current.reminder_id);

    change(store.as_ref(), &stream, 1, vec![cancel("job")]).await;
    assert_eq!(
        reminders(store.as_ref(), &stream).await,
        vec![as_scheduled(&stream, &other)],
        "only the cancelled name is gone"
    );
    change(
        store.as_ref(),
        &stream,
        1,
        vec![cancel("job"), cancel("never")],
    )
    .await;
    assert_eq!(reminders(store.as_ref(), &stream).await.len(), 1);
}

/// Several changes to one name in one call apply in order.
pub async fn changes_to_one_name_in_one_call_apply_in_order(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("remind-order");
    let due = now_micros() + TimeDelta::minutes(1);
    let last = schedule("x", due + TimeDelta::seconds(9), None, b"third");
    let periodic = schedule("p", due, Some(1_000), b"p");
    let ReminderChange::Schedule {
        reminder_id: periodic_id,
        ..
    } = periodic
    else {
        unreachable!()
    };
    let moved = due + TimeDelta::seconds(1);
    change(
        store.as_ref(),
        &stream,
        0,
        vec![
            schedule("x", due, None, b"first"),
            cancel("x"),
            schedule("x", due, Some(7), b"second"),
            last.clone(),
            schedule("y", due, None, b"gone"),
            cancel("y"),
            periodic,
            ReminderChange::Fired {
                name: "p".into(),
                reminder_id: periodic_id,
                due_at: due,
                fired_at: due,
                next_due_at: Some(moved),
                error: None,
            },
        ],
    )
    .await;
    let stored = reminders(store.as_ref(), &stream).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[1], as_scheduled(&stream, &last));
    assert_eq!(stored[0].name, "p");
    assert_eq!(stored[0].due_at, moved, "fired after it was scheduled");
    assert_eq!(stored[0].last_fired_at, Some(due));
}

/// `Fired` with the reminder's current id: a periodic one moves to its next due time and records
/// the firing; a one-shot one is removed; a one-shot one with an error is kept as rejected with
/// the error and is no longer due. A periodic one that fired with an error keeps going and shows
/// the error until a firing without one.
pub async fn fired_moves_a_periodic_reminder_removes_a_one_shot_and_keeps_a_rejected_one(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("remind-fired");
    let at = window();
    change(
        store.as_ref(),
        &stream,
        0,
        vec![
            schedule("periodic", at(1), Some(60_000), b"p"),
            schedule("once", at(2), None, b"o"),
            schedule("refused", at(3), None, b"r"),
        ],
    )
    .await;
    let due = DueReminders {
        shards: None,
        due_by: at(10_000),
        limit: 10_000,
        skip: Vec::new(),
    };
    let mine = |all: Vec<StoredReminder>| -> Vec<String> {
        all.into_iter()
            .filter(|r| r.stream == stream)
            .map(|r| r.name)
            .collect()
    };
    assert_eq!(
        mine(store.due_reminders(&due).await.unwrap()),
        ["periodic", "once", "refused"]
    );

    let periodic = named(store.as_ref(), &stream, "periodic").await.unwrap();
    let once = named(store.as_ref(), &stream, "once").await.unwrap();
    let refused = named(store.as_ref(), &stream, "refused").await.unwrap();
    change(
        store.as_ref(),
        &stream,
        0,
        vec![
            fired(&periodic, at(5), Some(at(61)), None),
            fired(&once, at(5), None, None),
            fired(&refused, at(6), None, Some("account closed")),
        ],
    )
    .await;

    let moved = named(store.as_ref(), &stream, "periodic").await.unwrap();
    assert_eq!(
        moved,
        StoredReminder {
            due_at: at(61),
            last_fired_at: Some(at(5)),
            ..periodic.clone()
        }
    );
    assert_eq!(named(store.as_ref(), &stream, "once").await, None);
    let rejected = named(store.as_ref(), &stream, "refused").await.unwrap();
    assert_eq!(
        rejected,
        StoredReminder {
            state: ReminderState::Rejected,
            last_error: Some("account closed".into()),
            last_fired_at: Some(at(6)),
            ..refused.clone()
        }
    );
    assert_eq!(
        mine(store.due_reminders(&due).await.unwrap()),
        ["periodic"],
        "a rejected reminder is not due, whatever its due time"
    );

    change(
        store.as_ref(),
        &stream,
        0,
        vec![fired(&moved, at(61), Some(at(121)), Some("overdrawn"))],
    )
    .await;
    let erred = named(store.as_ref(), &stream, "periodic").await.unwrap();
    assert_eq!(erred.state, ReminderState::Scheduled);
    assert_eq!(erred.due_at, at(121));
    assert_eq!(erred.last_error.as_deref(), Some("overdrawn"));
    change(
        store.as_ref(),
        &stream,
        0,
        vec![fired(&erred, at(121), Some(at(181)), None)],
    )
    .await;
    let cleared = named(store.as_ref(), &stream, "periodic").await.unwrap();
    assert_eq!(cleared.last_error, None);
    assert_eq!(cleared.last_fired_at, Some(at(121)));
}

/// `Fired` for a reminder no longer in the form that fired (replaced: another id; moved on:
/// another due time; rejected; cancelled) changes nothing, whatever it says: the whole call is
/// refused as a stale firing, neither its events nor its other changes stored.
pub async fn fired_with_a_stale_id_changes_nothing(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("remind-stale");
    let due = now_micros() + TimeDelta::minutes(1);
    change(
        store.as_ref(),
        &stream,
        0,
        vec![schedule("job", due, Some(1_000), b"old")],
    )
    .await;
    let old = named(store.as_ref(), &stream, "job").await.unwrap();
    let replacement = schedule("job", due + TimeDelta::hours(1), None, b"new");
    change(store.as_ref(), &stream, 0, vec![replacement.clone()]).await;
    let current = named(store.as_ref(), &stream, "job").await.unwrap();
    let moved_on = StoredReminder {
        due_at: current.due_at - TimeDelta::seconds(1),
        ..current.clone()
    };
    let refused = |firing: ReminderChange, version: u64| {
        let (store, stream) = (Arc::clone(&store), stream.clone());
        async move {
            let name = firing.name().to_owned();
            for events in [Vec::new(), numbered_events(version, 2)] {
                let before = reminders(store.as_ref(), &stream).await;
                let outcome = store
                    .append_with_reminders(
                        &stream,
                        version,
                        events,
                        vec![schedule("other", due, None, b"o"), firing.clone()],
                        None,
                    )
                    .await;
                match outcome {
                    Err(StoreError::StaleFiring {
                        stream: refused,
                        name: of,
                    }) => assert_eq!((refused, of), (stream.clone(), name.clone())),
                    other => panic!("{firing:?}: {other:?}"),
                }
                assert_eq!(store.stream_version(&stream).await.unwrap(), version);
                assert_eq!(reminders(store.as_ref(), &stream).await, before);
            }
        }
    };
    for (next, error) in [
        (Some(due + TimeDelta::seconds(1)), None),
        (None, None),
        (None, Some("refused")),
    ] {
        refused(fired(&old, due, next, error), 0).await;
        refused(fired(&moved_on, due, next, error), 0).await;
        assert_eq!(
            reminders(store.as_ref(), &stream).await,
            vec![as_scheduled(&stream, &replacement)]
        );
    }
    change(
        store.as_ref(),
        &stream,
        0,
        vec![fired(&current, due, None, Some("refused"))],
    )
    .await;
    refused(fired(&current, due, None, None), 0).await;
    assert_eq!(
        named(store.as_ref(), &stream, "job").await.map(|r| r.state),
        Some(ReminderState::Rejected),
        "a rejected reminder does not fire again"
    );
    change(store.as_ref(), &stream, 0, vec![cancel("job")]).await;
    refused(fired(&current, due, None, Some("refused")), 0).await;
    assert!(
        reminders(store.as_ref(), &stream).await.is_empty(),
        "a firing does not bring back a cancelled name"
    );
    // A firing of the form scheduled earlier in the same call is not stale.
    let again = schedule("job", due, None, b"again");
    let ReminderChange::Schedule { reminder_id, .. } = again else {
        unreachable!()
    };
    change(
        store.as_ref(),
        &stream,
        0,
        vec![
            again,
            ReminderChange::Fired {
                name: "job".into(),
                reminder_id,
                due_at: due,
                fired_at: due,
                next_due_at: None,
                error: None,
            },
        ],
    )
    .await;
    assert!(reminders(store.as_ref(), &stream).await.is_empty());
}

/// `due_reminders` returns the scheduled reminders due at or before its time, earliest first,
/// at most its limit; not those due later, nor rejected ones.
pub async fn due_reminders_returns_scheduled_reminders_due_by_a_time_earliest_first(
    store: Arc<dyn EventStore>,
) {
    let at = window();
    let (s1, s2, s3) = (
        fresh_stream("remind-due"),
        fresh_stream("remind-due"),
        fresh_stream("remind-due"),
    );
    let ours: HashSet<StreamId> = [s1.clone(), s2.clone(), s3.clone()].into();
    let d = schedule("d", at(4), None, b"d");
    let a = schedule("a", at(1), Some(500), b"a");
    change(store.as_ref(), &s1, 0, vec![d.clone(), a.clone()]).await;
    let b = schedule("b", at(2), None, b"b");
    let late = schedule("late", at(100), None, b"late");
    change(store.as_ref(), &s2, 0, vec![late, b.clone()]).await;
    let c = schedule("c", at(3), None, b"c");
    let rejected = schedule("rejected", at(0), None, b"r");
    change(store.as_ref(), &s3, 0, vec![c.clone(), rejected]).await;
    let r = named(store.as_ref(), &s3, "rejected").await.unwrap();
    change(
        store.as_ref(),
        &s3,
        0,
        vec![fired(&r, at(1), None, Some("no"))],
    )
    .await;

    let query = |due_by: DateTime<Utc>, limit: usize| {
        let store = Arc::clone(&store);
        let ours = ours.clone();
        async move {
            let all = store
                .due_reminders(&DueReminders {
                    shards: None,
                    due_by,
                    limit,
                    skip: Vec::new(),
                })
                .await
                .unwrap();
            assert!(all.len() <= limit, "at most the limit");
            assert!(all.windows(2).all(|w| w[0].due_at <= w[1].due_at));
            assert!(
                all.iter()
                    .all(|r| r.state == ReminderState::Scheduled && r.due_at <= due_by),
                "{all:?}"
            );
            all.into_iter()
                .filter(|r| ours.contains(&r.stream))
                .collect::<Vec<_>>()
        }
    };
    let expected = vec![
        as_scheduled(&s1, &a),
        as_scheduled(&s2, &b),
        as_scheduled(&s3, &c),
        as_scheduled(&s1, &d),
    ];
    assert_eq!(query(at(10), 100).await, expected);
    assert_eq!(query(at(10), 2).await, expected[..2]);
    assert_eq!(
        query(at(3), 100).await,
        expected[..3],
        "due at the time is due"
    );
    assert_eq!(query(at(1), 100).await, expected[..1]);
    assert!(
        query(at(1) - TimeDelta::microseconds(1), 100)
            .await
            .is_empty()
    );
    assert!(query(at(10), 0).await.is_empty(), "limit 0 returns nothing");
    assert_eq!(query(at(100), 100).await.len(), 5, "late is due by then");
}

/// Reminders named in the query's `skip` are left out before the limit: the reminders due
/// after them fill the places they would have taken, with or without a shard filter, and an
/// id that is not due changes nothing.
pub async fn due_reminders_leaves_out_the_reminders_it_skips_before_the_limit(
    store: Arc<dyn EventStore>,
) {
    // A window in the century before every other case's: nothing else is due by its end.
    let start = DateTime::parse_from_rfc3339("1400-01-01T00:00:00Z")
        .unwrap()
        .to_utc()
        + TimeDelta::seconds(rand::random_range(0..3_000_000_000));
    let at = |offset| start + TimeDelta::seconds(offset);
    let stream = fresh_stream("remind-skip");
    let changes = vec![
        schedule("first", at(1), None, b"1"),
        schedule("second", at(2), Some(1_000), b"2"),
        schedule("third", at(3), None, b"3"),
        schedule("fourth", at(4), None, b"4"),
    ];
    change(store.as_ref(), &stream, 0, changes.clone()).await;
    let stored: Vec<StoredReminder> = changes.iter().map(|c| as_scheduled(&stream, c)).collect();
    let ids: Vec<Uuid> = stored.iter().map(|r| r.reminder_id).collect();
    let due = |shards: Option<Vec<u32>>, limit: usize, skip: Vec<Uuid>| {
        let store = Arc::clone(&store);
        async move {
            store
                .due_reminders(&DueReminders {
                    shards,
                    due_by: at(10),
                    limit,
                    skip,
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(due(None, 100, Vec::new()).await, stored);
    assert_eq!(due(None, 2, Vec::new()).await, stored[..2]);
    assert_eq!(
        due(None, 2, vec![ids[0], ids[1]]).await,
        stored[2..],
        "the later ones take the places of the skipped ones"
    );
    assert_eq!(
        due(None, 100, vec![ids[3], ids[1]]).await,
        [stored[0].clone(), stored[2].clone()]
    );
    assert_eq!(
        due(Some(vec![3, 0]), 1, vec![ids[0], ids[2]]).await,
        stored[1..2],
        "with a shard filter too"
    );
    assert!(
        due(Some(vec![0]), 100, ids.clone()).await.is_empty(),
        "all skipped"
    );
    assert_eq!(
        due(None, 100, vec![Uuid::now_v7()]).await,
        stored,
        "an id that is not due changes nothing"
    );
}

/// The shard filter: reminders stored without a fence are in shard 0; asking for other shards
/// finds none of them, asking for shard 0 (among others, even twice) finds each once, and an
/// empty list finds nothing.
pub async fn due_reminders_honours_the_shard_filter(store: Arc<dyn EventStore>) {
    let at = window();
    let stream = fresh_stream("remind-shard");
    let changes = vec![
        schedule("one", at(1), None, b"1"),
        schedule("two", at(2), None, b"2"),
    ];
    change(store.as_ref(), &stream, 0, changes.clone()).await;
    let mine = |shards: Option<Vec<u32>>| {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        async move {
            store
                .due_reminders(&DueReminders {
                    shards,
                    due_by: at(10),
                    limit: 1_000,
                    skip: Vec::new(),
                })
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.stream == stream)
                .collect::<Vec<_>>()
        }
    };
    let expected: Vec<StoredReminder> = changes.iter().map(|c| as_scheduled(&stream, c)).collect();
    assert_eq!(mine(None).await, expected);
    assert_eq!(mine(Some(vec![0])).await, expected);
    assert_eq!(mine(Some(vec![7, 0, 3, 0])).await, expected);
    assert!(mine(Some(vec![7])).await.is_empty());
    assert!(mine(Some(vec![1, 2, u32::MAX])).await.is_empty());
    assert!(mine(Some(Vec::new())).await.is_empty());
}

/// Bad reminder input is refused with a typed error before anything is stored: neither the
/// call's events nor its valid reminder changes.
pub async fn bad_reminder_input_is_refused_with_typed_errors_and_stores_nothing(
    store: Arc<dyn EventStore>,
    limits: StoreLimits,
) {
    let stream = fresh_stream("remind-bad");
    let due = now_micros() + TimeDelta::minutes(1);
    let good = schedule("good", due, None, b"g");
    let long = "x".repeat(MAX_REMINDER_NAME_LEN + 1);
    let ancient = DateTime::parse_from_rfc3339("0000-12-31T23:59:59Z")
        .unwrap()
        .to_utc();
    let fired_with = |error: String| ReminderChange::Fired {
        name: "good".into(),
        reminder_id: Uuid::now_v7(),
        due_at: due,
        fired_at: due,
        next_due_at: None,
        error: Some(error),
    };
    type Expect = fn(&InvalidInput) -> bool;
    let cases: Vec<(ReminderChange, Expect)> = vec![
        (schedule("", due, None, b""), |e| {
            matches!(e, InvalidInput::BadReminderName { len: 0, .. })
        }),
        (
            schedule(&long, due, None, b""),
            |e| matches!(e, InvalidInput::BadReminderName { len, max } if *len == *max + 1),
        ),
        (schedule("a\u{7}b", due, None, b""), |e| {
            matches!(e, InvalidInput::ReminderNameHasControlCharacters { .. })
        }),
        (schedule("nul\0", due, None, b""), |e| {
            matches!(e, InvalidInput::ReminderNameHasControlCharacters { .. })
        }),
        (cancel("line\nbreak"), |e| {
            matches!(e, InvalidInput::ReminderNameHasControlCharacters { .. })
        }),
        (cancel(""), |e| {
            matches!(e, InvalidInput::BadReminderName { .. })
        }),
        (schedule("zero", due, Some(0), b""), |e| {
            matches!(e, InvalidInput::BadReminderPeriod { period_ms: 0, .. })
        }),
        (schedule("huge", due, Some(u64::MAX), b""), |e| {
            matches!(e, InvalidInput::BadReminderPeriod { .. })
        }),
        // Longer than the reminder years: it could never come due again.
        (
            schedule("eons", due, Some(MAX_REMINDER_PERIOD_MS + 1), b""),
            |e| {
                matches!(e, InvalidInput::BadReminderPeriod { period_ms, max, .. }
                    if *period_ms == MAX_REMINDER_PERIOD_MS + 1 && *max == MAX_REMINDER_PERIOD_MS)
            },
        ),
        (
            schedule(
                "big",
                due,
                None,
                &vec![0u8; limits.max_event_payload_bytes + 1],
            ),
            |e| matches!(e, InvalidInput::PayloadTooLarge { .. }),
        ),
        (schedule("old", ancient, None, b""), |e| {
            matches!(e, InvalidInput::ReminderTimeOutOfRange { .. })
        }),
        (fired_with("a\0b".into()), |e| {
            matches!(e, InvalidInput::BadReminderError { .. })
        }),
        (
            fired_with("e".repeat(limits.max_event_payload_bytes + 1)),
            |e| matches!(e, InvalidInput::BadReminderError { .. }),
        ),
    ];
    for (bad, expected) in cases {
        for events in [Vec::new(), numbered_events(0, 2)] {
            let refused = store
                .append_with_reminders(&stream, 0, events, vec![good.clone(), bad.clone()], None)
                .await;
            let error = invalid(refused);
            assert!(expected(&error), "{bad:?}: {error:?}");
            assert!(!error.to_string().is_empty());
        }
    }
    // Bad events with good reminders: the events' own refusal, nothing stored either.
    let refused = store
        .append_with_reminders(
            &stream,
            0,
            vec![NewEvent::new("", 1, Vec::new())],
            vec![good.clone()],
            None,
        )
        .await;
    assert!(matches!(
        invalid(refused),
        InvalidInput::BadEventType { .. }
    ));
    assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    assert!(reminders(store.as_ref(), &stream).await.is_empty());
    // The limits themselves are accepted.
    change(
        store.as_ref(),
        &stream,
        0,
        vec![schedule(
            &"m".repeat(MAX_REMINDER_NAME_LEN),
            due,
            Some(1),
            &vec![1u8; limits.max_event_payload_bytes],
        )],
    )
    .await;
    assert_eq!(reminders(store.as_ref(), &stream).await.len(), 1);
}

/// A command's events stored with reminder changes and sent again (a retry) are refused as
/// already applied, and the retry's reminder changes are not stored.
pub async fn a_command_sent_again_with_reminders_is_refused_and_changes_no_reminder(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("remind-retry");
    let due = now_micros() + TimeDelta::minutes(1);
    let command = Uuid::now_v7();
    let events: Vec<NewEvent> = (0..2)
        .map(|i| event([i as u8]).for_command(&stream, command, i))
        .collect();
    let first = schedule("first", due, None, b"1");
    store
        .append_with_reminders(&stream, 0, events.clone(), vec![first.clone()], None)
        .await
        .unwrap();
    let refused = store
        .append_with_reminders(
            &stream,
            2,
            events,
            vec![cancel("first"), schedule("second", due, None, b"2")],
            None,
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::CommandAlreadyApplied { command_id, .. }) if command_id == command),
        "{refused:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 2);
    assert_eq!(
        reminders(store.as_ref(), &stream).await,
        vec![as_scheduled(&stream, &first)]
    );
}

/// A firing sent again after its first attempt committed (a retry after an indeterminate
/// outcome, or another executor firing the same reminder) is stale as well: the first attempt
/// moved the reminder on, and it may have been replaced or cancelled since. Its events' ids
/// are checked before its `Fired` precondition, so the retry learns that its command was
/// applied ([`StoreError::CommandAlreadyApplied`]) rather than that nothing was delivered
/// ([`StoreError::StaleFiring`]); an event id stored outside the command is likewise an
/// [`InvalidInput::DuplicateEventId`] first. The expected version comes before both. Whatever
/// the refusal, nothing of the retry is stored.
pub async fn a_firing_sent_again_after_it_was_applied_is_refused_as_already_applied_not_stale(
    store: Arc<dyn EventStore>,
) {
    let stream = fresh_stream("remind-refire");
    let due = now_micros() + TimeDelta::minutes(1);
    change(
        store.as_ref(),
        &stream,
        0,
        vec![
            schedule("once", due, None, b"o"),
            schedule("tick", due, Some(60_000), b"t"),
        ],
    )
    .await;
    let once = named(store.as_ref(), &stream, "once").await.unwrap();
    let tick = named(store.as_ref(), &stream, "tick").await.unwrap();
    let command_events = |command: Uuid, from: u32| -> Vec<NewEvent> {
        (from..from + 2)
            .map(|i| event([i as u8]).for_command(&stream, command, i))
            .collect()
    };

    // The one-shot reminder fires (its command stores two events) and is removed; the
    // periodic one fires and moves on.
    let (once_command, tick_command) = (Uuid::now_v7(), Uuid::now_v7());
    let once_firing = fired(&once, due, None, None);
    let tick_firing = fired(&tick, due, Some(due + TimeDelta::minutes(1)), None);
    for (version, command, firing) in [
        (0, once_command, &once_firing),
        (2, tick_command, &tick_firing),
    ] {
        let receipt = store
            .append_with_reminders(
                &stream,
                version,
                command_events(command, 0),
                vec![firing.clone()],
                None,
            )
            .await
            .unwrap();
        assert_eq!(receipt.last_version, version + 2);
    }
    let after_firings = reminders(store.as_ref(), &stream).await;
    assert_eq!(
        after_firings
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["tick"]
    );

    // Each sent again, at the stream's version: stale, and already applied.
    let refused_as_applied = |command: Uuid, firing: ReminderChange| {
        let (store, stream) = (Arc::clone(&store), stream.clone());
        let events = command_events(command, 0);
        async move {
            let before = reminders(store.as_ref(), &stream).await;
            let outcome = store
                .append_with_reminders(&stream, 4, events, vec![firing.clone()], None)
                .await;
            assert!(
                matches!(
                    &outcome,
                    Err(StoreError::CommandAlreadyApplied { stream: of, command_id })
                        if *of == stream && *command_id == command
                ),
                "{firing:?} sent again: {outcome:?}"
            );
            assert_eq!(store.stream_version(&stream).await.unwrap(), 4);
            assert_eq!(reminders(store.as_ref(), &stream).await, before);
        }
    };
    refused_as_applied(once_command, once_firing.clone()).await;
    refused_as_applied(tick_command, tick_firing.clone()).await;

    // Still so once the names were replaced or cancelled since (no version change).
    change(
        store.as_ref(),
        &stream,
        4,
        vec![schedule("once", due, None, b"again"), cancel("tick")],
    )
    .await;
    refused_as_applied(once_command, once_firing.clone()).await;
    refused_as_applied(tick_command, tick_firing.clone()).await;

    // Even when only the command's later events are stored ids: one stored id is enough.
    let outcome = store
        .append_with_reminders(
            &stream,
            4,
            vec![
                event(b"new").for_command(&stream, once_command, 7),
                event(b"old").for_command(&stream, once_command, 1),
            ],
            vec![once_firing.clone()],
            None,
        )
        .await;
    assert!(
        matches!(outcome, Err(StoreError::CommandAlreadyApplied { command_id, .. }) if command_id == once_command),
        "{outcome:?}"
    );

    // An event id stored under another command: a duplicate event id, before the staleness.
    let mut reused = event(b"reused").for_command(&stream, Uuid::now_v7(), 0);
    reused.event_id = crate::command_event_id(&stream, tick_command, 0);
    let outcome = store
        .append_with_reminders(&stream, 4, vec![reused], vec![tick_firing.clone()], None)
        .await;
    assert_eq!(
        invalid(outcome),
        InvalidInput::DuplicateEventId(crate::command_event_id(&stream, tick_command, 0))
    );

    // The version first: a retry at the version of its first attempt is a conflict.
    let outcome = store
        .append_with_reminders(
            &stream,
            0,
            command_events(once_command, 0),
            vec![once_firing.clone()],
            None,
        )
        .await;
    assert_conflict(outcome, &stream, 0, 4);

    // A stale firing whose events are new is refused as stale, storing nothing.
    let before = reminders(store.as_ref(), &stream).await;
    let outcome = store
        .append_with_reminders(
            &stream,
            4,
            command_events(Uuid::now_v7(), 0),
            vec![tick_firing],
            None,
        )
        .await;
    assert!(
        matches!(&outcome, Err(StoreError::StaleFiring { name, .. }) if name == "tick"),
        "{outcome:?}"
    );
    assert_eq!(store.stream_version(&stream).await.unwrap(), 4);
    assert_eq!(reminders(store.as_ref(), &stream).await, before);
    assert_eq!(super::read_whole(store.as_ref(), &stream).await.len(), 4);
}

/// Calls racing on one stream at one version: changes without events and an append with
/// changes are serialised (never do the changes without events land on a version the append
/// moved past), and an append with changes that loses its version to a plain append stores no
/// change.
pub async fn reminder_changes_racing_appends_on_one_stream_are_serialised(
    store: Arc<dyn EventStore>,
) {
    let due = now_micros() + TimeDelta::minutes(1);
    for _ in 0..25 {
        let stream = fresh_stream("remind-race");
        store
            .append(&stream, 0, numbered_events(0, 1))
            .await
            .unwrap();
        let without_events = {
            let (store, stream) = (Arc::clone(&store), stream.clone());
            tokio::spawn(async move {
                store
                    .append_with_reminders(
                        &stream,
                        1,
                        Vec::new(),
                        vec![schedule("x", due, None, b"x")],
                        None,
                    )
                    .await
            })
        };
        let with_events = {
            let (store, stream) = (Arc::clone(&store), stream.clone());
            tokio::spawn(async move {
                store
                    .append_with_reminders(
                        &stream,
                        1,
                        numbered_events(1, 1),
                        vec![cancel("x")],
                        None,
                    )
                    .await
            })
        };
        let plain = {
            let (store, stream) = (Arc::clone(&store), stream.clone());
            tokio::spawn(async move { store.append(&stream, 2, numbered_events(5, 1)).await })
        };
        let scheduled = without_events.await.unwrap();
        with_events.await.unwrap().unwrap();
        let _ = plain.await.unwrap();
        match scheduled {
            // It went first: the append after it cancelled x.
            Ok(_) => {}
            Err(e) => assert!(e.is_conflict(), "{e:?}"),
        }
        assert_eq!(
            named(store.as_ref(), &stream, "x").await,
            None,
            "x was scheduled on a version the cancelling append had moved past"
        );

        // An append with changes and a plain append at one version: one wins.
        let version = store.stream_version(&stream).await.unwrap();
        let with_changes = {
            let (store, stream) = (Arc::clone(&store), stream.clone());
            tokio::spawn(async move {
                store
                    .append_with_reminders(
                        &stream,
                        version,
                        numbered_events(20, 2),
                        vec![schedule("y", due, None, b"y")],
                        None,
                    )
                    .await
            })
        };
        let plain = store.append(&stream, version, numbered_events(30, 1)).await;
        let with_changes = with_changes.await.unwrap();
        assert!(
            plain.is_ok() != with_changes.is_ok(),
            "exactly one wins: {plain:?} / {with_changes:?}"
        );
        if let Err(e) = with_changes {
            assert!(e.is_conflict(), "{e:?}");
            assert_eq!(named(store.as_ref(), &stream, "y").await, None);
        } else {
            assert!(named(store.as_ref(), &stream, "y").await.is_some());
        }
    }
}

/// A random sequence of calls (schedules, cancels, firings under current and stale ids, with and
/// without events, some at a stale version) leaves a stream's reminders as a plain model says,
/// after every call.
pub async fn random_reminder_changes_match_a_simple_model(store: Arc<dyn EventStore>) {
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let stream = fresh_stream("remind-model");
    let base = now_micros();
    let names = ["a", "b", "c"];
    let mut model: BTreeMap<String, StoredReminder> = BTreeMap::new();
    let mut version = 0u64;
    let mut stale_ids: Vec<(String, Uuid)> = Vec::new();
    for step in 0..150 {
        let mut changes = Vec::new();
        // The model as the call's changes so far leave it, and whether none was a stale firing.
        let (mut planned, mut planned_stale_ids) = (model.clone(), stale_ids.clone());
        let mut fresh = true;
        for _ in 0..rng.random_range(0..4) {
            let name = names[rng.random_range(0..names.len())].to_owned();
            let at = base + TimeDelta::milliseconds(rng.random_range(0..1_000_000));
            let change = match rng.random_range(0..10) {
                0..4 => ReminderChange::Schedule {
                    name: name.clone(),
                    reminder_id: Uuid::now_v7(),
                    due_at: at,
                    period_ms: rng.random_bool(0.5).then(|| rng.random_range(1..100_000)),
                    payload: Bytes::from(vec![step as u8; rng.random_range(0..4)]),
                },
                4..6 => ReminderChange::Cancel { name: name.clone() },
                _ => {
                    let (reminder_id, due_at) = match (planned.get(&name), rng.random_bool(0.8)) {
                        (Some(current), true) if rng.random_bool(0.9) => {
                            (current.reminder_id, current.due_at)
                        }
                        (Some(current), true) => (current.reminder_id, at),
                        _ => planned_stale_ids
                            .iter()
                            .rev()
                            .find(|(n, _)| *n == name)
                            .map_or_else(|| (Uuid::now_v7(), at), |(_, id)| (*id, at)),
                    };
                    ReminderChange::Fired {
                        name: name.clone(),
                        reminder_id,
                        due_at,
                        fired_at: at,
                        next_due_at: rng
                            .random_bool(0.5)
                            .then(|| at + TimeDelta::seconds(rng.random_range(1..100))),
                        error: rng
                            .random_bool(0.4)
                            .then(|| format!("refused at step {step}")),
                    }
                }
            };
            fresh &= apply_to_model(
                &mut planned,
                &mut planned_stale_ids,
                &stream,
                change.clone(),
            );
            changes.push(change);
        }
        let events = if rng.random_bool(0.3) {
            numbered_events(version, rng.random_range(1..3))
        } else {
            Vec::new()
        };
        let stale = rng.random_bool(0.1);
        let expected = if stale { version + 1 } else { version };
        let outcome = store
            .append_with_reminders(&stream, expected, events.clone(), changes.clone(), None)
            .await;
        if stale {
            assert_conflict(outcome, &stream, expected, version);
        } else if !fresh {
            assert!(
                matches!(outcome, Err(StoreError::StaleFiring { .. })),
                "seed {seed} step {step}: a stale firing must refuse the call: {outcome:?}"
            );
            assert_eq!(store.stream_version(&stream).await.unwrap(), version);
        } else {
            let receipt = outcome.unwrap_or_else(|e| panic!("seed {seed} step {step}: {e:?}"));
            version += events.len() as u64;
            assert_eq!(receipt.last_version, version);
            (model, stale_ids) = (planned, planned_stale_ids);
        }
        let stored = reminders(store.as_ref(), &stream).await;
        let expected: Vec<StoredReminder> = model.values().cloned().collect();
        assert_eq!(
            stored, expected,
            "seed {seed}, step {step}: the store and the model differ"
        );
    }
}

/// The model: what the documentation of [`ReminderChange`] says, one change at a time; false
/// for a firing of a reminder not in the form that fired (which refuses the whole call).
fn apply_to_model(
    model: &mut BTreeMap<String, StoredReminder>,
    stale_ids: &mut Vec<(String, Uuid)>,
    stream: &StreamId,
    change: ReminderChange,
) -> bool {
    match change {
        ReminderChange::Schedule { ref name, .. } => {
            if let Some(old) = model.get(name) {
                stale_ids.push((name.clone(), old.reminder_id));
            }
            model.insert(name.clone(), as_scheduled(stream, &change));
        }
        ReminderChange::Cancel { name } => {
            if let Some(old) = model.remove(&name) {
                stale_ids.push((name, old.reminder_id));
            }
        }
        ReminderChange::Fired {
            name,
            reminder_id,
            due_at,
            fired_at,
            next_due_at,
            error,
        } => {
            let Some(current) = model.get_mut(&name) else {
                return false;
            };
            if (current.reminder_id, current.due_at, current.state)
                != (reminder_id, due_at, ReminderState::Scheduled)
            {
                return false;
            }
            current.last_fired_at = Some(fired_at);
            match (next_due_at, error) {
                (Some(next), error) => {
                    current.due_at = next;
                    current.last_error = error;
                }
                (None, None) => {
                    stale_ids.push((name.clone(), reminder_id));
                    model.remove(&name);
                }
                (None, Some(error)) => {
                    current.state = ReminderState::Rejected;
                    current.last_error = Some(error);
                }
            }
        }
    }
    true
}
