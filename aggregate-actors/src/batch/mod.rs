//! Snapshots in bulk: [`Executor::create_snapshots`] for a list of ids and
//! [`Executor::rebuild_snapshots`] for every stream of a type, with bounded parallelism.
//!
//! Each aggregate is snapshotted through its actor ([`Executor::snapshot_now`]), so a batch
//! never races the aggregate's own commands or snapshots and, in a cluster, runs on the node
//! that owns it. An actor the batch had to activate is passivated again at once, so a rebuild
//! of a million streams does not fill memory with actors.
//!
//! A rebuild is resumable twice over: it walks the type's ids in ascending order and reports a
//! watermark ([`BatchReport::done_through`], every id up to it is done) to pass back as
//! [`BatchOptions::after`]; and by default it skips every stream whose newest snapshot is
//! already current (this [`STATE_SCHEMA_VERSION`](crate::Aggregate::STATE_SCHEMA_VERSION), at
//! the stream's version), so simply running it again finishes what an interrupted run left.

use std::collections::BTreeSet;
use std::time::Instant;

use event_stores::StreamId;
use futures::stream::{self, StreamExt};

use crate::aggregate::Aggregate;
use crate::error::ExecutorError;
use crate::executor::Executor;

pub(crate) mod options;
pub(crate) mod report;

pub use options::{BatchOptions, BatchProgress, ProgressFn};
pub use report::BatchReport;

/// Ids asked of the event store per page while a rebuild walks a type.
const ID_PAGE: usize = 1_000;

/// Failures kept in a report (the count goes on).
const FAILURES_KEPT: usize = 100;

/// One aggregate's outcome.
enum Outcome {
    Snapshotted(u64),
    Current,
    NotFound,
    Failed(ExecutorError),
}

impl Executor {
    /// Snapshots each of `ids` of type `A` now (see the [module docs](crate::batch)), at most
    /// `options.parallelism` at once, and reports what it did. Fails only when `A` is not
    /// registered or the executor is shutting down; a failure of one aggregate is counted in
    /// the report and the batch goes on.
    pub async fn create_snapshots<A: Aggregate>(
        &self,
        ids: impl IntoIterator<Item = impl Into<String>>,
        options: &BatchOptions,
    ) -> Result<BatchReport, ExecutorError> {
        let started = Instant::now();
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        let mut report = BatchReport::default();
        self.run_batch::<A>(ids, options, &mut report).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Snapshots every stream of type `A` (after `options.after`), walking the ids in
    /// ascending order, e.g. after a [`STATE_SCHEMA_VERSION`](crate::Aggregate::STATE_SCHEMA_VERSION)
    /// bump so that no activation has to replay a whole stream. See the [module
    /// docs](crate::batch) for how it resumes.
    pub async fn rebuild_snapshots<A: Aggregate>(
        &self,
        options: &BatchOptions,
    ) -> Result<BatchReport, ExecutorError> {
        let started = Instant::now();
        let mut report = BatchReport::default();
        let mut after = options.after.clone();
        loop {
            let page = self
                .event_store()
                .stream_ids(A::TYPE, after.as_deref(), ID_PAGE)
                .await?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            self.run_batch::<A>(page, options, &mut report).await?;
            after = Some(last);
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// [`create_snapshots`](Self::create_snapshots) (with `ids`) or
    /// [`rebuild_snapshots`](Self::rebuild_snapshots) (without) for the aggregate type named
    /// `aggregate_type`: for callers that know the type by name only (a stored schedule, a
    /// command line).
    pub async fn snapshot_type_by_name(
        &self,
        aggregate_type: &str,
        ids: Option<Vec<String>>,
        options: &BatchOptions,
    ) -> Result<BatchReport, ExecutorError> {
        let Some(registered) = self.registered_by_name(aggregate_type) else {
            return Err(ExecutorError::TypeNotServed {
                aggregate_type: aggregate_type.to_owned(),
            });
        };
        registered.snapshot_batch(self, ids, options).await
    }

    /// Runs one page of ids, `parallelism` at a time, adding to `report`.
    async fn run_batch<A: Aggregate>(
        &self,
        ids: Vec<String>,
        options: &BatchOptions,
        report: &mut BatchReport,
    ) -> Result<(), ExecutorError> {
        if self.stats_of::<A>().is_none() {
            return Err(ExecutorError::UnknownAggregateType(A::TYPE));
        }
        // For the watermark: every id of the batch below the smallest one still running is done.
        let all: BTreeSet<String> = ids.iter().cloned().collect();
        let mut running = all.clone();
        let mut outcomes = stream::iter(ids)
            .map(|id| async move {
                let outcome = self.snapshot_one::<A>(&id, options.skip_current).await;
                (id, outcome)
            })
            .buffer_unordered(options.parallelism.max(1));
        while let Some((id, outcome)) = outcomes.next().await {
            report.aggregates += 1;
            match outcome {
                Outcome::Snapshotted(version) => {
                    report.snapshotted += 1;
                    report.events += version;
                }
                Outcome::Current => report.skipped_current += 1,
                Outcome::NotFound => report.not_found += 1,
                Outcome::Failed(ExecutorError::ShuttingDown) => {
                    return Err(ExecutorError::ShuttingDown);
                }
                Outcome::Failed(error) => {
                    report.failed += 1;
                    if report.failures.len() < FAILURES_KEPT {
                        report.failures.push((id.clone(), error));
                    }
                }
            }
            running.remove(&id);
            let done = match running.first() {
                Some(first) => all.range::<String, _>(..first).next_back(),
                None => all.last(),
            };
            if let Some(done) = done
                && report
                    .done_through
                    .as_ref()
                    .is_none_or(|before| done > before)
            {
                report.done_through = Some(done.clone());
            }
            if let Some(progress) = &options.progress {
                progress(BatchProgress {
                    done: report.aggregates,
                    snapshotted: report.snapshotted,
                    events: report.events,
                });
            }
        }
        Ok(())
    }

    async fn snapshot_one<A: Aggregate>(&self, id: &str, skip_current: bool) -> Outcome {
        if skip_current {
            match self.is_current::<A>(id).await {
                Ok(true) => return Outcome::Current,
                Ok(false) => {}
                Err(error) => return Outcome::Failed(error),
            }
        }
        let was_live = self.is_live::<A>(id);
        let outcome = match self.snapshot_now::<A>(id).await {
            Ok(version) => Outcome::Snapshotted(version),
            Err(ExecutorError::NotFound { .. }) => Outcome::NotFound,
            Err(error) => Outcome::Failed(error),
        };
        if !was_live {
            // Activated for the batch only: leave it as it was found.
            let _ = self.passivate::<A>(id).await;
        }
        outcome
    }

    /// Whether `id`'s newest snapshot is of the current state schema and at its version.
    async fn is_current<A: Aggregate>(&self, id: &str) -> Result<bool, ExecutorError> {
        let stream = StreamId::new(A::TYPE, id).map_err(ExecutorError::InvalidInput)?;
        let Some(newest) = self.snapshot_store().load_latest(&stream).await? else {
            return Ok(false);
        };
        if newest.state_schema_version != A::STATE_SCHEMA_VERSION {
            return Ok(false);
        }
        Ok(self.event_store().stream_version(&stream).await? == newest.version)
    }
}
