//! The benchmark harness of the workspace.
//!
//! One binary (`cargo run --release -p benchmarks -- [--quick] [--only SCENARIO]
//! [--database-url URL]`) runs every scenario in [`scenarios`], each measured side by side with
//! a baseline in the same run, prints a table per scenario and writes `benches/REPORT.md` (with
//! a headline table) and `benches/recovery.svg`. On a shared, noisy machine only the ratios are
//! meaningful, so every figure has its baseline next to it.
//!
//! Building blocks: [`measure`] (concurrent callers on tokio tasks, hdrhistogram latencies),
//! [`figures`] (how a figure is written),
//! [`ledger`] (the domain, shared with the cqrs-es baseline), [`pg`] (databases on the server),
//! [`probe`] (memory measured in a child process), [`plot`] and [`report`]. Every binary runs
//! on [`allocator::Allocator`] (jemalloc with the `jemalloc` feature, as `make bench` builds).

pub mod allocator;
pub mod baseline;
pub mod figures;
pub mod ledger;
pub mod measure;
pub mod pg;
pub mod plot;
pub mod probe;
pub mod report;
pub mod scenarios;
pub mod tiers;

/// Installs a `tracing` subscriber that writes warnings and errors to standard error, as a
/// service would (the sample app installs one).
///
/// Without any subscriber, a library built with `tracing`'s `log` feature (sqlx turns it on)
/// still records every span's fields for `log`: ractor's `#[instrument]` on an actor's start and
/// its message loop then formats the actor's id twice per spawn, ≈ 2 000 instructions of a
/// 39 500-instruction promotion and demotion cycle (`PROFILE.md`, section 1). Every binary of the harness installs this
/// first, so ours and every baseline run under the same setting.
pub fn install_subscriber() {
    // Already installed (a test of this crate did): keep that one.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The error type of the harness: anything, with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
