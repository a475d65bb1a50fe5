//! Snapshot operations in the sample app, one test binary: `serve --snapshot-config`
//! (`config`), snapshot schedules over HTTP (`schedules`), `snapshots rebuild` (`rebuild_cli`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

mod config;
mod rebuild_cli;
mod schedules;
