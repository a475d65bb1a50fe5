//! The aggregate actors' behaviour on both backends, one test binary (one link, and the
//! executor's generic code compiled once, instead of twelve times): command semantics
//! (`commands`), creation commands (`creation_commands`), exactly-once commands
//! (`exactly_once`), the executor's routing and lifecycle (`executor`), inspection and time
//! travel (`inspect_and_reconstruct`), long-lived aggregates (`long_lived`), placement
//! (`placement`), snapshot equivalence and integrity (`snapshot_equivalence`,
//! `snapshot_integrity`), strategies in live actors (`strategies_in_actors`), upcasting
//! (`upcasting`) and durable reminders (`reminders`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod commands;
mod creation_commands;
mod exactly_once;
mod executor;
mod inspect_and_reconstruct;
mod long_lived;
mod placement;
mod reminders;
mod residency;
mod snapshot_equivalence;
mod snapshot_integrity;
mod strategies_in_actors;
mod upcasting;
