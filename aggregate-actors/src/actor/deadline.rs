//! A command's store calls bounded by its deadline, with a timer only when one can fire.

use std::{future::Future, pin::pin, task::Poll};

use tokio::time::Instant;

/// The deadline passed before the work finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Elapsed;

/// Runs `work` until `deadline`. The timer is armed only if `work` does not finish on its first
/// poll: the in-memory store's calls always do, and arming a timer for each of them costs more
/// than the call (`benches/PROFILE.md`, section 1).
pub(super) async fn by<F: Future>(deadline: Instant, work: F) -> Result<F::Output, Elapsed> {
    let mut work = pin!(work);
    let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| Elapsed),
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
