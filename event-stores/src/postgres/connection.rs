//! The connections batched statements run on: borrowed from the pool, or a batcher's own,
//! kept outside the pool between runs (sqlx pings every connection that returns to its pool).

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, Postgres};
use tokio::time::error::Elapsed;

use crate::error::{StoreError, StoreResult};

use super::error::{ends_session, map_sqlx};

/// A connection appends are sent on: borrowed from the pool, or the store's own (taken out of
/// the pool by a group-commit runner and kept between runs).
pub(super) enum Conn {
    /// Returned to the pool when dropped (sqlx pings it on the way back).
    Pooled(PoolConnection<Postgres>),
    /// Outside the pool: closed when dropped.
    Own(PgConnection),
}

/// The connection statements are sent on, if one was taken yet.
pub(super) type Held = Option<Conn>;

/// The connection in `held`, or one borrowed from `pool` if there is none. Until a statement is
/// sent, a failure here means nothing was written.
pub(super) async fn connection<'c>(
    held: &'c mut Held,
    pool: &PgPool,
) -> StoreResult<&'c mut PgConnection> {
    if pool.is_closed() {
        // A connection kept outside the pool must not outlive the store's `close`.
        *held = None;
        return Err(map_sqlx("using the store", sqlx::Error::PoolClosed));
    }
    if held.is_none() {
        let conn = pool
            .acquire()
            .await
            .map_err(|e| map_sqlx("acquiring a connection", e))?;
        *held = Some(Conn::Pooled(conn));
    }
    match held {
        Some(Conn::Pooled(conn)) => Ok(&mut **conn),
        Some(Conn::Own(conn)) => Ok(conn),
        None => Err(StoreError::Backend {
            message: "no connection".into(),
            source: None,
        }),
    }
}

/// Closes the connection in `held`: it broke or its state is unknown.
pub(super) fn discard(held: &mut Held) {
    match held.take() {
        Some(Conn::Pooled(mut conn)) => conn.close_on_drop(),
        // Dropping a connection of our own closes its socket.
        Some(Conn::Own(conn)) => drop(conn),
        None => {}
    }
}

/// Closes the connection in `held` when `err`, from a statement on it, says its session is over
/// ([`ends_session`]). Every statement's error goes through here before the connection can be
/// reused, kept by a runner or parked: none of those pings it.
pub(super) fn discard_if_ended(held: &mut Held, err: &sqlx::Error) {
    if ends_session(err) {
        discard(held);
    }
}

/// The answer of a read sent on the connection in `held` under
/// `tokio::time::timeout(within, …)` (`what` it reads). A read changes nothing, so a server that
/// stayed silent (paused, or behind a network that drops packets: no server-side timeout fires
/// then, and TCP gives up only after many minutes) is the retryable
/// [`StoreError::Unavailable`]. A connection that broke or stayed silent is closed, never
/// reused: the next read opens a new one.
pub(super) fn read_answer<T>(
    held: &mut Held,
    answer: Result<Result<T, sqlx::Error>, Elapsed>,
    what: &str,
    within: Duration,
) -> StoreResult<T> {
    match answer {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(failed(held, what, err)),
        Err(_) => {
            discard(held);
            Err(StoreError::Unavailable {
                message: format!("{what}: no answer from the server within {within:?}"),
                source: None,
            })
        }
    }
}

/// Sends a read on a connection of `pool` (`what` it reads), bounded by `within`; see
/// [`read_answer`].
pub(super) async fn read_within<T>(
    pool: &PgPool,
    within: Duration,
    what: &str,
    read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
) -> StoreResult<T> {
    let mut held = None;
    let conn = connection(&mut held, pool).await?;
    let answer = tokio::time::timeout(within, read(conn)).await;
    read_answer(&mut held, answer, what, within)
}

/// The error of a failed statement (`what` it did); a connection whose session is over is not
/// used again.
pub(super) fn failed(held: &mut Held, what: &str, err: sqlx::Error) -> StoreError {
    discard_if_ended(held, &err);
    map_sqlx(what, err)
}

/// The server and database `pool` connects to, as `postgres://host:port/database`.
pub(super) fn location(pool: &PgPool) -> String {
    let options = pool.connect_options();
    format!(
        "postgres://{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}
