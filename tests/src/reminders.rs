//! Shared by the reminder tests and `reminder_node`: seeding wallets with reminders straight
//! into the store, and the raw-SQL audit of their firings.

use std::sync::Arc;

use aggregate_actors::codec;
use aggregate_actors::event_stores::{EventStore, ReminderChange, StoreError, StreamId};
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::wallet::WalletCommand;

/// The wallet ids of a seeded run: `r-0`, `r-1`, …
pub fn wallet_id(n: usize) -> String {
    format!("r-{n}")
}

/// Gives `count` wallets one reminder each, named `pay`, delivering a deposit of 1, due at
/// `first_due` plus an even spread over `spread`. Stored directly (version 0, no events), 64
/// at a time. Returns each wallet's due time.
pub async fn seed(
    store: Arc<dyn EventStore>,
    count: usize,
    first_due: DateTime<Utc>,
    spread: chrono::Duration,
) -> Result<Vec<DateTime<Utc>>, StoreError> {
    let step = spread / i32::try_from(count.max(1)).unwrap_or(i32::MAX);
    let dues: Vec<DateTime<Utc>> = (0..count)
        .map(|n| first_due + step * i32::try_from(n).unwrap_or(i32::MAX))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = count.div_ceil(64);
    for chunk in (0..count).collect::<Vec<_>>().chunks(per_task.max(1)) {
        let (store, chunk, dues) = (Arc::clone(&store), chunk.to_vec(), dues.clone());
        tasks.spawn(async move {
            for n in chunk {
                let stream = StreamId::new("wallet", wallet_id(n))?;
                let command = WalletCommand::Deposit {
                    command: Uuid::now_v7(),
                    amount: 1,
                };
                let payload = codec::encode(&command).map_err(|e| StoreError::Backend {
                    message: e.to_string(),
                    source: None,
                })?;
                let change = ReminderChange::Schedule {
                    name: "pay".into(),
                    reminder_id: Uuid::now_v7(),
                    due_at: dues[n],
                    period_ms: None,
                    payload: payload.into(),
                };
                store
                    .append_with_reminders(&stream, 0, Vec::new(), vec![change], None)
                    .await?;
            }
            Ok::<(), StoreError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| StoreError::Backend {
            message: e.to_string(),
            source: None,
        })??;
    }
    Ok(dues)
}

/// What the raw-SQL audit of a seeded run found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Events stored for seeded wallets.
    pub events: i64,
    /// Seeded wallets with exactly one event.
    pub wallets_with_one: i64,
    /// Seeded wallets with more than one event.
    pub wallets_with_more: i64,
    /// Distinct command ids among the events.
    pub distinct_commands: i64,
    /// Reminders still stored for seeded wallets.
    pub reminders_left: i64,
}

/// Counts, with raw SQL, what the firings of a seeded run stored.
pub async fn audit(pool: &PgPool) -> Result<Audit, sqlx::Error> {
    let row = sqlx::query(
        "WITH per AS (SELECT aggregate_id, COUNT(*) AS n FROM events \
                      WHERE aggregate_type = 'wallet' AND aggregate_id LIKE 'r-%' \
                      GROUP BY aggregate_id) \
         SELECT (SELECT COALESCE(SUM(n), 0)::bigint FROM per), \
                (SELECT COUNT(*) FROM per WHERE n = 1), \
                (SELECT COUNT(*) FROM per WHERE n > 1), \
                (SELECT COUNT(DISTINCT command_id) FROM events \
                 WHERE aggregate_type = 'wallet' AND aggregate_id LIKE 'r-%'), \
                (SELECT COUNT(*) FROM reminders \
                 WHERE aggregate_type = 'wallet' AND aggregate_id LIKE 'r-%')",
    )
    .fetch_one(pool)
    .await?;
    Ok(Audit {
        events: row.try_get(0)?,
        wallets_with_one: row.try_get(1)?,
        wallets_with_more: row.try_get(2)?,
        distinct_commands: row.try_get(3)?,
        reminders_left: row.try_get(4)?,
    })
}

/// Each fired wallet's lag: when its event was recorded minus when its reminder was due.
pub async fn lags_ms(pool: &PgPool, dues: &[DateTime<Utc>]) -> Result<Vec<f64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT aggregate_id, MIN(recorded_at) FROM events \
         WHERE aggregate_type = 'wallet' AND aggregate_id LIKE 'r-%' GROUP BY aggregate_id",
    )
    .fetch_all(pool)
    .await?;
    let mut lags = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get(0)?;
        let recorded: DateTime<Utc> = row.try_get(1)?;
        let n: Option<usize> = id.strip_prefix("r-").and_then(|n| n.parse().ok());
        if let Some(due) = n.and_then(|n| dues.get(n)) {
            lags.push((recorded - *due).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    lags.sort_by(f64::total_cmp);
    Ok(lags)
}

/// The `q` quantile of sorted `values` (0 when empty).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index.min(values.len() - 1)]
}
