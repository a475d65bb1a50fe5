//! `demo`: drives a realistic ledger workload, then shows what snapshots buy.
//!
//! 1. Plans a seeded workload ([`workload`]): customers register, accounts open and are linked,
//!    then a skewed random mix of transactions, freezes, address changes… runs with bounded
//!    parallelism. Some commands are refused by domain rules, by design.
//! 2. Passivates every actor (accounts leave a snapshot on the way out) and waits for the
//!    snapshot writer.
//! 3. Re-activates every aggregate by reading its state, and does the same on a second
//!    executor over the same event store with an empty snapshot store (a full replay each
//!    time); compares every state and prints replay sizes and activation times side by side.
//! 4. Travels in time on the busiest account: its state at an earlier version and at an
//!    earlier instant, showing the snapshot each reconstruction started from.
//! 5. Shows the read model ([`crate::read_model`]), kept by a projection during the workload:
//!    how long it took to catch up with the last event written, its stats, a few rows.
//! 6. Shows durable reminders ([`reminders`]): a few accounts frozen before the workload, with a
//!    short review delay, get their automatic review while it runs; one unfrozen in time does
//!    not.

pub mod read_model;
pub mod reminders;
pub mod table;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aggregate_actors::event_stores::{StoreError, StreamId};
use aggregate_actors::{
    Aggregate, AggregateStats, At, BuildError, CommandError, Executor, ExecutorError,
    Reconstruction,
};
use chrono::Utc;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::domain::{Account, Customer, Dated, ReviewPolicy};
use crate::ledger::{LedgerAggregate, Stores};
use crate::read_model::{ReadModel, ReadModelError};
use read_model::ReadModelReport;
use reminders::{ReviewDemo, ReviewReport};
use table::{Table, bytes, duration, int};
use workload::{Ids, PlanError, Planned, Step};

/// Sizes and stores of a demo run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Accounts (customers are half as many).
    pub accounts: usize,
    /// Commands in total, setup included.
    pub commands: usize,
    /// Commands in flight at once.
    pub concurrency: usize,
    /// Seed of the workload.
    pub seed: u64,
    /// PostgreSQL URL; in-memory stores when `None`.
    pub database_url: Option<String>,
    /// PostgreSQL pool size.
    pub max_connections: u32,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// How long the reminders section's accounts stay frozen before their review (the
    /// workload's accounts keep the service's default, 30 days).
    pub review_frozen_after: ReviewPolicy,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The workload plan was invalid (a bug).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The stores could not be opened.
    #[error("cannot open the stores: {0}")]
    Store(#[from] StoreError),
    /// An executor could not be built.
    #[error("cannot build the executor: {0}")]
    Build(#[from] BuildError),
    /// Reading a state or reconstructing failed.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// The read model could not be started or read.
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    /// The progress bar template is invalid (a bug).
    #[error("progress bar: {0}")]
    Progress(#[from] indicatif::style::TemplateError),
}

/// How the workload's commands ended.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Commands that stored their events.
    pub accepted: u64,
    /// Commands refused by a domain rule, by rule.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Commands that failed for another reason and stored nothing (should be none).
    pub failed: u64,
    /// Commands whose outcome was unknown (they may have been stored; should be none).
    pub indeterminate: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
}

impl Tally {
    /// All rejected commands.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    fn record<A: LedgerAggregate, T>(&mut self, outcome: Result<T, CommandError<A::Error>>) {
        match outcome {
            Ok(_) => self.accepted += 1,
            Err(CommandError::Rejected(error)) => {
                *self.rejected.entry(A::rule(&error)).or_default() += 1
            }
            Err(error) => {
                if error.is_indeterminate() {
                    self.indeterminate += 1;
                } else {
                    self.failed += 1;
                }
                self.first_failure.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// Replay sizes and times of one round of activations, one entry per aggregate in the same
/// order for both rounds.
#[derive(Debug, Default, Clone)]
pub struct Activations {
    /// Events replayed by each activation.
    pub replayed: Vec<u64>,
    /// Wall time of each activation, as the framework measured it.
    pub elapsed: Vec<Duration>,
    /// Activations that started from a snapshot.
    pub from_snapshot: u64,
}

impl Activations {
    /// Mean events replayed.
    pub fn mean_replayed(&self) -> f64 {
        if self.replayed.is_empty() {
            return 0.0;
        }
        self.replayed.iter().sum::<u64>() as f64 / self.replayed.len() as f64
    }

    /// Most events replayed by one activation.
    pub fn max_replayed(&self) -> u64 {
        self.replayed.iter().copied().max().unwrap_or(0)
    }

    /// Total activation time.
    pub fn total(&self) -> Duration {
        self.elapsed.iter().sum()
    }

    /// Mean activation time.
    pub fn mean(&self) -> Duration {
        match u32::try_from(self.elapsed.len()) {
            Ok(0) | Err(_) => Duration::ZERO,
            Ok(n) => self.total() / n,
        }
    }

    /// Index of the activation that replayed the most events.
    pub fn busiest(&self) -> usize {
        (0..self.replayed.len())
            .max_by_key(|&i| self.replayed[i])
            .unwrap_or(0)
    }

    /// The longest activation.
    pub fn max(&self) -> Duration {
        self.elapsed.iter().copied().max().unwrap_or_default()
    }

    /// 99th percentile of the activation time (nearest rank).
    pub fn p99(&self) -> Duration {
        let mut sorted = self.elapsed.clone();
        sorted.sort_unstable();
        let rank = (sorted.len() * 99).div_ceil(100);
        sorted
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }
}

/// One aggregate type, re-activated both ways.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The aggregate type.
    pub aggregate_type: &'static str,
    /// From snapshots (the service's executor).
    pub with_snapshots: Activations,
    /// From events only.
    pub full_replay: Activations,
    /// Aggregates whose state and version were equal both ways.
    pub equal: usize,
    /// Aggregates compared.
    pub compared: usize,
    /// The first few that differed.
    pub mismatches: Vec<String>,
    /// Snapshot counters of the workload.
    pub snapshots: AggregateStats,
}

/// One time-travel query.
#[derive(Debug, Clone)]
pub struct Travel {
    /// What was asked.
    pub query: String,
    /// The version reached.
    pub version: u64,
    /// The snapshot it started from.
    pub from_snapshot: Option<u64>,
    /// Events replayed after it.
    pub events_replayed: u64,
    /// How long it took.
    pub elapsed: Duration,
    /// The account's balance then.
    pub balance_cents: u64,
}

impl Travel {
    fn of(query: String, r: &Reconstruction<Account>) -> Self {
        Self {
            query,
            version: r.version,
            from_snapshot: r.from_snapshot.as_ref().map(|s| s.version),
            events_replayed: r.events_replayed,
            elapsed: r.elapsed,
            balance_cents: r.state.balance_cents,
        }
    }
}

/// What a demo run measured.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The options it ran with.
    pub options: DemoOptions,
    /// Where the stores were.
    pub stores: String,
    /// The run id in aggregate ids.
    pub run: String,
    /// Accounts and customers.
    pub ids: Ids,
    /// Commands sent.
    pub commands: u64,
    /// How they ended.
    pub tally: Tally,
    /// Wall time of the workload.
    pub workload_time: Duration,
    /// Wall time of passivate_all + flush_snapshots.
    pub passivation_time: Duration,
    /// Per aggregate type.
    pub comparisons: Vec<Comparison>,
    /// The account travelled on and its version.
    pub travel_account: (String, u64),
    /// Snapshots of that account kept by retention: how many, the oldest and newest version.
    pub snapshots_kept: (usize, Option<u64>, Option<u64>),
    /// The time-travel queries.
    pub travels: Vec<Travel>,
    /// True when the two reconstructions at the same version agreed.
    pub travel_states_equal: bool,
    /// The read model once the projection caught up.
    pub read_model: ReadModelReport,
    /// The reminders section: reviews of frozen accounts.
    pub reviews: ReviewReport,
    /// Wall time of the whole run.
    pub total_time: Duration,
}

impl DemoReport {
    /// True when nothing failed, every state matched its full replay, the read model caught
    /// up and every review fired exactly once (and the cancelled one not at all).
    pub fn passed(&self) -> bool {
        self.read_model.caught_up
            && self.reviews.passed()
            && self.tally.failed == 0
            && self.tally.indeterminate == 0
            && self.travel_states_equal
            && self.comparisons.iter().all(|c| c.equal == c.compared)
    }
}

/// Runs the demo.
pub async fn run(options: DemoOptions) -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let stores = Stores::open(options.database_url.as_deref(), options.max_connections).await?;
    let executor = stores.executor()?;
    // Catches up with what the store holds already, then follows the workload.
    let projection = ReadModel::start(&stores).await?;
    // A per-run id, so runs sharing a PostgreSQL database never touch each other's aggregates.
    let run = format!("{:08x}", rand::random::<u32>());
    let ids = Ids::new(run.clone(), options.accounts.max(1));
    let plan = workload::plan(&ids, options.commands, options.seed)?;
    let commands = plan.len() as u64;
    // Frozen now; their reviews fall due while the workload and the comparison run.
    let reviews = ReviewDemo::start(&stores, &run, options.review_frozen_after).await?;

    let progress = if options.progress {
        ProgressBar::new(commands)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{msg:8} [{bar:40}] {pos}/{len} commands, {elapsed} elapsed, eta {eta}",
        )?
        .progress_chars("=> "),
    );

    // 1. The workload, phase by phase: customers must exist before accounts are linked.
    let workload_started = Instant::now();
    let mut tally = Tally::default();
    let mut midpoint = None;
    let concurrency = options.concurrency.max(1);
    for (name, steps) in [
        ("setup", plan.setup),
        ("links", plan.links),
        ("traffic", plan.traffic),
    ] {
        progress.set_message(name);
        let mut outcomes = futures::stream::iter(steps)
            .map(|planned| run_step(&executor, &ids, planned))
            .buffer_unordered(concurrency);
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                StepOutcome::Account(result) => tally.record::<Account, _>(result),
                StepOutcome::Customer(result) => tally.record::<Customer, _>(result),
            }
            projection.wake();
            progress.inc(1);
            if midpoint.is_none() && progress.position() * 2 >= commands {
                // The instant the time-travel query will go back to.
                midpoint = Some(Utc::now());
            }
        }
    }
    progress.finish_and_clear();
    let workload_time = workload_started.elapsed();
    let read_model = read_model::measure(&projection, &ids).await?;
    projection.stop().await;

    // 2. Every actor leaves memory; accounts write a snapshot on the way out.
    let passivation_started = Instant::now();
    executor.passivate_all().await;
    executor.flush_snapshots().await;
    let passivation_time = passivation_started.elapsed();
    let stats = executor.stats();

    // 3. Everything comes back: from snapshots, and from events only.
    let full_replay = stores.full_replay_executor()?;
    let account_ids: Vec<String> = (0..ids.accounts).map(|i| ids.account(i)).collect();
    let customer_ids: Vec<String> = (0..ids.customers).map(|i| ids.customer(i)).collect();
    let mut accounts = compare::<Account>(&executor, &full_replay, &account_ids).await?;
    accounts.0.snapshots = stats
        .of(Account::TYPE)
        .map(|t| t.aggregate.clone())
        .unwrap_or_default();
    let mut customers = compare::<Customer>(&executor, &full_replay, &customer_ids).await?;
    customers.0.snapshots = stats
        .of(Customer::TYPE)
        .map(|t| t.aggregate.clone())
        .unwrap_or_default();

    // 4. Time travel on the busiest account.
    let (busiest, version) = accounts
        .1
        .iter()
        .max_by_key(|(_, version)| *version)
        .map(|(id, version)| (id.clone(), *version))
        .unwrap_or_default();
    // Retention keeps the newest snapshots only: aim between the oldest one kept and now, so
    // the reconstruction can start from a snapshot whatever the workload's size.
    let stream = StreamId::new(Account::TYPE, &busiest).map_err(ExecutorError::from)?;
    let kept: Vec<u64> = stores
        .snapshots
        .list(&stream, 0, u64::MAX)
        .await?
        .iter()
        .map(|s| s.version)
        .collect();
    let oldest_kept = kept.iter().copied().min();
    let target = match oldest_kept {
        Some(oldest) => (oldest + version) / 2 + 1,
        None => version * 3 / 5,
    }
    .clamp(1, version.max(1));
    let with = executor
        .reconstruct::<Account>(&busiest, At::Version(target))
        .await?;
    let without = full_replay
        .reconstruct::<Account>(&busiest, At::Version(target))
        .await?;
    let travel_states_equal = with.state == without.state && with.version == without.version;
    let mut travels = vec![
        Travel::of(format!("version {target}"), &with),
        Travel::of(format!("version {target}, no snapshots"), &without),
    ];
    if let Some(midpoint) = midpoint {
        let then = executor
            .reconstruct::<Account>(&busiest, At::Time(midpoint))
            .await?;
        travels.push(Travel::of(
            format!("{} (mid-run)", midpoint.format("%H:%M:%S%.3f UTC")),
            &then,
        ));
    }

    executor.shutdown().await;
    full_replay.shutdown().await;
    // 5. The reviews, fired meanwhile by the section's scheduler.
    let reviews = reviews.finish().await;
    Ok(DemoReport {
        stores: stores.description.clone(),
        run,
        ids,
        commands,
        tally,
        workload_time,
        passivation_time,
        comparisons: vec![accounts.0, customers.0],
        travel_account: (busiest, version),
        snapshots_kept: (kept.len(), oldest_kept, kept.iter().copied().max()),
        travels,
        travel_states_equal,
        read_model,
        reviews,
        total_time: started.elapsed(),
        options,
    })
}

enum StepOutcome {
    Account(Result<u64, CommandError<<Account as aggregate_actors::Aggregate>::Error>>),
    Customer(Result<u64, CommandError<<Customer as aggregate_actors::Aggregate>::Error>>),
}

async fn run_step(executor: &Executor, ids: &Ids, planned: Planned) -> StepOutcome {
    match planned.step {
        Step::Account { index, command } => StepOutcome::Account(
            executor
                .execute::<Account>(&ids.account(index), Dated::at(command, planned.at))
                .await
                .map(|done| done.version),
        ),
        Step::Customer { index, command } => StepOutcome::Customer(
            executor
                .execute::<Customer>(&ids.customer(index), Dated::at(command, planned.at))
                .await
                .map(|done| done.version),
        ),
    }
}

/// Activates every id on both executors, one at a time (so the times measure activation, not
/// queueing), and compares the states. Returns the comparison and each id's version.
async fn compare<A: LedgerAggregate>(
    snapshots: &Executor,
    full_replay: &Executor,
    ids: &[String],
) -> Result<(Comparison, Vec<(String, u64)>), ExecutorError> {
    let mut comparison = Comparison {
        aggregate_type: A::TYPE,
        with_snapshots: Activations::default(),
        full_replay: Activations::default(),
        equal: 0,
        compared: 0,
        mismatches: Vec::new(),
        snapshots: AggregateStats::default(),
    };
    let mut versions = Vec::with_capacity(ids.len());
    for id in ids {
        let a = snapshots.state::<A>(id).await?;
        let b = full_replay.state::<A>(id).await?;
        for (activations, view) in [
            (&mut comparison.with_snapshots, &a),
            (&mut comparison.full_replay, &b),
        ] {
            activations.replayed.push(view.activation.events_replayed);
            activations.elapsed.push(view.activation.elapsed);
            activations.from_snapshot += u64::from(view.activation.snapshot_version().is_some());
        }
        comparison.compared += 1;
        if a.state == b.state && a.version == b.version {
            comparison.equal += 1;
        } else if comparison.mismatches.len() < 5 {
            comparison
                .mismatches
                .push(format!("{id}: v{} vs v{}", a.version, b.version));
        }
        versions.push((id.clone(), a.version));
    }
    // Free the memory; the next run of the comparison would re-activate anyway.
    snapshots.passivate_all().await;
    full_replay.passivate_all().await;
    Ok((comparison, versions))
}

fn cents(c: u64) -> String {
    format!("{}.{:02}", int(c / 100), c % 100)
}

impl DemoReport {
    /// The report as aligned text tables.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let per_second = self.commands as f64 / self.workload_time.as_secs_f64().max(1e-9);
        let _ = writeln!(
            out,
            "Ledger demo on {} (run {}, seed {})",
            self.stores, self.run, o.seed
        );
        let _ = writeln!(
            out,
            "Workload: {} accounts, {} customers, {} commands in {} ({} commands/s, concurrency {})",
            int(self.ids.accounts as u64),
            int(self.ids.customers as u64),
            int(self.commands),
            duration(self.workload_time),
            int(per_second as u64),
            o.concurrency,
        );
        let rules: Vec<String> = {
            let mut by_count: Vec<_> = self.tally.rejected.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1));
            by_count
                .iter()
                .map(|(rule, n)| format!("{rule} {}", int(**n)))
                .collect()
        };
        let _ = writeln!(
            out,
            "  accepted {}, rejected by domain rules {} ({}), failed {}, outcome unknown {}",
            int(self.tally.accepted),
            int(self.tally.rejected_total()),
            if rules.is_empty() {
                "none".to_owned()
            } else {
                rules.join(", ")
            },
            int(self.tally.failed),
            int(self.tally.indeterminate),
        );
        if let Some(failure) = &self.tally.first_failure {
            let _ = writeln!(out, "  first failure: {failure}");
        }
        let _ = writeln!(
            out,
            "  passivate_all + flush_snapshots took {}\n",
            duration(self.passivation_time)
        );

        let _ = writeln!(
            out,
            "Re-activating every aggregate, one at a time: from snapshots vs full replay (empty snapshot store)\n"
        );
        let mut table = Table::new(
            [""].into_iter()
                .chain(self.comparisons.iter().flat_map(|c| [c.aggregate_type, ""])),
        );
        table.header(
            [""].into_iter().chain(
                self.comparisons
                    .iter()
                    .flat_map(|_| ["snapshots", "full replay"]),
            ),
        );
        let both = |f: &dyn Fn(&Activations) -> String| -> Vec<String> {
            self.comparisons
                .iter()
                .flat_map(|c| [f(&c.with_snapshots), f(&c.full_replay)])
                .collect()
        };
        let mut row = |label: &str, cells: Vec<String>| {
            table.row(std::iter::once(label.to_owned()).chain(cells));
        };
        row("activations", both(&|a| int(a.replayed.len() as u64)));
        row("  started from a snapshot", both(&|a| int(a.from_snapshot)));
        row(
            "events replayed: mean",
            both(&|a| format!("{:.1}", a.mean_replayed())),
        );
        row("events replayed: max", both(&|a| int(a.max_replayed())));
        row("activation time: mean", both(&|a| duration(a.mean())));
        row("activation time: p99", both(&|a| duration(a.p99())));
        row("activation time: max", both(&|a| duration(a.max())));
        row("activation time: total", both(&|a| duration(a.total())));
        row(
            "busiest aggregate: activation time",
            self.comparisons
                .iter()
                .flat_map(|c| {
                    let busiest = c.full_replay.busiest();
                    [
                        c.with_snapshots.elapsed.get(busiest),
                        c.full_replay.elapsed.get(busiest),
                    ]
                    .map(|t| t.map_or_else(|| "-".to_owned(), |t| duration(*t)))
                })
                .collect(),
        );
        row(
            "states equal to full replay",
            self.comparisons
                .iter()
                .flat_map(|c| {
                    [
                        format!("{} / {}", int(c.equal as u64), int(c.compared as u64)),
                        String::new(),
                    ]
                })
                .collect(),
        );
        out.push_str(&table.render());
        for c in &self.comparisons {
            for mismatch in &c.mismatches {
                let _ = writeln!(out, "  MISMATCH {}: {mismatch}", c.aggregate_type);
            }
        }

        let _ = writeln!(
            out,
            "\nSnapshots written during the workload and passivation\n"
        );
        let mut table = Table::new(
            [""].into_iter()
                .chain(self.comparisons.iter().map(|c| c.aggregate_type)),
        );
        let per_type = |f: &dyn Fn(&AggregateStats) -> String| -> Vec<String> {
            self.comparisons.iter().map(|c| f(&c.snapshots)).collect()
        };
        let mut row = |label: &str, cells: Vec<String>| {
            table.row(std::iter::once(label.to_owned()).chain(cells));
        };
        row("taken", per_type(&|s| int(s.snapshots_taken)));
        row(
            "bytes before compression",
            per_type(&|s| bytes(s.snapshot_bytes_uncompressed)),
        );
        row(
            "bytes stored",
            per_type(&|s| bytes(s.snapshot_bytes_stored)),
        );
        row(
            "compression ratio",
            per_type(&|s| match s.snapshot_bytes_stored {
                0 => "-".to_owned(),
                stored => format!(
                    "{:.1}x",
                    s.snapshot_bytes_uncompressed as f64 / stored as f64
                ),
            }),
        );
        row(
            "mean bytes stored per snapshot",
            per_type(&|s| match s.snapshots_taken {
                0 => "-".to_owned(),
                n => bytes(s.snapshot_bytes_stored / n),
            }),
        );
        row(
            "failed (commands unaffected)",
            per_type(&|s| int(s.snapshots_failed)),
        );
        row(
            "skipped as invalid on load",
            per_type(&|s| int(s.snapshots_skipped_invalid)),
        );
        row(
            "superseded before written",
            per_type(&|s| int(s.snapshots_superseded)),
        );
        out.push_str(&table.render());

        let (account, version) = &self.travel_account;
        let _ = writeln!(
            out,
            "\nTime travel on the busiest account, {account} (now at version {version})\n"
        );
        let mut table = Table::new([
            "query",
            "reached",
            "started from",
            "events replayed",
            "time",
            "balance",
        ]);
        for t in &self.travels {
            table.row([
                t.query.clone(),
                format!("v{}", t.version),
                t.from_snapshot
                    .map_or_else(|| "first event".to_owned(), |v| format!("snapshot v{v}")),
                int(t.events_replayed),
                duration(t.elapsed),
                cents(t.balance_cents),
            ]);
        }
        out.push_str(&table.render());
        if let (count, Some(oldest), Some(newest)) = self.snapshots_kept {
            let _ = writeln!(
                out,
                "(retention keeps its newest {count} snapshots, v{oldest} to v{newest}; older points replay from the first event)"
            );
        }
        self.read_model.render(&mut out);
        self.reviews.render(&mut out);
        let _ = writeln!(
            out,
            "\n{} in {}",
            if self.passed() {
                "OK: every state rebuilt from snapshots equals its full replay"
            } else {
                "FAILED: see the mismatches and failures above"
            },
            duration(self.total_time)
        );
        out
    }
}
