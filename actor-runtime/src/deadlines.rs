//! Call deadlines without a timer per call.
//!
//! A tokio timer armed and cancelled around every call cost about 1 µs of a 1.8 µs call on two
//! cores (`benches/PROFILE.md`, section 1): when no other timer is due sooner, registering it
//! wakes the parked time driver, a syscall and a thread wake-up per call. So a directory keeps a
//! ring of [`Notify`]s instead, one per [`TICK`] of wall time, and one watchdog task that wakes
//! each tick's waiters once the tick has passed. A call waits on the entry for the first tick
//! at or after its deadline: registering there takes a lock and a list push, and nothing is
//! armed. Timeouts come out late by at most one tick plus scheduling, never early.
//!
//! Each tick has one [`Notify`] per shard, and a call waits on its worker thread's shard: the
//! calls of one tick all register and deregister there, so with a single `Notify` per tick
//! every core took the same lock twice a call and its cache line moved between cores.
//!
//! Timeouts the ring cannot serve well arm their own timer as before: shorter than
//! [`MIN_TICKS`] ticks (a tick's lateness would be a large share), longer than the ring, or in
//! a directory made outside a Tokio runtime (no watchdog).

use std::{
    future::Future,
    hash::{Hash, Hasher},
    pin::Pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::{
    sync::{Notify, futures::Notified},
    time::{Instant, Sleep},
};

/// How far ahead a deadline too far to represent is put instead: an `Instant` plus
/// `Duration::MAX` overflows (and panics), so "wait for ever" becomes 30 years, as in tokio's
/// own far-future instants.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The instant `span` after `now`, or 30 years after it when `span` is too long to add: a
/// timeout from configuration or a caller may be `Duration::MAX`, meaning "no limit".
pub fn instant_after(now: Instant, span: Duration) -> Instant {
    now.checked_add(span)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// The ring's resolution.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Timeouts of fewer ticks than this get a timer of their own (at most 10 % late otherwise).
pub(crate) const MIN_TICKS: u64 = 10;

/// The ring never has more entries than this (8 192 ticks: 82 s).
const MAX_RING: u64 = 8192;

/// At most this many shards per tick.
const MAX_SHARDS: usize = 8;

/// At most this many `Notify`s in all (32 B each: 256 KiB), so a long ring gets fewer shards.
const MAX_ENTRIES: usize = 8192;

thread_local! {
    /// This thread's shard number, before it is reduced to a ring's shard count.
    static SHARD: usize = thread_number();
}

/// The number behind this thread's `ThreadId`: threads get consecutive ones as they are made,
/// so a runtime's worker threads, made together, fall on different shards. (A counter taken at
/// first use would not promise that: any other thread that calls in between shifts the rest.)
fn thread_number() -> usize {
    /// Keeps the last integer hashed into it: a `ThreadId` hashes its number alone.
    struct Number(u64);
    impl Hasher for Number {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for byte in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
            }
        }
        fn write_u64(&mut self, number: u64) {
            self.0 = number;
        }
    }
    let mut number = Number(0);
    std::thread::current().id().hash(&mut number);
    // Only its low bits pick a shard: truncation is harmless.
    number.0 as usize
}

/// A call's timeout passed before it got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

/// The deadline ring of one directory.
pub(crate) struct Deadlines {
    origin: Instant,
    /// `ticks × shards` entries, a tick's shards side by side.
    ring: Box<[Notify]>,
    /// Entries in the ring per tick (a power of two).
    ticks: u64,
    /// Shards per tick (a power of two).
    shards: usize,
    /// Every tick up to this one has passed and been announced (or is being announced).
    fired: AtomicU64,
    /// Whether a watchdog runs; without one every call arms a timer.
    watched: bool,
}

impl Deadlines {
    /// A ring long enough for `longest` (the directory's call timeout), with its watchdog
    /// spawned on `runtime`; without a runtime, a ring that is never used.
    pub(crate) fn start(longest: Duration, runtime: Option<&tokio::runtime::Handle>) -> Arc<Self> {
        // Capped before rounding: a timeout near `Duration::MAX` must not overflow.
        let ticks = ticks_in(longest)
            .saturating_add(2)
            .min(MAX_RING)
            .next_power_of_two()
            .max(64);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        // The ring's length is at most MAX_RING: the cast is lossless.
        let shards = cores
            .next_power_of_two()
            .min(MAX_SHARDS)
            .min((MAX_ENTRIES / ticks as usize).max(1));
        let deadlines = Arc::new(Self {
            origin: Instant::now(),
            ring: (0..ticks as usize * shards)
                .map(|_| Notify::new())
                .collect(),
            ticks,
            shards,
            fired: AtomicU64::new(0),
            watched: runtime.is_some(),
        });
        if let Some(runtime) = runtime {
            runtime.spawn(watch(Arc::downgrade(&deadlines)));
        }
        deadlines
    }

    /// Runs `work` until it finishes or `timeout` has passed.
    ///
    /// A future of its own rather than an `async fn`: an `async fn` would hold `work` twice
    /// (its argument and its pinned copy), and a call's future is moved whole at every await.
    #[inline]
    pub(crate) fn within<F: Future>(&self, timeout: Duration, work: F) -> Within<'_, F> {
        let wait = match self.due_tick(timeout) {
            Some(due) => Wait::Tick {
                entry: &self.ring[self.index(due) + self.shard()],
                fired: &self.fired,
                due,
            },
            None => Wait::Timer {
                deadline: Instant::now().checked_add(timeout),
                sleep: None,
            },
        };
        Within {
            work,
            announced: None,
            wait,
        }
    }

    /// The tick at or after `now + timeout`, if the ring serves this timeout.
    fn due_tick(&self, timeout: Duration) -> Option<u64> {
        if !self.watched || ticks_in(timeout) < MIN_TICKS {
            return None;
        }
        let deadline = Instant::now()
            .checked_add(timeout)?
            .saturating_duration_since(self.origin);
        let due = ticks_in(deadline).saturating_add(1);
        // The entry's previous lap must have been announced already.
        (due < self.fired.load(Ordering::SeqCst).saturating_add(self.ticks)).then_some(due)
    }

    /// This thread's shard (the first for a thread whose locals are being torn down).
    fn shard(&self) -> usize {
        SHARD.try_with(|shard| *shard).unwrap_or(0) & (self.shards - 1)
    }

    /// Where `tick`'s shards start in the ring.
    fn index(&self, tick: u64) -> usize {
        // A power of two no larger than MAX_RING: the cast is lossless.
        (tick % self.ticks) as usize * self.shards
    }

    /// Announces every tick that has passed since the last call.
    fn advance(&self) {
        let now = ticks_in(self.origin.elapsed());
        let last = self.fired.load(Ordering::SeqCst);
        // After a stall longer than the ring, one lap announces every entry.
        for tick in (last + 1).max(now.saturating_sub(self.ticks - 1))..=now {
            // Recorded before the announcement: a waiter that misses it sees the new value.
            self.fired.store(tick, Ordering::SeqCst);
            let first = self.index(tick);
            for entry in &self.ring[first..first + self.shards] {
                entry.notify_waiters();
            }
        }
    }
}

pin_project! {
    /// The future of [`Deadlines::within`].
    pub(crate) struct Within<'a, F> {
        #[pin]
        work: F,
        // Created before `fired` is read: an announcement after that read reaches it.
        #[pin]
        announced: Option<Notified<'a>>,
        wait: Wait<'a>,
    }
}

/// How a [`Within`] learns that its deadline passed.
enum Wait<'a> {
    /// From the ring: its tick's entry announces that tick (or one a lap earlier).
    Tick {
        entry: &'a Notify,
        fired: &'a AtomicU64,
        due: u64,
    },
    /// From a timer of its own, armed when the work first waits (none: no deadline at all).
    Timer {
        deadline: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
    },
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.wait {
            Wait::Tick { entry, fired, due } => loop {
                if this.announced.is_none() {
                    this.announced.set(Some(entry.notified()));
                }
                if let Poll::Ready(output) = this.work.as_mut().poll(cx) {
                    return Poll::Ready(Ok(output));
                }
                if fired.load(Ordering::SeqCst) >= *due {
                    return Poll::Ready(Err(Elapsed));
                }
                match this.announced.as_mut().as_pin_mut().map(|n| n.poll(cx)) {
                    // The entry's tick passed; it may be an earlier lap of the ring: look again.
                    Some(Poll::Ready(())) => this.announced.set(None),
                    _ => return Poll::Pending,
                }
            },
            Wait::Timer { deadline, sleep } => {
                if let Poll::Ready(output) = this.work.poll(cx) {
                    return Poll::Ready(Ok(output));
                }
                let Some(deadline) = *deadline else {
                    return Poll::Pending;
                };
                let sleep =
                    sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
            }
        }
    }
}

/// A tick in nanoseconds; it divides a second, so whole seconds convert exactly.
const TICK_NANOS: u32 = 10_000_000;
const _: () = assert!(TICK.as_nanos() == TICK_NANOS as u128 && 1_000_000_000 % TICK_NANOS == 0);

/// Whole ticks in `span` (in 64-bit steps: a `u128` division is a library call, twice a call).
fn ticks_in(span: Duration) -> u64 {
    span.as_secs()
        .saturating_mul(u64::from(1_000_000_000 / TICK_NANOS))
        .saturating_add(u64::from(span.subsec_nanos() / TICK_NANOS))
}

/// The watchdog: announces passed ticks until the directory is gone.
async fn watch(deadlines: Weak<Deadlines>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(deadlines) = deadlines.upgrade() else {
            return;
        };
        deadlines.advance();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;
    use std::pin::pin;

    fn ring(longest: Duration) -> Arc<Deadlines> {
        Deadlines::start(longest, Some(&tokio::runtime::Handle::current()))
    }

    #[tokio::test]
    async fn work_that_finishes_in_time_returns_its_output() {
        let deadlines = ring(Duration::from_secs(30));
        let output = deadlines.within(Duration::from_secs(5), async { 7 }).await;
        assert_eq!(output, Ok(7));
    }

    #[tokio::test]
    async fn a_ring_served_timeout_fires_after_its_deadline_and_within_two_ticks() {
        let deadlines = ring(Duration::from_secs(30));
        let timeout = Duration::from_millis(150);
        let bound = timeout + 2 * TICK + Duration::from_millis(200);
        // A stall of the test process (several hundred milliseconds on a loaded machine)
        // makes a wait late however the ring keeps time: one wait within the bound shows it,
        // while a ring late every time fails every round. Every round checks the rest.
        let mut took_by_round = Vec::new();
        for _ in 0..5 {
            assert!(deadlines.due_tick(timeout).is_some(), "served by the ring");
            let started = std::time::Instant::now();
            let waiting = deadlines.within(timeout, std::future::pending::<()>());
            let output = tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("the watchdog announced the tick");
            let took = started.elapsed();
            assert_eq!(output, Err(Elapsed));
            assert!(took >= timeout, "never early: {took:?}");
            took_by_round.push(took);
            if took < bound {
                return;
            }
        }
        panic!("every wait took {bound:?} or more: {took_by_round:?}");
    }

    #[tokio::test]
    async fn short_and_overlong_timeouts_get_a_timer_of_their_own() {
        let deadlines = ring(Duration::from_secs(1));
        assert_eq!(deadlines.due_tick(TICK * (MIN_TICKS as u32 - 1)), None);
        assert_eq!(deadlines.due_tick(Duration::from_secs(3600)), None);
        let output = deadlines
            .within(Duration::from_millis(20), std::future::pending::<()>())
            .await;
        assert_eq!(output, Err(Elapsed));
    }

    #[test]
    fn whole_ticks_are_counted_as_a_division_of_nanoseconds_would() {
        let spans = (0..200_000u64)
            .map(|n| Duration::from_nanos(n.wrapping_mul(2_654_435_761) % 40_000_000_000))
            .chain([
                Duration::ZERO,
                TICK - Duration::from_nanos(1),
                TICK,
                Duration::from_secs(1) - Duration::from_nanos(1),
                Duration::from_secs(u64::MAX / 100),
            ]);
        for span in spans {
            let divided = u64::try_from(span.as_nanos() / TICK.as_nanos()).unwrap_or(u64::MAX);
            assert_eq!(ticks_in(span), divided, "{span:?}");
        }
        assert_eq!(ticks_in(Duration::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn a_deadline_too_far_to_represent_is_thirty_years_away() {
        let now = Instant::now();
        assert_eq!(
            instant_after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(instant_after(now, Duration::MAX), now + FAR_FUTURE);
    }

    #[test]
    fn the_longest_timeout_gets_the_longest_ring() {
        let deadlines = Deadlines::start(Duration::MAX, None);
        assert_eq!(deadlines.ticks, MAX_RING);
        assert_eq!(deadlines.ring.len(), MAX_RING as usize * deadlines.shards);
    }

    #[test]
    fn without_a_runtime_nothing_is_served_by_the_ring() {
        let deadlines = Deadlines::start(Duration::from_secs(30), None);
        assert_eq!(deadlines.due_tick(Duration::from_secs(1)), None);
    }

    #[tokio::test]
    async fn a_passed_tick_wakes_the_waiters_of_every_shard() {
        let deadlines = Deadlines::start(Duration::from_secs(1), None);
        let first = deadlines.index(1);
        let mut waiters: Vec<_> = deadlines.ring[first..first + deadlines.shards]
            .iter()
            .map(|entry| Box::pin(entry.notified()))
            .collect();
        for waiter in &mut waiters {
            waiter.as_mut().enable();
        }
        tokio::time::sleep(TICK * 2).await;
        deadlines.advance();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("every shard of the passed tick was announced");
        }
    }

    #[test]
    fn a_threads_shard_number_is_its_thread_id() {
        let shard = || {
            let number = SHARD.with(|shard| *shard);
            (number, format!("{:?}", std::thread::current().id()))
        };
        for (number, id) in [shard(), std::thread::spawn(shard).join().expect("ran")] {
            assert_eq!(id, format!("ThreadId({number})"));
        }
    }

    #[tokio::test]
    async fn an_announcement_for_an_earlier_lap_does_not_end_the_wait() {
        let deadlines = ring(Duration::from_millis(500));
        let timeout = Duration::from_millis(200);
        let due = deadlines.due_tick(timeout).expect("served by the ring");
        let waiting = deadlines.within(timeout, std::future::pending::<()>());
        let mut waiting = pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        // Its entry announced before its tick (as for a tick a lap earlier): it looks, waits on.
        for entry in &deadlines.ring[deadlines.index(due)..][..deadlines.shards] {
            entry.notify_waiters();
        }
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert_eq!(waiting.await, Err(Elapsed));
    }
}
