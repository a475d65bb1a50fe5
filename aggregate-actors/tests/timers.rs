//! Timers: commands a live aggregate sends itself later. They start only with a successful
//! command, tick through the aggregate's own mailbox, can be replaced and cancelled, do not
//! keep an idle aggregate live, and end with its activation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use aggregate_actors::event_stores::{
    EventStore, InMemoryEventStore, InMemorySnapshotStore, ReadQuery, StreamId,
};
use aggregate_actors::timer::Timer;
use aggregate_actors::{
    Aggregate, AggregateSettings, AggregateStats, CommandError, Context, Executor, RuntimeConfig,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone)]
enum Cmd {
    /// Starts the periodic "poll" timer.
    Watch { every_ms: u64 },
    /// Cancels it.
    Unwatch,
    /// Starts the one-shot "once" timer (replacing a running one).
    Once { after_ms: u64 },
    /// Starts a timer, then rejects the command.
    StartThenRefuse,
    /// From now on, refuse polls.
    RefusePolls,
    /// What the "poll" timer sends.
    Poll,
    /// What the "once" timer sends.
    Ring,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Ev {
    Watching,
    Unwatched,
    Armed,
    Refusing,
    Polled,
    Rang,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counts {
    polled: u64,
    rang: u64,
    refusing: bool,
}

#[derive(Debug, thiserror::Error)]
enum No {
    #[error("refused on purpose")]
    OnPurpose,
    #[error("polls are refused")]
    Polls,
}

struct Poller;

impl Aggregate for Poller {
    const TYPE: &'static str = "poller";
    type Command = Cmd;
    type Event = Ev;
    type State = Counts;
    type Error = No;

    fn decide(state: &Counts, command: &Cmd, ctx: &mut Context<'_, Self>) -> Result<Vec<Ev>, No> {
        Ok(match command {
            Cmd::Watch { every_ms } => {
                let every = Duration::from_millis(*every_ms);
                ctx.start_timer(Timer::every("poll", every, Cmd::Poll));
                vec![Ev::Watching]
            }
            Cmd::Unwatch => {
                ctx.cancel_timer("poll");
                vec![Ev::Unwatched]
            }
            Cmd::Once { after_ms } => {
                let after = Duration::from_millis(*after_ms);
                ctx.start_timer(Timer::after("once", after, Cmd::Ring));
                assert_eq!(ctx.started_timers(), vec!["once"]);
                vec![Ev::Armed]
            }
            Cmd::StartThenRefuse => {
                ctx.start_timer(Timer::after("once", Duration::from_millis(10), Cmd::Ring));
                return Err(No::OnPurpose);
            }
            Cmd::RefusePolls => vec![Ev::Refusing],
            Cmd::Poll if state.refusing => return Err(No::Polls),
            Cmd::Poll => vec![Ev::Polled],
            Cmd::Ring => vec![Ev::Rang],
        })
    }

    fn apply(state: &mut Counts, event: &Ev) {
        match event {
            Ev::Polled => state.polled += 1,
            Ev::Rang => state.rang += 1,
            Ev::Refusing => state.refusing = true,
            Ev::Watching | Ev::Unwatched | Ev::Armed => {}
        }
    }
}

struct Fixture {
    events: Arc<InMemoryEventStore>,
    executor: Executor,
}

fn fixture(idle_timeout: Option<Duration>) -> Fixture {
    let events = Arc::new(InMemoryEventStore::new());
    let settings = AggregateSettings::<Poller>::new().runtime(RuntimeConfig {
        idle_timeout,
        ..RuntimeConfig::default()
    });
    let executor = Executor::builder(
        Arc::clone(&events) as Arc<dyn EventStore>,
        Arc::new(InMemorySnapshotStore::new()),
    )
    .register::<Poller>(settings)
    .build()
    .unwrap();
    Fixture { events, executor }
}

impl Fixture {
    async fn state(&self, id: &str) -> Counts {
        self.executor.state::<Poller>(id).await.unwrap().state
    }

    /// The stream's version, read from the store (activates nothing).
    async fn stored_version(&self, id: &str) -> u64 {
        let stream = StreamId::new(Poller::TYPE, id).unwrap();
        self.events.stream_version(&stream).await.unwrap()
    }

    fn stats(&self) -> AggregateStats {
        self.executor.stats_of::<Poller>().unwrap().aggregate
    }

    fn live(&self) -> usize {
        self.executor.stats_of::<Poller>().unwrap().runtime.live
    }

    /// Waits (up to 5 s) until the state satisfies `done`.
    async fn until(&self, id: &str, what: &str, done: impl Fn(&Counts) -> bool) -> Counts {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let state = self.state(id).await;
            if done(&state) {
                return state;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {state:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_timer_delivers_its_command_once_after_its_delay() {
    let f = fixture(None);
    let delay = Duration::from_millis(500);
    f.executor
        .execute::<Poller>("p", Cmd::Once { after_ms: 500 })
        .await
        .unwrap();
    f.until("p", "the timer rang", |s| s.rang == 1).await;
    // Not before its delay, measured where it happened rather than by asking in time (which a
    // stalled test may not): the timer starts once the arming command is stored, and the
    // ring is stored after its command was delivered, so the store's stamps are at least the
    // delay apart. (Less a millisecond: the store stamps with the wall clock, timers run on
    // the monotonic one.)
    let stored = f
        .events
        .read_stream(&StreamId::new(Poller::TYPE, "p").unwrap(), ReadQuery::all())
        .await
        .unwrap();
    let types: Vec<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["Armed", "Rang"]);
    let apart = (stored[1].recorded_at - stored[0].recorded_at)
        .to_std()
        .unwrap_or_default();
    assert!(
        apart >= delay - Duration::from_millis(1),
        "rang {apart:?} after it was armed, before its delay of {delay:?}"
    );
    // Longer than the delay: a timer that armed itself again would have rung again.
    tokio::time::sleep(delay + Duration::from_millis(200)).await;
    assert_eq!(f.state("p").await.rang, 1, "once only");
    assert_eq!(f.stats().timer_ticks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_a_timer_of_the_same_name_replaces_the_running_one() {
    let f = fixture(None);
    f.executor
        .execute::<Poller>("p", Cmd::Once { after_ms: 2_000 })
        .await
        .unwrap();
    // Replaced well before the first would ring, even when the test stalls for several
    // hundred milliseconds on a loaded machine.
    f.executor
        .execute::<Poller>("p", Cmd::Once { after_ms: 2_050 })
        .await
        .unwrap();
    f.until("p", "the replacement rang", |s| s.rang == 1).await;
    // Both timers' times have passed now (the replacement's is the later).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.state("p").await.rang, 1, "the replaced timer never rang");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_timer_ticks_until_a_command_cancels_it_and_not_once_after() {
    let f = fixture(None);
    f.executor
        .execute::<Poller>("p", Cmd::Watch { every_ms: 10 })
        .await
        .unwrap();
    f.until("p", "polled three times", |s| s.polled >= 3).await;
    f.executor
        .execute::<Poller>("p", Cmd::Unwatch)
        .await
        .unwrap();
    let at_cancel = f.state("p").await.polled;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A tick already in the mailbox when the timer was cancelled is recognised as stale.
    assert_eq!(f.state("p").await.polled, at_cancel);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_command_starts_no_timer() {
    let f = fixture(None);
    f.executor
        .execute::<Poller>("p", Cmd::Once { after_ms: 10_000 })
        .await
        .unwrap();
    let refused = f
        .executor
        .execute::<Poller>("p", Cmd::StartThenRefuse)
        .await;
    assert!(matches!(
        refused,
        Err(CommandError::Rejected(No::OnPurpose))
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.state("p").await.rang,
        0,
        "the refused command's timer never ran"
    );
    assert_eq!(f.stats().timer_ticks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_tick_is_counted_and_the_timer_goes_on() {
    let f = fixture(None);
    f.executor
        .execute::<Poller>("p", Cmd::RefusePolls)
        .await
        .unwrap();
    let rejected_before = f.stats().commands_rejected;
    f.executor
        .execute::<Poller>("p", Cmd::Watch { every_ms: 10 })
        .await
        .unwrap();
    // A tick is counted when it is taken and its rejection once decided: wait for the
    // rejections themselves, within a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.stats().commands_rejected - rejected_before < 3 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", f.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = f.stats();
    assert!(stats.timer_ticks >= 3, "{stats:?}");
    assert_eq!(f.state("p").await.polled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_end_when_the_aggregate_passivates_and_never_reactivate_it() {
    let f = fixture(None);
    f.executor
        .execute::<Poller>("p", Cmd::Watch { every_ms: 10 })
        .await
        .unwrap();
    f.until("p", "polled twice", |s| s.polled >= 2).await;
    assert!(f.executor.passivate::<Poller>("p").await.unwrap());
    let at_passivation = f.stored_version("p").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        f.stored_version("p").await,
        at_passivation,
        "no tick stored after"
    );
    assert_eq!(f.live(), 0, "no tick reactivated it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticking_timer_does_not_keep_an_idle_aggregate_live() {
    let f = fixture(Some(Duration::from_millis(200)));
    f.executor
        .execute::<Poller>("p", Cmd::Watch { every_ms: 10 })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.live() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still live after 5 s of ticks only"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stored = f.stored_version("p").await;
    assert!(stored >= 3, "it ticked while live (version {stored})");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.stored_version("p").await, stored);
}
