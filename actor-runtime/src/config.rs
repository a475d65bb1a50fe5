//! [`RuntimeConfig`]: the knobs of a [`Directory`](crate::Directory).

use std::time::Duration;

/// Default cap on live actors per directory (see [`RuntimeConfig::max_live_actors`]).
pub const DEFAULT_MAX_LIVE_ACTORS: usize = 100_000;

/// How a [`Directory`](crate::Directory) manages its actors.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Passivate an actor that received no message for this long and has an empty mailbox.
    /// `None` never passivates for idleness. Default: 300 s.
    pub idle_timeout: Option<Duration>,
    /// At most this many live actors (counted from activation start until fully stopped); the
    /// least recently used idle ones are evicted to make room. Default: 100 000, which bounds
    /// memory whatever ids callers send (an idle aggregate actor takes about 8–10 KiB, so about
    /// 1 GiB at the cap). `None` = no limit. `Some(0)` is treated as `Some(1)`.
    pub max_live_actors: Option<usize>,
    /// At most this many activations run at once, so a burst of cold keys cannot starve warm
    /// traffic. Default: 64. `0` is treated as `1`.
    pub max_concurrent_activations: usize,
    /// Messages that may wait in an actor's mailbox (not counting the one being handled) before
    /// calls to it fail with [`RuntimeError::Overloaded`](crate::RuntimeError::Overloaded).
    /// Default: 1024. `0` is treated as `1`.
    pub mailbox_capacity: usize,
    /// How long [`Directory::call`](crate::Directory::call) waits (activation included) before
    /// [`RuntimeError::Timeout`](crate::RuntimeError::Timeout). Default: 30 s.
    pub call_timeout: Duration,
    /// How long [`Directory::shutdown`](crate::Directory::shutdown) waits for actors to finish
    /// their mailboxes and passivate before killing the rest. Default: 30 s.
    pub shutdown_timeout: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Duration::from_secs(300)),
            max_live_actors: Some(DEFAULT_MAX_LIVE_ACTORS),
            max_concurrent_activations: 64,
            mailbox_capacity: 1024,
            call_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl RuntimeConfig {
    /// The same configuration with every limit made usable (at least 1, at most what a tokio
    /// semaphore can hold).
    pub(crate) fn normalized(mut self) -> Self {
        const MAX: usize = tokio::sync::Semaphore::MAX_PERMITS;
        self.max_live_actors = self.max_live_actors.map(|n| n.clamp(1, MAX));
        self.max_concurrent_activations = self.max_concurrent_activations.clamp(1, MAX);
        self.mailbox_capacity = self.mailbox_capacity.max(1);
        self
    }
}
