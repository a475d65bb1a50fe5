//! Durable reminders on both backends: scheduled by `decide` with the command's events, fired
//! once by the scheduler through the aggregate's actor, never in a cancelled or replaced form,
//! a refused firing recorded and not retried, periodic ones moving on (a missed run fires once),
//! changes from outside through the actor, periods too long refused, reminders set aside not
//! starving later ones, and a firing raced by another executor's cancel storing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::Stores;
use aggregate_actors::event_stores::testing::{Hooked, StoreHooks};
use aggregate_actors::event_stores::{
    AppendReceipt, EventStore, Fence, InvalidInput, NewEvent, ReadQuery, ReminderChange,
    ReminderState, StoreResult, StreamId,
};
use aggregate_actors::reminder::{FireOutcome, Reminder};
use aggregate_actors::scheduler::{Scheduler, SchedulerHandle, SchedulerSettings};
use aggregate_actors::{
    Aggregate, AggregateSettings, CommandError, Context, DedupWindow, ErrorKind, Executor,
    ExecutorError,
};
use async_trait::async_trait;
use chrono::{TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum SeatCommand {
    /// Holds the seat; expires (with `tag`) after `ms` unless confirmed.
    Hold {
        ms: i64,
        tag: String,
    },
    Confirm,
    Expire {
        tag: String,
    },
    /// Schedules a reminder whose command is always refused.
    ArmRefusal {
        ms: i64,
    },
    Refused,
    /// Ticks every `every_ms`, first due `first_in_ms` from now (negative: already missed).
    StartTicking {
        first_in_ms: i64,
        every_ms: i64,
    },
    Tick,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum SeatEvent {
    Held,
    Confirmed,
    Expired { tag: String },
    Armed,
    Ticked,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SeatState {
    held: bool,
    confirmed: bool,
}

#[derive(Debug, thiserror::Error)]
enum SeatError {
    #[error("refused on purpose")]
    Refused,
}

struct Seat;

impl Aggregate for Seat {
    const TYPE: &'static str = "seat";
    type Command = SeatCommand;
    type Event = SeatEvent;
    type State = SeatState;
    type Error = SeatError;

    fn decide(
        state: &SeatState,
        command: &SeatCommand,
        ctx: &mut Context<'_, Self>,
    ) -> Result<Vec<SeatEvent>, SeatError> {
        let now = ctx.now();
        Ok(match command {
            SeatCommand::Hold { ms, tag } => {
                let expire = SeatCommand::Expire { tag: tag.clone() };
                ctx.schedule_reminder(Reminder::at(
                    "expire",
                    now + TimeDelta::milliseconds(*ms),
                    expire,
                ));
                vec![SeatEvent::Held]
            }
            SeatCommand::Confirm => {
                ctx.cancel_reminder("expire");
                vec![SeatEvent::Confirmed]
            }
            SeatCommand::Expire { tag } if state.held && !state.confirmed => {
                vec![SeatEvent::Expired { tag: tag.clone() }]
            }
            SeatCommand::Expire { .. } => Vec::new(),
            SeatCommand::ArmRefusal { ms } => {
                ctx.schedule_reminder(Reminder::at(
                    "refusal",
                    now + TimeDelta::milliseconds(*ms),
                    SeatCommand::Refused,
                ));
                vec![SeatEvent::Armed]
            }
            SeatCommand::Refused => return Err(SeatError::Refused),
            SeatCommand::StartTicking {
                first_in_ms,
                every_ms,
            } => {
                ctx.schedule_reminder(
                    Reminder::at(
                        "tick",
                        now + TimeDelta::milliseconds(*first_in_ms),
                        SeatCommand::Tick,
                    )
                    .every(TimeDelta::milliseconds(*every_ms)),
                );
                vec![SeatEvent::Armed]
            }
            SeatCommand::Tick => vec![SeatEvent::Ticked],
        })
    }

    fn apply(state: &mut SeatState, event: &SeatEvent) {
        match event {
            SeatEvent::Held => state.held = true,
            SeatEvent::Confirmed => state.confirmed = true,
            _ => {}
        }
    }
}

fn executor(stores: &Stores) -> Executor {
    Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Seat>(AggregateSettings::new().reminders())
        .build()
        .unwrap()
}

fn scheduler(executor: &Executor) -> SchedulerHandle {
    Scheduler::start(executor.clone(), scheduler_settings())
}

/// Polls often, retries soon.
fn scheduler_settings() -> SchedulerSettings {
    SchedulerSettings {
        poll_interval: Duration::from_millis(20),
        retry_after: Duration::from_millis(100),
        ..SchedulerSettings::default()
    }
}

async fn events(stores: &Stores, id: &str) -> Vec<SeatEvent> {
    let stream = StreamId::new(Seat::TYPE, id).unwrap();
    stores
        .events
        .read_stream(&stream, ReadQuery::all())
        .await
        .unwrap()
        .iter()
        .map(|e| aggregate_actors::upcast::read::<Seat>(e).unwrap())
        .collect()
}

/// Waits until `id`'s events satisfy `done`, for at most 10 s.
async fn wait_for_events(stores: &Stores, id: &str, done: impl Fn(&[SeatEvent]) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let seen = events(stores, id).await;
        if done(&seen) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "waited 10 s; events are {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_reminder_scheduled_by_decide_is_stored_with_its_command_and_fires_once(stores: Stores) {
    let executor = executor(&stores);
    let id = "hold-1";
    executor
        .execute::<Seat>(
            id,
            SeatCommand::Hold {
                ms: 150,
                tag: "t".into(),
            },
        )
        .await
        .unwrap();
    let listed = executor.reminders::<Seat>(id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "expire");
    assert_eq!(listed[0].state, ReminderState::Scheduled);

    let scheduler = scheduler(&executor);
    wait_for_events(&stores, id, |e| e.len() == 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        events(&stores, id).await,
        [SeatEvent::Held, SeatEvent::Expired { tag: "t".into() }],
        "fired exactly once"
    );
    assert!(
        executor.reminders::<Seat>(id).await.unwrap().is_empty(),
        "a one-shot reminder is gone once fired"
    );
    let stats = scheduler.stats();
    assert_eq!((stats.fired, stats.failed), (1, 0), "{stats:?}");
    scheduler.stop().await;
    executor.shutdown().await;
}

async fn cancelled_and_replaced_reminders_never_fire_in_their_old_form(stores: Stores) {
    let executor = executor(&stores);
    // Running from the start, it may load an old form (due within its lookahead, which covers
    // these delays) before the change, and then holds a stale copy. The delays leave the
    // changes two seconds, so a stalled test (several hundred milliseconds on a loaded
    // machine) does not let an old form fall due first.
    let scheduler = Scheduler::start(
        executor.clone(),
        SchedulerSettings {
            lookahead: Duration::from_secs(5),
            ..scheduler_settings()
        },
    );
    // Cancelled by the confirmation before it is due.
    executor
        .execute::<Seat>(
            "cancelled",
            SeatCommand::Hold {
                ms: 2_000,
                tag: "c".into(),
            },
        )
        .await
        .unwrap();
    executor
        .execute::<Seat>("cancelled", SeatCommand::Confirm)
        .await
        .unwrap();
    // Replaced by a second hold: only the new form fires, at its new time.
    executor
        .execute::<Seat>(
            "replaced",
            SeatCommand::Hold {
                ms: 2_000,
                tag: "old".into(),
            },
        )
        .await
        .unwrap();
    let old = executor
        .reminders::<Seat>("replaced")
        .await
        .unwrap()
        .remove(0);
    let stream = StreamId::new(Seat::TYPE, "replaced").unwrap();
    let old_stored = stores.events.reminders_of(&stream).await.unwrap().remove(0);
    executor
        .execute::<Seat>(
            "replaced",
            SeatCommand::Hold {
                ms: 2_300,
                tag: "new".into(),
            },
        )
        .await
        .unwrap();
    let new = executor
        .reminders::<Seat>("replaced")
        .await
        .unwrap()
        .remove(0);
    assert_ne!(new.reminder_id, old.reminder_id);
    assert!(new.due_at > old.due_at);
    // A firing of the old form asked for directly (as a scheduler holding a stale copy would).
    assert!(matches!(
        executor.fire_reminder(old_stored).await,
        FireOutcome::Stale
    ));

    wait_for_events(&stores, "replaced", |e| e.len() == 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        events(&stores, "replaced").await,
        [
            SeatEvent::Held,
            SeatEvent::Held,
            SeatEvent::Expired { tag: "new".into() }
        ]
    );
    assert_eq!(
        events(&stores, "cancelled").await,
        [SeatEvent::Held, SeatEvent::Confirmed],
        "the cancelled reminder never fired"
    );
    scheduler.stop().await;
    executor.shutdown().await;
}

async fn a_refused_firing_is_recorded_on_the_reminder_and_not_retried(stores: Stores) {
    let executor = executor(&stores);
    let scheduler = scheduler(&executor);
    executor
        .execute::<Seat>("refusal", SeatCommand::ArmRefusal { ms: 50 })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let listed = executor.reminders::<Seat>("refusal").await.unwrap();
        if listed[0].state == ReminderState::Rejected {
            assert_eq!(listed[0].last_error.as_deref(), Some("refused on purpose"));
            assert!(listed[0].last_fired_at.is_some());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stats = scheduler.stats();
    assert_eq!(stats.rejected, 1, "refused once, never retried: {stats:?}");
    assert_eq!(events(&stores, "refusal").await, [SeatEvent::Armed]);
    scheduler.stop().await;
    executor.shutdown().await;
}

async fn a_periodic_reminder_moves_on_and_a_missed_run_fires_once(stores: Stores) {
    let executor = executor(&stores);
    // First due ten periods ago: the missed runs fire once, not ten times.
    executor
        .execute::<Seat>(
            "ticks",
            SeatCommand::StartTicking {
                first_in_ms: -2_000,
                every_ms: 200,
            },
        )
        .await
        .unwrap();
    let (started_at, started) = (Utc::now(), std::time::Instant::now());
    let scheduler = scheduler(&executor);
    wait_for_events(&stores, "ticks", |e| e.len() >= 2).await;
    let after_first = executor.reminders::<Seat>("ticks").await.unwrap().remove(0);
    // Moved on past the firing, not by one period (which would leave it 1.8 s in the past).
    assert!(
        after_first.due_at > started_at,
        "moved past the firing: {after_first:?}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A second tick before the scheduler stops: waited for, not taken for granted after the
    // sleep, which a stalled test process wakes from together with a due run the scheduler has
    // not fired yet.
    wait_for_events(&stores, "ticks", |e| e.len() >= 3).await;
    scheduler.stop().await;
    let ran_ms = u64::try_from(started.elapsed().as_millis()).unwrap();
    let ticks = events(&stores, "ticks")
        .await
        .iter()
        .filter(|e| **e == SeatEvent::Ticked)
        .count() as u64;
    // One for the missed runs, then at most one per 200 ms while the scheduler ran (the ten
    // missed runs fired one by one would be nine more).
    assert!(
        (2..=2 + ran_ms / 200).contains(&ticks),
        "{ticks} ticks in {ran_ms} ms"
    );
    assert_eq!(
        executor.reminders::<Seat>("ticks").await.unwrap().len(),
        1,
        "still scheduled"
    );
    executor.shutdown().await;
}

async fn a_firing_retried_after_it_was_stored_fires_nothing_more_and_answers_as_fired(
    stores: Stores,
) {
    let executor = executor(&stores);
    executor
        .execute::<Seat>(
            "twice",
            SeatCommand::Hold {
                ms: 0,
                tag: "x".into(),
            },
        )
        .await
        .unwrap();
    let stream = StreamId::new(Seat::TYPE, "twice").unwrap();
    let due = stores.events.reminders_of(&stream).await.unwrap().remove(0);
    let (first, second) = tokio::join!(
        executor.fire_reminder(due.clone()),
        executor.fire_reminder(due.clone())
    );
    // One stored it; the other learns that, with the version it stored.
    let mut outcomes = [first, second].map(|o| match o {
        FireOutcome::Fired { version, duplicate } => (version, duplicate),
        other => panic!("both attempts are the one firing: {other:?}"),
    });
    outcomes.sort();
    assert_eq!(outcomes, [(2, false), (2, true)]);
    // A retry later (a scheduler that did not learn the first outcome) is told the same: by
    // the actor's window, and by the store on an executor that remembers no command ids.
    let forgetful = Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Seat>(AggregateSettings::new().reminders().dedup(DedupWindow {
            max_commands: 0,
            max_age: None,
        }))
        .build()
        .unwrap();
    for retrying in [&executor, &forgetful] {
        let again = retrying.fire_reminder(due.clone()).await;
        assert!(
            matches!(
                again,
                FireOutcome::Fired {
                    version: 2,
                    duplicate: true
                }
            ),
            "{again:?}"
        );
    }
    assert_eq!(
        events(&stores, "twice").await,
        [SeatEvent::Held, SeatEvent::Expired { tag: "x".into() }]
    );
    executor.shutdown().await;
    forgetful.shutdown().await;
}

async fn reminders_from_outside_go_through_the_actor_and_need_them_turned_on(stores: Stores) {
    let executor = executor(&stores);
    executor
        .execute::<Seat>("outside", SeatCommand::Confirm)
        .await
        .unwrap();
    let due = Utc::now() + TimeDelta::hours(1);
    executor
        .remind::<Seat>("outside", Reminder::at("later", due, SeatCommand::Tick))
        .await
        .unwrap();
    let listed = executor.reminders::<Seat>("outside").await.unwrap();
    assert_eq!(
        listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["later"]
    );
    executor
        .cancel_reminder::<Seat>("outside", "later")
        .await
        .unwrap();
    assert!(
        executor
            .reminders::<Seat>("outside")
            .await
            .unwrap()
            .is_empty()
    );
    executor.shutdown().await;

    // Without `reminders()`, a command that schedules one stores nothing.
    let plain = Executor::builder(Arc::clone(&stores.events), Arc::clone(&stores.snapshots))
        .register::<Seat>(AggregateSettings::new())
        .build()
        .unwrap();
    let refused = plain
        .execute::<Seat>(
            "off",
            SeatCommand::Hold {
                ms: 10,
                tag: "o".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            CommandError::NotStored(ExecutorError::RemindersOff { .. })
        ),
        "{refused}"
    );
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    assert!(events(&stores, "off").await.is_empty());
    plain.shutdown().await;
}

async fn a_period_longer_than_the_reminder_years_is_refused_with_a_typed_error_and_stores_nothing(
    stores: Stores,
) {
    let executor = executor(&stores);
    let eons = TimeDelta::days(300_000 * 365);
    // From outside, through the actor.
    let refused = executor
        .remind::<Seat>(
            "eons",
            Reminder::at(
                "forever",
                Utc::now() + TimeDelta::hours(1),
                SeatCommand::Tick,
            )
            .every(eons),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ExecutorError::InvalidInput(InvalidInput::BadReminderPeriod { .. })
        ),
        "{refused}"
    );
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    // Scheduled by `decide`: the command's events are not stored either.
    let refused = executor
        .execute::<Seat>(
            "eons",
            SeatCommand::StartTicking {
                first_in_ms: 1_000,
                every_ms: eons.num_milliseconds(),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            CommandError::NotStored(ExecutorError::InvalidInput(
                InvalidInput::BadReminderPeriod { .. }
            ))
        ),
        "{refused}"
    );
    assert!(executor.reminders::<Seat>("eons").await.unwrap().is_empty());
    assert!(events(&stores, "eons").await.is_empty());
    executor.shutdown().await;
}

async fn reminders_no_executor_here_serves_do_not_keep_later_due_ones_from_firing(stores: Stores) {
    let executor = executor(&stores);
    // Two reminders of a type this executor does not serve, due before the served one: the
    // earliest `batch` (2) due reminders of every poll.
    let elsewhere = StreamId::new("elsewhere", "e-1").unwrap();
    let long_due = Utc::now() - TimeDelta::seconds(10);
    let unserved = ["a", "b"]
        .map(|name| ReminderChange::Schedule {
            name: name.into(),
            reminder_id: uuid::Uuid::now_v7(),
            due_at: long_due,
            period_ms: None,
            payload: bytes::Bytes::from_static(b"not ours"),
        })
        .to_vec();
    stores
        .events
        .append_with_reminders(&elsewhere, 0, Vec::new(), unserved, None)
        .await
        .unwrap();
    executor
        .execute::<Seat>(
            "served",
            SeatCommand::Hold {
                ms: 0,
                tag: "s".into(),
            },
        )
        .await
        .unwrap();
    let scheduler = Scheduler::start(
        executor.clone(),
        SchedulerSettings {
            poll_interval: Duration::from_millis(20),
            batch: 2,
            // Set aside until long after the test: only a due query past them finds the rest.
            retry_after: Duration::from_secs(600),
            ..SchedulerSettings::default()
        },
    );
    wait_for_events(&stores, "served", |e| e.len() == 2).await;
    // A firing is counted once it returns, a moment after its event is stored.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while scheduler.stats().fired == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "never counted the firing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = scheduler.stats();
    assert_eq!(stats.fired, 1, "{stats:?}");
    assert!(stats.unserved >= 2, "{stats:?}");
    assert_eq!(
        stores.events.reminders_of(&elsewhere).await.unwrap().len(),
        2,
        "left for an executor that serves them"
    );
    scheduler.stop().await;
    executor.shutdown().await;
}

/// Hooks that, once armed, hold the next append recording a reminder's firing until released:
/// the moment between an actor's check of the reminder and its append.
struct PausingFirings {
    armed: AtomicBool,
    reached: Notify,
    release: Notify,
}

#[async_trait]
impl StoreHooks for PausingFirings {
    async fn append_with_reminders(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamId,
        expected_version: u64,
        events: Vec<NewEvent>,
        reminders: Vec<ReminderChange>,
        fence: Option<&Fence>,
    ) -> StoreResult<AppendReceipt> {
        let firing = reminders
            .iter()
            .any(|c| matches!(c, ReminderChange::Fired { .. }));
        if firing && self.armed.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        inner
            .append_with_reminders(stream, expected_version, events, reminders, fence)
            .await
    }
}

async fn a_reminder_cancelled_by_another_executor_while_its_firing_appends_fires_nothing(
    stores: Stores,
) {
    let pausing = Arc::new(Hooked::new(
        Arc::clone(&stores.events),
        PausingFirings {
            armed: AtomicBool::new(false),
            reached: Notify::new(),
            release: Notify::new(),
        },
    ));
    let a = Executor::builder(
        Arc::clone(&pausing) as Arc<dyn EventStore>,
        Arc::clone(&stores.snapshots),
    )
    .register::<Seat>(AggregateSettings::new().reminders())
    .build()
    .unwrap();
    let b = executor(&stores);
    let id = "raced";
    b.execute::<Seat>(
        id,
        SeatCommand::Hold {
            ms: 0,
            tag: "r".into(),
        },
    )
    .await
    .unwrap();
    let stream = StreamId::new(Seat::TYPE, id).unwrap();
    let due = stores.events.reminders_of(&stream).await.unwrap().remove(0);

    // A checks the reminder is the stored one, decides, and is held before its append.
    pausing.armed.store(true, Ordering::SeqCst);
    let firing = {
        let a = a.clone();
        tokio::spawn(async move { a.fire_reminder(due).await })
    };
    tokio::time::timeout(Duration::from_secs(10), pausing.reached.notified())
        .await
        .expect("A's firing reached its append");
    // Meanwhile B, another executor on the same store, cancels the reminder.
    b.cancel_reminder::<Seat>(id, "expire").await.unwrap();
    pausing.release.notify_one();
    let outcome = firing.await.unwrap();

    assert!(matches!(outcome, FireOutcome::Stale), "{outcome:?}");
    assert_eq!(
        events(&stores, id).await,
        [SeatEvent::Held],
        "the cancelled reminder's command stored nothing"
    );
    assert!(b.reminders::<Seat>(id).await.unwrap().is_empty());
    a.shutdown().await;
    b.shutdown().await;
}

on_both_backends! {
    fires_once => a_reminder_scheduled_by_decide_is_stored_with_its_command_and_fires_once;
    old_forms => cancelled_and_replaced_reminders_never_fire_in_their_old_form;
    refused => a_refused_firing_is_recorded_on_the_reminder_and_not_retried;
    periodic => a_periodic_reminder_moves_on_and_a_missed_run_fires_once;
    retried_firing => a_firing_retried_after_it_was_stored_fires_nothing_more_and_answers_as_fired;
    from_outside => reminders_from_outside_go_through_the_actor_and_need_them_turned_on;
    too_long_period => a_period_longer_than_the_reminder_years_is_refused_with_a_typed_error_and_stores_nothing;
    unserved_first => reminders_no_executor_here_serves_do_not_keep_later_due_ones_from_firing;
    raced_cancel => a_reminder_cancelled_by_another_executor_while_its_firing_appends_fires_nothing;
}
