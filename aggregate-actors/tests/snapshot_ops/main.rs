//! Snapshot operations, one test binary (one link instead of six): size-based strategies and
//! the test kit's snapshot assertions (`workflow`), bulk snapshots and rebuilds (`batch`), cron
//! schedules (`schedules`), configuration files (`config`), archival and administration
//! (`archive`), incremental snapshots and compression choices (`incremental`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod archive;
mod batch;
mod config;
mod incremental;
mod schedules;
mod workflow;
