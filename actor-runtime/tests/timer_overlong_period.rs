//! A timer's period may come from user input: one too long to add to the clock means "never",
//! not a panic in the timer's task.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use actor_runtime::{Directory, Reply, RuntimeConfig, TimerHandle, Timers, VirtualActor};

enum Msg {
    /// Starts a periodic timer of this period, replacing the running one.
    Every(Duration, Reply<()>),
    /// What the timer sends.
    Tick,
    /// Answers (ticks handled, whether the running timer's task has ended).
    Probe(Reply<(u64, bool)>),
}

struct Ticker {
    timers: Option<Timers<Self>>,
    running: Option<TimerHandle>,
    ticks: u64,
}

impl VirtualActor for Ticker {
    type Key = u64;
    type Message = Msg;
    type Context = ();
    type ActivationError = std::convert::Infallible;

    async fn activate(_key: &u64, _context: &Arc<()>) -> Result<Self, Self::ActivationError> {
        Ok(Self {
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
            Msg::Every(period, reply) => {
                let timers = self.timers.as_ref().expect("attached before any message");
                self.running = Some(timers.send_every(period, || Msg::Tick));
                reply.send(());
            }
            Msg::Tick => self.ticks += 1,
            Msg::Probe(reply) => {
                let ended = self.running.as_ref().is_some_and(TimerHandle::is_finished);
                reply.send((self.ticks, ended));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_timer_with_an_overlong_period_neither_panics_nor_fires() {
    let dir: Directory<Ticker> = Directory::new(Arc::new(()), RuntimeConfig::default());
    dir.call(&1, |reply| Msg::Every(Duration::MAX, reply))
        .await
        .unwrap();
    // Long enough for the timer's task to have started (and, unfixed, to have panicked).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ticks, ended) = dir.call(&1, Msg::Probe).await.unwrap();
    assert!(
        !ended,
        "the timer's task ended (it panicked) instead of waiting"
    );
    assert_eq!(ticks, 0, "a period of Duration::MAX never comes");
}
