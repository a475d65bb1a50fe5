//! Every statement of the cluster's bookkeeping is answered within a bound on the client.
//!
//! A paused server, or a network that drops packets without a reset, answers nothing, and no
//! server-side timeout (`statement_timeout`, `lock_timeout`) fires then; TCP gives up only
//! after many minutes. A node waiting that long on its heartbeat would not fence itself, would
//! not see a takeover, and could not leave, even once the server answers new connections again.
//! So a statement gets `within` for its connection and its answer; a connection that stayed
//! silent is closed, not returned to the pool, and the next statement opens a new one.
//!
//! A bounded statement that got no answer may still have been applied. Each caller treats it as
//! failed and leaves the rest to the next tick, which reads the table again: a claim or a
//! release that was applied after all is found there (see `node::rebalance`).

use std::time::Duration;

use event_stores::StoreError;
use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::postgres::Postgres;
use tokio::time::error::Elapsed;

use crate::error::{ClusterError, db};

/// A connection of `pool` within `within`.
pub(crate) async fn connection(
    pool: &PgPool,
    within: Duration,
    what: &str,
) -> Result<PoolConnection<Postgres>, ClusterError> {
    match tokio::time::timeout(within, pool.acquire()).await {
        Ok(acquired) => acquired.map_err(|e| db(what, e)),
        Err(_) => Err(silent(what, within, "no connection")),
    }
}

/// The answer of a statement run on `conn` under `tokio::time::timeout(within, …)`; a
/// connection that gave none is closed when dropped.
pub(crate) fn settle<T>(
    conn: &mut PoolConnection<Postgres>,
    answer: Result<Result<T, sqlx::Error>, Elapsed>,
    what: &str,
    within: Duration,
) -> Result<T, ClusterError> {
    match answer {
        Ok(answered) => answered.map_err(|e| db(what, e)),
        Err(_) => {
            conn.close_on_drop();
            Err(silent(what, within, "no answer"))
        }
    }
}

fn silent(what: &str, within: Duration, nothing: &str) -> ClusterError {
    ClusterError::Store(StoreError::Unavailable {
        message: format!("{what}: {nothing} from the server within {within:?}"),
        source: None,
    })
}
