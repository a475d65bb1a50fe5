//! How a projector reads and waits.

use std::time::Duration;

/// How a [`Projector`](crate::Projector) reads and waits.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProjectorSettings {
    /// Events read from the feed per batch (and handed to a projection at most). Default 1 000;
    /// 0 counts as 1.
    pub batch_size: usize,
    /// When caught up, how often to look for new events without a wake-up. Default 100 ms.
    pub poll_interval: Duration,
    /// The longest pause between retries of a failing batch (it doubles from 10 ms). Default 5 s.
    pub max_backoff: Duration,
    /// How long after a wake-up (and after the start) the runner keeps looking again, every
    /// 250 ms at most, before it falls back to `poll_interval`. A wake-up promises a committed
    /// event, but PostgreSQL's `read_all` shows it only once every older transaction on the
    /// server has ended, which a long transaction elsewhere can delay by seconds. Default 60 s.
    ///
    /// Every wake-up restarts the window, whatever the runner was doing when it came (reading,
    /// handling a batch, pausing after a failed batch, rebuilding): the runner notices it before
    /// its next read.
    ///
    /// The cost: after each wake-up the runner reads again at 2, 4, 8 … ms (never less often
    /// than `poll_interval`) until the next one, so a projection woken tens of times a second
    /// reads about three times as often as one read only on wake-ups, and with a
    /// `poll_interval` above 250 ms a steady stream of wake-ups makes it read every 250 ms.
    /// `Duration::ZERO` reads only on wake-ups and polls.
    pub recheck_window: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 1_000,
            poll_interval: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            recheck_window: Duration::from_secs(60),
        }
    }
}

impl ProjectorSettings {
    /// Events per batch (at least 1).
    pub fn batch_size(mut self, events: usize) -> Self {
        self.batch_size = events.max(1);
        self
    }

    /// How often to poll when caught up.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The longest pause between retries.
    pub fn max_backoff(mut self, pause: Duration) -> Self {
        self.max_backoff = pause;
        self
    }

    /// How long to keep looking again after a wake-up before falling back to the poll.
    pub fn recheck_window(mut self, window: Duration) -> Self {
        self.recheck_window = window;
        self
    }
}
