//! Helpers shared by the PostgreSQL test files of this crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Each test file uses some of these helpers, none all of them.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use event_stores::{AppendReceipt, GroupCommitStats, PgEventStore, StoreResult};

/// Makes `owner` the owner of `shard` at `epoch` (what a cluster's claim writes).
pub async fn set_shard_owner(pool: &sqlx::PgPool, shard: i32, owner: uuid::Uuid, epoch: i64) {
    sqlx::query(
        "INSERT INTO shard_owners (shard, owner, epoch) VALUES ($1, $2, $3)
         ON CONFLICT (shard) DO UPDATE SET owner = $2, epoch = $3, changed_at = now()",
    )
    .bind(shard)
    .bind(owner)
    .bind(epoch)
    .execute(pool)
    .await
    .unwrap();
}

// Group commit's queue, for the files that drive it.

/// An append not started yet (a future nobody has polled).
pub type Append = Pin<Box<dyn Future<Output = StoreResult<AppendReceipt>> + Send>>;

/// An append after its first poll.
pub enum Queued {
    /// Answered at once (refused before it was queued).
    Answered(StoreResult<AppendReceipt>),
    /// Waiting in the batcher's queue for its batch's answer.
    Waiting(Append),
}

impl Queued {
    /// Its outcome, waiting for its batch if it was queued.
    pub async fn outcome(self) -> StoreResult<AppendReceipt> {
        match self {
            Queued::Answered(outcome) => outcome,
            Queued::Waiting(append) => append.await,
        }
    }
}

/// Polls `append` once. While a batch is in flight with no room for another, that first poll
/// takes it into the batcher's queue, where it waits: `PgEventStore::append` checks the call
/// and queues it (under a lock) without waiting for anything on the way. So appends polled one
/// after the other are queued in that order, at once, with no sleep and no task to schedule;
/// [`until_stats`] on their being sent, though nobody polls them, confirms it.
pub async fn queue(mut append: Append) -> Queued {
    match std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await {
        Poll::Ready(outcome) => Queued::Answered(outcome),
        Poll::Pending => Queued::Waiting(append),
    }
}

/// Waits (up to 10 s) until the store's group-commit counts satisfy `done`.
pub async fn until_stats(
    store: &PgEventStore,
    what: &str,
    done: impl Fn(&GroupCommitStats) -> bool,
) {
    let started = Instant::now();
    loop {
        let stats = store.group_commit_stats();
        if done(&stats) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}, for 10 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
