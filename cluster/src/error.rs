//! Why a cluster operation failed.

use event_stores::StoreError;

/// Every failure of the cluster crate.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The database could not be reached or refused a statement.
    #[error("cluster database: {0}")]
    Store(#[from] StoreError),
    /// This node's settings disagree with what the cluster recorded (e.g. another shard count:
    /// shards would map to other owners and the single-owner rule would break).
    #[error("cluster settings disagree: {0}")]
    Settings(String),
    /// A setting is out of range.
    #[error("invalid cluster configuration: {0}")]
    InvalidConfig(String),
}

/// Maps a sqlx error: unreachable server → retryable `Unavailable`, anything else → `Backend`.
pub(crate) fn db(what: &str, err: sqlx::Error) -> ClusterError {
    let unavailable = matches!(
        err,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_)
    );
    let message = format!("{what}: {err}");
    let source = Some(Box::new(err) as Box<dyn std::error::Error + Send + Sync>);
    ClusterError::Store(if unavailable {
        StoreError::Unavailable { message, source }
    } else {
        StoreError::Backend { message, source }
    })
}
