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

/// The error type of the harness: anything, with a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
