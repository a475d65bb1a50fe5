//! Reminders in PostgreSQL: a command's events and its reminder changes in one transaction (the
//! reads are in [`reminder_reads`](super::reminder_reads)).
//!
//! [`append_with_reminders`](crate::EventStore::append_with_reminders) runs, on one pooled
//! connection, each statement bounded by the client timeout:
//!
//! ```text
//! BEGIN; SET LOCAL idle_in_transaction_session_timeout = <client timeout>;
//!   SELECT pg_advisory_xact_lock(<reminders>, <hash of the stream>)       -- one round trip
//! <the append statement of append.rs, fenced or not>          -- events non-empty
//!   or <the stream's version (and the fence, FOR SHARE)>      -- events empty
//! <one statement per reminder change, in order>
//! COMMIT
//! ```
//!
//! A `Fired` change is a precondition: its statement changes the reminder only while it is
//! scheduled under the firing's id and due time, and one that changes no row rolls the whole
//! transaction back ([`StoreError::StaleFiring`]), events included. Under the stream's lock no
//! other call changes the row in between. The statements run in the order of the trait's
//! checks: the append (fence, version, then event ids: a unique violation is
//! [`StoreError::CommandAlreadyApplied`] or a duplicate event id) before any reminder change,
//! so a firing sent again after it was applied, stale by then, is refused as already applied.
//!
//! The transaction-level advisory lock serialises the calls that change one stream's reminders.
//! Without it, a call with no events could check version `v`, then a call with events at `v`
//! could append `v + 1` and change the same reminders, and the first call would still apply its
//! changes, decided on a state that no longer exists. (A share lock on the head event would not
//! help: appending `v + 1` inserts a new row and never touches the head.) It is taken in the
//! `BEGIN` round trip, before any statement reads the stream: under read committed each
//! statement reads what committed before it started, so every check after the lock sees the
//! last writer's commit. Plain appends do not take it; one that commits next to a call without
//! events is ordered after it (the two change different things). Lock keys live in the two-key
//! space (`(int, int)`) under a constant first key, apart from the one-key locks others use.
//!
//! The transaction holds the stream's lock and, for a fenced call, a share lock on its shard's
//! owner row, which a takeover must wait for. A process paused (or starved) between two of its
//! statements keeps its TCP connection alive, since its kernel still answers keepalives, so
//! the server is told to end the transaction once it has sat idle for the client timeout, by
//! which time the client would have given up on an answer anyway. The limit is the
//! transaction's own (`SET LOCAL`): other transactions on the pool, a projection's say, are
//! not affected.
//!
//! Failures: a connection that breaks or goes silent before `COMMIT` was sent aborts the
//! transaction (nothing stored, [`StoreError::Unavailable`]); once `COMMIT` was sent, a broken
//! or silent connection, or a shutdown answer, is [`StoreError::Indeterminate`]. A refused
//! append is rolled back before its cause is read (on the same connection, now outside the
//! transaction). sqlx's [`Transaction`](sqlx::Transaction) rolls back if the call is dropped
//! halfway, so a cancelled call never leaves an open transaction in the pool. Group commit is
//! not used: these calls are rarer than plain appends and hold their transaction across
//! several round trips (four for a command scheduling one reminder: `BEGIN` and the lock, the
//! append, the schedule, `COMMIT`).

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};

use crate::error::{StoreError, StoreResult};
use crate::event_store::AppendReceipt;
use crate::reminder::ReminderChange;
use crate::stream::StreamId;

use super::append::{Append, Appender};
use super::connection::{Held, discard};
use super::error::{ends_session, is_lost_in_flight, is_unavailable, map_sqlx};

/// The first key of every reminder lock: "RMND".
const LOCK_SPACE: i32 = 0x524d_4e44;

/// The transaction's first round trip: `BEGIN`, its idle limit (see the module doc) and the
/// stream's lock.
fn begin_statement(stream: &StreamId, idle_limit: std::time::Duration) -> String {
    format!(
        "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {}; \
         SELECT pg_advisory_xact_lock({LOCK_SPACE}, {})",
        // The setting is an int of milliseconds.
        idle_limit.as_millis().clamp(1, i32::MAX as u128),
        lock_key(stream)
    )
}

/// The stream's version and, for a fenced call, whether the fence still holds (a share lock on
/// the ownership row, as the fenced append takes).
const CHECK_VERSION: &str = r#"
SELECT COALESCE((SELECT version FROM events
                 WHERE aggregate_type = $1::text AND aggregate_id = $2::text
                 ORDER BY version DESC LIMIT 1), 0),
       TRUE,
       now()
"#;

const CHECK_VERSION_FENCED: &str = r#"
WITH fence AS (
    SELECT epoch FROM shard_owners
    WHERE shard = $3::int AND owner = $4::uuid AND epoch = $5::bigint
    FOR SHARE
)
SELECT COALESCE((SELECT version FROM events
                 WHERE aggregate_type = $1::text AND aggregate_id = $2::text
                 ORDER BY version DESC LIMIT 1), 0),
       EXISTS (SELECT 1 FROM fence),
       now()
"#;

const SCHEDULE: &str = r#"
INSERT INTO reminders (aggregate_type, aggregate_id, name, reminder_id, shard, due_at, period_ms,
                       payload)
VALUES ($1::text, $2::text, $3::text, $4::uuid, $5::int, $6::timestamptz, $7::bigint, $8::bytea)
ON CONFLICT (aggregate_type, aggregate_id, name) DO UPDATE SET
    reminder_id = EXCLUDED.reminder_id,
    shard = EXCLUDED.shard,
    due_at = EXCLUDED.due_at,
    period_ms = EXCLUDED.period_ms,
    payload = EXCLUDED.payload,
    state = 'scheduled',
    last_error = NULL,
    last_fired_at = NULL
"#;

const CANCEL: &str = r#"
DELETE FROM reminders
WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND name = $3::text
"#;

// A firing's statements change the reminder only in the form that fired (id, due time,
// scheduled); one that changes no row is a stale firing, and the transaction is rolled back.

/// A periodic reminder fired: it moves on, keeping its state, with the firing's error if any.
const FIRED_PERIODIC: &str = r#"
UPDATE reminders SET due_at = $6::timestamptz, last_fired_at = $7::timestamptz,
                     last_error = $8::text
WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND name = $3::text
  AND reminder_id = $4::uuid AND due_at = $5::timestamptz AND state = 'scheduled'
"#;

const FIRED_DONE: &str = r#"
DELETE FROM reminders
WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND name = $3::text
  AND reminder_id = $4::uuid AND due_at = $5::timestamptz AND state = 'scheduled'
"#;

const FIRED_REJECTED: &str = r#"
UPDATE reminders SET state = 'rejected', last_fired_at = $6::timestamptz, last_error = $7::text
WHERE aggregate_type = $1::text AND aggregate_id = $2::text AND name = $3::text
  AND reminder_id = $4::uuid AND due_at = $5::timestamptz AND state = 'scheduled'
"#;

/// Why a transaction stopped before `COMMIT`.
enum Abort {
    /// The connection broke or went silent: the transaction cannot commit; close it.
    Lost(StoreError),
    /// Refused (by the checks or a server error): roll back, then report this.
    Refused(StoreError),
    /// The append statement was refused in a way only a read explains: roll back, then ask
    /// [`Appender::refused`].
    Append(Result<Option<PgRow>, sqlx::Error>),
}

/// How a transaction ended, and whether its connection must be closed.
enum Ending {
    Committed(AppendReceipt),
    Failed {
        error: StoreError,
        close: bool,
    },
    /// The append was refused; [`Appender::refused`] says why (after the rollback).
    AppendRefused {
        result: Result<Option<PgRow>, sqlx::Error>,
        close: bool,
    },
}

/// Writes `append` and `changes` in one transaction on a connection of `appender`'s pool.
/// `append` and `changes` are already checked; reminders scheduled record `shard`.
pub(super) async fn write(
    appender: &Appender,
    append: &Append,
    changes: &[ReminderChange],
    shard: i32,
) -> StoreResult<AppendReceipt> {
    let mut held: Held = None;
    let conn = appender.connection(&mut held).await?;
    match transact(appender, conn, append, changes, shard).await {
        Ending::Committed(receipt) => Ok(receipt),
        Ending::Failed { error, close } => {
            if close {
                discard(&mut held);
            }
            Err(error)
        }
        Ending::AppendRefused { result, close } => {
            if close {
                discard(&mut held);
            }
            Err(appender.refused(&mut held, append, result).await)
        }
    }
}

/// The transaction on `conn`: BEGIN and the lock, [`body`], COMMIT (or ROLLBACK).
async fn transact(
    appender: &Appender,
    conn: &mut PgConnection,
    append: &Append,
    changes: &[ReminderChange],
    shard: i32,
) -> Ending {
    let timeout = appender.client_timeout;
    let stream = &append.stream;
    let begin = begin_statement(stream, timeout);
    // A failed BEGIN may leave an aborted transaction behind: the connection is closed.
    let mut tx =
        match tokio::time::timeout(timeout, conn.begin_with(sqlx::AssertSqlSafe(begin))).await {
            Ok(Ok(tx)) => tx,
            Ok(Err(err)) if is_lost_in_flight(&err) => {
                return Ending::Failed {
                    error: broken(stream, "beginning its transaction", err),
                    close: true,
                };
            }
            Ok(Err(err)) => {
                return Ending::Failed {
                    error: map_sqlx(
                        &format!("append with reminders to {stream}: taking its stream's lock"),
                        err,
                    ),
                    close: true,
                };
            }
            Err(_) => {
                return Ending::Failed {
                    error: silent(appender, stream, "beginning its transaction"),
                    close: true,
                };
            }
        };
    match body(appender, &mut tx, append, changes, shard).await {
        Ok(receipt) => match tokio::time::timeout(timeout, tx.commit()).await {
            Ok(Ok(())) => Ending::Committed(receipt),
            // The server refused the commit: the transaction did not commit. (A connection
            // error or a shutdown answer may come after a commit, for example one terminated
            // while waiting for a synchronous standby: those are indeterminate.)
            Ok(Err(err)) if !is_lost_in_flight(&err) && !is_unavailable(&err) => Ending::Failed {
                close: ends_session(&err),
                error: map_sqlx("committing an append with reminders", err),
            },
            Ok(Err(err)) => Ending::Failed {
                error: StoreError::Indeterminate {
                    message: format!(
                        "append with reminders to {stream}: connection lost or closed after \
                         sending COMMIT: {err}"
                    ),
                    source: Some(Box::new(err)),
                },
                close: true,
            },
            Err(_) => Ending::Failed {
                error: StoreError::Indeterminate {
                    message: format!(
                        "append with reminders to {stream}: no answer to COMMIT within \
                         {timeout:?}"
                    ),
                    source: None,
                },
                close: true,
            },
        },
        // Dropping the transaction queues a ROLLBACK; the connection is closed anyway.
        Err(Abort::Lost(error)) => Ending::Failed { error, close: true },
        Err(Abort::Refused(error)) => Ending::Failed {
            close: !rolled_back(tx, appender).await,
            error,
        },
        Err(Abort::Append(result)) => Ending::AppendRefused {
            close: !rolled_back(tx, appender).await,
            result,
        },
    }
}

/// Rolls back; false when that failed and the connection must be closed instead.
async fn rolled_back(tx: sqlx::Transaction<'_, sqlx::Postgres>, appender: &Appender) -> bool {
    matches!(
        tokio::time::timeout(appender.client_timeout, tx.rollback()).await,
        Ok(Ok(()))
    )
}

/// The checks and writes between `BEGIN` and `COMMIT`.
async fn body(
    appender: &Appender,
    conn: &mut PgConnection,
    append: &Append,
    changes: &[ReminderChange],
    shard: i32,
) -> Result<AppendReceipt, Abort> {
    let receipt = if append.events.is_empty() {
        check_version(appender, conn, append).await?
    } else {
        match appender.send(conn, append).await.map_err(Abort::Refused)? {
            Err(_) => return Err(Abort::Lost(silent(appender, &append.stream, "its append"))),
            Ok(Err(err)) if is_lost_in_flight(&err) => {
                return Err(Abort::Lost(broken(&append.stream, "its append", err)));
            }
            Ok(Ok(Some(row))) => append.outcome_of_row(&row).map_err(Abort::Refused)?,
            Ok(refused) => return Err(Abort::Append(refused)),
        }
    };
    for change in changes {
        apply(appender, conn, &append.stream, change, shard).await?;
    }
    Ok(receipt)
}

/// With no events: the receipt at the expected version if the stream is there (and the fence
/// holds), otherwise the refusal an append would get.
async fn check_version(
    appender: &Appender,
    conn: &mut PgConnection,
    append: &Append,
) -> Result<AppendReceipt, Abort> {
    let stream = &append.stream;
    let fence = append
        .fence
        .as_ref()
        .map(super::append::fence_params)
        .transpose()
        .map_err(Abort::Refused)?;
    let query = sqlx::query(match fence {
        Some(_) => CHECK_VERSION_FENCED,
        None => CHECK_VERSION,
    })
    .bind(stream.aggregate_type())
    .bind(stream.aggregate_id());
    let query = match fence {
        Some((shard, owner, epoch)) => query.bind(shard).bind(owner).bind(epoch),
        None => query,
    };
    let row = sent(
        appender,
        stream,
        "checking its version",
        query.fetch_one(&mut *conn),
    )
    .await?;
    let read = || -> Result<(i64, bool, DateTime<Utc>), sqlx::Error> {
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    };
    let (current, fence_held, now) =
        read().map_err(|e| Abort::Refused(map_sqlx("reading a stream version", e)))?;
    if current != append.expected || !fence_held {
        return Err(Abort::Refused(
            append
                .refusal(current, fence_held)
                .map_err(Abort::Refused)?,
        ));
    }
    Ok(AppendReceipt {
        first_version: append.expected.unsigned_abs(),
        last_version: append.expected.unsigned_abs(),
        recorded_at: now,
        last_position: 0,
    })
}

/// Applies one reminder change.
async fn apply(
    appender: &Appender,
    conn: &mut PgConnection,
    stream: &StreamId,
    change: &ReminderChange,
    shard: i32,
) -> Result<(), Abort> {
    let query = match change {
        ReminderChange::Schedule {
            name,
            reminder_id,
            due_at,
            period_ms,
            payload,
        } => sqlx::query(SCHEDULE)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(name.as_str())
            .bind(*reminder_id)
            .bind(shard)
            .bind(due_at.trunc_subsecs(6))
            // Checked to fit: `StoreLimits::check_reminders`.
            .bind(period_ms.map(|p| i64::try_from(p).unwrap_or(i64::MAX)))
            .bind(payload.as_ref()),
        ReminderChange::Cancel { name } => sqlx::query(CANCEL)
            .bind(stream.aggregate_type())
            .bind(stream.aggregate_id())
            .bind(name.as_str()),
        ReminderChange::Fired {
            name,
            reminder_id,
            due_at,
            fired_at,
            next_due_at,
            error,
        } => {
            let query = |sql| {
                sqlx::query(sql)
                    .bind(stream.aggregate_type())
                    .bind(stream.aggregate_id())
                    .bind(name.as_str())
                    .bind(*reminder_id)
                    .bind(due_at.trunc_subsecs(6))
            };
            let fired_at = fired_at.trunc_subsecs(6);
            match (next_due_at, error) {
                (Some(next), error) => query(FIRED_PERIODIC)
                    .bind(next.trunc_subsecs(6))
                    .bind(fired_at)
                    .bind(error.as_deref()),
                (None, None) => query(FIRED_DONE),
                (None, Some(error)) => query(FIRED_REJECTED).bind(fired_at).bind(error.as_str()),
            }
        }
    };
    let done = sent(
        appender,
        stream,
        "changing its reminders",
        query.execute(&mut *conn),
    )
    .await?;
    match change {
        ReminderChange::Fired { name, .. } if done.rows_affected() == 0 => {
            Err(Abort::Refused(StoreError::StaleFiring {
                stream: stream.clone(),
                name: name.clone(),
            }))
        }
        _ => Ok(()),
    }
}

/// The outcome of a statement sent inside the transaction, within the client timeout.
async fn sent<T>(
    appender: &Appender,
    stream: &StreamId,
    doing: &str,
    statement: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, Abort> {
    match tokio::time::timeout(appender.client_timeout, statement).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) if is_lost_in_flight(&err) => Err(Abort::Lost(broken(stream, doing, err))),
        Ok(Err(err)) => Err(Abort::Refused(map_sqlx(
            &format!("append with reminders to {stream}: {doing}"),
            err,
        ))),
        Err(_) => Err(Abort::Lost(silent(appender, stream, doing))),
    }
}

/// The connection broke before `COMMIT`: nothing was stored, and the call may succeed later.
fn broken(stream: &StreamId, doing: &str, err: sqlx::Error) -> StoreError {
    StoreError::Unavailable {
        message: format!(
            "append with reminders to {stream}: connection lost {doing}, before COMMIT; nothing \
             was stored: {err}"
        ),
        source: Some(Box::new(err)),
    }
}

/// The server did not answer before `COMMIT`: nothing was stored (the transaction cannot
/// commit once its connection is closed), and the call may succeed later.
fn silent(appender: &Appender, stream: &StreamId, doing: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!(
            "append with reminders to {stream}: no answer {doing} within {:?}, before COMMIT; \
             nothing was stored",
            appender.client_timeout
        ),
        source: None,
    }
}

/// The second key of the stream's reminder lock: 32 bits of a hash of its name (two streams
/// sharing one only wait for each other).
fn lock_key(stream: &StreamId) -> i32 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(stream.aggregate_type().as_bytes());
    hasher.update(&[0xff]);
    hasher.update(stream.aggregate_id().as_bytes());
    // Bit-cast: any 32 bits make a key.
    hasher.digest() as u32 as i32
}

#[cfg(all(test, feature = "test-support"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use sqlx::{AssertSqlSafe, Connection};

    use super::*;

    /// A reminder transaction whose client stops sending (a paused process) is ended by the
    /// server once idle past the limit its first round trip set, and its locks go with it.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_reminder_transaction_left_idle_past_its_limit_is_ended_by_the_server() {
        let Some(db) = crate::testing::fresh_database().await else {
            return;
        };
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        let stream = StreamId::new("account", "idle-1").unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let mut tx = conn
            .begin_with(AssertSqlSafe(begin_statement(
                &stream,
                Duration::from_millis(300),
            )))
            .await
            .unwrap();
        let limit: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(limit, "300ms");
        let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(LOCK_SPACE)
            .bind(lock_key(&stream))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(!held, "the stream's lock is held by the transaction");

        tokio::time::sleep(Duration::from_millis(800)).await;
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(LOCK_SPACE)
            .bind(lock_key(&stream))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(free, "the idle transaction was ended and its lock released");
        let ended = sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap_err();
        assert!(ends_session(&ended), "{ended}");
        // Nothing was stored by it, and a new connection may succeed: retryable.
        assert!(is_unavailable(&ended), "{ended}");
    }

    /// Other transactions on the connection keep the server's own setting.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_idle_limit_is_the_reminder_transactions_own() {
        let Some(db) = crate::testing::fresh_database().await else {
            return;
        };
        let mut conn = sqlx::PgConnection::connect(db.url()).await.unwrap();
        let stream = StreamId::new("account", "idle-2").unwrap();
        let tx = conn
            .begin_with(AssertSqlSafe(begin_statement(
                &stream,
                Duration::from_secs(5),
            )))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let limit: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(limit, "0");
    }
}
