//! [`Reply`]: the sending half a message carries to answer its caller.

use std::fmt;

use tokio::sync::oneshot;

/// The sending half a message carries to answer its caller.
///
/// [`Directory::call`](crate::Directory::call) creates one and hands it to the closure that builds
/// the message. Dropping it unanswered makes the call fail with
/// [`RuntimeError::ActorStopped`](crate::RuntimeError::ActorStopped).
pub struct Reply<R>(oneshot::Sender<R>);

impl<R> Reply<R> {
    /// A reply and the receiver that gets its answer — for driving a handler directly in tests.
    pub fn channel() -> (Self, oneshot::Receiver<R>) {
        let (tx, rx) = oneshot::channel();
        (Self(tx), rx)
    }

    /// Answers the caller. Returns `false` if the caller is gone (it timed out or was cancelled).
    pub fn send(self, value: R) -> bool {
        self.0.send(value).is_ok()
    }

    /// `true` if the caller has stopped waiting, so the answer would be thrown away.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("closed", &self.0.is_closed())
            .finish()
    }
}
