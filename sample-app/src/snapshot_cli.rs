//! `sample-app snapshots rebuild`: snapshot every aggregate of a type (or some ids) now, with
//! a progress bar, e.g. after a `STATE_SCHEMA_VERSION` bump (see `aggregate_actors::batch`).
//!
//! Interrupted, it says where to resume (`--after ID`); run again without it, it skips every
//! aggregate whose newest snapshot is already current.

use std::fmt::Write as _;

use aggregate_actors::ExecutorError;
use aggregate_actors::batch::{BatchOptions, BatchProgress, BatchReport};
use aggregate_actors::event_stores::StoreError;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::ledger::{Collection, Stores};

/// `snapshots …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// Snapshot every aggregate of a type with events since its last snapshot (or whose
    /// snapshot is of an older state schema), or only the given ids.
    Rebuild(RebuildArgs),
}

/// The options of `snapshots rebuild`.
#[derive(Debug, Args)]
pub struct RebuildArgs {
    /// `accounts` or `customers` (or `account` / `customer`).
    #[arg(long = "type", value_name = "TYPE")]
    pub aggregate_type: String,
    /// Only these ids (repeatable); every aggregate of the type when absent.
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
    /// Aggregates snapshotted at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub parallelism: u16,
    /// Resume after this id (what an interrupted run printed).
    #[arg(long, value_name = "ID", conflicts_with = "ids")]
    pub after: Option<String>,
    /// Snapshot every aggregate, even those whose snapshot is current.
    #[arg(long)]
    pub all: bool,
    /// PostgreSQL URL; in-memory stores (nothing to rebuild) when absent.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

/// Why `snapshots` failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotsCliError {
    /// The type is not one the ledger hosts.
    #[error("unknown aggregate type {0:?}: expected accounts or customers")]
    UnknownType(String),
    /// The stores could not be opened.
    #[error("cannot open the stores: {0}")]
    Store(#[from] StoreError),
    /// The executor could not be built.
    #[error("cannot build the executor: {0}")]
    Build(#[from] aggregate_actors::BuildError),
    /// The batch could not run.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// The progress bar template is wrong.
    #[error("progress bar: {0}")]
    Progress(#[from] indicatif::style::TemplateError),
}

/// Runs `command`; `progress` draws a bar on stderr. Returns the report to print.
pub async fn run(command: SnapshotsCommand, progress: bool) -> Result<String, SnapshotsCliError> {
    let SnapshotsCommand::Rebuild(args) = command;
    let collection = Collection::parse_collection(&args.aggregate_type)
        .ok_or_else(|| SnapshotsCliError::UnknownType(args.aggregate_type.clone()))?;
    let stores = Stores::open(
        args.database_url.as_deref(),
        u32::from(args.parallelism) + 2,
    )
    .await?;
    let executor = stores.executor_with(None)?;
    let bar = if progress {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {pos} aggregates, {msg}",
        )?);
        bar
    } else {
        ProgressBar::hidden()
    };
    let shown = bar.clone();
    let options = BatchOptions {
        parallelism: usize::from(args.parallelism),
        skip_current: !args.all,
        after: args.after.clone(),
        progress: Some(std::sync::Arc::new(move |p: BatchProgress| {
            shown.set_position(p.done);
            shown.set_message(format!(
                "{} snapshotted, {} events",
                p.snapshotted, p.events
            ));
        })),
    };
    let ids = (!args.ids.is_empty()).then_some(args.ids);
    let report = executor
        .snapshot_type_by_name(collection.aggregate_type(), ids, &options)
        .await;
    bar.finish_and_clear();
    executor.shutdown().await;
    Ok(render(collection, &report?))
}

fn render(collection: Collection, report: &BatchReport) -> String {
    let mut text = format!(
        "snapshots of {}: {} aggregates, {} snapshotted, {} already current, {} not found, {} failed; \
         {} events in {:.2?} ({:.0} aggregates/s, {:.0} events/s)\n",
        collection.name(),
        report.aggregates,
        report.snapshotted,
        report.skipped_current,
        report.not_found,
        report.failed,
        report.events,
        report.elapsed,
        report.aggregates_per_second(),
        report.events_per_second(),
    );
    for (id, error) in &report.failures {
        let _ = writeln!(text, "  failed {id}: {error}");
    }
    if report.failed > 0
        && let Some(done) = &report.done_through
    {
        let _ = writeln!(
            text,
            "every id up to {done:?} is done: resume with --after {done}"
        );
    }
    text
}
