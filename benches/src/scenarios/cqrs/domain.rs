//! The cqrs-es side of scenario 4: the ledger as a cqrs-es aggregate (same state, same decide
//! and apply), postgres-es's schema, and its workloads as rounds of fixed work.

use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use postgres_es::{PostgresCqrs, postgres_cqrs, postgres_snapshot_cqrs};
use serde::{Deserialize, Serialize};

use crate::BoxError;
use crate::ledger::{LedgerCommand, LedgerError, LedgerEvent, LedgerState};
use crate::measure::{WorkRound, run_jobs, run_per_caller};

use super::{COLD_CALLERS, CQRS_SNAPSHOT_EVERY, HISTORY, POOL, WARM_AGGREGATES, share};

impl cqrs_es::DomainEvent for LedgerEvent {
    fn event_type(&self) -> String {
        match self {
            LedgerEvent::Deposited { .. } => "Deposited".into(),
            LedgerEvent::Withdrew { .. } => "Withdrew".into(),
        }
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

/// The ledger account as a cqrs-es aggregate: same state, same decide and apply.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CqrsLedger {
    state: LedgerState,
}

impl cqrs_es::Aggregate for CqrsLedger {
    const TYPE: &'static str = "ledger";
    type Command = LedgerCommand;
    type Event = LedgerEvent;
    type Error = LedgerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: LedgerCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), LedgerError> {
        for event in self.state.decide(&command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: LedgerEvent) {
        self.state.apply(&event);
    }
}

/// postgres-es's tables.
const CQRS_SCHEMA: [&str; 2] = [
    "CREATE TABLE events (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
     sequence bigint CHECK (sequence >= 0) NOT NULL, event_type text NOT NULL, \
     event_version text NOT NULL, payload json NOT NULL, metadata json NOT NULL, \
     PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    "CREATE TABLE snapshots (aggregate_type text NOT NULL, aggregate_id text NOT NULL, \
     last_sequence bigint CHECK (last_sequence >= 0) NOT NULL, \
     current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL, \
     payload json NOT NULL, PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
];

type Cqrs = Arc<PostgresCqrs<CqrsLedger>>;

/// cqrs-es on one database, both ways: event-sourced and with its snapshot store.
pub(super) struct CqrsSide {
    pool: sqlx08::PgPool,
    /// Event-sourced: replays the whole history for every command.
    pub(super) es: Cqrs,
    /// With a snapshot every [`CQRS_SNAPSHOT_EVERY`] events.
    pub(super) snap: Cqrs,
}

impl CqrsSide {
    /// Creates the schema on `url`'s database. The pool does not ping a connection before
    /// handing it out (sqlx 0.8's default does), like ours.
    pub(super) async fn connect(url: &str) -> Result<Self, BoxError> {
        let pool = sqlx08::postgres::PgPoolOptions::new()
            .max_connections(POOL)
            .test_before_acquire(false)
            .connect(url)
            .await?;
        for statement in CQRS_SCHEMA {
            sqlx08::query(statement).execute(&pool).await?;
        }
        let es: Cqrs = Arc::new(postgres_cqrs(pool.clone(), vec![], ()));
        let snap: Cqrs = Arc::new(postgres_snapshot_cqrs(
            pool.clone(),
            vec![],
            CQRS_SNAPSHOT_EVERY,
            (),
        ));
        Ok(Self { pool, es, snap })
    }

    /// Closes the pool.
    pub(super) async fn close(&self) {
        self.pool.close().await;
    }
}

async fn execute(cqrs: &Cqrs, id: &str, command: LedgerCommand) -> Result<(), BoxError> {
    cqrs.execute(id, command)
        .await
        .map_err(|e| format!("cqrs-es: {e}"))?;
    Ok(())
}

/// Gives every id a history of [`HISTORY`] events through cqrs-es.
pub(super) async fn seed(cqrs: &Cqrs, ids: &Arc<Vec<String>>) -> Result<(), BoxError> {
    let cqrs = Arc::clone(cqrs);
    let ids = Arc::clone(ids);
    let count = ids.len();
    run_jobs(COLD_CALLERS, count, move |job| {
        let cqrs = Arc::clone(&cqrs);
        let ids = Arc::clone(&ids);
        async move {
            execute(
                &cqrs,
                &ids[job],
                LedgerCommand::Import {
                    count: HISTORY,
                    amount: 5,
                },
            )
            .await
        }
    })
    .await?;
    Ok(())
}

/// Warm rounds on seeded `ids` ([`WARM_AGGREGATES`] of them): `per_round` deposits per
/// aggregate, one caller each.
pub(super) fn warm(cqrs: &Cqrs, ids: &Arc<Vec<String>>, per_round: u64) -> WorkRound {
    let cqrs = Arc::clone(cqrs);
    let ids = Arc::clone(ids);
    Arc::new(move |_| {
        let cqrs = Arc::clone(&cqrs);
        let ids = Arc::clone(&ids);
        Box::pin(async move {
            run_per_caller(WARM_AGGREGATES, per_round, move |caller, _| {
                let cqrs = Arc::clone(&cqrs);
                let ids = Arc::clone(&ids);
                async move {
                    execute(&cqrs, &ids[caller], LedgerCommand::Deposit { amount: 1 }).await
                }
            })
            .await
        })
    })
}

/// Cold rounds on seeded `ids`: round `r` sends one deposit to each id of its share.
pub(super) fn cold(cqrs: &Cqrs, ids: &Arc<Vec<String>>, rounds: usize) -> WorkRound {
    let cqrs = Arc::clone(cqrs);
    let ids = Arc::clone(ids);
    Arc::new(move |round| {
        let cqrs = Arc::clone(&cqrs);
        let ids = Arc::clone(&ids);
        Box::pin(async move {
            let range = share(ids.len(), rounds, round);
            run_jobs(COLD_CALLERS, range.len(), move |job| {
                let cqrs = Arc::clone(&cqrs);
                let ids = Arc::clone(&ids);
                let id = range.start + job;
                async move { execute(&cqrs, &ids[id], LedgerCommand::Deposit { amount: 1 }).await }
            })
            .await
        })
    })
}
