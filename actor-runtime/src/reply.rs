//! [`Reply`]: the sending half a message carries to answer its caller.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::sync::oneshot;

/// What travels back to the caller.
#[derive(Debug)]
pub(crate) enum Answer<R> {
    /// The handler's answer.
    Value(R),
    /// The reply was dropped while its thread was unwinding: the handler panicked with this
    /// message in hand.
    Panicked,
    /// The reply was dropped unanswered inside a handler without a panic: the handler's future
    /// was dropped mid-way (the actor was killed), so what it did is unknown.
    Abandoned,
}

tokio::task_local! {
    /// Set while a host runs a handler, so a reply dropped there can tell "abandoned mid-way"
    /// from "never handled".
    pub(crate) static IN_HANDLER: ();
}

/// The sending half a message carries to answer its caller.
///
/// [`Directory::call`](crate::Directory::call) creates one and hands it to the closure that builds
/// the message. Dropping it unanswered makes the call fail with
/// [`RuntimeError::ActorStopped`](crate::RuntimeError::ActorStopped); if it is dropped because the
/// handler panicked, the caller is answered only once the crashed actor has stopped, so its next
/// call reaches a fresh activation.
pub struct Reply<R>(Option<oneshot::Sender<Answer<R>>>);

impl<R> Reply<R> {
    /// A reply and the receiver that gets its answer — for driving a handler directly in tests.
    pub fn channel() -> (Self, ReplyReceiver<R>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(tx)), ReplyReceiver(rx))
    }

    /// Answers the caller. Returns `false` if the caller is gone (it timed out or was cancelled).
    pub fn send(mut self, value: R) -> bool {
        match self.0.take() {
            Some(tx) => tx.send(Answer::Value(value)).is_ok(),
            None => false,
        }
    }

    /// `true` if the caller has stopped waiting, so the answer would be thrown away.
    pub fn is_closed(&self) -> bool {
        self.0.as_ref().is_none_or(oneshot::Sender::is_closed)
    }
}

impl<R> Drop for Reply<R> {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            if std::thread::panicking() {
                let _ = tx.send(Answer::Panicked);
            } else if IN_HANDLER.try_with(|_| ()).is_ok() {
                let _ = tx.send(Answer::Abandoned);
            }
        }
    }
}

impl<R> fmt::Debug for Reply<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The receiving half of [`Reply::channel`]: resolves to the answer, or `None` if the reply was
/// dropped unanswered.
#[derive(Debug)]
pub struct ReplyReceiver<R>(oneshot::Receiver<Answer<R>>);

impl<R> ReplyReceiver<R> {
    pub(crate) async fn answer(self) -> Option<Answer<R>> {
        self.0.await.ok()
    }
}

impl<R> Future for ReplyReceiver<R> {
    type Output = Option<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|answer| match answer {
            Ok(Answer::Value(value)) => Some(value),
            Ok(Answer::Panicked | Answer::Abandoned) | Err(_) => None,
        })
    }
}
