//! A ledger service built on [`aggregate_actors`], using only its public API: the code to copy
//! when you start your own.
//!
//! - [`domain`]: two aggregates, ledger [`Account`](domain::Account)s and
//!   [`Customer`](domain::Customer)s — commands (JSON-deserializable, validated on the way in),
//!   events, state, typed domain errors, and the `decide` / `apply` pair.
//! - [`ledger`]: which aggregates the service hosts, their snapshot strategies, and opening the
//!   stores (in-memory or PostgreSQL).
//! - [`http`]: the axum API (commands, state, time travel, snapshots, the read model,
//!   Prometheus metrics).
//! - [`read_model`]: per-customer totals kept by a projection (in memory, or exactly once in
//!   PostgreSQL tables).
//! - [`cluster`]: cluster mode, several `serve` processes sharing the aggregates through one
//!   PostgreSQL database.
//! - [`cluster_demo`]: three cluster nodes under load, one killed, then an audit in SQL.
//! - [`demo`]: a workload that shows what snapshots buy, with a comparison against full replay.
//! - [`inspect`]: everything stored about one aggregate, decoded and verified.
//! - [`scheduler`]: the reminder scheduler run next to the executor (it fires the accounts'
//!   reviews).
//! - [`backup`]: `backup export` / `backup import`, the store to a backup file and back.
//!
//! The binary `sample-app` wires these to the `serve`, `demo`, `inspect`, `cluster-demo` and
//! `backup` subcommands.

pub mod backup;
pub mod cluster;
pub mod cluster_demo;
pub mod demo;
pub mod domain;
pub mod http;
pub mod inspect;
pub mod ledger;
pub mod read_model;
pub mod scheduler;
pub mod snapshot_cli;
pub mod views;
