//! The projector on the in-memory store: catch-up in batches then live, filters, resuming from a
//! checkpoint, rebuilds, retries that never skip a batch, and wake-ups that beat the poll.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use event_stores::testing::{Hooked, StoreHooks};
use event_stores::{
    EventStore, InMemoryEventStore, NewEvent, RecordedEvent, StoreError, StoreResult, StreamId,
};
use parking_lot::Mutex;
use projections::{
    Checkpoints, EventFilter, HandlerError, InMemoryCheckpoints, Projection, ProjectionError,
    Projector, ProjectorSettings,
};

const WAIT: Duration = Duration::from_secs(10);

/// Records every event it is handed (stream, version, position), in order; can fail its first
/// `fail_first` batches, and its first `fail_resets` resets after clearing what it recorded;
/// with a `reset_gate`, each reset waits there after counting itself in `resets`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<(String, u64, u64)>>>,
    resets: Arc<AtomicU32>,
    fail_first: Arc<AtomicU32>,
    fail_resets: Arc<AtomicU32>,
    filter: Option<&'static str>,
    reset_gate: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn filter(&self) -> EventFilter {
        match self.filter {
            Some(aggregate_type) => EventFilter::Types(vec![aggregate_type]),
            None => EventFilter::All,
        }
    }

    async fn handle(&self, events: &[RecordedEvent]) -> Result<(), HandlerError> {
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err("failing on purpose".into());
        }
        self.seen.lock().extend(
            events
                .iter()
                .map(|e| (e.stream.to_string(), e.version, e.position)),
        );
        Ok(())
    }

    async fn reset(&self) -> Result<(), HandlerError> {
        self.resets.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.reset_gate {
            gate.acquire().await?.forget();
        }
        self.seen.lock().clear();
        let failing = self
            .fail_resets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err("failing after clearing, on purpose".into());
        }
        Ok(())
    }
}

/// Appends `count` one-event commands round-robin over `streams` streams of `aggregate_type`;
/// returns the last position.
async fn append(store: &InMemoryEventStore, aggregate_type: &str, streams: u64, count: u64) -> u64 {
    let mut last = 0;
    for i in 0..count {
        let stream = StreamId::new(aggregate_type, format!("s{}", i % streams)).unwrap();
        let version = store.stream_version(&stream).await.unwrap();
        let receipt = store
            .append(
                &stream,
                version,
                vec![NewEvent::new("Happened", 1, vec![0x90])],
            )
            .await
            .unwrap();
        last = receipt.last_position;
    }
    last
}

fn settings() -> ProjectorSettings {
    ProjectorSettings::default()
        .batch_size(1_000)
        .poll_interval(Duration::from_millis(20))
}

fn positions(recorder: &Recorder) -> Vec<u64> {
    recorder.seen.lock().iter().map(|(_, _, p)| *p).collect()
}

#[tokio::test]
async fn catches_up_in_batches_then_follows_new_events_in_store_order_once_each() {
    let store = Arc::new(InMemoryEventStore::new());
    let before = append(&store, "account", 7, 2_500).await;
    let recorder = Recorder::default();
    let projector = Projector::with_settings(store.clone(), settings());
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    assert!(running.wait_for(before, WAIT).await);
    let stats = running.stats();
    assert_eq!((stats.events_handled, stats.batches), (2_500, 3));

    let after = append(&store, "account", 7, 300).await;
    assert!(running.wait_for(after, WAIT).await);
    let seen = positions(&recorder);
    assert_eq!(seen.len(), 2_800);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "store order, no repeats"
    );
    assert_eq!(running.stats().position, after);
    running.stop().await;
}

#[tokio::test]
async fn a_filter_hands_over_only_its_types_and_the_checkpoint_passes_the_rest() {
    let store = Arc::new(InMemoryEventStore::new());
    append(&store, "account", 3, 40).await;
    let last = append(&store, "customer", 2, 10).await;
    let recorder = Recorder {
        filter: Some("customer"),
        ..Recorder::default()
    };
    let projector = Projector::with_settings(store.clone(), settings());
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    assert!(running.wait_for(last, WAIT).await);
    let seen = recorder.seen.lock().clone();
    assert_eq!(seen.len(), 10);
    assert!(
        seen.iter()
            .all(|(stream, _, _)| stream.starts_with("customer/"))
    );
    let stats = running.stats();
    assert_eq!((stats.events_read, stats.events_handled), (50, 10));
    running.stop().await;
}

#[tokio::test]
async fn a_restarted_projection_resumes_from_its_checkpoint() {
    let store = Arc::new(InMemoryEventStore::new());
    let checkpoints = Arc::new(InMemoryCheckpoints::new());
    let first = append(&store, "account", 4, 100).await;
    let recorder = Recorder::default();
    let projector = Projector::with_settings(store.clone(), settings());
    let running = projector.run(recorder.clone(), checkpoints.clone());
    assert!(running.wait_for(first, WAIT).await);
    running.stop().await;

    let second = append(&store, "account", 4, 25).await;
    let running = projector.run(recorder.clone(), checkpoints);
    assert!(running.wait_for(second, WAIT).await);
    assert_eq!(running.stats().events_handled, 25, "only the new events");
    assert_eq!(positions(&recorder).len(), 125);
    running.stop().await;
}

#[tokio::test]
async fn a_rebuild_resets_the_read_model_and_replays_from_the_first_event() {
    let store = Arc::new(InMemoryEventStore::new());
    let last = append(&store, "account", 4, 60).await;
    let recorder = Recorder::default();
    let projector = Projector::with_settings(store.clone(), settings());
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    assert!(running.wait_for(last, WAIT).await);
    running.rebuild().await.unwrap();
    assert_eq!(recorder.resets.load(Ordering::SeqCst), 1);
    assert!(running.wait_for(last, WAIT).await);
    let seen = positions(&recorder);
    assert_eq!(seen.len(), 60, "the read model holds each event once");
    assert_eq!(
        running.stats().events_handled,
        120,
        "every event handled twice in all"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_failing_batch_is_retried_never_skipped() {
    let store = Arc::new(InMemoryEventStore::new());
    let last = append(&store, "account", 2, 30).await;
    let recorder = Recorder {
        fail_first: Arc::new(AtomicU32::new(3)),
        ..Recorder::default()
    };
    let projector = Projector::with_settings(
        store.clone(),
        settings().max_backoff(Duration::from_millis(50)),
    );
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    assert!(running.wait_for(last, WAIT).await);
    let stats = running.stats();
    assert_eq!(stats.retries, 3);
    assert_eq!(
        stats.last_error, None,
        "cleared by the batch that succeeded"
    );
    assert_eq!(positions(&recorder).len(), 30);
    running.stop().await;
}

#[tokio::test]
async fn a_wake_up_reaches_a_caught_up_projection_before_its_next_poll() {
    let store = Arc::new(InMemoryEventStore::new());
    let first = append(&store, "account", 1, 1).await;
    let recorder = Recorder::default();
    // No rechecks after the start or a wake-up: only the wake-up's own read can find it.
    let projector = Projector::with_settings(
        store.clone(),
        settings()
            .poll_interval(Duration::from_secs(3600))
            .recheck_window(Duration::ZERO),
    );
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    assert!(running.wait_for(first, WAIT).await);
    // Caught up once its next read finds nothing more.
    let deadline = std::time::Instant::now() + WAIT;
    while !running.stats().caught_up {
        assert!(std::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let second = append(&store, "account", 1, 1).await;
    assert!(
        !running.wait_for(second, Duration::from_millis(300)).await,
        "no poll for an hour: not seen without a wake-up"
    );
    projector.wake();
    assert!(running.wait_for(second, WAIT).await);
    running.stop().await;
}

/// Handles its first batch, then waits at the gate before each further one.
#[derive(Clone)]
struct Gated {
    batches: Arc<AtomicU32>,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl Projection for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn handle(&self, _events: &[RecordedEvent]) -> Result<(), HandlerError> {
        if self.batches.fetch_add(1, Ordering::SeqCst) > 0 {
            self.gate.acquire().await?.forget();
        }
        Ok(())
    }

    async fn reset(&self) -> Result<(), HandlerError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_projection_behind_reports_how_many_events_it_has_still_to_read() {
    let store = Arc::new(InMemoryEventStore::new());
    let last = append(&store, "account", 5, 2_500).await;
    let gated = Gated {
        batches: Arc::new(AtomicU32::new(0)),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let projector = Projector::with_settings(store.clone(), settings());
    let running = projector.run(gated.clone(), Arc::new(InMemoryCheckpoints::new()));
    // The first batch of 1 000 is checkpointed; the second waits at the gate.
    let first_batch = last - 1_500;
    assert!(running.wait_for(first_batch, WAIT).await);
    let stats = running.stats();
    assert_eq!((stats.position, stats.events_behind), (first_batch, 1_500));
    assert!(!stats.caught_up);

    gated.gate.add_permits(10);
    assert!(running.wait_for(last, WAIT).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = running.stats();
    assert_eq!((stats.events_behind, stats.caught_up), (0, true));
    running.stop().await;
}

/// In-memory checkpoints that refuse to save position 0 (a rebuild's), as a database that is
/// down at that moment would.
#[derive(Default)]
struct NoZero(InMemoryCheckpoints);

#[async_trait]
impl Checkpoints for NoZero {
    async fn load(&self, projection: &str) -> Result<u64, ProjectionError> {
        self.0.load(projection).await
    }

    async fn save(&self, projection: &str, position: u64) -> Result<(), ProjectionError> {
        if position == 0 {
            return Err(ProjectionError::Checkpoint {
                projection: projection.to_owned(),
                message: "refusing position 0, on purpose".into(),
            });
        }
        self.0.save(projection, position).await
    }
}

#[tokio::test]
async fn a_rebuild_whose_checkpoint_cannot_be_saved_leaves_the_read_model_whole() {
    let store = Arc::new(InMemoryEventStore::new());
    let first = append(&store, "account", 3, 40).await;
    let recorder = Recorder::default();
    let projector = Projector::with_settings(store.clone(), settings());
    let running = projector.run(recorder.clone(), Arc::new(NoZero::default()));
    assert!(running.wait_for(first, WAIT).await);

    assert!(
        running.rebuild().await.is_err(),
        "the checkpoint save failed"
    );
    let last = append(&store, "account", 3, 10).await;
    assert!(running.wait_for(last, WAIT).await);
    assert_eq!(
        positions(&recorder),
        (1..=last).collect::<Vec<_>>(),
        "no event lost: the read model was not cleared under a checkpoint still at {first}"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_rebuild_whose_reset_fails_partway_replays_from_the_first_event() {
    let store = Arc::new(InMemoryEventStore::new());
    let first = append(&store, "account", 3, 40).await;
    let recorder = Recorder {
        fail_resets: Arc::new(AtomicU32::new(1)),
        ..Recorder::default()
    };
    let projector = Projector::with_settings(store.clone(), settings());
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    assert!(running.wait_for(first, WAIT).await);

    assert!(running.rebuild().await.is_err(), "the reset failed");
    let last = append(&store, "account", 3, 10).await;
    assert!(running.wait_for(last, WAIT).await);
    assert_eq!(
        positions(&recorder),
        (1..=last).collect::<Vec<_>>(),
        "the events the failed reset cleared were handled again"
    );
    running.stop().await;
}

#[tokio::test]
async fn a_batch_size_of_zero_set_directly_still_handles_every_event() {
    let store = Arc::new(InMemoryEventStore::new());
    let last = append(&store, "account", 2, 20).await;
    let recorder = Recorder::default();
    let mut zero = settings();
    zero.batch_size = 0;
    let projector = Projector::with_settings(store.clone(), zero);
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    assert!(
        running.wait_for(last, Duration::from_secs(3)).await,
        "{:?}",
        running.stats()
    );
    assert_eq!(positions(&recorder), (1..=last).collect::<Vec<_>>());
    assert_eq!(running.stats().batches, 20, "one event per batch");
    running.stop().await;
}

/// Hooks for an in-memory store whose `read_all` shows positions only up to a bound, as
/// PostgreSQL's hides an event until the transactions older than its own have ended; its
/// `read_all` can also fail, as when the database is unreachable.
struct Hiding {
    shown_up_to: AtomicU64,
    /// Positions past `.0` are hidden from the next `.1` reads that succeed.
    hidden_for_reads: Mutex<Option<(u64, u64)>>,
    failing: AtomicBool,
    /// Reads that succeeded.
    reads: AtomicU64,
}

impl Hiding {
    fn new(store: InMemoryEventStore) -> Hooked<Self> {
        let hooks = Self {
            shown_up_to: AtomicU64::new(u64::MAX),
            hidden_for_reads: Mutex::new(None),
            failing: AtomicBool::new(false),
            reads: AtomicU64::new(0),
        };
        Hooked::new(Arc::new(store), hooks)
    }

    fn show_up_to(&self, position: u64) {
        self.shown_up_to.store(position, Ordering::SeqCst);
    }

    /// Hides the positions past `position` from the next `reads` reads that succeed, as a
    /// transaction that ends by itself a moment later would: no test step has to be quick
    /// enough to show them after the right read.
    fn hide_past_for_reads(&self, position: u64, reads: u64) {
        *self.hidden_for_reads.lock() = Some((position, reads));
    }

    fn fail_reads(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

#[async_trait]
impl StoreHooks for Hiding {
    async fn read_all(
        &self,
        inner: &Arc<dyn EventStore>,
        after_position: u64,
        limit: usize,
    ) -> StoreResult<Vec<RecordedEvent>> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                message: "failing reads, on purpose".into(),
                source: None,
            });
        }
        let mut bound = self.shown_up_to.load(Ordering::SeqCst);
        {
            let mut hidden = self.hidden_for_reads.lock();
            if let Some((past, reads)) = *hidden {
                bound = bound.min(past);
                *hidden = (reads > 1).then_some((past, reads - 1));
            }
        }
        let mut events = inner.read_all(after_position, limit).await?;
        events.retain(|e| e.position <= bound);
        self.reads.fetch_add(1, Ordering::SeqCst);
        Ok(events)
    }
}

type HidingRunner = (
    Arc<Hooked<Hiding>>,
    Projector,
    projections::ProjectionHandle,
);

/// A caught-up runner that polls once an hour, on a store that hides everything after
/// `shown` for now.
fn hiding_runner(
    shown: u64,
    store: InMemoryEventStore,
    projection: impl Projection,
) -> HidingRunner {
    hiding_runner_with(settings(), shown, store, projection)
}

/// [`hiding_runner`] with `settings`, but for the hour-long poll.
fn hiding_runner_with(
    settings: ProjectorSettings,
    shown: u64,
    store: InMemoryEventStore,
    projection: impl Projection,
) -> HidingRunner {
    let hiding = Arc::new(Hiding::new(store));
    hiding.show_up_to(shown);
    let projector = Projector::with_settings(
        Arc::clone(&hiding) as Arc<dyn EventStore>,
        settings.poll_interval(Duration::from_secs(3600)),
    );
    let running = projector.run(projection, Arc::new(InMemoryCheckpoints::new()));
    (hiding, projector, running)
}

async fn wait_caught_up(running: &projections::ProjectionHandle) {
    let deadline = std::time::Instant::now() + WAIT;
    while !running.stats().caught_up {
        assert!(std::time::Instant::now() < deadline, "never caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_event_hidden_from_the_first_reads_is_seen_once_shown_without_a_wake_up_or_poll() {
    let store = InMemoryEventStore::new();
    let last = append(&store, "account", 1, 1).await;
    let recorder = Recorder::default();
    let (hiding, _projector, running) = hiding_runner(0, store, recorder.clone());
    wait_caught_up(&running).await;
    assert!(positions(&recorder).is_empty(), "hidden at first");

    // The start counts as a wake-up, and loading the checkpoint is not progress that ends it.
    hiding.show_up_to(u64::MAX);
    assert!(
        running.wait_for(last, WAIT).await,
        "seen by a recheck: {:?}",
        running.stats()
    );
    running.stop().await;
}

#[tokio::test]
async fn a_wake_up_during_a_batch_still_finds_an_event_hidden_from_the_next_read() {
    let store = InMemoryEventStore::new();
    let first = append(&store, "account", 1, 1).await;
    let gated = Gated {
        batches: Arc::new(AtomicU32::new(0)),
        gate: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    // The first batch passes; the second (the event below) waits at the gate.
    let (hiding, projector, running) = hiding_runner(u64::MAX, store.clone(), gated.clone());
    assert!(running.wait_for(first, WAIT).await);
    let second = append(&store, "account", 1, 1).await;
    projector.wake();
    let deadline = std::time::Instant::now() + WAIT;
    while gated.batches.load(Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "second batch never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // While that batch is handled, a third event is appended and announced, but the reads
    // after the batch do not show it yet.
    hiding.show_up_to(second);
    let third = append(&store, "account", 1, 1).await;
    projector.wake();
    let reads = hiding.reads.load(Ordering::SeqCst);
    gated.gate.add_permits(10);
    assert!(running.wait_for(second, WAIT).await);
    while hiding.reads.load(Ordering::SeqCst) <= reads {
        assert!(
            std::time::Instant::now() < deadline,
            "no read after the batch"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        gated.batches.load(Ordering::SeqCst),
        2,
        "the third event was hidden from that read"
    );

    hiding.show_up_to(u64::MAX);
    assert!(
        running.wait_for(third, WAIT).await,
        "the wake-up during the batch keeps the runner rechecking: {:?}",
        running.stats()
    );
    running.stop().await;
}

/// The recheck window of the runners below: short enough to wait for it to close, long enough
/// for the runner's own rechecks (2 ms apart at first) to fall in it on a loaded machine.
const SHORT_WINDOW: Duration = Duration::from_secs(2);

/// Waits until `condition` holds, at most [`WAIT`].
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{what}: never");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_wake_up_during_a_failure_pause_restarts_the_recheck_window() {
    let store = InMemoryEventStore::new();
    let recorder = Recorder::default();
    let hiding = Arc::new(Hiding::new(store.clone()));
    hiding.fail_reads(true);
    // Reads fail from the start, with pauses that double up to 1 s: the window the start opened
    // closes while they go on.
    let projector = Projector::with_settings(
        Arc::clone(&hiding) as Arc<dyn EventStore>,
        settings()
            .poll_interval(Duration::from_secs(3600))
            .recheck_window(SHORT_WINDOW)
            .max_backoff(Duration::from_secs(1)),
    );
    let running = projector.run(recorder.clone(), Arc::new(InMemoryCheckpoints::new()));
    until("a failed read", || running.stats().retries > 0).await;
    // The window opened before that first failure.
    tokio::time::sleep(SHORT_WINDOW).await;
    let retries = running.stats().retries;
    until("a failure after the window closed", || {
        running.stats().retries > retries
    })
    .await;

    // In the pause after that failure, an event is appended and announced, hidden from the
    // first read that succeeds. (Should a stall let the pause end first, the wake-up finds the
    // runner waiting instead, and the event is found all the same.)
    hiding.hide_past_for_reads(0, 1);
    let last = append(&store, "account", 1, 1).await;
    hiding.fail_reads(false);
    projector.wake();
    assert!(
        running.wait_for(last, WAIT).await,
        "the wake-up during the pause keeps the runner rechecking: {:?}",
        running.stats()
    );
    assert_eq!(positions(&recorder), [last]);
    running.stop().await;
}

#[tokio::test]
async fn a_wake_up_during_a_rebuild_restarts_the_recheck_window() {
    let store = InMemoryEventStore::new();
    let first = append(&store, "account", 1, 1).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let recorder = Recorder {
        reset_gate: Some(Arc::clone(&gate)),
        ..Recorder::default()
    };
    let (hiding, projector, running) = hiding_runner_with(
        settings().recheck_window(SHORT_WINDOW),
        u64::MAX,
        store.clone(),
        recorder.clone(),
    );
    assert!(running.wait_for(first, WAIT).await);
    // The window the start opened closes.
    tokio::time::sleep(SHORT_WINDOW).await;

    // While the read model is reset, an event is appended and announced, hidden from the two
    // reads of the replay (the first event, then nothing more).
    let during = async {
        until("the reset", || recorder.resets.load(Ordering::SeqCst) == 1).await;
        hiding.hide_past_for_reads(first, 2);
        let last = append(&store, "account", 1, 1).await;
        projector.wake();
        gate.add_permits(1);
        last
    };
    let (rebuilt, last) = tokio::join!(running.rebuild(), during);
    rebuilt.unwrap();
    assert!(
        running.wait_for(last, WAIT).await,
        "the wake-up during the rebuild keeps the runner rechecking: {:?}",
        running.stats()
    );
    assert_eq!(positions(&recorder), [first, last]);
    running.stop().await;
}
