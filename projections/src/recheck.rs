//! Wake-ups, and the rechecks a runner makes after them.
//!
//! A wake-up ([`Projector::wake`](crate::Projector::wake), or a PostgreSQL notification) says
//! that an event was committed, but PostgreSQL's `read_all` shows it only once every older
//! transaction on the server has ended, so the read the wake-up brings may not find it yet.
//! After a wake-up a runner therefore keeps looking again, quickly at first, for the settings'
//! `recheck_window`.
//!
//! Wake-ups are counted, and a runner compares the count with the one it last saw before each
//! read: a wake-up restarts the window whatever the runner was doing when it came (reading,
//! handling a batch, pausing after a failure, rebuilding), not only when it was waiting for one.
//! Otherwise the event it announced, hidden from the reads that follow, would wait for the
//! poll interval, which can be an hour when the wake-ups are relied on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// After a wake-up, the first pause before looking again when a read found nothing.
const FIRST_RECHECK: Duration = Duration::from_millis(2);

/// The longest pause between rechecks after a wake-up.
const RECHECK_CAP: Duration = Duration::from_millis(250);

/// The wake-ups of a projector's runners: a count, and a [`Notify`] for the runners waiting.
#[derive(Default)]
pub(crate) struct WakeUps {
    notify: Notify,
    count: AtomicU64,
}

impl WakeUps {
    /// Counts a wake-up, then wakes every runner waiting for one. Counted first: a runner that
    /// misses the count (it looked just before) has armed its [`notified`](Self::notified)
    /// before looking, so the notification reaches it.
    pub(crate) fn wake(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Completes at the next wake-up after this call, whether it is polled by then or not.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

/// One runner's rechecks: the wake-ups it has seen, and where it is on the ladder.
pub(crate) struct Rechecks {
    window: Duration,
    /// The wake-up count at the last look.
    seen: u64,
    /// `None` once the window has closed.
    recheck: Option<Recheck>,
}

impl Rechecks {
    /// Open from the start, which counts as a wake-up: events appended just before may be
    /// invisible to the first reads for the same reason.
    pub(crate) fn start(wake_ups: &WakeUps, window: Duration) -> Self {
        Self {
            window,
            seen: wake_ups.count(),
            recheck: Some(Recheck::start(window)),
        }
    }

    /// Restarts the window if anything woke the runner since the last look.
    pub(crate) fn notice(&mut self, wake_ups: &WakeUps) {
        let count = wake_ups.count();
        if count != self.seen {
            self.seen = count;
            self.recheck = Some(Recheck::start(self.window));
        }
    }

    /// The pause before looking again after a read that found nothing: the next step of the
    /// ladder while the window is open, the poll interval once it has closed.
    pub(crate) fn pause(&mut self, poll: Duration) -> Duration {
        let (pause, later) = self.recheck.map_or((poll, None), |r| r.next(poll));
        self.recheck = later;
        pause
    }
}

/// Rechecking after a wake-up: quick at first, then every [`RECHECK_CAP`], until the window
/// has passed. Progress does not end it: a wake-up names no event, so a batch that made progress
/// may have held older events while the one the wake-up announced is still hidden.
#[derive(Clone, Copy)]
struct Recheck {
    pause: Duration,
    /// `None`: no end.
    until: Option<Instant>,
}

impl Recheck {
    fn start(window: Duration) -> Self {
        Self {
            pause: FIRST_RECHECK,
            // Too far to add to a clock: the window never closes.
            until: Instant::now().checked_add(window),
        }
    }

    /// The pause before the next look, and the recheck state after it (`None`, and the poll
    /// interval, once the window has closed).
    fn next(self, poll: Duration) -> (Duration, Option<Self>) {
        if self.until.is_some_and(|until| Instant::now() >= until) {
            return (poll, None);
        }
        let later = Self {
            pause: (self.pause * 2).min(RECHECK_CAP),
            until: self.until,
        };
        (self.pause.min(poll), Some(later))
    }
}
