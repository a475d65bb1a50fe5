//! A command's store calls bounded by its deadline, with a timer only when one can fire.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// The deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Elapsed;

/// Runs `work` until `deadline`. The timer is armed only if `work` does not finish on its first
/// poll: the in-memory store's calls always do, and arming a timer for each of them costs more
/// than the call (`benches/PROFILE.md`, section 1). A future of its own rather than an `async
/// fn`, which would hold `work` twice (argument and pinned copy) in every command's future.
pub(super) fn by<F: Future>(deadline: Instant, work: F) -> By<F> {
    By {
        work,
        deadline,
        sleep: None,
    }
}

pin_project! {
    /// The future of [`by`].
    pub(super) struct By<F> {
        #[pin]
        work: F,
        deadline: Instant,
        // Boxed: armed only for work that waits, which is slow anyway.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future> Future for By<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.work.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let deadline = *this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        sleep.as_mut().poll(cx).map(|()| Err(Elapsed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn ready_work_is_answered_even_past_its_deadline() {
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(by(past, async { 3 }).await, Ok(3));
    }

    #[tokio::test]
    async fn pending_work_ends_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_millis(30);
        let output = by(deadline, std::future::pending::<()>()).await;
        assert_eq!(output, Err(Elapsed));
        assert!(Instant::now() >= deadline);
    }

    #[tokio::test]
    async fn work_that_waits_once_then_finishes_in_time_is_answered() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let work = async {
            tokio::task::yield_now().await;
            9
        };
        assert_eq!(by(deadline, work).await, Ok(9));
    }
}
