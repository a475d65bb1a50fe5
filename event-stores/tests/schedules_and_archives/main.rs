//! Two small contracts in one test binary: snapshot schedule stores (`schedules`) and snapshot
//! archives (`archives`), on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod archives;
mod schedules;
