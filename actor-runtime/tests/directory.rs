//! Specification tests for the virtual-actor directory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actor_runtime::{
    Directory, Misplaced, PassivationReason, Placement, Reply, RuntimeConfig, RuntimeError,
    VirtualActor,
};
use tokio::{sync::watch, task::JoinSet};

// ---------------------------------------------------------------------------------------------
// The test actor
// ---------------------------------------------------------------------------------------------

#[derive(Debug, thiserror::Error)]
#[error("activation of {0} refused")]
struct Refused(u64);

/// What the test observes from inside the actors.
struct Probe {
    activations: AtomicU64,
    activations_by_key: Mutex<HashMap<u64, u64>>,
    /// Live instances, as the actors themselves count them (+1 in activate, -1 in drop).
    live: AtomicI64,
    max_live: AtomicI64,
    passivations: Mutex<Vec<(u64, PassivationReason)>>,
    refuse: Mutex<HashSet<u64>>,
    panic_on_activate: Mutex<HashSet<u64>>,
    activation_delay: Mutex<Option<Duration>>,
    in_handle: Mutex<HashMap<u64, Arc<AtomicBool>>>,
    overlaps: AtomicU64,
    gate: watch::Sender<bool>,
    waiting: AtomicU64,
}

impl Probe {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            activations: AtomicU64::new(0),
            activations_by_key: Mutex::new(HashMap::new()),
            live: AtomicI64::new(0),
            max_live: AtomicI64::new(0),
            passivations: Mutex::new(Vec::new()),
            refuse: Mutex::new(HashSet::new()),
            panic_on_activate: Mutex::new(HashSet::new()),
            activation_delay: Mutex::new(None),
            in_handle: Mutex::new(HashMap::new()),
            overlaps: AtomicU64::new(0),
            gate: watch::Sender::new(false),
            waiting: AtomicU64::new(0),
        })
    }

    fn activations_of(&self, key: u64) -> u64 {
        self.activations_by_key
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    fn passivations_with(&self, reason: PassivationReason) -> Vec<u64> {
        let mut keys: Vec<u64> = self
            .passivations
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| *r == reason)
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys
    }

    fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

enum Msg {
    /// Adds to the actor's in-memory total and answers the new total.
    Add(u64, Reply<u64>),
    /// Answers (key, value): proves the message reached the right actor.
    Echo(u64, Reply<(u64, u64)>),
    /// Answers this actor's running message number, checking no other handle overlaps.
    Next(Reply<u64>),
    /// Waits for the probe's gate to open, then answers the total.
    Wait(Reply<u64>),
    /// Panics in `handle`.
    Panic(Reply<()>),
    /// Declares its key new ([`VirtualActor::is_creation`]); answers whether this activation
    /// was built by `activate_new`.
    Create(Reply<bool>),
}

struct TestActor {
    key: u64,
    probe: Arc<Probe>,
    total: u64,
    sequence: u64,
    in_handle: Arc<AtomicBool>,
    /// Built by `activate_new`.
    built_new: bool,
}

impl VirtualActor for TestActor {
    type Key = u64;
    type Message = Msg;
    type Context = Probe;
    type ActivationError = Refused;

    async fn activate(key: &u64, probe: &Arc<Probe>) -> Result<Self, Refused> {
        let delay = *probe.activation_delay.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        if probe.refuse.lock().unwrap().contains(key) {
            return Err(Refused(*key));
        }
        if probe.panic_on_activate.lock().unwrap().contains(key) {
            panic!("activation of {key} panics (on purpose)");
        }
        probe.activations.fetch_add(1, Ordering::SeqCst);
        *probe
            .activations_by_key
            .lock()
            .unwrap()
            .entry(*key)
            .or_default() += 1;
        let live = probe.live.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_live.fetch_max(live, Ordering::SeqCst);
        let in_handle = Arc::clone(probe.in_handle.lock().unwrap().entry(*key).or_default());
        Ok(Self {
            key: *key,
            probe: Arc::clone(probe),
            total: 0,
            sequence: 0,
            in_handle,
            built_new: false,
        })
    }

    fn is_creation(first: &Msg) -> bool {
        matches!(first, Msg::Create(_))
    }

    async fn activate_new(key: &u64, probe: &Arc<Probe>) -> Result<Self, Refused> {
        let mut actor = Self::activate(key, probe).await?;
        actor.built_new = true;
        Ok(actor)
    }

    async fn handle(&mut self, message: Msg) {
        if self.in_handle.swap(true, Ordering::SeqCst) {
            self.probe.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        match message {
            Msg::Add(n, reply) => {
                self.total += n;
                reply.send(self.total);
            }
            Msg::Echo(value, reply) => {
                reply.send((self.key, value));
            }
            Msg::Next(reply) => {
                // Give a second activation (if there ever were one) a chance to overlap.
                tokio::task::yield_now().await;
                let n = self.sequence;
                self.sequence += 1;
                reply.send(n);
            }
            Msg::Wait(reply) => {
                self.probe.waiting.fetch_add(1, Ordering::SeqCst);
                let mut gate = self.probe.gate.subscribe();
                let _ = gate.wait_for(|open| *open).await;
                reply.send(self.total);
            }
            Msg::Create(reply) => {
                reply.send(self.built_new);
            }
            Msg::Panic(_reply) => {
                self.in_handle.store(false, Ordering::SeqCst);
                panic!("actor {} panics (on purpose)", self.key);
            }
        }
        self.in_handle.store(false, Ordering::SeqCst);
    }

    async fn passivate(&mut self, reason: PassivationReason) {
        self.probe
            .passivations
            .lock()
            .unwrap()
            .push((self.key, reason));
    }
}

impl Drop for TestActor {
    fn drop(&mut self) {
        self.probe.live.fetch_sub(1, Ordering::SeqCst);
    }
}

type Dir = Directory<TestActor>;

fn config() -> RuntimeConfig {
    RuntimeConfig {
        idle_timeout: None,
        call_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(10),
        ..RuntimeConfig::default()
    }
}

fn directory(probe: &Arc<Probe>, config: RuntimeConfig) -> Dir {
    Directory::new(Arc::clone(probe), config)
}

async fn add(dir: &Dir, key: u64, n: u64) -> Result<u64, RuntimeError<Refused>> {
    dir.call(&key, |reply| Msg::Add(n, reply)).await
}

/// Polls `condition` until it holds, failing the test after `limit`.
async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A small deterministic pseudo-random sequence (xorshift64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Activation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_creation_message_activates_a_cold_key_with_activate_new_and_is_only_a_hint_for_live_keys()
 {
    let probe = Probe::new();
    let dir = directory(&probe, config());

    assert!(
        dir.call(&1, Msg::Create).await.unwrap(),
        "cold key + creation message: activate_new"
    );
    assert!(
        dir.call(&1, Msg::Create).await.unwrap(),
        "the same live actor answers again"
    );
    assert_eq!(probe.activations_of(1), 1);

    add(&dir, 2, 1).await.unwrap();
    assert!(
        !dir.call(&2, Msg::Create).await.unwrap(),
        "a live key is not activated again: the message reaches the actor built by activate"
    );
    assert_eq!(probe.activations_of(2), 1);

    assert!(dir.passivate(&1).await);
    add(&dir, 1, 1).await.unwrap();
    assert!(
        !dir.call(&1, Msg::Create).await.unwrap(),
        "after a passivation, an ordinary first message activates with activate"
    );
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_keys_called_concurrently_activate_exactly_once_each() {
    const KEYS: u64 = 10_000;
    const CALLS_PER_KEY: u64 = 3;
    let probe = Probe::new();
    let dir = directory(&probe, config());

    let mut calls = JoinSet::new();
    for round in 0..CALLS_PER_KEY {
        for key in 0..KEYS {
            let dir = dir.clone();
            calls.spawn(async move { (round, add(&dir, key, 1).await) });
        }
    }
    while let Some(joined) = calls.join_next().await {
        let (_, result) = joined.unwrap();
        assert!(result.is_ok(), "call failed: {result:?}");
    }

    assert_eq!(probe.activations.load(Ordering::SeqCst), KEYS);
    let stats = dir.stats();
    assert_eq!(stats.activations, KEYS);
    assert_eq!(stats.activation_failures, 0);
    assert_eq!(dir.live_count(), KEYS as usize);
    assert_eq!(probe.live.load(Ordering::SeqCst), KEYS as i64);
    for key in [0, 1, 4_999, 9_999] {
        assert_eq!(add(&dir, key, 0).await.unwrap(), CALLS_PER_KEY);
        assert_eq!(probe.activations_of(key), 1);
    }
    dir.shutdown().await;
    assert_eq!(probe.live.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_calls_to_one_key_activate_once_and_are_handled_one_at_a_time() {
    let probe = Probe::new();
    *probe.activation_delay.lock().unwrap() = Some(Duration::from_millis(20));
    let dir = directory(&probe, config());

    let mut calls = JoinSet::new();
    for _ in 0..1_000 {
        let dir = dir.clone();
        calls.spawn(async move { dir.call(&42, Msg::Next).await });
    }
    let mut answers = Vec::new();
    while let Some(joined) = calls.join_next().await {
        answers.push(joined.unwrap().unwrap());
    }
    answers.sort_unstable();

    assert_eq!(
        answers,
        (0..1_000).collect::<Vec<u64>>(),
        "each call answered exactly once"
    );
    assert_eq!(
        probe.overlaps.load(Ordering::SeqCst),
        0,
        "handle calls overlapped"
    );
    assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
    assert_eq!(dir.stats().activations, 1);
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_activation_reaches_every_waiting_caller_leaves_nothing_live_and_is_retried() {
    let probe = Probe::new();
    probe.refuse.lock().unwrap().insert(7);
    *probe.activation_delay.lock().unwrap() = Some(Duration::from_millis(50));
    let dir = directory(&probe, config());

    let mut calls = JoinSet::new();
    for _ in 0..10 {
        let dir = dir.clone();
        calls.spawn(async move { add(&dir, 7, 1).await });
    }
    let mut errors = Vec::new();
    while let Some(joined) = calls.join_next().await {
        match joined.unwrap() {
            Err(RuntimeError::Activation(error)) => errors.push(error),
            other => panic!("expected an activation error, got {other:?}"),
        }
    }
    assert_eq!(errors.len(), 10);
    assert!(
        errors.iter().all(|e| Arc::ptr_eq(e, &errors[0])),
        "all waiters share one error"
    );
    assert_eq!(errors[0].0, 7);
    assert!(!dir.is_live(&7));
    assert_eq!(dir.live_count(), 0);
    assert_eq!(dir.stats().activation_failures, 1);

    probe.refuse.lock().unwrap().clear();
    assert_eq!(add(&dir, 7, 1).await.unwrap(), 1);
    assert!(dir.is_live(&7));
    let stats = dir.stats();
    assert_eq!((stats.activations, stats.activation_failures), (1, 1));
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panicking_activation_answers_actor_stopped_and_is_retried() {
    let probe = Probe::new();
    probe.panic_on_activate.lock().unwrap().insert(3);
    let dir = directory(&probe, config());

    let result = add(&dir, 3, 1).await;
    assert!(matches!(result, Err(RuntimeError::ActorStopped { ref key }) if key == "3"));
    assert!(!dir.is_live(&3));
    assert_eq!(dir.live_count(), 0);
    assert_eq!(dir.stats().activation_failures, 1);

    probe.panic_on_activate.lock().unwrap().clear();
    assert_eq!(add(&dir, 3, 1).await.unwrap(), 1);
    dir.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Capacity, passivation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lru_cap_of_100_with_1000_keys_in_use_never_exceeds_100_live_and_answers_every_call() {
    let probe = Probe::new();
    let dir = directory(
        &probe,
        RuntimeConfig {
            max_live_actors: Some(100),
            ..config()
        },
    );

    let mut workers = JoinSet::new();
    for worker in 0..32_u64 {
        let dir = dir.clone();
        workers.spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (worker + 1));
            for i in 0..150_u64 {
                let key = rng.next() % 1_000;
                let value = worker * 1_000 + i;
                let answer = dir.call(&key, |reply| Msg::Echo(value, reply)).await;
                assert_eq!(answer.unwrap(), (key, value));
                assert!(dir.live_count() <= 100);
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.unwrap();
    }

    assert!(
        probe.max_live.load(Ordering::SeqCst) <= 100,
        "max live {:?}",
        probe.max_live
    );
    assert!(probe.live.load(Ordering::SeqCst) <= 100);
    assert!(dir.live_count() <= 100);
    let stats = dir.stats();
    assert!(stats.evictions > 0);
    assert_eq!(stats.evictions, stats.passivations);
    assert_eq!(
        probe.passivations_with(PassivationReason::Evicted).len() as u64,
        stats.evictions
    );
    assert_eq!(stats.activations - stats.evictions, stats.live as u64);
    dir.shutdown().await;
    assert_eq!(probe.live.load(Ordering::SeqCst), 0);
}

/// A million keys through a cap of 10 000: every activation past the cap evicts. Choosing a
/// victim looks at a bounded number of live actors however many there are (a scan of every
/// slot would look at 10 000 per eviction, ten billion in all), and the keys kept in constant
/// use are spared, because a victim is one not used since it was last queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_keys_through_a_cap_of_10_000_evict_in_constant_time_and_spare_keys_in_use() {
    const KEYS: u64 = 1_000_000;
    const CAP: usize = 10_000;
    const WORKERS: u64 = 16;
    const HOT: u64 = 2_000_000;
    let probe = Probe::new();
    let dir = directory(
        &probe,
        RuntimeConfig {
            max_live_actors: Some(CAP),
            max_concurrent_activations: 64,
            ..config()
        },
    );

    let mut workers = JoinSet::new();
    for worker in 0..WORKERS {
        let dir = dir.clone();
        workers.spawn(async move {
            let hot = HOT + worker;
            for (i, key) in (worker..KEYS).step_by(WORKERS as usize).enumerate() {
                assert_eq!(
                    dir.call(&key, |reply| Msg::Echo(i as u64, reply))
                        .await
                        .unwrap(),
                    (key, i as u64)
                );
                if i % 8 == 0 {
                    dir.call(&hot, |reply| Msg::Echo(0, reply)).await.unwrap();
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.unwrap();
    }

    let stats = dir.stats();
    assert!(stats.live <= CAP, "live {}", stats.live);
    assert!(probe.max_live.load(Ordering::SeqCst) <= CAP as i64);
    // A key in use is queued again whenever it reaches the front, so it is not evicted unless
    // its worker was starved of CPU for a whole turn of the queue (10 000 evictions by the
    // others), which a loaded machine can do once or twice.
    let hot_activations: u64 = (0..WORKERS).map(|w| probe.activations_of(HOT + w)).sum();
    assert!(
        hot_activations <= WORKERS + 2,
        "keys in use were evicted: {hot_activations} activations of {WORKERS} hot keys"
    );
    let activations = KEYS + hot_activations;
    assert_eq!(
        stats.activations, activations,
        "no cold key was activated twice"
    );
    assert!(
        stats.evictions >= activations - CAP as u64,
        "evictions {}",
        stats.evictions
    );
    let per_eviction = stats.eviction_candidates_examined as f64 / stats.evictions as f64;
    eprintln!(
        "{} activations, {} evictions, {per_eviction:.3} candidates examined per eviction",
        stats.activations, stats.evictions
    );
    assert!(
        per_eviction < 4.0,
        "{} candidates examined for {} evictions ({per_eviction:.2} each)",
        stats.eviction_candidates_examined,
        stats.evictions
    );
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_actor_is_passivated_and_reactivated_by_the_next_call() {
    let probe = Probe::new();
    let dir = directory(
        &probe,
        RuntimeConfig {
            // Two hundred times the 10 ms between key 2's calls: a stall of the test task
            // shorter than that (a loaded machine stalls it for several hundred milliseconds)
            // cannot make it idle.
            idle_timeout: Some(Duration::from_secs(2)),
            ..config()
        },
    );

    assert_eq!(add(&dir, 1, 5).await.unwrap(), 5);
    // A key used every 10 ms stays live meanwhile, for twice the idle timeout: idleness is
    // counted from its last call, not from its activation.
    let busy = std::time::Instant::now();
    while busy.elapsed() < Duration::from_secs(4) {
        add(&dir, 2, 1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(probe.activations_of(2), 1, "a busy actor is not passivated");

    eventually(Duration::from_secs(5), "key 1 passivated", || {
        !dir.is_live(&1)
    })
    .await;
    assert!(
        probe
            .passivations_with(PassivationReason::Idle)
            .contains(&1)
    );
    assert_eq!(add(&dir, 1, 1).await.unwrap(), 1, "state starts afresh");
    assert_eq!(probe.activations_of(1), 2);
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requested_passivation_runs_passivate_and_the_next_call_reactivates() {
    let probe = Probe::new();
    let dir = directory(&probe, config());

    assert!(!dir.passivate(&9).await, "nothing live to passivate");
    assert_eq!(add(&dir, 9, 2).await.unwrap(), 2);
    assert!(dir.passivate(&9).await);
    assert_eq!(
        probe.passivations_with(PassivationReason::Requested),
        vec![9]
    );
    assert!(!dir.is_live(&9));
    assert_eq!(dir.live_count(), 0);
    assert_eq!(probe.live.load(Ordering::SeqCst), 0);

    assert_eq!(add(&dir, 9, 1).await.unwrap(), 1);
    assert_eq!(probe.activations_of(9), 2);
    let stats = dir.stats();
    assert_eq!((stats.activations, stats.passivations), (2, 1));
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passivate_all_stops_every_actor_after_its_queued_messages() {
    let probe = Probe::new();
    let dir = directory(&probe, config());
    for key in 0..10 {
        add(&dir, key, 1).await.unwrap();
    }
    dir.passivate_all().await;
    assert_eq!(dir.live_count(), 0);
    assert_eq!(
        probe.passivations_with(PassivationReason::Requested),
        (0..10).collect::<Vec<u64>>()
    );
    assert_eq!(add(&dir, 0, 1).await.unwrap(), 1);
    dir.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Supervision, back-pressure, timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panicking_message_answers_actor_stopped_leaves_other_keys_alone_and_next_call_reactivates()
{
    let probe = Probe::new();
    let dir = directory(&probe, config());
    assert_eq!(add(&dir, 0, 10).await.unwrap(), 10);

    let mut load = JoinSet::new();
    for key in 1..=50_u64 {
        let dir = dir.clone();
        load.spawn(async move {
            for _ in 0..20 {
                add(&dir, key, 1).await.unwrap();
            }
            add(&dir, key, 0).await.unwrap()
        });
    }
    let crashed = dir.call(&0, Msg::Panic).await;
    assert!(matches!(crashed, Err(RuntimeError::ActorStopped { ref key }) if key == "0"));
    while let Some(joined) = load.join_next().await {
        assert_eq!(joined.unwrap(), 20, "other keys keep their state");
    }

    assert_eq!(
        add(&dir, 0, 1).await.unwrap(),
        1,
        "re-activated with fresh state"
    );
    assert_eq!(probe.activations_of(0), 2);
    let stats = dir.stats();
    assert_eq!(stats.crashes, 1);
    assert_eq!(stats.activations, 52);
    assert!(
        probe.passivations.lock().unwrap().is_empty(),
        "no passivate after a panic"
    );
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_mailbox_answers_overloaded_at_once() {
    let probe = Probe::new();
    let dir = directory(
        &probe,
        RuntimeConfig {
            mailbox_capacity: 4,
            ..config()
        },
    );
    add(&dir, 5, 1).await.unwrap();

    // One message in `handle`, waiting on the gate, and four queued behind it.
    let mut blocked = JoinSet::new();
    for queued in [0, 4] {
        for _ in 0..queued.max(1) {
            let dir = dir.clone();
            blocked.spawn(async move { dir.call(&5, Msg::Wait).await });
        }
        eventually(
            Duration::from_secs(5),
            "one handling, then four queued",
            || probe.waiting.load(Ordering::SeqCst) == 1 && dir.mailbox_len(&5) == Some(queued),
        )
        .await;
    }

    let started = Instant::now();
    let refused = add(&dir, 5, 1).await;
    assert!(
        matches!(refused, Err(RuntimeError::Overloaded { ref key, capacity: 4 }) if key == "5"),
        "{refused:?}"
    );
    // Waiting for room would wait for the gate, opened only below: 1 s is "at once".
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered at once"
    );
    assert!(add(&dir, 6, 1).await.is_ok(), "other keys unaffected");

    probe.open_gate();
    while let Some(joined) = blocked.join_next().await {
        assert_eq!(joined.unwrap().unwrap(), 1);
    }
    assert_eq!(
        add(&dir, 5, 1).await.unwrap(),
        2,
        "accepts again once drained"
    );
    assert_eq!(dir.stats().overloaded, 1);
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sequential_caller_is_never_refused_because_of_its_own_answered_message() {
    let probe = Probe::new();
    let dir = directory(
        &probe,
        RuntimeConfig {
            mailbox_capacity: 1,
            ..config()
        },
    );
    for i in 1..=500 {
        assert_eq!(add(&dir, 1, 1).await.unwrap(), i);
    }
    assert_eq!(dir.stats().overloaded, 0);
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn call_without_reply_in_time_answers_timeout() {
    let probe = Probe::new();
    let dir = directory(&probe, config());

    let after = Duration::from_millis(30);
    let result = dir.call_timeout(&8, after, Msg::Wait).await;
    assert!(
        matches!(result, Err(RuntimeError::Timeout { ref key, after: a }) if key == "8" && a == after),
        "{result:?}"
    );
    assert_eq!(dir.stats().timeouts, 1);

    probe.open_gate();
    assert_eq!(add(&dir, 8, 1).await.unwrap(), 1, "the actor lives on");
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_without_reply_time_out_late_by_at_most_a_few_ticks_with_no_timer_of_their_own() {
    // 300 ms is long enough for the directory's deadline ring (no timer armed per call).
    let after = Duration::from_millis(300);
    let bound = after + Duration::from_millis(250);
    // A stall of the test process (several hundred milliseconds on a loaded machine) makes a
    // round late however its timeouts are kept: one round with every call within the bound
    // shows it, while a ring late every time fails every round. Every round checks the rest.
    let mut latest_by_round = Vec::new();
    for _ in 0..5 {
        let probe = Probe::new();
        let dir = directory(&probe, config());
        let waits = (0..8).map(|_| {
            let dir = dir.clone();
            async move {
                let started = std::time::Instant::now();
                let result = dir.call_timeout(&9, after, Msg::Wait).await;
                (result, started.elapsed())
            }
        });
        let answered =
            tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(waits))
                .await
                .expect("every call was answered");
        let mut latest = Duration::ZERO;
        for (result, took) in answered {
            assert!(
                matches!(result, Err(RuntimeError::Timeout { .. })),
                "{result:?}"
            );
            assert!(took >= after, "never early: {took:?}");
            latest = latest.max(took);
        }
        assert_eq!(dir.stats().timeouts, 8);
        probe.open_gate();
        dir.shutdown().await;
        latest_by_round.push(latest);
        if latest < bound {
            return;
        }
    }
    panic!(
        "in every round a call timed out {bound:?} or more after it was made (the latest of each \
         round: {latest_by_round:?})"
    );
}

// ---------------------------------------------------------------------------------------------
// Shutdown, placement
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_answers_accepted_calls_passivates_every_actor_and_refuses_later_calls() {
    let probe = Probe::new();
    let dir = directory(&probe, config());
    for key in 0..20 {
        add(&dir, key, 1).await.unwrap();
    }

    let mut in_flight = JoinSet::new();
    for key in 0..20_u64 {
        for _ in 0..5 {
            let dir = dir.clone();
            in_flight.spawn(async move { dir.call(&key, Msg::Wait).await });
        }
    }
    eventually(Duration::from_secs(5), "every call admitted", || {
        probe.waiting.load(Ordering::SeqCst) == 20
            && (0..20).all(|key| dir.mailbox_len(&key) == Some(4))
    })
    .await;

    let shutting_down = {
        let dir = dir.clone();
        tokio::spawn(async move { dir.shutdown().await })
    };
    eventually(Duration::from_secs(5), "shutdown begun", || {
        dir.is_shut_down()
    })
    .await;
    let started = Instant::now();
    assert!(matches!(
        add(&dir, 0, 1).await,
        Err(RuntimeError::ShuttingDown)
    ));
    assert!(matches!(
        add(&dir, 99, 1).await,
        Err(RuntimeError::ShuttingDown)
    ));
    // Waiting for the shutdown would wait for the gate, opened only below.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    assert!(
        !shutting_down.is_finished(),
        "shutdown waits for accepted calls"
    );

    probe.open_gate();
    shutting_down.await.unwrap();
    let mut answered = 0;
    while let Some(joined) = in_flight.join_next().await {
        assert_eq!(joined.unwrap().unwrap(), 1);
        answered += 1;
    }
    assert_eq!(answered, 100);
    assert_eq!(
        probe.passivations_with(PassivationReason::Shutdown),
        (0..20).collect::<Vec<u64>>()
    );
    assert_eq!(dir.live_count(), 0);
    assert_eq!(probe.live.load(Ordering::SeqCst), 0);
    assert_eq!(dir.stats().passivations, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_the_last_directory_handle_passivates_its_actors() {
    let probe = Probe::new();
    let dir = directory(&probe, config());
    for key in 0..3 {
        add(&dir, key, 1).await.unwrap();
    }
    drop(dir);
    eventually(Duration::from_secs(5), "actors passivated", || {
        probe.live.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(
        probe.passivations_with(PassivationReason::Shutdown),
        vec![0, 1, 2]
    );
}

struct EvenKeysOnly;
impl Placement<u64> for EvenKeysOnly {
    fn is_local(&self, key: &u64) -> bool {
        key.is_multiple_of(2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_placed_on_another_node_answer_not_local_and_are_never_activated() {
    let probe = Probe::new();
    let dir = Directory::<TestActor>::with_placement(
        Arc::clone(&probe),
        config(),
        Arc::new(EvenKeysOnly),
    );
    assert!(matches!(add(&dir, 1, 1).await, Err(RuntimeError::NotLocal { ref key }) if key == "1"));
    assert_eq!(add(&dir, 2, 1).await.unwrap(), 1);
    assert_eq!(probe.activations.load(Ordering::SeqCst), 1);
    dir.shutdown().await;
}

/// Every key is local until the switch is turned off (a shard handed off to another node).
struct Switch(AtomicBool);
impl Placement<u64> for Switch {
    fn is_local(&self, _: &u64) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A directory whose keys are all local until its [`Switch`] is turned off.
fn switched_directory(probe: &Arc<Probe>) -> (Dir, Arc<Switch>) {
    let placement = Arc::new(Switch(AtomicBool::new(true)));
    let dir = Directory::<TestActor>::with_placement(
        Arc::clone(probe),
        config(),
        Arc::clone(&placement) as Arc<dyn Placement<u64>>,
    );
    (dir, placement)
}

/// A key moved away while its actor was still activating (its call checked the placement
/// before the move, so a handoff's passivation finds no actor to stop yet): the actor stops
/// itself as soon as it has started, instead of staying live, and serving its state, on a node
/// that no longer owns the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_moved_away_during_its_activation_does_not_stay_live() {
    let probe = Probe::new();
    *probe.activation_delay.lock().unwrap() = Some(Duration::from_millis(300));
    let (dir, placement) = switched_directory(&probe);
    let call = {
        let dir = dir.clone();
        tokio::spawn(async move { add(&dir, 7, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dir.is_live(&7), "still activating");
    // The handoff: the key moves, then every actor of the moved keys is passivated.
    placement.0.store(false, Ordering::SeqCst);
    dir.passivate_matching(|_| true).await;
    assert!(
        matches!(call.await.unwrap(), Err(RuntimeError::NotLocal { .. })),
        "the waiting call is sent elsewhere"
    );
    eventually(Duration::from_secs(5), "the late actor stopped", || {
        probe.live.load(Ordering::SeqCst) == 0 && !dir.is_live(&7)
    })
    .await;
    assert_eq!(probe.activations_of(7), 1, "it did start");
    assert_eq!(
        probe.passivations_with(PassivationReason::Requested),
        vec![7],
        "and stopped itself"
    );
    dir.shutdown().await;
}

/// The same handoff, for a caller that keeps what was refused: the message comes back whole
/// (it reached no actor, here or anywhere), to be sent to the key's new owner; a key served
/// here is answered as by `call_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_refused_because_its_key_moved_away_comes_back_unsent() {
    let probe = Probe::new();
    let (dir, placement) = switched_directory(&probe);
    let timeout = Duration::from_secs(10);
    let served = dir
        .call_timeout_or_misplaced(&3, timeout, |reply| Msg::Add(2, reply))
        .await;
    assert!(matches!(served, Ok(Ok(2))), "{served:?}");

    // Waiting here for an activation (long enough that a stalled test still moves the key
    // before it ends) while the key moves away.
    *probe.activation_delay.lock().unwrap() = Some(Duration::from_secs(2));
    let call = {
        let dir = dir.clone();
        tokio::spawn(async move {
            dir.call_timeout_or_misplaced(&7, timeout, |reply| Msg::Add(40, reply))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!dir.is_live(&7), "still activating");
    placement.0.store(false, Ordering::SeqCst);
    dir.passivate_matching(|_| true).await;
    match call.await.unwrap() {
        Err(Misplaced(message)) => assert!(matches!(*message, Msg::Add(40, _))),
        other => panic!("expected the message back, got {other:?}"),
    }
    // Refused at once once the key is gone; nothing was added anywhere.
    let refused = dir
        .call_timeout_or_misplaced(&3, timeout, |reply| Msg::Add(1, reply))
        .await;
    match refused {
        Err(Misplaced(message)) => assert!(matches!(*message, Msg::Add(1, _))),
        other => panic!("expected the message back, got {other:?}"),
    }
    assert!(!dir.is_live(&3), "no actor was started for it");
    assert_eq!(probe.activations_of(3), 1, "only the first call's");
    dir.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// An actor and message that are `Send` but not `Sync`.
struct Unshared(std::cell::Cell<u64>);
struct UnsharedMsg(std::cell::Cell<u64>, Reply<u64>);

impl VirtualActor for Unshared {
    type Key = String;
    type Message = UnsharedMsg;
    type Context = ();
    type ActivationError = std::convert::Infallible;

    async fn activate(_: &String, _: &Arc<()>) -> Result<Self, Self::ActivationError> {
        Ok(Self(std::cell::Cell::new(0)))
    }

    async fn handle(&mut self, UnsharedMsg(n, reply): UnsharedMsg) {
        self.0.set(self.0.get() + n.get());
        reply.send(self.0.get());
    }
}

fn assert_send_sync<T: Send + Sync>(_: &T) {}
fn assert_send<T: Send>(_: &T) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn directory_and_call_futures_are_send_even_for_non_sync_actors_and_messages() {
    let dir = Directory::<Unshared>::new(Arc::new(()), RuntimeConfig::default());
    assert_send_sync(&dir);
    let key = "k".to_string();
    let call = dir.call(&key, |reply| UnsharedMsg(std::cell::Cell::new(2), reply));
    assert_send(&call);
    drop(call);
    assert_eq!(tokio::spawn(call_owned(dir.clone(), key)).await.unwrap(), 4);
    dir.shutdown().await;

    async fn call_owned(dir: Directory<Unshared>, key: String) -> u64 {
        dir.call(&key, |reply| UnsharedMsg(std::cell::Cell::new(2), reply))
            .await
            .unwrap();
        dir.call(&key, |reply| UnsharedMsg(std::cell::Cell::new(2), reply))
            .await
            .unwrap()
    }
}
