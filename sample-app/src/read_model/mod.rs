//! A read model kept by a projection: per-customer totals, folded from the events of the
//! accounts each customer owns and of the customer itself.
//!
//! Accounts name their owner when they open (`Opened { owner }`, a customer id); deposits,
//! withdrawals, freezes and closes of an account count for that owner. Customers contribute
//! their name (`Registered`) and how many accounts they linked (`AccountLinked`). The fold
//! ([`fold::Totals::apply`]) is written once and skips an event at or below the last version
//! it folded for its stream, so handling a batch twice changes nothing.
//!
//! Where it lives follows the stores ([`ReadModel::start`]):
//!
//! - **in memory**: a [`Projection`](projections::Projection) with
//!   [`InMemoryCheckpoints`] (at least once; the version guards make that harmless), woken by
//!   [`ReadModel::wake`] after commands;
//! - **PostgreSQL**: the tables `customer_totals` and `customer_totals_accounts` in the
//!   event store's database, kept by a [`PgProjection`](projections::postgres::PgProjection)
//!   whose checkpoint moves in the same transaction as the rows (exactly once), woken by
//!   `LISTEN/NOTIFY` ([`Projector::listen`]). Several processes on one database (cluster
//!   nodes) each run it; one at a time gets each batch, the others find the checkpoint moved.

pub mod fold;
mod memory;
mod postgres;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aggregate_actors::Aggregate;
use aggregate_actors::event_stores::{EventStore, StoreError};
use projections::postgres::Listening;
use projections::{
    EventFilter, InMemoryCheckpoints, ProjectionError, ProjectionHandle, ProjectionStats, Projector,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::domain::{Account, Customer};
use crate::ledger::Stores;
use fold::Totals;

/// The projection's name: the key of its checkpoint.
pub const NAME: &str = "customer_totals";

/// One customer's row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerTotals {
    /// The customer's id (an account's owner).
    pub customer_id: String,
    /// The name the customer registered with; `None` while only accounts name them.
    pub name: Option<String>,
    /// Accounts the customer linked (`AccountLinked`; anyone's).
    pub linked_accounts: u64,
    /// Accounts opened with the customer as owner.
    pub accounts: u64,
    /// Of those, frozen now.
    pub frozen_accounts: u64,
    /// Of those, closed.
    pub closed_accounts: u64,
    /// Their balances, summed.
    pub balance_cents: u64,
    /// Deposits on them.
    pub deposits: u64,
    /// Money deposited on them.
    pub deposited_cents: u64,
    /// Withdrawals from them.
    pub withdrawals: u64,
    /// Money withdrawn from them.
    pub withdrawn_cents: u64,
}

/// Why the read model could not be started or read.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    /// Starting the projection failed.
    #[error("read model projection: {0}")]
    Projection(#[from] ProjectionError),
    /// Its PostgreSQL tables could not be created, read or written.
    #[error("read model database: {0}")]
    Database(#[from] sqlx::Error),
    /// The event feed could not be read.
    #[error("read model event feed: {0}")]
    Store(#[from] StoreError),
    /// A figure does not fit its column (a bug or a hand-edited table).
    #[error("read model figure out of range: {0}")]
    OutOfRange(String),
    /// A thread panicked while folding into the in-memory rows.
    #[error("the in-memory read model's lock is poisoned")]
    Poisoned,
}

/// The events the projection reads: accounts' and customers'.
fn filter() -> EventFilter {
    EventFilter::Types(vec![Account::TYPE, Customer::TYPE])
}

/// Where the rows are.
enum Rows {
    Memory(Arc<RwLock<Totals>>),
    Postgres(PgPool),
}

struct Inner {
    rows: Rows,
    events: Arc<dyn EventStore>,
    projector: Projector,
    handle: ProjectionHandle,
    _listening: Option<Listening>,
}

/// The running read model: its projection and its rows. Cheap to clone.
#[derive(Clone)]
pub struct ReadModel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReadModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadModel")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl ReadModel {
    /// Starts the projection over `stores`' events: into PostgreSQL tables when the stores are
    /// in PostgreSQL (creating them if needed, and listening for appends), in memory otherwise.
    /// It catches up from its checkpoint in the background.
    pub async fn start(stores: &Stores) -> Result<Self, ReadModelError> {
        let projector = Projector::new(Arc::clone(&stores.events));
        let (rows, handle, listening) = match &stores.pool {
            Some(pool) => {
                postgres::create_tables(pool).await?;
                let handle = projector.run_pg(postgres::InPostgres, pool.clone()).await?;
                let listening = projector.listen(pool).await?;
                (Rows::Postgres(pool.clone()), handle, Some(listening))
            }
            None => {
                let totals = Arc::new(RwLock::new(Totals::default()));
                let projection = memory::InMemory {
                    totals: Arc::clone(&totals),
                };
                let handle = projector.run(projection, Arc::new(InMemoryCheckpoints::new()));
                (Rows::Memory(totals), handle, None)
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                rows,
                events: Arc::clone(&stores.events),
                projector,
                handle,
                _listening: listening,
            }),
        })
    }

    /// How far the projection got: position, events handled, lag, caught up.
    pub fn stats(&self) -> ProjectionStats {
        self.inner.handle.stats()
    }

    /// Where the rows live, for humans.
    pub fn backend(&self) -> &'static str {
        match self.inner.rows {
            Rows::Memory(_) => "in memory, at least once, idempotent fold",
            Rows::Postgres(_) => "PostgreSQL tables, exactly once",
        }
    }

    /// Tells the projection that events were appended, so it reads now rather than at its next
    /// poll.
    pub fn wake(&self) {
        self.inner.projector.wake();
    }

    /// Waits until the projection has handled the event at `position`, at most `timeout`;
    /// `true` if it got there.
    pub async fn wait_for(&self, position: u64, timeout: Duration) -> bool {
        self.inner.handle.wait_for(position, timeout).await
    }

    /// The position of the newest event in the store (0 when it is empty): what
    /// [`wait_for`](Self::wait_for) waits for to see every event written so far.
    pub async fn last_position(&self) -> Result<u64, ReadModelError> {
        match &self.inner.rows {
            Rows::Postgres(pool) => postgres::last_position(pool).await,
            Rows::Memory(_) => {
                // The feed from the projection's checkpoint on, page by page.
                let mut last = self.stats().position;
                loop {
                    let page = self.inner.events.read_all(last, 10_000).await?;
                    match page.last() {
                        Some(event) => last = event.position,
                        None => return Ok(last),
                    }
                }
            }
        }
    }

    /// Up to `limit` rows in customer id order: those whose id starts with `prefix` (`""` for
    /// all), after the id `after` when given (to page through).
    pub async fn customers(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<CustomerTotals>, ReadModelError> {
        match &self.inner.rows {
            Rows::Memory(totals) => memory::list(totals, prefix, after, limit),
            Rows::Postgres(pool) => postgres::list(pool, prefix, after, limit).await,
        }
    }

    /// The row of customer `id`, if any event named them yet.
    pub async fn customer(&self, id: &str) -> Result<Option<CustomerTotals>, ReadModelError> {
        match &self.inner.rows {
            Rows::Memory(totals) => memory::get(totals, id),
            Rows::Postgres(pool) => postgres::get(pool, id).await,
        }
    }

    /// Clears the rows and replays the feed from the first event; returns once cleared.
    pub async fn rebuild(&self) -> Result<(), ReadModelError> {
        Ok(self.inner.handle.rebuild().await?)
    }

    /// Stops the projection after the batch in progress.
    pub async fn stop(&self) {
        self.inner.handle.stop().await;
    }
}
