//! Specification tests for actor timers: messages an actor sends itself later, which are not
//! traffic and end with the activation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actor_runtime::{
    Directory, PassivationReason, Reply, RuntimeConfig, TimerHandle, Timers, VirtualActor,
};
use std::sync::Mutex;

#[derive(Default)]
struct Probe {
    ticks: AtomicU64,
    passivations: Mutex<Vec<PassivationReason>>,
    /// When the actor last started a timer (just before), and when each tick reached it.
    armed_at: Mutex<Option<Instant>>,
    ticked_at: Mutex<Vec<Instant>>,
}

enum Msg {
    /// Starts a one-shot timer (`every` = None) or a periodic one, replacing the running one.
    Start {
        after: Duration,
        every: bool,
        reply: Reply<()>,
    },
    /// Drops the running timer.
    Stop(Reply<()>),
    /// What the timer sends.
    Tick,
    /// Answers the ticks this activation handled.
    Ticks(Reply<u64>),
}

struct Ticker {
    probe: Arc<Probe>,
    timers: Option<Timers<Self>>,
    running: Option<TimerHandle>,
    ticks: u64,
}

impl VirtualActor for Ticker {
    type Key = u64;
    type Message = Msg;
    type Context = Probe;
    type ActivationError = std::convert::Infallible;

    async fn activate(_key: &u64, probe: &Arc<Probe>) -> Result<Self, Self::ActivationError> {
        Ok(Self {
            probe: Arc::clone(probe),
            timers: None,
            running: None,
            ticks: 0,
        })
    }

    fn attach_timers(&mut self, timers: Timers<Self>) {
        self.timers = Some(timers);
    }

    async fn handle(&mut self, message: Msg) {
        match message {
            Msg::Start {
                after,
                every,
                reply,
            } => {
                let timers = self
                    .timers
                    .as_ref()
                    .expect("attached before the first message");
                *self.probe.armed_at.lock().unwrap() = Some(Instant::now());
                self.running = Some(if every {
                    timers.send_every(after, || Msg::Tick)
                } else {
                    timers.send_after(after, Msg::Tick)
                });
                reply.send(());
            }
            Msg::Stop(reply) => {
                self.running = None;
                reply.send(());
            }
            Msg::Tick => {
                self.ticks += 1;
                self.probe.ticked_at.lock().unwrap().push(Instant::now());
                self.probe.ticks.fetch_add(1, Ordering::SeqCst);
            }
            Msg::Ticks(reply) => {
                reply.send(self.ticks);
            }
        }
    }

    async fn passivate(&mut self, reason: PassivationReason) {
        self.probe.passivations.lock().unwrap().push(reason);
    }
}

fn directory(probe: &Arc<Probe>, idle: Option<Duration>) -> Directory<Ticker> {
    Directory::new(
        Arc::clone(probe),
        RuntimeConfig {
            idle_timeout: idle,
            ..RuntimeConfig::default()
        },
    )
}

async fn start(dir: &Directory<Ticker>, after: Duration, every: bool) {
    dir.call(&1, |reply| Msg::Start {
        after,
        every,
        reply,
    })
    .await
    .unwrap();
}

async fn ticks(dir: &Directory<Ticker>) -> u64 {
    dir.call(&1, Msg::Ticks).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_timer_delivers_its_message_once_after_its_delay() {
    let probe = Arc::new(Probe::default());
    let dir = directory(&probe, None);
    let delay = Duration::from_millis(500);
    let started = Instant::now();
    start(&dir, delay, false).await;
    let deadline = started + Duration::from_secs(5);
    while ticks(&dir).await == 0 {
        assert!(Instant::now() < deadline, "never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Not before its delay, timed by the actor itself rather than by asking in time (which a
    // stalled test may not): from just before it started the timer to the tick's arrival.
    let armed_at = probe
        .armed_at
        .lock()
        .unwrap()
        .expect("the timer was started");
    let took = probe.ticked_at.lock().unwrap()[0] - armed_at;
    assert!(took >= delay, "delivered {took:?} after it was started");
    // Longer than the delay: a timer that armed itself again would have rung again.
    tokio::time::sleep(delay + Duration::from_millis(200)).await;
    assert_eq!(ticks(&dir).await, 1, "once");
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_timer_ticks_until_its_handle_is_dropped() {
    let probe = Arc::new(Probe::default());
    let dir = directory(&probe, None);
    start(&dir, Duration::from_millis(10), true).await;
    // Polled, not slept on: a timer skips the ticks a stalled runtime missed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ticked = ticks(&dir).await;
        if ticked >= 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ticked {ticked} times in 5 s at 10 ms"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    dir.call(&1, Msg::Stop).await.unwrap();
    let at_stop = ticks(&dir).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One tick may have been on its way when the handle was dropped.
    assert!(ticks(&dir).await <= at_stop + 1, "no ticks after the drop");
    dir.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticking_timer_does_not_keep_an_idle_actor_alive_and_ends_with_it() {
    let probe = Arc::new(Probe::default());
    // An idle time far above the tick period: a test stalled for longer than it would find
    // the sweeper and the timer overdue together, and either could go first.
    let dir = directory(&probe, Some(Duration::from_secs(1)));
    start(&dir, Duration::from_millis(10), true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dir.is_live(&1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "passivated though its timer ticks"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *probe.passivations.lock().unwrap(),
        vec![PassivationReason::Idle]
    );
    let ticked = probe.ticks.load(Ordering::SeqCst);
    assert!(
        ticked >= 5,
        "the timer ticked ({ticked}) while the actor lived"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        probe.ticks.load(Ordering::SeqCst),
        ticked,
        "no tick after passivation"
    );
    assert!(!dir.is_live(&1), "a timer never reactivates its actor");
    assert_eq!(dir.stats().activations, 1);
    dir.shutdown().await;
}
