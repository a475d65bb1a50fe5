//! The read model in PostgreSQL, next to the events: a [`PgProjection`] (exactly once) that
//! loads the rows a batch touches, folds the batch into them with [`Totals::apply`] and writes
//! them back, in the transaction that also moves its checkpoint.

use std::collections::BTreeSet;

use aggregate_actors::event_stores::RecordedEvent;
use async_trait::async_trait;
use projections::postgres::PgProjection;
use projections::{EventFilter, HandlerError};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Acquire, PgConnection, Row};

use super::fold::{AccountEntry, CustomerEntry, Fact, LedgerEvent, Totals};
use super::{CustomerTotals, NAME, ReadModelError, filter};

/// The tables: one row per customer (the read model proper), and one per account saying whose
/// it is and how far its stream has been folded.
const SCHEMA: [&str; 2] = [
    r#"
CREATE TABLE IF NOT EXISTS customer_totals (
    customer_id     text PRIMARY KEY,
    version         bigint NOT NULL,
    name            text,
    linked_accounts bigint NOT NULL,
    accounts        bigint NOT NULL,
    frozen_accounts bigint NOT NULL,
    closed_accounts bigint NOT NULL,
    balance_cents   bigint NOT NULL,
    deposits        bigint NOT NULL,
    deposited_cents bigint NOT NULL,
    withdrawals     bigint NOT NULL,
    withdrawn_cents bigint NOT NULL
)"#,
    r#"
CREATE TABLE IF NOT EXISTS customer_totals_accounts (
    account_id text PRIMARY KEY,
    owner      text NOT NULL,
    version    bigint NOT NULL
)"#,
];

/// Serialises the DDL between processes starting at once (cluster nodes).
const DDL_LOCK: i64 = 0x6375_7374_6f74_616c; // "custotal"

/// The columns of `customer_totals`, as a literal for `concat!` (queries are static strings).
macro_rules! columns {
    () => {
        "customer_id, version, name, linked_accounts, accounts, frozen_accounts, \
         closed_accounts, balance_cents, deposits, deposited_cents, withdrawals, withdrawn_cents"
    };
}

/// The exactly-once projection.
pub(super) struct InPostgres;

#[async_trait]
impl PgProjection for InPostgres {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        filter()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), HandlerError> {
        let facts = Fact::decode_all(events)?;
        let mut totals = load(tx, &facts).await?;
        for fact in &facts {
            totals.apply(fact);
        }
        store(tx, &totals).await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut PgConnection) -> Result<(), HandlerError> {
        sqlx::query("TRUNCATE customer_totals, customer_totals_accounts")
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Creates the tables if needed.
pub(super) async fn create_tables(pool: &PgPool) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DDL_LOCK)
        .execute(&mut *tx)
        .await?;
    for statement in SCHEMA {
        sqlx::query(statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The rows `facts` touch: their accounts, then the customers those accounts belong to and
/// those the facts name.
async fn load(tx: &mut PgConnection, facts: &[Fact]) -> Result<Totals, ReadModelError> {
    let mut totals = Totals::default();
    let account_ids: Vec<&str> = facts
        .iter()
        .filter(|fact| matches!(fact.event, LedgerEvent::Account(_)))
        .map(|fact| fact.id.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = sqlx::query(
        "SELECT account_id, owner, version FROM customer_totals_accounts \
         WHERE account_id = ANY($1)",
    )
    .bind(&account_ids)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let entry = AccountEntry {
            owner: row.try_get("owner")?,
            version: unsigned(&row, "version")?,
        };
        totals.accounts.insert(row.try_get("account_id")?, entry);
    }
    let mut customer_ids: BTreeSet<&str> = totals.accounts.values().map(|a| &*a.owner).collect();
    for fact in facts {
        match &fact.event {
            LedgerEvent::Customer(_) => customer_ids.insert(&fact.id),
            LedgerEvent::Account(_) => fact.opened_for().is_some_and(|o| customer_ids.insert(o)),
        };
    }
    let customer_ids: Vec<&str> = customer_ids.into_iter().collect();
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM customer_totals WHERE customer_id = ANY($1)"
    ))
    .bind(&customer_ids)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let entry = CustomerEntry {
            version: unsigned(&row, "version")?,
            totals: customer(&row)?,
        };
        totals
            .customers
            .insert(entry.totals.customer_id.clone(), entry);
    }
    Ok(totals)
}

/// Writes back every row of `totals` (two statements, whatever the batch's size).
async fn store(tx: &mut PgConnection, totals: &Totals) -> Result<(), ReadModelError> {
    let mut ids = Vec::new();
    let mut owners = Vec::new();
    let mut versions = Vec::new();
    for (id, account) in &totals.accounts {
        ids.push(id.as_str());
        owners.push(account.owner.as_str());
        versions.push(signed(account.version)?);
    }
    sqlx::query(
        "INSERT INTO customer_totals_accounts (account_id, owner, version) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[]) \
         ON CONFLICT (account_id) DO UPDATE SET owner = EXCLUDED.owner, version = EXCLUDED.version",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&versions)
    .execute(&mut *tx)
    .await?;

    let mut ids = Vec::new();
    let mut names = Vec::new();
    // version, then the nine figures in the order of `columns!()`.
    let mut numbers: [Vec<i64>; 10] = Default::default();
    for entry in totals.customers.values() {
        let t = &entry.totals;
        ids.push(t.customer_id.as_str());
        names.push(t.name.as_deref());
        let figures = [
            entry.version,
            t.linked_accounts,
            t.accounts,
            t.frozen_accounts,
            t.closed_accounts,
            t.balance_cents,
            t.deposits,
            t.deposited_cents,
            t.withdrawals,
            t.withdrawn_cents,
        ];
        for (column, figure) in numbers.iter_mut().zip(figures) {
            column.push(signed(figure)?);
        }
    }
    let [
        version,
        linked,
        accounts,
        frozen,
        closed,
        balance,
        deposits,
        deposited,
        withdrawals,
        withdrawn,
    ] = numbers;
    sqlx::query(concat!(
        "INSERT INTO customer_totals (",
        columns!(),
        ") \
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], \
             $11::bigint[], $12::bigint[]) \
         ON CONFLICT (customer_id) DO UPDATE SET version = EXCLUDED.version, \
             name = EXCLUDED.name, linked_accounts = EXCLUDED.linked_accounts, \
             accounts = EXCLUDED.accounts, frozen_accounts = EXCLUDED.frozen_accounts, \
             closed_accounts = EXCLUDED.closed_accounts, balance_cents = EXCLUDED.balance_cents, \
             deposits = EXCLUDED.deposits, deposited_cents = EXCLUDED.deposited_cents, \
             withdrawals = EXCLUDED.withdrawals, withdrawn_cents = EXCLUDED.withdrawn_cents"
    ))
    .bind(&ids)
    .bind(&version)
    .bind(&names)
    .bind(&linked)
    .bind(&accounts)
    .bind(&frozen)
    .bind(&closed)
    .bind(&balance)
    .bind(&deposits)
    .bind(&deposited)
    .bind(&withdrawals)
    .bind(&withdrawn)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Up to `limit` rows by customer id: those after `after`, starting with `prefix`.
pub(super) async fn list(
    pool: &PgPool,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<CustomerTotals>, ReadModelError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM customer_totals \
         WHERE starts_with(customer_id, $1) AND ($2::text IS NULL OR customer_id > $2) \
         ORDER BY customer_id LIMIT $3"
    ))
    .bind(prefix)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(customer).collect()
}

/// The row of customer `id`.
pub(super) async fn get(pool: &PgPool, id: &str) -> Result<Option<CustomerTotals>, ReadModelError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        columns!(),
        " FROM customer_totals WHERE customer_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(customer).transpose()
}

/// The position of the newest event in the store.
pub(super) async fn last_position(pool: &PgPool) -> Result<u64, ReadModelError> {
    let row = sqlx::query("SELECT COALESCE(MAX(position), 0) AS position FROM events")
        .fetch_one(pool)
        .await?;
    unsigned(&row, "position")
}

fn customer(row: &PgRow) -> Result<CustomerTotals, ReadModelError> {
    Ok(CustomerTotals {
        customer_id: row.try_get("customer_id")?,
        name: row.try_get("name")?,
        linked_accounts: unsigned(row, "linked_accounts")?,
        accounts: unsigned(row, "accounts")?,
        frozen_accounts: unsigned(row, "frozen_accounts")?,
        closed_accounts: unsigned(row, "closed_accounts")?,
        balance_cents: unsigned(row, "balance_cents")?,
        deposits: unsigned(row, "deposits")?,
        deposited_cents: unsigned(row, "deposited_cents")?,
        withdrawals: unsigned(row, "withdrawals")?,
        withdrawn_cents: unsigned(row, "withdrawn_cents")?,
    })
}

fn unsigned(row: &PgRow, column: &str) -> Result<u64, ReadModelError> {
    let value: i64 = row.try_get(column)?;
    u64::try_from(value).map_err(|_| ReadModelError::OutOfRange(format!("{column} = {value}")))
}

fn signed(value: u64) -> Result<i64, ReadModelError> {
    i64::try_from(value).map_err(|_| ReadModelError::OutOfRange(value.to_string()))
}
